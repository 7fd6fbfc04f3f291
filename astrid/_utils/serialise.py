"""One rule for writing values to JSON (metadata, metrics, checkpoints, cards)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that :func:`json.dumps` writes as strict JSON.

    Dicts (keys made strings), lists and tuples are copied recursively; numpy
    scalars and arrays become Python numbers and lists; ``bytes`` are decoded;
    paths become strings; a masked value and a non-finite float (NaN, ±inf)
    become ``None`` — JSON has no NaN, and ``null`` reads back as "undefined"
    everywhere. Anything else is written as ``str(value)``.
    """
    if value is None or value is np.ma.masked:
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
