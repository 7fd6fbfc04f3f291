"""The simulated survey: reference/science pairs with every effect that makes difference imaging hard.

One sky (stars, galaxies, transients) is generated in world coordinates and
projected through each epoch's own TAN WCS; each epoch is then rendered
independently with its own PSF, sky, zero point, noise and detector defects.
The truth table lists every injected transient and artifact with its position
in both pixel grids and its flux in both epochs.
"""

from __future__ import annotations

import difflib
import io as _io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from astropy.io import fits
from astropy.table import Column, Table
from astropy.time import Time
from astropy.wcs import WCS

from ..errors import AstridInputError
from ..io import Image, atomic_write, header_meta, write_image
from ..manifest import Manifest
from . import _render
from ._presets import PRESETS

__all__ = ["SimulatedPair", "pair", "survey", "PRESETS", "TRUTH_KINDS"]

#: Values of the truth table's ``kind`` column.
TRUTH_KINDS = (
    "supernova",
    "variable",
    "asteroid",
    "cosmic_ray",
    "hot_pixel",
    "bad_column",
    "satellite_trail",
    "saturated_star",
)

EPOCHS = ("reference", "science")

# Independent random streams, so that changing one ingredient (say the number
# of supernovae) leaves every other pixel of the image unchanged.
_STREAMS = {
    "geometry": 1, "epochs": 2, "stars": 3, "galaxies": 4, "hosts": 5, "saturated": 6,
    "variables": 7, "supernovae": 8, "asteroids": 9, "artifacts_reference": 10,
    "artifacts_science": 11, "noise_reference": 12, "noise_science": 13, "satellites": 14,
}

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
_STREAK_FRACTION = 0.015
_MIN_SIZE = 128
# Injected transients keep apart (no blends in the truth) and clear of the
# forced saturated stars and their bleeds.
_MIN_SEPARATION_PX = 12.0
_SATURATED_CLEARANCE_PX = 30.0


@dataclass
class SimulatedPair:
    """A simulated reference/science pair with its truth.

    Attributes
    ----------
    reference, science : astrid.Image
        The two epochs, each on its own pixel grid: float32 data in ADU
        (counts for UVOT), TAN WCS, mask (saturated and bleed pixels, bad
        columns, hot pixels in the bad-pixel map), per-pixel variance
        (ADU², from the noiseless model, so including source noise; cosmic
        rays and detector defects are not in it, and masked pixels keep the
        value their light would have), header and metadata.
    truth : astropy.table.Table
        One row per injected transient or artifact (see :func:`pair`).
    stars : astropy.table.Table
        Every star (including variables and deliberately saturated ones): ``id``,
        ``ra``, ``dec``, ``x_ref``, ``y_ref``, ``x_sci``, ``y_sci``, ``mag``
        (reference epoch), ``mag_sci``, ``flux_ref``, ``flux_sci``, ``variable``,
        ``saturated_ref``, ``saturated_sci``.
    galaxies : astropy.table.Table
        Every galaxy: ``id``, position columns as for stars, ``mag``,
        ``flux_ref``, ``flux_sci``, ``sersic_n``, ``r_eff_arcsec`` (major axis),
        ``axis_ratio``, ``pa_deg`` (east of north), ``host`` (hosts a supernova).
    params : dict
        Every parameter used (the preset after overrides) plus the true
        properties of the pair: ``psf_reference``/``psf_science`` (PSFs at the
        field centre, 2-D arrays normalised to sum 1, centred on the middle
        pixel), ``fwhm_reference``/``fwhm_science`` (px at the centre),
        ``flux_ratio`` (science/reference flux of a constant source),
        ``zp_reference``/``zp_science`` (MAGZP), ``sky_reference``/``sky_science``
        (ADU per pixel at the centre), ``shift_px``, ``rotation_deg``,
        ``pixel_scale_ratio``, ``sci_to_ref`` (2x3 affine matrix taking science
        pixels ``(x, y, 1)`` to reference pixels), ``saturation_reference``/
        ``saturation_science``, ``ra``/``dec`` of the reference centre,
        ``mjd_reference``/``mjd_science`` and ``timing_s`` (seconds per stage).
    """

    reference: Image
    science: Image
    truth: Table
    stars: Table = field(default_factory=Table)
    galaxies: Table = field(default_factory=Table)
    params: dict = field(default_factory=dict)
    _epochs: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        kinds, counts = np.unique(np.asarray(self.truth["kind"]), return_counts=True) if len(self.truth) else ([], [])
        rows = ", ".join(f"{n} {k}" for k, n in zip(kinds, counts))
        return (f"SimulatedPair(preset={self.params.get('preset')!r}, seed={self.params.get('seed')}, "
                f"shape={self.science.shape}, truth: {rows})")

    def image(self, epoch: str) -> Image:
        """The :class:`~astrid.Image` of ``epoch`` (``"reference"`` or ``"science"``)."""
        return {"reference": self.reference, "science": self.science}[_check_epoch(epoch)]

    def psf(
        self, epoch: str = "science", x: float | None = None, y: float | None = None, size: int | None = None
    ) -> np.ndarray:
        """The true PSF of an epoch at a pixel position.

        Parameters
        ----------
        epoch : {"science", "reference"}
        x, y : float, optional
            0-based pixel position in that epoch's grid; default the image centre.
        size : int, optional
            Odd side of the stamp (px); default twice the radius that encloses
            99.5 % of the flux, plus one.

        Returns
        -------
        numpy.ndarray, shape (size, size)
            The pixel-integrated PSF, normalised to sum 1, centred on the
            middle pixel.
        """
        ep = self._epochs[_check_epoch(epoch)]
        x = ep.cx if x is None else float(x)
        y = ep.cy if y is None else float(y)
        fwhm = float(ep.fwhm_at(np.array([x]), np.array([y]))[0])
        if size is None:
            size = 2 * ep.psf_radius(fwhm) + 1
        size = int(size)
        if size < 3 or size % 2 == 0:
            raise AstridInputError(f"PSF size must be an odd integer >= 3, got {size}")
        return _render.psf_stamp(size, 0.0, 0.0, fwhm, ep.beta, ep.psf_q, ep.psf_theta, True)


def _check_epoch(epoch: str) -> str:
    if epoch not in EPOCHS:
        raise AstridInputError(f"epoch must be 'reference' or 'science', got {epoch!r}")
    return epoch


# --------------------------------------------------------------------------- parameters


def _resolve(preset: str, overrides: dict) -> dict:
    if preset not in PRESETS:
        raise AstridInputError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[preset].items()}
    for key, value in overrides.items():
        if key not in params or key == "filters":
            close = difflib.get_close_matches(key, [k for k in params if k != "filters"], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise AstridInputError(f"unknown simulation parameter {key!r} for preset {preset!r}{hint}")
        params[key] = value
    params["preset"] = preset
    if params["filter"] not in params["filters"]:
        raise AstridInputError(
            f"filter {params['filter']!r} is not available in preset {preset!r}; "
            f"choose one of {sorted(params['filters'])}"
        )
    for key in ("n_stars", "n_galaxies"):
        if params[key] is not None:
            _check_count(params, key)
    for key in ("n_host_galaxies", "n_supernovae", "n_variables", "n_asteroids", "n_saturated_stars",
                "n_bad_columns", "n_satellite_trails"):
        _check_count(params, key)
    if not isinstance(params["reference_stack"], (int, np.integer)) or params["reference_stack"] < 1:
        raise AstridInputError(
            f"reference_stack must be a whole number of exposures >= 1, got {params['reference_stack']!r}"
        )
    for key in ("pixel_scale", "pixel_scale_ratio", "exptime_reference", "exptime_science", "gain", "psf_beta"):
        value = params[key]
        if not _is_number(value) or not value > 0:
            raise AstridInputError(f"simulation parameter {key!r} must be a positive number, got {value!r}")
    if params["psf_beta"] <= 1.5:
        raise AstridInputError(
            f"psf_beta must be > 1.5 (a Moffat profile with finite flux and width), got {params['psf_beta']}"
        )
    if not 0.5 <= params["pixel_scale_ratio"] <= 2.0:
        raise AstridInputError(f"pixel_scale_ratio must be within [0.5, 2], got {params['pixel_scale_ratio']}")
    if not _is_number(params["read_noise"]) or params["read_noise"] < 0:
        raise AstridInputError(f"read_noise must be >= 0 electrons, got {params['read_noise']!r}")
    for key in ("fwhm_reference", "fwhm_science"):
        value = params[key]
        if value is not None and (not _is_number(value) or not 0.8 <= value <= 30):
            raise AstridInputError(f"{key} must be a FWHM in pixels within [0.8, 30], got {value!r}")
    if params["shift_px"] is not None:
        shift = np.asarray(params["shift_px"], dtype=float)
        if shift.shape != (2,) or not np.all(np.isfinite(shift)):
            raise AstridInputError(f"shift_px must be a pair (dx, dy) of finite numbers, got {params['shift_px']!r}")
    for key in ("psf_variation", "psf_ellipticity", "sky_gradient", "sn_faint_fraction", "sn_core_fraction",
                "sn_hostless_fraction", "asteroid_in_reference", "hot_pixel_masked_fraction"):
        value = params[key]
        if not _is_number(value) or not 0 <= value <= 1:
            raise AstridInputError(f"simulation parameter {key!r} must be within [0, 1], got {value!r}")
    return params


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


def _check_count(params: dict, key: str) -> None:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise AstridInputError(f"simulation parameter {key!r} must be a non-negative integer, got {value!r}")


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        shape = (int(size), int(size))
    else:
        try:
            ny, nx = size
            shape = (int(ny), int(nx))
            if shape != (ny, nx):
                raise TypeError
        except (TypeError, ValueError):
            raise AstridInputError(f"size must be an int or a pair (ny, nx) of ints, got {size!r}") from None
    if min(shape) < _MIN_SIZE:
        raise AstridInputError(f"size must be at least {_MIN_SIZE} pixels on each side, got {shape}")
    return shape


class _Streams:
    def __init__(self, seed):
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise AstridInputError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = int(seed)

    def seq(self, name: str) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(_STREAMS[name],))

    def __call__(self, name: str) -> np.random.Generator:
        return np.random.default_rng(self.seq(name))


