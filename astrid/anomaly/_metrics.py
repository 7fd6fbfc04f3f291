"""One metrics table per dataset across methods: :func:`evaluate_methods`.

Every method is a callable ``method(field)`` that returns its predictions
for one image as an astropy Table with columns ``x``, ``y`` (0-based pixels
of the reference grid) and ``score`` (higher = more likely a transient); a
map method returns ``(table, labels)`` with the label image of its regions
(``table["id"]`` names each region's label). The helpers below wrap the
project's methods: :func:`zogy_threshold_method`,
:func:`classic_threshold_method`, :func:`unet_method`,
:func:`baseline_method`, :func:`braai_method`.

Conventions (recorded in the table's ``meta``):

- **Truth to find** per image: entries of ``real_kinds`` (supernova,
  variable) with ``snr_sci >= snr_min`` (8), not ``masked``, at least
  ``edge`` pixels inside the image. Their count is ``n_true``.
- **Matching**: a prediction is *real* when its position is within
  ``match_radius`` pixels of a truth entry of ``real_kinds`` of any S/N (a
  faint real transient found is not a false alarm, as in
  :func:`astrid.triplets.image_metrics`); every other selected prediction is
  a false alarm (artefacts, asteroids, star residuals, noise). A truth
  entry to find is *found* when a selected real prediction lies within
  ``match_radius`` of it.
- **precision** = selected real / selected; **recall** = found / to find;
  **false alarms per image** = selected not real / images; all pooled over
  the test fields.
- **Localisation IoU**, median over the found truth entries (the best
  prediction of each): for a *map* method, the IoU of the region's
  footprint (its pixels in the label image) with the truth disc of radius
  FWHM (:func:`astrid.anomaly.unet.transient_mask`, the U-Net's training
  target); for a *point* method, the IoU of two circles of radius FWHM
  around prediction and truth (:func:`astrid.triplets.circle_iou`). FWHM
  is the broader of the image's two PSFs.
- **Threshold** of each method: chosen on the validation fields only, as
  the highest score at which the validation recall is at least
  ``target_recall`` (fewest false alarms at that recall); where no
  threshold reaches it, the lowest validation score (the most recall the
  method gives) and the rule says so. ``thresholds={name: value}`` fixes a
  method's threshold instead (rule ``"given"``).
- **Seconds per image**: mean wall time of the method on a test image,
  plus the time of the difference image it needs (ZOGY or classic, the
  field's ``seconds``) and of any shared detection step it reused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
from astropy.table import Table

from ..errors import AstridInputError
from .unet import field_fwhm, truth_kinds, truth_xy

__all__ = [
    "REAL_KINDS",
    "Field",
    "MatchOptions",
    "baseline_method",
    "braai_method",
    "choose_region_level",
    "choose_threshold",
    "classic_threshold_method",
    "disc_iou",
    "evaluate_methods",
    "match_predictions",
    "plot_methods",
    "recall_lower_bound",
    "unet_method",
    "zogy_threshold_method",
]

REAL_KINDS = ("supernova", "variable")


@dataclass(frozen=True)
class MatchOptions:
    """Which truth entries count and how predictions match them (:func:`evaluate_methods`).

    Attributes
    ----------
    snr_min : float or None
        Truth entries to find need ``snr_sci >= snr_min`` (default 8); None
        counts all.
    match_radius : float
        Pixels between a prediction and a truth entry for a match (3).
    real_kinds : sequence of str
        Truth kinds that are transients (supernova, variable).
    edge : float
        Truth entries within ``edge`` pixels of the border are not counted.
    """

    snr_min: float | None = 8.0
    match_radius: float = 3.0
    real_kinds: tuple = REAL_KINDS
    edge: float = 4.0

    def __post_init__(self):
        object.__setattr__(self, "real_kinds", tuple(self.real_kinds))

    def keywords(self) -> dict:
        """The options as :func:`match_predictions` keywords."""
        return {
            "match_radius": float(self.match_radius),
            "snr_min": self.snr_min,
            "real_kinds": self.real_kinds,
            "edge": float(self.edge),
        }


@dataclass
class Field:
    """One image of a dataset: its truth and what the methods need.

    Attributes
    ----------
    name : str
    truth : astropy.table.Table
        Truth table (``kind``, ``x_ref``, ``y_ref``, ``snr_sci``, ``masked``).
    shape : tuple of int
        (ny, nx) of the reference grid.
    fwhm : float
        Pixels; radius of the IoU discs and circles.
    result : DifferenceResult, optional
        ZOGY difference (:func:`astrid.difference`).
    classic : DifferenceResult, optional
        Classic difference (``method="classic"``).
    seconds : dict, optional
        Wall time of each difference, ``{"zogy": s, "classic": s}``.
    cache : dict
        Shared intermediate results (e.g. detections) and their times.
    """

    name: str
    truth: Table
    shape: tuple[int, int]
    fwhm: float
    result: Any = None
    classic: Any = None
    seconds: dict = dc_field(default_factory=dict)
    cache: dict = dc_field(default_factory=dict)

    @classmethod
    def from_result(cls, result, truth, name: str, *, classic=None, seconds=None) -> Field:
        """A field from a ZOGY difference result (shape and FWHM taken from it)."""
        shape = tuple(int(s) for s in np.shape(result.S_corr))
        seconds = dict(seconds or {})
        seconds.setdefault(
            "zogy", float((getattr(result, "metrics", None) or {}).get("time_total", 0.0))
        )
        if classic is not None:
            seconds.setdefault(
                "classic", float((getattr(classic, "metrics", None) or {}).get("time_total", 0.0))
            )
        return cls(
            name=str(name),
            truth=truth,
            shape=shape,
            fwhm=field_fwhm(result),
            result=result,
            classic=classic,
            seconds=seconds,
        )

    @classmethod
    def from_pair(cls, pair, name: str, *, classic: bool = False) -> Field:
        """Difference a simulated pair (ZOGY, and classic when asked) and time it."""
        from ..diffim import difference

        started = time.perf_counter()
        result = difference(pair.reference, pair.science)
        seconds = {"zogy": time.perf_counter() - started}
        other = None
        if classic:
            started = time.perf_counter()
            other = difference(pair.reference, pair.science, method="classic")
            seconds["classic"] = time.perf_counter() - started
        return cls.from_result(result, pair.truth, name, classic=other, seconds=seconds)


# --------------------------------------------------------------------------- #
# matching
# --------------------------------------------------------------------------- #


def disc_iou(labels: np.ndarray, region_id: int, x: float, y: float, radius: float) -> float:
    """IoU of one labelled region with the disc of ``radius`` around (x, y).

    Parameters
    ----------
    labels : numpy.ndarray
        Label image (2-D, integer region ids).
    region_id : int
        Id of the region in ``labels``.
    x, y : float
        Centre of the disc in pixels (0-based).
    radius : float
        Radius of the disc in pixels.

    Returns
    -------
    float
        Intersection over union of the region and the disc, 0 when both are empty.
    """
    region = labels == region_id
    ny, nx = labels.shape
    ys, xs = np.nonzero(region)
    r = float(radius)
    x0 = max(min(int(np.floor(x - r)), xs.min() if xs.size else nx), 0)
    x1 = min(max(int(np.ceil(x + r)) + 1, xs.max() + 1 if xs.size else 0), nx)
    y0 = max(min(int(np.floor(y - r)), ys.min() if ys.size else ny), 0)
    y1 = min(max(int(np.ceil(y + r)) + 1, ys.max() + 1 if ys.size else 0), ny)
    if x0 >= x1 or y0 >= y1:
        return 0.0
    yy, xx = np.mgrid[y0:y1, x0:x1]
    disc = np.hypot(xx - x, yy - y) <= r
    box = region[y0:y1, x0:x1]
    union = np.count_nonzero(disc | box)
    return float(np.count_nonzero(disc & box) / union) if union else 0.0


def _truth_sets(field: Field, snr_min, real_kinds, edge):
    truth = field.truth
    if len(truth) == 0:
        return np.empty((0, 2)), np.empty(0, bool)
    x, y = truth_xy(truth)
    kinds = truth_kinds(truth)
    real = np.isin(kinds, list(real_kinds) + ["known_transient"])
    wanted = real.copy()
    if snr_min is not None and "snr_sci" in truth.colnames:
        wanted &= np.nan_to_num(np.asarray(truth["snr_sci"], float), nan=-np.inf) >= snr_min
    if "masked" in truth.colnames:
        wanted &= ~np.asarray(truth["masked"], bool)
    ny, nx = field.shape
    wanted &= (x >= edge) & (x <= nx - 1 - edge) & (y >= edge) & (y <= ny - 1 - edge)
    xy = np.stack([x, y], axis=1)[real]
    return xy, wanted[real]


def match_predictions(
    predictions,
    field: Field,
    *,
    match_radius: float = 3.0,
    snr_min: float | None = 8.0,
    real_kinds=REAL_KINDS,
    edge: float = 4.0,
) -> dict:
    """Match one image's predictions (all scores) to its truth.

    Parameters
    ----------
    predictions : astropy.table.Table or (Table, labels)
        ``x``, ``y``, ``score`` (and ``id`` for a map's regions).
    field : Field
        The image the predictions were made on, with its truth.
    match_radius : float, optional
        Largest distance in pixels from a prediction to a real truth entry it matches.
    snr_min : float or None, optional
        Real truth entries with a lower ``snr_sci`` are not to be found; ``None``: no cut.
    real_kinds : sequence of str, optional
        Truth kinds that count as real (``known_transient`` always does).
    edge : float, optional
        Real truth entries closer than this to the image border (pixels) are not to be found.

    Returns
    -------
    dict
        ``score`` (per prediction), ``real`` (bool per prediction: within
        ``match_radius`` of a real truth entry), ``truth_index`` (per
        prediction: index among the real truth entries, −1), ``iou`` (per
        prediction: its IoU with that entry, NaN when unmatched),
        ``wanted`` (bool per real truth entry: to be found), ``n_true``,
        ``kind`` (``"map"`` or ``"points"``).
    """
    labels = None
    if isinstance(predictions, tuple):
        if len(predictions) != 2:
            raise AstridInputError("predictions: expected a Table or a (Table, labels) pair")
        predictions, labels = predictions
        labels = np.asarray(labels)
        if labels.shape != tuple(field.shape):
            raise AstridInputError(
                f"predictions: label image of shape {labels.shape}, field {field.name!r} is {field.shape}"
            )
    if not isinstance(predictions, Table):
        raise AstridInputError(
            f"predictions: expected an astropy Table, got {type(predictions).__name__}"
        )
    for col in ("x", "y", "score") + (("id",) if labels is not None else ()):
        if col not in predictions.colnames:
            raise AstridInputError(f"predictions of field {field.name!r}: no column {col!r}")
    px = np.asarray(predictions["x"], float)
    py = np.asarray(predictions["y"], float)
    score = np.asarray(predictions["score"], float)
    truth_xy, wanted = _truth_sets(field, snr_min, real_kinds, edge)
    n = len(predictions)
    truth_index = np.full(n, -1, dtype=np.int64)
    iou = np.full(n, np.nan)
    if n and truth_xy.shape[0]:
        d = np.hypot(px[:, None] - truth_xy[None, :, 0], py[:, None] - truth_xy[None, :, 1])
        nearest = np.argmin(d, axis=1)
        close = d[np.arange(n), nearest] <= match_radius
        truth_index[close] = nearest[close]
        from ..triplets import circle_iou

        for i in np.flatnonzero(close):
            tx, ty = truth_xy[nearest[i]]
            if labels is not None:
                iou[i] = disc_iou(labels, int(predictions["id"][i]), tx, ty, field.fwhm)
            else:
                iou[i] = float(circle_iou(d[i, nearest[i]], field.fwhm))
    return {
        "score": np.nan_to_num(score, nan=-np.inf),
        "real": truth_index >= 0,
        "truth_index": truth_index,
        "iou": iou,
        "wanted": wanted,
        "n_true": int(wanted.sum()),
        "kind": "map" if labels is not None else "points",
    }


def _found_scores(matches: list[dict]) -> np.ndarray:
    """For every truth entry to find: the highest score of a prediction matched to it (−inf if none)."""
    out = []
    for m in matches:
        best = np.full(m["wanted"].size, -np.inf)
        for t, s in zip(m["truth_index"], m["score"]):
            if t >= 0:
                best[t] = max(best[t], s)
        out.append(best[m["wanted"]])
    return np.concatenate(out) if out else np.empty(0)


def recall_lower_bound(n_found: int, n_true: int, confidence: float = 0.95) -> float:
    """One-sided Clopper–Pearson lower confidence bound of a recall ``n_found / n_true``.

    Parameters
    ----------
    n_found, n_true : int
        Truth entries found, and to find.
    confidence : float, optional
        Confidence level of the bound, in (0, 1) (0.95).

    Returns
    -------
    float
        The recall ``p`` below which ``n_found`` or more found out of
        ``n_true`` has probability ``1 - confidence``; 0 when nothing is found.
    """
    if not 0.0 < float(confidence) < 1.0:
        raise AstridInputError(f"confidence={confidence!r} must be in (0, 1)")
    n_found, n_true = int(n_found), int(n_true)
    if n_true <= 0 or not 0 <= n_found <= n_true:
        raise AstridInputError(
            f"n_found={n_found}, n_true={n_true}: need 0 <= n_found <= n_true and n_true > 0"
        )
    if n_found == 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - float(confidence), n_found, n_true - n_found + 1))


def choose_threshold(
    matches: list[dict], target_recall: float = 0.9, confidence: float | None = None
) -> tuple[float, str]:
    """The highest score threshold whose recall over ``matches`` is at least ``target_recall``.

    Parameters
    ----------
    matches : list of dict
        :func:`match_predictions` of each validation image.
    target_recall : float, optional
        Recall the threshold must reach (0.9).
    confidence : float or None, optional
        With a value (e.g. 0.95), the recall must be reached with a margin:
        the threshold is the highest score at which the one-sided
        Clopper–Pearson lower bound of the validation recall
        (:func:`recall_lower_bound`) at this confidence is at least
        ``target_recall``, so that a validation set's luck does not set the
        operating point. ``None``: the validation recall itself.

    Returns
    -------
    threshold : float
        The chosen score threshold.
    rule : str
        How it was chosen, for the table.
    """
    if not 0.0 < float(target_recall) <= 1.0:
        raise AstridInputError(f"target_recall={target_recall!r} must be in (0, 1]")
    if confidence is not None and not 0.0 < float(confidence) < 1.0:
        raise AstridInputError(f"confidence={confidence!r} must be in (0, 1) or None")
    found = np.sort(_found_scores(matches))[::-1]
    scores = np.concatenate([m["score"] for m in matches]) if matches else np.empty(0)
    scores = scores[np.isfinite(scores)]
    if found.size == 0:
        low = float(scores.min()) if scores.size else math.inf
        return low, "no truth to find on validation: lowest validation score"
    if confidence is None:
        k = math.ceil(float(target_recall) * found.size - 1e-9)
        wanted = f"validation recall >= {target_recall:g}"
    else:
        # The lower bound grows with the count found: the smallest count whose bound reaches the target.
        k = next(
            (
                j
                for j in range(1, found.size + 1)
                if recall_lower_bound(j, found.size, confidence) >= float(target_recall)
            ),
            found.size + 1,
        )
        wanted = (
            f"validation recall's {100 * float(confidence):g}% lower bound (Clopper-Pearson, "
            f"{found.size} to find) >= {target_recall:g}"
        )
        if k <= found.size:
            wanted += f", i.e. validation recall >= {k}/{found.size} = {k / found.size:.3f}"
    if k <= found.size and np.isfinite(found[k - 1]):
        return float(found[k - 1]), f"highest score with {wanted}"
    low = float(scores.min()) if scores.size else math.inf
    return low, f"{wanted} not reachable: lowest validation score (most recall)"


def summarise_matches(matches: list[dict], threshold: float) -> dict:
    """Precision, recall, false alarms and IoU of matched predictions at one threshold.

    Parameters
    ----------
    matches : list of dict
        One :func:`match_predictions` result per image.
    threshold : float
        Predictions scoring below it are dropped (``-inf`` keeps them all).

    Returns
    -------
    dict
        The pooled counts and rates (the row values of :func:`evaluate_methods`).
    """
    n_sel = n_real = n_true = n_found = 0
    ious = []
    for m in matches:
        selected = m["score"] >= threshold
        n_sel += int(selected.sum())
        n_real += int((selected & m["real"]).sum())
        n_true += m["n_true"]
        # Best IoU of the selected predictions matched to each truth entry; an
        # entry matched within match_radius is found even when its IoU is 0.
        best = np.full(m["wanted"].size, -np.inf)
        for t, s, v in zip(m["truth_index"], selected, m["iou"]):
            if t >= 0 and s:
                best[t] = max(best[t], v)
        found = m["wanted"] & np.isfinite(best)
        n_found += int(found.sum())
        ious.extend(best[found].tolist())
    n_images = len(matches)
    return {
        "n_images": n_images,
        "n_true": n_true,
        "n_found": n_found,
        "n_selected": n_sel,
        "n_false": n_sel - n_real,
        "precision": n_real / n_sel if n_sel else math.nan,
        "recall": n_found / n_true if n_true else math.nan,
        "false_alarms_per_image": (n_sel - n_real) / n_images if n_images else math.nan,
        "iou_median": float(np.median(ious)) if ious else math.nan,
    }


# --------------------------------------------------------------------------- #
# the table
# --------------------------------------------------------------------------- #


def _run(method, fields):
    out, seconds = [], []
    uses = getattr(method, "uses", None)
    for f in fields:
        started = time.perf_counter()
        predictions = method(f)
        elapsed = time.perf_counter() - started
        table = predictions[0] if isinstance(predictions, tuple) else predictions
        shared = (
            float(getattr(table, "meta", {}).get("shared_seconds", 0.0))
            if isinstance(table, Table)
            else 0.0
        )
        seconds.append(elapsed + shared + (float(f.seconds.get(uses, 0.0)) if uses else 0.0))
        out.append(predictions)
    return out, seconds


def _check_evaluation(methods, validation, test, thresholds):
    """(validation, test, thresholds) as lists and a dict, checked: callables, Fields, no test field
    among the validation fields, thresholds only for known methods."""
    if not isinstance(methods, dict) or not methods:
        raise AstridInputError("methods: expected a non-empty dict {name: callable}")
    for name, method in methods.items():
        if not callable(method):
            raise AstridInputError(f"methods[{name!r}]: not callable")
    validation, test = list(validation), list(test)
    for label, fields in (("validation", validation), ("test", test)):
        if not fields:
            raise AstridInputError(f"{label}: no fields")
        for i, f in enumerate(fields):
            if not isinstance(f, Field):
                raise AstridInputError(
                    f"{label}[{i}]: expected an astrid.anomaly.Field, got {type(f).__name__}"
                )
    names_val = {f.name for f in validation}
    overlap = names_val & {f.name for f in test}
    if overlap:
        raise AstridInputError(
            f"test: fields {sorted(overlap)} are also validation fields; thresholds must not see test data"
        )
    thresholds = dict(thresholds or {})
    unknown = set(thresholds) - set(methods)
    if unknown:
        raise AstridInputError(f"thresholds: no method named {sorted(unknown)}")
    return validation, test, thresholds


def _method_row(name, method, fields, rule, match: MatchOptions) -> dict:
    """One row of :func:`evaluate_methods`' table.

    ``fields``: (validation, test); ``rule``: (given threshold or None, target recall, confidence).
    """
    validation, test = fields
    given, target_recall, confidence = rule
    kwargs = match.keywords()
    if given is not None:
        threshold, rule_name = float(given), "given"
        val_matches = None
    else:
        val_predictions, _ = _run(method, validation)
        val_matches = [
            match_predictions(p, f, **kwargs) for p, f in zip(val_predictions, validation)
        ]
        threshold, rule_name = choose_threshold(val_matches, target_recall, confidence)
    test_predictions, seconds = _run(method, test)
    matches = [match_predictions(p, f, **kwargs) for p, f in zip(test_predictions, test)]
    summary = summarise_matches(matches, threshold)
    val = summarise_matches(val_matches, threshold) if val_matches is not None else {}
    return {
        "method": name,
        "kind": matches[0]["kind"],
        "precision": summary["precision"],
        "recall": summary["recall"],
        "iou_median": summary["iou_median"],
        "false_alarms_per_image": summary["false_alarms_per_image"],
        "seconds_per_image": float(np.mean(seconds)),
        "threshold": threshold,
        "threshold_rule": rule_name,
        "val_recall": val.get("recall", math.nan),
        "val_false_alarms_per_image": val.get("false_alarms_per_image", math.nan),
        "n_images": summary["n_images"],
        "n_true": summary["n_true"],
        "n_found": summary["n_found"],
        "n_selected": summary["n_selected"],
        "n_false": summary["n_false"],
    }


def evaluate_methods(
    methods: dict[str, Callable],
    validation,
    test,
    *,
    target_recall: float = 0.9,
    confidence: float | None = None,
    thresholds: dict[str, float] | None = None,
    match: MatchOptions | None = None,
    dataset: str = "",
) -> Table:
    """Precision, recall, localisation, false alarms and time of several methods on one dataset.

    Parameters
    ----------
    methods : dict of str to callable
        ``{row name: method}``; each ``method(field)`` returns a Table of
        predictions (``x``, ``y``, ``score``) or ``(table, labels)`` for a
        map method (module docstring). An attribute ``method.uses`` of
        ``"zogy"`` or ``"classic"`` adds that difference's time to the
        method's seconds per image.
    validation : sequence of Field
        Fields on which each threshold is chosen (never the test fields).
    test : sequence of Field
        Held-out fields on which the table's numbers are measured.
    target_recall : float, optional
        Threshold rule: highest score with validation recall ≥ this (0.9).
    confidence : float or None, optional
        With a value (e.g. 0.95), the threshold rule asks the validation
        recall's one-sided Clopper–Pearson lower bound at this confidence to
        reach ``target_recall`` instead (:func:`choose_threshold`): a margin
        for the validation count's binomial uncertainty. ``None`` (default):
        no margin.
    thresholds : dict of str to float, optional
        Fixed thresholds for some methods (rule ``"given"``).
    match : MatchOptions, optional
        Which truth entries count (``snr_min`` 8, ``real_kinds``, ``edge``
        4 px) and the ``match_radius`` (3 px); default ``MatchOptions()``.
    dataset : str, optional
        Name recorded in ``meta``.

    Returns
    -------
    astropy.table.Table
        One row per method: ``method``, ``kind`` (map or points),
        ``precision``, ``recall``, ``iou_median``, ``false_alarms_per_image``,
        ``seconds_per_image``, ``threshold``, ``threshold_rule``,
        ``val_recall``, ``val_false_alarms_per_image``, ``n_images``,
        ``n_true``, ``n_found``, ``n_selected``, ``n_false``. ``meta`` holds
        the conventions (``iou_convention``, ``match_radius``, ``snr_min``,
        ``target_recall``, ``confidence``, ``real_kinds``, ``dataset``, ``n_validation``,
        image shapes).
    """
    match = MatchOptions() if match is None else match
    validation, test, thresholds = _check_evaluation(methods, validation, test, thresholds)
    rows = [
        _method_row(
            name,
            method,
            (validation, test),
            (thresholds.get(name), target_recall, confidence),
            match,
        )
        for name, method in methods.items()
    ]
    table = Table(rows=rows, names=list(rows[0]))
    table["seconds_per_image"].unit = "s"
    for col in (
        "precision",
        "recall",
        "iou_median",
        "false_alarms_per_image",
        "val_recall",
        "val_false_alarms_per_image",
    ):
        table[col].format = ".3f"
    table["seconds_per_image"].format = ".3f"
    table["threshold"].format = ".4g"
    table.meta.update(
        {
            "dataset": dataset,
            "n_validation": len(validation),
            "n_test": len(test),
            "shapes": sorted({tuple(f.shape) for f in test}),
            "target_recall": float(target_recall),
            "confidence": None if confidence is None else float(confidence),
            "snr_min": match.snr_min,
            "match_radius": float(match.match_radius),
            "real_kinds": ",".join(match.real_kinds),
            "iou_convention": "map methods: footprint IoU of the region with the truth disc of radius FWHM; "
            "point methods: IoU of circles of radius FWHM around prediction and truth",
            "threshold_convention": "chosen on validation fields only",
        }
    )
    return table


# --------------------------------------------------------------------------- #
# the project's methods
# --------------------------------------------------------------------------- #


def _detections(f: Field, which: str, threshold: float, negative: bool, neighbours: bool):
    """detect() on the field's ZOGY or classic result, cached with its time."""
    key = ("detect", which, float(threshold), bool(negative), bool(neighbours))
    if key not in f.cache:
        from ..triplets import detect

        result = f.result if which == "zogy" else f.classic
        if result is None:
            raise AstridInputError(f"field {f.name!r}: has no {which} difference result")
        started = time.perf_counter()
        table = detect(
            result,
            threshold=threshold,
            negative=negative,
            **({} if neighbours else {"reference_sources": False}),
        )
        f.cache[key] = (table, time.perf_counter() - started)
        return table, 0.0
    table, seconds = f.cache[key]
    return table, seconds


def _points(candidates, scores, shared: float) -> Table:
    out = Table()
    out["x"] = np.asarray(candidates["x"], float)
    out["y"] = np.asarray(candidates["y"], float)
    out["score"] = np.asarray(scores, float)
    out.meta["shared_seconds"] = float(shared)
    return out


def _threshold_method(which: str, detect_threshold: float, negative: bool):
    def method(f: Field):
        candidates, shared = _detections(f, which, detect_threshold, negative, neighbours=False)
        return _points(candidates, np.abs(np.asarray(candidates["score"], float)), shared)

    method.uses = which
    return method


def zogy_threshold_method(detect_threshold: float = 5.0, negative: bool = True):
    """ZOGY + threshold: :func:`~astrid.triplets.detect` peaks of ``S_corr``, scored by ``|S_corr|``.

    The threshold chosen by :func:`evaluate_methods` is then a cut in σ at
    or above ``detect_threshold``.

    Parameters
    ----------
    detect_threshold : float, optional
        Detection threshold of :func:`~astrid.triplets.detect`, in σ.
    negative : bool, optional
        Also detect negative peaks.

    Returns
    -------
    callable
        The method: takes a :class:`Field`, returns a table of ``x``, ``y``, ``score``.
    """
    return _threshold_method("zogy", detect_threshold, negative)


def classic_threshold_method(detect_threshold: float = 5.0, negative: bool = True):
    """Classic difference + threshold: the same on the classic result's ``S_corr`` (D / its noise).

    Parameters
    ----------
    detect_threshold : float, optional
        Detection threshold of :func:`~astrid.triplets.detect`, in σ.
    negative : bool, optional
        Also detect negative peaks.

    Returns
    -------
    callable
        The method: takes a :class:`Field`, returns a table of ``x``, ``y``, ``score``.
    """
    return _threshold_method("classic", detect_threshold, negative)


def unet_method(model, *, level: float = 0.5, tile: int | None = 512, batch_size: int = 4):
    """U-Net map → regions, each scored by its peak log-odds.

    The regions are those of :func:`~astrid.anomaly.unet.map_regions`.

    Parameters
    ----------
    model : keras.Model
        The trained U-Net.
    level : float, optional
        Probability level of the regions, in (0, 1).
    tile : int or None, optional
        Tile size in pixels for the map; ``None``: the whole image at once.
    batch_size : int, optional
        Tiles per prediction batch.

    Returns
    -------
    callable
        The method: takes a :class:`Field`, returns the regions table and their label image.
    """
    from .unet import map_regions, result_anomaly_map

    def method(f: Field):
        if f.result is None:
            raise AstridInputError(f"field {f.name!r}: has no ZOGY difference result for the U-Net")
        logit = result_anomaly_map(
            model, f.result, tile=tile, batch_size=batch_size, output="logit"
        )
        with np.errstate(over="ignore"):
            probability = (1.0 / (1.0 + np.exp(-logit.astype(np.float64)))).astype(np.float32)
        return map_regions(probability, level=level, logit=logit, return_labels=True)

    method.uses = "zogy"
    return method


def choose_region_level(
    model,
    fields,
    levels=(0.5, 0.7, 0.9, 0.95, 0.98),
    *,
    tile: int | None = 512,
    batch_size: int = 4,
    match_radius: float = 3.0,
    snr_min: float | None = 8.0,
    real_kinds=REAL_KINDS,
    edge: float = 4.0,
) -> tuple[float, Table]:
    """The U-Net's region level (:func:`unet_method`'s ``level``) that localises best on validation fields.

    The map is computed once per field; for each probability ``level`` the
    regions (:func:`~astrid.anomaly.unet.map_regions`) are matched to the
    truth as in :func:`evaluate_methods`, and the level with the highest
    median footprint IoU over the matched transients to find (any score) is
    chosen; ties go to the lowest level. Training weighs target pixels more
    than background, which pushes probabilities up at a source's edge, so
    the 0.5 contour need not be the footprint that matches the truth disc
    best. Use validation fields only, never the test fields.

    Parameters
    ----------
    model : keras.Model
        The trained U-Net.
    fields : sequence of Field
        Validation fields with a ZOGY ``result``.
    levels : sequence of float, optional
        Candidate levels in (0, 1).
    tile, batch_size : optional
        As :func:`unet_method`.
    match_radius, snr_min, real_kinds, edge : optional
        As :func:`evaluate_methods`.

    Returns
    -------
    level : float
        The chosen level.
    table : astropy.table.Table
        ``level``, ``iou_median``, ``n_found``, ``n_true``, ``n_regions`` per candidate level.
    """
    from .unet import map_regions, result_anomaly_map

    levels = [float(v) for v in np.atleast_1d(np.asarray(levels, dtype=float))]
    if not levels or not all(0.0 < v < 1.0 for v in levels):
        raise AstridInputError(f"levels={levels!r}: need one or more values in (0, 1)")
    fields = list(fields)
    if not fields:
        raise AstridInputError("fields: no fields")
    kwargs = {
        "match_radius": float(match_radius),
        "snr_min": snr_min,
        "real_kinds": tuple(real_kinds),
        "edge": float(edge),
    }
    matches = {v: [] for v in levels}
    for i, f in enumerate(fields):
        if not isinstance(f, Field) or f.result is None:
            raise AstridInputError(
                f"fields[{i}]: expected an astrid.anomaly.Field with a ZOGY result"
            )
        logit = result_anomaly_map(
            model, f.result, tile=tile, batch_size=batch_size, output="logit"
        )
        with np.errstate(over="ignore"):
            probability = (1.0 / (1.0 + np.exp(-logit.astype(np.float64)))).astype(np.float32)
        for v in levels:
            matches[v].append(
                match_predictions(
                    map_regions(probability, level=v, logit=logit, return_labels=True), f, **kwargs
                )
            )
    rows = []
    for v in levels:
        summary = summarise_matches(matches[v], -math.inf)
        rows.append(
            (v, summary["iou_median"], summary["n_found"], summary["n_true"], summary["n_selected"])
        )
    table = Table(rows=rows, names=("level", "iou_median", "n_found", "n_true", "n_regions"))
    table["iou_median"].format = ".3f"
    iou = np.where(np.isfinite(table["iou_median"]), table["iou_median"], -np.inf)
    best = int(np.argmax(iou))
    return float(levels[best]), table


def baseline_method(baseline, detect_threshold: float = 5.0, negative: bool = True):
    """A fitted feature baseline (:mod:`astrid.anomaly.baselines`) scoring ZOGY detections.

    Parameters
    ----------
    baseline : object
        A fitted baseline with a ``score(candidates)`` method.
    detect_threshold : float, optional
        Detection threshold of :func:`~astrid.triplets.detect`, in σ.
    negative : bool, optional
        Also detect negative peaks.

    Returns
    -------
    callable
        The method: takes a :class:`Field`, returns a table of ``x``, ``y``, ``score``.
    """

    def method(f: Field):
        candidates, shared = _detections(f, "zogy", detect_threshold, negative, neighbours=True)
        return _points(candidates, baseline.score(candidates), shared)

    method.uses = "zogy"
    return method


def braai_method(model, detect_threshold: float = 5.0, negative: bool = True):
    """ZOGY + braai: detections scored by a braai real/bogus model (:func:`astrid.braai.predict`).

    Parameters
    ----------
    model : keras.Model
        The braai model.
    detect_threshold : float, optional
        Detection threshold of :func:`~astrid.triplets.detect`, in σ.
    negative : bool, optional
        Also detect negative peaks.

    Returns
    -------
    callable
        The method: takes a :class:`Field`, returns a table of ``x``, ``y``, ``score``.
    """

    def method(f: Field):
        from ..braai import predict
        from ..triplets import make_triplets

        candidates, shared = _detections(f, "zogy", detect_threshold, negative, neighbours=True)
        if len(candidates) == 0:
            return _points(candidates, np.empty(0), shared)
        scores = predict(model, make_triplets(f.result, candidates))
        return _points(candidates, np.asarray(scores, float).reshape(-1), shared)

    method.uses = "zogy"
    return method


def plot_methods(table: Table, title: str | None = None):
    """Figure of an :func:`evaluate_methods` table: precision, recall and IoU per method, and false alarms per image.

    Parameters
    ----------
    table : astropy.table.Table
        From :func:`evaluate_methods`.
    title : str, optional
        Default: the table's ``dataset``.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    import matplotlib.pyplot as plt

    for col in ("method", "precision", "recall", "iou_median", "false_alarms_per_image"):
        if col not in table.colnames:
            raise AstridInputError(
                f"table: no column {col!r}; pass the table of evaluate_methods()"
            )
    names = [str(m) for m in table["method"]]
    y = np.arange(len(names))
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(10.0, 0.45 * len(names) + 2.0),
        sharey=True,
        gridspec_kw={"width_ratios": [1.4, 1]},
    )
    for k, (col, label) in enumerate(
        (("precision", "precision"), ("recall", "recall"), ("iou_median", "IoU (median)"))
    ):
        left.barh(
            y + (k - 1) * 0.27, np.nan_to_num(np.asarray(table[col], float)), 0.27, label=label
        )
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlim(0, 1.0)
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncols=3, fontsize=8, frameon=False)
    alarms = np.asarray(table["false_alarms_per_image"], float)
    right.barh(y, np.maximum(alarms, 1e-2), 0.6, color="0.5")
    right.set_xscale("log")
    right.axvline(1.0, color="k", lw=0.8, ls="--")
    right.set_xlabel("false alarms per image")
    fig.suptitle(title if title is not None else str(table.meta.get("dataset", "")), fontsize=10)
    fig.tight_layout()
    return fig
