"""Candidate models of a selection: a Hub ID or local path, an optional PEFT config, own arguments.

Example:
    >>> as_candidates(["gpt2", {"model": "facebook/opt-125m", "peft": {"peft_type": "LORA", "r": 8},
    ...                          "training_args": {"learning_rate": 1e-4}}])[1].name
    'facebook/opt-125m+lora-r8'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import LensLLMError

__all__ = ["Candidate", "as_candidates", "peft_summary"]


@dataclass
class Candidate:
    """One model to rank.

    Attributes:
        model: a Hub ID (``"EleutherAI/pythia-70m"``) or a local ``save_pretrained`` folder.
        name: its row in the ranking and in the record store; default: ``model``, plus the
            adapter (``"+lora-r8"``) when one is given.
        peft_config: a ``peft.PeftConfig`` or its dict (``{"peft_type": "LORA", "r": 8, ...}``):
            fine-tune that adapter instead of the whole model.
        training_args: ``TrainingArguments`` keywords for this candidate only (over the shared ones).
        tokenizer: where to load the tokenizer from; default: ``model``.
        model_kwargs: extra ``from_pretrained`` keywords (``revision``, ``dtype``, ...).
    """

    model: str
    name: str | None = None
    peft_config: Any = None
    training_args: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise LensLLMError(f"candidate model {self.model!r} is not a Hub ID or a path; pass e.g. 'gpt2'")
        self.model = str(self.model)
        if self.name is None:
            adapter = peft_summary(self.peft_config)
            self.name = self.model + (f"+{adapter.replace(' ', '-').replace('=', '')}" if adapter else "")
        if not isinstance(self.model_kwargs, Mapping):
            raise LensLLMError(f"candidate {self.name!r}: model_kwargs must be a mapping of from_pretrained keywords, "
                               f"got {type(self.model_kwargs).__name__}")
        from .loading import DTYPES

        dtype = self.model_kwargs.get("dtype", self.model_kwargs.get("torch_dtype"))
        if isinstance(dtype, str) and dtype not in DTYPES:
            raise LensLLMError(f"candidate {self.name!r}: model_kwargs dtype {dtype!r} is not one of "
                               f"{', '.join(DTYPES)}; fix model_kwargs")
        if not isinstance(self.model_kwargs.get("load_in_4bit", False), bool):
            raise LensLLMError(f"candidate {self.name!r}: model_kwargs load_in_4bit must be true or false")
        if not isinstance(self.training_args, Mapping):
            raise LensLLMError(f"candidate {self.name!r}: training_args must be a mapping of TrainingArguments "
                               f"keywords, got {type(self.training_args).__name__}")
        self.training_args = dict(self.training_args)

    @property
    def revision(self) -> str | None:
        """The model revision asked for (``model_kwargs["revision"]``), None for the default branch."""
        revision = self.model_kwargs.get("revision")
        return None if revision is None else str(revision)

    def peft_dict(self) -> dict[str, Any] | None:
        """The adapter config as plain data (for the config hash), or None."""
        config = self.peft_config
        if config is None:
            return None
        if isinstance(config, Mapping):
            return dict(config)
        to_dict = getattr(config, "to_dict", None)
        return _plain(to_dict()) if callable(to_dict) else {"repr": repr(config)}

    def build_peft_config(self, task_type: str = "CAUSAL_LM"):
        """The ``peft.PeftConfig`` to wrap the model with (peft is imported only here).

        ``task_type`` is the default of a dict config without one (``SEQ_2_SEQ_LM`` for encoder-decoders).
        """
        config = self.peft_config
        if config is None or not isinstance(config, Mapping):
            return config
        try:
            import peft
        except ImportError:
            raise LensLLMError(f"candidate {self.name!r} asks for an adapter but peft is not installed; "
                               "pip install 'lensllm_hf[peft]'") from None
        data = {k: v for k, v in config.items() if k not in ("type", "peft_type")}
        kind = str(config.get("peft_type", config.get("type", "LORA"))).upper()
        data.setdefault("task_type", task_type)
        try:
            config_class = peft.PEFT_TYPE_TO_CONFIG_MAPPING[peft.PeftType[kind]]
            return config_class(**data)
        except (KeyError, TypeError, ValueError) as error:
            raise LensLLMError(f"candidate {self.name!r}: bad adapter config ({error}); give peft_type (e.g. LORA) "
                               "and that config's keywords (r, lora_alpha, target_modules, ...)") from None


def as_candidates(items: Iterable[str | Mapping[str, Any] | Candidate]) -> list[Candidate]:
    """Candidates from IDs, dicts (``model``, ``name``, ``peft``/``peft_config``, ``training_args``) or Candidates."""
    if isinstance(items, (str, Mapping, Candidate)):
        items = [items]
    out: list[Candidate] = []
    for i, item in enumerate(items or []):
        if isinstance(item, Candidate):
            out.append(item)
        elif isinstance(item, str):
            out.append(Candidate(item))
        elif isinstance(item, Mapping):
            data = dict(item)
            if "peft" in data:
                data["peft_config"] = data.pop("peft")
            known = ("model", "name", "peft", "training_args", "tokenizer", "model_kwargs")
            unknown = sorted(set(data) - set(known) - {"peft_config"})
            if "model" not in data or unknown:
                from .params import suggest

                what = (f"unknown key {unknown[0]!r}{suggest(unknown[0], known)}" if unknown else "no 'model'")
                raise LensLLMError(f"candidate {i + 1}: {what}; a candidate is a model ID or "
                                   "{model, name, peft, training_args, tokenizer, model_kwargs}")
            out.append(Candidate(**data))
        else:
            raise LensLLMError(f"candidate {i + 1} is a {type(item).__name__}; pass a model ID, a dict or a Candidate")
    if not out:
        raise LensLLMError("no candidates; pass at least one model ID or path (e.g. ['gpt2', 'facebook/opt-125m'])")
    names = [c.name for c in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LensLLMError(f"candidate name(s) {', '.join(twice)} appear twice; give each a distinct 'name'")
    return out


def peft_summary(config: Any) -> str | None:
    """A short adapter label for tables and model cards, e.g. ``"lora r=8"``."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        kind, r = config.get("peft_type", config.get("type", "LORA")), config.get("r")
    else:
        kind, r = getattr(config, "peft_type", type(config).__name__), getattr(config, "r", None)
    kind = str(getattr(kind, "value", kind)).lower()
    return f"{kind} r={r}" if r is not None else kind


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(getattr(value, "value", value))
