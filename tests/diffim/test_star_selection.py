"""Star selection on fields where galaxies outnumber the stars (issue #17, item 1).

The fields are built here: round Gaussian stars of one width among
elliptical galaxies of many sizes, on white noise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from astrid import Image
from astrid.diffim import PSFRequest, estimate_psf, find_stars
from astrid.diffim.pipeline import star_positions
from astrid.errors import AstridInputError, AstridWarning
from astrid.io import header_meta
from astrid.simulate import datasets

STAR_FWHM = 2.5
SIZE = 480


def _field(n_stars, n_galaxies, seed=0, star_fwhm=STAR_FWHM):
    """Image, star positions (n, 2) of a field of round stars among elliptical galaxies (noise sigma 1)."""
    return datasets.stars_among_galaxies(
        n_stars, n_galaxies, size=SIZE, star_fwhm=star_fwhm, seed=seed
    )


def test_locus_of_stars_under_more_numerous_galaxies():
    img, _ = _field(n_stars=14, n_galaxies=80, seed=1)
    stars = find_stars(img)
    # The field is meaningful: most significant sources are galaxies, much wider than the stars.
    widths = np.asarray(stars["fwhm"])[np.asarray(stars["snr"]) > 20]
    assert np.nanmedian(widths) > 1.5 * STAR_FWHM
    assert stars.meta["fwhm_source"] == "locus"
    assert stars.meta["stellar_locus"]
    assert stars.meta["fwhm"] == pytest.approx(STAR_FWHM, rel=0.1)
    model = estimate_psf(img, request=PSFRequest(min_stars=8))
    assert model.method == "empirical"
    assert model.stellar_locus is True
    # measure_fwhm sees the pixel-integrated Gaussian: sqrt(2.5² + 0.46) = 2.59 px.
    assert model.fwhm == pytest.approx(STAR_FWHM, rel=0.1)


def test_star_field_keeps_the_densest_cluster():
    img, _ = _field(n_stars=40, n_galaxies=10, seed=2)
    stars = find_stars(img)
    assert stars.meta["fwhm_source"] == "densest"
    assert stars.meta["stellar_locus"]
    assert stars.meta["locus_reason"] == ""
    assert stars.meta["fwhm"] == pytest.approx(STAR_FWHM, rel=0.1)


def test_galaxies_only_is_flagged_and_warned():
    img, _ = _field(n_stars=0, n_galaxies=90, seed=3)
    stars = find_stars(img)
    assert not stars.meta["stellar_locus"]
    assert "no stellar locus" in stars.meta["locus_reason"]
    with pytest.warns(AstridWarning, match="no stellar locus"):
        model = estimate_psf(img, request=PSFRequest(min_stars=3))
    assert model.stellar_locus is False
    assert "no stellar locus" in model.quality_note


def test_seeing_prior_picks_the_round_cluster_when_no_locus_is_found():
    # Four stars cannot form a locus on their own (five are needed) among elongated galaxies.
    img, _ = _field(n_stars=4, n_galaxies=80, seed=4)
    blind = find_stars(img)
    assert not blind.meta["stellar_locus"]
    stars = find_stars(img, seeing=STAR_FWHM)
    assert stars.meta["fwhm_source"] == "prior"
    assert stars.meta["stellar_locus"]
    assert stars.meta["fwhm"] == pytest.approx(STAR_FWHM, rel=0.15)


def test_wrong_seeing_prior_does_not_override_the_stars():
    img, _ = _field(n_stars=40, n_galaxies=10, seed=2)
    stars = find_stars(img, seeing=3.0 * STAR_FWHM)
    assert stars.meta["fwhm"] == pytest.approx(STAR_FWHM, rel=0.1)
    assert "disagrees with the expected (header) FWHM" in stars.meta["locus_reason"]


def test_known_star_positions_select_the_psf_stars():
    img, xy = _field(n_stars=4, n_galaxies=80, seed=4)
    model = estimate_psf(img, request=PSFRequest(min_stars=3), star_positions=xy)
    assert model.method == "empirical"
    assert 3 <= model.n_stars <= len(xy)  # one may be crowded by a galaxy
    assert model.fwhm == pytest.approx(STAR_FWHM, rel=0.1)
    assert "known star positions" in model.quality_note


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan")])
def test_seeing_must_be_positive(bad):
    img, _ = _field(n_stars=10, n_galaxies=0, seed=5)
    with pytest.raises(AstridInputError, match="seeing"):
        find_stars(img, seeing=bad)
    with pytest.raises(AstridInputError, match="seeing"):
        estimate_psf(img, seeing=bad)


def _wcs(scale_arcsec=0.5):
    return datasets.tan_wcs((SIZE, SIZE), scale_arcsec=scale_arcsec, crpix=(SIZE / 2, SIZE / 2))


def test_psf_stars_option_takes_sky_positions_and_pixel_tables():
    img, xy = _field(n_stars=4, n_galaxies=0, seed=6)
    wcs = _wcs()
    image = Image(data=img, wcs=wcs)
    sky = wcs.pixel_to_world(xy[:, 0], xy[:, 1])
    for catalogue in (
        sky,
        Table({"RA_ICRS": sky.ra.deg, "DE_ICRS": sky.dec.deg}),
        Table({"x": xy[:, 0], "y": xy[:, 1]}),
    ):
        assert np.allclose(star_positions(catalogue, image), xy, atol=1e-6)
    with pytest.raises(AstridInputError, match="psf_stars"):
        star_positions(Table({"mag": [1.0]}), image)
    with pytest.raises(AstridInputError, match="psf_stars"):
        star_positions([1, 2], image)
    with pytest.raises(AstridInputError, match="has none"):
        star_positions(SkyCoord([150.0], [2.0], unit="deg"), Image(data=img))


@pytest.mark.parametrize(
    "cards, expected",
    [
        ([("FWHM", 4.2, "")], 4.2),  # pixels (DECam)
        ([("SEEING", 1.241, "seeing FWHM [pixels]")], 1.241),  # pixels by its comment (ZTF)
        ([("SEEING", 1.5, "[arcsec] PSF FWHM")], 3.0),  # arcsec through the 0.5"/px WCS
        ([("PSF_FWHM", 3.3, "")], 3.3),
        ([], None),
    ],
)
def test_header_seeing_in_pixels(cards, expected):
    header = _wcs().to_header()
    for key, value, comment in cards:
        header[key] = (value, comment)
    seeing = header_meta(header).seeing_fwhm_pix
    if expected is None:
        assert seeing is None
    else:
        assert seeing == pytest.approx(expected, rel=1e-6)


def test_header_seeing_in_arcsec_without_wcs_uses_the_pixel_scale_key():
    header = fits.Header()
    header["SEEING"] = (2.0, "arcsec")
    assert header_meta(header).seeing_fwhm_pix is None
    header["PIXSCALE"] = 0.25
    assert header_meta(header).seeing_fwhm_pix == pytest.approx(8.0)


def test_difference_with_a_gaia_shaped_catalogue_builds_the_psf_from_the_stars():
    from astrid.diffim import difference

    img, xy = _field(n_stars=4, n_galaxies=80, seed=4)
    wcs = _wcs()
    rng = np.random.default_rng(8)
    reference = Image(data=img, wcs=wcs)
    science = Image(data=img + rng.normal(0.0, 1.0, img.shape), wcs=wcs)
    sky = wcs.pixel_to_world(xy[:, 0], xy[:, 1])
    # The columns astrid.acquire.gaia_stars returns (VizieR I/355/gaiadr3).
    gaia = Table(
        {
            "source_id": np.arange(len(xy)),
            "ra": sky.ra.deg,
            "dec": sky.dec.deg,
            "g_mag": np.full(len(xy), 17.0),
        }
    )
    with warnings.catch_warnings():
        # Galaxies cover much of this small field: S_corr's calibration is not what is tested here.
        warnings.simplefilter("ignore", AstridWarning)
        result = difference(reference, science, align=False, psf_stars=gaia, min_stars=3)
    for side in ("sci", "ref"):
        assert result.metrics[f"fwhm_{side}"] == pytest.approx(STAR_FWHM, rel=0.1)
        assert "known star positions" in result.metrics[f"psf_note_{side}"]
    assert not any(r.check.startswith("stellar_locus") for r in result.quality.checks)
