"""Supernova catalogues: local SAI/Asiago files, CSV/ECSV, VizieR; Gaia DR3 field stars.

Every loader returns the same table, so later steps never care where the
targets came from: ``name``, ``ra``/``dec`` in degrees (ICRS, J2000),
``discovery`` (:class:`~astropy.time.Time`, masked where unknown), ``type``,
``host`` and ``line`` (where the row came from). Rows whose coordinates cannot
be parsed are not dropped in silence: they are listed in
``table.meta["rejected"]`` with their line and the reason, and one
:class:`~astrid.errors.AstridWarning` gives their count.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.table import Column, MaskedColumn, Table
from astropy.time import Time

from .._optional import require
from ..errors import AstridFileError, AstridInputError, AstridWarning
from ._errors import AstridArchiveError

__all__ = [
    "load_sn_catalog",
    "select_targets",
    "gaia_stars",
    "parse_ra",
    "parse_dec",
    "DEFAULT_VIZIER_CATALOG",
]

#: VizieR catalogue read by ``load_sn_catalog("vizier")``: the Asiago Supernova Catalogue.
DEFAULT_VIZIER_CATALOG = "B/sn"
GAIA_DR3_CATALOG = "I/355/gaiadr3"

# Column names each standard column may have in the sources we know, most
# specific first; matched case-insensitively.
_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "sn_name", "sn", "snname", "object", "objname", "object_name", "id"),
    "ra": ("ra", "sn_ra", "raj2000", "ra_icrs", "_raj2000", "ra_deg", "radeg", "ra_j2000"),
    "dec": (
        "dec",
        "sn_dec",
        "dej2000",
        "de_icrs",
        "_dej2000",
        "dec_deg",
        "de_deg",
        "dedeg",
        "decl",
        "dec_j2000",
    ),
    "discovery": (
        "discovery",
        "discovery_date",
        "disc_date",
        "discdate",
        "date",
        "discoverydate",
        "t_disc",
        "disc_mjd",
        "mjd_disc",
        "discovery_mjd",
    ),
    "type": ("type", "sn_type", "sntype", "class", "claimedtype", "classification"),
    "host": ("host", "gal_name", "galaxy", "host_name", "hostname", "gal", "host_galaxy"),
}

_MJD_OF_ORDINAL_ZERO = date(1858, 11, 17).toordinal()  # MJD 0 is 1858-11-17


# --------------------------------------------------------------------------- #
# coordinates
# --------------------------------------------------------------------------- #

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"


def _sexagesimal_parts(text: str) -> list[float]:
    cleaned = re.sub(r"[hHdDmMsS°:'\"′″]", " ", text)
    parts = cleaned.split()
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(_NUMBER, p) for p in parts):
        raise ValueError(f"not a number or sexagesimal value: {text!r}")
    return [float(p) for p in parts]


def _check_minutes_seconds(values: list[float], text: str) -> None:
    for value, unit in zip(values[1:], ("minutes", "seconds")):
        if value >= 60:
            raise ValueError(f"{unit} must be < 60 in {text!r}")


def parse_ra(value: Any) -> float:
    """Right ascension in degrees from a number (degrees) or a sexagesimal string (hours).

    ``"09 55 42.15"``, ``"09:55:42.15"`` and ``"9h55m42.15s"`` are hours;
    a plain number (``148.9256`` or ``"148.9256"``) is degrees.

    Parameters
    ----------
    value : float, int or str
        A number in degrees, or a string: a plain number (degrees) or
        sexagesimal hours.

    Returns
    -------
    float
        Right ascension in degrees, in [0, 360).

    Raises
    ------
    ValueError
        Unparseable text or a value outside [0, 360) degrees / [0, 24) hours.
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        deg = float(value)
        if not np.isfinite(deg) or not 0 <= deg < 360:
            raise ValueError(f"RA {value!r} is outside [0, 360) degrees")
        return deg
    text = str(value).strip()
    if not text or text in ("--", "nan"):
        raise ValueError("RA is empty")
    if re.fullmatch(_NUMBER, text) and not re.search(r"[hH:]", text):
        return parse_ra(float(text))
    parts = _sexagesimal_parts(text)
    _check_minutes_seconds(parts, text)
    hours = parts[0] + sum(p / 60**i for i, p in enumerate(parts[1:], start=1))
    if not 0 <= hours < 24:
        raise ValueError(f"RA {text!r}: hours must be in [0, 24)")
    return hours * 15.0


