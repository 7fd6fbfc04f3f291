"""astrid.anomaly: U-Net maps, feature baselines and the per-dataset methods table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

pytest.importorskip("keras")
pytest.importorskip("sklearn")

from astrid.anomaly import (
    FEATURES,
    Field,
    IsolationForestBaseline,
    OneClassSVMBaseline,
    UNetTrainingOptions,
    anomaly_map,
    baseline_method,
    build_unet,
    choose_region_level,
    choose_threshold,
    disc_iou,
    evaluate_methods,
    load_unet,
    map_regions,
    match_predictions,
    plot_anomaly_map,
    recall_lower_bound,
    sample_tiles,
    train_unet,
    transient_mask,
    unet_inputs,
    zogy_threshold_method,
)
from astrid.anomaly.unet import CHANNELS, receptive_radius
from astrid.errors import AstridInputError
from astrid.triplets import SyntheticScene, circle_iou, synthetic_difference

SMALL = (4, 8, 16)  # filters of a fast test network


# --------------------------------------------------------------------------- #
# U-Net
# --------------------------------------------------------------------------- #


def _blob_tiles(n=8, size=32, seed=0):
    """Noise tiles each with one Gaussian source in every plane; targets are discs of radius 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, size=(n, size, size, len(CHANNELS))).astype(np.float32)
    y = np.zeros((n, size, size, 2), np.float32)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(8, size - 8, size=(n, 2))
    for i, (cx, cy) in enumerate(centres):
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        x[i] += (3.0 * np.exp(-r2 / (2 * 1.5**2)))[..., None].astype(np.float32)
        y[i, ..., 0] = r2 <= 4.0
        y[i, ..., 1] = np.where(r2 <= 4.0, 10.0, 1.0)
    return x, y, centres


@pytest.mark.slow
def test_unet_overfits_a_tiny_set_and_peaks_on_the_source(tmp_path):
    x, y, centres = _blob_tiles()
    # the 8 tiles four times over: several steps per epoch cost less than many epochs
    tiles = (np.concatenate([x] * 4), np.concatenate([y] * 4))
    options = UNetTrainingOptions(
        filters=SMALL, epochs=12, batch_size=8, learning_rate=3e-3, seed=1
    )
    result = train_unet(tiles, options, out_dir=tmp_path, name="tiny")
    loss = result.history["loss"]
    assert loss[-1] < 0.5 * loss[0]
    probability = anomaly_map(result.model, x[0], tile=None)
    peak_y, peak_x = np.unravel_index(np.argmax(probability), probability.shape)
    assert np.hypot(peak_x - centres[0][0], peak_y - centres[0][1]) <= 2.0
    # far from the source the map is much lower than on it
    far = np.hypot(*np.meshgrid(np.arange(32) - centres[0][0], np.arange(32) - centres[0][1])) > 8
    assert probability.max() > 0.3 and np.median(probability[far]) < 0.25 * probability.max()

    card = json.loads(result.card_path.read_text())
    assert card["format"] == "astrid-unet-card/1"
    assert card["parameters"]["seed"] == 1 and card["parameters"]["augment"].startswith("dihedral")
    assert card["data"]["n_train"] == 32 and card["data"]["tile"] == [32, 32]
    assert len(card["data"]["sha256"]) == 64
    assert card["training"]["epochs_run"] == 12 and card["training"]["tiles_per_second"] > 0
    assert card["model"]["n_parameters"] == result.model.count_params()
    loaded = load_unet(result.model_path)
    np.testing.assert_allclose(anomaly_map(loaded, x[0], tile=None), probability, atol=1e-6)


