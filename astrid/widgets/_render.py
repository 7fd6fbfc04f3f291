"""Stamps to PNG: zscale for science and reference, symmetric stretch for differences."""

from __future__ import annotations

import io
import warnings

import numpy as np

from ..errors import AstridInputError

__all__ = [
    "NO_DATA_RGBA",
    "zscale_limits",
    "difference_limit",
    "stamp_to_rgba",
    "triplet_pngs",
    "triplet_strip_png",
    "png_bytes",
]

#: RGBA of pixels without data (NaN padding of cut-outs at image edges): a colour
#: that no grey level takes, so a truncated stamp is not mistaken for a dark sky.
NO_DATA_RGBA = (70, 40, 110, 255)
_STRETCHES = ("asinh", "linear")


def zscale_limits(stamp: np.ndarray) -> tuple[float, float]:
    """Display limits of a science or reference stamp by IRAF's zscale.

    Parameters
    ----------
    stamp : numpy.ndarray, shape (ny, nx)
        Pixel values in data units; NaN where there is no data.

    Returns
    -------
    (float, float)
        Lower and upper limits in data units; ``(0, 1)`` without finite pixels.
    """
    from astropy.visualization import ZScaleInterval

    finite = stamp[np.isfinite(stamp)]
    if finite.size == 0:
        return 0.0, 1.0
    with warnings.catch_warnings():
        # zscale on a few pixels or a flat stamp: its fit may warn, the
        # min/max fallback below is what we want then.
        warnings.simplefilter("ignore")
        low, high = ZScaleInterval().get_limits(finite)
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        low, high = float(finite.min()), float(finite.max())
        if high <= low:
            high = low + 1.0
    return float(low), float(high)


def difference_limit(stamp: np.ndarray, percentile: float = 99.5) -> float:
    """Half-range of the symmetric display of a difference stamp.

    Parameters
    ----------
    stamp : numpy.ndarray, shape (ny, nx)
        Difference pixel values; NaN where there is no data.
    percentile : float, optional
        Percentile of ``|stamp|`` shown at full black or white.

    Returns
    -------
    float
        Positive limit ``v``: the display spans ``[-v, v]`` so zero is mid-grey.
    """
    finite = np.abs(stamp[np.isfinite(stamp)])
    if finite.size == 0:
        return 1.0
    limit = float(np.percentile(finite, percentile))
    return limit if limit > 0 else (float(finite.max()) or 1.0)


def stamp_to_rgba(
    stamp: np.ndarray,
    kind: str,
    *,
    stretch: str = "asinh",
    scale: int = 4,
    cmap: str = "gray",
) -> np.ndarray:
    """An RGBA image of one stamp, row 0 at the bottom (FITS orientation).

    Parameters
    ----------
    stamp : numpy.ndarray, shape (ny, nx)
        Pixel values; NaN where there is no data (drawn in a dark violet).
    kind : {"science", "reference", "difference"}
        Science and reference use zscale limits and a linear stretch; the
        difference uses symmetric limits around zero and ``stretch``.
    stretch : {"asinh", "linear"}, optional
        Stretch of the difference stamp (asinh shows faint residuals next to
        bright ones).
    scale : int, optional
        Each pixel becomes ``scale`` × ``scale`` screen pixels (no smoothing).
    cmap : str, optional
        Matplotlib colour map.

    Returns
    -------
    numpy.ndarray of uint8, shape (ny * scale, nx * scale, 4)
        The RGBA pixels.
    """
    from matplotlib import colormaps

    stamp = np.asarray(stamp, dtype=np.float64)
    if stamp.ndim != 2:
        raise AstridInputError(f"stamp: expected a 2-D array, got shape {stamp.shape}")
    if stretch not in _STRETCHES:
        raise AstridInputError(f"stretch {stretch!r}: expected one of {_STRETCHES}")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise AstridInputError(f"scale {scale!r}: expected a positive integer")
    if kind == "difference":
        limit = difference_limit(stamp)
        if stretch == "asinh":
            # Linear within ~limit/10 of zero, logarithmic beyond.
            softening = 0.1
            unit = np.arcsinh(np.clip(stamp / limit, -1, 1) / softening) / np.arcsinh(1 / softening)
        else:
            unit = np.clip(stamp / limit, -1, 1)
        level = 0.5 * (unit + 1)
    elif kind in ("science", "reference"):
        low, high = zscale_limits(stamp)
        level = np.clip((stamp - low) / (high - low), 0, 1)
    else:
        raise AstridInputError(f"kind {kind!r}: expected 'science', 'reference' or 'difference'")
    rgba = colormaps[cmap](np.nan_to_num(level, nan=0.0), bytes=True)
    rgba[~np.isfinite(stamp)] = NO_DATA_RGBA
    rgba = np.flipud(rgba)
    if scale > 1:
        rgba = np.repeat(np.repeat(rgba, scale, axis=0), scale, axis=1)
    return np.ascontiguousarray(rgba)


