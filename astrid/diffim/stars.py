"""Fast star finding, measurement and matching shared by alignment, PSF and photometry.

:func:`find_stars` detects local maxima of the image smoothed with a Gaussian
of the PSF's width and measures each one with Gaussian-windowed moments (the
``XWIN``/``YWIN`` centroids of SExtractor): sub-pixel position, aperture flux,
peak, signal-to-noise ratio, FWHM, roundness and flags for saturated, masked
and crowded stars. The kernels are compiled with numba (parallel over rows
and stars) for survey-sized images; ``benchmarks/bench_align.py`` times them.
:func:`match_stars` pairs two position lists by unique mutual nearest
neighbours.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table
from numba import njit, prange
from scipy.spatial import cKDTree

from .._utils import GAUSSIAN_SIGMA_TO_FWHM

# Compiled code below cannot call robust_std, so it takes astropy's factor as a constant.
from .._utils.stats import MAD_TO_SIGMA
from ..errors import AstridInputError
from ..io import Image
from .image import as_image

__all__ = ["find_stars", "match_stars"]


# Without a hint the detection kernel and the measurement window start at this
# FWHM (pixels); the measured FWHM then replaces it.
_DEFAULT_FWHM_GUESS = 3.0
# Stars at least this significant (S/N) decide the image's FWHM.
_FWHM_MIN_SNR = 20.0
_MESH_BOX = 64
# Sources narrower than this (pixels) are cosmic rays or hot pixels, not stars:
# they never decide the image's FWHM.
_MIN_STAR_FWHM = 1.0
# Stars share one FWHM: the image's is the densest cluster of widths within this factor.
_FWHM_CLUSTER = 1.25
# Sources more elongated than this do not decide the image's FWHM.
_MAX_FWHM_ROUNDNESS = 0.35
# A source at least this elongated with this many other detections along its
# long axis (within the band's half-width and length, in pixels) is a piece
# of a line: a satellite trail, a bleed, a diffraction spike.
_LINE_MIN_ROUNDNESS = 0.1
_LINE_NEIGHBOURS = 2
_LINE_HALF_WIDTH = 2.0
_LINE_LENGTH = 60.0
# The stellar locus: stars share the PSF's width whatever their flux, and
# galaxies are only ever wider. A cluster of widths clearly narrower than the
# densest one (by _FWHM_CLUSTER) is the stars' when it holds at least
# _LOCUS_MIN_STARS sources and _LOCUS_MIN_FRACTION of the densest cluster's,
# and its sources are rounder than those of the densest cluster (a galaxy
# population's median ellipticity is 0.2-0.3, a PSF's a few per cent).
_LOCUS_MIN_STARS = 5
_LOCUS_MIN_FRACTION = 0.1
# A locus whose median roundness exceeds this is not a PSF: galaxies (or trails).
_LOCUS_MAX_ROUNDNESS = 0.15
# Stars pile up at one width: of the sources within _LOCUS_AROUND (fractional) of the
# chosen width at least _LOCUS_MIN_PILEUP lie within _LOCUS_NEAR of it (stars on the
# simulated survey: 90 %; the JWST cluster field's locus: 60 %; a smooth spread of
# galaxy sizes: about a third). Judged when at least _LOCUS_MIN_JUDGE sources lie around.
_LOCUS_NEAR = 0.08
_LOCUS_AROUND = 0.3
_LOCUS_MIN_PILEUP = 0.4
_LOCUS_MIN_JUDGE = 8
# A prior FWHM (the header's seeing) picks the cluster within this factor of it.
_PRIOR_TOLERANCE = 1.3


# --------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _smooth_rows(img, k32):
    ny, nx = img.shape
    r = k32.size // 2
    out = np.zeros((ny, nx), np.float32)
    for i in prange(ny):
        row = img[i]
        acc = out[i]
        for t in range(-r, r + 1):
            w = k32[t + r]
            lo = max(0, -t)
            hi = min(nx, nx - t)
            for j in range(lo, hi):
                acc[j] += w * row[j + t]
            for j in range(0, lo):
                acc[j] += w * row[0]
            for j in range(hi, nx):
                acc[j] += w * row[nx - 1]
    return out


@njit(cache=True, parallel=True)
def _smooth_cols(tmp, k32):
    ny, nx = tmp.shape
    r = k32.size // 2
    out = np.zeros((ny, nx), np.float32)
    for i in prange(ny):
        acc = out[i]
        for t in range(-r, r + 1):
            w = k32[t + r]
            src = tmp[min(max(i + t, 0), ny - 1)]
            for j in range(nx):
                acc[j] += w * src[j]
    return out


def _smooth(img, kernel):
    """Separable convolution with a symmetric 1-D kernel, edges clamped.

    Loops run over whole rows per kernel tap so that they vectorise; the two
    passes are separate compiled functions because the second reads rows
    that other threads write in the first.
    """
    k32 = np.ascontiguousarray(kernel, dtype=np.float32)
    return _smooth_cols(_smooth_rows(img, k32), k32)


@njit(cache=True)
def _local_maxima(smooth, noise, scalar_noise, factor, radius, border):
    """Pixels above ``factor * noise`` that are the maximum of their (2r+1)^2 box.

    Ties go to the first pixel in raster order, so a flat top gives one peak.
    """
    ny, nx = smooth.shape
    ys = []
    xs = []
    for i in range(border, ny - border):
        for j in range(border, nx - border):
            v = smooth[i, j]
            t = factor * (noise[0, 0] if scalar_noise else noise[i, j])
            if not (v > t):
                continue
            is_max = True
            for ii in range(max(i - radius, 0), min(i + radius + 1, ny)):
                for jj in range(max(j - radius, 0), min(j + radius + 1, nx)):
                    w = smooth[ii, jj]
                    if w > v or (w == v and (ii < i or (ii == i and jj < j))):
                        is_max = False
                        break
                if not is_max:
                    break
            if is_max:
                ys.append(i)
                xs.append(j)
    return np.array(ys, dtype=np.int64), np.array(xs, dtype=np.int64)


@njit(cache=True, parallel=True)
def _measure(data, bad, sat, has_sat, noise, scalar_noise, ys, xs, sigma_w, r_ap):
    """Windowed centroid, moments and aperture photometry of each peak.

    ``data`` is background-subtracted with bad pixels set to zero.
    Returns an (n, 11) array: x, y, flux, peak, npix, nbad, nsat, mxx, myy,
    mxy, noise (the local background RMS per pixel).
    """
    n = ys.size
    ny, nx = data.shape
    out = np.full((n, 11), np.nan)
    half = int(math.ceil(4.0 * sigma_w))
    rw2 = (4.0 * sigma_w) ** 2
    inv2s2 = 1.0 / (2.0 * sigma_w * sigma_w)
    hap = int(math.ceil(r_ap))
    for k in prange(n):
        x = float(xs[k])
        y = float(ys[k])
        ok = True
        for _it in range(20):
            x0 = int(round(x))
            y0 = int(round(y))
            sw = 0.0
            sx = 0.0
            sy = 0.0
            for i in range(max(y0 - half, 0), min(y0 + half + 1, ny)):
                dy = i - y
                for j in range(max(x0 - half, 0), min(x0 + half + 1, nx)):
                    if bad[i, j]:
                        continue
                    dx = j - x
                    r2 = dx * dx + dy * dy
                    if r2 > rw2:
                        continue
                    w = math.exp(-r2 * inv2s2) * data[i, j]
                    sw += w
                    sx += w * dx
                    sy += w * dy
            if sw <= 0.0:
                ok = False
                break
            # Gauss-Newton step of SExtractor's windowed centroid.
            ddx = min(max(2.0 * sx / sw, -1.0), 1.0)
            ddy = min(max(2.0 * sy / sw, -1.0), 1.0)
            x += ddx
            y += ddy
            if abs(ddx) < 1e-4 and abs(ddy) < 1e-4:
                break
        if not ok or abs(x - xs[k]) > 2.0 * sigma_w + 1.0 or abs(y - ys[k]) > 2.0 * sigma_w + 1.0:
            # Diverged (noise, blend): keep the peak pixel, moments from there.
            x = float(xs[k])
            y = float(ys[k])
        x0 = int(round(x))
        y0 = int(round(y))
        sw = 0.0
        mxx = 0.0
        myy = 0.0
        mxy = 0.0
        for i in range(max(y0 - half, 0), min(y0 + half + 1, ny)):
            dy = i - y
            for j in range(max(x0 - half, 0), min(x0 + half + 1, nx)):
                if bad[i, j]:
                    continue
                dx = j - x
                r2 = dx * dx + dy * dy
                if r2 > rw2:
                    continue
                w = math.exp(-r2 * inv2s2) * data[i, j]
                sw += w
                mxx += w * dx * dx
                myy += w * dy * dy
                mxy += w * dx * dy
        flux = 0.0
        npix = 0
        nbad = 0
        nsat = 0
        peak = -np.inf
        nsum = 0.0
        for i in range(y0 - hap, y0 + hap + 1):
            dy = i - y
            for j in range(x0 - hap, x0 + hap + 1):
                dx = j - x
                r2 = dx * dx + dy * dy
                if r2 > r_ap * r_ap:
                    continue
                npix += 1
                if i < 0 or j < 0 or i >= ny or j >= nx or bad[i, j]:
                    nbad += 1
                    continue
                if has_sat and sat[i, j]:
                    nsat += 1
                v = data[i, j]
                flux += v
                if r2 <= 2.25 and v > peak:
                    peak = v
                nsum += noise[0, 0] if scalar_noise else noise[i, j]
        out[k, 0] = x
        out[k, 1] = y
        out[k, 2] = flux
        out[k, 3] = peak
        out[k, 4] = npix
        out[k, 5] = nbad
        out[k, 6] = nsat
        if sw > 0.0:
            out[k, 7] = mxx / sw
            out[k, 8] = myy / sw
            out[k, 9] = mxy / sw
        if npix - nbad > 0:
            out[k, 10] = nsum / (npix - nbad)
    return out


@njit(cache=True)
def clipped_median_std(values, sigma, maxiters):
    """Median and MAD-based standard deviation of ``values`` after sigma clipping.

    A separate compiled function on purpose: numba hoists the temporaries of
    array expressions out of ``prange`` loops, where threads would share them.
    """
    v = values.copy()
    centre = np.median(v)
    sig = MAD_TO_SIGMA * np.median(np.abs(v - centre))
    for _ in range(maxiters):
        if sig <= 0.0:
            break
        keep = np.abs(v - centre) <= sigma * sig
        if keep.all() or keep.sum() < 8:
            break
        v = v[keep]
        centre = np.median(v)
        sig = MAD_TO_SIGMA * np.median(np.abs(v - centre))
    return centre, sig, v.size


@njit(cache=True, parallel=True)
def _mesh_stats(data, bad, box, stride):
    """Sigma-clipped median and RMS of each box x box cell (sub-sampled)."""
    ny, nx = data.shape
    my = (ny + box - 1) // box
    mx = (nx + box - 1) // box
    med = np.full((my, mx), np.nan)
    rms = np.full((my, mx), np.nan)
    # One scratch row per cell: numba hoists a fixed-size np.empty out of a
    # prange loop, and threads would then share it.
    scratch = np.empty((my * mx, ((box + stride - 1) // stride) ** 2), dtype=data.dtype)
    for c in prange(my * mx):
        bi = c // mx
        bj = c % mx
        m = 0
        for i in range(bi * box, min((bi + 1) * box, ny), stride):
            for j in range(bj * box, min((bj + 1) * box, nx), stride):
                if not bad[i, j]:
                    scratch[c, m] = data[i, j]
                    m += 1
        if m >= 16:
            centre, sig, _ = clipped_median_std(scratch[c, :m], 3.0, 5)
            med[bi, bj] = centre
            rms[bi, bj] = sig
    return med, rms


@njit(cache=True, parallel=True)
def upsample_mesh(mesh, box, ny, nx):
    """Bilinear interpolation of cell-centre values to the full pixel grid."""
    my, mx = mesh.shape
    out = np.empty((ny, nx), np.float32)
    for i in prange(ny):
        gy = (i + 0.5) / box - 0.5
        iy = min(max(int(math.floor(gy)), 0), max(my - 2, 0))
        fy = min(max(gy - iy, 0.0), 1.0) if my > 1 else 0.0
        iy1 = min(iy + 1, my - 1)
        for j in range(nx):
            gx = (j + 0.5) / box - 0.5
            ix = min(max(int(math.floor(gx)), 0), max(mx - 2, 0))
            fx = min(max(gx - ix, 0.0), 1.0) if mx > 1 else 0.0
            ix1 = min(ix + 1, mx - 1)
            out[i, j] = (1 - fy) * ((1 - fx) * mesh[iy, ix] + fx * mesh[iy, ix1]) + fy * (
                (1 - fx) * mesh[iy1, ix] + fx * mesh[iy1, ix1]
            )
    return out


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _fill_mesh(mesh: np.ndarray) -> np.ndarray:
    """Replace empty (NaN) mesh cells by the median of their valid neighbours, then 3x3 median."""
    from scipy.ndimage import generic_filter, median_filter

    mesh = mesh.copy()
    if not np.isfinite(mesh).any():
        return mesh

    def finite_median(values):
        values = values[np.isfinite(values)]
        return np.median(values) if values.size else np.nan

    for _ in range(max(mesh.shape)):
        holes = ~np.isfinite(mesh)
        if not holes.any():
            break
        # Grow valid cells into the holes one ring at a time.
        filled = generic_filter(mesh, finite_median, size=3, mode="nearest")
        mesh[holes] = filled[holes]
    mesh[~np.isfinite(mesh)] = np.nanmedian(mesh)
    if min(mesh.shape) >= 3:
        mesh = median_filter(mesh, size=3, mode="nearest")
    return mesh


def quick_background(data: np.ndarray, bad: np.ndarray, box: int = _MESH_BOX):
    """Fast background and RMS maps (float32) from sigma-clipped box statistics.

    A light-weight stand-in for :func:`astrid.estimate_background` when only
    a detection threshold is needed: statistics on every other pixel of each
    ``box``-pixel cell, a 3x3 median filter over the cells and bilinear
    interpolation back to full resolution.
    """
    ny, nx = data.shape
    box = int(max(8, min(box, ny, nx)))
    med, rms = _mesh_stats(data, bad, box, 2)
    med = _fill_mesh(med)
    rms = _fill_mesh(rms)
    if not np.isfinite(med).all():
        raise AstridInputError("data: no finite, unmasked pixels to estimate a background from")
    if med.size == 1:
        return (np.full((1, 1), med[0, 0], np.float32), np.full((1, 1), rms[0, 0], np.float32))
    return upsample_mesh(med, box, ny, nx), upsample_mesh(rms, box, ny, nx)


def _as_map(value, shape, name: str) -> np.ndarray:
    """A scalar or (ny, nx) array as a C-contiguous float32 2-D array (1x1 for scalars)."""
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    if arr.shape != tuple(shape):
        raise AstridInputError(
            f"{name}: shape {arr.shape} does not match data shape {tuple(shape)}"
        )
    return np.ascontiguousarray(arr)


def prepare_data(data, mask, name: str = "data", purpose: str = ""):
    """Validated float data and the combined bad-pixel mask (masked or non-finite).

    ``data`` is an array (``numpy.ma`` masks count), an Image or a ``(data, mask)`` pair.

    ``purpose`` completes the error for an image with no usable pixel
    ("... pixels to estimate a PSF from").
    """
    if data is None:
        raise AstridInputError(f"{name}: got None, expected a 2-D array")
    if isinstance(data, (Image, tuple)):
        # An Image or (data, mask) pair, through the one normaliser; its own mask counts. (Paths
        # are not read here: these array-level functions refuse a string as before.)
        image = as_image(data, name)
        mask = (
            image.mask
            if mask is None
            else np.asarray(mask, dtype=bool) | np.asarray(image.mask, dtype=bool)
        )
        data = image.data
    ma_mask = None
    if isinstance(data, np.ma.MaskedArray):
        # The values under a numpy.ma mask are not pixels.
        ma_mask = np.ma.getmaskarray(data)
        data = np.ma.getdata(data)
    try:
        data = np.asarray(data)
    except Exception as exc:  # ragged lists and the like
        raise AstridInputError(f"{name}: cannot be read as an array ({exc})") from exc
    if data.ndim != 2:
        raise AstridInputError(f"{name}: must be a 2-D array, got shape {data.shape}")
    if not (
        np.issubdtype(data.dtype, np.floating)
        or np.issubdtype(data.dtype, np.integer)
        or data.dtype == np.bool_
    ):
        raise AstridInputError(f"{name}: must be a real-valued array, got dtype {data.dtype}")
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32)
    finite = np.isfinite(data)
    bad = ~finite
    if mask is not None:
        if isinstance(mask, np.ma.MaskedArray):
            mask = np.ma.getdata(mask) | np.ma.getmaskarray(mask)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise AstridInputError(
                f"mask: shape {mask.shape} does not match {name} shape {data.shape}"
            )
        bad |= mask
    if ma_mask is not None:
        bad |= ma_mask
    if bad.all():
        n_finite = int(finite.sum())
        if n_finite:
            why = (
                f"{100.0 * n_finite / data.size:.1f} % of its pixels are finite, "
                "but every one of them is masked (mask, numpy.ma mask or saturation)"
            )
        else:
            why = f"all {data.size} pixels are NaN or inf"
        raise AstridInputError(
            f"{name}: no finite, unmasked pixels{' ' + purpose if purpose else ''} ({why})"
        )
    return data, bad


def _gaussian_kernel(fwhm: float) -> np.ndarray:
    sigma = fwhm / GAUSSIAN_SIGMA_TO_FWHM
    r = max(1, int(math.ceil(2.5 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _moments_fwhm(mxx, myy, sigma_w):
    """FWHM (pixels) of a Gaussian whose window-weighted second moments are these.

    A Gaussian of width s seen through a Gaussian window of width w has
    weighted second moment s^2 w^2 / (s^2 + w^2); inverting that removes the
    window's bias exactly for Gaussian stars and closely for Moffat ones.
    """
    m = 0.5 * (mxx + myy)
    w2 = sigma_w**2
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = m * w2 / (w2 - m)
        fwhm = GAUSSIAN_SIGMA_TO_FWHM * np.sqrt(s2)
    # No spread at all (a single hot pixel) is a width of zero; a spread the
    # window cannot tell from flat is unmeasurable.
    fwhm = np.where(m <= 0, 0.0, np.where(m < 0.98 * w2, fwhm, np.nan))
    return fwhm


def _isolated(xy: np.ndarray, radius: float) -> np.ndarray:
    """True for positions with no other position within ``radius``."""
    if len(xy) < 2:
        return np.ones(len(xy), dtype=bool)
    ok = np.isfinite(xy).all(axis=1)
    out = np.zeros(len(xy), dtype=bool)
    if ok.any():
        tree = cKDTree(xy[ok])
        out[ok] = tree.query_ball_point(xy[ok], r=radius, return_length=True) <= 1
    return out


def _on_lines(meas: np.ndarray, roundness: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """True for the ``candidates`` that are pieces of a line (a satellite trail, a bleed).

    A trail breaks into a row of detections of one width, each elongated
    along the trail; enough of them outnumber the stars of a shallow image
    and would set its FWHM. A candidate is on a line when it is elongated
    and at least two other detections lie in a narrow band along its long
    axis. A star is round, and its neighbours fall at random angles.
    ``meas`` holds the detections' measurements (x, y first, the moments in
    columns 7-9) and ``roundness`` their :func:`_roundness`.
    """
    xy = meas[:, :2]
    out = np.zeros(len(xy), dtype=bool)
    finite = np.isfinite(xy).all(axis=1)
    check = np.flatnonzero(candidates & (roundness >= _LINE_MIN_ROUNDNESS) & finite)
    if check.size == 0 or finite.sum() < _LINE_NEIGHBOURS + 1:
        return out
    everyone = np.flatnonzero(finite)
    tree = cKDTree(xy[everyone])
    mxx, myy, mxy = meas[:, 7], meas[:, 8], meas[:, 9]
    for i, near in zip(check, tree.query_ball_point(xy[check], r=_LINE_LENGTH)):
        angle = 0.5 * math.atan2(2.0 * mxy[i], mxx[i] - myy[i])  # long axis
        d = xy[everyone[near]] - xy[i]
        across = np.abs(-d[:, 0] * math.sin(angle) + d[:, 1] * math.cos(angle))
        along = np.abs(d[:, 0] * math.cos(angle) + d[:, 1] * math.sin(angle))
        out[i] = np.count_nonzero((across <= _LINE_HALF_WIDTH) & (along > 0.5)) >= _LINE_NEIGHBOURS
    return out


def clean_stars(stars) -> np.ndarray:
    """True for the rows of a :func:`find_stars` table that are isolated, unsaturated and unmasked."""
    return (
        np.asarray(stars["isolated"])
        & ~np.asarray(stars["saturated"])
        & ~np.asarray(stars["masked"])
    )


def _roundness(meas: np.ndarray) -> np.ndarray:
    """Ellipticity |(M_xx - M_yy, 2 M_xy)| / (M_xx + M_yy) of the windowed moments (0: round)."""
    mxx, myy, mxy = meas[:, 7], meas[:, 8], meas[:, 9]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.hypot(mxx - myy, 2.0 * mxy) / (mxx + myy)


def _clusters(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted widths ``v``: the end index and size of the window [v_i, 1.25 v_i] starting at each."""
    ends = np.searchsorted(v, v * _FWHM_CLUSTER, side="right")
    return ends, ends - np.arange(v.size)


