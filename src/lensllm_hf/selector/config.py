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
      text_column: text            # plain text; or prompt_column + completion_column, or messages_column
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

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import with_config
from typing_extensions import NotRequired, TypedDict

from .._utils import display, load_yaml, one_line, read_bounded
from ..errors import BoundsError, ConfigError, LensLLMError
from .params import Examples, Param, SelectionParams, check_params, check_task, param, params_of, run_sizes

__all__ = ["DatasetConfig", "SelectConfig"]

#: Loader of ``datasets.load_dataset`` per local file suffix.
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".txt": "text", ".parquet": "parquet",
            ".arrow": "arrow"}


def _as_in_selector(name: str) -> Any:
    """A dataset key that is a selector parameter: the same declaration, settable in the file."""
    f = next(f for f in dataclasses.fields(SelectionParams) if f.name == name)
    spec: Param = dataclasses.replace(f.metadata["lensllm"], yaml=True)
    return field(default=f.default, metadata={"lensllm": spec})


@with_config({"extra": "forbid", "strict": True})
class Files(TypedDict):
    """Local data files: ``{train: path, eval: path}`` (eval optional)."""

    train: str
    eval: NotRequired[str]


@dataclass
class DatasetConfig:
    """Where the task data comes from: a Hub dataset (``id``, ``config``, ``split``) or local ``files``.

    Attributes:
        id: Hub dataset ID (or a ``datasets`` builder such as ``json`` with ``files``).
        config: the dataset configuration (``name`` in ``load_dataset``).
        split: the training split.
        eval_split: the evaluation split; None holds out ``eval_size`` rows of ``split``.
        text_column: the text column of plain-text data.
        prompt_column, completion_column: prompt/completion data (the loss counts the completion).
        messages_column: conversational data (``[{role, content}]``, rendered with the chat template).
        files: local files, ``{train: path, eval: path}`` (JSON lines, CSV, text, Parquet).
        eval_size: rows held out when there is no eval split or file.
        eval_rows: use only the first rows of the eval set (a big test set evaluates slowly).
        revision: of the Hub dataset.
    """

    id: str | None = param(None, help="Hub dataset ID, or a datasets builder (json, csv, ...) with files")
    config: str | None = param(None, help="the dataset configuration")
    split: str = param("train", help="the training split")
    eval_split: str | None = param(None, help="the evaluation split")
    text_column: str = _as_in_selector("text_column")
    prompt_column: str | None = _as_in_selector("prompt_column")
    completion_column: str | None = _as_in_selector("completion_column")
    messages_column: str | None = _as_in_selector("messages_column")
    files: Files | None = param(None, example="{train: data/train.jsonl, eval: data/eval.jsonl}", help="local files")
    eval_size: Examples = _as_in_selector("eval_size")
    eval_rows: Examples | None = param(None, example="500", help="evaluate on the first rows only")
    revision: str | None = param(None, help="of the Hub dataset")

    @property
    def columns(self) -> dict[str, Any]:
        """The column parameters of the selector (``text_column``, ``prompt_column``, ...)."""
        return {"text_column": self.text_column, "prompt_column": self.prompt_column,
                "completion_column": self.completion_column, "messages_column": self.messages_column}

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
                raise ConfigError(f"cannot load the dataset {display(self.id)!r} (config {self.config!r}, split "
                                  f"{self.split!r}): {one_line(error, 300)}; check dataset.id/config/split, or use "
                                  "dataset.files offline") from None
        if evalset is not None and self.eval_rows is not None:
            evalset = evalset.select(range(min(self.eval_rows, len(evalset))))
        return train, evalset


#: Top-level keys of a config file besides the selection parameters.
_SECTIONS = ("candidates", "dataset")


