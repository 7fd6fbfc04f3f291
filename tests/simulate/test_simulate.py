"""The simulated survey: physics, geometry, truth, determinism and the survey layout."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from photutils.aperture import CircularAperture, aperture_photometry

import astrid
from astrid import simulate
from astrid.errors import AstridInputError

SIZE = 384

# A field with nothing but sky: for the noise model.
EMPTY = dict(
    n_stars=0,
    n_galaxies=0,
    n_host_galaxies=0,
    n_supernovae=0,
    n_variables=0,
    n_asteroids=0,
    artifacts=False,
    sky_gradient=0.0,
)


@pytest.fixture(scope="module")
def default_pair():
    return simulate.pair(SIZE, seed=11)


@pytest.fixture(scope="module")
def noiseless_pair():
    return simulate.pair(SIZE, seed=11, noise=False)


def _moffat_enclosed(radius, fwhm, beta):
    """Flux fraction of a circular Moffat profile within ``radius``."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return 1.0 - (1.0 + (radius / alpha) ** 2) ** (1.0 - beta)


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("preset", ["ztf", "swift_uvot"])
def test_sky_noise_matches_gain_and_read_noise(preset):
    sim = simulate.pair(SIZE, seed=3, preset=preset, **EMPTY)
    image = sim.science
    gain, read_noise = image.meta.gain, image.header["RDNOISE"]
    sky = sim.params["sky_science"]
    expected_var = sky / gain + (read_noise / gain) ** 2
    # the variance image is the noise model...
    np.testing.assert_allclose(image.variance, expected_var, rtol=1e-5)
    # ...and the pixels scatter by it (N = 147k pixels: the std is known to 0.4 %).
    assert image.data.mean() == pytest.approx(sky, rel=2e-3)
    assert image.data.var() == pytest.approx(expected_var, rel=0.02)
    if preset == "swift_uvot":
        # photon counting: integer counts, Poisson (variance = mean)
        assert gain == 1.0 and read_noise == 0.0
        np.testing.assert_array_equal(image.data, np.round(image.data))


def test_variance_image_predicts_the_noise_everywhere(default_pair, noiseless_pair):
    """Noisy minus noiseless data, in units of the variance image, is unit Gaussian (sources included)."""
    for epoch in ("reference", "science"):
        noisy, clean = default_pair.image(epoch), noiseless_pair.image(epoch)
        np.testing.assert_array_equal(noisy.variance, clean.variance)
        bad = noisy.mask | clean.mask
        # cosmic rays land identically in both; exclude their pixels and every altered pixel
        truth = default_pair.truth
        cr = truth[(truth["kind"] == "cosmic_ray") & (truth["epoch"] == epoch)]
        suffix = "sci" if epoch == "science" else "ref"
        for x, y, length in zip(cr[f"x_{suffix}"], cr[f"y_{suffix}"], cr["length_px"]):
            r = int(np.ceil(length / 2)) + 2
            ix, iy = int(round(x)), int(round(y))
            bad[max(iy - r, 0) : iy + r + 1, max(ix - r, 0) : ix + r + 1] = True
        z = ((noisy.data - clean.data) / np.sqrt(noisy.variance))[~bad]
        assert abs(z.mean()) < 0.01
        assert z.std() == pytest.approx(1.0, abs=0.02)


# --------------------------------------------------------------------------- transients


