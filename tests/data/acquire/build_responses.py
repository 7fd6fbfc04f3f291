"""Write the hand-built archive answers used by tests/acquire/test_acquire_*.py.

The answers follow the formats of the real services (MAST's Mashup JSON with
``fields``/``data``/``paging``, MAST's columns-config JSON, VizieR VOTables,
SkyView's HTML form and result page) with a few invented but plausible
observations, so that the tests drive astroquery's real request and parsing
code offline. Run this script to regenerate them; the output is committed.

Observations (MJD; discovery of SN 2011fe 55797 = 2011-08-24, SN 2014J
56678 = 2014-01-21):

SN 2011fe (M101)
  9001  SWIFT UVOT U     55000  reference (797 d before), 1500 s
  9002  SWIFT UVOT U     55400  reference (397 d before),  800 s
  9003  SWIFT UVOT U     55680  too close to discovery (117 d)
  9004  SWIFT UVOT U     55800  science (+3 d)
  9005  SWIFT UVOT U     55810  science (+13 d)
  9006  SWIFT UVOT U     55900  too late (+103 d)
  9007  SWIFT UVOT UVW1  55100  reference without a UVW1 science epoch
  9008  SWIFT UVOT UVM2  55805  science without a UVM2 reference
  9009  PS1   GPC1 g     55200  cross-mission reference
  9010  GALEX GALEX NUV  55801  cross-mission science
SN 2014J (M82)
  9101  SWIFT UVOT U     56000  reference
  9102  SWIFT UVOT U     56680  science (+2 d)
  9103  SWIFT UVOT UVW1  55900  reference
  9104  SWIFT UVOT UVW1  56685  science (+7 d)
SN 2012aw: no observations at all.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

HERE = Path(__file__).parent

COLUMNS_CONFIG = {
    "obs_collection": {
        "text": "Mission",
        "separator": ";",
        "vot.datatype": "char",
        "vot.name": "obs_collection",
    },
    "instrument_name": {
        "text": "Instrument",
        "separator": ";",
        "vot.datatype": "char",
        "vot.name": "instrument_name",
    },
    "filters": {"text": "Filters", "separator": ";", "vot.datatype": "char", "vot.name": "filters"},
    "dataproduct_type": {
        "text": "Product Type",
        "vot.datatype": "char",
        "vot.name": "dataproduct_type",
    },
    "t_min": {
        "text": "Start Time",
        "isMjd": True,
        "vot.datatype": "double",
        "vot.name": "t_min",
        "unit": "MJD",
    },
    "t_max": {
        "text": "End Time",
        "isMjd": True,
        "vot.datatype": "double",
        "vot.name": "t_max",
        "unit": "MJD",
    },
    "t_exptime": {"text": "Exposure Length", "vot.datatype": "double", "vot.name": "t_exptime"},
    "target_name": {"text": "Target Name", "vot.datatype": "char", "vot.name": "target_name"},
}

PRODUCTS_CONFIG = {
    "productType": {"text": "Product Type", "vot.datatype": "char"},
    "size": {"text": "Size", "vot.datatype": "long"},
}

OBS_FIELDS = [
    ("dataproduct_type", "string"),
    ("calib_level", "int"),
    ("obs_collection", "string"),
    ("obs_id", "string"),
    ("target_name", "string"),
    ("s_ra", "float"),
    ("s_dec", "float"),
    ("t_min", "float"),
    ("t_max", "float"),
    ("t_exptime", "float"),
    ("filters", "string"),
    ("instrument_name", "string"),
    ("dataURL", "string"),
    ("obsid", "string"),
    ("distance", "float"),
]

TARGETS = {
    "2011fe": {"ra": 210.774208, "dec": 54.273722, "field": "M101"},
    "2014J": {"ra": 148.925625, "dec": 69.673861, "field": "M82"},
}

OBSERVATIONS = {
    "2011fe": [
        ("9001", "SWIFT", "UVOT", "U", 55000.0, 1500.0),
        ("9002", "SWIFT", "UVOT", "U", 55400.0, 800.0),
        ("9003", "SWIFT", "UVOT", "U", 55680.0, 1000.0),
        ("9004", "SWIFT", "UVOT", "U", 55800.0, 1000.0),
        ("9005", "SWIFT", "UVOT", "U", 55810.0, 900.0),
        ("9006", "SWIFT", "UVOT", "U", 55900.0, 900.0),
        ("9007", "SWIFT", "UVOT", "UVW1", 55100.0, 1200.0),
        ("9008", "SWIFT", "UVOT", "UVM2", 55805.0, 1200.0),
        ("9009", "PS1", "GPC1", "g", 55200.0, 45.0),
        ("9010", "GALEX", "GALEX", "NUV", 55801.0, 1600.0),
    ],
    "2014J": [
        ("9101", "SWIFT", "UVOT", "U", 56000.0, 1200.0),
        ("9102", "SWIFT", "UVOT", "U", 56680.0, 700.0),
        ("9103", "SWIFT", "UVOT", "UVW1", 55900.0, 1100.0),
        ("9104", "SWIFT", "UVOT", "UVW1", 56685.0, 700.0),
    ],
}

_UVOT_CODE = {"U": "uuu", "UVW1": "uw1", "UVM2": "um2"}


def _filename(obsid: str, mission: str, filt: str) -> str:
    if mission == "SWIFT":
        return f"sw0003{obsid}001{_UVOT_CODE[filt]}_sk.img.gz"
    return f"{mission.lower()}_{obsid}_{filt.lower()}.fits.gz"


def data_url(obsid: str, mission: str, filt: str) -> str:
    return f"https://mast.stsci.edu/api/v0.1/Download/file?uri=mast:{mission}/product/{_filename(obsid, mission, filt)}"


def observation_rows(target: str) -> list[dict]:
    info = TARGETS[target]
    rows = []
    for obsid, mission, instrument, filt, t_min, exptime in OBSERVATIONS[target]:
        rows.append(
            {
                "dataproduct_type": "image",
                "calib_level": 2,
                "obs_collection": mission,
                "obs_id": f"0003{obsid}001",
                "target_name": info["field"],
                "s_ra": info["ra"] + 0.001,
                "s_dec": info["dec"] - 0.001,
                "t_min": t_min,
                "t_max": t_min + 0.02,
                "t_exptime": exptime,
                "filters": filt,
                "instrument_name": instrument,
                "dataURL": data_url(obsid, mission, filt),
                "obsid": obsid,
                "distance": 0.0,
            }
        )
    return rows


def mashup(rows: list[dict], fields) -> dict:
    return {
        "status": "COMPLETE",
        "msg": "",
        "fields": [{"name": n, "type": t} for n, t in fields],
        "data": rows,
        "paging": {
            "page": 1,
            "pageSize": 50000,
            "pagesFiltered": 1,
            "rows": len(rows),
            "rowsFiltered": len(rows),
            "rowsTotal": len(rows),
        },
    }


def product_rows() -> list[dict]:
    """Science products of the SN 2011fe observations (SN 2014J has none: its dataURL is used)."""
    rows = []
    for obsid, mission, instrument, filt, t_min, exptime in OBSERVATIONS["2011fe"]:
        name = _filename(obsid, mission, filt)
        rows.append(
            {
                "obsID": obsid,
                "parent_obsid": obsid,
                "obs_collection": mission,
                "dataproduct_type": "image",
                "productType": "SCIENCE",
                "productSubGroupDescription": "SK" if mission == "SWIFT" else "INT",
                "dataURI": f"mast:{mission}/product/{name}",
                "productFilename": name,
                "calib_level": 2,
                "size": -1,
                "description": "sky image",
            }
        )
        # an auxiliary product that must never be chosen
        rows.append(
            {
                "obsID": obsid,
                "parent_obsid": obsid,
                "obs_collection": mission,
                "dataproduct_type": "image",
                "productType": "AUXILIARY",
                "productSubGroupDescription": "EX",
                "dataURI": f"mast:{mission}/product/{name.replace('_sk', '_ex')}",
                "productFilename": name.replace("_sk", "_ex"),
                "calib_level": 1,
                "size": -1,
                "description": "exposure map",
            }
        )
    return rows


PRODUCT_FIELDS = [
    ("obsID", "string"),
    ("parent_obsid", "string"),
    ("obs_collection", "string"),
    ("dataproduct_type", "string"),
    ("productType", "string"),
    ("productSubGroupDescription", "string"),
    ("dataURI", "string"),
    ("productFilename", "string"),
    ("calib_level", "int"),
    ("size", "int"),
    ("description", "string"),
]

VIZIER_BSN = """<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
 <DESCRIPTION>Hand-built answer in the form of VizieR's, for offline tests</DESCRIPTION>
 <RESOURCE ID="yCat_B_sn" name="B/sn">
  <DESCRIPTION>Asiago Supernova Catalogue (Barbon et al., 1999-)</DESCRIPTION>
  <COOSYS ID="H_2000.000" system="ICRS"/>
  <TABLE ID="B_sn_sncat" name="B/sn/sncat">
   <FIELD name="SN" ucd="meta.id;meta.main" datatype="char" arraysize="12*"/>
   <FIELD name="Galaxy" ucd="meta.id" datatype="char" arraysize="20*"/>
   <FIELD name="RAJ2000" ucd="pos.eq.ra;meta.main" datatype="char" arraysize="11" unit="&quot;h:m:s&quot;"/>
   <FIELD name="DEJ2000" ucd="pos.eq.dec;meta.main" datatype="char" arraysize="11" unit="&quot;d:m:s&quot;"/>
   <FIELD name="Type" ucd="src.spType" datatype="char" arraysize="8*"/>
   <FIELD name="Date" ucd="time.epoch" datatype="char" arraysize="10" unit="&quot;Y:M:D&quot;"/>
   <DATA><TABLEDATA>
    <TR><TD>2014J</TD><TD>NGC 3034</TD><TD>09 55 42.14</TD><TD>+69 40 26.0</TD><TD>Ia</TD><TD>2014-01-21</TD></TR>
    <TR><TD>2011fe</TD><TD>NGC 5457</TD><TD>14 03 05.81</TD><TD>+54 16 25.4</TD><TD>Ia</TD><TD>2011-08-24</TD></TR>
    <TR><TD>1987A</TD><TD>LMC</TD><TD>05 35 28.03</TD><TD>-69 16 11.8</TD><TD>IIpec</TD><TD>1987-02-24</TD></TR>
    <TR><TD>2099zz</TD><TD>BROKEN</TD><TD>25 00 00.0</TD><TD>+10 00 00</TD><TD>Ia</TD><TD>2099-01-01</TD></TR>
    <TR><TD>2012aw</TD><TD>NGC 3351</TD><TD>10 43 53.76</TD><TD></TD><TD>IIP</TD><TD>2012-03-16</TD></TR>
   </TABLEDATA></DATA>
  </TABLE>
 </RESOURCE>
