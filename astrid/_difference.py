"""One call from two images to a difference: :func:`difference`.

The chain is: check that filters and missions agree → align the science
image onto the reference grid → estimate each background and subtract it →
estimate each PSF → measure the flux ratio → subtract (ZOGY by default, or
the classic Gaussian-matching baseline). Every stage is timed and its quality
numbers land in :attr:`DifferenceResult.metrics`.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .errors import AstridInputError, AstridMismatchError, AstridWarning
from .io import Image, atomic_write, provenance_cards, read_image

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
# Empirical PSF wings: a Moffat fitted to the stack's ring means from this many
# FWHM outwards replaces the stack beyond _WING_JOIN_FWHM.
_WING_FIT_FWHM = 1.0
_WING_JOIN_FWHM = 1.5
# Options of difference() and the stage they belong to.
_OPTIONS = {
    "align_method": "align",
    "refine": "align",
    "box_size": "background",
    "filter_size": "background",
    "psf_size": "psf",
    "psf_degree": "psf",
    "regularise_psf": "psf",
    "min_stars": "psf",
    "max_stars": "psf",
    "psf_stars": "psf",
    "science_zp": "flux_ratio",
    "reference_zp": "flux_ratio",
    "astrometric_sigma": "subtract",
    "use_variance": "subtract",
    "noise_correlation": "subtract",
    "systematic_fraction": "subtract",
    "mask_radius": "subtract",
    "fill_value": "subtract",
    "workers": "subtract",
    "tile_size": "subtract",
    "kernel": "subtract",
}


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
    flux, flux_err : numpy.ndarray or None
        ZOGY's PSF-photometry flux of a point transient at each pixel and its
        error, in science data units (None for ``"classic"``).
    P_D : numpy.ndarray or None
        PSF of ``D`` (ZOGY only).
    science_psf, reference_psf : PSFModel
        The PSFs used.
    science_background, reference_background : Background
        The backgrounds subtracted.
    mask : numpy.ndarray of bool
        True where the difference must not be trusted (masked, saturated or
        non-finite input pixels dilated by the kernel size, outside the
        science footprint, image edges).
    footprint : numpy.ndarray of bool
        True where the science image covers the reference grid.
    wcs : astropy.wcs.WCS or None
        WCS of the reference grid.
    metrics : dict
        ``overlap``, ``align_rms`` (px), ``n_matched``, ``fwhm_sci``,
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
    subtraction : ZogyResult or ClassicResult
        The raw result of the subtraction step (e.g. for
        :func:`astrid.zogy.flux_at`).
    quality : astrid._quality.Quality or None
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
            from ._quality import header_cards

            for key, value, comment in header_cards(self.quality):
                primary[key] = (value, comment)
        for key, metric, comment in _FITS_METRICS:
            value = self.metrics.get(metric)
            if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value)):
                primary[key] = (float(value) if isinstance(value, (float, np.floating)) else int(value), comment)
        for key, value, comment in provenance_cards("difference", _jsonable(self.metrics)):
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
        for name, psf in (("PSFSCI", self.science_psf.psf), ("PSFREF", self.reference_psf.psf), ("PD", self.P_D)):
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

        names = {"SCIENCE": "science", "REFERENCE": "reference", "D": "D", "S": "S", "SCORR": "S_corr",
                 "FLUX": "flux", "FLUXERR": "flux_err", "MASK": "mask", "FOOTPRNT": "footprint"}
        ny, nx = self.D.shape
        data_vars = {}
        for name, data in self._planes():
            var = names[name]
            if var in ("mask", "footprint"):
                data = np.asarray(data, dtype=bool)
            data_vars[var] = (("y", "x"), np.asarray(data))
        for var, psf in (("science_psf", self.science_psf.psf), ("reference_psf", self.reference_psf.psf),
                         ("P_D", self.P_D)):
            if psf is not None:
                data_vars[var] = ((f"{var}_y", f"{var}_x"), np.asarray(psf))
        attrs = {"method": self.method}
        for key, value in _jsonable(self.metrics).items():
            if isinstance(value, bool):
                attrs[key] = int(value)  # netCDF attributes have no boolean type
            elif isinstance(value, (int, float, str)):
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
    ("NMATCHED", "n_matched", "stars matched for alignment"),
    ("FWHMSCI", "fwhm_sci", "[px] science PSF FWHM"),
    ("FWHMREF", "fwhm_ref", "[px] reference PSF FWHM"),
    ("FLXRATIO", "flux_ratio", "science/reference flux of a source"),
    ("SIGSCI", "sigma_sci", "science background noise"),
    ("SIGREF", "sigma_ref", "reference background noise"),
    ("SCORRSTD", "scorr_robust_std", "robust std of S_corr"),
    ("MASKFRAC", "mask_fraction", "fraction of masked pixels"),
)


def _jsonable(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (np.integer,)):
            value = int(value)
        elif isinstance(value, (np.floating,)):
            value = float(value)
        elif isinstance(value, tuple):
            value = list(value)
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        out[key] = value
    return out


# ----------------------------------------------------------------------------- helpers


def _load(image, role: str) -> Image:
    if isinstance(image, Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    raise AstridInputError(
        f"{role}: must be an astrid.Image or a path to a FITS file, got {type(image).__name__}"
    )


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
    warnings.warn(message + " (allow_mismatch=True: differencing anyway)", AstridWarning, stacklevel=3)


def _as_psf_model(psf, role: str):
    from ._psf import PSFModel

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


# Inputs and options of astrid.kernel.subtract that difference(method="kernel") fills in from
# its stages.
_KERNEL_FROM_DIFFERENCE = frozenset({
    "stars", "science_variance", "reference_variance", "science_sigma", "reference_sigma", "science_fwhm",
    "reference_fwhm", "science_psf", "reference_psf", "astrometric_sigma", "dtype", "filled", "mask_radius",
    "fill_value", "mask",
})


def _check_options(options: dict, dtype) -> None:
    """Validate the cheap options before any stage runs, so a typo costs no alignment."""
    from .zogy import check_astrometric as _check_astrometric
    from .zogy import check_dtype as _check_dtype

    _check_dtype(dtype)
    if "kernel" in options:
        kernel_options = options["kernel"]
        if not isinstance(kernel_options, dict):
            raise AstridInputError(f"kernel: must be a dict of astrid.kernel.subtract options, got {kernel_options!r}")
        # difference() passes these itself, from its own stages and options.
        taken = sorted(set(kernel_options) & _KERNEL_FROM_DIFFERENCE)
        if taken:
            raise AstridInputError(
                f"kernel: {taken} are set by difference() itself (give mask_radius, fill_value, dtype or "
                "astrometric_sigma as difference() options, PSFs as science_psf=/reference_psf=)"
            )
        from .kernel import KernelOptions

        unknown = sorted(set(kernel_options) - {f.name for f in fields(KernelOptions)})
        if unknown:
            raise AstridInputError(f"kernel: {unknown} are not astrid.kernel.KernelOptions fields")
        KernelOptions(**kernel_options)  # each value checked
    correlation = options.get("noise_correlation", "auto")
    if isinstance(correlation, np.ndarray) or correlation not in ("auto", True, False):
        raise AstridInputError(f"noise_correlation: must be 'auto', True or False, got {correlation!r}")
    if "astrometric_sigma" in options:
        _check_astrometric(options["astrometric_sigma"])
    for key, minimum in (("box_size", 4), ("filter_size", 1), ("min_stars", 1), ("max_stars", 1),
                         ("psf_size", 3), ("mask_radius", 0)):
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)) \
                or not math.isfinite(value) or int(value) != value or value < minimum:
            raise AstridInputError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    tile = options.get("tile_size", "auto")
    if tile != "auto" and (isinstance(tile, (bool, np.bool_)) or not isinstance(tile, (int, np.integer))
                           or tile < 64):
        raise AstridInputError(f"tile_size: must be 'auto' or an integer >= 64 pixels, got {tile!r}")
    degree = options.get("psf_degree", "auto")
    if degree not in (0, 1, 2, "auto") or isinstance(degree, (bool, np.bool_)):
        raise AstridInputError(f"psf_degree: must be 0, 1, 2 or 'auto', got {degree!r}")
    systematic = options.get("systematic_fraction", "auto")
    if systematic != "auto":
        try:
            ok = math.isfinite(float(systematic)) and float(systematic) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise AstridInputError(f"systematic_fraction: must be a number >= 0 or 'auto', got {systematic!r}")
    if options.get("align_method", "interp") not in ("interp", "adaptive", "exact"):
        raise AstridInputError(
            f"align_method: must be 'interp', 'adaptive' or 'exact', got {options['align_method']!r}"
        )
    for key in ("science_zp", "reference_zp"):
        value = options.get(key)
        if value is None:
            continue
        try:
            ok = math.isfinite(float(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise AstridInputError(f"{key}: must be a finite zero point (magnitudes), got {value!r}")


def _repair_image(image: Image, role: str) -> tuple[Image, np.ndarray]:
    """``image`` with its isolated NaN pixels on smooth sky filled, and where they were.

    See :mod:`astrid._inpaint`: they then cost their own area in the output
    mask instead of a kernel-radius dilation each, and they no longer
    disqualify the stars whose apertures they fall in.
    """
    from ._inpaint import fill_from_neighbours, pixel_noise, repair_isolated

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
    return image.copy(data=fixed, mask=np.asarray(image.mask, bool) & ~repaired, variance=variance), repaired


def _repaired_on_reference(repaired: np.ndarray, science: Image, reference: Image, alignment) -> np.ndarray:
    """The reference-grid pixels covered by repaired science pixels (their footprint there)."""
    from ._align import _apply, _pixel_area, _pixel_map

    out = np.zeros(reference.shape, dtype=bool)
    ys, xs = np.nonzero(repaired)
    if ys.size == 0:
        return out
    sci_wcs, ref_wcs = science.wcs.celestial, reference.wcs.celestial
    px, py = _pixel_map(sci_wcs, ref_wcs, xs.astype(float), ys.astype(float))
    px, py = _apply(alignment.transform, px, py)
    scale = math.sqrt(_pixel_area(sci_wcs, science.shape) / _pixel_area(ref_wcs, reference.shape))
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
    from .errors import AstridPSFError

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
    from ._align import _pixel_area

    try:
        ratio = _pixel_area(science.wcs.celestial, science.shape) / _pixel_area(reference.wcs.celestial,
                                                                             reference.shape)
    except Exception:  # a WCS that cannot be evaluated at the centre: the alignment reports it
        return seeing
    return seeing * math.sqrt(ratio) if math.isfinite(ratio) and ratio > 0 else seeing


def _star_positions(catalog, reference: Image):
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
        dec = next((names[k] for k in ("dec", "dej2000", "de_icrs", "decj2000") if k in names), None)
        if ra is None or dec is None:
            raise AstridInputError(
                f"psf_stars: a table needs x and y (reference pixels) or ra and dec (degrees) columns, "
                f"got {catalog.colnames}")
        coords = SkyCoord(np.asarray(catalog[ra], float), np.asarray(catalog[dec], float), unit="deg")
    if not isinstance(coords, SkyCoord):
        raise AstridInputError(
            f"psf_stars: must be an astropy Table (x, y or ra, dec columns) or a SkyCoord, got {type(catalog).__name__}")
    if reference.wcs is None:
        raise AstridInputError(f"psf_stars: sky positions need a WCS, and {_name(reference, 'reference')} has none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = reference.wcs.celestial.world_to_pixel(coords)
    return np.column_stack([np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)])


def _variance(image: Image, background, residual: np.ndarray, mask: np.ndarray, use_variance: bool):
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


def _tile_size(value, shape) -> int:
    """Tiles for a varying PSF: "auto" gives about 4 × 4 tiles, none under 512 px."""
    if value == "auto":
        return max(512, int(math.ceil(max(shape) / 4)))
    return value


def _zogy_psf(model, regularise: bool):
    """The PSF to give ZOGY: an array, or for a PSF varying over the field a
    callable that evaluates it (regularised like the constant one) at a tile's centre."""
    if not getattr(model, "varies", False):
        return model.psf

    def at(x, y):
        psf = model.at(x, y)
        return _regularise_array(psf)[0] if regularise else psf

    return at


