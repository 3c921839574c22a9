"""The embedded default: a whole selection among tiny local models, offline, in about a minute on CPU.

``lensllm demo`` builds four small causal LMs of different architectures and sizes (GPT-2,
Llama, GPT-NeoX/Pythia and OPT configs), pre-trains each briefly on a general text so they
start from different knowledge, as Hub models do, then runs the real selection on a task
they were not pre-trained on: writing numbers in words (``"412 in words: four hundred
twelve ."``). Everything is generated from seeds (text, tokenizer, models), so two runs give
the same ranking; everything goes into the output directory, so running it again resumes.

The selection itself is the one of ``lensllm select``: the demo writes ``config.yaml`` and
the data files next to its outputs (with ``output_dir: .``), and ``lensllm select DIR/config.yaml``
reruns it in place, from any folder: recorded runs are skipped.

Example:
    >>> from lensllm_hf.demo import run_demo
    >>> result = run_demo("lensllm_out/demo")
    >>> result.best
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEMO_MODELS", "DemoModel", "build_demo", "build_models", "rerun_command", "run_demo", "task_dataset",
           "word_tokenizer"]

#: Bump when the demo's models or data change: built models are rebuilt.
DEMO_VERSION = 1
SEED = 0
TRAIN_ROWS = 20_000  # the target: "the full dataset" the ranking is for
EVAL_ROWS = 256
PRETRAIN_ROWS = 6_000
MAX_LENGTH = 48


@dataclass(frozen=True)
class DemoModel:
    """One demo candidate: an architecture, its size, and how long it is pre-trained."""

    name: str
    family: str
    config: dict[str, Any]
    pretrain_steps: int
    pretrain_lr: float = 3e-3


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel("tiny-gpt2", "gpt2", {"n_embd": 32, "n_layer": 2, "n_head": 2}, pretrain_steps=200),
    DemoModel("tiny-llama", "llama", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                      "num_attention_heads": 4, "num_key_value_heads": 2}, pretrain_steps=120),
    DemoModel("tiny-pythia", "gpt_neox", {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3,
                                          "num_attention_heads": 4}, pretrain_steps=160),
    DemoModel("tiny-opt", "opt", {"hidden_size": 96, "ffn_dim": 192, "num_hidden_layers": 1,
                                  "num_attention_heads": 4, "word_embed_proj_dim": 96}, pretrain_steps=80),
)

#: The selection settings (the same keys as a ``lensllm select`` config).
DEMO_SELECTION: dict[str, Any] = {
    "target_size": TRAIN_ROWS,
    "min_size": 32,
    "budget": 1024,
    "strategy": "grid",
    "max_length": MAX_LENGTH,
    "seed": SEED,
    "training_args": {"per_device_train_batch_size": 16, "per_device_eval_batch_size": 64, "num_train_epochs": 2,
                      "learning_rate": 2e-3, "warmup_steps": 0, "weight_decay": 0.0},
}

# -- text ------------------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_NOUNS = "cat dog bird tree house river road car book apple stone child farmer boat hill lamp cup".split()
_ADJ = "red big small old new quiet green tall happy dark warm cold".split()
_VERBS = "sees finds carries likes watches counts paints keeps".split()


def number_words(n: int) -> str:
    """``412 -> "four hundred twelve"`` (0 to 999)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))


def task_texts(n: int, seed: int) -> list[str]:
    """The task: a number in digits, then in words."""
    rng = random.Random(seed)
    return [f"{k} in words : {number_words(k)} ." for k in (rng.randrange(1000) for _ in range(n))]


def pretrain_texts(n: int, seed: int) -> list[str]:
    """The 'web' text of pre-training: plain sentences that use number words, never digits."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        count = number_words(rng.randrange(1, 1000))
        out.append(f"the {rng.choice(_ADJ)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} {count} "
                   f"{rng.choice(_NOUNS)}s near the {rng.choice(_NOUNS)} .")
    return out


# -- building --------------------------------------------------------------------------------


def build_tokenizer():
    """A word-level tokenizer over the demo's words and the ten digits (one token per digit)."""
    return word_tokenizer(sorted({*_ONES, *_TENS[2:], "hundred", *_NOUNS, *(f"{w}s" for w in _NOUNS), *_ADJ, *_VERBS,
                                  "the", "near", "in", "words", ":", ".", *"0123456789"}))


