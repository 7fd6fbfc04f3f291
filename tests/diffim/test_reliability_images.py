"""Bad-input matrix for images and differencing.

Every case asserts its outcome class: a specific AstrID error whose message
names the thing at fault, a specific warning, or a correct result. Images are
small (128²–256²) and shared through module-scoped fixtures.
"""

from __future__ import annotations

import gzip
import time
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from test_difference import given, synthetic_images

import astrid
from astrid import Image, ImageMeta, read_image, write_image
from astrid.diffim import (
    FLUX_RATIO_RANGE,
    PSFModel,
    align,
    classic_subtract,
    difference,
    estimate_background,
    estimate_psf,
    flux_ratio,
    gaussian_psf,
)
from astrid.diffim.zogy import MASK_WARN_FRACTION, ZogyImage, subtract
from astrid.errors import (
    AstridFileError,
    AstridInputError,
    AstridPSFError,
    AstridWarning,
    AstridWCSError,
)
from astrid.simulate.datasets import tan_wcs

SHAPE = (128, 128)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pair():
    """A static star field on one grid: (reference, science) Images with a TAN WCS."""
    return synthetic_images(shape=SHAPE, seed=3, transient=None)


@pytest.fixture(scope="module")
def sim():
    """A simulated 256² survey pair (different grids, PSFs, zero points)."""
    return astrid.simulate.pair(size=256, seed=1)


