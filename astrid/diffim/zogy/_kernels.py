"""Numba kernels of ZOGY: the fused spectral pass and the real-space assembly.

Both kernels are memory-bound single passes; they run in parallel over rows
and compute in float64 whatever the storage precision, so the float32 mode
loses precision only in storage and in the FFTs.

Numba's ``njit`` functions take arrays, scalars and tuples, not dataclasses
(a ``jitclass`` or ``structref`` holding the arrays would not be cacheable and
costs compile time on every import), so related arguments travel as tuples:
the four spectra or padded planes, the five output images, the scalar terms.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "zogy_spectra",
    "assemble",
    "apply_systematic",
    "noise_psd",
    "dilate_rows",
    "dilate_columns",
]

# Frequencies where both PSF spectra vanish carry no information; below this
# denominator the spectra are set to zero instead of dividing 0 by 0.
_TINY_DENOMINATOR = 1e-300


@njit(fastmath=True, cache=True)
def _zogy_row(spectra, psds, i, noise, has_psd, last_col_weight, split):
    """One row of :func:`zogy_spectra`; returns the row's contribution to F_S."""
    N_hat, R_hat, Pn_hat, Pr_hat = spectra
    psd_n, psd_r = psds
    f_n, f_r, var_n, var_r = noise
    has_psd_n, has_psd_r = has_psd
    nxh = N_hat.shape[1]
    fnfr2 = f_n * f_r * f_r
    frfn2 = f_r * f_n * f_n
    fnfr_sq = (f_n * f_r) ** 2
    row_sum = 0.0
    for j in range(nxh):
        pn = np.complex128(Pn_hat[i, j])
        pr = np.complex128(Pr_hat[i, j])
        nh = np.complex128(N_hat[i, j])
        rh = np.complex128(R_hat[i, j])
        pn2 = pn.real * pn.real + pn.imag * pn.imag
        pr2 = pr.real * pr.real + pr.imag * pr.imag
        # Noise power of each image at this frequency: σ² for white noise,
        # the power spectrum Φ(f) for correlated noise.
        noise_n = psd_n[i, j] if has_psd_n else var_n
        noise_r = psd_r[i, j] if has_psd_r else var_r
        den = noise_n * f_r * f_r * pr2 + noise_r * f_n * f_n * pn2
        d_hat = 0j
        sn = 0j
        sr = 0j
        if den > _TINY_DENOMINATOR:
            inv_den = 1.0 / den
            d_hat = (f_r * pr * nh - f_n * pn * rh) * math.sqrt(inv_den)  # eq. 13
            sn = (fnfr2 * pr2 * inv_den) * pn.conjugate() * nh  # eq. 29
            sr = (frfn2 * pn2 * inv_den) * pr.conjugate() * rh  # eq. 28
            weight = 2.0
            if j == 0:
                weight = 1.0
            elif j == nxh - 1:
                weight = last_col_weight
            row_sum += weight * fnfr_sq * pn2 * pr2 * inv_den  # eq. 42
        N_hat[i, j] = d_hat
        if split:
            Pn_hat[i, j] = sn
            Pr_hat[i, j] = sr
        else:
            R_hat[i, j] = sn - sr  # eq. 16
    return row_sum