# --------------------------------------------------------------------------- geometry and epochs


@dataclass
class _Epoch:
    name: str
    shape: tuple[int, int]
    wcs: WCS
    pixel_scale: float
    fwhm0: float
    beta: float
    psf_q: float
    psf_theta: float
    psf_coef: np.ndarray
    zp: float
    exptime: float
    gain: float
    read_noise: float
    saturation: float
    sky0: float
    sky_coef: np.ndarray
    mjd: float
    sky_mag: float

    @property
    def cx(self) -> float:
        return (self.shape[1] - 1) / 2.0

    @property
    def cy(self) -> float:
        return (self.shape[0] - 1) / 2.0

    def _uv(self, x, y):
        u = (np.asarray(x, float) - self.cx) / (self.shape[1] / 2.0)
        v = (np.asarray(y, float) - self.cy) / (self.shape[0] / 2.0)
        return u, v

    def fwhm_at(self, x, y) -> np.ndarray:
        """FWHM (px): a smooth quadratic of position, equal to fwhm0 at the centre."""
        u, v = self._uv(x, y)
        c = self.psf_coef
        return self.fwhm0 * (1.0 + c[0] * u + c[1] * v + c[2] * 0.5 * (u * u + v * v))

    def sky_at(self, x, y) -> np.ndarray:
        u, v = self._uv(x, y)
        c = self.sky_coef
        return self.sky0 * (1.0 + c[0] * u + c[1] * v + c[2] * 0.5 * (u * u + v * v))

    def sky_image(self) -> np.ndarray:
        ny, nx = self.shape
        out = np.empty(self.shape, dtype=np.float32)
        c = self.sky_coef
        _render.sky_plane(out, self.sky0, c[0], c[1], c[2], self.cx, self.cy, nx / 2.0, ny / 2.0)
        return out

    @property
    def noise_floor(self) -> float:
        """Read noise in data units."""
        return self.read_noise / self.gain

    @property
    def sky_sigma(self) -> float:
        return math.sqrt(self.sky0 / self.gain + self.noise_floor**2)

    def psf_radius(self, fwhm) -> int:
        r = _render.moffat_radius(np.asarray(fwhm, float), self.beta, self.psf_q)
        return int(np.ceil(np.max(r))) + 1

    def pix(self, ra, dec):
        x, y = self.wcs.wcs_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
        return np.asarray(x, float), np.asarray(y, float)

    def pix1(self, ra, dec) -> tuple[float, float]:
        x, y = self.pix(np.atleast_1d(ra), np.atleast_1d(dec))
        return float(x[0]), float(y[0])

    def world(self, x, y):
        ra, dec = self.wcs.wcs_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return np.asarray(ra, float), np.asarray(dec, float)

    def sky_angle(self, pa_deg) -> np.ndarray:
        """Angle (rad, from +x in pixels) of a sky direction at position angle ``pa_deg`` (east of north)."""
        pa = np.deg2rad(np.asarray(pa_deg, float))
        cd_inv = np.linalg.inv(self.wcs.wcs.cd)
        dx = cd_inv[0, 0] * np.sin(pa) + cd_inv[0, 1] * np.cos(pa)
        dy = cd_inv[1, 0] * np.sin(pa) + cd_inv[1, 1] * np.cos(pa)
        return np.arctan2(dy, dx)

    def contains(self, x, y, margin=0.0) -> np.ndarray:
        ny, nx = self.shape
        x = np.asarray(x)
        y = np.asarray(y)
        return (x >= margin - 0.5) & (x <= nx - 0.5 - margin) & (y >= margin - 0.5) & (y <= ny - 0.5 - margin)


def _rotation(theta_rad: float) -> np.ndarray:
    c, s = math.cos(theta_rad), math.sin(theta_rad)
    return np.array([[c, -s], [s, c]])


def _tan_wcs(shape, crval, cd, crpix0) -> WCS:
    """A TAN WCS; ``crpix0`` is the 0-based pixel of the tangent point."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [float(crval[0]) % 360.0, float(crval[1])]
    wcs.wcs.crpix = [float(crpix0[0]) + 1.0, float(crpix0[1]) + 1.0]
    wcs.wcs.cd = cd
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    wcs.wcs.set()
    return wcs


def _geometry(p: dict, shape, rng: np.random.Generator) -> dict:
    # Draw every random value first so that overriding one keeps the others.
    ra = rng.uniform(0.0, 360.0)
    lo, hi = np.sin(np.deg2rad(p["dec_range"]))
    dec = float(np.rad2deg(np.arcsin(rng.uniform(lo, hi))))
    max_shift = float(p["max_shift_px"])
    whole = rng.integers(-int(max_shift), int(max_shift) + 1, size=2)
    shift = np.clip(whole + rng.uniform(-0.5, 0.5, size=2), -max_shift - 0.5, max_shift + 0.5)
    rotation = rng.uniform(-1.0, 1.0) * float(p["max_rotation_deg"])
    if p["ra"] is not None:
        ra = float(p["ra"])
    if p["dec"] is not None:
        dec = float(p["dec"])
        if not -90 < dec < 90:
            raise AstridInputError(f"dec must be within (-90, 90) degrees, got {dec}")
    if p["shift_px"] is not None:
        shift = np.asarray(p["shift_px"], dtype=float)
    if p["rotation_deg"] is not None:
        rotation = float(p["rotation_deg"])
    ratio = float(p["pixel_scale_ratio"])
    scale = float(p["pixel_scale"]) / 3600.0
    cd_ref = scale * np.array([[-1.0, 0.0], [0.0, 1.0]])
    centre = np.array([(shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0])
    wcs_ref = _tan_wcs(shape, (ra, dec), cd_ref, centre)
    # The science grid: its centre sees reference pixel (centre + shift); its
    # axes are turned by `rotation` and its pixels are `ratio` times larger.
    # Both epochs share the tangent point, so this mapping is exactly affine
    # (different tangent points would add a meridian-convergence rotation of
    # shift * tan(dec)).
    m = ratio * _rotation(np.deg2rad(rotation))
    wcs_sci = _tan_wcs(shape, (ra, dec), cd_ref @ m, centre - np.linalg.solve(m, shift))
    sci_to_ref = np.hstack([m, (centre + shift - m @ centre)[:, None]])
    return {
        "ra": float(ra) % 360.0, "dec": float(dec), "shift_px": (float(shift[0]), float(shift[1])),
        "rotation_deg": float(rotation), "pixel_scale_ratio": ratio, "wcs_reference": wcs_ref,
        "wcs_science": wcs_sci, "sci_to_ref": sci_to_ref,
    }


def _field_coefficients(rng, amplitude: float) -> np.ndarray:
    """Coefficients of c0 u + c1 v + c2 (u^2 + v^2)/2 whose largest value over the field is ``amplitude``."""
    c = rng.normal(size=3)
    g = np.linspace(-1.0, 1.0, 21)
    u, v = np.meshgrid(g, g)
    peak = np.max(np.abs(c[0] * u + c[1] * v + c[2] * 0.5 * (u * u + v * v)))
    return c * (amplitude / peak) if peak > 0 else np.zeros(3)


def _epochs(p: dict, shape, geo: dict, rng: np.random.Generator) -> dict[str, _Epoch]:
    filt = p["filters"][p["filter"]]
    seeing_scale = filt.get("seeing_scale", 1.0)
    draws = {
        "seeing_reference": rng.uniform(*p["seeing_reference"]) * seeing_scale,
        "seeing_science": rng.uniform(*p["seeing_science"]) * seeing_scale,
        "q": 1.0 - rng.uniform(0.0, p["psf_ellipticity"], size=2),
        "theta": rng.uniform(0.0, np.pi, size=2),
        "psf_coef": [_field_coefficients(rng, p["psf_variation"]) for _ in EPOCHS],
        "sky_coef": [_field_coefficients(rng, p["sky_gradient"]) for _ in EPOCHS],
        "transparency": rng.uniform(*p["transparency_loss"]),
        "brightening": rng.uniform(*p["sky_brightening"]),
        "mjd_reference": rng.uniform(58200.0, 58900.0),
        "baseline": rng.uniform(400.0, 1460.0),
    }
    mjd_ref = float(p["mjd_reference"]) if p["mjd_reference"] is not None else draws["mjd_reference"]
    mjd_sci = float(p["mjd_science"]) if p["mjd_science"] is not None else mjd_ref + draws["baseline"]
    if mjd_sci - mjd_ref < 365.0:
        raise AstridInputError(
            f"the reference must be at least one year older than the science epoch: "
            f"mjd_reference={mjd_ref}, mjd_science={mjd_sci}"
        )
    epochs = {}
    for i, name in enumerate(EPOCHS):
        scale = p["pixel_scale"] * (1.0 if name == "reference" else p["pixel_scale_ratio"])
        exptime = float(p[f"exptime_{name}"])
        # The mean of `stack` exposures: the same flux scale with 1/sqrt(stack) of the noise.
        stack = int(p["reference_stack"]) if name == "reference" else 1
        zp = p[f"zp_{name}"]
        if zp is None:
            zp = filt["zp_1s"] + 2.5 * np.log10(exptime)
            if name == "science":
                zp -= draws["transparency"]
        sky_mag = p[f"sky_mag_{name}"]
        if sky_mag is None:
            sky_mag = filt["sky_mag"] - (draws["brightening"] if name == "science" else 0.0)
        fwhm = p[f"fwhm_{name}"]
        if fwhm is None:
            fwhm = draws[f"seeing_{name}"] / scale
        saturation = p["saturation"]
        if saturation is None:
            saturation = p["saturation_rate"] * exptime
        epochs[name] = _Epoch(
            name=name, shape=shape, wcs=geo[f"wcs_{name}"], pixel_scale=scale, fwhm0=float(fwhm),
            beta=float(p["psf_beta"]), psf_q=float(draws["q"][i]), psf_theta=float(draws["theta"][i]),
            psf_coef=draws["psf_coef"][i], zp=float(zp), exptime=exptime, gain=float(p["gain"]) * stack,
            read_noise=float(p["read_noise"]) * math.sqrt(stack), saturation=float(saturation),
            sky0=float(scale**2 * 10 ** (-0.4 * (sky_mag - zp))), sky_coef=draws["sky_coef"][i],
            mjd=mjd_ref if name == "reference" else mjd_sci, sky_mag=float(sky_mag),
        )
    return epochs


# --------------------------------------------------------------------------- catalogues


def _power_law_mags(rng, n, lo, hi, slope) -> np.ndarray:
    """Magnitudes with number counts dN/dm ∝ 10^(slope m) between lo and hi."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + rng.uniform(size=n) * (b - a)) / slope


