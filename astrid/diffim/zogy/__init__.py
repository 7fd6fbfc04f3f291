"""ZOGY proper image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27).

:func:`subtract` works on aligned, background-subtracted arrays: it takes the
reference and the science image as keyword-only :class:`ZogyImage` values
(pixels, PSF, noise σ, optional variance map and noise autocorrelation), with
the settings that belong to neither image in a :class:`ZogyOptions`, and
returns the proper difference image D, its PSF, the detection statistic S,
the corrected statistic S_corr (source and astrometric noise) and
PSF-photometry flux maps in one :class:`ZogyResult`.
For images or FITS files use :func:`astrid.difference`, which aligns, measures
backgrounds, PSFs and the flux ratio first.

The validation and mask helpers (:func:`check_dtype`,
:func:`check_astrometric`, :func:`as_aligned_pair`, :func:`bad_pixels`,
:func:`untrusted`, :func:`check_mask_fraction`, ...) are importable from here
for the other subtraction methods and the pipeline, which share ZOGY's rules;
they are not part of ``__all__`` (the ``x as x`` imports mark them as
re-exported on purpose).
"""

from ._core import (
    MASK_WARN_FRACTION,
    ZogyImage,
    ZogyOptions,
    ZogyResult,
    estimate_noise_acf,
    flux_at,
    robust_std,
    subtract,
)
from ._core import as_aligned_pair as as_aligned_pair
from ._core import bad_pixels as bad_pixels
from ._core import check_astrometric as check_astrometric
from ._core import check_dtype as check_dtype
from ._core import check_map as check_map
from ._core import check_mask_fraction as check_mask_fraction
from ._core import check_positive as check_positive
from ._core import untrusted as untrusted

__all__ = [
    "MASK_WARN_FRACTION",
    "ZogyImage",
    "ZogyOptions",
    "ZogyResult",
    "estimate_noise_acf",
    "flux_at",
    "robust_std",
    "subtract",
]
