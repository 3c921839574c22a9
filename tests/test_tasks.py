"""Real fine-tuning tasks through ``lensllm select CONFIG`` alone: prompt/completion data with a causal and an
encoder-decoder candidate, conversations with the config's chat template, a task-metric ranking, the new
config keys' errors, and what a GPU user sets (dtype, bf16, gradient checkpointing, 4-bit), offline and tiny."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from lensllm_hf.cli import main  # noqa: E402
from lensllm_hf.records import Store, list_records, read_record  # noqa: E402
from lensllm_hf.selector import runner as runner_module  # noqa: E402
from lensllm_hf.selector.candidates import as_candidates  # noqa: E402
from lensllm_hf.selector.params import SelectionParams  # noqa: E402
from lensllm_hf.selector.plan import RunPlan  # noqa: E402
from lensllm_hf.selector.runner import Runner  # noqa: E402
from lensllm_hf.selector.scoring import Metric  # noqa: E402

from tiny_models import VOCAB_WORDS, make_tiny_gpt2, make_tiny_t5  # noqa: E402

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant {% endif %}")
TRAINING = {"per_device_train_batch_size": 8, "num_train_epochs": 1, "learning_rate": 1e-2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def qa_rows(n: int, seed: int) -> list[dict]:
    """Prompt -> one-word answer that follows a rule of the prompt's first word (learnable)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.randrange(len(VOCAB_WORDS)) for _ in range(3)]
        rows.append({"question": " ".join(VOCAB_WORDS[w] for w in words),
                     # A causal LM reads prompt + completion as one text: the completion starts with a space.
                     "answer": " " + VOCAB_WORDS[(words[0] + 1) % len(VOCAB_WORDS)]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Tiny models (by path) and JSONL data: prompt/completion and conversations."""
    root = tmp_path_factory.mktemp("tasks")
    make_tiny_gpt2(root / "models" / "gpt2", n_layer=1, n_embd=32)
    make_tiny_t5(root / "models" / "t5")
    for split, n, seed in (("train", 64, 0), ("eval", 16, 1)):
        rows = qa_rows(n, seed)
        write_jsonl(root / "data" / f"qa-{split}.jsonl", rows)
        write_jsonl(root / "data" / f"chat-{split}.jsonl",
                    [{"messages": [{"role": "user", "content": r["question"]},
                                   {"role": "assistant", "content": r["answer"].strip()}]} for r in rows])
    return root


def config(folder: Path, name: str, *, data: str = "qa", candidates=None, dataset=None, **extra) -> Path:
    columns = {"prompt_column": "question", "completion_column": "answer"} if data == "qa" else \
        {"messages_column": "messages"}
    text = {
        "candidates": candidates or ["models/gpt2", "models/t5"],
        "dataset": {"files": {"train": f"data/{data}-train.jsonl", "eval": f"data/{data}-eval.jsonl"},
                    **columns, **(dataset or {})},
        "target_size": 1000, "min_size": 8, "budget": 16, "max_length": 32, "training_args": TRAINING,
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(text, sort_keys=False), encoding="utf-8")
    return path


def select(path: Path, out: Path, *argv: str) -> int:
    return main(["select", str(path), "--output-dir", str(out), "--no-progress", *argv])


def test_prompt_completion_ranks_a_causal_and_an_encoder_decoder_candidate(folder, tmp_path, capsys):
    assert select(config(folder, "mixed"), tmp_path) == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "selection.json").read_text())
    assert {c["model"]: c["status"] for c in data["ranking"]} == {"models/gpt2": "complete", "models/t5": "complete"}
    recs = [read_record(p) for p in list_records(tmp_path / "store")]
    assert len(recs) == 6 and all(r.status == "complete" for r in recs)
    arch = {r.model["id"]: r.model["architecture"] for r in recs}
    assert arch == {"models/gpt2": "GPT2LMHeadModel", "models/t5": "T5ForConditionalGeneration"}
    # Both kinds of model are fitted on their per-token loss over the completions, which falls with data.
    for model in arch:
        losses = {r.train_size: r.final_eval_loss for r in recs if r.model["id"] == model}
        assert losses[16] < losses[0]
    assert_plan_estimates_what_the_runs_recorded(config(folder, "mixed"), tmp_path, recs)


def assert_plan_estimates_what_the_runs_recorded(path: Path, out: Path, recs) -> None:
    """`lensllm plan` tokenises task data as each candidate's Trainer does (TRL's SFT for a causal
    LM, the prompt for an encoder-decoder): its estimates land within 10 % of total_flos."""
    assert main(["plan", str(path), "--output-dir", str(out), "--all", "--json", str(out / "plan.json")]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["not_estimated"] == {}
    estimated = {(r["model"], r["size"]): r["estimated_flops"] for r in plan["runs"]}
    fine_tuned = [r for r in recs if r.train_size]
    assert {r.model["id"] for r in fine_tuned} == {"models/gpt2", "models/t5"}
    for r in fine_tuned:
        assert 0.9 < estimated[(r.model["id"], r.train_size)] / r.total_flos < 1.1, (r.model["id"], r.train_size)


@pytest.mark.parametrize("command", ["select", "plan"])
@pytest.mark.parametrize("case", ["encoder-decoder on plain text", "chat without a template"])
def test_a_candidate_the_data_cannot_train_is_a_config_error_before_any_model_loads(folder, tmp_path, capsys,
                                                                                    monkeypatch, command, case):
    """Known from the candidate's config.json and tokenizer: one line, exit 2, no run listed or started."""
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(runner_module, "load_candidate", no_model)
    if case == "chat without a template":
        path = config(folder, "chat-bare", data="chat", candidates=["models/gpt2"])
        words = "candidate 'models/gpt2': its tokenizer has no chat template"
    else:
        path = config(folder, "t5-text", candidates=["models/gpt2", "models/t5"],
                      dataset={"prompt_column": None, "completion_column": None, "text_column": "question"})
        words = "candidate 'models/t5' is an encoder-decoder, which needs prompt -> completion data"
    assert main([command, str(path), "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and words in captured.err and str(path) in captured.err, captured.err
    assert "lensllm select" not in captured.out and not (tmp_path / "out" / "store").exists()


def test_conversations_take_the_chat_template_from_the_config(folder, tmp_path, capsys):
    path = config(folder, "chat", data="chat", chat_template=CHAT_TEMPLATE)
    assert select(path, tmp_path / "out") == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert {c["model"] for c in data["ranking"] if c["status"] == "complete"} == {"models/gpt2", "models/t5"}
    assert_plan_estimates_what_the_runs_recorded(path, tmp_path / "out",
                                                 [read_record(p) for p in list_records(tmp_path / "out" / "store")])
    # Another template is another setup: its runs never share records with these.
    other = config(folder, "chat2", data="chat", chat_template=CHAT_TEMPLATE.replace("assistant ", "bot "))
    assert select(other, tmp_path / "out", "--only", "models/gpt2", "--size", "0") == 0
    assert len(list_records(tmp_path / "out" / "store")) == 7


def test_a_task_metric_ranks_by_one_minus_the_metric_and_keeps_the_loss(folder, tmp_path, capsys):
    path = config(folder, "metric", candidates=["models/gpt2"], metric="rouge1",
                  generation={"max_new_tokens": 2, "rows": 16})
    assert select(path, tmp_path) == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "selection.json").read_text())
    assert data["ranking"][0]["model"] == "models/gpt2" and data["ranking"][0]["status"] == "complete"
    assert data["selection"]["metric"] == "1 - eval_rouge1"
    recs = sorted((read_record(p) for p in list_records(tmp_path / "store")), key=lambda r: r.train_size)
    assert [r.train_size for r in recs] == [0, 8, 16]
    for rec in recs:
        last = rec.evaluations[-1].metrics
        assert 0 <= last["eval_rouge1"] <= 1 and last["eval_loss"] > 0 and rec.final_eval_loss == last["eval_loss"]
    # The law was fitted on 1 - rouge1, not on the loss.
    fit = data["ranking"][0]["fit"]
    assert fit["losses"] == pytest.approx([1 - r.evaluations[-1].metrics["eval_rouge1"] for r in recs
                                           if r.evaluations[-1].metrics["eval_rouge1"] < 1])


@pytest.fixture()
def loads(monkeypatch):
    """Every model load (there must be none), recorded."""
    seen: list[str] = []

    def no_model(model_id, **kwargs):
        seen.append(model_id)
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(runner_module, "load_candidate", no_model)
    return seen


BAD = [
    ("prompt-alone", {"dataset": {"completion_column": None}}, "prompt_column and completion_column go together"),
    ("both-layouts", {"dataset": {"messages_column": "messages"}}, "set either messages_column"),
    ("column-missing", {"dataset": {"prompt_column": "quest"}}, "has no column 'quest'"),
    ("metric-unknown", {"metric": "bleu"}, "metric='bleu': must be loss or one of exact_match"),
    ("metric-on-text", {"data": "text", "metric": "rouge"}, "metric='rouge' is a task metric on generated answers"),
    ("generation-key", {"metric": "exact_match", "generation": {"max_new_token": 4}},
     "unknown key 'max_new_token'; did you mean 'max_new_tokens'?"),
    ("generation-rows", {"metric": "exact_match", "generation": {"rows": 0}}, "generation.rows=0: must be at least 1"),
    ("generation-for-loss", {"generation": {"rows": 8}}, "generation only applies to a task metric"),
    ("dtype", {"candidates": [{"model": "models/gpt2", "model_kwargs": {"dtype": "float8"}}]},
     "dtype 'float8' is not one of auto, float32, float16, bfloat16"),
    ("bad-conversation", {"data": "bad-chat"}, "train_dataset row 1: the conversation needs an assistant turn"),
    ("column-top-level", {"messages_column": "messages"}, "'messages_column' belongs in the 'dataset' block"),
]


@pytest.mark.parametrize("name, change, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_task_config_is_one_line_exit_2_before_any_model_loads(folder, loads, tmp_path, capsys, name, change,
                                                                      message):
    change = dict(change)
    data = change.pop("data", "qa")
    if data == "text":
        write_jsonl(folder / "data" / "text-train.jsonl", [{"text": r["question"]} for r in qa_rows(32, 0)])
        write_jsonl(folder / "data" / "text-eval.jsonl", [{"text": r["question"]} for r in qa_rows(8, 1)])
    if data == "bad-chat":
        rows = [{"messages": [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}]}] * 32
        rows[1] = {"messages": [{"role": "user", "content": "w1"}]}
        write_jsonl(folder / "data" / "bad-chat-train.jsonl", rows)
        write_jsonl(folder / "data" / "bad-chat-eval.jsonl", rows[:4:2])
    path = config(folder, name, data="chat" if data == "bad-chat" else data, **change)
    if data in ("text", "bad-chat"):
        text = yaml.safe_load(path.read_text())
        text["dataset"]["files"] = {"train": f"data/{data}-train.jsonl", "eval": f"data/{data}-eval.jsonl"}
        if data == "text":
            text["dataset"] = {"files": text["dataset"]["files"]}
        path.write_text(yaml.safe_dump(text), encoding="utf-8")
    code = select(path, tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and message in err, err
    assert loads == []


def test_what_a_gpu_user_sets_reaches_the_model_and_the_trainer(folder, tmp_path):
    from datasets import Dataset

    candidates = as_candidates([{"model": str(folder / "models" / "gpt2"), "name": "bf16",
                                 "model_kwargs": {"torch_dtype": "bfloat16"}},
                                {"model": str(folder / "models" / "gpt2"), "name": "4bit",
                                 "model_kwargs": {"load_in_4bit": True}}])
    training = {**TRAINING, "bf16": True, "gradient_checkpointing": True, "use_cpu": not torch.cuda.is_available()}
    params = SelectionParams(candidates, training_args=training, prompt_column="question", completion_column="answer",
                             max_length=32, ntk_probe=False)
    rows = Dataset.from_list(qa_rows(16, 0))
    plan = RunPlan(candidates, [0, 8], 0, {"bf16": "h", "4bit": "h"})
    runner = Runner(params, plan, Store(tmp_path / "store"), pool=rows, evalset=rows, metric=Metric(),
                    task_format=params_format(params))
    trainer, _, model = runner.trainer(plan.key("bf16", 8), str(tmp_path / "work"))
    assert next(model.parameters()).dtype == torch.bfloat16
    assert trainer.args.bf16 and trainer.args.gradient_checkpointing  # unchanged, as the config gave them
    assert type(trainer).__name__ == "SFTTrainer"
    if not torch.cuda.is_available():
        assert runner.attempt(plan.key("4bit", 0)) is None
        assert "load_in_4bit needs a CUDA GPU" in runner.failures["4bit"]
        assert "\n" not in runner.failures["4bit"]


def params_format(params):
    from lensllm_hf.selector.params import check_task

    return check_task({"prompt_column": params.prompt_column, "completion_column": params.completion_column,
                       "max_length": params.max_length})


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_token_metrics_compare_each_label_with_its_own_prediction(folder, tmp_path, name):
    """A causal LM predicts label i at position i - 1, an encoder-decoder at i: the selector's
    token accuracy is what each model's own logits give, counted by hand."""
    from datasets import Dataset

    from lensllm_hf.selector import token_accuracy

    candidates = as_candidates([{"model": str(folder / "models" / name), "name": name}])
    params = SelectionParams(candidates, training_args=TRAINING, prompt_column="question", completion_column="answer",
                             max_length=32, ntk_probe=False)
    rows = Dataset.from_list(qa_rows(16, 0))
    plan = RunPlan(candidates, [0, 8], 0, {name: "h"})
    runner = Runner(params, plan, Store(tmp_path / "store"), pool=rows, evalset=rows,
                    metric=Metric("accuracy", token_accuracy), task_format=params_format(params))
    trainer, _, model = runner.trainer(plan.key(name, 8), str(tmp_path / "work"))
    trainer.train()  # a few steps, so that some predictions are right and the count can tell
    reported = trainer.evaluate()["eval_accuracy"]
    hits = total = 0
    model.eval()
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader():
            ids, labels = model(**batch).logits.argmax(-1), batch["labels"]
            if name == "gpt2":
                ids, labels = ids[:, :-1], labels[:, 1:]
            keep = labels != -100
            hits += int((ids[keep] == labels[keep]).sum())
            total += int(keep.sum())
    assert total > 0 and hits > 0 and reported == pytest.approx(hits / total)
