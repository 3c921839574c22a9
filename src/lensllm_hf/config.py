"""The YAML configuration of ``lensllm select`` and ``lensllm plan``.

Example ``select.yaml``::

    candidates:
      - EleutherAI/pythia-70m
      - gpt2
      - model: facebook/opt-125m
        peft: {peft_type: LORA, r: 8, lora_alpha: 16}
        training_args: {learning_rate: 1.0e-4}
    dataset:
      id: wikitext                 # a Hub dataset ...
      config: wikitext-2-raw-v1
      split: train
      eval_split: validation
      text_column: text
      # files: {train: data/train.jsonl, eval: data/eval.jsonl}   # ... or local files
    target_size: 36718
    budget: 3200
    strategy: grid                 # or adaptive
    training_args: {per_device_train_batch_size: 8, num_train_epochs: 1, learning_rate: 5.0e-5}

Relative paths (local files, local models) are relative to the config file's folder.

Example:
    >>> config = SelectConfig.from_yaml("select.yaml")
    >>> selector = config.selector(output_dir="lensllm_out/wikitext")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import LensLLMError

__all__ = ["DatasetConfig", "SelectConfig"]

#: Loader of ``datasets.load_dataset`` per local file suffix.
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".txt": "text", ".parquet": "parquet",
             ".arrow": "arrow"}


class ConfigError(LensLLMError, ValueError):
    """A config file that cannot be used; the message names the file, the key and the fix."""


@dataclass
class DatasetConfig:
    """Where the task data comes from: a Hub dataset (``id``, ``config``, ``split``) or local ``files``.

    Attributes:
        id: Hub dataset ID (or a ``datasets`` builder such as ``json`` with ``files``).
        config: the dataset configuration (``name`` in ``load_dataset``).
        split: the training split.
        eval_split: the evaluation split; None holds out ``eval_size`` rows of ``split``.
        text_column: the text column of the default preprocessing.
        files: local files, ``{train: path, eval: path}`` (JSON lines, CSV, text, Parquet).
        eval_size: rows held out when there is no eval split or file.
        eval_rows: use only the first rows of the eval set (a big test set evaluates slowly).
        revision: of the Hub dataset.
    """

    id: str | None = None
    config: str | None = None
    split: str = "train"
    eval_split: str | None = None
    text_column: str = "text"
    files: dict[str, str] | None = None
    eval_size: int = 500
    eval_rows: int | None = None
    revision: str | None = None

    @property
    def label(self) -> str:
        """How model cards name the data: the Hub ID, or the train file's name."""
        if self.files:
            return Path(self.files.get("train", next(iter(self.files.values())))).name
        return self.id or "custom"

    def load(self):
        """(train, eval or None) as ``datasets.Dataset`` objects."""
        import datasets

        if self.files:
            train = _load_file(self.files["train"], self.id)
            evalset = _load_file(self.files["eval"], self.id) if "eval" in self.files else None
        else:
            try:
                train = datasets.load_dataset(self.id, self.config, split=self.split, revision=self.revision)
                evalset = (datasets.load_dataset(self.id, self.config, split=self.eval_split, revision=self.revision)
                           if self.eval_split else None)
            except Exception as error:  # network, unknown ID or split: one line
                raise ConfigError(f"cannot load the dataset {self.id!r} (config {self.config!r}, split "
                                  f"{self.split!r}): {_one_line(error)}; check dataset.id/config/split, or use "
                                  "dataset.files offline") from None
        if evalset is not None and self.eval_rows is not None:
            evalset = evalset.select(range(min(self.eval_rows, len(evalset))))
        return train, evalset


