"""Small test images built in a few lines (in the spirit of ``photutils.datasets``).

Where :func:`astrid.simulate.pair` renders a whole survey epoch with every
artefact, these make one thing each, exactly: a TAN WCS, a field of stars at
given positions, a Moffat PSF, a field of round stars among elliptical
galaxies. Tests and examples use them to know the truth pixel by pixel.

>>> from astrid.simulate import datasets
>>> wcs = datasets.tan_wcs((256, 256), scale_arcsec=0.5)
>>> image = datasets.star_field((256, 256), [(100.0, 120.5)], [5000.0], fwhm=3.0, seed=1)
"""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS
from scipy.special import erf

from .._utils import fwhm_to_sigma

__all__ = ["add_elliptical_gaussian", "moffat_psf", "star_field", "stars_among_galaxies", "tan_wcs"]


def tan_wcs(
    shape,
    *,
    ra: float = 150.0,
    dec: float = 2.0,
    scale_arcsec: float = 1.0,
    rotation_deg: float = 0.0,
    crpix_offset=(0.0, 0.0),
    crpix=None,
) -> WCS:
    """A gnomonic (TAN) celestial WCS, north up and east left before rotation.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    ra, dec : float, optional
        Sky position of the reference pixel (degrees).
    scale_arcsec : float, optional
        Pixel scale (arcsec per pixel).
    rotation_deg : float, optional
        Rotation of the pixel axes (degrees).
    crpix_offset : (float, float), optional
        Shift (pixels, x then y) of the reference pixel from the image centre
        ``(nx / 2 + 0.5, ny / 2 + 0.5)`` (1-based FITS convention).
    crpix : (float, float), optional
        The reference pixel itself (1-based), instead of the centre plus offset;
        the scale is then written as ``CDELT`` without rotation (``rotation_deg``
        must be 0).

    Returns
    -------
    astropy.wcs.WCS
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    if crpix is not None:
        if rotation_deg:
            raise ValueError("tan_wcs: crpix= writes CDELT, which has no rotation")
        wcs.wcs.crpix = list(crpix)
        wcs.wcs.cdelt = [-scale_arcsec / 3600.0, scale_arcsec / 3600.0]
        return wcs
    wcs.wcs.crpix = [shape[1] / 2 + 0.5 + crpix_offset[0], shape[0] / 2 + 0.5 + crpix_offset[1]]
    t = math.radians(rotation_deg)
    s = scale_arcsec / 3600.0
    wcs.wcs.cd = s * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
    wcs.wcs.set()
    return wcs


def star_field(
    shape,
    xy,
    flux,
    fwhm: float | None = None,
    *,
    psf=None,
    sky: float = 100.0,
    noise: float = 5.0,
    seed: int = 0,
) -> np.ndarray:
    """Stars at known positions on a flat sky with Gaussian noise.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    xy : array_like, shape (n, 2)
        0-based ``(x, y)`` positions (pixel centres at integers).
    flux : array_like, shape (n,)
        Total flux of each star (data units).
    fwhm : float, optional
        Gaussian FWHM (pixels): pixel-integrated Gaussian stars (exact at any
        sub-pixel position). Give this or ``psf``.
    psf : numpy.ndarray, shape (m, m), optional
        A centred, odd-sized PSF stamp (sum 1) placed at each rounded position.
    sky : float, optional
        Sky level (data units).
    noise : float, optional
        Standard deviation of the white noise added (data units).
    seed : int, optional
        Seed of :func:`numpy.random.default_rng` for the noise.

    Returns
    -------
    numpy.ndarray of float32, shape ``shape``
    """
    if (fwhm is None) == (psf is None):
        raise ValueError("star_field: give fwhm= (Gaussian stars) or psf= (a PSF stamp), not both")
    img = np.zeros(shape)
    if psf is None:
        _add_gaussians(img, xy, flux, fwhm)
    else:
        _add_stamps(img, xy, flux, np.asarray(psf))
    rng = np.random.default_rng(seed)
    return (img + sky + rng.normal(0.0, noise, shape)).astype(np.float32)


def _add_gaussians(img, xy, flux, fwhm) -> None:
    """Pixel-integrated Gaussian stars (the product of erf differences along x and y)."""
    shape = img.shape
    s = fwhm_to_sigma(fwhm)
    r = int(math.ceil(5 * fwhm))
    for (x, y), f in zip(xy, flux):
        if not (-r < x < shape[1] + r and -r < y < shape[0] + r):
            continue
        xs = np.arange(max(int(x) - r, 0), min(int(x) + r + 1, shape[1]))
        ys = np.arange(max(int(y) - r, 0), min(int(y) + r + 1, shape[0]))
        if xs.size == 0 or ys.size == 0:
            continue
        gx = 0.5 * (
            erf((xs + 0.5 - x) / (math.sqrt(2) * s)) - erf((xs - 0.5 - x) / (math.sqrt(2) * s))
        )
        gy = 0.5 * (
            erf((ys + 0.5 - y) / (math.sqrt(2) * s)) - erf((ys - 0.5 - y) / (math.sqrt(2) * s))
        )
        img[np.ix_(ys, xs)] += f * np.outer(gy, gx)


def _add_stamps(img, xy, flux, psf) -> None:
    """An integer-centred PSF stamp at each rounded position, cut at the image edges."""
    shape = img.shape
    h = psf.shape[0] // 2
    for (x, y), f in zip(xy, flux):
        xi, yi = int(round(x)), int(round(y))
        y0, y1 = max(yi - h, 0), min(yi + h + 1, shape[0])
        x0, x1 = max(xi - h, 0), min(xi + h + 1, shape[1])
        img[y0:y1, x0:x1] += f * psf[y0 - yi + h : y1 - yi + h, x0 - xi + h : x1 - xi + h]


def moffat_psf(fwhm: float, beta: float = 2.8, size: int | None = None) -> np.ndarray:
    """A pixel-integrated (5 × 5 sub-sampled) Moffat PSF.

    Parameters
    ----------
    fwhm : float
        FWHM in pixels.
    beta : float, optional
        Moffat β (wings fall as r^(−2β)).
    size : int, optional
        Odd side of the stamp; default ``2 ceil(8 FWHM) + 1``.

    Returns
    -------
    numpy.ndarray, shape (size, size)
        Normalised to sum 1 over the infinite plane (slightly less within the stamp).
    """
    n = size or (2 * int(math.ceil(8 * fwhm)) + 1)
    sub = (np.arange(5) + 0.5) / 5 - 0.5
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    r2 = (xx[..., None, None] + sub[None, None, None, :]) ** 2 + (
        yy[..., None, None] + sub[None, None, :, None]
    ) ** 2
    prof = (beta - 1) / (math.pi * alpha**2) * (1 + r2 / alpha**2) ** (-beta)
    return prof.mean(axis=(2, 3))


def add_elliptical_gaussian(
    img: np.ndarray,
    x: float,
    y: float,
    flux: float,
    fwhm_major: float,
    axis_ratio: float = 1.0,
    angle: float = 0.0,
) -> None:
    """Add (in place) an elliptical Gaussian of total ``flux`` at ``(x, y)``.

    Parameters
    ----------
    img : numpy.ndarray, shape (ny, nx)
        Image to add to; the source must lie 5 σ inside its edges.
    x, y : float
        0-based centre.
    flux : float
        Total flux (the sampled profile is normalised to sum ``flux``).
    fwhm_major : float
        FWHM along the major axis (pixels).
    axis_ratio : float, optional
        Minor over major axis.
    angle : float, optional
        Position angle of the major axis (radians, from +x towards +y).
    """
    s_major = fwhm_to_sigma(fwhm_major)
    s_minor = s_major * axis_ratio
    r = int(math.ceil(5 * s_major)) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(float)
    xi, yi = int(round(x)), int(round(y))
    dx, dy = xx - (x - xi), yy - (y - yi)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    prof = np.exp(-0.5 * ((u / s_major) ** 2 + (v / s_minor) ** 2))
    img[yi - r : yi + r + 1, xi - r : xi + r + 1] += flux * prof / prof.sum()


def stars_among_galaxies(
    n_stars: int,
    n_galaxies: int,
    *,
    size: int = 480,
    star_fwhm: float = 2.5,
    seed: int = 0,
    step: int = 40,
):
    """Round Gaussian stars of one width among elliptical galaxies of many sizes, on unit white noise.

    Sources sit on a jittered grid of ``step`` pixels, so most are isolated;
    stars have fluxes 2e3-2e4, galaxies 3e3-3e4 with FWHM 4-11 px and axis
    ratios 0.45-0.85.

    Parameters
    ----------
    n_stars, n_galaxies : int
        How many of each (together at most the number of grid cells).
    size : int, optional
        Side of the square image (pixels).
    star_fwhm : float, optional
        FWHM of the stars (pixels).
    seed : int, optional
        Seed of :func:`numpy.random.default_rng`.
    step : int, optional
        Grid spacing (pixels).

    Returns
    -------
    image : numpy.ndarray, shape (size, size)
    stars : numpy.ndarray, shape (n_stars, 2)
        0-based ``(x, y)`` of the stars.
    """
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 1.0, (size, size))
    cells = [
        (x, y)
        for y in range(step, size - step + 1, step)
        for x in range(step, size - step + 1, step)
    ]
    order = rng.permutation(len(cells))
    if n_stars + n_galaxies > len(cells):
        raise ValueError(
            f"stars_among_galaxies: {n_stars + n_galaxies} sources do not fit {len(cells)} cells"
        )
    stars = []
    for k, idx in enumerate(order[: n_stars + n_galaxies]):
        x, y = np.asarray(cells[idx], float) + rng.uniform(-6, 6, 2)
        if k < n_stars:
            add_elliptical_gaussian(img, x, y, rng.uniform(2e3, 2e4), star_fwhm, 1.0, 0.0)
            stars.append((x, y))
        else:
            add_elliptical_gaussian(
                img,
                x,
                y,
                rng.uniform(3e3, 3e4),
                rng.uniform(4.0, 11.0),
                rng.uniform(0.45, 0.85),
                rng.uniform(0, math.pi),
            )
    return img, np.array(stars).reshape(-1, 2)
