"""Selector figures, run by hand: demo wall time, and the selector's own time per run beyond training.

    python benchmarks/bench_selector.py                 # demo wall time (fresh, then resumed) + overhead
    python benchmarks/bench_selector.py --truth         # also fine-tune the demo models on the whole target
                                                        # and compare with the predicted ranking (slow)

Overhead per run = (wall time of ``selector.train`` for N runs - time inside ``Trainer.train``
and ``Trainer.evaluate``) / N: model and tokenizer loading, the Trainer's set-up, preprocessing,
records, freeing memory. The demo is timed as a subprocess (``lensllm demo``), imports included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def demo_wall_time(folder: Path) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "lensllm_hf.cli", "demo", "--output-dir", str(folder), "--no-progress"]
    out = {}
    for label in ("fresh", "resumed"):
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        out[label] = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"lensllm demo failed:\n{done.stderr[-3000:]}")
    out["best"] = json.loads((folder / "selection.json").read_text())["best"]
    return out


def overhead_per_run(folder: Path, runs: int = 20) -> dict[str, float]:
    import torch
    import transformers

    from lensllm_hf import LensLLMSelector
    from lensllm_hf.demo import build_models, task_dataset

    torch.set_num_threads(1)
    inside = {"train": 0.0, "evaluate": 0.0}
    for name in ("train", "evaluate"):
        original = getattr(transformers.Trainer, name)

        def timed(self, *args, __original=original, __name=name, **kwargs):
            t0 = time.perf_counter()
            try:
                return __original(self, *args, **kwargs)
            finally:
                inside[__name] += time.perf_counter() - t0

        setattr(transformers.Trainer, name, timed)
    model = build_models(folder / "models", pretrain=False, log=lambda _: None)["tiny-llama"]
    sizes = list(range(16, 16 + runs))
    selector = LensLLMSelector([{"model": model, "name": "tiny-llama"}], task_dataset(200), task_dataset(64, seed=2),
                               target_size=10_000, sizes=sizes, zero_shot=False, max_length=48, progress=False,
                               output_dir=folder / "sel", training_args={"per_device_train_batch_size": 16,
                                                                         "num_train_epochs": 1})
    selector.train(sizes=[sizes[0]])  # warm-up: first imports and allocations
    inside.update(train=0.0, evaluate=0.0)
    t0 = time.perf_counter()
    selector.train(sizes=sizes[1:])
    wall = time.perf_counter() - t0
    n = len(sizes) - 1
    # Trainer.train calls evaluate once at the end (the callback asks for it): count it once.
    trainer_time = inside["train"]
    return {"runs": n, "wall_per_run_s": wall / n, "trainer_per_run_s": trainer_time / n,
            "overhead_per_run_s": (wall - trainer_time) / n,
            "skip_per_run_s": _skip_time(selector, sizes[1:])}


def _skip_time(selector, sizes) -> float:
    t0 = time.perf_counter()
    selector.train(sizes=sizes)  # everything recorded: only the store is read
    return (time.perf_counter() - t0) / len(sizes)


def truth(folder: Path) -> list[dict]:
    """Fine-tune every demo model on the whole target set with the demo's arguments; compare."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer
    from transformers import TrainingArguments

    from lensllm_hf.selector.config import SelectConfig
    from lensllm_hf.demo import DEMO_MODELS, DEMO_SELECTION, MAX_LENGTH

    torch.set_num_threads(1)
    config = SelectConfig.from_yaml(folder / "config.yaml")
    train, test = config.dataset.load()
    predicted = {c["model"]: c for c in json.loads((folder / "selection.json").read_text())["ranking"]}
    rows = []
    for spec in DEMO_MODELS:
        path = folder / "models" / spec.name
        tokenizer = AutoTokenizer.from_pretrained(path)
        encode = lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH)  # noqa: E731
        tr = train.shuffle(seed=0).map(encode, batched=True, remove_columns=["text"])
        te = test.map(encode, batched=True, remove_columns=["text"])
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to="none", save_strategy="no",
                                 disable_tqdm=True, seed=0, dataloader_pin_memory=False,
                                 **DEMO_SELECTION["training_args"])
        trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=tr,
                          eval_dataset=te, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
        t0 = time.perf_counter()
        trainer.train()
        loss = trainer.evaluate()["eval_loss"]
        p = predicted[spec.name]
        rows.append({"model": spec.name, "true_loss": loss, "predicted": p["predicted_loss"],
                     "interval": p["interval"], "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--truth", action="store_true", help="also fine-tune on the whole target (slow)")
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-selector-"))
    report = {"cpu_count": os.cpu_count()}
    if not args.skip_demo:
        report["demo"] = demo_wall_time(folder / "demo")
        print("demo:", json.dumps(report["demo"]), flush=True)
    report["overhead"] = overhead_per_run(folder / "overhead")
    print("overhead:", json.dumps(report["overhead"]), flush=True)
    if args.truth:
        rows = truth(folder / "demo")
        order_true = [r["model"] for r in sorted(rows, key=lambda r: r["true_loss"])]
        order_pred = [r["model"] for r in sorted(rows, key=lambda r: r["predicted"])]
        report["truth"] = {"rows": rows, "true_order": order_true, "predicted_order": order_pred,
                           "inside_interval": sum(r["interval"][0] <= r["true_loss"] <= r["interval"][1]
                                                  for r in rows)}
        print("truth:", json.dumps(report["truth"], indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
