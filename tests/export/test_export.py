"""Edge TPU export: int8 conversion, static Edge TPU checks, sidecar, int8/float parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from astrid import braai  # noqa: E402
from astrid.errors import AstridFileError, AstridInputError  # noqa: E402
from astrid.export import (  # noqa: E402
    EDGETPU_OPS,
    edgetpu_report,
    model_sha256,  # noqa: E402
    read_sidecar,
    to_tflite,
)
from astrid.score import parity, score  # noqa: E402


def synthetic_triplets(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw (n, 63, 63, 3) stamps and labels: 'real' = a point source in science and difference.

    Bogus stamps are noise, half of them with a single hot pixel in the
    difference (a cosmic-ray-like artefact). Source amplitudes span faint
    to bright so the trained model is good but not perfect.
    """
    rng = np.random.default_rng(seed)
    stamps = rng.normal(size=(n, 63, 63, 3)).astype(np.float32)
    real = rng.random(n) < 0.5
    yy, xx = np.mgrid[:63, :63]
    for i in np.flatnonzero(real):
        cy, cx = 31 + rng.normal(0, 1, 2)
        psf = rng.uniform(0.5, 8) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
        stamps[i, :, :, 0] += psf
        stamps[i, :, :, 2] += psf
    for i in np.flatnonzero(~real & (rng.random(n) < 0.5)):
        stamps[i, rng.integers(20, 43), rng.integers(20, 43), 2] += rng.uniform(10, 30)
    return stamps, real


@pytest.fixture(scope="module")
def trained():
    """braai's VGG6 trained for a few epochs on synthetic triplets (about 10 s on 2 cores)."""
    keras.utils.set_random_seed(0)
    train, train_labels = synthetic_triplets(400, seed=1)
    test, test_labels = synthetic_triplets(400, seed=2)
    model = braai.vgg6()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(
        braai.preprocess(train, norm="rowwise"),
        train_labels.astype("float32"),
        batch_size=32,
        epochs=5,
        verbose=0,
    )
    return model, train, test, test_labels


@pytest.fixture(scope="module")
def int8_export(trained, tmp_path_factory):
    model, train, _, _ = trained
    path = tmp_path_factory.mktemp("export") / "vgg6_int8.tflite"
    return to_tflite(model, path, representative=train, num_calibration=200)


def test_int8_export_passes_edgetpu_checks(int8_export):
    report = int8_export.edgetpu
    assert report is not None
    assert report.passed, str(report)
    assert report.problems == []
    assert [op.device for op in report.ops] == ["edgetpu"] * len(report.ops)
    assert {op.name for op in report.ops} <= EDGETPU_OPS
    # VGG6's graph, sigmoid kept in the model: no QUANTIZE/DEQUANTIZE at the ends.
    assert [op.name for op in report.ops] == [
        "CONV_2D",
        "CONV_2D",
        "MAX_POOL_2D",
        "CONV_2D",
        "CONV_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        "LOGISTIC",
    ]
    assert set(report.tensor_types) <= {"int8", "int32"}
    assert report.inputs[0].shape_signature == [1, 63, 63, 3]
    assert report.inputs[0].dtype == "int8" and report.outputs[0].dtype == "int8"
    text = str(report)
    assert "PASSED" in text
    if not report.compiler_available:
        assert "edgetpu_compiler not found; it is not installable here" in report.compiler_log
        assert "passes these static checks" in report.compiler_log
    json.dumps(report.to_dict())  # JSON-ready


