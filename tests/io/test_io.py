"""FITS reading and writing, including the corner cases of bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

import astrid
from astrid.errors import AstridFileError, AstridInputError, AstridWarning, AstridWCSError
from astrid.io import Image, atomic_write, read_image, write_image


def test_reads_primary_with_wcs_and_metadata(write_fits, tan_header):
    data = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    path = write_fits([fits.PrimaryHDU(data, header=tan_header)])
    image = read_image(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.wcs is not None and image.wcs.has_celestial
    assert image.meta.telescope == "P48"
    assert image.meta.instrument == "ZTF/MOSAIC"
    assert image.meta.filter == "ZTF_r"
    assert isinstance(image.meta.obs_time, Time)
    assert image.meta.obs_time.mjd == pytest.approx(59000.25)
    assert image.meta.exptime == 30.0 and image.meta.gain == 6.2 and image.meta.zeropoint == 26.3
    assert image.meta.path == str(path)
    # pixels at or above SATURATE are masked, the rest are not
    np.testing.assert_array_equal(image.mask, data >= 5000.0)


def test_first_hdu_with_2d_data_when_primary_is_empty(write_fits, tan_header):
    data = np.ones((10, 12))
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "SWIFT"
    primary.header["DATE-OBS"] = "2014-01-22T19:10:00"
    path = write_fits([primary, fits.ImageHDU(data, header=tan_header, name="SCI")])
    image = read_image(path)
    assert image.shape == (10, 12)
    assert image.meta.hdu == 1
    # keys present only in the primary header still reach the metadata when the extension lacks them
    assert image.meta.telescope == "P48"  # the extension's own key wins
    assert image.data.dtype == np.float64


def test_primary_keys_fill_in_for_extension(write_fits):
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "SWIFT"
    primary.header["FILTER"] = "UVW1"
    primary.header["DATE-OBS"] = "2014-01-22"
    primary.header["TIME-OBS"] = "19:10:00"
    path = write_fits([primary, fits.ImageHDU(np.ones((8, 8), dtype=np.float32))])
    image = read_image(path)
    assert image.meta.telescope == "SWIFT" and image.meta.filter == "UVW1"
    assert image.meta.obs_time.isot.startswith("2014-01-22T19:10:00")


def test_named_hdu_and_missing_hdu(write_fits):
    path = write_fits(
        [fits.PrimaryHDU(np.zeros((4, 4))), fits.ImageHDU(np.ones((5, 5)), name="SCI")]
    )
    assert read_image(path, hdu="SCI").shape == (5, 5)
    with pytest.raises(AstridInputError, match="no HDU 'NOPE'"):
        read_image(path, hdu="NOPE")


def test_cube_gives_first_plane_with_warning(write_fits):
    cube = np.stack([np.full((6, 7), i, dtype=np.float32) for i in range(3)])
    path = write_fits([fits.PrimaryHDU(cube)])
    with pytest.warns(AstridWarning, match="3-D cube"):
        image = read_image(path)
    assert image.shape == (6, 7)
    assert np.all(image.data == 0)


def test_missing_file(tmp_path):
    with pytest.raises(AstridFileError, match="does not exist"):
        read_image(tmp_path / "nope.fits")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    with pytest.raises(AstridFileError, match="empty"):
        read_image(path)


def test_not_fits(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(AstridFileError, match="notes.fits"):
        read_image(path)


def test_truncated_fits(write_fits):
    path = write_fits([fits.PrimaryHDU(np.random.default_rng(0).normal(size=(200, 200)))])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AstridFileError, match="truncated|corrupt"):
        read_image(path)


def test_no_2d_data(write_fits):
    path = write_fits(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]
    )
    with pytest.raises(AstridInputError, match="no HDU holds 2-D image data"):
        read_image(path)


def test_all_nan(write_fits):
    path = write_fits([fits.PrimaryHDU(np.full((5, 5), np.nan))])
    with pytest.raises(AstridInputError, match="no finite pixels"):
        read_image(path)


def test_nan_pixels_masked(write_fits):
    data = np.ones((5, 5))
    data[2, 3] = np.nan
    data[0, 0] = np.inf
    image = read_image(write_fits([fits.PrimaryHDU(data)]))
    assert image.mask.sum() == 2 and image.mask[2, 3] and image.mask[0, 0]


def test_missing_wcs_when_required(write_fits):
    path = write_fits([fits.PrimaryHDU(np.ones((5, 5)))])
    assert read_image(path).wcs is None
    with pytest.raises(AstridWCSError, match="image.fits.*no celestial WCS"):
        read_image(path, require_wcs=True)


def test_saturation_parameter_overrides_header(write_fits, tan_header):
    data = np.linspace(0, 10000, 64 * 64).reshape(64, 64)
    image = read_image(write_fits([fits.PrimaryHDU(data, header=tan_header)]), saturation=9000)
    assert image.meta.saturation == 9000
    np.testing.assert_array_equal(image.mask, data >= 9000)


def test_deprecated_header_forms_are_silent(write_fits, tan_header):
    # RADECSYS and a date without time are old forms astropy fixes with a FITSFixedWarning;
    # filterwarnings=error makes this test fail if any warning escapes.
    tan_header["RADECSYS"] = "FK5"
    tan_header["DATE-OBS"] = "2019-05-01"
    del tan_header["MJD-OBS"]
    image = read_image(write_fits([fits.PrimaryHDU(np.ones((64, 64)), header=tan_header)]))
    assert image.wcs is not None
    assert image.meta.obs_time.isot.startswith("2019-05-01")


def test_write_read_roundtrip_with_mask_variance_and_provenance(tmp_path, tan_header):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(64, 64)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[3:5, 7] = True
    variance = np.full((64, 64), 2.0, dtype=np.float32)
    from astropy.wcs import WCS

    image = Image(data=data, wcs=WCS(tan_header), mask=mask, variance=variance, header=tan_header)
    path = write_image(
        tmp_path / "out" / "x.fits", image, step="test", parameters={"a": 1, "b": "two"}
    )
    back = read_image(path)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(back.mask, mask)
    np.testing.assert_array_equal(back.variance, variance)
    assert back.header["ASTRIDV"] == astrid.__version__
    assert back.header["ASTRSTEP"] == "test"
    assert '"a": 1' in back.header["ASTRPARS"]
    assert np.allclose(back.wcs.wcs.crval, image.wcs.wcs.crval)
    assert not list(path.parent.glob("*.part"))


def test_write_gzipped(tmp_path):
    image = Image(data=np.ones((8, 8), dtype=np.float32))
    path = write_image(tmp_path / "x.fits.gz", image)
    with gzip.open(path) as fh:
        assert fh.read(6) == b"SIMPLE"
    assert read_image(path).shape == (8, 8)


def test_long_parameters_continue_over_cards(tmp_path):
    params = {f"parameter_{i}": i for i in range(20)}
    path = write_image(
        tmp_path / "x.fits", Image(data=np.zeros((4, 4))), step="s", parameters=params
    )
    assert json.loads(fits.getheader(path)["ASTRPARS"]) == params


def test_write_refuses_overwrite_when_asked(tmp_path):
    path = write_image(tmp_path / "x.fits", Image(data=np.zeros((4, 4))))
    with pytest.raises(AstridFileError, match="exists"):
        write_image(path, Image(data=np.zeros((4, 4))), overwrite=False)


def test_atomic_write_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_image_validates_shapes():
    with pytest.raises(AstridInputError, match="2-D"):
        Image(data=np.zeros((2, 3, 4)))
    with pytest.raises(AstridInputError, match="mask shape"):
        Image(data=np.zeros((3, 3)), mask=np.zeros((2, 2), bool))
    with pytest.raises(AstridInputError, match="variance shape"):
        Image(data=np.zeros((3, 3)), variance=np.zeros((2, 2)))
    image = Image(data=np.array([[1, 2], [3, 4]], dtype=np.int16))
    assert image.data.dtype == np.float32


@pytest.mark.parametrize("n", range(0, 12))
def test_parameter_cards_of_any_length_write_without_warnings(tmp_path, n):
    # filterwarnings=error turns astropy's "card is too long" VerifyWarning into a failure
    params = {"name": "x" * (4 * n), "quote": "it's"}
    path = write_image(
        tmp_path / "x.fits", Image(data=np.zeros((4, 4))), step="s", parameters=params
    )
    assert json.loads(fits.getheader(path)["ASTRPARS"]) == params


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os

    path = atomic_write(tmp_path / "f.txt", lambda fh: fh.write(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
