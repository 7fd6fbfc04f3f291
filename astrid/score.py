"""Fast batch real/bogus scoring with Keras or TFLite models: :func:`score`, :func:`parity`.

:func:`score` takes triplets (a triplet Dataset, possibly Dask-backed, or a
stamp array) and a model in any of the forms AstrID produces — a Keras model,
a ``.keras`` file, a braai ``.h5`` file, or a ``.tflite`` file from
:func:`astrid.export.to_tflite` — and returns one score per candidate. It
preprocesses each chunk exactly as in training (the normalisation comes from
the ``.tflite.json`` sidecar when there is one), quantises/dequantises the
ends of int8 models, and keeps memory bounded by working through the
candidates ``batch_size`` at a time.

For a Keras model the default path converts the model once, in memory, to a
float32 TFLite model with a dynamic batch and runs it with LiteRT's XNNPACK
CPU kernels: the same scores (see below), somewhat faster per
CPU-second than Keras, no retracing when the batch size changes, and
``num_threads`` honoured (``benchmarks/bench_score.py`` measures it). The
conversion (about half a CPU-second) is cached per model and thread, and
its scores are checked against Keras on the first batch; if they differ by
more than :data:`FAST_PATH_TOLERANCE` the Keras path is used instead (with
an :class:`~astrid.errors.AstridWarning`). ``interpreter="keras"`` forces
Keras. The fastest CPU path by far is an int8 model (see
:func:`astrid.export.to_tflite`), at the cost that :func:`parity` measures.

Unusable data and caching
-------------------------
A candidate has no usable data, and gets a NaN score instead of the one
score every blank input would share, when its stamps hold no finite
pixel, or when one channel is entirely NaN/inf where the Dataset's
``valid`` says it holds data (for an array: anywhere in the stamp);
:func:`astrid.braai.no_data` has the details. A channel
that ``valid`` marks as empty (an alert without a reference) is scored
as braai does, with that channel blank. NaN pixels among data are set
to 0 as in braai; ±inf pixels too (braai's ``np.nan_to_num`` would make
them ±3.4e38, which swamps the normalisation), with a warning, since
they usually mean a broken producer. With ``norm="none"`` the triplets
are already preprocessed and NaN/inf in them is an error.

Loaded model files (keyed by path, modification time and size) and the
in-memory conversions of Keras models (keyed by the model object and a
hash of its weights) are cached per thread, so repeated calls skip the
set-up; TFLite interpreters are not thread-safe, and each thread gets
its own.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .braai import card_path, mean_over_symmetries, no_data
from .errors import AstridInputError, AstridWarning
from .export import (
    CONSTANT_OUTPUT_SPREAD,
    TFLiteRunner,
    convert_keras,
    load_keras_model,
    model_sha256,
    n_candidates,
    preprocess,
    resolve_norm,
    sidecar_path,
    take_candidates,
)

__all__ = ["score", "parity", "FAST_PATH_TOLERANCE", "NoDataWarning"]


class NoDataWarning(AstridWarning):
    """Candidates without usable stamp data got a NaN score (see :func:`score`)."""


#: Largest |TFLite float32 − Keras| score accepted for the fast Keras path.
FAST_PATH_TOLERANCE = 1e-5
#: Triplets compared between Keras and TFLite when the fast path is first used.
_PARITY_SAMPLE = 32

_INTERPRETERS = ("litert", "tflite_runtime", "tensorflow", "keras")
#: What a braai model takes per triplet.
_TRIPLET_SHAPE = (63, 63, 3)


class _KerasPredictor:
    """Keras model as a function of preprocessed triplets."""

    backend = "keras"

    def __init__(self, model):
        self.model = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        expected = tuple(self.model.input_shape[1:])
        if x.shape[1:] != expected:
            raise AstridInputError(
                f"triplets: preprocessed shape {x.shape[1:]} does not match the input {expected} "
                f"of model {getattr(self.model, 'name', '?')!r}"
            )
        y = np.asarray(self.model.predict_on_batch(x), dtype=np.float32).reshape(len(x), -1)
        if y.shape[1] != 1:
            raise AstridInputError(
                f"model {getattr(self.model, 'name', '?')!r}: expected one score per triplet, "
                f"the output has {y.shape[1]} values per triplet"
            )
        return y[:, 0]


class _FastKeras:
    """Keras model run as an in-memory float32 TFLite model, checked against Keras."""

    def __init__(self, model, runner: TFLiteRunner):
        self.model = model
        self.runner = runner
        self.backend = f"{runner.backend} (float32 TFLite converted in memory)"
        self.checked = False
        self.max_abs_diff: float | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.runner(x)


# Interpreters are not thread-safe, so every thread keeps its own caches:
# ``fast``: Keras model object -> {(weights hash, threads, interpreter): _FastKeras};
# ``files``: (path, mtime, size, threads, interpreter) -> resolved model, most recent last.
_LOCAL = threading.local()
_MAX_CACHED_FILES = 4


def _thread_cache(name: str, factory):
    cache = getattr(_LOCAL, name, None)
    if cache is None:
        cache = factory()
        setattr(_LOCAL, name, cache)
    return cache


def _fast_keras(model, num_threads, interpreter) -> _FastKeras:
    key = (model_sha256(model), num_threads, interpreter)  # retrained in place → new conversion
    try:
        per_model = _thread_cache("fast", weakref.WeakKeyDictionary).setdefault(model, {})
    except TypeError:  # not weak-referenceable: convert every call
        per_model = {}
    if key not in per_model:
        content = convert_keras(model, quantize=None, batch_size=None)
        runner = TFLiteRunner(
            content,
            num_threads=num_threads,
            interpreter=interpreter,
            name=f"{getattr(model, 'name', 'model')} (in-memory TFLite)",
        )
        per_model[key] = _FastKeras(model, runner)
    return per_model[key]


def _check_fast(fast: _FastKeras, x: np.ndarray) -> bool:
    """Compare the fast path with Keras on a few triplets; False if they disagree."""
    if fast.checked:
        return fast.max_abs_diff is not None and fast.max_abs_diff <= FAST_PATH_TOLERANCE
    sample = x[:_PARITY_SAMPLE]
    diff = float(np.max(np.abs(fast(sample) - _KerasPredictor(fast.model)(sample))))
    fast.checked, fast.max_abs_diff = True, diff
    if diff > FAST_PATH_TOLERANCE:
        warnings.warn(
            f"model {getattr(fast.model, 'name', '?')!r}: its in-memory TFLite conversion differs from "
            f"Keras by up to {diff:.3g} (> {FAST_PATH_TOLERANCE:g}); scoring with Keras instead",
            AstridWarning,
            stacklevel=3,
        )
        return False
    return True


def _resolve_model(model: Any, num_threads: int | None, interpreter: str | None):
    """(predictor, model norm or None, description); model files are cached per thread."""
    if interpreter is not None and interpreter not in _INTERPRETERS:
        raise AstridInputError(
            f"interpreter={interpreter!r}: expected one of {_INTERPRETERS} or None"
        )
    if isinstance(model, TFLiteRunner):
        _check_runner_ends(model)
        return model, model.norm, model.name
    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        stat = Path(model).stat()
        side = sidecar_path(model)
        if Path(model).suffix.lower() == ".keras":  # its card holds the norm and the calibration
            side = card_path(model)
        side_stamp = side.stat().st_mtime_ns if side.exists() else None
        key = (
            str(Path(model).resolve()),
            stat.st_mtime_ns,
            stat.st_size,
            side_stamp,
            num_threads,
            interpreter,
        )
        files = _thread_cache("files", OrderedDict)
        if key in files:
            files.move_to_end(key)
            return files[key]
        files[key] = _load_model(model, num_threads, interpreter)
        while len(files) > _MAX_CACHED_FILES:
            files.popitem(last=False)
        return files[key]
    return _load_model(model, num_threads, interpreter)


def _load_model(model: Any, num_threads: int | None, interpreter: str | None):
    if isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() == ".tflite":
        if interpreter == "keras":
            raise AstridInputError(f"{model}: interpreter='keras' cannot run a .tflite model")
        runner = TFLiteRunner(model, num_threads=num_threads, interpreter=interpreter)
        _check_runner_ends(runner)
        return runner, runner.norm, str(model)
    keras_model = load_keras_model(model)
    _check_keras_ends(keras_model, model)
    norm = getattr(keras_model, "astrid_norm", None)
    description = (
        str(model) if isinstance(model, (str, os.PathLike)) else getattr(keras_model, "name", "")
    )
    if interpreter == "keras":
        return _KerasPredictor(keras_model), norm, description
    try:
        fast = _fast_keras(keras_model, num_threads, interpreter)
    except ImportError:
        if interpreter is not None:
            raise
        return _KerasPredictor(keras_model), norm, description  # no TFLite interpreter installed
    return fast, norm, description


def _check_runner_ends(runner: TFLiteRunner) -> None:
    if runner.sample_shape != _TRIPLET_SHAPE:
        raise AstridInputError(
            f"{runner.name}: input shape {runner.sample_shape}, expected {_TRIPLET_SHAPE} "
            "(63x63 stamps, science/reference/difference channels)"
        )


def _check_keras_ends(keras_model, source: Any) -> None:
    """Refuse, before any scoring, a Keras model that does not take (63, 63, 3) and give one score."""
    what = (
        str(source)
        if isinstance(source, (str, os.PathLike))
        else f"model {getattr(keras_model, 'name', '?')!r}"
    )
    inputs = getattr(keras_model, "inputs", None) or []
    if len(inputs) != 1:
        raise AstridInputError(
            f"{what}: expected a model with one input tensor, it has {len(inputs)}"
        )
    found = tuple(inputs[0].shape[1:])
    if found != _TRIPLET_SHAPE:
        raise AstridInputError(
            f"{what}: input shape {found}, expected {_TRIPLET_SHAPE} (63x63 stamps, "
            "science/reference/difference channels)"
        )
    outputs = getattr(keras_model, "outputs", None) or []
    width = [int(np.prod([d for d in o.shape[1:] if d is not None])) for o in outputs]
    if width != [1]:
        raise AstridInputError(
            f"{what}: expected one output with one score per triplet, found output shape(s) "
            f"{[tuple(o.shape[1:]) for o in outputs]}"
        )


def _blocks(triplets: Any, n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges of at most batch_size that never straddle a Dask chunk."""
    chunks = None
    var = triplets["triplets"] if hasattr(triplets, "data_vars") else triplets
    if getattr(var, "chunks", None) and not isinstance(var, np.ndarray):
        first = var.chunks[0]
        chunks = list(first) if isinstance(first, tuple) else None
    edges = np.cumsum([0, *(chunks or [n])])
    for lo, hi in zip(edges[:-1], edges[1:]):
        for start in range(int(lo), int(hi), batch_size):
            yield start, min(start + batch_size, int(hi))


