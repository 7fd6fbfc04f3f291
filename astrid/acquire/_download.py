"""Resumable, verified downloads into the survey layout, and the query checkpoint.

Every file is streamed into ``<name>.part`` beside its destination, checked
(size cap, the archive's checksum when it gives one, gzip integrity, opened
with astropy as FITS) and only then renamed into place, so a crash leaves
either the whole file or none. Transient failures (connection drops, HTTP 429
and 5xx, a corrupt or truncated body) are retried with exponential back-off;
permanent ones (HTTP 404, a file over the size cap) are reported at once.
The survey's ``manifest.json`` is rewritten after each file lands, and a rerun
skips every file the manifest lists with a matching size and SHA-256.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import time
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .._utils import is_image_hdu, json_safe
from ..errors import AstridInputError
from ..manifest import Manifest, sha256sum
from ._errors import AstridDownloadError

__all__ = [
    "download",
    "fetch_file",
    "validate_fits",
    "DownloadReport",
    "FetchResult",
    "QueryCheckpoint",
    "safe_name",
]

_CHUNK = 1 << 16
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_GZIP_MAGIC = b"\x1f\x8b"


class _Retryable(Exception):
    """A failure that another attempt may cure (network, corrupt body)."""


class _Permanent(Exception):
    """A failure that retrying cannot cure (HTTP 404, over the size cap)."""


@dataclass
class FetchResult:
    """One fetched file.

    Attributes
    ----------
    path : pathlib.Path
        Where the file landed.
    size : int
        Size on disk in bytes.
    sha256 : str
        SHA-256 of the file on disk.
    attempts : int
        Attempts used (1 when the first succeeded).
    url : str
        The source.
    """

    path: Path
    size: int
    sha256: str
    attempts: int
    url: str


@dataclass
class DownloadReport:
    """What :func:`download` did.

    Attributes
    ----------
    out_dir : pathlib.Path
        The survey folder.
    downloaded : list of str
        Files fetched in this run (paths relative to ``out_dir``).
    skipped : list of str
        Files already present with the recorded size and checksum.
    failed : list of dict
        ``{"target", "role", "obsid", "url", "reason"}`` for each file that
        could not be fetched; its pairs are not recorded.
    pairs : int
        Pairs recorded in the manifest by this run (new or already there).
    attempts : int
        HTTP/file attempts made in total.
    """

    out_dir: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    pairs: int = 0
    attempts: int = 0

    @property
    def manifest_path(self) -> Path:
        """The survey's ``manifest.json``."""
        return self.out_dir / "manifest.json"

    def __str__(self) -> str:
        return (
            f"DownloadReport({len(self.downloaded)} downloaded, {len(self.skipped)} already present, "
            f"{len(self.failed)} failed, {self.pairs} pairs in {self.manifest_path})"
        )


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #


def _gunzipped_length(path: Path) -> int:
    """Length of a gzip file's content, read in chunks (the CRC and length trailer are checked at the end)."""
    total = 0
    with gzip.open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            total += len(block)
    return total


