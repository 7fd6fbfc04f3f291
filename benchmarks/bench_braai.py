"""Benchmark: ZTF alert reading, braai preprocessing and d6_m7 inference.

Run:  python benchmarks/bench_braai.py
Prints a table of wall time and peak traced memory (tracemalloc) per step.
Needs ../shared/data (or $ASTRID_SHARED_DATA) for the alert and model rows.
"""

from __future__ import annotations

import gzip
import io
import time
import tracemalloc
import warnings

import numpy as np
from astropy.io import fits

from astrid import alerts
from astrid.braai import load_braai, predict, preprocess
from astrid.paths import shared_data


def _astropy_stamp(raw: bytes) -> np.ndarray:
    """One FITS cutout read with astropy.io.fits (the slow path alerts.decode_stamp avoids)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        with fits.open(io.BytesIO(raw), memmap=False) as hdul:
            return np.array(hdul[0].data, dtype=np.float32)


def measure(label, func, repeat=3):
    """Best wall time of ``repeat`` runs, then one traced run for peak memory."""
    result = func()  # warm-up: numba cache load, TF graph tracing
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    # tracemalloc slows Python-heavy code, so it gets a run of its own
    tracemalloc.start()
    func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{label:<48s} {best:9.3f} s {peak / 2**20:10.1f} MiB")
    return result


def main():
    print(f"{'step':<48s} {'time':>11s} {'peak mem':>14s}")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, 63, 63, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.01] = np.nan
    measure("preprocess 10^4 triplets, rowwise", lambda: preprocess(x, "rowwise"))
    measure("preprocess 10^4 triplets, l2", lambda: preprocess(x, "l2"))
    folder = shared_data("ztf_alerts")
    if folder is None:
        print("shared data absent: alert and model rows skipped")
        return
    ds = measure(
        "read_ztf shared alerts (1,044 triplets)", lambda: alerts.read_ztf(folder), repeat=1
    )
    import fastavro

    raws = []
    for path in sorted(folder.rglob("*.avro"))[:200]:
        with open(path, "rb") as fh:
            for record in fastavro.reader(fh):
                for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
                    cutout = record.get(key)
                    blob = cutout.get("stampData") if isinstance(cutout, dict) else cutout
                    if blob:
                        raws.append(gzip.decompress(blob))
    n = len(raws)
    # decode_stamp parses ZTF's plain float FITS itself; astropy is what it replaces
    measure(f"decode {n} cutouts, fast FITS path", lambda: [alerts.decode_stamp(r) for r in raws])
    measure(f"decode {n} cutouts, astropy.io.fits", lambda: [_astropy_stamp(r) for r in raws])
    model = load_braai(shared_data("braai", "d6_m7.h5"))
    keep = (ds["drbversion"].values == "d6_m7") & np.isfinite(ds["drb"].values)
    sel = ds.isel(candidate=np.flatnonzero(keep))
    scores = measure(f"predict d6_m7 on {int(keep.sum())} alerts", lambda: predict(model, sel))
    delta = np.abs(scores - sel["drb"].values)
    print(
        f"\nd6_m7 vs alert drb: {np.mean(delta < 1e-3):.2%} within 1e-3, "
        f"median |d| {np.median(delta):.2e}, max |d| {delta.max():.3f}"
    )


if __name__ == "__main__":
    main()
