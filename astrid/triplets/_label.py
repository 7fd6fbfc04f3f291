"""Labels of candidates from a truth table or a list of known transient positions."""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from .._utils import kinds_tuple
from ..errors import AstridInputError

__all__ = ["label_candidates", "relabel", "REAL_KINDS", "ARTIFACT_KINDS", "truth_positions"]

#: Truth kinds labelled real (1). Supernovae and variable stars are genuine
#: astrophysical changes - what a real/bogus classifier such as braai calls
#: "real" (Duev et al. 2019). Asteroids are astrophysical too but bogus for a
#: search for stationary transients; they keep kind "asteroid".
REAL_KINDS: tuple[str, ...] = ("supernova", "variable")
#: Truth kinds of detector and processing artifacts (always bogus).
ARTIFACT_KINDS: tuple[str, ...] = (
    "cosmic_ray",
    "hot_pixel",
    "bad_column",
    "satellite_trail",
    "saturated_star",
)
#: kind of a candidate that matches no truth row.
UNMATCHED = "unmatched"
#: kind given to rows of a positions table that has no kind/type column.
KNOWN_TRANSIENT = "known_transient"


def _science_to_reference_matrix(truth: Table) -> np.ndarray | None:
    """Linear part of the science -> reference pixel mapping, fitted to the truth rows."""
    names = set(truth.colnames)
    if not {"x_sci", "y_sci", "x_ref", "y_ref"} <= names or len(truth) < 3:
        return None
    xs, ys = np.asarray(truth["x_sci"], float), np.asarray(truth["y_sci"], float)
    xr, yr = np.asarray(truth["x_ref"], float), np.asarray(truth["y_ref"], float)
    good = np.isfinite(xs) & np.isfinite(ys) & np.isfinite(xr) & np.isfinite(yr)
    if good.sum() < 3:
        return None
    design = np.column_stack([xs[good], ys[good], np.ones(good.sum())])
    coeff, *_ = np.linalg.lstsq(design, np.column_stack([xr[good], yr[good]]), rcond=None)
    return coeff[:2].T  # [[dxr/dxs, dxr/dys], [dyr/dxs, dyr/dys]]


def truth_positions(truth: Table, wcs=None, pixel_scale_arcsec: float | None = None):
    """Reference-grid pixel positions of truth rows, and segments for long ones.

    Returns
    -------
    xy : (n, 2) float array
        Centre of each row on the reference grid (NaN when unknown).
    direction : (n, 2) float array
        Unit vector along a track/column/trail on the reference grid (0 for
        points).
    half_length : (n,) float array
        Half its length in reference pixels (0 for points).
    """
    names = set(truth.colnames)
    n = len(truth)
    if {"x_ref", "y_ref"} <= names:
        xy = np.column_stack([np.asarray(truth["x_ref"], float), np.asarray(truth["y_ref"], float)])
    elif {"x", "y"} <= names:
        xy = np.column_stack([np.asarray(truth["x"], float), np.asarray(truth["y"], float)])
    elif {"ra", "dec"} <= names:
        if wcs is None:
            raise AstridInputError(
                "truth: has only ra/dec; pass wcs= (the difference result's) to place them on the reference grid"
            )
        x, y = wcs.celestial.world_to_pixel_values(
            np.asarray(truth["ra"], float), np.asarray(truth["dec"], float)
        )
        xy = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    else:
        raise AstridInputError(
            f"truth: needs x_ref, y_ref or x, y (pixels) or ra, dec (degrees); has {truth.colnames}"
        )

    direction = np.zeros((n, 2))
    half_length = np.zeros(n)
    if {"length_px", "angle_deg"} <= names:
        length = np.asarray(truth["length_px"], float)
        angle = np.deg2rad(np.asarray(truth["angle_deg"], float))
        long_rows = np.isfinite(length) & np.isfinite(angle) & (length > 0)
        # Lengths and angles are given in science pixels: map them to the reference grid.
        matrix = _science_to_reference_matrix(truth)
        if matrix is None:
            matrix = np.eye(2)
        vectors = np.column_stack([np.cos(angle), np.sin(angle)]) @ matrix.T
        norm = np.hypot(vectors[:, 0], vectors[:, 1])
        ok = long_rows & (norm > 0)
        direction[ok] = vectors[ok] / norm[ok, None]
        half_length[ok] = 0.5 * length[ok] * norm[ok]
    return xy, direction, half_length


