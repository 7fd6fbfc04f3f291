"""Sky background and background-noise maps.

:func:`estimate_background` wraps :class:`photutils.background.Background2D`
(sigma-clipped statistics in boxes, median-filtered, interpolated bilinearly
between box centres back to full resolution) and falls back to constant maps from a sigma-clipped median and
standard deviation when the image is too small or too masked for boxes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy.stats import SigmaClip, sigma_clipped_stats
from astropy.utils.exceptions import AstropyUserWarning

from ..errors import AstridInputError
from .stars import prepare_data, upsample_mesh

__all__ = ["Background", "estimate_background", "estimate_backgrounds"]

# Background2D needs this fraction of each box unmasked, else the box is skipped.
_MAX_MASKED_FRACTION = 0.9
# Sigma-clipped statistics on at most this many pixels (a regular sub-sample).
_MAX_STAT_PIXELS = 2_000_000


@dataclass
class Background:
    """Background level and noise of an image.

    Attributes
    ----------
    background : numpy.ndarray, shape (ny, nx)
        Sky level in data units.
    rms : numpy.ndarray, shape (ny, nx)
        Background noise (standard deviation per pixel) in data units.
    median_rms : float
        Median of ``rms`` over the unmasked pixels, data units.
    method : str
        ``"Background2D"`` (box statistics) or ``"median"`` (constant maps
        from a sigma-clipped median and standard deviation).
    """

    background: np.ndarray
    rms: np.ndarray
    median_rms: float
    method: str


def _clipped_stats(values: np.ndarray, sigma: float) -> tuple[float, float]:
    step = max(1, values.size // _MAX_STAT_PIXELS)
    sample = values[::step]
    _, median, std = sigma_clipped_stats(sample, sigma=sigma, maxiters=10)
    return float(median), float(std)


def estimate_background(
    data, mask=None, box_size: int = 64, filter_size: int = 3, sigma: float = 3.0
) -> Background:
    """Estimate the sky background and its noise.

    Parameters
    ----------
    data : numpy.ndarray, shape (ny, nx), Image or (data, mask) pair
        Image in data units; NaN and inf pixels are ignored. Images and pairs are read
        with :func:`astrid.as_image` (their masks count).
    mask : numpy.ndarray of bool, shape (ny, nx), optional
        True where a pixel must not be used (stars may stay unmasked: the
        sigma clipping rejects them).
    box_size : int, optional
        Box size in pixels for the local statistics, default 64.
    filter_size : int, optional
        Size of the median filter over the grid of boxes, default 3.
    sigma : float, optional
        Clipping threshold in standard deviations, default 3.

    Returns
    -------
    Background
        Maps with the dtype of ``data`` (float32 stays float32). Masked
        pixels get the interpolated background of their neighbourhood.
        ``method`` is ``"median"`` when the image is smaller than one box
        in either axis or too masked for box statistics.

    Raises
    ------
    AstridInputError
        ``data`` not 2-D, a mismatched mask, or no finite unmasked pixel.
    """
    return estimate_backgrounds([(data, mask)], box_size, filter_size, sigma)[0]


def estimate_backgrounds(
    images, box_size: int = 64, filter_size: int = 3, sigma: float = 3.0
) -> list[Background]:
    """:func:`estimate_background` of several images, their box statistics in two threads.

    Much of ``Background2D``'s time is spent in compiled code that releases
    the GIL, so two images take less time than one after the other on two
    cores. Only photutils runs in the threads (numba's parallel kernels run
    in the calling thread: some of numba's threading layers must not be
    entered from two threads), and the warning filter is set once, in the
    calling thread (:func:`warnings.catch_warnings` entered by two threads
    at once can leave the process's filters changed).

    Parameters
    ----------
    images : sequence of (data, mask)
        The arrays :func:`estimate_background` takes; ``mask`` may be None.
    box_size : int, optional
        Box size in pixels for the local statistics, default 64.
    filter_size : int, optional
        Size of the median filter over the grid of boxes, default 3.
    sigma : float, optional
        Clipping threshold in standard deviations, default 3.

    Returns
    -------
    list of Background
        In the order of ``images``.
    """
    from concurrent.futures import ThreadPoolExecutor

    _check_parameters(box_size, filter_size, sigma)
    prepared = [
        prepare_data(data, mask, purpose="to estimate a background from") for data, mask in images
    ]
    with warnings.catch_warnings():
        # Boxes skipped for masking are expected; the fallback covers the rest.
        warnings.simplefilter("ignore", AstropyUserWarning)
        if len(prepared) < 2:
            meshes = [_meshes(data, bad, box_size, filter_size, sigma) for data, bad in prepared]
        else:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="astrid-background") as pool:
                futures = [
                    pool.submit(_meshes, data, bad, box_size, filter_size, sigma)
                    for data, bad in prepared
                ]
                meshes = [future.result() for future in futures]
        return [
            _maps(data, bad, mesh, box_size, sigma) for (data, bad), mesh in zip(prepared, meshes)
        ]


def _check_parameters(box_size, filter_size, sigma) -> None:
    if box_size < 4 or filter_size < 1 or sigma <= 0:
        raise AstridInputError(
            f"box_size must be >= 4, filter_size >= 1 and sigma > 0 "
            f"(got {box_size}, {filter_size}, {sigma})"
        )


def _meshes(data, bad, box_size, filter_size, sigma):
    """``Background2D``'s background and RMS meshes (one value per box), or None when it cannot run."""
    from photutils.background import Background2D

    from ._boxstats import BoxMedianBackground

    ny, nx = data.shape
    if ny < box_size or nx < box_size:
        return None
    try:
        bkg = Background2D(
            data,
            box_size,
            mask=bad,
            filter_size=filter_size,
            sigma_clip=SigmaClip(sigma=sigma, maxiters=10),
            bkg_estimator=BoxMedianBackground(),  # RMS: the default standard deviation
            exclude_percentile=100.0 * _MAX_MASKED_FRACTION,
        )
        return np.asarray(bkg.background_mesh, float), np.asarray(bkg.background_rms_mesh, float)
    except ValueError:
        return None


def _maps(data, bad, meshes, box_size, sigma) -> Background:
    """Full-resolution maps from the meshes, or the constant fallback."""
    dtype = data.dtype if data.dtype in (np.float32, np.float64) else np.float64
    ny, nx = data.shape
    if meshes is not None and np.isfinite(meshes[0]).all() and np.isfinite(meshes[1]).all():
        # Bilinear interpolation between box centres in numba: photutils'
        # spline zoom would dominate the run time on large images.
        background = upsample_mesh(meshes[0], box_size, ny, nx).astype(dtype, copy=False)
        rms = upsample_mesh(meshes[1], box_size, ny, nx).astype(dtype, copy=False)
        step = max(1, bad.size // _MAX_STAT_PIXELS)
        good_rms = rms.ravel()[::step][~bad.ravel()[::step]]
        median_rms = float(np.median(good_rms)) if good_rms.size else float(np.median(rms))
        return Background(background, rms, median_rms, "Background2D")

    median, std = _clipped_stats(data[~bad], sigma)
    return Background(
        np.full(data.shape, median, dtype=dtype),
        np.full(data.shape, std, dtype=dtype),
        std,
        "median",
    )
