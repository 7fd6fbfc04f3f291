"""``astrid score``: inputs to a scores table, model identity, resume, --watch, drift, bad inputs."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("zarr")

from astropy.table import Table  # noqa: E402

from astrid.cli import main  # noqa: E402
from astrid.paths import shared_data  # noqa: E402
from astrid.schema import new_triplet_dataset  # noqa: E402
from astrid.score import score  # noqa: E402
from astrid.triplets import load_triplets, write_triplets  # noqa: E402


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A seeded two-layer CNN saved as .keras (scores spread around 0.5 with the stamps' content)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((63, 63, 3))
    hidden = keras.layers.Conv2D(4, 5, strides=4, activation="relu")(inputs)
    hidden = keras.layers.GlobalMaxPooling2D()(hidden)
    net = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden), name="tiny")
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    net.save(path)
    return path


def _dataset(n, seed, prefix, noise=1.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:63, :63] - 31
    blob = np.exp(-0.5 * (xx**2 + yy**2) / 2.0**2)
    stamps = rng.normal(0.0, noise, size=(n, 63, 63, 3)).astype(np.float32)
    amplitude = rng.uniform(0.0, 10.0, n)[:, None, None]
    stamps[..., 0] += amplitude * blob
    stamps[..., 2] += amplitude * blob
    stamps[..., :2] += 50.0
    return new_triplet_dataset(stamps, {"candidate_id": [f"{prefix}-{i}" for i in range(n)]})


def _drop_store(folder: Path, name: str, n: int, seed: int, old: bool = False) -> Path:
    """Write a triplet store as a drop folder should receive it: under a hidden name, then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    write_triplets(_dataset(n, seed, name), tmp)
    final = folder / name
    os.replace(tmp, final)
    if old:  # written well before the run starts
        past = time.time() - 3600
        for path in [final, *final.rglob("*")]:
            os.utime(path, (past, past))
    return final