def _result_array(triplets: Any, scores: np.ndarray, attrs: dict):
    import xarray as xr

    if hasattr(triplets, "data_vars"):
        others = [d for d in triplets.dims if d != "candidate"]
        coords = triplets.drop_dims(others).coords
    elif isinstance(triplets, xr.DataArray):
        dim = triplets.dims[0]
        coords = (
            triplets.to_dataset(name="triplets")
            .drop_dims([d for d in triplets.dims if d != dim])
            .coords
        )
    else:
        return scores
    dim = "candidate" if hasattr(triplets, "data_vars") else triplets.dims[0]
    return xr.DataArray(scores, coords=coords, dims=(dim,), name="score", attrs=attrs)


def score(
    triplets: Any,
    model: Any,
    norm: str | None = None,
    batch_size: int = 256,
    num_threads: int | None = None,
    interpreter: str | None = None,
    calibrated: bool = True,
    symmetries: bool = False,
):
    """Real/bogus scores of triplets.

    Parameters
    ----------
    triplets : xarray.Dataset, xarray.DataArray or numpy.ndarray
        A triplet Dataset (schema of :mod:`astrid.schema`; may be
        Dask-backed, it is read chunk by chunk), its ``triplets`` variable,
        or raw stamps of shape (n, ny, nx, 3) with ny, nx <= 63 (science,
        reference, difference; padded as in braai). Pass the Dataset for
        truncated ZTF cutouts: only it knows their true size
        (``stamp_ny``/``stamp_nx``), which braai's 1e-9 padding needs.
    model : keras.Model, str, path-like or TFLiteRunner
        A Keras model; a ``.keras`` file; a braai ``.h5`` file (via
        :func:`astrid.braai.load_braai`); a ``.tflite`` file (float or int8,
        static or dynamic batch, e.g. from :func:`astrid.export.to_tflite`);
        or an already loaded :class:`astrid.export.TFLiteRunner`.
    norm : {"rowwise", "l2", "none"}, optional
        Preprocessing normalisation. Default: the one recorded for the
        model (a ``.tflite``'s ``.tflite.json`` sidecar, a Keras model's
        ``astrid_norm`` as set by :func:`astrid.braai.load_braai`), else
        ``"rowwise"`` (braai d6_m7, the model of ZTF's ``drb``).
        ``"none"``: the triplets are already preprocessed. A value that
        contradicts the recorded one is used, with an
        :class:`~astrid.errors.AstridWarning`.
    batch_size : int, optional
        Triplets read, preprocessed and scored at a time (default 256);
        bounds the memory in use. Within a batch a dynamic-batch TFLite
        model is invoked :data:`astrid.export.INVOKE_BATCH` (16)
        triplets at a time, and a model with a static batch (the Edge
        TPU's 1) is looped over.
    num_threads : int, optional
        TFLite interpreter threads (default: the CPU cores of this process).
        The Keras path uses TensorFlow's global thread settings instead.
    interpreter : {"litert", "tflite_runtime", "tensorflow", "keras"}, optional
        TFLite interpreter package (default: the first importable, in that
        order), or ``"keras"`` to score a Keras model with Keras itself
        instead of the faster in-memory TFLite conversion.
    calibrated : bool, optional
        Apply the model's score calibration (default), when it has one: the
        one :func:`astrid.braai.train` fitted on its validation set, found
        in the model card beside a ``.keras`` file, as a Keras model's
        ``astrid_calibration``, or in a ``.tflite.json`` sidecar. Calibrated
        scores are probabilities of being real (on data like the validation
        set). False: the network's raw sigmoid output. A model without a
        calibration gives its raw scores either way.
    symmetries : bool, optional
        Average each raw score over the stamps' eight rotations and mirrors
        (:func:`astrid.braai.mean_over_symmetries`, eight passes), then
        calibrate the average. Default off.

    Returns
    -------
    xarray.DataArray or numpy.ndarray, float32, shape (n,)
        For a Dataset/DataArray: a DataArray named ``score`` along
        ``candidate`` with all the per-candidate coordinates of the input
        (``candidate_id``, ``candid``, ``drb``, ...). For an ndarray: an
        ndarray. NaN for candidates without usable data (see Notes). The
        DataArray's attributes ``n_no_data`` and ``n_with_inf`` count those
        and the candidates with ±inf pixels; ``calibrated`` (1 or 0) and
        ``calibration`` (e.g. ``"temperature T=1.42"``, or ``"none"``) say
        whether the model's calibration was applied; ``symmetries`` (1 or 0) likewise.

    Raises
    ------
    AstridInputError
        Bad parameters, triplets of the wrong shape, or a model that does
        not take (63, 63, 3) triplets and give one score per triplet.
    AstridFileError
        Missing, truncated or corrupt model files, or a folder given as one.

    Warns
    -----
    NoDataWarning
        Some candidates have no usable stamp data; the count is in the
        message and their scores are NaN.
    AstridWarning
        Some candidates have ±inf pixels (scored with them set to 0).

    Notes
    -----
    Candidates without usable data and the caching of loaded models are
    described in the module's notes (:mod:`astrid.score`).

    Examples
    --------
    >>> from astrid import alerts, score                     # doctest: +SKIP
    >>> ds = alerts.read_ztf("ztf_alerts/")                  # doctest: +SKIP
    >>> s = score.score(ds, "d6_m7_int8.tflite")             # doctest: +SKIP
    """
    batch_size = _check_counts(batch_size, num_threads)
    n = n_candidates(triplets)
    predictor, model_norm, description = _resolve_model(model, num_threads, interpreter)
    norm = resolve_norm(norm, model_norm, description)

    scores, empty, with_inf = _score_blocks(triplets, n, batch_size, predictor, norm, symmetries)
    calibration = _calibration_of(predictor, description) if calibrated else None
    if calibration is not None:
        scores = calibration.apply(scores).astype(np.float32, copy=False)
    n_empty, n_inf = int(empty.sum()), int((with_inf & ~empty).sum())
    _warn_unusable(n, n_empty, n_inf)
    attrs = {
        "model": description,
        "norm": norm,
        "backend": str(getattr(predictor, "backend", "keras")),
        "n_no_data": n_empty,
        "n_with_inf": n_inf,
        "symmetries": int(bool(symmetries)),
    }
    return _result_array(triplets, scores, _attributes(attrs, calibration))


