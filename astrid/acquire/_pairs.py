"""Reference/science pairing that keeps only pairs worth differencing.

A pair is useful only when both images come from the same mission, the same
instrument and the same filter, the reference was taken long enough before
the explosion that it holds no supernova light, and the science image close
enough after discovery to catch it. Everything else is rejected *with the
reason*, because "why did I get 8 pairs out of 19 supernovae" must have an
answer (cross-mission references, UVW1 against UVM2, a reference taken a few
months before discovery).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np
from astropy.table import Column, Table, vstack
from astropy.time import Time

from .._utils import json_safe
from ..errors import AstridInputError
from ._filters import normalise_filter, normalise_instrument, normalise_mission

__all__ = ["find_pairs", "standardise_observations", "OBSERVATION_COLUMNS", "PAIR_FILE_COLUMNS"]

#: Columns of a standard observation table, in order (extra columns are kept after them).
OBSERVATION_COLUMNS = (
    "target",
    "obsid",
    "mission",
    "instrument",
    "filter",
    "filter_raw",
    "t_min",
    "t_max",
    "exptime",
    "url",
    "filename",
    "size",
    "checksum",
)

#: Observation columns copied into a pair with a ``ref_``/``sci_`` prefix.
PAIR_FILE_COLUMNS = (
    "obsid",
    "mission",
    "instrument",
    "filter_raw",
    "t_min",
    "t_max",
    "exptime",
    "url",
    "filename",
    "size",
    "checksum",
    "obs_id",
    "dataproduct_type",
    "s_ra",
    "s_dec",
)

# Archive column names of each standard column (MAST first).
_SOURCE_NAMES = {
    "mission": ("mission", "obs_collection", "telescope", "telescop"),
    "instrument": ("instrument", "instrument_name", "instrume"),
    "filter_raw": ("filter_raw", "filters", "filter", "band"),
    "t_min": ("t_min", "mjd", "mjd_obs", "mjd-obs"),
    "t_max": ("t_max",),
    "exptime": ("exptime", "t_exptime", "exposure"),
    "url": ("url", "dataURL", "data_url", "access_url"),
    "obsid": ("obsid", "obs_id", "id"),
    "size": ("size", "access_estsize"),
}
_EXTRA_COLUMNS = ("obs_id", "dataproduct_type", "calib_level", "s_ra", "s_dec", "target_name")


def _column_values(table: Table, names: Iterable[str]) -> list[Any] | None:
    lower = {c.lower(): c for c in table.colnames}
    for name in names:
        if name.lower() in lower:
            col = table[lower[name.lower()]]
            mask = np.ma.getmaskarray(col) if hasattr(col, "mask") else np.zeros(len(table), bool)
            return [None if m else json_safe(v) for v, m in zip(col, mask)]
    return None


def _float_column(values: list[Any] | None, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    if values is not None:
        for i, v in enumerate(values):
            try:
                out[i] = float(v) if v is not None and v != "" else np.nan
            except (TypeError, ValueError):
                out[i] = np.nan
    return out


def standardise_observations(observations: Table, target: str | None = None) -> Table:
    """An observation table with AstrID's standard columns, from MAST's or any similar table.

    MAST's ``obs_collection``, ``instrument_name``, ``filters``,
    ``t_exptime`` and ``dataURL`` become ``mission``, ``instrument``,
    ``filter_raw`` (with ``filter`` normalised by
    :func:`~astrid.acquire.normalise_filter`), ``exptime`` and ``url``.
    A table already in the standard form passes through unchanged in content.

    Parameters
    ----------
    observations : astropy.table.Table
        Observations from an archive query.
    target : str, optional
        Target name written into the ``target`` column when the table has none.

    Returns
    -------
    astropy.table.Table
        Columns :data:`OBSERVATION_COLUMNS` (``t_min``/``t_max`` in MJD,
        ``exptime`` in seconds, ``size`` in bytes, -1 when unknown), then
        ``obs_id``, ``dataproduct_type``, ``calib_level``, ``s_ra``, ``s_dec``
        where the source has them.
    """
    n = len(observations)
    get = lambda key: _column_values(observations, _SOURCE_NAMES.get(key, (key,)))  # noqa: E731
    missions = [normalise_mission(v) for v in (get("mission") or [None] * n)]
    instruments = [normalise_instrument(v) for v in (get("instrument") or [None] * n)]
    raw_filters = [("" if v is None else str(v).strip()) for v in (get("filter_raw") or [None] * n)]
    obsids = get("obsid") or list(range(n))
    t_min = _float_column(get("t_min"), n)
    t_max = _float_column(get("t_max"), n)
    t_max = np.where(np.isfinite(t_max), t_max, t_min)
    targets = _column_values(observations, ("target",)) or [target] * n
    sizes = _float_column(get("size"), n)

    out = Table()
    out["target"] = Column([str(t) if t is not None else "" for t in targets], dtype=str)
    out["obsid"] = Column([str(o) for o in obsids], dtype=str)
    out["mission"] = Column([m or "" for m in missions], dtype=str)
    out["instrument"] = Column([i or "" for i in instruments], dtype=str)
    out["filter"] = Column(
        [normalise_filter(f, m, i) or "" for f, m, i in zip(raw_filters, missions, instruments)],
        dtype=str,
    )
    out["filter_raw"] = Column(raw_filters, dtype=str)
    out["t_min"] = Column(t_min, unit="d", description="start, MJD")
    out["t_max"] = Column(t_max, unit="d", description="end, MJD")
    out["exptime"] = Column(_float_column(get("exptime"), n), unit="s")

    def text(values: list[Any] | None) -> Column:
        return Column([str(v) if v else "" for v in (values or [None] * n)], dtype=str)

    out["url"] = text(get("url"))
    out["filename"] = text(_column_values(observations, ("filename", "productFilename")))
    out["size"] = Column(np.where(np.isfinite(sizes), sizes, -1).astype(np.int64), unit="byte")
    out["checksum"] = text(_column_values(observations, ("checksum",)))
    for name in _EXTRA_COLUMNS:
        values = _column_values(observations, (name,))
        if values is not None and name not in out.colnames:
            if all(isinstance(v, (int, float)) or v is None for v in values):
                out[name] = _float_column(values, n)
            else:
                out[name] = Column(["" if v is None else str(v) for v in values], dtype=str)
    out.meta.update(observations.meta)
    return out


def _mjd(value) -> float:
    if isinstance(value, Time):
        if np.ndim(value) != 0:
            raise AstridInputError("discovery_time must be a single time, not an array")
        if getattr(value, "masked", False) and np.all(value.mask):
            raise AstridInputError(
                "discovery_time is masked (unknown); pairing needs a discovery date"
            )
        return float(value.mjd)
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise AstridInputError(
            f"discovery_time must be an astropy Time or an MJD, got {value!r}"
        ) from exc
    if not np.isfinite(out):
        raise AstridInputError("discovery_time is not finite")
    return out


def _days(value: float) -> str:
    return f"{value:.1f} d"


def _group_label(key: tuple) -> str:
    return "/".join(k for k in key if k) or "?"


def find_pairs(
    observations: Table,
    discovery_time: Time | float,
    reference_min_days_before: float = 365.0,
    science_max_days_after: float = 60.0,
    require_same_mission: bool = True,
    max_per_type: int | None = 3,
    *,
    missions: Iterable[str] | None = None,
    instruments: Iterable[str] | None = None,
    filters: Iterable[str] | None = None,
    target: str | None = None,
) -> tuple[Table, Table]:
    """Reference/science pairs of one target that are worth differencing, and every rejection with its reason.

    Parameters
    ----------
    observations : astropy.table.Table
        Observations of one target (from :func:`query_mast` or any table
        that :func:`standardise_observations` understands).
    discovery_time : astropy.time.Time or float
        Discovery date (a Time or an MJD).
    reference_min_days_before : float, optional
        A reference must end at least this many days before discovery
        (default 365: a year, so that it holds no supernova light).
    science_max_days_after : float, optional
        A science image must start between discovery and this many days
        after it (default 60).
    require_same_mission : bool, optional
        Pair only within one mission *and* instrument (default True). With
        False, any two observations in the same normalised filter pair up
        (cross-mission pairs rarely difference well: other PSF, pixel scale
        and bandpass).
    max_per_type : int or None, optional
        Keep at most this many references (the deepest: longest exposure,
        then closest to discovery) and science images (the earliest after
        discovery) per mission/instrument/filter; the rest are rejected as
        surplus. Every kept reference pairs with every kept science image.
        None keeps all.
    missions, instruments, filters : iterable of str, optional
        Keep only these (compared after normalisation, so ``"uvw1"`` matches
        ``"UVW1"``); others are rejected as not requested.
    target : str, optional
        Target name for the output (default: the ``target`` column).

    Returns
    -------
    pairs : astropy.table.Table
        One row per pair: ``target``, ``mission``, ``instrument``,
        ``filter``, ``ref_days_before``, ``sci_days_after``, and the
        reference's and science image's ``obsid``, ``t_min``, ``t_max``,
        ``exptime``, ``url``, ``filename``, ``size``, ``checksum``, ... with
        prefixes ``ref_`` and ``sci_``.
    rejected : astropy.table.Table
        One row per observation not used: ``target``, ``obsid``,
        ``mission``, ``instrument``, ``filter``, ``t_min``, ``role`` (what it
        could have been: ``reference``, ``science`` or empty) and ``reason``,
        e.g. ``"reference too close to discovery (120.0 d < 365 d)"``,
        ``"cross-mission: ..."`` or ``"no science epoch in the same
        mission/instrument/filter (UVW1)"``.

    Raises
    ------
    AstridInputError
        Negative windows, a bad ``max_per_type`` or discovery time.
    """
    if reference_min_days_before < 0 or science_max_days_after < 0:
        raise AstridInputError(
            "reference_min_days_before and science_max_days_after must be >= 0, got "
            f"{reference_min_days_before} and {science_max_days_after}"
        )
    if max_per_type is not None and int(max_per_type) < 1:
        raise AstridInputError(f"max_per_type must be >= 1 or None, got {max_per_type}")
    t0 = _mjd(discovery_time)
    obs = standardise_observations(observations, target=target)
    if target is not None:
        obs["target"] = target
    name = target if target is not None else (obs["target"][0] if len(obs) else "")
    pairing = _Pairing(
        obs,
        name,
        t0,
        reference_min_days_before,
        science_max_days_after,
        require_same_mission,
        max_per_type,
    )
    refs, scis = pairing.groups(missions, instruments, filters)
    rows = pairing.pair_rows(refs, scis)

    pairs = _pairs_table(rows, obs)
    rejected_table = rejections_table(pairing.rejected)
    pairs.meta["target"] = name
    rejected_table.meta["target"] = name
    return pairs, rejected_table


class _Pairing:
    """One target's observations on their way to pairs: columns, windows, rejections so far."""

    def __init__(
        self,
        obs: Table,
        name: str,
        t0: float,
        reference_min_days_before: float,
        science_max_days_after: float,
        require_same_mission: bool,
        max_per_type: int | None,
    ):
        self.obs, self.name, self.t0 = obs, name, t0
        self.reference_min_days_before = reference_min_days_before
        self.science_max_days_after = science_max_days_after
        self.require_same_mission = require_same_mission
        self.max_per_type = max_per_type
        # plain lists: indexing table columns element by element is slow for long observation lists
        self.col = {
            c: obs[c].tolist()
            for c in (
                "target",
                "obsid",
                "mission",
                "instrument",
                "filter",
                "filter_raw",
                "t_min",
                "t_max",
                "exptime",
            )
        }
        self.rejected: list[dict] = []

    def reject(self, i: int, role: str, reason: str) -> None:
        col = self.col
        self.rejected.append(
            {
                "target": str(col["target"][i]) or self.name,
                "obsid": col["obsid"][i],
                "mission": col["mission"][i],
                "instrument": col["instrument"][i],
                "filter": col["filter"][i] or col["filter_raw"][i],
                "t_min": float(col["t_min"][i]),
                "role": role,
                "reason": reason,
            }
        )

    def groups(
        self, missions, instruments, filters
    ) -> tuple[dict[tuple, list[int]], dict[tuple, list[int]]]:
        """(references, science images) by mission/instrument/filter key; the rest rejected."""
        col, obs = self.col, self.obs
        products = obs["dataproduct_type"].tolist() if "dataproduct_type" in obs.colnames else None
        wanted_missions = {normalise_mission(m) for m in missions} if missions else None
        wanted_instruments = {normalise_instrument(i) for i in instruments} if instruments else None
        wanted_filters = list(filters) if filters else None
        refs: dict[tuple, list[int]] = defaultdict(list)
        scis: dict[tuple, list[int]] = defaultdict(list)
        for i in range(len(obs)):
            mission, instrument, filt = col["mission"][i], col["instrument"][i], col["filter"][i]
            start, end = float(col["t_min"][i]), float(col["t_max"][i])
            if products is not None and products[i] not in ("", "image"):
                self.reject(i, "", f"not an image ({products[i]})")
                continue
            if wanted_missions is not None and mission not in wanted_missions:
                self.reject(
                    i,
                    "",
                    f"mission {mission or '?'} not requested ({', '.join(sorted(wanted_missions))})",
                )
                continue
            if wanted_instruments is not None and instrument not in wanted_instruments:
                self.reject(
                    i,
                    "",
                    f"instrument {instrument or '?'} not requested "
                    f"({', '.join(sorted(wanted_instruments))})",
                )
                continue
            if not filt:
                self.reject(i, "", "no filter recorded")
                continue
            if wanted_filters is not None:
                allowed = {normalise_filter(f, mission, instrument) for f in wanted_filters}
                if filt not in allowed:
                    self.reject(
                        i,
                        "",
                        f"filter {filt} not requested ({', '.join(sorted(a for a in allowed if a))})",
                    )
                    continue
            if not np.isfinite(start):
                self.reject(i, "", "no observation time")
                continue
            key = (mission, instrument, filt) if self.require_same_mission else (filt,)
            self._place(i, key, start, end, refs, scis)
        return refs, scis

    def _place(self, i: int, key: tuple, start: float, end: float, refs: dict, scis: dict) -> None:
        """Observation ``i`` as a reference, a science image or rejected, by its time."""
        t0, before_min, after_max = (
            self.t0,
            self.reference_min_days_before,
            self.science_max_days_after,
        )
        if end <= t0 - before_min:
            refs[key].append(i)
        elif start < t0:
            before = t0 - end
            if before > 0:
                self.reject(
                    i,
                    "reference",
                    f"reference too close to discovery ({_days(before)} < {before_min:g} d)",
                )
            else:
                self.reject(
                    i,
                    "reference",
                    f"spans the discovery date (starts {_days(t0 - start)} before it)",
                )
        elif start <= t0 + after_max:
            scis[key].append(i)
        else:
            self.reject(
                i,
                "science",
                f"science too late after discovery ({_days(start - t0)} > {after_max:g} d)",
            )

    def partner_note(self, key: tuple, pool: dict[tuple, list[int]], kind: str) -> str:
        """Why a group has no partner: the same filter elsewhere (cross-mission), another filter (cross-filter)."""
        what = (
            kind
            if kind == "science"
            else f"reference (>= {self.reference_min_days_before:g} d before discovery)"
        )
        if self.require_same_mission:
            filt = key[2]
            same_filter = sorted(
                {
                    _group_label(k[:2])
                    for k, v in pool.items()
                    if v and k[2] == filt and k[:2] != key[:2]
                }
            )
            if same_filter:
                return (
                    f"cross-mission: no {what} epoch in {_group_label(key)}; {kind} in {filt} only from "
                    f"{', '.join(same_filter)} (require_same_mission=True)"
                )
            other_filters = sorted({k[2] for k, v in pool.items() if v and k[:2] == key[:2]})
            base = f"no {what} epoch in the same mission/instrument/filter ({filt})"
            if other_filters:
                return f"{base}; {kind} only in {', '.join(other_filters)} (cross-filter pairs are not differenced)"
            other_missions = sorted(
                {_group_label(k[:2]) for k, v in pool.items() if v and k[:2] != key[:2]}
            )
            if other_missions:
                return f"cross-mission: {base}; {kind} only from {', '.join(other_missions)} (require_same_mission=True)"
            return base
        filt = key[0]
        other_filters = sorted({k[0] for k, v in pool.items() if v and k[0] != filt})
        base = f"no {what} epoch in the same filter ({filt})"
        return f"{base}; {kind} only in {', '.join(other_filters)}" if other_filters else base

    def pair_rows(self, refs: dict[tuple, list[int]], scis: dict[tuple, list[int]]) -> list[dict]:
        """Every kept reference with every kept science image, group by group; the rest rejected."""
        col, t0, max_per_type = self.col, self.t0, self.max_per_type
        rows: list[dict] = []
        for key in sorted(set(refs) | set(scis)):
            ref_idx, sci_idx = refs.get(key, []), scis.get(key, [])
            if not sci_idx:
                reason = self.partner_note(key, scis, "science")
                for i in ref_idx:
                    self.reject(i, "reference", reason)
                continue
            if not ref_idx:
                reason = self.partner_note(key, refs, "reference")
                for i in sci_idx:
                    self.reject(i, "science", reason)
                continue
            exptime = np.nan_to_num(np.asarray(col["exptime"], dtype=float), nan=0.0)
            ref_idx = sorted(ref_idx, key=lambda i: (-exptime[i], t0 - float(col["t_max"][i])))
            sci_idx = sorted(sci_idx, key=lambda i: float(col["t_min"][i]))
            if max_per_type is not None:
                limit = f"(max_per_type={max_per_type})"
                for i in ref_idx[max_per_type:]:
                    self.reject(
                        i,
                        "reference",
                        f"surplus reference: kept the {max_per_type} deepest of {len(ref_idx)} {limit}",
                    )
                for i in sci_idx[max_per_type:]:
                    self.reject(
                        i,
                        "science",
                        f"surplus science: kept the {max_per_type} earliest of {len(sci_idx)} {limit}",
                    )
                ref_idx, sci_idx = ref_idx[:max_per_type], sci_idx[:max_per_type]
            rows += [self.pair_row(r, s) for r in ref_idx for s in sci_idx]
        return rows

    def pair_row(self, r: int, s: int) -> dict:
        """The row of reference ``r`` paired with science image ``s``."""
        col, t0 = self.col, self.t0

        def joint(key: str) -> str:
            return col[key][r] if col[key][r] == col[key][s] else f"{col[key][r]}+{col[key][s]}"

        row = {
            "target": str(col["target"][s]) or self.name,
            "mission": joint("mission"),
            "instrument": joint("instrument"),
            "filter": col["filter"][s],
            "discovery_mjd": t0,
            "ref_days_before": t0 - float(col["t_max"][r]),
            "sci_days_after": float(col["t_min"][s]) - t0,
        }
        for key in PAIR_FILE_COLUMNS:
            if key in self.obs.colnames:
                row[f"ref_{key}"] = json_safe(self.obs[key][r])
                row[f"sci_{key}"] = json_safe(self.obs[key][s])
        return row