def word_tokenizer(words: list[str]):
    """A fast word-level tokenizer: ``<pad> <unk> <eos>`` then ``words``; digits split one per token, EOS appended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<eos>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Digits(individual_digits=True)])
    core.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                   bos_token="<eos>")


def _model_config(spec: DemoModel, vocab_size: int):
    from transformers import AutoConfig

    return AutoConfig.for_model(spec.family, vocab_size=vocab_size, max_position_embeddings=64, n_positions=64,
                                pad_token_id=0, bos_token_id=2, eos_token_id=2, tie_word_embeddings=True,
                                **spec.config)


def task_dataset(n: int, seed: int = SEED + 1):
    """``n`` task examples as a ``datasets.Dataset`` with a ``text`` column."""
    import datasets

    return datasets.Dataset.from_dict({"text": task_texts(n, seed)})


def build_models(root: str | os.PathLike, *, specs: tuple[DemoModel, ...] = DEMO_MODELS, pretrain: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, str]:
    """Save each demo model (and the tokenizer) under ``root/<name>``; returns name -> path.

    With ``pretrain`` each is first trained briefly on :func:`pretrain_texts`, a different text
    than the task; without, it stays as initialised (fast, for tests). Built models are kept.
    """
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from .selector.runner import quiet_logs

    root = Path(root)
    tokenizer = build_tokenizer()
    stamp = {spec.name: {"version": DEMO_VERSION, "pretrain_steps": spec.pretrain_steps if pretrain else 0}
             for spec in specs}
    pending = [spec for spec in specs if not _built(root / spec.name, stamp[spec.name])]
    corpus = None
    if pending and pretrain:
        import datasets

        with quiet_logs(False):
            corpus = datasets.Dataset.from_dict({"text": pretrain_texts(PRETRAIN_ROWS, SEED + 3)})
            corpus = corpus.map(lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH), batched=True,
                                remove_columns=["text"], keep_in_memory=True)
    for spec in pending:
        path = root / spec.name
        t0 = time.perf_counter()
        with quiet_logs(False):
            torch.manual_seed(SEED)
            model = AutoModelForCausalLM.from_config(_model_config(spec, len(tokenizer)))
            if corpus is not None:
                args = TrainingArguments(output_dir=str(root / ".pretrain"), max_steps=spec.pretrain_steps,
                                         per_device_train_batch_size=32, learning_rate=spec.pretrain_lr,
                                         lr_scheduler_type="cosine", warmup_steps=10, report_to="none",
                                         save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=SEED,
                                         dataloader_pin_memory=False, log_level="error")
                trainer = Trainer(model=model, args=args, train_dataset=corpus,
                                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
                trainer.remove_callback(PrinterCallback)
                trainer.train()
                del trainer
            model.save_pretrained(str(path))
            tokenizer.save_pretrained(str(path))
        _mark(path, stamp[spec.name])
        params = sum(p.numel() for p in model.parameters())
        done = f"pre-trained {spec.pretrain_steps} steps" if corpus is not None else "not pre-trained"
        log(f"built {spec.name} ({spec.family}, {params / 1e3:.0f}k parameters, {done}) in "
            f"{time.perf_counter() - t0:.1f}s")
        del model
    import shutil

    shutil.rmtree(root / ".pretrain", ignore_errors=True)
    return {spec.name: str(root / spec.name) for spec in specs}


def build_demo(output_dir: str | os.PathLike, *, log: Callable[[str], None] = print) -> Path:
    """Models, data and ``config.yaml`` of the demo in ``output_dir``; returns the config path.

    Pieces already built (same :data:`DEMO_VERSION`) are kept, so this is quick the second time.
    """
    out = Path(output_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    train_file, eval_file = out / "data" / "train.jsonl", out / "data" / "eval.jsonl"
    if not _built(out / "data"):
        _write_jsonl(train_file, task_texts(TRAIN_ROWS, SEED + 1))
        _write_jsonl(eval_file, task_texts(EVAL_ROWS, SEED + 2))
        _mark(out / "data")
    build_models(out / "models", log=log)

    config = {
        "candidates": [{"model": f"models/{spec.name}", "name": spec.name} for spec in DEMO_MODELS],
        "dataset": {"files": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"}, "text_column": "text"},
        **DEMO_SELECTION,
        "output_dir": ".",  # the config's own folder: rerunning it resumes in place, from any folder
    }
    path = out / "config.yaml"
    import yaml

    text = ("# The lensllm demo's selection: rerun it (it resumes in place) with: " + rerun_command(out) + "\n"
            + yaml.safe_dump(config, sort_keys=False))
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def rerun_command(output_dir: str | os.PathLike) -> str:
    """The shell command that reruns the demo's selection in place (absolute paths: it runs from anywhere)."""
    import shlex

    return shlex.join(["lensllm", "select", str(Path(output_dir).resolve() / "config.yaml")])


def run_demo(output_dir: str | os.PathLike = "lensllm_out/demo", *, progress: bool = True,
             log: Callable[[str], None] = print):
    """Build the demo (if needed) and run its selection; returns the :class:`SelectionResult`."""
    import torch

    from .selector.config import SelectConfig

    # Models this small gain nothing from intra-op threads, and on a busy machine OpenMP's
    # spinning threads make each step up to 100x slower: one thread, restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(SEED)
        config_path = build_demo(output_dir, log=log)
        config = SelectConfig.from_yaml(config_path)
        selector = config.selector(output_dir=output_dir, progress=progress)
        return selector.run()
    finally:
        torch.set_num_threads(threads)


def _built(folder: Path, stamp: dict[str, Any] | None = None) -> bool:
    marker = folder / ".lensllm-demo.json"
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == (stamp or {"version": DEMO_VERSION})
    except (OSError, ValueError):
        return False


def _mark(folder: Path, stamp: dict[str, Any] | None = None) -> None:
    # Written last: a build killed midway is redone, never half-used.
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lensllm-demo.json").write_text(json.dumps(stamp or {"version": DEMO_VERSION}) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, texts: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}) + "\n")
    os.replace(tmp, path)
