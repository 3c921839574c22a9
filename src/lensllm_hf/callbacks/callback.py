"""``LensLLMCallback``: one line in a Trainer script records what LensLLM needs.

A plain :class:`transformers.TrainerCallback` in the style of ``integration_utils``: it sets up on
the first event, imports its heavy parts lazily, and only the main process writes. It never
changes training: the only thing it asks of the Trainer is an evaluation (``should_evaluate``)
where the run would otherwise end without one, or at the stream-mode sizes you request, and
such an evaluation puts the global RNG back when it is done.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
import traceback
import weakref
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging

from .. import records
from ..errors import LensLLMError
from ..records import Evaluation, RunRecord

__all__ = ["CallbackError", "LensLLMCallback"]

logger = logging.get_logger(__name__)

#: First size of ``eval_at_examples="geometric"``: 200, 400, 800, ... (the papers' subset sizes).
GEOMETRIC_START = 200


class CallbackError(LensLLMError, ValueError):
    """The callback cannot record this run as set up; one line saying what to pass."""


class LensLLMCallback(TrainerCallback):
    """Record a fine-tuning run for LensLLM: evaluations, FLOPs, final loss and the NTK probe.

    Add it to any ``Trainer`` (``Seq2SeqTrainer``, TRL trainers, PEFT models, several processes
    under ``accelerate launch``) and train as usual. When training ends, a run record (see
    :class:`lensllm_hf.records.RunRecord`) is in ``args.output_dir/lensllm_record.json``, or in
    ``store`` under a stable name per (model, subset size, seed, config hash). The record is
    written at train begin with status ``interrupted``, after every evaluation, and at the end
    with status ``complete`` (or ``failed`` and the error), each time atomically.

    Args:
        store: a folder or fsspec URL shared by many runs; None writes to ``args.output_dir``.
        ntk_probe: measure the NTK term F(Theta, t) (DESIGN.md, section 2) on ``probe_examples``
            examples of the eval set at train begin; False turns it off.
        probe_examples: k, the number of probe examples.
        eval_at_examples: stream mode: ``"geometric"`` (200, 400, 800, ... up to the training-set
            size) or a list of sizes; the Trainer evaluates when the examples seen first reach
            each, so one run yields a loss-versus-D curve (see ``docs/callback.md`` for when it
            matches separate runs on nested subsets).
        eval_on_start: evaluate before the first step (the zero-shot point, D = 0). None: yes in
            stream mode, no otherwise (or set ``TrainingArguments(eval_on_start=True)``).
        model_name: the model's row name in curve tables; None uses ``config._name_or_path``.
        revision: the model revision, when the path does not tell it (Hub cache paths do).
        train_size: the subset size D when ``len(train_dataset)`` is unknown (iterable datasets).
        config_hash: override the hash of the training configuration used in the record name
            (a planner that computed it before the run passes its own).
        eval_name: with a dict of eval datasets, which one gives the loss (``eval_<name>_loss``)
            and the probe examples; None takes the first.
        allow_no_eval: record a run without an eval set (training loss only) instead of failing.
        probe_memory_mb: memory budget of the probe; above it gradients are sketched.
        projection_dim: sketch width of the probe (None: automatic, 0: exact).

    Example:
        >>> from lensllm_hf import LensLLMCallback
        >>> trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test,
        ...                   callbacks=[LensLLMCallback(store="s3://bucket/runs")])
        >>> trainer.train()          # writes s3://bucket/runs/<model>__D800__seed42__<hash>.lensllm.json
    """

    def __init__(self, store: str | os.PathLike | None = None, *, ntk_probe: bool = True,
                 probe_examples: int = 16, eval_at_examples: str | Sequence[int] | None = None,
                 eval_on_start: bool | None = None, model_name: str | None = None,
                 revision: str | None = None, train_size: int | None = None, config_hash: str | None = None,
                 eval_name: str | None = None, allow_no_eval: bool = False, probe_memory_mb: float = 2048.0,
                 projection_dim: int | None = None):
        if isinstance(eval_at_examples, str) and eval_at_examples != "geometric":
            raise CallbackError(f"eval_at_examples={eval_at_examples!r}: pass 'geometric' or a list of sizes "
                                "such as [200, 400, 800]")
        if eval_at_examples is not None and not isinstance(eval_at_examples, str):
            sizes = list(eval_at_examples)
            if not sizes or any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in sizes):
                raise CallbackError(f"eval_at_examples={eval_at_examples!r}: sizes must be whole numbers > 0, "
                                    "e.g. [200, 400, 800]")
            eval_at_examples = sorted(set(sizes))
        if not isinstance(probe_examples, int) or probe_examples < 2:
            raise CallbackError(f"probe_examples={probe_examples!r}: the NTK probe needs at least 2 examples "
                                "(16 is the default)")
        self.store = None if store is None else str(store)
        self.ntk_probe = ntk_probe
        self.probe_examples = probe_examples
        self.eval_at_examples = eval_at_examples
        self.eval_on_start = eval_at_examples is not None if eval_on_start is None else eval_on_start
        self.model_name = model_name
        self.revision = revision
        self.train_size = train_size
        self.config_hash = config_hash
        self.eval_name = eval_name
        self.allow_no_eval = allow_no_eval
        self.probe_memory_mb = probe_memory_mb
        self.projection_dim = projection_dim
        self.record: RunRecord | None = None
        self.record_path: str | None = None
        self._initialized = False
        self._trainer_ref: weakref.ref | None = None
        self._has_eval = False
        self._early: list[Evaluation] = []
        self._hook = self._previous_hook = None
        self._rng_before_eval: tuple[int, tuple] | None = None

    # -- set-up -------------------------------------------------------------------------------

    def setup(self, args, state, model, **kwargs) -> None:
        """Check once, before training, that the record can be written where it will go."""
        self._initialized = True
        if state.is_world_process_zero:
            records.check_writable(self.store if self.store is not None else args.output_dir)

    def on_init_end(self, args, state, control, **kwargs):
        if not self._initialized:
            self.setup(args, state, **kwargs)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not self._initialized:
            self.setup(args, state, model, **kwargs)
        trainer = _find_trainer()
        self._trainer_ref = weakref.ref(trainer) if trainer is not None else None
        eval_dataset = getattr(trainer, "eval_dataset", None)
        metric, probe_source = self._eval_source(eval_dataset)
        self._has_eval = eval_dataset is not None
        if not self._has_eval and not self.allow_no_eval:
            raise CallbackError("LensLLMCallback needs an evaluation set (the eval loss is what LensLLM fits): pass "
                                "eval_dataset=... to the Trainer, or LensLLMCallback(allow_no_eval=True) to record "
                                "the training loss only")

        self._t0 = time.perf_counter()
        self._lr_sum = 0.0
        self._finished = False
        self._pending_at: int | None = None
        self._train_size = self.train_size if self.train_size is not None else _length(
            getattr(trainer, "train_dataset", None) if trainer is not None else getattr(train_dataloader, "dataset", None))
        self._batch = int(state.train_batch_size or args.per_device_train_batch_size)
        self._effective_batch = self._batch * args.gradient_accumulation_steps * max(1, args.world_size)
        steps = _length(train_dataloader)
        self._steps_per_epoch = max(1, -(-steps // args.gradient_accumulation_steps)) if steps else None
        self._thresholds = self._stream_sizes(state) if self._has_eval else []

        self.record = self._new_record(args, state, model, trainer, metric, probe_source)
        if state.global_step > 0:
            self.record.warnings.append(f"resumed from a checkpoint at step {state.global_step}: the NTK probe "
                                        "and the zero-shot point see the resumed weights")
        if state.is_world_process_zero:
            if self.ntk_probe and self._has_eval:
                self.record.ntk = self._probe(trainer, model, probe_source, args)
            self.record_path = self._target(args)
            self._write()
            self._install_failure_hook()
        if self._has_eval and self.eval_on_start and not args.eval_on_start and trainer is not None:
            self._evaluate_quietly(trainer)  # the zero-shot point

    @staticmethod
    def _evaluate_quietly(trainer) -> None:
        """``trainer.evaluate()`` (on every process: it gathers across them), RNG left as it was."""
        from .ntk import rng_state, set_rng_state

        saved = rng_state()
        try:
            trainer.evaluate()
        finally:
            set_rng_state(saved)

    def _eval_source(self, eval_dataset) -> tuple[str, Any]:
        """The loss metric's name and the dataset the probe draws from."""
        if not isinstance(eval_dataset, dict):
            return "eval_loss", eval_dataset
        names = list(eval_dataset)
        if self.eval_name is not None and self.eval_name not in eval_dataset:
            raise CallbackError(f"eval_name={self.eval_name!r} is not one of the eval datasets {names}; "
                                "pass one of those names")
        name = self.eval_name if self.eval_name is not None else names[0]
        return f"eval_{name}_loss", eval_dataset[name]  # the Trainer's key for a named eval set

    # -- events -------------------------------------------------------------------------------

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and self.record is not None:
            # The learning rate this step used (the scheduler steps after this event): for F with a schedule.
            self._lr_sum += float(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, **kwargs):
        if self.record is None or not self._has_eval:
            return
        seen = self._examples_seen(state)
        ask = False
        while self._thresholds and seen >= self._thresholds[0]:
            self._pending_at = self._thresholds.pop(0)
            ask = True
        if state.global_step >= state.max_steps and _value(args.eval_strategy) == "no":
            ask = True  # the final eval loss is the point LensLLM fits
        self._rng_before_eval = None
        if ask and not control.should_evaluate:
            # Evaluating draws from the global RNG (each DataLoader iterator takes a seed), which
            # would shift the dropout masks and data order of the steps after it: an evaluation
            # the run would not have made puts the RNG back when it is done (in on_evaluate).
            from .ntk import rng_state

            self._rng_before_eval = (state.global_step, rng_state())
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._rng_before_eval is not None and self._rng_before_eval[0] == state.global_step:
            from .ntk import set_rng_state

            set_rng_state(self._rng_before_eval[1])  # kept: a dict of eval sets calls this once per set
        metrics = {k: _number(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        if self.record is None:
            # trainer.evaluate() before train(): keep it as the zero-shot point of the coming run.
            self._early.append(Evaluation(step=0, examples_seen=0, eval_loss=metrics.get("eval_loss"),
                                          metrics=metrics))
            return
        ev = next((e for e in self.record.evaluations if e.step == state.global_step), None)
        if ev is None:
            ev = Evaluation(step=state.global_step, examples_seen=self._examples_seen(state), eval_loss=None)
            self.record.evaluations.append(ev)
        ev.metrics.update(metrics)  # a dict of eval sets reports once per set, at the same step
        if self.record.metric in metrics:
            ev.eval_loss = metrics[self.record.metric]
            warning = f"{self.record.metric} is NaN or infinite at step {state.global_step}"
            if ev.eval_loss is None and warning not in self.record.warnings:
                self.record.warnings.append(warning)
        ev.epoch = state.epoch
        ev.tokens_seen = self._tokens_seen(args, state)
        ev.total_flos = self._flos_so_far(args, state)
        if self._pending_at is not None:
            ev.at_examples, self._pending_at = self._pending_at, None
        if self._finished:
            self._finish(args, state)  # a manual evaluate() after training updates the final loss
        if state.is_world_process_zero:
            self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.record is None or not logs:
            return
        if "loss" in logs:
            self.record.train_curve.append({"step": state.global_step, "examples_seen": self._examples_seen(state),
                                            "loss": _number(logs["loss"])})
        if "train_loss" in logs:
            self.record.train_loss = _number(logs["train_loss"])

    def on_train_end(self, args, state, control, **kwargs):
        if self.record is None:
            return
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        ended_with_eval = any(e.step == state.global_step and self.record.metric in e.metrics
                              for e in self.record.evaluations)
        if self._has_eval and trainer is not None and not ended_with_eval:
            self._evaluate_quietly(trainer)  # the run did not end with one (e.g. stopped by another callback)
        self._finished = True
        self._finish(args, state)
        if state.is_world_process_zero:
            self._write()
            self._remove_failure_hook()

    # -- failures -----------------------------------------------------------------------------

    def mark_failed(self, error: BaseException | str) -> None:
        """Record that the run failed, with the error's message (main process only).

        Called automatically when an uncaught exception leaves ``Trainer.train`` in a script; a
        program that catches the error itself (a planner running many candidates) calls it.

        Example:
            >>> try:
            ...     trainer.train()
            ... except Exception as error:
            ...     callback.mark_failed(error)
        """
        if self.record is None or self.record_path is None:
            return
        if isinstance(error, KeyboardInterrupt):
            self.record.status, self.record.error = "interrupted", "KeyboardInterrupt"
        else:
            self.record.status = "failed"
            self.record.error = _one_line(error)
        self.record.wall_time_s = time.perf_counter() - self._t0
        self.record.finished_at = _now()
        self._write()
        self._remove_failure_hook()

    def _install_failure_hook(self) -> None:
        # A callback never sees the exception that ends training; the interpreter's last-chance
        # hook does, in a script. Chain to the previous hook so nothing else changes.
        previous = sys.excepthook

        def hook(exc_type, exc, tb):
            with contextlib.suppress(Exception):
                trainer = self._trainer_ref() if self._trainer_ref is not None else None
                if not self._finished and _through_train(tb, trainer):
                    self.mark_failed(exc)
            previous(exc_type, exc, tb)

        self._previous_hook, self._hook = previous, hook
        sys.excepthook = hook

    def _remove_failure_hook(self) -> None:
        if self._hook is not None and sys.excepthook is self._hook:
            sys.excepthook = self._previous_hook
        self._hook = None

    # -- the record ---------------------------------------------------------------------------

    def _new_record(self, args, state, model, trainer, metric, eval_dataset) -> RunRecord:
        # eval_dataset: the one set whose loss is the metric (a dict of sets: the chosen one)
        base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        config = getattr(base, "config", None)
        name_or_path = str(getattr(config, "_name_or_path", "") or getattr(base, "name_or_path", "") or "")
        adapter = _adapter_summary(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        training = {
            "learning_rate": args.learning_rate,
            "lr_scheduler_type": _value(args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps,
            "warmup_ratio": getattr(args, "warmup_ratio", None),
            "weight_decay": args.weight_decay,
            "num_train_epochs": args.num_train_epochs,
            "max_steps": args.max_steps,
            "per_device_train_batch_size": self._batch,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "effective_batch_size": self._effective_batch,
            "optim": _value(args.optim),
            "max_grad_norm": args.max_grad_norm,
            "label_smoothing_factor": args.label_smoothing_factor,
        }
        adapter_config = {k: v for k, v in (adapter or {}).items() if k != "trainable_parameters"}
        train_dataset = getattr(trainer, "train_dataset", None)
        early = [e for e in self._early if e.step == 0]
        self._early = []
        return RunRecord(
            model={
                "id": self.model_name or name_or_path or type(base).__name__,
                "name_or_path": name_or_path or None,
                "revision": self.revision or _revision_from_path(name_or_path),
                "architecture": (getattr(config, "architectures", None) or [type(base).__name__])[0],
                "num_parameters": sum(p.numel() for p in model.parameters()),
                "trainable_parameters": trainable,
            },
            adapter=adapter,
            train_size=self._train_size,
            dataset={
                "fingerprint": _fingerprint(train_dataset),
                "num_rows": _length(train_dataset),
                "eval_fingerprint": _fingerprint(eval_dataset),
                "eval_num_rows": _length(eval_dataset),
            },
            seed=args.seed,
            world_size=max(1, args.world_size),
            effective_batch_size=self._effective_batch,
            config_hash=self.config_hash or records.config_hash({"training": training, "adapter": adapter_config}),
            training=training,
            metric=metric,
            evaluations=early,
            stream={"eval_at_examples": list(self._thresholds)} if self.eval_at_examples is not None else None,
            started_at=_now(),
            versions=_versions(),
        )

    def _finish(self, args, state) -> None:
        rec = self.record
        last = next((e for e in rec.evaluations if e.step == state.global_step), None)
        rec.final_eval_loss = last.eval_loss if last is not None else None
        rec.total_flos = float(state.total_flos)
        rec.wall_time_s = time.perf_counter() - self._t0
        rec.finished_at = _now()
        if rec.ntk is not None and "eigenvalues" in rec.ntk:
            from .ntk import ntk_F

            eta, t = float(args.learning_rate), int(state.global_step)
            rec.ntk.update(eta=eta, t=t, F=ntk_F(rec.ntk["eigenvalues"], rec.ntk["coefficients"], eta * t),
                           lr_sum=self._lr_sum,
                           F_scheduled=ntk_F(rec.ntk["eigenvalues"], rec.ntk["coefficients"], self._lr_sum))
        if self._has_eval and rec.final_eval_loss is None:
            rec.status = "failed"
            rec.error = (f"{rec.metric} is NaN or missing at the end of training (step {state.global_step}): the run "
                         "diverged or the last evaluation failed; lower the learning rate or check the data")
        else:
            rec.status, rec.error = "complete", None

    def _target(self, args) -> str:
        if self.store is None:
            return os.path.join(args.output_dir, records.DEFAULT_RECORD_NAME)
        rec = self.record
        return records.record_path(self.store, rec.model_id, rec.train_size, rec.seed, rec.config_hash)

    def _write(self) -> None:
        if self.record_path is not None:
            records.write_record(self.record, self.record_path)

    # -- the NTK probe ------------------------------------------------------------------------

    def _probe(self, trainer, model, dataset, args) -> dict[str, Any]:
        """Theta's spectrum and r at train begin; a failure is recorded and never stops training."""
        try:
            from .ntk import empirical_ntk

            batch = _probe_batch(trainer, dataset, self.probe_examples)
            probe = empirical_ntk(model, batch, projection_dim=self.projection_dim,
                                  max_memory_mb=self.probe_memory_mb, seed=args.seed)
        except Exception as error:  # the probe is a measurement: it must not take the run down
            logger.warning(f"LensLLMCallback: the NTK probe failed, training goes on without it: {_one_line(error)}")
            return {"F": None, "error": _one_line(error)}
        out = {"F": None, "eta": float(args.learning_rate), "t": None, **probe.to_dict(),
               "examples": f"the first {probe.k} examples of the eval set"}
        return out

    # -- counting -----------------------------------------------------------------------------

    def _stream_sizes(self, state) -> list[int]:
        if self.eval_at_examples is None:
            return []
        total = state.max_steps * self._effective_batch
        if self._train_size:
            total = min(total, self._train_size)  # "first reach": sizes within the first pass
        if self.eval_at_examples == "geometric":
            sizes, size = [], GEOMETRIC_START
            while size <= total:
                sizes.append(size)
                size *= 2
            return sizes
        return [s for s in self.eval_at_examples if s <= total]

    def _examples_seen(self, state) -> int:
        done = state.global_step * self._effective_batch
        if self._steps_per_epoch and self._train_size:
            epochs, step = divmod(state.global_step, self._steps_per_epoch)
            # The last batch of an epoch is short: count whole epochs as the dataset's size.
            done = epochs * self._train_size + min(step * self._effective_batch, self._train_size)
        return int(done)

    @staticmethod
    def _tokens_seen(args, state) -> int | None:
        if _value(args.include_num_input_tokens_seen) in ("no", False, None):
            return None  # the Trainer counts tokens only when asked to
        return int(state.num_input_tokens_seen)

    def _flos_so_far(self, args, state) -> float:
        # state.total_flos moves only at logging steps; the Trainer holds the rest in current_flos
        # (per process: the other processes' share is estimated as equal).
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        pending = float(getattr(trainer, "current_flos", 0.0) or 0.0)
        return float(state.total_flos) + pending * max(1, args.world_size)


# -- helpers -------------------------------------------------------------------------------------


def _find_trainer():
    """The Trainer running this event, from the call stack.

    Callbacks get the model, the data loaders and the optimizer, not the Trainer; the eval set,
    its data collator and a final evaluation need it. The events are called from Trainer methods
    a few frames up, so look there (a subclass, as TRL's trainers, matches too).
    """
    from transformers import Trainer

    frame = sys._getframe(1)
    for _ in range(16):
        if frame is None:
            break
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back
    return None


def _probe_batch(trainer, dataset, k: int) -> dict[str, Any]:
    """The first ``k`` eval examples, with the columns and collator the Trainer uses for evaluation."""
    import torch

    if trainer is None:
        raise CallbackError("the Trainer running this callback was not found; add LensLLMCallback to a "
                            "transformers.Trainer (callbacks=[...] or trainer.add_callback)")
    n = min(k, _length(dataset) or 0)
    if n < 2:
        raise CallbackError(f"the eval set has {n} example(s); the NTK probe needs at least 2")
    collate = trainer.data_collator
    try:
        import datasets

        is_hf = isinstance(dataset, datasets.Dataset)
    except ImportError:
        is_hf = False
    if is_hf:
        dataset = dataset.select(range(n))
        remove = getattr(trainer, "_remove_unused_columns", None)  # what get_eval_dataloader does
        if remove is not None:
            dataset = remove(dataset, description="LensLLM probe")
    else:
        wrap = getattr(trainer, "_get_collator_with_removed_columns", None)
        if wrap is not None:
            collate = wrap(collate, description="LensLLM probe")
    batch = collate([dataset[i] for i in range(n)])
    return {key: value for key, value in dict(batch).items() if isinstance(value, torch.Tensor)}


def _adapter_summary(model) -> dict[str, Any] | None:
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    name = getattr(model, "active_adapter", None)
    name = name if isinstance(name, str) and name in configs else next(iter(configs))
    config = configs[name].to_dict() if hasattr(configs[name], "to_dict") else dict(vars(configs[name]))
    keep = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "modules_to_save", "task_type",
            "use_dora", "use_rslora", "init_lora_weights", "num_virtual_tokens")
    summary: dict[str, Any] = {"peft_type": _value(config.get("peft_type")), "adapter_name": name}
    for key in keep:
        if key in config and config[key] is not None:
            value = config[key]
            summary[key] = sorted(value) if isinstance(value, (set, frozenset)) else _value(value)
    summary["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return summary


def _fingerprint(dataset) -> str | None:
    """``datasets``' own fingerprint, else a hash of the size and a sample of the items."""
    if dataset is None:
        return None
    fingerprint = getattr(dataset, "_fingerprint", None)
    if isinstance(fingerprint, str):
        return fingerprint
    n = _length(dataset)
    if not n:
        return None
    import hashlib

    digest = hashlib.sha256(str(n).encode())
    for i in sorted({round(j * (n - 1) / 15) for j in range(16)}):
        with contextlib.suppress(Exception):
            digest.update(repr(dataset[i]).encode())
    return digest.hexdigest()[:16]


def _revision_from_path(path: str) -> str | None:
    # A model loaded from the Hub cache sits in .../models--org--name/snapshots/<commit>/
    parts = path.replace("\\", "/").rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "snapshots":
        return parts[-1]
    return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("lensllm_hf", "torch", "transformers", "accelerate", "datasets", "peft"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _through_train(tb, trainer) -> bool:
    """Whether a traceback passes through this run's ``Trainer.train`` (not another trainer's, not later code)."""
    for frame, _ in traceback.walk_tb(tb):
        if frame.f_code.co_name in ("train", "_inner_training_loop") and frame.f_locals.get("self") is trainer:
            return trainer is not None
    return False


def _length(obj) -> int | None:
    try:
        return len(obj) if obj is not None else None
    except (TypeError, NotImplementedError):
        return None


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _value(obj):
    return getattr(obj, "value", obj)


def _one_line(error: BaseException | str) -> str:
    text = str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:500]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
