"""Planning a selection: which (candidate, subset size) runs it has, and the key of each.

A run's :class:`~lensllm_hf.records.RunKey` is the candidate's name, the subset size, the seed
and a config hash covering everything that changes what the run computes (training arguments,
adapter, preprocessing, metric, the data). Two selections that plan the same key share its
record, whatever process or machine runs it.

Example:
    >>> plan = RunPlan(candidates, run_sizes=[0, 200, 400], seed=0, hashes={"gpt2": "3f2a9c01d4"})
    >>> plan.key("gpt2", 200).name
    'gpt2__D200__seed0__3f2a9c01d4__....lensllm.json'
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import records
from .._utils import fields_adapter, first_problem, one_line
from ..errors import ConfigError, LensLLMError
from ..records import RunKey
from .candidates import Candidate

__all__ = ["NOT_HASHED", "RUN_DEFAULTS", "PlannedRun", "RunPlan", "changed_args", "check_training_args",
           "check_training_args_type", "config_hash_of", "user_args"]

#: TrainingArguments the selector sets itself (scratch output, quiet, no checkpoints); yours win.
RUN_DEFAULTS: dict[str, Any] = {"report_to": "none", "save_strategy": "no", "disable_tqdm": True,
                                "log_level": "warning", "logging_strategy": "no"}
#: Keys that do not change what a run computes: left out of the config hash.
NOT_HASHED = frozenset({
    "output_dir", "logging_dir", "report_to", "disable_tqdm", "log_level", "log_level_replica", "logging_steps",
    "logging_strategy", "logging_first_step", "save_strategy", "save_steps", "save_total_limit", "run_name",
    "push_to_hub", "hub_model_id", "hub_token", "dataloader_num_workers", "per_device_eval_batch_size",
    "eval_accumulation_steps", "overwrite_output_dir", "seed"})


@dataclass(frozen=True)
class PlannedRun:
    """One (candidate, subset size) run of a selection and where its record goes.

    ``status`` is the record's (``complete``, ``failed``, ``interrupted``) or ``pending``;
    ``key`` is the run's identity in the store.
    """

    candidate: str
    size: int
    record: str
    status: str = "pending"
    key: RunKey | None = None


class RunPlan:
    """The runs of a selection: every candidate on every run size, each with its :class:`RunKey`.

    Args:
        candidates: the candidates, in ranking-table order.
        run_sizes: subset sizes per candidate (0: the zero-shot evaluation).
        seed: the selection's seed (part of every key).
        hashes: candidate name -> its config hash.
    """

    def __init__(self, candidates: Sequence[Candidate], run_sizes: Sequence[int], seed: int,
                 hashes: Mapping[str, str]):
        self.candidates = list(candidates)
        self.run_sizes = [int(s) for s in run_sizes]
        self.seed = int(seed)
        self.hashes = dict(hashes)
        self._by_name = {c.name: c for c in self.candidates}

    def key(self, candidate: str, size: int) -> RunKey:
        """The identity of ``candidate``'s run on ``size`` examples."""
        c = self._by_name[candidate]
        # The adapter hash is spelled here, from the config as given, and handed to the run's
        # callback (which would otherwise recompute it from the wrapped model).
        return RunKey(model=c.name, train_size=int(size), seed=self.seed, config_hash=self.hashes[c.name],
                      revision=c.revision, adapter=records.adapter_hash(c.peft_dict()))

    def keys(self, only: Iterable[str] | None = None, sizes: Iterable[int] | None = None) -> list[RunKey]:
        """Keys of the runs of ``only`` these candidates and ``sizes`` (default: all), candidate by candidate."""
        only = None if only is None else set(only)
        sizes = None if sizes is None else set(sizes)
        return [self.key(c.name, s) for c in self.candidates if only is None or c.name in only
                for s in self.run_sizes if sizes is None or s in sizes]

    def candidate(self, key: RunKey) -> Candidate:
        return self._by_name[key.model]

    def choose(self, only: Iterable[str] | str | None, sizes: Iterable[int] | int | None) -> list[RunKey]:
        """:meth:`keys`, checking that ``only`` and ``sizes`` name planned candidates and sizes."""
        names = [c.name for c in self.candidates]
        if isinstance(only, str):
            only = [only]
        if only is not None:
            only = list(only)
            unknown = [n for n in only if n not in names]
            if unknown:
                raise LensLLMError(f"--only {', '.join(unknown)}: not a candidate; the candidates are {', '.join(names)}")
        if isinstance(sizes, int):
            sizes = [sizes]
        if sizes is not None:
            sizes = [int(s) for s in sizes]
            unknown = [s for s in sizes if s not in self.run_sizes]
            if unknown:
                raise LensLLMError(f"--size {', '.join(map(str, unknown))}: not a planned subset size; the sizes are "
                                   f"{', '.join(map(str, self.run_sizes))}")
        return self.keys(only, sizes)