def test_tiled_inference_equals_whole_image():
    model = build_unet(len(CHANNELS), SMALL)
    rng = np.random.default_rng(2)
    image = rng.normal(size=(100, 84, len(CHANNELS))).astype(np.float32)
    whole = anomaly_map(model, image, tile=None)
    for tile, batch in ((32, 3), (48, 1), (64, 4)):
        tiled = anomaly_map(model, image, tile=tile, batch_size=batch)
        assert tiled.shape == (100, 84)
        np.testing.assert_allclose(tiled, whole, atol=1e-6)
    # log-odds, computed before the sigmoid, tile the same way and map back to the probability
    logit = anomaly_map(model, image, tile=None, output="logit")
    np.testing.assert_allclose(anomaly_map(model, image, tile=32, output="logit"), logit, atol=1e-4)
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-logit)), whole, atol=1e-5)
    with pytest.raises(AstridInputError, match="output"):
        anomaly_map(model, image, output="odds")


def test_receptive_radius_bounds_the_influence_of_a_pixel():
    model = build_unet(len(CHANNELS), SMALL)
    image = np.zeros((96, 96, len(CHANNELS)), np.float32)
    base = anomaly_map(model, image, tile=None)
    image[48, 48] = 50.0
    changed = np.argwhere(anomaly_map(model, image, tile=None) != base)
    assert changed.size
    assert np.abs(changed - 48).max() <= receptive_radius(3)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((64, 64, 3), np.float32), "image: 3 channels"),
        (np.zeros((64, 64, 5), np.float32), "image: 5 channels"),
        (np.zeros((8, 64, 4), np.float32), "too small"),
        (np.zeros((64, 64, 4, 1), np.float32), "expected (ny, nx, channels)"),
        (np.full((64, 64, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_anomaly_map_refuses_bad_images(image, message):
    model = build_unet(len(CHANNELS), SMALL)
    with pytest.raises(AstridInputError, match="image") as info:
        anomaly_map(model, image)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"tile": 30}, "tile"), ({"overlap": -1}, "overlap"), ({"batch_size": 0}, "batch_size")],
)
def test_anomaly_map_refuses_bad_settings(kwargs, name):
    model = build_unet(len(CHANNELS), SMALL)
    with pytest.raises(AstridInputError, match=name):
        anomaly_map(model, np.zeros((64, 64, 4), np.float32), **kwargs)


def test_train_unet_refuses_bad_tiles():
    x, y, _ = _blob_tiles(n=2)
    with pytest.raises(AstridInputError, match="tiles"):
        train_unet((x[..., :3], y[..., :1]), UNetTrainingOptions(filters=SMALL, epochs=1))
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(AstridInputError, match="tiles: .*NaN"):
        train_unet((bad, y), UNetTrainingOptions(filters=SMALL, epochs=1))
    with pytest.raises(AstridInputError, match="epochs"):
        train_unet((x, y), UNetTrainingOptions(filters=SMALL, epochs=0))


def test_unet_inputs_planes_masks_and_nans():
    result = synthetic_difference(
        (96, 96), SyntheticScene(n_transients=2, masked_box=(10, 20, 10, 20)), seed=3
    )
    result.D[50, 50] = np.nan
    planes = unet_inputs(result)
    assert planes.shape == (96, 96, len(CHANNELS)) and planes.dtype == np.float32
    assert np.isfinite(planes).all()
    assert (planes[result.mask] == 0).all()
    assert (planes[50, 50] == 0).all()
    # S_corr keeps its sign and is compressed monotonically
    good = ~result.mask & np.isfinite(result.D)
    s = planes[..., 3][good]
    assert np.all(np.sign(s) == np.sign(np.arcsinh(result.S_corr[good] / 2)))

    class Broken:
        science = reference = result.science
        D = S_corr = np.zeros((10, 10))
        mask = np.zeros((10, 10), bool)

    with pytest.raises(AstridInputError, match="result.science.data: shape"):
        unet_inputs(Broken())
    with pytest.raises(AstridInputError, match="result: has no attribute 'D'"):
        unet_inputs(object.__new__(type("Empty", (), {"science": 1, "reference": 1})))


