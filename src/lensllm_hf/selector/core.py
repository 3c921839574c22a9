"""``LensLLMSelector``: which candidate to fine-tune, with an interval, for as little compute as it takes.

Each candidate is fine-tuned with ``transformers.Trainer`` on nested subsets of the task data
(200, 400, 800, ... examples up to the budget) and evaluated once before training (D = 0);
:class:`~lensllm_hf.LensLLMCallback` writes one run record per run into a store (a folder or
an fsspec URL). The scaling laws are fitted to those records and the candidates ranked by the
loss predicted at the target size. Runs already in the store are skipped, so a killed
selection resumes where it stopped; a candidate that fails is reported and the others ranked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .. import records
from ..curves import CurveTable
from ..errors import LensLLMError
from ..methods import LEVEL, METHODS, rank
from ..ranking import CandidateFit, Ranking
from ..records import Evaluation, RunRecord
from .candidates import Candidate, as_candidates, peft_summary
from .data import (
    argmax_logits,
    check_text_column,
    content_fingerprint,
    default_preprocess,
    evaluate_metric,
    geometric_sizes,
    split_eval,
    subset_pool,
    token_accuracy,
)
from .result import SelectionResult

__all__ = ["LensLLMSelector", "PlannedRun"]

STRATEGIES = ("grid", "adaptive")
#: TrainingArguments the selector sets itself (scratch output, quiet, no checkpoints); yours win.
_RUN_DEFAULTS: dict[str, Any] = {"report_to": "none", "save_strategy": "no", "disable_tqdm": True,
                                 "log_level": "warning", "logging_strategy": "no"}
#: Keys that do not change what a run computes: left out of the config hash.
_NOT_HASHED = {"output_dir", "logging_dir", "report_to", "disable_tqdm", "log_level", "log_level_replica",
               "logging_steps", "logging_strategy", "logging_first_step", "save_strategy", "save_steps",
               "save_total_limit", "run_name", "push_to_hub", "hub_model_id", "hub_token", "dataloader_num_workers",
               "per_device_eval_batch_size", "eval_accumulation_steps", "overwrite_output_dir", "seed"}


@dataclass(frozen=True)
class PlannedRun:
    """One (candidate, subset size) run of a selection and where its record goes.

    ``status`` is the record's (``complete``, ``failed``, ``interrupted``) or ``pending``.
    """

    candidate: str
    size: int
    record: str
    status: str = "pending"


class LensLLMSelector:
    """Rank candidate models for fine-tuning on a dataset, from small-subset runs.

    Args:
        candidates: Hub IDs or local paths, dicts ``{model, name, peft, training_args,
            tokenizer, model_kwargs}``, or :class:`Candidate` objects.
        train_dataset: a ``datasets.Dataset`` of the task (text in ``text_column`` for the
            default preprocessing).
        eval_dataset: the test set whose loss is fitted; None holds out ``eval_size`` rows.
        target_size: the full training size to predict for; default ``len(train_dataset)``.
        budget: the largest subset size trained on (must be below ``target_size``).
        min_size: the smallest subset; sizes double from it up to ``budget``.
        sizes: explicit subset sizes instead of the geometric ones.
        zero_shot: evaluate every candidate before training (the D = 0 point, no training cost).
        strategy: ``"grid"`` (every candidate on every size) or ``"adaptive"`` (double the data
            only for candidates that could still be the best; see :mod:`lensllm_hf.adaptive`).
        method: the selection method (``lensllm_hf.methods.METHODS``).
        level: interval level of the predictions.
        store: folder or fsspec URL of the run records; default ``output_dir/store``.
        output_dir: where outputs go by default (the store, scratch run folders).
        training_args: ``TrainingArguments`` or its keywords, shared by every run (a candidate's
            own ``training_args`` win). The selector makes runs quiet and checkpoint-free.
        text_column, max_length: of the default causal-LM preprocessing.
        preprocess: ``(dataset, tokenizer) -> dataset`` with model features, one row per example
            in order (replaces the default preprocessing).
        data_collator: ``tokenizer -> collator``; default ``DataCollatorForLanguageModeling``.
        model_loader: ``Candidate -> (model, tokenizer)``; default the Auto classes for causal LM.
        metric: ``"loss"`` (the eval loss) or the name of another metric, ranked as
            ``1 - value`` when ``greater_is_better`` (``"accuracy"``: next-token accuracy built in).
        metric_fn: ``EvalPrediction -> float`` computing ``metric`` (predictions are argmax
            token ids); see :func:`token_accuracy` and :func:`evaluate_metric`.
        greater_is_better: for ``metric``; default True for anything but the loss.
        seed: of the shuffle, the training and the adapters.
        eval_size: rows held out when ``eval_dataset`` is None.
        ntk_probe, probe_examples: the callback's NTK probe (for the ``lensllm`` method).
        max_flops: adaptive strategy: stop buying runs past this many FLOPs.
        reuse_published: use a fit published in a candidate's model card (same dataset, metric and
            adapter) instead of training it (see :mod:`lensllm_hf.hub_cards`).
        dataset_name, dataset_config, dataset_split: how model cards name the data.
        retry_failed: run again runs whose record says ``failed`` (default: keep the failure).
        progress: show one progress bar over the planned runs.
        verbose: keep the Trainer's own logs and bars.

    Example:
        >>> from datasets import load_dataset
        >>> data = load_dataset("imdb")
        >>> selector = LensLLMSelector(["EleutherAI/pythia-70m", "gpt2"], data["train"],
        ...                            data["test"].select(range(500)), target_size=25_000, budget=1_600,
        ...                            training_args={"learning_rate": 5e-5})
        >>> result = selector.run()
        >>> result.best, result.ranking
    """

    def __init__(
        self,
        candidates: Iterable[str | Mapping[str, Any] | Candidate],
        train_dataset,
        eval_dataset=None,
        target_size: int | None = None,
        *,
        budget: int = 3200,
        min_size: int = 200,
        sizes: Sequence[int] | None = None,
        zero_shot: bool = True,
        strategy: str = "grid",
        method: str = "default",
        level: float = LEVEL,
        store: str | os.PathLike | None = None,
        output_dir: str | os.PathLike = "lensllm_out",
        training_args: Any = None,
        text_column: str = "text",
        max_length: int = 512,
        preprocess: Callable | None = None,
        data_collator: Callable | None = None,
        model_loader: Callable[[Candidate], tuple[Any, Any]] | None = None,
        metric: str = "loss",
        metric_fn: Callable | None = None,
        greater_is_better: bool | None = None,
        seed: int = 0,
        eval_size: int = 500,
        ntk_probe: bool = True,
        probe_examples: int = 16,
        max_flops: float | None = None,
        reuse_published: bool = False,
        dataset_name: str | None = None,
        dataset_config: str | None = None,
        dataset_split: str | None = None,
        retry_failed: bool = False,
        progress: bool = True,
        verbose: bool = False,
    ):
        self.candidates = candidates
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.target_size = target_size
        self.budget = budget
        self.min_size = min_size
        self.sizes = sizes
        self.zero_shot = zero_shot
        self.strategy = strategy
        self.method = method
        self.level = level
        self.store = store
        self.output_dir = output_dir
        self.training_args = training_args
        self.text_column = text_column
        self.max_length = max_length
        self.preprocess = preprocess
        self.data_collator = data_collator
        self.model_loader = model_loader
        self.metric = metric
        self.metric_fn = metric_fn
        self.greater_is_better = greater_is_better
        self.seed = seed
        self.eval_size = eval_size
        self.ntk_probe = ntk_probe
        self.probe_examples = probe_examples
        self.max_flops = max_flops
        self.reuse_published = reuse_published
        self.dataset_name = dataset_name
        self.dataset_config = dataset_config
        self.dataset_split = dataset_split
        self.retry_failed = retry_failed
        self.progress = progress
        self.verbose = verbose
        self._check()

    # -- checking the set-up ------------------------------------------------------------------

    def _check(self) -> None:
        """Fail early, in one line, on set-ups that cannot work (no training happens here)."""
        self.candidates_: list[Candidate] = as_candidates(self.candidates)
        if self.strategy not in STRATEGIES:
            raise LensLLMError(f"unknown strategy {self.strategy!r}; choose 'grid' (every candidate on every size) "
                               "or 'adaptive' (more data only where the decision needs it)")
        if self.method not in METHODS:
            raise LensLLMError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.train_dataset is None or not hasattr(self.train_dataset, "select"):
            raise LensLLMError("train_dataset must be a datasets.Dataset (e.g. Dataset.from_dict({'text': [...]}) or "
                               "load_dataset(...)['train'])")
        if self.eval_dataset is not None and not hasattr(self.eval_dataset, "select"):
            raise LensLLMError("eval_dataset must be a datasets.Dataset or None (then eval_size rows are held out)")
        if self.preprocess is None:
            check_text_column(self.train_dataset, self.text_column, "train_dataset")
            if self.eval_dataset is not None:
                check_text_column(self.eval_dataset, self.text_column, "eval_dataset")
        if self.sizes is not None:
            sizes = sorted({int(s) for s in self.sizes if int(s) > 0})
            if not sizes:
                raise LensLLMError(f"sizes={list(self.sizes)!r} has no size > 0; "
                                   "give subset sizes like [200, 400, 800]")
        else:
            sizes = geometric_sizes(self.min_size, int(self.budget))
        self.sizes_: list[int] = sizes
        n_train = len(self.train_dataset) - (0 if self.eval_dataset is not None else self.eval_size)
        self.target_size_ = int(self.target_size) if self.target_size is not None else n_train
        if not self.target_size_ > sizes[-1]:
            raise LensLLMError(f"target_size {self.target_size_:,} must be larger than the budget {sizes[-1]:,} "
                               "(the largest subset); lower the budget or raise target_size")
        if sizes[-1] > n_train:
            raise LensLLMError(f"the largest subset ({sizes[-1]:,}) exceeds the {n_train:,} training rows; "
                               "lower the budget or give more data")
        points = len(sizes) + (1 if self.zero_shot else 0)
        if points < 3:
            zero = " plus zero-shot" if self.zero_shot else ""
            raise LensLLMError(f"subset sizes {sizes}{zero} give {points} points; a law needs at least 3: "
                               "raise the budget or lower min_size")
        if self.max_flops is not None and self.strategy != "adaptive":
            raise LensLLMError("max_flops only applies to strategy='adaptive'; drop it or switch the strategy")
        self.store_ = str(self.store) if self.store is not None else os.path.join(str(self.output_dir), "store")

    @property
    def failures_(self) -> dict[str, str]:
        """Candidates that failed in this selector (load errors, failed runs), with the error."""
        return dict(getattr(self, "_failures", {}))

    @property
    def run_sizes_(self) -> list[int]:
        """Every size run per candidate: 0 (zero-shot) first when ``zero_shot``."""
        return ([0] if self.zero_shot else []) + list(self.sizes_)

    # -- planning -----------------------------------------------------------------------------

    def plan(self) -> list[PlannedRun]:
        """Every (candidate, size) run of a grid selection, with the state of its record.

        Example:
            >>> [(r.candidate, r.size, r.status) for r in selector.plan()][:2]
            [('gpt2', 0, 'complete'), ('gpt2', 200, 'pending')]
        """
        self._prepare()
        out = []
        for c in self.candidates_:
            for size in self.run_sizes_:
                path = self._record_path(c, size)
                rec = self._read(path)
                out.append(PlannedRun(c.name, size, path, rec.status if rec is not None else "pending"))
        return out

    # -- running ------------------------------------------------------------------------------

    def run(self) -> SelectionResult:
        """Run the selection (skipping recorded runs) and return the ranking.

        Example:
            >>> result = selector.run()
            >>> print(result.to_markdown())
        """
        self._prepare()
        if self.strategy == "adaptive":
            return self._run_adaptive()
        self.train()
        return self.from_store()

    def train(self, only: Iterable[str] | str | None = None, sizes: Iterable[int] | int | None = None
              ) -> list[RunRecord]:
        """Make the planned runs (all, or those of ``only`` candidates and ``sizes``) without fitting.

        This is what ``lensllm select CONFIG --only MODEL --size N`` does on a cluster node.
        Returns the records (recorded earlier or made now); failures are in their ``status``.
        """
        self._prepare()
        chosen = self._choose(only, sizes)
        out: list[RunRecord] = []
        with self._progress(len(chosen)) as bar:
            for c, size in chosen:
                bar.set_postfix_str(f"{_short(c.name)} D={size}", refresh=True)
                rec = self._run_or_skip(c, size)
                if rec is not None:
                    out.append(rec)
                bar.update(1)
        return out

    def from_store(self) -> SelectionResult:
        """Fit and rank from the records in the store only (no training): ``--from-store``."""
        self._prepare()
        recs: dict[str, list[RunRecord]] = {}
        for c in self.candidates_:
            for size in self.run_sizes_:
                rec = self._read(self._record_path(c, size))
                if rec is not None:
                    recs.setdefault(c.name, []).append(rec)
                    if rec.status == "failed":
                        self._failures.setdefault(c.name, f"run on {size} examples failed: {rec.error}")
        table = self._table(recs)
        trained = [c for c in self.candidates_ if c.name not in self._published]
        rows: list[CandidateFit] = []
        if table is not None:
            rows += rank(table, self.target_size_, self.method, self.level).candidates
        # A candidate with a failed run is failed, even if its earlier sizes would fit.
        rows = [CandidateFit.failed(r.model, self._failures[r.model], sizes=r.sizes, losses=r.losses)
                if r.model in self._failures else r for r in rows]
        in_table = {r.model for r in rows}
        for c in trained:
            if c.name not in in_table:
                reason = self._failures.get(c.name) or (f"no complete run in the store {self.store_}; run "
                                                         "'lensllm select' without --from-store first")
                rows.append(CandidateFit.failed(c.name, reason))
        ranking = Ranking(self.target_size_, self.method, rows + list(self._published.values()))
        bought = {name: sorted(int(r.train_size) for r in rs if r.status == "complete") for name, rs in recs.items()}
        return self._result(ranking, table, recs, bought)

    # -- internals: set-up --------------------------------------------------------------------

    def _prepare(self) -> None:
        """Data, hashes and published fits, once per selector (cheap: no model is loaded)."""
        if getattr(self, "_ready", False):
            return
        train, evalset = self.train_dataset, self.eval_dataset
        if evalset is None:
            train, evalset = split_eval(train, self.eval_size, self.seed)
        self._pool = subset_pool(train, self.sizes_[-1], self.seed)
        self._eval = evalset
        self._failures: dict[str, str] = {}
        self._features_cache: tuple[str, Any, Any] | None = None
        # The data part of the config hash: the shuffle's first rows and the eval set. The
        # first min-size rows pin the shuffle, so raising the budget keeps earlier runs.
        self._data_hash = {"n_train": len(train), "head": content_fingerprint(self._pool, self.sizes_[0]),
                           "eval": content_fingerprint(evalset)}
        self._hashes = {c.name: self._config_hash(c) for c in self.candidates_}
        self._published: dict[str, CandidateFit] = self._find_published() if self.reuse_published else {}
        if self._is_main():
            records.check_writable(self.store_)
        self._ready = True

    def _config_hash(self, c: Candidate) -> str:
        training = {k: v for k, v in self._user_args(c).items() if k not in _NOT_HASHED}
        # A local folder is named by the candidate's name (already in the record name), not by its
        # path: the same config run from another checkout or machine finds the same records.
        return records.config_hash({
            "model": _portable(c.model), "tokenizer": _portable(c.tokenizer), "model_kwargs": c.model_kwargs,
            "adapter": c.peft_dict(),
            "training": training, "data": self._data_hash, "metric": self._metric_key(),
            "preprocess": _name_of(self.preprocess) or f"default({self.text_column}, {self.max_length})",
            "collator": _name_of(self.data_collator), "loader": _name_of(self.model_loader),
        })

    def _user_args(self, c: Candidate) -> dict[str, Any]:
        """The shared training arguments with the candidate's own on top (as keywords)."""
        shared = self.training_args
        if shared is None:
            shared = {}
        elif not isinstance(shared, Mapping):
            shared = _changed_args(shared)
        return {**dict(shared), **c.training_args}

    def _find_published(self) -> dict[str, CandidateFit]:
        from ..hub_cards import HubError, find_fit, load_fits

        found = {}
        for c in self.candidates_:
            try:
                fits = load_fits(c.model)
            except HubError:  # offline, private, missing: train it instead
                continue
            fit = find_fit(fits, dataset=self._dataset_label(), config=self.dataset_config, split=self.dataset_split,
                           metric=self._metric_key(), adapter=peft_summary(c.peft_config))
            if fit is not None:
                row = fit.to_candidate_fit(self.target_size_, self.level)
                row.model, row.flops = c.name, 0.0
                found[c.name] = row
        return found

    # -- internals: one run -------------------------------------------------------------------

    def _choose(self, only, sizes) -> list[tuple[Candidate, int]]:
        names = [c.name for c in self.candidates_]
        if isinstance(only, str):
            only = [only]
        if only is not None:
            only = list(only)
            unknown = [n for n in only if n not in names]
            if unknown:
                raise LensLLMError(f"--only {', '.join(unknown)}: not a candidate; "
                                   f"the candidates are {', '.join(names)}")
        if isinstance(sizes, int):
            sizes = [sizes]
        if sizes is not None:
            sizes = [int(s) for s in sizes]
            unknown = [s for s in sizes if s not in self.run_sizes_]
            if unknown:
                raise LensLLMError(f"--size {', '.join(map(str, unknown))}: not a planned subset size; the sizes are "
                                   f"{', '.join(map(str, self.run_sizes_))}")
        return [(c, s) for c in self.candidates_ if (only is None or c.name in only) and c.name not in self._published
                for s in self.run_sizes_ if sizes is None or s in sizes]

    def _record_path(self, c: Candidate, size: int) -> str:
        return records.record_path(self.store_, c.name, size, self.seed, self._hashes[c.name])

    def _read(self, path: str) -> RunRecord | None:
        try:
            fs, fs_path = records._fs(path)
            if not fs.exists(fs_path):
                return None
            return records.read_record(path)
        except records.SchemaError:
            return None  # a damaged file (cannot happen with atomic writes, but never trust it): run again
        except OSError:
            return None

    def _run_or_skip(self, c: Candidate, size: int) -> RunRecord | None:
        """The run's record: the stored one when complete (or failed), else a new run."""
        if c.name in self._failures:
            return None  # the candidate failed earlier in this selection: do not spend more on it
        path = self._record_path(c, size)
        rec = self._main_decides(self._read(path))
        if rec is not None and (rec.status == "complete" or (rec.status == "failed" and not self.retry_failed)):
            if rec.status == "failed":
                self._failures[c.name] = f"run on {size} examples failed: {rec.error}"
            return rec
        rec = self._execute(c, size, path)
        if rec is not None and rec.status == "failed":
            self._failures[c.name] = f"run on {size} examples failed: {rec.error}"
        return rec

    def _execute(self, c: Candidate, size: int, path: str) -> RunRecord | None:
        workdir = tempfile.mkdtemp(prefix="lensllm-run-")
        try:
            with _quiet(self.verbose):
                return self._train_one(c, size, workdir)
        except _LoadError as error:
            self._failures[c.name] = str(error)
            return None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            _free_memory()

    def _train_one(self, c: Candidate, size: int, workdir: str) -> RunRecord | None:
        from transformers import Trainer, TrainingArguments, set_seed
        from transformers.trainer_callback import PrinterCallback

        from ..callbacks import LensLLMCallback

        set_seed(self.seed)  # adapter weights are initialised at load
        model, tokenizer = self._load(c)
        train, evalset = self._features(c, tokenizer)
        collator = self._collator(tokenizer)
        import torch

        kwargs = {**_RUN_DEFAULTS, "dataloader_pin_memory": torch.cuda.is_available(), **self._user_args(c),
                  "output_dir": workdir, "seed": self.seed}
        if self.verbose:
            kwargs.update(disable_tqdm=False, log_level="passive")
        try:
            args = TrainingArguments(**kwargs)
        except (TypeError, ValueError) as error:
            raise LensLLMError(f"candidate {c.name!r}: bad training arguments ({_one_line(error)}); "
                               "fix training_args") from None
        callback = LensLLMCallback(store=self.store_, ntk_probe=self.ntk_probe and size > 0,
                                   probe_examples=min(self.probe_examples, max(2, len(evalset))),
                                   model_name=c.name, config_hash=self._hashes[c.name])
        metric_fn = self._metric_fn()
        try:
            trainer = Trainer(model=model, args=args, train_dataset=train.select(range(size)) if size else None,
                              eval_dataset=evalset, data_collator=collator, processing_class=tokenizer,
                              compute_metrics=(lambda p: {self.metric: metric_fn(p)}) if metric_fn else None,
                              preprocess_logits_for_metrics=argmax_logits if metric_fn else None,
                              callbacks=[callback] if size else None)
        except LensLLMError:
            raise
        except Exception as error:  # e.g. a model the Trainer cannot place or wrap: this candidate only
            raise _LoadError(f"could not set up the Trainer for {c.model!r}: {_one_line(error)}") from None
        if not self.verbose:
            trainer.remove_callback(PrinterCallback)  # with disable_tqdm it prints every log line
        try:
            if size == 0:
                return self._zero_shot(c, trainer, model, args)
            try:
                trainer.train()
            except Exception as error:  # OOM, NaN checks, bad data: this candidate fails, the others go on
                callback.mark_failed(error)
                if callback.record is None:
                    raise _LoadError(f"training failed before the first step: {_one_line(error)}") from None
            return callback.record
        except KeyboardInterrupt:
            callback.mark_failed(KeyboardInterrupt())
            raise
        finally:
            trainer.accelerator.free_memory()
            trainer.model = trainer.model_wrapped = None
            del trainer, model

    def _zero_shot(self, c: Candidate, trainer, model, args) -> RunRecord:
        """The D = 0 point: one evaluation, recorded as a run of size 0 that cost no training."""
        started, t0 = _now(), time.perf_counter()
        rec = RunRecord(
            model={"id": c.name, "name_or_path": c.model,
                   "architecture": (getattr(getattr(model, "config", None), "architectures", None) or
                                    [type(model).__name__])[0],
                   "num_parameters": sum(p.numel() for p in model.parameters()),
                   "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)},
            train_size=0, seed=self.seed, config_hash=self._hashes[c.name], adapter=c.peft_dict(),
            dataset={"eval_num_rows": len(trainer.eval_dataset)}, world_size=max(1, args.world_size),
            training={"learning_rate": args.learning_rate}, started_at=started, total_flos=0.0,
        )
        try:
            metrics = trainer.evaluate()
        except Exception as error:
            rec.status, rec.error = "failed", f"zero-shot evaluation failed: {_one_line(error)}"
        else:
            clean = {k: _finite(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            rec.evaluations = [Evaluation(step=0, examples_seen=0, eval_loss=clean.get("eval_loss"), metrics=clean)]
            rec.final_eval_loss = clean.get("eval_loss")
            rec.status = "complete" if rec.final_eval_loss is not None else "failed"
            rec.error = None if rec.final_eval_loss is not None else "the zero-shot eval loss is NaN or infinite"
        rec.wall_time_s, rec.finished_at = time.perf_counter() - t0, _now()
        if self._is_main():
            records.write_record(rec, self.store_)
        return rec

    def _load(self, c: Candidate):
        try:
            if self.model_loader is not None:
                model, tokenizer = self.model_loader(c)
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(c.tokenizer or c.model)
                model = AutoModelForCausalLM.from_pretrained(c.model, **c.model_kwargs)
            if tokenizer is not None and getattr(tokenizer, "pad_token", "") is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token  # batches need padding
            peft_config = c.build_peft_config()
            if peft_config is not None:
                from peft import get_peft_model

                model = get_peft_model(model, peft_config)
        except LensLLMError:
            raise
        except Exception as error:  # bad ID, no network, bad config, out of memory: the candidate fails
            raise _LoadError(f"could not load {c.model!r}: {_one_line(error)}; check the Hub ID or path "
                             "(offline, use a local folder)") from None
        return model, tokenizer

    def _features(self, c: Candidate, tokenizer):
        """(train pool, eval set) as model features, cached for the last candidate's tokenizer."""
        key = c.tokenizer or c.model
        if self._features_cache is not None and self._features_cache[0] == key:
            return self._features_cache[1:]
        preprocess = self.preprocess or default_preprocess(self.text_column, self.max_length)
        try:
            train, evalset = preprocess(self._pool, tokenizer), preprocess(self._eval, tokenizer)
        except LensLLMError:
            raise
        except Exception as error:
            raise _LoadError(f"preprocessing failed with the tokenizer of {key!r}: {_one_line(error)}") from None
        self._features_cache = (key, train, evalset)
        return train, evalset

    def _collator(self, tokenizer):
        if self.data_collator is not None:
            return self.data_collator(tokenizer)
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(tokenizer, mlm=False)

    # -- internals: metrics -------------------------------------------------------------------

    def _metric_key(self) -> str:
        return "eval_loss" if self.metric == "loss" else f"eval_{self.metric}"

    def _metric_label(self) -> str:
        key = self._metric_key()
        return f"1 - {key}" if self._greater() else key

    def _greater(self) -> bool:
        if self.metric == "loss":
            return False
        return True if self.greater_is_better is None else bool(self.greater_is_better)

    def _metric_fn(self):
        if self.metric == "loss":
            return None
        if self.metric_fn is not None:
            return self.metric_fn
        if self.metric == "accuracy":
            return token_accuracy
        if not hasattr(self, "_loaded_metric"):
            self._loaded_metric = evaluate_metric(self.metric)
        return self._loaded_metric

    def _value(self, rec: RunRecord) -> float:
        """The number ranked for one run: the loss, or 1 - metric for a greater-is-better metric."""
        if self.metric == "loss":
            value = rec.final_eval_loss
        else:
            last = rec.evaluations[-1].metrics if rec.evaluations else {}
            value = last.get(self._metric_key())
            if value is not None and self._greater():
                value = 1.0 - value
        return float(value) if value is not None else float("nan")

    # -- internals: fitting -------------------------------------------------------------------

    def _table(self, recs: Mapping[str, list[RunRecord]]) -> CurveTable | None:
        complete = []
        for rs in recs.values():
            for r in rs:
                if r.status == "complete":
                    value = self._value(r)
                    if math.isfinite(value) and value > 0:
                        complete.append(dataclasses.replace(r, final_eval_loss=value))
        if not complete:
            return None
        table = records.load_table(complete, zero_shot=False, streamed=False)
        # NaN cells are runs not made (adaptive, or a run in flight elsewhere): not problems.
        return dataclasses.replace(table, problems={}, source=self.store_)

    def _result(self, ranking: Ranking, table: CurveTable | None, recs: Mapping[str, list[RunRecord]],
                bought: dict[str, list[int]], strategy: str | None = None) -> SelectionResult:
        spent_by: dict[str, float] = {}
        full = 0.0
        for c in ranking.candidates:
            used = bought.get(c.model, [])
            rs = [r for r in recs.get(c.model, []) if r.status == "complete" and r.train_size in used]
            spent_by[c.model] = float(sum(r.total_flos or 0.0 for r in rs))
            if c.status == "complete" and c.source is None:
                c.flops = spent_by[c.model]
                full += _full_cost(rs, self.target_size_)
        for c in ranking.candidates:
            if c.status != "complete" and c.model in self._failures:
                c.error = self._failures[c.model]  # the run's own error, not "too few points"
        return SelectionResult(
            fits=ranking, table=table, target_size=self.target_size_, strategy=strategy or self.strategy,
            flops=float(sum(spent_by.values())), full_flops=full or None, bought=bought,
            metric=self._metric_label(), level=self.level,
            info={"dataset": self._dataset_label(), "dataset_config": self.dataset_config,
                  "dataset_split": self.dataset_split, "sizes": self.run_sizes_, "seed": self.seed,
                  "store": self.store_, "adapters": {c.name: peft_summary(c.peft_config) for c in self.candidates_}},
        )

    def _run_adaptive(self) -> SelectionResult:
        from ..adaptive import select_adaptive

        recs: dict[str, list[RunRecord]] = {}
        by_name = {c.name: c for c in self.candidates_}
        trained = [c.name for c in self.candidates_ if c.name not in self._published]
        with self._progress(len(trained) * len(self.run_sizes_)) as bar:
            def buy(name: str, size: int) -> tuple[float, float]:
                bar.set_postfix_str(f"{_short(name)} D={size}", refresh=True)
                rec = self._run_or_skip(by_name[name], size)
                bar.update(1)
                if rec is None or rec.status != "complete":
                    raise LensLLMError(self._failures.get(name) or f"run on {size} examples did not complete")
                recs.setdefault(name, []).append(rec)
                return self._value(rec), float(rec.total_flos or 0.0)

            adaptive = (select_adaptive(trained, self.run_sizes_, self.target_size_, buy, method=self.method,
                                        level=self.level, max_flops=self.max_flops) if trained else None)
            bar.total = bar.n  # the runs not bought are not coming
            bar.refresh()
        rows = list(adaptive.ranking.candidates) if adaptive is not None else []
        ranking = Ranking(self.target_size_, adaptive.ranking.method if adaptive else f"adaptive-{self.method}",
                          rows + list(self._published.values()))
        bought = {name: sorted(sizes) for name, sizes in (adaptive.bought if adaptive else {}).items()}
        return self._result(ranking, self._table(recs), recs, bought, strategy="adaptive")

    # -- internals: processes and output ------------------------------------------------------

    @staticmethod
    def _is_main() -> bool:
        return int(os.environ.get("RANK", "0")) == 0

    @staticmethod
    def _main_decides(value):
        """Under ``accelerate launch`` every process must skip or run the same runs: rank 0 decides."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return value
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        PartialState()  # joins the process group on first use (before any Trainer exists)
        return broadcast_object_list([value], from_process=0)[0]

    @contextlib.contextmanager
    def _progress(self, total: int):
        from tqdm.auto import tqdm

        # Objects alive now (torch, transformers, the data) outlive every run: freezing them
        # keeps the per-run gc.collect (a full collection frees each run's model) from
        # re-scanning them, about 0.25 s a run.
        gc.freeze()
        try:
            with tqdm(total=total, desc="lensllm select", unit="run", disable=not self.progress or not self._is_main(),
                      file=sys.stderr, dynamic_ncols=True) as bar:
                yield bar
        finally:
            gc.unfreeze()

    def _dataset_label(self) -> str:
        if self.dataset_name:
            return self.dataset_name
        info = getattr(self.train_dataset, "info", None)
        return getattr(info, "dataset_name", None) or "custom"


class _LoadError(LensLLMError):
    """A candidate that cannot even start a run (load, tokenizer, preprocessing)."""


def _full_cost(rs: Sequence[RunRecord], target: float) -> float:
    """FLOPs of one candidate fine-tuned on ``target`` examples: FLOPs per example of its largest run."""
    sized = [r for r in rs if r.train_size and r.total_flos]
    if not sized:
        return 0.0
    largest = max(sized, key=lambda r: r.train_size)
    return float(largest.total_flos) / int(largest.train_size) * target


def _changed_args(args) -> dict[str, Any]:
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


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Trainer, datasets and Hub bars and info logs off for the runs (the selector shows one bar)."""
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


def _free_memory() -> None:
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


def _portable(model: str | None) -> str | None:
    """A Hub ID as is; a local folder as None (its path differs from machine to machine)."""
    return None if model is None or os.path.isdir(model) else model


def _name_of(fn: Any) -> str | None:
    if fn is None:
        return None
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _short(name: str, width: int = 32) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:400]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
