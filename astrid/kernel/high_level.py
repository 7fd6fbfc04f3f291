"""Fitted, spatially varying PSF-matching kernel and subtraction (HOTPANTS-class, in memory).

The sharper image T is convolved with a kernel K(x, y) fitted by linear
least squares so that ``T ⊗ K + b(x, y)`` matches the other image J on
stamps around stars (Alard & Lupton 1998; Alard 2000; Bramich 2008 for the
delta-function basis). K is a sum of basis functions whose coefficients are
polynomials over the field; the first basis function carries the kernel's
sum (the photometric scale), which gets its own spatial degree. Stamps whose
residuals stand out (variable stars, unflagged saturation, blends) are
clipped and the fit repeated. The difference is ``J − T ⊗ K − b`` and its
variance ``V_J + V_T ⊗ K²`` (with the noise correlation of T, when
resampling left one, taken into account), so ``significance`` is in units
of the noise. ``detection``, the difference filtered with the PSF of J over
its propagated noise, is the statistic to threshold (docs/kernel.md).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
from astropy.table import Table
from scipy.special import erfinv

from .. import _utils
from .._utils import GAUSSIAN_SIGMA_TO_FWHM, reuse_freed_memory
from ..diffim.inpaint import repair_for_subtraction
from ..diffim.zogy import as_aligned_pair as _as_aligned_pair
from ..diffim.zogy import bad_pixels as _bad_pixels
from ..diffim.zogy import check_map as _check_map
from ..diffim.zogy import check_mask_fraction as _check_mask_fraction
from ..diffim.zogy import check_positive as _check_positive
from ..diffim.zogy import estimate_noise_acf, robust_std
from ..diffim.zogy import untrusted as _untrusted
from ..errors import AstridInputError, AstridPSFError
from ._basis import (
    HOTPANTS_SIGMAS,
    alard_lupton_basis,
    delta_basis,
    n_spatial,
    spatial_terms,
)
from ._fft import SameConvolution, box_max
from ._fit import convolve_tiles, stamp_design
from ._options import MIN_STAMPS, KernelInputs, KernelOptions
from ._result import KernelModel, KernelResult

__all__ = ["MIN_STAMPS", "subtract"]

# "auto" degree: 2 with this many usable stamps, 1 with the second, else 0. Every basis function
# gets the spatial terms, so a degree costs 49 parameters per term: with 20-40 stamps a degree 1
# fit extrapolated badly to the bright stars between them (23 false positives on a simulated
# 1024² pair, against 8 with degree 0).
_AUTO_DEGREE_STAMPS = (150, 60)
# Stamps are picked round-robin over this many cells per side, brightest first in each.
_CELLS = 5
# Kernel half-width in FWHM of the broader image: the kernel between two Moffat PSFs has power-law
# wings, and cutting them at 2 FWHM biased the scale by 3-8 % on the simulated pairs.
_KERNEL_FWHM = 3.0
# Detections whose find_stars sharpness (FWHM over the image's) is outside this range are cosmic
# rays and hot pixels (below) or galaxies (above): galaxies may host the supernovae.
_SHARPNESS = (0.7, 1.3)
# Half-width of the box that measures the stars' widths before the kernel size is known.
_MEASURE_HALF_WIDTH = 8
# ε for the detection image: a quantile of the stars' fractional residuals (the worst lobes matter,
# not the typical star), measured on stars whose filtered model is at least this significant.
_SYSTEMATIC_QUANTILE = 0.75
_SYSTEMATIC_SNR = 50.0
# The errors-in-variables correction is capped where noise makes up more than this share of a
# direction of the normal matrix (those directions are fitted to noise; see _solve).
_EIV_MAX_SHARE = 0.8
# The noise correlation of the convolved image is used when a lag within ±2 px exceeds this.
_ACF_THRESHOLD = 0.05


def _noise_acf(image, bad, mode):
    """The noise autocorrelation of ``image`` to propagate, or None (``mode`` False, or "auto" and
    no lag within ±2 px above :data:`_ACF_THRESHOLD`)."""
    if mode is False:
        return None
    acf = estimate_noise_acf(image, bad)
    if acf is not None and mode == "auto":
        off = np.abs(acf)
        off[acf.shape[0] // 2, acf.shape[1] // 2] = 0.0
        if off.max() < _ACF_THRESHOLD:
            return None
    return acf


def _unpack(image, role: str):
    """(data, mask, variance) of an Image or an array."""
    if hasattr(image, "data") and hasattr(image, "mask"):
        return (
            np.asarray(image.data),
            np.asarray(image.mask, bool),
            getattr(image, "variance", None),
        )
    return image, None, None


def _star_positions(stars, role: str = "stars"):
    """(x, y, brightness or None, snr or None, flagged) from a find_stars Table or an (n, 2) array.

    Rows flagged saturated or masked, and sources much sharper or broader
    than the image's stars (``sharpness`` outside 0.7–1.3: cosmic rays, hot
    pixels, galaxies) are flagged.
    """
    if isinstance(stars, Table) or hasattr(stars, "colnames"):
        if "x" not in stars.colnames or "y" not in stars.colnames:
            raise AstridInputError(
                f"{role}: a star table needs columns 'x' and 'y', got {stars.colnames}"
            )
        x = np.asarray(stars["x"], dtype=np.float64)
        y = np.asarray(stars["y"], dtype=np.float64)
        flux = np.asarray(stars["flux"], dtype=np.float64) if "flux" in stars.colnames else None
        snr = np.asarray(stars["snr"], dtype=np.float64) if "snr" in stars.colnames else None
        flagged = np.zeros(len(x), bool)
        for column in ("saturated", "masked"):
            if column in stars.colnames:
                flagged |= np.asarray(stars[column], bool)
        if "sharpness" in stars.colnames:
            sharpness = np.asarray(stars["sharpness"], dtype=np.float64)
            flagged |= ~((sharpness >= _SHARPNESS[0]) & (sharpness <= _SHARPNESS[1]))
        return x, y, flux, snr, flagged
    xy = np.asarray(stars, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise AstridInputError(
            f"{role}: expected a star table or an (n, 2) array of x, y, got shape {xy.shape}"
        )
    return xy[:, 0], xy[:, 1], None, None, np.zeros(len(xy), bool)


@dataclass(eq=False)
class _Positions:
    """Candidate stamp centres (px) with their brightness (None: given order) and flags."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray | None
    flagged: np.ndarray  # not to be used (includes ``faint``)
    faint: np.ndarray  # flagged for their S/N only


