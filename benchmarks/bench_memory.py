"""Estimated peak training memory against the peak RSS of real CPU runs, run by hand.

    python benchmarks/bench_memory.py [--only NAME ...]

Each case is a model built from a config (random weights, nothing downloaded), trained for two
optimizer steps with ``Trainer`` on CPU, one thread, in a fresh process, on rows that are all as
long as the case's sequence length. Measured: the process's peak resident memory while it builds
and trains the model, minus its resident memory just before (imports and data already in), sampled
every 2 ms and checked against ``ru_maxrss``. Estimated: :class:`lensllm_hf.selector.memory.CandidateMemory`
from the same config and ``TrainingArguments`` (no NTK probe, as the plain Trainer runs none).
Beside it, where it applies (full fine-tuning, no adapter, no 4-bit), ``accelerate
estimate-memory``'s "Training using Adam" figure for the same model (its functions on the same
meta model: weights, gradients and Adam states, batch size 1, no activations). The demo's four
models are in the list: at their size the framework's own noise is as large as the estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

LLAMA = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4, "num_attention_heads": 8,
         "num_key_value_heads": 4}
#: name -> (family, config keywords, model_kwargs, LoRA target modules or None, training-argument keywords,
#: sequence length)
CASES: dict[str, tuple] = {
    "gpt2-6x384": ("gpt2", {"n_embd": 384, "n_layer": 6, "n_head": 6, "vocab_size": 8192}, {}, None, {}, 256),
    "gpt2-6x384-nodrop": ("gpt2", {"n_embd": 384, "n_layer": 6, "n_head": 6, "vocab_size": 8192, "attn_pdrop": 0.0,
                                   "resid_pdrop": 0.0, "embd_pdrop": 0.0}, {}, None, {}, 256),
    "llama-4x512": ("llama", {**LLAMA, "vocab_size": 16384}, {}, None, {}, 256),
    "llama-4x512-lora": ("llama", {**LLAMA, "vocab_size": 16384}, {}, ["q_proj", "v_proj"], {}, 256),
    "llama-4x512-checkpointing": ("llama", {**LLAMA, "vocab_size": 16384}, {}, None,
                                  {"activation_checkpointing": True}, 256),
    "llama-4x512-bf16": ("llama", {**LLAMA, "vocab_size": 16384}, {"dtype": "bfloat16"}, None, {}, 256),
    "opt-4x512": ("opt", {"hidden_size": 512, "ffn_dim": 2048, "num_hidden_layers": 4, "num_attention_heads": 8,
                          "word_embed_proj_dim": 512, "vocab_size": 16384}, {}, None, {}, 256),
    "t5-4x256": ("t5", {"d_model": 256, "d_ff": 1024, "num_layers": 4, "num_heads": 4, "d_kv": 64,
                        "vocab_size": 16384}, {}, None, {}, 256),
}


def demo_cases() -> dict[str, tuple]:
    """The demo's four models, with the demo's batch and length."""
    sys.path.insert(0, str(ROOT / "src"))
    from lensllm_hf.demo import DEMO_MODELS, DEMO_SELECTION, MAX_LENGTH, build_tokenizer

    vocab = len(build_tokenizer())
    batch = DEMO_SELECTION["training_args"]["per_device_train_batch_size"]
    return {spec.name: (spec.family, {**spec.config, "vocab_size": vocab, "max_position_embeddings": 64,
                                      "n_positions": 64, "tie_word_embeddings": True, "pad_token_id": 0,
                                      "bos_token_id": 2, "eos_token_id": 2}, {}, None,
                        {"per_device_train_batch_size": batch}, MAX_LENGTH) for spec in DEMO_MODELS}


def child(name: str) -> dict:
    """Train one case in this (fresh) process; its estimate and measured peak."""
    import resource
    import threading
    import time

    import psutil
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from lensllm_hf.selector.loading import model_load_kwargs
    from lensllm_hf.selector.memory import CandidateMemory

    torch.set_num_threads(1)
    family, config_kw, model_kwargs, lora, extra, seq_len = {**CASES, **demo_cases()}[name]
    config = AutoConfig.for_model(family, **config_kw)
    args = TrainingArguments(**{"output_dir": tempfile.mkdtemp(), "per_device_train_batch_size": 8, "max_steps": 2,
                                "report_to": "none", "save_strategy": "no", "logging_strategy": "no",
                                "disable_tqdm": True, "dataloader_pin_memory": False, "use_cpu": True, **extra})
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=8, lora_alpha=16, target_modules=lora,
                                 task_type="SEQ_2_SEQ_LM" if config.is_encoder_decoder else "CAUSAL_LM")
    estimate = CandidateMemory(config, args, model_kwargs=model_kwargs, peft_config=peft_config).estimate(seq_len)
    accelerate = accelerate_figure(config) if not (lora or model_kwargs) else None

    import datasets

    generator = torch.Generator().manual_seed(0)
    rows = args.per_device_train_batch_size * 2
    ids = torch.randint(4, config.vocab_size, (rows, seq_len), generator=generator).tolist()
    data = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids} if not config.is_encoder_decoder else
                                      {"input_ids": ids, "labels": ids, "decoder_input_ids": ids})
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    torch.manual_seed(0)
    model = auto.from_config(config, **{k: v for k, v in model_load_kwargs(model_kwargs).items() if k == "dtype"})
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    done.set()
    sampler.join()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    measured = max(peak[0], max_rss) - before
    return {"case": name, "seq_len": seq_len, "batch": args.per_device_train_batch_size,
            "estimate_mib": {k: round(v / MIB, 2) for k, v in estimate.to_dict().items()},
            "measured_peak_rss_mib": round(measured / MIB, 2), "ratio": round(estimate.peak / measured, 3),
            "accelerate_training_mib": None if accelerate is None else round(accelerate / MIB, 2)}


def accelerate_figure(config) -> float:
    """accelerate estimate-memory's "Training using Adam" (float32) for this config's model, without the Hub."""
    import torch
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config, dtype=torch.float32)
    total, _ = calculate_maximum_sizes(model)
    return float(max(estimate_training_usage(total, "float32").values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    names = args.only or [*CASES, *demo_cases()]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    rows = []
    for name in names:
        done = subprocess.run([sys.executable, __file__, "--child", name], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(json.dumps({"case": name, "error": done.stderr[-1500:]}), flush=True)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'case':<28}{'estimate MiB':>14}{'measured MiB':>14}{'ratio':>8}{'accelerate MiB':>16}")
    for r in rows:
        acc = "" if r["accelerate_training_mib"] is None else f"{r['accelerate_training_mib']:.1f}"
        print(f"{r['case']:<28}{r['estimate_mib']['peak']:>14.1f}{r['measured_peak_rss_mib']:>14.1f}"
              f"{r['ratio']:>8.2f}{acc:>16}")


if __name__ == "__main__":
    main()
