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
import os
import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import erf

from .._utils import (
    GAUSSIAN_SIGMA_TO_FWHM,
    neighbour_noise,
    robust_std,
    robust_std_about,
)
from ..errors import AstridInputError, AstridPSFError, AstridWarning
from .background import estimate_background
from .stars import find_stars, prepare_data

__all__ = [
    "PSFModel",
    "estimate_psf",
    "gaussian_psf",
    "psf_to_fft_origin",
    "measure_fwhm",
    "regularise_psf",
    "regularise_psf_array",
]

_MIN_SIZE = 25
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
# Stars needed for a PSF varying linearly (1) or quadratically (2) over the field with degree="auto".
_MIN_STARS_DEGREE = {1: 20, 2: 40}
# Square of the FWHM (px^2) that integration over a square pixel adds: 8 ln 2 / 12.
_PIXEL_FWHM2 = 8.0 * math.log(2.0) / 12.0
# Stars found (by the alignment) at a width more than this factor from the header's seeing are searched again.
_PRIOR_TOLERANCE = 1.3


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
    degree : int
        Polynomial degree of the variation over the field (0: constant).
        When > 0, ``psf`` and ``fwhm`` are those at the image centre and
        :meth:`at` gives the PSF elsewhere.
    width_coefficients : numpy.ndarray or None
        Polynomial of the fractional width change over the field, in the
        terms 1, u, v, u², uv, v² of the position scaled to [-1, 1].
    base : numpy.ndarray or None
        The stack of all stars: the PSF at a position is
        ``base + width · width_template``, normalised.
    width_template : numpy.ndarray or None
        The derivative of ``base`` with respect to width.
    image_shape : tuple of int or None
        Shape of the image the varying PSF was fitted on.
    n_usable : int
        PSF stars that passed every cut (also for a Gaussian fallback,
        whose width they measured when there were at least three).
    stellar_locus : bool or None
        Whether the width the stars were selected around is that of a
        stellar locus (see :func:`~astrid.find_stars`, ``meta``); False when
        only galaxies (or trails) set it, None when not known (a given PSF
        or FWHM, or stars picked by catalogue positions).
    quality_note : str
        Why the PSF may be wrong (no stellar locus, a header seeing that
        disagrees); empty when nothing is known against it.
    """

    psf: np.ndarray
    fwhm: float
    n_stars: int
    method: str
    degree: int = 0
    width_coefficients: np.ndarray | None = None
    base: np.ndarray | None = None
    width_template: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None
    n_usable: int = 0
    stellar_locus: bool | None = None
    quality_note: str = ""

    @property
    def varies(self) -> bool:
        """True when the PSF depends on the position (``degree`` > 0)."""
        return self.degree > 0 and self.width_coefficients is not None

    def at(self, x: float, y: float) -> np.ndarray:
        """The PSF at pixel ``(x, y)`` (0-based): odd ``(n, n)``, sum 1, centred.

        For a PSF that varies over the field, the stack of all the stars
        rescaled in width to that position (see :meth:`width_at`);
        otherwise :attr:`psf`.
        """
        if not self.varies:
            return self.psf
        psf = self.base + self.width_at(x, y) * self.width_template
        total = psf.sum()
        return psf / total if total > 0 else self.psf

    def width_at(self, x: float, y: float) -> float:
        """Fractional change of the PSF's width at pixel ``(x, y)`` against the stack of all stars (0: constant PSF)."""
        if not self.varies:
            return 0.0
        return float(
            _basis(*_field_coordinates(x, y, self.image_shape), self.degree)
            @ self.width_coefficients
        )

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
        if psf is None or isinstance(psf, (str, bytes, os.PathLike)):
            raise AstridPSFError(
                f"{name}: a PSF must be a 2-D array (or a PSFModel), got {type(psf).__name__} {psf!r}"
            )
        if isinstance(psf, np.ma.MaskedArray):
            # Masked PSF pixels carry no PSF: NaN, refused below.
            psf = np.ma.filled(psf.astype(float), np.nan)
        try:
            arr = np.asarray(psf, dtype=float)
        except (TypeError, ValueError) as exc:
            raise AstridPSFError(
                f"{name}: a PSF must be a 2-D array of numbers, got {type(psf).__name__} ({exc})"
            ) from exc
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] % 2 == 0:
            raise AstridPSFError(
                f"{name}: a PSF must be a square array of odd size, got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise AstridPSFError(
                f"{name}: the PSF has {int((~np.isfinite(arr)).sum())} non-finite (or masked) values"
            )
        total = arr.sum()
        if not total > 0:
            raise AstridPSFError(f"{name}: the PSF sums to {total}, it must be positive")
        arr = arr / total
        return cls(psf=arr, fwhm=measure_fwhm(arr), n_stars=0, method="given")