def _stellar_locus(widths: np.ndarray, roundness: np.ndarray, prior: float | None = None) -> dict:
    """The width of the stars among ``widths``: their locus, or the densest cluster of widths.

    Parameters
    ----------
    widths, roundness : numpy.ndarray
        FWHM (pixels) and roundness of the clean, significant sources.
    prior : float, optional
        Expected FWHM in pixels (the header's seeing).

    Returns
    -------
    dict
        ``fwhm`` (median width of the chosen cluster, NaN if none), ``n``
        (its size), ``source`` (``"densest"``: the most populated cluster of
        widths within a factor 1.25, as always before; ``"locus"``: a
        narrower, rounder cluster under a densest one of galaxies;
        ``"prior"``: the round cluster at the prior's width, when the
        others are too elongated to be stars), ``roundness`` (its
        median roundness), ``stellar`` (False when the chosen cluster is not
        round enough to be stars) and ``reason`` (why not, or why a prior
        disagrees; empty when all is well).

    Notes
    -----
    In a field of stars the densest cluster is the stars'. On a galaxy
    cluster or a deep extragalactic field the galaxies outnumber the stars
    and their most common width is several times the PSF's; the stars are
    then the sequence at the small end: populated (at least 5 sources and a
    tenth of the densest cluster), clearly narrower than the densest cluster
    and rounder than it.
    """
    finite = np.isfinite(widths)
    order = np.argsort(widths[finite], kind="stable")
    v = widths[finite][order]
    rnd = np.nan_to_num(roundness[finite][order], nan=1.0)
    out = {
        "fwhm": float("nan"),
        "n": 0,
        "source": "densest",
        "roundness": float("nan"),
        "stellar": False,
        "reason": "no clean source with S/N > 20 to measure the stars' width on",
    }
    if v.size == 0:
        return out
    ends, counts = _clusters(v)
    best = int(np.argmax(counts))

    def describe(i, source):
        members = slice(i, ends[i])
        return {
            "fwhm": float(np.median(v[members])),
            "n": int(counts[i]),
            "source": source,
            "roundness": float(np.median(rnd[members])),
            "stellar": True,
            "reason": "",
        }

    chosen = describe(best, "densest")
    need = max(_LOCUS_MIN_STARS, int(math.ceil(_LOCUS_MIN_FRACTION * counts[best])))
    # Narrower populated windows, each described by its median width and roundness.
    narrower = [i for i in range(best) if counts[i] >= need]
    if narrower:
        i0 = narrower[0]
        # The densest window among those overlapping the first populated one: the locus itself.
        span = [i for i in narrower if v[i] <= v[i0] * _FWHM_CLUSTER]
        i = max(span, key=lambda k: counts[k])
        locus = describe(i, "locus")
        if (
            locus["fwhm"] * _FWHM_CLUSTER < chosen["fwhm"]
            and locus["roundness"] < chosen["roundness"]
            and locus["roundness"] <= _LOCUS_MAX_ROUNDNESS
        ):
            chosen = locus
    if prior is not None and np.isfinite(prior) and prior > 0:
        if not (1.0 / _PRIOR_TOLERANCE <= chosen["fwhm"] / prior <= _PRIOR_TOLERANCE):
            # A round sequence of stars outranks a header (which can be wrong); sources too
            # elongated to be stars do not, and the cluster at the prior's width replaces them.
            near = [
                k
                for k in range(v.size)
                if counts[k] >= 3
                and 1.0 / _PRIOR_TOLERANCE <= np.median(v[k : ends[k]]) / prior <= _PRIOR_TOLERANCE
                and np.median(rnd[k : ends[k]]) <= _LOCUS_MAX_ROUNDNESS
            ]
            if near and chosen["roundness"] > _LOCUS_MAX_ROUNDNESS:
                chosen = describe(max(near, key=lambda k: counts[k]), "prior")
            else:
                chosen["reason"] = (
                    f"the stars' width {chosen['fwhm']:.2f} px disagrees with the expected "
                    f"(header) FWHM {prior:.2f} px by more than a factor {_PRIOR_TOLERANCE}"
                )
    rel = v / chosen["fwhm"]
    n_near = int(np.count_nonzero(np.abs(rel - 1.0) <= _LOCUS_NEAR))
    n_around = int(np.count_nonzero(np.abs(rel - 1.0) <= _LOCUS_AROUND))
    if chosen["roundness"] > _LOCUS_MAX_ROUNDNESS:
        chosen["stellar"] = False
        chosen["reason"] = (
            f"no stellar locus: the most common width ({chosen['fwhm']:.2f} px, {chosen['n']} "
            f"sources) belongs to sources of median roundness {chosen['roundness']:.2f} "
            f"(above {_LOCUS_MAX_ROUNDNESS}: galaxies or trails, not stars), and no rounder, "
            "narrower sequence was found"
        )
    elif n_around >= _LOCUS_MIN_JUDGE and n_near < _LOCUS_MIN_PILEUP * n_around:
        chosen["stellar"] = False
        chosen["reason"] = (
            f"no stellar locus: the widths do not pile up at {chosen['fwhm']:.2f} px as stars' do "
            f"({n_near} of the {n_around} sources within {100 * _LOCUS_AROUND:.0f} % of it lie "
            f"within {100 * _LOCUS_NEAR:.0f} %, fewer than {100 * _LOCUS_MIN_PILEUP:.0f} %): "
            "a smooth spread of sizes, as of galaxies"
        )
    return chosen


