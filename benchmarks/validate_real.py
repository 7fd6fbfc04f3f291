"""Validate the differencing engine on the real image pairs in the shared data.

1. JWST NIRCam F200W, Abell 2744 (``images/sfft_jwst_nircam_a2744``): GLASS
   (2022-06, reference) against UNCOVER (2022-11, science), already on one
   pixel grid, with WebbPSF PSFs and per-pixel noise maps. No catalogued
   transient. Reports the robust standard deviation of S_corr and the number
   of 5-sigma peaks, next to the same numbers for sfft's decorrelated S/N
   image (``4check/``) over the pixels both methods keep.
2. DECam i band (``images/sfft_decam_decorr``): five exposures per epoch
   (OBS04 a–e as references, OBS18 a–e as science) and the two stacks. No
   known transient: a null test (robust std and 5-sigma peaks of S_corr,
   PSFs estimated from the 256² cutouts, flux ratio measured).

Run (numbers go into docs/validation.md)::

    .venv/bin/python benchmarks/validate_real.py
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from astropy.io import fits

from astrid import read_image
from astrid._difference import difference
from astrid.paths import shared_data
from astrid.simulate import significant_peaks
from astrid.zogy import robust_std

THRESHOLD = 5.0
PEAK_BOX = 5  # px: a peak is the maximum of |S_corr| in its 5×5 neighbourhood

JWST_SCI = "jw02561001002-02561-o001_t003_nircam_clear-f200w_i2d_stamp"
JWST_REF = "jw01324001001-01324-o001_t001_nircam_clear-f200w_i2d_stamp"


def count_peaks(significance: np.ndarray, valid: np.ndarray, threshold: float = THRESHOLD) -> int:
    """Number of local maxima of |significance| above ``threshold`` within ``valid``."""
    return len(significant_peaks(np.nan_to_num(significance), ~valid, threshold, PEAK_BOX)[0])


def jwst(root) -> list[dict]:
    science = read_image(root / "input_data" / f"{JWST_SCI}.fits")
    reference = read_image(root / "input_data" / f"{JWST_REF}.fits")
    science.variance = fits.getdata(root / "auxiliary" / f"{JWST_SCI}.noise.fits").astype(np.float64) ** 2
    reference.variance = fits.getdata(root / "auxiliary" / f"{JWST_REF}.noise.fits").astype(np.float64) ** 2
    psf_sci = fits.getdata(root / "auxiliary" / f"{JWST_SCI}.WebbPSF.fits").astype(np.float64)
    psf_ref = fits.getdata(root / "auxiliary" / f"{JWST_REF}.WebbPSF.fits").astype(np.float64)
    sfft = fits.getdata(root / "4check" / f"{JWST_SCI}.crossConvd.sfftdiff.DeCorrelated.SNR.fits").astype(np.float64)
    sfft_valid = np.isfinite(sfft) & (sfft != 0)  # sfft writes 0 where it has no result

    rows = []
    runs = [
        ("WebbPSF, flux ratio 1", dict(science_psf=psf_sci, reference_psf=psf_ref, flux_ratio=1.0)),
        ("WebbPSF, measured flux ratio", dict(science_psf=psf_sci, reference_psf=psf_ref)),
        ("estimated PSFs and flux ratio", {}),
    ]
    for label, kwargs in runs:
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = difference(reference, science, align=False, dtype=np.float64, **kwargs)
            except Exception as exc:  # report, do not hide: the row says what failed
                rows.append({"data": "JWST", "run": label, "error": f"{type(exc).__name__}: {exc}"})
                continue
        elapsed = time.perf_counter() - start
        valid = ~result.mask & sfft_valid
        rows.append({
            "data": "JWST",
            "run": label,
            "scorr_std": robust_std(result.S_corr, ~valid),
            "peaks": count_peaks(result.S_corr, valid),
            "sfft_std": robust_std(sfft, ~valid),
            "sfft_peaks": count_peaks(sfft, valid),
            "valid_fraction": float(valid.mean()),
            "flux_ratio": result.metrics["flux_ratio"],
            "fwhm": (result.metrics["fwhm_sci"], result.metrics["fwhm_ref"]),
            "seconds": elapsed,
            "warnings": len(caught),
        })
    return rows


def decam(root) -> list[dict]:
    rows = []
    pairs = [(f"input_data/DEC-OBS04{c}.mini.fits", f"input_data/DEC-OBS18{c}.mini.fits", f"OBS04{c} vs OBS18{c}")
             for c in "abcde"]
    pairs.append(("4check/Stack-DEC-OBS04.fits", "4check/Stack-DEC-OBS18.fits", "stacks"))
    for ref_name, sci_name, label in pairs:
        reference = read_image(root / ref_name)
        science = read_image(root / sci_name)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = difference(reference, science, align=True, dtype=np.float64)
            except Exception as exc:
                rows.append({"data": "DECam", "run": label, "error": f"{type(exc).__name__}: {exc}"})
                continue
        valid = ~result.mask
        rows.append({
            "data": "DECam",
            "run": label,
            "scorr_std": robust_std(result.S_corr, result.mask),
            "peaks": count_peaks(result.S_corr, valid),
            "valid_fraction": float(valid.mean()),
            "flux_ratio": result.metrics["flux_ratio"],
            "fwhm": (result.metrics["fwhm_sci"], result.metrics["fwhm_ref"]),
            "header_fwhm": (science.header.get("FWHM"), reference.header.get("FWHM")),
            "seconds": time.perf_counter() - start,
            "warnings": len(caught),
        })
    # sfft's own decorrelated difference of the stacks, in units of its robust noise.
    sfft = fits.getdata(root / "4check" / "FinalDifference.DeCorr.fits").astype(np.float64)
    sigma = robust_std(sfft)
    valid = np.ones(sfft.shape, bool)
    rows.append({"data": "DECam", "run": "sfft stacks (DeCorr / robust std)", "scorr_std": 1.0,
                 "peaks": count_peaks(sfft / sigma, valid), "valid_fraction": 1.0})
    return rows


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, tuple):
        return "/".join(_fmt(v) if v is not None else "-" for v in value)
    return str(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    rows = []
    root = shared_data("images", "sfft_jwst_nircam_a2744")
    if root is None:
        print("# JWST pair not found (shared data absent): skipped")
    else:
        rows += jwst(root)
    root = shared_data("images", "sfft_decam_decorr")
    if root is None:
        print("# DECam epochs not found (shared data absent): skipped")
    else:
        rows += decam(root)
    columns = ["data", "run", "scorr_std", "peaks", "sfft_std", "sfft_peaks", "valid_fraction",
               "flux_ratio", "fwhm", "header_fwhm", "seconds", "warnings", "error"]
    columns = [c for c in columns if any(c in row for row in rows)]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_fmt(row[c]) if c in row else "" for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
