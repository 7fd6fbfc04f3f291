"""Alert packets of other surveys and every Avro codec (astrid.alerts.read_alerts / read_ztf).

Every packet here is hand-built with fastavro from schemas that follow the
surveys' published field names (ZTF ``ztf.alert``, Gattini-IR ``pgir.alert``,
WINTER ``winter.alert`` from mirar, DECam ``decat`` objects with a
``triggersource``, ATLAS ``atlas.alert``), with only the fields the reader uses.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits

from astrid.alerts import AVRO_CODECS, SURVEYS, read_alerts, read_ztf
from astrid.errors import AstridFileError, AstridInputError, AstridWarning
from astrid.schema import CHANNELS, STAMP_SIZE, new_triplet_dataset, validate_triplets

fastavro = pytest.importorskip("fastavro")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _fits(data: np.ndarray, gz: bool = True) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(data).writeto(buffer)
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def _stamps(seed: int, shape=(STAMP_SIZE, STAMP_SIZE)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(100.0 * (c + 1), 5.0, size=shape).astype(np.float32) for c in range(3)]


def _write(path, schema, records, codec="null"):
    with open(path, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), records, codec=codec)
    return path


def _available(codec: str) -> bool:
    from fastavro.read import BLOCK_READERS

    reader = BLOCK_READERS.get(codec)
    return reader is not None and getattr(reader, "__name__", "") != "missing"


# --------------------------------------------------------------------------
# schemas (field names as the surveys publish them; a subset of the fields)

_ZTF_CUTOUT = {
    "type": "record",
    "name": "cutout",
    "namespace": "ztf.alert",
    "fields": [{"name": "fileName", "type": "string"}, {"name": "stampData", "type": "bytes"}],
}


def _ztf_family_schema(namespace: str, *, object_key="objectId", bare_cutouts=False, winter=False):
    cutout = (
        "bytes" if bare_cutouts else ["null", {**_ZTF_CUTOUT, "namespace": f"{namespace}.alert"}]
    )
    later = "bytes" if bare_cutouts else ["null", f"{namespace}.alert.cutout"]
    candidate_fields = [
        {"name": "candid", "type": "long"},
        {"name": "jd", "type": "double"},
        {"name": "fid", "type": "int"},
        {"name": "ra", "type": "double"},
        {"name": "dec", "type": "double"},
        {"name": "magpsf", "type": "float"},
        {"name": "sigmapsf", "type": "float"},
        {"name": "isdiffpos", "type": "boolean" if winter else "string"},
        {"name": "rb", "type": ["null", "float"]},
        {"name": "drb", "type": ["null", "float"]},
    ]
    if winter:
        candidate_fields += [{"name": "fieldid", "type": "int"}, {"name": "boardid", "type": "int"}]
    return {
        "type": "record",
        "name": "alert",
        "namespace": namespace,
        "fields": [
            {"name": "schemavsn", "type": "string"},
            {"name": "publisher", "type": "string"},
            {"name": object_key, "type": "string"},
            {"name": "candid", "type": "long"},
            {
                "name": "candidate",
                "type": {
                    "type": "record",
                    "name": "candidate",
                    "namespace": f"{namespace}.alert",
                    "fields": candidate_fields,
                },
            },
            {"name": "cutoutScience", "type": cutout},
            {"name": "cutoutTemplate", "type": later},
            {"name": "cutoutDifference", "type": later},
        ],
    }


def _ztf_family_record(
    candid,
    stamps,
    *,
    object_id,
    publisher,
    fid=1,
    drb=0.9,
    object_key="objectId",
    bare=False,
    winter=False,
):
    def cut(i):
        if stamps[i] is None:
            return None
        blob = _fits(stamps[i])
        return blob if bare else {"fileName": f"{candid}_{i}.fits.gz", "stampData": blob}

    candidate = {
        "candid": candid,
        "jd": 2460000.5 + candid % 5,
        "fid": fid,
        "ra": 10.0 + candid % 3,
        "dec": -5.0,
        "magpsf": 18.0,
        "sigmapsf": 0.1,
        "isdiffpos": True if winter else "t",
        "rb": 0.5,
        "drb": drb,
    }
    if winter:
        candidate.update(fieldid=4321, boardid=2)
    return {
        "schemavsn": "4.02",
        "publisher": publisher,
        object_key: object_id,
        "candid": candid,
        "candidate": candidate,
        "cutoutScience": cut(0),
        "cutoutTemplate": cut(1),
        "cutoutDifference": cut(2),
    }


_DECAT_SOURCE = {
    "type": "record",
    "name": "source",
    "namespace": "decat",
    "fields": [
        {"name": "sourceid", "type": "int"},
        {"name": "ra", "type": "float"},
        {"name": "dec", "type": "float"},
        {"name": "mag", "type": "float"},
        {"name": "magerr", "type": "float"},
        {"name": "rb", "type": "float"},
        {"name": "filter", "type": "string"},
        {"name": "mjd", "type": "float"},
        {"name": "magzp", "type": ["null", "float"], "default": None},
        {"name": "scicutout", "type": ["null", "bytes"], "default": None},
        {"name": "refcutout", "type": ["null", "bytes"], "default": None},
        {"name": "diffcutout", "type": ["null", "bytes"], "default": None},
    ],
}
_DECAT_SCHEMA = {
    "type": "record",
    "name": "alert",
    "namespace": "decat",
    "fields": [
        {"name": "alertid", "type": "string"},
        {"name": "objectid", "type": "string"},
        {"name": "ra", "type": "float"},
        {"name": "dec", "type": "float"},
        {"name": "triggersource", "type": _DECAT_SOURCE},
        {"name": "sources", "type": {"type": "array", "items": "decat.source"}},
    ],
}


def _decat_record(sourceid, stamps):
    source = {
        "sourceid": sourceid,
        "ra": 150.0,
        "dec": 2.0,
        "mag": 21.0,
        "magerr": 0.2,
        "rb": 0.8,
        "filter": "g DECam SDSS c0001 4720.0 1520.0",
        "mjd": 59000.25,
        "magzp": 29.0,
        "scicutout": _fits(stamps[0]),
        "refcutout": _fits(stamps[1]),
        "diffcutout": _fits(stamps[2]),
    }
    return {
        "alertid": f"a{sourceid}",
        "objectid": f"DC21b{sourceid}",
        "ra": 150.0,
        "dec": 2.0,
        "triggersource": source,
        "sources": [source],
    }


_ATLAS_CUTOUT = {
    "type": "record",
    "name": "cutout",
    "namespace": "atlas",
    "fields": [{"name": "fileName", "type": "string"}, {"name": "stampData", "type": "bytes"}],
}
_ATLAS_SCHEMA = {
    "type": "record",
    "name": "alert",
    "namespace": "atlas",
    "fields": [
        {"name": "schemavsn", "type": "string"},
        {
            "name": "candidate",
            "type": {
                "type": "record",
                "name": "candidate",
                "namespace": "atlas",
                "fields": [
                    {"name": "RA", "type": "double"},
                    {"name": "Dec", "type": "double"},
                    {"name": "Mag", "type": "double"},
                    {"name": "Dmag", "type": "double"},
                    {"name": "X", "type": "double"},
                    {"name": "Y", "type": "double"},
                    {"name": "candid", "type": "string"},
                    {"name": "mjd", "type": "double"},
                    {"name": "filter", "type": "string"},
                ],
            },
        },
        {"name": "candid", "type": "string"},
        {"name": "publisher", "type": "string"},
        {"name": "objectId", "type": "string"},
        {"name": "cutoutScience", "type": _ATLAS_CUTOUT},
        {"name": "cutoutDifference", "type": "atlas.cutout"},
    ],
}


def _atlas_record(ident, science, difference):
    return {
        "schemavsn": "0.1",
        "candidate": {
            "RA": 30.0,
            "Dec": 1.0,
            "Mag": 17.5,
            "Dmag": 0.05,
            "X": 100.0,
            "Y": 200.0,
            "candid": ident,
            "mjd": 59897.5,
            "filter": "o",
        },
        "candid": ident,
        "publisher": "ATLAS",
        "objectId": f"obj_{ident}",
        "cutoutScience": {"fileName": f"{ident}_istamp.fits.gz", "stampData": _fits(science)},
        "cutoutDifference": {"fileName": f"{ident}_dstamp.fits.gz", "stampData": _fits(difference)},
    }


# --------------------------------------------------------------------------
# codecs

_ZTF_SCHEMA = _ztf_family_schema("ztf")


def _ztf_records():
    records = [
        _ztf_family_record(
            1000 + i,
            _stamps(i),
            object_id=f"ZTF24aaa{i:04d}",
            publisher="ZTF (www.ztf.caltech.edu)",
            fid=1 + i % 2,
            drb=0.1 * i,
        )
        for i in range(6)
    ]
    # one edge cutout, one alert without its template
    records.append(
        _ztf_family_record(1100, _stamps(50, (41, 63)), object_id="ZTF24aaaedge", publisher="ZTF")
    )
    records.append(
        _ztf_family_record(
            1101, [_stamps(51)[0], None, _stamps(51)[2]], object_id="ZTF24aaanot", publisher="ZTF"
        )
    )
    return records


@pytest.mark.parametrize("codec", sorted(AVRO_CODECS))
def test_every_codec_reads_the_same_alerts(tmp_path, codec):
    if not _available(codec):
        pytest.skip(f"the {codec!r} codec needs {AVRO_CODECS[codec]!r}, which is not installed")
    records = _ztf_records()
    plain = read_ztf(_write(tmp_path / "null.avro", _ZTF_SCHEMA, records), require_stamps=False)
    packed = read_ztf(
        _write(tmp_path / f"{codec}.avro", _ZTF_SCHEMA, records, codec=codec), require_stamps=False
    )
    assert packed.sizes["candidate"] == len(records)
    np.testing.assert_array_equal(packed["triplets"].values, plain["triplets"].values)
    np.testing.assert_array_equal(packed["valid"].values, plain["valid"].values)
    np.testing.assert_array_equal(packed["drb"].values, plain["drb"].values)
    np.testing.assert_array_equal(packed["stamp_present"].values, plain["stamp_present"].values)
    assert list(packed["candidate_id"].values) == list(plain["candidate_id"].values)


def test_snappy_deflate_and_null_files_give_identical_triplets_and_drb(tmp_path):
    # The codec brokers use most (snappy) must read without extra steps.
    records = _ztf_records()
    read = {
        codec: read_ztf(_write(tmp_path / f"{codec}.avro", _ZTF_SCHEMA, records, codec=codec))
        for codec in ("snappy", "deflate", "null")
    }
    for codec in ("snappy", "deflate"):
        np.testing.assert_array_equal(
            read[codec]["triplets"].values, read["null"]["triplets"].values
        )
        np.testing.assert_array_equal(read[codec]["drb"].values, read["null"]["drb"].values)
        assert list(read[codec]["candid"].values) == list(read["null"]["candid"].values)
    assert read["null"].sizes["candidate"] == len(records) - 1  # the alert without its template


def test_missing_codec_package_is_named(tmp_path, monkeypatch):
    from fastavro.read import BLOCK_READERS

    path = _write(tmp_path / "packed.avro", _ZTF_SCHEMA, _ztf_records()[:2], codec="snappy")

    def missing(decoder):
        raise ValueError("snappy codec is supported but you need to install cramjam")

    monkeypatch.setitem(BLOCK_READERS, "snappy", missing)
    with pytest.raises(AstridFileError, match=r"packed\.avro.*'snappy'.*pip install cramjam"):
        read_ztf(path)


# --------------------------------------------------------------------------
# surveys


def _packets(tmp_path):
    """One small file per survey; returns {survey: (path, stamps per alert)}."""
    out = {}
    ztf = [_stamps(1), _stamps(2)]
    out["ZTF"] = (
        _write(
            tmp_path / "ztf.avro",
            _ZTF_SCHEMA,
            [
                _ztf_family_record(11, ztf[0], object_id="ZTF20aaaaaaa", publisher="ZTF"),
                _ztf_family_record(12, ztf[1], object_id="ZTF20aaaaaab", publisher="ZTF", fid=2),
            ],
        ),
        ztf,
    )
    pgir = [_stamps(3)]
    out["PGIR"] = (
        _write(
            tmp_path / "pgir.avro",
            _ztf_family_schema("pgir"),
            [
                _ztf_family_record(
                    114297926, pgir[0], object_id="PGIR21aaaaaa", publisher="Palomar Gattini-IR"
                )
            ],
        ),
        pgir,
    )
    winter = [_stamps(4), _stamps(5)]
    out["WINTER"] = (
        _write(
            tmp_path / "winter.avro",
            _ztf_family_schema("winter", object_key="objectid", bare_cutouts=True, winter=True),
            [
                _ztf_family_record(
                    11,
                    winter[0],
                    object_id="WNTR24aaaab",
                    publisher="WINTER-mirar",
                    fid=2,
                    object_key="objectid",
                    bare=True,
                    winter=True,
                ),
                _ztf_family_record(
                    21,
                    winter[1],
                    object_id="WNTR24aaaac",
                    publisher="WINTER-mirar",
                    fid=3,
                    object_key="objectid",
                    bare=True,
                    winter=True,
                ),
            ],
        ),
        winter,
    )
    decat = [_stamps(6, (51, 51))]
    out["DECAT"] = (
        _write(tmp_path / "decat.avro", _DECAT_SCHEMA, [_decat_record(7, decat[0])]),
        decat,
    )
    atlas = [_stamps(7, (100, 100))]
    out["ATLAS"] = (
        _write(
            tmp_path / "atlas.avro",
            _ATLAS_SCHEMA,
            [_atlas_record("01a59897o0020c_000002", atlas[0][0], atlas[0][2])],
        ),
        atlas,
    )
    return out


def test_each_survey_round_trips_into_the_triplet_schema(tmp_path):
    packets = _packets(tmp_path)
    for survey, (path, stamps) in packets.items():
        ds = read_alerts(path)
        validate_triplets(ds)
        assert ds.sizes["candidate"] == len(stamps), survey
        assert set(ds["survey"].values.tolist()) == {survey}
        assert ds.attrs["mission"] == survey and ds.attrs["surveys"] == survey
        if survey != "ATLAS":
            assert ds["stamp_present"].values.all(), survey
    assert list(read_alerts(packets["PGIR"][0])["band"].values) == ["J"]
    assert list(read_alerts(packets["ZTF"][0])["band"].values) == ["g", "r"]


def test_winter_fields_and_bare_cutouts(tmp_path):
    path, stamps = _packets(tmp_path)["WINTER"]
    ds = read_alerts(path)
    assert list(ds["candidate_id"].values) == ["WINTER:11", "WINTER:21"]
    assert list(ds["objectId"].values) == ["WNTR24aaaab", "WNTR24aaaac"]
    assert list(ds["band"].values) == ["J", "Hs"]
    assert list(ds["isdiffpos"].values) == ["t", "t"]
    assert list(ds["field"].values) == [4321, 4321]
    for c in range(3):
        np.testing.assert_array_equal(ds["triplets"].values[1, ..., c], stamps[1][c])


def test_small_stamps_are_placed_first_and_padded(tmp_path):
    path, stamps = _packets(tmp_path)["DECAT"]
    ds = read_alerts(path)
    one = ds.isel(candidate=0)
    assert one["candidate_id"].item() == "DECAT:7" and one["candid"].item() == 7
    assert one["band"].item() == "g" and one["objectId"].item() == "DC21b7"
    assert one["jd"].item() == pytest.approx(59000.25 + 2400000.5)
    assert one["stamp_shape"].item() == "51x51"
    assert list(one["stamp_ny"].values) == [51] * 3
    np.testing.assert_array_equal(one["triplets"].values[:51, :51, 1], stamps[0][1])
    assert np.isnan(one["triplets"].values[51:]).all() and not one["valid"].values[:, 51:].any()


def test_atlas_reference_is_marked_missing_and_large_stamps_are_cropped_at_the_centre(tmp_path):
    path, stamps = _packets(tmp_path)["ATLAS"]
    science, _, difference = stamps[0]
    ds = read_alerts(path)  # require_stamps=True: ATLAS sends no template, so it is not required
    assert ds.sizes["candidate"] == 1
    one = ds.isel(candidate=0)
    assert one["candidate_id"].item() == "ATLAS:01a59897o0020c_000002"
    assert one["candid"].item() == -1 and one["band"].item() == "o"
    assert list(one["stamp_present"].values) == [True, False, True]
    reference = one["triplets"].sel(channel="reference").values
    assert np.isnan(reference).all() and not one["valid"].sel(channel="reference").values.any()
    assert list(one["stamp_ny"].values) == [STAMP_SIZE, 0, STAMP_SIZE]
    assert one["stamp_shape"].item() == "100x100" and ds.attrs["n_cropped"] == 1
    # the cutout's centre pixel (50, 50) is the stamp's centre (31, 31)
    np.testing.assert_array_equal(
        one["triplets"].sel(channel="science").values, science[19:82, 19:82]
    )
    np.testing.assert_array_equal(
        one["triplets"].sel(channel="difference").values, difference[19:82, 19:82]
    )
    assert one["triplets"].sel(channel="science").values[31, 31] == science[50, 50]


def test_mixed_surveys_in_one_call_keep_ids_apart(tmp_path):
    packets = _packets(tmp_path)
    ds = read_alerts(tmp_path)
    assert ds.attrs["n_files"] == len(packets)
    assert list(dict.fromkeys(ds["survey"].values.tolist())) == list(SURVEYS)
    ids = ds["candidate_id"].values.tolist()
    # ZTF and WINTER both have candid 11: two candidates, not one
    assert "11" in ids and "WINTER:11" in ids and len(set(ids)) == len(ids)
    assert ds.attrs["mission"] == "mixed (see survey)"


@pytest.mark.parametrize("survey", ["WINTER", "PGIR", "DECAT", "ATLAS"])
def test_read_ztf_refuses_other_surveys_instead_of_returning_nothing(tmp_path, survey):
    path, _ = _packets(tmp_path)[survey]
    with pytest.raises(
        AstridInputError, match=rf"{path.name}: holds {survey} alerts, not ZTF.*read_alerts"
    ):
        read_ztf(path)


def test_winter_and_pgir_packets_without_schema_names_are_detected(tmp_path):
    # A broker's Parquet re-export loses the Avro schema name: keys decide.
    packets = _packets(tmp_path)
    for survey in ("WINTER", "PGIR"):
        with open(packets[survey][0], "rb") as fh:
            records = list(fastavro.reader(fh))
        for record in records:
            record.pop("publisher")
        table = tmp_path / f"{survey.lower()}_export.parquet"
        pq.write_table(pa.Table.from_pylist(records), table)
        ds = read_alerts(table)
        assert set(ds["survey"].values.tolist()) == {survey} and ds.sizes["candidate"] == len(
            records
        )
        with pytest.raises(AstridInputError, match=f"holds {survey} alerts"):
            read_ztf(table)


def test_survey_argument(tmp_path):
    packets = _packets(tmp_path)
    assert read_alerts(packets["PGIR"][0], survey="gattini")["survey"].item() == "PGIR"
    assert read_alerts(packets["DECAT"][0], survey="DECam")["survey"].item() == "DECAT"
    with pytest.raises(AstridInputError, match=r"survey='lsst' is not 'auto' or one of"):
        read_alerts(packets["ZTF"][0], survey="lsst")
    with pytest.raises(AstridInputError, match=r"ztf\.avro: holds ZTF alerts, not WINTER"):
        read_alerts(packets["ZTF"][0], survey="winter")
    with pytest.raises(AstridInputError, match="on_error"):
        read_alerts(packets["ZTF"][0], on_error="ignore")


def test_undetectable_packets_name_the_file_and_keys(tmp_path):
    schema = {
        "type": "record",
        "name": "reading",
        "namespace": "weather",
        "fields": [
            {"name": "station", "type": "string"},
            {"name": "temperature", "type": "double"},
        ],
    }
    path = _write(tmp_path / "weather.avro", schema, [{"station": "a", "temperature": 1.0}])
    with pytest.raises(
        AstridFileError,
        match=r"weather\.avro: not an alert file.*weather\.reading.*'station', 'temperature'",
    ):
        read_alerts(path)


def test_a_bad_file_in_a_batch_loses_nothing_else(tmp_path):
    packets = _packets(tmp_path)
    many = [
        _ztf_family_record(5000 + i, _stamps(100 + i), object_id=f"ZTF21b{i:05d}", publisher="ZTF")
        for i in range(40)
    ]
    full = _write(tmp_path / "many.avro", _ZTF_SCHEMA, many, codec="deflate")
    data = full.read_bytes()
    cut = tmp_path / "cut.avro"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    full.unlink()
    with pytest.raises(
        AstridFileError, match=r"cut\.avro: not a readable Avro alert file: truncated"
    ):
        read_alerts(tmp_path)
    with pytest.warns(
        AstridWarning, match=r"cut\.avro.*file skipped, \d+ records read from it kept"
    ):
        ds = read_alerts(tmp_path, on_error="warn")
    assert ds.attrs["n_bad_files"] == 1 and ds.attrs["bad_files"].endswith("cut.avro")
    from_cut = np.char.startswith(ds["objectId"].values.astype(str), "ZTF21b")
    assert 0 < from_cut.sum() < len(many)  # the blocks before the cut are kept
    for survey, (_, stamps) in packets.items():
        assert int(((ds["survey"].values == survey) & ~from_cut).sum()) == len(stamps), survey


def test_corrupt_stamp_skips_only_that_alert_in_a_batch(tmp_path):
    packets = _packets(tmp_path)
    bad = _ztf_family_record(
        77,
        _stamps(77),
        object_id="WNTR24bad",
        publisher="WINTER-mirar",
        object_key="objectid",
        bare=True,
        winter=True,
    )
    bad["cutoutDifference"] = b"\x1f\x8b\x08\x00 not gzip"
    _write(
        tmp_path / "winter_bad.avro",
        _ztf_family_schema("winter", object_key="objectid", bare_cutouts=True, winter=True),
        [bad],
    )
    with pytest.warns(
        AstridWarning,
        match=r"winter_bad\.avro: alert WINTER:77: cutoutDifference cannot be decoded",
    ):
        ds = read_alerts(tmp_path)
    assert "WINTER:77" not in ds["candidate_id"].values.tolist()
    assert ds.attrs["n_corrupt"] == 1
    assert ds.sizes["candidate"] == sum(len(stamps) for _, stamps in packets.values())


def test_missing_expected_stamp_is_kept_with_a_flag(tmp_path):
    record = _ztf_family_record(
        31,
        [None, None, None],
        object_id="WNTR24aaaaz",
        publisher="WINTER-mirar",
        object_key="objectid",
        winter=True,
    )
    record["cutoutScience"] = {"fileName": "s", "stampData": _fits(_stamps(31)[0])}
    path = _write(
        tmp_path / "w.avro",
        _ztf_family_schema("winter", object_key="objectid", winter=True),
        [record],
    )
    assert read_alerts(path).sizes["candidate"] == 0
    kept = read_alerts(path, require_stamps=False)
    assert list(kept["stamp_present"].values[0]) == [True, False, False]
    assert kept.attrs["n_without_stamps"] == 1


def test_survey_coordinate_survives_a_triplet_store(tmp_path):
    pytest.importorskip("zarr")
    from astrid.triplets import load_triplets, write_triplets

    _packets(tmp_path)
    ds = read_alerts(tmp_path)
    store = tmp_path / "alerts.zarr"
    write_triplets(ds, store)
    back = load_triplets(store)
    assert back["survey"].values.tolist() == ds["survey"].values.tolist()
    np.testing.assert_array_equal(back["stamp_present"].values, ds["stamp_present"].values)
    assert tuple(str(c) for c in back["channel"].values) == CHANNELS


# --------------------------------------------------------------------------
# train on one survey, test on another


def test_split_by_survey_of_alerts(tmp_path):
    from astrid.triplets import split_by_survey

    _packets(tmp_path)
    ds = read_alerts(tmp_path)
    train, test = split_by_survey(ds, "winter")
    assert set(test["survey"].values.tolist()) == {"WINTER"}
    assert "WINTER" not in set(train["survey"].values.tolist())
    assert train.sizes["candidate"] + test.sizes["candidate"] == ds.sizes["candidate"]
    train, test = split_by_survey(ds, ["ATLAS"], train_surveys=["ZTF", "PGIR"])
    assert set(train["survey"].values.tolist()) == {"ZTF", "PGIR"} and test.sizes["candidate"] == 1
    with pytest.raises(
        AstridInputError, match=r"survey 'LSST' is not in the triplets \(they hold \["
    ):
        split_by_survey(ds, "LSST")
    with pytest.raises(AstridInputError, match="no survey left to train on"):
        split_by_survey(ds, list(SURVEYS))
    with pytest.raises(AstridInputError, match="both name"):
        split_by_survey(ds, "ZTF", train_surveys=["ZTF", "PGIR"])
    with pytest.raises(AstridInputError, match="no 'survey' coordinate"):
        split_by_survey(ds.drop_vars("survey"), "ZTF")


def test_evaluate_reports_each_survey(tmp_path):
    from astrid.braai import evaluate

    _packets(tmp_path)
    ds = read_alerts(tmp_path)
    n = ds.sizes["candidate"]
    labels = np.arange(n) % 2
    scores = np.where(labels == 1, 0.8, 0.2)
    scores[ds["survey"].values == "WINTER"] = 0.6  # every WINTER candidate called real
    report = evaluate(None, ds.assign_coords(label=("candidate", labels)), scores=scores)
    by_survey = report["by_survey"]
    assert set(by_survey) == set(SURVEYS)
    assert sum(row["n"] for row in by_survey.values()) == n
    winter = by_survey["WINTER"]
    assert winter["n_real"] == 1 and winter["n_bogus"] == 1
    assert (
        winter["recall"] == 1.0 and winter["fpr"] == 1.0 and winter["roc_auc"] == pytest.approx(0.5)
    )
    assert by_survey["ZTF"]["fpr"] == 0.0 and by_survey["ZTF"]["recall"] == 1.0
    assert (
        by_survey["PGIR"]["recall"] is None and by_survey["PGIR"]["aucpr"] is None
    )  # no real PGIR example
    assert evaluate(None, {"label": labels}, scores=scores)["by_survey"] is None


def test_build_training_set_splits_by_survey_in_one_call():
    from astrid.triplets import (
        ExampleOptions,
        SyntheticScene,
        build_training_set,
        synthetic_difference,
    )

    results = [
        synthetic_difference(
            (192, 192), SyntheticScene(n_transients=4, n_hot_pixels=4), mjd=59000.0 + i, seed=70 + i
        )
        for i in range(3)
    ]
    inputs = [(r, r.truth, f"field{i}") for i, r in enumerate(results)]
    surveys = {"field0": "SIM-A", "field1": "SIM-A", "field2": "SIM-B"}
    examples = ExampleOptions(random_bogus=3)
    train, test = build_training_set(
        inputs, examples, survey=surveys, test_surveys=["SIM-B"], balance=None
    )
    assert set(train["survey"].values.tolist()) == {"SIM-A"} and set(
        train["field"].values.tolist()
    ) == {"field0", "field1"}
    assert set(test["survey"].values.tolist()) == {"SIM-B"} and set(
        test["field"].values.tolist()
    ) == {"field2"}
    assert test.attrs["n_real"] + test.attrs["n_bogus"] == test.sizes["candidate"] > 0
    whole = build_training_set(inputs, ExampleOptions(random_bogus=3), survey="SIM-A", balance=None)
    assert whole.sizes["candidate"] == train.sizes["candidate"] + test.sizes["candidate"]
    with pytest.raises(AstridInputError, match="needs survey="):
        build_training_set(inputs, test_surveys=["SIM-B"])
    with pytest.raises(AstridInputError, match="field 'field2' is not in the survey mapping"):
        build_training_set(inputs, survey={"field0": "A", "field1": "A"})


def _avro_with_codec(path, codec: str):
    """An Avro file whose header names ``codec`` (written by hand: fastavro cannot write a codec it lacks)."""
    import json

    schema = json.dumps(
        {
            "type": "record",
            "name": "alert",
            "namespace": "ztf",
            "fields": [{"name": "candid", "type": "long"}],
        }
    ).encode()
    header = io.BytesIO()
    fastavro.schemaless_writer(
        header,
        {"type": "map", "values": "bytes"},
        {"avro.codec": codec.encode(), "avro.schema": schema},
    )
    path.write_bytes(b"Obj\x01" + header.getvalue() + bytes(16))
    return path


@pytest.mark.parametrize("codec", ["zstandard", "lz4"])
def test_codec_without_its_package_names_file_codec_and_package(tmp_path, codec):
    if _available(codec):
        pytest.skip(f"{AVRO_CODECS[codec]} is installed here")
    path = _avro_with_codec(tmp_path / f"{codec}.avro", codec)
    with pytest.raises(
        AstridFileError,
        match=rf"{codec}\.avro: .*codec '{codec}'.*pip install {AVRO_CODECS[codec]}",
    ):
        read_alerts(path)


def test_unknown_codec_is_refused(tmp_path):
    path = _avro_with_codec(tmp_path / "odd.avro", "brotli")
    with pytest.raises(
        AstridFileError, match=r"odd\.avro: Avro codec 'brotli' is not one fastavro can read"
    ):
        read_alerts(path)


def test_braai_validation_split_by_survey_holds_out_whole_surveys():
    from astrid.braai import split_groups

    surveys = np.array(["ZTF"] * 5 + ["WINTER"] * 3 + ["ATLAS"] * 2)
    ds = new_triplet_dataset(
        np.zeros((10, STAMP_SIZE, STAMP_SIZE, 3), np.float32),
        {"survey": surveys, "label": np.arange(10) % 2},
    )
    train, validation, info = split_groups(ds, "survey", 0.3, 0)
    assert info["coordinate"] == "survey"
    assert not set(surveys[train]) & set(surveys[validation])  # no survey on both sides
    assert len(train) + len(validation) == 10


@pytest.mark.parametrize(
    "schema",
    [
        _ZTF_SCHEMA,
        _ztf_family_schema("pgir"),
        _ztf_family_schema("winter", object_key="objectid", bare_cutouts=True, winter=True),
        _DECAT_SCHEMA,
        _ATLAS_SCHEMA,
    ],
    ids=["ZTF", "PGIR", "WINTER", "DECAT", "ATLAS"],
)
def test_an_empty_alert_file_is_a_quiet_night_and_an_empty_foreign_file_an_error(tmp_path, schema):
    empty = _write(tmp_path / "night.avro", schema, [])
    assert read_alerts(empty).sizes["candidate"] == 0
    weather = {
        "type": "record",
        "name": "weather",
        "fields": [{"name": "temperature", "type": "double"}],
    }
    foreign = _write(tmp_path / "weather.avro", weather, [])
    with pytest.raises(
        AstridFileError, match=r"weather.avro: not an alert file: its Avro schema \(weather\)"
    ):
        read_alerts([empty, foreign])
