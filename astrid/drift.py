"""Score drift: is a model scoring data unlike the data it was validated on?

A real/bogus model's scores on its validation set are recorded in its model
card (:func:`astrid.braai.train` writes them as a :func:`score_distribution`);
every scoring run (``astrid score``, :func:`astrid.batch.process_pairs` with
a model) compares the distribution of its own scores with that reference
(:func:`compare`) and writes two figures into its output table:

- the **population-stability index** (PSI) over the reference's deciles,
  ``sum((p - q) * ln(p / q))`` with ``p`` the run's and ``q`` the reference's
  fraction of scores in each bin (half a count is added to every bin of
  both, so an empty bin does not make it infinite);
- the **Kolmogorov–Smirnov distance**, the largest gap between the two
  cumulative distributions.

A distribution is stored as up to :data:`MAX_VALUES` evenly spaced
quantiles of the scores - all of them, sorted, when there are fewer - so
both figures are those of the scores themselves (of a reference with more
scores, to within 1/1000 in rank). No fixed binning of [0, 1] would do: a
real/bogus model puts most scores within 0.01 of 0 or 1 (d6_m7 gives 70 %
of real ZTF alerts a score above 0.997), a barely trained one puts them all
near 0.5, and a shift among such scores is drift all the same. Both
figures depend only on the ranks of the scores, so they mean the same for
every model.

A :class:`DriftWarning` is issued when the PSI exceeds :data:`PSI_LEVEL`
(0.25, the usual credit-scoring convention for a "significant shift";
0.1–0.25 is often called "moderate" and is reported but not warned about).
Runs (or references) with fewer than :data:`MIN_SCORES` finite scores are
compared but never warned about: over ten bins a PSI from *n* scores has a
null expectation of about ``9 / n`` and a spread of about ``4 / n`` (plus as
much again from the reference's own size), so below 100 scores chance alone
reaches the warning level too often. The KS distance is reported with its
5 % critical value (``1.36 * sqrt(1/n + 1/m)``) for reading, not used to
warn: on thousands of scores it rejects differences too small to matter.

Drift means the *inputs* changed (another survey, new seeing, a broken
pipeline stage, a different mix of real and bogus); it does not by itself
mean the scores are wrong. A changed real fraction also moves the score
distribution, so read the warning as "look at these inputs", not as "the
model is broken".
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AstridFileError, AstridInputError, AstridWarning

__all__ = [
    "DriftWarning",
    "DriftResult",
    "score_distribution",
    "compare",
    "load_reference",
    "reference_for_model",
    "PSI_LEVEL",
    "MIN_SCORES",
    "DISTRIBUTION_FORMAT",
]

#: ``format`` entry of a stored score distribution.
DISTRIBUTION_FORMAT = "astrid-score-distribution/1"
#: PSI above which a run's scores are called drifted (and :class:`DriftWarning` is issued).
PSI_LEVEL = 0.25
#: Fewest finite scores for which drift is warned about.
MIN_SCORES = 100
#: Most quantiles a stored distribution keeps (all the scores when there are fewer).
MAX_VALUES = 1000
#: Bins of the PSI: the reference's deciles (fewer when tied scores make deciles coincide).
PSI_BINS = 10
_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
# Scores a little outside [0, 1] (float rounding of a sigmoid) are clipped into it.
_SLACK = 1e-4


class DriftWarning(AstridWarning):
    """A run's score distribution differs from the model's validation scores (PSI above :data:`PSI_LEVEL`)."""


@dataclass
class DriftResult:
    """What :func:`compare` found.

    Attributes
    ----------
    psi : float
        Population-stability index of the run against the reference.
    ks : float
        Kolmogorov–Smirnov distance.
    ks_critical : float
        5 % critical value of the KS distance for these sample sizes.
    n : int
        Number of finite scores of the run.
    n_reference : int
        Number of finite scores of the reference.
    level : float
        The PSI warning level used.
    drifted : bool
        ``psi > level``, with at least :data:`MIN_SCORES` scores in the run and in the reference.
    reference : str
        Where the reference came from.
    note : str
        Why no verdict was possible (too few scores), else empty.
    """

    psi: float
    ks: float
    ks_critical: float
    n: int
    n_reference: int
    level: float
    drifted: bool
    reference: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (rounded to 6 digits)."""
        out = asdict(self)
        for key in ("psi", "ks", "ks_critical"):
            out[key] = round(float(out[key]), 6)
        return out

    def summary(self) -> str:
        """One line for a log or a terminal."""
        verdict = "DRIFT" if self.drifted else "no drift"
        text = (
            f"drift check: PSI {self.psi:.3f} (warn > {self.level:g}), KS {self.ks:.3f} "
            f"(5% critical {self.ks_critical:.3f}) on {self.n} scores vs {self.n_reference} of "
            f"{self.reference}: {verdict}"
        )
        return text + (f" ({self.note})" if self.note else "")


