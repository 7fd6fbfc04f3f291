"""Per-pair outputs, their ``done.json`` marker, and the shared triplet store's bookkeeping.

A pair's folder ``<out_dir>/<target>/<pair>/`` holds::

    difference.fits    the DifferenceResult (multi-extension FITS)
    candidates.ecsv    the candidate table (detect + labels + pair)
    triplets.zarr/     the pair's 63x63 triplets (absent when no candidates)
    scores.ecsv        with a model: each candidate's score and the model's identity
    done.json          written last: what was made, with sizes and SHA-256

Each file is written atomically (temporary file + rename) and the marker
last, so a folder with a valid marker is complete. A rerun trusts a pair only
when its marker exists, parses, was made with the same options and every
output still has its recorded size (and, by default, checksum): a truncated
or edited file makes the pair run again.

The shared Zarr store records which pairs it holds twice: a ``pair``
coordinate on every candidate (written with the rows, so it is always right)
and the root attribute :data:`STORE_PAIRS_ATTR` (a quick index, also
listing pairs without candidates). The attribute is rewritten after each
append; :func:`store_pairs` takes the union of both, so a crash between an
append and the attribute update never leads to the pair being appended twice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import AstridFileError, AstridInputError
from ..io import atomic_write

__all__ = [
    "MARKER_NAME",
    "MARKER_SCHEMA",
    "DIFFERENCE_NAME",
    "CANDIDATES_NAME",
    "TRIPLETS_NAME",
    "SCORES_NAME",
    "STORE_PAIRS_ATTR",
    "STORE_OPTIONS_ATTR",
    "verify_pair_outputs",
    "store_pairs",
]

MARKER_NAME = "done.json"
MARKER_SCHEMA = "astrid-batch-pair/1"
DIFFERENCE_NAME = "difference.fits"
CANDIDATES_NAME = "candidates.ecsv"
TRIPLETS_NAME = "triplets.zarr"
SCORES_NAME = "scores.ecsv"
#: Root attribute of the shared store: sorted names of the pairs committed to it.
STORE_PAIRS_ATTR = "astrid_batch_pairs"
#: Root attribute of the shared store: fingerprint of the options its pairs were made with.
STORE_OPTIONS_ATTR = "astrid_batch_options"
_CHUNK = 1 << 20


def _hash_file(path: Path, digest) -> int:
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
            size += len(block)
    return size


def output_digest(path: Path, checksum: bool = True) -> dict:
    """Size (bytes) and SHA-256 of a file, or of a folder's files (a Zarr store).

    A folder's checksum covers each file's relative path and content, in
    sorted order, so a missing, extra, renamed or changed chunk changes it.
    """
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        size = n_files = 0
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = file.relative_to(path).as_posix()
            n_files += 1
            if checksum:
                digest.update(rel.encode() + b"\0")
                size += _hash_file(file, digest)
            else:
                size += file.stat().st_size
        out = {"size": size, "n_files": n_files}
    else:
        if checksum:
            digest = hashlib.sha256()
            size = _hash_file(path, digest)
        else:
            size = path.stat().st_size
        out = {"size": size}
    if checksum:
        out["sha256"] = digest.hexdigest()
    return out


def input_identity(pair) -> dict:
    """What a pair's outputs were made from: each input file's path, size and modification time.

    A rerun compares it with the files as they are now (:func:`changed_inputs`),
    the way ``make`` does: a replaced or edited input makes the pair's old
    outputs stale. Missing files are recorded as such.
    """
    out = {}
    for role in ("reference", "science", "truth"):
        path = getattr(pair, role, None)
        if path is None:
            continue
        path = Path(path)
        try:
            stat = path.stat()
        except OSError:
            out[role] = {"path": str(path), "missing": True}
            continue
        out[role] = {
            "path": str(path),
            "size": int(stat.st_size),
            "mtime_ns": int(stat.st_mtime_ns),
        }
    return out


def changed_inputs(marker: dict, pair) -> list[str]:
    """The inputs of ``pair`` that differ from those its ``done.json`` recorded (empty: unchanged).

    Markers written before inputs were recorded have nothing to compare and
    count as unchanged.
    """
    recorded = marker.get("inputs")
    if not isinstance(recorded, dict):
        return []
    now = input_identity(pair)
    return sorted(role for role in set(recorded) | set(now) if recorded.get(role) != now.get(role))


def write_marker(pair_dir: Path, record: dict) -> Path:
    """Write ``done.json`` atomically: the outputs' digests plus ``record``."""
    outputs = {}
    for name in record.get("outputs", []):
        outputs[name] = output_digest(pair_dir / name)
    marker = {"schema": MARKER_SCHEMA, **record, "outputs": outputs}
    text = json.dumps(marker, indent=1, default=str).encode()
    return atomic_write(pair_dir / MARKER_NAME, lambda fh: fh.write(text))


