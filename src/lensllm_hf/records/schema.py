"""The record layout: one run's identity (:class:`RunKey`) and everything kept about it (:class:`RunRecord`).

Both are dataclasses whose annotations are the schema: pydantic checks a document against them
when it is read (:meth:`RunRecord.from_dict`) and a key when it is made. Nothing here touches a
file system; :mod:`lensllm_hf.records.store` reads and writes records.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, Strict, with_config
from typing_extensions import Required, TypedDict

from .._utils import MAX_LOSS, fields_adapter, first_problem, json_safe, short
from ..errors import RecordError, SchemaError

__all__ = [
    "DEFAULT_RECORD_NAME",
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "STORE_SUFFIX",
    "Evaluation",
    "RunKey",
    "RunRecord",
    "adapter_hash",
    "config_hash",
    "legacy_record_name",
    "record_name",
]

#: Version of the record layout written today; 2 adds the run's full identity under ``key``.
SCHEMA_VERSION = 2
#: Versions this package reads (version 1 records have no ``key``; it is rebuilt from their fields).
READABLE_SCHEMA_VERSIONS = (1, 2)
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
#: Longest record file name (many object stores and file systems allow 255 bytes; keep room for
#: temporary-file prefixes and suffixes).
MAX_NAME_LENGTH = 200

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _plain_int(value: Any) -> Any:
    """A numpy integer as the Python int it equals (the same key); anything else as is."""
    return int(value) if isinstance(value, np.integer) else value


#: Largest count a record holds (examples, steps, tokens, sizes): beyond any real data set.
MAX_COUNT = 10**15
#: Most FLOPs a record holds (the largest training runs spend about 1e26).
MAX_FLOPS = 1e32

# What a record's values may be, checked by pydantic when a record is read (or a key made):
# no text for a number, no true for 1, no fraction for a count, nothing out of range (an eval
# loss of 1e308 is no measurement; a count of 10^5000 no count).
Whole = Annotated[int, Strict()]
Count = Annotated[int, Strict(), Field(ge=0)]
Counted = Annotated[int, Strict(), Field(ge=0, le=MAX_COUNT)]  # what a record counts (a key may name any size)
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Loss = Annotated[float, Strict(), Field(ge=-MAX_LOSS, le=MAX_LOSS)]
Flops = Annotated[float, Strict(), Field(ge=0, le=MAX_FLOPS)]
Status = Literal[STATUSES]


@with_config({"extra": "allow"})  # every other key of the model is kept as written
class ModelInfo(TypedDict, total=False):
    """The record's ``model``: ``id`` (the candidate exactly as given) and ``revision`` are checked."""

    id: Required[Annotated[str, Field(min_length=1)]]
    revision: str | None


