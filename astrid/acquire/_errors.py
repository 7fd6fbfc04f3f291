"""Exceptions of the acquisition package."""

from __future__ import annotations

from ..errors import AstridInputError

__all__ = ["AstridArchiveError", "AstridDownloadError"]


class AstridArchiveError(AstridInputError):
    """An archive that cannot be used: unreachable, refusing the query, or answering nonsense.

    The message names the archive and says what to do instead (for example
    ``archive='simulated'`` or ``'local'`` when MAST is not reachable).
    """


class AstridDownloadError(AstridArchiveError):
    """A file that could not be fetched intact after all retries.

    Parameters
    ----------
    message : str
        What went wrong, and what to do about it.
    url : str, optional
        The address that failed.
    attempts : int, optional
        How many attempts were made (default 0).

    Attributes
    ----------
    url : str or None
        The address that failed.
    attempts : int
        How many attempts were made.
    """

    def __init__(self, message: str, *, url: str | None = None, attempts: int = 0):
        super().__init__(message)
        self.url = url
        self.attempts = attempts
