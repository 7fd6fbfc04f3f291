"""Simulated survey data: reference/science pairs with a truth table.

The embedded default data set of AstrID (no network needed): every effect
that makes difference imaging hard (different pixel grids, PSFs, zero points
and sky; saturation and bleeds; cosmic rays, hot pixels, bad columns,
satellite trails) with supernovae, variable stars and asteroids whose
positions and fluxes are known.

>>> import astrid
>>> sim = astrid.simulate.pair(size=512, seed=1)          # doctest: +SKIP
>>> sim.truth[sim.truth["kind"] == "supernova"]           # doctest: +SKIP
>>> astrid.simulate.survey("data/survey", n_fields=4)     # doctest: +SKIP
"""

from . import datasets  # small exact test images: tan_wcs, star_field, moffat_psf, ...
from ._core import SimulatedPair, pair
from ._evaluate import (
    explained_mask,
    near_stars_mask,
    significant_peaks,
    source_free_mask,
)
from ._params import EPOCHS, TRUTH_KINDS
from ._presets import PRESETS
from ._survey import survey

__all__ = [
    "SimulatedPair",
    "pair",
    "survey",
    "PRESETS",
    "TRUTH_KINDS",
    "EPOCHS",
    "explained_mask",
    "near_stars_mask",
    "source_free_mask",
    "significant_peaks",
    "datasets",
]
