"""File access for stores: local folders and fsspec URLs, regular files only, atomic writes.

A store may hold anything a user or another program put there, so nothing is read blindly: a
local entry is read with :func:`~lensllm_hf._utils.read_bounded` (``stat``-ed before it is
opened, so that a FIFO named like a record cannot hang a reader, opened non-blocking, read up to
:data:`MAX_RECORD_BYTES`). What cannot be read is said by :func:`why` in a few words (``is a
FIFO, not a regular file``), for the store's warnings to name the entry.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
import warnings
from pathlib import Path

from .._utils import atomic_write_text, check_regular, display
from ..errors import BoundsError, RecordError, RecordWarning

__all__ = ["MAX_RECORD_BYTES", "basename", "fs_of", "is_local", "join", "regular_stat", "warn", "why", "write_local",
           "write_remote"]

#: Largest file read as a record; a bigger one is not a record (a real one is well under 10 MB).
MAX_RECORD_BYTES = 64 * 2**20


def fs_of(url: str):
    """``(filesystem, path)`` of a folder or fsspec URL; a :class:`RecordError` when none serves it."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as error:
        raise RecordError(f"{url}: not a usable folder or fsspec URL ({error}); install the fsspec backend "
                          "for that protocol or pass a local folder", path=url) from error


def is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def join(store: str, name: str) -> str:
    return f"{store.rstrip('/')}/{name}" if "://" in store else str(Path(store) / name)


def basename(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def regular_stat(path: str) -> os.stat_result:
    """stat() that follows links (a loop raises OSError) and refuses anything but a regular file of a
    record's size (:func:`~lensllm_hf._utils.check_regular`)."""
    st = os.stat(path)
    check_regular(st, path, MAX_RECORD_BYTES)
    return st


def why(error: BaseException) -> str:
    """Why an entry could not be read, in a few words (``is a link loop``)."""
    if isinstance(error, BoundsError) and error.reason:
        return error.reason
    if isinstance(error, OSError):
        if error.errno == errno.EISDIR:
            return "is a folder"
        if error.errno == errno.ELOOP:
            return "is a link loop"
        if error.errno == errno.ENOENT and error.filename and os.path.islink(error.filename):
            return "is a link to nothing"
        if error.errno in (errno.EACCES, errno.EPERM):
            return "cannot be read (permission denied)"
        return f"cannot be read ({error.strerror or error})"
    return str(error)


def write_local(path: str, text: str) -> None:
    """Atomic local write; an entry there that is not a regular file (a FIFO, or a link to a
    device) is replaced, never written through."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if os.path.lexists(path):
        try:
            regular_stat(path)
        except (OSError, BoundsError) as error:
            warn(f"{path}: {why(error)}; replaced by the record", path)
            os.unlink(path)
    atomic_write_text(path, text)


def write_remote(fs, path: str, text: str) -> None:
    """Object stores: write under a temporary key, then move it (a copy there) over the target."""
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


def warn(message: str, path: str | None = None) -> None:
    """A :class:`RecordWarning`, one line with control characters escaped, pointing at the caller's caller."""
    warnings.warn(RecordWarning(display(" ".join(message.split())), path=path), stacklevel=3)
