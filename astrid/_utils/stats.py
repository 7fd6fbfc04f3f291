"""Robust statistics: the one place that knows 1.4826 and 2.3548."""

from __future__ import annotations

import math

import numpy as np
from astropy.stats import gaussian_fwhm_to_sigma, gaussian_sigma_to_fwhm, mad_std

#: FWHM / σ of a Gaussian, 2 √(2 ln 2) ≈ 2.3548 (astropy's constant).
GAUSSIAN_SIGMA_TO_FWHM = gaussian_sigma_to_fwhm

#: σ / MAD of a Gaussian, 1 / Φ⁻¹(3/4) ≈ 1.4826 (the factor :func:`astropy.stats.mad_std` uses).
MAD_TO_SIGMA = 1.482602218505602


def fwhm_to_sigma(fwhm):
    """Gaussian σ of a FWHM (same units; scalars or arrays)."""
    return fwhm * gaussian_fwhm_to_sigma


def sigma_to_fwhm(sigma):
    """FWHM of a Gaussian σ (same units; scalars or arrays)."""
    return sigma * gaussian_sigma_to_fwhm


def robust_std(values, axis=None, *, ignore_nan: bool = False, keepdims: bool = False):
    """Robust standard deviation, 1.4826 × the median absolute deviation.

    A thin wrapper of :func:`astropy.stats.mad_std` so the whole package uses
    one estimator (and one constant).

    Parameters
    ----------
    values : array_like
        Input values; any shape.
    axis : int or tuple of int, optional
        Axis or axes along which to compute; the whole array when None.
    ignore_nan : bool, optional
        Ignore NaN values (``numpy.nanmedian``) instead of propagating them.
    keepdims : bool, optional
        Keep the reduced axes with length one, for broadcasting.

    Returns
    -------
    float or numpy.ndarray
        The robust σ, a float when ``axis`` is None.
    """
    values = np.asarray(values)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    result = mad_std(values, axis=axis, ignore_nan=ignore_nan)
    if keepdims and axis is not None:
        result = np.expand_dims(result, axis)
    if axis is None:
        return float(result)
    return result


def robust_std_about(values, centre=0.0) -> float:
    """1.4826 × the median of ``|values − centre|``: σ of values known to be centred on ``centre``.

    Use this instead of :func:`robust_std` when the centre is known (residuals
    of a fit, fractional excesses), so that it is not estimated from the data.

    Parameters
    ----------
    values : array_like
        Input values; any shape.
    centre : float, optional
        The known centre of the distribution.

    Returns
    -------
    float
        NaN when ``values`` is empty.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(values - centre)))


def neighbour_noise(differences) -> float:
    """Per-pixel σ of white noise from differences of neighbouring pixels.

    The difference of two independent pixels has σ √2, so this is
    :func:`robust_std` of ``differences`` divided by √2; sources and smooth
    gradients barely move it. Correlated (resampled) noise gives a lower value.

    Parameters
    ----------
    differences : array_like
        ``a − b`` over pairs of neighbouring good pixels, any shape.

    Returns
    -------
    float
        NaN when ``differences`` is empty.
    """
    differences = np.asarray(differences, dtype=np.float64).ravel()
    if differences.size == 0:
        return float("nan")
    return robust_std(differences) / math.sqrt(2.0)
