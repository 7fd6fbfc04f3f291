"""astrid.difference(): the chain, its outputs, and its quality on simulated survey pairs."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage
from test_zogy import add_source, gaussian, starfield

from astrid import Image, ImageMeta, write_image
from astrid.diffim import DifferenceResult, difference
from astrid.diffim.zogy import flux_at, robust_std
from astrid.errors import AstridInputError, AstridMismatchError, AstridWarning
from astrid.simulate import significant_peaks as peaks
from astrid.simulate.datasets import tan_wcs

FWHM_N, FWHM_R = 3.5, 2.5


def synthetic_images(shape=(256, 256), seed=1, transient=(130.0, 120.0, 3000.0), **meta):
    """A static star field on one grid (no alignment needed) with one new source in the science."""
    rng = np.random.default_rng(seed)
    N, R, Vn, Vr = starfield(rng, shape, FWHM_N, FWHM_R, 5.0, 3.0, n_stars=40)
    if transient is not None:
        add_source(N, *transient, FWHM_N)
    wcs = tan_wcs(shape)
    ref_meta = ImageMeta(
        telescope=meta.get("telescope_ref", "P48"), filter=meta.get("filter_ref", "r")
    )
    sci_meta = ImageMeta(
        telescope=meta.get("telescope_sci", "P48"), filter=meta.get("filter_sci", "r")
    )
    reference = Image(data=R.astype(np.float32), wcs=wcs, variance=Vr, meta=ref_meta)
    science = Image(data=N.astype(np.float32), wcs=wcs, variance=Vn, meta=sci_meta)
    return reference, science


def given(**kwargs):
    """Arguments that skip alignment and PSF / flux-ratio estimation."""
    out = dict(
        align=False, science_psf=gaussian(FWHM_N), reference_psf=gaussian(FWHM_R), flux_ratio=1.0
    )
    out.update(kwargs)
    return out


# ----------------------------------------------------------------------------- chain and outputs


def test_zogy_on_aligned_synthetic_pair_finds_the_transient():
    reference, science = synthetic_images()
    result = difference(reference, science, **given())
    assert isinstance(result, DifferenceResult) and result.method == "zogy"
    assert result.D.shape == result.S_corr.shape == result.flux.shape == reference.shape
    assert result.S_corr.dtype == np.float32
    assert result.P_D is not None and result.P_D.sum() == pytest.approx(1.0, abs=1e-5)
    m = result.metrics
    for key in (
        "overlap",
        "align_rms",
        "n_matched",
        "fwhm_sci",
        "fwhm_ref",
        "flux_ratio",
        "sigma_sci",
        "sigma_ref",
        "scorr_robust_std",
        "time_align",
        "time_background",
        "time_psf",
        "time_flux_ratio",
        "time_subtract",
        "time_total",
    ):
        assert key in m, key
    assert (
        m["overlap"] == 1.0
        and m["flux_ratio_method"] == "given"
        and m["variance_source"] == "image"
    )
    assert m["fwhm_sci"] == pytest.approx(FWHM_N, rel=0.05)
    assert abs(m["scorr_robust_std"] - 1.0) < 0.05
    x, y = peaks(result.S_corr, result.mask)
    assert len(x) == 1 and abs(x[0] - 130) <= 1 and abs(y[0] - 120) <= 1
    measured = flux_at(result.subtraction, 130, 120)
    assert measured["flux"] == pytest.approx(3000.0, rel=0.05)
    assert np.all(result.S_corr[result.mask] == 0)


def test_classic_method_and_difference_between_methods():
    reference, science = synthetic_images(seed=2)
    result = difference(reference, science, method="classic", **given())
    assert (
        result.method == "classic"
        and result.S is None
        and result.flux is None
        and result.P_D is None
    )
    assert result.metrics["convolved"] == "reference"
    x, y = peaks(result.S_corr, result.mask)
    assert any(abs(xi - 130) <= 1 and abs(yi - 120) <= 1 for xi, yi in zip(x, y))


def test_inputs_can_be_paths(tmp_path):
    reference, science = synthetic_images(seed=3)
    ref_path = write_image(tmp_path / "ref.fits", reference)
    sci_path = write_image(tmp_path / "sci.fits", science)
    result = difference(str(ref_path), sci_path, **given())
    assert result.reference.meta.path == str(ref_path)
    assert abs(result.metrics["scorr_robust_std"] - 1.0) < 0.05


def test_to_fits_writes_all_planes_with_provenance(tmp_path):
    reference, science = synthetic_images(seed=4)
    result = difference(reference, science, **given())
    path = result.to_fits(tmp_path / "out" / "diff.fits")
    assert path.exists() and not list(path.parent.glob(".*.part"))
    with fits.open(path) as hdul:
        names = [hdu.name for hdu in hdul]
        for name in (
            "SCIENCE",
            "REFERENCE",
            "D",
            "S",
            "SCORR",
            "FLUX",
            "FLUXERR",
            "MASK",
            "FOOTPRNT",
            "PSFSCI",
            "PSFREF",
            "PD",
        ):
            assert name in names, name
        header = hdul[0].header
        assert header["ASTRSTEP"] == "difference" and header["METHOD"] == "zogy"
        assert "ASTRIDV" in header
        assert header["FLXRATIO"] == pytest.approx(1.0)
        assert header["SCORRSTD"] == pytest.approx(result.metrics["scorr_robust_std"])
        np.testing.assert_array_equal(hdul["SCORR"].data, result.S_corr)
        np.testing.assert_array_equal(hdul["MASK"].data.astype(bool), result.mask)
        assert hdul["SCORR"].header["CTYPE1"] == "RA---TAN"
    classic = difference(reference, science, method="classic", **given())
    with fits.open(classic.to_fits(tmp_path / "classic.fits")) as hdul:
        names = [hdu.name for hdu in hdul]
        assert "S" not in names and "FLUX" not in names and "SCORR" in names


def test_to_xarray_holds_images_psfs_and_metrics(tmp_path):
    reference, science = synthetic_images(seed=5)
    result = difference(reference, science, **given())
    ds = result.to_xarray()
    pytest.importorskip("h5netcdf")
    ds.to_netcdf(tmp_path / "diff.nc", engine="h5netcdf")  # attributes and dtypes are serialisable
    assert ds["S_corr"].dims == ("y", "x") and ds["S_corr"].shape == reference.shape
    assert ds["mask"].dtype == bool
    assert set(ds.data_vars) >= {
        "science",
        "reference",
        "D",
        "S",
        "S_corr",
        "flux",
        "flux_err",
        "mask",
        "footprint",
        "science_psf",
        "reference_psf",
        "P_D",
    }
    assert ds.attrs["method"] == "zogy" and "RA---TAN" in ds.attrs["wcs"]
    assert ds.attrs["flux_ratio"] == pytest.approx(1.0)
    np.testing.assert_array_equal(ds["S_corr"].values, result.S_corr)


def test_filter_or_telescope_mismatch_raises_unless_allowed():
    reference, science = synthetic_images(seed=6, filter_sci="g")
    with pytest.raises(AstridMismatchError, match="filter 'r' vs 'g'"):
        difference(reference, science, **given())
    reference, science = synthetic_images(seed=6, telescope_sci="SWIFT")
    with pytest.raises(AstridMismatchError, match="telescope 'P48' vs 'SWIFT'"):
        difference(reference, science, **given())
    with pytest.warns(AstridWarning, match="allow_mismatch=True"):
        result = difference(reference, science, allow_mismatch=True, **given())
    assert result.S_corr.shape == reference.shape


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="hotpants"), "method"),
        (dict(bogus_option=1), "unknown option"),
        (dict(noise_correlation="sometimes"), "noise_correlation"),
        (dict(flux_ratio="abc"), "flux_ratio"),
    ],
)
def test_bad_options_raise(kwargs, message):
    reference, science = synthetic_images(seed=7, transient=None)
    args = given()
    args.update(kwargs)
    with pytest.raises(AstridInputError, match=message):
        difference(reference, science, **args)


def test_bad_inputs_raise():
    reference, science = synthetic_images(seed=8, transient=None)
    with pytest.raises(AstridInputError, match="astrid.Image or a path"):
        difference(reference.data, science, **given())
    small = science.copy(data=science.data[:100, :100], mask=None, variance=None)
    with pytest.raises(AstridInputError, match="align=True"):
        difference(reference, small, **given())


def test_correlated_noise_is_detected_and_modelled():
    """Smoothed (resampled-like) noise: S_corr keeps unit variance only with the noise ACF."""
    rng = np.random.default_rng(9)
    shape = (256, 256)
    kernel = np.array([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])
    N = ndimage.convolve(rng.normal(0, 5, shape), kernel, mode="wrap")
    R = ndimage.convolve(rng.normal(0, 3, shape), kernel, mode="wrap")
    wcs = tan_wcs(shape)
    reference, science = Image(data=R, wcs=wcs), Image(data=N, wcs=wcs)
    auto = difference(reference, science, **given())
    with pytest.warns(AstridWarning, match="robust standard deviation of S_corr"):
        # White-noise ZOGY on correlated noise is miscalibrated, and says so.
        white = difference(reference, science, noise_correlation=False, **given())
    assert auto.metrics["noise_correlated_sci"] and auto.metrics["noise_correlated_ref"]
    assert auto.metrics["noise_acf_lag1_sci"] > 0.3
    assert abs(auto.metrics["scorr_robust_std"] - 1.0) < 0.05
    assert white.metrics["scorr_robust_std"] > 1.3


# ----------------------------------------------------------------------------- simulated survey pairs


def _simulate():
    return pytest.importorskip("astrid.simulate", reason="the simulator is not available")


def _evaluate(sim, result):
    shape = result.S_corr.shape
    from astrid.simulate import explained_mask, near_stars_mask, source_free_mask

    x, y = peaks(result.S_corr, result.mask)
    unexplained = ~explained_mask(sim.truth, shape)[y, x]
    near_bright = near_stars_mask(sim.stars, shape, 16.0, 15.0)[y, x]
    transients = sim.truth[np.isin(sim.truth["kind"], ["supernova", "variable"])]
    found, fluxes = [], []
    for row in transients:
        ix, iy = int(round(row["x_ref"])), int(round(row["y_ref"]))
        if not (2 <= ix < shape[1] - 2 and 2 <= iy < shape[0] - 2) or result.mask[iy, ix]:
            continue
        if row["snr_diff"] >= 8:
            window = np.abs(result.S_corr[iy - 2 : iy + 3, ix - 2 : ix + 3])
            found.append(window.max() > 5)
        if (
            result.subtraction is not None
            and hasattr(result.subtraction, "flux")
            and row["snr_diff"] >= 20
        ):
            measured = flux_at(result.subtraction, row["x_ref"], row["y_ref"])
            fluxes.append((measured["flux"] / row["flux_diff"], row["snr_diff"]))
    return {
        "false_positives": int(np.count_nonzero(unexplained)),
        "false_positives_bright": int(np.count_nonzero(unexplained & near_bright)),
        "recovered": int(sum(found)),
        "n_transients": len(found),
        "fluxes": fluxes,
        "source_free_std": robust_std(result.S_corr, result.mask | ~source_free_mask(sim, shape)),
    }


def test_simulated_pair_512_end_to_end():
    simulate = _simulate()
    sim = simulate.pair(512, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstridWarning)  # a PSF fallback is possible on 512² px
        result = difference(sim.reference, sim.science)
    m = result.metrics
    assert m["flux_ratio"] == pytest.approx(sim.params["flux_ratio"], rel=0.1)  # few stars at 512²
    assert m["align_rms"] < 0.15 and m["overlap"] > 0.9
    stats = _evaluate(sim, result)
    assert abs(stats["source_free_std"] - 1.0) < 0.05
    assert stats["recovered"] >= 0.9 * stats["n_transients"]
    assert stats["false_positives"] <= 2


@pytest.fixture(scope="module")
def simulated_runs():
    simulate = _simulate()
    runs = []
    for seed in (3, 6):
        sim = simulate.pair(1024, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstridWarning)
            zogy = difference(sim.reference, sim.science)
            classic = difference(sim.reference, sim.science, method="classic")
        runs.append((sim, _evaluate(sim, zogy), _evaluate(sim, classic)))
    return runs


@pytest.mark.slow
def test_simulated_scorr_has_unit_variance_in_source_free_regions(simulated_runs):
    for _, zogy, _ in simulated_runs:
        assert abs(zogy["source_free_std"] - 1.0) < 0.05


@pytest.mark.slow
def test_simulated_transients_are_recovered(simulated_runs):
    recovered = sum(z["recovered"] for _, z, _ in simulated_runs)
    total = sum(z["n_transients"] for _, z, _ in simulated_runs)
    assert total >= 15
    assert recovered >= 0.95 * total


@pytest.mark.slow
def test_simulated_fluxes_match_truth(simulated_runs):
    ratios = np.array([r for _, z, _ in simulated_runs for r, _ in z["fluxes"]])
    snrs = np.array([s for _, z, _ in simulated_runs for _, s in z["fluxes"]])
    assert ratios.size >= 10
    print("flux / truth at S/N >= 20:", np.round(np.sort(ratios), 3))
    # One PSF per image, but the simulated PSF varies by ~5 % over the field:
    # allow 3 % systematic besides the statistical 1/SNR, at 3 sigma each.
    assert np.all(np.abs(ratios - 1) < 3 * np.hypot(1.0 / snrs, 0.03))
    assert np.mean(np.abs(ratios - 1) < 0.05) >= 0.7
    assert abs(np.median(ratios) - 1) < 0.03


@pytest.mark.slow
def test_simulated_false_positives_zogy_beats_classic(simulated_runs):
    zogy_fp = sum(z["false_positives"] for _, z, _ in simulated_runs)
    classic_fp = sum(c["false_positives"] for _, _, c in simulated_runs)
    zogy_bright = sum(z["false_positives_bright"] for _, z, _ in simulated_runs)
    classic_bright = sum(c["false_positives_bright"] for _, _, c in simulated_runs)
    print(
        f"false positives on 2 × 1024²: ZOGY {zogy_fp} ({zogy_bright} near stars < 16 mag), "
        f"classic {classic_fp} ({classic_bright})"
    )
    # About 2 per 1024² remain, mostly at 5.0–5.5 sigma far from any source.
    assert zogy_fp <= 3 * len(simulated_runs)
    assert zogy_fp < classic_fp
    assert zogy_bright <= classic_bright


def _status_mib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return None


@pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc peak-RSS reset"
)
def test_difference_gives_its_working_memory_back():
    """Freed working arrays are reused during a call (docs/performance.md) and returned after it,
    so that a notebook's kernel does not keep the call's peak."""
    from astrid.simulate import pair

    small, big = pair(256, seed=1), pair(1024, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        difference(small.reference, small.science, method="kernel")  # load the numba kernels
        before = _status_mib("VmRSS:")
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset the peak resident size
        except OSError:
            pytest.skip("cannot reset the peak resident size here")
        result = difference(big.reference, big.science, method="kernel")
        del result
    peak, after = _status_mib("VmHWM:") - before, _status_mib("VmRSS:") - before
    assert peak > 50, f"the 1024² call should need working memory (peak growth {peak:.0f} MiB)"
    assert after < 0.5 * peak, f"{after:.0f} MiB of a {peak:.0f} MiB peak kept after the call"
