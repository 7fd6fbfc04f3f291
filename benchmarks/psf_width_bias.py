"""Where the empirical PSFs' width bias comes from (issue 17, item 2: a measurement).

For simulated pairs, compares the FWHM of the true PSF at the image centre
(``SimulatedPair.psf``) with that of ``estimate_psf``'s stack of stars
(``degree=0``), of the stack after the Wiener shrink alone, and after the
whole regularisation that ``difference()`` applies (Wiener shrink and Moffat
wings, ``astrid.diffim.psf.regularise_psf``). The FWHM is a measure of the core, which the
wings beyond 1.5 FWHM do not touch.

Run::

    .venv/bin/python benchmarks/psf_width_bias.py [--seeds 1 2 3] [--size 1024]
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings

import numpy as np

from astrid.diffim import estimate_psf, measure_fwhm
from astrid.diffim.psf import regularise_psf
from astrid.simulate import pair


def wiener_only(psf: np.ndarray) -> np.ndarray:
    """The Wiener shrink of ``astrid.diffim.psf.regularise_psf_array`` without the Moffat wings."""
    c = psf.shape[0] // 2
    y, x = np.indices(psf.shape) - c
    outer = np.hypot(x, y) > 0.7 * c
    pairs = outer[:, 1:] & outer[:, :-1]
    diffs = (psf[:, 1:] - psf[:, :-1])[pairs]
    sigma = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2.0)
    spectrum = np.fft.rfft2(np.fft.ifftshift(psf))
    power = np.maximum(np.abs(spectrum) ** 2, np.finfo(float).tiny)
    shrink = np.clip(1.0 - 4.0 * psf.size * sigma**2 / power, 0.0, 1.0)
    clean = np.fft.fftshift(np.fft.irfft2(spectrum * shrink, s=psf.shape))
    return clean / clean.sum()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    print("| seed | epoch | true FWHM (px) | stars | stack | Wiener shrink only | regularised |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        sim = pair(size=args.size, seed=seed)
        for epoch, image in (("reference", sim.reference), ("science", sim.science)):
            true = measure_fwhm(sim.psf(epoch))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = estimate_psf(image.data, image.mask)
            if model.method != "empirical":
                print(
                    f"| {seed} | {epoch} | {true:.3f} | {model.n_usable} | ({model.method}) | | |"
                )
                continue
            regularised, _ = regularise_psf(model)
            cells = [
                f"{100 * (fwhm / true - 1):+.1f} %"
                for fwhm in (model.fwhm, measure_fwhm(wiener_only(model.psf)), regularised.fwhm)
            ]
            print(
                f"| {seed} | {epoch} | {true:.3f} | {model.n_stars} | " + " | ".join(cells) + " |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
