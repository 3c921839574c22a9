"""A local stand-in for the Hugging Face Hub, for tests: stdlib ``http.server`` on 127.0.0.1.

It answers the endpoints that the real ``huggingface_hub`` client calls for model cards and
commits, keeps repositories in memory and records every request, so a test can check exactly
what reached the Hub (which YAML, which token, whether a pull request was opened).

Endpoints (``{repo}`` is ``namespace/name``, ``{rev}`` a URL-quoted revision)::

    GET  /api/whoami-v2                              who the token belongs to (401 without one)
    GET  /api/models/{repo}[/revision/{rev}]         model_info / repo_info
    HEAD /{repo}/resolve/{rev}/{path}                file metadata for hf_hub_download
    GET  /{repo}/resolve/{rev}/{path}                file content
    POST /api/validate-yaml                          README metadata check (RepoCard.validate, create_commit)
    POST /api/repos/create                           create_repo (409 when it exists)
    POST /api/models/{repo}/preupload/{rev}          upload modes: always "regular" (inline, no LFS)
    POST /api/models/{repo}/commit/{rev}[?create_pr=1]  NDJSON commit; a pull request with create_pr

Permissions follow the Hub: anyone may read a public repo; a token may commit to its user's
and its organisations' repos; any valid token may open a pull request. ``fail_with`` makes
request answer one HTTP status (e.g. 503), or only those whose path contains ``fail_on``, to
test how clients handle an unwell Hub. ``answer_all_with = (status, content_type, body)``
makes it answer every request with that instead, like a server that is not a Hub (a captive
portal's HTML page, a proxy's garbage JSON). A commit whose ``parentCommit`` is not the head
of ``main`` is refused with 412, as on the Hub.

Example:
    >>> hub = FakeHub(tokens={"hf_alice": "alice"}).start()
    >>> hub.add_repo("alice/tiny", {"README.md": b"---\\nlicense: mit\\n---\\n# Tiny\\n"})
    >>> hub.url
    'http://127.0.0.1:...'
    >>> hub.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from huggingface_hub import ModelCard

__all__ = ["FakeHub", "PullRequest", "Request", "SilentServer"]


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: bytes


@dataclass
class PullRequest:
    """A pull request opened by a commit with ``create_pr=1``: its files and commit message."""

    repo_id: str
    number: int
    title: str
    files: dict[str, bytes]


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)  # commit messages, oldest first
    sha: str = "0" * 40


class FakeHub:
    """In-memory Hub on 127.0.0.1 (port chosen by the OS). Use as a context manager or start/stop.

    Args:
        tokens: valid tokens and the user each belongs to.
        orgs: organisations each user may write to.
    """

    def __init__(self, tokens: dict[str, str] | None = None, orgs: dict[str, list[str]] | None = None):
        self.tokens = dict(tokens or {})
        self.orgs = dict(orgs or {})
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.pull_requests: list[PullRequest] = []
        self.fail_with: int | None = None
        self.fail_on = ""  # with fail_with: fail only requests whose path contains this
        self.fail_message = "The Hub is having a bad day"  # with fail_with: the error message it answers
        self.fail_times: int | None = None  # with fail_with: fail only this many requests, then answer
        self.answer_all_with: tuple[int, str, bytes] | None = None  # (status, content type, body) for every request
        self.hooks: dict[str, Any] = {}  # path substring -> fn(request), run before the request is answered
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the FakeHub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- state ------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None) -> None:
        repo = Repo(files=dict(files or {}))
        repo.sha = _sha(repo_id.encode() + b"".join(sorted(repo.files.values())))
        self.repos[repo_id] = repo

    def commit_file(self, repo_id: str, path: str, content: bytes, message: str = "someone else's commit") -> None:
        """A commit made by someone else (e.g. between a client's read and its write)."""
        repo = self.repos[repo_id]
        repo.files[path] = content
        repo.commits.append(message)
        repo.sha = _sha(repo.sha.encode() + content)

    def readme(self, repo_id: str) -> str:
        """The README.md on the main branch of a repo."""
        return self.repos[repo_id].files["README.md"].decode("utf-8")

    def calls(self, method: str | None = None, contains: str = "") -> list[Request]:
        """Recorded requests, filtered by method and a substring of the path."""
        return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    def user_of(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        return self.tokens.get(authorization.removeprefix("Bearer "))

    def may_write(self, user: str, repo_id: str) -> bool:
        namespace = repo_id.split("/")[0] if "/" in repo_id else None
        return namespace == user or namespace in self.orgs.get(user, [])


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing ---------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(method, unquote(parts.path), parse_qs(parts.query), self.headers.get("Authorization"), body)
        hub = self.hub
        with hub._lock:
            hub.requests.append(request)
            if hub.answer_all_with is not None:
                status, content_type, answer = hub.answer_all_with
                return self._send(status, answer, content_type=content_type)
            if hub.fail_with is not None and hub.fail_on in request.path and hub.fail_times != 0:
                if hub.fail_times is not None:
                    hub.fail_times -= 1
                return self._error(hub.fail_with, hub.fail_message)
            for part, hook in list(hub.hooks.items()):
                if part in request.path:
                    hook(request)
            if request.authorization and hub.user_of(request.authorization) is None:  # as the Hub: bad token, 401
                return self._error(401, "Invalid credentials in Authorization header")
            try:
                self._route(request)
            except Exception as error:  # a bug in the fake, not a Hub answer: make it loud
                self._error(500, f"fake hub crashed: {error!r}")
                raise

    def _route(self, r: Request) -> None:
        path = r.path
        if path == "/api/whoami-v2" and r.method == "GET":
            return self._whoami(r)
        if path == "/api/agent-harnesses":  # the client's best-effort telemetry lookup: not served here
            return self._error(404, "not served by the fake hub")
        if path == "/api/validate-yaml" and r.method == "POST":
            return self._validate_yaml(r)
        if path == "/api/repos/create" and r.method == "POST":
            return self._create_repo(r)
        if path.startswith("/api/models/"):
            rest = path.removeprefix("/api/models/")
            for action in ("/preupload/", "/commit/", "/revision/"):
                if action in rest:
                    repo_id, revision = rest.split(action, 1)
                    return getattr(self, "_" + action.strip("/"))(r, repo_id, revision)
            if r.method == "GET":
                return self._revision(r, rest, "main")
        if "/resolve/" in path and r.method in ("GET", "HEAD"):
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            revision, _, filename = rest.partition("/")
            return self._resolve(r, repo_id, revision, filename)
        self._error(404, f"fake hub does not answer {r.method} {path}")

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode())

    def _error(self, status: int, message: str, error_code: str | None = None, headers: dict[str, str] | None = None):
        extra = {"X-Error-Message": message, **(headers or {})}
        if error_code:
            extra["X-Error-Code"] = error_code
        self._send(status, json.dumps({"error": message}).encode(), extra)

    # -- auth -------------------------------------------------------------------------
    def _require_user(self, r: Request) -> str | None:
        user = self.hub.user_of(r.authorization)
        if user is None:
            self._error(401, "Invalid credentials in Authorization header")
        return user

    def _repo_or_404(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return repo

    # -- endpoints --------------------------------------------------------------------
    def _whoami(self, r: Request) -> None:
        if (user := self._require_user(r)) is None:
            return
        orgs = [{"name": org, "roleInOrg": "write"} for org in self.hub.orgs.get(user, [])]
        self._json({"type": "user", "name": user, "orgs": orgs,
                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def _revision(self, r: Request, repo_id: str, revision: str) -> None:
        if (repo := self._repo_or_404(repo_id)) is None:
            return
        self._json({"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False,
                    "author": repo_id.split("/")[0], "siblings": [{"rfilename": name} for name in sorted(repo.files)]})

    def _resolve(self, r: Request, repo_id: str, revision: str, filename: str) -> None:
        if (repo := self._repo_or_404(repo_id)) is None:
            return
        if filename not in repo.files:
            return self._error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": repo.sha})
        content = repo.files[filename]
        self._send(200, content, {"X-Repo-Commit": repo.sha, "ETag": f'"{_sha(content)}"'},
                   content_type="application/octet-stream")

    def _validate_yaml(self, r: Request) -> None:
        content = json.loads(r.body)["content"]
        try:  # the same checks huggingface_hub runs locally when it loads a card
            ModelCard(content)
        except Exception as error:
            return self._json({"errors": [{"message": str(error)}], "warnings": []}, status=400)
        self._json({"errors": [], "warnings": []})

    def _create_repo(self, r: Request) -> None:
        if (user := self._require_user(r)) is None:
            return
        payload = json.loads(r.body)
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        if not self.hub.may_write(user, repo_id):
            return self._error(403, "You don't have the rights to create a model under this namespace")
        if repo_id in self.hub.repos:
            return self._error(409, "You already created this model repo", headers={})
        self.hub.add_repo(repo_id)
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def _preupload(self, r: Request, repo_id: str, revision: str) -> None:
        if (user := self._require_user(r)) is None or self._repo_or_404(repo_id) is None:
            return
        if not r.query.get("create_pr") and not self.hub.may_write(user, repo_id):
            return self._error(403, "You don't have the rights to write to this repo; open a pull request")
        files = json.loads(r.body)["files"]
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                              for f in files]})

    def _commit(self, r: Request, repo_id: str, revision: str) -> None:
        if (user := self._require_user(r)) is None or (repo := self._repo_or_404(repo_id)) is None:
            return
        create_pr = bool(r.query.get("create_pr"))
        if not create_pr and not self.hub.may_write(user, repo_id):
            return self._error(403, "You don't have the rights to write to this repo; open a pull request")
        lines = [json.loads(line) for line in r.body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if not create_pr and header.get("parentCommit") not in (None, repo.sha):
            return self._error(412, "A commit has happened since. Please refresh and try again.")
        changed = {}
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                changed[value["path"]] = base64.b64decode(value["content"])
        sha = _sha(json.dumps([repo_id, header["summary"], len(repo.commits), len(self.hub.pull_requests)]).encode())
        if create_pr:
            number = len(self.hub.pull_requests) + 1
            self.hub.pull_requests.append(PullRequest(repo_id, number, header["summary"], {**repo.files, **changed}))
            url = f"{self.hub.url}/{repo_id}/discussions/{number}"
            return self._json({"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                               "pullRequestUrl": url})
        repo.files.update(changed)
        repo.commits.append(header["summary"])
        repo.sha = sha
        self._json({"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha})


class SilentServer:
    """A server on 127.0.0.1 that accepts every connection and never answers (a hung Hub or proxy).

    Each connection is held open, unread, until :meth:`stop`, so a client without a timeout would
    wait forever; a test asserts that ours gives up. ``connections`` counts the accepted ones.

    Example:
        >>> with SilentServer() as silent:
        ...     silent.url
        'http://127.0.0.1:...'
    """

    def __init__(self) -> None:
        self.connections = 0
        self._held: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> SilentServer:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        threading.Thread(target=self._accept, name="silent-server", daemon=True).start()
        return self

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._held.append(connection)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for connection in self._held:
            connection.close()

    def __enter__(self) -> SilentServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._listener is not None, "start() the SilentServer first"
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
