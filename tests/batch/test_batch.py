"""astrid.batch: survey-wide differencing on Dask, crash safety and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")

from astrid.batch import (  # noqa: E402
    BATCH_MANIFEST_NAME,
    BatchOptions,
    PairTask,
    default_layout,
    get_client,
    process_pairs,
    run_pair,
    store_pairs,
    testing,
    thread_env,
    thread_limits,
    verify_pair_outputs,
)
from astrid.batch.testing import STORE_PAIRS_ATTR  # noqa: E402
from astrid.diffim import DifferenceOptions  # noqa: E402
from astrid.diffim.options import BackgroundOptions  # noqa: E402
from astrid.errors import AstridFileError, AstridInputError, AstridWarning  # noqa: E402
from astrid.manifest import Manifest  # noqa: E402
from astrid.triplets import load_triplets  # noqa: E402

N_FIELDS = 5


@pytest.fixture(scope="module")
def survey_dir(tmp_path_factory) -> Path:
    """Five small simulated pairs (256 px, enough stars for a measured PSF)."""
    from astrid.simulate import survey

    root = tmp_path_factory.mktemp("survey")
    manifest = survey(root, n_fields=N_FIELDS, size=256, seed=3, n_stars=150, n_supernovae=3)
    # Compile the numba kernels once here, so the worker processes load them
    # from the cache instead of each compiling them at the same time.
    pair = next(manifest.pairs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstridWarning)
        run_pair(
            PairTask(
                pair=pair,
                pair_dir=root.parent / "warm" / pair.name,
                threshold=5.0,
                difference_options={},
                threads=1,
                fingerprint="warm-up",
            )
        )
    return root


@pytest.fixture(scope="module")
def client():
    with get_client(n_workers=2, threads_per_worker=1) as client:
        yield client


@pytest.fixture(scope="module")
def finished(survey_dir, client, tmp_path_factory) -> Path:
    """Outputs of a complete batch over the first three pairs (copy before changing them)."""
    out = tmp_path_factory.mktemp("finished")
    pairs = list(Manifest.load(survey_dir).pairs())[:3]
    report = process_pairs(pairs, out, client, progress=False)
    assert report.counts["done"] == 3, report.table
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _store_counts(store: Path) -> dict[str, int]:
    ds = load_triplets(store)
    try:
        names, counts = np.unique(ds["pair"].values.astype(str), return_counts=True)
        assert len(set(ds["candidate_id"].values.tolist())) == ds.sizes["candidate"]
    finally:
        ds.close()
    return dict(zip(names.tolist(), counts.tolist()))


def _check_complete(report, out: Path) -> None:
    """Every pair done with valid outputs, and in the store exactly once."""
    counts = _store_counts(report.triplet_store)
    for row in report.table:
        ok, reason, marker = verify_pair_outputs(out / row["pair"], row["pair"])
        assert ok, f"{row['pair']}: {reason}"
        assert counts.get(row["pair"], 0) == marker["n_candidates"] == row["n_candidates"]
        assert row["quality"] == marker["metrics"]["quality"] and row["quality"] in (
            "pass",
            "warn",
            "fail",
        )
    assert set(counts) <= set(report.table["pair"])


# ----------------------------------------------------------------------------- the batch end to end


@pytest.mark.slow
def test_batch_survives_a_killed_worker_and_a_rerun_does_nothing(survey_dir, client, tmp_path):
    out = tmp_path / "run"
    killed = {}

    def kill_a_busy_worker(client, record):
        if killed:
            return
        busy = [address for address, keys in client.processing().items() if keys]
        assert busy, "no worker was busy after the first result: nothing to kill"
        address = busy[0]
        killed["address"] = address
        killed["pid"] = client.run(os.getpid, workers=[address])[address]
        killed["keys"] = client.processing()[address]
        killed["time"] = time.time()
        os.kill(killed["pid"], signal.SIGKILL)  # the local cluster's worker processes are ours

    with testing.on_result(kill_a_busy_worker):
        report = process_pairs(survey_dir, out, client, progress=False)

    assert killed, "the hook never ran"
    assert report.counts == {"done": N_FIELDS, "resumed": 0, "skipped": 0, "failed": 0}, (
        report.table
    )
    _check_complete(report, out)
    # The pair that the killed worker held was rerun by another worker process
    # (unless it had finished in the instant before the kill).
    lost = [
        row["pair"]
        for row in report.table
        if any(row["pair"] in str(key) for key in killed["keys"])
    ]
    assert lost
    for name in lost:
        marker = json.loads((out / name / "done.json").read_text())
        assert marker["pid"] != killed["pid"] or marker["finished_unix"] <= killed["time"]
    manifest = json.loads((out / BATCH_MANIFEST_NAME).read_text())
    assert {r["status"] for r in manifest["pairs"].values()} == {"done"}
    assert np.isfinite(report.pairs_per_minute) and report.pairs_per_minute > 0

    size_before = _store_counts(report.triplet_store)
    again = process_pairs(survey_dir, out, client, progress=False)
    assert again.counts["skipped"] == N_FIELDS
    assert again.n_processed == 0
    assert _store_counts(again.triplet_store) == size_before


def test_truncated_fits_is_redone_and_not_appended_twice(finished, survey_dir, client, tmp_path):
    out = _copy(finished, tmp_path / "run")
    before = _store_counts(out / "triplets.zarr")
    victim = sorted(before)[1]
    fits_path = out / victim / "difference.fits"
    data = fits_path.read_bytes()
    fits_path.write_bytes(data[: len(data) // 2])
    assert not verify_pair_outputs(out / victim, victim)[0]

    pairs = [p for p in Manifest.load(survey_dir).pairs() if p.name in before]
    report = process_pairs(pairs, out, client, progress=False)
    status = dict(zip(report.table["pair"], report.table["status"]))
    assert status[victim] == "done"
    assert all(s == "skipped" for name, s in status.items() if name != victim)
    reason = report.table[list(report.table["pair"]).index(victim)]["reason"]
    assert "difference.fits: size" in reason and "not appended again" in reason
    assert _store_counts(out / "triplets.zarr") == before
    assert verify_pair_outputs(out / victim, victim)[0]


@pytest.mark.parametrize("damage", ["no marker", "bad marker", "edited candidates"])
def test_partial_outputs_are_detected(finished, tmp_path, damage):
    out = _copy(finished, tmp_path / "run")
    name = sorted(_store_counts(out / "triplets.zarr"))[0]
    pair_dir = out / name
    assert verify_pair_outputs(pair_dir, name)[0]
    if damage == "no marker":
        (pair_dir / "done.json").unlink()
        expected = "no done.json"
    elif damage == "bad marker":
        (pair_dir / "done.json").write_text("{ truncated")
        expected = "unreadable"
    else:
        text = (pair_dir / "candidates.ecsv").read_text()
        (pair_dir / "candidates.ecsv").write_text(text.replace("e", "E", 1))
        expected = "checksum"
    ok, reason, _ = verify_pair_outputs(pair_dir, name)
    assert not ok and expected in reason
    # Sizes only: an edit of the same length goes unnoticed, a missing marker does not.
    ok_size, _, _ = verify_pair_outputs(pair_dir, name, checksum=False)
    assert ok_size == (damage == "edited candidates")


def test_failing_pair_is_recorded_and_the_others_complete(survey_dir, client, tmp_path):
    survey = _copy(survey_dir, tmp_path / "survey")
    pairs = list(Manifest.load(survey).pairs())[:3]
    bad = pairs[1]
    bad.science.write_bytes(b"this is not a FITS file" * 200)
    out = tmp_path / "run"

    report = process_pairs(pairs, out, client, progress=False)
    assert report.counts["failed"] == 1 and report.counts["done"] == 2
    assert not report.ok
    failed = report.failed
    assert list(failed["pair"]) == [bad.name]
    assert str(bad.science) in failed["error"][0] and "AstridFileError" in failed["error"][0]
    record = json.loads(report.manifest_path.read_text())["pairs"][bad.name]
    assert record["status"] == "failed"
    assert (
        "Traceback (most recent call last)" in record["traceback"]
        and "read_image" in record["traceback"]
    )
    counts = _store_counts(report.triplet_store)
    assert bad.name not in counts and len(counts) == 2
    assert not (out / bad.name / "done.json").exists()

    # A rerun tries the failed pair again and skips the others.
    again = process_pairs(pairs, out, client, progress=False, options=BatchOptions(retries=0))
    status = dict(zip(again.table["pair"], again.table["status"]))
    assert status == {pairs[0].name: "skipped", bad.name: "failed", pairs[2].name: "skipped"}


@pytest.mark.slow
def test_scheduler_address(survey_dir, tmp_path):
    pair = list(Manifest.load(survey_dir).pairs())[3]
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},
    ) as cluster:
        report = process_pairs(
            [pair], tmp_path / "run", scheduler=cluster.scheduler_address, progress=False
        )
        assert report.counts["done"] == 1, report.table
        assert report.n_workers == 1 and report.threads_per_worker >= 1
        # The client was closed, the cluster it connected to was not.
        with get_client(cluster, threads_per_worker=1) as client:  # a cluster object works too
            assert len(client.scheduler_info()["workers"]) == 1
            assert client.run(os.getenv, "ASTRID_THREADS") == {
                address: "1" for address in client.scheduler_info()["workers"]
            }
    _check_complete(report, tmp_path / "run")


@pytest.mark.slow
def test_progress_bar_and_default_local_cluster(survey_dir, tmp_path, capsys):
    pair = list(Manifest.load(survey_dir).pairs())[4]
    report = process_pairs([pair], tmp_path / "run", progress=True, threads_per_worker=1)
    assert report.counts["done"] == 1
    assert report.n_workers == 1  # capped at the number of pairs to run
    assert "pairs" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resume without a cluster


def test_outputs_not_yet_committed_are_resumed_without_recomputing(finished, survey_dir, tmp_path):
    out = _copy(finished, tmp_path / "run")
    before = _store_counts(out / "triplets.zarr")
    shutil.rmtree(out / "triplets.zarr")  # as if the client died before committing
    pairs = [p for p in Manifest.load(survey_dir).pairs() if p.name in before]
    # No client: a batch with nothing to compute must not start a cluster.
    report = process_pairs(pairs, out, progress=False)
    assert report.counts["resumed"] == len(before)
    assert report.n_processed == 0 and report.n_workers is None
    assert _store_counts(out / "triplets.zarr") == before


def test_crash_between_append_and_pair_list_does_not_duplicate(finished, survey_dir, tmp_path):
    import zarr

    out = _copy(finished, tmp_path / "run")
    store = out / "triplets.zarr"
    before = _store_counts(store)
    assert store_pairs(store) == set(before)
    group = zarr.open_group(store, mode="r+")
    group.attrs.update({STORE_PAIRS_ATTR: []})  # the append landed, the pair list did not
    assert store_pairs(store) == set(before)  # recovered from the rows' pair coordinate

    pairs = [p for p in Manifest.load(survey_dir).pairs() if p.name in before]
    report = process_pairs(pairs, out, progress=False)
    assert report.counts["skipped"] == len(before)
    assert _store_counts(store) == before
    assert sorted(zarr.open_group(store, mode="r").attrs[STORE_PAIRS_ATTR]) == sorted(before)


def test_one_bad_pair_does_not_block_a_grouped_commit(finished, survey_dir, tmp_path):
    out = _copy(finished, tmp_path / "run")
    before = _store_counts(out / "triplets.zarr")
    shutil.rmtree(out / "triplets.zarr")
    pairs = [p for p in Manifest.load(survey_dir).pairs() if p.name in before]
    # The second pair claims one candidate more than its triplets hold.
    items = [(pair, before[pair.name] + (i == 1), {}) for i, pair in enumerate(pairs)]
    committed: set[str] = set()
    outcome = {
        pair.name: error
        for pair, _, error in testing.commit_in_groups(
            out / "triplets.zarr", committed, "fp", out, items
        )
    }
    assert outcome[pairs[0].name] is None and outcome[pairs[2].name] is None
    assert "records" in outcome[pairs[1].name]
    assert committed == {pairs[0].name, pairs[2].name}
    assert _store_counts(out / "triplets.zarr") == {name: before[name] for name in committed}


def test_difference_options_as_a_dataclass_or_spelled_out_defaults_fingerprint_alike(
    finished, survey_dir, tmp_path
):
    out = _copy(finished, tmp_path / "run")
    pairs = list(Manifest.load(survey_dir).pairs())[:3]
    options = BatchOptions(difference=DifferenceOptions())
    report = process_pairs(pairs, out, options=options, box_size=64, progress=False)
    assert report.counts["skipped"] == 3, report.table


def test_real_kinds_decide_the_labels_and_the_fingerprint(finished, survey_dir, client, tmp_path):
    pairs = list(Manifest.load(survey_dir).pairs())[:3]
    out = _copy(finished, tmp_path / "run")
    # The default spelled out is the same batch: nothing to redo.
    default = BatchOptions(real_kinds=["supernova", "variable"])
    assert process_pairs(pairs, out, client, options=default, progress=False).counts["skipped"] == 3
    wider = BatchOptions(real_kinds=("supernova", "variable", "asteroid", "cosmic_ray"))
    with pytest.raises(AstridInputError, match="other options"):
        process_pairs(pairs, out, client, options=wider, progress=False)
    report = process_pairs(pairs[:1], tmp_path / "wider", client, options=wider, progress=False)
    assert report.counts["done"] == 1, report.table
    before, after = load_triplets(out / "triplets.zarr"), load_triplets(report.triplet_store)
    before = before.isel(
        candidate=np.flatnonzero(before["pair"].values.astype(str) == pairs[0].name)
    )
    assert list(after["candidate_id"].values) == list(before["candidate_id"].values)
    kinds = after["kind"].values.astype(str)
    now_real = np.isin(kinds, ["asteroid", "cosmic_ray"])
    assert (kinds == "cosmic_ray").any()
    assert (after["label"].values[now_real] == 1).all()
    assert (before["label"].values[now_real] == 0).all()
    np.testing.assert_array_equal(
        after["label"].values[~now_real], before["label"].values[~now_real]
    )


def test_other_options_on_the_same_out_dir_are_refused(finished, survey_dir, tmp_path):
    out = _copy(finished, tmp_path / "run")
    with pytest.raises(AstridInputError, match="other options"):
        process_pairs(survey_dir, out, threshold=7.0, progress=False)


def test_changed_input_files_are_not_taken_for_done(survey_dir, client, tmp_path):
    survey = _copy(survey_dir, tmp_path / "survey")
    pairs = list(Manifest.load(survey).pairs())[:2]
    out = tmp_path / "run"
    assert process_pairs(pairs, out, client, progress=False).counts["done"] == 2
    marker = json.loads((out / pairs[0].name / "done.json").read_text())
    assert marker["inputs"]["science"]["size"] == pairs[0].science.stat().st_size

    # A re-downloaded science image (same name, new file): its old outputs are stale.
    stat = pairs[0].science.stat()
    os.utime(pairs[0].science, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    # Its triplets are already in the (append-only) store: refused, nothing overwritten.
    with pytest.raises(AstridInputError, match="input files of 1 pair"):
        process_pairs(pairs, out, client, progress=False)
    # Not yet in the store (the client died before committing): that pair runs again, the other resumes.
    shutil.rmtree(out / "triplets.zarr")
    report = process_pairs(pairs, out, client, progress=False)
    status = {row["pair"]: (row["status"], row["reason"]) for row in report.table}
    assert status[pairs[0].name][0] == "done" and "inputs changed" in status[pairs[0].name][1]
    assert "science" in status[pairs[0].name][1]
    assert status[pairs[1].name][0] == "resumed"
    _check_complete(report, out)
    # And now it is current.
    assert process_pairs(pairs, out, client, progress=False).counts["skipped"] == 2


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bogus_option": 1}, "unknown difference option"),
        ({"box_sise": 32}, "did you mean 'box_size'"),
        ({"options": BatchOptions(difference={"box_size": 32})}, "astrid.DifferenceOptions"),
        (
            {
                "options": BatchOptions(
                    difference=DifferenceOptions(background=BackgroundOptions(box_size=2))
                )
            },
            "box_size",
        ),
        ({"options": BatchOptions(verify="maybe")}, "verify"),
        ({"options": BatchOptions(retries=-1)}, "retries"),
        ({"options": BatchOptions(real_kinds=())}, "real_kinds"),
        ({"options": BatchOptions(real_kinds=("supernova", 3))}, "real_kinds"),
        ({"options": {"retries": 0}}, "expected astrid.batch.BatchOptions"),
        ({"threshold": 0.0}, "threshold"),
        ({"n_workers": 0}, "n_workers"),
        ({"scheduler": "tcp://127.0.0.1:1", "client": object()}, "either client or scheduler"),
        ({"model": "missing.tflite"}, "no such model file"),
        ({"model": object()}, "save a Keras model"),
        ({"options": BatchOptions(reference=[0.5, 0.6])}, "needs a model"),
    ],
)
def test_bad_arguments(survey_dir, tmp_path, kwargs, match):
    client = kwargs.pop("client", None)
    with pytest.raises(AstridInputError, match=match):
        process_pairs(survey_dir, tmp_path / "run", client, progress=False, **kwargs)


def test_bad_inputs(tmp_path):
    with pytest.raises(AstridInputError, match="SurveyPair"):
        process_pairs(["a.fits"], tmp_path / "run", progress=False)
    with pytest.raises(AstridInputError, match="no manifest.json"):
        process_pairs(tmp_path, tmp_path / "run", progress=False)


def test_foreign_triplet_store_is_refused(survey_dir, tmp_path):
    import astrid
    from astrid.triplets import detect, make_triplets, write_triplets

    out = tmp_path / "run"
    (out / "empty.zarr").mkdir(parents=True)
    with pytest.raises(AstridFileError, match="not a readable Zarr store"):
        process_pairs(
            survey_dir, out, options=BatchOptions(triplet_store="empty.zarr"), progress=False
        )
    # Triplets written by hand carry no pair coordinate: which pairs they hold is unknown.
    pair = next(Manifest.load(survey_dir).pairs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstridWarning)
        result = astrid.difference(pair.reference, pair.science)
    candidates = detect(result, 5.0)
    assert len(candidates)
    write_triplets(make_triplets(result, candidates), out / "triplets.zarr")
    with pytest.raises(AstridFileError, match="without a 'pair' coordinate"):
        process_pairs(survey_dir, out, progress=False)


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(AstridInputError, match="cannot connect"):
        get_client("tcp://127.0.0.1:9", timeout="1s")


# ----------------------------------------------------------------------------- threads


def test_default_layout_fills_the_cores_once():
    assert default_layout(cores=8) == (8, 1)
    assert default_layout(n_workers=2, cores=8) == (2, 4)
    assert default_layout(threads_per_worker=4, cores=8) == (2, 4)
    assert default_layout(n_workers=3, threads_per_worker=2, cores=8) == (3, 2)
    assert default_layout(n_workers=16, cores=8) == (16, 1)
    with pytest.warns(AstridWarning, match="compete for cores"):
        default_layout(n_workers=4, threads_per_worker=4, cores=8)
    with pytest.raises(AstridInputError, match="threads_per_worker"):
        default_layout(threads_per_worker=1.5)


def test_workers_get_their_thread_limits(client):
    env = thread_env(1)
    assert env["OMP_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "ASTRID_THREADS"):
        values = client.run(os.getenv, variable)
        assert set(values.values()) == {"1"}, variable
    from astrid.batch import cluster_threads

    assert cluster_threads(client) == 1
    assert {info["nthreads"] for info in client.scheduler_info()["workers"].values()} == {1}


def test_thread_limits_restore_numba():
    import numba
    import scipy.fft

    before = numba.get_num_threads()
    with thread_limits(1):
        assert numba.get_num_threads() == 1
        assert scipy.fft.get_workers() == 1
    assert numba.get_num_threads() == before


# ----------------------------------------------------------------------------- scoring on the workers


class _Interrupted(Exception):
    """The client 'dies' after the first pair's result."""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A seeded two-layer Keras CNN exported to a dynamic-batch float TFLite file (workers need only LiteRT)."""
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from astrid.export import to_tflite

    keras.utils.set_random_seed(0)
    inputs = keras.Input((63, 63, 3))
    hidden = keras.layers.Conv2D(2, 5, strides=4, activation="relu")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    net = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden), name="tiny")
    path = tmp_path_factory.mktemp("model") / "tiny.tflite"
    to_tflite(net, path, quantize=None, batch_size=None)
    return path


