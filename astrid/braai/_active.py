"""Active learning: human labels back into training.

The loop::

    scores = astrid.score.score(ds, model)                   # or braai.predict
    batch = braai.query(scores, ds, n=50, strategy="diversity")
    inspector = TripletInspector(ds, scores=scores, labels_path="labels.jsonl", model=model_path)
    inspector.show_only(batch)                                # a person labels them
    merged = braai.apply_labels(ds, "labels.jsonl")           # human_label + provenance
    result = braai.fine_tune(model_path, merged, out_dir="models")  # card names parent + labels

Design of the merged store
--------------------------
Triplet stores are append-only (:mod:`astrid.triplets`) and label files are
append-only (:class:`astrid.widgets.LabelStore`); neither is ever rewritten.
:func:`apply_labels` is a pure function of (triplets, label records): it
returns a copy of the dataset with the human labels as coordinates beside the
original ``label`` (the simulator's truth, kept untouched):

``human_votes``
    every distinct label record of the candidate, as JSON (labeller, label,
    time, proposing model, score shown, source file): the full history, so
    nothing is lost and a merged dataset can be merged again;
``human_label``
    1 real, 0 bogus, -1 none (unlabelled, skipped, or a conflict);
``human_label_by``, ``human_label_time``, ``human_label_model``
    the labellers behind ``human_label``, the newest decisive label's time and
    the model that proposed the candidate;
``human_label_conflict``
    True where labellers' newest decisions disagree (the candidate is then
    left out of training; :func:`label_conflicts` lists the votes).

Votes are deduplicated by (labeller, label, time), so applying the same labels
twice, or a merged dataset's labels again, changes nothing. Each labeller's
newest record counts (a relabel replaces that person's earlier label, as in
the label file); ``skip`` means "undecided". ``out=`` writes the merged copy
to a *new* store for training elsewhere; the source store is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import AstridFileError, AstridInputError, AstridWarning
from ..schema import validate_triplets
from ._train import TrainConfig, card_path

__all__ = [
    "apply_labels",
    "label_conflicts",
    "training_labels",
    "query",
    "mc_dropout_scores",
    "fine_tune",
    "FINE_TUNE_CONFIG",
    "STRATEGIES",
    "HUMAN_COORDS",
    "labels_hash",
]

#: Coordinates :func:`apply_labels` adds.
HUMAN_COORDS = (
    "human_votes",
    "human_label",
    "human_label_by",
    "human_label_time",
    "human_label_model",
    "human_label_conflict",
)
#: Query strategies of :func:`query`.
STRATEGIES = ("uncertainty", "entropy", "bald", "diversity", "random")
_DECISIONS = {"real": 1, "bogus": 0}
#: :func:`fine_tune`'s default training: 5 epochs, no validation split off the few human labels.
FINE_TUNE_CONFIG = TrainConfig(epochs=5, split=None)


# --------------------------------------------------------------------------- #
# labels -> votes
# --------------------------------------------------------------------------- #


def _open_triplets(triplets, name: str = "triplets") -> tuple[xr.Dataset, Path | None]:
    if isinstance(triplets, (str, os.PathLike)):
        from ..triplets import load_triplets

        path = Path(triplets)
        return load_triplets(path), path
    if not isinstance(triplets, xr.Dataset):
        raise AstridInputError(
            f"{name}: expected a triplet xarray.Dataset or a store path, got {type(triplets).__name__}"
        )
    return validate_triplets(triplets, name), None


def _vote(candidate_id, label, time, labeller, model, score, source) -> dict:
    return {
        "candidate_id": str(candidate_id),
        "label": str(label),
        "time": str(time),
        "labeller": str(labeller),
        "model": None if model in (None, "") else str(model),
        "score": None
        if score is None or (isinstance(score, float) and not np.isfinite(score))
        else float(score),
        "source": str(source),
    }


def _votes_of(labels, source: str = "records") -> list[dict]:
    """Every label record of ``labels`` as a vote dict (labeller filled in from the source when missing)."""
    from ..widgets import LABELS, LabelRecord, LabelStore

    def unnamed(src):
        return f"unnamed ({src})"

    if isinstance(labels, LabelStore):
        src = labels.path.name
        return [
            _vote(
                r.candidate_id, r.label, r.time, r.labeller or unnamed(src), r.model, r.score, src
            )
            for r in labels.history
        ]
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.exists():
            raise AstridFileError(f"labels: {path} does not exist")
        if path.suffix.lower() in (".csv", ".ecsv"):
            from astropy.table import Table

            table = Table.read(
                path, format="ascii.ecsv" if path.suffix.lower() == ".ecsv" else "ascii.csv"
            )
            missing = {"candidate_id", "label", "time"} - set(table.colnames)
            if missing:
                raise AstridFileError(
                    f"{path}: a label table needs columns candidate_id, label, time; missing {sorted(missing)}"
                )
            votes = []
            for row in table:
                label = str(row["label"])
                if label not in LABELS:
                    raise AstridFileError(
                        f"{path}: label {label!r} of {row['candidate_id']} is not one of {LABELS}"
                    )
                labeller = (
                    str(row["labeller"])
                    if "labeller" in table.colnames and str(row["labeller"]).strip()
                    else None
                )
                model = (
                    str(row["model"])
                    if "model" in table.colnames and str(row["model"]).strip()
                    else None
                )
                score = float(row["score"]) if "score" in table.colnames else None
                votes.append(
                    _vote(
                        row["candidate_id"],
                        label,
                        row["time"],
                        labeller or unnamed(path.name),
                        model,
                        score,
                        path.name,
                    )
                )
            return votes
        return _votes_of(LabelStore(path), path.name)
    if isinstance(labels, LabelRecord):
        return [
            _vote(
                labels.candidate_id,
                labels.label,
                labels.time,
                labels.labeller or unnamed(source),
                labels.model,
                labels.score,
                source,
            )
        ]
    if isinstance(labels, Mapping):
        try:
            label = str(labels["label"])
            vote = _vote(
                labels["candidate_id"],
                label,
                labels["time"],
                labels.get("labeller") or unnamed(source),
                labels.get("model"),
                labels.get("score"),
                labels.get("source", source),
            )
        except KeyError as exc:
            raise AstridInputError(
                f"labels: a label record needs candidate_id, label and time; missing {exc}"
            ) from None
        if label not in LABELS:
            raise AstridInputError(
                f"labels: label {label!r} of {vote['candidate_id']} is not one of {LABELS}"
            )
        return [vote]
    if isinstance(labels, Iterable) and not isinstance(labels, (bytes, xr.Dataset)):
        votes = []
        for item in labels:
            votes.extend(_votes_of(item, source))
        return votes
    raise AstridInputError(
        f"labels: expected a LabelStore, a label file (.jsonl, .csv, .ecsv), label records or a list of them, "
        f"got {type(labels).__name__}"
    )


def _key(vote: dict) -> tuple:
    return vote["candidate_id"], vote["labeller"], vote["label"], vote["time"]


def _decide(votes: list[dict]) -> tuple[int, str, str, str, bool]:
    """(human_label, by, time, model, conflict) from one candidate's votes."""
    newest: dict[str, dict] = {}
    for vote in sorted(votes, key=lambda v: v["time"]):
        newest[vote["labeller"]] = vote  # each labeller's newest record counts
    decided = {who: v for who, v in newest.items() if v["label"] in _DECISIONS}
    if not decided:
        return -1, "", "", "", False
    values = {_DECISIONS[v["label"]] for v in decided.values()}
    last = max(decided.values(), key=lambda v: v["time"])
    by = ",".join(sorted(decided))
    if len(values) > 1:
        return -1, by, last["time"], last["model"] or "", True
    return values.pop(), by, last["time"], last["model"] or "", False


