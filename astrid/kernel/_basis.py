"""Kernel bases (Alard–Lupton, delta-function) and polynomials over the field.

Every basis has the same layout: ``basis[0]`` sums to 1 and every other
function sums to 0, so the photometric scale (the kernel's sum) is the
coefficient of ``basis[0]`` alone and can have its own spatial degree
(Alard 2000, section 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import AstridInputError

__all__ = [
    "HOTPANTS_DEGREES",
    "HOTPANTS_SIGMAS",
    "Basis",
    "alard_lupton_basis",
    "delta_basis",
    "n_spatial",
    "spatial_terms",
]

# HOTPANTS's default Gaussians (``-ng 3 6 0.70 4 1.50 2 3.00``): widths in pixels and the
# degree of the polynomial in kernel coordinates that multiplies each.
HOTPANTS_SIGMAS = (0.7, 1.5, 3.0)
HOTPANTS_DEGREES = (6, 4, 2)


def n_spatial(degree: int) -> int:
    """Number of terms x^i y^j with i + j <= ``degree``."""
    return (degree + 1) * (degree + 2) // 2


def spatial_terms(x, y, degree: int, shape) -> np.ndarray:
    """Polynomial terms over the field at pixel positions, shape (n_terms, *x.shape).

    Coordinates are scaled to [-1, 1] over ``shape`` (ny, nx) so the terms
    stay of order 1; the order is 1, x, y, x², xy, y², ...
    """
    ny, nx = shape
    u = 2.0 * np.asarray(x, dtype=np.float64) / max(nx - 1, 1) - 1.0
    v = 2.0 * np.asarray(y, dtype=np.float64) / max(ny - 1, 1) - 1.0
    out = []
    for total in range(degree + 1):
        for j in range(total + 1):
            out.append(u ** (total - j) * v**j)
    return np.array(out)


def _normalised(raw: list[np.ndarray]) -> np.ndarray:
    """The transform M (n_basis, n_raw) with ``M @ raw``: first sums to 1, the rest sum to 0 and are orthonormal.

    The functions after the first are made to sum to 0 by subtracting the
    first in proportion, then orthonormalised (SVD). High polynomial degrees
    under a narrow Gaussian are linearly dependent on a pixel grid (a
    Gaussian of 0.7 px covers few pixels): directions whose singular value is
    below 1e-6 of the largest are dropped, so the normal matrix stays well
    conditioned.
    """
    raw = np.asarray(raw)
    n = len(raw)
    flat = raw.reshape(n, -1)
    sums = flat.sum(axis=1)
    first = np.zeros(n)
    first[0] = 1.0 / sums[0]
    if n == 1:
        return first[None, :]
    rows = np.eye(n)[1:] - sums[1:, None] * first[None, :]
    u, sv, _ = np.linalg.svd(rows @ flat, full_matrices=False)
    keep = sv > 1e-6 * sv[0]
    rows = (u[:, keep] / sv[keep]).T @ rows
    return np.vstack([first, rows])


@dataclass(frozen=True)
class Basis:
    """A kernel basis, as images and as separable factors for fast convolution.

    Attributes
    ----------
    kind : str
        ``"alard-lupton"`` or ``"delta"``.
    half_width : int
        Kernel half-width r; the kernel is (2r + 1) px square.
    images : numpy.ndarray, shape (n_basis, 2r + 1, 2r + 1)
        The functions: ``images[0]`` sums to 1, the others to 0.
    fy : numpy.ndarray, shape (n_fy, 2r + 1)
        1-D factors along y; raw function j is ``outer(fy[raw_y[j]], fx[raw_x[j]])``.
    fx : numpy.ndarray, shape (n_fx, 2r + 1)
        1-D factors along x.
    raw_y : numpy.ndarray of int64
        Index into ``fy`` of each raw (separable) function.
    raw_x : numpy.ndarray of int64
        Index into ``fx`` of each raw (separable) function.
    transform : numpy.ndarray, shape (n_basis, n_raw)
        ``images = transform @ raw`` (the normalisation).
    """

    kind: str
    half_width: int
    images: np.ndarray
    fy: np.ndarray
    fx: np.ndarray
    raw_y: np.ndarray
    raw_x: np.ndarray
    transform: np.ndarray

    @property
    def size(self) -> int:
        return len(self.images)


def _build(kind, half_width, fy, fx, raw_y, raw_x) -> Basis:
    raw = [np.outer(fy[a], fx[b]) for a, b in zip(raw_y, raw_x)]
    transform = _normalised(raw)
    images = np.tensordot(transform, np.asarray(raw), axes=1)
    return Basis(
        kind,
        int(half_width),
        images,
        np.ascontiguousarray(fy, dtype=np.float64),
        np.ascontiguousarray(fx, dtype=np.float64),
        np.asarray(raw_y, dtype=np.int64),
        np.asarray(raw_x, dtype=np.int64),
        transform,
    )


def _check_half_width(half_width) -> int:
    if int(half_width) != half_width or half_width < 1:
        raise AstridInputError(
            f"half_width: the kernel needs an integer half-width of at least 1 px, got {half_width!r}"
        )
    return int(half_width)


def alard_lupton_basis(half_width: int, sigmas=HOTPANTS_SIGMAS, degrees=HOTPANTS_DEGREES) -> Basis:
    """Gaussians times polynomials in the kernel coordinates (Alard & Lupton 1998).

    Parameters
    ----------
    half_width : int
        The kernel is ``2 half_width + 1`` pixels square.
    sigmas : sequence of float
        Widths of the Gaussians (pixels), HOTPANTS's 0.7, 1.5, 3.0 by default.
    degrees : sequence of int
        Degree of the polynomial u^i v^j (i + j <= degree) under each
        Gaussian, HOTPANTS's 6, 4, 2 by default.

    Returns
    -------
    Basis
        ``images[0]`` is the narrowest Gaussian, summing to 1; the others sum
        to 0. 49 functions with the defaults.
    """
    half_width = _check_half_width(half_width)
    sigmas = [float(s) for s in np.atleast_1d(sigmas)]
    degrees = [int(d) for d in np.atleast_1d(degrees)]
    if len(sigmas) != len(degrees) or not sigmas:
        raise AstridInputError(
            f"sigmas and degrees: need one degree per Gaussian, got {sigmas} and {degrees}"
        )
    if not all(math.isfinite(s) and s > 0 for s in sigmas) or min(degrees) < 0:
        raise AstridInputError(
            f"sigmas must be positive and degrees >= 0, got {sigmas} and {degrees}"
        )
    u = np.arange(-half_width, half_width + 1, dtype=np.float64)
    factors, raw_y, raw_x = [], [], []
    for sigma, degree in zip(sigmas, degrees):
        g = np.exp(-0.5 * (u / sigma) ** 2)
        # Polynomial coordinates in units of the Gaussian's width keep the functions of order 1.
        first = len(factors)
        factors += [g * (u / sigma) ** p for p in range(degree + 1)]
        for total in range(degree + 1):
            for j in range(total + 1):
                raw_x.append(first + total - j)
                raw_y.append(first + j)
    factors = np.array(factors)
    return _build("alard-lupton", half_width, factors, factors, raw_y, raw_x)


def delta_basis(half_width: int) -> Basis:
    """One delta function per kernel pixel (Bramich 2008), as δ(u, v) − δ(0, 0) after the first.

    Parameters
    ----------
    half_width : int
        Kernel half-width in pixels; the kernel is (2 half_width + 1) px square.

    Returns
    -------
    Basis
        ``images[0]`` is the central delta (sum 1); the other
        (2 half_width + 1)² − 1 functions sum to 0.
    """
    half_width = _check_half_width(half_width)
    size = 2 * half_width + 1
    deltas = np.eye(size)
    pixels = [(half_width, half_width)] + [
        (iy, ix) for iy in range(size) for ix in range(size) if (iy, ix) != (half_width, half_width)
    ]
    return _build(
        "delta", half_width, deltas, deltas, [p[0] for p in pixels], [p[1] for p in pixels]
    )
