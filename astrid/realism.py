"""Label-free statistics of triplet stamps, to hold simulated stamps against real ones.

The sim-to-real gap of a classifier trained on simulated triplets shows first
in the stamps themselves: real ZTF references are deep co-adds crowded with
bright stars, real stamps carry NaN-masked CCD edges, their noise ratios and
PSF widths differ from the simulator's. :func:`stamp_statistics` measures, per
triplet, quantities that need no label; :func:`compare_statistics` sets two
sets side by side with a two-sample distance for each (the Kolmogorov–Smirnov
statistic: 0 for the same distribution, 1 for disjoint ones).
``benchmarks/realism.py`` prints the report for the shared ZTF alerts against
the simulator's ZTF preset. :func:`image_statistics` does the same for whole
images (source density, PSF, saturated stars and their bleeds, masked
fraction), e.g. a simulated ZTF epoch against a real ZTF quadrant.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ._utils import neighbour_noise
from .schema import CHANNELS, validate_triplets

__all__ = [
    "STATISTICS",
    "stamp_noise",
    "stamp_statistics",
    "compare_statistics",
    "normalised_pixels",
    "IMAGE_STATISTICS",
    "image_statistics",
]

#: The per-triplet statistics of :func:`stamp_statistics`, with what they measure.
STATISTICS = {
    "noise_science": "robust pixel-to-pixel noise of the science stamp (data units)",
    "noise_reference": "robust pixel-to-pixel noise of the reference stamp (data units)",
    "noise_difference": "robust pixel-to-pixel noise of the difference stamp (data units)",
    "noise_ratio_ref_sci": "reference noise / science noise (< 1: a deeper reference)",
    "fwhm_difference": "FWHM of the central source in the difference stamp (px; NaN without one)",
    "n_sources_reference": "local maxima above 5 sigma in the reference stamp, 3 px apart",
    "peak_reference_sigma": "brightest reference pixel over the reference noise (log10)",
    "bright_star": "1 when the reference holds a pixel above 1000 sigma (saturated or nearly)",
    "nan_fraction": "fraction of NaN pixels over the three stamps",
    "nan_edge": "1 when the NaN pixels are whole rows or columns at a border (a CCD edge)",
    "centre_sigma_difference": "difference stamp's central 5x5 maximum over its noise",
}


def stamp_noise(stamp: np.ndarray) -> float:
    """Noise from differences of neighbouring pixels: insensitive to smooth sources and gradients.

    Parameters
    ----------
    stamp : numpy.ndarray, shape (ny, nx)
        One stamp in data units; NaN where there is no data.

    Returns
    -------
    float
        Per-pixel σ in data units (robust σ of horizontal neighbour
        differences / √2); NaN with 20 or fewer finite differences.
    """
    steps = np.diff(stamp, axis=1)
    steps = steps[np.isfinite(steps)]
    return neighbour_noise(steps) if steps.size > 20 else np.nan


def _central_fwhm(stamp: np.ndarray, noise: float) -> float:
    """FWHM from the area above half the central peak (connected to the centre), px."""
    from scipy import ndimage

    c = stamp.shape[0] // 2
    box = np.nan_to_num(stamp[c - 7 : c + 8, c - 7 : c + 8], nan=0.0)
    box = box - np.median(np.nan_to_num(stamp, nan=0.0))
    peak = box[5:10, 5:10].max()
    if not (np.isfinite(noise) and peak > 5.0 * noise):
        return np.nan
    regions, _ = ndimage.label(box >= 0.5 * peak)
    py, px = np.unravel_index(int(np.argmax(box[5:10, 5:10])), (5, 5))
    py, px = py + 5, px + 5
    area = float(np.sum(regions == regions[py, px]))
    return float(2.0 * np.sqrt(area / np.pi))


def _n_sources(stamp: np.ndarray, noise: float) -> int:
    from scipy import ndimage

    if not (np.isfinite(noise) and noise > 0):
        return 0
    image = np.nan_to_num(stamp - np.nanmedian(stamp), nan=0.0)
    peaks = (image == ndimage.maximum_filter(image, size=7)) & (image > 5.0 * noise)
    return int(peaks.sum())


def _nan_edge(valid: np.ndarray) -> float:
    bad = ~valid
    if not bad.any():
        return 0.0
    rows = bad.all(axis=1)
    cols = bad.all(axis=0)
    covered = np.zeros_like(bad)
    covered[rows, :] = True
    covered[:, cols] = True
    return float(np.array_equal(covered, bad))


def stamp_statistics(triplets) -> Table:
    """Label-free statistics of each triplet (see :data:`STATISTICS`).

    Parameters
    ----------
    triplets : xarray.Dataset
        Triplets in the AstrID schema (e.g. :func:`astrid.read_ztf` or
        :func:`astrid.build_training_set`).

    Returns
    -------
    astropy.table.Table
        One row per triplet, one column per statistic.
    """
    validate_triplets(triplets, "triplets")
    stamps = np.asarray(triplets["triplets"].values, dtype=np.float64)
    sci, ref, diff = (CHANNELS.index(name) for name in ("science", "reference", "difference"))
    rows = {name: [] for name in STATISTICS}
    for k in range(stamps.shape[0]):
        s, r, d = stamps[k, :, :, sci], stamps[k, :, :, ref], stamps[k, :, :, diff]
        ns, nr, nd = stamp_noise(s), stamp_noise(r), stamp_noise(d)
        rows["noise_science"].append(ns)
        rows["noise_reference"].append(nr)
        rows["noise_difference"].append(nd)
        rows["noise_ratio_ref_sci"].append(nr / ns if ns > 0 else np.nan)
        rows["fwhm_difference"].append(_central_fwhm(d, nd))
        rows["n_sources_reference"].append(_n_sources(r, nr))
        peak = np.nanmax(r - np.nanmedian(r)) / nr if np.isfinite(nr) and nr > 0 else np.nan
        rows["peak_reference_sigma"].append(np.log10(peak) if peak > 0 else np.nan)
        rows["bright_star"].append(float(peak > 1000.0) if np.isfinite(peak) else np.nan)
        finite = np.isfinite(stamps[k])
        rows["nan_fraction"].append(1.0 - float(finite.mean()))
        rows["nan_edge"].append(_nan_edge(finite.all(axis=-1)))
        c = d.shape[0] // 2
        core = d[c - 2 : c + 3, c - 2 : c + 3]
        centre = np.nanmax(core) - np.nanmedian(d) if np.isfinite(core).any() else np.nan
        rows["centre_sigma_difference"].append(centre / nd if nd > 0 else np.nan)
    return Table({name: np.asarray(values, dtype=float) for name, values in rows.items()})


def normalised_pixels(
    triplets, norm: str = "rowwise", max_pixels: int = 200_000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Pixel values per channel after braai's normalisation, subsampled.

    Parameters
    ----------
    triplets : xarray.Dataset
        Triplets in the AstrID schema.
    norm : {"rowwise", "l2"}, optional
        :func:`astrid.braai.preprocess`'s normalisation.
    max_pixels : int, optional
        Most pixels kept per channel (drawn at random).
    seed : int, optional
        Seeds the subsample.

    Returns
    -------
    dict of str to numpy.ndarray
        One 1-D array per channel name.
    """
    from .braai import preprocess

    x = preprocess(triplets, norm=norm)
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(CHANNELS):
        values = x[..., i].reshape(-1)
        if values.size > max_pixels:
            values = values[rng.choice(values.size, max_pixels, replace=False)]
        out[name] = values
    return out