def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["score", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _api_scores(store: Path, model: Path) -> dict[str, float]:
    ds = load_triplets(store)
    try:
        result = score(ds, model)
    finally:
        ds.close()
    return dict(zip(result["candidate_id"].values.astype(str).tolist(), result.values.tolist()))


def _state(output: Path) -> dict:
    return json.loads(output.with_name(output.name + ".state.json").read_text())


# ----------------------------------------------------------------------------- scoring and resuming


def test_scores_equal_the_api_and_reruns_score_only_new_inputs(tmp_path, model_file, capsys):
    folder = tmp_path / "night"
    stores = [_drop_store(folder, "a.zarr", 30, 0), _drop_store(folder / "sub", "b.zarr", 20, 1)]
    out = tmp_path / "scores.ecsv"
    rc, stdout, stderr = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 0, stderr
    assert "50 candidate(s) from 2 new input(s)" in stdout and "drift not checked" in stdout
    assert "Traceback" not in stderr

    table = Table.read(out)
    assert len(table) == 50 and len(set(table["candidate_id"])) == 50
    expected = {**_api_scores(stores[0], model_file), **_api_scores(stores[1], model_file)}
    np.testing.assert_allclose(
        table["score"], [expected[i] for i in table["candidate_id"]], atol=1e-6
    )
    assert set(table["input"]) == {str(s) for s in stores}
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert set(table["model_sha256"]) == {sha} and set(table["model"]) == {"tiny"}
    meta = table.meta["astrid_scores"]
    assert meta["model"]["model_sha256"] == sha and meta["drift"] is None and meta["n_inputs"] == 2

    # A rerun scores nothing; a new store is scored alone.
    rc, stdout, _ = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 0 and "0 candidate(s) from 0 new input(s)" in stdout
    assert len(Table.read(out)) == 50
    new = _drop_store(folder, "c.zarr", 10, 2)
    rc, stdout, _ = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 0 and "10 candidate(s) from 1 new input(s)" in stdout
    table = Table.read(out)
    assert len(table) == 60 and len(set(table["candidate_id"])) == 60
    assert list(table["input"][-10:]) == [str(new)] * 10


def test_watch_scores_inputs_that_arrive_while_it_runs_exactly_once(tmp_path, model_file, capsys):
    folder = tmp_path / "incoming"
    _drop_store(folder, "s0.zarr", 12, 10, old=True)
    out = tmp_path / "live.ecsv"

    state_path = out.with_name(out.name + ".state.json")
    delivered = []

    def deliver():
        # After the first poll has scored s0: these arrive while it runs.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (state_path.exists() and _state(out)["inputs"]):
            time.sleep(0.05)
        for i in range(1, 4):
            time.sleep(0.4)
            _drop_store(folder, f"s{i}.zarr", 12, 10 + i)
            delivered.append(len(_state(out)["inputs"]))

    dropper = threading.Thread(target=deliver)
    dropper.start()
    try:
        rc, stdout, stderr = _run(
            capsys,
            folder,
            "--model",
            model_file,
            "-o",
            out,
            "--watch",
            "--interval",
            "0.2",
            "--max-polls",
            "20",
        )
    finally:
        dropper.join()
    assert rc == 0, stderr
    assert delivered and delivered[0] == 1  # the first drop came after s0 was scored
    table = Table.read(out)
    ids = table["candidate_id"].tolist()
    assert len(ids) == len(set(ids)) == 48  # every candidate of the four stores, once
    assert sorted({Path(p).name for p in table["input"]}) == [
        "s0.zarr",
        "s1.zarr",
        "s2.zarr",
        "s3.zarr",
    ]
    assert {Path(k).name: v["n"] for k, v in _state(out)["inputs"].items()} == {
        f"s{i}.zarr": 12 for i in range(4)
    }
    # Stopped and started again (no --watch): nothing left to score.
    rc, stdout, _ = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 0 and "from 0 new input(s)" in stdout and len(Table.read(out)) == 48


def test_a_crash_between_the_table_and_the_state_file_scores_nothing_twice(
    tmp_path, model_file, capsys
):
    folder = tmp_path / "in"
    _drop_store(folder, "a.zarr", 15, 3)
    b = _drop_store(folder, "b.zarr", 15, 4)
    out = tmp_path / "scores.ecsv"
    state_path = out.with_name(out.name + ".state.json")
    assert _run(capsys, folder, "--model", model_file, "-o", out)[0] == 0
    # The table was written, the state file was not.
    state_path.unlink()
    rc, stdout, _ = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 0 and "from 0 new input(s)" in stdout and len(Table.read(out)) == 30
    assert all(v.get("recovered") for v in _state(out)["inputs"].values())
    # The state lists b but the table lost its rows (an older table restored): b is scored again, once.
    table = Table.read(out)
    table[table["input"] != str(b)].write(out, overwrite=True)
    rc, stdout, _ = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 0 and "15 candidate(s) from 1 new input(s)" in stdout
    table = Table.read(out)
    assert len(table) == 30 and len(set(table["candidate_id"])) == 30


def test_ctrl_c_while_watching_keeps_what_was_scored(tmp_path, model_file, capsys, monkeypatch):
    _drop_store(tmp_path / "in", "a.zarr", 7, 70, old=True)

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)  # the --watch loop's wait
    out = tmp_path / "scores.ecsv"
    rc, _, stderr = _run(capsys, tmp_path / "in", "--model", model_file, "-o", out, "--watch")
    assert rc == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert len(Table.read(out)) == 7 and len(_state(out)["inputs"]) == 1


# ----------------------------------------------------------------------------- drift, output formats, progress