def default_size(fwhm: float) -> int:
    """Odd PSF size near 10 FWHM, at least 25 pixels.

    Seeing-limited PSFs have power-law (Moffat) wings: a box of 6 FWHM
    misses 3-5 % of the flux, which biases PSF fluxes low and leaves rings
    around bright stars in a difference image.
    """
    return max(_MIN_SIZE, 2 * int(math.ceil(5.0 * fwhm)) + 1)


def gaussian_psf(fwhm: float, size: int | None = None) -> np.ndarray:
    """A circular Gaussian PSF integrated over square pixels.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum in pixels.
    size : int, optional
        Side of the output (made odd by adding one if even); default
        :func:`default_size` (odd, near 10 FWHM, at least 25).

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

    Parameters
    ----------
    psf : array_like, shape (n, n)
        The PSF, centred on pixel ``[n // 2, n // 2]`` (any normalisation).

    Returns
    -------
    float
        The FWHM in pixels; NaN when the centre pixel is not positive or no
        ray falls below half of it.
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
    # Both directions of each ray. Every 10th radius first, to bracket the
    # half-maximum; then the 0.02 px steps inside the bracket only.
    sin = np.repeat(np.sin(angles), 2) * np.tile([1.0, -1.0], angles.size)
    cos = np.repeat(np.cos(angles), 2) * np.tile([1.0, -1.0], angles.size)

    def profiles(r, sin, cos):
        y = c + sin[:, None] * r
        x = c + cos[:, None] * r
        values = map_coordinates(psf, [y.ravel(), x.ravel()], order=3, mode="constant", cval=0.0)
        return values.reshape(y.shape) / peak

    step = 10
    coarse = profiles(radii[None, ::step], sin, cos)
    below = coarse < 0.5
    first = np.argmax(below, axis=1)
    rays = np.flatnonzero(below.any(axis=1) & (first > 0))
    if rays.size == 0:
        return float("nan")
    index = (first[rays, None] - 1) * step + np.arange(step + 1)[None, :]
    index = np.minimum(index, radii.size - 1)
    r_fine = radii[index]
    fine = profiles(r_fine, sin[rays], cos[rays])
    below = fine < 0.5
    k = np.argmax(below, axis=1)
    ok = below.any(axis=1) & (k > 0)
    if not ok.any():
        return float("nan")
    rows = np.flatnonzero(ok)
    k = k[ok]
    r0, r1 = r_fine[rows, k - 1], r_fine[rows, k]
    p0, p1 = fine[rows, k - 1], fine[rows, k]
    half = r0 + (p0 - 0.5) * (r1 - r0) / (p0 - p1)
    return float(2.0 * np.mean(half))


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
    mad = robust_std(stamps, axis=0)
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
        psf = _fourier_shift(padded, np.array([dx]), np.array([dy]))[
            0, pad : pad + n, pad : pad + n
        ]
    return psf


def _field_coordinates(x, y, shape):
    """Pixel positions scaled to [-1, 1] over an image of ``shape``."""
    ny, nx = shape
    return (
        2.0 * np.asarray(x, float) / max(nx - 1, 1) - 1.0,
        2.0 * np.asarray(y, float) / max(ny - 1, 1) - 1.0,
    )


def _basis(u, v, degree):
    """Polynomial terms u^i v^j, i + j <= degree, along the last axis (1, u, v, u², uv, v², ...)."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    return np.stack(
        [u**i * v ** (d - i) for d in range(degree + 1) for i in range(d, -1, -1)], axis=-1
    )