def _finite_scores(scores, what: str) -> tuple[np.ndarray, int]:
    values = np.asarray(getattr(scores, "values", scores), dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < -_SLACK or finite.max() > 1 + _SLACK):
        raise AstridInputError(
            f"{what}: scores must lie in [0, 1] (probabilities), found {finite.min():.3g} to {finite.max():.3g}"
        )
    return np.clip(finite, 0.0, 1.0), int(values.size - finite.size)


def score_distribution(scores, source: str = "") -> dict[str, Any]:
    """The distribution of scores as a small JSON-ready record (what model cards store).

    Parameters
    ----------
    scores : array-like
        Scores in [0, 1]; NaN are counted and left out.
    source : str, optional
        What the scores are (e.g. ``"validation set of vgg6"``).

    Returns
    -------
    dict
        ``format`` (:data:`DISTRIBUTION_FORMAT`), ``n``, ``n_nan``,
        ``values`` (the sorted scores, or :data:`MAX_VALUES` evenly spaced
        quantiles of them; float32 precision),
        ``quantiles`` ({"0.5": median, ...}), ``mean``, ``std``, ``source``.

    Raises
    ------
    AstridInputError
        Scores outside [0, 1].
    """
    values, n_nan = _finite_scores(scores, "scores")
    kept = np.sort(values)
    if kept.size > MAX_VALUES:
        kept = np.quantile(kept, (np.arange(MAX_VALUES) + 0.5) / MAX_VALUES, method="inverted_cdf")
    quantiles = np.quantile(values, _QUANTILES) if values.size else [math.nan] * len(_QUANTILES)
    return {
        "format": DISTRIBUTION_FORMAT,
        "n": int(values.size),
        "n_nan": n_nan,
        "values": [float(v) for v in kept.astype(np.float32)],
        "quantiles": {
            f"{q:g}": (round(float(v), 6) if values.size else None)
            for q, v in zip(_QUANTILES, quantiles)
        },
        "mean": round(float(values.mean()), 6) if values.size else None,
        "std": round(float(values.std()), 6) if values.size else None,
        "source": str(source),
    }


def _values_of(distribution: dict, what: str) -> np.ndarray:
    try:
        values = np.sort(np.asarray(distribution.get("values", []), dtype=np.float64).ravel())
    except (TypeError, ValueError) as exc:
        raise AstridInputError(
            f"{what}: the 'values' of a score distribution must be numbers ({exc})"
        ) from exc
    if not np.all(np.isfinite(values)) or (
        values.size and (values[0] < -_SLACK or values[-1] > 1 + _SLACK)
    ):
        raise AstridInputError(
            f"{what}: the 'values' of a score distribution must be finite scores in [0, 1]"
        )
    if values.size == 0 and int(distribution.get("n", 0)) > 0:
        raise AstridInputError(
            f"{what}: a score distribution of {distribution.get('n')} scores lists no 'values'"
        )
    return values


