"""Shared fixtures."""

from __future__ import annotations

import pytest
from astropy.io import fits

from astrid.paths import shared_data
from astrid.simulate.datasets import tan_wcs


@pytest.fixture(autouse=True)
def _no_tracking_into_the_repository(monkeypatch):
    """Trainings in tests log nothing to MLflow (tests/tracking/test_tracking.py turns it on into tmp_path).

    The environment reaches the notebooks' kernels too, so the CI run of the main job leaves no
    ./mlruns behind either.
    """
    monkeypatch.setenv("ASTRID_TRACKING", "off")


@pytest.fixture
def tan_header():
    """A header with a TAN WCS and the usual metadata keys."""
    header = tan_wcs((64, 64)).to_header()
    header["TELESCOP"] = "P48"
    header["INSTRUME"] = "ZTF/MOSAIC"
    header["FILTER"] = "ZTF_r "
    header["MJD-OBS"] = 59000.25
    header["EXPTIME"] = 30.0
    header["GAIN"] = 6.2
    header["MAGZP"] = 26.3
    header["SATURATE"] = 5000.0
    return header


@pytest.fixture
def write_fits(tmp_path):
    """Write an HDU list to a temp file and return its path."""

    def _write(hdus, name="image.fits"):
        path = tmp_path / name
        fits.HDUList(hdus).writeto(path)
        return path

    return _write


@pytest.fixture(scope="session")
def shared():
    """The shared real-data folder, or skip."""
    path = shared_data()
    if path is None:
        pytest.skip("shared real data (../shared/data or $ASTRID_SHARED_DATA) is not present")
    return path
