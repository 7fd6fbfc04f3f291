"""Rendering the simulated sky onto each epoch's pixels: point sources, galaxies, noise."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from . import _render
from ._geometry import (
    Epoch,
)


@dataclass
class Scene:
    """The catalogues of a simulated field (dicts of arrays; positions on the sky, in degrees).

    Attributes
    ----------
    stars, galaxies : dict
        The static sky (``draw_stars``/``draw_galaxies``), stars with ``flux_ref``/``flux_sci``.
    supernovae, asteroids : dict
        The transients; their ``flux`` is set when they are rendered.
    artifacts : dict
        Per epoch name, the detector artifacts (``draw_artifacts``).
    trails : list of dict
        Satellite trails (``draw_satellites``); their ``flux`` is set when rendered.
    """

    stars: dict
    galaxies: dict
    supernovae: dict
    asteroids: dict
    artifacts: dict
    trails: list


@dataclass
class Exposures:
    """The detector's output per epoch name: data, masks and variances (2-D, the epoch's shape),
    stars that saturate (bool per star), the cosmic-ray charge that landed (per hit, data units)."""

    saturated: dict
    images: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    variances: dict = field(default_factory=dict)
    landed: dict = field(default_factory=dict)


# Stamp sizes for the FFT convolution of galaxies (fast FFT lengths).
_FFT_SIZES = (16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
# Galaxy stamps per FFT batch: at most this many pixels.
_FFT_CHUNK_PIXELS = 1 << 22
# Below this many expected electrons a pixel's photon noise is an exact Poisson draw.
_EXACT_POISSON_BELOW = 50.0
# Pixel rows per noise chunk: fixed, so the noise does not depend on the thread count.
_NOISE_ROWS = 256
# Point-source stamps end where the profile falls below this fraction of the sky noise.
_WING_THRESHOLD = 0.05


_MAX_STAMP_RADIUS = 300
# UVOT readout streaks: the fraction of a star's counts collected during frame transfer.
STREAK_FRACTION = 0.015


def _point_stamps(ep: Epoch, x, y, flux):
    """Stamp geometry of point sources: radius grows with flux until the wing drops below the noise."""
    fwhm = ep.fwhm_at(x, y)
    alpha = _render.moffat_alpha(fwhm, ep.beta)
    alpha_major = alpha / np.sqrt(ep.psf_q)
    peak_per_flux = (ep.beta - 1.0) / (np.pi * alpha**2)
    threshold = _WING_THRESHOLD * ep.sky_sigma
    ratio = np.maximum(np.abs(flux) * peak_per_flux / threshold, 1.0)
    r_flux = alpha_major * np.sqrt(np.maximum(ratio ** (1.0 / ep.beta) - 1.0, 0.0))
    r_psf = _render.moffat_radius(fwhm, ep.beta, ep.psf_q)
    radius = (
        np.ceil(np.clip(np.maximum(r_psf, r_flux), 1.0, _MAX_STAMP_RADIUS)).astype(np.int64) + 1
    )
    ix = np.floor(x + 0.5).astype(np.int64)
    iy = np.floor(y + 0.5).astype(np.int64)
    return fwhm, ix - radius, iy - radius, 2 * radius + 1


def render_points(image: np.ndarray, ep: Epoch, x, y, flux) -> np.ndarray:
    """Add point sources (PSF-shaped) to ``image``; return each source's brightest pixel."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    flux = np.asarray(flux, float)
    peaks = np.zeros(x.size)
    if x.size == 0:
        return peaks
    fwhm, ix0, iy0, side = _point_stamps(ep, x, y, flux)
    ny, nx = ep.shape
    touches = (ix0 < nx) & (ix0 + side > 0) & (iy0 < ny) & (iy0 + side > 0) & (flux != 0)
    idx = np.flatnonzero(touches)
    if idx.size == 0:
        return peaks
    sizes = side[idx] * side[idx]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    buf = np.empty(int(sizes.sum()), dtype=np.float32)
    sub_peaks = np.zeros(idx.size)
    _render.render_moffat_stamps(
        buf,
        offsets,
        x[idx],
        y[idx],
        ix0[idx],
        iy0[idx],
        side[idx],
        side[idx],
        fwhm[idx],
        flux[idx],
        ep.beta,
        ep.psf_q,
        ep.psf_theta,
        sub_peaks,
    )
    _render.add_stamps(image, buf, offsets, ix0[idx], iy0[idx], side[idx], side[idx], 64)
    peaks[idx] = sub_peaks
    return peaks


