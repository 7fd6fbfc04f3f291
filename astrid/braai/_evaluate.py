"""Honest evaluation of a real/bogus classifier: operating points, calibration, what fools it.

:func:`evaluate` turns scores and labels into one JSON-serialisable dict:
precision, recall and F1 at a threshold; threshold-free summaries (average
precision, ROC AUC); the operating point ZTF chose (the highest threshold
that misses at most ``target_fnr`` of the real transients) and the
equal-error point; the confusion matrix; a reliability curve with its
expected calibration error; and breakdowns by artifact kind and by S/N.
The ``plot_*`` functions draw these dicts in AstrID's figure style.

Conventions: label 1 is real, 0 is bogus; a candidate is called real when
its score is **at or above** the threshold (as scikit-learn's curves do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..errors import AstridInputError

__all__ = [
    "evaluate",
    "binary_curves",
    "threshold_for_fnr",
    "calibration_curve",
    "plot_roc_pr",
    "plot_score_histograms",
    "plot_calibration",
    "plot_triplet_gallery",
    "DEFAULT_SNR_BINS",
    "SNR_COORDS",
]

#: Edges of the S/N bins of the recall breakdown (the last bin is open).
DEFAULT_SNR_BINS = (0.0, 5.0, 7.0, 10.0, 15.0, 25.0, 50.0, math.inf)
#: Coordinates searched, in order, for a candidate's S/N when ``snr`` is not given.
SNR_COORDS = ("snr", "snr_sci", "truth_snr", "score")
# Curves stored in the result are thinned to about this many points (plots and JSON stay small).
_MAX_CURVE_POINTS = 400


def _number(value) -> float | None:
    """A JSON-friendly float: None for NaN or infinity."""
    value = float(value)
    return value if math.isfinite(value) else None


def labels_of(dataset, name: str = "dataset") -> np.ndarray:
    """The 0/1 labels of a triplet set, a mapping with ``label`` or an array, checked.

    Parameters
    ----------
    dataset : xarray.Dataset, mapping or array-like
        Where the labels are: a ``label`` coordinate or variable, a
        ``"label"`` entry, or the labels themselves (one per candidate).
    name : str, optional
        What to call ``dataset`` in error messages.

    Returns
    -------
    numpy.ndarray of int8, shape (n_candidates,)
        1 real, 0 bogus.

    Raises
    ------
    AstridInputError
        No labels, not one per candidate, or a value other than 0 and 1.
    """
    if isinstance(dataset, xr.Dataset):
        if "label" not in dataset.coords and "label" not in dataset.data_vars:
            raise AstridInputError(
                f"{name}: no 'label' coordinate (1 real, 0 bogus) to evaluate against"
            )
        labels = np.asarray(dataset["label"].values)
    elif isinstance(dataset, Mapping):
        if "label" not in dataset:
            raise AstridInputError(
                f"{name}: no 'label' entry (1 real, 0 bogus) to evaluate against"
            )
        labels = np.asarray(dataset["label"])
    else:
        labels = np.asarray(dataset)
    if labels.ndim != 1:
        raise AstridInputError(
            f"{name}: labels must be one value per candidate, got shape {labels.shape}"
        )
    if labels.dtype == bool:
        labels = labels.astype(np.int8)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise AstridInputError(
            f"{name}: labels must be 0 (bogus) or 1 (real), got dtype {labels.dtype}"
        )
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise AstridInputError(
            f"{name}: labels must be 0 (bogus) or 1 (real); found {np.unique(labels[bad])[:5].tolist()}"
        )
    return labels.astype(np.int8)


def _column(dataset, names: Sequence[str]) -> tuple[str | None, np.ndarray | None]:
    for name in names:
        if isinstance(dataset, xr.Dataset) and (
            name in dataset.coords or name in dataset.data_vars
        ):
            return name, np.asarray(dataset[name].values)
        if isinstance(dataset, Mapping) and name in dataset:
            return name, np.asarray(dataset[name])
    return None, None


def _check_scores(scores, n: int, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1 or scores.size != n:
        raise AstridInputError(
            f"{name}: expected {n} scores (one per candidate), got shape {scores.shape}"
        )
    if not np.isfinite(scores).all():
        raise AstridInputError(
            f"{name}: {int((~np.isfinite(scores)).sum())} score(s) are NaN or infinite"
        )
    return scores


def check_both_classes(labels: np.ndarray, name: str) -> None:
    """Raise AstridInputError naming ``name`` unless ``labels`` (0/1, shape (n,)) hold both classes."""
    n_real = int(labels.sum())
    if n_real == 0 or n_real == labels.size:
        missing = "real (label 1)" if n_real == 0 else "bogus (label 0)"
        raise AstridInputError(
            f"{name}: no {missing} examples among {labels.size}; precision, recall and the curves "
            "need both classes"
        )


def binary_curves(labels, scores) -> dict[str, np.ndarray]:
    """Counts of true and false positives at every distinct score threshold.

    Parameters
    ----------
    labels : array-like of {0, 1}, shape (n,)
        True classes: 1 real, 0 bogus.
    scores : array-like of float, shape (n,)
        Model scores; higher means more likely real.

    Returns
    -------
    dict of numpy.ndarray
        ``thresholds`` (distinct scores, decreasing), ``tp`` and ``fp``
        (candidates at or above each threshold that are real / bogus),
        ``fpr``, ``tpr`` (ROC, each starting at 0), ``precision`` and
        ``recall`` (at each threshold), as in scikit-learn's
        ``roc_curve`` / ``precision_recall_curve`` without dropping points.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="mergesort")
    ordered = scores[order]
    hits = labels[order]
    # last index of each run of equal scores
    ends = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    tp = np.cumsum(hits)[ends]
    fp = ends + 1 - tp
    n_real, n_bogus = int(labels.sum()), int(labels.size - labels.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / n_real if n_real else np.full(tp.shape, np.nan)
        fpr = np.r_[0.0, fp / n_bogus] if n_bogus else np.full(tp.size + 1, np.nan)
        tpr = np.r_[0.0, tp / n_real] if n_real else np.full(tp.size + 1, np.nan)
    return {
        "thresholds": ordered[ends],
        "tp": tp,
        "fp": fp,
        "fpr": fpr,
        "tpr": tpr,
        "precision": precision,
        "recall": recall,
    }


def threshold_for_fnr(labels, scores, target_fnr: float = 0.02) -> float:
    """Highest threshold that misses at most ``target_fnr`` of the real candidates.

    A real candidate is missed when its score is below the threshold. With
    ``P`` real candidates at most ``k = floor(target_fnr * P)`` may be
    missed, so the threshold is the ``(k + 1)``-th lowest real score.

    Parameters
    ----------
    labels : array-like of {0, 1}, shape (n,)
        True classes: 1 real, 0 bogus.
    scores : array-like of float, shape (n,)
        Model scores; candidates at or above the threshold are called real.
    target_fnr : float, optional
        Largest allowed false-negative rate, in [0, 1).

    Returns
    -------
    float
        The threshold (a score value).
    """
    if not 0.0 <= float(target_fnr) < 1.0:
        raise AstridInputError(f"target_fnr={target_fnr!r} must be a fraction in [0, 1)")
    labels = np.asarray(labels)
    real = np.sort(np.asarray(scores, dtype=float)[labels == 1])
    if real.size == 0:
        raise AstridInputError(
            "labels: no real (label 1) candidates to set a false-negative rate on"
        )
    # A small tolerance so that e.g. 0.02 * 50 counts as exactly one allowed miss.
    allowed = int(math.floor(float(target_fnr) * real.size + 1e-9))
    return float(real[min(allowed, real.size - 1)])


def _rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FPR, FNR) when candidates scoring >= threshold are called real."""
    called = scores >= threshold
    real = labels == 1
    return float(called[~real].mean()), float((~called[real]).mean())


def _equal_error(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Threshold where FPR and FNR are closest, and their mean there."""
    real = np.sort(scores[labels == 1])
    bogus = np.sort(scores[labels == 0])
    candidates = np.unique(scores)
    fnr = np.searchsorted(real, candidates, side="left") / real.size
    fpr = 1.0 - np.searchsorted(bogus, candidates, side="left") / bogus.size
    gap = np.abs(fpr - fnr)
    # Among equally close points prefer the one with the lower worse rate.
    best = np.lexsort((np.maximum(fpr, fnr), gap))[0]
    return float(candidates[best]), float(0.5 * (fpr[best] + fnr[best]))


