"""Per-image detection metrics: precision, recall, localisation, false alarms, time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ..errors import AstridInputError
from ._label import REAL_KINDS, label_candidates, truth_positions

__all__ = ["MetricsOptions", "image_metrics", "circle_iou"]


@dataclass(frozen=True)
class MetricsOptions:
    """Which truth counts and how candidates match it, for :func:`image_metrics`.

    Attributes
    ----------
    snr_min : float or None
        Truth transients count towards recall only at ``snr_sci >= snr_min``;
        None counts all.
    real_kinds : sequence of str
        Truth kinds to find (default supernova and variable).
    radius : float
        Matching radius (pixels) when labelling here.
    fwhm : float, optional
        Radius (pixels) of the circles of the IoU; default the candidates'
        ``meta["fwhm"]``.
    """

    snr_min: float | None = 8.0
    real_kinds: tuple = REAL_KINDS
    radius: float = 2.0
    fwhm: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "real_kinds", tuple(self.real_kinds))


def circle_iou(distance, radius) -> np.ndarray:
    """Intersection over union of two circles of equal ``radius`` whose centres are ``distance`` apart.

    Parameters
    ----------
    distance : float or array
        Centre separation (pixels).
    radius : float
        Circle radius (pixels), > 0.

    Returns
    -------
    numpy.ndarray
        1 for coincident circles, 0 when ``distance >= 2 radius``.
    """
    d = np.abs(np.asarray(distance, dtype=float))
    r = float(radius)
    if not r > 0:
        raise AstridInputError(f"radius: must be positive, got {radius!r}")
    ratio = np.clip(d / (2.0 * r), 0.0, 1.0)
    # Area of the lens where two circles overlap.
    lens = 2.0 * r * r * np.arccos(ratio) - 0.5 * d * np.sqrt(
        np.clip(4.0 * r * r - d * d, 0.0, None)
    )
    lens = np.where(d >= 2.0 * r, 0.0, lens)
    return lens / (2.0 * math.pi * r * r - lens)


def _one_image(candidates, truth, time_s, name, options: MetricsOptions, predicted, threshold, wcs):
    snr_min, real_kinds, radius, fwhm = (
        options.snr_min,
        options.real_kinds,
        options.radius,
        options.fwhm,
    )
    if "label" not in candidates.colnames or "truth_id" not in candidates.colnames:
        candidates = label_candidates(
            candidates, truth, radius=radius, real_kinds=real_kinds, wcs=wcs
        )
    meta = candidates.meta
    fwhm = float(fwhm if fwhm is not None else meta.get("fwhm", float("nan")))

    # Truth transients that the detector should find: real kinds, bright
    # enough, and on the image (inside the edge band the detector skips).
    kinds = (
        np.array([str(k).strip() for k in truth["kind"]])
        if "kind" in truth.colnames
        else np.full(len(truth), "known_transient")
    )
    wanted = np.isin(kinds, list(real_kinds) + ["known_transient"])
    if "snr_sci" in truth.colnames and snr_min is not None:
        wanted &= np.nan_to_num(np.asarray(truth["snr_sci"], float), nan=-np.inf) >= snr_min
    if "masked" in truth.colnames:
        wanted &= ~np.asarray(truth["masked"], bool)
    shape = meta.get("shape")
    if shape is not None and len(truth):
        xy, _, _ = truth_positions(truth, wcs=wcs)
        edge = float(meta.get("edge", 0))
        wanted &= (
            (xy[:, 0] >= edge)
            & (xy[:, 0] <= shape[1] - 1 - edge)
            & (xy[:, 1] >= edge)
            & (xy[:, 1] <= shape[0] - 1 - edge)
        )
    truth_ids = (
        np.asarray(truth["id"], dtype=np.int64) if "id" in truth.colnames else np.arange(len(truth))
    )
    wanted_ids = set(truth_ids[wanted].tolist())

    selected = np.ones(len(candidates), dtype=bool)
    if predicted is not None:
        if predicted not in candidates.colnames:
            raise AstridInputError(f"candidates: no column {predicted!r} with classifier scores")
        selected = np.nan_to_num(np.asarray(candidates[predicted], float), nan=-np.inf) >= threshold
    label = np.asarray(candidates["label"], dtype=int)
    matched_ids = np.asarray(candidates["truth_id"], dtype=np.int64)
    true_positive = selected & (label == 1)
    found = set(matched_ids[true_positive].tolist()) & wanted_ids
    offsets = np.asarray(candidates["offset"], float)[true_positive]
    n_selected = int(selected.sum())

    row = {
        "image": name,
        "n_candidates": len(candidates),
        "n_selected": n_selected,
        "n_true": len(wanted_ids),
        "n_found": len(found),
        "precision": true_positive.sum() / n_selected if n_selected else math.nan,
        "recall": len(found) / len(wanted_ids) if wanted_ids else math.nan,
        "false_alarms": int((selected & (label == 0)).sum()),
        "median_offset": float(np.median(offsets)) if offsets.size else math.nan,
        "median_iou": float(np.median(circle_iou(offsets, fwhm)))
        if offsets.size and fwhm > 0
        else math.nan,
        "time_s": math.nan if time_s is None else float(time_s),
    }
    return row


def image_metrics(
    candidates_labelled,
    truth,
    time_s=None,
    *,
    names=None,
    predicted: str | None = None,
    threshold: float = 0.5,
    wcs=None,
    options: MetricsOptions | None = None,
) -> Table:
    """Detection metrics of one image, or of each image of a data set.

    Parameters
    ----------
    candidates_labelled : astropy.table.Table or sequence of Table
        Candidates of one image (or a list, one per image), labelled by
        :func:`label_candidates` (labelled here with ``radius`` if not).
    truth : astropy.table.Table or sequence of Table
        The truth table(s) of the same image(s).
    time_s : float or sequence of float, optional
        Processing time per image (seconds), reported as is.
    names : sequence of str, optional
        Image names; default the candidates' ``meta["prefix"]`` or the index.
    predicted : str, optional
        Column of classifier scores: only candidates with ``score >=
        threshold`` count as predicted real. Default: every candidate (the
        detector's own precision).
    threshold : float, optional
        Score threshold for ``predicted`` (default 0.5).
    wcs : astropy.wcs.WCS, optional
        Reference-grid WCS, for a truth table of ``ra``/``dec`` positions.
    options : MetricsOptions, optional
        Which truth counts (``snr_min``, default 8; ``real_kinds``), the
        matching ``radius`` and the IoU's ``fwhm``; default
        ``MetricsOptions()``.

    Returns
    -------
    astropy.table.Table
        One row per image: ``image``, ``n_candidates``, ``n_selected``,
        ``n_true`` (truth transients to find), ``n_found`` (those matched
        by a selected real candidate), ``precision`` (selected real /
        selected), ``recall`` (n_found / n_true), ``false_alarms``
        (selected bogus), ``median_offset`` (pixels, selected real
        candidates to their truth), ``median_iou`` (IoU of circles of radius
        FWHM around prediction and truth), ``time_s``. NaN where undefined
        (no candidates, no truth).
    """
    options = MetricsOptions() if options is None else options
    single = isinstance(candidates_labelled, Table)
    cands = [candidates_labelled] if single else list(candidates_labelled)
    truths = [truth] if isinstance(truth, Table) else list(truth)
    if len(truths) != len(cands):
        raise AstridInputError(f"got {len(cands)} candidate tables but {len(truths)} truth tables")
    if time_s is None or np.isscalar(time_s):
        times = [time_s] * len(cands)
    else:
        times = list(time_s)
        if len(times) != len(cands):
            raise AstridInputError(f"time_s: {len(times)} values for {len(cands)} images")
    if names is None:
        names = [str(c.meta.get("prefix") or i) for i, c in enumerate(cands)]
    elif isinstance(names, str) or not isinstance(names, Sequence) or len(names) != len(cands):
        raise AstridInputError(f"names: need one name per image ({len(cands)})")
    rows = [
        _one_image(c, t, s, str(n), options, predicted, threshold, wcs)
        for c, t, s, n in zip(cands, truths, times, names)
    ]
    table = Table(rows=rows, names=list(rows[0].keys())) if rows else Table()
    if rows:
        table["median_offset"].unit = "pix"
        table["time_s"].unit = "s"
    table.meta.update(
        {
            "snr_min": options.snr_min,
            "real_kinds": ",".join(options.real_kinds),
            "predicted": predicted or "",
            "threshold": threshold,
        }
    )
    return table
