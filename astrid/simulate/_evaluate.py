"""Masks from a simulated pair's truth, for scoring a difference image against it.

The validation scripts and the tests count false positives as significant
peaks that no injected source or artefact explains, and measure the noise
of S_corr where there is no source at all. These helpers draw those regions
on the reference grid, each source only within its own bounding box.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["explained_mask", "near_stars_mask", "source_free_mask", "significant_peaks"]


def _disc_or_segment(out, x, y, radius, length=0.0, angle_rad=0.0):
    """Set the pixels of ``out`` within ``radius`` of a segment of ``length`` centred on (x, y)."""
    ny, nx = out.shape
    half = 0.5 * length
    ux, uy = np.cos(angle_rad), np.sin(angle_rad)
    reach_x = abs(half * ux) + radius
    reach_y = abs(half * uy) + radius
    x0, x1 = max(int(np.floor(x - reach_x)), 0), min(int(np.ceil(x + reach_x)) + 1, nx)
    y0, y1 = max(int(np.floor(y - reach_y)), 0), min(int(np.ceil(y + reach_y)) + 1, ny)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    X, Y = xx - x, yy - y
    t = np.clip(X * ux + Y * uy, -half, half)
    out[y0:y1, x0:x1] |= np.hypot(X - t * ux, Y - t * uy) <= radius


def explained_mask(truth, shape, radius: float = 8.0, saturated_radius: float = 28.0) -> np.ndarray:
    """Pixels of the reference grid that an entry of the truth table explains.

    Parameters
    ----------
    truth : astropy.table.Table
        ``SimulatedPair.truth``: ``kind``, ``x_ref``, ``y_ref``, ``length_px``
        and ``angle_deg`` (NaN for point-like entries).
    shape : tuple of int
        Shape of the reference image, (ny, nx).
    radius : float, optional
        Distance in pixels from a point or from a track's segment (cosmic
        rays, bad columns, satellite trails), default 8.
    saturated_radius : float, optional
        The same for saturated stars, whose bleeds and wings reach farther,
        default 28.

    Returns
    -------
    numpy.ndarray of bool, shape ``shape``
        True where an entry explains the pixel.
    """
    out = np.zeros(shape, dtype=bool)
    for row in truth:
        length = float(row["length_px"]) if np.isfinite(row["length_px"]) else 0.0
        angle = np.deg2rad(float(row["angle_deg"])) if np.isfinite(row["angle_deg"]) else 0.0
        r = saturated_radius if row["kind"] == "saturated_star" else radius
        _disc_or_segment(out, float(row["x_ref"]), float(row["y_ref"]), r, length, angle)
    return out


def near_stars_mask(stars, shape, max_mag: float = 16.0, radius: float = 15.0) -> np.ndarray:
    """Pixels within ``radius`` of a star brighter than ``max_mag``.

    The stars are those of ``SimulatedPair.stars``, on the reference grid.

    Parameters
    ----------
    stars : astropy.table.Table
        ``SimulatedPair.stars``: ``mag``, ``x_ref``, ``y_ref``.
    shape : tuple of int
        Shape of the reference image, (ny, nx).
    max_mag : float, optional
        Only stars brighter (a smaller magnitude) than this.
    radius : float, optional
        Distance in pixels from a star's centre (strictly less).

    Returns
    -------
    numpy.ndarray of bool, shape ``shape``
        True near such a star.
    """
    out = np.zeros(shape, dtype=bool)
    for row in stars[np.asarray(stars["mag"]) < max_mag]:
        # A strict "<" as before: the disc helper is inclusive, so shrink by a hair.
        _disc_or_segment(out, float(row["x_ref"]), float(row["y_ref"]), np.nextafter(radius, 0.0))
    return out


def source_free_mask(sim, shape, radius: int = 12) -> np.ndarray:
    """Pixels far from every star, galaxy and truth entry: where S_corr should be pure noise.

    Each star and galaxy blocks a square of ``2 radius + 1`` pixels; the
    truth entries block :func:`explained_mask`.

    Parameters
    ----------
    sim : SimulatedPair
        The pair (``truth``, ``stars``, ``galaxies``).
    shape : tuple of int
        Shape of the reference image, (ny, nx).
    radius : int, optional
        Half-side in pixels of the square blocked around each star and galaxy.

    Returns
    -------
    numpy.ndarray of bool, shape ``shape``
        True where no source or truth entry is near.
    """
    out = explained_mask(sim.truth, shape)
    for table in (sim.stars, sim.galaxies):
        for x, y in zip(np.asarray(table["x_ref"]), np.asarray(table["y_ref"])):
            x0, y0 = int(round(x)), int(round(y))
            out[max(y0 - radius, 0) : y0 + radius + 1, max(x0 - radius, 0) : x0 + radius + 1] = True
    return ~out


def significant_peaks(significance, mask, threshold: float = 5.0, box: int = 5):
    """(x, y) of the local maxima of |significance| above ``threshold`` outside ``mask``.

    A local maximum is the largest value in its ``box`` × ``box`` px window.

    Parameters
    ----------
    significance : numpy.ndarray, shape (ny, nx)
        Significance image (e.g. ``S_corr``, sigma).
    mask : numpy.ndarray of bool, shape (ny, nx)
        Pixels to ignore (taken as 0).
    threshold : float, optional
        Peaks must exceed this in absolute value (sigma).
    box : int, optional
        Side in pixels of the local-maximum window.

    Returns
    -------
    x : numpy.ndarray of int
        Columns of the peaks.
    y : numpy.ndarray of int
        Rows of the peaks.
    """
    a = np.abs(np.where(mask, 0.0, significance))
    y, x = np.nonzero((a == ndimage.maximum_filter(a, size=box)) & (a > threshold))
    return x, y
