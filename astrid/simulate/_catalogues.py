"""Catalogues of a simulated field: stars, galaxies and the injected transients."""

from __future__ import annotations

import numpy as np

from . import _render
from ._geometry import (
    area_arcmin2,
    footprint_box,
    inner_positions,
)
from ._params import (
    SimParams,
    Streams,
)

# Injected transients keep apart (no blends in the truth) and clear of the
# forced saturated stars and their bleeds.
_MIN_SEPARATION_PX = 12.0
_SATURATED_CLEARANCE_PX = 30.0


def _power_law_mags(rng, n, lo, hi, slope) -> np.ndarray:
    """Magnitudes with number counts dN/dm ∝ 10^(slope m) between lo and hi."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + rng.uniform(size=n) * (b - a)) / slope


def draw_stars(p: SimParams, eps, rngs: Streams) -> dict:
    ref = eps["reference"]
    box = footprint_box(eps, pad=16.0)
    rng = rngs("stars")
    area = area_arcmin2(box, ref.pixel_scale)
    if p.n_stars is not None:
        ny, nx = ref.shape
        n = int(round(p.n_stars * (box[1] - box[0]) * (box[3] - box[2]) / (nx * ny)))
    else:
        n = int(rng.poisson(p.star_density * area))
    mags = _power_law_mags(rng, n, *p.star_mag_range, p.star_count_slope)
    ra, dec = ref.world(rng.uniform(box[0], box[1], n), rng.uniform(box[2], box[3], n))
    stars = {
        "ra": ra,
        "dec": dec,
        "mag": mags,
        "mag_sci": mags.copy(),
        "variable": np.zeros(n, bool),
        "forced_saturated": np.zeros(n, bool),
    }

    # Bright stars that saturate in the science epoch, always present (their
    # bleeds and ringing cores are a main source of bogus detections).
    rng = rngs("saturated")
    sci = eps["science"]
    n_sat = p.n_saturated_stars if p.artifacts else 0
    ra_s, dec_s = inner_positions(rng, n_sat, eps, margin=24)
    # 1.5 to 8 times the saturation level at the peak: about 0.5 to 2.3 mag brighter than saturation.
    over = np.exp(rng.uniform(np.log(1.5), np.log(8.0), n_sat))
    side = 2 * sci.psf_radius(sci.fwhm0) + 1
    peak_fraction = float(
        _render.psf_stamp(
            side, 0.0, 0.0, sci.fwhm0, sci.beta, sci.psf_q, sci.psf_theta, False
        ).max()
    )
    flux = over * max(sci.saturation - sci.sky0, sci.saturation * 0.5) / peak_fraction
    mag_s = sci.zp - 2.5 * np.log10(flux)

    # Variable stars: extra stars whose flux changes between the epochs.
    rng = rngs("variables")
    n_var = p.n_variables
    forced = sci.pix(ra_s, dec_s)
    taken: list = []
    ra_v, dec_v = np.empty(n_var), np.empty(n_var)
    for k in range(n_var):
        ra_v[k], dec_v[k] = clear_positions(rng, eps, taken, forced)
        taken.append(sci.pix1(ra_v[k], dec_v[k]))
    mag_v = rng.uniform(*p.variable_mag_range, n_var)
    dmag = rng.uniform(*p.variable_amplitude, n_var) * rng.choice([-1.0, 1.0], n_var)

    for key, values in (
        ("ra", (ra_s, ra_v)),
        ("dec", (dec_s, dec_v)),
        ("mag", (mag_s, mag_v)),
        ("mag_sci", (mag_s, mag_v + dmag)),
        ("variable", (np.zeros(n_sat, bool), np.ones(n_var, bool))),
        ("forced_saturated", (np.ones(n_sat, bool), np.zeros(n_var, bool))),
    ):
        stars[key] = np.concatenate([stars[key], *values])
    return stars


def draw_galaxies(p: SimParams, eps, rngs: Streams) -> dict:
    ref = eps["reference"]
    box = footprint_box(eps, pad=16.0)
    rng = rngs("galaxies")
    area = area_arcmin2(box, ref.pixel_scale)
    if p.n_galaxies is not None:
        ny, nx = ref.shape
        n = int(round(p.n_galaxies * (box[1] - box[0]) * (box[3] - box[2]) / (nx * ny)))
    else:
        n = int(rng.poisson(p.galaxy_density * area))
    lo, hi = p.galaxy_mag_range
    mags = _power_law_mags(rng, n, lo, hi, p.galaxy_count_slope)
    ra, dec = ref.world(rng.uniform(box[0], box[1], n), rng.uniform(box[2], box[3], n))
    # Bright galaxies well inside the field, so there are always hosts.
    rng_h = rngs("hosts")
    n_h = p.n_host_galaxies
    ra_h, dec_h = inner_positions(rng_h, n_h, eps, margin=40)
    mag_h = rng_h.uniform(lo + 1.5, min(lo + 4.5, hi), n_h)
    ra = np.concatenate([ra, ra_h])
    dec = np.concatenate([dec, dec_h])
    mags = np.concatenate([mags, mag_h])
    n_all = n + n_h
    shape_rng = rng
    # Half-light radius shrinks with magnitude (angular size-flux relation), with scatter.
    r_eff = 10 ** (np.log10(1.2) - 0.18 * (mags - 20.0) + shape_rng.normal(0.0, 0.15, n_all))
    disk = shape_rng.uniform(size=n_all) < 0.6
    sersic_n = np.where(
        disk, shape_rng.uniform(0.6, 1.5, n_all), shape_rng.uniform(2.0, 4.5, n_all)
    )
    return {
        "ra": ra,
        "dec": dec,
        "mag": mags,
        "r_eff_arcsec": r_eff,
        "sersic_n": sersic_n,
        "axis_ratio": shape_rng.uniform(0.3, 1.0, n_all),
        "pa_deg": shape_rng.uniform(0.0, 180.0, n_all),
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


def draw_supernovae(p: SimParams, eps, gal, rngs: Streams, taken: list, saturated: tuple) -> dict:
    rng = rngs("supernovae")
    n = p.n_supernovae
    sci, ref = eps["science"], eps["reference"]
    n_faint = int(round(n * p.sn_faint_fraction))
    snr = np.concatenate(
        [
            np.exp(rng.uniform(*np.log(p.sn_snr_bright), n - n_faint)),
            np.exp(rng.uniform(*np.log(p.sn_snr_faint), n_faint)),
        ]
    )
    snr = snr[rng.permutation(n)]
    hostless = rng.uniform(size=n) < p.sn_hostless_fraction
    on_core = rng.uniform(size=n) < p.sn_core_fraction
    # Hosts: galaxies large and bright enough to be seen, well inside both images.
    margin = 32
    x_s, y_s = sci.pix(gal["ra"], gal["dec"])
    x_r, y_r = ref.pix(gal["ra"], gal["dec"])
    inside = sci.contains(x_s, y_s, margin) & ref.contains(x_r, y_r, margin)
    big = gal["r_eff_arcsec"] >= 1.0 * ref.pixel_scale
    candidates = np.flatnonzero(inside & big & (gal["mag"] < p.galaxy_mag_range[0] + 5.5))
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
                rr, dd = inner_positions(rng, 1, eps, margin=margin)
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


def clear_positions(rng, eps, taken: list, saturated: tuple, margin=32) -> tuple[float, float]:
    sci = eps["science"]
    for _ in range(50):
        ra, dec = inner_positions(rng, 1, eps, margin=margin)
        if _clear_of(*sci.pix1(ra[0], dec[0]), taken, saturated):
            break
    return float(ra[0]), float(dec[0])


def draw_asteroids(p: SimParams, eps, rngs: Streams, taken: list, saturated: tuple) -> dict:
    rng = rngs("asteroids")
    n = p.n_asteroids
    sci, ref = eps["science"], eps["reference"]
    snr = np.exp(rng.uniform(*np.log(p.asteroid_snr), n))
    in_ref = rng.uniform(size=n) < p.asteroid_in_reference
    ra, dec = np.empty(n), np.empty(n)
    ra_r, dec_r = np.full(n, np.nan), np.full(n, np.nan)
    for k in range(n):
        ra[k], dec[k] = clear_positions(rng, eps, taken, saturated)
        taken.append(sci.pix1(ra[k], dec[k]))
        if not in_ref[k]:
            continue
        # Elsewhere in the reference: a year earlier it was somewhere else entirely.
        for _ in range(50):
            rr, dd = clear_positions(rng, eps, taken, saturated)
            if _separation_arcsec(ra[k], dec[k], rr, dd) / ref.pixel_scale > 20.0:
                ra_r[k], dec_r[k] = rr, dd
                taken.append(sci.pix1(rr, dd))
                break
        else:
            in_ref[k] = False
    return {
        "ra": ra,
        "dec": dec,
        "snr_target": snr,
        "in_ref": in_ref,
        "ra_ref": ra_r,
        "dec_ref": dec_r,
    }
