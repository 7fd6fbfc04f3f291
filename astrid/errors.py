"""Exceptions raised by AstrID.

Every error that bad input can cause is an :class:`AstridInputError` (or a
subclass) whose message names the file or array and says what is wrong, so a
notebook user can fix the input rather than read a traceback.
"""

__all__ = [
    "AstridError",
    "AstridInputError",
    "AstridFileError",
    "AstridWCSError",
    "AstridMismatchError",
    "AstridPSFError",
    "AstridWarning",
]


class AstridError(Exception):
    """Base class of every AstrID exception."""


class AstridInputError(AstridError, ValueError):
    """Input data that AstrID cannot use (bad file, bad array, bad parameter)."""


class AstridFileError(AstridInputError, OSError):
    """A file that is missing, not FITS, truncated or otherwise unreadable."""


class AstridWCSError(AstridInputError):
    """A missing or unusable world coordinate system where one is required."""


class AstridMismatchError(AstridInputError):
    """Images that must not be combined (different filters or missions)."""


class AstridPSFError(AstridInputError):
    """A PSF that cannot be estimated or is not usable."""


class AstridWarning(UserWarning):
    """Base class of AstrID warnings (3-D cube reduced, PSF fallback, ...)."""