def test_supernova_flux_matches_truth():
    fwhm = 2.6
    kwargs = dict(noise=False, fwhm_science=fwhm, psf_variation=0.0, psf_ellipticity=0.0)
    with_sn = simulate.pair(SIZE, seed=5, **kwargs)
    without = simulate.pair(SIZE, seed=5, n_supernovae=0, **kwargs)
    diff = with_sn.science.data.astype(float) - without.science.data
    sn = with_sn.truth[with_sn.truth["kind"] == "supernova"]
    assert len(sn) == 10
    # Removing the supernovae changes no other pixel (independent random streams).
    far = np.ones(diff.shape, bool)
    for x, y in zip(sn["x_sci"], sn["y_sci"]):
        ix, iy = int(round(x)), int(round(y))
        far[max(iy - 40, 0) : iy + 41, max(ix - 40, 0) : ix + 41] = False
    assert np.all(diff[far] == 0)
    radius = 3.0 * fwhm
    phot = aperture_photometry(
        diff, CircularAperture(np.column_stack([sn["x_sci"], sn["y_sci"]]), r=radius)
    )
    expected = sn["flux_sci"] * _moffat_enclosed(radius, fwhm, with_sn.params["psf_beta"])
    np.testing.assert_allclose(phot["aperture_sum"], expected, rtol=0.01)
    # MAGZP in the header is consistent with the fluxes
    np.testing.assert_allclose(
        sn["mag"], with_sn.science.header["MAGZP"] - 2.5 * np.log10(sn["flux_sci"]), atol=1e-9
    )


def test_psf_fit_flux_and_snr_are_honest(default_pair):
    """A PSF fit with the true PSF recovers flux_diff within the error that snr_sci claims."""
    sim = simulate.pair(SIZE, seed=11, n_supernovae=0, n_variables=0, n_asteroids=0, noise=False)
    truth = default_pair.truth
    sci = default_pair.science
    diff = sci.data.astype(float) - sim.science.data
    var = sci.variance.astype(float)
    pulls = []
    for row in truth[np.isin(truth["kind"], ["supernova", "variable"])]:
        x, y = row["x_sci"], row["y_sci"]
        ix, iy = int(round(x)), int(round(y))
        psf = default_pair.psf("science", x, y, size=25)
        # the true PSF is centred on the pixel centre; shift it to the source by its sub-pixel offset
        shifted = _shift(psf, x - ix, y - iy)
        cut = (slice(iy - 12, iy + 13), slice(ix - 12, ix + 13))
        if sci.mask[cut].any():
            continue
        d, v = diff[cut], var[cut]
        w = shifted / v
        flux = np.sum(w * d) / np.sum(w * shifted)
        sigma = 1.0 / np.sqrt(np.sum(shifted**2 / v))
        assert row["snr_sci"] == pytest.approx(abs(row["flux_diff"]) / sigma, rel=0.03)
        # the reference-free image holds the whole star for a variable, the supernova alone otherwise
        pulls.append((flux - row["flux_sci"]) / sigma)
    assert len(pulls) >= 10
    assert np.max(np.abs(pulls)) < 4.0


def _shift(stamp, dx, dy):
    from scipy.ndimage import shift

    out = shift(stamp, (dy, dx), order=3, mode="constant")
    return out / out.sum()


