"""An ordinary Trainer fine-tuning script, plus one line: ``LensLLMCallback`` records the run for LensLLM.

    python examples/add_callback_to_trainer.py --model gpt2 --train-size 800 --store runs/
    python examples/add_callback_to_trainer.py --offline-tiny --train-size 16 32 64   # no Hub: a tiny local model

Run it for several --train-size values (200, 400, 800, ...) and several models into one
store, then rank them: ``lensllm fit runs/ --target 36718``. Offline, ``--model`` names one of
the demo's tiny models (tiny-gpt2, tiny-llama, tiny-pythia, tiny-opt), built once into
``--models-dir`` and reused, so every run of a model has the same name in the store:
``lensllm fit lensllm_out/runs --target 20000`` ranks them.
"""

from __future__ import annotations

import argparse
import tempfile

from datasets import load_dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

from lensllm_hf import LensLLMCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a Hub ID (default gpt2); offline, a tiny model's name "
                                                      "(default tiny-gpt2)")
    parser.add_argument("--dataset", default="Salesforce/wikitext")
    parser.add_argument("--config", default="wikitext-2-raw-v1")
    parser.add_argument("--train-size", type=int, nargs="+", default=[800], help="one run per size")
    parser.add_argument("--store", default="lensllm_out/runs", help="where the run records go (folder or fsspec URL)")
    parser.add_argument("--offline-tiny", action="store_true",
                        help="no network: a tiny local model and the demo's task text instead of the Hub")
    parser.add_argument("--models-dir", default="lensllm_out/tiny-models",
                        help="--offline-tiny: where the tiny models are built once and reused")
    args = parser.parse_args()

    if args.offline_tiny:
        from lensllm_hf.demo import DEMO_MODELS, build_models, task_dataset

        name = args.model or "tiny-gpt2"
        specs = tuple(spec for spec in DEMO_MODELS if spec.name == name)
        if not specs:
            parser.error(f"--offline-tiny: --model must be one of {', '.join(s.name for s in DEMO_MODELS)}")
        model_id = build_models(args.models_dir, specs=specs, pretrain=False, log=print)[name]  # kept: built once
        pool, test = task_dataset(max(args.train_size), seed=1), task_dataset(64, seed=2)
    else:
        name = model_id = args.model or "gpt2"
        data = load_dataset(args.dataset, args.config)
        pool = data["train"].filter(lambda row: row["text"].strip()).shuffle(seed=0).select(range(max(args.train_size)))
        test = data["validation"].filter(lambda row: row["text"].strip()).select(range(500))
    for size in args.train_size:  # nested subsets: each is the first rows of the same shuffle
        fine_tune(name, model_id, pool.select(range(size)), test, args)


def fine_tune(name: str, model_id: str, train, test, args: argparse.Namespace) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_id)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=128)

    train = train.map(tokenize, batched=True, remove_columns=train.column_names)
    test = test.map(tokenize, batched=True, remove_columns=test.column_names)

    with tempfile.TemporaryDirectory() as scratch:  # nothing is saved: no folders pile up
        trainer = Trainer(
            model=model,
            args=TrainingArguments(output_dir=scratch, per_device_train_batch_size=8, num_train_epochs=1,
                                   learning_rate=5e-5 if not args.offline_tiny else 2e-3, report_to="none",
                                   save_strategy="no"),
            train_dataset=train,
            eval_dataset=test,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
            callbacks=[LensLLMCallback(store=args.store, model_name=name)],  # <- the one line LensLLM needs
        )
        trainer.train()
    record = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, LensLLMCallback)).record
    print(f"recorded {record.model_id} on {record.train_size} examples: eval loss {record.final_eval_loss:.4f}, "
          f"{record.total_flos:.3g} FLOPs -> {args.store}")


if __name__ == "__main__":
    main()
