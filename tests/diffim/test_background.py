"""Tests of astrid.estimate_background."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from astrid.diffim import Background, estimate_background, estimate_backgrounds
from astrid.errors import AstridInputError


def _noise(shape=(256, 256), level=100.0, sigma=5.0, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (level + rng.normal(0.0, sigma, shape)).astype(dtype)


def test_flat_sky_level_and_noise():
    data = _noise()
    bkg = estimate_background(data)
    assert isinstance(bkg, Background)
    assert bkg.method == "Background2D"
    assert bkg.background.shape == data.shape and bkg.rms.shape == data.shape
    # 64x64 boxes: the median of 4096 pixels has an error of ~1.25 * 5 / 64 ~ 0.1.
    assert np.abs(bkg.background - 100.0).max() < 0.5
    assert bkg.median_rms == pytest.approx(5.0, rel=0.05)
    assert np.all(np.abs(bkg.rms - 5.0) < 0.5)


def test_dtype_follows_data():
    assert estimate_background(_noise(dtype=np.float32)).background.dtype == np.float32
    assert estimate_background(_noise(dtype=np.float64)).rms.dtype == np.float64
    # Integer data (raw ADU) are accepted and estimated in floating point.
    ints = np.round(_noise()).astype(np.int32)
    assert estimate_background(ints).background.dtype.kind == "f"


def test_follows_a_gentle_gradient():
    ny, nx = 320, 384
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = 100.0 + 0.02 * xx - 0.015 * yy
    data = (sky + np.random.default_rng(1).normal(0.0, 3.0, (ny, nx))).astype(np.float32)
    bkg = estimate_background(data)
    assert bkg.method == "Background2D"
    inner = (slice(64, -64), slice(64, -64))
    # The gradient spans 4 sigma across the image; the map follows it to a third of sigma
    # (the 3x3 median filter over the boxes flattens the corners a little).
    assert np.abs(bkg.background[inner] - sky[inner]).max() < 1.0
    assert np.median(np.abs(bkg.background[inner] - sky[inner])) < 0.3
    assert bkg.median_rms == pytest.approx(3.0, rel=0.1)


def test_stars_do_not_bias_the_sky():
    data = _noise(seed=2)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:256, 0:256]
    for x, y in rng.uniform(10, 246, (60, 2)):
        data += (2000.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))).astype(
            np.float32
        )
    bkg = estimate_background(data)
    # Sigma clipping rejects the stars: the level stays within ~0.2 sigma.
    assert np.median(bkg.background) == pytest.approx(100.0, abs=1.0)
    assert bkg.median_rms == pytest.approx(5.0, rel=0.15)


def test_nan_pixels_are_ignored_and_filled():
    data = _noise(seed=4)
    data[:, :40] = np.nan
    data[100:110, 100:110] = np.inf
    bkg = estimate_background(data)
    assert bkg.method == "Background2D"
    assert np.isfinite(bkg.background).all() and np.isfinite(bkg.rms).all()
    assert np.abs(bkg.background - 100.0).max() < 1.0


def test_mask_is_honoured():
    data = _noise(shape=(384, 384), seed=5)
    # A 3x3-box block that sigma clipping cannot reject and the median filter keeps.
    data[64:256, 64:256] = 5000.0
    mask = np.zeros(data.shape, dtype=bool)
    mask[64:256, 64:256] = True
    with_mask = estimate_background(data, mask=mask)
    without = estimate_background(data)
    assert np.abs(with_mask.background - 100.0).max() < 1.0
    assert without.background.max() > 1000.0


def test_small_image_falls_back_to_median():
    data = _noise(shape=(40, 50), seed=6)
    bkg = estimate_background(data, box_size=64)
    assert bkg.method == "median"
    assert np.all(bkg.background == bkg.background[0, 0])
    assert bkg.background[0, 0] == pytest.approx(100.0, abs=1.0)
    assert bkg.median_rms == pytest.approx(5.0, rel=0.15)


def test_mostly_masked_image_falls_back_to_median():
    data = _noise(seed=7)
    mask = np.ones(data.shape, dtype=bool)
    mask[::16, ::16] = False  # 0.4 % of the pixels survive: too few for any box
    bkg = estimate_background(data, mask=mask)
    assert bkg.method == "median"
    assert bkg.background[0, 0] == pytest.approx(100.0, abs=2.0)


def test_bad_input_raises():
    with pytest.raises(AstridInputError, match="no finite"):
        estimate_background(np.full((64, 64), np.nan))
    with pytest.raises(AstridInputError, match="no finite"):
        estimate_background(_noise(), mask=np.ones((256, 256), bool))
    with pytest.raises(AstridInputError, match="mask"):
        estimate_background(_noise(), mask=np.zeros((10, 10), bool))
    with pytest.raises(AstridInputError, match="2-D"):
        estimate_background(np.zeros((2, 8, 8)))
    with pytest.raises(AstridInputError, match="box_size"):
        estimate_background(_noise(), box_size=2)


def test_simulated_pair_sky():
    simulate = pytest.importorskip("astrid.simulate")
    sim = simulate.pair(256, seed=5)
    ref = sim.reference
    bkg = estimate_background(ref.data, ref.mask)
    true_sky = sim.params["sky_reference"]
    centre = bkg.background[96:160, 96:160]
    # The sky at the centre to better than 1 % and its noise to 10 %.
    assert np.median(centre) == pytest.approx(true_sky, rel=0.01)
    expected_sigma = np.sqrt(np.median(ref.variance[~ref.mask]))
    assert bkg.median_rms == pytest.approx(expected_sigma, rel=0.1)


def test_several_images_at_once_match_one_at_a_time():
    first, second = _noise(seed=1), _noise(level=50.0, sigma=2.0, seed=2, dtype=np.float64)
    mask = np.zeros(first.shape, bool)
    mask[:40] = True
    filters = list(warnings.filters)
    together = estimate_backgrounds([(first, mask), (second, None)])
    # The threads leave the process's warning filters as they found them.
    assert warnings.filters == filters
    for (data, m), bkg in zip([(first, mask), (second, None)], together):
        alone = estimate_background(data, m)
        np.testing.assert_array_equal(bkg.background, alone.background)
        np.testing.assert_array_equal(bkg.rms, alone.rms)
        assert bkg.median_rms == alone.median_rms and bkg.method == alone.method
    assert together[1].background.dtype == np.float64


def test_several_images_report_the_bad_one():
    with pytest.raises(AstridInputError, match="no finite"):
        estimate_backgrounds([(_noise(), None), (np.full((64, 64), np.nan), None)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_box_medians_are_photutils_own(dtype):
    """The compiled box median gives photutils' MedianBackground bit for bit (NaNs, masks, odd and
    even counts, a partial edge box)."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    from astrid.diffim.stars import upsample_mesh

    rng = np.random.default_rng(5)
    data = rng.normal(100.0, 5.0, (300, 260)).astype(dtype)
    data[rng.random(data.shape) < 0.02] = np.nan
    data[40:50, 100:180] += 500.0  # a bright streak the clipping must remove
    mask = np.zeros(data.shape, bool)
    mask[200:300, 0:70] = True  # boxes beyond the masked-fraction limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = estimate_background(data, mask, box_size=64)
        theirs = Background2D(
            data,
            64,
            mask=mask | ~np.isfinite(data),
            filter_size=3,
            sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
            bkg_estimator=MedianBackground(),
            exclude_percentile=90.0,
        )
    assert ours.method == "Background2D"
    expected = upsample_mesh(np.asarray(theirs.background_mesh, float), 64, *data.shape)
    np.testing.assert_array_equal(ours.background, expected.astype(ours.background.dtype))