@njit(parallel=True, cache=True)
def zogy_spectra(spectra, psds, noise, has_psd, last_col_weight, split):
    """One pass over the rfft2 half-spectra: D̂ (eq. 13) and Ŝ (eqs. 16, 28, 29).

    Results are written in place to save memory:

    - ``N_hat`` becomes D̂;
    - with ``split`` False, ``R_hat`` becomes Ŝ = k̂_n N̂ − k̂_r R̂;
    - with ``split`` True, ``Pn_hat`` becomes Ŝ_N = k̂_n N̂ and ``Pr_hat``
      becomes Ŝ_R = k̂_r R̂ (``R_hat`` is left as it was).

    Parameters
    ----------
    spectra : tuple of 4 complex ndarray, shape (ny, nx // 2 + 1)
        ``(N_hat, R_hat, Pn_hat, Pr_hat)``: half-spectra of the new image,
        reference image and their PSFs (PSF centres at pixel [0, 0], so
        P̂(0) = 1); overwritten as described above.
    psds : tuple of 2 real ndarray, shape (ny, nx // 2 + 1) or (1, 1)
        ``(psd_n, psd_r)``: noise power spectra Φ_n, Φ_r (per-pixel units: σ²
        times the Fourier transform of the normalised noise autocorrelation),
        used where ``has_psd`` says so; they replace σ² in every formula.
    noise : tuple of 4 float
        ``(f_n, f_r, var_n, var_r)``: flux zero points F_n and F_r and
        background variances σ_n² and σ_r² (white noise).
    has_psd : tuple of 2 bool
        Whether ``psd_n`` / ``psd_r`` are used.
    last_col_weight : float
        Weight of the last column in the sum over the full spectrum: 1 when
        the real-space width is even (the Nyquist column appears once), else 2.
    split : bool
        Keep Ŝ_N and Ŝ_R apart (needed for the astrometric-noise term).

    Returns
    -------
    float
        Σ over the full spectrum of F_n² F_r² |P̂_n|² |P̂_r|² / den (eq. 42 before
        division by the number of pixels).
    """
    ny = spectra[0].shape[0]
    # Per-row partial sums rather than a prange reduction: deterministic.
    row_sums = np.zeros(ny)
    for i in prange(ny):
        row_sums[i] = _zogy_row(spectra, psds, i, noise, has_psd, last_col_weight, split)
    return row_sums.sum()


@njit(parallel=True, fastmath=True, cache=True)
def kernel_squares_product(Vn_hat, kn2_hat, Vr_hat, kr2_hat, has_n, has_r):
    """V̂_N k̂²_n + V̂_R k̂²_r, written into ``Vn_hat`` (or ``Vr_hat`` when only R has one).

    Returns nothing; the caller reads the array it passed first when
    ``has_n`` is True, else ``Vr_hat``.
    """
    ny, nxh = Vn_hat.shape if has_n else Vr_hat.shape
    for i in prange(ny):
        for j in range(nxh):
            if has_n and has_r:
                Vn_hat[i, j] = Vn_hat[i, j] * kn2_hat[i, j] + Vr_hat[i, j] * kr2_hat[i, j]
            elif has_n:
                Vn_hat[i, j] = Vn_hat[i, j] * kn2_hat[i, j]
            else:
                Vr_hat[i, j] = Vr_hat[i, j] * kr2_hat[i, j]


@njit(cache=True, inline="always")
def _compact(S_pad, i, j, ring, diagonal):
    """S at (i, j) less the lowest of its values on a ring of radius ``ring``: the point-like part of a source.

    Around a point source S has fallen to almost nothing on part of a ring of
    two PSF widths, from any pixel of the source (the far side of the ring
    misses it), so the source keeps its value; an extended source (a
    galaxy's disc or bulge) is bright all round the ring, so little of it
    is left. Only positive excesses count as sources.
    """
    s = S_pad[i, j]
    low = min(
        S_pad[i + ring, j],
        S_pad[i - ring, j],
        S_pad[i, j + ring],
        S_pad[i, j - ring],
        S_pad[i + diagonal, j + diagonal],
        S_pad[i + diagonal, j - diagonal],
        S_pad[i - diagonal, j + diagonal],
        S_pad[i - diagonal, j - diagonal],
    )
    if s > 0.0 and low > 0.0:
        return s - min(low, s)
    return s


