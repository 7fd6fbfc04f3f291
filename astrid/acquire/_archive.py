"""One interface to three sources of image pairs: MAST, a local folder, the simulator.

An :class:`Archive` answers four questions in turn — which targets
(:meth:`~Archive.targets`), which observations of them
(:meth:`~Archive.query`), which reference/science pairs are worth
differencing (:meth:`~Archive.pairs`) and, finally, getting the files
(:meth:`~Archive.fetch`) into the survey layout that every later step reads.
:func:`run` drives those steps in chunks from an :class:`AcquisitionConfig`,
with a checkpoint so an interrupted run of thousands of targets resumes
where it stopped; ``dry_run=True`` stops before the downloads and reports
what would be fetched.
"""

from __future__ import annotations

import os
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Column, Table
from astropy.time import Time
from astropy.wcs import WCS

from .._utils import first_image_hdu
from ..errors import AstridInputError
from ..io import header_meta
from ..manifest import MANIFEST_NAME, Manifest
from ._catalog import load_sn_catalog, select_targets
from ._config import ARCHIVES, AcquisitionConfig
from ._download import (
    DownloadReport,
    FetchOptions,
    QueryCheckpoint,
    chunks,
    destination_name,
    download,
    safe_name,
)
from ._errors import AstridArchiveError
from ._mast import MAST_URL, check_reachable, mast_products, query_mast
from ._pairs import find_pairs, rejections_table, stack_tables, standardise_observations

__all__ = [
    "Archive",
    "MastArchive",
    "LocalArchive",
    "SimulatedArchive",
    "get_archive",
    "run",
    "AcquisitionResult",
]