def _select(stars: _Positions, bad, margin, half_check, spacing, max_stamps):
    """Stamp centres (ys, xs) and the counts of positions dropped, by reason."""
    ny, nx = bad.shape
    x, y, flux, flagged, faint = stars.x, stars.y, stars.flux, stars.flagged, stars.faint
    skipped = {"flagged": int(flagged.sum()) - int(faint.sum()), "faint": int(faint.sum())}
    ok = ~flagged & np.isfinite(x) & np.isfinite(y)
    skipped["non_finite"] = int(np.count_nonzero(~flagged & ~ok))
    xi = np.round(np.where(ok, x, 0)).astype(np.int64)
    yi = np.round(np.where(ok, y, 0)).astype(np.int64)
    inside = ok & (xi >= margin) & (xi < nx - margin) & (yi >= margin) & (yi < ny - margin)
    skipped["edge"] = int(np.count_nonzero(ok & ~inside))
    idx = np.flatnonzero(inside)
    # Slices at the candidates: cheaper than a summed-area table of the whole image at 4096².
    clean = np.array(
        [
            not bad[
                yi[i] - half_check : yi[i] + half_check + 1,
                xi[i] - half_check : xi[i] + half_check + 1,
            ].any()
            for i in idx
        ],
        dtype=bool,
    )
    skipped["bad_pixels"] = int(np.count_nonzero(~clean))
    idx = idx[clean]
    # Brightest first (given order when no flux is known), then drop stamps overlapping a brighter one.
    if flux is not None:
        idx = idx[np.argsort(-np.nan_to_num(flux[idx], nan=-np.inf), kind="stable")]
    kept = []
    taken = np.zeros((0, 2))
    for i in idx:
        if (
            taken.size
            and np.min(np.maximum(np.abs(taken[:, 0] - xi[i]), np.abs(taken[:, 1] - yi[i])))
            < spacing
        ):
            continue
        kept.append(i)
        taken = np.vstack([taken, [xi[i], yi[i]]])
    skipped["overlap"] = len(idx) - len(kept)
    kept = np.array(kept, dtype=np.int64)
    if len(kept) > max_stamps:
        # Round-robin over cells of the field so every part of it constrains the spatial terms.
        cell = (yi[kept] * _CELLS // ny) * _CELLS + xi[kept] * _CELLS // nx
        rank = np.zeros(len(kept), dtype=np.int64)
        seen: dict = {}
        for j, c in enumerate(cell):
            rank[j] = seen.get(c, 0)
            seen[c] = rank[j] + 1
        order = np.lexsort((np.arange(len(kept)), rank))[:max_stamps]
        skipped["beyond_max_stamps"] = len(kept) - max_stamps
        kept = kept[np.sort(order)]
    return yi[kept], xi[kept], skipped


def _image_stamps(T, sigma, bad, hs, r, min_snr, max_stamps):
    """Stamp centres tiling the whole image, for a fit on every pixel with signal (as sfft fits).

    Stamps of ``2 hs + 1`` px side by side, each with ``hs + r`` px of clean
    pixels around its centre, kept when the light in it is significant:
    ``√(Σ (T / σ)² − n_pixels) >= min_snr`` (stars, galaxies, anything
    that constrains the kernel). The most significant first, at most
    ``max_stamps`` spread over the field.

    Returns
    -------
    ys, xs : numpy.ndarray of int64
    skipped : dict
        Grid positions dropped: ``bad_pixels``, ``faint`` (no significant
        light), ``beyond_max_stamps``.
    """
    ny, nx = T.shape
    margin = hs + r + 1
    step = 2 * hs + 1
    gy = np.arange(margin, ny - margin, step, dtype=np.int64)
    gx = np.arange(margin, nx - margin, step, dtype=np.int64)
    yy, xx = (a.ravel() for a in np.meshgrid(gy, gx, indexing="ij"))
    skipped = {"bad_pixels": 0, "faint": 0}
    clean = np.array(
        [
            not bad[y - hs - r : y + hs + r + 1, x - hs - r : x + hs + r + 1].any()
            for y, x in zip(yy, xx)
        ],
        dtype=bool,
    )
    skipped["bad_pixels"] = int(np.count_nonzero(~clean))
    yy, xx = yy[clean], xx[clean]
    npix = step * step
    power = (
        np.array(
            [
                float(
                    np.sum(np.square(T[y - hs : y + hs + 1, x - hs : x + hs + 1], dtype=np.float64))
                )
                for y, x in zip(yy, xx)
            ]
        )
        / sigma**2
    )
    snr = np.sqrt(np.maximum(power - npix, 0.0))
    signal = snr >= min_snr
    skipped["faint"] = int(np.count_nonzero(~signal))
    yy, xx, snr = yy[signal], xx[signal], snr[signal]
    # _select keeps the most significant, round-robin over cells of the field, beyond max_stamps.
    none = np.zeros(len(yy), bool)
    grid = _Positions(
        x=xx.astype(np.float64), y=yy.astype(np.float64), flux=snr, flagged=none, faint=none
    )
    ys, xs, more = _select(grid, bad, margin, 0, 1, max_stamps)
    skipped["beyond_max_stamps"] = more.get("beyond_max_stamps", 0)
    return ys, xs, skipped


def _too_few(n_usable, need, degree, n_given, skipped, stamp, margin) -> str:
    """The message of the AstridPSFError for too few usable stars."""
    why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
    return (
        f"kernel.subtract: {n_usable} stars usable for kernel stamps, at least {need} needed for a kernel of "
        f"spatial degree {degree}; of {n_given} star positions given or found"
        + (f", dropped: {why}" if why else "")
        + f" (stamps of {stamp} px need {margin} px of clean pixels around the star)"
    )


def _stamp_width(image, ys, xs, half=_MEASURE_HALF_WIDTH) -> float:
    """Median Gaussian sigma of the stars at (ys, xs), from the fraction of their flux in the central 3×3 px.

    For a Gaussian of width σ centred on a pixel that fraction is
    erf(1.5 / (√2 σ))²; a robust width for deciding which image is sharper
    and for sizing the kernel, not a PSF measurement.
    """
    sigmas = []
    for yc, xc in zip(ys, xs):
        box = image[yc - half : yc + half + 1, xc - half : xc + half + 1]
        if box.shape != (2 * half + 1, 2 * half + 1):
            continue
        total = float(box.sum())
        core = float(box[half - 1 : half + 2, half - 1 : half + 2].sum())
        if total > 0 and 0 < core < total:
            sigmas.append(1.5 / (math.sqrt(2.0) * float(erfinv(math.sqrt(core / total)))))
    return float(np.median(sigmas)) if sigmas else float("nan")


def _assemble(Gn, hn, P, Pb, nb):
    """Global normal matrix and right-hand side from the stamps' local systems.

    Parameters are ordered kernel (k major, spatial term l minor), then
    background terms; a stamp's local coefficient of basis k is
    ``Σ_l θ[k, l] P[s, l]`` (the spatial polynomial at the stamp centre).
    """
    n, nsp = P.shape
    nbg = Pb.shape[1]
    PP = (P[:, :, None] * P[:, None, :]).reshape(n, nsp * nsp)
    kk = (Gn[:, :nb, :nb].reshape(n, nb * nb).T @ PP).reshape(nb, nb, nsp, nsp)
    kk = kk.transpose(0, 2, 1, 3).reshape(nb * nsp, nb * nsp)
    kb = np.einsum("sa,sl,sm->alm", Gn[:, :nb, nb], P, Pb).reshape(nb * nsp, nbg)
    bb = (Pb * Gn[:, nb, nb][:, None]).T @ Pb
    A = np.block([[kk, kb], [kb.T, bb]])
    b = np.concatenate([(hn[:, :nb, None] * P[:, None, :]).sum(axis=0).ravel(), hn[:, nb] @ Pb])
    return A, b


def _noise_normal(B, Q):
    """Σ_a B_k(a) B_k'(a) Q_s(a) for each stamp s: shape (n, n_basis, n_basis).

    Delta-function bases are sparse (two pixels per function), so their
    products go through scipy.sparse; dense bases through BLAS.
    """
    if np.count_nonzero(B) < 0.1 * B.size:
        sparse = scipy.sparse.csr_matrix(B)
        return np.array([(sparse.multiply(q[None, :]) @ sparse.T).toarray() for q in Q])
    return np.matmul(B[None, :, :] * Q[:, None, :], np.ascontiguousarray(B.T))


def _solve(A, b, noise=None, max_share=_EIV_MAX_SHARE):
    """Solve the normal equations, optionally corrected for the noise in the regressors.

    With ``noise`` (Ω, what the noise of the convolved image adds to the
    expectation of ``A``), solves ``(A − Ω) θ = b`` in the frame where A is
    the identity: Ω becomes ``U diag(μ) Uᵀ`` and ``A − Ω`` is
    ``L U diag(1 − μ) Uᵀ Lᵀ``. Where noise makes up more than ``max_share``
    of a direction's power (μ > max_share: directions fitted to noise, which
    the plain correction would blow up or make negative), μ is capped there.

    Returns
    -------
    theta : numpy.ndarray or None
        None when A itself is not positive definite.
    n_capped : int
        Directions whose correction was capped.
    """
    scale = np.sqrt(np.maximum(np.diag(A), 1e-300))
    As = A / scale[:, None] / scale[None, :]
    bs = b / scale
    try:
        L = scipy.linalg.cholesky(As, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None, 0
    y = scipy.linalg.solve_triangular(L, bs, lower=True, check_finite=False)
    n_capped = 0
    if noise is not None:
        Os = noise / scale[:, None] / scale[None, :]
        X = scipy.linalg.solve_triangular(L, Os, lower=True, check_finite=False)
        X = scipy.linalg.solve_triangular(L, X.T, lower=True, check_finite=False)
        mu, U = np.linalg.eigh(0.5 * (X + X.T))
        n_capped = int(np.count_nonzero(mu > max_share))
        mu = np.minimum(mu, max_share)
        y = U @ ((U.T @ y) / (1.0 - mu))
    theta = scipy.linalg.solve_triangular(L.T, y, lower=False, check_finite=False)
    return theta / scale, n_capped


def _poly_map(coefficients, degree, shape, dtype):
    """Σ_t c_t u^a v^b over the whole grid, as V @ C @ U^T (no per-term full-size temporaries)."""
    ny, nx = shape
    u = 2.0 * np.arange(nx) / max(nx - 1, 1) - 1.0
    v = 2.0 * np.arange(ny) / max(ny - 1, 1) - 1.0
    C = np.zeros((degree + 1, degree + 1))
    t = 0
    for total in range(degree + 1):
        for j in range(total + 1):
            C[j, total - j] = coefficients[t]
            t += 1
    U = u[:, None] ** np.arange(degree + 1)
    V = v[:, None] ** np.arange(degree + 1)
    return (V @ C).astype(dtype) @ U.T.astype(dtype)


def _correlated_factor(kernels, acf):
    """Per kernel: Σ_Δ ρ(Δ) A_K(Δ) / Σ K², the variance of correlated noise convolved with K over white noise's."""
    if acf is None:
        return np.ones(kernels.shape[:-2])
    half = acf.shape[0] // 2
    kw = kernels.shape[-1]
    sq = np.sum(kernels * kernels, axis=(-2, -1))
    total = np.zeros_like(sq)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            rho = acf[half + dy, half + dx]
            if rho == 0.0:
                continue
            a = kernels[..., max(dy, 0) : kw + min(dy, 0), max(dx, 0) : kw + min(dx, 0)]
            b = kernels[..., max(-dy, 0) : kw + min(-dy, 0), max(-dx, 0) : kw + min(-dx, 0)]
            total += rho * np.sum(a * b, axis=(-2, -1))
    return total / np.maximum(sq, 1e-300)


def _single_threaded_blas():
    """One BLAS thread for the stamps' small matrix products.

    Right after a numba parallel loop its OpenMP threads still spin, and a
    multi-threaded BLAS call competing with them ran ten times slower than a
    single-threaded one (7.6 s against 0.7 s for 113 stamps on 2 cores).
    threadpoolctl is optional; without it BLAS keeps its threads.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _target_psf(psf, sigma, name):
    """The PSF of the image not convolved (odd, normalised), or a Gaussian of its measured width."""
    if psf is None:
        half = max(math.ceil(3.0 * sigma), 1)
        u = np.arange(-half, half + 1)
        g = np.exp(-0.5 * (u / sigma) ** 2)
        out = np.outer(g, g)
    else:
        out = np.asarray(psf, dtype=np.float64)
        if (
            out.ndim != 2
            or out.shape[0] != out.shape[1]
            or out.shape[0] % 2 == 0
            or not np.isfinite(out).all()
            or not out.sum() > 0
        ):
            raise AstridInputError(
                f"{name}: must be a square, odd-sized, finite array with a positive sum, got "
                f"shape {out.shape}"
            )
    return out / out.sum()


def _astrometric_variance(image, sigma, work):
    """σx² (∂image/∂x)² + σy² (∂image/∂y)²: the variance a registration error of (σx, σy) px leaves."""
    sx, sy = sigma
    if sx == 0 and sy == 0:
        return None
    gy, gx = np.gradient(image)
    return (work(sx**2) * np.square(gx) + work(sy**2) * np.square(gy)).astype(work, copy=False)


def _detection(num, var, model, P, systematic, stars, work, astrometric=(0.0, 0.0)):
    """Matched-filter significance of a point source in the difference (PSF ``P``), noise propagated.

    ``num`` is the difference filtered with P (``diff ⋆ P``) and ``var``
    its variance without the systematic and astrometric terms: J's noise
    through P (``VJ ⊗ P²`` times the correlation factor of J's noise for P)
    plus T's noise through ``K ⊗ P`` (``VT ⊗ P²`` times, per tile,
    Σ(K ⊗ P)² / ΣP² and T's correlation factor); ``model`` the matched model
    filtered with P (``(T ⊗ K) ⋆ P``). ``var`` is added to in place: the
    astrometric term of the filtered model, and a systematic term
    ``ε² max_{PSF}(|model|)²``.
    With ``systematic="auto"``, ε is measured at the stamps' stars (``stars``:
    (ys, xs)) as in ZOGY: the largest filtered residual within a PSF
    half-width beyond the noise, as a fraction of the filtered model, at
    stars where the model is 50σ or more (20σ when fewer than three are).

    Returns
    -------
    detection : numpy.ndarray
    epsilon : float
        The systematic fraction used.
    """
    astro = _astrometric_variance(model, astrometric, work)
    if astro is not None:
        var += astro
        del astro
    # A kernel's errors leave rings and lobes a few pixels from a bright star, where the star's own
    # filtered profile is already faint: the term follows the brightest model value within a PSF
    # half-width, so those lobes are covered while faint sky far from stars is not penalised.
    half = P.shape[0] // 2
    near = box_max(np.abs(model), half)
    if systematic == "auto":
        ys, xs = stars
        inside = (
            (ys >= half) & (ys < num.shape[0] - half) & (xs >= half) & (xs < num.shape[1] - half)
        )
        ys, xs = ys[inside], xs[inside]
        sd = np.sqrt(np.maximum(var[ys, xs], np.finfo(work).tiny))
        offsets = range(-half, half + 1)
        resid = np.max(
            [
                np.abs(num[ys + dy, xs + dx]) / np.sqrt(np.maximum(var[ys + dy, xs + dx], 1e-30))
                for dy in offsets
                for dx in offsets
            ],
            axis=0,
        )
        flux = near[ys, xs] / sd
        epsilon = 0.0
        for floor in (_SYSTEMATIC_SNR, 20.0):
            bright = flux >= floor
            if bright.sum() >= 3:
                # The largest of (2 half + 1)² noise values is about 3σ: only what exceeds it counts.
                excess = np.sqrt(np.maximum(resid[bright] ** 2 - 9.0, 0.0)) / flux[bright]
                epsilon = float(np.quantile(excess, _SYSTEMATIC_QUANTILE))
                break
    else:
        epsilon = float(systematic)
    if epsilon > 0:
        np.square(near, out=near)
        near *= work(epsilon**2)
        var += near
    del near
    np.maximum(var, np.finfo(work).tiny, out=var)
    np.sqrt(var, out=var)
    return np.divide(num, var, out=var), epsilon


def _convolve_terms(image, term_kernels, degree, work):
    """Σ_l p_l(x, y) (image ⊗ K_l) over the spatial terms p_l (order 1, x, y, x², xy, y², ...).

    One forward FFT of the image; each term's product is transformed back and added at once, so
    only one image-sized term is held at a time.
    """
    ny, nx = image.shape
    k = term_kernels.shape[-1]
    fft = SameConvolution(image.shape, work)
    F = fft.image_spectrum(image, k)
    u = (2.0 * np.arange(nx) / max(nx - 1, 1) - 1.0).astype(work)
    v = (2.0 * np.arange(ny) / max(ny - 1, 1) - 1.0).astype(work)
    out = None
    t = 0
    for total in range(degree + 1):
        for j in range(total + 1):
            G = fft.kernel_spectrum(term_kernels[t])
            G *= F
            part = fft.back(G, k)
            del G
            if t == 0:
                out = np.array(part, dtype=work)
            else:
                part = part * v[:, None] ** j
                part *= u[None, :] ** (total - j)
                out += part
            t += 1
    return out


def _tiles_to_map(values, tile, shape):
    return np.repeat(np.repeat(values, tile, axis=0), tile, axis=1)[: shape[0], : shape[1]]


@dataclass(eq=False)
class _Images:
    """The pair in working precision (bad pixels zeroed) with its noise, as the steps share it."""

    science: np.ndarray
    reference: np.ndarray
    science_variance: np.ndarray | None
    reference_variance: np.ndarray | None
    sigma: dict  # "science_sigma", "reference_sigma"
    bad: np.ndarray
    own: dict  # each image's own bad pixels, by role
    repaired: np.ndarray
    fwhm_given: dict  # "science_fwhm", "reference_fwhm" where given
    work: type

    @property
    def shape(self):
        return self.bad.shape

    def roles(self, convolve):
        """(T, J, V_T, V_J, σ_T, σ_J): the image convolved, the target, their variances and noise."""
        sci = (self.science, self.science_variance, self.sigma["science_sigma"])
        ref = (self.reference, self.reference_variance, self.sigma["reference_sigma"])
        (T, VT, sT), (J, VJ, sJ) = (ref, sci) if convolve == "reference" else (sci, ref)
        return T, J, VT, VJ, sT, sJ


@dataclass(eq=False)
class _Plan:
    """The kernel's size, basis and stamps, and the image it convolves."""

    convolve: str
    r: int
    hs: int
    basis: object
    s_sci: float
    s_ref: float
    ys: np.ndarray
    xs: np.ndarray
    skipped: dict
    detection_stars: tuple | None
    n_given: int
    degree: int
    auto_degree: bool


@dataclass(eq=False)
class _Systems:
    """Each stamp's normal equations (kernel basis then its constant) and noise terms."""

    Gn: np.ndarray
    hn: np.ndarray
    jj: np.ndarray
    Om: np.ndarray
    expected: np.ndarray
    npix: int


@dataclass(eq=False)
class _Fit:
    """The clipped global fit."""

    coef: np.ndarray
    bg: np.ndarray
    degree: int
    used: np.ndarray
    chi2: np.ndarray
    per_pixel: np.ndarray
    n_iter: int
    eiv: bool
    n_capped: int
    epsilon: float
    measured_epsilon: float


def _check_inputs(inputs: KernelInputs, shape, maps):
    """The checked variance maps (science, reference), filled mask and astrometric σ of ``inputs``."""
    given_astrometric = inputs.astrometric_sigma
    try:
        astrometric_sigma = tuple(float(v) for v in given_astrometric)
    except (TypeError, ValueError):
        astrometric_sigma = ()
    if len(astrometric_sigma) != 2 or not all(
        math.isfinite(v) and v >= 0 for v in astrometric_sigma
    ):
        raise AstridInputError(
            f"astrometric_sigma: must be two finite numbers >= 0 (px), got {given_astrometric!r}"
        )
    for name in ("science_psf", "reference_psf"):
        if getattr(inputs, name) is not None:
            _target_psf(getattr(inputs, name), 1.0, name)  # checked before the fit, used after it
    n_var, r_var = maps
    Vn = inputs.science_variance if inputs.science_variance is not None else n_var
    Vr = inputs.reference_variance if inputs.reference_variance is not None else r_var
    Vn = _check_map("science_variance", Vn, shape)
    Vr = _check_map("reference_variance", Vr, shape)
    filled = (
        None if inputs.filled is None else _check_map("filled", inputs.filled, shape).astype(bool)
    )
    return Vn, Vr, filled, astrometric_sigma


def _prepare(reference, science, mask, inputs: KernelInputs, dtype) -> tuple[_Images, tuple]:
    """The pair validated, bad pixels found and repaired where isolated, in working precision;
    and the astrometric σ."""
    N, n_mask, n_var = _unpack(science, "science")
    R, r_mask, r_var = _unpack(reference, "reference")
    R, N = _as_aligned_pair(reference=R, science=N)
    shape = N.shape
    fwhm_given = {}
    for name in ("science_fwhm", "reference_fwhm"):
        if getattr(inputs, name) is not None:
            fwhm_given[name] = _check_positive(name, getattr(inputs, name))
    Vn, Vr, filled, astrometric_sigma = _check_inputs(inputs, shape, (n_var, r_var))
    user_mask = _check_map("mask", mask, shape)
    user_mask = None if user_mask is None else user_mask.astype(bool)
    own = {}
    for role, extra, data, variance in (("science", n_mask, N, Vn), ("reference", r_mask, R, Vr)):
        # Each image's own bad pixels: those of the image convolved spread over the kernel, the
        # other's stay where they are.
        own[role] = ~np.isfinite(data)
        if extra is not None:
            own[role] |= _check_map(f"{role}.mask", extra, shape).astype(bool)
        if variance is not None:
            own[role] |= ~np.isfinite(variance)
    combined = own["science"] | own["reference"]
    user_mask = combined if user_mask is None else (user_mask | combined)

    bad = _bad_pixels(N, R, user_mask, (Vn, Vr))
    sig = {}
    for name, image in (("science_sigma", N), ("reference_sigma", R)):
        value = getattr(inputs, name)
        if value is None:
            value = robust_std(image, bad)
            if not (math.isfinite(value) and value > 0):
                raise AstridInputError(
                    f"{name}: the unmasked pixels have no measurable noise (robust std {value}); "
                    "pass it explicitly"
                )
        sig[name] = _check_positive(name, value)
    (N, R), repaired = repair_for_subtraction(
        (N, R), bad, (sig["science_sigma"], sig["reference_sigma"]), filled
    )
    # Working copies in the output precision: at 4096² four float64 maps held through the whole call
    # were 0.5 GiB of the peak. The stamps' sums accumulate in float64 in any case.
    work = np.float32 if dtype == np.float32 else np.float64
    n_img = np.where(bad, 0, N).astype(work, copy=False)
    r_img = np.where(bad, 0, R).astype(work, copy=False)
    del N, R
    var_n = (
        np.where(bad, 0, np.nan_to_num(Vn, nan=sig["science_sigma"] ** 2)).astype(work, copy=False)
        if Vn is not None
        else None
    )
    var_r = (
        np.where(bad, 0, np.nan_to_num(Vr, nan=sig["reference_sigma"] ** 2)).astype(
            work, copy=False
        )
        if Vr is not None
        else None
    )
    images = _Images(
        science=n_img,
        reference=r_img,
        science_variance=var_n,
        reference_variance=var_r,
        sigma=sig,
        bad=bad,
        own=own,
        repaired=repaired,
        fwhm_given=fwhm_given,
        work=work,
    )
    return images, astrometric_sigma


def _positions(images: _Images, stars, min_snr) -> _Positions:
    """The stars for the stamps (found on the reference when not given), those fainter than
    ``min_snr`` flagged."""
    ny, nx = images.shape
    sig = images.sigma
    if stars is None:
        from ..diffim.stars import find_stars

        # Not only the isolated stars: the brightest have detections in their wings, and without
        # them the kernel is extrapolated exactly where its errors show most (the stamp selection
        # keeps one stamp per neighbourhood, the brightest).
        stars = find_stars(
            images.reference, mask=images.bad, background=0.0, rms=sig["reference_sigma"]
        )
    x, y, flux, snr, flagged = _star_positions(stars)
    if snr is None:
        # The stars' S/N on the image to convolve: 5×5 px sums against the sky noise.
        inside = (
            np.isfinite(x)
            & np.isfinite(y)
            & (np.round(x) >= 2)
            & (np.round(x) < nx - 2)
            & (np.round(y) >= 2)
            & (np.round(y) < ny - 2)
        )
        xi = np.round(np.where(inside, x, 2)).astype(np.int64)
        yi = np.round(np.where(inside, y, 2)).astype(np.int64)
        # The S/N cut only needs an order of magnitude; both images' light counts.
        both = images.reference + images.science
        sums = both[
            yi[:, None, None] + np.arange(-2, 3)[:, None], xi[:, None, None] + np.arange(-2, 3)
        ].sum(axis=(1, 2))
        snr = np.where(
            inside, sums / (5.0 * math.hypot(sig["science_sigma"], sig["reference_sigma"])), 0.0
        )
    faint = ~flagged & ~(snr >= min_snr)
    return _Positions(x=x, y=y, flux=flux, flagged=flagged | faint, faint=faint)


def _size_kernel(images: _Images, stars: _Positions, options: KernelOptions):
    """(convolve, r, hs, basis, σ_science, σ_reference): the image to convolve, the kernel's and
    stamps' half-widths and the basis, from the stars' widths (or the FWHMs given)."""
    n_given = len(stars.x)
    fwhm_given = images.fwhm_given
    # Widths first (a fixed box), to size the kernel and choose the image to convolve.
    ys0, xs0, skipped0 = _select(
        stars,
        images.bad,
        _MEASURE_HALF_WIDTH + 1,
        _MEASURE_HALF_WIDTH,
        _MEASURE_HALF_WIDTH,
        options.max_stamps,
    )
    # Fitting on the whole image needs the stars only to size the kernel, and not even that with both widths given.
    if len(ys0) < (
        MIN_STAMPS if options.fit_region == "stars" else 0 if len(fwhm_given) == 2 else 1
    ):
        raise AstridPSFError(
            _too_few(
                len(ys0),
                MIN_STAMPS,
                0,
                n_given,
                skipped0,
                2 * _MEASURE_HALF_WIDTH + 1,
                _MEASURE_HALF_WIDTH,
            )
        )
    width = {}
    for name, image in (("science_fwhm", images.science), ("reference_fwhm", images.reference)):
        width[name] = (
            fwhm_given[name] / GAUSSIAN_SIGMA_TO_FWHM
            if name in fwhm_given
            else _stamp_width(image, ys0, xs0)
        )
    s_sci, s_ref = width["science_fwhm"], width["reference_fwhm"]
    if not (math.isfinite(s_sci) and math.isfinite(s_ref)):
        raise AstridPSFError(
            f"kernel.subtract: no star could be measured to size the kernel: {len(ys0)} of {n_given} positions "
            "give a clean stamp; pass science_fwhm and reference_fwhm, or more stars"
        )
    convolve = options.convolve
    if convolve == "auto":
        convolve = "science" if s_sci < s_ref else "reference"
    s_broad, s_sharp = max(s_sci, s_ref), min(s_sci, s_ref)
    fwhm_broad = GAUSSIAN_SIGMA_TO_FWHM * s_broad
    sigma_k = math.sqrt(max(s_broad**2 - s_sharp**2, 0.0))
    r = options.half_width
    if r == "auto":
        r = int(np.clip(math.ceil(_KERNEL_FWHM * fwhm_broad), 4, 15))
    hs = (
        options.stamp_half_width
        if options.stamp_half_width != "auto"
        else r + math.ceil(fwhm_broad)
    )
    if options.basis == "delta":
        kbasis = delta_basis(r)
    else:
        sigmas = options.sigmas
        if isinstance(sigmas, str):
            sigmas = tuple(s * max(sigma_k / 1.5, 1.0) for s in HOTPANTS_SIGMAS)
        kbasis = alard_lupton_basis(r, sigmas, options.degrees)
    return convolve, r, hs, kbasis, s_sci, s_ref


def _plan(images: _Images, stars: _Positions, options: KernelOptions) -> _Plan:
    """Size the kernel, choose the image to convolve and the stamps, and the spatial degree."""
    convolve, r, hs, kbasis, s_sci, s_ref = _size_kernel(images, stars, options)
    n_given = len(stars.x)
    if options.fit_region == "stars":
        ys, xs, skipped = _select(stars, images.bad, hs + r + 1, hs + r, hs, options.max_stamps)
        detection_stars = None
    else:
        T, _, _, _, sT, _ = images.roles(convolve)
        ys, xs, skipped = _image_stamps(
            T, sT, images.bad, hs, r, options.min_snr, options.max_stamps
        )
        n_given = len(ys) + sum(skipped.values())
        # The stars (any S/N) are still where ε, the kernel's systematic error, is measured.
        x, y = stars.x, stars.y
        clean = ~(stars.flagged & ~stars.faint) & np.isfinite(x) & np.isfinite(y)
        detection_stars = (np.round(y[clean]).astype(np.int64), np.round(x[clean]).astype(np.int64))
    n_usable = len(ys)
    degree = options.degree
    auto_degree = degree == "auto"
    if auto_degree:
        degree = (
            2
            if n_usable >= _AUTO_DEGREE_STAMPS[0]
            else 1
            if n_usable >= _AUTO_DEGREE_STAMPS[1]
            else 0
        )
    need = MIN_STAMPS * n_spatial(degree)
    if n_usable < need and options.fit_region == "image":
        why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
        raise AstridPSFError(
            f"kernel.subtract: {n_usable} stamps with signal (S/N >= {options.min_snr:g}) on the "
            f"image grid, at least {need} needed for a kernel of spatial degree {degree}; of "
            f"{n_given} grid stamps of {2 * hs + 1} px, dropped: {why or 'none'}"
        )
    if n_usable < need:
        raise AstridPSFError(_too_few(n_usable, need, degree, n_given, skipped, 2 * hs + 1, hs + r))
    return _Plan(
        convolve=convolve,
        r=r,
        hs=hs,
        basis=kbasis,
        s_sci=s_sci,
        s_ref=s_ref,
        ys=ys,
        xs=xs,
        skipped=skipped,
        detection_stars=detection_stars,
        n_given=n_given,
        degree=degree,
        auto_degree=auto_degree,
    )


def _stamp_systems(images: _Images, plan: _Plan, fit_weights) -> _Systems:
    """Each stamp's weighted normal equations in the kernel basis (and its constant), and what the
    noise of the convolved image adds to them."""
    T, J, VT, VJ, sT, sJ = images.roles(plan.convolve)
    ys, xs, r, hs, kbasis = plan.ys, plan.xs, plan.r, plan.hs, plan.basis
    shape = images.shape
    n_usable = len(ys)
    kw = 2 * r + 1
    core = J[
        ys[:, None, None] + np.arange(-2, 3)[:, None], xs[:, None, None] + np.arange(-2, 3)
    ].sum(axis=(1, 2))
    core_t = T[
        ys[:, None, None] + np.arange(-2, 3)[:, None], xs[:, None, None] + np.arange(-2, 3)
    ].sum(axis=(1, 2))
    positive = core_t > 0
    # A first guess of the scale for the weights: the stars' flux ratio in their cores.
    scale0 = float(np.median(core[positive] / core_t[positive])) if positive.any() else 1.0
    if not (math.isfinite(scale0) and scale0 > 0):
        scale0 = 1.0
    ksq = np.zeros((n_usable, kw, kw))
    ksq[:, r, r] = scale0**2
    # Constant maps as zero-stride views: no image-sized copies of a number.
    VT_map = VT if VT is not None else np.broadcast_to(np.float64(sT**2), shape)
    VJ_map = VJ if VJ is not None else np.broadcast_to(np.float64(sJ**2), shape)
    if fit_weights == "sky":
        VT_w, VJ_w = (
            np.broadcast_to(np.float64(sT**2), shape),
            np.broadcast_to(np.float64(sJ**2), shape),
        )
    else:
        VT_w, VJ_w = VT_map, VJ_map
    nb = kbasis.size
    M1 = np.zeros((nb + 1, len(kbasis.raw_y) + 1))
    M1[:nb, :-1] = kbasis.transform
    M1[nb, -1] = 1.0
    M1 = scipy.sparse.csr_matrix(M1)
    npix = (2 * hs + 1) ** 2
    Gn = np.empty((n_usable, nb + 1, nb + 1))
    hn = np.empty((n_usable, nb + 1))
    jj = np.empty(n_usable)
    Q = np.empty((n_usable, kw, kw))
    expected = np.empty(n_usable)
    # Chunks of stamps keep the design matrices to about 64 MB (the delta basis has hundreds of functions).
    chunk = max(1, int(64e6 // (8 * npix * (M1.shape[1] + nb + 2))))
    for c0 in range(0, n_usable, chunk):
        sl = slice(c0, min(c0 + chunk, n_usable))
        C, jw, Q[sl], expected[sl] = stamp_design(
            T,
            J,
            VT_w,
            VJ_w,
            VT_map,
            VJ_map,
            ys[sl],
            xs[sl],
            hs,
            r,
            kbasis.fy,
            kbasis.fx,
            kbasis.raw_y,
            kbasis.raw_x,
            ksq[sl],
        )
        m = C.shape[0]
        Cn = M1 @ np.ascontiguousarray(C.transpose(1, 0, 2)).reshape(C.shape[1], -1)
        # Contiguous stamps, or matmul leaves BLAS for a loop ten times slower.
        Cn = np.ascontiguousarray(Cn.reshape(nb + 1, m, npix).transpose(1, 0, 2))
        del C
        Gn[sl] = np.matmul(Cn, Cn.transpose(0, 2, 1))
        hn[sl] = np.matmul(Cn, jw[:, :, None])[:, :, 0]
        jj[sl] = np.einsum("sp,sp->s", jw, jw)
        del Cn
    Bflat = kbasis.images.reshape(nb, kw * kw)
    Om = np.zeros_like(Gn)
    Om[:, :nb, :nb] = _noise_normal(Bflat, Q.reshape(n_usable, kw * kw))
    return _Systems(Gn=Gn, hn=hn, jj=jj, Om=Om, expected=expected, npix=npix)


def _without_local_background(systems: _Systems, nb):
    """The stamps' systems with each stamp's own constant eliminated (Schur complement): residual
    sky under a star then cannot pull the scale. Returns (G, h, j) with a zero constant row."""
    Gn, hn, jj = systems.Gn, systems.hn, systems.jj
    n_usable = len(jj)
    g_kb = Gn[:, :nb, nb]
    g_bb = Gn[:, nb, nb]
    Gfit = Gn[:, :nb, :nb] - g_kb[:, :, None] * g_kb[:, None, :] / g_bb[:, None, None]
    hfit = hn[:, :nb] - g_kb * (hn[:, nb] / g_bb)[:, None]
    jfit = jj - hn[:, nb] ** 2 / g_bb
    Gfit = np.concatenate(
        [
            np.concatenate([Gfit, np.zeros((n_usable, nb, 1))], axis=2),
            np.zeros((n_usable, 1, nb + 1)),
        ],
        axis=1,
    )
    hfit = np.concatenate([hfit, np.zeros((n_usable, 1))], axis=1)
    return Gfit, hfit, jfit


def _odd_stamps(local, Gfit, hfit, chi2, expected, used, npix, clip_sigma):
    """Stamps in use whose scale or χ² stands out from the others'.

    Two tests, each against the spread of the stamps in use. The star's own scale: the factor λ
    on the model kernel that fits it best (1 for a star the kernel matches; a variable's flux ratio
    differs), with its statistical error. And its χ²: what the noise does not explain, as a
    fraction of the star's own signal (bright stars that the kernel matches as well as the rest
    keep a fraction like theirs; unflagged saturation and cosmic rays do not).
    """
    nb = local.shape[1] - 1
    kernel_part = local[:, :nb]
    signal = np.einsum(
        "sk,sk->s", np.matmul(Gfit[:, :nb, :nb], kernel_part[:, :, None])[:, :, 0], kernel_part
    )
    signal = np.maximum(signal, 1e-300)
    lam = np.einsum("sk,sk->s", kernel_part, hfit[:, :nb]) / signal
    lam_err = 1.0 / np.sqrt(signal)
    lam_centre = float(np.median(lam[used]))
    lam_spread = float(_utils.robust_std(lam[used]))
    odd_scale = np.abs(lam - lam_centre) > clip_sigma * np.sqrt(lam_err**2 + lam_spread**2)
    excess = chi2 - expected
    significant = excess > clip_sigma * math.sqrt(2.0 / npix) * expected
    fraction = excess / signal
    centre = float(np.median(fraction[used]))
    spread = float(_utils.robust_std(fraction[used]))
    odd_shape = significant & (fraction > centre + clip_sigma * spread)
    return used & (odd_scale | odd_shape)


def _fit(systems: _Systems, plan: _Plan, shape, options: KernelOptions) -> _Fit:
    """The global fit of the kernel's (and background's) polynomial coefficients, refitted without
    the stamps that stand out until none does."""
    nb = plan.basis.size
    degree = plan.degree
    Gn, hn, expected, npix = systems.Gn, systems.hn, systems.expected, systems.npix
    P_all = spatial_terms(plan.xs, plan.ys, degree, shape).T
    Pb = spatial_terms(plan.xs, plan.ys, options.background_degree, shape).T
    if options.local_background:
        # The field's background is fitted to the eliminated constants afterwards.
        Gfit, hfit, jfit = _without_local_background(systems, nb)
        Pfit = np.zeros((len(plan.ys), 0))
    else:
        Gfit, hfit, jfit, Pfit = Gn, hn, systems.jj, Pb
    used = np.ones(len(plan.ys), bool)
    eiv = bool(options.eiv_correction)
    n_iter = 0
    while True:
        n_iter += 1
        # The terms of a lower degree are the first columns (terms ordered by total degree).
        nsp = n_spatial(degree)
        P = P_all[:, :nsp]
        keep = np.ones(nb * nsp + Pfit.shape[1], bool)
        keep[n_spatial(min(options.scale_degree, degree)) : nsp] = (
            False  # the scale's terms beyond scale_degree
        )
        A, b = _assemble(Gfit[used], hfit[used], P[used], Pfit[used], nb)
        noise = (
            _assemble(systems.Om[used], hfit[used], P[used], Pfit[used], nb)[0][np.ix_(keep, keep)]
            if eiv
            else None
        )
        theta, n_capped = _solve(A[np.ix_(keep, keep)], b[keep], noise)
        if theta is None:
            theta = scipy.linalg.lstsq(A[np.ix_(keep, keep)], b[keep], check_finite=False)[0]
        full = np.zeros(len(keep))
        full[keep] = theta
        coef = full[: nb * nsp].reshape(nb, nsp)
        local = np.concatenate([P @ coef.T, (Pfit @ full[nb * nsp :])[:, None]], axis=1)
        chi2 = (
            jfit
            - 2.0 * np.einsum("sk,sk->s", local, hfit)
            + np.einsum("sk,sk->s", np.matmul(Gfit, local[:, :, None])[:, :, 0], local)
        )
        per_pixel = chi2 / npix
        if n_iter >= options.max_iterations:
            break
        reject = _odd_stamps(local, Gfit, hfit, chi2, expected, used, npix, options.clip_sigma)
        if not reject.any():
            break
        left = int(used.sum() - reject.sum())
        if left < MIN_STAMPS * n_spatial(degree):
            # Too few stamps for this spatial degree after the clipping: an automatic degree
            # steps down; a degree asked for, or too few stamps for any, keeps the last fit.
            if not plan.auto_degree or left < MIN_STAMPS:
                break
            degree = max(d for d in range(degree + 1) if MIN_STAMPS * n_spatial(d) <= left)
        used &= ~reject
    kernel_part = local[:, :nb]
    signal = np.einsum(
        "sk,sk->s", np.matmul(Gfit[:, :nb, :nb], kernel_part[:, :, None])[:, :, 0], kernel_part
    )
    # The stamps' residual power beyond the noise, as a fraction of their signal: the kernel's
    # systematic error ε² (dominated by the bright stamps, whose residuals are above the noise).
    measured_epsilon = math.sqrt(
        max(float(np.sum((chi2 - expected)[used]) / np.sum(signal[used])), 0.0)
    )
    epsilon = measured_epsilon if options.systematic == "auto" else float(options.systematic)
    if options.local_background:
        # The field's background: a polynomial through the stamps' constants, weighted by their precision.
        g_kb, g_bb = Gn[:, :nb, nb], Gn[:, nb, nb]
        constants = (hn[:, nb] - np.einsum("sk,sk->s", g_kb, local[:, :nb])) / g_bb
        wb = np.sqrt(g_bb[used])
        bg = np.linalg.lstsq(Pb[used] * wb[:, None], constants[used] * wb, rcond=None)[0]
    else:
        bg = full[nb * nsp :]
    return _Fit(
        coef=coef,
        bg=bg,
        degree=degree,
        used=used,
        chi2=chi2,
        per_pixel=per_pixel,
        n_iter=n_iter,
        eiv=eiv,
        n_capped=n_capped,
        epsilon=epsilon,
        measured_epsilon=measured_epsilon,
    )


def _tile_kernels(model: KernelModel, tile):
    """(kernels (nty, ntx, kw, kw), spatial terms at the tile centres) of the model on ``tile`` px blocks."""
    ny, nx = model.shape
    nty, ntx = -(-ny // tile), -(-nx // tile)
    cy = np.minimum(np.arange(nty) * tile + 0.5 * (tile - 1), ny - 1)
    cx = np.minimum(np.arange(ntx) * tile + 0.5 * (tile - 1), nx - 1)
    gx, gy = np.meshgrid(cx, cy)
    terms = spatial_terms(gx, gy, model.degree, model.shape)
    local_tiles = np.tensordot(model.coefficients, terms, axes=1)  # (nb, nty, ntx)
    kernels = np.tensordot(
        np.moveaxis(local_tiles, 0, -1), model.basis.images, axes=1
    )  # (nty, ntx, kw, kw)
    return kernels, terms


def _matched_model(T, VT, sT, model: KernelModel, acf, options: KernelOptions):
    """(T ⊗ K, its variance V_T ⊗ K²) with the correlation of T's noise (``acf``) taken in."""
    shape, work, tile = model.shape, np.dtype(options.dtype).type, options.tile
    ny, nx = shape
    r = model.half_width
    coef, degree, images = model.coefficients, model.degree, model.basis.images
    kernels, _ = _tile_kernels(model, tile)
    if options.convolution == "direct":
        padded = np.pad(T.astype(work, copy=False), r)
        conv = convolve_tiles(padded, kernels.astype(work), tile, np.empty(shape, work))
        del padded
    else:
        # T ⊗ K(x, y) = Σ_l p_l(x, y) (T ⊗ K_l), K_l the kernel of spatial term l: exact, one FFT of
        # T and one inverse per term.
        term_kernels = np.tensordot(coef.T, images, axes=1)  # (n_spatial, kw, kw)
        conv = _convolve_terms(T.astype(work, copy=False), term_kernels, degree, work)
    factor = _correlated_factor(kernels, acf)
    if VT is not None and options.convolution == "direct":
        var = convolve_tiles(
            np.pad(VT.astype(work, copy=False), r),
            (kernels * kernels).astype(work),
            tile,
            np.empty(shape, work),
        )
        if acf is not None:
            var *= _tiles_to_map(factor.astype(work), tile, shape)
    elif VT is not None:
        # V_T ⊗ K(x)² as V_T ⊗ K_c² (K_c: the kernel at the centre) times Σ K(x)² / Σ K_c² per tile:
        # exact where the kernel's shape is that of the centre, and the shape varies slowly.
        centre_kernel = model.at(0.5 * (nx - 1), 0.5 * (ny - 1))
        sq_c = float(np.sum(centre_kernel**2))
        # FFT round-off leaves tiny negative values where the variance is 0 (masked pixels).
        var = np.maximum(SameConvolution(shape, work).convolve(VT, centre_kernel**2), 0)
        scale_tiles = np.sum(kernels * kernels, axis=(-2, -1)) / sq_c * factor
        var *= _tiles_to_map(scale_tiles.astype(work), tile, shape)
    else:
        var = _tiles_to_map(
            (sT**2 * np.sum(kernels * kernels, axis=(-2, -1)) * factor).astype(work), tile, shape
        )
    return conv, var


@dataclass(eq=False)
class _Applied:
    """The difference ``J − T ⊗ K − b`` (residual sky boxes removed), its significance, the matched
    model ``T ⊗ K``, J's variance map, T's noise correlation and the registration error used."""

    diff: np.ndarray
    significance: np.ndarray
    conv: np.ndarray | None
    VJ_full: np.ndarray | None
    acf: np.ndarray | None
    astrometric_sigma: tuple


def _apply(
    images: _Images, model: KernelModel, fit: _Fit, astrometric_sigma, options: KernelOptions
) -> _Applied:
    """Convolve with the fitted kernel, subtract, and propagate the variance."""
    T, J, VT, VJ, sT, sJ = images.roles(model.convolved)
    shape, work, bad = images.shape, images.work, images.bad
    acf = _noise_acf(T, bad, options.noise_correlation)
    conv, var = _matched_model(T, VT, sT, model, acf, options)
    VJ_full = VJ.astype(work, copy=False) if VJ is not None else np.full(shape, sJ**2, dtype=work)
    var += VJ_full
    if fit.epsilon > 0:
        var += work(fit.epsilon**2) * np.square(conv)
    astro = _astrometric_variance(conv, astrometric_sigma, work)
    if astro is not None:
        var += astro
        del astro
    diff = J.astype(work, copy=False) - conv
    diff -= _poly_map(fit.bg, model.background_degree, shape, work)
    if options.background_box:
        # What the stamps' polynomial leaves of the two background maps' difference, from the
        # difference image itself (sigma-clipped boxes away from sources). The matched filter sums
        # a PSF's worth of pixels, so an offset of a few hundredths of σ would show in it.
        from ..diffim.stars import quick_background

        sources = bad | (np.abs(conv) > 3.0 * np.sqrt(var))
        residual_sky, _ = quick_background(
            np.where(sources, 0, diff), sources, box=options.background_box
        )
        diff -= residual_sky
        del residual_sky, sources
    significance = diff / np.sqrt(np.maximum(var, np.finfo(work).tiny))
    return _Applied(
        diff=diff,
        significance=significance,
        conv=conv,
        VJ_full=VJ_full,
        acf=acf,
        astrometric_sigma=astrometric_sigma,
    )


def _detection_filter(plan: _Plan, inputs: KernelInputs):
    """The PSF of the image not convolved, cut to 2 FWHM and normalised: the matched filter."""
    if plan.convolve == "reference":
        P = _target_psf(inputs.science_psf, plan.s_sci, "science_psf")
    else:
        P = _target_psf(inputs.reference_psf, plan.s_ref, "reference_psf")
    # The filter within 2 FWHM: the wings of a given PSF (boxes of 10 FWHM) add little S/N but would
    # widen the mask and the systematic term's reach by their whole box.
    crop = math.ceil(
        2.0 * GAUSSIAN_SIGMA_TO_FWHM * (plan.s_sci if plan.convolve == "reference" else plan.s_ref)
    )
    if P.shape[0] > 2 * crop + 1:
        c = P.shape[0] // 2
        P = P[c - crop : c + crop + 1, c - crop : c + crop + 1]
        P = P / P.sum()
    return P


def _measuring_stars(plan: _Plan, fit: _Fit, keep_px, half):
    """(ys, xs) of the stars that measure ε of the detection image: the stamps in use, or (whole-image
    fit) the stars with clean pixels within ``half`` px."""
    if plan.detection_stars is None:
        return plan.ys[fit.used], plan.xs[fit.used]
    # Stars of any kind, near masked pixels too: only those with clean pixels around them measure ε.
    ny, nx = keep_px.shape
    sy, sx = plan.detection_stars
    inside = (sy >= half) & (sy < ny - half) & (sx >= half) & (sx < nx - half)
    sy, sx = sy[inside], sx[inside]
    clean = np.array(
        [keep_px[a - half : a + half + 1, b - half : b + half + 1].all() for a, b in zip(sy, sx)],
        dtype=bool,
    )
    return sy[clean], sx[clean]


def _detection_image(diff, conv, VJ_full, out_mask, images, model, P, acfs, options):
    """The difference filtered with ``P`` over its propagated noise, and the ε it used.

    ``acfs``: the noise correlations of (T, J). Returns (num, var, model filtered) for
    :func:`_detection`.
    """
    shape, work, tile = images.shape, images.work, options.tile
    _, _, VT, _, sT, _ = images.roles(model.convolved)
    acf, acf_j = acfs
    # Untrusted pixels enter the filter as zeros with no variance: a masked star core or bad column
    # then costs a detection its share of the filter, not a PSF's width of masked pixels around it.
    keep_px = ~out_mask
    # K ⊗ P of each tile from those of the spatial terms' kernels (a few small convolutions, not one
    # per tile: 16 384 tiles at 4096² took a second).
    from scipy.signal import fftconvolve

    _, terms = _tile_kernels(model, tile)
    term_kernels = np.tensordot(model.coefficients.T, model.basis.images, axes=1)
    kp_terms = fftconvolve(term_kernels, P[::-1, ::-1][None], axes=(-2, -1))
    kp = np.tensordot(np.moveaxis(terms, 0, -1), kp_terms, axes=1)
    # The filtered difference and its variance, each input map freed once filtered (at 4096² every
    # image-sized float32 map is 64 MiB).
    fft = SameConvolution(shape, work)
    k = P.shape[-1]
    by_p, by_p2 = fft.kernel_spectrum(P[::-1, ::-1]), fft.kernel_spectrum(P * P)

    def filtered(image, spectrum, keep=None):
        F = fft.image_spectrum(image, k, keep)
        F *= spectrum
        return fft.back(F, k)

    num = filtered(diff, by_p, keep_px)
    # Round-off leaves tiny negatives at zeros.
    var_d = np.maximum(filtered(VJ_full, by_p2, keep_px), 0)
    var_d *= work(_correlated_factor(P[None], acf_j)[0])
    ratio = np.sum(kp * kp, axis=(-2, -1)) / float(np.sum(P * P)) * _correlated_factor(kp, acf)
    var_d += np.maximum(
        filtered(VT if VT is not None else work(sT**2), by_p2, keep_px), 0
    ) * _tiles_to_map(ratio.astype(work), tile, shape)
    return num, var_d, filtered(conv, by_p)


def _detect(
    images: _Images,
    plan: _Plan,
    fit: _Fit,
    model: KernelModel,
    applied: _Applied,
    inputs: KernelInputs,
    options: KernelOptions,
):
    """The matched-filter detection image, the ε it used, the output mask and its dilation radius.

    Frees ``applied.conv`` and ``applied.VJ_full`` once filtered (image-sized maps).
    """
    J = images.roles(plan.convolve)[1]
    acf_j = _noise_acf(J, images.bad, options.noise_correlation)
    del J
    P = _detection_filter(plan, inputs)
    radius = plan.r if options.mask_radius is None else options.mask_radius
    # Bad pixels of the convolved image spoil T ⊗ K within the kernel; the given mask (which may
    # combine both images') and the other image's bad pixels only their own pixels.
    out_mask = _untrusted(images.own[plan.convolve] & images.bad, radius) | images.bad
    num, var_d, model_filtered = _detection_image(
        applied.diff,
        applied.conv,
        applied.VJ_full,
        out_mask,
        images,
        model,
        P,
        (applied.acf, acf_j),
        options,
    )
    applied.conv = applied.VJ_full = None
    stars = _measuring_stars(plan, fit, ~out_mask, P.shape[0] // 2)
    detection, epsilon = _detection(
        num,
        var_d,
        model_filtered,
        P,
        options.systematic,
        stars,
        images.work,
        applied.astrometric_sigma,
    )
    return detection, epsilon, out_mask, radius


def _check_types(inputs, options):
    """(inputs, options) with their defaults, checked for their types."""
    inputs = KernelInputs() if inputs is None else inputs
    options = KernelOptions() if options is None else options
    if not isinstance(inputs, KernelInputs) or not isinstance(options, KernelOptions):
        raise AstridInputError(
            "kernel.subtract: inputs must be a KernelInputs and options a KernelOptions, got "
            f"{type(inputs).__name__} and {type(options).__name__}"
        )
    return inputs, options


def _stamp_table(plan: _Plan, fit: _Fit, npix) -> Table:
    """One row per stamp: centre, χ², pixels, and whether the clipping kept it."""
    return Table(
        {
            "x": plan.xs,
            "y": plan.ys,
            "chi2": fit.chi2,
            "npix": np.full(len(plan.ys), npix),
            "chi2_per_pixel": fit.per_pixel,
            "used": fit.used,
            "rejected": np.where(fit.used, "", "clipped"),
        }
    )


def _kernel_sums(model: KernelModel) -> dict:
    """The kernel's sum at the centre of the field, and its range over a 9 × 9 grid."""
    ny, nx = model.shape
    gxs, gys = np.meshgrid(np.linspace(0, nx - 1, 9), np.linspace(0, ny - 1, 9))
    sums = model.kernel_sum(gxs, gys)
    return {
        "centre": float(model.kernel_sum(0.5 * (nx - 1), 0.5 * (ny - 1))),
        "min": float(sums.min()),
        "max": float(sums.max()),
    }


def _kernel_model(plan, fit, shape, options: KernelOptions) -> KernelModel:
    """The fitted kernel model: the plan's basis with the fit's coefficients and background."""
    return KernelModel(
        basis=plan.basis,
        coefficients=fit.coef,
        degree=fit.degree,
        scale_degree=min(options.scale_degree, fit.degree),
        background_degree=options.background_degree,
        background=fit.bg,
        shape=shape,
        convolved=plan.convolve,
    )


@reuse_freed_memory()
def subtract(
    reference,
    science,
    *,
    stars=None,
    mask=None,
    inputs: KernelInputs | None = None,
    options: KernelOptions | None = None,
) -> KernelResult:
    """Fit a spatially varying PSF-matching kernel on star stamps and subtract.

    Parameters
    ----------
    reference, science : Image or array_like, shape (ny, nx)
        Aligned, background-subtracted images on one pixel grid (data units;
        NaN allowed). Images bring their ``mask`` and ``variance``.
    stars : astropy.table.Table or array_like, shape (n, 2), optional
        Star positions (x, y, pixels, 0-based) for the stamps, e.g. the
        clean rows of :func:`astrid.find_stars` on the reference (its
        ``flux`` orders them, ``saturated`` and ``masked`` rows are left
        out). Default: :func:`astrid.find_stars` on the reference.
    mask : array_like of bool, shape (ny, nx), optional
        True where either image must not be used (with the Images' masks).
        Bad pixels of the image that is convolved (its Image mask, NaN) are
        dilated by the kernel half-width in the output mask; those of the
        other image and of ``mask`` are not (pass Images with their own
        masks rather than one combined ``mask`` to benefit).
    inputs : KernelInputs, optional
        What is known of the pair: variance maps, noise levels, PSFs and
        their FWHMs, the registration error. Default: all measured.
    options : KernelOptions, optional
        How to fit (basis, spatial degrees, stamps, clipping, weights, noise
        terms) and the outputs' precision and fill. Default
        ``KernelOptions()``.

    Returns
    -------
    KernelResult
        The difference, its noise and significance, and the fitted kernel model.

    Raises
    ------
    AstridInputError
        Shapes differ, an option is out of range, or nothing is left unmasked.
    AstridPSFError
        Too few usable stars for the stamps (the message says how many were
        usable and why the others were not).
    """
    started = time.perf_counter()
    timings = {}
    inputs, options = _check_types(inputs, options)
    images, astrometric_sigma = _prepare(reference, science, mask, inputs, options.dtype)
    shape, work, bad = images.shape, images.work, images.bad
    ny, nx = shape

    start = time.perf_counter()
    plan = _plan(images, _positions(images, stars, options.min_snr), options)
    timings["select"] = time.perf_counter() - start
    with _single_threaded_blas():
        start = time.perf_counter()
        systems = _stamp_systems(images, plan, options.fit_weights)
        timings["systems"] = time.perf_counter() - start
        start = time.perf_counter()
        fit = _fit(systems, plan, shape, options)
    timings["solve"] = time.perf_counter() - start
    model = _kernel_model(plan, fit, shape, options)

    # --- apply: convolution, background, propagated variance
    start = time.perf_counter()
    applied = _apply(images, model, fit, astrometric_sigma, options)
    diff, significance = applied.diff, applied.significance
    timings["convolve"] = time.perf_counter() - start

    # --- detection: the difference filtered with the PSF of J (a point source's profile in it)
    start = time.perf_counter()
    detection, detection_epsilon, out_mask, radius = _detect(
        images, plan, fit, model, applied, inputs, options
    )
    if plan.convolve == "science":
        # Target minus model is reference − science ⊗ K: flip the sign, and express D in science units.
        significance = -significance
        detection = -detection
        diff /= -_poly_map(fit.coef[0], fit.degree, shape, work)
    timings["detect"] = time.perf_counter() - start

    if images.repaired.any():
        out_mask |= images.repaired
    _check_mask_fraction(out_mask, bad, images.repaired, radius, "kernel.subtract")
    for image in (diff, significance, detection):
        image[out_mask] = options.fill_value

    timings["total"] = time.perf_counter() - started
    dtype = options.dtype
    return KernelResult(
        D=diff.astype(dtype, copy=False),
        significance=significance.astype(dtype, copy=False),
        detection=detection.astype(dtype, copy=False),
        mask=out_mask,
        model=model,
        stamps=_stamp_table(plan, fit, systems.npix),
        convolved=plan.convolve,
        flux_ratio=float(model.flux_ratio(0.5 * (nx - 1), 0.5 * (ny - 1))),
        kernel_sum=_kernel_sums(model),
        n_iterations=fit.n_iter,
        eiv_corrected=fit.eiv,
        eiv_capped=fit.n_capped,
        systematic=fit.epsilon,
        measured_systematic=fit.measured_epsilon,
        detection_systematic=detection_epsilon,
        mask_radius=radius,
        significance_std=robust_std(significance, out_mask),
        detection_std=robust_std(detection, out_mask),
        n_stars_given=plan.n_given,
        skipped=plan.skipped,
        timings=timings,
    )
