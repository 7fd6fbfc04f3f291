"""Training sets over many pairs: labels, random bogus, balance, streaming, leak-free splits."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from astrid.errors import AstridInputError
from astrid.triplets import (
    ExampleOptions,
    SyntheticScene,
    balance_classes,
    build_training_set,
    load_triplets,
    split_by_field,
    split_by_time,
    synthetic_difference,
    validate_triplets,
)

N_RANDOM = 4


@pytest.fixture(scope="module")
def results():
    return [
        synthetic_difference(
            (256, 256),
            SyntheticScene(
                n_transients=6,
                n_hot_pixels=6,
                n_fading=1,
            ),
            mjd=59000.0 + 10 * i,
            seed=20 + i,
        )
        for i in range(4)
    ]


@pytest.fixture(scope="module")
def inputs(results):
    return [(r, r.truth, f"field{i}") for i, r in enumerate(results)]


@pytest.fixture(scope="module")
def full_set(inputs):
    examples = ExampleOptions(random_bogus=N_RANDOM, negative=True)
    return build_training_set(inputs, examples, balance=None)


def test_every_example_is_labelled_from_the_truth(full_set, results):
    validate_triplets(full_set)
    labels = full_set["label"].values
    kinds = full_set["kind"].values
    origins = full_set["origin"].values
    assert set(origins) == {"detection", "random"}
    assert np.all(labels[np.isin(kinds, ["supernova", "variable"])] == 1)
    assert np.all(labels[~np.isin(kinds, ["supernova", "variable"])] == 0)
    assert np.all(kinds[origins == "random"] == "random")
    assert (origins == "random").sum() == N_RANDOM * len(results)
    # Every injected transient of every image is a real example.
    assert (labels == 1).sum() >= sum(
        int(np.isin(r.truth["kind"], ["supernova", "variable"]).sum()) for r in results
    )
    assert np.any(kinds == "hot_pixel")
    ids = full_set["candidate_id"].values
    assert len(set(ids)) == len(ids)
    assert set(full_set["field"].values) == {f"field{i}" for i in range(4)}
    assert full_set.attrs["n_images"] == 4


def test_random_examples_are_on_good_pixels_away_from_everything(full_set, results):
    for i, result in enumerate(results):
        here = full_set.isel(candidate=np.flatnonzero(full_set["field"].values == f"field{i}"))
        random = here["origin"].values == "random"
        x, y = here["stamp_x"].values[random], here["stamp_y"].values[random]
        assert not result.mask[y, x].any() and result.footprint[y, x].all()
        others = np.column_stack([here["xpos"].values[~random], here["ypos"].values[~random]])
        truth = np.column_stack([result.truth["x_ref"], result.truth["y_ref"]])
        for point in np.column_stack([x, y]):
            assert np.min(np.hypot(*(others - point).T)) >= 4.0
            assert np.min(np.hypot(*(truth - point).T)) >= 4.0
        assert here["valid"].values[random][:, 31, 31, :].all()


def test_balance_gives_the_requested_fraction(inputs, full_set):
    examples = ExampleOptions(random_bogus=N_RANDOM, negative=True)
    balanced = build_training_set(inputs, examples, balance=0.5)
    n_real = int((full_set["label"].values == 1).sum())
    assert balanced.attrs["n_real"] == n_real
    assert balanced.attrs["n_bogus"] == n_real
    assert balanced.attrs["real_fraction"] == 0.5
    # A subset of the full set, same stamps.
    ids = balanced["candidate_id"].values
    np.testing.assert_array_equal(
        balanced["triplets"].values, full_set.sel(candidate_id=list(ids))["triplets"].values
    )
    examples = ExampleOptions(random_bogus=N_RANDOM, negative=True)
    again = build_training_set(inputs, examples, balance=0.5)
    assert again["candidate_id"].values.tolist() == ids.tolist(), "deterministic for a seed"


def test_balance_classes_subsamples_the_majority(full_set):
    labels = full_set["label"].values
    n_real, n_bogus = int((labels == 1).sum()), int((labels == 0).sum())
    for fraction in (0.25, 0.5, 0.6, 0.9):
        out = balance_classes(full_set, fraction, seed=1)
        kept_real = int((out["label"].values == 1).sum())
        kept_bogus = int((out["label"].values == 0).sum())
        if round(n_real * (1 - fraction) / fraction) <= n_bogus:
            assert kept_real == n_real and kept_bogus == round(n_real * (1 - fraction) / fraction)
        else:
            assert kept_bogus == n_bogus and kept_real == round(n_bogus * fraction / (1 - fraction))
        assert abs(kept_real / (kept_real + kept_bogus) - fraction) < 0.02
        assert np.all(np.diff(out["id"].values[out["field"].values == "field0"]) != 0)
    only_bogus = full_set.isel(candidate=np.flatnonzero(labels == 0))
    assert balance_classes(only_bogus).sizes["candidate"] == n_bogus
    with pytest.raises(AstridInputError, match="real_fraction"):
        balance_classes(full_set, 1.0)


def test_streaming_to_a_store_gives_the_same_set(tmp_path, inputs, full_set):
    examples = ExampleOptions(random_bogus=N_RANDOM, negative=True)
    streamed = build_training_set(inputs, examples, balance=None, path=tmp_path / "train.zarr")
    assert hasattr(streamed["triplets"].data, "dask")
    assert streamed["candidate_id"].values.tolist() == full_set["candidate_id"].values.tolist()
    np.testing.assert_array_equal(streamed["triplets"].values, full_set["triplets"].values)
    stored = load_triplets(tmp_path / "train.zarr")
    assert stored.sizes["candidate"] == full_set.sizes["candidate"]
    examples = ExampleOptions(random_bogus=N_RANDOM, negative=True)
    balanced = build_training_set(inputs, examples, balance=0.5, path=tmp_path / "b.nc")
    assert balanced.attrs["real_fraction"] == 0.5
    assert load_triplets(tmp_path / "b.nc").sizes["candidate"] == full_set.sizes["candidate"], (
        "the store keeps all"
    )


def test_forced_real_examples_at_undetected_transients():
    faint = synthetic_difference(
        (256, 256), SyntheticScene(n_transients=5, n_hot_pixels=0, transient_snr=(3.0, 4.0)), seed=8
    )
    examples = ExampleOptions(random_bogus=0, force_real_snr=2.0)
    ds = build_training_set([(faint, faint.truth, "faint")], examples, balance=None)
    forced = ds.isel(candidate=np.flatnonzero(ds["origin"].values == "truth"))
    assert forced.sizes["candidate"] >= 1
    assert np.all(forced["label"].values == 1)
    truth = faint.truth
    for tid, x in zip(forced["truth_id"].values, forced["xpos"].values):
        assert x == truth["x_ref"][truth["id"] == tid][0]


def test_split_by_field_never_shares_a_field(full_set):
    train, test = split_by_field(full_set, test_fraction=0.3, seed=2)
    train_fields, test_fields = set(train["field"].values), set(test["field"].values)
    assert train_fields and test_fields and not train_fields & test_fields
    assert train.sizes["candidate"] + test.sizes["candidate"] == full_set.sizes["candidate"]
    assert test.sizes["candidate"] >= 0.3 * full_set.sizes["candidate"]
    again, _ = split_by_field(full_set, test_fraction=0.3, seed=2)
    assert set(again["field"].values) == train_fields
    one = full_set.isel(candidate=np.flatnonzero(full_set["field"].values == "field0"))
    with pytest.raises(AstridInputError, match="two fields"):
        split_by_field(one)


def test_split_by_time_tests_on_the_latest_fields(full_set):
    train, test = split_by_time(full_set, test_fraction=0.2)
    assert not set(train["field"].values) & set(test["field"].values)
    assert np.min(test["epoch"].values) > np.max(train["epoch"].values)
    assert "field3" in set(test["field"].values)


def test_bad_inputs_are_refused(inputs, results):
    with pytest.raises(AstridInputError, match="balance"):
        build_training_set(inputs, balance=1.5)
    with pytest.raises(AstridInputError, match="random_bogus"):
        build_training_set(inputs, ExampleOptions(random_bogus=-1))
    with pytest.raises(AstridInputError, match="inputs\\[0\\]"):
        build_training_set([results[0]])
    with pytest.raises(AstridInputError, match="no image pairs"):
        build_training_set([])
    with pytest.raises(AstridInputError, match="truth"):
        build_training_set([(results[0], "truth.ecsv", "f")])


# ----------------------------------------------------------------------------- simulated data


@pytest.mark.slow
def test_training_set_from_a_simulated_survey_folder(tmp_path):
    import astrid.simulate

    astrid.simulate.survey(
        tmp_path / "survey", n_fields=2, size=512, seed=3, n_stars=400, n_supernovae=8
    )
    examples = ExampleOptions(random_bogus=3, negative=True)
    ds = build_training_set(tmp_path / "survey", examples, balance=None)
    validate_triplets(ds)
    kinds = ds["kind"].values
    labels = ds["label"].values
    assert set(ds["field"].values) == set(astrid.Manifest.load(tmp_path / "survey").targets)
    assert np.all(labels[np.isin(kinds, ["supernova", "variable"])] == 1)
    assert np.all(
        labels[np.isin(kinds, ["cosmic_ray", "hot_pixel", "satellite_trail", "asteroid", "random"])]
        == 0
    )
    assert (labels == 1).any() and (labels == 0).any()
    assert np.isfinite(ds["epoch"].values).all()
    train, test = split_by_field(ds, 0.5)
    assert not set(train["field"].values) & set(test["field"].values)
    assert isinstance(train, xr.Dataset)


@pytest.mark.slow
def test_training_set_from_simulated_pairs():
    import astrid.simulate

    sims = [astrid.simulate.pair(size=512, seed=s, n_stars=400, n_supernovae=8) for s in (5, 6)]
    ds = build_training_set(sims, ExampleOptions(random_bogus=2), balance=0.5)
    assert set(ds["field"].values) == {"sim0000", "sim0001"}
    assert ds.attrs["real_fraction"] == pytest.approx(0.5, abs=0.05)
    real = ds.isel(candidate=np.flatnonzero(ds["label"].values == 1))
    assert set(real["kind"].values) <= {"supernova", "variable"}
    # Hosts come from the simulator's galaxy catalogue: supernovae near a host get a finite distance.
    assert np.isfinite(real["host_distance"].values).all()


def test_concat_triplets_keeps_the_coordinates_every_set_has():
    from astrid.triplets import concat_triplets, new_triplet_dataset

    rng = np.random.default_rng(0)
    first = new_triplet_dataset(
        rng.normal(size=(3, 63, 63, 3)),
        coords={"candidate_id": ["a0", "a1", "a2"], "label": [1, 0, 1], "kind": ["x"] * 3},
    )
    second = new_triplet_dataset(
        rng.normal(size=(2, 63, 63, 3)),
        coords={"candidate_id": ["b0", "b1"], "label": [0, 0], "background": [4, 5]},
    )
    both = concat_triplets([first, second])
    assert both.sizes["candidate"] == 5
    assert list(both["label"].values) == [1, 0, 1, 0, 0]
    assert "kind" not in both.coords and "background" not in both.coords
    np.testing.assert_array_equal(both["triplets"].values[3:], second["triplets"].values)
    assert both.sel(candidate_id="b1")["label"].item() == 0  # indexed by candidate_id
    with pytest.raises(AstridInputError, match="candidate_id"):
        concat_triplets([first, first])
    with pytest.raises(AstridInputError, match="no triplet set"):
        concat_triplets([])


def test_relabel_says_the_labels_again_with_other_real_kinds(full_set):
    from astrid.triplets import new_triplet_dataset, relabel

    kinds = full_set["kind"].values.astype(str)
    wider = relabel(full_set, ("supernova", "variable", "hot_pixel"))
    assert (kinds == "hot_pixel").any()
    expected = np.isin(kinds, ["supernova", "variable", "hot_pixel"]).astype(int)
    np.testing.assert_array_equal(wider["label"].values, expected)
    assert wider.attrs["detect_real_kinds"] == "supernova,variable,hot_pixel"
    np.testing.assert_array_equal(
        full_set["label"].values, np.isin(kinds, ["supernova", "variable"])
    )
    # Back to the default: the labels label_candidates gave; one kind may be a bare string.
    np.testing.assert_array_equal(relabel(wider)["label"].values, full_set["label"].values)
    assert relabel(full_set, "hot_pixel")["label"].values.sum() == (kinds == "hot_pixel").sum()

    rng = np.random.default_rng(1)
    ds = new_triplet_dataset(
        rng.normal(size=(4, 63, 63, 3)),
        coords={
            "candidate_id": ["a", "b", "c", "d"],
            "label": [1, -1, 0, 1],
            "kind": ["supernova", "unknown", "asteroid", "known_transient"],
        },
    )
    # Unlabelled candidates stay unlabelled; positions without a kind stay real.
    assert list(relabel(ds, ["asteroid"])["label"].values) == [0, -1, 1, 1]
    with pytest.raises(AstridInputError, match="real_kinds"):
        relabel(ds, [])
    with pytest.raises(AstridInputError, match="no kind"):
        relabel(ds.drop_vars("kind"))