def _run_once(sub, bad, sat, has_sat, noise_map, threshold, fwhm, border):
    kernel = _gaussian_kernel(fwhm)
    smooth = _smooth(sub, kernel)
    # White noise smoothed by a normalised kernel k drops by sqrt(sum k^2) (separable: squared).
    noise_factor = float(np.sum(kernel.astype(np.float64) ** 2))
    radius = max(2, int(round(0.8 * fwhm)))
    ys, xs = _local_maxima(
        smooth, noise_map, noise_map.size == 1, threshold * noise_factor, radius, border
    )
    sigma_w = fwhm / GAUSSIAN_SIGMA_TO_FWHM
    r_ap = max(1.5 * fwhm, 2.0)
    meas = _measure(sub, bad, sat, has_sat, noise_map, noise_map.size == 1, ys, xs, sigma_w, r_ap)
    return meas, sigma_w, r_ap


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def _noise_maps(data, bad, background, rms, name):
    """Background and noise maps from what the caller gave (a Background, arrays, numbers) or a mesh."""
    shape = data.shape
    bkg_obj_rms = getattr(background, "rms", None)
    if hasattr(background, "background"):
        background = background.background
    if rms is None and bkg_obj_rms is not None:
        rms = bkg_obj_rms
    rms_given = rms is not None
    if background is None or rms is None:
        mesh_bkg, mesh_rms = quick_background(data, bad)
        if background is None:
            background = mesh_bkg
        if rms is None:
            rms = mesh_rms
    bkg_map = _as_map(background, shape, "background")
    noise_map = _as_map(rms, shape, "rms")
    if rms_given and not (np.all(np.isfinite(noise_map)) and noise_map.min() > 0):
        n_bad = int(np.count_nonzero(~np.isfinite(noise_map)))
        low = float(np.nanmin(noise_map)) if n_bad < noise_map.size else float("nan")
        raise AstridInputError(
            f"rms: the background noise of {name} must be finite and positive everywhere, but "
            f"{n_bad} values are not finite and the smallest is {low:g}"
            + (" (a constant or zero image has no noise)" if low == 0 else "")
        )
    if not rms_given and not noise_map.min() > 0:
        # A noiseless (simulated or constant) sky: any positive signal is significant.
        positive = noise_map[noise_map > 0]
        floor = (
            positive.min() if positive.size else 1e-6 * max(float(np.abs(data[~bad]).max()), 1e-30)
        )
        noise_map = np.maximum(noise_map, np.float32(floor))

    return bkg_map, noise_map


