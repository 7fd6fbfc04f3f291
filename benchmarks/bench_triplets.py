"""Benchmark of candidate detection, features and triplet extraction.

Target: detection, features and 1,000 triplets from a 4096 x 4096 difference
result in under 1 s (the reference-image catalogue, computed once per
reference and reusable for every science epoch, is timed on its own row).

Usage::

    python benchmarks/bench_triplets.py                 # simulated 4096^2 pair, astrid.difference (ZOGY)
    python benchmarks/bench_triplets.py --synthetic     # synthetic result (no simulation/differencing)
    python benchmarks/bench_triplets.py --size 2048 --repeat 5 --store

Prints a Markdown table: median and best wall time over ``--repeat`` runs,
the median CPU time of the process (on a loaded machine the wall time also
counts waiting for a core), and the peak memory allocated during one run
(tracemalloc: NumPy and Python allocations), plus the CPU count and load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path


def measure(fn, repeat):
    """Median and best wall time, median CPU time (s) over ``repeat`` calls, peak traced memory (MB), last value.

    CPU time (all threads of the process) is shown beside wall time because
    on a shared machine the wall time also counts the waits for a core.
    """
    times = []
    cpu = []
    value = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), min(times), statistics.median(cpu), peak / 2**20, value


def build_result(size: int, synthetic: bool, seed: int):
    if synthetic:
        from astrid.triplets import SyntheticScene, synthetic_difference

        scale = (size / 1024) ** 2
        scene = SyntheticScene(
            n_transients=int(80 * scale),
            n_stars=int(250 * scale),
            n_galaxies=int(20 * scale),
            n_hot_pixels=int(60 * scale),
            n_fading=int(10 * scale),
        )
        return synthetic_difference(
            (size, size), scene, seed=seed
        ), "synthetic (astrid.triplets.synthetic_difference)"
    import astrid.simulate
    from astrid.diffim import difference

    sim = astrid.simulate.pair(size=size, seed=seed)
    return difference(sim.reference, sim.science), "astrid.simulate.pair + astrid.difference (zogy)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=4096, help="image side in pixels (default 4096)"
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="use a synthetic result instead of simulate+difference",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per step (default 3)")
    parser.add_argument(
        "--n-triplets", type=int, default=1000, help="triplets to cut (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--store", action="store_true", help="also time Zarr and netCDF write/read of the triplets"
    )
    args = parser.parse_args(argv)

    from astrid.triplets import (
        detect,
        load_triplets,
        make_triplets,
        reference_catalog,
        write_triplets,
    )

    start = time.perf_counter()
    result, source = build_result(args.size, args.synthetic, args.seed)
    setup_s = time.perf_counter() - start

    # Compile (or load from cache) every numba kernel before timing.
    catalog = reference_catalog(result.reference, fwhm=getattr(result.reference_psf, "fwhm", None))
    galaxies = catalog[catalog["extended"]]
    warm = detect(result, negative=True, reference_sources=catalog, galaxies=galaxies)
    make_triplets(result, warm[:10])

    def run_catalog():
        return reference_catalog(result.reference, fwhm=getattr(result.reference_psf, "fwhm", None))

    def run_detect():
        return detect(result, negative=True, reference_sources=catalog, galaxies=galaxies)

    candidates = run_detect()
    n = min(args.n_triplets, len(candidates))
    subset = candidates[:n]

    def run_triplets():
        return make_triplets(result, subset, field="bench")

    def run_target():
        found = detect(result, negative=True, reference_sources=catalog, galaxies=galaxies)
        return make_triplets(result, found[: args.n_triplets], field="bench")

    def run_target_capped():
        found = detect(
            result,
            negative=True,
            max_candidates=args.n_triplets,
            reference_sources=catalog,
            galaxies=galaxies,
        )
        return make_triplets(result, found, field="bench")

    rows = []
    t = measure(run_catalog, args.repeat)
    rows.append(
        (
            "reference_catalog (once per reference image)",
            *t[:4],
            f"{len(t[4])} sources, {int(t[4]['extended'].sum())} extended",
        )
    )
    t = measure(run_detect, args.repeat)
    rows.append(
        (
            "detect: peaks + features, all candidates",
            *t[:4],
            f"{len(t[4])} candidates (+/-, 5 sigma)",
        )
    )
    t = measure(run_triplets, args.repeat)
    rows.append((f"make_triplets: {n} stamps", *t[:4], f"{t[4].nbytes / 2**20:.0f} MB dataset"))
    t = measure(run_target, args.repeat)
    rows.append((f"TARGET detect all + {n} triplets", *t[:4], "target < 1 s"))
    t = measure(run_target_capped, args.repeat)
    rows.append(
        (
            f"detect (max_candidates={args.n_triplets}) + triplets",
            *t[:4],
            "features only for the kept",
        )
    )
    t = measure(lambda: detect(result, negative=True), 1)
    rows.append(("detect with its own reference catalogue", *t[:4], "catalogue not reused"))

    if args.store:
        ds = run_triplets()
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("bench.zarr", "bench.nc"):
                path = Path(tmp) / name
                t = measure(lambda: write_triplets(ds, path), args.repeat)
                rows.append(
                    (f"write_triplets {name} ({n})", *t[:4], f"{_size_mb(path):.0f} MB on disk")
                )
                t = measure(lambda: load_triplets(path).load(), args.repeat)
                rows.append((f"load_triplets {name} + load ({n})", *t[:4], ""))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# bench_triplets: {args.size}x{args.size}, {source}")
    print(
        f"setup (simulate/difference, not timed below): {setup_s:.1f} s; "
        f"CPU: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), load average {load:.1f}; "
        f"repeat {args.repeat}"
    )
    print()
    print("| step | median s | best s | CPU s | peak MB | notes |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, median, best, cpu, peak, note in rows:
        print(f"| {name} | {median:.3f} | {best:.3f} | {cpu:.3f} | {peak:.0f} | {note} |")
    return 0


def _size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


if __name__ == "__main__":
    raise SystemExit(main())
