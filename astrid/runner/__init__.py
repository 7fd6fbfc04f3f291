"""Batch reruns of notebooks: papermill on Dask, with a record of every run.

A YAML file names the notebooks and the parameters; :func:`run` executes every
notebook for every parameter set of the grid (``targets × filters``, ...) on a
Dask cluster and keeps each executed notebook and a ``run.json`` record under
``papermill_runs/<run-id>/``. Notebooks report key numbers with
:func:`record_metrics`; :func:`list_runs` compares runs by them.

Example::

    from astrid.runner import RunConfig, run, list_runs
    result = run(RunConfig.from_yaml("batch.yaml"))
    print(result.summary())
    list_runs()
"""

from ._cli import cli_run, cli_runs, cmd_run, cmd_runs, configure_run_parser, configure_runs_parser
from ._config import ParameterSet, RunConfig, default_run_id, params_slug
from ._core import MANIFEST_NAME, RunResult, TaskResult, execute_task, run
from ._metrics import METRICS_MIME_TYPE, read_metrics, record_metrics, recorded_metrics
from ._runs import format_table, list_runs, load_run, run_tasks

__all__ = [
    "RunConfig",
    "ParameterSet",
    "RunResult",
    "TaskResult",
    "run",
    "execute_task",
    "record_metrics",
    "recorded_metrics",
    "read_metrics",
    "list_runs",
    "run_tasks",
    "load_run",
    "format_table",
    "params_slug",
    "default_run_id",
    "cli_run",
    "cli_runs",
    "cmd_run",
    "cmd_runs",
    "configure_run_parser",
    "configure_runs_parser",
    "METRICS_MIME_TYPE",
    "MANIFEST_NAME",
]
