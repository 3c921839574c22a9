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

Each run's peak memory is estimated too, from the same config (:mod:`.memory`), at the length of
its subset's longest row; :meth:`SelectionCost.too_big` names the runs that would not fit in one
GPU of :data:`GPU_MEMORY_GIB`.

Example:
    >>> padded_tokens([3, 5, 4, 4], batch_size=2, seed=0)
    18
    >>> round(gpu_hours(3.6e18, gpu="H100", utilisation=0.4), 2)
    2.53
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LensLLMError
from .memory import GIB, MemoryEstimate

__all__ = ["GPU_BF16_FLOPS", "GPU_MEMORY_GIB", "UTILISATION", "CandidateReads", "RunCost", "SelectionCost",
           "count_parameters", "estimate_run_flops", "estimate_selection", "gpu_hours", "gpu_name", "load_tokenizer",
           "model_config", "padded_tokens"]

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
#: Memory of one GPU in GiB (the larger model where a card comes in two: A100 80 GB, V100 32 GB).
GPU_MEMORY_GIB: dict[str, float] = {"H200": 141, "H100": 80, "A100": 80, "L40S": 48, "L4": 24, "A10": 24,
                                    "V100": 32, "T4": 16}
#: Share of the peak throughput a fine-tuning run typically sustains.
UTILISATION = 0.4


@dataclass(frozen=True)
class RunCost:
    """The estimated cost of one (candidate, subset size) run; ``memory`` is None when it could not be estimated."""

    model: str
    size: int
    parameters: int
    tokens: int
    estimated_flops: float
    memory: MemoryEstimate | None = None


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


def model_config(model_id: str, *, revision: str | None = None):
    """The candidate's ``transformers`` config (no weights), or a one-line error naming it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id, revision=revision)
    except Exception as error:  # a missing folder, no network: the plan names the candidate
        from .._utils import one_line

        raise LensLLMError(f"cannot read the config of {model_id!r} to estimate its cost ({one_line(error, 200)}); "
                           "check the Hub ID or path") from None


def load_tokenizer(tokenizer_id: str, revision: str | None = None):
    """The candidate's tokenizer, with a pad token (its EOS or UNK) when it has none: batches need padding."""
    from transformers import AutoTokenizer

    from .loading import with_pad_token

    return with_pad_token(AutoTokenizer.from_pretrained(tokenizer_id, revision=revision))


class CandidateReads:
    """Each candidate's config and tokenizer, read once per selection (its selector holds one): what
    :meth:`~lensllm_hf.LensLLMSelector.check_candidates` and :func:`estimate_selection` both read.

    ``functools.cache`` keeps what was read; a read that fails keeps nothing and raises again when
    asked again, so its error is reported where the caller reports it, never taken for a success.
    """

    def __init__(self) -> None:
        self.config = functools.cache(model_config)
        self.tokenizer = functools.cache(load_tokenizer)

    def of(self, candidate: Any, *, tokenizer: bool = True) -> tuple[Any, Any]:
        """``(config, tokenizer)`` of a :class:`~lensllm_hf.selector.candidates.Candidate` (the tokenizer None
        unless asked for)."""
        config = self.config(candidate.model, revision=candidate.revision)
        return config, self.tokenizer(candidate.tokenizer or candidate.model, candidate.revision) if tokenizer else None


def count_parameters(model_id: str, *, model_kwargs: Mapping[str, Any] | None = None, peft_config: Any = None,
                     config: Any = None) -> int:
    """Parameters as Trainer counts them (no embeddings), from the config alone: no weights are loaded
    (the model is built on the meta device by :func:`~.memory.meta_model`)."""
    import torch

    from .memory import meta_model

    kwargs = dict(model_kwargs or {})
    config = config if config is not None else model_config(model_id, revision=kwargs.get("revision"))
    return int(meta_model(config, torch.float32, peft_config).num_parameters(exclude_embeddings=True))


def gpu_hours(flops: float, *, gpu: str | None = None, flops_per_second: float | None = None,
              utilisation: float = UTILISATION) -> float:
    """Hours of one GPU for ``flops``: a GPU name of :data:`GPU_BF16_FLOPS` or an explicit peak FLOP/s."""
    if (gpu is None) == (flops_per_second is None):
        raise LensLLMError("give either --gpu NAME or --flops-per-second F")
    if gpu is not None:
        flops_per_second = GPU_BF16_FLOPS[gpu_name(gpu)]
    if not (math.isfinite(flops_per_second) and flops_per_second > 0):
        raise LensLLMError(f"--flops-per-second {flops_per_second!r} must be a finite number > 0")
    if not 0 < utilisation <= 1:
        raise LensLLMError(f"utilisation {utilisation!r} must be in (0, 1]")
    return float(flops) / (flops_per_second * utilisation) / 3600.0


