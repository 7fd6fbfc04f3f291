"""astrid.drift: score distributions, PSI and KS against a reference, the model card's validation scores."""

from __future__ import annotations

import glob
import json
import warnings

import numpy as np
import pytest

from astrid.drift import (
    MIN_SCORES,
    PSI_LEVEL,
    DriftWarning,
    compare,
    load_reference,
    reference_for_model,
    score_distribution,
)
from astrid.errors import AstridFileError, AstridInputError, AstridWarning
from astrid.paths import shared_data


def _scores(n, real_fraction, seed):
    """Scores as a real/bogus model gives them: piled up near 1 (real) and near 0 (bogus)."""
    rng = np.random.default_rng(seed)
    real = rng.random(n) < real_fraction
    return np.where(real, rng.beta(30, 1, n), rng.beta(1, 30, n))


def test_distribution_record():
    scores = np.concatenate([_scores(500, 0.8, 0), [np.nan, np.nan]])
    record = score_distribution(scores, source="unit test")
    assert record["format"] == "astrid-score-distribution/1"
    assert record["n"] == 500 and record["n_nan"] == 2
    assert len(record["values"]) == 500 and record["values"] == sorted(record["values"])
    assert record["quantiles"]["0.5"] == pytest.approx(np.nanmedian(scores), abs=1e-6)
    assert record["source"] == "unit test"
    assert (
        json.loads(json.dumps(record)) == record
    )  # goes into JSON cards and table metadata as it is
    with pytest.raises(AstridInputError, match=r"\[0, 1\]"):
        score_distribution([0.2, 3.5])


