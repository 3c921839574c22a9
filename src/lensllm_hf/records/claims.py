"""Claims: a run in flight is marked in its store so that no two processes train it.

A claim is a small file in the store's hidden :data:`CLAIMS_FOLDER` holding the owner (a fresh
uuid), host, pid and a heartbeat that a daemon thread refreshes. A claim whose heartbeat stopped
(or whose process is gone, on this machine) is taken over: claims are numbered generations
(``<run>.<n>.claim``), the newest one counts, and taking over creates generation ``n + 1``
exclusively, so of several processes that find the same stale claim exactly one wins. What
holds on object stores is in ``docs/store.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import socket
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._utils import atomic_write_text, load_json, node_id, pid_alive
from ..errors import ConfigError, RecordError
from .files import basename, join, write_remote
from .schema import STORE_SUFFIX, RunKey

if TYPE_CHECKING:
    from .store import Store

__all__ = ["CLAIMS_FOLDER", "Claim", "claim", "claim_of", "lock_path"]

#: Hidden folder of a store holding claim and lock files (never listed as records).
CLAIMS_FOLDER = ".lensllm-claims"
#: Longest heartbeat period a claim file may ask for (a day); a longer one is the caller's ttl.
MAX_CLAIM_TTL_S = 86_400
_CLAIM_SUFFIX = ".claim"


def claim(store: Store, key: RunKey, *, ttl_s: float = 120) -> Claim | None:
    """Claim ``key``'s run for this process before training it.

    Returns a :class:`Claim` (a context manager that heartbeats from a daemon thread and
    releases on exit), or None when the run is complete or another live owner holds it. A
    claim whose heartbeat is older than its ``ttl_s`` (or whose process is gone, on this
    host) is taken over.

    Local stores create the claim file exclusively (a hard link, or ``O_CREAT | O_EXCL``),
    so two processes never both get a claim. Object stores use an exclusive create when
    the fsspec backend offers one, else write-then-verify (best effort; docs/store.md).
    """
    if not (isinstance(ttl_s, (int, float)) and not isinstance(ttl_s, bool) and math.isfinite(ttl_s) and ttl_s > 0):
        raise ConfigError(f"Store.claim: ttl_s must be a positive number of seconds, got {ttl_s!r}", key="ttl_s",
                          value=ttl_s)
    if _complete(store, key):
        return None
    try:
        store._makedirs(store._fs_path(_claims_dir(store)))
        for _ in range(8):  # a few rounds: each lost race re-reads who holds the run
            held = _claims(store, key)
            generation = 0
            if held:
                top, top_path = held[-1]
                if _live(_read_claim(store, top_path), ttl_s):
                    return None
                generation = top + 1
            owner = uuid.uuid4().hex
            path = _claim_path(store, key, generation)
            if not _create_exclusive(store, path, _claim_text(key, owner, generation, ttl_s), owner):
                continue
            if any(g > generation for g, _ in _claims(store, key)):
                store._remove(path)  # someone took a later generation meanwhile: theirs stands
                return None
            for g, stale in held:  # the claims it replaced
                store._remove(stale)
            mine = Claim(store, key, path=path, owner=owner, generation=generation, ttl_s=float(ttl_s))
            if _complete(store, key):  # finished between our first look and our claim
                mine.release()
                return None
            mine._start()
            return mine
    except OSError as error:
        raise RecordError(f"{_claims_dir(store)}: cannot write claim files ({error.__class__.__name__}: "
                          f"{error}); pass a writable store", path=store.url) from error
    return None


def claim_of(store: Store, key: RunKey, *, ttl_s: float = 120) -> dict[str, Any] | None:
    """``{owner, host, pid, heartbeat_at}`` of the live claim on ``key``'s run, else None."""
    held = _claims(store, key)
    if not held:
        return None
    info = _read_claim(store, held[-1][1])
    if not _live(info, ttl_s):
        return None
    return {k: info[k] for k in ("owner", "host", "pid", "heartbeat_at")}


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
        info = _read_claim(self.store, self.path)
        newer = any(g > self.generation for g, _ in _claims(self.store, self.key))
        if info is None or info.get("owner") != self.owner or newer:
            self._lost = True  # taken over: never write a heartbeat into someone else's claim
            if newer and info is not None and info.get("owner") == self.owner:
                self.store._remove(self.path)
            return
        text = _claim_text(self.key, self.owner, self.generation, self.ttl_s)
        if self.store._local:
            atomic_write_text(self.path, text)
        else:
            write_remote(self.store._fs, self.store._fs_path(self.path), text)

    def release(self) -> None:
        """Stop heartbeating and remove the claim file (if it is still this claim's)."""
        if self._stop.is_set():
            return
        self._stop.set()
        atexit.unregister(self.release)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        info = _read_claim(self.store, self.path)
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