def _width_template(psf: np.ndarray) -> np.ndarray:
    """d/ds of the PSF stretched by 1 + s (flux kept): −(2 P + x ∂P/∂x + y ∂P/∂y).

    Derivatives in Fourier space (band-limited), on a grid padded against
    wrap-around.
    """
    n = psf.shape[0]
    pad = n // 2
    big = np.pad(psf, pad)
    m = big.shape[0]
    f = np.fft.fftfreq(m)
    spec = np.fft.fft2(big)
    dx = np.fft.ifft2(spec * (2j * np.pi * f)[None, :]).real
    dy = np.fft.ifft2(spec * (2j * np.pi * f)[:, None]).real
    yy, xx = np.mgrid[0:m, 0:m] - m // 2
    template = -(2.0 * big + xx * dx + yy * dy)
    return template[pad : pad + n, pad : pad + n]


def _star_widths(stamps, base, template, radius):
    """Fractional width change of each star against ``base``: fit a (base + s · template) within ``radius``."""
    n = base.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    inner = xx**2 + yy**2 <= radius**2
    A = np.column_stack([base[inner], template[inner]])
    coef = np.linalg.lstsq(A, stamps[:, inner].T, rcond=None)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return coef[1] / coef[0]


def _fit_width_field(u, v, widths, degree, sigma=3.0):
    """Polynomial in (u, v) of the stars' width changes, 3-sigma clipped; its coefficients."""
    A = _basis(u, v, degree)
    keep = np.isfinite(widths)
    coef = np.zeros(A.shape[1])
    for _ in range(5):
        coef = np.linalg.lstsq(A[keep], widths[keep], rcond=None)[0]
        residual = widths - A @ coef
        scatter = robust_std_about(residual[keep])
        new = np.isfinite(widths) & (np.abs(residual) <= sigma * max(scatter, 1e-6))
        if new.sum() < A.shape[1] + 2 or np.array_equal(new, keep):
            break
        keep = new
    return coef


def _auto_degree(n_stars: int) -> int:
    """Polynomial degree of a varying PSF that ``n_stars`` stars support."""
    if n_stars >= _MIN_STARS_DEGREE[2]:
        return 2
    if n_stars >= _MIN_STARS_DEGREE[1]:
        return 1
    return 0


def _as_array(value, shape, name):
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(float)
    if arr.ndim == 0:
        return arr
    if arr.shape != tuple(shape):
        raise AstridInputError(
            f"{name}: shape {arr.shape} does not match data shape {tuple(shape)}"
        )
    return arr


def _fallback(fwhm, size, n_usable, min_stars, why, pixelized, stacklevel=3):
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
        stacklevel=stacklevel,
    )
    return model


@dataclass(frozen=True)
class PSFRequest:
    """The PSF that :func:`estimate_psf` is asked to build.

    Attributes
    ----------
    size : int, optional
        Side of the PSF array in pixels (made odd by adding one if even);
        default odd near 10 FWHM, at least 25.
    min_stars : int
        Fewer usable stars than this give a Gaussian fallback (default 10).
    max_stars : int
        Stack at most this many stars, the most significant first (default 200).
    degree : int or "auto"
        Polynomial degree of the PSF's variation over the field (default 0:
        one PSF for the whole image). With 1 or 2 the width of the PSF is a
        polynomial in the position: each star's width change against the
        stack of all stars is fitted (the stack and its derivative with
        respect to a stretch), and the polynomial is fitted to the stars
        with outlier clipping. ``"auto"`` takes 2 with at least 40 stars, 1
        with at least 20, else 0. :meth:`PSFModel.at` evaluates it.
    """

    size: int | None = None
    min_stars: int = 10
    max_stars: int = 200
    degree: object = 0


