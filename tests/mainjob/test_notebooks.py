"""The numbered notebooks: stored clean, and executed with small parameters through papermill.

``pytest --nbval-lax --nbval-current-env notebooks/`` runs them once more with
their stored (small) defaults; see docs/figures.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from astrid.mainjob import NOTEBOOKS, REPO_ROOT
from astrid.paths import shared_data

pytest.importorskip("papermill")

FIGURES = (
    "survey_pair",
    "difference_zogy",
    "scorr_histogram",
    "zogy_vs_classic",
    "completeness",
    "triplet_examples",
    "training_history",
    "roc_pr",
    "calibration",
    "score_histograms",
    "int8_vs_float",
)


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    return cells[0]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: Path(p).stem)
def test_notebook_is_stored_clean(notebook):
    nb = nbformat.read(REPO_ROOT / notebook, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                "store notebooks without outputs"
            )
    params = _parameters_cell(nb).source
    for name in ("root", "data_dir", "figures_dir"):
        assert f"\n{name} = " in f"\n{params}", f"parameter {name} missing"
    assert 'root = ".."' in params  # the repository root seen from notebooks/
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "record_metrics(" in "".join(c.source for c in nb.cells if c.cell_type == "code")


def test_defaults_stay_small():
    """nbval runs the stored defaults in CI: they must be small; the main job passes larger ones."""
    namespace = {}
    for notebook in NOTEBOOKS:
        exec(_parameters_cell(nbformat.read(REPO_ROOT / notebook, as_version=4)).source, namespace)
    assert namespace["n_fields"] <= 4 and namespace["size"] <= 512 and namespace["epochs"] <= 2
    assert namespace["data_dir"] == "data/small" and namespace["figures_dir"] == "figures/small"


def test_shared_parameters_mean_the_same_everywhere():
    """The runner gives every notebook the same parameters: a name declared by several notebooks
    must have one default (a detection threshold in sigma and a score threshold cannot share a name)."""
    defaults = {}
    for notebook in NOTEBOOKS:
        namespace = {}
        exec(_parameters_cell(nbformat.read(REPO_ROOT / notebook, as_version=4)).source, namespace)
        for name, value in namespace.items():
            if name != "__builtins__":
                defaults.setdefault(name, {})[Path(notebook).stem] = value
    clashes = {
        name: by_nb
        for name, by_nb in defaults.items()
        if len({repr(v) for v in by_nb.values()}) > 1
    }
    assert not clashes


@pytest.mark.slow
def test_papermill_batch_of_two_parameter_sets(tmp_path):
    """One notebook, a grid of two parameter sets: both executed, recorded in run.json and list_runs."""
    from astrid.runner import list_runs, load_run, params_slug, run, run_tasks

    runs = tmp_path / "runs"
    result = run(
        {
            "notebooks": [str(REPO_ROOT / NOTEBOOKS[0])],
            "parameters": {
                "root": str(tmp_path),
                "data_dir": "data",
                "figures_dir": "figures",
                "size": 128,
                "n_supernovae": 3,
            },
            "grid": {"n_fields": [1, 2]},
            "run_id": "two-sets",
            "output_root": str(runs),
            "scheduler": "sync",  # both write one survey folder: one after the other
            "timeout": 300,
        }
    )
    assert result.ok, [t.error for t in result.tasks]
    assert [t.slug for t in result.tasks] == [params_slug({"n_fields": n}) for n in (1, 2)]
    for task in result.tasks:
        assert task.output == runs / "two-sets" / "01_acquisition" / f"{task.slug}.ipynb"
        assert task.output.is_file()
    record = load_run("two-sets", runs)
    assert [t["status"] for t in record["tasks"]] == ["ok", "ok"]
    assert [t["metrics"]["n_pairs"] for t in record["tasks"]] == [1, 2]
    assert [t["parameters"]["n_fields"] for t in record["tasks"]] == [1, 2]
    runs_table = list_runs(runs)
    (row,) = runs_table[runs_table["run_id"] == "two-sets"]
    assert (row["n_tasks"], row["n_ok"], row["n_failed"]) == (2, 2, 0)
    assert row["n_pairs_mean"] == pytest.approx(1.5)
    tasks = run_tasks("two-sets", runs)
    assert list(tasks["n_fields"]) == [1, 2] and list(tasks["status"]) == ["ok", "ok"]
    assert (tmp_path / "figures" / "survey_pair.png").is_file()


@pytest.mark.slow
def test_main_job_small_runs_every_notebook(tmp_path):
    """The whole chain 01-08 with configs/ci_small.yaml: every notebook ok, every paper figure written."""
    from astrid.mainjob import run_main_job
    from astrid.runner import list_runs

    result = run_main_job(small=True, root=tmp_path, run_id="ci")
    failed = {t.stem: t.error for t in result.tasks if t.status != "ok"}
    assert result.ok, f"notebooks failed: {failed} (executed notebooks under {result.run_dir})"
    assert [t.stem for t in result.tasks] == [Path(nb).stem for nb in NOTEBOOKS]
    metrics = {t.stem: t.metrics for t in result.tasks}
    assert metrics["01_acquisition"]["n_pairs"] == 4
    assert (
        metrics["02_differencing"]["n_failed"] == 0
        and metrics["02_differencing"]["n_candidates"] > 0
    )
    assert metrics["03_triplets"]["n_train"] > 0 and metrics["03_triplets"]["n_test"] > 0
    assert 0.0 <= metrics["04_training"]["roc_auc"] <= 1.0
    # with the shared real data there, the model also trains on real backgrounds and is scored
    # against ZTF's drb (evaluation only)
    with_real = None not in (shared_data("ztf_alerts"), shared_data("images", "ztf_quadrant"))
    assert metrics["04_training"]["real_backgrounds"] is bool(with_real)
    if with_real:
        assert 0.0 <= metrics["04_training"]["roc_auc_drb"] <= 1.0
    assert metrics["05_edgetpu_export"]["edgetpu_static_check"] is True
    assert metrics["06_paper_figures"]["n_figures"] == len(FIGURES)
    assert (
        metrics["07_anomaly"]["n_methods"] >= 5
        and 0.0 <= metrics["07_anomaly"]["unet_recall"] <= 1.0
    )
    # 12 per round; one more round when the first batch held one class only
    assert (
        metrics["08_active_learning"]["n_queried"] % 12 == 0
        and metrics["08_active_learning"]["n_human_labels"] > 0
    )
    figures_dir = tmp_path / "figures" / "ci_small"
    for name in FIGURES:
        for suffix in (".pdf", ".png"):
            assert (figures_dir / f"{name}{suffix}").stat().st_size > 0, f"{name}{suffix} missing"
    for name in ("anomaly_methods", "anomaly_map", "anomaly_types"):  # notebook 07's
        assert (figures_dir / f"{name}.png").stat().st_size > 0, f"{name}.png missing"
    data = tmp_path / "data" / "ci_small"
    for path in (
        "anomaly/anomaly_table.ecsv",
        "models/unet_anomaly.keras",
        "survey/manifest.json",
        "detail/zogy.fits",
        "detail/classic.fits",
        "triplets/train.zarr",
        "models/vgg6.keras",
        "models/vgg6.card.json",
        "evaluation/evaluation.json",
        "export/vgg6_int8.tflite",
        "export/int8_vs_float.ecsv",
    ):
        assert (data / path).exists(), path
    assert (
        json.loads((data / "export" / "parity.json").read_text())["n"]
        == metrics["04_training"]["n_test"]
    )
    runs = list_runs(tmp_path / "papermill_runs")
    assert list(runs["run_id"]) == ["ci"] and runs["n_ok"][0] == len(NOTEBOOKS)

    # Notebook 08 again, one candidate per round: a label file holding one class cannot be
    # fine-tuned on, so the simulated labeller goes on until it holds both.
    from astrid.mainjob import main_job_config
    from astrid.runner import run

    small = main_job_config(small=True, root=tmp_path, run_id="ci").parameters
    again = run(
        {
            "notebooks": [str(REPO_ROOT / NOTEBOOKS[-1])],
            "parameters": {
                **{
                    k: small[k]
                    for k in ("data_dir", "figures_dir", "model_name", "fine_tune_epochs")
                    if k in small
                },
                "root": str(tmp_path),
                "labels_file": "labels/one_per_round.jsonl",
                "n_query": 1,
                "strategy": "uncertainty",
                "retrospective_kind": "none",
            },
            "run_id": "one-per-round",
            "output_root": str(tmp_path / "papermill_runs"),
            "scheduler": "sync",
            "timeout": 600,
        }
    )
    assert again.ok, [t.error for t in again.tasks]
    (task,) = again.tasks
    assert 1 < task.metrics["n_queried"] == task.metrics["n_human_labels"]
    votes = [
        json.loads(line)
        for line in (data / "labels" / "one_per_round.jsonl").read_text().splitlines()
    ]
    assert {v["label"] for v in votes} == {"real", "bogus"}
