"""braai: architectures, preprocessing, loading ZTF's published models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from astrid.braai import (
    DEFAULT_NORM,
    PAD_VALUE,
    build_model,
    load_braai,
    norm_for_model,
    predict,
    preprocess,
    three_block,
    vgg6,
)
from astrid.errors import AstridFileError, AstridInputError
from astrid.paths import shared_data
from astrid.schema import new_triplet_dataset

h5py = pytest.importorskip("h5py")

# The score braai d6_m7 gives the example alert 714287740515015072 in ZTF's own
# notebook (dmitryduev/braai, nb/braai_run.ipynb, rowwise preprocessing); the
# alert file itself carries no score.
PUBLISHED_SCORE_714287740515015072 = 0.9999416


def _keras():
    return pytest.importorskip("keras")


def _braai_file(name):
    path = shared_data("braai", name)
    if path is None:
        pytest.skip(f"shared braai model file {name} (../shared/data/braai) is not present")
    return path


# --------------------------------------------------------------------------
# preprocessing: compared with braai's make_triplet, stamp by stamp


def _braai_reference(stamps: list[np.ndarray], norm: str) -> np.ndarray:
    """braai's make_triplet for one alert: NaN→0, normalise, pad with 1e-9."""
    keras = _keras()
    out = []
    for stamp in stamps:
        stamp = np.nan_to_num(stamp)
        if norm == "rowwise":
            stamp = keras.utils.normalize(stamp)  # axis=-1, order=2, as braai called it
        else:
            stamp = stamp / np.linalg.norm(stamp)
        ny, nx = stamp.shape
        out.append(
            np.pad(stamp, [(0, 63 - ny), (0, 63 - nx)], mode="constant", constant_values=1e-9)
        )
    return np.stack(out, axis=-1)


def _random_stamps(seed, n, shape=(63, 63)):
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 20.0, size=(n, *shape, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.02] = np.nan
    x[0, 5, :, 1] = 0.0  # an all-zero row stays zero
    x[0, 7, :, 2] = np.nan  # an all-NaN row becomes zero
    return x


@pytest.mark.parametrize("norm", ["rowwise", "l2"])
@pytest.mark.parametrize("shape", [(63, 63), (41, 63), (63, 48), (50, 57)])
def test_preprocess_matches_braai_make_triplet(norm, shape):
    stamps = _random_stamps(1, 4, shape)
    expected = np.stack(
        [_braai_reference([stamps[i, ..., c] for c in range(3)], norm) for i in range(len(stamps))]
    )
    got = preprocess(stamps, norm=norm)
    assert got.shape == (4, 63, 63, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-9)
    if shape != (63, 63):
        assert (got[:, shape[0] :] == PAD_VALUE).all() and (
            got[:, :, shape[1] :] == PAD_VALUE
        ).all()


def test_preprocess_row_norms():
    got = preprocess(_random_stamps(2, 3), norm="rowwise")
    norms = np.sqrt((got.astype(np.float64) ** 2).sum(axis=2))
    zero_rows = norms < 1e-12
    assert zero_rows[0, 5, 1] and zero_rows[0, 7, 2]
    np.testing.assert_allclose(norms[~zero_rows], 1.0, rtol=1e-5)
    whole = preprocess(_random_stamps(2, 3), norm="l2")
    np.testing.assert_allclose(
        np.sqrt((whole.astype(np.float64) ** 2).sum(axis=(1, 2))), 1.0, rtol=1e-5
    )


def test_preprocess_dataset_uses_stamp_extent():
    # a 45x63 cutout NaN-padded into the schema, as read_ztf stores it
    stamps = _random_stamps(3, 2, (45, 63))
    padded = np.full((2, 63, 63, 3), np.nan, np.float32)
    padded[:, :45] = stamps
    ds = new_triplet_dataset(
        padded,
        {
            "stamp_ny": (("candidate", "channel"), np.full((2, 3), 45)),
            "stamp_nx": (("candidate", "channel"), np.full((2, 3), 63)),
        },
    )
    np.testing.assert_array_equal(preprocess(ds), preprocess(stamps))
    # without the extent, NaN padding counts as missing data and becomes 0, not 1e-9
    plain = preprocess(ds.drop_vars(["stamp_ny", "stamp_nx"]))
    assert (plain[:, 45:] == 0).all()


def test_preprocess_single_triplet_and_errors():
    one = _random_stamps(4, 1)[0]
    assert preprocess(one).shape == (1, 63, 63, 3)
    assert preprocess(np.zeros((0, 63, 63, 3))).shape == (0, 63, 63, 3)
    with pytest.raises(AstridInputError, match="norm='max'"):
        preprocess(one, norm="max")
    with pytest.raises(AstridInputError, match="expected an array of shape"):
        preprocess(np.zeros((2, 63, 63)))
    with pytest.raises(AstridInputError, match="64x63"):
        preprocess(np.zeros((2, 64, 63, 3)))
    with pytest.raises(AstridInputError, match="schema"):
        preprocess(new_triplet_dataset(np.zeros((1, 63, 63, 3))).assign_attrs(schema="x"))


# --------------------------------------------------------------------------
# architectures


