"""One call from two images to a difference: :func:`difference`.

The chain is: check that filters and missions agree → align the science
image onto the reference grid → estimate each background and subtract it →
estimate each PSF → measure the flux ratio → subtract (ZOGY by default, or
the classic Gaussian-matching baseline). Every stage is timed and its quality
numbers land in :attr:`DifferenceResult.metrics`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .._utils import json_safe, reuse_freed_memory
from ..errors import (
    AstridInputError,
    AstridMismatchError,
    AstridPSFError,
    AstridWarning,
)
from ..io import Image, atomic_write, provenance_cards
from .alignment import align as align_images
from .alignment import apply_transform, pixel_area, pixel_map
from .background import estimate_backgrounds
from .classic import ClassicOptions, classic_subtract
from .image import as_image
from .inpaint import fill_from_neighbours, pixel_noise, repair_isolated
from .options import DifferenceOptions
from .photometry import flux_ratio as measure_flux_ratio
from .psf import PSFModel, PSFRequest, estimate_psf, regularise_psf, regularise_psf_array
from .quality import assess, header_cards
from .stars import clean_stars

__all__ = ["DifferenceResult", "difference"]

_METHODS = ("zogy", "classic", "kernel")
# A user flux_ratio (science flux / reference flux of one source) outside this
# range is refused: no pair of exposures of one survey differs by more than
# 7.5 magnitudes in zero point, and a typo (1e6, a magnitude for a ratio)
# would silently scale the reference into noise or the noise into sources.
FLUX_RATIO_RANGE = (1e-3, 1e3)
# S_corr should have unit variance in source-free regions; a robust standard
# deviation beyond this factor from 1 (either way) is reported with a warning.
SCORR_STD_TOLERANCE = 1.3
# With noise_correlation="auto", an image's noise counts as correlated (and
# ZOGY uses its autocorrelation) when any lag within ±2 px exceeds this.
_ACF_THRESHOLD = 0.05
# The autocorrelation is widened (by 2 px per side, up to _ACF_MAX_SIZE) while
# any value on its border exceeds _ACF_EDGE.
_ACF_EDGE = 0.15
_ACF_MAX_SIZE = 11


@dataclass
class DifferenceResult:
    """Everything :func:`difference` computed, on the reference pixel grid.

    Attributes
    ----------
    method : str
        ``"zogy"``, ``"classic"`` or ``"kernel"``.
    science : Image
        The science image aligned onto the reference grid, background
        subtracted (data, mask, variance when known, reference WCS).
    reference : Image
        The reference image, background subtracted.
    D : numpy.ndarray, shape (ny, nx)
        Difference image: ZOGY's proper difference (unit-variance white
        noise) or, for ``"classic"``, science minus matched reference in
        science data units.
    S : numpy.ndarray or None
        ZOGY's detection statistic (None for ``"classic"``).
    S_corr : numpy.ndarray
        Detection significance per pixel: ZOGY's corrected S, or the
        classic ``D`` divided by its per-pixel noise.
    flux : numpy.ndarray or None
        ZOGY's PSF-photometry flux of a point transient at each pixel, in
        science data units (None for ``"classic"``).
    flux_err : numpy.ndarray or None
        The error of ``flux``, in science data units (None for ``"classic"``).
    P_D : numpy.ndarray or None
        PSF of ``D`` (ZOGY only).
    science_psf : PSFModel
        The PSF of the science image used.
    reference_psf : PSFModel
        The PSF of the reference image used.
    science_background : Background
        The background subtracted from the science image.
    reference_background : Background
        The background subtracted from the reference image.
    mask : numpy.ndarray of bool
        True where the difference must not be trusted (masked, saturated or
        non-finite input pixels dilated by the kernel size, outside the
        science footprint, image edges).
    footprint : numpy.ndarray of bool
        True where the science image covers the reference grid.
    wcs : astropy.wcs.WCS or None
        WCS of the reference grid.
    metrics : dict
        ``overlap``, ``align_rms`` (px), ``align_error`` (px: the
        registration error beyond the matched stars' centroid noise,
        :attr:`astrid.diffim.Alignment.astrometric_sigma` added in
        quadrature), ``n_matched``, ``fwhm_sci``,
        ``fwhm_ref`` (px), ``flux_ratio`` (and ``flux_ratio_error``,
        ``flux_ratio_method``), ``sigma_sci``, ``sigma_ref`` (data units),
        ``scorr_robust_std``, ``astrometric_sigma_x``/``_y`` (px),
        ``mask_fraction``, ``variance_source``, ``n_fft`` (ZOGY),
        ``seeing_sci``/``_ref`` (the headers' seeing in reference pixels,
        NaN when unknown), ``align_shift`` (px), ``psf_n_usable_sci``/``_ref``,
        ``stellar_locus_sci``/``_ref``, ``psf_note_sci``/``_ref`` (see
        :class:`~astrid.PSFModel`), ``quality`` and ``quality_reasons`` (the
        verdict, see :attr:`quality`), and
        ``time_align``, ``time_background``, ``time_psf``,
        ``time_flux_ratio``, ``time_subtract``, ``time_total`` (seconds).
    subtraction : ZogyResult, ClassicResult or KernelResult
        The raw result of the subtraction step (e.g. for
        :func:`astrid.zogy.flux_at`, or the fitted kernel's ``model`` for
        :func:`astrid.figures.plot_kernel_grid`).
    quality : astrid.diffim.Quality or None
        The verdict on this difference (``verdict``: pass, warn or fail;
        ``reasons``: the checks that did not pass, with the measured values
        and thresholds); see ``docs/differencing.md``, "Quality verdict".
    """

    method: str
    science: Image
    reference: Image
    D: np.ndarray
    S: np.ndarray | None
    S_corr: np.ndarray
    flux: np.ndarray | None
    flux_err: np.ndarray | None
    P_D: np.ndarray | None
    science_psf: Any
    reference_psf: Any
    science_background: Any
    reference_background: Any
    mask: np.ndarray
    footprint: np.ndarray
    wcs: WCS | None
    metrics: dict = field(default_factory=dict)
    subtraction: Any = None
    quality: Any = None

    # ------------------------------------------------------------------ output

    def _planes(self) -> list[tuple[str, np.ndarray]]:
        planes = [
            ("SCIENCE", self.science.data),
            ("REFERENCE", self.reference.data),
            ("D", self.D),
            ("S", self.S),
            ("SCORR", self.S_corr),
            ("FLUX", self.flux),
            ("FLUXERR", self.flux_err),
            ("MASK", self.mask.astype(np.uint8)),
            ("FOOTPRNT", self.footprint.astype(np.uint8)),
        ]
        return [(name, data) for name, data in planes if data is not None]

    def to_fits(self, path: str | os.PathLike) -> Path:
        """Write a multi-extension FITS file atomically.

        The primary HDU holds no data, the provenance keys (``ASTRIDV``,
        ``ASTRSTEP = 'difference'``, ``ASTRPARS``), the metrics and the
        quality verdict (``QUALITY``: pass, warn or fail, and ``QREASON1``,
        ``QREASON2``, ... for each check that did not pass); image
        extensions ``SCIENCE``, ``REFERENCE``, ``D``, ``S``, ``SCORR``,
        ``FLUX``, ``FLUXERR`` (ZOGY only for S and the fluxes), ``MASK`` and
        ``FOOTPRNT`` (uint8) carry the reference WCS; ``PSFSCI``, ``PSFREF``
        and (ZOGY) ``PD`` hold the PSFs.

        Parameters
        ----------
        path : str or path-like
            Output file (its folder is created).

        Returns
        -------
        pathlib.Path
            The written path.
        """
        primary = fits.Header()
        primary["METHOD"] = (self.method, "AstrID difference method")
        if self.quality is not None:
            for key, value, comment in header_cards(self.quality):
                primary[key] = (value, comment)
        for key, metric, comment in _FITS_METRICS:
            value = self.metrics.get(metric)
            if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(
                float(value)
            ):
                primary[key] = (
                    float(value) if isinstance(value, (float, np.floating)) else int(value),
                    comment,
                )
        for key, value, comment in provenance_cards("difference", json_safe(self.metrics)):
            if key == "HISTORY":
                primary.add_history(value)
            else:
                primary[key] = (value, comment)
        wcs_header = fits.Header()
        if self.wcs is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs_header = self.wcs.to_header(relax=True)
        hdus = [fits.PrimaryHDU(header=primary)]
        for name, data in self._planes():
            hdus.append(fits.ImageHDU(data=np.asarray(data), header=wcs_header.copy(), name=name))
        for name, psf in (
            ("PSFSCI", self.science_psf.psf),
            ("PSFREF", self.reference_psf.psf),
            ("PD", self.P_D),
        ):
            if psf is not None:
                hdus.append(fits.ImageHDU(data=np.asarray(psf), name=name))
        hdul = fits.HDUList(hdus)
        return atomic_write(path, lambda fh: hdul.writeto(fh))

    def to_xarray(self):
        """The images as an :class:`xarray.Dataset` on dims ``(y, x)``.

        Variables: ``science``, ``reference``, ``D``, ``S``, ``S_corr``,
        ``flux``, ``flux_err`` (those that exist), ``mask`` and
        ``footprint`` (bool), the PSFs on their own dims. Attributes: the
        method, the numeric and string metrics, and the reference WCS as a
        FITS header string (``wcs``).
        """
        import xarray as xr

        names = {
            "SCIENCE": "science",
            "REFERENCE": "reference",
            "D": "D",
            "S": "S",
            "SCORR": "S_corr",
            "FLUX": "flux",
            "FLUXERR": "flux_err",
            "MASK": "mask",
            "FOOTPRNT": "footprint",
        }
        ny, nx = self.D.shape
        data_vars = {}
        for name, data in self._planes():
            var = names[name]
            if var in ("mask", "footprint"):
                data = np.asarray(data, dtype=bool)
            data_vars[var] = (("y", "x"), np.asarray(data))
        for var, psf in (
            ("science_psf", self.science_psf.psf),
            ("reference_psf", self.reference_psf.psf),
            ("P_D", self.P_D),
        ):
            if psf is not None:
                data_vars[var] = ((f"{var}_y", f"{var}_x"), np.asarray(psf))
        attrs = {"method": self.method}
        for key, value in self.metrics.items():
            if (value := _attribute(value)) is not None:
                attrs[key] = value
        if self.wcs is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                attrs["wcs"] = self.wcs.to_header_string(relax=True)
        coords = {"y": np.arange(ny), "x": np.arange(nx)}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


# (FITS key, metric, comment) written to the primary header of to_fits().
_FITS_METRICS = (
    ("OVERLAP", "overlap", "fraction of reference covered by science"),
    ("ALIGNRMS", "align_rms", "[px] RMS of matched-star residuals"),
    ("ALIGNERR", "align_error", "[px] registration error beyond centroid noise"),
    ("NMATCHED", "n_matched", "stars matched for alignment"),
    ("FWHMSCI", "fwhm_sci", "[px] science PSF FWHM"),
    ("FWHMREF", "fwhm_ref", "[px] reference PSF FWHM"),
    ("FLXRATIO", "flux_ratio", "science/reference flux of a source"),
    ("SIGSCI", "sigma_sci", "science background noise"),
    ("SIGREF", "sigma_ref", "reference background noise"),
    ("SCORRSTD", "scorr_robust_std", "robust std of S_corr"),
    ("MASKFRAC", "mask_fraction", "fraction of masked pixels"),
)


def _attribute(value):
    """A metric as a netCDF attribute (None: not one). Non-finite floats stay NaN, which
    netCDF stores and ``float()`` reads (the JSON of ``to_fits`` has ``null`` there instead)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)  # netCDF attributes have no boolean type
    if isinstance(value, (int, float, str)):
        return value
    return None


