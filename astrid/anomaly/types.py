"""Transient type from a triplet: supernova, variable star, asteroid or bogus, with MC-dropout uncertainty.

A small CNN with a softmax head over braai's input (the 63×63 science,
reference and difference stamps, each normalised by its own robust noise
and compressed with ``arcsinh``). Classes
(:data:`CLASSES`) come from the triplets' ``kind`` coordinate
(:func:`astrid.triplets.label_candidates`): ``supernova``, ``variable``,
``asteroid``, and ``bogus`` for every other kind (cosmic rays, hot pixels,
bad columns, trails, saturated stars, unmatched detections, random
positions). Training follows braai's recipe (Adam, dihedral augmentation of
the stamps, balanced class weights — capped —, early stopping on a
validation set, seeded and deterministic). Uncertainty is Monte-Carlo dropout
(:func:`predict_types`): the dropout layer stays on for ``n_samples``
passes; the mean of the softmax is the prediction, its spread and
predictive entropy the uncertainty.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._utils import robust_std
from ..errors import AstridInputError

__all__ = [
    "CLASSES",
    "TypesTrainingOptions",
    "build_type_model",
    "plot_confusion",
    "predict_types",
    "train_types",
    "type_labels",
    "type_report",
]

#: The classes, in the order of the model's outputs.
CLASSES = ("supernova", "variable", "asteroid", "bogus")


def type_labels(kinds) -> np.ndarray:
    """Class index (into :data:`CLASSES`) of each ``kind``.

    Kinds other than the first three classes are bogus.

    Parameters
    ----------
    kinds : array_like of str
        Truth kind of each triplet.

    Returns
    -------
    numpy.ndarray
        Class index of each kind, int64, shape (n,).
    """
    kinds = np.array([str(k).strip() for k in np.asarray(kinds).tolist()])
    out = np.full(kinds.size, CLASSES.index("bogus"), dtype=np.int64)
    for i, name in enumerate(CLASSES[:-1]):
        out[kinds == name] = i
    return out


def build_type_model(input_shape=(63, 63, 3), n_classes: int = len(CLASSES), dropout: float = 0.3):
    """A compact CNN that classifies triplets.

    Two blocks of two 3×3 convolutions (16, 32) and one of 32, flatten,
    dense 64, dropout, softmax.

    Parameters
    ----------
    input_shape : tuple of int, optional
        Shape of one input triplet (height, width, channels).
    n_classes : int, optional
        Number of output classes.
    dropout : float, optional
        Dropout rate before the output layer, in [0, 1).

    Returns
    -------
    keras.Model
        The uncompiled model.
    """
    from .unet import keras_module

    if not 0.0 <= float(dropout) < 1.0:
        raise AstridInputError(f"dropout={dropout!r} must be in [0, 1)")
    keras = keras_module()
    layers = keras.layers
    inputs = keras.Input(shape=tuple(int(s) for s in input_shape), name="triplet")
    x = inputs
    for n in (16, 32):
        x = layers.Conv2D(n, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(n, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    # Flatten, not global pooling: what lies at the centre of the stamp is the point.
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(float(dropout), name="mc_dropout")(x)
    outputs = layers.Dense(int(n_classes), activation="softmax", name="type")(x)
    return keras.Model(inputs, outputs, name="type_cnn")


def _stamps(triplets, name):
    """(n, 63, 63, 3) float32: each stamp and channel minus its median, over its robust σ, arcsinh(x / 2).

    The same compression as the U-Net's planes: noise stays linear and a
    bright core stays within reach, whatever the survey's units. NaN → 0.
    """
    if hasattr(triplets, "data_vars"):
        if "triplets" not in triplets.data_vars:
            raise AstridInputError(f"{name}: not a triplet dataset (no 'triplets' variable)")
        x = triplets["triplets"].transpose("candidate", "y", "x", "channel").values
    else:
        x = np.asarray(triplets)
        if x.ndim == 3:
            x = x[None]
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise AstridInputError(f"{name}: expected stamps (n, ny, nx, 3), got shape {x.shape}")
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stamps: handled just below
        median = np.nanmedian(x, axis=(1, 2), keepdims=True)
        sigma = robust_std(x, axis=(1, 2), ignore_nan=True, keepdims=True)
    median = np.nan_to_num(median, nan=0.0)
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, 1.0)
    return np.nan_to_num(np.arcsinh((x - median) / (2.0 * sigma)), nan=0.0).astype(np.float32)


def _classes_of(dataset, name):
    if "kind" not in dataset.coords and "kind" not in getattr(dataset, "data_vars", {}):
        raise AstridInputError(
            f"{name}: no 'kind' coordinate; label the candidates with label_candidates()"
        )
    return type_labels(dataset["kind"].values)


@dataclass(frozen=True)
class TypesTrainingOptions:
    """How :func:`train_types` trains.

    Attributes
    ----------
    epochs : int
        Training epochs (Adam on the class-weighted cross-entropy).
    batch_size : int
        Triplets per training batch.
    learning_rate : float
        Adam's learning rate.
    dropout : float
        Dropout rate of the network (also Monte-Carlo dropout in
        :func:`predict_types`).
    patience : int
        Early-stopping patience on the validation loss.
    max_class_weight : float
        Cap of the balanced class weights ``n / (k n_c)``.
    seed : int
        Seeds the initial weights, shuffling and augmentation.
    """

    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 1e-3
    dropout: float = 0.3
    patience: int = 3
    max_class_weight: float = 20.0
    seed: int = 0


def _class_weights(y: np.ndarray, max_class_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """The count of each class in ``y`` and its balanced weight, capped at ``max_class_weight``."""
    counts = np.bincount(y, minlength=len(CLASSES))
    present = counts > 0
    if present.sum() < 2:
        raise AstridInputError(
            f"dataset: needs at least two classes, has {dict(zip(CLASSES, counts.tolist()))}"
        )
    # Balanced class weights, capped: a class of a dozen asteroids would otherwise weigh ~100x.
    weights = np.where(
        present, np.minimum(y.size / (present.sum() * np.maximum(counts, 1)), max_class_weight), 0.0
    )
    return counts, weights


def _start_types_run(options: TypesTrainingOptions, x: np.ndarray, counts: np.ndarray, track):
    """The tracking run of a type-CNN training: the options and the class counts."""
    from .. import tracking

    return tracking.start_run(
        "transient_types",
        {
            "epochs": int(options.epochs),
            "batch_size": int(options.batch_size),
            "learning_rate": float(options.learning_rate),
            "dropout": float(options.dropout),
            "patience": int(options.patience),
            "seed": int(options.seed),
            "n_train": int(x.shape[0]),
            "classes": list(CLASSES),
            "class_counts": counts.tolist(),
        },
        tags={"astrid.kind": "types-train"},
        track=track,
    )


def _types_train_data(tf, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, batching):
    """The shuffled, batched, dihedrally augmented training data; ``batching``: (batch size, seed)."""
    batch_size, seed = batching
    xs, ys = tf.constant(x), tf.constant(y)
    ws = tf.constant(sample_weight.astype(np.float32))
    ds = tf.data.Dataset.range(x.shape[0]).shuffle(
        x.shape[0], seed=int(seed), reshuffle_each_iteration=True
    )
    ds = ds.batch(int(batch_size))
    seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).batch(2)

    @tf.autograph.experimental.do_not_convert
    def gather(index, seed_pair):
        from ..braai.runtime import augment_dihedral

        return (
            augment_dihedral(tf, tf.gather(xs, index), seed_pair),
            tf.gather(ys, index),
            tf.gather(ws, index),
        )

    return tf.data.Dataset.zip((ds, seeds)).map(gather).prefetch(tf.data.AUTOTUNE)


def train_types(
    dataset,
    options: TypesTrainingOptions | None = None,
    *,
    validation=None,
    track: bool | None = None,
    verbose: int = 0,
) -> tuple[Any, dict]:
    """Train the type CNN on triplets with a ``kind`` coordinate.

    Parameters
    ----------
    dataset : xarray.Dataset
        Triplets (:func:`astrid.triplets.build_training_set` with
        ``balance=None``).
    options : TypesTrainingOptions, optional
        Epochs, batch size, learning rate, dropout, patience, class-weight
        cap and seed; default ``TypesTrainingOptions()``.
    validation : xarray.Dataset, optional
        Validation triplets as ``dataset``, from other fields.
    track : bool, optional
        Log the training to MLflow (:mod:`astrid.tracking`); default on when
        MLflow is installed, unless ``ASTRID_TRACKING=off``. A tracking
        failure only warns.
    verbose : int, optional
        Keras' progress output.

    Returns
    -------
    model : keras.Model
        The trained model.
    history : dict
        Per-epoch ``loss`` (``val_loss``), ``epoch_seconds``, ``class_weight``,
        ``class_counts``, ``triplets_per_second`` and ``mlflow`` (the run, or None).
    """
    from .. import tracking
    from ..braai.runtime import EpochTimer, disable_determinism, enable_determinism
    from .unet import keras_module, tf_module

    options = TypesTrainingOptions() if options is None else options
    epochs, batch_size, learning_rate = options.epochs, options.batch_size, options.learning_rate
    dropout, patience, max_class_weight, seed = (
        options.dropout,
        options.patience,
        options.max_class_weight,
        options.seed,
    )
    x = _stamps(dataset, "dataset")
    y = _classes_of(dataset, "dataset")
    counts, weights = _class_weights(y, max_class_weight)
    tracking.tracking_enabled(track)
    tf = tf_module()
    keras = keras_module()
    keras.utils.set_random_seed(int(seed))
    run = _start_types_run(options, x, counts, track)
    switched_on = enable_determinism(tf)
    try:
        model = build_type_model(x.shape[1:], dropout=dropout)
        model.compile(
            optimizer=keras.optimizers.Adam(float(learning_rate)),
            loss=keras.losses.SparseCategoricalCrossentropy(),
        )
        train_data = _types_train_data(tf, x, y, weights[y], (batch_size, seed))
        validation_data = None
        callbacks = []
        timer = EpochTimer()
        callbacks.append(timer)
        if run.active:
            callbacks.append(run.epoch_callback())
        if validation is not None:
            validation_data = (
                _stamps(validation, "validation"),
                _classes_of(validation, "validation"),
            )
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=int(patience), restore_best_weights=True
                )
            )
        fit = model.fit(
            train_data,
            validation_data=validation_data,
            epochs=int(epochs),
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )
    except BaseException as exc:
        run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if switched_on:
            disable_determinism()
    seconds = timer.seconds
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    history.update(
        {
            "epoch_seconds": seconds,
            "class_weight": dict(zip(CLASSES, weights.round(4).tolist())),
            "class_counts": dict(zip(CLASSES, counts.tolist())),
            "triplets_per_second": float(np.median([x.shape[0] / s for s in seconds]))
            if seconds
            else math.nan,
            "mlflow": run.info(),
        }
    )
    run.end()
    return model, history


def predict_types(
    model, triplets, *, n_samples: int = 20, seed: int = 0, batch_size: int = 512
) -> dict:
    """Class probabilities with Monte-Carlo-dropout uncertainty.

    Parameters
    ----------
    model : keras.Model
        From :func:`train_types`.
    triplets : xarray.Dataset or array
        Raw triplets (normalised here, as in training).
    n_samples : int, optional
        Stochastic passes with dropout on (1: a single deterministic pass).
    seed : int, optional
        Keras' random seed for the dropout passes.
    batch_size : int, optional
        Triplets per forward pass.

    Returns
    -------
    dict
        ``probability`` (n, 4): mean softmax; ``std`` (n, 4): its spread
        over the passes; ``predicted`` (n,): class index; ``confidence``:
        the predicted class's mean probability; ``entropy``: predictive
        entropy of the mean (nats); ``classes``.
    """
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise AstridInputError(f"n_samples={n_samples!r} must be a positive integer")
    from .unet import keras_module

    keras = keras_module()
    x = _stamps(triplets, "triplets")
    keras.utils.set_random_seed(int(seed))
    passes = []
    for _ in range(int(n_samples)):
        out = [
            np.asarray(model(x[i : i + batch_size], training=n_samples > 1))
            for i in range(0, x.shape[0], batch_size)
        ]
        passes.append(np.concatenate(out) if out else np.empty((0, len(CLASSES)), np.float32))
    stack = np.stack(passes).astype(np.float64)
    mean = stack.mean(0)
    predicted = mean.argmax(1) if mean.size else np.empty(0, np.int64)
    return {
        "probability": mean,
        "std": stack.std(0),
        "predicted": predicted,
        "confidence": mean[np.arange(mean.shape[0]), predicted] if mean.size else np.empty(0),
        "entropy": -(mean * np.log(np.clip(mean, 1e-12, 1.0))).sum(1),
        "classes": CLASSES,
    }


def type_report(true, predicted) -> dict:
    """Per-class precision and recall, and the confusion matrix (rows true, columns predicted).

    Parameters
    ----------
    true, predicted : array-like of int
        Class indices (:func:`type_labels`; ``predict_types(...)["predicted"]``).

    Returns
    -------
    dict
        ``classes``, ``confusion`` (list of lists), ``accuracy``, and per
        class ``precision``, ``recall``, ``support`` (NaN where undefined).
    """
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape or true.ndim != 1:
        raise AstridInputError(
            f"true and predicted: need two 1-D arrays of one length, got {true.shape} and {predicted.shape}"
        )
    k = len(CLASSES)
    if true.size and (
        min(true.min(), predicted.min()) < 0 or max(true.max(), predicted.max()) >= k
    ):
        raise AstridInputError(f"true/predicted: class indices must be in 0..{k - 1}")
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    per_class = {}
    for i, name in enumerate(CLASSES):
        column, row = confusion[:, i].sum(), confusion[i].sum()
        per_class[name] = {
            "precision": float(confusion[i, i] / column) if column else math.nan,
            "recall": float(confusion[i, i] / row) if row else math.nan,
            "support": int(row),
        }
    return {
        "classes": list(CLASSES),
        "confusion": confusion.tolist(),
        "accuracy": float(np.trace(confusion) / true.size) if true.size else math.nan,
        "per_class": per_class,
    }


def plot_confusion(report: dict, title: str = ""):
    """The confusion matrix of :func:`type_report` and per-class bars.

    The matrix has row-normalised colours, with the counts written.

    Parameters
    ----------
    report : dict
        From :func:`type_report`.
    title : str, optional
        Title of the matrix panel; default: the accuracy.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    import matplotlib.pyplot as plt

    confusion = np.asarray(report["confusion"], float)
    rows = confusion.sum(1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(9.5, 4.0), gridspec_kw={"width_ratios": [1.1, 1]})
    ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    classes = report["classes"]
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(confusion[i, j])}",
                ha="center",
                va="center",
                color="white" if normalised[i, j] > 0.6 else "black",
                fontsize=9,
            )
    ax.set_title(title or f"accuracy {report['accuracy']:.3f}")
    xs = np.arange(len(classes))
    precision = [report["per_class"][c]["precision"] for c in classes]
    recall = [report["per_class"][c]["recall"] for c in classes]
    bars.bar(xs - 0.2, precision, 0.4, label="precision")
    bars.bar(xs + 0.2, recall, 0.4, label="recall")
    bars.set_xticks(xs, classes, rotation=30, ha="right")
    bars.set_ylim(0, 1.25)
    bars.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    bars.legend(loc="upper center", ncols=2, frameon=False)
    bars.set_title("per class (test fields)")
    fig.tight_layout()
    return fig
