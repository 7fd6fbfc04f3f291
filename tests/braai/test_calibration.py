"""Score calibration: fitting, applying, storing in the card and the TFLite sidecar, applied by score()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astrid.braai import Calibration, calibration_curve, fit_calibration
from astrid.errors import AstridInputError


def overconfident(n=4000, seed=0, sharpen=3.0):
    """Labels and scores whose true probability is sigmoid(z) but reported as sigmoid(sharpen * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)
    scores = 1.0 / (1.0 + np.exp(-sharpen * z))
    return labels, scores


def test_temperature_recovers_the_sharpening_and_lowers_ece():
    labels, scores = overconfident(sharpen=3.0)
    cal = fit_calibration(labels, scores)
    assert cal.method == "temperature"
    assert cal.temperature == pytest.approx(3.0, rel=0.15)
    held_labels, held_scores = overconfident(seed=1, sharpen=3.0)
    before = calibration_curve(held_labels, held_scores)["ece"]
    after = calibration_curve(held_labels, cal.apply(held_scores))["ece"]
    assert after < 0.5 * before
    assert cal.ece_after < cal.ece_before
    # monotonic: the order of the scores is kept
    assert np.all(np.diff(cal.apply(np.sort(held_scores))) >= 0)


def test_platt_corrects_a_shift_that_temperature_cannot():
    labels, scores = overconfident(sharpen=1.0)
    shifted = 1.0 / (
        1.0 + np.exp(-(np.log(scores) - np.log1p(-scores) + 2.0))
    )  # every logit moved by +2
    temperature = fit_calibration(labels, shifted, "temperature")
    platt = fit_calibration(labels, shifted, "platt")
    assert platt.bias == pytest.approx(-2.0, abs=0.3) and platt.temperature == pytest.approx(
        1.0, rel=0.15
    )
    held_labels, held = overconfident(seed=3, sharpen=1.0)
    held = 1.0 / (1.0 + np.exp(-(np.log(held) - np.log1p(-held) + 2.0)))
    assert (
        calibration_curve(held_labels, platt.apply(held))["ece"]
        < calibration_curve(held_labels, temperature.apply(held))["ece"]
    )


def test_isotonic_lowers_ece_and_stays_in_unit_interval():
    labels, scores = overconfident(sharpen=0.3)  # timid scores
    cal = fit_calibration(labels, scores, method="isotonic")
    assert cal.method == "isotonic" and cal.temperature is None
    assert 1 <= len(cal.x) <= 512 and len(cal.x) == len(cal.y)
    out = cal.apply(np.linspace(0, 1, 101))
    assert out.min() >= 0 and out.max() <= 1 and np.all(np.diff(out) >= 0)
    held_labels, held_scores = overconfident(seed=2, sharpen=0.3)
    assert (
        calibration_curve(held_labels, cal.apply(held_scores))["ece"]
        < calibration_curve(held_labels, held_scores)["ece"]
    )


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_round_trip_through_json(method):
    labels, scores = overconfident(n=500)
    cal = fit_calibration(labels, scores, method=method)
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    np.testing.assert_array_equal(again.apply(scores), cal.apply(scores))


def test_apply_keeps_nan_dtype_and_dataarray():
    import xarray as xr

    cal = Calibration("temperature", temperature=2.0)
    raw = np.array([0.1, np.nan, 0.5, 1.0, 0.0], dtype=np.float32)
    out = cal.apply(raw)
    assert out.dtype == np.float32 and np.isnan(out[1]) and out[2] == pytest.approx(0.5)
    assert 0.5 < out[3] < 1.0 and 0.0 < out[4] < 0.5  # saturated scores pulled in, not inf
    da = xr.DataArray(raw, dims="candidate", coords={"candidate_id": ("candidate", list("abcde"))})
    out_da = cal.apply(da)
    assert isinstance(out_da, xr.DataArray) and list(out_da["candidate_id"].values) == list("abcde")


def test_bad_inputs_are_named():
    with pytest.raises(AstridInputError, match="method"):
        fit_calibration([0, 1], [0.2, 0.8], method="beta")
    with pytest.raises(AstridInputError, match="both classes"):
        fit_calibration([1, 1, 1], [0.2, 0.8, 0.9])
    with pytest.raises(AstridInputError, match=r"\[0, 1\]"):
        fit_calibration([0, 1], [-0.2, 0.8])
    with pytest.raises(AstridInputError, match="2 labels but 3 scores"):
        fit_calibration([0, 1], [0.2, 0.8, 0.9])
    with pytest.raises(AstridInputError, match="card.json: calibration"):
        Calibration.from_dict(
            {"method": "temperature", "temperature": -1}, "card.json: calibration"
        )
    with pytest.raises(AstridInputError, match="not a score calibration"):
        Calibration.from_dict({"method": "magic"})


