"""Pairing rules, filter normalisation and MAST queries through astroquery's real code (offline)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from astrid.acquire import (
    AstridArchiveError,
    check_reachable,
    find_pairs,
    load_sn_catalog,
    mast_products,
    normalise_filter,
    normalise_mission,
    query_mast,
    select_targets,
    standardise_observations,
)
from astrid.acquire.replay import ReplayServer, Reply, add_mast
from astrid.errors import AstridInputError

DATA = Path(__file__).parents[1] / "data" / "acquire"
T0 = Time("2014-01-21")


@pytest.fixture(autouse=True)
def no_astroquery_cache():
    astroquery = pytest.importorskip("astroquery")
    with astroquery.cache_conf.set_temp("cache_active", False):
        yield


def mast_server() -> ReplayServer:
    return add_mast(
        ReplayServer(),
        json.loads((DATA / "mast_observations.json").read_text()),
        json.loads((DATA / "mast_products.json").read_text()),
        columns_config=json.loads((DATA / "mast_columnsconfig_caom.json").read_text()),
        products_config=json.loads((DATA / "mast_columnsconfig_products.json").read_text()),
    )


def observations(rows) -> Table:
    """A MAST-like table from (obsid, mission, instrument, filter, days from discovery, exptime)."""
    table = Table(
        rows=rows,
        names=["obsid", "obs_collection", "instrument_name", "filters", "dt", "t_exptime"],
        dtype=[str, str, str, str, float, float],
    )
    table["t_min"] = T0.mjd + table["dt"]
    table["t_max"] = table["t_min"] + 0.01
    table["dataURL"] = [f"https://example.org/{o}.fits" for o in table["obsid"]]
    return table


def reasons(rejected: Table) -> dict[str, str]:
    return {str(r["obsid"]): str(r["reason"]) for r in rejected}


@pytest.mark.parametrize(
    "raw, mission, expected",
    [
        (" uvw1 ", "SWIFT", "UVW1"),
        ("UV W1", None, "UVW1"),
        ("uw1", "Swift", "UVW1"),
        ("W1", "SWIFT", "UVW1"),
        ("uvm2", "SWIFT", "UVM2"),
        ("UVW2", "SWIFT", "UVW2"),
        ("white", "SWIFT", "WHITE"),
        ("u", "SWIFT", "U"),
        ("V", "SWIFT", "V"),
        ("b ", "SWIFT", "B"),
        ("W1", "WISE", "W1"),
        ("F606W;CLEAR1L", "HST", "F606W"),
        ("", "SWIFT", None),
        (None, "SWIFT", None),
    ],
)
def test_filter_normalisation(raw, mission, expected):
    assert normalise_filter(raw, mission) == expected


def test_mission_normalisation():
    assert normalise_mission("swift") == "SWIFT"
    assert normalise_mission("Pan-STARRS") == "PS1"
    assert normalise_mission(" ") is None


def test_same_mission_instrument_filter_pairs_only():
    obs = observations(
        [
            ("r1", "SWIFT", "UVOT", "U", -800, 1000),
            ("r2", "SWIFT", "UVOT", "u", -500, 2000),  # same filter, other spelling
            ("near", "SWIFT", "UVOT", "U", -120, 1000),
            ("s1", "SWIFT", "UVOT", "U ", 5, 500),
            ("late", "SWIFT", "UVOT", "U", 90, 300),
            (
                "w1",
                "SWIFT",
                "UVOT",
                "UVW1",
                -700,
                900,
            ),  # a reference with science only in another filter
            ("m2", "SWIFT", "UVOT", "UVM2", 10, 900),
            ("ps1", "PS1", "GPC1", "U", -900, 30),  # same filter name, other mission
            ("span", "SWIFT", "UVOT", "U", -0.005, 100),
        ]
    )
    pairs, rejected = find_pairs(obs, T0, target="SN 2014J")
    assert sorted(zip(pairs["ref_obsid"], pairs["sci_obsid"])) == [("r1", "s1"), ("r2", "s1")]
    assert set(pairs["mission"]) == {"SWIFT"} and set(pairs["filter"]) == {"U"}
    assert set(pairs["target"]) == {"SN 2014J"}
    # the deepest reference first
    assert list(pairs["ref_obsid"]) == ["r2", "r1"]
    assert pairs["ref_days_before"][0] == pytest.approx(499.99, abs=0.02)
    assert pairs["sci_days_after"][0] == pytest.approx(5.0)

    why = reasons(rejected)
    assert set(why) == {"near", "late", "w1", "m2", "ps1", "span"}
    assert why["near"] == "reference too close to discovery (120.0 d < 365 d)"
    assert why["late"] == "science too late after discovery (90.0 d > 60 d)"
    assert why["w1"].startswith("no science epoch in the same mission/instrument/filter (UVW1)")
    assert "science only in U, UVM2" in why["w1"]
    assert why["m2"].startswith(
        "no reference (>= 365 d before discovery) epoch in the same mission/instrument/filter (UVM2)"
    )
    assert why["ps1"].startswith(
        "cross-mission: no science epoch in PS1/GPC1/U; science in U only from SWIFT/UVOT"
    )
    assert why["span"].startswith("spans the discovery date")
    roles = {str(r["obsid"]): str(r["role"]) for r in rejected}
    assert roles["near"] == "reference" and roles["late"] == "science"


def test_cross_mission_pairs_only_when_allowed():
    obs = observations(
        [("ref", "PS1", "GPC1", "g", -900, 30), ("sci", "ZTF", "ZTF-CAM", "g", 3, 30)]
    )
    pairs, rejected = find_pairs(obs, T0.mjd)
    assert len(pairs) == 0
    assert reasons(rejected)["ref"].startswith("cross-mission: no science epoch in PS1/GPC1/G")
    assert reasons(rejected)["sci"].startswith("cross-mission: no reference")
    pairs, rejected = find_pairs(obs, T0.mjd, require_same_mission=False)
    assert len(pairs) == 1 and len(rejected) == 0
    assert (
        pairs["mission"][0] == "PS1+ZTF"
        and pairs["ref_mission"][0] == "PS1"
        and pairs["sci_mission"][0] == "ZTF"
    )


def test_windows_max_per_type_and_requested_subsets():
    obs = observations(
        [(f"r{i}", "SWIFT", "UVOT", "U", -400 - i, 100 * (i + 1)) for i in range(5)]
        + [(f"s{i}", "SWIFT", "UVOT", "U", 1 + i, 100) for i in range(4)]
        + [("w2", "SWIFT", "UVOT", "UVW2", -700, 100), ("hst", "HST", "WFC3/UVIS", "F555W", 2, 100)]
    )
    pairs, rejected = find_pairs(obs, T0, max_per_type=2, missions=["swift"], filters=["u", "uvw1"])
    assert sorted(set(pairs["ref_obsid"])) == ["r3", "r4"]  # the two deepest
    assert sorted(set(pairs["sci_obsid"])) == ["s0", "s1"]  # the two earliest
    assert len(pairs) == 4  # every kept reference x every kept science
    why = reasons(rejected)
    assert why["r0"] == "surplus reference: kept the 2 deepest of 5 (max_per_type=2)"
    assert why["s3"] == "surplus science: kept the 2 earliest of 4 (max_per_type=2)"
    assert why["w2"] == "filter UVW2 not requested (U, UVW1)"
    assert why["hst"] == "mission HST not requested (SWIFT)"
    # windows: a 30-day reference gap pairs what 365 d refuses; a 1-day science window drops s1..s3
    pairs, _ = find_pairs(
        obs,
        T0,
        reference_min_days_before=30,
        science_max_days_after=1.5,
        max_per_type=None,
        filters=["U"],
    )
    assert set(pairs["sci_obsid"]) == {"s0"} and len(set(pairs["ref_obsid"])) == 5


def test_bad_arguments_are_clear():
    obs = observations([("a", "SWIFT", "UVOT", "U", -400, 100)])
    with pytest.raises(AstridInputError, match="max_per_type"):
        find_pairs(obs, T0, max_per_type=0)
    with pytest.raises(AstridInputError, match=">= 0"):
        find_pairs(obs, T0, reference_min_days_before=-1)
    with pytest.raises(AstridInputError, match="discovery_time"):
        find_pairs(obs, "yesterday")
    masked = Time(np.ma.MaskedArray([0.0], mask=[True]), format="mjd")[0]
    with pytest.raises(AstridInputError, match="masked"):
        find_pairs(obs, masked)
    # no observations at all is not an error: nothing to pair, nothing rejected
    pairs, rejected = find_pairs(obs[:0], T0)
    assert len(pairs) == 0 and len(rejected) == 0


def test_query_mast_then_pair_through_astroquery():
    """Observations.query_criteria runs for real; only the HTTP answers are recorded."""
    cat = load_sn_catalog(DATA / "targets.csv")
    sn = select_targets(cat, ["2011fe"])[0]
    with mast_server() as server:
        obs = query_mast(
            sn, missions=["SWIFT", "PS1", "GALEX"], radius=3 * u.arcmin, days_after=120
        )
    # the probe, the column configuration, the query
    assert server.count("mast.stsci.edu", method="HEAD") == 1
    assert server.count("Mast.Caom.Filtered.Position", method="POST") == 1
    query = next(r for r in server.log if "Mast.Caom.Filtered.Position" in r.text)
    payload = json.loads(query.form()["request"])
    windows = {f["paramName"]: f["values"] for f in payload["params"]["filters"]}
    assert windows["t_min"] == [{"min": 55797.0 - 3650, "max": 55797.0 + 120}]
    assert windows["obs_collection"] == ["SWIFT", "PS1", "GALEX"] and windows[
        "dataproduct_type"
    ] == ["image"]
    assert payload["params"]["position"].endswith(f"{(3 * u.arcmin).to_value(u.deg)}")

    assert len(obs) == 10 and set(obs["target"]) == {"SN 2011fe"}
    assert set(obs["mission"]) == {"SWIFT", "PS1", "GALEX"}
    assert obs["t_min"].unit == u.d and obs.meta["query"]["discovery_mjd"] == 55797.0
    pairs, rejected = find_pairs(obs, sn["discovery"], target="SN 2011fe")
    assert sorted(zip(pairs["ref_obsid"], pairs["sci_obsid"])) == [
        ("9001", "9004"),
        ("9001", "9005"),
        ("9002", "9004"),
        ("9002", "9005"),
    ]
    why = reasons(rejected)
    assert why["9003"].startswith("reference too close to discovery (117.0 d")
    assert why["9006"].startswith("science too late after discovery (103.0 d")
    assert why["9007"].startswith("no science epoch in the same mission/instrument/filter (UVW1)")
    assert why["9008"].startswith(
        "no reference (>= 365 d before discovery) epoch in the same mission/instrument/filter (UVM2)"
    )
    assert why["9009"].startswith("cross-mission") and why["9010"].startswith("cross-mission")

    # the archive applies the mission list itself: asking for SWIFT only leaves out PS1 and GALEX
    with mast_server():
        swift = query_mast(sn, missions=["SWIFT"], filters=["U"])
    assert set(swift["mission"]) == {"SWIFT"} and set(swift["filter"]) == {"U"}
    assert sorted(swift["obsid"]) == [
        "9001",
        "9002",
        "9003",
        "9004",
        "9005",
    ]  # 9006 is outside the 60-day window


def test_query_mast_from_a_position_and_nothing_found():
    with mast_server():
        empty = query_mast(SkyCoord(10 * u.deg, -40 * u.deg), discovery_time=Time("2012-03-16"))
    assert len(empty) == 0 and "obsid" in empty.colnames
    with pytest.raises(AstridInputError, match="discovery"):
        query_mast(SkyCoord(10 * u.deg, -40 * u.deg))
    with pytest.raises(AstridInputError, match="radius"):
        query_mast(
            SkyCoord(10 * u.deg, -40 * u.deg),
            discovery_time=55000.0,
            radius=-1 * u.arcmin,
            check_timeout=None,
        )


def test_mast_products_pick_the_science_image():
    with mast_server() as server:
        products = mast_products(["9001", "9009", "9101"])
    assert server.count('"service": "Mast.Caom.Products"') == 1
    assert set(products) == {"9001", "9009"}  # 9101 has no product: its dataURL is used instead
    assert (
        products["9001"]["filename"] == "sw00039001001uuu_sk.img.gz"
    )  # not the AUXILIARY exposure map
    assert products["9001"]["url"] == (
        "https://mast.stsci.edu/api/v0.1/Download/file?uri=mast:SWIFT/product/sw00039001001uuu_sk.img.gz"
    )


def test_mast_unreachable_fails_fast():
    """With the network down the probe fails in well under a second, before any query."""
    start = time.perf_counter()
    with (
        ReplayServer() as server,
        pytest.raises(
            AstridArchiveError, match=r"MAST is not reachable .*archive='simulated' or 'local'"
        ),
    ):
        query_mast(SkyCoord(10 * u.deg, 10 * u.deg), discovery_time=55000.0)
    assert time.perf_counter() - start < 2
    assert [r.method for r in server.log] == ["HEAD"]


def test_reachability_probe_reports_server_errors():
    with (
        ReplayServer().add("mast", Reply(status=503), method="HEAD"),
        pytest.raises(AstridArchiveError, match="HTTP 503"),
    ):
        check_reachable()
    with ReplayServer().add("mast", Reply(status=405), method="HEAD"):
        check_reachable()  # any answer below 500 means the host is up


def test_standardise_observations_keeps_a_standard_table():
    obs = observations([("a", "swift", "uvot", "uw1", -400, 100)])
    std = standardise_observations(obs, target="T")
    again = standardise_observations(std)
    assert (
        list(std["mission"]) == ["SWIFT"]
        and list(std["filter"]) == ["UVW1"]
        and list(std["filter_raw"]) == ["uw1"]
    )
    assert (
        list(again["filter"]) == ["UVW1"]
        and list(again["target"]) == ["T"]
        and again["size"][0] == -1
    )