def test_parquet_output_carries_the_drift_check(tmp_path, model_file, capsys):
    pytest.importorskip("pyarrow")
    folder = tmp_path / "in"
    _drop_store(folder, "a.zarr", 100, 20)
    _drop_store(folder, "b.zarr", 100, 21)
    reference = tmp_path / "reference.npy"
    np.save(
        reference,
        list(_api_scores(_drop_store(tmp_path / "ref", "r.zarr", 400, 22), model_file).values()),
    )

    out = tmp_path / "scores.parquet"
    rc, stdout, stderr = _run(
        capsys, folder, "--model", model_file, "-o", out, "--reference-scores", reference
    )
    assert rc == 0 and "DriftWarning" not in stderr
    assert "drift check: PSI" in stdout and "no drift" in stdout
    drift = Table.read(out).meta["astrid_scores"]["drift"]
    assert drift["n"] == 200 and drift["n_reference"] == 400 and not drift["drifted"]

    # The same inputs against a reference of noisier stamps: drifted, warned, and an exit status on request.
    shifted = tmp_path / "shifted.npy"
    noisy = tmp_path / "noisy" / "r.zarr"
    write_triplets(_dataset(400, 23, "noisy", noise=20.0), noisy)
    np.save(shifted, list(_api_scores(noisy, model_file).values()))
    other = tmp_path / "other.parquet"
    rc, stdout, stderr = _run(
        capsys,
        folder,
        "--model",
        model_file,
        "-o",
        other,
        "--reference-scores",
        shifted,
        "--fail-on-drift",
    )
    assert rc == 3
    assert stderr.count("astrid: warning: DriftWarning") == 1 and "PSI" in stderr
    assert Table.read(other).meta["astrid_scores"]["drift"]["drifted"]


def test_progress_bar_only_on_a_terminal(tmp_path, model_file, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    folder = tmp_path / "in"
    _drop_store(folder, "a.zarr", 5, 30)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert (
        main(["score", str(folder), "--model", str(model_file), "-o", str(tmp_path / "a.ecsv")])
        == 0
    )
    assert "scoring" in terminal.getvalue() and "1/1" in terminal.getvalue()
    assert "astrid score: 5 candidate(s)" in capsys.readouterr().out
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert (
        main(
            ["score", str(folder), "--model", str(model_file), "-o", str(tmp_path / "b.ecsv"), "-q"]
        )
        == 0
    )
    assert quiet.getvalue() == "" and capsys.readouterr().out == ""
    monkeypatch.undo()
    # Not a terminal (capsys): no bar.
    rc, _, stderr = _run(capsys, folder, "--model", model_file, "-o", tmp_path / "c.ecsv")
    assert rc == 0 and "scoring" not in stderr


def test_fits_pairs_from_a_csv(tmp_path, model_file, capsys):
    from astrid.simulate import survey

    manifest = survey(
        tmp_path / "survey", n_fields=1, size=256, seed=3, n_stars=150, n_supernovae=3
    )
    pair = next(manifest.pairs())
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        f"name,reference,science\nnight1,{os.path.relpath(pair.reference, tmp_path)},"
        f"{os.path.relpath(pair.science, tmp_path)}\n"
    )
    out = tmp_path / "pairs.ecsv"
    rc, _, stderr = _run(capsys, "--pairs", csv, "--model", model_file, "-o", out)
    assert rc == 0, stderr
    table = Table.read(out)
    assert len(table) > 0 and set(table["input"]) == {"night1"} and set(table["pair"]) == {"night1"}
    assert np.all(np.isfinite(table["score"]))


# ----------------------------------------------------------------------------- bad input


