"""The acquisition run configuration (YAML), validated into :class:`AcquisitionConfig`."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import AstridFileError, AstridInputError

__all__ = ["AcquisitionConfig", "ARCHIVES"]

#: Archive names accepted by ``archive:`` and :func:`get_archive`.
ARCHIVES = ("simulated", "mast", "local")


def _as_list(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (str, int, float)) for v in value
    ):
        raise AstridInputError(f"config '{key}' must be a list of names, got {value!r}")
    out = [str(v).strip() for v in value]
    if not out or any(not v for v in out):
        raise AstridInputError(
            f"config '{key}' must be a non-empty list of non-empty names, got {value!r}"
        )
    return out


def _number(
    value: Any,
    key: str,
    *,
    minimum: float | None = None,
    integer: bool = False,
    allow_zero: bool = True,
):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AstridInputError(f"config '{key}' must be a number, got {value!r}")
    if integer and int(value) != value:
        raise AstridInputError(f"config '{key}' must be a whole number, got {value!r}")
    if minimum is not None and (value < minimum or (not allow_zero and value == 0)):
        bound = f"> {minimum}" if not allow_zero and minimum == 0 else f">= {minimum}"
        raise AstridInputError(f"config '{key}' must be {bound}, got {value!r}")
    return int(value) if integer else float(value)


@dataclass
class AcquisitionConfig:
    """What to fetch, from where, and how: the YAML run configuration.

    Attributes
    ----------
    archive : {"simulated", "mast", "local"}
        Data source (see :func:`get_archive`). Default ``"simulated"``, which
        needs neither network nor data.
    out_dir : pathlib.Path
        Survey folder to write (``<out_dir>/<target>/{reference,science}/``
        and ``manifest.json``).
    catalog : str or None
        Supernova catalogue for MAST and local runs: a file (SAI/Asiago
        pipe-delimited, CSV, ECSV) or ``"vizier:B/sn"``. Relative paths are
        relative to the YAML file.
    targets : list of str or None
        Supernova names to process (all of the catalogue when None).
    years : (int, int) or None
        Inclusive range of discovery years.
    types : list of str or None
        Type prefixes to keep (``["Ia"]``).
    missions : list of str or None
        MAST collections, e.g. ``["SWIFT"]``.
    instruments : list of str or None
        Instruments to keep, e.g. ``["UVOT"]``.
    filters : list of str or None
        Filters to keep, e.g. ``["U", "UVW1"]`` (compared after normalisation).
    days_before : float
        A reference must end at least this many days before discovery (365).
    days_after : float
        A science image must start within this many days after discovery (60).
    lookback_days : float
        How far before discovery to search for references (3650).
    max_per_type : int
        References and science images kept per mission/instrument/filter (3).
    require_same_mission : bool
        Pair only within one mission and instrument (True).
    radius_arcmin : float
        Search cone radius in arcminutes (3).
    chunk_size : int
        Targets queried per chunk; the checkpoint is flushed per target and
        the downloads of a chunk start once its queries are done (50).
    chunk_pause_s : float
        Pause between chunks, to stay under an archive's rate limit (0).
    max_file_size_mb : float or None
        Refuse files larger than this (2000 MB).
    retries : int
        Retries per file and query (4).
    backoff_s : float
        First back-off delay in seconds, doubled at each retry (2).
    timeout_s : float
        Network timeout per request in seconds (60).
    check_timeout_s : float
        Timeout of the reachability probe before MAST queries (3).
    decompress : bool
        Store gzipped downloads decompressed (False keeps ``.fits.gz``).
    resolve_products : bool
        Ask MAST for each observation's product list and fetch the science
        image (with its size) rather than the observation's ``dataURL`` (True).
    checkpoint : pathlib.Path or None
        Query checkpoint (JSON lines); default ``<out_dir>/acquire_checkpoint.jsonl``.
    local_dir : pathlib.Path or None
        For ``archive: local``: a folder of FITS files or a survey folder.
    n_fields : int
        For ``archive: simulated``: number of fields (4).
    preset : str
        For ``archive: simulated``: ``"ztf"`` or ``"swift_uvot"``.
    seed : int
        For ``archive: simulated``: random seed (0).
    size : int
        For ``archive: simulated``: image side in pixels (1024).
    """

    archive: str = "simulated"
    out_dir: Path = Path("data/survey")
    catalog: str | None = None
    targets: list[str] | None = None
    years: tuple[int, int] | None = None
    types: list[str] | None = None
    missions: list[str] | None = field(default_factory=lambda: ["SWIFT"])
    instruments: list[str] | None = None
    filters: list[str] | None = None
    days_before: float = 365.0
    days_after: float = 60.0
    lookback_days: float = 3650.0
    max_per_type: int = 3
    require_same_mission: bool = True
    radius_arcmin: float = 3.0
    chunk_size: int = 50
    chunk_pause_s: float = 0.0
    max_file_size_mb: float | None = 2000.0
    retries: int = 4
    backoff_s: float = 2.0
    timeout_s: float = 60.0
    check_timeout_s: float = 3.0
    decompress: bool = False
    resolve_products: bool = True
    checkpoint: Path | None = None
    local_dir: Path | None = None
    n_fields: int = 4
    preset: str = "ztf"
    seed: int = 0
    size: int = 1024

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ #
    def validate(self) -> "AcquisitionConfig":
        """Check every value; raise :class:`~astrid.errors.AstridInputError` naming the key."""
        if not isinstance(self.archive, str) or self.archive.strip().lower() not in ARCHIVES:
            raise AstridInputError(
                f"config 'archive' must be one of {', '.join(ARCHIVES)}, got {self.archive!r}"
            )
        self.archive = self.archive.strip().lower()
        if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir).strip():
            raise AstridInputError(f"config 'out_dir' must be a folder path, got {self.out_dir!r}")
        self.out_dir = Path(self.out_dir)
        for key in ("checkpoint", "local_dir"):
            value = getattr(self, key)
            if value is not None:
                if not isinstance(value, (str, os.PathLike)):
                    raise AstridInputError(f"config '{key}' must be a path, got {value!r}")
                setattr(self, key, Path(value))
        if self.catalog is not None and not isinstance(self.catalog, (str, os.PathLike)):
            raise AstridInputError(
                f"config 'catalog' must be a file path or 'vizier:<catalogue>', got {self.catalog!r}"
            )
        if self.catalog is not None:
            self.catalog = str(self.catalog)
        for key in ("targets", "types", "missions", "instruments", "filters"):
            setattr(self, key, _as_list(getattr(self, key), key))
        if self.years is not None:
            years = self.years
            if isinstance(years, int) and not isinstance(years, bool):
                years = (years, years)
            if (
                not isinstance(years, (list, tuple))
                or len(years) != 2
                or not all(isinstance(y, int) and not isinstance(y, bool) for y in years)
                or years[0] > years[1]
            ):
                raise AstridInputError(
                    f"config 'years' must be [first, last] with first <= last, got {self.years!r}"
                )
            self.years = (int(years[0]), int(years[1]))
        for key in ("days_before", "days_after", "lookback_days", "chunk_pause_s", "backoff_s"):
            setattr(self, key, _number(getattr(self, key), key, minimum=0))
        for key in ("radius_arcmin", "timeout_s", "check_timeout_s"):
            setattr(self, key, _number(getattr(self, key), key, minimum=0, allow_zero=False))
        if self.lookback_days < self.days_before:
            raise AstridInputError(
                f"config 'lookback_days' ({self.lookback_days:g}) must be >= 'days_before' ({self.days_before:g}): "
                "otherwise no reference can ever be found"
            )
        if self.max_file_size_mb is not None:
            self.max_file_size_mb = _number(
                self.max_file_size_mb, "max_file_size_mb", minimum=0, allow_zero=False
            )
        for key in ("max_per_type", "chunk_size", "n_fields", "size"):
            setattr(self, key, _number(getattr(self, key), key, minimum=1, integer=True))
        for key in ("retries", "seed"):
            setattr(self, key, _number(getattr(self, key), key, minimum=0, integer=True))
        for key in ("require_same_mission", "decompress", "resolve_products"):
            if not isinstance(getattr(self, key), bool):
                raise AstridInputError(
                    f"config '{key}' must be true or false, got {getattr(self, key)!r}"
                )
        if not isinstance(self.preset, str) or not self.preset.strip():
            raise AstridInputError(f"config 'preset' must be a preset name, got {self.preset!r}")
        if self.archive == "mast" and self.catalog is None:
            raise AstridInputError(
                "config 'catalog' is required with archive: mast (a catalogue file or 'vizier:B/sn')"
            )
        if self.archive == "local" and self.local_dir is None:
            raise AstridInputError("config 'local_dir' is required with archive: local")
        return self

    # ------------------------------------------------------------------ #
    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base_dir: str | os.PathLike | None = None
    ) -> "AcquisitionConfig":
        """Build from a mapping (a parsed YAML file), refusing unknown keys.

        Parameters
        ----------
        data : mapping
            Keys are the attribute names; an ``acquire:`` section is used
            when the mapping has one.
        base_dir : path-like, optional
            Folder that relative ``out_dir``, ``catalog``, ``checkpoint`` and
            ``local_dir`` are relative to.

        Raises
        ------
        AstridInputError
            Unknown keys (with the closest known key) or bad values.
        """
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise AstridInputError(
                f"acquisition config must be a mapping of keys to values, got {type(data).__name__}"
            )
        if "acquire" in data and isinstance(data["acquire"], Mapping):
            data = data["acquire"]
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise AstridInputError(
                f"unknown acquisition config key(s): {', '.join(hints)}; known keys: {', '.join(known)}"
            )
        values = dict(data)
        if base_dir is not None:
            base = Path(base_dir)
            for key in ("out_dir", "checkpoint", "local_dir"):
                if (
                    isinstance(values.get(key), (str, os.PathLike))
                    and not Path(values[key]).is_absolute()
                ):
                    values[key] = base / values[key]
            catalog = values.get("catalog")
            if (
                isinstance(catalog, str)
                and not catalog.lower().startswith("vizier")
                and not Path(catalog).is_absolute()
            ):
                values["catalog"] = str(base / catalog)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "AcquisitionConfig":
        """Read and validate a YAML configuration file (relative paths are relative to it).

        Raises
        ------
        AstridFileError
            Missing file or invalid YAML.
        AstridInputError
            Unknown keys or bad values.
        """
        import yaml

        path = Path(path)
        if path.is_dir():
            raise AstridFileError(
                f"{path}: is a folder; give the acquisition configuration's YAML file"
            )
        if not path.is_file():
            raise AstridFileError(f"{path}: configuration file does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise AstridFileError(f"{path}: not valid YAML ({exc})") from exc
        try:
            return cls.from_dict(data or {}, base_dir=path.parent)
        except AstridInputError as exc:
            raise type(exc)(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings), e.g. to write back as YAML."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @property
    def checkpoint_path(self) -> Path:
        """The query checkpoint file."""
        return (
            self.checkpoint
            if self.checkpoint is not None
            else self.out_dir / "acquire_checkpoint.jsonl"
        )

    @property
    def max_file_size(self) -> int | None:
        """Size cap in bytes."""
        return None if self.max_file_size_mb is None else int(self.max_file_size_mb * 1024 * 1024)

    def query_key(self) -> str:
        """Identifies the query parameters: checkpoint entries made with others are not reused."""
        parts = {
            "archive": self.archive,
            "missions": sorted(m.upper() for m in self.missions) if self.missions else None,
            "instruments": sorted(i.upper() for i in self.instruments)
            if self.instruments
            else None,
            "lookback_days": self.lookback_days,
            "days_after": self.days_after,
            "radius_arcmin": self.radius_arcmin,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