def test_transient_mask_and_sample_tiles():
    result = synthetic_difference((128, 128), SyntheticScene(n_transients=3), seed=1)
    truth = result.truth
    mask = transient_mask(truth, (128, 128), 2.0)
    real = truth[truth["kind"] == "supernova"]
    for row in real:
        assert mask[round(row["y_ref"]), round(row["x_ref"])]
    # three discs of radius 2: 13 pixels each when not overlapping (fewer at a sub-pixel centre is fine)
    assert 3 * 9 <= mask.sum() <= 3 * 16
    x, y = sample_tiles([(result, truth)], tile=32, n_per_field=12, seed=0)
    assert x.shape == (12, 32, 32, len(CHANNELS)) and y.shape == (12, 32, 32, 2)
    assert set(np.unique(y[..., 0])) <= {0.0, 1.0}
    assert (y[..., 0] == 1).any()  # half the tiles are drawn around transients
    assert np.all(y[..., 1][y[..., 0] == 1] == 20.0)
    with pytest.raises(AstridInputError, match="tile=30"):
        sample_tiles([(result, truth)], tile=30)
    with pytest.raises(AstridInputError, match="smaller than tile"):
        sample_tiles([(result, truth)], tile=256)


def test_sample_tiles_ignores_faint_transients():
    result = synthetic_difference((96, 96), SyntheticScene(n_transients=1, n_hot_pixels=0), seed=4)
    truth = result.truth.copy()
    truth["snr_diff"] = [1.0]  # too faint to be a target: its disc gets zero weight
    _, y = sample_tiles([(result, truth)], tile=32, n_per_field=6, fractions=(1, 0, 0), seed=0)
    assert not (y[..., 0] == 1).any()
    assert (y[..., 1] == 0).any()


def test_map_regions_centroids_areas_peaks():
    p = np.zeros((40, 50), np.float32)
    p[10:13, 20:23] = 0.6
    p[11, 21] = 0.9  # peak at the centre of a 3x3 block
    p[30, 40:45] = 0.7  # a 1x5 bar
    p[5, 5] = 0.4  # below the level
    table, labels = map_regions(p, level=0.5, return_labels=True)
    assert len(table) == 2
    first, second = table[0], table[1]
    assert first["peak"] == pytest.approx(0.9) and first["area"] == 9
    assert first["x"] == pytest.approx(21.0) and first["y"] == pytest.approx(11.0)
    assert (first["x_peak"], first["y_peak"]) == (21, 11)
    assert (
        second["area"] == 5
        and second["x"] == pytest.approx(42.0)
        and second["y"] == pytest.approx(30.0)
    )
    assert (labels == first["id"]).sum() == 9
    assert len(map_regions(p, level=0.5, min_area=6)) == 1
    # with log-odds the score is the region's highest log-odds, and ranks by it
    logit = np.where(p > 0, 5.0, -5.0)
    logit[30, 42] = 40.0  # the bar holds the clearest pixel, though its probability reads lower
    ranked = map_regions(p, level=0.5, logit=logit)
    assert list(ranked["area"]) == [5, 9] and list(ranked["score"]) == [40.0, 5.0]
    assert list(ranked["peak_logit"]) == [40.0, 5.0]
    assert len(map_regions(np.zeros((20, 20)))) == 0
    with pytest.raises(AstridInputError, match="level"):
        map_regions(p, level=0.0)
    with pytest.raises(AstridInputError, match="probability"):
        map_regions(np.zeros((2, 3, 4)))


# --------------------------------------------------------------------------- #
# baselines
# --------------------------------------------------------------------------- #


def _feature_table(n=300, seed=0, outlier=True):
    rng = np.random.default_rng(seed)
    columns = {name: rng.normal(0.5, 0.05, n) for name, _ in FEATURES}
    columns["score"] = rng.normal(6.0, 0.5, n)
    columns["fwhm"] = rng.normal(3.0, 0.2, n)
    columns["ref_source_distance"] = rng.uniform(5, 10, n)
    columns["host_distance"] = rng.uniform(5, 10, n)
    table = Table(columns)
    if outlier:
        table["sharpness"][17] = 3.0
        table["elongation"][17] = 4.0
        table["dipole"][17] = -2.0
    return table


