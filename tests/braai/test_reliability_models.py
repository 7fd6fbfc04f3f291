"""Bad-input matrix for models, export and scoring (issue 14).

Every case gives one bad or awkward input to a public entry point —
:func:`astrid.braai.load_braai`, :func:`astrid.braai.preprocess`,
:func:`astrid.score.score`, :func:`astrid.score.parity`,
:func:`astrid.export.to_tflite`, :func:`astrid.export.edgetpu_report`, model
loading — and asserts the outcome class: an AstridError subclass whose
message names the thing at fault, a specific warning, or a correct result.
``filterwarnings = error`` makes every "correct result" case also assert
that no warning was given.

The models are tiny (one strided convolution and a dense layer) so that the
one int8 export this module needs converts in well under a second.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from astrid import braai  # noqa: E402
from astrid.braai import load_braai, preprocess  # noqa: E402
from astrid.errors import AstridFileError, AstridInputError, AstridWarning  # noqa: E402
from astrid.export import TFLiteRunner, edgetpu_report, to_tflite  # noqa: E402
from astrid.schema import new_triplet_dataset  # noqa: E402
from astrid.score import NoDataWarning, parity, score  # noqa: E402


def _tiny_model(shape=(63, 63, 3), outputs=1, seed=0):
    """A conv + dense net small enough to convert in a fraction of a second."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape, name="triplet")
    h = keras.layers.Conv2D(4, 5, strides=4, activation="relu", name="conv")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(outputs, activation="sigmoid", name="fc_out")(h)
    model = keras.Model(inp, out, name=f"tiny{seed}")
    kernel, bias = model.get_layer("fc_out").get_weights()
    # Spread the scores over [0, 1], so that a constant int8 output stands out.
    model.get_layer("fc_out").set_weights([kernel * 30.0, bias])
    return model


def _stamps(n, seed):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, 63, 63, 3)).astype(np.float32)
    raw[:, 28:35, 28:35, 0] += rng.uniform(0, 20, size=(n, 1, 1))
    raw[:, 28:35, 28:35, 2] += rng.uniform(-20, 20, size=(n, 1, 1))
    return raw


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """Models, files and stamps shared by the cases (built once)."""
    tmp = tmp_path_factory.mktemp("bad_models")
    model = _tiny_model()
    raw = _stamps(40, seed=1)
    int8 = to_tflite(model, tmp / "tiny_int8.tflite", representative=raw, num_calibration=40)
    small = to_tflite(
        _tiny_model((32, 32, 3), seed=2), tmp / "small_input.tflite", quantize=None, batch_size=None
    )
    keras_file = tmp / "tiny.keras"
    model.save(keras_file)
    c = SimpleNamespace(
        tmp=tmp,
        model=model,
        raw=raw,
        int8=Path(int8.path),
        small=Path(small.path),
        keras_file=keras_file,
    )

    def write(name, data):
        path = tmp / name
        path.write_bytes(data)
        return path

    c.write = write
    return c


def _keras2_file(c, name):
    """A Keras 2 weights file of the tiny model, as load_braai reads it."""
    path = c.tmp / name
    with h5py.File(path, "w") as h5:
        h5.attrs["layer_names"] = np.array([b"conv", b"flat", b"fc_out"])
        for layer in c.model.layers[1:]:
            group = h5.create_group(layer.name)
            names = []
            for w in layer.weights:
                wname = f"{layer.name}/{w.name.split('/')[-1]}:0"
                group.create_dataset(wname, data=np.asarray(w.numpy()))
                names.append(wname.encode())
            group.attrs["weight_names"] = np.array(names) if names else np.array([], dtype=float)
    return path


def _truncated(c, source: Path, name: str, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    return c.write(name, data[: int(len(data) * keep)])


def _zip_without_config(c):
    path = c.tmp / "noconfig.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")
    return path


def _dataset(stamps, valid=None, **coords):
    return new_triplet_dataset(stamps, coords=coords or None, valid=valid)