def estimate_psf(
    data,
    mask=None,
    background=None,
    rms=None,
    *,
    request: PSFRequest | None = None,
    saturation: float | None = None,
    fwhm: float | None = None,
    stars=None,
    seeing: float | None = None,
    star_positions=None,
) -> PSFModel:
    """Estimate the PSF of an image from its stars.

    Parameters
    ----------
    data : numpy.ndarray, shape (ny, nx), Image or (data, mask) pair
        Image in data units (NaN pixels are ignored). Images and pairs are read
        with :func:`astrid.as_image` (their masks count).
    mask : numpy.ndarray of bool, shape (ny, nx), optional
        True where a pixel must not be used; stars touching masked pixels
        are not used.
    background : float, numpy.ndarray or Background, optional
        Sky level (data units) or the result of
        :func:`~astrid.estimate_background`; estimated when not given.
    rms : float or numpy.ndarray, optional
        Background noise per pixel (data units); taken from ``background``
        when that is a :class:`Background`, else estimated.
    request : PSFRequest, optional
        The PSF's size, the number of stars to use and its variation over the
        field (default ``PSFRequest()``: 10 to 200 stars, one PSF for the image).
    saturation : float, optional
        Saturation level in data units; stars reaching it are not used.
    fwhm : float, optional
        FWHM in pixels when known (e.g. from the header): it sets the star
        finder's kernel, the width that PSF stars must have (within 25 %)
        and the Gaussian fallback's width when too few stars are usable.
        Give it for fields dominated by galaxies, whose typical width the
        star finder would otherwise take for the PSF's.
    stars : astropy.table.Table, optional
        The result of :func:`~astrid.find_stars` on this image (e.g.
        :attr:`astrid.Alignment.reference_stars`), to select the PSF stars
        from instead of detecting them again. If they leave fewer than
        ``min_stars`` usable, the image is searched as without them.
    seeing : float, optional
        Expected FWHM in pixels (the header's seeing,
        :attr:`astrid.ImageMeta.seeing_fwhm_pix`): a prior for the star
        finder (see :func:`~astrid.find_stars`). Given ``stars`` without a
        stellar locus, whose FWHM is more than a factor 1.3 from it, are
        searched again with the prior.
    star_positions : array_like, shape (n, 2), optional
        Pixel positions ``(x, y)`` of known stars (e.g. Gaia DR3 sources
        through the image's WCS, see :func:`astrid.difference`'s
        ``psf_stars``): only detections within max(2, FWHM / 2) pixels of
        one are PSF stars, and their median width replaces the star
        finder's. For fields where galaxies outnumber the stars.

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
        No stellar locus: the sources whose width selected the PSF stars are
        not round enough to be stars (galaxies or trails); the PSF is built
        anyway, and :attr:`PSFModel.stellar_locus` is False. Pass ``fwhm``,
        ``seeing``, ``star_positions`` or a PSF of your own.
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
    info: dict = {}
    request = request if request is not None else PSFRequest()
    if not isinstance(request, PSFRequest):
        raise AstridInputError(f"request must be a PSFRequest, got {type(request).__name__}")
    request = _Request(
        request.size,
        request.min_stars,
        request.max_stars,
        saturation,
        fwhm,
        request.degree,
        seeing,
        star_positions,
    )
    model = _estimate_psf(data, mask, background, rms, stars, request, info)
    if not info.get("annotated"):
        model.n_usable = int(info.get("n_usable", model.n_stars))
        model.stellar_locus = info.get("stellar_locus")
        model.quality_note = info.get("note", "")
    return model


@dataclass(frozen=True)
class _Request:
    """The scalar arguments of :func:`estimate_psf` (validated by :meth:`checked`)."""

    size: int | None
    min_stars: int
    max_stars: int
    saturation: float | None
    fwhm: float | None
    degree: object
    seeing: float | None
    star_positions: object

    def checked(self) -> _Request:
        size, seeing, positions = self.size, self.seeing, self.star_positions
        if size is not None:
            if int(size) < 3:
                raise AstridInputError(f"size must be at least 3 pixels, got {size}")
            size = int(size) + 1 - int(size) % 2
        if self.min_stars < 1 or self.max_stars < 1:
            raise AstridInputError(
                f"min_stars and max_stars must be positive, got {self.min_stars}, {self.max_stars}"
            )
        if self.degree not in (0, 1, 2, "auto"):
            raise AstridInputError(f"degree: must be 0, 1, 2 or 'auto', got {self.degree!r}")
        if seeing is not None:
            try:
                seeing = float(seeing)
            except (TypeError, ValueError):
                seeing = float("nan")
            if not (math.isfinite(seeing) and seeing > 0):
                raise AstridInputError(
                    f"seeing: must be a positive number of pixels, got {seeing!r}"
                )
        if positions is not None:
            positions = np.asarray(positions, dtype=float).reshape(-1, 2)
        return replace(self, size=size, seeing=seeing, star_positions=positions)


def _sky(data, bad, background, rms):
    """Background and noise maps: from a Background, arrays or numbers, else estimated."""
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
    return background, rms


def _given_stars(stars, req: _Request):
    """A caller's star table, or None when it must be searched again (with the seeing prior)."""
    if stars is None:
        return None
    if not {"x", "y", "snr", "fwhm", "roundness", "saturated", "masked", "isolated"} <= set(
        stars.colnames
    ):
        raise AstridInputError("stars: must be a table from astrid.find_stars")
    if (
        req.fwhm is None
        and req.seeing is not None
        and stars.meta.get("stellar_locus") is False
        and not (
            1.0 / _PRIOR_TOLERANCE <= float(stars.meta["fwhm"]) / req.seeing <= _PRIOR_TOLERANCE
        )
    ):
        # Found without the prior (by the alignment), on sources that are no stars and a width
        # far from the header's: search again with the prior.
        return None
    return stars