def read_marker(pair_dir: Path) -> dict | None:
    """The pair's marker, or None when absent or unreadable."""
    path = Path(pair_dir) / MARKER_NAME
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("schema") != MARKER_SCHEMA:
        return None
    return marker


def verify_pair_outputs(
    pair_dir, pair_name: str | None = None, *, checksum: bool = True
) -> tuple[bool, str, dict | None]:
    """Whether a pair's folder holds complete outputs, as vouched for by its ``done.json``.

    Parameters
    ----------
    pair_dir : path-like
        The pair's output folder.
    pair_name : str, optional
        The pair the marker must name.
    checksum : bool, optional
        Compare SHA-256 checksums (default); False compares sizes only
        (faster on slow file systems, still catches truncated files).

    Returns
    -------
    ok : bool
        Whether the outputs are complete.
    reason : str
        Why not (``"no done.json"``, ``"difference.fits: size 2880 != 1463040 recorded"``, ...),
        or ``"complete"``.
    marker : dict or None
        The parsed marker, when there is one.
    """
    pair_dir = Path(pair_dir)
    if not (pair_dir / MARKER_NAME).exists():
        return False, f"no {MARKER_NAME}", None
    marker = read_marker(pair_dir)
    if marker is None:
        return False, f"{MARKER_NAME} is unreadable or not a {MARKER_SCHEMA} marker", None
    if pair_name is not None and marker.get("pair") != pair_name:
        return False, f"{MARKER_NAME} names pair {marker.get('pair')!r}, not {pair_name!r}", marker
    outputs = marker.get("outputs")
    if not isinstance(outputs, dict) or DIFFERENCE_NAME not in outputs:
        return False, f"{MARKER_NAME} lists no outputs", marker
    for name, recorded in outputs.items():
        path = pair_dir / name
        if not path.exists():
            return False, f"{name}: missing", marker
        found = output_digest(path, checksum=checksum)
        if found["size"] != recorded.get("size"):
            return False, f"{name}: size {found['size']} != {recorded.get('size')} recorded", marker
        if checksum and found.get("sha256") != recorded.get("sha256"):
            return False, f"{name}: checksum differs from the one recorded", marker
    return True, "complete", marker


def store_pairs(store: Path) -> set[str]:
    """Names of the pairs a shared triplet store already holds.

    The union of the store's :data:`STORE_PAIRS_ATTR` attribute and the
    ``pair`` coordinate of its committed candidates (rows of an interrupted
    append, beyond ``n_committed``, do not count). An absent store holds none.

    Parameters
    ----------
    store : pathlib.Path
        The Zarr triplet store.

    Returns
    -------
    set of str
        The pair names.

    Raises
    ------
    AstridFileError
        ``store`` exists but is not an AstrID triplet store.
    """
    store = Path(store)
    if not store.exists():
        return set()
    from .._optional import require
    from ..triplets import COMMIT_ATTR

    zarr = require("zarr", "The shared triplet store of astrid.batch")

    try:
        group = zarr.open_group(store, mode="r")
    except (OSError, ValueError, KeyError) as exc:
        raise AstridFileError(f"{store}: not a readable Zarr store ({exc})") from exc
    committed = group.attrs.get(COMMIT_ATTR)
    if committed is None:
        raise AstridFileError(
            f"{store}: not an AstrID triplet store (no {COMMIT_ATTR!r} attribute)"
        )
    names = {str(name) for name in group.attrs.get(STORE_PAIRS_ATTR, [])}
    if int(committed) > 0:
        if "pair" not in group:
            raise AstridFileError(
                f"{store}: holds triplets without a 'pair' coordinate (not written by astrid.batch); "
                "use another triplet_store"
            )
        names.update(str(name) for name in set(group["pair"][: int(committed)].tolist()))
    return names