@pytest.mark.parametrize("baseline", [IsolationForestBaseline, OneClassSVMBaseline])
def test_baselines_rank_an_obvious_outlier_first(baseline):
    table = _feature_table()
    model = baseline().fit(table, seed=0)
    scores = model.score(table)
    assert scores.shape == (len(table),)
    assert int(np.argmax(scores)) == 17
    # novelty mode: fitted on the "bogus" rows only. The One-Class SVM still ranks the
    # outlier first; an Isolation Forest cannot extrapolate beyond its training range
    # (every point past the extremes isolates alike), so it only ranks it near the top.
    labels = np.zeros(len(table), int)
    labels[17] = 1
    novelty = baseline().fit(table, labels, seed=0).score(table)
    rank = int((novelty > novelty[17]).sum())
    assert rank == 0 if baseline is OneClassSVMBaseline else rank < 0.02 * len(table)


def test_baseline_nan_policies():
    table = _feature_table()
    table["ref_source_distance"][[3, 4]] = np.nan
    model = IsolationForestBaseline(n_estimators=50).fit(table)
    # median policy: a missing value takes the training median, so it is not what makes a row odd
    median = np.nanmedian(np.log10(1 + np.asarray(table["ref_source_distance"])))
    assert model.center_[7] == pytest.approx(median)
    scores = model.score(table)
    assert np.isfinite(scores).all() and int(np.argmax(scores)) == 17
    strict = IsolationForestBaseline(nan_policy="raise")
    with pytest.raises(
        AstridInputError,
        match=r"candidates: NaN features in 2 rows \(first \[3, 4\]\), columns \['ref_source_distance'\]",
    ):
        strict.fit(table)
    table["host_distance"] = np.nan
    with pytest.raises(AstridInputError, match="host_distance.*NaN in every training row"):
        IsolationForestBaseline().fit(table)
    with pytest.raises(AstridInputError, match="nan_policy"):
        IsolationForestBaseline(nan_policy="drop")


def test_baseline_bad_inputs():
    table = _feature_table()
    with pytest.raises(AstridInputError, match=r"missing feature columns \['dipole'\]"):
        IsolationForestBaseline().fit(table[[c for c in table.colnames if c != "dipole"]])
    with pytest.raises(AstridInputError, match="call fit"):
        OneClassSVMBaseline().score(table)
    with pytest.raises(AstridInputError, match="at least 2 rows"):
        IsolationForestBaseline().fit(table[:1])
    with pytest.raises(AstridInputError, match="labels"):
        IsolationForestBaseline().fit(table, labels=[0, 1])
    model = IsolationForestBaseline(n_estimators=20).fit(table)
    with pytest.raises(AstridInputError, match="3 features, the model was fitted on 9"):
        model.score(np.zeros((4, 3)))
    with pytest.raises(AstridInputError, match="nu"):
        OneClassSVMBaseline(nu=0)


# --------------------------------------------------------------------------- #
# the methods table
# --------------------------------------------------------------------------- #


def _truth(rows):
    names = ("kind", "x_ref", "y_ref", "snr_sci", "masked")
    return Table(rows=rows, names=names)


def _points(rows):
    return Table(rows=rows, names=("x", "y", "score")) if rows else Table(names=("x", "y", "score"))