def test_import_astrid_braai_does_not_import_tensorflow():
    code = (
        "import sys, astrid, astrid.braai, astrid.alerts; "
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_vgg6_is_braai():
    _keras()
    model = vgg6()
    assert model.count_params() == 312_081
    assert model.output_shape == (None, 1)
    assert [layer.name for layer in model.layers] == [
        "conv1",
        "conv2",
        "max_pooling2d",
        "dropout",
        "conv3",
        "conv4",
        "max_pooling2d_1",
        "dropout_1",
        "flatten",
        "fc_1",
        "dropout_2",
        "fc_out",
    ]
    assert model.get_layer("flatten").output.shape[-1] == 6 * 6 * 32


def test_vgg6_matches_published_architecture_json():
    _keras()
    published = json.loads(_braai_file("d6_m7.architecture.json").read_text())
    layers = published["config"]["layers"]
    model = vgg6()
    assert [layer.name for layer in model.layers] == [entry["config"]["name"] for entry in layers]
    for layer, entry in zip(model.layers, layers):
        assert type(layer).__name__ == entry["class_name"]
        cfg = layer.get_config()
        for key in (
            "filters",
            "kernel_size",
            "padding",
            "activation",
            "pool_size",
            "rate",
            "units",
        ):
            if key in entry["config"] and key in cfg:
                want = entry["config"][key]
                assert (list(cfg[key]) if isinstance(cfg[key], tuple) else cfg[key]) == want, (
                    layer.name,
                    key,
                )


def _count_dense_conv_params(model) -> int:
    total = 0
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "Conv2D":
            kh, kw = layer.kernel_size
            total += (kh * kw * layer.input.shape[-1] + 1) * layer.filters
        elif cls == "Dense":
            total += (layer.input.shape[-1] + 1) * layer.units
    return total


def test_three_block():
    _keras()
    model = three_block()
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.get_config()["activation"] == "relu" for c in convs)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert model.get_layer("fc_1").units == 256 and model.get_layer("dropout").rate == 0.5
    assert model.get_layer("fc_out").get_config()["activation"] == "sigmoid"
    assert model.count_params() == _count_dense_conv_params(model)
    assert model.output_shape == (None, 1)


def test_build_model_by_name():
    _keras()
    assert build_model("vgg6").name == "VGG6"
    assert build_model("three-block").name == "ThreeBlock"
    assert build_model("vgg6", input_shape=(31, 31, 3)).input_shape == (None, 31, 31, 3)
    with pytest.raises(AstridInputError, match="unknown braai model 'resnet'"):
        build_model("resnet")


# --------------------------------------------------------------------------
# loading Keras 2 HDF5 files, built here in the layout Keras 2.2.4 writes


def _write_keras2_weights(path, model, *, full_model=False, mutate=None, drop=None):
    with h5py.File(path, "w") as h5:
        root = h5.create_group("model_weights") if full_model else h5
        names = [layer.name for layer in model.layers if layer.name != drop]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        root.attrs["keras_version"] = b"2.2.4-tf"
        for layer in model.layers:
            if layer.name == drop:
                continue
            group = root.create_group(layer.name)
            weight_names = []
            for weight, value in zip(layer.weights, layer.get_weights()):
                short = "kernel:0" if value.ndim > 1 else "bias:0"
                if mutate == layer.name and value.ndim > 1:
                    value = value[:-1]
                group.create_dataset(f"{layer.name}/{short}", data=value)
                weight_names.append(f"{layer.name}/{short}".encode())
            group.attrs["weight_names"] = (
                np.array(weight_names) if weight_names else np.array([], dtype=float)
            )
    return path