def parse_dec(value: Any) -> float:
    """Declination in degrees from a number or a sexagesimal string.

    Accepts the SAI catalogue's space after the sign (``"- 0 32 47.1"``).

    Parameters
    ----------
    value : float, int or str
        A number in degrees, or a string: a plain number or sexagesimal
        degrees with an optional sign.

    Returns
    -------
    float
        Declination in degrees, in [-90, 90].

    Raises
    ------
    ValueError
        Unparseable text or a value outside [-90, 90] degrees.
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        deg = float(value)
        if not np.isfinite(deg) or not -90 <= deg <= 90:
            raise ValueError(f"Dec {value!r} is outside [-90, 90] degrees")
        return deg
    text = str(value).strip()
    if not text or text in ("--", "nan"):
        raise ValueError("Dec is empty")
    sign = 1.0
    body = text
    if body[0] in "+-−":
        sign = -1.0 if body[0] in "-−" else 1.0
        body = body[1:].strip()
    parts = _sexagesimal_parts(body)
    _check_minutes_seconds(parts, text)
    deg = parts[0] + sum(p / 60**i for i, p in enumerate(parts[1:], start=1))
    if deg > 90:
        raise ValueError(f"Dec {text!r} is outside [-90, 90] degrees")
    return sign * deg


# --------------------------------------------------------------------------- #
# dates
# --------------------------------------------------------------------------- #


def _mjd_of_date_text(text: str) -> float:
    """MJD of a calendar date or date-time string; ValueError when it is not one."""
    stripped = text.strip()
    match = re.fullmatch(r"(\d{3,4})[-/ .](\d{1,2})[-/ .](\d{1,2}(?:\.\d*)?)", stripped)
    if match:
        year, month, day = int(match[1]), int(match[2]), float(match[3])
        whole = int(day)
        # date() raises ValueError for day 0 or month 13: an unknown date, not a guess
        return float(date(year, month, whole).toordinal() - _MJD_OF_ORDINAL_ZERO) + (day - whole)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?", stripped):
        day_part, _, time_part = stripped.replace("T", " ").partition(" ")
        pieces = [float(p) for p in time_part.split(":")] + [0.0]
        return _mjd_of_date_text(day_part) + (pieces[0] + pieces[1] / 60 + pieces[2] / 3600) / 24
    raise ValueError(f"not a date: {text!r}")


def _discovery_mjd(values, column) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """MJD and mask of a discovery column (dates, MJD or JD); the indices of unparseable values."""
    n = len(column)
    mjd = np.zeros(n)
    mask = np.ones(n, dtype=bool)
    problems: list[tuple[int, str]] = []
    if isinstance(column, Time):
        good = ~np.asarray(getattr(column, "mask", np.zeros(n, bool)))
        mjd[good] = column[good].tt.mjd
        mask[good] = False
        return mjd, mask, problems
    raw_mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else np.zeros(n, bool)
    for i, value in enumerate(values):
        if raw_mask[i] or value is None:
            continue
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            number = float(value)
        else:
            text = str(value).strip()
            if not text or text in ("--", "nan", "NaN", "None"):
                continue
            try:
                mjd[i] = _mjd_of_date_text(text)
                mask[i] = False
                continue
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    problems.append((i, text))
                    continue
        if not np.isfinite(number):
            continue
        if number > 2_400_000:  # a Julian Date
            number -= 2_400_000.5
        if -700_000 < number < 200_000:
            mjd[i] = number
            mask[i] = False
        else:
            problems.append((i, str(value)))
    return mjd, mask, problems


def _time_column(mjd: np.ndarray, mask: np.ndarray) -> Time:
    # TT, not UTC: UTC is undefined before 1960, and astropy warns about every
    # historical supernova (SN 1006, SN 1572) in UTC; the ~1 minute between
    # the scales is irrelevant for dates known to a day.
    values = np.where(mask, 0.0, mjd)
    t = Time(np.ma.MaskedArray(values, mask=mask), format="mjd", scale="tt")
    t.format = "iso"
    t.out_subfmt = "date"
    return t


# --------------------------------------------------------------------------- #
# readers
# --------------------------------------------------------------------------- #


def _read_pipe_table(path: Path) -> tuple[Table, list[dict]]:
    """A pipe-delimited catalogue (SAI/Asiago export) as a table of strings, and malformed lines."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AstridFileError(f"{path}: cannot be read ({exc})") from exc
    lines = text.splitlines()
    header_index = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_index is None:
        raise AstridFileError(f"{path}: catalogue file is empty")
    names = [h.strip() for h in lines[header_index].split("|")]
    if len(names) < 3 or any(not n for n in names):
        raise AstridInputError(
            f"{path}: the first line is not a pipe-delimited header (got {lines[header_index][:80]!r})"
        )
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    malformed: list[dict] = []
    for number, line in enumerate(lines[header_index + 1 :], start=header_index + 2):
        if not line.strip() or re.fullmatch(r"[\s\-+=|]+", line):
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != len(names):
            reason = f"expected {len(names)} fields, found {len(fields)}"
            malformed.append(
                {"line": number, "name": fields[0] if fields else "", "reason": reason}
            )
            continue
        rows.append(fields)
        line_numbers.append(number)
    columns = list(zip(*rows)) if rows else [[] for _ in names]
    table = Table([Column(list(col), name=name, dtype=str) for name, col in zip(names, columns)])
    table["line"] = np.asarray(line_numbers, dtype=int)
    return table, malformed


