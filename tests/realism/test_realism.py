"""Label-free stamp statistics (astrid.realism) and the ztf_alert preset."""

from __future__ import annotations

import numpy as np
import pytest

import astrid
from astrid.errors import AstridInputError
from astrid.paths import shared_data
from astrid.realism import STATISTICS, compare_statistics, normalised_pixels, stamp_statistics
from astrid.schema import new_triplet_dataset


def _triplets(n=6, ref_noise=2.0, sci_noise=10.0, seed=0, nan_rows=0):
    rng = np.random.default_rng(seed)
    stamps = np.empty((n, 63, 63, 3), np.float32)
    yy, xx = np.mgrid[0:63, 0:63]
    star = 2000.0 * np.exp(-0.5 * ((xx - 31) ** 2 + (yy - 31) ** 2) / 1.0**2)
    stamps[..., 0] = rng.normal(100, sci_noise, (n, 63, 63)) + star
    stamps[..., 1] = rng.normal(100, ref_noise, (n, 63, 63))
    stamps[..., 2] = rng.normal(0, sci_noise, (n, 63, 63)) + star
    if nan_rows:
        stamps[:, :nan_rows, :, :] = np.nan
    return new_triplet_dataset(stamps, coords={"candidate_id": [f"c{k}" for k in range(n)]})


def test_statistics_measure_what_they_say():
    table = stamp_statistics(_triplets())
    assert set(table.colnames) == set(STATISTICS)
    np.testing.assert_allclose(table["noise_science"], 10.0, rtol=0.15)
    np.testing.assert_allclose(table["noise_reference"], 2.0, rtol=0.15)
    np.testing.assert_allclose(table["noise_ratio_ref_sci"], 0.2, rtol=0.2)
    # a Gaussian of sigma 1 px: FWHM 2.35 px (from the half-maximum area, to a pixel)
    np.testing.assert_allclose(table["fwhm_difference"], 2.35, atol=0.6)
    assert np.all(table["n_sources_reference"] == 0)
    assert np.all(table["centre_sigma_difference"] > 100)
    assert np.all(table["nan_fraction"] == 0) and np.all(table["nan_edge"] == 0)
    edge = stamp_statistics(_triplets(nan_rows=5))
    np.testing.assert_allclose(edge["nan_fraction"], 5 / 63)
    assert np.all(edge["nan_edge"] == 1)


def test_comparison_is_zero_for_one_set_and_large_for_different_noise_ratios():
    a = stamp_statistics(_triplets(n=30, seed=1))
    same = compare_statistics(a, a)
    assert np.all(same["ks"] == 0)
    b = stamp_statistics(_triplets(n=30, ref_noise=20.0, seed=2))
    ratio = compare_statistics(a, b)
    assert ratio[list(ratio["statistic"]).index("noise_ratio_ref_sci")]["ks"] == 1.0
    pixels = normalised_pixels(_triplets(n=3), max_pixels=1000)
    assert set(pixels) == {"science", "reference", "difference"} and all(
        v.size == 1000 for v in pixels.values()
    )


def test_statistics_refuse_what_is_not_a_triplet_set():
    with pytest.raises(AstridInputError):
        stamp_statistics({"triplets": np.zeros((2, 63, 63, 3))})


def test_the_ztf_alert_preset_has_a_deep_reference_and_the_ztf_preset_is_unchanged():
    deep = astrid.simulate.pair(size=256, seed=4, preset="ztf_alert", n_supernovae=0, n_variables=0)
    single = astrid.simulate.pair(size=256, seed=4, preset="ztf", n_supernovae=0, n_variables=0)
    assert deep.reference.meta.gain == pytest.approx(25 * single.reference.meta.gain)
    sigma = astrid.estimate_background(deep.reference.data).median_rms
    sigma_science = astrid.estimate_background(deep.science.data).median_rms
    assert sigma < 0.5 * sigma_science  # a stack of 25: far quieter than the single science epoch
    kinds = set(deep.truth["kind"])
    assert "cosmic_ray" not in set(deep.truth[deep.truth["epoch"] == "reference"]["kind"])
    assert kinds  # the science epoch keeps its artefacts
    with pytest.raises(AstridInputError, match="reference_stack"):
        astrid.simulate.pair(size=128, seed=0, reference_stack=0)


@pytest.mark.skipif(
    shared_data("ztf_alerts") is None, reason="shared ZTF alerts (../shared/data/ztf_alerts) absent"
)
def test_the_report_runs_on_a_handful_of_real_stamps():
    from astrid.alerts import read_ztf

    files = sorted(shared_data("ztf_alerts", "ztf-avro-alert").glob("*.avro"))[:12]
    real = read_ztf(files)
    table = compare_statistics(stamp_statistics(real), stamp_statistics(_triplets(n=12)))
    assert len(table) >= 8 and np.all((table["ks"] >= 0) & (table["ks"] <= 1))
    # real ZTF references are deep co-adds: quieter than the science stamps
    assert np.nanmedian(stamp_statistics(real)["noise_ratio_ref_sci"]) < 0.5


def test_image_statistics_count_sources_saturated_stars_and_bleeds():
    from dataclasses import replace

    from astrid.realism import IMAGE_STATISTICS, image_statistics

    pair = astrid.simulate.pair(size=1024, seed=1, preset="ztf")
    image = pair.science
    stats = image_statistics(image)
    assert set(stats) == set(IMAGE_STATISTICS)
    assert stats["pixel_scale"] == pytest.approx(1.01, rel=0.01)
    assert stats["area_arcmin2"] == pytest.approx(1024**2 * stats["pixel_scale"] ** 2 / 3600)
    assert stats["sources_per_arcmin2"] > 0.1 and 1.5 < stats["psf_fwhm_arcsec"] < 4.0
    # two saturated blobs planted in a copy, one of them a bleed trail ten times taller than wide
    data = np.array(image.data)
    level = image.meta.saturation
    data[100:103, 100:103] = level + 1.0
    data[300:330, 400:402] = level + 1.0
    planted = image_statistics(replace(image, data=data))
    added = (planted["saturated_per_arcmin2"] - stats["saturated_per_arcmin2"]) * stats[
        "area_arcmin2"
    ]
    bled = (planted["bleeds_per_arcmin2"] - stats["bleeds_per_arcmin2"]) * stats["area_arcmin2"]
    assert round(added) == 2 and round(bled) == 1
    with pytest.raises(AstridInputError, match="WCS"):
        image_statistics(replace(image, wcs=None))
