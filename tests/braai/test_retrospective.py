"""The retrospective test: a target removed from training, then scored and ranked."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from test_active import tiny_triplets  # noqa: E402

from astrid.braai import retrospective, target_mask  # noqa: E402
from astrid.errors import AstridInputError  # noqa: E402


@pytest.fixture(scope="module")
def ds():
    ds = tiny_triplets(48, seed=2)
    kinds = np.array([str(k) for k in ds["kind"].values], dtype=object)
    kinds[[1, 9, 17]] = "asteroid"  # three triplets of a rare real kind, in different fields
    objects = np.array([f"obj{i // 2}" for i in range(48)], dtype=object)
    ra = np.linspace(150.0, 150.1, 48)
    return ds.assign_coords(
        kind=("candidate", kinds),
        objectId=("candidate", objects),
        ra=("candidate", ra),
        dec=("candidate", np.full(48, 2.0)),
    )


def test_target_mask_forms(ds):
    assert target_mask(ds, {"kind": "asteroid"}).sum() == 3
    assert target_mask(ds, "asteroid").sum() == 3
    assert np.flatnonzero(target_mask(ds, "obj3")).tolist() == [6, 7]
    assert np.flatnonzero(
        target_mask(ds, {"ra": ds["ra"].values[5], "dec": 2.0}, radius=1.0)
    ).tolist() == [5]
    assert not target_mask(ds, {"objectId": "nothing"}).any()
    assert not target_mask(ds, {"no_such_coordinate": 1}).any()
    with pytest.raises(AstridInputError, match="empty mapping"):
        target_mask(ds, {})
    with pytest.raises(AstridInputError, match="boolean mask"):
        target_mask(ds, np.zeros(3))


def test_retrospective_excludes_every_triplet_of_the_target(ds):
    from astrid.braai import dataset_hash, split_groups

    result = retrospective(ds, {"kind": "asteroid"}, epochs=1, split="field", track=False)
    # The card's data hashes are those of the target-free training and validation parts.
    rest = ds.isel(candidate=[i for i in range(ds.sizes["candidate"]) if i not in (1, 9, 17)])
    train_index, validation_index, _ = split_groups(rest, "field", 0.2, 0)
    seen = [
        {str(c) for c in rest["candidate_id"].values[index]}
        for index in (train_index, validation_index)
    ]
    assert result.card["data"]["sha256"] == dataset_hash(rest.isel(candidate=train_index))
    assert result.card["data"]["sha256_validation"] == dataset_hash(
        rest.isel(candidate=validation_index)
    )
    asteroids = {str(ds["candidate_id"].values[i]) for i in (1, 9, 17)}
    assert not (seen[0] | seen[1]) & asteroids  # neither trained nor validated on
    assert result.n_excluded == 3 and result.n_train + result.n_validation == 45
    assert set(result.table["candidate_id"]) == asteroids
    assert ((result.table["rank"] >= 1) & (result.table["rank"] <= result.n_ranked)).all()
    assert result.n_ranked == 3 + result.n_validation
    assert 0 <= result.summary["median_score"] <= 1


def test_retrospective_in_other_candidates(ds):
    alerts = tiny_triplets(12, seed=9)
    alerts = alerts.assign_coords(
        objectId=("candidate", np.array([f"ZTF{i}" for i in range(12)], dtype=object))
    )
    result = retrospective(ds, {"objectId": "ZTF3"}, candidates=alerts, epochs=1, track=False)
    assert result.n_excluded == 0 and result.n_ranked == 12
    assert list(result.table["candidate_id"]) == [str(alerts["candidate_id"].values[3])]


def test_retrospective_bad_target(ds):
    with pytest.raises(AstridInputError, match="matches no candidate"):
        retrospective(ds, {"kind": "nuclear_supernova"}, epochs=1, track=False)
    with pytest.raises(AstridInputError, match="validation"):
        retrospective(ds, "asteroid", validation=ds, track=False)