# --------------------------------------------------------------------------- #
# outcome classes


def raises(cls, match):
    return ("raises", cls, match, None)


def warns(cls, match, check=None):
    return ("warns", cls, match, check)


def ok(check):
    return ("ok", None, None, check)


def _nan_at(*indices):
    def check(c, result):
        values = np.asarray(getattr(result, "values", result))
        bad = np.zeros(len(values), bool)
        bad[list(indices)] = True
        assert np.all(np.isnan(values[bad])), values
        assert np.all(np.isfinite(values[~bad])), values

    return check


def _all_finite(c, result):
    assert np.all(np.isfinite(np.asarray(getattr(result, "values", result))))


def _attr_counts(no_data, with_inf):
    def check(c, result):
        assert result.attrs["n_no_data"] == no_data == int(np.isnan(result.values).sum())
        assert result.attrs["n_with_inf"] == with_inf

    return check


def _same_as_nan(c, result):
    """±inf pixels preprocess exactly like NaN pixels."""
    x = c.raw[:2].copy()
    x[0, 3, 7, 0] = np.inf
    x[1, 10, :5, 2] = -np.inf
    y = c.raw[:2].copy()
    y[0, 3, 7, 0] = np.nan
    y[1, 10, :5, 2] = np.nan
    np.testing.assert_array_equal(result, preprocess(y))
    # The rest of the row keeps its normalised values (braai's nan_to_num would zero them).
    assert np.abs(result[0, 3, :, 0]).max() < 0.9


def _zero_stamps(c, result):
    assert result.shape == (1, 63, 63, 3) and not np.any(result)


def _constant_flag(c, result):
    assert result["constant_int8"] is True


def _not_constant_flag(c, result):
    """Float scores within a quantisation step of each other: an int8 constant is no fault."""
    assert result["constant_int8"] is False
    assert result["max_abs_diff"] == pytest.approx(0.002)


def _export_ok(c, report):
    assert report.num_calibration == 37
    assert Path(report.path).exists()


def _edgetpu_passes(c, report):
    assert report.passed, str(report)


def _edgetpu_fails_float(c, report):
    assert not report.passed
    assert any("float32" in p for p in report.problems)


def _empty_scores(c, result):
    assert result.shape == (0,)


def _nan_raw(c, where):
    x = c.raw[:6].copy()
    x[where] = np.nan
    return x


def _ztf_like_missing_stamps(c):
    stamps = c.raw[:4].copy()
    stamps[1] = np.nan
    ny = np.full((4, 3), 63)
    ny[1] = 0
    return _dataset(
        stamps,
        stamp_ny=(("candidate", "channel"), ny),
        stamp_nx=(("candidate", "channel"), ny.copy()),
    )


def _lost_chunk(c):
    stamps = c.raw[:4].copy()
    valid = np.ones(stamps.shape, bool)
    stamps[2] = np.nan  # the stamps read back as NaN, 'valid' still says data
    return _dataset(stamps, valid=valid)


def _lost_chunk_2d_valid(c):
    stamps = c.raw[:4].copy()
    stamps[0] = np.nan
    return _dataset(stamps, valid=np.ones(stamps.shape[:3], bool))


def _missing_reference(c):
    stamps = c.raw[:4].copy()
    stamps[:, :, :, 1] = np.nan  # a survey without templates: 'valid' says so
    return _dataset(stamps)


def _lost_reference(c):
    stamps = c.raw[:4].copy()
    valid = np.ones(stamps.shape, bool)
    stamps[3, :, :, 1] = np.nan
    return _dataset(stamps, valid=valid)


def _tiny_range(c):
    return (np.random.default_rng(5).normal(size=(32, 63, 63, 3)) * 1e-6).astype(np.float32)


def _some_empty(c):
    x = _stamps(40, seed=3)
    x[[0, 7, 12]] = np.nan
    return x