@dataclass(frozen=True)
class RunKey:
    """The identity of one run: everything that makes two runs different runs.

    Attributes:
        model: the candidate exactly as given (Hub ID, local name, any unicode; not normalised).
        train_size: the subset size D (0: a zero-shot evaluation; None: the whole set).
        seed: the training seed.
        config_hash: hash of the training configuration (:func:`config_hash`).
        revision: the model revision (branch, tag or commit), None for the default.
        adapter: :func:`adapter_hash` of the adapter config, None for full fine-tuning.

    Example:
        >>> key = RunKey("Qwen/Qwen2-0.5B", 800, 0, "3f2a9c01d4")
        >>> key.name
        'Qwen--Qwen2-0.5B__D800__seed0__3f2a9c01d4__f1d512226dc30eac.lensllm.json'
    """

    model: Annotated[str, Field(min_length=1)]
    train_size: Annotated[Count, BeforeValidator(_plain_int)] | None  # numpy integers are the same key
    seed: Annotated[Whole, BeforeValidator(_plain_int)] | None
    config_hash: str | None
    revision: str | None = None
    adapter: str | None = None

    def __post_init__(self) -> None:
        try:
            checked = fields_adapter(RunKey).validate_python(self.__dict__)
        except ValueError as error:  # pydantic's ValidationError
            problem = first_problem(error)
            raise RecordError(f"RunKey: {problem.shown}: {problem.text}; pass the candidate's "
                              "name or Hub ID, whole-number train_size and seed, and text or None for the rest") from None
        self.__dict__.update(checked)

    @property
    def name(self) -> str:
        """The record's file name: a readable slug, then a hash of the exact key.

        The slug alone may collide (``модель/A`` and ``模型/A`` both read ``A``); the hash of the
        whole key makes the name injective. Only ``[A-Za-z0-9._-]``, never starting with a dot,
        at most :data:`MAX_NAME_LENGTH` characters, so it is safe on any file system or object
        store, case-insensitive ones included (the hash is lower-case hex).
        """
        size = "all" if self.train_size is None else str(self.train_size)
        seed = "none" if self.seed is None else str(self.seed)
        readable = (f"{_slug(self.model, 80)}__D{size[:24]}__seed{seed[:24]}__"
                    f"{_slug(self.config_hash, 24) if self.config_hash is not None else 'none'}")
        digest = hashlib.sha256(self._canonical().encode("utf-8")).hexdigest()[:16]
        return f"{readable}__{digest}{STORE_SUFFIX}"

    def to_dict(self) -> dict[str, Any]:
        """The key as JSON-able data (what a record stores under ``key``)."""
        return {"model": self.model, "revision": self.revision, "adapter": self.adapter,
                "config_hash": self.config_hash, "train_size": self.train_size, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "key") -> RunKey:
        """Rebuild a key; raises :class:`SchemaError` naming ``where`` when ``data`` is not one."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where}: 'key' must be an object; fix or delete the file", path=where, field="key")
        known = _KEY_FIELDS
        missing = sorted({"model", "train_size", "seed", "config_hash"} - set(data))
        if missing:
            raise SchemaError(f"{where}: 'key' lacks {', '.join(missing)}; fix or delete the file", path=where,
                              field="key")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except RecordError as error:
            raise SchemaError(f"{where}: bad 'key' ({str(error).removeprefix('RunKey: ').split('; pass')[0]}); fix "
                              "or delete the file", path=where, field="key") from None

    def describe(self) -> str:
        """The key's set parts, for messages: ``model='gpt2', train_size=800, seed=0, config_hash='h'``."""
        return ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if v is not None)

    def _canonical(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


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

    step: Counted
    examples_seen: Counted
    eval_loss: Loss | None
    metrics: dict[str, Number | None] = field(default_factory=dict)
    epoch: Number | None = None
    tokens_seen: Counted | None = None
    total_flos: Flops | None = None
    at_examples: Counted | None = None


@dataclass
class RunRecord:
    """Everything LensLLM keeps about one fine-tuning run (schema version 2).

    The run's identity, :attr:`key`, is built from ``model["id"]``, ``model["revision"]``,
    ``adapter_hash``, ``config_hash``, ``train_size`` and ``seed``; the JSON document stores it
    whole under ``key`` as well. Build one with keywords; :meth:`to_dict` gives the JSON document
    and :meth:`from_dict` checks and rebuilds it (version 1 documents too).

    Attributes:
        model: ``id`` (the candidate exactly as given; the row name in curve tables),
            ``name_or_path``, ``revision``, ``architecture``, ``num_parameters``,
            ``trainable_parameters``.
        train_size: the subset size D (None when unknown).
        status: one of :data:`STATUSES`; ``error`` says why when ``failed``.
        adapter: the PEFT summary (``peft_type``, ``r``, ``lora_alpha``, ``target_modules``, ...,
            ``trainable_parameters``), or None.
        adapter_hash: the key's adapter part (:func:`adapter_hash` of the adapter config, set by
            whoever builds the key), None for full fine-tuning. Stored in the JSON under ``key``.
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
        schema_version: the layout the record was read from (1 or 2); always written as
            :data:`SCHEMA_VERSION`.

    Example:
        >>> rec = RunRecord(model={"id": "gpt2"}, train_size=800, seed=0, status="complete",
        ...                 evaluations=[Evaluation(step=50, examples_seen=800, eval_loss=2.9)],
        ...                 final_eval_loss=2.9, total_flos=1.2e13)
        >>> rec.key
        RunKey(model='gpt2', train_size=800, seed=0, config_hash=None, revision=None, adapter=None)
    """

    model: ModelInfo
    train_size: Counted | None
    status: Status = "interrupted"
    error: str | None = None
    schema_version: Whole = SCHEMA_VERSION
    adapter: dict[str, Any] | None = None
    adapter_hash: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    seed: Whole | None = None
    world_size: Count = 1
    effective_batch_size: Count | None = None
    config_hash: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metric: str = "eval_loss"
    evaluations: list[Evaluation] = field(default_factory=list)
    final_eval_loss: Loss | None = None
    train_loss: Loss | None = None
    train_curve: list[dict[str, Any]] = field(default_factory=list)
    total_flos: Flops | None = None
    ntk: dict[str, Any] | None = None
    stream: dict[str, Any] | None = None
    wall_time_s: Number | None = None
    started_at: str | None = None
    finished_at: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def model_id(self) -> str:
        return str(self.model.get("id"))

    @property
    def key(self) -> RunKey:
        """The run's identity, from the record's own fields."""
        revision = self.model.get("revision")
        return RunKey(model=self.model_id, train_size=self.train_size, seed=self.seed, config_hash=self.config_hash,
                      revision=None if revision is None else str(revision), adapter=self.adapter_hash)

    @property
    def name(self) -> str:
        """The record's file name in a store: ``self.key.name``."""
        return self.key.name

    @property
    def zero_shot_loss(self) -> float | None:
        """The loss of the evaluation at step 0 (before any training), if the run made one."""
        for ev in self.evaluations:
            if ev.step == 0 or ev.examples_seen == 0:
                return ev.eval_loss
        return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (always the current schema version): plain types, non-finite floats as None."""
        data = json_safe(asdict(self))
        del data["adapter_hash"]  # one place for it: the key
        data["schema_version"] = SCHEMA_VERSION
        data["key"] = self.key.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "record") -> RunRecord:
        """Check ``data`` against the schema and build the record; raises :class:`SchemaError`."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where}: a record is a JSON object, got {type(data).__name__}; "
                              "point at a file written by LensLLMCallback", path=where)
        version = data.get("schema_version")
        if type(version) is not int or version not in READABLE_SCHEMA_VERSIONS:
            if type(version) is int and version > SCHEMA_VERSION:
                raise SchemaError(f"{where}: schema_version {version} is newer than this lensllm_hf reads "
                                  f"({SCHEMA_VERSION}); upgrade lensllm_hf (pip install -U lensllm_hf)", path=where,
                                  field="schema_version")
            raise SchemaError(f"{where}: unknown schema_version {short(version)} (this lensllm_hf reads "
                              f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}); re-run the run or delete the file",
                              path=where, field="schema_version")
        missing = [key for key in REQUIRED_KEYS + (("key",) if version >= 2 else ()) if key not in data]
        if missing:
            raise SchemaError(f"{where}: missing key(s) {', '.join(missing)}; the file is not a complete "
                              "LensLLM record, re-run the run or delete the file", path=where, field=missing[0])
        try:
            record = _record_adapter().validate_python(data)
        except ValueError as error:  # pydantic's ValidationError
            problem = first_problem(error)
            raise SchemaError(f"{where}: {problem.shown}: {problem.text}; fix or delete the file", path=where,
                              field=problem.key) from None
        if version >= 2:
            stored = RunKey.from_dict(data["key"], where=where)
            record.adapter_hash = stored.adapter
            if record.key != stored:
                raise SchemaError(f"{where}: its 'key' ({stored.describe()}) does not match its own fields "
                                  f"({record.key.describe()}); the file was edited or damaged, delete it or re-run "
                                  "the run", path=where, field="key")
        return record


