"""The main job's configuration: configs/main_job.yaml, configs/ci_small.yaml and run_main_job's plumbing.

Executing the notebooks is tested in tests/mainjob/test_notebooks.py (marked slow).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from astrid import mainjob
from astrid.errors import AstridFileError, AstridInputError
from astrid.mainjob import (
    CI_SMALL_CONFIG,
    MAIN_JOB_CONFIG,
    NOTEBOOKS,
    REPO_ROOT,
    main_job_config,
    run_main_job,
)
from astrid.runner import RunConfig


def test_both_configs_are_valid_run_configs():
    for path in (MAIN_JOB_CONFIG, CI_SMALL_CONFIG):
        config = RunConfig.from_yaml(path)  # what `astrid run configs/...yaml` reads
        assert config.notebooks == list(NOTEBOOKS)
        assert config.grid == {}


def test_main_job_parameters_are_bigger_than_ci():
    main = RunConfig.from_yaml(MAIN_JOB_CONFIG).parameters
    small = RunConfig.from_yaml(CI_SMALL_CONFIG).parameters
    assert main["figures_dir"] == "figures"
    assert main["data_dir"] != small["data_dir"] and main["figures_dir"] != small["figures_dir"]
    assert main["n_fields"] * main["size"] ** 2 > 10 * small["n_fields"] * small["size"] ** 2
    assert main["epochs"] > small["epochs"]


def test_every_parameter_is_one_a_notebook_declares():
    import nbformat

    declared = set()
    for notebook in NOTEBOOKS:
        nb = nbformat.read(REPO_ROOT / notebook, as_version=4)
        (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        declared |= {
            line.split("=")[0].strip()
            for line in cell.source.splitlines()
            if "=" in line and not line.lstrip().startswith("#")
        }
    for path in (MAIN_JOB_CONFIG, CI_SMALL_CONFIG):
        unknown = set(RunConfig.from_yaml(path).parameters) - declared
        assert not unknown, f"{path.name} sets parameters no notebook declares: {unknown}"


def test_training_seeds_config_trains_like_the_main_job():
    """configs/demo_training_seeds.yaml reruns notebook 04 with the main job's training parameters."""
    seeds = RunConfig.from_yaml(REPO_ROOT / "configs" / "demo_training_seeds.yaml")
    main = RunConfig.from_yaml(MAIN_JOB_CONFIG).parameters
    assert seeds.notebooks == ["notebooks/04_training.ipynb"]
    assert seeds.grid == {"seed": [0, 1, 2]}
    own = {"figures_dir", "model_name"}  # so the main job's model and figures are not replaced
    for name, value in seeds.parameters.items():
        if name not in own:
            assert main[name] == value, name
    assert all(seeds.parameters[name] != main[name] for name in own)
    assert "{seed}" in seeds.parameters["model_name"]  # notebook 04 keeps one model per seed
    training = ("epochs", "patience", "batch_size", "validation_fraction", "n_background_triplets")
    assert set(training) <= set(seeds.parameters)


def test_config_paths_are_absolute(tmp_path):
    config = main_job_config(small=True, root=tmp_path, run_id="ci-test")
    assert config.run_id == "ci-test"
    assert all(Path(nb).is_absolute() and Path(nb).is_file() for nb in config.notebooks)
    assert config.parameters["root"] == str(tmp_path.resolve())
    assert config.output_root == str(tmp_path.resolve() / "papermill_runs")
    assert config.parameters["data_dir"] == "data/ci_small"


def test_defaults_write_into_the_repository():
    config = main_job_config()
    assert config.parameters["root"] == str(REPO_ROOT)
    assert config.output_root == str(REPO_ROOT / "papermill_runs")
    assert config.run_id.startswith("main-")
    assert main_job_config(small=True).run_id.startswith("ci-small-")


def test_overrides(tmp_path):
    config = main_job_config(
        {"notebooks": [NOTEBOOKS[0]], "parameters": {"n_fields": 1, "root": "sub"}},
        output_root=tmp_path / "runs",
        scheduler="tcp://127.0.0.1:8786",
    )
    assert config.notebooks == [str(REPO_ROOT / NOTEBOOKS[0])]
    assert config.parameters["root"] == str(
        REPO_ROOT / "sub"
    )  # relative roots are taken from the repository
    assert config.output_root == str(tmp_path / "runs")
    assert config.scheduler == "tcp://127.0.0.1:8786"


def test_bad_configurations(tmp_path):
    with pytest.raises(AstridInputError, match="not both"):
        main_job_config(MAIN_JOB_CONFIG, small=True)
    with pytest.raises(AstridFileError, match="does not exist"):
        main_job_config(tmp_path / "missing.yaml")
    with pytest.raises(AstridFileError, match="notebook notebooks/99_missing.ipynb does not exist"):
        main_job_config({"notebooks": ["notebooks/99_missing.ipynb"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("notebooks: [a\n")
    with pytest.raises(AstridInputError, match="not valid YAML"):
        main_job_config(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(AstridInputError, match="mapping"):
        main_job_config(bad)
    with pytest.raises(AstridInputError, match="unknown setting"):
        main_job_config({"notebooks": [NOTEBOOKS[0]], "epochs": 3})
    with pytest.raises(AstridInputError, match="YAML path or a dict"):
        main_job_config(42)


def test_run_main_job_hands_the_config_to_the_runner(monkeypatch, tmp_path):
    seen = {}

    def fake_run(config, client=None, on_task_done=None):
        seen.update(config=config, client=client, on_task_done=on_task_done)
        return "result"

    monkeypatch.setattr("astrid.runner.run", fake_run)
    callback = print
    assert run_main_job(small=True, root=tmp_path, run_id="x", on_task_done=callback) == "result"
    assert seen["config"].run_id == "x" and seen["on_task_done"] is callback
    assert seen["config"].parameters["root"] == str(tmp_path.resolve())
    assert mainjob.__all__  # the module documents its public names
