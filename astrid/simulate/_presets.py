"""Instrument presets of the simulator: plain dictionaries of parameters.

Every key of a preset can be overridden by a keyword argument of
:func:`astrid.simulate.pair` (see its docstring for units and meaning), except
``filters``, the per-filter photometric table that the ``filter`` key picks
from. Values of ``None`` are drawn at random from the seed.
"""

from __future__ import annotations

__all__ = ["PRESETS"]

# Per-filter photometry. zp_1s: AB magnitude that gives 1 data unit per second
# of exposure; sky_mag: dark-sky surface brightness in AB mag / arcsec^2;
# seeing_scale multiplies the preset's seeing ranges (UV PSFs are broader).
_ZTF_FILTERS = {
    "g": {"zp_1s": 22.6, "sky_mag": 21.9, "seeing_scale": 1.05},
    "r": {"zp_1s": 22.5, "sky_mag": 21.0, "seeing_scale": 1.0},
    "i": {"zp_1s": 22.1, "sky_mag": 20.2, "seeing_scale": 0.97},
}

# Swift UVOT: count-rate zero points (AB) of Breeveld et al. (2011), and the
# low zodiacal/geocoronal backgrounds that make UVOT images photon-starved.
_UVOT_FILTERS = {
    "V": {"zp_1s": 17.88, "sky_mag": 21.6, "seeing_scale": 0.92},
    "B": {"zp_1s": 18.98, "sky_mag": 22.4, "seeing_scale": 0.95},
    "U": {"zp_1s": 19.36, "sky_mag": 23.0, "seeing_scale": 1.0},
    "UVW1": {"zp_1s": 18.95, "sky_mag": 23.8, "seeing_scale": 1.0},
    "UVM2": {"zp_1s": 18.54, "sky_mag": 25.0, "seeing_scale": 1.03},
    "UVW2": {"zp_1s": 19.11, "sky_mag": 24.6, "seeing_scale": 1.23},
}

_COMMON = {
    # geometry: science grid relative to the reference grid
    "ra": None,  # deg; None: random
    "dec": None,  # deg; None: random within dec_range
    "dec_range": (-25.0, 80.0),
    "shift_px": None,  # (dx, dy) reference pixels; None: random
    "max_shift_px": 12.0,
    "rotation_deg": None,  # None: uniform in +-max_rotation_deg
    "max_rotation_deg": 0.15,
    "pixel_scale_ratio": 1.0,  # science pixel scale / reference pixel scale
    # epochs
    "mjd_reference": None,  # None: random in 2018-2020
    "mjd_science": None,  # None: reference + 1.1 to 4 years
    "fwhm_reference": None,  # px at the field centre; None: drawn from seeing_reference
    "fwhm_science": None,
    "zp_reference": None,  # MAGZP; None: from the filter and exposure time
    "zp_science": None,  # None: also minus a random transparency loss
    "transparency_loss": (0.0, 0.3),  # mag, science epoch
    "sky_mag_reference": None,  # mag/arcsec^2; None: the filter's dark sky
    "sky_mag_science": None,  # None: dark sky brightened by sky_brightening
    "sky_gradient": 0.03,  # fractional sky change from centre to edge
    # PSF
    "psf_variation": 0.05,  # fractional FWHM change from centre to edge
    "psf_ellipticity": 0.06,  # maximum 1 - b/a of the PSF
    # static sky
    "n_stars": None,  # None: star_density x area
    "star_count_slope": 0.3,  # d log10 N / dm
    "n_galaxies": None,
    "galaxy_count_slope": 0.45,
    "n_host_galaxies": 8,  # bright galaxies always placed inside the field
    # transients
    "n_supernovae": 10,
    "sn_snr_bright": (10.0, 150.0),
    "sn_snr_faint": (2.5, 8.0),
    "sn_faint_fraction": 0.4,
    "sn_core_fraction": 0.2,
    "sn_hostless_fraction": 0.1,
    "n_variables": 5,
    "variable_amplitude": (0.15, 1.2),  # |delta mag|
    "n_asteroids": 1,
    "asteroid_snr": (8.0, 60.0),
    "asteroid_in_reference": 0.5,  # probability that the asteroid is also in the reference
    # artifacts and detector
    "artifacts": True,
    # exposures averaged into the reference (1: a single exposure). A stack of N has 1/sqrt(N) of
    # the noise (the header's GAIN is N times the detector's) and, from 3 on, no cosmic rays or
    # hot pixels: its clipping rejects them.
    "reference_stack": 1,
    "n_saturated_stars": 2,
    "hot_pixel_masked_fraction": 0.5,
    "noise": True,
}