# ----------------------------------------------------------------------------- helpers


def _name(image: Image, role: str) -> str:
    return f"{role} {image.meta.path}" if image.meta.path else f"{role} image"


def _check_compatible(reference: Image, science: Image, allow_mismatch: bool) -> None:
    problems = []
    for label, attribute in (("filter", "filter"), ("telescope", "telescope")):
        ref_value = getattr(reference.meta, attribute)
        sci_value = getattr(science.meta, attribute)
        if ref_value is None or sci_value is None:
            continue  # unknown on one side: nothing to compare
        if str(ref_value).strip().lower() != str(sci_value).strip().lower():
            problems.append(f"{label} {ref_value!r} vs {sci_value!r}")
    if not problems:
        return
    message = (
        f"{_name(reference, 'reference')} and {_name(science, 'science')} differ in "
        + " and ".join(problems)
    )
    if not allow_mismatch:
        raise AstridMismatchError(
            message + ": their difference would be dominated by colour and PSF differences; "
            "pass allow_mismatch=True to difference them anyway"
        )
    # Called by _prepare_inputs, called by difference: the warning points at difference's caller.
    warnings.warn(
        message + " (allow_mismatch=True: differencing anyway)", AstridWarning, stacklevel=4
    )


def _as_psf_model(psf, role: str):
    if psf is None:
        return None
    if isinstance(psf, PSFModel):
        return psf
    return PSFModel.from_array(psf, name=f"{role}_psf")


