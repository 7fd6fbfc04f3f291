"""A verdict on every difference: pass, warn or fail, and why.

:func:`assess` reads the numbers :func:`astrid.difference` already measured
(``DifferenceResult.metrics``) and compares each with a documented threshold:
the alignment's residual RMS and its number of matched stars, the PSF stars
behind each PSF and whether they formed a stellar locus, each PSF's FWHM
against the header's seeing, the robust standard deviation of S_corr, the
systematic fraction ε and the fraction of the result left unmasked. It
computes nothing on the pixels, so it costs nothing next to the subtraction.

The thresholds are module constants, listed in ``docs/differencing.md``
("Quality verdict"). A ``warn`` means "look before trusting the candidates",
a ``fail`` means the difference is probably wrong (a PSF of galaxies, a
misregistration of a pixel or more, S_corr off by 30 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Quality", "QualityReason", "assess"]

_LEVELS = ("pass", "warn", "fail")

# Residual RMS (px) of the matched stars after the registration.
ALIGN_RMS_WARN = 0.5
ALIGN_RMS_FAIL = 1.0
# Matched stars: fewer than this and the alignment is the WCS alone, unchecked.
ALIGN_MIN_MATCHED = 3
# A WCS correction this large (px) resting on fewer than ALIGN_SUSPECT_STARS stars is suspect.
ALIGN_SUSPECT_SHIFT = 3.0
ALIGN_SUSPECT_STARS = 10
# PSF stars that passed every cut: fewer than PSF_STARS_FAIL leave the width to a guess or a
# handful of sources; fewer than PSF_STARS_WARN (estimate_psf's min_stars) give a Gaussian fallback.
PSF_STARS_FAIL = 3
PSF_STARS_WARN = 10
# Estimated PSF FWHM over the header's seeing: beyond these factors (either way).
# On the simulated survey the ratio is 1.15-1.22 at 1024² and up to 1.31 at 512² (the
# header gives the seeing before pixel integration, and the empirical PSFs come out a
# few per cent wide); on the DECam cutouts 0.90-0.96.
SEEING_RATIO_WARN = 1.4
SEEING_RATIO_FAIL = 1.7
# Robust standard deviation of S_corr: beyond these factors from 1 (either way).
SCORR_STD_WARN = 1.15
SCORR_STD_FAIL = 1.3
# Systematic fraction ε (the PSFs' relative error on bright stars): 0.02-0.05 on the
# simulated survey at 1024², up to 0.31 at 512² where few bright stars measure it.
EPSILON_WARN = 0.35
EPSILON_FAIL = 0.6
# Fraction of the result that is not masked.
VALID_WARN = 0.7
VALID_FAIL = 0.5


@dataclass
class QualityReason:
    """One check of a difference.

    Attributes
    ----------
    check : str
        What was checked: ``"align_rms"``, ``"align_matched"``,
        ``"align_shift"``, ``"psf_stars_sci"``/``_ref``,
        ``"stellar_locus_sci"``/``_ref``, ``"fwhm_vs_seeing_sci"``/``_ref``,
        ``"scorr_std"``, ``"epsilon"``, ``"valid_fraction"``.
    level : str
        ``"pass"``, ``"warn"`` or ``"fail"``.
    value : float
        The measured value.
    threshold : float or None
        The threshold it was compared with (the one it crossed, or the warn
        threshold when it passed).
    message : str
        The finding in words.
    """

    check: str
    level: str
    value: float
    threshold: float | None
    message: str

    def short(self) -> str:
        """One line for a FITS card or a table cell: ``check value vs threshold (level)``."""
        if self.check.startswith("stellar_locus"):
            return f"{self.check} {'found' if self.value else 'none'} ({self.level})"
        value = f"{self.value:.3g}" if isinstance(self.value, float) else str(self.value)
        limit = "" if self.threshold is None else f" vs {self.threshold:g}"
        return f"{self.check} {value}{limit} ({self.level})"


@dataclass
class Quality:
    """The verdict on a difference.

    Attributes
    ----------
    verdict : str
        ``"pass"``, ``"warn"`` or ``"fail"``: the worst level of the checks.
    reasons : list of QualityReason
        The checks that did not pass, worst first.
    checks : list of QualityReason
        Every check made, passed ones included (checks without a measured
        value, e.g. the seeing when the header has none, are left out).
    """

    verdict: str
    reasons: list[QualityReason] = field(default_factory=list)
    checks: list[QualityReason] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.reasons:
            return f"{self.verdict}: {len(self.checks)} checks passed"
        return f"{self.verdict}: " + "; ".join(r.message for r in self.reasons)

    def summary(self) -> str:
        """The verdict and the short form of each reason, e.g. for a batch table."""
        return "; ".join([self.verdict] + [r.short() for r in self.reasons])


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _two_sided(check, value, warn, fail, what) -> QualityReason:
    """A ratio that should be near 1: warn or fail beyond a factor either way."""
    off = max(value, 1.0 / value) if value > 0 else math.inf
    if off > fail:
        return QualityReason(
            check, "fail", float(value), fail, f"{what} is {value:.2f} (beyond a factor {fail:g})"
        )
    if off > warn:
        return QualityReason(
            check, "warn", float(value), warn, f"{what} is {value:.2f} (beyond a factor {warn:g})"
        )
    return QualityReason(check, "pass", float(value), warn, f"{what} is {value:.2f}")


def _above(check, value, warn, fail, what, unit="") -> QualityReason:
    """A value that should be small: warn above ``warn``, fail above ``fail``."""
    for level, limit in (("fail", fail), ("warn", warn)):
        if value > limit:
            return QualityReason(
                check,
                level,
                float(value),
                limit,
                f"{what} is {value:.3g}{unit} (above {limit:g}{unit})",
            )
    return QualityReason(check, "pass", float(value), warn, f"{what} is {value:.3g}{unit}")


def _below(check, value, warn, fail, what) -> QualityReason:
    """A value that should be large: warn below ``warn``, fail below ``fail``."""
    for level, limit in (("fail", fail), ("warn", warn)):
        if value < limit:
            return QualityReason(
                check, level, float(value), limit, f"{what} is {value:.3g} (below {limit:g})"
            )
    return QualityReason(check, "pass", float(value), warn, f"{what} is {value:.3g}")


def _alignment_checks(metrics: dict) -> list[QualityReason]:
    """The alignment's checks: matched stars, a suspect shift and the residual RMS."""
    checks: list[QualityReason] = []
    if metrics.get("align_method", "none") == "none":
        return checks
    # An unknown count (None, NaN) is no evidence of matched stars: judged as none.
    n_matched = int(metrics["n_matched"]) if _finite(metrics.get("n_matched")) else 0
    if n_matched < ALIGN_MIN_MATCHED:
        checks.append(
            QualityReason(
                "align_matched",
                "fail",
                float(n_matched),
                ALIGN_MIN_MATCHED,
                f"the alignment matched {n_matched} stars (fewer than {ALIGN_MIN_MATCHED}): the WCS was used "
                "unchecked, and a wrong WCS leaves every star as a dipole",
            )
        )
    else:
        checks.append(
            QualityReason(
                "align_matched",
                "pass",
                float(n_matched),
                ALIGN_MIN_MATCHED,
                f"the alignment matched {n_matched} stars",
            )
        )
    shift = metrics.get("align_shift")
    if _finite(shift) and shift > ALIGN_SUSPECT_SHIFT and n_matched < ALIGN_SUSPECT_STARS:
        checks.append(
            QualityReason(
                "align_shift",
                "warn",
                float(shift),
                ALIGN_SUSPECT_SHIFT,
                f"the alignment corrected the WCS by {shift:.1f} px on only {n_matched} stars (fewer than "
                f"{ALIGN_SUSPECT_STARS}): chance matches can fit any shift",
            )
        )
    rms = metrics.get("align_rms")
    if _finite(rms):
        value, what = float(rms), "the RMS of the matched stars' residuals"
        error = metrics.get("align_error")
        if _finite(error) and error < min(rms, ALIGN_RMS_WARN):
            # Faint stars' centroids scatter by more than the registration is off: the RMS is
            # judged beyond that noise, as the alignment measured it.
            value = float(error)
            what = f"{what} is {rms:.3g} px; beyond their centroids' noise, the registration error"
        checks.append(_above("align_rms", value, ALIGN_RMS_WARN, ALIGN_RMS_FAIL, what, " px"))
    return checks