CASES = [
    # ---- load_braai: files ----
    pytest.param(
        lambda c: load_braai(c.tmp / "absent.h5"),
        raises(AstridFileError, r"absent\.h5: file does not exist"),
        id="load_braai-missing",
    ),
    pytest.param(
        lambda c: load_braai(c.tmp),
        raises(AstridFileError, r"is a folder, not an HDF5 model file"),
        id="load_braai-folder",
    ),
    pytest.param(
        lambda c: load_braai(c.write("empty.h5", b"")),
        raises(AstridFileError, r"empty\.h5: not an HDF5 file \(the file is empty\)"),
        id="load_braai-empty",
    ),
    pytest.param(
        lambda c: load_braai(c.write("text.h5", b"weights go here\n")),
        raises(AstridFileError, r"text\.h5: not an HDF5 file \(16 bytes"),
        id="load_braai-text",
    ),
    pytest.param(
        lambda c: load_braai(c.write("zip.h5", c.keras_file.read_bytes())),
        raises(AstridFileError, r"zip\.h5: not an HDF5 file .*zip archive.*\.keras"),
        id="load_braai-keras-zip-named-h5",
    ),
    pytest.param(
        lambda c: load_braai(_truncated(c, _keras2_file(c, "whole.h5"), "cut_d6_m7.h5")),
        raises(AstridFileError, r"cut_d6_m7\.h5: truncated or damaged HDF5 file \(\d+ bytes"),
        id="load_braai-truncated-h5",
    ),
    pytest.param(
        lambda c: load_braai(_truncated(c, _keras2_file(c, "whole2.h5"), "cut_head.h5", keep=0.02)),
        raises(AstridFileError, r"cut_head\.h5: truncated or damaged HDF5 file"),
        id="load_braai-truncated-h5-head",
    ),
    pytest.param(
        lambda c: load_braai(_keras2_file(c, "w.h5"), c.tmp),
        raises(AstridFileError, r"is a folder, not an architecture JSON file"),
        id="load_braai-architecture-folder",
    ),
    pytest.param(
        lambda c: load_braai(_keras2_file(c, "w2.h5"), c.write("arch.json", b"{not json")),
        raises(AstridInputError, r"arch\.json: not a Keras architecture JSON"),
        id="load_braai-architecture-not-json",
    ),
    pytest.param(
        lambda c: load_braai(_keras2_file(c, "w3.h5"), norm="zscore"),
        raises(AstridInputError, r"norm='zscore'"),
        id="load_braai-bad-norm",
    ),
    # ---- model files through score() ----
    pytest.param(
        lambda c: score(c.raw, c.tmp / "absent.keras"),
        raises(AstridFileError, r"absent\.keras: no such model file"),
        id="model-missing-keras",
    ),
    pytest.param(
        lambda c: score(c.raw, c.tmp),
        raises(AstridFileError, r"is a folder, not a model file"),
        id="model-folder",
    ),
    pytest.param(
        lambda c: score(c.raw, (c.tmp / "dir.tflite").mkdir(exist_ok=True) or c.tmp / "dir.tflite"),
        raises(AstridFileError, r"dir\.tflite: is a folder, not a TFLite model file"),
        id="model-folder-named-tflite",
    ),
    pytest.param(
        lambda c: score(c.raw, c.write("empty.keras", b"")),
        raises(AstridFileError, r"empty\.keras: not a readable \.keras archive: empty"),
        id="model-keras-empty",
    ),
    pytest.param(
        lambda c: score(c.raw, _truncated(c, c.keras_file, "cut.keras")),
        raises(AstridFileError, r"cut\.keras: not a readable \.keras archive: truncated"),
        id="model-keras-truncated",
    ),
    pytest.param(
        lambda c: score(c.raw, c.write("noise.keras", np.random.default_rng(0).bytes(3000))),
        raises(AstridFileError, r"noise\.keras: not a readable \.keras archive"),
        id="model-keras-random-bytes",
    ),
    pytest.param(
        lambda c: score(c.raw, c.write("h5.keras", _keras2_file(c, "w4.h5").read_bytes())),
        raises(AstridFileError, r"h5\.keras: .*an HDF5 file"),
        id="model-keras-is-hdf5",
    ),
    pytest.param(
        lambda c: score(c.raw, _zip_without_config(c)),
        raises(
            AstridFileError,
            r"noconfig\.keras: not a complete \.keras archive \(missing \['config.json'",
        ),
        id="model-keras-zip-without-config",
    ),
    pytest.param(
        lambda c: score(c.raw, _truncated(c, _keras2_file(c, "w5.h5"), "cut5.h5")),
        raises(AstridFileError, r"cut5\.h5: truncated or damaged HDF5"),
        id="model-h5-truncated",
    ),
    pytest.param(
        lambda c: score(c.raw, _truncated(c, c.int8, "cut.tflite")),
        raises(AstridFileError, r"cut\.tflite"),
        id="model-tflite-truncated",
    ),
    pytest.param(
        lambda c: score(c.raw, c.write("empty.tflite", b"")),
        raises(AstridFileError, r"empty\.tflite"),
        id="model-tflite-empty",
    ),
    pytest.param(
        lambda c: score(c.raw, c.write("noise.tflite", np.random.default_rng(1).bytes(5000))),
        raises(AstridFileError, r"noise\.tflite"),
        id="model-tflite-random-bytes",
    ),
    pytest.param(
        lambda c: score(c.raw, c.write("model.onnx", b"\0")),
        raises(AstridInputError, r"model\.onnx: unknown model file type '\.onnx'"),
        id="model-unknown-suffix",
    ),
    pytest.param(
        lambda c: score(c.raw, {"weights": 1}),
        raises(AstridInputError, r"expected a keras\.Model or a \.keras/\.h5 path, got dict"),
        id="model-not-a-model",
    ),
    pytest.param(
        lambda c: score(c.raw, _tiny_model((32, 32, 3), seed=4)),
        raises(AstridInputError, r"input shape \(32, 32, 3\), expected \(63, 63, 3\)"),
        id="model-keras-wrong-input-size",
    ),
    pytest.param(
        lambda c: score(c.raw, _tiny_model((63, 63, 1), seed=5)),
        raises(AstridInputError, r"input shape \(63, 63, 1\), expected \(63, 63, 3\)"),
        id="model-keras-one-channel",
    ),
    pytest.param(
        lambda c: score(c.raw, _tiny_model(outputs=2, seed=6), interpreter="keras"),
        raises(AstridInputError, r"one score per triplet, found output shape\(s\) \[\(2,\)\]"),
        id="model-keras-two-outputs",
    ),
    pytest.param(
        lambda c: score(c.raw, c.small),
        raises(
            AstridInputError,
            r"small_input\.tflite: input shape \(32, 32, 3\), expected \(63, 63, 3\)",
        ),
        id="model-tflite-wrong-input-size",
    ),
    pytest.param(
        lambda c: score(c.raw, TFLiteRunner(c.small)),
        raises(AstridInputError, r"input shape \(32, 32, 3\)"),
        id="model-runner-wrong-input-size",
    ),
    # ---- braai.preprocess ----
    pytest.param(
        lambda c: preprocess(c.raw[..., :2]),
        raises(AstridInputError, r"triplets: expected an array of shape \(n, h, w, 3\)"),
        id="preprocess-two-channels",
    ),
    pytest.param(
        lambda c: preprocess(np.zeros((2, 64, 64, 3), np.float32)),
        raises(AstridInputError, r"stamps of 64x64 pixels"),
        id="preprocess-too-large",
    ),
    pytest.param(
        lambda c: preprocess(np.full((1, 5, 5, 3), "a")),
        raises(AstridInputError, r"numeric array, got dtype <U1"),
        id="preprocess-strings",
    ),
    pytest.param(
        lambda c: preprocess(c.raw, norm="zscore"),
        raises(AstridInputError, r"norm='zscore'"),
        id="preprocess-bad-norm",
    ),
    pytest.param(
        lambda c: preprocess(_dataset(c.raw[:2]).drop_vars("valid")),
        raises(AstridInputError, r"no bool data variable 'valid'"),
        id="preprocess-dataset-no-valid",
    ),
    pytest.param(
        lambda c: preprocess(np.full((1, 63, 63, 3), np.nan, np.float32)),
        ok(_zero_stamps),
        id="preprocess-all-nan-is-zero",
    ),
    pytest.param(
        lambda c: preprocess(np.full((1, 63, 63, 3), np.inf, np.float32)),
        ok(_zero_stamps),
        id="preprocess-all-inf-is-zero",
    ),
    pytest.param(
        lambda c: preprocess(_inf_rows(c.raw[:2])), ok(_same_as_nan), id="preprocess-inf-like-nan"
    ),
    # ---- score: stamps without data ----
    pytest.param(
        lambda c: score(_nan_raw(c, 0), c.model),
        warns(NoDataWarning, r"1 of 6 candidate\(s\) have no usable stamp data", _nan_at(0)),
        id="score-all-nan-candidate",
    ),
    pytest.param(
        lambda c: score(_inf_raw(c, np.inf), c.model),
        warns(NoDataWarning, r"1 of 6 candidate", _nan_at(2)),
        id="score-all-inf-candidate",
    ),
    pytest.param(
        lambda c: score(_inf_raw(c, -np.inf), c.model),
        warns(NoDataWarning, r"1 of 6 candidate", _nan_at(2)),
        id="score-all-minus-inf-candidate",
    ),
    pytest.param(
        lambda c: score(_nan_raw(c, (slice(1, 3), slice(None), slice(None), 2)), c.model),
        warns(NoDataWarning, r"2 of 6 candidate", _nan_at(1, 2)),
        id="score-array-channel-all-nan",
    ),
    pytest.param(
        lambda c: score(np.full((5, 63, 63, 3), np.nan, np.float32), c.model),
        warns(NoDataWarning, r"5 of 5 candidate", _nan_at(0, 1, 2, 3, 4)),
        id="score-all-candidates-nan",
    ),
    pytest.param(
        lambda c: score(_lost_chunk(c), c.model),
        warns(NoDataWarning, r"1 of 4", _nan_at(2)),
        id="score-dataset-lost-chunk",
    ),
    pytest.param(
        lambda c: score(_lost_reference(c), c.model),
        warns(NoDataWarning, r"1 of 4", _nan_at(3)),
        id="score-dataset-promised-channel-nan",
    ),
    pytest.param(
        lambda c: score(_ztf_like_missing_stamps(c), c.model),
        warns(NoDataWarning, r"1 of 4", _nan_at(1)),
        id="score-dataset-no-stamps",
    ),
    pytest.param(
        lambda c: score(_lost_chunk_2d_valid(c), c.model),
        warns(NoDataWarning, r"1 of 4", _nan_at(0)),
        id="score-dataset-2d-valid-lost-chunk",
    ),
    pytest.param(
        lambda c: score(_lost_chunk(c).chunk({"candidate": 2}), c.model, batch_size=3),
        warns(NoDataWarning, r"1 of 4", _nan_at(2)),
        id="score-dask-dataset-lost-chunk",
    ),
    pytest.param(
        lambda c: score(_nan_raw(c, 5).astype(">f4"), c.model),
        warns(NoDataWarning, r"1 of 6", _nan_at(5)),
        id="score-big-endian-nan-candidate",
    ),
    pytest.param(
        lambda c: score(np.rint(c.raw[:4] * 100).astype(np.int16), c.model),
        ok(_all_finite),
        id="score-integer-stamps",
    ),
    pytest.param(
        lambda c: score(_missing_reference(c), c.model),
        ok(_all_finite),
        id="score-dataset-declared-missing-reference",
    ),
    pytest.param(
        lambda c: score(_scattered_nan(c), c.model), ok(_all_finite), id="score-scattered-nan"
    ),
    pytest.param(
        lambda c: score(_dataset(_nan_raw(c, 4)), c.model),
        warns(NoDataWarning, r"1 of 6", _attr_counts(1, 0)),
        id="score-attrs-count-no-data",
    ),
    pytest.param(
        lambda c: score(_dataset(_inf_rows(c.raw[:2])), c.model),
        warns(AstridWarning, r"2 of 2 candidate\(s\) have ±inf pixels", _attr_counts(0, 2)),
        id="score-inf-pixels-warned",
    ),
    pytest.param(
        lambda c: score(np.zeros((0, 63, 63, 3), np.float32), c.model),
        ok(_empty_scores),
        id="score-no-candidates",
    ),
    pytest.param(
        lambda c: score(np.full((2, 63, 63, 3), np.nan, np.float32), c.model, norm="none"),
        raises(
            AstridInputError, r"norm='none' means already preprocessed, but the array has NaN/inf"
        ),
        id="score-none-norm-with-nan",
    ),
    pytest.param(
        lambda c: score(c.raw[0], c.model),
        raises(AstridInputError, r"\(n, 63, 63, 3\)"),
        id="score-single-stamp",
    ),
    pytest.param(
        lambda c: score(c.raw, c.model, batch_size=0),
        raises(AstridInputError, r"batch_size=0"),
        id="score-batch-size-zero",
    ),
    pytest.param(
        lambda c: score(c.raw, c.model, num_threads=-1),
        raises(AstridInputError, r"num_threads=-1"),
        id="score-num-threads-negative",
    ),
    # ---- parity ----
    pytest.param(
        lambda c: parity(np.ones(3), np.ones(4)),
        raises(AstridInputError, r"float_scores has 3 values, int8_scores 4"),
        id="parity-lengths",
    ),
    pytest.param(
        lambda c: parity([], []), raises(AstridInputError, r"no scores"), id="parity-empty"
    ),
    pytest.param(
        lambda c: parity([0.1, np.nan, 0.3], [0.1, 0.2, 0.3]),
        raises(AstridInputError, r"float_scores has 1 NaN/inf value"),
        id="parity-nan-float",
    ),
    pytest.param(
        lambda c: parity([0.1, 0.2, 0.3], [0.1, np.inf, 0.3]),
        raises(AstridInputError, r"int8_scores has 1 NaN/inf value"),
        id="parity-inf-int8",
    ),
    pytest.param(
        lambda c: parity([0.1, 0.2], [0.1, 0.2], labels=[0, 2]),
        raises(AstridInputError, r"labels must be bool or 0/1"),
        id="parity-labels-not-binary",
    ),
    pytest.param(
        lambda c: parity([0.1, 0.2], [0.1, 0.2], labels=[0, 1, 1]),
        raises(AstridInputError, r"labels has 3 values for 2 scores"),
        id="parity-labels-length",
    ),
    pytest.param(
        lambda c: parity([0.1, 0.5, 0.9], [0.5, 0.5, 0.5]),
        warns(AstridWarning, r"int8_scores: all 3 scores are 0\.5.*same score", _constant_flag),
        id="parity-constant-int8",
    ),
    pytest.param(
        lambda c: parity([0.500, 0.501, 0.502], [0.5, 0.5, 0.5]),
        ok(_not_constant_flag),
        id="parity-constant-int8-within-quantisation",
    ),
    # ---- to_tflite: degenerate int8 calibration ----
    pytest.param(
        lambda c: to_tflite(
            c.model, c.tmp / "x.tflite", representative=np.full((32, 63, 63, 3), np.nan, np.float32)
        ),
        raises(AstridInputError, r"representative: all 32 representative triplets .*NaN"),
        id="export-representative-all-nan",
    ),
    pytest.param(
        lambda c: to_tflite(
            c.model,
            c.tmp / "x.tflite",
            representative=np.full((32, 63, 63, 3), -np.inf, np.float32),
        ),
        raises(AstridInputError, r"representative: all 32 representative triplets .*±inf"),
        id="export-representative-all-inf",
    ),
    pytest.param(
        lambda c: to_tflite(
            c.model,
            c.tmp / "x.tflite",
            representative=_dataset(np.full((20, 63, 63, 3), np.nan, np.float32)),
        ),
        raises(AstridInputError, r"representative: all 20 representative triplets"),
        id="export-representative-dataset-all-nan",
    ),
    pytest.param(
        lambda c: to_tflite(c.model, c.tmp / "x.tflite", representative=np.zeros((32, 63, 63, 3))),
        raises(AstridInputError, r"representative: all 32 representative triplets are all zero"),
        id="export-representative-all-zero",
    ),
    pytest.param(
        lambda c: to_tflite(
            c.model, c.tmp / "x.tflite", representative=np.full((32, 63, 63, 3), 7.0)
        ),
        raises(AstridInputError, r"representative: all 32 .* each one constant value"),
        id="export-representative-constant",
    ),
    pytest.param(
        lambda c: to_tflite(c.model, c.tmp / "x.tflite", representative=c.raw[:5]),
        raises(AstridInputError, r"representative: only 5 usable .* at least 16"),
        id="export-representative-too-few",
    ),
    pytest.param(
        lambda c: to_tflite(
            c.model, c.tmp / "x.tflite", representative=np.repeat(c.raw[:1], 30, axis=0)
        ),
        raises(AstridInputError, r"representative: only 1 distinct of 30"),
        id="export-representative-one-triplet-repeated",
    ),
    pytest.param(
        lambda c: to_tflite(c.model, c.tmp / "x.tflite", representative=c.raw, num_calibration=4),
        raises(AstridInputError, r"num_calibration=4: .* at least 16"),
        id="export-num-calibration-small",
    ),
    pytest.param(
        lambda c: to_tflite(
            c.model, c.tmp / "x.tflite", representative=_tiny_range(c), norm="none"
        ),
        raises(
            AstridInputError,
            r"x\.tflite: the int8 model gives all \d+ varied test inputs the same score",
        ),
        id="export-int8-constant-output",
    ),
    pytest.param(
        lambda c: to_tflite(c.model, c.tmp / "partly.tflite", representative=_some_empty(c)),
        warns(
            AstridWarning,
            r"representative: 3 of 40 representative triplets have no usable data",
            _export_ok,
        ),
        id="export-representative-some-nan",
    ),
    pytest.param(
        lambda c: to_tflite(
            c.model, c.tmp / "partly_ds.tflite", representative=_dataset(_some_empty(c))
        ),
        warns(AstridWarning, r"representative: 3 of 40", _export_ok),
        id="export-representative-dataset-some-nan",
    ),
    pytest.param(
        lambda c: to_tflite(c.model, c.tmp / "x.tflite", representative=np.zeros((0, 63, 63, 3))),
        raises(AstridInputError, r"representative: no triplets"),
        id="export-representative-empty",
    ),
    pytest.param(
        lambda c: to_tflite(c.model, c.tmp / "x.tflite", representative=c.raw[..., :2]),
        raises(AstridInputError, r"expected an array of shape \(n, h, w, 3\)"),
        id="export-representative-two-channels",
    ),
    pytest.param(
        lambda c: to_tflite(
            c.model,
            c.tmp / "x.tflite",
            representative=np.full((20, 63, 63, 3), np.nan, np.float32),
            norm="none",
        ),
        raises(AstridInputError, r"norm='none' means already preprocessed"),
        id="export-representative-none-norm-nan",
    ),
    pytest.param(
        lambda c: to_tflite(
            _tiny_model((32, 32, 3), seed=7), c.tmp / "x.tflite", representative=c.raw
        ),
        raises(
            AstridInputError,
            r"representative: triplets of shape \(63, 63, 3\) .* model's input is \(32, 32, 3\)",
        ),
        id="export-model-input-mismatch",
    ),
    pytest.param(
        lambda c: to_tflite(c.tmp / "absent.keras", c.tmp / "x.tflite", representative=c.raw),
        raises(AstridFileError, r"absent\.keras: no such model file"),
        id="export-model-missing",
    ),
    pytest.param(
        lambda c: to_tflite(
            _truncated(c, c.keras_file, "cut2.keras"), c.tmp / "x.tflite", quantize=None
        ),
        raises(AstridFileError, r"cut2\.keras: not a readable \.keras archive"),
        id="export-model-truncated",
    ),
    pytest.param(
        lambda c: to_tflite(c.model, c.tmp / "x.tflite", representative=None),
        raises(AstridInputError, r"representative: int8 quantisation needs real triplets"),
        id="export-representative-none",
    ),
    # ---- edgetpu_report ----
    pytest.param(
        lambda c: edgetpu_report(c.tmp / "absent.tflite"),
        raises(AstridFileError, r"absent\.tflite: no such TFLite model file"),
        id="edgetpu-missing",
    ),
    pytest.param(
        lambda c: edgetpu_report(c.tmp),
        raises(AstridFileError, r"is a folder, not a TFLite model file"),
        id="edgetpu-folder",
    ),
    pytest.param(
        lambda c: edgetpu_report(c.write("text.tflite", b"not a flatbuffer at all" * 20)),
        raises(AstridFileError, r"text\.tflite: .*not a TFLite flatbuffer"),
        id="edgetpu-text",
    ),
    pytest.param(
        lambda c: edgetpu_report(_truncated(c, c.int8, "cut3.tflite", keep=0.3)),
        raises(AstridFileError, r"cut3\.tflite"),
        id="edgetpu-truncated",
    ),
    pytest.param(
        lambda c: edgetpu_report(c.int8, run_compiler=False),
        ok(_edgetpu_passes),
        id="edgetpu-int8-passes",
    ),
    pytest.param(
        lambda c: edgetpu_report(c.small, run_compiler=False),
        ok(_edgetpu_fails_float),
        id="edgetpu-float-fails",
    ),
]


