"""Small helpers every part of the package shares: one-line errors, safe display, atomic writes.

:func:`first_problem` puts pydantic's first validation error in words, so the selection
parameters, the YAML config, the callback's arguments and the run records all say a bad value
the same way (``sizes[1]='x': must be a whole number``).

Kept free of torch and of the rest of the package (it imports only :mod:`lensllm_hf.errors`), so
the fitting core, the records and the command line can all use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import math
import os
import re
import stat
import tempfile
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .errors import LensLLMError

__all__ = ["Problem", "atomic_write_text", "check_output_file", "display", "fields_adapter", "first_problem",
           "json_safe", "one_line", "short", "suggest", "whole"]

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
