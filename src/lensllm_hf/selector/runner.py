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
import hashlib
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._utils import display, json_safe, node_id, one_line, pid_alive
from ..errors import CandidateError, LensLLMError
from ..records import Evaluation, RunKey, RunRecord, Store
from .candidates import Candidate
from .data import aligned_argmax, default_preprocess
from .formats import TaskFormat, is_encoder_decoder
from .loading import attach_adapter, load_candidate, with_pad_token
from .plan import RUN_DEFAULTS, RunPlan, user_args
from .scoring import Metric

if TYPE_CHECKING:  # task_metrics imports transformers: only when a run is made
    from .task_metrics import GenerationConfig

__all__ = ["Deferred", "Runner", "clean_stale_scratch", "free_memory", "is_main_process", "main_decides",
           "quiet_logs", "scratch_dir"]


#: A run's scratch folder in ``$TMPDIR``: ``lensllm-run-<node>-<pid>-<random>`` (see :func:`scratch_dir`).
SCRATCH_PREFIX = "lensllm-run-"
_SCRATCH_CLEANED = False


def scratch_dir() -> str:
    """A new scratch folder for one run's Trainer output (deleted when the run ends).

    Its name carries this machine's :func:`~lensllm_hf._utils.node_id` (hashed) and this
    process's id, so that the first run of every process removes the folders that runs of dead
    processes of this machine left behind (a SIGKILL skips every ``finally``):
    :func:`clean_stale_scratch`.
    """
    global _SCRATCH_CLEANED
    if not _SCRATCH_CLEANED:
        _SCRATCH_CLEANED = True
        clean_stale_scratch()
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_node_tag()}-{os.getpid()}-")


