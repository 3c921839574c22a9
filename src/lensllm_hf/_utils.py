"""Small helpers every part of the package shares: one-line errors, safe display, atomic writes,
and bounded reading of outside data.

:func:`first_problem` puts pydantic's first validation error in words, so the selection
parameters, the YAML config, the callback's arguments and the run records all say a bad value
the same way (``sizes[1]='x': must be a whole number``).

Run records, model cards, fit JSON, curve tables and configs come from files and servers we do
not control: their readers parse them through :func:`read_bounded`, :func:`load_json` and
:func:`load_yaml` (pyyaml's loader and the json module, with their hooks), so a hostile or
damaged input is one :class:`~lensllm_hf.errors.BoundsError` line naming it, never a
``RecursionError``, an ``int()`` that refuses 5,000 digits, a blocked read of a FIFO or a
gigabyte in memory; :func:`check_prediction` refuses a fit whose numbers cannot be a loss.

Kept free of torch and of the rest of the package (it imports only :mod:`lensllm_hf.errors`), so
the fitting core, the records and the command line can all use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import functools
import math
import os
import json
import re
import socket
import stat
import tempfile
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .errors import BoundsError, LensLLMError

__all__ = ["MAX_DEPTH", "MAX_DOCUMENT_BYTES", "MAX_LOSS", "MAX_NUMBER_CHARS", "Problem", "atomic_write_text",
           "check_depth", "check_output_file", "check_prediction", "check_regular", "display", "fields_adapter",
           "first_problem", "implausible_prediction", "json_safe", "load_json", "load_yaml", "node_id", "one_line",
           "pid_alive", "read_bounded", "short", "suggest", "whole"]

#: Longest error text kept in one line (records, tables, terminal messages).
ONE_LINE_LIMIT = 500

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def one_line(error: BaseException | str, limit: int = ONE_LINE_LIMIT) -> str:
    """An exception (or text) as one line: ``Type: message``, whitespace collapsed, cut at a word within ``limit``.

    Example:
        >>> one_line(ValueError("bad\\n  value"))
        'ValueError: bad value'
    """
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = display(" ".join(text.split()))
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut[limit // 2:] else cut) + "…"  # at a word boundary


def json_safe(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars as Python numbers, NaN and infinities as None (JSON has neither).

    Example:
        >>> json_safe({"loss": float("nan"), "sizes": (200, 400)})
        {'loss': None, 'sizes': [200, 400]}
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def display(name: object) -> str:
    """``name`` safe to print on a terminal: control and bidi characters shown as escapes.

    Model names, file names and record fields come from files and servers we do not control; raw
    escape sequences would reach the user's terminal.

    Example:
        >>> display("gpt2\\x1b[31m")
        'gpt2\\\\x1b[31m'
    """
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(name))


@functools.cache
def fields_adapter(cls: type, names: frozenset[str] | None = None, *, extra: str = "forbid") -> Any:
    """A pydantic ``TypeAdapter`` of a mapping of ``cls``'s dataclass fields (or ``names`` of them).

    The dataclass is the one declaration (its fields' annotations carry the constraints, e.g.
    ``Annotated[int, Field(ge=1)]``); the adapter validates any subset of them and returns them
    normalised, strictly (no text for a number, no 1 for True, no NaN or infinity);
    ``extra="forbid"`` refuses undeclared keys ("ignore" drops them). pydantic is imported here, on first use, so the engine, which imports this module,
    never loads it.
    """
    from pydantic import ConfigDict, TypeAdapter
    from typing_extensions import TypedDict

    hints = typing.get_type_hints(cls, include_extras=True)
    declared = {f.name: hints[f.name] for f in dataclasses.fields(cls) if names is None or f.name in names}
    values = TypedDict(f"{cls.__name__}Values", declared, total=False)  # type: ignore[misc]
    values.__pydantic_config__ = ConfigDict(strict=True, extra=extra, allow_inf_nan=False,
                                            arbitrary_types_allowed=True)
    return TypeAdapter(values)


def whole(value: Any) -> Any:
    """A float that is a whole number as an int (YAML reads ``2.5e+4`` as 25000.0); anything else as is.

    Put before an int's strict check: ``Annotated[int, BeforeValidator(whole), Field(ge=1)]``.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def suggest(word: str, known: Iterable[str]) -> str:
    """``"; did you mean 'budget'?"`` when ``word`` is close to a known one, else ``""``.

    Example:
        >>> suggest("budgte", ["budget", "level"])
        "; did you mean 'budget'?"
    """
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Problem(NamedTuple):
    """The first problem pydantic found, in words: where (``sizes[1]``, ``generation.rows``), the
    value found there, and what it must be (``must be a whole number``)."""

    key: str
    value: Any
    text: str
    unknown: bool  # a key that is not declared

    @property
    def shown(self) -> str:
        """``key=value`` (just ``key`` when it is missing), safe to print."""
        return display(self.key) if self.text == "is required" else f"{display(self.key)}={short(self.value)}"


