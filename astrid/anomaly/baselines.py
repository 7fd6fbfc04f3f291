"""Anomaly baselines on candidate features: Isolation Forest and One-Class SVM (scikit-learn).

The research plan asks whether a deep model adds value over classic
anomaly detectors. These work on the features :func:`astrid.triplets.detect`
already computes for each candidate (no pixels), so they are cheap, and
they answer: *is a transient unusual among the detections of a difference
image?*

- **Features** (:data:`FEATURES`): the detection significance as
  ``log10 |score|``, sharpness, roundness, FWHM, elongation, dipole, masked
  fraction, and ``log10(1 + distance)`` to the nearest reference source
  and to the nearest galaxy. Logarithms tame the heavy tails of the
  significance and distances so standardisation means something.
- **Standardisation**: each feature minus its training median, divided by
  its training standard deviation (1 where that is 0).
- **NaN handling is explicit** (``nan_policy``): ``"median"`` (default)
  replaces a missing value by the training median of that feature, after
  the median is computed over the finite training values only — a missing
  neighbour distance (no source in the reference catalogue) then looks
  typical rather than extreme; ``"raise"`` refuses NaN features with an
  :class:`~astrid.errors.AstridInputError` naming the rows and columns. A
  feature that is NaN in every training row is refused either way.
- **Orientation**: :meth:`FeatureAnomalyModel.score` is higher for more
  anomalous candidates (scikit-learn's ``score_samples`` is higher for
  normal ones; it is negated).
- **What "normal" is**: ``fit(candidates)`` learns from all candidates
  (unsupervised); ``fit(candidates, labels)`` learns only from the bogus
  ones (label 0: novelty detection, the usual way to train a One-Class
  SVM), so real transients are the novelties.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .._optional import require
from ..errors import AstridInputError

__all__ = [
    "FEATURES",
    "NAN_POLICIES",
    "FeatureAnomalyModel",
    "IsolationForestBaseline",
    "OneClassSVMBaseline",
    "feature_matrix",
]

#: Feature columns used by default, each as (column of detect(), transform).
FEATURES: tuple[tuple[str, str], ...] = (
    ("score", "log10_abs"),
    ("sharpness", "identity"),
    ("roundness", "identity"),
    ("fwhm", "identity"),
    ("elongation", "identity"),
    ("dipole", "identity"),
    ("masked_fraction", "identity"),
    ("ref_source_distance", "log10_1p"),
    ("host_distance", "log10_1p"),
)
NAN_POLICIES = ("median", "raise")
_TRANSFORMS = {
    "identity": lambda v: v,
    "log10_abs": lambda v: np.log10(np.maximum(np.abs(v), 1e-6)),
    "log10_1p": lambda v: np.log10(1.0 + np.maximum(v, 0.0)),
}


def _feature_spec(features) -> tuple[tuple[str, str], ...]:
    if features is None:
        return FEATURES
    spec = []
    for item in features:
        name, transform = (item, "identity") if isinstance(item, str) else tuple(item)
        if transform not in _TRANSFORMS:
            raise AstridInputError(
                f"features: transform {transform!r} of {name!r} is not one of {sorted(_TRANSFORMS)}"
            )
        spec.append((str(name), transform))
    if not spec:
        raise AstridInputError("features: no feature columns given")
    return tuple(spec)


def feature_matrix(candidates, features=None, *, name: str = "candidates") -> np.ndarray:
    """The (n, k) float64 feature matrix of a candidate table, transformed, NaN kept.

    Parameters
    ----------
    candidates : astropy.table.Table or numpy.ndarray
        Output of :func:`astrid.triplets.detect` (or any table with the
        feature columns); a 2-D array is taken as the matrix itself.
    features : sequence, optional
        Column names, or (name, transform) pairs with transform one of
        ``identity``, ``log10_abs``, ``log10_1p``; default :data:`FEATURES`.
    name : str, optional
        Argument name used in error messages.

    Returns
    -------
    numpy.ndarray
        Feature matrix of shape (n candidates, k features), float64, NaN kept.
    """
    if isinstance(candidates, np.ndarray):
        matrix = np.asarray(candidates, dtype=float)
        if matrix.ndim != 2:
            raise AstridInputError(
                f"{name}: expected a 2-D feature matrix, got shape {matrix.shape}"
            )
        if np.isinf(matrix).any():
            raise AstridInputError(f"{name}: infinite feature values")
        return matrix
    if not isinstance(candidates, Table):
        raise AstridInputError(
            f"{name}: expected an astropy Table of candidates or a 2-D array, got {type(candidates).__name__}"
        )
    spec = _feature_spec(features)
    missing = [col for col, _ in spec if col not in candidates.colnames]
    if missing:
        raise AstridInputError(f"{name}: missing feature columns {missing}; detect() computes them")
    columns = []
    for col, transform in spec:
        values = np.asarray(candidates[col], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns.append(_TRANSFORMS[transform](values))
    matrix = np.stack(columns, axis=1) if columns else np.empty((len(candidates), 0))
    if np.isinf(matrix).any():
        raise AstridInputError(
            f"{name}: infinite values in feature columns {[c for (c, _), bad in zip(spec, np.isinf(matrix).any(0)) if bad]}"
        )
    return matrix


class FeatureAnomalyModel:
    """Base of the feature baselines: standardisation, NaN policy, score orientation.

    Parameters
    ----------
    features : sequence, optional
        See :func:`feature_matrix`.
    nan_policy : {"median", "raise"}, optional
        What to do with missing feature values (module docstring).
    """

    name = "feature anomaly model"

    def __init__(self, features=None, nan_policy: str = "median"):
        if nan_policy not in NAN_POLICIES:
            raise AstridInputError(f"nan_policy={nan_policy!r} is not one of {NAN_POLICIES}")
        self.features = None if features is None else _feature_spec(features)
        self.nan_policy = nan_policy
        self.center_ = self.scale_ = None
        self.estimator_ = None
        self.n_fit_ = 0

    @property
    def feature_names(self) -> list[str]:
        return [c for c, _ in (self.features or FEATURES)]

    def _estimator(self, n: int, seed: int = 0):  # pragma: no cover - subclasses
        raise NotImplementedError

    def _prepare(self, candidates, name: str) -> np.ndarray:
        matrix = feature_matrix(candidates, self.features, name=name)
        if self.center_ is not None and matrix.shape[1] != self.center_.size:
            raise AstridInputError(
                f"{name}: {matrix.shape[1]} features, the model was fitted on {self.center_.size}"
            )
        missing = np.isnan(matrix)
        if missing.any():
            if self.nan_policy == "raise":
                rows = np.flatnonzero(missing.any(1))
                cols = [
                    self.feature_names[j] if j < len(self.feature_names) else j
                    for j in np.flatnonzero(missing.any(0))
                ]
                raise AstridInputError(
                    f"{name}: NaN features in {rows.size} rows (first {rows[:5].tolist()}), columns {cols}; "
                    "use nan_policy='median' to replace them by the training medians"
                )
            if self.center_ is not None:
                matrix = np.where(missing, self.center_[None, :], matrix)
        return matrix

    def fit(self, candidates, labels=None, *, seed: int = 0):
        """Fit on candidates (all; or only the bogus ones, label 0, when ``labels`` are given).

        Parameters
        ----------
        candidates : astropy.table.Table or numpy.ndarray
            Candidates of the training fields (or a feature matrix).
        labels : array-like of {0, 1}, optional
            Novelty mode: fit on the rows with label 0 only.
        seed : int, optional
            ``random_state`` of the estimator.

        Returns
        -------
        self
        """
        matrix = feature_matrix(candidates, self.features, name="candidates")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (matrix.shape[0],):
                raise AstridInputError(
                    f"labels: {labels.shape} values for {matrix.shape[0]} candidates"
                )
            matrix = matrix[labels == 0]
        if matrix.shape[0] < 2:
            raise AstridInputError(
                f"candidates: need at least 2 rows to fit, got {matrix.shape[0]}"
            )
        if self.nan_policy == "raise":
            self.center_ = None
            matrix = self._prepare(matrix, "candidates")
        all_nan = np.isnan(matrix).all(0)
        if all_nan.any():
            cols = (
                [self.feature_names[j] for j in np.flatnonzero(all_nan)]
                if len(self.feature_names) == matrix.shape[1]
                else np.flatnonzero(all_nan).tolist()
            )
            raise AstridInputError(f"candidates: features {cols} are NaN in every training row")
        self.center_ = np.nanmedian(matrix, axis=0)
        matrix = np.where(np.isnan(matrix), self.center_[None, :], matrix)
        scale = matrix.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.estimator_ = self._estimator(matrix.shape[0], seed)
        self.estimator_.fit((matrix - self.center_) / self.scale_)
        self.n_fit_ = int(matrix.shape[0])
        return self

    def score(self, candidates) -> np.ndarray:
        """Anomaly scores, higher = more anomalous.

        Parameters
        ----------
        candidates : astropy.table.Table or numpy.ndarray

        Returns
        -------
        numpy.ndarray of float, one per row
        """
        if self.estimator_ is None:
            raise AstridInputError(f"{self.name}: call fit() before score()")
        matrix = self._prepare(candidates, "candidates")
        if matrix.shape[0] == 0:
            return np.empty(0)
        return -self.estimator_.score_samples((matrix - self.center_) / self.scale_)


class IsolationForestBaseline(FeatureAnomalyModel):
    """Scikit-learn's :class:`~sklearn.ensemble.IsolationForest` on standardised candidate features.

    Parameters
    ----------
    n_estimators : int, optional
        Trees (default 200).
    features, nan_policy : optional
        See :class:`FeatureAnomalyModel`.
    """

    name = "Isolation Forest"

    def __init__(self, n_estimators: int = 200, features=None, nan_policy: str = "median"):
        super().__init__(features, nan_policy)
        self.n_estimators = int(n_estimators)

    def _estimator(self, n, seed=0):
        ensemble = require("sklearn.ensemble", "the Isolation Forest baseline")
        return ensemble.IsolationForest(n_estimators=self.n_estimators, random_state=seed)


class OneClassSVMBaseline(FeatureAnomalyModel):
    """One-Class SVM on standardised candidate features.

    Scikit-learn's :class:`~sklearn.svm.OneClassSVM` with an RBF kernel.

    Parameters
    ----------
    nu : float, optional
        Upper bound on the training fraction treated as outliers (default 0.05).
    gamma : str or float, optional
        RBF kernel width (default ``"scale"``).
    max_train : int, optional
        At most this many training rows, drawn at random (the fit is
        quadratic in the rows).
    features, nan_policy : optional
        See :class:`FeatureAnomalyModel`.
    """

    name = "One-Class SVM"

    def __init__(
        self,
        nu: float = 0.05,
        gamma="scale",
        max_train: int = 5000,
        features=None,
        nan_policy: str = "median",
    ):
        super().__init__(features, nan_policy)
        if not 0.0 < float(nu) <= 1.0:
            raise AstridInputError(f"nu={nu!r} must be in (0, 1]")
        self.nu, self.gamma, self.max_train = float(nu), gamma, int(max_train)

    def _estimator(self, n, seed=0):
        svm = require("sklearn.svm", "the One-Class SVM baseline")
        estimator = svm.OneClassSVM(nu=self.nu, gamma=self.gamma)
        if n <= self.max_train:
            return estimator
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(n, self.max_train, replace=False))

        class Subsampled:
            def fit(self, x):
                estimator.fit(x[keep])
                return self

            def score_samples(self, x):
                return estimator.score_samples(x)

        return Subsampled()
