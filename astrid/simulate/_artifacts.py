"""Detector artifacts of a simulated epoch: cosmic rays, hot pixels, bad columns, satellites."""

from __future__ import annotations

import math

import numpy as np

from ._geometry import (
    Epoch,
)
from ._params import (
    EPOCHS,
    SimParams,
)


def draw_artifacts(p: SimParams, ep: Epoch, rng: np.random.Generator):
    """Draw the detector artifacts of one epoch (positions in that epoch's pixels)."""
    ny, nx = ep.shape
    mpix = nx * ny / 1e6
    out = {}

    def count(density):
        return max(1, int(rng.poisson(density * mpix))) if density > 0 else 0

    on = bool(p.artifacts)
    clipped = ep.name == "reference" and p.reference_stack >= 3  # a clipped stack has neither
    n_cr = count(p.cosmic_ray_density) if on and not clipped else 0
    track = rng.uniform(size=n_cr) < 0.5
    out["cr"] = {
        "x": rng.uniform(-0.5, nx - 0.5, n_cr),
        "y": rng.uniform(-0.5, ny - 0.5, n_cr),
        "angle": rng.uniform(0.0, np.pi, n_cr),
        # Half are compact hits, half glancing tracks of a few to 20 pixels.
        "length": np.where(track, rng.uniform(2.0, 20.0, n_cr), rng.uniform(0.0, 1.2, n_cr)),
        "width": np.where(track, rng.uniform(0.0, 0.3, n_cr), rng.uniform(0.0, 0.6, n_cr)),
        "charge": np.exp(rng.uniform(*np.log(p.cosmic_ray_charge), n_cr)),
    }
    n_hot = count(p.hot_pixel_density) if on and not clipped else 0
    out["hot"] = {
        "x": rng.integers(0, nx, n_hot),
        "y": rng.integers(0, ny, n_hot),
        "level": np.exp(rng.uniform(*np.log(p.hot_pixel_level), n_hot)),
        "masked": rng.uniform(size=n_hot) < p.hot_pixel_masked_fraction,
    }
    n_col = p.n_bad_columns if on else 0
    full = rng.uniform(size=n_col) < 0.5
    start = rng.integers(0, ny // 2, n_col)
    from_bottom = rng.uniform(size=n_col) < 0.5
    y0 = np.where(full, 0, np.where(from_bottom, 0, start))
    y1 = np.where(full, ny, np.where(from_bottom, ny - start, ny))
    hot = rng.uniform(size=n_col) < 0.6
    out["columns"] = {
        "x": rng.integers(0, nx, n_col),
        "y0": y0,
        "y1": y1,
        "hot": hot,
        # A hot column adds a constant charge; a dead one keeps a few per cent of the signal.
        "level": np.where(
            hot, rng.uniform(5.0, 50.0, n_col) * ep.sky_sigma, rng.uniform(0.0, 0.1, n_col)
        ),
    }
    return out


def draw_satellites(p: SimParams, eps, rng):
    n = p.n_satellite_trails if p.artifacts else 0
    trails = []
    for k in range(n):
        epoch = "science" if k == 0 else str(rng.choice(EPOCHS))
        ep = eps[epoch]
        ny, nx = ep.shape
        x0 = rng.uniform(0.2, 0.8) * nx
        y0 = rng.uniform(0.2, 0.8) * ny
        angle = rng.uniform(0.0, np.pi)
        # Most trails cross the whole frame; some start or end inside it.
        half = (
            2.0 * math.hypot(nx, ny)
            if rng.uniform() < 0.7
            else rng.uniform(0.15, 0.4) * math.hypot(nx, ny)
        )
        peak = rng.uniform(2.0, 30.0) * ep.sky_sigma
        width = ep.fwhm0 * rng.uniform(1.0, 1.6)  # out of focus: the satellite is not at infinity
        trails.append(
            {
                "epoch": epoch,
                "x": x0,
                "y": y0,
                "angle": angle,
                "half_length": half,
                "surface": peak * width * 1.1,
                "fwhm": width,
            }
        )
    return trails
