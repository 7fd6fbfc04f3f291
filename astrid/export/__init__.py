"""Export real/bogus models to TFLite and check them for the Edge TPU.

* :func:`to_tflite` — Keras model → ``.tflite`` (int8 calibrated on real
  triplets, float16 or float32; static batch 1 for the Edge TPU or a dynamic
  batch for CPUs) plus a ``.tflite.json`` sidecar that says how to feed it.
* :func:`edgetpu_report` — static checks of what the Edge TPU compiler
  requires (int8 tensors, supported operators, static shapes, batch 1), and
  the compiler's own log where ``edgetpu_compiler`` is installed.

Scoring with any of these models is :func:`astrid.score.score`.
"""

from ._edgetpu import (
    EDGETPU_OPS,
    EdgeTPUReport,
    OpInfo,
    TensorInfo,
    edgetpu_report,
    read_io_details,
)

# Shared with astrid.score, astrid.braai.load_trained and astrid.anomaly; internal, not in __all__.
from ._tflite import (  # re-exported: "X as X"
    CONSTANT_OUTPUT_SPREAD as CONSTANT_OUTPUT_SPREAD,
)
from ._tflite import (
    INVOKE_BATCH as INVOKE_BATCH,
)
from ._tflite import ExportReport, TFLiteRunner, read_sidecar, sidecar_path, to_tflite
from ._tflite import (
    convert_keras as convert_keras,
)
from ._tflite import (
    load_keras_archive as load_keras_archive,
)
from ._tflite import (
    load_keras_model as load_keras_model,
)
from ._tflite import (
    model_sha256 as model_sha256,
)
from ._tflite import (
    n_candidates as n_candidates,
)
from ._tflite import (
    preprocess as preprocess,
)
from ._tflite import (
    resolve_norm as resolve_norm,
)
from ._tflite import (
    take_candidates as take_candidates,
)

__all__ = [
    "EDGETPU_OPS",
    "EdgeTPUReport",
    "ExportReport",
    "OpInfo",
    "TFLiteRunner",
    "TensorInfo",
    "edgetpu_report",
    "read_io_details",
    "read_sidecar",
    "sidecar_path",
    "to_tflite",
]