def _check_flux_ratio(flux_ratio) -> float:
    """A user flux ratio as a float within :data:`FLUX_RATIO_RANGE`."""
    if isinstance(flux_ratio, (bool, np.bool_)):
        raise AstridInputError(f"flux_ratio: must be a number, got {flux_ratio!r}")
    try:
        ratio = float(flux_ratio)
    except (TypeError, ValueError) as exc:
        raise AstridInputError(f"flux_ratio: must be a number, got {flux_ratio!r}") from exc
    lo, hi = FLUX_RATIO_RANGE
    if not (math.isfinite(ratio) and lo <= ratio <= hi):
        raise AstridInputError(
            f"flux_ratio: must be a finite number within [{lo:g}, {hi:g}] (science flux of a source over its "
            f"reference flux; 1e3 is 7.5 magnitudes), got {flux_ratio!r}; leave it out to measure it from the stars"
        )
    return ratio


def _repair_image(image: Image, role: str) -> tuple[Image, np.ndarray]:
    """``image`` with its isolated NaN pixels on smooth sky filled, and where they were.

    See :mod:`astrid.diffim.inpaint`: they then cost their own area in the output
    mask instead of a kernel-radius dilation each, and they no longer
    disqualify the stars whose apertures they fall in.
    """
    data = np.asarray(image.data)
    if np.isfinite(data).all():
        return image, np.zeros(data.shape, dtype=bool)
    bad = np.asarray(image.mask, dtype=bool) | ~np.isfinite(data)
    if bad.all():
        finite = float(np.isfinite(data).mean())
        raise AstridInputError(
            f"{_name(image, role)}: no finite, unmasked pixel ({100 * finite:.1f} % are finite, all of them masked)"
        )
    (fixed,), repaired = repair_isolated((data,), bad, (pixel_noise(data, bad),))
    if not repaired.any():
        return image, repaired
    variance = image.variance
    if variance is not None:
        variance = fill_from_neighbours(np.asarray(variance), repaired)
    return image.copy(
        data=fixed, mask=np.asarray(image.mask, bool) & ~repaired, variance=variance
    ), repaired


