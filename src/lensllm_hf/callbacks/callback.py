"""``LensLLMCallback``: one line in a Trainer script records what LensLLM needs.

A plain :class:`transformers.TrainerCallback` in the style of ``integration_utils``: it works
from what the Trainer hands every event (``model``, ``train_dataloader``, ``eval_dataloader``,
``optimizer``, ``lr_scheduler``), sets up on the first event, imports its heavy parts lazily,
and only the main process writes. What truly needs the Trainer itself (an evaluation after the
training loop, checking the eval set before the first step) takes it explicitly:
``LensLLMCallback(trainer=...)`` or :meth:`LensLLMCallback.bind`.

It never changes training: it asks the Trainer, through ``control``, for an evaluation where
the run would otherwise end without one or at the stream-mode sizes you request (and a log at
each evaluation, so ``state.total_flos`` is current), and each evaluation the run would not
have made puts the global RNG back when it is done.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import weakref
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging

from .. import records
from .._utils import one_line
from ..errors import ConfigError
from ..records import Evaluation, RunRecord
from .arguments import CallbackArguments
from .describe import fingerprint, length, model_info, peft_config, plain, training_arguments, versions

__all__ = ["CallbackError", "LensLLMCallback"]

logger = logging.get_logger(__name__)

#: First size of ``eval_at_examples="geometric"``: 200, 400, 800, ... (the papers' subset sizes).
GEOMETRIC_START = 200

#: Schedules under which a stream-mode point matches a separate run on that many examples.
FLAT_SCHEDULES = ("constant", "constant_with_warmup")


#: Earlier name of :class:`~lensllm_hf.errors.ConfigError`: the callback cannot record this run as set up.
CallbackError = ConfigError


class LensLLMCallback(CallbackArguments, TrainerCallback):
    """Record a fine-tuning run for LensLLM: evaluations, FLOPs, final loss and the NTK probe.

    Add it to any ``Trainer`` (``Seq2SeqTrainer``, TRL trainers, PEFT models, several processes
    under ``accelerate launch``) and train as usual. When training ends, a run record (see
    :class:`lensllm_hf.records.RunRecord`) is in ``args.output_dir/lensllm_record.json``, or in
    ``store`` under the name the records module gives the run's key. The record is written at
    train begin with status ``interrupted``, after every evaluation, and at the end with status
    ``complete`` (or ``failed`` and the error), each time atomically.

    Given the Trainer (``trainer=`` or :meth:`bind`), the callback also checks the eval set before
    the first step, probes without an extra evaluation, and evaluates after the training loop when
    the run ended without an evaluation (another callback stopped it); without it, it works from
    what the events hand it (see ``docs/callback.md``, "With or without the Trainer").

    Args:
        store: a folder or fsspec URL (or a :class:`lensllm_hf.records.Store`) shared by many runs;
            None writes to ``args.output_dir``.
        trainer: the Trainer that runs this callback; same as calling :meth:`bind` (which also
            adds the callback to it).
        ntk_probe: measure the NTK term F(Theta, t) on ``probe_examples``
            examples of the eval set before the first step; False turns it off.
        probe_examples: k, the number of probe examples.
        eval_at_examples: stream mode: ``"geometric"`` (200, 400, 800, ... up to the training-set
            size) or a list of sizes; the Trainer evaluates when the examples seen first reach
            each, so one run yields a loss-versus-D curve (see ``docs/callback.md`` for when it
            matches separate runs on nested subsets: a warning says when it does not).
        eval_on_start: record an evaluation before the first step (the zero-shot point, D = 0).
            None: yes in stream mode, no otherwise (or set ``TrainingArguments(eval_on_start=True)``).
        model_name: the model's row name in curve tables; None uses ``config.name_or_path``, and
            a model built from a config (no name) gets ``<architecture>-<hash of config and
            weights>`` with a warning.
        revision: the model revision, when the path does not tell it (Hub cache paths do).
        train_size: the subset size D when ``len(train_dataset)`` is unknown (iterable datasets).
        config_hash: override the hash of the training configuration (a planner that computed
            it before the run passes its own).
        adapter_hash: the adapter part of the run's key (``records.adapter_hash`` of the adapter
            config, as the planner that built the key spelled it); None: computed from the PEFT
            model's active adapter config, and None for full fine-tuning.
        eval_name: with a dict of eval datasets, which one gives the loss (``eval_<name>_loss``)
            and the probe examples; None takes the first.
        allow_no_eval: record a run without an eval set (training loss only) instead of failing.
        probe_memory_mb: memory budget of the probe; above it gradients are sketched.
        projection_dim: sketch width of the probe (None: automatic, 0: exact).

    Example (an illustration: ``model``, ``args``, ``train``, ``test`` are yours)::

        from lensllm_hf import LensLLMCallback
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test,
                          callbacks=[LensLLMCallback(store="s3://bucket/runs")])
        trainer.train()          # writes one record under s3://bucket/runs/
    """

    def __post_init__(self, trainer) -> None:
        super().__post_init__(trainer)  # the arguments, checked
        #: The run record being written (None before the first ``train()``).
        self.record: RunRecord | None = None
        #: Where the record was last written (the value ``records.write_record`` returned).
        self.record_path: str | None = None
        self._trainer_ref: weakref.ref | None = None  # weak: the Trainer holds this callback
        self._initialized = False
        self._early: list[Evaluation] = []  # trainer.evaluate() before train(): the zero-shot point
        self._early_loader = None
        self._rng_before_eval: tuple[int, tuple] | None = None
        self._restore_eval_on_start = False
        self._finished = False
        if trainer is not None:
            self.bind(trainer)

    # -- the Trainer, when given ----------------------------------------------------------------

    def bind(self, trainer) -> LensLLMCallback:
        """Give the callback the Trainer that runs it (and add it to that Trainer if absent).

        With it the callback checks the eval set before the first step (a missing one or a wrong
        ``eval_name`` is a :class:`~lensllm_hf.errors.ConfigError` before any training), draws the probe's examples
        from ``trainer.get_eval_dataloader()`` without an extra evaluation, and calls
        ``trainer.evaluate()`` after the loop when the run ended without an evaluation. Returns
        the callback.

        Example (an illustration)::

            callback = LensLLMCallback(store="runs").bind(trainer)
            trainer.train()
        """
        from transformers import Trainer

        if not isinstance(trainer, Trainer):
            raise ConfigError(f"bind() takes the transformers.Trainer that runs this callback, got "
                              f"{type(trainer).__name__}", key="trainer", value=trainer)
        self._trainer_ref = weakref.ref(trainer)
        if not any(callback is self for callback in trainer.callback_handler.callbacks):
            trainer.add_callback(self)
        return self

    @property
    def trainer(self):
        """The bound Trainer, or None (not bound, or already garbage-collected)."""
        return self._trainer_ref() if self._trainer_ref is not None else None

    # -- failures -------------------------------------------------------------------------------

    def mark_failed(self, error: BaseException | str) -> None:
        """Record that the run failed, with the error's message (main process only).

        A callback never sees the exception that ends training, so an uncaught error in a script
        leaves the record ``interrupted`` (started, not finished), which is true. A program that
        catches the error (a planner running many candidates) calls this, or trains inside
        :meth:`recording`. A run whose training had finished keeps its ``complete`` record.

        Example (an illustration)::

            try:
                trainer.train()
            except Exception as error:
                callback.mark_failed(error)
                raise
        """
        if self.record is None or self.record_path is None or self._finished:
            return
        if isinstance(error, KeyboardInterrupt):
            self.record.status, self.record.error = "interrupted", "KeyboardInterrupt"
        else:
            self.record.status, self.record.error = "failed", one_line(error)
        self.record.wall_time_s = time.perf_counter() - self._t0
        self.record.finished_at = _now()
        self._write()

    @contextlib.contextmanager
    def recording(self) -> Iterator[LensLLMCallback]:
        """A block whose error marks the record ``failed`` (:meth:`mark_failed`); the error goes on.

        Example (an illustration)::

            with callback.recording():
                trainer.train()
        """
        try:
            yield self
        except BaseException as error:
            self.mark_failed(error)
            raise

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self, args, state, model=None, **kwargs) -> None:
        """Check once, before training, that the record can be written where it will go."""
        self._initialized = True
        if state.is_world_process_zero:
            records.check_writable(self._store if self._store is not None else args.output_dir)

    def on_init_end(self, args, state, control, **kwargs):
        if not self._initialized:
            self.setup(args, state, **kwargs)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not self._initialized:
            self.setup(args, state, model)
        if self._restore_eval_on_start:  # a previous train() failed before evaluating: give the switch back
            args.eval_on_start, self._restore_eval_on_start = False, False
        trainer = self.trainer
        early_loader = self._early_loader  # the DataLoader of an evaluation before train(), if any
        # A store, or the run's own file: records.write_record names the file in a store.
        self._target = self._store if self._store is not None else os.path.join(args.output_dir,
                                                                                 records.DEFAULT_RECORD_NAME)
        self._t0 = time.perf_counter()
        self._lr_sum = 0.0
        self._finished = False
        self._pending_at: int | None = None
        self._begin_step = state.global_step
        train_data = getattr(train_dataloader, "dataset", None)
        self._train_size = self.train_size if self.train_size is not None else length(train_data)
        self._batch = int(state.train_batch_size or args.per_device_train_batch_size)
        self._effective_batch = self._batch * args.gradient_accumulation_steps * max(1, args.world_size)
        steps = length(train_dataloader)
        self._steps_per_epoch = max(1, -(-steps // args.gradient_accumulation_steps)) if steps else None

        if trainer is not None:
            eval_dataset = trainer.eval_dataset
            self._has_eval = eval_dataset is not None
            metric, eval_key = self._metric_of(eval_dataset)
            self._metric_known = True
        else:
            # Not bound: the eval set shows itself at the first evaluation. One exists when the run
            # evaluates on its own (the Trainer checks at init) or evaluated before train();
            # otherwise assume one unless allow_no_eval (the Trainer says so if there is none).
            self._has_eval = (plain(args.eval_strategy) != "no" or early_loader is not None
                              or not self.allow_no_eval)
            metric, eval_key = ("eval_loss" if self.eval_name is None else f"eval_{self.eval_name}_loss"), None
            self._metric_known = self.eval_name is not None
        if not self._has_eval and not self.allow_no_eval:
            raise ConfigError("LensLLMCallback needs an evaluation set (the eval loss is what LensLLM fits): pass "
                              "eval_dataset=... to the Trainer, or LensLLMCallback(allow_no_eval=True) to record "
                              "the training loss only", key="eval_dataset")
        self._thresholds = self._stream_sizes(state) if self._has_eval else []

        self.record = self._new_record(args, state, model, train_data, metric)
        if state.global_step > 0:
            self.record.warnings.append(f"resumed from a checkpoint at step {state.global_step}: the NTK probe "
                                        "and the zero-shot point see the resumed weights")
        self._warn_stream(args, state)

        # The probe's examples come from an eval DataLoader: the bound Trainer's, the one of an
        # evaluation before train(), or else the one of an evaluation asked for before the first step.
        early_zero_shot = any(e.step == 0 for e in self.record.evaluations)
        loader_now = trainer is not None or early_loader is not None
        self._probe_pending = bool(self.ntk_probe and self._has_eval)
        self._start_eval_recorded = self.eval_on_start or bool(args.eval_on_start)
        want_start = self._has_eval and ((self.eval_on_start and not early_zero_shot)
                                         or (self._probe_pending and not loader_now))
        if state.is_world_process_zero:
            if self._probe_pending and loader_now:
                self.record.ntk = self._probe(model, args, trainer=trainer, eval_key=eval_key,
                                              loader=None if trainer is not None else early_loader)
                self._probe_pending = False
            self._write()
        if loader_now:
            self._probe_pending = False  # every process: the same decisions everywhere
        if want_start and not args.eval_on_start:
            # eval_on_start is the Trainer's one switch for an evaluation before the first step; it
            # reads it right after this event, and on_evaluate puts it back.
            from .ntk import rng_state

            self._rng_before_eval = (state.global_step, rng_state())
            self._restore_eval_on_start = True
            args.eval_on_start = True

    def _metric_of(self, eval_dataset) -> tuple[str, str | None]:
        """The loss metric's name and, for a dict of eval sets, the chosen set's key."""
        if not isinstance(eval_dataset, dict):
            return "eval_loss", None
        names = list(eval_dataset)
        if self.eval_name is not None and self.eval_name not in eval_dataset:
            raise ConfigError(f"eval_name={self.eval_name!r} is not one of the eval datasets {names}; "
                              "pass one of those names", key="eval_name", value=self.eval_name)
        name = self.eval_name if self.eval_name is not None else names[0]
        return f"eval_{name}_loss", name  # the Trainer's key for a named eval set

    # -- events ---------------------------------------------------------------------------------

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and self.record is not None:
            # The learning rate this step used (the scheduler steps after this event): for F with a schedule.
            self._lr_sum += float(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, **kwargs):
        if self.record is None or not self._has_eval:
            return
        self._rng_before_eval = None
        seen = self._examples_seen(state)
        ask = False
        while self._thresholds and seen >= self._thresholds[0]:
            self._pending_at = self._thresholds.pop(0)
            ask = True
        if control.should_training_stop and plain(args.eval_strategy) != "epoch":
            # The run ends at this step (max_steps, or a callback before this one stopped it): its
            # final eval loss is the point LensLLM fits. An epoch strategy evaluates at epoch end.
            ask = True
        if ask and not control.should_evaluate:
            # Evaluating draws from the global RNG (each DataLoader iterator takes a seed), which
            # would shift the dropout masks and data order of the steps after it: an evaluation
            # the run would not have made puts the RNG back when it is done (in on_evaluate).
            from .ntk import rng_state

            self._rng_before_eval = (state.global_step, rng_state())
            control.should_evaluate = True
        if control.should_evaluate:
            control.should_log = True  # the Trainer adds up FLOPs into state.total_flos when it logs

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.record is not None and self._has_eval and control.should_evaluate:
            control.should_log = True  # as in on_step_end: state.total_flos current at the evaluation

    def on_evaluate(self, args, state, control, metrics=None, model=None, eval_dataloader=None, **kwargs):
        if self._restore_eval_on_start:
            args.eval_on_start, self._restore_eval_on_start = False, False
        if self._rng_before_eval is not None and self._rng_before_eval[0] == state.global_step:
            from .ntk import set_rng_state

            set_rng_state(self._rng_before_eval[1])  # kept: a dict of eval sets calls this once per set
        metrics = {k: _number(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        if self.record is None:
            # trainer.evaluate() before train(): keep it as the zero-shot point of the coming run.
            key = "eval_loss" if self.eval_name is None else f"eval_{self.eval_name}_loss"
            if key in metrics:
                self._early.append(Evaluation(step=0, examples_seen=0, eval_loss=metrics[key], metrics=metrics))
                self._early_loader = eval_dataloader
            return
        rec = self.record
        if not self._metric_known:
            prefix = _metric_prefix(metrics)  # the first eval set evaluated is the first of a dict
            if prefix is not None:
                rec.metric, self._metric_known = f"{prefix}_loss", True
        if rec.metric in metrics:
            dataset = getattr(eval_dataloader, "dataset", None)
            if rec.dataset.get("eval_num_rows") is None and dataset is not None:
                rec.dataset.update(eval_fingerprint=fingerprint(dataset), eval_num_rows=length(dataset))
            if self._probe_pending:
                # Only an evaluation before the first step sees the weights the probe measures.
                if state.is_world_process_zero and state.global_step == self._begin_step:
                    rec.ntk = self._probe(model, args, loader=eval_dataloader)
                self._probe_pending = False
        first = rec.evaluations[0].step if rec.evaluations else None
        if state.global_step == 0 and not self._start_eval_recorded and first != 0:
            return  # the evaluation before the first step was only for the probe's examples
        ev = next((e for e in rec.evaluations if e.step == state.global_step), None)
        if ev is None:
            ev = Evaluation(step=state.global_step, examples_seen=self._examples_seen(state), eval_loss=None)
            rec.evaluations.append(ev)
        ev.metrics.update(metrics)  # a dict of eval sets reports once per set, at the same step
        if rec.metric in metrics:
            ev.eval_loss = metrics[rec.metric]
            warning = f"{rec.metric} is NaN or infinite at step {state.global_step}"
            if ev.eval_loss is None and warning not in rec.warnings:
                rec.warnings.append(warning)
        ev.epoch = state.epoch
        ev.tokens_seen = self._tokens_seen(args, state)
        ev.total_flos = float(state.total_flos)
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
        if self._restore_eval_on_start:  # the run never evaluated (no step, or an error before it)
            args.eval_on_start, self._restore_eval_on_start = False, False
        trainer = self.trainer
        ended_with_eval = any(e.step == state.global_step and self.record.metric in e.metrics
                              for e in self.record.evaluations)
        if self._has_eval and trainer is not None and not ended_with_eval:
            # The run ended without one (a callback after this one stopped it): evaluate now.
            from .ntk import rng_state, set_rng_state

            saved = rng_state()
            try:
                trainer.evaluate()
            finally:
                set_rng_state(saved)
        self._finished = True
        self._finish(args, state)
        if state.is_world_process_zero:
            self._write()

    # -- the record -----------------------------------------------------------------------------

    def _new_record(self, args, state, model, train_data, metric) -> RunRecord:
        info, adapter, warnings = model_info(model, self.model_name, self.revision)
        if warnings:
            logger.warning(f"LensLLMCallback: {warnings[-1]}")
        training = training_arguments(args, self._batch, self._effective_batch)
        adapter_config = {k: v for k, v in (adapter or {}).items() if k != "trainable_parameters"}
        early = [e for e in self._early if e.step == 0]
        self._early = []
        self._early_loader = None
        return RunRecord(
            model=info,
            adapter=adapter,
            adapter_hash=self.adapter_hash or (records.adapter_hash(peft_config(model)) if adapter else None),
            train_size=self._train_size,
            dataset={
                "fingerprint": fingerprint(train_data),
                "num_rows": length(train_data),
                "eval_fingerprint": None,  # filled at the first evaluation, from its DataLoader
                "eval_num_rows": None,
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
            versions=versions(),
            warnings=warnings,
        )

    def _warn_stream(self, args, state) -> None:
        """Stream mode whose points are not separate runs' ends: say so in the record and the log."""
        if self.eval_at_examples is None:
            return
        schedule = plain(args.lr_scheduler_type)
        if self._steps_per_epoch:
            epochs = state.max_steps / self._steps_per_epoch
        else:
            epochs = float(args.num_train_epochs) if args.max_steps <= 0 else 1.0
        reasons = []
        if schedule not in FLAT_SCHEDULES:
            reasons.append(f"lr_scheduler_type={schedule!r} decays the learning rate over the whole run")
        if epochs > 1:
            reasons.append(f"the run makes {epochs:g} passes over the data")
        if reasons:
            warning = ("stream mode: " + " and ".join(reasons) + ", so a point at D examples is not the end of a "
                       "run on D examples (docs/callback.md measures mean gaps of 12-19 % against nested runs); "
                       "use lr_scheduler_type='constant' and one epoch, or separate runs on nested subsets")
            self.record.warnings.append(warning)
            logger.warning(f"LensLLMCallback: {warning}")

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
        if not self._has_eval or rec.final_eval_loss is not None:
            rec.status, rec.error = "complete", None
            return
        rec.status = "failed"
        if last is not None and rec.metric in last.metrics:
            rec.error = (f"{rec.metric} is NaN at the end of training (step {state.global_step}): the run diverged; "
                         "lower the learning rate or check the data")
        elif rec.evaluations and not any(rec.metric in e.metrics for e in rec.evaluations):
            seen = sorted({k for e in rec.evaluations for k in e.metrics if k.endswith("_loss")})
            rec.error = (f"no evaluation reported {rec.metric} (it reported {', '.join(seen) or 'no loss'}): "
                         "pass eval_name= as one of the eval datasets' names")
        else:
            rec.error = (f"the run ended at step {state.global_step} without an evaluation (a callback after "
                         "LensLLMCallback stopped it): pass LensLLMCallback(trainer=trainer) or call "
                         "callback.bind(trainer) so it evaluates after the training loop")

    def _write(self) -> None:
        self.record_path = records.write_record(self.record, self._target)

    # -- the NTK probe --------------------------------------------------------------------------

    def _probe(self, model, args, *, trainer=None, eval_key=None, loader=None) -> dict[str, Any]:
        """Theta's spectrum and r before the first step; a failure is recorded and never stops training."""
        try:
            from .ntk import empirical_ntk, rng_state, set_rng_state

            if loader is None:
                saved = rng_state()  # building a DataLoader may seed a generator
                try:
                    loader = trainer.get_eval_dataloader(eval_key)
                finally:
                    set_rng_state(saved)
            batch = _probe_batch(loader, self.probe_examples)
            probe = empirical_ntk(model, batch, projection_dim=self.projection_dim,
                                  max_memory_mb=self.probe_memory_mb, seed=args.seed)
        except Exception as error:  # the probe is a measurement: it must not take the run down
            logger.warning(f"LensLLMCallback: the NTK probe failed, training goes on without it: {one_line(error)}")
            return {"F": None, "error": one_line(error)}
        return {"F": None, "eta": float(args.learning_rate), "t": None, **probe.to_dict(),
                "examples": f"the first {probe.k} examples of the eval set"}

    # -- counting -------------------------------------------------------------------------------

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
        if plain(args.include_num_input_tokens_seen) in ("no", False, None):
            return None  # the Trainer counts tokens only when asked to
        return int(state.num_input_tokens_seen)


# -- helpers -------------------------------------------------------------------------------------


def _probe_batch(loader, k: int) -> dict[str, Any]:
    """The first ``k`` examples of an eval DataLoader's dataset, collated by its own collate_fn.

    The Trainer's eval DataLoader holds the dataset with the columns the model does not take
    removed (or a collator that removes them), so this is what evaluation feeds the model.
    """
    import torch

    dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
    n = min(k, length(dataset) or 0)
    if n < 2:
        raise ConfigError(f"the eval set has {n} example(s) with a known length; the NTK probe needs at least 2",
                          key="eval_dataset")
    if collate is None:
        raise ConfigError("the eval DataLoader has no collate_fn; the NTK probe collates its examples with it",
                          key="eval_dataset")
    batch = collate([dataset[i] for i in range(n)])
    return {key: value for key, value in dict(batch).items() if isinstance(value, torch.Tensor)}


def _metric_prefix(metrics: dict[str, Any]) -> str | None:
    """``eval`` or ``eval_<name>``: the prefix of one evaluation's metrics (every one has ``<prefix>_runtime``)."""
    return next((key[: -len("_runtime")] for key in metrics if key.endswith("_runtime")), None)


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