</VOTABLE>
"""

VIZIER_GAIA = """<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
 <DESCRIPTION>Hand-built answer in the form of VizieR's, for offline tests</DESCRIPTION>
 <RESOURCE ID="yCat_1355" name="I/355">
  <TABLE ID="I_355_gaiadr3" name="I/355/gaiadr3">
   <FIELD name="Source" ucd="meta.id;meta.main" datatype="long"/>
   <FIELD name="RA_ICRS" ucd="pos.eq.ra;meta.main" datatype="double" unit="deg"/>
   <FIELD name="DE_ICRS" ucd="pos.eq.dec;meta.main" datatype="double" unit="deg"/>
   <FIELD name="Gmag" ucd="phot.mag;em.opt" datatype="double" unit="mag"/>
   <FIELD name="pmRA" ucd="pos.pm;pos.eq.ra" datatype="double" unit="mas/yr"/>
   <FIELD name="pmDE" ucd="pos.pm;pos.eq.dec" datatype="double" unit="mas/yr"/>
   <FIELD name="Plx" ucd="pos.parallax.trig" datatype="double" unit="mas"/>
   <DATA><TABLEDATA>
    <TR><TD>1563594493254785920</TD><TD>210.7701</TD><TD>54.2699</TD><TD>15.21</TD><TD>-3.1</TD><TD>1.2</TD><TD>0.45</TD></TR>
    <TR><TD>1563594493254785921</TD><TD>210.7812</TD><TD>54.2781</TD><TD>17.80</TD><TD>0.4</TD><TD>-2.0</TD><TD></TD></TR>
    <TR><TD>1563594493254785922</TD><TD>210.7655</TD><TD>54.2667</TD><TD>18.93</TD><TD></TD><TD></TD><TD></TD></TR>
   </TABLEDATA></DATA>
  </TABLE>
 </RESOURCE>