def _image_fwhm(stars, req: _Request, info: dict):
    """The width PSF stars must have, and whether it was measured on pixels (not given)."""
    if req.fwhm is None and req.star_positions is None and stars.meta.get("fwhm_nstars", 0) > 0:
        info["stellar_locus"] = bool(stars.meta.get("stellar_locus", True))
        info["note"] = str(stars.meta.get("locus_reason", ""))
    if req.fwhm is not None:
        # The caller's width wins: in galaxy-dominated fields the most common
        # width the star finder sees is a galaxy's.
        return float(req.fwhm), False
    if stars.meta["fwhm_nstars"] > 0:
        return float(stars.meta["fwhm"]), True
    widths = np.asarray(stars["fwhm"])
    widths = widths[np.isfinite(widths)]
    return (float(np.median(widths)) if widths.size else None), True


def _estimate_psf(data, mask, background, rms, stars, req: _Request, info) -> PSFModel:
    """The body of :func:`estimate_psf`; ``info`` collects what the model is annotated with."""
    data, bad = prepare_data(data, mask, purpose="to estimate a PSF from")
    req = req.checked()
    background, rms = _sky(data, bad, background, rms)
    stars = _given_stars(stars, req)
    if stars is None:
        stars = find_stars(
            data,
            bad,
            background=background,
            rms=rms,
            fwhm=req.fwhm,
            saturation=req.saturation,
            seeing=req.seeing,
        )

        def fallback(*args):
            return _fallback(*args, stacklevel=5)
    else:

        def fallback(*args):
            # Too few usable PSF stars in the given list (measured elsewhere, e.g. on the
            # science image's own grid, where the S/N is not inflated by resampling):
            # search this image before falling back to a Gaussian.
            info["annotated"] = True
            return estimate_psf(
                data,
                bad,
                background,
                rms,
                request=PSFRequest(req.size, req.min_stars, req.max_stars, req.degree),
                saturation=req.saturation,
                fwhm=req.fwhm,
                seeing=req.seeing,
                star_positions=req.star_positions,
            )

    size, min_stars = req.size, req.min_stars
    fwhm_known, pixelized = _image_fwhm(stars, req, info)
    if len(stars) == 0 or fwhm_known is None:
        return fallback(
            fwhm_known,
            size,
            0,
            min_stars,
            f"{len(stars)} stars detected, none measurable",
            pixelized,
        )

    n = size if size is not None else default_size(fwhm_known)
    idx, fwhm_known = _psf_stars(bad, stars, n, fwhm_known, req, info)
    why = f"{idx.size} isolated, unsaturated point sources with S/N >= {_PSF_SNR:g}"
    info["n_usable"] = int(idx.size)
    if idx.size < _MIN_FWHM_STARS:
        return fallback(fwhm_known, size, idx.size, min_stars, why, pixelized)

    norm_radius = max(_NORM_RADIUS_FWHM * fwhm_known, 2.0)
    x, y = np.asarray(stars["x"]), np.asarray(stars["y"])
    stamps, norms = _cut_stamps(
        data, background, x[idx].astype(float), y[idx].astype(float), n, norm_radius
    )
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
            return fallback(stacked_fwhm, size, len(stamps), min_stars, why, True)
        return fallback(fwhm_known, size, len(stamps), min_stars, why, pixelized)
    model = PSFModel(psf=psf, fwhm=measure_fwhm(psf), n_stars=int(len(stamps)), method="empirical")
    degree = _auto_degree(len(stamps)) if req.degree == "auto" else req.degree
    if degree == 0 or len(stamps) < _MIN_STARS_DEGREE[degree]:
        return model
    used = idx[norms > 0]
    return _with_varying_width(model, data.shape, (x[used], y[used]), stamps, norm_radius, degree)