def _find_column(table: Table, key: str, explicit: dict[str, str] | None) -> str | None:
    if explicit and key in explicit:
        name = explicit[key]
        if name not in table.colnames:
            raise AstridInputError(
                f"catalogue has no column {name!r} (given for {key!r}); columns are {table.colnames}"
            )
        return name
    lower = {c.lower(): c for c in table.colnames}
    for alias in _ALIASES[key]:
        if alias in lower:
            return lower[alias]
    return None


def _strings(table: Table, name: str | None) -> list[str]:
    if name is None:
        return [""] * len(table)
    col = table[name]
    mask = np.ma.getmaskarray(col) if hasattr(col, "mask") else np.zeros(len(table), bool)
    out = []
    for value, masked in zip(col, mask):
        if masked:
            out.append("")
        else:
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            out.append(str(value).strip())
    return out


def _angle_values(table: Table, name: str) -> tuple[list[Any], Any]:
    """Values of a coordinate column (None where masked) and its unit."""
    col = table[name]
    unit = getattr(col, "unit", None)
    # a Quantity column (QTable) iterates as Quantities; its plain values are enough with the unit
    values = list(col.value) if isinstance(col, u.Quantity) else list(col)
    mask = np.ma.getmaskarray(col) if hasattr(col, "mask") else np.zeros(len(table), bool)
    return [None if m else v for v, m in zip(values, mask)], unit