@pytest.fixture
def toy():
    """Hand-counted fields: one validation, one test, 100x100 px, FWHM 2."""
    validation = Field(
        "V",
        _truth(
            [
                ("supernova", 20.0, 20.0, 20.0, False),  # to find
                ("supernova", 60.0, 60.0, 10.0, False),  # to find
                ("supernova", 80.0, 20.0, 3.0, False),  # real but too faint to count
                ("cosmic_ray", 40.0, 80.0, np.nan, False),
            ]
        ),
        (100, 100),
        2.0,
    )
    test = Field(
        "T",
        _truth(
            [
                ("supernova", 30.0, 30.0, 50.0, False),  # to find
                ("supernova", 70.0, 70.0, 9.0, False),  # to find
                ("variable", 50.0, 10.0, 15.0, False),  # to find
                ("asteroid", 10.0, 50.0, 20.0, False),  # not a transient of the search
                ("supernova", 2.0, 50.0, 30.0, False),  # in the edge band: not counted
                ("supernova", 50.0, 90.0, 30.0, True),  # masked: not counted
            ]
        ),
        (100, 100),
        2.0,
        seconds={"zogy": 1.5},
    )
    predictions = {
        "V": _points(
            [
                (20.5, 20.0, 9.0),
                (60.0, 61.0, 6.0),
                (80.0, 20.0, 4.0),
                (40.0, 80.0, 7.0),
                (10.0, 90.0, 2.0),
            ]
        ),
        "T": _points(
            [
                (30.0, 31.0, 8.0),
                (70.0, 70.0, 5.0),
                (50.0, 10.0, 6.5),
                (10.0, 50.0, 7.0),
                (2.0, 50.0, 10.0),
                (90.0, 90.0, 6.0),
            ]
        ),
    }

    def points(field):
        return predictions[field.name].copy()

    points.uses = "zogy"

    labels = np.zeros((100, 100), np.int32)
    labels[28:33, 28:33] = 1  # a 5x5 square on the first test transient

    def regions(field):
        if field.name == "V":
            raise AssertionError(
                "a method with a given threshold must not run on validation fields"
            )
        return Table({"id": [1], "x": [30.0], "y": [30.0], "score": [0.9]}), labels

    return validation, test, points, regions


def test_metrics_table_matches_a_hand_count(toy):
    validation, test, points, regions = toy
    table = evaluate_methods(
        {"points": points, "map": regions},
        [validation],
        [test],
        target_recall=0.9,
        thresholds={"map": 0.5},
    )
    p = table[table["method"] == "points"][0]
    # validation: scores of the two transients to find are 9 and 6; recall >= 0.9 needs both: threshold 6
    assert p["threshold"] == 6.0 and p["threshold_rule"].startswith("highest score")
    assert p["val_recall"] == 1.0 and p["val_false_alarms_per_image"] == 1.0  # the cosmic ray at 7
    # test at 6: selected 8, 6.5, 7, 10, 6 -> real 8 (SN), 6.5 (variable), 10 (edge SN, real) -> 3 of 5
    assert p["n_selected"] == 5 and p["n_false"] == 2
    assert p["precision"] == pytest.approx(3 / 5)
    assert p["n_true"] == 3 and p["n_found"] == 2 and p["recall"] == pytest.approx(2 / 3)
    assert p["false_alarms_per_image"] == 2.0
    assert p["iou_median"] == pytest.approx(np.median([circle_iou(1.0, 2.0), 1.0]))
    assert p["kind"] == "points"
    assert 1.5 <= p["seconds_per_image"] < 2.5  # the ZOGY difference's time is included
    m = table[table["method"] == "map"][0]
    assert m["threshold_rule"] == "given" and m["threshold"] == 0.5 and np.isnan(m["val_recall"])
    # a 5x5 square against the 13-pixel disc of radius 2: IoU 13/25
    assert m["iou_median"] == pytest.approx(13 / 25)
    assert (m["precision"], m["n_found"], m["false_alarms_per_image"], m["kind"]) == (
        1.0,
        1,
        0.0,
        "map",
    )
    assert "footprint IoU" in table.meta["iou_convention"] and table.meta["target_recall"] == 0.9


def test_plot_methods(toy):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from astrid.anomaly import plot_methods

    validation, test, points, regions = toy
    table = evaluate_methods(
        {"points": points, "map": regions},
        [validation],
        [test],
        thresholds={"map": 0.5},
        dataset="toy",
    )
    fig = plot_methods(table)
    left, right = fig.axes
    assert [t.get_text() for t in left.get_yticklabels()] == ["points", "map"]
    assert len(left.patches) == 3 * len(table) and len(right.patches) == len(table)
    assert fig._suptitle.get_text() == "toy"
    plt.close(fig)
    with pytest.raises(AstridInputError, match="no column 'recall'"):
        plot_methods(table[["method", "precision"]])