class Archive(ABC):
    """A source of reference/science image pairs.

    Subclasses implement :meth:`query` and :meth:`fetch`; :meth:`targets`
    and :meth:`pairs` have defaults that read the configured catalogue and
    apply :func:`find_pairs` per target.
    """

    #: Name used in messages and the manifest's ``source``.
    name: str = "archive"

    def targets(self, config: AcquisitionConfig) -> Table:
        """The catalogue rows to process (``config.catalog`` filtered by ``targets``, ``years``, ``types``)."""
        if config.catalog is None:
            raise AstridInputError(
                f"archive '{self.name}' needs config 'catalog' to know the targets"
            )
        catalog = load_sn_catalog(config.catalog)
        return select_targets(catalog, config.targets, years=config.years, types=config.types)

    @abstractmethod
    def query(self, targets: Table, config: AcquisitionConfig) -> Table:
        """Observations of ``targets`` (standard columns with ``target``)."""

    def pairs(
        self, observations: Table, targets: Table, config: AcquisitionConfig
    ) -> tuple[Table, Table]:
        """Pairs worth differencing and rejected observations, for all ``targets``."""
        all_pairs, all_rejected = [], []
        for row in targets:
            name = str(row["name"])
            mine = (
                observations[observations["target"] == name] if len(observations) else observations
            )
            if not len(mine):
                continue
            pairs, rejected = find_pairs(
                mine,
                row["discovery"],
                reference_min_days_before=config.days_before,
                science_max_days_after=config.days_after,
                require_same_mission=config.require_same_mission,
                max_per_type=config.max_per_type,
                missions=config.missions,
                instruments=config.instruments,
                filters=config.filters,
                target=name,
            )
            all_pairs.append(pairs)
            all_rejected.append(rejected)
        return stack_tables(all_pairs, _empty_pairs()), stack_tables(
            all_rejected, rejections_table([])
        )

    @abstractmethod
    def fetch(
        self,
        pairs: Table,
        out_dir: str | os.PathLike,
        config: AcquisitionConfig | None = None,
        targets: Table | None = None,
    ) -> DownloadReport:
        """Put the files of ``pairs`` into the survey layout under ``out_dir``.

        ``targets`` (catalogue rows) adds position, discovery date, type and
        host to the manifest's target entries.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _empty_pairs() -> Table:
    return Table(
        names=("target", "mission", "instrument", "filter", "ref_url", "sci_url"), dtype=(str,) * 6
    )


def _download_options(config: AcquisitionConfig | None) -> dict:
    config = config or AcquisitionConfig()
    options = FetchOptions(
        retries=config.retries,
        backoff_s=config.backoff_s,
        timeout=config.timeout_s,
        max_bytes=config.max_file_size,
    )
    return {"decompress": config.decompress, "options": options}


# --------------------------------------------------------------------------- #
# MAST
# --------------------------------------------------------------------------- #


class MastArchive(Archive):
    """Observations and files from MAST through :mod:`astroquery.mast`.

    Parameters
    ----------
    check : bool, optional
        Probe MAST now (``check_timeout`` seconds) and raise
        :class:`AstridArchiveError` at once when it is unreachable, rather
        than at the first long query (default True).
    check_timeout : float, optional
        Seconds for that probe (default 3).
    session : requests.Session, optional
        HTTP session for downloads.
    sleep : callable, optional
        Wait function between retries (tests pass a recorder).
    checkpoint : path-like, optional
        Query checkpoint file; default ``config.checkpoint_path``.
    """

    name = "mast"

    def __init__(
        self,
        *,
        check: bool = True,
        check_timeout: float = 3.0,
        session=None,
        sleep: Callable[[float], None] = time.sleep,
        checkpoint: str | os.PathLike | None = None,
    ):
        self.session = session
        self.sleep = sleep
        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        self._checkpoints: dict[Path, QueryCheckpoint] = {}
        if check:
            check_reachable(MAST_URL, name="MAST", timeout=check_timeout, session=session)

    def _checkpoint(self, config: AcquisitionConfig) -> QueryCheckpoint:
        # read once per archive object: the file grows by one line per query, and is re-read only by a new run
        path = self.checkpoint_path or config.checkpoint_path
        if path not in self._checkpoints:
            self._checkpoints[path] = QueryCheckpoint(path)
        return self._checkpoints[path]

    def _with_retries(self, what: str, call: Callable[[], Any], config: AcquisitionConfig):
        for attempt in range(config.retries + 1):
            try:
                return call()
            except AstridArchiveError as exc:
                if attempt >= config.retries or "refused" in str(exc):
                    raise AstridArchiveError(
                        f"{what}: gave up after {attempt + 1} attempt(s): {exc}"
                    ) from exc
                self.sleep(min(120.0, config.backoff_s * 2**attempt))
        raise AssertionError("unreachable")

    def query(self, targets: Table, config: AcquisitionConfig) -> Table:
        """Query MAST per target, skipping targets already in the checkpoint (appended as each finishes)."""
        checkpoint = self._checkpoint(config)
        key = config.query_key()
        tables = []
        for row in targets:
            name = str(row["name"])
            cached = checkpoint.get(name, key)
            if cached is None:
                cached = self._with_retries(
                    f"MAST query for {name}",
                    lambda: query_mast(
                        row,
                        missions=config.missions,
                        days_before=config.lookback_days,
                        days_after=config.days_after,
                        radius=config.radius_arcmin * u.arcmin,
                        instruments=config.instruments,
                        check_timeout=None,
                    ),
                    config,
                )
                checkpoint.put(name, key, cached)
            if len(cached):
                table = standardise_observations(cached, target=name)
                table["target"] = name
                tables.append(table)
        return stack_tables(tables, standardise_observations(Table(), target=""))

    def pairs(
        self, observations: Table, targets: Table, config: AcquisitionConfig
    ) -> tuple[Table, Table]:
        """Pairs by :func:`find_pairs`, then (``resolve_products``) each file's science product URL and size."""
        pairs, rejected = super().pairs(observations, targets, config)
        if config.resolve_products and len(pairs):
            pairs = self._resolve(pairs, config)
        return pairs, rejected

    def _resolve(self, pairs: Table, config: AcquisitionConfig) -> Table:
        checkpoint = self._checkpoint(config)
        key = "products"
        obsids = sorted({str(o) for col in ("ref_obsid", "sci_obsid") for o in pairs[col]})
        products: dict[str, dict] = {}
        missing = []
        for obsid in obsids:
            cached = checkpoint.get(f"product:{obsid}", key)
            if cached is None:
                missing.append(obsid)
            elif len(cached):
                products[obsid] = {c: cached[c][0] for c in cached.colnames}
        if missing:
            found = self._with_retries("MAST product list", lambda: mast_products(missing), config)
            for obsid in missing:
                info = found.get(obsid)
                checkpoint.put(f"product:{obsid}", key, Table(rows=[info]) if info else Table())
                if info:
                    products[obsid] = info
        pairs = pairs.copy()
        for prefix in ("ref_", "sci_"):
            for col in ("url", "filename", "checksum", "size"):
                name = prefix + col
                values = (
                    list(pairs[name])
                    if name in pairs.colnames
                    else [-1 if col == "size" else ""] * len(pairs)
                )
                for i, obsid in enumerate(pairs[prefix + "obsid"]):
                    info = products.get(str(obsid))
                    if info and info.get(col) not in (None, ""):
                        values[i] = info[col]
                if col == "size":
                    pairs[name] = Column(np.asarray(values, dtype=np.int64), unit="byte")
                else:
                    pairs[name] = Column([str(v) for v in values], dtype=str)
        return pairs

    def fetch(
        self,
        pairs: Table,
        out_dir: str | os.PathLike,
        config: AcquisitionConfig | None = None,
        targets: Table | None = None,
    ) -> DownloadReport:
        """Download the pairs' files (verified, resumable) into the survey layout."""
        return download(
            pairs,
            out_dir,
            targets=targets,
            session=self.session,
            sleep=self.sleep,
            source="mast",
            **_download_options(config),
        )


