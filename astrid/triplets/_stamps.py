"""Triplets: science, reference and difference stamps of each candidate."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr
from astropy.table import Table
from astropy.time import Time

from ..errors import AstridInputError
from ..schema import CHANNELS, STAMP_SIZE, new_triplet_dataset
from . import _kernels

__all__ = ["make_triplets", "table_to_coords", "coords_to_table", "stamp_centres"]


def stamp_centres(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel (nearest, halves rounded up) on which a stamp is centred."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise AstridInputError("candidates: x and y must be finite pixel positions")
    return np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)


def _column_values(column) -> np.ndarray:
    """A table column as a plain array: masked entries filled, strings as objects."""
    values = column
    if hasattr(values, "mask") and np.any(getattr(values, "mask", False)):
        kind = values.dtype.kind
        fill = np.nan if kind == "f" else ("" if kind in "US" else -1)
        values = values.filled(fill)
    values = np.asarray(values)
    if values.dtype.kind in "USO":
        values = np.array(
            [v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()], dtype=object
        ).reshape(values.shape)
    elif values.dtype.kind == "b":
        values = values.astype(bool)
    return values


# Candidate columns renamed in a dataset, where x and y are the stamp axes
# (ZTF alerts call the candidate position xpos, ypos too).
COORD_NAMES = {"x": "xpos", "y": "ypos"}
_TABLE_NAMES = {v: k for k, v in COORD_NAMES.items()}
_RESERVED = {"candidate", "channel", "triplets", "valid"}


def table_to_coords(table: Table) -> dict[str, tuple]:
    """Every 1-D column of ``table`` as an xarray coordinate along ``candidate``.

    Columns ``x`` and ``y`` become ``xpos`` and ``ypos`` (the dataset's
    ``x`` and ``y`` are the stamp axes). Units and descriptions become the
    coordinate's ``units`` and ``description`` attributes; multidimensional
    columns are skipped.
    """
    coords: dict[str, tuple] = {}
    for name in table.colnames:
        if name in _RESERVED:
            raise AstridInputError(
                f"candidates: column {name!r} clashes with a triplet dataset name; rename it"
            )
        column = table[name]
        if column.ndim != 1:
            continue
        attrs = {}
        if getattr(column, "unit", None) is not None:
            attrs["units"] = str(column.unit)
        if getattr(column, "description", None):
            attrs["description"] = str(column.description)
        coords[COORD_NAMES.get(name, name)] = ("candidate", _column_values(column), attrs)
    return coords


def coords_to_table(ds: xr.Dataset) -> Table:
    """The per-candidate coordinates of a triplet dataset as an astropy Table.

    The inverse of :func:`table_to_coords`: ``xpos``/``ypos`` become ``x``/``y``.

    Parameters
    ----------
    ds : xarray.Dataset
        A triplet dataset.

    Returns
    -------
    astropy.table.Table
        One row per candidate, one column per ``candidate`` coordinate.
    """
    table = Table()
    for coord_name, coord in ds.coords.items():
        if coord.dims != ("candidate",):
            continue
        name = _TABLE_NAMES.get(str(coord_name), str(coord_name))
        values = np.asarray(coord.values)
        if values.dtype.kind in "OT":
            values = np.array([str(v) for v in values.tolist()], dtype=str)
        table[name] = values
        if "units" in coord.attrs:
            table[name].unit = coord.attrs["units"]
        if "description" in coord.attrs:
            table[name].description = coord.attrs["description"]
    return table


def epoch_mjd(epoch: Any, result: Any = None) -> float:
    """An epoch as MJD (float): a number, an astropy Time, an ISO string, or the science time."""
    if epoch is None:
        meta = getattr(getattr(result, "science", None), "meta", None)
        obs_time = getattr(meta, "obs_time", None)
        return float(obs_time.mjd) if obs_time is not None else math.nan
    if isinstance(epoch, Time):
        return float(epoch.mjd)
    if isinstance(epoch, (int, float, np.integer, np.floating)):
        return float(epoch)
    try:
        return float(Time(str(epoch), scale="utc").mjd)
    except ValueError as exc:
        raise AstridInputError(
            f"epoch: {epoch!r} is neither an MJD nor a date astropy can parse"
        ) from exc


def _image_array(obj: Any, name: str, shape) -> tuple[np.ndarray, np.ndarray | None]:
    data = getattr(obj, "data", obj)
    if data is None:
        raise AstridInputError(
            f"result.{name}: missing, make_triplets needs it for the {name} channel"
        )
    data = np.asarray(data)
    if data.shape != shape:
        raise AstridInputError(f"result.{name}: shape {data.shape} differs from D {shape}")
    mask = getattr(obj, "mask", None)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
    return np.ascontiguousarray(data), mask


def make_triplets(
    result: Any,
    candidates: Table,
    size: int = STAMP_SIZE,
    *,
    field: str | None = None,
    epoch: Any = None,
    attrs: dict | None = None,
) -> xr.Dataset:
    """Science, reference and difference stamps of every candidate.

    Parameters
    ----------
    result : DifferenceResult
        Output of :func:`astrid.difference`: ``science`` and ``reference``
        (``Image`` on the reference grid, background subtracted), ``D`` and
        ``mask``/``footprint``.
    candidates : astropy.table.Table
        Needs ``x`` and ``y`` (0-based pixels on the reference grid), e.g.
        from :func:`detect` or :func:`label_candidates`. Every 1-D column
        becomes a coordinate along ``candidate``; ``x`` and ``y`` are
        renamed ``xpos`` and ``ypos`` (``x``, ``y`` are the stamp axes).
    size : int, optional
        Stamp side in pixels; the schema fixes it at 63.
    field : str, optional
        Field name, stored per candidate (coordinate ``field``) so that
        training sets can be split without leaking a field.
    epoch : float, str or astropy.time.Time, optional
        Epoch of the science image as MJD; default the science image's
        ``meta.obs_time``, else NaN.
    attrs : dict, optional
        Extra dataset attributes.

    Returns
    -------
    xarray.Dataset
        In the schema of :mod:`astrid.schema`: ``triplets`` (candidate, y,
        x, channel) float32 with channels (science, reference, difference),
        centred on the candidate's nearest integer pixel (``stamp_x``,
        ``stamp_y``), holding the images' own pixel values and NaN beyond
        the image edge; ``valid`` (same dims, bool) True where a pixel is
        inside the image, finite and not masked (science: its mask and the
        footprint; reference: its mask; difference: ``result.mask``).
        Coordinates: the candidate columns plus ``field``, ``epoch``,
        ``mission``, ``filter``. No normalisation is applied: that belongs
        to the model.

    Raises
    ------
    AstridInputError
        Missing ``x``/``y`` or images, mismatched shapes, or ``size`` other
        than the schema's.
    """
    if size != STAMP_SIZE:
        raise AstridInputError(
            f"size: the triplet schema fixes stamps at {STAMP_SIZE} px, got {size}"
        )
    if not isinstance(candidates, Table):
        raise AstridInputError(
            f"candidates: expected an astropy Table, got {type(candidates).__name__}"
        )
    if "x" not in candidates.colnames or "y" not in candidates.colnames:
        raise AstridInputError(f"candidates: needs columns x and y, has {candidates.colnames}")
    stamps, valid, xc, yc = _cut_stamps(result, candidates, size)
    science_meta = getattr(getattr(result, "science", None), "meta", None)
    mission = getattr(science_meta, "telescope", None) or ""
    band = getattr(science_meta, "filter", None) or ""
    mjd = epoch_mjd(epoch, result)
    field = "" if field is None else str(field)

    n = len(candidates)
    coords = table_to_coords(candidates)
    coords["stamp_x"] = (
        "candidate",
        xc,
        {"units": "pix", "description": "image column of the stamp's central pixel"},
    )
    coords["stamp_y"] = (
        "candidate",
        yc,
        {"units": "pix", "description": "image row of the stamp's central pixel"},
    )
    per_image = {
        "field": (np.full(n, field, dtype=object), "field (target) name"),
        "epoch": (np.full(n, mjd), "MJD of the science image"),
        "mission": (np.full(n, mission, dtype=object), "telescope or mission of the science image"),
        "filter": (np.full(n, band, dtype=object), "filter of the science image"),
    }
    for name, (values, description) in per_image.items():
        if name not in coords:
            coords[name] = ("candidate", values, {"description": description})

    dataset_attrs = {
        "source": "astrid.triplets.make_triplets",
        "mission": mission,
        "filter": band,
        "field": field,
        "epoch": mjd,
        "method": str(getattr(result, "method", "")),
    }
    for key, value in candidates.meta.items():
        if isinstance(value, (str, int, float, bool, np.integer, np.floating)) or value is None:
            dataset_attrs.setdefault(f"detect_{key}", value)
    dataset_attrs.update(attrs or {})
    ds = new_triplet_dataset(
        stamps,
        {name: values for name, (_, values, _) in coords.items()},
        clean_attrs(dataset_attrs),
        valid=valid,
    )
    for name, (_, _, coord_attrs) in coords.items():
        ds[name].attrs.update(coord_attrs)
    return ds


def _cut_stamps(result: Any, candidates: Table, size: int):
    """(stamps, valid, stamp_x, stamp_y): the three images' stamps at the candidates, as
    :func:`make_triplets` stores them."""
    diff = getattr(result, "D", None)
    if diff is None:
        raise AstridInputError("result.D: missing, make_triplets needs the difference image")
    diff = np.ascontiguousarray(np.asarray(diff))
    shape = diff.shape
    science, science_mask = _image_array(getattr(result, "science", None), "science", shape)
    reference, reference_mask = _image_array(getattr(result, "reference", None), "reference", shape)
    footprint = getattr(result, "footprint", None)
    footprint = None if footprint is None else np.asarray(footprint, dtype=bool)
    diff_mask = getattr(result, "mask", None)
    diff_mask = None if diff_mask is None else np.asarray(diff_mask, dtype=bool)

    n = len(candidates)
    xc, yc = stamp_centres(candidates["x"], candidates["y"])
    stamps = np.empty((n, size, size, len(CHANNELS)), np.float32)
    valid = np.empty((n, size, size, len(CHANNELS)), np.bool_)
    masks = []
    for name, mask in (
        ("science mask", science_mask),
        ("footprint", footprint),
        ("reference mask", reference_mask),
        ("result.mask", diff_mask),
    ):
        if mask is None:
            mask = np.zeros((1, 1), np.bool_)  # the kernel's "no mask"
        elif mask.shape != shape:
            raise AstridInputError(f"{name}: shape {mask.shape} differs from D {shape}")
        masks.append(np.ascontiguousarray(mask))
    _kernels.extract_triplets(science, reference, diff, *masks, yc, xc, size, stamps, valid)
    return stamps, valid, xc, yc


def clean_attrs(attrs: dict) -> dict:
    """Attributes that netCDF and Zarr can store: None -> "", bool -> int, NaN kept."""
    out = {}
    for key, value in attrs.items():
        if value is None:
            value = ""
        elif isinstance(value, (bool, np.bool_)):
            value = int(value)
        elif isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.floating):
            value = float(value)
        out[str(key)] = value
    return out