def _standardise(
    table: Table,
    source: str,
    columns: dict[str, str] | None = None,
    malformed: Iterable[dict] = (),
    keep: Iterable[str] = (),
) -> Table:
    """The standard catalogue table of any source table."""
    found = {key: _find_column(table, key, columns) for key in _ALIASES}
    missing = [key for key in ("name", "ra", "dec") if found[key] is None]
    if missing:
        raise AstridInputError(
            f"{source}: no column for {', '.join(missing)} (looked for "
            + "; ".join(f"{k}: {', '.join(_ALIASES[k])}" for k in missing)
            + f"); columns are {table.colnames}. Pass columns={{'name': ..., 'ra': ..., 'dec': ...}}"
        )
    lines = np.asarray(table["line"]) if "line" in table.colnames else np.arange(1, len(table) + 1)
    names = _strings(table, found["name"])
    rejected = [dict(r) for r in malformed]

    ra_values, ra_unit = _angle_values(table, found["ra"])
    dec_values, dec_unit = _angle_values(table, found["dec"])
    ra = np.full(len(table), np.nan)
    dec = np.full(len(table), np.nan)
    keep_row = np.ones(len(table), dtype=bool)
    for i in range(len(table)):
        try:
            r, d = ra_values[i], dec_values[i]
            if r is None:
                raise ValueError("RA is empty")
            if d is None:
                raise ValueError("Dec is empty")
            if ra_unit is not None and u.Unit(ra_unit) != u.deg and not isinstance(r, str):
                r = Angle(float(r), ra_unit).deg
            if dec_unit is not None and u.Unit(dec_unit) != u.deg and not isinstance(d, str):
                d = Angle(float(d), dec_unit).deg
            ra[i] = parse_ra(r.decode() if isinstance(r, bytes) else r)
            dec[i] = parse_dec(d.decode() if isinstance(d, bytes) else d)
        except (ValueError, TypeError, u.UnitsError) as exc:
            keep_row[i] = False
            rejected.append({"line": int(lines[i]), "name": names[i], "reason": str(exc)})

    if found["discovery"] is not None:
        col = table[found["discovery"]]
        values = (
            []
            if isinstance(col, Time)
            else [v.decode() if isinstance(v, bytes) else v for v in col]
        )
        mjd, date_mask, problems = _discovery_mjd(values, col)
    else:
        mjd, date_mask, problems = np.zeros(len(table)), np.ones(len(table), bool), []
    date_problems = [
        {"line": int(lines[i]), "name": names[i], "value": value}
        for i, value in problems
        if keep_row[i]
    ]

    out = Table()
    out["name"] = Column([n for n, k in zip(names, keep_row) if k], dtype=str)
    out["ra"] = Column(ra[keep_row], unit=u.deg, description="ICRS right ascension (J2000)")
    out["dec"] = Column(dec[keep_row], unit=u.deg, description="ICRS declination (J2000)")
    out["discovery"] = _time_column(mjd[keep_row], date_mask[keep_row])
    out["type"] = Column(
        [t for t, k in zip(_strings(table, found["type"]), keep_row) if k], dtype=str
    )
    out["host"] = Column(
        [h for h, k in zip(_strings(table, found["host"]), keep_row) if k], dtype=str
    )
    out["line"] = Column(
        np.asarray(lines)[keep_row].astype(int), description="line (or row) in the source"
    )
    for name in keep:
        if name in table.colnames and name not in out.colnames:
            out[name] = table[name][keep_row]

    rejected.sort(key=lambda r: r["line"])
    out.meta["source"] = source
    out.meta["columns"] = {k: v for k, v in found.items() if v is not None}
    out.meta["n_read"] = len(table) + sum(1 for _ in malformed)
    out.meta["rejected"] = rejected
    out.meta["undated"] = int(date_mask[keep_row].sum())
    out.meta["date_unparsed"] = date_problems
    if rejected:
        warnings.warn(
            f"{source}: {len(rejected)} row(s) with unparseable coordinates or fields were rejected "
            f"(first: line {rejected[0]['line']}, {rejected[0]['reason']}); see table.meta['rejected']",
            AstridWarning,
            stacklevel=3,
        )
    return out


@contextmanager
def _astroquery_cache(active: bool | None):
    """Turn astroquery's answer cache on or off for a block (None: leave the user's setting)."""
    astroquery = require("astroquery", "querying VizieR")
    if active is None:
        yield
        return
    with astroquery.cache_conf.set_temp("cache_active", bool(active)):
        yield


