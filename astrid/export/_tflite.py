"""Keras → TFLite conversion with int8 calibration on real triplets: :func:`to_tflite`.

Three flavours, one function:

``quantize="int8"``
    Full-integer post-training quantisation (``TFLITE_BUILTINS_INT8`` only,
    int8 or uint8 input and output), calibrated on real triplets passed
    through the model's own preprocessing. With ``batch_size=1`` (the
    default) the graph has static shapes and contains only Edge TPU
    operators; :func:`~astrid.export.edgetpu_report` checks that.
``quantize="float16"``
    float16 weights, float32 compute and I/O (half the file size).
``quantize=None``
    Plain float32; with ``batch_size=None`` the batch dimension is dynamic,
    which is the fast CPU path of :func:`astrid.score.score`.

Keras 3 models are converted from a concrete ``tf.function`` of
``model(x, training=False)`` with a fixed input signature, wrapped in a
``tf.Module`` that owns the model's variables: ``from_keras_model`` always
traces a dynamic batch (it adds SHAPE/STRIDED_SLICE/PACK operators in front
of ``Flatten``, which the Edge TPU cannot run), and a bare concrete function
leaves the variables as READ_VARIABLE operators that fail during calibration.

Every ``.tflite`` gets a sidecar ``<name>.tflite.json`` that records how to
feed it (normalisation, input/output quantisation) and where it came from.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from .._version import __version__
from ..errors import AstridFileError, AstridInputError, AstridWarning
from ..io import atomic_write
from ._edgetpu import EdgeTPUReport, TensorInfo, edgetpu_report, read_io_details

__all__ = [
    "ExportReport",
    "TFLiteRunner",
    "convert_keras",
    "default_num_threads",
    "NORMS",
    "to_tflite",
    "read_sidecar",
    "sidecar_path",
    "load_keras_model",
    "model_sha256",
    "preprocess",
    "resolve_norm",
    "DEFAULT_NORM",
]

#: Normalisations understood by :func:`astrid.braai.preprocess`, plus ``"none"``
#: for triplets that are already preprocessed (float32, shape (n, 63, 63, 3)).
NORMS = ("rowwise", "l2", "none")
#: Normalisation when neither the caller nor the model says (braai d6_m7, the model of ZTF's drb).
DEFAULT_NORM = "rowwise"
_QUANTIZE = ("int8", "float16", None)
#: Batch per interpreter call for dynamic-batch models (see :class:`TFLiteRunner`).
INVOKE_BATCH = 16
SIDECAR_FORMAT = "astrid-tflite/1"
#: Fewest different, usable triplets accepted for int8 calibration.
MIN_CALIBRATION = 16
#: Keras score spread (on the calibration and synthetic inputs) above which an
#: int8 model that gives all of them one score is refused.
CONSTANT_OUTPUT_SPREAD = 0.02


# --------------------------------------------------------------------------- #
# models and preprocessing
# --------------------------------------------------------------------------- #


def _keras():
    return require("keras", "Loading or converting a Keras model")


def load_keras_model(model: Any):
    """A Keras model from a model object, a ``.keras`` file or a braai ``.h5`` file.

    Parameters
    ----------
    model : keras.Model, str or path-like
        A model, a Keras 3 ``.keras`` archive, or a braai Keras-2 ``.h5``
        file (read with :func:`astrid.braai.load_braai`).

    Returns
    -------
    keras.Model

    Raises
    ------
    AstridFileError
        Missing or unreadable file.
    AstridInputError
        Anything else (including a ``.tflite`` path, which is not Keras).
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise AstridFileError(f"{path}: no such model file")
        if path.is_dir():
            raise AstridFileError(
                f"{path}: is a folder, not a model file (expected a .keras, braai .h5 or .tflite file; "
                "a TensorFlow SavedModel folder is not supported)"
            )
        suffix = path.suffix.lower()
        if suffix == ".keras":
            return _with_card(load_keras_archive(path), path)
        if suffix in (".h5", ".hdf5"):
            from ..braai import load_braai

            return load_braai(path)
        if suffix == ".tflite":
            raise AstridInputError(f"{path}: is already a TFLite model, not a Keras model")
        raise AstridInputError(
            f"{path}: unknown model file type {suffix!r} (expected .keras, .h5 or .tflite)"
        )
    keras = _keras()
    if isinstance(model, keras.Model):
        return model
    raise AstridInputError(
        f"model: expected a keras.Model or a .keras/.h5 path, got {type(model).__name__}"
    )