def truth_distances(cand_xy, xy, direction, half_length, radius):
    """Distance of each position to its nearest truth row (points or segments) within ``radius``.

    Parameters
    ----------
    cand_xy : numpy.ndarray, shape (n, 2)
        Positions (x, y), pixels.
    xy, direction, half_length : numpy.ndarray
        Truth rows as :func:`truth_positions` returns them: centres (m, 2),
        unit directions (m, 2) and half-lengths (m,) in pixels (0 for points).
    radius : float
        Largest distance looked at, pixels.

    Returns
    -------
    distance : numpy.ndarray, shape (n,)
        Pixels; inf where no truth row is within ``radius``.
    row : numpy.ndarray of int64, shape (n,)
        The nearest truth row, -1 where none.
    """
    best_dist = np.full(cand_xy.shape[0], np.inf)
    best_row = np.full(cand_xy.shape[0], -1, dtype=np.int64)
    finite = np.isfinite(xy).all(axis=1)
    point_rows = np.flatnonzero(finite & (half_length == 0))
    if point_rows.size and cand_xy.shape[0]:
        dist, index = cKDTree(xy[point_rows]).query(cand_xy, distance_upper_bound=radius)
        found = np.isfinite(dist)
        best_dist[found] = dist[found]
        best_row[found] = point_rows[index[found]]
    for row in np.flatnonzero(finite & (half_length > 0)):
        rel = cand_xy - xy[row]
        along = np.clip(rel @ direction[row], -half_length[row], half_length[row])
        dist = np.hypot(*(rel - along[:, None] * direction[row]).T)
        closer = (dist <= radius) & (dist < best_dist)
        best_dist[closer] = dist[closer]
        best_row[closer] = row
    return best_dist, best_row


def label_candidates(
    candidates: Table,
    truth: Table,
    radius: float = 2.0,
    *,
    real_kinds=REAL_KINDS,
    wcs=None,
    kind_column: str | None = None,
) -> Table:
    """Label candidates real (1) or bogus (0) by matching them to the truth.

    Parameters
    ----------
    candidates : astropy.table.Table
        From :func:`detect`: ``x``, ``y`` on the reference grid.
    truth : astropy.table.Table
        Either a simulator truth table (``kind``, ``x_ref``, ``y_ref``,
        optional ``length_px``/``angle_deg`` for tracks, columns and trails,
        which are matched along their length), or a list of known transient
        positions (``x``, ``y`` pixels or ``ra``, ``dec`` degrees; an
        optional ``kind`` or ``type`` column). Rows of a positions table
        without a kind are all real (``kind = "known_transient"``).
    radius : float, optional
        Largest distance (reference pixels) of a match, default 2.
    real_kinds : sequence of str, optional
        Kinds labelled 1; default :data:`REAL_KINDS` (supernova, variable).
        Everything else - artifacts, asteroids, unmatched detections - is 0.
    wcs : astropy.wcs.WCS, optional
        Reference-grid WCS (``result.wcs``), needed when ``truth`` has only
        ``ra``/``dec``.
    kind_column : str, optional
        Column of ``truth`` that holds the kind (default ``kind``, else
        ``type``).

    Returns
    -------
    astropy.table.Table
        A copy of ``candidates`` with ``label`` (int8: 1 real, 0 bogus),
        ``kind`` (kind of the nearest truth row within ``radius``, else
        ``"unmatched"``), ``truth_id`` (its ``id`` or row number; -1) and
        ``offset`` (distance to it, pixels; NaN). Several candidates may
        match one truth row (e.g. a split detection).
    """
    if "x" not in candidates.colnames or "y" not in candidates.colnames:
        raise AstridInputError(f"candidates: need columns x and y, have {candidates.colnames}")
    if not (np.isfinite(radius) and radius > 0):
        raise AstridInputError(f"radius: must be a positive number of pixels, got {radius!r}")
    if kind_column is None:
        kind_column = (
            "kind" if "kind" in truth.colnames else ("type" if "type" in truth.colnames else None)
        )
    elif kind_column not in truth.colnames:
        raise AstridInputError(f"truth: no column {kind_column!r}")
    real_kinds = kinds_tuple(real_kinds)
    if kind_column is None:
        kinds = np.full(len(truth), KNOWN_TRANSIENT, dtype=object)
        real_kinds = tuple(real_kinds) + (KNOWN_TRANSIENT,)
    else:
        kinds = np.array([str(k).strip() for k in truth[kind_column]], dtype=object)
    truth_ids = (
        np.asarray(truth["id"], dtype=np.int64) if "id" in truth.colnames else np.arange(len(truth))
    )

    xy, direction, half_length = truth_positions(truth, wcs=wcs)
    cand_xy = np.column_stack(
        [np.asarray(candidates["x"], float), np.asarray(candidates["y"], float)]
    )
    dist, row = truth_distances(cand_xy, xy, direction, half_length, float(radius))
    matched = row >= 0

    out = candidates.copy(copy_data=True)
    kind = np.full(len(out), UNMATCHED, dtype=object)
    kind[matched] = kinds[row[matched]]
    real = np.isin(kind.astype(str), np.asarray(list(real_kinds), dtype=str)) & matched
    out["label"] = real.astype(np.int8)
    out["label"].description = "1 real (matched a transient of a real kind), 0 bogus"
    out["kind"] = kind.astype(str) if len(out) else np.array([], dtype="U16")
    out["kind"].description = "kind of the matched truth row, or 'unmatched'"
    out["truth_id"] = np.where(
        matched, truth_ids[np.clip(row, 0, None)] if len(truth) else -1, -1
    ).astype(np.int64)
    out["truth_id"].description = "id of the matched truth row, -1 if none"
    out["offset"] = np.where(matched, dist, np.nan)
    out["offset"].unit = "pix"
    out["offset"].description = "distance to the matched truth position (or track)"
    out.meta["label_radius"] = float(radius)
    out.meta["real_kinds"] = ",".join(real_kinds)
    return out


