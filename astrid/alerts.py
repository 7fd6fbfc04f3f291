"""Read alert packets into AstrID triplets: :func:`read_alerts` and :func:`read_ztf`.

ZTF publishes one Avro record per detection (an *alert*): the ``candidate``
(position, photometry, the real/bogus scores ``rb`` and ``drb``), the previous
detections, and three gzipped-FITS cutouts centred on the candidate:
``cutoutScience``, ``cutoutTemplate`` and ``cutoutDifference``. Brokers
redistribute the same records as Avro files (any Avro codec: null, deflate,
snappy, bzip2, xz, zstandard, lz4) or as Parquet tables with the same
columns, and Kowalski exports them as (MongoDB extended) JSON;
:func:`read_ztf` reads all of them and returns an :class:`xarray.Dataset` in
the triplet schema of :mod:`astrid.schema` (channel ``reference`` holds the
template cutout).

:func:`read_alerts` reads the same kind of packet from other surveys too and
records each candidate's survey in the ``survey`` coordinate:

========  ==============================================================
survey    packet layout (detected from the Avro schema name or the keys)
========  ==============================================================
ZTF       ``ztf.alert``: ``candid``, ``objectId``, ``candidate``, cutouts
          ``{fileName, stampData}``
PGIR      Palomar Gattini-IR, ``pgir.alert``: the ZTF layout, J band
WINTER    ``winter.alert``: ``candid``, ``objectid`` (``objectId`` in
          early versions), ``candidate`` with ``fid`` 1-4 = Y, J, Hs,
          dark and boolean ``isdiffpos``; cutouts are bare gzipped-FITS bytes
DECAT     DECam alerts as brokers distribute them (``decat`` schema):
          ``objectid``, ``triggersource`` (a source with ``sourceid``, ``mjd``,
          ``filter``, ``mag``, ``rb`` and the cutouts ``scicutout``,
          ``refcutout``, ``diffcutout``)
ATLAS     ``atlas.alert``: ``candid`` (a string), ``objectId``, ``RA``,
          ``Dec``, ``mag``, ``mjd``, ``filter`` (top level or in
          ``candidate``), ``cutoutScience`` and ``cutoutDifference`` only
========  ==============================================================

A channel that a survey does not send (ATLAS has no template cutout) is
never invented: it stays NaN with ``valid`` False and ``stamp_present``
False, and it does not make the alert incomplete.

Stamp placement
---------------
Cutouts are 63×63 pixels, but ZTF truncates them where the candidate lies
within 31 pixels of the CCD edge, so some are e.g. 41×63. Which side was cut
off is not recorded in the alert, so the candidate's position in a truncated
cutout is not known without the CCD geometry. AstrID follows ZTF's production
braai classifier (``make_triplet`` in braai and Kowalski), which places the
cutout at the start of the 63×63 array, ``[0:ny, 0:nx]``, and pads after it.
Here the padding is NaN (``valid`` False); :func:`astrid.braai.preprocess`
turns it into braai's 1e-9 padding. The placed cutout shape is kept in the
coordinates ``stamp_ny`` / ``stamp_nx`` (per candidate and channel) and
the native shape of the science cutout in ``stamp_shape`` (``"NYxNX"``), so
the padding can always be told apart from masked (NaN) pixels inside a
cutout. Cutouts of other surveys larger than 63 pixels on a side are cropped
to the central 63 pixels (rows and columns ``n//2 - 31`` to ``n//2 + 31``,
so the centre pixel of the cutout stays the centre of the stamp); smaller
ones are placed and padded as above.

Pixel order is that of the FITS array as astropy reads it (row 0 first),
the array braai's ``make_triplet`` feeds the network.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import importlib.util
import io
import json
import logging
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from astropy.io import fits

from ._optional import require
from .errors import AstridFileError, AstridInputError, AstridWarning
from .schema import CHANNELS, STAMP_SIZE, new_triplet_dataset

__all__ = ["AVRO_CODECS", "SURVEYS", "ZTF_FILTERS", "decode_stamp", "read_alerts", "read_ztf"]

log = logging.getLogger(__name__)

#: ZTF filter id (``fid``) to filter name.
ZTF_FILTERS = {1: "g", 2: "r", 3: "i"}
#: WINTER filter id (``fid``) to filter name (``winter.alert.candidate``).
WINTER_FILTERS = {1: "Y", 2: "J", 3: "Hs", 4: "dark"}
#: Surveys :func:`read_alerts` reads, in the order candidates are sorted.
SURVEYS = ("ZTF", "PGIR", "WINTER", "DECAT", "ATLAS")
#: Avro codecs and the package each needs beyond fastavro (None: standard library).
AVRO_CODECS: dict[str, str | None] = {
    "null": None,
    "deflate": None,
    "bzip2": None,
    "xz": None,
    "snappy": "cramjam",
    "zstandard": "backports.zstd" if sys.version_info < (3, 14) else None,
    "lz4": "lz4",
}

#: Alert fields holding the cutouts, in the order of :data:`astrid.schema.CHANNELS`.
_CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
_DECAT_CUTOUTS = ("scicutout", "refcutout", "diffcutout")
_FOLDER_SUFFIXES = (".avro", ".parquet")
_ALERT_SUFFIXES = _FOLDER_SUFFIXES + (".json",)
# Nested histories are large and unused here; Parquet reads skip them.
_HISTORY_COLUMNS = ("prv_candidates", "fp_hists", "sources", "prvDiaSources")
# Top-level columns any survey's adapter or the detection reads; broker
# exports add dozens of others (cross-matches, light-curve features).
_READ_COLUMNS = frozenset(
    (
        "candid",
        "objectId",
        "objectid",
        "objectID",
        "alertid",
        "alertId",
        "candidate",
        "publisher",
        "schemavsn",
        *("cutoutScience", "cutoutTemplate", "cutoutDifference"),
        "triggersource",
        "ra",
        "dec",
        "RA",
        "Dec",
        "mag",
        "Mag",
        "dmag",
        "Dmag",
        "x",
        "X",
        "y",
        "Y",
        "mjd",
        "MJD",
        "jd",
        "filter",
    )
)
# A "cutout" this large is a whole image, not a stamp.
_MAX_NATIVE = 1024
_MJD_TO_JD = 2400000.5

# Candidate fields kept as coordinates, with the value used where an alert
# lacks them (older schema versions, a broker copy without `candidate`, or
# a survey that does not measure them).
_FLOAT_FIELDS = (
    "jd",
    "ra",
    "dec",
    "magpsf",
    "sigmapsf",
    "diffmaglim",
    "magzpsci",
    "rb",
    "drb",
    "fwhm",
    "elong",
    "classtar",
    "scorr",
    "xpos",
    "ypos",
    "distnr",
    "magnr",
    "sgscore1",
    "distpsnr1",
    "ssdistnr",
    "ssmagnr",
    "jdstarthist",
)
_INT_FIELDS = ("fid", "nbad", "programid", "field", "rcid", "ndethist", "ncovhist")
_STR_FIELDS = ("isdiffpos", "rbversion", "drbversion", "ssnamenr", "band")
_INT_FILL = -1

_SURVEY_TOKENS = (
    ("pgir", "PGIR"),
    ("gattini", "PGIR"),
    ("winter", "WINTER"),
    ("decat", "DECAT"),
    ("atlas", "ATLAS"),
    ("ztf", "ZTF"),
)
_OBJECT_PREFIXES = (("ZTF", "ZTF"), ("WNTR", "WINTER"), ("PGIR", "PGIR"))


class _StampError(Exception):
    """A cutout that cannot be decoded (internal; reported as a warning)."""


@dataclass
class _Alert:
    key: str
    survey: str
    candid: int
    object_id: str = ""
    fields: dict[str, Any] | None = None
    stamps: list[np.ndarray | None] = field(default_factory=lambda: [None, None, None])
    native: list[tuple[int, int] | None] = field(default_factory=lambda: [None, None, None])
    expected: tuple[bool, bool, bool] = (True, True, True)
    source: str = ""
    corrupt: bool = False

    @property
    def complete(self) -> bool:
        return all(stamp is not None for stamp, want in zip(self.stamps, self.expected) if want)


@dataclass
class _Packet:
    """One record mapped onto the common fields (what a survey adapter returns)."""

    candid: int | None
    ident: str
    object_id: str
    fields: dict[str, Any] | None
    blobs: list[Any]
    expected: tuple[bool, bool, bool] = (True, True, True)


# --------------------------------------------------------------------------
# cutouts


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


def _decode_stamp(blob: Any, max_size: int = STAMP_SIZE) -> np.ndarray:
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
    if data.shape[0] > max_size or data.shape[1] > max_size or 0 in data.shape:
        raise _StampError(f"cutout shape {data.shape} is not within 1..{max_size} pixels a side")
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
            cards[key.decode("ascii", "replace")] = (
                card[10:].split(b"/")[0].strip().decode("ascii", "replace")
            )
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


def _fit_stamp(data: np.ndarray) -> np.ndarray:
    """Crop a cutout larger than 63 pixels on a side to its central 63."""
    out = data
    for axis, n in enumerate(data.shape):
        if n > STAMP_SIZE:
            start = n // 2 - STAMP_SIZE // 2
            out = (
                out[start : start + STAMP_SIZE] if axis == 0 else out[:, start : start + STAMP_SIZE]
            )
    return out


# --------------------------------------------------------------------------
# files and records


def _expand_paths(
    paths: str | os.PathLike | Iterable[str | os.PathLike], caller: str
) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if not path.exists():
            raise AstridFileError(f"{path}: no such file or folder")
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in _FOLDER_SUFFIXES
                and not p.name.startswith(".")
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
        raise AstridInputError(f"{caller}: no alert files given")
    return files


def _check_codec(path: Path, codec: str) -> None:
    from fastavro.read import BLOCK_READERS

    reader = BLOCK_READERS.get(codec)
    if codec not in AVRO_CODECS and reader is None:
        raise AstridFileError(
            f"{path}: Avro codec {codec!r} is not one fastavro can read "
            f"(known: {', '.join(AVRO_CODECS)})"
        )
    package = AVRO_CODECS.get(codec)
    missing = reader is None or getattr(reader, "__name__", "") == "missing"
    if package is not None and not missing:
        try:
            missing = importlib.util.find_spec(package) is None
        except (ImportError, ValueError):
            missing = True
    if missing:
        need = (
            f"the package '{package}': install it with  pip install {package}"
            if package
            else "a newer fastavro"
        )
        raise AstridFileError(
            f"{path}: the alerts are compressed with the Avro codec {codec!r}, which needs {need}"
        )


class _Source:
    """Records of one file, with what detection needs to know about it."""

    def __init__(self, path: Path):
        self.path = path
        self.schema_names: tuple[str, ...] = ()
        self.schema_fields: tuple[str, ...] = ()
        self.n_read = 0

    def records(self) -> Iterator[dict]:
        if self.path.stat().st_size == 0:
            raise AstridFileError(f"{self.path}: file is empty")
        suffix = self.path.suffix.lower()
        if suffix == ".avro":
            inner = self._avro()
        elif suffix == ".json":
            inner = self._json()
        else:
            inner = self._parquet()
        for record in inner:
            self.n_read += 1
            yield record

    def _after(self) -> str:
        return f" after {self.n_read} records" if self.n_read else ""

    def _avro(self) -> Iterator[dict]:
        fastavro = require("fastavro", "reading Avro alerts")
        with open(self.path, "rb") as fh:
            try:
                reader = fastavro.reader(fh)
            except Exception as exc:  # fastavro raises many types on a header that is not Avro
                raise AstridFileError(
                    f"{self.path}: not an Avro alert file ({type(exc).__name__}: {exc})"
                ) from exc
            _check_codec(self.path, str(reader.codec))
            schema = reader.writer_schema if isinstance(reader.writer_schema, dict) else {}
            self.schema_names = tuple(
                str(schema.get(k, "")) for k in ("name", "namespace") if schema.get(k)
            )
            fields = schema.get("fields") if isinstance(schema.get("fields"), list) else []
            self.schema_fields = tuple(str(f.get("name")) for f in fields if isinstance(f, dict))
            iterator = iter(reader)
            while True:
                try:
                    record = next(iterator)
                except StopIteration:
                    return
                except (
                    Exception
                ) as exc:  # truncated or corrupt blocks surface as many exception types
                    raise AstridFileError(
                        f"{self.path}: not a readable Avro alert file: truncated or corrupt{self._after()} "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
                yield record

    def _parquet(self) -> Iterator[dict]:
        require("pyarrow", "reading Parquet alerts")
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table_file = pq.ParquetFile(self.path)
            names = table_file.schema_arrow.names
            columns = [c for c in names if c in _READ_COLUMNS] or [
                c for c in names if c not in _HISTORY_COLUMNS
            ]
            for batch in table_file.iter_batches(columns=columns, batch_size=256):
                yield from batch.to_pylist()
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise AstridFileError(
                f"{self.path}: not a readable Parquet alert file{self._after()} ({type(exc).__name__}: {exc})"
            ) from exc

    def _json(self) -> Iterator[dict]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                content = json.load(fh, object_hook=_extended_json)
        except (UnicodeDecodeError, json.JSONDecodeError, binascii.Error, ValueError) as exc:
            raise AstridFileError(
                f"{self.path}: not a readable JSON alert file ({type(exc).__name__}: {exc})"
            ) from exc
        records = content if isinstance(content, list) else [content]
        yield from records


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


# --------------------------------------------------------------------------
# survey detection and adapters


def _survey_of_text(text: str) -> str | None:
    low = text.lower()
    for token, survey in _SURVEY_TOKENS:
        if token in low:
            return survey
    return None


def _detect(record: Any, schema_names: tuple[str, ...] = ()) -> str | None:
    """The survey of a packet from its Avro schema name, publisher or keys (None: unknown)."""
    for name in schema_names:
        survey = _survey_of_text(name)
        if survey is not None:
            return survey
    if not isinstance(record, dict):
        return None
    publisher = record.get("publisher")
    if isinstance(publisher, str) and publisher:
        survey = _survey_of_text(publisher)
        if survey is not None:
            return survey
    if isinstance(record.get("triggersource"), dict):
        return "DECAT"
    candidate = record.get("candidate")
    keys = candidate if isinstance(candidate, dict) else record
    if ("RA" in keys or "RA" in record) and "cutoutDifference" in record:
        return "ATLAS"
    object_id = record.get("objectId", record.get("objectid"))
    if isinstance(object_id, str):
        for prefix, survey in _OBJECT_PREFIXES:
            if object_id.startswith(prefix):
                return survey
    if isinstance(candidate, dict):
        if "boardid" in candidate or "fieldid" in candidate:
            return "WINTER"
        # The ZTF layout without a telling name (a broker's re-export).
        if ("candid" in record or "candid" in candidate) and any(
            k in record for k in _CUTOUT_FIELDS
        ):
            return "ZTF"
    return None


def _float(value: Any) -> float:
    try:
        return np.nan if value is None else float(value)
    except (TypeError, ValueError):
        return np.nan


def _int(value: Any) -> int:
    try:
        return _INT_FILL if value is None else int(value)
    except (TypeError, ValueError):
        return _INT_FILL


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        # WINTER writes isdiffpos as a boolean; ZTF as "t"/"f" (or "1"/"0")
        return "t" if value else "f"
    return str(value)


def _candidate_fields(candidate: dict, band: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _FLOAT_FIELDS:
        out[key] = _float(candidate.get(key))
    for key in _INT_FIELDS:
        out[key] = _int(candidate.get(key))
    for key in _STR_FIELDS:
        out[key] = _text(candidate.get(key))
    out["band"] = band
    return out


def _empty_fields() -> dict[str, Any]:
    return _candidate_fields({})


def _fill_missing(fields: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in fields.items():
        if isinstance(value, float) and np.isnan(value):
            fields[key] = extra[key]
        elif isinstance(value, int) and value == _INT_FILL:
            fields[key] = extra[key]
        elif isinstance(value, str) and not value:
            fields[key] = extra[key]


def _cutout(record: dict, key: str) -> Any:
    """The bytes of one cutout: ``{fileName, stampData}`` (ZTF) or bare bytes (WINTER)."""
    cutout = record.get(key)
    if isinstance(cutout, dict):
        return cutout.get("stampData")
    return cutout


def _require_id(value: Any, path: Path, what: str, record: dict) -> Any:
    if value is None or value == "":
        raise AstridInputError(
            f"{path}: a record has no {what} (top-level keys: {sorted(record)[:20]}); is this an alert file?"
        )
    return value


def _integer_id(value: Any, path: Path) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AstridInputError(f"{path}: a record has candid={value!r}, not an integer") from None


def _ztf_like(record: dict, path: Path, band_of: Callable[[dict], str]) -> _Packet:
    candidate = record.get("candidate")
    candid = record.get("candid")
    if candid is None and isinstance(candidate, dict):
        candid = candidate.get("candid")
    candid = _integer_id(_require_id(candid, path, "'candid'", record), path)
    object_id = record.get("objectId", record.get("objectid"))
    fields = (
        _candidate_fields(candidate, band_of(candidate)) if isinstance(candidate, dict) else None
    )
    return _Packet(
        candid=candid,
        ident=str(candid),
        object_id=_text(object_id),
        fields=fields,
        blobs=[_cutout(record, key) for key in _CUTOUT_FIELDS],
    )


def _ztf_band(candidate: dict) -> str:
    return ZTF_FILTERS.get(_int(candidate.get("fid")), "")


def _pgir_band(candidate: dict) -> str:
    return "J"


def _winter_band(candidate: dict) -> str:
    return WINTER_FILTERS.get(_int(candidate.get("fid")), "")


def _ztf(record: dict, path: Path) -> _Packet:
    return _ztf_like(record, path, _ztf_band)


def _pgir(record: dict, path: Path) -> _Packet:
    return _ztf_like(record, path, _pgir_band)


def _winter(record: dict, path: Path) -> _Packet:
    packet = _ztf_like(record, path, _winter_band)
    candidate = record.get("candidate")
    if packet.fields is not None and isinstance(candidate, dict):
        packet.fields["field"] = _int(candidate.get("fieldid", candidate.get("field")))
    return packet


def _decat(record: dict, path: Path) -> _Packet:
    source = record.get("triggersource")
    if not isinstance(source, dict):
        raise AstridInputError(
            f"{path}: a DECam record has no 'triggersource' (keys: {sorted(record)[:12]})"
        )
    ident = _require_id(source.get("sourceid"), path, "'triggersource.sourceid'", record)
    mjd = _float(source.get("mjd"))
    band = _text(source.get("filter")).split(" ")[0]
    fields = _candidate_fields(
        {
            "jd": mjd + _MJD_TO_JD,
            "ra": source.get("ra", record.get("ra")),
            "dec": source.get("dec", record.get("dec")),
            "magpsf": source.get("mag"),
            "sigmapsf": source.get("magerr"),
            "diffmaglim": source.get("limmag"),
            "magzpsci": source.get("magzp"),
            "rb": source.get("rb"),
            "fwhm": source.get("fwhm"),
        },
        band,
    )
    return _Packet(
        candid=_int(ident),
        ident=str(ident),
        object_id=_text(record.get("objectid", record.get("objectId"))),
        fields=fields,
        blobs=[source.get(key) for key in _DECAT_CUTOUTS],
    )


def _first(mapping: dict, *names: str) -> Any:
    for name in names:
        if name in mapping and mapping[name] is not None:
            return mapping[name]
    return None


def _atlas(record: dict, path: Path) -> _Packet:
    candidate = record.get("candidate")
    values = {**record, **candidate} if isinstance(candidate, dict) else record
    ident = _require_id(_first(values, "candid", "alertId"), path, "'candid'", record)
    mjd = _float(_first(values, "mjd", "MJD"))
    jd = _float(values.get("jd"))
    fields = _candidate_fields(
        {
            "jd": jd if np.isfinite(jd) else mjd + _MJD_TO_JD,
            "ra": _first(values, "RA", "ra"),
            "dec": _first(values, "Dec", "dec"),
            "magpsf": _first(values, "mag", "Mag"),
            "sigmapsf": _first(values, "dmag", "Dmag"),
            "xpos": _first(values, "x", "X"),
            "ypos": _first(values, "y", "Y"),
        },
        _text(values.get("filter")),
    )
    blobs = [_cutout(record, key) for key in _CUTOUT_FIELDS]
    # ATLAS sends no template cutout; an old packet that carries one is read.
    return _Packet(
        candid=_int(ident) if str(ident).isdigit() else _INT_FILL,
        ident=str(ident),
        object_id=_text(_first(record, "objectId", "objectID", "objectid")),
        fields=fields,
        blobs=blobs,
        expected=(True, blobs[1] is not None, True),
    )


_ADAPTERS: dict[str, Callable[[dict, Path], _Packet]] = {
    "ZTF": _ztf,
    "PGIR": _pgir,
    "WINTER": _winter,
    "DECAT": _decat,
    "ATLAS": _atlas,
}


def _survey_argument(survey: str) -> str | None:
    if not isinstance(survey, str):
        raise AstridInputError(
            f"survey: expected 'auto' or one of {list(SURVEYS)}, got {type(survey).__name__}"
        )
    if survey.lower() == "auto":
        return None
    for name in SURVEYS:
        if survey.upper() == name or (
            name == "PGIR" and survey.lower() in ("gattini", "gattini-ir")
        ):
            return name
    if survey.upper() == "DECAM":
        return "DECAT"
    raise AstridInputError(f"survey={survey!r} is not 'auto' or one of {list(SURVEYS)}")


def _key(survey: str, ident: str) -> str:
    # ZTF ids stay bare (backward compatible); other surveys' ids can collide with them
    return ident if survey == "ZTF" else f"{survey}:{ident}"


# --------------------------------------------------------------------------
# readers


def read_alerts(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    survey: str = "auto",
    *,
    require_stamps: bool = True,
    on_error: str = "raise",
) -> xr.Dataset:
    """Read alert packets of ZTF, Gattini-IR, WINTER, DECam (DECAT) or ATLAS into a triplet dataset.

    Each file's survey is detected from its Avro schema name (``ztf.alert``,
    ``pgir.alert``, ``winter.alert``, ``decat.*``, ``atlas.alert``), its
    ``publisher`` field, or the keys of its records (see the module
    docstring); one call may mix surveys. Alerts are de-duplicated by
    survey and candidate id: the same alert often appears in several files,
    sometimes without its cutouts; the cutouts are taken from a copy that
    has them, and each candidate field from the first copy that has it.

    Parameters
    ----------
    paths : path-like or iterable of path-like
        ``.avro`` (any codec fastavro reads: null, deflate, snappy, bzip2,
        xz, zstandard, lz4) and ``.parquet`` files, or folders searched
        recursively for them; ``.json`` files (one alert or a list, in
        MongoDB extended JSON as Kowalski exports them) when named
        explicitly, since folders often hold unrelated JSON.
    survey : {"auto", "ZTF", "PGIR", "WINTER", "DECAT", "ATLAS"}, optional
        ``"auto"`` (default) detects each file's survey. A survey name
        (case-insensitive; ``"gattini"`` and ``"decam"`` are accepted)
        reads every file with that survey's layout and refuses a file that
        is recognisably another survey's.
    require_stamps : bool, optional
        Drop alerts that lack any cutout their survey sends (default). With
        False they are kept with NaN stamps (``valid`` False,
        ``stamp_present`` False, ``stamp_ny`` = 0). A channel the survey
        never sends (ATLAS's template) is always kept missing and never
        makes an alert incomplete.
    on_error : {"raise", "warn"}, optional
        What an unreadable file (truncated, corrupt, not an alert file, a
        codec whose package is missing) does: ``"raise"`` (default) raises
        :class:`AstridFileError`; ``"warn"`` warns, keeps the alerts read
        from that file before the fault, and reads the other files.

    Returns
    -------
    xarray.Dataset
        Triplet schema (:mod:`astrid.schema`), one entry per distinct alert,
        sorted by survey (in the order of :data:`SURVEYS`), then ``candid``,
        then id:

        - ``triplets`` (candidate, y, x, channel), float32: science, template
          (``reference``) and difference cutouts in their native units,
          placed at ``[0:ny, 0:nx]`` and NaN-padded to 63×63 (larger cutouts
          cropped to their central 63×63);
        - ``valid``: finite pixels inside the cutouts;
        - coordinates ``candidate_id`` (``str(candid)`` for ZTF,
          ``"SURVEY:id"`` for the others), ``survey``, ``candid`` (int64;
          -1 where the survey's id is not an integer, e.g. ATLAS),
          ``objectId``, ``band`` (filter name: ZTF g/r/i, WINTER Y/J/Hs/dark,
          PGIR J, DECam and ATLAS as sent), candidate fields ``jd, ra, dec``
          (deg), ``magpsf, sigmapsf, diffmaglim, magzpsci`` (mag), ``rb, drb``,
          ``fwhm`` (pix), ``elong``, ``classtar``, ``scorr``, ``xpos, ypos``,
          ``distnr, magnr``, ``sgscore1, distpsnr1``, ``ssdistnr, ssmagnr``,
          ``jdstarthist`` (floats, NaN where absent), ``fid, nbad,
          programid, field, rcid, ndethist, ncovhist`` (ints, -1 where
          absent), ``isdiffpos, rbversion, drbversion, ssnamenr`` (strings,
          ``""`` where absent) — values as in the alerts (e.g. ZTF's -999
          for "none"; DECam and ATLAS ``mjd`` converted to ``jd``), plus
          ``stamp_present``, ``stamp_ny``, ``stamp_nx`` (candidate, channel),
          ``stamp_shape`` (native shape of the science cutout) and
          ``source_file``;
        - attributes ``schema, source, mission, filter, surveys`` and the
          counts ``n_files, n_packets, n_distinct, n_without_stamps,
          n_corrupt, n_cropped, n_bad_files`` (and ``bad_files``, the files
          skipped with ``on_error="warn"``).

    Raises
    ------
    AstridFileError
        A path does not exist; a file cannot be decoded as Avro, Parquet or
        JSON (truncated, corrupt), needs a codec package that is missing
        (the message names the codec and the package), or holds records
        whose survey cannot be told (the message lists their top-level
        keys). With ``on_error="warn"`` the last three warn instead.
    AstridInputError
        ``survey`` is not a known survey, ``on_error`` is not "raise" or
        "warn", a folder holds no alert files, a file is not an alert file,
        a record has no candidate id, or a file holds another survey's
        alerts than the ``survey`` asked for.

    Warns
    -----
    AstridWarning
        A cutout cannot be decoded: that alert is skipped (counted in
        ``n_corrupt``), the rest of the file is read. A file skipped with
        ``on_error="warn"``.
    """
    wanted = _survey_argument(survey)
    return _read(
        paths, wanted, require_stamps=require_stamps, on_error=on_error, caller="read_alerts"
    )


def read_ztf(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    require_stamps: bool = True,
    on_error: str = "raise",
) -> xr.Dataset:
    """Read ZTF alert packets (Avro, Parquet or JSON) into a triplet dataset.

    The same as :func:`read_alerts` with ``survey="ZTF"``: every Avro codec,
    Parquet and JSON, de-duplication by ``candid`` (cutouts from a copy that
    has them, each candidate field from the first copy that has it: older
    schema versions lack e.g. ``drb``). A file holding another survey's
    alerts (WINTER, Gattini-IR, DECam, ATLAS) is refused with an error that
    points to :func:`read_alerts`, never read as zero alerts.

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
    on_error : {"raise", "warn"}, optional
        As in :func:`read_alerts`.

    Returns
    -------
    xarray.Dataset
        As :func:`read_alerts` (``survey`` is ``"ZTF"`` throughout;
        ``candidate_id`` is ``str(candid)``), with attributes ``source``
        "ZTF alert packets" and ``mission`` "ZTF".

    Raises
    ------
    AstridFileError
        A path does not exist, or a file cannot be decoded as Avro, Parquet
        or JSON, or needs a codec package that is missing (the message
        names the file, the codec and the package).
    AstridInputError
        A folder holds no alert files, a file is not an alert file, holds
        another survey's alerts, or a record has no ``candid``.

    Warns
    -----
    AstridWarning
        A cutout cannot be decoded: that alert is skipped, the rest of the
        file is read.
    """
    return _read(paths, "ZTF", require_stamps=require_stamps, on_error=on_error, caller="read_ztf")


def _read(
    paths, wanted: str | None, *, require_stamps: bool, on_error: str, caller: str
) -> xr.Dataset:
    if on_error not in ("raise", "warn"):
        raise AstridInputError(f"on_error={on_error!r} is not 'raise' or 'warn'")
    files = _expand_paths(paths, caller)
    alerts: dict[str, _Alert] = {}
    n_packets = 0
    bad_files: list[str] = []
    for path in files:
        source = _Source(path)
        try:
            n_packets += _read_file(source, alerts, wanted, caller)
        except AstridFileError as exc:
            if on_error == "raise":
                raise
            n_packets += source.n_read
            bad_files.append(str(path))
            warnings.warn(
                f"{exc}; file skipped, {source.n_read} records read from it kept",
                AstridWarning,
                stacklevel=3,
            )

    n_corrupt = sum(1 for a in alerts.values() if a.corrupt and not a.complete)
    kept = [a for a in alerts.values() if not (a.corrupt and not a.complete)]
    n_without = sum(1 for a in kept if not a.complete)
    if require_stamps:
        kept = [a for a in kept if a.complete]
    order = {name: i for i, name in enumerate(SURVEYS)}
    kept.sort(key=lambda a: (order[a.survey], a.candid, a.key))
    if n_without:
        log.info(
            "%s: %d of %d distinct alerts lack one or more cutouts%s",
            caller,
            n_without,
            len(alerts),
            " and were dropped" if require_stamps else "",
        )
    attrs: dict[str, Any] = {
        "n_files": len(files),
        "n_packets": n_packets,
        "n_distinct": len(alerts),
        "n_without_stamps": n_without,
        "n_corrupt": n_corrupt,
        "require_stamps": int(bool(require_stamps)),
        "n_bad_files": len(bad_files),
    }
    if bad_files:
        attrs["bad_files"] = "\n".join(bad_files)
    return _to_dataset(kept, attrs, ztf_only=wanted == "ZTF")


def _read_file(source: _Source, alerts: dict[str, _Alert], wanted: str | None, caller: str) -> int:
    """Merge one file's records into ``alerts``; returns the number of records."""
    path = source.path
    adapter = None
    survey = None
    n = 0
    for record in source.records():
        n += 1
        if not isinstance(record, dict):
            raise AstridInputError(f"{path}: records are not alerts (got {type(record).__name__})")
        if adapter is None:
            detected = _detect(record, source.schema_names)
            if wanted is not None and detected is not None and detected != wanted:
                hint = (
                    " (use astrid.alerts.read_alerts(..., survey='auto'))"
                    if caller == "read_ztf"
                    else ""
                )
                raise AstridInputError(
                    f"{path}: holds {detected} alerts, not {wanted} alerts{hint}"
                )
            survey = wanted or detected
            if survey is None:
                schema = (
                    f" (Avro schema {'/'.join(source.schema_names)})" if source.schema_names else ""
                )
                raise AstridFileError(
                    f"{path}: not an alert file of a known survey{schema}: cannot tell ZTF, PGIR, WINTER, "
                    f"DECAT or ATLAS from its records (top-level keys: {sorted(record)[:20]}); "
                    "pass survey= to read_alerts if it is one of them"
                )
            adapter = _ADAPTERS[survey]
        _merge_record(alerts, adapter(record, path), record, survey, path)
    if n == 0 and source.schema_fields and not set(source.schema_fields) & _ALERT_ID_FIELDS:
        # An empty file says nothing through its records, but its schema still does: a file of
        # another kind must not pass as a quiet night without alerts.
        schema = "/".join(source.schema_names) or "unnamed"
        raise AstridFileError(
            f"{path}: not an alert file: its Avro schema ({schema}) has fields {list(source.schema_fields)[:20]} "
            "and none that identifies an alert"
        )
    return n


#: Top-level fields of which every known alert schema has at least one.
_ALERT_ID_FIELDS = frozenset(
    {
        "candid",
        "candidate",
        "objectId",
        "objectid",
        "triggersource",
        "alertId",
        "diaSource",
        *_CUTOUT_FIELDS,
    }
)


def _merge_record(
    alerts: dict[str, _Alert], packet: _Packet, record: dict, survey: str, path: Path
) -> None:
    key = _key(survey, packet.ident)
    alert = alerts.get(key)
    if alert is None:
        alert = alerts[key] = _Alert(
            key=key,
            survey=survey,
            candid=packet.candid if packet.candid is not None else _INT_FILL,
            expected=packet.expected,
        )
    else:
        alert.expected = tuple(a or b for a, b in zip(alert.expected, packet.expected))
    if not alert.object_id and packet.object_id:
        alert.object_id = packet.object_id
    if packet.fields is not None:
        if alert.fields is None:
            alert.fields = packet.fields
        else:
            # Copies of one alert from different schema versions or brokers
            # carry different subsets of fields (`drb` exists only in newer schema versions).
            _fill_missing(alert.fields, packet.fields)
    if all(stamp is not None for stamp in alert.stamps):
        return
    decoded: dict[int, np.ndarray] = {}
    for i, blob in enumerate(packet.blobs):
        if alert.stamps[i] is not None or blob is None:
            continue
        try:
            decoded[i] = _decode_stamp(blob, max_size=_MAX_NATIVE)
        except _StampError as exc:
            name = _DECAT_CUTOUTS[i] if survey == "DECAT" else _CUTOUT_FIELDS[i]
            warnings.warn(
                f"{path}: alert {'candid=' + packet.ident if survey == 'ZTF' else key}: {name} cannot be "
                f"decoded ({exc}); alert skipped",
                AstridWarning,
                stacklevel=5,
            )
            alert.corrupt = True
            return
    for i, stamp in decoded.items():
        alert.native[i] = stamp.shape
        alert.stamps[i] = _fit_stamp(stamp)
    if decoded and (not alert.source or alert.complete):
        alert.source = str(path)


def _to_dataset(alerts: list[_Alert], attrs: dict[str, Any], *, ztf_only: bool) -> xr.Dataset:
    n = len(alerts)
    stamps = np.full((n, STAMP_SIZE, STAMP_SIZE, len(CHANNELS)), np.nan, dtype=np.float32)
    valid = np.zeros(stamps.shape, dtype=bool)
    stamp_ny = np.zeros((n, len(CHANNELS)), dtype=np.int16)
    stamp_nx = np.zeros((n, len(CHANNELS)), dtype=np.int16)
    present = np.zeros((n, len(CHANNELS)), dtype=bool)
    n_cropped = 0
    for i, alert in enumerate(alerts):
        cropped = False
        for c, stamp in enumerate(alert.stamps):
            if stamp is None:
                continue
            ny, nx = stamp.shape
            stamps[i, :ny, :nx, c] = stamp
            valid[i, :ny, :nx, c] = np.isfinite(stamp)
            stamp_ny[i, c], stamp_nx[i, c] = ny, nx
            present[i, c] = True
            cropped |= alert.native[c] != stamp.shape
        n_cropped += int(cropped)

    fields = [a.fields if a.fields is not None else _empty_fields() for a in alerts]
    coords: dict[str, Any] = {
        "candidate_id": np.array([a.key for a in alerts], dtype=object),
        "survey": np.array([a.survey for a in alerts], dtype=object),
        "candid": np.array([a.candid for a in alerts], dtype=np.int64),
        "objectId": np.array([a.object_id for a in alerts], dtype=object),
    }
    for key in _FLOAT_FIELDS:
        coords[key] = np.array([f[key] for f in fields], dtype=np.float64)
    for key in _INT_FIELDS:
        coords[key] = np.array([f[key] for f in fields], dtype=np.int64)
    for key in _STR_FIELDS:
        coords[key] = np.array([f[key] for f in fields], dtype=object)
    coords["stamp_present"] = (("candidate", "channel"), present)
    coords["stamp_ny"] = (("candidate", "channel"), stamp_ny)
    coords["stamp_nx"] = (("candidate", "channel"), stamp_nx)
    coords["stamp_shape"] = np.array(
        [f"{a.native[0][0]}x{a.native[0][1]}" if a.native[0] else "" for a in alerts], dtype=object
    )
    coords["source_file"] = np.array([a.source for a in alerts], dtype=object)

    surveys = [s for s in SURVEYS if any(a.survey == s for a in alerts)]
    if ztf_only or surveys == ["ZTF"]:
        fids = sorted({int(f) for f in coords["fid"] if f in ZTF_FILTERS})
        if len(fids) == 1:
            filter_name = ZTF_FILTERS[fids[0]]
        elif fids:
            filter_name = "mixed (see fid: 1=g, 2=r, 3=i)"
        else:
            filter_name = ""
    else:
        bands = sorted({str(b) for b in coords["band"] if b})
        filter_name = bands[0] if len(bands) == 1 else ("mixed (see band)" if bands else "")
    if ztf_only:
        source, mission = "ZTF alert packets", "ZTF"
    else:
        source = "alert packets"
        mission = surveys[0] if len(surveys) == 1 else ("mixed (see survey)" if surveys else "")
    all_attrs = {
        "source": source,
        "mission": mission,
        "filter": filter_name,
        "surveys": ",".join(surveys),
        "stamp_placement": (
            "cutout at [0:stamp_ny, 0:stamp_nx], NaN after it (braai's convention); "
            "cutouts over 63 pixels cropped to their central 63"
        ),
        "n_cropped": n_cropped,
    }
    all_attrs.update(attrs)
    return new_triplet_dataset(stamps, coords, all_attrs, valid=valid)
