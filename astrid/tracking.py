"""Experiment tracking with MLflow: every training and every notebook run, findable and comparable.

:func:`astrid.braai.train` and ``astrid run`` log to MLflow through this
module: parameters, per-epoch metrics, the data hash, library versions, the
model file, its card and figures. Other trainings use the same two calls::

    from astrid import tracking

    with tracking.training_run("unet", params={"epochs": 10}, tags={"astrid.kind": "unet-train"}) as run:
        model.fit(..., callbacks=[run.epoch_callback()])
        run.log_metrics({"val_auc": 0.97})
        run.log_artifact("unet.keras")
        card["mlflow"] = run.info()      # the run id, in the model card

Where it goes (:func:`tracking_uri`)
    ``ASTRID_MLFLOW_URI``, else ``MLFLOW_TRACKING_URI``, else the folder
    ``./mlruns`` of the working directory. A folder (any value without a
    ``scheme:``) holds an SQLite store ``mlflow.db`` and the artefacts under
    ``artifacts/``: MLflow 3 refuses its old file-per-value store (from 3.13
    without ``MLFLOW_ALLOW_FILE_STORE``), and SQLite works offline just the
    same. ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`` shows
    it. Any other URI (``http://...``, ``sqlite:///...``, ``databricks``)
    goes to MLflow as it is.
Switching it off
    ``ASTRID_TRACKING=off`` (also ``0``, ``false``, ``no``) or ``track=False``
    (an explicit argument wins over the environment). Without MLflow
    installed tracking is off unless asked for (``track=True`` or
    ``ASTRID_TRACKING=on``), which then raises an ImportError naming the
    ``tracking`` extra.
Never at the cost of a model
    Any failure of tracking (a locked database, an unreachable server, a
    full disk) is an :class:`~astrid.errors.AstridWarning`; the training goes
    on and saves its model, and that run logs nothing more.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
import warnings
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .errors import AstridWarning

__all__ = [
    "tracking_uri",
    "tracking_enabled",
    "training_run",
    "start_run",
    "TrackedRun",
    "library_versions",
    "DEFAULT_EXPERIMENT",
    "PARENT_RUN_ENV",
]

#: Experiment of AstrID's runs unless ``experiment=`` or ``ASTRID_MLFLOW_EXPERIMENT`` says otherwise.
DEFAULT_EXPERIMENT = "astrid"
#: Environment variable through which ``astrid run`` tells a notebook's trainings their parent run.
PARENT_RUN_ENV = "ASTRID_MLFLOW_PARENT_RUN"
_OFF = {"off", "0", "false", "no"}
_ON = {"on", "1", "true", "yes"}
_DB_NAME = "mlflow.db"
_ARTIFACTS = "artifacts"
_VERSIONED = (
    "astrid",
    "numpy",
    "scipy",
    "astropy",
    "xarray",
    "tensorflow",
    "keras",
    "mlflow",
    "mlflow-skinny",
)
# MLflow limits: a parameter value is at most 6000 characters; a batch at most 100 params / 1000 metrics.
_MAX_PARAM = 6000


def _mlflow(purpose: str = "Experiment tracking"):
    try:
        import mlflow
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the optional package 'mlflow': install it with  pip install 'astrid[tracking]'  "
            "or switch tracking off (ASTRID_TRACKING=off, or track=False)"
        ) from exc
    return mlflow


def _has_mlflow() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        return False


def _is_folder_uri(uri: str) -> bool:
    # "C:\\x" has a one-letter "scheme"; treat it as a folder too
    head, sep, _ = uri.partition(":")
    return not sep or len(head) == 1 or "/" in head or "\\" in head


def tracking_uri(uri: str | os.PathLike | None = None) -> str:
    """The MLflow tracking URI AstrID logs to.

    Parameters
    ----------
    uri : str or path-like, optional
        Use this instead of the environment. Default: ``ASTRID_MLFLOW_URI``,
        else ``MLFLOW_TRACKING_URI``, else ``./mlruns`` (of the working
        directory when called).

    Returns
    -------
    str
        A folder becomes ``sqlite:///<absolute folder>/mlflow.db`` (its
        artefacts go to ``<folder>/artifacts``); any ``scheme:...`` URI is
        returned unchanged.
    """
    if uri is None:
        uri = (
            os.environ.get("ASTRID_MLFLOW_URI") or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
        )
    uri = os.fspath(uri)
    if _is_folder_uri(uri):
        folder = Path(uri).expanduser().absolute()
        return f"sqlite:///{(folder / _DB_NAME).as_posix()}"
    return uri


def _local_folder(uri: str) -> Path | None:
    """The folder of a local SQLite store made by :func:`tracking_uri`, else None."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri[len(prefix) :])
        if path.name == _DB_NAME:
            return path.parent if path.is_absolute() else path.absolute().parent
    return None