def _claims(store: Store, key: RunKey) -> list[tuple[int, str]]:
    """(generation, path) of the claim files of ``key``, oldest first."""
    prefix, folder = f"{_stem(key)}.", _claims_dir(store)
    try:
        if store._local:
            names = os.listdir(folder)
        else:
            names = [basename(p) for p in store._fs.ls(store._fs_path(folder), detail=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        middle = name[len(prefix):-len(_CLAIM_SUFFIX)] if name.startswith(prefix) and name.endswith(
            _CLAIM_SUFFIX) else ""
        if middle.isdigit():
            found.append((int(middle), join(folder, name)))
    return sorted(found)


def _read_claim(store: Store, path: str) -> dict[str, Any] | None:
    try:
        raw = store._read_bytes(path)
        info = load_json(raw.decode("utf-8"), path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecordError):
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("heartbeat_at"), (int, float)):
        # Half-written or damaged: its file time is the best heartbeat we have.
        with contextlib.suppress(OSError, RecordError):
            return {"owner": None, "host": None, "pid": None, "heartbeat_at": _mtime(store, path)}
        return None
    return info


def _mtime(store: Store, path: str) -> float:
    if store._local:
        return os.stat(path).st_mtime
    info = store._fs.info(store._fs_path(path))
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


def _create_exclusive(store: Store, path: str, text: str, owner: str) -> bool:
    data = text.encode("utf-8")
    if store._local:
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
    fs_path = store._fs_path(path)
    try:
        with store._fs.open(fs_path, "xb") as handle:
            handle.write(data)
        return True
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError, TypeError):
        pass  # the backend has no exclusive create: write, then check that ours is the one there
    if store._fs.exists(fs_path):
        return False
    store._fs.pipe_file(fs_path, data)
    time.sleep(0.05)
    try:
        return load_json(store._fs.cat_file(fs_path).decode("utf-8"), path).get("owner") == owner
    except (OSError, ValueError):
        return False


def _claim_text(key: RunKey, owner: str, generation: int, ttl_s: float) -> str:
    now = time.time()
    return json.dumps({"owner": owner, "host": socket.gethostname(), "node": node_id(), "pid": os.getpid(),
                       "heartbeat_at": now, "heartbeat_iso": datetime.fromtimestamp(now, timezone.utc).isoformat(),
                       "ttl_s": ttl_s, "generation": generation, "key": key.to_dict()}) + "\n"


def _live(info: dict[str, Any] | None, ttl_s: float) -> bool:
    """Whether a claim still holds its run: a fresh heartbeat, and (on this machine) a live process."""
    if info is None:
        return False
    ttl = info.get("ttl_s")
    ttl = float(ttl) if isinstance(ttl, (int, float)) and 0 < ttl <= MAX_CLAIM_TTL_S else ttl_s
    age = time.time() - float(info["heartbeat_at"])
    if not -MAX_CLAIM_TTL_S <= age <= ttl:  # stale; or from past tomorrow (damaged, else it would hold forever)
        return False
    pid = info.get("pid")
    # its process gone, on this machine: no need to wait for the heartbeat to age
    return not (info.get("node") == node_id() and isinstance(pid, int) and not pid_alive(pid))


def _claims_dir(store: Store) -> str:
    return join(store.url, CLAIMS_FOLDER)


def lock_path(store: Store, key: RunKey) -> str:
    """The run's lock file in the claims folder, where a store's writes lock when its folder cannot be locked."""
    return join(_claims_dir(store), f"{_stem(key)}.lock")


def _claim_path(store: Store, key: RunKey, generation: int) -> str:
    return join(_claims_dir(store), f"{_stem(key)}.{generation}{_CLAIM_SUFFIX}")


def _complete(store: Store, key: RunKey) -> bool:
    rec = store.read(key)
    return rec is not None and rec.status == "complete"


def _stem(key: RunKey) -> str:
    return key.name.removesuffix(STORE_SUFFIX)
