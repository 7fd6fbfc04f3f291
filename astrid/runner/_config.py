"""Batch configuration: :class:`RunConfig` and the parameter sets it expands to."""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import AstridFileError, AstridInputError

__all__ = ["RunConfig", "ParameterSet", "params_slug", "default_run_id"]

# A slug longer than this is cut and given a hash, so paths stay well under
# the 255-byte file-name limit whatever the grid values are.
_MAX_SLUG = 80
_SAFE = re.compile(r"[^A-Za-z0-9.+-]+")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The keys that define which tasks a run holds: a rerun under the same run id
# must agree on them, or its record would mix two different batches.
TASK_DEFINING_KEYS = ("notebooks", "parameters", "grid")


def default_run_id() -> str:
    """A run id from the current UTC time, e.g. ``"20250301T142501Z"``.

    Returns
    -------
    str
        The run id.
    """
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _slug_value(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return _SAFE.sub("-", text).strip("-") or "x"


def _hash(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def params_slug(values: dict[str, Any], max_length: int = _MAX_SLUG) -> str:
    """Readable, file-system-safe, deterministic name of a parameter set.

    Parameters
    ----------
    values : dict
        The parameters that vary between tasks, in the order they should read
        (the grid's order).
    max_length : int, optional
        Longer slugs are cut and end with a 10-character hash of ``values``.

    Returns
    -------
    str
        For example ``"target=SIM0001_filter=r"``; ``"default"`` for no values.

    Examples
    --------
    >>> params_slug({"target": "SIM0001", "filter": "r"})
    'target=SIM0001_filter=r'
    """
    if not values:
        return "default"
    slug = "_".join(
        f"{_SAFE.sub('-', str(name)).strip('-') or 'x'}={_slug_value(v)}"
        for name, v in values.items()
    )
    if len(slug) > max_length:
        slug = f"{slug[: max_length - 11].rstrip('_=-')}_{_hash(values)}"
    return slug


@dataclass(frozen=True)
class ParameterSet:
    """One point of the grid.

    Attributes
    ----------
    slug : str
        File name stem of the executed notebooks of this set.
    varying : dict
        The grid values of this set (what distinguishes it).
    parameters : dict
        All parameters injected into the notebook: fixed ones and the grid's.
    """

    slug: str
    varying: dict
    parameters: dict


def did_you_mean(name: str, allowed) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``allowed`` to ``name``, or an empty string."""
    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_json(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AstridInputError(
            f"{where} = {value!r} cannot be stored in the run record: use numbers, strings, "
            f"booleans, None, lists or dicts of those ({exc})"
        ) from None


@dataclass
class RunConfig:
    """What to execute in a batch of notebook runs, and where.

    Attributes
    ----------
    notebooks : list of str
        Notebook paths, in dependency order. Relative paths are relative to the
        working directory of the process that calls :func:`astrid.runner.run`.
    parameters : dict
        Parameters shared by every task (injected after the cell tagged
        ``parameters``).
    grid : dict of str to list
        Parameters that vary: the cartesian product of the lists gives the
        parameter sets, e.g. ``{"target": [...], "filter": ["g", "r"]}``.
    run_id : str
        Name of the run folder; default: the UTC start time. Reusing a run id
        resumes that run (tasks that succeeded are not executed again).
    output_root : str
        Folder that holds the run folders (default ``papermill_runs``).
    kernel_name : str or None
        Jupyter kernel to execute with. None (default) runs a Python kernel of
        the interpreter that runs AstrID, whatever kernelspecs are installed;
        a name uses Jupyter's installed kernelspec of that name.
    cwd : str or None
        Working directory of the kernels; None (default) runs each notebook
        in its own folder, so relative paths in notebooks work as in JupyterLab.
    timeout : float or None
        Seconds a cell may run before the task fails; None: no limit.
    start_timeout : float
        Seconds to wait for a kernel to start.
    scheduler : str or None
        ``None``: start a local Dask cluster (one process per worker);
        ``"sync"``: run tasks one after another in this process (for tests and
        debugging); anything else: the address of a running Dask scheduler,
        e.g. ``"tcp://10.0.0.5:8786"``.
    n_workers : int or None
        Workers of the local cluster; default: as many as the cores, at most
        the number of tasks that can run at once.
    sequential_notebooks : bool
        True (default): all parameter sets of a notebook finish before the next
        notebook starts, and a parameter set whose earlier notebook failed is
        skipped in the later ones (later notebooks read what earlier ones wrote).
        False: every task is independent and all run at once.
    """

    notebooks: list[str]
    parameters: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    run_id: str = field(default_factory=default_run_id)
    output_root: str = "papermill_runs"
    kernel_name: str | None = None
    cwd: str | None = None
    timeout: float | None = None
    start_timeout: float = 60.0
    scheduler: str | None = None
    n_workers: int | None = None
    sequential_notebooks: bool = True

    def __post_init__(self) -> None:
        self._validate()

    # -- construction -----------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict, *, source: str = "run configuration") -> "RunConfig":
        """Build a configuration from a mapping (e.g. parsed YAML).

        Raises
        ------
        AstridInputError
            ``values`` is not a mapping, has unknown keys, lacks ``notebooks``
            or has a value of the wrong type.
        """
        if not isinstance(values, dict):
            raise AstridInputError(
                f"{source}: must be a mapping of settings, got {type(values).__name__}"
            )
        allowed = [f.name for f in fields(cls)]
        unknown = [key for key in values if key not in allowed]
        if unknown:
            hints = "; ".join(f"{key!r}{did_you_mean(str(key), allowed)}" for key in unknown)
            raise AstridInputError(
                f"{source}: unknown setting(s) {hints}; allowed: {', '.join(allowed)}"
            )
        if "notebooks" not in values:
            raise AstridInputError(f"{source}: 'notebooks' (a list of notebook paths) is required")
        kwargs = dict(values)
        if kwargs.get("run_id") is None:
            kwargs.pop("run_id", None)
        try:
            return cls(**kwargs)
        except AstridInputError as exc:
            raise AstridInputError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "RunConfig":
        """Read a configuration from a YAML file (see :meth:`from_dict`).

        Raises
        ------
        AstridFileError
            The file is missing or unreadable.
        AstridInputError
            The file is not valid YAML or holds a bad configuration.
        """
        import yaml

        path = Path(path)
        if path.is_dir():
            raise AstridFileError(f"{path}: is a folder; give the run configuration's YAML file")
        if not path.is_file():
            raise AstridFileError(f"{path}: run configuration file does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise AstridInputError(f"{path}: not valid YAML ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AstridFileError(f"{path}: cannot be read ({exc})") from None
        if values is None:
            raise AstridInputError(f"{path}: run configuration file is empty")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict:
        """The configuration as plain JSON-serialisable values."""
        return asdict(self)

    # -- validation --------------------------------------------------------
    def _validate(self) -> None:
        notebooks = self.notebooks
        if isinstance(notebooks, (str, os.PathLike)):
            notebooks = [notebooks]
        if not isinstance(notebooks, (list, tuple)) or not notebooks:
            raise AstridInputError("'notebooks' must be a non-empty list of notebook paths")
        clean = []
        for item in notebooks:
            if not isinstance(item, (str, os.PathLike)) or not str(item).endswith(".ipynb"):
                raise AstridInputError(
                    f"'notebooks' entry {item!r} is not a path to an .ipynb file"
                )
            clean.append(os.fspath(item))
        stems = [Path(p).stem for p in clean]
        repeated = sorted({s for s in stems if stems.count(s) > 1})
        if repeated:
            raise AstridInputError(
                f"'notebooks' lists several notebooks named {', '.join(repeated)}: their outputs "
                "would share a folder; rename one"
            )
        self.notebooks = clean

        if self.parameters is None:
            self.parameters = {}
        if not isinstance(self.parameters, dict):
            raise AstridInputError(
                f"'parameters' must be a mapping of name to value, got {self.parameters!r}"
            )
        for name, value in self.parameters.items():
            self._check_name(name, "parameters")
            _check_json(value, f"parameters[{name!r}]")

        if self.grid is None:
            self.grid = {}
        if not isinstance(self.grid, dict):
            raise AstridInputError(
                f"'grid' must be a mapping of name to a list of values, got {self.grid!r}"
            )
        for name, values in self.grid.items():
            self._check_name(name, "grid")
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise AstridInputError(
                    f"grid[{name!r}] must be a non-empty list of values, got {values!r}"
                )
            self.grid[name] = list(values)
            _check_json(self.grid[name], f"grid[{name!r}]")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise AstridInputError(f"grid[{name!r}] repeats a value: {values!r}")
        both = sorted(set(self.parameters) & set(self.grid))
        if both:
            raise AstridInputError(
                f"{', '.join(map(repr, both))} given both in 'parameters' and in 'grid'"
            )

        if not isinstance(self.run_id, str) or not _RUN_ID.match(self.run_id):
            raise AstridInputError(
                f"'run_id' {self.run_id!r} must be 1-128 letters, digits, '.', '_' or '-' "
                "(it names a folder), starting with a letter or digit"
            )
        for name in ("output_root",):
            value = getattr(self, name)
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                raise AstridInputError(f"'{name}' must be a folder path, got {value!r}")
            setattr(self, name, os.fspath(value))
        if self.cwd is not None:
            if not isinstance(self.cwd, (str, os.PathLike)) or not str(self.cwd):
                raise AstridInputError(f"'cwd' must be a folder path or null, got {self.cwd!r}")
            self.cwd = os.fspath(self.cwd)
        if self.kernel_name is not None and (
            not isinstance(self.kernel_name, str) or not self.kernel_name
        ):
            raise AstridInputError(
                f"'kernel_name' must be a kernel name or null, got {self.kernel_name!r}"
            )
        self.timeout = self._positive_number(self.timeout, "timeout", allow_none=True)
        self.start_timeout = self._positive_number(
            self.start_timeout, "start_timeout", allow_none=False
        )
        if self.scheduler is not None and (
            not isinstance(self.scheduler, str) or not self.scheduler.strip()
        ):
            raise AstridInputError(
                f"'scheduler' must be null (local cluster), 'sync' or a Dask scheduler address, got {self.scheduler!r}"
            )
        if self.n_workers is not None and (
            isinstance(self.n_workers, bool)
            or not isinstance(self.n_workers, int)
            or self.n_workers < 1
        ):
            raise AstridInputError(
                f"'n_workers' must be a positive integer or null, got {self.n_workers!r}"
            )
        if not isinstance(self.sequential_notebooks, bool):
            raise AstridInputError(
                f"'sequential_notebooks' must be true or false, got {self.sequential_notebooks!r}"
            )

    @staticmethod
    def _check_name(name: Any, where: str) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise AstridInputError(f"'{where}' name {name!r} is not a valid Python variable name")

    @staticmethod
    def _positive_number(value: Any, name: str, allow_none: bool) -> float | None:
        if value is None and allow_none:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            extra = " or null" if allow_none else ""
            raise AstridInputError(
                f"'{name}' must be a positive number of seconds{extra}, got {value!r}"
            )
        return float(value)

    # -- expansion ---------------------------------------------------------
    def parameter_sets(self) -> list[ParameterSet]:
        """The parameter sets of the grid, in order (the last grid name varies fastest)."""
        names = list(self.grid)
        sets = []
        for combo in itertools.product(*(self.grid[n] for n in names)):
            varying = dict(zip(names, combo))
            sets.append(ParameterSet(params_slug(varying), varying, {**self.parameters, **varying}))
        slugs = [s.slug for s in sets]
        if len(set(slugs)) != len(slugs):
            # Different values that clean to the same text ("a/b" and "a-b"):
            # a hash keeps every output file apart.
            sets = [
                ParameterSet(
                    f"{s.slug[: _MAX_SLUG - 11]}_{_hash(s.varying)}", s.varying, s.parameters
                )
                if slugs.count(s.slug) > 1
                else s
                for s in sets
            ]
        return sets

    def task_definition(self) -> dict:
        """The settings that define the tasks (compared when a run is resumed)."""
        values = self.to_dict()
        return {key: values[key] for key in TASK_DEFINING_KEYS}