def test_int8_export_report_and_sidecar(int8_export, trained):
    model = trained[0]
    assert int8_export.quantize == "int8" and int8_export.batch_size == 1
    assert int8_export.num_calibration == 200
    assert int8_export.norm == "rowwise"
    assert int8_export.input.quantized and int8_export.output.quantized
    # Sigmoid output in [0, 1]: the converter fixes scale 1/256, zero point -128.
    assert int8_export.output.scale == pytest.approx(1 / 256)
    assert int8_export.output.zero_point == -128
    assert int8_export.calibration_max_abs_diff is not None
    assert int8_export.calibration_max_abs_diff < 0.1

    meta = read_sidecar(int8_export.path)
    assert meta["norm"] == "rowwise"
    assert meta["quantize"] == "int8" and meta["batch_size"] == 1
    assert meta["source_model"]["weights_sha256"] == model_sha256(model)
    assert meta["edgetpu_static_check"] is True
    import astrid

    assert meta["astrid_version"] == astrid.__version__
    # The sidecar's quantisation is the interpreter's.
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=int8_export.path)
    ((scale, zero),) = [d["quantization"] for d in interp.get_input_details()]
    assert meta["input"]["scale"] == pytest.approx(scale)
    assert meta["input"]["zero_point"] == zero
    ((scale, zero),) = [d["quantization"] for d in interp.get_output_details()]
    assert meta["output"]["scale"] == pytest.approx(scale)
    assert meta["output"]["zero_point"] == zero
    assert "Edge TPU static check passes" in str(int8_export)


def test_int8_scores_agree_with_float(int8_export, trained):
    model, _, test, labels = trained
    float_scores = score(test, model, interpreter="keras")
    int8_scores = score(test, int8_export.path)
    result = parity(float_scores, int8_scores, labels=labels)
    # The synthetic model must have learnt something for the comparison to mean anything.
    assert result["auc_float"] > 0.95, result
    assert abs(result["aucpr_int8"] - result["aucpr_float"]) <= 0.005, result
    assert abs(result["auc_int8"] - result["auc_float"]) <= 0.005, result
    assert result["max_abs_diff"] < 0.1, result
    assert abs(result["delta_fnr"]) <= 0.02, result


def test_dynamic_batch_export_fails_edgetpu_checks(trained, tmp_path):
    model, train, _, _ = trained
    report = to_tflite(
        model,
        tmp_path / "dynamic_int8.tflite",
        representative=train,
        batch_size=None,
        num_calibration=20,
    )
    edgetpu = report.edgetpu
    assert not edgetpu.passed
    assert report.input.shape_signature[0] == -1
    names = [op.name for op in edgetpu.ops]
    assert "SHAPE" in names
    # Everything from the first unsupported operator on falls back to the CPU.
    first = names.index("SHAPE")
    assert [op.device for op in edgetpu.ops[first:]] == ["cpu"] * (len(names) - first)
    assert all(op.device == "edgetpu" for op in edgetpu.ops[:first])
    problems = " | ".join(edgetpu.problems)
    assert "SHAPE is not an Edge TPU operator" in problems
    assert "dynamic size" in problems and "-1" in problems
    assert "int32, computed" in problems  # run-time shape arithmetic
    assert "FAILED" in str(edgetpu)
    assert read_sidecar(report.path)["edgetpu_static_check"] is False


def test_float_export_fails_edgetpu_checks(trained, tmp_path):
    report = to_tflite(trained[0], tmp_path / "float.tflite", quantize=None, batch_size=1)
    assert report.edgetpu is None  # only int8 exports are checked automatically
    edgetpu = edgetpu_report(report.path)
    assert not edgetpu.passed
    assert any("float32" in p for p in edgetpu.problems)
    assert edgetpu.tensor_types.get("float32", 0) > 0


def test_uint8_io_and_float16(trained, tmp_path):
    model, train, test, _ = trained
    uint8 = to_tflite(
        model, tmp_path / "u8.tflite", representative=train, num_calibration=100, io_dtype="uint8"
    )
    assert uint8.input.dtype == "uint8" and uint8.output.dtype == "uint8"
    assert uint8.edgetpu.passed, str(uint8.edgetpu)
    half = to_tflite(model, tmp_path / "f16.tflite", quantize="float16", batch_size=None)
    assert half.input.dtype == "float32" and half.input.shape_signature[0] == -1
    keras_scores = score(test[:64], model, interpreter="keras")
    np.testing.assert_allclose(score(test[:64], half.path), keras_scores, atol=5e-3)
    np.testing.assert_allclose(score(test[:64], uint8.path), keras_scores, atol=0.1)


