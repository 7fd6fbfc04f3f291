"""Repair of isolated non-finite pixels before differencing.

A NaN pixel left in an image must be masked, and a subtraction dilates every
masked pixel by its kernel radius (a few FWHM): 0.5 % of scattered NaN pixels
then hide three quarters of a field. A NaN pixel on smooth sky, however, is
recovered to within the noise by the median of its neighbours, so such
pixels are filled in and cost only their own area.

What counts as recoverable (each condition keeps a pixel from being invented
where the neighbours cannot tell its value):

- it is non-finite (NaN or inf). Finite pixels that a mask flags (saturated,
  hot, a bad column) stay flagged: the mask says their value is wrong, and
  the simulated validation depends on their being masked as before;
- at most ``_MAX_BAD_NEIGHBOURS`` of its 8 neighbours are bad (non-finite
  or masked), so bad columns, rows and holes stay masked;
- its good neighbours span at most ``_MAX_RANGE_SIGMA`` times the noise:
  a pixel on a star's core or steep wing is not repaired, since a median of
  neighbours would cut the peak and leave a residual in the difference.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._utils import neighbour_noise

__all__ = ["repair_isolated", "pixel_noise"]

# At most this many of a pixel's 8 neighbours may be bad for it to be repaired.
_MAX_BAD_NEIGHBOURS = 1
# The good neighbours' range (max - min) must stay below this many sigma: for
# 7-8 Gaussian samples a range above 6 sigma has a probability of about 0.1 %.
_MAX_RANGE_SIGMA = 6.0
# Pixel pairs used by pixel_noise (a regular subsample).
_NOISE_SAMPLE = 250_000

_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def pixel_noise(data: np.ndarray, bad: np.ndarray) -> float:
    """Per-pixel noise from the differences of horizontal neighbours (robust to sources and gradients).

    The MAD σ (:func:`astropy.stats.mad_std`) of ``data[:, 1:] - data[:, :-1]`` over pairs
    of good pixels, divided by √2. Correlated noise (resampled images) gives a lower value,
    which only makes :func:`repair_isolated` more cautious. NaN when no pair
    is good.
    """
    a, b = data[:, 1:], data[:, :-1]
    ok = ~(bad[:, 1:] | bad[:, :-1])
    diff = a[ok].astype(np.float64) - b[ok]
    if diff.size == 0:
        return float("nan")
    step = max(1, diff.size // _NOISE_SAMPLE)
    diff = diff[::step]
    return neighbour_noise(diff)


def _neighbours(array: np.ndarray, ys: np.ndarray, xs: np.ndarray, fill) -> np.ndarray:
    """The 8 neighbours of each (y, x), shape (n, 8); ``fill`` outside the image."""
    ny, nx = array.shape
    out = np.empty((ys.size, 8), dtype=np.result_type(array.dtype, type(fill)))
    for k, (dy, dx) in enumerate(_OFFSETS):
        yy, xx = ys + dy, xs + dx
        inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        col = np.full(ys.size, fill, dtype=out.dtype)
        col[inside] = array[yy[inside], xx[inside]]
        out[:, k] = col
    return out


def repair_isolated(images, bad: np.ndarray, sigmas) -> tuple[list[np.ndarray], np.ndarray]:
    """Fill isolated non-finite pixels of one or more co-registered images.

    Parameters
    ----------
    images : sequence of numpy.ndarray, shape (ny, nx)
        Images on one grid (a single image, or science and reference). A
        pixel non-finite in any of them is a candidate; it is repaired in
        those where it is non-finite, and only when its neighbourhood is
        smooth in all of them.
    bad : numpy.ndarray of bool, shape (ny, nx)
        Every pixel that must not be used (non-finite in any image, or
        masked).
    sigmas : sequence of float
        Per-pixel noise of each image (data units), for the smoothness test.

    Returns
    -------
    repaired_images : list of numpy.ndarray
        The images (copies where something was repaired, else the inputs).
    repaired : numpy.ndarray of bool
        The pixels that were filled; ``bad & ~repaired`` is what remains.
    """
    images = list(images)
    candidate = np.zeros(bad.shape, dtype=bool)
    for image in images:
        candidate |= ~np.isfinite(image)
    ys, xs = np.nonzero(candidate)
    repaired = np.zeros(bad.shape, dtype=bool)
    if ys.size == 0:
        return images, repaired
    neighbour_bad = _neighbours(bad, ys, xs, True)
    # Most candidates of an aligned pair lie in the blank band outside the overlap: drop the
    # ones with too many bad neighbours before taking medians of the rest.
    few_bad = neighbour_bad.sum(axis=1) <= _MAX_BAD_NEIGHBOURS
    ys, xs, neighbour_bad = ys[few_bad], xs[few_bad], neighbour_bad[few_bad]
    ok = np.ones(ys.size, dtype=bool)
    values = []
    for image, sigma in zip(images, sigmas):
        near = _neighbours(image, ys, xs, np.nan).astype(np.float64)
        near[neighbour_bad] = np.nan
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            # All-NaN rows give NaN here and are rejected by ``ok`` just below.
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanmax(near, axis=1) - np.nanmin(near, axis=1)
            median = np.nanmedian(near, axis=1)
        limit = _MAX_RANGE_SIGMA * sigma if (sigma is not None and math.isfinite(sigma)) else 0.0
        ok &= np.isfinite(spread) & (spread <= limit)
        values.append(median)
    if not ok.any():
        return images, repaired
    ys, xs = ys[ok], xs[ok]
    repaired[ys, xs] = True
    out = []
    for image, median in zip(images, values):
        fix = ~np.isfinite(image[ys, xs])
        if fix.any():
            image = image.copy()
            image[ys[fix], xs[fix]] = median[ok][fix].astype(image.dtype)
        out.append(image)
    return out, repaired


def repair_for_subtraction(images, bad: np.ndarray, sigmas, already=None):
    """:func:`repair_isolated` as every subtraction (ZOGY, classic, kernel) applies it.

    Parameters
    ----------
    images : sequence of numpy.ndarray, shape (ny, nx)
        The co-registered images to subtract.
    bad : numpy.ndarray of bool, shape (ny, nx)
        Pixels no subtraction may use; the repaired ones are cleared from it in place.
    sigmas : sequence of float
        Per-pixel noise of each image (data units).
    already : numpy.ndarray of bool, shape (ny, nx), optional
        Pixels the caller (:func:`astrid.difference`) already filled the same way.

    Returns
    -------
    repaired_images : list of numpy.ndarray
        The images, repaired.
    repaired : numpy.ndarray of bool
        Every repaired pixel, ``already`` included: flagged in the output mask without dilation.
    """
    images, repaired = repair_isolated(images, bad, sigmas)
    if repaired.any():
        bad &= ~repaired
    if already is not None:
        repaired |= already
    return images, repaired


def fill_from_neighbours(array: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``array`` with its non-finite values at ``where`` replaced by the median of their finite neighbours.

    For the variance map of a repaired pixel (smooth by construction); a
    pixel with no finite neighbour keeps its value.
    """
    ys, xs = np.nonzero(where & ~np.isfinite(array))
    if ys.size == 0:
        return array
    near = _neighbours(array, ys, xs, np.nan).astype(np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(near, axis=1)
    ok = np.isfinite(median)
    out = array.copy()
    out[ys[ok], xs[ok]] = median[ok].astype(array.dtype)
    return out
