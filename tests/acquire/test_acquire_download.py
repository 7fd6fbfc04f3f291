"""Verified, atomic, resumable downloads; retries and back-off; corrupt files caught (offline)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from astrid.acquire import (
    AstridDownloadError,
    FetchOptions,
    destination_name,
    download,
    fetch_file,
    find_pairs,
    skyview_cutouts,
    validate_fits,
)
from astrid.acquire.replay import ReplayServer, Reply
from astrid.errors import AstridInputError
from astrid.io import read_image
from astrid.manifest import Manifest, sha256sum

DATA = Path(__file__).parents[1] / "data" / "acquire"
URL = "https://archive.example.org/data/sw00031234001uuu_sk.img.gz"


def fits_bytes(filt: str = "U", mjd: float = 55000.0, *, gz: bool = False, seed: int = 0) -> bytes:
    """A small Swift-UVOT-like sky image: empty primary HDU and one image extension."""
    rng = np.random.default_rng(seed)
    header = fits.Header(
        {"TELESCOP": "SWIFT", "INSTRUME": "UVOT", "FILTER": filt, "MJD-OBS": mjd, "EXPOSURE": 500.0}
    )
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=header),
            fits.ImageHDU(rng.normal(100, 5, (32, 32)).astype(np.float32), name="SKY"),
        ]
    )
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    data = buffer.getvalue()
    return gzip.compress(data, mtime=0) if gz else data


class Sleeps(list):
    """Records the back-off delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_retry_with_exponential_backoff_then_success(tmp_path):
    sleeps = Sleeps()
    server = ReplayServer().add(
        URL,
        Reply(status=503),
        Reply(error=requests.exceptions.ConnectionError("connection refused")),
        Reply(status=429, headers={"Retry-After": "7"}),
        Reply(body=fits_bytes(gz=True)),
    )
    with server:
        result = fetch_file(
            URL,
            tmp_path / "sw.fits.gz",
            options=FetchOptions(retries=4, backoff_s=2.0),
            sleep=sleeps,
        )
    assert result.attempts == 4
    assert sleeps == [2.0, 4.0, 8.0]  # 2 s doubled each time; Retry-After 7 s < 8 s
    assert server.count(URL, method="GET") == 4
    assert result.path.read_bytes()[:2] == b"\x1f\x8b"  # kept gzipped, as the name says
    assert result.sha256 == sha256sum(result.path) and result.size == result.path.stat().st_size
    assert read_image(result.path).meta.filter == "U"
    assert not list(tmp_path.glob("*.part*"))


def test_retry_after_longer_than_backoff_is_honoured(tmp_path):
    sleeps = Sleeps()
    with ReplayServer().add(
        URL, Reply(status=429, headers={"Retry-After": "30"}), Reply(body=fits_bytes())
    ):
        fetch_file(
            URL,
            tmp_path / "a.fits",
            options=FetchOptions(backoff_s=1.0, max_backoff_s=20.0),
            sleep=sleeps,
        )
    assert sleeps == [20.0]  # the server's 30 s, capped


def test_corrupt_download_is_detected_and_retried(tmp_path):
    good = fits_bytes(gz=True)
    plain = fits_bytes()
    truncated_fits = plain[: len(plain) - 2880]  # whole transfer, but a short file
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0xFF  # gzip stream with a wrong CRC
    sleeps = Sleeps()
    server = ReplayServer().add(
        URL, Reply(body=truncated_fits), Reply(body=bytes(bad_crc)), Reply(body=good)
    )
    with server:
        result = fetch_file(URL, tmp_path / "sw.fits", sleep=sleeps)
    assert result.attempts == 3 and len(sleeps) == 2
    validate_fits(result.path)
    assert result.path.read_bytes()[:6] == b"SIMPLE"  # decompressed, as the name says


def test_persistently_corrupt_download_is_reported(tmp_path):
    truncated = fits_bytes()[:4000]
    with (
        ReplayServer().add(URL, Reply(body=truncated)),
        pytest.raises(
            AstridDownloadError, match=r"failed after 3 attempt\(s\): corrupt download"
        ) as info,
    ):
        fetch_file(URL, tmp_path / "sw.fits", options=FetchOptions(retries=2), sleep=Sleeps())
    assert info.value.attempts == 3 and info.value.url == URL
    assert list(tmp_path.iterdir()) == []  # neither a half file nor a .part is left


