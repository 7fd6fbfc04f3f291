"""Score calibration: temperature scaling and isotonic regression, fitted on a validation set.

A braai score is the sigmoid of the network's last activation. Class weights,
early stopping and a small training set make it a *ranking*, not a
probability: the fraction of real candidates among those scored 0.9 need not
be 0.9. :func:`fit_calibration` fits a monotonic map from raw scores to
calibrated ones on labelled data the network did not train on (the
validation split of :func:`astrid.braai.train`):

``"temperature"`` (default)
    Guo et al. (2017): ``sigmoid(logit(p) / T)`` with the one parameter ``T``
    chosen to minimise the negative log-likelihood. ``T > 1`` softens
    over-confident scores, ``T < 1`` sharpens timid ones. One parameter
    cannot overfit a small validation set, and the order of the scores (so
    ROC and precision-recall curves) is unchanged.
``"platt"``
    Platt (1999) scaling on the logit: ``sigmoid(a logit(p) + b)``, two
    parameters by the same likelihood. The shift ``b`` corrects what one
    temperature cannot: scores all on one side of 0.5 because class weights
    or a different class balance moved them (``a = 1/T``, ``b = 0`` is
    temperature scaling).
``"isotonic"``
    Zadrozny & Elkan (2002): the best non-decreasing step function of the
    score (scikit-learn's ``IsotonicRegression``), applied by linear
    interpolation between its breakpoints. It can correct any monotonic
    distortion, including a shift from class weighting, but needs more data
    and may tie scores that were distinct.

Both are monotonic, so a calibrated threshold is a raw threshold moved, and
both are stored as plain JSON in the model card (``card["calibration"]``),
from which :func:`astrid.score.score` and the TFLite sidecar apply them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import AstridInputError
from ._evaluate import calibration_curve, labels_of

__all__ = ["Calibration", "fit_calibration", "CALIBRATION_METHODS", "CALIBRATION_FORMAT"]

#: Methods :func:`fit_calibration` knows.
CALIBRATION_METHODS = ("temperature", "platt", "isotonic")
#: ``format`` entry of a calibration's dictionary.
CALIBRATION_FORMAT = "astrid-calibration/1"
# Scores are clipped to [_EPS, 1 - _EPS] before the logit: float32 sigmoids saturate at 0 and 1.
_EPS = 1e-7
# Search range of log(T): T in [1e-3, 1e3] (a barely trained network's timid scores need T << 1).
_LOG_T_RANGE = (-math.log(1000.0), math.log(1000.0))
# Most isotonic breakpoints kept in a card (thinned evenly beyond that).
_MAX_BREAKPOINTS = 512


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


@dataclass(frozen=True)
class Calibration:
    """A fitted monotonic map from raw scores to calibrated probabilities.

    Build one with :func:`fit_calibration` or :meth:`from_dict`; apply it
    with :meth:`apply`.

    Attributes
    ----------
    method : {"temperature", "platt", "isotonic"}
    temperature : float or None
        ``T`` of temperature scaling, ``1/a`` of Platt scaling (None for
        isotonic).
    bias : float or None
        ``b`` of Platt scaling (None otherwise).
    x : tuple of float
        Isotonic breakpoints: raw scores (increasing); empty for temperature
        scaling.
    y : tuple of float
        Calibrated values (non-decreasing) at the breakpoints ``x``; empty for
        temperature scaling.
    n : int
        Labelled candidates it was fitted on.
    ece_before : float or None
        Expected calibration error (:func:`astrid.braai.calibration_curve`,
        10 bins) of the fitting data before calibration. In-sample: judge a
        calibration on data it was not fitted on.
    ece_after : float or None
        The same after calibration (also in-sample).
    """

    method: str
    temperature: float | None = None
    bias: float | None = None
    x: tuple[float, ...] = field(default=(), repr=False)
    y: tuple[float, ...] = field(default=(), repr=False)
    n: int = 0
    ece_before: float | None = None
    ece_after: float | None = None

    def __post_init__(self):
        if self.method not in CALIBRATION_METHODS:
            raise AstridInputError(
                f"calibration method={self.method!r} is not one of {CALIBRATION_METHODS}"
            )
        if self.method == "platt" and not (
            isinstance(self.bias, (int, float)) and math.isfinite(self.bias)
        ):
            raise AstridInputError(
                f"calibration: bias={self.bias!r} of Platt scaling must be a finite number"
            )
        if self.method in ("temperature", "platt"):
            t = self.temperature
            if t is None or not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
                raise AstridInputError(f"calibration: temperature={t!r} must be a positive number")
        else:
            x, y = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
            if x.ndim != 1 or x.size < 1 or x.shape != y.shape:
                raise AstridInputError(
                    "calibration: isotonic breakpoints x and y must be equal-length, non-empty lists"
                )
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                raise AstridInputError("calibration: isotonic breakpoints must be finite")
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
                raise AstridInputError(
                    "calibration: isotonic breakpoints must be non-decreasing, with values in [0, 1]"
                )

    def apply(self, scores):
        """Calibrated scores.

        Parameters
        ----------
        scores : array-like of float in [0, 1]
            Raw scores (NaN stays NaN). A DataArray keeps its coordinates.

        Returns
        -------
        numpy.ndarray or xarray.DataArray
            Same shape and, for floating input, the same dtype.
        """
        values = np.asarray(getattr(scores, "values", scores))
        dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        raw = values.astype(np.float64)
        if self.method in ("temperature", "platt"):
            out = _sigmoid(_logit(raw) / self.temperature + (self.bias or 0.0))
        else:
            out = np.interp(raw, np.asarray(self.x), np.asarray(self.y))
        out = np.where(np.isnan(raw), np.nan, out).astype(dtype, copy=False)
        if hasattr(scores, "copy") and hasattr(scores, "dims"):
            result = scores.copy(data=out)
            return result
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (what the model card and the TFLite sidecar store)."""
        out: dict[str, Any] = {"format": CALIBRATION_FORMAT, "method": self.method}
        if self.method in ("temperature", "platt"):
            out["temperature"] = float(self.temperature)
            if self.method == "platt":
                out["bias"] = float(self.bias)
        else:
            out["x"] = [float(v) for v in self.x]
            out["y"] = [float(v) for v in self.y]
        out["n"] = int(self.n)
        out["ece_before"] = None if self.ece_before is None else float(self.ece_before)
        out["ece_after"] = None if self.ece_after is None else float(self.ece_after)
        return out

    @classmethod
    def from_dict(cls, data: dict, what: str = "calibration") -> "Calibration":
        """Rebuild from :meth:`to_dict`'s output (e.g. ``card["calibration"]``).

        Raises
        ------
        AstridInputError
            Not a calibration dictionary, or invalid values; the message
            names ``what``.
        """
        if isinstance(data, Calibration):
            return data
        if not isinstance(data, dict) or data.get("method") not in CALIBRATION_METHODS:
            method = data.get("method") if isinstance(data, dict) else type(data).__name__
            raise AstridInputError(
                f"{what}: not a score calibration (method {method!r}, expected one of "
                f"{CALIBRATION_METHODS})"
            )
        try:
            return cls(
                method=data["method"],
                temperature=None if data.get("temperature") is None else float(data["temperature"]),
                bias=None if data.get("bias") is None else float(data["bias"]),
                x=tuple(float(v) for v in data.get("x", ())),
                y=tuple(float(v) for v in data.get("y", ())),
                n=int(data.get("n", 0)),
                ece_before=None if data.get("ece_before") is None else float(data["ece_before"]),
                ece_after=None if data.get("ece_after") is None else float(data["ece_after"]),
            )
        except AstridInputError as exc:
            raise AstridInputError(f"{what}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise AstridInputError(f"{what}: invalid calibration values ({exc})") from None


def _fit_temperature(labels: np.ndarray, scores: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    z = _logit(scores)
    y = labels.astype(np.float64)

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        # -[y log σ(s) + (1-y) log(1-σ(s))] = softplus(s) - y s, computed stably
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    result = minimize_scalar(nll, bounds=_LOG_T_RANGE, method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


def _fit_platt(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(T = 1/a, b) of sigmoid(a logit(p) + b) by maximum likelihood."""
    from scipy.optimize import minimize

    z = _logit(scores)
    y = labels.astype(np.float64)

    def nll_and_gradient(theta):
        a, b = theta
        s = a * z + b
        residual = _sigmoid(s) - y
        return float(np.mean(np.logaddexp(0.0, s) - y * s)), np.array(
            [np.mean(residual * z), np.mean(residual)]
        )

    start = np.array([1.0 / _fit_temperature(labels, scores), 0.0])
    result = minimize(
        nll_and_gradient, start, jac=True, method="L-BFGS-B", bounds=[(1e-3, 1e3), (-50.0, 50.0)]
    )
    a, b = (float(v) for v in result.x)
    return 1.0 / a, b


def _fit_isotonic(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from .._optional import require

    isotonic = require("sklearn.isotonic", "isotonic calibration")
    model = isotonic.IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(scores, labels.astype(np.float64))
    x = np.asarray(model.X_thresholds_, dtype=np.float64)
    y = np.asarray(model.y_thresholds_, dtype=np.float64)
    if x.size > _MAX_BREAKPOINTS:
        keep = np.unique(np.linspace(0, x.size - 1, _MAX_BREAKPOINTS).round().astype(int))
        x, y = x[keep], y[keep]
    return tuple(float(v) for v in x), tuple(float(v) for v in np.clip(y, 0.0, 1.0))


def fit_calibration(labels, scores, method: str = "temperature", n_bins: int = 10) -> Calibration:
    """Fit a score calibration on labelled candidates.

    Parameters
    ----------
    labels : array-like of {0, 1}, shape (n,)
        True classes (1 real), of candidates the model did **not** train on
        (a validation set).
    scores : array-like of float in [0, 1], shape (n,)
        The model's raw scores of them. NaN scores (no usable data) are
        left out.
    method : {"temperature", "platt", "isotonic"}, optional
        Temperature scaling (default; one parameter), Platt scaling
        (temperature and shift) or isotonic regression (needs
        scikit-learn).
    n_bins : int, optional
        Bins of the ECE recorded before and after (default 10, as
        :func:`astrid.braai.evaluate`).

    Returns
    -------
    Calibration
        With :meth:`~Calibration.apply`, :meth:`~Calibration.to_dict` and
        the in-sample ``ece_before``/``ece_after``.

    Raises
    ------
    AstridInputError
        Unknown method, labels and scores of different lengths, non-binary
        labels, scores outside [0, 1], or only one class (nothing to
        calibrate against).

    Examples
    --------
    >>> cal = fit_calibration([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.95])
    >>> cal.method, round(cal.temperature, 2) > 0
    ('temperature', True)
    """
    if method not in CALIBRATION_METHODS:
        raise AstridInputError(f"method={method!r} is not one of {CALIBRATION_METHODS}")
    labels = labels_of(np.asarray(getattr(labels, "values", labels)), "labels")
    scores = np.asarray(getattr(scores, "values", scores), dtype=np.float64).reshape(-1)
    if scores.shape != labels.shape:
        raise AstridInputError(f"fit_calibration: {labels.size} labels but {scores.size} scores")
    keep = ~np.isnan(scores)
    labels, scores = labels[keep], scores[keep]
    if scores.size and (
        scores.min() < 0.0 or scores.max() > 1.0 or not np.all(np.isfinite(scores))
    ):
        raise AstridInputError("scores: calibration needs raw scores in [0, 1] (sigmoid outputs)")
    n_real = int(labels.sum())
    if n_real == 0 or n_real == labels.size:
        raise AstridInputError(
            f"fit_calibration: the {labels.size} labelled candidates are all "
            f"{'real' if n_real else 'bogus'}; a calibration needs both classes"
        )
    before = calibration_curve(labels, scores, n_bins)["ece"]
    if method == "temperature":
        fitted = Calibration(
            method, temperature=_fit_temperature(labels, scores), n=int(labels.size)
        )
    elif method == "platt":
        temperature, bias = _fit_platt(labels, scores)
        fitted = Calibration(method, temperature=temperature, bias=bias, n=int(labels.size))
    else:
        x, y = _fit_isotonic(labels, scores)
        fitted = Calibration(method, x=x, y=y, n=int(labels.size))
    after = calibration_curve(labels, fitted.apply(scores), n_bins)["ece"]
    return Calibration(
        fitted.method,
        fitted.temperature,
        fitted.bias,
        fitted.x,
        fitted.y,
        fitted.n,
        float(before),
        float(after),
    )
