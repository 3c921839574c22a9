"""Cost of LensLLMCallback and of its NTK probe, and stream mode against nested-subset runs.

    python benchmarks/bench_callback.py [--json benchmarks/bench_callback.json] [--threads 2]
                                        [--tiny-seconds 30] [--big-train-size 160] [--skip-big]

Targets (issue 3), CPU only, about 6 minutes on 2 cores:

1. overhead of the callback without probe and without extra evaluations: under 1 % of the wall
   time of a tiny GPT-2 run of at least 30 s (measured two ways: time spent inside the
   callback's hooks, and the time per step against runs without the callback);
2. the NTK probe (k = 16): its time as a share of that run and its peak extra memory (RSS);
3. the same probe on a 124M-parameter GPT-2 (GPT-2 small config, random weights) on CPU, in
   a 12-step subset run, with the default 2 GiB probe budget and with 4 GiB;
4. stream mode (one run, ``eval_at_examples``) against separate runs on nested subsets of the
   tiny model: the two curves side by side, for a linear-decay schedule, a constant one, and
   three epochs.

Models are built from configs and data is synthetic (``tests/tiny_models.py``): nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback  # noqa: E402
from transformers import PrinterCallback, TrainingArguments  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from lensllm_hf import LensLLMCallback  # noqa: E402
from lensllm_hf.records import load_table, read_record  # noqa: E402
from tiny_models import lm_collator, make_text_dataset, make_tiny_gpt2, make_tokenizer, tokenize_lm  # noqa: E402

EVENTS = ("on_init_end", "on_train_begin", "on_optimizer_step", "on_step_end", "on_epoch_end", "on_evaluate",
          "on_log", "on_train_end")


class TimedLensLLMCallback(LensLLMCallback):
    """The callback with a stopwatch around every event it handles."""

    hook_seconds = 0.0

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name in EVENTS:
            def timed(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return attr(*args, **kwargs)
                finally:
                    TimedLensLLMCallback.hook_seconds += time.perf_counter() - start
            return timed
        return attr


class RSSWindow(TrainerCallback):
    """Marks on_train_begin: placed before and after LensLLMCallback, it brackets the probe."""

    def __init__(self, marks: list, label: str):
        self.marks, self.label = marks, label

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks.append((self.label, time.perf_counter(), _rss()))


class Sampler:
    """Samples the process RSS every few milliseconds in a thread."""

    def __init__(self, every: float = 0.005):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), _rss()))
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) if inside else 0


def _rss() -> int:
    return psutil.Process().memory_info().rss


def trainer_for(model, tok, train, ev, out, callbacks=(), **kwargs) -> Trainer:
    args = dict(per_device_train_batch_size=8, learning_rate=3e-3, save_strategy="no", use_cpu=True,
                disable_tqdm=True, logging_strategy="no", seed=0, report_to="none")
    args.update(kwargs)
    trainer = Trainer(model=model, args=TrainingArguments(str(out), **args), train_dataset=train, eval_dataset=ev,
                      data_collator=lm_collator(tok), callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # keep the output to the tables
    return trainer


def probe_run(model, tok, train, ev, out, steps: int) -> dict:
    """A short run with the probe on; returns the probe's time and peak extra memory."""
    marks: list = []
    with Sampler() as sampler:
        trainer = trainer_for(model, tok, train, ev, out, max_steps=steps, callbacks=[RSSWindow(marks, "start")])
        # Bound to its Trainer, the callback probes in on_train_begin, between the two marks.
        LensLLMCallback(probe_examples=16, trainer=trainer)
        trainer.add_callback(RSSWindow(marks, "end"))
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    (_, t0, rss0), (_, t1, _) = marks
    rec = read_record(Path(out) / "lensllm_record.json")
    return {"probe_seconds": rec.ntk["seconds"], "probe_window_seconds": t1 - t0,
            "probe_peak_extra_mb": (sampler.peak_between(t0, t1) - rss0) / 2**20,
            "run_seconds": wall, "steps": steps, "seconds_per_step": (wall - (t1 - t0)) / steps,
            "n_params": rec.ntk["n_params"], "projection_dim": rec.ntk["projection_dim"],
            "method": rec.ntk["method"], "F": rec.ntk["F"]}


