"""Tests of astrid.find_stars, astrid.match_stars and astrid.align."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
from astropy.wcs import WCS

from astrid.diffim import Alignment, align, find_stars, match_stars
from astrid.diffim.alignment import apply_transform, pixel_map
from astrid.errors import AstridInputError, AstridWarning, AstridWCSError
from astrid.io import Image, ImageMeta
from astrid.simulate import datasets


def _tan_wcs(shape, ra=150.0, dec=2.0, scale_arcsec=1.0, rotation_deg=0.0, crpix_offset=(0.0, 0.0)):
    return datasets.tan_wcs(
        shape,
        ra=ra,
        dec=dec,
        scale_arcsec=scale_arcsec,
        rotation_deg=rotation_deg,
        crpix_offset=crpix_offset,
    )


def _render(shape, xy, flux, fwhm, sky=100.0, noise=5.0, seed=0):
    """Pixel-integrated Gaussian stars at 0-based (x, y) on a noisy sky."""
    return datasets.star_field(shape, xy, flux, fwhm, sky=sky, noise=noise, seed=seed)


def _pair(
    n=384,
    nstars=200,
    seed=0,
    rotation_deg=0.25,
    offset=(2.3, -1.6),
    scale_ratio=1.0,
    wcs_error=(0.45, -0.3),
    wcs_rotation_error=0.0,
    fwhm_ref=2.5,
    fwhm_sci=3.2,
    ratio=1.0,
    flux_range=(800.0, 60000.0),
):
    """A reference/science pair of one star field with a known true mapping.

    The science image is rendered with its true WCS and then given a WCS that
    is wrong by ``wcs_error`` pixels (CRPIX) and ``wcs_rotation_error`` degrees.
    Returns science, reference, the true reference positions and fluxes, and
    a function mapping true science pixels to reference pixels.
    """
    rng = np.random.default_rng(seed)
    shape = (n, n)
    ref_wcs = _tan_wcs(shape)
    ns = int(round(n / scale_ratio))
    sci_shape = (ns, ns)
    sci_true = _tan_wcs(
        sci_shape, scale_arcsec=scale_ratio, rotation_deg=rotation_deg, crpix_offset=offset
    )
    xy = rng.uniform(4, n - 4, (nstars, 2))
    flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), nstars))
    ra, dec = ref_wcs.all_pix2world(xy[:, 0], xy[:, 1], 0)
    sx, sy = sci_true.all_world2pix(ra, dec, 0)
    reference = Image(_render(shape, xy, flux, fwhm_ref, seed=seed + 1), wcs=ref_wcs)
    sci_data = _render(
        sci_shape, np.column_stack([sx, sy]), flux * ratio, fwhm_sci / scale_ratio, seed=seed + 2
    )
    given = _tan_wcs(
        sci_shape,
        scale_arcsec=scale_ratio,
        rotation_deg=rotation_deg + wcs_rotation_error,
        crpix_offset=(offset[0] + wcs_error[0], offset[1] + wcs_error[1]),
    )
    science = Image(sci_data, wcs=given)

    def sci_to_ref(x, y):
        return pixel_map(sci_true, ref_wcs, x, y)

    return science, reference, xy, flux, sci_to_ref


def _measured_positions(image, min_snr=50):
    tab = find_stars(image.data, image.mask)
    keep = (
        (np.asarray(tab["snr"]) > min_snr)
        & np.asarray(tab["isolated"])
        & ~np.asarray(tab["masked"])
    )
    return np.column_stack([np.asarray(tab["x"])[keep], np.asarray(tab["y"])[keep]])


# ----------------------------------------------------------------------------- find_stars / match_stars


def test_find_stars_positions_flux_and_width():
    rng = np.random.default_rng(1)
    n = 256
    xy = rng.uniform(10, n - 10, (60, 2))
    flux = np.full(60, 20000.0)
    img = _render((n, n), xy, flux, fwhm=3.0, seed=2)
    tab = find_stars(img)
    expected_cols = {
        "x",
        "y",
        "flux",
        "peak",
        "snr",
        "fwhm",
        "sharpness",
        "roundness",
        "isolated",
        "saturated",
        "masked",
    }
    assert expected_cols <= set(tab.colnames)
    i1, i2 = match_stars(np.column_stack([tab["x"], tab["y"]]), xy, radius=1.0)
    iso = np.asarray(tab["isolated"])[i1]
    assert iso.sum() >= 30
    d = np.column_stack([tab["x"], tab["y"]])[i1][iso] - xy[i2][iso]
    # Windowed centroids of S/N ~ 300 stars: a few hundredths of a pixel.
    assert np.abs(d).max() < 0.05
    assert np.abs(d.mean(axis=0)).max() < 0.01
    # Image FWHM from window-corrected moments, pixel integration included.
    assert tab.meta["fwhm"] == pytest.approx(math.sqrt(9 + 8 * math.log(2) / 12), rel=0.03)
    # Flux within 1.5 FWHM holds ~ 99.6 % of a Gaussian's.
    assert np.median(np.asarray(tab["flux"])[i1][iso]) == pytest.approx(20000.0 * 0.996, rel=0.02)
    assert np.median(np.asarray(tab["roundness"])[i1][iso]) < 0.05
    assert np.median(np.asarray(tab["sharpness"])[i1][iso]) == pytest.approx(1.0, abs=0.05)
    # Brightest first.
    assert np.all(np.diff(np.asarray(tab["flux"])) <= 0)


def test_find_stars_flags_cosmic_rays_saturation_and_masks():
    rng = np.random.default_rng(3)
    n = 256
    xy = rng.uniform(20, n - 20, (40, 2))
    img = _render((n, n), xy, np.full(40, 30000.0), fwhm=3.0, seed=4)
    # Single-pixel cosmic rays, at least 15 pixels from any star.
    grid = [(x, y) for x in range(20, n - 20, 9) for y in range(20, n - 20, 9)]
    hot = [p for p in grid if np.hypot(xy[:, 0] - p[0], xy[:, 1] - p[1]).min() > 15][:4]
    assert len(hot) == 4
    for x, y in hot:
        img[y, x] += 5000.0
    mask = np.zeros(img.shape, bool)
    mask[int(xy[0, 1]), int(xy[0, 0])] = True
    saturation = 100.0 + 30000.0 * 0.05  # the peak pixel holds ~9 % of a star's flux
    tab = find_stars(img, mask=mask, saturation=saturation)
    pos = np.column_stack([tab["x"], tab["y"]])
    i_hot, _ = match_stars(pos, np.array(hot, float), radius=1.0)
    assert len(i_hot) == len(hot)
    assert np.all(np.asarray(tab["sharpness"])[i_hot] < 0.5)
    # Cosmic rays do not pull the image's FWHM.
    assert tab.meta["fwhm"] == pytest.approx(3.08, rel=0.05)
    i_star, j_star = match_stars(pos, xy, radius=1.0)
    assert np.all(np.asarray(tab["saturated"])[i_star])
    assert np.asarray(tab["masked"])[i_star[j_star == 0]].all()
    assert find_stars(img, max_stars=5).__len__() == 5


def test_a_satellite_trail_does_not_set_the_fwhm():
    # A shallow image: 12 stars, and a bright trail twice as wide that breaks into more "sources" than that.
    rng = np.random.default_rng(8)
    n = 512
    xy = rng.uniform(20, n - 20, (12, 2))
    img = _render((n, n), xy, np.full(12, 8000.0), fwhm=3.0, seed=9)
    yy, xx = np.indices(img.shape)
    angle = math.radians(33.0)
    across = -(xx - 250.0) * math.sin(angle) + (yy - 260.0) * math.cos(angle)
    trail_sigma = 6.0 / (2 * math.sqrt(2 * math.log(2)))
    img += (
        400.0
        * np.exp(-0.5 * (across / trail_sigma) ** 2)
        * (1 + 0.5 * np.sin(np.hypot(xx, yy) / 3.0))
    ).astype(np.float32)  # lumpy: many local maxima
    tab = find_stars(img)
    assert tab.meta["fwhm"] == pytest.approx(math.sqrt(9 + 8 * math.log(2) / 12), rel=0.05)
    # The trail's pieces are found, but they are not what the FWHM came from.
    on_trail = (
        np.abs(
            -(np.asarray(tab["x"]) - 250.0) * math.sin(angle)
            + (np.asarray(tab["y"]) - 260.0) * math.cos(angle)
        )
        < 3
    )
    assert on_trail.sum() > 2 * 12


def test_find_stars_on_pure_noise_and_bad_input():
    noise = np.random.default_rng(5).normal(0.0, 1.0, (128, 128)).astype(np.float32)
    tab = find_stars(noise, threshold=6.0)
    assert len(tab) <= 2  # a 6-sigma peak in 16k pixels is rare
    assert "x" in tab.colnames
    with pytest.raises(AstridInputError, match="no finite"):
        find_stars(np.full((32, 32), np.nan))
    with pytest.raises(AstridInputError, match="mask"):
        find_stars(noise, mask=np.zeros((4, 4), bool))
    with pytest.raises(AstridInputError, match="threshold"):
        find_stars(noise, threshold=0)
    with pytest.raises(AstridInputError, match="fwhm"):
        find_stars(noise, fwhm=-2)


def test_match_stars_is_unique_and_mutual():
    a = np.array([[0.0, 0.0], [10.0, 0.0], [10.5, 0.0], [50.0, 50.0]])
    b = np.array([[0.2, 0.1], [10.4, 0.0], [80.0, 80.0]])
    i1, i2 = match_stars(a, b, radius=2.0)
    pairs = set(zip(i1.tolist(), i2.tolist()))
    assert pairs == {(0, 0), (2, 1)}  # (1, 1) loses: b[1] is nearer a[2]
    e1, e2 = match_stars(np.zeros((0, 2)), b)
    assert e1.size == 0 and e2.size == 0
    n1, _ = match_stars(a, b + 100.0, radius=2.0)
    assert n1.size == 0


# ----------------------------------------------------------------------------- align: geometry


def test_refinement_recovers_wcs_error():
    science, reference, xy, _, sci_to_ref = _pair(seed=0, wcs_rotation_error=0.02)
    result = align(reference=reference, science=science)
    assert isinstance(result, Alignment)
    assert result.method == "interp+affine"
    assert result.n_matched >= 50
    assert result.rms < 0.05
    assert max(result.astrometric_sigma) < 0.05
    # The shift the fit found is the CRPIX error put into the science WCS.
    assert result.shift[0] == pytest.approx(0.45, abs=0.05)
    assert result.shift[1] == pytest.approx(-0.3, abs=0.05)
    # The corrected mapping agrees with the true one over the whole science image.
    gx, gy = np.meshgrid(np.linspace(0, 383, 9), np.linspace(0, 383, 9))
    wx, wy = pixel_map(science.wcs, reference.wcs, gx.ravel(), gy.ravel())
    fx, fy = apply_transform(result.transform, wx, wy)
    tx, ty = sci_to_ref(gx.ravel(), gy.ravel())
    assert np.hypot(fx - tx, fy - ty).max() < 0.05
    # Stars of the resampled image sit on the reference positions.
    measured = _measured_positions(result.image)
    i1, i2 = match_stars(measured, xy, radius=1.0)
    assert len(i1) >= 30
    assert np.abs(np.median(measured[i1] - xy[i2], axis=0)).max() < 0.02
    assert np.sqrt(np.mean((measured[i1] - xy[i2]) ** 2)) < 0.06


def test_no_refinement_reports_the_wcs_error():
    science, reference, _, _, _ = _pair(seed=1)
    result = align(reference=reference, science=science, refine=False)
    assert result.method == "interp+wcs"
    np.testing.assert_allclose(result.transform, [[1, 0, 0], [0, 1, 0]])
    assert result.shift == (0.0, 0.0)
    # 0.45 and 0.3 pixel errors, measured but not corrected.
    assert result.astrometric_sigma[0] == pytest.approx(0.45, abs=0.05)
    assert result.astrometric_sigma[1] == pytest.approx(0.3, abs=0.05)
    assert result.rms == pytest.approx(math.hypot(0.45, 0.3), abs=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_astrometric_sigma_is_the_registration_error_not_centroid_noise(seed):
    # Faint stars only (S/N 6-30): their centroids scatter by 0.2-0.3 px, the registration is exact.
    science, reference, _, _, _ = _pair(seed=seed, nstars=60, flux_range=(120.0, 600.0))
    result = align(reference=reference, science=science)
    assert result.rms > 0.2
    assert max(result.astrometric_sigma) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_registration_error_under_centroid_noise_is_measured(seed):
    science, reference, _, _, _ = _pair(
        seed=seed, nstars=60, flux_range=(120.0, 600.0), wcs_error=(0.2, -0.1)
    )
    result = align(reference=reference, science=science, refine=False)
    assert result.astrometric_sigma[0] == pytest.approx(0.2, abs=0.05)
    assert result.astrometric_sigma[1] == pytest.approx(0.1, abs=0.05)


def test_a_correct_wcs_is_left_alone():
    science, reference, _, _, _ = _pair(seed=2, wcs_error=(0.0, 0.0))
    result = align(reference=reference, science=science)
    assert result.method == "interp+wcs"
    np.testing.assert_allclose(result.transform, [[1, 0, 0], [0, 1, 0]])
    assert result.rms < 0.05


def test_integer_shift_copies_pixels_exactly():
    n = 96
    ref_wcs = _tan_wcs((n, n))
    sci_wcs = _tan_wcs((n, n), crpix_offset=(3.0, -2.0))
    data = np.random.default_rng(0).normal(100.0, 5.0, (n, n)).astype(np.float32)
    variance = np.full((n, n), 25.0, np.float32)
    mask = np.zeros((n, n), bool)
    mask[40, 50] = True
    science = Image(data, wcs=sci_wcs, mask=mask, variance=variance)
    reference = Image(np.zeros((n, n), np.float32), wcs=ref_wcs)
    with pytest.warns(AstridWarning, match="stars matched"):
        result = align(reference=reference, science=science)
    out = result.image
    # Reference pixel (x, y) sees science pixel (x + 3, y - 2); the masked one has no value.
    expected = data[8:58, 13:63].copy()
    expected[40 - 8, 50 - 13] = np.nan
    np.testing.assert_array_equal(out.data[10:60, 10:60], expected)
    np.testing.assert_array_equal(out.variance[10:60, 10:60], variance[8:58, 13:63])
    assert out.mask[42, 47] and out.mask.sum() == (~result.footprint).sum() + 1
    # Footprint: columns past nx - 3 and rows before 2 are not covered.
    assert not result.footprint[:, n - 3 :].any() and not result.footprint[:2, :].any()
    assert result.footprint[2:, : n - 3].all()
    assert result.overlap == pytest.approx((n - 3) * (n - 2) / n**2)
    assert np.isnan(out.data[~result.footprint]).all()
    assert out.wcs.wcs.compare(ref_wcs.wcs)


def test_mask_grows_to_every_touched_pixel_and_nans_are_masked():
    n = 96
    ref_wcs = _tan_wcs((n, n))
    sci_wcs = _tan_wcs((n, n), crpix_offset=(0.5, 0.25))
    data = np.full((n, n), 10.0, np.float32)
    data[30, 30] = np.nan
    mask = np.zeros((n, n), bool)
    mask[60, 60] = True
    science = Image(data, wcs=sci_wcs, mask=mask)
    reference = Image(np.zeros((n, n), np.float32), wcs=ref_wcs)
    for order, touched in (("bilinear", 4), ("bicubic", 16)):
        with pytest.warns(AstridWarning):
            out = align(reference=reference, science=science, order=order).image
        inner = out.mask[5:-5, 5:-5]
        # Each bad science pixel masks every output pixel whose interpolation touches it.
        assert inner.sum() == 2 * touched
        assert np.all(out.data[~out.mask] == pytest.approx(10.0))
    with pytest.warns(AstridWarning):
        out = align(reference=reference, science=science, order="nearest-neighbor").image
    assert out.mask[5:-5, 5:-5].sum() == 2


def test_flux_is_conserved_when_pixel_scales_differ():
    from photutils.aperture import CircularAperture, aperture_photometry

    for scale_ratio, method in ((1.25, "interp"), (0.8, "exact")):
        science, reference, xy, flux, _ = _pair(
            n=256,
            nstars=80,
            seed=3,
            scale_ratio=scale_ratio,
            rotation_deg=0.0,
            wcs_error=(0.0, 0.0),
        )
        result = align(reference=reference, science=science, method=method)
        expected_method = "adaptive" if method == "interp" else "exact"
        assert result.method.startswith(expected_method)
        assert result.flux_scale == pytest.approx(1 / scale_ratio**2, rel=1e-3)
        sky = 100.0 * result.flux_scale
        measured = _measured_positions(result.image)
        i1, i2 = match_stars(measured, xy, radius=1.0)
        assert len(i1) >= 10
        ap = CircularAperture(measured[i1], r=10.0)
        phot = aperture_photometry(
            np.nan_to_num(result.image.data - sky), ap, mask=result.image.mask
        )
        ok = np.isfinite(phot["aperture_sum"]) & (np.asarray(phot["aperture_sum"]) > 0)
        ratio = np.asarray(phot["aperture_sum"])[ok] / flux[i2][ok]
        assert np.median(ratio) == pytest.approx(1.0, abs=0.01)


def test_surface_brightness_is_not_rescaled_and_metadata_follow():
    science, reference, _, _, _ = _pair(
        n=192, nstars=60, seed=4, scale_ratio=1.25, rotation_deg=0.0
    )
    science.meta = ImageMeta(zeropoint=25.0, saturation=50000.0)
    counts = align(reference=reference, science=science, method="exact")
    assert counts.image.meta.zeropoint == pytest.approx(25.0 + 2.5 * math.log10(counts.flux_scale))
    assert counts.image.meta.saturation == pytest.approx(50000.0 * counts.flux_scale)
    science.header["BUNIT"] = "MJy/sr"
    sb = align(reference=reference, science=science, method="exact")
    assert sb.flux_scale == 1.0
    assert np.nanmedian(sb.image.data) == pytest.approx(100.0, rel=0.02)
    # The header carries the reference grid's WCS, not the science one's.
    assert WCS(sb.image.header).wcs.compare(reference.wcs.wcs, tolerance=1e-10)


# ----------------------------------------------------------------------------- align: bad input


def test_missing_wcs_names_the_image():
    science, reference, _, _, _ = _pair(n=64, nstars=10)
    no_wcs = Image(science.data, meta=ImageMeta(path="sci.fits"))
    with pytest.raises(AstridWCSError, match="sci.fits"):
        align(reference=reference, science=no_wcs)
    with pytest.raises(AstridWCSError, match="reference"):
        align(reference=Image(reference.data), science=science)


def test_no_overlap_raises():
    n = 64
    reference = Image(np.zeros((n, n), np.float32), wcs=_tan_wcs((n, n)))
    far = Image(np.zeros((n, n), np.float32), wcs=_tan_wcs((n, n), ra=151.0))
    with pytest.raises(AstridInputError, match="does not overlap"):
        align(reference=reference, science=far)
    opposite = Image(np.zeros((n, n), np.float32), wcs=_tan_wcs((n, n), ra=330.0, dec=-2.0))
    with pytest.raises(AstridInputError, match="does not overlap"):
        align(reference=reference, science=opposite)


def test_all_nan_and_bad_parameters_raise():
    science, reference, _, _, _ = _pair(n=64, nstars=10)
    empty = Image(np.full((64, 64), np.nan, np.float32), wcs=science.wcs)
    with pytest.raises(AstridInputError, match="no finite"):
        align(reference=reference, science=empty)
    with pytest.raises(AstridInputError, match="method"):
        align(reference=reference, science=science, method="drizzle")
    with pytest.raises(AstridInputError, match="order"):
        align(reference=reference, science=science, order="quintic")
    with pytest.raises(AstridInputError, match="Image"):
        align(reference=reference, science=science.data)


def test_too_few_stars_warns_and_uses_the_wcs():
    science, reference, _, _, _ = _pair(n=128, nstars=2, seed=5)
    with pytest.warns(AstridWarning, match="stars matched"):
        result = align(reference=reference, science=science)
    assert result.method == "interp+wcs"
    assert math.isnan(result.rms)
    assert result.n_matched < 3


# ----------------------------------------------------------------------------- simulated pairs


@pytest.fixture(scope="module")
def simulate():
    return pytest.importorskip("astrid.simulate")


def _mapping_error(sim, result, science_wcs):
    size = sim.science.shape[0]
    gx, gy = np.meshgrid(np.linspace(0, size - 1, 9), np.linspace(0, size - 1, 9))
    wx, wy = pixel_map(science_wcs, sim.reference.wcs, gx.ravel(), gy.ravel())
    fx, fy = apply_transform(result.transform, wx, wy)
    tx, ty = apply_transform(sim.params["sci_to_ref"], gx.ravel(), gy.ravel())
    return float(np.hypot(fx - tx, fy - ty).max())


def test_simulated_pair_residuals(simulate):
    sim = simulate.pair(512, seed=1, n_stars=400, exptime_science=120.0)
    result = align(reference=sim.reference, science=sim.science)
    assert result.rms < 0.1
    assert result.n_matched >= 50
    assert _mapping_error(sim, result, sim.science.wcs) < 0.05
    assert result.overlap > 0.9


def test_simulated_pair_with_a_wrong_wcs(simulate):
    sim = simulate.pair(512, seed=3)
    wrong = copy.deepcopy(sim.science.wcs)
    wrong.wcs.crpix = wrong.wcs.crpix + np.array([0.45, -0.3])
    wrong.wcs.set()
    science = sim.science.copy(wcs=wrong)
    result = align(reference=sim.reference, science=science)
    assert result.method in ("interp+shift", "interp+affine")
    # The default ZTF-like science image has few bright stars, yet the mapping is fixed.
    assert _mapping_error(sim, result, wrong) < 0.1
    assert result.rms < 0.15


@pytest.mark.shared_data
def test_jwst_pair_aligns():
    from astrid.io import read_image
    from astrid.paths import shared_data

    folder = shared_data("images", "sfft_jwst_nircam_a2744", "input_data")
    if folder is None:
        pytest.skip("shared JWST pair (images/sfft_jwst_nircam_a2744) is not present")
    reference = read_image(next(folder.glob("jw01324*_stamp.fits")))
    science = read_image(next(folder.glob("jw02561*_stamp.fits")))
    result = align(reference=reference, science=science)
    # MJy/sr: a surface brightness, never rescaled.
    assert result.flux_scale == 1.0
    assert result.overlap > 0.95
    assert result.n_matched >= 20
    assert result.rms < 0.15


def test_star_lists_are_handed_on_in_reference_pixels():
    from astrid.diffim import match_stars
    from astrid.simulate import pair

    sim = pair(512, seed=4)
    result = align(reference=sim.reference, science=sim.science)
    ref, sci = result.reference_stars, result.science_stars
    assert ref is not None and sci is not None and len(sci) > 20
    ny, nx = sim.reference.shape
    assert np.all((sci["x"] >= 0) & (sci["x"] <= nx - 1) & (sci["y"] >= 0) & (sci["y"] <= ny - 1))
    # Transients, cosmic rays and saturated stars have no counterpart: compare the stars that match.
    bright = sci[(sci["snr"] > 20) & ~sci["saturated"]]
    i1, i2 = match_stars(
        np.column_stack([bright["x"], bright["y"]]),
        np.column_stack([ref["x"], ref["y"]]),
        radius=1.5,
    )
    assert len(i1) >= 20
    offsets = np.hypot(
        np.asarray(bright["x"])[i1] - np.asarray(ref["x"])[i2],
        np.asarray(bright["y"])[i1] - np.asarray(ref["y"])[i2],
    )
    assert np.median(offsets) < 0.2


@pytest.mark.shared_data
def test_decam_cutouts_registration_error_is_below_the_faint_stars_scatter():
    from astrid.io import read_image
    from astrid.paths import shared_data

    folder = shared_data("images", "sfft_decam_decorr", "input_data")
    if folder is None:
        pytest.skip("shared DECam cutouts (images/sfft_decam_decorr) are not present")
    # Pair a: 12 matched stars, 8 of them at S/N < 10 whose centroids scatter by ~0.8 px;
    # the three brightest (S/N 77-236) agree to 0.05-0.13 px.
    reference = read_image(folder / "DEC-OBS04a.mini.fits")
    science = read_image(folder / "DEC-OBS18a.mini.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstridWarning)
        result = align(reference=reference, science=science)
    assert result.rms > 0.5
    assert max(result.astrometric_sigma) < 0.15
