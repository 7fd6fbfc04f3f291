"""One way in for every stage: :func:`as_image` turns what a user holds into an :class:`~astrid.Image`."""

from __future__ import annotations

import os

import numpy as np

from ..errors import AstridInputError
from ..io import Image, read_image

__all__ = ["as_image"]


def as_image(image, role: str = "image", *, arrays: bool = True) -> Image:
    """The :class:`~astrid.Image` behind any accepted image input.

    Parameters
    ----------
    image : Image, path-like, (data, mask) tuple or array_like, shape (ny, nx)
        An :class:`~astrid.Image` (returned as is), a path to a FITS file
        (read with :func:`astrid.read_image`), a ``(data, mask)`` pair of 2-D
        arrays (mask True where a pixel must not be used; None for none), or
        a 2-D array (a :class:`numpy.ma.MaskedArray` keeps its mask; non-finite
        pixels are masked). Arrays carry no WCS and no metadata.
    role : str, optional
        What the image is (``"science"``, ``"reference"``), for error messages.
    arrays : bool, optional
        Accept arrays (default). Stages that need a WCS (:func:`astrid.difference`)
        pass False, so that a bare array fails here with a clear message.

    Returns
    -------
    Image
        ``image`` itself when it is an :class:`~astrid.Image`, else a new one
        read from the file or built from the arrays.

    Raises
    ------
    AstridInputError
        ``image`` is None, not 2-D, not real-valued, or of an unknown type.
    """
    if isinstance(image, Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if not arrays:
        raise AstridInputError(
            f"{role}: must be an astrid.Image or a path to a FITS file, got {type(image).__name__}"
        )
    if image is None:
        raise AstridInputError(
            f"{role}: got None, expected an astrid.Image, a FITS path or a 2-D array"
        )
    mask = None
    if isinstance(image, tuple) and len(image) == 2:
        image, mask = image
    try:
        data = image if isinstance(image, np.ma.MaskedArray) else np.asarray(image)
    except Exception as exc:  # ragged lists and the like
        raise AstridInputError(f"{role}: cannot be read as an array ({exc})") from exc
    if data.dtype == object or data.ndim != 2:
        raise AstridInputError(
            f"{role}: must be a 2-D array, a (data, mask) pair, an astrid.Image or a path to a FITS file, "
            f"got {type(image).__name__} with shape {getattr(data, 'shape', None)}"
        )
    try:
        return Image(data=data, mask=mask)
    except AstridInputError as exc:
        raise AstridInputError(f"{role}: {exc}") from exc