def clean_stale_scratch(root: str | None = None) -> list[str]:
    """Remove the scratch folders in ``root`` (default ``$TMPDIR``) of this machine's dead processes; return them."""
    root = root or tempfile.gettempdir()
    pattern = re.compile(rf"{re.escape(SCRATCH_PREFIX)}{_node_tag()}-(\d{{1,10}})-[^/]+")
    removed = []
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and entry.is_dir(follow_symlinks=False) and not pid_alive(int(match.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return removed


def _node_tag() -> str:
    return hashlib.sha256(node_id().encode()).hexdigest()[:8]


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
        task_format: the columns of the task's rows (default: ``params.text_column``, plain text).
        generation: how answers are generated when ``metric`` is a task metric scored on them;
            None when it is not (the loss, or a metric of the eval predictions).
    """

    def __init__(self, params: Any, plan: RunPlan, store: Store, *, pool: Any, evalset: Any, metric: Metric,
                 task_format: TaskFormat | None = None, generation: GenerationConfig | None = None):
        self.params = params
        self.plan = plan
        self.store = store
        self.pool = pool
        self.evalset = evalset
        self.metric = metric
        self.format = task_format or TaskFormat(text_column=params.text_column, max_length=params.max_length)
        self.generation = generation
        #: candidate name -> its error: no more compute is spent on it in this selection.
        self.failures: dict[str, str] = {}
        #: the runs this process made (trained or evaluated), in order; the others were read from the store.
        self.made: list[RunKey] = []
        #: the selection's MLflow run, which each run's MLflow run names as its parent (see :mod:`.trackers`).
        self.mlflow_parent: str | None = None
        self._features_cache: tuple[tuple[str, str], Any, Any] | None = None

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
        workdir = scratch_dir()
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
        from .trackers import selection_group, tracked_run

        group, log_root = selection_group(self.params.output_dir)
        return tracked_run(user_args(self.params.training_args, c).get("report_to"), group=group,
                           run_name=f"{key.model}-D{key.train_size}", log_root=log_root,
                           mlflow_parent=self.mlflow_parent)

    def trainer(self, key: RunKey, workdir: str, tracker_args: dict[str, Any] | None = None):
        """(Trainer, LensLLMCallback or None for a zero-shot run, model) of one run, ready to train.

        The Trainer fits the candidate and the data (:meth:`TaskFormat.trainer`: ``Trainer``,
        TRL's ``SFTTrainer`` or ``Seq2SeqTrainer``); :class:`CandidateError` when it cannot be made.
        """
        import torch
        from transformers import set_seed

        from ..callbacks import LensLLMCallback
        from .trackers import join_group, named_trackers, selection_group

        p = self.params
        c = self.plan.candidate(key)
        size = int(key.train_size or 0)
        set_seed(p.seed)  # adapter weights are initialised at load
        model, tokenizer = self.load(c)
        kwargs = {**RUN_DEFAULTS, "dataloader_pin_memory": torch.cuda.is_available(), **user_args(p.training_args, c),
                  "output_dir": workdir, "seed": p.seed, **(tracker_args or {})}
        if p.verbose:
            kwargs.update(disable_tqdm=False, log_level="passive")
        callback = LensLLMCallback(store=self.store, ntk_probe=p.ntk_probe and size > 0,
                                   probe_examples=min(p.probe_examples, max(2, len(self.evalset))),
                                   model_name=key.model, config_hash=key.config_hash, revision=key.revision,
                                   adapter_hash=key.adapter) if size else None
        callbacks: list[Any] = []
        metric_fn = None if self.generation is not None else self.metric.compute_fn()
        name = self.metric.name
        extra = {"compute_metrics": (lambda pred: {name: metric_fn(pred)}) if metric_fn else None,
                 "preprocess_logits_for_metrics": aligned_argmax(is_encoder_decoder(model)) if metric_fn else None}
        try:
            if self.format.layout != "text":
                self.format.prepare_tokenizer(tokenizer, c.name)  # the chat template (conversations need one)
            if self.generation is not None:
                from .generation import GenerationMetricCallback

                # Before the LensLLMCallback: it adds eval_<metric> to the metrics the record keeps.
                prompts, references = self.format.pairs(self.evalset.select(range(min(self.generation.rows,
                                                                                      len(self.evalset)))),
                                                        tokenizer)
                callbacks.append(GenerationMetricCallback(name, prompts, references, self.generation))
            callbacks += [callback] if callback is not None else []
            if p.preprocess is not None:  # the user's own features and collator: a plain Trainer, as given
                from transformers import Trainer, TrainingArguments

                train, evalset = self.features(c, tokenizer)
                collator = p.data_collator(tokenizer) if p.data_collator is not None else _lm_collator(tokenizer)
                trainer = Trainer(model=model, args=TrainingArguments(**kwargs),
                                  train_dataset=train.select(range(size)) if size else None, eval_dataset=evalset,
                                  data_collator=collator, processing_class=tokenizer, callbacks=callbacks or None,
                                  **extra)
            else:
                if p.data_collator is not None:
                    extra["data_collator"] = p.data_collator(tokenizer)
                trainer = self.format.trainer(model=model, tokenizer=tokenizer, args=kwargs,
                                              train=self.pool.select(range(size)) if size else None,
                                              evalset=self.evalset, lm_features=self._lm_features(c),
                                              callbacks=callbacks or None, **extra)
        except CandidateError:
            raise
        except LensLLMError as error:  # no chat template, text data for an encoder-decoder: this candidate only
            raise CandidateError(str(error), candidate=c.name) from None
        except Exception as error:  # a model the Trainer cannot place or wrap: this candidate only
            raise CandidateError(f"could not set up the Trainer for {display(c.name)!r}: {one_line(error)}",
                                 candidate=c.name) from None
        if "trackio" in named_trackers(kwargs.get("report_to")):
            join_group(trainer, selection_group(p.output_dir)[0])
        return trainer, callback, model

    def _train(self, c: Candidate, key: RunKey, workdir: str, tracker_args: dict[str, Any] | None = None
               ) -> RunRecord | None:
        from transformers.trainer_callback import PrinterCallback

        p = self.params
        size = int(key.train_size or 0)
        trainer, callback, model = self.trainer(key, workdir, tracker_args)
        args = trainer.args
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
                    raise CandidateError(f"training failed before the first step: {one_line(error)}",
                                         candidate=c.name) from None
            rec = callback.record
            if rec is not None and rec.key != key:
                warnings.warn(f"the run of {display(key.model)} D={size} was recorded as {display(rec.name)}, not "
                              f"{display(key.name)}; the selector will not find it", stacklevel=2)
            return rec
        except KeyboardInterrupt:
            if callback is not None:
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
            clean = {k: json_safe(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            rec.evaluations = [Evaluation(step=0, examples_seen=0, eval_loss=clean.get("eval_loss"), metrics=clean)]
            rec.final_eval_loss = clean.get("eval_loss")
            rec.status = "complete" if rec.final_eval_loss is not None else "failed"
            rec.error = None if rec.final_eval_loss is not None else "the zero-shot eval loss is NaN or infinite"
        rec.wall_time_s, rec.finished_at = time.perf_counter() - t0, _now()
        if is_main_process():
            self.store.write(rec)
        return rec

    def load(self, c: Candidate):
        """(model, tokenizer) of a candidate, with its adapter; :class:`CandidateError` when it cannot load.

        :func:`~lensllm_hf.selector.loading.load_candidate` by default (the Auto class from the
        config: causal or encoder-decoder; dtype names; 4-bit loading), ``model_loader`` when given.
        """
        p = self.params
        try:
            if p.model_loader is not None:
                model, tokenizer = p.model_loader(c)
            else:
                model, tokenizer = load_candidate(c.model, tokenizer_id=c.tokenizer, model_kwargs=c.model_kwargs,
                                                  name=c.name)
            if tokenizer is not None:  # a model_loader's tokenizer too
                tokenizer = with_pad_token(tokenizer)
            peft_config = c.build_peft_config(task_type="SEQ_2_SEQ_LM" if is_encoder_decoder(model) else "CAUSAL_LM")
            if peft_config is not None:
                model = attach_adapter(model, peft_config)
        except LensLLMError as error:
            raise CandidateError(str(error), candidate=c.name) from None
        except Exception as error:  # a model_loader's error, out of memory: the candidate fails
            raise CandidateError(f"could not load {display(c.model)!r}: {one_line(error, 300)}",
                                 candidate=c.name) from None
        return model, tokenizer

    def features(self, c: Candidate, tokenizer):
        """(train pool, eval set) as causal-LM features of plain text (``preprocess``, or the default),
        cached for the last candidate's tokenizer and the layout."""
        p = self.params
        cache_key = (c.tokenizer or c.model, self.format.layout)
        if self._features_cache is not None and self._features_cache[0] == cache_key:
            return self._features_cache[1:]
        preprocess = p.preprocess or default_preprocess(p.text_column, p.max_length)
        try:
            train, evalset = preprocess(self.pool, tokenizer), preprocess(self.evalset, tokenizer)
        except LensLLMError:
            raise
        except Exception as error:
            raise CandidateError(f"preprocessing failed with the tokenizer of {display(cache_key[0])!r}: "
                                 f"{one_line(error)}", candidate=c.name) from None
        self._features_cache = (cache_key, train, evalset)
        return train, evalset

    def _lm_features(self, c: Candidate):
        """``(rows, tokenizer) -> features`` for :meth:`TaskFormat.trainer` on plain text, from the cache.

        The Trainer asks for the eval rows or a training subset, and every subset is a prefix of
        the pool: both are slices of the cached features.
        """
        def features(rows, tokenizer):
            train, evalset = self.features(c, tokenizer)
            return evalset if rows is self.evalset else train.select(range(len(rows)))

        return features


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



def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
