"""Execute notebooks for every parameter set on Dask, with a run record."""

from __future__ import annotations

import ast
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .._optional import require
from ..errors import AstridFileError, AstridInputError
from ..io import atomic_write
from ._config import RunConfig, did_you_mean
from ._kernel import kernel_manager_class
from ._metrics import read_metrics

__all__ = ["TaskResult", "RunResult", "run", "execute_task", "MANIFEST_NAME"]

MANIFEST_NAME = "run.json"
MANIFEST_VERSION = 1
_VERSIONED_PACKAGES = (
    "astrid",
    "numpy",
    "scipy",
    "astropy",
    "photutils",
    "xarray",
    "papermill",
    "nbclient",
    "ipykernel",
    "jupyter_client",
    "dask",
    "distributed",
    "tensorflow",
    "keras",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class TaskResult:
    """One notebook executed with one parameter set.

    Attributes
    ----------
    notebook : str
        The notebook path as listed in the configuration.
    stem : str
        The notebook's name without ``.ipynb`` (its output folder).
    slug : str
        Name of the parameter set (the output notebook's stem).
    parameters : dict
        Every parameter injected into the notebook.
    output : pathlib.Path
        The executed notebook, ``<run-dir>/<stem>/<slug>.ipynb``.
    status : str
        ``"ok"``, ``"failed"`` (an error, a timeout or a dead kernel),
        ``"skipped"`` (an earlier notebook failed for these parameters) or
        ``"pending"`` (not run yet, or the runner was interrupted).
    started : str or None
        ISO 8601 UTC time the last execution started.
    finished : str or None
        ISO 8601 UTC time the last execution finished.
    duration_s : float or None
        Wall time of the last execution in seconds.
    error : str or None
        What went wrong, for failed and skipped tasks.
    metrics : dict
        What the notebook recorded with :func:`astrid.runner.record_metrics`.
    attempts : int
        How many times the task has been executed under this run id.
    kernel_log : str or None
        File name (beside ``output``) of the kernel process's own log, kept
        when the kernel wrote one (start-up problems, crashes).
    reused : bool
        True when this invocation kept an earlier success instead of executing.
    mlflow_run : str or None
        The MLflow run of the last execution (:mod:`astrid.tracking`), None
        when it was not tracked. Trainings inside the notebook are logged
        as its child runs.
    """

    notebook: str
    stem: str
    slug: str
    parameters: dict
    output: Path
    status: str = "pending"
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    attempts: int = 0
    kernel_log: str | None = None
    reused: bool = False
    mlflow_run: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """``(stem, slug)``, unique within a run."""
        return (self.stem, self.slug)

    def to_record(self, run_dir: Path) -> dict:
        """The task as stored in ``run.json`` (output relative to the run folder)."""
        try:
            output = self.output.relative_to(run_dir).as_posix()
        except ValueError:
            output = str(self.output)
        return {
            "notebook": self.notebook,
            "stem": self.stem,
            "slug": self.slug,
            "parameters": self.parameters,
            "output": output,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "duration_s": self.duration_s,
            "error": self.error,
            "metrics": self.metrics,
            "attempts": self.attempts,
            "kernel_log": self.kernel_log,
            "mlflow_run": self.mlflow_run,
        }

    @classmethod
    def from_record(cls, record: dict, run_dir: Path) -> "TaskResult":
        """A task from its ``run.json`` record."""
        return cls(
            notebook=record["notebook"],
            stem=record["stem"],
            slug=record["slug"],
            parameters=record.get("parameters", {}),
            output=run_dir / record["output"],
            status=record.get("status", "pending"),
            started=record.get("started"),
            finished=record.get("finished"),
            duration_s=record.get("duration_s"),
            error=record.get("error"),
            metrics=record.get("metrics") or {},
            attempts=record.get("attempts", 0),
            kernel_log=record.get("kernel_log"),
            mlflow_run=record.get("mlflow_run"),
        )


@dataclass
class RunResult:
    """Outcome of :func:`run`.

    Attributes
    ----------
    run_id : str
        The run's id.
    run_dir : pathlib.Path
        ``<output_root>/<run_id>``.
    manifest_path : pathlib.Path
        The run record, ``<run_dir>/run.json``.
    tasks : list of TaskResult
        Every task of the run, notebooks in order, parameter sets in grid order.
    """

    run_id: str
    run_dir: Path
    manifest_path: Path
    tasks: list[TaskResult]

    def _count(self, status: str) -> int:
        return sum(task.status == status for task in self.tasks)

    @property
    def n_ok(self) -> int:
        """Number of tasks that succeeded."""
        return self._count("ok")

    @property
    def n_failed(self) -> int:
        """Number of tasks that failed."""
        return self._count("failed")

    @property
    def n_skipped(self) -> int:
        """Number of tasks skipped because an earlier notebook failed."""
        return self._count("skipped")

    @property
    def ok(self) -> bool:
        """True when every task succeeded."""
        return all(task.status == "ok" for task in self.tasks)

    @property
    def failed(self) -> list[TaskResult]:
        """The failed tasks."""
        return [task for task in self.tasks if task.status == "failed"]

    @property
    def executed(self) -> list[TaskResult]:
        """Tasks executed by this invocation (not kept from an earlier one, not skipped)."""
        return [task for task in self.tasks if not task.reused and task.status in ("ok", "failed")]

    def summary(self) -> str:
        """One line: counts of ok, failed and skipped tasks and the record's path."""
        reused = sum(task.reused for task in self.tasks)
        return (
            f"run {self.run_id}: {self.n_ok} ok ({reused} kept from before), {self.n_failed} failed, "
            f"{self.n_skipped} skipped of {len(self.tasks)} task(s); record: {self.manifest_path}"
        )


# -- executing one task (on a Dask worker or in process) ---------------------
def _error_text(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    if ename:  # papermill.PapermillExecutionError: the notebook's own exception
        cell = getattr(exc, "exec_count", None)
        where = f" (cell [{cell}])" if cell is not None else ""
        return f"{ename}: {getattr(exc, 'evalue', '')}{where}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")


def declared_parameters(path: Path) -> list[str] | None:
    """The names a notebook's ``parameters`` cell assigns; None without one.

    papermill injects whatever it is given and logs every name the cell does
    not declare; the runner passes each notebook only its own names. A cell
    that is not Python also gives None (every name is passed).
    """
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError) as exc:
        raise AstridFileError(f"{path}: not a readable notebook ({exc})") from None
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            try:
                tree = ast.parse("".join(source) if isinstance(source, list) else source)
            except SyntaxError:
                return None
            names = set()
            for node in tree.body:
                targets = (
                    node.targets
                    if isinstance(node, ast.Assign)
                    else [node.target]
                    if isinstance(node, ast.AnnAssign)
                    else []
                )
                names.update(t.id for t in targets if isinstance(t, ast.Name))
            return sorted(names)
    return None


