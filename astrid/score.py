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
from .errors import AstridInputError, AstridWarning
from .export._tflite import (
    TFLiteRunner,
    _n_candidates,
    _take,
    convert_keras,
    load_keras_model,
    model_sha256,
    preprocess,
    resolve_norm,
    sidecar_path,
)

__all__ = ["score", "parity", "FAST_PATH_TOLERANCE"]

#: Largest |TFLite float32 − Keras| score accepted for the fast Keras path.
FAST_PATH_TOLERANCE = 1e-5
#: Triplets compared between Keras and TFLite when the fast path is first used.
_PARITY_SAMPLE = 32

_INTERPRETERS = ("litert", "tflite_runtime", "tensorflow", "keras")


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
        y = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        return y.reshape(len(x), -1)[:, 0]


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
        runner = TFLiteRunner(content, num_threads=num_threads, interpreter=interpreter,
                              name=f"{getattr(model, 'name', 'model')} (in-memory TFLite)")
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
        raise AstridInputError(f"interpreter={interpreter!r}: expected one of {_INTERPRETERS} or None")
    if isinstance(model, TFLiteRunner):
        return model, model.norm, model.name
    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        stat = Path(model).stat()
        side = sidecar_path(model)
        side_stamp = side.stat().st_mtime_ns if side.exists() else None
        key = (str(Path(model).resolve()), stat.st_mtime_ns, stat.st_size, side_stamp, num_threads, interpreter)
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
        return runner, runner.norm, str(model)
    keras_model = load_keras_model(model)
    norm = getattr(keras_model, "astrid_norm", None)
    description = str(model) if isinstance(model, (str, os.PathLike)) else getattr(keras_model, "name", "")
    if interpreter == "keras":
        return _KerasPredictor(keras_model), norm, description
    try:
        fast = _fast_keras(keras_model, num_threads, interpreter)
    except ImportError:
        if interpreter is not None:
            raise
        return _KerasPredictor(keras_model), norm, description  # no TFLite interpreter installed
    return fast, norm, description


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
        coords = triplets.to_dataset(name="triplets").drop_dims(
            [d for d in triplets.dims if d != dim]
        ).coords
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
):
    """Real/bogus scores of triplets.

    Parameters
    ----------
    triplets : xarray.Dataset, xarray.DataArray or numpy.ndarray
        A triplet Dataset (schema of :mod:`astrid._schema`; may be
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
        model is invoked :data:`astrid.export._tflite.INVOKE_BATCH` (16)
        triplets at a time, and a model with a static batch (the Edge
        TPU's 1) is looped over.
    num_threads : int, optional
        TFLite interpreter threads (default: the CPU cores of this process).
        The Keras path uses TensorFlow's global thread settings instead.
    interpreter : {"litert", "tflite_runtime", "tensorflow", "keras"}, optional
        TFLite interpreter package (default: the first importable, in that
        order), or ``"keras"`` to score a Keras model with Keras itself
        instead of the faster in-memory TFLite conversion.

    Returns
    -------
    xarray.DataArray or numpy.ndarray, float32, shape (n,)
        For a Dataset/DataArray: a DataArray named ``score`` along
        ``candidate`` with all the per-candidate coordinates of the input
        (``candidate_id``, ``candid``, ``drb``, ...). For an ndarray: an
        ndarray.

    Raises
    ------
    AstridInputError
        Bad parameters, or triplets of the wrong shape for the model.
    AstridFileError
        Missing or corrupt model files.

    Notes
    -----
    Loaded model files (keyed by path, modification time and size) and the
    in-memory conversions of Keras models (keyed by the model object and a
    hash of its weights) are cached per thread, so repeated calls skip the
    set-up; TFLite interpreters are not thread-safe, and each thread gets
    its own.

    Examples
    --------
    >>> from astrid import alerts, score                     # doctest: +SKIP
    >>> ds = alerts.read_ztf("ztf_alerts/")                  # doctest: +SKIP
    >>> s = score.score(ds, "d6_m7_int8.tflite")             # doctest: +SKIP
    >>> s.sel(candidate_id="714287740515015072")              # doctest: +SKIP
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise AstridInputError(f"batch_size={batch_size!r}: expected a positive integer")
    batch_size = int(batch_size)
    if num_threads is not None and (int(num_threads) != num_threads or num_threads < 1):
        raise AstridInputError(f"num_threads={num_threads!r}: expected a positive integer or None")
    n = _n_candidates(triplets)
    predictor, model_norm, description = _resolve_model(model, num_threads, interpreter)
    norm = resolve_norm(norm, model_norm, description)

    scores = np.empty(n, dtype=np.float32)
    for start, stop in _blocks(triplets, n, batch_size):
        x = preprocess(_take(triplets, slice(start, stop)), norm)
        if isinstance(predictor, _FastKeras) and not _check_fast(predictor, x):
            predictor = _KerasPredictor(predictor.model)
        scores[start:stop] = predictor(x)

    backend = getattr(predictor, "backend", "keras")
    attrs = {
        "long_name": "real/bogus score",
        "model": description,
        "norm": norm,
        "backend": str(backend),
        "astrid_version": __version__,
    }
    return _result_array(triplets, scores, attrs)


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
        ``flipped`` (candidates whose call changes at ``threshold``) and,
        with labels, ``auc_float``, ``auc_int8``, ``aucpr_float``,
        ``aucpr_int8``, ``fnr_float``, ``fnr_int8``, ``delta_fnr`` (int8 −
        float), ``fpr_float``, ``fpr_int8``. AUCs are None when ``labels``
        hold a single class.

    Raises
    ------
    AstridInputError
        Arrays of different lengths, NaN scores, or non-binary labels.
    """
    a = np.asarray(getattr(float_scores, "values", float_scores), dtype=np.float64).ravel()
    b = np.asarray(getattr(int8_scores, "values", int8_scores), dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise AstridInputError(
            f"parity: float_scores has {a.size} values, int8_scores {b.size}; they must score the same triplets"
        )
    if a.size == 0:
        raise AstridInputError("parity: no scores")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise AstridInputError("parity: scores contain NaN/inf")
    diff = np.abs(a - b)
    out: dict[str, Any] = {
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
    out["delta_fnr"] = (
        None if out["fnr_float"] is None else out["fnr_int8"] - out["fnr_float"]
    )
    return out
