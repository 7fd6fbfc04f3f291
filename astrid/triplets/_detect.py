"""Candidate detection on a difference result: peaks of S_corr and their features."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from ..errors import AstridInputError
from ..schema import STAMP_SIZE
from . import _kernels
from ._sources import reference_catalog

__all__ = ["DetectOptions", "detect", "measure_positions", "CANDIDATE_COLUMNS"]


@dataclass(frozen=True)
class DetectOptions:
    """Peak geometry and feature windows of :func:`detect` and :func:`measure_positions`.

    Attributes
    ----------
    fwhm : float, optional
        PSF FWHM of D in pixels; default the broader of
        ``result.science_psf.fwhm`` and ``result.reference_psf.fwhm``.
    min_separation : float, optional
        Peaks closer than this (pixels) to a stronger peak are dropped.
        Default: the FWHM. (:func:`detect` only.)
    edge : int, optional
        Peaks within this many pixels of the image border are dropped.
        Default: ``ceil(FWHM)``, at least 3. (ZOGY also masks a band along
        the edge; stamps that leave the image are NaN-padded, not refused.)
        (:func:`detect` only.)
    dipole_radius : float, optional
        Radius (pixels) searched for an opposite-sign lobe; default 2 FWHM.
    stamp_size : int
        Side of the stamp over which ``masked_fraction`` is counted (63).
    """

    fwhm: float | None = None
    min_separation: float | None = None
    edge: int | None = None
    dipole_radius: float | None = None
    stamp_size: int = STAMP_SIZE


#: Columns of :func:`detect`'s table: name -> (unit, description).
CANDIDATE_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("", "running number, brightest |score| first"),
    "candidate_id": ("", "unique string id, '<prefix>-c<id:05d>' or 'c<id:05d>'"),
    "x": ("pix", "sub-pixel column of the S_corr peak (0-based, reference grid)"),
    "y": ("pix", "sub-pixel row of the S_corr peak (0-based, reference grid)"),
    "ra": ("deg", "right ascension of (x, y)"),
    "dec": ("deg", "declination of (x, y)"),
    "sign": ("", "+1 brightening (S_corr maximum), -1 fading (minimum)"),
    "score": ("", "S_corr at the peak pixel (signed, in sigma)"),
    "flux": ("", "PSF flux of the difference at the peak, science units"),
    "flux_err": ("", "1-sigma error of flux"),
    "sharpness": (
        "",
        "(brightest D pixel - mean of its 8 neighbours) / brightest; 1 for a single hot pixel",
    ),
    "roundness": ("", "(Mxx - Myy) / (Mxx + Myy) of sign*D; +-1 along a detector axis, 0 round"),
    "fwhm": ("pix", "FWHM of sign*D from window-corrected second moments"),
    "elongation": ("", "major / minor axis of sign*D (>= 1)"),
    "dipole": ("", "deepest opposite-sign S_corr within the dipole radius / peak S_corr"),
    "masked_fraction": ("", "fraction of the stamp that is masked or off the image"),
    "ref_source_distance": ("pix", "distance to the nearest reference-image source"),
    "ref_source_flux": ("", "flux of that source, reference units"),
    "host_distance": ("pix", "distance to the nearest extended (galaxy) source"),
}


def _attribute(result: Any, name: str, required: bool = True):
    value = getattr(result, name, None)
    if value is None and required:
        raise AstridInputError(
            f"difference result ({type(result).__name__}) has no {name!r}; "
            "detect() needs the result of astrid.difference()"
        )
    return value


def _psf_fwhm(psf_model: Any) -> float | None:
    fwhm = getattr(psf_model, "fwhm", None)
    try:
        fwhm = float(fwhm)
    except (TypeError, ValueError):
        return None
    return fwhm if math.isfinite(fwhm) and fwhm > 0 else None


def result_fwhm(result: Any) -> float | None:
    """FWHM (pixels) of the difference image's PSF: the broader of the two inputs'."""
    values = [_psf_fwhm(getattr(result, name, None)) for name in ("science_psf", "reference_psf")]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def pixel_scale_arcsec(wcs) -> float | None:
    """Mean pixel scale (arcsec per pixel) of a celestial WCS, or None."""
    if wcs is None or not getattr(wcs, "has_celestial", False):
        return None
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def _bad_pixels(result: Any, score: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(score)
    mask = getattr(result, "mask", None)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != score.shape:
            raise AstridInputError(
                f"result.mask: shape {mask.shape} differs from S_corr {score.shape}"
            )
        bad |= mask
    footprint = getattr(result, "footprint", None)
    if footprint is not None:
        footprint = np.asarray(footprint, dtype=bool)
        if footprint.shape != score.shape:
            raise AstridInputError(
                f"result.footprint: shape {footprint.shape} differs from S_corr {score.shape}"
            )
        bad |= ~footprint
    return bad


def _source_positions(sources, wcs, name: str) -> np.ndarray:
    """(n, 2) pixel positions of a source table (x, y columns, or ra/dec through ``wcs``)."""
    if sources is None or len(sources) == 0:
        return np.zeros((0, 2))
    names = set(sources.colnames)
    if {"x", "y"} <= names:
        xy = np.column_stack([np.asarray(sources["x"], float), np.asarray(sources["y"], float)])
    elif {"x_ref", "y_ref"} <= names:
        xy = np.column_stack(
            [np.asarray(sources["x_ref"], float), np.asarray(sources["y_ref"], float)]
        )
    elif {"ra", "dec"} <= names:
        if wcs is None:
            raise AstridInputError(f"{name}: has ra/dec but the result has no WCS to place them")
        x, y = wcs.celestial.world_to_pixel_values(
            np.asarray(sources["ra"], float), np.asarray(sources["dec"], float)
        )
        xy = np.column_stack([x, y])
    else:
        raise AstridInputError(
            f"{name}: needs columns x, y or x_ref, y_ref (pixels) or ra, dec (degrees), has {sources.colnames}"
        )
    return xy[np.isfinite(xy).all(axis=1)]


def _nearest(tree_xy: np.ndarray, xy: np.ndarray):
    if tree_xy.shape[0] == 0 or xy.shape[0] == 0:
        return np.full(xy.shape[0], np.nan), np.full(xy.shape[0], -1)
    distance, index = cKDTree(tree_xy).query(xy)
    return distance, index


def detect(
    result: Any,
    threshold: float = 5.0,
    *,
    negative: bool = False,
    max_candidates: int | None = None,
    prefix: str | None = None,
    reference_sources: Table | bool | None = None,
    galaxies: Table | bool | None = None,
    options: DetectOptions | None = None,
) -> Table:
    """Find transient candidates: local peaks of S_corr, with their features.

    Parameters
    ----------
    result : DifferenceResult
        Output of :func:`astrid.difference`; uses ``S_corr`` (detection
        statistic, sigma), ``D`` (difference image), ``mask`` and
        ``footprint`` (untrusted / covered pixels), ``flux``/``flux_err``,
        ``wcs``, the PSF models' ``fwhm`` and ``reference`` (for the
        neighbour distances). Any object with these attributes works.
    threshold : float, optional
        Minimum ``|S_corr|`` of a peak, in sigma (default 5).
    negative : bool, optional
        Also find minima of S_corr (fading sources, ``sign = -1``).
    max_candidates : int, optional
        Keep at most this many, strongest ``|score|`` first.
    prefix : str, optional
        Prefix of ``candidate_id`` (e.g. ``"<field>-<epoch>"``), making ids
        unique across images.
    reference_sources : astropy.table.Table or False, optional
        Sources of the reference image (``x``, ``y`` or ``x_ref``,
        ``y_ref`` on the reference grid, or ``ra``, ``dec``; optional
        ``flux``). Default: found in
        ``result.reference`` with :func:`reference_catalog`. False skips
        the neighbour columns (NaN).
    galaxies : astropy.table.Table or False, optional
        Possible hosts (columns as for ``reference_sources``), e.g. a
        galaxy catalogue. Default: the extended sources of the reference
        catalogue. False: NaN.
    options : DetectOptions, optional
        ``fwhm``, ``min_separation``, ``edge``, ``dipole_radius`` and
        ``stamp_size``; default ``DetectOptions()`` (all from the FWHM).

    Returns
    -------
    astropy.table.Table
        One row per candidate, strongest ``|score|`` first, with the columns
        of :data:`CANDIDATE_COLUMNS` (units in ``Table[col].unit``,
        definitions in ``.description``). ``meta`` records ``threshold``,
        ``fwhm``, ``min_separation``, ``edge``, ``shape``,
        ``pixel_scale_arcsec`` and ``method``.

    Raises
    ------
    AstridInputError
        The result lacks S_corr or D, shapes differ, or parameters are out
        of range.

    Notes
    -----
    One numba pass over S_corr finds the 3x3 local extrema above threshold
    on good pixels (mask, outside the footprint, non-finite and the edge band
    excluded); a greedy suppression on a hash grid keeps the strongest peak
    within ``min_separation``; features come from small windows around each
    peak, so their cost grows with the number of candidates, not the image.
    """
    settings = _settings(result, threshold, DetectOptions() if options is None else options)
    score, bad = settings["score"], settings["bad"]
    ny, nx = score.shape
    ys, xs, signs = _kernels.find_local_peaks(
        score, bad, float(threshold), bool(negative), settings["edge"]
    )
    strength = np.abs(score[ys, xs])
    order = np.argsort(-strength, kind="stable")
    keep = _kernels.suppress_close_peaks(ys, xs, order, settings["min_separation"], ny, nx)
    if max_candidates is not None:
        keep = keep[: int(max_candidates)]
    table = candidate_table(
        result,
        ys[keep],
        xs[keep],
        signs[keep],
        settings,
        prefix=prefix,
        reference_sources=reference_sources,
        galaxies=galaxies,
    )
    table.meta["negative"] = bool(negative)
    return table


def _settings(result, threshold, options: DetectOptions) -> dict:
    """Validated parameters and arrays shared by :func:`detect` and :func:`measure_positions`."""
    fwhm, min_separation, edge = options.fwhm, options.min_separation, options.edge
    dipole_radius, stamp_size = options.dipole_radius, options.stamp_size
    score = np.asarray(_attribute(result, "S_corr"))
    diff = np.asarray(_attribute(result, "D"))
    if score.ndim != 2:
        raise AstridInputError(f"result.S_corr: must be 2-D, got shape {score.shape}")
    if diff.shape != score.shape:
        raise AstridInputError(f"result.D: shape {diff.shape} differs from S_corr {score.shape}")
    if isinstance(threshold, bool) or not isinstance(
        threshold, int | float | np.integer | np.floating
    ):
        raise AstridInputError(f"threshold: must be a positive number of sigma, got {threshold!r}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise AstridInputError(f"threshold: must be a positive number of sigma, got {threshold!r}")
    if fwhm is None:
        fwhm = result_fwhm(result)
        if fwhm is None:
            raise AstridInputError(
                "the result's PSF models give no FWHM: pass options=DetectOptions(fwhm=<pixels>) to detect()"
            )
    fwhm = float(fwhm)
    if not (np.isfinite(fwhm) and fwhm > 0):
        raise AstridInputError(f"fwhm: must be a positive number of pixels, got {fwhm!r}")
    if min_separation is None:
        min_separation = fwhm
    if not min_separation >= 0:
        raise AstridInputError(f"min_separation: must be >= 0 pixels, got {min_separation!r}")
    if edge is None:
        edge = max(3, int(math.ceil(fwhm)))
    if int(edge) != edge or edge < 0:
        raise AstridInputError(f"edge: must be an integer >= 0 pixels, got {edge!r}")
    if dipole_radius is None:
        dipole_radius = 2.0 * fwhm
    if int(stamp_size) != stamp_size or stamp_size < 1:
        raise AstridInputError(f"stamp_size: must be a positive integer, got {stamp_size!r}")
    score = np.ascontiguousarray(score)
    return {
        "score": score,
        "diff": np.ascontiguousarray(diff),
        "bad": np.ascontiguousarray(_bad_pixels(result, score)),
        "threshold": float(threshold),
        "fwhm": fwhm,
        "min_separation": float(min_separation),
        "edge": int(edge),
        "dipole_radius": float(dipole_radius),
        "stamp_size": int(stamp_size),
    }


def measure_positions(
    result: Any,
    x,
    y,
    sign=1,
    *,
    prefix: str | None = None,
    reference_sources: Table | bool | None = None,
    galaxies: Table | bool | None = None,
    options: DetectOptions | None = None,
) -> Table:
    """The candidate table of :func:`detect` for given positions (no search).

    Used for random "nothing here" positions and forced photometry at known
    transients. ``x``, ``y`` (reference-grid pixels) are kept as given; the
    features are measured around the nearest pixel, with ``options``'
    ``fwhm``, ``dipole_radius`` and ``stamp_size`` (its ``min_separation``
    and ``edge`` do not apply).

    Parameters
    ----------
    result : DifferenceResult
        Output of :func:`astrid.difference`, as for :func:`detect`.
    x, y : array_like of float
        Positions in reference-grid pixels (0-based), 1-D and of equal shape.
    sign : int or array_like of int, optional
        Sign of each candidate (+1 brightening, -1 fading), broadcast to ``x``.
    prefix : str, optional
        Prefix of ``candidate_id``, as for :func:`detect`.
    reference_sources : astropy.table.Table or False, optional
        Sources of the reference image, as for :func:`detect`.
    galaxies : astropy.table.Table or False, optional
        Possible hosts, as for :func:`detect`.
    options : DetectOptions, optional
        Feature settings; default ``DetectOptions()``.

    Returns
    -------
    astropy.table.Table
        One row per position, with the columns of :func:`detect`.
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    if x.shape != y.shape or x.ndim != 1:
        raise AstridInputError(f"x and y: need equal 1-D shapes, got {x.shape} and {y.shape}")
    options = DetectOptions() if options is None else options
    settings = _settings(result, 5.0, replace(options, min_separation=0.0, edge=0))
    ny, nx = settings["score"].shape
    xi = np.floor(x + 0.5).astype(np.int64)
    yi = np.floor(y + 0.5).astype(np.int64)
    if np.any((xi < 0) | (xi >= nx) | (yi < 0) | (yi >= ny)):
        raise AstridInputError(f"positions: some lie outside the {ny}x{nx} image")
    signs = np.broadcast_to(np.asarray(sign, dtype=np.int8), x.shape).copy()
    table = candidate_table(
        result,
        yi,
        xi,
        signs,
        settings,
        prefix=prefix,
        reference_sources=reference_sources,
        galaxies=galaxies,
        positions=(x, y),
    )
    return table


