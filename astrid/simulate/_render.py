"""Numba kernels that render the simulated sky into images.

Sources are drawn as small stamps (never as full-frame operations): each
stamp is computed independently and in parallel into a flat buffer, then
added into the image in a fixed order, so the result is bit-identical for a
given seed whatever the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "moffat_alpha",
    "moffat_radius",
    "render_moffat_stamps",
    "render_psf_kernels",
    "render_sersic_stamps",
    "add_stamps",
    "sky_plane",
    "photon_noise",
    "render_line",
    "deposit_tracks",
    "bleed_columns",
    "psf_stamp",
]

# Pixels closer than this many FWHM (plus one pixel) to a source centre are
# integrated on a sub-pixel grid; further out the value at the pixel centre
# plus a 24th of the Laplacian gives the pixel average to about 0.1 % of itself.
_SUBSAMPLE_FWHM = 1.5


def moffat_alpha(fwhm, beta):
    """Moffat core radius alpha (px) of a profile with the given FWHM (px) and beta."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_radius(fwhm, beta, axis_ratio, enclosed=0.995):
    """Radius (px, along the major axis) that encloses ``enclosed`` of a Moffat profile's flux."""
    alpha = moffat_alpha(fwhm, beta) / np.sqrt(axis_ratio)
    return alpha * np.sqrt((1.0 - enclosed) ** (1.0 / (1.0 - beta)) - 1.0)


@njit(cache=True)
def _shape(alpha, q, theta):
    # Inverse shape matrix of an area-preserving ellipse with semi-axes alpha/sqrt(q), alpha*sqrt(q).
    a2 = alpha * alpha / q
    b2 = alpha * alpha * q
    c = math.cos(theta)
    s = math.sin(theta)
    ixx = c * c / a2 + s * s / b2
    iyy = s * s / a2 + c * c / b2
    ixy = c * s * (1.0 / a2 - 1.0 / b2)
    return ixx, ixy, iyy


@njit(cache=True)
def _moffat_fill(out, off, h, w, dx0, dy0, fwhm, beta, q, theta):
    """Pixel-integrated Moffat of unit central intensity into ``out[off:off+h*w]``; returns the sum.

    Pixel (i, j) of the stamp is at offset (j + dx0, i + dy0) from the source centre.
    """
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    ixx, ixy, iyy = _shape(alpha, q, theta)
    rsub = _SUBSAMPLE_FWHM * fwhm + 1.0
    rsub2 = rsub * rsub
    nsub = 5 if fwhm < 3.5 else 3
    step = 1.0 / nsub
    total = 0.0
    for i in range(h):
        dy = i + dy0
        for j in range(w):
            dx = j + dx0
            if dx * dx + dy * dy < rsub2:
                acc = 0.0
                for a in range(nsub):
                    sy = dy + (a + 0.5) * step - 0.5
                    for b in range(nsub):
                        sx = dx + (b + 0.5) * step - 0.5
                        acc += _moffat_cell(sx, sy, ixx, ixy, iyy, beta, step)
                v = acc * step * step
            else:
                v = _moffat_cell(dx, dy, ixx, ixy, iyy, beta, 1.0)
            out[off + i * w + j] = v
            total += v
    return total


@njit(cache=True)
def _moffat_cell(dx, dy, ixx, ixy, iyy, beta, size):
    """Mean of the Moffat profile over a square cell centred at (dx, dy).

    The value at the centre plus size^2/24 times the Laplacian: the midpoint
    rule corrected to second order, so the residual error is fourth order.
    """
    u = 1.0 + ixx * dx * dx + 2.0 * ixy * dx * dy + iyy * dy * dy
    gx = 2.0 * (ixx * dx + ixy * dy)
    gy = 2.0 * (ixy * dx + iyy * dy)
    lap = beta * u ** (-beta - 2.0) * ((beta + 1.0) * (gx * gx + gy * gy) - 2.0 * u * (ixx + iyy))
    return u ** (-beta) + lap * (size * size / 24.0)


@njit(cache=True)
def _moffat_norm(fwhm, beta):
    # Central intensity of a unit-flux Moffat profile (for an area-preserving ellipse too).
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return (beta - 1.0) / (math.pi * alpha * alpha)


