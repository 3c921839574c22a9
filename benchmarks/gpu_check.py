"""A selection on a GPU as a user would run one: three random-init ~0.5-1B models, bf16, one with LoRA.

    python benchmarks/gpu_check.py --json gpu_check.json      # on a CUDA machine (minutes)
    python benchmarks/gpu_check.py --tiny                     # the same on tiny configs, on CPU (seconds)

The candidates are built from configs, nothing is downloaded: a Qwen2-0.5B config (494M
parameters), a Llama config of 0.8B (TinyLlama's widths, 16 layers) with a LoRA adapter (r=16 on
the attention projections), and a GPT-NeoX config of Pythia-1B's shape. Each model folder holds
its config and the demo's word tokenizer only; a ``model_loader`` builds the weights at random
(seeded, bf16, on the GPU). The task is the demo's (numbers in words), several examples per row
so that rows are about 200 tokens long. The selection runs with the NTK probe on, one run at a
time, and for every run the check reports:

- its time (the selector's wall time for the run: load, set-up, train, evaluate, record) and the
  record's training time;
- its peak GPU memory (``torch.cuda.max_memory_allocated``, reset before the run; on CPU: None)
  against the estimate :func:`memory_estimate` finds in the selection's cost estimate (None on a
  checkout whose cost estimate has no memory model yet);
- the probe's own time (the record's ``ntk.seconds``) as a share of the run's.

And per model, on its largest run: the callback's overhead, as the time of ``Trainer.train``
with the callback (probe off) against the same Trainer without it (the callback's final
evaluation, which gives the run its data point, included).

``--tiny`` builds the same three families at toy widths on the CPU: it checks that the script
works end to end (tests/test_gpu_check.py runs it in the default suite), not the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: (name, model_type, config keywords, LoRA config or None): the GPU sizes.
FULL = [
    ("qwen2-0.5b", "qwen2", {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151_936,
                             "tie_word_embeddings": True}, None),
    ("llama-0.8b-lora", "llama", {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16,
                                  "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32_000},
     {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}),
    ("pythia-1b", "gpt_neox", {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                               "num_attention_heads": 8, "vocab_size": 50_304}, None),
]
#: The same families at toy widths, for --tiny (CPU, seconds).
TINY = [
    ("qwen2-tiny", "qwen2", {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}, None),
    ("llama-tiny-lora", "llama", {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "num_key_value_heads": 2},
     {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    ("pythia-tiny", "gpt_neox", {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                 "num_attention_heads": 4}, None),
]


def build_folders(root: Path, specs: list, *, tiny: bool) -> list[dict[str, Any]]:
    """One folder per model (its config and the demo's tokenizer, no weights); the selection's candidates."""
    from transformers import AutoConfig

    from lensllm_hf.demo import build_tokenizer

    tokenizer = build_tokenizer()
    candidates = []
    for name, family, kwargs, lora in specs:
        folder = root / name
        extra = {"vocab_size": len(tokenizer)} if tiny else {}
        config = AutoConfig.for_model(family, max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
                                      eos_token_id=2, **{**kwargs, **extra})
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        candidates.append({"model": str(folder), "name": name, "peft": lora, "model_kwargs": {"dtype": "bfloat16"}})
    return candidates


def random_init(candidate):
    """``model_loader``: the candidate's config with seeded random weights, bf16, built on the GPU when there is one."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(candidate.model)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model, AutoTokenizer.from_pretrained(candidate.model)


def task_rows(n: int, per_row: int, seed: int):
    """The demo's task, ``per_row`` examples joined per row (longer rows: activations that count)."""
    import datasets

    from lensllm_hf.demo import task_texts

    texts = task_texts(n * per_row, seed)
    return datasets.Dataset.from_dict({"text": [" ".join(texts[i:i + per_row]) for i in range(0, len(texts), per_row)]})


def memory_estimate(run_cost: Any) -> float | None:
    """The selection's estimate of a run's peak memory in bytes, or None.

    The hook for the memory model of the cost estimate: a ``RunCost`` with a ``memory`` part
    (``memory.peak`` in bytes) is read; a checkout whose cost estimate has no memory model
    gives None, and the report says so.
    """
    memory = getattr(run_cost, "memory", None)
    return float(memory.peak) if memory is not None else None


def check(output_dir: Path, *, tiny: bool) -> dict[str, Any]:
    import torch

    from lensllm_hf import LensLLMSelector
    from lensllm_hf.records import read_record

    cuda = torch.cuda.is_available()
    if not tiny and not cuda:
        raise SystemExit("gpu_check: no CUDA device here; run it on a GPU machine, or with --tiny on CPU")
    candidates = build_folders(output_dir / "models", TINY if tiny else FULL, tiny=tiny)
    sizes = [8, 16] if tiny else [64, 128, 256]  # with the zero-shot point: 3 points (tiny) and 4
    training = {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "num_train_epochs": 1,
                "learning_rate": 3e-4 if not tiny else 2e-3, "bf16": True, "warmup_steps": 0,
                **({} if cuda else {"use_cpu": True})}  # bf16 on the CPU: the Trainer asks for use_cpu
    common = dict(target_size=10 * sizes[-1], sizes=sizes, max_length=64 if tiny else 256, progress=False,
                  model_loader=random_init, training_args=training, probe_examples=4 if tiny else 16)
    train, test = task_rows(sizes[-1], 2 if tiny else 20, seed=1), task_rows(16 if tiny else 64, 2 if tiny else 20,
                                                                              seed=2)
    selector = LensLLMSelector(candidates, train, test, output_dir=output_dir / "selection", **common)
    estimates = {(r.model, r.size): memory_estimate(r) for r in selector.estimate_cost().runs}
    runs = []
    for planned in selector.plan():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        (record,) = selector.train(only=planned.candidate, sizes=planned.size)
        wall = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() if cuda else None
        probe = (record.ntk or {}).get("seconds")
        estimate = estimates.get((planned.candidate, planned.size))
        runs.append({"model": planned.candidate, "size": planned.size, "status": record.status,
                     "wall_s": wall, "train_s": record.wall_time_s, "probe_s": probe,
                     "probe_share": probe / wall if probe else None, "peak_bytes": peak, "estimate_bytes": estimate,
                     "estimate_over_peak": estimate / peak if estimate and peak else None,
                     "parameters": record.model.get("num_parameters"),
                     "trainable_parameters": record.model.get("trainable_parameters")})
        print(json.dumps(runs[-1]), flush=True)
    result = selector.from_store()
    overhead = {name: callback_overhead(output_dir / "overhead", candidates, name, sizes[-1], train, test, common)
                for name in [c["name"] for c in candidates]}
    records = [read_record(p) for p in (output_dir / "selection" / "store").glob("*.json")]
    return {"device": torch.cuda.get_device_name() if cuda else "cpu", "tiny": tiny, "runs": runs,
            "callback_overhead": overhead, "ranking": result.ranking[["model", "predicted_loss", "interval_low",
                                                                       "interval_high", "p_best"]].to_dict("records"),
            "records": len(records), "best": result.best}


def callback_overhead(folder: Path, candidates: list, name: str, size: int, train, test, common) -> dict[str, float]:
    """Seconds of ``Trainer.train`` on the run (name, size) without the callback, and with it (probe off)."""
    from transformers.trainer_callback import PrinterCallback

    from lensllm_hf import LensLLMSelector
    from lensllm_hf.selector.runner import free_memory, quiet_logs

    selector = LensLLMSelector(candidates, train, test, output_dir=folder / name, ntk_probe=False, **common)
    runner = selector._prepare()["runner"]  # the Trainer exactly as the selection builds it
    key = runner.plan.key(name, size)
    seconds = {}
    for label in ("without", "with"):
        with tempfile.TemporaryDirectory() as work, quiet_logs(False):
            trainer, callback, _ = runner.trainer(key, work)
            trainer.remove_callback(PrinterCallback)  # as the selection's runs: no log lines
            if label == "without":
                trainer.remove_callback(callback)
            else:
                callback.bind(trainer)
            started = time.perf_counter()
            trainer.train()
            seconds[label] = time.perf_counter() - started
            del trainer
        free_memory()
    return {"without_s": seconds["without"], "with_s": seconds["with"],
            "overhead": seconds["with"] / seconds["without"] - 1.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy widths on the CPU: checks the script, not the GPU")
    parser.add_argument("--output-dir", type=Path, default=None, help="models and stores (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    folder = args.output_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    report = check(folder, tiny=args.tiny)
    text = json.dumps(report, indent=1, default=float)
    if args.json:
        args.json.write_text(text + "\n")
    print(text if args.json is None else f"gpu_check: report in {args.json}", file=sys.stdout)
    return report


if __name__ == "__main__":
    main()
