"""A compact U-Net that maps difference-imaging planes to a per-pixel transient probability.

Design, and why:

- **Inputs** are four planes on the reference grid (:func:`unet_inputs`):
  the aligned science image and the reference, each in units of its own
  background noise, ZOGY's difference ``D`` and ``S_corr``; each is compressed with
  ``arcsinh(x / 2)`` so a 10 σ source and a 10⁴ σ star core both land in a
  range a small network handles, while noise stays linear. Masked and
  non-finite pixels are set to 0 (the noise mean), explicitly. The science
  and reference planes let the network tell a cosmic ray or a star residual
  (visible in one epoch, or at a star of the reference) from a new point
  source, which the difference alone cannot.
- **Targets** (:func:`transient_mask`) are discs of radius FWHM around the
  truth transients of ``real_kinds``; transients too faint to be seen
  (``snr_diff`` below ``ignore_below``) are neither target nor background:
  their discs get zero loss weight, so the network is not taught to call a
  faint real source noise, nor to fire on noise.
- **Network** (:func:`build_unet`): three resolution levels of two 3×3
  convolutions each (16, 32, 64 filters by default), max-pooling down,
  nearest-neighbour upsampling and skip concatenation up, a 1×1 sigmoid
  output; fully convolutional, so it runs on tiles of any size that is a
  multiple of 4 (about 118 k parameters).
- **Training** (:func:`train_unet`) on tiles sampled around transients,
  around artefacts and at random (:func:`sample_tiles`), augmented by the
  eight symmetries of the square (input and target together), with a
  per-pixel weighted cross-entropy (positive pixels are rare), early
  stopping on validation tiles from other fields, seeded and deterministic,
  and the same kind of model card as :func:`astrid.braai.train`.
- **Inference** (:func:`anomaly_map`) pads the image with ``overlap``
  pixels of zeros and runs overlapping tiles (the central part of each is
  kept) in batches. With ``overlap`` at least the network's receptive
  radius and tile origins on the pooling grid, the tiled map equals the
  whole-image map: tiling changes speed and memory, not the result.
- **Regions** (:func:`map_regions`): connected pixels (8-connectivity) of
  the map at or above ``level``, each with centroid (probability-weighted),
  area and peak probability; the region's score is its peak log-odds, which
  unlike the float32 probability does not saturate at 1 for clear sources.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from scipy import ndimage

from .._optional import require
from .._utils import robust_std
from ..errors import AstridFileError, AstridInputError

__all__ = [
    "CARD_FORMAT",
    "CHANNELS",
    "RECEPTIVE_RADIUS",
    "UNetTrainResult",
    "UNetTrainingOptions",
    "anomaly_map",
    "build_unet",
    "load_unet",
    "map_regions",
    "plot_anomaly_map",
    "result_anomaly_map",
    "sample_tiles",
    "train_unet",
    "transient_mask",
    "unet_inputs",
]

#: ``format`` entry of the U-Net's model card.
CARD_FORMAT = "astrid-unet-card/1"
#: The planes of :func:`unet_inputs`, in channel order.
CHANNELS = ("science", "reference", "D", "S_corr")
#: Pixels beyond which an input pixel cannot change an output pixel of the
#: default 3-level network (computed in :func:`receptive_radius`, rounded up
#: to the pooling grid); the default ``overlap`` of :func:`anomaly_map`.
RECEPTIVE_RADIUS = 32
_REAL_KINDS = ("supernova", "variable")
_MIN_SIZE = 16
# Per-model logit heads (see _logit_head), dropped with the model.
_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def keras_module():
    """The keras module (an optional dependency; a clear error when missing)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("keras", "the anomaly U-Net")


