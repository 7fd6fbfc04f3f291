"""ZTF alert reader (astrid.alerts); the triplet schema is tested in tests/schema/."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json

import numpy as np
import pytest
from astropy.io import fits

from astrid.alerts import decode_stamp, read_ztf
from astrid.errors import AstridFileError, AstridInputError, AstridWarning
from astrid.paths import shared_data
from astrid.schema import STAMP_SIZE, validate_triplets

fastavro = pytest.importorskip("fastavro")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


# --------------------------------------------------------------------------
# hand-built alerts


def _fits_bytes(data: np.ndarray, *, gz: bool = True, header: dict | None = None) -> bytes:
    hdu = fits.PrimaryHDU(data)
    for key, value in (header or {}).items():
        hdu.header[key] = value
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def _stamps(seed: int, shape=(STAMP_SIZE, STAMP_SIZE)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(100.0 * (c + 1), 5.0, size=shape).astype(np.float32) for c in range(3)]


def _alert(candid: int, stamps=None, *, drb=None, rb=0.5, object_id="ZTF24aaaaaaa") -> dict:
    cutouts = {}
    for key, stamp in zip(
        ("cutoutScience", "cutoutTemplate", "cutoutDifference"), stamps or [None] * 3
    ):
        if stamp is None:
            cutouts[key] = None
        elif isinstance(stamp, bytes):
            cutouts[key] = {"fileName": f"{candid}_{key}.fits.gz", "stampData": stamp}
        else:
            cutouts[key] = {"fileName": f"{candid}_{key}.fits.gz", "stampData": _fits_bytes(stamp)}
    return {
        "objectId": object_id,
        "candid": candid,
        "candidate": {
            "candid": candid,
            "jd": 2460000.5 + candid % 7,
            "fid": 1 + candid % 2,
            "ra": 150.0,
            "dec": 2.0,
            "magpsf": 19.5,
            "isdiffpos": "t",
            "rb": rb,
            "drb": drb,
            "drbversion": None if drb is None else "d6_m7",
        },
        **cutouts,
    }


_CUTOUT = {
    "type": "record",
    "name": "cutout",
    "fields": [{"name": "fileName", "type": "string"}, {"name": "stampData", "type": "bytes"}],
}
_AVRO_SCHEMA = {
    "type": "record",
    "name": "alert",
    "namespace": "test",
    "fields": [
        {"name": "objectId", "type": "string"},
        {"name": "candid", "type": "long"},
        {
            "name": "candidate",
            "type": {
                "type": "record",
                "name": "candidate",
                "fields": [
                    {"name": "candid", "type": "long"},
                    {"name": "jd", "type": "double"},
                    {"name": "fid", "type": "int"},
                    {"name": "ra", "type": "double"},
                    {"name": "dec", "type": "double"},
                    {"name": "magpsf", "type": "float"},
                    {"name": "isdiffpos", "type": "string"},
                    {"name": "rb", "type": ["null", "float"]},
                    {"name": "drb", "type": ["null", "float"]},
                    {"name": "drbversion", "type": ["null", "string"]},
                ],
            },
        },
        {"name": "cutoutScience", "type": ["null", _CUTOUT]},
        {"name": "cutoutTemplate", "type": ["null", "test.cutout"]},
        {"name": "cutoutDifference", "type": ["null", "test.cutout"]},
    ],
}


def _write_avro(path, alerts):
    with open(path, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(_AVRO_SCHEMA), alerts)
    return path


def _write_parquet(path, alerts):
    pq.write_table(pa.Table.from_pylist(alerts), path)
    return path


def _by_candid(ds, candid):
    return ds.sel(candidate_id=str(candid))


# --------------------------------------------------------------------------
# stamps


def test_decode_stamp_fast_path_and_astropy_path_agree():
    stamp = _stamps(0)[0]
    stamp[3, 4] = np.nan
    out = decode_stamp(_fits_bytes(stamp))
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, stamp)
    # scaled integers take the astropy path
    ints = np.arange(63 * 63, dtype=np.int16).reshape(63, 63)
    scaled = decode_stamp(_fits_bytes(ints, header={"BSCALE": 0.5, "BZERO": 10.0}))
    np.testing.assert_allclose(scaled, ints * 0.5 + 10.0)
    # plain (not gzipped) FITS too
    np.testing.assert_array_equal(decode_stamp(_fits_bytes(stamp, gz=False)), stamp)


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
        (gzip.compress(b"not a fits file"), "not FITS"),
        (_fits_bytes(np.zeros((70, 63), np.float32)), "not within"),
        (_fits_bytes(np.zeros((2, 63, 63), np.float32)), "2-D"),
    ],
)
def test_decode_stamp_rejects_bad_cutouts(blob, match):
    with pytest.raises(AstridInputError, match=match):
        decode_stamp(blob, name="cutoutScience")


# --------------------------------------------------------------------------
# reading hand-built files


def test_deduplicates_and_prefers_copies_with_stamps(tmp_path):
    stamps1, stamps2 = _stamps(1), _stamps(2)
    a = _write_avro(
        tmp_path / "a.avro",
        [_alert(101, None, drb=None), _alert(102, stamps2, drb=0.2)],
    )
    b = _write_parquet(
        tmp_path / "b.parquet",
        [_alert(101, stamps1, drb=0.9), _alert(102, stamps2, drb=0.2)],
    )
    for order in ([a, b], [b, a]):
        ds = read_ztf(order)
        assert list(ds["candid"].values) == [101, 102]
        assert ds.attrs["n_packets"] == 4 and ds.attrs["n_distinct"] == 2
        one = _by_candid(ds, 101)
        for c, stamp in enumerate(stamps1):
            np.testing.assert_array_equal(one["triplets"].values[..., c], stamp)
        assert one["source_file"].item() == str(b)
        # the copy without stamps lacks drb; the field comes from the other copy
        assert float(one["drb"]) == pytest.approx(0.9)
        assert one["drbversion"].item() == "d6_m7"
        assert bool(one["valid"].all())
    validate_triplets(ds)


def test_missing_stamp_is_dropped_or_kept_as_nan(tmp_path):
    stamps = _stamps(3)
    path = _write_avro(
        tmp_path / "alerts.avro",
        [_alert(201, [stamps[0], None, stamps[2]]), _alert(202, _stamps(4))],
    )
    ds = read_ztf(path)
    assert list(ds["candid"].values) == [202]
    assert ds.attrs["n_without_stamps"] == 1 and ds.attrs["n_distinct"] == 2

    kept = read_ztf(path, require_stamps=False)
    one = _by_candid(kept, 201)
    assert np.isnan(one["triplets"].sel(channel="reference").values).all()
    assert not one["valid"].sel(channel="reference").values.any()
    assert list(one["stamp_ny"].values) == [63, 0, 63]
    np.testing.assert_array_equal(one["triplets"].sel(channel="difference").values, stamps[2])


def test_truncated_cutout_is_placed_first_and_nan_padded(tmp_path):
    stamps = _stamps(5, shape=(41, 63))
    path = _write_avro(tmp_path / "edge.avro", [_alert(301, stamps)])
    ds = read_ztf(path)
    one = _by_candid(ds, 301)
    assert one["stamp_shape"].item() == "41x63"
    assert list(one["stamp_ny"].values) == [41] * 3 and list(one["stamp_nx"].values) == [63] * 3
    triplet = one["triplets"].values
    np.testing.assert_array_equal(triplet[:41, :, 0], stamps[0])
    assert np.isnan(triplet[41:]).all()
    assert one["valid"].values[:41].all() and not one["valid"].values[41:].any()


def test_corrupt_stamp_warns_and_skips_only_that_alert(tmp_path):
    bad = [_fits_bytes(s) for s in _stamps(6)]
    bad[2] = b"\x1f\x8b\x08\x00not really gzip"
    path = _write_avro(tmp_path / "alerts.avro", [_alert(401, bad), _alert(402, _stamps(7))])
    with pytest.warns(AstridWarning, match=r"alerts\.avro: alert candid=401: cutoutDifference"):
        ds = read_ztf(path, require_stamps=False)
    assert list(ds["candid"].values) == [402]
    assert ds.attrs["n_corrupt"] == 1


@pytest.mark.parametrize("suffix", [".avro", ".parquet", ".json"])
def test_corrupt_file_raises_naming_it(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not an alert file " * 40)
    with pytest.raises(AstridInputError, match=f"broken\\{suffix}"):
        read_ztf(path)


def test_truncated_avro_raises(tmp_path):
    good = _write_avro(tmp_path / "good.avro", [_alert(501, _stamps(8)), _alert(502, _stamps(9))])
    data = good.read_bytes()
    cut = tmp_path / "cut.avro"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AstridFileError, match="cut.avro"):
        read_ztf(cut)


def test_path_errors(tmp_path):
    with pytest.raises(AstridFileError, match="no such file"):
        read_ztf(tmp_path / "missing.avro")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(AstridInputError, match="no .avro or .parquet"):
        read_ztf(tmp_path / "empty_dir")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(AstridInputError, match="not an alert file"):
        read_ztf(notes)
    table = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), table)
    with pytest.raises(AstridInputError, match="no 'candid'"):
        read_ztf(table)


def test_folder_is_searched_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    _write_avro(tmp_path / "sub" / "a.avro", [_alert(601, _stamps(10))])
    _write_parquet(tmp_path / "b.parquet", [_alert(602, _stamps(11))])
    ds = read_ztf(tmp_path)
    assert list(ds["candid"].values) == [601, 602]
    assert ds.attrs["n_files"] == 2


def test_extended_json_export(tmp_path):
    alert = _alert(701, _stamps(12), drb=0.4)
    for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        blob = alert[key]["stampData"]
        alert[key]["stampData"] = {"$binary": base64.b64encode(blob).decode(), "$type": "00"}
    alert["candid"] = {"$numberLong": "701"}
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert))
    ds = read_ztf(path)
    assert list(ds["candid"].values) == [701]
    np.testing.assert_array_equal(ds["triplets"].values[0, ..., 1], _stamps(12)[1])


def test_no_alert_with_stamps_gives_an_empty_dataset(tmp_path):
    path = _write_avro(tmp_path / "a.avro", [_alert(801, None)])
    ds = read_ztf(path)
    assert ds.sizes["candidate"] == 0
    validate_triplets(ds)


# --------------------------------------------------------------------------
# the shared ZTF alerts


@pytest.fixture(scope="module")
def shared_alerts():
    folder = shared_data("ztf_alerts")
    if folder is None:
        pytest.skip(
            "shared ZTF alerts (../shared/data/ztf_alerts or $ASTRID_SHARED_DATA) are not present"
        )
    return read_ztf(folder)


@pytest.fixture(scope="module")
def manifest():
    path = shared_data("ztf_alerts", "manifest.csv")
    if path is None:
        pytest.skip("shared ZTF alert manifest is not present")
    with open(path, newline="") as fh:
        return {int(row["candid"]): row for row in csv.DictReader(fh)}


def _float(text: str) -> float:
    return float(text) if text else np.nan


@pytest.mark.shared_data
def test_shared_alerts_counts(shared_alerts):
    ds = shared_alerts
    assert ds.sizes["candidate"] == 1044
    assert len(set(ds["candid"].values.tolist())) == 1044
    assert int(np.isfinite(ds["drb"].values).sum()) == 938
    assert ds.attrs["n_distinct"] == 1155
    assert ds.attrs["n_without_stamps"] == 1155 - 1044
    assert ds.attrs["n_corrupt"] == 0
    validate_triplets(ds)


@pytest.mark.shared_data
def test_shared_alerts_match_manifest(shared_alerts, manifest):
    ds = shared_alerts
    with_triplet = {c for c, row in manifest.items() if row["has_triplet"] == "True"}
    assert set(ds["candid"].values.tolist()) == with_triplet
    rows = [manifest[int(c)] for c in ds["candid"].values]
    np.testing.assert_allclose(
        ds["rb"].values, [_float(r["rb"]) for r in rows], rtol=1e-6, equal_nan=True
    )
    np.testing.assert_allclose(
        ds["drb"].values, [_float(r["drb"]) for r in rows], rtol=1e-6, equal_nan=True
    )
    assert list(ds["objectId"].values) == [r["objectId"] for r in rows]
    assert list(ds["stamp_shape"].values) == [r["stamp_shape"] for r in rows]
    assert list(ds["drbversion"].values) == [r["drbversion"] for r in rows]


@pytest.mark.shared_data
def test_shared_alerts_padding_follows_stamp_shape(shared_alerts):
    ds = shared_alerts
    ny, nx = ds["stamp_ny"].values, ds["stamp_nx"].values
    truncated = np.flatnonzero((ny < STAMP_SIZE).any(axis=1) | (nx < STAMP_SIZE).any(axis=1))
    assert truncated.size > 0
    for i in truncated:
        for c in range(3):
            block = ds["triplets"].values[i, :, :, c]
            valid = ds["valid"].values[i, :, :, c]
            assert np.isnan(block[ny[i, c] :, :]).all() and np.isnan(block[:, nx[i, c] :]).all()
            assert not valid[ny[i, c] :, :].any() and not valid[:, nx[i, c] :].any()
            assert valid[: ny[i, c], : nx[i, c]].mean() > 0.5


@pytest.mark.shared_data
def test_shared_alerts_every_manifest_candid_is_read(manifest):
    # Every distinct alert, with or without its stamps, comes back once and flagged.
    ds = read_ztf(shared_data("ztf_alerts"), require_stamps=False)
    read = ds["candid"].values.tolist()
    assert len(set(read)) == len(read) == ds.attrs["n_distinct"]
    assert set(manifest) <= set(read)
    assert set(ds["survey"].values.tolist()) == {"ZTF"}
    complete = ds["stamp_present"].values.all(axis=1)
    listed = np.isin(ds["candid"].values, list(manifest))
    with_triplet = np.array(
        [manifest[int(c)]["has_triplet"] == "True" for c in ds["candid"].values[listed]]
    )
    np.testing.assert_array_equal(complete[listed], with_triplet)
    # the few alerts the manifest does not list come without a full set of stamps
    assert not complete[~listed].any()
    assert not ds["valid"].values[~complete].all(axis=(1, 2, 3)).any()


def _shared_avro_sample(n_files: int):
    folder = shared_data("ztf_alerts")
    if folder is None:
        pytest.skip(
            "shared ZTF alerts (../shared/data/ztf_alerts or $ASTRID_SHARED_DATA) are not present"
        )
    files = sorted(folder.rglob("*.avro"))
    # both writers of the shared files: ZTF's own schema and Spark's re-export
    picked: dict[str, list] = {}
    for path in files:
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            name = reader.writer_schema.get("name", "")
            if len(picked.setdefault(name, [])) < n_files:
                picked[name].append((path, reader.writer_schema, list(reader)))
    return [item for group in picked.values() for item in group]


@pytest.mark.shared_data
@pytest.mark.parametrize("codec", ["snappy", "deflate", "null"])
def test_shared_alerts_reencoded_read_identically(tmp_path, codec):
    sample = _shared_avro_sample(4)
    originals = [path for path, _, _ in sample]
    copies = []
    for i, (path, schema, records) in enumerate(sample):
        copy = tmp_path / f"{i:02d}_{path.stem}.avro"
        with open(copy, "wb") as fh:
            fastavro.writer(fh, schema, records, codec=codec)
        copies.append(copy)
    before = read_ztf(originals, require_stamps=False)
    after = read_ztf(copies, require_stamps=False)
    assert after.sizes["candidate"] == before.sizes["candidate"] > 0
    assert list(after["candid"].values) == list(before["candid"].values)
    np.testing.assert_array_equal(after["triplets"].values, before["triplets"].values)
    np.testing.assert_array_equal(after["drb"].values, before["drb"].values)
    np.testing.assert_array_equal(after["stamp_present"].values, before["stamp_present"].values)


def test_read_ztf_names_what_a_non_alert_avro_file_holds(tmp_path):
    schema = {
        "type": "record",
        "name": "reading",
        "fields": [{"name": "station", "type": "string"}],
    }
    path = tmp_path / "weather.avro"
    with open(path, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), [{"station": "a"}])
    with pytest.raises(
        AstridInputError,
        match=r"weather\.avro: a record has no 'candid' \(top-level keys: \['station'\]\)",
    ):
        read_ztf(path)
