"""Training throughput of braai's VGG6 with :func:`astrid.braai.train` on this CPU.

Trains on ``--n`` synthetic triplets (10,000 by default, as in braai's
tutorial, which reports about 40 s per epoch on a laptop) for a few epochs
in several configurations and prints, per configuration, the median epoch
time (first epoch excluded: it includes tracing the training step),
triplets per second and that rate relative to braai's, the time a 10k epoch
takes at that rate, the one-off preprocessing time and the process's peak
resident memory. Synthetic stamps (noise plus a PSF or a spike) cost the
same to train on as real ones: the network sees only 63×63×3 floats.

Each configuration runs in its own process, so peak memory and TensorFlow's
global state (deterministic ops, XLA caches) do not leak between rows; the
configurations are run in ``--repeat`` interleaved rounds and the median
epoch time is reported with its range, because other processes share the
cores and their load comes and goes.

Run::

    python benchmarks/bench_train.py [--n 10000] [--epochs 3] [--repeat 2] [--configs default,jit_compile,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

#: braai's tutorial: about 40 s per epoch for 10,000 triplets on a laptop.
BRAAI_PER_S = 10_000 / 40.0

# TrainConfig fields that differ from the default, per configuration.
CONFIGS = {
    "default": {},  # precision "auto": mixed bfloat16 on CPUs with AMX, float32 elsewhere
    "float32": {"precision": "float32"},
    "mixed_bfloat16": {"precision": "mixed_bfloat16"},
    "no-augment": {"augment": False},
    "not-deterministic": {"deterministic": False},
    "batch-128": {"batch_size": 128},
    "jit_compile": {
        "jit_compile": True,
        "deterministic": False,
    },  # Keras skips XLA under determinism
}


def synthetic(n: int, seed: int = 0):
    import numpy as np

    from astrid.schema import new_triplet_dataset

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:63, :63] - 31
    blob = np.exp(-0.5 * (xx**2 + yy**2) / 1.6**2).astype(np.float32)
    stamps = rng.normal(0.0, 1.0, size=(n, 63, 63, 3)).astype(np.float32)
    labels = (rng.random(n) < 0.5).astype(np.int8)
    amplitude = rng.uniform(3, 20, n).astype(np.float32)
    real = labels == 1
    stamps[real, :, :, 0] += amplitude[real, None, None] * blob
    stamps[real, :, :, 2] += amplitude[real, None, None] * blob
    bogus = np.flatnonzero(~real)
    stamps[bogus, 31, 31, 0] += 3 * amplitude[bogus]
    stamps[bogus, 31, 31, 2] += 3 * amplitude[bogus]
    fields = np.array([f"f{i % 10}" for i in range(n)], dtype=object)
    return new_triplet_dataset(stamps, {"label": labels, "field": fields})


def child(config: str, n: int, epochs: int) -> None:
    """Run one configuration; print one JSON line."""
    import resource

    import numpy as np

    from astrid.braai import TrainConfig, preprocess, train

    ds = synthetic(n)
    t0 = time.perf_counter()
    preprocess(ds)
    prep = time.perf_counter() - t0
    # No validation: the number is training throughput; patience is then unused.
    result = train(ds, config=TrainConfig(epochs=epochs, split=None, seed=0, **CONFIGS[config]))
    seconds = result.history["epoch_seconds"]
    steady = seconds[1:] if len(seconds) > 1 else seconds
    epoch = float(np.median(steady))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "config": config,
                "first_epoch_s": seconds[0],
                "epoch_s": epoch,
                "per_s": n / epoch,
                "preprocess_s": prep,
                "peak_mib": peak,
                "precision": result.card["parameters"]["precision"],
            }
        )
    )


def _run(config: str, n: int, epochs: int) -> dict | None:
    out = subprocess.run(
        [sys.executable, __file__, "--child", config, "--n", str(n), "--epochs", str(epochs)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        print(f"# {config} failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="rounds over all configurations, interleaved, so that a burst of load from other "
        "processes does not land on one configuration only",
    )
    parser.add_argument(
        "--configs",
        default="default,float32,mixed_bfloat16,no-augment,not-deterministic",
        help=f"comma-separated, from {list(CONFIGS)}",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.n, args.epochs)
        return 0
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}", file=sys.stderr)
        return 2

    import numpy as np
    import tensorflow as tf

    import astrid

    print(
        f"# braai VGG6 training throughput: {args.n} synthetic 63x63x3 triplets, {args.epochs} epochs, "
        f"{args.repeat} interleaved rounds"
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, astrid {astrid.__version__}, "
        f"TensorFlow {tf.__version__}"
    )
    print(
        f"# braai tutorial reference: ~40 s per epoch for 10k triplets on a laptop = {BRAAI_PER_S:.0f} triplets/s"
    )
    rows: dict[str, list[dict]] = {c: [] for c in configs}
    for round_ in range(args.repeat):
        for config in configs:
            load = os.getloadavg()[0]
            row = _run(config, args.n, args.epochs)
            if row is not None:
                row["load"] = load
                rows[config].append(row)
                print(
                    f"# round {round_ + 1} {config}: {row['epoch_s']:.1f} s per epoch (load average {load:.1f})",
                    flush=True,
                )
    header = (
        f"{'configuration':<18} {'epoch s':>8} {'range s':>11} {'triplets/s':>11} {'vs braai':>8} "
        f"{'10k epoch s':>11} {'1st epoch s':>11} {'preprocess s':>12} {'peak MiB':>9} precision"
    )
    print(header)
    print("-" * len(header))
    for config, runs in rows.items():
        if not runs:
            print(f"{config:<18} failed")
            continue
        epoch = float(np.median([r["epoch_s"] for r in runs]))
        low, high = min(r["epoch_s"] for r in runs), max(r["epoch_s"] for r in runs)
        per_s = args.n / epoch
        print(
            f"{config:<18} {epoch:>8.1f} {low:>5.1f}–{high:<5.1f} {per_s:>11.0f} {per_s / BRAAI_PER_S:>7.1f}x "
            f"{10_000 / per_s:>11.1f} {np.median([r['first_epoch_s'] for r in runs]):>11.1f} "
            f"{np.median([r['preprocess_s'] for r in runs]):>12.2f} {max(r['peak_mib'] for r in runs):>9.0f} {runs[0]['precision']}"
        )
    loads = [r["load"] for runs in rows.values() for r in runs]
    print(
        f"# load average during the runs: {min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} CPUs "
        "(other processes share these cores; compare rows of one run only)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
