"""Triplet stamps (make_triplets) and their storage (write_triplets / load_triplets)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from astropy.table import Table

from astrid.errors import AstridFileError, AstridInputError
from astrid.triplets import (
    CHANNELS,
    COMMIT_ATTR,
    STAMP_SIZE,
    SyntheticScene,
    coords_to_table,
    detect,
    label_candidates,
    load_triplets,
    make_triplets,
    synthetic_difference,
    validate_triplets,
    write_triplets,
)

HALF = STAMP_SIZE // 2


@pytest.fixture(scope="module")
def result():
    return synthetic_difference(
        (200, 240),
        SyntheticScene(
            n_transients=6,
            n_hot_pixels=2,
            masked_box=(150, 170, 20, 60),
            missing_columns=12,
        ),
        seed=5,
    )


def expected_stamps(images, xc, yc):
    """Reference implementation: pad each image with NaN and slice."""
    out = []
    for image in images:
        padded = np.pad(np.asarray(image, np.float64), HALF + 1, constant_values=np.nan)
        out.append(
            np.stack(
                [
                    padded[y + 1 : y + 1 + STAMP_SIZE, x + 1 : x + 1 + STAMP_SIZE]
                    for x, y in zip(xc, yc)
                ]
            )
        )
    return np.stack(out, axis=-1)


def test_stamp_pixels_equal_image_pixels_including_edges(result):
    ny, nx = result.D.shape
    x = np.array([0.0, nx - 1.0, 2.6, 120.5, 119.49, 10.0, nx - 3.0, 100.0])
    y = np.array([0.0, ny - 1.0, 100.4, 60.5, 60.0, ny - 2.0, 5.0, 160.0])
    candidates = Table({"x": x, "y": y, "candidate_id": [f"p{i}" for i in range(len(x))]})
    ds = make_triplets(result, candidates, field="F1", epoch=59000.5)
    xc = np.floor(x + 0.5).astype(int)
    yc = np.floor(y + 0.5).astype(int)
    assert list(ds["stamp_x"].values) == list(xc) == [0, nx - 1, 3, 121, 119, 10, nx - 3, 100]
    assert list(ds["stamp_y"].values) == list(yc)
    expected = expected_stamps([result.science.data, result.reference.data, result.D], xc, yc)
    stamps = ds["triplets"].values
    assert stamps.dtype == np.float32 and stamps.shape == (len(x), STAMP_SIZE, STAMP_SIZE, 3)
    np.testing.assert_array_equal(stamps, expected.astype(np.float32))
    # The centre pixel of every stamp is the candidate's pixel.
    np.testing.assert_array_equal(stamps[:, HALF, HALF, 2], result.D[yc, xc])
    # A corner candidate: three quarters of its stamp lie beyond the image.
    assert np.isnan(stamps[0, :HALF, :, :]).all() and np.isnan(stamps[0, :, :HALF, :]).all()
    assert np.isfinite(stamps[0, HALF:, HALF:, 2]).all()


def test_valid_marks_masked_outside_and_missing_pixels(result):
    ny, nx = result.D.shape
    candidates = Table({"x": [40.0, nx - 5.0, 0.0], "y": [160.0, 100.0, 0.0]})
    ds = make_triplets(result, candidates)
    valid = ds["valid"].values
    xc = np.array([40, nx - 5, 0])
    yc = np.array([160, 100, 0])
    inside = np.isfinite(expected_stamps([np.zeros((ny, nx))], xc, yc)[..., 0])
    sci_bad = (
        expected_stamps([(result.science.mask | ~result.footprint).astype(float)], xc, yc)[..., 0]
        == 1
    )
    diff_bad = expected_stamps([result.mask.astype(float)], xc, yc)[..., 0] == 1
    np.testing.assert_array_equal(
        valid[..., 0], inside & ~sci_bad & np.isfinite(ds["triplets"].values[..., 0])
    )
    np.testing.assert_array_equal(valid[..., 1], inside)
    np.testing.assert_array_equal(valid[..., 2], inside & ~diff_bad)
    assert not valid[1, HALF, HALF + 3, 0], "science beyond the footprint is not valid"
    assert valid[1, HALF, HALF + 3, 1], "the reference still covers it"
    # Masked pixels keep their values (the model decides what to do with them).
    assert np.isfinite(ds["triplets"].values[0, HALF, HALF, 1])


def test_coordinates_and_attributes(result):
    candidates = detect(result, prefix="F1-59000")
    labelled = label_candidates(candidates, result.truth)
    ds = make_triplets(result, labelled, field="F1")
    validate_triplets(ds)
    assert tuple(ds["channel"].values) == CHANNELS
    for name in labelled.colnames:
        coord = {"x": "xpos", "y": "ypos"}.get(name, name)
        assert coord in ds.coords and ds[coord].dims == ("candidate",)
    np.testing.assert_array_equal(ds["xpos"].values, labelled["x"])
    assert ds["xpos"].attrs["units"] == "pix" and "description" in ds["score"].attrs
    assert set(ds["field"].values) == {"F1"}
    assert ds["epoch"].values[0] == pytest.approx(59000.0)  # the science image's obs_time
    assert ds["mission"].values[0] == "SYNTH" and ds["filter"].values[0] == "r"
    assert ds.attrs["field"] == "F1" and ds.attrs["detect_threshold"] == 5.0
    assert ds.sel(candidate_id="F1-59000-c00000")["score"] == labelled["score"][0]
    back = coords_to_table(ds)
    assert list(back["candidate_id"]) == list(labelled["candidate_id"])
    np.testing.assert_array_equal(back["y"], labelled["y"])
    assert back["x"].unit == "pix"


def test_epoch_forms(result):
    candidates = Table({"x": [50.0], "y": [50.0]})
    from astropy.time import Time

    assert make_triplets(result, candidates, epoch="2020-05-31")["epoch"].values[
        0
    ] == pytest.approx(59000.0)
    assert (
        make_triplets(result, candidates, epoch=Time(59001.0, format="mjd"))["epoch"].values[0]
        == 59001.0
    )
    with pytest.raises(AstridInputError, match="epoch"):
        make_triplets(result, candidates, epoch="not a date")


def test_empty_candidate_table(result):
    ds = make_triplets(result, detect(result, threshold=1e6))
    assert ds.sizes["candidate"] == 0
    validate_triplets(ds)


@pytest.mark.parametrize(
    "candidates, kwargs, message",
    [
        (Table({"x": [1.0]}), {}, "x and y"),
        (Table({"x": [1.0], "y": [np.nan]}), {}, "finite"),
        (Table({"x": [1.0], "y": [1.0], "candidate": [3]}), {}, "clashes"),
        (Table({"x": [1.0], "y": [1.0]}), {"size": 31}, "63"),
        ([(1.0, 1.0)], {}, "Table"),
    ],
)
def test_bad_candidates_are_refused(result, candidates, kwargs, message):
    with pytest.raises(AstridInputError, match=message):
        make_triplets(result, candidates, **kwargs)


# ----------------------------------------------------------------------------- storage


@pytest.fixture(scope="module")
def two_sets(result):
    candidates = label_candidates(detect(result, negative=True, prefix="A"), result.truth)
    first = make_triplets(result, candidates[:5], field="A")
    second = make_triplets(result, candidates[5:], field="B")
    return first, second


def assert_same(loaded: xr.Dataset, expected: xr.Dataset):
    """Exact equality of stamps, masks, every coordinate (values and dtype) and attributes."""
    loaded = loaded.load()
    np.testing.assert_array_equal(loaded["triplets"].values, expected["triplets"].values)
    assert loaded["triplets"].dtype == np.float32
    np.testing.assert_array_equal(loaded["valid"].values, expected["valid"].values)
    assert loaded["valid"].dtype == bool
    assert set(loaded.coords) == set(expected.coords)
    for name in expected.coords:
        a, b = loaded[name].values, expected[name].values
        assert a.dtype == b.dtype, name
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)
        else:
            assert a.tolist() == b.tolist(), name
        assert loaded[name].attrs == expected[name].attrs, name
    for key, value in expected.attrs.items():
        assert loaded.attrs[key] == value or (
            value != value and loaded.attrs[key] != loaded.attrs[key]
        ), key


@pytest.mark.parametrize("name", ["set.zarr", "set.nc", "set.h5"])
def test_round_trip_is_exact(tmp_path, two_sets, name):
    first, _ = two_sets
    path = write_triplets(first, tmp_path / name)
    loaded = load_triplets(path)
    assert hasattr(loaded["triplets"].data, "dask"), "opened lazily"
    assert loaded.attrs[COMMIT_ATTR] == first.sizes["candidate"]
    expected = first.copy()
    expected.attrs[COMMIT_ATTR] = first.sizes["candidate"]
    expected.attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in expected.attrs.items()}
    assert_same(loaded, expected)
    assert (
        loaded.sel(candidate_id=str(first["candidate_id"].values[1]))["score"]
        == first["score"].values[1]
    )


@pytest.mark.parametrize("name", ["set.zarr", "set.nc"])
def test_append_along_candidate(tmp_path, two_sets, name):
    first, second = two_sets
    path = tmp_path / name
    write_triplets(first, path, mode="a")  # creates
    write_triplets(second, path, mode="a")
    loaded = load_triplets(path, chunks={"candidate": 4})
    assert loaded.sizes["candidate"] == first.sizes["candidate"] + second.sizes["candidate"]
    assert loaded["triplets"].data.chunks[0][0] == 4
    both = xr.concat(
        [first.drop_indexes("candidate_id"), second.drop_indexes("candidate_id")], "candidate"
    )
    np.testing.assert_array_equal(loaded["triplets"].values, both["triplets"].values)
    assert loaded["candidate_id"].values.tolist() == both["candidate_id"].values.tolist()
    assert loaded["field"].values.tolist() == both["field"].values.tolist()
    assert "field" not in loaded.attrs, "attributes that differ between appends are dropped"
    with pytest.raises(AstridInputError, match="already stored"):
        write_triplets(second, path, mode="a")
    with pytest.raises(AstridInputError, match="different variables"):
        write_triplets(
            first.drop_vars("score").assign_coords(
                candidate_id=("candidate", [f"n{i}" for i in range(5)], {})
            ),
            path,
            mode="a",
        )


def test_write_replaces_and_leaves_no_temporary_files(tmp_path, two_sets):
    first, second = two_sets
    path = tmp_path / "set.zarr"
    write_triplets(first, path)
    write_triplets(second, path)
    assert load_triplets(path).sizes["candidate"] == second.sizes["candidate"]
    # the writer lock (a hidden sibling, ".set.zarr.lock") stays; no temporary store does
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".set.zarr.lock") == ["set.zarr"]


def test_interrupted_append_is_invisible_and_repaired(tmp_path, two_sets):
    import zarr

    first, second = two_sets
    path = tmp_path / "set.zarr"
    write_triplets(first, path)
    n = first.sizes["candidate"]
    # Simulate a writer that died after growing some arrays and writing rows,
    # but before committing: extra garbage rows beyond n_committed.
    group = zarr.open_group(path, mode="r+")
    for _, array in group.arrays():
        dims = array.metadata.dimension_names or ()
        if dims and dims[0] == "candidate" and array.name.strip("/") in ("triplets", "score"):
            array.resize((n + 3,) + tuple(array.shape[1:]))
            if array.name.strip("/") == "triplets":
                array[n:] = 99.0
    loaded = load_triplets(path)
    assert loaded.sizes["candidate"] == n
    assert not (loaded["triplets"].values == 99.0).any()
    # The next append drops the uncommitted rows first.
    write_triplets(second, path, mode="a")
    loaded = load_triplets(path)
    assert loaded.sizes["candidate"] == n + second.sizes["candidate"]
    np.testing.assert_array_equal(loaded["triplets"].values[n:], second["triplets"].values)
    np.testing.assert_array_equal(loaded["score"].values[n:], second["score"].values)


def test_appending_a_lazily_loaded_set(tmp_path, two_sets):
    first, second = two_sets
    write_triplets(second, tmp_path / "b.zarr", chunk_size=2)
    write_triplets(first, tmp_path / "all.zarr", chunk_size=2)
    write_triplets(load_triplets(tmp_path / "b.zarr"), tmp_path / "all.zarr", mode="a")
    loaded = load_triplets(tmp_path / "all.zarr")
    np.testing.assert_array_equal(
        loaded["triplets"].values[first.sizes["candidate"] :], second["triplets"].values
    )


def test_writing_a_lazy_selection(tmp_path, two_sets):
    first, second = two_sets
    write_triplets(first, tmp_path / "a.zarr", chunk_size=2)
    write_triplets(second, tmp_path / "a.zarr", mode="a")
    every_other = load_triplets(tmp_path / "a.zarr").isel(candidate=slice(None, None, 2))
    for name in ("sel.zarr", "sel.nc"):
        write_triplets(every_other, tmp_path / name, chunk_size=3)
        loaded = load_triplets(tmp_path / name)
        np.testing.assert_array_equal(loaded["triplets"].values, every_other["triplets"].values)
        assert loaded["candidate_id"].values.tolist() == every_other["candidate_id"].values.tolist()


def test_load_errors(tmp_path):
    with pytest.raises(AstridFileError, match="no such"):
        load_triplets(tmp_path / "missing.zarr")
    other = xr.Dataset({"a": ("candidate", np.zeros(3))})
    other.to_zarr(tmp_path / "other.zarr", consolidated=False)
    with pytest.raises(AstridFileError, match="not an AstrID triplet store"):
        load_triplets(tmp_path / "other.zarr")
    (tmp_path / "junk.nc").write_bytes(b"not netcdf")
    with pytest.raises(AstridFileError):
        load_triplets(tmp_path / "junk.nc")


def test_write_errors(tmp_path, two_sets):
    first, _ = two_sets
    with pytest.raises(AstridInputError, match="mode"):
        write_triplets(first, tmp_path / "x.zarr", mode="r")
    with pytest.raises(AstridInputError, match="format"):
        write_triplets(first, tmp_path / "x.zarr", format="fits")
    with pytest.raises(AstridInputError):
        write_triplets(first.drop_vars("valid"), tmp_path / "x.zarr")


# ----------------------------------------------------------------------------- simulated pair


@pytest.mark.slow
def test_simulated_triplets_equal_image_pixels(tmp_path):
    import astrid.simulate
    from astrid import difference

    sim = astrid.simulate.pair(size=512, seed=4)
    result = difference(sim.reference, sim.science)
    candidates = detect(result, negative=True)
    ny, nx = result.D.shape
    edges = Table({"x": [0.0, nx - 1.0, 5.0, nx / 2], "y": [ny - 1.0, 0.0, ny / 2, 3.0]})
    for table in (candidates, edges):
        ds = make_triplets(result, table, field="sim")
        xc, yc = ds["stamp_x"].values, ds["stamp_y"].values
        expected = expected_stamps([result.science.data, result.reference.data, result.D], xc, yc)
        np.testing.assert_array_equal(ds["triplets"].values, expected.astype(np.float32))
    path = write_triplets(ds, tmp_path / "sim.zarr")
    np.testing.assert_array_equal(load_triplets(path)["triplets"].values, ds["triplets"].values)
