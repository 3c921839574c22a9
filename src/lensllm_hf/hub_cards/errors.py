"""What can go wrong with model cards and the Hub, each as one line naming the cause and the fix."""

from __future__ import annotations

from ..errors import LensLLMError

__all__ = [
    "CardError",
    "CardMetadataError",
    "HubAuthError",
    "HubError",
    "HubNotFoundError",
    "HubPermissionError",
    "HubUnavailableError",
]


class CardError(LensLLMError):
    """A model card could not be read or written."""


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
