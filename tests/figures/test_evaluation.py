"""astrid.evaluation: S_corr statistics, bright-star choice, the difference-file reader, completeness."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table
from matplotlib.figure import Figure

from astrid import DifferenceResult, evaluation, figures
from astrid.errors import AstridFileError, AstridInputError


def test_scorr_statistics_of_gaussian_noise():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(300, 300))
    mask = np.zeros(values.shape, bool)
    mask[:10] = True
    values[:10] = 100.0  # masked: must not count
    stats = evaluation.scorr_statistics(values, mask)
    assert stats["n"] == 290 * 300
    assert stats["robust_std"] == pytest.approx(1.0, abs=0.02)
    assert stats["std"] == pytest.approx(1.0, abs=0.02)
    assert stats["fraction_above_5"] == 0.0
    assert stats["gaussian_fraction_above_5"] == pytest.approx(math.erfc(5 / math.sqrt(2)))
    with pytest.raises(AstridInputError, match="no finite"):
        evaluation.scorr_statistics(np.full((4, 4), np.nan))
    with pytest.raises(AstridInputError, match="shape"):
        evaluation.scorr_statistics(values, mask[:5])


def test_bright_star_positions_picks_brightest_unsaturated_inside():
    stars = Table(
        {
            "x_ref": [50.0, 5.0, 60.0, 70.0, 80.0, 90.0, 30.0, 100.0, 104.0],
            "y_ref": [50.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 30.0, 30.0],
            "mag": [14.0, 12.0, 11.0, 15.0, 13.0, 16.0, 10.0, 17.0, 12.5],
            "saturated_ref": [False, False, True, False, False, False, False, False, False],
            "saturated_sci": [False] * 9,
            "variable": [False] * 6 + [True, False, False],
        }
    )
    mask = np.zeros((128, 128), bool)
    mask[88:93, 88:93] = True
    chosen = evaluation.bright_star_positions(
        stars, (128, 128), n=4, margin=10, mask=mask, isolation=10
    )
    # star 1 is at the edge, star 2 saturated, star 5 on a masked pixel, star 6 variable,
    # star 7 has the brighter star 8 within 10 px
    assert list(chosen["mag"]) == [12.5, 13.0, 14.0, 15.0]
    loose = evaluation.bright_star_positions(
        stars, (128, 128), n=9, margin=10, mask=mask, isolation=0
    )
    assert 17.0 in list(loose["mag"])
    with pytest.raises(AstridInputError, match="mag"):
        evaluation.bright_star_positions(Table({"x_ref": [1.0], "y_ref": [1.0]}), (8, 8))


def test_read_difference_round_trip(tmp_path, synthetic):
    result = DifferenceResult(
        method="zogy",
        science=synthetic.science,
        reference=synthetic.reference,
        D=synthetic.D,
        S=synthetic.S,
        S_corr=synthetic.S_corr,
        flux=synthetic.flux,
        flux_err=synthetic.flux_err,
        P_D=synthetic.P_D,
        science_psf=synthetic.science_psf,
        reference_psf=synthetic.reference_psf,
        science_background=None,
        reference_background=None,
        mask=synthetic.mask,
        footprint=synthetic.footprint,
        wcs=synthetic.wcs,
        metrics={"fwhm_sci": 3.0},
    )
    path = result.to_fits(tmp_path / "diff.fits")
    planes = evaluation.read_difference(path)
    assert planes.method == "zogy"
    np.testing.assert_array_equal(planes.S_corr, synthetic.S_corr.astype(planes.S_corr.dtype))
    np.testing.assert_array_equal(planes.mask, synthetic.mask)
    assert planes.wcs is not None and planes.path == path
    fig = figures.plot_difference(planes)  # the planes draw like a DifferenceResult
    assert isinstance(fig, Figure)
    figures.pyplot().close(fig)
    with pytest.raises(AstridFileError, match="does not exist"):
        evaluation.read_difference(tmp_path / "missing.fits")
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((4, 4))).writeto(tmp_path / "plain.fits")
    with pytest.raises(AstridFileError, match="not an AstrID difference file"):
        evaluation.read_difference(tmp_path / "plain.fits")


def test_completeness_by_hand(completeness_inputs):
    candidates, truth = completeness_inputs
    table = evaluation.completeness(candidates, truth, snr_bins=[1, 3, 10, 100])
    assert list(table["n_injected"]) == [
        1,
        1,
        3,
    ]  # the masked SN (id 6) and the cosmic ray are left out
    assert list(table["n_found"]) == [0, 1, 2]
    np.testing.assert_allclose(table["completeness"], [0, 1, 2 / 3])
    assert np.all(table["lower"] <= table["completeness"]) and np.all(
        table["upper"] >= table["completeness"]
    )
    # Wilson interval for 2 of 3 at z = 1
    p, n = 2 / 3, 3
    centre = (p + 1 / (2 * n)) / (1 + 1 / n)
    half = math.sqrt(p * (1 - p) / n + 1 / (4 * n * n)) / (1 + 1 / n)
    assert table["lower"][2] == pytest.approx(centre - half)
    both = evaluation.completeness(
        [candidates, candidates], [truth, truth], snr_bins=[1, 3, 10, 100], include_masked=True
    )
    assert list(both["n_injected"]) == [2, 2, 8]
    empty = evaluation.completeness(candidates, truth, snr_bins=[100, 200])
    assert np.isnan(empty["completeness"][0])
    with pytest.raises(AstridInputError, match="one truth table per"):
        evaluation.completeness([candidates], [truth, truth])
    with pytest.raises(AstridInputError, match="snr_sci"):
        evaluation.completeness(candidates, truth[["id", "kind"]])


def test_evaluation_needs_no_matplotlib():
    """Scripts take the numbers without a plotting stack: importing the module loads no Matplotlib."""
    code = "import sys, astrid.evaluation; sys.exit('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
