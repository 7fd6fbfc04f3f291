"""Benchmark: reading alert packets (astrid.alerts.read_ztf / read_alerts).

Run:  python benchmarks/bench_alerts.py [--repeat 5]
Prints one row per input: files, records, distinct alerts, size on disk,
and the median (min-max) wall time of ``--repeat`` runs after one warm-up
(the rows take turns in each round), with the median throughput in records
per second, and the median CPU time of this process with records per
CPU-second (the reader is single-threaded, so on a loaded machine the CPU
figures are the robust ones).

Inputs: the shared ZTF alerts as shipped (Avro, null codec, and Parquet),
their Avro files alone, and the same Avro records re-encoded by this script
into a temporary folder with each codec fastavro can write here (snappy,
deflate, bzip2, xz; zstandard and lz4 where their packages are installed),
one file per original file. Needs ../shared/data (or $ASTRID_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import fastavro

from astrid.alerts import AVRO_CODECS, read_alerts, read_ztf
from astrid.paths import shared_data


def _writable(codec: str) -> bool:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "probe", "fields": [{"name": "x", "type": "int"}]}
    )
    try:
        fastavro.writer(io.BytesIO(), schema, [{"x": 1}], codec=codec)
    except ValueError:  # the codec's package is not installed
        return False
    return True


def _reencode(files: list[Path], codec: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for i, path in enumerate(files):
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            schema, records = reader.writer_schema, list(reader)
        copy = out / f"{i:04d}_{path.name}"
        with open(copy, "wb") as fh:
            fastavro.writer(fh, schema, records, codec=codec)
        copies.append(copy)
    return copies


def _size(paths) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 2**20


def _report(label: str, ds, paths, times: list[float], cpu: list[float]) -> None:
    median = statistics.median(times)
    cpu_median = statistics.median(cpu)
    n = ds.attrs["n_packets"]
    print(
        f"{label:<34s} {ds.attrs['n_files']:6d} {n:8d} {ds.attrs['n_distinct']:9d} {_size(paths):8.1f}"
        f" {median:8.2f} ({min(times):.2f}-{max(times):.2f}) {n / median:10.0f} {cpu_median:7.2f} {n / cpu_median:10.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per row (default 5)")
    args = parser.parse_args()
    folder = shared_data("ztf_alerts")
    if folder is None:
        raise SystemExit(
            "shared ZTF alerts (../shared/data/ztf_alerts or $ASTRID_SHARED_DATA) are not present"
        )
    everything = sorted(p for p in folder.rglob("*") if p.suffix in (".avro", ".parquet"))
    avro = [p for p in everything if p.suffix == ".avro"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("shared folder, read_ztf", lambda: read_ztf(folder), everything),
            ("shared folder, read_alerts(auto)", lambda: read_alerts(folder), everything),
            ("shared Avro files (null codec)", lambda: read_ztf(avro), avro),
        ]
        for codec in AVRO_CODECS:
            if codec != "null" and _writable(codec):
                copies = _reencode(avro, codec, Path(tmp) / codec)
                rows.append(
                    (f"shared Avro re-encoded, {codec}", lambda c=copies: read_ztf(c), copies)
                )
        results = [func() for _, func, _ in rows]  # warm-up (imports, page cache)
        times: list[list[float]] = [[] for _ in rows]
        cpu: list[list[float]] = [[] for _ in rows]
        # Rows take turns in every round, so a change in machine load hits them all alike.
        for _ in range(args.repeat):
            for i, (_, func, _) in enumerate(rows):
                start, start_cpu = time.perf_counter(), time.process_time()
                func()
                times[i].append(time.perf_counter() - start)
                cpu[i].append(time.process_time() - start_cpu)
        print(
            f"{'input':<34s} {'files':>6s} {'records':>8s} {'distinct':>9s} {'MiB':>8s} "
            f"{'median s (min-max)':>19s} {'records/s':>10s} {'CPU s':>7s} {'rec/CPU-s':>10s}"
        )
        for (label, _, paths), ds, row_times, row_cpu in zip(rows, results, times, cpu):
            _report(label, ds, paths, row_times, row_cpu)


if __name__ == "__main__":
    main()