def _check_parameters_declared(config: RunConfig, declared: dict[Path, list[str] | None]) -> None:
    if any(names is None for names in declared.values()):
        return  # a notebook without a parameters cell takes every name
    known = sorted({name for names in declared.values() for name in names})
    for name in sorted(set(config.parameters) | set(config.grid)):
        if name not in known:
            raise AstridInputError(
                f"parameter {name!r} is declared by none of the notebooks' parameters cells"
                f"{did_you_mean(name, known)}; they declare {', '.join(known)}"
            )


@contextmanager
def _environment(env: dict | None):
    """Set environment variables for a block (a kernel started inside inherits them), then restore them."""
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update({name: str(value) for name, value in (env or {}).items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start_tracking(task: "TaskResult", config: RunConfig, track: bool | None):
    """An MLflow run for one papermill task, and the environment that makes the notebook's trainings its children."""
    from .. import tracking

    run = tracking.start_run(
        f"{task.stem}/{task.slug}",
        {"notebook": task.notebook, **task.parameters},
        tags={
            "astrid.kind": "papermill",
            "astrid.run_id": config.run_id,
            "astrid.notebook": task.stem,
            "astrid.slug": task.slug,
            "astrid.attempt": task.attempts + 1,
            **{f"version.{k}": v for k, v in tracking.library_versions().items()},
        },
        track=track,
    )
    env = {tracking.PARENT_RUN_ENV: run.run_id, "ASTRID_MLFLOW_URI": run.uri} if run.active else {}
    return run, env


def _finish_tracking(run, task: "TaskResult") -> None:
    if not run.active:
        return
    numeric = {
        k: v
        for k, v in (task.metrics or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if task.duration_s is not None:
        numeric["duration_s"] = task.duration_s
    run.log_metrics(numeric)
    run.set_tags({"astrid.status": task.status, "astrid.error": task.error})
    if task.output.exists():
        run.log_artifact(task.output, "notebook")
    if task.kernel_log and (task.output.parent / task.kernel_log).exists():
        run.log_artifact(task.output.parent / task.kernel_log, "notebook")
    run.end("FINISHED" if task.status == "ok" else "FAILED")


def execute_task(spec: dict) -> dict:
    """Execute one notebook with papermill; never raises.

    Parameters
    ----------
    spec : dict
        ``notebook`` and ``output`` (absolute paths), ``parameters``,
        ``kernel_name`` (None: this interpreter), ``cwd``, ``timeout`` and
        ``start_timeout`` (seconds); optionally ``env``: environment
        variables set while the notebook's kernel starts (it inherits them).

    Returns
    -------
    dict
        ``status`` (``"ok"`` or ``"failed"``), ``started``, ``finished``,
        ``duration_s``, ``error`` and ``metrics`` (read from the executed
        notebook, also after a failure: the cells before the error ran).
    """
    started, t0 = _now(), time.perf_counter()
    status, error = "ok", None
    output = Path(spec["output"])
    kernel_log = output.with_name(output.stem + ".kernel.log")
    kernel_log.unlink(missing_ok=True)  # a log of this attempt only
    try:
        papermill = require("papermill", "astrid.runner")
        output.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {}
        kernel_name = spec.get("kernel_name")
        kwargs["kernel_manager_class"] = kernel_manager_class(kernel_name is None, kernel_log)
        if kernel_name is None:
            kernel_name, kwargs["language"] = "python3", "python"
        if spec.get("timeout") is not None:
            kwargs["execution_timeout"] = spec["timeout"]
        with _environment(spec.get("env")):
            papermill.execute_notebook(
                spec["notebook"],
                str(output),
                parameters=spec["parameters"],
                kernel_name=kernel_name,
                progress_bar=False,
                log_output=False,
                start_timeout=spec.get("start_timeout", 60),
                # The kernel starts in cwd; papermill's own `cwd` would chdir the
                # whole worker process, which races when a worker runs threads.
                resources={"metadata": {"path": spec["cwd"]}},
                **kwargs,
            )
    except Exception as exc:  # every failure is recorded, none stops the batch
        status, error = "failed", _error_text(exc)
    metrics: dict = {}
    if output.exists():
        try:
            metrics = read_metrics(output)
        except Exception as exc:  # a notebook half-written by a dying kernel
            if status == "ok":
                status, error = "failed", f"cannot read the executed notebook: {_error_text(exc)}"
    elif status == "ok":
        status, error = "failed", f"papermill wrote no output notebook at {output}"
    if kernel_log.exists() and kernel_log.stat().st_size == 0:
        kernel_log.unlink()
    return {
        "status": status,
        "kernel_log": kernel_log.name if kernel_log.exists() else None,
        "started": started,
        "finished": _now(),
        "duration_s": round(time.perf_counter() - t0, 3),
        "error": error,
        "metrics": metrics,
    }


# -- the run record ---------------------------------------------------------
def _git_state(folder: Path) -> tuple[str | None, bool | None]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=folder, capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None, None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return commit, (bool(changes) if changes is not None else None)


def _package_versions() -> dict[str, str | None]:
    from .. import __version__

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    versions["astrid"] = __version__
    return versions


def _load_manifest(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AstridFileError(
            f"{path}: run record is unreadable ({exc}); move it away or choose another run_id"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tasks"), list):
        raise AstridFileError(f"{path}: not an AstrID run record (no task list)")
    return manifest


def _write_manifest(path: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1, default=str)
    atomic_write(path, lambda fh: fh.write(text), mode="w")


# -- executors --------------------------------------------------------------
class _SyncExecutor:
    description = "sync"

    def map_unordered(self, specs: list[tuple[Any, dict]]) -> Iterator[tuple[Any, dict]]:
        for key, spec in specs:
            yield key, execute_task(spec)

    def close(self) -> None:
        pass


class _DaskExecutor:
    def __init__(self, client, owned: list, description: str):
        self.client = client
        self._owned = owned
        self.description = description

    def map_unordered(self, specs: list[tuple[Any, dict]]) -> Iterator[tuple[Any, dict]]:
        from distributed import as_completed

        futures = {}
        for key, spec in specs:
            future = self.client.submit(
                execute_task, spec, pure=False, key=f"astrid-notebook-{os.urandom(6).hex()}"
            )
            futures[future] = (key, spec)
        try:
            for future in as_completed(list(futures)):
                key, spec = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # a worker died (KilledWorker) or the task was lost
                    now = _now()
                    result = {
                        "status": "failed",
                        "kernel_log": None,
                        "started": None,
                        "finished": now,
                        "duration_s": None,
                        "error": f"Dask could not run the task: {_error_text(exc)}",
                        "metrics": {},
                    }
                yield key, result
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        import logging

        # After the last task a worker still tearing down its interpreter is
        # killed by its nanny: harmless (every result is in), but logged as a
        # warning that would read like a failure at the end of every batch.
        def drop_kill_notice(record: logging.LogRecord) -> bool:
            return "still alive after" not in record.getMessage()

        nanny_log = logging.getLogger("distributed.nanny")
        nanny_log.addFilter(drop_kill_notice)
        try:
            for resource in self._owned:
                resource.close()
        finally:
            nanny_log.removeFilter(drop_kill_notice)


def _make_executor(config: RunConfig, client, n_parallel: int):
    if client is not None:
        return _DaskExecutor(client, [], "the given Dask client")
    if config.scheduler == "sync":
        return _SyncExecutor()
    from ..batch import get_client

    # The same client factory as astrid.batch: a LocalCluster (one task and one
    # compute thread per worker: each task starts its own kernel process) or
    # a connection to the scheduler at the given address.
    if config.scheduler is not None:
        try:
            client = get_client(config.scheduler, threads_per_worker=1)
        except AstridInputError as exc:
            raise AstridInputError(f"'scheduler': {exc}") from None
        return _DaskExecutor(client, [client], f"scheduler {config.scheduler}")
    n_workers = config.n_workers or max(1, min(os.cpu_count() or 1, n_parallel))
    client = get_client(n_workers=n_workers, threads_per_worker=1)
    return _DaskExecutor(client, [client], f"LocalCluster({n_workers} workers)")


# -- the batch ------------------------------------------------------------
def _coerce_config(config) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return RunConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return RunConfig.from_yaml(config)
    raise AstridInputError(
        f"run: config must be a RunConfig, a dict or a YAML file path, got {type(config).__name__}"
    )


def run(
    config: RunConfig | dict | str | os.PathLike,
    client=None,
    *,
    on_task_done: Callable[[TaskResult], None] | None = None,
    track: bool | None = None,
) -> RunResult:
    """Execute every notebook with every parameter set, in parallel on Dask.

    Each task runs ``papermill.execute_notebook`` into
    ``<output_root>/<run_id>/<notebook-stem>/<params-slug>.ipynb``. The run
    record ``<output_root>/<run_id>/run.json`` is rewritten atomically after
    every task: run id, configuration, git commit, package versions, and per
    task its parameters, output, status, times, error and recorded metrics.
    A failing task is recorded and the others go on. Running again with the
    same ``run_id`` keeps tasks that succeeded (and whose output notebook
    still exists) and executes the others again.

    Parameters
    ----------
    config : RunConfig, dict or path
        The batch: a :class:`RunConfig`, a mapping for
        :meth:`RunConfig.from_dict`, or a YAML file.
    client : distributed.Client, optional
        Run on this Dask client (it is left open). Default: as
        ``config.scheduler`` says.
    on_task_done : callable, optional
        Called with each :class:`TaskResult` as it finishes (for progress).
    track : bool, optional
        One MLflow run per executed task (:mod:`astrid.tracking`): the
        parameters, status, duration, numeric metrics and the output
        notebook; a training inside the notebook logs a child run. Default:
        on when MLflow is installed, unless ``ASTRID_TRACKING=off``. The
        task's ``mlflow_run`` in ``run.json`` names the run.

    Returns
    -------
    RunResult
        Every task with its status; failures do not raise.

    Raises
    ------
    AstridFileError
        A notebook does not exist, or an existing run record is unreadable.
    AstridInputError
        Bad configuration, or a run with this id exists with other notebooks,
        parameters or grid.
    """
    config = _coerce_config(config)
    notebooks, declared = _resolve_notebooks(config)
    run_dir = Path(config.output_root).resolve() / config.run_id
    record = _RunRecord.open(config, run_dir, notebooks)
    record.save()
    stages = _stages(config, record.tasks, notebooks)
    by_key = {task.key: task for task in record.tasks}
    tracked: dict = {}  # task key -> its MLflow run while it executes
    executor = None
    try:
        for stage_index, stage in enumerate(stages):
            to_run = _runnable(config, stages, stage_index, by_key, record, on_task_done)
            if not to_run:
                continue
            if executor is None:
                executor = _make_executor(config, client, max(len(s) for s in stages))
                record.invocation["executor"] = executor.description
            specs = []
            for task in to_run:
                tracked[task.key], env = _start_tracking(task, config, track)
                task.mlflow_run = tracked[task.key].run_id
                notebook = notebooks[config.notebooks.index(task.notebook)]
                specs.append(
                    (task.key, _task_spec(config, task, notebook, declared[notebook], env))
                )
            for key, result in executor.map_unordered(specs):
                task = by_key[key]
                for name, value in result.items():
                    setattr(task, name, value)
                task.attempts += 1
                record.invocation["n_executed"] += 1
                _finish_tracking(tracked.pop(key), task)
                record.save()
                if on_task_done:
                    on_task_done(task)
    finally:
        for leftover in tracked.values():  # interrupted: never finished
            leftover.end("KILLED")
        if executor is not None:
            executor.close()
        record.invocation["finished"] = _now()
        record.save()
    return RunResult(
        run_id=config.run_id, run_dir=run_dir, manifest_path=record.path, tasks=record.tasks
    )


def _resolve_notebooks(config: RunConfig) -> tuple[list[Path], dict]:
    """The notebooks' resolved paths and their declared parameters (checked against the config)."""
    notebooks = []
    for entry in config.notebooks:
        path = Path(entry).resolve()
        if not path.is_file():
            raise AstridFileError(f"{entry}: notebook does not exist (resolved to {path})")
        notebooks.append(path)
    declared = {path: declared_parameters(path) for path in notebooks}
    _check_parameters_declared(config, declared)
    if config.cwd is not None and not Path(config.cwd).is_dir():
        raise AstridFileError(f"'cwd' {config.cwd}: folder does not exist")
    return notebooks, declared


def _tasks(
    config: RunConfig, notebooks: list[Path], run_dir: Path, previous: dict | None
) -> list[TaskResult]:
    """Every (notebook, parameter set) task; earlier successes whose output exists are kept."""
    old_records = {}
    if previous is not None:
        for entry in previous["tasks"]:
            old = TaskResult.from_record(entry, run_dir)
            old_records[old.key] = old
    tasks: list[TaskResult] = []
    for entry, path in zip(config.notebooks, notebooks):
        for pset in config.parameter_sets():
            task = TaskResult(
                notebook=entry,
                stem=path.stem,
                slug=pset.slug,
                parameters=pset.parameters,
                output=run_dir / path.stem / f"{pset.slug}.ipynb",
            )
            old = old_records.get(task.key)
            if old is not None:
                task.attempts = old.attempts
                if old.status == "ok" and task.output.exists():
                    task = old
                    task.reused = True
            tasks.append(task)
    return tasks


class _RunRecord:
    """``run.json``: configuration, provenance, invocations and every task, rewritten atomically."""

    def __init__(
        self, path: Path, run_dir: Path, data: dict, invocation: dict, tasks: list[TaskResult]
    ):
        self.path = path
        self.run_dir = run_dir
        self.data = data
        self.invocation = invocation
        self.tasks = tasks

    @classmethod
    def open(cls, config: RunConfig, run_dir: Path, notebooks: list[Path]) -> _RunRecord:
        """The record of this invocation, continuing an earlier one with the same tasks."""
        path = run_dir / MANIFEST_NAME
        previous = _load_manifest(path)
        if previous is not None and previous.get("task_definition") != config.task_definition():
            raise AstridInputError(
                f"{path}: run {config.run_id!r} exists with other notebooks, parameters or grid; "
                "rerun it with the same settings to redo its failed tasks, or choose another run_id"
            )
        tasks = _tasks(config, notebooks, run_dir, previous)
        commit, dirty = _git_state(notebooks[0].parent)
        invocation = {
            "started": _now(),
            "finished": None,
            "host": platform.node(),
            "executor": None,
            "n_executed": 0,
            "n_kept": sum(t.reused for t in tasks),
        }
        data = {
            "astrid_run": MANIFEST_VERSION,
            "run_id": config.run_id,
            "created": previous.get("created") if previous else invocation["started"],
            "updated": invocation["started"],
            "config": config.to_dict(),
            "task_definition": config.task_definition(),
            "git_commit": commit,
            "git_dirty": dirty,
            "versions": _package_versions(),
            "invocations": [*(previous.get("invocations", []) if previous else []), invocation],
            "tasks": [],
        }
        return cls(path, run_dir, data, invocation, tasks)

    def save(self) -> None:
        self.data["updated"] = _now()
        self.data["tasks"] = [task.to_record(self.run_dir) for task in self.tasks]
        _write_manifest(self.path, self.data)


def _stages(
    config: RunConfig, tasks: list[TaskResult], notebooks: list[Path]
) -> list[list[TaskResult]]:
    """One stage per notebook when they run in sequence, else one stage of every task."""
    if config.sequential_notebooks:
        return [[t for t in tasks if t.stem == path.stem] for path in notebooks]
    return [tasks]


def _runnable(
    config: RunConfig,
    stages: list,
    stage_index: int,
    by_key: dict,
    record: _RunRecord,
    on_task_done,
) -> list[TaskResult]:
    """The stage's tasks to execute; one whose earlier notebook did not succeed is skipped."""
    to_run = []
    for task in stages[stage_index]:
        if task.reused:
            continue
        blocker = None
        if config.sequential_notebooks:
            for earlier in stages[:stage_index]:
                before = by_key[(earlier[0].stem, task.slug)]
                if before.status != "ok":
                    blocker = before
                    break
        if blocker is not None:
            task.status, task.error = (
                "skipped",
                f"{blocker.stem} {blocker.status} for these parameters",
            )
            task.started = task.finished = task.duration_s = task.kernel_log = task.mlflow_run = (
                None
            )
            task.metrics = {}
            record.save()
            if on_task_done:
                on_task_done(task)
            continue
        to_run.append(task)
    return to_run


def _task_spec(config: RunConfig, task: TaskResult, notebook: Path, names, env: dict) -> dict:
    """What a worker needs to execute one task (plain values, pickled to it)."""
    return {
        "notebook": str(notebook),
        "output": str(task.output),
        "parameters": {
            key: value for key, value in task.parameters.items() if names is None or key in names
        },
        "kernel_name": config.kernel_name,
        "cwd": str(Path(config.cwd).resolve()) if config.cwd else str(notebook.parent),
        "timeout": config.timeout,
        "start_timeout": config.start_timeout,
        "env": env,
    }
