"""Key metrics that a notebook records and the batch runner reads back.

A notebook calls :func:`record_metrics`; the values travel inside the executed
notebook as a display output of the MIME type :data:`METRICS_MIME_TYPE` (the
way scrapbook stores its scraps, without the dependency), so they survive with
the notebook and need no side channel between kernel and runner.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

from ..errors import AstridFileError, AstridInputError

__all__ = ["METRICS_MIME_TYPE", "record_metrics", "read_metrics", "recorded_metrics"]

METRICS_MIME_TYPE = "application/vnd.astrid.metrics+json"

# What record_metrics stored in this process, for scripts run outside a kernel.
_RECORDED: dict[str, Any] = {}


def _plain(value: Any, name: str) -> Any:
    """A JSON-safe copy of ``value`` (numpy scalars and arrays become Python values)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        # JSON has no NaN: an undefined metric is stored as null.
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return _plain(value.tolist(), name)
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, name) for k, v in value.items()}
    raise AstridInputError(
        f"record_metrics: metric {name!r} = {value!r} ({type(value).__name__}) is not a number, "
        "string, boolean, None, or a list or dict of those"
    )


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def record_metrics(**metrics: Any) -> dict[str, Any]:
    """Record key results of a notebook run for the batch runner's record.

    Call it anywhere in a notebook, e.g. ``record_metrics(n_candidates=12,
    purity=0.91)``; several calls add up (a later value of the same name wins).
    :func:`astrid.runner.run` stores the metrics of each executed notebook in
    ``run.json`` and :func:`astrid.runner.list_runs` shows them.

    In a Jupyter kernel the metrics are displayed as one line of plain text
    (``metrics recorded: n_candidates=12, purity=0.91``) together with a
    machine-readable copy of MIME type :data:`METRICS_MIME_TYPE` that the
    runner reads from the executed notebook. Outside a kernel nothing is
    displayed.

    Parameters
    ----------
    **metrics
        Name and value of each metric: numbers (numpy scalars included),
        strings, booleans, None, or lists and dicts of those. NaN and infinite
        values are stored as None (JSON has no NaN).

    Returns
    -------
    dict
        The metrics as stored.

    Raises
    ------
    AstridInputError
        A value that cannot be stored as JSON (an image, an object, ...).
    """
    if not metrics:
        raise AstridInputError(
            "record_metrics: give at least one metric, e.g. record_metrics(n_candidates=12)"
        )
    clean = {name: _plain(value, name) for name, value in metrics.items()}
    json.dumps(clean)  # anything _plain let through must serialise
    _RECORDED.update(clean)
    if _in_kernel():
        from IPython.display import display

        summary = ", ".join(f"{k}={json.dumps(v)[:40]}" for k, v in clean.items())
        display({METRICS_MIME_TYPE: clean, "text/plain": f"metrics recorded: {summary}"}, raw=True)
    return clean


def recorded_metrics() -> dict[str, Any]:
    """Metrics recorded by :func:`record_metrics` in this process so far.

    Returns
    -------
    dict
        A copy of the metrics, by name.
    """
    return dict(_RECORDED)


def read_metrics(notebook: str | os.PathLike | Any) -> dict[str, Any]:
    """Metrics recorded in an executed notebook.

    Parameters
    ----------
    notebook : path or nbformat.NotebookNode
        An executed notebook (file or loaded).

    Returns
    -------
    dict
        The metrics of every :func:`record_metrics` call in cell order, merged
        (a later value of the same name wins); empty when none was recorded.

    Raises
    ------
    AstridFileError
        The file is missing or not a notebook.
    """
    import nbformat

    if isinstance(notebook, (str, os.PathLike)):
        path = Path(notebook)
        try:
            nb = nbformat.read(path, as_version=4)
        except FileNotFoundError:
            raise AstridFileError(f"{path}: notebook does not exist") from None
        except Exception as exc:  # nbformat raises JSON, validation and reader errors
            raise AstridFileError(
                f"{path}: not a readable notebook ({type(exc).__name__}: {exc})"
            ) from None
    else:
        nb = notebook
    metrics: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            if output.get("output_type") not in ("display_data", "execute_result"):
                continue
            data = output.get("data", {}).get(METRICS_MIME_TYPE)
            if isinstance(data, str):  # nbformat may keep JSON payloads as text
                data = json.loads(data)
            if isinstance(data, dict):
                metrics.update(data)
    return metrics
