"""``LensLLMSelector``: which candidate to fine-tune, with an interval, for as little compute as it takes.

Each candidate is fine-tuned with ``transformers.Trainer`` on nested subsets of the task data
(200, 400, 800, ... examples up to the budget) and evaluated once before training (D = 0);
:class:`~lensllm_hf.LensLLMCallback` writes one run record per run into a store (a folder or
an fsspec URL). The scaling laws are fitted to those records and the candidates ranked by the
loss predicted at the target size. Runs already in the store are skipped, so a killed
selection resumes where it stopped; a candidate that fails is reported and the others ranked.

The selector only orchestrates: plan the runs (:mod:`.plan`), run the engine's buying loop
(:mod:`lensllm_hf.engine.loop`) with the strategy's policy, buying through a backend
(:mod:`.backends`, adapted by :mod:`.buyer`) that makes each run with a runner (:mod:`.runner`),
then build the result (:mod:`.scoring`). Its parameters are
declared once in :class:`~lensllm_hf.selector.params.SelectionParams`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

from .. import records
from .._utils import display
from ..errors import LensLLMError
from ..engine.loop import Policy, run_loop
from ..engine.policies import POLICIES, GridPolicy
from ..engine.ranking import Ranking
from ..records import RunKey, RunRecord
from .candidates import as_candidates, peft_summary
from .cost import CandidateReads
from .data import check_text_column, content_fingerprint, split_eval, subset_pool
from .params import SelectionParams, check_params, check_task, params_doc, params_of, run_sizes
from .plan import (PlannedRun, RunPlan, check_training_args, check_training_args_type, config_hash_of, name_of,
                   user_args)
from .published import published_rows
from .result import SelectionResult
from .runner import Deferred, Runner, is_main_process
from .scoring import Metric, curve_table, selection_result
from .buyer import RecordBuyer
from .threads import torch_threads
from .backends import make_backend

__all__ = ["LensLLMSelector", "PlannedRun"]


class LensLLMSelector(SelectionParams):
    """Rank candidate models for fine-tuning on a dataset, from small-subset runs.

    The parameters (below, declared in :class:`~lensllm_hf.selector.params.SelectionParams`)
    are stored as given and checked together when the selector is made: a bad one is a
    one-line :class:`~lensllm_hf.errors.LensLLMError` before any model loads. The training
    arguments are built (which imports torch) when runs are first asked for or costed
    (:meth:`run`, :meth:`train`, :meth:`check_candidates`, :meth:`estimate_cost`): ranking
    :meth:`from_store` needs none.

    Example:
        >>> from datasets import load_dataset
        >>> data = load_dataset("imdb")
        >>> selector = LensLLMSelector(["EleutherAI/pythia-70m", "gpt2"], data["train"],
        ...                            data["test"].select(range(500)), target_size=25_000, budget=1_600,
        ...                            training_args={"learning_rate": 5e-5})
        >>> result = selector.run()
        >>> result.best, result.ranking

    """

    def __post_init__(self) -> None:
        checked = check_params({name: getattr(self, name) for name in params_of()})
        #: the parameters as checked (a whole-number float of an int parameter made an int): what runs use.
        self.params_ = SelectionParams(**checked)
        self.candidates_ = as_candidates(self.candidates)
        if self.train_dataset is None or not hasattr(self.train_dataset, "select"):
            raise LensLLMError("train_dataset must be a datasets.Dataset (e.g. Dataset.from_dict({'text': [...]}) or "
                               "load_dataset(...)['train'])")
        if self.eval_dataset is not None and not hasattr(self.eval_dataset, "select"):
            raise LensLLMError("eval_dataset must be a datasets.Dataset or None (then eval_size rows are held out)")
        #: how the task's rows become each candidate's training data (columns, chat template, length).
        self.format_ = check_task(checked)
        if self.preprocess is None:
            for data, where in ((self.train_dataset, "train_dataset"), (self.eval_dataset, "eval_dataset")):
                if data is None:
                    continue
                if self.format_.layout == "text":
                    check_text_column(data, self.text_column, where)
                else:
                    self.format_.check_columns(data, where)
                if self.format_.layout == "messages":
                    try:  # every conversation well formed: one line naming the row, before any model loads
                        self.format_.pairs(data)
                    except LensLLMError as error:
                        raise LensLLMError(f"{where} {error}") from None
        n_train = len(self.train_dataset) - (0 if self.eval_dataset is not None else checked["eval_size"])
        target = checked.get("target_size")
        self.target_size_: int = int(target) if target is not None else n_train
        sizes = run_sizes({**checked, "target_size": self.target_size_})
        self.sizes_: list[int] = [s for s in sizes if s > 0]
        if self.sizes_[-1] > n_train:
            raise LensLLMError(f"the largest subset ({self.sizes_[-1]:,}) exceeds the {n_train:,} training rows; "
                               "lower the budget or give more data")
        check_training_args_type(self.training_args)  # the plan reads them; building them waits for the runs
        self.store_: str = str(self.store) if self.store is not None else os.path.join(str(self.output_dir), "store")
        self._prepared: dict[str, Any] | None = None
        self._ray: Any = None  # the selection's RayBackend, from start_backend() or the first batch to its close
        self._log: Any = None  # the selection's SelectionLog in the trackers, from run() to its result
        self._training_args_checked = False
        self._reads = CandidateReads()  # each candidate's config and tokenizer, read once per selection

    @property
    def failures_(self) -> dict[str, str]:
        """Candidates that failed in this selector (load errors, failed runs), with the error."""
        return dict(self._prepared["runner"].failures) if self._prepared else {}

    @property
    def made_(self) -> list[RunKey]:
        """The runs this selector made itself (the others it read from the store, made earlier or elsewhere)."""
        return list(self._prepared["runner"].made) if self._prepared else []

    @property
    def run_sizes_(self) -> list[int]:
        """Every size run per candidate: 0 (zero-shot) first when ``zero_shot``."""
        return ([0] if self.zero_shot else []) + list(self.sizes_)

    @property
    def metric_(self) -> Metric:
        return Metric(self.metric, self.metric_fn, self.greater_is_better)

    @property
    def generates_(self) -> bool:
        """Whether the metric is scored on generated answers (a task metric on prompt/completion or chat data)."""
        return self.format_.layout != "text" and self.metric_fn is None and self.metric != "loss"

    @property
    def generation_(self) -> dict[str, int]:
        """The generation settings of a task metric, defaults filled in."""
        from .task_metrics import GenerationConfig

        return dataclasses.asdict(GenerationConfig(**(self.params_.generation or {})))

    # -- planning -----------------------------------------------------------------------------

    def plan(self) -> list[PlannedRun]:
        """Every (candidate, size) run of a grid selection, with the state of its record.

        Example:
            >>> [(r.candidate, r.size, r.status) for r in selector.plan()][:2]
            [('gpt2', 0, 'complete'), ('gpt2', 200, 'pending')]
        """
        ready = self._prepare()
        store, out = ready["store"], []
        for key in ready["plan"].keys():
            rec = store.read(key)
            out.append(PlannedRun(key.model, int(key.train_size), store.path_of(key),
                                  rec.status if rec is not None else "pending", key))
        return out

    def check_candidates(self) -> None:
        """Check, before any model loads, that the task's data can train every candidate.

        An encoder-decoder (known from its config) needs prompt -> completion data, and
        conversations need a chat template (the tokenizer's, or ``chat_template``): each candidate's
        config is read (no weights), and for conversations without ``chat_template`` its tokenizer,
        once per selection (:meth:`estimate_cost` reuses them).
        A candidate whose config or tokenizer cannot be read is left to its runs, which say why;
        with ``model_loader`` the candidates are the user's to load, and are not checked.

        Raises:
            LensLLMError: one line naming the candidate (or training argument) and the fix.
        """
        self._check_training_args()
        if self.model_loader is not None:
            return
        from .runner import quiet_logs

        chat = self.format_.layout == "messages" and self.chat_template is None
        for c in self.candidates_:
            try:
                with quiet_logs(self.verbose):
                    config, tokenizer = self._reads.of(c, tokenizer=chat)
            except Exception:  # its runs (and the cost estimate) will say why it cannot load
                continue
            encoder_decoder = self.preprocess is None and bool(getattr(config, "is_encoder_decoder", False))
            self.format_.check_candidate(c.name, encoder_decoder=encoder_decoder, tokenizer=tokenizer)

    def estimate_cost(self, only: Iterable[str] | str | None = None, sizes: Iterable[int] | int | None = None):
        """What the planned runs will cost before anything trains (:class:`~lensllm_hf.selector.cost.SelectionCost`).

        Per run, ``6 x parameters x tokens`` as the Trainer counts FLOPs, from each candidate's
        config (no weights loaded) and its tokenizer over the subset; beside it, the cost of
        fine-tuning every candidate on ``target_size`` examples.

        Example:
            >>> print(selector.estimate_cost().summary(gpu="H100"))
            estimated cost: 3.1e+15 FLOPs for 20 run(s) (~0.0022 GPU-hours on H100 ...), 0.52% of fine-tuning ...
        """
        from .cost import estimate_selection
        from .runner import quiet_logs

        self._check_training_args()
        ready = self._prepare()
        keys = [k for k in ready["plan"].choose(only, sizes) if k.model not in ready["published"]]
        # `lensllm select` prints the estimate and a budgeted run() needs it again: tokenise once.
        memo = ready.setdefault("costs", {})
        wanted = frozenset(k.name for k in keys)
        if wanted not in memo:
            with quiet_logs(self.verbose):
                memo[wanted] = estimate_selection(ready["plan"], ready["runner"], target_size=self.target_size_,
                                                  keys=keys, reads=self._reads)
        cost = memo[wanted]
        return dataclasses.replace(cost, runs=list(cost.runs), full=dict(cost.full), errors=dict(cost.errors))

    # -- running ------------------------------------------------------------------------------

    def run(self, policy: Policy | None = None) -> SelectionResult:
        """Run the selection (skipping recorded runs) and return the ranking.

        Args:
            policy: decides which runs to buy (a :class:`~lensllm_hf.engine.loop.Policy`, e.g.
                your own); default: the ``strategy`` parameter's (grid, adaptive or halving).

        Example:
            >>> result = selector.run()
            >>> print(result.to_markdown())
        """
        self._check_training_args()
        policy = POLICIES[self.strategy]() if policy is None else policy
        if not isinstance(policy, Policy):
            raise LensLLMError(f"policy {policy!r} is no Policy: give it a name and a runs(state) method that yields "
                               "batches of (candidate, size) runs (see lensllm_hf.engine.policies)")
        ready = self._prepare()
        runner: Runner = ready["runner"]
        names = self._trained()
        # With a FLOPs budget, the loop projects each run's cost before it has measured one.
        expected: dict[str, float] = {}
        if self.params_.max_flops is not None and names:
            cost = self.estimate_cost(only=names)
            expected = cost.flops_per_example()
            if cost.errors:
                warnings.warn(f"max_flops: no cost estimate for {', '.join(map(display, sorted(cost.errors)))} "
                              f"({display(next(iter(cost.errors.values())))}); their first runs are bought before "
                              "their cost is known", stacklevel=2)
        # The selection's own tracker log exists before its runs, so that they can name it (MLflow's parent run).
        self._log = self._selection_log()
        runner.mlflow_parent = self._log.mlflow_parent if self._log is not None else None
        with self._progress(len(names) * len(self.run_sizes_)) as bar, self._backend_closed(), self._log_closed():
            buyer = RecordBuyer(ready["plan"], self._buyer(bar), ready["metric"], runner.failures)
            result = self._select(policy, buyer, flops_per_example=expected)
            bar.total = bar.n  # the runs not bought are not coming
            bar.refresh()
        return self._logged(result)

    def train(self, only: Iterable[str] | str | None = None, sizes: Iterable[int] | int | None = None, *,
              local_workers: int = 1) -> list[RunRecord]:
        """Make the planned runs (all, or those of ``only`` candidates and ``sizes``) without fitting.

        This is what ``lensllm select CONFIG --only MODEL --size N`` (a line of ``lensllm plan``)
        and ``lensllm select CONFIG --worker`` do on a cluster node: runs that another process
        has made are read, runs it is making are waited for, the others are claimed and made
        here. Returns the records (recorded earlier or made now); failures are in their ``status``.

        Args:
            only, sizes: the candidates and subset sizes to make (default: all).
            local_workers: how many processes on this machine make runs at once; on CPU each
                run then uses the cores / ``local_workers`` torch threads (see :mod:`.threads`).
        """
        self._check_training_args()
        ready = self._prepare()
        keys = [k for k in ready["plan"].choose(only, sizes) if k.model not in ready["published"]]
        with self._progress(len(keys)) as bar, self._backend_closed():
            # One run (a line of `lensllm plan`, a cluster array task) needs no local Ray cluster of
            # its own; with a ray_address it still goes to that cluster (not the login node).
            made = self._buyer(bar, parallel=len(keys) > 1 or self.params_.ray_address is not None,
                               local_workers=local_workers)(keys)
        return [rec for rec in made if rec is not None]

    def start_backend(self, runs: int | None = None) -> None:
        """Start the backend's workers now, in the background, so that they are ready when the runs come.

        With ``backend="ray"``: joins or starts the Ray cluster and starts up to ``runs`` actors
        (default: as many as it holds), each importing torch and transformers, while this
        process goes on preparing (``lensllm select`` calls it before estimating the cost).
        :meth:`run` starts them itself when needed; both stop them at their end. Nothing to do
        for the serial backend.
        """
        if self.params_.backend == "ray":
            self._ray_backend().start(runs)

    def from_store(self) -> SelectionResult:
        """Fit and rank from the records in the store only (no training): ``--from-store``.

        The grid policy on the runs the store holds, bought by reading them: the same loop and
        ranking as :meth:`run`, so the numbers are those of the selection that made the runs.
        """
        ready = self._prepare()
        runner: Runner = ready["runner"]
        found: dict[RunKey, RunRecord] = {}
        for key in ready["plan"].keys(only=self._trained()):
            rec = ready["store"].read(key)
            if rec is not None:
                found[key] = rec
                if rec.status == "failed":
                    runner.failures.setdefault(key.model, f"run on {key.train_size} examples failed: {rec.error}")
        buyer = RecordBuyer(ready["plan"], lambda keys: [found[key] for key in keys], ready["metric"], runner.failures)
        result = self._select(GridPolicy(only={(key.model, key.train_size) for key in found}), buyer,
                              strategy=self.strategy)
        for c in result.fits.candidates:
            if c.status != "complete" and c.model not in runner.failures and c.model not in buyer.records:
                c.error = f"no complete run in the store {self.store_}; run 'lensllm select' without --from-store first"
        return self._logged(result)

    # -- internals ----------------------------------------------------------------------------

    def _check_training_args(self) -> None:
        """Each candidate's ``TrainingArguments`` built once, before the first run (a bad keyword: one line)."""
        if not self._training_args_checked:
            check_training_args(self.training_args, self.candidates_)
            self._training_args_checked = True

    def _prepare(self) -> dict[str, Any]:
        """Data, hashes, store and published fits, once per selector (cheap: no model is loaded)."""
        if self._prepared is not None:
            return self._prepared
        train, evalset = self.train_dataset, self.eval_dataset
        if evalset is None:
            train, evalset = split_eval(train, self.params_.eval_size, self.params_.seed)
        pool = subset_pool(train, self.sizes_[-1], self.params_.seed)
        metric = self.metric_
        # The data part of the config hash: the shuffle's first rows and the eval set. The first
        # min-size rows pin the shuffle, so raising the budget keeps earlier runs.
        data = {"n_train": len(train), "head": content_fingerprint(pool, self.sizes_[0]),
                "eval": content_fingerprint(evalset)}
        fmt = self.format_
        preprocess = name_of(self.preprocess) or f"default({self.text_column}, {self.params_.max_length})"
        # Text data keeps the hash it always had; other layouts add what changes their runs.
        task = None if fmt.layout == "text" else {
            "layout": fmt.layout, "columns": list(fmt.columns), "chat_template": fmt.chat_template,
            "generation": self.generation_ if self.generates_ else None}
        hashes = {c.name: config_hash_of(c, shared_args=self.training_args, data=data, metric_key=metric.key,
                                         preprocess=preprocess, collator=self.data_collator, loader=self.model_loader,
                                         task=task)
                  for c in self.candidates_}
        plan = RunPlan(self.candidates_, self.run_sizes_, self.params_.seed, hashes)
        store = records.Store(self.store_)
        if is_main_process():
            records.check_writable(self.store_)
        published = published_rows(self.candidates_, dataset=self._dataset_label(), config=self.dataset_config,
                                   split=self.dataset_split, metric=metric.key,
                                   target=self.target_size_) if self.reuse_published else {}
        from .task_metrics import GenerationConfig

        runner = Runner(self.params_, plan, store, pool=pool, evalset=evalset, metric=metric, task_format=fmt,
                        generation=GenerationConfig(**self.generation_) if self.generates_ else None)
        self._prepared = {"plan": plan, "store": store, "runner": runner, "metric": metric, "published": published}
        return self._prepared

    def _trained(self) -> list[str]:
        published = self._prepare()["published"]
        return [c.name for c in self.candidates_ if c.name not in published]

    def _buyer(self, bar, parallel: bool = True, local_workers: int = 1):
        """``buy(keys) -> records``: the backend runs them (in this process unless ``parallel``),
        the bar follows each run; runs made in this process on CPU use the cores / ``local_workers``
        torch threads unless the user set them (:func:`~.threads.torch_threads`)."""
        runner: Runner = self._prepare()["runner"]

        def attempt(key: RunKey):
            bar.set_postfix_str(f"{_short(key.model)} D={key.train_size}", refresh=True)
            outcome = runner.attempt(key)
            if not isinstance(outcome, Deferred):
                bar.update(1)
            return outcome

        def waiting(deferred: list[Deferred]) -> None:
            bar.set_postfix_str(f"waiting: {deferred[0].describe()}"
                                + (f" (+{len(deferred) - 1} more)" if len(deferred) > 1 else ""), refresh=True)

        if self.params_.backend == "ray" and parallel:
            # The runs execute in Ray actors: the runner's own method is sent (a bar cannot be
            # pickled), and the bar here moves as each run finishes.
            records.require_persistent(self.store_)
            ray_backend = self._ray_backend()

            def finished(key: RunKey) -> None:
                bar.update(1)
                bar.set_postfix_str(f"{_short(key.model)} D={key.train_size} done", refresh=True)

            ray_backend.on_done = finished
            bar.set_postfix_str("starting Ray workers", refresh=True)
            return lambda keys: ray_backend.run(keys, runner.attempt)
        backend = make_backend(self.params_.backend if parallel else "serial", on_wait=waiting)

        def buy(keys: list[RunKey]) -> list[RunRecord | None]:
            with torch_threads(local_workers):
                return backend.run(keys, attempt)

        return buy

    def _ray_backend(self):
        """The selection's :class:`~lensllm_hf.selector.ray_backend.RayBackend`, made once: every batch reuses its
        cluster and warm actors."""
        if self._ray is None:
            self._ray = make_backend("ray", address=self.params_.ray_address, num_gpus=self.params_.ray_num_gpus,
                                     cluster_cpus=self.params_.ray_num_cpus)
        return self._ray

    def _selection_log(self):
        """The selection's :class:`~lensllm_hf.selector.trackers.SelectionLog` in the trackers its runs report to,
        or None when they report to none."""
        from .trackers import SelectionLog, named_trackers, selection_group

        args = [user_args(self.params_.training_args, c) for c in self.candidates_]
        trackers = set().union(*(named_trackers(a.get("report_to")) for a in args))
        if not trackers:
            return None
        group, log_root = selection_group(self.output_dir)
        projects = {a.get("project") for a in args if a.get("project")}
        return SelectionLog(trackers, group=group, log_root=log_root,
                            project=projects.pop() if len(projects) == 1 else "huggingface")

    def _logged(self, result: SelectionResult) -> SelectionResult:
        """The result, once logged in the trackers the runs report to (the selection itself, beside its runs)."""
        log, self._log = self._log or self._selection_log(), None
        if log is not None:
            log.publish(result)
        return result

    @contextlib.contextmanager
    def _log_closed(self):
        """A selection that fails or is interrupted ends its tracker log (MLflow: the parent run FAILED)."""
        try:
            yield
        except BaseException:
            if self._log is not None:
                self._log.close()
                self._log = None
            raise

    @contextlib.contextmanager
    def _backend_closed(self):
        """The backend's workers stop when the runs end (or fail, or are interrupted)."""
        try:
            yield
        finally:
            if self._ray is not None:
                self._ray.close()
                self._ray = None

    def _select(self, policy: Policy, buyer: RecordBuyer, *, strategy: str | None = None,
                flops_per_example: dict[str, float] | None = None) -> SelectionResult:
        """The buying loop over the trained candidates, their ranking beside the published ones, the result."""
        ready = self._prepare()
        names = self._trained()
        if names:
            loop = run_loop(policy, names, self.run_sizes_, self.target_size_, buyer, method=self.method,
                            level=self.params_.level, max_flops=self.params_.max_flops, params=buyer.params,
                            runs=buyer.runs, flops_per_example=flops_per_example)
            ranking, bought = loop.ranking, loop.bought
        else:  # every candidate ranked from its published fit
            ranking, bought = Ranking(self.target_size_, self.method, [], self.params_.level), {}
        ranking = dataclasses.replace(ranking, candidates=[*ranking.candidates, *ready["published"].values()])
        table = curve_table(buyer.records, ready["metric"], source=self.store_)
        sizes = {name: sorted(bought_sizes) for name, bought_sizes in bought.items() if bought_sizes}
        info = {"dataset": self._dataset_label(), "dataset_config": self.dataset_config,
                "dataset_split": self.dataset_split, "sizes": self.run_sizes_, "seed": self.params_.seed,
                "store": self.store_,
                "made_here": [{"model": k.model, "size": k.train_size} for k in ready["runner"].made],
                "adapters": {c.name: peft_summary(c.peft_config) for c in self.candidates_}}
        return selection_result(ranking, table, buyer.records, sizes, failures=ready["runner"].failures,
                                strategy=strategy or policy.name, metric=ready["metric"], info=info)

    @contextlib.contextmanager
    def _progress(self, total: int):
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        # Objects alive now (torch, transformers, the data) outlive every run: freezing them
        # keeps the per-run gc.collect (a full collection frees each run's model) from
        # re-scanning them, about 0.25 s a run.
        gc.freeze()
        try:
            # The library's log lines (a halving round's cuts) print above the bar, not through it.
            with tqdm(total=total, desc="lensllm select", unit="run", disable=not self.progress or
                      not is_main_process(), file=sys.stderr, dynamic_ncols=True) as bar, \
                    logging_redirect_tqdm([logging.getLogger("lensllm_hf")], tqdm_class=tqdm):
                yield bar
        finally:
            gc.unfreeze()

    def _dataset_label(self) -> str:
        if self.dataset_name:
            return self.dataset_name
        info = getattr(self.train_dataset, "info", None)
        return getattr(info, "dataset_name", None) or "custom"


LensLLMSelector.__doc__ = (LensLLMSelector.__doc__ or "").rstrip() + "\n\n" + "\n".join(
    "    " + line for line in params_doc().splitlines()) + "\n"


def _short(name: str, width: int = 32) -> str:
    name = display(name)
    return name if len(name) <= width else "…" + name[-(width - 1):]