def _footprint_box(eps: dict, pad: float):
    """Bounding box, in reference pixels, of both images plus ``pad``."""
    ref, sci = eps["reference"], eps["science"]
    ny, nx = sci.shape
    cx = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    cy = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    rx, ry = ref.pix(*sci.world(cx, cy))
    ny, nx = ref.shape
    x0 = min(-0.5, rx.min()) - pad
    x1 = max(nx - 0.5, rx.max()) + pad
    y0 = min(-0.5, ry.min()) - pad
    y1 = max(ny - 0.5, ry.max()) + pad
    return x0, x1, y0, y1


def _inner_positions(rng, n, eps, margin) -> tuple[np.ndarray, np.ndarray]:
    """Sky positions (ra, dec) at least ``margin`` pixels inside both images."""
    sci, ref = eps["science"], eps["reference"]
    ny, nx = sci.shape
    margin = min(margin, 0.25 * min(nx, ny))
    ras, decs = [np.empty(0)], [np.empty(0)]
    got = 0
    for _ in range(1000):
        if got >= n:
            break
        m = max(2 * (n - got), 16)
        x = rng.uniform(margin, nx - 1 - margin, m)
        y = rng.uniform(margin, ny - 1 - margin, m)
        ra, dec = sci.world(x, y)
        ok = ref.contains(*ref.pix(ra, dec), margin=margin)
        ras.append(ra[ok])
        decs.append(dec[ok])
        got += int(ok.sum())
    else:
        x, y = ref.pix1(*sci.world(sci.cx, sci.cy))
        raise AstridInputError(
            f"the reference and science images of shape {sci.shape} hardly overlap (the science centre "
            f"falls on reference pixel ({x:.1f}, {y:.1f})); use a smaller shift_px"
        )
    return np.concatenate(ras)[:n], np.concatenate(decs)[:n]


def _area_arcmin2(box, pixel_scale) -> float:
    x0, x1, y0, y1 = box
    return (x1 - x0) * (y1 - y0) * (pixel_scale / 60.0) ** 2


def _stars(p, eps, rngs: _Streams) -> dict:
    ref = eps["reference"]
    box = _footprint_box(eps, pad=16.0)
    rng = rngs("stars")
    area = _area_arcmin2(box, ref.pixel_scale)
    if p["n_stars"] is not None:
        ny, nx = ref.shape
        n = int(round(p["n_stars"] * (box[1] - box[0]) * (box[3] - box[2]) / (nx * ny)))
    else:
        n = int(rng.poisson(p["star_density"] * area))
    mags = _power_law_mags(rng, n, *p["star_mag_range"], p["star_count_slope"])
    ra, dec = ref.world(rng.uniform(box[0], box[1], n), rng.uniform(box[2], box[3], n))
    stars = {"ra": ra, "dec": dec, "mag": mags, "mag_sci": mags.copy(), "variable": np.zeros(n, bool),
             "forced_saturated": np.zeros(n, bool)}

    # Bright stars that saturate in the science epoch, always present (their
    # bleeds and ringing cores are a main source of bogus detections).
    rng = rngs("saturated")
    sci = eps["science"]
    n_sat = p["n_saturated_stars"] if p["artifacts"] else 0
    ra_s, dec_s = _inner_positions(rng, n_sat, eps, margin=24)
    # 1.5 to 8 times the saturation level at the peak: about 0.5 to 2.3 mag brighter than saturation.
    over = np.exp(rng.uniform(np.log(1.5), np.log(8.0), n_sat))
    side = 2 * sci.psf_radius(sci.fwhm0) + 1
    peak_fraction = float(_render.psf_stamp(side, 0.0, 0.0, sci.fwhm0, sci.beta, sci.psf_q, sci.psf_theta, False).max())
    flux = over * max(sci.saturation - sci.sky0, sci.saturation * 0.5) / peak_fraction
    mag_s = sci.zp - 2.5 * np.log10(flux)

    # Variable stars: extra stars whose flux changes between the epochs.
    rng = rngs("variables")
    n_var = p["n_variables"]
    forced = sci.pix(ra_s, dec_s)
    taken: list = []
    ra_v, dec_v = np.empty(n_var), np.empty(n_var)
    for k in range(n_var):
        ra_v[k], dec_v[k] = _clear_positions(rng, eps, taken, forced)
        taken.append(sci.pix1(ra_v[k], dec_v[k]))
    mag_v = rng.uniform(*p["variable_mag_range"], n_var)
    dmag = rng.uniform(*p["variable_amplitude"], n_var) * rng.choice([-1.0, 1.0], n_var)

    for key, values in (("ra", (ra_s, ra_v)), ("dec", (dec_s, dec_v)), ("mag", (mag_s, mag_v)),
                        ("mag_sci", (mag_s, mag_v + dmag)), ("variable", (np.zeros(n_sat, bool), np.ones(n_var, bool))),
                        ("forced_saturated", (np.ones(n_sat, bool), np.zeros(n_var, bool)))):
        stars[key] = np.concatenate([stars[key], *values])
    return stars


def _galaxies(p, eps, rngs: _Streams) -> dict:
    ref = eps["reference"]
    box = _footprint_box(eps, pad=16.0)
    rng = rngs("galaxies")
    area = _area_arcmin2(box, ref.pixel_scale)
    if p["n_galaxies"] is not None:
        ny, nx = ref.shape
        n = int(round(p["n_galaxies"] * (box[1] - box[0]) * (box[3] - box[2]) / (nx * ny)))
    else:
        n = int(rng.poisson(p["galaxy_density"] * area))
    lo, hi = p["galaxy_mag_range"]
    mags = _power_law_mags(rng, n, lo, hi, p["galaxy_count_slope"])
    ra, dec = ref.world(rng.uniform(box[0], box[1], n), rng.uniform(box[2], box[3], n))
    # Bright galaxies well inside the field, so there are always hosts.
    rng_h = rngs("hosts")
    n_h = p["n_host_galaxies"]
    ra_h, dec_h = _inner_positions(rng_h, n_h, eps, margin=40)
    mag_h = rng_h.uniform(lo + 1.5, min(lo + 4.5, hi), n_h)
    ra = np.concatenate([ra, ra_h])
    dec = np.concatenate([dec, dec_h])
    mags = np.concatenate([mags, mag_h])
    n_all = n + n_h
    shape_rng = rng
    # Half-light radius shrinks with magnitude (angular size-flux relation), with scatter.
    r_eff = 10 ** (np.log10(1.2) - 0.18 * (mags - 20.0) + shape_rng.normal(0.0, 0.15, n_all))
    disk = shape_rng.uniform(size=n_all) < 0.6
    sersic_n = np.where(disk, shape_rng.uniform(0.6, 1.5, n_all), shape_rng.uniform(2.0, 4.5, n_all))
    return {
        "ra": ra, "dec": dec, "mag": mags, "r_eff_arcsec": r_eff, "sersic_n": sersic_n,
        "axis_ratio": shape_rng.uniform(0.3, 1.0, n_all), "pa_deg": shape_rng.uniform(0.0, 180.0, n_all),
        "host_candidate": np.concatenate([np.zeros(n, bool), np.ones(n_h, bool)]),
    }


def _clear_of(x, y, taken: list, saturated: tuple) -> bool:
    """Whether a science-pixel position is clear of other transients and of saturated stars' bleeds."""
    for tx, ty in taken:
        if (x - tx) ** 2 + (y - ty) ** 2 < _MIN_SEPARATION_PX**2:
            return False
    sx, sy = saturated
    if sx.size:
        dx = np.abs(sx - x)
        dy = np.abs(sy - y)
        if np.any((dx * dx + dy * dy < _SATURATED_CLEARANCE_PX**2) | ((dx < 10.0) & (dy < 200.0))):
            return False
    return True


