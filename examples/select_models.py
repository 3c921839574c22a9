"""Which of these Hub models should I fine-tune on my data? LensLLMSelector answers from small runs.

    python examples/select_models.py                     # four small Hub models on WikiText-2
    python examples/select_models.py --offline-tiny      # no Hub: the demo's tiny local models

Each candidate is fine-tuned on nested subsets (200, 400, ... up to --budget examples), the
scaling law is fitted to its losses and the loss on the whole training set is predicted, with
an interval. Interrupt it at any time: running it again skips the runs already recorded.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from urllib.parse import urlparse

from lensllm_hf import LensLLMSelector

CANDIDATES = ["EleutherAI/pythia-70m", "gpt2", "facebook/opt-125m", "Qwen/Qwen2.5-0.5B"]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub can be asked at all (HF_HUB_OFFLINE, or no route to it), without long retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="lensllm_out/select_models")
    parser.add_argument("--budget", type=int, default=1600, help="largest subset size fine-tuned on")
    parser.add_argument("--offline-tiny", action="store_true",
                        help="no network: select among the demo's tiny local models on its task")
    args = parser.parse_args()

    if args.offline_tiny:
        from lensllm_hf.demo import build_models, task_dataset

        # Built once into the output folder (not a new temporary one each time), so a rerun resumes.
        paths = build_models(os.path.join(args.output_dir, "models"), pretrain=False, log=lambda _: None)
        candidates = [{"model": path, "name": name} for name, path in paths.items()]
        train, test = task_dataset(2_000, seed=1), task_dataset(64, seed=2)
        settings = dict(target_size=20_000, min_size=16, budget=64, max_length=48,
                        training_args={"per_device_train_batch_size": 16, "num_train_epochs": 2,
                                       "learning_rate": 2e-3})
    else:
        if not hub_reachable():
            print("select_models.py: the Hugging Face Hub cannot be reached (offline or HF_HUB_OFFLINE=1), and this "
                  "example downloads four models and WikiText-2.\n  Offline, run the same selection on tiny local "
                  "models instead:  lensllm demo   (or: python examples/select_models.py --offline-tiny)",
                  file=sys.stderr)
            return 1
        from datasets import load_dataset

        data = load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1")
        train = data["train"].filter(lambda row: len(row["text"].split()) > 8)
        test = data["validation"].filter(lambda row: len(row["text"].split()) > 8).select(range(500))
        candidates = CANDIDATES
        settings = dict(target_size=len(train), min_size=200, budget=args.budget, max_length=256,
                        training_args={"per_device_train_batch_size": 8, "num_train_epochs": 1,
                                       "learning_rate": 5e-5, "bf16": False})

    selector = LensLLMSelector(candidates, train, test, output_dir=args.output_dir, **settings)
    result = selector.run()
    print(result.to_markdown())
    result.to_json(os.path.join(args.output_dir, "selection.json"))
    result.plot(os.path.join(args.output_dir, "selection.png"))
    print(f"\nplot: {os.path.join(args.output_dir, 'selection.png')}")
    return 0 if result.best else 2


if __name__ == "__main__":
    sys.exit(main())
