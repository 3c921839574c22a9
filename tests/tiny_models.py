"""Tiny models, tokenizers and datasets built offline, for tests and benchmarks.

Nothing here downloads anything: models come from configs, the tokenizer is a word-level
``tokenizers`` model over a made-up vocabulary, and the text follows a noisy bigram rule so a
tiny model can learn it (its eval loss falls with more training examples).

Example:
    >>> tok = make_tokenizer(tmp_path / "gpt2")
    >>> path = make_tiny_gpt2(tmp_path / "gpt2")
    >>> train = tokenize_lm(make_text_dataset(64), tok)
"""

from __future__ import annotations

import random
from pathlib import Path

#: Training arguments and selection settings of the selector tests: 8 to 32 examples, seconds a run.
TINY_TRAINING = {"per_device_train_batch_size": 8, "num_train_epochs": 2, "learning_rate": 3e-3}
TINY_SELECTION = dict(target_size=4000, min_size=8, budget=32, max_length=32, progress=False,
                      training_args=TINY_TRAINING)

VOCAB_WORDS = [f"w{i}" for i in range(48)]
SPECIAL = ["[PAD]", "[UNK]", "[EOS]"]
VOCAB_SIZE = len(SPECIAL) + len(VOCAB_WORDS)


def make_tokenizer(path: str | Path | None = None):
    """A word-level fast tokenizer over ``w0 ... w47`` (pad id 0, eos id 2); saved to ``path`` if given."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + VOCAB_WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                        eos_token="[EOS]")
    if path is not None:
        tokenizer.save_pretrained(str(path))
    return tokenizer


def make_tiny_gpt2(path: str | Path, n_layer: int = 2, n_embd: int = 64, n_head: int = 2,
                   vocab_size: int = VOCAB_SIZE, n_positions: int = 64, seed: int = 0) -> str:
    """Save a randomly initialised GPT-2 (and the tiny tokenizer) to ``path``; return the path."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                        n_positions=n_positions, bos_token_id=2, eos_token_id=2, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    if vocab_size >= VOCAB_SIZE:
        make_tokenizer(path)
    return str(path)


def make_tiny_t5(path: str | Path, d_model: int = 32, num_layers: int = 1, seed: int = 0) -> str:
    """Save a randomly initialised tiny T5 (and the tiny tokenizer) to ``path``; return the path."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=VOCAB_SIZE, d_model=d_model, d_kv=16, d_ff=64, num_layers=num_layers,
                      num_decoder_layers=num_layers, num_heads=2, pad_token_id=0, eos_token_id=2,
                      decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(str(path))
    make_tokenizer(path)
    return str(path)


def _sentence(rng: random.Random, length: int) -> list[str]:
    # A noisy bigram rule: the next word is (7 * word + 3) mod 48 four times out of five.
    word = rng.randrange(len(VOCAB_WORDS))
    out = [word]
    for _ in range(length - 1):
        word = (7 * word + 3) % len(VOCAB_WORDS) if rng.random() < 0.8 else rng.randrange(len(VOCAB_WORDS))
        out.append(word)
    return [VOCAB_WORDS[w] for w in out]


def make_text_dataset(n: int, seed: int = 0, min_words: int = 8, max_words: int = 16):
    """``n`` examples with a ``text`` column (and a ``target`` column: the same words shifted by one)."""
    from datasets import Dataset

    rng = random.Random(seed)
    texts, targets = [], []
    for _ in range(n):
        words = _sentence(rng, rng.randint(min_words, max_words))
        texts.append(" ".join(words))
        targets.append(" ".join(VOCAB_WORDS[(int(w[1:]) + 1) % len(VOCAB_WORDS)] for w in words))
    return Dataset.from_dict({"text": texts, "target": targets})


def tokenize_lm(dataset, tokenizer, max_length: int = 32):
    """Causal-LM features (``input_ids``, ``attention_mask``); pair with ``lm_collator``."""
    return dataset.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                       batched=True, remove_columns=dataset.column_names)


def tokenize_seq2seq(dataset, tokenizer, max_length: int = 32):
    """Seq2seq features: ``text`` as the source, ``target`` as the labels; pair with ``seq2seq_collator``."""
    def encode(batch):
        features = tokenizer(batch["text"], truncation=True, max_length=max_length)
        features["labels"] = tokenizer(batch["target"], truncation=True, max_length=max_length)["input_ids"]
        return features

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


def lm_collator(tokenizer):
    """Pads and copies ``input_ids`` to ``labels`` (pads become -100)."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


def seq2seq_collator(tokenizer, model=None):
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model)


def write_select_config(folder: str | Path, *, epochs: int = 2, candidates=None, **extra) -> Path:
    """A ``lensllm select`` YAML config in ``folder``: two tiny GPT-2s given by paths relative to the
    config (made once per folder) and JSONL data; ``extra`` keys replace the config's."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "models" / "small").exists():
        make_tiny_gpt2(folder / "models" / "small", n_layer=1, n_embd=16, seed=0)
        make_tiny_gpt2(folder / "models" / "large", n_layer=2, n_embd=64, seed=1)
        (folder / "data").mkdir(exist_ok=True)
        make_text_dataset(200, seed=0).to_json(folder / "data" / "train.jsonl")
        make_text_dataset(32, seed=1).to_json(folder / "data" / "eval.jsonl")
    config = {
        "candidates": candidates or ["models/small", {"model": "models/large", "name": "large"}],
        "dataset": {"files": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"}, "text_column": "text"},
        "target_size": 4000, "min_size": 8, "budget": 32, "max_length": 32,
        "training_args": {**TINY_TRAINING, "num_train_epochs": epochs},
        **extra,
    }
    path = folder / "select.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