def validate_fits(path: str | os.PathLike, *, require_image: bool = True) -> None:
    """Check that a (possibly gzipped) file is a complete FITS file, without loading its data.

    A gzip stream is decompressed in chunks (its CRC and length are
    checked); astropy then parses every header, and the data each header
    declares must fit in the file, so a truncated download is caught here
    rather than later in the pipeline. Memory use does not grow with the
    file size.

    Parameters
    ----------
    path : path-like
        The file.
    require_image : bool, optional
        Also require at least one HDU with 2-D (or higher) image data.

    Raises
    ------
    AstridInputError
        Not FITS, truncated, corrupt, or without image data; the message
        names the file and the problem.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        compressed = fh.read(2) == _GZIP_MAGIC
    try:
        length = _gunzipped_length(path) if compressed else path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise AstridInputError(f"{path.name}: corrupt gzip stream ({exc})") from exc
    has_image = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=not compressed, lazy_load_hdus=False) as hdul:
                for index, hdu in enumerate(hdul):
                    info = hdul.fileinfo(index)
                    # a tile-compressed image reports its uncompressed size; its span on disk is what must fit
                    span = info["datSpan"] if isinstance(hdu, fits.CompImageHDU) else hdu.size
                    if info["datLoc"] + span > length:
                        raise AstridInputError(
                            f"{path.name}: truncated FITS file (HDU {index} needs {info['datLoc'] + span} bytes, "
                            f"the file has {length})"
                        )
                    has_image |= is_image_hdu(hdu)
        except AstridInputError:
            raise
        except (OSError, EOFError, zlib.error) as exc:
            raise AstridInputError(f"{path.name}: not a readable FITS file ({exc})") from exc
        except Exception as exc:  # astropy raises many types for damaged headers
            raise AstridInputError(
                f"{path.name}: corrupt FITS file ({type(exc).__name__}: {exc})"
            ) from exc
    for warning in caught:
        text = str(warning.message)
        if "truncat" in text.lower() or "corrupt" in text.lower():
            raise AstridInputError(f"{path.name}: truncated FITS file ({text})")
    if require_image and not has_image:
        raise AstridInputError(f"{path.name}: FITS file holds no 2-D image data")


def _parse_checksum(text: str | None) -> tuple[str, str] | None:
    """(algorithm, hex digest) of ``"md5:..."``, ``"sha256:..."`` or a bare hex digest."""
    if not text:
        return None
    text = str(text).strip()
    if ":" in text:
        algo, _, digest = text.partition(":")
        algo = algo.lower().replace("-", "")
    else:
        digest = text
        algo = {32: "md5", 40: "sha1", 64: "sha256"}.get(len(text), "")
    if algo not in ("md5", "sha1", "sha256") or not re.fullmatch(r"[0-9a-fA-F]+", digest):
        raise AstridInputError(
            f"checksum {text!r} is not 'md5:<hex>', 'sha1:<hex>' or 'sha256:<hex>'"
        )
    return algo, digest.lower()


def _header_checksums(headers) -> list[tuple[str, str]]:
    """Checksums an HTTP server declares (Content-MD5, Digest / Repr-Digest with SHA-256)."""
    out = []
    md5 = headers.get("Content-MD5")
    if md5:
        try:
            out.append(("md5", base64.b64decode(md5).hex()))
        except ValueError:
            pass
    for key in ("Repr-Digest", "Digest"):
        value = headers.get(key)
        if not value:
            continue
        for part in value.split(","):
            name, _, encoded = part.strip().partition("=")
            name = name.strip().lower().replace("-", "")
            encoded = encoded.strip().strip(":")
            if name in ("sha256", "md5"):
                try:
                    out.append((name, base64.b64decode(encoded).hex()))
                except ValueError:
                    pass
    return out


# --------------------------------------------------------------------------- #
# fetching one file
# --------------------------------------------------------------------------- #


def _session(session):
    if session is not None:
        return session
    import requests

    new = requests.Session()
    new.headers["User-Agent"] = "astrid-acquire (https://github.com/astrid/astrid)"
    return new


def _local_source(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    if "://" not in url:
        return Path(url)
    return None


def _stream_to(
    url: str,
    part: Path,
    *,
    session,
    timeout: float,
    max_bytes: int | None,
    algorithms: Iterable[str] = (),
) -> tuple[int, dict, Any]:
    """Stream ``url`` into ``part``; return (bytes written, hex digests, response headers).

    SHA-256 is always computed (the manifest records it), other digests
    only when asked for or declared by the server.
    """
    digests = {"sha256": hashlib.sha256()}
    written = 0

    def want(names) -> None:
        for algo in names:
            if algo not in digests:
                digests[algo] = hashlib.new(algo, usedforsecurity=False)

    def consume(chunks):
        nonlocal written
        with open(part, "wb") as fh:
            for chunk in chunks:
                if not chunk:
                    continue
                written += len(chunk)
                if max_bytes is not None and written > max_bytes:
                    raise _Permanent(f"larger than the size cap of {max_bytes} bytes")
                for d in digests.values():
                    d.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())

    want(algorithms)
    local = _local_source(url)
    if local is not None:
        if not local.is_file():
            raise _Permanent(f"local file {local} does not exist")
        if max_bytes is not None and local.stat().st_size > max_bytes:
            raise _Permanent(
                f"{local.stat().st_size} bytes, over the size cap of {max_bytes} bytes"
            )
        with open(local, "rb") as src:
            consume(iter(lambda: src.read(_CHUNK), b""))
        return written, {k: d.hexdigest() for k, d in digests.items()}, {}

    import requests

    try:
        response = session.request("GET", url, stream=True, timeout=timeout, allow_redirects=True)
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
    with response:
        status = response.status_code
        if status in _RETRY_STATUS:
            retry_after = response.headers.get("Retry-After")
            error = _Retryable(f"HTTP {status} {response.reason or ''}".strip())
            error.retry_after = (
                float(retry_after) if retry_after and retry_after.isdigit() else None
            )
            raise error
        if status >= 400:
            raise _Permanent(f"HTTP {status} {response.reason or ''}".strip())
        length = response.headers.get("Content-Length")
        encoded = bool(response.headers.get("Content-Encoding"))
        if length and length.isdigit() and max_bytes is not None and int(length) > max_bytes:
            raise _Permanent(f"{int(length)} bytes, over the size cap of {max_bytes} bytes")
        if (
            not encoded
        ):  # a declared digest is of the encoded body, not of the bytes requests hands over
            want(algo for algo, _ in _header_checksums(response.headers))
        try:
            consume(response.iter_content(_CHUNK))
        except (requests.exceptions.RequestException, OSError) as exc:
            raise _Retryable(f"transfer interrupted ({type(exc).__name__}: {exc})") from exc
        if length and length.isdigit() and not encoded and written != int(length):
            raise _Retryable(f"truncated transfer: {written} of {length} bytes")
        return written, {k: d.hexdigest() for k, d in digests.items()}, response.headers


def _finish(part: Path, dest: Path) -> bool:
    """Make ``dest`` from the verified download: gunzip or gzip to match its name, check, rename.

    Returns whether the body was converted (so its digest is no longer the file's).
    """
    with open(part, "rb") as fh:
        is_gzip = fh.read(2) == _GZIP_MAGIC
    want_gzip = dest.name.endswith(".gz")
    ready = part
    if is_gzip != want_gzip:
        converted = part.with_name(part.name + ("z" if want_gzip else "u"))
        try:
            if is_gzip:
                with gzip.open(part, "rb") as src, open(converted, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            else:
                with open(part, "rb") as src, gzip.GzipFile(converted, "wb", mtime=0) as out:
                    shutil.copyfileobj(src, out, _CHUNK)
        except (OSError, EOFError, zlib.error) as exc:
            converted.unlink(missing_ok=True)
            raise _Retryable(f"corrupt gzip stream ({exc})") from exc
        part.unlink()
        ready = converted
    try:
        validate_fits(ready)
    except AstridInputError as exc:
        ready.unlink(missing_ok=True)
        raise _Retryable(f"corrupt download: {exc}") from exc
    os.replace(ready, dest)
    return ready != part


@dataclass(frozen=True)
class FetchOptions:
    """How :func:`fetch_file` and :func:`download` fetch: retries, back-off, timeout, size cap.

    Attributes
    ----------
    retries : int
        Further attempts after the first (default 4).
    backoff_s : float
        Wait ``backoff_s * 2**k`` seconds before retry ``k + 1`` (default 2).
    max_backoff_s : float
        The longest wait between retries, in seconds (default 120); a server's
        ``Retry-After`` is honoured up to that cap.
    timeout : float
        Seconds to wait for the server to connect or send data.
    max_bytes : int or None
        Size cap per file in bytes; a larger file is refused without retry.
    """

    retries: int = 4
    backoff_s: float = 2.0
    max_backoff_s: float = 120.0
    timeout: float = 60.0
    max_bytes: int | None = None


def _checked_destination(url: str, dest: str | os.PathLike) -> Path:
    """``dest`` as a Path, its folder made; AstridDownloadError (no retry) where it cannot be."""
    scheme = urlparse(str(url)).scheme.lower() if "://" in str(url) else ""
    if scheme not in ("", "file", "http", "https"):
        # Permanent: no retry can make requests speak FTP, S3, ...
        raise AstridDownloadError(
            f"{url}: cannot download {scheme}:// addresses; AstrID fetches http(s)://, file:// URLs and local paths",
            url=str(url),
            attempts=0,
        )
    dest = Path(dest)
    if dest.is_dir():
        raise AstridDownloadError(
            f"{dest}: the download target is a folder; give a file name", url=str(url), attempts=0
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AstridDownloadError(
            f"{dest}: cannot create the folder {dest.parent} ({exc.strerror or exc})",
            url=str(url),
            attempts=0,
        ) from None
    return dest


def fetch_file(
    url: str,
    dest: str | os.PathLike,
    *,
    checksum: str | None = None,
    expected_size: int | None = None,
    options: FetchOptions | None = None,
    validate: bool = True,
    session=None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch one FITS file atomically, verified, with retries and exponential back-off.

    Parameters
    ----------
    url : str
        HTTP(S) address, ``file://`` URL or local path.
    dest : path-like
        Final path. A name ending in ``.gz`` is kept gzip-compressed (the
        body is compressed if the server sent it plain); any other name gets
        the decompressed file.
    checksum : str, optional
        Expected digest of the body as sent, ``"md5:<hex>"``, ``"sha1:<hex>"``
        or ``"sha256:<hex>"`` (a bare hex digest is recognised by its length).
        Digests the server declares (``Content-MD5``, ``Digest``) are checked too.
    expected_size : int, optional
        Expected body size in bytes (from the archive's product list).
    options : FetchOptions, optional
        Retries, back-off, timeout and size cap (default ``FetchOptions()``).
    validate : bool, optional
        Open the result with astropy and require image data (default True).
    session : requests.Session, optional
        HTTP session (one is made by default).
    sleep : callable, optional
        Function used to wait between attempts (tests pass a recorder).

    Returns
    -------
    FetchResult
        Where the file landed, its size and SHA-256, the attempts used and
        the source URL.

    Raises
    ------
    AstridDownloadError
        All attempts failed, or a permanent failure (HTTP 4xx, over the cap).
    """
    dest = _checked_destination(url, dest)
    part = dest.with_name(dest.name + ".part")

    def clean() -> None:
        for leftover in (part, part.with_name(part.name + "z"), part.with_name(part.name + "u")):
            leftover.unlink(missing_ok=True)

    clean()  # whatever a killed run left behind
    wanted = _parse_checksum(checksum)
    session = None if _local_source(url) is not None else _session(session)
    options = FetchOptions() if options is None else options
    retries, backoff_s, max_backoff_s = options.retries, options.backoff_s, options.max_backoff_s
    reason = ""
    attempts = 0
    for attempt in range(int(retries) + 1):
        attempts = attempt + 1
        try:
            size, digests, headers = _stream_to(
                url,
                part,
                session=session,
                timeout=options.timeout,
                max_bytes=options.max_bytes,
                algorithms=[wanted[0]] if wanted else (),
            )
            if expected_size is not None and expected_size >= 0 and size != expected_size:
                raise _Retryable(f"size {size} bytes, the archive lists {expected_size}")
            declared = [] if headers.get("Content-Encoding") else _header_checksums(headers)
            for algo, digest in ([wanted] if wanted else []) + declared:
                if digests.get(algo) != digest:
                    raise _Retryable(
                        f"{algo} checksum mismatch (got {digests.get(algo)}, expected {digest})"
                    )
            converted = _finish(part, dest) if validate else os.replace(part, dest)
            sha256 = sha256sum(dest) if converted else digests["sha256"]
            return FetchResult(
                path=dest, size=dest.stat().st_size, sha256=sha256, attempts=attempts, url=url
            )
        except _Permanent as exc:
            clean()
            raise AstridDownloadError(
                f"{url}: {exc} (not retried)", url=url, attempts=attempts
            ) from None
        except _Retryable as exc:
            clean()
            reason = str(exc)
            if attempt < retries:
                delay = min(max_backoff_s, backoff_s * 2**attempt)
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    delay = min(max_backoff_s, max(delay, retry_after))
                sleep(delay)
        except BaseException:
            clean()
            raise
    raise AstridDownloadError(
        f"{url}: failed after {attempts} attempt(s): {reason}", url=url, attempts=attempts
    )


# --------------------------------------------------------------------------- #
# file names
# --------------------------------------------------------------------------- #


def safe_name(text: str) -> str:
    """A file-system-safe name: spaces and unusual characters become ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._+\-]+", "_", str(text).strip()).strip("._")
    return cleaned or "unnamed"


def _source_filename(url: str, filename: str | None = None) -> str:
    if filename:
        return Path(str(filename)).name
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    for key in ("uri", "file", "filename"):
        if key in query and query[key]:
            return Path(unquote(query[key][0]).split(":")[-1]).name
    return Path(unquote(parsed.path)).name


def destination_name(
    url: str, filename: str | None = None, *, decompress: bool = False, fallback: str = "image"
) -> str:
    """The name a download gets in the survey layout: ``<stem>.fits`` or ``<stem>.fits.gz``.

    ``.img``/``.fit``/``.fts`` become ``.fits``; a gzipped source keeps
    ``.gz`` unless ``decompress``.

    Parameters
    ----------
    url : str
        Source address; its file name is taken from the ``uri``, ``file`` or
        ``filename`` query parameter when there is one, else from the path.
    filename : str, optional
        Source file name to use instead of the one in ``url``.
    decompress : bool, optional
        Name a gzipped source ``<stem>.fits`` rather than ``<stem>.fits.gz``
        (default False).
    fallback : str, optional
        Stem used when no file name can be found (default ``"image"``).

    Returns
    -------
    str
        The file name (no folder), its stem made safe for a path.
    """
    name = _source_filename(url, filename) or fallback
    gz = name.lower().endswith(".gz")
    stem = name[:-3] if gz else name
    for suffix in (".fits", ".fit", ".fts", ".img"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = safe_name(stem) if stem else safe_name(fallback)
    return f"{stem}.fits.gz" if gz and not decompress else f"{stem}.fits"


# --------------------------------------------------------------------------- #
# downloading pairs into the survey layout
# --------------------------------------------------------------------------- #


def _cell(row, name: str, default=None):
    if name not in row.colnames:
        return default
    value = row[name]
    if value is np.ma.masked:
        return default
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return default
    if isinstance(value, str) and not value:
        return default
    return value


def _file_spec(row, role: str, decompress: bool) -> dict:
    prefix = "ref_" if role == "reference" else "sci_"
    target = str(_cell(row, "target", "target"))
    url = _cell(row, prefix + "url")
    obsid = _cell(row, prefix + "obsid", "")
    filename = _cell(row, prefix + "filename")
    size = _cell(row, prefix + "size")
    spec = {
        "target": target,
        "role": role,
        "obsid": str(obsid),
        "url": url,
        "checksum": _cell(row, prefix + "checksum"),
        "size": int(size) if size is not None and int(size) >= 0 else None,
        "mission": _cell(row, prefix + "mission", _cell(row, "mission")),
        "instrument": _cell(row, prefix + "instrument", _cell(row, "instrument")),
        "filter": _cell(row, "filter"),
        "mjd": _cell(row, prefix + "t_min"),
        "exptime": _cell(row, prefix + "exptime"),
    }
    if url:
        name = destination_name(
            url, filename, decompress=decompress, fallback=f"{role}_{safe_name(obsid)}"
        )
        spec["rel"] = f"{safe_name(target)}/{role}/{name}"
    return spec


def _recorded(manifest: Manifest, rel: str) -> dict | None:
    for entry in manifest.targets.values():
        for record in entry.get("files", []):
            if record["path"] == rel:
                return record
    return None


class _Fetcher:
    """The files :func:`download` has landed so far, and how it fetches the next one."""

    def __init__(
        self,
        out_dir: Path,
        manifest: Manifest,
        options: FetchOptions,
        session,
        sleep,
        raise_on_error: bool,
        progress: Callable[[str, str], None] | None,
    ):
        self.out_dir, self.manifest, self.options = out_dir, manifest, options
        self.session, self.sleep = session, sleep
        self.raise_on_error, self.progress = raise_on_error, progress
        self.report = DownloadReport(out_dir=out_dir)
        self.landed: dict[str, bool] = {}

    def note(self, event: str, rel: str) -> None:
        if self.progress is not None:
            self.progress(event, rel)

    def _done(self, rel: str, event: str) -> bool:
        self.landed[rel] = True
        (self.report.skipped if event == "skipped" else self.report.downloaded).append(rel)
        self.note(event, rel)
        return True

    def ensure(self, spec: dict) -> bool:
        """Whether the file of ``spec`` is in place: already recorded, adopted, or fetched now."""
        report, manifest, landed = self.report, self.manifest, self.landed
        rel = spec.get("rel")
        if rel is None:
            key = f"no-url:{spec['target']}/{spec['role']}/{spec['obsid']}"
            if key not in landed:
                report.failed.append({**_failure(spec), "reason": "no download URL"})
                landed[key] = False
            return False
        if rel in landed:
            return landed[rel]
        dest = self.out_dir / rel
        record = _recorded(manifest, rel)
        if record is not None and manifest.has_file(rel):
            return self._done(rel, "skipped")
        if record is None and dest.exists():
            # renamed into place by an interrupted run before the manifest was saved
            try:
                validate_fits(dest)
                adopted = _matches_checksum(dest, spec.get("checksum"))
            except AstridInputError:
                adopted = False
            if adopted:
                _record(manifest, spec, dest)
                manifest.save()
                return self._done(rel, "skipped")
        try:
            # the archive's listed size is not enforced: MAST's product sizes are not always
            # the bytes served; Content-Length, checksums and the FITS check catch damage
            result = fetch_file(
                spec["url"],
                dest,
                checksum=spec.get("checksum"),
                options=self.options,
                session=self.session,
                sleep=self.sleep,
            )
        except AstridDownloadError as exc:
            report.attempts += exc.attempts
            report.failed.append({**_failure(spec), "reason": str(exc)})
            landed[rel] = False
            self.note("failed", rel)
            if self.raise_on_error:
                manifest.save()
                raise
            return False
        report.attempts += result.attempts
        _record(manifest, spec, dest)
        manifest.save()
        return self._done(rel, "downloaded")


def download(
    pairs: Table,
    out_dir: str | os.PathLike,
    *,
    targets: Table | None = None,
    decompress: bool = False,
    options: FetchOptions | None = None,
    session=None,
    sleep: Callable[[float], None] = time.sleep,
    source: str = "archive",
    raise_on_error: bool = False,
    progress: Callable[[str, str], None] | None = None,
) -> DownloadReport:
    """Download the files of reference/science pairs into the survey layout, resumably.

    Parameters
    ----------
    pairs : astropy.table.Table
        Pairs from :func:`find_pairs` (or :meth:`Archive.pairs`), with at
        least ``target``, ``ref_url`` and ``sci_url``; ``ref_/sci_`` columns
        ``obsid``, ``filename``, ``size``, ``checksum``, ``mission``,
        ``instrument``, ``t_min``, ``exptime`` are used when present.
    out_dir : path-like
        Survey folder: files go to ``<out_dir>/<target>/{reference,science}/``
        and the record to ``<out_dir>/manifest.json`` (the layout
        ``astrid.simulate.survey`` writes).
    targets : astropy.table.Table, optional
        Catalogue rows (``name``, ``ra``, ``dec``, ``discovery``, ``type``,
        ``host``) whose details are written into the manifest's targets.
    decompress : bool, optional
        Store gzipped sources decompressed as ``.fits`` (default: keep ``.fits.gz``).
    options : FetchOptions, optional
        Retries, back-off, timeout and size cap, passed to :func:`fetch_file`
        (``options.max_bytes`` caps each file; default ``FetchOptions()``).
    session : requests.Session, optional
        HTTP session, passed to :func:`fetch_file` (one is made by default).
    sleep : callable, optional
        Function used to wait between attempts, passed to :func:`fetch_file`.
    source : str, optional
        Manifest ``source`` for a new manifest (``"mast"``, ``"local"``).
    raise_on_error : bool, optional
        Raise the first :class:`AstridDownloadError` instead of recording it
        in :attr:`DownloadReport.failed` and going on.
    progress : callable, optional
        Called as ``progress(event, rel_path)`` with event ``"downloaded"``,
        ``"skipped"`` or ``"failed"``.

    Returns
    -------
    DownloadReport
        The files downloaded, skipped and failed in this run, the pairs
        recorded and the attempts made.

    Notes
    -----
    A rerun after an interruption fetches nothing twice: a file that the
    manifest lists with the same size and SHA-256 is skipped, and a file that
    landed (renamed into place) but was not yet recorded is validated and
    adopted. A pair is recorded only when both of its files are present.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for col in ("target", "ref_url", "sci_url"):
        if col not in pairs.colnames:
            raise AstridInputError(f"pairs table has no {col!r} column (columns: {pairs.colnames})")
    manifest = Manifest(out_dir, source=source)
    fetcher = _Fetcher(
        out_dir,
        manifest,
        FetchOptions() if options is None else options,
        _session(session),
        sleep,
        raise_on_error,
        progress,
    )
    report = fetcher.report
    catalog = {}
    if targets is not None and len(targets):
        catalog = {str(r["name"]): r for r in targets}

    for row in pairs:
        target = str(row["target"])
        info = _target_info(catalog.get(target), row)
        manifest.target(safe_name(target), **info)
        ref = _file_spec(row, "reference", decompress)
        sci = _file_spec(row, "science", decompress)
        ok_ref = fetcher.ensure(ref)
        ok_sci = fetcher.ensure(sci)
        if ok_ref and ok_sci:
            manifest.add_pair(
                safe_name(target),
                ref["rel"],
                sci["rel"],
                mission=_cell(row, "mission"),
                instrument=_cell(row, "instrument"),
                filter=_cell(row, "filter"),
                ref_days_before=_round(_cell(row, "ref_days_before")),
                sci_days_after=_round(_cell(row, "sci_days_after")),
            )
            manifest.save()
            report.pairs += 1
    manifest.save()
    return report


def _matches_checksum(path: Path, checksum: str | None) -> bool:
    """Whether a file found on disk may be the archive's file with this checksum.

    The checksum is of the body as served. A ``.gz`` file is stored as served
    and must match; a file stored decompressed cannot be compared, and counts
    as matching (it validated as FITS). True when no checksum is known.
    """
    wanted = _parse_checksum(checksum)
    if wanted is None or not path.name.endswith(".gz"):
        return True
    algo, digest = wanted
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest() == digest


def _round(value):
    return None if value is None else round(float(value), 3)


def _failure(spec: dict) -> dict:
    return {k: spec.get(k) for k in ("target", "role", "obsid", "url")}


def _record(manifest: Manifest, spec: dict, dest: Path) -> None:
    manifest.add_file(
        safe_name(spec["target"]),
        dest,
        spec["role"],
        mission=spec.get("mission"),
        instrument=spec.get("instrument"),
        filter=spec.get("filter"),
        mjd=spec.get("mjd"),
        exptime=spec.get("exptime"),
        obsid=spec.get("obsid") or None,
        url=spec.get("url"),
    )


def _target_info(cat_row, pair_row) -> dict:
    info: dict[str, Any] = {"object": str(pair_row["target"])}
    if cat_row is not None:
        info["ra"] = float(cat_row["ra"])
        info["dec"] = float(cat_row["dec"])
        disc = cat_row["discovery"]
        if not getattr(disc, "masked", False) or not np.all(disc.mask):
            info["discovery"] = str(disc.iso)[:10]
        for key in ("type", "host"):
            if key in cat_row.colnames and str(cat_row[key]):
                info[key] = str(cat_row[key])
    mjd = _cell(pair_row, "discovery_mjd")
    if mjd is not None:
        info["discovery_mjd"] = float(mjd)
    return info


# --------------------------------------------------------------------------- #
# query checkpoint
# --------------------------------------------------------------------------- #

CHECKPOINT_SCHEMA = "astrid-acquire-checkpoint/1"


class QueryCheckpoint:
    """Which targets were queried, with their observations, in an append-only JSON-lines file.

    Each finished query appends one line ``{"target", "key", "time",
    "observations": [...]}`` and flushes it to disk, so an interrupted run
    loses at most the query in flight, and a rerun asks the archive only for
    targets not yet in the file. ``key`` identifies the query parameters;
    lines with another key (the run configuration changed) are ignored.

    Parameters
    ----------
    path : path-like
        The checkpoint file (created on first write).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._entries: dict[tuple[str, str], list[dict]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash while it was written: that query is redone
                if record.get("schema") == CHECKPOINT_SCHEMA or "target" not in record:
                    continue
                self._entries[(record["target"], record.get("key", ""))] = record.get(
                    "observations", []
                )

    def __contains__(self, item: tuple[str, str]) -> bool:
        return tuple(item) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def targets(self, key: str) -> set[str]:
        """Targets already queried with parameters ``key``."""
        return {t for (t, k) in self._entries if k == key}

    def get(self, target: str, key: str) -> Table | None:
        """The observations recorded for ``target`` (None when not queried)."""
        rows = self._entries.get((target, key))
        if rows is None:
            return None
        return _table_from_rows(rows)

    def put(self, target: str, key: str, observations: Table) -> None:
        """Record the observations of ``target`` (appended and flushed at once)."""
        rows = [
            {name: json_safe(row[name]) for name in observations.colnames} for row in observations
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        torn = False
        if not new:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"  # a crash mid-line: start a fresh line
        with open(self.path, "a", encoding="utf-8") as fh:
            if new:
                fh.write(json.dumps({"schema": CHECKPOINT_SCHEMA}) + "\n")
            elif torn:
                fh.write("\n")
            record = {
                "target": target,
                "key": key,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "observations": rows,
            }
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._entries[(target, key)] = rows


def _table_from_rows(rows: list[dict]) -> Table:
    """A table from JSON rows: numeric columns as float (NaN for null), the rest as str."""
    table = Table()
    if not rows:
        return table
    names = list(dict.fromkeys(name for row in rows for name in row))
    for name in names:
        values = [row.get(name) for row in rows]
        numeric = all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
        )
        if numeric and any(v is not None for v in values):
            if all(isinstance(v, int) for v in values):
                table[name] = np.array(values, dtype=np.int64)
            else:
                table[name] = np.array([np.nan if v is None else float(v) for v in values])
        else:
            table[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return table


def chunks(items: list, size: int) -> Iterable[list]:
    """Consecutive slices of ``items`` of at most ``size``."""
    if size < 1:
        raise AstridInputError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