def _psf_stars(bad, stars, n, fwhm_known, req: _Request, info):
    """Indices of the PSF stars (most significant first, at most ``max_stars``) and the width they share."""
    h = n // 2
    ny, nx = bad.shape
    x = np.asarray(stars["x"])
    y = np.asarray(stars["y"])
    margin = h + _PAD + 1
    cand = (
        (np.asarray(stars["snr"]) >= _PSF_SNR)
        & ~np.asarray(stars["saturated"])
        & ~np.asarray(stars["masked"])
        & np.asarray(stars["isolated"])
        & (x >= margin)
        & (x <= nx - 1 - margin)
        & (y >= margin)
        & (y <= ny - 1 - margin)
        & np.isfinite(np.asarray(stars["fwhm"]))
        & np.isfinite(np.asarray(stars["roundness"]))
    )
    # No masked pixel anywhere in the star's (padded) stamp.
    for k in np.flatnonzero(cand):
        xi, yi = int(round(x[k])), int(round(y[k]))
        if bad[yi - h - _PAD : yi + h + _PAD + 1, xi - h - _PAD : xi + h + _PAD + 1].any():
            cand[k] = False
    widths = np.asarray(stars["fwhm"])
    roundness = np.asarray(stars["roundness"])
    if req.star_positions is not None:
        # Known stars: only detections at their positions, and their width is the PSF's.
        from scipy.spatial import cKDTree

        positions = req.star_positions
        ok = np.isfinite(positions).all(axis=1)
        if ok.any():
            dist, _ = cKDTree(positions[ok]).query(
                np.column_stack([x, y]), distance_upper_bound=max(2.0, 0.5 * fwhm_known)
            )
            cand &= np.isfinite(dist)
        else:
            cand[:] = False
        known = widths[cand]
        if req.fwhm is None and known.size >= _MIN_FWHM_STARS:
            fwhm_known = float(np.median(known))
        info["note"] = f"{int(cand.sum())} detections at the {int(ok.sum())} known star positions"
    elif info.get("stellar_locus") is False:
        warnings.warn(
            f"estimate_psf: {info['note']}; the PSF built from them is probably a galaxy's, not the stars' "
            f"(FWHM {fwhm_known:.2f} px): pass fwhm= or seeing= (pixels), star_positions=, or a PSF of your own",
            AstridWarning,
            stacklevel=4,
        )
    # Shape cuts around the image's FWHM (the star finder's cluster of widths, which
    # cosmic rays, trails and galaxies do not pull): only point sources stay.
    cand &= (np.abs(widths / fwhm_known - 1.0) <= _MAX_WIDTH_DEVIATION) & (
        roundness <= _MAX_ROUNDNESS
    )
    if cand.sum() >= 5:
        for v, floor, one_sided in ((widths, 0.1 * fwhm_known, False), (roundness, 0.05, True)):
            med = np.median(v[cand])
            mad = robust_std_about(v[cand], med)
            tol = max(3.0 * mad, floor)
            cand &= (v <= med + tol) if one_sided else (np.abs(v - med) <= tol)
    idx = np.flatnonzero(cand)
    return idx[np.argsort(-np.asarray(stars["snr"])[idx], kind="stable")][
        : req.max_stars
    ], fwhm_known