def test_threshold_rule_when_recall_is_unreachable(toy):
    validation, _, points, _ = toy
    matches = [match_predictions(points(validation), validation)]
    assert choose_threshold(matches, 0.5) == (9.0, "highest score with validation recall >= 0.5")
    validation.truth.add_row(("supernova", 50.0, 50.0, 30.0, False))  # never predicted
    matches = [match_predictions(points(validation), validation)]
    threshold, rule = choose_threshold(matches, 1.0)
    assert threshold == 2.0 and "not reachable" in rule
    with pytest.raises(AstridInputError, match="target_recall"):
        choose_threshold(matches, 0.0)


def test_recall_lower_bound_is_the_clopper_pearson_bound():
    from scipy.stats import binom

    # all found: P(X >= n | p) = p^n = 0.05  ->  p = 0.05^(1/n)
    assert recall_lower_bound(10, 10, 0.95) == pytest.approx(0.05**0.1)
    assert recall_lower_bound(0, 10) == 0.0
    for k, n in ((45, 50), (170, 180), (3, 7)):
        low = recall_lower_bound(k, n, 0.95)
        assert binom.sf(k - 1, n, low) == pytest.approx(
            0.05, rel=1e-6
        )  # k or more found at p = low: 5 %
        assert low < k / n
    with pytest.raises(AstridInputError, match="confidence"):
        recall_lower_bound(5, 10, 1.0)
    with pytest.raises(AstridInputError, match="n_found"):
        recall_lower_bound(11, 10)


