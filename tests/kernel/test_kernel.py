"""Fitted, spatially varying PSF-matching kernels (astrid.kernel)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astrid.diffim.zogy import robust_std
from astrid.errors import AstridInputError, AstridPSFError
from astrid.kernel import (
    KernelInputs,
    KernelOptions,
    alard_lupton_basis,
    delta_basis,
    subtract,
)


def _gaussian(sx, sy=None, theta=0.0, half=6):
    sy = sx if sy is None else sy
    u = np.arange(-half, half + 1, dtype=float)
    X, Y = np.meshgrid(u, u)
    c, s = np.cos(theta), np.sin(theta)
    xr, yr = c * X + s * Y, -s * X + c * Y
    k = np.exp(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2))
    return k / k.sum()


def _stars(n, size, seed, sigma=1.0, margin=30, flux=(3.0, 4.5)):
    """A noiseless image of Gaussian stars (sub-pixel positions), their positions and fluxes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(margin, size - margin, n)
    y = rng.uniform(margin, size - margin, n)
    f = 10 ** rng.uniform(*flux, n)
    image = np.zeros((size, size))
    half = 8
    u = np.arange(-half, half + 1)
    for xi, yi, fi in zip(x, y, f):
        ix, iy = int(xi), int(yi)
        X, Y = np.meshgrid(u - (xi - ix), u - (yi - iy))
        p = np.exp(-0.5 * (X**2 + Y**2) / sigma**2)
        image[iy - half : iy + half + 1, ix - half : ix + half + 1] += fi * p / p.sum()
    order = np.argsort(-f)
    return image, np.c_[x, y][order], f[order]


def _pair(kernel, size=320, n=90, seed=1, sigma_r=1.0, sigma_n=1.5):
    """Reference = stars + noise; science = stars convolved with ``kernel`` + noise."""
    rng = np.random.default_rng(seed + 100)
    truth, xy, flux = _stars(n, size, seed)
    science = ndimage.convolve(truth, kernel, mode="constant")
    return (
        truth + rng.normal(0, sigma_r, truth.shape),
        science + rng.normal(0, sigma_n, truth.shape),
        xy,
        flux,
        truth,
    )


def _moments(k):
    """Sum, centroid and second moments (xx, yy, xy) of a kernel."""
    half = k.shape[0] // 2
    u = np.arange(-half, half + 1, dtype=float)
    X, Y = np.meshgrid(u, u)
    total = k.sum()
    cx, cy = (k * X).sum() / total, (k * Y).sum() / total
    return np.array(
        [
            total,
            cx,
            cy,
            (k * (X - cx) ** 2).sum() / total,
            (k * (Y - cy) ** 2).sum() / total,
            (k * (X - cx) * (Y - cy)).sum() / total,
        ]
    )


def assert_kernel_close(fitted, expected, l1=0.1, moments=0.05):
    """The fitted kernel within ``l1`` (relative L1 norm; None: not checked) of the expected, its sum
    within 0.5 % and its centroid and second moments within ``moments`` px² (px)."""
    if l1 is not None:
        assert np.abs(fitted - expected).sum() / expected.sum() < l1
    mf, me = _moments(fitted), _moments(expected)
    assert mf[0] == pytest.approx(me[0], rel=5e-3)
    np.testing.assert_allclose(mf[1:], me[1:], atol=moments)


_INPUTS = {
    "science_variance",
    "reference_variance",
    "science_sigma",
    "reference_sigma",
    "science_fwhm",
    "reference_fwhm",
    "science_psf",
    "reference_psf",
    "astrometric_sigma",
}


def _fit(reference, science, xy, mask=None, **kw):
    """kernel.subtract on the stars ``xy``; ``kw`` are KernelInputs and KernelOptions fields."""
    kw.setdefault("reference_sigma", 1.0)
    kw.setdefault("science_sigma", 1.5)
    kw.setdefault("degree", 0)
    kw.setdefault("min_snr", 20)
    inputs = KernelInputs(**{k: kw.pop(k) for k in list(kw) if k in _INPUTS})
    return subtract(
        reference, science, stars=xy, mask=mask, inputs=inputs, options=KernelOptions(**kw)
    )