def candidate_table(
    result,
    ys,
    xs,
    signs,
    settings,
    *,
    prefix=None,
    reference_sources=None,
    galaxies=None,
    positions=None,
) -> Table:
    """Features of peaks at integer (ys, xs) as the table that :func:`detect` returns."""
    score, diff, bad = settings["score"], settings["diff"], settings["bad"]
    fwhm = settings["fwhm"]
    ny, nx = score.shape
    ys = np.ascontiguousarray(ys, dtype=np.int64)
    xs = np.ascontiguousarray(xs, dtype=np.int64)
    signs = np.ascontiguousarray(signs, dtype=np.int8)
    features = _kernels.candidate_features(
        score, diff, bad, ys, xs, signs, fwhm, settings["dipole_radius"], settings["stamp_size"]
    )
    x, y = features[:, 0], features[:, 1]
    if positions is not None:
        x, y = positions
    n = len(ys)

    wcs = getattr(result, "wcs", None)
    if wcs is not None and getattr(wcs, "has_celestial", False) and n:
        ra, dec = wcs.celestial.pixel_to_world_values(x, y)
        ra, dec = np.asarray(ra, float) % 360.0, np.asarray(dec, float)
    else:
        ra = dec = np.full(n, np.nan)

    def at_peak(name: str) -> np.ndarray:
        array = getattr(result, name, None)
        if array is None:
            return np.full(n, np.nan)
        array = np.asarray(array)
        if array.shape != score.shape:
            raise AstridInputError(
                f"result.{name}: shape {array.shape} differs from S_corr {score.shape}"
            )
        return array[ys, xs].astype(float)

    ref_distance = np.full(n, np.nan)
    ref_flux = np.full(n, np.nan)
    host_distance = np.full(n, np.nan)
    catalog = None
    if (
        (reference_sources is None or galaxies is None)
        and n
        and (reference_sources is not False or galaxies is not False)
    ):
        reference = getattr(result, "reference", None)
        if reference is not None:
            catalog = reference_catalog(
                reference, fwhm=_psf_fwhm(getattr(result, "reference_psf", None))
            )
    if reference_sources is None:
        reference_sources = catalog
    if galaxies is None and catalog is not None:
        galaxies = catalog[catalog["extended"]]
    xy = np.column_stack([x, y])
    if reference_sources is not False and reference_sources is not None:
        source_xy = _source_positions(reference_sources, wcs, "reference_sources")
        ref_distance, index = _nearest(source_xy, xy)
        if (
            "flux" in reference_sources.colnames
            and source_xy.shape[0] == len(reference_sources)
            and len(reference_sources)
        ):
            fluxes = np.asarray(reference_sources["flux"], float)
            ref_flux = np.where(index >= 0, fluxes[np.clip(index, 0, len(fluxes) - 1)], np.nan)
    if galaxies is not False and galaxies is not None:
        host_distance, _ = _nearest(_source_positions(galaxies, wcs, "galaxies"), xy)

    ids = np.arange(n)
    head = f"{prefix}-" if prefix else ""
    table = Table()
    table["id"] = ids
    table["candidate_id"] = np.array([f"{head}c{i:05d}" for i in ids], dtype=str if n else "U8")
    table["x"] = np.asarray(x, float)
    table["y"] = np.asarray(y, float)
    table["ra"] = ra
    table["dec"] = dec
    table["sign"] = signs.astype(np.int8)
    table["score"] = score[ys, xs].astype(float)
    table["flux"] = at_peak("flux")
    table["flux_err"] = at_peak("flux_err")
    table["sharpness"] = features[:, 2]
    table["roundness"] = features[:, 3]
    table["fwhm"] = features[:, 4]
    table["elongation"] = features[:, 5]
    table["dipole"] = features[:, 6]
    table["masked_fraction"] = features[:, 7]
    table["ref_source_distance"] = ref_distance
    table["ref_source_flux"] = ref_flux
    table["host_distance"] = host_distance
    for name, (unit, description) in CANDIDATE_COLUMNS.items():
        if unit:
            table[name].unit = unit
        table[name].description = description
    table.meta.update(
        {
            "threshold": settings["threshold"],
            "fwhm": fwhm,
            "min_separation": settings["min_separation"],
            "edge": settings["edge"],
            "dipole_radius": settings["dipole_radius"],
            "stamp_size": settings["stamp_size"],
            "shape": [int(ny), int(nx)],
            "pixel_scale_arcsec": pixel_scale_arcsec(wcs),
            "method": str(getattr(result, "method", "")),
            "prefix": prefix or "",
        }
    )
    return table
