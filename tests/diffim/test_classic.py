"""The classic baseline: Gaussian PSF matching, flux scaling, direct subtraction."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import gaussian_sigma_to_fwhm as FWHM_PER_SIGMA
from test_zogy import add_source, noise_pair, starfield

from astrid import Image
from astrid.diffim import ClassicOptions, ClassicResult, classic_subtract
from astrid.errors import AstridInputError


@pytest.mark.parametrize(
    "fwhm_n, fwhm_r, ratio, convolved",
    [(4.0, 2.5, 1.0, "reference"), (2.5, 4.0, 1.3, "science"), (3.0, 3.0, 0.8, "none")],
)
def test_significance_has_unit_variance_in_noise(fwhm_n, fwhm_r, ratio, convolved):
    rng = np.random.default_rng(1)
    N, R = noise_pair(rng, (256, 256), 5.0, 3.0)
    result = classic_subtract(
        reference=R,
        science=N,
        reference_fwhm=fwhm_r,
        science_fwhm=fwhm_n,
        reference_sigma=3.0,
        science_sigma=5.0,
        flux_ratio=ratio,
    )
    assert isinstance(result, ClassicResult)
    assert result.convolved == convolved
    expected = np.sqrt(abs((fwhm_n / FWHM_PER_SIGMA) ** 2 - (fwhm_r / FWHM_PER_SIGMA) ** 2))
    assert result.kernel_sigma == pytest.approx(expected)
    assert abs(result.significance_std - 1.0) < 0.05
    # With variance maps equal to the white noise the answer is the same.
    same = classic_subtract(
        reference=Image(R, variance=np.full(N.shape, 9.0)),
        science=Image(N, variance=np.full(N.shape, 25.0)),
        reference_fwhm=fwhm_r,
        science_fwhm=fwhm_n,
        reference_sigma=3.0,
        science_sigma=5.0,
        flux_ratio=ratio,
    )
    np.testing.assert_allclose(same.significance, result.significance, rtol=1e-9, atol=1e-12)


def test_injected_source_is_detected_with_its_flux():
    rng = np.random.default_rng(2)
    N, R = noise_pair(rng, (192, 192), 3.0, 2.0)
    add_source(N, 96, 90, 5000.0, 3.5)
    result = classic_subtract(
        reference=R,
        science=N,
        reference_fwhm=2.5,
        science_fwhm=3.5,
        reference_sigma=2.0,
        science_sigma=3.0,
    )
    assert result.significance[90, 96] > 5
    y, x = np.indices(N.shape)
    aperture = (x - 96) ** 2 + (y - 90) ** 2 <= 8**2
    assert result.D[aperture].sum() == pytest.approx(5000.0, rel=0.05)


def test_static_gaussian_stars_cancel_with_variance_maps():
    rng = np.random.default_rng(3)
    N, R, Vn, Vr = starfield(rng, (256, 256), 3.5, 2.5, 5.0, 3.0, ratio=1.2, n_stars=60)
    result = classic_subtract(
        reference=Image(R, variance=Vr),
        science=Image(N, variance=Vn),
        reference_fwhm=2.5,
        science_fwhm=3.5,
        reference_sigma=3.0,
        science_sigma=5.0,
        flux_ratio=1.2,
    )
    assert np.count_nonzero((np.abs(result.significance) > 5) & ~result.mask) == 0
    assert abs(result.significance_std - 1.0) < 0.05


def test_masks_and_non_finite_pixels_are_flagged_and_filled():
    rng = np.random.default_rng(4)
    N, R = noise_pair(rng, (128, 128))
    N[30:40, 30:40] = np.nan
    mask = np.zeros(N.shape, bool)
    mask[100, :] = True
    result = classic_subtract(
        reference=R,
        science=(N, mask),
        reference_fwhm=2.5,
        science_fwhm=4.0,
        reference_sigma=3.0,
        science_sigma=5.0,
        options=ClassicOptions(fill_value=np.nan, dtype=np.float32),
    )
    r = result.mask_radius
    assert r == int(np.ceil(1.3 * 4.0))
    assert (
        result.mask[30 - r : 40 + r, 30 - r : 40 + r].all() and result.mask[100 - r : 101 + r].all()
    )
    assert result.mask[:r].all() and result.mask[:, -r:].all()
    assert np.isnan(result.significance[result.mask]).all()
    assert np.isfinite(result.significance[~result.mask]).all()
    assert result.D.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reference=np.zeros((16, 15))), "differ"),
        (dict(science_fwhm=0.0), "science_fwhm"),
        (dict(reference_fwhm=np.nan), "reference_fwhm"),
        (dict(science_sigma=-2.0), "science_sigma"),
        (dict(flux_ratio=-1.0), "flux_ratio"),
        (dict(reference=(np.zeros((16, 16)), np.ones((3, 3), bool))), "reference"),
        (dict(options=ClassicOptions(mask_radius=1.5)), "mask_radius"),
        (dict(options=ClassicOptions(dtype=np.int16)), "dtype"),
    ],
)
def test_bad_inputs_raise(kwargs, message):
    args = dict(
        science=np.zeros((16, 16)),
        reference=np.zeros((16, 16)),
        science_fwhm=3.0,
        reference_fwhm=2.0,
        science_sigma=1.0,
        reference_sigma=1.0,
    )
    args.update(kwargs)
    with pytest.raises(AstridInputError, match=message):
        classic_subtract(**args)