class StopAfter(TrainerCallback):
    """Stops training after ``seconds`` of wall time and times the steps (first in the callback list)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin, self.cpu_begin = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.end, self.cpu_end, self.steps = time.perf_counter(), time.process_time(), state.global_step
        if self.end - self.begin >= self.seconds:
            # End with an evaluation, as a real run does, so LensLLMCallback adds none of its own.
            control.should_training_stop = control.should_evaluate = True


def overhead(tok, tmp: Path, target_seconds: float) -> dict:
    """Callback without probe or extra evaluations, against no callback, on >= target_seconds runs.

    One thread; each run trains for ``target_seconds`` of wall time and is timed from train begin
    (the callback's set-up included) to its last step, in steps per second of wall and of process
    CPU time (less sensitive to other work on a shared machine). Runs go without / with / with /
    without, so a drift in machine load cancels.
    """
    path = make_tiny_gpt2(tmp / "tiny")
    train = tokenize_lm(make_text_dataset(512, seed=1), tok)
    ev = tokenize_lm(make_text_dataset(64, seed=2), tok)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(seconds, callbacks, out):
        clock = StopAfter(seconds)
        trainer = trainer_for(AutoModelForCausalLM.from_pretrained(path), tok, train, ev, tmp / out,
                              callbacks=[clock, *callbacks], max_steps=10**6, logging_strategy="steps",
                              logging_steps=50)
        trainer.train()
        return {"wall_s": clock.end - clock.begin, "cpu_s": clock.cpu_end - clock.cpu_begin, "steps": clock.steps}

    run(3, [], "warm-up")
    TimedLensLLMCallback.hook_seconds = 0.0
    runs = {"without": [], "with": []}
    for kind in ("without", "with", "with", "without"):
        callbacks = [TimedLensLLMCallback(ntk_probe=False)] if kind == "with" else []
        runs[kind].append(run(target_seconds, callbacks, kind))
    torch.set_num_threads(threads)

    def per_step(kind, clock):
        return sum(r[clock] for r in runs[kind]) / sum(r["steps"] for r in runs[kind])

    wall_with = statistics.fmean(r["wall_s"] for r in runs["with"])
    hook = TimedLensLLMCallback.hook_seconds / 2  # per run
    result = {
        "runs": runs,
        "min_run_wall_s": min(r["wall_s"] for v in runs.values() for r in v),
        "ms_per_step_without": 1000 * per_step("without", "wall_s"),
        "ms_per_step_with": 1000 * per_step("with", "wall_s"),
        "wall_difference_pct": 100 * (per_step("with", "wall_s") / per_step("without", "wall_s") - 1),
        "cpu_difference_pct": 100 * (per_step("with", "cpu_s") / per_step("without", "cpu_s") - 1),
        "hook_seconds": hook,
        "hook_share_pct": 100 * hook / wall_with,
        "wall_with_s": wall_with,
    }
    probe = probe_run(AutoModelForCausalLM.from_pretrained(path), tok, train, ev, tmp / "probe", steps=5)
    probe["share_of_run_pct"] = 100 * probe["probe_seconds"] / wall_with
    result["probe"] = probe
    return result


def big_model(tok, tmp: Path, train_size: int) -> dict:
    """The probe on GPT-2 small (124M parameters, random weights) on CPU, in a subset run.

    The run fine-tunes on ``train_size`` examples (batch 8, one epoch) with the default probe
    budget (2 GiB: gradients sketched to 8192 numbers, one example per vmap call); the probe
    alone is then timed again with a 4 GiB budget (two examples per vmap call).
    """
    from lensllm_hf.callbacks.callback import _probe_batch
    from lensllm_hf.callbacks.ntk import empirical_ntk

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(pad_token_id=0))
    n = sum(p.numel() for p in model.parameters())
    train = tokenize_lm(make_text_dataset(train_size, seed=1), tok)
    ev = tokenize_lm(make_text_dataset(16, seed=2), tok)
    steps = train_size // 8
    result = probe_run(model, tok, train, ev, tmp / "big", steps=steps)
    result["model_parameters"] = n
    result["train_seconds_without_probe"] = result["run_seconds"] - result["probe_window_seconds"]
    result["share_of_run_pct"] = 100 * result["probe_seconds"] / result["train_seconds_without_probe"]
    result["probe_in_steps"] = result["probe_seconds"] / result["seconds_per_step"]

    trainer = trainer_for(model, tok, train, ev, tmp / "big2")
    batch = _probe_batch(trainer, ev, 16)
    with Sampler() as sampler:
        start, rss0 = time.perf_counter(), _rss()
        probe = empirical_ntk(model, batch, max_memory_mb=4096)
        end = time.perf_counter()
    result["budget_4096"] = {"probe_seconds": probe.seconds, "probe_in_steps": probe.seconds / result["seconds_per_step"],
                             "probe_peak_extra_mb": (sampler.peak_between(start, end) - rss0) / 2**20,
                             "share_of_run_pct": 100 * probe.seconds / result["train_seconds_without_probe"]}
    return result


def stream_vs_nested(tok, tmp: Path) -> dict:
    """One stream-mode run against separate runs on nested subsets, per schedule."""
    path = make_tiny_gpt2(tmp / "tiny-stream")
    pool = tokenize_lm(make_text_dataset(1600, seed=11), tok)
    ev = tokenize_lm(make_text_dataset(200, seed=12), tok)
    sizes = [200, 400, 800, 1600]
    settings = {"linear, 1 epoch": dict(lr_scheduler_type="linear", num_train_epochs=1),
                "constant, 1 epoch": dict(lr_scheduler_type="constant", num_train_epochs=1),
                "linear, 3 epochs": dict(lr_scheduler_type="linear", num_train_epochs=3)}
    out = {}
    for name, kwargs in settings.items():
        store = tmp / f"store-{name.replace(' ', '').replace(',', '-')}"
        for size in sizes:
            trainer_for(AutoModelForCausalLM.from_pretrained(path), tok, pool.select(range(size)), ev,
                        tmp / "nested", per_device_train_batch_size=16,
                        callbacks=[LensLLMCallback(store=store, model_name="nested", ntk_probe=False,
                                                   eval_on_start=size == sizes[0])], **kwargs).train()
        trainer_for(AutoModelForCausalLM.from_pretrained(path), tok, pool, ev, tmp / "stream",
                    per_device_train_batch_size=16,
                    callbacks=[LensLLMCallback(store=store, model_name="stream", ntk_probe=False,
                                               eval_at_examples=sizes[:-1])], **kwargs).train()
        table = load_table(store)
        rows = {m: dict(zip(table.sizes.tolist(), table.losses[i].tolist())) for i, m in enumerate(table.models)}
        gaps = [100 * (rows["stream"][s] / rows["nested"][s] - 1) for s in sizes]
        out[name] = {"sizes": [0, *sizes], "nested": [rows["nested"][s] for s in [0, *sizes]],
                     "stream": [rows["stream"][s] for s in [0, *sizes]], "gap_pct": gaps,
                     "mean_abs_gap_pct": statistics.fmean(abs(g) for g in gaps)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "bench_callback.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny-seconds", type=float, default=30.0)
    parser.add_argument("--big-train-size", type=int, default=96, help="examples of the 124M run (batch 8)")
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()
    tok = make_tokenizer()
    started = time.perf_counter()
    results: dict = {"threads": args.threads, "device": "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["overhead"] = ov = overhead(tok, tmp, args.tiny_seconds)
        if not args.skip_big:
            results["big"] = big_model(tok, tmp, args.big_train_size)
        results["stream_vs_nested"] = sv = stream_vs_nested(tok, tmp)
    results["bench_seconds"] = time.perf_counter() - started

    print("\n== Callback overhead, tiny GPT-2, 1 thread (no probe, no extra evaluation; 2 runs each, "
          f"shortest {ov['min_run_wall_s']:.1f} s) ==")
    print(f"  time per step without callback  {ov['ms_per_step_without']:7.3f} ms")
    print(f"  time per step with callback     {ov['ms_per_step_with']:7.3f} ms")
    print(f"  difference                      wall {ov['wall_difference_pct']:+.2f} %, process CPU time "
          f"{ov['cpu_difference_pct']:+.2f} % (run-to-run noise included)")
    print(f"  time inside its hooks           {ov['hook_seconds']:7.3f} s per run = {ov['hook_share_pct']:.3f} % "
          "of the run")
    rows = [("tiny GPT-2", ov["probe"], ov["probe"]["share_of_run_pct"])]
    if "big" in results:
        big = results["big"]
        rows.append(("GPT-2 small, 2 GiB", big, big["share_of_run_pct"]))
        rows.append(("GPT-2 small, 4 GiB", {**big, **big["budget_4096"]}, big["budget_4096"]["share_of_run_pct"]))
    print(f"\n== NTK probe, k = 16 ({args.threads} threads) ==")
    print(f"  {'model, budget':20} {'params':>11} {'probe s':>8} {'share %':>8} {'~steps':>7} {'peak extra MB':>14} "
          f"{'sketch':>7} {'method':>7}")
    for name, p, share in rows:
        steps = p["probe_seconds"] / p["seconds_per_step"]
        print(f"  {name:20} {p['n_params']:11,d} {p['probe_seconds']:8.2f} {share:8.2f} {steps:7.1f} "
              f"{p['probe_peak_extra_mb']:14.0f} {str(p['projection_dim'] or 'exact'):>7} {p['method']:>7}")
    if "big" in results:
        print(f"  share %: of the tiny overhead run above; of a {results['big']['steps']}-step run (batch 8, "
              f"{results['big']['seconds_per_step']:.2f} s/step) for GPT-2 small. ~steps: probe time in training steps")
    print("\n== Stream mode vs separate runs on nested subsets (tiny GPT-2, eval loss) ==")
    for name, s in sv.items():
        print(f"  {name}:  mean |gap| {s['mean_abs_gap_pct']:.2f} %")
        print(f"    {'D':>6} {'nested':>8} {'stream':>8} {'gap %':>7}")
        for i, size in enumerate(s["sizes"]):
            nested, stream = s["nested"][i], s["stream"][i]
            gap = "" if i == 0 else f"{s['gap_pct'][i - 1]:+7.2f}"
            print(f"    {size:6d} {nested:8.4f} {stream:8.4f} {gap:>7}")
    print(f"\nwhole benchmark: {results['bench_seconds']:.0f} s; JSON: {args.json}")
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
