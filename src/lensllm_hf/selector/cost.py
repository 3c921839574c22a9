"""What a selection will cost, before anything trains.

Trainer counts a run's FLOPs as ``6 x parameters x input tokens`` (``Trainer.floating_point_ops``:
the model's parameters without embeddings, the padded ``input_ids`` of every training batch).
The estimate follows the same rule without loading any weights: the parameters come from the
candidate's config built on PyTorch's ``meta`` device (with its adapter, if any), the tokens from
the candidate's tokenizer over the subset's rows, padded batch by batch as the Trainer's shuffled
batches would be, times the epochs (or ``max_steps`` batches).

GPU-hours divide that by a device's dense bf16 throughput (:data:`GPU_BF16_FLOPS`, datasheet
numbers) times a utilisation factor: fine-tuning small batches rarely uses more than a third to a
half of a GPU's peak.

Example:
    >>> padded_tokens([3, 5, 4, 4], batch_size=2, seed=0)
    18
    >>> round(gpu_hours(3.6e18, gpu="H100", utilisation=0.4), 2)
    2.53
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import LensLLMError

__all__ = ["GPU_BF16_FLOPS", "UTILISATION", "RunCost", "count_parameters", "estimate_run_flops", "gpu_hours",
           "padded_tokens"]

#: Dense bf16 (fp16 where the card has no bf16) tensor throughput in FLOP/s, from the datasheets.
GPU_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "V100": 125e12,
    "T4": 65e12,
}
#: Share of the peak throughput a fine-tuning run typically sustains.
UTILISATION = 0.4


@dataclass(frozen=True)
class RunCost:
    """The estimated cost of one (candidate, subset size) run."""

    model: str
    size: int
    parameters: int
    tokens: int
    estimated_flops: float


def padded_tokens(lengths: Sequence[int], batch_size: int, seed: int = 0) -> int:
    """Input tokens of one epoch as the Trainer counts them: each shuffled batch padded to its longest row."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return 0
    order = np.random.default_rng(seed).permutation(lengths.size)
    total = 0
    for start in range(0, lengths.size, batch_size):
        batch = lengths[order[start:start + batch_size]]
        total += int(batch.size * batch.max())
    return total


def estimate_run_flops(parameters: int, lengths: Sequence[int], *, batch_size: int, epochs: float = 1.0,
                       max_steps: int = -1, gradient_accumulation_steps: int = 1, seed: int = 0) -> tuple[int, float]:
    """(input tokens, FLOPs) of one run on rows of these token ``lengths``.

    ``max_steps > 0`` wins over ``epochs``, as in ``TrainingArguments``: that many optimizer
    steps of ``batch_size x gradient_accumulation_steps`` rows each.
    """
    per_epoch = padded_tokens(lengths, batch_size, seed)
    if max_steps and max_steps > 0:
        rows = max_steps * batch_size * gradient_accumulation_steps
        tokens = int(round(per_epoch / max(len(lengths), 1) * rows))
    else:
        whole, part = divmod(float(epochs), 1.0)
        tokens = int(whole) * per_epoch + int(round(part * per_epoch))
    return tokens, 6.0 * parameters * tokens


def count_parameters(model_id: str, *, model_kwargs: Mapping[str, Any] | None = None, peft_config: Any = None) -> int:
    """Parameters as Trainer counts them (no embeddings), from the config alone: no weights are loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kwargs = dict(model_kwargs or {})
    try:
        config = AutoConfig.from_pretrained(model_id, revision=kwargs.get("revision"))
    except Exception as error:  # a missing folder, no network: the plan names the candidate
        from .._utils import one_line

        raise LensLLMError(f"cannot read the config of {model_id!r} to estimate its cost ({one_line(error, 200)}); "
                           "check the Hub ID or path") from None
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
    return int(model.num_parameters(exclude_embeddings=True))


def gpu_hours(flops: float, *, gpu: str | None = None, flops_per_second: float | None = None,
              utilisation: float = UTILISATION) -> float:
    """Hours of one GPU for ``flops``: a GPU name of :data:`GPU_BF16_FLOPS` or an explicit peak FLOP/s."""
    if (gpu is None) == (flops_per_second is None):
        raise LensLLMError("give either --gpu NAME or --flops-per-second F")
    if gpu is not None:
        key = next((k for k in GPU_BF16_FLOPS if k.lower() == gpu.lower()), None)
        if key is None:
            raise LensLLMError(f"unknown GPU {gpu!r}; choose one of {', '.join(GPU_BF16_FLOPS)} or pass "
                               "--flops-per-second")
        flops_per_second = GPU_BF16_FLOPS[key]
    if not (math.isfinite(flops_per_second) and flops_per_second > 0):
        raise LensLLMError(f"--flops-per-second {flops_per_second!r} must be a finite number > 0")
    if not 0 < utilisation <= 1:
        raise LensLLMError(f"utilisation {utilisation!r} must be in (0, 1]")
    return float(flops) / (flops_per_second * utilisation) / 3600.0