def _detect(arrays, threshold, fwhm, seeing):
    """Detect and measure, re-detecting with the measured FWHM until it settles (at most 4 passes)."""
    sub, bad, sat, has_sat, noise_map = arrays
    guess = float(fwhm) if fwhm is not None else _DEFAULT_FWHM_GUESS
    image_fwhm = guess
    border = 1
    for _ in range(4 if fwhm is None else 1):
        meas, sigma_w, r_ap = _run_once(sub, bad, sat, has_sat, noise_map, threshold, guess, border)
        star_fwhm = _moments_fwhm(meas[:, 7], meas[:, 8], sigma_w)
        snr = meas[:, 2] / (meas[:, 10] * np.sqrt(np.maximum(meas[:, 4] - meas[:, 5], 1)))
        roundness = _roundness(meas)
        good = (
            (snr > _FWHM_MIN_SNR)
            & (meas[:, 5] == 0)
            & (meas[:, 6] == 0)
            & np.isfinite(star_fwhm)
            & (star_fwhm >= _MIN_STAR_FWHM)
            # Satellite trails and bleeds break into many elongated "sources" of one width.
            & (roundness < _MAX_FWHM_ROUNDNESS)
            # A neighbour inside the window inflates the moments, and the wider
            # window of the next pass would inflate them further.
            & _isolated(meas[:, :2], 4.0 * sigma_w + 2.0)
        )
        good &= ~_on_lines(meas, roundness, good)
        locus = _stellar_locus(star_fwhm[good], roundness[good], seeing)
        mode, n_fwhm = locus["fwhm"], locus["n"]
        if n_fwhm >= 3:
            image_fwhm = mode
        if fwhm is not None:
            break
        # Converged, or no better information: stop re-detecting.
        if good.sum() < 3 or abs(image_fwhm - guess) < 0.05 * guess:
            break
        guess = float(np.clip(image_fwhm, 1.0, 30.0))

    return meas, r_ap, star_fwhm, snr, roundness, image_fwhm, locus


