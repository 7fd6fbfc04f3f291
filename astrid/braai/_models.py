"""braai network architectures in Keras 3: :func:`vgg6`, :func:`three_block`.

Keras (and with it TensorFlow) is imported only when a model is built, so
``import astrid`` and ``import astrid.braai`` stay light.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .._optional import require
from ..errors import AstridInputError
from ..schema import CHANNELS, STAMP_SIZE

__all__ = ["vgg6", "three_block", "build_model", "MODELS", "keras_module"]

_DEFAULT_SHAPE = (STAMP_SIZE, STAMP_SIZE, len(CHANNELS))


def keras_module():
    """Import Keras quietly, or raise an ImportError naming the extra to install.

    TensorFlow's C++ INFO and WARNING logs are silenced (``TF_CPP_MIN_LOG_LEVEL=2``)
    unless the user has set that variable.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("keras", "the braai classifier")


def _check_shape(input_shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise AstridInputError(
            f"input_shape={input_shape!r} is not a (height, width, channels) tuple"
        ) from None
    if len(shape) != 3 or min(shape) < 1:
        raise AstridInputError(
            f"input_shape={input_shape!r} is not a (height, width, channels) tuple"
        )
    return shape


def vgg6(input_shape: tuple[int, int, int] = _DEFAULT_SHAPE):
    """The VGG6 network of braai (Duev et al. 2019), layer for layer.

    conv1, conv2 (16 filters 3×3, ReLU) → max-pool 2 → dropout 0.25 →
    conv3, conv4 (32 filters 3×3, ReLU) → max-pool 4 → dropout 0.25 →
    flatten → fc_1 (256, ReLU) → dropout 0.5 → fc_out (1, sigmoid).
    Convolutions are unpadded (``"valid"``), as in ZTF's published
    architecture JSON; layer names match it so published weights load by
    name. For 63×63×3 input the network has 312,081 parameters.

    Parameters
    ----------
    input_shape : tuple of int, optional
        ``(height, width, channels)``, default ``(63, 63, 3)``.

    Returns
    -------
    keras.Sequential
        Uncompiled model named ``"VGG6"``; output is the real-bogus score in [0, 1].
    """
    keras = keras_module()
    layers = keras.layers
    shape = _check_shape(input_shape)
    return keras.Sequential(
        [
            keras.Input(shape=shape, name="triplet"),
            layers.Conv2D(16, (3, 3), activation="relu", padding="valid", name="conv1"),
            layers.Conv2D(16, (3, 3), activation="relu", padding="valid", name="conv2"),
            layers.MaxPooling2D(pool_size=(2, 2), name="max_pooling2d"),
            layers.Dropout(0.25, name="dropout"),
            layers.Conv2D(32, (3, 3), activation="relu", padding="valid", name="conv3"),
            layers.Conv2D(32, (3, 3), activation="relu", padding="valid", name="conv4"),
            layers.MaxPooling2D(pool_size=(4, 4), name="max_pooling2d_1"),
            layers.Dropout(0.25, name="dropout_1"),
            layers.Flatten(name="flatten"),
            layers.Dense(256, activation="relu", name="fc_1"),
            layers.Dropout(0.5, name="dropout_2"),
            layers.Dense(1, activation="sigmoid", name="fc_out"),
        ],
        name="VGG6",
    )


def three_block(input_shape: tuple[int, int, int] = _DEFAULT_SHAPE):
    """The project notes' three-block CNN, a wider variant of braai.

    conv1 (32) → max-pool 2 → conv2 (64) → max-pool 2 → conv3 (128) →
    max-pool 2 → flatten → fc_1 (256, ReLU) → dropout 0.5 → fc_out (1,
    sigmoid). Convolutions are 3×3, ReLU, unpadded like braai's.

    Parameters
    ----------
    input_shape : tuple of int, optional
        ``(height, width, channels)``, default ``(63, 63, 3)``.

    Returns
    -------
    keras.Sequential
        Uncompiled model named ``"ThreeBlock"``.
    """
    keras = keras_module()
    layers = keras.layers
    shape = _check_shape(input_shape)
    return keras.Sequential(
        [
            keras.Input(shape=shape, name="triplet"),
            layers.Conv2D(32, (3, 3), activation="relu", padding="valid", name="conv1"),
            layers.MaxPooling2D(pool_size=(2, 2), name="pool1"),
            layers.Conv2D(64, (3, 3), activation="relu", padding="valid", name="conv2"),
            layers.MaxPooling2D(pool_size=(2, 2), name="pool2"),
            layers.Conv2D(128, (3, 3), activation="relu", padding="valid", name="conv3"),
            layers.MaxPooling2D(pool_size=(2, 2), name="pool3"),
            layers.Flatten(name="flatten"),
            layers.Dense(256, activation="relu", name="fc_1"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(1, activation="sigmoid", name="fc_out"),
        ],
        name="ThreeBlock",
    )


#: Architectures by name, for :func:`build_model`.
MODELS: dict[str, Callable[..., Any]] = {"vgg6": vgg6, "three_block": three_block}


def build_model(name: str, input_shape: tuple[int, int, int] = _DEFAULT_SHAPE):
    """Build an architecture by name: ``"vgg6"`` or ``"three_block"``.

    Parameters
    ----------
    name : {"vgg6", "three_block"}
        Architecture, case-insensitive; ``-`` is read as ``_``.
    input_shape : tuple of int, optional
        ``(height, width, channels)``, default ``(63, 63, 3)``.

    Returns
    -------
    keras.Sequential
        Uncompiled model from :func:`vgg6` or :func:`three_block`.

    Raises
    ------
    AstridInputError
        Unknown name.
    """
    key = str(name).lower().replace("-", "_")
    if key not in MODELS:
        raise AstridInputError(f"unknown braai model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[key](input_shape)
