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

Run::

    .venv/bin/python benchmarks/kernel_scale_diagnostics.py --seeds 4 8 10 11 17
"""

from __future__ import annotations

import argparse
import warnings

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 8, 10, 11, 17])
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
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
