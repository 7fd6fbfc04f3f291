"""ZOGY proper image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27).

:func:`subtract` works on aligned, background-subtracted arrays with their
PSFs and noise levels and returns the proper difference image D, its PSF, the
detection statistic S, the corrected statistic S_corr (source and astrometric
noise) and PSF-photometry flux maps in one :class:`ZogyResult`.
For images or FITS files use :func:`astrid.difference`, which aligns, measures
backgrounds, PSFs and the flux ratio first.
"""

from ._core import ZogyResult, estimate_noise_acf, flux_at, robust_std, subtract

__all__ = ["ZogyResult", "subtract", "flux_at", "robust_std", "estimate_noise_acf"]
