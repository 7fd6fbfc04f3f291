"""Point sources injected into real images and real alert stamps, with a truth table.

Injection is how surveys get labelled examples without labelling anything:
PSF-shaped sources of known flux are added to real pixels, the ordinary
pipeline runs, and the recovered injections are the real examples (Rubin's and
KMTNet's label-free training; the sim-to-real issue). Two entry points:

- :func:`inject_sources` adds point sources to one image (the science epoch of
  a pair) with that image's own PSF, at random positions, near detected
  galaxies (offsets drawn as the simulator draws supernova hosts), or on
  galaxy cores; fluxes from an S/N range; Poisson noise for the added flux.
  :func:`match_injections` then tells which the pipeline found, at what flux.
- :func:`inject_into_stamps` adds a point source to the science and
  difference channels of triplets (e.g. real alerts from
  :func:`astrid.read_ztf`) with noise matching the stamp.

Every draw comes from ``numpy.random.default_rng(seed)``: the same seed gives
the same injections.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.table import Table

from ._utils import GAUSSIAN_SIGMA_TO_FWHM, robust_std
from .errors import AstridInputError, AstridWarning
from .io import Image, read_image

__all__ = [
    "PLACEMENTS",
    "BACKGROUND_KINDS",
    "Injection",
    "inject_sources",
    "match_injections",
    "inject_into_stamps",
    "triplets_on_real_backgrounds",
    "reference_cutouts",
    "shared_ztf_backgrounds",
]

#: Where :func:`inject_sources` puts its sources.
PLACEMENTS = ("random", "galaxies", "cores")

_MIN_PSF_STARS = 10  # as astrid.estimate_psf: fewer usable stars give its Gaussian fallback
_TRIES = 200  # positions drawn per source before giving up on a crowded or masked image


@dataclass(frozen=True)
class Injection:
    """Sources injected into an image.

    Attributes
    ----------
    image : Image
        The input image with the sources added (a copy; the input is not
        changed). Its mask, WCS, variance and metadata are the input's; its
        header gains ``HISTORY`` lines saying what was injected.
    truth : astropy.table.Table
        One row per injected source: ``id``, ``x``, ``y`` (0-based pixels of
        ``image``), ``ra``, ``dec`` (degrees, when the image has a WCS),
        ``flux`` (data units, the PSF's total), ``snr`` (the optimal S/N it
        was given, against the local noise), ``peak`` (data units),
        ``placement``, ``host_id`` (row of :attr:`galaxies`, -1 without),
        ``host_offset`` (pixels from the host's centre, NaN without) and
        ``kind`` (``"injected"``). ``meta`` holds the seed, the PSF's method,
        FWHM and number of stars, the gain and whether the added flux carries
        Poisson noise.
    psf : PSFModel
        The PSF the sources were drawn with.
    galaxies : astropy.table.Table or None
        The extended sources found for ``placement="galaxies"`` or
        ``"cores"`` (``x``, ``y``, ``a``, ``b``, ``theta``, ``r_half``,
        pixels and radians), else None.
    """

    image: Image
    truth: Table
    psf: object
    galaxies: Table | None = None


# --------------------------------------------------------------------------- #
# inputs
# --------------------------------------------------------------------------- #


def _as_image(image, name: str) -> Image:
    if isinstance(image, Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    raise AstridInputError(
        f"{name} must be an astrid.Image or a FITS path, not {type(image).__name__}"
    )


def _as_psf(psf, image: Image, background, name: str = "image"):
    from .diffim import PSFModel, estimate_psf

    if psf is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = estimate_psf(
                    image.data,
                    image.mask,
                    background=background,
                    saturation=image.meta.saturation,
                    seeing=image.meta.seeing_fwhm_pix,
                )
            except AstridInputError as exc:
                raise AstridInputError(
                    f"{name}{_named(image)}: no PSF stars to inject with ({exc}); pass psf= (an array or "
                    "astrid.PSFModel)"
                ) from None
        if model.method == "empirical":
            for warning in caught:  # not about a fallback that is refused below
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        else:
            raise AstridInputError(
                f"{name}{_named(image)}: no PSF stars to inject with: {model.n_usable} usable stars, at least "
                f"{_MIN_PSF_STARS} needed for an empirical PSF; pass psf= (an array or astrid.PSFModel)"
            )
        return model
    if isinstance(psf, PSFModel):
        return psf
    array = np.asarray(psf, dtype=float)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] % 2 == 0:
        raise AstridInputError(f"psf must be a square array of odd side, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or array.sum() <= 0:
        raise AstridInputError("psf must be finite with a positive sum")
    from .diffim import measure_fwhm

    array = array / array.sum()
    return PSFModel(psf=array, fwhm=float(measure_fwhm(array)), n_stars=0, method="given")


def _named(image: Image) -> str:
    return f" ({image.meta.path})" if image.meta.path else ""


def _snr_range(snr) -> tuple[float, float]:
    low, high = (float(snr), float(snr)) if np.ndim(snr) == 0 else tuple(float(v) for v in snr)
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise AstridInputError(
            f"snr={snr!r} must be a positive number or a range (low, high) with low <= high"
        )
    return low, high


# --------------------------------------------------------------------------- #
# galaxies and positions
# --------------------------------------------------------------------------- #


def find_galaxies(data: np.ndarray, mask: np.ndarray, background, psf_fwhm: float) -> Table:
    """Extended sources of an image: detections wider than 1.5 PSF FWHM.

    Parameters
    ----------
    data : numpy.ndarray, shape (ny, nx)
        The image (data units).
    mask : numpy.ndarray of bool, shape (ny, nx)
        True where pixels must not be used.
    background : Background
        From :func:`astrid.estimate_background`.
    psf_fwhm : float
        The image's PSF FWHM in pixels.

    Returns
    -------
    astropy.table.Table
        ``x``, ``y`` (centroid), ``a``, ``b`` (semi-axes, 1σ), ``theta``
        (radians, counter-clockwise from +x), ``r_half`` (half-light radius)
        in pixels, ``flux`` (data units); brightest first.
    """
    from photutils.segmentation import SourceCatalog, detect_sources

    residual = np.where(mask, 0.0, data - background.background)
    n_pixels = max(9, int(round(psf_fwhm**2)))
    try:  # photutils >= 3 renamed the argument and the catalogue's attributes
        segments = detect_sources(residual, 3.0 * background.rms, n_pixels=n_pixels, mask=mask)
    except TypeError:
        segments = detect_sources(residual, 3.0 * background.rms, npixels=n_pixels, mask=mask)
    columns = {"x": [], "y": [], "a": [], "b": [], "theta": [], "r_half": [], "flux": []}
    if segments is not None:
        catalog = SourceCatalog(residual, segments, mask=mask)

        def values(new: str, old: str, *args):
            attribute = getattr(catalog, new if hasattr(type(catalog), new) else old)
            attribute = attribute(*args) if args else attribute
            return np.asarray(getattr(attribute, "value", attribute), dtype=float)

        a, b = (
            values("semimajor_axis", "semimajor_sigma"),
            values("semiminor_axis", "semiminor_sigma"),
        )
        r_half = values("flux_radius", "fluxfrac_radius", 0.5)
        width = 2.0 * np.sqrt(2.0 * np.log(2.0)) * np.sqrt(a * b)
        keep = np.isfinite(width) & (width > 1.5 * psf_fwhm) & np.isfinite(r_half)
        columns = {
            "x": values("x_centroid", "xcentroid")[keep],
            "y": values("y_centroid", "ycentroid")[keep],
            "a": a[keep],
            "b": b[keep],
            "theta": np.deg2rad(values("orientation", "orientation"))[keep],
            "r_half": r_half[keep],
            "flux": values("segment_flux", "segment_flux")[keep],
        }
    table = Table({key: np.asarray(value, dtype=float) for key, value in columns.items()})
    table.sort("flux", reverse=True)
    return table


def _usable(x: float, y: float, mask: np.ndarray, edge: int, clear: float) -> bool:
    ny, nx = mask.shape
    if not (edge <= x < nx - edge and edge <= y < ny - edge):
        return False
    r = int(math.ceil(clear))
    ix, iy = int(round(x)), int(round(y))
    return not mask[max(iy - r, 0) : iy + r + 1, max(ix - r, 0) : ix + r + 1].any()


def _draw_positions(rng, n, placement, mask, edge, fwhm, galaxies):
    """Positions (x, y), host rows and host offsets; clear of masks and of each other."""
    xs, ys, hosts, offsets = [], [], [], []
    separation = 3.0 * fwhm
    for _ in range(n):
        for _attempt in range(_TRIES):
            host, offset = -1, np.nan
            if placement == "random":
                x = rng.uniform(edge, mask.shape[1] - edge)
                y = rng.uniform(edge, mask.shape[0] - edge)
            else:
                host = int(rng.integers(len(galaxies)))
                g = galaxies[host]
                if placement == "cores":
                    r = rng.uniform(0.0, 0.3 * fwhm)
                else:
                    # Radial distribution of an exponential disc, r / h ~ Gamma(2) with
                    # h = r_half / 1.678 (as the simulator draws supernova hosts).
                    r = rng.gamma(2.0, g["r_half"] / 1.678)
                phi = rng.uniform(0.0, 2.0 * np.pi)
                u, v = r * np.cos(phi), r * np.sin(phi) * (g["b"] / g["a"] if g["a"] > 0 else 1.0)
                x = g["x"] + u * np.cos(g["theta"]) - v * np.sin(g["theta"])
                y = g["y"] + u * np.sin(g["theta"]) + v * np.cos(g["theta"])
                offset = float(np.hypot(x - g["x"], y - g["y"]))
            far = all(math.hypot(x - xo, y - yo) >= separation for xo, yo in zip(xs, ys))
            if far and _usable(x, y, mask, edge, fwhm):
                break
        else:
            among = "" if galaxies is None else f" on {len(galaxies)} galaxies"
            raise AstridInputError(
                f"image: found room for only {len(xs)} of {n} sources{among} ({placement!r} placement, unmasked, "
                f"{separation:.1f} px apart, {edge} px from the edge); ask for fewer"
            )
        xs.append(x)
        ys.append(y)
        hosts.append(host)
        offsets.append(offset)
    return np.array(xs), np.array(ys), np.array(hosts, dtype=int), np.array(offsets)


def _given_positions(positions, mask, edge, fwhm):
    array = np.asarray(positions, dtype=float)
    if array.ndim != 2 or array.shape[1] != 2:
        raise AstridInputError(
            f"positions must have shape (n, 2) of (x, y) pixels, got {array.shape}"
        )
    ny, nx = mask.shape
    for k, (x, y) in enumerate(array):
        if not (
            np.isfinite(x) and np.isfinite(y) and edge <= x < nx - edge and edge <= y < ny - edge
        ):
            raise AstridInputError(
                f"positions[{k}] = ({x:g}, {y:g}) is off the image or within {edge} px of its edge "
                f"(image {nx} x {ny} px)"
            )
        if not _usable(x, y, mask, 0, fwhm):
            raise AstridInputError(
                f"positions[{k}] = ({x:g}, {y:g}) is on or next to masked pixels"
            )
    return array[:, 0], array[:, 1]


# --------------------------------------------------------------------------- #
# rendering
# --------------------------------------------------------------------------- #


def _shifted_psf(psf_model, x: float, y: float) -> np.ndarray:
    """The PSF at (x, y), moved by the sub-pixel part of the position (Fourier shift)."""
    from scipy.ndimage import fourier_shift

    stamp = psf_model.at(x, y) if getattr(psf_model, "degree", 0) else psf_model.psf
    dx, dy = x - round(x), y - round(y)
    moved = np.fft.ifft2(fourier_shift(np.fft.fft2(stamp), (dy, dx))).real
    return moved / moved.sum()


def _cutout(shape, x: float, y: float, half: int):
    ny, nx = shape
    ix, iy = int(round(x)), int(round(y))
    y0, y1, x0, x1 = iy - half, iy + half + 1, ix - half, ix + half + 1
    image = (slice(max(y0, 0), min(y1, ny)), slice(max(x0, 0), min(x1, nx)))
    stamp = (
        slice(image[0].start - y0, image[0].stop - y0),
        slice(image[1].start - x0, image[1].stop - x0),
    )
    return image, stamp


def _flux_for_snr(
    profile: np.ndarray, variance: np.ndarray, snr: float, gain: float | None
) -> float:
    """Flux whose optimal (PSF-weighted) S/N on this variance is ``snr``, its own photon noise included."""
    flux = snr / math.sqrt(float(np.sum(profile**2 / variance)))
    if gain:
        for _ in range(8):  # a fixed point that converges in a few steps
            flux = snr / math.sqrt(float(np.sum(profile**2 / (variance + flux * profile / gain))))
    return flux


# --------------------------------------------------------------------------- #
# public
# --------------------------------------------------------------------------- #


def inject_sources(
    image,
    n: int = 20,
    *,
    snr=(5.0, 50.0),
    placement: str = "random",
    positions=None,
    psf=None,
    gain: float | None = None,
    seed: int = 0,
) -> Injection:
    """Add PSF-shaped point sources of known flux to a real image.

    Parameters
    ----------
    image : Image or path-like
        The image to inject into (usually the science epoch of a pair; a FITS
        path is read with :func:`astrid.read_image`).
    n : int, optional
        Number of sources (ignored when ``positions`` is given).
    snr : float or (float, float), optional
        The optimal S/N of each source against the image's local noise (sky,
        and the host's light when the gain is known): one value, or a range
        drawn log-uniformly (default 5–50).
    placement : {"random", "galaxies", "cores"}, optional
        Uniform over the unmasked image; near extended sources found in the
        image (:func:`find_galaxies`), offset along each galaxy's shape with an
        exponential-disc radial profile; or on their centres (within 0.3 FWHM),
        the hardest case for subtraction.
    positions : array_like, shape (m, 2), optional
        ``(x, y)`` pixels (0-based) to inject at instead; each must lie on the
        image, away from its edge and from masked pixels.
    psf : PSFModel or numpy.ndarray, optional
        The image's PSF; default estimated from the image's stars
        (:func:`astrid.estimate_psf`, spatially varying models honoured).
        Refused when the image has too few stars for an empirical PSF.
    gain : float, optional
        Electrons per data unit, for the injected flux's Poisson noise and the
        host light's share of the noise; default the header's (``GAIN``).
        Without one the sources are added noiselessly and a warning says so.
    seed : int, optional
        Seeds every draw (positions, S/N, noise).

    Returns
    -------
    Injection
        The image with the sources, the truth table and the PSF used.

    Raises
    ------
    AstridInputError
        Not an image, too few PSF stars, a bad ``snr``/``n``/``placement``,
        a given position off the image or on masked pixels, no galaxies for
        a galaxy placement, or no room for ``n`` sources.
    """
    from .diffim import estimate_background

    img = _as_image(image, "image")
    low, high, gain = _check_injection(img, n, snr, placement, positions, gain)
    background = estimate_background(img.data, img.mask)
    psf_model = _as_psf(psf, img, background)
    fwhm = float(psf_model.fwhm)
    edge = max(psf_model.psf.shape[0] // 2, int(math.ceil(3 * fwhm)))
    rng = np.random.default_rng(seed)
    x, y, hosts, offsets, galaxies, placement = _injection_positions(
        rng, img, background, fwhm, edge, n, placement, positions
    )
    target = (
        np.exp(rng.uniform(math.log(low), math.log(high), x.size))
        if high > low
        else np.full(x.size, low)
    )
    data, flux, peak = _add_point_sources(rng, img, background, psf_model, x, y, target, gain)

    truth = Table()
    truth["id"] = np.arange(x.size)
    truth["x"], truth["y"] = x, y
    if img.wcs is not None and img.wcs.has_celestial:
        sky = img.wcs.celestial.pixel_to_world(x, y)
        truth["ra"], truth["dec"] = sky.ra.deg, sky.dec.deg
    truth["flux"], truth["snr"], truth["peak"] = flux, target, peak
    truth["placement"] = [placement] * x.size
    truth["host_id"], truth["host_offset"] = hosts, offsets
    truth["kind"] = ["injected"] * x.size
    truth.meta.update(
        {
            "seed": int(seed),
            "psf_method": psf_model.method,
            "psf_fwhm": fwhm,
            "psf_n_stars": int(psf_model.n_stars),
            "gain": None if gain is None else float(gain),
            "poisson_noise": bool(gain),
            "snr_range": [low, high],
            "source": img.meta.path,
        }
    )

    header = img.header.copy()
    header.add_history(
        f"AstrID inject_sources: {x.size} point sources ({placement}), "
        f"S/N {low:g}-{high:g}, seed {seed}"
    )
    out = replace(
        img, data=data.astype(img.data.dtype, copy=False), mask=img.mask.copy(), header=header
    )
    return Injection(image=out, truth=truth, psf=psf_model, galaxies=galaxies)


def _check_injection(img, n, snr, placement, positions, gain):
    """The S/N range and the gain of an injection, after checking the arguments (warns on no gain)."""
    if placement not in PLACEMENTS:
        raise AstridInputError(f"placement={placement!r} is not one of {PLACEMENTS}")
    if positions is None:
        _check_count(n)
    low, high = _snr_range(snr)
    gain = gain if gain is not None else img.meta.gain
    if gain is not None and not (math.isfinite(gain) and gain > 0):
        raise AstridInputError(
            f"gain={gain!r} must be a positive number of electrons per data unit"
        )
    if gain is None:
        warnings.warn(
            f"image{_named(img)}: no gain (GAIN header key or gain=): the injected sources carry "
            "no Poisson noise of their own, so the bright ones are less noisy than real sources",
            AstridWarning,
            stacklevel=3,
        )
    return low, high, gain


def _injection_positions(rng, img, background, fwhm, edge, n, placement, positions):
    """``x, y, host ids, host offsets, galaxies, placement`` of the sources to inject."""
    if positions is not None:
        x, y = _given_positions(positions, img.mask, edge, fwhm)
        return x, y, np.full(x.size, -1), np.full(x.size, np.nan), None, "given"
    galaxies = None
    if placement != "random":
        galaxies = find_galaxies(img.data, img.mask, background, fwhm)
        inside = [_usable(g["x"], g["y"], img.mask, edge, fwhm) for g in galaxies]
        galaxies = galaxies[np.asarray(inside, dtype=bool)] if len(galaxies) else galaxies
        if len(galaxies) == 0:
            raise AstridInputError(
                f"image{_named(img)}: no unmasked galaxies (detections wider than 1.5 PSF FWHM = "
                f"{1.5 * fwhm:.1f} px) for placement={placement!r}; use placement='random'"
            )
    x, y, hosts, offsets = _draw_positions(rng, int(n), placement, img.mask, edge, fwhm, galaxies)
    return x, y, hosts, offsets, galaxies, placement


def _add_point_sources(rng, img, background, psf_model, x, y, target, gain):
    """The image data with the sources added, and each source's flux and peak."""
    half = psf_model.psf.shape[0] // 2
    data = np.array(img.data, dtype=np.float64, copy=True)
    sky_variance = background.rms.astype(np.float64) ** 2
    flux, peak = np.empty(x.size), np.empty(x.size)
    for k in range(x.size):
        profile = _shifted_psf(psf_model, x[k], y[k])
        cut, sub = _cutout(data.shape, x[k], y[k], half)
        p = profile[sub]
        variance = sky_variance[cut].copy()
        if gain:
            variance += np.clip(img.data[cut] - background.background[cut], 0.0, None) / gain
        flux[k] = _flux_for_snr(p, np.where(img.mask[cut], np.inf, variance), target[k], gain)
        model = flux[k] * p
        if gain:
            # Poisson noise of the added electrons only: the image already has the rest.
            model = rng.poisson(np.clip(model, 0.0, None) * gain) / gain + np.minimum(model, 0.0)
        data[cut] += np.where(img.mask[cut], 0.0, model)
        peak[k] = flux[k] * float(p.max())
    return data, flux, peak


def match_injections(
    truth: Table, candidates: Table, radius: float | None = None, *, wcs=None, result=None
) -> Table:
    """Which injected sources the pipeline found, and the flux it measured.

    Parameters
    ----------
    truth : astropy.table.Table
        :attr:`Injection.truth`.
    candidates : astropy.table.Table
        From :func:`astrid.detect` (``x``, ``y`` on the difference's grid,
        ``score``, ``flux``, ``flux_err``).
    radius : float, optional
        Largest distance of a match in pixels; default the truth's PSF FWHM.
    wcs : astropy.wcs.WCS, optional
        The difference grid's WCS (``result.wcs``): the truth's ``ra``/``dec``
        are mapped through it. Without it (and without ``result``) the truth's
        ``x``/``y`` are taken to be on that grid (images already aligned).
    result : DifferenceResult, optional
        Gives ``wcs``; and, for ZOGY results, the flux at each injection's
        sub-pixel peak (:func:`astrid.zogy.flux_at`) instead of the nearest
        pixel's.

    Returns
    -------
    astropy.table.Table
        ``truth`` with ``recovered`` (bool), ``candidate`` (row of
        ``candidates``, -1), ``distance`` (px), ``S_corr`` (the candidate's
        ``score``), ``flux_measured``,
        ``flux_err`` and ``pull`` ((measured − injected) / error).
    """
    if radius is None:
        radius = float(truth.meta.get("psf_fwhm", 2.0))
    if wcs is None and result is not None:
        wcs = getattr(result, "wcs", None)
    if wcs is not None and "ra" in truth.colnames:
        tx, ty = wcs.celestial.world_to_pixel_values(
            np.asarray(truth["ra"]), np.asarray(truth["dec"])
        )
    else:
        tx, ty = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    out = truth.copy()
    m = len(truth)
    index, distance = np.full(m, -1), np.full(m, np.nan)
    s_corr, measured, error = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
    if len(candidates):
        cx, cy = np.asarray(candidates["x"], float), np.asarray(candidates["y"], float)
        for k in range(m):
            d = np.hypot(cx - tx[k], cy - ty[k])
            j = int(np.argmin(d))
            if d[j] <= radius:
                index[k], distance[k] = j, d[j]
                row = candidates[j]
                s_corr[k] = row["score"] if "score" in candidates.colnames else np.nan
                measured[k] = row["flux"] if "flux" in candidates.colnames else np.nan
                error[k] = row["flux_err"] if "flux_err" in candidates.colnames else np.nan
                if result is not None and getattr(result, "S", None) is not None:
                    from .diffim.zogy import flux_at

                    at = flux_at(result, float(tx[k]), float(ty[k]))
                    if not at["masked"]:
                        measured[k], error[k] = at["flux"], at["flux_err"]
    out["recovered"] = index >= 0
    out["candidate"] = index
    out["distance"] = distance
    out["S_corr"] = s_corr
    out["flux_measured"] = measured
    out["flux_err"] = error
    with np.errstate(invalid="ignore", divide="ignore"):
        out["pull"] = (measured - np.asarray(truth["flux"], float)) / error
    return out


def inject_into_stamps(
    triplets,
    *,
    snr=(5.0, 50.0),
    fwhm: float | None = None,
    max_offset: float = 0.0,
    gain: float | None = None,
    seed: int = 0,
):
    """Add a point source to the science and difference stamps of triplets.

    The source is a circular Gaussian of the stamp's FWHM (the dataset's
    ``fwhm`` coordinate, e.g. ZTF's ``candidate.fwhm``, else ``fwhm``), its
    flux set for an optimal S/N against the difference stamp's robust noise,
    placed at the stamp centre plus a uniform offset up to ``max_offset``
    pixels; with ``gain`` the added flux carries Poisson noise, else Gaussian
    noise of the same variance is not added (and a warning says so). NaN
    pixels (CCD edges, masks) stay NaN.

    Parameters
    ----------
    triplets : xarray.Dataset
        Triplets (:mod:`astrid.schema`): ``triplets`` (candidate, y, x,
        channel) with channels science, reference, difference.
    snr : float or (float, float), optional
        Optimal S/N of the injected source on the difference stamp (default
        5–50, log-uniform).
    fwhm : float, optional
        PSF FWHM in pixels where the dataset has no ``fwhm`` coordinate.
    max_offset : float, optional
        Largest offset from the stamp centre, pixels (default 0: centred,
        where a detection would put it).
    gain : float, optional
        Electrons per data unit of the stamps.
    seed : int, optional
        Seeds the S/N, offsets and noise.

    Returns
    -------
    xarray.Dataset
        A copy with the sources added, ``kind = "injected"``, ``label = 1``,
        and coordinates ``injected_flux``, ``injected_snr``, ``injected_x``,
        ``injected_y`` (stamp pixels) per candidate.

    Raises
    ------
    AstridInputError
        Not a triplet dataset, no FWHM, a bad ``snr``.
    """
    from .schema import validate_triplets

    validate_triplets(triplets, "triplets")
    low, high = _snr_range(snr)
    n = int(triplets.sizes["candidate"])
    if "fwhm" in triplets.coords:
        widths = np.asarray(triplets["fwhm"].values, dtype=float)
        if fwhm is not None:
            widths = np.where(np.isfinite(widths) & (widths > 0), widths, fwhm)
    elif fwhm is not None:
        widths = np.full(n, float(fwhm))
    else:
        raise AstridInputError("triplets have no 'fwhm' coordinate: pass fwhm= (pixels)")
    if not np.all(np.isfinite(widths) & (widths > 0)):
        raise AstridInputError(
            "triplets: some 'fwhm' values are missing or not positive; pass fwhm= for them"
        )
    if gain is None:
        warnings.warn(
            "inject_into_stamps: no gain: the injected sources carry no Poisson noise of their own",
            AstridWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    stamps = np.array(triplets["triplets"].values, dtype=np.float64, copy=True)
    channels = [str(c) for c in triplets["channel"].values]
    science, difference = channels.index("science"), channels.index("difference")
    size_y, size_x = stamps.shape[1:3]
    target = (
        np.exp(rng.uniform(math.log(low), math.log(high), n)) if high > low else np.full(n, low)
    )
    radius = rng.uniform(0.0, max_offset, n) if max_offset > 0 else np.zeros(n)
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    cx = (size_x - 1) / 2 + radius * np.cos(angle)
    cy = (size_y - 1) / 2 + radius * np.sin(angle)
    flux = np.empty(n)
    for k in range(n):
        profile = _gaussian((size_y, size_x), cx[k], cy[k], widths[k])
        diff = stamps[k, :, :, difference]
        finite = np.isfinite(diff)
        noise = robust_std(diff[finite]) if finite.sum() > 10 else np.nan
        if not (np.isfinite(noise) and noise > 0):
            noise = 1.0
        variance = np.where(finite, noise**2, np.inf)
        flux[k] = _flux_for_snr(profile, variance, target[k], gain)
        model = flux[k] * profile
        if gain:
            model = rng.poisson(model * gain) / gain
        for channel in (science, difference):
            stamps[k, :, :, channel] += model  # NaN stays NaN
    out = triplets.copy()
    out["triplets"] = (
        triplets["triplets"].dims,
        stamps.astype(triplets["triplets"].dtype, copy=False),
    )
    out = out.assign_coords(
        label=(
            "candidate",
            np.ones(n, dtype=triplets["label"].dtype if "label" in triplets.coords else np.int8),
        ),
        kind=("candidate", np.full(n, "injected")),
        injected_flux=("candidate", flux),
        injected_snr=("candidate", target),
        injected_x=("candidate", cx),
        injected_y=("candidate", cy),
    )
    out.attrs = dict(triplets.attrs)
    out.attrs["injection"] = (
        f"inject_into_stamps: S/N {low:g}-{high:g}, max offset {max_offset:g} px, seed {seed}"
    )
    return out


# --------------------------------------------------------------------------- #
# synthetic triplets on real backgrounds
# --------------------------------------------------------------------------- #

#: Kinds made by :func:`triplets_on_real_backgrounds`: the first two are real, the rest bogus.
BACKGROUND_KINDS = (
    "brightening",
    "fading",
    "dipole",
    "psf_mismatch",
    "cosmic_ray",
    "hot_pixel",
    "bad_column",
    "nothing",
)


_PROFILES = ("gaussian", "moffat")
_STAMP = 63  # braai's stamp side
_ZTF_RADIATION_HIT = 1 << 7  # bit 7 of a ZTF science image's mask
_CUTOUT_EDGE = 40  # cutout centres stay this far from the image's edge
_DETECTION_TRIES = 20  # draws per triplet before keeping one below ``min_significance``


def _gaussian(shape, x0: float, y0: float, fwhm: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    g = np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / sigma**2)
    return g / g.sum()


def _shift(stamp: np.ndarray, dx: float, dy: float) -> np.ndarray:
    from scipy.ndimage import shift

    return shift(np.nan_to_num(stamp, nan=0.0), (dy, dx), order=3, mode="nearest")


def _blur(stamp: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.nan_to_num(stamp, nan=0.0), sigma, mode="nearest")


def triplets_on_real_backgrounds(
    backgrounds,
    n: int,
    *,
    real_fraction: float = 0.5,
    snr=(5.0, 100.0),
    noise_ratio=(0.12, 0.3),
    seeing_ratio=(1.0, 1.8),
    profile: str = "moffat",
    min_significance: float | None = None,
    seed: int = 0,
):
    """Labelled triplets built on real reference stamps: injected transients and synthetic artefacts.

    Each triplet takes the reference stamp of a random background (turned by
    a random one of the square's eight symmetries), makes a science stamp
    from it with the noise of a single epoch (``noise_ratio``: the reference's
    noise over the science's, as in ZTF's deep co-added references) and a
    seeing ``seeing_ratio`` times the reference's (a Gaussian blur), and a
    difference stamp that subtracts the reference blurred the same way (a
    perfect PSF match). Real kinds: ``brightening`` (a point source of the
    science's FWHM added to the science and difference) and ``fading``
    (the source in the reference only, the difference stored as reference −
    science, ZTF's convention for ``isdiffpos = 'f'``). Bogus kinds, the
    residuals real alert streams are full of: ``dipole`` (the science shifted
    by 0.2–1 px: a registration error), ``psf_mismatch`` (the science blurred
    or sharpened against the matched reference: rings at every source), ``cosmic_ray``
    (a sharp track or hit), ``hot_pixel``, ``bad_column`` and ``nothing``
    (noise only). NaN pixels of the background stay NaN in every channel. No
    label of the backgrounds is read.

    Parameters
    ----------
    backgrounds : xarray.Dataset
        Real triplets (e.g. :func:`astrid.read_ztf`): their ``reference``
        channel and, when present, their ``fwhm`` coordinate (pixels; else
        1.7–3.0 px at random).
    n : int
        Number of triplets to make.
    real_fraction : float, optional
        Fraction of real kinds (default 0.5; of them 70 % brightening).
    snr : (float, float), optional
        Optimal S/N range of the injected sources on the difference
        (log-uniform).
    noise_ratio : (float, float), optional
        Range of reference noise / science noise.
    seeing_ratio : (float, float), optional
        Range of the science's FWHM over the reference's (default 1–1.8;
        (1, 1): the science as sharp as the reference).
    profile : {"moffat", "gaussian"}, optional
        Shape of the injected sources: a Moffat profile with an index drawn
        in 2–5 (power-law wings, as real PSFs have; default) or a Gaussian.
    min_significance : float, optional
        Draw each triplet again (up to 20 times) until its difference has a
        peak of this many σ within 2 px of the centre, as a detection would,
        and leave out the noise-only kind. Default None: every draw is kept.
        It makes the classifier transfer worse (``docs/sim_to_real.md``).
    seed : int, optional
        Seeds every draw.

    Returns
    -------
    xarray.Dataset
        Triplets in the AstrID schema with ``label`` (1 real, 0 bogus),
        ``kind``, ``background`` (index of the background used) and, where the
        backgrounds have one, ``field`` (their ``objectId``, for grouped splits).
    """
    from .schema import new_triplet_dataset, validate_triplets

    validate_triplets(backgrounds, "backgrounds")
    _check_background_options(n, real_fraction, seeing_ratio, profile)
    low, high = _snr_range(snr)
    # Noise alone never makes a detection: with a detection threshold there is no "nothing".
    bogus_kinds = BACKGROUND_KINDS[2:] if min_significance is None else BACKGROUND_KINDS[2:-1]
    rng = np.random.default_rng(seed)
    refs, noise, widths, usable = _reference_stamps(backgrounds)
    size = refs.shape[1]
    stamps = np.empty((n, size, size, 3), np.float32)
    kinds, chosen = [], np.empty(n, dtype=int)
    for k in range(n):
        b = int(rng.choice(usable))
        chosen[k] = b
        ref = np.rot90(refs[b], int(rng.integers(4)))
        ref = ref[:, ::-1] if rng.uniform() < 0.5 else ref
        # NaN, and the float32-maximum fill some ZTF cutouts carry where there is no data.
        holes = ~np.isfinite(ref) | (np.abs(ref) > 1e30)
        clean = np.where(holes, np.median(ref[~holes]), ref)
        fwhm = (
            widths[b] if np.isfinite(widths[b]) and 1.0 < widths[b] < 8.0 else rng.uniform(1.7, 3.0)
        )
        for _ in range(_DETECTION_TRIES):
            kind, planes = _background_triplet(
                rng,
                clean,
                noise[b] / rng.uniform(*noise_ratio),
                fwhm,
                (low, high),
                real_fraction,
                seeing=rng.uniform(*seeing_ratio)
                if seeing_ratio[1] > seeing_ratio[0]
                else seeing_ratio[0],
                profile=profile,
                bogus=bogus_kinds,
            )
            if min_significance is None or _centre_significance(planes[2]) >= min_significance:
                break
        for i, plane in enumerate(planes):
            stamps[k, :, :, i] = np.where(holes, np.nan, plane)
        kinds.append(kind)
    coords = {
        "candidate_id": [f"bg{seed}-{k}" for k in range(n)],
        "label": np.array([kind in ("brightening", "fading") for kind in kinds], dtype=np.int8),
        "kind": np.array(kinds),
        "background": chosen,
    }
    if "objectId" in backgrounds.coords:
        coords["field"] = np.asarray(backgrounds["objectId"].values)[chosen].astype(str)
    return new_triplet_dataset(
        stamps, coords=coords, attrs={"source": "astrid.inject.triplets_on_real_backgrounds"}
    )


def reference_cutouts(
    image,
    n: int,
    *,
    fill=None,
    use_mask: bool = True,
    source_fraction: float = 2.0 / 3.0,
    min_sigma: float = 10.0,
    fwhm: float | None = None,
    seed: int = 0,
):
    """Cutouts of a real image to build triplets on: its sources and its sky, as reference stamps.

    The backgrounds for :func:`triplets_on_real_backgrounds` from a whole real
    image (e.g. the shared ZTF quadrant) rather than from alert stamps: 63×63
    cutouts centred on the image's sources (local maxima of the lightly
    smoothed image above ``min_sigma`` times its noise, so variable stars,
    nuclei and saturated stars are among them, as under real alerts) for
    ``source_fraction`` of them, at random positions for the rest.

    Parameters
    ----------
    image : Image or path-like
        The real image (one epoch). Its NaN pixels, and with ``use_mask``
        its masked ones (``Image.mask``: flagged, saturated), are NaN in the
        stamps.
    n : int
        Number of cutouts.
    fill : numpy.ndarray of bool, optional
        Pixels to fill from their unflagged neighbours instead, e.g. the
        radiation hits of a single epoch that stands in for a co-added
        reference, which would have rejected them.
    use_mask : bool, optional
        NaN where the image is masked (default). False keeps those pixels'
        values, e.g. saturated stars, which a co-added reference shows too.
    source_fraction : float, optional
        Share of cutouts centred on sources (default 2/3).
    min_sigma : float, optional
        Peak height, in the image's pixel noise above its median, that makes a
        source (default 10).
    fwhm : float, optional
        PSF FWHM of the image in pixels, recorded as each cutout's ``fwhm``
        (the width :func:`triplets_on_real_backgrounds` gives its sources);
        default: estimated from the image's stars (:func:`astrid.estimate_psf`).
    seed : int, optional
        Seeds the choice of positions.

    Returns
    -------
    xarray.Dataset
        Triplets in the AstrID schema holding the cutout in all three
        channels, with ``xpos``, ``ypos`` (the centre, 0-based pixels of ``image``),
        ``fwhm`` and ``objectId`` (``"<file stem>-<k // 50>"``: neighbouring
        draws grouped, for grouped validation splits).

    Raises
    ------
    AstridInputError
        An image smaller than 143 pixels on a side, ``fill`` of another
        shape, a bad ``n`` or ``source_fraction``, or no source above
        ``min_sigma`` when sources are asked for.
    """
    from scipy import ndimage

    from .diffim import estimate_psf
    from .realism import stamp_noise
    from .schema import new_triplet_dataset

    img = _as_image(image, "image")
    name = f"image{_named(img)}"
    label = Path(img.meta.path).stem if img.meta.path else "image"
    _check_count(n)
    if not 0.0 <= source_fraction <= 1.0:
        raise AstridInputError(f"source_fraction={source_fraction!r} must be within [0, 1]")
    data = np.array(img.data, dtype=np.float64)
    if min(data.shape) < 2 * _CUTOUT_EDGE + _STAMP:
        raise AstridInputError(
            f"{name}: {data.shape[1]}x{data.shape[0]} pixels, too small for cutouts "
            f"(at least {2 * _CUTOUT_EDGE + _STAMP} on a side)"
        )
    if fill is not None:
        fill = np.asarray(fill, dtype=bool)
        if fill.shape != data.shape:
            raise AstridInputError(f"fill: shape {fill.shape} is not the image's {data.shape}")
        usable = (~fill & np.isfinite(data)).astype(float)
        local = ndimage.gaussian_filter(np.where(usable > 0, data, 0.0), 1.5)
        weight = ndimage.gaussian_filter(usable, 1.5)
        data[fill] = (local / np.maximum(weight, 1e-6))[fill]
    if use_mask and img.mask is not None:
        data[np.asarray(img.mask, dtype=bool)] = np.nan
    if fwhm is None:
        fwhm = float(estimate_psf(img).fwhm)
    rng = np.random.default_rng(seed)
    sky = float(np.nanmedian(data))
    sigma = stamp_noise(data[:: max(1, data.shape[0] // 512)])
    smooth = ndimage.gaussian_filter(np.where(np.isfinite(data), data, sky), 1.0)
    peaks = (smooth == ndimage.maximum_filter(smooth, 9)) & (smooth > sky + min_sigma * sigma)
    e = _CUTOUT_EDGE
    ys, xs = np.nonzero(peaks[e:-e, e:-e])
    n_sources = int(round(n * source_fraction))
    if n_sources and ys.size == 0:
        raise AstridInputError(f"{name}: no source {min_sigma:g} sigma above the sky to centre on")
    pick = rng.choice(ys.size, n_sources, replace=n_sources > ys.size) if n_sources else []
    ys = np.concatenate([ys[pick] + e, rng.integers(e, data.shape[0] - e, n - n_sources)])
    xs = np.concatenate([xs[pick] + e, rng.integers(e, data.shape[1] - e, n - n_sources)])
    h = _STAMP // 2
    stamps = np.stack([data[y - h : y + h + 1, x - h : x + h + 1] for y, x in zip(ys, xs)])
    return new_triplet_dataset(
        np.repeat(stamps[..., None], 3, axis=-1).astype(np.float32),
        coords={
            "candidate_id": [f"{label}-cutout-{k}" for k in range(n)],
            "objectId": [f"{label}-{k // 50}" for k in range(n)],
            "xpos": xs.astype(float),
            "ypos": ys.astype(float),
            "fwhm": np.full(n, float(fwhm)),
        },
        attrs={"source": "astrid.inject.reference_cutouts"},
    )


def shared_ztf_backgrounds(n_cutouts: int = 3000, *, seed: int = 0):
    """Real ZTF reference stamps from the shared data, to build triplets on.

    The backgrounds of the sim-to-real recipe (``docs/sim_to_real.md``): the
    reference stamps of the shared ZTF alerts that carry no ``drb`` (so none
    of the alerts that models are scored against) and ``n_cutouts`` cutouts
    of the shared ZTF quadrant (:func:`reference_cutouts`). The quadrant, one
    30 s epoch, stands in for a co-added reference as ZTF's are: its radiation
    hits (mask bit 7) are filled from their neighbours and every other pixel
    is kept, saturated stars included, so no stamp has a hole.

    Parameters
    ----------
    n_cutouts : int, optional
        Cutouts of the quadrant (default 3000).
    seed : int, optional
        Seeds the cutouts' positions.

    Returns
    -------
    xarray.Dataset
        Triplets (the reference stamp in every channel) with ``candidate_id``,
        ``objectId`` and ``fwhm`` (pixels).

    Raises
    ------
    AstridFileError
        The shared alerts (``ztf_alerts``) or quadrant (``images/ztf_quadrant``)
        are not there (:func:`astrid.paths.shared_data`).
    """
    from astropy.io import fits

    from .alerts import read_ztf
    from .errors import AstridFileError
    from .paths import shared_data
    from .triplets import concat_triplets

    alerts_folder = shared_data("ztf_alerts")
    quadrant = shared_data("images", "ztf_quadrant")
    if alerts_folder is None or quadrant is None:
        raise AstridFileError(
            "shared ZTF alerts (ztf_alerts) and quadrant (images/ztf_quadrant) not found under "
            "the shared data folder ($ASTRID_SHARED_DATA or ../shared/data)"
        )
    alerts = read_ztf(alerts_folder)
    alerts = alerts.isel(candidate=np.flatnonzero(~np.isfinite(alerts["drb"].values.astype(float))))
    keep = ("candidate_id", "fwhm", "objectId", "channel")
    alerts = alerts.reset_coords([c for c in alerts.coords if c not in keep], drop=True)
    bits = fits.getdata(next(quadrant.glob("*_mskimg.fits"))).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstridWarning)
        cutouts = reference_cutouts(
            next(quadrant.glob("*_sciimg.fits")),
            n_cutouts,
            fill=(bits & _ZTF_RADIATION_HIT) != 0,
            use_mask=False,
            seed=seed,
        )
    return concat_triplets([alerts, cutouts])


def _check_count(n) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise AstridInputError(f"n={n!r} must be a positive integer")


def _check_background_options(n, real_fraction, seeing_ratio, profile) -> None:
    _check_count(n)
    if not 0.0 <= real_fraction <= 1.0:
        raise AstridInputError(f"real_fraction={real_fraction!r} must be within [0, 1]")
    if profile not in _PROFILES:
        raise AstridInputError(f"profile={profile!r} must be one of {_PROFILES}")
    if not (len(seeing_ratio) == 2 and 1.0 <= seeing_ratio[0] <= seeing_ratio[1]):
        raise AstridInputError(
            f"seeing_ratio={seeing_ratio!r} must be (low, high) with 1 <= low <= high"
        )


def _reference_stamps(backgrounds):
    """Reference stamps (float64, fill values as NaN), their noise, FWHMs and usable indices."""
    from .realism import stamp_noise

    channels = [str(c) for c in backgrounds["channel"].values]
    refs = np.asarray(
        backgrounds["triplets"].values[..., channels.index("reference")], dtype=np.float64
    )
    refs = np.where(np.abs(refs) > 1e30, np.nan, refs)
    noise = np.array([stamp_noise(r) for r in refs])
    usable = np.flatnonzero(np.isfinite(noise) & (noise > 0))
    if usable.size == 0:
        raise AstridInputError("backgrounds: no reference stamp with a measurable noise")
    widths = (
        np.asarray(backgrounds["fwhm"].values, dtype=float)
        if "fwhm" in backgrounds.coords
        else np.full(refs.shape[0], np.nan)
    )
    return refs, noise, widths, usable


def _background_triplet(
    rng, clean, sigma_sci, fwhm, snr_range, real_fraction, seeing, profile, bogus
):
    """One triplet's kind and its (science, reference, difference) planes on a clean reference.

    The science epoch sees the sky ``seeing`` times broader than the reference
    (a Gaussian blur of the reference), and the difference subtracts the
    reference blurred the same way: a perfect PSF match, unless the kind is a
    mismatch.
    """
    size = clean.shape[0]
    c = (size - 1) / 2.0
    low, high = snr_range
    noise_sci = rng.normal(0.0, sigma_sci, clean.shape)
    x0, y0 = c + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5)
    match = fwhm * math.sqrt(max(seeing**2 - 1.0, 0.0)) / GAUSSIAN_SIGMA_TO_FWHM
    matched = _blur(clean, match) if match > 0 else clean
    shape_draw = rng.uniform(2.0, 5.0) if profile == "moffat" else None
    source = _profile(clean.shape, x0, y0, fwhm * seeing, shape_draw)
    amplitude = (
        math.exp(rng.uniform(math.log(low), math.log(high)))
        * sigma_sci
        / math.sqrt(float(np.sum(source**2)))
    )
    if rng.uniform() < real_fraction:
        kind = "brightening" if rng.uniform() < 0.7 else "fading"
    else:
        kind = str(rng.choice(bogus))
    science, reference, subtracted = matched + noise_sci, clean, matched
    if kind == "brightening":
        science = science + amplitude * source
    elif kind == "fading":
        reference = clean + amplitude * _profile(clean.shape, x0, y0, fwhm, shape_draw)
        subtracted = matched + amplitude * source
    elif kind == "dipole":
        step = rng.uniform(0.2, 1.0)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        science = _shift(matched, step * math.cos(angle), step * math.sin(angle)) + noise_sci
    elif kind == "psf_mismatch":
        blurred = _blur(matched, rng.uniform(0.5, 1.5))
        science = (
            (blurred + noise_sci) if rng.uniform() < 0.5 else (2.0 * matched - blurred + noise_sci)
        )
    elif kind != "nothing":
        science = science + _artefact(rng, kind, clean.shape, (x0, y0), amplitude, sigma_sci)
    difference = science - subtracted
    if kind == "fading":
        difference = -difference  # ZTF stores reference - science for fading candidates
    return kind, (science, reference, difference)


def _profile(shape, x0: float, y0: float, fwhm: float, beta: float | None) -> np.ndarray:
    """A unit-sum point source: Gaussian (``beta`` None) or Moffat of index ``beta``."""
    if beta is None:
        return _gaussian(shape, x0, y0, fwhm)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    m = (1.0 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** (-beta)
    return m / m.sum()


def _centre_significance(difference: np.ndarray) -> float:
    """The difference's central 5x5 maximum above its median, in its pixel noise (as a detection)."""
    from .realism import stamp_noise

    c = difference.shape[0] // 2
    noise = stamp_noise(difference)
    core = difference[c - 2 : c + 3, c - 2 : c + 3]
    return float((np.max(core) - np.median(difference)) / noise) if noise > 0 else 0.0


def _artefact(rng, kind, shape, centre, amplitude, sigma_sci):
    """A cosmic ray, hot pixel or bad column to add to a science stamp."""
    size = shape[0]
    x0, y0 = centre
    hit = np.zeros(shape)
    if kind == "cosmic_ray":
        length = rng.uniform(0.0, 8.0)
        angle = rng.uniform(0.0, np.pi)
        for t in np.linspace(-length / 2, length / 2, max(2, int(length * 3))):
            ix, iy = int(round(x0 + t * math.cos(angle))), int(round(y0 + t * math.sin(angle)))
            if 0 <= ix < size and 0 <= iy < size:
                hit[iy, ix] = 1.0
        return hit / hit.sum() * amplitude * rng.uniform(0.5, 3.0)
    if kind == "hot_pixel":
        hit[int(round(y0)), int(round(x0))] = amplitude * rng.uniform(0.2, 1.0)
        return hit
    top = int(rng.integers(0, size // 2))  # bad_column
    hit[top:, int(round(x0))] = rng.uniform(3.0, 30.0) * sigma_sci
    return hit