@dataclass
class SelectConfig:
    """A whole selection: candidates, data and the selection parameters the file sets.

    ``params`` holds the parameters of :class:`~lensllm_hf.LensLLMSelector` the file sets
    (declared in :class:`~lensllm_hf.selector.params.SelectionParams`, checked when read); the
    others keep the selector's defaults. ``config.budget`` and the like read them. ``path`` is
    the file it was read from.
    """

    candidates: list[Any]
    dataset: DatasetConfig
    params: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __getattr__(self, name: str) -> Any:
        declared = params_of()
        if name in declared and name != "params":
            return self.__dict__.get("params", {}).get(name, declared[name][2])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> SelectConfig:
        """Read and check a config file; every problem is one :class:`ConfigError` line."""
        import yaml

        where = str(path)
        try:
            text = read_bounded(path, where).decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{display(where)}: no such file; pass a YAML config (see 'lensllm select --help')",
                              path=where) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{display(where)}: cannot read it ({one_line(error)}); pass a readable YAML text "
                              "file", path=where) from None
        except BoundsError as error:
            raise ConfigError(str(error), path=where) from None
        try:
            data = load_yaml(text, where)
        except BoundsError as error:
            raise ConfigError(f"{error}; fix the file", path=where) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{display(where)}: not valid YAML{at} ({getattr(error, 'problem', None) or 'syntax error'}); "
                              "fix the file", path=where) from None
        return cls.from_dict(data, where=where, base=Path(path).resolve().parent)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "config", base: Path | None = None) -> SelectConfig:
        """Check a whole config (keys, types, ranges, candidates, training arguments, files) before any work."""
        if not isinstance(data, dict):
            raise ConfigError(f"{display(where)}: the config must be a YAML mapping with 'candidates' and 'dataset', "
                              f"got {type(data).__name__}", path=where)
        _refuse_nul(data, where)
        for key in _SECTIONS:
            if not data.get(key):
                raise ConfigError(f"{display(where)}: '{key}' is missing or empty; "
                                  + ("list the models to compare (Hub IDs or paths)" if key == "candidates" else
                                     "give dataset.id (a Hub dataset) or dataset.files (local files)"))
        base = base or Path.cwd()
        values = {k: v for k, v in data.items() if k not in _SECTIONS}
        misplaced = next((k for k in values if k in params_of(DatasetConfig)), None)
        if misplaced is not None:  # a column key at the top level: say where it goes
            raise ConfigError(f"{display(where)}: {misplaced!r} belongs in the 'dataset' block; move it under "
                              "dataset:", path=where)
        params = check_params(values, where=where, yaml=True)
        for key in ("output_dir", "store"):
            if params.get(key):
                params[key] = _resolve_path(str(params[key]), base)
        candidates = _candidates(data["candidates"], where, base)
        dataset = _dataset(data["dataset"], where, base)
        config = cls(candidates=candidates, dataset=dataset, params=params, path=where)
        config.check()
        return config

    def with_overrides(self, overrides: dict[str, Any]) -> SelectConfig:
        """A copy with some parameters replaced (checked values, e.g. from command-line flags), checked again."""
        config = dataclasses.replace(self, params={**self.params, **overrides})
        config.check()
        return config

    def check(self) -> None:
        """The rules between parameters (sizes, task columns, metric) and the candidates; cheap, no torch."""
        from .candidates import as_candidates
        from .plan import check_training_args_type

        with self._errors_name_the_file() as where:
            run_sizes(self.params, where=where)
            check_task({**self.params, **self.dataset.columns}, where=where)
            as_candidates(self.candidates)
            check_training_args_type(self.params.get("training_args"), where=where)

    def check_training_args(self) -> None:
        """Each candidate's ``TrainingArguments`` built now (imports torch): before runs are made, not to rank."""
        from .candidates import as_candidates
        from .plan import check_training_args

        with self._errors_name_the_file() as where:
            check_training_args(self.params.get("training_args"), as_candidates(self.candidates), where=where)

    @contextlib.contextmanager
    def _errors_name_the_file(self) -> Iterator[str]:
        """Yields the file's name; a :class:`~lensllm_hf.errors.LensLLMError` inside becomes a
        :class:`~lensllm_hf.errors.ConfigError` naming it."""
        where = self.path or "config"
        try:
            yield where
        except LensLLMError as error:
            text = str(error)
            raise ConfigError(text if text.startswith(display(where)) else f"{display(where)}: {text}", path=where,
                              key=getattr(error, "key", None), value=getattr(error, "value", None)) from None

    def selector(self, *, output_dir: str | os.PathLike | None = None, store: str | None = None, **overrides: Any):
        """The :class:`~lensllm_hf.LensLLMSelector` of this config (data loaded now).

        ``output_dir`` and ``store`` override the file's; the store defaults to ``output_dir/store``.
        """
        from . import LensLLMSelector
        from .runner import quiet_logs

        with quiet_logs(bool(overrides.get("verbose", self.params.get("verbose", False)))):
            train, evalset = self.dataset.load()
        params = {**self.params, **overrides}
        params["output_dir"] = str(output_dir or params.get("output_dir") or self.default_output_dir())
        params["store"] = store or params.get("store")
        params.update(**self.dataset.columns, eval_size=self.dataset.eval_size,
                      dataset_name=self.dataset.label, dataset_config=self.dataset.config,
                      dataset_split=self.dataset.eval_split or self.dataset.split)
        return LensLLMSelector(self.candidates, train, evalset, **params)

    def resolved_output_dir(self) -> str:
        """Where outputs go, as an absolute path: the file's ``output_dir`` or :meth:`default_output_dir`."""
        return str(Path(self.params.get("output_dir") or self.default_output_dir()).resolve())

    def default_output_dir(self) -> str:
        """``lensllm_out/<config file stem>`` in the current folder."""
        return os.path.join("lensllm_out", Path(self.path).stem if self.path else "select")