def _from_mapping(mapping: dict, what: str) -> dict:
    if mapping.get("format") == DISTRIBUTION_FORMAT:
        _values_of(mapping, what)
        return mapping
    nested = mapping.get("validation_scores")
    if isinstance(nested, dict):
        return _from_mapping(nested, what)
    card = mapping.get("card")
    if isinstance(card, dict):
        return _from_mapping(card, what)
    kind = mapping.get("format", "no 'format' entry")
    raise AstridInputError(
        f"{what}: holds no validation score distribution (format {kind!r}); models trained before the drift "
        "check have none: pass reference scores (an array, or a file of scores) instead"
    )


def load_reference(reference, what: str = "reference") -> dict | None:
    """A reference score distribution from what a user has at hand.

    Parameters
    ----------
    reference : None, array-like, dict or path-like
        None (no reference); scores (array, list, DataArray); a
        distribution from :func:`score_distribution`; a model card (dict or
        ``.card.json``) or a TFLite sidecar holding one under
        ``validation_scores``; a ``.json`` file of either; a ``.npy`` array;
        a ``.txt``/``.csv`` of one score per line; or a table
        (``.ecsv``, ``.parquet``, ``.fits``) with a ``score`` column, e.g.
        the output of an earlier ``astrid score`` run.
    what : str, optional
        Name used in error messages.

    Returns
    -------
    dict or None
        A :func:`score_distribution` record.

    Raises
    ------
    AstridFileError
        A file that is missing or cannot be read.
    AstridInputError
        Nothing usable in it (no distribution, no ``score`` column, scores
        outside [0, 1], no finite scores).
    """
    if reference is None:
        return None
    if isinstance(reference, dict):
        out = _from_mapping(reference, what)
    elif isinstance(reference, (str, os.PathLike)):
        out = _load_file(Path(reference))
    else:
        out = score_distribution(reference, source=f"{what} (array)")
    if int(out.get("n", 0)) == 0:
        raise AstridInputError(f"{what}: the reference holds no finite scores")
    return out