# --------------------------------------------------------------------------- #
# local folder
# --------------------------------------------------------------------------- #

_FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts", ".fts.gz", ".img", ".img.gz")


_STRUCTURAL_KEYS = ("COMMENT", "HISTORY", "SIMPLE", "EXTEND", "NAXIS", "BITPIX")


def _scan(path: Path) -> dict | None:
    """Header metadata, WCS and OBJECT of the first image HDU of a FITS file (None if it has none)."""
    try:
        # headers only: a user's folder may hold odd files, whose FITS warnings say nothing useful here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                index = first_image_hdu(hdul, skip=())
                if index is None:
                    return None
                merged = hdul[index].header.copy()
                if index:  # TELESCOP, DATE-OBS, ... often live in the primary header only
                    for card in hdul[0].header.cards:
                        if (
                            card.keyword
                            and card.keyword not in merged
                            and card.keyword not in _STRUCTURAL_KEYS
                        ):
                            merged[card.keyword] = card.value
                try:
                    wcs = WCS(merged, naxis=2)
                    wcs = wcs if wcs.has_celestial else None
                except Exception:  # broken WCS keywords: no position, still usable by OBJECT
                    wcs = None
                meta = header_meta(merged, path=str(path), hdu=index)
                return {"meta": meta, "wcs": wcs, "object": str(merged.get("OBJECT", "")).strip()}
    except (OSError, ValueError):
        return None


