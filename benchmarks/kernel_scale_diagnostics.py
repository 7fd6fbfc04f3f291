"""Where the fitted kernel's photometric scale error comes from (issue #19): one experiment per column.

For each seed, the fitted scale of ``difference(method="kernel")`` against
the pair's true flux ratio (``scale / true − 1``, per cent), under:

- ``default``: the twenty-seed validation's setting;
- ``no eiv``: without the errors-in-variables correction;
- ``clean``: the same seed simulated with PSFs that neither vary over the field
  nor are elliptical, no artifacts and no variable stars;
- ``clean, box 256``: and backgrounds in 256 px boxes (less of the stars' wings
  taken as sky);
- ``clean, wings``: and a kernel of 15 px half-width with a fourth, 6 px
  Gaussian in the basis (the kernel between two Moffat PSFs has wings the
  default basis cannot carry);
- ``default, wings``: that kernel on the default pair;
- ``zogy``: ZOGY's own flux ratio (``metrics["flux_ratio"]``) on the default pair.

With ``--summary``, only the default kernel and the photometric flux ratio that
``difference()`` measures before subtracting (``metrics["flux_ratio"]``, star
photometry with the PSF models, as ZOGY uses it) on each seed, and their mean,
scatter and worst error over the seeds: how far two independent estimates of
the same pair's scale are from the truth shows what the pair's stars can
measure.

With ``--oracle``, for each seed: every star that is neither variable nor
saturated nor near a masked pixel fitted (flux and a constant, weights
1/variance, 21 px boxes) with the simulator's *true* PSF at its true position
in each epoch's own image; the per-star ratios' pulls against the true flux
ratio (median, robust std), the inverse-variance mean ratio against the
truth, and the pulls of the eight stars with the largest weights.

With ``--refit``, for each seed: the default kernel's scale, the delta-function
basis's, and the default kernel's scale refitted star by star after the fit
(every unsaturated, non-variable star of the truth away from masked pixels:
``science ≈ b (science − D) + c`` in 17 px boxes with the science variance,
stars of S/N ≥ 20 in ``b``, their inverse-variance mean after a 5 robust-std
clip of the pulls, times the kernel's scale), with that refit's pull spread.

Run::

    .venv/bin/python benchmarks/kernel_scale_diagnostics.py --seeds 4 8 10 11 17
    .venv/bin/python benchmarks/kernel_scale_diagnostics.py --summary --seeds $(seq 101 120)
    .venv/bin/python benchmarks/kernel_scale_diagnostics.py --oracle --seeds 3 8 10 11 17 116 118 120
    .venv/bin/python benchmarks/kernel_scale_diagnostics.py --refit --seeds 8 17 3 10 11
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from astropy.stats import mad_std
from validate_simulated import quiet_difference, static_stars

from astrid.simulate import pair

CLEAN = {"psf_variation": 0.0, "psf_ellipticity": 0.0, "artifacts": False, "n_variables": 0}
WINGS = {"sigmas": [0.7, 1.5, 3.0, 6.0], "degrees": [6, 4, 2, 0], "half_width": 15}
RUNS = (
    ("default", {}, {}, {}),
    ("no eiv", {}, {}, {"eiv_correction": False}),
    ("clean", CLEAN, {}, {}),
    ("clean, box 256", CLEAN, {"box_size": 256}, {}),
    ("clean, wings", CLEAN, {}, WINGS),
    ("default, wings", {}, {}, WINGS),
)


def _true_psf_flux(sim, epoch: str, x: float, y: float, half: int):
    """(flux, error) of a star fitted with the true PSF and a constant, or None near an edge/mask."""
    image = sim.reference if epoch == "reference" else sim.science
    cx, cy = int(round(x)), int(round(y))
    ny, nx = image.shape
    if not (half <= cx < nx - half and half <= cy < ny - half):
        return None
    box = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
    if np.asarray(image.mask)[box].any():
        return None
    # sim.psf is centred on its middle pixel; the star sits at a sub-pixel position, so the
    # profile is the source rendered there exactly as the simulation renders it
    psf = np.asarray(sim.render_source(epoch, x, y, 1.0)[box], float)
    flux, variance = _fit_with_constant(
        psf, np.asarray(image.data, float)[box], np.asarray(image.variance, float)[box]
    )
    return flux, float(np.sqrt(variance))


def _fit_with_constant(profile, data, variance):
    """(amplitude, its variance) of ``data ≈ amplitude × profile + constant``, weights 1/variance."""
    design = np.stack([profile.ravel(), np.ones(profile.size)], axis=1)
    weight = 1.0 / variance.ravel()
    covariance = np.linalg.inv(design.T @ (design * weight[:, None]))
    amplitude = (covariance @ (design.T @ (data.ravel() * weight)))[0]
    return amplitude, covariance[0, 0]


def _clipped_mean(values, errors, centre):
    """Inverse-variance mean of ``values`` without pulls (about ``centre``) beyond 5 robust std.

    Returns the mean, its error, the stars kept and the pulls' robust std.
    """
    pulls = (values - centre) / errors
    spread = mad_std(pulls)
    kept = np.abs(pulls - np.median(pulls)) < 5 * spread
    weights = 1.0 / errors[kept] ** 2
    return np.sum(weights * values[kept]) / weights.sum(), 1 / np.sqrt(weights.sum()), kept, spread


def oracle(seeds, size, sim_options=None, half: int = 10) -> None:
    """The true-PSF photometry of every clean star against the true flux ratio (see above)."""
    for seed in seeds:
        sim = pair(size, seed=seed, **(sim_options or {}))
        true = sim.params["flux_ratio"]
        ratios, errors, snrs, epochs = [], [], [], []
        for row in static_stars(sim.stars):
            ref = _true_psf_flux(sim, "reference", row["x_ref"], row["y_ref"], half)
            sci = _true_psf_flux(sim, "science", row["x_sci"], row["y_sci"], half)
            if ref is None or sci is None or ref[0] <= 0 or sci[0] <= 0:
                continue
            epochs.append(
                (
                    ref[0] / row["flux_ref"],
                    ref[1] / row["flux_ref"],
                    sci[0] / row["flux_sci"],
                    sci[1] / row["flux_sci"],
                )
            )
            ratio = sci[0] / ref[0]
            ratios.append(ratio)
            errors.append(ratio * np.hypot(ref[1] / ref[0], sci[1] / sci[0]))
            snrs.append(ref[0] / ref[1])
        ratios, errors, snrs = map(np.asarray, (ratios, errors, snrs))
        pulls = (ratios - true) / errors
        weights = 1.0 / errors**2
        mean = np.sum(weights * ratios) / weights.sum()
        # single stars hit by a cosmic ray or blended with a galaxy or a transient sit tens of
        # sigma off; the clipped mean is what the clean stars measure
        clipped, clipped_error, kept, spread = _clipped_mean(ratios, errors, true)
        top = np.argsort(-weights)[:8]
        print(
            f"seed {seed}: {len(ratios)} stars, pulls median {np.median(pulls):+.2f}, robust std "
            f"{spread:.2f}; inverse-variance mean / true − 1 {100 * (mean / true - 1):+.2f} % "
            f"(± {100 / np.sqrt(weights.sum()) / true:.2f} %); without the {np.sum(~kept)} stars "
            f"beyond 5 robust std {100 * (clipped / true - 1):+.2f} % "
            f"(± {100 * clipped_error / true:.2f} %); the 8 heaviest stars: S/N "
            f"{' '.join(f'{v:.0f}' for v in snrs[top])}, pulls {' '.join(f'{v:+.1f}' for v in pulls[top])}; "
            f"fitted / true flux − 1 by epoch, clipped alike: reference "
            f"{_clipped_mean_percent(*np.asarray(epochs)[:, :2].T)}, science "
            f"{_clipped_mean_percent(*np.asarray(epochs)[:, 2:].T)}",
            flush=True,
        )


def _clipped_mean_percent(values, errors) -> str:
    """:func:`_clipped_mean` of ``values`` about 1, − 1, in per cent with its error."""
    mean, error, _, _ = _clipped_mean(values, errors, 1.0)
    return f"{100 * (mean - 1):+.2f} % ± {100 * error:.2f} %"


def _star_scales(res, stars, half: int = 8):
    """Per-star (scale, variance) of science against the matched reference ``science − D``."""
    science = np.asarray(res.science.data, float)
    template = science - np.asarray(res.subtraction.D, float)
    variance = np.asarray(res.science.variance, float)
    bad = (
        np.asarray(res.subtraction.mask)
        | np.asarray(res.science.mask)
        | np.asarray(res.reference.mask)
    )
    ny, nx = science.shape
    scales = []
    for row in stars:
        cx, cy = int(round(row["x_ref"])), int(round(row["y_ref"]))
        if not (half <= cx < nx - half and half <= cy < ny - half):
            continue
        box = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
        if bad[box].any():
            continue
        scale, scale_variance = _fit_with_constant(template[box], science[box], variance[box])
        if scale_variance > 0 and scale / np.sqrt(scale_variance) >= 20:
            scales.append((scale, scale_variance))
    return np.array(scales)


def refit(seeds, size, sim_options=None) -> None:
    """The kernel's scale, the delta basis's, and the scale refitted star by star (see above)."""
    print(
        "| seed | kernel | delta basis | refitted over the stars | stars (kept) | pulls robust std |"
    )
    print("|---|---|---|---|---|---|")
    for seed in seeds:
        sim = pair(size, seed=seed, **(sim_options or {}))
        true = sim.params["flux_ratio"]
        res = quiet_difference(sim, "kernel")
        delta = quiet_difference(sim, "kernel", kernel={"basis": "delta"})
        scales = _star_scales(res, static_stars(sim.stars))
        ratios, errors = scales[:, 0], np.sqrt(scales[:, 1])
        mean, _, kept, spread = _clipped_mean(ratios, errors, np.median(ratios))
        refitted = res.subtraction.flux_ratio * mean
        cells = (res.subtraction.flux_ratio, delta.subtraction.flux_ratio, refitted)
        print(
            f"| {seed} | "
            + " | ".join(f"{100 * (value / true - 1):+.2f} %" for value in cells)
            + f" | {len(ratios)} ({kept.sum()}) | {spread:.2f} |",
            flush=True,
        )


def summary(seeds, size, sim_options=None) -> None:
    """The kernel's scale and the photometric flux ratio against the truth, seed by seed."""
    print("| seed | kernel scale / true − 1 | stamps used | photometric ratio / true − 1 |")
    print("|---|---|---|---|")
    errors = []
    for seed in seeds:
        sim = pair(size, seed=seed, **(sim_options or {}))
        true = sim.params["flux_ratio"]
        res = quiet_difference(sim, "kernel")
        k = res.subtraction
        errors.append(
            (100 * (k.flux_ratio / true - 1), 100 * (res.metrics["flux_ratio"] / true - 1))
        )
        print(
            f"| {seed} | {errors[-1][0]:+.2f} % | {k.n_stamps_used} | {errors[-1][1]:+.2f} % |",
            flush=True,
        )
    a = np.array(errors)
    for i, name in enumerate(("kernel scale", "photometric ratio")):
        print(
            f"# {name}: mean {a[:, i].mean():+.2f} %, std {a[:, i].std():.2f} %, worst "
            f"{np.abs(a[:, i]).max():.2f} %, within 1 %: {np.sum(np.abs(a[:, i]) < 1)}/{len(a)}"
        )
    print(
        f"# correlation of the two errors: {np.corrcoef(a[:, 0], a[:, 1])[0, 1]:.2f}; {size}² pairs"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 8, 10, 11, 17])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--refit", action="store_true")
    parser.add_argument(
        "--sim",
        type=json.loads,
        default={},
        help="simulator overrides for --oracle, --refit, --summary, e.g. '{\"saturation\": 1e9}'",
    )
    args = parser.parse_args(argv)
    if args.oracle:
        oracle(args.seeds, args.size, args.sim)
        return
    if args.refit:
        refit(args.seeds, args.size, args.sim)
        return
    if args.summary:
        summary(args.seeds, args.size, args.sim)
        return
    print("| seed | " + " | ".join(name for name, *_ in RUNS) + " | zogy |")
    print("|---|" + "---|" * (len(RUNS) + 1))
    for seed in args.seeds:
        cells = []
        sims = {}
        for name, sim_options, diff_options, kernel_options in RUNS:
            key = tuple(sorted(sim_options.items()))
            if key not in sims:
                sims[key] = pair(args.size, seed=seed, **sim_options)
            sim = sims[key]
            res = quiet_difference(sim, "kernel", kernel=kernel_options, **diff_options)
            k = res.subtraction
            cells.append(
                f"{100 * (k.flux_ratio / sim.params['flux_ratio'] - 1):+.2f} % ({k.n_stamps_used})"
            )
        sim = sims[()]
        zogy = quiet_difference(sim, "zogy")
        cells.append(f"{100 * (zogy.metrics['flux_ratio'] / sim.params['flux_ratio'] - 1):+.2f} %")
        print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)
    print("# cells: scale / true − 1 (stamps used); zogy: its flux ratio / true − 1")


if __name__ == "__main__":
    main()