def _table(meas, columns, image_fwhm, locus, max_stars, numbers):
    """The find_stars table, brightest first, with the image's FWHM and stellar locus in ``meta``."""
    snr, star_fwhm, roundness, isolated = columns
    threshold, r_ap, isolation_radius = numbers
    n_fwhm = locus["n"]
    xy = meas[:, :2]
    table = Table()
    table["x"] = xy[:, 0]
    table["y"] = xy[:, 1]
    table["flux"] = meas[:, 2]
    table["peak"] = meas[:, 3]
    table["snr"] = snr
    table["fwhm"] = star_fwhm
    table["sharpness"] = star_fwhm / image_fwhm
    table["roundness"] = roundness
    table["isolated"] = isolated
    table["saturated"] = meas[:, 6] > 0
    table["masked"] = meas[:, 5] > 0
    order = np.argsort(-np.nan_to_num(meas[:, 2], nan=-np.inf), kind="stable")
    table = table[order]
    if max_stars is not None:
        table = table[: int(max_stars)]
    table.meta["fwhm"] = image_fwhm
    table.meta["fwhm_nstars"] = n_fwhm if n_fwhm >= 3 else 0
    table.meta["fwhm_source"] = locus["source"] if n_fwhm >= 3 else "guess"
    table.meta["locus_roundness"] = locus["roundness"]
    table.meta["stellar_locus"] = bool(locus["stellar"] and n_fwhm >= 3)
    table.meta["locus_reason"] = (
        locus["reason"]
        if n_fwhm >= 3
        else (
            f"only {n_fwhm} clean sources with S/N > 20 share a width (need 3): the FWHM is the starting guess"
        )
    )
    table.meta["threshold"] = threshold
    table.meta["aperture_radius"] = r_ap
    table.meta["isolation_radius"] = isolation_radius
    return table