def gpu_name(gpu: str) -> str:
    """The key of :data:`GPU_BF16_FLOPS` that ``gpu`` names (any case), or a one-line error."""
    key = next((k for k in GPU_BF16_FLOPS if k.lower() == gpu.lower()), None)
    if key is None:
        raise LensLLMError(f"unknown GPU {gpu!r}; choose one of {', '.join(GPU_BF16_FLOPS)} or pass "
                           "--flops-per-second")
    return key


@dataclass
class SelectionCost:
    """The estimated cost of a selection's runs, and of fine-tuning each candidate on the full data.

    Attributes:
        runs: one estimate per planned run (zero-shot runs cost no training: 0 FLOPs).
        full: candidate -> FLOPs of fine-tuning it on ``target_size`` examples with the same arguments.
        target_size: the full training size.
        errors: candidate -> why it could not be estimated (left out of the totals).
        memory_errors: candidate -> why its memory could not be estimated (its FLOPs were).
    """

    runs: list[RunCost]
    full: dict[str, float]
    target_size: int
    errors: dict[str, str]
    memory_errors: dict[str, str] = field(default_factory=dict)

    @property
    def total_flops(self) -> float:
        return float(sum(r.estimated_flops for r in self.runs))

    @property
    def full_flops(self) -> float:
        return float(sum(self.full.values()))

    def flops_per_example(self) -> dict[str, float]:
        """Candidate -> estimated FLOPs per training example of its fine-tuning runs (what an
        adaptive strategy projects a run's cost from before it has measured one)."""
        flops: dict[str, float] = {}
        examples: dict[str, int] = {}
        for run in self.runs:
            if run.size > 0:
                flops[run.model] = flops.get(run.model, 0.0) + run.estimated_flops
                examples[run.model] = examples.get(run.model, 0) + run.size
        return {model: flops[model] / examples[model] for model in flops}

    def summary(self, *, gpu: str | None = None, flops_per_second: float | None = None) -> str:
        """One line: the runs' FLOPs (GPU-hours when a device is given) beside fine-tuning all on the target."""
        def hours(flops: float) -> str:
            if gpu is None and flops_per_second is None:
                return ""
            return f", ~{gpu_hours(flops, gpu=gpu, flops_per_second=flops_per_second):.3g} GPU-hours"

        device = "" if gpu is None and flops_per_second is None else \
            f" (GPU-hours on {gpu or f'{flops_per_second:.3g} FLOP/s'} at {UTILISATION:.0%} utilisation)"
        share = f"{self.total_flops / self.full_flops:.2%} of " if self.full_flops else ""
        text = (f"estimated cost: {self.total_flops:.3g} FLOPs{hours(self.total_flops)} for {len(self.runs)} run(s), "
                f"{share}fine-tuning every candidate on {self.target_size:,} examples ({self.full_flops:.3g} FLOPs"
                f"{hours(self.full_flops)}){device}")
        largest = max((r for r in self.runs if r.memory is not None), key=lambda r: r.memory.peak, default=None)
        if largest is not None:
            text += (f"; peak memory per run up to {largest.memory.peak / GIB:.3g} GiB ({largest.model} "
                     f"D={largest.size})")
        if self.errors:
            text += f"; not estimated: {', '.join(sorted(self.errors))}"
        return text

    def too_big(self, gpu: str) -> list[RunCost]:
        """The runs whose estimated peak memory exceeds one ``gpu`` (a name of :data:`GPU_MEMORY_GIB`)."""
        limit = GPU_MEMORY_GIB[gpu_name(gpu)] * GIB
        return [r for r in self.runs if r.memory is not None and r.memory.peak > limit]

    def memory_warning(self, gpu: str) -> str | None:
        """One line naming the runs that will not fit in one ``gpu`` (per candidate: from which size), or None."""
        runs = self.too_big(gpu)
        if not runs:
            return None
        parts = []
        for model in dict.fromkeys(r.model for r in runs):
            mine = [r for r in runs if r.model == model]
            smallest = min(mine, key=lambda r: r.size)
            peak = max(r.memory.peak for r in mine) / GIB
            parts.append(f"{model} ({len(mine)} run(s) from D={smallest.size}, up to ~{peak:.3g} GiB)")
        name = gpu_name(gpu)
        return (f"{len(runs)} run(s) will not fit in one {name}'s {GPU_MEMORY_GIB[name]:g} GiB (estimated peak): "
                f"{'; '.join(parts)}; lower per_device_train_batch_size or max_length, set activation_checkpointing: "
                "true, or train a LoRA adapter (peft) on load_in_4bit weights")