</VOTABLE>
"""

SKYVIEW_FORM = """<html><head><title>SkyView Query Form (hand-built for tests)</title></head><body>
<form method="get" action="runquery.pl" name="form1">
 <input type="text" name="Position" value="">
 <select name="survey" id="dss" multiple><option>DSS</option><option>DSS2 Red</option><option>DSS2 Blue</option></select>
 <select name="survey" id="sdss" multiple><option>SDSSg</option><option>SDSSr</option></select>
 <input type="text" name="pixels" value="300">
 <select name="Sampler"><option selected value="LI">LI</option><option>NN</option></select>
 <input type="submit" value="Submit Request">
</form></body></html>
"""

SKYVIEW_RESULTS = """<html><body><h1>SkyView results (hand-built for tests)</h1>
<table>
<tr><td>DSS2 Red</td><td><a href="../../tempspace/fits/skv4242_1.fits">FITS</a></td><td><a href="../../tempspace/fits/skv4242_1.jpg">JPEG</a></td></tr>
</table></body></html>
"""

SAI_SAMPLE = """ sn_name | gal_name | disc_date | sn_type | sn_ra | sn_dec | max_date
---------+----------+-----------+---------+-------+--------+---------
2014J | NGC3034 | 2014-01-21 | Ia | 09 55 42.15 | +69 40 25.9 |
2011fe | NGC5457 | 2011-08-24 | Ia | 14 03 05.81 | +54 16 25.4 |
2005cs | NGC5194 |  | IIP | 13 29 52.78 | +47 10 35.7 |
1954A | NGC4214 | 1954-00-00 | Ib | 12 15 37.90 | +36 19 41.0 |
2099aa | NOWHERE | 2099-01-01 | Ia | 24 10 00.00 | +10 00 00.0 |
2099ab | NOWHERE | 2099-01-01 | Ia | 10 10 00.00 | +95 00 00.0 |
2099ac | NOWHERE | 2099-01-01 | Ia | ten past ten | +10 00 00.0 |
2099ad | TOO | FEW | FIELDS
2006X | NGC4321 | 2006-02-04 | Ia | 12 22 53.99 | +15 48 33.1 |
"""

TARGETS_CSV = [
    {
        "name": "SN 2011fe",
        "ra": "14:03:05.81",
        "dec": "+54:16:25.4",
        "discovery_date": "2011-08-24",
        "type": "Ia",
        "host": "M101",
    },
    {
        "name": "SN 2014J",
        "ra": "148.925625",
        "dec": "69.673861",
        "discovery_date": "56678",
        "type": "Ia",
        "host": "M82",
    },
    {
        "name": "SN 2012aw",
        "ra": "160.974",
        "dec": "11.671",
        "discovery_date": "2456002.5",
        "type": "IIP",
        "host": "M95",
    },
]


def main() -> None:
    (HERE / "mast_columnsconfig_caom.json").write_text(json.dumps(COLUMNS_CONFIG, indent=1))
    (HERE / "mast_columnsconfig_products.json").write_text(json.dumps(PRODUCTS_CONFIG, indent=1))
    rows = [row for target in TARGETS for row in observation_rows(target)]
    (HERE / "mast_observations.json").write_text(json.dumps(mashup(rows, OBS_FIELDS), indent=1))
    (HERE / "mast_products.json").write_text(
        json.dumps(mashup(product_rows(), PRODUCT_FIELDS), indent=1)
    )
    (HERE / "vizier_bsn.xml").write_text(VIZIER_BSN)
    (HERE / "vizier_gaiadr3.xml").write_text(VIZIER_GAIA)
    (HERE / "skyview_form.html").write_text(SKYVIEW_FORM)
    (HERE / "skyview_results.html").write_text(SKYVIEW_RESULTS)
    (HERE / "sai_sample.txt").write_text(SAI_SAMPLE)
    with open(HERE / "targets.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(TARGETS_CSV[0]))
        writer.writeheader()
        writer.writerows(TARGETS_CSV)


if __name__ == "__main__":
    main()
