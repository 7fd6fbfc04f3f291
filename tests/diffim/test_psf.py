"""Tests of astrid.diffim.psf: empirical PSF, Gaussian PSF and the FFT-origin convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from astrid.diffim import (
    PSFModel,
    PSFRequest,
    estimate_psf,
    gaussian_psf,
    measure_fwhm,
    psf_to_fft_origin,
)
from astrid.errors import AstridInputError, AstridPSFError, AstridWarning
from astrid.paths import shared_data

PIXEL_FWHM2 = 8 * math.log(2) / 12  # FWHM^2 that pixel integration adds to a Gaussian


def _star_image(
    n=384,
    nstars=120,
    fwhm=3.0,
    beta=None,
    seed=0,
    sky=100.0,
    noise=5.0,
    fluxes=(2000.0, 60000.0),
    margin=12,
):
    """Pixel-integrated Gaussian (or Moffat, sub-sampled 5x5) stars on a noisy sky."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(margin, n - margin, (nstars, 2))
    flux = np.exp(rng.uniform(np.log(fluxes[0]), np.log(fluxes[1]), nstars))
    img = np.zeros((n, n))
    r = int(math.ceil(6 * fwhm))
    s = fwhm / (2 * math.sqrt(2 * math.log(2)))
    sub = (np.arange(5) + 0.5) / 5 - 0.5
    for (x, y), f in zip(xy, flux):
        xs = np.arange(max(int(x) - r, 0), min(int(x) + r + 1, n))
        ys = np.arange(max(int(y) - r, 0), min(int(y) + r + 1, n))
        if beta is None:
            gx = 0.5 * (
                erf((xs + 0.5 - x) / (math.sqrt(2) * s)) - erf((xs - 0.5 - x) / (math.sqrt(2) * s))
            )
            gy = 0.5 * (
                erf((ys + 0.5 - y) / (math.sqrt(2) * s)) - erf((ys - 0.5 - y) / (math.sqrt(2) * s))
            )
            img[np.ix_(ys, xs)] += f * np.outer(gy, gx)
        else:
            alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
            dx = xs[None, :, None, None] + sub[None, None, None, :] - x
            dy = ys[:, None, None, None] + sub[None, None, :, None] - y
            prof = (beta - 1) / (math.pi * alpha**2) * (1 + (dx**2 + dy**2) / alpha**2) ** (-beta)
            img[np.ix_(ys, xs)] += f * prof.mean(axis=(2, 3))
    img += sky + rng.normal(0.0, noise, img.shape)
    return img.astype(np.float32), xy, flux


# ----------------------------------------------------------------------------- Gaussian and FFT origin


