"""The quality verdict of a difference (issue #17, item 5).

Each reason has a deliberately bad case: too few stars, galaxies only, a
wrong header seeing, a misaligned WCS; ordinary simulated pairs pass.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from astropy.io import fits
from test_star_selection import _field

from astrid import Image, simulate
from astrid.diffim import Quality, assess, difference
from astrid.diffim.quality import (
    ALIGN_RMS_FAIL,
    EPSILON_WARN,
    PSF_STARS_WARN,
    SCORR_STD_FAIL,
    SEEING_RATIO_FAIL,
    VALID_FAIL,
    header_cards,
)
from astrid.errors import AstridWarning


def _metrics(**changes):
    """Metrics of a good difference (as difference() writes them), with ``changes``."""
    metrics = dict(
        align_method="interp+affine",
        n_matched=60,
        align_rms=0.02,
        align_shift=0.4,
        psf_method_sci="empirical+regularised",
        psf_method_ref="empirical+regularised",
        psf_n_usable_sci=30,
        psf_n_usable_ref=50,
        stellar_locus_sci=True,
        stellar_locus_ref=True,
        psf_note_sci="",
        psf_note_ref="",
        fwhm_sci=2.8,
        fwhm_ref=2.5,
        seeing_sci=2.4,
        seeing_ref=2.1,
        scorr_robust_std=1.04,
        systematic_fraction=0.02,
        mask_fraction=0.07,
    )
    metrics.update(changes)
    return metrics


def _reasons(quality: Quality) -> dict:
    return {r.check: r.level for r in quality.reasons}


def test_faint_stars_centroid_noise_is_not_a_misregistration():
    """An RMS inflated by faint stars' centroids passes when the registration error is small."""
    quality = assess(_metrics(align_rms=0.73, align_error=0.07))
    (check,) = [c for c in quality.checks if c.check == "align_rms"]
    assert check.level == "pass" and quality.verdict == "pass"
    assert check.value == pytest.approx(0.07)
    assert "0.73 px" in check.message and "registration error is 0.07 px" in check.message


def test_good_metrics_pass_every_check():
    quality = assess(_metrics())
    assert quality.verdict == "pass"
    assert quality.reasons == []
    assert {c.check for c in quality.checks} == {
        "align_matched",
        "align_rms",
        "psf_stars_sci",
        "psf_stars_ref",
        "fwhm_vs_seeing_sci",
        "fwhm_vs_seeing_ref",
        "scorr_std",
        "epsilon",
        "valid_fraction",
    }
    assert all(c.level == "pass" for c in quality.checks)


@pytest.mark.parametrize(
    "changes, check, level",
    [
        (dict(align_rms=0.7), "align_rms", "warn"),
        (dict(align_rms=0.7, align_error=0.6), "align_rms", "warn"),
        (dict(align_rms=ALIGN_RMS_FAIL * 2), "align_rms", "fail"),
        (dict(align_rms=ALIGN_RMS_FAIL * 2, align_error=ALIGN_RMS_FAIL * 1.5), "align_rms", "fail"),
        (dict(n_matched=1, align_rms=float("nan")), "align_matched", "fail"),
        (dict(n_matched=float("nan"), align_rms=float("nan")), "align_matched", "fail"),
        (dict(n_matched=5, align_shift=12.0), "align_shift", "warn"),
        (dict(psf_n_usable_sci=2, psf_method_sci="gaussian-fallback"), "psf_stars_sci", "fail"),
        (
            dict(psf_n_usable_ref=PSF_STARS_WARN - 4, psf_method_ref="gaussian-fallback"),
            "psf_stars_ref",
            "warn",
        ),
        (
            dict(stellar_locus_ref=False, psf_note_ref="no stellar locus: ..."),
            "stellar_locus_ref",
            "fail",
        ),
        (dict(fwhm_sci=2.4 * SEEING_RATIO_FAIL * 1.1), "fwhm_vs_seeing_sci", "fail"),
        (dict(fwhm_ref=2.1 / 1.5), "fwhm_vs_seeing_ref", "warn"),
        (dict(scorr_robust_std=0.84), "scorr_std", "warn"),
        (dict(scorr_robust_std=SCORR_STD_FAIL * 1.2), "scorr_std", "fail"),
        (dict(systematic_fraction=EPSILON_WARN + 0.05), "epsilon", "warn"),
        (dict(mask_fraction=1.0 - VALID_FAIL + 0.1), "valid_fraction", "fail"),
    ],
)
def test_each_check_reports_its_value_and_threshold(changes, check, level):
    quality = assess(_metrics(**changes))
    assert _reasons(quality) == {check: level}
    assert quality.verdict == level
    reason = quality.reasons[0]
    assert np.isfinite(reason.value)
    assert check in reason.short() and level in reason.short()
    assert reason.message in str(quality)