def _attributes(attrs: dict, calibration) -> dict:
    """The score array's attributes: ``attrs`` with the name, version and calibration."""
    return {
        "long_name": "real/bogus score",
        **attrs,
        "astrid_version": __version__,
        "calibrated": int(calibration is not None),
        "calibration": _describe(calibration),
    }


def _check_counts(batch_size, num_threads) -> int:
    """``batch_size`` as an int, after checking it and ``num_threads``."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise AstridInputError(f"batch_size={batch_size!r}: expected a positive integer")
    if num_threads is not None and (int(num_threads) != num_threads or num_threads < 1):
        raise AstridInputError(f"num_threads={num_threads!r}: expected a positive integer or None")
    return int(batch_size)


def _score_blocks(triplets, n: int, batch_size: int, predictor, norm: str, symmetries: bool):
    """Raw scores (NaN without usable data), and which candidates had none or had ±inf pixels."""
    scores = np.empty(n, dtype=np.float32)
    empty = np.zeros(n, dtype=bool)
    with_inf = np.zeros(n, dtype=bool)
    for start, stop in _blocks(triplets, n, batch_size):
        block = take_candidates(triplets, slice(start, stop))
        if hasattr(block, "load"):  # read a Dask-backed block once, not once per use
            block = block.load()
        if norm != "none":
            empty[start:stop], with_inf[start:stop] = no_data(_raw(block))
        x = preprocess(block, norm)
        if isinstance(predictor, _FastKeras) and not _check_fast(predictor, x):
            predictor = _KerasPredictor(predictor.model)
        scores[start:stop] = mean_over_symmetries(predictor, x) if symmetries else predictor(x)
    scores[empty] = np.nan
    return scores, empty, with_inf


def _warn_unusable(n: int, n_empty: int, n_inf: int) -> None:
    """Say how many candidates had no usable data, or ±inf pixels (warnings point at the caller)."""
    if n_empty:
        warnings.warn(
            f"triplets: {n_empty} of {n} candidate(s) have no usable stamp data (no finite pixel, "
            "or a channel that 'valid' says holds data is all NaN/inf); their score is NaN",
            NoDataWarning,
            stacklevel=3,
        )
    if n_inf:
        warnings.warn(
            f"triplets: {n_inf} of {n} candidate(s) have ±inf pixels; these were treated as "
            "missing (0), like NaN",
            AstridWarning,
            stacklevel=3,
        )


def _calibration_of(predictor: Any, description: str):
    """The model's score calibration (:class:`astrid.braai.Calibration`), or None."""
    from .braai import Calibration

    if isinstance(predictor, TFLiteRunner):
        data, where = (
            (predictor.sidecar or {}).get("score_calibration"),
            f"{predictor.name} sidecar",
        )
    else:
        data, where = (
            getattr(getattr(predictor, "model", None), "astrid_calibration", None),
            description,
        )
    if data is None:
        return None
    return Calibration.from_dict(data, f"{where}: score calibration")