def tf_module():
    """The tensorflow module (an optional dependency; a clear error when missing)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "the anomaly U-Net")


# --------------------------------------------------------------------------- #
# network
# --------------------------------------------------------------------------- #


def receptive_radius(levels: int) -> int:
    """Receptive radius (pixels) of :func:`build_unet` with ``levels`` levels."""
    radius, scale = 0, 1
    for _ in range(levels - 1):  # two 3x3 convolutions, then a 2x2 pool
        radius += 2 * scale + scale
        scale *= 2
    radius += 2 * scale  # bottom convolutions
    for _ in range(levels - 1):  # upsample (nearest: up to scale/2 px), two convolutions
        scale //= 2
        radius += scale + 2 * scale
    return radius


def build_unet(channels: int = 4, filters=(16, 32, 64), name: str = "unet_anomaly"):
    """The compact U-Net: per-pixel probability from ``channels`` input planes.

    Parameters
    ----------
    channels : int, optional
        Input planes (4: science, reference, D, S_corr; see :func:`unet_inputs`).
    filters : sequence of int, optional
        Filters of each resolution level, finest first (default 16, 32, 64:
        three levels). Each level has two 3×3 convolutions with ReLU.
    name : str, optional
        Keras model name.

    Returns
    -------
    keras.Model
        Input ``(None, None, channels)`` (height and width multiples of
        ``2 ** (len(filters) - 1)``), output ``(None, None, 1)`` in [0, 1].
    """
    if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or channels < 1:
        raise AstridInputError(f"channels={channels!r} must be a positive integer")
    try:
        filters = tuple(int(f) for f in filters)
    except (TypeError, ValueError):
        raise AstridInputError(
            f"filters={filters!r} must be a sequence of positive integers"
        ) from None
    if len(filters) < 2 or min(filters) < 1:
        raise AstridInputError(
            f"filters={filters!r}: need at least two levels of positive filter counts"
        )
    keras = keras_module()
    layers = keras.layers

    def block(x, n, tag):
        x = layers.Conv2D(n, 3, padding="same", activation="relu", name=f"{tag}_conv1")(x)
        return layers.Conv2D(n, 3, padding="same", activation="relu", name=f"{tag}_conv2")(x)

    inputs = keras.Input(shape=(None, None, int(channels)), name="planes")
    skips = []
    x = inputs
    for level, n in enumerate(filters[:-1]):
        x = block(x, n, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, filters[-1], "bottom")
    for level in reversed(range(len(filters) - 1)):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, filters[level], f"up{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.astrid_levels = len(filters)
    return model


def _levels_of(model) -> int:
    levels = getattr(model, "astrid_levels", None)
    if levels:
        return int(levels)
    return 1 + sum(1 for layer in model.layers if layer.__class__.__name__ == "MaxPooling2D")


# --------------------------------------------------------------------------- #
# inputs and targets
# --------------------------------------------------------------------------- #


def _robust_sigma(data: np.ndarray, good: np.ndarray) -> float:
    values = data[good]
    if values.size > 200_000:  # a regular subsample is plenty for a MAD
        values = values[:: values.size // 200_000]
    if values.size == 0:
        return 1.0
    sigma = robust_std(values)
    return sigma if sigma > 0 and math.isfinite(sigma) else 1.0


def unet_inputs(result) -> np.ndarray:
    """The (ny, nx, 4) float32 input planes of the U-Net for a difference result.

    Parameters
    ----------
    result : DifferenceResult
        Of :func:`astrid.difference` (any object with ``science.data``,
        ``reference.data``, ``D``, ``S_corr``, ``mask`` and optionally
        ``metrics`` with ``sigma_sci``/``sigma_ref``).

    Returns
    -------
    numpy.ndarray, shape (ny, nx, 4), float32
        ``arcsinh(x / 2)`` of science / σ_sci, reference / σ_ref, D / σ_D and
        S_corr (:data:`CHANNELS`). σ_sci, σ_ref are the result's background
        noise (``metrics["sigma_sci"]``, ``["sigma_ref"]``), else — and
        always for D — a robust standard deviation (MAD) of the good
        pixels. D is there as well as S_corr because S_corr divides by the
        source noise: a variable on a bright star or a supernova on a bright
        nucleus is plain in D and faint in S_corr. Pixels in
        ``result.mask`` or not finite in any plane are 0 in every plane.
    """
    for attr in ("science", "reference", "D", "S_corr", "mask"):
        if not hasattr(result, attr):
            raise AstridInputError(
                f"result: has no attribute {attr!r}; expected an astrid.difference() result"
            )
    s_corr = np.asarray(result.S_corr, dtype=np.float32)
    if s_corr.ndim != 2:
        raise AstridInputError(f"result.S_corr: expected a 2-D image, got shape {s_corr.shape}")
    planes = {
        "result.science.data": np.asarray(result.science.data, dtype=np.float32),
        "result.reference.data": np.asarray(result.reference.data, dtype=np.float32),
        "result.D": np.asarray(result.D, dtype=np.float32),
        "result.S_corr": s_corr,
    }
    mask = np.asarray(result.mask, dtype=bool)
    for name, plane in (*planes.items(), ("result.mask", mask)):
        if plane.shape != s_corr.shape:
            raise AstridInputError(
                f"{name}: shape {plane.shape} differs from result.S_corr's {s_corr.shape}"
            )
    bad = mask.copy()
    for plane in planes.values():
        bad |= ~np.isfinite(plane)
    metrics = getattr(result, "metrics", None) or {}
    out = np.empty(s_corr.shape + (len(planes),), dtype=np.float32)
    for k, (plane, key) in enumerate(zip(planes.values(), ("sigma_sci", "sigma_ref", "", None))):
        sigma = 1.0
        if key is not None:
            sigma = float(metrics.get(key, float("nan"))) if key else float("nan")
            if not (math.isfinite(sigma) and sigma > 0):
                sigma = _robust_sigma(plane, ~bad)
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.arcsinh(plane / np.float32(2.0 * sigma))
        out[..., k] = np.where(bad, np.float32(0.0), scaled)
    return out


def truth_xy(truth) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) reference-grid pixels of a truth table (``x_ref``/``y_ref``, else ``x``/``y``)."""
    for xs, ys in (("x_ref", "y_ref"), ("x", "y")):
        if xs in truth.colnames and ys in truth.colnames:
            return np.asarray(truth[xs], float), np.asarray(truth[ys], float)
    raise AstridInputError(f"truth: needs columns x_ref, y_ref (or x, y); has {truth.colnames}")


def truth_kinds(truth) -> np.ndarray:
    """The ``kind`` of each truth row, stripped; ``"known_transient"`` without the column."""
    if "kind" not in truth.colnames:
        return np.full(len(truth), "known_transient")
    return np.array([str(k).strip() for k in truth["kind"]])


