"""Cold start: the first call of each public step in a fresh process, on a cold and a warm cache.

Each measurement runs in a new Python process. "cold" gives it an empty numba
cache (``NUMBA_CACHE_DIR`` set to a new folder), so every kernel compiles on
first use, as on a fresh install; "warm" runs again on the cache the cold run
filled, so kernels are only loaded; "after warmup" first runs ``astrid warmup``
on an empty cache (timed on its own) and then the steps. The steps:
``simulate.pair(1024)``, ``difference()`` twice (the second shows what a
warm process costs), ``detect()``, ``make_triplets()``.

    python benchmarks/bench_cold.py [--repeat 3]

Prints one table of medians (and min-max) over the repeats, in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import json, time
t0 = time.perf_counter()
import astrid
times = {"import astrid": time.perf_counter() - t0}
def timed(name, fn):
    t = time.perf_counter(); out = fn(); times[name] = time.perf_counter() - t; return out
pair = timed("simulate.pair(1024)", lambda: astrid.simulate.pair(size=1024, seed=1))
result = timed("difference() first", lambda: astrid.difference(pair.reference, pair.science))
timed("difference() second", lambda: astrid.difference(pair.reference, pair.science))
cands = timed("detect()", lambda: astrid.detect(result, threshold=5.0))
timed("make_triplets()", lambda: astrid.make_triplets(result, cands))
times["total to first triplets"] = sum(v for k, v in times.items() if k != "difference() second")
print("TIMES" + json.dumps(times))
"""


def _child(cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("TIMES"))
    return json.loads(line[5:])


def _warmup(cache: str) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "astrid.cli", "warmup", "--quiet"], env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, dict[str, list[float]]] = {"cold": {}, "warm": {}, "after warmup": {}}
    warmups = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            for mode in ("cold", "warm"):
                for key, value in _child(cache).items():
                    rows[mode].setdefault(key, []).append(value)
        with tempfile.TemporaryDirectory() as cache:
            warmups.append(_warmup(cache))
            for key, value in _child(cache).items():
                rows["after warmup"].setdefault(key, []).append(value)
    print(
        f"# cold start, {args.repeat} runs each; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"astrid warmup on an empty cache: median {statistics.median(warmups):.1f} s "
        f"(min {min(warmups):.1f}, max {max(warmups):.1f})"
    )
    keys = list(rows["cold"])
    print(f"| step | {' | '.join(rows)} |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
        cells = []
        for mode in rows:
            values = rows[mode][key]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})")
        print(f"| {key} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