def test_transfer_cut_midway_is_retried(tmp_path):
    body = fits_bytes(gz=True)
    with ReplayServer().add(URL, Reply(body=body, cut_after=500), Reply(body=body)) as server:
        result = fetch_file(URL, tmp_path / "sw.fits.gz", sleep=Sleeps())
    assert result.attempts == 2 and server.count(URL) == 2
    assert result.path.read_bytes() == body


def test_checksums_from_archive_and_server(tmp_path):
    body = fits_bytes()
    md5 = hashlib.md5(body).digest()
    sha256 = hashlib.sha256(body).hexdigest()
    good_header = {"Content-MD5": base64.b64encode(md5).decode()}
    bad_header = {"Content-MD5": base64.b64encode(b"0" * 16).decode()}
    with ReplayServer().add(
        URL, Reply(body=body, headers=bad_header), Reply(body=body, headers=good_header)
    ):
        result = fetch_file(URL, tmp_path / "a.fits", checksum=f"sha256:{sha256}", sleep=Sleeps())
    assert result.attempts == 2
    with (
        ReplayServer().add(URL, Reply(body=body)),
        pytest.raises(AstridDownloadError, match="md5 checksum mismatch"),
    ):
        fetch_file(
            URL,
            tmp_path / "b.fits",
            checksum="0" * 32,
            options=FetchOptions(retries=1),
            sleep=Sleeps(),
        )
    with pytest.raises(AstridInputError, match="checksum"):
        fetch_file(URL, tmp_path / "c.fits", checksum="crc32:abc")


def test_size_cap_and_missing_files_are_not_retried(tmp_path):
    sleeps = Sleeps()
    with (
        ReplayServer().add(URL, Reply(body=fits_bytes())) as server,
        pytest.raises(AstridDownloadError, match="size cap.*not retried"),
    ):
        fetch_file(URL, tmp_path / "a.fits", options=FetchOptions(max_bytes=1000), sleep=sleeps)
    assert server.count(URL) == 1 and sleeps == []
    with (
        ReplayServer().add(URL, Reply(status=404)) as server,
        pytest.raises(AstridDownloadError, match="HTTP 404"),
    ):
        fetch_file(URL, tmp_path / "a.fits", sleep=sleeps)
    assert server.count(URL) == 1 and sleeps == []
    with (
        ReplayServer().add(URL, Reply(body=fits_bytes())),
        pytest.raises(AstridDownloadError, match="the archive lists 99"),
    ):
        fetch_file(URL, tmp_path / "a.fits", expected_size=99, options=FetchOptions(retries=0))


def test_compression_follows_the_destination_name(tmp_path):
    with ReplayServer().add(URL, Reply(body=fits_bytes())):
        gz = fetch_file(URL, tmp_path / "plain_to.fits.gz").path
    assert gz.read_bytes()[:2] == b"\x1f\x8b" and read_image(gz).shape == (32, 32)
    with ReplayServer().add(URL, Reply(body=fits_bytes(gz=True))):
        plain = fetch_file(URL, tmp_path / "gz_to.fits")
    assert plain.sha256 == sha256sum(plain.path)  # the digest of the file kept, not of the body
    assert destination_name(URL) == "sw00031234001uuu_sk.fits.gz"
    assert destination_name(URL, decompress=True) == "sw00031234001uuu_sk.fits"
    mast = "https://mast.stsci.edu/api/v0.1/Download/file?uri=mast:SWIFT/product/sw0003_sk.img.gz"
    assert destination_name(mast) == "sw0003_sk.fits.gz"
    assert destination_name("https://x.org/cutout?id=3", "my image.fit") == "my_image.fits"