def transient_mask(
    truth,
    shape,
    radius: float,
    *,
    real_kinds=_REAL_KINDS,
    snr_min: float | None = None,
    snr_column: str = "snr_diff",
) -> np.ndarray:
    """Discs of ``radius`` pixels around the truth transients, on the reference grid.

    Parameters
    ----------
    truth : astropy.table.Table
        A simulated truth table (``kind``, ``x_ref``, ``y_ref``, S/N columns)
        or a positions table with ``x``, ``y``.
    shape : tuple of int
        (ny, nx).
    radius : float
        Disc radius in pixels (the training target and the footprint IoU
        use the FWHM).
    real_kinds : sequence of str, optional
        Kinds drawn (default supernova and variable); a table without
        ``kind`` is drawn whole.
    snr_min : float, optional
        Only rows with ``snr_column >= snr_min``.
    snr_column : str, optional
        Column of ``snr_min`` (default ``snr_diff``).

    Returns
    -------
    numpy.ndarray of bool, shape ``shape``
        True inside the discs.
    """
    ny, nx = (int(s) for s in shape)
    out = np.zeros((ny, nx), dtype=bool)
    if len(truth) == 0:
        return out
    x, y = truth_xy(truth)
    kinds = truth_kinds(truth)
    keep = np.isin(kinds, list(real_kinds) + ["known_transient"])
    if snr_min is not None:
        if snr_column not in truth.colnames:
            raise AstridInputError(f"truth: no column {snr_column!r} for snr_min={snr_min}")
        keep &= np.nan_to_num(np.asarray(truth[snr_column], float), nan=-np.inf) >= snr_min
    r = float(radius)
    for xi, yi in zip(x[keep], y[keep]):
        x0, x1 = max(int(np.floor(xi - r)), 0), min(int(np.ceil(xi + r)) + 1, nx)
        y0, y1 = max(int(np.floor(yi - r)), 0), min(int(np.ceil(yi + r)) + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= np.hypot(xx - xi, yy - yi) <= r
    return out


def field_fwhm(result) -> float:
    """The broader of the result's science and reference FWHM (px, from ``metrics``); 3 if unknown."""
    metrics = getattr(result, "metrics", None) or {}
    values = [float(metrics.get(k, float("nan"))) for k in ("fwhm_sci", "fwhm_ref")]
    values = [v for v in values if math.isfinite(v) and v > 0]
    return max(values) if values else 3.0


# --------------------------------------------------------------------------- #
# training tiles
# --------------------------------------------------------------------------- #


def _check_tile(tile) -> int:
    if (
        not isinstance(tile, (int, np.integer))
        or isinstance(tile, bool)
        or tile < _MIN_SIZE
        or tile % 4
    ):
        raise AstridInputError(
            f"tile={tile!r} must be an integer >= {_MIN_SIZE} and a multiple of 4"
        )
    return int(tile)


def sample_tiles(
    fields,
    *,
    tile: int = 64,
    n_per_field: int = 96,
    fractions=(0.5, 0.25, 0.25),
    real_kinds=_REAL_KINDS,
    ignore_below: float = 5.0,
    positive_weight: float = 20.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Training tiles and their weighted targets from fields with a truth table.

    Parameters
    ----------
    fields : sequence of (result, truth)
        Difference results (:func:`astrid.difference`) with the truth table
        of the same pair (``SimulatedPair.truth``), or
        :class:`astrid.anomaly.Field` objects.
    tile : int, optional
        Tile side in pixels (a multiple of 4, default 64).
    n_per_field : int, optional
        Tiles drawn per field.
    fractions : (float, float, float), optional
        Shares of tiles containing a transient (``real_kinds`` at
        ``snr_diff >= ignore_below``; its position anywhere in the tile's
        central part), centred near an artefact or other truth entry
        (cosmic rays, hot pixels, asteroids, saturated stars, ...: the hard
        negatives), and at random positions.
    real_kinds : sequence of str, optional
        The target kinds (default supernova and variable).
    ignore_below : float, optional
        Real transients with ``snr_diff`` below this are given zero weight
        (neither target nor background).
    positive_weight : float, optional
        Loss weight of target pixels (background pixels weigh 1).
    seed : int, optional
        Seed of the random draws.

    Returns
    -------
    x : numpy.ndarray, shape (n, tile, tile, 4), float32
        Input tiles (:func:`unet_inputs` planes).
    y : numpy.ndarray, shape (n, tile, tile, 2), float32
        Target (0/1) and per-pixel loss weight.
    """
    tile = _check_tile(tile)
    fractions = np.asarray(fractions, float)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise AstridInputError(
            f"fractions={tuple(fractions.tolist())}: need three non-negative shares"
        )
    fractions = fractions / fractions.sum()
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    half = tile // 2
    for index, item in enumerate(fields):
        result, truth = (item.result, item.truth) if hasattr(item, "result") else item
        planes = unet_inputs(result)
        ny, nx = planes.shape[:2]
        if ny < tile or nx < tile:
            raise AstridInputError(f"fields[{index}]: image {ny}x{nx} is smaller than tile={tile}")
        radius = field_fwhm(result)
        # Truth without an S/N column (a positions table): every entry is a target.
        snr_column = next((c for c in ("snr_diff", "snr_sci") if c in truth.colnames), None)
        target = transient_mask(
            truth,
            (ny, nx),
            radius,
            real_kinds=real_kinds,
            snr_min=ignore_below if snr_column else None,
            snr_column=snr_column or "snr_diff",
        )
        faint = transient_mask(truth, (ny, nx), radius + 2.0, real_kinds=real_kinds) & ~target
        weight = np.where(target, np.float32(positive_weight), np.float32(1.0)).astype(np.float32)
        weight[faint] = 0.0
        weight[np.asarray(result.mask, bool)] = 0.0  # masked pixels hold no information
        tx, ty = truth_xy(truth) if len(truth) else (np.empty(0), np.empty(0))
        kinds = truth_kinds(truth) if len(truth) else np.empty(0, str)
        is_target = np.isin(kinds, list(real_kinds) + ["known_transient"])
        if len(truth) and snr_column:
            is_target &= (
                np.nan_to_num(np.asarray(truth[snr_column], float), nan=-np.inf) >= ignore_below
            )
        targets = np.flatnonzero(is_target)
        others = np.flatnonzero(~np.isin(kinds, list(real_kinds) + ["known_transient"]))
        counts = rng.multinomial(int(n_per_field), fractions)
        centres = []
        for k, pool in ((0, targets), (1, others)):
            if pool.size == 0:
                counts[2] += counts[k]
                continue
            chosen = rng.choice(pool, counts[k])
            jitter = (
                rng.uniform(-half + 8, half - 8, size=(counts[k], 2))
                if k == 0
                else rng.uniform(-4, 4, (counts[k], 2))
            )
            centres += [(tx[c] + j[0], ty[c] + j[1]) for c, j in zip(chosen, jitter)]
        centres += [(rng.uniform(0, nx), rng.uniform(0, ny)) for _ in range(counts[2])]
        for cx, cy in centres:
            x0 = int(np.clip(round(cx) - half, 0, nx - tile))
            y0 = int(np.clip(round(cy) - half, 0, ny - tile))
            xs.append(planes[y0 : y0 + tile, x0 : x0 + tile])
            ys.append(
                np.stack(
                    [
                        target[y0 : y0 + tile, x0 : x0 + tile].astype(np.float32),
                        weight[y0 : y0 + tile, x0 : x0 + tile],
                    ],
                    axis=-1,
                )
            )
    if not xs:
        raise AstridInputError("fields: no fields given")
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #


@dataclass
class UNetTrainResult:
    """What :func:`train_unet` returns.

    Attributes
    ----------
    model : keras.Model
        The trained network (best validation-loss weights with a validation set).
    history : dict of str to list of float
        Per-epoch ``loss`` (and ``val_loss``) and ``epoch_seconds``.
    model_path : pathlib.Path or None
        Saved ``.keras`` file (None without ``out_dir``).
    card_path : pathlib.Path or None
        Saved ``<name>.card.json`` (None without ``out_dir``).
    card : dict
        The model card.
    """

    model: Any
    history: dict[str, list[float]]
    model_path: Path | None = None
    card_path: Path | None = None
    card: dict = field(default_factory=dict)


def _weighted_bce(keras):
    ops = keras.ops

    def loss(y_true, y_pred):
        target, weight = y_true[..., 0:1], y_true[..., 1:2]
        p = ops.clip(y_pred, 1e-6, 1.0 - 1e-6)
        bce = -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))
        return ops.sum(weight * bce) / ops.maximum(ops.sum(weight), 1.0)

    return loss


def _augment(tf, x, y, seed_pair):
    """One random dihedral transform per tile, applied to input and target together."""
    joint = tf.concat([x, y], axis=-1)
    n = tf.shape(joint)[0]
    code = tf.random.stateless_uniform([n], seed=seed_pair, minval=0, maxval=8, dtype=tf.int32)
    flipped = tf.where((code >= 4)[:, None, None, None], tf.reverse(joint, axis=[2]), joint)
    rotations = tf.stack([tf.image.rot90(flipped, k) for k in range(4)], axis=0)
    joint = tf.gather_nd(rotations, tf.stack([code % 4, tf.range(n)], axis=1))
    channels = x.shape[-1]
    return joint[..., :channels], joint[..., channels:]


def _pipeline(x, y, *, batch_size, shuffle, augment, seed):
    tf = tf_module()
    xs, ys = tf.constant(x), tf.constant(y)
    ds = tf.data.Dataset.range(x.shape[0])
    if shuffle:
        ds = ds.shuffle(x.shape[0], seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    @tf.autograph.experimental.do_not_convert
    def gather(index):
        return tf.gather(xs, index), tf.gather(ys, index)

    @tf.autograph.experimental.do_not_convert
    def gather_augmented(index, seed_pair):
        bx, by = gather(index)
        return _augment(tf, bx, by, seed_pair)

    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(gather_augmented)
    else:
        ds = ds.map(gather)
    return ds.prefetch(tf.data.AUTOTUNE)


def _tiles_hash(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(y, dtype="<f4").tobytes())
    return digest.hexdigest()


def _check_tiles(x, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if x.ndim != 4 or y.ndim != 4 or x.shape[:3] != y.shape[:3] or y.shape[-1] != 2:
        raise AstridInputError(
            f"{name}: expected tiles (n, h, w, channels) and targets (n, h, w, 2), got {x.shape} and {y.shape}"
        )
    if x.shape[0] == 0:
        raise AstridInputError(f"{name}: no tiles")
    if x.shape[1] % 4 or x.shape[2] % 4 or min(x.shape[1:3]) < _MIN_SIZE:
        raise AstridInputError(
            f"{name}: tiles of {x.shape[1]}x{x.shape[2]} px; need >= {_MIN_SIZE} and multiples of 4"
        )
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise AstridInputError(f"{name}: tiles or targets hold NaN or infinite values")
    return x, y


@dataclass(frozen=True)
class UNetTrainingOptions:
    """How :func:`train_unet` trains.

    Attributes
    ----------
    filters : sequence of int
        Filters per level for a new network.
    epochs : int
        Training epochs (integer >= 1, checked when the options are made).
    batch_size : int
        Tiles per batch (integer >= 1, checked when the options are made).
    learning_rate : float
        Learning rate of Adam on the weighted binary cross-entropy (sum of
        weight × BCE over the batch's pixels / sum of weights).
    augment : bool
        Random flips and 90° rotations of each tile (input and target together).
    patience : int or None
        Early-stopping patience on the validation loss.
    seed : int
        Seeds the initial weights, shuffling and augmentation.
    deterministic : bool
        TensorFlow's deterministic ops while training (as
        :func:`astrid.braai.train`): the same seed gives the same weights on
        the same machine.
    """

    filters: tuple = (16, 32, 64)
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-3
    augment: bool = True
    patience: int | None = 4
    seed: int = 0
    deterministic: bool = True

    def __post_init__(self):
        for key, low in (("epochs", 1), ("batch_size", 1)):
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise AstridInputError(f"{key}={value!r} must be an integer >= {low}")
        object.__setattr__(self, "filters", tuple(self.filters))

    def run_parameters(self) -> dict:
        """The options as the tracking run's parameters."""
        return {
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "learning_rate": float(self.learning_rate),
            "augment": bool(self.augment),
            "patience": self.patience,
            "seed": int(self.seed),
            "filters": list(self.filters),
        }

    def card_parameters(self) -> dict:
        """The options as the model card's ``parameters``."""
        return {
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "optimizer": "Adam",
            "learning_rate": float(self.learning_rate),
            "loss": "pixel-weighted binary cross-entropy",
            "augment": "dihedral (flips and 90-degree rotations)" if self.augment else None,
            "patience": None if self.patience is None else int(self.patience),
            "seed": int(self.seed),
            "deterministic": bool(self.deterministic),
        }


def _tile_pairs(tiles, validation):
    """(x, y, xv, yv): the checked training tiles and the validation tiles (None when not given)."""
    if not (isinstance(tiles, (tuple, list)) and len(tiles) == 2):
        raise AstridInputError("tiles: expected a pair (x, y) as returned by sample_tiles")
    x, y = _check_tiles(*tiles, "tiles")
    xv = yv = None
    if validation is not None:
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise AstridInputError("validation: expected a pair (x, y) as returned by sample_tiles")
        xv, yv = _check_tiles(*validation, "validation")
    return x, y, xv, yv


def _fit_network(network, data, options: UNetTrainingOptions, run, verbose):
    """Compile and fit ``network`` on ``data`` (x, y, xv, yv); (keras History, epoch seconds)."""
    from ..braai.runtime import EpochTimer

    keras = keras_module()
    x, y, xv, yv = data
    seed = int(options.seed)
    network.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(options.learning_rate)),
        loss=_weighted_bce(keras),
    )
    train_data = _pipeline(
        x, y, batch_size=int(options.batch_size), shuffle=True, augment=options.augment, seed=seed
    )
    validation_data = None
    timer = EpochTimer()
    callbacks = [timer]
    if run.active:
        callbacks.append(run.epoch_callback())
    if xv is not None:
        validation_data = _pipeline(xv, yv, batch_size=64, shuffle=False, augment=False, seed=seed)
        patience = options.patience
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=int(patience) if patience is not None else int(options.epochs),
                restore_best_weights=True,
            )
        )
    fit = network.fit(
        train_data,
        validation_data=validation_data,
        epochs=int(options.epochs),
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )
    return fit, timer.seconds


