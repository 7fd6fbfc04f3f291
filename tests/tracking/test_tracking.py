"""MLflow experiment tracking: a tiny braai training logged and read back with MLflow's own client."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from astrid import tracking
from astrid.errors import AstridWarning

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A tracking store in tmp_path, never ./mlruns of the repo."""
    monkeypatch.setenv("ASTRID_MLFLOW_URI", str(tmp_path / "mlruns"))
    monkeypatch.delenv("ASTRID_TRACKING", raising=False)
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "mlruns"


def test_uri_and_switches(tmp_path, monkeypatch):
    monkeypatch.delenv("ASTRID_MLFLOW_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri() == "http://tracking.example:5000"
    monkeypatch.setenv("ASTRID_MLFLOW_URI", str(tmp_path / "elsewhere"))
    assert tracking.tracking_uri().endswith("/elsewhere/mlflow.db")  # AstrID's own variable wins
    monkeypatch.setenv("ASTRID_TRACKING", "off")
    assert not tracking.tracking_enabled()
    assert tracking.tracking_enabled(True)  # an explicit argument wins over the environment
    monkeypatch.setenv("ASTRID_TRACKING", "on")
    assert tracking.tracking_enabled() and not tracking.tracking_enabled(False)


def test_generic_run_logs_and_closes(store):
    with tracking.training_run(
        "generic", params={"a": 1, "nested": {"b": "x"}}, tags={"astrid.kind": "test"}
    ) as run:
        assert run.active
        run.log_metrics({"loss": 0.5, "skipped": float("nan"), "flag": True}, step=1)
        run.log_dict({"k": 1}, "extra/info.json")
    client = mlflow.MlflowClient(tracking.tracking_uri())
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "generic"
    assert got.data.params == {"a": "1", "nested.b": "x"}
    assert got.data.metrics == {"loss": 0.5}
    assert got.data.tags["astrid.kind"] == "test"
    assert [a.path for a in client.list_artifacts(run.run_id, "extra")] == ["extra/info.json"]
    with pytest.raises(RuntimeError):
        with tracking.training_run("broken") as failed:
            raise RuntimeError("boom")
    assert client.get_run(failed.run_id).info.status == "FAILED"


def test_unreachable_store_warns_and_goes_on(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ASTRID_MLFLOW_URI", str(blocker / "mlruns"))  # cannot be created
    with pytest.warns(AstridWarning, match="could not start"):
        with tracking.training_run("nowhere", track=True) as run:
            pass
    assert not run.active and run.info() is None
    run.log_metrics({"x": 1.0})  # no-ops, no errors


def test_off_writes_nothing(store, monkeypatch):
    monkeypatch.setenv("ASTRID_TRACKING", "off")
    with tracking.training_run("quiet") as run:
        run.log_metrics({"x": 1.0})
    assert not run.active and not store.exists()


tf = pytest.importorskip("tensorflow")


def tiny_triplets(n=40, seed=0):
    from astrid.schema import new_triplet_dataset

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:63, :63] - 31
    blob = np.exp(-0.5 * (xx**2 + yy**2) / 1.6**2)
    stamps = rng.normal(0.0, 1.0, size=(n, 63, 63, 3)).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.int8)
    stamps[labels == 1, :, :, 0] += 6 * blob
    stamps[labels == 1, :, :, 2] += 6 * blob
    fields = np.array(
        [f"f{(i // 2) % 4}" for i in range(n)], dtype=object
    )  # both classes per field
    return new_triplet_dataset(stamps, {"label": labels, "field": fields})


@pytest.fixture
def tracked_training(store, tmp_path):
    from astrid.braai import TrainConfig, train

    ds = tiny_triplets()
    result = train(
        ds,
        "three_block",
        config=TrainConfig(epochs=2, batch_size=16, seed=0, patience=None),
        out_dir=tmp_path / "model",
        name="tiny",
    )
    return ds, result