# A numba kernel: it takes the stamps as parallel flat arrays (14 of them) because njit code
# cannot take a dataclass or a dict, and one prange over arrays is what makes it fast.
@njit(parallel=True, cache=True)
def render_moffat_stamps(buf, offsets, x, y, ix0, iy0, hh, ww, fwhm, flux, beta, q, theta, peaks):
    """Render Moffat point sources into a flat stamp buffer.

    The profile is normalised analytically (unit integral over the plane), so
    every stamp is the same PSF, only cut at a radius that grows with the
    flux; the flux beyond the stamp is wing below the noise.

    Parameters
    ----------
    buf : ndarray of float32, shape (sum(hh*ww),)
        Output buffer; stamp ``k`` occupies ``buf[offsets[k]:offsets[k]+hh[k]*ww[k]]``
        in row-major order.
    offsets, ix0, iy0, hh, ww : ndarray of int64, shape (n,)
        Buffer offset, image pixel of the stamp's first column/row, stamp height/width.
    x, y : ndarray of float64, shape (n,)
        Source centres in 0-based image pixels.
    fwhm, flux : ndarray of float64, shape (n,)
        Local FWHM (px) and total flux (data units) of each source.
    beta, q, theta : float
        Moffat index, axis ratio and position angle (rad, from +x) of the PSF.
    peaks : ndarray of float64, shape (n,)
        Output: the brightest pixel of each stamp (data units).
    """
    n = x.shape[0]
    for k in prange(n):
        h = hh[k]
        w = ww[k]
        off = offsets[k]
        _moffat_fill(buf, off, h, w, ix0[k] - x[k], iy0[k] - y[k], fwhm[k], beta, q, theta)
        scale = flux[k] * _moffat_norm(fwhm[k], beta)
        peak = 0.0
        for m in range(h * w):
            v = buf[off + m] * scale
            buf[off + m] = v
            if v > peak:
                peak = v
        peaks[k] = peak


@njit(cache=True)
def render_psf_kernels(cube, dx, dy, fwhm, radius, beta, q, theta):
    """PSF kernels centred at (dx, dy) from pixel (0, 0) of each plane, wrapped for FFT convolution.

    ``cube`` has shape (n, S, S); kernel ``k`` has FWHM ``fwhm[k]``, its
    centre at sub-pixel offset ``(dx[k], dy[k])``, extends ``radius`` pixels
    and is the same analytically normalised profile as the point sources.
    """
    n, s, _ = cube.shape
    side = 2 * radius + 1
    tmp = np.empty(side * side, dtype=np.float32)
    for k in range(n):
        _moffat_fill(tmp, 0, side, side, -radius - dx[k], -radius - dy[k], fwhm[k], beta, q, theta)
        scale = _moffat_norm(fwhm[k], beta)
        for i in range(s):
            for j in range(s):
                cube[k, i, j] = 0.0
        for i in range(side):
            ii = (i - radius) % s
            for j in range(side):
                jj = (j - radius) % s
                cube[k, ii, jj] = tmp[i * side + j] * scale


@njit(cache=True)
def psf_stamp(size, dx, dy, fwhm, beta, q, theta, unit_sum):
    """A (size, size) PSF stamp centred at (size//2 + dx, size//2 + dy).

    With ``unit_sum`` it is normalised to sum 1; otherwise it holds the
    fraction of a unit flux that falls in each pixel, as in the images.
    """
    out = np.empty(size * size, dtype=np.float64)
    c = size // 2
    total = _moffat_fill(out, 0, size, size, -c - dx, -c - dy, fwhm, beta, q, theta)
    scale = 1.0 / total if unit_sum else _moffat_norm(fwhm, beta)
    return (out * scale).reshape((size, size))


@njit(cache=True)
def _sersic_b(n):
    # Ciotti & Bertin (1999) asymptotic expansion, accurate to 1e-4 for n > 0.36.
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