def _inf_raw(c, value):
    x = c.raw[:6].copy()
    x[2] = value
    return x


def _inf_rows(x):
    x = x.copy()
    x[0, 3, 7, 0] = np.inf
    x[1, 10, :5, 2] = -np.inf
    return x


def _scattered_nan(c):
    x = c.raw[:8].copy()
    x[np.random.default_rng(2).random(x.shape) < 0.05] = np.nan
    return x


@pytest.mark.parametrize("call, outcome", CASES)
def test_bad_input(ctx, call, outcome):
    kind, cls, match, check = outcome
    if kind == "raises":
        with pytest.raises(cls, match=match):
            call(ctx)
    elif kind == "warns":
        with pytest.warns(cls, match=match):
            result = call(ctx)
        if check is not None:
            check(ctx, result)
    else:
        check(ctx, call(ctx))


def test_no_data_scores_match_braai_on_the_rest(ctx):
    """Flagging a candidate changes its score only: the others score as braai.predict does."""
    x = ctx.raw[:6].copy()
    x[1] = np.nan
    with pytest.warns(NoDataWarning):
        scores = score(x, ctx.model, interpreter="keras")
    reference = braai.predict(ctx.model, x)
    keep = np.arange(6) != 1
    np.testing.assert_allclose(scores[keep], reference[keep], atol=1e-6)
    assert np.isnan(scores[1])


def test_inf_pixel_no_longer_swamps_its_row(ctx):
    """braai's nan_to_num(inf) = 3.4e38 made the rest of the row zero; now only the pixel is lost."""
    x = ctx.raw[:1].copy()
    x[0, 20, 5, 2] = np.inf
    out = preprocess(x)
    row = out[0, 20, :, 2]
    assert row[5] == 0
    assert np.count_nonzero(row) == 62
