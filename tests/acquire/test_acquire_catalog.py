"""Supernova catalogues: the shared SAI file, hand-built SAI/CSV files, VizieR and Gaia through astroquery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from astrid.acquire import (
    AstridArchiveError,
    gaia_stars,
    load_sn_catalog,
    parse_dec,
    parse_ra,
    select_targets,
)
from astrid.acquire.replay import ReplayServer, Reply
from astrid.errors import AstridFileError, AstridInputError, AstridWarning
from astrid.paths import shared_data

DATA = Path(__file__).parents[1] / "data" / "acquire"

# SN 2014J in M82 (Fossey et al., CBET 3792): 09h55m42.14s +69d40m26.0s
SN2014J = SkyCoord("09h55m42.14s", "+69d40m26.0s")
# SN 2011fe in M101 (Nugent et al. 2011): 14h03m05.81s +54d16m25.4s
SN2011FE = SkyCoord("14h03m05.81s", "+54d16m25.4s")


@pytest.fixture(autouse=True)
def no_astroquery_cache():
    """Keep astroquery from writing answers into the user's cache during tests."""
    astroquery = pytest.importorskip("astroquery")
    with astroquery.cache_conf.set_temp("cache_active", False):
        yield


@pytest.fixture(scope="module")
def shared_catalog():
    path = shared_data("catalogs", "sncat_compiled.txt")
    if path is None:
        pytest.skip(
            "shared catalogue catalogs/sncat_compiled.txt is not present ($ASTRID_SHARED_DATA)"
        )
    return load_sn_catalog(path)


@pytest.mark.shared_data
def test_shared_catalogue_counts_and_known_supernovae(shared_catalog):
    cat = shared_catalog
    # 6,541 lines: a header, a separator and 6,539 supernovae; every position parses
    assert len(cat) == 6539
    assert cat.meta["n_read"] == 6539 and cat.meta["rejected"] == []
    assert cat.meta["columns"] == {
        "name": "sn_name",
        "ra": "sn_ra",
        "dec": "sn_dec",
        "discovery": "disc_date",
        "type": "sn_type",
        "host": "gal_name",
    }
    assert cat.meta["undated"] == 86 and int(np.sum(cat["discovery"].mask)) == 86
    assert len(set(cat["name"])) == len(cat)

    sn = select_targets(cat, ["SN 2014J", "sn2011fe"])
    assert list(sn["name"]) == ["2014J", "2011fe"]
    coords = SkyCoord(sn["ra"], sn["dec"])
    assert coords[0].separation(SN2014J) < 1 * u.arcsec
    assert coords[1].separation(SN2011FE) < 1 * u.arcsec
    assert list(sn["host"]) == ["NGC3034", "NGC5457"]  # M82, M101
    assert list(sn["type"]) == ["Ia", "Ia"]
    assert (
        str(sn["discovery"][0].iso)[:10] == "2014-01-21"
        and str(sn["discovery"][1].iso)[:10] == "2011-08-24"
    )
    assert abs(float(sn["discovery"][0].mjd) - Time("2014-01-21").mjd) < 1e-6

    # a southern position with the catalogue's space after the sign ("- 8 49 37.0")
    row = cat[cat["name"] == "2014dm"][0]
    assert row["dec"] == pytest.approx(-(8 + 49 / 60 + 37.0 / 3600))

    # SN 1006 and other historical supernovae load without ERFA warnings (TT scale)
    historical = select_targets(cat, years=(1000, 1700))
    assert len(historical) >= 3 and str(historical["discovery"].iso[0])[:2] in ("10", "15", "16")


@pytest.mark.shared_data
def test_shared_catalogue_selection_by_year_and_type(shared_catalog):
    ia = select_targets(shared_catalog, years=(2010, 2014), types=["Ia"])
    assert len(ia) > 0
    years = ia["discovery"].ymdhms["year"]
    assert np.all((np.asarray(years) >= 2010) & (np.asarray(years) <= 2014))
    assert all(str(t).startswith("Ia") for t in ia["type"])
    with pytest.raises(AstridInputError, match="not in catalogue"):
        select_targets(shared_catalog, ["2014J", "SN 1899zz"])


def test_pipe_file_rejects_bad_rows_with_reasons():
    with pytest.warns(AstridWarning, match=r"4 row\(s\) .* rejected"):
        cat = load_sn_catalog(DATA / "sai_sample.txt")
    assert list(cat["name"]) == ["2014J", "2011fe", "2005cs", "1954A", "2006X"]
    rejected = {r["name"]: r for r in cat.meta["rejected"]}
    assert set(rejected) == {"2099aa", "2099ab", "2099ac", "2099ad"}
    assert "hours must be in [0, 24)" in rejected["2099aa"]["reason"]
    assert "outside [-90, 90]" in rejected["2099ab"]["reason"]
    assert "sexagesimal" in rejected["2099ac"]["reason"]
    assert "expected 7 fields, found 4" in rejected["2099ad"]["reason"]
    assert rejected["2099aa"]["line"] == 7  # lines counted in the file, header = 1
    # an empty date and an impossible one (day 0) are unknown, not guessed
    assert cat.meta["undated"] == 2
    assert [d["name"] for d in cat.meta["date_unparsed"]] == ["1954A"]
    assert list(cat["discovery"].mask) == [False, False, True, True, False]
    assert select_targets(cat, ["2005cs"], require_discovery=False)["name"][0] == "2005cs"
    assert len(select_targets(cat, ["2005cs", "2014J"])) == 1  # undated rows cannot be paired