def _many_transients(n, name="M"):
    """A field with ``n`` bright supernovae on a grid, and point predictions scoring them n..1."""
    xs = 10.0 + 10.0 * (np.arange(n) % 20)
    ys = 10.0 + 10.0 * (np.arange(n) // 20)
    field = Field(
        name, _truth([("supernova", x, y, 20.0, False) for x, y in zip(xs, ys)]), (220, 220), 2.0
    )
    predictions = _points([(x, y, float(n - i)) for i, (x, y) in enumerate(zip(xs, ys))])
    return field, predictions


def test_threshold_rule_with_a_binomial_margin():
    from scipy.stats import binom

    field, predictions = _many_transients(100)
    matches = [match_predictions(predictions, field)]
    assert choose_threshold(matches, 0.9)[0] == 11.0  # 90 of the 100, scores 100..11
    threshold, rule = choose_threshold(matches, 0.9, confidence=0.95)
    # The bound reaches 0.9 at the fewest found k with P(X >= k | p = 0.9) <= 5 % (binomial tail, by hand)
    k = next(k for k in range(1, 101) if binom.sf(k - 1, 100, 0.9) <= 0.05)
    assert 90 < k < 100 and threshold == 100.0 - (k - 1)
    assert "95% lower bound" in rule and f"{k}/100" in rule
    # 20 transients cannot give a 95 % bound of 0.9 (0.05^(1/20) = 0.86): the most recall instead
    small, small_predictions = _many_transients(20, "S")
    threshold, rule = choose_threshold(
        [match_predictions(small_predictions, small)], 0.9, confidence=0.95
    )
    assert threshold == 1.0 and "not reachable" in rule
    with pytest.raises(AstridInputError, match="confidence"):
        choose_threshold(matches, 0.9, confidence=0.0)


def test_evaluate_methods_with_a_margin(toy):
    validation, test, points, _ = toy
    field, predictions = _many_transients(100, "V100")

    def method(f):
        return predictions.copy() if f.name == "V100" else points(f)

    table = evaluate_methods({"p": method}, [field], [test], confidence=0.95)
    assert table.meta["confidence"] == 0.95 and "lower bound" in table["threshold_rule"][0]
    assert table["val_recall"][0] > 0.9
    plain = evaluate_methods({"p": method}, [field], [test])
    assert plain.meta["confidence"] is None and plain["val_recall"][0] == 0.9
    assert (
        table["threshold"][0] < plain["threshold"][0]
    )  # the margin asks for more validation recall


def test_choose_region_level_prefers_the_footprint_matching_the_truth(monkeypatch):
    """A hand-made map: log-odds 5 on the truth disc (radius FWHM = 2), 1 on a ring out to 4 px."""
    import astrid.anomaly.unet as unet_module

    field = Field(
        "L",
        _truth([("supernova", 20.0, 20.0, 30.0, False), ("supernova", 50.0, 40.0, 30.0, False)]),
        (64, 64),
        2.0,
        result=object(),
    )
    yy, xx = np.mgrid[:64, :64]
    logit = np.full((64, 64), -8.0, np.float32)
    for x, y in ((20.0, 20.0), (50.0, 40.0)):
        r = np.hypot(xx - x, yy - y)
        logit[r <= 4.0] = 1.0
        logit[r <= 2.0] = 5.0
    monkeypatch.setattr(unet_module, "result_anomaly_map", lambda model, result, **kw: logit.copy())
    level, table = choose_region_level(None, [field], levels=(0.5, 0.9, 0.99))
    assert level == 0.9  # 0.99 gives the same footprint: the tie goes to the lower level
    assert list(table["iou_median"]) == pytest.approx(
        [13 / 49, 1.0, 1.0]
    )  # disc of 13 px in a 49 px region
    assert list(table["n_found"]) == [2, 2, 2] and list(table["n_regions"]) == [2, 2, 2]
    with pytest.raises(AstridInputError, match="levels"):
        choose_region_level(None, [field], levels=(0.5, 1.0))
    with pytest.raises(AstridInputError, match=r"fields\[0\]"):
        choose_region_level(None, [Field("N", field.truth, (64, 64), 2.0)])


def test_plot_anomaly_map():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = synthetic_difference((96, 96), SyntheticScene(n_transients=2, n_hot_pixels=1), seed=3)
    probability = np.zeros((96, 96), np.float32)
    tx, ty = float(result.truth["x_ref"][0]), float(result.truth["y_ref"][0])
    yy, xx = np.mgrid[:96, :96]
    probability[np.hypot(xx - tx, yy - ty) <= 3] = 0.9
    regions = map_regions(probability, level=0.5)
    fig = plot_anomaly_map(
        result, probability, regions=regions, truth=result.truth, threshold=0.5, size=48
    )
    s_corr, prob = fig.axes[:2]
    assert prob.get_title() == "U-Net anomaly probability"
    assert prob.get_xlim()[0] <= tx <= prob.get_xlim()[1]  # centred on the strongest region
    assert (
        len(prob.patches) == 1 and prob.collections
    )  # its circle; truth markers and the footprint contour
    plt.close(fig)
    with pytest.raises(AstridInputError, match="probability: shape"):
        plot_anomaly_map(result, probability[:10])


def test_disc_iou_hand_count():
    labels = np.zeros((20, 20), np.int32)
    labels[8:13, 8:13] = 4
    assert disc_iou(labels, 4, 10.0, 10.0, 2.0) == pytest.approx(13 / 25)
    assert disc_iou(labels, 4, 18.0, 18.0, 1.0) == 0.0


def test_evaluate_methods_bad_inputs(toy):
    validation, test, points, _ = toy
    with pytest.raises(AstridInputError, match="methods"):
        evaluate_methods({}, [validation], [test])
    with pytest.raises(AstridInputError, match="also validation fields"):
        evaluate_methods({"p": points}, [validation], [validation])
    with pytest.raises(AstridInputError, match=r"test\[0\]: expected an astrid.anomaly.Field"):
        evaluate_methods({"p": points}, [validation], [object()])
    with pytest.raises(AstridInputError, match="thresholds: no method named"):
        evaluate_methods({"p": points}, [validation], [test], thresholds={"q": 1.0})
    with pytest.raises(AstridInputError, match="no column 'score'"):
        evaluate_methods({"p": lambda f: Table({"x": [1.0], "y": [1.0]})}, [validation], [test])


def test_project_methods_on_a_synthetic_result():
    """ZOGY + threshold and a baseline run end to end through Field and evaluate_methods."""
    fields = []
    for seed in (5, 6):
        result = synthetic_difference(
            (160, 160), SyntheticScene(n_transients=4, n_hot_pixels=3), seed=seed
        )
        truth = result.truth.copy()
        truth["snr_sci"] = 20.0
        fields.append(Field.from_result(result, truth, f"S{seed}"))
    from astrid.triplets import detect

    baseline = IsolationForestBaseline(n_estimators=50).fit(detect(fields[0].result, threshold=5.0))
    table = evaluate_methods(
        {"zogy": zogy_threshold_method(), "forest": baseline_method(baseline)},
        fields[:1],
        fields[1:],
    )
    zogy = table[table["method"] == "zogy"][0]
    assert zogy["n_true"] == 4 and zogy["recall"] >= 0.75 and zogy["threshold"] >= 5.0
    assert table["seconds_per_image"].min() > 0


# --------------------------------------------------------------------------- #
# transient types
# --------------------------------------------------------------------------- #


def test_type_labels_and_report_hand_count():
    from astrid.anomaly import CLASSES, type_labels, type_report

    labels = type_labels(
        ["supernova", "variable", "asteroid", "cosmic_ray", "unmatched", "random", " supernova"]
    )
    assert labels.tolist() == [0, 1, 2, 3, 3, 3, 0] and CLASSES[3] == "bogus"
    true = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]
    predicted = [0, 0, 3, 1, 0, 2, 3, 3, 3, 1]
    report = type_report(true, predicted)
    assert report["confusion"][0] == [2, 0, 0, 1] and report["confusion"][3] == [0, 1, 0, 3]
    assert report["accuracy"] == pytest.approx(7 / 10)
    sn = report["per_class"]["supernova"]
    assert (sn["precision"], sn["recall"], sn["support"]) == (
        pytest.approx(2 / 3),
        pytest.approx(2 / 3),
        3,
    )
    assert report["per_class"]["variable"]["precision"] == pytest.approx(1 / 2)
    assert report["per_class"]["bogus"]["recall"] == pytest.approx(3 / 4)
    with pytest.raises(AstridInputError, match="class indices"):
        type_report([0, 4], [0, 0])
    with pytest.raises(AstridInputError, match="one length"):
        type_report([0, 1], [0])