def estimate_selection(plan: Any, runner: Any, *, target_size: int, names: Sequence[str] | None = None,
                       keys: Sequence[Any] | None = None, reads: CandidateReads | None = None) -> SelectionCost:
    """Estimate every planned run of ``names`` (default all) before anything trains.

    Args:
        plan: the selection's :class:`~lensllm_hf.selector.plan.RunPlan`.
        runner: its :class:`~lensllm_hf.selector.runner.Runner` (the data and the preprocessing the runs use).
        target_size: the full training size (the cost of fine-tuning each candidate on it).
        names: the candidates to estimate.
        keys: the runs to estimate (default: every planned run of ``names``).
        reads: where the candidates' configs and tokenizers are read (the selection's, so that each is read once).

    Each candidate's tokenizer is loaded (its config too, on the meta device: no weights); a
    candidate whose config or tokenizer cannot be read is named in ``errors``.
    """
    import tempfile

    from transformers import TrainingArguments

    from .._utils import one_line
    from .memory import CandidateMemory
    from .plan import RUN_DEFAULTS, user_args

    keys = list(keys) if keys is not None else plan.keys(only=names)
    reads = reads if reads is not None else CandidateReads()
    runs: list[RunCost] = []
    full: dict[str, float] = {}
    errors: dict[str, str] = {}
    memory_errors: dict[str, str] = {}
    by_model: dict[str, list[Any]] = {}
    for key in keys:
        by_model.setdefault(key.model, []).append(key)
    for name, model_keys in by_model.items():
        c = plan.candidate(model_keys[0])
        try:
            config, tokenizer = reads.of(c)
            peft_config = c.build_peft_config()
            parameters = count_parameters(c.model, model_kwargs=c.model_kwargs, peft_config=peft_config, config=config)
            fmt = runner.format
            encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
            if runner.params.preprocess is None and (fmt.layout != "text" or encoder_decoder):
                # Task data: tokenised as the candidate's Trainer (SFT or seq2seq) will see it.
                fmt.prepare_tokenizer(tokenizer, name)
                lengths = fmt.input_lengths(runner.pool, tokenizer, encoder_decoder=encoder_decoder)
            else:
                train, _ = runner.features(c, tokenizer)
                lengths = [len(ids) for ids in train["input_ids"]]
        except Exception as error:  # LensLLMError from the config, a tokenizer that will not load, bad data
            errors[name] = one_line(error, 200)
            continue
        args = TrainingArguments(**{**RUN_DEFAULTS, **user_args(runner.params.training_args, c),
                                    "output_dir": tempfile.gettempdir()})
        shape = dict(batch_size=args.train_batch_size, epochs=args.num_train_epochs, max_steps=args.max_steps,
                     gradient_accumulation_steps=args.gradient_accumulation_steps, seed=args.seed)
        try:
            memory = CandidateMemory(config, args, model_kwargs=c.model_kwargs, peft_config=peft_config,
                                     probe_examples=runner.params.probe_examples if runner.params.ntk_probe else 0)
        except Exception as error:  # an architecture the meta device cannot build: FLOPs only
            memory, memory_errors[name] = None, one_line(error, 200)
        for key in model_keys:
            size = int(key.train_size or 0)
            tokens, flops = estimate_run_flops(parameters, lengths[:size], **shape) if size else (0, 0.0)
            runs.append(RunCost(name, size, parameters, tokens, flops,
                                _run_memory(memory, lengths, size, memory_errors, name)))
        # Fine-tuning on the full data: the pool's padded tokens per row, times target_size rows.
        per_row = padded_tokens(lengths, args.train_batch_size, args.seed) / max(len(lengths), 1)
        if args.max_steps and args.max_steps > 0:
            rows = args.max_steps * args.train_batch_size * args.gradient_accumulation_steps
        else:
            rows = target_size * float(args.num_train_epochs)
        full[name] = 6.0 * parameters * per_row * rows
    return SelectionCost(runs, full, int(target_size), errors, memory_errors)


def _run_memory(memory: Any, lengths: Sequence[int], size: int, errors: dict[str, str], name: str):
    """One run's :class:`MemoryEstimate` at its subset's longest row (a zero-shot run: the pool's), or None."""
    if memory is None or not len(lengths):
        return None
    try:
        return memory.estimate(max(lengths[:size] if size else lengths), train=size > 0)
    except Exception as error:  # an operation the meta device cannot run: this candidate's memory only
        from .._utils import one_line

        errors.setdefault(name, one_line(error, 200))
        return None