def _supernovae(p, eps, gal, rngs: _Streams, taken: list, saturated: tuple) -> dict:
    rng = rngs("supernovae")
    n = p["n_supernovae"]
    sci, ref = eps["science"], eps["reference"]
    n_faint = int(round(n * p["sn_faint_fraction"]))
    snr = np.concatenate([
        np.exp(rng.uniform(*np.log(p["sn_snr_bright"]), n - n_faint)),
        np.exp(rng.uniform(*np.log(p["sn_snr_faint"]), n_faint)),
    ])
    snr = snr[rng.permutation(n)]
    hostless = rng.uniform(size=n) < p["sn_hostless_fraction"]
    on_core = rng.uniform(size=n) < p["sn_core_fraction"]
    # Hosts: galaxies large and bright enough to be seen, well inside both images.
    margin = 32
    x_s, y_s = sci.pix(gal["ra"], gal["dec"])
    x_r, y_r = ref.pix(gal["ra"], gal["dec"])
    inside = sci.contains(x_s, y_s, margin) & ref.contains(x_r, y_r, margin)
    big = gal["r_eff_arcsec"] >= 1.0 * ref.pixel_scale
    candidates = np.flatnonzero(inside & big & (gal["mag"] < p["galaxy_mag_range"][0] + 5.5))
    used = np.zeros(gal["ra"].size, bool)
    taken = list(taken)
    host = np.full(n, -1)
    ra = np.empty(n)
    dec = np.empty(n)
    offset = np.full(n, np.nan)
    for k in range(n):
        placed = False
        for attempt in range(40):
            if hostless[k] or candidates.size == 0 or attempt >= 30:
                rr, dd = _inner_positions(rng, 1, eps, margin=margin)
                rr, dd, h = float(rr[0]), float(dd[0]), -1
            else:
                # One supernova per host while hosts last; core ones on concentrated hosts.
                pool = candidates[~used[candidates]]
                if pool.size == 0:
                    pool = candidates
                if on_core[k]:
                    concentrated = pool[gal["sersic_n"][pool] >= 1.5]
                    pool = concentrated if concentrated.size else pool
                h = int(rng.choice(pool))
                if on_core[k]:
                    r = rng.uniform(0.0, 0.3)  # arcsec: on the nucleus
                else:
                    # Radial distribution of an exponential disk: r/h ~ Gamma(2).
                    r = rng.gamma(2.0, gal["r_eff_arcsec"][h] / 1.678)
                phi = rng.uniform(0.0, 2.0 * np.pi)
                # Offset in the galaxy's frame (major axis along PA), then on the sky.
                a, b = r * np.cos(phi), r * np.sin(phi) * gal["axis_ratio"][h]
                pa = np.deg2rad(gal["pa_deg"][h])
                north = a * np.cos(pa) - b * np.sin(pa)
                east = a * np.sin(pa) + b * np.cos(pa)
                dd = float(gal["dec"][h] + north / 3600.0)
                rr = float(gal["ra"][h] + east / 3600.0 / np.cos(np.deg2rad(gal["dec"][h])))
            xs, ys = sci.pix1(rr, dd)
            xr, yr = ref.pix1(rr, dd)
            if not (sci.contains(xs, ys, margin) and ref.contains(xr, yr, margin)):
                continue
            if _clear_of(xs, ys, taken, saturated):
                placed = True
                break
        if not placed:
            # A crowded small field: accept the last position rather than fail.
            pass
        ra[k], dec[k] = rr, dd
        taken.append((xs, ys))
        if h >= 0:
            host[k] = h
            used[h] = True
            offset[k] = _separation_arcsec(gal["ra"][h], gal["dec"][h], rr, dd)
    return {"ra": ra, "dec": dec, "snr_target": snr, "host": host, "offset": offset}


def _separation_arcsec(ra1, dec1, ra2, dec2):
    ra1, dec1, ra2, dec2 = map(np.deg2rad, (ra1, dec1, ra2, dec2))
    s = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.rad2deg(2 * np.arcsin(np.sqrt(s))) * 3600.0


def _clear_positions(rng, eps, taken: list, saturated: tuple, margin=32) -> tuple[float, float]:
    sci = eps["science"]
    for _ in range(50):
        ra, dec = _inner_positions(rng, 1, eps, margin=margin)
        if _clear_of(*sci.pix1(ra[0], dec[0]), taken, saturated):
            break
    return float(ra[0]), float(dec[0])


def _asteroids(p, eps, rngs: _Streams, taken: list, saturated: tuple) -> dict:
    rng = rngs("asteroids")
    n = p["n_asteroids"]
    sci, ref = eps["science"], eps["reference"]
    snr = np.exp(rng.uniform(*np.log(p["asteroid_snr"]), n))
    in_ref = rng.uniform(size=n) < p["asteroid_in_reference"]
    ra, dec = np.empty(n), np.empty(n)
    ra_r, dec_r = np.full(n, np.nan), np.full(n, np.nan)
    for k in range(n):
        ra[k], dec[k] = _clear_positions(rng, eps, taken, saturated)
        taken.append(sci.pix1(ra[k], dec[k]))
        if not in_ref[k]:
            continue
        # Elsewhere in the reference: a year earlier it was somewhere else entirely.
        for _ in range(50):
            rr, dd = _clear_positions(rng, eps, taken, saturated)
            if _separation_arcsec(ra[k], dec[k], rr, dd) / ref.pixel_scale > 20.0:
                ra_r[k], dec_r[k] = rr, dd
                taken.append(sci.pix1(rr, dd))
                break
        else:
            in_ref[k] = False
    return {"ra": ra, "dec": dec, "snr_target": snr, "in_ref": in_ref, "ra_ref": ra_r, "dec_ref": dec_r}


# --------------------------------------------------------------------------- rendering


def _point_stamps(ep: _Epoch, x, y, flux):
    """Stamp geometry of point sources: radius grows with flux until the wing drops below the noise."""
    fwhm = ep.fwhm_at(x, y)
    alpha = _render.moffat_alpha(fwhm, ep.beta)
    alpha_major = alpha / np.sqrt(ep.psf_q)
    peak_per_flux = (ep.beta - 1.0) / (np.pi * alpha**2)
    threshold = _WING_THRESHOLD * ep.sky_sigma
    ratio = np.maximum(np.abs(flux) * peak_per_flux / threshold, 1.0)
    r_flux = alpha_major * np.sqrt(np.maximum(ratio ** (1.0 / ep.beta) - 1.0, 0.0))
    r_psf = _render.moffat_radius(fwhm, ep.beta, ep.psf_q)
    radius = np.ceil(np.clip(np.maximum(r_psf, r_flux), 1.0, _MAX_STAMP_RADIUS)).astype(np.int64) + 1
    ix = np.floor(x + 0.5).astype(np.int64)
    iy = np.floor(y + 0.5).astype(np.int64)
    return fwhm, ix - radius, iy - radius, 2 * radius + 1


def _render_points(image: np.ndarray, ep: _Epoch, x, y, flux) -> np.ndarray:
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
        buf, offsets, x[idx], y[idx], ix0[idx], iy0[idx], side[idx], side[idx], fwhm[idx], flux[idx],
        ep.beta, ep.psf_q, ep.psf_theta, sub_peaks,
    )
    _render.add_stamps(image, buf, offsets, ix0[idx], iy0[idx], side[idx], side[idx], 64)
    peaks[idx] = sub_peaks
    return peaks


def _render_galaxies(image: np.ndarray, ep: _Epoch, gal: dict, flux: np.ndarray) -> None:
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
            k = members[start:start + chunk]
            zero = np.zeros(k.size)
            cube = np.empty((k.size, s, s), dtype=np.float32)
            _render.render_sersic_stamps(cube, zero, zero, r_eff[k], n_s[k], gal["axis_ratio"][k], theta[k],
                                         r_trunc[k], flux[k])
            kernels = np.empty((k.size, s, s), dtype=np.float32)
            _render.render_psf_kernels(kernels, x[k] - ix[k], y[k] - iy[k], fwhm[k], int(r_psf), ep.beta, ep.psf_q,
                                       ep.psf_theta)
            spec = scipy.fft.rfft2(cube, workers=-1)
            spec *= scipy.fft.rfft2(kernels, workers=-1)
            stamps.append(scipy.fft.irfft2(spec, s=(s, s), workers=-1).astype(np.float32, copy=False).reshape(-1))
            offsets.append(used + np.arange(k.size, dtype=np.int64) * s * s)
            index.append(k)
            used += k.size * s * s
    if not index:
        return
    # One pass adds every galaxy: few parallel launches, whatever the number of stamp sizes.
    k = np.concatenate(index)
    _render.add_stamps(image, np.concatenate(stamps), np.concatenate(offsets), ix0[k], iy0[k], side[k].astype(np.int64),
                       side[k].astype(np.int64), 64)


def _flux_sigma(ep: _Epoch, variance: np.ndarray, x, y) -> np.ndarray:
    """Error of an optimal PSF fit of a point source's flux: 1 / sqrt(sum(P^2 / V)); NaN off the image."""
    out = np.full(np.size(x), np.nan)
    for k, (xk, yk) in enumerate(zip(np.atleast_1d(x), np.atleast_1d(y))):
        if not ep.contains(xk, yk):
            continue
        p, sl_img, sl_psf = _psf_cutout(ep, xk, yk)
        v = variance[sl_img].astype(float)
        out[k] = 1.0 / math.sqrt(float(np.sum(p[sl_psf] ** 2 / v)))
    return out