def calibration_curve(labels, scores, n_bins: int = 10) -> dict[str, Any]:
    """Reliability curve and expected calibration error of scores in [0, 1].

    The scores are put into ``n_bins`` equal-width bins (a score on a bin
    edge goes to the lower bin, as in scikit-learn's ``calibration_curve``).

    Parameters
    ----------
    labels : array-like of {0, 1}, shape (n,)
        True classes: 1 real, 0 bogus.
    scores : array-like of float in [0, 1], shape (n,)
        Model scores, read as probabilities of being real.
    n_bins : int, optional
        Number of equal-width bins over [0, 1] (default 10).

    Returns
    -------
    dict
        ``edges`` (n_bins + 1), per bin ``count``, ``mean_score`` and
        ``fraction_real`` (None for empty bins), and ``ece``:
        sum over bins of ``count / n * |fraction_real - mean_score|``.
    """
    n_bins = int(n_bins)
    if n_bins < 1:
        raise AstridInputError(f"n_bins={n_bins!r} must be a positive integer")
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        raise AstridInputError("scores: a calibration curve needs scores in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], scores, side="left")
    count = np.bincount(which, minlength=n_bins)
    score_sum = np.bincount(which, weights=scores, minlength=n_bins)
    real_sum = np.bincount(which, weights=labels, minlength=n_bins)
    filled = count > 0
    mean_score = np.where(filled, score_sum / np.maximum(count, 1), np.nan)
    fraction_real = np.where(filled, real_sum / np.maximum(count, 1), np.nan)
    ece = float(
        np.sum(count[filled] / scores.size * np.abs(fraction_real[filled] - mean_score[filled]))
    )
    return {
        "edges": [float(e) for e in edges],
        "count": [int(c) for c in count],
        "mean_score": [_number(v) for v in mean_score],
        "fraction_real": [_number(v) for v in fraction_real],
        "ece": ece,
    }


def _thin(*arrays: np.ndarray, max_points: int = _MAX_CURVE_POINTS) -> list[list[float | None]]:
    n = arrays[0].size
    if n > max_points:
        keep = np.unique(np.r_[np.linspace(0, n - 1, max_points).round().astype(int), n - 1])
    else:
        keep = np.arange(n)
    return [[_number(v) for v in a[keep]] for a in arrays]


def _by_kind(
    kinds: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, dict]:
    out: dict[str, dict] = {}
    kinds = np.array([str(k).strip() for k in kinds.tolist()])
    for kind in np.unique(kinds):
        here = kinds == kind
        n_real = int(labels[here].sum())
        out[str(kind)] = {
            "n": int(here.sum()),
            "n_real": n_real,
            "n_bogus": int(here.sum()) - n_real,
            "fraction_above_threshold": float((scores[here] >= threshold).mean()),
            "mean_score": float(scores[here].mean()),
            "median_score": float(np.median(scores[here])),
        }
    return out


def _by_survey(
    surveys: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, dict]:
    """Per-survey figures, for models trained on one survey and tested on another."""
    out: dict[str, dict] = {}
    surveys = np.array([str(s) for s in surveys.tolist()])
    for survey in np.unique(surveys):
        here = surveys == survey
        lab, sc = labels[here], scores[here]
        real = lab == 1
        called = sc >= threshold
        n_real = int(real.sum())
        n_bogus = int(here.sum()) - n_real
        tp = int((called & real).sum())
        fp = int((called & ~real).sum())
        both = n_real > 0 and n_bogus > 0
        curves = binary_curves(lab, sc) if both else None
        out[str(survey)] = {
            "n": int(here.sum()),
            "n_real": n_real,
            "n_bogus": n_bogus,
            "recall": tp / n_real if n_real else None,
            "fpr": fp / n_bogus if n_bogus else None,
            "precision": tp / (tp + fp) if tp + fp else None,
            "aucpr": float(np.sum(np.diff(np.r_[0.0, curves["recall"]]) * curves["precision"]))
            if both
            else None,
            "roc_auc": float(np.trapezoid(curves["tpr"], curves["fpr"])) if both else None,
            "median_score": float(np.median(sc)),
        }
    return out


def _by_snr(
    snr: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float, edges
) -> list[dict]:
    edges = np.asarray(edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise AstridInputError(f"snr_bins={list(edges)} must be at least two increasing edges")
    real = labels == 1
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        here = real & (snr >= lo) & (snr < hi)
        n = int(here.sum())
        rows.append(
            {
                "lo": _number(lo),
                "hi": _number(hi),
                "n": n,
                "recall": float((scores[here] >= threshold).mean()) if n else None,
                "median_score": float(np.median(scores[here])) if n else None,
            }
        )
    return rows


def evaluate(
    model,
    dataset,
    *,
    threshold: float = 0.5,
    target_fnr: float = 0.02,
    norm: str | None = None,
    scores=None,
    snr: str | None = None,
    snr_bins: Sequence[float] = DEFAULT_SNR_BINS,
    n_calibration_bins: int = 10,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Score a labelled triplet set and report how well a real/bogus model separates it.

    Parameters
    ----------
    model : keras.Model or None
        The classifier; may be None when ``scores`` are given.
    dataset : xarray.Dataset, mapping or array-like
        Triplets with a ``label`` coordinate (1 real, 0 bogus) and,
        optionally, ``kind`` (artifact or transient kind) and an S/N
        coordinate; or a mapping with the same entries (``label``, ``kind``,
        ``snr``); or just the labels (then ``scores`` are required).
    threshold : float, optional
        Score at or above which a candidate is called real (default 0.5).
    target_fnr : float, optional
        Largest false-negative rate allowed at the ZTF-style operating point
        (default 0.02: miss at most 2 % of the real transients).
    norm : {"rowwise", "l2"}, optional
        Preprocessing for ``model``; default the model's own
        (:func:`~astrid.braai.predict`).
    scores : array-like, shape (n,), optional
        Scores already computed (the model is then not run).
    snr : str, optional
        Coordinate holding each candidate's S/N, for the recall-by-S/N
        breakdown; default the first of :data:`SNR_COORDS` present.
    snr_bins : sequence of float, optional
        Edges of the S/N bins (:data:`DEFAULT_SNR_BINS`).
    n_calibration_bins : int, optional
        Bins of the reliability curve (default 10).
    batch_size : int, optional
        Triplets per forward pass when the model is run.

    Returns
    -------
    dict
        JSON-serialisable (undefined values are None):

        - ``n``, ``n_real``, ``n_bogus``, ``threshold``, ``target_fnr``;
        - at ``threshold``: ``precision``, ``recall``, ``f1``, ``fpr``,
          ``fnr``, ``accuracy``, ``confusion`` (``tn, fp, fn, tp`` and
          ``matrix`` = [[tn, fp], [fn, tp]], rows true bogus/real);
        - ``aucpr`` (average precision, scikit-learn's definition) and
          ``roc_auc``;
        - ``threshold_at_target_fnr`` with ``fnr_at_target`` (achieved,
          <= ``target_fnr``) and ``fpr_at_target``;
        - ``eer_threshold`` and ``eer`` (equal-error point);
        - ``calibration`` (:func:`calibration_curve`; None when scores leave
          [0, 1]) and ``ece``;
        - ``by_kind``: per ``kind`` value ``n``, ``n_real``, ``n_bogus``,
          ``fraction_above_threshold`` (recall for a real kind, false-positive
          rate for an artifact kind), ``mean_score``, ``median_score``;
        - ``by_survey``: when the dataset has a ``survey`` coordinate (as
          :func:`astrid.alerts.read_alerts` writes), per survey ``n``,
          ``n_real``, ``n_bogus``, ``recall``, ``fpr``, ``precision``
          (None where undefined), ``aucpr`` and ``roc_auc`` (None unless the
          survey has both classes) and ``median_score``; None otherwise;
        - ``by_snr``: for real candidates, per S/N bin ``lo``, ``hi``, ``n``,
          ``recall``, ``median_score``; ``snr_coordinate`` names the
          coordinate used (None: no breakdown);
        - ``roc`` (``fpr``, ``tpr``) and ``pr`` (``recall``, ``precision``)
          curves thinned to a few hundred points, for plotting.

    Raises
    ------
    AstridInputError
        No labels, labels other than 0/1, only one class, scores of the
        wrong length or not finite, neither model nor scores given,
        triplets of the wrong shape.
    """
    labels = labels_of(dataset)
    check_both_classes(labels, "dataset")
    scores = _scores_of(model, dataset, scores, norm, batch_size, labels.size)
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise AstridInputError(f"threshold={threshold!r} must be a finite number")

    curves = binary_curves(labels, scores)
    recall_steps = np.diff(np.r_[0.0, curves["recall"]])
    aucpr = float(np.sum(recall_steps * curves["precision"]))
    roc_auc = float(np.trapezoid(curves["tpr"], curves["fpr"]))

    target_threshold = threshold_for_fnr(labels, scores, target_fnr)
    fpr_target, fnr_target = _rates(labels, scores, target_threshold)
    eer_threshold, eer = _equal_error(labels, scores)

    in_unit = bool(scores.min() >= 0.0 and scores.max() <= 1.0)
    calibration = calibration_curve(labels, scores, n_calibration_bins) if in_unit else None

    roc_fpr, roc_tpr = _thin(curves["fpr"], curves["tpr"])
    pr_recall, pr_precision = _thin(np.r_[0.0, curves["recall"]], np.r_[1.0, curves["precision"]])
    return {
        **_at_threshold(labels, scores, threshold, target_fnr),
        "aucpr": aucpr,
        "roc_auc": roc_auc,
        "threshold_at_target_fnr": target_threshold,
        "fnr_at_target": fnr_target,
        "fpr_at_target": fpr_target,
        "eer_threshold": eer_threshold,
        "eer": eer,
        "calibration": calibration,
        "ece": calibration["ece"] if calibration else None,
        **_breakdowns(dataset, labels, scores, threshold, snr, snr_bins),
        "roc": {"fpr": roc_fpr, "tpr": roc_tpr},
        "pr": {"recall": pr_recall, "precision": pr_precision},
    }


def _scores_of(model, dataset, scores, norm: str | None, batch_size: int, n: int) -> np.ndarray:
    """The given scores, checked, or the model's scores of ``dataset`` when none are given."""
    if scores is None:
        if model is None:
            raise AstridInputError("evaluate: give a model or precomputed scores")
        if not isinstance(dataset, xr.Dataset):
            raise AstridInputError(
                f"evaluate: running the model needs a triplet xarray.Dataset, got {type(dataset).__name__}"
            )
        from ._load import predict

        scores = predict(model, dataset, norm=norm, batch_size=batch_size)
    return _check_scores(scores, n)


def _at_threshold(
    labels: np.ndarray, scores: np.ndarray, threshold: float, target_fnr: float
) -> dict:
    """Counts, the confusion matrix and the rates of the calls ``scores >= threshold``."""
    called = scores >= threshold
    real = labels == 1
    tp = int(np.sum(called & real))
    fp = int(np.sum(called & ~real))
    fn = int(np.sum(~called & real))
    tn = int(np.sum(~called & ~real))
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn)
    f1 = 2 * tp / (2 * tp + fp + fn)
    return {
        "n": int(labels.size),
        "n_real": int(real.sum()),
        "n_bogus": int((~real).sum()),
        "threshold": threshold,
        "target_fnr": float(target_fnr),
        "precision": _number(precision),
        "recall": float(recall),
        "f1": float(f1),
        "fpr": fp / (fp + tn),
        "fnr": fn / (fn + tp),
        "accuracy": (tp + tn) / labels.size,
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "matrix": [[tn, fp], [fn, tp]]},
    }


def _breakdowns(
    dataset,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    snr: str | None,
    snr_bins: Sequence[float],
) -> dict:
    """The results by kind, by survey and by S/N bin, where ``dataset`` has those coordinates."""
    kind_name, kinds = _column(dataset, ("kind",))
    _, surveys = _column(dataset, ("survey",))
    snr_name, snr_values = _column(dataset, (snr,) if snr else SNR_COORDS)
    if snr and snr_values is None:
        raise AstridInputError(f"dataset: no coordinate {snr!r} for the S/N breakdown")
    by_snr = None
    if snr_values is not None:
        by_snr = _by_snr(np.asarray(snr_values, dtype=float), labels, scores, threshold, snr_bins)
    return {
        "by_kind": _by_kind(kinds, labels, scores, threshold) if kinds is not None else None,
        "kind_coordinate": kind_name,
        "by_survey": _by_survey(surveys, labels, scores, threshold)
        if surveys is not None
        else None,
        "by_snr": by_snr,
        "snr_coordinate": snr_name,
    }


# --------------------------------------------------------------------------- #
# figures
# --------------------------------------------------------------------------- #


def _as_results(results) -> list[dict]:
    if isinstance(results, Mapping):
        return [results]
    results = list(results)
    for i, result in enumerate(results):
        if not isinstance(result, Mapping) or "roc" not in result or "pr" not in result:
            raise AstridInputError(f"results[{i}]: expected a dict returned by evaluate()")
    return results


def _names(results, labels) -> list[str]:
    if labels is None:
        return [f"model {i + 1}" if len(results) > 1 else "model" for i in range(len(results))]
    labels = [str(label) for label in labels]
    if len(labels) != len(results):
        raise AstridInputError(f"labels: {len(labels)} names for {len(results)} results")
    return labels


def plot_roc_pr(*results, labels: Sequence[str] | None = None, log_fpr: bool = True):
    """ROC and precision-recall curves of one or more :func:`evaluate` results.

    Parameters
    ----------
    *results : dict
        Results of :func:`evaluate` (or one list of them).
    labels : sequence of str, optional
        Legend names, one per result.
    log_fpr : bool, optional
        Logarithmic false-positive-rate axis (default), where the
        low-FPR region that matters for alert streams is visible.

    Returns
    -------
    matplotlib.figure.Figure
        Left: ROC (false-positive rate vs recall) with the operating points
        at ``threshold`` (circle) and at the target FNR (square). Right:
        precision vs recall with the point at ``threshold``.
    """
    from ..figures import pyplot, style

    if len(results) == 1 and not isinstance(results[0], Mapping):
        results = tuple(results[0])
    results = _as_results(results)
    if not results:
        raise AstridInputError("plot_roc_pr: no results to plot")
    names = _names(results, labels)
    plt = pyplot()
    with style():
        fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(7.2, 3.3), constrained_layout=True)
        for i, (result, name) in enumerate(zip(results, names)):
            color = f"C{i}"
            fpr = np.array(result["roc"]["fpr"], dtype=float)
            tpr = np.array(result["roc"]["tpr"], dtype=float)
            floor = 0.5 / max(result["n_bogus"], 1)
            x = np.maximum(fpr, floor) if log_fpr else fpr
            ax_roc.plot(x, tpr, color=color, lw=1.2, label=f"{name} (AUC {result['roc_auc']:.4f})")
            ax_roc.plot(
                max(result["fpr"], floor) if log_fpr else result["fpr"],
                1 - result["fnr"],
                "o",
                color=color,
                ms=4,
            )
            ax_roc.plot(
                max(result["fpr_at_target"], floor) if log_fpr else result["fpr_at_target"],
                1 - result["fnr_at_target"],
                "s",
                color=color,
                ms=4,
                mfc="none",
            )
            ax_pr.plot(
                result["pr"]["recall"],
                result["pr"]["precision"],
                color=color,
                lw=1.2,
                label=f"{name} (AP {result['aucpr']:.4f})",
            )
            if result["precision"] is not None:
                ax_pr.plot(result["recall"], result["precision"], "o", color=color, ms=4)
        if log_fpr:
            ax_roc.set_xscale("log")
        ax_roc.set_xlabel("false-positive rate")
        ax_roc.set_ylabel("recall (true-positive rate)")
        ax_roc.set_title(
            f"ROC (o: threshold {results[0]['threshold']:g}; □: FNR ≤ {results[0]['target_fnr']:g})"
        )
        ax_roc.legend(loc="lower right")
        ax_pr.set_xlabel("recall")
        ax_pr.set_ylabel("precision")
        ax_pr.set_title("precision-recall")
        ax_pr.legend(loc="lower left")
        for ax in (ax_roc, ax_pr):
            ax.grid(alpha=0.3, lw=0.5)
    return fig


def plot_score_histograms(
    scores, labels, *, threshold: float | None = 0.5, bins: int = 40, kinds=None, log: bool = True
):
    """Score histograms by class (and, optionally, by bogus kind).

    Parameters
    ----------
    scores : array-like, shape (n,)
        Model scores in [0, 1].
    labels : array-like of {0, 1}, shape (n,)
        True classes: 1 real, 0 bogus.
    threshold : float or None, optional
        Drawn as a vertical line.
    bins : int, optional
        Number of bins over [0, 1].
    kinds : array-like of str, shape (n,), optional
        Artifact kinds; adds a second panel with one histogram per bogus kind.
    log : bool, optional
        Logarithmic counts (default): the few bogus candidates with high
        scores are what matters.

    Returns
    -------
    matplotlib.figure.Figure
        One panel of bogus and real score histograms, and with ``kinds`` a
        second panel with one histogram per bogus kind.
    """
    from ..figures import pyplot, style

    labels = labels_of(labels, "labels")
    scores = _check_scores(scores, labels.size)
    edges = np.linspace(min(0.0, scores.min()), max(1.0, scores.max()), int(bins) + 1)
    plt = pyplot()
    with style():
        ncols = 2 if kinds is not None else 1
        fig, axes = plt.subplots(
            1, ncols, figsize=(3.6 * ncols, 3.0), constrained_layout=True, squeeze=False
        )
        ax = axes[0, 0]
        ax.hist(
            scores[labels == 0],
            bins=edges,
            histtype="step",
            lw=1.2,
            color="C3",
            label=f"bogus (n={int((labels == 0).sum())})",
        )
        ax.hist(
            scores[labels == 1],
            bins=edges,
            histtype="step",
            lw=1.2,
            color="C0",
            label=f"real (n={int((labels == 1).sum())})",
        )
        ax.set_title("scores by class")
        if kinds is not None:
            kinds = np.array([str(k).strip() for k in np.asarray(kinds).tolist()])
            if kinds.size != labels.size:
                raise AstridInputError(f"kinds: expected {labels.size} values, got {kinds.size}")
            axk = axes[0, 1]
            bogus_kinds = [k for k in np.unique(kinds[labels == 0])]
            for j, kind in enumerate(bogus_kinds):
                here = (kinds == kind) & (labels == 0)
                axk.hist(
                    scores[here],
                    bins=edges,
                    histtype="step",
                    lw=1.0,
                    color=f"C{j % 10}",
                    label=f"{kind} ({int(here.sum())})",
                )
            axk.set_title("bogus scores by kind")
        for ax in axes[0]:
            if threshold is not None:
                ax.axvline(float(threshold), color="k", ls="--", lw=0.8)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("score")
            ax.set_ylabel("candidates")
            ax.legend(loc="upper center", fontsize=7)
    return fig


def plot_calibration(*results, labels: Sequence[str] | None = None):
    """Reliability curves (fraction real vs mean score per bin) of :func:`evaluate` results.

    Parameters
    ----------
    *results : dict
        Results of :func:`evaluate` (or one list of them), each with a
        calibration (scores in [0, 1]).
    labels : sequence of str, optional
        Legend names, one per result.

    Returns
    -------
    matplotlib.figure.Figure
        Top: the reliability curves with the diagonal of perfect
        calibration, ECE in the legend. Bottom: candidates per bin.
    """
    from ..figures import pyplot, style

    if len(results) == 1 and not isinstance(results[0], Mapping):
        results = tuple(results[0])
    results = _as_results(results)
    names = _names(results, labels)
    if any(r.get("calibration") is None for r in results):
        raise AstridInputError(
            "plot_calibration: a result has no calibration (scores outside [0, 1])"
        )
    plt = pyplot()
    with style():
        fig, (ax, axn) = plt.subplots(
            2,
            1,
            figsize=(3.6, 4.4),
            sharex=True,
            constrained_layout=True,
            gridspec_kw={"height_ratios": (3, 1)},
        )
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
        for i, (result, name) in enumerate(zip(results, names)):
            cal = result["calibration"]
            mean = np.array([np.nan if v is None else v for v in cal["mean_score"]])
            frac = np.array([np.nan if v is None else v for v in cal["fraction_real"]])
            good = np.isfinite(mean)
            ax.plot(
                mean[good],
                frac[good],
                "o-",
                color=f"C{i}",
                ms=3,
                lw=1.0,
                label=f"{name} (ECE {cal['ece']:.3f})",
            )
            edges = np.asarray(cal["edges"])
            axn.stairs(cal["count"], edges, color=f"C{i}")
        ax.set_ylabel("fraction real")
        ax.set_title("reliability")
        ax.legend(loc="upper left")
        axn.set_yscale("log")
        axn.set_xlabel("score")
        axn.set_ylabel("candidates")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    return fig


def plot_triplet_gallery(
    triplets,
    index: Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
    max_rows: int = 12,
):
    """Science, reference and difference stamps of chosen candidates, one row each.

    Parameters
    ----------
    triplets : xarray.Dataset or array-like, shape (n, 63, 63, 3)
        Triplets (schema of :mod:`astrid.schema`) or raw stamps.
    index : sequence of int, optional
        Candidates to show (default the first ``max_rows``).
    titles : sequence of str, optional
        One line per shown candidate (e.g. its scores), drawn left of the row.
    max_rows : int, optional
        At most this many rows.

    Returns
    -------
    matplotlib.figure.Figure
        Each stamp with its own zscale stretch.
    """
    from ..figures import pyplot, style, zscale_limits

    if isinstance(triplets, xr.Dataset):
        stamps = triplets["triplets"].transpose("candidate", "y", "x", "channel")
    else:
        stamps = np.asarray(triplets)
        if stamps.ndim != 4 or stamps.shape[-1] != 3:
            raise AstridInputError(f"triplets: expected shape (n, h, w, 3), got {stamps.shape}")
    n = stamps.shape[0]
    index = list(range(min(n, max_rows))) if index is None else [int(i) for i in index][:max_rows]
    if any(i < 0 or i >= n for i in index):
        raise AstridInputError(f"index: values must be in 0..{n - 1}")
    if not index:
        raise AstridInputError("plot_triplet_gallery: nothing to show")
    if titles is not None and len(titles) < len(index):
        raise AstridInputError(f"titles: {len(titles)} titles for {len(index)} rows")
    plt = pyplot()
    with style():
        fig, axes = plt.subplots(
            len(index),
            3,
            figsize=(4.6, 1.5 * len(index) + 0.3),
            squeeze=False,
            constrained_layout=True,
        )
        for row, i in enumerate(index):
            stamp = np.asarray(stamps[i], dtype=float)
            for col, channel in enumerate(("science", "reference", "difference")):
                ax = axes[row, col]
                image = stamp[..., col]
                vmin, vmax = zscale_limits(image)
                ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(channel)
            if titles is not None:
                axes[row, 0].set_ylabel(str(titles[row]), fontsize=6)
    return fig
