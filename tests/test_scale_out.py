"""Scale-out and cost: the Ray backend, the halving strategy, cost estimates before the run, trackers.

The Ray tests share one local cluster (2 CPUs, 2 *fake* GPUs: Ray only counts them, and sets
``CUDA_VISIBLE_DEVICES`` per actor; torch here has no CUDA, so the runs train on the CPU). They
take minutes: marked slow (``-m slow``); test_ray_backend.py holds the default suite's Ray test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import lensllm_hf  # noqa: E402
from lensllm_hf import LensLLMSelector  # noqa: E402
from lensllm_hf.cli import main  # noqa: E402
from lensllm_hf.errors import LensLLMError  # noqa: E402
from lensllm_hf.records import RunKey, Store, list_records, read_record  # noqa: E402
from lensllm_hf.selector.loading import load_candidate  # noqa: E402

from tiny_models import TINY_SELECTION as COMMON, TINY_TRAINING as TRAINING, write_select_config  # noqa: E402

TESTS = Path(__file__).resolve().parent
SRC = Path(lensllm_hf.__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Workers import this checkout's package and the loaders defined in this file.
    env = {"PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]), "OMP_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def test_importing_the_package_does_not_import_ray():
    code = ("import lensllm_hf, lensllm_hf.selector, lensllm_hf.selector.backends, lensllm_hf.selector.ray_backend, "
            "lensllm_hf.cli, sys; assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(SRC)})


def test_ray_params_are_checked_where_they_enter(models, data, tmp_path):
    with pytest.raises(LensLLMError, match="backend='dask': must be one of serial, ray"):
        LensLLMSelector([models["small"]], *data, output_dir=tmp_path, backend="dask", **COMMON)
    with pytest.raises(LensLLMError, match="ray_address and ray_num_cpus only apply to backend ray; drop them"):
        LensLLMSelector([models["small"]], *data, output_dir=tmp_path, ray_address="auto", ray_num_cpus=2, **COMMON)
    with pytest.raises(LensLLMError, match="ray_num_cpus=0: must be at least 1"):
        LensLLMSelector([models["small"]], *data, output_dir=tmp_path, backend="ray", ray_num_cpus=0, **COMMON)
    with pytest.raises(LensLLMError, match="ray_num_gpus=-1: must be at least 0"):
        LensLLMSelector([models["small"]], *data, output_dir=tmp_path, backend="ray", ray_num_gpus=-1, **COMMON)


# -- Ray ------------------------------------------------------------------------------------------


def test_one_planned_run_needs_no_ray_cluster(models, data, tmp_path):
    """A line of `lensllm plan` (one run) with backend ray trains in its own process, as the
    cluster array task it is, without starting a Ray cluster of its own."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already up in this process")
    selector = LensLLMSelector([models["small"]], *data, output_dir=tmp_path, backend="ray", **COMMON)
    (rec,) = selector.train(sizes=8)
    assert rec.status == "complete" and rec.train_size == 8
    assert not ray.is_initialized()


@pytest.mark.slow
def test_ray_ranks_like_serial_and_a_failed_candidate_stays_failed(ray_cluster, models, data, tmp_path):
    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"},
                  {"model": models["small"], "name": "diverges", "training_args": {"learning_rate": 1e12}},
                  {"model": str(tmp_path / "no-such-model"), "name": "missing"}]
    serial = LensLLMSelector(candidates, *data, output_dir=tmp_path / "serial", **COMMON).run()
    selector = LensLLMSelector(candidates, *data, output_dir=tmp_path / "ray", backend="ray", **COMMON)
    parallel = selector.run()
    assert list(parallel.ranking.model) == list(serial.ranking.model)
    assert parallel.best == serial.best is not None
    ranked = serial.ranking.status == "complete"
    assert ranked.sum() == 2
    assert parallel.ranking.predicted_loss[ranked].tolist() == pytest.approx(
        serial.ranking.predicted_loss[ranked].tolist(), rel=1e-6)
    rows = parallel.ranking.set_index("model")
    assert rows.loc["diverges", "status"] == "failed" and "NaN" in rows.loc["diverges", "error"]
    assert rows.loc["missing", "status"] == "failed" and "no such folder" in rows.loc["missing", "error"]
    assert set(selector.failures_) == {"diverges", "missing"}
    # Every run of the working candidates was made once, by a Ray worker, and recorded complete.
    made = [(k.model, k.train_size) for k in selector.made_]
    assert sorted(m for m in made if m[0] != "diverges") == sorted((m, s) for m in ("small", "large")
                                                                     for s in (0, 8, 16, 32))
    stored = [read_record(p) for p in list_records(tmp_path / "ray" / "store")]
    diverged = [r for r in stored if r.model_id == "diverges"]
    # Smallest runs first: its failure at D=8 was known before its largest run could start.
    assert any(r.status == "failed" for r in diverged) and 32 not in {r.train_size for r in diverged}
    assert {r.status for r in stored if r.model_id != "diverges"} == {"complete"}


