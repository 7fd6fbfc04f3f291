"""Geometry of a simulated pair: the two TAN WCSs, the shift/rotation between them, the epochs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from ..errors import AstridInputError
from . import _render
from ._params import (
    EPOCHS,
    SimParams,
)


@dataclass
class Epoch:
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
        return (
            (x >= margin - 0.5)
            & (x <= nx - 0.5 - margin)
            & (y >= margin - 0.5)
            & (y <= ny - 0.5 - margin)
        )


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


def draw_geometry(p: SimParams, shape, rng: np.random.Generator) -> dict:
    # Draw every random value first so that overriding one keeps the others.
    ra = rng.uniform(0.0, 360.0)
    lo, hi = np.sin(np.deg2rad(p.dec_range))
    dec = float(np.rad2deg(np.arcsin(rng.uniform(lo, hi))))
    max_shift = float(p.max_shift_px)
    whole = rng.integers(-int(max_shift), int(max_shift) + 1, size=2)
    shift = np.clip(whole + rng.uniform(-0.5, 0.5, size=2), -max_shift - 0.5, max_shift + 0.5)
    rotation = rng.uniform(-1.0, 1.0) * float(p.max_rotation_deg)
    if p.ra is not None:
        ra = float(p.ra)
    if p.dec is not None:
        dec = float(p.dec)
        if not -90 < dec < 90:
            raise AstridInputError(f"dec must be within (-90, 90) degrees, got {dec}")
    if p.shift_px is not None:
        shift = np.asarray(p.shift_px, dtype=float)
    if p.rotation_deg is not None:
        rotation = float(p.rotation_deg)
    ratio = float(p.pixel_scale_ratio)
    scale = float(p.pixel_scale) / 3600.0
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
        "ra": float(ra) % 360.0,
        "dec": float(dec),
        "shift_px": (float(shift[0]), float(shift[1])),
        "rotation_deg": float(rotation),
        "pixel_scale_ratio": ratio,
        "wcs_reference": wcs_ref,
        "wcs_science": wcs_sci,
        "sci_to_ref": sci_to_ref,
    }


def _field_coefficients(rng, amplitude: float) -> np.ndarray:
    """Coefficients of c0 u + c1 v + c2 (u^2 + v^2)/2 whose largest value over the field is ``amplitude``."""
    c = rng.normal(size=3)
    g = np.linspace(-1.0, 1.0, 21)
    u, v = np.meshgrid(g, g)
    peak = np.max(np.abs(c[0] * u + c[1] * v + c[2] * 0.5 * (u * u + v * v)))
    return c * (amplitude / peak) if peak > 0 else np.zeros(3)


def make_epochs(p: SimParams, shape, geo: dict, rng: np.random.Generator) -> dict[str, Epoch]:
    filt = p.filters[p.filter]
    seeing_scale = filt.get("seeing_scale", 1.0)
    draws = {
        "seeing_reference": rng.uniform(*p.seeing_reference) * seeing_scale,
        "seeing_science": rng.uniform(*p.seeing_science) * seeing_scale,
        "q": 1.0 - rng.uniform(0.0, p.psf_ellipticity, size=2),
        "theta": rng.uniform(0.0, np.pi, size=2),
        "psf_coef": [_field_coefficients(rng, p.psf_variation) for _ in EPOCHS],
        "sky_coef": [_field_coefficients(rng, p.sky_gradient) for _ in EPOCHS],
        "transparency": rng.uniform(*p.transparency_loss),
        "brightening": rng.uniform(*p.sky_brightening),
        "mjd_reference": rng.uniform(58200.0, 58900.0),
        "baseline": rng.uniform(400.0, 1460.0),
    }
    mjd_ref = float(p.mjd_reference) if p.mjd_reference is not None else draws["mjd_reference"]
    mjd_sci = float(p.mjd_science) if p.mjd_science is not None else mjd_ref + draws["baseline"]
    if mjd_sci - mjd_ref < 365.0:
        raise AstridInputError(
            f"the reference must be at least one year older than the science epoch: "
            f"mjd_reference={mjd_ref}, mjd_science={mjd_sci}"
        )
    epochs = {}
    for i, name in enumerate(EPOCHS):
        scale = p.pixel_scale * (1.0 if name == "reference" else p.pixel_scale_ratio)
        exptime = float(getattr(p, f"exptime_{name}"))
        # The mean of `stack` exposures: the same flux scale with 1/sqrt(stack) of the noise.
        stack = int(p.reference_stack) if name == "reference" else 1
        zp = getattr(p, f"zp_{name}")
        if zp is None:
            zp = filt["zp_1s"] + 2.5 * np.log10(exptime)
            if name == "science":
                zp -= draws["transparency"]
        sky_mag = getattr(p, f"sky_mag_{name}")
        if sky_mag is None:
            sky_mag = filt["sky_mag"] - (draws["brightening"] if name == "science" else 0.0)
        fwhm = getattr(p, f"fwhm_{name}")
        if fwhm is None:
            fwhm = draws[f"seeing_{name}"] / scale
        saturation = p.saturation
        if saturation is None:
            saturation = p.saturation_rate * exptime
        epochs[name] = Epoch(
            name=name,
            shape=shape,
            wcs=geo[f"wcs_{name}"],
            pixel_scale=scale,
            fwhm0=float(fwhm),
            beta=float(p.psf_beta),
            psf_q=float(draws["q"][i]),
            psf_theta=float(draws["theta"][i]),
            psf_coef=draws["psf_coef"][i],
            zp=float(zp),
            exptime=exptime,
            gain=float(p.gain) * stack,
            read_noise=float(p.read_noise) * math.sqrt(stack),
            saturation=float(saturation),
            sky0=float(scale**2 * 10 ** (-0.4 * (sky_mag - zp))),
            sky_coef=draws["sky_coef"][i],
            mjd=mjd_ref if name == "reference" else mjd_sci,
            sky_mag=float(sky_mag),
        )
    return epochs


def footprint_box(eps: dict, pad: float):
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


def inner_positions(rng, n, eps, margin) -> tuple[np.ndarray, np.ndarray]:
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


def area_arcmin2(box, pixel_scale) -> float:
    x0, x1, y0, y1 = box
    return (x1 - x0) * (y1 - y0) * (pixel_scale / 60.0) ** 2


def clip_segment(x0, y0, angle, half_length, shape):
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


def sky_positions(eps, ra, dec) -> dict:
    xs, ys = eps["science"].pix(ra, dec)
    xr, yr = eps["reference"].pix(ra, dec)
    return {
        "ra": np.asarray(ra, float),
        "dec": np.asarray(dec, float),
        "x_sci": xs,
        "y_sci": ys,
        "x_ref": xr,
        "y_ref": yr,
    }


def pixel_angle_deg(ep, eps, name, angle):
    """Angle of a pixel direction of epoch ``name`` expressed in the science grid (deg from +x)."""
    angle = np.asarray(angle, float)
    if name == "science":
        return np.rad2deg(angle) % 180.0
    m = np.linalg.inv(np.linalg.inv(eps["reference"].wcs.wcs.cd) @ eps["science"].wcs.wcs.cd)
    d = m @ np.vstack([np.cos(angle), np.sin(angle)])
    return np.rad2deg(np.arctan2(d[1], d[0])) % 180.0
