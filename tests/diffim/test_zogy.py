"""ZOGY proper subtraction on synthetic arrays (Gaussian PSFs, white noise, point sources)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astrid.diffim.zogy import (
    ZogyImage,
    ZogyOptions,
    ZogyResult,
    estimate_noise_acf,
    flux_at,
    robust_std,
    subtract,
)
from astrid.errors import AstridInputError

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def gaussian(fwhm, size=31, dx=0.0, dy=0.0):
    """Normalised Gaussian sampled at pixel centres, centre at [size//2 + dy, size//2 + dx]."""
    sigma = fwhm / FWHM_PER_SIGMA
    y, x = np.indices((size, size)) - size // 2
    psf = np.exp(-((x - dx) ** 2 + (y - dy) ** 2) / (2 * sigma**2))
    return psf / psf.sum()


def add_source(image, x, y, flux, fwhm, size=31):
    """Add a Gaussian point source at (x, y) (clipped at the edges); returns the added stamp."""
    ix, iy = int(round(x)), int(round(y))
    stamp = flux * gaussian(fwhm, size, x - ix, y - iy)
    h = size // 2
    y0, x0 = iy - h, ix - h
    ys, xs = (
        slice(max(y0, 0), min(y0 + size, image.shape[0])),
        slice(max(x0, 0), min(x0 + size, image.shape[1])),
    )
    image[ys, xs] += stamp[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def noise_pair(rng, shape=(256, 256), sigma_n=5.0, sigma_r=3.0):
    return rng.normal(0, sigma_n, shape), rng.normal(0, sigma_r, shape)


def starfield(
    rng, shape, fwhm_n, fwhm_r, sigma_n, sigma_r, ratio=1.0, n_stars=120, flux_range=(2.5, 5.5)
):
    """Static stars (with Poisson noise in ADU) in both images, plus their variance maps."""
    N, R = noise_pair(rng, shape, sigma_n, sigma_r)
    Sn, Sr = np.zeros(shape), np.zeros(shape)
    for _ in range(n_stars):
        x, y = rng.uniform(-6, shape[1] + 6), rng.uniform(-6, shape[0] + 6)
        flux = 10 ** rng.uniform(*flux_range)
        add_source(Sn, x, y, ratio * flux, fwhm_n)
        add_source(Sr, x, y, flux, fwhm_r)
    N += Sn + rng.normal(size=shape) * np.sqrt(Sn)
    R += Sr + rng.normal(size=shape) * np.sqrt(Sr)
    return N, R, sigma_n**2 + Sn, sigma_r**2 + Sr


@pytest.mark.parametrize(
    "fwhm_n, fwhm_r, ratio",
    [(4.0, 3.0, 1.0), (2.5, 4.5, 1.0), (3.0, 3.0, 0.6), (3.5, 2.2, 1.7)],
)
def test_scorr_and_D_have_unit_variance_in_noise(fwhm_n, fwhm_r, ratio):
    rng = np.random.default_rng(1)
    N, R = noise_pair(rng)
    result = subtract(
        reference=ZogyImage(R, gaussian(fwhm_r), 3.0),
        science=ZogyImage(N, gaussian(fwhm_n), 5.0),
        flux_ratio=ratio,
    )
    assert isinstance(result, ZogyResult)
    good = ~result.mask
    assert abs(result.scorr_std - 1.0) < 0.05
    assert abs(robust_std(result.S_corr, result.mask) - result.scorr_std) < 1e-12
    assert abs(np.std(result.D[good]) - 1.0) < 0.05
    # F_S is the background variance of S (eq. 42 = Σ F_D² |P̂_D|²).
    assert abs(np.std(result.S[good]) ** 2 / result.F_S - 1.0) < 0.1
    F_D = ratio / np.sqrt(25.0 + 9.0 * ratio**2)
    assert result.F_D == pytest.approx(F_D)


def test_psf_of_D_is_normalised_centred_and_equals_P_for_equal_psfs():
    rng = np.random.default_rng(2)
    N, R = noise_pair(rng, (128, 128))
    P = gaussian(3.0, 25)
    result = subtract(reference=ZogyImage(R, P, 3.0), science=ZogyImage(N, P, 5.0))
    assert result.P_D.shape == (25, 25)
    assert result.P_D.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(result.P_D), result.P_D.shape) == (12, 12)
    # For equal Gaussian PSFs, P̂_D = P̂² / |P̂| = P̂ (eq. 17).
    np.testing.assert_allclose(result.P_D, P, atol=1e-6)
    broader = subtract(
        reference=ZogyImage(R, P, 3.0),
        science=ZogyImage(N, gaussian(4.0, 25), 5.0),
    ).P_D
    assert broader.sum() == pytest.approx(1.0)
    assert broader.max() < P.max()  # P_D is broader than the sharper input PSF


@pytest.mark.parametrize("ratio", [1.0, 0.7, 1.5])
def test_flux_of_injected_sources_within_5_percent(ratio):
    rng = np.random.default_rng(3)
    N, R = noise_pair(rng, (256, 256))
    fwhm_n, fwhm_r = 4.0, 3.0
    truth = [(60, 60, 2500.0), (190, 70, 4000.0), (80, 200, 1500.0), (180, 180, 8000.0)]
    for x, y, flux in truth:
        add_source(N, x, y, flux, fwhm_n)
    result = subtract(
        reference=ZogyImage(R, gaussian(fwhm_r), 3.0),
        science=ZogyImage(N, gaussian(fwhm_n), 5.0),
        flux_ratio=ratio,
    )
    # In the background, flux_err = F_n / sqrt(F_S).
    assert result.flux_err[128, 128] == pytest.approx(ratio / np.sqrt(result.F_S))
    for x, y, flux in truth:
        snr = flux / result.flux_err[y, x]
        assert snr > 20
        assert result.flux[y, x] == pytest.approx(flux, rel=0.05)
        assert result.S_corr[y, x] == pytest.approx(snr, rel=0.1)
        assert np.unravel_index(
            np.argmax(result.S_corr[y - 5 : y + 6, x - 5 : x + 6]), (11, 11)
        ) == (5, 5)


def test_flux_at_interpolates_subpixel_peaks():
    rng = np.random.default_rng(4)
    N, R = noise_pair(rng, (256, 256), 2.0, 2.0)
    fwhm_n, fwhm_r = 3.0, 2.5
    truth = [
        (60.5, 60.5, 3000.0),
        (190.3, 70.8, 3000.0),
        (80.0, 200.0, 3000.0),
        (150.7, 150.2, -3000.0),
    ]
    for x, y, flux in truth:
        if flux > 0:
            add_source(N, x, y, flux, fwhm_n)
        else:  # a source that faded: present in the reference only
            add_source(R, x, y, -flux, fwhm_r)
    result = subtract(
        reference=ZogyImage(R, gaussian(fwhm_r), 2.0),
        science=ZogyImage(N, gaussian(fwhm_n), 2.0),
    )
    for x, y, flux in truth:
        measured = flux_at(result, x, y)
        assert not measured["masked"]
        assert measured["flux"] == pytest.approx(flux, rel=0.05)
        assert abs(measured["x"] - x) < 0.15 and abs(measured["y"] - y) < 0.15
    # At a half-pixel offset the pixel value alone is several per cent low.
    assert result.flux[60, 60] < 0.97 * 3000.0
    with pytest.raises(AstridInputError, match="outside"):
        flux_at(result, -3, 10)


def test_swapping_science_and_reference_negates_D_and_S():
    rng = np.random.default_rng(5)
    N, R, Vn, Vr = starfield(rng, (192, 192), 3.5, 2.5, 4.0, 3.0, ratio=1.4, n_stars=40)
    add_source(N, 100, 90, 4000.0, 3.5)
    ratio = 1.4
    options = ZogyOptions(astrometric_sigma=(0.05, 0.08))
    image_n = ZogyImage(N, gaussian(3.5), 4.0, variance=Vn)
    image_r = ZogyImage(R, gaussian(2.5), 3.0, variance=Vr)
    a = subtract(reference=image_r, science=image_n, flux_ratio=ratio, options=options)
    b = subtract(reference=image_n, science=image_r, flux_ratio=1 / ratio, options=options)
    np.testing.assert_array_equal(a.mask, b.mask)
    scale = np.abs(a.S).max()
    np.testing.assert_allclose(b.D, -a.D, atol=1e-9 * np.abs(a.D).max())
    np.testing.assert_allclose(b.S_corr, -a.S_corr, atol=1e-9 * np.abs(a.S_corr).max())
    np.testing.assert_allclose(b.S, -a.S / ratio, atol=1e-9 * scale)
    np.testing.assert_allclose(b.flux, -a.flux / ratio, atol=1e-9 * np.abs(a.flux).max())


def test_nan_masked_regions_and_edges_give_no_false_positives():
    rng = np.random.default_rng(6)
    shape = (320, 320)
    N, R, Vn, Vr = starfield(rng, shape, 4.0, 2.6, 5.0, 3.0)
    N[100:140, 200:260] = np.nan  # a hole in the science image
    R[:, 50] = np.inf  # a bad column in the reference
    mask = np.zeros(shape, bool)
    mask[250:258, 10:300] = True  # a flagged region (e.g. a satellite trail)
    result = subtract(
        reference=ZogyImage(R, gaussian(2.6), 3.0, variance=Vr),
        science=ZogyImage(N, gaussian(4.0), 5.0, variance=Vn),
        mask=mask,
    )
    r = result.mask_radius
    assert r >= 3
    # The mask covers the bad pixels, dilated, and an edge band.
    assert result.mask[100 - r : 140 + r, 200 - r : 260 + r].all()
    assert result.mask[:, 50 - r : 50 + r + 1].all()
    assert result.mask[250 - r : 258 + r, 10 : 300 + r].all()
    assert (
        result.mask[:r].all()
        and result.mask[-r:].all()
        and result.mask[:, :r].all()
        and result.mask[:, -r:].all()
    )
    assert not result.mask[160:240, 100:180].any()
    assert np.all(result.S_corr[result.mask] == 0) and np.all(
        np.isnan(result.flux_err[result.mask])
    )
    for name in ("D", "S", "S_corr", "flux"):
        assert np.all(np.isfinite(getattr(result, name))), name
    false_positives = np.count_nonzero((np.abs(result.S_corr) > 5) & ~result.mask)
    assert false_positives == 0
    assert abs(result.scorr_std - 1.0) < 0.05


def test_fill_value_nan_marks_masked_pixels():
    rng = np.random.default_rng(7)
    N, R = noise_pair(rng, (96, 96))
    N[40:50, 40:50] = np.nan
    result = subtract(
        reference=ZogyImage(R, gaussian(3.0, 15), 3.0),
        science=ZogyImage(N, gaussian(3.0, 15), 5.0),
        options=ZogyOptions(fill_value=np.nan, mask_radius=2),
    )
    assert result.mask_radius == 2
    assert np.isnan(result.S_corr[result.mask]).all()
    assert np.isfinite(result.S_corr[~result.mask]).all()
    assert result.mask[38:52, 38:52].all() and not result.mask[37, 45] and not result.mask[45, 52]


def test_source_noise_term_suppresses_bright_star_residuals():
    rng = np.random.default_rng(8)
    N, R, Vn, Vr = starfield(rng, (256, 256), 3.5, 2.5, 5.0, 3.0, n_stars=25, flux_range=(5.5, 6.0))
    plain = subtract(
        reference=ZogyImage(R, gaussian(2.5), 3.0),
        science=ZogyImage(N, gaussian(3.5), 5.0),
    )
    corrected = subtract(
        reference=ZogyImage(R, gaussian(2.5), 3.0, variance=Vr),
        science=ZogyImage(N, gaussian(3.5), 5.0, variance=Vn),
    )
    plain_peaks = np.count_nonzero((np.abs(plain.S_corr) > 5) & ~plain.mask)
    corrected_peaks = np.count_nonzero((np.abs(corrected.S_corr) > 5) & ~corrected.mask)
    assert plain_peaks > 50
    assert corrected_peaks == 0
    np.testing.assert_array_equal(plain.S, corrected.S)  # only the normalisation changes
    assert np.all(corrected.V_S[~corrected.mask] >= corrected.F_S * (1 - 1e-9))


def test_astrometric_noise_term_suppresses_misregistration_residuals():
    rng = np.random.default_rng(9)
    shape = (192, 192)
    N, R = noise_pair(rng, shape)
    for x, y in [(50, 50), (140, 60), (90, 140)]:
        add_source(N, x + 0.12, y - 0.08, 3e5, 3.5)  # the science is 0.1 px off
        add_source(R, x, y, 3e5, 2.5)
    common = dict(
        reference=ZogyImage(R, gaussian(2.5), 3.0), science=ZogyImage(N, gaussian(3.5), 5.0)
    )
    plain = subtract(**common)
    corrected = subtract(**common, options=ZogyOptions(astrometric_sigma=(0.12, 0.08)))
    assert np.abs(plain.S_corr[~plain.mask]).max() > 10
    assert np.abs(corrected.S_corr[~corrected.mask]).max() < 5
    assert corrected.n_fft == plain.n_fft + 1
    assert corrected.astrometric_sigma == (0.12, 0.08)


def test_float32_matches_float64():
    rng = np.random.default_rng(10)
    N, R, Vn, Vr = starfield(rng, (256, 256), 3.5, 2.5, 5.0, 3.0, n_stars=60)
    add_source(N, 120, 130, 3000.0, 3.5)
    images = dict(
        reference=ZogyImage(R, gaussian(2.5), 3.0, variance=Vr),
        science=ZogyImage(N, gaussian(3.5), 5.0, variance=Vn),
    )
    r64 = subtract(**images, options=ZogyOptions(astrometric_sigma=0.05, dtype=np.float64))
    r32 = subtract(**images, options=ZogyOptions(astrometric_sigma=0.05, dtype=np.float32))
    assert (
        r32.S_corr.dtype == np.float32 and r32.D.dtype == np.float32 and r32.P_D.dtype == np.float32
    )
    np.testing.assert_array_equal(r32.mask, r64.mask)
    np.testing.assert_allclose(r32.S_corr, r64.S_corr, atol=2e-3)
    np.testing.assert_allclose(r32.flux, r64.flux, atol=1e-4 * np.abs(r64.flux).max())
    np.testing.assert_allclose(r32.D, r64.D, atol=1e-4 * np.abs(r64.D).max())
    assert r32.F_S == pytest.approx(r64.F_S, rel=1e-5)


def test_fft_count_and_timings():
    rng = np.random.default_rng(11)
    N, R = noise_pair(rng, (64, 64))
    V = np.full(N.shape, 30.0)
    P = gaussian(3.0, 15)
    assert subtract(reference=ZogyImage(R, P, 3), science=ZogyImage(N, P, 5)).n_fft == 6
    assert (
        subtract(
            reference=ZogyImage(R, P, 3),
            science=ZogyImage(N, P, 5),
            options=ZogyOptions(astrometric_sigma=0.1),
        ).n_fft
        == 7
    )
    assert subtract(reference=ZogyImage(R, P, 3), science=ZogyImage(N, P, 5, variance=V)).n_fft == 9
    assert (
        subtract(
            reference=ZogyImage(R, P, 3, variance=V),
            science=ZogyImage(N, P, 5, variance=V),
        ).n_fft
        == 11
    )
    result = subtract(
        reference=ZogyImage(R, P, 3, variance=V),
        science=ZogyImage(N, P, 5, variance=V),
        options=ZogyOptions(astrometric_sigma=0.1),
    )
    assert result.n_fft == 12
    assert set(result.timings) == {"fft", "spectral", "assemble", "total"}
    assert all(t >= 0 for t in result.timings.values())
    # The FFT grid is padded beyond twice the kernel radius on each side.
    assert all(p >= s + 4 * result.mask_radius for p, s in zip(result.padded_shape, N.shape))


def test_integer_and_float32_inputs_are_accepted():
    rng = np.random.default_rng(12)
    N = rng.poisson(100, (64, 64)) - 100
    R = (rng.normal(0, 3, (64, 64))).astype(np.float32)
    result = subtract(
        reference=ZogyImage(R, gaussian(3.0, 15), 3.0),
        science=ZogyImage(N, gaussian(3.0, 15), 10.0),
        options=ZogyOptions(dtype=np.float32),
    )
    assert result.D.shape == (64, 64) and result.D.dtype == np.float32


def test_correlated_noise_acf_is_estimated_and_keeps_unit_variance():
    rng = np.random.default_rng(13)
    shape = (256, 256)
    kernel = np.array([[0.0, 0.15, 0.0], [0.15, 0.4, 0.15], [0.0, 0.15, 0.0]])
    N = ndimage.convolve(rng.normal(0, 5, shape), kernel, mode="wrap")
    R = ndimage.convolve(rng.normal(0, 3, shape), kernel, mode="wrap")
    add_source(N, 128, 128, 400.0, 3.5)  # sources are masked by the estimator
    acf_n = estimate_noise_acf(N)
    acf_r = estimate_noise_acf(R, mask=np.zeros(shape, bool), size=3)
    assert acf_n.shape == (5, 5) and acf_r.shape == (3, 3) and acf_n[2, 2] == 1.0
    # Expected lag-1 correlation of noise convolved with `kernel`.
    expected = np.sum(kernel[:, 1:] * kernel[:, :-1]) / np.sum(kernel**2)
    assert acf_n[2, 3] == pytest.approx(expected, abs=0.03)
    assert acf_r[1, 0] == pytest.approx(expected, abs=0.03)
    np.testing.assert_allclose(acf_n, acf_n[::-1, ::-1])
    sigma_n, sigma_r = np.std(N), np.std(R)
    white = subtract(
        reference=ZogyImage(R, gaussian(2.5), sigma_r),
        science=ZogyImage(N, gaussian(3.5), sigma_n),
    )
    modelled = subtract(
        reference=ZogyImage(R, gaussian(2.5), sigma_r, noise_acf=acf_r),
        science=ZogyImage(N, gaussian(3.5), sigma_n, noise_acf=acf_n),
    )
    assert white.scorr_std > 1.2
    assert abs(modelled.scorr_std - 1.0) < 0.05
    assert abs(robust_std(modelled.D, modelled.mask) - 1.0) < 0.05  # D is whitened
    assert modelled.n_fft == white.n_fft  # the spectrum is evaluated from the lags
    assert modelled.S_corr[128, 128] > 10
    assert estimate_noise_acf(np.zeros((50, 50))) is None  # no noise to measure


def test_systematic_term_calibrates_itself_on_mismatched_bright_stars():
    rng = np.random.default_rng(14)
    shape = (256, 256)
    N, R = noise_pair(rng, shape)
    for _ in range(20):
        x, y = rng.uniform(15, shape[1] - 15, 2)
        add_source(N, x, y, 5e4, 3.6)  # true science PSF ...
        add_source(R, x, y, 5e4, 2.5)
    add_source(N, 40.0, 200.0, 3000.0, 3.6)  # a new source on empty sky
    model_n = gaussian(3.45)  # ... modelled 4 % too narrow
    plain = subtract(reference=ZogyImage(R, gaussian(2.5), 3.0), science=ZogyImage(N, model_n, 5.0))
    auto = subtract(
        reference=ZogyImage(R, gaussian(2.5), 3.0),
        science=ZogyImage(N, model_n, 5.0),
        options=ZogyOptions(systematic_fraction="auto"),
    )
    fixed = subtract(
        reference=ZogyImage(R, gaussian(2.5), 3.0),
        science=ZogyImage(N, model_n, 5.0),
        options=ZogyOptions(systematic_fraction=auto.systematic_fraction),
    )
    assert np.count_nonzero((np.abs(plain.S_corr) > 5) & ~plain.mask) > 20
    assert auto.n_systematic_stars >= 10 and 0.005 < auto.systematic_fraction < 0.2
    assert np.count_nonzero((np.abs(auto.S_corr) > 5) & ~auto.mask) == np.count_nonzero(
        (np.abs(auto.S_corr[190:211, 30:51]) > 5) & ~auto.mask[190:211, 30:51]
    )
    np.testing.assert_allclose(fixed.S_corr, auto.S_corr, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(auto.S, plain.S, rtol=1e-9, atol=1e-9 * np.abs(plain.S).max())
    # The new source is not penalised: min(S_N², S_R²) is ~0 there.
    assert auto.S_corr[200, 40] == pytest.approx(plain.S_corr[200, 40], rel=0.01)
    assert auto.n_fft == plain.n_fft + 1


P_OK = gaussian(3.0, 15)
IMG = np.zeros((32, 32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reference=np.zeros((32, 31))), "differ"),
        (dict(science=np.zeros(32)), "2-D"),
        (dict(science=np.zeros((32, 32), complex)), "real-valued"),
        (dict(science_psf=P_OK * 2), "normalised"),
        (dict(reference_psf=np.ones((4, 4)) / 16), "odd"),
        (dict(science_psf=np.ones(9) / 9), "2-D"),
        (dict(science_psf=np.where(P_OK == P_OK.max(), np.nan, P_OK)), "NaN"),
        (dict(science_sigma=-1.0), "science_sigma"),
        (dict(reference_sigma=0.0), "reference_sigma"),
        (dict(science_sigma=np.nan), "science_sigma"),
        (dict(flux_ratio=0.0), "flux_ratio"),
        (dict(flux_ratio="x"), "flux_ratio"),
        (dict(astrometric_sigma=(-0.1, 0.0)), "astrometric_sigma"),
        (dict(astrometric_sigma=(0.1, 0.1, 0.1)), "astrometric_sigma"),
        (dict(science_variance=np.ones((8, 8))), "science_variance"),
        (dict(mask=np.zeros((32, 30), bool)), "mask"),
        (dict(dtype=np.int32), "dtype"),
        (dict(mask_radius=-1), "mask_radius"),
        (dict(systematic_fraction=-0.1), "systematic_fraction"),
        (dict(systematic_fraction="always"), "systematic_fraction"),
        (dict(science_noise_acf=np.ones((4, 4))), "science_noise_acf"),
        (dict(reference_noise_acf=np.zeros((3, 3))), "lag 0"),
        (dict(science=np.full((32, 32), np.nan)), "no pixel"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    # The flat names of the errors: "<role>_<field>" for the fields of a ZogyImage.
    args = dict(
        science=IMG,
        reference=IMG,
        science_psf=P_OK,
        reference_psf=P_OK,
        science_sigma=1.0,
        reference_sigma=1.0,
    )
    args.update(kwargs)
    images = {
        role: ZogyImage(
            args.pop(role),
            args.pop(f"{role}_psf"),
            args.pop(f"{role}_sigma"),
            variance=args.pop(f"{role}_variance", None),
            noise_acf=args.pop(f"{role}_noise_acf", None),
        )
        for role in ("reference", "science")
    }
    top = {key: args.pop(key) for key in ("flux_ratio", "mask") if key in args}
    with pytest.raises(AstridInputError, match=message):
        subtract(**images, **top, options=ZogyOptions(**args))


def test_images_are_keyword_only_zogy_images():
    # The old order subtract(science, reference, ...) must fail, not negate D.
    P = gaussian(3.0, 15)
    with pytest.raises(TypeError):
        subtract(IMG, IMG, P, P, 1.0, 1.0)
    with pytest.raises(TypeError):
        subtract(ZogyImage(IMG, P, 1.0), ZogyImage(IMG, P, 1.0))
    with pytest.raises(AstridInputError, match="reference: must be a zogy.ZogyImage"):
        subtract(reference=IMG, science=ZogyImage(IMG, P, 1.0))


def test_repaired_pixels_are_masked_without_dilation():
    rng = np.random.default_rng(15)
    N, R = noise_pair(rng, (96, 96))
    P = gaussian(3.0, 15)
    repaired = np.zeros(N.shape, bool)
    repaired[48, 48] = True
    images = dict(reference=ZogyImage(R, P, 3.0), science=ZogyImage(N, P, 5.0))
    plain = subtract(**images)
    flagged = subtract(**images, repaired=repaired)
    np.testing.assert_array_equal(flagged.mask, plain.mask | repaired)
    with pytest.raises(AstridInputError, match="repaired"):
        subtract(**images, repaired=np.zeros((5, 5), bool))


def test_systematic_term_spares_transients_on_extended_galaxies():
    # The term follows the compact part of the static sources: a broad galaxy
    # (no PSF-model residual to speak of) must not hide a transient at its centre.
    rng = np.random.default_rng(21)
    shape = (128, 128)
    N, R = noise_pair(rng, shape)
    yy, xx = np.indices(shape)
    galaxy = (
        5e4 * np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / (2 * 10.0**2)) / (2 * np.pi * 10.0**2)
    )
    N += galaxy
    R += galaxy
    add_source(N, 64.0, 64.0, 600.0, 3.0)
    star_n, star_r = N.copy(), R.copy()
    add_source(star_n, 64.0, 64.0, 5e4, 3.0)  # the same flux, compact: a static star
    add_source(star_r, 64.0, 64.0, 5e4, 3.0)
    P = gaussian(3.0)
    plain = subtract(reference=ZogyImage(R, P, 3.0), science=ZogyImage(N, P, 5.0))
    on_galaxy = subtract(
        reference=ZogyImage(R, P, 3.0),
        science=ZogyImage(N, P, 5.0),
        options=ZogyOptions(systematic_fraction=0.03),
    )
    on_star = subtract(
        reference=ZogyImage(star_r, P, 3.0),
        science=ZogyImage(star_n, P, 5.0),
        options=ZogyOptions(systematic_fraction=0.03),
    )
    print(
        "S_corr of the transient: no term",
        plain.S_corr[64, 64],
        "on the galaxy",
        on_galaxy.S_corr[64, 64],
        "on a star",
        on_star.S_corr[64, 64],
    )
    assert plain.S_corr[64, 64] > 20
    assert on_galaxy.S_corr[64, 64] > 0.5 * plain.S_corr[64, 64]
    assert on_star.S_corr[64, 64] < 0.25 * on_galaxy.S_corr[64, 64]


def test_psfs_varying_over_the_field_are_applied_per_tile():
    # The science PSF broadens from left to right; a callable PSF follows it,
    # a single PSF leaves residuals at the stars far from where it is right.
    rng = np.random.default_rng(5)
    shape = (256, 512)
    N, R = noise_pair(rng, shape, 2.0, 2.0)

    def fwhm_n(x):
        return 2.6 + 1.2 * x / shape[1]

    for _ in range(60):
        x, y = rng.uniform(20, shape[1] - 20), rng.uniform(20, shape[0] - 20)
        add_source(N, x, y, 3e3, fwhm_n(x))
        add_source(R, x, y, 3e3, 2.5)
    add_source(N, 400.0, 128.0, 400.0, fwhm_n(400.0))  # a transient

    def science_psf(x, y):
        return gaussian(fwhm_n(x))

    fixed = subtract(
        reference=ZogyImage(R, gaussian(2.5), 2.0),
        science=ZogyImage(N, science_psf(256, 128), 2.0),
    )
    tiled = subtract(
        reference=ZogyImage(R, gaussian(2.5), 2.0),
        science=ZogyImage(N, science_psf, 2.0),
        options=ZogyOptions(tile_size=128),
    )
    assert len(tiled.tiles) == 8 and fixed.tiles == ()
    assert {t[:4] for t in tiled.tiles} == {
        (y0, y0 + 128, x0, x0 + 128) for y0 in (0, 128) for x0 in range(0, 512, 128)
    }
    bad_fixed = np.count_nonzero((np.abs(fixed.S_corr) > 5) & ~fixed.mask)
    bad_tiled = np.count_nonzero((np.abs(tiled.S_corr[:, :380]) > 5) & ~tiled.mask[:, :380])
    print("pixels above 5 sigma: one PSF", bad_fixed, "tiles", bad_tiled)
    assert bad_fixed > 50 and bad_tiled < 0.2 * bad_fixed
    assert tiled.S_corr[128, 400] > 5
    assert flux_at(tiled, 400.0, 128.0)["flux"] == pytest.approx(400.0, rel=0.15)
    # V_S uses each tile's own F_S.
    assert np.all(tiled.V_S[~tiled.mask] > 0)
    with pytest.raises(AstridInputError, match="tile_size"):
        subtract(
            reference=ZogyImage(R, gaussian(2.5), 2.0),
            science=ZogyImage(N, science_psf, 2.0),
            options=ZogyOptions(tile_size=10),
        )
