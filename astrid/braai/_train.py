"""Train a braai real/bogus network on labelled triplets, with a leak-free validation split and a model card.

What :func:`train` does, and why:

- triplets are preprocessed **once** (:func:`~astrid.braai.preprocess`) and
  fed to Keras through a ``tf.data`` pipeline that gathers shuffled batches
  from the preprocessed array and prefetches, so the two CPU cores spend
  their time in the convolutions;
- each batch is augmented by a random element of the dihedral group (the
  four 90° rotations, each optionally mirrored), applied to all three
  channels together: a transient's orientation on the sky carries no
  information, and these eight transforms need no interpolation;
- Adam with binary cross-entropy, braai's learning rate 3e-4 and batch 64,
  class weights against class imbalance, early stopping on the validation
  loss that restores the best weights;
- the validation set is split off by whole groups (fields, objects or
  epochs), never at random over candidates: neighbouring detections of one
  object are near-duplicates, and a random split would let the model be
  validated on what it memorised;
- every random choice is seeded and TensorFlow's deterministic ops are on,
  so a seed reproduces a run bit for bit on the same machine;
- the model is saved as ``.keras`` beside a JSON *model card* (data hash,
  sizes, parameters, metrics, library versions), both written atomically.

XLA (``jit_compile``) is off by default: Keras does not compile with XLA while
deterministic ops are on, and on this project's 2-core CPU XLA made VGG6
training slower, not faster (``benchmarks/bench_train.py --configs
not-deterministic,jit_compile`` measures it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..drift import score_distribution
from ..errors import AstridFileError, AstridInputError, AstridWarning
from ..io import atomic_write
from ..schema import validate_triplets
from ._calibrate import CALIBRATION_METHODS, Calibration, fit_calibration
from ._evaluate import check_both_classes, evaluate, labels_of
from ._models import build_model, keras_module
from ._preprocess import NORMS, preprocess
from .runtime import (
    PRECISIONS,
    EpochTimer,
    disable_determinism,
    enable_determinism,
    resolve_precision,
    save_model,
    tensorflow,
    training_dataset,
    training_twin,
    training_versions,
)

__all__ = [
    "TrainResult",
    "train",
    "split_groups",
    "dataset_hash",
    "class_weights",
    "load_trained",
    "TrainConfig",
    "card_path",
    "SPLITS",
    "CARD_FORMAT",
]

#: Ways :func:`train` can split off a validation set, and the coordinates each one groups by.
SPLITS: dict[str, tuple[str, ...]] = {
    "field": ("field",),
    "object": ("objectId", "object_id", "object"),
    "time": ("epoch", "mjd", "jd", "time"),
    "survey": ("survey",),
}
#: ``format`` entry of the model card.
CARD_FORMAT = "astrid-braai-card/1"
#: braai's learning rate (Duev et al. 2019), and the default when fine-tuning.
LEARNING_RATE = 3e-4
FINE_TUNE_LEARNING_RATE = 3e-5
# Batches of the (unaugmented) validation pass; larger is faster and changes nothing.
_VALIDATION_BATCH = 256
# Validation groups listed by name in the card (the rest are counted).
_MAX_LISTED_GROUPS = 100


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : keras.Model
        The trained network (best validation-loss weights when a validation
        set was used), with ``model.astrid_norm`` set to its preprocessing.
    history : dict of str to list of float
        Per-epoch ``loss``, ``auc``, ``accuracy`` (training, augmented and
        class-weighted), ``val_loss``, ``val_auc``, ``val_accuracy`` and
        ``epoch_seconds`` (wall time of each epoch, validation included).
    model_path : pathlib.Path or None
        The saved ``.keras`` file (None without ``out_dir``).
    card_path : pathlib.Path or None
        The saved model card, ``<name>.card.json`` (None without ``out_dir``).
    card : dict
        The model card:
        ``format``, ``created`` (UTC, ISO 8601), ``model`` (name,
        architecture, parameters, input shape, ``fine_tuned_from``),
        ``norm``, ``data`` (``sha256`` of the training stamps and labels,
        ``sha256_validation``, ``n_train``, ``n_validation``, class counts,
        the split and the validation groups), ``parameters`` (everything
        that shaped the training, class weights resolved), ``training``
        (epochs run, best epoch, seconds, triplets per second), ``metrics``
        (:func:`~astrid.braai.evaluate` of the final model on the
        validation set at threshold 0.5; empty without validation),
        ``validation_scores`` (the model's score distribution on the
        validation set, :func:`astrid.drift.score_distribution`: the
        reference of the drift check of every later scoring run; None
        without validation), ``provenance`` (as given, or None),
        ``calibration`` (:meth:`Calibration.to_dict`, or None), ``mlflow``
        (run id, experiment id and tracking URI, or None), ``history`` and
        ``versions`` (astrid, tensorflow, keras, numpy, python).
    """

    model: Any
    history: dict[str, list[float]]
    model_path: Path | None = None
    card_path: Path | None = None
    card: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train` trains: validation split, optimiser, augmentation, seeds, calibration.

    Everything that shapes the weights, apart from the data, the starting
    model and where the results go. Invalid values raise
    :class:`~astrid.errors.AstridInputError` when the config is made.

    Attributes
    ----------
    split : {"field", "object", "time"} or None
        How to split a validation set off the training data when
        :func:`train` gets no ``validation``: by whole groups
        (:func:`split_groups`). None: train on everything without
        validation and without early stopping.
    validation_fraction : float
        Fraction of candidates to put in the split-off validation set.
    epochs : int
        Most epochs to train (default 30).
    batch_size : int
        Triplets per training step (default 64, as braai).
    learning_rate : float or None
        Adam's learning rate; default (None) 3e-4 (braai's) from scratch and
        3e-5 when fine-tuning, so the pretrained features are adjusted, not
        overwritten.
    class_weight : "balanced", dict or None
        Per-class loss weights (:func:`class_weights`), computed on the
        training part only.
    augment : bool
        Random flips and 90° rotations of each training stamp per epoch.
    patience : int or None
        Stop after this many epochs without a lower validation loss and
        restore the best weights (default 5); None: run all epochs (the best
        weights are still restored when there is a validation set).
    seed : int
        Seeds the weights' initialisation, dropout, shuffling, augmentation
        and the split.
    norm : {"rowwise", "l2"} or None
        Preprocessing (:func:`~astrid.braai.preprocess`); default the
        fine-tuned model's own, else ``"rowwise"`` (braai ``d6_m7``'s).
    deterministic : bool
        Turn on TensorFlow's deterministic ops while training (default):
        the same seed then gives the same weights on the same machine. They
        are turned off again afterwards unless they were on before.
    jit_compile : bool
        XLA compilation of the training step (default off: slower on the
        CPUs measured by ``benchmarks/bench_train.py``). Needs
        ``deterministic=False``: Keras does not compile with XLA while
        deterministic ops are on.
    calibration : {"temperature", "platt", "isotonic"} or None
        Fit a score calibration (:func:`astrid.braai.fit_calibration`) on
        the validation set when it holds both classes (default temperature
        scaling; None: none). It is stored as the card's ``calibration``
        and as ``model.astrid_calibration``, and :func:`astrid.score.score`
        applies it by default; the card's ``metrics`` and
        ``validation_scores`` are then of the calibrated scores (what
        ``score()`` returns), and ``calibration["ece_before"]`` is the raw
        scores' expected calibration error.
    precision : {"auto", "float32", "mixed_bfloat16"}
        The arithmetic of the training steps. ``"mixed_bfloat16"``: Keras'
        mixed precision (bfloat16 computation, float32 weights, the output
        layer in float32), about 1.5 times as fast on CPUs with bfloat16 matrix
        units (Intel AMX), not measured without them; ``"auto"`` (default)
        chooses it only on such CPUs (:func:`~astrid.braai.runtime.resolve_precision`).
        The returned model computes in float32 either way.
    """

    split: str | None = "field"
    validation_fraction: float = 0.2
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float | None = None
    class_weight: Any = "balanced"
    augment: bool = True
    patience: int | None = 5
    seed: int = 0
    norm: str | None = None
    deterministic: bool = True
    jit_compile: bool = False
    calibration: str | None = "temperature"
    precision: str = "auto"

    def __post_init__(self):
        for key, value, low in (
            ("epochs", self.epochs, 1),
            ("batch_size", self.batch_size, 1),
            ("patience", self.patience, 0),
        ):
            if key == "patience" and value is None:
                continue
            if not _is_whole(value) or value < low:
                raise AstridInputError(f"{key}={value!r} must be an integer >= {low}")
        if self.norm is not None and self.norm not in NORMS:
            raise AstridInputError(f"norm={self.norm!r} is not one of {NORMS}")
        if self.jit_compile and self.deterministic:
            raise AstridInputError(
                "jit_compile=True needs deterministic=False: Keras does not compile with XLA while TensorFlow's "
                "deterministic ops are on"
            )
        rate = self.learning_rate
        if rate is not None and not (math.isfinite(float(rate)) and rate > 0):
            raise AstridInputError(f"learning_rate={rate!r} must be a positive number")
        if self.precision not in PRECISIONS:
            raise AstridInputError(f"precision={self.precision!r} is not one of {PRECISIONS}")
        if self.calibration is not None and self.calibration not in CALIBRATION_METHODS:
            raise AstridInputError(
                f"calibration={self.calibration!r} is not one of {CALIBRATION_METHODS} or None"
            )

    @property
    def class_weight_rule(self) -> str | None:
        """``class_weight`` as the card names it: the rule, or ``"given"`` for a dict."""
        rule = self.class_weight
        return rule if isinstance(rule, str) or rule is None else "given"

    def split_fraction(self, split_info: dict) -> float | None:
        """``validation_fraction`` when a validation set was split off by it, else None."""
        return (
            float(self.validation_fraction) if split_info.get("by") not in (None, "given") else None
        )


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #


def dataset_hash(dataset: xr.Dataset) -> str:
    """SHA-256 of a triplet set's stamps and labels.

    The stamps are hashed as little-endian float32 in (candidate, y, x,
    channel) order, followed by the labels as int8, so the hash identifies
    exactly what a model saw, whatever the storage (NetCDF, Zarr, memory).

    Parameters
    ----------
    dataset : xarray.Dataset
        Triplets with a ``label`` coordinate.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    validate_triplets(dataset, "dataset")
    labels = labels_of(dataset)
    stamps = dataset["triplets"].transpose("candidate", "y", "x", "channel").values
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(stamps, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int8).tobytes())
    return digest.hexdigest()


def _group_values(dataset: xr.Dataset, by: str) -> tuple[str, np.ndarray]:
    if by not in SPLITS:
        raise AstridInputError(f"split={by!r} is not one of {sorted(SPLITS)} or None")
    for name in SPLITS[by]:
        if name in dataset.coords or name in dataset.data_vars:
            values = np.asarray(dataset[name].values)
            if by == "time":
                values = values.astype(float)
                if not np.isfinite(values).all():
                    raise AstridInputError(
                        f"dataset: coordinate {name!r} has NaN times; cannot split by time"
                    )
            else:
                values = np.array([str(v) for v in values.tolist()])
            return name, values
    raise AstridInputError(
        f"dataset: no coordinate to split by {by} (looked for {list(SPLITS[by])}); "
        "pass a validation set or split=None"
    )


def split_groups(
    dataset: xr.Dataset, by: str = "field", fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Split candidates into training and validation by whole groups.

    Parameters
    ----------
    dataset : xarray.Dataset
        Triplets with the coordinate to group by (see :data:`SPLITS`).
    by : {"field", "object", "time"}, optional
        ``"field"``: whole fields (coordinate ``field``) in random order go to
        validation; ``"object"``: whole objects (``objectId``, ``object_id``
        or ``object``) in random order; ``"time"``: the latest epochs
        (``epoch``, ``mjd``, ``jd`` or ``time``), candidates of one epoch
        never split. Groups are added until validation holds at least
        ``fraction`` of the candidates; at least one group stays in training.
    fraction : float, optional
        Wanted validation fraction, in (0, 1).
    seed : int, optional
        Seed of the group order (``"field"``, ``"object"``).

    Returns
    -------
    train_index, validation_index : numpy.ndarray of int
        Candidate positions, sorted.
    info : dict
        ``by``, ``coordinate``, ``validation_groups`` (names or times),
        ``n_groups``.

    Raises
    ------
    AstridInputError
        Unknown ``by``, no coordinate to group by, fewer than two groups,
        or ``fraction`` outside (0, 1).
    """
    if not 0.0 < float(fraction) < 1.0:
        raise AstridInputError(f"validation fraction={fraction!r} must be in (0, 1)")
    coordinate, values = _group_values(dataset, by)
    names, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if names.size < 2:
        raise AstridInputError(
            f"dataset: only one {by} ({coordinate}={names[0] if names.size else None!r}); a split by {by} "
            "needs at least two; pass a validation set or split=None"
        )
    if by == "time":
        order = np.arange(names.size)[::-1]  # latest first
    else:
        order = np.random.default_rng(seed).permutation(names.size)
    chosen: list[int] = []
    n_validation = 0
    for g in order:
        if n_validation >= fraction * values.size or len(chosen) == names.size - 1:
            break
        chosen.append(int(g))
        n_validation += int(counts[g])
    in_validation = np.isin(inverse, chosen)
    groups = names[np.sort(chosen)]
    info = {
        "by": by,
        "coordinate": coordinate,
        "n_groups": int(names.size),
        "validation_groups": [float(g) if by == "time" else str(g) for g in groups],
    }
    return np.flatnonzero(~in_validation), np.flatnonzero(in_validation), info


def class_weights(labels, class_weight="balanced") -> dict[int, float]:
    """Per-class loss weights.

    Parameters
    ----------
    labels : array-like of {0, 1}
        Training labels.
    class_weight : "balanced", dict or None
        ``"balanced"``: ``n / (2 n_c)`` for class ``c`` (scikit-learn's
        rule: both classes weigh the same in the loss); a dict ``{0: w0,
        1: w1}`` of positive weights; None: 1 for both.

    Returns
    -------
    dict of int to float
        Loss weight of class 0 (bogus) and of class 1 (real).
    """
    labels = labels_of(labels, "labels")
    if class_weight is None:
        return {0: 1.0, 1: 1.0}
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise AstridInputError(
                f"class_weight={class_weight!r}: use 'balanced', a dict {{0: w, 1: w}} or None"
            )
        check_both_classes(labels, "training set")
        n_real = int(labels.sum())
        n_bogus = labels.size - n_real
        return {0: labels.size / (2.0 * n_bogus), 1: labels.size / (2.0 * n_real)}
    if isinstance(class_weight, dict):
        try:
            weights = {int(k): float(v) for k, v in class_weight.items()}
        except (TypeError, ValueError):
            raise AstridInputError(
                f"class_weight={class_weight!r}: keys must be 0 and 1, values numbers"
            ) from None
        if set(weights) != {0, 1} or not all(math.isfinite(w) and w > 0 for w in weights.values()):
            raise AstridInputError(
                f"class_weight={class_weight!r}: need positive finite weights for exactly 0 and 1"
            )
        return weights
    raise AstridInputError(
        f"class_weight={class_weight!r}: use 'balanced', a dict {{0: w, 1: w}} or None"
    )


# --------------------------------------------------------------------------- #
# tf.data pipeline
# --------------------------------------------------------------------------- #


# --------------------------------------------------------------------------- #
# models
# --------------------------------------------------------------------------- #


def card_path(model_path: str | os.PathLike) -> Path:
    """Where the model card of a ``.keras`` model lies: ``<name>.card.json`` beside it.

    Parameters
    ----------
    model_path : path-like
        The ``.keras`` file (from :func:`train`).

    Returns
    -------
    pathlib.Path
        ``<dir>/<name>.card.json`` for ``<dir>/<name>.keras``.
    """
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".keras") + ".card.json")


def load_trained(path: str | os.PathLike):
    """Load a model saved by :func:`train`, with its preprocessing from the model card.

    Parameters
    ----------
    path : path-like
        The ``.keras`` file; ``<name>.card.json`` beside it supplies
        ``norm`` (set as ``model.astrid_norm``) and the score calibration
        (``model.astrid_calibration``, applied by :func:`astrid.score.score`).

    Returns
    -------
    keras.Model
        The model, with ``astrid_norm`` and ``astrid_calibration`` set when
        the model card gives them.

    Raises
    ------
    AstridFileError
        Missing or unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise AstridFileError(f"{path}: model file does not exist")
    if path.suffix != ".keras":
        raise AstridInputError(f"{path}: expected a .keras file saved by astrid.braai.train")
    from ..export import load_keras_archive

    model = load_keras_archive(path)
    card_file = card_path(path)
    if card_file.exists():
        try:
            card = json.loads(card_file.read_text())
        except json.JSONDecodeError as exc:
            raise AstridFileError(f"{card_file}: model card is not JSON ({exc})") from exc
        if card.get("norm") in NORMS:
            model.astrid_norm = card["norm"]
        if card.get("calibration") is not None:
            model.astrid_calibration = Calibration.from_dict(
                card["calibration"], f"{card_file}: calibration"
            ).to_dict()
    return model


def _start_model(model, fine_tune_from):
    """(model, description of where its weights come from)."""
    keras = keras_module()
    if fine_tune_from is None:
        if isinstance(model, str):
            return build_model(model), None
        if isinstance(model, keras.Model):
            return model, None
        raise AstridInputError(
            f"model={model!r}: give an architecture name ('vgg6', 'three_block') or a keras.Model"
        )
    if isinstance(fine_tune_from, (str, os.PathLike)):
        path = Path(fine_tune_from)
        if path.suffix == ".keras":
            source = load_trained(path)
        elif path.suffix in (".h5", ".hdf5"):
            from ._load import load_braai

            source = load_braai(path)
        else:
            raise AstridInputError(
                f"fine_tune_from={str(path)!r}: expected a .keras or braai .h5 file"
            )
        description = str(path)
    elif isinstance(fine_tune_from, keras.Model):
        source = fine_tune_from
        description = f"keras.Model {source.name!r}"
    else:
        raise AstridInputError(
            f"fine_tune_from: expected a keras.Model or a .keras/.h5 path, got {type(fine_tune_from).__name__}"
        )
    # A copy, so the caller's model keeps its weights.
    copy = keras.models.clone_model(source)
    copy.set_weights(source.get_weights())
    if getattr(source, "astrid_norm", None):
        copy.astrid_norm = source.astrid_norm
    return copy, description


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    return {"real": int(labels.sum()), "bogus": int(labels.size - labels.sum())}


def _is_whole(value) -> bool:
    return (
        isinstance(value, (int, np.integer, float, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and int(value) == value
    )


def _summary(result: dict) -> dict[str, Any]:
    keys = (
        "n",
        "threshold",
        "precision",
        "recall",
        "f1",
        "fpr",
        "fnr",
        "aucpr",
        "roc_auc",
        "threshold_at_target_fnr",
        "target_fnr",
        "fnr_at_target",
        "fpr_at_target",
        "eer",
        "eer_threshold",
        "ece",
    )
    return {key: result[key] for key in keys}


def _json_provenance(provenance: dict | None) -> dict | None:
    if provenance is None:
        return None
    if not isinstance(provenance, dict):
        raise AstridInputError(f"provenance must be a dict, not {type(provenance).__name__}")
    try:
        return json.loads(json.dumps(provenance, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise AstridInputError(f"provenance is not JSON-serialisable: {exc}") from None


def _tracked_parameters(
    network,
    config: TrainConfig,
    norm: str,
    learning_rate: float,
    weights: dict[int, float],
    data: _Split,
    fine_tuned_from: str | None,
) -> dict[str, Any]:
    """What MLflow records as the parameters of a braai training (the card has the rest)."""
    return {
        "architecture": network.name,
        "n_parameters": int(network.count_params()),
        "norm": norm,
        "learning_rate": float(learning_rate),
        "batch_size": int(config.batch_size),
        "epochs": int(config.epochs),
        "patience": None if config.patience is None else int(config.patience),
        "seed": int(config.seed),
        "class_weight_rule": config.class_weight_rule,
        "class_weight": {str(k): round(float(v), 6) for k, v in weights.items()},
        "augment": bool(config.augment),
        "deterministic": bool(config.deterministic),
        "jit_compile": bool(config.jit_compile),
        "precision": resolve_precision(config.precision),
        "split": data.split_info.get("by"),
        "validation_fraction": config.split_fraction(data.split_info),
        "calibration": config.calibration,
        "fine_tuned_from": fine_tuned_from,
        "n_train": int(data.train_labels.size),
        "n_validation": 0 if data.validation_labels is None else int(data.validation_labels.size),
    }


def _log_training(
    run,
    card: dict,
    metrics: dict,
    model_path: Path | None,
    card_path: Path | None,
    results: dict[str, dict],
) -> None:
    """Final metrics, calibration, the model file and its card into the MLflow run; then close it."""
    if not run.active:
        run.end()
        return
    final = {f"final_{k}": v for k, v in metrics.items()}
    final["epochs_run"] = card["training"]["epochs_run"]
    final["best_epoch"] = card["training"]["best_epoch"]
    final["train_seconds"] = card["training"]["seconds"]
    calibration = card.get("calibration")
    if calibration:
        final.update(
            {
                f"calibration_{k}": calibration[k]
                for k in ("ece_before", "ece_after", "temperature")
                if calibration.get(k) is not None
            }
        )
    run.log_metrics(final, step=card["training"]["epochs_run"])
    run.set_tags(
        {
            "data_sha256_validation": card["data"]["sha256_validation"],
            "model_sha256": card.get("model_sha256"),
        }
    )
    if model_path is not None:
        run.log_artifact(model_path, "model")
        run.log_artifact(card_path, "model")
    else:
        run.log_dict(card, "model/card.json")
    if calibration:
        run.log_dict(calibration, "calibration.json")
    if results:
        _log_figures(run, results)
    run.end()


def _log_figures(run, results: dict[str, dict]) -> None:
    """ROC/PR and reliability curves of the validation set (raw and calibrated) as run artefacts."""
    from ..figures import pyplot
    from ._evaluate import plot_calibration, plot_roc_pr

    plt = pyplot()
    names = list(results)
    for file_name, plot in (
        ("figures/roc_pr.png", plot_roc_pr),
        ("figures/reliability.png", plot_calibration),
    ):
        try:
            figure = plot(*[results[n] for n in names], labels=[f"validation, {n}" for n in names])
        except Exception as exc:  # a figure is not worth a failed training
            warnings.warn(
                f"MLflow: could not draw {file_name} ({type(exc).__name__}: {exc})",
                AstridWarning,
                stacklevel=3,
            )
            continue
        run.log_figure(figure, file_name)
        plt.close(figure)


# --------------------------------------------------------------------------- #
# train
# --------------------------------------------------------------------------- #


@dataclass
class _Split:
    """The training and validation parts of a training, with their checked labels."""

    train_set: xr.Dataset
    validation_set: xr.Dataset | None
    train_labels: np.ndarray
    validation_labels: np.ndarray | None
    split_info: dict[str, Any]


@dataclass
class _Fitted:
    """A network after ``fit``: how it was trained and what the run recorded."""

    network: Any
    norm: str
    learning_rate: float
    fine_tuned_from: str | None
    history: dict[str, list[float]]  # Keras' per-epoch metrics and ``epoch_seconds``
    run: Any
    x_validation: np.ndarray | None


def _split_data(
    dataset: xr.Dataset, validation: xr.Dataset | None, labels: np.ndarray, config: TrainConfig
) -> _Split:
    """The training and validation parts: the given validation set, a group split, or none."""
    split_info: dict[str, Any] = {"by": None}
    if validation is not None:
        validate_triplets(validation, "validation")
        train_set, validation_set = dataset, validation
        split_info = {"by": "given"}
    elif config.split is not None:
        train_index, validation_index, split_info = split_groups(
            dataset, config.split, config.validation_fraction, config.seed
        )
        train_set = dataset.isel(candidate=train_index)
        validation_set = dataset.isel(candidate=validation_index)
    else:
        train_set, validation_set = dataset, None
    train_labels = labels if train_set is dataset else labels_of(train_set)
    check_both_classes(train_labels, "training set")
    validation_labels = None if validation_set is None else labels_of(validation_set, "validation")
    if validation_labels is not None and validation_labels.size == 0:
        raise AstridInputError("validation: the validation set has no candidates")
    if validation_labels is not None and (validation_labels.min() == validation_labels.max()):
        warnings.warn(
            f"validation set ({validation_labels.size} candidates) holds only "
            f"{'real' if validation_labels[0] else 'bogus'} examples: its AUC and precision are undefined; "
            "use a larger validation_fraction or pass a validation set",
            AstridWarning,
            stacklevel=3,
        )
    return _Split(train_set, validation_set, train_labels, validation_labels, split_info)


def _fit(
    data: _Split,
    model,
    fine_tune_from,
    config: TrainConfig,
    weights: dict[int, float],
    name: str | None,
    track: bool | None,
    verbose: int,
) -> _Fitted:
    """Build or copy the network, feed it the preprocessed data and run ``fit`` in an MLflow run."""
    from .. import tracking

    keras = keras_module()
    network, fine_tuned_from = _start_model(model, fine_tune_from)
    norm = config.norm or getattr(network, "astrid_norm", None) or "rowwise"
    learning_rate = config.learning_rate
    if learning_rate is None:
        learning_rate = FINE_TUNE_LEARNING_RATE if fine_tuned_from else LEARNING_RATE
    x_train = preprocess(data.train_set, norm=norm)
    expected = tuple(network.input_shape[1:])
    if x_train.shape[1:] != expected:
        raise AstridInputError(
            f"triplets of shape {x_train.shape[1:]} do not fit the model input {expected}"
        )
    sample_weights = np.where(data.train_labels == 1, weights[1], weights[0]).astype(np.float32)
    train_data = training_dataset(
        x_train,
        data.train_labels,
        sample_weights,
        batch_size=int(config.batch_size),
        shuffle=True,
        augment=bool(config.augment),
        seed=int(config.seed),
    )
    del x_train  # the pipeline holds its own copy; do not keep two in memory
    validation_data = x_validation = None
    if data.validation_set is not None:
        x_validation = preprocess(data.validation_set, norm=norm)
        validation_data = training_dataset(
            x_validation,
            data.validation_labels,
            None,
            batch_size=_VALIDATION_BATCH,
            shuffle=False,
            augment=False,
            seed=int(config.seed),
        )

    # The user's network stays float32; a mixed-precision twin, when asked for, does the training.
    twin = training_twin(network, resolve_precision(config.precision))
    nets = [network] if twin is network else [network, twin]
    for net in nets:  # the returned network compiled as the trained one, as before
        net.compile(
            optimizer=keras.optimizers.Adam(learning_rate=float(learning_rate)),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
            jit_compile=bool(config.jit_compile),
        )
    timer = EpochTimer()
    callbacks = [timer]
    run_name = name or network.name.lower()
    run = tracking.start_run(
        run_name,
        _tracked_parameters(network, config, norm, learning_rate, weights, data, fine_tuned_from),
        tags={
            "astrid.kind": "braai-train",
            "astrid.model": run_name,
            "astrid.architecture": network.name,
            "data_sha256": dataset_hash(data.train_set),
            "fine_tuned_from": fine_tuned_from,
            **{f"version.{k}": v for k, v in tracking.library_versions().items()},
        },
        track=track,
    )
    if run.active:
        callbacks.append(run.epoch_callback())
    if validation_data is not None:
        patience = config.patience
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=int(patience) if patience is not None else int(config.epochs),
                restore_best_weights=True,
                verbose=0,
            )
        )
    try:
        fit = twin.fit(
            train_data,
            validation_data=validation_data,
            epochs=int(config.epochs),
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )
    except BaseException as exc:
        run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    if twin is not network:
        network.set_weights(twin.get_weights())
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    history["epoch_seconds"] = [float(s) for s in timer.seconds]
    return _Fitted(network, norm, float(learning_rate), fine_tuned_from, history, run, x_validation)


@dataclass
class _Report:
    """What a training found on its validation set."""

    metrics: dict[str, Any]
    validation_scores: dict | None
    calibration: Calibration | None
    results: dict[str, dict]


def _validation_report(fitted: _Fitted, data: _Split, calibration: str | None) -> _Report:
    """Metrics, score distribution, fitted calibration and evaluate() results on validation."""
    metrics: dict[str, Any] = {}
    validation_scores = None
    calibrated: Calibration | None = None
    results: dict[str, dict] = {}
    if data.validation_set is None:
        return _Report(metrics, validation_scores, calibrated, results)
    labels = data.validation_labels
    scores = fitted.network.predict(
        fitted.x_validation, batch_size=_VALIDATION_BATCH, verbose=0
    ).reshape(-1)
    both = labels.min() != labels.max()
    source = f"validation set ({scores.size} candidates)"
    if calibration is not None and both:
        calibrated = fit_calibration(labels, scores, method=calibration)
        if fitted.run.active:  # the raw curves, for the run's figures
            results["raw"] = evaluate(None, data.validation_set, scores=scores)
        scores = calibrated.apply(scores)
        source = f"calibrated scores ({calibrated.method}) of the {source}"
    # The reference of every later scoring run's drift check (astrid.drift): the scores
    # score() returns by default, so calibrated ones for a calibrated model.
    validation_scores = score_distribution(scores, source=source)
    if both:
        key = "calibrated" if calibrated is not None else "raw"
        results[key] = evaluate(None, data.validation_set, scores=scores)
        metrics = _summary(results[key])
        metrics["calibrated"] = calibrated is not None
    return _Report(metrics, validation_scores, calibrated, results)


def _card_data(
    dataset: xr.Dataset, validation: xr.Dataset | None, data: _Split, config: TrainConfig
) -> dict:
    """The card's ``data``: hashes, sizes, class counts and the split."""
    split_info, validation_labels = data.split_info, data.validation_labels
    n_given = int(validation.sizes["candidate"]) if validation is not None else 0
    return {
        "sha256": dataset_hash(data.train_set),
        "sha256_validation": dataset_hash(data.validation_set)
        if data.validation_set is not None
        else None,
        "n_total": int(dataset.sizes["candidate"]) + n_given,
        "n_train": int(data.train_labels.size),
        "n_validation": int(validation_labels.size) if validation_labels is not None else 0,
        "train_class_counts": _class_counts(data.train_labels),
        "validation_class_counts": _class_counts(validation_labels)
        if validation_labels is not None
        else None,
        "split": split_info.get("by"),
        "split_coordinate": split_info.get("coordinate"),
        "validation_fraction": config.split_fraction(split_info),
        "n_validation_groups": len(split_info.get("validation_groups", [])),
        "validation_groups": split_info.get("validation_groups", [])[:_MAX_LISTED_GROUPS],
        "source": str(dataset.attrs.get("source", "")),
    }


def _card_parameters(config: TrainConfig, fitted: _Fitted, weights: dict[int, float]) -> dict:
    """The card's ``parameters``: everything that shaped the training, class weights resolved."""
    return {
        "epochs": int(config.epochs),
        "batch_size": int(config.batch_size),
        "optimizer": "Adam",
        "learning_rate": float(fitted.learning_rate),
        "loss": "binary_crossentropy",
        "class_weight": {str(k): float(v) for k, v in weights.items()},
        "class_weight_rule": config.class_weight_rule,
        "augment": "dihedral (flips and 90-degree rotations)" if config.augment else None,
        "patience": None if config.patience is None else int(config.patience),
        "seed": int(config.seed),
        "deterministic": bool(config.deterministic),
        "jit_compile": bool(config.jit_compile),
        "precision": resolve_precision(config.precision),
    }


def _card_training(fitted: _Fitted, data: _Split, config: TrainConfig, started: float) -> dict:
    """The card's ``training``: epochs run, best epoch, seconds, triplets per second."""
    seconds = fitted.history["epoch_seconds"]
    epochs_run = len(seconds)
    history = fitted.history
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if "val_loss" in history else epochs_run
    per_second = [data.train_labels.size / s for s in seconds if s > 0]
    return {
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "stopped_early": epochs_run < int(config.epochs),
        "seconds": round(time.perf_counter() - started, 3),
        "triplets_per_second": round(float(np.median(per_second)), 1) if per_second else None,
    }


def _model_card(
    dataset: xr.Dataset,
    validation: xr.Dataset | None,
    data: _Split,
    config: TrainConfig,
    fitted: _Fitted,
    weights: dict[int, float],
    report: _Report,
    provenance: dict | None,
    name: str | None,
    started: float,
) -> dict:
    """The model card (see :func:`train`), before the saved file's name and hash are added."""
    network = fitted.network
    calibration = report.calibration.to_dict() if report.calibration is not None else None
    return {
        "format": CARD_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": name or network.name.lower(),
            "architecture": network.name,
            "n_parameters": int(network.count_params()),
            "input_shape": [int(s) for s in network.input_shape[1:]],
            "fine_tuned_from": fitted.fine_tuned_from,
        },
        "norm": fitted.norm,
        "data": _card_data(dataset, validation, data, config),
        "parameters": _card_parameters(config, fitted, weights),
        "training": _card_training(fitted, data, config, started),
        "metrics": report.metrics,
        "validation_scores": report.validation_scores,
        "provenance": provenance,
        "calibration": calibration,
        "mlflow": fitted.run.info(),
        "history": fitted.history,
        "versions": training_versions(),
    }


def _save_with_card(network, card: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<name>.keras`` and its card into ``out_dir`` atomically; the card gains its hash."""
    model_path = Path(out_dir) / f"{card['model']['name']}.keras"
    card_file = card_path(model_path)
    save_model(network, model_path)
    card["model_file"] = model_path.name
    card["model_sha256"] = hashlib.sha256(model_path.read_bytes()).hexdigest()
    text = json.dumps(card, indent=2, sort_keys=False) + "\n"
    atomic_write(card_file, lambda fh: fh.write(text), mode="w")
    return model_path, card_file


def train(
    dataset: xr.Dataset,
    model="vgg6",
    *,
    validation: xr.Dataset | None = None,
    config: TrainConfig | None = None,
    fine_tune_from=None,
    out_dir: str | os.PathLike | None = None,
    name: str | None = None,
    provenance: dict | None = None,
    track: bool | None = None,
    verbose: int = 0,
) -> TrainResult:
    """Train a braai real/bogus CNN on labelled triplets.

    Parameters
    ----------
    dataset : xarray.Dataset
        Triplets (schema of :mod:`astrid.schema`) with a ``label``
        coordinate (1 real, 0 bogus), e.g. from
        :func:`astrid.triplets.build_training_set` or
        :func:`astrid.alerts.read_ztf` plus labels.
    model : str or keras.Model, optional
        Architecture name for :func:`~astrid.braai.build_model` (``"vgg6"``,
        braai's network, or ``"three_block"``) or a Keras model to train in
        place. Ignored when ``fine_tune_from`` is given.
    validation : xarray.Dataset, optional
        A labelled validation set; then ``config.split`` is ignored.
    config : TrainConfig, optional
        The split, epochs, batch size, learning rate, class weights,
        augmentation, patience, seed, preprocessing, determinism, XLA and
        calibration (:class:`TrainConfig`; default ``TrainConfig()``:
        braai's recipe, 30 epochs, split by field).
    fine_tune_from : keras.Model or path-like, optional
        Start from this model's architecture and weights (a Keras model, a
        ``.keras`` file from :func:`train`, or a published braai ``.h5`` such
        as ZTF's ``d6_m7``). The given model is copied, not changed.
    out_dir : path-like, optional
        Save ``<name>.keras`` and ``<name>.card.json`` here (atomically).
    name : str, optional
        File stem of the saved files; default the architecture in lower
        case (``"vgg6"``).
    provenance : dict, optional
        Where the training data came from beyond the stamps themselves, kept
        verbatim (JSON-safe) as the card's ``provenance``: e.g. the human
        labels a fine-tuning used and their hash
        (:func:`astrid.braai.fine_tune`).
    track : bool, optional
        Log the training to MLflow (:mod:`astrid.tracking`): parameters,
        per-epoch metrics, data hashes, versions, the model file, its card and
        calibration. Default: on when MLflow is installed, unless
        ``ASTRID_TRACKING=off``. The card's ``mlflow`` records the run (None
        when untracked). A tracking failure only warns.
    verbose : int, optional
        Keras' progress output (0 silent, 1 progress bar, 2 one line per epoch).

    Returns
    -------
    TrainResult
        ``model``, ``history``, ``model_path``, ``card_path`` and the model
        ``card`` (its entries: :class:`TrainResult`).

    Raises
    ------
    AstridInputError
        Not a triplet dataset, no or non-binary labels, only one class in
        the training part, no coordinate to split by, bad parameters.
    """
    started = time.perf_counter()
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise AstridInputError(
            f"config: expected an astrid.braai.TrainConfig, got {type(config).__name__}"
        )
    validate_triplets(dataset, "dataset")
    labels = labels_of(dataset)
    provenance = _json_provenance(provenance)
    from .. import tracking

    tracking.tracking_enabled(
        track
    )  # an explicit track=True without MLflow fails here, before any work
    data = _split_data(dataset, validation, labels, config)
    weights = class_weights(data.train_labels, config.class_weight)

    tf = tensorflow()
    keras_module().utils.set_random_seed(int(config.seed))
    switched_on = enable_determinism(tf) if config.deterministic else False
    try:
        fitted = _fit(data, model, fine_tune_from, config, weights, name, track, verbose)
    finally:
        if switched_on:
            disable_determinism()
    run = fitted.run
    try:  # a failure from here on (a full disk, ...) closes the MLflow run as FAILED
        network = fitted.network
        network.astrid_norm = fitted.norm
        history = fitted.history
        report = _validation_report(fitted, data, config.calibration)
        network.astrid_calibration = (
            report.calibration.to_dict() if report.calibration is not None else None
        )
        card = _model_card(
            dataset, validation, data, config, fitted, weights, report, provenance, name, started
        )
        model_path = card_file = None
        if out_dir is not None:
            model_path, card_file = _save_with_card(network, card, out_dir)
        _log_training(run, card, report.metrics, model_path, card_file, report.results)
    except BaseException as exc:
        run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return TrainResult(
        model=network, history=history, model_path=model_path, card_path=card_file, card=card
    )
