"""Experiment trackers: each run of a selection logs as its own run, and the selection itself once.

A selection makes many short Trainer runs in one process. Left alone, the trackers' Trainer
callbacks would pour them into one run (W&B keeps ``wandb.run`` open between Trainers) or into a
scratch folder that is deleted with the run (TensorBoard writes under ``output_dir``). So, per
run, when ``report_to`` names the tracker (:func:`tracked_run`):

- every tracker gets ``run_name = "<candidate>-D<size>"``;
- W&B: ``WANDB_RUN_GROUP`` is the selection's group, and the run is finished when training ends;
- MLflow: the tag ``lensllm.selection`` holds the group, and ``mlflow.parentRunId`` the
  selection's own run (``MLFLOW_TAGS``), so the runs nest under it; MLflow's callback already
  ends the run it started;
- TensorBoard: events go to ``<log_root>/<group>/<candidate>-D<size>``;
- trackio: the run is in the selection's group (transformers' ``TrackioCallback`` gives
  ``trackio.init`` none: :func:`join_group` swaps it for one that does), in the project
  ``TrainingArguments.project``; a zero-shot run's trackio run (no ``on_train_end``) is finished.

The environment is put back after each run. When the selection has ranked, :class:`SelectionLog`
logs it once, where the runs are: the ranking table (intervals, P(best), status), the plot, the
fits as JSON (``selection.json``, what ``lensllm predict`` reads) and the cost (FLOPs spent,
saved):

- W&B: a run named after the group, in the group, ``job_type="selection"``: the table and the
  plot in its history, the JSON in its files, best, P(best) and the cost in its summary;
- MLflow: the parent run of the selection's runs (created when the selection starts, so each
  run names it): the table (``ranking.json``), ``selection.md``, ``selection.json``,
  ``selection.png``, the cost as metrics;
- TensorBoard: ``<log_root>/<group>/selection``: the table and the JSON as text, the plot as an
  image, predicted loss and P(best) per candidate and the cost as scalars;
- trackio: a run named after the group, in the group and the runs' project: the table, the plot,
  the pick (Markdown) and the cost in its history, ``selection.json`` as its artifact named after
  the group (type ``selection``).

A tracker that fails to take the selection gets a warning; the ranking is never lost to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TRACKERS", "SelectionLog", "join_group", "named_trackers", "selection_group", "tracked_run"]

TRACKERS = ("wandb", "mlflow", "tensorboard", "trackio")


def selection_group(output_dir: str | os.PathLike) -> tuple[str, str]:
    """(group, TensorBoard root) of the selection writing to ``output_dir``: ``lensllm-<folder name>``, ``<it>/logs``."""
    out = os.path.abspath(str(output_dir))
    return f"lensllm-{os.path.basename(out) or 'selection'}", os.path.join(out, "logs")


def named_trackers(report_to: str | Sequence[str] | None) -> set[str]:
    """The trackers among ``report_to`` (``"all"`` names every one that ``TrainingArguments`` would use)."""
    if report_to is None or report_to == "none":
        return set()
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if "all" in names:
        from transformers.integrations import get_available_reporting_integrations

        names = get_available_reporting_integrations()
    return {n for n in names if n in TRACKERS}


@contextlib.contextmanager
def tracked_run(report_to: str | Sequence[str] | None, *, group: str, run_name: str, log_root: str,
                mlflow_parent: str | None = None) -> Iterator[dict[str, Any]]:
    """Set up the trackers for one run; yields the ``TrainingArguments`` keywords to add.

    ``mlflow_parent`` is the selection's MLflow run (:attr:`SelectionLog.mlflow_parent`): the run
    nests under it.

    Example:
        >>> with tracked_run(["tensorboard"], group="sel-1", run_name="gpt2-D800", log_root="runs") as extra:
        ...     extra
        {'run_name': 'gpt2-D800'}
    """
    trackers = named_trackers(report_to)
    if not trackers:
        yield {}
        return
    env: dict[str, str] = {}
    if "wandb" in trackers:
        env["WANDB_RUN_GROUP"] = group
    if "mlflow" in trackers:
        tags = json.loads(os.environ.get("MLFLOW_TAGS") or "{}")
        tags["lensllm.selection"] = group
        if mlflow_parent:
            tags["mlflow.parentRunId"] = mlflow_parent
        env["MLFLOW_TAGS"] = json.dumps(tags)
    if "tensorboard" in trackers:
        env["TENSORBOARD_LOGGING_DIR"] = os.path.join(log_root, _safe(group), _safe(run_name))
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield {"run_name": run_name}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        wandb = sys.modules.get("wandb")
        if "wandb" in trackers and wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()  # the next Trainer must start its own run, not log into this one
        trackio = sys.modules.get("trackio")
        if "trackio" in trackers and trackio is not None and trackio.context_vars.current_run.get() is not None:
            trackio.finish()  # a zero-shot run only evaluates: the Trainer's callback never finishes it


def join_group(trainer: Any, group: str) -> None:
    """Put the Trainer's trackio run in the selection's ``group`` (nothing when it does not report to trackio).

    transformers' ``TrackioCallback`` calls ``trackio.init`` with no group; it is swapped for a
    subclass that sets the group on the run it starts, before the run's first log (which stores it).
    """
    from transformers.integrations import TrackioCallback

    class GroupedTrackioCallback(TrackioCallback):
        def setup(self, *args: Any, **kwargs: Any) -> None:
            super().setup(*args, **kwargs)
            run = self._trackio.context_vars.current_run.get()
            if run is not None:  # trackio keeps a run's group in its config, written with its first log
                run.group = run.config["_Group"] = group

    if trainer.pop_callback(TrackioCallback) is not None:
        trainer.add_callback(GroupedTrackioCallback())


class SelectionLog:
    """The selection's own log in each tracker its runs report to; made when the selection starts.

    Args:
        trackers: the trackers the runs report to (:func:`named_trackers`).
        group: the selection's group (the runs' W&B group, MLflow tag, TensorBoard folder).
        log_root: TensorBoard's root folder (``<output_dir>/logs``).
        project: the trackio project of the runs (``TrainingArguments.project``).

    Example:
        >>> log = SelectionLog({"mlflow"}, group="lensllm-sel", log_root="out/logs")  # doctest: +SKIP
        >>> log.mlflow_parent   # each run's MLflow tag mlflow.parentRunId  # doctest: +SKIP
        >>> log.publish(result)   # the ranking, plot, fits and cost, once  # doctest: +SKIP
    """

    def __init__(self, trackers: Iterable[str], *, group: str, log_root: str, project: str = "huggingface"):
        self.trackers = set(trackers)
        self.group = group
        self.log_root = log_root
        self.project = project
        #: the MLflow run the selection's runs nest under (None without MLflow, or if it could not be made).
        self.mlflow_parent: str | None = None
        if "mlflow" in self.trackers:
            self.mlflow_parent = _guarded("mlflow", self._start_mlflow)

    def publish(self, result: Any) -> None:
        """Log the selection (``SelectionResult``) to every tracker, once; a tracker's error is a warning."""
        with tempfile.TemporaryDirectory(prefix="lensllm-selection-") as folder:
            files = _guarded("trackers", _files, result, Path(folder))
            for name in sorted(self.trackers) if files else []:
                _guarded(name, getattr(self, f"_publish_{name}"), result, files)
        self.close()  # the MLflow parent run ends FAILED if it could not take the result

    def close(self, status: str = "FAILED") -> None:
        """End the MLflow parent run without a result (the selection failed or was interrupted)."""
        if self.mlflow_parent is not None:
            from mlflow import MlflowClient

            _guarded("mlflow", MlflowClient().set_terminated, self.mlflow_parent, status)
            self.mlflow_parent = None

    # -- one per tracker ----------------------------------------------------------------------------

    def _start_mlflow(self) -> str:
        # The client, not mlflow.start_run: an active run in this process would take the
        # Trainer's own logging (its callback logs into the active run instead of starting one).
        from mlflow import MlflowClient

        client = MlflowClient()
        run = client.create_run(_mlflow_experiment(client), run_name=self.group,
                                tags={"lensllm.selection": self.group, "lensllm.role": "selection"})
        return run.info.run_id

    def _publish_mlflow(self, result: Any, files: dict[str, Path]) -> None:
        from mlflow import MlflowClient

        client = MlflowClient()
        run_id = self.mlflow_parent or self._start_mlflow()
        client.log_table(run_id, result.ranking.reset_index(), "ranking.json")
        for path in files.values():
            client.log_artifact(run_id, str(path))
        for key, value in _cost(result).items():
            client.log_metric(run_id, key, value)
        client.set_tag(run_id, "lensllm.best", str(result.best))
        client.set_tag(run_id, "mlflow.note.content", result.pick_statement())
        client.set_terminated(run_id, "FINISHED")
        self.mlflow_parent = None

    def _publish_wandb(self, result: Any, files: dict[str, Path]) -> None:
        import wandb

        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "huggingface"), group=self.group, name=self.group,
                         job_type="selection", reinit="create_new")
        try:
            run.log({"ranking": wandb.Table(dataframe=result.ranking.reset_index()),
                     "curves": wandb.Image(str(files["plot"]))})
            shutil.copy(files["fits"], run.dir)  # the run's own files (run.save would link to a file deleted next)
            run.summary.update({**_cost(result), "best": result.best, "pick": result.pick_statement(),
                                **{f"p_best/{c.model}": c.p_best for c in result.fits.ranked if c.p_best is not None}})
        finally:
            run.finish()

    def _publish_tensorboard(self, result: Any, files: dict[str, Path]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # as the Trainer's callback: tensorboardX when torch's needs the tensorboard package
            from tensorboardX import SummaryWriter

        writer = SummaryWriter(log_dir=os.path.join(self.log_root, _safe(self.group), "selection"))
        try:
            writer.add_text("selection/ranking", files["table"].read_text(encoding="utf-8"))
            writer.add_text("selection/fits", "```json\n" + files["fits"].read_text(encoding="utf-8") + "\n```")
            writer.add_figure("selection/curves", result.plot())
            for c in result.fits.ranked:
                if c.predicted_loss is not None:
                    writer.add_scalar(f"predicted_loss/{c.model}", c.predicted_loss)
                if c.p_best is not None:
                    writer.add_scalar(f"p_best/{c.model}", c.p_best)
            for key, value in _cost(result).items():
                writer.add_scalar(f"cost/{key}", value)
        finally:
            writer.close()

    def _publish_trackio(self, result: Any, files: dict[str, Path]) -> None:
        import trackio

        # No dashboard in a notebook, no system-metrics thread; "allow": a selection ranked again
        # (resumed, --from-store) logs its new ranking into the same run.
        trackio.init(project=self.project, name=self.group, group=self.group, resume="allow", embed=False,
                     auto_log_cpu=False, auto_log_gpu=False)
        try:
            trackio.log({"ranking": trackio.Table(dataframe=result.ranking.reset_index()),
                         "curves": trackio.Image(str(files["plot"])),
                         "pick": trackio.Markdown(result.pick_statement()), **_cost(result)})
            # The run's own artifact: trackio.save would put the file in the project, where the next
            # selection's selection.json replaces it.
            trackio.log_artifact(str(files["fits"]), name=_safe(self.group), type="selection")
        finally:
            trackio.finish()


def _files(result: Any, folder: Path) -> dict[str, Path]:
    """The selection's outputs as ``lensllm select`` writes them: the plot, the table and the fits."""
    from .._utils import atomic_write_text

    table = folder / "selection.md"
    atomic_write_text(table, result.to_markdown() + "\n")
    plot = folder / "selection.png"
    result.plot(plot)
    return {"fits": result.to_json(folder / "selection.json"), "table": table, "plot": plot}


def _cost(result: Any) -> dict[str, float]:
    """What the selection spent: FLOPs, and what it saved against fine-tuning every candidate on the target."""
    cost = {"flops": float(result.flops)}
    if result.full_flops:
        cost["full_fine_tuning_flops"] = float(result.full_flops)
    if result.fraction_saved is not None:
        cost["fraction_saved"] = float(result.fraction_saved)
    return cost


def _mlflow_experiment(client: Any) -> str:
    """The experiment the Trainer's MLflow runs go to: ``MLFLOW_EXPERIMENT_NAME`` (made if new), else the default."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        experiment = client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment is not None else client.create_experiment(name)
    return os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"


def _guarded(tracker: str, call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception as error:  # a tracker's trouble (offline, a bad URI) must not cost the selection
        from .._utils import one_line

        warnings.warn(f"{tracker}: the selection could not be logged ({one_line(error, 200)}); its runs and the "
                      "ranking files are not affected", RuntimeWarning, stacklevel=3)
        return None


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "run"
