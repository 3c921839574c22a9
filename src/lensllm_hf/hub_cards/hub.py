"""Fits on the Hub: :func:`push_fits` through ``huggingface_hub.metadata_update``, :func:`load_fits` back.

The Hub address is huggingface_hub's (``HF_ENDPOINT``, read when huggingface_hub is
imported), the token ``token=`` or its usual lookup (``HF_TOKEN``, then ``hf auth login``).
Every Hub failure becomes one :class:`~lensllm_hf.errors.HubError` line (its ``status`` the HTTP status) that names
the cause and what to do; no message ever contains the token or the credentials of an
``HF_ENDPOINT`` URL. A server that does not answer like a Hub (a captive portal's HTML page, a
proxy's garbage) is one such line too. With ``HF_HUB_OFFLINE=1`` (set before or after the
import) nothing is sent: :func:`load_fits` reads the card from huggingface_hub's cache or fails
at once, :func:`push_fits` fails at once.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from huggingface_hub import (
    CommitInfo,
    HfApi,
    ModelCard,
    constants,
    get_hf_file_metadata,
    get_session,
    get_token,
    hf_hub_download,
    hf_hub_url,
    metadata_update,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.repocard_data import eval_results_to_model_index
from huggingface_hub.utils import validate_repo_id

from .._utils import one_line
from ..errors import CardError, CardMetadataError, HubCacheWarning, HubError, NetworkError, redact
from .local import CARD_NAME, read_card
from .metadata import METADATA_KEY, CardFit, as_fit_list, eval_results_for, merge_fits, parse_fits

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    from httpx2 import DecodingError, TimeoutException, TransportError
except ImportError:  # pragma: no cover
    from httpx import DecodingError, TimeoutException, TransportError

__all__ = ["load_fits", "push_fits"]

#: Org roles that may commit to the org's repos.
_WRITER_ROLES = {"admin", "write", "contributor"}

# What a server that is not a Hub makes the client raise while it reads the answer: HTML or
# garbage where JSON was due (JSONDecodeError is a ValueError), JSON of the wrong shape
# (KeyError, TypeError, AttributeError...), a body that cannot be decoded.
_NOT_A_HUB_ANSWER = (ValueError, LookupError, TypeError, AttributeError, StopIteration, DecodingError,
                     FileMetadataError)


def push_fits(repo_id: str, fits: CardFit | Iterable[CardFit], *, create_pr: bool | None = None,
              token: str | None = None, commit_message: str | None = None) -> CommitInfo:
    """Publish fits in the model card of a Hub repo, keeping the card's other metadata.

    The fits are merged into the card's ``lensllm`` block (the same (dataset, config, split,
    metric, adapter) replaces its entry) and the observed losses into ``model-index``; the
    card is then updated with ``huggingface_hub.metadata_update``, which only adds and updates
    eval results: those of sizes a re-pushed fit no longer has stay (``write_card`` drops them).
    The commit names the head it read, so a card changed meanwhile is never overwritten.

    Args:
        repo_id: the model repo, ``"namespace/name"``.
        fits: one :class:`CardFit` or several (see :func:`fits_from_ranking`).
        create_pr: True opens a pull request, False commits to ``main``; None (default) commits
            when the token's user or one of its organisations owns ``repo_id``, else opens a PR.
        token: a Hub token with write access; default: ``HF_TOKEN`` or the ``hf auth login`` one.
        commit_message: the commit (or PR) title.

    Returns:
        The commit: ``.commit_url``, and ``.pr_url`` when a pull request was opened.

    Raises:
        HubError: no token, 401, 403, 404, network down, a 5xx, or the card changed meanwhile
            (412); nothing was changed.
        CardMetadataError: the card on the Hub has a malformed ``lensllm`` block.

    Example:
        >>> fits = fits_from_ranking(Ranking.read_json("fit.json"), "gpt2", dataset="imdb")  # doctest: +SKIP
        >>> push_fits("alice/gpt2-imdb", fits).commit_url  # doctest: +SKIP
        'https://huggingface.co/alice/gpt2-imdb/commit/...'
    """
    fits = as_fit_list(fits)
    _redact_client_logs()
    if is_offline():
        raise NetworkError(f"pushing fits to {_shown(repo_id)}: HF_HUB_OFFLINE is set, so nothing is sent; "
                           "unset it to reach the Hub; nothing was changed on the Hub or here", source=repo_id)
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN to a token with write access or run "
                       "'hf auth login'; nothing was changed on the Hub or here", source=repo_id, status=401)
    with _explained(repo_id, "pushing fits to", pushing=True, secrets=(token,)), _bounded_waits():
        api = HfApi()
        if create_pr is None:
            create_pr = not _may_commit(repo_id, api.whoami(token=token))
        # The head of main before reading the card: the commit is refused if it moves (no lost update).
        head = api.model_info(repo_id, token=token, timeout=request_timeout()).sha
        card = _hub_card(repo_id, token)
        existing = parse_fits(card.data.get(METADATA_KEY), repo_id) if card else []  # malformed: stop here
        model_name = (card.data.model_name if card else None) or repo_id
        metadata = {
            METADATA_KEY: [fit.to_dict() for fit in merge_fits(existing, fits)],
            "model-index": eval_results_to_model_index(model_name, eval_results_for(fits)),
        }
        titles = ", ".join(sorted({fit.dataset for fit in fits}))
        return metadata_update(repo_id, metadata, overwrite=True, token=token, create_pr=create_pr, parent_commit=head,
                               commit_message=commit_message or f"Add LensLLM scaling-law fits ({titles})")


def load_fits(repo_id_or_path: str | os.PathLike, *, token: str | None = None) -> list[CardFit]:
    """The fits published in a model card, as :class:`CardFit` objects carrying the ranking's Fit.

    With ``HF_HUB_OFFLINE=1`` a Hub card comes from huggingface_hub's cache, and when it is not
    there the call fails at once (no request, no retries).

    Args:
        repo_id_or_path: a Hub repo ID, a model folder, or a README.md path.
        token: for private repos; default: ``HF_TOKEN`` or the ``hf auth login`` one.

    Returns:
        The fits in the card's order; empty when the card (or the folder's README.md) has none.

    Example:
        >>> fits = load_fits("alice/gpt2-imdb")  # doctest: +SKIP
        >>> fit = find_fit(fits, dataset="imdb", split="test")  # doctest: +SKIP
        >>> fit.predict([1_638_400])  # doctest: +SKIP
    """
    path = _local_card(repo_id_or_path)
    if path is not None:
        if not path.exists():
            return []  # a model folder without a card
        card = read_card(path)
        return parse_fits(card.data.get(METADATA_KEY), str(path))
    repo_id = str(repo_id_or_path)
    _redact_client_logs()
    with _explained(repo_id, "reading the card of", pushing=False, secrets=(token, get_token())), _bounded_waits():
        card = _hub_card(repo_id, token, offline=is_offline())
    return parse_fits(card.data.get(METADATA_KEY), repo_id) if card else []


class _RedactingFilter(logging.Filter):
    """Redacts tokens and ``HF_ENDPOINT`` credentials from the HTTP clients' own log lines.

    huggingface_hub logs each retry with the full URL (``... thrown while requesting HEAD
    http://user:password@proxy/...``) and httpx logs every request at INFO; a filter on the
    logger that makes the record rewrites it before any handler (stderr, a log file) sees it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, (get_token(), urlsplit(constants.ENDPOINT).password))
        if clean != message:
            record.msg, record.args = clean, None
        return True


