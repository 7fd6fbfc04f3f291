"""Read ZTF alert packets into AstrID triplets: :func:`read_ztf`.

ZTF publishes one Avro record per detection (an *alert*): the ``candidate``
(position, photometry, the real/bogus scores ``rb`` and ``drb``), the previous
detections, and three gzipped-FITS cutouts centred on the candidate:
``cutoutScience``, ``cutoutTemplate`` and ``cutoutDifference``. Brokers
redistribute the same records as Avro files or as Parquet tables with the same
columns, and Kowalski exports them as (MongoDB extended) JSON; :func:`read_ztf`
reads all three and returns an :class:`xarray.Dataset` in the triplet schema
of :mod:`astrid._schema` (channel ``reference`` holds the template cutout).

Stamp placement
---------------
Cutouts are 63×63 pixels, but ZTF truncates them where the candidate lies
within 31 pixels of the CCD edge, so some are e.g. 41×63. Which side was cut
off is not recorded in the alert, so the candidate's position in a truncated
cutout is not known without the CCD geometry. AstrID follows ZTF's production
braai classifier (``make_triplet`` in braai and Kowalski), which places the
cutout at the start of the 63×63 array, ``[0:ny, 0:nx]``, and pads after it.
Here the padding is NaN (``valid`` False); :func:`astrid.braai.preprocess`
turns it into braai's 1e-9 padding. The true cutout shape is kept in the
coordinates ``stamp_ny`` / ``stamp_nx`` (per candidate and channel) and
``stamp_shape`` (``"NYxNX"`` of the science cutout), so the padding can always
be told apart from masked (NaN) pixels inside a cutout.

Pixel order is that of the FITS array as astropy reads it (row 0 first),
the array braai's ``make_triplet`` feeds the network.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import logging
import os
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from astropy.io import fits

from ._optional import require
from ._schema import CHANNELS, STAMP_SIZE, new_triplet_dataset
from .errors import AstridFileError, AstridInputError, AstridWarning

__all__ = ["read_ztf", "decode_stamp", "ZTF_FILTERS"]

log = logging.getLogger(__name__)

#: ZTF filter id (``fid``) to filter name.
ZTF_FILTERS = {1: "g", 2: "r", 3: "i"}

#: Alert fields holding the cutouts, in the order of :data:`astrid._schema.CHANNELS`.
_CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
_FOLDER_SUFFIXES = (".avro", ".parquet")
_ALERT_SUFFIXES = _FOLDER_SUFFIXES + (".json",)

# Candidate fields kept as coordinates, with the value used where an alert
# lacks them (older schema versions, or a broker copy without `candidate`).
_FLOAT_FIELDS = (
    "jd", "ra", "dec", "magpsf", "sigmapsf", "diffmaglim", "magzpsci",
    "rb", "drb", "fwhm", "elong", "classtar", "scorr", "xpos", "ypos",
    "distnr", "magnr", "sgscore1", "distpsnr1", "ssdistnr", "ssmagnr", "jdstarthist",
)
_INT_FIELDS = ("fid", "nbad", "programid", "field", "rcid", "ndethist", "ncovhist")
_STR_FIELDS = ("isdiffpos", "rbversion", "drbversion", "ssnamenr")
_INT_FILL = -1

_PARQUET_COLUMNS = ("candid", "objectId", "candidate") + _CUTOUT_FIELDS


class _StampError(Exception):
    """A cutout that cannot be decoded (internal; reported as a warning)."""


@dataclass
class _Alert:
    candid: int
    object_id: str = ""
    fields: dict[str, Any] | None = None
    stamps: list[np.ndarray | None] = field(default_factory=lambda: [None, None, None])
    source: str = ""
    corrupt: bool = False

    @property
    def complete(self) -> bool:
        return all(stamp is not None for stamp in self.stamps)


def decode_stamp(blob: bytes, name: str = "stamp") -> np.ndarray:
    """Decode one ZTF cutout (gzipped or plain FITS bytes) to a 2-D array.

    Parameters
    ----------
    blob : bytes
        The ``stampData`` of a cutout.
    name : str, optional
        How to call the cutout in error messages.

    Returns
    -------
    numpy.ndarray, shape (ny, nx), float32
        The pixel values (native byte order), ``ny, nx <= 63``.

    Raises
    ------
    AstridInputError
        The bytes are not (gzipped) FITS with a 2-D image of at most 63×63.
    """
    try:
        return _decode_stamp(blob)
    except _StampError as exc:
        raise AstridInputError(f"{name}: {exc}") from None


def _decode_stamp(blob: Any) -> np.ndarray:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise _StampError(f"stampData is {type(blob).__name__}, not bytes")
    raw = bytes(blob)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _StampError(f"corrupt gzip data ({exc})") from None
    if not raw.startswith(b"SIMPLE"):
        raise _StampError("not FITS data (no SIMPLE card)")
    data = _read_plain_float_fits(raw)
    if data is None:
        data = _read_fits_with_astropy(raw)
    if data is None or data.ndim != 2:
        raise _StampError("FITS cutout holds no 2-D image")
    if data.shape[0] > STAMP_SIZE or data.shape[1] > STAMP_SIZE or 0 in data.shape:
        raise _StampError(f"cutout shape {data.shape} is not within 1..{STAMP_SIZE} pixels a side")
    return data


_FITS_BLOCK = 2880
_FITS_CARD = 80
_FLOAT_BITPIX = {-32: ">f4", -64: ">f8"}


def _read_plain_float_fits(raw: bytes) -> np.ndarray | None:
    """Fast path for the plain FITS that ZTF writes: one 2-D float image, no scaling.

    Returns None for anything else (scaled integers, extensions, odd
    headers, truncated data), which then goes through astropy. Parsing the
    few cards directly is an order of magnitude faster than ``fits.open``,
    and cutout decoding would otherwise dominate the time to read alerts.
    """
    cards: dict[str, str] = {}
    end = -1
    for start in range(0, min(len(raw), 10 * _FITS_BLOCK), _FITS_CARD):
        card = raw[start : start + _FITS_CARD]
        key = card[:8].strip()
        if key == b"END":
            end = start + _FITS_CARD
            break
        if card[8:10] == b"= ":
            cards[key.decode("ascii", "replace")] = card[10:].split(b"/")[0].strip().decode("ascii", "replace")
    if end < 0:
        return None
    try:
        bitpix = int(cards.get("BITPIX", "0"))
        naxis = int(cards.get("NAXIS", "0"))
        nx, ny = int(cards.get("NAXIS1", "0")), int(cards.get("NAXIS2", "0"))
        scale = float(cards.get("BSCALE", "1").replace("D", "E"))
        zero = float(cards.get("BZERO", "0").replace("D", "E"))
    except ValueError:
        return None
    if cards.get("SIMPLE") != "T" or naxis != 2 or bitpix not in _FLOAT_BITPIX:
        return None
    if scale != 1.0 or zero != 0.0 or nx <= 0 or ny <= 0:
        return None
    offset = -(-end // _FITS_BLOCK) * _FITS_BLOCK
    dtype = np.dtype(_FLOAT_BITPIX[bitpix])
    if len(raw) < offset + nx * ny * dtype.itemsize:
        return None
    data = np.frombuffer(raw, dtype=dtype, count=nx * ny, offset=offset)
    return data.reshape(ny, nx).astype(np.float32)


def _read_fits_with_astropy(raw: bytes) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            # ZTF writes a SIMPLE card that is not padded the way the FITS
            # standard says; astropy reads it fine and the user cannot act.
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                data = hdul[0].data
                return None if data is None else np.array(data, dtype=np.float32)
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, ... on bad FITS
        raise _StampError(f"corrupt FITS data ({type(exc).__name__}: {exc})") from None


def _expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if not path.exists():
            raise AstridFileError(f"{path}: no such file or folder")
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in _FOLDER_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise AstridInputError(f"{path}: folder holds no .avro or .parquet alert files")
            files.extend(found)
        elif path.suffix.lower() in _ALERT_SUFFIXES:
            files.append(path)
        else:
            raise AstridInputError(
                f"{path}: not an alert file (expected a .avro, .parquet or .json file, "
                "or a folder of .avro/.parquet files)"
            )
    if not files:
        raise AstridInputError("read_ztf: no alert files given")
    return files


def _avro_records(path: Path) -> Iterator[dict]:
    fastavro = require("fastavro", "reading ZTF Avro alerts")
    try:
        with open(path, "rb") as fh:
            for record in fastavro.reader(fh):
                yield record
    except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError, UnicodeDecodeError,
            AssertionError, StopIteration) as exc:
        # fastavro raises many exception types on truncated or non-Avro input
        raise AstridFileError(
            f"{path}: not a readable Avro alert file ({type(exc).__name__}: {exc})"
        ) from exc


def _parquet_records(path: Path) -> Iterator[dict]:
    require("pyarrow", "reading ZTF Parquet alerts")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table_file = pq.ParquetFile(path)
        names = set(table_file.schema_arrow.names)
        columns = [c for c in _PARQUET_COLUMNS if c in names]
        batches = table_file.iter_batches(columns=columns, batch_size=256)
        for batch in batches:
            yield from batch.to_pylist()
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise AstridFileError(
            f"{path}: not a readable Parquet alert file ({type(exc).__name__}: {exc})"
        ) from exc


def _extended_json(obj: dict) -> Any:
    # MongoDB extended JSON, as Kowalski exports alerts
    if "$binary" in obj:
        payload = obj["$binary"]
        if isinstance(payload, dict):
            payload = payload.get("base64", "")
        return base64.b64decode(payload)
    if "$numberLong" in obj:
        return int(obj["$numberLong"])
    if "$numberInt" in obj:
        return int(obj["$numberInt"])
    if "$numberDouble" in obj:
        return float(obj["$numberDouble"])
    return obj


def _json_records(path: Path) -> Iterator[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            content = json.load(fh, object_hook=_extended_json)
    except (UnicodeDecodeError, json.JSONDecodeError, binascii.Error, ValueError) as exc:
        raise AstridFileError(f"{path}: not a readable JSON alert file ({type(exc).__name__}: {exc})") from exc
    records = content if isinstance(content, list) else [content]
    for record in records:
        yield record


def _records(path: Path) -> Iterator[dict]:
    if path.stat().st_size == 0:
        raise AstridFileError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix == ".avro":
        return _avro_records(path)
    if suffix == ".json":
        return _json_records(path)
    return _parquet_records(path)


def _stamp_blob(record: dict, key: str) -> Any:
    cutout = record.get(key)
    if not isinstance(cutout, dict):
        return None
    return cutout.get("stampData")


def _candidate_fields(candidate: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _FLOAT_FIELDS:
        value = candidate.get(key)
        out[key] = np.nan if value is None else float(value)
    for key in _INT_FIELDS:
        value = candidate.get(key)
        out[key] = _INT_FILL if value is None else int(value)
    for key in _STR_FIELDS:
        value = candidate.get(key)
        out[key] = "" if value is None else str(value)
    return out


def _empty_fields() -> dict[str, Any]:
    return _candidate_fields({})


def _fill_missing(fields: dict[str, Any], candidate: dict) -> None:
    extra = _candidate_fields(candidate)
    for key, value in fields.items():
        if isinstance(value, float) and np.isnan(value):
            fields[key] = extra[key]
        elif isinstance(value, int) and value == _INT_FILL:
            fields[key] = extra[key]
        elif isinstance(value, str) and not value:
            fields[key] = extra[key]


def read_ztf(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    require_stamps: bool = True,
) -> xr.Dataset:
    """Read ZTF alert packets (Avro, Parquet or JSON) into a triplet dataset.

    Alerts are de-duplicated by ``candid``: the same alert often appears in
    several files, sometimes without its cutouts; the cutouts are taken from
    a copy that has them, and each candidate field from the first copy that
    has it (older schema versions lack e.g. ``drb``).

    Parameters
    ----------
    paths : path-like or iterable of path-like
        ``.avro`` and ``.parquet`` files, or folders searched recursively for
        them; ``.json`` files (one alert or a list of alerts in MongoDB
        extended JSON, as Kowalski exports them) when named explicitly,
        since folders often hold unrelated JSON.
    require_stamps : bool, optional
        Drop alerts that lack any of the three cutouts (default). With False
        they are kept with NaN stamps (``valid`` False, ``stamp_ny`` = 0).

    Returns
    -------
    xarray.Dataset
        Triplet schema (:mod:`astrid._schema`), one entry per distinct alert,
        sorted by ``candid``:

        - ``triplets`` (candidate, y, x, channel), float32: science, template
          (``reference``) and difference cutouts in their native units
          (DN), placed at ``[0:ny, 0:nx]`` and NaN-padded to 63×63;
        - ``valid``: finite pixels inside the cutouts;
        - coordinates ``candidate_id`` (= ``str(candid)``), ``candid``
          (int64), ``objectId``, candidate fields ``jd, ra, dec`` (deg),
          ``magpsf, sigmapsf, diffmaglim, magzpsci`` (mag), ``rb, drb``
          (NaN where absent), ``fwhm`` (pix), ``elong``, ``classtar``,
          ``scorr``, ``xpos, ypos``, ``distnr, magnr``, ``sgscore1,
          distpsnr1``, ``ssdistnr, ssmagnr``, ``jdstarthist`` (floats),
          ``fid, nbad, programid, field, rcid, ndethist, ncovhist`` (ints,
          -1 where absent), ``isdiffpos, rbversion, drbversion, ssnamenr``
          (strings, ``""`` where absent) — values as in the alerts (e.g.
          ZTF's -999 for "none"), plus ``stamp_ny, stamp_nx``
          (candidate, channel), ``stamp_shape`` and ``source_file``;
        - attributes ``schema, source, mission, filter`` and the counts
          ``n_files, n_packets, n_distinct, n_without_stamps, n_corrupt``.

    Raises
    ------
    AstridFileError
        A path does not exist, or a file cannot be decoded as Avro, Parquet
        or JSON (the message names the file).
    AstridInputError
        A folder holds no alert files, a file is not an alert file, or a
        record has no ``candid``.

    Warns
    -----
    AstridWarning
        A cutout cannot be decoded: that alert is skipped, the rest of the
        file is read.
    """
    files = _expand_paths(paths)
    alerts: dict[int, _Alert] = {}
    n_packets = 0
    for path in files:
        for record in _records(path):
            n_packets += 1
            _merge_record(alerts, record, path)

    n_corrupt = sum(1 for a in alerts.values() if a.corrupt and not a.complete)
    kept = [a for a in alerts.values() if not (a.corrupt and not a.complete)]
    n_without = sum(1 for a in kept if not a.complete)
    if require_stamps:
        kept = [a for a in kept if a.complete]
    kept.sort(key=lambda a: a.candid)
    if n_without:
        log.info(
            "read_ztf: %d of %d distinct alerts lack one or more cutouts%s",
            n_without, len(alerts), " and were dropped" if require_stamps else "",
        )
    return _to_dataset(
        kept,
        attrs={
            "n_files": len(files),
            "n_packets": n_packets,
            "n_distinct": len(alerts),
            "n_without_stamps": n_without,
            "n_corrupt": n_corrupt,
            "require_stamps": int(bool(require_stamps)),
        },
    )


def _merge_record(alerts: dict[int, _Alert], record: dict, path: Path) -> None:
    if not isinstance(record, dict):
        raise AstridInputError(f"{path}: records are not ZTF alerts (got {type(record).__name__})")
    candidate = record.get("candidate")
    candid = record.get("candid")
    if candid is None and isinstance(candidate, dict):
        candid = candidate.get("candid")
    if candid is None:
        raise AstridInputError(f"{path}: a record has no 'candid'; is this a ZTF alert file?")
    try:
        candid = int(candid)
    except (TypeError, ValueError):
        raise AstridInputError(f"{path}: a record has candid={candid!r}, not an integer") from None
    alert = alerts.get(candid)
    if alert is None:
        alert = alerts[candid] = _Alert(candid=candid)
    if not alert.object_id and record.get("objectId"):
        alert.object_id = str(record["objectId"])
    if isinstance(candidate, dict):
        if alert.fields is None:
            alert.fields = _candidate_fields(candidate)
        else:
            # Copies of one alert from different schema versions or brokers
            # carry different subsets of fields (`drb` exists only in newer schema versions).
            _fill_missing(alert.fields, candidate)
    if alert.complete:
        return
    missing = [i for i, stamp in enumerate(alert.stamps) if stamp is None]
    blobs = {i: _stamp_blob(record, _CUTOUT_FIELDS[i]) for i in missing}
    decoded: dict[int, np.ndarray] = {}
    for i, blob in blobs.items():
        if blob is None:
            continue
        try:
            decoded[i] = _decode_stamp(blob)
        except _StampError as exc:
            warnings.warn(
                f"{path}: alert candid={candid}: {_CUTOUT_FIELDS[i]} cannot be decoded ({exc}); "
                "alert skipped",
                AstridWarning,
                stacklevel=3,
            )
            alert.corrupt = True
            return
    for i, stamp in decoded.items():
        alert.stamps[i] = stamp
    if decoded and not alert.source:
        alert.source = str(path)
    if alert.complete:
        alert.source = str(path)


def _to_dataset(alerts: list[_Alert], attrs: dict[str, Any]) -> xr.Dataset:
    n = len(alerts)
    stamps = np.full((n, STAMP_SIZE, STAMP_SIZE, len(CHANNELS)), np.nan, dtype=np.float32)
    valid = np.zeros(stamps.shape, dtype=bool)
    stamp_ny = np.zeros((n, len(CHANNELS)), dtype=np.int16)
    stamp_nx = np.zeros((n, len(CHANNELS)), dtype=np.int16)
    for i, alert in enumerate(alerts):
        for c, stamp in enumerate(alert.stamps):
            if stamp is None:
                continue
            ny, nx = stamp.shape
            stamps[i, :ny, :nx, c] = stamp
            valid[i, :ny, :nx, c] = np.isfinite(stamp)
            stamp_ny[i, c], stamp_nx[i, c] = ny, nx

    fields = [a.fields if a.fields is not None else _empty_fields() for a in alerts]
    coords: dict[str, Any] = {
        "candidate_id": np.array([str(a.candid) for a in alerts], dtype=object),
        "candid": np.array([a.candid for a in alerts], dtype=np.int64),
        "objectId": np.array([a.object_id for a in alerts], dtype=object),
    }
    for key in _FLOAT_FIELDS:
        coords[key] = np.array([f[key] for f in fields], dtype=np.float64)
    for key in _INT_FIELDS:
        coords[key] = np.array([f[key] for f in fields], dtype=np.int64)
    for key in _STR_FIELDS:
        coords[key] = np.array([f[key] for f in fields], dtype=object)
    coords["stamp_ny"] = (("candidate", "channel"), stamp_ny)
    coords["stamp_nx"] = (("candidate", "channel"), stamp_nx)
    coords["stamp_shape"] = np.array(
        [f"{ny[0]}x{nx[0]}" if ny[0] else "" for ny, nx in zip(stamp_ny, stamp_nx)], dtype=object
    )
    coords["source_file"] = np.array([a.source for a in alerts], dtype=object)

    fids = sorted({int(f) for f in coords["fid"] if f in ZTF_FILTERS})
    if len(fids) == 1:
        filter_name = ZTF_FILTERS[fids[0]]
    elif fids:
        filter_name = "mixed (see fid: 1=g, 2=r, 3=i)"
    else:
        filter_name = ""
    all_attrs = {
        "source": "ZTF alert packets",
        "mission": "ZTF",
        "filter": filter_name,
        "stamp_placement": "cutout at [0:stamp_ny, 0:stamp_nx], NaN after it (braai's convention)",
    }
    all_attrs.update(attrs)
    return new_triplet_dataset(stamps, coords, all_attrs, valid=valid)
