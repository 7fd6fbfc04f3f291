"""A small synthetic difference result with known sources, for tests and benchmarks.

It has the attributes of :class:`astrid.difference`'s result that this
package reads, built directly on one pixel grid (no alignment, identical
Gaussian PSFs): a reference with stars and galaxies, a science image with
transients and artifacts added, the classic difference ``D`` in units of its
noise, the matched-filter statistic ``S_corr`` and PSF fluxes. It is a
stand-in that makes every number of a test predictable, not a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage

from .._utils import fwhm_to_sigma
from ..io import Image, ImageMeta

__all__ = [
    "GaussianPSF",
    "SyntheticDifference",
    "SyntheticScene",
    "add_gaussian",
    "synthetic_difference",
]


@dataclass
class GaussianPSF:
    """A PSF model with the attributes detect() reads (``psf``, ``fwhm``)."""

    psf: np.ndarray
    fwhm: float


@dataclass
class SyntheticDifference:
    """Attributes of a DifferenceResult plus the ``truth`` of what was injected.

    Attributes
    ----------
    method : str
        ``"classic"``.
    science : Image
        The science image (white noise plus sources, NaN outside the footprint).
    reference : Image
        The reference image.
    D : numpy.ndarray, shape (ny, nx), float32
        Science minus reference over the difference noise (unit variance), 0 where untrusted.
    S : numpy.ndarray, shape (ny, nx), float32
        ``D`` correlated with the PSF, 0 where untrusted.
    S_corr : numpy.ndarray, shape (ny, nx), float32
        Matched-filter significance (sigma), 0 where untrusted.
    flux : numpy.ndarray, shape (ny, nx), float32
        PSF-photometry flux of a point transient at each pixel (data units).
    flux_err : numpy.ndarray, shape (ny, nx), float32
        Its error (data units), NaN where untrusted.
    P_D : numpy.ndarray
        PSF of ``D`` (the Gaussian PSF, normalised).
    science_psf : GaussianPSF
        PSF of the science image.
    reference_psf : GaussianPSF
        PSF of the reference image.
    mask : numpy.ndarray of bool
        True where the difference must not be trusted.
    footprint : numpy.ndarray of bool
        True where the science image covers the grid.
    wcs : astropy.wcs.WCS
        The grid's TAN WCS.
    truth : astropy.table.Table
        What was injected (see :func:`synthetic_difference`).
    metrics : dict
        Empty by default.
    """

    method: str
    science: Image
    reference: Image
    D: np.ndarray
    S: np.ndarray
    S_corr: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    P_D: np.ndarray
    science_psf: GaussianPSF
    reference_psf: GaussianPSF
    mask: np.ndarray
    footprint: np.ndarray
    wcs: WCS
    truth: Table
    metrics: dict = field(default_factory=dict)


def _gaussian_kernel_1d(fwhm: float) -> np.ndarray:
    sigma = fwhm_to_sigma(fwhm)
    r = int(np.ceil(4 * sigma))
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * x * x / sigma**2)
    return k / k.sum()


def add_gaussian(image, x, y, flux, sigma_x, sigma_y=None, theta=0.0):
    """Add an elliptical Gaussian of total ``flux`` centred on (x, y) (in place, local window).

    Parameters
    ----------
    image : numpy.ndarray, shape (ny, nx)
        Float image, changed in place.
    x, y : float
        Centre (pixels, 0-based).
    flux : float
        Total flux (data units × pixels).
    sigma_x, sigma_y : float
        Standard deviations along the major and minor axes (pixels);
        ``sigma_y`` defaults to ``sigma_x``.
    theta : float
        Angle of the ``sigma_x`` axis from +x (radians).
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    ny, nx = image.shape
    r = int(np.ceil(5 * max(sigma_x, sigma_y)))
    x0, x1 = max(int(x) - r, 0), min(int(x) + r + 2, nx)
    y0, y1 = max(int(y) - r, 0), min(int(y) + r + 2, ny)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    c, s = np.cos(theta), np.sin(theta)
    u = (xx - x) * c + (yy - y) * s
    v = -(xx - x) * s + (yy - y) * c
    profile = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    image[y0:y1, x0:x1] += flux * profile / (2 * np.pi * sigma_x * sigma_y)