def test_validate_fits_reads_headers_not_data(tmp_path):
    good = tmp_path / "good.fits"
    good.write_bytes(fits_bytes())
    validate_fits(good)
    short = tmp_path / "short.fits"
    short.write_bytes(fits_bytes()[:-2880])
    with pytest.raises(AstridInputError, match="short.fits: truncated FITS file"):
        validate_fits(short)
    table_only = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1, 2]}))]).writeto(table_only)
    with pytest.raises(AstridInputError, match="no 2-D image data"):
        validate_fits(table_only)
    validate_fits(table_only, require_image=False)
    text = tmp_path / "page.fits"
    text.write_text("<html>502 Bad Gateway</html>")
    with pytest.raises(AstridInputError, match="page.fits"):
        validate_fits(text)
    tiled = tmp_path / "tiled.fits"
    image = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image)]).writeto(tiled)
    validate_fits(tiled)
    (tmp_path / "tiled_short.fits").write_bytes(tiled.read_bytes()[:-3000])
    with pytest.raises(AstridInputError, match="truncated"):
        validate_fits(tmp_path / "tiled_short.fits")


def test_local_files_are_copied_with_the_same_checks(tmp_path):
    source = tmp_path / "src.fits"
    source.write_bytes(fits_bytes())
    result = fetch_file(str(source), tmp_path / "out" / "copy.fits")
    assert result.path.read_bytes() == source.read_bytes()
    broken = tmp_path / "broken.fits"
    broken.write_bytes(fits_bytes()[:3000])
    with pytest.raises(AstridDownloadError, match="truncated|corrupt"):
        fetch_file(broken.as_uri(), tmp_path / "out" / "b.fits", options=FetchOptions(retries=0))
    with pytest.raises(AstridDownloadError, match="does not exist"):
        fetch_file(str(tmp_path / "nope.fits"), tmp_path / "out" / "c.fits")


# --------------------------------------------------------------------------- #
# pairs into the survey layout
# --------------------------------------------------------------------------- #

T0 = Time("2011-08-24")


def swift_pairs(n_ref: int = 2, n_sci: int = 2) -> tuple[Table, dict[str, bytes]]:
    rows, bodies = [], {}
    for i in range(n_ref + n_sci):
        ref = i < n_ref
        obsid = f"{9000 + i}"
        mjd = T0.mjd + (-500 - 10 * i if ref else 3 + i)
        url = f"https://mast.stsci.edu/api/v0.1/Download/file?uri=mast:SWIFT/product/sw0003{obsid}001uuu_sk.img.gz"
        bodies[url] = fits_bytes("U", mjd, gz=True, seed=i)
        rows.append((obsid, "SWIFT", "UVOT", "U", mjd, mjd + 0.01, 500.0 + i, url))
    obs = Table(
        rows=rows,
        names=[
            "obsid",
            "obs_collection",
            "instrument_name",
            "filters",
            "t_min",
            "t_max",
            "t_exptime",
            "dataURL",
        ],
    )
    pairs, _ = find_pairs(obs, T0, target="SN 2011fe")
    return pairs, bodies


def serve(bodies: dict[str, bytes], fail: set[str] = frozenset()) -> ReplayServer:
    server = ReplayServer()
    for url, body in bodies.items():
        server.add(url, Reply(status=404) if url in fail else Reply(body=body), method="GET")
    return server


def test_download_writes_the_survey_layout_and_manifest(tmp_path):
    pairs, bodies = swift_pairs()
    events = []
    with serve(bodies) as server:
        report = download(
            pairs, tmp_path, sleep=Sleeps(), source="mast", progress=lambda e, p: events.append(e)
        )
    assert len(report.downloaded) == 4 and report.pairs == 4 and report.failed == []
    assert (
        server.count("Download/file", method="GET") == 4
    )  # each file once, though each is in two pairs
    assert events == ["downloaded"] * 4
    manifest = Manifest.load(tmp_path)
    assert manifest.data["source"] == "mast"
    target = manifest.targets["SN_2011fe"]
    assert target["object"] == "SN 2011fe" and target["discovery_mjd"] == pytest.approx(T0.mjd)
    roles = sorted(Path(f["path"]).parts[1] for f in target["files"])
    assert roles == ["reference", "reference", "science", "science"]
    record = target["files"][0]
    assert (
        record["mission"] == "SWIFT" and record["instrument"] == "UVOT" and record["filter"] == "U"
    )
    assert record["sha256"] and record["size"] == (tmp_path / record["path"]).stat().st_size
    assert record["path"].endswith(".fits.gz") and record["url"].startswith(
        "https://mast.stsci.edu"
    )
    survey_pairs = list(manifest.pairs())
    assert len(survey_pairs) == 4 and all(
        p.reference.exists() and p.science.exists() for p in survey_pairs
    )
    assert all(p.filter == "U" and p.mission == "SWIFT" for p in survey_pairs)
    assert read_image(survey_pairs[0].science).meta.telescope == "SWIFT"

    # a rerun fetches nothing; a file changed on disk is fetched again, and only it
    with serve(bodies) as server:
        again = download(pairs, tmp_path, sleep=Sleeps())
    assert again.downloaded == [] and len(again.skipped) == 4 and server.count("Download/file") == 0
    changed = tmp_path / target["files"][0]["path"]
    changed.write_bytes(fits_bytes("U", 1.0, gz=True, seed=99))
    with serve(bodies) as server:
        third = download(pairs, tmp_path, sleep=Sleeps())
    assert third.downloaded == [target["files"][0]["path"]] and server.count("Download/file") == 1