class LocalArchive(Archive):
    """Image pairs from files you already have.

    Two kinds of folder are understood:

    - a survey folder (``manifest.json`` with ``<target>/{reference,science}/``
      as :func:`download` and ``astrid.simulate.survey`` write): its pairs
      are used as they are;
    - any folder of FITS files: each file's header gives mission
      (``TELESCOP``), instrument (``INSTRUME``), filter (``FILTER``) and time
      (``MJD-OBS``/``DATE-OBS``). Files are assigned to catalogue targets
      whose position their WCS footprint contains (or, without a catalogue,
      grouped by ``OBJECT``), and paired with :func:`find_pairs` when the
      discovery date is known; without one, the earliest epoch of each
      mission/instrument/filter is the reference of the later ones.

    Parameters
    ----------
    root : path-like
        The folder.
    """

    name = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise AstridInputError(f"{self.root}: local archive folder does not exist")
        self.is_survey = (self.root / MANIFEST_NAME).is_file()
        self._files: list[dict] | None = None

    def __repr__(self) -> str:
        return f"LocalArchive({str(self.root)!r})"

    # -- scanning ------------------------------------------------------- #
    def files(self) -> list[dict]:
        """Every FITS image under the folder with its header metadata (scanned once)."""
        if self._files is None:
            found = []
            for path in sorted(self.root.rglob("*")):
                if (
                    path.is_file()
                    and path.name.lower().endswith(_FITS_SUFFIXES)
                    and not path.name.startswith(".")
                ):
                    info = _scan(path)
                    if info is not None:
                        info["path"] = path
                        found.append(info)
            self._files = found
        return self._files

    def targets(self, config: AcquisitionConfig) -> Table:
        if self.is_survey:
            manifest = Manifest.load(self.root)
            names = list(manifest.targets)
            if config.targets:
                wanted = set(config.targets) | {safe_name(t) for t in config.targets}
                names = [
                    n for n in names if n in wanted or manifest.targets[n].get("object") in wanted
                ]
            return _target_table(
                names,
                [manifest.targets[n].get("ra") for n in names],
                [manifest.targets[n].get("dec") for n in names],
                [manifest.targets[n].get("discovery_mjd") for n in names],
            )
        if config.catalog is not None:
            return super().targets(config)
        objects = sorted({f["object"] for f in self.files() if f["object"]})
        if config.targets:
            objects = [o for o in objects if o in set(config.targets)]
        return _target_table(
            objects, [None] * len(objects), [None] * len(objects), [None] * len(objects)
        )

    def query(self, targets: Table, config: AcquisitionConfig) -> Table:
        """One observation row per file that shows a target (URL = the file's path)."""
        if self.is_survey:
            manifest = Manifest.load(self.root)
            rows = []
            for name in targets["name"]:
                for record in manifest.targets.get(str(name), {}).get("files", []):
                    rows.append(
                        {
                            "target": str(name),
                            "obsid": record["path"],
                            "obs_collection": record.get("mission", ""),
                            "instrument_name": record.get("instrument", ""),
                            "filters": record.get("filter", ""),
                            "t_min": record.get("mjd"),
                            "t_exptime": record.get("exptime"),
                            "url": str(self.root / record["path"]),
                            "role": record["role"],
                        }
                    )
            return standardise_observations(_rows_table(rows))
        coords = None
        if len(targets) and np.all(np.isfinite(np.asarray(targets["ra"], dtype=float))):
            coords = SkyCoord(
                np.asarray(targets["ra"], dtype=float) * u.deg,
                np.asarray(targets["dec"], dtype=float) * u.deg,
            )
        rows = []
        names = [str(n) for n in targets["name"]]
        for info in self.files():
            meta = info["meta"]
            if coords is not None:
                if info["wcs"] is None:
                    continue
                inside = np.atleast_1d(
                    info["wcs"].footprint_contains(coords)
                )  # all targets at once
                shown = [n for n, hit in zip(names, inside) if hit]
            else:
                shown = [n for n in names if n == info["object"]]
            for name in shown:
                rows.append(
                    {
                        "target": str(name),
                        "obsid": str(info["path"].relative_to(self.root)),
                        "obs_collection": meta.telescope or "",
                        "instrument_name": meta.instrument or "",
                        "filters": meta.filter or "",
                        "t_min": meta.obs_time.mjd if meta.obs_time is not None else None,
                        "t_exptime": meta.exptime,
                        "url": str(info["path"]),
                        "filename": info["path"].name,
                    }
                )
        return standardise_observations(_rows_table(rows))

    def pairs(
        self, observations: Table, targets: Table, config: AcquisitionConfig
    ) -> tuple[Table, Table]:
        if self.is_survey:
            return self._survey_pairs(targets)
        dated = ~np.asarray(targets["discovery"].mask) if len(targets) else np.zeros(0, bool)
        if dated.any():
            pairs, rejected = super().pairs(observations, targets[dated], config)
        else:
            pairs, rejected = _empty_pairs(), rejections_table([])
        undated_pairs, undated_rejected = [], []
        for row in targets[~dated]:
            p, r = _earliest_as_reference(
                observations[observations["target"] == str(row["name"])], str(row["name"]), config
            )
            undated_pairs.append(p)
            undated_rejected.append(r)
        return (
            stack_tables([pairs] + undated_pairs, _empty_pairs()),
            stack_tables([rejected] + undated_rejected, rejections_table([])),
        )

    def _survey_pairs(self, targets: Table) -> tuple[Table, Table]:
        manifest = Manifest.load(self.root)
        rows = []
        wanted = {str(n) for n in targets["name"]}
        for pair in manifest.pairs():
            if pair.target not in wanted:
                continue
            records = {r["path"]: r for r in manifest.targets[pair.target].get("files", [])}
            ref_rel = pair.reference.relative_to(self.root).as_posix()
            sci_rel = pair.science.relative_to(self.root).as_posix()
            ref, sci = records.get(ref_rel, {}), records.get(sci_rel, {})
            rows.append(
                {
                    "target": pair.target,
                    "mission": pair.mission or ref.get("mission", ""),
                    "instrument": pair.instrument or ref.get("instrument", ""),
                    "filter": pair.filter or ref.get("filter", ""),
                    "ref_obsid": ref_rel,
                    "sci_obsid": sci_rel,
                    "ref_url": str(pair.reference),
                    "sci_url": str(pair.science),
                    "ref_filename": pair.reference.name,
                    "sci_filename": pair.science.name,
                    "ref_t_min": ref.get("mjd", np.nan),
                    "sci_t_min": sci.get("mjd", np.nan),
                    "ref_size": ref.get("size", -1),
                    "sci_size": sci.get("size", -1),
                    "ref_checksum": f"sha256:{ref['sha256']}" if ref.get("sha256") else "",
                    "sci_checksum": f"sha256:{sci['sha256']}" if sci.get("sha256") else "",
                }
            )
        pairs = _rows_table(rows) if rows else _empty_pairs()
        return pairs, rejections_table([])

    def fetch(
        self,
        pairs: Table,
        out_dir: str | os.PathLike,
        config: AcquisitionConfig | None = None,
        targets: Table | None = None,
    ) -> DownloadReport:
        """Copy the pairs' files into the survey layout under ``out_dir`` (verified, resumable).

        When ``out_dir`` is the survey folder itself, nothing is copied.
        """
        out_dir = Path(out_dir)
        if self.is_survey and out_dir.resolve() == self.root.resolve():
            report = DownloadReport(out_dir=out_dir)
            for row in pairs:
                for col in ("ref_obsid", "sci_obsid"):
                    if str(row[col]) not in report.skipped:
                        report.skipped.append(str(row[col]))
            report.pairs = len(pairs)
            return report
        return download(
            pairs,
            out_dir,
            targets=targets,
            source="local",
            sleep=lambda s: None,
            **_download_options(config),
        )