def test_truth_table_has_every_kind_and_sane_columns(default_pair):
    truth = default_pair.truth
    assert set(truth["kind"]) == set(simulate.TRUTH_KINDS)
    for name in (
        "id",
        "kind",
        "epoch",
        "ra",
        "dec",
        "x_sci",
        "y_sci",
        "x_ref",
        "y_ref",
        "flux_sci",
        "flux_ref",
        "mag",
        "snr_sci",
        "host_id",
        "host_offset_arcsec",
        "is_real",
    ):
        assert name in truth.colnames
    assert set(truth["epoch"]) <= {"science", "reference", "both"}
    np.testing.assert_array_equal(truth["id"], np.arange(len(truth)))
    real = {"supernova", "variable", "asteroid"}
    np.testing.assert_array_equal(truth["is_real"], [k in real for k in truth["kind"]])
    # positions agree with both WCSs
    for suffix, image in (("sci", default_pair.science), ("ref", default_pair.reference)):
        x, y = image.wcs.wcs_world2pix(truth["ra"], truth["dec"], 0)
        np.testing.assert_allclose(x, truth[f"x_{suffix}"], atol=1e-6)
        np.testing.assert_allclose(y, truth[f"y_{suffix}"], atol=1e-6)
    sn = truth[truth["kind"] == "supernova"]
    assert np.all(sn["flux_ref"] == 0) and np.all(sn["flux_sci"] > 0)
    # the ideal difference adds the reference's noise
    point = truth[np.isin(truth["kind"], ["supernova", "variable", "asteroid"])]
    assert np.all(point["snr_diff"] < point["snr_sci"]) and np.all(
        point["snr_diff"] > 0.3 * point["snr_sci"]
    )
    # several clearly detectable, some faint
    assert np.sum(sn["snr_sci"] > 8) >= 4 and np.sum(sn["snr_sci"] < 8) >= 2
    hosted = sn["host_id"] >= 0
    assert hosted.sum() >= 5
    assert np.all(np.isfinite(sn["host_offset_arcsec"][hosted])) and np.all(
        np.isnan(sn["host_offset_arcsec"][~hosted])
    )
    # the offset is the distance to the host's nucleus
    gal = default_pair.galaxies[sn["host_id"][hosted]]
    sep = np.hypot((sn["x_sci"][hosted] - gal["x_sci"]), (sn["y_sci"][hosted] - gal["y_sci"]))
    np.testing.assert_allclose(
        sep * default_pair.params["pixel_scale_science"],
        sn["host_offset_arcsec"][hosted],
        rtol=1e-3,
        atol=1e-3,
    )
    var = truth[truth["kind"] == "variable"]
    np.testing.assert_allclose(
        var["flux_diff"], var["flux_sci"] - default_pair.params["flux_ratio"] * var["flux_ref"]
    )
    assert np.all(np.abs(var["mag"] - var["mag_ref"]) >= 0.15 - 1e-9)


def test_asteroid_in_both_epochs_is_linked():
    sim = simulate.pair(256, seed=2, n_asteroids=1, asteroid_in_reference=1.0)
    rows = sim.truth[sim.truth["kind"] == "asteroid"]
    assert sorted(rows["epoch"]) == ["reference", "science"]
    sci_row = rows[rows["epoch"] == "science"][0]
    ref_row = rows[rows["epoch"] == "reference"][0]
    assert (
        ref_row["parent_id"] == sci_row["id"]
        and ref_row["flux_sci"] == 0
        and ref_row["flux_ref"] > 0
    )
    assert np.hypot(ref_row["x_sci"] - sci_row["x_sci"], ref_row["y_sci"] - sci_row["y_sci"]) > 20


def test_saturated_stars_clip_and_bleed_along_columns(default_pair):
    truth = default_pair.truth
    sat = truth[(truth["kind"] == "saturated_star") & np.isin(truth["epoch"], ["science", "both"])]
    assert len(sat) >= 2
    image = default_pair.science
    level = image.header["SATURATE"]
    assert image.data.max() <= level
    for row in sat:
        ix, iy = int(round(row["x_sci"])), int(round(row["y_sci"]))
        if not (0 <= ix < SIZE and 0 <= iy < SIZE):
            continue
        assert image.mask[iy, ix]
        column = image.data[:, ix] >= level
        row_run = image.data[iy, :] >= level
        # charge spills along the readout column: the saturated run is taller than wide
        assert column.sum() > row_run.sum()
        assert np.all(image.mask[image.data >= level])


def test_artifacts_off_leaves_only_natural_saturation():
    sim = simulate.pair(256, seed=4, artifacts=False)
    kinds = set(sim.truth["kind"])
    assert kinds <= {"supernova", "variable", "asteroid", "saturated_star"}
    assert {"supernova", "variable", "asteroid"} <= kinds


# --------------------------------------------------------------------------- geometry


