"""Options of the fitted-kernel subtraction: how to fit (:class:`KernelOptions`) and what the caller
already knows about the pair (:class:`KernelInputs`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..diffim.zogy import check_dtype as _check_dtype
from ..diffim.zogy import check_positive as _check_positive
from ..errors import AstridInputError
from ._basis import HOTPANTS_DEGREES

__all__ = ["MIN_STAMPS", "KernelInputs", "KernelOptions"]

# Fewest stamps for a constant kernel; a degree-d spatial model needs this many per term.
MIN_STAMPS = 5


def _check_choice(name, value, choices):
    if value not in choices:
        raise AstridInputError(f"{name}: must be one of {choices}, got {value!r}")
    return value


def _check_degree(name, value, allow_auto=False):
    if allow_auto and value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 2:
        also = " or 'auto'" if allow_auto else ""
        raise AstridInputError(f"{name}: must be 0, 1 or 2{also}, got {value!r}")
    return int(value)


def check_int(name, value, minimum, allow_auto=False):
    """``value`` as an int >= ``minimum`` (or "auto" where allowed); else an error naming ``name``."""
    if allow_auto and value == "auto":
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or int(value) != value
        or value < minimum
    ):
        also = " or 'auto'" if allow_auto else ""
        raise AstridInputError(f"{name}: must be an integer >= {minimum}{also}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class KernelOptions:
    """How :func:`astrid.kernel.subtract` fits the kernel and writes its outputs.

    Every field is checked when the options are made (an
    :class:`~astrid.errors.AstridInputError` names the field), so a typo
    costs no fit.

    Attributes
    ----------
    basis : {"alard-lupton", "delta"}
        Gaussians times polynomials (HOTPANTS) or one delta function per
        kernel pixel (Bramich).
    half_width : int or "auto"
        Kernel half-width r (the kernel is 2r + 1 px square); "auto":
        3 FWHM of the broader image, within 4–15 px.
    sigmas : sequence of float or "auto"
        Widths of the Alard–Lupton Gaussians (px); "auto": HOTPANTS's 0.7,
        1.5, 3.0 px, scaled up by σ_k / 1.5 when the matching kernel's width
        σ_k = √(σ_broad² − σ_sharp²) exceeds 1.5 px.
    degrees : sequence of int
        Polynomial degree under each Gaussian (HOTPANTS: 6, 4, 2).
    degree : {0, 1, 2, "auto"}
        Spatial degree of the kernel's shape over the field; "auto": 2 with
        150 usable stamps or more, 1 with 60, else 0 (stepping down when the
        clipping leaves fewer).
    scale_degree : {0, 1, 2}
        Spatial degree of the kernel's sum (photometric scale); at most
        ``degree``.
    background_degree : {0, 1, 2}
        Spatial degree of the differential background.
    local_background : bool
        Fit a constant background under each stamp (eliminated from the
        kernel fit; the field's background polynomial is then fitted to the
        constants), so residual sky under a star (background maps pulled by
        the stars' wings) does not enter the kernel. Without it the
        polynomial is fitted together with the kernel.
    background_box : int or None
        The differential background left after the stamps' polynomial is
        measured on the difference image in boxes of this many pixels
        (sigma-clipped, away from sources) and subtracted; None: the
        polynomial only. On a simulated pair the polynomial alone left
        offsets between parts of the field that gave the matched-filter
        image a robust std of 1.39 (1.03–1.07 within each 256² block).
    convolve : {"auto", "reference", "science"}
        The image convolved with the kernel; "auto": the sharper one.
    stamp_half_width : int or "auto"
        Half-width of the fitting stamps (px); "auto": r + 1 FWHM of the
        broader image.
    max_stamps : int
        Most stamps, spread round-robin over the field (at least 5).
    min_snr : float
        Stars fainter than this S/N (the table's ``snr``; for positions
        given as an array, 5 × 5 px sums of both images over their sky noise)
        give no stamp. Faint stars add little but bias: found on one image,
        they are the ones its noise pushed up, and the scale comes out low
        (5 % on a simulated pair with every detection used). With
        ``fit_region="image"`` it applies to a stamp's light,
        ``√(Σ (T/σ)² − n)``.
    clip_sigma : float
        A stamp whose χ² per pixel exceeds the median by this many robust
        standard deviations is rejected and the kernel refitted.
    max_iterations : int
        Most fits of the clipping loop.
    eiv_correction : bool
        Subtract from the normal matrix what the noise of the convolved image
        adds to it on average (errors in variables; otherwise the fitted
        scale is biased low by that noise).
    fit_region : {"stars", "image"}
        Where the kernel is fitted: stamps around isolated, unsaturated stars
        (HOTPANTS), or stamps tiling the whole image wherever it holds
        significant light (stars and galaxies alike, as sfft fits the whole
        image), for fields with too few clean stars (small cutouts, cluster
        fields). With ``"image"`` the stars only size the kernel (none are
        needed when both FWHMs are given) and measure the systematic term.
    fit_weights : {"sky", "full"}
        Weights of the stamp pixels in the fit: the inverse sky variance
        (default), or the inverse full variance (with the stars' own noise).
        Full weights leave the cores of bright stars little say, and a kernel
        that cannot quite match the wings then biases the photometric scale
        (by 20 % on a simulated pair where sky weights give 0.2 %).
    noise_correlation : {"auto", True, False}
        Take the pixel-to-pixel correlation of the convolved image's noise
        (resampling) into the propagated variance; "auto": when a lag within
        ±2 px exceeds 0.05 (:func:`astrid.zogy.estimate_noise_acf`).
    systematic : "auto" or float
        Fractional error ε of the matched model: ``ε² (T ⊗ K)²`` is added to
        the variance of ``significance`` (and ``ε² ((T ⊗ K) ⋆ P)²`` to that
        of ``detection``), so bright static stars, whose residuals the kernel
        cannot bring below a percent or so, do not stand out. "auto":
        measured on the stamps' stars (per pixel: their χ² beyond the noise
        as a fraction of their signal; for ``detection``: the filtered
        residual at stars of 20σ or more, as ZOGY does); 0 leaves the term
        out.
    tile : int
        The noise terms (and the ``"direct"`` convolution) use the kernel
        at the centre of each ``tile`` × ``tile`` block (px).
    convolution : {"fft", "direct"}
        ``"fft"``: the image convolved with the kernel of each spatial term
        by FFT and the results combined with the polynomial terms (exact);
        ``"direct"``: a numba loop with the kernel of each tile. At 4096²
        with a 17 px kernel the direct loop took 3.8 s per image on 2
        cores, an FFT 0.05 s.
    mask_radius : int, optional
        Dilation of bad pixels in the output mask and width of the edge band
        (px); default the kernel half-width.
    fill_value : float
        Value of ``D``, ``significance`` and ``detection`` in masked pixels.
    dtype : {numpy.float64, numpy.float32}
        Precision of the convolution and the outputs.
    """

    basis: str = "alard-lupton"
    half_width: int | str = "auto"
    sigmas: tuple | str = "auto"
    degrees: tuple = HOTPANTS_DEGREES
    degree: int | str = "auto"
    scale_degree: int = 0
    background_degree: int = 1
    local_background: bool = True
    background_box: int | None = 64
    convolve: str = "auto"
    stamp_half_width: int | str = "auto"
    max_stamps: int = 250
    min_snr: float = 50.0
    clip_sigma: float = 3.0
    max_iterations: int = 10
    eiv_correction: bool = True
    fit_region: str = "stars"
    fit_weights: str = "sky"
    noise_correlation: bool | str = "auto"
    systematic: float | str = "auto"
    tile: int = 32
    convolution: str = "fft"
    mask_radius: int | None = None
    fill_value: float = 0.0
    dtype: type = np.float64

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("dtype", _check_dtype(self.dtype))
        for name, choices in (
            ("basis", ("alard-lupton", "delta")),
            ("convolve", ("auto", "reference", "science")),
            ("fit_weights", ("sky", "full")),
            ("fit_region", ("stars", "image")),
            ("convolution", ("fft", "direct")),
        ):
            _check_choice(name, getattr(self, name), choices)
        put("degree", _check_degree("degree", self.degree, allow_auto=True))
        put("scale_degree", _check_degree("scale_degree", self.scale_degree))
        put("background_degree", _check_degree("background_degree", self.background_degree))
        put("half_width", check_int("half_width", self.half_width, 1, allow_auto=True))
        put(
            "stamp_half_width",
            check_int("stamp_half_width", self.stamp_half_width, 1, allow_auto=True),
        )
        put("max_stamps", check_int("max_stamps", self.max_stamps, MIN_STAMPS))
        put("max_iterations", check_int("max_iterations", self.max_iterations, 1))
        put("tile", check_int("tile", self.tile, 1))
        put("clip_sigma", _check_positive("clip_sigma", self.clip_sigma))
        if self.background_box is not None:
            put("background_box", check_int("background_box", self.background_box, 8))
        if self.mask_radius is not None:
            put("mask_radius", check_int("mask_radius", self.mask_radius, 0))
        min_snr = self.min_snr
        if (
            isinstance(min_snr, bool)
            or not isinstance(min_snr, (int, float, np.integer, np.floating))
            or not min_snr >= 0
        ):
            raise AstridInputError(f"min_snr: must be a number >= 0, got {min_snr!r}")
        systematic = self.systematic
        if systematic != "auto" and (
            isinstance(systematic, (bool, str))
            or not isinstance(systematic, (int, float, np.integer, np.floating))
            or not 0 <= systematic < 1
        ):
            raise AstridInputError(
                f"systematic: must be 'auto' or a fraction in [0, 1), got {systematic!r}"
            )
        if self.noise_correlation not in ("auto", True, False):
            raise AstridInputError(
                f"noise_correlation: must be 'auto', True or False, got {self.noise_correlation!r}"
            )
        if isinstance(self.sigmas, str) and self.sigmas != "auto":
            raise AstridInputError(
                f"sigmas: must be a sequence of widths or 'auto', got {self.sigmas!r}"
            )


@dataclass(frozen=True, eq=False)
class KernelInputs:
    """What the caller already knows about the pair, for :func:`astrid.kernel.subtract`.

    Every field is optional; what is not given is measured (noise levels,
    PSF widths) or left out (variance maps, registration error).

    Attributes
    ----------
    science_variance : array_like, shape (ny, nx), optional
        Per-pixel variance map of the science image (data units²); default
        the Image's, else the sigma squared.
    reference_variance : array_like, shape (ny, nx), optional
        The same for the reference image.
    science_sigma : float, optional
        Background noise per pixel of the science image (data units); default
        the robust standard deviation of the unmasked pixels.
    reference_sigma : float, optional
        The same for the reference image.
    science_fwhm : float, optional
        PSF FWHM of the science image (px); default measured on the stamps' stars.
    reference_fwhm : float, optional
        The same for the reference image.
    science_psf : array_like, optional
        PSF of the science image (odd-sized array, e.g. ``PSFModel.psf``);
        the PSF of the image that is not convolved filters ``detection``.
        Default a Gaussian of that image's measured width.
    reference_psf : array_like, optional
        The same for the reference image.
    astrometric_sigma : (float, float)
        Registration error (σx, σy) in pixels, e.g. from the alignment's
        matched stars: ``σx² (∂M/∂x)² + σy² (∂M/∂y)²`` of the matched model M
        is added to both variances (as in ZOGY), so misregistered bright
        stars do not stand out.
    filled : array_like of bool, shape (ny, nx), optional
        Pixels an earlier stage filled in (e.g. repaired cosmic rays): masked
        in the output.
    """

    science_variance: np.ndarray | None = None
    reference_variance: np.ndarray | None = None
    science_sigma: float | None = None
    reference_sigma: float | None = None
    science_fwhm: float | None = None
    reference_fwhm: float | None = None
    science_psf: np.ndarray | None = None
    reference_psf: np.ndarray | None = None
    astrometric_sigma: tuple = (0.0, 0.0)
    filled: np.ndarray | None = None