# --------------------------------------------------------------------------- #
# in training, scoring and export
# --------------------------------------------------------------------------- #

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from test_braai_train import synthetic_triplets

    from astrid.braai import TrainConfig, train

    ds = synthetic_triplets(96, seed=5)
    out = tmp_path_factory.mktemp("calibrated")
    result = train(
        ds,
        "three_block",
        config=TrainConfig(epochs=2, seed=0),
        out_dir=out,
        name="cal",
        track=False,
    )
    return ds, result


def test_train_stores_calibration_and_consistent_reference(trained):
    from astrid.drift import reference_for_model

    ds, result = trained
    card = json.loads(result.card_path.read_text())
    cal = card["calibration"]
    assert cal["method"] == "temperature" and cal["temperature"] > 0
    assert cal["n"] == card["data"]["n_validation"]
    assert (
        cal["ece_before"] >= 0 and cal["ece_after"] >= 0
    )  # in-sample; a 2-epoch network need not improve
    assert card["metrics"]["calibrated"] is True
    assert card["metrics"]["ece"] == pytest.approx(cal["ece_after"], abs=1e-6)
    assert card["mlflow"] is None  # track=False
    # the drift reference is of the calibrated scores, i.e. what score() returns by default
    reference = reference_for_model(result.model_path)
    assert "calibrated" in reference["source"]


def test_score_applies_the_card_calibration_by_default(trained):
    from astrid.braai import load_trained
    from astrid.score import score

    ds, result = trained
    cal = Calibration.from_dict(result.card["calibration"])
    raw = score(ds, result.model_path, calibrated=False)
    calibrated = score(ds, result.model_path)
    assert raw.attrs["calibrated"] == 0 and raw.attrs["calibration"] == "none"
    assert calibrated.attrs["calibrated"] == 1 and calibrated.attrs["calibration"].startswith(
        "temperature T="
    )
    np.testing.assert_allclose(calibrated.values, cal.apply(raw.values), atol=1e-6)
    # the same for the Keras object returned by train() and by load_trained()
    np.testing.assert_allclose(score(ds, result.model).values, calibrated.values, atol=1e-5)
    np.testing.assert_allclose(
        score(ds, load_trained(result.model_path)).values, calibrated.values, atol=1e-5
    )


def test_model_without_calibration_scores_as_before(trained, tmp_path):
    from astrid.braai import TrainConfig, train
    from astrid.score import score

    ds, _ = trained
    result = train(
        ds,
        "three_block",
        config=TrainConfig(epochs=1, seed=0, calibration=None),
        out_dir=tmp_path,
        name="raw",
        track=False,
    )
    assert result.card["calibration"] is None and result.card["metrics"]["calibrated"] is False
    a = score(ds, result.model_path)
    b = score(ds, result.model_path, calibrated=False)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.attrs["calibrated"] == 0


def test_tflite_sidecar_carries_the_calibration(trained, tmp_path):
    from astrid.export import to_tflite
    from astrid.score import score

    ds, result = trained
    path = tmp_path / "cal.tflite"
    to_tflite(result.model_path, path, quantize=None, batch_size=None)
    side = json.loads((tmp_path / "cal.tflite.json").read_text())
    assert side["score_calibration"] == result.card["calibration"]
    calibrated = score(ds, path)
    raw = score(ds, path, calibrated=False)
    assert calibrated.attrs["calibrated"] == 1
    np.testing.assert_allclose(
        calibrated.values,
        Calibration.from_dict(side["score_calibration"]).apply(raw.values),
        atol=1e-6,
    )
    np.testing.assert_allclose(calibrated.values, score(ds, result.model_path).values, atol=1e-4)


def test_isotonic_in_training(trained, tmp_path):
    from astrid.braai import TrainConfig, train

    ds, _ = trained
    result = train(
        ds, "three_block", config=TrainConfig(epochs=1, seed=0, calibration="isotonic"), track=False
    )
    assert result.card["calibration"]["method"] == "isotonic"
    assert result.model.astrid_calibration["method"] == "isotonic"
    with pytest.raises(AstridInputError, match="calibration="):
        train(ds, "three_block", config=TrainConfig(epochs=1, calibration="beta"), track=False)