def _regularise_psf(model):
    """:func:`_regularise_array` applied to a model's PSF: a new model (and σ)."""
    import dataclasses

    from ._psf import measure_fwhm

    psf = np.asarray(model.psf, dtype=np.float64)
    clean, sigma = _regularise_array(psf)
    if clean is psf:  # nothing to measure the noise on: unchanged
        return model, sigma
    return dataclasses.replace(model, psf=clean, fwhm=measure_fwhm(clean), method=f"{model.method}+regularised"), sigma


def _moffat_wings(psf: np.ndarray, r: np.ndarray, fwhm: float):
    """A Moffat ``a (1 + (r/α)²)^−β`` (plus a constant) fitted to the ring means of ``psf``, evaluated at ``r``
    without the constant; None if no fit is found.

    For each (α, β) on a grid the model is linear in ``a`` and the constant,
    so the fit is a weighted least-squares solve per grid point, all at once
    (a few milliseconds, where an iterative bounded fit took a quarter of a
    second and ZOGY evaluates one PSF per tile).
    """
    c = psf.shape[0] // 2
    rings = np.rint(r).astype(int)
    counts = np.bincount(rings.ravel()).astype(float)
    profile = np.bincount(rings.ravel(), psf.ravel()) / np.maximum(counts, 1)
    radii = np.arange(profile.size, dtype=float)
    use = (radii >= max(1.0, _WING_FIT_FWHM * fwhm)) & (radii <= c - 1) & (counts > 0)
    if use.sum() < 4 or not profile[0] > 0:
        return None
    x, y, w = radii[use], profile[use], counts[use]  # ring-mean noise ∝ 1/√pixels: weights ∝ pixels
    alpha = np.geomspace(0.25 * max(fwhm, 0.5), 4.0 * max(fwhm, 0.5), 60)[:, None, None]
    beta = np.linspace(1.05, 8.0, 70)[None, :, None]
    shape = (1.0 + (x / alpha) ** 2) ** (-beta)                          # (60, 70, n_r)
    sw, swy = w.sum(), (w * y).sum()
    swb, swbb, swby = (w * shape).sum(-1), (w * shape * shape).sum(-1), (w * shape * y).sum(-1)
    det = swbb * sw - swb**2
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = (swby * sw - swb * swy) / det
        pedestal = (swbb * swy - swb * swby) / det
        chi2 = (w * (y - amp[..., None] * shape - pedestal[..., None]) ** 2).sum(-1)
    chi2 = np.where(np.isfinite(chi2) & (amp > 0), chi2, np.inf)
    best = np.unravel_index(int(np.argmin(chi2)), chi2.shape)
    if not np.isfinite(chi2[best]):
        return None
    wings = amp[best] * (1.0 + (r / alpha[best[0], 0, 0]) ** 2) ** (-beta[0, best[1], 0])
    return wings if np.all(np.isfinite(wings)) else None


