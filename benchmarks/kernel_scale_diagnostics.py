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

Run::

    .venv/bin/python benchmarks/kernel_scale_diagnostics.py --seeds 4 8 10 11 17
    .venv/bin/python benchmarks/kernel_scale_diagnostics.py --summary --seeds $(seq 101 120)
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from astrid.diffim import difference
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


def summary(seeds, size) -> None:
    """The kernel's scale and the photometric flux ratio against the truth, seed by seed."""
    print("| seed | kernel scale / true − 1 | stamps used | photometric ratio / true − 1 |")
    print("|---|---|---|---|")
    errors = []
    for seed in seeds:
        sim = pair(size, seed=seed)
        true = sim.params["flux_ratio"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = difference(sim.reference, sim.science, method="kernel")
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
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.seeds, args.size)
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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = difference(
                    sim.reference,
                    sim.science,
                    method="kernel",
                    kernel=kernel_options,
                    **diff_options,
                )
            k = res.subtraction
            cells.append(
                f"{100 * (k.flux_ratio / sim.params['flux_ratio'] - 1):+.2f} % ({k.n_stamps_used})"
            )
        sim = sims[()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zogy = difference(sim.reference, sim.science, method="zogy")
        cells.append(f"{100 * (zogy.metrics['flux_ratio'] / sim.params['flux_ratio'] - 1):+.2f} %")
        print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)
    print("# cells: scale / true − 1 (stamps used); zogy: its flux ratio / true − 1")


if __name__ == "__main__":
    main()
