"""Injection of point sources into images and stamps (astrid.inject)."""

from __future__ import annotations

import numpy as np
import pytest

import astrid
from astrid.errors import AstridInputError, AstridWarning
from astrid.inject import inject_into_stamps, inject_sources, match_injections


@pytest.fixture(scope="module")
def pair():
    # A clean pair: no transients, no artifacts, so every detection near an injection is the injection.
    return astrid.simulate.pair(size=1024, seed=3, n_supernovae=0, n_variables=0, artifacts=False)


def test_injected_sources_are_recovered_with_fluxes_within_their_errors(pair):
    injection = inject_sources(pair.science, n=12, snr=(15.0, 60.0), seed=1)
    result = astrid.difference(pair.reference, injection.image)
    candidates = astrid.detect(result, threshold=5.0)
    matched = match_injections(injection.truth, candidates, result=result)
    assert matched["recovered"].all()
    pulls = np.asarray(matched["pull"])
    # ZOGY's flux error plus its few-per-cent systematic term: pulls of order one, no bias.
    assert np.all(np.abs(pulls) < 4.0)
    assert abs(np.median(pulls)) < 1.0
    # the S/N the sources were given is the S/N the difference sees, to within the noise
    ratio = np.asarray(matched["S_corr"]) / np.asarray(matched["snr"])
    assert 0.7 < np.median(ratio) < 1.3


def test_the_injected_psf_is_the_images_own(pair):
    injection = inject_sources(pair.science, n=5, seed=2)
    assert injection.psf.method == "empirical"
    measured = astrid.estimate_psf(pair.science.data, pair.science.mask).fwhm
    assert injection.psf.fwhm == pytest.approx(measured, rel=1e-6)
    assert injection.truth.meta["psf_fwhm"] == pytest.approx(injection.psf.fwhm)
    # the added light has the PSF's shape: its second moment matches the PSF's
    added = injection.image.data.astype(float) - pair.science.data.astype(float)
    row = injection.truth[int(np.argmax(injection.truth["snr"]))]
    ix, iy = int(round(row["x"])), int(round(row["y"]))
    half = injection.psf.psf.shape[0] // 2
    cut = added[iy - half : iy + half + 1, ix - half : ix + half + 1]
    assert cut.sum() == pytest.approx(
        row["flux"], rel=0.15
    )  # Poisson noise of the added light only


def test_truth_tables_are_complete_and_reproducible(pair):
    first = inject_sources(pair.science, n=8, snr=10.0, seed=5)
    again = inject_sources(pair.science, n=8, snr=10.0, seed=5)
    other = inject_sources(pair.science, n=8, snr=10.0, seed=6)
    truth = first.truth
    assert len(truth) == 8 and list(truth["id"]) == list(range(8))
    for name in (
        "x",
        "y",
        "ra",
        "dec",
        "flux",
        "snr",
        "peak",
        "placement",
        "host_id",
        "host_offset",
        "kind",
    ):
        assert name in truth.colnames
    assert np.all(np.isfinite(truth["flux"])) and np.all(truth["flux"] > 0)
    assert np.allclose(truth["snr"], 10.0)
    assert truth.meta["seed"] == 5 and truth.meta["poisson_noise"] is True
    np.testing.assert_array_equal(first.image.data, again.image.data)
    assert not np.array_equal(first.truth["x"], other.truth["x"])
    # the input image is not changed, the output's header says what was done
    assert not np.shares_memory(first.image.data, pair.science.data)
    assert "inject_sources" in str(first.image.header.get("HISTORY", ""))


def test_sources_near_galaxies_and_on_cores(pair):
    near = inject_sources(pair.science, n=4, placement="galaxies", seed=2)
    cores = inject_sources(pair.science, n=4, placement="cores", seed=2)
    assert len(near.galaxies) >= 4
    for injection in (near, cores):
        assert np.all(injection.truth["host_id"] >= 0)
        hosts = injection.galaxies[np.asarray(injection.truth["host_id"])]
        distance = np.hypot(injection.truth["x"] - hosts["x"], injection.truth["y"] - hosts["y"])
        np.testing.assert_allclose(distance, injection.truth["host_offset"], atol=1e-9)
    assert np.all(cores.truth["host_offset"] <= 0.3 * cores.psf.fwhm + 1e-9)
    assert np.median(near.truth["host_offset"]) > np.median(cores.truth["host_offset"])