def test_train_logs_params_metrics_artifacts(tracked_training):
    from astrid.braai import dataset_hash

    ds, result = tracked_training
    card = json.loads(result.card_path.read_text())
    info = card["mlflow"]
    assert info == result.card["mlflow"] and info["run_id"]
    assert info["tracking_uri"] == tracking.tracking_uri()
    client = mlflow.MlflowClient(info["tracking_uri"])
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    assert experiment.experiment_id == info["experiment_id"]
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`astrid.kind` = 'braai-train'"
    )
    assert [r.info.run_id for r in runs] == [info["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    params = run.data.params
    assert (
        params["architecture"] == "ThreeBlock"
        and params["epochs"] == "2"
        and params["batch_size"] == "16"
    )
    assert params["calibration"] == "temperature" and params["n_train"] == str(
        card["data"]["n_train"]
    )
    tags = run.data.tags
    assert (
        tags["data_sha256"]
        == card["data"]["sha256"]
        == dataset_hash(
            ds.isel(
                candidate=np.flatnonzero(
                    ~np.isin(ds["field"].values, card["data"]["validation_groups"])
                )
            )
        )
    )
    assert tags["model_sha256"] == card["model_sha256"]
    assert tags["version.astrid"] == card["versions"]["astrid"]
    assert tags["version.tensorflow"] == card["versions"]["tensorflow"]
    history = client.get_metric_history(info["run_id"], "val_loss")
    assert [m.step for m in history] == [1, 2]
    np.testing.assert_allclose([m.value for m in history], card["history"]["val_loss"], rtol=1e-6)
    assert run.data.metrics["calibration_temperature"] == pytest.approx(
        card["calibration"]["temperature"]
    )
    assert run.data.metrics["final_roc_auc"] == pytest.approx(card["metrics"]["roc_auc"])
    top = {a.path for a in client.list_artifacts(info["run_id"])}
    assert {"model", "figures", "calibration.json"} <= top
    assert {a.path for a in client.list_artifacts(info["run_id"], "model")} == {
        "model/tiny.keras",
        "model/tiny.card.json",
    }
    assert {a.path for a in client.list_artifacts(info["run_id"], "figures")} == {
        "figures/roc_pr.png",
        "figures/reliability.png",
    }
    # the logged card is the saved card, byte for byte
    (result.card_path.parent.parent / "back").mkdir()
    local = client.download_artifacts(
        info["run_id"], "model/tiny.card.json", str(result.card_path.parent.parent / "back")
    )
    assert Path(local).read_text() == result.card_path.read_text()


def test_train_untracked_writes_nothing(store, tmp_path):
    from astrid.braai import TrainConfig, train

    result = train(
        tiny_triplets(24, seed=1), "three_block", config=TrainConfig(epochs=1, seed=0), track=False
    )
    assert result.card["mlflow"] is None and not store.exists()


def test_tracking_failure_keeps_the_model(store, tmp_path, monkeypatch):
    from astrid.braai import TrainConfig, train

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    # MLflow itself fails to store an artefact (the model file): TrackedRun must warn and carry on.
    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", broken)
    with warnings.catch_warnings(
        record=True
    ) as caught:  # (pytest.warns would re-raise Keras' own warnings)
        warnings.simplefilter("always")
        result = train(
            tiny_triplets(24, seed=2),
            "three_block",
            config=TrainConfig(epochs=1, seed=0),
            out_dir=tmp_path / "m",
            name="kept",
        )
    assert [
        str(w.message)
        for w in caught
        if issubclass(w.category, AstridWarning) and "disk full" in str(w.message)
    ]
    assert result.model_path.is_file() and result.card_path.is_file()
    assert result.card["mlflow"]["run_id"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = (
            mlflow.MlflowClient(tracking.tracking_uri())
            .get_run(result.card["mlflow"]["run_id"])
            .info.status
        )
    # the failure closed the run as FAILED and switched its tracking off
    assert status == "FAILED"


# --------------------------------------------------------------------------- #
# astrid run: one MLflow run per papermill task, trainings inside as children
# --------------------------------------------------------------------------- #


def _notebook(path, body):
    nbformat = pytest.importorskip("nbformat")
    book = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('target = "A"')
    params.metadata["tags"] = ["parameters"]
    book.cells = [params, nbformat.v4.new_code_cell(body)]
    book.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(book, path)
    return path


def test_runner_logs_each_task_and_links_child_runs(store, tmp_path, capsys):
    pytest.importorskip("papermill")
    pytest.importorskip("ipykernel")
    from astrid.runner import RunConfig, cli_runs, run, run_tasks

    book = _notebook(
        tmp_path / "child.ipynb",
        (
            "from astrid import tracking\n"
            "from astrid.runner import record_metrics\n"
            "with tracking.training_run(f'inner-{target}', params={'target': target}) as inner:\n"
            "    inner.log_metrics({'score': 0.25})\n"
            "record_metrics(n=3.0)\n"
            "if target == 'B':\n"
            "    raise RuntimeError('failing on purpose')\n"
        ),
    )
    config = RunConfig(
        notebooks=[str(book)],
        grid={"target": ["A", "B"]},
        run_id="tracked",
        output_root=str(tmp_path / "runs"),
        scheduler="sync",
        timeout=120,
    )
    result = run(config)
    assert [t.status for t in result.tasks] == ["ok", "failed"]
    assert all(t.mlflow_run for t in result.tasks)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    for task, status in zip(result.tasks, ("FINISHED", "FAILED")):
        parent = client.get_run(task.mlflow_run)
        assert parent.info.status == status and parent.info.run_name == f"child/{task.slug}"
        assert parent.data.params["target"] == task.parameters["target"]
        assert (
            parent.data.tags["astrid.run_id"] == "tracked"
            and parent.data.tags["astrid.status"] == task.status
        )
        assert parent.data.metrics["duration_s"] == pytest.approx(task.duration_s)
        assert parent.data.metrics["n"] == 3.0
        assert [a.path for a in client.list_artifacts(task.mlflow_run, "notebook")][0].endswith(
            f"{task.slug}.ipynb"
        )
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{task.mlflow_run}'",
        )
        assert [c.info.run_name for c in children] == [f"inner-{task.parameters['target']}"]
    record = json.loads(result.manifest_path.read_text())
    assert [t["mlflow_run"] for t in record["tasks"]] == [t.mlflow_run for t in result.tasks]
    assert list(run_tasks("tracked", tmp_path / "runs")["mlflow_run"]) == [
        t.mlflow_run for t in result.tasks
    ]
    capsys.readouterr()
    assert cli_runs(["tracked", "--root", str(tmp_path / "runs"), "--mlflow"]) == 0
    shown = capsys.readouterr().out
    assert (
        result.tasks[0].mlflow_run in shown and max(len(line) for line in shown.splitlines()) <= 100
    )
    assert cli_runs(["tracked", "--root", str(tmp_path / "runs")]) == 0
    assert result.tasks[0].mlflow_run not in capsys.readouterr().out


def test_unet_training_is_tracked_with_its_model_and_card(store, tmp_path):
    pytest.importorskip("tensorflow")
    from astrid.anomaly import UNetTrainingOptions, train_unet

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.3, (8, 32, 32, 4)).astype(np.float32)
    y = np.zeros((8, 32, 32, 2), np.float32)
    y[:, 14:18, 14:18, 0] = 1.0
    y[..., 1] = 1.0
    options = UNetTrainingOptions(filters=(4, 8, 16), epochs=2, batch_size=4)
    result = train_unet(
        (x, y), options, validation=(x[:4], y[:4]), out_dir=tmp_path / "models", name="tiny_unet"
    )
    info = result.card["mlflow"]
    assert info is not None
    client = mlflow.MlflowClient(info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["astrid.kind"] == "unet-train"
    assert run.data.params["epochs"] == "2" and run.data.params["n_train"] == "8"
    assert (
        len(client.get_metric_history(info["run_id"], "val_loss"))
        == result.card["training"]["epochs_run"]
    )
    assert {a.path for a in client.list_artifacts(info["run_id"], "model")} == {
        "model/tiny_unet.keras",
        "model/tiny_unet.card.json",
    }
