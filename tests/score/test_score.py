"""Batch scoring: model forms, TFLite batching, int8 ends, alignment to candidates, parity metrics."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
xr = pytest.importorskip("xarray")

from astrid import braai  # noqa: E402
from astrid.errors import AstridFileError, AstridInputError, AstridWarning  # noqa: E402
from astrid.export import TFLiteRunner, to_tflite  # noqa: E402
from astrid.schema import new_triplet_dataset  # noqa: E402
from astrid.score import FAST_PATH_TOLERANCE, parity, score  # noqa: E402


@pytest.fixture(scope="module")
def model():
    """braai's VGG6 with seeded random weights; the last layer scaled so scores spread over [0, 1]."""
    keras.utils.set_random_seed(3)
    net = braai.vgg6()
    kernel, bias = net.get_layer("fc_out").get_weights()
    net.get_layer("fc_out").set_weights([kernel * 40.0, bias])
    return net


@pytest.fixture(scope="module")
def stamps():
    rng = np.random.default_rng(7)
    raw = rng.normal(size=(45, 63, 63, 3)).astype(np.float32)
    raw[:, 28:35, 28:35, 2] += rng.uniform(0, 20, size=(45, 1, 1))
    raw[3, :5, :, 1] = np.nan  # missing template rows, as at a CCD edge
    return raw


@pytest.fixture(scope="module")
def dataset(stamps):
    n = len(stamps)
    return new_triplet_dataset(
        stamps,
        coords={"candid": np.arange(1000, 1000 + n), "drb": np.linspace(0, 1, n)},
        attrs={"source": "test"},
    )


@pytest.fixture(scope="module")
def exports(model, stamps, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        "float_dynamic": to_tflite(model, folder / "f32.tflite", quantize=None, batch_size=None),
        "int8_batch1": to_tflite(
            model, folder / "i8.tflite", representative=stamps, num_calibration=45
        ),
    }


def test_score_dataset_aligned_to_candidates(dataset, model):
    scores = score(dataset, model)
    assert isinstance(scores, xr.DataArray)
    assert scores.dims == ("candidate",) and scores.name == "score"
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores["candid"].values, dataset["candid"].values)
    np.testing.assert_array_equal(scores["candidate_id"].values, dataset["candidate_id"].values)
    reference = braai.predict(model, dataset)
    np.testing.assert_allclose(scores.values, reference, atol=FAST_PATH_TOLERANCE)
    # Scores are found by candidate id, and follow the candidates when the set is reordered.
    assert float(scores.sel(candidate_id="7")) == pytest.approx(float(reference[7]), abs=1e-5)
    order = np.random.default_rng(0).permutation(dataset.sizes["candidate"])
    shuffled = score(dataset.isel(candidate=order), model)
    np.testing.assert_allclose(shuffled.values, scores.values[order], atol=1e-6)
    np.testing.assert_array_equal(shuffled["candid"].values, dataset["candid"].values[order])
    assert scores.attrs["norm"] == "rowwise"
    assert scores.std() > 0.05  # the fixture's scores are not all 0.5
    # The bare 'triplets' DataArray keeps its candidate coordinates too.
    from_variable = score(dataset["triplets"], model)
    np.testing.assert_array_equal(from_variable["candid"].values, dataset["candid"].values)
    np.testing.assert_allclose(from_variable.values, scores.values, atol=1e-6)


def test_score_ndarray_returns_ndarray(stamps, model):
    scores = score(stamps, model, batch_size=16)
    assert isinstance(scores, np.ndarray) and scores.shape == (len(stamps),)
    np.testing.assert_allclose(scores, braai.predict(model, stamps), atol=FAST_PATH_TOLERANCE)


def test_symmetry_averaged_scores_equal_braai_predict(dataset, stamps, model, exports):
    single = score(dataset, model, interpreter="keras")
    averaged = score(dataset, model, interpreter="keras", symmetries=True)
    assert averaged.attrs["symmetries"] == 1 and single.attrs["symmetries"] == 0
    np.testing.assert_allclose(
        averaged.values, braai.predict(model, dataset, symmetries=True), atol=1e-5
    )
    assert float(np.max(np.abs(averaged.values - single.values))) > 1e-3  # not one pass
    # Preprocessed stamps seen rotated and mirrored get the same averaged score.
    x = braai.preprocess(stamps, norm="rowwise")
    turned = np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2))[:, :, ::-1])
    np.testing.assert_allclose(
        score(turned, model, norm="none", symmetries=True),
        score(x, model, norm="none", symmetries=True),
        atol=FAST_PATH_TOLERANCE,
    )
    # The same on a TFLite model, within the float export's parity.
    np.testing.assert_allclose(
        score(stamps, exports["float_dynamic"].path, symmetries=True, batch_size=16),
        averaged.values,
        atol=FAST_PATH_TOLERANCE,
    )


def test_default_keras_path_is_fast_tflite_with_exact_parity(dataset, model):
    fast = score(dataset, model)
    slow = score(dataset, model, interpreter="keras")
    assert "TFLite" in fast.attrs["backend"]
    assert slow.attrs["backend"] == "keras"
    assert float(np.max(np.abs(fast - slow))) <= FAST_PATH_TOLERANCE


def test_score_keras_file(stamps, model, tmp_path):
    path = tmp_path / "vgg6.keras"
    model.save(path)
    np.testing.assert_allclose(
        score(stamps, path), score(stamps, model, interpreter="keras"), atol=FAST_PATH_TOLERANCE
    )