def test_bases_layout():
    for basis in (alard_lupton_basis(5), delta_basis(3)):
        sums = basis.images.reshape(basis.size, -1).sum(axis=1)
        assert sums[0] == pytest.approx(1.0)
        np.testing.assert_allclose(sums[1:], 0.0, atol=1e-9)
        np.testing.assert_allclose(
            np.tensordot(
                basis.transform,
                np.array(
                    [np.outer(basis.fy[a], basis.fx[b]) for a, b in zip(basis.raw_y, basis.raw_x)]
                ),
                axes=1,
            ),
            basis.images,
            atol=1e-12,
        )
    assert alard_lupton_basis(10).size == 49  # HOTPANTS's 3 Gaussians with degrees 6, 4, 2
    assert delta_basis(3).size == 49


def test_elongated_kernel_recovered():
    true = 0.8 * _gaussian(1.3, 0.7, 0.5, half=5)
    reference, science, xy, _, _ = _pair(true)
    res = _fit(reference, science, xy, half_width=5)
    assert res.convolved == "reference"
    assert res.flux_ratio == pytest.approx(0.8, rel=3e-3)
    assert_kernel_close(res.model.at(160, 160), true)
    # An asymmetric kernel (a shifted component) keeps its orientation.
    shifted = np.zeros((11, 11))
    shifted[5, 5], shifted[6, 7] = 0.3, 0.6
    reference, science, xy, _, _ = _pair(ndimage.gaussian_filter(shifted, 0.6))
    res = _fit(reference, science, xy, half_width=5, basis="delta")
    fitted = res.model.at(160, 160)
    assert np.unravel_index(np.argmax(fitted), fitted.shape) == (6, 7)
    assert res.significance_std == pytest.approx(1.0, abs=0.05)


def test_spatially_varying_kernel_recovered():
    size = 384
    left, right = 0.9 * _gaussian(0.8, half=5), 1.0 * _gaussian(1.6, 1.0, 0.3, half=5)
    rng = np.random.default_rng(5)
    truth, xy, _ = _stars(160, size, seed=4)
    t = np.linspace(0.0, 1.0, size)[None, :]  # the kernel goes linearly from `left` to `right` in x
    science = (1 - t) * ndimage.convolve(truth, left, mode="constant") + t * ndimage.convolve(
        truth, right, mode="constant"
    )
    reference = truth + rng.normal(0, 1.0, truth.shape)
    science = science + rng.normal(0, 1.5, truth.shape)
    res = _fit(reference, science, xy, degree=1, scale_degree=1, half_width=5)
    assert res.model.degree == 1
    for x, expected in ((0.0, left), (size - 1.0, right), (size / 2, 0.5 * (left + right))):
        assert_kernel_close(res.model.at(x, size / 2), expected, l1=0.15, moments=0.1)
    assert float(res.model.kernel_sum(0.0, 100.0)) == pytest.approx(0.9, rel=5e-3)
    assert float(res.model.kernel_sum(size - 1.0, 100.0)) == pytest.approx(1.0, rel=5e-3)
    assert res.kernel_sum["min"] == pytest.approx(0.9, rel=5e-3)
    assert res.significance_std == pytest.approx(1.0, abs=0.05)
    # A null pair: the exact FFT sum over the spatial terms leaves noise only, even at the brightest
    # stars. The numba loop with one kernel per 32 px tile agrees in the noise, but not at the
    # brightest stars, where the kernel's change across a tile (here 0.8 % in scale) shows.
    assert np.abs(res.significance[~res.mask]).max() < 6
    direct = _fit(
        reference, science, xy, degree=1, scale_degree=1, half_width=5, convolution="direct"
    )
    assert direct.significance_std == pytest.approx(res.significance_std, abs=0.03)


