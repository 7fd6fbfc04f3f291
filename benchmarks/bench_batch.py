"""Throughput of astrid.batch.process_pairs on this machine: pairs per minute per cluster layout.

Simulates a survey (default 16 pairs of 1024x1024, ZTF preset), then runs the
whole per-pair pipeline (align, background, PSF, ZOGY, detect, label,
triplets, outputs and the shared Zarr store) on local clusters of 1 and 2
workers (and 1 worker with 2 threads) and prints, per layout, the wall time
of the batch, pairs per minute, the speed-up over the first layout, the mean
wall and CPU time of one pair's task, the cores the batch obtained (CPU time
over wall time: on a shared machine, less than the layout asks for) and the
peak memory of a worker process and of the client. Then it times the
client's share alone: appending the per-pair triplets of the last run to a
new shared store, one pair per append and all pairs at once (grouped into
appends as process_pairs groups the pairs that finish while it is busy),
which bounds the pairs per minute one client can take. The cluster start is not timed; each worker
first differences a small pair, so numba kernels are loaded before the clock
starts.

Usage::

    python benchmarks/bench_batch.py                    # 16 pairs of 1024^2, layouts 1x1, 2x1, 1x2
    python benchmarks/bench_batch.py --pairs 16 --size 2048 --layouts 1x1,2x1,4x1

The load average is printed before and after: on a shared machine other
processes take cores, and the numbers are only as good as that.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path


def _warm_worker() -> int:
    """Run on each worker: difference a small pair so imports and numba kernels are loaded."""
    import astrid
    from astrid.diffim import difference
    from astrid.triplets import detect

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = astrid.simulate.pair(size=256, seed=1, n_stars=150)
        detect(difference(sim.image("reference"), sim.image("science"), workers=1), 5.0)
    return os.getpid()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16, help="pairs in the survey (default 16)")
    parser.add_argument(
        "--size", type=int, default=1024, help="image side in pixels (default 1024)"
    )
    parser.add_argument(
        "--layouts",
        default="1x1,2x1,1x2",
        help="comma-separated WORKERSxTHREADS cluster layouts (default 1x1,2x1,1x2)",
    )
    parser.add_argument("--seed", type=int, default=11, help="survey seed (default 11)")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="work folder (default a temporary one, removed at the end)",
    )
    args = parser.parse_args()

    import astrid
    from astrid.batch import PairTask, get_client, process_pairs, run_pair
    from astrid.batch.testing import commit_in_groups
    from astrid.simulate import survey

    layouts = [tuple(int(v) for v in item.lower().split("x")) for item in args.layouts.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="astrid-bench-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.node()}, {_cpu_model()}, {os.cpu_count()} logical CPUs; "
        f"python {platform.python_version()}, astrid {astrid.__version__}"
    )
    print(f"load average before: {os.getloadavg()}")

    start = time.perf_counter()
    manifest = survey(work / "survey", n_fields=args.pairs, size=args.size, seed=args.seed)
    print(
        f"survey: {args.pairs} pairs of {args.size}x{args.size} in {time.perf_counter() - start:.1f} s"
    )
    # Compile (or load) the numba kernels once in this process, so the workers find them in the cache.
    first = next(manifest.pairs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        run_pair(
            PairTask(
                pair=first,
                pair_dir=work / "warm" / first.name,
                threshold=5.0,
                difference_options={},
                threads=1,
                fingerprint="warm",
            )
        )
    print(
        f"first pair in this process (1 thread, numba kernels compiled or loaded): {time.perf_counter() - start:.1f} s"
    )

    rows = []
    for n_workers, threads in layouts:
        out = work / f"run-{n_workers}x{threads}"
        shutil.rmtree(out, ignore_errors=True)
        with get_client(n_workers=n_workers, threads_per_worker=threads) as client:
            client.run(_warm_worker)
            client_cpu = time.process_time()
            report = process_pairs(
                manifest, out, client, threads_per_worker=threads, progress=False
            )
            client_cpu = time.process_time() - client_cpu
            worker_rss = max(client.run(_peak_rss_mib).values())
        if not report.ok:
            print(report.failed)
        task_s = [float(v) for v in report.table["elapsed_s"]]
        cpu_s = [float(v) for v in report.table["cpu_s"]]
        pair_mb = [
            sum(f.stat().st_size for f in (out / name).rglob("*") if f.is_file()) / 1e6
            for name in report.table["pair"]
        ]
        rows.append(
            {
                "layout": f"{n_workers}x{threads}",
                "workers": n_workers,
                "threads": threads,
                "pairs": report.n_processed,
                "wall_s": report.compute_s,
                "pairs_per_min": report.pairs_per_minute,
                "task_s": sum(task_s) / len(task_s),
                "cpu_s": sum(cpu_s) / len(cpu_s),
                # Cores the batch actually got: CPU time of the tasks over the batch's wall time.
                "cores": sum(cpu_s) / report.compute_s,
                # The client checks, commits every pair to the shared store and writes batch.json.
                "client_cpu": client_cpu,
                "worker_rss": worker_rss,
                "pair_mb": sum(pair_mb) / len(pair_mb),
                "store_mb": sum(
                    f.stat().st_size for f in report.triplet_store.rglob("*") if f.is_file()
                )
                / 1e6,
                "candidates": int(sum(report.table["n_candidates"])),
            }
        )

    base = rows[0]["pairs_per_min"]
    print(f"load average after: {os.getloadavg()}")
    print()
    header = (
        f"{'layout':>7} {'workers':>7} {'threads':>7} {'pairs':>5} {'wall s':>8} {'pairs/min':>9} "
        f"{'speed-up':>8} {'task s':>7} {'task CPU-s':>10} {'cores got':>9} {'client CPU-s':>12} {'worker peak MiB':>15}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['layout']:>7} {row['workers']:>7} {row['threads']:>7} {row['pairs']:>5} {row['wall_s']:>8.1f} "
            f"{row['pairs_per_min']:>9.2f} {row['pairs_per_min'] / base:>8.2f} {row['task_s']:>7.1f} "
            f"{row['cpu_s']:>10.1f} {row['cores']:>9.2f} {row['client_cpu']:>12.1f} {row['worker_rss']:>15.0f}"
        )
    print(
        "\ntask s: mean wall time of one pair's task; task CPU-s: mean CPU time of the worker process during it;"
    )
    print(
        "cores got: CPU-s of all tasks / wall s of the batch (what the layout obtained on this machine);"
    )
    print(
        "client CPU-s: CPU time of this process during the batch (checks, store commits, batch.json)."
    )
    # The client appends every pair to the shared store: how many pairs per minute can it take?
    print(
        "\nclient commits alone (per-pair triplet stores of the last run appended to a new shared store):"
    )
    by_name = {pair.name: pair for pair in manifest.pairs()}
    items = [
        (by_name[str(name)], int(n), {})
        for name, n in zip(report.table["pair"], report.table["n_candidates"])
    ]
    for label, groups in (
        ("one pair per append", [[item] for item in items]),
        ("all finished pairs at once, grouped as process_pairs does", [items]),
    ):
        store = work / "commit.zarr"
        shutil.rmtree(store, ignore_errors=True)
        committed: set[str] = set()
        rss_before = _peak_rss_mib()
        start, cpu = time.perf_counter(), time.process_time()
        for group in groups:
            for _, _, error in commit_in_groups(store, committed, "bench", out, group):
                assert error is None, error
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"  {label}: {wall / len(items):.2f} s and {cpu / len(items):.2f} CPU-s per pair "
            f"-> at most {60 * len(items) / wall:.0f} pairs/min; client peak RSS {_peak_rss_mib():.0f} MiB "
            f"(before: {rss_before:.0f})"
        )

    last = rows[-1]
    print(f"\nclient process peak RSS: {_peak_rss_mib():.0f} MiB")
    print(
        f"outputs: {last['pair_mb']:.1f} MB per pair folder (difference.fits, candidates.ecsv, triplets.zarr); "
        f"shared store {last['store_mb']:.1f} MB for {last['candidates']} candidates"
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