def test_csv_with_mixed_coordinate_and_date_forms():
    cat = load_sn_catalog(DATA / "targets.csv")
    assert list(cat["name"]) == ["SN 2011fe", "SN 2014J", "SN 2012aw"]
    assert SkyCoord(cat["ra"][0], cat["dec"][0], unit="deg").separation(SN2011FE) < 1 * u.arcsec
    # ISO date, MJD and JD all give the date
    assert [str(t)[:10] for t in cat["discovery"].iso] == ["2011-08-24", "2014-01-21", "2012-03-16"]
    assert cat["ra"].unit == u.deg


def test_ecsv_roundtrip_and_explicit_columns(tmp_path):
    table = Table(
        {"ident": ["a", "b"], "alpha": [10.0, 20.0], "delta": [-5.0, 5.0], "t0": [59000.0, np.nan]}
    )
    path = tmp_path / "mine.ecsv"
    table.write(path)
    with pytest.raises(AstridInputError, match="no column for name, ra, dec"):
        load_sn_catalog(path)
    cat = load_sn_catalog(
        path, columns={"name": "ident", "ra": "alpha", "dec": "delta", "discovery": "t0"}
    )
    assert list(cat["name"]) == ["a", "b"] and list(cat["discovery"].mask) == [False, True]
    out = tmp_path / "standard.ecsv"
    cat.write(out)
    back = load_sn_catalog(out)
    assert isinstance(back["discovery"], Time) and list(back["discovery"].mask) == [False, True]
    assert float(back["discovery"][0].mjd) == pytest.approx(59000.0)
    with pytest.raises(AstridInputError, match="no column 'nope'"):
        load_sn_catalog(path, columns={"name": "nope", "ra": "alpha", "dec": "delta"})


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(AstridFileError, match="does not exist"):
        load_sn_catalog(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(AstridFileError, match="empty"):
        load_sn_catalog(empty, format="pipe")
    with pytest.raises(AstridInputError, match="format must be"):
        load_sn_catalog(DATA / "targets.csv", format="fits")


@pytest.mark.parametrize(
    "text, degrees",
    [
        ("09 55 42.15", 148.925625),
        ("09:55:42.15", 148.925625),
        ("9h55m42.15s", 148.925625),
        ("148.925625", 148.925625),
        (148.925625, 148.925625),
    ],
)
def test_parse_ra_forms(text, degrees):
    assert parse_ra(text) == pytest.approx(degrees)


@pytest.mark.parametrize(
    "text, degrees",
    [
        ("+69 40 25.9", 69.67386111),
        ("- 0 32 47.1", -(32 / 60 + 47.1 / 3600)),
        ("-69:16:11.8", -69.26994444),
        ("-12.5", -12.5),
    ],
)
def test_parse_dec_forms(text, degrees):
    assert parse_dec(text) == pytest.approx(degrees)


@pytest.mark.parametrize("bad", ["24 00 00", "12 61 00", "", "abc", 400.0])
def test_parse_ra_rejects(bad):
    with pytest.raises(ValueError):
        parse_ra(bad)


def test_vizier_catalogue_through_astroquery():
    """load_sn_catalog('vizier:B/sn') runs astroquery.vizier's real request and VOTable parsing."""
    server = ReplayServer().add(
        "-source=B/sn", Reply(body=(DATA / "vizier_bsn.xml").read_bytes()), method="POST"
    )
    with server, pytest.warns(AstridWarning, match=r"2 row\(s\)"):
        cat = load_sn_catalog("vizier:B/sn")
    assert server.count("vizier.cds.unistra.fr/viz-bin/votable") == 1
    assert "-out.max=unlimited" in server.log[0].text
    assert cat.meta["source"] == "vizier:B/sn"
    assert list(cat["name"]) == ["2014J", "2011fe", "1987A"]
    assert SkyCoord(cat["ra"][:1], cat["dec"][:1])[0].separation(SN2014J) < 1 * u.arcsec
    assert cat["host"][0] == "NGC 3034" and str(cat["discovery"][2].iso)[:10] == "1987-02-24"
    reasons = {r["name"]: r["reason"] for r in cat.meta["rejected"]}
    assert "hours" in reasons["2099zz"] and reasons["2012aw"] == "Dec is empty"


def test_vizier_unreachable_is_a_clear_error():
    with ReplayServer(), pytest.raises(AstridArchiveError, match="VizieR is not reachable"):
        load_sn_catalog("vizier")


def test_gaia_stars_through_astroquery():
    server = ReplayServer().add(
        "-source=I/355/gaiadr3", Reply(body=(DATA / "vizier_gaiadr3.xml").read_bytes())
    )
    with server:
        stars = gaia_stars(SN2011FE, 2 * u.arcmin, mag_limit=19)
    request = server.log[0].text
    assert "Gmag=<19" in request and "-c.rm=2.0" in request
    assert list(stars.colnames) == ["source_id", "ra", "dec", "g_mag", "pmra", "pmdec", "parallax"]
    assert len(stars) == 3 and stars["ra"].unit == u.deg
    assert stars["parallax"].mask.tolist() == [False, True, True]
    with pytest.raises(AstridInputError, match="angle"):
        gaia_stars(SN2011FE, 2 * u.s)
