"""Fitted, spatially varying PSF-matching kernels (Alard–Lupton and delta-function bases).

A second subtraction method beside ZOGY: :func:`subtract` fits the kernel
that turns the sharper image into the broader one on stamps around stars and
returns the difference, its significance and the kernel model
(``docs/kernel.md``).
"""

from ._basis import Basis, alard_lupton_basis, delta_basis
from ._options import KernelInputs, KernelOptions
from ._result import KernelModel, KernelResult
from .high_level import subtract

__all__ = [
    "Basis",
    "KernelInputs",
    "KernelModel",
    "KernelOptions",
    "KernelResult",
    "alard_lupton_basis",
    "delta_basis",
    "subtract",
]
