"""Time and memory to simulate one reference/science pair with ``astrid.simulate.pair``.

Each image size runs in a fresh subprocess so that its peak resident memory
(``ru_maxrss``) is its own. In the subprocess a small pair is simulated first
(loading the numba kernels from their cache, or compiling them once), then
the timed pair, then the same pair again under ``tracemalloc`` for the peak
of the array allocations. Prints a markdown table; ``--json PATH`` also
writes the numbers.

Usage::

    python benchmarks/bench_simulate.py                 # 1024, 2048, 4096
    python benchmarks/bench_simulate.py --sizes 512 4096 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time, tracemalloc
import numba
from astrid import simulate

size, repeat, preset = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
simulate.pair(256, seed=1, preset=preset)
warmup = time.perf_counter() - start
baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

times, cpus, stages = [], [], None
for i in range(repeat):
    start, start_cpu = time.perf_counter(), cpu()
    sim = simulate.pair(size, seed=0, preset=preset)
    times.append(time.perf_counter() - start)
    cpus.append(cpu() - start_cpu)
    stages = sim.params["timing_s"]
n_truth, n_stars, n_galaxies = len(sim.truth), len(sim.stars), len(sim.galaxies)
del sim
peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
tracemalloc.start()
simulate.pair(size, seed=0, preset=preset)
_, traced_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({
    "size": size, "preset": preset, "times_s": times, "best_s": min(times), "stages_s": stages,
    "cpu_s": cpus[times.index(min(times))],
    "warmup_s": warmup, "tracemalloc_peak_mib": traced_peak / 2**20, "maxrss_mib": peak_rss,
    "baseline_rss_mib": baseline_rss, "threads": numba.get_num_threads(),
    "n_truth": n_truth, "n_stars": n_stars, "n_galaxies": n_galaxies,
}))
"""


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run(size: int, repeat: int, preset: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(size), str(repeat), preset],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed runs per size (best is reported)"
    )
    parser.add_argument("--preset", default="ztf")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    load_before = _load()
    rows = [run(size, args.repeat, args.preset) for size in args.sizes]
    load = _load()
    print(
        f"# astrid.simulate.pair, preset {args.preset!r}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, numba threads {rows[0]['threads']}, "
        f"1-min load average {load_before:.1f} before, {load:.1f} after"
    )
    print("# wall time depends on what else runs; CPU time (all threads) is what the work costs")
    print()
    print(
        "| size | best wall (s) | all runs (s) | CPU of best (s) | render (s) | noise (s) | tracemalloc peak (MiB) "
        "| max RSS (MiB) | RSS before (MiB) | stars | galaxies | truth rows |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        st = r["stages_s"]
        render = st.get("render_static", 0) + st.get("render_transients", 0)
        runs = ", ".join(f"{t:.2f}" for t in r["times_s"])
        print(
            f"| {r['size']}² | {r['best_s']:.2f} | {runs} | {r['cpu_s']:.2f} | {render:.2f} | {st.get('noise', 0):.2f} "
            f"| {r['tracemalloc_peak_mib']:.0f} | {r['maxrss_mib']:.0f} | {r['baseline_rss_mib']:.0f} "
            f"| {r['n_stars']} | {r['n_galaxies']} | {r['n_truth']} |"
        )
    print()
    print("Stages of the last timed run (s):")
    for r in rows:
        print(f"  {r['size']}²: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"preset": args.preset, "load_average": [load_before, load], "rows": rows},
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