def find_stars(
    data,
    mask=None,
    background=None,
    rms=None,
    threshold: float = 5.0,
    fwhm: float | None = None,
    max_stars: int | None = None,
    *,
    saturation: float | None = None,
    isolation_radius: float | None = None,
    seeing: float | None = None,
) -> Table:
    """Detect and measure point-like sources.

    Parameters
    ----------
    data : numpy.ndarray, shape (ny, nx), Image or (data, mask) pair
        Image in data units. Non-finite pixels are ignored. Images and pairs are read
        with :func:`astrid.as_image` (their masks count).
    mask : numpy.ndarray of bool, shape (ny, nx), optional
        True where a pixel must not be used.
    background : float, numpy.ndarray or Background, optional
        Sky level (data units), a map of it, or the result of
        :func:`~astrid.estimate_background` (whose ``rms`` is then used too).
        By default a fast sigma-clipped mesh estimate (64-pixel boxes).
    rms : float or numpy.ndarray, optional
        Background noise per pixel (data units). By default from the same
        mesh estimate.
    threshold : float, optional
        Detection threshold in units of the noise of the smoothed image
        (a matched-filter S/N), default 5.
    fwhm : float, optional
        PSF FWHM in pixels used for the detection kernel and the measurement
        window. By default 3 pixels to start, then the measured FWHM of the
        bright stars (see ``meta``), iterated.
    max_stars : int, optional
        Keep only the brightest ``max_stars`` (by flux).
    saturation : float, optional
        Saturation level in data units (before background subtraction);
        stars touching it are flagged ``saturated``.
    isolation_radius : float, optional
        A star is ``isolated`` when no other detection lies within this
        radius (pixels); default 3 FWHM.
    seeing : float, optional
        Expected FWHM in pixels (e.g. the header's seeing,
        :attr:`astrid.ImageMeta.seeing_fwhm_pix`): a prior that picks the
        round cluster of widths within a factor 1.3 of it when no stellar
        locus is found (a round sequence of stars outranks the header, which
        can be wrong: the disagreement goes to ``meta["locus_reason"]``).
        Unlike ``fwhm`` it does not fix the detection kernel.

    Returns
    -------
    astropy.table.Table
        One row per source, brightest first, with columns ``x``, ``y``
        (0-based pixel coordinates of the windowed centroid), ``flux``
        (background-subtracted sum within 1.5 FWHM, data units), ``peak``
        (brightest background-subtracted pixel near the centre), ``snr``
        (background-limited S/N of ``flux``), ``fwhm`` (pixels, from the
        window-corrected second moments), ``sharpness`` (``fwhm`` over the
        image's FWHM: near 1 for stars, well below for cosmic rays and
        hot pixels, above for galaxies), ``roundness`` (ellipticity
        ``|M_xx - M_yy, 2 M_xy| / (M_xx + M_yy)``, 0 for round),
        ``isolated``, ``saturated`` and ``masked`` (a bad pixel within the
        aperture) flags. ``meta`` holds ``fwhm`` (the image's FWHM in pixels:
        the median of the densest cluster of widths of the clean sources with
        S/N > 20, which cosmic rays and galaxies do not pull; the starting
        guess when fewer than three stars measure it), ``fwhm_nstars`` (stars
        behind it, 0 for the guess), ``fwhm_source`` (``"densest"``: the
        densest cluster of widths; ``"locus"``: a narrower, rounder sequence
        of stars under a densest cluster of galaxies; ``"prior"``: the
        cluster at the ``seeing`` prior; ``"guess"``), ``locus_roundness``,
        ``stellar_locus`` (False when the sources that set ``fwhm`` are not
        round enough to be stars) and ``locus_reason`` (why not, or why the
        prior disagrees; empty when all is well), ``threshold``,
        ``aperture_radius`` and ``isolation_radius``.

    Raises
    ------
    AstridInputError
        Data not 2-D, mismatched shapes, or no finite unmasked pixel.
    """
    # Errors name the image by its file when it has one.
    name = getattr(getattr(data, "meta", None), "path", None) or "data"
    data, bad = prepare_data(data, mask, name=name)
    if threshold <= 0:
        raise AstridInputError(f"threshold must be positive, got {threshold}")
    if fwhm is not None and not (np.isfinite(fwhm) and fwhm > 0):
        raise AstridInputError(f"fwhm must be a positive number of pixels, got {fwhm}")
    if seeing is not None and not (np.isfinite(seeing) and seeing > 0):
        raise AstridInputError(f"seeing must be a positive number of pixels, got {seeing}")

    bkg_map, noise_map = _noise_maps(data, bad, background, rms, name)
    sub = (data - (bkg_map[0, 0] if bkg_map.size == 1 else bkg_map)).astype(np.float32, copy=False)
    sub[bad] = 0.0
    sat = np.zeros((1, 1), dtype=np.bool_)
    has_sat = saturation is not None
    if has_sat:
        with np.errstate(invalid="ignore"):
            sat = np.ascontiguousarray(np.asarray(data) >= saturation)

    meas, r_ap, star_fwhm, snr, roundness, image_fwhm, locus = _detect(
        (sub, bad, sat, has_sat, noise_map), float(threshold), fwhm, seeing
    )
    xy = meas[:, :2]
    if isolation_radius is None:
        isolation_radius = 3.0 * image_fwhm
    isolated = _isolated(xy, isolation_radius)

    return _table(
        meas,
        (snr, star_fwhm, roundness, isolated),
        image_fwhm,
        locus,
        max_stars,
        (float(threshold), float(r_ap), float(isolation_radius)),
    )