def _network_error_types() -> tuple[type, ...]:
    import requests

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def _load_vizier(
    catalog: str, *, cache: bool | None, row_limit: int, columns: dict[str, str] | None
) -> Table:
    vizier = require("astroquery.vizier", "loading a supernova catalogue from VizieR")
    query = vizier.Vizier(columns=["**"], row_limit=row_limit)
    try:
        with _astroquery_cache(cache):
            tables = query.get_catalogs(catalog)
    except _network_error_types() as exc:
        raise AstridArchiveError(
            f"VizieR is not reachable for catalogue {catalog!r} ({exc}); load a local catalogue file instead"
        ) from exc
    if tables is None or len(tables) == 0:
        raise AstridArchiveError(f"VizieR returned no table for catalogue {catalog!r}")
    table = tables[0]
    table["line"] = np.arange(1, len(table) + 1)
    return _standardise(table, f"vizier:{catalog}", columns)


def load_sn_catalog(
    source: str | os.PathLike,
    *,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    cache: bool | None = None,
    row_limit: int = -1,
) -> Table:
    """Load a supernova catalogue into AstrID's standard target table.

    Parameters
    ----------
    source : str or path-like
        One of

        - a pipe-delimited catalogue with a header line, as the Sternberg
          (SAI) and Asiago catalogues export it (``sn_name | gal_name | ... |
          disc_date | sn_type | sn_ra | sn_dec | ...``);
        - a CSV or ECSV file (``.csv``, ``.ecsv``) with columns for the name,
          RA and Dec and optionally discovery date, type and host;
        - ``"vizier"`` or ``"vizier:<catalogue>"``: the catalogue from VizieR
          through :mod:`astroquery.vizier` (default ``B/sn``, the Asiago
          Supernova Catalogue; needs the network).
    format : {"pipe", "csv", "ecsv"}, optional
        File format; by default guessed from the suffix and the first line.
    columns : dict, optional
        Source column for a standard column when the names are not
        recognised, e.g. ``{"name": "ID", "ra": "RA_deg", "discovery": "t0"}``.
    cache : bool or None, optional
        Let astroquery cache the VizieR answer; None (default) follows
        ``astroquery.cache_conf.cache_active``.
    row_limit : int, optional
        VizieR row limit (-1 for all rows).

    Returns
    -------
    astropy.table.Table
        One row per supernova with columns

        ``name`` : str
            Designation as in the catalogue (``"2014J"``).
        ``ra``, ``dec`` : float, degrees
            ICRS (J2000) position; ``SkyCoord(t["ra"], t["dec"])`` works.
        ``discovery`` : `~astropy.time.Time`
            Discovery date (TT scale, shown as ISO date), masked where unknown.
            Strings (``YYYY-MM-DD``, ``YYYY/MM/DD``, ISO date-times), MJD and
            JD numbers are understood.
        ``type``, ``host`` : str
            Spectral type and host galaxy (empty when unknown).
        ``line`` : int
            Line in the file (or row number for VizieR), for tracing a row back.

        ``meta`` holds ``source``, ``columns`` (which source column became
        which), ``n_read``, ``rejected`` (list of ``{"line", "name",
        "reason"}`` for rows whose coordinates could not be parsed or whose
        field count is wrong), ``undated`` (rows without a discovery date) and
        ``date_unparsed`` (non-empty dates that could not be read; those rows
        are kept with a masked date).

    Raises
    ------
    AstridFileError
        Missing or unreadable file.
    AstridInputError
        No recognisable name/RA/Dec columns.
    AstridArchiveError
        VizieR not reachable or returning nothing.

    Warns
    -----
    AstridWarning
        Rows were rejected (the count and the first reason).

    Examples
    --------
    >>> cat = load_sn_catalog("sncat_compiled.txt")          # doctest: +SKIP
    >>> cat[cat["name"] == "2014J"]["ra", "dec", "discovery"]  # doctest: +SKIP
    """
    text = str(source)
    if text.lower() == "vizier" or text.lower().startswith("vizier:"):
        catalog = text.split(":", 1)[1].strip() if ":" in text else DEFAULT_VIZIER_CATALOG
        return _load_vizier(
            catalog or DEFAULT_VIZIER_CATALOG, cache=cache, row_limit=row_limit, columns=columns
        )

    path = Path(source)
    if not path.exists():
        raise AstridFileError(f"{path}: catalogue file does not exist")
    if path.is_dir():
        raise AstridFileError(f"{path}: is a directory, not a catalogue file")
    if format is None:
        suffix = path.suffix.lower()
        if suffix == ".ecsv":
            format = "ecsv"
        elif suffix == ".csv":
            format = "csv"
        else:
            with open(path, encoding="utf-8", errors="replace") as fh:
                first = fh.readline()
            format = "pipe" if "|" in first else "csv"
    if format == "pipe":
        table, malformed = _read_pipe_table(path)
        return _standardise(table, str(path), columns, malformed)
    if format in ("csv", "ecsv"):
        try:
            table = Table.read(path, format="ascii.ecsv" if format == "ecsv" else "ascii.csv")
        except Exception as exc:  # astropy raises many types for malformed text tables
            raise AstridFileError(f"{path}: not a readable {format.upper()} table ({exc})") from exc
        table["line"] = (
            np.arange(2, len(table) + 2) if format == "csv" else np.arange(1, len(table) + 1)
        )
        return _standardise(table, str(path), columns)
    raise AstridInputError(f"format must be 'pipe', 'csv' or 'ecsv', got {format!r}")


