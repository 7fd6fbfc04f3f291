"""Realism report: label-free statistics of real ZTF alert stamps next to the simulator's.

    .venv/bin/python benchmarks/realism.py [--fields 4] [--size 1024] [--figure docs/img]
    .venv/bin/python benchmarks/realism.py --backgrounds co-add     # triplets on real backgrounds
    .venv/bin/python benchmarks/realism.py --images                 # whole images: the ZTF quadrant

Reads the shared ZTF alerts (../shared/data/ztf_alerts; skips with a message when absent), builds
triplets from simulated ZTF-preset pairs the way the training sets are built
(astrid.build_training_set: every 5-sigma detection and random blank positions), and prints for
each statistic of astrid.realism.STATISTICS the medians, quartiles and the two-sample KS distance,
then the KS distance of braai-normalised pixel values per channel. No label is read: `drb` and
`rb` play no part (with --backgrounds, only *whether* an alert carries a drb is read: triplets are
built on the reference stamps of those that do not, as benchmarks/validate_sim_to_real.py does). With --figure, also a gallery of random real and simulated triplets side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np


def simulated_triplets(fields: int, size: int, seed: int, preset: str, overrides: dict):
    import astrid
    from astrid.triplets import ExampleOptions, build_training_set

    pairs = [
        astrid.simulate.pair(size=size, seed=seed + i, preset=preset, **overrides)
        for i in range(fields)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_training_set(pairs, ExampleOptions(random_bogus=20), balance=None, seed=seed)


def report(real, simulated, label_real="real ZTF alerts", label_sim="simulated") -> str:
    from scipy.stats import ks_2samp

    from astrid.realism import STATISTICS, compare_statistics, normalised_pixels, stamp_statistics

    table = compare_statistics(stamp_statistics(real), stamp_statistics(simulated))
    lines = [
        f"{real.sizes['candidate']} {label_real}, {simulated.sizes['candidate']} {label_sim} triplets",
        "",
        "| statistic | real median (IQR) | simulated median (IQR) | KS |",
        "|---|---|---|---:|",
    ]
    for row in table:
        lines.append(
            f"| {row['statistic']} | {row['real_median']:.3g} ({row['real_iqr']}) | "
            f"{row['sim_median']:.3g} ({row['sim_iqr']}) | {row['ks']:.2f} |"
        )
    lines += ["", "braai-normalised (rowwise) pixel values, KS distance per channel:", ""]
    a, b = normalised_pixels(real), normalised_pixels(simulated)
    lines.append("| channel | KS |")
    lines.append("|---|---:|")
    for name in a:
        lines.append(f"| {name} | {ks_2samp(a[name], b[name]).statistic:.2f} |")
    lines += ["", "What the statistics mean:"] + [f"- `{k}`: {v}" for k, v in STATISTICS.items()]
    return "\n".join(lines)


def on_real_backgrounds(alerts, style: str, n: int, seed: int):
    """Triplets on real backgrounds as validate_sim_to_real.py's recipes build them (no label read)."""
    from validate_sim_to_real import (
        BACKGROUND_OPTIONS,
        QUADRANT_CUTOUTS,
        real_backgrounds,
    )

    from astrid.inject import triplets_on_real_backgrounds

    # the backgrounds are the alerts that carry no drb score: which ones is all that is read
    without = np.flatnonzero(~np.isfinite(alerts["drb"].values.astype(float)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backgrounds = real_backgrounds(
            alerts.isel(candidate=without), QUADRANT_CUTOUTS[style], seed=8000, style=style
        )
    return triplets_on_real_backgrounds(backgrounds, n, seed=seed, **BACKGROUND_OPTIONS[style])


def compare_images(size: int, seed: int) -> int:
    """The real ZTF quadrant beside one simulated science epoch of each ZTF preset."""
    import astrid
    from astrid.paths import shared_data
    from astrid.realism import IMAGE_STATISTICS, image_statistics

    folder = shared_data("images", "ztf_quadrant")
    if folder is None:
        print(
            "shared ZTF quadrant not found (../shared/data/images/ztf_quadrant): nothing to compare"
        )
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        columns = {"real ZTF quadrant": image_statistics(next(folder.glob("*_sciimg.fits")))}
        for preset in ("ztf", "ztf_alert"):
            pair = astrid.simulate.pair(size=size, seed=seed, preset=preset)
            columns[f"`{preset}` science, {size}²"] = image_statistics(pair.science)
    print("| statistic | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name in IMAGE_STATISTICS:
        print(f"| {name} | " + " | ".join(f"{c[name]:.4g}" for c in columns.values()) + " |")
    print("\nWhat the statistics mean:")
    print("\n".join(f"- `{k}`: {v}" for k, v in IMAGE_STATISTICS.items()))
    return 0


def gallery(real, simulated, path, n: int = 6, seed: int = 0) -> None:
    from astrid.braai import plot_triplet_gallery
    from astrid.figures import save

    rng = np.random.default_rng(seed)
    for name, data in (("real", real), ("sim", simulated)):
        index = rng.choice(data.sizes["candidate"], n, replace=False)
        figure = plot_triplet_gallery(data, index=index, titles=[f"{name} {i}" for i in index])
        save(figure, os.path.join(path, f"realism_gallery_{name}"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--preset", default="ztf")
    parser.add_argument("--figure", default=None, help="folder for the gallery figures")
    parser.add_argument(
        "--backgrounds",
        choices=("masked", "co-add"),
        default=None,
        help="compare triplets on real backgrounds (as benchmarks/validate_sim_to_real.py builds "
        "them) instead of simulated fields",
    )
    parser.add_argument("--n", type=int, default=3000, help="triplets on real backgrounds")
    parser.add_argument(
        "--images",
        action="store_true",
        help="compare whole images instead: the real ZTF quadrant against simulated science epochs",
    )
    args = parser.parse_args(argv)
    if args.images:
        return compare_images(args.size, args.seed)

    from astrid.alerts import read_ztf
    from astrid.paths import shared_data

    folder = shared_data("ztf_alerts")
    if folder is None:
        print("shared ZTF alerts not found (../shared/data/ztf_alerts): nothing to compare against")
        return 0
    started = time.perf_counter()
    real = read_ztf(folder)
    if args.backgrounds is None:
        simulated = simulated_triplets(args.fields, args.size, args.seed, args.preset, {})
        label = f"simulated ({args.preset} preset, {args.fields} fields of {args.size}²)"
    else:
        simulated = on_real_backgrounds(real, args.backgrounds, args.n, args.seed)
        label = f"on real backgrounds ({args.backgrounds})"
    print(report(real, simulated, label_sim=label))
    if args.figure:
        gallery(real, simulated, args.figure)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
