"""Empirical point-spread function from the stars of an image.

:func:`estimate_psf` selects isolated, unsaturated, high-S/N stars of
typical width and shape, shifts each onto a common grid centred on its
sub-pixel centroid (a Fourier phase shift, which does not blur well-sampled
PSFs as local interpolation does), normalises them and combines them with a
per-pixel sigma-clipped mean. With too few
usable stars it falls back to a Gaussian of the measured (or given) FWHM.

FFT-origin convention
---------------------
A PSF here is an odd-sized ``(n, n)`` array that sums to 1 with its centre at
pixel ``[n // 2, n // 2]``. :func:`psf_to_fft_origin` zero-pads it to an
image's shape and rolls that centre to ``[0, 0]``, so that ::

    irfft2(rfft2(image) * rfft2(psf_to_fft_origin(psf, image.shape)), image.shape)

convolves ``image`` with the PSF without shifting it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from ._background import estimate_background
from ._stars import GAUSSIAN_SIGMA_TO_FWHM, _prepare, find_stars
from .errors import AstridInputError, AstridPSFError, AstridWarning

__all__ = ["PSFModel", "estimate_psf", "gaussian_psf", "psf_to_fft_origin", "measure_fwhm"]

_MIN_SIZE = 15
_PSF_SNR = 20.0
# Each star is normalised by its flux within this many FWHM of the centre.
_NORM_RADIUS_FWHM = 2.0
# Stamps are cut this much wider than the PSF for the Fourier shift.
_PAD = 4
# PSF stars: FWHM within this fraction of the image's, and roundness (ellipticity) below this.
_MAX_WIDTH_DEVIATION = 0.25
_MAX_ROUNDNESS = 0.3
# With fewer than min_stars but at least this many, the fallback Gaussian takes their stack's FWHM.
_MIN_FWHM_STARS = 3
# Square of the FWHM (px^2) that integration over a square pixel adds: 8 ln 2 / 12.
_PIXEL_FWHM2 = 8.0 * math.log(2.0) / 12.0


@dataclass
class PSFModel:
    """A point-spread function on the pixel grid.

    Attributes
    ----------
    psf : numpy.ndarray, shape (n, n)
        The PSF: ``n`` odd, sum 1, centred on pixel ``[n // 2, n // 2]``
        (see the module's FFT-origin convention).
    fwhm : float
        Full width at half maximum in pixels, measured on ``psf``.
    n_stars : int
        Number of stars stacked (0 for a Gaussian or given PSF).
    method : str
        ``"empirical"`` (stacked stars), ``"gaussian-fallback"`` (too few
        stars: a Gaussian of the measured or given FWHM) or ``"given"``.
    """

    psf: np.ndarray
    fwhm: float
    n_stars: int
    method: str

    @classmethod
    def from_array(cls, psf, name: str = "psf") -> "PSFModel":
        """A :class:`PSFModel` from a user-supplied PSF image (e.g. WebbPSF).

        The array is normalised to sum 1; its size must be odd and its
        maximum should be at the centre pixel.

        Raises
        ------
        AstridPSFError
            Not a square odd-sized 2-D array, non-finite values, or a sum
            that is not positive.
        """
        arr = np.asarray(psf, dtype=float)
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] % 2 == 0:
            raise AstridPSFError(f"{name}: a PSF must be a square array of odd size, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise AstridPSFError(f"{name}: the PSF has non-finite values")
        total = arr.sum()
        if not total > 0:
            raise AstridPSFError(f"{name}: the PSF sums to {total}, it must be positive")
        arr = arr / total
        return cls(psf=arr, fwhm=measure_fwhm(arr), n_stars=0, method="given")


def default_size(fwhm: float) -> int:
    """Odd PSF size near 6 FWHM, at least 15 pixels."""
    return max(_MIN_SIZE, 2 * int(math.ceil(3.0 * fwhm)) + 1)


def gaussian_psf(fwhm: float, size: int | None = None) -> np.ndarray:
    """A circular Gaussian PSF integrated over square pixels.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum in pixels.
    size : int, optional
        Side of the output (made odd by adding one if even); default
        :func:`default_size` (odd, near 6 FWHM, at least 15).

    Returns
    -------
    numpy.ndarray, shape (size, size)
        Sums to 1, centred on pixel ``[size // 2, size // 2]``.
    """
    if not (np.isfinite(fwhm) and fwhm > 0):
        raise AstridInputError(f"fwhm must be a positive number of pixels, got {fwhm}")
    n = default_size(fwhm) if size is None else int(size)
    if n < 1:
        raise AstridInputError(f"size must be positive, got {size}")
    n += 1 - n % 2
    sigma = fwhm / GAUSSIAN_SIGMA_TO_FWHM
    edges = np.arange(n + 1) - n // 2 - 0.5
    cdf = 0.5 * erf(edges / (math.sqrt(2.0) * sigma))
    prof = np.diff(cdf)
    psf = np.outer(prof, prof)
    return psf / psf.sum()


def psf_to_fft_origin(psf, shape) -> np.ndarray:
    """Zero-pad a centred PSF to ``shape`` and roll its centre to ``[0, 0]``.

    Parameters
    ----------
    psf : numpy.ndarray, shape (n, n)
        Centred PSF (centre at ``[n // 2, n // 2]``), n odd.
    shape : tuple of int
        ``(ny, nx)`` of the image to convolve, each at least ``n``.

    Returns
    -------
    numpy.ndarray, shape ``shape``
        The PSF with its centre at ``[0, 0]`` and the rest wrapped around
        the edges, so ``irfft2(rfft2(img) * rfft2(out))`` convolves ``img``
        without a shift.
    """
    psf = np.asarray(psf)
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise AstridPSFError(f"psf: must be a 2-D array of odd sizes, got shape {psf.shape}")
    ny, nx = (int(s) for s in shape)
    if psf.shape[0] > ny or psf.shape[1] > nx:
        raise AstridInputError(f"psf: shape {psf.shape} does not fit in the image shape {(ny, nx)}")
    out = np.zeros((ny, nx), dtype=psf.dtype if np.issubdtype(psf.dtype, np.floating) else float)
    out[: psf.shape[0], : psf.shape[1]] = psf
    return np.roll(out, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), axis=(0, 1))


def measure_fwhm(psf) -> float:
    """FWHM (pixels) of a centred PSF: twice the mean half-maximum radius along 36 rays.

    The PSF is interpolated with cubic splines from its centre pixel
    ``[n // 2, n // 2]``; pixel integration is part of what is measured.
    """
    from scipy.ndimage import map_coordinates

    psf = np.asarray(psf, dtype=float)
    n = psf.shape[0]
    c = n // 2
    peak = psf[c, c]
    if not peak > 0:
        return float("nan")
    radii = np.arange(0.0, n / 2.0, 0.02)
    angles = np.linspace(0.0, np.pi, 36, endpoint=False)
    half = []
    for a in angles:
        for sign in (1.0, -1.0):
            y = c + sign * radii * np.sin(a)
            x = c + sign * radii * np.cos(a)
            prof = map_coordinates(psf, [y, x], order=3, mode="constant", cval=0.0) / peak
            below = np.flatnonzero(prof < 0.5)
            if below.size == 0 or below[0] == 0:
                continue
            k = below[0]
            r0, r1, p0, p1 = radii[k - 1], radii[k], prof[k - 1], prof[k]
            half.append(r0 + (p0 - 0.5) * (r1 - r0) / (p0 - p1))
    return float(2.0 * np.mean(half)) if half else float("nan")


def _fourier_shift(stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Shift each (odd-sized) stamp so that the point at centre + (dx, dy) lands on the centre.

    A phase ramp in Fourier space: exact for band-limited stamps, and unlike
    local interpolation it does not blur a PSF sampled at 2 pixels FWHM.
    """
    m = stamps.shape[-1]
    f = np.fft.fftfreq(m)
    ramp_x = np.exp(2j * np.pi * f[None, :] * np.asarray(dx, float)[:, None])
    ramp_y = np.exp(2j * np.pi * f[None, :] * np.asarray(dy, float)[:, None])
    spec = np.fft.fft2(stamps) * ramp_y[:, :, None] * ramp_x[:, None, :]
    return np.fft.ifft2(spec).real


def _cut_stamps(data, background, xs, ys, n, norm_radius, pad=_PAD):
    """Background-subtracted stars on n x n grids centred on (xs, ys), each with unit flux within norm_radius.

    Stamps are cut ``pad`` pixels wider on each side at the nearest pixel,
    shifted by their sub-pixel offsets in Fourier space, and cropped, so the
    wrap-around of the shift stays outside the kept area.
    """
    h = n // 2
    m = n + 2 * pad
    xi = np.rint(xs).astype(int)
    yi = np.rint(ys).astype(int)
    offs = np.arange(m) - (h + pad)
    rows = yi[:, None] + offs[None, :]
    cols = xi[:, None] + offs[None, :]
    stamps = data[rows[:, :, None], cols[:, None, :]].astype(float)
    if np.ndim(background) == 2:
        stamps -= background[rows[:, :, None], cols[:, None, :]]
    else:
        stamps -= float(background)
    stamps = _fourier_shift(stamps, xs - xi, ys - yi)[:, pad : pad + n, pad : pad + n]
    yy, xx = np.mgrid[0:n, 0:n] - h
    inner = (xx**2 + yy**2) <= norm_radius**2
    norms = stamps[:, inner].sum(axis=1)
    ok = norms > 0
    stamps[ok] /= norms[ok][:, None, None]
    return stamps, norms


def _clipped_mean(stamps: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """Per-pixel mean over stars after rejecting > sigma MAD-deviations from the median."""
    med = np.median(stamps, axis=0)
    mad = 1.4826 * np.median(np.abs(stamps - med), axis=0)
    keep = np.abs(stamps - med) <= sigma * np.maximum(mad, 1e-12)
    count = keep.sum(axis=0)
    mean = np.where(count > 0, (stamps * keep).sum(axis=0) / np.maximum(count, 1), med)
    return mean


def _centroid(psf: np.ndarray, fwhm: float) -> tuple[float, float]:
    """Gaussian-windowed centroid offset (dx, dy) of a PSF from its centre pixel."""
    n = psf.shape[0]
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n] - c
    sw2 = 2.0 * (fwhm / GAUSSIAN_SIGMA_TO_FWHM) ** 2
    dx = dy = 0.0
    for _ in range(20):
        w = np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / sw2) * psf
        total = w.sum()
        if not total > 0:
            return 0.0, 0.0
        sx = 2.0 * (w * (xx - dx)).sum() / total
        sy = 2.0 * (w * (yy - dy)).sum() / total
        dx += sx
        dy += sy
        if abs(sx) < 1e-5 and abs(sy) < 1e-5:
            break
    return float(dx), float(dy)


def _recentre(psf: np.ndarray, fwhm: float) -> np.ndarray:
    """Shift the PSF so that its windowed centroid falls on the centre pixel."""
    n = psf.shape[0]
    pad = n // 2
    for _ in range(3):
        dx, dy = _centroid(psf, fwhm)
        if abs(dx) < 1e-3 and abs(dy) < 1e-3:
            break
        padded = np.pad(psf, pad)[None]
        psf = _fourier_shift(padded, np.array([dx]), np.array([dy]))[0, pad : pad + n, pad : pad + n]
    return psf


def _as_array(value, shape, name):
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(float)
    if arr.ndim == 0:
        return arr
    if arr.shape != tuple(shape):
        raise AstridInputError(f"{name}: shape {arr.shape} does not match data shape {tuple(shape)}")
    return arr


def _fallback(fwhm, size, n_usable, min_stars, why, pixelized):
    """Gaussian PSF of the given FWHM, with a warning.

    A FWHM measured on pixel data already holds the pixel's own width,
    which :func:`gaussian_psf` adds again: ``pixelized`` removes it first.
    """
    if fwhm is None or not np.isfinite(fwhm) or fwhm <= 0:
        raise AstridPSFError(
            f"cannot estimate a PSF: {why}, and no FWHM is known for a Gaussian fallback "
            "(pass fwhm=... in pixels)"
        )
    width = math.sqrt(max(fwhm**2 - _PIXEL_FWHM2, 0.25 * fwhm**2)) if pixelized else fwhm
    psf = gaussian_psf(width, size)
    model = PSFModel(psf=psf, fwhm=measure_fwhm(psf), n_stars=0, method="gaussian-fallback")
    warnings.warn(
        f"only {n_usable} usable PSF stars (need {min_stars}): {why}; "
        f"using a Gaussian PSF of FWHM {model.fwhm:.2f} px",
        AstridWarning,
        stacklevel=3,
    )
    return model


def estimate_psf(
    data,
    mask=None,
    background=None,
    rms=None,
    size: int | None = None,
    min_stars: int = 10,
    max_stars: int = 200,
    saturation: float | None = None,
    *,
    fwhm: float | None = None,
) -> PSFModel:
    """Estimate the PSF of an image from its stars.

    Parameters
    ----------
    data : numpy.ndarray, shape (ny, nx)
        Image in data units (NaN pixels are ignored).
    mask : numpy.ndarray of bool, shape (ny, nx), optional
        True where a pixel must not be used; stars touching masked pixels
        are not used.
    background : float, numpy.ndarray or Background, optional
        Sky level (data units) or the result of
        :func:`~astrid.estimate_background`; estimated when not given.
    rms : float or numpy.ndarray, optional
        Background noise per pixel (data units); taken from ``background``
        when that is a :class:`Background`, else estimated.
    size : int, optional
        Side of the PSF array in pixels (made odd by adding one if even);
        default odd near 6 FWHM, at least 15.
    min_stars : int, optional
        Fewer usable stars than this give a Gaussian fallback (default 10).
    max_stars : int, optional
        Stack at most this many stars, the most significant first (default 200).
    saturation : float, optional
        Saturation level in data units; stars reaching it are not used.
    fwhm : float, optional
        FWHM in pixels when known (e.g. from the header): it sets the star
        finder's kernel, the width that PSF stars must have (within 25 %)
        and the Gaussian fallback's width when too few stars are usable.
        Give it for fields dominated by galaxies, whose typical width the
        star finder would otherwise take for the PSF's.

    Returns
    -------
    PSFModel
        The PSF (odd ``(n, n)``, sum 1, centred on ``[n // 2, n // 2]``), its
        FWHM, the number of stars stacked and the method.

    Raises
    ------
    AstridPSFError
        No star to measure a width from and no ``fwhm`` given.
    AstridInputError
        Malformed input (shapes, all pixels masked or non-finite).

    Warns
    -----
    AstridWarning
        Fewer than ``min_stars`` usable stars: a Gaussian PSF is returned,
        whose FWHM is that of the stack of the usable stars when there are at
        least three, else the star finder's, else ``fwhm``.

    Notes
    -----
    Stars must be detected at 5 sigma, have S/N >= 20, no saturated or
    masked pixel nearby, no other detection within 3 FWHM, lie a PSF
    half-width plus 5 pixels from the edges, have a FWHM within 25 % of the
    image's (``fwhm``, else :func:`~astrid.find_stars` ``meta["fwhm"]``), a roundness below
    0.3, and both within 3 MAD-deviations of the typical candidate. Each is shifted onto the
    PSF grid at its windowed centroid (Fourier phase shift), normalised by its flux within 2 FWHM
    and the stack is the per-pixel 3-sigma-clipped mean, recentred on its
    windowed centroid and normalised to sum 1.
    """
    data, bad = _prepare(data, mask, purpose="to estimate a PSF from")
    if size is not None:
        if int(size) < 3:
            raise AstridInputError(f"size must be at least 3 pixels, got {size}")
        size = int(size) + 1 - int(size) % 2
    if min_stars < 1 or max_stars < 1:
        raise AstridInputError(f"min_stars and max_stars must be positive, got {min_stars}, {max_stars}")

    if hasattr(background, "background"):
        if rms is None:
            rms = background.rms
        background = background.background
    if background is None:
        bkg = estimate_background(data, bad)
        background = bkg.background
        if rms is None:
            rms = bkg.rms
    background = _as_array(background, data.shape, "background")
    if rms is not None:
        rms = _as_array(rms, data.shape, "rms")

    stars = find_stars(data, bad, background=background, rms=rms, fwhm=fwhm, saturation=saturation)
    pixelized = True
    if fwhm is not None:
        # The caller's width wins: in galaxy-dominated fields the most common
        # width the star finder sees is a galaxy's.
        fwhm_known = float(fwhm)
        pixelized = False
    elif stars.meta["fwhm_nstars"] > 0:
        fwhm_known = float(stars.meta["fwhm"])
    else:
        widths = np.asarray(stars["fwhm"])
        widths = widths[np.isfinite(widths)]
        fwhm_known = float(np.median(widths)) if widths.size else None
    if len(stars) == 0 or fwhm_known is None:
        return _fallback(fwhm_known, size, 0, min_stars, f"{len(stars)} stars detected, none measurable", pixelized)

    n = size if size is not None else default_size(fwhm_known)
    h = n // 2
    ny, nx = data.shape
    x = np.asarray(stars["x"])
    y = np.asarray(stars["y"])
    margin = h + _PAD + 1
    cand = (
        (np.asarray(stars["snr"]) >= _PSF_SNR)
        & ~np.asarray(stars["saturated"])
        & ~np.asarray(stars["masked"])
        & np.asarray(stars["isolated"])
        & (x >= margin) & (x <= nx - 1 - margin) & (y >= margin) & (y <= ny - 1 - margin)
        & np.isfinite(np.asarray(stars["fwhm"]))
        & np.isfinite(np.asarray(stars["roundness"]))
    )
    # No masked pixel anywhere in the star's (padded) stamp.
    for k in np.flatnonzero(cand):
        xi, yi = int(round(x[k])), int(round(y[k]))
        if bad[yi - h - _PAD : yi + h + _PAD + 1, xi - h - _PAD : xi + h + _PAD + 1].any():
            cand[k] = False
    # Shape cuts around the image's FWHM (the star finder's cluster of widths, which
    # cosmic rays, trails and galaxies do not pull): only point sources stay.
    widths = np.asarray(stars["fwhm"])
    roundness = np.asarray(stars["roundness"])
    cand &= (np.abs(widths / fwhm_known - 1.0) <= _MAX_WIDTH_DEVIATION) & (roundness <= _MAX_ROUNDNESS)
    if cand.sum() >= 5:
        for v, floor, one_sided in ((widths, 0.1 * fwhm_known, False), (roundness, 0.05, True)):
            med = np.median(v[cand])
            mad = 1.4826 * np.median(np.abs(v[cand] - med))
            tol = max(3.0 * mad, floor)
            cand &= (v <= med + tol) if one_sided else (np.abs(v - med) <= tol)
    idx = np.flatnonzero(cand)
    idx = idx[np.argsort(-np.asarray(stars["snr"])[idx], kind="stable")][:max_stars]
    why = f"{idx.size} isolated, unsaturated point sources with S/N >= {_PSF_SNR:g}"
    if idx.size < _MIN_FWHM_STARS:
        return _fallback(fwhm_known, size, idx.size, min_stars, why, pixelized)

    norm_radius = max(_NORM_RADIUS_FWHM * fwhm_known, 2.0)
    stamps, norms = _cut_stamps(data, background, x[idx].astype(float), y[idx].astype(float), n, norm_radius)
    stamps = stamps[norms > 0]
    psf = None
    if len(stamps) >= _MIN_FWHM_STARS:
        psf = _recentre(_clipped_mean(stamps), fwhm_known)
        total = psf.sum()
        psf = psf / total if total > 0 else None
    if psf is None or len(stamps) < min_stars:
        # Too few stars for an empirical PSF, but a few still measure its width
        # better than the star finder's moments (biased for Moffat wings).
        stacked_fwhm = measure_fwhm(psf) if psf is not None else float("nan")
        if np.isfinite(stacked_fwhm) and stacked_fwhm > 0:
            return _fallback(stacked_fwhm, size, len(stamps), min_stars, why, True)
        return _fallback(fwhm_known, size, len(stamps), min_stars, why, pixelized)
    return PSFModel(psf=psf, fwhm=measure_fwhm(psf), n_stars=int(len(stamps)), method="empirical")
