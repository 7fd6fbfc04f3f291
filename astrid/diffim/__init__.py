"""Image differencing, one module per stage (named after LSST's ``ip_diffim``).

============================  =========================================================
stage                         module (public names)
============================  =========================================================
input normalisation           :mod:`.image` (:func:`as_image`)
star detection, matching      :mod:`.stars` (:func:`find_stars`, :func:`match_stars`)
alignment                     :mod:`.align` (:func:`align`, :class:`Alignment`)
background                    :mod:`.background` (:func:`estimate_background`)
PSF                           :mod:`.psf` (:func:`estimate_psf`, :class:`PSFModel`)
flux ratio                    :mod:`.photometry` (:func:`flux_ratio`, :class:`FluxRatio`)
classic subtraction           :mod:`.classic` (:func:`classic_subtract`)
NaN-pixel repair              :mod:`.inpaint` (:func:`repair_isolated`)
quality verdict               :mod:`.quality` (:func:`assess`, :class:`Quality`)
options                       :mod:`.options` (:class:`DifferenceOptions`)
the whole chain               :mod:`.pipeline` (:func:`difference`, :class:`DifferenceResult`)
============================  =========================================================

ZOGY itself is :mod:`astrid.zogy`. Every stage takes its two images in one
order, ``(reference, science)``; where that order changed (``align``,
``flux_ratio``, ``classic_subtract``) the images are keyword-only.
"""

from .alignment import Alignment, align
from .background import Background, estimate_background, estimate_backgrounds
from .classic import ClassicResult, classic_subtract
from .image import as_image
from .inpaint import repair_isolated
from .options import DifferenceOptions
from .photometry import FluxRatio, flux_ratio
from .pipeline import (
    FLUX_RATIO_RANGE,
    SCORR_STD_TOLERANCE,
    DifferenceResult,
    difference,
)
from .psf import PSFModel, estimate_psf, gaussian_psf, measure_fwhm, psf_to_fft_origin
from .quality import Quality, QualityReason, assess
from .stars import find_stars, match_stars

__all__ = [
    "Alignment",
    "Background",
    "ClassicResult",
    "DifferenceOptions",
    "DifferenceResult",
    "FLUX_RATIO_RANGE",
    "FluxRatio",
    "PSFModel",
    "Quality",
    "QualityReason",
    "SCORR_STD_TOLERANCE",
    "align",
    "as_image",
    "assess",
    "classic_subtract",
    "difference",
    "estimate_background",
    "estimate_backgrounds",
    "estimate_psf",
    "find_stars",
    "flux_ratio",
    "gaussian_psf",
    "match_stars",
    "measure_fwhm",
    "psf_to_fft_origin",
    "repair_isolated",
]