def test_wcs_offset_is_what_was_asked_for():
    shift, rotation, ratio = (5.3, -2.7), 0.2, 1.1
    sim = simulate.pair(
        256,
        seed=1,
        shift_px=shift,
        rotation_deg=rotation,
        pixel_scale_ratio=ratio,
        n_stars=10,
        n_galaxies=5,
    )
    ref, sci = sim.reference.wcs, sim.science.wcs
    centre = (256 - 1) / 2
    # the science centre sees reference pixel centre + shift
    x, y = ref.wcs_world2pix(*sci.wcs_pix2world([[centre, centre]], 0)[0], 0)
    assert (x - centre, y - centre) == pytest.approx(shift, abs=1e-3)
    # a grid of science pixels maps to the reference by scale * rotation
    gx, gy = np.meshgrid(np.linspace(0, 255, 9), np.linspace(0, 255, 9))
    rx, ry = ref.wcs_world2pix(*sci.wcs_pix2world(gx.ravel(), gy.ravel(), 0), 0)
    design = np.column_stack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
    affine, *_ = np.linalg.lstsq(design, np.column_stack([rx, ry]), rcond=None)
    theta = np.deg2rad(rotation)
    expected = ratio * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    np.testing.assert_allclose(affine[:2].T, expected, atol=1e-6)
    np.testing.assert_allclose(
        design @ np.asarray(sim.params["sci_to_ref"]).T, np.column_stack([rx, ry]), atol=2e-3
    )
    scales = [w.proj_plane_pixel_scales()[0].to_value("arcsec") for w in (ref, sci)]
    assert scales[1] / scales[0] == pytest.approx(ratio, rel=1e-9)
    assert sim.params["shift_px"] == pytest.approx(shift)


def test_default_geometry_has_integer_and_subpixel_offsets_and_rotation(default_pair):
    dx, dy = default_pair.params["shift_px"]
    assert max(abs(dx), abs(dy)) <= default_pair.params["max_shift_px"] + 0.5
    assert 0 < abs(default_pair.params["rotation_deg"]) <= default_pair.params["max_rotation_deg"]
    # rendered stars sit where the truth says, in both grids (noiseless centroids)
    from photutils.centroids import centroid_com

    sim = simulate.pair(
        256,
        seed=8,
        noise=False,
        artifacts=False,
        rotation_deg=0.3,
        pixel_scale_ratio=1.1,
        psf_ellipticity=0.0,
    )
    for epoch, suffix in (("reference", "ref"), ("science", "sci")):
        image = sim.image(epoch)
        stars = sim.stars
        x, y = stars[f"x_{suffix}"], stars[f"y_{suffix}"]
        ok = (x > 15) & (x < 240) & (y > 15) & (y < 240) & (stars["mag"] < 19)
        ok &= ~stars["saturated_ref"] & ~stars["saturated_sci"]
        errors = []
        for xx, yy in zip(x[ok], y[ok]):
            ix, iy = int(round(xx)), int(round(yy))
            cut = image.data[iy - 5 : iy + 6, ix - 5 : ix + 6] - sim.params[f"sky_{epoch}"]
            cx, cy = centroid_com(np.clip(cut, 0, None))
            errors.append(np.hypot(cx + ix - 5 - xx, cy + iy - 5 - yy))
        assert len(errors) >= 2
        assert np.median(errors) < 0.05


def test_static_sky_cancels_in_the_ideal_difference():
    """Same PSF, integer shift, no noise: science - flux_ratio * reference leaves only the transients."""
    kwargs = dict(
        noise=False,
        artifacts=False,
        fwhm_reference=2.5,
        fwhm_science=2.5,
        psf_variation=0.0,
        psf_ellipticity=0.0,
        shift_px=(7, -4),
        rotation_deg=0.0,
        sky_gradient=0.0,
        n_asteroids=0,
        n_supernovae=0,
        n_variables=0,
    )
    sim = simulate.pair(256, seed=6, **kwargs)
    ratio = sim.params["flux_ratio"]
    sci = sim.science.data[10:-10, 10:-10].astype(float)
    ref = sim.reference.data[10 - 4 : -10 - 4, 10 + 7 : -10 + 7].astype(float)
    diff = sci - ratio * ref - (sim.params["sky_science"] - ratio * sim.params["sky_reference"])
    sigma = np.sqrt(sim.science.variance[10:-10, 10:-10])
    masked = (
        sim.science.mask[10:-10, 10:-10] | sim.reference.mask[10 - 4 : -10 - 4, 10 + 7 : -10 + 7]
    )
    # only the truncated far wings differ (each epoch cuts them below its own noise)
    assert np.max(np.abs(diff / sigma)[~masked]) < 0.2