def tracking_enabled(track: bool | None = None) -> bool:
    """Whether a run would be tracked.

    Parameters
    ----------
    track : bool, optional
        True or False decides. None: ``ASTRID_TRACKING`` (``off``/``0``/
        ``false``/``no`` or ``on``/``1``/``true``/``yes``), else on when
        MLflow is installed.

    Raises
    ------
    ImportError
        Tracking asked for (``track=True`` or ``ASTRID_TRACKING=on``) without
        MLflow installed; the message names the ``tracking`` extra.

    Returns
    -------
    bool
    """
    if track is None:
        env = os.environ.get("ASTRID_TRACKING", "").strip().lower()
        if env in _OFF:
            return False
        if env not in _ON:
            if env:
                warnings.warn(
                    f"ASTRID_TRACKING={env!r} is neither on nor off; tracking stays on when MLflow "
                    "is installed",
                    AstridWarning,
                    stacklevel=2,
                )
            return _has_mlflow()
    elif not track:
        return False
    _mlflow()
    return True


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result (those installed).

    Returns
    -------
    dict of str to str
        ``python``, ``astrid`` and each installed library's version.
    """
    from ._version import __version__

    out = {"python": platform.python_version(), "astrid": __version__}
    for name in _VERSIONED[1:]:
        for distribution in (name, f"{name}-cpu") if name == "tensorflow" else (name,):
            try:
                out[name] = importlib_metadata.version(distribution)
                break
            except importlib_metadata.PackageNotFoundError:
                continue
    return out


@contextlib.contextmanager
def _quiet():
    """MLflow's own deprecation and future warnings are not the user's to act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 3] + "..."


def _flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


