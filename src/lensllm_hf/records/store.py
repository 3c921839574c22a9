"""Stores: a folder or fsspec URL where many processes and machines write run records.

One file per run, named by its :class:`~lensllm_hf.records.RunKey`. Before a run trains it is
*claimed* (:meth:`Store.claim`, see :mod:`.claims`). Writes are atomic and re-read the current
record first, so a ``complete`` record is never replaced by an ``interrupted`` or ``failed``
one. What holds on object stores, where a rename is a copy, is in ``docs/store.md``.

Anything in a store that cannot be used as it is (a damaged record, a second copy of a run, a
record under another run's name, a FIFO, device, socket, unreadable entry or link loop) is
skipped with a :class:`~lensllm_hf.errors.RecordWarning` naming it, never read blindly.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._utils import load_json, read_bounded
from ..errors import BoundsError, RecordError, SchemaError
from . import claims
from .claims import CLAIMS_FOLDER, Claim
from .files import (MAX_RECORD_BYTES, basename, fs_of, is_local, join, regular_stat, warn, why, write_local,
                    write_remote)
from .schema import DEFAULT_RECORD_NAME, STORE_SUFFIX, RunKey, RunRecord, legacy_record_name

if TYPE_CHECKING:
    from ..engine.curves import CurveTable

__all__ = [
    "Store",
    "check_writable",
    "has_record",
    "list_records",
    "load_records",
    "read_record",
    "record_path",
    "require_persistent",
    "write_record",
]


class Store:
    """A folder or fsspec URL of run records, shared by many processes and machines.

    Args:
        url: a local folder (its name may end in anything, ``.json`` included) or an fsspec URL
            (``s3://bucket/runs``, ``gs://...``; ``memory://`` for tests). Created on first write.

    Example:
        >>> store = Store("runs/")
        >>> key = RunKey("gpt2", 800, seed=0, config_hash="3f2a9c01d4")
        >>> with store.claim(key) as claim:           # None (no ``with``) when another process has it
        ...     store.write(record)                   # atomic; never replaces a complete record
        >>> store.read(key).status
        'complete'
    """

    def __init__(self, url: str | os.PathLike) -> None:
        if isinstance(url, Store):
            url = url.url
        if not isinstance(url, (str, os.PathLike)) or not os.fspath(url):
            raise RecordError(f"store {url!r}: not a folder or URL; pass a folder path or an fsspec URL such as "
                              "s3://bucket/runs")
        self.url: str = os.fspath(url)
        self._fs, self._root = fs_of(self.url)
        self._local = is_local(self._fs)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- paths --------------------------------------------------------------------------------

    def path_of(self, key: RunKey) -> str:
        """Where ``key``'s record lives (a path, or a URL for fsspec stores)."""
        return join(self.url, _check_key(key).name)


    # -- records ------------------------------------------------------------------------------

    def read(self, key: RunKey) -> RunRecord | None:
        """The record of ``key``, or None when there is none.

        A file there that cannot be used (damaged, not a regular file, or holding another run)
        gives a :class:`RecordWarning` naming it and None, so the run is run again.
        """
        key = _check_key(key)
        path = self.path_of(key)
        rec = self._read_path(path, missing_ok=True)
        if rec is None:
            legacy = join(self.url, legacy_record_name(key))  # a schema-1 store
            rec = self._read_path(legacy, missing_ok=True) if legacy != path else None
            if rec is None or rec.schema_version != 1:
                return None
            if (rec.model_id, rec.train_size, rec.seed, rec.config_hash) != (key.model, key.train_size, key.seed,
                                                                            key.config_hash):
                return None  # version-1 names were not injective: another run took it
            return rec
        if rec.key != key:
            warn(f"{path}: holds the record of another run ({rec.key.describe()}); ignored, the file name and "
                  "its content disagree (a copied or edited file); delete it")
            return None
        return rec

    def write(self, record: RunRecord) -> str:
        """Write ``record`` atomically under its key's name; return the path.

        The current record is re-read first (under a lock on local stores): a ``complete`` one is
        never replaced by one that is not complete; a :class:`RecordWarning` says so and the
        complete record's path is returned.
        """
        if not isinstance(record, RunRecord):
            record = RunRecord.from_dict(record, where="Store.write")
        key = record.key
        path = self.path_of(key)
        text = json.dumps(record.to_dict(), indent=2, allow_nan=False) + "\n"
        try:
            with self._write_lock(key):
                if record.status != "complete":
                    current = self._read_path(path, missing_ok=True, quiet=True)
                    if current is not None and current.status == "complete" and current.key == key:
                        warn(f"{path}: already complete; the {record.status} record of the same run is not "
                              "written over it (another process finished the run)")
                        return path
                self._write_text(path, text)
        except OSError as error:
            raise RecordError(f"{path}: cannot write the record ({error.__class__.__name__}: {error}); pass a "
                              "writable folder or URL", path=path) from error
        return path

    def records(self) -> list[RunRecord]:
        """Every usable record of the store, one per run, in path order.

        Damaged files, entries that are not regular files, records under another run's name and
        second copies of a run are reported with a :class:`RecordWarning` and left out (a
        complete copy wins over an unfinished one, then the one under the run's own name).
        """
        kept: dict[RunKey, tuple[str, RunRecord]] = {}
        order: list[RunKey] = []
        for path in self._paths():
            rec = self._read_path(path, missing_ok=True)
            if rec is None:
                continue
            base = basename(path)
            if base != DEFAULT_RECORD_NAME and base != rec.name and not (
                    rec.schema_version == 1 and base == legacy_record_name(rec.key)):
                warn(f"{path}: its content is the run {rec.key.describe()}, whose record is named {rec.name}; not "
                      "counted (a copied or renamed file); delete it or rename it")
                continue
            key = rec.key
            if key not in kept:
                kept[key] = (path, rec)
                order.append(key)
                continue
            other_path, other = kept[key]
            if _rank(rec, base) < _rank(other, basename(other_path)):
                kept[key] = (path, rec)
            warn(f"{other_path} and {path}: the same run {key.describe()} recorded twice; counted once, from "
                  f"{kept[key][0]}; delete the other file")
        return [kept[key][1] for key in order]

    def load_table(self, *, zero_shot: bool = True, streamed: bool = True) -> CurveTable:
        """The curve table of the store's complete runs (see :func:`~lensllm_hf.records.table.load_table`)."""
        from .table import load_table

        return load_table(self, zero_shot=zero_shot, streamed=streamed)

    def paths(self) -> list[str]:
        """Paths (or URLs) of every regular file in the store that may be a record, sorted.

        Found: ``*.lensllm.json`` files at any depth and ``lensllm_record.json`` files (the name
        in a run's ``output_dir``, so a folder of output dirs is a store too). Other entries with
        those names (FIFOs, devices, sockets, link loops, unreadable ones) are skipped with a
        :class:`RecordWarning`.
        """
        return [path for path in self._paths() if self._regular(path)]

    # -- claims -------------------------------------------------------------------------------

    def claim(self, key: RunKey, *, ttl_s: float = 120) -> Claim | None:
        """Claim ``key``'s run for this process before training it: a :class:`Claim`, or None when
        the run is complete or another live owner holds it (see :func:`.claims.claim`)."""
        return claims.claim(self, _check_key(key), ttl_s=ttl_s)

    def claim_of(self, key: RunKey, *, ttl_s: float = 120) -> dict[str, Any] | None:
        """``{owner, host, pid, heartbeat_at}`` of the live claim on ``key``'s run, else None."""
        return claims.claim_of(self, _check_key(key), ttl_s=ttl_s)

    # -- internals ----------------------------------------------------------------------------

    def _fs_path(self, path: str) -> str:
        """The file system's own path for a path or URL of this store."""
        if self._local:
            return path
        prefix = self.url.rstrip("/") + "/"
        if path.startswith(prefix):
            return f"{self._root.rstrip('/')}/{path[len(prefix):]}"
        return fs_of(path)[1]

    def _write_text(self, path: str, text: str) -> None:
        if self._local:
            write_local(path, text)
        else:
            write_remote(self._fs, self._fs_path(path), text)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(OSError):
            if self._local:
                os.unlink(path)
            else:
                self._fs.rm(self._fs_path(path))

    def _makedirs(self, fs_path: str) -> None:
        if self._local:
            os.makedirs(fs_path, exist_ok=True)
        else:
            self._fs.makedirs(fs_path, exist_ok=True)

    @contextlib.contextmanager
    def _write_lock(self, key: RunKey) -> Iterator[None]:
        """Serialise read-check-write among local processes (the kernel releases it if one dies).

        The lock is an ``flock`` on the store folder itself, so a store holds nothing but records;
        where a folder cannot be locked (NFS), on a lock file per run in the claims folder.
        """
        try:
            import fcntl
        except ImportError:  # no flock (Windows): the re-read alone
            fcntl = None
        if not self._local or fcntl is None:
            yield
            return
        os.makedirs(self.url, exist_ok=True)
        fd = os.open(self.url, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                lock = claims.lock_path(self, key)
                os.makedirs(os.path.dirname(lock), exist_ok=True)
                fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _paths(self) -> list[str]:
        """Candidate record paths (names only checked; entries not yet looked at)."""
        if self._local:
            if not os.path.isdir(self.url):
                raise RecordError(f"{self.url}: no such store (folder or URL); pass the folder the runs wrote to",
                                  path=self.url)
            found = []

            def unreadable(error: OSError) -> None:
                warn(f"{error.filename}: cannot list ({error.strerror}); skipped")

            for folder, dirs, files in os.walk(self.url, onerror=unreadable):
                dirs[:] = sorted(d for d in dirs if d != CLAIMS_FOLDER)
                found.extend(os.path.join(folder, f) for f in files if _is_record_name(f))
            return sorted(found)
        try:
            if not self._fs.isdir(self._root):
                raise RecordError(f"{self.url}: no such store (folder or URL); pass the folder the runs wrote to",
                                  path=self.url)
            found = [p for p in self._fs.find(self._root)
                     if _is_record_name(basename(p)) and f"/{CLAIMS_FOLDER}/" not in p]
        except OSError as error:
            raise RecordError(f"{self.url}: cannot list the store ({error.__class__.__name__}: {error}); check the "
                              "URL and credentials", path=self.url) from error
        return sorted(self._fs.unstrip_protocol(p) for p in found)

    def _regular(self, path: str) -> bool:
        if not self._local:
            return True
        try:
            regular_stat(path)
            return True
        except (OSError, BoundsError) as error:
            warn(f"{path}: {why(error)}; skipped, never read")
            return False

    def _read_bytes(self, path: str) -> bytes:
        """The bytes of a regular file; FileNotFoundError when absent, another OSError, BoundsError or RecordError
        for anything else."""
        if self._local:
            return read_bounded(path, limit=MAX_RECORD_BYTES)
        fs_path = self._fs_path(path)
        size = (self._fs.info(fs_path) or {}).get("size")
        if isinstance(size, int) and size > MAX_RECORD_BYTES:
            raise RecordError(f"is {size} bytes, too large for a record", path=path)
        return self._fs.cat_file(fs_path)

    def _read_path(self, path: str, *, missing_ok: bool, quiet: bool = False) -> RunRecord | None:
        """Read one record; a problem is a warning (unless ``quiet``) and None."""
        try:
            raw = self._read_bytes(path)
        except FileNotFoundError:
            if self._local and os.path.islink(path):
                if not quiet:
                    warn(f"{path}: a link to nothing; skipped")
                return None
            if missing_ok:
                return None
            raise
        except (OSError, BoundsError, RecordError) as error:
            if not quiet:
                warn(f"{path}: {why(error)}; skipped, never read")
            return None
        try:
            return _parse(raw, path)
        except SchemaError as error:
            if not quiet:
                warn(f"{error} (skipped: its run counts as not done and runs again)")
            return None



# -- functions: a file or a store named by its path ----------------------------------------


def write_record(record: RunRecord | dict[str, Any], store_or_path: str | os.PathLike | Store) -> str:
    """Write ``record`` atomically; return where it went.

    ``store_or_path`` is a :class:`Store`, an existing folder or URL (a store, whatever its
    name ends with), or a file path: an existing file, or a new path ending in ``.json``. A new
    path with any other ending is a store (created). A file path named ``*.lensllm.json`` is a
    record in a store, so the record goes to that store under its key's name. Store writes go
    through :meth:`Store.write` (never replacing a complete record with an unfinished one).

    Example:
        >>> write_record(rec, "runs")
        'runs/gpt2__D800__seed0__none__....lensllm.json'
    """
    if not isinstance(record, RunRecord):
        record = RunRecord.from_dict(record, where="write_record")
    if isinstance(store_or_path, Store):
        return store_or_path.write(record)
    target = os.fspath(store_or_path)
    fs, path = fs_of(target)
    try:
        is_dir = fs.isdir(path)
        exists = is_dir or fs.exists(path) or (is_local(fs) and os.path.lexists(path))
    except OSError:
        is_dir = exists = False
    if is_dir or (not exists and not target.endswith(".json")):
        return Store(target).write(record)
    if basename(target).endswith(STORE_SUFFIX):
        parent = target.rstrip("/").rsplit("/", 1)[0] if "://" in target else os.path.dirname(target) or "."
        written = Store(parent).write(record)
        if basename(written) != basename(target):
            warn(f"{target}: not this record's name in a store; written as {written} (the name comes from the "
                  "run's key: pass the store, not a path in it)")
        return written
    text = json.dumps(record.to_dict(), indent=2, allow_nan=False) + "\n"
    try:
        if is_local(fs):
            write_local(path, text)
        else:
            write_remote(fs, path, text)
    except OSError as error:
        raise RecordError(f"{target}: cannot write the record ({error.__class__.__name__}: {error}); "
                          "pass a writable folder or URL", path=target) from error
    return target


def read_record(path: str | os.PathLike) -> RunRecord:
    """Read and check one record; raises :class:`RecordError` / :class:`SchemaError` naming the file.

    A FIFO, device, socket or link loop is refused without being opened for a blocking read.
    """
    where = os.fspath(path)
    fs, fs_path = fs_of(where)
    try:
        raw = read_bounded(fs_path, limit=MAX_RECORD_BYTES) if is_local(fs) else fs.cat_file(fs_path)
    except FileNotFoundError:
        raise RecordError(f"{where}: no such record; pass the path of a lensllm_record.json or a store",
                          path=where) from None
    except IsADirectoryError:
        raise RecordError(f"{where}: is a folder; use list_records() or load_table() for a store", path=where) from None
    except BoundsError as error:
        raise RecordError(f"{where}: {why(error)}; pass the path of a record file", path=where) from None
    except OSError as error:
        raise RecordError(f"{where}: {why(error)}; check the path", path=where) from error
    return _parse(raw, where)


def record_path(store: str | os.PathLike | Store, key: RunKey) -> str:
    """``Store(store).path_of(key)``: where the record of a run lives.

    Example:
        >>> record_path("runs", RunKey("gpt2", 800, 0, "3f2a9c01d4"))
        'runs/gpt2__D800__seed0__3f2a9c01d4__0d7b392e9fb89b9e.lensllm.json'
    """
    return Store(store).path_of(key)


def has_record(store: str | os.PathLike | Store, key: RunKey, *, complete: bool = True) -> bool:
    """Whether ``Store(store)`` holds the run of ``key``; with ``complete``, only if it finished."""
    rec = Store(store).read(key)
    return rec is not None and (not complete or rec.status == "complete")


def list_records(store: str | os.PathLike | Store) -> list[str]:
    """``Store(store).paths()``: every record file of a store, sorted."""
    return Store(store).paths()


def load_records(store: str | os.PathLike | Store) -> list[RunRecord]:
    """``Store(store).records()``: every usable record, one per run (problems are warnings)."""
    return Store(store).records()


def check_writable(folder: str | os.PathLike | Store) -> None:
    """Fail early, with a clear message, when records cannot be written in ``folder`` (or URL).

    Creates the folder if needed and writes then deletes a small probe file.
    """
    folder = folder.url if isinstance(folder, Store) else os.fspath(folder)
    fs, path = fs_of(folder)
    probe = f"{path.rstrip('/')}/.lensllm-write-test-{uuid.uuid4().hex[:8]}"
    try:
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"ok")
    except (OSError, ValueError) as error:
        raise RecordError(f"{folder}: cannot write run records there ({error.__class__.__name__}: {error}); "
                          "pass a writable output_dir or store (a folder or fsspec URL)", path=folder) from error
    finally:  # on every path: a write that failed half-way ("no space left") may have left the file
        with contextlib.suppress(OSError, ValueError):
            fs.rm(probe)


def require_persistent(url: str | os.PathLike | Store) -> None:
    """Refuse a store whose records vanish when the process exits (``memory://``); used by the CLI.

    Example:
        >>> require_persistent("memory://runs")
        Traceback (most recent call last):
        ...
        lensllm_hf.errors.RecordError: memory://runs: a memory:// store lives only inside this process ...
    """
    store = url if isinstance(url, Store) else Store(url)
    protocols = store._fs.protocol if isinstance(store._fs.protocol, (tuple, list)) else (store._fs.protocol,)
    if "memory" in protocols:
        raise RecordError(f"{store.url}: a memory:// store lives only inside this process, every record vanishes "
                          "when it exits; pass a folder or a persistent URL (s3://..., gs://...)", path=store.url)


# -- helpers ---------------------------------------------------------------------------------


def _parse(raw: bytes, where: str) -> RunRecord:
    try:
        data = load_json(raw.decode("utf-8"), where)
    except UnicodeDecodeError:
        raise SchemaError(f"{where}: not a text file; a record is JSON written by LensLLMCallback",
                          path=where) from None
    except json.JSONDecodeError as error:
        raise SchemaError(f"{where}: not valid JSON ({error.msg} at line {error.lineno}); the file is damaged, "
                          "re-run the run or delete the file", path=where) from None
    except BoundsError as error:
        raise SchemaError(f"{error}; delete it", path=where) from None
    return RunRecord.from_dict(data, where=where)



def _rank(rec: RunRecord, base: str) -> tuple[int, int]:
    return (0 if rec.status == "complete" else 1, 0 if base == rec.name else 1)



def _check_key(key: Any) -> RunKey:
    if not isinstance(key, RunKey):
        raise RecordError(f"expected a RunKey, got {type(key).__name__}; build one with RunKey(model, train_size, "
                          "seed, config_hash)")
    return key



def _is_record_name(name: str) -> bool:
    return name.endswith(STORE_SUFFIX) or name == DEFAULT_RECORD_NAME