def _tan_wcs(shape, ra=150.0, dec=2.0, scale_arcsec=1.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    wcs.wcs.cd = np.array([[-1.0, 0.0], [0.0, 1.0]]) * scale_arcsec / 3600.0
    return wcs


@dataclass(frozen=True)
class SyntheticScene:
    """What :func:`synthetic_difference` draws.

    Attributes
    ----------
    fwhm : float
        FWHM (pixels) of the Gaussian PSF of both epochs.
    n_transients : int
        Point sources added to the science image only (kind "supernova").
    n_stars : int
        Static point sources on both epochs (PSF).
    n_galaxies : int
        Static extended sources on both epochs (3x broader than the PSF).
    n_hot_pixels : int
        Single bright science pixels (kind "hot_pixel").
    n_fading : int
        Point sources in the reference only (kind "variable", negative).
    transient_snr : (float, float)
        Range of the matched-filter S/N of the transients.
    sigma : float
        Background noise per pixel of each image (data units).
    edge_margin : int
        Transients and artifacts keep this far from the border (pixels).
    masked_box : (y0, y1, x0, x1), optional
        A region flagged in ``mask`` (untrusted).
    missing_columns : int
        The last columns lie outside the science footprint.
    """

    fwhm: float = 3.0
    n_transients: int = 10
    n_stars: int = 40
    n_galaxies: int = 5
    n_hot_pixels: int = 5
    n_fading: int = 0
    transient_snr: tuple = (10.0, 40.0)
    sigma: float = 10.0
    edge_margin: int = 20
    masked_box: tuple | None = None
    missing_columns: int = 0


_TRUTH_NAMES = ["kind", "x_ref", "y_ref", "snr_sci", "flux_diff", "is_real"]
_TRUTH_DTYPES = [str, float, float, float, float, bool]


def _static_sources(rng, reference, science, scene: SyntheticScene, psf_sigma):
    """Stars and galaxies drawn on both epochs (in place); the galaxies' (x, y)."""
    ny, nx = reference.shape
    margin = scene.edge_margin
    for _ in range(scene.n_stars):
        x, y, f = rng.uniform(0, nx), rng.uniform(0, ny), 10 ** rng.uniform(3, 5)
        add_gaussian(reference, x, y, f, psf_sigma)
        add_gaussian(science, x, y, f, psf_sigma)
    galaxies = []
    for _ in range(scene.n_galaxies):
        x, y = rng.uniform(margin, nx - margin), rng.uniform(margin, ny - margin)
        f, theta = 10 ** rng.uniform(4.5, 5.5), rng.uniform(0, np.pi)
        add_gaussian(reference, x, y, f, 3 * psf_sigma, 2 * psf_sigma, theta)
        add_gaussian(science, x, y, f, 3 * psf_sigma, 2 * psf_sigma, theta)
        galaxies.append((x, y))
    return galaxies


def _changes(rng, reference, science, scene: SyntheticScene, psf_sigma, sigma_d, sum_p2):
    """Transients, fading sources and hot pixels drawn (in place); their truth rows.

    ``sigma_d``, ``sum_p2``: the difference's noise and Σ P², which turn a matched-filter S/N into
    a point source's flux.
    """
    ny, nx = reference.shape
    margin = scene.edge_margin
    rows = []

    def place():
        return rng.uniform(margin, nx - margin), rng.uniform(margin, ny - margin)

    for _ in range(scene.n_transients):
        x, y = place()
        snr = rng.uniform(*scene.transient_snr)
        flux = snr * sigma_d / np.sqrt(sum_p2)
        add_gaussian(science, x, y, flux, psf_sigma)
        rows.append(("supernova", x, y, snr, flux, True))
    for _ in range(scene.n_fading):
        x, y = place()
        snr = rng.uniform(*scene.transient_snr)
        flux = snr * sigma_d / np.sqrt(sum_p2)
        add_gaussian(reference, x, y, flux, psf_sigma)
        rows.append(("variable", x, y, snr, -flux, True))
    for _ in range(scene.n_hot_pixels):
        x, y = (int(round(v)) for v in place())
        level = 30 * scene.sigma
        science[y, x] += level
        rows.append(("hot_pixel", float(x), float(y), np.nan, level, False))
    return rows


def _truth_table(rows, bad, galaxies) -> Table:
    """The injected sources as a table (with ``id`` and ``masked``)."""
    ny, nx = bad.shape
    truth = (
        Table(rows=rows, names=_TRUTH_NAMES, dtype=_TRUTH_DTYPES)
        if rows
        else Table(names=_TRUTH_NAMES, dtype=_TRUTH_DTYPES)
    )
    truth.add_column(np.arange(len(truth), dtype=np.int64), name="id", index=0)
    xi = np.clip(np.round(np.asarray(truth["x_ref"], float)).astype(int), 0, nx - 1)
    yi = np.clip(np.round(np.asarray(truth["y_ref"], float)).astype(int), 0, ny - 1)
    truth["masked"] = bad[yi, xi] if len(truth) else np.zeros(0, bool)
    truth.meta["galaxies_xy"] = [list(map(float, g)) for g in galaxies]
    return truth


def synthetic_difference(
    shape=(512, 512),
    scene: SyntheticScene | None = None,
    *,
    mjd: float = 59000.0,
    seed: int = 0,
) -> SyntheticDifference:
    """Build a :class:`SyntheticDifference`.

    Parameters
    ----------
    shape : (int, int)
        Image shape (ny, nx).
    scene : SyntheticScene, optional
        What to draw (PSF, sources, artifacts, noise, masks); default
        ``SyntheticScene()``.
    mjd : float
        Science epoch (``science.meta.obs_time``).
    seed : int
        Random seed.

    Returns
    -------
    SyntheticDifference
        ``truth`` has ``id``, ``kind``, ``x_ref``, ``y_ref``, ``snr_sci``,
        ``flux_diff``, ``is_real``, ``masked``.
    """
    from astropy.time import Time

    scene = SyntheticScene() if scene is None else scene
    fwhm, sigma = scene.fwhm, scene.sigma
    rng = np.random.default_rng(seed)
    nx = shape[1]
    kernel = _gaussian_kernel_1d(fwhm)
    psf = np.outer(kernel, kernel)  # separable, so S is two 1-D passes
    psf_sigma = fwhm_to_sigma(fwhm)
    # Matched-filter S/N of a point source of flux F in white noise sigma_D: F sqrt(sum P^2) / sigma_D.
    sum_p2 = float(np.sum(psf**2))
    sigma_d = sigma * np.sqrt(2.0)

    reference = rng.normal(0.0, sigma, shape)
    science = rng.normal(0.0, sigma, shape)
    galaxies = _static_sources(rng, reference, science, scene, psf_sigma)
    rows = _changes(rng, reference, science, scene, psf_sigma, sigma_d, sum_p2)

    mask = np.zeros(shape, bool)
    if scene.masked_box is not None:
        y0, y1, x0, x1 = scene.masked_box
        mask[y0:y1, x0:x1] = True
    footprint = np.ones(shape, bool)
    if scene.missing_columns:
        footprint[:, nx - scene.missing_columns :] = False
        science[:, nx - scene.missing_columns :] = np.nan

    D = (science - reference) / sigma_d
    D_filled = np.where(np.isfinite(D), D, 0.0)
    S = ndimage.correlate1d(
        ndimage.correlate1d(D_filled, kernel, axis=0, mode="constant"),
        kernel,
        axis=1,
        mode="constant",
    )
    S_corr = S / np.sqrt(sum_p2)
    flux = S * sigma_d / sum_p2
    flux_err = np.full(shape, sigma_d / np.sqrt(sum_p2))
    bad = mask | ~footprint
    wcs = _tan_wcs(shape)
    meta = ImageMeta(telescope="SYNTH", filter="r", obs_time=Time(mjd, format="mjd", scale="utc"))
    science_image = Image(science.astype(np.float32), wcs=wcs, mask=~footprint, meta=meta)
    reference_image = Image(
        reference.astype(np.float32),
        wcs=wcs,
        meta=ImageMeta(
            telescope="SYNTH", filter="r", obs_time=Time(mjd - 400, format="mjd", scale="utc")
        ),
    )
    truth = _truth_table(rows, bad, galaxies)

    model = GaussianPSF(psf=psf, fwhm=float(fwhm))
    return SyntheticDifference(
        method="classic",
        science=science_image,
        reference=reference_image,
        D=np.where(bad, 0.0, D_filled).astype(np.float32),
        S=np.where(bad, 0.0, S).astype(np.float32),
        S_corr=np.where(bad, 0.0, S_corr).astype(np.float32),
        flux=np.where(bad, 0.0, flux).astype(np.float32),
        flux_err=np.where(bad, np.nan, flux_err).astype(np.float32),
        P_D=psf,
        science_psf=model,
        reference_psf=GaussianPSF(psf=psf.copy(), fwhm=float(fwhm)),
        mask=mask,
        footprint=footprint,
        wcs=wcs,
        truth=truth,
    )