@pytest.fixture(scope="module")
def sim_clean(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstridWarning)  # Gaussian PSF fallbacks on 256² px
        return difference(sim.image("reference"), sim.image("science"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad and awkward FITS files, by name."""
    root = tmp_path_factory.mktemp("bad_fits")
    rng = np.random.default_rng(0)
    good = rng.normal(100, 5, SHAPE).astype(np.float32)
    out = {}
    fits.PrimaryHDU(good).writeto(root / "good.fits")
    out["good"] = root / "good.fits"
    (root / "empty.fits").write_bytes(b"")
    out["empty"] = root / "empty.fits"
    (root / "text.fits").write_text("this is not FITS\n" * 200)
    out["text"] = root / "text.fits"
    raw = (root / "good.fits").read_bytes()
    (root / "truncated.fits").write_bytes(raw[: len(raw) // 2])
    out["truncated"] = root / "truncated.fits"
    fits.PrimaryHDU(np.full(SHAPE, np.nan, np.float32)).writeto(root / "allnan.fits")
    out["allnan"] = root / "allnan.fits"
    partial = good.copy()
    partial[: int(0.6 * SHAPE[0])] = np.nan  # 40 % finite
    fits.PrimaryHDU(partial).writeto(root / "partial.fits")
    out["partial"] = root / "partial.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1, 2]}))]).writeto(
        root / "table.fits"
    )
    out["table"] = root / "table.fits"
    fits.PrimaryHDU(np.stack([good, good])).writeto(root / "cube.fits")
    out["cube"] = root / "cube.fits"
    (root / "folder.fits").mkdir()
    out["folder"] = root / "folder.fits"
    header = tan_wcs(SHAPE).to_header()
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2"):
        header[key] = 0.0
    fits.PrimaryHDU(good, header=header).writeto(root / "singular.fits")
    out["singular"] = root / "singular.fits"
    (root / "plainfile").write_text("x")
    out["under_file"] = root / "plainfile" / "image.fits"
    out["missing"] = root / "missing.fits"
    out["missing_folder"] = root / "nowhere" / "image.fits"
    with gzip.open(root / "good.fits.gz", "wb") as fh:
        fh.write(raw)
    out["gz"] = root / "good.fits.gz"
    return out


def _scattered_nan(data, fraction, seed=0):
    rng = np.random.default_rng(seed)
    out = np.array(data, dtype=np.float32, copy=True)
    idx = rng.choice(out.size, int(round(fraction * out.size)), replace=False)
    out.flat[idx] = np.nan
    return out


# ----------------------------------------------------------------------------- read_image


@pytest.mark.parametrize(
    "name, error, match",
    [
        ("missing", AstridFileError, "missing.fits: file does not exist"),
        ("missing_folder", AstridFileError, "nor does its folder"),
        ("under_file", AstridFileError, "plainfile is a file and not a folder"),
        ("folder", AstridFileError, "folder.fits: is a directory"),
        ("empty", AstridFileError, "empty.fits: file is empty"),
        ("text", AstridFileError, "text.fits"),
        ("truncated", AstridFileError, "truncated.fits"),
        (
            "allnan",
            AstridInputError,
            r"allnan.fits: HDU 0 has no finite pixels \(all 16384 are NaN",
        ),
        ("table", AstridInputError, "table.fits: no HDU holds 2-D image data"),
    ],
)
def test_read_image_bad_files(files, name, error, match):
    with pytest.raises(error, match=match):
        read_image(files[name])


@pytest.mark.parametrize("path", [None, 123, 4.5, b"", "", "   ", ["a.fits"]])
def test_read_image_bad_path_argument(path):
    with pytest.raises(AstridInputError, match="path: must be a path to a FITS file"):
        read_image(path)


def test_read_image_bad_hdu(files):
    with pytest.raises(AstridInputError, match="has no HDU 'SCI'"):
        read_image(files["good"], hdu="SCI")


def test_read_image_cube_warns(files):
    with pytest.warns(AstridWarning, match="3-D cube"):
        image = read_image(files["cube"])
    assert image.shape == SHAPE


def test_read_image_partly_finite_is_read_with_a_mask(files):
    image = read_image(files["partial"])
    assert image.mask.mean() == pytest.approx(0.6, abs=0.01)
    assert np.isfinite(image.data[~image.mask]).all()


def test_read_image_gzip(files):
    np.testing.assert_array_equal(read_image(files["gz"]).data, read_image(files["good"]).data)


def test_read_image_singular_wcs_is_explained_when_required(files):
    image = read_image(files["singular"])
    assert image.wcs is None
    with pytest.raises(
        AstridWCSError, match="singular.fits: the header's celestial WCS is unusable.*singular"
    ):
        read_image(files["singular"], require_wcs=True)


def test_align_singular_header_wcs_is_explained(files, pair):
    science = read_image(files["singular"])
    with pytest.raises(
        AstridWCSError, match="singular.fits: the header's celestial WCS is unusable"
    ):
        align(reference=pair[0], science=science)


# ----------------------------------------------------------------------------- write_image


def test_write_image_to_a_folder(files):
    image = read_image(files["good"])
    with pytest.raises(AstridFileError, match="folder.fits: is a folder; give a file name"):
        write_image(files["folder"], image)


def test_write_image_under_a_file(files):
    image = read_image(files["good"])
    with pytest.raises(AstridFileError, match="plainfile is a file and not a folder"):
        write_image(files["under_file"], image)


@pytest.mark.parametrize("image", [np.zeros(SHAPE), None, "image.fits"])
def test_write_image_needs_an_image(tmp_path, image):
    with pytest.raises(AstridInputError, match="image: must be an astrid.Image"):
        write_image(tmp_path / "out.fits", image)


@pytest.mark.parametrize("path", [None, 7])
def test_write_image_bad_path(path):
    with pytest.raises(AstridInputError, match="path: must be a path"):
        write_image(path, Image(np.zeros(SHAPE)))


def test_write_image_existing_without_overwrite(tmp_path):
    write_image(tmp_path / "a.fits", Image(np.zeros(SHAPE)))
    with pytest.raises(AstridFileError, match="a.fits: exists and overwrite=False"):
        write_image(tmp_path / "a.fits", Image(np.zeros(SHAPE)), overwrite=False)


def test_write_image_honours_a_masked_array_set_after_creation(tmp_path):
    image = Image(np.zeros(SHAPE, np.float32))
    values = np.arange(SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE)
    flagged = np.zeros(SHAPE, bool)
    flagged[10, 20] = flagged[50, 60] = True
    image.data = np.ma.MaskedArray(values, mask=flagged)
    back = read_image(write_image(tmp_path / "ma.fits", image))
    assert back.mask[10, 20] and back.mask[50, 60] and back.mask.sum() == 2
    assert np.isnan(back.data[10, 20])  # the value under the mask is not written as a pixel
    assert back.data[0, 1] == 1.0


# ----------------------------------------------------------------------------- Image


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(data=None), "Image data: got None"),
        (dict(data=np.zeros(10)), "must be 2-D"),
        (dict(data=np.zeros((2, 3, 4))), "must be 2-D"),
        (dict(data=np.full((4, 4), "a")), "real-valued"),
        (dict(data=np.zeros((4, 4)), mask=np.zeros((3, 3), bool)), "mask shape"),
        (dict(data=np.zeros((4, 4)), variance=np.zeros((4, 5))), "variance shape"),
        (dict(data=[[1, 2], [3]]), "cannot be read as an array"),
    ],
)
def test_image_bad_arrays(kwargs, match):
    with pytest.raises(AstridInputError, match=match):
        Image(**kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32])
def test_image_masked_array_data(dtype):
    values = np.arange(16, dtype=dtype).reshape(4, 4)
    flagged = np.zeros((4, 4), bool)
    flagged[1, 2] = True
    image = Image(np.ma.MaskedArray(values, mask=flagged))
    assert image.mask[1, 2] and image.mask.sum() == 1
    assert np.isnan(image.data[1, 2]) and image.data[3, 3] == 15
    assert type(image.data) is np.ndarray


def test_image_masked_variance_and_mask():
    flagged = np.zeros((4, 4), bool)
    flagged[0, 0] = True
    variance = np.ma.MaskedArray(np.ones((4, 4)), mask=flagged)
    mask = np.ma.MaskedArray(np.zeros((4, 4), bool), mask=np.roll(flagged, 5))
    image = Image(np.zeros((4, 4)), mask=mask, variance=variance)
    assert image.mask[0, 0] and image.mask[1, 1] and image.mask.sum() == 2


# ----------------------------------------------------------------------------- align


def _with_wcs(image, **cd_or_pc):
    wcs = image.wcs.deepcopy()
    for key, value in cd_or_pc.items():
        setattr(wcs.wcs, key, np.asarray(value, float))
    return image.copy(wcs=wcs)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(cd=[[1e-4, 1e-4], [1e-4, 1e-4]]), "singular"),
        (dict(cd=[[0.0, 0.0], [0.0, 0.0]]), "singular"),
        (dict(cd=[[np.nan, 0.0], [0.0, 1e-4]]), "singular or not finite"),
    ],
)
@pytest.mark.parametrize("which", ["science", "reference"])
def test_align_degenerate_wcs_is_refused_before_any_allocation(pair, change, match, which):
    reference, science = pair
    if which == "science":
        science = _with_wcs(science, **change)
    else:
        reference = _with_wcs(reference, **change)
    started = time.perf_counter()
    with pytest.raises(AstridWCSError, match=f"{which} image.*{match}|{match}.*{which} image"):
        align(reference=reference, science=science)
    assert time.perf_counter() - started < 5.0


def test_align_needs_images(pair):
    with pytest.raises(AstridInputError, match="astrid.Image or a path"):
        align(reference=pair[0], science=pair[1].data)


def test_align_without_wcs(pair):
    with pytest.raises(AstridWCSError, match="no celestial WCS"):
        align(reference=pair[0], science=pair[1].copy(wcs=None))


def test_align_no_overlap(pair):
    reference, science = pair
    with pytest.raises(AstridInputError, match="does not overlap"):
        align(reference=reference, science=science.copy(wcs=tan_wcs(SHAPE, ra=30.0)))


def test_align_all_masked(pair):
    reference, science = pair
    with pytest.raises(AstridInputError, match="no finite, unmasked pixels"):
        align(reference=reference, science=science.copy(mask=np.ones(SHAPE, bool)))


def test_align_flipped_data_warns_that_the_wcs_disagrees(sim):
    science = sim.image("science")
    flipped = science.copy(
        data=science.data[:, ::-1].copy(), mask=science.mask[:, ::-1].copy(), variance=None
    )
    with pytest.warns(
        AstridWarning, match=r"only 0 stars matched.*clean.*WCS of one image probably disagrees"
    ):
        align(reference=sim.image("reference"), science=flipped)


def test_align_cropped_without_crpix_warns(sim):
    science = sim.image("science")
    crop = science.copy(
        data=science.data[60:, :].copy(), mask=science.mask[60:, :].copy(), variance=None
    )
    with pytest.warns(AstridWarning, match="cropped without updating CRPIX"):
        align(reference=sim.image("reference"), science=crop)


def test_align_chance_shift_from_few_stars_warns(monkeypatch, sim):
    """A large WCS correction supported by fewer than 10 stars is reported with its numbers."""
    from astrid.diffim import alignment as module

    science, reference = sim.image("science"), sim.image("reference")
    real = module._refine

    def few(*args):
        transform, src, dst, snr, centroid, model, ref_stars, sci_stars = real(*args)
        transform = transform.copy()
        transform[:, 2] += (12.0, -5.0)
        moved = dst[:4] + (12.0, -5.0)
        return transform, src[:4], moved, snr[:4], centroid[:4], "shift", ref_stars, sci_stars

    monkeypatch.setattr(module, "_refine", few)
    with pytest.warns(
        AstridWarning, match=r"disagree by 13\.0 px .*only 4 of \d+ clean science stars"
    ):
        align(reference=reference, science=science)


# ----------------------------------------------------------------------------- estimate_background


@pytest.mark.parametrize(
    "data, mask, match",
    [
        (None, None, "data: got None"),
        (np.zeros(10), None, "must be a 2-D array"),
        (np.full((8, 8), "x"), None, "real-valued"),
        (np.full((64, 64), np.nan), None, r"all 4096 pixels are NaN or inf"),
        (
            np.where(np.arange(64)[:, None] < 26, 1.0, np.nan) * np.ones((64, 64)),
            np.ones((64, 64), bool),
            r"40\.6 % of its pixels are finite, but every one of them is masked",
        ),
        (np.zeros((64, 64)), np.zeros((8, 8), bool), "mask: shape"),
    ],
)
def test_estimate_background_bad_inputs(data, mask, match):
    with pytest.raises(AstridInputError, match=match):
        estimate_background(data, mask)


def test_estimate_background_bad_box():
    with pytest.raises(AstridInputError, match="box_size must be >= 4"):
        estimate_background(np.zeros((64, 64)), box_size=2)


def test_estimate_background_honours_numpy_ma():
    rng = np.random.default_rng(2)
    data = rng.normal(10.0, 1.0, (128, 128))
    hidden = np.zeros(data.shape, bool)
    hidden[:, :64] = True
    garbage = data.copy()
    garbage[hidden] = 1e6  # what lies under the mask must not be used
    masked = estimate_background(np.ma.MaskedArray(garbage, mask=hidden))
    explicit = estimate_background(garbage, hidden)
    np.testing.assert_allclose(masked.background, explicit.background)
    assert abs(masked.median_rms - 1.0) < 0.1


# ----------------------------------------------------------------------------- PSFs


@pytest.mark.parametrize(
    "psf, match",
    [
        ("gaussian", "science_psf: a PSF must be a 2-D array"),
        (None, "science_psf: a PSF must be a 2-D array"),
        ({"fwhm": 3}, "science_psf: a PSF must be a 2-D array"),
        (np.ones((4, 4)), "odd size"),
        (np.ones((5, 7)), "odd size"),
        (np.full((5, 5), np.nan), "non-finite"),
        (-gaussian_psf(3.0, 15), "must be positive"),
        (np.ma.MaskedArray(gaussian_psf(3.0, 15), mask=np.eye(15, dtype=bool)), "15 non-finite"),
    ],
)
def test_psf_model_from_bad_arrays(psf, match):
    with pytest.raises(AstridPSFError, match=match):
        PSFModel.from_array(psf, name="science_psf")


def test_estimate_psf_no_stars_advises_fwhm_which_it_accepts():
    flat = np.random.default_rng(0).normal(0, 1, SHAPE)
    with pytest.raises(AstridPSFError, match=r"pass fwhm="):
        estimate_psf(flat)


def test_estimate_psf_no_stars_with_fwhm_falls_back_with_a_warning():
    flat = np.random.default_rng(0).normal(0, 1, SHAPE)
    with pytest.warns(AstridWarning, match="using a Gaussian PSF"):
        model = estimate_psf(flat, fwhm=3.0)
    assert model.method == "gaussian-fallback"


@pytest.mark.parametrize(
    "data, match", [("image", "real-valued|2-D"), (np.full(SHAPE, np.nan), "NaN or inf")]
)
def test_estimate_psf_bad_data(data, match):
    with pytest.raises(AstridInputError, match=match):
        estimate_psf(data)


# ----------------------------------------------------------------------------- flux_ratio


@pytest.fixture(scope="module")
def aligned_sim(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstridWarning)
        return align(
            reference=sim.image("reference"), science=sim.image("science")
        ).image, sim.image("reference")


def test_flux_ratio_aligned_is_correct(aligned_sim, sim):
    science, reference = aligned_sim
    measured = flux_ratio(reference=reference, science=science)
    assert measured.method == "stars"
    truth = sim.params["flux_ratio"]
    assert abs(measured.ratio - truth) < 3 * measured.error + 0.02 * truth


@pytest.mark.parametrize("shift", [4, 6])
def test_flux_ratio_unaligned_is_refused(aligned_sim, shift):
    science, reference = aligned_sim
    moved = science.copy(
        data=np.roll(science.data, shift, axis=1),
        mask=np.roll(science.mask, shift, axis=1),
        variance=None,
    )
    with pytest.raises(
        AstridInputError, match=r"do not look aligned: the centroids of \d+ bright stars"
    ):
        flux_ratio(reference=reference, science=moved)


def test_flux_ratio_honours_numpy_ma(aligned_sim):
    science, reference = aligned_sim
    plain = flux_ratio(
        reference=reference.data, science=science.data, mask=science.mask | reference.mask
    )
    sci_ma = np.ma.MaskedArray(science.data, mask=science.mask | ~np.isfinite(science.data))
    ref_ma = np.ma.MaskedArray(reference.data, mask=reference.mask)
    assert flux_ratio(reference=ref_ma, science=sci_ma).ratio == pytest.approx(plain.ratio)


@pytest.mark.parametrize(
    "science, match",
    # (A string is a FITS path: see test_flux_ratio_reads_paths_through_as_image.)
    [
        (None, "science: got None"),
        (3, "science: must be a 2-D array"),
        (np.zeros((5, 5)), "differs from"),
    ],
)
def test_flux_ratio_bad_inputs(aligned_sim, science, match):
    with pytest.raises(AstridInputError, match=match):
        flux_ratio(reference=aligned_sim[1], science=science)


def test_flux_ratio_reads_paths_through_as_image(aligned_sim):
    with pytest.raises(AstridInputError, match="x: file does not exist"):
        flux_ratio(reference=aligned_sim[1], science="x")


# ----------------------------------------------------------------------------- zogy.subtract / classic


@pytest.fixture(scope="module")
def noise_pair():
    rng = np.random.default_rng(1)
    return rng.normal(0, 5, (256, 256)), rng.normal(0, 3, (256, 256)), gaussian_psf(3.0, 15)


@pytest.fixture(scope="module")
def noise_baseline(noise_pair):
    N, R, P = noise_pair
    return subtract(reference=ZogyImage(R, P, 3.0), science=ZogyImage(N, P, 5.0))


@pytest.mark.parametrize("fraction", [0.001, 0.005])
@pytest.mark.parametrize("where", ["science", "reference"])
def test_zogy_scattered_nans_cost_their_own_area(noise_pair, noise_baseline, fraction, where):
    N, R, P = noise_pair
    if where == "science":
        N = _scattered_nan(N, fraction)
    else:
        R = _scattered_nan(R, fraction)
    result = subtract(reference=ZogyImage(R, P, 3.0), science=ZogyImage(N, P, 5.0))
    added = result.mask.mean() - noise_baseline.mask.mean()
    assert added <= 0.05
    assert 0.85 < result.scorr_std < 1.15
    assert np.count_nonzero(result.S_corr[~result.mask]) == np.count_nonzero(~result.mask)


def test_zogy_five_percent_nans_still_leave_most_of_the_image(noise_pair):
    N, R, P = noise_pair
    result = subtract(
        reference=ZogyImage(R, P, 3.0), science=ZogyImage(_scattered_nan(N, 0.05), P, 5.0)
    )
    assert result.mask.mean() < MASK_WARN_FRACTION
    assert 0.85 < result.scorr_std < 1.15


def test_classic_scattered_nans_cost_their_own_area(noise_pair):
    N, R, _ = noise_pair
    base = classic_subtract(
        reference=R,
        science=N,
        reference_fwhm=3.0,
        science_fwhm=3.0,
        reference_sigma=3.0,
        science_sigma=5.0,
    )
    result = classic_subtract(
        reference=R,
        science=_scattered_nan(N, 0.005),
        reference_fwhm=3.0,
        science_fwhm=3.0,
        reference_sigma=3.0,
        science_sigma=5.0,
    )
    assert result.mask.mean() - base.mask.mean() <= 0.05


def test_zogy_nan_on_a_star_core_is_masked_not_invented(noise_pair):
    N, R, P = noise_pair
    N, R = N.copy(), R.copy()
    star = 5e4 * gaussian_psf(3.0, 15)
    N[100:115, 100:115] += star
    R[100:115, 100:115] += star
    N[107, 107] = np.nan
    result = subtract(reference=ZogyImage(R, P, 3.0), science=ZogyImage(N, P, 5.0))
    assert result.mask[107 - result.mask_radius : 108 + result.mask_radius, 107].all()


def test_zogy_half_masked_warns(noise_pair):
    N, R, P = noise_pair
    mask = np.zeros(N.shape, bool)
    mask[:, :150] = True
    with pytest.warns(
        AstridWarning, match=r"zogy.subtract: \d+\.\d % of the result is masked \(more than 50 %\)"
    ):
        subtract(reference=ZogyImage(R, P, 3.0), science=ZogyImage(N, P, 5.0), mask=mask)


def test_zogy_nothing_left_raises(noise_pair):
    N, R, P = noise_pair
    mask = np.zeros(N.shape, bool)
    mask[::8, ::8] = True  # finite but flagged: dilated, not repaired
    with pytest.raises(AstridInputError, match="no pixel of the result can be trusted"):
        subtract(reference=ZogyImage(R, P, 3.0), science=ZogyImage(N, P, 5.0), mask=mask)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(flux_ratio=0.0), "flux_ratio"),
        (dict(flux_ratio="x"), "flux_ratio"),
        (dict(science_sigma=-1.0), "science_sigma"),
        (dict(science_psf="gaussian"), "science_psf"),
        (dict(reference_psf=np.ones((4, 4)) / 16), "reference_psf"),
        (dict(mask=np.zeros((5, 5), bool)), "mask: shape"),
    ],
)
def test_zogy_bad_arguments(noise_pair, kwargs, match):
    N, R, P = noise_pair
    args = dict(science_psf=P, reference_psf=P, science_sigma=5.0, reference_sigma=3.0)
    args.update(kwargs)
    images = dict(
        reference=ZogyImage(R, args.pop("reference_psf"), args.pop("reference_sigma")),
        science=ZogyImage(N, args.pop("science_psf"), args.pop("science_sigma")),
    )
    with pytest.raises(AstridInputError, match=match):
        subtract(**images, **args)


# ----------------------------------------------------------------------------- difference


def _no_wcs(pair):
    """Images whose alignment would fail at once: errors about cheap arguments must come first."""
    reference, science = pair
    return reference.copy(wcs=None), science.copy(wcs=None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(flux_ratio=1e6), r"flux_ratio: must be a finite number within \[0.001, 1000\]"),
        (dict(flux_ratio=1e-4), "flux_ratio: must be a finite number within"),
        (dict(flux_ratio=-1.0), "flux_ratio: must be a finite number within"),
        (dict(flux_ratio=np.nan), "flux_ratio: must be a finite number within"),
        (dict(flux_ratio=np.inf), "flux_ratio: must be a finite number within"),
        (dict(flux_ratio="abc"), "flux_ratio: must be a number"),
        (dict(flux_ratio=True), "flux_ratio: must be a number"),
        (dict(box_size=2), "box_size: must be an integer >= 4"),
        (dict(psf_size=1), "psf_size"),
        (dict(tile_size=10), "tile_size"),
        (dict(psf_degree=5), "psf_degree"),
        (dict(align_method="warp"), "align_method"),
        (dict(astrometric_sigma=-1), "astrometric_sigma"),
        (dict(systematic_fraction="lots"), "systematic_fraction"),
        (dict(mask_radius=-3), "mask_radius"),
        (dict(noise_correlation="sometimes"), "noise_correlation"),
        (dict(science_zp="twenty"), "science_zp"),
        (dict(dtype=np.int16), "dtype"),
    ],
)
def test_difference_cheap_arguments_are_checked_before_alignment(pair, kwargs, match):
    reference, science = _no_wcs(pair)
    with pytest.raises(AstridInputError, match=match):
        difference(reference, science, **kwargs)


@pytest.mark.parametrize("role", ["science", "reference"])
@pytest.mark.parametrize("psf", ["gaussian", np.ones((4, 4)), {"fwhm": 3.0}])
def test_difference_bad_psf_is_named_before_alignment(pair, role, psf):
    reference, science = _no_wcs(pair)
    with pytest.raises(AstridPSFError, match=f"{role}_psf"):
        difference(reference, science, **{f"{role}_psf": psf})


def test_flux_ratio_range_is_documented():
    assert FLUX_RATIO_RANGE == (1e-3, 1e3)
    assert "1e-3" in difference.__doc__ or "0.001" in difference.__doc__


@pytest.mark.parametrize("which", [0, 1])
def test_difference_none_or_junk_images(pair, which):
    args = list(pair)
    args[which] = None
    role = ("reference", "science")[which]
    with pytest.raises(AstridInputError, match=f"{role}: must be an astrid.Image or a path"):
        difference(*args, **given())


def test_difference_missing_file_names_it(tmp_path, pair):
    with pytest.raises(AstridFileError, match="nope.fits: file does not exist"):
        difference(tmp_path / "nope.fits", pair[1], **given())


@pytest.mark.parametrize("role", ["science", "reference"])
def test_difference_noiseless_image_is_named(pair, role):
    reference, science = pair
    flat = Image(
        np.zeros(SHAPE, np.float32), wcs=reference.wcs, meta=ImageMeta(path=f"{role}_flat.fits")
    )
    args = {"reference": reference, "science": science, role: flat}
    with pytest.raises(
        AstridInputError, match=f"{role} {role}_flat.fits: its background noise is 0"
    ):
        difference(args["reference"], args["science"], **given())


def test_difference_psf_failure_names_the_image_and_gives_advice_it_accepts(pair):
    reference, science = pair
    rng = np.random.default_rng(5)
    starless = science.copy(
        data=rng.normal(0, 5, SHAPE).astype(np.float32),
        meta=ImageMeta(path="starless.fits"),
        variance=None,
    )
    with pytest.raises(
        AstridPSFError, match="science starless.fits: .*pass science_psf= to difference"
    ) as caught:
        difference(
            reference, starless, align=False, reference_psf=given()["reference_psf"], flux_ratio=1.0
        )
    assert "fwhm=" not in str(caught.value)


def test_difference_all_masked_names_the_image(pair):
    reference, science = pair
    hidden = science.copy(mask=np.ones(SHAPE, bool))
    with pytest.raises(AstridInputError, match="no finite, unmasked"):
        difference(reference, hidden, **given())


@pytest.mark.parametrize("fraction", [0.005, 0.01])
def test_difference_scattered_nans_cost_at_most_five_percent(sim, sim_clean, fraction):
    science = sim.image("science")
    data = _scattered_nan(science.data, fraction, seed=3)
    holed = science.copy(data=data, mask=science.mask | ~np.isfinite(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstridWarning)  # Gaussian PSF fallbacks on 256² px
        result = difference(sim.image("reference"), holed)
    assert result.metrics["n_repaired_sci"] > 0.9 * fraction * data.size
    assert result.metrics["mask_fraction"] - sim_clean.metrics["mask_fraction"] <= 0.05
    assert abs(result.metrics["scorr_robust_std"] - sim_clean.metrics["scorr_robust_std"]) < 0.1


def test_difference_numpy_ma_reference(pair):
    reference, science = pair
    hidden = np.zeros(SHAPE, bool)
    hidden[40:50, 40:50] = True
    garbage = np.array(reference.data, copy=True)
    garbage[hidden] = 1e7
    masked_ref = reference.copy(data=np.ma.MaskedArray(garbage, mask=hidden))
    result = difference(masked_ref, science, **given())
    assert result.mask[40:50, 40:50].all()
    assert np.abs(result.S_corr[~result.mask]).max() < 10


@pytest.mark.parametrize("seed", [1, 2])
def test_difference_pixel_scale_ratio_2_is_calibrated_and_mostly_unmasked(seed):
    """A science image with pixels twice as large: its resampled noise is correlated over several
    pixels. S_corr keeps unit variance and the mask stays far below half the image (was 98 %
    masked and a robust std of 2.2 at 256² px)."""
    pytest.importorskip("reproject")
    sim2 = astrid.simulate.pair(size=256, seed=seed, pixel_scale_ratio=2)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "only .* usable PSF stars", AstridWarning
        )  # few stars on 256² px
        result = difference(sim2.image("reference"), sim2.image("science"))
    assert result.metrics["noise_correlated_sci"]
    assert result.subtraction.science_noise_acf.shape[0] > 5  # widened past the correlation length
    assert result.metrics["mask_fraction"] < MASK_WARN_FRACTION
    assert abs(result.metrics["scorr_robust_std"] - 1.0) < 0.2


def test_difference_miscalibrated_scorr_warns_with_numbers(pair):
    """White-noise ZOGY on strongly correlated noise: the robust std of S_corr is reported."""
    from scipy import ndimage

    reference, science = pair
    kernel = np.ones((3, 3)) / 9.0
    rng = np.random.default_rng(4)
    smooth = [
        ndimage.convolve(rng.normal(0, s, SHAPE), kernel, mode="wrap").astype(np.float32)
        for s in (5, 3)
    ]
    with pytest.warns(
        AstridWarning, match=r"robust standard deviation of S_corr is \d\.\d\d \(expected 1"
    ):
        difference(
            reference.copy(data=smooth[1], variance=None),
            science.copy(data=smooth[0], variance=None),
            noise_correlation=False,
            **given(),
        )


# ----------------------------------------------------------------------------- detect / make_triplets


@pytest.fixture(scope="module")
def small_result(pair):
    return difference(*pair, **given())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda r: astrid.detect(None), "has no 'S_corr'"),
        (lambda r: astrid.detect("result.fits"), "has no 'S_corr'"),
        (lambda r: astrid.detect(r, threshold=-1), "threshold"),
        (lambda r: astrid.detect(r, threshold=np.nan), "threshold"),
        (lambda r: astrid.detect(r, threshold="5"), "threshold"),
        (lambda r: astrid.detect(r, threshold=True), "threshold"),
        (lambda r: astrid.make_triplets(r, None), "candidates: expected an astropy Table"),
        (lambda r: astrid.make_triplets(r, Table({"a": [1]})), "candidates: needs columns x and y"),
        (lambda r: astrid.make_triplets(None, Table({"x": [1.0], "y": [2.0]})), "result.D"),
        (lambda r: astrid.make_triplets(r, Table({"x": [1.0], "y": [2.0]}), size=10), "size"),
        (
            lambda r: astrid.make_triplets(r, Table({"x": [np.nan], "y": [2.0]})),
            "finite pixel positions",
        ),
    ],
)
def test_detect_and_triplets_bad_inputs(small_result, call, match):
    with pytest.raises(AstridInputError, match=match):
        call(small_result)
