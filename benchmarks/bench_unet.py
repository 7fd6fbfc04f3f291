"""Throughput of the anomaly U-Net on this CPU: training tiles/s and inference pixels/s.

Simulates ``--fields`` ZTF-like 1024² pairs, differences them with ZOGY and
cuts ``--tiles-per-field`` 64×64 training tiles from each
(:func:`astrid.anomaly.sample_tiles`), then

- **training**: ``--repeat`` runs of :func:`astrid.anomaly.train_unet`
  (seeded, deterministic ops, dihedral augmentation, batch 16, no
  validation set, so an epoch is training steps only) of ``--epochs``
  epochs each; the first epoch of each run is left out (it traces the
  training step). Prints the median tiles/s and Mpx/s over the remaining
  epochs, with their range.
- **inference**: :func:`astrid.anomaly.anomaly_map` over the four input
  planes of one 1024² field and of a 2048² mosaic of it (tiles of 512 px
  plus the 32 px overlap, batch 4: the defaults), one warm-up call per
  shape, then the median of ``--repeat-map`` calls; Mpx/s = pixels / median
  seconds.

The machine (``lscpu`` model name, CPUs) and the 1-minute load average
before and after are printed with the numbers: the cores may be shared.

Run::

    python benchmarks/bench_unet.py [--fields 2] [--tiles-per-field 192] [--epochs 4] [--repeat 3] [--repeat-map 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or platform.machine()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--tiles-per-field", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repeat-map", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import astrid
    from astrid.anomaly import (
        Field,
        UNetTrainingOptions,
        anomaly_map,
        sample_tiles,
        train_unet,
        unet_inputs,
    )

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; 1-minute load {load():.1f} at the start")
    started = time.perf_counter()
    fields = []
    for seed in range(3000, 3000 + args.fields):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pair = astrid.simulate.pair(size=1024, seed=seed, preset="ztf", n_supernovae=30)
            fields.append(Field.from_pair(pair, name=f"SIM{seed}"))
    tiles = sample_tiles(fields, tile=64, n_per_field=args.tiles_per_field, seed=args.seed)
    n = tiles[0].shape[0]
    print(
        f"{n} training tiles of 64² from {args.fields} simulated 1024² fields ({time.perf_counter() - started:.0f} s)"
    )

    rates, model = [], None
    for run in range(args.repeat):
        result = train_unet(
            tiles, UNetTrainingOptions(epochs=args.epochs, patience=None, seed=args.seed + run)
        )
        seconds = result.history["epoch_seconds"][1:]
        rates.extend(n / s for s in seconds)
        model = result.model
        print(
            f"  run {run + 1}: epochs {', '.join(f'{s:.2f}' for s in result.history['epoch_seconds'])} s "
            f"(first: tracing)"
        )
    rates = np.asarray(rates)
    train = {
        "tiles_per_s": float(np.median(rates)),
        "mpx_per_s": float(np.median(rates)) * 64 * 64 / 1e6,
        "min": float(rates.min()),
        "max": float(rates.max()),
        "n_epochs": int(rates.size),
    }
    print(
        f"training: median {train['tiles_per_s']:.0f} tiles/s of 64² = {train['mpx_per_s']:.2f} Mpx/s "
        f"(range {train['min']:.0f}-{train['max']:.0f} tiles/s over {train['n_epochs']} epochs, batch 16, "
        f"augmentation, deterministic ops)"
    )

    planes = unet_inputs(fields[0].result)
    inference = {}
    for name, image in (("1024²", planes), ("2048²", np.tile(planes, (2, 2, 1)))):
        anomaly_map(model, image)  # warm-up: the first call of a shape builds the graph
        times = []
        for _ in range(args.repeat_map):
            t = time.perf_counter()
            anomaly_map(model, image)
            times.append(time.perf_counter() - t)
        median = float(np.median(times))
        pixels = image.shape[0] * image.shape[1]
        inference[name] = {
            "seconds": median,
            "mpx_per_s": pixels / median / 1e6,
            "min": min(times),
            "max": max(times),
        }
        print(
            f"inference {name}: median {median:.2f} s = {pixels / median / 1e6:.2f} Mpx/s "
            f"(range {min(times):.2f}-{max(times):.2f} s over {args.repeat_map} calls; tiles 512 + 32 overlap, batch 4)"
        )
    print(f"1-minute load {load():.1f} at the end; total {time.perf_counter() - started:.0f} s")
    return {"train": train, "inference": inference}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
