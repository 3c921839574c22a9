"""Run records: one JSON document per fine-tuning run, and stores that hold many of them.

A record is what :class:`~lensllm_hf.LensLLMCallback` writes and what the scaling-law engine
reads: the model, the subset size D, every evaluation, the final eval loss, the FLOPs spent and
the NTK probe (DESIGN.md, section 3). A *store* is a folder or any fsspec URL (``s3://...``,
``gs://...``, ``memory://...``) where runs from many machines meet; each record there has a
stable name per (model, subset size, seed, config hash), so a planner can skip runs already done.

Writes are atomic: the text goes to a temporary file that is then renamed over the target (on
object stores: written under a temporary key, then moved), so a reader sees the previous record
or the new one, never half a file.

Example:
    >>> from lensllm_hf import records
    >>> records.write_record(record, "runs/")          # runs/<model>__D800__seed0__<hash>.lensllm.json
    >>> table = records.load_table("runs/")            # a CurveTable: model x subset size -> loss
    >>> records.has_record("runs/", "gpt2", 800, seed=0, config_hash=record.config_hash)
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .curves import CurveTable
from .errors import LensLLMError

__all__ = [
    "DEFAULT_RECORD_NAME",
    "SCHEMA_VERSION",
    "STATUSES",
    "Evaluation",
    "RecordError",
    "RunRecord",
    "SchemaError",
    "check_writable",
    "config_hash",
    "has_record",
    "list_records",
    "load_records",
    "load_table",
    "read_record",
    "record_name",
    "record_path",
    "write_record",
]

#: Version of the record layout; readers refuse versions they do not know.
SCHEMA_VERSION = 1
#: File name of the record in a run's ``output_dir`` when no store is given.
DEFAULT_RECORD_NAME = "lensllm_record.json"
#: Suffix of records in a store (so a store can share a folder with other JSON files).
STORE_SUFFIX = ".lensllm.json"
#: ``complete``: trained and evaluated to the end. ``interrupted``: started and not finished
#: (the process may still be running, or died without a word). ``failed``: an error, in ``error``.
STATUSES = ("complete", "interrupted", "failed")
#: Keys every record has at the top level.
REQUIRED_KEYS = ("schema_version", "model", "train_size", "evaluations", "final_eval_loss", "total_flos",
                 "ntk", "status")


class RecordError(LensLLMError):
    """A record or store that cannot be read or written; one line naming the file and the fix."""


class SchemaError(RecordError, ValueError):
    """A record whose content does not follow the schema (unknown version, missing or bad keys)."""


@dataclass
class Evaluation:
    """One evaluation during a run.

    Attributes:
        step: optimizer steps done when it ran (0: before training, the zero-shot point).
        examples_seen: training examples consumed so far (all processes together).
        eval_loss: the run's loss metric (``eval_loss``, or ``eval_<name>_loss`` for a named
            eval set); None when it was NaN or infinite.
        metrics: every metric the Trainer reported, non-finite values as None.
        epoch: the Trainer's fractional epoch.
        tokens_seen: input tokens so far, when the Trainer counts them
            (``include_num_input_tokens_seen``), else None.
        total_flos: FLOPs spent so far (the Trainer's count; between logging steps of a
            multi-process run the unlogged part is estimated from the main process).
        at_examples: the stream-mode size that asked for this evaluation, if any.
    """

    step: int
    examples_seen: int
    eval_loss: float | None
    metrics: dict[str, float | None] = field(default_factory=dict)
    epoch: float | None = None
    tokens_seen: int | None = None
    total_flos: float | None = None
    at_examples: int | None = None


@dataclass
class RunRecord:
    """Everything LensLLM keeps about one fine-tuning run (schema version 1).

    Only ``model["id"]`` and ``train_size`` are needed to place a run in a curve table; the rest
    makes it reproducible and comparable. Build one with keywords; :meth:`to_dict` gives the JSON
    document and :meth:`from_dict` checks and rebuilds it.

    Attributes:
        model: ``id`` (the row name in curve tables), ``name_or_path``, ``revision``,
            ``architecture``, ``num_parameters``, ``trainable_parameters``.
        train_size: the subset size D (None when unknown).
        status: one of :data:`STATUSES`; ``error`` says why when ``failed``.
        adapter: the PEFT summary (``peft_type``, ``r``, ``lora_alpha``, ``target_modules``, ...,
            ``trainable_parameters``), or None.
        dataset: ``fingerprint`` and ``num_rows`` of the training set, same for the eval set.
        seed, world_size, effective_batch_size, config_hash, training: the run's set-up
            (``training`` holds the arguments the config hash covers).
        metric: the key of the loss in the evaluations' metrics.
        evaluations: every evaluation, one per step (see :class:`Evaluation`).
        final_eval_loss: the loss of the evaluation at the last step; None if NaN or missing.
        train_loss, train_curve: the Trainer's training loss, and the logged losses per step.
        total_flos: the Trainer's FLOP count for the whole run.
        ntk: the NTK probe (``F``, ``eta``, ``t``, ``eigenvalues``, ``r``, ``coefficients``, ...,
            or ``{"F": None, "error": ...}``), None when the probe was off.
        stream: ``{"eval_at_examples": [...]}`` for a stream-mode run.
        wall_time_s, started_at, finished_at, versions, warnings: bookkeeping.

    Example:
        >>> rec = RunRecord(model={"id": "gpt2"}, train_size=800, seed=0, status="complete",
        ...                 evaluations=[Evaluation(step=50, examples_seen=800, eval_loss=2.9)],
        ...                 final_eval_loss=2.9, total_flos=1.2e13)
        >>> rec.name
        'gpt2__D800__seed0__none.lensllm.json'
    """

    model: dict[str, Any]
    train_size: int | None
    status: str = "interrupted"
    error: str | None = None
    schema_version: int = SCHEMA_VERSION
    adapter: dict[str, Any] | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    world_size: int = 1
    effective_batch_size: int | None = None
    config_hash: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metric: str = "eval_loss"
    evaluations: list[Evaluation] = field(default_factory=list)
    final_eval_loss: float | None = None
    train_loss: float | None = None
    train_curve: list[dict[str, Any]] = field(default_factory=list)
    total_flos: float | None = None
    ntk: dict[str, Any] | None = None
    stream: dict[str, Any] | None = None
    wall_time_s: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def model_id(self) -> str:
        return str(self.model.get("id"))

    @property
    def name(self) -> str:
        """The record's stable file name in a store (see :func:`record_name`)."""
        return record_name(self.model_id, self.train_size, self.seed, self.config_hash)

    @property
    def zero_shot_loss(self) -> float | None:
        """The loss of the evaluation at step 0 (before any training), if the run made one."""
        for ev in self.evaluations:
            if ev.step == 0 or ev.examples_seen == 0:
                return ev.eval_loss
        return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: plain types only, non-finite floats as None."""
        return _finite(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "record") -> RunRecord:
        """Check ``data`` against the schema and build the record; raises :class:`SchemaError`."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where}: a record is a JSON object, got {type(data).__name__}; "
                              "point at a file written by LensLLMCallback")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
                raise SchemaError(f"{where}: schema_version {version} is newer than this lensllm_hf reads "
                                  f"({SCHEMA_VERSION}); upgrade lensllm_hf (pip install -U lensllm_hf)")
            raise SchemaError(f"{where}: unknown schema_version {version!r} (this lensllm_hf reads "
                              f"{SCHEMA_VERSION}); re-run the run or delete the file")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise SchemaError(f"{where}: missing key(s) {', '.join(missing)}; the file is not a complete "
                              "LensLLM record, re-run the run or delete the file")
        model = data["model"]
        if not isinstance(model, Mapping) or not isinstance(model.get("id"), str) or not model["id"]:
            raise SchemaError(f"{where}: 'model' must be an object with a non-empty 'id'; fix or delete the file")
        if data["status"] not in STATUSES:
            raise SchemaError(f"{where}: status {data['status']!r} is not one of {', '.join(STATUSES)}; "
                              "fix or delete the file")
        train_size = data["train_size"]
        if train_size is not None and (not _is_int(train_size) or train_size < 0):
            raise SchemaError(f"{where}: train_size must be a whole number >= 0, got {train_size!r}; "
                              "fix or delete the file")
        for key in ("final_eval_loss", "total_flos", "train_loss", "wall_time_s"):
            if data.get(key) is not None and not _is_number(data[key]):
                raise SchemaError(f"{where}: {key} must be a number or null, got {data[key]!r}; fix or delete the file")
        if data["ntk"] is not None and not isinstance(data["ntk"], Mapping):
            raise SchemaError(f"{where}: 'ntk' must be an object or null; fix or delete the file")
        if not isinstance(data["evaluations"], list):
            raise SchemaError(f"{where}: 'evaluations' must be a list; fix or delete the file")
        evaluations = []
        names = {f.name for f in fields(Evaluation)}
        for i, ev in enumerate(data["evaluations"]):
            if (not isinstance(ev, Mapping) or not _is_int(ev.get("step")) or not _is_int(ev.get("examples_seen"))
                    or (ev.get("eval_loss") is not None and not _is_number(ev["eval_loss"]))):
                raise SchemaError(f"{where}: evaluation {i} needs whole-number 'step' and 'examples_seen' and a "
                                  "numeric or null 'eval_loss'; fix or delete the file")
            evaluations.append(Evaluation(**{k: v for k, v in ev.items() if k in names}))
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k != "evaluations"}
        return cls(evaluations=evaluations, **kwargs)