def _name_key(name: str) -> str:
    text = re.sub(r"\s+", "", str(name))
    return re.sub(r"^(SN|AT)(?=\d)", "", text, flags=re.IGNORECASE)


def select_targets(
    catalog: Table,
    names: Iterable[str] | None = None,
    *,
    years: tuple[int, int] | None = None,
    types: Iterable[str] | None = None,
    require_discovery: bool = True,
) -> Table:
    """Rows of a standard catalogue chosen by name, discovery year and type.

    Parameters
    ----------
    catalog : astropy.table.Table
        A table from :func:`load_sn_catalog`.
    names : iterable of str, optional
        Supernova names; ``"SN 2014J"``, ``"SN2014J"`` and ``"2014J"`` all
        match ``2014J`` (exact case first, then case-insensitive).
    years : (int, int), optional
        Inclusive range of discovery years.
    types : iterable of str, optional
        Type prefixes, e.g. ``["Ia"]`` keeps ``Ia``, ``IaPec``, ``Ia:``.
    require_discovery : bool, optional
        Drop rows without a discovery date (pairing needs one). Default True.

    Returns
    -------
    astropy.table.Table
        The chosen rows, in the order of ``names`` when given.

    Raises
    ------
    AstridInputError
        A name that is not in the catalogue.
    """
    table = catalog
    if names is not None:
        names = list(names)
        exact = {_name_key(n): i for i, n in enumerate(table["name"])}
        folded = {}
        for i, n in enumerate(table["name"]):
            folded.setdefault(_name_key(n).lower(), i)
        rows, missing = [], []
        for name in names:
            key = _name_key(name)
            index = exact.get(key, folded.get(key.lower()))
            if index is None:
                missing.append(name)
            else:
                rows.append(index)
        if missing:
            raise AstridInputError(
                f"{len(missing)} target(s) not in catalogue {table.meta.get('source', '')!r}: {', '.join(missing[:10])}"
            )
        table = table[rows]
    keep = np.ones(len(table), dtype=bool)
    known = ~np.asarray(table["discovery"].mask) if len(table) else np.zeros(0, bool)
    if require_discovery:
        keep &= known
    if years is not None:
        lo, hi = int(years[0]), int(years[1])
        if lo > hi:
            raise AstridInputError(f"years must be (first, last) with first <= last, got {years}")
        year = np.zeros(len(table), dtype=int)
        if known.any():
            years_known = table["discovery"][known].ymdhms["year"]
            year[known] = np.asarray(getattr(years_known, "unmasked", years_known))
        keep &= known & (year >= lo) & (year <= hi)
    if types is not None:
        prefixes = tuple(str(t).strip().lower() for t in types)
        keep &= np.array(
            [str(t).lower().startswith(prefixes) and bool(t) for t in table["type"]], dtype=bool
        )
    out = table[keep]
    out.meta = dict(catalog.meta)
    return out


