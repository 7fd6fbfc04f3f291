"""Fixtures shared by the figure and evaluation tests."""

from __future__ import annotations

import pytest
from astropy.table import Table


@pytest.fixture(scope="module")
def synthetic():
    """A small simulated difference (ZOGY planes and truth) with four transients."""
    from astrid.triplets import SyntheticScene, synthetic_difference

    return synthetic_difference(
        (128, 128), SyntheticScene(n_transients=4, n_stars=8, n_galaxies=1), seed=3
    )


@pytest.fixture
def completeness_inputs():
    """Labelled candidates and truth of one image, small enough to count by hand."""
    truth = Table(
        {
            "id": [0, 1, 2, 3, 4, 5, 6],
            "kind": ["supernova"] * 5 + ["cosmic_ray", "supernova"],
            "snr_sci": [2.5, 4.0, 12.0, 12.5, 40.0, 50.0, 12.0],
            "masked": [False, False, False, False, False, False, True],
        }
    )
    candidates = Table(
        {
            "truth_id": [1, 2, 3, 5, -1, 4],
            "label": [1, 1, 0, 0, 0, 1],  # id 3 matched but labelled bogus does not count
        }
    )
    return candidates, truth


@pytest.fixture(scope="module")
def kernel_difference():
    """A 256² simulated pair differenced with the fitted kernel (5 stamps, spatial degree 0).

    So small a pair leaves the detection image miscalibrated, which ``difference`` warns about
    (docs/kernel.md); the figures do not mind.
    """
    import warnings

    import astrid

    sim = astrid.simulate.pair(256, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return astrid.difference(sim.reference, sim.science, method="kernel")
