"""The main job: notebooks 01-06 on the simulated survey, every paper figure into ``figures/``.

:func:`run_main_job` executes the numbered notebooks in order through the
batch runner (:func:`astrid.runner.run`, papermill), with the parameters of
``configs/main_job.yaml`` (or the tiny ones of ``configs/ci_small.yaml`` with
``small=True``). The executed notebooks and the run record land in
``<root>/papermill_runs/<run-id>/``, the data in ``<root>/<data_dir>`` and the
figures in ``<root>/<figures_dir>`` (``figures/`` for the main job)::

    from astrid.mainjob import run_main_job
    result = run_main_job()              # ≈ minutes on a laptop
    print(result.summary())

The configuration files are ordinary :class:`astrid.runner.RunConfig` YAML,
so ``astrid run configs/main_job.yaml`` from the repository root does the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from .errors import AstridFileError, AstridInputError

__all__ = [
    "run_main_job",
    "main_job_config",
    "REPO_ROOT",
    "MAIN_JOB_CONFIG",
    "CI_SMALL_CONFIG",
    "NOTEBOOKS",
]

#: The repository holding the notebooks and configurations (AstrID is installed editable).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Full parameters of the main job.
MAIN_JOB_CONFIG = REPO_ROOT / "configs" / "main_job.yaml"
#: Tiny parameters for CI.
CI_SMALL_CONFIG = REPO_ROOT / "configs" / "ci_small.yaml"
#: The numbered notebooks, in the order they depend on each other.
NOTEBOOKS = (
    "notebooks/01_acquisition.ipynb",
    "notebooks/02_differencing.ipynb",
    "notebooks/03_triplets.ipynb",
    "notebooks/04_training.ipynb",
    "notebooks/05_edgetpu_export.ipynb",
    "notebooks/06_paper_figures.ipynb",
    "notebooks/07_anomaly.ipynb",
    "notebooks/08_active_learning.ipynb",
)


def _read_yaml(path: Path) -> dict:
    import yaml

    if path.is_dir():
        raise AstridFileError(f"{path}: is a folder; give the main-job configuration's YAML file")
    if not path.is_file():
        raise AstridFileError(f"{path}: main-job configuration file does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AstridInputError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise AstridInputError(
            f"{path}: must hold a mapping of run settings, got {type(values).__name__}"
        )
    return values


def main_job_config(
    config: str | os.PathLike | dict | None = None,
    small: bool = False,
    *,
    root: str | os.PathLike | None = None,
    run_id: str | None = None,
    output_root: str | os.PathLike | None = None,
    scheduler: str | None = None,
):
    """The :class:`astrid.runner.RunConfig` of the main job, with every path made absolute.

    Parameters
    ----------
    config : path-like or dict, optional
        A run configuration (YAML file or mapping, keys of
        :class:`~astrid.runner.RunConfig`). Default: ``configs/main_job.yaml``,
        or ``configs/ci_small.yaml`` when ``small``.
    small : bool, optional
        Use the tiny CI parameters (only when ``config`` is not given).
    root : path-like, optional
        Folder that the notebooks' ``data_dir`` and ``figures_dir`` are
        relative to, passed to every notebook as the ``root`` parameter.
        Default: the configuration's ``root`` parameter (relative to the
        repository), else the repository root.
    run_id : str, optional
        Run id (default ``main-<UTC time>``, ``ci-small-<UTC time>``).
    output_root : path-like, optional
        Where the executed notebooks go (default ``<root>/papermill_runs``).
    scheduler : str, optional
        Override the configuration's ``scheduler`` (``"sync"``, an address).

    Returns
    -------
    astrid.runner.RunConfig
        Notebook paths are absolute (relative ones are taken from the
        repository root), and the ``root`` parameter is an absolute path.

    Raises
    ------
    AstridInputError
        ``config`` together with ``small``, or a bad configuration.
    AstridFileError
        The configuration file or a notebook does not exist.
    """
    from .runner import RunConfig

    if config is not None and small:
        raise AstridInputError("main job: give either config or small=True, not both")
    if config is None:
        config = CI_SMALL_CONFIG if small else MAIN_JOB_CONFIG
    if isinstance(config, dict):
        values, source = dict(config), "main-job configuration"
    elif isinstance(config, (str, os.PathLike)):
        values, source = _read_yaml(Path(config)), str(config)
    else:
        raise AstridInputError(
            f"main job: config must be a YAML path or a dict, got {type(config).__name__}"
        )

    notebooks = []
    for entry in values.get("notebooks", NOTEBOOKS):
        path = Path(entry)
        path = path if path.is_absolute() else REPO_ROOT / path
        if not path.is_file():
            raise AstridFileError(f"{source}: notebook {entry} does not exist (looked for {path})")
        notebooks.append(str(path))
    values["notebooks"] = notebooks

    parameters = dict(values.get("parameters") or {})
    base = Path(root) if root is not None else Path(parameters.get("root", "."))
    base = (base if base.is_absolute() else REPO_ROOT / base).resolve()
    parameters["root"] = str(base)
    values["parameters"] = parameters

    if output_root is not None:
        values["output_root"] = str(output_root)
    out = Path(values.get("output_root", "papermill_runs"))
    values["output_root"] = str(out if out.is_absolute() else base / out)
    if run_id is not None:
        values["run_id"] = run_id
    if values.get("run_id") is None:
        prefix = "ci-small" if small else "main"
        values["run_id"] = f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    if scheduler is not None:
        values["scheduler"] = scheduler
    return RunConfig.from_dict(values, source=source)


def run_main_job(
    config: str | os.PathLike | dict | None = None,
    small: bool = False,
    *,
    root: str | os.PathLike | None = None,
    run_id: str | None = None,
    output_root: str | os.PathLike | None = None,
    scheduler: str | None = None,
    client=None,
    on_task_done: Callable | None = None,
):
    """Run notebooks 01-06 on the simulated survey and leave the paper figures in ``figures/``.

    Parameters
    ----------
    config, small, root, run_id, output_root, scheduler
        As for :func:`main_job_config`: by default ``configs/main_job.yaml``
        (8 fields of 1024² pixels), with ``small=True`` the tiny
        ``configs/ci_small.yaml``.
    client : distributed.Client, optional
        Run the notebooks on this Dask client instead of as the
        configuration says.
    on_task_done : callable, optional
        Called with each finished :class:`astrid.runner.TaskResult`
        (e.g. to print progress).

    Returns
    -------
    astrid.runner.RunResult
        Every notebook's status, output notebook and recorded metrics; a
        failed notebook does not raise (``result.ok`` is False and the
        later notebooks are ``skipped``).

    Raises
    ------
    AstridInputError, AstridFileError
        A bad configuration (see :func:`main_job_config`).
    """
    from .runner import run

    run_config = main_job_config(
        config, small, root=root, run_id=run_id, output_root=output_root, scheduler=scheduler
    )
    return run(run_config, client=client, on_task_done=on_task_done)