@njit(parallel=True, cache=True)
def render_sersic_stamps(cube, dx, dy, r_eff, n_sersic, q, theta, r_trunc, flux):
    """Pixel-integrated, truncated Sersic profiles, one per plane, each normalised to its flux.

    Parameters
    ----------
    cube : ndarray of float32, shape (n, S, S)
        Output; the galaxy centre is at (S//2 + dx, S//2 + dy) of its plane.
    dx, dy : ndarray of float64
        Sub-pixel offsets of the centres.
    r_eff : ndarray of float64
        Effective (half-light) radius along the major axis, px.
    n_sersic, q, theta : ndarray of float64
        Sersic index, axis ratio b/a and position angle (rad, from +x).
    r_trunc : ndarray of float64
        Truncation radius along the major axis (px); the profile is tapered
        smoothly to zero over its last 20 %.
    flux : ndarray of float64
        Total flux of each galaxy (data units).
    """
    n, s, _ = cube.shape
    c = s // 2
    for k in prange(n):
        nn = n_sersic[k]
        bn = _sersic_b(nn)
        inv_n = 1.0 / nn
        re = r_eff[k]
        ct = math.cos(theta[k])
        st = math.sin(theta[k])
        qq = q[k]
        rt = r_trunc[k]
        taper0 = 0.8 * rt
        for i in range(s):
            for j in range(s):
                cube[k, i, j] = 0.0
        # Only the box around the truncation radius holds light.
        reach = int(math.ceil(rt)) + 2
        i0 = max(0, c - reach)
        i1 = min(s, c + reach + 1)
        total = 0.0
        for i in range(i0, i1):
            yy = i - c - dy[k]
            for j in range(i0, i1):
                xx = j - c - dx[k]
                d2 = xx * xx + yy * yy
                # The cusp of high-n profiles needs a fine grid near the centre.
                if d2 < 4.0:
                    nsub = 9
                elif d2 < max(re * re, 9.0):
                    nsub = 3
                else:
                    nsub = 1
                step = 1.0 / nsub
                acc = 0.0
                for a in range(nsub):
                    sy = yy + (a + 0.5) * step - 0.5
                    for b in range(nsub):
                        sx = xx + (b + 0.5) * step - 0.5
                        u = sx * ct + sy * st
                        v = (-sx * st + sy * ct) / qq
                        r = math.sqrt(u * u + v * v)
                        if r >= rt:
                            continue
                        val = math.exp(-bn * ((r / re) ** inv_n - 1.0))
                        if r > taper0:
                            val *= 0.5 * (1.0 + math.cos(math.pi * (r - taper0) / (rt - taper0)))
                        acc += val
                val = acc * step * step
                cube[k, i, j] = val
                total += val
        scale = flux[k] / total if total > 0 else 0.0
        for i in range(s):
            for j in range(s):
                cube[k, i, j] *= scale


@njit(parallel=True, cache=True)
def sky_plane(out, sky0, cu, cv, c2, cx, cy, sx, sy):
    """Fill ``out`` with sky0 * (1 + cu u + cv v + c2 (u^2 + v^2) / 2), u = (x - cx) / sx, v = (y - cy) / sy."""
    ny, nx = out.shape
    for i in prange(ny):
        v = (i - cy) / sy
        base = 1.0 + cv * v + 0.5 * c2 * v * v
        for j in range(nx):
            u = (j - cx) / sx
            out[i, j] = sky0 * (base + cu * u + 0.5 * c2 * u * u)


@njit(cache=True, nogil=True)
def photon_noise(model, z, gain, read_noise_e, exact_below, out, low):
    """Photon plus read noise for one block of rows, in data units.

    Where a pixel expects ``exact_below`` electrons or more, the Poisson
    count is drawn through its Cornish-Fisher expansion from the standard
    normal ``z``: mean, variance and skewness of Poisson plus read noise,
    which matches an exact Poisson draw to better than 0.1 % in every
    quantile at 30 electrons and better above (without read noise the
    count is rounded to an integer, as photon counting gives). Darker
    pixels are flagged in ``low`` for an exact Poisson draw by the caller.
    Returns the number of flagged pixels.
    """
    ny, nx = model.shape
    rn2 = read_noise_e * read_noise_e
    inv_gain = 1.0 / gain
    n_low = 0
    for i in range(ny):
        for j in range(nx):
            lam = max(float(model[i, j]), 0.0) * gain
            if lam < exact_below:
                low[i, j] = True
                n_low += 1
                continue
            low[i, j] = False
            var = lam + rn2
            sigma = math.sqrt(var)
            skew = lam / (var * sigma)
            zz = float(z[i, j])
            electrons = lam + sigma * (zz + skew * (zz * zz - 1.0) / 6.0)
            if rn2 == 0.0:
                electrons = math.floor(electrons + 0.5)
            out[i, j] = electrons * inv_gain
    return n_low


@njit(parallel=True, cache=True)
def add_stamps(image, buf, offsets, ix0, iy0, hh, ww, band):
    """Add stamps from a flat buffer into ``image`` (clipped at its edges).

    Rows are processed in bands of ``band`` rows in parallel; within a band
    stamps are added in index order, so the sums do not depend on threading.
    """
    ny, nx = image.shape
    n = offsets.shape[0]
    nbands = (ny + band - 1) // band
    for bidx in prange(nbands):
        r0 = bidx * band
        r1 = min(ny, r0 + band)
        for k in range(n):
            y0 = iy0[k]
            y1 = y0 + hh[k]
            if y1 <= r0 or y0 >= r1:
                continue
            x0 = ix0[k]
            w = ww[k]
            off = offsets[k]
            i_lo = max(r0, y0) - y0
            i_hi = min(r1, y1) - y0
            j_lo = max(0, -x0)
            j_hi = min(w, nx - x0)
            for i in range(i_lo, i_hi):
                row = y0 + i
                base = off + i * w
                for j in range(j_lo, j_hi):
                    image[row, x0 + j] += buf[base + j]


