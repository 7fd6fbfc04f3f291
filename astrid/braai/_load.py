"""Load ZTF's published braai models (Keras 2 HDF5) into Keras 3; score triplets.

ZTF published braai as Keras 2.2.4 files: a full model (``d6_m7.h5``: the
architecture as JSON in the ``model_config`` attribute, weights under
``model_weights/<layer>/<layer>/kernel:0``), weights only
(``d6_m7.weights.h5``: the same groups at the top level) and the architecture
alone (``d6_m7.architecture.json``). Keras 3 cannot read these directly, so
:func:`load_braai` rebuilds the network from the Keras 2 JSON with Keras 3
layers of the same names and copies every weight array in with h5py,
checking each shape. Nothing is unpickled: HDF5 datasets and JSON only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import AstridFileError, AstridInputError
from ._models import keras_module, vgg6
from ._preprocess import NORMS, mean_over_symmetries, preprocess

__all__ = ["load_braai", "predict", "DEFAULT_NORM", "norm_for_model"]

#: Normalisation assumed when neither the caller nor the model says otherwise.
DEFAULT_NORM = "rowwise"

# Keras 2 layer classes that braai's Sequential models use, and the config
# keys that carry over unchanged to Keras 3.
_LAYER_KEYS = {
    "Conv2D": (
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "dilation_rate",
        "activation",
        "use_bias",
    ),
    "MaxPooling2D": ("pool_size", "strides", "padding"),
    "AveragePooling2D": ("pool_size", "strides", "padding"),
    "Dropout": ("rate",),
    "Flatten": (),
    "Dense": ("units", "activation", "use_bias"),
    "Activation": ("activation",),
}


def norm_for_model(name: str) -> str:
    """The preprocessing a braai model expects, from its name.

    ZTF normalised stamps row by row for models up to ``d6_m7`` and by the
    whole-stamp L2 norm for later ones (``braai_d6_m9``, ...). Names without
    a ``d<N>_m<M>`` version get :data:`DEFAULT_NORM`.

    Parameters
    ----------
    name : str
        Model or file name, e.g. ``"d6_m7"`` or ``"braai_d6_m9.h5"``.

    Returns
    -------
    str
        ``"rowwise"`` or ``"l2"``.
    """
    match = re.search(r"d(\d+)_m(\d+)", str(name))
    if match is None:
        return DEFAULT_NORM
    version = (int(match.group(1)), int(match.group(2)))
    return "rowwise" if version <= (6, 7) else "l2"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_json(path: Path) -> dict:
    if path.is_dir():
        raise AstridFileError(f"{path}: is a folder, not an architecture JSON file")
    if not path.exists():
        raise AstridFileError(f"{path}: architecture file does not exist")
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        raise AstridFileError(f"{path}: cannot read the architecture file ({exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AstridInputError(f"{path}: not a Keras architecture JSON file ({exc})") from exc
    if not isinstance(config, dict):
        raise AstridInputError(
            f"{path}: not a Keras architecture JSON file (top level is not an object)"
        )
    return config


def _sibling_architecture(path: Path) -> Path | None:
    stem = path.name
    for suffix in (".weights.h5", ".h5", ".hdf5"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    candidate = path.with_name(f"{stem}.architecture.json")
    return candidate if candidate.exists() else None


def _model_from_keras2_config(config: dict, source: str):
    """A Keras 3 Sequential model equivalent to a Keras 2 Sequential JSON config."""
    keras = keras_module()
    if config.get("class_name") != "Sequential":
        raise AstridInputError(
            f"{source}: architecture is a {config.get('class_name')!r} model; "
            "only Sequential braai models are supported"
        )
    body = config.get("config", {})
    layer_configs = body.get("layers") if isinstance(body, dict) else body
    if not layer_configs:
        raise AstridInputError(f"{source}: architecture has no layers")
    first = layer_configs[0].get("config", {})
    input_shape = first.get("batch_input_shape") or first.get("batch_shape")
    if not input_shape or len(input_shape) != 4:
        raise AstridInputError(
            f"{source}: first layer has no (batch, height, width, channels) input shape"
        )
    layers = [keras.Input(shape=tuple(input_shape[1:]), name="triplet")]
    for entry in layer_configs:
        cls = entry.get("class_name")
        cfg = entry.get("config", {})
        if cls == "InputLayer":
            continue
        if cls not in _LAYER_KEYS:
            raise AstridInputError(
                f"{source}: layer {cfg.get('name')!r} is a {cls}, which load_braai does not translate "
                f"(supported: {sorted(_LAYER_KEYS)})"
            )
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise AstridInputError(f"{source}: layer {cfg.get('name')!r} is not channels_last")
        kwargs = {key: cfg[key] for key in _LAYER_KEYS[cls] if key in cfg}
        for key in ("kernel_size", "strides", "dilation_rate", "pool_size"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        layers.append(getattr(keras.layers, cls)(name=cfg.get("name"), **kwargs))
    return keras.Sequential(layers, name=body.get("name") if isinstance(body, dict) else None)


def _weights_root(h5file, path: Path):
    if "model_weights" in h5file:
        return h5file["model_weights"]
    if "layer_names" in h5file.attrs:
        return h5file
    if "layers" in h5file and "vars" in h5file:
        raise AstridInputError(
            f"{path}: is a Keras 3 weights file; build the model and use model.load_weights()"
        )
    raise AstridInputError(
        f"{path}: not a Keras 2 HDF5 model or weights file (no 'model_weights' group and no "
        "'layer_names' attribute)"
    )


def _copy_weights(model, root, path: Path) -> None:
    file_layers = [_text(n) for n in root.attrs.get("layer_names", [])]
    weighted_in_file = {
        name
        for name in file_layers
        if name in root and len(root[name].attrs.get("weight_names", [])) > 0
    }
    weighted_in_model = {layer.name for layer in model.layers if layer.weights}
    missing = sorted(weighted_in_model - weighted_in_file)
    extra = sorted(weighted_in_file - weighted_in_model)
    if missing or extra:
        raise AstridInputError(
            f"{path}: weights do not match the architecture "
            f"(layers without weights in the file: {missing}; weights for unknown layers: {extra})"
        )
    for layer in model.layers:
        if not layer.weights:
            continue
        group = root[layer.name]
        names = [_text(n) for n in group.attrs["weight_names"]]
        try:
            stored = {
                name.split("/")[-1].split(":")[0]: np.asarray(group[name], dtype=np.float32)
                for name in names
            }
        except KeyError as exc:
            raise AstridInputError(
                f"{path}: layer {layer.name!r} lists a weight that is missing ({exc})"
            ) from exc
        wanted = [w.name.split("/")[-1] for w in layer.weights]
        # Match weights by name (kernel, bias), not by their order in the file.
        if sorted(stored) == sorted(wanted):
            arrays = [stored[name] for name in wanted]
        else:
            arrays = list(stored.values())
        expected = [tuple(w.shape) for w in layer.weights]
        found = [a.shape for a in arrays]
        if found != expected:
            raise AstridInputError(
                f"{path}: layer {layer.name!r} has weights of shapes {found} in the file, "
                f"but the architecture needs {expected}"
            )
        layer.set_weights(arrays)


def load_braai(
    weights_h5: str | os.PathLike,
    architecture_json: str | os.PathLike | None = None,
    *,
    norm: str | None = None,
):
    """Load a published braai model (Keras 2 HDF5) into a Keras 3 model.

    Parameters
    ----------
    weights_h5 : path-like
        A Keras 2 full-model file (``d6_m7.h5``) or weights file
        (``d6_m7.weights.h5``).
    architecture_json : path-like, optional
        Keras 2 architecture JSON (``d6_m7.architecture.json``). By default
        the architecture stored in a full-model file, else a
        ``<name>.architecture.json`` beside the weights, else braai's
        :func:`~astrid.braai.vgg6`.
    norm : {"rowwise", "l2"}, optional
        Preprocessing the model expects; by default from the file name
        (:func:`norm_for_model`). Stored as ``model.astrid_norm`` and used
        by :func:`predict`.

    Returns
    -------
    keras.Sequential
        The network with the published weights, ready for inference.

    Raises
    ------
    AstridFileError
        A file does not exist, is a folder, is not HDF5, or is a truncated
        or damaged HDF5 file (h5py's own ``OSError`` is not let through).
    AstridInputError
        The file is not a Keras 2 model, its architecture uses layers that
        cannot be translated, or any weight array's shape (or the set of
        layers) does not match the architecture.
    """
    h5py = require("h5py", "loading braai HDF5 models")
    path = Path(weights_h5)
    if norm is not None and norm not in NORMS:
        raise AstridInputError(f"norm={norm!r} is not one of {NORMS}")
    if path.is_dir():
        raise AstridFileError(f"{path}: is a folder, not an HDF5 model file")
    if not path.exists():
        raise AstridFileError(f"{path}: file does not exist")
    if not h5py.is_hdf5(path):
        raise AstridFileError(f"{path}: not an HDF5 file ({_describe_start(path)})")
    try:
        return _load_h5(h5py, path, architecture_json, norm)
    except OSError as exc:
        if isinstance(exc, AstridFileError):
            raise
        # h5py reports a cut-off file (a partial download, a full disk) as a bare OSError.
        raise AstridFileError(
            f"{path}: truncated or damaged HDF5 file ({path.stat().st_size} bytes; h5py: {exc})"
        ) from exc


def _describe_start(path: Path) -> str:
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    head = path.read_bytes()[:4]
    if head[:2] == b"PK":
        return f"{size} bytes, a zip archive: a Keras 3 .keras file? load it with keras.saving.load_model"
    return f"{size} bytes, starting {head!r}"


def _load_h5(h5py, path: Path, architecture_json, norm: str | None):
    with h5py.File(path, "r") as h5file:
        root = _weights_root(h5file, path)
        if architecture_json is not None:
            source = str(architecture_json)
            config = _read_json(Path(architecture_json))
        elif "model_config" in h5file.attrs:
            source = f"{path} (model_config)"
            try:
                config = json.loads(_text(h5file.attrs["model_config"]))
            except json.JSONDecodeError as exc:
                raise AstridInputError(
                    f"{path}: model_config attribute is not JSON ({exc})"
                ) from exc
        elif (sibling := _sibling_architecture(path)) is not None:
            source = str(sibling)
            config = _read_json(sibling)
        else:
            source, config = None, None
        model = vgg6() if config is None else _model_from_keras2_config(config, source)
        _copy_weights(model, root, path)
    model.astrid_norm = norm or norm_for_model(path.name)
    return model


def predict(
    model,
    triplets,
    *,
    norm: str | None = None,
    batch_size: int = 256,
    symmetries: bool = False,
) -> np.ndarray:
    """Real-bogus scores of triplets.

    Parameters
    ----------
    model : keras.Model
        A braai network (:func:`load_braai`, :func:`~astrid.braai.vgg6`, ...).
    triplets : xarray.Dataset or array-like
        Raw triplets, as :func:`~astrid.braai.preprocess` accepts them.
    norm : {"rowwise", "l2"}, optional
        Preprocessing; default ``model.astrid_norm`` (set by
        :func:`load_braai`), else :data:`DEFAULT_NORM`.
    batch_size : int, optional
        Triplets per forward pass.
    symmetries : bool, optional
        Average each triplet's score over its eight rotations and mirrors
        (the dihedral group that :func:`~astrid.braai.train` augments with,
        applied to the preprocessed stamps as there): a transient's
        orientation on the sky carries no information. Eight forward passes
        instead of one; default off (braai's single pass).

    Returns
    -------
    numpy.ndarray, shape (n,), float32
        Scores in [0, 1]; high means real.

    Notes
    -----
    This is braai's own computation: a candidate whose stamps hold no data
    (all NaN) gets the score of blank stamps, as in ZTF. :func:`astrid.score.score`
    gives such candidates NaN and warns.
    """
    if int(batch_size) < 1:
        raise AstridInputError(f"batch_size={batch_size!r} must be a positive integer")
    norm = norm or getattr(model, "astrid_norm", None) or DEFAULT_NORM
    x = preprocess(triplets, norm=norm)
    expected = tuple(model.input_shape[1:])
    if x.shape[1:] != expected:
        raise AstridInputError(
            f"triplets of shape {x.shape[1:]} do not fit the model input {expected}"
        )
    if x.shape[0] == 0:
        return np.empty(0, dtype=np.float32)
    if not symmetries:
        return _forward(model, x, int(batch_size))
    return mean_over_symmetries(lambda view: _forward(model, view, int(batch_size)), x)


def _forward(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    if x.shape[0] <= batch_size:
        # One small batch: calling the model eagerly skips the set-up of
        # Keras' compiled predict loop, which costs more than the batch.
        out = model(x, training=False)
    else:
        out = model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32).reshape(-1)
