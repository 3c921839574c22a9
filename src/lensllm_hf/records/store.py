"""Stores: a folder or fsspec URL where many processes and machines write run records.

One file per run, named by its :class:`~lensllm_hf.records.RunKey`. Before a run trains it is
*claimed* (:meth:`Store.claim`): a small claim file with the owner, host, pid and a heartbeat
that a daemon thread refreshes; a claim whose heartbeat stopped is taken over. Writes are atomic
and re-read the current record first, so a ``complete`` record is never replaced by an
``interrupted`` or ``failed`` one. What holds on object stores, where a rename is a copy, is in
``docs/store.md``.

Anything in a store that cannot be used as it is (a damaged record, a second copy of a run, a
record under another run's name, a FIFO, device, socket, unreadable entry or link loop) is
skipped with a :class:`~lensllm_hf.records.RecordWarning` naming it, never read blindly.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import socket
import stat
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write_text, display
from ..engine.curves import CurveTable
from ..errors import RecordError, RecordWarning, SchemaError
from .schema import DEFAULT_RECORD_NAME, STATUSES, STORE_SUFFIX, RunKey, RunRecord, legacy_record_name

__all__ = [
    "CLAIMS_FOLDER",
    "MAX_RECORD_BYTES",
    "Claim",
    "Store",
    "check_writable",
    "has_record",
    "list_records",
    "load_records",
    "load_table",
    "read_record",
    "record_path",
    "require_persistent",
    "table_rows",
    "write_record",
]

#: Hidden folder of a store holding claim and lock files (never listed as records).
CLAIMS_FOLDER = ".lensllm-claims"
#: Largest file read as a record; a bigger one is not a record (a real one is well under 10 MB).
MAX_RECORD_BYTES = 64 * 2**20
_CLAIM_SUFFIX = ".claim"


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
        self._fs, self._root = _fs(self.url)
        self._local = _is_local(self._fs)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- paths --------------------------------------------------------------------------------

    def path_of(self, key: RunKey) -> str:
        """Where ``key``'s record lives (a path, or a URL for fsspec stores)."""
        return _join(self.url, _check_key(key).name)

    def _fs_path(self, path: str) -> str:
        """The file system's own path for a path or URL of this store."""
        if self._local:
            return path
        prefix = self.url.rstrip("/") + "/"
        if path.startswith(prefix):
            return f"{self._root.rstrip('/')}/{path[len(prefix):]}"
        return _fs(path)[1]

    def _claims_dir(self) -> str:
        return _join(self.url, CLAIMS_FOLDER)

    def _claim_path(self, key: RunKey, generation: int) -> str:
        return _join(self._claims_dir(), f"{_stem(key)}.{generation}{_CLAIM_SUFFIX}")

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
            legacy = _join(self.url, legacy_record_name(key))  # a schema-1 store
            rec = self._read_path(legacy, missing_ok=True) if legacy != path else None
            if rec is None or rec.schema_version != 1:
                return None
            if (rec.model_id, rec.train_size, rec.seed, rec.config_hash) != (key.model, key.train_size, key.seed,
                                                                            key.config_hash):
                return None  # version-1 names were not injective: another run took it
            return rec
        if rec.key != key:
            _warn(f"{path}: holds the record of another run ({_brief(rec.key)}); ignored, the file name and "
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
                        _warn(f"{path}: already complete; the {record.status} record of the same run is not "
                              "written over it (another process finished the run)")
                        return path
                self._write_text(path, text)
        except OSError as error:
            raise RecordError(f"{path}: cannot write the record ({error.__class__.__name__}: {error}); pass a "
                              "writable folder or URL") from error
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
            base = _basename(path)
            if base != DEFAULT_RECORD_NAME and base != rec.name and not (
                    rec.schema_version == 1 and base == legacy_record_name(rec.key)):
                _warn(f"{path}: its content is the run {_brief(rec.key)}, whose record is named {rec.name}; not "
                      "counted (a copied or renamed file); delete it or rename it")
                continue
            key = rec.key
            if key not in kept:
                kept[key] = (path, rec)
                order.append(key)
                continue
            other_path, other = kept[key]
            if _rank(rec, base) < _rank(other, _basename(other_path)):
                kept[key] = (path, rec)
            _warn(f"{other_path} and {path}: the same run {_brief(key)} recorded twice; counted once, from "
                  f"{kept[key][0]}; delete the other file")
        return [kept[key][1] for key in order]

    def load_table(self, *, zero_shot: bool = True, streamed: bool = True) -> CurveTable:
        """The curve table of the store's complete runs (see :func:`load_table`)."""
        return _table(self.records(), source=self.url, zero_shot=zero_shot, streamed=streamed)

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
        """Claim ``key``'s run for this process before training it.

        Returns a :class:`Claim` (a context manager that heartbeats from a daemon thread and
        releases on exit), or None when the run is complete or another live owner holds it. A
        claim whose heartbeat is older than its ``ttl_s`` (or whose process is gone, on this
        host) is taken over.

        Local stores create the claim file exclusively (a hard link, or ``O_CREAT | O_EXCL``),
        so two processes never both get a claim. Object stores use an exclusive create when
        the fsspec backend offers one, else write-then-verify (best effort; docs/store.md).
        """
        key = _check_key(key)
        if not (isinstance(ttl_s, (int, float)) and not isinstance(ttl_s, bool) and math.isfinite(ttl_s) and ttl_s > 0):
            raise RecordError(f"Store.claim: ttl_s must be a positive number of seconds, got {ttl_s!r}")
        if self._complete(key):
            return None
        try:
            self._makedirs(self._fs_path(self._claims_dir()))
            for _ in range(8):  # a few rounds: each lost race re-reads who holds the run
                held = self._claims(key)
                generation = 0
                if held:
                    top, top_path = held[-1]
                    if _live(self._read_claim(top_path), ttl_s):
                        return None
                    generation = top + 1
                owner = uuid.uuid4().hex
                path = self._claim_path(key, generation)
                if not self._create_exclusive(path, _claim_text(key, owner, generation, ttl_s), owner):
                    continue
                if any(g > generation for g, _ in self._claims(key)):
                    self._remove(path)  # someone took a later generation meanwhile: theirs stands
                    return None
                for g, stale in held:  # the claims it replaced
                    self._remove(stale)
                claim = Claim(self, key, path=path, owner=owner, generation=generation, ttl_s=float(ttl_s))
                if self._complete(key):  # finished between our first look and our claim
                    claim.release()
                    return None
                claim._start()
                return claim
        except OSError as error:
            raise RecordError(f"{self._claims_dir()}: cannot write claim files ({error.__class__.__name__}: "
                              f"{error}); pass a writable store") from error
        return None

    def claim_of(self, key: RunKey, *, ttl_s: float = 120) -> dict[str, Any] | None:
        """``{owner, host, pid, heartbeat_at}`` of the live claim on ``key``'s run, else None."""
        held = self._claims(_check_key(key))
        if not held:
            return None
        info = self._read_claim(held[-1][1])
        if not _live(info, ttl_s):
            return None
        return {k: info[k] for k in ("owner", "host", "pid", "heartbeat_at")}

    # -- internals ----------------------------------------------------------------------------

    def _complete(self, key: RunKey) -> bool:
        rec = self.read(key)
        return rec is not None and rec.status == "complete"

    def _claims(self, key: RunKey) -> list[tuple[int, str]]:
        """(generation, path) of the claim files of ``key``, oldest first."""
        prefix, folder = f"{_stem(key)}.", self._claims_dir()
        try:
            if self._local:
                names = os.listdir(folder)
            else:
                names = [_basename(p) for p in self._fs.ls(self._fs_path(folder), detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for name in names:
            middle = name[len(prefix):-len(_CLAIM_SUFFIX)] if name.startswith(prefix) and name.endswith(
                _CLAIM_SUFFIX) else ""
            if middle.isdigit():
                found.append((int(middle), _join(folder, name)))
        return sorted(found)

    def _read_claim(self, path: str) -> dict[str, Any] | None:
        try:
            raw = self._read_bytes(path)
            info = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, _NotRegular):
            info = None
        if not isinstance(info, dict) or not isinstance(info.get("heartbeat_at"), (int, float)):
            # Half-written or damaged: its file time is the best heartbeat we have.
            with contextlib.suppress(OSError, _NotRegular):
                return {"owner": None, "host": None, "pid": None, "heartbeat_at": self._mtime(path)}
            return None
        return info

    def _mtime(self, path: str) -> float:
        if self._local:
            return os.stat(path).st_mtime
        info = self._fs.info(self._fs_path(path))
        for field_name in ("mtime", "LastModified", "updated", "created"):
            value = info.get(field_name)
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, datetime):
                return value.timestamp()
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        return 0.0  # unknown: treat as stale

    def _create_exclusive(self, path: str, text: str, owner: str) -> bool:
        data = text.encode("utf-8")
        if self._local:
            folder = os.path.dirname(path)
            fd, tmp = tempfile.mkstemp(prefix=".claim.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)  # mkstemp makes it private; other users of the store read claims
                try:
                    os.link(tmp, path)  # atomic and exclusive, and the claim is whole when it appears
                    return True
                except FileExistsError:
                    return False
                except OSError:  # no hard links on this file system: an exclusive create instead
                    try:
                        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    except FileExistsError:
                        return False
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                        handle.flush()
                        os.fsync(handle.fileno())
                    return True
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        fs_path = self._fs_path(path)
        try:
            with self._fs.open(fs_path, "xb") as handle:
                handle.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):
            pass  # the backend has no exclusive create: write, then check that ours is the one there
        if self._fs.exists(fs_path):
            return False
        self._fs.pipe_file(fs_path, data)
        time.sleep(0.05)
        try:
            return json.loads(self._fs.cat_file(fs_path).decode("utf-8")).get("owner") == owner
        except (OSError, ValueError):
            return False

    def _write_text(self, path: str, text: str) -> None:
        if self._local:
            _write_local(path, text)
        else:
            _write_remote(self._fs, self._fs_path(path), text)

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
                folder = self._claims_dir()
                os.makedirs(folder, exist_ok=True)
                fd = os.open(os.path.join(folder, f"{_stem(key)}.lock"), os.O_CREAT | os.O_RDWR, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _paths(self) -> list[str]:
        """Candidate record paths (names only checked; entries not yet looked at)."""
        if self._local:
            if not os.path.isdir(self.url):
                raise RecordError(f"{self.url}: no such store (folder or URL); pass the folder the runs wrote to")
            found = []

            def unreadable(error: OSError) -> None:
                _warn(f"{error.filename}: cannot list ({error.strerror}); skipped")

            for folder, dirs, files in os.walk(self.url, onerror=unreadable):
                dirs[:] = sorted(d for d in dirs if d != CLAIMS_FOLDER)
                found.extend(os.path.join(folder, f) for f in files if _is_record_name(f))
            return sorted(found)
        try:
            if not self._fs.isdir(self._root):
                raise RecordError(f"{self.url}: no such store (folder or URL); pass the folder the runs wrote to")
            found = [p for p in self._fs.find(self._root)
                     if _is_record_name(_basename(p)) and f"/{CLAIMS_FOLDER}/" not in p]
        except OSError as error:
            raise RecordError(f"{self.url}: cannot list the store ({error.__class__.__name__}: {error}); check the "
                              "URL and credentials") from error
        return sorted(self._fs.unstrip_protocol(p) for p in found)

    def _regular(self, path: str) -> bool:
        if not self._local:
            return True
        try:
            _regular_stat(path)
            return True
        except (OSError, _NotRegular) as error:
            _warn(f"{path}: {_why(error)}; skipped, never read")
            return False

    def _read_bytes(self, path: str) -> bytes:
        """The bytes of a regular file; FileNotFoundError when absent, _NotRegular for anything else."""
        if self._local:
            return _read_local(path)
        fs_path = self._fs_path(path)
        size = (self._fs.info(fs_path) or {}).get("size")
        if isinstance(size, int) and size > MAX_RECORD_BYTES:
            raise _NotRegular(f"is {size} bytes, too large for a record")
        return self._fs.cat_file(fs_path)

    def _read_path(self, path: str, *, missing_ok: bool, quiet: bool = False) -> RunRecord | None:
        """Read one record; a problem is a warning (unless ``quiet``) and None."""
        try:
            raw = self._read_bytes(path)
        except FileNotFoundError:
            if self._local and os.path.islink(path):
                if not quiet:
                    _warn(f"{path}: a link to nothing; skipped")
                return None
            if missing_ok:
                return None
            raise
        except (OSError, _NotRegular) as error:
            if not quiet:
                _warn(f"{path}: {_why(error)}; skipped, never read")
            return None
        try:
            return _parse(raw, path)
        except SchemaError as error:
            if not quiet:
                _warn(f"{error} (skipped: its run counts as not done and runs again)")
            return None


class Claim:
    """This process's claim on one run: heartbeats from a daemon thread until released.

    Get one from :meth:`Store.claim`; use it as a context manager (``with store.claim(key) as
    claim:``) or call :meth:`release`. :attr:`held` turns False when another process took the run
    over (this process stopped heartbeating for longer than the ttl).

    Attributes:
        key: the claimed run.
        store: the store it lives in.
        owner: this claim's unique owner id.
        path: the claim file.
        ttl_s: the heartbeat age after which others may take the run over.
    """

    def __init__(self, store: Store, key: RunKey, *, path: str, owner: str, generation: int, ttl_s: float) -> None:
        self.store, self.key, self.path, self.owner = store, key, path, owner
        self.generation, self.ttl_s = generation, ttl_s
        self._stop = threading.Event()
        self._lost = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Claim({self.key.name!r}, owner={self.owner!r}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether this claim still holds the run (not released, not taken over)."""
        return not self._stop.is_set() and not self._lost

    def heartbeat(self) -> None:
        """Refresh the claim's heartbeat now (the daemon thread does it every ``ttl_s / 4``)."""
        if not self.held:
            return
        info = self.store._read_claim(self.path)
        newer = any(g > self.generation for g, _ in self.store._claims(self.key))
        if info is None or info.get("owner") != self.owner or newer:
            self._lost = True  # taken over: never write a heartbeat into someone else's claim
            if newer and info is not None and info.get("owner") == self.owner:
                self.store._remove(self.path)
            return
        text = _claim_text(self.key, self.owner, self.generation, self.ttl_s)
        if self.store._local:
            atomic_write_text(self.path, text)
        else:
            _write_remote(self.store._fs, self.store._fs_path(self.path), text)

    def release(self) -> None:
        """Stop heartbeating and remove the claim file (if it is still this claim's)."""
        if self._stop.is_set():
            return
        self._stop.set()
        atexit.unregister(self.release)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        info = self.store._read_claim(self.path)
        if info is not None and info.get("owner") == self.owner:
            self.store._remove(self.path)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _start(self) -> None:
        atexit.register(self.release)  # a normal exit frees the run at once, not after the ttl
        self._thread = threading.Thread(target=self._beat, name=f"lensllm-claim-{self.key.name[:40]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = max(self.ttl_s / 4, 0.01)
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except Exception:  # a failed beat is retried; the claim goes stale only if they all fail
                continue
            if self._lost:
                return


# -- module-level API (kept from version 1) ---------------------------------------------------


def record_path(store: str | os.PathLike | Store, model: str | RunKey, train_size: int | None = None,
                seed: int | None = None, config_hash: str | None = None) -> str:
    """Where the record of a run lives in ``store`` (a path, or a URL for fsspec stores).

    ``model`` is a :class:`RunKey`, or the model of a key given part by part.

    Example:
        >>> record_path("runs", RunKey("gpt2", 800, 0, "3f2a9c01d4"))
        'runs/gpt2__D800__seed0__3f2a9c01d4__0d7b392e9fb89b9e.lensllm.json'
    """
    return Store(store).path_of(_as_key(model, train_size, seed, config_hash))


def has_record(store: str | os.PathLike | Store, model: str | RunKey, train_size: int | None = None,
               seed: int | None = None, config_hash: str | None = None, *, complete: bool = True) -> bool:
    """Whether the store holds this run; with ``complete``, only if it finished.

    Example:
        >>> has_record("runs/", RunKey("gpt2", 800, seed=0, config_hash="3f2a9c01d4"))
        False
    """
    rec = Store(store).read(_as_key(model, train_size, seed, config_hash))
    return rec is not None and (not complete or rec.status == "complete")


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
    fs, path = _fs(target)
    try:
        is_dir = fs.isdir(path)
        exists = is_dir or fs.exists(path) or (_is_local(fs) and os.path.lexists(path))
    except OSError:
        is_dir = exists = False
    if is_dir or (not exists and not target.endswith(".json")):
        return Store(target).write(record)
    if _basename(target).endswith(STORE_SUFFIX):
        parent = target.rstrip("/").rsplit("/", 1)[0] if "://" in target else os.path.dirname(target) or "."
        written = Store(parent).write(record)
        if _basename(written) != _basename(target):
            _warn(f"{target}: not this record's name in a store; written as {written} (the name comes from the "
                  "run's key: pass the store, not a path in it)")
        return written
    text = json.dumps(record.to_dict(), indent=2, allow_nan=False) + "\n"
    try:
        if _is_local(fs):
            _write_local(path, text)
        else:
            _write_remote(fs, path, text)
    except OSError as error:
        raise RecordError(f"{target}: cannot write the record ({error.__class__.__name__}: {error}); "
                          "pass a writable folder or URL") from error
    return target


def read_record(path: str | os.PathLike) -> RunRecord:
    """Read and check one record; raises :class:`RecordError` / :class:`SchemaError` naming the file.

    A FIFO, device, socket or link loop is refused without being opened for a blocking read.
    """
    where = os.fspath(path)
    fs, fs_path = _fs(where)
    try:
        raw = _read_local(fs_path) if _is_local(fs) else fs.cat_file(fs_path)
    except FileNotFoundError:
        raise RecordError(f"{where}: no such record; pass the path of a lensllm_record.json or a store") from None
    except IsADirectoryError:
        raise RecordError(f"{where}: is a folder; use list_records() or load_table() for a store") from None
    except _NotRegular as error:
        if "folder" in str(error):
            raise RecordError(f"{where}: is a folder; use list_records() or load_table() for a store") from None
        raise RecordError(f"{where}: {error}; pass the path of a record file") from None
    except OSError as error:
        raise RecordError(f"{where}: {_why(error)}; check the path") from error
    return _parse(raw, where)


def list_records(store: str | os.PathLike | Store) -> list[str]:
    """Paths (or URLs) of every record file in a store, sorted (see :meth:`Store.paths`)."""
    return Store(store).paths()


def load_records(store: str | os.PathLike | Store) -> list[RunRecord]:
    """Every usable record of a store, one per run (see :meth:`Store.records`: problems are warnings)."""
    return Store(store).records()


def load_table(store: str | os.PathLike | Store | Iterable[RunRecord], *, zero_shot: bool = True,
               streamed: bool = True) -> CurveTable:
    """The curve table of a store: model x subset size -> test loss, with FLOPs and the NTK term.

    Args:
        store: a :class:`Store`, a folder or fsspec URL, or records already loaded.
        zero_shot: add the column D = 0 from evaluations made before training (step 0).
        streamed: also use the evaluations a stream-mode run (``eval_at_examples``) made at its
            requested sizes. A separate run of that size, when there is one, wins.

    Only ``complete`` runs count, each run once (a second record of the same :class:`RunKey` is
    reported and left out, never averaged in as another seed). A cell is the mean
    ``final_eval_loss`` over seeds, ``flops`` the mean of their ``total_flos``; ``params`` is each
    model's parameter count (the NTK probe reaches the ``lensllm`` law through
    :func:`lensllm_hf.engine.methods.base.run_info`, from the records themselves). Rows are model
    IDs; a model run with several training configurations gives one row per configuration,
    named ``model#config_hash`` (plus ``@revision`` / ``+adapter`` when only those differ). A
    model with no usable point at some size carries a ``problems`` entry naming it, as
    ``CurveTable.read_csv`` does.

    Example:
        >>> table = load_table("runs/")
        >>> table.models, table.sizes
        (['gpt2', 'opt-125m'], array([  0, 200, 400, 800]))
    """
    if isinstance(store, (str, os.PathLike, Store)):
        target = Store(store)
        return _table(target.records(), source=target.url, zero_shot=zero_shot, streamed=streamed)
    unique: dict[RunKey, RunRecord] = {}
    for rec in store:
        key = rec.key
        if key in unique:
            _warn(f"<records>: the run {_brief(key)} is given twice; counted once")
            if unique[key].status == "complete" or rec.status != "complete":
                continue
        unique[key] = rec
    return _table(list(unique.values()), source="<records>", zero_shot=zero_shot, streamed=streamed)


def table_rows(recs: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """The complete records under the row names :func:`load_table` gives them.

    A model run under one set-up is its own row (``model``); one run under several gets a row
    per set-up, ``model#config_hash`` (plus ``@revision`` / ``+adapter`` when only those differ).
    The engine takes what records say beyond the losses (the NTK probe, warnings) by these names.
    """
    complete = [r for r in recs if r.status == "complete"]
    variants: dict[str, set[tuple[str | None, str | None, str | None]]] = {}
    for r in complete:
        variants.setdefault(r.model_id, set()).add((r.config_hash, r.key.revision, r.key.adapter))

    def row(r: RunRecord) -> str:
        seen = variants[r.model_id]
        if len(seen) == 1:
            return r.model_id
        name = f"{r.model_id}#{r.config_hash}"
        if len({v[1] for v in seen}) > 1:
            name += f"@{r.key.revision}"
        if len({v[2] for v in seen}) > 1:
            name += f"+{r.key.adapter}"
        return name

    out: dict[str, list[RunRecord]] = {}
    for r in complete:
        out.setdefault(row(r), []).append(r)
    return out


def check_writable(folder: str | os.PathLike | Store) -> None:
    """Fail early, with a clear message, when records cannot be written in ``folder`` (or URL).

    Creates the folder if needed and writes then deletes a small probe file.
    """
    folder = folder.url if isinstance(folder, Store) else os.fspath(folder)
    fs, path = _fs(folder)
    probe = f"{path.rstrip('/')}/.lensllm-write-test-{uuid.uuid4().hex[:8]}"
    try:
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"ok")
        fs.rm(probe)
    except (OSError, ValueError) as error:
        raise RecordError(f"{folder}: cannot write run records there ({error.__class__.__name__}: {error}); "
                          "pass a writable output_dir or store (a folder or fsspec URL)") from error


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
                          "when it exits; pass a folder or a persistent URL (s3://..., gs://...)")


# -- helpers ---------------------------------------------------------------------------------


class _NotRegular(Exception):
    """An entry that is not a regular file (reason in the message)."""


def _table(recs: list[RunRecord], *, source: str, zero_shot: bool, streamed: bool) -> CurveTable:
    complete = [r for r in recs if r.status == "complete"]
    if not complete:
        counts = {s: sum(r.status == s for r in recs) for s in STATUSES}
        raise RecordError(f"{source}: no complete run records ({len(recs)} found: "
                          + ", ".join(f"{n} {s}" for s, n in counts.items()) + "); let the runs finish or "
                          "point at the store they wrote to")
    final: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    stream: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    params: dict[str, float] = {}
    for name, r in ((name, r) for name, rs in table_rows(complete).items() for r in rs):
        params.setdefault(name, _num(r.model.get("num_parameters")))
        if r.train_size is not None and r.final_eval_loss is not None:
            final.setdefault((name, int(r.train_size)), []).append((r.final_eval_loss, r.total_flos))
        if zero_shot and r.zero_shot_loss is not None:
            stream.setdefault((name, 0), []).append((r.zero_shot_loss, 0.0))
        if streamed:
            for ev in r.evaluations:
                if ev.at_examples and ev.eval_loss is not None:
                    stream.setdefault((name, int(ev.at_examples)), []).append((ev.eval_loss, ev.total_flos))
    cells = {**stream, **final}  # a separate run of a size wins over a streamed point
    if not cells:
        raise RecordError(f"{source}: the complete runs recorded no finite eval loss; give the Trainer an "
                          "eval_dataset (runs with allow_no_eval=True only record the training loss)")
    models = sorted({name for name, _ in cells})
    sizes = sorted({size for _, size in cells})
    row_of = {m: i for i, m in enumerate(models)}
    col_of = {s: j for j, s in enumerate(sizes)}
    losses = np.full((len(models), len(sizes)), np.nan)
    flops = np.full((len(models), len(sizes)), np.nan)
    for (name, size), points in cells.items():
        i, j = row_of[name], col_of[size]
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
    return CurveTable(
        models=models,
        sizes=np.asarray(sizes, dtype=np.int64),
        losses=losses,
        params=param_arr if np.isfinite(param_arr).any() else None,
        flops=flops,
        source=source,
        problems=problems,
    )


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _parse(raw: bytes, where: str) -> RunRecord:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SchemaError(f"{where}: not a text file; a record is JSON written by LensLLMCallback") from None
    except json.JSONDecodeError as error:
        raise SchemaError(f"{where}: not valid JSON ({error.msg} at line {error.lineno}); the file is damaged, "
                          "re-run the run or delete the file") from None
    except RecursionError:
        raise SchemaError(f"{where}: JSON nested too deep; the file is not a record, delete it") from None
    return RunRecord.from_dict(data, where=where)


def _regular_stat(path: str) -> os.stat_result:
    """stat() that follows links (a loop raises OSError) and refuses anything but a regular file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _NotRegular(_kind(st.st_mode))
    if st.st_size > MAX_RECORD_BYTES:
        raise _NotRegular(f"is {st.st_size} bytes, too large for a record")
    return st


def _read_local(path: str) -> bytes:
    """A local regular file's bytes; FIFOs and devices are refused before a blocking open."""
    _regular_stat(path)
    # O_NONBLOCK: if a FIFO replaced the file since the stat, open() still returns at once.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(_kind(st.st_mode))
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_RECORD_BYTES:
                raise _NotRegular(f"is over {MAX_RECORD_BYTES} bytes, too large for a record")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"is {name}, not a regular file"
    return "is not a regular file"


def _why(error: BaseException) -> str:
    if isinstance(error, _NotRegular):
        return str(error)
    if isinstance(error, OSError):
        import errno

        if error.errno == errno.ELOOP:
            return "is a link loop"
        if error.errno == errno.ENOENT and error.filename and os.path.islink(error.filename):
            return "is a link to nothing"
        if error.errno in (errno.EACCES, errno.EPERM):
            return "cannot be read (permission denied)"
        return f"cannot be read ({error.strerror or error})"
    return str(error)


def _write_local(path: str, text: str) -> None:
    """Atomic local write; an entry there that is not a regular file (a FIFO, or a link to a
    device) is replaced, never written through."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if os.path.lexists(path):
        try:
            _regular_stat(path)
        except (OSError, _NotRegular) as error:
            _warn(f"{path}: {_why(error)}; replaced by the record")
            os.unlink(path)
    atomic_write_text(path, text)


def _write_remote(fs, path: str, text: str) -> None:
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


def _claim_text(key: RunKey, owner: str, generation: int, ttl_s: float) -> str:
    now = time.time()
    return json.dumps({"owner": owner, "host": socket.gethostname(), "node": _node(), "pid": os.getpid(),
                       "heartbeat_at": now, "heartbeat_iso": datetime.fromtimestamp(now, timezone.utc).isoformat(),
                       "ttl_s": ttl_s, "generation": generation, "key": key.to_dict()}) + "\n"


def _live(info: dict[str, Any] | None, ttl_s: float) -> bool:
    """Whether a claim still holds its run: a fresh heartbeat, and (on this machine) a live process."""
    if info is None:
        return False
    ttl = info.get("ttl_s")
    ttl = float(ttl) if isinstance(ttl, (int, float)) and math.isfinite(ttl) and ttl > 0 else ttl_s
    if time.time() - float(info["heartbeat_at"]) > ttl:
        return False
    pid = info.get("pid")
    if info.get("node") == _node() and isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False  # its process is gone: no need to wait for the heartbeat to age
        except OSError:
            pass  # exists, owned by another user
    return True


_NODE: str | None = None


def _node() -> str:
    """This machine and pid namespace (two containers may share a host name, not a namespace)."""
    global _NODE
    if _NODE is None:
        try:
            namespace = str(os.stat("/proc/self/ns/pid").st_ino)
        except OSError:
            namespace = "-"
        _NODE = f"{socket.gethostname()}/{namespace}"
    return _NODE


def _rank(rec: RunRecord, base: str) -> tuple[int, int]:
    return (0 if rec.status == "complete" else 1, 0 if base == rec.name else 1)


def _brief(key: RunKey) -> str:
    return display(", ".join(f"{k}={v!r}" for k, v in key.to_dict().items() if v is not None))


def _warn(message: str) -> None:
    warnings.warn(RecordWarning(display(" ".join(message.split()))), stacklevel=3)


def _check_key(key: Any) -> RunKey:
    if not isinstance(key, RunKey):
        raise RecordError(f"expected a RunKey, got {type(key).__name__}; build one with RunKey(model, train_size, "
                          "seed, config_hash)")
    return key


def _as_key(model: str | RunKey, train_size: int | None, seed: int | None, config_hash: str | None) -> RunKey:
    return model if isinstance(model, RunKey) else RunKey(model, train_size, seed, config_hash)


def _stem(key: RunKey) -> str:
    return key.name.removesuffix(STORE_SUFFIX)


def _is_record_name(name: str) -> bool:
    return name.endswith(STORE_SUFFIX) or name == DEFAULT_RECORD_NAME


def _basename(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


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
