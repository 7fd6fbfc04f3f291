"""Training sets of labelled triplets over many differenced pairs, and leak-free splits.

Splits never put one group in both parts: :func:`split_by_field` (whole
fields), :func:`split_by_time` (the latest fields) and
:func:`split_by_survey` (whole surveys: train on one survey, test on
another, e.g. ZTF alerts against WINTER alerts read by
:func:`astrid.alerts.read_alerts`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from astropy.table import Table, vstack

from ..errors import AstridInputError
from ._detect import DetectOptions, detect, measure_positions, result_fwhm
from ._label import REAL_KINDS, label_candidates, truth_distances, truth_positions
from ._sources import reference_catalog
from ._stamps import make_triplets
from ._store import load_triplets, write_triplets

__all__ = [
    "ExampleOptions",
    "balance_classes",
    "build_training_set",
    "random_positions",
    "split_by_field",
    "split_by_survey",
    "split_by_time",
]

#: ``origin`` of an example: a detection, a random position, or a forced truth position.
ORIGINS = ("detection", "random", "truth")


@dataclass(frozen=True)
class ExampleOptions:
    """How :func:`build_training_set` makes the examples of one image.

    Attributes
    ----------
    threshold : float
        Detection threshold in sigma.
    radius : float
        Matching radius to the truth, pixels.
    real_kinds : sequence of str
        Truth kinds labelled real (default supernova and variable).
    random_bogus : int
        Random good positions per image, away from detections and truth,
        added as bogus ("nothing here") examples.
    force_real_snr : float, optional
        Also add stamps at real truth transients with ``snr_sci`` at least
        this that no detection matched (origin ``"truth"``). Default: only
        detections.
    negative : bool
        Detect fading (negative) candidates too.
    """

    threshold: float = 5.0
    radius: float = 2.0
    real_kinds: tuple = REAL_KINDS
    random_bogus: int = 10
    force_real_snr: float | None = None
    negative: bool = False

    def __post_init__(self):
        if int(self.random_bogus) != self.random_bogus or self.random_bogus < 0:
            raise AstridInputError(
                f"random_bogus: must be an integer >= 0, got {self.random_bogus!r}"
            )
        object.__setattr__(self, "random_bogus", int(self.random_bogus))
        object.__setattr__(self, "real_kinds", tuple(self.real_kinds))


def _label_columns(table: Table, label: int, kind, truth_id, offset, origin: str) -> Table:
    n = len(table)
    table["label"] = np.full(n, label, dtype=np.int8)
    table["kind"] = np.asarray(kind, dtype=str) if n else np.array([], dtype="U16")
    table["truth_id"] = np.broadcast_to(np.asarray(truth_id, dtype=np.int64), n).copy()
    table["offset"] = np.broadcast_to(np.asarray(offset, dtype=float), n).copy()
    table["offset"].unit = "pix"
    table["origin"] = np.full(n, origin, dtype="U9")
    return table


def random_positions(
    result: Any,
    n: int,
    rng: np.random.Generator,
    avoid_xy=None,
    clearance: float = 6.0,
    edge: int = 3,
):
    """Up to ``n`` random good pixels (unmasked, in the footprint) away from ``avoid_xy``.

    Parameters
    ----------
    result : DifferenceResult
        Provides ``S_corr`` (shape, finite pixels), ``mask`` and ``footprint``.
    n : int
        Number of positions wanted.
    rng : numpy.random.Generator
        Source of randomness.
    avoid_xy : (m, 2) array, optional
        Positions (pixels) to stay ``clearance`` pixels away from.
    clearance : float, optional
        Minimum distance to ``avoid_xy`` and between drawn positions.
    edge : int, optional
        Border (pixels) to stay out of.

    Returns
    -------
    x : numpy.ndarray of float
        Integer-valued pixel columns (possibly fewer than ``n`` on a
        crowded or mostly masked image).
    y : numpy.ndarray of float
        Integer-valued pixel rows, as ``x``.
    """
    score = np.asarray(result.S_corr)
    ny, nx = score.shape
    bad = ~np.isfinite(score)
    if getattr(result, "mask", None) is not None:
        bad |= np.asarray(result.mask, bool)
    if getattr(result, "footprint", None) is not None:
        bad |= ~np.asarray(result.footprint, bool)
    chosen: list[tuple[int, int]] = []
    avoid = np.zeros((0, 2)) if avoid_xy is None else np.asarray(avoid_xy, float).reshape(-1, 2)
    avoid = avoid[np.isfinite(avoid).all(axis=1)]
    from scipy.spatial import cKDTree

    tree = cKDTree(avoid) if len(avoid) else None
    attempts = 0
    while len(chosen) < n and attempts < 50:
        attempts += 1
        k = 4 * (n - len(chosen))
        x = rng.integers(edge, max(nx - edge, edge + 1), size=k)
        y = rng.integers(edge, max(ny - edge, edge + 1), size=k)
        for xi, yi in zip(x, y):
            if bad[yi, xi]:
                continue
            if (
                tree is not None
                and tree.query_ball_point((xi, yi), clearance, return_length=True) > 0
            ):
                continue
            if any((xi - a) ** 2 + (yi - b) ** 2 < clearance**2 for a, b in chosen):
                continue
            chosen.append((int(xi), int(yi)))
            if len(chosen) == n:
                break
    xy = np.array(chosen, dtype=float).reshape(-1, 2)
    return xy[:, 0], xy[:, 1]


def _examples_of_image(
    result,
    truth,
    field,
    prefix,
    *,
    options: ExampleOptions,
    rng,
    detect_options: DetectOptions,
    galaxies=None,
) -> xr.Dataset:
    """Labelled triplets of one differenced image."""
    threshold, negative, radius = options.threshold, options.negative, options.radius
    real_kinds, force_real_snr, random_bogus = (
        options.real_kinds,
        options.force_real_snr,
        options.random_bogus,
    )
    fwhm = detect_options.fwhm or result_fwhm(result)
    reference = getattr(result, "reference", None)
    catalog = reference_catalog(reference, fwhm=fwhm) if reference is not None else False
    sources = {
        "reference_sources": catalog,
        "galaxies": galaxies
        if galaxies is not None
        else (catalog[catalog["extended"]] if catalog is not False else False),
    }
    candidates = detect(
        result, threshold, negative=negative, prefix=prefix, **sources, options=detect_options
    )
    labelled = label_candidates(
        candidates, truth, radius=radius, real_kinds=real_kinds, wcs=getattr(result, "wcs", None)
    )
    labelled["origin"] = np.full(len(labelled), "detection", dtype="U9")
    parts = [labelled]
    measured = DetectOptions(fwhm=candidates.meta["fwhm"], stamp_size=candidates.meta["stamp_size"])
    settings = {"options": measured, **sources}

    truth_xy, direction, half_length = truth_positions(truth, wcs=getattr(result, "wcs", None))
    if force_real_snr is not None and len(truth) and "kind" in truth.colnames:
        kinds = np.array([str(k).strip() for k in truth["kind"]])
        snr = (
            np.asarray(truth["snr_sci"], float)
            if "snr_sci" in truth.colnames
            else np.full(len(truth), np.inf)
        )
        ids = np.asarray(truth["id"], np.int64) if "id" in truth.colnames else np.arange(len(truth))
        found = set(np.asarray(labelled["truth_id"])[np.asarray(labelled["label"]) == 1].tolist())
        ny, nx = np.shape(result.S_corr)
        inside = (
            (truth_xy[:, 0] >= 0)
            & (truth_xy[:, 0] <= nx - 1)
            & (truth_xy[:, 1] >= 0)
            & (truth_xy[:, 1] <= ny - 1)
        )
        want = (
            np.isin(kinds, list(real_kinds))
            & (np.nan_to_num(snr, nan=-np.inf) >= force_real_snr)
            & inside
        )
        want &= ~np.isin(ids, list(found))
        if want.any():
            sign = (
                np.where(np.asarray(truth["flux_diff"], float)[want] < 0, -1, 1)
                if "flux_diff" in truth.colnames
                else 1
            )
            forced = measure_positions(
                result, truth_xy[want, 0], truth_xy[want, 1], sign, prefix=f"{prefix}-t", **settings
            )
            parts.append(_label_columns(forced, 1, kinds[want], ids[want], 0.0, "truth"))

    if random_bogus:
        fwhm_px = candidates.meta["fwhm"]
        clearance = max(2.0 * radius, 2.0 * fwhm_px)
        avoid = np.vstack(
            [
                np.column_stack([np.asarray(labelled["x"]), np.asarray(labelled["y"])]).reshape(
                    -1, 2
                ),
                truth_xy[half_length == 0],
            ]
        )
        x, y = random_positions(
            result, int(random_bogus), rng, avoid, clearance, edge=candidates.meta["edge"]
        )
        if len(x) and (half_length > 0).any():
            # Keep random "nothing here" stamps off tracks and trails too.
            dist, _ = truth_distances(
                np.column_stack([x, y]), truth_xy, direction, half_length, clearance
            )
            x, y = x[~np.isfinite(dist)], y[~np.isfinite(dist)]
        if len(x):
            random_table = measure_positions(result, x, y, 1, prefix=f"{prefix}-r", **settings)
            parts.append(_label_columns(random_table, 0, "random", -1, np.nan, "random"))
    table = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else labelled
    table.meta = dict(candidates.meta)
    return make_triplets(result, table, field=field)


def _iterate_inputs(inputs, difference_kwargs) -> Iterator[tuple[Any, Table, str, str, Any]]:
    """(result, truth, field, prefix, galaxies) for each pair of ``inputs``."""
    from ..manifest import Manifest

    if isinstance(inputs, (str, os.PathLike)):
        inputs = Manifest.load(inputs)
    if isinstance(inputs, Manifest):
        from ..diffim import difference
        from ..io import read_image

        for pair in inputs.pairs():
            if pair.truth is None:
                raise AstridInputError(
                    f"{pair.name}: the survey has no truth table for target {pair.target!r}"
                )
            truth = Table.read(pair.truth, format="ascii.ecsv")
            # Simulated fields keep their galaxy catalogue beside the truth: the true hosts.
            galaxy_file = pair.truth.parent / "galaxies.ecsv"
            galaxies = (
                Table.read(galaxy_file, format="ascii.ecsv") if galaxy_file.exists() else None
            )
            result = difference(
                read_image(pair.reference), read_image(pair.science), **difference_kwargs
            )
            yield result, truth, pair.target, pair.name, galaxies
        return
    if not isinstance(inputs, Iterable):
        raise AstridInputError(
            f"inputs: expected a survey folder, a Manifest or a list of (result, truth, field) tuples, got {type(inputs).__name__}"
        )
    for i, item in enumerate(inputs):
        if hasattr(item, "truth") and hasattr(item, "science") and not hasattr(item, "S_corr"):
            from ..diffim import difference

            result = difference(item.reference, item.science, **difference_kwargs)
            galaxies = getattr(item, "galaxies", None)
            yield result, item.truth, f"sim{i:04d}", f"sim{i:04d}", galaxies
            continue
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise AstridInputError(
                f"inputs[{i}]: expected (result, truth) or (result, truth, field), got {type(item).__name__}"
            )
        result, truth = item[0], item[1]
        field = str(item[2]) if len(item) == 3 else f"field{i:04d}"
        if not isinstance(truth, Table):
            raise AstridInputError(
                f"inputs[{i}]: truth must be an astropy Table, got {type(truth).__name__}"
            )
        yield result, truth, field, f"{field}-{i:04d}", None


def _checked_examples(examples, balance, survey, test_surveys) -> ExampleOptions:
    """Check the options of :func:`build_training_set`; the example options (default filled in)."""
    if balance is not None and not 0.0 < balance < 1.0:
        raise AstridInputError(f"balance: must be a fraction in (0, 1) or None, got {balance!r}")
    examples = ExampleOptions() if examples is None else examples
    if not isinstance(examples, ExampleOptions):
        raise AstridInputError(
            f"examples: expected an ExampleOptions, got {type(examples).__name__}"
        )
    if test_surveys is not None and survey is None:
        raise AstridInputError(
            "test_surveys: needs survey= (the survey of each input) to split by survey"
        )
    if survey is not None and not isinstance(survey, (str, Mapping)):
        raise AstridInputError(
            f"survey: expected a name or a {{field: survey}} mapping, got {type(survey).__name__}"
        )
    return examples


def build_training_set(
    inputs,
    examples: ExampleOptions | None = None,
    *,
    balance: float | None = 0.5,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    detect_options: DetectOptions | None = None,
    difference_kwargs: dict | None = None,
    survey: str | Mapping[str, str] | None = None,
    test_surveys: Sequence[str] | str | None = None,
) -> xr.Dataset | tuple[xr.Dataset, xr.Dataset]:
    """Labelled triplets from many differenced pairs, ready to train a real/bogus model.

    Parameters
    ----------
    inputs : list, Manifest or path
        A list of ``(DifferenceResult, truth Table, field name)`` tuples
        (or ``(result, truth)``; or ``SimulatedPair`` objects, differenced
        here), or a survey folder / :class:`astrid.Manifest` whose pairs
        are read and differenced with :func:`astrid.difference`.
    examples : ExampleOptions, optional
        Detection threshold, matching radius, real kinds, random bogus
        positions, forced truth positions, fading candidates; default
        ``ExampleOptions()``.
    balance : float or None, optional
        Fraction of real examples in the returned set (default 0.5): the
        majority class is randomly subsampled. None keeps every example.
    seed : int, optional
        Seed of the random positions and of the balancing.
    path : path-like, optional
        Stream each image's triplets into this Zarr/netCDF store (so the
        full set never sits in memory); the store keeps every example and
        the returned dataset is a lazy, balanced selection of it.
    detect_options : DetectOptions, optional
        Passed to :func:`detect`.
    difference_kwargs : dict, optional
        Passed to :func:`astrid.difference`.
    survey : str or mapping of str to str, optional
        The survey (or simulated survey) the pairs come from, recorded in a
        ``survey`` coordinate: one name for all, or ``{field: survey}`` for
        inputs that mix surveys (every field must be in the mapping).
        Default: no ``survey`` coordinate.
    test_surveys : str or sequence of str, optional
        Train on some surveys, test on others in one call: the examples of
        these surveys form a test set, the rest the training set (see
        :func:`split_by_survey`), each balanced on its own. Needs
        ``survey``.

    Returns
    -------
    xarray.Dataset, or (train, test) tuple of xarray.Dataset
        Triplets in the AstrID schema; per-candidate coordinates include all
        :func:`detect` columns and ``label``, ``kind``, ``truth_id``,
        ``offset``, ``origin`` (detection, random, truth), ``field`` and
        ``epoch`` (and ``survey`` when given). Attributes ``n_real``,
        ``n_bogus`` (after balancing), ``real_fraction``, ``seed``. With
        ``test_surveys``, the training and the test set.

    Raises
    ------
    AstridInputError
        Malformed inputs or parameters; no examples at all; a field missing
        from a ``survey`` mapping; ``test_surveys`` without ``survey``, or
        naming no survey of the inputs, or all of them.
    """
    examples = _checked_examples(examples, balance, survey, test_surveys)
    detect_options = DetectOptions() if detect_options is None else detect_options
    difference_kwargs = dict(difference_kwargs or {})
    rng = np.random.default_rng(seed)
    parts: list[xr.Dataset] = []
    n_images = 0
    for result, truth, field, prefix, galaxies in _iterate_inputs(inputs, difference_kwargs):
        ds = _examples_of_image(
            result,
            truth,
            field,
            prefix,
            options=examples,
            rng=rng,
            detect_options=detect_options,
            galaxies=galaxies,
        )
        if survey is not None:
            ds = ds.assign_coords(
                survey=(
                    "candidate",
                    np.full(ds.sizes["candidate"], _survey_of(survey, field), dtype=object),
                )
            )
        if path is not None:
            write_triplets(ds, path, mode="w" if n_images == 0 else "a")
        else:
            parts.append(ds.drop_indexes("candidate_id"))
        n_images += 1
    if n_images == 0:
        raise AstridInputError("inputs: no image pairs to build a training set from")
    if path is not None:
        dataset = load_triplets(path)
    else:
        dataset = xr.concat(
            parts,
            dim="candidate",
            data_vars="all",
            coords="different",
            compat="equals",
            join="exact",
            combine_attrs="drop_conflicts",
        )
        dataset = dataset.set_xindex("candidate_id")
    dataset.attrs["n_images"] = n_images
    if test_surveys is not None:
        train, test = split_by_survey(dataset, test_surveys)
        return _finish(train, balance, seed), _finish(test, balance, seed)
    return _finish(dataset, balance, seed)


def _survey_of(survey: str | Mapping[str, str], field: str) -> str:
    if isinstance(survey, str):
        return survey
    if field not in survey:
        raise AstridInputError(
            f"survey: field {field!r} is not in the survey mapping (has {sorted(survey)[:10]})"
        )
    return str(survey[field])


def _finish(dataset: xr.Dataset, balance: float | None, seed: int) -> xr.Dataset:
    if balance is not None:
        dataset = balance_classes(dataset, balance, seed=seed)
    labels = np.asarray(dataset["label"].values)
    dataset.attrs.update(
        {
            "n_real": int((labels == 1).sum()),
            "n_bogus": int((labels == 0).sum()),
            "real_fraction": float((labels == 1).mean()) if labels.size else math.nan,
            "seed": int(seed),
        }
    )
    return dataset


def balance_classes(ds: xr.Dataset, real_fraction: float = 0.5, *, seed: int = 0) -> xr.Dataset:
    """Subsample the majority class so that ``real_fraction`` of the examples are real.

    Parameters
    ----------
    ds : xarray.Dataset
        Triplets with a ``label`` coordinate (1 real, 0 bogus).
    real_fraction : float, optional
        Wanted fraction of ``label == 1`` (default 0.5).
    seed : int, optional
        Seed of the random subsample.

    Returns
    -------
    xarray.Dataset
        A selection (lazy if ``ds`` is) in the original order. When one
        class is empty nothing is dropped.
    """
    if not 0.0 < real_fraction < 1.0:
        raise AstridInputError(f"real_fraction: must be in (0, 1), got {real_fraction!r}")
    if "label" not in ds.coords:
        raise AstridInputError("triplets: no 'label' coordinate to balance on")
    labels = np.asarray(ds["label"].values)
    real = np.flatnonzero(labels == 1)
    bogus = np.flatnonzero(labels == 0)
    if real.size == 0 or bogus.size == 0:
        return ds
    rng = np.random.default_rng(seed)
    bogus_wanted = int(round(real.size * (1.0 - real_fraction) / real_fraction))
    if bogus_wanted <= bogus.size:
        bogus = rng.choice(bogus, size=bogus_wanted, replace=False)
    else:
        real_wanted = int(round(bogus.size * real_fraction / (1.0 - real_fraction)))
        real = rng.choice(real, size=min(real_wanted, real.size), replace=False)
    keep = np.sort(np.concatenate([real, bogus]))
    return ds.isel(candidate=keep)


def concat_triplets(sets) -> xr.Dataset:
    """Triplet sets one after the other, with the per-candidate coordinates they all have.

    For training sets of different origins (simulated fields, triplets on
    real backgrounds, ...), whose coordinates differ: those that are not in
    every set are dropped, the others kept; the dataset attributes they
    disagree on are dropped.

    Parameters
    ----------
    sets : sequence of xarray.Dataset
        Triplets in the AstrID schema, ``candidate_id`` unique over all of them.

    Returns
    -------
    xarray.Dataset
        In memory when the inputs are; indexed by ``candidate_id``.

    Raises
    ------
    AstridInputError
        No set, or ``candidate_id`` values repeated across the sets.
    """
    sets = list(sets)
    if not sets:
        raise AstridInputError("concat_triplets: no triplet set given")
    common = set.intersection(*(set(map(str, ds.coords)) for ds in sets))
    trimmed = []
    for ds in sets:
        drop = [c for c in map(str, ds.coords) if c not in common and c not in ds.dims]
        ds = ds.reset_coords(drop, drop=True)
        trimmed.append(ds.drop_indexes("candidate_id") if "candidate_id" in ds.indexes else ds)
    ids = np.concatenate([np.asarray(ds["candidate_id"].values).astype(str) for ds in trimmed])
    if np.unique(ids).size != ids.size:
        raise AstridInputError("concat_triplets: candidate_id values repeat across the sets")
    out = xr.concat(
        trimmed,
        dim="candidate",
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    return out.set_xindex("candidate_id")


def _field_values(ds: xr.Dataset) -> np.ndarray:
    if "field" not in ds.coords:
        raise AstridInputError(
            "triplets: no 'field' coordinate; build them with make_triplets(..., field=...)"
        )
    return np.array([str(v) for v in np.asarray(ds["field"].values).tolist()])


def _split(ds, fields, test_fields):
    test = np.isin(fields, list(test_fields))
    return ds.isel(candidate=np.flatnonzero(~test)), ds.isel(candidate=np.flatnonzero(test))


def _choose_test_fields(ordered, counts, test_fraction, total):
    test: list[str] = []
    n_test = 0
    for name in ordered:
        if n_test >= test_fraction * total or len(test) == len(ordered) - 1:
            break
        test.append(name)
        n_test += counts[name]
    return test


def split_by_field(
    ds: xr.Dataset, test_fraction: float = 0.2, seed: int = 0
) -> tuple[xr.Dataset, xr.Dataset]:
    """Split triplets into train and test sets with no field in both.

    Whole fields, in random order, go to the test set until it holds at
    least ``test_fraction`` of the candidates (at least one field stays in
    training).

    Parameters
    ----------
    ds : xarray.Dataset
        Triplets with a ``field`` coordinate.
    test_fraction : float, optional
        Smallest share of the candidates in the test set, in (0, 1).
    seed : int, optional
        Seed of the random order of the fields.

    Returns
    -------
    train : xarray.Dataset
        The training triplets.
    test : xarray.Dataset
        The test triplets.
    """
    if not 0.0 < test_fraction < 1.0:
        raise AstridInputError(f"test_fraction: must be in (0, 1), got {test_fraction!r}")
    fields = _field_values(ds)
    names, counts = np.unique(fields, return_counts=True)
    if names.size < 2:
        raise AstridInputError(
            f"triplets: need at least two fields to split by field, found {names.size}"
        )
    order = np.random.default_rng(seed).permutation(names.size)
    test = _choose_test_fields(
        [str(names[i]) for i in order], dict(zip(names, counts)), test_fraction, fields.size
    )
    return _split(ds, fields, test)


def split_by_time(ds: xr.Dataset, test_fraction: float = 0.2) -> tuple[xr.Dataset, xr.Dataset]:
    """Split triplets by time without sharing a field: the latest-starting fields are the test set.

    Fields are ordered by their first epoch (coordinate ``epoch``, MJD);
    the last ones go to the test set until it holds at least
    ``test_fraction`` of the candidates, so the model is tested on fields
    first observed after those it was trained on.

    Parameters
    ----------
    ds : xarray.Dataset
        Triplets with ``field`` and ``epoch`` (MJD) coordinates.
    test_fraction : float, optional
        Smallest share of the candidates in the test set, in (0, 1).

    Returns
    -------
    train : xarray.Dataset
        The training triplets.
    test : xarray.Dataset
        The test triplets.
    """
    if not 0.0 < test_fraction < 1.0:
        raise AstridInputError(f"test_fraction: must be in (0, 1), got {test_fraction!r}")
    fields = _field_values(ds)
    if "epoch" not in ds.coords:
        raise AstridInputError("triplets: no 'epoch' coordinate (MJD) to split by time")
    epochs = np.asarray(ds["epoch"].values, float)
    names, counts = np.unique(fields, return_counts=True)
    if names.size < 2:
        raise AstridInputError(
            f"triplets: need at least two fields to split by time, found {names.size}"
        )
    first = np.array(
        [
            np.nanmin(epochs[fields == name])
            if np.isfinite(epochs[fields == name]).any()
            else -np.inf
            for name in names
        ]
    )
    order = np.argsort(-first, kind="stable")
    test = _choose_test_fields(
        [str(names[i]) for i in order], dict(zip(names, counts)), test_fraction, fields.size
    )
    return _split(ds, fields, test)


def split_by_survey(
    ds: xr.Dataset,
    test_surveys: Sequence[str] | str,
    train_surveys: Sequence[str] | str | None = None,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Split triplets by survey: train on some surveys, test on others.

    Parameters
    ----------
    ds : xarray.Dataset
        Triplets with a ``survey`` coordinate (as :func:`astrid.alerts.read_alerts`
        writes, or :func:`build_training_set` with ``survey=``).
    test_surveys : str or sequence of str
        Surveys whose candidates form the test set (case-insensitive).
    train_surveys : str or sequence of str, optional
        Surveys whose candidates form the training set; default every
        survey not in ``test_surveys``.

    Returns
    -------
    train : xarray.Dataset
        The training selection of ``ds``, in its original order.
    test : xarray.Dataset
        The test selection of ``ds``, in its original order.

    Raises
    ------
    AstridInputError
        No ``survey`` coordinate; a named survey that ``ds`` does not hold
        (the message lists those it holds); a survey in both lists; an
        empty training or test set.

    Examples
    --------
    >>> ds = read_alerts(["ztf/", "winter/"])          # doctest: +SKIP
    >>> train, test = split_by_survey(ds, "WINTER")     # doctest: +SKIP
    """
    if "survey" not in ds.coords and "survey" not in ds.data_vars:
        raise AstridInputError(
            "triplets: no 'survey' coordinate; read alerts with astrid.alerts.read_alerts, "
            "or pass survey= to build_training_set"
        )
    surveys = np.array([str(v) for v in np.asarray(ds["survey"].values).tolist()])
    held = sorted(set(surveys.tolist()))
    by_upper = {name.upper(): name for name in held}

    def resolve(names, what):
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise AstridInputError(f"{what}: name at least one survey (the triplets hold {held})")
        out = []
        for name in names:
            if str(name).upper() not in by_upper:
                raise AstridInputError(
                    f"{what}: survey {name!r} is not in the triplets (they hold {held})"
                )
            out.append(by_upper[str(name).upper()])
        return out

    test = resolve(test_surveys, "test_surveys")
    train = (
        resolve(train_surveys, "train_surveys")
        if train_surveys is not None
        else [s for s in held if s not in test]
    )
    both = sorted(set(train) & set(test))
    if both:
        raise AstridInputError(f"train_surveys and test_surveys both name {both}")
    if not train:
        raise AstridInputError(
            f"test_surveys={test}: no survey left to train on (the triplets hold {held})"
        )
    in_test = np.isin(surveys, test)
    in_train = np.isin(surveys, train)
    return ds.isel(candidate=np.flatnonzero(in_train)), ds.isel(candidate=np.flatnonzero(in_test))