_LOG_FILTER = _RedactingFilter()
_CLIENT_LOGGERS = ("huggingface_hub", "httpx", "httpx2", "httpcore")


def _redact_client_logs() -> None:
    """Put :class:`_RedactingFilter` on every logger of the Hub's HTTP clients (once per logger)."""
    for name in list(sys.modules):
        if name.split(".")[0] in _CLIENT_LOGGERS:
            logger = logging.getLogger(name)
            if _LOG_FILTER not in logger.filters:
                logger.addFilter(_LOG_FILTER)


def _local_card(source: str | os.PathLike) -> Path | None:
    """The README.md that ``source`` names here (a model folder or the file), or None: then it is a repo ID.

    Anything here that is not a folder is the file (a FIFO or a device: the bounded reader names it).
    """
    path = Path(source)
    try:
        if path.is_dir():
            return path / CARD_NAME
        return path if path.exists() else None
    except OSError:  # a name too long for a path (a 300-character candidate name): not a local file
        return None


def is_offline() -> bool:
    """Whether huggingface_hub's offline mode is on, counting an ``HF_HUB_OFFLINE`` set after its import.

    huggingface_hub reads ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) once, when it is
    imported; a script or notebook that sets it later would otherwise wait through the client's
    retries (about 25 s) before failing.
    """
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")  # huggingface_hub's rule
    return constants.is_offline_mode() or (value or "").upper() in constants.ENV_VARS_TRUE_VALUES