@dataclass
class SelectConfig:
    """A whole selection: candidates, data, sizes, strategy and training arguments.

    Every field maps to the :class:`~lensllm_hf.LensLLMSelector` parameter of the same name;
    ``dataset`` is a :class:`DatasetConfig`. ``path`` is the file it was read from.
    """

    candidates: list[Any]
    dataset: DatasetConfig
    target_size: int | None = None
    budget: int = 3200
    min_size: int = 200
    sizes: list[int] | None = None
    zero_shot: bool = True
    strategy: str = "grid"
    method: str = "default"
    level: float = 0.9
    seed: int = 0
    max_length: int = 512
    metric: str = "loss"
    training_args: dict[str, Any] = field(default_factory=dict)
    output_dir: str | None = None
    store: str | None = None
    ntk_probe: bool = True
    max_flops: float | None = None
    reuse_published: bool = False
    retry_failed: bool = False
    path: str | None = None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> SelectConfig:
        """Read and check a config file; every problem is one :class:`ConfigError` line."""
        import yaml

        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file; pass a YAML config (see 'lensllm select --help')") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{where}: cannot read it ({_one_line(error)}); pass a readable YAML text file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{where}: not valid YAML{at} ({getattr(error, 'problem', None) or 'syntax error'}); "
                              "fix the file") from None
        return cls.from_dict(data, where=where, base=Path(path).resolve().parent)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "config", base: Path | None = None) -> SelectConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: the config must be a YAML mapping with 'candidates' and 'dataset', "
                              f"got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"path"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        for key in ("candidates", "dataset"):
            if not data.get(key):
                raise ConfigError(f"{where}: '{key}' is missing or empty; "
                                  + ("list the models to compare (Hub IDs or paths)" if key == "candidates" else
                                     "give dataset.id (a Hub dataset) or dataset.files (local files)"))
        candidates = data["candidates"]
        if not isinstance(candidates, list):
            raise ConfigError(f"{where}: 'candidates' must be a list of model IDs or {{model: ...}} mappings")
        base = base or Path.cwd()
        candidates = [_resolve_candidate(c, base) for c in candidates]
        dataset = _dataset(data["dataset"], where, base)
        values = {k: v for k, v in data.items() if k not in ("candidates", "dataset")}
        for key in ("training_args",):
            if key in values and not isinstance(values[key], dict):
                raise ConfigError(f"{where}: '{key}' must be a mapping of TrainingArguments keywords")
        for key in ("target_size", "budget", "min_size", "seed", "max_length"):
            if key in values and values[key] is not None and not _is_int(values[key]):
                raise ConfigError(f"{where}: '{key}' must be a whole number, got {values[key]!r}")
        for key in ("output_dir", "store"):
            if values.get(key):
                values[key] = _resolve_path(str(values[key]), base)
        return cls(candidates=candidates, dataset=dataset, path=where, **values)

    def selector(self, *, output_dir: str | os.PathLike | None = None, store: str | None = None, **overrides: Any):
        """The :class:`~lensllm_hf.LensLLMSelector` of this config (data loaded now).

        ``output_dir`` and ``store`` override the file's; the store defaults to ``output_dir/store``.
        """
        from .selector import LensLLMSelector
        from .selector.core import _quiet

        with _quiet(bool(overrides.get("verbose", False))):
            train, evalset = self.dataset.load()
        out = str(output_dir or self.output_dir or self.default_output_dir())
        params = dict(
            target_size=self.target_size, budget=self.budget, min_size=self.min_size, sizes=self.sizes,
            zero_shot=self.zero_shot, strategy=self.strategy, method=self.method, level=self.level, seed=self.seed,
            max_length=self.max_length, metric=self.metric, training_args=self.training_args, output_dir=out,
            store=store or self.store, ntk_probe=self.ntk_probe, max_flops=self.max_flops,
            reuse_published=self.reuse_published, retry_failed=self.retry_failed,
            text_column=self.dataset.text_column, eval_size=self.dataset.eval_size, dataset_name=self.dataset.label,
            dataset_config=self.dataset.config, dataset_split=self.dataset.eval_split or self.dataset.split,
        )
        params.update(overrides)
        return LensLLMSelector(self.candidates, train, evalset, **params)

    def default_output_dir(self) -> str:
        """``lensllm_out/<config file stem>`` in the current folder."""
        return os.path.join("lensllm_out", Path(self.path).stem if self.path else "select")


def _dataset(data: Any, where: str, base: Path) -> DatasetConfig:
    if isinstance(data, str):
        data = {"id": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: 'dataset' must be a Hub dataset ID or a mapping (id, config, split, eval_split, "
                          "text_column, files)")
    data = dict(data)
    if "path" in data:  # load_dataset's own word for it
        data["id"] = data.pop("path")
    if "name" in data:
        data["config"] = data.pop("name")
    known = {f.name for f in fields(DatasetConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown dataset key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    files = data.get("files")
    if files is not None:
        if isinstance(files, str):
            files = {"train": files}
        if not isinstance(files, dict) or "train" not in files or set(files) - {"train", "eval"}:
            raise ConfigError(f"{where}: dataset.files must be {{train: path, eval: path}} (eval optional)")
        resolved = {}
        for split, file in files.items():
            resolved[split] = _resolve_path(str(file), base)
            if "://" not in resolved[split] and not Path(resolved[split]).exists():
                raise ConfigError(f"{where}: dataset.files.{split} {file!r} does not exist (looked at "
                                  f"{resolved[split]}); fix the path (relative paths start at the config's folder)")
        data["files"] = resolved
    elif not data.get("id"):
        raise ConfigError(f"{where}: dataset needs 'id' (a Hub dataset such as wikitext) or 'files' (local files)")
    return DatasetConfig(**data)


def _resolve_candidate(item: Any, base: Path) -> Any:
    """Local model paths become absolute; the name stays as written (stable across machines)."""
    if isinstance(item, str):
        resolved = _maybe_local(item, base)
        return item if resolved == item else {"model": resolved, "name": item}
    if isinstance(item, dict) and isinstance(item.get("model"), str):
        item = dict(item)
        resolved = _maybe_local(item["model"], base)
        if resolved != item["model"]:
            from .selector.candidates import Candidate

            adapter = item.get("peft", item.get("peft_config"))
            item.setdefault("name", Candidate(item["model"], peft_config=adapter).name)
            item["model"] = resolved
        return item
    return item


def _maybe_local(model: str, base: Path) -> str:
    if model.startswith((".", "/", "~")) or (base / model).is_dir():
        return str((base / os.path.expanduser(model)).resolve())
    return model


def _resolve_path(value: str, base: Path) -> str:
    if "://" in value:
        return value
    return str((base / os.path.expanduser(value)).resolve())


def _load_file(path: str, builder: str | None):
    import datasets

    suffix = Path(path.split("::")[0]).suffix.lower()
    kind = builder or _BUILDERS.get(suffix)
    if kind is None:
        raise ConfigError(f"{path}: unknown file type {suffix!r}; use .jsonl/.json, .csv, .txt or .parquet, or set "
                          "dataset.id to the datasets builder (json, csv, text, parquet)")
    try:
        return datasets.load_dataset(kind, data_files={"data": path}, split="data")
    except Exception as error:
        raise ConfigError(f"{path}: cannot read it as {kind} ({_one_line(error)}); fix the file") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]
