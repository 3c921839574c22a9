"""File access for stores: local folders and fsspec URLs, regular files only, atomic writes.

A store may hold anything a user or another program put there, so nothing is read blindly: a
local entry is ``stat``-ed before it is opened (a FIFO named like a record must not hang a
reader), opened non-blocking, and read up to :data:`MAX_RECORD_BYTES`. What cannot be read is
a :class:`~lensllm_hf.errors.RecordError` whose message is the reason (``is a FIFO, not a
regular file``) and whose ``path`` is the entry.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
import warnings
from pathlib import Path

from .._utils import atomic_write_text, display
from ..errors import RecordError, RecordWarning

__all__ = ["MAX_RECORD_BYTES", "basename", "fs_of", "is_local", "join", "read_local", "regular_stat", "warn",
           "why", "write_local", "write_remote"]

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
    """stat() that follows links (a loop raises OSError) and refuses anything but a regular file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise RecordError(_kind(st.st_mode), path=path)
    if st.st_size > MAX_RECORD_BYTES:
        raise RecordError(f"is {st.st_size} bytes, too large for a record", path=path)
    return st


def read_local(path: str) -> bytes:
    """A local regular file's bytes; FIFOs and devices are refused before a blocking open."""
    regular_stat(path)
    # O_NONBLOCK: if a FIFO replaced the file since the stat, open() still returns at once.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RecordError(_kind(st.st_mode), path=path)
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_RECORD_BYTES:
                raise RecordError(f"is over {MAX_RECORD_BYTES} bytes, too large for a record", path=path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def why(error: BaseException) -> str:
    """Why an entry could not be read, in a few words (``is a link loop``)."""
    if isinstance(error, OSError):
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
        except (OSError, RecordError) as error:
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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"is {name}, not a regular file"
    return "is not a regular file"