def test_a_failed_file_leaves_its_pairs_out(tmp_path):
    pairs, bodies = swift_pairs()
    missing = sorted(bodies)[-1]
    with serve(bodies, fail={missing}):
        report = download(pairs, tmp_path, sleep=Sleeps())
    assert len(report.failed) == 1 and "HTTP 404" in report.failed[0]["reason"]
    assert report.failed[0]["url"] == missing and report.pairs == 2
    manifest = Manifest.load(tmp_path)
    assert len(list(manifest.pairs())) == 2
    assert all(missing.split("/")[-1][:12] not in str(p.science) for p in manifest.pairs())
    with serve(bodies, fail={missing}), pytest.raises(AstridDownloadError):
        download(pairs, tmp_path, sleep=Sleeps(), raise_on_error=True)


def test_a_file_landed_before_the_manifest_was_saved_is_adopted(tmp_path):
    pairs, bodies = swift_pairs(1, 1)
    with serve(bodies):
        download(pairs, tmp_path, sleep=Sleeps())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    # forget the science file, as if the run died between the rename and the manifest save
    entry = manifest["targets"]["SN_2011fe"]
    entry["files"] = [f for f in entry["files"] if f["role"] == "reference"]
    entry["pairs"] = []
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with serve(bodies) as server:
        report = download(pairs, tmp_path, sleep=Sleeps())
    assert server.count("Download/file") == 0 and report.pairs == 1 and len(report.skipped) == 2
    assert len(Manifest.load(tmp_path).targets["SN_2011fe"]["files"]) == 2


def test_download_needs_urls(tmp_path):
    with pytest.raises(AstridInputError, match="ref_url"):
        download(Table({"target": ["x"]}), tmp_path)


def test_skyview_cutout_through_astroquery(tmp_path):
    astroquery = pytest.importorskip("astroquery")
    fits_url = "https://skyview.gsfc.nasa.gov/tempspace/fits/skv4242_1.fits"
    server = (
        ReplayServer()
        .add("basicform.pl", Reply(body=(DATA / "skyview_form.html").read_bytes()), method="GET")
        .add("runquery.pl", Reply(body=(DATA / "skyview_results.html").read_bytes()), method="GET")
        .add(fits_url, Reply(status=502), Reply(body=fits_bytes("R")), method="GET")
    )
    position = SkyCoord(210.774208 * u.deg, 54.273722 * u.deg)
    with astroquery.cache_conf.set_temp("cache_active", False), server:
        paths = skyview_cutouts(
            position, "DSS2 Red", tmp_path, pixels=256, name="SN 2011fe", sleep=Sleeps()
        )
    assert [p.name for p in paths] == ["SN_2011fe_DSS2_Red.fits"]
    validate_fits(paths[0])
    query = next(r for r in server.log if "runquery.pl" in r.url)
    assert query.params["survey"] == ["DSS2 Red"] and query.params["pixels"] == "256"
    assert query.params["Position"].startswith("210.77")
    with (
        astroquery.cache_conf.set_temp("cache_active", False),
        server,
        pytest.raises(AstridInputError, match="Survey is not among"),
    ):
        skyview_cutouts(position, "No Such Survey", tmp_path)
