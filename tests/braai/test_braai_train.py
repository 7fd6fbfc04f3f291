"""braai training: learning, model card, determinism, leak-free splits, class weights, augmentation, fine-tuning."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from astrid.braai import (  # noqa: E402
    TrainConfig,
    class_weights,
    dataset_hash,
    evaluate,
    load_braai,
    load_trained,
    predict,
    split_groups,
    train,
    vgg6,
)
from astrid.braai.runtime import training_dataset  # noqa: E402
from astrid.errors import AstridInputError, AstridWarning  # noqa: E402
from astrid.paths import shared_data  # noqa: E402
from astrid.schema import new_triplet_dataset  # noqa: E402


def synthetic_triplets(n, seed=0, n_fields=5, real_fraction=0.5):
    """Stand-in triplets: real = a PSF in science and difference; bogus = a sharp spike or nothing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:63, :63] - 31
    stamps = rng.normal(0.0, 1.0, size=(n, 63, 63, 3)).astype(np.float32)
    labels = (rng.random(n) < real_fraction).astype(np.int8)
    snr = rng.uniform(2.0, 8.0, n)
    kinds = np.empty(n, dtype=object)
    for i in range(n):
        dx, dy = rng.uniform(-1.5, 1.5, 2)
        blob = np.exp(-0.5 * ((xx - dx) ** 2 + (yy - dy) ** 2) / 1.6**2)
        stamps[i, :, :, 0] += 3.0 * blob * rng.uniform(0.5, 3.0)  # a host or star in both epochs
        stamps[i, :, :, 1] += 3.0 * blob * rng.uniform(0.5, 3.0)
        if labels[i]:
            stamps[i, :, :, 0] += snr[i] * blob
            stamps[i, :, :, 2] += snr[i] * blob
            kinds[i] = "supernova"
        elif rng.random() < 0.6:
            y, x = rng.integers(29, 34, 2)
            stamps[i, y, x, 0] += 2 * snr[i]
            stamps[i, y, x, 2] += 2 * snr[i]
            kinds[i] = "cosmic_ray"
        else:
            kinds[i] = "random"
    stamps[..., :2] += 50.0  # sky in the science and reference stamps
    fields = np.array([f"field{i % n_fields}" for i in range(n)], dtype=object)
    objects = np.array(
        [f"obj{i // 3:04d}" for i in range(n)], dtype=object
    )  # three detections per object
    epochs = 59000.0 + 5.0 * (np.arange(n) % 7)
    return new_triplet_dataset(
        stamps,
        {
            "label": labels,
            "kind": kinds,
            "snr": snr,
            "field": fields,
            "objectId": objects,
            "epoch": epochs,
        },
    )