def test_compact_galaxy_sits_at_its_subpixel_position():
    """Galaxies are sampled around their own centre, so a tiny one renders exactly like a star."""
    sim = simulate.pair(128, seed=1)
    as_galaxy = sim.render_source("science", 60.37, 70.81, 1000.0, r_eff_arcsec=0.01)
    as_star = sim.render_source("science", 60.37, 70.81, 1000.0)
    core = (slice(60, 82), slice(50, 72))
    np.testing.assert_allclose(as_galaxy[core], as_star[core], atol=1e-3 * as_star.max())


def test_psf_is_normalised_centred_and_has_the_fwhm(default_pair):
    for epoch in ("reference", "science"):
        psf = default_pair.params[f"psf_{epoch}"]
        assert psf.ndim == 2 and psf.shape[0] == psf.shape[1] and psf.shape[0] % 2 == 1
        assert psf.sum() == pytest.approx(1.0, abs=1e-12)
        c = psf.shape[0] // 2
        assert np.unravel_index(np.argmax(psf), psf.shape) == (c, c)
        yy, xx = np.indices(psf.shape)
        assert (np.sum(psf * xx), np.sum(psf * yy)) == pytest.approx((c, c), abs=1e-6)
        # pixels above half maximum: about the area of a disc of diameter FWHM (broadened by the pixels)
        fwhm = default_pair.params[f"fwhm_{epoch}"]
        area = np.sum(psf >= psf.max() / 2)
        assert np.pi * (fwhm / 2) ** 2 * 0.7 < area < np.pi * (fwhm / 2 + 0.5) ** 2 * 1.3
    lo, hi = default_pair.params["seeing_reference"]
    assert lo / 1.01 <= default_pair.params["fwhm_reference"] <= hi / 1.01
    assert default_pair.psf("science", 10, 10, size=11).shape == (11, 11)
    with pytest.raises(AstridInputError, match="odd"):
        default_pair.psf("science", size=10)


# --------------------------------------------------------------------------- presets and headers


@pytest.mark.parametrize(
    "preset, telescope, instrument, filt",
    [("ztf", "P48", "ZTF/MOSAIC", "r"), ("swift_uvot", "SWIFT", "UVOTA", "U")],
)
def test_presets_write_the_header_keys(preset, telescope, instrument, filt):
    sim = simulate.pair(256, seed=0, preset=preset)
    for image in (sim.reference, sim.science):
        for key in (
            "TELESCOP",
            "INSTRUME",
            "FILTER",
            "DATE-OBS",
            "MJD-OBS",
            "EXPTIME",
            "GAIN",
            "RDNOISE",
            "SATURATE",
            "MAGZP",
            "CTYPE1",
            "CRVAL1",
            "CRPIX1",
        ):
            assert key in image.header, key
        assert (image.meta.telescope, image.meta.instrument, image.meta.filter) == (
            telescope,
            instrument,
            filt,
        )
        assert image.data.dtype == np.float32 and image.variance.dtype == np.float32
        assert image.wcs.wcs.ctype[0] == "RA---TAN"
    assert sim.science.header["MJD-OBS"] - sim.reference.header["MJD-OBS"] >= 365
    zp_ratio = 10 ** (0.4 * (sim.science.header["MAGZP"] - sim.reference.header["MAGZP"]))
    assert sim.params["flux_ratio"] == pytest.approx(zp_ratio)
    assert sim.science.header["MAGZP"] != sim.reference.header["MAGZP"]
    kinds = set(sim.truth["kind"])
    if preset == "ztf":
        assert kinds == set(simulate.TRUTH_KINDS)
        fwhm = [sim.params["fwhm_reference"], sim.params["fwhm_science"]]
        assert all(2.0 / 1.01 <= f <= 3.2 / 1.01 for f in fwhm)
    else:
        # no bad columns or satellites on UVOT, which counts photons from orbit
        assert kinds == set(simulate.TRUTH_KINDS) - {"bad_column", "satellite_trail"}
        assert sim.params["sky_science"] < 50


