"""The retrospective test: would the model still flag a known transient it never saw?

Remove every triplet of a known object (or of a whole kind of transient) from
the training set, train, and score it among candidates the model never trained
on: its score and its rank say whether a survey running this model would have
put it in front of a person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import xarray as xr

from ..errors import AstridInputError
from ..schema import validate_triplets

__all__ = ["retrospective", "target_mask", "RetrospectiveResult"]

_OBJECT_COORDS = ("objectId", "object_id", "object", "truth_id", "candidate_id")


@dataclass
class RetrospectiveResult:
    """What :func:`retrospective` returns.

    Attributes
    ----------
    target : str
        The target as described.
    n_excluded : int
        Triplets of the target removed from ``dataset`` before training.
    n_train : int
        Triplets the model trained on (none of them of the target).
    n_validation : int
        Triplets the model was validated on (none of them of the target).
    table : astropy.table.Table
        One row per target triplet scored: ``candidate_id``, ``score``,
        ``rank`` (1 = the highest score of the ranked pool), ``percentile``
        (fraction of the pool scored lower) and ``label`` (-1 when unknown).
    n_ranked : int
        Candidates in the ranked pool (the target's triplets included).
    pool : str
        What the pool is.
    summary : dict
        ``best_rank``, ``median_score``, ``fraction_above_0.5``,
        ``median_percentile`` and the pool's real/bogus counts.
    model : keras.Model
        The model trained without the target.
    card : dict
        Its model card.
    """

    target: str
    n_excluded: int
    n_train: int
    n_validation: int
    table: Any
    n_ranked: int
    pool: str
    summary: dict = field(default_factory=dict)
    model: Any = None
    card: dict = field(default_factory=dict)


def _describe(target) -> str:
    if isinstance(target, Mapping):
        return ", ".join(f"{k}={v}" for k, v in target.items())
    if isinstance(target, str):
        return target
    return f"{type(target).__name__} mask"


def _sky_match(ds: xr.Dataset, ra: float, dec: float, radius_arcsec: float) -> np.ndarray:
    if "ra" not in ds.variables or "dec" not in ds.variables:
        return np.zeros(ds.sizes["candidate"], dtype=bool)
    r1, d1 = (
        np.radians(np.asarray(ds["ra"].values, dtype=float)),
        np.radians(np.asarray(ds["dec"].values, dtype=float)),
    )
    r0, d0 = np.radians(float(ra)), np.radians(float(dec))
    cos = np.sin(d1) * np.sin(d0) + np.cos(d1) * np.cos(d0) * np.cos(r1 - r0)
    separation = np.degrees(np.arccos(np.clip(cos, -1, 1))) * 3600
    return separation <= float(radius_arcsec)


def target_mask(dataset: xr.Dataset, target, *, radius: float = 2.0) -> np.ndarray:
    """Which candidates of ``dataset`` belong to ``target``.

    Parameters
    ----------
    dataset : xarray.Dataset
        Triplets.
    target : str, dict, astropy.coordinates.SkyCoord or array of bool
        A mapping of coordinate name to value, all to match (e.g.
        ``{"kind": "asteroid"}``, ``{"objectId": "ZTF18abcdefg"}``,
        ``{"truth_id": 7, "field": "f03"}``); ``{"ra": deg, "dec": deg}``
        (optionally ``"radius"`` in arcsec) or a SkyCoord for a position;
        a string: an object id (``objectId``, ``object_id``, ``object``,
        ``candidate_id``) or else a ``kind``; or a boolean mask.
    radius : float, optional
        Match radius of a position, arcsec (default 2).

    Returns
    -------
    numpy.ndarray of bool
        A coordinate the dataset lacks matches nothing.
    """
    n = int(dataset.sizes["candidate"])
    if (
        hasattr(target, "ra") and hasattr(target, "dec") and not isinstance(target, Mapping)
    ):  # SkyCoord
        return _sky_match(dataset, target.ra.deg, target.dec.deg, radius)
    if isinstance(target, Mapping):
        if not target:
            raise AstridInputError(
                "target: an empty mapping matches everything; name a kind, an object or a position"
            )
        if "ra" in target and "dec" in target:
            return _sky_match(dataset, target["ra"], target["dec"], target.get("radius", radius))
        mask = np.ones(n, dtype=bool)
        for name, value in target.items():
            if name not in dataset.variables or dataset[name].dims != ("candidate",):
                return np.zeros(n, dtype=bool)
            values = np.asarray(dataset[name].values)
            if values.dtype.kind in "OUS":
                mask &= np.array([str(v) for v in values]) == str(value)
            else:
                mask &= values == value
        return mask
    if isinstance(target, str):
        for name in (*_OBJECT_COORDS, "kind"):
            if name in dataset.variables and dataset[name].dims == ("candidate",):
                hit = np.array([str(v) for v in dataset[name].values]) == target
                if hit.any():
                    return hit
        return np.zeros(n, dtype=bool)
    mask = np.asarray(target)
    if mask.dtype != bool or mask.shape != (n,):
        raise AstridInputError(
            f"target: expected a kind, an object id, a mapping, a position or a boolean mask of "
            f"{n} candidates, got {type(target).__name__}"
        )
    return mask


def _ranks(scores: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, percentile) of scores[index] among all finite scores."""
    finite = scores[np.isfinite(scores)]
    ranks = np.array([1 + int((finite > scores[i]).sum()) for i in index], dtype=int)
    percentile = np.array([float((finite < scores[i]).mean()) for i in index])
    return ranks, percentile


def _ranking_pool(dataset, excluded, validation, candidates, target, radius, split):
    """The triplets to rank, which of them are the target's, and the pool in words."""
    if candidates is None:
        pool = xr.concat(
            [
                dataset.isel(candidate=np.flatnonzero(excluded)).drop_indexes(
                    "candidate_id", errors="ignore"
                ),
                validation.drop_indexes("candidate_id", errors="ignore"),
            ],
            dim="candidate",
            data_vars="all",
            coords="minimal",
            compat="override",
            join="inner",
            combine_attrs="drop_conflicts",
        )
        hit = np.zeros(pool.sizes["candidate"], dtype=bool)
        hit[: int(excluded.sum())] = True
        description = (
            f"the target's {int(excluded.sum())} triplet(s) and the {validation.sizes['candidate']} "
            f"validation triplets (held-out {split}s)"
        )
    else:
        pool = candidates
        hit = target_mask(candidates, target, radius=radius)
        if not hit.any():
            raise AstridInputError(
                f"target {_describe(target)!r}: matches no candidate of candidates"
            )
        description = f"all {candidates.sizes['candidate']} candidates given"
    return pool, hit, description


def _ranked_table(pool, scores: np.ndarray, hit: np.ndarray):
    """The table of the target's triplets (score, rank, percentile, label) and its summary."""
    index = np.flatnonzero(hit)
    ranks, percentile = _ranks(scores, index)
    labels = (
        np.asarray(pool["label"].values).astype(int)
        if "label" in pool.variables
        else np.full(pool.sizes["candidate"], -1)
    )

    from astropy.table import Table

    table = Table(
        {
            "candidate_id": np.array(
                [str(v) for v in pool["candidate_id"].values[index]], dtype=str
            ),
            "score": scores[index],
            "rank": ranks,
            "percentile": percentile,
            "label": labels[index],
        }
    )
    summary = {
        "best_rank": int(ranks.min()),
        "median_rank": float(np.median(ranks)),
        "median_score": float(np.median(scores[index])),
        "fraction_above_0.5": float((scores[index] >= 0.5).mean()),
        "median_percentile": float(np.median(percentile)),
        "pool_real": int((labels == 1).sum()),
        "pool_bogus": int((labels == 0).sum()),
        "pool_fraction_above_0.5": float((scores[np.isfinite(scores)] >= 0.5).mean()),
    }
    return table, summary


def retrospective(
    dataset: xr.Dataset,
    target,
    *,
    candidates: xr.Dataset | None = None,
    model="vgg6",
    split: str = "field",
    validation_fraction: float = 0.2,
    epochs: int = 10,
    seed: int = 0,
    radius: float = 2.0,
    **train_kwargs,
) -> RetrospectiveResult:
    """Train without every triplet of a known transient, then score and rank it.

    Parameters
    ----------
    dataset : xarray.Dataset
        Labelled training triplets (``label``: 1 real, 0 bogus). Every
        triplet of ``target`` is removed before training.
    target : see :func:`target_mask`
        The known object or kind of transient.
    candidates : xarray.Dataset, optional
        Where to find and rank the target instead (e.g. real ZTF alerts
        while ``dataset`` is simulated); it is never trained on. Default:
        the target's own triplets plus the validation part split off
        ``dataset`` (by ``split``), none of which the model trained on.
    model : str or keras.Model, optional
        Architecture to train (:func:`astrid.braai.train`).
    split, validation_fraction, epochs, seed : optional
        As :func:`astrid.braai.train`; the validation split is by whole
        groups, so no field of the ranked pool was trained on.
    radius : float, optional
        Match radius of a positional target, arcsec.
    **train_kwargs
        More :func:`astrid.braai.train` options (``out_dir``, ``name``,
        ``track``...) and :class:`astrid.braai.TrainConfig` fields
        (``patience``, ``batch_size``...).

    Returns
    -------
    RetrospectiveResult
        The target's scores and ranks, a summary, and the model trained without it.

    Raises
    ------
    AstridInputError
        The target matches no candidate (in ``candidates``, or in
        ``dataset`` when ``candidates`` is None), or removing it leaves one
        class only.
    """
    from ._load import predict
    from ._train import TrainConfig, split_groups, train

    config_fields = {f.name for f in fields(TrainConfig)}

    validate_triplets(dataset, "dataset")
    if candidates is not None:
        validate_triplets(candidates, "candidates")
    if "validation" in train_kwargs:
        raise AstridInputError(
            "validation=: retrospective splits its own validation set (give split=)"
        )
    excluded = target_mask(dataset, target, radius=radius)
    if candidates is None and not excluded.any():
        raise AstridInputError(f"target {_describe(target)!r}: matches no candidate of the dataset")
    rest = dataset.isel(candidate=np.flatnonzero(~excluded))
    train_index, validation_index, _ = split_groups(rest, split, validation_fraction, seed)
    training, validation = rest.isel(candidate=train_index), rest.isel(candidate=validation_index)
    options = {key: train_kwargs.pop(key) for key in config_fields & train_kwargs.keys()}
    config = TrainConfig(
        split=split, validation_fraction=validation_fraction, epochs=epochs, seed=seed, **options
    )
    result = train(training, model, validation=validation, config=config, **train_kwargs)

    pool, hit, description = _ranking_pool(
        dataset, excluded, validation, candidates, target, radius, split
    )
    scores = np.asarray(predict(result.model, pool), dtype=float)
    if result.model.astrid_calibration:
        from ._calibrate import Calibration

        scores = Calibration.from_dict(result.model.astrid_calibration).apply(scores)
    table, summary = _ranked_table(pool, scores, hit)
    return RetrospectiveResult(
        target=_describe(target),
        n_excluded=int(excluded.sum()),
        n_train=int(training.sizes["candidate"]),
        n_validation=int(validation.sizes["candidate"]),
        table=table,
        n_ranked=int(np.isfinite(scores).sum()),
        pool=description,
        summary=summary,
        model=result.model,
        card=result.card,
    )