def _with_card(model, path: Path):
    """Set ``astrid_norm`` and ``astrid_calibration`` from the model card beside a ``.keras`` file, if any.

    The card (``<name>.card.json``, written by :func:`astrid.braai.train`)
    says how the model was trained: its preprocessing and the score
    calibration fitted on its validation set.
    """
    from ..braai import card_path as card_beside

    card_path = card_beside(path)
    if not card_path.is_file():
        return model
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise AstridFileError(f"{card_path}: model card is not readable JSON ({exc})") from exc
    if not isinstance(card, dict):
        return model
    if card.get("norm") in NORMS[:2]:
        model.astrid_norm = card["norm"]
    if card.get("calibration") is not None:
        from ..braai import Calibration

        model.astrid_calibration = Calibration.from_dict(
            card["calibration"], f"{card_path}: calibration"
        ).to_dict()
    return model


def load_keras_archive(path: Path):
    """A Keras 3 ``.keras`` archive loaded uncompiled; a damaged one named as such.

    The one loader of ``.keras`` files behind :func:`load_keras_model`,
    :func:`astrid.braai.load_trained` and :func:`astrid.anomaly.load_unet`.

    Raises
    ------
    AstridFileError
        Not a complete zip archive with ``config.json``, a member failing its
        CRC, or a model Keras cannot rebuild.
    """
    _check_keras_archive(path)
    try:
        return _keras().saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError/OSError/zipfile errors alike
        raise AstridFileError(
            f"{path}: cannot load the Keras model ({type(exc).__name__}: {exc})"
        ) from exc


def _check_keras_archive(path: Path) -> None:
    """Refuse a ``.keras`` file that is not a complete Keras archive, saying what it is."""
    import zipfile

    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        head = path.read_bytes()[:4]
        kind = (
            "an HDF5 file (load it with astrid.braai.load_braai or rename it .h5)"
            if head == b"\x89HDF"
            else ("empty" if size == 0 else "truncated or not a zip archive")
        )
        raise AstridFileError(
            f"{path}: not a readable .keras archive: {kind} ({size} bytes; {exc})"
        ) from exc
    except Exception as exc:  # zlib/CRC errors inside members
        raise AstridFileError(
            f"{path}: damaged .keras archive ({size} bytes; {type(exc).__name__}: {exc})"
        ) from exc
    if damaged is not None:
        raise AstridFileError(
            f"{path}: damaged .keras archive (member {damaged!r} fails its CRC check)"
        )
    if "config.json" not in names:
        raise AstridFileError(
            f"{path}: not a complete .keras archive (missing ['config.json']; has {sorted(names)[:5]})"
        )


def model_sha256(model) -> str:
    """SHA-256 of a Keras model's weights (shapes, dtypes and values, in order).

    Two models with the same weights and layer order hash the same, whatever
    the layer names Keras gave them in this session.
    """
    digest = hashlib.sha256()
    for weight in model.get_weights():
        arr = np.ascontiguousarray(weight)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _input_shape(model) -> tuple[int, ...]:
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise AstridInputError(
            f"model {getattr(model, 'name', '?')!r}: expected one input tensor, "
            f"got {0 if not inputs else len(inputs)} (build the model with keras.Input)"
        )
    shape = tuple(inputs[0].shape[1:])
    if any(s is None for s in shape):
        raise AstridInputError(f"model {model.name!r}: input shape {shape} is not fully defined")
    return tuple(int(s) for s in shape)


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise AstridInputError(f"norm={norm!r}: expected one of {NORMS}")
    return norm


def resolve_norm(norm: str | None, model_norm: str | None, what: str) -> str:
    """The normalisation to use: ``norm`` if given, else the model's, else ``"rowwise"``.

    An explicit ``norm`` that contradicts the model's recorded one is used,
    with an :class:`~astrid.errors.AstridWarning`.
    """
    if norm is None:
        return _check_norm(model_norm or DEFAULT_NORM)
    _check_norm(norm)
    if model_norm is not None and norm != model_norm and norm != "none":
        warnings.warn(
            f"norm={norm!r} differs from the normalisation {model_norm!r} recorded for the model "
            f"({what}); scores may be wrong",
            AstridWarning,
            stacklevel=3,
        )
    return norm


def preprocess(triplets: Any, norm: str) -> np.ndarray:
    """Triplets → float32 network input, exactly as in training.

    Parameters
    ----------
    triplets : xarray.Dataset, xarray.DataArray or numpy.ndarray
        A triplet dataset (schema of :mod:`astrid.schema`), its ``triplets``
        variable, or raw stamps of shape (n, ny, nx, 3).
    norm : {"rowwise", "l2", "none"}
        ``"rowwise"``/``"l2"``: :func:`astrid.braai.preprocess` with that
        normalisation. ``"none"``: the input is already preprocessed and is
        only converted to float32.

    Returns
    -------
    numpy.ndarray, float32, shape (n, 63, 63, 3)
    """
    _check_norm(norm)
    if norm == "none":
        values = triplets["triplets"].values if hasattr(triplets, "data_vars") else triplets
        values = np.asarray(getattr(values, "values", values), dtype=np.float32)
        if not np.all(np.isfinite(values)):
            raise AstridInputError(
                "triplets: norm='none' means already preprocessed, but the array has NaN/inf "
                "(use norm='rowwise' or 'l2' to preprocess raw stamps)"
            )
        return values
    from ..braai import preprocess as braai_preprocess

    if hasattr(triplets, "dims") and not hasattr(triplets, "data_vars"):
        triplets = triplets.values  # a bare DataArray: preprocess its stamps
    return np.asarray(braai_preprocess(triplets, norm=norm), dtype=np.float32)


