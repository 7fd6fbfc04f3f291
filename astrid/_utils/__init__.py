"""Helpers shared by every part of AstrID: one helper per concept.

- :mod:`.stats` — robust σ (1.4826 × MAD through :func:`astropy.stats.mad_std`),
  σ from neighbouring-pixel differences, and the Gaussian FWHM/σ conversion.
- :mod:`.serialise` — :func:`json_safe`, the one rule for writing values to JSON
  (non-finite floats become ``null``).
- :mod:`.fits` — :func:`first_image_hdu`, the one rule for choosing a FITS image HDU.
- :mod:`.memory` — :func:`reuse_freed_memory`, freed image-sized arrays kept for reuse (glibc).
- :mod:`.kinds` — :func:`kinds_tuple`, the one rule for a ``real_kinds`` argument.

Modules anywhere in the package import these; nothing outside the package should.
"""

from .fits import first_image_hdu, is_image_hdu
from .kinds import kinds_tuple
from .memory import reuse_freed_memory
from .serialise import json_safe
from .stats import (
    GAUSSIAN_SIGMA_TO_FWHM,
    fwhm_to_sigma,
    neighbour_noise,
    robust_std,
    robust_std_about,
    sigma_to_fwhm,
)

__all__ = [
    "GAUSSIAN_SIGMA_TO_FWHM",
    "first_image_hdu",
    "fwhm_to_sigma",
    "is_image_hdu",
    "json_safe",
    "kinds_tuple",
    "neighbour_noise",
    "reuse_freed_memory",
    "robust_std",
    "robust_std_about",
    "sigma_to_fwhm",
]