def record_name(model: str, train_size: int | None, seed: int | None, config_hash: str | None) -> str:
    """The stable file name of a run in a store: ``<model>__D<size>__seed<seed>__<hash>.lensllm.json``.

    The model ID is kept readable (``/`` becomes ``--`` as in the Hub cache); IDs too long for a
    file name (deep local paths) are cut and completed with a hash of the whole ID.

    Example:
        >>> record_name("Qwen/Qwen2-0.5B", 800, 0, "3f2a9c01d4")
        'Qwen--Qwen2-0.5B__D800__seed0__3f2a9c01d4.lensllm.json'
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", str(model).replace("/", "--")).strip("-.") or "model"
    if len(slug) > 96:
        slug = f"{slug[-80:].lstrip('-.')}-{hashlib.sha256(str(model).encode()).hexdigest()[:8]}"
    size = "all" if train_size is None else int(train_size)
    seed_part = "none" if seed is None else int(seed)
    return f"{slug}__D{size}__seed{seed_part}__{config_hash or 'none'}{STORE_SUFFIX}"


def record_path(store: str | os.PathLike, model: str, train_size: int | None, seed: int | None,
                config_hash: str | None) -> str:
    """Where the record of this run lives in ``store`` (a path, or a URL for fsspec stores).

    Example:
        >>> record_path("s3://bucket/runs", "gpt2", 800, 0, "3f2a9c01d4")
        's3://bucket/runs/gpt2__D800__seed0__3f2a9c01d4.lensllm.json'
    """
    return _join(str(store), record_name(model, train_size, seed, config_hash))


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a training configuration (key order and float spelling do not matter).

    Example:
        >>> config_hash({"learning_rate": 5e-5, "epochs": 3}) == config_hash({"epochs": 3, "learning_rate": 0.00005})
        True
    """
    text = json.dumps(_finite(dict(config)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def write_record(record: RunRecord | Mapping[str, Any], store_or_path: str | os.PathLike) -> str:
    """Write ``record`` atomically; return where it went.

    ``store_or_path`` ending in ``.json`` is the file itself; anything else is a store (folder or
    fsspec URL, created if needed) and the file is ``store/record.name``.

    Example:
        >>> write_record(rec, "memory://runs")
        'memory://runs/gpt2__D800__seed0__none.lensllm.json'
    """
    if not isinstance(record, RunRecord):
        record = RunRecord.from_dict(record, where="write_record")
    target = str(store_or_path)
    if not target.endswith(".json"):
        target = _join(target, record.name)
    text = json.dumps(record.to_dict(), indent=2, allow_nan=False) + "\n"
    fs, path = _fs(target)
    try:
        if _is_local(fs):
            _atomic_local(path, text)
        else:
            parent = path.rsplit("/", 1)[0]
            fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.tmp-{uuid.uuid4().hex[:8]}"
            fs.pipe_file(tmp, text.encode())
            try:
                fs.mv(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    fs.rm(tmp)
                raise
    except OSError as error:
        raise RecordError(f"{target}: cannot write the record ({error.__class__.__name__}: {error}); "
                          "pass a writable folder or URL") from error
    return target


def read_record(path: str | os.PathLike) -> RunRecord:
    """Read and check one record; raises :class:`RecordError` / :class:`SchemaError` naming the file."""
    where = str(path)
    fs, fs_path = _fs(where)
    try:
        raw = fs.cat_file(fs_path)
    except FileNotFoundError:
        raise RecordError(f"{where}: no such record; pass the path of a lensllm_record.json or a store") from None
    except IsADirectoryError:
        raise RecordError(f"{where}: is a folder; use list_records() or load_table() for a store") from None
    except OSError as error:
        raise RecordError(f"{where}: cannot read ({error.__class__.__name__}: {error}); check the path") from error
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SchemaError(f"{where}: not a text file; a record is JSON written by LensLLMCallback") from None
    except json.JSONDecodeError as error:
        raise SchemaError(f"{where}: not valid JSON ({error.msg} at line {error.lineno}); the file is damaged, "
                          "re-run the run or delete the file") from None
    return RunRecord.from_dict(data, where=where)


def list_records(store: str | os.PathLike) -> list[str]:
    """Paths (or URLs) of every record in a store, sorted.

    Found: ``*.lensllm.json`` files at any depth, and ``lensllm_record.json`` files (the default
    name in a run's ``output_dir``), so a folder of output dirs is a store too.
    """
    where = str(store)
    fs, root = _fs(where)
    try:
        if not fs.isdir(root):
            raise RecordError(f"{where}: no such store (folder or URL); pass the folder the runs wrote to")
        found = [path for path in fs.find(root)
                 if path.endswith(STORE_SUFFIX) or path.rsplit("/", 1)[-1] == DEFAULT_RECORD_NAME]
    except OSError as error:
        raise RecordError(f"{where}: cannot list the store ({error.__class__.__name__}: {error}); check the URL "
                          "and credentials") from error
    return sorted(path if _is_local(fs) else fs.unstrip_protocol(path) for path in found)


def load_records(store: str | os.PathLike) -> list[RunRecord]:
    """Every record of a store, read and checked (the first bad file raises, named)."""
    return [read_record(path) for path in list_records(store)]


def has_record(store: str | os.PathLike, model: str, train_size: int | None, seed: int | None,
               config_hash: str | None, *, complete: bool = True) -> bool:
    """Whether the store holds this run (by its stable name); with ``complete``, only if it finished.

    Example:
        >>> has_record("runs/", "gpt2", 800, seed=0, config_hash="3f2a9c01d4")
        False
    """
    target = record_path(store, model, train_size, seed, config_hash)
    fs, path = _fs(target)
    try:
        if not fs.exists(path):
            return False
    except OSError:
        return False
    return not complete or read_record(target).status == "complete"


def load_table(store: str | os.PathLike | Iterable[RunRecord], *, zero_shot: bool = True,
               streamed: bool = True) -> CurveTable:
    """The curve table of a store: model x subset size -> test loss, with FLOPs and the NTK term.

    Args:
        store: a folder or fsspec URL (or records already loaded).
        zero_shot: add the column D = 0 from evaluations made before training (step 0).
        streamed: also use the evaluations a stream-mode run (``eval_at_examples``) made at its
            requested sizes. A separate run of that size, when there is one, wins.

    Only ``complete`` runs count. A cell is the mean ``final_eval_loss`` over seeds, ``flops`` the
    mean of their ``total_flos``; ``params`` is each model's parameter count and ``ntk_F`` the F of
    its complete run with the largest subset (F depends on the steps t, and the largest run is
    the closest to the target). Rows are model IDs; a model run with several training
    configurations gives one row per configuration, named ``model#config_hash``. A model with no
    usable point at some size carries a ``problems`` entry naming it, as ``CurveTable.read_csv`` does.

    Example:
        >>> table = load_table("runs/")
        >>> table.models, table.sizes
        (['gpt2', 'opt-125m'], array([  0, 200, 400, 800]))
    """
    source = str(store) if isinstance(store, (str, os.PathLike)) else "<records>"
    recs = load_records(store) if isinstance(store, (str, os.PathLike)) else list(store)
    complete = [r for r in recs if r.status == "complete"]
    if not complete:
        counts = {s: sum(r.status == s for r in recs) for s in STATUSES}
        raise RecordError(f"{source}: no complete run records ({len(recs)} found: "
                          + ", ".join(f"{n} {s}" for s, n in counts.items()) + "); let the runs finish or "
                          "point at the store they wrote to")
    hashes: dict[str, set[str | None]] = {}
    for r in complete:
        hashes.setdefault(r.model_id, set()).add(r.config_hash)

    def row(r: RunRecord) -> str:
        return r.model_id if len(hashes[r.model_id]) == 1 else f"{r.model_id}#{r.config_hash}"

    final: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    stream: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    params: dict[str, float] = {}
    ntk: dict[str, tuple[int, float]] = {}
    for r in complete:
        name = row(r)
        params.setdefault(name, _num(r.model.get("num_parameters")))
        if r.train_size is not None and r.final_eval_loss is not None:
            final.setdefault((name, int(r.train_size)), []).append((r.final_eval_loss, r.total_flos))
        if zero_shot and r.zero_shot_loss is not None:
            stream.setdefault((name, 0), []).append((r.zero_shot_loss, 0.0))
        if streamed:
            for ev in r.evaluations:
                if ev.at_examples and ev.eval_loss is not None:
                    stream.setdefault((name, int(ev.at_examples)), []).append((ev.eval_loss, ev.total_flos))
        F = _num((r.ntk or {}).get("F"))
        if math.isfinite(F) and r.train_size is not None and r.train_size >= ntk.get(name, (-1, 0.0))[0]:
            ntk[name] = (int(r.train_size), F)
    cells = {**stream, **final}  # a separate run of a size wins over a streamed point
    if not cells:
        raise RecordError(f"{source}: the complete runs recorded no finite eval loss; give the Trainer an "
                          "eval_dataset (runs with allow_no_eval=True only record the training loss)")
    models = sorted({name for name, _ in cells})
    sizes = sorted({size for _, size in cells})
    losses = np.full((len(models), len(sizes)), np.nan)
    flops = np.full((len(models), len(sizes)), np.nan)
    for (name, size), points in cells.items():
        i, j = models.index(name), sizes.index(size)
        losses[i, j] = float(np.mean([loss for loss, _ in points]))
        spent = [f for _, f in points if f is not None]
        flops[i, j] = float(np.mean(spent)) if spent else np.nan
    problems = {}
    for i, name in enumerate(models):
        missing = [str(sizes[j]) for j in range(len(sizes)) if np.isnan(losses[i, j])]
        if missing:
            problems[name] = (f"no complete run record with a finite eval loss at size(s) {', '.join(missing)}; "
                              "run those subsets or fit on the sizes every model has")
    param_arr = np.array([params.get(m, np.nan) for m in models])
    ntk_arr = np.array([ntk[m][1] if m in ntk else np.nan for m in models])
    return CurveTable(
        models=models,
        sizes=np.asarray(sizes, dtype=np.int64),
        losses=losses,
        params=param_arr if np.isfinite(param_arr).any() else None,
        flops=flops,
        ntk_F=ntk_arr if np.isfinite(ntk_arr).any() else None,
        source=source,
        problems=problems,
    )


def check_writable(folder: str | os.PathLike) -> None:
    """Fail early, with a clear message, when records cannot be written in ``folder`` (or URL).

    Creates the folder if needed and writes then deletes a small probe file.
    """
    folder = str(folder)
    fs, path = _fs(folder)
    probe = f"{path.rstrip('/')}/.lensllm-write-test-{uuid.uuid4().hex[:8]}"
    try:
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"ok")
        fs.rm(probe)
    except (OSError, ValueError) as error:
        raise RecordError(f"{folder}: cannot write run records there ({error.__class__.__name__}: {error}); "
                          "pass a writable output_dir or store (a folder or fsspec URL)") from error


# -- helpers ---------------------------------------------------------------------------------


def _fs(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as error:
        raise RecordError(f"{url}: not a usable folder or fsspec URL ({error}); install the fsspec backend "
                          "for that protocol or pass a local folder") from error


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _join(store: str, name: str) -> str:
    return f"{store.rstrip('/')}/{name}" if "://" in store else str(Path(store) / name)


def _atomic_local(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a store is shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _finite(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: Any) -> float:
    return float(value) if _is_number(value) else float("nan")