def n_candidates(triplets: Any) -> int:
    """Number of candidates of a triplet Dataset or (n, 63, 63, 3) array; else AstridInputError."""
    if hasattr(triplets, "data_vars"):
        if "triplets" not in triplets.data_vars:
            raise AstridInputError("triplets: the Dataset has no 'triplets' variable")
        return int(triplets["triplets"].shape[0])
    shape = getattr(triplets, "shape", None)
    if shape is None or len(shape) != 4:
        raise AstridInputError(
            f"triplets: expected a triplet Dataset or an array of shape (n, 63, 63, 3), "
            f"got {type(triplets).__name__} of shape {shape}"
        )
    return int(shape[0])


def take_candidates(triplets: Any, index) -> Any:
    """Rows ``index`` (a slice or integer array) of a Dataset, DataArray or array."""
    if hasattr(triplets, "data_vars"):
        return triplets.isel(candidate=index)
    if hasattr(triplets, "dims"):
        return triplets.isel({triplets.dims[0]: index})
    return np.asarray(triplets[index])


# --------------------------------------------------------------------------- #
# conversion
# --------------------------------------------------------------------------- #


def convert_keras(
    model,
    quantize: str | None = None,
    batch_size: int | None = 1,
    representative: np.ndarray | None = None,
    io_dtype: str = "int8",
) -> bytes:
    """Convert a Keras model to TFLite flatbuffer bytes (no files written).

    Parameters
    ----------
    model : keras.Model
        Single-input model.
    quantize : {"int8", "float16", None}
        See :func:`to_tflite`.
    batch_size : int or None
        Static batch size, or None for a dynamic batch.
    representative : numpy.ndarray, float32, shape (m, ...), optional
        Preprocessed calibration inputs (required for int8).
    io_dtype : {"int8", "uint8"}
        Input/output type of an int8 model.

    Returns
    -------
    bytes
    """
    tf = require("tensorflow", "Converting a Keras model to TFLite")
    shape = _input_shape(model)

    module = tf.Module()
    # Owning the variables lets the converter freeze them into constants.
    module.model_variables = [getattr(v, "value", v) for v in model.variables]
    module.serve = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([batch_size, *shape], tf.float32, name="triplets")],
        autograph=False,
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        step = batch_size or 1
        if representative is None or len(representative) < step:
            raise AstridInputError(
                f"representative: int8 quantisation needs at least {step} calibration triplet(s) "
                f"(one batch of batch_size={batch_size})"
            )

        def calibration() -> Iterator[list[np.ndarray]]:
            for start in range(0, len(representative) - step + 1, step):
                yield [representative[start : start + step]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = calibration
        dtype = {"int8": tf.int8, "uint8": tf.uint8}[io_dtype]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    return bytes(converter.convert())


# --------------------------------------------------------------------------- #
# running
# --------------------------------------------------------------------------- #


def default_num_threads() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _interpreter_class(name: str | None):
    """(Interpreter class, backend name) for ``name`` or the first available."""
    candidates = {
        "litert": ("ai_edge_litert.interpreter", "Interpreter"),
        "tflite_runtime": ("tflite_runtime.interpreter", "Interpreter"),
        "tensorflow": ("tensorflow.lite", "Interpreter"),
    }
    if name is not None and name not in candidates:
        raise AstridInputError(
            f"interpreter={name!r}: expected one of {sorted(candidates)} or None (first available)"
        )
    order = [name] if name is not None else list(candidates)
    errors = []
    for key in order:
        module_name, attr = candidates[key]
        try:
            module = require(module_name, "Running a TFLite model")
        except ImportError as exc:
            errors.append(str(exc))
            continue
        return getattr(module, attr), key
    raise ImportError(
        "Running a TFLite model needs ai-edge-litert (pip install 'astrid[ml]'), tflite-runtime "
        "or tensorflow: " + "; ".join(errors)
    )


class TFLiteRunner:
    """A TFLite model ready to score preprocessed triplets.

    Quantises float32 input and dequantises the output when the model has
    int8/uint8 ends, resizes a dynamic batch dimension to the batch it is
    given, and loops over a static batch (e.g. the Edge TPU's batch of 1).

    Parameters
    ----------
    model : path or bytes
        A ``.tflite`` file or its content.
    num_threads : int, optional
        Interpreter threads (default: the CPU cores of this process).
    interpreter : {"litert", "tflite_runtime", "tensorflow"}, optional
        Which interpreter package to use (default: the first importable).
        LiteRT applies its XNNPACK delegate to float models by default.
    name : str, optional
        Name used in error messages when ``model`` is bytes.
    invoke_batch : int, optional
        Largest batch given to one ``invoke`` of a dynamic-batch model
        (default :data:`INVOKE_BATCH`). Small invocations keep each
        layer's activations small (lower peak memory) without costing speed;
        ``benchmarks/bench_score.py`` measures both.

    Attributes
    ----------
    input, output : TensorInfo
        The model's ends, with their quantisation.
    sidecar : dict or None
        The ``.tflite.json`` sidecar of a model file, when present.
    norm : str or None
        The normalisation recorded in the sidecar.

    Raises
    ------
    AstridFileError
        Missing, corrupt or unloadable model.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        num_threads: int | None = None,
        interpreter: str | None = None,
        name: str | None = None,
        invoke_batch: int | None = None,
    ):
        self.sidecar = None
        if isinstance(model, (bytes, bytearray)):
            self.name = name or "TFLite model (in memory)"
            content, kwargs = bytes(model), {"model_content": bytes(model)}
        else:
            path = Path(model)
            if path.is_dir():
                raise AstridFileError(f"{path}: is a folder, not a TFLite model file")
            if not path.is_file():
                raise AstridFileError(f"{path}: no such TFLite model file")
            self.name = str(path)
            content, kwargs = path.read_bytes(), {"model_path": str(path)}
            self.sidecar = read_sidecar(path)
        self.norm = (self.sidecar or {}).get("norm")
        self.invoke_batch = int(invoke_batch or INVOKE_BATCH)
        if self.invoke_batch < 1:
            raise AstridInputError(f"invoke_batch={invoke_batch!r}: expected a positive integer")
        # Parse first: a corrupt flatbuffer can crash some interpreters outright.
        inputs, outputs = read_io_details(content, self.name)
        if len(inputs) != 1 or len(outputs) != 1:
            raise AstridInputError(
                f"{self.name}: expected one input and one output tensor, got "
                f"{len(inputs)} and {len(outputs)}"
            )
        self.num_threads = int(num_threads or default_num_threads())
        cls, self.backend = _interpreter_class(interpreter)
        try:
            self.interpreter = cls(num_threads=self.num_threads, **kwargs)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise AstridFileError(
                f"{self.name}: the TFLite interpreter cannot load it ({exc})"
            ) from exc
        self.input = inputs[0]
        self.output = outputs[0]
        self._in_index = self.interpreter.get_input_details()[0]["index"]
        self._out_index = self.interpreter.get_output_details()[0]["index"]
        self.dynamic_batch = self.input.dynamic_batch
        self._batch = int(self.interpreter.get_input_details()[0]["shape"][0])
        self.sample_shape = tuple(self.input.shape[1:])

    @property
    def static_batch(self) -> int | None:
        """The fixed batch size of the model, or None when it is dynamic."""
        return None if self.dynamic_batch else self._batch

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self.input.dtype)
        if dtype.kind == "f":
            return x.astype(dtype, copy=False)
        info = np.iinfo(dtype)
        q = np.rint(x / self.input.scale + self.input.zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.output.quantized and np.dtype(self.output.dtype).kind in "iu":
            return ((y.astype(np.float32) - self.output.zero_point) * self.output.scale).astype(
                np.float32
            )
        return y.astype(np.float32, copy=False)

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if self.dynamic_batch and x.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self._in_index, [x.shape[0], *self.sample_shape])
            self.interpreter.allocate_tensors()
            self._batch = x.shape[0]
        self.interpreter.set_tensor(self._in_index, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out_index)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Scores of preprocessed triplets.

        Parameters
        ----------
        x : numpy.ndarray, float32, shape (n, 63, 63, 3)

        Returns
        -------
        numpy.ndarray, float32, shape (n,)
        """
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.sample_shape:
            raise AstridInputError(
                f"triplets: preprocessed shape {x.shape[1:]} does not match the input "
                f"{self.sample_shape} of {self.name}"
            )
        n = x.shape[0]
        if n == 0:
            return np.zeros(0, np.float32)
        q = self._quantize(x)
        if self.dynamic_batch:
            step = self.invoke_batch
            out = np.concatenate(
                [
                    self._invoke(q[start : start + step]).reshape(min(step, n - start), -1)
                    for start in range(0, n, step)
                ]
            )
        else:
            b = self._batch
            pieces = []
            for start in range(0, n, b):
                chunk = q[start : start + b]
                if chunk.shape[0] < b:  # pad the last group of a static batch > 1
                    pad = np.zeros((b - chunk.shape[0], *chunk.shape[1:]), chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                pieces.append(self._invoke(chunk)[: min(b, n - start)].copy())
            out = np.concatenate(pieces)
        out = self._dequantize(np.asarray(out).reshape(n, -1))
        if out.shape[1] != 1:
            raise AstridInputError(
                f"{self.name}: expected one score per triplet, the output has {out.shape[1]}"
            )
        return out[:, 0]


# --------------------------------------------------------------------------- #
# sidecar
# --------------------------------------------------------------------------- #


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.tflite`` → ``model.tflite.json``.

    Parameters
    ----------
    path : path-like
        The ``.tflite`` file (it need not exist).

    Returns
    -------
    pathlib.Path
        The sidecar path: ``.json`` appended to the file name.
    """
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The sidecar JSON of a ``.tflite`` file, or None when there is none.

    Parameters
    ----------
    path : path-like
        The ``.tflite`` file; its sidecar is :func:`sidecar_path` of it.

    Returns
    -------
    dict or None
        The sidecar's content, or None when the sidecar does not exist.

    Raises
    ------
    AstridFileError
        The sidecar exists but is not valid JSON of the expected format.
    """
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise AstridFileError(f"{side}: unreadable model sidecar ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise AstridFileError(
            f"{side}: not an AstrID model sidecar (format={meta.get('format') if isinstance(meta, dict) else None!r}, "
            f"expected {SIDECAR_FORMAT!r})"
        )
    return meta


# --------------------------------------------------------------------------- #
# to_tflite
# --------------------------------------------------------------------------- #


@dataclass
class ExportReport:
    """Result of :func:`to_tflite`.

    Attributes
    ----------
    path : str
        The ``.tflite`` file.
    sidecar : str
        Its ``.tflite.json`` sidecar.
    quantize : str or None
        ``"int8"``, ``"float16"`` or None (float32).
    batch_size : int or None
        Static batch size, or None for a dynamic batch.
    norm : str
        Preprocessing the model expects (``"rowwise"``, ``"l2"`` or ``"none"``).
    input : TensorInfo
        Shape, dtype and quantisation (``real = scale * (q - zero_point)``) of
        the model input.
    output : TensorInfo
        The same of the model output.
    size_bytes : int
        Size of the ``.tflite`` file.
    num_calibration : int
        Triplets used to calibrate int8 ranges (0 otherwise).
    source_sha256 : str
        :func:`model_sha256` of the Keras model that was converted.
    calibration_max_abs_diff : float or None
        Largest |TFLite − Keras| score on the calibration triplets (a
        sanity check of the conversion; parity on held-out data is
        :func:`astrid.score.parity`'s job). The export is refused when the
        int8 model's scores on these and on synthetic triplets are all one
        value while Keras's vary.
    edgetpu : EdgeTPUReport or None
        Static Edge TPU check, for int8 exports.
    astrid_version : str
        AstrID version that exported the model.
    tensorflow_version : str
        TensorFlow version that converted it.
    io_dtype : str
        Element type of the model input (``"float32"``, ``"int8"`` or
        ``"uint8"``).
    created_utc : str
        Time of the export, ISO 8601 in UTC, to the second.
    """

    path: str
    sidecar: str
    quantize: str | None
    batch_size: int | None
    norm: str
    input: TensorInfo
    output: TensorInfo
    size_bytes: int
    num_calibration: int = 0
    source_sha256: str = ""
    calibration_max_abs_diff: float | None = None
    edgetpu: EdgeTPUReport | None = None
    astrid_version: str = __version__
    tensorflow_version: str = ""
    io_dtype: str = "float32"
    created_utc: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (the Edge TPU report nested as a dict)."""
        out = asdict(self)
        out["edgetpu"] = self.edgetpu.to_dict() if self.edgetpu is not None else None
        return out

    def __str__(self) -> str:
        kind = self.quantize or "float32"
        batch = "dynamic" if self.batch_size is None else str(self.batch_size)
        lines = [
            f"TFLite export {self.path} ({kind}, batch {batch}, {self.size_bytes / 1024:.0f} KiB, norm={self.norm!r})",
        ]
        for label, t in (("input", self.input), ("output", self.output)):
            quant = f" scale={t.scale:.6g} zero_point={t.zero_point}" if t.quantized else ""
            lines.append(f"  {label}: {t.dtype} {t.shape_signature}{quant}")
        if self.num_calibration:
            lines.append(f"  calibrated on {self.num_calibration} triplets")
        if self.calibration_max_abs_diff is not None:
            lines.append(
                f"  max |TFLite - Keras| on those triplets: {self.calibration_max_abs_diff:.3g}"
            )
        if self.edgetpu is not None:
            verdict = "passes" if self.edgetpu.passed else "fails"
            lines.append(
                f"  Edge TPU static check {verdict}"
                + ("" if self.edgetpu.passed else ": " + "; ".join(self.edgetpu.problems[:3]))
            )
        lines.append(f"  sidecar: {self.sidecar}")
        return "\n".join(lines)


def _nonfinite_kind(raw: np.ndarray) -> str:
    if np.all(np.isnan(raw)):
        return "NaN"
    if np.all(np.isinf(raw)):
        return "±inf"
    return "NaN/inf"


def _calibration_inputs(
    representative: Any, norm: str, num: int, shape: tuple[int, ...], seed: int = 0
) -> np.ndarray:
    """Preprocessed calibration triplets, refused when int8 ranges calibrated on them would be degenerate."""
    from ..braai import no_data

    n = n_candidates(representative)
    if n == 0:
        raise AstridInputError("representative: no triplets to calibrate on")
    if n > num:
        index = np.sort(np.random.default_rng(seed).choice(n, size=num, replace=False))
        representative = take_candidates(representative, index)
    m = min(n, num)
    if hasattr(representative, "load"):
        representative = representative.load()
    if norm != "none":
        raw = (
            representative
            if hasattr(representative, "data_vars")
            else np.asarray(getattr(representative, "values", representative))
        )
        empty, _ = no_data(raw)
        if empty.all():
            values = raw["triplets"].values if hasattr(raw, "data_vars") else raw
            raise AstridInputError(
                f"representative: all {m} representative triplets have no usable data (their pixels are "
                f"{_nonfinite_kind(np.asarray(values, dtype=np.float64)[empty])}), so they are all blank "
                "after preprocessing; int8 ranges calibrated on them give every triplet the same score. "
                "Calibrate on real triplets"
            )
        if empty.any():
            warnings.warn(
                f"representative: {int(empty.sum())} of {m} representative triplets have no usable data "
                "(all NaN/inf, or a channel that should hold data is); calibrating on the other "
                f"{int((~empty).sum())}",
                AstridWarning,
                stacklevel=3,
            )
            representative = take_candidates(representative, np.flatnonzero(~empty))
    x = preprocess(representative, norm)
    if not np.all(np.isfinite(x)):
        raise AstridInputError("representative: preprocessed triplets contain NaN/inf")
    if x.shape[1:] != shape:
        raise AstridInputError(
            f"representative: triplets of shape {x.shape[1:]} after preprocessing, but the model's input "
            f"is {shape}"
        )
    flat = x.reshape(len(x), -1)
    if np.all(np.ptp(flat, axis=1) == 0):
        what = "all zero" if not np.any(flat) else "each one constant value"
        raise AstridInputError(
            f"representative: all {len(x)} representative triplets are {what} after preprocessing "
            f"(norm={norm!r}; blank or constant stamps), so they carry no calibration range; "
            "int8 ranges calibrated on them give every triplet the same score. Calibrate on real triplets"
        )
    distinct = len(np.unique(flat, axis=0))
    if distinct < MIN_CALIBRATION:
        detail = f"only {distinct} distinct of {len(x)}" if distinct < len(x) else f"only {len(x)}"
        raise AstridInputError(
            f"representative: {detail} usable representative triplet(s) after preprocessing; int8 "
            f"calibration needs at least {MIN_CALIBRATION} different real triplets (200 is the default)"
        )
    return x


def _probe_inputs(calibration: np.ndarray, norm: str, n: int = 32, seed: int = 1) -> np.ndarray:
    """Varied inputs for the constant-output check: the calibration set and synthetic triplets."""
    rng = np.random.default_rng(seed)
    shape = calibration.shape[1:]
    if shape == (63, 63, 3):
        raw = rng.normal(size=(n, *shape)).astype(np.float32)
        yy, xx = np.mgrid[:63, :63]
        blob = np.exp(-((yy - 31) ** 2 + (xx - 31) ** 2) / (2 * 1.5**2))
        amplitude = rng.uniform(0, 30, size=n)
        raw[..., 0] += amplitude[:, None, None] * blob
        raw[..., 2] += amplitude[:, None, None] * blob * rng.choice([-1, 1], size=n)[:, None, None]
        synthetic = preprocess(raw, "rowwise" if norm == "none" else norm)
    else:
        spread = float(calibration.std()) or 1.0
        synthetic = rng.normal(float(calibration.mean()), spread, size=(n, *shape)).astype(
            np.float32
        )
    return np.concatenate([calibration, synthetic])


def _check_not_constant(
    tflite_scores: np.ndarray,
    keras_scores: np.ndarray,
    step: float,
    name: str,
    num_calibration: int,
) -> None:
    """Refuse an int8 model that gives one score to inputs the Keras model tells apart."""
    keras_spread = float(np.ptp(keras_scores))
    if np.ptp(tflite_scores) == 0 and keras_spread > max(4 * step, CONSTANT_OUTPUT_SPREAD):
        raise AstridInputError(
            f"{name}: the int8 model gives all {len(tflite_scores)} varied test inputs the same score "
            f"({float(tflite_scores[0]):.4g}), where the Keras model's scores span "
            f"{float(keras_scores.min()):.4g}..{float(keras_scores.max()):.4g}: the int8 ranges calibrated "
            f"on the {num_calibration} representative triplets do not cover real inputs. "
            "Calibrate on real triplets"
        )


def _checked_options(
    path, quantize, batch_size, norm, num_calibration, io_dtype
) -> tuple[str | None, Path]:
    """(quantize, ``"float32"`` as None; the output path) after checking to_tflite's options."""
    if quantize == "float32":
        quantize = None
    if quantize not in _QUANTIZE:
        raise AstridInputError(f"quantize={quantize!r}: expected 'int8', 'float16' or None")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise AstridInputError(f"batch_size={batch_size!r}: expected a positive integer or None")
    if io_dtype not in ("int8", "uint8"):
        raise AstridInputError(f"io_dtype={io_dtype!r}: expected 'int8' or 'uint8'")
    if norm is not None:
        _check_norm(norm)
    if int(num_calibration) < 1:
        raise AstridInputError(f"num_calibration={num_calibration!r}: expected at least 1")
    path = Path(path)
    if path.suffix.lower() != ".tflite":
        raise AstridInputError(f"{path}: the output file must end in .tflite")
    return quantize, path


def _int8_calibration(keras_model, representative, norm: str, num_calibration: int) -> np.ndarray:
    """The preprocessed triplets int8 quantisation calibrates on (at least MIN_CALIBRATION)."""
    if representative is None:
        raise AstridInputError(
            "representative: int8 quantisation needs real triplets to calibrate on "
            "(a triplet Dataset or an (n, 63, 63, 3) array)"
        )
    if int(num_calibration) < MIN_CALIBRATION:
        raise AstridInputError(
            f"num_calibration={num_calibration!r}: int8 calibration needs at least {MIN_CALIBRATION} "
            "triplets (default 200)"
        )
    return _calibration_inputs(
        representative, norm, int(num_calibration), _input_shape(keras_model)
    )


def _compare_with_keras(
    content: bytes, keras_model, calibration: np.ndarray, norm: str, name: str
) -> float:
    """Largest |TFLite - Keras| score on the calibration triplets; refuses a constant int8 model."""
    runner = TFLiteRunner(content, name=name)
    probes = _probe_inputs(calibration, norm)
    tflite_scores = runner(probes)
    keras_scores = np.asarray(keras_model(probes, training=False), dtype=np.float32).reshape(
        len(probes), -1
    )[:, 0]
    n_cal = len(calibration)
    max_diff = float(np.max(np.abs(tflite_scores[:n_cal] - keras_scores[:n_cal])))
    step = runner.output.scale if runner.output.quantized else 0.0
    _check_not_constant(tflite_scores, keras_scores, float(step), name, n_cal)
    return max_diff


def _sidecar(report: ExportReport, source: str, score_calibration: dict | None) -> dict:
    """The ``.tflite.json`` sidecar: how to feed the model and where it came from."""
    return {
        "format": SIDECAR_FORMAT,
        "norm": report.norm,
        "quantize": report.quantize,
        "batch_size": report.batch_size,
        "input": asdict(report.input),
        "output": asdict(report.output),
        "source_model": {"name": source, "weights_sha256": report.source_sha256},
        "calibration": {
            "num_triplets": report.num_calibration,
            "max_abs_diff_vs_keras": report.calibration_max_abs_diff,
        },
        # the model's score calibration (astrid.braai.fit_calibration), applied by astrid.score.score
        "score_calibration": score_calibration,
        "edgetpu_static_check": None if report.edgetpu is None else report.edgetpu.passed,
        "astrid_version": __version__,
        "tensorflow_version": report.tensorflow_version,
        "created_utc": report.created_utc,
    }


def to_tflite(
    model: Any,
    path: str | os.PathLike,
    representative: Any = None,
    quantize: str | None = "int8",
    batch_size: int | None = 1,
    norm: str | None = None,
    num_calibration: int = 200,
    io_dtype: str = "int8",
) -> ExportReport:
    """Export a Keras real/bogus model to a TFLite file (int8 for the Edge TPU).

    Parameters
    ----------
    model : keras.Model, str or path-like
        The model, or a ``.keras`` / braai ``.h5`` file.
    path : str or path-like
        Output ``.tflite`` file; the sidecar goes to ``<path>.json``. Both
        are written atomically.
    representative : xarray.Dataset or numpy.ndarray, optional
        Real triplets to calibrate int8 ranges on: a triplet Dataset (e.g.
        from :func:`astrid.alerts.read_ztf`) or raw stamps (n, 63, 63, 3).
        They are preprocessed with ``norm``, as in training. Required for
        ``quantize="int8"``; ignored otherwise.
    quantize : {"int8", "float16", None}, optional
        ``"int8"`` (default): full-integer quantisation for the Edge TPU.
        ``"float16"``: float16 weights. None: float32.
    batch_size : int or None, optional
        Static batch size (default 1, which the Edge TPU requires). None
        gives a dynamic batch, the fast CPU path; such a model does not
        pass the Edge TPU checks.
    norm : {"rowwise", "l2", "none"}, optional
        Preprocessing of the model (``"rowwise"`` for braai up to d6_m7,
        ``"l2"`` for later braai models); recorded in the sidecar so that
        :func:`astrid.score.score` applies it. Default: the model's own
        ``astrid_norm`` (set by :func:`astrid.braai.load_braai`), else
        ``"rowwise"``. ``"none"``: ``representative`` is already
        preprocessed.
    num_calibration : int, optional
        Number of triplets (drawn at random with a fixed seed when more are
        given) used for calibration. Default 200.
    io_dtype : {"int8", "uint8"}, optional
        Input and output type of an int8 model (uint8 for old Edge TPU
        tool chains).

    Returns
    -------
    ExportReport
        Paths, input/output quantisation, calibration check and, for int8,
        the :func:`~astrid.export.edgetpu_report`.

    Raises
    ------
    AstridInputError
        Bad parameters, no representative triplets for int8, or a model
        that is not single-input. For int8, degenerate calibration data:
        representative triplets that are all NaN/inf, all blank or constant
        after preprocessing, fewer than :data:`MIN_CALIBRATION` different
        usable ones, or of the wrong shape for the model; and an int8
        model that gives one score to every input of a varied test set
        (the calibration triplets plus synthetic ones) that the Keras
        model scores differently.
    AstridFileError
        A model file that cannot be read.

    Warns
    -----
    AstridWarning
        Some representative triplets have no usable data and are left out
        of the calibration (the count is in the message).

    Examples
    --------
    >>> from astrid import alerts, braai, export            # doctest: +SKIP
    >>> model = braai.load_braai("d6_m7.h5")                 # doctest: +SKIP
    >>> ds = alerts.read_ztf("ztf_alerts/")                  # doctest: +SKIP
    >>> report = export.to_tflite(model, "d6_m7_int8.tflite", representative=ds)  # doctest: +SKIP
    >>> print(report.edgetpu)                                # doctest: +SKIP
    """
    quantize, path = _checked_options(path, quantize, batch_size, norm, num_calibration, io_dtype)
    keras_model = load_keras_model(model)
    norm = resolve_norm(norm, getattr(keras_model, "astrid_norm", None), str(path))
    calibration = None
    if quantize == "int8":
        calibration = _int8_calibration(keras_model, representative, norm, num_calibration)

    tf = require("tensorflow", "Converting a Keras model to TFLite")
    content = convert_keras(keras_model, quantize, batch_size, calibration, io_dtype)
    inputs, outputs = read_io_details(content, str(path))
    max_diff = None
    if calibration is not None:
        max_diff = _compare_with_keras(content, keras_model, calibration, norm, str(path))

    named = isinstance(model, (str, os.PathLike))
    source = str(model) if named else getattr(keras_model, "name", "")
    sha = model_sha256(keras_model)
    score_calibration = getattr(keras_model, "astrid_calibration", None)
    atomic_write(path, lambda fh: fh.write(content))
    edgetpu = edgetpu_report(path) if quantize == "int8" else None

    report = ExportReport(
        path=str(path),
        sidecar=str(sidecar_path(path)),
        quantize=quantize,
        batch_size=None if batch_size is None else int(batch_size),
        norm=norm,
        input=inputs[0],
        output=outputs[0],
        size_bytes=len(content),
        num_calibration=0 if calibration is None else len(calibration),
        source_sha256=sha,
        calibration_max_abs_diff=max_diff,
        edgetpu=edgetpu,
        tensorflow_version=tf.__version__,
        io_dtype=inputs[0].dtype,
    )
    text = json.dumps(_sidecar(report, source, score_calibration), indent=2) + "\n"
    atomic_write(report.sidecar, lambda fh: fh.write(text), mode="w")
    return report