_KEY_FIELDS = ("model", "train_size", "seed", "config_hash", "revision", "adapter")


@functools.cache
def _record_adapter() -> Any:
    """pydantic's validator of a record document (made once, on the first read)."""
    from pydantic import TypeAdapter

    return TypeAdapter(RunRecord)


def record_name(model: str | RunKey, train_size: int | None = None, seed: int | None = None,
                config_hash: str | None = None) -> str:
    """The file name of a run in a store: ``RunKey(model, train_size, seed, config_hash).name``.

    Example:
        >>> record_name("Qwen/Qwen2-0.5B", 800, 0, "3f2a9c01d4")
        'Qwen--Qwen2-0.5B__D800__seed0__3f2a9c01d4__f1d512226dc30eac.lensllm.json'
    """
    key = model if isinstance(model, RunKey) else RunKey(model, train_size, seed, config_hash)
    return key.name


def legacy_record_name(key: RunKey) -> str:
    """The name schema-version-1 stores used for ``key`` (read, never written).

    Not injective (``a/b`` and ``a:b`` share it), which is why version 2 adds a hash.
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", key.model.replace("/", "--")).strip("-.") or "model"
    if len(slug) > 96:
        slug = f"{slug[-80:].lstrip('-.')}-{hashlib.sha256(key.model.encode()).hexdigest()[:8]}"
    size = "all" if key.train_size is None else int(key.train_size)
    seed = "none" if key.seed is None else int(key.seed)
    return f"{slug}__D{size}__seed{seed}__{key.config_hash or 'none'}{STORE_SUFFIX}"


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a training configuration (key order and float spelling do not matter).

    Example:
        >>> config_hash({"learning_rate": 5e-5, "epochs": 3}) == config_hash({"epochs": 3, "learning_rate": 0.00005})
        True
    """
    text = json.dumps(json_safe(dict(config)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def adapter_hash(config: Any) -> str | None:
    """The adapter part of a :class:`RunKey`: a short stable hash of an adapter config, None for none.

    ``config`` is a mapping (as given in a selection config) or an object with ``to_dict()``
    (a ``peft.PeftConfig``). Counts that depend on the model (``trainable_parameters``) are left
    out. The same spelling must be hashed wherever the key is built: the selector passes its
    hash to the run it starts rather than letting the run recompute it from the wrapped model.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping):
        to_dict = getattr(config, "to_dict", None)
        config = to_dict() if callable(to_dict) else {"repr": repr(config)}
    return config_hash({str(k): v for k, v in config.items() if k != "trainable_parameters"})


# -- helpers ---------------------------------------------------------------------------------


def _slug(text: str, limit: int) -> str:
    slug = _UNSAFE.sub("-", text.replace("/", "--")).strip("-.")[:limit].strip("-.")
    return slug or "x"
