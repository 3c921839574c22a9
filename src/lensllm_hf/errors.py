"""The one exception family users see: each message is one line naming the problem and the fix."""

__all__ = ["LensLLMError"]


class LensLLMError(Exception):
    """Bad input or a failed operation, explained in one line. The CLI prints it and exits 2."""