def test_delta_and_alard_lupton_agree_on_gaussian():
    true = 1.1 * _gaussian(1.1, half=5)
    reference, science, xy, _, _ = _pair(true, seed=2)
    al = _fit(reference, science, xy, half_width=5)
    delta = _fit(reference, science, xy, half_width=5, basis="delta")
    assert al.flux_ratio == pytest.approx(delta.flux_ratio, rel=3e-3)
    assert al.flux_ratio == pytest.approx(1.1, rel=3e-3)
    k_al, k_delta = al.model.at(160, 160), delta.model.at(160, 160)
    assert_kernel_close(k_al, true)
    # Pixel by pixel the unregularised delta basis is noisy (high spatial frequencies the smooth stars
    # do not constrain), so it agrees in sum, centroid and width, and in the difference image.
    assert_kernel_close(k_delta, k_al, l1=None)
    valid = ~(al.mask | delta.mask)
    assert robust_std(al.D - delta.D, ~valid) < 0.3 * robust_std(al.D, ~valid)
    # Both subtract to noise.
    for res in (al, delta):
        assert res.significance_std == pytest.approx(1.0, abs=0.05)
        assert np.abs(res.detection[~res.mask]).max() < 6


def test_bad_stamps_rejected():
    true = 0.9 * _gaussian(1.0, half=5)
    reference, science, xy, flux, truth = _pair(true, seed=3)
    # The brightest star varies (50 % brighter in the science); the second saturates there
    # without being flagged (its top cut flat).
    variable, saturated = xy[0], xy[1]
    u = np.arange(-8, 9)

    def star(x, y, f):
        ix, iy = int(x), int(y)
        X, Y = np.meshgrid(u - (x - ix), u - (y - iy))
        p = np.exp(-0.5 * (X**2 + Y**2))
        out = np.zeros_like(truth)
        out[iy - 8 : iy + 9, ix - 8 : ix + 9] = f * p / p.sum()
        return ndimage.convolve(out, true, mode="constant")

    science = science + 0.5 * star(*variable, flux[0])
    sat_star = star(*saturated, flux[1])
    level = 0.3 * sat_star.max()
    science = science - sat_star + np.minimum(sat_star, level)
    res = _fit(reference, science, xy, half_width=5)
    stamps = res.stamps
    for x, y in (variable, saturated):
        row = np.argmin(np.hypot(stamps["x"] - x, stamps["y"] - y))
        assert np.hypot(stamps["x"][row] - x, stamps["y"][row] - y) < 1
        assert not stamps["used"][row] and stamps["rejected"][row] == "clipped"
    assert res.n_stamps_rejected >= 2
    assert res.flux_ratio == pytest.approx(0.9, rel=3e-3)
    # The variable star is the one significant source left; the saturated star is flagged by the
    # caller's mask in practice, and its cut top shows here.
    assert abs(res.detection[round(variable[1]), round(variable[0])]) > 20


def test_too_few_stars_is_a_clear_error():
    reference, science, xy, _, _ = _pair(_gaussian(1.0, half=5), n=40)
    with pytest.raises(
        AstridPSFError, match=r"3 stars usable for kernel stamps, at least 5 needed"
    ):
        _fit(reference, science, xy[:3])
    with pytest.raises(
        AstridPSFError, match=r"of 40 star positions given or found, dropped: 40 faint"
    ):
        _fit(reference, science, xy, min_snr=1e5)
    with pytest.raises(AstridPSFError, match="spatial degree 2"):
        _fit(reference, science, xy[:20], degree=2)


def test_null_pair_significance_is_calibrated():
    # Science PSF broader than the reference's, a flux ratio, Poisson-like variance maps.
    true = 0.7 * _gaussian(1.2, half=6)
    size = 384
    rng = np.random.default_rng(9)
    truth, xy, _ = _stars(150, size, seed=9)
    model_n = ndimage.convolve(truth, true, mode="constant")
    var_r = 4.0 + truth / 20.0
    var_n = 9.0 + model_n / 20.0
    reference = truth + rng.normal(size=truth.shape) * np.sqrt(var_r)
    science = model_n + rng.normal(size=truth.shape) * np.sqrt(var_n)
    res = subtract(
        reference,
        science,
        stars=xy,
        inputs=KernelInputs(reference_variance=var_r, science_variance=var_n),
    )
    assert res.significance_std == pytest.approx(1.0, abs=0.05)
    assert res.detection_std == pytest.approx(1.0, abs=0.05)
    assert res.flux_ratio == pytest.approx(0.7, rel=5e-3)
    assert np.count_nonzero(np.abs(res.detection[~res.mask]) > 5) == 0