def png_bytes(rgba: np.ndarray) -> bytes:
    """Encode an RGBA uint8 image as PNG."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


def triplet_pngs(
    triplet: np.ndarray,
    channels=("science", "reference", "difference"),
    *,
    stretch: str = "asinh",
    scale: int = 4,
) -> list[bytes]:
    """PNG images of the three stamps of one triplet.

    Parameters
    ----------
    triplet : numpy.ndarray, shape (ny, nx, 3)
        Science, reference and difference stamps, channel last.
    channels : sequence of str, optional
        Kind of each channel, in order.
    stretch : {"asinh", "linear"}, optional
        Stretch of the difference stamp, as in :func:`stamp_to_rgba`.
    scale : int, optional
        Screen pixels per stamp pixel (each way), as in :func:`stamp_to_rgba`.

    Returns
    -------
    list of bytes
        One PNG per channel.
    """
    triplet = np.asarray(triplet)
    if triplet.ndim != 3 or triplet.shape[-1] != len(channels):
        raise AstridInputError(
            f"triplet: expected shape (ny, nx, {len(channels)}), got {triplet.shape}"
        )
    return [
        png_bytes(stamp_to_rgba(triplet[..., i], kind, stretch=stretch, scale=scale))
        for i, kind in enumerate(channels)
    ]


def triplet_strip_png(
    triplet: np.ndarray,
    channels=("science", "reference", "difference"),
    *,
    stretch: str = "asinh",
    scale: int = 2,
    gap: int = 3,
) -> bytes:
    """One PNG with the three stamps side by side (a grid thumbnail).

    Parameters
    ----------
    triplet : numpy.ndarray, shape (ny, nx, 3)
        Science, reference and difference stamps, channel last.
    channels : sequence of str, optional
        Kind of each channel, in order.
    stretch : {"asinh", "linear"}, optional
        Stretch of the difference stamp, as in :func:`stamp_to_rgba`.
    scale : int, optional
        Screen pixels per stamp pixel (each way), as in :func:`stamp_to_rgba`.
    gap : int, optional
        White columns between stamps, in screen pixels.

    Returns
    -------
    bytes
        PNG of shape ``(ny * scale, 3 * nx * scale + 2 * gap)``.
    """
    triplet = np.asarray(triplet)
    if triplet.ndim != 3 or triplet.shape[-1] != len(channels):
        raise AstridInputError(
            f"triplet: expected shape (ny, nx, {len(channels)}), got {triplet.shape}"
        )
    parts = [
        stamp_to_rgba(triplet[..., i], kind, stretch=stretch, scale=scale)
        for i, kind in enumerate(channels)
    ]
    spacer = np.full((parts[0].shape[0], gap, 4), 255, dtype=np.uint8)
    row = [parts[0]]
    for part in parts[1:]:
        row += [spacer, part]
    return png_bytes(np.concatenate(row, axis=1))