def _candidates(items: Any, where: str, base: Path) -> list[Any]:
    if not isinstance(items, list):
        raise ConfigError(f"{display(where)}: 'candidates' must be a list of model IDs or {{model: ...}} mappings",
                          path=where)
    out = []
    for i, item in enumerate(items):
        resolved = _resolve_candidate(item, base)
        model = resolved.get("model") if isinstance(resolved, dict) else resolved
        written = item.get("model") if isinstance(item, dict) else item
        if isinstance(model, str) and _looks_local(str(written)) and not _is(Path.is_dir, Path(model)):
            raise ConfigError(f"{display(where)}: candidates[{i}]: the local model folder {_short(written)!r} does not "
                              f"exist (looked at {_short(model)}); fix the path (relative paths start at the config's "
                              "folder) or give a Hub ID", path=where)
        out.append(resolved)
    return out


def _dataset(data: Any, where: str, base: Path) -> DatasetConfig:
    if isinstance(data, str):
        data = {"id": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{display(where)}: 'dataset' must be a Hub dataset ID or a mapping (id, config, split, "
                          "eval_split, text_column, files)", path=where)
    data = dict(data)
    if "path" in data:  # load_dataset's own word for it
        data["id"] = data.pop("path")
    if "name" in data:
        data["config"] = data.pop("name")
    if isinstance(data.get("files"), str):
        data["files"] = {"train": data["files"]}
    data = check_params(data, cls=DatasetConfig, where=f"{where}: dataset", yaml=True)
    files = data.get("files")
    if files is not None:
        resolved = {}
        for split, file in files.items():
            resolved[split] = _resolve_path(file, base)
            if "://" not in resolved[split] and not _is(Path.is_file, Path(resolved[split])):
                raise ConfigError(f"{display(where)}: dataset.files.{split} {display(file)!r} does not exist (looked at "
                                  f"{display(resolved[split])}); fix the path (relative paths start at the config's "
                                  "folder)", path=where)
            suffix = Path(resolved[split].split("::")[0]).suffix.lower()
            if data.get("id") is None and suffix not in BUILDERS:
                raise ConfigError(f"{display(where)}: dataset.files.{split} {display(file)!r}: unknown file type "
                                  f"{suffix or '(none)'!r}; use .jsonl/.json, .csv, .txt or .parquet, or set dataset.id "
                                  "to the datasets builder (json, csv, text, parquet)", path=where)
        data["files"] = resolved
    elif data.get("id") is None:
        raise ConfigError(f"{display(where)}: dataset needs 'id' (a Hub dataset such as wikitext) or 'files' (local "
                          "files)", path=where)
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
            from .candidates import Candidate

            adapter = item.get("peft", item.get("peft_config"))
            item.setdefault("name", Candidate(item["model"], peft_config=adapter).name)
            item["model"] = resolved
        return item
    return item


def _refuse_nul(data: Any, where: str) -> None:
    """A NUL character in any key or value of the config is one line naming it: no file name or model
    ID holds one, and the operating system refuses it in a path (``ValueError: embedded null byte``)."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        at, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                name = f"{at}.{key}" if at else str(key)
                if "\x00" in name:
                    raise ConfigError(f"{display(where)}: the key '{display(name)}' holds a NUL character; remove it",
                                      key=name, path=where)
                stack.append((name, item))
        elif isinstance(value, list):
            stack.extend((f"{at}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            raise ConfigError(f"{display(where)}: {display(at)} '{display(value[:80])}' holds a NUL character, "
                              "which no path or model ID may; remove it", key=at, value=value, path=where)


def _short(text: object, limit: int = 120) -> str:
    """``text`` for a one-line message: displayed safely, cut in the middle past ``limit`` characters."""
    text = display(text)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-limit // 2:]}"


def _is(test: Callable[[Path], bool], path: Path) -> bool:
    """``test(path)`` (``Path.is_dir``, ``Path.is_file``), False for a name no file system takes (too long)."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def _looks_local(model: str) -> bool:
    return model.startswith((".", "/", "~"))


def _maybe_local(model: str, base: Path) -> str:
    if _looks_local(model) or _is(Path.is_dir, base / model):
        return str((base / os.path.expanduser(model)).resolve())
    return model


def _resolve_path(value: str, base: Path) -> str:
    if "://" in value:
        return value
    return str((base / os.path.expanduser(value)).resolve())


def _load_file(path: str, builder: str | None):
    import datasets

    suffix = Path(path.split("::")[0]).suffix.lower()
    kind = builder or BUILDERS.get(suffix)
    if kind is None:
        raise ConfigError(f"{display(path)}: unknown file type {suffix!r}; use .jsonl/.json, .csv, .txt or .parquet, or "
                          "set dataset.id to the datasets builder (json, csv, text, parquet)", path=path)
    try:
        return datasets.load_dataset(kind, data_files={"data": path}, split="data")
    except Exception as error:
        raise ConfigError(f"{display(path)}: cannot read it as {kind} ({one_line(error, 300)}); fix the file",
                          path=path) from None