def test_sharper_science_is_convolved_and_d_in_science_units():
    size = 320
    rng = np.random.default_rng(11)
    truth, xy, _ = _stars(90, size, seed=11)
    broad = _gaussian(1.1, half=6)
    reference = ndimage.convolve(truth, broad, mode="constant") + rng.normal(0, 1.0, truth.shape)
    science_truth = 0.5 * truth
    science_truth[200, 150] += 3000.0  # a new point source, 3000 in science units
    science = ndimage.gaussian_filter(science_truth, 0.0) + rng.normal(0, 1.0, truth.shape)
    res = _fit(reference, science, xy, science_sigma=1.0, half_width=6)
    assert res.convolved == "science"
    assert res.flux_ratio == pytest.approx(0.5, rel=5e-3)
    assert res.D[195:206, 145:156].sum() == pytest.approx(3000.0, rel=0.05)
    assert res.detection[200, 150] > 20


def test_bad_options_are_named():
    reference, science, xy, _, _ = _pair(_gaussian(1.0, half=5), n=30, size=200)
    for kw, name in (
        ({"basis": "gauss"}, "basis"),
        ({"degree": 3}, "degree"),
        ({"convolve": "both"}, "convolve"),
        ({"half_width": 0}, "half_width"),
        ({"systematic": 2.0}, "systematic"),
        ({"science_psf": np.ones((4, 4))}, "science_psf"),
        ({"min_snr": -1}, "min_snr"),
        ({"astrometric_sigma": (0.1, -1.0)}, "astrometric_sigma"),
    ):
        with pytest.raises(AstridInputError, match=name):
            _fit(reference, science, xy, **kw)
    with pytest.raises(AstridInputError, match="shape"):
        subtract(reference, science[:, :-1], stars=xy)


def test_astrometric_term_covers_a_misregistration():
    # The science shifted by 0.1 px against the reference: bright stars leave dipoles that the
    # kernel (one for the field) absorbs; a registration error that varies over the field does not
    # fit a constant kernel, and the astrometric term keeps such residuals below threshold.
    size = 320
    rng = np.random.default_rng(21)
    truth, xy, _ = _stars(90, size, seed=21, flux=(3.5, 5.0))
    yy, xx = np.mgrid[:size, :size]
    shifted = ndimage.map_coordinates(
        truth, [yy + 0.15 * (xx / size - 0.5), xx.astype(float)], order=3
    )
    reference = truth + rng.normal(0, 1.0, truth.shape)
    science = ndimage.convolve(shifted, 0.8 * _gaussian(1.0, half=5), mode="constant") + rng.normal(
        0, 1.5, truth.shape
    )
    plain = _fit(reference, science, xy, half_width=5, systematic=0.0)
    covered = _fit(
        reference, science, xy, half_width=5, systematic=0.0, astrometric_sigma=(0.0, 0.05)
    )
    peaks = [np.count_nonzero(np.abs(r.detection[~r.mask]) > 5) for r in (plain, covered)]
    assert peaks[0] > 0 and peaks[1] < peaks[0]
    assert covered.detection_std == pytest.approx(1.0, abs=0.05)


def test_masked_regions_variance_maps_float32():
    # A masked block and a masked strip with variance maps in float32: no warning (pytest turns
    # warnings into errors), finite outputs, calibrated significances, the mask covering the holes.
    reference, science, xy, _, _ = _pair(0.8 * _gaussian(1.1, half=5))
    mask = np.zeros(reference.shape, bool)
    mask[100:140, 50:60] = True
    mask[:, 300:] = True
    res = _fit(
        reference,
        science,
        xy,
        mask=mask,
        reference_variance=np.ones_like(reference),
        science_variance=np.full_like(reference, 2.25),
        dtype=np.float32,
    )
    assert res.D.dtype == np.float32 and np.isfinite(res.detection).all()
    assert res.mask[mask].all()
    assert res.significance_std == pytest.approx(1.0, abs=0.05)
    assert res.detection_std == pytest.approx(1.0, abs=0.05)