def test_score_tflite_float_dynamic_batch_is_resized(exports, stamps, model):
    path = exports["float_dynamic"].path
    runner = TFLiteRunner(path, num_threads=1)
    assert runner.static_batch is None
    # 45 triplets in batches of 7: six resizes to 7, one to 3.
    scores = score(stamps, runner, batch_size=7)
    assert runner._batch == 3
    np.testing.assert_allclose(
        scores, score(stamps, model, interpreter="keras"), atol=FAST_PATH_TOLERANCE
    )
    np.testing.assert_allclose(score(stamps, path, batch_size=64, num_threads=2), scores, atol=1e-6)


def test_score_int8_batch1_quantises_like_the_interpreter(exports, stamps):
    """score() on the Edge TPU model equals a hand-written int8 loop over the raw interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    path = exports["int8_batch1"].path
    scores = score(stamps, path, batch_size=10)
    interp = Interpreter(model_path=path, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert list(inp["shape"]) == [1, 63, 63, 3] and inp["dtype"] == np.int8
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    x = braai.preprocess(stamps, norm="rowwise")
    expected = []
    for one in x:
        q = np.clip(np.round(one / in_scale) + in_zero, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q[np.newaxis])
        interp.invoke()
        expected.append((float(interp.get_tensor(out["index"])[0, 0]) - out_zero) * out_scale)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert set(np.unique(np.round((scores / out_scale)).astype(int) + out_zero)) <= set(
        range(-128, 128)
    )


def test_score_dask_backed_dataset(dataset, model):
    pytest.importorskip("dask")
    chunked = dataset.chunk({"candidate": 9})
    scores = score(chunked, model, batch_size=4)
    np.testing.assert_allclose(scores.values, score(dataset, model).values, atol=1e-6)
    np.testing.assert_array_equal(scores["candid"].values, dataset["candid"].values)


def test_norm_comes_from_sidecar(model, dataset, tmp_path):
    report = to_tflite(model, tmp_path / "l2.tflite", quantize=None, batch_size=None, norm="l2")
    scores = score(dataset, report.path)
    assert scores.attrs["norm"] == "l2"
    np.testing.assert_allclose(
        scores.values, braai.predict(model, dataset, norm="l2"), atol=FAST_PATH_TOLERANCE
    )
    with pytest.warns(AstridWarning, match="differs from the normalisation 'l2'"):
        score(dataset, report.path, norm="rowwise")


def test_missing_and_corrupt_tflite(tmp_path, stamps, exports):
    with pytest.raises(AstridFileError, match="no such TFLite model file"):
        score(stamps, tmp_path / "missing.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AstridFileError, match="corrupt.tflite"):
        score(stamps, corrupt)
    truncated = tmp_path / "truncated.tflite"
    with open(exports["int8_batch1"].path, "rb") as fh:
        truncated.write_bytes(fh.read()[:2000])
    with pytest.raises(AstridFileError, match="truncated.tflite"):
        score(stamps, truncated)


def test_bad_score_arguments(stamps, model, exports, tmp_path):
    with pytest.raises(AstridInputError, match="batch_size"):
        score(stamps, model, batch_size=0)
    with pytest.raises(AstridInputError, match="num_threads"):
        score(stamps, model, num_threads=0)
    with pytest.raises(AstridInputError, match="interpreter"):
        score(stamps, model, interpreter="onnx")
    with pytest.raises(AstridInputError, match="cannot run a .tflite"):
        score(stamps, exports["int8_batch1"].path, interpreter="keras")
    with pytest.raises(AstridInputError, match="norm"):
        score(stamps, model, norm="zscore")
    with pytest.raises(AstridInputError, match=r"\(n, 63, 63, 3\)"):
        score(stamps[0], model)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\0")
    with pytest.raises(AstridInputError, match="unknown model file type"):
        score(stamps, onnx)


def test_parity_metrics():
    float_scores = np.array([0.1, 0.2, 0.6, 0.9, 0.45, 0.8])
    int8_scores = np.array([0.1, 0.25, 0.55, 0.9, 0.52, 0.4])
    labels = np.array([0, 0, 1, 1, 0, 1])
    result = parity(float_scores, int8_scores, labels=labels, threshold=0.5)
    assert result["n"] == 6
    assert result["max_abs_diff"] == pytest.approx(0.4)
    assert result["flipped"] == 2  # 0.45 → 0.52 and 0.8 → 0.4
    assert result["fnr_float"] == pytest.approx(0.0)
    assert result["fnr_int8"] == pytest.approx(1 / 3)
    assert result["delta_fnr"] == pytest.approx(1 / 3)
    assert result["fpr_int8"] == pytest.approx(1 / 3)
    assert result["auc_float"] == pytest.approx(1.0)
    assert result["aucpr_float"] == pytest.approx(1.0)
    assert result["auc_int8"] < 1.0
    assert 0 < result["p99_abs_diff"] <= result["max_abs_diff"]

    one_class = parity(float_scores, int8_scores, labels=np.ones(6, bool))
    assert one_class["auc_float"] is None and one_class["fnr_float"] == pytest.approx(0.5)
    with pytest.raises(AstridInputError, match="same triplets"):
        parity(float_scores, int8_scores[:3])
    with pytest.raises(AstridInputError, match="0/1"):
        parity(float_scores, int8_scores, labels=np.arange(6))
    with pytest.raises(AstridInputError, match="NaN"):
        parity(np.array([np.nan]), np.array([0.5]))
