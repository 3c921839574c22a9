"""Loading one candidate: the right Auto class for its architecture, and what a GPU user sets.

The model class comes from the candidate's config: ``is_encoder_decoder`` (T5, BART, mT5) loads
``AutoModelForSeq2SeqLM``, anything else ``AutoModelForCausalLM``. ``model_kwargs`` go to
``from_pretrained`` with two conveniences:

- ``dtype`` (or the older ``torch_dtype``) as a string: ``"bfloat16"``, ``"float16"``, ``"auto"``;
- ``load_in_4bit: true`` for QLoRA: a ``BitsAndBytesConfig`` (NF4, compute in ``dtype`` or
  bfloat16), then PEFT's ``prepare_model_for_kbit_training``. It needs a CUDA GPU and the
  ``bitsandbytes`` package.

Mixed precision and activation checkpointing are ``TrainingArguments`` (``bf16``, ``fp16``,
``activation_checkpointing``, which transformers 5 names what was ``gradient_checkpointing``):
set them in ``training_args``, they reach the Trainer unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._utils import one_line
from ..errors import CandidateError, LensLLMError

__all__ = ["DTYPES", "attach_adapter", "load_candidate", "model_load_kwargs", "with_pad_token"]

#: dtype names ``model_kwargs`` may give (``dtype`` or ``torch_dtype``).
DTYPES = ("auto", "float32", "float16", "bfloat16")
_DTYPES = DTYPES


def model_load_kwargs(model_kwargs: Mapping[str, Any], *, name: str = "candidate") -> dict[str, Any]:
    """``from_pretrained`` keywords from a candidate's ``model_kwargs`` (dtype names, 4-bit loading).

    Example:
        >>> model_load_kwargs({"torch_dtype": "bfloat16", "revision": "main"})
        {'revision': 'main', 'dtype': torch.bfloat16}
    """
    import torch

    kwargs = dict(model_kwargs)
    dtype = kwargs.pop("torch_dtype", None)
    dtype = kwargs.pop("dtype", dtype)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise LensLLMError(f"candidate {name!r}: dtype {dtype!r} is not one of {', '.join(_DTYPES)}; fix model_kwargs")
        dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if kwargs.pop("load_in_4bit", False):
        if not torch.cuda.is_available():
            raise LensLLMError(f"candidate {name!r}: load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); drop "
                               "load_in_4bit on this machine or run the selection on a GPU")
        try:
            import bitsandbytes  # noqa: F401  (transformers needs it for 4-bit weights)
        except ImportError:
            raise LensLLMError(f"candidate {name!r}: load_in_4bit needs the bitsandbytes package; "
                               "pip install bitsandbytes") from None
        from transformers import BitsAndBytesConfig

        compute = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=compute)
    return kwargs


def load_candidate(model_id: str, *, tokenizer_id: str | None = None, model_kwargs: Mapping[str, Any] | None = None,
                   peft_config: Any = None, name: str | None = None):
    """(model, tokenizer) of one candidate, with its adapter when ``peft_config`` is given.

    Raises :class:`CandidateError` with a one-line reason that fits the failure (a folder that
    is not a model, an architecture this transformers does not know, a Hub ID that cannot be
    reached), never cut mid-word.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    name = name or model_id
    kwargs = model_load_kwargs(model_kwargs or {}, name=name)
    revision = kwargs.get("revision")
    try:
        config = AutoConfig.from_pretrained(model_id, revision=revision)
    except Exception as error:
        raise CandidateError(_why_not_loaded(model_id, error), candidate=model_id) from None
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_id or model_id, revision=revision)
        model = auto.from_pretrained(model_id, **kwargs)
    except Exception as error:
        raise CandidateError(f"could not load {model_id!r} as {auto.__name__[9:]}: {one_line(error, 300)}",
                             candidate=model_id) from None
    if peft_config is not None:
        model = attach_adapter(model, peft_config)
    return model, with_pad_token(tokenizer)


def with_pad_token(tokenizer):
    """``tokenizer``, given its EOS (or UNK) token as pad token when it has none: batches need padding."""
    if getattr(tokenizer, "pad_token", "") is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def attach_adapter(model, peft_config):
    """``model`` wrapped with the adapter of ``peft_config``; a 4-bit model is first prepared for k-bit training."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model)
    return get_peft_model(model, peft_config)


def _why_not_loaded(model_id: str, error: BaseException) -> str:
    if os.path.isdir(model_id):
        if not os.path.isfile(os.path.join(model_id, "config.json")):
            return f"{model_id}: the folder has no config.json; pass a folder written by save_pretrained"
        return f"{model_id}: its config.json cannot be read ({one_line(error, 300)}); check the folder's files"
    if os.path.sep in model_id and not model_id.count("/") == 1:
        return f"{model_id}: no such folder; pass an existing save_pretrained folder or a Hub ID (org/name)"
    return (f"could not fetch the config of {model_id!r} ({one_line(error, 300)}); check the Hub ID, your network "
            "and token (offline, use a local folder)")