def _snr(eps, variances, flux_ratio, pos, flux_diff) -> dict:
    """S/N of a flux change in the science image alone and in the ideal difference image.

    The difference adds the reference's PSF-fit error, scaled to science units.
    """
    sigma_sci = _flux_sigma(eps["science"], variances["science"], pos["x_sci"], pos["y_sci"])
    sigma_ref = _flux_sigma(eps["reference"], variances["reference"], pos["x_ref"], pos["y_ref"])
    flux_diff = np.abs(np.asarray(flux_diff, float))
    return {"snr_sci": flux_diff / sigma_sci, "snr_diff": flux_diff / np.hypot(sigma_sci, flux_ratio * sigma_ref)}


def _psf_cutout(ep: _Epoch, x, y):
    fwhm = float(ep.fwhm_at(np.array([x]), np.array([y]))[0])
    r = ep.psf_radius(fwhm)
    ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
    p = _render.psf_stamp(2 * r + 1, x - ix, y - iy, fwhm, ep.beta, ep.psf_q, ep.psf_theta, False)
    ny, nx = ep.shape
    y0, y1 = max(iy - r, 0), min(iy + r + 1, ny)
    x0, x1 = max(ix - r, 0), min(ix + r + 1, nx)
    return p, (slice(y0, y1), slice(x0, x1)), (slice(y0 - iy + r, y1 - iy + r), slice(x0 - ix + r, x1 - ix + r))


def _flux_for_snr(ep: _Epoch, model: np.ndarray, x, y, snr) -> np.ndarray:
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


def _noisy(model: np.ndarray, ep: _Epoch, seq: np.random.SeedSequence) -> np.ndarray:
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


def _clip_segment(x0, y0, angle, half_length, shape):
    """Length (px) and midpoint of the part of a segment inside the image (Liang-Barsky clipping)."""
    ny, nx = shape
    dx, dy = math.cos(angle), math.sin(angle)
    t0, t1 = -half_length, half_length
    for p, q in ((-dx, x0 + 0.5), (dx, nx - 0.5 - x0), (-dy, y0 + 0.5), (dy, ny - 0.5 - y0)):
        if abs(p) < 1e-12:
            if q < 0:
                return 0.0, x0, y0
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    if t1 <= t0:
        return 0.0, x0, y0
    tm = 0.5 * (t0 + t1)
    return t1 - t0, x0 + tm * dx, y0 + tm * dy


