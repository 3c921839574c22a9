"""What can go wrong with model cards and the Hub, each as one line naming the cause and the fix.

Every message goes through :func:`redact` when the error is made, so no Hub token and no
password of an ``HF_ENDPOINT`` URL ever reaches a terminal or a log, whichever path raised it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .._utils import one_line
from ..errors import LensLLMError

__all__ = [
    "CardError",
    "CardMetadataError",
    "HubAuthError",
    "HubError",
    "HubNotFoundError",
    "HubPermissionError",
    "HubUnavailableError",
    "redact",
]

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


class CardError(LensLLMError):
    """A model card could not be read or written. The message is one line, with secrets redacted."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact(one_line(message, limit=1000)))


class CardMetadataError(CardError, ValueError):
    """A card's metadata is malformed; the message names the field (e.g. ``lensllm[0].sizes``)."""


class HubError(CardError):
    """The Hub refused or could not answer a request. Nothing local was changed."""


class HubAuthError(HubError):
    """No token, or the Hub rejected it (401)."""


class HubPermissionError(HubError):
    """The token may not do this (403), e.g. commit to a repo it does not own."""


class HubNotFoundError(HubError):
    """No such repo on the Hub (404), or it is private and the token cannot see it."""


class HubUnavailableError(HubError):
    """The Hub could not be reached, or answered with a server error (5xx)."""