def gaia_stars(
    position: SkyCoord,
    radius: u.Quantity = 5 * u.arcmin,
    *,
    mag_limit: float | None = 19.0,
    row_limit: int = 10000,
    cache: bool | None = None,
) -> Table:
    """Gaia DR3 stars around a position from VizieR (``I/355/gaiadr3``), for astrometric checks.

    Parameters
    ----------
    position : astropy.coordinates.SkyCoord
        Field centre.
    radius : astropy.units.Quantity
        Cone radius (angle).
    mag_limit : float or None, optional
        Keep stars brighter than this G magnitude (None: all).
    row_limit : int, optional
        Most stars returned.
    cache : bool or None, optional
        Let astroquery cache the answer; None (default) follows
        ``astroquery.cache_conf.cache_active``.

    Returns
    -------
    astropy.table.Table
        ``source_id``, ``ra``, ``dec`` (deg, epoch 2016.0), ``g_mag``,
        ``pmra``, ``pmdec`` (mas/yr), ``parallax`` (mas); empty (with these
        columns) when VizieR has no star there.

    Raises
    ------
    AstridArchiveError
        VizieR not reachable.
    """
    vizier = require("astroquery.vizier", "querying Gaia DR3 on VizieR")
    radius = u.Quantity(radius)
    if not radius.unit.is_equivalent(u.deg):
        raise AstridInputError(f"radius must be an angle, got {radius}")
    filters = {"Gmag": f"<{mag_limit}"} if mag_limit is not None else {}
    query = vizier.Vizier(
        columns=["Source", "RA_ICRS", "DE_ICRS", "Gmag", "pmRA", "pmDE", "Plx"],
        column_filters=filters,
        row_limit=row_limit,
    )
    try:
        with _astroquery_cache(cache):
            use_cache = (
                cache
                if cache is not None
                else bool(require("astroquery", "querying VizieR").cache_conf.cache_active)
            )
            tables = query.query_region(
                position, radius=radius, catalog=GAIA_DR3_CATALOG, cache=use_cache
            )
    except _network_error_types() as exc:
        raise AstridArchiveError(f"VizieR is not reachable for Gaia DR3 ({exc})") from exc
    out = Table()
    names = {
        "source_id": "Source",
        "ra": "RA_ICRS",
        "dec": "DE_ICRS",
        "g_mag": "Gmag",
        "pmra": "pmRA",
        "pmdec": "pmDE",
        "parallax": "Plx",
    }
    units = {
        "ra": u.deg,
        "dec": u.deg,
        "g_mag": u.mag,
        "pmra": u.mas / u.yr,
        "pmdec": u.mas / u.yr,
        "parallax": u.mas,
    }
    if tables is None or len(tables) == 0:
        for name in names:
            out[name] = Column(
                [], dtype=np.int64 if name == "source_id" else float, unit=units.get(name)
            )
        return out
    table = tables[0]
    for name, src in names.items():
        if src in table.colnames:
            col = table[src]
            out[name] = MaskedColumn(
                np.ma.getdata(col), mask=np.ma.getmaskarray(col), unit=units.get(name)
            )
    out.meta["catalog"] = GAIA_DR3_CATALOG
    return out
