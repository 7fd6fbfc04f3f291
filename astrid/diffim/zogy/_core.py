"""ZOGY proper image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27).

Equation numbers in comments and docstrings refer to that paper. Conventions:

- ``N`` is the new (science) image, ``R`` the reference, both background
  subtracted and on the same pixel grid; ``P_n``, ``P_r`` their PSFs, centred
  (centre at ``[n // 2, n // 2]``) and normalised to sum 1, so that P̂(0) = 1.
- The flux zero points are ``F_r = 1`` and ``F_n = flux_ratio`` (the science
  flux of a source divided by its reference flux).
- Fourier transforms are unnormalised DFTs (``scipy.fft`` defaults); sums over
  frequencies are divided by the number of pixels where the paper writes a sum
  over the spectrum, which makes F_S and the variance of S per-pixel quantities.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage

from ... import _utils
from ...errors import AstridInputError, AstridWarning
from . import _kernels

__all__ = [
    "MASK_WARN_FRACTION",
    "ZogyImage",
    "ZogyOptions",
    "ZogyResult",
    "estimate_noise_acf",
    "flux_at",
    "robust_std",
    "subtract",
]

# Fraction of a matching kernel's energy (sum of squares) inside the radius
# used to dilate masks and flag the image edge. Energy rather than absolute
# sum: the noisy wings of empirical PSFs would otherwise inflate the radius
# several-fold (their many faint pixels add up in |k| but not in k²).
_KERNEL_ENERGY_FRACTION = 0.995
# A subtraction whose output mask covers more than this fraction of the image
# warns (its search area is mostly gone); one that covers everything raises.
MASK_WARN_FRACTION = 0.5
# Robust statistics use at most this many pixels (a regular subsample).
_ROBUST_SAMPLE = 250_000
# A PSF is "normalised" when its sum is within this of 1.
_PSF_SUM_TOLERANCE = 1e-3
# Floor of a noise power spectrum built from an estimated autocorrelation, in
# units of σ² (see _noise_psd).
_PSD_FLOOR = 0.01
# The floor for autocorrelations wider than 5×5: such noise was resampled
# from a coarser grid and has almost no power beyond that grid's Nyquist
# frequency, where the matching kernels would divide by the near-zero power
# and ring over tens of pixels (S_corr miscalibrated, the mask dilation as
# wide as the ringing).
_PSD_FLOOR_WIDE = 0.2
_NARROW_ACF = 5


@dataclass
class ZogyResult:
    """Result of :func:`subtract`.

    All images have the shape ``(ny, nx)`` of the inputs. Where :attr:`mask`
    is True the images hold ``fill_value`` (0 by default) and ``flux_err``
    holds NaN.

    Attributes
    ----------
    D : numpy.ndarray
        Proper difference image (eq. 13), in units of its noise: white noise
        of unit variance.
    P_D : numpy.ndarray, shape (m, m)
        PSF of ``D`` (eq. 17), centred, odd size ``m`` (the larger input PSF
        size), sum 1.
    F_D : float
        Flux zero point of ``D`` (eq. 15).
    S : numpy.ndarray
        Proper detection statistic (eq. 16), ``F_D · D ⊗ reversed(P_D)``.
    S_corr : numpy.ndarray
        ``S`` divided by its standard deviation (eq. 25): the background term
        plus source noise (eqs. 26–29) and astrometric noise (eqs. 30–33) when
        given. Unit variance in source-free regions; a value of 5 is a
        5-sigma transient.
    flux : numpy.ndarray
        PSF-photometry flux of a point transient centred on each pixel, in
        science flux units: ``flux_ratio · S / F_S`` (eq. 41; the paper's α
        is in reference units because F_r = 1).
    flux_err : numpy.ndarray
        Its 1-sigma error ``flux_ratio · sqrt(V_S) / F_S`` (eq. 42 with the
        source and astrometric terms of V_S).
    F_S : float
        Flux normalisation of ``S`` (eq. 42), also the background variance of
        ``S`` (per pixel); of the central tile when the PSFs vary (see
        :attr:`tiles`).
    mask : numpy.ndarray of bool
        True where the result must not be trusted: masked or non-finite input
        pixels, dilated by :attr:`mask_radius`, and a band of that width along
        the image edges.
    scorr_std : float
        Robust standard deviation (:func:`astropy.stats.mad_std`) of ``S_corr`` over unmasked
        pixels; close to 1 unless sources or artefacts dominate.
    flux_ratio : float
        F_n used.
    science_sigma : float
        σ_n used (data units).
    reference_sigma : float
        σ_r used (data units).
    astrometric_sigma : tuple of float
        (σ_x, σ_y) used, pixels.
    systematic_fraction : float
        Fractional systematic error ε used (measured with ``"auto"``).
    n_systematic_stars : int
        Stars that measured ε (``"auto"`` only).
    mask_radius : int
        Dilation radius of the mask and width of the edge band, pixels.
    padded_shape : tuple of int
        Shape of the FFT grid.
    n_fft : int
        Number of full-size FFTs (forward and inverse) computed.
    timings : dict
        Wall-clock seconds: ``fft`` (all full-size FFTs), ``spectral`` (the
        fused spectral pass), ``assemble`` (crop, S_corr, flux, mask
        statistics) and ``total``.
    science_noise_acf : numpy.ndarray or None
        The science noise autocorrelation used (normalised, symmetrised).
    reference_noise_acf : numpy.ndarray or None
        The reference noise autocorrelation used (normalised, symmetrised).
    tiles : tuple
        With PSFs that vary over the field, ``(y0, y1, x0, x1, F_S)`` of each
        tile (``P_D`` and ``F_S`` above are those of the central tile);
        empty for a single pass.
    """

    D: np.ndarray
    P_D: np.ndarray
    F_D: float
    S: np.ndarray
    S_corr: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    F_S: float
    mask: np.ndarray
    scorr_std: float
    flux_ratio: float
    science_sigma: float
    reference_sigma: float
    astrometric_sigma: tuple[float, float] = (0.0, 0.0)
    systematic_fraction: float = 0.0
    n_systematic_stars: int = 0
    mask_radius: int = 0
    padded_shape: tuple[int, int] = (0, 0)
    n_fft: int = 0
    timings: dict = field(default_factory=dict)
    science_noise_acf: np.ndarray | None = None
    reference_noise_acf: np.ndarray | None = None
    tiles: tuple = ()

    @property
    def V_S(self) -> np.ndarray:
        """Variance of ``S`` per pixel (the square of the denominator of S_corr).

        Computed from ``flux_err`` on access (NaN where masked), so the
        result does not carry a sixth full-size image.
        """
        F_S = np.full(self.flux_err.shape, self.F_S)
        for y0, y1, x0, x1, tile_fs in self.tiles:
            F_S[y0:y1, x0:x1] = tile_fs
        return np.square(self.flux_err.astype(np.float64) * (F_S / self.flux_ratio))


# ----------------------------------------------------------------------------- checks


def _as_image(name: str, array) -> np.ndarray:
    try:
        out = np.asarray(array)
    except Exception as exc:  # ragged lists and the like
        raise AstridInputError(f"{name}: cannot be read as an array ({exc})") from exc
    if out.ndim != 2:
        raise AstridInputError(f"{name}: must be a 2-D image, got shape {out.shape}")
    if out.shape[0] < 3 or out.shape[1] < 3:
        raise AstridInputError(f"{name}: image of shape {out.shape} is too small (at least 3×3)")
    if not (np.issubdtype(out.dtype, np.floating) or np.issubdtype(out.dtype, np.integer)):
        raise AstridInputError(f"{name}: must be a real-valued image, got dtype {out.dtype}")
    return out


def _check_psf(name: str, psf) -> np.ndarray:
    if psf is None or isinstance(psf, (str, bytes)):
        raise AstridInputError(
            f"{name}: a PSF must be a 2-D array, got {type(psf).__name__} {psf!r}"
        )
    try:
        psf = np.asarray(psf, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AstridInputError(f"{name}: a PSF must be a 2-D array of numbers ({exc})") from exc
    if psf.ndim != 2:
        raise AstridInputError(f"{name}: a PSF must be a 2-D array, got shape {psf.shape}")
    if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise AstridInputError(
            f"{name}: PSF shape {psf.shape} must be odd in both axes (centre at [n//2, n//2])"
        )
    if not np.all(np.isfinite(psf)):
        raise AstridInputError(f"{name}: PSF contains NaN or infinite values")
    total = psf.sum()
    if abs(total - 1.0) > _PSF_SUM_TOLERANCE:
        raise AstridInputError(f"{name}: PSF must be normalised to sum 1, its sum is {total:.6g}")
    return psf


def check_positive(name: str, value) -> float:
    """A finite, positive number (a noise σ, a flux ratio), or an error naming it.

    Parameters
    ----------
    name : str
        The argument's name, for the error message.
    value : float-like
        The value to check.

    Returns
    -------
    float

    Raises
    ------
    AstridInputError
        ``value`` is not a number, not finite or not > 0.
    """
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise AstridInputError(f"{name}: must be a number, got {value!r}") from exc
    if not math.isfinite(out) or out <= 0:
        raise AstridInputError(f"{name}: must be finite and > 0, got {value!r}")
    return out


def check_astrometric(value) -> tuple[float, float]:
    """Registration noise ``(σ_x, σ_y)`` in pixels from a pair or one number for both axes.

    Parameters
    ----------
    value : float or (float, float)
        ``astrometric_sigma`` as given by the caller, pixels.

    Returns
    -------
    (float, float)
        σ_x and σ_y, pixels.

    Raises
    ------
    AstridInputError
        Not one or two finite numbers >= 0.
    """
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.shape != (2,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise AstridInputError(
            f"astrometric_sigma: must be (sigma_x, sigma_y) in pixels, finite and >= 0, got {value!r}"
        )
    return float(values[0]), float(values[1])


def check_map(name: str, array, shape) -> np.ndarray | None:
    """An optional per-pixel map (variance, mask) as an array of the image's shape.

    Parameters
    ----------
    name : str
        The argument's name, for the error message.
    array : array_like or None
        The map; None passes through.
    shape : tuple of int
        The image shape ``(ny, nx)`` it must have.

    Returns
    -------
    numpy.ndarray or None

    Raises
    ------
    AstridInputError
        The shape differs.
    """
    if array is None:
        return None
    out = np.asarray(array)
    if out.shape != shape:
        raise AstridInputError(f"{name}: shape {out.shape} does not match the image shape {shape}")
    return out


def as_aligned_pair(*, reference, science) -> tuple[np.ndarray, np.ndarray]:
    """Reference and science as validated 2-D real arrays on the same grid.

    Parameters
    ----------
    reference, science : array_like, shape (ny, nx)
        The two images, by keyword (a positional call raises TypeError
        rather than exchanging them).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(reference, science)``, not copied when already arrays.

    Raises
    ------
    AstridInputError
        Either is not a 2-D real image of at least 3×3 pixels, or their
        shapes differ.
    """
    N = _as_image("science", science)
    R = _as_image("reference", reference)
    if N.shape != R.shape:
        raise AstridInputError(
            f"science shape {N.shape} and reference shape {R.shape} differ: align them first"
        )
    return R, N


def check_dtype(dtype) -> np.dtype:
    """The storage and FFT precision of a subtraction: float32 or float64.

    Parameters
    ----------
    dtype : numpy dtype-like

    Returns
    -------
    numpy.dtype

    Raises
    ------
    AstridInputError
        Any other dtype.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise AstridInputError(f"dtype: must be float32 or float64, got {dtype}")
    return dtype