def labels_hash(votes: Iterable[dict]) -> str:
    """SHA-256 of label votes, independent of their order and source file.

    Hashes the sorted lines ``candidate_id<TAB>label<TAB>labeller<TAB>time``.

    Parameters
    ----------
    votes : iterable of dict
        Label votes, each with the string keys ``candidate_id``, ``label``,
        ``labeller`` and ``time``.

    Returns
    -------
    str
        Hexadecimal SHA-256 digest (64 characters).
    """
    lines = sorted(
        "\t".join((v["candidate_id"], v["label"], v["labeller"], v["time"])) for v in votes
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def apply_labels(
    triplets, labels, *, out: str | os.PathLike | None = None, warn: bool = True
) -> xr.Dataset:
    """Merge human labels into a triplet dataset, keeping every label and the original ``label``.

    Parameters
    ----------
    triplets : xarray.Dataset or path-like
        Triplets (AstrID schema), or a triplet store (opened with
        :func:`astrid.triplets.load_triplets`; it is not changed). A dataset
        merged before keeps its ``human_votes``: the new labels are added.
    labels : LabelStore, path-like, LabelRecord, dict or a list of them
        Inspector labels: a :class:`~astrid.widgets.LabelStore`, its
        ``.jsonl`` file, a table exported by
        :meth:`~astrid.widgets.LabelStore.export` (``.csv``/``.ecsv``),
        records, or a list mixing them (several people's files).
    out : path-like, optional
        Also write the merged dataset to this new store
        (:func:`astrid.triplets.write_triplets`, mode ``"w"``); it may not
        be the store ``triplets`` was read from.
    warn : bool, optional
        Warn about conflicting labels (default).

    Returns
    -------
    xarray.Dataset
        A copy of ``triplets`` with the coordinates of :data:`HUMAN_COORDS`
        (see the module docstring) and the attribute ``human_labels``: a
        JSON summary (votes, labelled candidates, real, bogus, conflicts,
        labels for candidates not in the dataset, labellers, sources and
        :func:`labels_hash` of all votes).

    Raises
    ------
    AstridInputError
        Not a triplet dataset, labels in no known form, ``out`` is the source.
    AstridFileError
        A label file that does not exist or is not a label file.

    Warns
    -----
    AstridWarning
        Candidates whose labellers disagree (kept, left unlabelled; see
        :func:`label_conflicts`).
    """
    ds, source_path = _open_triplets(triplets)
    ids = [str(v) for v in ds["candidate_id"].values]
    position = {cid: i for i, cid in enumerate(ids)}
    votes: dict[tuple, dict] = {}
    if "human_votes" in ds.variables:
        for text in ds["human_votes"].values:
            for vote in json.loads(str(text)):
                votes.setdefault(_key(vote), vote)
    unmatched = 0
    for vote in _votes_of(labels):
        if vote["candidate_id"] not in position:
            unmatched += 1
            continue
        votes.setdefault(_key(vote), vote)
    per_candidate: list[list[dict]] = [[] for _ in ids]
    for vote in votes.values():
        per_candidate[position[vote["candidate_id"]]].append(vote)
    n = len(ids)
    human = np.full(n, -1, dtype=np.int8)
    by = np.empty(n, dtype=object)
    when = np.empty(n, dtype=object)
    model = np.empty(n, dtype=object)
    conflict = np.zeros(n, dtype=bool)
    texts = np.empty(n, dtype=object)
    for i, candidate_votes in enumerate(per_candidate):
        candidate_votes.sort(key=lambda v: (v["time"], v["labeller"], v["label"]))
        texts[i] = json.dumps(candidate_votes, sort_keys=True, separators=(",", ":"))
        human[i], by[i], when[i], model[i], conflict[i] = _decide(candidate_votes)
    merged = ds.assign_coords(
        human_votes=("candidate", texts),
        human_label=("candidate", human),
        human_label_by=("candidate", by),
        human_label_time=("candidate", when),
        human_label_model=("candidate", model),
        human_label_conflict=("candidate", conflict),
    )
    merged["human_label"].attrs["description"] = (
        "1 real, 0 bogus, -1 none (unlabelled, skipped or conflicting)"
    )
    all_votes = [v for vs in per_candidate for v in vs]
    summary = {
        "n_votes": len(all_votes),
        "n_labelled": int((human >= 0).sum()),
        "n_real": int((human == 1).sum()),
        "n_bogus": int((human == 0).sum()),
        "n_conflicts": int(conflict.sum()),
        "n_unmatched": int(unmatched),  # labels of this call for candidates not in the dataset
        "labellers": sorted({v["labeller"] for v in all_votes}),
        "sources": sorted({v["source"] for v in all_votes}),
        "sha256": labels_hash(all_votes),
    }
    merged.attrs = dict(ds.attrs)
    merged.attrs["human_labels"] = json.dumps(summary, sort_keys=True)
    if warn and conflict.any():
        first = [ids[i] for i in np.flatnonzero(conflict)[:3]]
        warnings.warn(
            f"{int(conflict.sum())} candidate(s) have conflicting labels (e.g. {first}): kept in human_votes, "
            "left out of training (human_label -1); astrid.braai.label_conflicts(merged) lists them",
            AstridWarning,
            stacklevel=2,
        )
    if out is not None:
        from ..triplets import write_triplets

        out = Path(out)
        if source_path is not None and out.resolve() == source_path.resolve():
            raise AstridInputError(
                f"out={str(out)!r} is the store the triplets come from; stores are append-only: "
                "give a new path"
            )
        write_triplets(merged, out, mode="w")
    return merged


def _merged(ds: xr.Dataset, name: str) -> xr.Dataset:
    if "human_votes" not in ds.variables:
        raise AstridInputError(
            f"{name}: no human labels; merge them first with astrid.braai.apply_labels"
        )
    return ds


def label_conflicts(merged: xr.Dataset):
    """The votes of candidates whose labellers disagree.

    Parameters
    ----------
    merged : xarray.Dataset
        A dataset from :func:`apply_labels`.

    Returns
    -------
    astropy.table.Table
        One row per vote that decides (each labeller's newest real/bogus):
        ``candidate_id``, ``labeller``, ``label``, ``time``, ``model``.
    """
    from astropy.table import Table

    _merged(merged, "merged")
    rows = []
    ids = [str(v) for v in merged["candidate_id"].values]
    for i in np.flatnonzero(np.asarray(merged["human_label_conflict"].values, dtype=bool)):
        newest: dict[str, dict] = {}
        for vote in sorted(
            json.loads(str(merged["human_votes"].values[i])), key=lambda v: v["time"]
        ):
            newest[vote["labeller"]] = vote
        for vote in newest.values():
            if vote["label"] in _DECISIONS:
                rows.append(
                    (ids[i], vote["labeller"], vote["label"], vote["time"], vote["model"] or "")
                )
    names = ("candidate_id", "labeller", "label", "time", "model")
    if not rows:
        return Table(names=names, dtype=(str, str, str, str, str))
    return Table(rows=rows, names=names)


def training_labels(merged: xr.Dataset, use: str = "human") -> xr.Dataset:
    """The candidates to train on, with ``label`` set from the human labels.

    Parameters
    ----------
    merged : xarray.Dataset
        A dataset from :func:`apply_labels`.
    use : {"human", "all"}, optional
        ``"human"``: only the candidates with a human label (default);
        ``"all"``: every candidate, the human label replacing ``label``
        where there is one (conflicts keep the original ``label``).

    Returns
    -------
    xarray.Dataset
        With ``label`` (int8) for training and ``original_label`` (the
        label before, -1 where there was none).
    """
    _merged(merged, "triplets")
    if use not in ("human", "all"):
        raise AstridInputError(f"use={use!r}: expected 'human' or 'all'")
    human = np.asarray(merged["human_label"].values, dtype=np.int8)
    has_original = "label" in merged.variables
    original = (
        np.asarray(merged["label"].values).astype(np.int8)
        if has_original
        else np.full(human.shape, -1, dtype=np.int8)
    )
    if use == "all" and not has_original:
        raise AstridInputError("use='all': the triplets have no 'label' coordinate to fall back on")
    new = np.where(human >= 0, human, original).astype(np.int8)
    keep = np.flatnonzero(human >= 0) if use == "human" else np.arange(human.size)
    if keep.size == 0:
        raise AstridInputError(
            "triplets: no candidate has a human label (real or bogus) to train on"
        )
    out = merged.assign_coords(label=("candidate", new), original_label=("candidate", original))
    return out.isel(candidate=keep)


# --------------------------------------------------------------------------- #
# query strategies
# --------------------------------------------------------------------------- #


def _is_model(value) -> bool:
    return hasattr(value, "predict") and hasattr(value, "input_shape")


def _load_model(model):
    if isinstance(model, (str, os.PathLike)):
        from ._train import load_trained

        return load_trained(model)
    return model


def mc_dropout_scores(
    model, triplets, n_samples: int = 10, *, seed: int = 0, batch_size: int = 256
) -> np.ndarray:
    """Scores with dropout left on: ``n_samples`` draws of an approximate posterior (Gal & Ghahramani 2016).

    Parameters
    ----------
    model : keras.Model or path-like
        A braai network with dropout layers (VGG6 has three).
    triplets : xarray.Dataset or array-like
        Raw triplets.
    n_samples : int, optional
        Forward passes.
    seed : int, optional
        Seeds the dropout masks.
    batch_size : int, optional
        Triplets per forward pass (default 256).

    Returns
    -------
    numpy.ndarray, shape (n_samples, n)
        Network outputs (float32), one row per forward pass and one column per
        triplet.
    """
    from ._models import keras_module
    from ._preprocess import preprocess

    if int(n_samples) < 2:
        raise AstridInputError(f"n_samples={n_samples!r}: MC dropout needs at least 2 passes")
    model = _load_model(model)
    keras = keras_module()
    x = preprocess(triplets, norm=getattr(model, "astrid_norm", None) or "rowwise")
    keras.utils.set_random_seed(int(seed))
    out = np.empty((int(n_samples), x.shape[0]), dtype=np.float32)
    for k in range(int(n_samples)):
        for start in range(0, x.shape[0], int(batch_size)):
            out[k, start : start + batch_size] = np.asarray(
                model(x[start : start + batch_size], training=True)
            ).reshape(-1)
    return out


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def _embedding(model, ds: xr.Dataset, index: np.ndarray, embedding) -> np.ndarray:
    if embedding is not None and not isinstance(embedding, str):
        values = np.asarray(embedding, dtype=float)
        if values.ndim != 2 or values.shape[0] != ds.sizes["candidate"]:
            raise AstridInputError(
                f"embedding: expected shape ({ds.sizes['candidate']}, features), got {values.shape}"
            )
        return values[index]
    from ._preprocess import preprocess

    subset = ds.isel(candidate=index)
    if embedding in (None, "model") and model is not None:
        from ._models import keras_module

        keras = keras_module()
        x = preprocess(subset, norm=getattr(model, "astrid_norm", None) or "rowwise")
        features = keras.Model(inputs=model.inputs, outputs=model.layers[-2].output)
        return np.asarray(features.predict(x, batch_size=256, verbose=0)).reshape(len(index), -1)
    if embedding not in (None, "stamps", "model"):
        raise AstridInputError(f"embedding={embedding!r}: expected 'model', 'stamps' or an array")
    # The difference stamp, 4x4-binned and L2-normalised: the artefact's shape, not its brightness.
    x = preprocess(subset, norm="l2")[..., -1]
    h, w = (x.shape[1] // 4) * 4, (x.shape[2] // 4) * 4
    binned = (
        x[:, :h, :w]
        .reshape(len(index), h // 4, 4, w // 4, 4)
        .mean(axis=(2, 4))
        .reshape(len(index), -1)
    )
    norms = np.linalg.norm(binned, axis=1, keepdims=True)
    return binned / np.where(norms > 0, norms, 1)


def _k_center(features: np.ndarray, n: int, first: int) -> list[int]:
    """Greedy k-center (Sener & Savarese 2018): each pick is the point farthest from those picked."""
    chosen = [first]
    distance = np.linalg.norm(features - features[first], axis=1)
    while len(chosen) < n:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(features - features[nxt], axis=1))
    return chosen


def _member_scores(scores_or_model, ds: xr.Dataset, strategy: str, mc_samples: int, seed: int):
    """(scores, shape (members, n_candidates); the model that made them or None) for query()."""
    size = int(ds.sizes["candidate"])
    model = None
    if (
        isinstance(scores_or_model, (list, tuple))
        and scores_or_model
        and all(_is_model(m) or isinstance(m, (str, os.PathLike)) for m in scores_or_model)
    ):
        from ._load import predict

        members = [_load_model(m) for m in scores_or_model]
        model = members[0]
        scores = np.stack([predict(m, ds) for m in members])
    elif _is_model(scores_or_model) or isinstance(scores_or_model, (str, os.PathLike)):
        from ._load import predict

        model = _load_model(scores_or_model)
        if strategy in ("entropy", "bald"):
            scores = mc_dropout_scores(model, ds, mc_samples, seed=seed)
        else:
            scores = predict(model, ds)[None, :]
    elif scores_or_model is None:
        raise AstridInputError(
            f"strategy={strategy!r} needs scores or a model (only 'random' works without)"
        )
    else:
        try:
            scores = np.asarray(scores_or_model, dtype=float)
        except (TypeError, ValueError):
            raise AstridInputError(
                f"scores_or_model: expected scores, a model or a model path, "
                f"got {type(scores_or_model).__name__}"
            ) from None
        if scores.ndim == 1:
            scores = scores[None, :]
        if scores.ndim != 2 or scores.shape[1] != size:
            raise AstridInputError(
                f"scores: expected shape ({size},) or (members, {size}), got {np.shape(scores_or_model)}"
            )
    return scores, model


def query(
    scores_or_model,
    triplets,
    n: int,
    strategy: str = "uncertainty",
    *,
    seed: int = 0,
    exclude=None,
    pool_factor: int = 5,
    mc_samples: int = 10,
    embedding=None,
) -> np.ndarray:
    """Choose the ``n`` candidates whose labels should help the classifier most.

    Parameters
    ----------
    scores_or_model : array-like, keras.Model, path-like or list of models
        Scores in [0, 1]: shape ``(n_candidates,)`` for one model or
        ``(members, n_candidates)`` for an ensemble or MC-dropout draws
        (:func:`mc_dropout_scores`); or a model (a ``.keras`` path) to score
        with; a list of models scores as an ensemble. ``"entropy"`` and
        ``"bald"`` given one model draw ``mc_samples`` MC-dropout passes.
        Ignored by ``"random"`` (may be None).
    triplets : xarray.Dataset or path-like
        The candidates (pool). Candidates with a decided human label
        (:func:`apply_labels`) are never proposed again.
    n : int
        Batch size (fewer when the pool is smaller).
    strategy : {"uncertainty", "entropy", "bald", "diversity", "random"}
        ``"uncertainty"``: the smallest ``|p - 0.5|`` (mean over members);
        ``"entropy"``: the highest entropy of the mean score (the same order
        for one model's scores; with members, their mean);
        ``"bald"``: the highest mutual information between label and
        members (entropy of the mean minus mean entropy: where the members
        disagree; needs members or a model);
        ``"diversity"``: the ``pool_factor * n`` most uncertain, then a
        greedy k-center cover of their ``embedding`` (so a batch is not many
        copies of one artefact); ``"random"``: uniform.
    seed : int, optional
        Seeds ``"random"``, the tie breaks and MC dropout.
    exclude : sequence of str, optional
        ``candidate_id`` values never to propose (besides those labelled).
    pool_factor : int, optional
        For ``"diversity"``: the pool of uncertain candidates it covers.
    mc_samples : int, optional
        MC-dropout passes when a single model is given for ``"entropy"``/``"bald"``.
    embedding : {"model", "stamps"} or array-like, optional
        For ``"diversity"``: the model's penultimate layer (default when a
        model is given), the binned, normalised difference stamps (default
        otherwise), or given features of shape ``(n_candidates, k)``.

    Returns
    -------
    numpy.ndarray of int
        Dataset positions of the chosen candidates, most informative first
        (``triplets.candidate_id[positions]`` gives their ids;
        :meth:`astrid.widgets.TripletInspector.show_only` shows them).
    """
    if strategy not in STRATEGIES:
        raise AstridInputError(f"strategy={strategy!r}: expected one of {STRATEGIES}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise AstridInputError(f"n={n!r}: expected a positive integer")
    ds, _ = _open_triplets(triplets)
    size = int(ds.sizes["candidate"])
    ids = np.array([str(v) for v in ds["candidate_id"].values], dtype=object)
    available = np.ones(size, dtype=bool)
    if "human_label" in ds.variables:
        available &= np.asarray(ds["human_label"].values) < 0
        available &= ~np.asarray(
            ds["human_label_conflict"].values, dtype=bool
        )  # asked already: people disagree
    if exclude is not None:
        if isinstance(exclude, str):
            exclude = [exclude]
        available &= ~np.isin(ids, [str(e) for e in exclude])
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(size)
    if strategy == "random":
        pool = np.flatnonzero(available)
        return rng.permutation(pool)[: int(n)]

    scores, model = _member_scores(scores_or_model, ds, strategy, mc_samples, seed)
    finite = np.isfinite(scores)
    if (scores[finite] < 0).any() or (scores[finite] > 1).any():
        raise AstridInputError("scores: values outside [0, 1]; expected real/bogus probabilities")
    available &= finite.all(axis=0)
    pool = np.flatnonzero(available)
    if pool.size == 0:
        return np.array([], dtype=int)
    mean = scores[:, pool].mean(axis=0)
    if strategy == "bald" and scores.shape[0] < 2:
        raise AstridInputError(
            "strategy='bald' needs several members: give (members, n) scores, models or a model"
        )
    if strategy == "uncertainty" or strategy == "diversity":
        badness = np.abs(mean - 0.5)
    elif strategy == "entropy":
        badness = -_entropy(mean)
    else:  # bald
        badness = -(_entropy(mean) - _entropy(scores[:, pool]).mean(axis=0))
    ranked = pool[np.lexsort((tiebreak[pool], badness))]
    if strategy != "diversity":
        return ranked[: int(n)]
    if int(pool_factor) < 1:
        raise AstridInputError(f"pool_factor={pool_factor!r}: expected a positive integer")
    candidates = ranked[: int(n) * int(pool_factor)]
    if candidates.size <= n:
        return candidates
    features = _embedding(model, ds, candidates, embedding)
    return candidates[_k_center(features, int(n), 0)]


# --------------------------------------------------------------------------- #
# fine-tuning
# --------------------------------------------------------------------------- #


def _parent(model) -> tuple[Any, dict]:
    """(what train() fine-tunes from, the parent's identity for the card)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise AstridFileError(f"{path}: model file does not exist")
        parent: dict[str, Any] = {
            "name": path.name.removesuffix(".keras").removesuffix(".h5"),
            "path": str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        card = card_path(path)
        if card.exists():
            try:
                values = json.loads(card.read_text())
            except json.JSONDecodeError as exc:
                raise AstridFileError(f"{card}: model card is not JSON ({exc})") from None
            parent["card"] = card.name
            parent["data_sha256"] = (values.get("data") or {}).get("sha256")
            parent["name"] = (values.get("model") or {}).get("name", parent["name"])
        return path, parent
    if _is_model(model):
        digest = hashlib.sha256()
        for weights in model.get_weights():
            digest.update(np.ascontiguousarray(weights, dtype=np.float32).tobytes())
        return model, {
            "name": model.name,
            "path": None,
            "weights_sha256": digest.hexdigest(),
            "sha256": getattr(model, "astrid_sha256", None),
        }
    raise AstridInputError(
        f"model: expected a .keras path or a keras.Model, got {type(model).__name__}"
    )


def fine_tune(
    model,
    triplets,
    labels=None,
    *,
    use: str = "human",
    validation: xr.Dataset | None = None,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    name: str | None = None,
    track: bool | None = None,
    verbose: int = 0,
):
    """Fine-tune a braai model on human labels; its card names the parent and the labels.

    Parameters
    ----------
    model : path-like or keras.Model
        The parent: a ``.keras`` file from :func:`astrid.braai.train`
        (named in the card by its name and file SHA-256) or a Keras model
        (by its name and a SHA-256 of its weights). It is not changed.
    triplets : xarray.Dataset or path-like
        Triplets merged with :func:`apply_labels`, or raw triplets when
        ``labels`` is given.
    labels : optional
        Labels to merge first (anything :func:`apply_labels` takes).
    use : {"human", "all"}, optional
        Train on the human-labelled candidates only (default), or on all
        candidates with human labels replacing ``label``
        (:func:`training_labels`).
    validation : xarray.Dataset, optional
        A labelled validation set (early stopping, calibration, metrics).
        Without it, all ``epochs`` run and the model is uncalibrated.
    config : astrid.braai.TrainConfig, optional
        As :func:`astrid.braai.train`; default :data:`FINE_TUNE_CONFIG`
        (``TrainConfig(epochs=5, split=None)``: 5 epochs, no validation
        split off the few human labels; the learning rate defaults to 3e-5
        when fine-tuning).
    out_dir, name : optional
        Save ``<name>.keras`` and its card (default name: the parent's
        name + ``"-ft"``).
    track, verbose : optional
        As :func:`astrid.braai.train`.

    Returns
    -------
    TrainResult
        The card's ``provenance`` holds ``kind`` ``"fine_tune"``,
        ``parent`` (name, path, ``sha256`` of the file, the parent's
        ``data_sha256``) and ``labels`` (counts, ``sha256``
        (:func:`labels_hash`) of the votes used, labellers, source files,
        proposing models, conflicts left out, and the candidate ids).
    """
    from ._train import train

    source, parent = _parent(model)
    ds, _ = _open_triplets(triplets)
    merged = apply_labels(ds, labels) if labels is not None else _merged(ds, "triplets")
    training = training_labels(merged, use)
    human = np.asarray(training["human_label"].values)
    used = [
        v
        for text, h in zip(training["human_votes"].values, human)
        if h >= 0
        for v in json.loads(str(text))
        if v["label"] in _DECISIONS
    ]
    ids = [str(c) for c, h in zip(training["candidate_id"].values, human) if h >= 0]
    provenance = {
        "kind": "fine_tune",
        "parent": parent,
        "labels": {
            "use": use,
            "n": len(ids),
            "n_real": int((human == 1).sum()),
            "n_bogus": int((human == 0).sum()),
            "n_conflicts_left_out": int(
                np.asarray(merged["human_label_conflict"].values, dtype=bool).sum()
            ),
            "sha256": labels_hash(used),
            "labellers": sorted({v["labeller"] for v in used}),
            "sources": sorted({v["source"] for v in used}),
            "proposed_by": sorted({v["model"] for v in used if v["model"]}),
            "candidate_ids": ids,
        },
        "n_train": int(training.sizes["candidate"]),
    }
    return train(
        training,
        fine_tune_from=source,
        provenance=provenance,
        validation=validation,
        config=FINE_TUNE_CONFIG if config is None else config,
        out_dir=out_dir,
        name=name or f"{parent['name']}-ft",
        track=track,
        verbose=verbose,
    )
