"""Bad input for the stores (issue 14): triplet stores and label files.

Each case asserts its outcome class: a specific AstridError naming the thing
at fault, a specific warning, or a correct result with nothing lost.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from astrid.errors import AstridFileError, AstridInputError, AstridWarning
from astrid.schema import new_triplet_dataset
from astrid.triplets import load_triplets, write_triplets
from astrid.widgets import LabelStore

pytest.importorskip("zarr")
pytest.importorskip("h5netcdf")

FORMATS = [".zarr", ".nc"]


def _set(ids, seed=0):
    rng = np.random.default_rng(seed)
    stamps = rng.normal(size=(len(ids), 63, 63, 3)).astype(np.float32)
    return new_triplet_dataset(stamps, {"candidate_id": np.array(ids)}, {"source": "test"})


@pytest.fixture
def zarr_store(tmp_path):
    path = tmp_path / "set.zarr"
    write_triplets(_set([f"c{i}" for i in range(10)]), path, chunk_size=4)
    return path


# ----------------------------------------------------------------------------- lost or damaged data


@pytest.mark.parametrize("array", ["triplets", "valid", "candidate_id"])
def test_a_lost_zarr_chunk_is_an_error_not_fill_values(zarr_store, array):
    second = zarr_store / array / "c" / "1"  # the chunk of candidates 4-7
    (second.unlink() if second.is_file() else shutil.rmtree(second))
    with pytest.raises(AstridFileError, match=rf"set\.zarr: 1 chunk file.*missing.*{array}/c/1"):
        load_triplets(zarr_store)


def test_a_damaged_zarr_chunk_names_the_store_when_read(zarr_store):
    chunk = zarr_store / "triplets" / "c" / "1" / "0" / "0" / "0"
    chunk.write_bytes(b"\x00garbage" * 100)
    ds = load_triplets(zarr_store)  # opening is lazy
    assert np.isfinite(ds["triplets"][:4].values).all()  # undamaged rows still read
    with pytest.raises(
        AstridFileError, match=r"set\.zarr: the stored 'triplets' rows .* cannot be read.*damaged"
    ):
        ds["triplets"].values


def test_a_truncated_netcdf_store_is_a_file_error(tmp_path):
    path = tmp_path / "set.nc"
    write_triplets(_set(["a", "b"]), path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(AstridFileError, match=r"set\.nc: not a readable netCDF"):
        load_triplets(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such triplet store"),
        (lambda p: p.write_text("hello"), "not a readable"),
        (lambda p: p.mkdir(), "not a readable Zarr store|not an AstrID triplet store"),
        (
            lambda p: (
                p.mkdir(),
                (p / "zarr.json").write_text(
                    '{"zarr_format": 3, "node_type": "group", "attributes": {}}'
                ),
            ),
            "not an AstrID triplet store",
        ),
    ],
    ids=["missing", "text-file", "empty-folder", "foreign-zarr"],
)
def test_loading_what_is_not_a_store(tmp_path, make, message):
    path = tmp_path / "x.zarr"
    make(path)
    with pytest.raises(AstridFileError, match=message):
        load_triplets(path)


# ----------------------------------------------------------------------------- bad writes


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"mode": "r"}, AstridInputError, "mode: expected 'w' or 'a'"),
        ({"mode": "x"}, AstridInputError, "mode: expected 'w' or 'a'"),
        ({"format": "fits"}, AstridInputError, "format: expected 'zarr' or 'netcdf'"),
    ],
)
def test_bad_write_arguments(tmp_path, suffix, kwargs, error, message):
    with pytest.raises(error, match=message):
        write_triplets(_set(["a"]), tmp_path / f"x{suffix}", **kwargs)


@pytest.mark.parametrize("suffix", FORMATS)
def test_appending_duplicates_or_other_variables_is_refused_and_keeps_the_store(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    write_triplets(_set(["a", "b"]), path)
    with pytest.raises(AstridInputError, match="candidate_id already stored"):
        write_triplets(_set(["b", "c"]), path, mode="a")
    other = _set(["d"]).assign_coords(extra=("candidate", [1.0]))
    with pytest.raises(AstridInputError, match="different variables"):
        write_triplets(other, path, mode="a")
    assert [str(i) for i in load_triplets(path)["candidate_id"].values] == ["a", "b"]


@pytest.mark.parametrize("suffix", FORMATS)
def test_write_targets_of_the_wrong_kind(tmp_path, suffix):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AstridFileError, match="cannot create the folder"):
        write_triplets(_set(["a"]), blocker / f"x{suffix}")
    wrong = tmp_path / f"y{suffix}"
    if suffix == ".nc":
        wrong.mkdir()
        match = "is a folder; a netCDF triplet store is a file"
    else:
        wrong.write_text("x")
        match = "is a file; a Zarr triplet store is a folder"
    with pytest.raises(AstridFileError, match=match):
        write_triplets(_set(["a"]), wrong)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda ds: ds.drop_vars("valid"), "valid"),
        (
            lambda ds: ds.assign_coords(note=("candidate", np.array([None], dtype=object))),
            "non-string values",
        ),
    ],
    ids=["no-valid", "object-None"],
)
def test_datasets_that_cannot_be_stored(tmp_path, mutate, message):
    with pytest.raises(AstridInputError, match=message):
        write_triplets(mutate(_set(["a"])), tmp_path / "x.zarr")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB file system, so that a write runs out of space (root only)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small file system")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()})")
    yield mount
    import gc

    gc.collect()  # close store handles still open in this process, so the mount is not busy
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
        # Still busy: detach it now (it goes when the last handle closes); a mount left behind
        # would break pytest's clean-up of old temporary folders in later runs.
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_full_disk_is_an_error_and_the_store_reads_as_before(small_disk, suffix):
    path = small_disk / f"x{suffix}"
    write_triplets(_set(["a", "b"]), path)
    big = _set([f"n{i}" for i in range(120)], seed=1)  # ~ 5 MB of stamps
    with pytest.raises(
        AstridFileError, match=rf"x{suffix}: the triplet store could not be written \(No space left"
    ):
        write_triplets(big, path, mode="a")
    # the process is alive (was: a segfault in HDF5's close) and nothing committed is lost
    assert [str(i) for i in load_triplets(path)["candidate_id"].values] == ["a", "b"]


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "label, score, message",
    [
        ("maybe", None, "label 'maybe'"),
        ("REAL", None, "label 'REAL'"),
        ("real", float("inf"), "score: inf is not a finite"),
        ("real", float("-inf"), "score: -inf is not a finite"),
        ("real", "high", "score: expected a number"),
        ("bogus", [0.5], "score: expected a number"),
    ],
)
def test_bad_labels_are_refused_and_nothing_is_written(tmp_path, label, score, message):
    store = LabelStore(tmp_path / "labels.jsonl")
    with pytest.raises(AstridInputError, match=message):
        store.add("c1", label, score=score)
    assert not (tmp_path / "labels.jsonl").exists()


def test_a_nan_score_is_stored_as_no_score(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.add("c1", "real", score=float("nan"))
    assert LabelStore(tmp_path / "labels.jsonl").latest()["c1"].score is None


_GOOD = json.dumps({"candidate_id": "c1", "label": "real", "time": "2025-01-01T00:00:00Z"})


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("not json", "not a label record"),
        ('{"candidate_id": "c2", "label": "real"}', "KeyError"),
        ('{"candidate_id": "c2", "label": "maybe", "time": "t"}', "label 'maybe'"),
        ('{"candidate_id": "c2", "label": "real", "time": "t", "score": "high"}', "score 'high'"),
        ('["c2", "real"]', "not a label record"),
        ('{"candidate_id": "c2", "lab', "not a label record"),
    ],
    ids=["text", "no-time", "unknown-label", "string-score", "list", "torn"],
)
@pytest.mark.parametrize("where", ["middle", "last-with-newline", "last-without-newline"])
def test_a_bad_line_is_quarantined_never_deleted(tmp_path, bad, reason, where):
    path = tmp_path / "labels.jsonl"
    text = {
        "middle": bad + "\n" + _GOOD + "\n",
        "last-with-newline": _GOOD + "\n" + bad + "\n",
        "last-without-newline": _GOOD + "\n" + bad,
    }[where]
    path.write_text(text)
    with pytest.warns(
        AstridWarning,
        match=rf"1 line\(s\) are not label records.*{reason}.*1 label record\(s\) loaded",
    ):
        store = LabelStore(path)
    assert store.labels == {"c1": "real"}
    assert path.read_text() == text  # nothing deleted or rewritten on open
    assert json.loads((tmp_path / "labels.jsonl.quarantine").read_text())["text"] == bad
    store.add("c3", "bogus")
    assert path.read_text().startswith(text) and path.read_text().splitlines()[-1].startswith(
        '{"candidate_id": "c3"'
    )


@pytest.mark.parametrize(
    "content",
    ["candidate_id,label\nc1,real\n", "\x00\x01\x02", '{"a": 1}\n{"b": 2}\n'],
    ids=["csv", "binary", "foreign-json"],
)
def test_a_file_that_is_not_a_label_file_is_refused_and_left_alone(tmp_path, content):
    path = tmp_path / "labels.jsonl"
    path.write_text(content)
    with pytest.raises(AstridFileError, match="is a label record"):
        LabelStore(path)
    assert path.read_text() == content


def test_label_paths_of_the_wrong_kind(tmp_path):
    with pytest.raises(AstridFileError, match="is a folder"):
        LabelStore(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = LabelStore(blocker / "labels.jsonl")
    with pytest.raises(AstridFileError, match="labels.jsonl: cannot write the label"):
        store.add("c1", "real")


@pytest.mark.parametrize("suffix", [".txt", ".json", ".parquet"])
def test_label_export_formats(tmp_path, suffix):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.add("c1", "real")
    with pytest.raises(AstridInputError, match="must be .csv or .ecsv"):
        store.export(tmp_path / f"out{suffix}")
