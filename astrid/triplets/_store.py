"""Triplet storage: Zarr (default, appendable) and netCDF/HDF5, opened lazily.

Crash safety
------------
A reader must never see half a candidate, even if a writer dies mid-way.

* Writing a new store (``mode="w"``), Zarr or netCDF, goes to a temporary
  path beside the target that is renamed into place only when complete.
* Appending to Zarr (``mode="a"``) grows the arrays in place, but the root
  attribute ``n_committed`` - the number of complete candidates - is written
  only after every array holds the new rows. :func:`load_triplets` reads the
  first ``n_committed`` candidates, so rows of an interrupted append are
  invisible; the next append first truncates them. Zarr writes each chunk
  and metadata file through a temporary file and a rename, so a chunk is
  either old or new, never torn.
* Appending to netCDF rewrites the file: old and new rows go to a temporary
  file that replaces the old one (safe, but O(size) per append: prefer Zarr
  for sets built incrementally).

No pickles are written: strings are stored as UTF-8 strings, booleans as
booleans (netCDF: int8 flagged as bool by xarray).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import xarray as xr

from .._locks import store_lock
from .._optional import require
from ..errors import AstridError, AstridFileError, AstridInputError
from ..schema import validate_triplets
from ._stamps import clean_attrs

__all__ = ["write_triplets", "load_triplets", "COMMIT_ATTR"]

#: Root attribute of a Zarr triplet store: the number of complete candidates.
COMMIT_ATTR = "n_committed"
#: Root attribute of Zarr stores that write every chunk, even one holding only
#: fill values, so that a missing chunk file always means lost data.
CHUNKS_ATTR = "all_chunks_written"
#: Candidates per chunk along ``candidate`` (256 x 63 x 63 x 3 float32 = 12 MB).
DEFAULT_CHUNK = 256
_NETCDF_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5", ".he5", ".cdf")


def _string_objects(values) -> np.ndarray:
    """Any string array (fixed-width, numpy StringDType, bytes, object) as an object array of str."""
    values = np.asarray(values)
    flat = [v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel().tolist()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(values.shape)


def _is_netcdf(path: Path, format: str | None) -> bool:
    if format is not None:
        if format not in ("zarr", "netcdf"):
            raise AstridInputError(f"format: expected 'zarr' or 'netcdf', got {format!r}")
        return format == "netcdf"
    return path.suffix.lower() in _NETCDF_SUFFIXES


def _prepare(ds: xr.Dataset) -> xr.Dataset:
    """A copy ready to store: no custom index, storable attributes, string dtypes."""
    ds = ds.copy()
    if "candidate_id" in ds.xindexes:
        ds = ds.drop_indexes("candidate_id")
    ds.attrs = clean_attrs(
        {k: v for k, v in ds.attrs.items() if k not in (COMMIT_ATTR, CHUNKS_ATTR)}
    )
    fixed_width = {
        name: (var.dims, _string_objects(var.values), var.attrs)
        for name, var in ds.variables.items()
        if var.dtype.kind in "UST"
    }
    # Fixed-width strings have no stable Zarr v3 encoding; store variable-length ones.
    if fixed_width:
        ds = ds.assign_coords({k: v for k, v in fixed_width.items() if k in ds.coords})
        ds = ds.assign({k: v for k, v in fixed_width.items() if k in ds.data_vars})
    for name, var in ds.variables.items():
        var.attrs = clean_attrs(var.attrs)
        # Object arrays of str are stored as variable-length UTF-8 strings;
        # a None or number among them would need a pickle, so refuse it.
        if var.dtype == object:
            values = np.asarray(var.values)
            if not all(isinstance(v, str) for v in values.ravel()):
                raise AstridInputError(
                    f"variable {name!r}: object array with non-string values cannot be stored"
                )
    return ds


def _encoding(ds: xr.Dataset, chunk: int) -> dict:
    encoding = {}
    for name, var in ds.variables.items():
        if "candidate" in var.dims and var.dims[0] == "candidate":
            chunks = tuple(
                min(chunk, max(ds.sizes["candidate"], 1)) if d == "candidate" else ds.sizes[d]
                for d in var.dims
            )
            encoding[name] = {"chunks": chunks}
    return encoding


def _rechunk_data(ds: xr.Dataset, chunks) -> xr.Dataset:
    """Rechunk the Dask-backed data variables along ``candidate``; coordinates stay in memory."""
    for name in list(ds.data_vars):
        variable = ds[name].variable
        if variable.chunks:
            ds[name] = variable.chunk({"candidate": chunks})
    return ds


def _temporary_sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


def _replace_directory(tmp: Path, path: Path) -> None:
    """Move the finished store ``tmp`` to ``path``, replacing what was there."""
    old = None
    if path.exists():
        old = _temporary_sibling(path, "old")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _write_zarr_new(ds: xr.Dataset, path: Path, chunk: int) -> None:
    tmp = _temporary_sibling(path, "tmp")
    try:
        ds = ds.copy()
        ds.attrs[COMMIT_ATTR] = int(ds.sizes["candidate"])
        ds.attrs[CHUNKS_ATTR] = True
        # Lazy input (e.g. a balanced selection of a store): Dask chunks must match the store's.
        ds = _rechunk_data(ds, chunk)
        ds.to_zarr(
            tmp,
            mode="w",
            consolidated=False,
            encoding=_encoding(ds, chunk),
            zarr_format=3,
            write_empty_chunks=True,
        )
        _replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_appendable(existing: xr.Dataset, ds: xr.Dataset, path: Path, committed: int) -> None:
    """Same variables and coordinates, and no candidate_id already stored."""
    names_old = set(map(str, existing.variables)) - {"channel"}
    names_new = set(map(str, ds.variables)) - {"channel"}
    if names_old != names_new:
        raise AstridInputError(
            f"{path}: cannot append triplets with different variables/coordinates: "
            f"missing {sorted(names_old - names_new)}, extra {sorted(names_new - names_old)}"
        )
    old_ids = set(_string_objects(existing["candidate_id"].values[:committed]))
    clash = [i for i in _string_objects(ds["candidate_id"].values) if i in old_ids]
    if clash:
        raise AstridInputError(
            f"{path}: candidate_id already stored, e.g. {clash[:3]}; ids must be unique"
        )


def _committed_length(group, path: Path) -> int:
    value = group.attrs.get(COMMIT_ATTR)
    if value is None:
        raise AstridFileError(f"{path}: not an AstrID triplet store (no {COMMIT_ATTR!r} attribute)")
    return int(value)


def _merged_attrs(old: dict, new: dict) -> dict:
    """Attributes that old and new rows share; differing ones (e.g. field) are dropped."""
    merged = {}
    for key, value in old.items():
        if key in new:
            same = value == new[key] or (
                isinstance(value, float)
                and isinstance(new[key], float)
                and np.isnan(value)
                and np.isnan(new[key])
            )
            if same:
                merged[key] = value
    return merged


def _append_zarr(ds: xr.Dataset, path: Path, chunk: int) -> None:
    zarr = require("zarr", "Appending triplets to a Zarr store")
    group = zarr.open_group(path, mode="r+")
    committed = _committed_length(group, path)
    # Drop rows of an interrupted append (never visible to readers) first.
    for _, array in group.arrays():
        dims = array.metadata.dimension_names or ()
        if dims and dims[0] == "candidate" and array.shape[0] != committed:
            array.resize((committed,) + tuple(array.shape[1:]))
    existing = xr.open_zarr(path, consolidated=False)
    try:
        _check_appendable(existing, ds, path, committed)
    finally:
        existing.close()

    ds = ds.copy()
    attrs = _merged_attrs(
        {k: v for k, v in group.attrs.items() if k not in (COMMIT_ATTR, CHUNKS_ATTR)}, ds.attrs
    )
    attrs[COMMIT_ATTR] = committed  # unchanged until every row is written
    if group.attrs.get(CHUNKS_ATTR):
        attrs[CHUNKS_ATTR] = True
    ds.attrs = attrs
    if any(var.chunks for var in ds.variables.values()):
        # Dask chunks must start on the store's chunk boundaries.
        store_chunk = group["triplets"].chunks[0]
        first = store_chunk - committed % store_chunk
        n = ds.sizes["candidate"]
        sizes = [min(first, n)] + [store_chunk] * (
            (max(n - first, 0) + store_chunk - 1) // store_chunk
        )
        if sum(sizes) > n:
            sizes[-1] -= sum(sizes) - n
        ds = _rechunk_data(ds, tuple(s for s in sizes if s > 0))
    ds.to_zarr(path, mode="a", append_dim="candidate", consolidated=False, write_empty_chunks=True)
    group = zarr.open_group(path, mode="r+")
    group.attrs[COMMIT_ATTR] = committed + int(ds.sizes["candidate"])


def _write_netcdf(ds: xr.Dataset, path: Path, mode: str) -> None:
    require("h5netcdf", "Writing triplets to netCDF/HDF5")
    if mode == "a" and path.exists():
        old = load_triplets(path)
        try:
            _check_appendable(old, ds, path, old.sizes["candidate"])
        except AstridInputError:
            old.close()
            raise
        attrs = _merged_attrs(old.attrs, ds.attrs)
        combined = xr.concat(
            [_prepare(old), ds],
            dim="candidate",
            data_vars="all",
            coords="different",
            compat="equals",
            join="exact",
            combine_attrs="drop",
        )
        combined.attrs = attrs
        ds = combined
    else:
        old = None
    ds.attrs[COMMIT_ATTR] = int(ds.sizes["candidate"])
    n = max(int(ds.sizes["candidate"]), 1)
    encoding = {
        name: {
            "zlib": True,
            "complevel": 1,
            "chunksizes": (min(DEFAULT_CHUNK, n),) + ds[name].shape[1:],
        }
        for name in ("triplets", "valid")
    }
    try:
        # HDF5 is given memory, never the disk: when a disk fills up under
        # HDF5, its file object fails to close and the interpreter later dies
        # in its destructor (a killed notebook kernel). A full disk is then a
        # plain OSError of the Python write below.
        image = ds.to_netcdf(engine="h5netcdf", encoding=encoding)
    finally:
        if old is not None:
            old.close()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(image)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise AstridFileError(
            f"{path}: the triplet store could not be written ({exc.strerror or exc}; {len(image) / 1e6:.1f} MB "
            "needed); the store is as it was before this write"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_triplets(
    ds: xr.Dataset,
    path: str | os.PathLike,
    mode: str = "w",
    *,
    format: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Path:
    """Store a triplet dataset in Zarr (default) or netCDF/HDF5.

    Parameters
    ----------
    ds : xarray.Dataset
        Triplets in the AstrID schema (see :func:`make_triplets`).
    path : str or path-like
        Target. ``.nc``, ``.nc4``, ``.h5``, ``.hdf5`` write netCDF-4 through
        h5netcdf; anything else (e.g. ``.zarr``) a Zarr v3 store.
    mode : {"w", "a"}, optional
        ``"w"`` replaces ``path``; ``"a"`` appends along ``candidate``
        (creating the store if absent). Appended triplets must have the same
        variables and coordinates and new ``candidate_id`` values.
    format : {"zarr", "netcdf"}, optional
        Override the choice made from the suffix.
    chunk_size : int, optional
        Candidates per Zarr chunk (default 256, about 12 MB of stamps).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    AstridInputError
        ``ds`` not in the schema, incompatible or duplicate rows on append,
        bad ``mode`` or ``format``.
    AstridFileError
        Appending to something that is not an AstrID triplet store.

    Notes
    -----
    See the module docstring (:mod:`astrid.triplets._store`) for how an
    interrupted write is kept invisible to readers.
    """
    if mode not in ("w", "a"):
        raise AstridInputError(f"mode: expected 'w' or 'a', got {mode!r}")
    validate_triplets(ds)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AstridFileError(
            f"{path}: cannot create the folder {path.parent} ({exc.strerror or exc})"
        ) from None
    netcdf = _is_netcdf(path, format)
    if netcdf:
        if path.is_dir():
            raise AstridFileError(f"{path}: is a folder; a netCDF triplet store is a file")
    elif path.exists() and not path.is_dir():
        raise AstridFileError(
            f"{path}: is a file; a Zarr triplet store is a folder (give a .nc path for netCDF)"
        )
    ds = _prepare(ds)
    require("h5netcdf" if netcdf else "zarr", "Writing triplets")
    # One writer at a time: an append reads the committed length, writes rows
    # and commits them; two writers interleaving would overwrite each other.
    with store_lock(path):
        try:
            if netcdf:
                _write_netcdf(ds, path, mode)
            elif mode == "a" and path.exists():
                _append_zarr(ds, path, int(chunk_size))
            else:
                _write_zarr_new(ds, path, int(chunk_size))
        except AstridError:
            raise
        except OSError as exc:  # full disk, read-only folder, a file where a folder should be
            raise AstridFileError(
                f"{path}: the triplet store could not be written ({exc.strerror or exc}); "
                "rows of an unfinished write are not committed, the store reads as before"
            ) from None
    return path


def _coords_in_memory(ds: xr.Dataset) -> xr.Dataset:
    """Coordinates loaded (they are small), strings held as Python ``str`` objects as written."""
    updates = {}
    for name, var in ds.coords.items():
        values = np.asarray(var.values)
        if values.dtype.kind in "UST" or values.dtype == object:
            values = _string_objects(values)
            if name in ds.dims:
                values = values.astype(str)  # an index such as channel: plain numpy str, as built
        updates[name] = (var.dims, values, var.attrs)
    ds = ds.assign_coords(updates) if updates else ds
    ds.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in ds.attrs.items()}
    return ds


def _committed_view(path: Path, committed: int):
    """A read-only view of a Zarr store whose candidate arrays end at ``committed``.

    Rows of an append in progress (or interrupted) lie beyond it; arrays may
    even differ in length then, which xarray could not open. The view edits
    each array's metadata on the fly, so readers see only complete rows.
    """
    from zarr.storage import LocalStore, WrapperStore

    class CommittedView(WrapperStore):
        def __init__(self, store, n_committed: int):
            super().__init__(store)
            self._n_committed = n_committed

        def _with_store(self, store):
            return type(self)(store, self._n_committed)

        async def get(self, key, prototype, byte_range=None):
            buffer = await self._store.get(key, prototype, byte_range)
            if buffer is None or byte_range is not None or not key.endswith("/zarr.json"):
                return buffer
            meta = json.loads(buffer.to_bytes())
            names = meta.get("dimension_names") or []
            if (
                meta.get("node_type") == "array"
                and names
                and names[0] == "candidate"
                and meta["shape"][0] > self._n_committed
            ):
                meta["shape"][0] = self._n_committed
                buffer = prototype.buffer.from_bytes(json.dumps(meta).encode())
            return buffer

    return CommittedView(LocalStore(path, read_only=True), committed)


def _missing_chunks(path: Path, committed: int) -> list[str]:
    """Chunk files of the committed rows that are not on disk (lost data).

    Stores written with every chunk (:data:`CHUNKS_ATTR`) are checked in all
    their candidate arrays; older stores only in ``triplets``, the one array
    where a chunk of fill values alone (all-NaN stamps) cannot be real data.
    """
    zarr = require("zarr", "Reading triplets from Zarr")
    group = zarr.open_group(path, mode="r")
    every = bool(group.attrs.get(CHUNKS_ATTR))
    missing = []
    for name, array in group.arrays():
        dims = array.metadata.dimension_names or ()
        if (
            not dims
            or dims[0] != "candidate"
            or (not every and name != "triplets")
            or committed == 0
        ):
            continue
        shape = (committed,) + tuple(array.shape[1:])
        grid = [-(-n // c) for n, c in zip(shape, array.chunks)]
        separator = getattr(array.metadata.chunk_key_encoding, "separator", "/")
        for index in np.ndindex(*grid):
            key = "c" + separator + separator.join(map(str, index))
            if not (path / name / key.replace("/", os.sep)).exists():
                missing.append(f"{name}/{key}")
    return missing


class _CheckedChunks:
    """A lazily read store array whose read errors name the store and the array.

    A damaged chunk (bad compression, truncated file) would otherwise reach
    the user as a raw codec error from deep inside a Dask computation.
    """

    def __init__(self, variable: xr.Variable, path: Path, name: str):
        self._variable = variable
        self._path = path
        self._name = name
        self.shape = variable.shape
        self.dtype = variable.dtype
        self.ndim = variable.ndim

    def __getitem__(self, key):
        try:
            return np.asarray(self._variable[key].values)
        except Exception as exc:
            raise AstridFileError(
                f"{self._path}: the stored {self._name!r} rows {key[0] if isinstance(key, tuple) else key} cannot be "
                f"read ({type(exc).__name__}: {exc}); the store is damaged - rebuild it or restore it from a copy"
            ) from exc


def _checked_dask(ds: xr.Dataset, path: Path) -> xr.Dataset:
    import dask.array as da

    for name in list(ds.data_vars):
        variable = ds[name].variable
        chunks = variable.encoding.get("chunks") or variable.shape
        data = da.from_array(
            _CheckedChunks(variable, path, name),
            chunks=chunks,
            lock=False,
            asarray=False,
            meta=np.empty((0,) * variable.ndim, dtype=variable.dtype),
            name=f"astrid-{name}-{uuid.uuid4().hex}",
        )
        ds[name] = xr.Variable(variable.dims, data, variable.attrs, encoding=variable.encoding)
    return ds


def load_triplets(
    path: str | os.PathLike, *, chunks: dict | str | None = None, format: str | None = None
) -> xr.Dataset:
    """Open a triplet store lazily (Dask arrays), as written by :func:`write_triplets`.

    Parameters
    ----------
    path : str or path-like
        Zarr store or netCDF/HDF5 file.
    chunks : dict or "auto", optional
        Dask chunks; default the store's own chunks (256 candidates
        unless written otherwise).
    format : {"zarr", "netcdf"}, optional
        Override the choice made from the suffix.

    Returns
    -------
    xarray.Dataset
        Stamps and masks as Dask arrays (read on demand, so sets larger than
        memory work); per-candidate coordinates loaded, strings as ``str``;
        only the ``n_committed`` complete candidates; ``candidate_id`` indexed.

    Raises
    ------
    AstridFileError
        Missing path or not a triplet store.
    """
    path = Path(path)
    if not path.exists():
        raise AstridFileError(f"{path}: no such triplet store")
    require("dask", "Opening triplets lazily")
    if _is_netcdf(path, format):
        require("h5netcdf", "Reading triplets from netCDF/HDF5")
        try:
            ds = xr.open_dataset(path, engine="h5netcdf", chunks={})
        except (OSError, ValueError) as exc:
            raise AstridFileError(f"{path}: not a readable netCDF/HDF5 file ({exc})") from exc
    else:
        zarr = require("zarr", "Reading triplets from Zarr")
        try:
            committed = zarr.open_group(path, mode="r").attrs.get(COMMIT_ATTR)
        except (OSError, ValueError, KeyError) as exc:
            raise AstridFileError(f"{path}: not a readable Zarr store ({exc})") from exc
        if committed is None:
            raise AstridFileError(
                f"{path}: not an AstrID triplet store (no {COMMIT_ATTR!r} attribute)"
            )
        missing = _missing_chunks(path, int(committed))
        if missing:
            raise AstridFileError(
                f"{path}: {len(missing)} chunk file(s) of committed rows are missing, e.g. {missing[:3]}; "
                "the store has lost data (reading it would give fill values as if they were stamps)"
            )
        try:
            ds = xr.open_zarr(
                _committed_view(path, int(committed)), consolidated=False, chunks=None
            )
        except (OSError, ValueError, KeyError) as exc:
            raise AstridFileError(f"{path}: not a readable Zarr store ({exc})") from exc
        ds = _checked_dask(ds, path)
    committed = ds.attrs.get(COMMIT_ATTR)
    if committed is None:
        raise AstridFileError(f"{path}: not an AstrID triplet store (no {COMMIT_ATTR!r} attribute)")
    committed = int(committed)
    if "candidate" in ds.sizes and ds.sizes["candidate"] != committed:
        ds = ds.isel(candidate=slice(0, committed))
    ds = _coords_in_memory(ds)
    if chunks is not None:
        # Rechunk after opening: asking the backend for chunks that split the
        # stored ones makes xarray warn about performance.
        ds = ds.chunk(chunks)
    ds = ds.set_xindex("candidate_id")
    return validate_triplets(ds, name=str(path))
