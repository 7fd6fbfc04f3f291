"""Active learning: inspector labels merged into triplets with provenance, query strategies, fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from astrid.braai import (
    TrainConfig,
    apply_labels,
    fine_tune,
    label_conflicts,
    query,
    training_labels,
)
from astrid.errors import AstridFileError, AstridInputError, AstridWarning
from astrid.schema import new_triplet_dataset
from astrid.triplets import load_triplets, write_triplets
from astrid.widgets import LabelRecord, LabelStore


def tiny_triplets(n=24, seed=0, size=63):
    """Real: a blob in science and difference; bogus: a one-pixel spike."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size // 2
    stamps = rng.normal(0.0, 1.0, size=(n, size, size, 3)).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.int8)
    kinds = np.empty(n, dtype=object)
    blob = np.exp(-0.5 * (xx**2 + yy**2) / 1.6**2)
    for i in range(n):
        if labels[i]:
            stamps[i, :, :, 0] += 6 * blob
            stamps[i, :, :, 2] += 6 * blob
            kinds[i] = "supernova"
        else:
            stamps[i, size // 2, size // 2, 2] += 12
            kinds[i] = "cosmic_ray"
    stamps[..., :2] += 50.0
    fields = np.array([f"f{i % 3}" for i in range(n)], dtype=object)
    return new_triplet_dataset(stamps, {"label": labels, "kind": kinds, "field": fields})


@pytest.fixture
def ds():
    return tiny_triplets()


def _ids(ds):
    return [str(v) for v in ds["candidate_id"].values]


# --------------------------------------------------------------------------- #
# label records and apply_labels
# --------------------------------------------------------------------------- #


def test_old_label_files_still_read(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(
        '{"candidate_id": "a", "label": "real", "time": "2026-01-01T00:00:00.000Z", "score": 0.4}\n'
    )
    store = LabelStore(path, labeller="ann", model="vgg6 sha256:00")
    assert store.history[0].labeller is None and store.history[0].model is None
    store.add("b", "bogus", score=0.6)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert "labeller" not in lines[0]  # the old line is untouched
    assert lines[1]["labeller"] == "ann" and lines[1]["model"] == "vgg6 sha256:00"
    assert LabelStore(path).history[1] == store.history[1]


def test_inspector_labels_appear_in_merged_triplets_with_provenance(ds, tmp_path):
    pytest.importorskip("ipywidgets")
    from astrid.widgets import TripletInspector

    scores = np.linspace(0.05, 0.95, ds.sizes["candidate"])
    inspector = TripletInspector(
        ds,
        scores=scores,
        labels_path=tmp_path / "l.jsonl",
        labeller="ann",
        model="vgg6-sim sha256:abcd",
    )
    ids = _ids(ds)
    inspector.label("real", ids[1])
    inspector.label("bogus", ids[2])
    inspector.label("skip", ids[3])
    merged = apply_labels(ds, tmp_path / "l.jsonl")
    human = merged["human_label"].values
    assert human[1] == 1 and human[2] == 0 and human[3] == -1 and human[0] == -1
    assert merged["human_label_by"].values[1] == "ann"
    assert merged["human_label_model"].values[2] == "vgg6-sim sha256:abcd"
    assert merged["human_label_time"].values[1].endswith("Z")
    votes = json.loads(merged["human_votes"].values[1])
    assert votes[0]["score"] == pytest.approx(scores[1]) and votes[0]["source"] == "l.jsonl"
    np.testing.assert_array_equal(merged["label"].values, ds["label"].values)  # the original kept
    summary = json.loads(merged.attrs["human_labels"])
    assert (summary["n_real"], summary["n_bogus"], summary["n_votes"]) == (1, 1, 3)


def test_apply_twice_changes_nothing(ds, tmp_path):
    store = LabelStore(tmp_path / "l.jsonl", labeller="ann")
    ids = _ids(ds)
    store.add(ids[0], "real")
    store.add(ids[1], "bogus")
    once = apply_labels(ds, store)
    xr.testing.assert_identical(once, apply_labels(once, store))
    xr.testing.assert_identical(once, apply_labels(once, tmp_path / "l.jsonl"))
    # A later label adds to the history; the earlier one stays in human_votes.
    store.add(ids[0], "bogus")
    again = apply_labels(once, store)
    assert again["human_label"].values[0] == 0
    assert [v["label"] for v in json.loads(again["human_votes"].values[0])] == ["real", "bogus"]


def test_conflicting_labels_kept_and_reported(ds, tmp_path):
    ids = _ids(ds)
    ann = LabelStore(tmp_path / "ann.jsonl", labeller="ann")
    bob = LabelStore(tmp_path / "bob.jsonl", labeller="bob")
    ann.add(ids[4], "real")
    bob.add(ids[4], "bogus")
    ann.add(ids[5], "real")
    bob.add(ids[5], "real")
    with pytest.warns(AstridWarning, match="1 candidate.*conflicting"):
        merged = apply_labels(ds, [ann, bob])
    assert merged["human_label_conflict"].values[4] and merged["human_label"].values[4] == -1
    assert merged["human_label"].values[5] == 1 and merged["human_label_by"].values[5] == "ann,bob"
    table = label_conflicts(merged)
    assert sorted(table["labeller"]) == ["ann", "bob"] and set(table["candidate_id"]) == {ids[4]}
    assert set(training_labels(merged)["candidate_id"].values) == {ids[5]}
    # The conflicting candidate is not proposed again by query.
    assert ids[4] not in {
        ids[i] for i in query(np.full(len(ids), 0.5), merged, 30, strategy="uncertainty")
    }


def test_merged_store_written_to_a_new_store(ds, tmp_path):
    source = write_triplets(ds, tmp_path / "t.zarr")
    records = [LabelRecord(_ids(ds)[0], "real", "2026-01-01T00:00:00.000Z", labeller="ann")]
    with pytest.raises(AstridInputError, match="append-only"):
        apply_labels(source, records, out=source)
    apply_labels(source, records, out=tmp_path / "merged.zarr")
    back = load_triplets(tmp_path / "merged.zarr")
    assert int(back["human_label"].values[0]) == 1
    assert "human_label" not in load_triplets(source).variables  # the source store is untouched


def test_apply_labels_bad_inputs(ds, tmp_path):
    with pytest.raises(AstridFileError, match="does not exist"):
        apply_labels(ds, tmp_path / "missing.jsonl")
    with pytest.raises(AstridInputError, match="is not one of"):
        apply_labels(ds, [{"candidate_id": "x", "label": "maybe", "time": "t"}])
    with pytest.raises(AstridInputError, match="labels: expected"):
        apply_labels(ds, 42)
    with pytest.raises(AstridInputError, match="triplets"):
        apply_labels({"a": 1}, [])
    with pytest.raises(AstridInputError, match="apply_labels"):
        training_labels(ds)


# --------------------------------------------------------------------------- #
# query strategies
# --------------------------------------------------------------------------- #


def test_uncertainty_picks_the_half_way_scores(ds):
    scores = np.linspace(0.0, 1.0, ds.sizes["candidate"])
    scores[7], scores[15] = 0.5, 0.52
    picked = query(scores, ds, 2, strategy="uncertainty")
    assert sorted(picked.tolist()) == [7, 15]
    assert query(scores, ds, 2, strategy="entropy").tolist() == picked.tolist()


def test_bald_picks_disagreement(ds):
    n = ds.sizes["candidate"]
    members = np.tile(np.where(np.arange(n) % 2, 0.9, 0.1), (4, 1))
    members[:, 3] = [0.05, 0.95, 0.05, 0.95]  # mean 0.5 and the members disagree
    members[:, 6] = 0.5  # mean 0.5 but they agree: uncertain, not disagreeing
    assert query(members, ds, 1, strategy="bald")[0] == 3
    with pytest.raises(AstridInputError, match="several members"):
        query(members[0], ds, 1, strategy="bald")


def test_diversity_spreads_over_artefacts():
    ds = tiny_triplets(40)
    # Twenty near-copies of one artefact at the most uncertain scores, then the other candidates.
    stamps = ds["triplets"].values.copy()
    stamps[:20] = stamps[0] + np.random.default_rng(1).normal(0, 0.01, stamps[:20].shape).astype(
        np.float32
    )
    ds = ds.copy(data={"triplets": stamps, "valid": ds["valid"].values})
    scores = np.r_[np.full(20, 0.5), np.linspace(0.3, 0.45, 20)]
    uncertain = query(scores, ds, 5, strategy="uncertainty")
    diverse = query(scores, ds, 5, strategy="diversity", pool_factor=8)
    assert (uncertain < 20).all()  # uncertainty alone: five copies of one artefact
    assert (diverse < 20).sum() == 1  # diversity: one copy, the rest elsewhere


def test_random_is_reproducible_and_skips_labelled(ds):
    ids = _ids(ds)
    merged = apply_labels(ds, [LabelRecord(ids[0], "real", "2026-01-01T00:00:00Z", labeller="ann")])
    first = query(None, merged, 10, strategy="random", seed=3)
    assert first.tolist() == query(None, merged, 10, strategy="random", seed=3).tolist()
    assert first.tolist() != query(None, merged, 10, strategy="random", seed=4).tolist()
    assert 0 not in first and len(set(first.tolist())) == 10
    assert 1 not in query(None, merged, 23, strategy="random", exclude=[ids[1]])


def test_query_bad_inputs(ds):
    with pytest.raises(AstridInputError, match="strategy"):
        query(np.zeros(24), ds, 2, strategy="best")
    with pytest.raises(AstridInputError, match="n="):
        query(np.zeros(24), ds, 0)
    with pytest.raises(AstridInputError, match="shape"):
        query(np.zeros(5), ds, 2)
    with pytest.raises(AstridInputError, match=r"\[0, 1\]"):
        query(np.full(24, 3.0), ds, 2)
    with pytest.raises(AstridInputError, match="needs scores"):
        query(None, ds, 2, strategy="uncertainty")


# --------------------------------------------------------------------------- #
# fine-tuning
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from astrid.braai import train

    out = tmp_path_factory.mktemp("parent")
    result = train(
        tiny_triplets(48, seed=1),
        "vgg6",
        config=TrainConfig(split=None, epochs=1),
        out_dir=out,
        name="parent",
        track=False,
    )
    return result.model_path


def test_fine_tuned_card_names_parent_and_labels(ds, parent, tmp_path):
    import hashlib

    from astrid.braai import load_trained

    ids = _ids(ds)
    store = LabelStore(tmp_path / "l.jsonl", labeller="ann", model=parent)
    for i in range(8):
        store.add(ids[i], "real" if i % 2 else "bogus")
    result = fine_tune(
        parent, ds, store, config=TrainConfig(epochs=1, split=None), out_dir=tmp_path, track=False
    )
    provenance = json.loads(result.card_path.read_text())["provenance"]
    assert provenance["kind"] == "fine_tune"
    assert provenance["parent"]["name"] == "parent"
    assert provenance["parent"]["sha256"] == hashlib.sha256(parent.read_bytes()).hexdigest()
    labels = provenance["labels"]
    assert (labels["n"], labels["n_real"], labels["n_bogus"]) == (8, 4, 4)
    assert labels["labellers"] == ["ann"] and labels["candidate_ids"] == ids[:8]
    assert labels["proposed_by"] == [store.model] and store.model.startswith("parent sha256:")
    assert len(labels["sha256"]) == 64
    assert result.card["data"]["n_train"] == 8 and result.model_path.name == "parent-ft.keras"
    load_trained(result.model_path)
    # The same labels merged first give the same label hash.
    merged = apply_labels(ds, store)
    again = fine_tune(parent, merged, config=TrainConfig(epochs=1, split=None), track=False)
    assert again.card["provenance"]["labels"]["sha256"] == labels["sha256"]


def test_fine_tune_bad_inputs(ds, parent, tmp_path):
    with pytest.raises(AstridInputError, match="no candidate has a human label"):
        fine_tune(
            parent, apply_labels(ds, []), config=TrainConfig(epochs=1, split=None), track=False
        )
    with pytest.raises(AstridFileError, match="does not exist"):
        fine_tune(tmp_path / "none.keras", ds, [], config=TrainConfig(epochs=1, split=None))
    with pytest.raises(TypeError, match="provenance"):  # fine_tune sets the provenance itself
        fine_tune(parent, ds, [], provenance={})
