"""Numba kernels of candidate detection and stamp extraction.

Each kernel makes one pass over its input and allocates its output once, so
that a 4096 x 4096 difference image is searched in tens of milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._utils import GAUSSIAN_SIGMA_TO_FWHM


@njit(cache=True, nogil=True)
def find_local_peaks(score, bad, threshold, negative, edge):
    """Pixels that are the maximum of ``sign * score`` in their 3x3 neighbourhood.

    A peak must be finite, not ``bad``, at least ``edge`` pixels from the
    border and at least ``threshold`` in ``sign * score``. Neighbours are
    compared whether bad or not (only non-finite ones are skipped), so the
    shoulder of a masked saturated core is not a peak. Ties are broken by
    raster order so that a flat top of equal pixels yields exactly one peak.

    Returns
    -------
    ys, xs : int64 arrays
        Integer peak positions.
    signs : int8 array
        +1 for maxima of ``score``, -1 for minima (only when ``negative``).
    """
    ny, nx = score.shape
    capacity = 1024
    ys = np.empty(capacity, np.int64)
    xs = np.empty(capacity, np.int64)
    signs = np.empty(capacity, np.int8)
    count = 0
    y0 = max(edge, 0)
    x0 = max(edge, 0)
    y1 = ny - max(edge, 0)
    x1 = nx - max(edge, 0)
    for y in range(y0, y1):
        for x in range(x0, x1):
            value = score[y, x]
            # Fast path: almost every pixel is below threshold (NaN compares False).
            if value >= threshold:
                sign = 1.0
            elif negative and -value >= threshold:
                sign = -1.0
            else:
                continue
            if bad[y, x]:
                continue
            v = sign * value
            is_peak = True
            for dy in range(-1, 2):
                yy = y + dy
                if yy < 0 or yy >= ny:
                    continue
                for dx in range(-1, 2):
                    xx = x + dx
                    if xx < 0 or xx >= nx or (dy == 0 and dx == 0):
                        continue
                    w = score[yy, xx]
                    if not math.isfinite(w):
                        continue
                    w = sign * w
                    # Earlier neighbours in raster order must be strictly lower.
                    if w > v or (w == v and (dy < 0 or (dy == 0 and dx < 0))):
                        is_peak = False
                        break
                if not is_peak:
                    break
            if is_peak:
                if count == capacity:
                    capacity *= 2
                    ys = _grow(ys, capacity)
                    xs = _grow(xs, capacity)
                    signs = _grow(signs, capacity)
                ys[count] = y
                xs[count] = x
                signs[count] = 1 if sign > 0 else -1
                count += 1
    return ys[:count].copy(), xs[:count].copy(), signs[:count].copy()


@njit(cache=True, nogil=True)
def _grow(array, capacity):
    out = np.empty(capacity, array.dtype)
    out[: array.shape[0]] = array
    return out


@njit(cache=True, nogil=True)
def suppress_close_peaks(ys, xs, order, min_separation, ny, nx):
    """Greedy non-maximum suppression: keep peaks in ``order``, drop any closer
    than ``min_separation`` pixels to one already kept.

    A hash grid of cell size ``min_separation`` keeps this linear in the
    number of peaks. Returns the kept indices in ``order``'s order.
    """
    n = order.shape[0]
    keep = np.empty(n, np.int64)
    if n == 0:
        return keep
    if min_separation <= 0:
        for i in range(n):
            keep[i] = order[i]
        return keep
    cell = max(min_separation, 1.0)
    gy = int(ny / cell) + 1
    gx = int(nx / cell) + 1
    head = np.full(gy * gx, -1, np.int64)
    nxt = np.full(ys.shape[0], -1, np.int64)
    limit2 = min_separation * min_separation
    n_keep = 0
    for j in range(n):
        i = order[j]
        cy = int(ys[i] / cell)
        cx = int(xs[i] / cell)
        crowded = False
        for ky in range(max(cy - 1, 0), min(cy + 2, gy)):
            for kx in range(max(cx - 1, 0), min(cx + 2, gx)):
                other = head[ky * gx + kx]
                while other >= 0:
                    ddy = ys[other] - ys[i]
                    ddx = xs[other] - xs[i]
                    if ddy * ddy + ddx * ddx < limit2:
                        crowded = True
                        break
                    other = nxt[other]
                if crowded:
                    break
            if crowded:
                break
        if not crowded:
            slot = cy * gx + cx
            nxt[i] = head[slot]
            head[slot] = i
            keep[n_keep] = i
            n_keep += 1
    return keep[:n_keep].copy()


@njit(cache=True, nogil=True)
def _subpixel_peak(score, y, x, s, peak):
    """(dx, dy): a parabola through the 3 pixels along each axis, within ±0.5 px."""
    ny, nx = score.shape
    dx = 0.0
    dy = 0.0
    if 0 < x < nx - 1:
        left = s * score[y, x - 1]
        right = s * score[y, x + 1]
        curv = left - 2.0 * peak + right
        if math.isfinite(curv) and curv < 0.0:
            dx = min(max(0.5 * (left - right) / curv, -0.5), 0.5)
    if 0 < y < ny - 1:
        down = s * score[y - 1, x]
        up = s * score[y + 1, x]
        curv = down - 2.0 * peak + up
        if math.isfinite(curv) and curv < 0.0:
            dy = min(max(0.5 * (down - up) / curv, -0.5), 0.5)
    return dx, dy


@njit(cache=True, nogil=True)
def _sharpness(diff, y, x, s):
    """Brightest D pixel of the 3x3 core against its 8 neighbours (1 for a lone hot pixel or cosmic
    ray, ~0.35 for a PSF of FWHM 3 px); NaN when not measurable."""
    ny, nx = diff.shape
    by = y
    bx = x
    best = -np.inf
    for yy in range(max(y - 1, 0), min(y + 2, ny)):
        for xx in range(max(x - 1, 0), min(x + 2, nx)):
            v = s * diff[yy, xx]
            if math.isfinite(v) and v > best:
                best = v
                by = yy
                bx = xx
    if best > 0.0:
        total = 0.0
        count = 0
        for yy in range(by - 1, by + 2):
            for xx in range(bx - 1, bx + 2):
                if (yy == by and xx == bx) or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                    continue
                v = diff[yy, xx]
                if math.isfinite(v):
                    total += s * v
                    count += 1
        if count > 0:
            return (best - total / count) / best
    return np.nan


@njit(cache=True, nogil=True)
def _windowed_moments(diff, y, x, s, cx, cy, sw2, half_w, row):
    """Roundness, FWHM, elongation and orientation into ``row`` [3, 4, 5, 8].

    Moments of the positive part of sign*D under a Gaussian window (variance ``sw2``) around the
    sub-pixel peak (cx, cy); the window is divided out afterwards (exact for a Gaussian source),
    so fwhm and elongation are those of the source.
    """
    ny, nx = diff.shape
    sum_w = 0.0
    sum_x = 0.0
    sum_y = 0.0
    for yy in range(max(y - half_w, 0), min(y + half_w + 1, ny)):
        for xx in range(max(x - half_w, 0), min(x + half_w + 1, nx)):
            v = s * diff[yy, xx]
            if not math.isfinite(v) or v <= 0.0:
                continue
            r2 = (xx - cx) ** 2 + (yy - cy) ** 2
            w = v * math.exp(-0.5 * r2 / sw2)
            sum_w += w
            sum_x += w * (xx - cx)
            sum_y += w * (yy - cy)
    if sum_w <= 0.0:
        return
    mx = cx + sum_x / sum_w
    my = cy + sum_y / sum_w
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    sum_w = 0.0
    for yy in range(max(y - half_w, 0), min(y + half_w + 1, ny)):
        for xx in range(max(x - half_w, 0), min(x + half_w + 1, nx)):
            v = s * diff[yy, xx]
            if not math.isfinite(v) or v <= 0.0:
                continue
            r2 = (xx - cx) ** 2 + (yy - cy) ** 2
            w = v * math.exp(-0.5 * r2 / sw2)
            sum_w += w
            sxx += w * (xx - mx) ** 2
            syy += w * (yy - my) ** 2
            sxy += w * (xx - mx) * (yy - my)
    sxx /= sum_w
    syy /= sum_w
    sxy /= sum_w
    if sxx + syy > 0.0:
        row[3] = (sxx - syy) / (sxx + syy)
    half_trace = 0.5 * (sxx + syy)
    root = math.sqrt(max(0.25 * (sxx - syy) ** 2 + sxy * sxy, 0.0))
    major = half_trace + root
    minor = half_trace - root
    cap = 0.95 * sw2
    major = min(max(major, 1e-6), cap)
    minor = min(max(minor, 1e-6), cap)
    major = major * sw2 / (sw2 - major)
    minor = minor * sw2 / (sw2 - minor)
    row[4] = GAUSSIAN_SIGMA_TO_FWHM * math.sqrt(math.sqrt(major * minor))
    row[5] = math.sqrt(major / minor)
    row[8] = 0.5 * math.atan2(2.0 * sxy, sxx - syy)


@njit(cache=True, nogil=True)
def _deepest_opposite(score, y, x, s, dipole_radius):
    """Deepest opposite-sign S_corr within ``dipole_radius`` px of (y, x) (0 when none)."""
    ny, nx = score.shape
    half_d = int(math.ceil(dipole_radius))
    r_d2 = dipole_radius * dipole_radius
    deepest = 0.0
    for yy in range(max(y - half_d, 0), min(y + half_d + 1, ny)):
        for xx in range(max(x - half_d, 0), min(x + half_d + 1, nx)):
            if (yy - y) ** 2 + (xx - x) ** 2 > r_d2:
                continue
            v = s * score[yy, xx]
            if math.isfinite(v) and -v > deepest:
                deepest = -v
    return deepest


@njit(cache=True, nogil=True)
def _masked_fraction(bad, y, x, stamp_size):
    """Masked fraction of the ``stamp_size`` stamp centred on (y, x); pixels beyond the image count."""
    ny, nx = bad.shape
    half_s = stamp_size // 2
    sx0 = x - half_s
    sy0 = y - half_s
    cx0 = max(sx0, 0)
    cx1 = min(sx0 + stamp_size, nx)
    cy0 = max(sy0, 0)
    cy1 = min(sy0 + stamp_size, ny)
    n_inside = max(cx1 - cx0, 0) * max(cy1 - cy0, 0)
    n_bad = stamp_size * stamp_size - n_inside
    for yy in range(cy0, cy1):
        row_bad = 0
        for xx in range(cx0, cx1):
            row_bad += bad[yy, xx]
        n_bad += row_bad
    return n_bad / (stamp_size * stamp_size)


@njit(cache=True, nogil=True)
def candidate_features(score, diff, bad, ys, xs, signs, fwhm, dipole_radius, stamp_size):
    """Sub-pixel positions and shape features of each peak.

    Parameters
    ----------
    score : 2-D float array
        Detection statistic (S_corr): sub-pixel peak and dipole ratio.
    diff : 2-D float array
        Difference image D: sharpness and Gaussian-windowed moments.
    bad : 2-D bool array
        Untrusted pixels (for the masked fraction of the stamp).
    ys, xs : int64 arrays
        Integer peak positions.
    signs : int8 array
        +1 (brightening) or -1 (fading): the features are measured on
        ``sign * image`` so both look alike.
    fwhm : float
        PSF FWHM of D in pixels: sets the moment window.
    dipole_radius : float
        Radius in pixels of the circle searched for an opposite-sign lobe.
    stamp_size : int
        Side of the triplet stamp over which the masked fraction is counted.

    Returns
    -------
    out : (n, 9) float64 array
        Columns x, y, sharpness, roundness, fwhm, elongation, dipole,
        masked_fraction, orientation (radians).
    """
    n = ys.shape[0]
    out = np.full((n, 9), np.nan)
    sigma_w = max(fwhm, 1.0) / GAUSSIAN_SIGMA_TO_FWHM * 1.5
    sw2 = sigma_w * sigma_w
    half_w = int(math.ceil(3.0 * sigma_w))
    for i in range(n):
        y = ys[i]
        x = xs[i]
        s = float(signs[i])
        peak = s * score[y, x]
        dx, dy = _subpixel_peak(score, y, x, s, peak)
        out[i, 0] = x + dx
        out[i, 1] = y + dy
        out[i, 2] = _sharpness(diff, y, x, s)
        _windowed_moments(diff, y, x, s, out[i, 0], out[i, 1], sw2, half_w, out[i])
        deepest = _deepest_opposite(score, y, x, s, dipole_radius)
        if peak > 0.0:
            out[i, 6] = deepest / peak
        out[i, 7] = _masked_fraction(bad, y, x, stamp_size)
    return out


# 12 arguments: a numba kernel takes the three images, their masks and the output buffers as plain
# arrays (no dataclasses).
@njit(cache=True, nogil=True, parallel=True)
def extract_triplets(
    science,
    reference,
    difference,
    bad_sci,
    footprint,
    bad_ref,
    bad_diff,
    ys,
    xs,
    size,
    stamps,
    valid,
):
    """Copy ``size`` x ``size`` stamps of three images centred on (ys, xs), in one pass.

    ``stamps`` (n, size, size, 3) gets the images' own values inside them
    and NaN beyond their edge; ``valid`` (same shape, bool) is True where a
    pixel is inside, finite and not flagged in that image's ``bad_*`` mask
    (science: nor outside ``footprint``). A 1x1 mask means "no mask".
    """
    ny, nx = difference.shape
    half = size // 2
    m_foot = footprint.size > 1
    m_sci = bad_sci.size > 1
    m_ref = bad_ref.size > 1
    m_diff = bad_diff.size > 1
    for i in prange(ys.shape[0]):
        y0 = ys[i] - half
        x0 = xs[i] - half
        for j in range(size):
            yy = y0 + j
            row_inside = 0 <= yy < ny
            for k in range(size):
                xx = x0 + k
                if row_inside and 0 <= xx < nx:
                    a = science[yy, xx]
                    b = reference[yy, xx]
                    c = difference[yy, xx]
                    stamps[i, j, k, 0] = a
                    stamps[i, j, k, 1] = b
                    stamps[i, j, k, 2] = c
                    valid[i, j, k, 0] = (
                        math.isfinite(a)
                        and not (m_sci and bad_sci[yy, xx])
                        and not (m_foot and not footprint[yy, xx])
                    )
                    valid[i, j, k, 1] = math.isfinite(b) and not (m_ref and bad_ref[yy, xx])
                    valid[i, j, k, 2] = math.isfinite(c) and not (m_diff and bad_diff[yy, xx])
                else:
                    for channel in range(3):
                        stamps[i, j, k, channel] = np.nan
                        valid[i, j, k, channel] = False