def _with_varying_width(model: PSFModel, shape, xy, stamps, norm_radius, degree) -> PSFModel:
    """``model`` with a width that varies over the field as a polynomial of ``degree``."""
    psf = model.psf
    u, v = _field_coordinates(xy[0], xy[1], shape)
    # Only the width varies: a one-number change per star keeps the model
    # as quiet as the stack of all stars (a free polynomial per pixel would
    # carry the noise of fewer stars per degree of freedom).
    template = _width_template(psf)
    widths = _star_widths(stamps, psf, template, norm_radius)
    model.degree = int(degree)
    model.base = psf
    model.width_template = template
    model.width_coefficients = _fit_width_field(u, v, widths, degree)
    model.image_shape = tuple(shape)
    # psf and fwhm describe the PSF at the centre of the image.
    model.psf = model.at((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    model.fwhm = measure_fwhm(model.psf)
    return model


# ----------------------------------------------------------------------------- regularisation

# Empirical PSF wings: a Moffat fitted to the stack's ring means from this many
# FWHM outwards replaces the stack beyond _WING_JOIN_FWHM.
_WING_FIT_FWHM = 1.0
_WING_JOIN_FWHM = 1.5


def regularise_psf(model):
    """:func:`regularise_psf_array` applied to a model's PSF.

    Parameters
    ----------
    model : PSFModel
        An empirical PSF (a stack of noisy stars).

    Returns
    -------
    PSFModel
        A new model (method ``"<method>+regularised"``, FWHM re-measured), or
        ``model`` itself when the noise cannot be measured.
    float
        The pixel-noise σ measured on the PSF (NaN when it cannot be).
    """
    psf = np.asarray(model.psf, dtype=np.float64)
    clean, sigma = regularise_psf_array(psf)
    if clean is psf:  # nothing to measure the noise on: unchanged
        return model, sigma
    return replace(
        model, psf=clean, fwhm=measure_fwhm(clean), method=f"{model.method}+regularised"
    ), sigma


def moffat_wings(psf: np.ndarray, r: np.ndarray, fwhm: float):
    """A Moffat ``a (1 + (r/α)²)^−β`` (plus a constant) fitted to the ring means of ``psf``, evaluated at ``r``
    without the constant; None if no fit is found.

    For each (α, β) on a grid the model is linear in ``a`` and the constant,
    so the fit is a weighted least-squares solve per grid point, all at once
    (a few milliseconds, where an iterative bounded fit took a quarter of a
    second and ZOGY evaluates one PSF per tile).
    """
    c = psf.shape[0] // 2
    rings = np.rint(r).astype(int)
    counts = np.bincount(rings.ravel()).astype(float)
    profile = np.bincount(rings.ravel(), psf.ravel()) / np.maximum(counts, 1)
    radii = np.arange(profile.size, dtype=float)
    use = (radii >= max(1.0, _WING_FIT_FWHM * fwhm)) & (radii <= c - 1) & (counts > 0)
    if use.sum() < 4 or not profile[0] > 0:
        return None
    x, y, w = radii[use], profile[use], counts[use]  # ring-mean noise ∝ 1/√pixels: weights ∝ pixels
    alpha = np.geomspace(0.25 * max(fwhm, 0.5), 4.0 * max(fwhm, 0.5), 60)[:, None, None]
    beta = np.linspace(1.05, 8.0, 70)[None, :, None]
    shape = (1.0 + (x / alpha) ** 2) ** (-beta)  # (60, 70, n_r)
    sw, swy = w.sum(), (w * y).sum()
    swb, swbb, swby = (w * shape).sum(-1), (w * shape * shape).sum(-1), (w * shape * y).sum(-1)
    det = swbb * sw - swb**2
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = (swby * sw - swb * swy) / det
        pedestal = (swbb * swy - swb * swby) / det
        chi2 = (w * (y - amp[..., None] * shape - pedestal[..., None]) ** 2).sum(-1)
    chi2 = np.where(np.isfinite(chi2) & (amp > 0), chi2, np.inf)
    best = np.unravel_index(int(np.argmin(chi2)), chi2.shape)
    if not np.isfinite(chi2[best]):
        return None
    wings = amp[best] * (1.0 + (r / alpha[best[0], 0, 0]) ** 2) ** (-beta[0, best[1], 0])
    return wings if np.all(np.isfinite(wings)) else None


def regularise_psf_array(psf: np.ndarray):
    """Suppress the pixel noise of an empirical PSF (a stack of noisy stars).

    ZOGY divides by the PSF spectra, so noise in an empirical PSF at the
    0.1 % level rings around every bright star, cosmic ray and hot pixel.
    The noise σ is measured from neighbour differences in the outer ring
    (smooth wings cancel there) and the spectrum is Wiener-shrunk (factor
    max(0, 1 − 4 n² σ² / |P̂|²)). The wings, where the stack is mostly
    noise, are replaced beyond 1.5 FWHM by a Moffat profile fitted to the
    stack's ring means from 1 FWHM out (cosine blend over 1.5 px; a constant
    term takes up residual sky): cutting them off instead
    leaves rings around bright stars and biases fluxes low by the missing
    few per cent. If the fit fails the wings are tapered to 0 (cosine, 2 px)
    beyond the radius where the azimuthal mean falls below 3 σ. The result
    is renormalised. Returns the new PSF (``psf`` itself when it cannot be
    measured) and σ.
    """
    n = psf.shape[0]
    c = n // 2
    y, x = np.indices(psf.shape) - c
    r = np.hypot(x, y)
    outer = r > 0.7 * c
    pairs = outer[:, 1:] & outer[:, :-1]
    if pairs.sum() < 20:
        return psf, float("nan")
    diffs = (psf[:, 1:] - psf[:, :-1])[pairs]
    sigma = neighbour_noise(diffs)
    if not sigma > 0:
        return psf, sigma
    spectrum = np.fft.rfft2(np.fft.ifftshift(psf))
    power = np.maximum(np.abs(spectrum) ** 2, np.finfo(np.float64).tiny)
    shrink = np.clip(1.0 - 4.0 * psf.size * sigma**2 / power, 0.0, 1.0)
    clean = np.fft.fftshift(np.fft.irfft2(spectrum * shrink, s=psf.shape))
    fwhm = measure_fwhm(clean)
    wings = moffat_wings(psf, r, fwhm) if np.isfinite(fwhm) else None
    if wings is not None:
        join = max(_WING_JOIN_FWHM * fwhm, 2.0)
        weight = np.clip((r - join) / 1.5, 0.0, 1.0)
        weight = 0.5 - 0.5 * np.cos(np.pi * weight)
        clean = (1.0 - weight) * clean + weight * wings
    else:
        rings = r.astype(int)
        profile = np.bincount(rings.ravel(), clean.ravel()) / np.bincount(rings.ravel())
        below = np.flatnonzero(profile < 3.0 * sigma)
        edge = float(below[0]) if below.size else float(c)
        ramp = np.clip((edge + 2.0 - r) / 2.0, 0.0, 1.0)
        clean *= 0.5 - 0.5 * np.cos(np.pi * ramp)
    total = clean.sum()
    if not total > 0:
        return psf, sigma
    clean /= total
    return clean, sigma