def _pairs_table(rows: list[dict], obs: Table) -> Table:
    columns = [
        "target",
        "mission",
        "instrument",
        "filter",
        "discovery_mjd",
        "ref_days_before",
        "sci_days_after",
    ]
    for col in PAIR_FILE_COLUMNS:
        if col in obs.colnames:
            columns += [f"ref_{col}", f"sci_{col}"]
    table = Table()
    for col in columns:
        values = [r.get(col) for r in rows]
        source = col[4:] if col[:4] in ("ref_", "sci_") else col
        if source in obs.colnames:
            dtype = obs[source].dtype
        elif col in ("discovery_mjd", "ref_days_before", "sci_days_after"):
            dtype = np.dtype(float)
        else:
            dtype = np.dtype(str)
        if dtype.kind in "fiu":
            fill = -1 if dtype.kind in "iu" else np.nan
            table[col] = Column([fill if v is None else v for v in values], dtype=dtype)
        else:
            table[col] = Column(["" if v is None else str(v) for v in values], dtype=str)
    for col in ("ref_days_before", "sci_days_after"):
        table[col].unit = "d"
    return table


def rejections_table(rejected: list[dict]) -> Table:
    """The table of rejected observations (one row per dict, an empty table for ``[]``).

    Columns ``target``, ``obsid``, ``mission``, ``instrument``, ``filter``,
    ``t_min`` (MJD, float), ``role`` and ``reason``; every dict must hold them.
    """
    names = ("target", "obsid", "mission", "instrument", "filter", "t_min", "role", "reason")
    table = Table()
    for col in names:
        table[col] = Column([r[col] for r in rejected], dtype=float if col == "t_min" else str)
    return table


def stack_tables(tables: list[Table], template: Table | None = None) -> Table:
    """Stack per-target tables (empty list → ``template`` or an empty table)."""
    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        return template[:0] if template is not None else Table()
    if len(tables) == 1:
        return tables[0].copy()
    return vstack(tables, join_type="outer", metadata_conflicts="silent")
