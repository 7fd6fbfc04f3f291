"""The triplet schema that every AstrID triplet producer and consumer shares.

A *triplet* is three co-registered postage stamps centred on one candidate:
the science image, the reference (template) image and their difference. A set
of triplets is an :class:`xarray.Dataset`:

``triplets`` : float32, dims ``("candidate", "y", "x", "channel")``
    Stamps of :data:`STAMP_SIZE` × :data:`STAMP_SIZE` pixels, channel order
    :data:`CHANNELS`, in the data units of the source images. NaN where there
    is no data (outside an image, a truncated ZTF cutout, masked pixels).
``valid`` : bool, dims ``("candidate", "y", "x", "channel")`` or ``("candidate", "y", "x")``
    True where a pixel holds real data.
coordinates along ``candidate``
    At least ``candidate_id`` (unique strings, also usable with
    ``ds.sel(candidate_id=...)``), plus whatever the producer knows: ``ra``,
    ``dec``, ``label``, scores, ...
``channel`` coordinate
    Exactly :data:`CHANNELS`.
attributes
    ``schema`` (= :data:`SCHEMA`), and for provenance ``source``, ``mission``
    and ``filter``.

:func:`new_triplet_dataset` builds such a dataset and :func:`validate_triplets`
checks one, raising :class:`~astrid.errors.AstridInputError` with a message
that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .errors import AstridInputError

__all__ = [
    "CHANNELS",
    "STAMP_SIZE",
    "SCHEMA",
    "TRIPLET_DIMS",
    "new_triplet_dataset",
    "validate_triplets",
]

#: Channel order of every triplet (braai's order: science, reference, difference).
CHANNELS: tuple[str, str, str] = ("science", "reference", "difference")
#: Side of a stamp in pixels (ZTF's alert cutouts and braai's input).
STAMP_SIZE: int = 63
#: Value of the ``schema`` attribute; bump the number on incompatible changes.
SCHEMA: str = "astrid-triplets/1"
#: Dimensions of the ``triplets`` variable.
TRIPLET_DIMS: tuple[str, str, str, str] = ("candidate", "y", "x", "channel")

_PROVENANCE_ATTRS = ("source", "mission", "filter")


def new_triplet_dataset(
    stamps: np.ndarray,
    coords: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
    *,
    valid: np.ndarray | None = None,
) -> xr.Dataset:
    """Build a triplet dataset in the AstrID schema.

    Parameters
    ----------
    stamps : array-like, shape (n, 63, 63, 3)
        Science, reference and difference stamps (channel last), NaN where
        there is no data. Stored as float32.
    coords : dict, optional
        Per-candidate coordinates: ``name -> array`` of length ``n`` (dims
        ``("candidate",)``), or ``name -> (dims, array)`` for other shapes,
        e.g. ``("candidate", "channel")``. ``candidate_id`` (unique strings)
        is generated as ``"0"``, ``"1"``, ... when not given.
    attrs : dict, optional
        Dataset attributes (``source``, ``mission``, ``filter``, anything
        JSON-like). ``schema`` is always set to :data:`SCHEMA`; missing
        provenance attributes are set to ``""``.
    valid : array-like of bool, shape (n, 63, 63, 3) or (n, 63, 63), optional
        Pixels that hold real data. Default: the finite pixels of ``stamps``.

    Returns
    -------
    xarray.Dataset
        With ``triplets`` and ``valid`` and the coordinates; passes
        :func:`validate_triplets`.

    Raises
    ------
    AstridInputError
        Wrong stamp shape, coordinates of the wrong length, or duplicate
        ``candidate_id`` values.
    """
    stamps = np.asarray(stamps)
    expected = (STAMP_SIZE, STAMP_SIZE, len(CHANNELS))
    if stamps.ndim != 4 or stamps.shape[1:] != expected:
        raise AstridInputError(
            f"stamps: expected shape (n, {STAMP_SIZE}, {STAMP_SIZE}, {len(CHANNELS)}) "
            f"(candidate, y, x, channel), got {stamps.shape}"
        )
    if not (np.issubdtype(stamps.dtype, np.floating) or np.issubdtype(stamps.dtype, np.integer)):
        raise AstridInputError(f"stamps: expected a numeric array, got dtype {stamps.dtype}")
    n = stamps.shape[0]
    stamps = stamps.astype(np.float32, copy=False)
    if valid is None:
        valid = np.isfinite(stamps)
    else:
        valid = np.asarray(valid)
        if valid.dtype != bool:
            raise AstridInputError(f"valid: expected a bool array, got dtype {valid.dtype}")
        if valid.shape not in (stamps.shape, stamps.shape[:3]):
            raise AstridInputError(
                f"valid: expected shape {stamps.shape} or {stamps.shape[:3]}, got {valid.shape}"
            )
    valid_dims = TRIPLET_DIMS if valid.ndim == 4 else TRIPLET_DIMS[:3]

    coord_vars: dict[str, Any] = {"channel": ("channel", list(CHANNELS))}
    for name, value in (coords or {}).items():
        if isinstance(value, tuple) and len(value) == 2 and not np.isscalar(value[0]):
            dims, data = value
            dims = tuple(dims)
        else:
            dims, data = ("candidate",), value
        data = np.asarray(data)
        if data.ndim != len(dims):
            raise AstridInputError(f"coordinate {name!r}: {data.ndim}-D array for dims {dims}")
        if dims[0] != "candidate" or data.shape[0] != n:
            raise AstridInputError(
                f"coordinate {name!r}: expected {n} values along 'candidate' "
                f"(one per triplet), got shape {data.shape} with dims {dims}"
            )
        coord_vars[name] = (dims, data)
    if "candidate_id" not in coord_vars:
        coord_vars["candidate_id"] = (
            "candidate",
            np.array([str(i) for i in range(n)], dtype=object),
        )
    else:
        dims, data = coord_vars["candidate_id"]
        coord_vars["candidate_id"] = (dims, np.array([str(v) for v in data], dtype=object))

    all_attrs = {key: "" for key in _PROVENANCE_ATTRS}
    all_attrs.update(dict(attrs or {}))
    all_attrs["schema"] = SCHEMA

    ds = xr.Dataset(
        {"triplets": (TRIPLET_DIMS, stamps), "valid": (valid_dims, valid)},
        coords=coord_vars,
        attrs=all_attrs,
    )
    _check_unique_ids(ds)
    return ds.set_xindex("candidate_id")


def _check_unique_ids(ds: xr.Dataset) -> None:
    ids = np.asarray(ds["candidate_id"].values)
    unique, counts = np.unique(ids.astype(str), return_counts=True)
    if unique.size != ids.size:
        dupes = unique[counts > 1][:5]
        raise AstridInputError(
            f"candidate_id: {ids.size - unique.size} duplicate value(s), e.g. {list(dupes)}; "
            "each triplet needs its own id"
        )


def validate_triplets(ds: Any, name: str = "triplets") -> xr.Dataset:
    """Check that ``ds`` is a triplet dataset in the AstrID schema.

    Parameters
    ----------
    ds : xarray.Dataset
        The dataset to check.
    name : str, optional
        How to call the dataset in error messages (e.g. a file name).

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, so calls can be chained.

    Raises
    ------
    AstridInputError
        Not a Dataset; ``triplets`` missing or of the wrong dims, sizes, dtype
        or channels; ``valid`` missing or not bool; ``candidate_id`` missing or
        not unique; ``schema`` attribute missing or different.
    """
    if not isinstance(ds, xr.Dataset):
        raise AstridInputError(f"{name}: expected an xarray.Dataset, got {type(ds).__name__}")
    if "triplets" not in ds.data_vars:
        raise AstridInputError(
            f"{name}: no data variable 'triplets' (has {sorted(map(str, ds.data_vars))})"
        )
    var = ds["triplets"]
    if var.dims != TRIPLET_DIMS:
        raise AstridInputError(f"{name}: 'triplets' has dims {var.dims}, expected {TRIPLET_DIMS}")
    sizes = (var.sizes["y"], var.sizes["x"], var.sizes["channel"])
    if sizes != (STAMP_SIZE, STAMP_SIZE, len(CHANNELS)):
        raise AstridInputError(
            f"{name}: 'triplets' stamps are {sizes[0]}x{sizes[1]} with {sizes[2]} channels, "
            f"expected {STAMP_SIZE}x{STAMP_SIZE} with {len(CHANNELS)} channels"
        )
    if not np.issubdtype(var.dtype, np.floating):
        raise AstridInputError(f"{name}: 'triplets' has dtype {var.dtype}, expected float32")
    if "channel" not in ds.coords or tuple(str(c) for c in ds["channel"].values) != CHANNELS:
        found = tuple(str(c) for c in ds["channel"].values) if "channel" in ds.coords else None
        raise AstridInputError(f"{name}: channel coordinate is {found}, expected {CHANNELS}")
    if "valid" not in ds.data_vars:
        raise AstridInputError(f"{name}: no bool data variable 'valid' marking real pixels")
    valid = ds["valid"]
    if valid.dims not in (TRIPLET_DIMS, TRIPLET_DIMS[:3]):
        raise AstridInputError(
            f"{name}: 'valid' has dims {valid.dims}, expected {TRIPLET_DIMS} or {TRIPLET_DIMS[:3]}"
        )
    if valid.dtype != bool:
        raise AstridInputError(f"{name}: 'valid' has dtype {valid.dtype}, expected bool")
    if "candidate_id" not in ds.coords:
        raise AstridInputError(f"{name}: no 'candidate_id' coordinate along 'candidate'")
    if ds["candidate_id"].dims != ("candidate",):
        raise AstridInputError(
            f"{name}: 'candidate_id' has dims {ds['candidate_id'].dims}, expected ('candidate',)"
        )
    _check_unique_ids(ds)
    schema = ds.attrs.get("schema")
    if schema != SCHEMA:
        raise AstridInputError(f"{name}: attribute schema={schema!r}, expected {SCHEMA!r}")
    return ds
