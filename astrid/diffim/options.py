"""The options of :func:`astrid.difference`, one frozen dataclass per stage.

``DifferenceOptions.from_mapping`` reads the flat option names of
``difference(**options)``, configuration files and :func:`astrid.batch.process_pairs`
(``box_size=32``, ``psf_degree=0``, ...); :func:`dataclasses.asdict` of the result
describes a run completely.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..errors import AstridInputError

__all__ = [
    "AlignOptions",
    "BackgroundOptions",
    "DifferenceOptions",
    "FluxRatioOptions",
    "PSFOptions",
    "SubtractOptions",
]


@dataclass(frozen=True)
class AlignOptions:
    """Alignment: ``method`` ("interp", "adaptive" or "exact") and ``refine`` (see :func:`astrid.align`)."""

    method: str = "interp"
    refine: bool = True


@dataclass(frozen=True)
class BackgroundOptions:
    """Background meshes: ``box_size`` (px) and ``filter_size`` (meshes); see :func:`astrid.estimate_background`."""

    box_size: int = 64
    filter_size: int = 3


@dataclass(frozen=True)
class PSFOptions:
    """PSF estimation (see :func:`astrid.estimate_psf`).

    ``size`` (px, odd; None: from the FWHM), ``degree`` (0, 1, 2 or "auto"),
    ``regularise`` (suppress the pixel noise of empirical PSFs,
    :func:`astrid.diffim.psf.regularise_psf`), ``min_stars``, ``max_stars``,
    and ``stars``: known stars (a SkyCoord, or a Table with ``ra``/``dec`` in
    degrees or ``x``/``y`` in reference pixels) that alone may be PSF stars.
    """

    size: int | None = None
    degree: Any = "auto"
    regularise: bool = True
    min_stars: int = 10
    max_stars: int = 200
    stars: Any = None


@dataclass(frozen=True)
class FluxRatioOptions:
    """Zero points (magnitudes) for the flux ratio when too few stars are usable (see :func:`astrid.flux_ratio`)."""

    science_zp: float | None = None
    reference_zp: float | None = None


@dataclass(frozen=True)
class SubtractOptions:
    """The subtraction (see :func:`astrid.zogy.subtract`, :func:`astrid.classic_subtract`,
    :func:`astrid.kernel.subtract`).

    ``astrometric_sigma`` ((σx, σy) px; None: from the alignment), ``use_variance``,
    ``noise_correlation`` ("auto", True or False), ``systematic_fraction`` ("auto" or
    a number), ``mask_radius`` and ``fill_value`` (None: the method's default),
    ``workers``, ``tile_size`` ("auto" or px) and ``kernel`` (a dict of
    :class:`astrid.kernel.KernelOptions` fields for ``method="kernel"``).
    """

    astrometric_sigma: Any = None
    use_variance: bool = True
    noise_correlation: Any = "auto"
    systematic_fraction: Any = "auto"
    mask_radius: int | None = None
    fill_value: float | None = None
    workers: int | None = None
    tile_size: Any = "auto"
    kernel: dict | None = None


# The flat option names of difference(**options): name -> (stage, field).
FLAT_NAMES = {
    "align_method": ("align", "method"),
    "refine": ("align", "refine"),
    "box_size": ("background", "box_size"),
    "filter_size": ("background", "filter_size"),
    "psf_size": ("psf", "size"),
    "psf_degree": ("psf", "degree"),
    "regularise_psf": ("psf", "regularise"),
    "min_stars": ("psf", "min_stars"),
    "max_stars": ("psf", "max_stars"),
    "psf_stars": ("psf", "stars"),
    "science_zp": ("flux_ratio", "science_zp"),
    "reference_zp": ("flux_ratio", "reference_zp"),
    "astrometric_sigma": ("subtract", "astrometric_sigma"),
    "use_variance": ("subtract", "use_variance"),
    "noise_correlation": ("subtract", "noise_correlation"),
    "systematic_fraction": ("subtract", "systematic_fraction"),
    "mask_radius": ("subtract", "mask_radius"),
    "fill_value": ("subtract", "fill_value"),
    "workers": ("subtract", "workers"),
    "tile_size": ("subtract", "tile_size"),
    "kernel": ("subtract", "kernel"),
}

# Besides every astrid.kernel.KernelInputs field, the arguments and KernelOptions fields of
# astrid.kernel.subtract that difference(method="kernel") fills in from its stages and options.
_KERNEL_SET_BY_DIFFERENCE = frozenset({"stars", "mask", "dtype", "mask_radius", "fill_value"})


@dataclass(frozen=True)
class DifferenceOptions:
    """Every option of :func:`astrid.difference`, grouped by stage.

    Attributes
    ----------
    align : AlignOptions
    background : BackgroundOptions
    psf : PSFOptions
    flux_ratio : FluxRatioOptions
    subtract : SubtractOptions

    Notes
    -----
    The flat names (``difference(**options)``, :meth:`from_mapping`) and their defaults:
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

    Before any stage, :func:`astrid.difference` fills isolated NaN (or inf, or ``numpy.ma``-masked) pixels on smooth sky, with
    at most one bad neighbour and neighbours spanning less than 6 sigma, are
    filled with the median of their neighbours before anything else (see
    :func:`astrid.diffim.repair_isolated`): they are flagged in :attr:`DifferenceResult.mask`
    on their own footprint instead of a kernel radius around each. Finite
    pixels that a mask flags (saturated, hot, bad columns) are masked and
    dilated as before. ``metrics`` counts the filled pixels
    (``n_repaired_sci``, ``n_repaired_ref``).

    Examples
    --------
    >>> from astrid import DifferenceOptions
    >>> options = DifferenceOptions.from_mapping({"box_size": 32, "psf_degree": 0})
    >>> options.background.box_size
    32
    """

    align: AlignOptions = field(default_factory=AlignOptions)
    background: BackgroundOptions = field(default_factory=BackgroundOptions)
    psf: PSFOptions = field(default_factory=PSFOptions)
    flux_ratio: FluxRatioOptions = field(default_factory=FluxRatioOptions)
    subtract: SubtractOptions = field(default_factory=SubtractOptions)

    @classmethod
    def from_mapping(cls, options, *, caller: str = "difference") -> DifferenceOptions:
        """Options from the flat names of ``difference(**options)`` (configs, YAML, batch).

        Parameters
        ----------
        options : mapping of str to value
            Flat option names (``box_size``, ``psf_degree``, ``science_zp``, ...);
            names left out keep their defaults.
        caller : str, optional
            Named in error messages.

        Returns
        -------
        DifferenceOptions
            Validated (see :meth:`validate`).

        Raises
        ------
        AstridInputError
            An unknown name (the message suggests the closest valid one) or an invalid value.
        """
        unknown = sorted(set(options) - set(FLAT_NAMES))
        if unknown:
            hints = [
                f"{name!r}: did you mean {close[0]!r}?"
                for name in unknown
                if (close := difflib.get_close_matches(name, FLAT_NAMES, n=1))
            ]
            raise AstridInputError(
                f"{caller}: unknown option(s) {unknown}"
                + (f" ({'; '.join(hints)})" if hints else "")
                + f"; known options are {sorted(FLAT_NAMES)}"
            )
        stages: dict[str, dict] = {}
        for name, value in options.items():
            stage, attribute = FLAT_NAMES[name]
            stages.setdefault(stage, {})[attribute] = value
        default = cls()
        made = cls(
            **{
                stage: replace(getattr(default, stage), **values)
                for stage, values in stages.items()
            }
        )
        made.validate()
        return made

    def to_mapping(self) -> dict[str, Any]:
        """The options under their flat names (inverse of :meth:`from_mapping`)."""
        return {
            name: getattr(getattr(self, stage), attribute)
            for name, (stage, attribute) in FLAT_NAMES.items()
        }

    def validate(self) -> None:
        """Check every option's value; cheap, so run before any stage.

        Raises
        ------
        AstridInputError
            Names the flat option and the value refused.
        """
        from .zogy import check_astrometric

        flat = self.to_mapping()
        _check_kernel_options(flat["kernel"])
        correlation = flat["noise_correlation"]
        if isinstance(correlation, np.ndarray) or correlation not in ("auto", True, False):
            raise AstridInputError(
                f"noise_correlation: must be 'auto', True or False, got {correlation!r}"
            )
        if flat["astrometric_sigma"] is not None:
            check_astrometric(flat["astrometric_sigma"])
        for key, minimum in (
            ("box_size", 4),
            ("filter_size", 1),
            ("min_stars", 1),
            ("max_stars", 1),
            ("psf_size", 3),
            ("mask_radius", 0),
        ):
            _check_integer(key, flat[key], minimum)
        tile = flat["tile_size"]
        if tile != "auto" and (
            isinstance(tile, (bool, np.bool_))
            or not isinstance(tile, (int, np.integer))
            or tile < 64
        ):
            raise AstridInputError(
                f"tile_size: must be 'auto' or an integer >= 64 pixels, got {tile!r}"
            )
        degree = flat["psf_degree"]
        if degree not in (0, 1, 2, "auto") or isinstance(degree, (bool, np.bool_)):
            raise AstridInputError(f"psf_degree: must be 0, 1, 2 or 'auto', got {degree!r}")
        systematic = flat["systematic_fraction"]
        if systematic != "auto" and not _finite_number(systematic, minimum=0.0):
            raise AstridInputError(
                f"systematic_fraction: must be a number >= 0 or 'auto', got {systematic!r}"
            )
        if flat["align_method"] not in ("interp", "adaptive", "exact"):
            raise AstridInputError(
                f"align_method: must be 'interp', 'adaptive' or 'exact', got {flat['align_method']!r}"
            )
        for key in ("science_zp", "reference_zp"):
            if flat[key] is not None and not _finite_number(flat[key]):
                raise AstridInputError(
                    f"{key}: must be a finite zero point (magnitudes), got {flat[key]!r}"
                )


def _check_kernel_options(kernel_options) -> None:
    if kernel_options is None:
        return
    if not isinstance(kernel_options, dict):
        raise AstridInputError(
            f"kernel: must be a dict of astrid.kernel.subtract options, got {kernel_options!r}"
        )
    # difference() passes these itself, from its own stages and options.
    from ..kernel import KernelInputs, KernelOptions

    from_difference = {f.name for f in fields(KernelInputs)} | _KERNEL_SET_BY_DIFFERENCE
    taken = sorted(set(kernel_options) & from_difference)
    if taken:
        raise AstridInputError(
            f"kernel: {taken} are set by difference() itself (give mask_radius, fill_value, dtype or "
            "astrometric_sigma as difference() options, PSFs as science_psf=/reference_psf=)"
        )
    unknown = sorted(set(kernel_options) - {f.name for f in fields(KernelOptions)})
    if unknown:
        raise AstridInputError(f"kernel: {unknown} are not astrid.kernel.KernelOptions fields")
    KernelOptions(**kernel_options)  # each value checked


def _check_integer(key: str, value, minimum: int) -> None:
    if value is None:
        return
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer, float, np.floating))
        or not math.isfinite(value)
        or int(value) != value
        or value < minimum
    ):
        raise AstridInputError(f"{key}: must be an integer >= {minimum}, got {value!r}")


def _finite_number(value, minimum: float = -math.inf) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) >= minimum
    except (TypeError, ValueError):
        return False