def _hub_card(repo_id: str, token: str | None, *, offline: bool = False) -> ModelCard | None:
    """The repo's card, read within bounds (:func:`read_card`), or None when the repo has no README.md."""
    try:
        validate_repo_id(repo_id)  # before anything probes it as a path (a 5,000-character name: OSError)
        if offline:  # the cached card or nothing: no request, not even the client's header lookups
            cached = try_to_load_from_cache(repo_id, CARD_NAME)
            if cached is None:
                raise NetworkError(f"reading the card of {_shown(repo_id)}: HF_HUB_OFFLINE is set and the card is "
                                   "not in the local Hugging Face cache; unset HF_HUB_OFFLINE to reach the Hub",
                                   source=repo_id)
            return read_card(cached, _shown(repo_id)) if isinstance(cached, str) else None  # else: known to have none
        return read_card(_fetch_card(repo_id, token), _shown(repo_id))
    except RemoteEntryNotFoundError:  # not LocalEntryNotFoundError: that one means "could not ask the Hub"
        return None
    except HFValidationError:
        raise CardError(f"{_shown(repo_id)}: no such folder or file here, and not a Hub repo ID "
                        "('namespace/name')", source=repo_id) from None
    except (CardError, HfHubHTTPError):  # BadRequestError is a ValueError too: not the card's fault
        raise
    except (ValueError, yaml.YAMLError) as error:
        raise CardMetadataError(f"{_shown(repo_id)}: the card's metadata is malformed ({one_line(str(error), 300)}); "
                                "fix it on the Hub first", source=repo_id) from None


def _fetch_card(repo_id: str, token: str | None) -> str:
    """The path of the repo's README.md in huggingface_hub's cache, asked for with a timeout.

    huggingface_hub's own download falls back to a cached copy in silence when the Hub fails,
    and without one retries with 60 s waits. Here the card's metadata is asked for once first,
    with :func:`metadata_timeout`: when that fails (no answer, 5xx, 401, 429...) a cached copy is
    used with a :class:`~lensllm_hf.errors.HubCacheWarning` that says so; without one the question
    is asked again with huggingface_hub's bounded retries (5, backing off 1 to 8 s, the same
    timeout), and a last failure goes up (one line).
    """
    url = hf_hub_url(repo_id, CARD_NAME)
    try:
        get_hf_file_metadata(url, token=token, timeout=metadata_timeout())
    except (RemoteEntryNotFoundError, RevisionNotFoundError):
        raise
    except (HfHubHTTPError, TransportError, FileMetadataError) as error:
        cached = try_to_load_from_cache(repo_id, CARD_NAME)
        if not isinstance(cached, str):
            get_hf_file_metadata(url, token=token, timeout=metadata_timeout(), retry_on_errors=True)
            return hf_hub_download(repo_id, CARD_NAME, token=token, etag_timeout=metadata_timeout())
        endpoint = redact(constants.ENDPOINT)
        warnings.warn(HubCacheWarning(f"{_shown(repo_id)}: the Hub at {endpoint} did not answer ({_failure(error)}); "
                                      "using the copy of its card cached on this machine, which may be out of date",
                                      source=repo_id, endpoint=endpoint), stacklevel=4)
        return cached
    return hf_hub_download(repo_id, CARD_NAME, token=token, etag_timeout=metadata_timeout())