def test_filters_and_zero_points_are_consistent_with_pixels():
    sim = simulate.pair(
        256,
        seed=9,
        filter="g",
        noise=False,
        artifacts=False,
        psf_ellipticity=0.0,
        psf_variation=0.0,
        n_stars=40,
        n_galaxies=0,
        n_host_galaxies=0,
        n_supernovae=0,
        sky_gradient=0.0,
    )
    assert sim.science.header["FILTER"] == "g"
    beta = sim.params["psf_beta"]
    stars = sim.stars
    checked = 0
    for epoch, suffix, mag in (("reference", "ref", "mag"), ("science", "sci", "mag_sci")):
        image = sim.image(epoch)
        fwhm = sim.params[f"fwhm_{epoch}"]
        x, y = stars[f"x_{suffix}"], stars[f"y_{suffix}"]
        inside = (
            (x > 20)
            & (x < 235)
            & (y > 20)
            & (y < 235)
            & ~stars[f"saturated_{suffix}"]
            & (stars[mag] < 20)
        )
        for k in np.flatnonzero(inside):
            others = np.hypot(x - x[k], y - y[k])
            if np.sum(others < 20) > 1:
                continue  # a neighbour in the aperture
            near_gal = np.hypot(
                sim.galaxies[f"x_{suffix}"] - x[k], sim.galaxies[f"y_{suffix}"] - y[k]
            )
            if np.any(near_gal < 25):
                continue
            radius = 4 * fwhm
            phot = aperture_photometry(
                image.data - sim.params[f"sky_{epoch}"], CircularAperture((x[k], y[k]), r=radius)
            )
            flux = 10 ** (-0.4 * (stars[mag][k] - image.header["MAGZP"])) * _moffat_enclosed(
                radius, fwhm, beta
            )
            assert phot["aperture_sum"][0] == pytest.approx(flux, rel=0.02)
            checked += 1
    assert checked >= 3
    with pytest.raises(AstridInputError, match="filter 'z'"):
        simulate.pair(256, filter="z")
    uv = simulate.pair(256, seed=1, preset="swift_uvot", filter="UVW2")
    assert uv.science.header["FILTER"] == "UVW2"


# --------------------------------------------------------------------------- determinism and input


def test_same_seed_same_pixels_and_different_seed_different():
    a = simulate.pair(256, seed=21)
    b = simulate.pair(256, seed=21)
    c = simulate.pair(256, seed=22)
    for epoch in ("reference", "science"):
        np.testing.assert_array_equal(a.image(epoch).data, b.image(epoch).data)
        np.testing.assert_array_equal(a.image(epoch).mask, b.image(epoch).mask)
        np.testing.assert_array_equal(a.image(epoch).variance, b.image(epoch).variance)
        assert not np.array_equal(a.image(epoch).data, c.image(epoch).data)
    assert all(
        np.array_equal(a.truth[n], b.truth[n], equal_nan=a.truth[n].dtype.kind == "f")
        for n in a.truth.colnames
    )
    assert a.params["ra"] != c.params["ra"]