def _load_file(path: Path) -> dict:
    if not path.is_file():
        raise AstridFileError(f"{path}: no such reference-scores file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, list):
                return score_distribution(data, source=str(path))
            if not isinstance(data, dict):
                raise AstridInputError(
                    f"{path}: expected a model card, a score distribution or a list of scores"
                )
            out = dict(_from_mapping(data, str(path)))
            if not out.get("source"):
                out["source"] = str(path)
            return out
        if suffix == ".npy":
            return score_distribution(np.load(path, allow_pickle=False), source=str(path))
        if suffix in (".txt", ".csv", ".dat"):
            try:
                values = np.loadtxt(
                    path, dtype=np.float64, delimiter="," if suffix == ".csv" else None, ndmin=1
                )
            except ValueError:
                values = None
            if values is not None and values.ndim == 1:
                return score_distribution(values, source=str(path))
        from astropy.table import Table

        table = Table.read(path, format="ascii.csv" if suffix == ".csv" else None)
    except AstridInputError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise AstridFileError(
            f"{path}: cannot read reference scores ({type(exc).__name__}: {exc})"
        ) from exc
    if "score" not in table.colnames:
        raise AstridInputError(
            f"{path}: a reference-scores table needs a 'score' column, found {table.colnames[:8]}"
        )
    return score_distribution(np.asarray(table["score"], dtype=np.float64), source=str(path))


def reference_for_model(model) -> dict | None:
    """The validation score distribution recorded beside a model file, or None.

    Looks at ``<name>.card.json`` (written by :func:`astrid.braai.train`; the
    name without ``.keras``/``.tflite``/``.h5``) and at a ``.tflite.json``
    sidecar that carries ``validation_scores``.

    Parameters
    ----------
    model : str, path-like or keras.Model
        A model file, or a loaded model carrying its card as ``astrid_card``.

    Returns
    -------
    dict or None
        The reference distribution (:func:`score_distribution`'s format, with
        ``source`` naming the card), or None when no card records one.

    Raises
    ------
    AstridFileError
        A card exists but cannot be read as JSON.
    """
    if not isinstance(model, (str, os.PathLike)):
        card = getattr(model, "astrid_card", None)
        return _from_mapping(card, "model card") if isinstance(card, dict) else None
    path = Path(model)
    stem = path.name
    for suffix in (".keras", ".tflite", ".h5", ".hdf5"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    candidates = [path.with_name(stem + ".card.json"), path.with_name(path.name + ".json")]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            data = json.loads(candidate.read_text())
        except (OSError, ValueError) as exc:
            raise AstridFileError(f"{candidate}: unreadable model card ({exc})") from exc
        if not isinstance(data, dict):
            continue
        try:
            out = dict(_from_mapping(data, str(candidate)))
        except AstridInputError:
            continue  # a card from before the drift check: no reference
        if not out.get("source"):
            out["source"] = str(candidate)
        return out
    return None


def _psi(run: np.ndarray, ref: np.ndarray, m: int) -> float:
    """PSI over the deciles of ``ref`` (sorted; stands for ``m`` scores)."""
    edges = np.unique(np.quantile(ref, np.arange(1, PSI_BINS) / PSI_BINS, method="inverted_cdf"))
    k = edges.size + 1
    a = np.bincount(np.searchsorted(edges, run, side="left"), minlength=k) + 0.5
    b = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=k) * (m / ref.size) + 0.5
    p, q = a / a.sum(), b / b.sum()
    return float(np.sum((p - q) * np.log(p / q)))


def _ks(run: np.ndarray, ref: np.ndarray) -> float:
    """Two-sample KS distance of two sorted samples."""
    points = np.concatenate([run, ref])
    below_run = np.searchsorted(run, points, side="right") / run.size
    below_ref = np.searchsorted(ref, points, side="right") / ref.size
    return float(np.max(np.abs(below_run - below_ref)))


def compare(
    scores, reference, *, level: float = PSI_LEVEL, warn: bool = True, what: str = "scores"
) -> DriftResult:
    """Compare a run's scores with a reference distribution.

    Parameters
    ----------
    scores : array-like
        The run's scores in [0, 1] (NaN are left out).
    reference : array-like, dict or path-like
        Anything :func:`load_reference` takes (a model card, a stored
        distribution, reference scores).
    level : float, optional
        PSI above which the run is called drifted (default :data:`PSI_LEVEL`).
    warn : bool, optional
        Issue a :class:`DriftWarning` when drifted.
    what : str, optional
        Name of the run in the warning.

    Returns
    -------
    DriftResult
        The PSI and KS statistics and the verdict.

    Raises
    ------
    AstridInputError
        Scores outside [0, 1], an unusable reference, a non-positive level.
    """
    if not (np.isfinite(level) and level > 0):
        raise AstridInputError(
            f"level: the PSI warning level must be a positive number, got {level!r}"
        )
    ref = load_reference(reference)
    if ref is None:
        raise AstridInputError("reference: compare() needs a reference distribution, got None")
    values, _ = _finite_scores(scores, what)
    values = np.sort(values)
    ref_values = _values_of(ref, "reference")
    n, m = int(values.size), int(ref.get("n", ref_values.size))
    if n == 0 or ref_values.size == 0:
        return DriftResult(
            psi=math.nan,
            ks=math.nan,
            ks_critical=math.nan,
            n=0,
            n_reference=m,
            level=float(level),
            drifted=False,
            reference=str(ref.get("source") or "reference"),
            note="no finite scores",
        )
    psi = _psi(values, ref_values, m)
    ks = _ks(values, ref_values)
    ks_critical = 1.36 * math.sqrt(1.0 / n + 1.0 / m)
    enough = n >= MIN_SCORES and m >= MIN_SCORES
    result = DriftResult(
        psi=psi,
        ks=ks,
        ks_critical=ks_critical,
        n=n,
        n_reference=m,
        level=float(level),
        drifted=bool(enough and psi > level),
        reference=str(ref.get("source") or "reference"),
        note=""
        if enough
        else f"fewer than {MIN_SCORES} scores in the run or the reference: figures reported, "
        "no verdict",
    )
    if warn and result.drifted:
        warnings.warn(f"{what}: {result.summary()}", DriftWarning, stacklevel=2)
    return result