def first_problem(error: Any, *, yaml: bool = False) -> Problem:
    """The first error of a ``pydantic.ValidationError`` as a :class:`Problem`, for one-line messages.

    ``yaml``: the values were written in YAML, so say why text was not read as a number or a
    switch. (pydantic is not imported here: the engine uses this module and stays free of it.)
    """
    item = error.errors(include_url=False)[0]
    loc = list(item["loc"])
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    kind, ctx, value = item["type"], item.get("ctx") or {}, item.get("input")
    if kind == "extra_forbidden":
        return Problem(key, value, f"unknown key {str(loc[-1])!r}", True)
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", item["msg"]))
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        text = f"must be one of {', '.join(choices)}{suggest(str(value), choices)}"
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        text = f"must be {_BOUNDS[kind]} {bound:g}" if isinstance(bound, (int, float)) else \
            f"must be {_BOUNDS[kind]} {bound}"
    else:
        text = _KINDS.get(kind) or next((words for prefix, words in _KIND_PREFIXES if kind.startswith(prefix)),
                                        item["msg"][:1].lower() + item["msg"][1:])
        text += _hint(value, kind) if yaml else ""
    return Problem(key, value, text, False)


_BOUNDS = {"greater_than_equal": "at least", "greater_than": "above", "less_than_equal": "at most",
           "less_than": "below"}
_KINDS = {"missing": "is required", "string_too_short": "must not be empty", "finite_number": "must be a finite number",
          "callable_type": "must be a function", "none_required": "must be null", "too_short": "must not be empty"}
_KIND_PREFIXES = (("bool", "must be true or false"), ("int", "must be a whole number"), ("float", "must be a number"),
                  ("string", "must be a string"), ("str", "must be a string"), ("list", "must be a list"),
                  ("tuple", "must be a list"), ("dict", "must be a mapping"), ("mapping", "must be a mapping"))


def _hint(value: Any, kind: str) -> str:
    """Why a string was not taken for a number or a switch (YAML reads ``no`` and ``1e24`` as text)."""
    if not isinstance(value, str) or not kind.startswith(("int", "float", "bool")):
        return ""
    if value.strip().lower() in ("yes", "no", "on", "off", "true", "false", "y", "n"):
        return " (got a string: write true or false without quotes)"
    try:
        float(value)
    except ValueError:
        return ""
    return " (got a string: YAML reads 1e24 as text; write 1.0e+24 or the digits)"


