"""Task layouts (text, prompt/completion, chat), encoder-decoder candidates and task metrics, on tiny models."""

from __future__ import annotations

import pytest

from lensllm_hf.errors import LensLLMError
from lensllm_hf.selector.formats import TaskFormat, is_encoder_decoder
from lensllm_hf.selector.loading import load_candidate, model_load_kwargs
from lensllm_hf.selector.generation import GenerationMetricCallback
from lensllm_hf.selector.task_metrics import GenerationConfig, score
from tiny_models import VOCAB_WORDS, make_tiny_gpt2, make_tiny_t5

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant {% endif %}"
ARGS = {"output_dir": "unused", "max_steps": 3, "per_device_train_batch_size": 4, "report_to": "none", "use_cpu": True,
        "save_strategy": "no", "logging_strategy": "no", "disable_tqdm": True, "learning_rate": 1e-2}


def qa_dataset(n: int, seed: int = 0):
    """Prompt -> completion pairs whose completion follows a rule of the prompt (learnable)."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    prompts, answers = [], []
    for _ in range(n):
        words = [rng.randrange(len(VOCAB_WORDS)) for _ in range(3)]
        prompts.append(" ".join(VOCAB_WORDS[w] for w in words))
        answers.append(" " + VOCAB_WORDS[(words[0] + 1) % len(VOCAB_WORDS)])
    return Dataset.from_dict({"question": prompts, "answer": answers})


def chat_dataset(n: int):
    rows = qa_dataset(n)
    return rows.map(lambda r: {"messages": [{"role": "user", "content": r["question"]},
                                            {"role": "assistant", "content": r["answer"].strip()}]},
                    remove_columns=rows.column_names)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return make_tiny_t5(tmp_path_factory.mktemp("t5"))


def test_layout_follows_the_columns_named():
    assert TaskFormat().layout == "text"
    assert TaskFormat(prompt_column="q", completion_column="a").layout == "prompt_completion"
    assert TaskFormat(messages_column="m").layout == "messages"
    with pytest.raises(LensLLMError, match="go together"):
        TaskFormat(prompt_column="q")
    with pytest.raises(LensLLMError, match="no column 'answer'"):
        TaskFormat(prompt_column="question", completion_column="answer").check_columns(qa_dataset(2).remove_columns("answer"))


def test_prompt_completion_on_a_causal_lm_counts_only_the_completion(gpt2, tmp_path):
    model, tok = load_candidate(gpt2)
    fmt = TaskFormat(prompt_column="question", completion_column="answer", max_length=32)
    rows = qa_dataset(24)
    trainer = fmt.trainer(model=model, tokenizer=tok, args={**ARGS, "output_dir": str(tmp_path)},
                          train=rows, evalset=rows.select(range(8)))
    assert type(trainer).__name__ == "SFTTrainer"
    example = trainer.train_dataset[0]
    prompt_tokens = len(tok(rows[0]["question"])["input_ids"])
    labels = trainer.data_collator([example])["labels"][0].tolist()
    # The prompt's tokens are masked out of the loss; the completion's (and EOS) count.
    assert labels[:prompt_tokens] == [-100] * prompt_tokens
    assert all(label != -100 for label in labels[prompt_tokens:len(example["input_ids"])])
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < before


def test_conversations_use_the_chat_template_and_need_one(gpt2, tmp_path):
    model, tok = load_candidate(gpt2)
    fmt = TaskFormat(messages_column="messages", max_length=32)
    with pytest.raises(LensLLMError, match="no chat template.*chat_template"):
        fmt.prepare_tokenizer(tok, "tiny-gpt2")
    TaskFormat(messages_column="messages", chat_template=CHAT_TEMPLATE).prepare_tokenizer(tok, "tiny-gpt2")
    rows = chat_dataset(16)
    prompts, completions = fmt.pairs(rows, tok)
    assert prompts[0] == f"user {rows[0]['messages'][0]['content']} assistant "
    assert completions[0] == rows[0]["messages"][1]["content"]
    trainer = fmt.trainer(model=model, tokenizer=tok, args={**ARGS, "output_dir": str(tmp_path)},
                          train=rows, evalset=rows.select(range(4)))
    example = trainer.train_dataset[0]
    labels = trainer.data_collator([example])["labels"][0].tolist()
    assert labels[0] == -100 and labels[-1] != -100  # the user turn is not trained on, the answer is
    assert trainer.evaluate()["eval_loss"] > 0


def test_a_malformed_conversation_names_the_row():
    bad = chat_dataset(3).map(lambda r, i: {"messages": r["messages"][:1]} if i == 2 else r, with_indices=True)
    with pytest.raises(LensLLMError, match="row 2: the conversation needs an assistant turn"):
        TaskFormat(messages_column="messages").pairs(bad)


def test_encoder_decoder_candidate_trains_with_seq2seq(t5, tmp_path):
    model, tok = load_candidate(t5)
    assert is_encoder_decoder(model) and type(model).__name__ == "T5ForConditionalGeneration"
    fmt = TaskFormat(prompt_column="question", completion_column="answer", max_length=32)
    rows = qa_dataset(24)
    trainer = fmt.trainer(model=model, tokenizer=tok, args={**ARGS, "output_dir": str(tmp_path)},
                          train=rows, evalset=rows.select(range(8)))
    assert type(trainer).__name__ == "Seq2SeqTrainer"
    assert trainer.train_dataset[0]["labels"] == tok(text_target=rows[0]["answer"])["input_ids"]
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < before
    with pytest.raises(LensLLMError, match="is an encoder-decoder, which needs prompt -> completion"):
        TaskFormat().trainer(model=model, tokenizer=tok, args={**ARGS, "output_dir": str(tmp_path)},
                             train=None, evalset=rows)


def test_zero_shot_trainer_needs_no_training_rows(gpt2, tmp_path):
    model, tok = load_candidate(gpt2)
    fmt = TaskFormat(prompt_column="question", completion_column="answer", max_length=32)
    trainer = fmt.trainer(model=model, tokenizer=tok, args={**ARGS, "output_dir": str(tmp_path)},
                          train=None, evalset=qa_dataset(8))
    assert trainer.evaluate()["eval_loss"] > 0


def test_load_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(LensLLMError, match="has no config.json"):
        load_candidate(str(tmp_path))
    with pytest.raises(LensLLMError, match="dtype 'float8' is not one of"):
        model_load_kwargs({"dtype": "float8"})
    import torch

    assert model_load_kwargs({"torch_dtype": "bfloat16"}) == {"dtype": torch.bfloat16}
    if not torch.cuda.is_available():
        with pytest.raises(LensLLMError, match="load_in_4bit needs a CUDA GPU"):
            model_load_kwargs({"load_in_4bit": True})


def test_dtype_reaches_the_model(gpt2):
    import torch

    model, _ = load_candidate(gpt2, model_kwargs={"dtype": "bfloat16"})
    assert next(model.parameters()).dtype == torch.bfloat16


def test_task_metrics_match_their_definitions():
    assert score("exact_match", ["a", "b "], ["a", "c"]) == 0.5
    assert score("accuracy", ["Yes\nbecause", "no"], ["yes", "No"]) == 1.0
    assert score("rouge", ["the cat"], ["the cat"]) == 1.0
    assert 0 < score("rouge1", ["the cat sat"], ["a cat sat down"]) < 1
    with pytest.raises(LensLLMError, match="unknown task metric 'bleu'"):
        score("bleu", ["a"], ["a"])


@pytest.mark.parametrize("which", ["gpt2", "t5"])
def test_generation_metric_lands_in_the_evaluation(which, gpt2, t5, tmp_path):
    model, tok = load_candidate(gpt2 if which == "gpt2" else t5)
    fmt = TaskFormat(prompt_column="question", completion_column="answer", max_length=32)
    rows = qa_dataset(8)
    prompts, answers = fmt.pairs(rows)
    metric = GenerationMetricCallback("exact_match", prompts, answers, GenerationConfig(max_new_tokens=2, rows=8))
    trainer = fmt.trainer(model=model, tokenizer=tok, args={**ARGS, "output_dir": str(tmp_path)},
                          train=None, evalset=rows, callbacks=[metric])
    value = trainer.evaluate()["eval_exact_match"]
    assert 0.0 <= value <= 1.0
    assert tok.padding_side == "right" or which == "gpt2"  # restored after generating
