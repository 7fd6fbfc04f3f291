"""Keras training plumbing shared by the braai trainer and other Keras trainers (astrid.anomaly).

Internal: not part of :mod:`astrid.braai`'s ``__all__``.

- :class:`EpochTimer`: a Keras callback recording each epoch's wall time;
- :func:`enable_determinism` / :func:`disable_determinism`: TensorFlow's
  deterministic ops on for one training, and off again only when that
  training turned them on.
"""

from __future__ import annotations

import time

from ._models import keras_module

__all__ = ["EpochTimer", "enable_determinism", "disable_determinism"]


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
