"""Resample a science image onto the reference pixel grid, with astrometric refinement.

The world coordinate systems of the two images give a first mapping from each
reference pixel to a science pixel. Stars found in both images then measure
what the WCS got wrong: an affine transform (or a shift when few stars are
matched) fitted to the matched positions corrects the mapping, and the science
image is resampled once, with the corrected mapping.

The default ``method="interp"`` evaluates the WCS only on a coarse grid of
nodes (checked against the exact mapping between nodes, and refined until the
two agree to 0.01 pixel), interpolates the mapping bilinearly and resamples
data, mask and variance in a single numba pass. ``"adaptive"`` and
``"exact"`` use :func:`reproject.reproject_adaptive` (flux-conserving) and
:func:`reproject.reproject_exact`; ``"interp"`` switches to ``"adaptive"``
by itself when the pixel scales differ by more than 1 %.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
from astropy.table import Table
from numba import njit, prange

from .._utils import fwhm_to_sigma, robust_std_about
from ..errors import AstridInputError, AstridWarning, AstridWCSError
from ..io import Image
from .image import as_image
from .stars import find_stars, match_stars

__all__ = ["Alignment", "align"]

_ORDERS = {"nearest-neighbor": 0, "nearest": 0, "bilinear": 1, "bicubic": 3, 0: 0, 1: 1, 3: 3}
_METHODS = ("interp", "adaptive", "exact")
# Linear pixel scales differing by more than this make "interp" hand over to "adaptive".
_SCALE_TOLERANCE = 0.01
# The coarse mapping must reproduce the exact WCS mapping to this many pixels.
_MAP_TOLERANCE = 0.01
_START_STEP = 32
# Affine refinement needs this many matched stars; fewer fit a shift at most.
_MIN_AFFINE_STARS = 10
_MIN_SHIFT_STARS = 3
# A CD/PC matrix with |det| below this times its largest element squared is singular.
_SINGULAR_TOLERANCE = 1e-9
# A WCS correction larger than this (pixels, at the image centre) that fewer
# than _MIN_AFFINE_STARS stars support is reported: a few chance matches can
# "fit" any offset when the WCS is wrong (flipped data, CRPIX not updated).
_SUSPECT_SHIFT_PX = 3.0
# Centroid error floor (pixels) added to the S/N-based error of each star: blends,
# PSF asymmetry and pixelisation keep even the brightest stars from being exact.
_CENTROID_FLOOR = 0.03
# Residual statistics use the stars above the highest of these S/N tiers that
# holds at least _MIN_STAT_STARS of them.
_STAT_SNR = (100.0, 50.0, 20.0, 5.0)
_MIN_STAT_STARS = 5
# The registration error fits the scale of the centroid-noise model from this many stars.
_MIN_KAPPA_STARS = 8
# Header keywords that describe a WCS and must not survive resampling onto another grid.
_WCS_KEY = re.compile(
    r"^(WCSAXES|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CTYPE\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+"
    r"|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|WCSNAME|A_\w+|B_\w+|AP_\w+|BP_\w+"
    r"|A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|CNPIX\d|DSS\w*|PLT\w+|IMAGEW|IMAGEH)$"
)


@dataclass
class Alignment:
    """A science image resampled onto the reference grid.

    Attributes
    ----------
    image : Image
        The resampled science image: ``data`` (NaN outside the footprint),
        ``mask`` (the resampled science mask, any pixel touching a masked
        science pixel, plus everything outside the footprint), ``variance``
        (interpolated, when the science image has one), ``wcs`` (the
        reference WCS), ``header`` (the science header with its WCS keys
        replaced by the reference's) and ``meta`` (the science metadata,
        saturation and zero point rescaled with the data).
    footprint : numpy.ndarray of bool, shape (ny, nx)
        True where science pixels cover the reference grid.
    overlap : float
        Fraction of the reference pixels covered.
    rms : float
        RMS (pixels) of the matched stars' position residuals after the
        refinement, ``sqrt(sigma_x^2 + sigma_y^2)``, from the most
        significant stars (those above the highest S/N of 100, 50, 20 or 5
        that at least five pairs reach) so that it measures the registration
        rather than the centroid noise of faint stars; NaN when fewer than
        three stars were matched.
    n_matched : int
        Number of matched stars used for the refinement (outliers removed).
    shift : tuple of float
        Refinement ``(dx, dy)`` (pixels) at the centre of the reference
        image: a science star's WCS-predicted reference position plus the
        shift is its measured reference position. ``(0, 0)`` without
        refinement.
    astrometric_sigma : tuple of float
        Registration error ``(sigma_x, sigma_y)`` (pixels) per axis: what the
        residuals of all matched stars hold beyond the noise of their
        centroids (σ_PSF √2 / (S/N) in each image), by maximum likelihood and
        corrected for the fitted parameters; ZOGY's astrometric noise. Less
        than the RMS where faint stars dominate the match.
    method : str
        Resampling method used (``"interp"``, ``"adaptive"``, ``"exact"``;
        with the reason when ``"interp"`` handed over), then the refinement
        model: ``"+affine"``, ``"+shift"``, or ``"+wcs"`` when the WCS needed
        no correction (by the Bayesian information criterion), too few stars
        matched, or ``refine=False``.
    transform : numpy.ndarray, shape (2, 3)
        Affine correction in reference pixels: a science star at WCS-predicted
        reference position ``p`` lies at ``transform @ (x, y, 1)``.
    flux_scale : float
        Factor applied to the science data (reference over science pixel
        area, for data in counts per pixel; 1 for surface brightness).
    reference_stars : astropy.table.Table or None
        The stars :func:`~astrid.find_stars` detected in the reference image
        for the matching (all of them, before any cut), so that later steps
        (PSF, flux ratio) need not detect them again.
    science_stars : astropy.table.Table or None
        The science image's stars, measured on its own grid, with ``x`` and
        ``y`` moved onto the reference grid (those that land on it); None
        when the pixel scales differ (widths and fluxes would not carry
        over).
    """

    image: Image
    footprint: np.ndarray
    overlap: float
    rms: float
    n_matched: int
    shift: tuple[float, float]
    astrometric_sigma: tuple[float, float]
    method: str
    transform: np.ndarray = field(default_factory=lambda: np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    flux_scale: float = 1.0
    reference_stars: Table | None = None
    science_stars: Table | None = None


# --------------------------------------------------------------------------
# interpolation kernels
# --------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _cubic_weights(t):
    """Keys (a = -0.5) cubic-convolution weights of the taps at -1, 0, 1, 2 for offset t in [0, 1)."""
    a = -0.5
    s0 = t + 1.0
    s1 = t
    s2 = 1.0 - t
    s3 = 2.0 - t
    w0 = a * s0**3 - 5 * a * s0**2 + 8 * a * s0 - 4 * a
    w1 = (a + 2) * s1**3 - (a + 3) * s1**2 + 1
    w2 = (a + 2) * s2**3 - (a + 3) * s2**2 + 1
    w3 = a * s3**3 - 5 * a * s3**2 + 8 * a * s3 - 4 * a
    return w0, w1, w2, w3


# A numba kernel: it takes the arrays and scalars one by one (numba compiles no dataclasses).
@njit(cache=True, parallel=True)
def _resample(
    data, bad, var, has_var, gx, gy, step, ny, nx, order, out, out_var, out_mask, out_foot
):
    """Resample ``data`` (and ``var``, ``bad``) at science coordinates interpolated from the node grids.

    ``gx``, ``gy`` hold the science pixel coordinates of reference pixels
    ``(k * step, l * step)``. Taps on masked or missing pixels are dropped
    and the remaining weights renormalised; the output pixel is masked when
    any tap with a non-zero weight was dropped.
    """
    nsy, nsx = data.shape
    ngy, ngx = gx.shape
    # Per-row weight buffers: numba hoists a fixed-size np.empty out of a
    # prange loop, and threads would then share it.
    weights = np.empty((ny, 8))
    for i in prange(ny):
        ty = i / step
        iy = min(int(ty), ngy - 2)
        fy = ty - iy
        wy = weights[i, :4]
        wx = weights[i, 4:]
        for j in range(nx):
            tx = j / step
            ix = min(int(tx), ngx - 2)
            fx = tx - ix
            xs = (1 - fy) * ((1 - fx) * gx[iy, ix] + fx * gx[iy, ix + 1]) + fy * (
                (1 - fx) * gx[iy + 1, ix] + fx * gx[iy + 1, ix + 1]
            )
            ys = (1 - fy) * ((1 - fx) * gy[iy, ix] + fx * gy[iy, ix + 1]) + fy * (
                (1 - fx) * gy[iy + 1, ix] + fx * gy[iy + 1, ix + 1]
            )
            if not (xs >= -0.5 and xs <= nsx - 0.5 and ys >= -0.5 and ys <= nsy - 0.5):
                out[i, j] = np.nan
                out_mask[i, j] = True
                out_foot[i, j] = False
                if has_var:
                    out_var[i, j] = np.nan
                continue
            out_foot[i, j] = True
            if order == 0:
                ii = min(max(int(math.floor(ys + 0.5)), 0), nsy - 1)
                jj = min(max(int(math.floor(xs + 0.5)), 0), nsx - 1)
                out[i, j] = data[ii, jj] if not bad[ii, jj] else np.nan
                out_mask[i, j] = bad[ii, jj]
                if has_var:
                    out_var[i, j] = var[ii, jj]
                continue
            y0 = int(math.floor(ys))
            x0 = int(math.floor(xs))
            ty0 = ys - y0
            tx0 = xs - x0
            if order == 1:
                ntap = 2
                off = 0
                wy[0] = 1 - ty0
                wy[1] = ty0
                wx[0] = 1 - tx0
                wx[1] = tx0
            else:
                ntap = 4
                off = -1
                wy[0], wy[1], wy[2], wy[3] = _cubic_weights(ty0)
                wx[0], wx[1], wx[2], wx[3] = _cubic_weights(tx0)
            sw = 0.0
            sv = 0.0
            masked = False
            for a in range(ntap):
                ii = y0 + off + a
                for b in range(ntap):
                    w = wy[a] * wx[b]
                    if abs(w) < 1e-6:
                        continue
                    jj = x0 + off + b
                    if ii < 0 or jj < 0 or ii >= nsy or jj >= nsx or bad[ii, jj]:
                        masked = True
                        continue
                    sw += w
                    sv += w * data[ii, jj]
            out[i, j] = sv / sw if sw > 0.5 else np.nan
            out_mask[i, j] = masked
            if has_var:
                # Bilinear weights (all positive) keep the variance positive.
                sw = 0.0
                sv = 0.0
                for a in range(2):
                    ii = min(max(y0 + a, 0), nsy - 1)
                    wa = (1 - ty0) if a == 0 else ty0
                    for b in range(2):
                        jj = min(max(x0 + b, 0), nsx - 1)
                        w = wa * ((1 - tx0) if b == 0 else tx0)
                        if bad[ii, jj] or not math.isfinite(var[ii, jj]):
                            continue
                        sw += w
                        sv += w * var[ii, jj]
                out_var[i, j] = sv / sw if sw > 0 else np.nan


# --------------------------------------------------------------------------
# WCS helpers
# --------------------------------------------------------------------------


def _celestial(image: Image, role: str):
    name = image.meta.path or f"the {role} image"
    try:
        has_celestial = image.wcs is not None and image.wcs.has_celestial
        wcs = image.wcs.celestial if has_celestial else None
    except (
        Exception
    ) as exc:  # wcslib refuses to set up a singular matrix (SingularMatrixError, ...)
        raise AstridWCSError(
            f"{name}: the WCS cannot be used ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            f"the pixel-scale matrix (CD, or PC times CDELT) is probably singular; fix the CD/PC/CDELT "
            f"keywords ({role} image)"
        ) from exc
    if wcs is None:
        from ..io import wcs_problem

        problem = wcs_problem(image.header)
        if problem:
            raise AstridWCSError(
                f"{name}: the header's celestial WCS is unusable ({problem}), but alignment needs one ({role} image)"
            )
        raise AstridWCSError(f"{name}: no celestial WCS, but alignment needs one ({role} image)")
    # A singular CD/PC matrix maps the whole sky onto a line: the pixel maps
    # come out NaN or absurd and the resampling grids explode (tens of GiB).
    try:
        matrix = np.asarray(wcs.pixel_scale_matrix, dtype=float)
    except Exception as exc:  # astropy raises several types for broken matrices
        raise AstridWCSError(
            f"{name}: the WCS pixel-scale matrix cannot be computed ({exc}) ({role} image)"
        ) from exc
    scale = (
        float(np.abs(matrix).max()) if matrix.size and np.all(np.isfinite(matrix)) else float("nan")
    )
    det = float(np.linalg.det(matrix)) if np.isfinite(scale) else float("nan")
    if not (scale > 0 and abs(det) > _SINGULAR_TOLERANCE * scale**2):
        raise AstridWCSError(
            f"{name}: the WCS pixel-scale matrix (CD, or PC times CDELT) is singular or not finite "
            f"({[[float(f'{v:.3g}') for v in row] for row in matrix.tolist()]}, determinant {det:.3g}), so pixels have no "
            f"position on the sky; fix the CD/PC/CDELT keywords ({role} image)"
        )
    return wcs


def _frame(wcs):
    from astropy.wcs.utils import wcs_to_celestial_frame

    try:
        return wcs_to_celestial_frame(wcs)
    except (ValueError, TypeError):
        return None


def pixel_map(src_wcs, dst_wcs, x, y):
    """Pixel coordinates in ``dst_wcs`` of pixels ``(x, y)`` of ``src_wcs`` (0-based, NaN where undefined)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore")  # wcslib reports invalid (far-side) points, we get NaN
        world = src_wcs.all_pix2world(x, y, 0)
        lon, lat = (world[0], world[1]) if src_wcs.wcs.lng == 0 else (world[1], world[0])
        f_src, f_dst = _frame(src_wcs), _frame(dst_wcs)
        if f_src is not None and f_dst is not None and not f_src.is_equivalent_frame(f_dst):
            from astropy.coordinates import SkyCoord

            c = SkyCoord(lon, lat, unit="deg", frame=f_src).transform_to(f_dst)
            lon = c.spherical.lon.deg
            lat = c.spherical.lat.deg
        args = (lon, lat) if dst_wcs.wcs.lng == 0 else (lat, lon)
        try:
            px, py = dst_wcs.all_world2pix(*args, 0, quiet=True)
        except Exception:  # distortion solvers can fail far outside the image
            px, py = dst_wcs.wcs_world2pix(*args, 0)
    return np.asarray(px, dtype=float), np.asarray(py, dtype=float)