def short(value: Any, limit: int = 60) -> str:
    """A value as shown in a one-line message: its repr (a type name for objects), cut at ``limit``."""
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None), list, tuple)) else type(value).__name__
    return display(text if len(text) <= limit else text[: limit - 1] + "…")


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Check, before any work, that a file can be written at ``path``; return it as a Path.

    Raises :class:`LensLLMError` (one line naming the path and the fix) when ``path`` is a folder,
    its folder does not exist, or that folder is not writable.

    Example:
        >>> check_output_file("/no/such/folder/out.json")
        Traceback (most recent call last):
        ...
        lensllm_hf.errors.LensLLMError: /no/such/folder/out.json: the folder /no/such/folder does not exist; create it or pass another output path
    """
    path = Path(path)
    if path.is_dir():
        raise LensLLMError(f"{display(path)}: is a folder; pass a file path for the {what} (e.g. {display(path / 'out.json')})")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise LensLLMError(f"{display(path)}: the folder {display(folder)} does not exist; create it or pass another output path")
    if not os.access(folder, os.W_OK):
        raise LensLLMError(f"{display(path)}: the folder {display(folder)} is not writable; pass another output path")
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to the local file ``path`` atomically: readers see the old file or the new one.

    The text goes to a temporary file beside the target, is flushed to disk, then renamed over it.
    A symlink is followed (the file it points at is replaced, the link stays) and an existing file
    keeps its permission bits.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    folder = target.parent if str(target.parent) else Path(".")
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# -- processes ---------------------------------------------------------------------------------


@functools.cache
def node_id() -> str:
    """This machine and pid namespace, ``host/namespace`` (two containers may share a host name, not a
    namespace): where a process id means the same process."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()}/{namespace}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this :func:`node_id` exists (True when unsure: a pid out of range is not
    a process; one owned by another user is)."""
    if not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    return True


# -- bounded reading of outside data ------------------------------------------------------------

#: Deepest nesting of lists and mappings read from any document (a record nests 4 deep, a card 6).
MAX_DEPTH = 32
#: Longest number literal read (a count, a seed or a float's repr takes well under 30 characters).
MAX_NUMBER_CHARS = 100
#: Largest document read whole (a record, a card, a fit JSON, a config; a real one is under 10 MB).
MAX_DOCUMENT_BYTES = 64 * 2**20
#: Most YAML aliases in one document (real cards and configs use none; each may expand a subtree).
MAX_YAML_ALIASES = 100
#: Largest loss a reader takes as a measurement: a per-token cross-entropy (or 1 - metric) is tens
#: at most; a loss of 1e6 would be a perplexity of e^1e6.
MAX_LOSS = 1e6
#: A prediction more than this many times the largest loss the fit saw is refused as absurd.
PREDICTION_FACTOR = 10.0

_DAMAGED = "the file is damaged or not what it should be"


def read_bounded(path: str | os.PathLike, where: str | None = None, *, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    A FIFO, device or socket is refused before it is opened for a blocking read. Raises
    :class:`~lensllm_hf.errors.BoundsError` for those and for a file over ``limit`` (its ``reason``
    says which, for a reader that words its own fix); ``IsADirectoryError`` for a folder and
    ``OSError`` (``FileNotFoundError`` ...) for a file that cannot be read, for the caller to word.
    """
    where = display(where if where is not None else os.fspath(path))
    check_regular(os.stat(path), where, limit)
    # O_NONBLOCK: if a FIFO took the name since the stat, opening it still returns at once.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        check_regular(os.fstat(fd), where, limit)
        chunks, left = [], limit + 1  # read by the MiB: one read of limit + 1 bytes would allocate them all
        while left and (chunk := os.read(fd, min(left, 2**20))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        reason = f"is over the {limit:,} bytes read"
        raise BoundsError(f"{where}: {reason}; {_DAMAGED}", path=where, reason=reason)
    return data


def check_regular(info: os.stat_result, where: str, limit: int = MAX_DOCUMENT_BYTES) -> None:
    """Refuse what ``os.stat`` says is not a regular file of at most ``limit`` bytes, before it is opened:
    ``IsADirectoryError`` for a folder, :class:`~lensllm_hf.errors.BoundsError` naming the kind of
    entry (``is a FIFO, not a regular file``) or the size."""
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder", where)
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "something else")
        reason = f"is {kind}, not a regular file"
        raise BoundsError(f"{where}: {reason}; pass a regular file", path=where, reason=reason)
    if info.st_size > limit:
        reason = f"is {info.st_size:,} bytes, more than the {limit:,} read"
        raise BoundsError(f"{where}: {reason}; {_DAMAGED}", path=where, reason=reason)


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


# -- JSON --------------------------------------------------------------------------------------


def _number(text: str, kind: type, where: str) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        raise BoundsError(f"{display(where)}: a number written with {len(text):,} characters (at most "
                          f"{MAX_NUMBER_CHARS} are read); {_DAMAGED}", path=where)
    return kind(text)


def load_json(text: str | bytes, where: str) -> Any:
    """``json.loads`` within the bounds: numbers of at most :data:`MAX_NUMBER_CHARS` characters,
    nesting of at most :data:`MAX_DEPTH`; past them, a :class:`~lensllm_hf.errors.BoundsError`.
    (``json.JSONDecodeError`` keeps its own type: callers word it themselves.)

    Example:
        >>> load_json('{"loss": 2.5}', "run.json")
        {'loss': 2.5}
        >>> load_json('{"loss": ' + '9' * 200 + '}', "run.json")
        Traceback (most recent call last):
        ...
        lensllm_hf.errors.BoundsError: run.json: a number written with 200 characters (at most 100 are read); ...
    """
    try:
        data = json.loads(text, parse_int=lambda s: _number(s, int, where),
                          parse_float=lambda s: _number(s, float, where))
    except RecursionError:
        raise BoundsError(f"{display(where)}: nested deeper than {MAX_DEPTH} levels; {_DAMAGED}", path=where) from None
    check_depth(data, where)
    return data


