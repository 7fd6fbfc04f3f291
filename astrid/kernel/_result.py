"""Result dataclasses of the fitted-kernel subtraction: the kernel model and the fit's diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from ._basis import Basis, spatial_terms

__all__ = ["KernelModel", "KernelResult"]


@dataclass
class KernelModel:
    """A spatially varying PSF-matching kernel and differential background.

    ``K(x, y) = Σ_k a_k(x, y) B_k`` with ``a_k`` a polynomial over the field
    (coordinates scaled to [−1, 1]); ``B_0`` sums to 1 and the others to 0,
    so the kernel's sum (the photometric scale) is ``a_0(x, y)``.

    Attributes
    ----------
    basis : Basis
        The kernel basis.
    coefficients : numpy.ndarray, shape (n_basis, n_spatial)
        Polynomial coefficients of each basis function (terms 1, x, y, x²,
        xy, y², ...); the scale's terms beyond ``scale_degree`` are 0.
    degree : int
        Spatial degree of the kernel shape.
    scale_degree : int
        Spatial degree of the kernel's sum (the photometric scale).
    background_degree : int
        Spatial degree of the differential background.
    background : numpy.ndarray, shape (n_background_terms,)
        Coefficients of the differential background.
    shape : tuple of int
        (ny, nx) of the image the positions refer to.
    convolved : str
        ``"reference"`` (the model is ``science ≈ reference ⊗ K + background``)
        or ``"science"`` (``reference ≈ science ⊗ K + background``).
    """

    basis: Basis
    coefficients: np.ndarray
    degree: int
    scale_degree: int
    background_degree: int
    background: np.ndarray
    shape: tuple
    convolved: str

    @property
    def half_width(self) -> int:
        return self.basis.half_width

    def _local(self, x, y) -> np.ndarray:
        """Basis coefficients at (x, y): shape (n_basis,) or (n_basis, *x.shape)."""
        terms = spatial_terms(x, y, self.degree, self.shape)
        return np.tensordot(self.coefficients, terms, axes=1)

    def at(self, x: float, y: float) -> np.ndarray:
        """The kernel at pixel (x, y), shape (2r + 1, 2r + 1), centre at ``[r, r]``."""
        return np.tensordot(self._local(float(x), float(y)), self.basis.images, axes=1)

    def kernel_sum(self, x, y) -> np.ndarray:
        """The kernel's sum (photometric scale of the convolved image) at pixel positions."""
        return self._local(x, y)[0]

    def flux_ratio(self, x, y) -> np.ndarray:
        """Science flux of a source over its reference flux at pixel positions."""
        scale = self.kernel_sum(x, y)
        return scale if self.convolved == "reference" else 1.0 / scale

    def background_at(self, x, y) -> np.ndarray:
        """Differential background (in the target image's units) at pixel positions."""
        return np.tensordot(
            self.background, spatial_terms(x, y, self.background_degree, self.shape), axes=1
        )

    def grid(self, n: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kernels on an ``n`` × ``n`` grid over the field: (xs, ys, kernels (n, n, 2r + 1, 2r + 1))."""
        ny, nx = self.shape
        xs = np.linspace(0, nx - 1, n)
        ys = np.linspace(0, ny - 1, n)
        kernels = np.array([[self.at(x, y) for x in xs] for y in ys])
        return xs, ys, kernels


@dataclass
class KernelResult:
    """Result of :func:`astrid.kernel.subtract`.

    Attributes
    ----------
    D : numpy.ndarray, shape (ny, nx)
        Difference image, science minus PSF-matched reference, in science
        data units (when the science image is convolved, the matched
        difference is divided by the kernel's sum).
    significance : numpy.ndarray, shape (ny, nx)
        ``D`` divided by its per-pixel noise after matching (the variances
        propagated through the kernel).
    detection : numpy.ndarray, shape (ny, nx)
        Significance of a point source centred on each pixel: ``D``
        filtered with the PSF of the image that was not convolved, divided
        by its propagated noise (the noise correlation of resampled images
        included). The statistic to threshold for detections, like ZOGY's
        ``S_corr``.
    mask : numpy.ndarray of bool
        True where the result must not be trusted: bad input pixels dilated
        by the kernel half-width, and an edge band that wide (``detection``
        treats those pixels as zeros without noise). ``D`` and
        ``significance`` hold ``fill_value`` there.
    model : KernelModel
        The fitted kernel, evaluable at any position.
    stamps : astropy.table.Table
        One row per stamp considered: ``x``, ``y``, ``chi2`` (weighted sum of
        squared residuals under the final model), ``npix``, ``chi2_per_pixel``,
        ``used`` (in the final fit) and ``rejected`` (why not: ``""``,
        ``"clipped"`` by the χ² clipping).
    convolved : str
        ``"reference"`` or ``"science"``.
    flux_ratio : float
        Science over reference flux at the image centre (from the kernel sum).
    kernel_sum : dict
        Kernel sum over the field: ``centre``, ``min``, ``max`` on a 9 × 9 grid.
    n_iterations : int
        Fits run by the stamp clipping.
    eiv_corrected : bool
        Whether the normal matrix was corrected for the noise of the convolved
        image (errors in variables).
    eiv_capped : int
        Directions of the normal matrix where noise dominated and the
        correction was capped.
    systematic : float
        The fractional model error ε whose square times the matched image
        squared was added to the variance.
    measured_systematic : float
        ε as measured on the stamps in use (what ``systematic="auto"`` uses).
    detection_systematic : float
        ε used for ``detection`` (measured on the filtered residuals at the
        stamps' bright stars with ``systematic="auto"``).
    mask_radius : int
        Dilation radius of the mask and width of the edge band (pixels).
    significance_std : float
        Robust standard deviation of ``significance`` over unmasked pixels.
    detection_std : float
        The same for ``detection``.
    n_stars_given : int
        Positions given (or found) before the stamp selection.
    skipped : dict
        Why the other positions gave no stamp, with counts: ``flagged``
        (saturated, masked, too sharp or too broad), ``faint`` (below
        ``min_snr``), ``non_finite``, ``edge``, ``bad_pixels`` (within the
        stamp and kernel), ``overlap`` (a brighter stamp nearby),
        ``beyond_max_stamps``.
    timings : dict
        Seconds spent in ``select`` (stamps), ``systems`` (their normal
        equations), ``solve`` (fits and clipping), ``convolve`` (the matched
        image, background and variance), ``detect`` (the filtered image) and
        ``total``.
    """

    D: np.ndarray
    significance: np.ndarray
    detection: np.ndarray
    mask: np.ndarray
    model: KernelModel
    stamps: Table
    convolved: str
    flux_ratio: float
    kernel_sum: dict
    n_iterations: int
    eiv_corrected: bool
    mask_radius: int
    significance_std: float
    detection_std: float
    eiv_capped: int = 0
    systematic: float = 0.0
    measured_systematic: float = 0.0
    detection_systematic: float = 0.0
    n_stars_given: int = 0
    skipped: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def n_stamps_used(self) -> int:
        return int(np.count_nonzero(self.stamps["used"]))

    @property
    def n_stamps_rejected(self) -> int:
        return int(np.count_nonzero(~np.asarray(self.stamps["used"])))
