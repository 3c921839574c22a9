"""What a run record says about the model, its adapter, the data and the software, read from the objects a Trainer holds."""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from importlib import metadata
from typing import Any

__all__ = ["adapter_summary", "fingerprint", "length", "model_info", "peft_config", "plain", "training_arguments",
           "versions"]


def model_info(model, model_name: str | None, revision: str | None) -> tuple[dict[str, Any], dict[str, Any] | None,
                                                                                list[str]]:
    """(the record's ``model`` entry, the adapter summary or None, warnings) of the model being trained.

    The row name is ``model_name``, else the model's ``name_or_path``; a model built from a config
    has neither, and gets ``<architecture>-<hash of config and weights>`` with a warning (its class
    name alone would be shared by every such model: a 4-layer and a 2-layer GPT-2 would overwrite
    each other's records).
    """
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    config = getattr(base, "config", None)
    name_or_path = str(getattr(config, "name_or_path", "") or getattr(base, "name_or_path", "") or "")
    adapter = adapter_summary(model)
    architecture = (getattr(config, "architectures", None) or [type(base).__name__])[0]
    warnings: list[str] = []
    model_id = model_name or name_or_path
    if not model_id:
        model_id = f"{architecture}-{_model_digest(base, config, frozen_only=adapter is not None)}"
        warnings.append(f"the model has no name (built from a config): recorded as {model_id!r}, a hash of its "
                        "config and initial weights; pass LensLLMCallback(model_name=...) to name its row in "
                        "curve tables")
    info = {
        "id": model_id,
        "name_or_path": name_or_path or None,
        "revision": revision or _revision_from_path(name_or_path),
        "architecture": architecture,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return info, adapter, warnings


def training_arguments(args, batch: int, effective_batch: int) -> dict[str, Any]:
    """The TrainingArguments a run's config hash covers (what makes two runs on the same data differ)."""
    return {
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": plain(args.lr_scheduler_type),
        "warmup_steps": args.warmup_steps,
        "warmup_ratio": getattr(args, "warmup_ratio", None),
        "weight_decay": args.weight_decay,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "effective_batch_size": effective_batch,
        "optim": plain(args.optim),
        "max_grad_norm": args.max_grad_norm,
        "label_smoothing_factor": args.label_smoothing_factor,
    }


def _model_digest(model, config, *, frozen_only: bool) -> str:
    """A short hash of the config, the parameter names and shapes, and the first values of each.

    Tells apart models built from configs (different sizes, or the same size initialised
    differently). ``frozen_only`` (a PEFT model) leaves out the adapter's fresh weights, which
    depend on the run's seed, not on the model.
    """
    import torch

    described = config.to_dict() if callable(getattr(config, "to_dict", None)) else {}
    for key in ("_name_or_path", "transformers_version", "architectures"):  # keys of to_dict()
        described.pop(key, None)
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if frozen_only and param.requires_grad:
                continue
            digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
            digest.update(param.detach().reshape(-1)[:8].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def _active_adapter(model) -> str | None:
    """The name of a PEFT model's active adapter (the first one if that is not a single name), or None."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    name = getattr(model, "active_adapter", None)
    return name if isinstance(name, str) and name in configs else next(iter(configs))


def peft_config(model):
    name = _active_adapter(model)
    return None if name is None else model.peft_config[name]


def adapter_summary(model) -> dict[str, Any] | None:
    name = _active_adapter(model)
    if name is None:
        return None
    peft_config = model.peft_config[name]
    config = peft_config.to_dict() if hasattr(peft_config, "to_dict") else dict(vars(peft_config))
    keep = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "modules_to_save", "task_type",
            "use_dora", "use_rslora", "init_lora_weights", "num_virtual_tokens")
    summary: dict[str, Any] = {"peft_type": plain(config.get("peft_type")), "adapter_name": name}
    for key in keep:
        if key in config and config[key] is not None:
            value = config[key]
            summary[key] = sorted(value) if isinstance(value, (set, frozenset)) else plain(value)
    summary["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return summary


def fingerprint(dataset) -> str | None:
    """A hash of the dataset as the Trainer feeds it: its size and 16 items spread over it."""
    n = length(dataset)
    if not n:
        return None
    digest = hashlib.sha256(str(n).encode())
    for i in sorted({round(j * (n - 1) / 15) for j in range(16)}):
        with contextlib.suppress(Exception):
            digest.update(repr(dataset[i]).encode())
    return digest.hexdigest()[:16]


def _revision_from_path(path: str) -> str | None:
    # A model loaded from the Hub cache sits in .../models--org--name/snapshots/<commit>/
    parts = path.replace("\\", "/").rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "snapshots":
        return parts[-1]
    return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("lensllm_hf", "torch", "transformers", "accelerate", "datasets", "peft"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def length(obj) -> int | None:
    """``len(obj)``, or None for None and for objects without a length (iterable datasets)."""
    try:
        return len(obj) if obj is not None else None
    except (TypeError, NotImplementedError):
        return None


def plain(obj):
    """An enum member's value (``IntervalStrategy.STEPS`` -> ``"steps"``); anything else as is."""
    return getattr(obj, "value", obj)