# ----------------------------------------------------------------------------- helpers


def _psf_to_fft_origin(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad a centred PSF to ``shape`` with its centre pixel at [0, 0] (wrapped)."""
    out = np.zeros(shape, dtype=psf.dtype)
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    rows = (np.arange(psf.shape[0]) - cy) % shape[0]
    cols = (np.arange(psf.shape[1]) - cx) % shape[1]
    out[np.ix_(rows, cols)] = psf
    return out


def _stamp_rfft2(stamp: np.ndarray, grid: tuple[int, int], dtype, workers) -> np.ndarray:
    """``rfft2`` of a small stamp zero-padded to ``grid``, its pixel ``[m // 2, n // 2]`` at [0, 0].

    Same result as ``rfft2(_psf_to_fft_origin(stamp, grid))``, about twice as
    fast: the first pass (along x) runs over the stamp's few rows only, the
    second (along y) over the full grid.
    """
    ny, nx = grid
    # A stamp larger than the grid (tiny images) is cropped about its centre.
    cy, cx = stamp.shape[0] // 2, stamp.shape[1] // 2
    hy, hx = min(cy, (ny - 1) // 2), min(cx, (nx - 1) // 2)
    stamp = stamp[cy - hy : cy + hy + 1, cx - hx : cx + hx + 1]
    my, mx = stamp.shape
    rows = np.zeros((my, nx), dtype=dtype)
    rows[:, (np.arange(mx) - mx // 2) % nx] = stamp
    spectrum = np.zeros((ny, nx // 2 + 1), dtype=np.result_type(dtype, np.complex64))
    spectrum[(np.arange(my) - my // 2) % ny] = scipy.fft.rfft(rows, axis=1, workers=workers)
    return scipy.fft.fft(spectrum, axis=0, workers=workers, overwrite_x=True)


def _check_acf(name: str, acf) -> np.ndarray | None:
    """A noise autocorrelation kernel, normalised to 1 at its centre and symmetrised."""
    if acf is None:
        return None
    acf = np.asarray(acf, dtype=np.float64)
    if acf.ndim != 2 or acf.shape[0] % 2 == 0 or acf.shape[1] % 2 == 0:
        raise AstridInputError(
            f"{name}: must be a 2-D array of odd sizes (lag 0 at the centre), got shape {acf.shape}"
        )
    if not np.all(np.isfinite(acf)):
        raise AstridInputError(f"{name}: contains NaN or infinite values")
    centre = acf[acf.shape[0] // 2, acf.shape[1] // 2]
    if not centre > 0:
        raise AstridInputError(
            f"{name}: the value at lag 0 (the centre) must be positive, got {centre}"
        )
    acf = acf / centre
    return 0.5 * (acf + acf[::-1, ::-1])  # an autocorrelation is point-symmetric


def _noise_psd(acf: np.ndarray, variance: float, grid, dtype) -> np.ndarray:
    """Noise power spectrum σ² ρ̂(f) on the rfft2 half-grid of ``grid`` (real).

    A truncated, estimated autocorrelation can give a slightly negative
    spectrum at some frequencies; it is floored at 1 % of σ², which only
    matters where the PSFs carry almost no power. Evaluated lag by lag (a
    5×5 autocorrelation has 13 distinct terms), cheaper than a full FFT.
    """
    cy, cx = acf.shape[0] // 2, acf.shape[1] // 2
    # The autocorrelation is point-symmetric: fold each lag d with -d
    # (cos is even), keeping the upper half-plane with doubled weights.
    dy, dx = np.indices(acf.shape)
    dy, dx = (dy - cy).ravel(), (dx - cx).ravel()
    upper = (dy > 0) | ((dy == 0) & (dx >= 0))
    dy, dx = dy[upper], dx[upper]
    rho = acf[dy + cy, dx + cx].astype(np.float64) * np.where((dy == 0) & (dx == 0), 1.0, 2.0)
    keep = rho != 0
    dy, dx, rho = dy[keep], dx[keep], rho[keep]
    phase_y = 2 * np.pi * np.outer(np.arange(grid[0]), dy) / grid[0]
    phase_x = 2 * np.pi * np.outer(np.arange(grid[1] // 2 + 1), dx) / grid[1]
    # Always evaluated in float64 (one compiled kernel, not one per output type), then cast.
    out = np.empty((grid[0], grid[1] // 2 + 1), dtype=np.float64)
    _kernels.noise_psd(
        np.cos(phase_y),
        np.sin(phase_y),
        np.cos(phase_x),
        np.sin(phase_x),
        rho,
        float(variance),
        _PSD_FLOOR if max(acf.shape) <= _NARROW_ACF else _PSD_FLOOR_WIDE,
        out,
    )
    return out.astype(dtype, copy=False)


def _flux_zero_point(f_n, f_r, var_n, var_r, acf_n, acf_r) -> float:
    """F_D (eq. 15), with the zero-frequency noise power Φ(0) = σ² Σρ for correlated noise."""
    noise_n = var_n * (1.0 if acf_n is None else max(acf_n.sum(), _PSD_FLOOR))
    noise_r = var_r * (1.0 if acf_r is None else max(acf_r.sum(), _PSD_FLOOR))
    return f_r * f_n / math.sqrt(noise_n * f_r**2 + noise_r * f_n**2)


@dataclass
class _SmallKernels:
    P_D: np.ndarray  # centred, odd size, sum 1
    k_n: np.ndarray  # origin convention, small grid
    k_r: np.ndarray
    radius: int


def _enclosed_radius(kernel_centred: np.ndarray, fraction: float) -> int:
    """Smallest integer radius around the centre that encloses ``fraction`` of Σ|kernel|."""
    ny, nx = kernel_centred.shape
    yy, xx = np.indices((ny, nx))
    r = np.hypot(yy - ny // 2, xx - nx // 2).ravel()
    weight = np.abs(kernel_centred).ravel()
    order = np.argsort(r, kind="stable")
    cumulative = np.cumsum(weight[order])
    index = np.searchsorted(cumulative, fraction * cumulative[-1])
    return int(math.ceil(r[order][min(index, r.size - 1)]))


def _small_kernels(Pn, Pr, f_n, f_r, var_n, var_r, acf_n=None, acf_r=None) -> _SmallKernels:
    """P_D, k_n and k_r on a grid twice the PSF size (cheap; their support is PSF-sized).

    The full-grid computation of S is exact; these small versions give the
    returned P_D, the kernels squared for the source-noise term (eqs. 26–29),
    and the kernel support that sets the mask dilation.
    """
    m = max(Pn.shape[0], Pn.shape[1], Pr.shape[0], Pr.shape[1])
    if acf_n is not None:
        m = max(m, *acf_n.shape)
    if acf_r is not None:
        m = max(m, *acf_r.shape)
    M = scipy.fft.next_fast_len(2 * m + 1, real=True)
    grid = (M, M)
    pn = scipy.fft.rfft2(_psf_to_fft_origin(Pn, grid))
    pr = scipy.fft.rfft2(_psf_to_fft_origin(Pr, grid))
    pn2 = np.abs(pn) ** 2
    pr2 = np.abs(pr) ** 2
    noise_n = var_n if acf_n is None else _noise_psd(acf_n, var_n, grid, np.float64)
    noise_r = var_r if acf_r is None else _noise_psd(acf_r, var_r, grid, np.float64)
    den = noise_n * f_r**2 * pr2 + noise_r * f_n**2 * pn2
    ok = den > 1e-300
    safe = np.where(ok, den, 1.0)
    F_D = _flux_zero_point(f_n, f_r, var_n, var_r, acf_n, acf_r)
    pd_hat = np.where(ok, f_r * f_n * pr * pn / (F_D * np.sqrt(safe)), 0)  # eq. 17
    kn_hat = np.where(ok, f_n * f_r**2 * np.conj(pn) * pr2 / safe, 0)  # eq. 29
    kr_hat = np.where(ok, f_r * f_n**2 * np.conj(pr) * pn2 / safe, 0)  # eq. 28
    k_n = scipy.fft.irfft2(kn_hat, s=grid)
    k_r = scipy.fft.irfft2(kr_hat, s=grid)
    P_D = np.fft.fftshift(scipy.fft.irfft2(pd_hat, s=grid))
    c, h = M // 2, m // 2
    P_D = P_D[c - h : c + h + 1, c - h : c + h + 1]
    P_D = P_D / P_D.sum()
    radius = 1 + max(
        _enclosed_radius(np.fft.fftshift(k_n) ** 2, _KERNEL_ENERGY_FRACTION),
        _enclosed_radius(np.fft.fftshift(k_r) ** 2, _KERNEL_ENERGY_FRACTION),
    )
    return _SmallKernels(P_D=P_D, k_n=k_n, k_r=k_r, radius=radius)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) dilation by ``radius`` pixels; O(N) whatever the radius."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    rows = np.empty(mask.shape, dtype=bool)
    _kernels.dilate_rows(np.ascontiguousarray(mask, dtype=bool), int(radius), rows)
    out = np.empty(mask.shape, dtype=bool)
    _kernels.dilate_columns(rows, int(radius), out)
    return out


def bad_pixels(N, R, mask, variances) -> np.ndarray:
    """Pixels no subtraction may use: non-finite in either image or a variance map, or masked.

    Symmetric in the two images (so their order does not matter).

    Parameters
    ----------
    N, R : numpy.ndarray, shape (ny, nx)
        The two images.
    mask : array_like of bool, shape (ny, nx), or None
        The caller's mask (True: do not use).
    variances : iterable of numpy.ndarray or None
        Variance maps of the images, shape (ny, nx); None entries are skipped.

    Returns
    -------
    numpy.ndarray of bool, shape (ny, nx)

    Raises
    ------
    AstridInputError
        No pixel is left.
    """
    bad = ~np.isfinite(N)
    bad |= ~np.isfinite(R)
    if mask is not None:
        bad |= mask.astype(bool)
    for V in variances:
        if V is not None:
            bad |= ~np.isfinite(V)
    if bad.all():
        raise AstridInputError("science/reference: no pixel is finite and unmasked in both images")
    return bad


def untrusted(bad: np.ndarray, radius: int) -> np.ndarray:
    """The output mask of a subtraction: ``bad`` dilated by ``radius`` and an edge band that wide.

    Parameters
    ----------
    bad : numpy.ndarray of bool, shape (ny, nx)
        Unusable input pixels (see :func:`bad_pixels`).
    radius : int
        Square (Chebyshev) dilation radius and edge-band width, pixels.

    Returns
    -------
    numpy.ndarray of bool, shape (ny, nx)
        A new array; True where the result must not be trusted.
    """
    out = _dilate(bad, radius)
    if radius > 0:
        out[:radius, :] = True
        out[-radius:, :] = True
        out[:, :radius] = True
        out[:, -radius:] = True
    return out


def check_mask_fraction(out_mask, bad, repaired, radius, caller) -> float:
    """Refuse a result with no trusted pixel; warn when more than ``MASK_WARN_FRACTION`` is masked.

    Parameters
    ----------
    out_mask : numpy.ndarray of bool, shape (ny, nx)
        The output mask (see :func:`untrusted`).
    bad, repaired : numpy.ndarray of bool, shape (ny, nx)
        Unusable input pixels and isolated pixels filled from their
        neighbours, to explain the fraction in the message.
    radius : int
        The dilation radius used, pixels.
    caller : str
        Name of the subtraction, e.g. ``"zogy.subtract"``, for the message.

    Returns
    -------
    float
        The masked fraction of the result.

    Raises
    ------
    AstridInputError
        Every pixel is masked.

    Warns
    -----
    AstridWarning
        More than :data:`MASK_WARN_FRACTION` is masked (attributed to the
        caller of the subtraction, ``stacklevel=3``).
    """
    fraction = float(out_mask.mean())
    if fraction < MASK_WARN_FRACTION:
        return fraction
    why = (
        f"{100.0 * float(bad.mean()):.2f} % of the input pixels are masked or non-finite and cannot be "
        f"repaired, each dilated by the kernel radius of {radius} px (plus an edge band that wide)"
    )
    if repaired.any():
        why += f"; {int(repaired.sum())} isolated NaN pixels were filled from their neighbours"
    if out_mask.all():
        raise AstridInputError(
            f"{caller}: no pixel of the result can be trusted ({why}); unmask or repair the images, "
            "or pass a smaller mask_radius"
        )
    warnings.warn(
        f"{caller}: {100.0 * fraction:.1f} % of the result is masked (more than "
        f"{100.0 * MASK_WARN_FRACTION:.0f} %): {why}",
        AstridWarning,
        stacklevel=3,
    )
    return fraction


def robust_std(values: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Robust σ (MAD as σ) of the finite, unmasked values of an image, on a subsample.

    The image-level form of :func:`astropy.stats.mad_std` that ZOGY uses for
    :attr:`ZogyResult.scorr_std` and the noise-correlation estimate: it takes
    a mask, ignores non-finite values, and uses a regular subsample of at
    most about 250 000 pixels, enough for a statistical error of about
    0.25 %.

    Parameters
    ----------
    values : array_like
        Values of any shape (an image, data units).
    mask : array_like of bool, optional
        Same shape as ``values``; True where a value must be ignored.

    Returns
    -------
    float
        The robust standard deviation (units of ``values``), NaN when no
        value is finite and unmasked.
    """
    values = np.asarray(values).ravel()
    # Subsample before selecting, so a 4096² image costs a quarter-million-pixel pass.
    step = max(values.size // _ROBUST_SAMPLE, 1)
    sample = values[::step]
    good = np.isfinite(sample)
    if mask is not None:
        good &= ~np.asarray(mask).ravel()[::step]
    sample = sample[good]
    if sample.size == 0:
        return float("nan")
    return _utils.robust_std(sample.astype(np.float64))


def _systematic_excess(SN_pad, SR_pad, Vsrc_pad, mask, offset, F_S, min_snr=50.0) -> np.ndarray:
    """Fractional excess residuals of the bright static stars in one image or tile.

    ``mask`` is the output region (True: untrusted), which starts at
    ``offset`` (y, x) in the padded planes.
    """
    ny, nx = mask.shape
    oy, ox = offset
    inner = (slice(oy, oy + ny), slice(ox, ox + nx))
    SN, SR = SN_pad[inner], SR_pad[inner]
    both = np.minimum(SN, SR)
    # V(S) >= F_S, so this cut keeps every star that passes the exact one below.
    ys, xs = np.nonzero((both > min_snr * math.sqrt(F_S)) & ~mask)
    keep = (ys > 0) & (ys < ny - 1) & (xs > 0) & (xs < nx - 1)
    ys, xs = ys[keep], xs[keep]
    if ys.size == 0:
        return np.zeros(0)
    centre = both[ys, xs]
    is_peak = np.ones(ys.size, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_peak &= centre >= both[ys + dy, xs + dx]
    ys, xs = ys[is_peak], xs[is_peak]
    variance = np.full(ys.size, F_S)
    if Vsrc_pad is not None:
        variance += np.maximum(Vsrc_pad[inner][ys, xs], 0.0)
    sn = SN[ys, xs].astype(np.float64)
    bright = sn > min_snr * np.sqrt(variance)
    ys, xs, sn, variance = ys[bright], xs[bright], sn[bright], variance[bright]
    residual = np.zeros(ys.size)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            diff = np.abs(SN[ys + dy, xs + dx].astype(np.float64) - SR[ys + dy, xs + dx])
            residual = np.maximum(residual, diff)
    return np.sqrt(np.maximum((residual / sn) ** 2 - variance / sn**2, 0.0))


def _systematic_from(excess: np.ndarray, min_stars: int = 5) -> tuple[float, int]:
    """ε (``systematic_fraction="auto"``) from the stars' excess residuals, and their number."""
    if excess.size < min_stars:
        return 0.0, int(excess.size)
    # At a static star S_N ≈ S_R, so the term there is 2 ε² S_N².
    return _utils.robust_std_about(excess) / math.sqrt(2.0), int(excess.size)


def _tile_mosaic(data, mask, max_pixels, gap, tile=128):
    """Tiles spread evenly over ``data``, packed into one array with masked gaps between them.

    The gaps (``gap`` px, masked) keep lagged products and filters from
    pairing pixels of different tiles. Returns the mosaic (float64, 0 where
    bad) and its bad-pixel mask.
    """
    ny, nx = data.shape
    th, tw = min(tile, ny), min(tile, nx)
    wanted = max(1, max_pixels // (th * tw))
    ky = min(max(1, int(math.ceil(math.sqrt(wanted)))), ny // th)
    kx = min(max(1, int(math.ceil(wanted / ky))), nx // tw)
    ys = np.linspace(0, ny - th, ky).round().astype(int)
    xs = np.linspace(0, nx - tw, kx).round().astype(int)
    image = np.zeros((ky * (th + gap), kx * (tw + gap)))
    bad = np.ones(image.shape, dtype=bool)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            block = np.asarray(data[y : y + th, x : x + tw], dtype=np.float64)
            block_bad = ~np.isfinite(block)
            if mask is not None:
                block_bad |= mask[y : y + th, x : x + tw]
            oy, ox = i * (th + gap), j * (tw + gap)
            image[oy : oy + th, ox : ox + tw] = np.where(block_bad, 0.0, block)
            bad[oy : oy + th, ox : ox + tw] = block_bad
    return image, bad


def estimate_noise_acf(
    data, mask=None, size: int = 5, max_pixels: int = 512 * 512
) -> np.ndarray | None:
    """Normalised autocorrelation of an image's background noise, for correlated-noise ZOGY.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Background-subtracted image (data units); NaN allowed.
    mask : array_like of bool, shape (ny, nx), optional
        Pixels to ignore.
    size : int, optional
        Odd side of the returned kernel: lags up to ``size // 2`` pixels.
        Resampling and drizzling correlate neighbours over 1–2 pixels.
    max_pixels : int, optional
        The estimate uses at most this many pixels, in 128×128 tiles spread
        evenly over the image (the correlation left by resampling varies
        over a rotated field). The default quarter million gives lag
        correlations to about ±0.004.

    Returns
    -------
    numpy.ndarray, shape (size, size), or None
        The autocorrelation ρ(dy, dx) with ρ(0, 0) = 1, or None when fewer
        than 10 000 pixels are free of sources and masks.

    Notes
    -----
    Sources would add their own (large-scale, positive) correlation, so
    pixels above 5 robust sigma, or whose 5×5 mean is above 4 robust sigma
    of the 5×5-mean image, are masked and the mask is dilated by 4 pixels.
    Lower thresholds would mask the large excursions of the correlated
    noise itself and bias the estimate low.
    """
    if int(size) != size or size < 1 or size % 2 == 0:
        raise AstridInputError(f"size: must be an odd positive integer, got {size!r}")
    data = _as_image("data", data)
    user_mask = None if mask is None else check_map("mask", mask, data.shape).astype(bool)
    image, bad = _tile_mosaic(data, user_mask, int(max_pixels), gap=size + 4)
    sigma = robust_std(image, bad)
    if not sigma > 0:
        return None
    smooth = ndimage.uniform_filter(image, 5, mode="reflect")
    # Thresholds high enough that pure noise is almost never masked: masking
    # the large excursions of correlated noise would bias the estimate low.
    sources = (np.abs(image) > 5 * sigma) | (np.abs(smooth) > 4 * robust_std(smooth, bad))
    bad = _dilate(bad | sources, 4)
    if np.count_nonzero(~bad) < 10_000:
        return None
    noise = np.where(bad, 0.0, image)
    weight = (~bad).astype(np.float64)
    half = size // 2
    acf = np.zeros((size, size))
    h, w = image.shape
    for dy in range(0, half + 1):
        for dx in range(-half, half + 1):
            if dy == 0 and dx < 0:
                continue  # point symmetry: filled from (0, -dx)
            a = (slice(0, h - dy), slice(max(-dx, 0), w - max(dx, 0)))
            b = (slice(dy, h), slice(max(dx, 0), w - max(-dx, 0)))
            pairs = np.sum(weight[a] * weight[b])
            value = np.sum(noise[a] * noise[b]) / pairs if pairs > 0 else 0.0
            acf[half + dy, half + dx] = value
            acf[half - dy, half - dx] = value
    return acf / acf[half, half]


def _zero_filled(image: np.ndarray, bad: np.ndarray, dtype) -> np.ndarray:
    """A ``dtype`` copy of ``image`` with ``bad`` pixels set to 0 (the background)."""
    out = image.astype(dtype)  # always a copy
    out[bad] = 0
    return out


def _pad_reflect(image: np.ndarray, pad: tuple[int, int, int, int], dtype) -> np.ndarray:
    top, bottom, left, right = pad
    return np.pad(image.astype(dtype, copy=False), ((top, bottom), (left, right)), mode="reflect")


# ----------------------------------------------------------------------------- subtract


@dataclass(frozen=True, eq=False)
class ZogyImage:
    """One image of a ZOGY pair with its PSF and noise model.

    :func:`subtract` takes one for the reference and one for the science
    image, as keywords, so the two can never be exchanged by position.
    Nothing is checked or copied here; :func:`subtract` validates every field
    and names the image in its errors (``science_sigma``, ``reference_psf``...).

    Attributes
    ----------
    data : array_like, shape (ny, nx)
        Background-subtracted pixels in the image's own data units, on the
        same grid as the other image. NaN and infinite pixels are allowed
        (masked).
    psf : array_like, shape (m, m), or callable
        PSF: odd sizes, centred at ``[m // 2, m // 2]``, normalised to sum 1
        (within 1e-3). For a PSF that varies over the field, a callable
        ``psf(x, y) -> array`` (0-based pixel position, e.g.
        :meth:`astrid.PSFModel.at`): the images are then processed in tiles
        of about :attr:`ZogyOptions.tile_size` pixels, each with the PSFs at
        its centre and with real data around it for the kernels' support.
    sigma : float
        Background noise σ (data units, > 0): the white noise of the paper.
    variance : array_like, shape (ny, nx), optional
        Full per-pixel variance (data units²). Its excess over σ², floored at
        0, is the source noise V_N or V_R of eqs. 26–29.
    noise_acf : array_like, shape (k, k), optional
        Normalised autocorrelation of the background noise (lag 0 at the
        centre, odd size; see :func:`estimate_noise_acf`) for an image whose
        noise is correlated between pixels (drizzled, resampled or stacked).
        σ² is then replaced by the noise power spectrum Φ(f) = σ² ρ̂(f) in
        eqs. 13–17 and 28–29, which keeps D white and S_corr at unit
        variance (no extra FFT: the spectrum is evaluated from the few lags
        directly). The spectrum is floored at 1 % of σ², or 20 % for kernels
        wider than 5×5 (noise resampled from a coarser grid, with almost no
        power beyond that grid's Nyquist frequency).
    """

    data: Any
    psf: Any
    sigma: float
    variance: Any = None
    noise_acf: Any = None


@dataclass(frozen=True)
class ZogyOptions:
    """Settings of :func:`subtract` that are not properties of either image.

    Like :class:`ZogyImage`, nothing is checked here: :func:`subtract`
    validates every field and names it in its errors.

    Attributes
    ----------
    astrometric_sigma : (float, float) or float
        Registration noise (σ_x, σ_y) in pixels (eqs. 30–33). Zero turns the
        term off (and saves one FFT).
    systematic_fraction : float or "auto"
        Fractional systematic error ε of the PSF models and flux ratio: adds
        2 ε² min(S_N², S_R²) to V(S), like the astrometric term, so that the
        residuals of bright static sources (a PSF that varies over the field,
        an imperfect PSF estimate) are not significant. The minimum is the
        part of the signal common to both images: a new or vanished source
        adds nothing, a transient on a bright galaxy core or star is
        penalised only by the core's or star's signal. ``"auto"`` measures ε
        on the image: at peaks that have S/N > 50 in both S_N and S_R
        (static sources), the largest |S| within 1 px divided by S_N, minus
        the expected noise in quadrature; ε is the median over them as a half-normal σ,
        divided by √2 (0 with fewer than 5). Default 0 (the paper's
        statistic). Any non-zero value costs one FFT (S_N and S_R apart).
    mask_radius : int or None
        Dilation of the bad-pixel mask and width of the flagged edge band, in
        pixels. None (default): one more than the radius enclosing 99.5 % of
        the energy (Σ k²) of the matching kernels k_n and k_r (1.3–1.5 FWHM
        of the broader PSF for Gaussian PSFs).
    fill_value : float
        Value of ``D``, ``S``, ``S_corr`` and ``flux`` in masked pixels
        (0 keeps peak finders and CNN stamps free of NaN; use ``numpy.nan``
        to make masked pixels explicit).
    tile_size : int
        Side of the tiles, in pixels, when a PSF is a callable (default 512;
        at least 64). Ignored for fixed PSFs.
    dtype : {numpy.float64, numpy.float32}
        Storage and FFT precision. float32 halves memory and is about twice
        as fast; spectral arithmetic is done in float64 either way.
    workers : int or None
        Threads for ``scipy.fft`` (default: all cores).
    """

    astrometric_sigma: Any = (0.0, 0.0)
    systematic_fraction: Any = 0.0
    mask_radius: int | None = None
    fill_value: float = 0.0
    tile_size: int = 512
    dtype: Any = np.float64
    workers: int | None = None


@dataclass(frozen=True, eq=False)
class _Inputs:
    """The validated inputs of :func:`subtract`, after the repair of isolated bad pixels."""

    N: np.ndarray
    R: np.ndarray
    tiles: list  # (y0, y1, x0, x1) of each tile; one for fixed PSFs
    psfs: list  # (P_n, P_r) of each tile
    acf_n: np.ndarray | None
    acf_r: np.ndarray | None
    sigma_n: float
    sigma_r: float
    f_n: float
    ast_x: float
    ast_y: float
    systematic: float  # 0 until measured when ``auto_systematic``
    auto_systematic: bool
    Vn: np.ndarray | None
    Vr: np.ndarray | None
    bad: np.ndarray  # masked or non-finite and not repaired
    repaired: np.ndarray  # isolated pixels filled from their neighbours
    mask_radius: int | None
    dtype: np.dtype
    workers: int
    fill_value: float


@dataclass(frozen=True, eq=False)
class _Pass:
    """What every FFT pass of one subtraction shares: the noise model and the grid."""

    f_n: float
    var_n: float
    var_r: float
    acf_n: np.ndarray | None
    acf_r: np.ndarray | None
    split: bool  # S_N and S_R apart (astrometric or systematic term)
    pad: int
    grid: tuple[int, int]
    dtype: np.dtype
    workers: int
    f_r: float = 1.0


@dataclass(frozen=True, eq=False)
class _Tile:
    """The pixels of one pass (an image or a tile with its margin) and its PSFs and kernels."""

    N: np.ndarray
    R: np.ndarray
    bad: np.ndarray
    Pn: np.ndarray
    Pr: np.ndarray
    kernels: _SmallKernels
    Vn: np.ndarray | None
    Vr: np.ndarray | None


@dataclass
class _Planes:
    """Padded full-grid results of one ZOGY pass over an image or one tile of it."""

    D_pad: np.ndarray
    SN_pad: np.ndarray  # S_N (or S itself when not split)
    SR_pad: np.ndarray  # S_R (the same array as SN_pad when not split)
    Vsrc_pad: np.ndarray  # V_N ⊗ k_n² + V_R ⊗ k_r², or a (1, 1) dummy
    has_source: bool
    F_S: float
    n_fft: int
    fft_seconds: float
    spectral_seconds: float


class _FFTs:
    """Full-size FFTs of one pass, counted and timed."""

    def __init__(self, grid: tuple[int, int], dtype, workers):
        self.grid, self.dtype, self.workers = grid, dtype, workers
        self.count = 0
        self.seconds = 0.0

    def _counted(self, transform, *args, **kwargs):
        start = time.perf_counter()
        out = transform(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.count += 1
        return out

    def forward(self, array):
        return self._counted(scipy.fft.rfft2, array, workers=self.workers)

    def forward_stamp(self, stamp):
        return self._counted(
            _stamp_rfft2, stamp.astype(self.dtype), self.grid, self.dtype, self.workers
        )

    def inverse(self, spectrum):
        # Every spectrum is dead after its inverse: let pocketfft work in it.
        return self._counted(
            scipy.fft.irfft2, spectrum, s=self.grid, workers=self.workers, overwrite_x=True
        )


def _planes(tile: _Tile, run: _Pass) -> _Planes:
    """One ZOGY pass: D, S_N, S_R (or S) and the source-noise map on the padded grid.

    ``tile.N`` and ``tile.R`` (and the variance maps) are the image or tile to
    process; it is zero-filled where ``tile.bad`` and reflected into a border
    of ``run.pad`` pixels on the FFT grid ``run.grid``.
    """
    N, R, bad, dtype, pad = tile.N, tile.R, tile.bad, run.dtype, run.pad
    shape = N.shape
    py, px = run.grid
    padding = (pad, py - shape[0] - pad, pad, px - shape[1] - pad)
    ffts = _FFTs(run.grid, dtype, run.workers)

    any_bad = bool(bad.any())
    # One zero-filled copy at a time: it is dead once its FFT is taken.
    N_hat = ffts.forward(
        _pad_reflect(_zero_filled(N, bad, dtype) if any_bad else N, padding, dtype)
    )
    R_hat = ffts.forward(
        _pad_reflect(_zero_filled(R, bad, dtype) if any_bad else R, padding, dtype)
    )
    Pn_hat = ffts.forward_stamp(tile.Pn)
    Pr_hat = ffts.forward_stamp(tile.Pr)
    psd_dummy = np.zeros((1, 1), dtype=dtype)
    psd_n = psd_dummy
    psd_r = psd_dummy
    if run.acf_n is not None:
        psd_n = _noise_psd(run.acf_n, run.var_n, run.grid, dtype)
    if run.acf_r is not None:
        psd_r = _noise_psd(run.acf_r, run.var_r, run.grid, dtype)
    last_col_weight = 1.0 if px % 2 == 0 else 2.0
    start = time.perf_counter()
    fs_sum = _kernels.zogy_spectra(
        (N_hat, R_hat, Pn_hat, Pr_hat),
        (psd_n, psd_r),
        (run.f_n, run.f_r, run.var_n, run.var_r),
        (run.acf_n is not None, run.acf_r is not None),
        last_col_weight,
        run.split,
    )
    spectral_seconds = time.perf_counter() - start
    del psd_n, psd_r
    F_S = fs_sum / (py * px)  # eq. 42
    D_pad = ffts.inverse(N_hat)
    del N_hat
    if run.split:
        SN_pad = ffts.inverse(Pn_hat)
        SR_pad = ffts.inverse(Pr_hat)
    else:
        SN_pad = ffts.inverse(R_hat)
        SR_pad = SN_pad
    del R_hat, Pn_hat, Pr_hat

    has_source = tile.Vn is not None or tile.Vr is not None
    if has_source:
        Vsrc_pad = _source_variance(tile, run, padding, ffts)
    else:
        Vsrc_pad = np.zeros((1, 1), dtype=dtype)
    return _Planes(
        D_pad=D_pad,
        SN_pad=SN_pad,
        SR_pad=SR_pad,
        Vsrc_pad=Vsrc_pad,
        has_source=has_source,
        F_S=F_S,
        n_fft=ffts.count,
        fft_seconds=ffts.seconds,
        spectral_seconds=spectral_seconds,
    )


def _source_variance(tile: _Tile, run: _Pass, padding, ffts: _FFTs) -> np.ndarray:
    """Source noise (eqs. 26-29): (V - σ²)+ ⊗ k² of both images through one inverse FFT."""
    dtype = run.dtype
    spectra = []
    terms = ((tile.Vn, run.var_n, tile.kernels.k_n), (tile.Vr, run.var_r, tile.kernels.k_r))
    for V, var, k in terms:
        if V is None:
            spectra.append((None, None))
            continue
        excess = np.asarray(V).astype(dtype)  # a copy, modified in place
        excess -= dtype.type(var)
        excess[tile.bad | ~(excess > 0)] = 0
        V_hat = ffts.forward(_pad_reflect(excess, padding, dtype))
        del excess
        k2_hat = ffts.forward_stamp(np.fft.fftshift(k * k))
        spectra.append((V_hat, k2_hat))
    (Vn_hat, kn2_hat), (Vr_hat, kr2_hat) = spectra
    has_n, has_r = Vn_hat is not None, Vr_hat is not None
    dummy = np.zeros((1, 1), dtype=np.complex64 if dtype == np.float32 else np.complex128)
    _kernels.kernel_squares_product(
        Vn_hat if has_n else dummy,
        kn2_hat if has_n else dummy,
        Vr_hat if has_r else dummy,
        kr2_hat if has_r else dummy,
        has_n,
        has_r,
    )
    return ffts.inverse(Vn_hat if has_n else Vr_hat)


def _tile_bounds(shape, tile_size) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` of a regular grid of tiles about ``tile_size`` pixels on a side."""
    edges = []
    for n in shape:
        count = max(1, int(round(n / tile_size)))
        edges.append(np.linspace(0, n, count + 1).round().astype(int))
    return [
        (int(y0), int(y1), int(x0), int(x1))
        for y0, y1 in zip(edges[0][:-1], edges[0][1:])
        for x0, x1 in zip(edges[1][:-1], edges[1][1:])
    ]


def _psf_for_tile(name, psf, bounds):
    """The PSF array for a tile: ``psf`` itself, or ``psf(x, y)`` at the tile's centre."""
    if callable(psf):
        y0, y1, x0, x1 = bounds
        psf = psf((x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0)
    return _check_psf(name, psf)


def _check_image_roles(reference, science) -> None:
    """Refuse anything but a :class:`ZogyImage` for each role (an array passed the old way)."""
    for role, value in (("reference", reference), ("science", science)):
        if not isinstance(value, ZogyImage):
            raise AstridInputError(
                f"{role}: must be a zogy.ZogyImage(data, psf, sigma, ...), got "
                f"{type(value).__name__}; call subtract(reference=ZogyImage(...), "
                "science=ZogyImage(...))"
            )


def _check_systematic(value) -> tuple[float, bool]:
    """ε and whether it is measured (``"auto"``; ε is then 0 until measured)."""
    message = f"systematic_fraction: must be a number >= 0 or 'auto', got {value!r}"
    if isinstance(value, str):
        if value != "auto":
            raise AstridInputError(message)
        return 0.0, True
    try:
        systematic = float(value)
    except (TypeError, ValueError) as exc:
        raise AstridInputError(message) from exc
    if not math.isfinite(systematic) or systematic < 0:
        raise AstridInputError(message)
    return systematic, False


def _validated(
    reference: ZogyImage, science: ZogyImage, flux_ratio, mask, repaired, options: ZogyOptions
) -> _Inputs:
    """Check every input of :func:`subtract` and repair isolated bad pixels (in that order)."""
    _check_image_roles(reference, science)
    dtype = check_dtype(options.dtype)
    R, N = as_aligned_pair(reference=reference.data, science=science.data)
    shape = N.shape
    tile_size = options.tile_size
    if int(tile_size) != tile_size or tile_size < 64:
        raise AstridInputError(f"tile_size: must be an integer >= 64 pixels, got {tile_size!r}")
    varying = callable(science.psf) or callable(reference.psf)
    tiles = _tile_bounds(shape, int(tile_size)) if varying else [(0, shape[0], 0, shape[1])]
    psfs = [
        (
            _psf_for_tile("science_psf", science.psf, b),
            _psf_for_tile("reference_psf", reference.psf, b),
        )
        for b in tiles
    ]
    acf_n = _check_acf("science_noise_acf", science.noise_acf)
    acf_r = _check_acf("reference_noise_acf", reference.noise_acf)
    sigma_n = check_positive("science_sigma", science.sigma)
    sigma_r = check_positive("reference_sigma", reference.sigma)
    f_n = check_positive("flux_ratio", flux_ratio)
    ast_x, ast_y = check_astrometric(options.astrometric_sigma)
    systematic, auto_systematic = _check_systematic(options.systematic_fraction)
    Vn = check_map("science_variance", science.variance, shape)
    Vr = check_map("reference_variance", reference.variance, shape)
    user_mask = check_map("mask", mask, shape)
    mask_radius = options.mask_radius
    if mask_radius is not None:
        if int(mask_radius) != mask_radius or mask_radius < 0:
            raise AstridInputError(f"mask_radius: must be an integer >= 0, got {mask_radius!r}")
        mask_radius = int(mask_radius)

    bad = bad_pixels(N, R, user_mask, (Vn, Vr))
    # Isolated NaN pixels on smooth sky are filled from their neighbours and
    # cost their own area, not a dilation by the kernel radius each.
    from ..inpaint import repair_for_subtraction  # here: astrid.diffim imports zogy

    already = None if repaired is None else check_map("repaired", repaired, shape).astype(bool)
    (N, R), filled = repair_for_subtraction((N, R), bad, (sigma_n, sigma_r), already)
    return _Inputs(
        N=N,
        R=R,
        tiles=tiles,
        psfs=psfs,
        acf_n=acf_n,
        acf_r=acf_r,
        sigma_n=sigma_n,
        sigma_r=sigma_r,
        f_n=f_n,
        ast_x=ast_x,
        ast_y=ast_y,
        systematic=systematic,
        auto_systematic=auto_systematic,
        Vn=Vn,
        Vr=Vr,
        bad=bad,
        repaired=filled,
        mask_radius=mask_radius,
        dtype=dtype,
        workers=-1 if options.workers is None else int(options.workers),
        fill_value=float(options.fill_value),
    )


@dataclass(frozen=True, eq=False)
class _Layout:
    """How one subtraction is cut into FFT passes: kernels, padding, grid and regions."""

    kernels: list  # _SmallKernels of each tile
    radius: int  # mask dilation and edge band
    regions: list  # (y0, y1, x0, x1) of the data each tile's pass reads
    run: _Pass
    ring: int  # radius of the ring of the systematic term (0: none)


def _layout(inputs: _Inputs) -> _Layout:
    """Kernels, padding, FFT grid and per-tile data regions of a subtraction."""
    var_n, var_r = inputs.sigma_n**2, inputs.sigma_r**2
    f_n, f_r = inputs.f_n, 1.0
    kernels = [
        _small_kernels(Pn, Pr, f_n, f_r, var_n, var_r, inputs.acf_n, inputs.acf_r)
        for Pn, Pr in inputs.psfs
    ]
    kernel_radius = max(k.radius for k in kernels)
    radius = kernel_radius if inputs.mask_radius is None else inputs.mask_radius
    pad = 2 * kernel_radius + 2
    # Each tile is processed with real data up to ``pad`` around it, so its own
    # pixels see the full kernel support, as in a single pass.
    tiles = inputs.tiles
    margin = pad if len(tiles) > 1 else 0
    ny, nx = inputs.N.shape
    regions = [
        (max(y0 - margin, 0), min(y1 + margin, ny), max(x0 - margin, 0), min(x1 + margin, nx))
        for y0, y1, x0, x1 in tiles
    ]
    largest_psf = max(max(Pn.shape + Pr.shape) for Pn, Pr in inputs.psfs)
    # The grid also holds the PSF stamps whole, so their spectra are exact.
    height = max(max(r[1] - r[0] for r in regions) + 2 * pad, largest_psf)
    width = max(max(r[3] - r[2] for r in regions) + 2 * pad, largest_psf)
    py = scipy.fft.next_fast_len(height, real=True)
    px = scipy.fft.next_fast_len(width, real=True)
    split = inputs.ast_x > 0 or inputs.ast_y > 0 or inputs.auto_systematic or inputs.systematic > 0
    # The systematic term follows the compact part of the sources (see
    # _kernels.assemble): the lowest S on a ring of two FWHM of P_D is subtracted.
    ring = 0
    if split:
        from ..psf import measure_fwhm

        width = measure_fwhm(kernels[0].P_D)
        ring = min(max(2, int(round(2.0 * width))), pad - 1) if math.isfinite(width) else 0
    run = _Pass(
        f_n=f_n,
        var_n=var_n,
        var_r=var_r,
        acf_n=inputs.acf_n,
        acf_r=inputs.acf_r,
        split=split,
        pad=pad,
        grid=(py, px),
        dtype=inputs.dtype,
        workers=inputs.workers,
        f_r=f_r,
    )
    return _Layout(kernels=kernels, radius=radius, regions=regions, run=run, ring=ring)


@dataclass(eq=False)
class _Outputs:
    """The full-size result images, filled tile by tile, and the step timings."""

    mask: np.ndarray
    D: np.ndarray
    S: np.ndarray
    S_corr: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    seconds: dict
    n_fft: int = 0

    @classmethod
    def empty(cls, mask: np.ndarray, dtype) -> _Outputs:
        shape = mask.shape
        return cls(
            mask=mask,
            D=np.empty(shape, dtype=dtype),
            S=np.empty(shape, dtype=dtype),
            S_corr=np.empty(shape, dtype=dtype),
            flux=np.empty(shape, dtype=dtype),
            flux_err=np.empty(shape, dtype=dtype),
            seconds={"fft": 0.0, "spectral": 0.0, "assemble": 0.0},
        )


def _assemble_tile(
    out: _Outputs,
    inputs: _Inputs,
    layout: _Layout,
    bounds,
    offset,
    planes: _Planes,
    systematic: float,
    defer: bool = False,
) -> None:
    """Crop one pass's padded planes into the result images (see :func:`_kernels.assemble`)."""
    start = time.perf_counter()
    view = (slice(bounds[0], bounds[1]), slice(bounds[2], bounds[3]))
    _kernels.assemble(
        (planes.D_pad, planes.SN_pad, planes.SR_pad, planes.Vsrc_pad),
        out.mask[view],
        offset,
        (
            planes.F_S,
            inputs.f_n,
            inputs.ast_x**2,
            inputs.ast_y**2,
            systematic**2,
            inputs.fill_value,
        ),
        layout.run.split,
        planes.has_source,
        (out.D[view], out.S[view], out.S_corr[view], out.flux[view], out.flux_err[view]),
        layout.ring,
        defer,
    )
    out.seconds["assemble"] += time.perf_counter() - start


def _run_tiles(out: _Outputs, inputs: _Inputs, layout: _Layout) -> tuple[list, list]:
    """Run the FFT pass of each tile and assemble it; returns each tile's F_S and star excesses.

    With ``systematic_fraction="auto"`` the tiles are assembled without the
    systematic term (deferred) and the excess residuals of their bright stars
    are returned for :func:`_finish_systematic`.
    """
    excess, tile_fs = [], []
    passes = zip(inputs.tiles, layout.regions, inputs.psfs, layout.kernels)
    for bounds, region, (Pn, Pr), kern in passes:
        sy0, sy1, sx0, sx1 = region
        cut = (slice(sy0, sy1), slice(sx0, sx1))
        tile = _Tile(
            N=inputs.N[cut],
            R=inputs.R[cut],
            bad=inputs.bad[cut],
            Pn=Pn,
            Pr=Pr,
            kernels=kern,
            Vn=None if inputs.Vn is None else inputs.Vn[cut],
            Vr=None if inputs.Vr is None else inputs.Vr[cut],
        )
        planes = _planes(tile, layout.run)
        out.n_fft += planes.n_fft
        out.seconds["fft"] += planes.fft_seconds
        out.seconds["spectral"] += planes.spectral_seconds
        tile_fs.append(planes.F_S)
        pad = layout.run.pad
        offset = (pad + bounds[0] - sy0, pad + bounds[2] - sx0)
        if inputs.auto_systematic:
            # ε comes from the bright stars of the whole image: each tile is assembled
            # without it (its planes freed at once) and finished once ε is known.
            excess.append(
                _systematic_excess(
                    planes.SN_pad,
                    planes.SR_pad,
                    planes.Vsrc_pad if planes.has_source else None,
                    out.mask[bounds[0] : bounds[1], bounds[2] : bounds[3]],
                    offset,
                    planes.F_S,
                )
            )
            _assemble_tile(out, inputs, layout, bounds, offset, planes, 0.0, defer=True)
        else:
            _assemble_tile(out, inputs, layout, bounds, offset, planes, inputs.systematic)
        del planes
    return tile_fs, excess


def _finish_systematic(
    out: _Outputs, inputs: _Inputs, tile_fs: list, excess: list
) -> tuple[float, int]:
    """Measure ε from every tile's stars and add the deferred systematic term; (ε, stars used)."""
    systematic, n_stars = _systematic_from(np.concatenate(excess))
    start = time.perf_counter()
    for bounds, tile_F_S in zip(inputs.tiles, tile_fs):
        view = (slice(bounds[0], bounds[1]), slice(bounds[2], bounds[3]))
        _kernels.apply_systematic(
            out.S[view],
            out.mask[view],
            tile_F_S,
            inputs.f_n,
            systematic**2,
            out.S_corr[view],
            out.flux_err[view],
        )
    out.seconds["assemble"] += time.perf_counter() - start
    return systematic, n_stars


def subtract(
    *,
    reference: ZogyImage,
    science: ZogyImage,
    flux_ratio=1.0,
    mask=None,
    repaired=None,
    options: ZogyOptions | None = None,
) -> ZogyResult:
    """ZOGY proper image subtraction of two aligned, background-subtracted images.

    Parameters
    ----------
    reference, science : ZogyImage
        Reference R and new image N with their PSFs P_r, P_n, background
        noise σ_r, σ_n and optional variance maps and noise autocorrelations;
        keyword-only, so the two cannot be exchanged by position (which would
        negate ``D``).
    flux_ratio : float, optional
        F_n / F_r: science flux of a source divided by its reference flux.
    mask : array_like of bool, shape (ny, nx), optional
        True where either image must not be used.
    repaired : array_like of bool, shape (ny, nx), optional
        Pixels the caller already filled from their neighbours (as
        :func:`astrid.difference` does before alignment): flagged in
        :attr:`ZogyResult.mask` on their own footprint, without dilation.
    options : ZogyOptions, optional
        Astrometric and systematic noise terms, mask dilation, fill value,
        tile size, precision and threads (defaults: :class:`ZogyOptions`).

    Returns
    -------
    ZogyResult
        The proper difference, its detection statistics, fluxes and mask.

    Raises
    ------
    AstridInputError
        ``reference`` or ``science`` is not a :class:`ZogyImage`, shapes
        differ, a PSF is not 2-D, odd-sized, finite and normalised, a sigma
        or the flux ratio is not finite and positive, or no pixel is valid
        (none of the input, or none of the result after dilation).

    Warns
    -----
    AstridWarning
        More than :data:`MASK_WARN_FRACTION` (half) of the result is masked.

    Notes
    -----
    Isolated non-finite pixels on smooth sky (at most one bad neighbour,
    neighbours spanning at most 6 σ; see :func:`astrid.difference`) are filled
    with the median of their neighbours and flagged in :attr:`ZogyResult.mask`
    without dilation. The other masked and non-finite pixels (of either image
    or variance map) are set to 0 (the background) in *both* images, so a masked star is removed
    consistently; residuals of the cut remain within about one kernel radius,
    which is why the mask is dilated by ``mask_radius``. The images are
    padded by reflection to an FFT-friendly size (``scipy.fft.next_fast_len``)
    with at least twice the kernel radius, so circular wrap-around never
    reaches valid pixels and stars cut by the edge are continued consistently
    in both images; the band of ``mask_radius`` along the edge, where the
    matched filter sees the mirrored (correlated) noise, is flagged.

    Symmetry: exchanging science and reference (and ``flux_ratio →
    1 / flux_ratio``) gives ``D → −D``, ``S_corr → −S_corr``,
    ``S → −S / flux_ratio`` and ``flux → −flux / flux_ratio`` (the flux is
    then in the other image's units).

    With tiles, ε of the systematic term is measured over the stars of all
    tiles together, and every count below is per tile.

    The number of full-size FFTs is 6 (N̂, R̂, P̂_n, P̂_r, D, S), plus 1 with
    the astrometric or systematic term (S_N and S_R separately), plus 2 for
    each variance map and 1 more with any (V̂ and the FFT of the squared
    kernel, and one shared inverse): 12 with everything.

    Examples
    --------
    >>> from astrid import zogy
    >>> result = zogy.subtract(  # doctest: +SKIP
    ...     reference=zogy.ZogyImage(R, psf_r, sigma_r),
    ...     science=zogy.ZogyImage(N, psf_n, sigma_n),
    ...     flux_ratio=1.2,
    ...     options=zogy.ZogyOptions(systematic_fraction="auto"),
    ... )
    """
    started = time.perf_counter()
    inputs = _validated(
        reference,
        science,
        flux_ratio,
        mask,
        repaired,
        ZogyOptions() if options is None else options,
    )
    layout = _layout(inputs)
    out_mask = untrusted(inputs.bad, layout.radius)
    if inputs.repaired.any():
        out_mask |= inputs.repaired
    check_mask_fraction(out_mask, inputs.bad, inputs.repaired, layout.radius, "zogy.subtract")
    out = _Outputs.empty(out_mask, inputs.dtype)
    tile_fs, excess = _run_tiles(out, inputs, layout)
    systematic, n_systematic_stars = inputs.systematic, 0
    if inputs.auto_systematic:
        systematic, n_systematic_stars = _finish_systematic(out, inputs, tile_fs, excess)
    start = time.perf_counter()
    scorr_std = robust_std(out.S_corr, out.mask)
    out.seconds["assemble"] += time.perf_counter() - start
    out.seconds["total"] = time.perf_counter() - started
    return _result(out, inputs, layout, tile_fs, systematic, n_systematic_stars, scorr_std)


def _result(
    out: _Outputs,
    inputs: _Inputs,
    layout: _Layout,
    tile_fs: list,
    systematic: float,
    n_systematic_stars: int,
    scorr_std: float,
) -> ZogyResult:
    """The :class:`ZogyResult`, with ``P_D`` and ``F_S`` of the central tile."""
    tiles = inputs.tiles
    ny, nx = out.mask.shape

    def distance(i):  # of tile i's centre from the image centre, in half pixels
        y0, y1, x0, x1 = tiles[i]
        return abs(y0 + y1 - ny) + abs(x0 + x1 - nx)

    centre = min(range(len(tiles)), key=distance)
    run = layout.run
    # F_D is eq. 15; P_D and F_S are those of the central tile.
    return ZogyResult(
        D=out.D,
        P_D=layout.kernels[centre].P_D.astype(inputs.dtype),
        F_D=_flux_zero_point(run.f_n, run.f_r, run.var_n, run.var_r, run.acf_n, run.acf_r),
        S=out.S,
        S_corr=out.S_corr,
        flux=out.flux,
        flux_err=out.flux_err,
        F_S=tile_fs[centre],
        mask=out.mask,
        scorr_std=scorr_std,
        flux_ratio=inputs.f_n,
        science_sigma=inputs.sigma_n,
        reference_sigma=inputs.sigma_r,
        astrometric_sigma=(inputs.ast_x, inputs.ast_y),
        systematic_fraction=systematic,
        n_systematic_stars=n_systematic_stars,
        mask_radius=layout.radius,
        padded_shape=run.grid,
        n_fft=out.n_fft,
        timings=out.seconds,
        science_noise_acf=inputs.acf_n,
        reference_noise_acf=inputs.acf_r,
        tiles=tuple((*b, fs) for b, fs in zip(tiles, tile_fs)) if len(tiles) > 1 else (),
    )


def flux_at(result: ZogyResult, x: float, y: float, search_radius: int = 2) -> dict:
    """PSF-photometry flux of a point transient near (x, y), interpolated to its sub-pixel peak.

    ``result.flux`` is the flux of a transient centred *on a pixel*; a source
    between pixels has a lower value at its nearest pixel (by a few per cent
    for a FWHM of 3 px). This finds the extremum of ``S`` within
    ``search_radius`` pixels of (x, y) and interpolates ``ln |S|`` with a
    parabola along each axis (exact for a Gaussian-shaped peak).

    Parameters
    ----------
    result : ZogyResult
        Output of :func:`subtract`.
    x, y : float
        Approximate 0-based pixel position.
    search_radius : int, optional
        Half-size of the search box, pixels.

    Returns
    -------
    dict
        ``flux`` and ``flux_err`` (science units), ``x`` and ``y`` (sub-pixel
        peak), ``S_corr`` (at the peak pixel), ``masked`` (bool: the peak
        pixel is masked or too close to the edge to interpolate; then
        ``flux`` is the pixel value).

    Raises
    ------
    AstridInputError
        (x, y) is outside the image.
    """
    S = result.S
    ny, nx = S.shape
    ix, iy = int(round(x)), int(round(y))
    if not (0 <= ix < nx and 0 <= iy < ny):
        raise AstridInputError(
            f"flux_at: position ({x}, {y}) is outside the image of shape {S.shape}"
        )
    y0, y1 = max(iy - search_radius, 0), min(iy + search_radius + 1, ny)
    x0, x1 = max(ix - search_radius, 0), min(ix + search_radius + 1, nx)
    box = np.where(result.mask[y0:y1, x0:x1], 0.0, np.abs(S[y0:y1, x0:x1]))
    by, bx = np.unravel_index(int(np.argmax(box)), box.shape)
    py, px = y0 + by, x0 + bx
    out = {
        "flux": float(result.flux[py, px]),
        "flux_err": float(result.flux_err[py, px]),
        "x": float(px),
        "y": float(py),
        "S_corr": float(result.S_corr[py, px]),
        "masked": True,
    }
    if (
        not (1 <= py < ny - 1 and 1 <= px < nx - 1)
        or result.mask[py - 1 : py + 2, px - 1 : px + 2].any()
    ):
        return out
    sign = 1.0 if S[py, px] >= 0 else -1.0
    patch = sign * S[py - 1 : py + 2, px - 1 : px + 2].astype(np.float64)
    if np.any(patch[1, :] <= 0) or np.any(patch[:, 1] <= 0):
        return out
    log_peak = math.log(patch[1, 1])
    shift = [0.0, 0.0]
    for axis, (a, c) in enumerate(((patch[0, 1], patch[2, 1]), (patch[1, 0], patch[1, 2]))):
        la, lc = math.log(a), math.log(c)
        curvature = la - 2.0 * math.log(patch[1, 1]) + lc
        if curvature >= 0:  # not a peak along this axis: keep the pixel value
            continue
        shift[axis] = 0.5 * (la - lc) / curvature
        log_peak -= (la - lc) ** 2 / (8.0 * curvature)
    peak = sign * math.exp(log_peak)
    out.update(
        # flux = flux_ratio · S / F_S at the pixel, with F_S of its tile.
        flux=float(result.flux[py, px]) * peak / float(S[py, px]),
        x=px + shift[1],
        y=py + shift[0],
        masked=False,
    )
    return out
