"""The astrid command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from astrid.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "simulate" in out


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "astrid", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("astrid ")


def test_help_lists_score(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    out = capsys.readouterr().out
    assert "--model" in out and "--watch" in out and "--reference-scores" in out


def test_simulate_into_a_path_that_cannot_be_a_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rc = main(["simulate", str(blocker / "survey"), "--n-fields", "1", "--size", "128"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("astrid: error:") and str(blocker) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(13, "Permission denied", "/data/readonly/survey"),
        OSError(28, "No space left on device", "/data/full/survey/SIM0000_ref.fits"),
        FileExistsError(17, "File exists", "/data/a", "/data/b"),
    ],
)
def test_os_errors_of_any_command_are_one_line_naming_the_path(monkeypatch, capsys, error):
    import astrid.simulate

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(astrid.simulate, "survey", fail)
    rc = main(["simulate", "/data/readonly/survey"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("astrid: error:") and error.filename in err and error.strerror in err
    if error.filename2:
        assert error.filename2 in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_simulate_into_an_unwritable_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = main(["simulate", str(locked / "survey"), "--n-fields", "1", "--size", "128"])
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert rc == 2 and str(locked) in err and "Traceback" not in err


def test_warmup_compiles_the_chain_and_reports_each_step(capsys):
    from astrid.cli import main

    assert main(["warmup"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:7]] == [
        "[1/7] simulated pair",
        "[2/7] difference (ZOGY)",
        "[3/7] difference (ZOGY on tiles, 1024²)",
        "[4/7] difference (classic)",
        "[5/7] difference (fitted kernel)",
        "[6/7] candidates and triplets",
        "[7/7] braai preprocessing",
    ]
    assert lines[-1].startswith("numba kernels compiled and cached in")


def _compiled_signatures() -> dict[str, int]:
    """How many specialisations each of astrid's numba kernels has compiled in this process."""
    import sys

    from numba.core.registry import CPUDispatcher

    counts = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] != "astrid" or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, CPUDispatcher):
                counts[f"{name}.{attr}"] = len(value.signatures)
    return counts


def test_after_warmup_the_ordinary_chain_compiles_nothing():
    """A 1024² pair (ZOGY on tiles), its candidates and triplets, the kernel method: every
    specialisation they need is one warmup compiled (else every new process compiles it)."""
    import warnings

    import astrid
    from astrid.cli import main

    assert main(["warmup"]) == 0
    before = _compiled_signatures()
    pair = astrid.simulate.pair(size=1024, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = astrid.difference(pair.reference, pair.science)
        astrid.make_triplets(result, astrid.detect(result, threshold=5.0))
        astrid.difference(pair.reference, pair.science, method="kernel")
    after = _compiled_signatures()
    assert result.metrics["n_tiles"] > 1
    new = {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] > before.get(name, 0)
    }
    assert not new, f"compiled after warmup: {new}"
