"""The classic difference-imaging baseline: Gaussian PSF matching and direct subtraction.

This is the pipeline of the project's midterm notes, kept as a baseline for
ZOGY: the sharper image is convolved with a Gaussian to the PSF width of the
broader one, the reference is scaled by the flux ratio, the two are
subtracted, and each pixel of the difference is divided by its noise after
matching. It assumes Gaussian PSFs; real PSFs leave residuals at bright stars
(that is what the comparison with ZOGY measures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .._utils import fwhm_to_sigma
from ..errors import AstridInputError
from .image import as_image
from .inpaint import repair_for_subtraction
from .zogy import (
    as_aligned_pair,
    bad_pixels,
    check_dtype,
    check_map,
    check_mask_fraction,
    check_positive,
    robust_std,
    untrusted,
)

__all__ = ["ClassicOptions", "ClassicResult", "classic_subtract"]

# Gaussian kernels are cut at this many standard deviations (scipy's default).
_TRUNCATE = 4.0
# The mask is dilated by this many FWHM of the broader PSF: the radius that
# encloses 99 % of a Gaussian's flux is 1.29 FWHM.
_MASK_RADIUS_FWHM = 1.3


@dataclass
class ClassicResult:
    """Result of :func:`classic_subtract`.

    Attributes
    ----------
    D : numpy.ndarray, shape (ny, nx)
        Difference image, science minus PSF-matched, flux-scaled reference,
        in science data units.
    significance : numpy.ndarray, shape (ny, nx)
        ``D`` divided by its per-pixel noise after matching (unit variance in
        source-free regions when the noise inputs are right).
    mask : numpy.ndarray of bool, shape (ny, nx)
        True where the result must not be trusted: masked or non-finite input
        pixels dilated by ``mask_radius``, and a band of that width along the
        edges. ``D`` and ``significance`` hold ``fill_value`` there.
    kernel_sigma : float
        Standard deviation of the Gaussian matching kernel, pixels (0 when the
        FWHMs are equal).
    convolved : str
        Which image was convolved: ``"science"``, ``"reference"`` or ``"none"``.
    flux_ratio : float
        The factor applied to the reference.
    mask_radius : int
        Dilation radius of the mask and edge band, pixels.
    significance_std : float
        Robust standard deviation (:func:`astropy.stats.mad_std`) of ``significance`` over
        unmasked pixels.
    """

    D: np.ndarray
    significance: np.ndarray
    mask: np.ndarray
    kernel_sigma: float
    convolved: str
    flux_ratio: float
    mask_radius: int
    significance_std: float


def _gaussian_weights(sigma: float) -> np.ndarray:
    """The 1-D kernel that :func:`scipy.ndimage.gaussian_filter1d` uses."""
    radius = int(_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _convolve(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out = ndimage.convolve1d(image, weights, axis=0, mode="reflect")
    return ndimage.convolve1d(out, weights, axis=1, mode="reflect")


def _match(images, variances, bad, sigmas, fwhms, ratio):
    """Zero the bad pixels, scale the reference, convolve the sharper image (and its variance)
    to the broader PSF: both images, both variances, the kernel σ and which image was convolved."""
    N, R = images
    Vn, Vr = variances
    sigma_n, sigma_r = sigmas
    fwhm_n, fwhm_r = fwhms
    n_img = np.where(bad, 0.0, N).astype(np.float64)
    r_img = np.where(bad, 0.0, R).astype(np.float64) * ratio
    # A repaired pixel whose variance is NaN too gets the sky variance.
    var_n = (
        np.where(bad, 0.0, np.nan_to_num(Vn, nan=sigma_n**2)).astype(np.float64)
        if Vn is not None
        else sigma_n**2
    )
    var_r = (
        np.where(bad, 0.0, np.nan_to_num(Vr, nan=sigma_r**2)).astype(np.float64)
        if Vr is not None
        else sigma_r**2
    ) * ratio**2

    s_n, s_r = fwhm_to_sigma(fwhm_n), fwhm_to_sigma(fwhm_r)
    kernel_sigma = math.sqrt(abs(s_n**2 - s_r**2))
    convolved = "none"
    if kernel_sigma > 1e-3:
        weights = _gaussian_weights(kernel_sigma)
        squared = weights**2
        if s_n < s_r:
            convolved = "science"
            n_img = _convolve(n_img, weights)
            var_n = _convolve(var_n, squared) if np.ndim(var_n) else var_n * squared.sum() ** 2
        else:
            convolved = "reference"
            r_img = _convolve(r_img, weights)
            var_r = _convolve(var_r, squared) if np.ndim(var_r) else var_r * squared.sum() ** 2
    else:
        kernel_sigma = 0.0

    return n_img, r_img, var_n, var_r, kernel_sigma, convolved


@dataclass(frozen=True)
class ClassicOptions:
    """How :func:`classic_subtract` writes its output.

    Attributes
    ----------
    mask_radius : int, optional
        Dilation of the mask and width of the edge band (pixels). Default
        1.3 FWHM of the broader PSF (the 99 % flux radius of a Gaussian).
    fill_value : float
        Value of ``D`` and ``significance`` in masked pixels (default 0).
    dtype : {numpy.float64, numpy.float32}
        Output precision (default float64).
    """

    mask_radius: int | None = None
    fill_value: float = 0.0
    dtype: object = np.float64


def classic_subtract(
    *,
    reference,
    science,
    reference_fwhm,
    science_fwhm,
    reference_sigma,
    science_sigma,
    flux_ratio=1.0,
    options: ClassicOptions | None = None,
    repaired=None,
) -> ClassicResult:
    """Gaussian PSF matching, flux scaling and direct subtraction.

    Parameters
    ----------
    reference, science : Image, (data, mask) tuple or array_like, shape (ny, nx)
        Aligned, background-subtracted images (data units; see
        :func:`astrid.as_image`), keyword-only. NaN allowed. Their masks (True:
        do not use) are combined; an :class:`~astrid.Image`'s ``variance``
        (data units², the full per-pixel variance) is used instead of its
        sigma for the noise of ``D``.
    reference_fwhm, science_fwhm : float
        PSF FWHM of each image in pixels (> 0), treated as Gaussian.
    reference_sigma, science_sigma : float
        Background noise of each image (data units, > 0).
    flux_ratio : float, optional
        Science flux of a source divided by its reference flux; the reference
        is multiplied by it.
    options : ClassicOptions, optional
        The output's mask dilation, fill value and precision (default
        ``ClassicOptions()``).
    repaired : array_like of bool, shape (ny, nx), optional
        Pixels the caller already filled from their neighbours (as
        :func:`astrid.difference` does): flagged in the mask without dilation.

    Returns
    -------
    ClassicResult
        The difference image, its significance and mask, and the matching
        kernel, convolved image and flux ratio used.

    Raises
    ------
    AstridInputError
        Shapes differ, or an FWHM, sigma or the flux ratio is not finite and
        positive.

    Notes
    -----
    With σ = FWHM / 2.3548, the sharper image is convolved with a Gaussian of
    σ_k = sqrt(σ_broad² − σ_sharp²). The noise of a convolved image per pixel
    is its variance convolved with the squared kernel (σ² Σ g² for white
    noise), so ``significance = D / sqrt(V_sci' + flux_ratio² V_ref')``.
    Isolated non-finite pixels on smooth sky are filled from their
    neighbours and flagged without dilation (as in :func:`astrid.zogy.subtract`);
    the other masked and non-finite pixels are set to 0 in both images before
    matching.
    """
    options = options if options is not None else ClassicOptions()
    if not isinstance(options, ClassicOptions):
        raise AstridInputError(f"options must be a ClassicOptions, got {type(options).__name__}")
    mask_radius, fill_value = options.mask_radius, options.fill_value
    ref_image, sci_image = as_image(reference, "reference"), as_image(science, "science")
    dtype = check_dtype(options.dtype)
    R, N = as_aligned_pair(reference=ref_image.data, science=sci_image.data)
    shape = N.shape
    fwhm_n = check_positive("science_fwhm", science_fwhm)
    fwhm_r = check_positive("reference_fwhm", reference_fwhm)
    sigma_n = check_positive("science_sigma", science_sigma)
    sigma_r = check_positive("reference_sigma", reference_sigma)
    ratio = check_positive("flux_ratio", flux_ratio)
    Vn, Vr = sci_image.variance, ref_image.variance
    user_mask = sci_image.mask | ref_image.mask
    if mask_radius is None:
        mask_radius = int(math.ceil(_MASK_RADIUS_FWHM * max(fwhm_n, fwhm_r)))
    elif int(mask_radius) != mask_radius or mask_radius < 0:
        raise AstridInputError(f"mask_radius: must be an integer >= 0, got {mask_radius!r}")
    mask_radius = int(mask_radius)

    bad = bad_pixels(N, R, user_mask, (Vn, Vr))
    # As in ZOGY: isolated NaN pixels on smooth sky are filled and cost their own area only.
    already = None if repaired is None else check_map("repaired", repaired, shape).astype(bool)
    (N, R), filled = repair_for_subtraction((N, R), bad, (sigma_n, sigma_r), already)

    n_img, r_img, var_n, var_r, kernel_sigma, convolved = _match(
        (N, R), (Vn, Vr), bad, (sigma_n, sigma_r), (fwhm_n, fwhm_r), ratio
    )
    D = n_img - r_img
    noise = np.sqrt(np.maximum(var_n + var_r, np.finfo(np.float64).tiny))
    significance = D / noise

    out_mask = untrusted(bad, mask_radius)
    if filled.any():
        out_mask |= filled
    check_mask_fraction(out_mask, bad, filled, mask_radius, "classic_subtract")
    D[out_mask] = fill_value
    significance[out_mask] = fill_value
    return ClassicResult(
        D=D.astype(dtype, copy=False),
        significance=significance.astype(dtype, copy=False),
        mask=out_mask,
        kernel_sigma=kernel_sigma,
        convolved=convolved,
        flux_ratio=ratio,
        mask_radius=mask_radius,
        significance_std=robust_std(significance, out_mask),
    )