def test_rectangular_size():
    sim = simulate.pair((200, 300), seed=1)
    assert sim.science.data.shape == (200, 300) and sim.reference.data.shape == (200, 300)
    truth = sim.truth[np.isin(sim.truth["kind"], ["supernova", "variable"])]
    assert np.all(
        (truth["x_sci"] > 0)
        & (truth["x_sci"] < 300)
        & (truth["y_sci"] > 0)
        & (truth["y_sci"] < 200)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(preset="hst"), "unknown preset 'hst'"),
        (dict(n_supernova=3), "unknown simulation parameter 'n_supernova'.*n_supernovae"),
        (dict(size=32), "at least 128"),
        (dict(size=(100.5, 200)), "size must be"),
        (dict(seed=-1), "seed must be"),
        (dict(n_supernovae=-2), "n_supernovae"),
        (dict(pixel_scale_ratio=5.0), "pixel_scale_ratio"),
        (dict(fwhm_science=0.1), "fwhm_science"),
        (dict(shift_px=(1, 2, 3)), "shift_px"),
        (dict(mjd_reference=59000.0, mjd_science=59100.0), "one year"),
        (dict(shift_px=(200, 0)), "hardly overlap"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, match):
    kwargs = {"size": 128, **kwargs}
    with pytest.raises(AstridInputError, match=match):
        simulate.pair(**kwargs)


# --------------------------------------------------------------------------- survey


def test_survey_layout_manifest_and_rerun(tmp_path):
    out = tmp_path / "survey"
    manifest = simulate.survey(out, n_fields=2, size=160, seed=3)
    assert isinstance(manifest, astrid.Manifest)
    loaded = astrid.Manifest.load(out)
    pairs = list(loaded.pairs())
    assert [p.target for p in pairs] == ["SIM0000", "SIM0001"]
    assert loaded.data["source"] == "simulated"
    first = pairs[0]
    assert first.reference == out / "SIM0000" / "reference" / "SIM0000_ztf_r_ref.fits"
    assert first.science.parent == out / "SIM0000" / "science"
    assert (first.mission, first.instrument, first.filter) == ("ZTF", "ZTF/MOSAIC", "r")
    assert first.truth == out / "SIM0000" / "truth.ecsv"
    entry = loaded.targets["SIM0000"]
    assert {"ra", "dec", "seed", "truth"} <= set(entry)
    assert {f["role"] for f in entry["files"]} == {"reference", "science"}
    assert all("mjd" in f and "sha256" in f for f in entry["files"])

    # the files hold what pair() makes for the field's seed, mask and variance included
    sim = simulate.pair(160, seed=entry["seed"])
    for epoch, path in (("reference", first.reference), ("science", first.science)):
        image = astrid.read_image(path)
        np.testing.assert_array_equal(image.data, sim.image(epoch).data)
        np.testing.assert_array_equal(image.mask, sim.image(epoch).mask)
        np.testing.assert_array_equal(image.variance, sim.image(epoch).variance)
        assert image.meta.zeropoint == pytest.approx(sim.image(epoch).header["MAGZP"])
        assert image.header["OBJECT"] == "SIM0000"
        x, y = image.wcs.wcs_world2pix(sim.truth["ra"], sim.truth["dec"], 0)
        np.testing.assert_allclose(x, sim.truth[f"x_{epoch[:3]}"], atol=1e-6)
    truth = Table.read(first.truth)
    assert len(truth) == len(sim.truth) and set(truth["kind"]) == set(sim.truth["kind"])
    np.testing.assert_allclose(truth["flux_sci"], sim.truth["flux_sci"])
    # fields differ
    other = astrid.read_image(pairs[1].science)
    assert loaded.targets["SIM0001"]["seed"] != entry["seed"]
    assert abs(other.header["CRVAL1"] - astrid.read_image(first.science).header["CRVAL1"]) > 1e-3

    # a rerun skips complete fields; a damaged field is redone, a new one added
    stamps = {p: p.stat().st_mtime_ns for p in (first.reference, first.science, pairs[1].science)}
    pairs[1].science.unlink()
    simulate.survey(out, n_fields=3, size=160, seed=3)
    again = astrid.Manifest.load(out)
    assert [p.target for p in again.pairs()] == ["SIM0000", "SIM0001", "SIM0002"]
    assert first.reference.stat().st_mtime_ns == stamps[first.reference]
    assert first.science.stat().st_mtime_ns == stamps[first.science]
    assert pairs[1].science.exists()
    assert again.has_file("SIM0001/science/SIM0001_ztf_r_sci.fits")
    # other parameters: the field is redone
    simulate.survey(out, n_fields=1, size=160, seed=3, n_supernovae=2)
    redone = Table.read(out / "SIM0000" / "truth.ecsv")
    assert np.sum(redone["kind"] == "supernova") == 2