class TrackedRun:
    """One MLflow run, or nothing at all when tracking is off or has failed.

    Every method is safe to call either way: when the run is inactive it
    does nothing, and a failure inside MLflow turns the run inactive with
    one :class:`~astrid.errors.AstridWarning`.

    Attributes
    ----------
    run_id, experiment_id, uri : str or None
        The run (None when inactive).
    active : bool
        Whether calls still log.
    """

    def __init__(
        self,
        client=None,
        run_id: str | None = None,
        experiment_id: str | None = None,
        uri: str | None = None,
        name: str = "",
    ):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.uri = uri
        self.name = name
        self.active = client is not None and run_id is not None
        self.error: str | None = None

    def _guard(self, what: str, call) -> bool:
        if not self.active:
            return False
        try:
            with _quiet():
                call()
            return True
        except Exception as exc:  # tracking must never stop a training
            self.active = False
            self.error = f"{type(exc).__name__}: {exc}"
            try:  # mark it, so that it does not look like a training still running
                with _quiet():
                    self.client.set_terminated(self.run_id, "FAILED")
            except Exception:
                pass
            warnings.warn(
                f"MLflow tracking of run {self.name!r} ({self.uri}) failed while {what} and is off for the rest of "
                f"this run ({self.error}); the training itself goes on",
                AstridWarning,
                stacklevel=4,
            )
            return False

    def info(self) -> dict | None:
        """``{"run_id", "experiment_id", "tracking_uri"}`` for a model card, or None when inactive."""
        if self.run_id is None:
            return None
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.uri,
        }

    def log_params(self, params: dict) -> bool:
        """Log parameters; nested dicts become dotted names, other values JSON text."""
        if not self.active:  # also without MLflow installed
            return False
        from mlflow.entities import Param

        items = [Param(str(k)[:250], _param_text(v)) for k, v in _flatten(params).items()]

        def call():
            for start in range(0, len(items), 100):
                self.client.log_batch(
                    self.run_id, params=items[start : start + 100], synchronous=True
                )

        return self._guard("logging parameters", call) if items else True

    def log_metrics(self, metrics: dict, step: int | None = None) -> bool:
        """Log the finite numeric values of ``metrics`` (others are left out)."""
        if not self.active:  # also without MLflow installed
            return False
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(str(k), float(v), now, int(step or 0))
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        return (
            self._guard(
                "logging metrics",
                lambda: self.client.log_batch(self.run_id, metrics=items, synchronous=True),
            )
            if items
            else True
        )

    def set_tags(self, tags: dict) -> bool:
        """Set tags (values as text)."""
        if not self.active:  # also without MLflow installed
            return False
        from mlflow.entities import RunTag

        items = [RunTag(str(k), _param_text(v)) for k, v in tags.items() if v is not None]
        return (
            self._guard(
                "setting tags",
                lambda: self.client.log_batch(self.run_id, tags=items, synchronous=True),
            )
            if items
            else True
        )

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> bool:
        """Copy a file (or a folder) into the run's artefacts."""
        path = Path(path)
        if path.is_dir():
            return self._guard(
                f"logging {path}",
                lambda: self.client.log_artifacts(self.run_id, str(path), artifact_path),
            )
        return self._guard(
            f"logging {path}",
            lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
        )

    def log_dict(self, data: dict, name: str) -> bool:
        """Store ``data`` as the JSON artefact ``name``."""
        return self._guard(
            f"logging {name}",
            lambda: self.client.log_text(
                self.run_id, json.dumps(data, indent=2, default=str) + "\n", name
            ),
        )

    def log_figure(self, figure, name: str) -> bool:
        """Store a Matplotlib figure as the image artefact ``name`` (e.g. ``"figures/roc.png"``)."""
        return self._guard(
            f"logging {name}", lambda: self.client.log_figure(self.run_id, figure, name)
        )

    def epoch_callback(self):
        """A Keras callback that logs each epoch's ``logs`` as metrics (step = epoch number from 1).

        Also records each epoch's wall time as ``epoch_seconds``. A no-op
        callback when the run is inactive.
        """
        from .braai.runtime import keras_module

        keras = keras_module()
        run = self

        class MLflowEpochs(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                values = dict(logs or {})
                if getattr(self, "_start", None) is not None:
                    values["epoch_seconds"] = time.perf_counter() - self._start
                run.log_metrics(values, step=epoch + 1)

        return MLflowEpochs()

    def end(self, status: str = "FINISHED") -> bool:
        """Close the run with ``FINISHED``, ``FAILED`` or ``KILLED``."""
        ok = self._guard("closing the run", lambda: self.client.set_terminated(self.run_id, status))
        self.active = False
        return ok


def _client_for(uri: str):
    mlflow = _mlflow()
    folder = _local_folder(uri)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        # The first use creates the database's tables: one process at a time, without
        # MLflow's INFO lines about it in every notebook and terminal.
        import logging

        from ._locks import store_lock

        db_log = logging.getLogger("mlflow.store.db.utils")
        level = db_log.level
        db_log.setLevel(logging.WARNING)
        try:
            with store_lock(folder / _DB_NAME, timeout=120), _quiet():
                client = mlflow.MlflowClient(tracking_uri=uri)
                client.search_experiments(max_results=1)
        finally:
            db_log.setLevel(level)
        return client, folder
    with _quiet():
        return mlflow.MlflowClient(tracking_uri=uri), None


def _experiment_id(client, name: str, folder: Path | None) -> str:
    with _quiet():
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (folder / _ARTIFACTS).as_uri() if folder is not None else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by another process
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def start_run(
    name: str,
    params: dict | None = None,
    tags: dict | None = None,
    *,
    experiment: str | None = None,
    track: bool | None = None,
    uri: str | os.PathLike | None = None,
) -> TrackedRun:
    """Start a tracked run (or an inactive one); close it with :meth:`TrackedRun.end`.

    Parameters
    ----------
    name, params, tags, experiment, track, uri
        As for :func:`training_run`.

    Returns
    -------
    TrackedRun
        Active; inactive when tracking is off, or (with one
        :class:`~astrid.errors.AstridWarning`) when MLflow could not start the run.
    """
    if not tracking_enabled(track):
        return TrackedRun(name=name)
    resolved = tracking_uri(uri)
    experiment = experiment or os.environ.get("ASTRID_MLFLOW_EXPERIMENT") or DEFAULT_EXPERIMENT
    try:
        client, folder = _client_for(resolved)
        experiment_id = _experiment_id(client, experiment, folder)
        all_tags = {"astrid.host": platform.node()}
        parent = os.environ.get(PARENT_RUN_ENV)
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        all_tags.update({k: _param_text(v) for k, v in (tags or {}).items() if v is not None})
        with _quiet():
            created = client.create_run(experiment_id, run_name=name, tags=all_tags)
    except Exception as exc:
        warnings.warn(
            f"MLflow tracking of run {name!r} could not start at {resolved} ({type(exc).__name__}: {exc}); "
            "going on without tracking",
            AstridWarning,
            stacklevel=3,
        )
        return TrackedRun(name=name)
    run = TrackedRun(client, created.info.run_id, experiment_id, resolved, name)
    if params:
        run.log_params(params)
    return run


@contextmanager
def training_run(
    name: str,
    params: dict | None = None,
    tags: dict | None = None,
    *,
    experiment: str | None = None,
    track: bool | None = None,
    uri: str | os.PathLike | None = None,
):
    """A tracked MLflow run around a block of code.

    Parameters
    ----------
    name : str
        Run name shown by MLflow (e.g. the model's name).
    params : dict, optional
        Parameters to log at the start (nested dicts become dotted names).
    tags : dict, optional
        Tags, e.g. ``{"astrid.kind": "braai-train", "data_sha256": ...}``.
        ``astrid.host`` is added, and ``mlflow.parentRunId`` when the
        environment names a parent (``astrid run`` does for its notebooks).
    experiment : str, optional
        MLflow experiment (created when missing). Default
        ``ASTRID_MLFLOW_EXPERIMENT``, else ``"astrid"``.
    track : bool, optional
        See :func:`tracking_enabled`.
    uri : str or path-like, optional
        See :func:`tracking_uri`.

    Yields
    ------
    TrackedRun
        Active, or inactive when tracking is off or could not start. Its
        status is ``FINISHED`` when the block ends normally, ``FAILED`` when
        it raises (the exception goes on), ``KILLED`` on KeyboardInterrupt.

    Raises
    ------
    ImportError
        Tracking asked for explicitly without MLflow installed.
    """
    run = start_run(name, params, tags, experiment=experiment, track=track, uri=uri)
    try:
        yield run
    except KeyboardInterrupt:
        run.end("KILLED")
        raise
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