def _psf_checks(metrics: dict, side: str, name: str) -> list[QualityReason]:
    """One epoch's PSF checks: its stellar locus, its number of stars and its FWHM vs the seeing."""
    checks: list[QualityReason] = []
    method = str(metrics.get(f"psf_method_{side}", "given"))
    if method.startswith("given"):
        return checks
    locus = metrics.get(f"stellar_locus_{side}")
    note = str(metrics.get(f"psf_note_{side}", "") or "")
    if locus is False:
        checks.append(
            QualityReason(
                f"stellar_locus_{side}",
                "fail",
                0.0,
                None,
                f"the {name} PSF: {note or 'no stellar locus'}; it is probably a galaxy's",
            )
        )
    n_usable = metrics.get(f"psf_n_usable_{side}")
    if _finite(n_usable):
        n_usable = int(n_usable)
        if n_usable < PSF_STARS_FAIL:
            checks.append(
                QualityReason(
                    f"psf_stars_{side}",
                    "fail",
                    float(n_usable),
                    PSF_STARS_FAIL,
                    f"the {name} PSF rests on {n_usable} stars (fewer than {PSF_STARS_FAIL}): its width is a "
                    "guess or a few sources'",
                )
            )
        elif n_usable < PSF_STARS_WARN:
            checks.append(
                QualityReason(
                    f"psf_stars_{side}",
                    "warn",
                    float(n_usable),
                    PSF_STARS_WARN,
                    f"the {name} PSF rests on {n_usable} stars (fewer than {PSF_STARS_WARN}): "
                    f"{'a Gaussian of their width' if 'fallback' in method else 'a noisy stack'}",
                )
            )
        else:
            checks.append(
                QualityReason(
                    f"psf_stars_{side}",
                    "pass",
                    float(n_usable),
                    PSF_STARS_WARN,
                    f"the {name} PSF rests on {n_usable} stars",
                )
            )
    fwhm, seeing = metrics.get(f"fwhm_{side}"), metrics.get(f"seeing_{side}")
    if _finite(fwhm) and _finite(seeing) and seeing > 0:
        checks.append(
            _two_sided(
                f"fwhm_vs_seeing_{side}",
                float(fwhm) / float(seeing),
                SEEING_RATIO_WARN,
                SEEING_RATIO_FAIL,
                f"the {name} PSF's FWHM ({float(fwhm):.2f} px) over the header's seeing ({float(seeing):.2f} px)",
            )
        )
    return checks