PRESETS: dict[str, dict] = {
    "ztf": {
        **_COMMON,
        "telescope": "P48",
        "instrument": "ZTF/MOSAIC",
        "mission": "ZTF",
        "bunit": "adu",
        "filter": "r",
        "filters": _ZTF_FILTERS,
        "pixel_scale": 1.01,  # arcsec / px
        "exptime_reference": 120.0,  # s (a short stack)
        "exptime_science": 30.0,
        "gain": 6.2,  # e- / ADU
        "read_noise": 8.0,  # e-
        "saturation": 50000.0,  # ADU
        "saturation_rate": None,
        "seeing_reference": (2.0, 2.5),  # arcsec, FWHM at the field centre
        "seeing_science": (2.3, 3.2),
        "psf_beta": 2.8,
        "sky_brightening": (0.0, 0.8),  # mag, moon in the science epoch
        "star_density": 1.4,  # per arcmin^2 within star_mag_range
        "star_mag_range": (11.0, 22.5),
        "galaxy_density": 1.0,  # per arcmin^2 within galaxy_mag_range
        "galaxy_mag_range": (15.0, 22.5),
        "variable_mag_range": (16.0, 20.0),
        "cosmic_ray_density": 100.0,  # per megapixel per epoch
        "cosmic_ray_charge": (250.0, 10000.0),  # ADU per hit, log-uniform
        "hot_pixel_density": 30.0,  # per megapixel per epoch
        "hot_pixel_level": (100.0, 20000.0),  # ADU, log-uniform
        "n_bad_columns": 1,  # per epoch
        "n_satellite_trails": 1,
        "bleed_trails": True,
        "readout_streaks": False,
    },
    "swift_uvot": {
        **_COMMON,
        "telescope": "SWIFT",
        "instrument": "UVOTA",
        "mission": "SWIFT",
        "bunit": "count",
        "filter": "U",
        "filters": _UVOT_FILTERS,
        "pixel_scale": 1.004,  # 2x2 binned; 0.502 unbinned
        "exptime_reference": 1500.0,
        "exptime_science": 600.0,
        "gain": 1.0,  # photon counting: one count per photon
        "read_noise": 0.0,
        "saturation": None,
        "saturation_rate": 50.0,  # counts / s / px: coincidence-loss limit
        "seeing_reference": (2.3, 2.45),
        "seeing_science": (2.35, 2.7),
        "psf_beta": 2.5,
        "sky_brightening": (0.0, 0.3),
        "star_density": 0.6,
        "star_mag_range": (12.0, 22.5),
        "galaxy_density": 0.8,
        "galaxy_mag_range": (16.0, 22.5),
        "variable_mag_range": (16.0, 19.5),
        "transparency_loss": (0.0, 0.05),  # in orbit: only the detector ageing
        "cosmic_ray_density": 5.0,  # photon counting: only rare events register
        "cosmic_ray_charge": (20.0, 300.0),
        "hot_pixel_density": 10.0,
        "hot_pixel_level": (20.0, 2000.0),
        "n_bad_columns": 0,
        "n_satellite_trails": 0,
        "bleed_trails": False,
        "readout_streaks": True,
    },
}


# ZTF as its alert stamps look (benchmarks/realism.py against the shared alerts): a deep co-added
# reference on the science epoch's flux scale (ZTF stacks 15-40 exposures; the alerts' reference
# noise is a fifth of the science noise), the alerts' seeing (candidate FWHM quartiles 1.8-2.8 px),
# denser stars and many variables (half of the shared alerts lie within 1" of a reference source).
PRESETS["ztf_alert"] = {
    **PRESETS["ztf"],
    "exptime_reference": 30.0,
    "reference_stack": 25,
    "seeing_reference": (1.8, 2.3),
    "seeing_science": (1.7, 3.0),
    "star_density": 4.0,
    "n_variables": 30,
    "variable_mag_range": (14.0, 20.0),
}