def test_export_from_keras_file_matches_object(trained, tmp_path):
    model = trained[0]
    model.save(tmp_path / "m.keras")
    report = to_tflite(tmp_path / "m.keras", tmp_path / "m.tflite", quantize=None, batch_size=None)
    assert report.source_sha256 == model_sha256(model)


def test_bad_export_arguments(trained, tmp_path):
    model, train, _, _ = trained
    with pytest.raises(AstridInputError, match="representative"):
        to_tflite(model, tmp_path / "a.tflite")
    with pytest.raises(AstridInputError, match="quantize"):
        to_tflite(model, tmp_path / "a.tflite", representative=train, quantize="int4")
    with pytest.raises(AstridInputError, match=r"\.tflite"):
        to_tflite(model, tmp_path / "a.onnx", representative=train)
    with pytest.raises(AstridInputError, match="batch_size"):
        to_tflite(model, tmp_path / "a.tflite", representative=train, batch_size=0)
    with pytest.raises(AstridInputError, match="norm"):
        to_tflite(model, tmp_path / "a.tflite", representative=train, norm="zscore")
    with pytest.raises(AstridInputError, match="io_dtype"):
        to_tflite(model, tmp_path / "a.tflite", representative=train, io_dtype="int16")
    with pytest.raises(AstridFileError, match="no such model file"):
        to_tflite(tmp_path / "missing.keras", tmp_path / "a.tflite", quantize=None)
    with pytest.raises(AstridInputError, match="keras.Model"):
        to_tflite(object(), tmp_path / "a.tflite", quantize=None)
    assert not (tmp_path / "a.tflite").exists()


def test_edgetpu_report_bad_files(tmp_path):
    with pytest.raises(AstridFileError, match="no such TFLite model file"):
        edgetpu_report(tmp_path / "missing.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all" * 10)
    with pytest.raises(AstridFileError, match="not a TFLite flatbuffer"):
        edgetpu_report(bad)


def test_edgetpu_report_truncated_file(int8_export, tmp_path):
    data = Path(int8_export.path).read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[:64])
    with pytest.raises(AstridFileError, match="cut.tflite"):
        edgetpu_report(cut)


@pytest.mark.slow
@pytest.mark.shared_data
def test_ztf_d6_m7_int8_keeps_agreement_with_drb(shared, tmp_path):
    """ZTF's d6_m7 → int8 Edge TPU model; its scores on real alerts still follow drb."""
    from astrid.alerts import read_ztf

    weights = shared / "braai" / "d6_m7.h5"
    alerts = shared / "ztf_alerts"
    if not weights.exists() or not alerts.exists():
        pytest.skip("shared braai/d6_m7.h5 or ztf_alerts not present")
    model = braai.load_braai(weights)
    ds = read_ztf(alerts)
    drb = ds["drb"].values
    ds = ds.isel(candidate=np.flatnonzero(np.isfinite(drb)))
    drb = ds["drb"].values
    report = to_tflite(
        model, tmp_path / "d6_m7_int8.tflite", representative=ds, num_calibration=200
    )
    assert report.norm == "rowwise"
    assert report.edgetpu.passed, str(report.edgetpu)

    float_scores = score(ds, model)
    int8_scores = score(ds, report.path)
    vs_float = parity(float_scores, int8_scores)
    vs_drb = parity(drb, int8_scores, labels=drb >= 0.5)
    # Float reproduces drb (the braai module's own validation); int8 stays close to both.
    # benchmarks/validate_export.py prints these numbers (docs/validation_export.md).
    assert np.percentile(np.abs(float_scores.values - drb), 99) < 1e-2
    assert vs_float["p99_abs_diff"] < 0.1, vs_float
    assert vs_drb["p99_abs_diff"] < 0.1, vs_drb
    assert vs_drb["auc_int8"] > 0.99, vs_drb
    assert abs(vs_drb["delta_fnr"]) < 0.02, vs_drb