def _training_card(network, data, options: UNetTrainingOptions, fitted, about) -> dict:
    """The model card of a trained U-Net (without the file entries).

    ``fitted``: (history, epoch seconds, seconds since the start); ``about``: (name, source, new),
    ``new`` whether the network was built here (its filters are then known).
    """
    from ..braai.runtime import training_versions

    x, y, xv, yv = data
    history, seconds, elapsed = fitted
    name, source, new = about
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if "val_loss" in history else len(seconds)
    # Throughput of the training steps alone: the validation pass is part of each epoch's time.
    per_second = [x.shape[0] / s for s in seconds if s > 0]
    levels = _levels_of(network)
    return {
        "format": CARD_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "name": name,
            "architecture": "unet",
            "filters": [int(f) for f in options.filters] if new else None,
            "levels": levels,
            "n_parameters": int(network.count_params()),
            "channels": list(CHANNELS) if x.shape[-1] == len(CHANNELS) else int(x.shape[-1]),
            "receptive_radius_px": receptive_radius(levels),
        },
        "data": {
            "sha256": _tiles_hash(x, y),
            "sha256_validation": _tiles_hash(xv, yv) if xv is not None else None,
            "n_train": int(x.shape[0]),
            "n_validation": int(xv.shape[0]) if xv is not None else 0,
            "tile": [int(x.shape[1]), int(x.shape[2])],
            "positive_pixel_fraction": float(y[..., 0].mean()),
            "source": str(source),
        },
        "parameters": options.card_parameters(),
        "training": {
            "epochs_run": len(seconds),
            "best_epoch": best_epoch,
            "stopped_early": len(seconds) < int(options.epochs),
            "seconds": round(elapsed, 3),
            "tiles_per_second": round(float(np.median(per_second)), 1) if per_second else None,
            "pixels_per_second": round(float(np.median(per_second)) * x.shape[1] * x.shape[2], 0)
            if per_second
            else None,
        },
        "history": history,
        "versions": training_versions(),
    }