@njit(parallel=True, fastmath=True, cache=True)
def assemble(planes, mask, offset, terms, split, has_source_variance, outputs, ring=0, defer=False):
    """Crop the padded results and form S, V(S), S_corr, flux and its error in one pass.

    Parameters
    ----------
    planes : tuple of 4 real ndarray, shape (py, px)
        ``(D_pad, SN_pad, SR_pad, Vsrc_pad)``: padded D; padded S_N and S_R
        when ``split`` (otherwise ``SN_pad`` is S and ``SR_pad`` is
        ignored); padded V_N ⊗ k_n² + V_R ⊗ k_r² (ignored unless
        ``has_source_variance``).
    mask : bool ndarray, shape (ny, nx)
        Untrusted pixels of the output grid; outputs there get ``fill_value``
        (``flux_err`` gets NaN).
    offset : tuple of 2 int
        ``(y0, x0)``: offset of the output grid in the padded grid (≥ 1, so
        the central differences of the gradients never leave the padded
        array).
    terms : tuple of 6 float
        ``(F_S, f_n, var_ast_x, var_ast_y, systematic2, fill_value)``: the
        flux normalisation (eq. 42), also the background variance of S; the
        science flux zero point, which converts the paper's flux (reference
        units) to science units; the squared astrometric noise σ_x², σ_y² in
        pixels² (used when ``split``); the squared fractional systematic
        error ε² (used when ``split``), which adds 2 ε² min(C_N², C_R²) to
        V(S), where C is S_N or S_R less the lowest of its values on a ring
        of radius ``ring`` (the compact part; S itself when ``ring`` is 0);
        and the value of masked output pixels.
    split : bool
        S_N and S_R are apart (astrometric or systematic term).
    has_source_variance : bool
        ``Vsrc_pad`` holds the source-noise map.
    outputs : tuple of 5 real ndarray, shape (ny, nx)
        ``(D_out, S_out, Scorr_out, flux_out, flux_err_out)``, filled in place.
    ring : int
        Radius of that ring in pixels (≤ the padding).
    defer : bool
        ε is not known yet (it comes from the bright stars of every tile):
        ``Scorr_out`` receives V(S) without the systematic term and
        ``flux_err_out`` the term's factor 2 min(C_N², C_R²), for
        :func:`apply_systematic` to finish once ε is known. The padded
        planes can then be freed tile by tile.
    """
    D_pad, SN_pad, SR_pad, Vsrc_pad = planes
    y0, x0 = offset
    F_S, f_n, var_ast_x, var_ast_y, systematic2, fill_value = terms
    D_out, S_out, Scorr_out, flux_out, flux_err_out = outputs
    diagonal = int(round(ring / math.sqrt(2.0)))
    ny, nx = mask.shape
    inv_fs = 1.0 / F_S
    nan = np.nan
    for i in prange(ny):
        pi = i + y0
        for j in range(nx):
            if mask[i, j]:
                D_out[i, j] = fill_value
                S_out[i, j] = fill_value
                Scorr_out[i, j] = fill_value
                flux_out[i, j] = fill_value
                flux_err_out[i, j] = nan
                continue
            pj = j + x0
            term = 0.0  # 2 min(C_N², C_R²): the systematic term's factor
            if split:
                s = SN_pad[pi, pj] - SR_pad[pi, pj]
            else:
                s = SN_pad[pi, pj]
            v = F_S
            if has_source_variance:
                # FFT round-off can make a convolution of non-negative maps
                # slightly negative where they are zero.
                v += max(Vsrc_pad[pi, pj], 0.0)
            if split:
                gxn = 0.5 * (SN_pad[pi, pj + 1] - SN_pad[pi, pj - 1])
                gyn = 0.5 * (SN_pad[pi + 1, pj] - SN_pad[pi - 1, pj])
                gxr = 0.5 * (SR_pad[pi, pj + 1] - SR_pad[pi, pj - 1])
                gyr = 0.5 * (SR_pad[pi + 1, pj] - SR_pad[pi - 1, pj])
                v += var_ast_x * (gxn * gxn + gxr * gxr) + var_ast_y * (gyn * gyn + gyr * gyr)
                if systematic2 > 0.0 or defer:
                    if ring > 0:
                        sn = _compact(SN_pad, pi, pj, ring, diagonal)
                        sr = _compact(SR_pad, pi, pj, ring, diagonal)
                    else:
                        sn = SN_pad[pi, pj]
                        sr = SR_pad[pi, pj]
                    term = 2.0 * min(sn * sn, sr * sr)
            D_out[i, j] = D_pad[pi, pj]
            S_out[i, j] = s
            flux_out[i, j] = f_n * s * inv_fs
            if defer:
                Scorr_out[i, j] = v
                flux_err_out[i, j] = term
                continue
            v += systematic2 * term
            sd = math.sqrt(v)
            Scorr_out[i, j] = s / sd
            flux_err_out[i, j] = f_n * sd * inv_fs