def _wait_until_idle(client, timeout: float = 120.0) -> None:
    def executing(dask_worker):
        return dask_worker.state.executing_count

    deadline = time.monotonic() + timeout
    # A task between states (assigned, not yet executing) counts too: the scheduler's
    # processing lists hold it until its worker reports back.
    while any(client.run(executing).values()) or any(client.processing().values()):
        assert time.monotonic() < deadline, "workers still busy"
        time.sleep(0.1)


def _scored_at(out: Path, names) -> dict[str, float]:
    return {
        name: json.loads((out / name / "done.json").read_text())["model"]["scored_unix"]
        for name in names
    }


def test_scores_on_the_workers_equal_scoring_afterwards_and_a_restart_scores_each_candidate_once(
    survey_dir, client, tiny_model, tmp_path
):
    from astrid.drift import DriftWarning
    from astrid.score import score

    pairs = list(Manifest.load(survey_dir).pairs())[:3]
    out = tmp_path / "run"

    def die_after_first(client, record):
        raise _Interrupted

    with pytest.raises(_Interrupted), testing.on_result(die_after_first):
        process_pairs(pairs, out, client, progress=False, model=tiny_model)
    _wait_until_idle(
        client
    )  # a cancelled task already running finishes on its worker, as after a real crash
    first = {p.name for p in pairs if (out / p.name / "done.json").exists()}
    assert first, "no pair finished before the interruption"
    scored_before = _scored_at(out, first)

    report = process_pairs(pairs, out, client, progress=False, model=tiny_model)
    assert (
        report.ok
        and report.counts["done"] + report.counts["resumed"] + report.counts["skipped"] == 3
    )
    # Pairs scored before the restart were not scored again.
    assert _scored_at(out, first) == scored_before
    # Each pair is scored by exactly one run: pairs that finished before the restart were not
    # run again; the others ran now (done) or were finished by a task of the interrupted run.
    assert report.n_scored == report.counts["done"] <= 3 - len(first)
    table = report.scores
    counts = _store_counts(report.triplet_store)
    ids = table["candidate_id"].tolist()
    assert len(ids) == len(set(ids)) == sum(counts.values())  # every candidate scored exactly once
    meta = table.meta["astrid_scores"]
    assert meta["model"]["model_sha256"] == table["model_sha256"][0]
    assert (
        meta["model"]["model"] == "tiny" and meta["drift"] is None
    )  # no card beside the model: no reference

    # The same scores as scoring the store's triplets afterwards.
    ds = load_triplets(report.triplet_store)
    try:
        after = score(ds, tiny_model)
    finally:
        ds.close()
    by_id = dict(zip(after["candidate_id"].values.astype(str).tolist(), after.values.tolist()))
    np.testing.assert_allclose(np.asarray(table["score"]), [by_id[i] for i in ids], atol=1e-6)

    # Nothing left to do: no pair scored again, the scores are the same.
    again = process_pairs(
        pairs,
        out,
        client,
        progress=False,
        model=tiny_model,
        options=BatchOptions(reference=np.asarray(table["score"])),
    )
    assert again.counts["skipped"] == 3 and again.n_scored == 0
    assert again.scores["candidate_id"].tolist() == ids
    # Compared with its own scores the batch does not drift ...
    assert again.drift.psi < 0.01 and not again.drift.drifted
    assert again.scores.meta["astrid_scores"]["drift"]["psi"] == pytest.approx(
        again.drift.psi, abs=1e-6
    )
    # ... compared with a distribution it does not share, it does.
    shifted = np.clip(np.asarray(table["score"]) + 0.3, 0, 1)
    with pytest.warns(DriftWarning, match="PSI"):
        drifted = process_pairs(
            pairs,
            out,
            client,
            progress=False,
            model=tiny_model,
            options=BatchOptions(reference=shifted),
        )
    assert drifted.drift.drifted and drifted.drift.psi > 0.25


def test_a_model_added_later_scores_without_differencing_again(
    finished, survey_dir, client, tiny_model, tmp_path
):
    out = _copy(finished, tmp_path / "run")
    before = _store_counts(out / "triplets.zarr")
    timings = {
        name: json.loads((out / name / "done.json").read_text())["timings"] for name in before
    }
    pairs = [p for p in Manifest.load(survey_dir).pairs() if p.name in before]
    report = process_pairs(pairs, out, client, progress=False, model=tiny_model)
    assert report.counts["done"] == len(before) and report.n_scored == len(before)
    assert set(report.table["reason"]) == {
        "not scored yet; already in the triplet store, not appended again"
    }
    for name in before:
        marker = json.loads((out / name / "done.json").read_text())
        assert "scores.ecsv" in marker["outputs"] and marker["model"]["model"] == "tiny"
        assert (
            marker["timings"]["difference_s"] == timings[name]["difference_s"]
        )  # not differenced again
        assert verify_pair_outputs(out / name, name)[0]
    assert _store_counts(out / "triplets.zarr") == before
    assert len(report.scores) == sum(before.values())
