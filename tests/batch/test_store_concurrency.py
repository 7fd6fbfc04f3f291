"""Stores under concurrent writers and interruption (issue 14: nothing lost).

Two processes append to one triplet store (Zarr and netCDF), 20 rounds each:
every append that returned must be in the store exactly once, no row torn,
and the store must load. The label store is killed at random moments while
writing: every label whose ``add`` returned is still there, and the file opens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from astrid.errors import AstridWarning
from astrid.widgets import LabelStore

pytest.importorskip("zarr")
pytest.importorskip("h5netcdf")

ROUNDS = 20

_APPENDER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from astrid.schema import new_triplet_dataset
    from astrid.triplets import write_triplets

    path, writer, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(abs(hash(writer)) % 2**32)
    for r in range(rounds):
        n = 2 + r % 3
        stamps = rng.normal(size=(n, 63, 63, 3)).astype(np.float32)
        ids = np.array([f"{writer}-{r}-{i}" for i in range(n)])
        ds = new_triplet_dataset(stamps, {"candidate_id": ids, "round": np.full(n, r)}, {"source": writer})
        write_triplets(ds, path, mode="a")
        # Only what returned is promised: report it after the call.
        print(" ".join(ids), flush=True)
    """
)


def _python_env():
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "error::UserWarning"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_two_processes_appending_lose_nothing(tmp_path, suffix):
    from astrid.triplets import load_triplets

    store = tmp_path / f"store{suffix}"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(store), name, str(ROUNDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_python_env(),
        )
        for name in ("A", "B")
    ]
    returned = []
    for proc in writers:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        returned += out.split()
    assert len(returned) == 2 * sum(2 + r % 3 for r in range(ROUNDS))

    ds = load_triplets(store)
    ids = [str(i) for i in ds["candidate_id"].values]
    assert "" not in ids
    assert sorted(ids) == sorted(returned)  # each exactly once
    # rows are whole: each id's stamps came with its own round number
    rounds = dict(zip(ids, ds["round"].values.tolist()))
    assert all(rounds[i] == int(i.split("-")[1]) for i in ids)
    assert np.isfinite(ds["triplets"].values).all()


_LABELLER = textwrap.dedent(
    """
    import sys
    from astrid.widgets import LabelStore

    store = LabelStore(sys.argv[1])
    start = int(sys.argv[2])
    for i in range(start, start + 100000):
        store.add(f"c{i}", ("real", "bogus", "skip")[i % 3], score=0.5)
        print(i, flush=True)
    """
)


@pytest.mark.slow
def test_label_store_killed_at_random_moments_keeps_every_returned_label(tmp_path):
    path = tmp_path / "labels.jsonl"
    rng = np.random.default_rng(14)
    promised: dict[str, str] = {}
    start = 0
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _LABELLER, str(path), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # let it start (imports) and then write for a random moment
        first = proc.stdout.readline()
        assert first.strip(), proc.stderr.read()
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        done = [int(first)] + [int(line) for line in out.split()]
        for i in done:
            promised[f"c{i}"] = ("real", "bogus", "skip")[i % 3]
        start = max(done) + 2  # the next writer starts past a possibly half-written label
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        store = LabelStore(
            path
        )  # a label torn by the kill is quarantined with a warning, never fatal
    assert all(issubclass(w.category, AstridWarning) for w in record)
    labels = store.labels
    missing = {k: v for k, v in promised.items() if labels.get(k) != v}
    assert not missing
    # and the file keeps every line that parses: nothing deleted or rewritten
    for line in path.read_bytes().splitlines():
        if line.endswith(b"}"):
            json.loads(line)


def test_two_label_stores_on_one_file_see_each_others_labels(tmp_path):
    path = tmp_path / "labels.jsonl"
    first, second = LabelStore(path), LabelStore(path)
    first.add("a", "real")
    second.add("b", "bogus")
    assert first.labels == {"a": "real", "b": "bogus"}
    assert second.labels == {"a": "real", "b": "bogus"}
    second.add("a", "bogus")  # relabelled elsewhere: the newest label wins everywhere
    assert first.labels["a"] == "bogus"