def relabel(triplets, real_kinds=REAL_KINDS):
    """The triplets labelled again from their ``kind``, with other real kinds.

    What :func:`label_candidates` (or a batch) decided with one ``real_kinds``, said again with
    another, without matching the truth again: e.g. braai's convention, which counts every
    astrophysical source real, asteroids included, on triplets a batch labelled with the
    default :data:`REAL_KINDS`.

    Parameters
    ----------
    triplets : xarray.Dataset
        Labelled triplets (:func:`make_triplets` of labelled candidates, a batch's store): a
        ``label`` (1, 0, or -1 for unlabelled) and a ``kind`` per candidate.
    real_kinds : str or sequence of str, optional
        Kinds labelled 1; every other labelled candidate is 0. Rows of a positions table without
        kinds (``kind = "known_transient"``) stay real, as :func:`label_candidates` has them.

    Returns
    -------
    xarray.Dataset
        A copy with the new ``label`` and attribute ``detect_real_kinds``; unlabelled
        candidates (-1) keep their label.

    Raises
    ------
    AstridInputError
        No ``label`` or ``kind``, or ``real_kinds`` empty or not strings.
    """
    real_kinds = kinds_tuple(real_kinds)
    missing = [name for name in ("label", "kind") if name not in triplets.variables]
    if missing:
        raise AstridInputError(
            f"triplets: no {' or '.join(missing)} to relabel (label them with label_candidates "
            "before make_triplets, or read a batch's store)"
        )
    labels = np.asarray(triplets["label"].values)
    kinds = np.asarray(triplets["kind"].values).astype(str)
    real = np.isin(kinds, list(real_kinds) + [KNOWN_TRANSIENT])
    new = np.where(labels < 0, labels, real).astype(labels.dtype)
    if "label" in triplets.coords:
        out = triplets.assign_coords(label=(triplets["label"].dims, new))
    else:
        out = triplets.assign(label=(triplets["label"].dims, new))
    out["label"].attrs.update(triplets["label"].attrs)
    out.attrs = {**triplets.attrs, "detect_real_kinds": ",".join(real_kinds)}
    return out
