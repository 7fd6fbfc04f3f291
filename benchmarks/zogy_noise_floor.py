"""How many |S_corr| > threshold peaks pure noise gives: the false-positive floor of ZOGY.

ZOGY's S_corr is a matched-filter statistic: even on perfect data, white
Gaussian noise gives a few peaks above 5 per large image. For each seed this
draws white noise with the noise levels, PSFs (``sim.params["psf_science"]``,
``["psf_reference"]``) and flux ratio of a simulated survey pair
(``astrid.simulate.pair(size, seed)``), runs :func:`astrid.zogy.subtract`
with those true inputs, and counts local maxima (5×5 px) of |S_corr| above
each threshold outside the mask. The result is the count that no
improvement of the PSFs, alignment or noise model can remove.

The last line gives the same count for a continuous Gaussian random field
with the power spectrum of S on white noise (the expression summed in the
ZOGY paper's eq. 42): at a high threshold u the number of peaks above u is
close to the expected Euler characteristic of the excursion set, two-sided
2 A √det(Λ) u exp(−u²/2) / (2π)^{3/2}, where Λ is the covariance of the
field's gradient (Adler 1981; Worsley et al. 1996). Local maxima of the
pixel values fall a little short of it, because a pixel rarely sits on the
crest of a peak two or three pixels wide.

Run::

    .venv/bin/python benchmarks/zogy_noise_floor.py --seeds 1 2 3 4 5 6 7 8
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from astrid.diffim.zogy import ZogyImage, ZogyOptions, robust_std, subtract
from astrid.simulate import pair, significant_peaks

THRESHOLDS = (4.0, 4.5, 5.0, 5.2, 5.5)
EMPTY = dict(
    n_stars=0,
    n_galaxies=0,
    n_host_galaxies=0,
    n_supernovae=0,
    n_variables=0,
    n_asteroids=0,
    artifacts=False,
)


def peaks_above(significance, mask, thresholds):
    return [len(significant_peaks(significance.astype(np.float64), mask, t)[0]) for t in thresholds]


def expected_peaks(psf_n, psf_r, sigma_n, sigma_r, flux_ratio, thresholds, area, grid=256):
    """Expected |S| > u peak count over ``area`` pixels for a continuous Gaussian field with S's spectrum."""

    def spectrum(psf):
        padded = np.zeros((grid, grid))
        h = psf.shape[0] // 2
        padded[: psf.shape[0], : psf.shape[1]] = psf / psf.sum()
        return np.fft.fft2(np.roll(padded, (-h, -h), axis=(0, 1)))

    pn2, pr2 = np.abs(spectrum(psf_n)) ** 2, np.abs(spectrum(psf_r)) ** 2
    power = flux_ratio**2 * pn2 * pr2 / (sigma_n**2 * pr2 + sigma_r**2 * flux_ratio**2 * pn2)
    fy, fx = np.meshgrid(np.fft.fftfreq(grid), np.fft.fftfreq(grid), indexing="ij")
    wy, wx = 2 * np.pi * fy, 2 * np.pi * fx
    total = power.sum()
    lam = (
        np.array(
            [
                [(wx * wx * power).sum(), (wx * wy * power).sum()],
                [(wx * wy * power).sum(), (wy * wy * power).sum()],
            ]
        )
        / total
    )
    density = math.sqrt(np.linalg.det(lam)) / (2 * math.pi) ** 1.5
    return [2 * area * density * u * math.exp(-u * u / 2) for u in thresholds]


def noise_floor(seed: int, size: int, thresholds=THRESHOLDS):
    """Peaks of |S_corr| above each threshold on pure noise with the pair's true inputs.

    Returns the counts (local maxima outside the mask), the continuous-field
    expectation over the same area, and S_corr's robust std.
    """
    sim = pair(size, seed=seed, **EMPTY)
    p = sim.params
    # Background noise per pixel of the simulated epochs (sky Poisson plus read noise, in ADU).
    sigma = [
        math.sqrt(p[f"sky_{e}"] / p["gain"] + (p["read_noise"] / p["gain"]) ** 2)
        for e in ("science", "reference")
    ]
    rng = np.random.default_rng(seed)
    N = rng.normal(0.0, sigma[0], (size, size)).astype(np.float32)
    R = rng.normal(0.0, sigma[1], (size, size)).astype(np.float32)
    result = subtract(
        reference=ZogyImage(R, p["psf_reference"], sigma[1]),
        science=ZogyImage(N, p["psf_science"], sigma[0]),
        flux_ratio=p["flux_ratio"],
        options=ZogyOptions(dtype=np.float32),
    )
    counts = peaks_above(result.S_corr, result.mask, thresholds)
    predicted = expected_peaks(
        p["psf_science"],
        p["psf_reference"],
        sigma[0],
        sigma[1],
        p["flux_ratio"],
        thresholds,
        float(np.count_nonzero(~result.mask)),
    )
    return counts, predicted, robust_std(result.S_corr, result.mask)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    print("| seed | S_corr robust std | " + " | ".join(f"peaks > {t:g}" for t in THRESHOLDS) + " |")
    print("|---|---|" + "---|" * len(THRESHOLDS))
    total = np.zeros(len(THRESHOLDS), int)
    expected = np.zeros(len(THRESHOLDS))
    for seed in args.seeds:
        counts, predicted, std = noise_floor(seed, args.size)
        total += counts
        expected += predicted
        print(f"| {seed} | {std:.3f} | " + " | ".join(map(str, counts)) + " |", flush=True)
    scale = (2048 / args.size) ** 2 / len(args.seeds)
    print(f"| all ({len(args.seeds)} × {args.size}²) | | " + " | ".join(map(str, total)) + " |")
    print(
        "# per 2048²: " + ", ".join(f"> {t:g}: {n * scale:.2f}" for t, n in zip(THRESHOLDS, total))
    )
    print(
        "# continuous Gaussian field with the same spectrum, per 2048²: "
        + ", ".join(f"> {t:g}: {n * scale:.2f}" for t, n in zip(THRESHOLDS, expected))
    )


if __name__ == "__main__":
    main()
