"""Tests of astrid.flux_ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.table import Table

from astrid.diffim import FluxRatio, PSFModel, flux_ratio, gaussian_psf
from astrid.errors import AstridInputError
from astrid.io import Image, ImageMeta
from astrid.simulate import datasets


def _moffat_psf(fwhm, beta=2.8, size=None):
    return datasets.moffat_psf(fwhm, beta=beta, size=size)


def _field(psf, xy, flux, shape=(320, 320), sky=100.0, noise=5.0, seed=0):
    """Stars drawn with an integer-centred PSF stamp shifted to each (rounded) position."""
    return datasets.star_field(shape, xy, flux, psf=psf, sky=sky, noise=noise, seed=seed)


def _pair(ratio=0.6, fwhm_ref=2.5, fwhm_sci=3.5, nstars=120, seed=0, psfs=None):
    rng = np.random.default_rng(seed)
    xy = np.round(rng.uniform(20, 300, (nstars, 2)))
    flux = np.exp(rng.uniform(np.log(3000.0), np.log(100000.0), nstars))
    psf_r, psf_n = psfs or (_moffat_psf(fwhm_ref), _moffat_psf(fwhm_sci))
    reference = _field(psf_r, xy, flux, seed=seed + 1)
    science = _field(psf_n, xy, flux * ratio, seed=seed + 2)
    return science, reference, xy, psf_n, psf_r


def test_ratio_from_stars_with_different_psfs():
    science, reference, _, psf_n, psf_r = _pair(ratio=0.6)
    fr = flux_ratio(
        reference=reference,
        science=science,
        reference_psf=PSFModel.from_array(psf_r),
        science_psf=PSFModel.from_array(psf_n),
    )
    assert isinstance(fr, FluxRatio)
    assert fr.method == "stars"
    assert fr.n_stars >= 40
    assert fr.ratio == pytest.approx(0.6, rel=0.01)
    assert 0 < fr.error < 0.01
    assert abs(fr.ratio - 0.6) < 5 * fr.error


def test_aperture_correction_removes_the_psf_bias():
    # Very different Moffat PSFs: 2.5 FWHM of the broader one misses ~2 % of its flux.
    science, reference, _, psf_n, psf_r = _pair(ratio=1.0, fwhm_ref=2.0, fwhm_sci=4.0, seed=3)
    corrected = flux_ratio(
        reference=reference,
        science=science,
        reference_psf=psf_r[8:-8, 8:-8],
        science_psf=psf_n[8:-8, 8:-8],
    )
    uncorrected = flux_ratio(reference=reference, science=science)
    assert corrected.ratio == pytest.approx(1.0, abs=0.01)
    assert abs(corrected.ratio - 1.0) < abs(uncorrected.ratio - 1.0)


def test_zero_points_convention():
    # mag = zp - 2.5 log10(flux): one magnitude more of zero point is 2.512 times the counts.
    fr = flux_ratio(
        reference=np.zeros((8, 8)), science=np.zeros((8, 8)), science_zp=26.0, reference_zp=25.0
    )
    assert fr.method == "zeropoint"
    assert fr.ratio == pytest.approx(10**0.4)
    assert fr.n_stars == 0 and math.isnan(fr.error)
    assert flux_ratio(
        reference=np.zeros((8, 8)), science=np.zeros((8, 8)), science_zp=25.0, reference_zp=26.0
    ).ratio == pytest.approx(10**-0.4)


def test_header_zero_points_are_the_fallback_without_stars():
    noise = np.random.default_rng(0).normal(0.0, 1.0, (128, 128)).astype(np.float32)
    sci = Image(noise, meta=ImageMeta(zeropoint=24.0))
    ref = Image(noise.copy(), meta=ImageMeta(zeropoint=25.0))
    fr = flux_ratio(reference=ref, science=sci)
    assert fr.method == "zeropoint"
    assert fr.ratio == pytest.approx(10**-0.4)
    with pytest.raises(AstridInputError, match="zero points"):
        flux_ratio(reference=noise.copy(), science=noise)


def test_stars_take_precedence_over_header_zero_points():
    science, reference, _, _, _ = _pair(ratio=0.5, seed=4)
    sci = Image(science, meta=ImageMeta(zeropoint=20.0))  # deliberately wrong
    ref = Image(reference, meta=ImageMeta(zeropoint=25.0))
    fr = flux_ratio(reference=ref, science=sci)
    assert fr.method == "stars"
    assert fr.ratio == pytest.approx(0.5, rel=0.03)


def test_given_positions_and_mask_are_honoured():
    science, reference, xy, _, _ = _pair(ratio=0.8, seed=5)
    some = xy[:30]
    by_array = flux_ratio(reference=reference, science=science, stars=some)
    by_table = flux_ratio(
        reference=reference, science=science, stars=Table({"x": some[:, 0], "y": some[:, 1]})
    )
    assert by_array.n_stars <= 30
    assert by_array.ratio == pytest.approx(by_table.ratio)
    assert by_array.ratio == pytest.approx(0.8, rel=0.03)
    # Masking the left half of the image removes the stars there.
    mask = np.zeros(science.shape, bool)
    mask[:, :160] = True
    full = flux_ratio(reference=reference, science=science)
    half = flux_ratio(reference=reference, science=science, mask=mask)
    assert half.n_stars < full.n_stars
    assert half.ratio == pytest.approx(0.8, rel=0.03)


def test_max_stars_keeps_the_brightest_or_an_even_subset():
    science, reference, xy, _, _ = _pair(ratio=0.8, nstars=120, seed=7)
    flux = np.exp(np.random.default_rng(7).uniform(0, 1, len(xy)))  # only the order matters here
    table = Table({"x": xy[:, 0], "y": xy[:, 1], "flux": flux})
    every = flux_ratio(reference=reference, science=science, stars=table, max_stars=None)
    brightest = flux_ratio(reference=reference, science=science, stars=table, max_stars=20)
    spread = flux_ratio(reference=reference, science=science, stars=xy, max_stars=20)
    assert every.n_stars > 20
    assert brightest.n_stars <= 20 and spread.n_stars <= 20
    for fr in (every, brightest, spread):
        assert fr.ratio == pytest.approx(0.8, rel=0.03)
    # The subset by flux is the 20 largest: dropping the others changes nothing.
    top = np.argsort(-flux)[:20]
    assert brightest.ratio == pytest.approx(
        flux_ratio(reference=reference, science=science, stars=table[np.sort(top)]).ratio
    )
    with pytest.raises(AstridInputError, match="max_stars"):
        flux_ratio(reference=reference, science=science, max_stars=1)


def test_saturated_and_nan_stars_are_dropped():
    science, reference, xy, _, _ = _pair(ratio=0.7, fwhm_sci=2.5, seed=6)
    clipped = np.minimum(science, 600.0)  # flattens the cores of most science stars
    fr = flux_ratio(
        reference=Image(reference), science=Image(clipped, meta=ImageMeta(saturation=600.0))
    )
    naive = flux_ratio(reference=reference, science=clipped)
    assert fr.n_stars < naive.n_stars
    assert fr.ratio == pytest.approx(0.7, rel=0.02)
    assert abs(naive.ratio - 0.7) > abs(fr.ratio - 0.7)
    # NaN blobs: stars whose aperture touches one are dropped, the others still measure.
    holes = science.copy()
    for x, y in xy[::4]:
        holes[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = np.nan
    full = flux_ratio(reference=reference, science=science)
    holed = flux_ratio(reference=reference, science=holes)
    assert holed.n_stars < full.n_stars
    assert holed.ratio == pytest.approx(0.7, rel=0.03)


def test_variable_stars_are_clipped():
    science, reference, xy, _, _ = _pair(ratio=0.9, seed=7)
    # Brighten ten stars threefold in the science image: real variability, not calibration.
    psf = _moffat_psf(3.5)
    extra = _field(psf, xy[:10], np.full(10, 50000.0), sky=0.0, noise=0.0)
    fr = flux_ratio(reference=reference, science=science + extra)
    assert fr.ratio == pytest.approx(0.9, rel=0.02)


def test_shape_mismatch_raises():
    with pytest.raises(AstridInputError, match="align"):
        flux_ratio(reference=np.zeros((12, 10)), science=np.zeros((10, 10)))
    with pytest.raises(AstridInputError, match="mask"):
        flux_ratio(
            reference=np.zeros((10, 10)), science=np.zeros((10, 10)), mask=np.zeros((3, 3), bool)
        )
    with pytest.raises(AstridInputError, match="2-D"):
        flux_ratio(reference=np.zeros(10), science=np.zeros(10))


def test_gaussian_fallback_psf_gets_no_aperture_correction():
    science, reference, _, psf_n, psf_r = _pair(ratio=0.6, seed=8)
    fallback = PSFModel(gaussian_psf(3.5), 3.6, 0, "gaussian-fallback")
    with_fallback = flux_ratio(
        reference=reference,
        science=science,
        reference_psf=PSFModel.from_array(psf_r),
        science_psf=fallback,
    )
    without = flux_ratio(reference=reference, science=science, science_psf=None, reference_psf=None)
    # Same aperture size class and no correction: close to the PSF-less estimate.
    assert with_fallback.ratio == pytest.approx(without.ratio, rel=0.01)


# ----------------------------------------------------------------------------- simulated pairs


@pytest.mark.parametrize("seed", [1, 3])
def test_simulated_pair_flux_ratio(seed):
    simulate = pytest.importorskip("astrid.simulate")
    from astrid.diffim import align, estimate_background, estimate_psf

    sim = simulate.pair(512, seed=seed, n_stars=400, exptime_science=120.0)
    aligned = align(reference=sim.reference, science=sim.science).image
    reference = sim.reference
    psfs = []
    for image in (aligned, reference):
        bkg = estimate_background(image.data, image.mask)
        psfs.append(estimate_psf(image.data, image.mask, bkg, saturation=image.meta.saturation))
    fr = flux_ratio(
        reference=reference, science=aligned, science_psf=psfs[0], reference_psf=psfs[1]
    )
    assert fr.method == "stars"
    # The truth comes from the zero points the simulator wrote in the headers.
    assert fr.ratio == pytest.approx(sim.params["flux_ratio"], rel=0.02)
    from_headers = flux_ratio(
        reference=reference,
        science=aligned,
        science_zp=aligned.meta.zeropoint,
        reference_zp=reference.meta.zeropoint,
    )
    assert from_headers.ratio == pytest.approx(sim.params["flux_ratio"], rel=1e-6)