def test_load_keras2_weights_roundtrip(tmp_path):
    _keras()
    source = vgg6()
    weights = _write_keras2_weights(tmp_path / "toy_d6_m9.weights.h5", source)
    model = load_braai(weights)
    for a, b in zip(source.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.astrid_norm == "l2"
    full = _write_keras2_weights(tmp_path / "toy.h5", source, full_model=True)
    assert load_braai(full, norm="rowwise").astrid_norm == "rowwise"


def test_load_rejects_mismatched_or_foreign_files(tmp_path):
    _keras()
    source = vgg6()
    bad_shape = _write_keras2_weights(tmp_path / "bad.h5", source, mutate="fc_1")
    with pytest.raises(AstridInputError, match=r"layer 'fc_1' has weights of shapes"):
        load_braai(bad_shape)
    missing = _write_keras2_weights(tmp_path / "missing.h5", source, drop="conv3")
    with pytest.raises(AstridInputError, match=r"without weights in the file: \['conv3'\]"):
        load_braai(missing)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("x", data=np.arange(3))
    with pytest.raises(AstridInputError, match="not a Keras 2 HDF5 model"):
        load_braai(other)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(AstridFileError, match="not an HDF5 file"):
        load_braai(text)
    with pytest.raises(AstridFileError, match="does not exist"):
        load_braai(tmp_path / "absent.h5")


def test_load_rejects_untranslatable_architecture(tmp_path):
    _keras()
    weights = _write_keras2_weights(tmp_path / "w.h5", vgg6())
    arch = {
        "class_name": "Sequential",
        "config": {
            "name": "odd",
            "layers": [
                {
                    "class_name": "Conv2D",
                    "config": {
                        "name": "conv1",
                        "batch_input_shape": [None, 63, 63, 3],
                        "filters": 16,
                        "kernel_size": [3, 3],
                    },
                },
                {"class_name": "BatchNormalization", "config": {"name": "bn"}},
            ],
        },
    }
    arch_path = tmp_path / "odd.architecture.json"
    arch_path.write_text(json.dumps(arch))
    with pytest.raises(AstridInputError, match="BatchNormalization"):
        load_braai(weights, arch_path)


def test_norm_for_model():
    assert norm_for_model("d6_m7.h5") == "rowwise"
    assert norm_for_model("d5_m3") == "rowwise"
    assert norm_for_model("braai_d6_m9.weights.h5") == "l2"
    assert norm_for_model("d7_m1") == "l2"
    assert norm_for_model("my_model.h5") == DEFAULT_NORM


def test_predict_shapes_and_batches():
    _keras()
    model = vgg6()
    x = _random_stamps(5, 5)
    one_pass = predict(model, x, batch_size=16)
    batched = predict(model, x, batch_size=2)
    assert one_pass.shape == (5,) and one_pass.dtype == np.float32
    assert ((one_pass >= 0) & (one_pass <= 1)).all()
    np.testing.assert_allclose(batched, one_pass, atol=1e-6)
    assert predict(model, x[:0]).shape == (0,)
    with pytest.raises(AstridInputError, match="batch_size"):
        predict(model, x, batch_size=0)


def test_predict_averaged_over_symmetries_ignores_orientation():
    _keras()
    model = vgg6()
    x = _random_stamps(4, 7)
    plain = predict(model, x, norm="l2")
    averaged = predict(model, x, norm="l2", symmetries=True)
    # whole-stamp normalisation commutes with turns and mirrors, so a turned or mirrored
    # triplet has the same eight views and the same average
    turned = np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2))[:, ::-1])
    np.testing.assert_allclose(
        predict(model, turned, norm="l2", symmetries=True), averaged, atol=1e-6
    )
    views = [
        predict(model, np.ascontiguousarray(np.rot90(x, k, axes=(1, 2))[:, :, ::m]), norm="l2")
        for k in range(4)
        for m in (1, -1)
    ]
    np.testing.assert_allclose(averaged, np.mean(views, axis=0), atol=1e-6)
    assert not np.allclose(averaged, plain, atol=1e-6)


# --------------------------------------------------------------------------
# ZTF's published models against ZTF's published scores


@pytest.fixture(scope="module")
def d6_m7():
    _keras()
    return load_braai(_braai_file("d6_m7.h5"))


@pytest.fixture(scope="module")
def alerts_with_drb():
    from astrid.alerts import read_ztf

    folder = shared_data("ztf_alerts")
    if folder is None:
        pytest.skip("shared ZTF alerts (../shared/data/ztf_alerts) are not present")
    ds = read_ztf(folder)
    keep = (ds["drbversion"].values == "d6_m7") & np.isfinite(ds["drb"].values)
    return ds.isel(candidate=np.flatnonzero(keep))


@pytest.mark.shared_data
def test_published_files_load_the_same_weights(d6_m7):
    assert d6_m7.astrid_norm == "rowwise" and d6_m7.count_params() == 312_081
    from_weights = load_braai(_braai_file("d6_m7.weights.h5"))
    explicit = load_braai(_braai_file("d6_m7.weights.h5"), _braai_file("d6_m7.architecture.json"))
    for other in (from_weights, explicit):
        for a, b in zip(d6_m7.get_weights(), other.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert load_braai(_braai_file("braai_d6_m9.h5")).astrid_norm == "l2"


@pytest.mark.shared_data
@pytest.mark.slow
def test_d6_m7_reproduces_alert_drb(d6_m7, alerts_with_drb):
    scores = predict(d6_m7, alerts_with_drb)
    delta = np.abs(scores - alerts_with_drb["drb"].values)
    assert alerts_with_drb.sizes["candidate"] == 938
    assert np.mean(delta < 1e-3) >= 0.99
    # the other normalisation does not reproduce drb: the test can tell them apart
    wrong = np.abs(predict(d6_m7, alerts_with_drb, norm="l2") - alerts_with_drb["drb"].values)
    assert np.mean(wrong < 1e-3) < 0.5


@pytest.mark.shared_data
def test_d6_m7_on_braai_example_alerts(d6_m7):
    from astrid.alerts import read_ztf

    sn = _braai_file("714287740515015072.json")
    bogus = _braai_file("893215910715010007.json")
    ds = read_ztf([sn, bogus])
    scores = dict(zip(ds["candid"].values.tolist(), predict(d6_m7, ds)))
    assert scores[714287740515015072] == pytest.approx(PUBLISHED_SCORE_714287740515015072, abs=1e-5)
    published = json.loads(bogus.read_text())["classifications"]
    assert published["braai_version"] == "d6_m7"
    assert scores[893215910715010007] == pytest.approx(published["braai"], rel=1e-3)