def apply_transform(transform, x, y):
    return (
        transform[0, 0] * x + transform[0, 1] * y + transform[0, 2],
        transform[1, 0] * x + transform[1, 1] * y + transform[1, 2],
    )


def _inverse(transform):
    a = transform[:, :2]
    ai = np.linalg.inv(a)
    return np.hstack([ai, -ai @ transform[:, 2:3]])


def _coarse_map(ref_wcs, sci_wcs, shape, inverse_transform):
    """Science pixel coordinates of reference pixels on a node grid, with its step.

    The step halves until bilinear interpolation between nodes reproduces
    the exact mapping at cell centres to ``_MAP_TOLERANCE`` pixels.
    """
    ny, nx = shape
    step = int(min(_START_STEP, max(1, 2 ** int(math.log2(max(1, min(ny, nx) // 4))))))
    while True:
        ngy = int(math.ceil((ny - 1) / step)) + 1
        ngx = int(math.ceil((nx - 1) / step)) + 1
        yy, xx = np.mgrid[0:ngy, 0:ngx].astype(float) * step
        qx, qy = apply_transform(inverse_transform, xx, yy)
        gx, gy = pixel_map(ref_wcs, sci_wcs, qx, qy)
        if step == 1:
            return gx, gy, step
        my, mx = np.mgrid[0 : ngy - 1, 0 : ngx - 1].astype(float) * step + step / 2
        qx, qy = apply_transform(inverse_transform, mx, my)
        ex, ey = pixel_map(ref_wcs, sci_wcs, qx, qy)
        ix = 0.25 * (gx[:-1, :-1] + gx[1:, :-1] + gx[:-1, 1:] + gx[1:, 1:])
        iy = 0.25 * (gy[:-1, :-1] + gy[1:, :-1] + gy[:-1, 1:] + gy[1:, 1:])
        err = np.hypot(ix - ex, iy - ey)
        err = err[np.isfinite(err)]
        if err.size == 0 or err.max() <= _MAP_TOLERANCE:
            return gx, gy, step
        step //= 2


def _affine_wcs(wcs, transform):
    """A WCS whose pixel ``p`` has the world coordinates of ``wcs`` at ``transform(p)``.

    Exact for linear WCS; for SIP/TPV distortions the (small) correction is
    applied before the distortion, a second-order approximation.
    """
    out = copy.deepcopy(wcs)
    a = transform[:, :2]
    b = transform[:, 2]
    crpix0 = out.wcs.crpix - 1.0
    out.wcs.crpix = np.linalg.solve(a, crpix0 - b) + 1.0
    if out.wcs.has_cd():
        out.wcs.cd = out.wcs.cd @ a
    else:
        out.wcs.pc = out.wcs.get_pc() @ a
    out.wcs.set()
    return out


def pixel_area(wcs, shape) -> float:
    """Pixel area (square degrees) at the image centre, from the local Jacobian."""
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    x = np.array([cx, cx + 1, cx])
    y = np.array([cy, cy, cy + 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        world = wcs.all_pix2world(x, y, 0)
    lon, lat = (world[0], world[1]) if wcs.wcs.lng == 0 else (world[1], world[0])
    dlon = (lon[1:] - lon[0] + 180.0) % 360.0 - 180.0
    dlat = lat[1:] - lat[0]
    cosd = math.cos(math.radians(lat[0]))
    jac = np.array([[dlon[0] * cosd, dlon[1] * cosd], [dlat[0], dlat[1]]])
    return abs(float(np.linalg.det(jac)))


def _is_surface_brightness(header) -> bool:
    unit = str(header.get("BUNIT", "") if header is not None else "").lower().replace(" ", "")
    return any(
        tag in unit
        for tag in ("/sr", "sr-1", "sr**-1", "/arcsec", "arcsec-2", "arcsec**-2", "/deg2")
    )


# --------------------------------------------------------------------------
# refinement
# --------------------------------------------------------------------------


def _vote_offset(src, dst, radius):
    """Most common offset dst - src among pairs closer than ``radius`` (1-pixel histogram)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(dst)
    pairs = tree.query_ball_point(src, r=radius)
    d = [dst[j] - src[i] for i, js in enumerate(pairs) for j in js]
    if len(d) < 3:
        return np.zeros(2), 0
    d = np.asarray(d)
    nb = int(2 * math.ceil(radius)) + 1
    edges = np.linspace(-math.ceil(radius) - 0.5, math.ceil(radius) + 0.5, nb + 1)
    hist, _, _ = np.histogram2d(d[:, 0], d[:, 1], bins=[edges, edges])
    # 2x2 box sum so an offset on a bin edge is not split.
    hist2 = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
    ix, iy = np.unravel_index(np.argmax(hist2), hist2.shape)
    centre = np.array([edges[ix + 1], edges[iy + 1]])
    near = np.all(np.abs(d - centre) <= 1.5, axis=1)
    votes = int(near.sum())
    if votes < 3:
        return np.zeros(2), votes
    return np.median(d[near], axis=0), votes


_N_PARAMS = {"wcs": 0, "shift": 2, "affine": 6}


def _fit_model(src, dst, weight, model, centre):
    """Weighted least-squares transform of one model: dst ~ T(src)."""
    transform = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if model == "wcs":
        return transform
    s = src - centre
    t = dst - centre
    if model == "shift":
        off = (weight[:, None] * (t - s)).sum(axis=0) / weight.sum()
        transform[:, 2] = off
        return transform
    sw = np.sqrt(weight)[:, None]
    design = np.column_stack([s, np.ones(len(s))]) * sw
    coef, *_ = np.linalg.lstsq(design, t * sw, rcond=None)
    a = coef[:2].T
    return np.hstack([a, (coef[2] + centre - a @ centre)[:, None]])


def _chi2(transform, src, dst, weight):
    px, py = apply_transform(transform, src[:, 0], src[:, 1])
    return float((weight * ((dst[:, 0] - px) ** 2 + (dst[:, 1] - py) ** 2)).sum())


def _fit(src, dst, sigma, centre):
    """Outlier-clipped fit with the model (none, shift, affine) that the data support.

    The models are compared by the Bayesian information criterion,
    chi^2 + k ln(2 n), with the position errors rescaled so that the most
    flexible model that the number of stars allows has a reduced chi^2 of
    one: a correction to the WCS is applied only when the star positions
    call for it.
    Returns ``(transform, inliers, model)``.
    """
    n = len(src)
    weight = 1.0 / sigma**2
    flexible = "affine" if n >= _MIN_AFFINE_STARS else "shift"
    # Robust start: the median offset, so that one bright mismatched star
    # cannot bend a weighted affine fit around itself before clipping.
    res = dst - src - np.median(dst - src, axis=0)
    pull = np.hypot(res[:, 0], res[:, 1]) / sigma
    keep = pull <= 5.0 * max(np.median(pull) / 1.1774, 1.0)
    if keep.sum() < _MIN_SHIFT_STARS:
        keep = np.ones(n, dtype=bool)
    for _ in range(5):
        transform = _fit_model(src[keep], dst[keep], weight[keep], flexible, centre)
        px, py = apply_transform(transform, src[:, 0], src[:, 1])
        pull = np.hypot(dst[:, 0] - px, dst[:, 1] - py) / sigma
        scale = robust_std_about(pull[keep]) / 1.1774  # median of a 2-D Rayleigh pull is 1.1774
        new_keep = pull <= 4.0 * max(scale, 1e-3)
        if new_keep.sum() < _MIN_SHIFT_STARS or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    s, d, w = src[keep], dst[keep], weight[keep]
    m = len(s)
    candidates = ["wcs", "shift"] + (["affine"] if m >= _MIN_AFFINE_STARS else [])
    fits = {name: _fit_model(s, d, w, name, centre) for name in candidates}
    chi2 = {name: _chi2(t, s, d, w) for name, t in fits.items()}
    dof = max(2 * m - _N_PARAMS[candidates[-1]], 1)
    scale2 = max(chi2[candidates[-1]] / dof, 1e-12)
    bic = {name: chi2[name] / scale2 + _N_PARAMS[name] * math.log(2 * m) for name in candidates}
    best = min(candidates, key=lambda name: bic[name])
    return fits[best], keep, best


def _good_stars(table):
    sharp = np.asarray(table["sharpness"])
    good = (
        ~np.asarray(table["saturated"])
        & ~np.asarray(table["masked"])
        & np.asarray(table["isolated"])
        & np.isfinite(np.asarray(table["x"]))
        & np.isfinite(np.asarray(table["snr"]))
        # Point-like only: cosmic rays, hot pixels and galaxies centroid badly or not at all.
        & (sharp > 0.6)
        & (sharp < 1.6)
    )
    return table[good]


def _refine(science, reference, sci_wcs, ref_wcs):
    """Match stars and fit the correction of the WCS mapping.

    Returns ``(transform, src, dst, snr, centroid, model, ref_stars, sci_stars)``: ``src``
    are the WCS-predicted reference positions of the matched science stars (outliers
    removed), ``dst`` their measured reference positions, ``snr`` the lower
    of each pair's two S/N, ``centroid`` the error of each residual per axis
    expected from the two centroids' S/N (px), and ``model`` one of ``"affine"``, ``"shift"`` or
    ``"wcs"`` (the WCS needs no correction, or too few stars matched), and
    ``ref_stars`` and ``sci_stars`` every star found in each image (science
    positions on the science grid).
    """
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ref_stars = find_stars(reference.data, reference.mask, saturation=reference.meta.saturation)
    sci_stars = find_stars(science.data, science.mask, saturation=science.meta.saturation)
    nothing = (
        identity,
        np.zeros((0, 2)),
        np.zeros((0, 2)),
        np.zeros(0),
        np.zeros(0),
        "wcs",
        ref_stars,
        sci_stars,
    )
    ref_tab = _good_stars(ref_stars)
    sci_tab = _good_stars(sci_stars)
    if len(ref_tab) < _MIN_SHIFT_STARS or len(sci_tab) < _MIN_SHIFT_STARS:
        return nothing
    sx, sy = pixel_map(sci_wcs, ref_wcs, np.asarray(sci_tab["x"]), np.asarray(sci_tab["y"]))
    src = np.column_stack([sx, sy])
    dst = np.column_stack([np.asarray(ref_tab["x"]), np.asarray(ref_tab["y"])])
    inside = np.isfinite(src).all(axis=1)
    src, sci_snr = src[inside], np.asarray(sci_tab["snr"])[inside]
    ref_snr = np.asarray(ref_tab["snr"])
    if len(src) < _MIN_SHIFT_STARS:
        return nothing
    fwhm_r = float(ref_tab.meta["fwhm"])
    # The science FWHM in reference pixels.
    scale = math.sqrt(pixel_area(sci_wcs, science.shape) / pixel_area(ref_wcs, reference.shape))
    fwhm_s = float(sci_tab.meta["fwhm"]) * scale
    fwhm = max(fwhm_r, fwhm_s, 1.0)
    # Coarse offset from the brightest stars, robust to WCS errors of many pixels.
    offset, _ = _vote_offset(src[:300], dst[:300], radius=max(20.0, 5.0 * fwhm))
    transform = identity.copy()
    transform[:, 2] = offset
    centre = np.array([(reference.shape[1] - 1) / 2.0, (reference.shape[0] - 1) / 2.0])
    radius = max(2.0, 0.7 * fwhm)
    result = nothing
    for _ in range(3):
        px, py = apply_transform(transform, src[:, 0], src[:, 1])
        i1, i2 = match_stars(np.column_stack([px, py]), dst, radius=radius)
        if len(i1) < _MIN_SHIFT_STARS:
            break
        # Centroid error per axis ~ sigma_PSF * sqrt(2) / (S/N), per image, plus a floor.
        centroid = np.hypot(
            math.sqrt(2) * fwhm_to_sigma(fwhm_r) / ref_snr[i2],
            math.sqrt(2) * fwhm_to_sigma(fwhm_s) / sci_snr[i1],
        )
        s, d = src[i1], dst[i2]
        transform, keep, model = _fit(s, d, np.hypot(centroid, _CENTROID_FLOOR), centre)
        snr = np.minimum(sci_snr[i1], ref_snr[i2])
        result = (
            transform,
            s[keep],
            d[keep],
            snr[keep],
            centroid[keep],
            model,
            ref_stars,
            sci_stars,
        )
        radius = max(1.0, 0.3 * fwhm)
    return result


def _stars_on_reference(stars, sci_wcs, ref_wcs, transform, shape):
    """The science star table with x, y mapped onto the reference grid (refined), off-grid rows dropped."""
    if len(stars) == 0:
        return stars
    px, py = pixel_map(
        sci_wcs, ref_wcs, np.asarray(stars["x"], float), np.asarray(stars["y"], float)
    )
    px, py = apply_transform(transform, px, py)
    ny, nx = shape
    inside = (
        np.isfinite(px) & np.isfinite(py) & (px >= 0) & (px <= nx - 1) & (py >= 0) & (py <= ny - 1)
    )
    out = stars[inside]
    out["x"] = px[inside]
    out["y"] = py[inside]
    return out


def _residual_stats(res, snr, centroid, n_params):
    """RMS residual in quadrature, from the most significant stars, and the registration error.

    The RMS uses the stars above the highest S/N tier (100, 50, 20, 5) that
    has at least five of them (else all), corrected for the fitted
    parameters. The registration error per axis (ZOGY's astrometric noise)
    is what the residuals hold beyond their centroids' noise: on a small or
    sparse image the tier falls to faint stars, whose centroid noise alone
    can be ten times the misregistration of the bright ones.
    """
    n = len(res)
    if n < _MIN_SHIFT_STARS:
        return float("nan"), (float("nan"), float("nan"))
    sel = np.ones(n, dtype=bool)
    for limit in _STAT_SNR:
        if (snr >= limit).sum() >= _MIN_STAT_STARS:
            sel = snr >= limit
            break
    m = int(sel.sum())
    # Parameters per axis, spread over the stars used (their share of all).
    dof = max(m - (n_params / 2) * m / n, 1.0)
    rms = np.sqrt((res[sel] ** 2).sum(axis=0) / dof)
    inflate = n / max(n - n_params / 2, 1.0)
    sigma = _registration_error(res**2 * inflate, centroid**2)
    return float(np.hypot(rms[0], rms[1])), sigma


def _registration_error(squared, noise2) -> tuple[float, float]:
    """(σx, σy) maximising the likelihood of residuals r_i ~ N(0, σ² + κ² c_i²) per axis.

    ``squared`` holds r_i² per axis (n, 2), ``noise2`` the modelled centroid
    variances c_i². The scale κ of the centroid model (the star finder's S/N
    is not the optimal one, so c_i is only right to a factor) is fitted
    jointly, within [1/3, 3], when at least :data:`_MIN_KAPPA_STARS` stars
    constrain it; otherwise κ = 1.
    """
    rmax = float(np.max(squared)) + 1e-12
    # A floor keeps the variance positive where a star's centroid noise is nil.
    noise2 = np.maximum(noise2, 1e-8)

    def nll(params):
        sx2, sy2, k2 = params
        vx, vy = sx2 + k2 * noise2, sy2 + k2 * noise2
        return float(
            np.sum(np.log(vx) + squared[:, 0] / vx) + np.sum(np.log(vy) + squared[:, 1] / vy)
        )

    fit_kappa = len(noise2) >= _MIN_KAPPA_STARS
    start = np.array([0.1 * rmax, 0.1 * rmax, 1.0])
    bounds = [(0.0, rmax), (0.0, rmax), (1 / 9, 9.0) if fit_kappa else (1.0, 1.0)]
    best = scipy.optimize.minimize(nll, start, method="L-BFGS-B", bounds=bounds)
    return float(math.sqrt(best.x[0])), float(math.sqrt(best.x[1]))


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def _checked_inputs(reference, science, method: str, order: str):
    """Check the parameters and images; the WCSs, the science name, its bad pixels and the shape."""
    if method not in _METHODS:
        raise AstridInputError(f"align: method must be one of {_METHODS}, got {method!r}")
    if order not in _ORDERS:
        raise AstridInputError(
            f"align: order must be 'bicubic', 'bilinear' or 'nearest-neighbor', got {order!r}"
        )
    ref_wcs = _celestial(reference, "reference")
    sci_wcs = _celestial(science, "science")
    sci_name = science.meta.path or "science image"
    sci_bad = np.asarray(science.mask, dtype=bool) | ~np.isfinite(science.data)
    if sci_bad.all():
        raise AstridInputError(f"{sci_name}: no finite, unmasked pixels to align")
    shape = reference.shape
    if min(shape) < 2:
        raise AstridInputError(f"reference image: shape {shape} is too small to align onto")
    return ref_wcs, sci_wcs, sci_name, sci_bad, shape


def align(
    *,
    reference,
    science,
    method: str = "interp",
    refine: bool = True,
    order: str = "bicubic",
    surface_brightness: bool | None = None,
) -> Alignment:
    """Resample ``science`` onto the pixel grid of ``reference``: ``align(reference=..., science=...)``.

    Parameters
    ----------
    reference, science : Image or path-like
        Images with celestial WCS (keyword-only, so that a swap cannot go
        unnoticed; paths are read with :func:`astrid.read_image`). Their masks
        are honoured: masked pixels are neither used for star matching nor
        interpolated from.
    method : {"interp", "adaptive", "exact"}, optional
        Resampling: ``"interp"`` (default) interpolates (see ``order``);
        ``"adaptive"`` is :func:`reproject.reproject_adaptive` (anti-aliased,
        flux-conserving); ``"exact"`` is :func:`reproject.reproject_exact`
        (spherical-polygon overlap). ``"interp"`` switches to ``"adaptive"``
        when the linear pixel scales differ by more than 1 %.
    refine : bool, optional
        Correct the WCS mapping with a transform fitted to the positions of
        stars matched between the images (default True): none, a shift or an
        affine transform (10 stars or more), whichever the Bayesian
        information criterion prefers, after outlier clipping. With False
        the WCS mapping is used as is; the residuals of matched stars are
        still reported.
    order : {"bicubic", "bilinear", "nearest-neighbor"}, optional
        Interpolation of ``"interp"``: Keys cubic convolution (a = -0.5,
        4x4 taps), bilinear or nearest pixel. The variance is always
        interpolated bilinearly.
    surface_brightness : bool, optional
        Whether the data are a surface brightness (e.g. MJy/sr), which
        resampling keeps, rather than counts per pixel, which are rescaled by
        the ratio of pixel areas so that fluxes are conserved. By default
        guessed from ``BUNIT`` of the science header (``/sr``, ``/arcsec2``).

    Returns
    -------
    Alignment
        The resampled image, its footprint, and the quality of the
        astrometric match.

    Raises
    ------
    AstridWCSError
        An image has no celestial WCS.
    AstridInputError
        The science image does not overlap the reference, has no finite
        unmasked pixel, or a parameter is invalid.

    Warns
    -----
    AstridWarning
        ``refine`` was asked but fewer than 3 stars matched: the WCS mapping
        is used uncorrected.
    """
    reference = as_image(reference, "reference", arrays=False)
    science = as_image(science, "science", arrays=False)
    ref_wcs, sci_wcs, sci_name, sci_bad, shape = _checked_inputs(reference, science, method, order)

    area_ratio = _check_overlap(reference, science, ref_wcs, sci_wcs, sci_name)
    scale_diff = abs(math.sqrt(area_ratio) - 1.0)
    # Pixel scales that differ by more than 1 % need an anti-aliased resampling.
    used_method = "adaptive" if method == "interp" and scale_diff > _SCALE_TOLERANCE else method
    if surface_brightness is None:
        surface_brightness = _is_surface_brightness(science.header)
    flux_scale = 1.0 if surface_brightness else float(area_ratio)
    flux_scale = 1.0 if abs(flux_scale - 1.0) < 1e-6 else flux_scale

    match = _match(science, reference, sci_wcs, ref_wcs, refine, sci_name)
    transform = match.transform
    inverse = _inverse(transform)
    if used_method == "interp":
        gx, gy, step = _coarse_map(ref_wcs, sci_wcs, shape, inverse)
        data, mask, variance, footprint = _resample_interp(
            science, sci_bad, gx, gy, step, shape, _ORDERS[order], flux_scale
        )
    else:
        data, mask, variance, footprint = _resample_reproject(
            science,
            sci_bad,
            _affine_wcs(ref_wcs, inverse),
            shape,
            used_method,
            surface_brightness,
            area_ratio,
        )
    if not footprint.any():
        raise AstridInputError(
            f"{sci_name}: does not overlap the reference image ({reference.meta.path or 'reference'}) on the sky"
        )

    label = (
        used_method
        + (f" (pixel scales differ by {100 * scale_diff:.1f} %)" if used_method != method else "")
        + f"+{match.model}"
    )
    return Alignment(
        image=_output_image(science, reference, (data, mask, variance), flux_scale),
        footprint=footprint,
        overlap=float(footprint.mean()),
        rms=match.rms,
        n_matched=int(match.n_matched),
        shift=match.shift,
        astrometric_sigma=match.sigma,
        method=label,
        transform=transform,
        flux_scale=flux_scale,
        reference_stars=match.ref_stars,
        science_stars=_stars_on_reference(match.sci_stars, sci_wcs, ref_wcs, transform, shape)
        if used_method == "interp" and flux_scale == 1.0
        else None,
    )


def _output_image(science, reference, planes, flux_scale) -> Image:
    """The resampled science image on the reference grid, its metadata rescaled with the fluxes."""
    data, mask, variance = planes
    image = Image(
        data=data,
        wcs=copy.deepcopy(reference.wcs),
        mask=mask,
        variance=variance,
        header=_resampled_header(science.header, reference.wcs),
        meta=copy.copy(science.meta),
    )
    if flux_scale != 1.0:
        if image.meta.saturation is not None:
            image.meta.saturation *= flux_scale
        if image.meta.zeropoint is not None:
            image.meta.zeropoint += 2.5 * math.log10(flux_scale)
    return image


def _check_overlap(reference, science, ref_wcs, sci_wcs, sci_name) -> float:
    """Quick overlap test on a coarse grid before any star finding; returns the pixel-area ratio."""
    shape = reference.shape
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    gx, gy, step = _coarse_map(ref_wcs, sci_wcs, shape, identity)
    area_ratio = pixel_area(ref_wcs, shape) / pixel_area(sci_wcs, science.shape)
    margin = 1.5 * step * max(1.0, math.sqrt(area_ratio))
    nsy, nsx = science.shape
    near = (gx > -margin) & (gx < nsx + margin) & (gy > -margin) & (gy < nsy + margin)
    if not near.any():
        raise AstridInputError(
            f"{sci_name}: does not overlap the reference image "
            f"({reference.meta.path or 'reference'}) on the sky"
        )

    return area_ratio


@dataclass
class _Match:
    """The fitted science-to-reference transform and how well the matched stars support it."""

    transform: np.ndarray
    model: str
    n_matched: int
    rms: float
    sigma: tuple
    shift: tuple
    ref_stars: object
    sci_stars: object


def _match(science, reference, sci_wcs, ref_wcs, refine, sci_name) -> _Match:
    """Match stars, fit the transform (or keep the WCS), measure the residuals, warn when doubtful."""
    shape = reference.shape
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    transform, src, dst, snr, centroid, model, ref_stars, sci_stars = _refine(
        science, reference, sci_wcs, ref_wcs
    )
    n_matched = len(src)
    n_good = (len(_good_stars(sci_stars)), len(_good_stars(ref_stars)))
    if n_matched < _MIN_SHIFT_STARS and refine:
        hint = ""
        if min(n_good) >= _MIN_AFFINE_STARS:
            hint = (
                f" although {n_good[0]} science and {n_good[1]} reference stars are clean: the WCS of one "
                "image probably disagrees with its pixels (data flipped or rotated, or cropped without "
                "updating CRPIX), and the difference will be dominated by misaligned stars"
            )
        warnings.warn(
            f"{sci_name}: only {n_matched} stars matched the reference{hint}; "
            "alignment uses the WCS without astrometric refinement",
            AstridWarning,
            stacklevel=3,
        )
    if not refine:
        # Report how well the WCS alone does, without correcting it.
        transform = identity.copy()
        model = "wcs"
    fx, fy = apply_transform(transform, src[:, 0], src[:, 1])
    residuals = np.column_stack([dst[:, 0] - fx, dst[:, 1] - fy])
    rms, sigma = _residual_stats(residuals, snr, centroid, _N_PARAMS[model])
    centre = np.array([(shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0])
    cx, cy = apply_transform(transform, centre[0], centre[1])
    shift = (float(cx - centre[0]), float(cy - centre[1]))
    moved = math.hypot(*shift)
    if refine and model != "wcs" and n_matched < _MIN_AFFINE_STARS and moved > _SUSPECT_SHIFT_PX:
        warnings.warn(
            f"{sci_name}: the WCS and the stars disagree by {moved:.1f} px (shift {shift[0]:+.1f}, "
            f"{shift[1]:+.1f} px) and only {n_matched} of {n_good[0]} clean science stars support the "
            f"correction (fewer than {_MIN_AFFINE_STARS}): a few chance matches can fit any shift, so the "
            "alignment, and the difference, may be wrong; check the WCS (data flipped, or cropped without "
            "updating CRPIX) or pass refine=False to use the WCS as it is",
            AstridWarning,
            stacklevel=3,
        )

    return _Match(transform, model, n_matched, rms, sigma, shift, ref_stars, sci_stars)


def _resample_interp(science, bad, gx, gy, step, shape, order, flux_scale):
    ny, nx = shape
    dtype = science.data.dtype if science.data.dtype in (np.float32, np.float64) else np.float64
    data_in = np.ascontiguousarray(science.data, dtype=dtype)
    has_var = science.variance is not None
    var_in = (
        np.ascontiguousarray(science.variance, dtype=dtype) if has_var else np.zeros((1, 1), dtype)
    )
    out = np.empty(shape, dtype=dtype)
    out_var = np.empty(shape, dtype=dtype) if has_var else np.zeros((1, 1), dtype)
    out_mask = np.empty(shape, dtype=np.bool_)
    out_foot = np.empty(shape, dtype=np.bool_)
    _resample(
        data_in,
        np.ascontiguousarray(bad),
        var_in,
        has_var,
        np.ascontiguousarray(gx),
        np.ascontiguousarray(gy),
        float(step),
        ny,
        nx,
        order,
        out,
        out_var,
        out_mask,
        out_foot,
    )
    if flux_scale != 1.0:
        out *= flux_scale
        if has_var:
            out_var *= flux_scale**2
    return out, out_mask, (out_var if has_var else None), out_foot


def _resample_reproject(science, bad, target_wcs, shape, method, surface_brightness, area_ratio):
    from reproject import reproject_adaptive, reproject_exact

    sci_wcs = science.wcs.celestial
    data = np.where(bad, np.nan, science.data).astype(float)
    if method == "adaptive":

        def run(values, conserve):
            return reproject_adaptive(
                (values, sci_wcs),
                target_wcs,
                shape_out=shape,
                conserve_flux=conserve,
                bad_value_mode="ignore",
                boundary_mode="strict",
            )

        out, foot = run(data, not surface_brightness)
        mask_frac, _ = run(bad.astype(float), False)
        variance = None
        if science.variance is not None:
            variance, _ = run(np.where(bad, np.nan, science.variance).astype(float), False)
            if not surface_brightness:
                variance = variance * area_ratio
    else:
        out, foot = reproject_exact((data, sci_wcs), target_wcs, shape_out=shape)
        mask_frac, _ = reproject_exact((bad.astype(float), sci_wcs), target_wcs, shape_out=shape)
        variance = None
        if science.variance is not None:
            variance, _ = reproject_exact(
                (np.where(bad, np.nan, science.variance).astype(float), sci_wcs),
                target_wcs,
                shape_out=shape,
            )
        if not surface_brightness:
            out = out * area_ratio
            if variance is not None:
                variance = variance * area_ratio
    footprint = np.asarray(foot) > 0
    dtype = science.data.dtype if science.data.dtype in (np.float32, np.float64) else np.float64
    out = np.where(footprint, out, np.nan).astype(dtype)
    mask = ~footprint | ~np.isfinite(out) | ~(np.nan_to_num(mask_frac, nan=1.0) < 1e-3)
    if variance is not None:
        variance = np.where(footprint, variance, np.nan).astype(dtype)
    return out, mask, variance, footprint


def _resampled_header(header, ref_wcs):
    from astropy.io import fits
    from astropy.wcs import FITSFixedWarning

    out = fits.Header()
    if header is not None:
        for card in header.cards:
            if card.keyword in ("", "COMMENT", "HISTORY") or not _WCS_KEY.match(card.keyword):
                out.append(card)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        out.update(ref_wcs.to_header(relax=True))
    out.add_history("ASTRID align: resampled onto the reference pixel grid")
    return out
