"""Running one planned run: claim it in the store, load the candidate, train with the callback, free.

:meth:`Runner.attempt` is what every backend calls per run key. It returns the run's record
(read from the store when another process already made it, or made now), ``None`` when the
candidate cannot run (it is in :attr:`Runner.failures`), or a :class:`Deferred` when another
live process holds the run's claim: the backend does other runs first and asks again later.

Example:
    >>> runner = Runner(selector, plan, store, pool=pool, evalset=evalset, metric=Metric("loss"))
    >>> runner.attempt(plan.key("gpt2", 200))
    RunRecord(model={'id': 'gpt2', ...}, train_size=200, status='complete', ...)
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .._utils import display, one_line
from ..errors import LensLLMError
from ..records import Evaluation, RunKey, RunRecord, Store
from .candidates import Candidate
from .data import argmax_logits, default_preprocess
from .plan import RUN_DEFAULTS, RunPlan, user_args
from .scoring import Metric

__all__ = ["CandidateError", "Deferred", "Runner", "free_memory", "is_main_process", "main_decides", "quiet_logs"]


class CandidateError(LensLLMError):
    """A candidate that cannot even start a run (load, tokenizer, preprocessing, Trainer set-up)."""


@dataclass(frozen=True)
class Deferred:
    """A run another live process has claimed: ask again later.

    Attributes:
        key: the run.
        owner: the live claim (``owner``, ``host``, ``pid``, ``heartbeat_at``), when known.
    """

    key: RunKey
    owner: dict[str, Any] | None = None

    def describe(self) -> str:
        owner = self.owner or {}
        who = f"{owner.get('host', '?')}:{owner.get('pid', '?')}" if owner else "another process"
        return f"{display(self.key.model)} D={self.key.train_size} is being run by {display(who)}"


class Runner:
    """Makes the runs of one selection, one at a time, in this process.

    Args:
        params: the selection's parameters (the :class:`LensLLMSelector`).
        plan: the planned runs (keys -> candidates).
        store: where records are read, claimed and written.
        pool: the shuffled training rows (the subset of size D is its first D rows).
        evalset: the evaluation rows.
        metric: what the runs report for ranking.
    """

    def __init__(self, params: Any, plan: RunPlan, store: Store, *, pool: Any, evalset: Any, metric: Metric):
        self.params = params
        self.plan = plan
        self.store = store
        self.pool = pool
        self.evalset = evalset
        self.metric = metric
        #: candidate name -> its error: no more compute is spent on it in this selection.
        self.failures: dict[str, str] = {}
        #: the runs this process made (trained or evaluated), in order; the others were read from the store.
        self.made: list[RunKey] = []
        self._features_cache: tuple[str, Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """What a worker process needs (the Ray backend pickles the runner once per selection).

        The whole train and eval sets in ``params`` are left out (the runs use ``pool`` and
        ``evalset``), and so is the features cache, which a worker rebuilds. Local paths are
        made absolute: a worker may start in another folder.
        """
        import dataclasses

        state = dict(self.__dict__)
        if dataclasses.is_dataclass(self.params):
            state["params"] = dataclasses.replace(self.params, train_dataset=None, eval_dataset=None,
                                                  output_dir=os.path.abspath(str(self.params.output_dir)))
        if "://" not in self.store.url and not os.path.isabs(self.store.url):
            state["store"] = Store(os.path.abspath(self.store.url))
        state["_features_cache"] = None
        state["made"] = []
        return state

    # -- deciding -------------------------------------------------------------------------------

    def done(self, rec: RunRecord | None) -> bool:
        """Whether a stored record settles its run (complete, or failed and not retried)."""
        return rec is not None and (rec.status == "complete" or (rec.status == "failed"
                                                                 and not self.params.retry_failed))

    def attempt(self, key: RunKey) -> RunRecord | Deferred | None:
        """The run's record: stored, or made now under a claim; a :class:`Deferred` if claimed elsewhere."""
        if key.model in self.failures:
            return None  # the candidate failed earlier in this selection: do not spend more on it
        decision, value, claim = self._decide(key) if is_main_process() else ("run", None, None)
        decision, value = main_decides((decision, value))
        if decision == "done":
            return self._note(value)
        if decision == "defer":
            return Deferred(key, value)
        try:
            rec = self.execute(key)
            if rec is not None:
                self.made.append(key)
            return self._note(rec)
        finally:
            if claim is not None:
                claim.release()

    def settled(self, key: RunKey) -> RunRecord | None:
        """The stored record when it already settles the run (read, nothing claimed), else None.

        A backend that sends runs elsewhere asks this first, so a resumed selection whose runs
        are all recorded starts no worker.
        """
        if not is_main_process():
            return None
        rec = self.store.read(key)
        return self._note(rec) if self.done(rec) else None

    def _decide(self, key: RunKey):
        rec = self.store.read(key)
        if self.done(rec):
            return "done", rec, None
        claim = self.store.claim(key, ttl_s=self.params.claim_ttl_s)
        if claim is None:  # another live process runs it (or it completed just now)
            rec = self.store.read(key)
            return ("done", rec, None) if self.done(rec) else ("defer", self.store.claim_of(key), None)
        rec = self.store.read(key)  # it may have completed between our read and our claim
        if self.done(rec):
            claim.release()
            return "done", rec, None
        return "run", None, claim

    def _note(self, rec: RunRecord | None) -> RunRecord | None:
        if rec is not None and rec.status == "failed":
            self.failures.setdefault(rec.model_id, f"run on {rec.train_size} examples failed: {rec.error}")
        return rec

    # -- running --------------------------------------------------------------------------------

    def execute(self, key: RunKey) -> RunRecord | None:
        """Train (or, for size 0, evaluate) one run now; None when its candidate cannot run."""
        c = self.plan.candidate(key)
        workdir = tempfile.mkdtemp(prefix="lensllm-run-")
        try:
            with quiet_logs(self.params.verbose), self.tracked(c, key) as tracker_args:
                return self._train(c, key, workdir, tracker_args)
        except CandidateError as error:
            self.failures[c.name] = str(error)
            return None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            free_memory()

    def tracked(self, c: Candidate, key: RunKey):
        """The trackers the user's ``report_to`` names, set up for this run (see :mod:`.trackers`).

        Each run logs as its own run ``<candidate>-D<size>`` in the selection's group (the name
        of its output folder); TensorBoard writes under ``<output_dir>/logs``, not into the
        run's scratch folder, which is deleted.
        """
        from .trackers import tracked_run

        out = os.path.abspath(str(self.params.output_dir))
        return tracked_run(user_args(self.params.training_args, c).get("report_to"),
                           group=f"lensllm-{os.path.basename(out) or 'selection'}",
                           run_name=f"{key.model}-D{key.train_size}", log_root=os.path.join(out, "logs"))

    def _train(self, c: Candidate, key: RunKey, workdir: str, tracker_args: dict[str, Any] | None = None
               ) -> RunRecord | None:
        import torch
        from transformers import Trainer, TrainingArguments, set_seed
        from transformers.trainer_callback import PrinterCallback

        from ..callbacks import LensLLMCallback

        p = self.params
        size = int(key.train_size or 0)
        set_seed(p.seed)  # adapter weights are initialised at load
        model, tokenizer = self.load(c)
        train, evalset = self.features(c, tokenizer)
        collator = p.data_collator(tokenizer) if p.data_collator is not None else _lm_collator(tokenizer)
        kwargs = {**RUN_DEFAULTS, "dataloader_pin_memory": torch.cuda.is_available(), **user_args(p.training_args, c),
                  "output_dir": workdir, "seed": p.seed, **(tracker_args or {})}
        if p.verbose:
            kwargs.update(disable_tqdm=False, log_level="passive")
        args = TrainingArguments(**kwargs)  # checked when the selector was made
        callback = LensLLMCallback(store=self.store, ntk_probe=p.ntk_probe and size > 0,
                                   probe_examples=min(p.probe_examples, max(2, len(evalset))),
                                   model_name=key.model, config_hash=key.config_hash, revision=key.revision,
                                   adapter_hash=key.adapter)
        metric_fn = self.metric.compute_fn()
        name = self.metric.name
        try:
            trainer = Trainer(model=model, args=args, train_dataset=train.select(range(size)) if size else None,
                              eval_dataset=evalset, data_collator=collator, processing_class=tokenizer,
                              compute_metrics=(lambda pred: {name: metric_fn(pred)}) if metric_fn else None,
                              preprocess_logits_for_metrics=argmax_logits if metric_fn else None,
                              callbacks=[callback] if size else None)
        except LensLLMError:
            raise
        except Exception as error:  # e.g. a model the Trainer cannot place or wrap: this candidate only
            raise CandidateError(f"could not set up the Trainer for {display(c.model)!r}: {one_line(error)}") from None
        if size:
            callback.bind(trainer)  # its checks before the first step and its final evaluation use the Trainer
        if not p.verbose:
            trainer.remove_callback(PrinterCallback)  # with disable_tqdm it prints every log line
        try:
            if size == 0:
                return self._zero_shot(c, key, trainer, model, args)
            try:
                trainer.train()
            except Exception as error:  # OOM, NaN checks, bad data: this candidate fails, the others go on
                callback.mark_failed(error)
                if callback.record is None:
                    raise CandidateError(f"training failed before the first step: {one_line(error)}") from None
            rec = callback.record
            if rec is not None and rec.key != key:
                warnings.warn(f"the run of {display(key.model)} D={size} was recorded as {display(rec.name)}, not "
                              f"{display(key.name)}; the selector will not find it", stacklevel=2)
            return rec
        except KeyboardInterrupt:
            callback.mark_failed(KeyboardInterrupt())
            raise
        finally:
            trainer.accelerator.free_memory()
            trainer.model = trainer.model_wrapped = None
            del trainer, model

    def _zero_shot(self, c: Candidate, key: RunKey, trainer, model, args) -> RunRecord:
        """The D = 0 point: one evaluation, recorded as a run of size 0 that cost no training."""
        started, t0 = _now(), time.perf_counter()
        rec = RunRecord(
            model={"id": key.model, "name_or_path": c.model, "revision": key.revision,
                   "architecture": (getattr(getattr(model, "config", None), "architectures", None) or
                                    [type(model).__name__])[0],
                   "num_parameters": sum(p.numel() for p in model.parameters()),
                   "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)},
            train_size=0, seed=key.seed, config_hash=key.config_hash, adapter=c.peft_dict(),
            adapter_hash=key.adapter, dataset={"eval_num_rows": len(trainer.eval_dataset)},
            world_size=max(1, args.world_size), training={"learning_rate": args.learning_rate}, started_at=started,
            total_flos=0.0,
        )
        try:
            metrics = trainer.evaluate()
        except Exception as error:
            rec.status, rec.error = "failed", f"zero-shot evaluation failed: {one_line(error)}"
        else:
            clean = {k: _finite(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            rec.evaluations = [Evaluation(step=0, examples_seen=0, eval_loss=clean.get("eval_loss"), metrics=clean)]
            rec.final_eval_loss = clean.get("eval_loss")
            rec.status = "complete" if rec.final_eval_loss is not None else "failed"
            rec.error = None if rec.final_eval_loss is not None else "the zero-shot eval loss is NaN or infinite"
        rec.wall_time_s, rec.finished_at = time.perf_counter() - t0, _now()
        if is_main_process():
            self.store.write(rec)
        return rec

    def load(self, c: Candidate):
        """(model, tokenizer) of a candidate, with its adapter; :class:`CandidateError` when it cannot load."""
        p = self.params
        try:
            if p.model_loader is not None:
                model, tokenizer = p.model_loader(c)
            else:
                model, tokenizer = load_causal_lm(c)
            if tokenizer is not None and getattr(tokenizer, "pad_token", "") is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token  # batches need padding
            peft_config = c.build_peft_config()
            if peft_config is not None:
                from peft import get_peft_model

                model = get_peft_model(model, peft_config)
        except LensLLMError:
            raise
        except Exception as error:  # bad ID, no network, bad config, out of memory: the candidate fails
            raise CandidateError(f"could not load {display(c.model)!r}: {one_line(error, 300)}; check the Hub ID or "
                                 "path (offline, use a local folder)") from None
        return model, tokenizer

    def features(self, c: Candidate, tokenizer):
        """(train pool, eval set) as model features, cached for the last candidate's tokenizer."""
        p = self.params
        cache_key = c.tokenizer or c.model
        if self._features_cache is not None and self._features_cache[0] == cache_key:
            return self._features_cache[1:]
        preprocess = p.preprocess or default_preprocess(p.text_column, p.max_length)
        try:
            train, evalset = preprocess(self.pool, tokenizer), preprocess(self.evalset, tokenizer)
        except LensLLMError:
            raise
        except Exception as error:
            raise CandidateError(f"preprocessing failed with the tokenizer of {display(cache_key)!r}: "
                                 f"{one_line(error)}") from None
        self._features_cache = (cache_key, train, evalset)
        return train, evalset


def load_causal_lm(c: Candidate):
    """The default loader: ``AutoTokenizer`` and ``AutoModelForCausalLM`` from the candidate's path or ID."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(c.tokenizer or c.model)
    return AutoModelForCausalLM.from_pretrained(c.model, **c.model_kwargs), tokenizer


def _lm_collator(tokenizer):
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


# -- processes, logs, memory ---------------------------------------------------------------------


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that reads, claims and writes records."""
    return int(os.environ.get("RANK", "0")) == 0


def main_decides(value):
    """Under ``accelerate launch`` every process must skip or run the same runs: rank 0 decides."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return value
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState()  # joins the process group on first use (before any Trainer exists)
    return broadcast_object_list([value], from_process=0)[0]


@contextlib.contextmanager
def quiet_logs(verbose: bool = False) -> Iterator[None]:
    """Trainer, datasets and Hub bars and info logs off (the selector shows one bar); restored after."""
    if verbose:
        yield
        return
    import datasets
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = (hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(),
            not hub_utils.are_progress_bars_disabled())
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars[0]:
            hf_logging.enable_progress_bar()
        if bars[1]:
            datasets.enable_progress_bars()
        if bars[2]:
            hub_utils.enable_progress_bars()


def free_memory() -> None:
    """Models, optimizers and caches of the last run go before the next loads."""
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def _finite(value: float) -> float | None:
    import math

    value = float(value)
    return value if math.isfinite(value) else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