class Sleeper:
    """A runner stand-in whose ``attempt`` records where (GPU, pid) and when it ran."""

    def __init__(self, folder: str, seconds: float):
        self.folder, self.seconds = folder, seconds
        self.failures: dict[str, str] = {}
        self.made: list = []

    def attempt(self, key):
        start = time.time()
        time.sleep(self.seconds)
        mark = {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(), "start": start, "end": time.time()}
        Path(self.folder, f"{key.train_size}.json").write_text(json.dumps(mark))
        self.made.append(key)
        return f"record {key.train_size}"


@pytest.mark.slow
def test_one_run_per_gpu_at_a_time(ray_cluster, tmp_path):
    from lensllm_hf.selector.ray_backend import RayBackend

    keys = [RunKey("m", size, 0, "h") for size in range(1, 7)]
    done: list = []
    sleeper = Sleeper(str(tmp_path), 1.0)
    # Half a CPU per run: the CPUs would hold 4 actors, the 2 GPUs only 2.
    with RayBackend(num_gpus=1, num_cpus=0.5, max_in_flight=len(keys), on_done=done.append) as backend:
        assert backend.run(keys, sleeper.attempt) == [f"record {k.train_size}" for k in keys]
    assert sorted(done, key=lambda k: k.train_size) == keys  # each reported once, as it finished
    marks = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert len(marks) == 6 and {m["gpu"] for m in marks} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((m["start"], m["end"]) for m in marks if m["gpu"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    starts_ends = [(m["start"], m["end"]) for m in marks]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(starts_ends) for b in starts_ends[i + 1:])
    with pytest.raises(LensLLMError, match="ask 3 GPU"):
        RayBackend(num_gpus=3).run(keys, sleeper.attempt)


class KillOnce:
    """A model loader that SIGKILLs its own worker the first time it is called (a marker file says so)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, candidate):
        with open(self.marker, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        try:  # exactly one caller creates the kill marker, even when two workers load at once
            fd = os.open(self.marker + ".killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return load_candidate(candidate.model, tokenizer_id=candidate.tokenizer,
                                  model_kwargs=candidate.model_kwargs, name=candidate.name)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies here, holding the run's claim


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_nothing_is_lost(ray_cluster, models, data, tmp_path):
    marker = tmp_path / "calls.txt"
    selector = LensLLMSelector([{"model": models["small"], "name": "small"}], *data, output_dir=tmp_path,
                               backend="ray", model_loader=KillOnce(str(marker)), claim_ttl_s=300,
                               **{**COMMON, "training_args": {**TRAINING, "num_train_epochs": 4}})
    started = time.monotonic()
    result = selector.run()
    took = time.monotonic() - started
    pids = marker.read_text().split()
    killed = Path(str(marker) + ".killed").read_text()
    assert len(pids) == 5 and pids.count(killed) == 1  # 4 runs, the killed one tried again in another process
    assert result.best == "small" and not selector.failures_
    stored = [read_record(p) for p in list_records(tmp_path / "store")]
    assert sorted(r.train_size for r in stored) == [0, 8, 16, 32] and {r.status for r in stored} == {"complete"}
    assert sorted(k.train_size for k in selector.made_) == [0, 8, 16, 32]
    # The dead worker's claim was taken over at once (same host, its pid gone), not after claim_ttl_s.
    assert took < 300, took


@pytest.mark.slow
def test_halving_runs_through_ray(ray_cluster, models, data, tmp_path):
    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}]
    params = {**COMMON, "budget": 64, "strategy": "halving"}
    serial = LensLLMSelector(candidates, *data, output_dir=tmp_path / "serial", **params).run()
    parallel = LensLLMSelector(candidates, *data, output_dir=tmp_path / "ray", backend="ray", **params).run()
    assert serial.strategy == parallel.strategy == "halving"
    assert parallel.best == serial.best and parallel.bought == serial.bought
    assert all(sizes[:4] == [0, 8, 16, 32] for sizes in parallel.bought.values())
    assert len(list_records(tmp_path / "ray" / "store")) == sum(len(s) for s in parallel.bought.values())


# -- cost before the run ------------------------------------------------------------------------


def test_plan_estimates_land_near_the_flops_the_runs_record(tmp_path, capsys):
    config = write_select_config(tmp_path / "cfg",
                                 training_args={**TRAINING, "per_device_train_batch_size": 4, "num_train_epochs": 3})
    out, estimates = tmp_path / "out", tmp_path / "plan.json"
    assert main(["plan", str(config), "--output-dir", str(out), "--json", str(estimates), "--gpu", "H100"]) == 0
    err = capsys.readouterr().err
    assert "estimated cost:" in err and "GPU-hours on H100" in err
    plan = json.loads(estimates.read_text())
    assert len(plan["runs"]) == 8 and {"model", "size", "estimated_flops", "command", "gpu_hours"} <= set(plan["runs"][0])
    assert plan["total_estimated_flops"] == pytest.approx(sum(r["estimated_flops"] for r in plan["runs"]))
    assert plan["full_fine_tuning_flops"] > plan["total_estimated_flops"] and plan["gpu_hours"] > 0
    assert all((r["estimated_flops"] == 0) == (r["size"] == 0) for r in plan["runs"])

    assert main(["select", str(config), "--output-dir", str(out), "--no-progress"]) == 0
    assert "lensllm select: estimated cost:" in capsys.readouterr().err
    store = Store(out / "store")
    recorded = {(r.model_id, r.train_size): r.total_flos for r in store.records()}
    ratios = {(r["model"], r["size"]): r["estimated_flops"] / recorded[(r["model"], r["size"])]
              for r in plan["runs"] if r["size"]}
    assert all(0.5 <= ratio <= 2.0 for ratio in ratios.values()), ratios
    with pytest.raises(SystemExit):
        main(["plan", str(config), "--gpu", "H100", "--flops-per-second", "1e15"])
    capsys.readouterr()
    assert main(["plan", str(config), "--output-dir", str(out), "--gpu", "B9000"]) == 2
    assert "unknown GPU 'B9000'" in capsys.readouterr().err


# -- trackers -----------------------------------------------------------------------------------


def test_each_run_logs_to_its_own_tensorboard_run_and_the_selection_beside_them(models, data, tmp_path):
    pytest.importorskip("tensorboardX") if not _has_torch_tensorboard() else None
    training = {**TRAINING, "report_to": ["tensorboard"], "logging_strategy": "steps", "logging_steps": 1}
    selector = LensLLMSelector([{"model": models["small"], "name": "tiny/small"}], *data, output_dir=tmp_path / "sel",
                               **{**COMMON, "training_args": training})
    result = selector.run()
    group = tmp_path / "sel" / "logs" / "lensllm-sel"
    runs = sorted(p.name for p in group.iterdir())
    assert runs == ["selection", "tiny_small-D0", "tiny_small-D16", "tiny_small-D32", "tiny_small-D8"]
    assert all(list((group / run).glob("events.out.tfevents.*")) for run in runs)
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ
    # The selection, read back from its event file: the table, the fits, the plot, the numbers.
    (events,) = (group / "selection").glob("events.out.tfevents.*")
    summaries = {v.tag: v for event in _tf_events(events) for v in event.summary.value}
    texts = {tag.removesuffix("/text_summary"): v.tensor.string_val[0].decode() for tag, v in summaries.items()
             if v.tensor.string_val}
    assert "P(best)" in texts["selection/ranking"] and "tiny/small" in texts["selection/ranking"]
    fits = json.loads(texts["selection/fits"].removeprefix("```json\n").removesuffix("\n```"))
    assert fits["best"] == result.best == "tiny/small" and fits["ranking"][0]["fit"]
    assert summaries["selection/curves"].image.encoded_image_string.startswith(b"\x89PNG")
    assert summaries["p_best/tiny/small"].simple_value == pytest.approx(1.0)
    assert summaries["predicted_loss/tiny/small"].simple_value == pytest.approx(result.fits.ranked[0].predicted_loss)
    assert summaries["cost/flops"].simple_value == pytest.approx(result.flops, rel=1e-6)


def test_each_run_nests_under_the_selections_mlflow_run(models, data, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder: no server, no network
    training = {**TRAINING, "report_to": ["mlflow"], "logging_strategy": "steps", "logging_steps": 1}
    result = LensLLMSelector([{"model": models["small"], "name": "tiny/small"}], *data, output_dir=tmp_path / "sel",
                             **{**COMMON, "training_args": training}).run()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    (parent,) = [r for r in runs if r.data.tags.get("lensllm.role") == "selection"]
    children = [r for r in runs if r is not parent]
    assert sorted(r.info.run_name for r in children) == [f"tiny/small-D{d}" for d in (0, 16, 32, 8)]
    assert {r.data.tags.get("lensllm.selection") for r in runs} == {"lensllm-sel"}
    assert {r.data.tags.get("mlflow.parentRunId") for r in children} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all("train_loss" in r.data.metrics for r in children if not r.info.run_name.endswith("-D0"))
    assert "MLFLOW_TAGS" not in os.environ
    # The selection's own run: the ranking with its intervals and P(best), the plot, the fits, the cost.
    assert parent.info.run_name == "lensllm-sel" and parent.data.tags["lensllm.best"] == "tiny/small"
    assert parent.data.metrics["flops"] == pytest.approx(result.flops, rel=1e-6)
    assert parent.data.metrics["fraction_saved"] == pytest.approx(result.fraction_saved)
    artifacts = Path(parent.info.artifact_uri.removeprefix("file://"))
    assert {p.name for p in artifacts.iterdir()} >= {"ranking.json", "selection.json", "selection.md", "selection.png"}
    table = json.loads((artifacts / "ranking.json").read_text())
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["model"] == "tiny/small" and row["p_best"] == pytest.approx(1.0)
    assert row["interval_low"] < row["predicted_loss"] < row["interval_high"]
    assert json.loads((artifacts / "selection.json").read_text())["best"] == "tiny/small"


def test_each_run_logs_to_its_own_wandb_run_in_one_group_with_the_selection(models, data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    training = {**TRAINING, "report_to": ["wandb"]}
    result = LensLLMSelector([{"model": models["small"], "name": "tiny/small"}], *data, output_dir=tmp_path / "sel",
                             **{**COMMON, "training_args": training}).run()
    # One offline run per Trainer run (W&B would otherwise log them all into the first), each
    # holding its own name and the selection's group (W&B's offline log stores them as text),
    # and one more, the selection's.
    folders = list((tmp_path / "wandb").glob("offline-run-*"))
    logs = {run: next(run.glob("run-*.wandb")).read_bytes() for run in folders}
    (selection,) = [run for run, log in logs.items() if b"selection" in log and b"tiny/small-D" not in log]
    names = sorted(f"tiny/small-D{d}" for d in (0, 8, 16, 32))
    assert sorted(next(n for n in names if n.encode() in log) for run, log in logs.items() if run != selection) == names
    assert all(b"lensllm-sel" in log for log in logs.values())
    assert "WANDB_RUN_GROUP" not in os.environ
    # Its table (intervals, P(best)), plot and fits are files of that run.
    (table,) = (selection / "files" / "media" / "table").glob("ranking_*.table.json")
    table = json.loads(table.read_text())
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["model"] == "tiny/small" and row["p_best"] == pytest.approx(1.0)
    assert row["interval_low"] < row["predicted_loss"] < row["interval_high"]
    assert list((selection / "files" / "media" / "images").glob("curves_*.png"))
    assert json.loads((selection / "files" / "selection.json").read_text())["best"] == result.best == "tiny/small"


@pytest.fixture
def trackio_module(tmp_path, monkeypatch):
    """trackio with its store in ``tmp_path/trackio``, kept off the network (no Space, no server, no Hub token:
    with one, trackio.init asks the Hub whose it is). trackio reads ``TRACKIO_DIR`` once, at import, so it
    is imported afresh here, and forgotten afterwards."""
    from huggingface_hub import constants

    def forget_trackio():
        for name in [n for n in sys.modules if n.split(".")[0] == "trackio"]:
            monkeypatch.delitem(sys.modules, name)

    forget_trackio()
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    for key in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # any request to the Hub would raise
    yield pytest.importorskip("trackio")
    forget_trackio()


def test_each_run_logs_to_its_own_trackio_run_in_one_group_with_the_selection(models, data, tmp_path,
                                                                               trackio_module):
    from trackio.cas import blob_path
    from trackio.sqlite_storage import SQLiteStorage

    training = {**TRAINING, "report_to": ["trackio"], "project": "lensllm-test", "logging_strategy": "steps",
                "logging_steps": 1}
    result = LensLLMSelector([{"model": models["small"], "name": "tiny/small"}], *data, output_dir=tmp_path / "sel",
                             **{**COMMON, "training_args": training}).run()
    store = tmp_path / "trackio"
    assert (store / "lensllm-test.db").is_file()
    # One run per Trainer run, named <candidate>-D<size>, and the selection's, all in its group.
    runs = {run.name: run for run in trackio_module.Api().runs("lensllm-test")}
    assert sorted(runs) == ["lensllm-sel"] + [f"tiny/small-D{d}" for d in (0, 16, 32, 8)]
    assert {run.config["_Group"] for run in runs.values()} == {"lensllm-sel"}
    assert "eval/loss" in SQLiteStorage.get_logs("lensllm-test", "tiny/small-D0")[-1]
    assert all("train/loss" in SQLiteStorage.get_logs("lensllm-test", f"tiny/small-D{d}")[0] for d in (8, 16, 32))
    assert trackio_module.context_vars.current_run.get() is None  # every run finished
    # The selection's run: the ranking (intervals, P(best)), the plot, the pick, the cost; the fits its artifact.
    (log,) = SQLiteStorage.get_logs("lensllm-test", "lensllm-sel")
    row = log["ranking"]["_value"][0]
    assert row["model"] == "tiny/small" and row["p_best"] == pytest.approx(1.0)
    assert row["interval_low"] < row["predicted_loss"] < row["interval_high"]
    assert (store / "media" / log["curves"]["file_path"]).read_bytes().startswith(b"\x89PNG")
    assert "tiny/small" in log["pick"]["_value"]
    assert log["flops"] == pytest.approx(result.flops, rel=1e-6) and log["fraction_saved"] == result.fraction_saved
    (artifact,) = SQLiteStorage.get_run_artifacts("lensllm-test", "lensllm-sel", runs["lensllm-sel"].id)["output"]
    assert (artifact["name"], artifact["type"]) == ("lensllm-sel", "selection")
    (entry,) = SQLiteStorage.get_artifact_manifest("lensllm-test", "lensllm-sel", None)["manifest"]
    fits = json.loads(blob_path("lensllm-test", entry["digest"]).read_text())
    assert entry["path"] == "selection.json" and fits["best"] == result.best == "tiny/small"


def _tf_events(path: Path):
    """The events of a TensorBoard event file (TFRecord frames: length, its CRC, the Event proto, its CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data = path.read_bytes()
    at = 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = Event()
        event.ParseFromString(data[at + 12:at + 12 + length])
        yield event
        at += 12 + length + 4


def _has_torch_tensorboard() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["grid", "adaptive", "halving"])
def test_the_level_reaches_a_ray_selection(ray_cluster, models, data, tmp_path_factory, strategy):
    """``level`` under the Ray backend: the ranking, its intervals and selection.json are at that level."""
    store = tmp_path_factory.getbasetemp() / "ray-level-store"  # shared: only the first selection trains
    out = tmp_path_factory.mktemp("ray-level")
    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}]
    result = LensLLMSelector(candidates, *data, output_dir=out, store=str(store), backend="ray", level=0.5,
                             strategy=strategy, **COMMON).run()
    assert result.level == 0.5 and len(result.fits.ranked) == 2
    for c in result.fits.ranked:
        low, high = c.fit.predict_interval([result.target_size], 0.5)
        assert c.interval == [float(low[0]), float(high[0])]
    assert json.loads(result.to_json(out / "selection.json").read_text())["level"] == 0.5