def test_bad_inputs_are_refused_with_clear_errors(pair):
    image = pair.science
    with pytest.raises(AstridInputError, match=r"positions\[1\].*off the image"):
        inject_sources(image, positions=[(500.0, 500.0), (5000.0, 10.0)])
    masked = astrid.Image(
        image.data, wcs=image.wcs, mask=np.zeros(image.data.shape, bool), meta=image.meta
    )
    masked.mask[490:510, 490:510] = True
    with pytest.raises(AstridInputError, match=r"positions\[0\].*masked"):
        inject_sources(masked, positions=[(500.0, 500.0)])
    blank = astrid.Image(np.random.default_rng(0).normal(100.0, 5.0, (256, 256)), meta=image.meta)
    with pytest.raises(AstridInputError, match="no PSF stars"):
        inject_sources(blank, n=3)
    with pytest.raises(AstridInputError, match="placement"):
        inject_sources(image, placement="everywhere")
    with pytest.raises(AstridInputError, match="snr"):
        inject_sources(image, snr=(20.0, 5.0))
    with pytest.raises(AstridInputError, match="must be an astrid.Image"):
        inject_sources(np.zeros((64, 64)))


def test_a_given_psf_and_no_gain(pair):
    psf = astrid.gaussian_psf(3.0, size=25)
    image = astrid.Image(pair.science.data, wcs=pair.science.wcs, mask=pair.science.mask)  # no GAIN
    with pytest.warns(AstridWarning, match="no gain"):
        injection = inject_sources(image, n=3, psf=psf, seed=0)
    assert injection.psf.method == "given"
    assert injection.truth.meta["poisson_noise"] is False
    added = injection.image.data.astype(float) - image.data.astype(float)
    assert added.min() >= -1e-3 * added.max()  # noiseless: only light added (and float32 rounding)


def test_stamps_get_a_source_in_science_and_difference_only():
    from astrid.triplets import new_triplet_dataset

    rng = np.random.default_rng(0)
    stamps = rng.normal(0.0, 10.0, (4, 63, 63, 3)).astype(np.float32)
    stamps[0, :5, :, :] = np.nan  # a CCD edge
    triplets = new_triplet_dataset(stamps, coords={"candidate_id": [f"c{k}" for k in range(4)]})
    triplets = triplets.assign_coords(fwhm=("candidate", np.array([2.0, 2.5, 3.0, np.nan])))
    with pytest.raises(AstridInputError, match="fwhm"):
        inject_into_stamps(triplets, gain=5.0)
    out = inject_into_stamps(triplets, snr=30.0, fwhm=2.8, gain=5.0, seed=1)
    added = out["triplets"].values.astype(float) - triplets["triplets"].values.astype(float)
    assert np.all(np.nan_to_num(added[..., 1]) == 0)  # the reference is untouched
    centre = added[:, 31, 31, :]
    assert np.all(centre[:, 0] > 0) and np.all(centre[:, 2] > 0)
    np.testing.assert_array_equal(
        np.isnan(out["triplets"].values), np.isnan(triplets["triplets"].values)
    )
    assert list(out["label"].values) == [1, 1, 1, 1] and set(out["kind"].values) == {"injected"}
    np.testing.assert_allclose(out["injected_snr"].values, 30.0)
    # with the source's own photon noise, a brighter source is needed for the same S/N
    faint_gain = inject_into_stamps(triplets, snr=30.0, fwhm=2.8, gain=1e9, seed=1)
    assert np.all(out["injected_flux"].values > faint_gain["injected_flux"].values)
    # background-limited: S/N 30 on a noise of 10 with a Gaussian of FWHM 3 px, F = 30 * 10 * sqrt(4 pi) sigma
    sigma = 3.0 / 2.3548
    assert faint_gain["injected_flux"].values[2] == pytest.approx(
        30 * 10 * np.sqrt(4 * np.pi) * sigma, rel=0.1
    )