def _save_trained(network, card, out_dir, name, run):
    """Save ``<name>.keras`` and its card (atomically) under ``out_dir`` and log both to ``run``;
    (model path, card path)."""
    from ..braai.runtime import save_model
    from ..io import atomic_write

    out_dir = Path(out_dir)
    model_path = out_dir / f"{name}.keras"
    card_path = out_dir / f"{name}.card.json"
    save_model(network, model_path)
    card["model_file"] = model_path.name
    card["model_sha256"] = hashlib.sha256(model_path.read_bytes()).hexdigest()
    text = json.dumps(card, indent=2) + "\n"
    atomic_write(card_path, lambda fh: fh.write(text), mode="w")
    run.log_artifact(model_path, "model")
    run.log_artifact(card_path, "model")
    return model_path, card_path


def _start_training_run(name: str, options: UNetTrainingOptions, data, track):
    """The tracking run of a training: the options, the tile counts and the tiles' hash."""
    from .. import tracking

    x, y, xv, _ = data
    return tracking.start_run(
        name,
        {
            **options.run_parameters(),
            "n_train": int(x.shape[0]),
            "n_validation": int(xv.shape[0]) if xv is not None else 0,
            "tile": list(x.shape[1:3]),
        },
        tags={"astrid.kind": "unet-train", "data_sha256": _tiles_hash(x, y)},
        track=track,
    )


def train_unet(
    tiles,
    options: UNetTrainingOptions | None = None,
    *,
    validation=None,
    model=None,
    out_dir: str | os.PathLike | None = None,
    name: str = "unet_anomaly",
    source: str = "",
    track: bool | None = None,
    verbose: int = 0,
) -> UNetTrainResult:
    """Train the U-Net on tiles from :func:`sample_tiles`, with a model card.

    Parameters
    ----------
    tiles : (x, y)
        Input tiles ``(n, h, w, channels)`` and targets ``(n, h, w, 2)``
        (target, per-pixel loss weight), e.g. from :func:`sample_tiles`.
    options : UNetTrainingOptions, optional
        Filters of a new network, epochs, batch size, learning rate,
        augmentation, early-stopping patience, seed and determinism; default
        ``UNetTrainingOptions()``.
    validation : (x, y), optional
        Validation tiles from other fields: early stopping on their loss,
        best weights restored.
    model : keras.Model, optional
        A network to train in place; default :func:`build_unet` with
        ``options.filters``.
    out_dir : path-like, optional
        Save ``<name>.keras`` and ``<name>.card.json`` (atomically).
    name : str, optional
        Model and file name.
    source : str, optional
        Where the tiles came from (recorded in the card).
    track : bool, optional
        Log the training to MLflow (:mod:`astrid.tracking`: parameters,
        per-epoch losses, the tiles' hash, the model and its card); default
        on when MLflow is installed, unless ``ASTRID_TRACKING=off``. The
        card's ``mlflow`` names the run. A tracking failure only warns.
    verbose : int, optional
        Keras' progress output.

    Returns
    -------
    UNetTrainResult
        ``card`` has ``format`` (``astrid-unet-card/1``), ``created``,
        ``model`` (name, filters, levels, parameters, channels, receptive
        radius), ``data`` (``sha256`` of the training tiles and targets,
        ``sha256_validation``, tile counts and size, positive pixel
        fraction, ``source``), ``parameters`` (epochs, batch, optimiser,
        learning rate, loss, augmentation, patience, seed, determinism),
        ``training`` (epochs run, best epoch, seconds, tiles and pixels per
        second), ``history`` and ``versions``.
    """
    started = time.perf_counter()
    options = UNetTrainingOptions() if options is None else options
    if not isinstance(options, UNetTrainingOptions):
        raise AstridInputError(
            f"options: expected a UNetTrainingOptions, got {type(options).__name__}"
        )
    data = _tile_pairs(tiles, validation)
    x = data[0]
    from .. import tracking
    from ..braai.runtime import disable_determinism, enable_determinism

    # An explicit track=True without MLflow fails here, before any work.
    tracking.tracking_enabled(track)
    tf = tf_module()
    keras_module().utils.set_random_seed(int(options.seed))
    run = _start_training_run(name, options, data, track)
    switched_on = enable_determinism(tf) if options.deterministic else False
    try:
        network = (
            model if model is not None else build_unet(x.shape[-1], options.filters, name=name)
        )
        if int(network.input_shape[-1]) != x.shape[-1]:
            raise AstridInputError(
                f"tiles: {x.shape[-1]} channels, the model takes {network.input_shape[-1]}"
            )
        fit, seconds = _fit_network(network, data, options, run, verbose)
    except BaseException as exc:
        run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if switched_on:
            disable_determinism()
    network.astrid_levels = _levels_of(network)
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    history["epoch_seconds"] = [float(s) for s in seconds]
    card = _training_card(
        network,
        data,
        options,
        (history, seconds, time.perf_counter() - started),
        (name, source, model is None),
    )
    card["mlflow"] = run.info()
    model_path = card_path = None
    if out_dir is not None:
        model_path, card_path = _save_trained(network, card, out_dir, name, run)
    else:
        run.log_dict(card, "model/card.json")
    run.log_metrics(
        {"best_epoch": card["training"]["best_epoch"], "seconds": card["training"]["seconds"]}
    )
    run.end()
    return UNetTrainResult(
        model=network, history=history, model_path=model_path, card_path=card_path, card=card
    )