def match_stars(xy1, xy2, radius: float = 2.0):
    """Pair two lists of positions by unique mutual nearest neighbours.

    Parameters
    ----------
    xy1, xy2 : array-like, shape (n1, 2) and (n2, 2)
        Positions (pixels) in the same frame.
    radius : float, optional
        Largest accepted separation (pixels), default 2.

    Returns
    -------
    idx1 : numpy.ndarray of int
        Indices into ``xy1`` of the matched pairs; each star is used at most
        once, and only when each is the other's nearest neighbour within
        ``radius``.
    idx2 : numpy.ndarray of int
        Indices into ``xy2`` of the same pairs, in the same order.
    """
    xy1 = np.asarray(xy1, dtype=float).reshape(-1, 2)
    xy2 = np.asarray(xy2, dtype=float).reshape(-1, 2)
    empty = np.zeros(0, dtype=np.intp)
    ok1 = np.isfinite(xy1).all(axis=1)
    ok2 = np.isfinite(xy2).all(axis=1)
    if not ok1.any() or not ok2.any():
        return empty, empty.copy()
    i1 = np.flatnonzero(ok1)
    i2 = np.flatnonzero(ok2)
    tree1 = cKDTree(xy1[i1])
    tree2 = cKDTree(xy2[i2])
    d12, j12 = tree2.query(xy1[i1], distance_upper_bound=radius)
    _, j21 = tree1.query(xy2[i2], distance_upper_bound=radius)
    found = np.isfinite(d12)
    a = np.flatnonzero(found)
    b = j12[found]
    mutual = j21[b] == a
    return i1[a[mutual]], i2[b[mutual]]