def test_predict_types_mc_dropout():
    from astrid.anomaly import build_type_model, predict_types

    model = build_type_model(dropout=0.5)
    stamps = np.random.default_rng(0).normal(size=(5, 63, 63, 3)).astype(np.float32)
    mc = predict_types(model, stamps, n_samples=8)
    assert mc["probability"].shape == (5, 4) and np.allclose(mc["probability"].sum(1), 1.0)
    assert (mc["std"] > 0).any()  # dropout on: the passes differ
    single = predict_types(model, stamps, n_samples=1)
    assert np.all(single["std"] == 0)
    assert np.all(single["entropy"] >= 0) and np.all(single["entropy"] <= np.log(4) + 1e-9)
    assert np.array_equal(single["predicted"], single["probability"].argmax(1))
    with pytest.raises(AstridInputError, match="n_samples"):
        predict_types(model, stamps, n_samples=0)
    with pytest.raises(AstridInputError, match="dropout"):
        build_type_model(dropout=1.0)


@pytest.mark.slow
def test_train_types_on_synthetic_triplets():
    from astrid.anomaly import TypesTrainingOptions, train_types
    from astrid.triplets import detect, label_candidates, make_triplets

    result = synthetic_difference(
        (256, 256), SyntheticScene(n_transients=8, n_hot_pixels=8), seed=7
    )
    candidates = label_candidates(
        detect(result, threshold=5.0, reference_sources=False), result.truth
    )
    ds = make_triplets(result, candidates, field="SYN")
    _, history = train_types(ds, TypesTrainingOptions(epochs=2, batch_size=8))
    assert len(history["loss"]) == 2 and history["class_counts"]["supernova"] >= 6
    assert history["class_weight"]["asteroid"] == 0.0  # an absent class gets no weight
    with pytest.raises(AstridInputError, match="kind"):
        train_types(ds.drop_vars("kind"), TypesTrainingOptions(epochs=1))
