"""The survey manifest shared by the simulator and the archive downloads."""

from __future__ import annotations

import json

import pytest

from astrid.errors import AstridFileError, AstridInputError
from astrid.manifest import SCHEMA, Manifest


def _touch(root, rel, content=b"data"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_roundtrip_pairs_and_checksums(tmp_path):
    manifest = Manifest(tmp_path, source="test")
    _touch(tmp_path, "SN1/reference/r.fits", b"ref")
    _touch(tmp_path, "SN1/science/s.fits.gz", b"sci")
    manifest.target("SN1", ra=10.0, dec=-5.0)
    manifest.add_file("SN1", "SN1/reference/r.fits", "reference", mission="SWIFT", filter="U")
    manifest.add_file(
        "SN1", tmp_path / "SN1/science/s.fits.gz", "science", mission="SWIFT", filter="U"
    )
    manifest.add_pair(
        "SN1", "SN1/reference/r.fits", "SN1/science/s.fits.gz", mission="SWIFT", filter="U"
    )
    manifest.save()

    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["schema"] == SCHEMA and data["source"] == "test"
    back = Manifest.load(tmp_path)
    (pair,) = list(back.pairs())
    assert pair.reference == tmp_path / "SN1/reference/r.fits"
    assert pair.filter == "U" and pair.name == "SN1/s"
    assert back.has_file("SN1/reference/r.fits")
    # a file changed on disk no longer verifies, so a resumed download fetches it again
    _touch(tmp_path, "SN1/reference/r.fits", b"REF")
    assert not back.has_file("SN1/reference/r.fits")
    assert back.has_file("SN1/reference/r.fits", verify=False)
    assert not back.has_file("SN1/science/other.fits")


def test_re_adding_replaces_rather_than_duplicates(tmp_path):
    manifest = Manifest(tmp_path)
    for _ in range(2):
        manifest.add_file("T", "T/reference/a.fits", "reference", checksum=False)
        manifest.add_pair("T", "T/reference/a.fits", "T/science/b.fits")
    assert len(manifest.targets["T"]["files"]) == 1
    assert len(manifest.targets["T"]["pairs"]) == 1


def test_bad_role_and_missing_or_corrupt_manifest(tmp_path):
    with pytest.raises(AstridInputError, match="role"):
        Manifest(tmp_path).add_file("T", "x.fits", "template")
    with pytest.raises(AstridFileError, match="no manifest.json"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(AstridFileError, match="corrupt manifest"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(AstridInputError, match="unknown manifest schema"):
        Manifest.load(tmp_path)