def test_gaussian_psf_shape_and_normalisation():
    psf = gaussian_psf(3.0)
    n = psf.shape[0]
    assert psf.shape == (n, n) and n % 2 == 1
    assert n >= 25 and n == pytest.approx(10 * 3.0, abs=2)
    assert psf.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(psf), psf.shape) == (n // 2, n // 2)
    np.testing.assert_allclose(psf, psf.T)
    np.testing.assert_allclose(psf, psf[::-1, ::-1])
    assert gaussian_psf(2.0, size=10).shape == (11, 11)  # even sizes become odd
    assert gaussian_psf(1.5).shape == (25, 25)  # never smaller than 25
    assert gaussian_psf(8.0).shape[0] >= 10 * 8
    with pytest.raises(AstridInputError):
        gaussian_psf(-1.0)


@pytest.mark.parametrize("fwhm", [2.0, 3.0, 5.0])
def test_measure_fwhm_of_pixelised_gaussian(fwhm):
    # A pixel-integrated Gaussian has FWHM^2 = fwhm^2 + 8 ln2 / 12 to within a few per cent.
    expected = math.sqrt(fwhm**2 + PIXEL_FWHM2)
    assert measure_fwhm(gaussian_psf(fwhm, 41)) == pytest.approx(expected, rel=0.03)


def test_psf_to_fft_origin_convolves_without_shift():
    rng = np.random.default_rng(0)
    psf = gaussian_psf(2.5, 15) * (1 + 0.2 * rng.random((15, 15)))  # asymmetric on purpose
    psf /= psf.sum()
    shape = (64, 80)
    kernel = psf_to_fft_origin(psf, shape)
    assert kernel.shape == shape
    assert kernel[0, 0] == psf[7, 7]
    assert kernel.sum() == pytest.approx(1.0)
    img = np.zeros(shape)
    img[30, 41] = 1.0
    out = np.fft.irfft2(np.fft.rfft2(img) * np.fft.rfft2(kernel), shape)
    # A delta at (30, 41) becomes the PSF with its centre pixel on (30, 41).
    np.testing.assert_allclose(out[23:38, 34:49], psf, atol=1e-12)


def test_psf_to_fft_origin_rejects_bad_input():
    with pytest.raises(AstridPSFError):
        psf_to_fft_origin(np.ones((4, 4)), (32, 32))
    with pytest.raises(AstridInputError):
        psf_to_fft_origin(gaussian_psf(3.0, 21), (16, 16))


def test_psf_model_from_array():
    raw = 7.0 * gaussian_psf(2.0, 21)
    model = PSFModel.from_array(raw)
    assert model.method == "given" and model.n_stars == 0
    assert model.psf.sum() == pytest.approx(1.0)
    assert model.fwhm == pytest.approx(measure_fwhm(gaussian_psf(2.0, 21)))
    with pytest.raises(AstridPSFError, match="odd"):
        PSFModel.from_array(np.ones((20, 20)))
    with pytest.raises(AstridPSFError, match="non-finite"):
        PSFModel.from_array(np.full((5, 5), np.nan))
    with pytest.raises(AstridPSFError, match="sums to"):
        PSFModel.from_array(np.zeros((5, 5)))


# ----------------------------------------------------------------------------- empirical PSF


@pytest.mark.parametrize("fwhm", [2.0, 3.0])
def test_empirical_psf_matches_true_gaussian(fwhm):
    img, _, _ = _star_image(fwhm=fwhm, seed=1)
    model = estimate_psf(img)
    n = model.psf.shape[0]
    assert model.method == "empirical"
    assert model.n_stars >= 40
    assert n % 2 == 1 and n >= 15
    assert model.psf.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(model.psf), model.psf.shape) == (n // 2, n // 2)
    truth = gaussian_psf(fwhm, n)
    # Sub-pixel centring by Fourier shift keeps even a 2-pixel PSF sharp.
    assert np.abs(model.psf - truth).max() < 0.02 * truth.max()
    assert model.fwhm == pytest.approx(measure_fwhm(truth), rel=0.03)
    # Centred: the first moment is at the centre pixel.
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    core = (xx**2 + yy**2) < (2 * fwhm) ** 2
    assert abs((model.psf * xx)[core].sum() / model.psf[core].sum()) < 0.02
    assert abs((model.psf * yy)[core].sum() / model.psf[core].sum()) < 0.02


def test_empirical_psf_of_moffat_stars():
    img, _, _ = _star_image(fwhm=3.5, beta=2.8, seed=2)
    model = estimate_psf(img)
    assert model.method == "empirical"
    # The truth, pixel-integrated and measured the same way.
    n = 41
    sub = (np.arange(5) + 0.5) / 5 - 0.5
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    alpha = 3.5 / (2 * math.sqrt(2 ** (1 / 2.8) - 1))
    r2 = (xx[..., None, None] + sub[None, None, None, :]) ** 2 + (
        yy[..., None, None] + sub[None, None, :, None]
    ) ** 2
    truth = ((1 + r2 / alpha**2) ** -2.8).mean(axis=(2, 3))
    assert model.fwhm == pytest.approx(measure_fwhm(truth / truth.sum()), rel=0.05)


def test_saturated_stars_are_not_used():
    img, _, _ = _star_image(fwhm=2.5, seed=3, fluxes=(3000.0, 300000.0))
    saturation = 6000.0
    clipped = np.minimum(img, saturation)
    model = estimate_psf(clipped, saturation=saturation)
    reference = estimate_psf(img)
    n = min(model.psf.shape[0], reference.psf.shape[0])
    assert model.method == "empirical"
    # Flat-topped stars would lower the peak and widen the PSF; they are left out.
    assert model.n_stars < reference.n_stars
    assert model.fwhm == pytest.approx(measure_fwhm(gaussian_psf(2.5, n)), rel=0.04)


def test_masked_and_nan_pixels_are_avoided():
    img, xy, _ = _star_image(fwhm=2.5, seed=4)
    mask = np.zeros(img.shape, dtype=bool)
    # Corrupt the cores of a third of the stars and mask them; NaN a few more.
    for k, (x, y) in enumerate(xy):
        if k % 3 == 0:
            img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 1e5
            mask[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = True
        elif k % 7 == 0:
            img[int(y), int(x)] = np.nan
    model = estimate_psf(img, mask=mask)
    assert model.method == "empirical"
    assert np.isfinite(model.psf).all()
    truth = gaussian_psf(2.5, model.psf.shape[0])
    assert np.abs(model.psf - truth).max() < 0.03 * truth.max()


def test_background_and_rms_can_be_given():
    img, _, _ = _star_image(fwhm=3.0, seed=5, sky=250.0)
    from astrid.diffim import estimate_background

    bkg = estimate_background(img)
    by_object = estimate_psf(img, background=bkg)
    by_arrays = estimate_psf(img, background=bkg.background, rms=bkg.rms)
    by_scalar = estimate_psf(img, background=250.0, rms=5.0)
    for model in (by_object, by_arrays, by_scalar):
        assert model.method == "empirical"
        assert model.fwhm == pytest.approx(measure_fwhm(gaussian_psf(3.0, 41)), rel=0.03)
    assert estimate_psf(img, request=PSFRequest(size=24)).psf.shape == (25, 25)


def test_few_stars_fall_back_to_a_gaussian_with_a_warning():
    img, _, _ = _star_image(nstars=6, fwhm=3.0, seed=6, fluxes=(20000.0, 40000.0))
    with pytest.warns(AstridWarning, match="usable PSF stars"):
        model = estimate_psf(img, request=PSFRequest(min_stars=10))
    assert model.method == "gaussian-fallback"
    assert model.n_stars == 0
    assert model.psf.sum() == pytest.approx(1.0)
    # Its width is the stack of the few stars': close to the truth.
    assert model.fwhm == pytest.approx(math.sqrt(9.0 + PIXEL_FWHM2), rel=0.1)


def test_no_stars_needs_a_fwhm_hint():
    noise = np.random.default_rng(7).normal(0.0, 1.0, (128, 128)).astype(np.float32)
    with pytest.raises(AstridPSFError, match="fwhm="):
        estimate_psf(noise)
    with pytest.warns(AstridWarning, match="Gaussian"):
        model = estimate_psf(noise, fwhm=4.0)
    assert model.method == "gaussian-fallback"
    assert model.fwhm == pytest.approx(measure_fwhm(gaussian_psf(4.0)), rel=1e-6)


def test_bad_input_raises():
    img, _, _ = _star_image(nstars=20, n=128)
    with pytest.raises(AstridInputError, match="no finite"):
        estimate_psf(np.full((64, 64), np.nan))
    with pytest.raises(AstridInputError, match="mask"):
        estimate_psf(img, mask=np.zeros((3, 3), bool))
    with pytest.raises(AstridInputError, match="2-D"):
        estimate_psf(np.zeros(10))
    with pytest.raises(AstridInputError, match="background"):
        estimate_psf(img, background=np.zeros((5, 5)))
    with pytest.raises(AstridInputError, match="size"):
        estimate_psf(img, request=PSFRequest(size=1))


# ----------------------------------------------------------------------------- simulated and real data


def test_simulated_pair_psf_width():
    simulate = pytest.importorskip("astrid.simulate")
    # A star-rich field (and a longer science exposure) so that both epochs have PSF stars.
    sim = simulate.pair(512, seed=3, n_stars=400, exptime_science=120.0)
    for epoch in ("reference", "science"):
        image = sim.image(epoch)
        model = estimate_psf(image.data, image.mask, saturation=image.meta.saturation)
        assert model.method == "empirical", epoch
        true_fwhm = measure_fwhm(sim.psf(epoch))
        assert model.fwhm == pytest.approx(true_fwhm, rel=0.1), epoch
        # And against the simulator's nominal (continuous) FWHM, pixel integration added.
        nominal = math.sqrt(sim.params[f"fwhm_{epoch}"] ** 2 + PIXEL_FWHM2)
        assert model.fwhm == pytest.approx(nominal, rel=0.15), epoch


@pytest.mark.shared_data
def test_decam_cutouts_fwhm_matches_header():
    folder = shared_data("images", "sfft_decam_decorr", "input_data")
    if folder is None:
        pytest.skip("shared DECam cutouts (images/sfft_decam_decorr) are not present")
    from astrid.io import read_image

    files = sorted(folder.glob("DEC-OBS*.mini.fits"))
    assert files
    for path in files:
        image = read_image(path)
        # 256x256 cutouts hold only a handful of PSF stars: the fallback is expected.
        with pytest.warns(AstridWarning, match="usable PSF stars"):
            model = estimate_psf(image.data, image.mask, saturation=image.meta.saturation)
        assert model.fwhm == pytest.approx(image.header["FWHM"], rel=0.15), path.name


def _varying_star_image(n=512, nstars=150, seed=3):
    """Gaussian stars whose FWHM grows linearly from 2.6 px (x = 0) to 3.4 px (x = n)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, n))
    for _ in range(nstars):
        x, y = rng.uniform(20, n - 20, 2)
        f = math.exp(rng.uniform(math.log(5000.0), math.log(60000.0)))
        s = (2.6 + 0.8 * x / n) / (2 * math.sqrt(2 * math.log(2)))
        xs, ys = np.arange(int(x) - 15, int(x) + 16), np.arange(int(y) - 15, int(y) + 16)
        gx = 0.5 * (
            erf((xs + 0.5 - x) / (math.sqrt(2) * s)) - erf((xs - 0.5 - x) / (math.sqrt(2) * s))
        )
        gy = 0.5 * (
            erf((ys + 0.5 - y) / (math.sqrt(2) * s)) - erf((ys - 0.5 - y) / (math.sqrt(2) * s))
        )
        img[np.ix_(ys, xs)] += f * np.outer(gy, gx)
    return img + 100.0 + rng.normal(0.0, 5.0, img.shape)


def test_psf_width_varying_over_the_field():
    img = _varying_star_image()
    constant = estimate_psf(img, background=100.0, rms=5.0)
    varying = estimate_psf(img, background=100.0, rms=5.0, request=PSFRequest(degree="auto"))
    assert not constant.varies and constant.at(10, 10) is constant.psf
    assert varying.varies and varying.degree == 2 and varying.n_stars >= 40
    for x in (40.0, 256.0, 470.0):
        true = math.sqrt((2.6 + 0.8 * x / 512) ** 2 + PIXEL_FWHM2)
        psf = varying.at(x, 256.0)
        assert psf.shape == varying.psf.shape and psf.sum() == pytest.approx(1.0)
        assert measure_fwhm(psf) == pytest.approx(true, rel=0.03)
    # Across the field the model follows a 27 % change of width that one PSF cannot.
    assert measure_fwhm(varying.at(470.0, 256.0)) / measure_fwhm(varying.at(40.0, 256.0)) > 1.18
    assert (
        abs(varying.width_at(256.0, 40.0) - varying.width_at(256.0, 470.0)) < 0.03
    )  # no change along y
    linear = estimate_psf(img, background=100.0, rms=5.0, request=PSFRequest(degree=1))
    assert linear.degree == 1 and linear.width_coefficients.shape == (3,)
    with pytest.raises(AstridInputError, match="degree"):
        estimate_psf(img, background=100.0, rms=5.0, request=PSFRequest(degree=3))


def test_stars_can_be_passed_in():
    from astrid.diffim import find_stars

    img = _varying_star_image()
    stars = find_stars(img, background=100.0, rms=5.0)
    given = estimate_psf(img, background=100.0, rms=5.0, stars=stars)
    found = estimate_psf(img, background=100.0, rms=5.0)
    np.testing.assert_allclose(given.psf, found.psf, atol=1e-6)
    # A list with too few usable stars does not force a Gaussian fallback: the image is searched.
    searched = estimate_psf(img, background=100.0, rms=5.0, stars=stars[:3])
    assert searched.method == "empirical"
    np.testing.assert_allclose(searched.psf, found.psf, atol=1e-6)
    with pytest.raises(AstridInputError, match="stars"):
        estimate_psf(img, background=100.0, rms=5.0, stars=stars[["x", "y"]])