def test_held_out_scores_are_quiet_and_a_shift_is_flagged():
    reference = score_distribution(_scores(2000, 0.8, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on data like the reference
        same = compare(_scores(600, 0.8, 2), reference)
    assert not same.drifted and same.psi < 0.1 and same.ks < same.ks_critical
    with pytest.warns(DriftWarning, match="PSI"):
        shifted = compare(_scores(600, 0.3, 3), reference, what="night 2")
    assert shifted.drifted and shifted.psi > PSI_LEVEL and shifted.ks > shifted.ks_critical
    assert "DRIFT" in shifted.summary() and "no drift" in same.summary()
    assert issubclass(DriftWarning, AstridWarning)
    # Too few scores: figures, no verdict.
    few = compare(_scores(MIN_SCORES - 1, 0.3, 4), reference, warn=False)
    assert not few.drifted and few.psi > PSI_LEVEL and "no verdict" in few.note
    # The level is the caller's.
    assert compare(_scores(600, 0.8, 2), reference, level=same.psi / 2, warn=False).drifted


def test_a_shift_among_scores_near_one_is_seen():
    """Most scores lie within 0.01 of 1; a shift among them is drift too (logit-scale bins)."""
    rng = np.random.default_rng(5)
    reference = 1 - 10 ** rng.uniform(-6, -2, 2000)  # 0.99 .. 0.999999
    shifted = 1 - 10 ** rng.uniform(-3, -2, 600)  # 0.99 .. 0.999
    result = compare(shifted, reference, warn=False)
    assert result.drifted and result.psi > 1


def test_ks_matches_the_exact_statistic():
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = _scores(800, 0.7, 6), _scores(900, 0.5, 7)
    # Every reference score is kept (float32): the exact statistic.
    assert compare(a, b, warn=False).ks == pytest.approx(
        scipy_stats.ks_2samp(a, b).statistic, abs=1e-3
    )
    # A large reference keeps 1000 quantiles: within 1/1000 in rank.
    big = _scores(20_000, 0.5, 8)
    stored = score_distribution(big)
    assert len(stored["values"]) == 1000 and stored["n"] == 20_000
    result = compare(a, stored, warn=False)
    assert result.n_reference == 20_000
    assert result.ks == pytest.approx(scipy_stats.ks_2samp(a, big).statistic, abs=2e-3)


def test_reference_forms(tmp_path):
    from astropy.table import Table

    values = _scores(300, 0.8, 8)
    expected = score_distribution(values)["values"]
    np.save(tmp_path / "ref.npy", values)
    np.savetxt(tmp_path / "ref.txt", values)
    Table({"score": values}).write(tmp_path / "ref.ecsv")
    (tmp_path / "dist.json").write_text(json.dumps(score_distribution(values)))
    (tmp_path / "model.card.json").write_text(
        json.dumps(
            {"format": "astrid-braai-card/1", "validation_scores": score_distribution(values)}
        )
    )
    for given in (
        values,
        values.tolist(),
        score_distribution(values),
        tmp_path / "ref.npy",
        tmp_path / "ref.txt",
        tmp_path / "ref.ecsv",
        tmp_path / "dist.json",
        tmp_path / "model.card.json",
    ):
        assert load_reference(given)["values"] == expected, given
    assert load_reference(None) is None

    (tmp_path / "old.card.json").write_text(
        json.dumps({"format": "astrid-braai-card/1", "metrics": {}})
    )
    with pytest.raises(AstridInputError, match="no validation score distribution"):
        load_reference(tmp_path / "old.card.json")
    Table({"drb": values}).write(tmp_path / "other.ecsv")
    with pytest.raises(AstridInputError, match="'score' column"):
        load_reference(tmp_path / "other.ecsv")
    with pytest.raises(AstridFileError, match="no such reference-scores file"):
        load_reference(tmp_path / "missing.npy")
    (tmp_path / "broken.json").write_text("{ not json")
    with pytest.raises(AstridFileError, match="broken.json"):
        load_reference(tmp_path / "broken.json")
    with pytest.raises(AstridInputError, match="no finite scores"):
        load_reference([np.nan, np.nan])


def test_reference_beside_a_model(tmp_path):
    values = _scores(300, 0.8, 9)
    card = {"format": "astrid-braai-card/1", "validation_scores": score_distribution(values)}
    (tmp_path / "vgg6.card.json").write_text(json.dumps(card))
    for name in ("vgg6.keras", "vgg6.tflite"):
        found = reference_for_model(tmp_path / name)
        assert found["values"] == card["validation_scores"]["values"]
        assert found["source"]  # says where it came from
    assert reference_for_model(tmp_path / "d6_m7.h5") is None
    (tmp_path / "old.card.json").write_text(json.dumps({"format": "astrid-braai-card/1"}))
    assert reference_for_model(tmp_path / "old.keras") is None  # trained before the drift check


# ----------------------------------------------------------------------------- with models


def _stamps(n, seed, real_fraction=0.5, noise=1.0):
    """Real = a PSF in science and difference; bogus = noise only; sky in science and reference."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:63, :63] - 31
    blob = np.exp(-0.5 * (xx**2 + yy**2) / 2.0**2)
    stamps = rng.normal(0.0, noise, size=(n, 63, 63, 3)).astype(np.float32)
    labels = (rng.random(n) < real_fraction).astype(np.int8)
    amplitude = rng.uniform(3.0, 10.0, n)[:, None, None] * labels[:, None, None]
    stamps[..., 0] += amplitude * blob
    stamps[..., 2] += amplitude * blob
    stamps[..., :2] += 50.0
    return stamps, labels


@pytest.mark.slow
def test_model_card_records_validation_scores_and_scoring_runs_compare_with_it(tmp_path):
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from astrid.braai import TrainConfig, train
    from astrid.schema import new_triplet_dataset
    from astrid.score import score

    def dataset(n, seed, **kwargs):
        stamps, labels = _stamps(n, seed, **kwargs)
        fields = np.array([f"f{i % 4}" for i in range(n)], dtype=object)
        return new_triplet_dataset(stamps, {"label": labels, "field": fields}), stamps

    keras.utils.set_random_seed(0)
    inputs = keras.Input((63, 63, 3))
    hidden = keras.layers.Conv2D(4, 5, strides=2, activation="relu")(inputs)
    hidden = keras.layers.GlobalMaxPooling2D()(hidden)
    net = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden), name="small")
    training, _ = dataset(256, 0)
    validation, _ = dataset(300, 1)
    result = train(
        training,
        net,
        validation=validation,
        config=TrainConfig(epochs=4, learning_rate=3e-3, patience=None, seed=0),
        out_dir=tmp_path,
        name="small",
    )
    recorded = result.card["validation_scores"]
    assert recorded["n"] == 300 and len(recorded["values"]) == 300
    assert json.loads(result.card_path.read_text())["validation_scores"] == recorded
    # The card's distribution is the model's own scores on the validation set.
    own = score(validation, result.model_path)
    np.testing.assert_allclose(recorded["values"], np.sort(own.values), atol=1e-5)

    # A held-out set drawn like the validation set: quiet.
    held_out, _ = dataset(300, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = compare(
            score(held_out, result.model_path).values, reference_for_model(result.model_path)
        )
    assert not quiet.drifted
    # Noisier images with few transients (another camera, bad seeing): flagged.
    shifted, _ = dataset(300, 3, real_fraction=0.1, noise=3.0)
    with pytest.warns(DriftWarning):
        flagged = compare(score(shifted, result.model_path).values, result.card_path)
    assert flagged.psi > PSI_LEVEL > quiet.psi


@pytest.mark.shared_data
def test_d6_m7_validated_on_real_alerts_flags_simulated_stamps():
    """d6_m7's reference: its own scores (drb) on real ZTF alerts; other real alerts are quiet, simulated ones not."""
    pytest.importorskip("tensorflow")
    import xarray as xr

    from astrid.alerts import read_alerts
    from astrid.score import score
    from astrid.triplets import SyntheticScene, detect, make_triplets, synthetic_difference

    folder = shared_data("ztf_alerts", "fink-broker", "all_distribute_topics")
    model = shared_data("braai", "d6_m7.h5")
    if folder is None or model is None:
        pytest.skip("shared ZTF alerts or the d6_m7 model (../shared/data) are not present")
    alerts = read_alerts(sorted(glob.glob(str(folder / "*.avro"))))
    alerts = alerts.isel(candidate=np.flatnonzero(alerts["drbversion"].values == "d6_m7"))
    held_out = alerts.isel(candidate=slice(0, 150))
    reference = alerts["drb"].values[150:]  # ZTF's own d6_m7 scores of the other alerts
    with warnings.catch_warnings():
        warnings.simplefilter("error", DriftWarning)
        quiet = compare(score(held_out, model).values, reference, what="held-out ZTF alerts")
    assert not quiet.drifted

    parts = []
    for seed in range(3):
        result = synthetic_difference(
            (256, 256), SyntheticScene(n_stars=40, n_transients=30), seed=seed
        )
        candidates = detect(
            result, 5.0, reference_sources=False, galaxies=False, prefix=f"sim{seed}-"
        )
        parts.append(make_triplets(result, candidates))
    simulated = xr.concat(parts, dim="candidate")
    assert simulated.sizes["candidate"] >= MIN_SCORES
    with pytest.warns(DriftWarning, match="simulated"):
        flagged = compare(score(simulated, model).values, reference, what="simulated stamps")
    assert flagged.psi > PSI_LEVEL > quiet.psi