def render_galaxies(image: np.ndarray, ep: Epoch, gal: dict, flux: np.ndarray) -> None:
    """Add Sersic galaxies convolved with the local PSF (batched FFTs over stamps).

    The pixel-integrated profile is sampled on a grid centred on the galaxy
    and convolved with the PSF shifted to the galaxy's sub-pixel position.
    The sampled galaxy is then the same scene in both epochs (anchored to the
    galaxy, not to either pixel grid), so each epoch shows exactly that
    scene convolved with its own PSF and nothing moves with the sub-pixel
    phase. (With ``pixel_scale_ratio`` != 1 the two samplings differ in
    spacing, at the level of the profile's structure below a pixel.)
    """
    x, y = ep.pix(gal["ra"], gal["dec"])
    r_eff = gal["r_eff_arcsec"] / ep.pixel_scale
    n_s = gal["sersic_n"]
    r_trunc = np.clip(r_eff * (2.5 + 1.2 * n_s), 3.0, 100.0)
    fwhm = ep.fwhm_at(x, y)
    r_psf = ep.psf_radius(fwhm.max()) if x.size else 1
    half = np.ceil(r_trunc).astype(int) + r_psf + 2
    sizes = np.array(_FFT_SIZES)
    pick = np.searchsorted(sizes, 2 * half + 2)
    # The largest galaxies are cut to the largest stamp.
    pick = np.minimum(pick, sizes.size - 1)
    side = sizes[pick]
    r_trunc = np.minimum(r_trunc, side // 2 - r_psf - 3)
    ny, nx = ep.shape
    ix = np.floor(x + 0.5).astype(np.int64)
    iy = np.floor(y + 0.5).astype(np.int64)
    ix0 = ix - side // 2
    iy0 = iy - side // 2
    touches = (ix0 < nx) & (ix0 + side > 0) & (iy0 < ny) & (iy0 + side > 0)
    theta = ep.sky_angle(gal["pa_deg"])
    stamps, offsets, index = [], [], []
    used = 0
    for s in np.unique(side[touches]):
        members = np.flatnonzero(touches & (side == s))
        chunk = max(1, _FFT_CHUNK_PIXELS // (s * s))
        for start in range(0, members.size, chunk):
            k = members[start : start + chunk]
            zero = np.zeros(k.size)
            cube = np.empty((k.size, s, s), dtype=np.float32)
            _render.render_sersic_stamps(
                cube,
                zero,
                zero,
                r_eff[k],
                n_s[k],
                gal["axis_ratio"][k],
                theta[k],
                r_trunc[k],
                flux[k],
            )
            kernels = np.empty((k.size, s, s), dtype=np.float32)
            _render.render_psf_kernels(
                kernels,
                x[k] - ix[k],
                y[k] - iy[k],
                fwhm[k],
                int(r_psf),
                ep.beta,
                ep.psf_q,
                ep.psf_theta,
            )
            spec = scipy.fft.rfft2(cube, workers=-1)
            spec *= scipy.fft.rfft2(kernels, workers=-1)
            stamps.append(
                scipy.fft.irfft2(spec, s=(s, s), workers=-1)
                .astype(np.float32, copy=False)
                .reshape(-1)
            )
            offsets.append(used + np.arange(k.size, dtype=np.int64) * s * s)
            index.append(k)
            used += k.size * s * s
    if not index:
        return
    # One pass adds every galaxy: few parallel launches, whatever the number of stamp sizes.
    k = np.concatenate(index)
    _render.add_stamps(
        image,
        np.concatenate(stamps),
        np.concatenate(offsets),
        ix0[k],
        iy0[k],
        side[k].astype(np.int64),
        side[k].astype(np.int64),
        64,
    )


def _flux_sigma(ep: Epoch, variance: np.ndarray, x, y) -> np.ndarray:
    """Error of an optimal PSF fit of a point source's flux: 1 / sqrt(sum(P^2 / V)); NaN off the image."""
    out = np.full(np.size(x), np.nan)
    for k, (xk, yk) in enumerate(zip(np.atleast_1d(x), np.atleast_1d(y))):
        if not ep.contains(xk, yk):
            continue
        p, sl_img, sl_psf = _psf_cutout(ep, xk, yk)
        v = variance[sl_img].astype(float)
        out[k] = 1.0 / math.sqrt(float(np.sum(p[sl_psf] ** 2 / v)))
    return out


def snr_columns(eps, variances, flux_ratio, pos, flux_diff) -> dict:
    """S/N of a flux change in the science image alone and in the ideal difference image.

    The difference adds the reference's PSF-fit error, scaled to science units.
    """
    sigma_sci = _flux_sigma(eps["science"], variances["science"], pos["x_sci"], pos["y_sci"])
    sigma_ref = _flux_sigma(eps["reference"], variances["reference"], pos["x_ref"], pos["y_ref"])
    flux_diff = np.abs(np.asarray(flux_diff, float))
    return {
        "snr_sci": flux_diff / sigma_sci,
        "snr_diff": flux_diff / np.hypot(sigma_sci, flux_ratio * sigma_ref),
    }


def _psf_cutout(ep: Epoch, x, y):
    fwhm = float(ep.fwhm_at(np.array([x]), np.array([y]))[0])
    r = ep.psf_radius(fwhm)
    ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
    p = _render.psf_stamp(2 * r + 1, x - ix, y - iy, fwhm, ep.beta, ep.psf_q, ep.psf_theta, False)
    ny, nx = ep.shape
    y0, y1 = max(iy - r, 0), min(iy + r + 1, ny)
    x0, x1 = max(ix - r, 0), min(ix + r + 1, nx)
    return (
        p,
        (slice(y0, y1), slice(x0, x1)),
        (slice(y0 - iy + r, y1 - iy + r), slice(x0 - ix + r, x1 - ix + r)),
    )


def flux_for_snr(ep: Epoch, model: np.ndarray, x, y, snr) -> np.ndarray:
    """Flux that gives the target optimal S/N on top of the local model (sky, host, neighbours)."""
    flux = np.zeros(np.size(x))
    for k, (xk, yk, target) in enumerate(zip(x, y, snr)):
        p, sl_img, sl_psf = _psf_cutout(ep, xk, yk)
        pp = p[sl_psf]
        v0 = model[sl_img].astype(float) / ep.gain + ep.noise_floor**2
        f = target / math.sqrt(float(np.sum(pp**2 / v0)))
        for _ in range(8):  # the source's own photon noise: a fixed point that converges fast
            f = target / math.sqrt(float(np.sum(pp**2 / (v0 + f * pp / ep.gain))))
        # Transients should not saturate: keep the peak below 70 % of the headroom.
        headroom = ep.saturation - float(model[sl_img].max())
        f_max = 0.7 * max(headroom, 0.0) / float(pp.max())
        flux[k] = min(f, f_max) if f_max > 0 else f
    return flux


def add_noise(model: np.ndarray, ep: Epoch, seq: np.random.SeedSequence) -> np.ndarray:
    """Photon noise (with the gain) plus Gaussian read noise, in parallel row chunks.

    Each chunk of rows has its own random stream, so the noise does not depend
    on the number of threads. Pixels below :data:`_EXACT_POISSON_BELOW`
    electrons get exact Poisson draws; brighter ones the Cornish-Fisher form
    of the same distribution (see :func:`_render.photon_noise`).
    """
    ny, nx = model.shape
    out = np.empty_like(model)
    starts = list(range(0, ny, _NOISE_ROWS))
    children = seq.spawn(len(starts))
    gain = ep.gain
    rn_e = ep.read_noise

    def chunk(i):
        rows = slice(starts[i], starts[i] + _NOISE_ROWS)
        rng = np.random.default_rng(children[i])
        block = model[rows]
        z = rng.standard_normal(block.shape, dtype=np.float32)
        low = np.empty(block.shape, dtype=bool)
        target = out[rows]
        if _render.photon_noise(block, z, gain, rn_e, _EXACT_POISSON_BELOW, target, low):
            electrons = np.maximum(block[low], 0.0).astype(np.float64) * gain
            counts = rng.poisson(electrons) + rn_e * z[low].astype(np.float64)
            target[low] = counts / gain

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(chunk, range(len(starts))))
    return out


def render_epoch(ep: Epoch, stars, gal, flux_key):
    model = ep.sky_image()
    peaks = render_points(model, ep, *ep.pix(stars["ra"], stars["dec"]), stars[flux_key])
    gflux = 10 ** (-0.4 * (gal["mag"] - ep.zp))
    render_galaxies(model, ep, gal, gflux)
    x, y = ep.pix(stars["ra"], stars["dec"])
    saturated = ep.contains(x, y) & (peaks + ep.sky_at(x, y) >= ep.saturation)
    return model, saturated
