"""Sources of the reference image: the neighbours a candidate is compared with."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..diffim import find_stars
from ..errors import AstridInputError

__all__ = ["reference_catalog"]

# A source is extended (a galaxy) when its window-corrected FWHM exceeds the
# image's stellar FWHM by this factor; stars scatter by ~10 % at S/N >= 10.
EXTENDED_FWHM_FACTOR = 1.3
# Only sources at least this significant are classified star/galaxy: at lower
# S/N the FWHM is too noisy to tell them apart.
_CLASSIFY_MIN_SNR = 10.0


def reference_catalog(
    image,
    *,
    fwhm: float | None = None,
    threshold: float = 5.0,
    extended_factor: float = EXTENDED_FWHM_FACTOR,
) -> Table:
    """Sources of a (background-subtracted) reference image, stars and galaxies.

    Parameters
    ----------
    image : astrid.Image or numpy.ndarray, shape (ny, nx)
        The reference on the grid of the difference image. An ``Image``
        contributes its mask.
    fwhm : float, optional
        Stellar FWHM in pixels; by default measured by
        :func:`astrid.find_stars`.
    threshold : float, optional
        Detection threshold (matched-filter S/N), default 5.
    extended_factor : float, optional
        A source with ``fwhm > extended_factor * stellar FWHM`` is extended.

    Returns
    -------
    astropy.table.Table
        The columns of :func:`~astrid.find_stars` (``x``, ``y``,
        ``flux``, ``snr``, ``fwhm``, ...) plus ``extended`` (bool): a source
        at S/N >= 10, neither saturated nor masked, broader than a star or
        too broad for the measurement window (FWHM undefined).
    """
    data = getattr(image, "data", image)
    mask = getattr(image, "mask", None)
    data = np.asarray(data)
    if data.ndim != 2:
        raise AstridInputError(f"reference image: must be 2-D, got shape {data.shape}")
    sources = find_stars(data, mask=mask, threshold=threshold, fwhm=fwhm)
    stellar_fwhm = float(sources.meta.get("fwhm", fwhm or np.nan))
    source_fwhm = np.asarray(sources["fwhm"], dtype=float)
    clean = ~np.asarray(sources["saturated"]) & ~np.asarray(sources["masked"])
    significant = np.asarray(sources["snr"], dtype=float) >= _CLASSIFY_MIN_SNR
    with np.errstate(invalid="ignore"):
        broad = (source_fwhm > extended_factor * stellar_fwhm) | ~np.isfinite(source_fwhm)
    sources["extended"] = clean & significant & broad
    sources.meta["extended_factor"] = float(extended_factor)
    return sources
