"""Numba kernels: the stamps' normal equations and the spatially varying convolution.

Convolution convention everywhere: ``(T ⊗ K)[y, x] = Σ K[iy, ix] T[y + r − iy, x + r − ix]``
for a kernel of half-width r indexed ``K[iy, ix]`` (centre at ``[r, r]``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["convolve_tiles", "stamp_design"]


# 15 arguments: a numba kernel takes the images and the basis's factors as plain arrays
# (no dataclasses).
@njit(cache=True, parallel=True)
def stamp_design(T, J, VT, VJ, VTn, VJn, ys, xs, hs, r, fy, fx, raw_y, raw_x, ksq):
    """Weighted design matrix of each stamp for the raw (separable) basis and a constant.

    Parameters
    ----------
    T, J : float arrays (ny, nx)
        The image to convolve and the target; stamps lie at least
        ``hs + r`` px inside the edges.
    VT, VJ : float arrays (ny, nx)
        Their per-pixel variances for the weights.
    VTn, VJn : float arrays (ny, nx)
        The variances of their noise (with the sources' own), for ``Q`` and
        ``expected``.
    ys, xs : int64 arrays (n,)
        Stamp centres.
    hs, r : int
        Stamp and kernel half-widths.
    fy, fx, raw_y, raw_x : the basis's separable factors (see ``Basis``).
    ksq : float64 array (n, 2r + 1, 2r + 1)
        Squared kernel guess per stamp: the weights are
        ``w = 1 / (VJ + VT ⊗ ksq)``.

    Returns
    -------
    C : (n, n_raw + 1, (2 hs + 1)²)
        √w times the stamp of T convolved with each raw function, and √w
        (the background's column) last. The normal matrix is ``C C^T``
        (BLAS, by the caller).
    jw : (n, (2 hs + 1)²)
        √w J.
    Q : (n, 2r + 1, 2r + 1)
        ``Σ_p w(p) VTn(p − (u, v))``: what the noise of T adds to the
        expectation of the normal matrix is ``Σ_uv B_k B_k' Q``
        (errors in variables).
    expected : (n,)
        ``Σ_p w (VJn + VTn ⊗ ksq)``: the χ² of a stamp that the model fits
        to within the noise.
    """
    n = ys.shape[0]
    nraw = raw_y.shape[0]
    nfy = fy.shape[0]
    ns = 2 * hs + 1
    kw = 2 * r + 1
    m = ns + 2 * r
    C = np.zeros((n, nraw + 1, ns * ns))
    jw = np.zeros((n, ns * ns))
    Q = np.zeros((n, kw, kw))
    expected = np.zeros(n)
    for s in prange(n):
        y0 = ys[s] - hs - r
        x0 = xs[s] - hs - r
        w = np.empty((ns, ns))
        for i in range(ns):
            for j in range(ns):
                acc = 0.0
                for iy in range(kw):
                    for ix in range(kw):
                        acc += ksq[s, iy, ix] * VT[y0 + i + 2 * r - iy, x0 + j + 2 * r - ix]
                w[i, j] = 1.0 / (VJ[y0 + r + i, x0 + r + j] + acc)
                true = 0.0
                for iy in range(kw):
                    for ix in range(kw):
                        true += ksq[s, iy, ix] * VTn[y0 + i + 2 * r - iy, x0 + j + 2 * r - ix]
                expected[s] += w[i, j] * (VJn[y0 + r + i, x0 + r + j] + true)
        # Rows convolved with each 1-D y factor, over the full width of the region.
        Ty = np.zeros((nfy, ns, m))
        for f in range(nfy):
            for i in range(ns):
                for iy in range(kw):
                    c = fy[f, iy]
                    if c == 0.0:
                        continue
                    row = y0 + i + 2 * r - iy
                    for q in range(m):
                        Ty[f, i, q] += c * T[row, x0 + q]
        for i in range(ns):
            for j in range(ns):
                sw = np.sqrt(w[i, j])
                C[s, nraw, i * ns + j] = sw
                jw[s, i * ns + j] = sw * J[y0 + r + i, x0 + r + j]
        for k in range(nraw):
            f = raw_y[k]
            g = raw_x[k]
            for i in range(ns):
                for ix in range(kw):
                    c = fx[g, ix]
                    if c == 0.0:
                        continue
                    for j in range(ns):
                        C[s, k, i * ns + j] += c * Ty[f, i, j + 2 * r - ix]
            for p in range(ns * ns):
                C[s, k, p] *= C[s, nraw, p]
        for iy in range(kw):
            for ix in range(kw):
                acc = 0.0
                for i in range(ns):
                    for j in range(ns):
                        acc += w[i, j] * VTn[y0 + i + 2 * r - iy, x0 + j + 2 * r - ix]
                Q[s, iy, ix] = acc
    return C, jw, Q, expected


@njit(cache=True, parallel=True)
def convolve_tiles(padded, kernels, tile, out):
    """Convolve with a kernel that is constant on each ``tile`` × ``tile`` block.

    ``padded`` is the image with r pixels added on every side; ``kernels``
    has shape (n_tiles_y, n_tiles_x, 2r + 1, 2r + 1); ``out`` (ny, nx) is
    overwritten. Parallel over rows of tiles.
    """
    ny, nx = out.shape
    nty, ntx, kw, _ = kernels.shape
    for ty in prange(nty):
        y_start = ty * tile
        y_stop = min(y_start + tile, ny)
        for tx in range(ntx):
            x_start = tx * tile
            x_stop = min(x_start + tile, nx)
            for y in range(y_start, y_stop):
                for x in range(x_start, x_stop):
                    out[y, x] = 0.0
                for iy in range(kw):
                    row = y + kw - 1 - iy
                    for ix in range(kw):
                        c = kernels[ty, tx, iy, ix]
                        if c == 0.0:
                            continue
                        shift = kw - 1 - ix
                        for x in range(x_start, x_stop):
                            out[y, x] += c * padded[row, x + shift]
    return out