def _rows_table(rows: list[dict]) -> Table:
    if not rows:
        return Table()
    names = list(dict.fromkeys(k for r in rows for k in r))
    table = Table()
    for name in names:
        values = [r.get(name) for r in rows]
        if all(
            v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
            for v in values
        ):
            table[name] = np.array([np.nan if v is None else float(v) for v in values])
        else:
            table[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return table


def _target_table(names, ra, dec, discovery_mjd) -> Table:
    mjd = np.array([np.nan if v is None else float(v) for v in discovery_mjd], dtype=float)
    mask = ~np.isfinite(mjd)
    t = Time(np.ma.MaskedArray(np.where(mask, 0.0, mjd), mask=mask), format="mjd", scale="tt")
    t.format = "iso"
    t.out_subfmt = "date"
    table = Table()
    table["name"] = Column([str(n) for n in names], dtype=str)
    table["ra"] = Column([np.nan if v is None else float(v) for v in ra], unit=u.deg, dtype=float)
    table["dec"] = Column([np.nan if v is None else float(v) for v in dec], unit=u.deg, dtype=float)
    table["discovery"] = t
    return table


def _earliest_as_reference(
    observations: Table, target: str, config: AcquisitionConfig
) -> tuple[Table, Table]:
    """Pairs without a discovery date: in each mission/instrument/filter the earliest epoch is the reference."""
    if not len(observations):
        return _empty_pairs(), rejections_table([])
    obs = standardise_observations(observations, target=target)
    keys = [
        (m, i, f) if config.require_same_mission else ("", "", f)
        for m, i, f in zip(obs["mission"], obs["instrument"], obs["filter"])
    ]
    all_pairs, all_rejected = [], []
    for key in sorted(set(keys)):
        group = obs[np.array([k == key for k in keys])]
        times = np.asarray(group["t_min"], dtype=float)
        if not np.isfinite(times).any() or len(group) < 2:
            label = "/".join(k for k in key if k) or "?"
            reason = (
                "no observation time"
                if not np.isfinite(times).any()
                else f"no later epoch in the same mission/instrument/filter ({label}) to pair with "
                "(no discovery date: the earliest epoch is the reference)"
            )
            all_rejected.append(
                rejections_table(
                    [
                        {
                            "target": target,
                            "obsid": str(o["obsid"]),
                            "mission": str(o["mission"]),
                            "instrument": str(o["instrument"]),
                            "filter": str(o["filter"]),
                            "t_min": float(o["t_min"]),
                            "role": "",
                            "reason": reason,
                        }
                        for o in group
                    ]
                )
            )
            continue
        # a "discovery" just after the earliest end makes that epoch the reference of every later one
        first = int(np.nanargmin(times))
        t0 = float(group["t_max"][first]) + 1e-6
        pairs, rejected = find_pairs(
            group,
            t0,
            reference_min_days_before=0.0,
            science_max_days_after=1e9,
            require_same_mission=config.require_same_mission,
            max_per_type=None,
            filters=config.filters,
            target=target,
        )
        all_pairs.append(pairs)
        all_rejected.append(rejected)
    return stack_tables(all_pairs, _empty_pairs()), stack_tables(all_rejected, rejections_table([]))


# --------------------------------------------------------------------------- #
# simulated
# --------------------------------------------------------------------------- #


class SimulatedArchive(Archive):
    """Image pairs made by :func:`astrid.simulate.survey`: no network, no data needed.

    Targets are the simulator's fields ``SIM0000``, ``SIM0001``, ...; each has
    one reference/science pair in the preset's mission and filter.

    Parameters
    ----------
    n_fields : int, optional
        Fields to simulate (default: ``config.n_fields``).
    preset : str, optional
        Simulator preset (``"ztf"``, ``"swift_uvot"``; default ``config.preset``).
    seed : int, optional
        Random seed (default ``config.seed``).
    size : int, optional
        Image side in pixels (default ``config.size``).
    """

    name = "simulated"

    def __init__(
        self,
        n_fields: int | None = None,
        preset: str | None = None,
        seed: int | None = None,
        size: int | None = None,
    ):
        self.n_fields, self.preset, self.seed, self.size = n_fields, preset, seed, size

    def __repr__(self) -> str:
        return (
            f"SimulatedArchive(n_fields={self.n_fields}, preset={self.preset!r}, seed={self.seed})"
        )

    @staticmethod
    def _simulate():
        try:
            from .. import simulate
        except ImportError as exc:
            raise AstridArchiveError(
                f"archive 'simulated' needs astrid.simulate, which cannot be imported ({exc})"
            ) from exc
        return simulate

    def _params(self, config: AcquisitionConfig | None) -> dict:
        config = config or AcquisitionConfig()
        return {
            "n_fields": self.n_fields if self.n_fields is not None else config.n_fields,
            "preset": self.preset if self.preset is not None else config.preset,
            "seed": self.seed if self.seed is not None else config.seed,
            "size": self.size if self.size is not None else config.size,
        }

    def _preset(self, config: AcquisitionConfig | None) -> dict:
        name = self._params(config)["preset"]
        presets = getattr(self._simulate(), "PRESETS", {})
        if presets and name not in presets:
            raise AstridInputError(
                f"unknown simulator preset {name!r}; choose one of {', '.join(presets)}"
            )
        return presets.get(name, {})

    def targets(self, config: AcquisitionConfig) -> Table:
        n = self._params(config)["n_fields"]
        return _target_table([f"SIM{i:04d}" for i in range(n)], [None] * n, [None] * n, [None] * n)

    def query(self, targets: Table, config: AcquisitionConfig) -> Table:
        """The planned simulated epochs: one reference and one science image per field."""
        preset = self._preset(config)
        rows = []
        for name in targets["name"]:
            for role in ("reference", "science"):
                rows.append(
                    {
                        "target": str(name),
                        "obsid": f"{name}/{role}",
                        "obs_collection": preset.get("mission", "SIMULATED"),
                        "instrument_name": preset.get("instrument", ""),
                        "filters": preset.get("filter", ""),
                        "t_exptime": preset.get(f"exptime_{role}"),
                        "url": "",
                        "role": role,
                    }
                )
        return standardise_observations(_rows_table(rows))

    def pairs(
        self, observations: Table, targets: Table, config: AcquisitionConfig
    ) -> tuple[Table, Table]:
        preset = self._preset(config)
        rows = [
            {
                "target": str(n),
                "mission": preset.get("mission", "SIMULATED"),
                "instrument": preset.get("instrument", ""),
                "filter": preset.get("filter", ""),
                "ref_obsid": f"{n}/reference",
                "sci_obsid": f"{n}/science",
                "ref_url": "",
                "sci_url": "",
            }
            for n in targets["name"]
        ]
        return (_rows_table(rows) if rows else _empty_pairs()), rejections_table([])

    def fetch(
        self,
        pairs: Table,
        out_dir: str | os.PathLike,
        config: AcquisitionConfig | None = None,
        targets: Table | None = None,
    ) -> DownloadReport:
        """Simulate the survey into ``out_dir``; fields already there with intact files are kept."""
        params = self._params(config)
        out_dir = Path(out_dir)
        report = DownloadReport(out_dir=out_dir)
        before: dict[str, str] = {}
        if (out_dir / MANIFEST_NAME).is_file():
            old = Manifest.load(out_dir)
            before = {
                r["path"]: r.get("sha256")
                for e in old.targets.values()
                for r in e.get("files", [])
                if old.has_file(r["path"])
            }
        manifest = self._simulate().survey(
            out_dir,
            n_fields=params["n_fields"],
            preset=params["preset"],
            seed=params["seed"],
            size=params["size"],
        )
        if not isinstance(manifest, Manifest):
            manifest = Manifest.load(out_dir)
        for entry in manifest.targets.values():
            for record in entry.get("files", []):
                kept = record["path"] in before and before[record["path"]] == record.get("sha256")
                (report.skipped if kept else report.downloaded).append(record["path"])
        report.pairs = sum(1 for _ in manifest.pairs())
        return report


# --------------------------------------------------------------------------- #
# choosing and running
# --------------------------------------------------------------------------- #


def get_archive(name: str = "simulated", **kwargs) -> Archive:
    """The archive called ``name``.

    Parameters
    ----------
    name : {"simulated", "mast", "local"}
        ``"simulated"`` (the default: no network, no data),
        ``"mast"`` (probes MAST with a 3 s timeout first and raises
        :class:`AstridArchiveError` when it is unreachable) or ``"local"``
        (needs ``root=``).
    **kwargs
        Passed to :class:`SimulatedArchive`, :class:`MastArchive` or
        :class:`LocalArchive`.

    Returns
    -------
    Archive
        A new :class:`SimulatedArchive`, :class:`MastArchive` or
        :class:`LocalArchive` built with ``**kwargs``.

    Raises
    ------
    AstridInputError
        Unknown name or bad arguments.
    AstridArchiveError
        MAST is not reachable.
    """
    key = str(name).strip().lower()
    if key == "simulated":
        return SimulatedArchive(**kwargs)
    if key == "mast":
        return MastArchive(**kwargs)
    if key == "local":
        if "root" not in kwargs:
            raise AstridInputError(
                "get_archive('local') needs root=<folder of FITS files or a survey folder>"
            )
        return LocalArchive(**kwargs)
    raise AstridInputError(f"unknown archive {name!r}; choose one of {', '.join(ARCHIVES)}")


def _archive_for(config: AcquisitionConfig, sleep, session) -> Archive:
    if config.archive == "mast":
        return MastArchive(check_timeout=config.check_timeout_s, session=session, sleep=sleep)
    if config.archive == "local":
        return LocalArchive(config.local_dir)
    return SimulatedArchive()


@dataclass
class AcquisitionResult:
    """Everything a :func:`run` did or, with ``dry_run``, would do.

    Attributes
    ----------
    config : AcquisitionConfig
    targets : astropy.table.Table
        The targets processed.
    observations : astropy.table.Table
        All observations found.
    pairs : astropy.table.Table
        Pairs worth differencing.
    rejected : astropy.table.Table
        Observations not used, with the reason.
    plan : astropy.table.Table
        One row per file: ``target``, ``role``, ``mission``, ``instrument``,
        ``filter``, ``obsid``, ``t_min``, ``size``, ``url``, ``path``
        (relative to ``out_dir``) and ``status`` (``"to fetch"`` or
        ``"present"`` in a dry run; ``"downloaded"``, ``"present"`` or
        ``"failed"`` after a real run).
    report : DownloadReport or None
        None in a dry run.
    dry_run : bool
    """

    config: AcquisitionConfig
    targets: Table
    observations: Table
    pairs: Table
    rejected: Table
    plan: Table
    report: DownloadReport | None = None
    dry_run: bool = False

    def summary(self) -> Table:
        """Per target: observations found, pairs kept, observations rejected, and whether it is usable."""
        names = [str(n) for n in self.targets["name"]]

        def count(table, name):
            return (
                int(np.sum(table["target"] == name))
                if len(table) and "target" in table.colnames
                else 0
            )

        out = Table()
        out["target"] = Column(names, dtype=str)
        out["observations"] = [count(self.observations, n) for n in names]
        out["pairs"] = [count(self.pairs, n) for n in names]
        out["rejected"] = [count(self.rejected, n) for n in names]
        out["usable"] = out["pairs"] > 0
        return out

    def __str__(self) -> str:
        usable = int(np.sum(self.summary()["usable"])) if len(self.targets) else 0
        head = (
            f"{'dry run' if self.dry_run else 'run'} on {self.config.archive}: {len(self.targets)} target(s), "
            f"{usable} with usable pairs, {len(self.pairs)} pair(s), {len(self.rejected)} observation(s) rejected"
        )
        return head + ("" if self.report is None else f"; {self.report}")


# The columns of an acquisition plan (one row per file), and their types when it is empty.
_PLAN_COLUMNS = (
    "target",
    "role",
    "mission",
    "instrument",
    "filter",
    "obsid",
    "t_min",
    "size",
    "url",
    "path",
    "status",
)
_PLAN_DTYPES = (str, str, str, str, str, str, float, np.int64, str, str, str)


def _plan_table(rows: list) -> Table:
    """A plan table from rows of values in :data:`_PLAN_COLUMNS` order (typed even when empty)."""
    if not rows:
        return Table(names=_PLAN_COLUMNS, dtype=_PLAN_DTYPES)
    return Table(rows=rows, names=_PLAN_COLUMNS)


def _plan(pairs: Table, out_dir: Path, decompress: bool) -> Table:
    manifest = Manifest(out_dir) if (out_dir / MANIFEST_NAME).is_file() else None
    rows, seen = [], set()
    for row in pairs:
        for role, prefix in (("reference", "ref_"), ("science", "sci_")):
            url = str(row[prefix + "url"]) if prefix + "url" in row.colnames else ""
            target = str(row["target"])
            obsid = str(row[prefix + "obsid"]) if prefix + "obsid" in row.colnames else ""
            filename = str(row[prefix + "filename"]) if prefix + "filename" in row.colnames else ""
            fallback = f"{role}_{safe_name(obsid)}"
            name = (
                destination_name(url, filename or None, decompress=decompress, fallback=fallback)
                if url
                else ""
            )
            rel = f"{safe_name(target)}/{role}/{name}" if url else ""
            if (target, role, obsid) in seen:
                continue
            seen.add((target, role, obsid))
            present = bool(rel) and manifest is not None and manifest.has_file(rel)

            def value(col, default):
                return row[prefix + col] if prefix + col in row.colnames else default

            rows.append(
                {
                    "target": target,
                    "role": role,
                    "mission": str(value("mission", row["mission"])),
                    "instrument": str(value("instrument", row["instrument"])),
                    "filter": str(row["filter"]),
                    "obsid": obsid,
                    "t_min": float(value("t_min", np.nan)),
                    "size": int(value("size", -1)),
                    "url": url,
                    "path": rel,
                    "status": "present" if present else "to fetch",
                }
            )
    table = _plan_table([[r[n] for n in _PLAN_COLUMNS] for r in rows])
    if rows:
        table["size"].unit = "byte"
    return table


def run(
    config: AcquisitionConfig | str | os.PathLike | dict,
    dry_run: bool = False,
    *,
    archive: Archive | None = None,
    sleep: Callable[[float], None] = time.sleep,
    session=None,
    progress: Callable[[str], None] | None = None,
) -> AcquisitionResult:
    """Acquire reference/science pairs as a configuration says, in resumable chunks.

    Parameters
    ----------
    config : AcquisitionConfig, path-like or dict
        The configuration, a YAML file, or a mapping.
    dry_run : bool, optional
        Query and pair, but download nothing; :attr:`AcquisitionResult.plan`
        lists what would be fetched (queries still go to the archive and
        into the checkpoint, so the real run does not repeat them).
    archive : Archive, optional
        Use this archive instead of the one ``config.archive`` names.
    sleep : callable, optional
        Wait function for back-off and chunk pauses (tests pass a recorder).
    session : requests.Session, optional
        HTTP session for MAST downloads.
    progress : callable, optional
        Called with one line of text per chunk.

    Returns
    -------
    AcquisitionResult
        The targets, observations, pairs and rejections found, the plan of
        files and, unless ``dry_run``, the download report.

    Raises
    ------
    AstridArchiveError
        The archive is unreachable (MAST is probed first, 3 s).
    AstridInputError
        A bad configuration.
    """
    if isinstance(config, (str, os.PathLike)):
        config = AcquisitionConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = AcquisitionConfig.from_dict(config)
    elif not isinstance(config, AcquisitionConfig):
        raise AstridInputError(
            f"config must be an AcquisitionConfig, a YAML path or a dict, got {type(config).__name__}"
        )
    archive = archive or _archive_for(config, sleep, session)
    targets = archive.targets(config)
    all_obs, all_pairs, all_rejected = [], [], []
    report = None if dry_run else DownloadReport(out_dir=config.out_dir)
    rows = list(range(len(targets)))
    n_chunks = max(1, -(-len(rows) // config.chunk_size))
    for number, chunk in enumerate(chunks(rows, config.chunk_size), start=1):
        subset = targets[chunk]
        observations = archive.query(subset, config)
        pairs, rejected = archive.pairs(observations, subset, config)
        all_obs.append(observations)
        all_pairs.append(pairs)
        all_rejected.append(rejected)
        if not dry_run and len(pairs):
            chunk_report = archive.fetch(pairs, config.out_dir, config, targets=subset)
            _merge(report, chunk_report)
        if progress is not None:
            progress(
                f"chunk {number}/{n_chunks}: {len(subset)} target(s), {len(observations)} observation(s), "
                f"{len(pairs)} pair(s)"
            )
        if number < n_chunks and config.chunk_pause_s > 0:
            sleep(config.chunk_pause_s)
    pairs = stack_tables(all_pairs, _empty_pairs())
    simulated = isinstance(archive, SimulatedArchive)
    if simulated:
        plan = _simulated_plan(pairs) if dry_run else _manifest_plan(config.out_dir, report)
    else:
        plan = _plan(pairs, config.out_dir, config.decompress)
    if report is not None and len(plan) and not simulated:
        failed = {(f.get("target"), f.get("role"), str(f.get("obsid"))) for f in report.failed}
        plan["status"] = [
            "failed"
            if (r["target"], r["role"], r["obsid"]) in failed
            or (safe_name(r["target"]), r["role"], r["obsid"]) in failed
            else ("downloaded" if r["path"] in report.downloaded else "present")
            for r in plan
        ]
    return AcquisitionResult(
        config=config,
        targets=targets,
        observations=stack_tables(all_obs, Table()),
        pairs=pairs,
        rejected=stack_tables(all_rejected, rejections_table([])),
        plan=plan,
        report=report,
        dry_run=dry_run,
    )


def _simulated_plan(pairs: Table) -> Table:
    rows = []
    for row in pairs:
        for role in ("reference", "science"):
            rows.append(
                [
                    str(row["target"]),
                    role,
                    str(row["mission"]),
                    str(row["instrument"]),
                    str(row["filter"]),
                    f"{row['target']}/{role}",
                    np.nan,
                    -1,
                    "",
                    f"{row['target']}/{role}/",
                    "to simulate",
                ]
            )
    return _plan_table(rows)


def _manifest_plan(out_dir: Path, report: DownloadReport) -> Table:
    """The plan of a finished simulated run: every file of the survey's manifest."""
    rows = []
    if (out_dir / MANIFEST_NAME).is_file():
        manifest = Manifest.load(out_dir)
        downloaded = set(report.downloaded)
        for target, entry in manifest.targets.items():
            for record in entry.get("files", []):
                rows.append(
                    [
                        target,
                        record["role"],
                        str(record.get("mission", "")),
                        str(record.get("instrument", "")),
                        str(record.get("filter", "")),
                        record["path"],
                        float(record.get("mjd") or np.nan),
                        int(record.get("size", -1)),
                        "",
                        record["path"],
                        "downloaded" if record["path"] in downloaded else "present",
                    ]
                )
    return _plan_table(rows)


def _merge(total: DownloadReport, part: DownloadReport) -> None:
    total.downloaded.extend(part.downloaded)
    total.skipped.extend(p for p in part.skipped if p not in total.skipped)
    total.failed.extend(part.failed)
    total.pairs += part.pairs
    total.attempts += part.attempts