def test_given_psfs_and_no_alignment_are_not_judged():
    quality = assess(
        _metrics(
            psf_method_sci="given",
            psf_method_ref="given",
            psf_n_usable_sci=0,
            psf_n_usable_ref=0,
            align_method="none",
            n_matched=0,
            align_rms=float("nan"),
        )
    )
    assert quality.verdict == "pass"
    assert not any(c.check.startswith(("psf_", "align", "fwhm_vs")) for c in quality.checks)


def test_missing_seeing_skips_that_check_only():
    quality = assess(_metrics(seeing_sci=float("nan"), seeing_ref=None))
    assert quality.verdict == "pass"
    assert not any(c.check.startswith("fwhm_vs_seeing") for c in quality.checks)


def test_worst_reason_first_and_header_cards():
    quality = assess(_metrics(scorr_robust_std=1.2, align_rms=5.0))
    assert quality.verdict == "fail"
    assert [r.level for r in quality.reasons] == ["fail", "warn"]
    header = fits.Header()
    for key, value, comment in header_cards(quality):
        header[key] = (value, comment)  # a card too long would warn, and warnings are errors here
    assert header["QUALITY"] == "fail"
    assert header["QREASON1"].startswith("align_rms") and header["QREASON2"].startswith("scorr_std")


def test_every_reason_fits_a_fits_card():
    quality = assess(
        _metrics(
            n_matched=1,
            align_rms=5.0,
            align_shift=20.0,
            psf_method_sci="gaussian-fallback",
            psf_n_usable_sci=1,
            stellar_locus_sci=False,
            fwhm_sci=20.0,
            scorr_robust_std=3.33333,
            systematic_fraction=0.77777,
            mask_fraction=0.9,
        )
    )
    assert len(quality.reasons) == 9
    header = fits.Header()
    for key, value, comment in header_cards(quality):
        header[key] = (value, comment)
    assert all(len(card.image) == 80 for card in header.cards)
    assert [header[f"QREASON{i}"].split()[0] for i in range(1, 10)] == [
        r.check for r in quality.reasons
    ]


# ----------------------------------------------------------------------------- whole differences


def _difference(reference, science, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = difference(reference, science, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, AstridWarning)]


@pytest.fixture(scope="module")
def ordinary():
    sim = simulate.pair(1024, seed=6)
    # Existing tests run with warnings as errors: an ordinary pair must raise none.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return sim, difference(sim.reference, sim.science)


def test_ordinary_simulated_pair_passes(ordinary):
    _, result = ordinary
    assert result.quality.verdict == "pass", result.quality.summary()
    assert result.metrics["quality"] == "pass"
    assert result.metrics["seeing_sci"] > 0 and result.metrics["seeing_ref"] > 0


def test_verdict_written_to_fits(ordinary, tmp_path):
    _, result = ordinary
    path = result.to_fits(tmp_path / "diff.fits")
    header = fits.getheader(path, 0)
    assert header["QUALITY"] == "pass"
    assert "QREASON1" not in header


def test_too_few_stars():
    sim = simulate.pair(512, seed=3, n_stars=4)
    result, _ = _difference(sim.reference, sim.science)
    assert result.quality.verdict in ("warn", "fail")
    assert any(check.startswith("psf_stars") for check in _reasons(result.quality)), (
        result.quality.summary()
    )


def test_wrong_header_seeing(ordinary):
    sim, _ = ordinary
    science = copy.deepcopy(sim.science)
    science.meta.seeing_fwhm_pix = 2.5 * science.meta.seeing_fwhm_pix
    result, _ = _difference(sim.reference, science)
    reasons = _reasons(result.quality)
    assert reasons.get("fwhm_vs_seeing_sci") == "fail", result.quality.summary()
    assert "fwhm_vs_seeing_ref" not in reasons
    # The stars outrank the wrong header: the PSF is the one of the ordinary run.
    assert result.metrics["fwhm_sci"] == pytest.approx(ordinary[1].metrics["fwhm_sci"], rel=0.02)


def test_misaligned_wcs(ordinary):
    sim, _ = ordinary
    science = copy.deepcopy(sim.science)
    # 1.3 px: a few px would be refused outright (the flux ratio sees the stars' centroids differ).
    science.wcs.wcs.crpix = science.wcs.wcs.crpix + np.array([1.0, -0.8])
    result, _ = _difference(sim.reference, science, refine=False)
    reasons = _reasons(result.quality)
    assert reasons.get("align_rms") == "fail" or reasons.get("align_matched") == "fail", (
        result.quality.summary()
    )
    assert result.quality.verdict == "fail"


def test_galaxies_only():
    img_ref, _ = _field(n_stars=0, n_galaxies=90, seed=3)
    rng = np.random.default_rng(7)
    img_sci = img_ref + rng.normal(0.0, 1.0, img_ref.shape)  # the same galaxies, fresh noise
    reference, science = Image(data=img_ref), Image(data=img_sci)
    result, caught = _difference(reference, science, align=False)
    reasons = _reasons(result.quality)
    assert (
        reasons.get("stellar_locus_sci") == "fail" and reasons.get("stellar_locus_ref") == "fail"
    ), result.quality.summary()
    assert result.quality.verdict == "fail"
    assert any("no stellar locus" in message for message in caught)
