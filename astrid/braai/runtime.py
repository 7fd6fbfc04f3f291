"""Keras training plumbing shared by the braai trainer and other Keras trainers (astrid.anomaly).

Internal: not part of :mod:`astrid.braai`'s ``__all__``.

- :class:`EpochTimer`: a Keras callback recording each epoch's wall time;
- :func:`augment_dihedral`: one random symmetry of the square per stamp;
- :func:`keras_module`, :func:`tensorflow`: Keras and TensorFlow, imported on first use;
- :func:`training_dataset`: the seeded, augmented ``tf.data`` pipeline of a training;
- :func:`save_model`, :func:`training_versions`: the ``.keras`` file and the
  library versions a model card records;
- :func:`enable_determinism` / :func:`disable_determinism`: TensorFlow's
  deterministic ops on for one training, and off again only when that
  training turned them on;
- :func:`resolve_precision`, :func:`training_twin`, :data:`PRECISIONS`: the
  arithmetic a training runs in, and a mixed-bfloat16 copy of a float32 network
  to train in it.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from .._optional import require
from ..io import atomic_write
from ._models import keras_module

__all__ = [
    "EpochTimer",
    "augment_dihedral",
    "enable_determinism",
    "disable_determinism",
    "keras_module",
    "tensorflow",
    "training_dataset",
    "training_versions",
    "save_model",
    "PRECISIONS",
    "resolve_precision",
    "training_twin",
]

#: What ``precision`` of a training may be: "auto" resolves to one of the other two.
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
#: CPU flags (``/proc/cpuinfo``) of the bfloat16 matrix units that make mixed bfloat16 pay.
_BFLOAT16_UNITS = ("amx_bf16",)


class EpochTimer:
    """Keras callback that records the wall time of each epoch.

    Calling ``EpochTimer()`` returns an instance of a ``keras.callbacks.Callback``
    subclass (Keras is imported only then); its ``seconds`` is the list of
    epoch durations, in seconds, in epoch order.
    """

    def __new__(cls):
        keras = keras_module()

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._start)

        return Timer()


def enable_determinism(tf) -> bool:
    """Turn on TensorFlow's deterministic ops.

    Parameters
    ----------
    tf : module
        The imported ``tensorflow``.

    Returns
    -------
    bool
        Whether this call turned them on (so the caller should turn them off
        again with :func:`disable_determinism`).
    """
    try:
        from tensorflow.python.framework import config as tf_config

        if tf_config.is_op_determinism_enabled():
            return False
    except (ImportError, AttributeError):  # private API moved: the switch cannot be undone then
        tf.config.experimental.enable_op_determinism()
        return False
    tf.config.experimental.enable_op_determinism()
    return True


def disable_determinism() -> None:
    """Turn TensorFlow's deterministic ops off (after :func:`enable_determinism` returned True)."""
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(precision: str) -> str:
    """The arithmetic a training runs in: ``"float32"`` or ``"mixed_bfloat16"``.

    ``"auto"`` is mixed bfloat16 on CPUs with bfloat16 matrix units (Intel AMX,
    CPU flag ``amx_bf16``), where ``benchmarks/bench_train.py`` measured VGG6
    training about 1.5 times as fast, and float32 elsewhere (where bfloat16 was
    not measured to pay).

    Parameters
    ----------
    precision : {"auto", "float32", "mixed_bfloat16"}
        The wish.

    Returns
    -------
    str
        ``"float32"`` or ``"mixed_bfloat16"``.
    """
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if _cpu_flags() & set(_BFLOAT16_UNITS) else "float32"


def training_twin(network, precision: str):
    """A copy of a float32 network that computes in ``precision`` (the network itself for float32).

    With ``"mixed_bfloat16"`` every layer but the last computes in bfloat16 and
    keeps float32 weights (Keras' mixed precision); the last layer stays
    float32 so the sigmoid and the loss are not rounded. Train the twin, then
    copy its weights back with ``network.set_weights(twin.get_weights())``:
    the network the user gets stays all float32, so prediction and TFLite
    export are unchanged.

    Parameters
    ----------
    network : keras.Model
        A float32 network (built, with weights).
    precision : {"float32", "mixed_bfloat16"}
        Resolved precision (:func:`resolve_precision`).

    Returns
    -------
    keras.Model
        ``network`` itself for ``"float32"``, else the mixed-precision twin
        holding a copy of its weights.
    """
    if precision == "float32":
        return network
    keras = keras_module()
    last = network.layers[-1].name

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name == last else precision
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(network, clone_function=clone)
    twin.set_weights(network.get_weights())
    return twin