def compare_statistics(real: Table, simulated: Table) -> Table:
    """Medians, quartiles and the two-sample KS distance of each statistic.

    Parameters
    ----------
    real, simulated : astropy.table.Table
        :func:`stamp_statistics` of the two sets (any common columns).

    Returns
    -------
    astropy.table.Table
        ``statistic``, ``real_median``, ``real_iqr`` (as "q25–q75"),
        ``sim_median``, ``sim_iqr``, ``ks`` (NaN rows dropped per set).
    """
    from scipy.stats import ks_2samp

    rows = []
    for name in real.colnames:
        if name not in simulated.colnames:
            continue
        a = np.asarray(real[name], float)
        b = np.asarray(simulated[name], float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size == 0 or b.size == 0:
            continue
        qa, qb = np.percentile(a, [25, 50, 75]), np.percentile(b, [25, 50, 75])
        rows.append(
            (
                name,
                qa[1],
                f"{qa[0]:.3g}–{qa[2]:.3g}",
                qb[1],
                f"{qb[0]:.3g}–{qb[2]:.3g}",
                float(ks_2samp(a, b).statistic),
            )
        )
    return Table(
        rows=rows, names=("statistic", "real_median", "real_iqr", "sim_median", "sim_iqr", "ks")
    )


#: The per-image statistics of :func:`image_statistics`, with what they measure.
IMAGE_STATISTICS = {
    "pixel_scale": "arcsec per pixel (from the WCS)",
    "area_arcmin2": "area of the image (arcmin²)",
    "sky": "median pixel value (data units)",
    "noise": "robust pixel-to-pixel noise (data units)",
    "sky_noise_electrons": "noise in electrons (with a gain; NaN without)",
    "psf_fwhm_arcsec": "FWHM of the PSF estimated from the image's stars (arcsec)",
    "psf_stars": "stars the PSF was estimated from",
    "sources_per_arcmin2": "local maxima above 5 sigma, 5 px apart, per arcmin²",
    "saturated_per_arcmin2": "connected groups of saturated pixels per arcmin² (saturated stars)",
    "bleeds_per_arcmin2": "saturated groups at least 3 times taller than wide (bleed trails)",
    "masked_fraction": "fraction of pixels masked (Image.mask: flagged, saturated, non-finite)",
}


def image_statistics(image) -> dict:
    """Label-free statistics of one whole image (see :data:`IMAGE_STATISTICS`).

    Parameters
    ----------
    image : Image or path-like
        One epoch, with a WCS (for the pixel scale) and, for the saturated
        statistics, a saturation level (``Image.meta.saturation``, the
        header's ``SATURATE``).

    Returns
    -------
    dict
        Statistic name -> value (float; NaN where the image lacks what it
        needs, e.g. a saturation level).

    Raises
    ------
    AstridInputError
        An image without a celestial WCS.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales
    from scipy import ndimage

    from .diffim import estimate_psf
    from .errors import AstridInputError
    from .io import Image, read_image

    img = image if isinstance(image, Image) else read_image(image)
    if img.wcs is None or not img.wcs.has_celestial:
        raise AstridInputError(
            f"image {img.meta.path or ''}: needs a celestial WCS for its pixel scale"
        )
    scale = float(np.mean(proj_plane_pixel_scales(img.wcs.celestial)) * 3600.0)
    data = np.asarray(img.data, dtype=np.float64)
    mask = np.asarray(img.mask, dtype=bool) if img.mask is not None else ~np.isfinite(data)
    area = data.size * scale**2 / 3600.0
    sky = float(np.nanmedian(data[~mask]))
    noise = stamp_noise(np.where(mask, np.nan, data)[:: max(1, data.shape[0] // 1024)])
    smooth = ndimage.gaussian_filter(np.where(mask | ~np.isfinite(data), sky, data), 1.0)
    peaks = (smooth == ndimage.maximum_filter(smooth, 5)) & (smooth > sky + 5.0 * noise)
    saturated, bleeds = np.nan, np.nan
    if img.meta.saturation is not None:
        groups, n_groups = ndimage.label(np.nan_to_num(data) >= img.meta.saturation)
        slices = ndimage.find_objects(groups)
        tall = sum(1 for sy, sx in slices if (sy.stop - sy.start) >= 3 * (sx.stop - sx.start))
        saturated, bleeds = n_groups / area, tall / area
    psf = estimate_psf(img)
    return {
        "pixel_scale": scale,
        "area_arcmin2": area,
        "sky": sky,
        "noise": float(noise),
        "sky_noise_electrons": float(noise * img.meta.gain) if img.meta.gain else np.nan,
        "psf_fwhm_arcsec": float(psf.fwhm) * scale,
        "psf_stars": float(getattr(psf, "n_stars", np.nan) or np.nan),
        "sources_per_arcmin2": float(peaks.sum()) / area,
        "saturated_per_arcmin2": saturated,
        "bleeds_per_arcmin2": bleeds,
        "masked_fraction": float(mask.mean()),
    }