@pytest.fixture(scope="module")
def data():
    return synthetic_triplets(400, seed=1)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A few epochs on a small set, validated on stamps with shuffled labels (so the loss wanders)."""
    ds = synthetic_triplets(128, seed=11)
    noise = synthetic_triplets(64, seed=12)
    noise = noise.assign_coords(
        label=("candidate", np.random.default_rng(0).permutation(noise["label"].values))
    )
    out = tmp_path_factory.mktemp("model")
    result = train(
        ds,
        validation=noise,
        # float32: the check of the restored weights compares the training's own validation loss
        config=TrainConfig(
            epochs=3, learning_rate=3e-3, patience=None, seed=0, precision="float32"
        ),
        out_dir=out,
        name="toy",
    )
    return ds, noise, result


# --------------------------------------------------------------------------- #
# learning, early stopping, saving
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_learns_a_separable_set(data):
    trained = train(data, config=TrainConfig(epochs=8, learning_rate=1e-3, patience=3, seed=0))
    history = trained.history
    assert history["loss"][-1] < history["loss"][0]
    groups = trained.card["data"]["validation_groups"]
    validation = data.isel(candidate=np.flatnonzero(np.isin(data["field"].values, groups)))
    assert not set(groups) & set(data["field"].values[~np.isin(data["field"].values, groups)])
    result = evaluate(trained.model, validation)
    assert result["roc_auc"] > 0.95
    assert result["aucpr"] > 0.95
    # The card reports the same numbers for the validation set.
    assert trained.card["metrics"]["roc_auc"] == pytest.approx(result["roc_auc"], abs=1e-6)
    assert trained.card["data"]["split"] == "field"
    assert trained.card["data"]["sha256_validation"] == dataset_hash(validation)


def test_best_weights_are_restored(quick):
    _, validation, trained = quick
    # The final model's validation loss is the lowest of all epochs, not the last one's.
    scores = np.clip(predict(trained.model, validation).astype(float), 1e-7, 1 - 1e-7)
    y = validation["label"].values
    loss = -np.mean(y * np.log(scores) + (1 - y) * np.log(1 - scores))
    assert loss == pytest.approx(min(trained.history["val_loss"]), rel=1e-4)
    best = int(np.argmin(trained.history["val_loss"])) + 1
    assert trained.card["training"]["best_epoch"] == best
    assert trained.card["training"]["epochs_run"] == 3 == len(trained.history["epoch_seconds"])


def test_model_card_and_files(quick):
    ds, validation, trained = quick
    card = json.loads(trained.card_path.read_text())
    assert trained.model_path.name == "toy.keras" and trained.model_path.exists()
    assert trained.card_path.name == "toy.card.json"
    assert card == json.loads(json.dumps(trained.card))
    assert card["format"] == "astrid-braai-card/1"
    assert card["norm"] == "rowwise"
    assert card["model"]["architecture"] == "VGG6" and card["model"]["n_parameters"] == 312_081
    datetime.fromisoformat(card["created"])
    assert set(card["versions"]) >= {"astrid", "tensorflow", "keras", "numpy"}
    data_card = card["data"]
    assert data_card["sha256"] == dataset_hash(ds)
    assert data_card["sha256_validation"] == dataset_hash(validation)
    assert data_card["split"] == "given"
    assert data_card["n_train"] == ds.sizes["candidate"]
    assert data_card["n_validation"] == validation.sizes["candidate"]
    assert data_card["n_total"] == ds.sizes["candidate"] + validation.sizes["candidate"]
    labels = ds["label"].values
    assert data_card["train_class_counts"] == {
        "real": int(labels.sum()),
        "bogus": int((labels == 0).sum()),
    }
    assert data_card["validation_class_counts"]["bogus"] == int((validation["label"] == 0).sum())
    params = card["parameters"]
    assert params["batch_size"] == 64 and params["learning_rate"] == 3e-3 and params["seed"] == 0
    assert params["class_weight"]["1"] == pytest.approx(labels.size / (2 * labels.sum()))
    assert params["class_weight"]["0"] == pytest.approx(labels.size / (2 * (labels == 0).sum()))
    assert card["metrics"]["n"] == validation.sizes["candidate"]
    assert card["history"]["val_loss"] == trained.history["val_loss"]
    assert card["training"]["triplets_per_second"] > 0
    # The saved model scores like the trained one and knows its preprocessing.
    loaded = load_trained(trained.model_path)
    assert loaded.astrid_norm == "rowwise"
    some = ds.isel(candidate=slice(0, 16))
    np.testing.assert_allclose(predict(loaded, some), predict(trained.model, some), atol=1e-6)


def test_dataset_hash_changes_with_labels_and_pixels(data):
    small = data.isel(candidate=slice(0, 10))
    flipped = small.assign_coords(label=("candidate", 1 - small["label"].values))
    touched = small.copy(deep=True)
    touched["triplets"][0, 0, 0, 0] += 1.0
    hashes = {dataset_hash(small), dataset_hash(flipped), dataset_hash(touched)}
    assert len(hashes) == 3
    assert dataset_hash(small) == dataset_hash(small.copy(deep=True))


# --------------------------------------------------------------------------- #
# determinism
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_same_seed_same_weights_and_history(precision):
    ds = synthetic_triplets(128, seed=5)
    config = TrainConfig(epochs=1, seed=3, batch_size=32, precision=precision)
    first = train(ds, config=config)
    second = train(ds, config=config)
    timing = "epoch_seconds"
    assert {k: v for k, v in first.history.items() if k != timing} == {
        k: v for k, v in second.history.items() if k != timing
    }
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert first.card["data"]["validation_groups"] == second.card["data"]["validation_groups"]
    assert first.card["parameters"]["learning_rate"] == 3e-4  # braai's, the default from scratch


def test_mixed_bfloat16_trains_and_returns_a_float32_model(data):
    result = train(
        data, config=TrainConfig(epochs=8, learning_rate=1e-3, seed=0, precision="mixed_bfloat16")
    )
    assert result.card["parameters"]["precision"] == "mixed_bfloat16"
    assert result.history["loss"][-1] < result.history["loss"][0]
    # What the user gets computes in float32: prediction and TFLite export as for any model.
    assert {layer.dtype_policy.name for layer in result.model.layers} == {"float32"}
    assert all(w.dtype == np.float32 for w in result.model.get_weights())
    groups = result.card["data"]["validation_groups"]
    validation = data.isel(candidate=np.flatnonzero(np.isin(data["field"].values, groups)))
    assert evaluate(result.model, validation)["roc_auc"] > 0.95
    # The card's metrics are of the float32 model.
    assert result.card["metrics"]["roc_auc"] == pytest.approx(
        evaluate(result.model, validation)["roc_auc"], abs=1e-6
    )


def test_precision_auto_follows_the_cpu(monkeypatch):
    from astrid.braai import runtime

    monkeypatch.setattr(runtime, "_cpu_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    assert runtime.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: {"avx2", "fma"})
    assert runtime.resolve_precision("auto") == "float32"
    assert runtime.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(AstridInputError, match="precision='float16'"):
        TrainConfig(precision="float16")


# --------------------------------------------------------------------------- #
# splits
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("by, coord", [("field", "field"), ("object", "objectId")])
def test_group_split_never_shares_a_group(data, by, coord):
    for seed in range(5):
        train_index, validation_index, info = split_groups(data, by, fraction=0.25, seed=seed)
        groups = data[coord].values
        assert not set(groups[train_index]) & set(groups[validation_index])
        assert np.union1d(train_index, validation_index).size == data.sizes["candidate"]
        assert validation_index.size >= 0.25 * data.sizes["candidate"]
        assert set(info["validation_groups"]) == set(groups[validation_index])
        assert info["coordinate"] == coord


def test_time_split_holds_out_the_latest_epochs(data):
    train_index, validation_index, info = split_groups(data, "time", fraction=0.3)
    epochs = data["epoch"].values
    assert epochs[validation_index].min() > epochs[train_index].max()
    assert validation_index.size >= 0.3 * data.sizes["candidate"]


def test_split_errors(data):
    one_field = data.assign_coords(
        field=("candidate", np.full(data.sizes["candidate"], "f0", dtype=object))
    )
    with pytest.raises(AstridInputError, match="only one field"):
        split_groups(one_field, "field")
    with pytest.raises(AstridInputError, match="no coordinate to split by object"):
        split_groups(data.drop_vars("objectId"), "object")
    with pytest.raises(AstridInputError, match="split="):
        split_groups(data, "random")
    with pytest.raises(AstridInputError, match="fraction"):
        split_groups(data, "field", fraction=1.0)


def test_validation_of_one_class_warns():
    ds = synthetic_triplets(60, seed=2, n_fields=2)
    _, validation_index, info = split_groups(ds, "field", fraction=0.4, seed=0)
    labels = ds["label"].values.copy()
    labels[validation_index] = 0  # the split depends on the fields only, not the labels
    ds = ds.assign_coords(label=("candidate", labels))
    with pytest.warns(AstridWarning, match="only bogus"):
        result = train(
            ds, config=TrainConfig(epochs=1, split="field", validation_fraction=0.4, seed=0)
        )
    assert result.card["metrics"] == {}


# --------------------------------------------------------------------------- #
# class weights and augmentation
# --------------------------------------------------------------------------- #


def test_class_weights():
    labels = np.array([1] * 10 + [0] * 30)
    balanced = class_weights(labels)
    assert balanced == {0: pytest.approx(40 / 60), 1: pytest.approx(40 / 20)}
    # Both classes then weigh the same in the loss.
    assert 10 * balanced[1] == pytest.approx(30 * balanced[0])
    assert class_weights(labels, None) == {0: 1.0, 1: 1.0}
    assert class_weights(labels, {0: 1, 1: 4}) == {0: 1.0, 1: 4.0}
    for bad in ("inverse", {0: 1.0}, {0: 1.0, 1: -2.0}, {0: 1.0, 1: float("nan")}, 3.0):
        with pytest.raises(AstridInputError, match="class_weight"):
            class_weights(labels, bad)


def test_training_batches_carry_the_class_weights():
    x = np.zeros((6, 63, 63, 3), np.float32)
    y = np.array([1, 0, 0, 1, 0, 0], np.int8)
    w = np.where(y == 1, 2.0, 0.5).astype(np.float32)
    batches = list(training_dataset(x, y, w, batch_size=4, shuffle=True, augment=True, seed=0))
    labels = np.concatenate([b[1].numpy().ravel() for b in batches])
    weights = np.concatenate([b[2].numpy() for b in batches])
    np.testing.assert_array_equal(weights, np.where(labels == 1, 2.0, 0.5))


def _dihedral(stamp):
    out = []
    for flip in (False, True):
        s = stamp[:, ::-1] if flip else stamp
        out += [np.rot90(s, k, axes=(0, 1)) for k in range(4)]
    return out


def test_augmentation_preserves_labels_and_shapes():
    rng = np.random.default_rng(0)
    n = 24
    x = rng.normal(size=(n, 63, 63, 3)).astype(np.float32)
    tags = np.arange(n)  # labels that identify each stamp

    def one_epoch(ds_iter):
        stamps, labels = [], []
        for xb, yb in ds_iter:
            stamps.append(xb.numpy())
            labels.append(yb.numpy().ravel())
        return np.concatenate(stamps), np.concatenate(labels).astype(int)

    pipeline = training_dataset(x, tags, None, batch_size=8, shuffle=True, augment=True, seed=7)
    stamps, labels = one_epoch(pipeline)
    again, labels_again = one_epoch(pipeline)
    assert stamps.shape == x.shape and stamps.dtype == np.float32
    assert sorted(labels) == list(range(n))
    used = set()
    for stamp, tag in zip(stamps, labels):
        matches = [k for k, t in enumerate(_dihedral(x[tag])) if np.array_equal(stamp, t)]
        assert matches, (
            "each augmented stamp is a rotation/flip of its own original, all channels together"
        )
        used.add(matches[0])
    assert len(used) >= 4
    # A new epoch draws new transforms (and a new order) ...
    assert not (np.array_equal(labels, labels_again) and np.array_equal(stamps, again))
    # ... but the same seed gives the same sequence.
    fresh = training_dataset(x, tags, None, batch_size=8, shuffle=True, augment=True, seed=7)
    stamps_fresh, labels_fresh = one_epoch(fresh)
    np.testing.assert_array_equal(labels_fresh, labels)
    np.testing.assert_array_equal(stamps_fresh, stamps)


def test_no_augmentation_no_shuffle_is_the_identity():
    x = np.random.default_rng(1).normal(size=(10, 63, 63, 3)).astype(np.float32)
    batches = list(
        training_dataset(x, np.arange(10), None, batch_size=4, shuffle=False, augment=False, seed=0)
    )
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), x)


# --------------------------------------------------------------------------- #
# fine-tuning
# --------------------------------------------------------------------------- #


def test_fine_tuning_starts_from_the_given_weights():
    ds = synthetic_triplets(64, seed=3)
    keras.utils.set_random_seed(123)
    source = vgg6()
    before = [w.copy() for w in source.get_weights()]
    result = train(
        ds,
        config=TrainConfig(epochs=1, split=None, learning_rate=1e-9, seed=0),
        fine_tune_from=source,
    )
    after = result.model.get_weights()
    for a, b in zip(before, after):
        np.testing.assert_allclose(b, a, atol=1e-6)
    # The given model is not changed, and a fresh start would differ.
    for a, b in zip(before, source.get_weights()):
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(0)  # what train(seed=0) would start from without fine_tune_from
    assert not np.allclose(vgg6().get_weights()[0], before[0], atol=1e-3)
    assert result.card["model"]["fine_tuned_from"].startswith("keras.Model")
    assert result.card["data"]["split"] is None and result.card["data"]["n_validation"] == 0


def test_fine_tuning_defaults_to_a_lower_learning_rate(quick):
    ds, _, first = quick
    tuned = train(
        ds.isel(candidate=slice(0, 64)),
        config=TrainConfig(epochs=1, split=None, seed=0),
        fine_tune_from=first.model_path,
    )
    assert tuned.card["parameters"]["learning_rate"] == 3e-5
    assert tuned.card["model"]["fine_tuned_from"] == str(first.model_path)
    # one Adam step of at most ~3e-5 away from the saved weights
    for a, b in zip(first.model.get_weights(), tuned.model.get_weights()):
        np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.shared_data
def test_fine_tuning_from_ztf_d6_m7():
    path = shared_data("braai", "d6_m7.h5")
    if path is None:
        pytest.skip("shared braai models (../shared/data/braai) are not present")
    ds = synthetic_triplets(48, seed=6)
    published = load_braai(path)
    result = train(
        ds, config=TrainConfig(epochs=1, split=None, learning_rate=1e-9), fine_tune_from=path
    )
    assert result.card["norm"] == "rowwise" and result.model.astrid_norm == "rowwise"
    np.testing.assert_allclose(predict(result.model, ds), predict(published, ds), atol=1e-4)


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #


def test_bad_input(data):
    small = data.isel(candidate=slice(0, 40))
    with pytest.raises(AstridInputError, match="label"):
        train(small.drop_vars("label"), config=TrainConfig(epochs=1))
    with pytest.raises(AstridInputError, match="0 \\(bogus\\) or 1 \\(real\\)"):
        train(
            small.assign_coords(label=("candidate", np.full(40, 2))), config=TrainConfig(epochs=1)
        )
    all_real = small.assign_coords(label=("candidate", np.ones(40, np.int8)))
    with pytest.raises(AstridInputError, match="no bogus"):
        train(all_real, config=TrainConfig(epochs=1, split=None))
    with pytest.raises(AstridInputError, match="xarray.Dataset"):
        train(np.zeros((4, 63, 63, 3)), config=TrainConfig(epochs=1))
    with pytest.raises(AstridInputError, match="stamps are 32x32"):
        train(small.isel(y=slice(0, 32), x=slice(0, 32)), config=TrainConfig(epochs=1))
    with pytest.raises(AstridInputError, match="epochs"):
        train(small, config=TrainConfig(epochs=0))
    with pytest.raises(AstridInputError, match="norm"):
        train(small, config=TrainConfig(norm="zscore"))
    with pytest.raises(AstridInputError, match="unknown braai model"):
        train(small, model="resnet", config=TrainConfig(split=None, epochs=1))
    with pytest.raises(AstridInputError, match="deterministic=False"):
        train(small, config=TrainConfig(jit_compile=True))
    with pytest.raises(AstridInputError, match="fine_tune_from"):
        train(small, fine_tune_from=42, config=TrainConfig(split=None, epochs=1))