def _repaired_on_reference(
    repaired: np.ndarray, science: Image, reference: Image, alignment
) -> np.ndarray:
    """The reference-grid pixels covered by repaired science pixels (their footprint there)."""
    out = np.zeros(reference.shape, dtype=bool)
    ys, xs = np.nonzero(repaired)
    if ys.size == 0:
        return out
    sci_wcs, ref_wcs = science.wcs.celestial, reference.wcs.celestial
    px, py = pixel_map(sci_wcs, ref_wcs, xs.astype(float), ys.astype(float))
    px, py = apply_transform(alignment.transform, px, py)
    scale = math.sqrt(pixel_area(sci_wcs, science.shape) / pixel_area(ref_wcs, reference.shape))
    half = 0.5 * max(scale, 1.0)  # the reference pixels whose centres a science pixel covers
    ny, nx = reference.shape
    ok = np.isfinite(px) & np.isfinite(py)
    px, py = px[ok], py[ok]
    reach = int(math.ceil(half))
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            iy = np.round(py).astype(int) + dy
            ix = np.round(px).astype(int) + dx
            near = (np.abs(iy - py) <= half) & (np.abs(ix - px) <= half)
            near &= (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
            out[iy[near], ix[near]] = True
    return out


def _check_noise(background, image: Image, role: str) -> None:
    rms = float(background.median_rms)
    if not (math.isfinite(rms) and rms > 0):
        raise AstridInputError(
            f"{_name(image, role)}: its background noise is {rms:g} (measured over the unmasked pixels); "
            "differencing needs a positive, finite noise level (a constant, zero or fully saturated image has none)"
        )


def _estimate_psf_named(estimate_psf, image: Image, role: str, **kwargs):
    """:func:`estimate_psf` with an error that names the image and gives advice ``difference()`` accepts."""
    try:
        return estimate_psf(**kwargs)
    except AstridPSFError as exc:
        text = str(exc).replace(" (pass fwhm=... in pixels)", "")
        raise AstridPSFError(
            f"{_name(image, role)}: {text}; pass {role}_psf= to difference() (a PSFModel or an odd-sized "
            f"2-D array, e.g. astrid.gaussian_psf(fwhm) with the FWHM in pixels)"
        ) from exc


def _seeing_on_grid(science: Image, reference: Image, align: bool) -> float | None:
    """The science header's seeing (pixels) on the reference grid the science image is resampled onto."""
    seeing = science.meta.seeing_fwhm_pix
    if seeing is None or not align or science.wcs is None or reference.wcs is None:
        return seeing
    try:
        ratio = pixel_area(science.wcs.celestial, science.shape) / pixel_area(
            reference.wcs.celestial, reference.shape
        )
    except Exception:  # a WCS that cannot be evaluated at the centre: the alignment reports it
        return seeing
    return seeing * math.sqrt(ratio) if math.isfinite(ratio) and ratio > 0 else seeing


def star_positions(catalog, reference: Image):
    """Pixel positions on the reference grid of the ``psf_stars`` option (None when not given)."""
    if catalog is None:
        return None
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    if isinstance(catalog, Table) and {"x", "y"} <= set(catalog.colnames):
        return np.column_stack([np.asarray(catalog["x"], float), np.asarray(catalog["y"], float)])
    coords = catalog
    if isinstance(catalog, Table):
        names = {c.lower(): c for c in catalog.colnames}
        ra = next((names[k] for k in ("ra", "raj2000", "ra_icrs") if k in names), None)
        dec = next(
            (names[k] for k in ("dec", "dej2000", "de_icrs", "decj2000") if k in names), None
        )
        if ra is None or dec is None:
            raise AstridInputError(
                f"psf_stars: a table needs x and y (reference pixels) or ra and dec (degrees) columns, "
                f"got {catalog.colnames}"
            )
        coords = SkyCoord(
            np.asarray(catalog[ra], float), np.asarray(catalog[dec], float), unit="deg"
        )
    if not isinstance(coords, SkyCoord):
        raise AstridInputError(
            f"psf_stars: must be an astropy Table (x, y or ra, dec columns) or a SkyCoord, got {type(catalog).__name__}"
        )
    if reference.wcs is None:
        raise AstridInputError(
            f"psf_stars: sky positions need a WCS, and {_name(reference, 'reference')} has none"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = reference.wcs.celestial.world_to_pixel(coords)
    return np.column_stack([np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)])


def variance_map(
    image: Image, background, residual: np.ndarray, mask: np.ndarray, use_variance: bool
):
    """Variance map for ZOGY's source-noise term, and where it came from.

    ZOGY takes the excess of the map over σ² as source noise. The map's own
    sky level can differ from σ² (the per-pixel noise measured on the data):
    resampling lowers the per-pixel noise but not an interpolated variance
    map, and noise maps of drizzled data follow their own conventions. So
    the map is shifted to put its sky level (median over unmasked pixels) at
    σ²: the excess is then what sources add.
    """
    if not use_variance:
        return None, "none"
    sigma2 = float(background.median_rms) ** 2
    if image.variance is not None:
        variance, source = np.array(image.variance, dtype=np.float32), "image"
    else:
        variance = np.square(background.rms, dtype=np.float32)
        gain = image.meta.gain
        source = "background"
        if gain is not None and gain > 0:
            # Poisson noise of the sources for data in ADU: counts / gain.
            counts = np.maximum(residual, 0, dtype=np.float32)
            counts *= np.float32(1.0 / gain)
            variance += counts
            del counts
            source = "gain"
    # The sky level from a regular subsample of about a million pixels (whole-image temporaries cost more).
    step = max(1, int(math.sqrt(variance.size / 1_000_000)))
    sample = variance[::step, ::step]
    sample = sample[~mask[::step, ::step] & np.isfinite(sample)]
    if not sample.size:  # the few good pixels all fell between the samples
        sample = variance[~mask & np.isfinite(variance)]
        if not sample.size:
            return None, "none"
    level = float(np.median(sample))
    variance -= np.float32(level - sigma2)
    return variance, source


def zogy_tile_size(value, shape) -> int:
    """Tiles for a varying PSF: "auto" gives about 4 × 4 tiles, none under 512 px."""
    if value == "auto":
        return max(512, int(math.ceil(max(shape) / 4)))
    return value


def zogy_psf(model, regularise: bool):
    """The PSF to give ZOGY: an array, or for a PSF varying over the field a
    callable that evaluates it (regularised like the constant one) at a tile's centre."""
    if not getattr(model, "varies", False):
        return model.psf

    def at(x, y):
        psf = model.at(x, y)
        return regularise_psf_array(psf)[0] if regularise else psf

    return at


def _noise_acf(residual: np.ndarray, mask: np.ndarray, mode):
    """The noise autocorrelation to give ZOGY (or None) and its mean lag-1 value."""
    from .zogy import estimate_noise_acf

    if mode is False:
        return None, float("nan")
    acf = estimate_noise_acf(residual, mask)
    if acf is None:
        return None, float("nan")
    # Noise resampled from a coarser grid stays correlated beyond ±2 px: a
    # 5×5 autocorrelation cut there has a spectrum with negative lobes (floored),
    # whose matching kernels ring out to tens of pixels (the mask dilation
    # grows with them) and miscalibrate S_corr. Widen it until its outer ring
    # has decayed.
    size = acf.shape[0]
    while _outer_ring(acf) > _ACF_EDGE and size < _ACF_MAX_SIZE:
        size += 2
        wider = estimate_noise_acf(residual, mask, size=size)
        if wider is None:
            break
        acf = wider
    c = acf.shape[0] // 2
    lag1 = float(np.mean([acf[c, c + 1], acf[c + 1, c]]))
    off_centre = np.abs(acf)
    off_centre[c, c] = 0.0
    if mode == "auto" and off_centre.max() < _ACF_THRESHOLD:
        return None, lag1
    return acf, lag1


def _outer_ring(acf: np.ndarray) -> float:
    """Largest |value| on the border of an autocorrelation kernel."""
    return float(
        max(
            np.abs(acf[0]).max(),
            np.abs(acf[-1]).max(),
            np.abs(acf[:, 0]).max(),
            np.abs(acf[:, -1]).max(),
        )
    )


def _check_calibration(metrics: dict) -> None:
    """Warn when S_corr is not close to unit variance: its thresholds would not mean what they say."""
    std = metrics.get("scorr_robust_std")
    if std is None or not math.isfinite(std):
        return
    if 1.0 / SCORR_STD_TOLERANCE <= std <= SCORR_STD_TOLERANCE:
        return
    hints = []
    if metrics.get("noise_correlated_sci") or metrics.get("noise_correlated_ref"):
        hints.append(
            f"the noise is correlated between pixels (lag-1 ACF science "
            f"{metrics.get('noise_acf_lag1_sci', float('nan')):.2f}, reference "
            f"{metrics.get('noise_acf_lag1_ref', float('nan')):.2f}), as after resampling a coarser image"
        )
    if (
        metrics.get("psf_method_sci") == "gaussian-fallback"
        or metrics.get("psf_method_ref") == "gaussian-fallback"
    ):
        hints.append("a PSF is a Gaussian fallback")
    warnings.warn(
        f"difference: the robust standard deviation of S_corr is {std:.2f} (expected 1 within a factor "
        f"{SCORR_STD_TOLERANCE}), so its significances are miscalibrated by that factor; "
        f"{100 * metrics.get('mask_fraction', float('nan')):.1f} % of the result is masked"
        + (" (" + "; ".join(hints) + ")" if hints else ""),
        AstridWarning,
        stacklevel=3,
    )


# ----------------------------------------------------------------------------- stages
# Each stage returns one of these, with the metrics it adds in the order difference() reports them.


@dataclass
class _Inputs:
    reference: Image
    science: Image  # NaN pixels repaired
    original_science: Image
    ref_repaired: np.ndarray
    sci_repaired: np.ndarray
    psf_stars: np.ndarray | None
    metrics: dict


@dataclass
class _Aligned:
    image: Image
    footprint: np.ndarray
    reference_stars: Any
    science_stars: Any
    astrometric_sigma: tuple
    repaired: np.ndarray  # reference-grid pixels filled from their neighbours
    metrics: dict


@dataclass
class _Backgrounds:
    science: Any
    reference: Any
    science_mask: np.ndarray
    reference_mask: np.ndarray
    science_out: Image  # background-subtracted, on the reference grid
    reference_out: Image
    metrics: dict


@dataclass
class _PSFs:
    science: Any
    reference: Any
    metrics: dict


@dataclass
class _Ratio:
    ratio: float
    metrics: dict


@dataclass
class _Subtraction:
    raw: Any
    D: np.ndarray
    S: np.ndarray | None
    S_corr: np.ndarray
    flux: np.ndarray | None
    flux_err: np.ndarray | None
    P_D: np.ndarray | None
    mask: np.ndarray
    metrics: dict


def _timed(metrics: dict, name: str, stage, *args):
    """Run one stage, add its metrics and ``time_<name>`` (seconds) to ``metrics``."""
    start = time.perf_counter()
    result = stage(*args)
    metrics.update(result.metrics)
    metrics[f"time_{name}"] = time.perf_counter() - start
    return result


def _resolve_options(method, options, flat_options: dict, dtype) -> DifferenceOptions:
    """The validated options. Checked first: a typo must not cost an alignment, a background and two PSFs."""
    from .zogy import check_dtype

    if method not in _METHODS:
        raise AstridInputError(f"method: must be one of {_METHODS}, got {method!r}")
    if options is None:
        options = DifferenceOptions()
    elif not isinstance(options, DifferenceOptions):
        raise AstridInputError(
            f"options: must be an astrid.DifferenceOptions, got {type(options).__name__}"
        )
    if flat_options:  # the flat keywords override single fields (and are validated with the rest)
        options = DifferenceOptions.from_mapping({**options.to_mapping(), **flat_options})
    else:
        options.validate()
    check_dtype(dtype)
    return options


def _prepare_inputs(reference, science, allow_mismatch: bool, psf_stars) -> _Inputs:
    """Read both images, check they belong together, fill isolated NaN pixels."""
    reference = as_image(reference, "reference", arrays=False)
    science = as_image(science, "science", arrays=False)
    _check_compatible(reference, science, allow_mismatch)
    positions = star_positions(psf_stars, reference)
    reference, ref_repaired = _repair_image(reference, "reference")
    repaired_science, sci_repaired = _repair_image(science, "science")
    metrics = dict(n_repaired_sci=int(sci_repaired.sum()), n_repaired_ref=int(ref_repaired.sum()))
    return _Inputs(
        reference, repaired_science, science, ref_repaired, sci_repaired, positions, metrics
    )


def _align_stage(inputs: _Inputs, do_align: bool, options: DifferenceOptions) -> _Aligned:
    """Resample the science image onto the reference grid (or check they share one)."""
    science, reference = inputs.science, inputs.reference
    if not do_align:
        if science.shape != reference.shape:
            raise AstridInputError(
                f"{_name(science, 'science')} has shape {science.shape} but {_name(reference, 'reference')} "
                f"has {reference.shape}: use align=True to resample it onto the reference grid"
            )
        footprint = ~(np.asarray(science.mask, bool) | ~np.isfinite(science.data))
        metrics = dict(
            overlap=float(footprint.mean()),
            align_rms=float("nan"),
            n_matched=0,
            align_method="none",
        )
        sigma = options.subtract.astrometric_sigma
        return _Aligned(
            science,
            footprint,
            None,
            None,
            (0.0, 0.0) if sigma is None else sigma,
            inputs.ref_repaired | inputs.sci_repaired,
            metrics,
        )
    alignment = align_images(
        reference=reference,
        science=science,
        method=options.align.method,
        refine=options.align.refine,
    )
    sigma = tuple(float(s) for s in alignment.astrometric_sigma)
    metrics = dict(
        overlap=alignment.overlap,
        align_rms=alignment.rms,
        # the registration error beyond the centroids' noise, as the alignment measured it
        align_error=float(math.hypot(*sigma)),
        n_matched=alignment.n_matched,
        align_method=alignment.method,
        align_shift=float(math.hypot(*alignment.shift)),
    )
    if not all(math.isfinite(s) for s in sigma):
        sigma = (0.0, 0.0)
    if options.subtract.astrometric_sigma is not None:
        sigma = options.subtract.astrometric_sigma
    repaired = inputs.ref_repaired | _repaired_on_reference(
        inputs.sci_repaired, inputs.original_science, reference, alignment
    )
    return _Aligned(
        alignment.image,
        alignment.footprint,
        alignment.reference_stars,
        alignment.science_stars,
        sigma,
        repaired,
        metrics,
    )


def _background_stage(
    inputs: _Inputs, aligned: _Aligned, options: DifferenceOptions, dtype
) -> _Backgrounds:
    """Estimate both backgrounds and subtract them."""
    reference = inputs.reference
    sci_mask = np.asarray(aligned.image.mask, bool) | ~aligned.footprint
    ref_mask = np.asarray(reference.mask, bool)
    sci_bg, ref_bg = estimate_backgrounds(
        [(aligned.image.data, sci_mask), (reference.data, ref_mask)],
        box_size=options.background.box_size,
        filter_size=options.background.filter_size,
    )
    _check_noise(sci_bg, inputs.science, "science")
    _check_noise(ref_bg, reference, "reference")
    N = (aligned.image.data - sci_bg.background).astype(dtype, copy=False)
    R = (reference.data - ref_bg.background).astype(dtype, copy=False)
    metrics = dict(
        sigma_sci=float(sci_bg.median_rms),
        sigma_ref=float(ref_bg.median_rms),
        background_method_sci=sci_bg.method,
        background_method_ref=ref_bg.method,
    )
    return _Backgrounds(
        sci_bg,
        ref_bg,
        sci_mask,
        ref_mask,
        aligned.image.copy(data=N, mask=sci_mask),
        reference.copy(data=R, mask=ref_mask),
        metrics,
    )


def _psf_stage(
    inputs: _Inputs,
    aligned: _Aligned,
    backgrounds: _Backgrounds,
    options: DifferenceOptions,
    given: tuple,
    do_align: bool,
) -> _PSFs:
    """The PSF of each image: given, or estimated from its stars (and regularised)."""
    psf_options = options.psf
    kwargs = {
        "request": PSFRequest(
            psf_options.size, psf_options.min_stars, psf_options.max_stars, psf_options.degree
        )
    }
    if inputs.psf_stars is not None:
        kwargs["star_positions"] = inputs.psf_stars
    science, reference = inputs.science, inputs.reference
    seeing = {
        "sci": _seeing_on_grid(science, reference, do_align),
        "ref": reference.meta.seeing_fwhm_pix,
    }
    # The alignment measured the science stars on their own grid and moved them onto this one (their
    # S/N is not inflated by the resampling's correlated noise); it detected the reference's already.
    sides = {
        "sci": (
            "science",
            aligned.image,
            backgrounds.science_mask,
            backgrounds.science,
            aligned.science_stars,
            given[0],
        ),
        "ref": (
            "reference",
            reference,
            backgrounds.reference_mask,
            backgrounds.reference,
            aligned.reference_stars,
            given[1],
        ),
    }
    models, noise = {}, {"sci": float("nan"), "ref": float("nan")}
    for side, (role, image, mask, background, stars, model) in sides.items():
        if model is None:
            model = _estimate_psf_named(
                estimate_psf,
                science if side == "sci" else reference,
                role,
                data=image.data,
                mask=mask,
                background=background,
                saturation=image.meta.saturation,
                stars=stars,
                seeing=seeing[side],
                **kwargs,
            )
            if psf_options.regularise and model.method == "empirical":
                model, noise[side] = regularise_psf(model)
        models[side] = model
    return _PSFs(models["sci"], models["ref"], _psf_metrics(models, noise, seeing))


def _psf_metrics(models: dict, noise: dict, seeing: dict) -> dict:
    sci, ref = models["sci"], models["ref"]
    metrics = dict(psf_noise_sci=noise["sci"], psf_noise_ref=noise["ref"])
    metrics.update(
        fwhm_sci=float(sci.fwhm),
        fwhm_ref=float(ref.fwhm),
        psf_method_sci=sci.method,
        psf_method_ref=ref.method,
        psf_degree_sci=int(sci.degree),
        psf_degree_ref=int(ref.degree),
        n_psf_stars_sci=int(sci.n_stars),
        n_psf_stars_ref=int(ref.n_stars),
        seeing_sci=float("nan") if seeing["sci"] is None else float(seeing["sci"]),
        seeing_ref=float("nan") if seeing["ref"] is None else float(seeing["ref"]),
    )
    for side, model in models.items():
        metrics[f"psf_n_usable_{side}"] = int(getattr(model, "n_usable", model.n_stars))
        metrics[f"stellar_locus_{side}"] = getattr(model, "stellar_locus", None)
        metrics[f"psf_note_{side}"] = str(getattr(model, "quality_note", ""))
    return metrics


def _flux_ratio_stage(
    aligned: _Aligned, backgrounds: _Backgrounds, psfs: _PSFs, options: DifferenceOptions, given
) -> _Ratio:
    """Science flux of a source over its reference flux: given, or measured on the matched stars."""
    if given is not None:
        return _Ratio(
            given,
            dict(
                flux_ratio_error=0.0,
                flux_ratio_method="given",
                n_flux_ratio_stars=0,
                flux_ratio=given,
            ),
        )
    stars = aligned.reference_stars
    stars = None if stars is None else stars[clean_stars(stars)]
    # Images rather than arrays: their zero points are the fallback when too few stars are usable.
    measured = measure_flux_ratio(
        reference=backgrounds.reference_out,
        science=backgrounds.science_out,
        science_psf=psfs.science,
        reference_psf=psfs.reference,
        mask=backgrounds.science_mask | backgrounds.reference_mask,
        stars=stars,
        science_zp=options.flux_ratio.science_zp,
        reference_zp=options.flux_ratio.reference_zp,
    )
    ratio = float(measured.ratio)
    return _Ratio(
        ratio,
        dict(
            flux_ratio_error=float(measured.error),
            flux_ratio_method=measured.method,
            n_flux_ratio_stars=int(measured.n_stars),
            flux_ratio=ratio,
        ),
    )


def _subtract_stage(
    method: str,
    aligned: _Aligned,
    backgrounds: _Backgrounds,
    psfs: _PSFs,
    ratio: _Ratio,
    options: DifferenceOptions,
    dtype,
) -> _Subtraction:
    """Variance maps, then the subtraction of ``method``."""
    sub = options.subtract
    sci_out, ref_out = backgrounds.science_out, backgrounds.reference_out
    sci_var, variance_source = variance_map(
        aligned.image, backgrounds.science, sci_out.data, backgrounds.science_mask, sub.use_variance
    )
    ref_var, _ = variance_map(
        ref_out, backgrounds.reference, ref_out.data, backgrounds.reference_mask, sub.use_variance
    )
    common = {
        k: v
        for k, v in (("mask_radius", sub.mask_radius), ("fill_value", sub.fill_value))
        if v is not None
    }
    subtract = {"zogy": _subtract_zogy, "kernel": _subtract_kernel, "classic": _subtract_classic}[
        method
    ]
    result = subtract(
        aligned, backgrounds, psfs, ratio.ratio, (sci_var, ref_var), options, dtype, common
    )
    result.metrics = {
        "variance_source": variance_source,
        **result.metrics,
        "mask_fraction": float(result.mask.mean()),
    }
    return result


def _filled(aligned: _Aligned):
    return aligned.repaired if aligned.repaired.any() else None


def _subtract_zogy(
    aligned, backgrounds, psfs, ratio, variances, options, dtype, common
) -> _Subtraction:
    from .zogy import ZogyImage, ZogyOptions, subtract

    sub, regularise = options.subtract, bool(options.psf.regularise)
    N, R = backgrounds.science_out.data, backgrounds.reference_out.data
    sci_acf, sci_lag1 = _noise_acf(N, backgrounds.science_mask, sub.noise_correlation)
    ref_acf, ref_lag1 = _noise_acf(R, backgrounds.reference_mask, sub.noise_correlation)
    raw = subtract(
        reference=ZogyImage(
            R,
            zogy_psf(psfs.reference, regularise),
            backgrounds.reference.median_rms,
            variance=variances[1],
            noise_acf=ref_acf,
        ),
        science=ZogyImage(
            N,
            zogy_psf(psfs.science, regularise),
            backgrounds.science.median_rms,
            variance=variances[0],
            noise_acf=sci_acf,
        ),
        flux_ratio=ratio,
        mask=backgrounds.science_mask | backgrounds.reference_mask,
        repaired=_filled(aligned),
        options=ZogyOptions(
            astrometric_sigma=aligned.astrometric_sigma,
            dtype=dtype,
            workers=sub.workers,
            systematic_fraction=sub.systematic_fraction,
            tile_size=zogy_tile_size(sub.tile_size, N.shape),
            **common,
        ),
    )
    metrics = dict(
        noise_acf_lag1_sci=sci_lag1,
        noise_acf_lag1_ref=ref_lag1,
        noise_correlated_sci=sci_acf is not None,
        noise_correlated_ref=ref_acf is not None,
        scorr_robust_std=raw.scorr_std,
        n_fft=raw.n_fft,
        mask_radius=raw.mask_radius,
        systematic_fraction=raw.systematic_fraction,
        n_systematic_stars=raw.n_systematic_stars,
        astrometric_sigma_x=raw.astrometric_sigma[0],
        astrometric_sigma_y=raw.astrometric_sigma[1],
        n_tiles=max(len(raw.tiles), 1),
        regularised_psf=regularise,
    )
    return _Subtraction(
        raw, raw.D, raw.S, raw.S_corr, raw.flux, raw.flux_err, raw.P_D, raw.mask, metrics
    )


def _subtract_kernel(
    aligned, backgrounds, psfs, ratio, variances, options, dtype, common
) -> _Subtraction:
    from ..kernel import KernelInputs, KernelOptions
    from ..kernel import subtract as kernel_subtract

    # Images with their own masks: the convolved image's bad pixels spread over the kernel, the
    # other's do not. (The flux ratio is the kernel's own fit.)
    measured = KernelInputs(
        science_variance=variances[0],
        reference_variance=variances[1],
        science_sigma=backgrounds.science.median_rms,
        reference_sigma=backgrounds.reference.median_rms,
        science_fwhm=psfs.science.fwhm,
        reference_fwhm=psfs.reference.fwhm,
        science_psf=psfs.science.psf,
        reference_psf=psfs.reference.psf,
        astrometric_sigma=aligned.astrometric_sigma,
        filled=_filled(aligned),
    )
    raw = kernel_subtract(
        backgrounds.reference_out,
        backgrounds.science_out,
        stars=aligned.reference_stars,
        inputs=measured,
        options=KernelOptions(**(options.subtract.kernel or {}), dtype=dtype, **common),
    )
    metrics = dict(
        scorr_robust_std=raw.detection_std,
        mask_radius=raw.mask_radius,
        convolved=raw.convolved,
        kernel_flux_ratio=raw.flux_ratio,
        kernel_degree=raw.model.degree,
        kernel_half_width=raw.model.half_width,
        n_stamps_used=raw.n_stamps_used,
        n_stamps_rejected=raw.n_stamps_rejected,
        systematic_fraction=raw.detection_systematic,
        time_kernel_fit=raw.timings["select"] + raw.timings["systems"] + raw.timings["solve"],
    )
    return _Subtraction(raw, raw.D, None, raw.detection, None, None, None, raw.mask, metrics)


def _subtract_classic(
    aligned, backgrounds, psfs, ratio, variances, options, dtype, common
) -> _Subtraction:
    # The images carry their masks (combined inside) and the variance maps made for the subtraction.
    raw = classic_subtract(
        reference=backgrounds.reference_out.copy(variance=variances[1]),
        science=backgrounds.science_out.copy(variance=variances[0]),
        reference_fwhm=psfs.reference.fwhm,
        science_fwhm=psfs.science.fwhm,
        reference_sigma=backgrounds.reference.median_rms,
        science_sigma=backgrounds.science.median_rms,
        flux_ratio=ratio,
        options=ClassicOptions(dtype=dtype, **common),
        repaired=_filled(aligned),
    )
    metrics = dict(
        scorr_robust_std=raw.significance_std,
        mask_radius=raw.mask_radius,
        kernel_sigma=raw.kernel_sigma,
        convolved=raw.convolved,
    )
    return _Subtraction(raw, raw.D, None, raw.significance, None, None, None, raw.mask, metrics)


# ----------------------------------------------------------------------------- difference


@reuse_freed_memory()
def difference(
    reference,
    science,
    method: str = "zogy",
    *,
    align: bool = True,
    science_psf=None,
    reference_psf=None,
    flux_ratio=None,
    allow_mismatch: bool = False,
    dtype=np.float32,
    options: DifferenceOptions | None = None,
    **flat_options,
) -> DifferenceResult:
    """Difference two images in one call: align, background, PSF, flux ratio, subtract.

    Parameters
    ----------
    reference, science : Image or path-like
        The template and the new image; the result is on the reference grid.
    method : {"zogy", "classic", "kernel"}, optional
        ZOGY (default), :func:`classic_subtract` or :func:`astrid.kernel.subtract`.
    align : bool, optional
        Resample the science image onto the reference grid (False: they share one).
    science_psf, reference_psf : PSFModel or array_like (odd-sized), optional
        PSFs to use instead of estimating them from the stars.
    flux_ratio : float, optional
        Science over reference flux of a source in [1e-3, 1e3]; default measured.
    allow_mismatch : bool, optional
        Warn instead of raising when filter or telescope differ.
    dtype : {numpy.float32, numpy.float64}, optional
        Precision of the subtraction.
    options : DifferenceOptions, optional
        Every stage's options (default ``DifferenceOptions()``).
    **flat_options
        Single fields by their flat names (``box_size=32``, ``psf_degree=0``, ...).

    Returns
    -------
    DifferenceResult
        D, S, S_corr and flux maps on the reference grid, and every stage's result.
        Mismatched images or a bad option raise (options are checked before any stage).
    """
    started = time.perf_counter()
    opts = _resolve_options(method, options, flat_options, dtype)
    flux_ratio = None if flux_ratio is None else _check_flux_ratio(flux_ratio)
    given_psfs = (_as_psf_model(science_psf, "science"), _as_psf_model(reference_psf, "reference"))
    inputs = _prepare_inputs(reference, science, allow_mismatch, opts.psf.stars)
    metrics: dict[str, Any] = {"method": method, **inputs.metrics}
    aligned = _timed(metrics, "align", _align_stage, inputs, align, opts)
    backgrounds = _timed(metrics, "background", _background_stage, inputs, aligned, opts, dtype)
    psfs = _timed(metrics, "psf", _psf_stage, inputs, aligned, backgrounds, opts, given_psfs, align)
    ratio = _timed(
        metrics, "flux_ratio", _flux_ratio_stage, aligned, backgrounds, psfs, opts, flux_ratio
    )
    sub = _timed(
        metrics, "subtract", _subtract_stage, method, aligned, backgrounds, psfs, ratio, opts, dtype
    )
    return _result(method, inputs, aligned, backgrounds, psfs, sub, metrics, started)


def _result(method, inputs, aligned, backgrounds, psfs, sub, metrics, started) -> DifferenceResult:
    """The stages' :class:`DifferenceResult`, after the calibration check and the quality verdict."""
    _check_calibration(metrics)
    quality = assess(metrics)
    metrics.update(
        quality=quality.verdict,
        quality_reasons=quality.summary(),
        time_total=time.perf_counter() - started,
    )
    return DifferenceResult(
        method=method,
        science=backgrounds.science_out,
        reference=backgrounds.reference_out,
        D=sub.D,
        S=sub.S,
        S_corr=sub.S_corr,
        flux=sub.flux,
        flux_err=sub.flux_err,
        P_D=sub.P_D,
        science_psf=psfs.science,
        reference_psf=psfs.reference,
        science_background=backgrounds.science,
        reference_background=backgrounds.reference,
        mask=sub.mask,
        footprint=aligned.footprint,
        wcs=inputs.reference.wcs,
        metrics=metrics,
        subtraction=sub.raw,
        quality=quality,
    )