def test_a_bad_input_is_reported_and_the_others_are_scored(tmp_path, model_file, capsys):
    folder = tmp_path / "in"
    _drop_store(folder, "good.zarr", 8, 40)
    bad = folder / "broken.avro"
    bad.write_bytes(b"Obj\x01 this is not an Avro file" * 10)
    out = tmp_path / "scores.ecsv"
    rc, stdout, stderr = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 1
    errors = [line for line in stderr.splitlines() if line.startswith("astrid: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in stderr
    assert "(1 failed)" in stdout and len(Table.read(out)) == 8
    assert _state(out)["inputs"][str(bad)]["status"] == "failed"
    # Not tried again while unchanged; tried again once it changes.
    rc, stdout, stderr = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 0 and "from 0 new input(s) (0 failed)" in stdout
    bad.write_bytes(b"still not Avro")
    rc, _, stderr = _run(capsys, folder, "--model", model_file, "-o", out)
    assert rc == 1 and str(bad) in stderr


@pytest.mark.parametrize(
    ("make_args", "match"),
    [
        (lambda t, m: [t / "missing", "--model", m], "missing: no such file or folder"),
        (lambda t, m: [t / "image.fits", "--model", m], "--pairs"),
        (lambda t, m: [t / "in", "--model", t / "nope.tflite"], "nope.tflite: no such model file"),
        (
            lambda t, m: [t / "in", "--model", m, "-o", t / "scores.csv"],
            "scores.csv: expected a .ecsv or .parquet",
        ),
        (lambda t, m: ["--model", m], "give alert files"),
        (
            lambda t, m: [t / "in", "--model", m, "--pairs", t / "bad_pairs.csv"],
            "columns reference and science",
        ),
        (lambda t, m: [t / "in", "--model", m, "--reference-scores", t / "none.npy"], "none.npy"),
        (lambda t, m: [t / "in", "--model", m, "--watch", "--interval", "0"], "--interval"),
        (lambda t, m: [t / "in", "--model", m, "-o", t / "image.fits" / "out.ecsv"], "image.fits"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, model_file, capsys, make_args, match):
    _drop_store(tmp_path / "in", "a.zarr", 3, 50)
    (tmp_path / "image.fits").write_bytes(b"SIMPLE  =")
    (tmp_path / "bad_pairs.csv").write_text("ref,sci\na.fits,b.fits\n")
    args = make_args(tmp_path, model_file)
    default_output = Path("scores.ecsv")
    existed = default_output.exists()
    if "-o" not in args:
        args += ["-o", tmp_path / "scores.ecsv"]
    rc, _, stderr = _run(capsys, *args)
    assert rc == 2
    assert not (tmp_path / "scores.ecsv").exists()  # nothing written for a refused call
    assert default_output.exists() == existed
    assert stderr.startswith("astrid: error:") and match in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_an_output_of_another_model_is_refused(tmp_path, model_file, capsys):
    _drop_store(tmp_path / "in", "a.zarr", 3, 60)
    out = tmp_path / "scores.ecsv"
    assert _run(capsys, tmp_path / "in", "--model", model_file, "-o", out)[0] == 0
    other = tmp_path / "other.keras"
    shutil.copy(model_file, other)
    with open(other, "ab") as fh:
        fh.write(b"\0")  # another file, another identity (zip archives tolerate trailing bytes)
    rc, _, stderr = _run(capsys, tmp_path / "in", "--model", other, "-o", out)
    assert rc == 2 and "another model" in stderr and "new --output" in stderr


# ----------------------------------------------------------------------------- ZTF's alerts and d6_m7


@pytest.mark.shared_data
def test_astrid_score_reproduces_drb_with_d6_m7(tmp_path, capsys):
    folder = shared_data("ztf_alerts", "fink-broker", "all_distribute_topics")
    model = shared_data("braai", "d6_m7.h5")
    if folder is None or model is None:
        pytest.skip("shared ZTF alerts or the d6_m7 model (../shared/data) are not present")
    files = sorted(glob.glob(str(folder / "*.avro")))
    scored, others = files[:150], files[150:]
    # The drift reference: ZTF's own d6_m7 scores (drb) of the other alerts of the folder.
    from astrid.alerts import read_alerts

    reference = tmp_path / "drb.npy"
    np.save(reference, read_alerts(others)["drb"].values)

    out = tmp_path / "alerts.ecsv"
    rc, stdout, stderr = _run(
        capsys, *scored, "--model", model, "-o", out, "--reference-scores", reference
    )
    assert rc == 0, stderr
    table = Table.read(out)
    assert len(table) == len(scored) and set(table["survey"]) == {"ZTF"}
    delta = np.abs(np.asarray(table["score"]) - np.asarray(table["drb"]))
    assert np.mean(delta < 1e-3) >= 0.99
    assert set(table["model"]) == {"d6_m7"}
    drift = table.meta["astrid_scores"]["drift"]
    assert not drift["drifted"] and drift["n"] == len(scored)  # held-out real alerts: quiet
    assert "no drift" in stdout and "DriftWarning" not in stderr