def check_depth(data: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """A :class:`~lensllm_hf.errors.BoundsError` when lists and mappings nest deeper than ``limit``
    (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > limit:
            raise BoundsError(f"{display(where)}: nested deeper than {limit} levels; {_DAMAGED}", path=where)
        stack.extend((child, depth + 1) for child in children)


# -- YAML --------------------------------------------------------------------------------------


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` within the bounds: at most :data:`MAX_DEPTH` levels, :data:`MAX_YAML_ALIASES`
    aliases and number literals of :data:`MAX_NUMBER_CHARS` characters. ``yaml.YAMLError`` keeps
    its type (callers word a syntax error with its line); a bound is a :class:`~lensllm_hf.errors.BoundsError`."""
    loader = _bounded_loader()(text)
    loader.lensllm_where = display(where)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@functools.cache
def _bounded_loader() -> type:
    """pyyaml's SafeLoader, counting depth and aliases as it composes and number lengths as it constructs."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        lensllm_where = "YAML"
        _depth = 0
        _aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self._aliases += 1
                if self._aliases > MAX_YAML_ALIASES:
                    raise BoundsError(f"{self.lensllm_where}: more than {MAX_YAML_ALIASES} YAML aliases; {_DAMAGED}",
                                      path=self.lensllm_where)
                return super().compose_node(parent, index)
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    raise BoundsError(f"{self.lensllm_where}: YAML nested deeper than {MAX_DEPTH} levels; "
                                      f"{_DAMAGED}", path=self.lensllm_where)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def _short_number(self, node) -> None:
            if len(node.value) > MAX_NUMBER_CHARS:
                line = node.start_mark.line + 1 if node.start_mark is not None else "?"
                raise BoundsError(f"{self.lensllm_where}: a number written with {len(node.value):,} characters at "
                                  f"line {line} (at most {MAX_NUMBER_CHARS} are read); {_DAMAGED}",
                                  path=self.lensllm_where)

        def construct_yaml_int(self, node):
            self._short_number(node)
            return super().construct_yaml_int(node)

        def construct_yaml_float(self, node):
            self._short_number(node)
            return super().construct_yaml_float(node)

    BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
    BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)
    return BoundedLoader


def check_prediction(fit: Any, at: float, level: float, where: str) -> Any:
    """``fit.prediction(at, level)`` (:class:`~lensllm_hf.engine.fit.Prediction`), or a
    :class:`~lensllm_hf.errors.BoundsError` naming ``where`` (the fit) when the numbers cannot be a loss
    (:func:`implausible_prediction`). numpy's overflow warnings are not printed: the error says it."""
    import numpy as np

    with np.errstate(all="ignore"):
        prediction = fit.prediction(at, level)
    problem = implausible_prediction(fit, prediction.predicted_loss, *prediction.interval)
    if problem:
        raise BoundsError(f"{display(where)}: refused at {at:,.0f} examples: {problem}; the fit was edited or damaged, "
                          "fit it again (lensllm fit, lensllm select)", path=where)
    return prediction


def implausible_prediction(fit: Any, predicted: float, low: float, high: float) -> str | None:
    """Why a fit's prediction cannot be a loss (None when it can).

    Refused: a prediction or interval bound that is not finite, a negative prediction, or one
    above :data:`PREDICTION_FACTOR` times the largest loss the fit saw (a law fitted to those
    points falls with more data; such a number comes from a hand-edited or damaged fit).
    """
    if not all(math.isfinite(x) for x in (predicted, low, high)):
        return f"its prediction is not a finite number (loss {predicted:.4g}, interval [{low:.4g}, {high:.4g}])"
    largest = max(fit.losses, default=math.inf)
    if predicted < 0 or predicted > PREDICTION_FACTOR * largest:
        return (f"it predicts a loss of {predicted:.4g}, outside what its points allow (0 to {PREDICTION_FACTOR:g} "
                f"times its largest loss, {largest:.4g})")
    return None