def _result_checks(metrics: dict) -> list[QualityReason]:
    """The result's checks: the spread of S_corr, the systematic fraction and the unmasked fraction."""
    checks: list[QualityReason] = []
    std = metrics.get("scorr_robust_std")
    if _finite(std):
        checks.append(
            _two_sided(
                "scorr_std",
                float(std),
                SCORR_STD_WARN,
                SCORR_STD_FAIL,
                "the robust standard deviation of S_corr",
            )
        )
    epsilon = metrics.get("systematic_fraction")
    if _finite(epsilon):
        checks.append(
            _above(
                "epsilon",
                float(epsilon),
                EPSILON_WARN,
                EPSILON_FAIL,
                "the systematic fraction ε (the PSFs' relative error on bright stars)",
            )
        )
    mask_fraction = metrics.get("mask_fraction")
    if _finite(mask_fraction):
        checks.append(
            _below(
                "valid_fraction",
                1.0 - float(mask_fraction),
                VALID_WARN,
                VALID_FAIL,
                "the unmasked fraction of the result",
            )
        )
    return checks


def assess(metrics: dict) -> Quality:
    """The verdict on a difference from its metrics.

    Parameters
    ----------
    metrics : dict
        :attr:`DifferenceResult.metrics` of :func:`astrid.difference`
        (``align_method``, ``align_rms``, ``n_matched``, ``align_shift``,
        ``psf_method_*``, ``psf_n_usable_*``, ``stellar_locus_*``,
        ``psf_note_*``, ``fwhm_*``, ``seeing_*``, ``scorr_robust_std``,
        ``systematic_fraction``, ``mask_fraction``). Missing or NaN values
        are not checked.

    Returns
    -------
    Quality
        The verdict, the checks that did not pass and all checks made.
    """
    checks = _alignment_checks(metrics)
    for side, name in (("sci", "science"), ("ref", "reference")):
        checks += _psf_checks(metrics, side, name)
    checks += _result_checks(metrics)
    reasons = sorted(
        (c for c in checks if c.level != "pass"), key=lambda c: -_LEVELS.index(c.level)
    )
    verdict = reasons[0].level if reasons else "pass"
    return Quality(verdict=verdict, reasons=reasons, checks=checks)


def header_cards(quality: Quality, max_reasons: int = 9) -> list[tuple[str, str, str]]:
    """FITS cards of a verdict: ``QUALITY`` and ``QREASON1``... (short form, at most 68 characters)."""
    cards = [("QUALITY", quality.verdict, "AstrID quality verdict: pass, warn or fail")]
    for i, reason in enumerate(quality.reasons[:max_reasons], start=1):
        value = reason.short()[:68]
        # Key, quotes and separators take 14 of a card's 80 characters: the comment gets the rest.
        cards.append((f"QREASON{i}", value, "check that did not pass"[: max(0, 66 - len(value))]))
    return cards
