"""Where the cold start goes: numba's compile time, kernel by kernel, during ``astrid warmup``.

Runs ``astrid warmup`` in a fresh process on an empty numba cache
(``NUMBA_CACHE_DIR`` set to a new folder) with a listener on numba's
``"numba:compile"`` events, then again in a second process on the cache the
first one filled. For each kernel (module and name) it prints the number of
specialisations (argument-type signatures) it was compiled for and the time
spent in them, exclusive of the kernels they call (a kernel that calls another
compiles it inside its own event); then the totals, and the whole warmup's wall time on the
empty cache and on the filled one (where numba loads the kernels without compiling: no
compile events).

Run::

    .venv/bin/python benchmarks/bench_compile.py            # the 25 slowest kernels
    .venv/bin/python benchmarks/bench_compile.py --top 0    # every kernel
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, sys, time
from collections import defaultdict
from numba.core import event

stack, rows = [], defaultdict(lambda: {"exclusive": 0.0, "signatures": set()})


class Listener(event.Listener):
    def on_start(self, ev):
        stack.append([time.perf_counter(), 0.0])

    def on_end(self, ev):
        start, children = stack.pop()
        elapsed = time.perf_counter() - start
        if stack:
            stack[-1][1] += elapsed
        dispatcher = ev.data["dispatcher"]
        name = f"{dispatcher.py_func.__module__}.{dispatcher.py_func.__qualname__}"
        rows[name]["exclusive"] += elapsed - children
        rows[name]["signatures"].add(str(ev.data["args"]))


event.register("numba:compile", Listener())
from astrid.cli import main

start = time.perf_counter()
assert main(["warmup"]) == 0
wall = time.perf_counter() - start
out = {name: {"seconds": row["exclusive"], "n": len(row["signatures"])} for name, row in rows.items()}
json.dump({"wall": wall, "kernels": out}, open(sys.argv[1], "w"))
"""


def _run(cache: str, out: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    subprocess.run(
        [sys.executable, "-c", _CHILD, out], env=env, check=True, stdout=subprocess.DEVNULL
    )
    with open(out) as handle:
        return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=25, help="kernels to list (0: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="astrid-compile-") as tmp:
        cold = _run(os.path.join(tmp, "cache"), os.path.join(tmp, "cold.json"))
        warm = _run(os.path.join(tmp, "cache"), os.path.join(tmp, "warm.json"))
    kernels = sorted(cold["kernels"].items(), key=lambda item: -item[1]["seconds"])
    shown = kernels if args.top == 0 else kernels[: args.top]
    print("| kernel | specialisations | compile s |")
    print("|---|---:|---:|")
    for name, row in shown:
        print(f"| {name} | {row['n']} | {row['seconds']:.2f} |")
    total = sum(row["seconds"] for _, row in kernels)
    n_spec = sum(row["n"] for _, row in kernels)
    ours = [row for name, row in kernels if name.startswith("astrid.")]
    print(
        f"\n{len(kernels)} compiled functions ({len(ours)} of AstrID's, the rest numba's own "
        f"implementations of numpy and builtins), {n_spec} specialisations: compile "
        f"{total:.1f} s, of which AstrID's kernels {sum(r['seconds'] for r in ours):.1f} s; "
        f"astrid warmup {cold['wall']:.1f} s on an empty cache, {warm['wall']:.1f} s on the "
        f"filled one ({len(warm['kernels'])} functions compiled there)"
    )


if __name__ == "__main__":
    main()
