"""Peak training memory estimated from a config (no weights): its parts, accelerate's figure, plan --gpu."""

from __future__ import annotations

import json
import tempfile

import pytest
import yaml

torch = pytest.importorskip("torch")

from transformers import AutoConfig, TrainingArguments  # noqa: E402

from lensllm_hf.cli import main  # noqa: E402
from lensllm_hf.selector.memory import CandidateMemory, optimizer_bytes_per_parameter  # noqa: E402

from tiny_models import make_text_dataset, make_tiny_gpt2, make_tokenizer  # noqa: E402

LLAMA = {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 4096}


def _args(**extra) -> TrainingArguments:
    return TrainingArguments(**{"output_dir": tempfile.mkdtemp(), "per_device_train_batch_size": 8,
                                "report_to": "none", "use_cpu": True, **extra})


def _llama():
    return AutoConfig.for_model("llama", **LLAMA)


def test_full_float32_fine_tuning_is_accelerates_training_figure_plus_activations():
    """weights + gradients + AdamW states = accelerate estimate-memory's "Training using Adam" (float32)."""
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoModelForCausalLM

    config = _llama()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    total, _ = calculate_maximum_sizes(model)
    accelerate = max(estimate_training_usage(total, "float32").values())
    estimate = CandidateMemory(config, _args()).estimate(128)
    assert estimate.weights + estimate.gradients + estimate.optimizer == pytest.approx(accelerate, rel=1e-3)
    assert estimate.activations > 0 and estimate.peak > accelerate
    assert config.dtype in (None, torch.float32, "float32")  # the caller's config is left as it was


def test_dtype_lora_4bit_and_checkpointing_change_the_parts_they_should():
    from peft import LoraConfig

    config, args = _llama(), _args()
    full = CandidateMemory(config, args).estimate(128)
    half = CandidateMemory(config, args, model_kwargs={"dtype": "bfloat16"}).estimate(128)
    assert half.weights == pytest.approx(full.weights / 2, rel=0.01)
    assert half.optimizer == pytest.approx(full.optimizer / 2, rel=0.01)  # AdamW's moments follow the weights

    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    adapter = CandidateMemory(config, args, peft_config=lora).estimate(128)
    adapter_params = 4 * 8 * ((256 + 256) + (256 + 128))  # 4 layers of r=8 on q (256->256) and v (256->128)
    assert adapter.gradients == 4 * adapter_params and adapter.optimizer == 8 * adapter_params
    assert adapter.weights > full.weights  # the base stays, the adapter is added

    qlora = CandidateMemory(config, args, model_kwargs={"load_in_4bit": True}, peft_config=lora).estimate(128)
    linear = 4 * 256 * (256 + 128 + 128 + 256 + 3 * 704)  # the base layers bitsandbytes quantizes (not the head)
    # NF4 for those; float32 for the rest (PEFT's k-bit preparation) and the adapter.
    assert qlora.weights == pytest.approx(full.weights - linear * (4 - 0.5 - 4 / 64) + 4 * adapter_params, rel=1e-3)
    assert qlora.gradients == adapter.gradients
    assert qlora.activations < adapter.activations  # half precision, and PEFT turns checkpointing on

    checkpointed = CandidateMemory(config, _args(activation_checkpointing=True)).estimate(128)
    assert checkpointed.activations < 0.6 * full.activations  # 4 layers of activations down to 1 (the loss stays)
    assert CandidateMemory(config, _args(per_device_train_batch_size=16)).estimate(128).activations == \
        pytest.approx(2 * full.activations, rel=0.05)
    assert optimizer_bytes_per_parameter("adamw_torch_fused", 4) == 8
    assert optimizer_bytes_per_parameter("adamw_bnb_8bit", 4) == 2 and optimizer_bytes_per_parameter("sgd", 4) == 0


def test_the_trace_counts_what_a_real_cpu_step_saves_for_backward():
    """The meta-device trace and a real CPU forward save the same tensors (within a few %)."""
    from transformers import AutoModelForCausalLM

    from lensllm_hf.selector.memory import _saved_for_backward

    config = AutoConfig.for_model("llama", **{**LLAMA, "num_hidden_layers": 1})
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config).train()
    real = AutoModelForCausalLM.from_config(config).train()
    held = {id(p) for p in real.parameters()} | {id(b) for b in real.buffers()}
    saved = {}

    def pack(tensor):
        base = tensor._base if tensor._base is not None else tensor
        if id(base) not in held and id(tensor) not in held:
            saved.setdefault(id(base), base.numel() * base.element_size())
        return tensor

    ids = torch.randint(4, 4096, (4, 64))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        real(input_ids=ids, labels=ids)
    measured = sum(saved.values()) + 2 * max(saved.values())
    assert _saved_for_backward(meta, 4, 64, 0) == pytest.approx(measured, rel=0.05)


def test_plan_gpu_warns_which_runs_will_not_fit(tmp_path, capsys):
    """A 7B-sized config (config.json only, no weights) on an A100: its training runs are named, not its zero-shot
    evaluation (25 GiB of float32 weights) nor the tiny model's runs."""
    big = tmp_path / "models" / "big"
    big.mkdir(parents=True)
    AutoConfig.for_model("llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, vocab_size=32000).save_pretrained(big)
    make_tokenizer(big)
    make_tiny_gpt2(tmp_path / "models" / "small", n_layer=1, n_embd=16)
    (tmp_path / "data").mkdir()
    make_text_dataset(200, seed=0).to_json(tmp_path / "data" / "train.jsonl")
    make_text_dataset(32, seed=1).to_json(tmp_path / "data" / "eval.jsonl")
    config = tmp_path / "select.yaml"
    config.write_text(yaml.safe_dump({
        "candidates": ["models/big", "models/small"],
        "dataset": {"files": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"}},
        "target_size": 4000, "min_size": 8, "budget": 32, "max_length": 32,
        "training_args": {"per_device_train_batch_size": 4}}), encoding="utf-8")
    capsys.readouterr()
    plan = tmp_path / "plan.json"
    assert main(["plan", str(config), "--output-dir", str(tmp_path / "out"), "--json", str(plan), "--gpu", "A100"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("lensllm plan: warning:")]
    assert len(warning) == 1 and "3 run(s) will not fit in one A100's 80 GiB" in warning[0]
    assert "models/big (3 run(s) from D=8" in warning[0] and "models/small" not in warning[0]
    assert "peak memory per run up to" in err
    runs = json.loads(plan.read_text())["runs"]
    fits = {(r["model"], r["size"]): r["fits_gpu"] for r in runs}
    assert fits[("models/big", 8)] is False and fits[("models/big", 0)] is True
    assert all(fits[("models/small", s)] for s in (0, 8, 16, 32))
    big_run = next(r for r in runs if r["model"] == "models/big" and r["size"] == 32)["memory"]
    assert big_run["peak"] > 80 * 2**30 and set(big_run) == {"weights", "gradients", "optimizer", "activations",
                                                             "probe", "peak"}