def test_triplets_on_real_backgrounds_have_every_kind_and_keep_the_backgrounds_holes():
    from astrid.inject import BACKGROUND_KINDS, triplets_on_real_backgrounds
    from astrid.triplets import new_triplet_dataset

    rng = np.random.default_rng(3)
    stamps = rng.normal(100.0, 2.0, (5, 63, 63, 3)).astype(np.float32)
    stamps[0, :, :4, :] = np.nan  # a CCD edge in one background
    stamps[1, 10, 10, 1] = np.float32(3.4e38)  # ZTF's no-data fill
    backgrounds = new_triplet_dataset(
        stamps,
        coords={
            "candidate_id": [f"b{k}" for k in range(5)],
            "objectId": [f"ZTF{k}" for k in range(5)],
        },
    )
    out = triplets_on_real_backgrounds(backgrounds, 400, seed=2)
    again = triplets_on_real_backgrounds(backgrounds, 400, seed=2)
    np.testing.assert_array_equal(out["triplets"].values, again["triplets"].values)
    assert set(out["kind"].values) == set(BACKGROUND_KINDS)
    real = np.isin(out["kind"].values, ["brightening", "fading"])
    np.testing.assert_array_equal(out["label"].values, real.astype(np.int8))
    assert 0.4 < real.mean() < 0.6
    assert np.nanmax(np.abs(out["triplets"].values)) < 1e10
    # a real source sits at the centre of the difference, positive for fading ones too (ZTF's convention)
    values = out["triplets"].values
    centre = values[:, 30:33, 30:33, 2].max(axis=(1, 2))
    noise = np.nanstd(values[:, :, :, 2], axis=(1, 2))
    assert np.all(centre[real] > 2.0 * noise[real])
    # the background with an edge passes its NaNs to every channel of the triplets built on it
    edged = np.flatnonzero(out["background"].values == 0)
    assert edged.size and all(np.isnan(values[i]).any() for i in edged)
    assert set(out["field"].values) <= {f"ZTF{k}" for k in range(5)}
    with pytest.raises(AstridInputError, match="n="):
        triplets_on_real_backgrounds(backgrounds, 0)


def test_reference_cutouts_centre_on_sources_and_fill_what_they_are_told(pair):
    from astrid.inject import reference_cutouts, triplets_on_real_backgrounds

    image = pair.science
    fill = np.zeros(image.data.shape, dtype=bool)
    fill[500:503, 600] = True  # a short "radiation hit" to fill from its neighbours
    cutouts = reference_cutouts(image, 30, fill=fill, seed=4)
    again = reference_cutouts(image, 30, fill=fill, seed=4)
    np.testing.assert_array_equal(cutouts["triplets"].values, again["triplets"].values)
    assert cutouts.sizes["candidate"] == 30
    # the width recorded is the image's own PSF's
    assert cutouts["fwhm"].values[0] == pytest.approx(astrid.estimate_psf(image).fwhm, rel=1e-6)
    # two thirds sit on a source: their centre is the brightest pixel around it
    stamps = cutouts["triplets"].values[..., 1]
    centre = stamps[:, 29:34, 29:34].max(axis=(1, 2))
    sky = np.nanmedian(stamps, axis=(1, 2))
    noise = np.nanstd(image.data[:200, :200])
    assert np.sum(centre - sky > 10 * noise) >= 20
    x, y = cutouts["xpos"].values.astype(int), cutouts["ypos"].values.astype(int)
    np.testing.assert_allclose(stamps[:, 31, 31], image.data[y, x], rtol=1e-6)
    # filled pixels take their neighbours' level, not their own value
    hit = reference_cutouts(image, 1, fill=fill, source_fraction=0.0, seed=4)
    assert np.isfinite(hit["triplets"].values).all()
    # masked pixels are NaN in the stamps, unless the mask is not used
    offsets = np.arange(-31, 32)
    from dataclasses import replace

    mask = np.zeros(image.data.shape, dtype=bool)
    mask[y[-1] - 2 : y[-1] + 3, x[-1] - 2 : x[-1] + 3] = True  # in the sky of a random cutout
    flagged = replace(image, mask=mask)
    with_mask = reference_cutouts(flagged, 30, fill=fill, seed=4)["triplets"].values
    assert np.isnan(with_mask[-1, 29:34, 29:34]).all()
    covered = mask[y[:, None, None] + offsets[:, None], x[:, None, None] + offsets[None, :]]
    np.testing.assert_array_equal(np.isnan(with_mask[..., 1]), covered)
    kept = reference_cutouts(flagged, 30, fill=fill, use_mask=False, seed=4)["triplets"].values
    np.testing.assert_array_equal(kept, cutouts["triplets"].values)
    # they are backgrounds for triplets as they are
    out = triplets_on_real_backgrounds(
        cutouts, 20, seed=1, seeing_ratio=(1.0, 1.5), profile="moffat"
    )
    assert out.sizes["candidate"] == 20 and np.isfinite(out["triplets"].values).all()
    with pytest.raises(AstridInputError, match="fill"):
        reference_cutouts(image, 5, fill=fill[:10])
    with pytest.raises(AstridInputError, match="n="):
        reference_cutouts(image, 0)
    with pytest.raises(AstridInputError, match="no source"):
        reference_cutouts(image, 5, min_sigma=1e9)