def load_unet(path: str | os.PathLike):
    """Load a U-Net saved by :func:`train_unet` (``.keras``).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.keras`` file.

    Returns
    -------
    keras.Model
        The model, with its number of pooling levels as ``astrid_levels``.
    """
    path = Path(path)
    if not path.exists():
        raise AstridFileError(f"{path}: model file does not exist")
    if path.suffix != ".keras":
        raise AstridInputError(f"{path}: expected a .keras file saved by astrid.anomaly.train_unet")
    from ..export import load_keras_archive

    model = load_keras_archive(path)
    model.astrid_levels = _levels_of(model)
    return model


# --------------------------------------------------------------------------- #
# inference
# --------------------------------------------------------------------------- #


def _check_image(image, model) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise AstridInputError(f"image: expected (ny, nx, channels), got shape {image.shape}")
    channels = int(model.input_shape[-1])
    if image.shape[-1] != channels:
        raise AstridInputError(
            f"image: {image.shape[-1]} channels, but the model takes {channels} "
            f"({', '.join(CHANNELS) if channels == len(CHANNELS) else 'see its card'}); use unet_inputs(result)"
        )
    if min(image.shape[:2]) < _MIN_SIZE:
        raise AstridInputError(
            f"image: {image.shape[0]}x{image.shape[1]} px is too small; need at least {_MIN_SIZE} px a side"
        )
    if not np.issubdtype(image.dtype, np.number):
        raise AstridInputError(f"image: expected numbers, got dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        n = int((~np.isfinite(image)).sum())
        raise AstridInputError(
            f"image: {n} NaN or infinite values; unet_inputs(result) sets masked and non-finite pixels to 0"
        )
    return image


def _logit_head(model):
    """(features model, kernel, bias) when the output is a 1x1 sigmoid convolution, else None.

    The log-odds are then computed from the last features in float32, where
    they do not saturate: a sigmoid output rounds to exactly 1 in float32
    above a log-odds of about 17, and the clearest sources would all tie.
    """
    if model in _HEADS:
        return _HEADS[model]
    keras = keras_module()
    last = model.layers[-1]
    head = None
    config = last.get_config() if hasattr(last, "get_config") else {}
    if (
        last.__class__.__name__ == "Conv2D"
        and tuple(config.get("kernel_size", ())) == (1, 1)
        and config.get("activation") == "sigmoid"
        and config.get("use_bias", True)
    ):
        features = keras.Model(model.input, model.layers[-2].output)
        kernel, bias = (np.asarray(w, dtype=np.float32) for w in last.get_weights())
        head = (features, kernel[0, 0], bias)
    _HEADS[model] = head
    return head


def _forward(model, batch: np.ndarray, output: str) -> np.ndarray:
    head = _logit_head(model) if output == "logit" else None
    if head is None:
        p = np.asarray(model(batch, training=False), dtype=np.float32)[..., 0]
        if output == "probability":
            return p
        with np.errstate(divide="ignore"):
            return np.log(p) - np.log1p(-p)
    features, kernel, bias = head
    return (np.asarray(features(batch, training=False), dtype=np.float32) @ kernel)[..., 0] + bias[
        0
    ]


def anomaly_map(
    model,
    image,
    *,
    tile: int | None = 512,
    overlap: int = RECEPTIVE_RADIUS,
    batch_size: int = 4,
    output: str = "probability",
) -> np.ndarray:
    """Per-pixel anomaly probability (or log-odds) of a whole image, by overlapping tiles in batches.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_unet`, :func:`train_unet` or :func:`load_unet`.
    image : numpy.ndarray, shape (ny, nx, channels)
        Input planes (:func:`unet_inputs`); finite values only.
    tile : int or None, optional
        Side of the kept centre of each tile (a multiple of 4; default
        512); None runs the whole (padded) image at once.
    overlap : int, optional
        Zero padding around the image and context around each tile
        (default :data:`RECEPTIVE_RADIUS`, rounded up to a multiple of
        the pooling grid). At or above the receptive radius the tiled map
        equals the whole-image map.
    batch_size : int, optional
        Tiles per forward pass.
    output : {"probability", "logit"}, optional
        The probability, or its log-odds ``log(p / (1 - p))``, computed
        before the sigmoid so that it does not saturate (scores of regions).

    Returns
    -------
    numpy.ndarray, shape (ny, nx), float32
        The probability or log-odds of each pixel.

    Raises
    ------
    AstridInputError
        Wrong number of channels, NaN or infinite pixels, an image smaller
        than 16 px a side, bad ``tile``/``overlap``/``batch_size``.
    """
    image = _check_image(image, model)
    if output not in ("probability", "logit"):
        raise AstridInputError(f"output={output!r}: use 'probability' or 'logit'")
    grid = 2 ** (_levels_of(model) - 1)
    if tile is not None:
        tile = _check_tile(tile)
        if tile % grid:
            raise AstridInputError(
                f"tile={tile} must be a multiple of {grid} (the network's pooling grid)"
            )
    if not isinstance(overlap, (int, np.integer)) or isinstance(overlap, bool) or overlap < 0:
        raise AstridInputError(f"overlap={overlap!r} must be a non-negative integer")
    if (
        not isinstance(batch_size, (int, np.integer))
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise AstridInputError(f"batch_size={batch_size!r} must be a positive integer")
    margin = -(-int(overlap) // grid) * grid
    ny, nx, channels = image.shape
    if tile is None:  # one tile: the image rounded up to the pooling grid
        step_y, step_x = -(-ny // grid) * grid, -(-nx // grid) * grid
        ty = tx = 1
    else:
        step_y = step_x = tile
        ty, tx = -(-ny // tile), -(-nx // tile)
    padded = np.zeros(
        (ty * step_y + 2 * margin, tx * step_x + 2 * margin, channels), dtype=np.float32
    )
    padded[margin : margin + ny, margin : margin + nx] = image
    out = np.empty((ty * step_y, tx * step_x), dtype=np.float32)
    origins = [(i * step_y, j * step_x) for i in range(ty) for j in range(tx)]
    for start in range(0, len(origins), int(batch_size)):
        chunk = origins[start : start + int(batch_size)]
        batch = np.stack(
            [
                padded[y0 : y0 + step_y + 2 * margin, x0 : x0 + step_x + 2 * margin]
                for y0, x0 in chunk
            ]
        )
        probs = _forward(model, batch, output)
        for (y0, x0), p in zip(chunk, probs):
            out[y0 : y0 + step_y, x0 : x0 + step_x] = p[
                margin : margin + step_y, margin : margin + step_x
            ]
    return out[:ny, :nx]


def result_anomaly_map(model, result, **kwargs) -> np.ndarray:
    """:func:`anomaly_map` of a difference result's :func:`unet_inputs`, no anomaly where ``result.mask`` is set.

    Masked pixels carry no data, so no anomaly is claimed there (as
    :func:`astrid.triplets.detect` finds no peak there): probability 0, or
    log-odds −inf with ``output="logit"``.

    Parameters
    ----------
    model : keras.Model
        As :func:`anomaly_map`.
    result : DifferenceResult
        The difference result (its planes and ``mask``).
    **kwargs
        Passed to :func:`anomaly_map` (``tile``, ``overlap``,
        ``batch_size``, ``output``).

    Returns
    -------
    numpy.ndarray, shape (ny, nx), float32
        The probability or log-odds of each pixel.
    """
    values = anomaly_map(model, unet_inputs(result), **kwargs)
    values[np.asarray(result.mask, bool)] = -np.inf if kwargs.get("output") == "logit" else 0.0
    return values


def map_regions(
    probability, *, level: float = 0.5, min_area: int = 1, logit=None, return_labels: bool = False
):
    """Candidate regions of an anomaly map: connected pixels at or above ``level``.

    Parameters
    ----------
    probability : numpy.ndarray, shape (ny, nx)
        An anomaly map (:func:`anomaly_map`); NaN pixels count as 0.
    level : float, optional
        Segmentation level (default 0.5). The decision threshold is applied
        afterwards to each region's ``peak``, so the footprint does not
        shrink or grow with the operating point.
    min_area : int, optional
        Smallest region kept (pixels).
    logit : numpy.ndarray, optional
        The map's log-odds (``anomaly_map(..., output="logit")``); then each
        region's ``score`` is its highest log-odds (column ``peak_logit``),
        which keeps ranking the clearest sources where their probability
        rounds to 1.
    return_labels : bool, optional
        Also return the label image (0 background, ``id`` per region).

    Returns
    -------
    astropy.table.Table
        Strongest first: ``id`` (the value in the label image), ``x``,
        ``y`` (probability-weighted centroid, 0-based pixels), ``area``
        (pixels), ``peak`` (highest probability), ``mean``, ``x_peak``,
        ``y_peak``, ``score`` (= ``peak``, or ``peak_logit`` with ``logit``).
    numpy.ndarray of int32, optional
        The label image, with ``return_labels``.
    """
    probability = np.asarray(probability, dtype=np.float32)
    if probability.ndim != 2:
        raise AstridInputError(f"probability: expected a 2-D map, got shape {probability.shape}")
    if not (0.0 < float(level) <= 1.0):
        raise AstridInputError(f"level={level!r} must be in (0, 1]")
    p = np.nan_to_num(probability, nan=0.0)
    if logit is not None:
        logit = np.asarray(logit, dtype=np.float64)
        if logit.shape != p.shape:
            raise AstridInputError(
                f"logit: shape {logit.shape} differs from probability's {p.shape}"
            )
    labels, n = ndimage.label(p >= level, structure=np.ones((3, 3), bool))
    labels = labels.astype(np.int32)
    index = np.arange(1, n + 1)
    if n:
        area = ndimage.sum_labels(np.ones_like(p), labels, index)
        total = ndimage.sum_labels(p, labels, index)
        yy, xx = np.indices(p.shape, dtype=np.float64)
        cx = ndimage.sum_labels(p * xx, labels, index) / total
        cy = ndimage.sum_labels(p * yy, labels, index) / total
        peak = ndimage.maximum(p, labels, index)
        peak_logit = ndimage.maximum(logit, labels, index) if logit is not None else None
        where = ndimage.maximum_position(p, labels, index)
        keep = area >= int(min_area)
        if not keep.all():
            drop = index[~keep]
            labels[np.isin(labels, drop)] = 0
    else:
        area = total = cx = cy = peak = peak_logit = np.empty(0)
        where, keep = [], np.empty(0, bool)
    peak = np.asarray(peak, float)
    ranking = peak if logit is None else np.asarray(peak_logit, float)
    order = np.argsort(-ranking[keep], kind="stable")
    rows_index = index[keep][order]
    table = Table()
    table["id"] = rows_index.astype(np.int32)
    table["x"] = np.asarray(cx, float)[keep][order]
    table["y"] = np.asarray(cy, float)[keep][order]
    table["area"] = np.asarray(area, float)[keep][order].astype(np.int64)
    table["peak"] = peak[keep][order]
    table["mean"] = (
        (np.asarray(total, float) / np.maximum(np.asarray(area, float), 1))[keep][order]
        if n
        else np.empty(0)
    )
    if logit is not None:
        table["peak_logit"] = np.asarray(peak_logit, float)[keep][order]
    table["score"] = table["peak_logit"] if logit is not None else table["peak"]
    positions = np.asarray(where, float).reshape(-1, 2)[keep][order] if n else np.empty((0, 2))
    table["x_peak"] = positions[:, 1]
    table["y_peak"] = positions[:, 0]
    for col in ("x", "y", "x_peak", "y_peak"):
        table[col].unit = "pix"
    table.meta.update({"level": float(level), "shape": list(p.shape), "method": "unet"})
    return (table, labels) if return_labels else table


def _cutout_box(S: np.ndarray, regions, center, size: int) -> tuple[int, int, int, int]:
    """``(x0, x1, y0, y1)`` of the cut-out: around ``center``, the strongest region or the middle."""
    if center is None:
        if regions is not None and len(regions):
            center = (float(regions["x"][0]), float(regions["y"][0]))
        else:
            center = ((S.shape[1] - 1) / 2, (S.shape[0] - 1) / 2)
    half = int(size) // 2
    cx, cy = int(round(float(center[0]))), int(round(float(center[1])))
    x0, x1 = max(cx - half, 0), min(cx + half, S.shape[1])
    y0, y1 = max(cy - half, 0), min(cy + half, S.shape[0])
    return x0, x1, y0, y1


def _inside(x, y, box) -> np.ndarray:
    x0, x1, y0, y1 = box
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def _mark_truth(axes, truth, box) -> None:
    """Squares on the supernovae and variables of ``truth`` in the cut-out, crosses on the rest."""
    if truth is not None and len(truth):
        tx, ty = truth_xy(truth)
        real = np.isin(truth_kinds(truth), _REAL_KINDS)
        for sel, marker, label in (
            (real, "s", "truth: supernova / variable"),
            (~real, "x", "truth: other"),
        ):
            sel = sel & _inside(tx, ty, box)
            if sel.any():
                for ax in axes:
                    if marker == "s":
                        ax.scatter(
                            tx[sel],
                            ty[sel],
                            s=160,
                            marker="s",
                            facecolors="none",
                            edgecolors="c",
                            linewidths=1.0,
                            label=label if ax is axes[1] else None,
                        )
                    else:
                        ax.scatter(
                            tx[sel],
                            ty[sel],
                            s=60,
                            marker="x",
                            color="c",
                            linewidths=1.0,
                            label=label if ax is axes[1] else None,
                        )


def _mark_regions(axes, plt, regions, threshold, box) -> None:
    """Circles on the regions in the cut-out: solid at or above ``threshold``, dotted below."""
    if regions is not None and len(regions):
        rx, ry = np.asarray(regions["x"], float), np.asarray(regions["y"], float)
        score = np.asarray(regions["score"], float)
        chosen = score >= threshold if threshold is not None else np.ones(rx.size, bool)
        for sel, style_, label in (
            (chosen, "-", "region (selected)"),
            (~chosen, ":", "region (below threshold)"),
        ):
            sel = sel & _inside(rx, ry, box)
            for k, i in enumerate(np.flatnonzero(sel)):
                for ax in axes:
                    ax.add_patch(
                        plt.Circle(
                            (rx[i], ry[i]),
                            6.0,
                            fill=False,
                            color="lime",
                            ls=style_,
                            lw=1.2,
                            label=label if (ax is axes[1] and k == 0) else None,
                        )
                    )


def plot_anomaly_map(
    result,
    probability,
    *,
    regions=None,
    truth=None,
    threshold: float | None = None,
    center=None,
    size: int = 96,
    limit: float = 5.0,
    title: str | None = None,
):
    """A cut-out of ``S_corr`` beside the U-Net's anomaly map, with its regions and the truth.

    Parameters
    ----------
    result : DifferenceResult
        The ZOGY result the map was computed from (``S_corr``, ``mask``).
    probability : numpy.ndarray, shape (ny, nx)
        :func:`result_anomaly_map` of ``result``.
    regions : astropy.table.Table, optional
        :func:`map_regions` of the map: centroids circled (solid when
        ``score >= threshold``, dotted below it), footprints outlined at
        the regions' ``level`` (white contour).
    truth : astropy.table.Table, optional
        Truth table: supernovae and variables marked with squares, other
        kinds (artefacts, asteroids) with crosses.
    threshold : float, optional
        The regions' decision threshold (their ``score``); None: all solid.
    center : (x, y), optional
        Centre of the cut-out (0-based pixels); default the strongest
        region's centroid, or the image centre without regions.
    size : int, optional
        Side of the cut-out in pixels (96).
    limit : float, optional
        ``S_corr`` colour range ±limit σ (5).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    from ..figures import pyplot, style

    S = np.asarray(getattr(result, "S_corr", None) if result is not None else None, dtype=float)
    p = np.asarray(probability, dtype=float)
    if S.ndim != 2:
        raise AstridInputError("result: expected a DifferenceResult with a 2-D S_corr")
    if p.shape != S.shape:
        raise AstridInputError(f"probability: shape {p.shape} differs from the result's {S.shape}")
    if int(size) < 8:
        raise AstridInputError(f"size={size!r}: at least 8 pixels")
    x0, x1, y0, y1 = box = _cutout_box(S, regions, center, size)
    mask = getattr(result, "mask", None)
    shown_s = S[y0:y1, x0:x1].copy()
    if mask is not None:
        shown_s[np.asarray(mask, bool)[y0:y1, x0:x1]] = np.nan
    extent = (x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5)
    plt = pyplot()
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.2), sharex=True, sharey=True)
        im0 = axes[0].imshow(
            shown_s, cmap="RdBu_r", vmin=-limit, vmax=limit, extent=extent, origin="upper"
        )
        axes[0].set_title(r"ZOGY $S_{corr}$ ($\sigma$)")
        fig.colorbar(im0, ax=axes[0], fraction=0.046, pad=0.04)
        im1 = axes[1].imshow(
            p[y0:y1, x0:x1], cmap="magma", vmin=0.0, vmax=1.0, extent=extent, origin="upper"
        )
        axes[1].set_title("U-Net anomaly probability")
        fig.colorbar(im1, ax=axes[1], fraction=0.046, pad=0.04)
        level = regions.meta.get("level") if regions is not None else None
        if (
            level is not None
            and (p[y0:y1, x0:x1] >= level).any()
            and (p[y0:y1, x0:x1] < level).any()
        ):
            yy, xx = np.mgrid[y0:y1, x0:x1]
            axes[1].contour(
                xx, yy, p[y0:y1, x0:x1], levels=[float(level)], colors="w", linewidths=0.6
            )

        _mark_truth(axes, truth, box)
        _mark_regions(axes, plt, regions, threshold, box)
        handles, labels = axes[1].get_legend_handles_labels()
        if handles:
            axes[1].legend(handles, labels, loc="lower right", fontsize=7, framealpha=0.8)
        for ax in axes:
            ax.set_xlim(x0 - 0.5, x1 - 0.5)
            ax.set_ylim(y1 - 0.5, y0 - 0.5)
            ax.set_xlabel("x (pix)")
        axes[0].set_ylabel("y (pix)")
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
    return fig