def augment_dihedral(tf, x, seed_pair):
    """Apply a random dihedral transform (rot90 ∘ optional flip) per stamp, all channels together.

    Parameters
    ----------
    tf : module
        The imported ``tensorflow``.
    x : tf.Tensor, shape (n, y, x, channel)
        A batch of square stamps.
    seed_pair : tf.Tensor of int, shape (2,)
        Seed of the stateless draw of the eight transforms.

    Returns
    -------
    tf.Tensor, shape (n, y, x, channel)
    """
    n = tf.shape(x)[0]
    code = tf.random.stateless_uniform([n], seed=seed_pair, minval=0, maxval=8, dtype=tf.int32)
    flipped = tf.where((code >= 4)[:, None, None, None], tf.reverse(x, axis=[2]), x)
    rotations = tf.stack([tf.image.rot90(flipped, k) for k in range(4)], axis=0)
    return tf.gather_nd(rotations, tf.stack([code % 4, tf.range(n)], axis=1))


def tensorflow():
    """The ``tensorflow`` module, imported on first use (with its C++ logging quietened)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "training the braai classifier")


def training_dataset(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    *,
    batch_size: int,
    shuffle: bool,
    augment: bool,
    seed: int,
):
    """A tf.data pipeline of (stamps, labels[, weights]) batches from preprocessed arrays.

    Shuffling and batching act on indices; each batch is gathered from the
    array in one op, which is much cheaper than a per-element pipeline.
    Augmentation draws its random transforms from a seeded stream that
    differs each epoch but is the same for every run with the same seed.

    Parameters
    ----------
    x : numpy.ndarray of float32, shape (n, y, x, channel)
        Preprocessed stamps (:func:`astrid.braai.preprocess`).
    y : numpy.ndarray, shape (n,)
        Labels (1 real, 0 bogus), fed as float32 of shape (batch, 1).
    w : numpy.ndarray, shape (n,), or None
        Per-candidate loss weights, or None for (stamps, labels) batches.
    batch_size : int
        Candidates per batch.
    shuffle : bool
        Reshuffle the order each epoch (seeded).
    augment : bool
        Apply :func:`augment_dihedral` to each batch.
    seed : int
        Seed of the order and of the augmentation draws.

    Returns
    -------
    tf.data.Dataset
        Batches of ``(stamps, labels)`` or ``(stamps, labels, weights)``.
    """
    tf = tensorflow()
    n = x.shape[0]
    stamps = tf.constant(x)
    labels = tf.constant(y.reshape(-1, 1).astype(np.float32))
    weights = None if w is None else tf.constant(w.astype(np.float32))
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    # Plain tensor code, no Python control flow: AutoGraph has nothing to convert.
    @tf.autograph.experimental.do_not_convert
    def gather_batch(index):
        batch = (tf.gather(stamps, index), tf.gather(labels, index))
        return batch if weights is None else (*batch, tf.gather(weights, index))

    @tf.autograph.experimental.do_not_convert
    def gather_augmented_batch(index, seed_pair):
        stamps_out, *rest = gather_batch(index)
        return (augment_dihedral(tf, stamps_out, seed_pair), *rest)

    if augment:
        # two int64 per batch: the seed of a stateless random draw
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            gather_augmented_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    else:
        ds = ds.map(gather_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def training_versions() -> dict[str, str]:
    """Versions a model card records: astrid, tensorflow, keras, numpy and python (str each)."""
    import keras
    import tensorflow as tf

    from .. import __version__

    return {
        "astrid": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def save_model(model, path: Path) -> None:
    """Save a Keras model as a ``.keras`` archive at ``path``, atomically.

    Parameters
    ----------
    model : keras.Model
        The model to save.
    path : pathlib.Path
        Destination; replaced only once the whole archive is written.
    """
    # Keras writes .keras archives only to a path ending in .keras: write one in a
    # scratch folder, then move its bytes into place atomically.
    with tempfile.TemporaryDirectory(prefix="astrid-train-") as scratch:
        scratch_file = Path(scratch) / "model.keras"
        model.save(scratch_file)
        data = scratch_file.read_bytes()
    atomic_write(path, lambda fh: fh.write(data))
