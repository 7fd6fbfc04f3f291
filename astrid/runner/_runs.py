"""Reading run records back: :func:`list_runs`, :func:`run_tasks` and their printout."""

from __future__ import annotations

import json
import math
import numbers
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..errors import AstridFileError
from ._core import MANIFEST_NAME

__all__ = ["list_runs", "run_tasks", "load_run", "format_table"]


def _short_time(text: str | None) -> str:
    """``2025-03-01T14:25:01Z`` from a stored ISO time (seconds are enough to tell runs apart)."""
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return str(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _numeric(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def load_run(run_id: str | os.PathLike, root: str | os.PathLike = "papermill_runs") -> dict:
    """The record (``run.json``) of one run.

    Parameters
    ----------
    run_id : str or path
        A run id under ``root``, or the path of a run folder.
    root : str or path, optional
        Folder holding the runs (default ``papermill_runs``).

    Returns
    -------
    dict
        The run record, as read from its JSON.

    Raises
    ------
    AstridFileError
        No such run, or its record is unreadable.
    """
    folder = Path(run_id)
    if not (folder / MANIFEST_NAME).is_file():
        folder = Path(root) / str(run_id)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise AstridFileError(f"{path}: no run record (is {run_id!r} a run id under {root}?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AstridFileError(f"{path}: run record is unreadable ({exc})") from None


def list_runs(root: str | os.PathLike = "papermill_runs") -> Table:
    """One row per run under ``root``, oldest first.

    Parameters
    ----------
    root : str or path, optional
        Folder holding the runs (default ``papermill_runs``).

    Returns
    -------
    astropy.table.Table
        Columns ``run_id``, ``started`` (first invocation, ISO UTC),
        ``updated``, ``n_tasks``, ``n_ok``, ``n_failed``, ``n_skipped``,
        ``n_pending``, ``notebooks`` (stems, comma-separated), ``git_commit``
        (12 characters), then ``<metric>_mean`` for every numeric metric that
        a task recorded: its mean over the run's tasks that recorded it
        (masked where none did). Runs whose record is unreadable are left out.
        Empty table (with those columns) when there are no runs.
    """
    root = Path(root)
    rows = []
    for path in sorted(root.glob(f"*/{MANIFEST_NAME}")) if root.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            tasks = record["tasks"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            continue
        counts = {
            status: sum(t.get("status") == status for t in tasks)
            for status in ("ok", "failed", "skipped", "pending")
        }
        stems = list(dict.fromkeys(t.get("stem", "") for t in tasks))
        metrics: dict[str, list[float]] = {}
        for task in tasks:
            for name, value in (task.get("metrics") or {}).items():
                if _numeric(value) and math.isfinite(value):
                    metrics.setdefault(name, []).append(float(value))
        rows.append(
            {
                "run_id": record.get("run_id", path.parent.name),
                "started": _short_time(record.get("created")),
                "updated": _short_time(record.get("updated")),
                "n_tasks": len(tasks),
                **{f"n_{status}": n for status, n in counts.items()},
                "notebooks": ",".join(stems),
                "git_commit": (record.get("git_commit") or "")[:12],
                "metrics": {
                    f"{name}_mean": float(np.mean(values)) for name, values in metrics.items()
                },
            }
        )
    rows.sort(key=lambda row: (row["started"], row["run_id"]))  # ISO text sorts by time
    names = [
        "run_id",
        "started",
        "updated",
        "n_tasks",
        "n_ok",
        "n_failed",
        "n_skipped",
        "n_pending",
        "notebooks",
        "git_commit",
    ]
    dtypes = [str, str, str, int, int, int, int, int, str, str]
    table = Table([[row[n] for row in rows] for n in names], names=names, dtype=dtypes)
    metric_names = sorted({name for row in rows for name in row["metrics"]})
    for name in metric_names:
        values = [row["metrics"].get(name, np.nan) for row in rows]
        table[name] = np.ma.masked_invalid(np.array(values, dtype=float))
        table[name].description = f"mean of metric {name[:-5]!r} over the run's tasks"
    table.meta["root"] = str(root)
    return table


def run_tasks(run_id: str | os.PathLike, root: str | os.PathLike = "papermill_runs") -> Table:
    """One row per task of a run: its parameters, status and metrics.

    Parameters
    ----------
    run_id : str or path
        A run id under ``root``, or the path of a run folder.
    root : str or path, optional
        Folder holding the runs (default ``papermill_runs``).

    Returns
    -------
    astropy.table.Table
        Columns ``notebook`` (stem), ``slug``, ``status``, ``duration_s``,
        ``error``, ``output``, ``mlflow_run`` (the task's MLflow run id, empty
        when untracked), then one column per grid parameter and one per
        recorded metric (masked where a task has no value; non-scalar values
        as JSON text).
    """
    record = load_run(run_id, root)
    tasks = record.get("tasks", [])
    grid = list((record.get("task_definition") or {}).get("grid", {}))
    base_names = ["notebook", "slug", "status", "duration_s", "error", "output", "mlflow_run"]
    table = Table(names=base_names, dtype=[str, str, str, float, str, str, str], masked=True)
    for t in tasks:
        duration = t.get("duration_s")
        table.add_row(
            [
                t.get("stem", ""),
                t.get("slug", ""),
                t.get("status", ""),
                np.nan if duration is None else float(duration),
                t.get("error") or "",
                t.get("output", ""),
                t.get("mlflow_run") or "",
            ],
            mask=[False, False, False, duration is None, False, False, False],
        )
    metric_names = sorted(
        {name for t in tasks for name in (t.get("metrics") or {})} - set(grid) - set(base_names)
    )
    for name in grid + metric_names:
        source = "parameters" if name in grid else "metrics"
        values = [(t.get(source) or {}).get(name) for t in tasks]
        present = [v for v in values if v is not None]
        if present and all(_numeric(v) for v in present):
            table[name] = np.ma.masked_invalid(
                np.array([np.nan if v is None else float(v) for v in values])
            )
        else:
            text = [
                v if isinstance(v, str) else ("" if v is None else json.dumps(v)) for v in values
            ]
            table[name] = np.ma.array(np.array(text, dtype=str), mask=[v is None for v in values])
    table.meta["run_id"] = record.get("run_id")
    return table


#: Columns of ``astrid runs RUN_ID --mlflow``: each task beside its MLflow run, within 100 columns.
MLFLOW_COLUMNS = ("notebook", "slug", "status", "duration_s", "mlflow_run")


def format_table(table: Table, columns: list[str] | tuple[str, ...] | None = None) -> str:
    """Plain-text rendering of a :func:`list_runs` or :func:`run_tasks` table for a terminal.

    Parameters
    ----------
    table : astropy.table.Table
        The runs or tasks.
    columns : sequence of str, optional
        Show only these columns (those present), in this order; default all
        but ``mlflow_run``.

    Returns
    -------
    str
        The table as text, or ``"no runs"`` / ``"no tasks"`` when it is empty.
    """
    if len(table) == 0:
        return "no runs" if "run_id" in table.colnames else "no tasks"
    if columns is None:
        columns = [name for name in table.colnames if name != "mlflow_run"]
    shown = table[[name for name in columns if name in table.colnames]].copy(copy_data=True)
    for name in shown.colnames:
        if shown[name].dtype.kind == "f":
            shown[name].format = ".4g"
    return "\n".join(shown.pformat(max_lines=-1, max_width=-1))