def _artifacts(p, ep: _Epoch, rng: np.random.Generator):
    """Draw the detector artifacts of one epoch (positions in that epoch's pixels)."""
    ny, nx = ep.shape
    mpix = nx * ny / 1e6
    out = {}

    def count(density):
        return max(1, int(rng.poisson(density * mpix))) if density > 0 else 0

    on = bool(p["artifacts"])
    clipped = ep.name == "reference" and p["reference_stack"] >= 3  # a clipped stack has neither
    n_cr = count(p["cosmic_ray_density"]) if on and not clipped else 0
    track = rng.uniform(size=n_cr) < 0.5
    out["cr"] = {
        "x": rng.uniform(-0.5, nx - 0.5, n_cr), "y": rng.uniform(-0.5, ny - 0.5, n_cr),
        "angle": rng.uniform(0.0, np.pi, n_cr),
        # Half are compact hits, half glancing tracks of a few to 20 pixels.
        "length": np.where(track, rng.uniform(2.0, 20.0, n_cr), rng.uniform(0.0, 1.2, n_cr)),
        "width": np.where(track, rng.uniform(0.0, 0.3, n_cr), rng.uniform(0.0, 0.6, n_cr)),
        "charge": np.exp(rng.uniform(*np.log(p["cosmic_ray_charge"]), n_cr)),
    }
    n_hot = count(p["hot_pixel_density"]) if on and not clipped else 0
    out["hot"] = {
        "x": rng.integers(0, nx, n_hot), "y": rng.integers(0, ny, n_hot),
        "level": np.exp(rng.uniform(*np.log(p["hot_pixel_level"]), n_hot)),
        "masked": rng.uniform(size=n_hot) < p["hot_pixel_masked_fraction"],
    }
    n_col = p["n_bad_columns"] if on else 0
    full = rng.uniform(size=n_col) < 0.5
    start = rng.integers(0, ny // 2, n_col)
    from_bottom = rng.uniform(size=n_col) < 0.5
    y0 = np.where(full, 0, np.where(from_bottom, 0, start))
    y1 = np.where(full, ny, np.where(from_bottom, ny - start, ny))
    hot = rng.uniform(size=n_col) < 0.6
    out["columns"] = {
        "x": rng.integers(0, nx, n_col), "y0": y0, "y1": y1, "hot": hot,
        # A hot column adds a constant charge; a dead one keeps a few per cent of the signal.
        "level": np.where(hot, rng.uniform(5.0, 50.0, n_col) * ep.sky_sigma, rng.uniform(0.0, 0.1, n_col)),
    }
    return out


def _satellites(p, eps, rng):
    n = p["n_satellite_trails"] if p["artifacts"] else 0
    trails = []
    for k in range(n):
        epoch = "science" if k == 0 else str(rng.choice(EPOCHS))
        ep = eps[epoch]
        ny, nx = ep.shape
        x0 = rng.uniform(0.2, 0.8) * nx
        y0 = rng.uniform(0.2, 0.8) * ny
        angle = rng.uniform(0.0, np.pi)
        # Most trails cross the whole frame; some start or end inside it.
        half = 2.0 * math.hypot(nx, ny) if rng.uniform() < 0.7 else rng.uniform(0.15, 0.4) * math.hypot(nx, ny)
        peak = rng.uniform(2.0, 30.0) * ep.sky_sigma
        width = ep.fwhm0 * rng.uniform(1.0, 1.6)  # out of focus: the satellite is not at infinity
        trails.append({"epoch": epoch, "x": x0, "y": y0, "angle": angle, "half_length": half,
                       "surface": peak * width * 1.1, "fwhm": width})
    return trails


# --------------------------------------------------------------------------- assembling


def _header(p: dict, ep: _Epoch, seed: int, target: str | None) -> fits.Header:
    header = fits.Header()
    header["TELESCOP"] = (p["telescope"], "simulated by AstrID")
    header["INSTRUME"] = p["instrument"]
    header["FILTER"] = p["filter"]
    if target:
        header["OBJECT"] = target
    t = Time(ep.mjd, format="mjd", scale="utc")
    header["DATE-OBS"] = (t.isot, "start of exposure (UTC)")
    header["MJD-OBS"] = (round(ep.mjd, 6), "start of exposure (MJD, UTC)")
    header["EXPTIME"] = (ep.exptime, "[s] exposure time")
    unit = "ADU" if p["bunit"] == "adu" else p["bunit"]
    header["GAIN"] = (ep.gain, f"[e-/{unit}]")
    header["RDNOISE"] = (ep.read_noise, "[e-] read noise")
    header["SATURATE"] = (round(ep.saturation, 3), f"[{unit}] saturation level")
    header["MAGZP"] = (round(ep.zp, 6), f"AB mag of 1 {unit} in this exposure")
    header["SEEING"] = (round(ep.fwhm0 * ep.pixel_scale, 3), "[arcsec] PSF FWHM at the centre")
    header["BUNIT"] = p["bunit"]
    header["SIMSEED"] = (seed, "astrid.simulate seed")
    header["SIMPRSET"] = (p["preset"], "astrid.simulate preset")
    header["SIMEPOCH"] = (ep.name, "simulated epoch")
    header.update(ep.wcs.to_header())
    return header


def _render_epoch(ep: _Epoch, stars, gal, flux_key):
    model = ep.sky_image()
    peaks = _render_points(model, ep, *ep.pix(stars["ra"], stars["dec"]), stars[flux_key])
    gflux = 10 ** (-0.4 * (gal["mag"] - ep.zp))
    _render_galaxies(model, ep, gal, gflux)
    x, y = ep.pix(stars["ra"], stars["dec"])
    saturated = ep.contains(x, y) & (peaks + ep.sky_at(x, y) >= ep.saturation)
    return model, saturated


def pair(size=2048, seed=0, preset="ztf", **overrides) -> SimulatedPair:
    """Simulate a reference/science pair of one field with a truth table.

    One sky (stars, galaxies, transients) is generated in world coordinates
    and projected through each epoch's TAN WCS; each epoch is rendered on its
    own pixel grid with its own PSF, sky, zero point, noise and detector
    artifacts. Deterministic: the same arguments give identical pixels.

    Parameters
    ----------
    size : int or (int, int)
        Image side, or shape ``(ny, nx)``, in pixels (>= 128); both epochs
        have this shape.
    seed : int or None
        Seed of every random choice. Each ingredient has its own random
        stream, so changing, say, ``n_supernovae`` leaves the rest of the
        images unchanged.
    preset : {"ztf", "ztf_alert", "swift_uvot"}
        Instrument preset (see :data:`PRESETS`); ``"ztf_alert"`` is ZTF as
        its alert stamps look: a deep co-added reference, the alerts' seeing,
        denser stars and more variables (``benchmarks/realism.py``).
    **overrides
        Any preset parameter. ``None`` means "draw at random from the seed".

        Geometry
            ``ra``, ``dec`` (deg, reference centre; default random),
            ``shift_px`` ``(dx, dy)``: the science centre sees reference pixel
            ``centre + (dx, dy)`` (default random: integer part within
            ``max_shift_px`` plus a sub-pixel part), ``rotation_deg``
            (science pixel axes turned counter-clockwise relative to the
            reference axes; default uniform within ``max_rotation_deg``),
            ``pixel_scale`` (arcsec/px, reference), ``pixel_scale_ratio``
            (science/reference pixel scale, default 1).
        Epochs
            ``filter`` (ZTF: g, r, i; UVOT: V, B, U, UVW1, UVM2, UVW2),
            ``exptime_reference``, ``exptime_science`` (s),
            ``reference_stack`` (exposures averaged into the reference:
            1/sqrt(N) of the noise, GAIN N times the detector's, and from 3
            on no cosmic rays or hot pixels),
            ``mjd_reference``, ``mjd_science`` (science at least 365 d later),
            ``fwhm_reference``, ``fwhm_science`` (px at the field centre;
            default drawn from ``seeing_reference``/``seeing_science`` in
            arcsec), ``psf_beta`` (Moffat index), ``psf_variation`` (largest
            fractional FWHM change across the field), ``psf_ellipticity``,
            ``zp_reference``, ``zp_science`` (MAGZP; default from the filter
            and exposure time, the science epoch losing ``transparency_loss``
            mag), ``sky_mag_reference``, ``sky_mag_science`` (mag/arcsec²),
            ``sky_brightening``, ``sky_gradient``, ``gain`` (e-/ADU),
            ``read_noise`` (e-), ``saturation`` (ADU; UVOT: ``saturation_rate``
            × exposure time), ``noise`` (False: noiseless data, same
            variance). Photon noise is drawn exactly from the Poisson
            distribution where a pixel expects fewer than 50 electrons, and
            through its Cornish-Fisher expansion (exact mean, variance and
            skewness) above, indistinguishable from exact draws (< 0.1 % in
            any quantile) and several times faster.
        Static sky
            ``n_stars``/``n_galaxies`` (expected number inside the reference
            image; default ``star_density``/``galaxy_density`` per arcmin²),
            ``star_mag_range``, ``star_count_slope`` (d log N / dm),
            ``galaxy_mag_range``, ``galaxy_count_slope``, ``n_host_galaxies``.
        Transients
            ``n_supernovae``, ``sn_snr_bright``/``sn_snr_faint`` (ranges of the
            science-image S/N), ``sn_faint_fraction``, ``sn_core_fraction``
            (on the host nucleus), ``sn_hostless_fraction``, ``n_variables``,
            ``variable_mag_range``, ``variable_amplitude`` (|Δmag| range),
            ``n_asteroids``, ``asteroid_snr``, ``asteroid_in_reference``
            (probability that it is also in the reference, elsewhere).
        Artifacts
            ``artifacts`` (False: no cosmic rays, hot pixels, bad columns,
            satellite trails or forced saturated stars; naturally bright
            stars still saturate), ``n_saturated_stars``,
            ``cosmic_ray_density``, ``hot_pixel_density`` (per megapixel per
            epoch, at least one when positive), ``cosmic_ray_charge``,
            ``hot_pixel_level`` (ADU ranges), ``hot_pixel_masked_fraction``
            (share of hot pixels in the bad-pixel mask), ``n_bad_columns``
            (per epoch, always masked), ``n_satellite_trails``,
            ``bleed_trails``, ``readout_streaks`` (UVOT).

    Returns
    -------
    SimulatedPair
        ``reference``, ``science``, ``truth``, ``stars``, ``galaxies``, ``params``.

        The truth table has one row per transient or artifact appearance:

        - ``id``; ``kind`` (one of :data:`TRUTH_KINDS`); ``epoch``
          ("science", "reference" or "both");
        - ``ra``, ``dec`` (deg); ``x_sci``, ``y_sci``, ``x_ref``, ``y_ref``
          (0-based pixels in each grid);
        - ``flux_sci``, ``flux_ref``: total flux of the transient part in
          each epoch's own data units, 0 where absent (for variables and
          saturated stars the star's total flux; NaN for a dead column);
          ``flux_diff``: the flux in the ideal difference science −
          flux_ratio × reference, in science units;
        - ``mag`` (AB, science epoch; the reference epoch for an asteroid
          seen only there), ``mag_ref``;
        - ``snr_sci``: optimal PSF-fit S/N of ``flux_diff`` in the science
          image alone, from the true PSF and the true variance (sky, host
          and the source itself); ``snr_diff``: the same in the ideal
          difference, with the reference's PSF-fit error scaled by
          ``flux_ratio`` added in quadrature (real pipelines reach less on
          bright hosts, where alignment and PSF errors add noise);
        - ``host_id`` (row of ``galaxies``, -1 without host),
          ``host_offset_arcsec`` (NaN without host); ``star_id`` (row of
          ``stars`` for variables and saturated stars, else -1);
          ``parent_id`` (for an asteroid's reference appearance, the ``id``
          of its science appearance, else -1);
        - ``is_real``; ``masked`` (centre pixel flagged in its epoch's
          mask); ``length_px``, ``angle_deg`` (tracks, columns and trails;
          angle from +x in the science grid).

        ``is_real`` is True for supernovae, variables and asteroids: it says
        whether a detection is a genuine astrophysical source rather than an
        artifact, which is what a real/bogus classifier learns; asteroids
        keep their own ``kind`` so that a search for stationary transients
        can drop them.

    Raises
    ------
    AstridInputError
        Unknown preset, unknown parameter or out-of-range value.

    Notes
    -----
    Stars follow power-law number counts; galaxies are truncated Sersic
    profiles (n 0.6 to 4.5, size shrinking with magnitude) convolved with the
    local PSF of each epoch. The PSF is a Moffat profile whose FWHM varies
    smoothly across each image; every source is integrated over the pixels.
    Point-source stamps grow with flux until their wing drops below 5 % of
    the sky noise, so each source keeps at least 99.5 % of its flux in the
    image (the truth fluxes are totals). Transients keep 12 px apart
    (unless the field is too crowded) and at least 32 px inside both
    images. Both WCSs share their tangent point, so the science-to-reference
    pixel mapping is exactly the affine ``params["sci_to_ref"]``. The noise model is in the ``noise``
    entry above; the variance image holds its per-pixel variance.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    p = _resolve(preset, overrides)
    shape = _parse_size(size)
    rngs = _Streams(seed)
    geo = _geometry(p, shape, rngs("geometry"))
    eps = _epochs(p, shape, geo, rngs("epochs"))
    ref, sci = eps["reference"], eps["science"]
    flux_ratio = 10 ** (0.4 * (sci.zp - ref.zp))

    stars = _stars(p, eps, rngs)
    stars["flux_ref"] = 10 ** (-0.4 * (stars["mag"] - ref.zp))
    stars["flux_sci"] = 10 ** (-0.4 * (stars["mag_sci"] - sci.zp))
    gal = _galaxies(p, eps, rngs)
    # Transients avoid one another: variables first, then asteroids, then
    # supernovae, so removing supernovae moves nothing else.
    xv, yv = sci.pix(stars["ra"][stars["variable"]], stars["dec"][stars["variable"]])
    taken = list(zip(xv.tolist(), yv.tolist()))
    forced = sci.pix(stars["ra"][stars["forced_saturated"]], stars["dec"][stars["forced_saturated"]])
    ast = _asteroids(p, eps, rngs, taken, forced)
    sne = _supernovae(p, eps, gal, rngs, taken, forced)
    art = {name: _artifacts(p, eps[name], rngs(f"artifacts_{name}")) for name in EPOCHS}
    trails = _satellites(p, eps, rngs("satellites"))
    lap("catalogues")

    models, saturated = {}, {}
    for name, key in (("reference", "flux_ref"), ("science", "flux_sci")):
        models[name], saturated[name] = _render_epoch(eps[name], stars, gal, key)
    lap("render_static")

    # Transients whose flux is set by their S/N on top of the static scene.
    xs, ys = sci.pix(sne["ra"], sne["dec"])
    sne["flux"] = _flux_for_snr(sci, models["science"], xs, ys, sne["snr_target"])
    _render_points(models["science"], sci, xs, ys, sne["flux"])
    xa, ya = sci.pix(ast["ra"], ast["dec"])
    ast["flux"] = _flux_for_snr(sci, models["science"], xa, ya, ast["snr_target"])
    _render_points(models["science"], sci, xa, ya, ast["flux"])
    # In the reference the asteroid has the same magnitude, in reference units.
    ast["flux_ref"] = np.where(ast["in_ref"], ast["flux"] / flux_ratio, 0.0)
    k_ref = np.flatnonzero(ast["in_ref"])
    _render_points(models["reference"], ref, *ref.pix(ast["ra_ref"][k_ref], ast["dec_ref"][k_ref]), ast["flux_ref"][k_ref])
    for trail in trails:
        ep = eps[trail["epoch"]]
        trail["flux"] = _render.render_line(models[trail["epoch"]], trail["x"], trail["y"], trail["angle"],
                                            trail["half_length"], trail["surface"], trail["fwhm"], ep.beta)
    if p["readout_streaks"]:
        for name in EPOCHS:
            ep = eps[name]
            x, _ = ep.pix(stars["ra"], stars["dec"])
            flux = stars["flux_ref" if name == "reference" else "flux_sci"]
            for k in np.flatnonzero(saturated[name]):
                _render.render_line(models[name], float(x[k]), ep.cy, math.pi / 2, ep.shape[0] / 2.0 + 1.0,
                                    _STREAK_FRACTION * flux[k] / ep.shape[0], 1.2, ep.beta)
    lap("render_transients")

    images, variances, masks, landed = {}, {}, {}, {}
    for name in EPOCHS:
        ep = eps[name]
        model = models.pop(name)
        np.maximum(model, 0.0, out=model)
        var = model / np.float32(ep.gain)
        var += np.float32(ep.noise_floor**2)
        variances[name] = var
        data = _noisy(model, ep, rngs.seq(f"noise_{name}")) if p["noise"] else model.copy()
        del model
        lap("noise")
        cr = art[name]["cr"]
        landed[name] = _render.deposit_tracks(data, cr["x"], cr["y"], cr["angle"], cr["length"], cr["charge"], cr["width"])
        mask = np.zeros(ep.shape, dtype=bool)
        _render.bleed_columns(data, np.float32(ep.saturation), bool(p["bleed_trails"]), mask)
        hot = art[name]["hot"]
        np.add.at(data, (hot["y"], hot["x"]), hot["level"].astype(np.float32))
        mask[hot["y"][hot["masked"]], hot["x"][hot["masked"]]] = True
        cols = art[name]["columns"]
        for x, y0, y1, is_hot, level in zip(cols["x"], cols["y0"], cols["y1"], cols["hot"], cols["level"]):
            if is_hot:
                data[y0:y1, x] += np.float32(level)
            else:
                data[y0:y1, x] *= np.float32(level)
            mask[y0:y1, x] = True
        np.minimum(data, np.float32(ep.saturation), out=data)
        mask |= data >= np.float32(ep.saturation)
        images[name], masks[name] = data, mask
        lap("artifacts")

    seed_value = rngs.seed
    truth = _truth_table(p, eps, stars, gal, sne, ast, art, trails, saturated, landed, flux_ratio, variances, masks)
    truth.meta["seed"] = seed_value
    lap("truth")

    out_images = {}
    for name in EPOCHS:
        ep = eps[name]
        header = _header(p, ep, seed_value, None)
        out_images[name] = Image(
            data=images[name], wcs=ep.wcs.deepcopy(), mask=masks[name], variance=variances[name],
            header=header, meta=header_meta(header),
        )
    star_table = _star_table(stars, eps, saturated, p["bunit"])
    galaxy_table = _galaxy_table(gal, eps, sne["host"], p["bunit"])
    params = {k: v for k, v in p.items() if k != "filters"}
    params.update({
        "seed": seed_value, "shape": shape, "ra": geo["ra"], "dec": geo["dec"], "shift_px": geo["shift_px"],
        "rotation_deg": geo["rotation_deg"], "pixel_scale_ratio": geo["pixel_scale_ratio"],
        "sci_to_ref": geo["sci_to_ref"], "flux_ratio": float(flux_ratio), "psf_beta": float(p["psf_beta"]),
    })
    for name in EPOCHS:
        ep = eps[name]
        params.update({
            f"fwhm_{name}": ep.fwhm0, f"zp_{name}": ep.zp, f"sky_{name}": ep.sky0, f"sky_mag_{name}": ep.sky_mag,
            f"mjd_{name}": ep.mjd, f"saturation_{name}": ep.saturation, f"exptime_{name}": ep.exptime,
            f"psf_axis_ratio_{name}": ep.psf_q, f"psf_angle_deg_{name}": float(np.rad2deg(ep.psf_theta)),
            f"pixel_scale_{name}": ep.pixel_scale,
        })
    result = SimulatedPair(
        reference=out_images["reference"], science=out_images["science"], truth=truth,
        stars=star_table, galaxies=galaxy_table, params=params, _epochs=eps,
    )
    params["psf_reference"] = result.psf("reference")
    params["psf_science"] = result.psf("science")
    lap("assemble")
    params["timing_s"] = timings
    return result


def _positions(eps, ra, dec) -> dict:
    xs, ys = eps["science"].pix(ra, dec)
    xr, yr = eps["reference"].pix(ra, dec)
    return {"ra": np.asarray(ra, float), "dec": np.asarray(dec, float), "x_sci": xs, "y_sci": ys, "x_ref": xr, "y_ref": yr}


def _mask_at(ep: _Epoch, mask: np.ndarray, x, y) -> np.ndarray:
    x = np.atleast_1d(x)
    y = np.atleast_1d(y)
    ix = np.floor(x + 0.5).astype(int)
    iy = np.floor(y + 0.5).astype(int)
    ok = ep.contains(x, y)
    out = np.zeros(x.size, bool)
    out[ok] = mask[iy[ok], ix[ok]]
    return out


def _truth_table(p, eps, stars, gal, sne, ast, art, trails, saturated, landed, flux_ratio, variances, masks) -> Table:
    sci, ref = eps["science"], eps["reference"]
    rows: list[dict] = []

    def add(kind, epoch, ra, dec, **cols):
        n = np.size(ra)
        if n == 0:
            return
        block = {"kind": np.full(n, kind), "epoch": np.broadcast_to(np.asarray(epoch), n).copy(), **_positions(eps, ra, dec)}
        for key, value in cols.items():
            block[key] = np.broadcast_to(np.asarray(value), n).copy()
        rows.append(block)

    nan = np.nan
    # Supernovae
    pos = _positions(eps, sne["ra"], sne["dec"])
    add("supernova", "science", sne["ra"], sne["dec"], flux_sci=sne["flux"], flux_ref=0.0, flux_diff=sne["flux"],
        mag=_mag(sne["flux"], sci.zp), mag_ref=nan,
        **_snr(eps, variances, flux_ratio, pos, sne["flux"]),
        host_id=sne["host"], host_offset_arcsec=sne["offset"], is_real=True,
        masked=_mask_at(sci, masks["science"], pos["x_sci"], pos["y_sci"]))
    # Variables
    var = np.flatnonzero(stars["variable"])
    pos = _positions(eps, stars["ra"][var], stars["dec"][var])
    diff = stars["flux_sci"][var] - flux_ratio * stars["flux_ref"][var]
    add("variable", "both", stars["ra"][var], stars["dec"][var], flux_sci=stars["flux_sci"][var],
        flux_ref=stars["flux_ref"][var], flux_diff=diff, mag=stars["mag_sci"][var], mag_ref=stars["mag"][var],
        **_snr(eps, variances, flux_ratio, pos, diff), star_id=var, is_real=True,
        masked=_mask_at(sci, masks["science"], pos["x_sci"], pos["y_sci"]))
    # Asteroids: one row per appearance.
    first_id = sum(len(r["kind"]) for r in rows)
    pos = _positions(eps, ast["ra"], ast["dec"])
    add("asteroid", "science", ast["ra"], ast["dec"], flux_sci=ast["flux"], flux_ref=0.0, flux_diff=ast["flux"],
        mag=_mag(ast["flux"], sci.zp), mag_ref=nan,
        **_snr(eps, variances, flux_ratio, pos, ast["flux"]), is_real=True,
        masked=_mask_at(sci, masks["science"], pos["x_sci"], pos["y_sci"]))
    k_ref = np.flatnonzero(ast["in_ref"])
    pos = _positions(eps, ast["ra_ref"][k_ref], ast["dec_ref"][k_ref])
    add("asteroid", "reference", ast["ra_ref"][k_ref], ast["dec_ref"][k_ref], flux_sci=0.0,
        flux_ref=ast["flux_ref"][k_ref], flux_diff=-flux_ratio * ast["flux_ref"][k_ref],
        mag=_mag(ast["flux_ref"][k_ref], ref.zp), mag_ref=_mag(ast["flux_ref"][k_ref], ref.zp),
        **_snr(eps, variances, flux_ratio, pos, flux_ratio * ast["flux_ref"][k_ref]),
        parent_id=first_id + k_ref, is_real=True,
        masked=_mask_at(ref, masks["reference"], pos["x_ref"], pos["y_ref"]))
    # Detector artifacts of each epoch
    for name in EPOCHS:
        ep = eps[name]
        a = art[name]
        fkey = "flux_sci" if name == "science" else "flux_ref"
        other = "flux_ref" if name == "science" else "flux_sci"
        sign = 1.0 if name == "science" else -flux_ratio
        ra, dec = ep.world(a["cr"]["x"], a["cr"]["y"])
        add("cosmic_ray", name, ra, dec, **{fkey: landed[name], other: 0.0}, flux_diff=sign * landed[name],
            length_px=a["cr"]["length"], angle_deg=_pixel_angle_deg(ep, eps, name, a["cr"]["angle"]), masked=False)
        ra, dec = ep.world(a["hot"]["x"], a["hot"]["y"])
        add("hot_pixel", name, ra, dec, **{fkey: a["hot"]["level"], other: 0.0}, flux_diff=sign * a["hot"]["level"],
            masked=a["hot"]["masked"])
        c = a["columns"]
        if c["x"].size:
            ymid = 0.5 * (c["y0"] + c["y1"] - 1)
            ra, dec = ep.world(c["x"], ymid)
            excess = np.where(c["hot"], c["level"] * (c["y1"] - c["y0"]), np.nan)
            add("bad_column", name, ra, dec, **{fkey: excess, other: 0.0}, flux_diff=sign * excess,
                length_px=(c["y1"] - c["y0"]).astype(float),
                angle_deg=_pixel_angle_deg(ep, eps, name, np.full(c["x"].size, np.pi / 2)),
                masked=True)
    for trail in trails:
        name = trail["epoch"]
        ep = eps[name]
        length, xm, ym = _clip_segment(trail["x"], trail["y"], trail["angle"], trail["half_length"], ep.shape)
        ra, dec = ep.world(np.array([xm]), np.array([ym]))
        fkey = "flux_sci" if name == "science" else "flux_ref"
        other = "flux_ref" if name == "science" else "flux_sci"
        sign = 1.0 if name == "science" else -flux_ratio
        add("satellite_trail", name, ra, dec, **{fkey: trail["flux"], other: 0.0}, flux_diff=sign * trail["flux"],
            length_px=length, angle_deg=_pixel_angle_deg(ep, eps, name, np.array([trail["angle"]])), masked=False)
    # Saturated stars (forced and natural)
    sat = np.flatnonzero(saturated["reference"] | saturated["science"])
    epoch = np.where(saturated["reference"][sat] & saturated["science"][sat], "both",
                     np.where(saturated["science"][sat], "science", "reference"))
    add("saturated_star", epoch, stars["ra"][sat], stars["dec"][sat], flux_sci=stars["flux_sci"][sat],
        flux_ref=stars["flux_ref"][sat], flux_diff=stars["flux_sci"][sat] - flux_ratio * stars["flux_ref"][sat],
        mag=stars["mag_sci"][sat], mag_ref=stars["mag"][sat], star_id=sat, masked=True)

    columns = {
        "kind": str, "epoch": str, "ra": float, "dec": float, "x_sci": float, "y_sci": float, "x_ref": float,
        "y_ref": float, "flux_sci": float, "flux_ref": float, "flux_diff": float, "mag": float, "mag_ref": float,
        "snr_sci": float, "snr_diff": float, "host_id": int, "host_offset_arcsec": float, "star_id": int, "parent_id": int,
        "is_real": bool, "masked": bool, "length_px": float, "angle_deg": float,
    }
    defaults = {float: np.nan, int: -1, bool: False, str: ""}
    data = {}
    total = sum(len(r["kind"]) for r in rows)
    for name, kind in columns.items():
        parts = [np.asarray(r[name]) if name in r else np.full(len(r["kind"]), defaults[kind]) for r in rows]
        values = np.concatenate(parts) if parts else np.array([], dtype=kind)
        data[name] = values.astype(kind) if kind is not str else values.astype("U16")
    units = {"ra": "deg", "dec": "deg", "x_sci": "pix", "y_sci": "pix", "x_ref": "pix", "y_ref": "pix",
             "flux_sci": p["bunit"], "flux_ref": p["bunit"], "flux_diff": p["bunit"], "mag": "mag",
             "mag_ref": "mag", "host_offset_arcsec": "arcsec", "length_px": "pix", "angle_deg": "deg"}
    table = Table()
    table["id"] = np.arange(total, dtype=np.int64)
    for name in columns:
        table[name] = Column(data[name], unit=units.get(name))
    table.meta.update({
        "preset": p["preset"], "filter": p["filter"], "flux_ratio": float(flux_ratio),
        "zp_reference": ref.zp, "zp_science": sci.zp,
        "description": "astrid.simulate truth: one row per injected transient or artifact appearance",
    })
    return table


def _pixel_angle_deg(ep, eps, name, angle):
    """Angle of a pixel direction of epoch ``name`` expressed in the science grid (deg from +x)."""
    angle = np.asarray(angle, float)
    if name == "science":
        return np.rad2deg(angle) % 180.0
    m = np.linalg.inv(np.linalg.inv(eps["reference"].wcs.wcs.cd) @ eps["science"].wcs.wcs.cd)
    d = m @ np.vstack([np.cos(angle), np.sin(angle)])
    return np.rad2deg(np.arctan2(d[1], d[0])) % 180.0


def _mag(flux, zp):
    flux = np.asarray(flux, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zp - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


def _star_table(stars, eps, saturated, bunit) -> Table:
    table = Table()
    n = stars["ra"].size
    table["id"] = np.arange(n, dtype=np.int64)
    for key, value in _positions(eps, stars["ra"], stars["dec"]).items():
        table[key] = Column(value, unit="deg" if key in ("ra", "dec") else "pix")
    table["mag"] = Column(stars["mag"], unit="mag", description="reference epoch")
    table["mag_sci"] = Column(stars["mag_sci"], unit="mag")
    table["flux_ref"] = Column(stars["flux_ref"], unit=bunit)
    table["flux_sci"] = Column(stars["flux_sci"], unit=bunit)
    table["variable"] = stars["variable"]
    table["saturated_ref"] = saturated["reference"]
    table["saturated_sci"] = saturated["science"]
    return table


def _galaxy_table(gal, eps, hosts, bunit) -> Table:
    table = Table()
    n = gal["ra"].size
    table["id"] = np.arange(n, dtype=np.int64)
    for key, value in _positions(eps, gal["ra"], gal["dec"]).items():
        table[key] = Column(value, unit="deg" if key in ("ra", "dec") else "pix")
    table["mag"] = Column(gal["mag"], unit="mag")
    table["flux_ref"] = Column(10 ** (-0.4 * (gal["mag"] - eps["reference"].zp)), unit=bunit)
    table["flux_sci"] = Column(10 ** (-0.4 * (gal["mag"] - eps["science"].zp)), unit=bunit)
    table["sersic_n"] = gal["sersic_n"]
    table["r_eff_arcsec"] = Column(gal["r_eff_arcsec"], unit="arcsec")
    table["axis_ratio"] = gal["axis_ratio"]
    table["pa_deg"] = Column(gal["pa_deg"], unit="deg", description="major axis, east of north")
    host = np.zeros(n, bool)
    host[hosts[hosts >= 0]] = True
    table["host"] = host
    return table


# --------------------------------------------------------------------------- survey


def _field_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _write_table(path: Path, table: Table) -> None:
    buffer = _io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    text = buffer.getvalue().encode()
    atomic_write(path, lambda fh: fh.write(text))


def survey(out_dir, n_fields=4, preset="ztf", seed=0, size=1024, **overrides) -> Manifest:
    """Write a simulated survey: one reference/science pair and a truth table per field.

    Layout (the one every AstrID data source writes)::

        <out_dir>/manifest.json
        <out_dir>/<target>/reference/<target>_<mission>_<filter>_ref.fits
        <out_dir>/<target>/science/<target>_<mission>_<filter>_sci.fits
        <out_dir>/<target>/truth.ecsv
        <out_dir>/<target>/stars.ecsv, galaxies.ecsv

    Targets are named ``SIM0000``, ``SIM0001``, ...; field ``i`` is
    ``pair(size, seed=<derived from (seed, i)>, preset, **overrides)`` at its
    own random sky position. The manifest is saved after each field, so an
    interrupted run leaves a consistent manifest, and a rerun skips every field
    already written with the same parameters and intact files (others are
    written again; fields beyond ``n_fields`` are left as they are).

    Parameters
    ----------
    out_dir : path-like
        Survey folder (created if needed).
    n_fields : int
        Number of fields.
    preset : {"ztf", "ztf_alert", "swift_uvot"}
    seed : int
        Seed of the survey; each field gets its own seed derived from it
        (recorded as ``seed`` in its manifest entry).
    size : int or (int, int)
        Image shape of every field.
    **overrides
        Simulation parameters, as for :func:`pair`.

    Returns
    -------
    astrid.Manifest
        The saved manifest (``source="simulated"``).

    Raises
    ------
    AstridInputError
        Bad parameters, or ``out_dir`` holds a survey from another source.
    """
    if isinstance(n_fields, bool) or not isinstance(n_fields, (int, np.integer)) or n_fields < 0:
        raise AstridInputError(f"n_fields must be a non-negative integer, got {n_fields!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise AstridInputError(f"seed must be a non-negative integer, got {seed!r}")
    p = _resolve(preset, overrides)
    shape = _parse_size(size)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise AstridInputError(f"{root}: exists and is not a folder")
    manifest = Manifest(root, source="simulated")
    if manifest.data.get("source") != "simulated" and manifest.targets:
        raise AstridInputError(
            f"{root}: holds a survey from source {manifest.data.get('source')!r}; simulate into another folder"
        )
    manifest.data["source"] = "simulated"
    manifest.data.setdefault("parameters", {})["simulation"] = _jsonable(
        {"preset": preset, "seed": int(seed), "size": list(shape), "overrides": overrides})
    mission = p["mission"]
    filt = p["filter"]
    for index in range(int(n_fields)):
        name = f"SIM{index:04d}"
        field_seed = _field_seed(seed, index)
        signature = _jsonable({"preset": preset, "seed": field_seed, "size": list(shape), "overrides": overrides})
        entry = manifest.targets.get(name)
        if entry is not None and entry.get("simulation") == signature and entry.get("complete"):
            files = [f["path"] for f in entry.get("files", [])]
            extra = [entry.get("truth")] + list(entry.get("catalogs", {}).values())
            if files and all(manifest.has_file(f) for f in files) and all(e and (root / e).exists() for e in extra):
                continue
        manifest.targets[name] = {"files": [], "pairs": []}
        sim = pair(shape, field_seed, preset, **overrides)
        stem = f"{name}_{mission.lower()}_{filt}"
        rel = {"reference": f"{name}/reference/{stem}_ref.fits", "science": f"{name}/science/{stem}_sci.fits"}
        for epoch in EPOCHS:
            image = sim.image(epoch)
            image.header["OBJECT"] = name
            write_image(root / rel[epoch], image, step="simulate", parameters={"preset": preset, "seed": field_seed})
        _write_table(root / name / "truth.ecsv", sim.truth)
        _write_table(root / name / "stars.ecsv", sim.stars)
        _write_table(root / name / "galaxies.ecsv", sim.galaxies)
        manifest.target(
            name, ra=sim.params["ra"], dec=sim.params["dec"], truth=f"{name}/truth.ecsv", seed=field_seed,
            catalogs={"stars": f"{name}/stars.ecsv", "galaxies": f"{name}/galaxies.ecsv"},
            simulation=signature,
        )
        for epoch in EPOCHS:
            manifest.add_file(name, rel[epoch], epoch, mission=mission, instrument=p["instrument"], filter=filt,
                              mjd=sim.params[f"mjd_{epoch}"])
        manifest.add_pair(name, rel["reference"], rel["science"], mission=mission, instrument=p["instrument"],
                          filter=filt)
        manifest.targets[name]["complete"] = True
        manifest.save()
    manifest.save()
    return manifest
