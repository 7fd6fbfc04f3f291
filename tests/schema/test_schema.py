"""The triplet schema (astrid.schema): building, validating and storing a triplet dataset."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from astrid.errors import AstridInputError
from astrid.schema import CHANNELS, SCHEMA, STAMP_SIZE, new_triplet_dataset, validate_triplets


def test_new_triplet_dataset_layout():
    stamps = np.zeros((2, STAMP_SIZE, STAMP_SIZE, 3))
    stamps[1, 0, 0, 2] = np.nan
    ds = new_triplet_dataset(
        stamps,
        {"ra": [1.0, 2.0], "label": ["real", "bogus"], "candidate_id": ["a", "b"]},
        {"source": "test", "mission": "SIM", "filter": "r"},
    )
    assert ds["triplets"].dims == ("candidate", "y", "x", "channel")
    assert ds["triplets"].dtype == np.float32
    assert tuple(ds["channel"].values) == CHANNELS
    assert ds.attrs["schema"] == SCHEMA
    assert not ds["valid"].values[1, 0, 0, 2] and ds["valid"].values.sum() == ds["valid"].size - 1
    assert float(ds.sel(candidate_id="b")["ra"]) == 2.0
    assert validate_triplets(ds) is ds


def test_new_triplet_dataset_generates_ids_and_rejects_bad_input():
    ds = new_triplet_dataset(np.zeros((3, 63, 63, 3), np.float32))
    assert list(ds["candidate_id"].values) == ["0", "1", "2"]
    assert ds.attrs["source"] == ""
    with pytest.raises(AstridInputError, match=r"stamps: expected shape"):
        new_triplet_dataset(np.zeros((3, 64, 64, 3)))
    with pytest.raises(AstridInputError, match=r"coordinate 'ra'.*3 values"):
        new_triplet_dataset(np.zeros((3, 63, 63, 3)), {"ra": [1.0, 2.0]})
    with pytest.raises(AstridInputError, match="duplicate"):
        new_triplet_dataset(np.zeros((2, 63, 63, 3)), {"candidate_id": ["x", "x"]})
    with pytest.raises(AstridInputError, match="valid: expected a bool"):
        new_triplet_dataset(np.zeros((2, 63, 63, 3)), valid=np.ones((2, 63, 63, 3)))


def test_validate_triplets_names_the_problem():
    good = new_triplet_dataset(np.zeros((2, 63, 63, 3), np.float32))
    with pytest.raises(AstridInputError, match="expected an xarray.Dataset"):
        validate_triplets(np.zeros((2, 63, 63, 3)))
    with pytest.raises(AstridInputError, match="no data variable 'triplets'"):
        validate_triplets(good.drop_vars("triplets"))
    with pytest.raises(AstridInputError, match="dims"):
        validate_triplets(
            good.assign(triplets=good["triplets"].transpose("candidate", "channel", "y", "x"))
        )
    with pytest.raises(AstridInputError, match=r"stamps are 31x63"):
        validate_triplets(good.isel(y=slice(0, 31)))
    with pytest.raises(AstridInputError, match="channel coordinate"):
        validate_triplets(good.assign_coords(channel=["sci", "ref", "diff"]))
    with pytest.raises(AstridInputError, match="'valid'"):
        validate_triplets(good.drop_vars("valid"))
    with pytest.raises(AstridInputError, match="schema"):
        validate_triplets(good.assign_attrs(schema="other/1"))


def test_triplet_dataset_roundtrips_netcdf(tmp_path):
    pytest.importorskip("h5netcdf")
    ds = new_triplet_dataset(np.ones((2, 63, 63, 3)), {"ra": [1.0, 2.0]}, {"mission": "SIM"})
    path = tmp_path / "triplets.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        validate_triplets(back)
        np.testing.assert_array_equal(back["triplets"].values, ds["triplets"].values)