def test_a_science_epoch_broader_than_its_reference_is_subtracted_cleanly():
    from astrid.inject import triplets_on_real_backgrounds
    from astrid.triplets import new_triplet_dataset

    # a reference with one bright star: the science sees it broader, the difference must not
    yy, xx = np.mgrid[0:63, 0:63]
    star = 5000.0 * np.exp(-0.5 * ((xx - 31) ** 2 + (yy - 31) ** 2) / 1.0**2)
    sky = 100.0 + np.random.default_rng(0).normal(0.0, 1.0, star.shape)
    stamps = np.repeat((sky + star)[None, ..., None], 3, axis=-1).astype(np.float32)
    backgrounds = new_triplet_dataset(stamps, coords={"fwhm": [2.35]})
    out = triplets_on_real_backgrounds(
        backgrounds, 60, seed=3, seeing_ratio=(1.5, 1.5), noise_ratio=(1.0, 1.0)
    )
    values = out["triplets"].values
    kinds = out["kind"].values
    clean = np.isin(kinds, ["hot_pixel", "nothing"])
    assert clean.any()
    # the science's star is broader (lower peak, same total), the difference holds no trace of it
    sci, ref = values[clean, :, :, 0], values[clean, :, :, 1]
    assert np.all(sci[:, 31, 31] < 0.7 * ref[:, 31, 31])
    ring = np.hypot(xx - 31, yy - 31) > 4
    noise = np.std(values[clean][:, ring, 2], axis=1)
    assert np.all(noise < 3.0)  # the science's unit noise, no residual of a 5000-count star
    with pytest.raises(AstridInputError, match="seeing_ratio"):
        triplets_on_real_backgrounds(backgrounds, 5, seeing_ratio=(0.5, 1.0))
    with pytest.raises(AstridInputError, match="profile"):
        triplets_on_real_backgrounds(backgrounds, 5, profile="airy")


def test_triplets_on_real_backgrounds_can_keep_only_what_a_detection_would_find():
    from astrid.inject import triplets_on_real_backgrounds
    from astrid.realism import stamp_statistics
    from astrid.triplets import new_triplet_dataset

    rng = np.random.default_rng(5)
    stamps = rng.normal(100.0, 2.0, (5, 63, 63, 3)).astype(np.float32)
    backgrounds = new_triplet_dataset(stamps)
    out = triplets_on_real_backgrounds(backgrounds, 200, seed=2, min_significance=5.0)
    assert "nothing" not in set(out["kind"].values)
    centre = np.asarray(stamp_statistics(out)["centre_sigma_difference"])
    assert np.mean(centre >= 5.0) > 0.95  # a few may stay below after 20 draws
    every = triplets_on_real_backgrounds(backgrounds, 200, seed=2)
    every_centre = np.asarray(stamp_statistics(every)["centre_sigma_difference"])
    assert np.mean(every_centre < 5.0) > 0.1


def test_shared_ztf_backgrounds_are_whole_and_hold_no_scored_alert():
    from astrid.inject import shared_ztf_backgrounds
    from astrid.paths import shared_data

    if shared_data("ztf_alerts") is None or shared_data("images", "ztf_quadrant") is None:
        pytest.skip("shared ZTF alerts and quadrant (../shared/data) are not present")
    alerts = astrid.read_ztf(shared_data("ztf_alerts"))
    unscored = set(alerts["candidate_id"].values[~np.isfinite(alerts["drb"].values.astype(float))])
    backgrounds = shared_ztf_backgrounds(50, seed=1)
    ids = list(backgrounds["candidate_id"].values)
    cutouts = [i for i in ids if "cutout" in i]
    assert len(cutouts) == 50 and set(ids) - set(cutouts) == unscored
    quadrant = backgrounds.isel(candidate=[ids.index(i) for i in cutouts])
    assert np.isfinite(quadrant["triplets"].values).all()  # kept whole, as a co-added reference
    assert 1.0 < float(quadrant["fwhm"].values[0]) < 4.0