def store_options(store: Path) -> str | None:
    """The options fingerprint recorded in a shared store, or None."""
    store = Path(store)
    if not store.exists():
        return None
    import zarr

    return zarr.open_group(store, mode="r").attrs.get(STORE_OPTIONS_ATTR)


def commit_pairs(
    store: Path, items: list[tuple[str, Path, int]], committed: set[str], fingerprint: str
) -> None:
    """Append the triplets of finished pairs to the shared store in one append, then list them.

    Runs on the client, the store's only writer. One append for several
    pairs (those that finished while the previous append ran) keeps the
    client from becoming the bottleneck of a large cluster; it is as safe as
    one pair at a time, because ``n_committed`` moves once, after every row
    is written. Pairs already in ``committed`` are left out (never appended
    twice); ``committed`` is updated in place.

    Parameters
    ----------
    store : pathlib.Path
        The shared Zarr store (created by the first append).
    items : list of (pair name, pair folder, number of candidates)
        Pairs whose outputs are complete (valid ``done.json``).
    committed : set of str
        Pairs the store holds.
    fingerprint : str
        Options fingerprint recorded in the store.

    Raises
    ------
    AstridInputError
        A pair's triplets do not hold the number of candidates its marker
        records, or cannot be appended (nothing is committed then).
    """
    import dask
    import xarray as xr

    from ..triplets import load_triplets, write_triplets

    new = []
    for name, pair_dir, n_candidates in items:
        if name not in committed and name not in {n for n, _, _ in new}:
            new.append((name, Path(pair_dir), int(n_candidates)))
    if not new:
        return
    parts = []
    # A default distributed client must not receive these small reads.
    with dask.config.set(scheduler="synchronous"):
        for name, pair_dir, n_candidates in new:
            if n_candidates == 0:
                continue
            ds = load_triplets(pair_dir / TRIPLETS_NAME)
            try:
                if ds.sizes["candidate"] != n_candidates:
                    raise AstridInputError(
                        f"{pair_dir / TRIPLETS_NAME}: holds {ds.sizes['candidate']} candidates, "
                        f"{MARKER_NAME} records {n_candidates}"
                    )
                parts.append(ds.load().drop_indexes("candidate_id"))
            finally:
                ds.close()
        if parts:
            combined = (
                parts[0]
                if len(parts) == 1
                else xr.concat(
                    parts,
                    dim="candidate",
                    data_vars="all",
                    coords="different",
                    compat="equals",
                    join="exact",
                    combine_attrs="drop_conflicts",
                )
            )
            write_triplets(combined, store, mode="a")
    committed.update(name for name, _, _ in new)
    if Path(store).exists():
        _write_store_attrs(Path(store), committed, fingerprint)


def _write_store_attrs(store: Path, committed: set[str], fingerprint: str) -> None:
    import zarr

    group = zarr.open_group(store, mode="r+")
    group.attrs.update({STORE_PAIRS_ATTR: sorted(committed), STORE_OPTIONS_ATTR: fingerprint})


def repair_store_attrs(store: Path, committed: set[str], fingerprint: str) -> bool:
    """Rewrite the store's pair list when it lags its rows (a crash after an append); True if rewritten."""
    import zarr

    store = Path(store)
    if not store.exists():
        return False
    attrs = zarr.open_group(store, mode="r").attrs
    if (
        set(attrs.get(STORE_PAIRS_ATTR, [])) == committed
        and attrs.get(STORE_OPTIONS_ATTR) == fingerprint
    ):
        return False
    _write_store_attrs(store, committed, fingerprint)
    return True
