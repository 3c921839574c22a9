"""Small helpers every part of the package shares: one-line errors, safe display, atomic writes.

Kept free of torch and of the rest of the package (it imports only :mod:`lensllm_hf.errors`), so
the fitting core, the records and the command line can all use it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import LensLLMError

__all__ = ["atomic_write_text", "check_output_file", "display", "json_safe", "one_line"]

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