def _regularise_array(psf: np.ndarray):
    """Suppress the pixel noise of an empirical PSF (a stack of noisy stars).

    ZOGY divides by the PSF spectra, so noise in an empirical PSF at the
    0.1 % level rings around every bright star, cosmic ray and hot pixel.
    The noise σ is measured from neighbour differences in the outer ring
    (smooth wings cancel there) and the spectrum is Wiener-shrunk (factor
    max(0, 1 − 4 n² σ² / |P̂|²)). The wings, where the stack is mostly
    noise, are replaced beyond 1.5 FWHM by a Moffat profile fitted to the
    stack's ring means from 1 FWHM out (cosine blend over 1.5 px; a constant
    term takes up residual sky): cutting them off instead
    leaves rings around bright stars and biases fluxes low by the missing
    few per cent. If the fit fails the wings are tapered to 0 (cosine, 2 px)
    beyond the radius where the azimuthal mean falls below 3 σ. The result
    is renormalised. Returns the new PSF (``psf`` itself when it cannot be
    measured) and σ.
    """
    from ._psf import measure_fwhm

    n = psf.shape[0]
    c = n // 2
    y, x = np.indices(psf.shape) - c
    r = np.hypot(x, y)
    outer = r > 0.7 * c
    pairs = outer[:, 1:] & outer[:, :-1]
    if pairs.sum() < 20:
        return psf, float("nan")
    diffs = (psf[:, 1:] - psf[:, :-1])[pairs]
    sigma = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2.0)
    if not sigma > 0:
        return psf, sigma
    spectrum = np.fft.rfft2(np.fft.ifftshift(psf))
    power = np.maximum(np.abs(spectrum) ** 2, np.finfo(np.float64).tiny)
    shrink = np.clip(1.0 - 4.0 * psf.size * sigma**2 / power, 0.0, 1.0)
    clean = np.fft.fftshift(np.fft.irfft2(spectrum * shrink, s=psf.shape))
    fwhm = measure_fwhm(clean)
    wings = _moffat_wings(psf, r, fwhm) if np.isfinite(fwhm) else None
    if wings is not None:
        join = max(_WING_JOIN_FWHM * fwhm, 2.0)
        weight = np.clip((r - join) / 1.5, 0.0, 1.0)
        weight = 0.5 - 0.5 * np.cos(np.pi * weight)
        clean = (1.0 - weight) * clean + weight * wings
    else:
        rings = r.astype(int)
        profile = np.bincount(rings.ravel(), clean.ravel()) / np.bincount(rings.ravel())
        below = np.flatnonzero(profile < 3.0 * sigma)
        edge = float(below[0]) if below.size else float(c)
        ramp = np.clip((edge + 2.0 - r) / 2.0, 0.0, 1.0)
        clean *= 0.5 - 0.5 * np.cos(np.pi * ramp)
    total = clean.sum()
    if not total > 0:
        return psf, sigma
    clean /= total
    return clean, sigma


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
    return float(max(np.abs(acf[0]).max(), np.abs(acf[-1]).max(), np.abs(acf[:, 0]).max(), np.abs(acf[:, -1]).max()))