def metadata_timeout() -> float:
    """Seconds to wait for the Hub's answer about a file: huggingface_hub's ``HF_HUB_ETAG_TIMEOUT`` (10)."""
    return float(constants.HF_HUB_ETAG_TIMEOUT)


def request_timeout() -> float:
    """Seconds to wait for any other Hub answer: huggingface_hub's ``HF_HUB_DOWNLOAD_TIMEOUT`` (10), which
    it documents as the default timeout of its requests."""
    return float(constants.HF_HUB_DOWNLOAD_TIMEOUT)


@contextmanager
def _bounded_waits() -> Iterator[None]:
    """Give huggingface_hub's shared HTTP client a timeout while this module's calls run.

    Its default client waits forever (``timeout=None``) on the API calls that pass none
    (``whoami``, the commit, its pre-upload); a Hub that accepts the connection and never
    answers would hang a push. A client the user configured with timeouts of their own
    (``set_client_factory``) is left as it is.
    """
    session = get_session()
    before = session.timeout
    if any(value is not None for value in (before.connect, before.read, before.write, before.pool)):
        yield
        return
    session.timeout = request_timeout()
    try:
        yield
    finally:
        session.timeout = before


def _failure(error: BaseException) -> str:
    """A few words on how a request failed: ``no answer within 10 s``, ``status 503``, ``ConnectError``."""
    if isinstance(error, TimeoutException):
        return f"no answer within {metadata_timeout():g} s"
    response = getattr(error, "response", None)
    if isinstance(error, HfHubHTTPError) and response is not None:
        return f"status {response.status_code}"
    return type(error).__name__


def _may_commit(repo_id: str, who: dict) -> bool:
    """Whether the token's user may commit to ``repo_id`` directly (its own namespace or a writable org)."""
    namespace = repo_id.split("/")[0] if "/" in repo_id else None
    if namespace is None:
        return False
    if namespace == who.get("name"):
        return True
    return any(org.get("name") == namespace and org.get("roleInOrg") in _WRITER_ROLES for org in who.get("orgs", []))


