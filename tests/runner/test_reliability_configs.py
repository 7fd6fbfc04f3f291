"""Bad input for configuration files and downloads (issue 14): run and
acquisition configurations and download addresses each get an AstridError
that names the file or address and says what is wrong.
"""

from __future__ import annotations

import pytest

from astrid.errors import AstridFileError, AstridInputError
from astrid.runner import RunConfig

pytest.importorskip("yaml")

_RUN_CASES = [
    ("a: [1, 2\n", AstridInputError, "not valid YAML"),
    ("- 1\n- 2\n", AstridInputError, "must be a mapping of settings, got list"),
    ("bogus_key: 1\n", AstridInputError, "unknown setting.*'bogus_key'"),
    ("notebooks: [nb.ipynb]\nworkers: 2\n", AstridInputError, "did you mean 'n_workers'"),
    ("", AstridInputError, "run configuration file is empty"),
    (
        "notebooks: [nb.ipynb]\nparameters: {size: .inf}\n",
        AstridInputError,
        r"parameters\['size'\] = inf cannot be stored",
    ),
    ("notebooks: 5\n", AstridInputError, "'notebooks' must be a non-empty list"),
    ("notebooks: []\n", AstridInputError, "'notebooks' must be a non-empty list"),
    (
        "notebooks: [nb.ipynb]\ngrid: {size: []}\n",
        AstridInputError,
        r"grid\['size'\] must be a non-empty list",
    ),
]


@pytest.mark.parametrize("text, error, message", _RUN_CASES)
def test_bad_run_configurations(tmp_path, text, error, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(error, match=message) as info:
        RunConfig.from_yaml(path)
    assert "run.yaml" in str(info.value)


def test_run_configuration_paths_of_the_wrong_kind(tmp_path):
    with pytest.raises(AstridFileError, match="is a folder; give the run configuration"):
        RunConfig.from_yaml(tmp_path)
    with pytest.raises(
        AstridFileError, match="missing.yaml: run configuration file does not exist"
    ):
        RunConfig.from_yaml(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x00\xff\xfe")
    with pytest.raises(AstridFileError, match="binary.yaml: cannot be read"):
        RunConfig.from_yaml(binary)


def test_acquisition_configuration_paths(tmp_path):
    from astrid.acquire import AcquisitionConfig

    with pytest.raises(AstridFileError, match="is a folder; give the acquisition configuration"):
        AcquisitionConfig.from_yaml(tmp_path)
    with pytest.raises(AstridFileError, match="configuration file does not exist"):
        AcquisitionConfig.from_yaml(tmp_path / "none.yaml")


@pytest.mark.parametrize(
    "url",
    ["ftp://example.org/a.fits", "s3://bucket/a.fits", "gopher://x/a.fits", "sftp://host/a.fits"],
)
def test_download_schemes_that_cannot_be_fetched_fail_at_once(tmp_path, url):
    from astrid.acquire import AstridDownloadError, fetch_file

    calls = []
    with pytest.raises(AstridDownloadError, match=rf"{url.split(':')[0]}:// addresses") as info:
        fetch_file(url, tmp_path / "a.fits", sleep=calls.append)
    assert info.value.attempts == 0 and calls == []  # permanent: no retries, no waiting
    assert list(tmp_path.iterdir()) == []


def test_download_targets_of_the_wrong_kind(tmp_path):
    from astrid.acquire import AstridDownloadError, fetch_file

    source = tmp_path / "src.fits"
    source.write_bytes(b"")
    with pytest.raises(AstridDownloadError, match="the download target is a folder"):
        fetch_file(str(source), tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AstridDownloadError, match="cannot create the folder"):
        fetch_file(str(source), blocker / "a.fits")