def _check_calibration(metrics: dict) -> None:
    """Warn when S_corr is not close to unit variance: its thresholds would not mean what they say."""
    std = metrics.get("scorr_robust_std")
    if std is None or not math.isfinite(std):
        return
    if 1.0 / SCORR_STD_TOLERANCE <= std <= SCORR_STD_TOLERANCE:
        return
    hints = []
    if metrics.get("noise_correlated_sci") or metrics.get("noise_correlated_ref"):
        hints.append(f"the noise is correlated between pixels (lag-1 ACF science "
                     f"{metrics.get('noise_acf_lag1_sci', float('nan')):.2f}, reference "
                     f"{metrics.get('noise_acf_lag1_ref', float('nan')):.2f}), as after resampling a coarser image")
    if metrics.get("psf_method_sci") == "gaussian-fallback" or metrics.get("psf_method_ref") == "gaussian-fallback":
        hints.append("a PSF is a Gaussian fallback")
    warnings.warn(
        f"difference: the robust standard deviation of S_corr is {std:.2f} (expected 1 within a factor "
        f"{SCORR_STD_TOLERANCE}), so its significances are miscalibrated by that factor; "
        f"{100 * metrics.get('mask_fraction', float('nan')):.1f} % of the result is masked"
        + (" (" + "; ".join(hints) + ")" if hints else ""),
        AstridWarning,
        stacklevel=3,
    )