@contextmanager
def _explained(repo_id: str, doing: str, *, pushing: bool, secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Turn huggingface_hub and network errors into one HubError line (never the raw response).

    ``secrets`` (the token in use) are redacted from the message, beside every ``hf_...`` token
    and URL credential (:func:`~lensllm_hf.errors.redact`).
    """
    secrets = (*secrets, urlsplit(constants.ENDPOINT).password)  # an echoing proxy may repeat it without the URL
    try:
        yield
    except CardError as error:
        redacted = redact(str(error), secrets)
        if redacted == str(error):
            raise
        raise _reworded(error, redacted) from None
    except Exception as error:
        hub_error = _as_hub_error(error, repo_id, doing, pushing) or HubError(
            f"{doing} {_shown(repo_id)}: unexpected failure ({one_line(error, 300)}); check HF_ENDPOINT and the "
            f"network, and report it if it persists{'; nothing was changed on the Hub or here' if pushing else ''}")
        hub_error.source, hub_error.endpoint = repo_id, redact(constants.ENDPOINT)
        raise _reworded(hub_error, redact(str(hub_error), secrets)) from None


def _reworded(error: CardError, message: str) -> CardError:
    """A copy of ``error`` (its attributes kept) with ``message``."""
    again = copy.copy(error)
    again.args = (message,)
    return again


def _as_hub_error(error: BaseException, repo_id: str, doing: str, pushing: bool) -> HubError | None:
    cause = _root_cause(error)
    repo_id = _shown(repo_id)
    where = redact(constants.ENDPOINT)
    safe = "; nothing was changed on the Hub or here" if pushing else ""
    not_a_hub = (f"{doing} {repo_id}: the server at {where} did not answer like a Hugging Face Hub "
                 f"({{what}}); check HF_ENDPOINT, a proxy or the network's login page, and retry{safe}")
    if isinstance(cause, OfflineModeIsEnabled):
        return NetworkError(f"{doing} {repo_id}: HF_HUB_OFFLINE is set; unset it to reach the Hub{safe}")
    if isinstance(cause, TimeoutException):
        return NetworkError(f"{doing} {repo_id}: the Hub at {where} did not answer in time ({type(cause).__name__} "
                            f"after {max(metadata_timeout(), request_timeout()):g} s); check the network or "
                            "HF_ENDPOINT and retry, or wait longer with HF_HUB_DOWNLOAD_TIMEOUT and "
                            f"HF_HUB_ETAG_TIMEOUT (seconds){safe}")
    if isinstance(cause, TransportError):
        return NetworkError(f"{doing} {repo_id}: cannot reach the Hub at {where} ({type(cause).__name__}); "
                            f"check the network or HF_ENDPOINT and retry{safe}")
    if isinstance(cause, HfHubHTTPError) and cause.response is not None:
        status = cause.response.status_code
        if status < 500 and _is_html(cause.response) and not isinstance(cause, RepositoryNotFoundError):
            return HubError(not_a_hub.format(what=f"an HTML page with status {status}"), status=status)
        if isinstance(cause, GatedRepoError):
            return HubError(f"{doing} {repo_id}: the repo is gated; accept its conditions on the Hub with this "
                            f"account first{safe}", status=403)
        if isinstance(cause, RepositoryNotFoundError) or status == 404:
            return HubError(f"{doing} {repo_id}: no such model repo on {where} ({status}), or it is private and "
                            f"the token cannot see it; check the ID or create the repo first{safe}", status=404)
        if status == 401:
            return HubError(f"{doing} {repo_id}: the Hub rejected the token (401 Unauthorized); set HF_TOKEN to "
                            f"a valid token or run 'hf auth login'{safe}", status=401)
        if status == 403:
            fix = "use a token with write access, or open a pull request (--pr / create_pr=True)" if pushing \
                else "use a token that can read this repo"
            return HubError(f"{doing} {repo_id}: the token may not do this (403 Forbidden); {fix}{safe}", status=403)
        if status == 400:
            reason = " ".join(str(cause.server_message or "").split())[:200]
            return HubError(f"{doing} {repo_id}: the Hub rejected the card (400 Bad Request: {reason}){safe}",
                            status=400)
        if status == 412:
            return HubError(f"{doing} {repo_id}: the card changed on the Hub while pushing (412); run it again "
                            f"to merge with the new card{safe}", status=412)
        if status >= 500:
            return NetworkError(f"{doing} {repo_id}: the Hub at {where} answered {status} (server error); "
                                f"try again later{safe}", status=status)
        return HubError(f"{doing} {repo_id}: the Hub answered {status}{safe}", status=status)
    if _in_chain(error, FileMetadataError):  # e.g. a file answer without the Hub's X-Repo-Commit header
        return HubError(not_a_hub.format(what="its file answers lack the Hub's headers"))
    if isinstance(error, LocalEntryNotFoundError):  # the Hub's answer was unusable and nothing is cached
        return NetworkError(f"{doing} {repo_id}: could not fetch the card from {where}; check the network "
                            f"or HF_ENDPOINT and retry{safe}")
    if isinstance(error, json.JSONDecodeError):
        return HubError(not_a_hub.format(what="its answer is not JSON"))
    if isinstance(error, _NOT_A_HUB_ANSWER):
        return HubError(not_a_hub.format(what=f"its answer has an unexpected shape: {type(error).__name__}"))
    return None


def _shown(repo_id: str, limit: int = 100) -> str:
    """A repo ID short enough for a one-line message (a 5,000-character name would push the cause off it)."""
    return repo_id if len(repo_id) <= limit else f"{repo_id[:limit - 30]}… ({len(repo_id):,} characters)"


def _is_html(response: object) -> bool:
    """An HTML page without the Hub's error header: a web server's or proxy's page, not the Hub's answer."""
    headers = getattr(response, "headers", {})
    return "text/html" in headers.get("content-type", "").lower() and not headers.get("x-error-code")


def _in_chain(error: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _root_cause(error: BaseException) -> BaseException:
    """The first Hub or network error in the chain (huggingface_hub wraps them), else ``error``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, HfHubHTTPError | TransportError | OfflineModeIsEnabled):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return error