@njit(parallel=True, fastmath=True, cache=True)
def apply_systematic(S, mask, F_S, f_n, systematic2, Scorr, flux_err):
    """Finish a tile that :func:`assemble` deferred: add ε² times the stored term to V(S).

    On entry ``Scorr`` holds V(S) without the systematic term and
    ``flux_err`` the term's factor; on return they hold S_corr and the flux
    error. Masked pixels are left as they are.
    """
    ny, nx = mask.shape
    inv_fs = 1.0 / F_S
    for i in prange(ny):
        for j in range(nx):
            if mask[i, j]:
                continue
            sd = math.sqrt(Scorr[i, j] + systematic2 * flux_err[i, j])
            Scorr[i, j] = S[i, j] / sd
            flux_err[i, j] = f_n * sd * inv_fs


@njit(parallel=True, fastmath=True, cache=True)
def noise_psd(cos_y, sin_y, cos_x, sin_x, rho, variance, floor, out):
    """Noise power spectrum σ² Σ_d ρ(d) cos(2π (k_y d_y / ny + k_x d_x / nx)) on the rfft2 half-grid.

    The Fourier transform of a small autocorrelation, evaluated directly (a
    few lags per frequency) instead of by a full-size FFT; the cosine of the
    sum is expanded into 1-D tables so the inner loop is multiply-adds only.
    Values below ``floor`` (in units of σ²) are raised to it.

    Parameters
    ----------
    cos_y, sin_y : float ndarray, shape (ny, n_lags)
        cos and sin of 2π k_y d_y / ny for each lag.
    cos_x, sin_x : float ndarray, shape (nx // 2 + 1, n_lags)
        The same along x.
    rho : float ndarray, shape (n_lags,)
        Weight of each lag: the autocorrelation, doubled for lags whose
        mirror (−d) is folded into them.
    variance : float
        σ², the per-pixel noise variance.
    floor : float
        Lower bound of the spectrum in units of σ².
    out : real ndarray, shape (ny, nx // 2 + 1)
        Filled in place.
    """
    ny, nxh = out.shape
    nlag = rho.shape[0]
    for i in prange(ny):
        for j in range(nxh):
            total = 0.0
            for k in range(nlag):
                total += rho[k] * (cos_y[i, k] * cos_x[j, k] - sin_y[i, k] * sin_x[j, k])
            out[i, j] = variance * max(total, floor)


@njit(parallel=True, cache=True)
def dilate_rows(mask, radius, out):
    """Dilate each row of a boolean mask by ``radius`` pixels (1-D, O(n) per row).

    ``out[i, j]`` is True when any of ``mask[i, j - radius : j + radius + 1]``
    is; followed by :func:`dilate_columns` it makes a square (Chebyshev)
    dilation.
    """
    ny, nx = mask.shape
    for i in prange(ny):
        last = -(radius + 1) * 2 - nx  # column of the last True seen, far away at first
        for j in range(nx):
            if mask[i, j]:
                last = j
            out[i, j] = j - last <= radius
        last = 2 * nx + 2 * radius + 2
        for j in range(nx - 1, -1, -1):
            if mask[i, j]:
                last = j
            if last - j <= radius:
                out[i, j] = True


@njit(parallel=True, cache=True)
def dilate_columns(mask, radius, out):
    """Dilate each column of a boolean mask by ``radius`` pixels.

    Columns are processed in blocks of 64 that sweep the rows together, so
    memory is read row by row (cache-friendly) rather than down a column.
    """
    ny, nx = mask.shape
    block = 64
    n_blocks = (nx + block - 1) // block
    for b in prange(n_blocks):
        j0 = b * block
        j1 = min(j0 + block, nx)
        last = np.empty(j1 - j0, dtype=np.int64)
        last[:] = -(radius + 1) * 2 - ny
        for i in range(ny):
            for j in range(j0, j1):
                if mask[i, j]:
                    last[j - j0] = i
                out[i, j] = i - last[j - j0] <= radius
        last[:] = 2 * ny + 2 * radius + 2
        for i in range(ny - 1, -1, -1):
            for j in range(j0, j1):
                if mask[i, j]:
                    last[j - j0] = i
                if last[j - j0] - i <= radius:
                    out[i, j] = True
