"""Relative flux scale of two aligned images: the F_n / F_r of ZOGY.

:func:`flux_ratio` measures it from the same stars in both images (aperture
photometry with a local sky annulus, an aperture correction from each PSF,
and a sigma-clipped, noise-weighted mean of the per-star ratios) or computes
it from photometric zero points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..errors import AstridInputError
from ..io import Image
from .image import as_image
from .stars import clean_stars, clipped_median_std, find_stars

__all__ = ["FluxRatio", "flux_ratio"]

_MIN_SNR = 20.0
_MIN_STARS = 3
# Aperture radius in units of the broader PSF's FWHM.
_APERTURE_FWHM = 2.5
# Per-star systematic error floor (relative, per image) added in quadrature to the sky
# noise: flat-field, PSF-variation and centring errors that bright stars do not average away.
_FLOOR = 0.01
# Images whose bright stars' centroids differ by more than this many FWHM (and
# this many pixels) are not aligned, and their flux ratio is refused.
_MAX_CENTROID_OFFSET_FWHM = 0.5
_MAX_CENTROID_OFFSET_PX = 1.0


@dataclass
class FluxRatio:
    """Flux scale of the science image relative to the reference.

    Attributes
    ----------
    ratio : float
        ``F_n / F_r``: a source's flux in the science image divided by its
        flux in the reference (both on the same pixel grid).
    error : float
        One-sigma uncertainty of ``ratio`` (NaN when computed from zero
        points without uncertainties).
    n_stars : int
        Stars used (0 for zero points).
    method : str
        ``"stars"`` or ``"zeropoint"``.
    """

    ratio: float
    error: float
    n_stars: int
    method: str


@njit(cache=True)
def _overlap(dx, dy, r, sub):
    """Fraction of the unit pixel centred at (dx, dy) from the aperture centre inside radius r."""
    # Nearest and farthest points of the pixel square decide most pixels at once.
    nx_ = max(abs(dx) - 0.5, 0.0)
    ny_ = max(abs(dy) - 0.5, 0.0)
    if nx_ * nx_ + ny_ * ny_ >= r * r:
        return 0.0
    fx = abs(dx) + 0.5
    fy = abs(dy) + 0.5
    if fx * fx + fy * fy <= r * r:
        return 1.0
    inside = 0
    for a in range(sub):
        yy = dy - 0.5 + (a + 0.5) / sub
        for b in range(sub):
            xx = dx - 0.5 + (b + 0.5) / sub
            if xx * xx + yy * yy <= r * r:
                inside += 1
    return inside / (sub * sub)


@njit(cache=True)
def _std(values, centre, limit):
    """Standard deviation of the values within ``limit`` of ``centre`` (all of them if limit <= 0)."""
    s1 = 0.0
    s2 = 0.0
    n = 0
    for v in values:
        if limit <= 0.0 or abs(v - centre) <= limit:
            s1 += v
            s2 += v * v
            n += 1
    if n < 2:
        return np.nan
    mean = s1 / n
    return math.sqrt(max(s2 / n - mean * mean, 0.0))


@njit(cache=True, parallel=True)
def _aperture_photometry(data, bad, xs, ys, r, r_in, r_out):
    """Aperture sums with a sigma-clipped annulus sky, per star.

    Returns an (n, 5) array: sky-subtracted flux, aperture area (pixels),
    masked area in the aperture, sky standard deviation per pixel, number of
    sky pixels kept.
    """
    n = xs.size
    ny, nx = data.shape
    out = np.full((n, 5), np.nan)
    h = int(math.ceil(r_out)) + 1
    # One scratch row per star: numba hoists a fixed-size np.empty out of a
    # prange loop, and threads would then share it.
    scratch = np.empty((n, (2 * h + 1) ** 2))
    for k in prange(n):
        x = xs[k]
        y = ys[k]
        x0 = int(round(x))
        y0 = int(round(y))
        total = 0.0
        area = 0.0
        masked = 0.0
        sky = scratch[k]
        m = 0
        for i in range(y0 - h, y0 + h + 1):
            for j in range(x0 - h, x0 + h + 1):
                dx = j - x
                dy = i - y
                outside = i < 0 or j < 0 or i >= ny or j >= nx
                w = _overlap(dx, dy, r, 7)
                if w > 0.0:
                    if outside or bad[i, j]:
                        masked += w
                    else:
                        total += w * data[i, j]
                        area += w
                r2 = dx * dx + dy * dy
                if r2 >= r_in * r_in and r2 <= r_out * r_out and not outside and not bad[i, j]:
                    sky[m] = data[i, j]
                    m += 1
        if m < 10:
            continue
        centre, sig, kept = clipped_median_std(sky[:m], 3.0, 5)
        std = _std(sky[:m], centre, 3.0 * sig)
        out[k, 0] = total - centre * area
        out[k, 1] = area
        out[k, 2] = masked
        out[k, 3] = std
        out[k, 4] = kept
    return out


def _consensus(values, sigma):
    """Weighted mean of the largest mutually consistent group of log-ratios.

    Variable stars, supernovae on their hosts and cosmic rays scatter ratios
    to one side, and in a shallow image they can be as many as the constant
    stars: rather than clip around a median they would drag, start from the
    star that the most others agree with (within 3 sigma of the pair), then
    iterate a 3-sigma clipped weighted mean. Returns (ratio, error, n).
    """
    pair_sigma = np.sqrt(sigma[:, None] ** 2 + sigma[None, :] ** 2)
    support = (np.abs(values[:, None] - values[None, :]) <= 3.0 * pair_sigma).sum(axis=1)
    best = np.flatnonzero(support == support.max())
    seed = best[np.argmin(sigma[best])]
    keep = np.abs(values - values[seed]) <= 3.0 * pair_sigma[seed]
    weight = 1.0 / sigma**2
    mean = float((weight[keep] * values[keep]).sum() / weight[keep].sum())
    for _ in range(10):
        new_keep = np.abs(values - mean) <= 3.0 * sigma
        if new_keep.sum() < _MIN_STARS or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        mean = float((weight[keep] * values[keep]).sum() / weight[keep].sum())
    n = int(keep.sum())
    formal = math.sqrt(1.0 / weight[keep].sum())
    chi2 = float((weight[keep] * (values[keep] - mean) ** 2).sum() / max(n - 1, 1))
    # Log-ratio errors are relative: the ratio's error is ratio times that.
    ratio = math.exp(mean)
    return ratio, ratio * formal * math.sqrt(max(chi2, 1.0)), n


def _unpack(image, name):
    """data, mask, zero point and saturation level of any image input (see :func:`as_image`)."""
    if isinstance(image, Image):
        return image.data, image.mask, image.meta.zeropoint, image.meta.saturation
    image = as_image(image, name)
    return image.data, image.mask, None, None


@dataclass
class _Pair:
    """The two images as arrays, their combined bad pixels, saturation levels and zero points."""

    sci: np.ndarray
    ref: np.ndarray
    bad: np.ndarray
    sci_sat: float | None
    ref_sat: float | None
    zp_n: float | None
    zp_r: float | None

    def fallback(self, why):
        if self.zp_n is not None and self.zp_r is not None:
            return _zeropoint_ratio(float(self.zp_n), float(self.zp_r))
        raise AstridInputError(
            f"cannot measure the flux ratio: {why}, and no zero points are known for both images"
        )


def _pair(reference, science, mask, reference_zp, science_zp) -> _Pair:
    sci, sci_mask, sci_zp_meta, sci_sat = _unpack(science, "science")
    ref, ref_mask, ref_zp_meta, ref_sat = _unpack(reference, "reference")
    if sci.shape != ref.shape:
        raise AstridInputError(
            f"science shape {sci.shape} differs from reference shape {ref.shape}: align the images first"
        )
    bad = ~np.isfinite(sci) | ~np.isfinite(ref)
    for extra, label in ((sci_mask, "science mask"), (ref_mask, "reference mask"), (mask, "mask")):
        if extra is not None:
            extra = np.asarray(extra, dtype=bool)
            if extra.shape != sci.shape:
                raise AstridInputError(
                    f"{label}: shape {extra.shape} does not match the images {sci.shape}"
                )
            bad |= extra
    zp_n = science_zp if science_zp is not None else sci_zp_meta
    zp_r = reference_zp if reference_zp is not None else ref_zp_meta
    return _Pair(sci, ref, bad, sci_sat, ref_sat, zp_n, zp_r)


def _centroid_offsets(sci, ref, bad, xy, radius) -> np.ndarray:
    """Distance (px) between each star's flux-weighted centroid in the science and in the reference.

    Within the aperture, each image's local sky (median of the ring just
    outside it) is subtracted and negative pixels are dropped; both images
    are on one grid, so aligned images give offsets of a fraction of a pixel.
    """
    r = int(math.ceil(radius))
    h = r + 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    dist = np.hypot(yy, xx)
    ap = dist <= radius
    ring = (dist > radius) & (dist <= h)
    ny, nx = sci.shape
    out = np.full(len(xy), np.nan)
    for k, (x, y) in enumerate(xy):
        ix, iy = int(round(x)), int(round(y))
        if iy - h < 0 or ix - h < 0 or iy + h >= ny or ix + h >= nx:
            continue
        cut = (slice(iy - h, iy + h + 1), slice(ix - h, ix + h + 1))
        good = ~bad[cut]
        centres = []
        for data in (sci, ref):
            stamp = np.asarray(data[cut], dtype=np.float64)
            sky = stamp[ring & good]
            if sky.size < 5:
                break
            w = np.where(ap & good, np.maximum(stamp - np.median(sky), 0.0), 0.0)
            total = w.sum()
            if not total > 0:
                break
            centres.append(((w * xx).sum() / total, (w * yy).sum() / total))
        if len(centres) == 2:
            out[k] = math.hypot(centres[0][0] - centres[1][0], centres[0][1] - centres[1][1])
    return out


def _psf_fwhm_and_array(psf, name):
    """FWHM of a PSF, and its array when its shape can be trusted for aperture corrections."""
    if psf is None:
        return None, None
    if hasattr(psf, "psf"):
        # A fallback Gaussian has the right width but not the wings: its
        # encircled energy would bias the correction by more than it fixes.
        trusted = getattr(psf, "method", "given") != "gaussian-fallback"
        return float(psf.fwhm), (np.asarray(psf.psf, dtype=float) if trusted else None)
    from .psf import PSFModel

    model = PSFModel.from_array(psf, name=name)
    return model.fwhm, model.psf


@njit(cache=True)
def _aperture_weights(ny, nx, x, y, r):
    """Fraction of each pixel of an (ny, nx) grid inside the circle of radius r at (x, y)."""
    w = np.zeros((ny, nx))
    for i in range(ny):
        for j in range(nx):
            w[i, j] = _overlap(j - x, i - y, r, 7)
    return w


def _encircled(psf, radius):
    """Fraction of a centred PSF's total within ``radius`` pixels of its centre."""
    if psf is None:
        return 1.0
    c = float(psf.shape[0] // 2)
    weights = _aperture_weights(psf.shape[0], psf.shape[1], c, c, float(radius))
    return float((weights * psf).sum() / psf.sum())


def _zeropoint_ratio(zp_n, zp_r):
    return FluxRatio(
        ratio=float(10 ** (-0.4 * (zp_r - zp_n))), error=float("nan"), n_stars=0, method="zeropoint"
    )


def flux_ratio(
    *,
    reference,
    science,
    reference_psf=None,
    science_psf=None,
    mask=None,
    stars=None,
    reference_zp: float | None = None,
    science_zp: float | None = None,
    max_stars: int | None = 2000,
) -> FluxRatio:
    """Flux ratio ``F_n / F_r`` of two aligned images.

    Parameters
    ----------
    reference, science : Image, (data, mask) tuple or numpy.ndarray, shape (ny, nx)
        The two images on the same pixel grid (the science image resampled
        by :func:`~astrid.align`), keyword-only (see :func:`astrid.as_image`).
        Masks and zero points of :class:`Image` inputs are used.
    reference_psf, science_psf : PSFModel or numpy.ndarray, optional
        PSFs of the two images: they set the aperture (2.5 FWHM of the
        broader one) and the aperture corrections (the fraction of each PSF
        inside it), which make the ratio that of total fluxes even when the
        PSFs differ. Without them the FWHM is measured from the stars, and
        without both (or with a ``"gaussian-fallback"`` PSF, whose wings are
        not known) no aperture correction is made.
    mask : numpy.ndarray of bool, shape (ny, nx), optional
        Pixels to ignore in both images (added to the images' own masks).
    stars : astropy.table.Table or numpy.ndarray, optional
        Positions to measure, a table with ``x`` and ``y`` columns (e.g. from
        :func:`~astrid.find_stars`) or an ``(n, 2)`` array of (x, y), 0-based.
        By default the isolated, unsaturated stars detected in the reference.
    reference_zp, science_zp : float, optional
        Zero points (``mag = zp - 2.5 log10(flux)``). When both are given
        the ratio is ``10**(-0.4 * (reference_zp - science_zp))``.
    max_stars : int or None, optional
        Measure at most this many stars, default 2,000: the brightest when
        ``stars`` has a ``flux`` column (as the star finder's tables do), else
        an evenly spaced subset. Each star's error has a 1 % floor per image,
        so 2,000 stars already pin the ratio to a few 0.01 %; more only cost
        time (a 4096² field holds about 8,000). None measures all.

    Returns
    -------
    FluxRatio
        From the stars when zero points are not both given, else from zero
        points. When too few stars are usable and both :class:`Image` inputs
        carry zero points (``meta.zeropoint``), those are used.

    Raises
    ------
    AstridInputError
        Shapes differ, or fewer than 3 stars have S/N >= 20 in both images
        and no zero points are known.

    Notes
    -----
    Each star's sky is the sigma-clipped median of an annulus from 2 to 3
    aperture radii; stars with a masked pixel in the aperture, a saturated
    pixel, or S/N below 20 in either image are dropped. Each star's ratio
    has an error from its sky noise and a 1 % systematic floor per image.
    The ratio is the inverse-variance weighted mean, in logarithm, of the
    largest group of mutually consistent stars (variables and transients
    excluded), 3-sigma clipped; its error is the formal one, scaled up by
    the reduced chi-square when that exceeds one.
    """
    if science_zp is not None and reference_zp is not None:
        return _zeropoint_ratio(float(science_zp), float(reference_zp))
    if max_stars is not None and not (
        isinstance(max_stars, (int, np.integer)) and max_stars >= _MIN_STARS
    ):
        raise AstridInputError(
            f"max_stars: must be an integer >= {_MIN_STARS} or None, got {max_stars!r}"
        )

    pair = _pair(reference, science, mask, reference_zp, science_zp)
    if pair.bad.all():
        return pair.fallback("no pixel is finite and unmasked in both images")

    fwhm_n, psf_n = _psf_fwhm_and_array(science_psf, "science_psf")
    fwhm_r, psf_r = _psf_fwhm_and_array(reference_psf, "reference_psf")

    xy, brightness, fwhm_n, fwhm_r = _star_positions(pair, stars, fwhm_n, fwhm_r)
    radius = _APERTURE_FWHM * max(fwhm_n, fwhm_r)
    xy = _measurable(xy, brightness, radius, pair.sci.shape, max_stars)
    if len(xy) < _MIN_STARS:
        return pair.fallback(f"only {len(xy)} stars lie far enough from the edges")
    flagged, (f_n, e_n), (f_r, e_r), n_bad = _photometry(pair, xy, radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_n = f_n / e_n
        snr_r = f_r / e_r
    usable = (n_bad == 0) & (snr_n >= _MIN_SNR) & (snr_r >= _MIN_SNR)
    usable &= np.isfinite(f_n) & np.isfinite(f_r)
    if usable.sum() < _MIN_STARS:
        return pair.fallback(
            f"only {int(usable.sum())} stars have S/N >= {_MIN_SNR:g} in both images"
        )

    correction = 1.0
    if psf_r is not None and psf_n is not None:
        correction = _encircled(psf_r, radius) / _encircled(psf_n, radius)
    ratio = f_n[usable] / f_r[usable] * correction
    rel_err = np.sqrt(
        (e_n[usable] / f_n[usable]) ** 2 + (e_r[usable] / f_r[usable]) ** 2 + 2 * _FLOOR**2
    )
    positive = ratio > 0
    if positive.sum() < _MIN_STARS:
        return pair.fallback("fewer than 3 stars have positive fluxes in both images")
    _check_aligned(pair, flagged, xy[usable], radius, max(fwhm_n, fwhm_r))
    mean, error, n = _consensus(np.log(ratio[positive]), rel_err[positive])
    return FluxRatio(ratio=mean, error=error, n_stars=n, method="stars")


def _star_positions(pair: _Pair, stars, fwhm_n, fwhm_r):
    """(x, y) of the stars to measure, their brightness (or None) and both FWHMs (measured when unknown)."""
    brightness = None
    if stars is None:
        table = find_stars(pair.ref, pair.bad, saturation=pair.ref_sat)
        table = table[clean_stars(table)]
        xy = np.column_stack([np.asarray(table["x"]), np.asarray(table["y"])])
        brightness = np.asarray(table["flux"], float)
        if fwhm_r is None:
            fwhm_r = float(table.meta["fwhm"])
    elif hasattr(stars, "colnames"):
        xy = np.column_stack([np.asarray(stars["x"], float), np.asarray(stars["y"], float)])
        if "flux" in stars.colnames:
            brightness = np.asarray(stars["flux"], float)
    else:
        xy = np.asarray(stars, dtype=float).reshape(-1, 2)
    if fwhm_r is None or fwhm_n is None:
        # The star finder's median FWHM stands in for a missing PSF.
        if fwhm_r is None:
            fwhm_r = float(find_stars(pair.ref, pair.bad, saturation=pair.ref_sat).meta["fwhm"])
        if fwhm_n is None:
            fwhm_n = float(find_stars(pair.sci, pair.bad, saturation=pair.sci_sat).meta["fwhm"])
    return xy, brightness, fwhm_n, fwhm_r


def _measurable(xy, brightness, radius, shape, max_stars):
    """The stars whose apertures fit in the image, at most ``max_stars`` (the brightest, or evenly spaced)."""
    ny, nx = shape
    inside = (
        np.isfinite(xy).all(axis=1)
        & (xy[:, 0] >= radius)
        & (xy[:, 0] <= nx - 1 - radius)
        & (xy[:, 1] >= radius)
        & (xy[:, 1] <= ny - 1 - radius)
    )
    xy = xy[inside]
    if len(xy) >= _MIN_STARS and max_stars is not None and len(xy) > max_stars:
        if brightness is not None:
            order = np.argsort(-np.nan_to_num(brightness[inside], nan=-np.inf), kind="stable")
            xy = xy[np.sort(order[:max_stars])]
        else:
            xy = xy[np.linspace(0, len(xy) - 1, max_stars).round().astype(int)]
    return xy


def _photometry(pair: _Pair, xy, radius):
    """Aperture fluxes and errors of the stars in both images, and the pixels they may not use."""
    # Saturated pixels count as masked: a star touching one is not used.
    flagged = pair.bad.copy()
    for data, level in ((pair.sci, pair.sci_sat), (pair.ref, pair.ref_sat)):
        if level is not None:
            with np.errstate(invalid="ignore"):
                flagged |= data >= level
    phot = []
    for data in (pair.sci, pair.ref):
        # The kernel never reads flagged (NaN, masked, saturated) pixels: no filled copy needed.
        data = (
            np.ascontiguousarray(data)
            if data.dtype in (np.float32, np.float64)
            else data.astype(float)
        )
        phot.append(
            _aperture_photometry(
                data, flagged, xy[:, 0].copy(), xy[:, 1].copy(), radius, 2.0 * radius, 3.0 * radius
            )
        )
    (f_n, e_n), (f_r, e_r) = [
        (p[:, 0], p[:, 3] * np.sqrt(p[:, 1] * (1.0 + p[:, 1] / np.maximum(p[:, 4], 1.0))))
        for p in phot
    ]
    return flagged, (f_n, e_n), (f_r, e_r), phot[0][:, 2] + phot[1][:, 2]


def _check_aligned(pair: _Pair, flagged, xy, radius, fwhm) -> None:
    """Refuse images that are not on one grid: they give a confident but wrong ratio (the
    apertures catch part of each star); the stars' centroids tell."""
    offsets = _centroid_offsets(pair.sci, pair.ref, flagged, xy, radius)
    offsets = offsets[np.isfinite(offsets)]
    limit = max(_MAX_CENTROID_OFFSET_FWHM * fwhm, _MAX_CENTROID_OFFSET_PX)
    if offsets.size >= _MIN_STARS and float(np.median(offsets)) > limit:
        raise AstridInputError(
            f"science and reference do not look aligned: the centroids of {offsets.size} bright stars differ "
            f"by a median of {float(np.median(offsets)):.2f} px between the images (more than {limit:.2f} px, "
            f"half the FWHM); resample the science image onto the reference grid first (astrid.align), "
            f"or give the zero points (science_zp=, reference_zp=)"
        )