def user_args(shared: Any, candidate: Candidate) -> dict[str, Any]:
    """The shared training arguments with the candidate's own on top (as keywords)."""
    if shared is None:
        shared = {}
    elif not isinstance(shared, Mapping):
        shared = changed_args(shared)
    return {**dict(shared), **candidate.training_args}


def changed_args(args: Any) -> dict[str, Any]:
    """The keywords a ``TrainingArguments`` was made with that differ from the defaults."""
    from transformers import TrainingArguments

    default = TrainingArguments(output_dir=tempfile.gettempdir())
    out = {}
    for f in dataclasses.fields(args):
        if f.init and f.name != "output_dir" and not f.name.startswith("_"):
            value = getattr(args, f.name)
            if value != getattr(default, f.name, None):
                out[f.name] = getattr(value, "value", value)
    return out


def check_training_args(shared: Any, candidates: Sequence[Candidate], *, where: str | None = None) -> None:
    """Build each candidate's ``TrainingArguments`` now, so a bad keyword fails before any model loads."""
    check_training_args_type(shared, where=where)
    from transformers import TrainingArguments

    scratch = tempfile.gettempdir()
    head = f"{where}: " if where else ""
    for c in candidates:
        given = user_args(shared, c)
        kwargs = {**RUN_DEFAULTS, **given, "output_dir": scratch}
        own = set(c.training_args) - set(shared or {}) if isinstance(shared, Mapping) else set()
        try:  # each value against its field's type: TrainingArguments keeps learning_rate='fast' as given
            fields_adapter(TrainingArguments, frozenset(given), extra="ignore").validate_python(given)
        except ValueError as error:  # pydantic's ValidationError
            problem = first_problem(error, yaml=True)
            key = f"candidate {c.name!r} training_args" if problem.key.split(".")[0] in own else "training_args"
            raise ConfigError(f"{head}{key}: {problem.shown}: {problem.text}", key=f"training_args.{problem.key}",
                              value=problem.value, path=where) from None
        try:
            TrainingArguments(**kwargs)
        except Exception as error:  # TypeError (unknown keyword), ValueError (bad combination), ...
            unknown = _unknown_keyword(error, TrainingArguments)
            key = f"candidate {c.name!r} training_args" if (unknown in own or not unknown and c.training_args) \
                else "training_args"
            if unknown:
                from .params import suggest

                fields = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
                raise ConfigError(f"{head}{key}: {unknown!r} is not a TrainingArguments keyword"
                                  f"{suggest(unknown, fields) or '; see transformers.TrainingArguments'}",
                                  key=f"training_args.{unknown}", path=where) from None
            raise ConfigError(f"{head}{key}: TrainingArguments refuses them ({one_line(error, 300)}); fix them",
                              key="training_args", path=where) from None


def check_training_args_type(shared: Any, *, where: str | None = None) -> None:
    """``training_args`` is None, a mapping or a ``TrainingArguments`` (cheap, no torch): what every
    reader of them (the plan, its hashes, ``from_store``) relies on."""
    if shared is not None and not isinstance(shared, Mapping) and not dataclasses.is_dataclass(shared):
        raise ConfigError(f"{where + ': ' if where else ''}training_args must be a mapping of TrainingArguments "
                          f"keywords or a TrainingArguments, got {type(shared).__name__}", key="training_args",
                          value=shared, path=where)


def _unknown_keyword(error: Exception, cls: type) -> str | None:
    text = str(error)
    if isinstance(error, TypeError) and "unexpected keyword argument" in text:
        return text.rsplit("'", 2)[-2] if text.count("'") >= 2 else None
    return None


def config_hash_of(candidate: Candidate, *, shared_args: Any, data: Mapping[str, Any], metric_key: str,
                   preprocess: str, collator: Callable | None, loader: Callable | None,
                   task: Mapping[str, Any] | None = None) -> str:
    """The config hash of a candidate's runs (see :class:`RunPlan`).

    ``task``: the layout, columns, chat template and generation settings of prompt/completion or
    conversational data (None for plain text, whose hash stays what it always was).
    """
    training = {k: v for k, v in user_args(shared_args, candidate).items() if k not in NOT_HASHED}
    # A local folder is named by the candidate's name (already in the key), not by its path: the
    # same config run from another checkout or machine finds the same records.
    config = {
        "model": _portable(candidate.model), "tokenizer": _portable(candidate.tokenizer),
        "model_kwargs": candidate.model_kwargs, "adapter": candidate.peft_dict(), "training": training,
        "data": dict(data), "metric": metric_key, "preprocess": preprocess, "collator": name_of(collator),
        "loader": name_of(loader),
    }
    if task is not None:
        config["task"] = dict(task)
    return records.config_hash(config)


def name_of(fn: Any) -> str | None:
    """A stable name for a user function in the config hash (its qualified name)."""
    if fn is None:
        return None
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _portable(model: str | None) -> str | None:
    """A Hub ID as is; a local folder as None (its path differs from machine to machine)."""
    import os

    return None if model is None or os.path.isdir(model) else model