def test_difference_with_the_fitted_kernel_method_gives_candidates_and_triplets():
    import astrid

    # 1024²: on 512² pairs the fit has too few stamps and the significance comes out
    # miscalibrated (difference() warns; docs/kernel.md, "what is not done")
    pair = astrid.simulate.pair(size=1024, seed=2)
    result = astrid.difference(pair.reference, pair.science, method="kernel")
    assert result.method == "kernel" and result.S is None
    assert 0.9 < result.metrics["scorr_robust_std"] < 1.15
    assert abs(result.metrics["kernel_flux_ratio"] / pair.truth.meta["flux_ratio"] - 1) < 0.05
    candidates = astrid.detect(result, threshold=5.0)
    triplets = astrid.make_triplets(result, candidates)
    assert triplets.sizes["candidate"] == len(candidates) > 0


@pytest.mark.parametrize(
    "kernel, match",
    [
        ("delta", "kernel: must be a dict"),
        ({"mask_radius": 3}, r"kernel: \['mask_radius'\] are set by difference"),
    ],
)
def test_difference_refuses_bad_kernel_options_before_any_stage(kernel, match):
    import astrid

    # no WCS: an option checked after alignment would fail on the missing WCS instead
    ref, sci = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    with pytest.raises(AstridInputError, match=match):
        astrid.difference(ref, sci, method="kernel", kernel=kernel)


def _galaxies(n, size, seed, margin=30):
    """A noiseless image of extended sources (Gaussians of 2.5-4 px, a few elongated): no star among them."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size))
    half = 16
    u = np.arange(-half, half + 1)
    X, Y = np.meshgrid(u, u)
    for _ in range(n):
        x, y = rng.integers(margin, size - margin, 2)
        sx, sy, theta = rng.uniform(2.5, 4.0), rng.uniform(1.5, 4.0), rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        g = np.exp(-0.5 * (((c * X + s * Y) / sx) ** 2 + ((-s * X + c * Y) / sy) ** 2))
        image[y - half : y + half + 1, x - half : x + half + 1] += (
            10 ** rng.uniform(3.5, 4.5) * g / g.sum()
        )
    return image


def test_whole_image_fit_without_stars():
    # Galaxies and three stars: too few for stamps around stars; the whole-image fit (stamps tiling
    # every part of the image with light) recovers the kernel from the galaxies.
    true = 0.85 * _gaussian(1.1, 0.8, 0.4, half=5)
    size = 320
    rng = np.random.default_rng(21)
    stars, xy, _ = _stars(3, size, seed=21)
    truth = stars + _galaxies(60, size, seed=22)
    reference = truth + rng.normal(0, 1.0, truth.shape)
    science = ndimage.convolve(truth, true, mode="constant") + rng.normal(0, 1.5, truth.shape)
    with pytest.raises(AstridPSFError, match="3 stars usable"):
        _fit(reference, science, xy)
    res = _fit(
        reference,
        science,
        xy,
        fit_region="image",
        half_width=5,
        science_fwhm=2.8,
        reference_fwhm=2.4,
    )
    assert res.n_stamps_used >= 10
    assert res.flux_ratio == pytest.approx(0.85, rel=5e-3)
    # Smooth galaxies constrain the kernel's sum, centroid and width, not its pixel-scale detail (the
    # relative L1 distance is about 0.6 here), which they do not need either.
    assert_kernel_close(res.model.at(160, 160), true, l1=None, moments=0.05)
    assert res.significance_std == pytest.approx(1.0, abs=0.05)
    assert res.detection_std == pytest.approx(1.0, abs=0.05)
    # Nothing with light: a clear error naming the stamps.
    with pytest.raises(AstridPSFError, match="stamps with signal"):
        _fit(
            rng.normal(0, 1.0, truth.shape),
            rng.normal(0, 1.5, truth.shape),
            xy,
            fit_region="image",
            science_fwhm=2.8,
            reference_fwhm=2.4,
        )
    with pytest.raises(AstridInputError, match="fit_region"):
        _fit(reference, science, xy, fit_region="everywhere")