@njit(cache=True)
def render_line(image, x0, y0, angle, half_length, surface, fwhm, beta):
    """Add a straight trail with a Moffat cross-section (line integral of the PSF).

    Parameters
    ----------
    image : ndarray of float32, shape (ny, nx)
    x0, y0 : float
        Centre of the trail (px).
    angle : float
        Direction (rad, from +x).
    half_length : float
        Half the length (px); the trail ends sharply (a satellite that entered
        or left the field during the exposure).
    surface : float
        Flux per pixel of length (data units / px).
    fwhm, beta : float
        Width of the cross-section.

    Returns
    -------
    float
        The flux added inside the image.
    """
    ny, nx = image.shape
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    expo = 0.5 - beta
    # Normalise the cross-section numerically: the integral of (1 + d^2/alpha^2)^(1/2 - beta).
    norm = 0.0
    dstep = 0.01 * alpha
    dmax = 60.0 * alpha
    d = -dmax
    while d <= dmax:
        norm += (1.0 + d * d / (alpha * alpha)) ** expo * dstep
        d += dstep
    amp = surface / norm
    ca = math.cos(angle)
    sa = math.sin(angle)
    width = 6.0 * fwhm
    added = 0.0
    for yy in range(ny):
        for xx in range(nx):
            rx = xx - x0
            ry = yy - y0
            along = rx * ca + ry * sa
            if along < -half_length or along > half_length:
                continue
            perp = -rx * sa + ry * ca
            if perp < -width or perp > width:
                continue
            v = amp * (1.0 + perp * perp / (alpha * alpha)) ** expo
            image[yy, xx] += v
            added += v
    return added


@njit(cache=True)
def deposit_tracks(image, x, y, angle, length, charge, width):
    """Deposit cosmic-ray charge along short straight tracks (no PSF: it never passed the optics).

    Each track is sampled every 0.1 px; ``width`` > 0 spreads every sample
    over its neighbours (a broader hit). Returns the charge landed in the image per track.
    """
    ny, nx = image.shape
    n = x.shape[0]
    landed = np.zeros(n)
    for k in range(n):
        nstep = max(1, int(length[k] / 0.1) + 1)
        q = charge[k] / nstep
        ca = math.cos(angle[k])
        sa = math.sin(angle[k])
        for m in range(nstep):
            t = (m / max(nstep - 1, 1) - 0.5) * length[k]
            px = x[k] + t * ca
            py = y[k] + t * sa
            ix = int(math.floor(px + 0.5))
            iy = int(math.floor(py + 0.5))
            if width[k] <= 0.0:
                if 0 <= ix < nx and 0 <= iy < ny:
                    image[iy, ix] += q
                    landed[k] += q
            else:
                # Share the sample with the 4-neighbours: a fatter hit.
                for m4 in range(5):
                    if m4 == 0:
                        yy, xx, f = iy, ix, 1.0 - width[k]
                    else:
                        yy = iy + (1 if m4 == 1 else -1 if m4 == 2 else 0)
                        xx = ix + (1 if m4 == 3 else -1 if m4 == 4 else 0)
                        f = width[k] / 4.0
                    if 0 <= xx < nx and 0 <= yy < ny:
                        image[yy, xx] += q * f
                        landed[k] += q * f
    return landed


@njit(cache=True)
def bleed_columns(data, saturation, bleed, flagged):
    """Clip at ``saturation``; with ``bleed``, spill the excess charge along the column.

    A CCD pixel that fills up spills its extra charge into its neighbours
    along the readout column, which produces the vertical bleed trails of
    bright stars. The excess of every saturated run is shared alternately
    up and down the column, filling pixels up to ``saturation``, until it
    is used up (charge is conserved, except at the image edges). Every
    saturated pixel and every pixel that received spilled charge is set
    True in ``flagged``.
    """
    ny, nx = data.shape
    for x in range(nx):
        y = 0
        while y < ny:
            if data[y, x] <= saturation:
                y += 1
                continue
            y0 = y
            excess = 0.0
            while y < ny and data[y, x] > saturation:
                excess += data[y, x] - saturation
                data[y, x] = saturation
                flagged[y, x] = True
                y += 1
            if not bleed:
                continue
            up = y
            down = y0 - 1
            turn = 0
            while excess > 0.0 and (up < ny or down >= 0):
                if (turn == 0 and up < ny) or down < 0:
                    p = up
                    up += 1
                else:
                    p = down
                    down -= 1
                turn = 1 - turn
                room = saturation - data[p, x]
                if room <= 0.0:
                    continue
                flagged[p, x] = True
                if excess >= room:
                    data[p, x] = saturation
                    excess -= room
                else:
                    data[p, x] += excess
                    excess = 0.0
            # Pixels filled upwards sit exactly at saturation, so the scan passes
            # them; a later run (another star) above is still found and clipped.