def test_survey_rejects_bad_arguments(tmp_path):
    with pytest.raises(AstridInputError, match="n_fields"):
        simulate.survey(tmp_path, n_fields=-1)
    with pytest.raises(AstridInputError, match="unknown simulation parameter"):
        simulate.survey(tmp_path, n_fields=1, size=128, bogus=1)
    (tmp_path / "manifest.json").write_text(
        '{"schema": "astrid-survey/1", "source": "mast", "targets": {"M31": {"files": [], "pairs": []}}}'
    )
    with pytest.raises(AstridInputError, match="source 'mast'"):
        simulate.survey(tmp_path, n_fields=1, size=128)


# ----------------------------------------------------------------------------- truth masks


def _brute_force_explained(truth, shape, radius=8.0):
    """The definition, over every pixel for every entry."""
    yy, xx = np.indices(shape)
    out = np.zeros(shape, bool)
    for row in truth:
        length = row["length_px"] if np.isfinite(row["length_px"]) else 0.0
        angle = np.deg2rad(row["angle_deg"]) if np.isfinite(row["angle_deg"]) else 0.0
        r = radius + (20.0 if row["kind"] == "saturated_star" else 0.0)
        ux, uy = np.cos(angle), np.sin(angle)
        X, Y = xx - row["x_ref"], yy - row["y_ref"]
        t = np.clip(X * ux + Y * uy, -length / 2, length / 2)
        out |= np.hypot(X - t * ux, Y - t * uy) <= r
    return out


def test_truth_masks_match_their_definition():
    sim = simulate.pair(256, seed=4)
    shape = sim.reference.shape
    kinds = set(np.asarray(sim.truth["kind"]))
    assert {"satellite_trail", "supernova"} <= kinds  # segments and points both covered
    explained = simulate.explained_mask(sim.truth, shape)
    np.testing.assert_array_equal(explained, _brute_force_explained(sim.truth, shape))
    yy, xx = np.indices(shape)
    bright = sim.stars[sim.stars["mag"] < 16.0]
    expected = np.zeros(shape, bool)
    for row in bright:
        expected |= np.hypot(xx - row["x_ref"], yy - row["y_ref"]) < 15.0
    np.testing.assert_array_equal(simulate.near_stars_mask(sim.stars, shape), expected)
    free = simulate.source_free_mask(sim, shape)
    assert not (free & explained).any()
    for row in sim.stars:
        x, y = int(round(row["x_ref"])), int(round(row["y_ref"]))
        if 0 <= x < shape[1] and 0 <= y < shape[0]:
            assert not free[y, x]
    assert 0.05 < free.mean() < 0.95


def test_significant_peaks_are_local_maxima_of_the_absolute_value():
    image = np.zeros((40, 40))
    image[10, 10], image[10, 12] = 7.0, 6.0  # the smaller one is not a 5x5 maximum
    image[30, 25] = -8.0  # negative peaks count
    image[20, 5] = 4.0  # below the threshold
    mask = np.zeros(image.shape, bool)
    x, y = simulate.significant_peaks(image, mask)
    assert sorted(zip(x.tolist(), y.tolist())) == [(10, 10), (25, 30)]
    mask[30, 25] = True
    x, y = simulate.significant_peaks(image, mask)
    assert list(zip(x.tolist(), y.tolist())) == [(10, 10)]
