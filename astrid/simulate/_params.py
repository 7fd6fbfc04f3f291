"""Simulation parameters: presets resolved with overrides and checked; the random streams."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields

import numpy as np

from ..errors import AstridInputError
from ._presets import PRESETS

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
    "geometry": 1,
    "epochs": 2,
    "stars": 3,
    "galaxies": 4,
    "hosts": 5,
    "saturated": 6,
    "variables": 7,
    "supernovae": 8,
    "asteroids": 9,
    "artifacts_reference": 10,
    "artifacts_science": 11,
    "noise_reference": 12,
    "noise_science": 13,
    "satellites": 14,
}


_MIN_SIZE = 128


def check_epoch(epoch: str) -> str:
    if epoch not in EPOCHS:
        raise AstridInputError(f"epoch must be 'reference' or 'science', got {epoch!r}")
    return epoch


@dataclass(frozen=True)
class SimParams:
    """Every parameter of one simulation: the preset's values after the overrides.

    The fields are the preset keys (documented under :func:`astrid.simulate.pair` and in
    :data:`astrid.simulate.PRESETS`), in the presets' order, plus ``preset`` (its name). ``None``
    means "draw at random from the seed" where :func:`~astrid.simulate.pair` says so.
    """

    ra: float | None
    dec: float | None
    dec_range: tuple[float, float]
    shift_px: tuple[float, float] | None
    max_shift_px: float
    rotation_deg: float | None
    max_rotation_deg: float
    pixel_scale_ratio: float
    mjd_reference: float | None
    mjd_science: float | None
    fwhm_reference: float | None
    fwhm_science: float | None
    zp_reference: float | None
    zp_science: float | None
    transparency_loss: tuple[float, float]
    sky_mag_reference: float | None
    sky_mag_science: float | None
    sky_gradient: float
    psf_variation: float
    psf_ellipticity: float
    n_stars: int | None
    star_count_slope: float
    n_galaxies: int | None
    galaxy_count_slope: float
    n_host_galaxies: int
    n_supernovae: int
    sn_snr_bright: tuple[float, float]
    sn_snr_faint: tuple[float, float]
    sn_faint_fraction: float
    sn_core_fraction: float
    sn_hostless_fraction: float
    n_variables: int
    variable_amplitude: tuple[float, float]
    n_asteroids: int
    asteroid_snr: tuple[float, float]
    asteroid_in_reference: float
    artifacts: bool
    reference_stack: int
    n_saturated_stars: int
    hot_pixel_masked_fraction: float
    noise: bool
    telescope: str
    instrument: str
    mission: str
    bunit: str
    filter: str
    filters: dict[str, dict]
    pixel_scale: float
    exptime_reference: float
    exptime_science: float
    gain: float
    read_noise: float
    saturation: float | None
    saturation_rate: float | None
    seeing_reference: tuple[float, float]
    seeing_science: tuple[float, float]
    psf_beta: float
    sky_brightening: tuple[float, float]
    star_density: float
    star_mag_range: tuple[float, float]
    galaxy_density: float
    galaxy_mag_range: tuple[float, float]
    variable_mag_range: tuple[float, float]
    cosmic_ray_density: float
    cosmic_ray_charge: tuple[float, float]
    hot_pixel_density: float
    hot_pixel_level: tuple[float, float]
    n_bad_columns: int
    n_satellite_trails: int
    bleed_trails: bool
    readout_streaks: bool
    preset: str

    def as_dict(self) -> dict:
        """The parameters as a dict, in field order (the start of ``SimulatedPair.params``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def resolve_params(preset: str, overrides: dict) -> SimParams:
    """The preset ``preset`` with ``overrides``, every value checked (AstridInputError if not)."""
    if preset not in PRESETS:
        raise AstridInputError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[preset].items()}
    for key, value in overrides.items():
        if key not in params or key == "filters":
            close = difflib.get_close_matches(key, [k for k in params if k != "filters"], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise AstridInputError(
                f"unknown simulation parameter {key!r} for preset {preset!r}{hint}"
            )
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
    for key in (
        "n_host_galaxies",
        "n_supernovae",
        "n_variables",
        "n_asteroids",
        "n_saturated_stars",
        "n_bad_columns",
        "n_satellite_trails",
    ):
        _check_count(params, key)
    if (
        not isinstance(params["reference_stack"], (int, np.integer))
        or params["reference_stack"] < 1
    ):
        raise AstridInputError(
            f"reference_stack must be a whole number of exposures >= 1, got {params['reference_stack']!r}"
        )
    for key in (
        "pixel_scale",
        "pixel_scale_ratio",
        "exptime_reference",
        "exptime_science",
        "gain",
        "psf_beta",
    ):
        value = params[key]
        if not _is_number(value) or not value > 0:
            raise AstridInputError(
                f"simulation parameter {key!r} must be a positive number, got {value!r}"
            )
    if params["psf_beta"] <= 1.5:
        raise AstridInputError(
            f"psf_beta must be > 1.5 (a Moffat profile with finite flux and width), got {params['psf_beta']}"
        )
    if not 0.5 <= params["pixel_scale_ratio"] <= 2.0:
        raise AstridInputError(
            f"pixel_scale_ratio must be within [0.5, 2], got {params['pixel_scale_ratio']}"
        )
    if not _is_number(params["read_noise"]) or params["read_noise"] < 0:
        raise AstridInputError(f"read_noise must be >= 0 electrons, got {params['read_noise']!r}")
    for key in ("fwhm_reference", "fwhm_science"):
        value = params[key]
        if value is not None and (not _is_number(value) or not 0.8 <= value <= 30):
            raise AstridInputError(
                f"{key} must be a FWHM in pixels within [0.8, 30], got {value!r}"
            )
    if params["shift_px"] is not None:
        shift = np.asarray(params["shift_px"], dtype=float)
        if shift.shape != (2,) or not np.all(np.isfinite(shift)):
            raise AstridInputError(
                f"shift_px must be a pair (dx, dy) of finite numbers, got {params['shift_px']!r}"
            )
    for key in (
        "psf_variation",
        "psf_ellipticity",
        "sky_gradient",
        "sn_faint_fraction",
        "sn_core_fraction",
        "sn_hostless_fraction",
        "asteroid_in_reference",
        "hot_pixel_masked_fraction",
    ):
        value = params[key]
        if not _is_number(value) or not 0 <= value <= 1:
            raise AstridInputError(
                f"simulation parameter {key!r} must be within [0, 1], got {value!r}"
            )
    return SimParams(**params)


def _is_number(value) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _check_count(params: dict, key: str) -> None:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise AstridInputError(
            f"simulation parameter {key!r} must be a non-negative integer, got {value!r}"
        )


def parse_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        shape = (int(size), int(size))
    else:
        try:
            ny, nx = size
            shape = (int(ny), int(nx))
            if shape != (ny, nx):
                raise TypeError
        except (TypeError, ValueError):
            raise AstridInputError(
                f"size must be an int or a pair (ny, nx) of ints, got {size!r}"
            ) from None
    if min(shape) < _MIN_SIZE:
        raise AstridInputError(
            f"size must be at least {_MIN_SIZE} pixels on each side, got {shape}"
        )
    return shape


class Streams:
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
