"""braai evaluation: metrics against scikit-learn and hand computations, breakdowns, figures, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from astrid.braai import (
    binary_curves,
    calibration_curve,
    evaluate,
    plot_calibration,
    plot_roc_pr,
    plot_score_histograms,
    plot_triplet_gallery,
    threshold_for_fnr,
)
from astrid.errors import AstridInputError
from astrid.schema import new_triplet_dataset

metrics = pytest.importorskip("sklearn.metrics")


@pytest.fixture
def scored():
    """Hand-made scores with ties, for 300 real and 700 bogus candidates."""
    rng = np.random.default_rng(42)
    labels = np.r_[np.ones(300, int), np.zeros(700, int)]
    scores = np.clip(
        np.where(
            labels == 1, rng.normal(0.75, 0.2, labels.size), rng.normal(0.3, 0.2, labels.size)
        ),
        0,
        1,
    )
    scores = np.round(scores, 2)  # many ties
    kinds = np.where(
        labels == 1, "supernova", rng.choice(["cosmic_ray", "hot_pixel", "random"], labels.size)
    )
    snr = rng.uniform(3, 60, labels.size)
    return {"label": labels, "scores": scores, "kind": kinds, "snr": snr}


def test_metrics_match_sklearn(scored):
    labels, scores = scored["label"], scored["scores"]
    result = evaluate(None, {"label": labels}, scores=scores, threshold=0.5)
    predicted = (scores >= 0.5).astype(int)
    assert result["precision"] == pytest.approx(metrics.precision_score(labels, predicted))
    assert result["recall"] == pytest.approx(metrics.recall_score(labels, predicted))
    assert result["f1"] == pytest.approx(metrics.f1_score(labels, predicted))
    assert result["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert result["aucpr"] == pytest.approx(
        metrics.average_precision_score(labels, scores), abs=1e-12
    )
    assert result["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    tn, fp, fn, tp = metrics.confusion_matrix(labels, predicted).ravel()
    assert result["confusion"] == {
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "matrix": [[tn, fp], [fn, tp]],
    }
    assert result["fpr"] == pytest.approx(fp / (fp + tn))
    assert result["fnr"] == pytest.approx(fn / (fn + tp))
    assert (result["n"], result["n_real"], result["n_bogus"]) == (1000, 300, 700)


def test_curves_match_sklearn(scored):
    labels, scores = scored["label"], scored["scores"]
    curves = binary_curves(labels, scores)
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(curves["fpr"], fpr)
    np.testing.assert_allclose(curves["tpr"], tpr)
    np.testing.assert_allclose(curves["thresholds"], thresholds[1:])
    precision, recall, _ = metrics.precision_recall_curve(labels, scores)
    # scikit-learn lists increasing thresholds and appends (recall 0, precision 1)
    np.testing.assert_allclose(curves["precision"][::-1], precision[:-1])
    np.testing.assert_allclose(curves["recall"][::-1], recall[:-1])


def test_threshold_for_target_fnr_by_hand():
    # 50 real scores 0.01..0.50 and 50 bogus scores 0.005..0.995 in steps of 0.02
    real = np.arange(1, 51) / 100.0
    bogus = np.arange(50) / 50.0 + 0.005
    labels = np.r_[np.ones(50, int), np.zeros(50, int)]
    scores = np.r_[real, bogus]
    # 2 % of 50 is one allowed miss: the threshold is the second-lowest real score.
    assert threshold_for_fnr(labels, scores, 0.02) == pytest.approx(0.02)
    assert threshold_for_fnr(labels, scores, 0.0) == pytest.approx(0.01)
    assert threshold_for_fnr(labels, scores, 0.1) == pytest.approx(0.06)  # five misses
    result = evaluate(None, {"label": labels}, scores=scores, target_fnr=0.02)
    assert result["threshold_at_target_fnr"] == pytest.approx(0.02)
    assert result["fnr_at_target"] == pytest.approx(1 / 50)
    # bogus at or above 0.02: all but 0.005
    assert result["fpr_at_target"] == pytest.approx(49 / 50)
    with pytest.raises(AstridInputError, match="target_fnr"):
        threshold_for_fnr(labels, scores, 1.0)


def test_target_fnr_is_never_exceeded(scored):
    labels, scores = scored["label"], scored["scores"]
    for target in (0.0, 0.01, 0.02, 0.05, 0.2):
        result = evaluate(None, {"label": labels}, scores=scores, target_fnr=target)
        assert result["fnr_at_target"] <= target + 1e-12
        # any higher threshold would miss more than allowed
        higher = np.unique(scores[scores > result["threshold_at_target_fnr"]])
        if higher.size:
            missed = np.mean(scores[labels == 1] < higher[0])
            assert missed > target


def test_equal_error_rate_by_hand():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05])
    result = evaluate(None, {"label": labels}, scores=scores)
    # at threshold 0.6: FNR = 1/4 (0.3 missed), FPR = 1/4 (0.6 passes)
    assert result["eer_threshold"] == pytest.approx(0.6)
    assert result["eer"] == pytest.approx(0.25)


def test_calibration_and_ece_by_hand():
    scores = np.array([0.05, 0.15, 0.15, 0.55, 0.65, 0.95, 0.95, 0.95, 0.95])
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 1, 0])
    cal = calibration_curve(labels, scores, n_bins=10)
    assert cal["count"] == [1, 2, 0, 0, 0, 1, 1, 0, 0, 4]
    # ECE = sum_b n_b/n |fraction_real_b - mean_score_b|
    expected = (
        1 * abs(0 - 0.05)
        + 2 * abs(0.5 - 0.15)
        + 1 * abs(1 - 0.55)
        + 1 * abs(0 - 0.65)
        + 4 * abs(0.75 - 0.95)
    ) / 9
    assert cal["ece"] == pytest.approx(expected)
    assert cal["fraction_real"][2] is None and cal["mean_score"][2] is None
    calibration = pytest.importorskip("sklearn.calibration")
    frac, mean = calibration.calibration_curve(labels, scores, n_bins=10)
    filled = [i for i, c in enumerate(cal["count"]) if c]
    np.testing.assert_allclose([cal["fraction_real"][i] for i in filled], frac)
    np.testing.assert_allclose([cal["mean_score"][i] for i in filled], mean)
    result = evaluate(None, {"label": labels}, scores=scores)
    assert result["ece"] == pytest.approx(expected)
    # scores outside [0, 1] have no calibration
    assert evaluate(None, {"label": labels}, scores=scores * 10)["calibration"] is None


def test_breakdown_by_kind_and_snr_by_hand(scored):
    labels, scores, kinds, snr = scored["label"], scored["scores"], scored["kind"], scored["snr"]
    result = evaluate(None, scored, scores=scores, threshold=0.5, snr_bins=(0, 10, 30, math.inf))
    assert result["kind_coordinate"] == "kind" and result["snr_coordinate"] == "snr"
    assert set(result["by_kind"]) == {"supernova", "cosmic_ray", "hot_pixel", "random"}
    for kind, row in result["by_kind"].items():
        here = kinds == kind
        assert row["n"] == here.sum()
        assert row["n_real"] == labels[here].sum()
        assert row["fraction_above_threshold"] == pytest.approx(np.mean(scores[here] >= 0.5))
        assert row["mean_score"] == pytest.approx(scores[here].mean())
    # recall of the one real kind is the overall recall
    assert result["by_kind"]["supernova"]["fraction_above_threshold"] == pytest.approx(
        result["recall"]
    )
    rows = result["by_snr"]
    assert [(r["lo"], r["hi"]) for r in rows] == [(0, 10), (10, 30), (30, None)]
    for row, (lo, hi) in zip(rows, [(0, 10), (10, 30), (30, np.inf)]):
        here = (labels == 1) & (snr >= lo) & (snr < hi)
        assert row["n"] == here.sum()
        assert row["recall"] == pytest.approx(np.mean(scores[here] >= 0.5))
    assert sum(r["n"] for r in rows) == 300


def test_dataset_coordinates_and_json(scored):
    n = scored["label"].size
    stamps = np.zeros((n, 63, 63, 3), np.float32)
    ds = new_triplet_dataset(
        stamps, {"label": scored["label"], "kind": scored["kind"], "score": scored["snr"]}
    )
    result = evaluate(None, ds, scores=scored["scores"])
    # With no 'snr' coordinate the detection score stands in for the S/N.
    assert result["snr_coordinate"] == "score"
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["aucpr"] == result["aucpr"]
    assert (
        len(result["roc"]["fpr"]) <= 402
        and result["roc"]["fpr"][0] == 0.0
        and result["roc"]["tpr"][-1] == 1.0
    )
    with pytest.raises(AstridInputError, match="no coordinate 'truth_snr'"):
        evaluate(None, ds, scores=scored["scores"], snr="truth_snr")


def test_evaluate_runs_the_model():
    keras = pytest.importorskip("keras")
    from astrid.braai import predict, vgg6

    keras.utils.set_random_seed(0)
    model = vgg6()
    rng = np.random.default_rng(0)
    ds = new_triplet_dataset(rng.normal(size=(12, 63, 63, 3)), {"label": np.arange(12) % 2})
    result = evaluate(model, ds)
    direct = evaluate(None, ds, scores=predict(model, ds))
    assert result["roc_auc"] == direct["roc_auc"] and result["confusion"] == direct["confusion"]
    bad = new_triplet_dataset(rng.normal(size=(12, 63, 63, 3)), {"label": np.arange(12) % 2})
    bad = bad.isel(x=slice(0, 40))
    with pytest.raises(AstridInputError, match="40"):
        evaluate(model, bad)


def test_bad_input():
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.1, 0.9, 0.2, 0.8])
    with pytest.raises(AstridInputError, match="no real"):
        evaluate(None, {"label": [0, 0, 0]}, scores=[0.1, 0.2, 0.3])
    with pytest.raises(AstridInputError, match="no bogus"):
        evaluate(None, [1, 1], scores=[0.1, 0.2])
    with pytest.raises(AstridInputError, match="0 \\(bogus\\) or 1 \\(real\\)"):
        evaluate(None, [0, 2, 1], scores=[0.1, 0.2, 0.3])
    with pytest.raises(AstridInputError, match="expected 4 scores"):
        evaluate(None, labels, scores=scores[:3])
    with pytest.raises(AstridInputError, match="NaN"):
        evaluate(None, labels, scores=[0.1, np.nan, 0.2, 0.3])
    with pytest.raises(AstridInputError, match="model or precomputed scores"):
        evaluate(None, labels)
    with pytest.raises(AstridInputError, match="'label'"):
        evaluate(None, {"kind": ["a"]}, scores=[0.5])
    with pytest.raises(AstridInputError, match="one value per candidate"):
        evaluate(None, np.zeros((2, 2)), scores=[0.5, 0.5])
    with pytest.raises(AstridInputError, match="snr_bins"):
        evaluate(None, {"label": labels, "snr": [1, 2, 3, 4]}, scores=scores, snr_bins=(5, 1))
    with pytest.raises(AstridInputError, match="threshold"):
        evaluate(None, labels, scores=scores, threshold=float("nan"))


def test_figures(scored, tmp_path):
    import matplotlib.pyplot as plt

    from astrid.figures import save

    labels, scores = scored["label"], scored["scores"]
    first = evaluate(None, scored, scores=scores)
    second = evaluate(None, scored, scores=np.clip(scores + 0.1 * (labels - 0.5), 0, 1))
    figures = {
        "roc_pr": plot_roc_pr(first, second, labels=["a", "b"]),
        "hist": plot_score_histograms(scores, labels, kinds=scored["kind"]),
        "calibration": plot_calibration([first, second]),
        "gallery": plot_triplet_gallery(
            np.random.default_rng(0).normal(size=(5, 63, 63, 3)),
            index=[4, 0],
            titles=["one", "two"],
        ),
    }
    assert len(figures["roc_pr"].axes) == 2
    assert len(figures["gallery"].axes) == 6
    for name, fig in figures.items():
        paths = save(fig, name, tmp_path)
        assert all(p.stat().st_size > 0 for p in paths)
        plt.close(fig)
    with pytest.raises(AstridInputError, match="names for"):
        plot_roc_pr(first, labels=["a", "b"])
    with pytest.raises(AstridInputError, match="evaluate"):
        plot_roc_pr({"n": 3})
    with pytest.raises(AstridInputError, match="index"):
        plot_triplet_gallery(np.zeros((2, 63, 63, 3)), index=[3])