def _describe(calibration) -> str:
    if calibration is None:
        return "none"
    if calibration.method == "temperature":
        return f"temperature T={calibration.temperature:.4g}"
    if calibration.method == "platt":
        return f"platt T={calibration.temperature:.4g} b={calibration.bias:.4g}"
    return f"isotonic ({len(calibration.x)} breakpoints)"


def _raw(block: Any) -> Any:
    """What :func:`astrid.braai.no_data` takes: a Dataset or the stamp array."""
    if hasattr(block, "data_vars"):
        return block
    return np.asarray(getattr(block, "values", block))


def parity(float_scores, int8_scores, labels=None, threshold: float = 0.5) -> dict[str, Any]:
    """How much a quantised model's scores differ from the float model's.

    Parameters
    ----------
    float_scores, int8_scores : array-like, shape (n,)
        Scores of the same triplets from the reference (float) model and the
        quantised one (DataArrays are fine).
    labels : array-like of bool or {0, 1}, shape (n,), optional
        True class (1 = real). When given, ROC AUC, average precision (AUCPR)
        and the false-negative rate at ``threshold`` are computed for both.
    threshold : float, optional
        Score at or above which a candidate is called real (default 0.5).

    Returns
    -------
    dict
        ``n``, ``max_abs_diff``, ``p99_abs_diff``, ``mean_abs_diff``,
        ``flipped`` (candidates whose call changes at ``threshold``),
        ``constant_int8`` (True when ``int8_scores`` are all one value
        while ``float_scores`` span more than
        :data:`astrid.export.CONSTANT_OUTPUT_SPREAD`; also warned
        about) and,
        with labels, ``auc_float``, ``auc_int8``, ``aucpr_float``,
        ``aucpr_int8``, ``fnr_float``, ``fnr_int8``, ``delta_fnr`` (int8 −
        float), ``fpr_float``, ``fpr_int8``. AUCs are None when ``labels``
        hold a single class.

    Raises
    ------
    AstridInputError
        Arrays of different lengths, NaN scores, or non-binary labels.

    Warns
    -----
    AstridWarning
        ``int8_scores`` are constant while ``float_scores`` vary.
    """
    a = np.asarray(getattr(float_scores, "values", float_scores), dtype=np.float64).ravel()
    b = np.asarray(getattr(int8_scores, "values", int8_scores), dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise AstridInputError(
            f"parity: float_scores has {a.size} values, int8_scores {b.size}; they must score the same triplets"
        )
    if a.size == 0:
        raise AstridInputError("parity: no scores")
    for name, values in (("float_scores", a), ("int8_scores", b)):
        bad = int(np.sum(~np.isfinite(values)))
        if bad:
            raise AstridInputError(
                f"parity: {name} has {bad} NaN/inf value(s) of {values.size} (score() gives NaN to "
                "candidates without usable data; compare only candidates finite in both)"
            )
    diff = np.abs(a - b)
    # A quantised model calibrated on blank data answers every input alike;
    # its differences from the float scores alone can look small.
    constant = bool(a.size > 1 and np.ptp(b) == 0 and np.ptp(a) > CONSTANT_OUTPUT_SPREAD)
    if constant:
        warnings.warn(
            f"int8_scores: all {b.size} scores are {b[0]:.4g}, while float_scores span "
            f"{a.min():.4g}..{a.max():.4g}: the quantised model gives every input the same score "
            "(degenerate int8 calibration?)",
            AstridWarning,
            stacklevel=2,
        )
    out: dict[str, Any] = {
        "constant_int8": constant,
        "n": int(a.size),
        "threshold": float(threshold),
        "max_abs_diff": float(diff.max()),
        "p99_abs_diff": float(np.percentile(diff, 99)),
        "mean_abs_diff": float(diff.mean()),
        "flipped": int(np.sum((a >= threshold) != (b >= threshold))),
    }
    if labels is None:
        return out
    y = np.asarray(getattr(labels, "values", labels)).ravel()
    if y.shape != a.shape:
        raise AstridInputError(f"parity: labels has {y.size} values for {a.size} scores")
    if y.dtype != bool:
        if not np.all(np.isin(y, (0, 1))):
            raise AstridInputError("parity: labels must be bool or 0/1 (1 = real)")
        y = y.astype(bool)
    from sklearn.metrics import average_precision_score, roc_auc_score

    both = 0 < y.sum() < y.size
    for name, s in (("float", a), ("int8", b)):
        out[f"auc_{name}"] = float(roc_auc_score(y, s)) if both else None
        out[f"aucpr_{name}"] = float(average_precision_score(y, s)) if both else None
        called = s >= threshold
        out[f"fnr_{name}"] = float(np.mean(~called[y])) if y.any() else None
        out[f"fpr_{name}"] = float(np.mean(called[~y])) if (~y).any() else None
    out["delta_fnr"] = None if out["fnr_float"] is None else out["fnr_int8"] - out["fnr_float"]
    return out
