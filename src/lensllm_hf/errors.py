"""Every exception and warning of lensllm_hf, each carrying what went wrong as attributes.

All errors derive from :class:`LensLLMError`, whose message is one line naming the problem
and the fix; the CLI prints it and exits 2. The attributes (``key``, ``value``, ``path``,
``law``, ``status``, ...) say the same for a program, as ``huggingface_hub.errors`` does::

    try:
        selector = LensLLMSelector(candidates, train, level=1.5)
    except ConfigError as error:
        error.key, error.value      # ('level', 1.5)

Card and Hub messages pass through :func:`redact`, so no token or URL password reaches a log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "BoundsError",
    "CandidateError",
    "CardError",
    "CardMetadataError",
    "ConfigError",
    "CurveError",
    "FitError",
    "HubCacheWarning",
    "HubError",
    "LensLLMError",
    "NetworkError",
    "RecordError",
    "RecordWarning",
    "SchemaError",
    "redact",
]


class LensLLMError(Exception):
    """Bad input or a failed operation, explained in one line. The CLI prints it and exits 2."""


class ConfigError(LensLLMError, ValueError):
    """A parameter, config key or argument with a bad value (selector, YAML config, CLI flag, callback).

    Attributes:
        key: the parameter or key as written (``"budget"``, ``"dataset.files.train"``), or None
            when the problem is between several.
        value: the value given (None when there was none).
        path: the config file, or None for Python arguments and flags.
    """

    def __init__(self, message: str, *, key: str | None = None, value: Any = None, path: str | None = None) -> None:
        super().__init__(message)
        self.key, self.value, self.path = key, value, path


class BoundsError(LensLLMError, ValueError):
    """Outside data past a bound: nested too deep, a number written too long, a file too large or not
    a regular file, a value out of range (a fit predicting an infinite loss).

    Readers turn it into their own error (a skipped record, a :class:`CardMetadataError`, a
    :class:`ConfigError`) or let it through as one line.

    Attributes:
        path: the file or source concerned (``"runs/x.lensllm.json"``, ``"fit.json.ranking[0].fit"``).
        reason: what is wrong, without the path or a fix (``"is a FIFO, not a regular file"``), for a
            reader that words the fix itself; None where the message alone says it.
    """

    def __init__(self, message: str, *, path: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


class CurveError(LensLLMError, ValueError):
    """A curve table or curve that cannot be read or used (file, sizes, losses).

    Attributes:
        path: the table's file or source (``"flan.csv"``, ``"<records>"``), or None.
        model: the row concerned, or None.
    """

    def __init__(self, message: str, *, path: str | None = None, model: str | None = None) -> None:
        super().__init__(message)
        self.path, self.model = path, model


class FitError(LensLLMError, RuntimeError):
    """A law could not be fitted, or a fit read from a file is malformed.

    Attributes:
        law: the law concerned (``"rectified"``), or None.
        term: the parameter, term or field at fault (``"params.beta"``), or None.
    """

    def __init__(self, message: str, *, law: str | None = None, term: str | None = None) -> None:
        super().__init__(message)
        self.law, self.term = law, term


class RecordError(LensLLMError):
    """A run record or store that cannot be read or written.

    Attributes:
        path: the record file or the store (a path or URL), or None.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SchemaError(RecordError, ValueError):
    """A record whose content does not follow the schema (unknown version, missing or bad keys).

    Attributes:
        path: the record (its file, or where it came from).
        field: the key at fault (``"train_size"``, ``"evaluations.3"``), or None.
    """

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None) -> None:
        super().__init__(message, path=path)
        self.field = field


class CandidateError(LensLLMError):
    """A candidate that cannot be loaded or start a run; the selection goes on without it.

    Attributes:
        candidate: the candidate's name or model ID, or None.
    """

    def __init__(self, message: str, *, candidate: str | None = None) -> None:
        super().__init__(message)
        self.candidate = candidate


class CardError(LensLLMError):
    """A model card that cannot be read or written. The message is one line, secrets redacted.

    Attributes:
        source: the card's repo ID, folder or file, or None.
    """

    def __init__(self, message: str = "", *, source: str | None = None) -> None:
        from ._utils import one_line  # _utils imports this module

        super().__init__(redact(one_line(message, limit=1000)))
        self.source = source


class CardMetadataError(CardError, ValueError):
    """A card whose ``lensllm`` metadata is malformed.

    Attributes:
        field: the field at fault (``"lensllm[0].sizes"``), or None.
    """

    def __init__(self, message: str = "", *, source: str | None = None, field: str | None = None) -> None:
        super().__init__(message, source=source)
        self.field = field


class HubError(CardError):
    """The Hub refused or could not answer a request; nothing local was changed.

    Attributes:
        status: the HTTP status (401: no or a bad token, 403: not allowed, 404: no such repo or
            private, 412: the card changed meanwhile), or None (no answer, or not a Hub).
        source: the repo ID.
        endpoint: the Hub's URL.
    """

    def __init__(self, message: str = "", *, source: str | None = None, status: int | None = None,
                 endpoint: str | None = None) -> None:
        super().__init__(message, source=source)
        self.status, self.endpoint = status, endpoint


class NetworkError(HubError):
    """The Hub could not be reached, answered with a server error (5xx), or ``HF_HUB_OFFLINE`` is set."""


class HubCacheWarning(UserWarning):
    """The Hub did not answer (no answer in time, 5xx, 401, 429...) and the copy of a card cached on
    this machine was used instead; it may be out of date.

    Attributes:
        source: the repo ID.
        endpoint: the Hub's URL.
    """

    def __init__(self, message: str, *, source: str | None = None, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.source, self.endpoint = source, endpoint


class RecordWarning(UserWarning):
    """Something in a store that LensLLM skipped or counted once (a damaged, duplicated or misnamed
    record, an entry that is not a regular file, a record kept instead of a weaker one).

    Issued with :func:`warnings.warn`, one line naming the file; the CLI prints them on stderr.

    Attributes:
        path: the file concerned, or None.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


# Hub tokens are "hf_" plus letters and digits (user access tokens: 34 of them; test tokens vary).
_TOKEN = re.compile(r"\bhf_[A-Za-z0-9_-]{4,}")
# "scheme://user:password@host" or "scheme://token@host": everything between "//" and "@".
_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")
# "Bearer <anything>" and "token=<anything>", as an Authorization header or a query string carries them.
_BEARER = re.compile(r"(?i)\b(bearer\s+|token=|password=)[^\s&,;'\"]+")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with Hub tokens, URL credentials and each of ``secrets`` replaced by ``***``.

    Example:
        >>> redact("no access to https://bob:pw@hub.example with hf_abcdefgh1234")
        'no access to https://***@hub.example with hf_***'
    """
    for secret in secrets:
        if secret and len(secret) >= 4:  # a one-letter "token" would blank every word it is part of
            text = text.replace(secret, "***")
    text = _USERINFO.sub("***@", text)
    text = _BEARER.sub(lambda m: m.group(1) + "***", text)
    return _TOKEN.sub("hf_***", text)
