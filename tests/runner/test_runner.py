"""Tests of astrid.runner: configuration, metrics, papermill batches on Dask, run records."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from astrid.errors import AstridFileError, AstridInputError
from astrid.runner import (
    METRICS_MIME_TYPE,
    RunConfig,
    cli_run,
    cli_runs,
    format_table,
    list_runs,
    params_slug,
    read_metrics,
    record_metrics,
    recorded_metrics,
    run,
    run_tasks,
)

NOTEBOOKS = Path(__file__).parent.parent / "data" / "notebooks"


@pytest.fixture
def notebooks(tmp_path):
    """The test notebooks copied to a temporary folder (they write files beside themselves)."""
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    return folder


def _needs_kernel():
    pytest.importorskip("papermill", reason="papermill (astrid[notebooks]) is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel (astrid[notebooks]) is not installed")


def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- configuration ----------------------------------------------------------
def test_params_slug_is_readable_safe_and_deterministic():
    assert params_slug({"target": "SIM0001", "filter": "r"}) == "target=SIM0001_filter=r"
    assert params_slug({}) == "default"
    assert params_slug({"threshold": 0.5, "flag": True}) == "threshold=0.5_flag=True"
    # separators and spaces cannot make a sub-folder or a broken name
    assert params_slug({"path": "../data/x y/z", "band": "g"}) == "path=..-data-x-y-z_band=g"
    long_values = {"targets": [f"SIM{i:04d}" for i in range(40)]}
    slug = params_slug(long_values)
    assert len(slug) <= 80
    assert slug == params_slug(dict(long_values))
    assert slug != params_slug({"targets": [f"SIM{i:04d}" for i in range(41)]})


def test_parameter_sets_are_the_cartesian_product_in_grid_order():
    config = RunConfig(
        notebooks=["a.ipynb"],
        parameters={"size": 256},
        grid={"target": ["T1", "T2"], "filter": ["g", "r"]},
    )
    sets = config.parameter_sets()
    assert [s.slug for s in sets] == [
        "target=T1_filter=g",
        "target=T1_filter=r",
        "target=T2_filter=g",
        "target=T2_filter=r",
    ]
    assert sets[1].parameters == {"size": 256, "target": "T1", "filter": "r"}
    assert sets[1].varying == {"target": "T1", "filter": "r"}


def test_values_that_clean_to_the_same_slug_get_distinct_names():
    config = RunConfig(notebooks=["a.ipynb"], grid={"field": ["a/b", "a b"]})
    slugs = [s.slug for s in config.parameter_sets()]
    assert len(set(slugs)) == 2
    assert all(slug.startswith("field=a-b_") for slug in slugs)


def test_config_from_yaml_and_defaults(tmp_path):
    path = _write_yaml(
        tmp_path / "batch.yaml",
        "notebooks: [notebooks/01_acquisition.ipynb, notebooks/02_alignment.ipynb]\n"
        "parameters: {size: 512}\n"
        "grid:\n  target: [SIM0001, SIM0002]\n  filter: [g, r]\n"
        "timeout: 600\n",
    )
    config = RunConfig.from_yaml(path)
    assert config.notebooks == ["notebooks/01_acquisition.ipynb", "notebooks/02_alignment.ipynb"]
    assert config.timeout == 600.0
    assert config.output_root == "papermill_runs"
    assert config.kernel_name is None and config.cwd is None and config.scheduler is None
    assert config.sequential_notebooks is True
    assert re.fullmatch(r"\d{8}T\d{6}Z", config.run_id)
    assert len(config.parameter_sets()) == 4
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"notebooks": ["a.ipynb"], "gird": {"x": [1]}},
            r"unknown setting\(s\) 'gird' \(did you mean 'grid'\?\)",
        ),
        ({"grid": {"x": [1]}}, "'notebooks' .* is required"),
        ({"notebooks": []}, "non-empty list"),
        ({"notebooks": ["analysis.py"]}, "not a path to an .ipynb"),
        ({"notebooks": ["a/x.ipynb", "b/x.ipynb"]}, "several notebooks named x"),
        (
            {"notebooks": ["a.ipynb"], "grid": {"target": "SIM0001"}},
            r"grid\['target'\] must be a non-empty list",
        ),
        ({"notebooks": ["a.ipynb"], "grid": {"target": [1, 1]}}, "repeats a value"),
        (
            {"notebooks": ["a.ipynb"], "parameters": {"x": 1}, "grid": {"x": [1, 2]}},
            "both in 'parameters' and in 'grid'",
        ),
        (
            {"notebooks": ["a.ipynb"], "parameters": {"not a name": 1}},
            "not a valid Python variable name",
        ),
        (
            {"notebooks": ["a.ipynb"], "parameters": {"x": object()}},
            "cannot be stored in the run record",
        ),
        ({"notebooks": ["a.ipynb"], "run_id": "../escape"}, "'run_id' '../escape' must be"),
        ({"notebooks": ["a.ipynb"], "timeout": -5}, "'timeout' must be a positive number"),
        ({"notebooks": ["a.ipynb"], "n_workers": 0}, "'n_workers' must be a positive integer"),
        (
            {"notebooks": ["a.ipynb"], "sequential_notebooks": "yes"},
            "'sequential_notebooks' must be true or false",
        ),
        (["a.ipynb"], "must be a mapping"),
    ],
)
def test_bad_configuration_is_a_clear_error(values, message):
    with pytest.raises(AstridInputError, match=message):
        RunConfig.from_dict(values)


def test_bad_yaml_files_are_clear_errors(tmp_path):
    with pytest.raises(AstridFileError, match="does not exist"):
        RunConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(AstridInputError, match="is empty"):
        RunConfig.from_yaml(_write_yaml(tmp_path / "empty.yaml", ""))
    with pytest.raises(AstridInputError, match="not valid YAML"):
        RunConfig.from_yaml(_write_yaml(tmp_path / "bad.yaml", "notebooks: [a.ipynb\n"))
    with pytest.raises(AstridInputError, match=r"bad2\.yaml: unknown setting"):
        RunConfig.from_yaml(
            _write_yaml(tmp_path / "bad2.yaml", "notebooks: [a.ipynb]\nworkers: 3\n")
        )


def test_missing_notebook_fails_before_anything_runs(tmp_path):
    config = RunConfig(
        notebooks=[str(tmp_path / "nope.ipynb")],
        output_root=str(tmp_path / "runs"),
        scheduler="sync",
    )
    with pytest.raises(AstridFileError, match="nope.ipynb: notebook does not exist"):
        run(config)
    assert not (tmp_path / "runs").exists()


def test_rerun_under_same_id_with_other_grid_is_refused(notebooks, tmp_path):
    root = tmp_path / "runs"
    (root / "r1").mkdir(parents=True)
    first = RunConfig(
        notebooks=[str(notebooks / "stage1.ipynb")],
        grid={"target": ["A"]},
        run_id="r1",
        output_root=str(root),
        scheduler="sync",
    )
    (root / "r1" / "run.json").write_text(
        json.dumps({"task_definition": first.task_definition(), "tasks": []})
    )
    changed = RunConfig(**{**first.to_dict(), "grid": {"target": ["A", "B"]}})
    with pytest.raises(AstridInputError, match="exists with other notebooks, parameters or grid"):
        run(changed)
    (root / "r1" / "run.json").write_text("{not json")
    with pytest.raises(AstridFileError, match="run record is unreadable"):
        run(first)


# -- metrics ----------------------------------------------------------------
def test_record_metrics_outside_a_kernel_returns_plain_values():
    stored = record_metrics(
        n_candidates=np.int64(12),
        purity=np.float32(0.5),
        fwhm=[np.float64(2.5), 3.0],
        undefined=float("nan"),
        name="SIM0001",
    )
    assert stored == {
        "n_candidates": 12,
        "purity": 0.5,
        "fwhm": [2.5, 3.0],
        "undefined": None,
        "name": "SIM0001",
    }
    assert type(stored["n_candidates"]) is int
    assert recorded_metrics()["n_candidates"] == 12
    with pytest.raises(AstridInputError, match="metric 'image' .* is not a number"):
        record_metrics(image=object())
    with pytest.raises(AstridInputError, match="at least one metric"):
        record_metrics()


def test_read_metrics_merges_outputs_in_cell_order(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    book = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell("")
    first.outputs = [
        nbformat.v4.new_output(
            "display_data", data={METRICS_MIME_TYPE: {"a": 1, "b": 2}, "text/plain": "x"}
        )
    ]
    second = nbformat.v4.new_code_cell("")
    second.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="hello"),
        nbformat.v4.new_output("display_data", data={METRICS_MIME_TYPE: {"b": 3}}),
    ]
    book.cells = [first, second]
    path = tmp_path / "done.ipynb"
    nbformat.write(book, path)
    assert read_metrics(path) == {"a": 1, "b": 3}
    assert read_metrics(book) == {"a": 1, "b": 3}
    with pytest.raises(AstridFileError, match="missing.ipynb: notebook does not exist"):
        read_metrics(tmp_path / "missing.ipynb")
    (tmp_path / "broken.ipynb").write_text("{")
    with pytest.raises(AstridFileError, match="not a readable notebook"):
        read_metrics(tmp_path / "broken.ipynb")


# -- run records ------------------------------------------------------------
def test_list_runs_of_an_empty_root(tmp_path, capsys):
    table = list_runs(tmp_path / "nothing")
    assert len(table) == 0
    assert {"run_id", "started", "n_ok", "n_failed"} <= set(table.colnames)
    assert format_table(table) == "no runs"
    assert cli_runs(["--root", str(tmp_path / "nothing")]) == 0
    assert "no runs under" in capsys.readouterr().out
    assert cli_runs(["missing-run", "--root", str(tmp_path)]) == 2
    assert "no run record" in capsys.readouterr().err


# -- batches that execute notebooks ---------------------------------------
def test_sync_batch_records_failures_skips_dependants_and_rerun_redoes_only_those(
    notebooks, tmp_path, capsys
):
    _needs_kernel()
    root = tmp_path / "runs"
    config_path = _write_yaml(
        tmp_path / "batch.yaml",
        f"notebooks: ['{notebooks / 'stage1.ipynb'}', '{notebooks / 'stage2.ipynb'}']\n"
        "parameters: {fail_on: B, scale: 2.0}\n"
        "grid: {target: [A, B]}\n"
        f"run_id: first\noutput_root: '{root}'\nscheduler: sync\ntimeout: 120\n",
    )
    seen = []
    result = run(config_path, on_task_done=seen.append)

    assert [(t.stem, t.slug) for t in result.tasks] == [
        ("stage1", "target=A"),
        ("stage1", "target=B"),
        ("stage2", "target=A"),
        ("stage2", "target=B"),
    ]
    assert [t.status for t in result.tasks] == ["ok", "failed", "ok", "skipped"]
    assert (result.n_ok, result.n_failed, result.n_skipped) == (2, 1, 1)
    assert len(seen) == 4
    ok, failed, after, skipped = result.tasks
    assert ok.error is None
    assert ok.output == root / "first" / "stage1" / "target=A.ipynb" and ok.output.is_file()
    assert ok.metrics == {"n_chars": 2.0, "target_name": "A", "stage1_done": True}
    assert "RuntimeError: failing on purpose for target B" in failed.error
    # the cells before the error ran: their metrics are kept, and so is the notebook
    assert failed.metrics == {"n_chars": 2.0, "target_name": "B"}
    assert failed.output.is_file()
    # stage2 read what stage1 wrote in the notebooks' folder: they ran in order, there
    assert (notebooks / "stage1_A.txt").read_text() == "2.0"
    assert after.metrics == {"stage2_value": 20.0}
    assert skipped.error == "stage1 failed for these parameters" and not skipped.output.exists()

    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["run_id"] == "first"
    assert manifest["config"]["grid"] == {"target": ["A", "B"]}
    assert manifest["versions"]["papermill"] and manifest["versions"]["astrid"]
    assert "git_commit" in manifest
    assert [t["status"] for t in manifest["tasks"]] == ["ok", "failed", "ok", "skipped"]
    assert manifest["tasks"][0]["output"] == "stage1/target=A.ipynb"
    assert manifest["tasks"][0]["parameters"] == {"fail_on": "B", "scale": 2.0, "target": "A"}
    assert manifest["tasks"][0]["duration_s"] > 0
    assert manifest["invocations"][0]["executor"] == "sync"

    runs = list_runs(root)
    assert list(runs["run_id"]) == ["first"]
    assert [runs[c][0] for c in ("n_tasks", "n_ok", "n_failed", "n_skipped")] == [4, 2, 1, 1]
    assert runs["n_chars_mean"][0] == pytest.approx(2.0)
    assert runs["stage2_value_mean"][0] == pytest.approx(20.0)
    tasks = run_tasks("first", root)
    assert list(tasks["target"]) == ["A", "B", "A", "B"]
    assert list(tasks["status"]) == ["ok", "failed", "ok", "skipped"]
    assert tasks["stage1_done"].mask.tolist() == [False, True, True, True]

    # Same run id again, through the command-line helper: what succeeded is kept,
    # stage1/B is executed again (and fails again), stage2/B is skipped again.
    first_start = ok.started
    assert cli_run([str(config_path)]) == 1
    out = capsys.readouterr().out
    assert "failed   stage1/target=B" in out and "skipped  stage2/target=B" in out
    assert "stage1/target=A" not in out and "stage2/target=A" not in out
    assert "2 ok (2 kept from before), 1 failed, 1 skipped" in out
    manifest = json.loads(result.manifest_path.read_text())
    assert [t["attempts"] for t in manifest["tasks"]] == [1, 2, 1, 0]
    assert manifest["tasks"][0]["started"] == first_start
    assert len(manifest["invocations"]) == 2 and manifest["invocations"][1]["n_executed"] == 1

    assert cli_runs(["--root", str(root)]) == 0
    assert "first" in capsys.readouterr().out


@pytest.mark.slow
def test_local_cluster_runs_tasks_on_dask_workers(notebooks, tmp_path):
    _needs_kernel()
    pytest.importorskip("distributed", reason="distributed (astrid[dask]) is not installed")
    config = RunConfig(
        notebooks=[str(notebooks / "stage1.ipynb")],
        grid={"target": ["A", "BB"]},
        run_id="cluster",
        output_root=str(tmp_path / "runs"),
        n_workers=2,
        timeout=120,
    )
    result = run(config)
    assert [t.status for t in result.tasks] == ["ok", "ok"], [t.error for t in result.tasks]
    assert [t.metrics["n_chars"] for t in result.tasks] == [1.0, 2.0]
    assert all(t.output.is_file() for t in result.tasks)
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["invocations"][0]["executor"] == "LocalCluster(2 workers)"
    assert list_runs(config.output_root)["n_ok"][0] == 2


# -- each notebook gets only the parameters its parameters cell declares ----
def _notebook_declaring(path: Path, source: str) -> Path:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print('ran')")]
    nbformat.write(nb, str(path))
    return path


def test_a_parameter_no_notebook_declares_is_refused_with_the_closest_name(tmp_path):
    first = _notebook_declaring(tmp_path / "a.ipynb", "size = 1\n")
    second = _notebook_declaring(tmp_path / "b.ipynb", "scale = 1.0\n")
    config = {
        "notebooks": [str(first), str(second)],
        "parameters": {"size": 2, "scal": 3.0},
        "output_root": str(tmp_path / "runs"),
        "scheduler": "sync",
    }
    with pytest.raises(AstridInputError, match=r"'scal' is declared by none.*did you mean 'scale'"):
        run(config)
    assert not (tmp_path / "runs").exists()


def test_each_notebook_is_given_only_its_declared_parameters(tmp_path):
    _needs_kernel()
    nbformat = pytest.importorskip("nbformat")
    first = _notebook_declaring(tmp_path / "a.ipynb", "size = 1\n")
    second = _notebook_declaring(tmp_path / "b.ipynb", "size = 1\nscale = 1.0\n")
    config = {
        "notebooks": [str(first), str(second)],
        "parameters": {"size": 2, "scale": 3.0},
        "output_root": str(tmp_path / "runs"),
        "run_id": "r",
        "scheduler": "sync",
        "timeout": 120,
    }
    result = run(config)
    assert [t.status for t in result.tasks] == ["ok", "ok"]
    injected = {}
    for task in result.tasks:
        cells = nbformat.read(str(task.output), as_version=4).cells
        injected[task.stem] = next(
            c.source for c in cells if "injected-parameters" in c.metadata.get("tags", [])
        )
    assert "size = 2" in injected["a"] and "scale" not in injected["a"]
    assert "size = 2" in injected["b"] and "scale = 3.0" in injected["b"]