# ----------------------------------------------------------------------------- difference


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
    **options,
) -> DifferenceResult:
    """Difference two images in one call: align, background, PSF, flux ratio, subtract.

    Parameters
    ----------
    reference, science : Image or path-like
        The template and the new image (read with :func:`astrid.read_image`
        when given as paths). The result is on the reference pixel grid.
    method : {"zogy", "classic", "kernel"}, optional
        ZOGY proper subtraction (default), the classic Gaussian-matching
        baseline (:func:`astrid._classic.classic_subtract`), or a fitted,
        spatially varying PSF-matching kernel (:func:`astrid.kernel.subtract`,
        docs/kernel.md; ``S_corr`` is its matched-filter ``detection`` image,
        ``S``, ``flux`` and ``P_D`` are None). Its own options go in the
        ``kernel`` option as a dict of :class:`astrid.kernel.KernelOptions`
        fields, e.g. ``kernel={"basis": "delta"}``.
    align : bool, optional
        Resample the science image onto the reference grid with
        :func:`astrid._align.align` (default). With False the images must
        already share a grid (same shape).
    science_psf, reference_psf : PSFModel or array_like, optional
        PSFs to use instead of estimating them from the stars (e.g. WebbPSF
        models). Arrays are normalised to sum 1 and must be odd-sized.
    flux_ratio : float, optional
        Science flux of a source divided by its reference flux, within
        [1e-3, 1e3] (:data:`FLUX_RATIO_RANGE`, 7.5 magnitudes either way;
        other values are refused as typos). Default: measured by
        :func:`astrid._photometry.flux_ratio` (matched stars, or the zero
        points when given as options).
    allow_mismatch : bool, optional
        Difference images whose filter or telescope differ (with an
        :class:`~astrid.errors.AstridWarning`) instead of raising.
    dtype : {numpy.float32, numpy.float64}, optional
        Precision of the subtraction (float32: half the memory, about twice
        as fast).
    **options
        ``align_method`` ("interp"), ``refine`` (True): alignment.
        ``box_size`` (64), ``filter_size`` (3): background.
        ``psf_size``, ``min_stars`` (10), ``max_stars`` (200),
        ``psf_degree`` ("auto": a PSF whose width varies over the field as a
        polynomial of degree 2 with 40 PSF stars or more, 1 with 20, else
        constant; see :func:`astrid.estimate_psf`), ``regularise_psf``
        (True: suppress the pixel noise of empirical PSFs, which ZOGY would
        turn into rings around bright sources), ``psf_stars`` (known stars,
        e.g. Gaia DR3: a :class:`~astropy.coordinates.SkyCoord` or a Table
        with ``ra``/``dec`` in degrees, or ``x``/``y`` in reference pixels;
        only detections at their positions are PSF stars, for fields where
        galaxies outnumber the stars): PSF. Each image's header seeing
        (:attr:`astrid.ImageMeta.seeing_fwhm_pix`) is the star finder's
        prior and is checked against the PSF in :attr:`DifferenceResult.quality`.
        ``science_zp``, ``reference_zp``: zero points for the flux ratio.
        ``astrometric_sigma`` ((σx, σy) px; default from the alignment's
        matched-star residuals, 0 without alignment), ``use_variance``
        (True: source noise from the images' variance maps, else from the
        gain and the data, else the background RMS map; the map's excess over
        its own sky level is the source noise), ``noise_correlation``
        ("auto": estimate each image's noise autocorrelation and use it in
        ZOGY when any lag within ±2 px exceeds 0.05, as after resampling or
        drizzling; True: always; False: white noise), ``systematic_fraction``
        ("auto": ε measured on bright static stars, see
        :func:`astrid.zogy.subtract`; or a number), ``mask_radius``,
        ``fill_value``, ``workers``, ``tile_size`` ("auto": with a varying
        PSF, ZOGY runs on tiles, each with the PSFs at its centre, about 4 × 4
        of them and none under 512 px; or a size in pixels): subtraction.

    Returns
    -------
    DifferenceResult

    Raises
    ------
    AstridMismatchError
        Filters or telescopes differ and ``allow_mismatch`` is False.
    AstridInputError
        Unknown method or option, unreadable input, or shapes that differ
        with ``align=False``; and whatever the stages raise (missing WCS, no
        overlap, unusable PSF). Options, ``flux_ratio`` and given PSFs are
        checked before any stage runs.

    Warns
    -----
    AstridWarning
        More than half of the result is masked (see
        :data:`astrid.zogy.MASK_WARN_FRACTION`; nothing left raises),
        the robust standard deviation of ``S_corr`` is off 1 by more than a
        factor :data:`SCORR_STD_TOLERANCE` (1.3), the alignment rests on a
        large WCS correction from fewer than 10 stars, or a PSF fell back to
        a Gaussian.

    Notes
    -----
    Isolated NaN (or inf, or ``numpy.ma``-masked) pixels on smooth sky, with
    at most one bad neighbour and neighbours spanning less than 6 sigma, are
    filled with the median of their neighbours before anything else (see
    :mod:`astrid._inpaint`): they are flagged in :attr:`DifferenceResult.mask`
    on their own footprint instead of a kernel radius around each. Finite
    pixels that a mask flags (saturated, hot, bad columns) are masked and
    dilated as before. ``metrics`` counts the filled pixels
    (``n_repaired_sci``, ``n_repaired_ref``).
    """
    started = time.perf_counter()
    if method not in _METHODS:
        raise AstridInputError(f"method: must be one of {_METHODS}, got {method!r}")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise AstridInputError(f"difference: unknown option(s) {unknown}; known options are {sorted(_OPTIONS)}")
    # Cheap arguments first: a typo must not cost an alignment, a background and two PSFs.
    _check_options(options, dtype)
    if flux_ratio is not None:
        flux_ratio = _check_flux_ratio(flux_ratio)
    if science_psf is not None:
        science_psf = _as_psf_model(science_psf, "science")
    if reference_psf is not None:
        reference_psf = _as_psf_model(reference_psf, "reference")
    from ._background import estimate_backgrounds
    from ._psf import estimate_psf

    reference = _load(reference, "reference")
    science = _load(science, "science")
    _check_compatible(reference, science, allow_mismatch)
    psf_stars = _star_positions(options.get("psf_stars"), reference)
    metrics: dict[str, Any] = {"method": method}
    reference, ref_repaired = _repair_image(reference, "reference")
    original_science = science
    science, sci_repaired = _repair_image(science, "science")
    metrics.update(n_repaired_sci=int(sci_repaired.sum()), n_repaired_ref=int(ref_repaired.sum()))

    # --- align
    start = time.perf_counter()
    if align:
        from ._align import align as align_images

        alignment = align_images(
            science, reference, method=options.get("align_method", "interp"), refine=options.get("refine", True)
        )
        aligned = alignment.image
        footprint = alignment.footprint
        metrics.update(
            overlap=alignment.overlap,
            align_rms=alignment.rms,
            n_matched=alignment.n_matched,
            align_method=alignment.method,
            align_shift=float(math.hypot(*alignment.shift)),
        )
        reference_stars = alignment.reference_stars
        science_stars = alignment.science_stars
        astrometric_sigma = tuple(float(s) for s in alignment.astrometric_sigma)
        if not all(math.isfinite(s) for s in astrometric_sigma):
            astrometric_sigma = (0.0, 0.0)
        repaired = ref_repaired | _repaired_on_reference(sci_repaired, original_science, reference, alignment)
    else:
        if science.shape != reference.shape:
            raise AstridInputError(
                f"{_name(science, 'science')} has shape {science.shape} but {_name(reference, 'reference')} "
                f"has {reference.shape}: use align=True to resample it onto the reference grid"
            )
        aligned = science
        reference_stars = science_stars = None
        footprint = ~(np.asarray(science.mask, bool) | ~np.isfinite(science.data))
        metrics.update(overlap=float(footprint.mean()), align_rms=float("nan"), n_matched=0, align_method="none")
        astrometric_sigma = (0.0, 0.0)
        repaired = ref_repaired | sci_repaired
    astrometric_sigma = options.get("astrometric_sigma", astrometric_sigma)
    metrics["time_align"] = time.perf_counter() - start

    # --- background
    start = time.perf_counter()
    bg_kwargs = {k: options[k] for k in ("box_size", "filter_size") if k in options}
    sci_mask = np.asarray(aligned.mask, bool) | ~footprint
    ref_mask = np.asarray(reference.mask, bool)
    sci_bg, ref_bg = estimate_backgrounds([(aligned.data, sci_mask), (reference.data, ref_mask)], **bg_kwargs)
    _check_noise(sci_bg, science, "science")
    _check_noise(ref_bg, reference, "reference")
    N = (aligned.data - sci_bg.background).astype(dtype, copy=False)
    R = (reference.data - ref_bg.background).astype(dtype, copy=False)
    metrics.update(sigma_sci=float(sci_bg.median_rms), sigma_ref=float(ref_bg.median_rms),
                   background_method_sci=sci_bg.method, background_method_ref=ref_bg.method)
    metrics["time_background"] = time.perf_counter() - start

    # --- PSFs
    start = time.perf_counter()
    psf_kwargs = {"size": options.get("psf_size"), "min_stars": options.get("min_stars", 10),
                  "max_stars": options.get("max_stars", 200), "degree": options.get("psf_degree", "auto")}
    regularise = bool(options.get("regularise_psf", True))
    psf_noise = {"sci": float("nan"), "ref": float("nan")}
    seeing_sci, seeing_ref = _seeing_on_grid(science, reference, align), reference.meta.seeing_fwhm_pix
    if psf_stars is not None:
        psf_kwargs["star_positions"] = psf_stars
    if science_psf is None:
        # The alignment measured the science stars on their own grid and moved them onto this
        # one: their S/N is not inflated by the resampling's correlated noise.
        science_psf = _estimate_psf_named(estimate_psf, science, "science", data=aligned.data, mask=sci_mask,
                                          background=sci_bg, saturation=aligned.meta.saturation,
                                          stars=science_stars, seeing=seeing_sci, **psf_kwargs)
        if regularise and science_psf.method == "empirical":
            science_psf, psf_noise["sci"] = _regularise_psf(science_psf)
    if reference_psf is None:
        # The alignment already detected the reference's stars (same image, same mask).
        reference_psf = _estimate_psf_named(estimate_psf, reference, "reference", data=reference.data,
                                            mask=ref_mask, background=ref_bg,
                                            saturation=reference.meta.saturation, stars=reference_stars,
                                            seeing=seeing_ref, **psf_kwargs)
        if regularise and reference_psf.method == "empirical":
            reference_psf, psf_noise["ref"] = _regularise_psf(reference_psf)
    metrics.update(psf_noise_sci=psf_noise["sci"], psf_noise_ref=psf_noise["ref"])
    metrics.update(fwhm_sci=float(science_psf.fwhm), fwhm_ref=float(reference_psf.fwhm),
                   psf_method_sci=science_psf.method, psf_method_ref=reference_psf.method,
                   psf_degree_sci=int(science_psf.degree), psf_degree_ref=int(reference_psf.degree),
                   n_psf_stars_sci=int(science_psf.n_stars), n_psf_stars_ref=int(reference_psf.n_stars),
                   seeing_sci=float("nan") if seeing_sci is None else float(seeing_sci),
                   seeing_ref=float("nan") if seeing_ref is None else float(seeing_ref))
    for side, model in (("sci", science_psf), ("ref", reference_psf)):
        metrics[f"psf_n_usable_{side}"] = int(getattr(model, "n_usable", model.n_stars))
        metrics[f"stellar_locus_{side}"] = getattr(model, "stellar_locus", None)
        metrics[f"psf_note_{side}"] = str(getattr(model, "quality_note", ""))
    metrics["time_psf"] = time.perf_counter() - start

    # --- flux ratio
    start = time.perf_counter()
    both_masks = sci_mask | ref_mask
    science_out = aligned.copy(data=N, mask=sci_mask)
    reference_out = reference.copy(data=R, mask=ref_mask)
    if flux_ratio is None:
        from ._photometry import flux_ratio as measure_flux_ratio

        # Images rather than arrays: their zero points are the fallback when
        # too few stars are usable.
        from ._stars import _clean

        stars = None if reference_stars is None else reference_stars[_clean(reference_stars)]
        measured = measure_flux_ratio(
            science_out, reference_out, science_psf=science_psf, reference_psf=reference_psf, mask=both_masks,
            stars=stars,
            science_zp=options.get("science_zp"), reference_zp=options.get("reference_zp"),
        )
        ratio = float(measured.ratio)
        metrics.update(flux_ratio_error=float(measured.error), flux_ratio_method=measured.method,
                       n_flux_ratio_stars=int(measured.n_stars))
    else:
        ratio = flux_ratio
        metrics.update(flux_ratio_error=0.0, flux_ratio_method="given", n_flux_ratio_stars=0)
    metrics["flux_ratio"] = ratio
    metrics["time_flux_ratio"] = time.perf_counter() - start

    # --- subtract
    start = time.perf_counter()
    use_variance = bool(options.get("use_variance", True))
    sci_var, variance_source = _variance(aligned, sci_bg, N, sci_mask, use_variance)
    ref_var, _ = _variance(reference, ref_bg, R, ref_mask, use_variance)
    metrics["variance_source"] = variance_source
    correlation = options.get("noise_correlation", "auto")
    if correlation not in ("auto", True, False):
        raise AstridInputError(f"noise_correlation: must be 'auto', True or False, got {correlation!r}")
    common = {k: options[k] for k in ("mask_radius", "fill_value") if k in options}
    if method == "zogy":
        from .zogy import ZogyImage, ZogyOptions, subtract

        sci_acf, metrics["noise_acf_lag1_sci"] = _noise_acf(N, sci_mask, correlation)
        ref_acf, metrics["noise_acf_lag1_ref"] = _noise_acf(R, ref_mask, correlation)
        metrics["noise_correlated_sci"] = sci_acf is not None
        metrics["noise_correlated_ref"] = ref_acf is not None
        raw = subtract(
            reference=ZogyImage(R, _zogy_psf(reference_psf, regularise), ref_bg.median_rms,
                                variance=ref_var, noise_acf=ref_acf),
            science=ZogyImage(N, _zogy_psf(science_psf, regularise), sci_bg.median_rms,
                              variance=sci_var, noise_acf=sci_acf),
            flux_ratio=ratio, mask=both_masks, repaired=repaired if repaired.any() else None,
            options=ZogyOptions(
                astrometric_sigma=astrometric_sigma, dtype=dtype, workers=options.get("workers"),
                systematic_fraction=options.get("systematic_fraction", "auto"),
                tile_size=_tile_size(options.get("tile_size", "auto"), N.shape), **common,
            ),
        )
        S, S_corr, flux, flux_err, P_D = raw.S, raw.S_corr, raw.flux, raw.flux_err, raw.P_D
        D, mask = raw.D, raw.mask
        metrics.update(scorr_robust_std=raw.scorr_std, n_fft=raw.n_fft, mask_radius=raw.mask_radius,
                       systematic_fraction=raw.systematic_fraction, n_systematic_stars=raw.n_systematic_stars,
                       astrometric_sigma_x=raw.astrometric_sigma[0], astrometric_sigma_y=raw.astrometric_sigma[1],
                       n_tiles=max(len(raw.tiles), 1), regularised_psf=regularise)
    elif method == "kernel":
        from .kernel import KernelInputs, KernelOptions
        from .kernel import subtract as kernel_subtract

        kernel_options = options.get("kernel") or {}  # checked by _check_options before any stage ran
        # Images with their own masks: the convolved image's bad pixels spread over the kernel, the
        # other's do not.
        measured = KernelInputs(
            science_variance=sci_var, reference_variance=ref_var, science_sigma=sci_bg.median_rms,
            reference_sigma=ref_bg.median_rms, science_fwhm=science_psf.fwhm, reference_fwhm=reference_psf.fwhm,
            science_psf=science_psf.psf, reference_psf=reference_psf.psf, astrometric_sigma=astrometric_sigma,
            filled=repaired if repaired.any() else None,
        )
        raw = kernel_subtract(reference_out, science_out, stars=reference_stars, inputs=measured,
                              options=KernelOptions(**kernel_options, dtype=dtype, **common))
        S = flux = flux_err = P_D = None
        D, S_corr, mask = raw.D, raw.detection, raw.mask
        metrics.update(scorr_robust_std=raw.detection_std, mask_radius=raw.mask_radius, convolved=raw.convolved,
                       kernel_flux_ratio=raw.flux_ratio, kernel_degree=raw.model.degree,
                       kernel_half_width=raw.model.half_width, n_stamps_used=raw.n_stamps_used,
                       n_stamps_rejected=raw.n_stamps_rejected, systematic_fraction=raw.detection_systematic,
                       time_kernel_fit=raw.timings["select"] + raw.timings["systems"] + raw.timings["solve"])
    else:
        from ._classic import classic_subtract

        raw = classic_subtract(
            N, R, science_psf.fwhm, reference_psf.fwhm, sci_bg.median_rms, ref_bg.median_rms,
            flux_ratio=ratio, science_variance=sci_var, reference_variance=ref_var, mask=both_masks,
            dtype=dtype, _filled=repaired if repaired.any() else None, **common,
        )
        S = flux = flux_err = P_D = None
        D, S_corr, mask = raw.D, raw.significance, raw.mask
        metrics.update(scorr_robust_std=raw.significance_std, mask_radius=raw.mask_radius,
                       kernel_sigma=raw.kernel_sigma, convolved=raw.convolved)
    metrics["mask_fraction"] = float(mask.mean())
    metrics["time_subtract"] = time.perf_counter() - start
    _check_calibration(metrics)
    from ._quality import assess

    quality = assess(metrics)
    metrics.update(quality=quality.verdict, quality_reasons=quality.summary())
    metrics["time_total"] = time.perf_counter() - started

    return DifferenceResult(
        method=method,
        science=science_out,
        reference=reference_out,
        D=D,
        S=S,
        S_corr=S_corr,
        flux=flux,
        flux_err=flux_err,
        P_D=P_D,
        science_psf=science_psf,
        reference_psf=reference_psf,
        science_background=sci_bg,
        reference_background=ref_bg,
        mask=mask,
        footprint=footprint,
        wcs=reference.wcs,
        metrics=metrics,
        subtraction=raw,
        quality=quality,
    )
