"""Real/bogus scoring throughput: Keras vs TFLite float32 vs TFLite int8, next to the compute floor.

Prints one table for braai's VGG6 on this machine:

* Keras 3 (TensorFlow backend): ``predict_on_batch`` and ``model.predict``;
* TFLite float32 (LiteRT, XNNPACK) with a dynamic batch, invoked 1, 16 and
  256 triplets at a time;
* TFLite int8: the Edge TPU model (static batch 1) and a dynamic-batch int8 model;
* :func:`astrid.score.score` end to end from raw stamps (preprocessing
  included) for a Keras model (default path and ``interpreter="keras"``)
  and for the int8 ``.tflite`` files;
* :func:`astrid.braai.preprocess` alone;

with 1 and 2 threads. Each row runs in its own process, so its peak resident
memory (VmHWM) is its own; rows that use only LiteRT never import TensorFlow.
The weights are ZTF's d6_m7 when the shared data is present (else seeded
random ones; speed does not depend on them).

Two rates per row: triplets per wall-clock second (best of ``--repeats``
runs; what a user sees, and what other processes on a shared machine slow
down) and triplets per CPU-second of the process (all its threads; nearly
immune to other processes, so the better measure of the code itself on a
busy machine).

The floor: VGG6 costs a fixed number of floating-point operations per
triplet (computed from the layer shapes, multiply and add counted
separately); at ``--peak-gflops`` per core (AVX-512: 2 FMA units × 16
float32 lanes × 2 flop × ~2.5 GHz ≈ 160 GFLOP/s) one core cannot exceed
``peak / flop`` float32 triplets per second. int8 kernels with VNNI are not
bound by that float32 peak.

Run::

    python benchmarks/bench_score.py [--n 1024] [--repeats 3] [--peak-gflops 160]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = [
    # (name, kind, batch: per Keras call / per TFLite invoke, threads to try, note)
    ("Keras predict_on_batch", "keras_pob", 256, (1, 2), "TF intra-op threads"),
    ("Keras model.predict", "keras_predict", 256, (1, 2), "TF intra-op threads"),
    ("TFLite float32, dynamic batch", "tflite:f32_dynamic", 1, (1, 2), "XNNPACK"),
    (
        "TFLite float32, dynamic batch",
        "tflite:f32_dynamic",
        16,
        (1, 2),
        "XNNPACK; score()'s invoke batch",
    ),
    ("TFLite float32, dynamic batch", "tflite:f32_dynamic", 256, (1, 2), "XNNPACK"),
    ("TFLite int8, Edge TPU model", "tflite:int8_b1", 1, (1, 2), "static batch 1"),
    ("TFLite int8, dynamic batch", "tflite:int8_dynamic", 16, (1, 2), ""),
    ("TFLite int8, dynamic batch", "tflite:int8_dynamic", 256, (1, 2), ""),
    (
        "score(), Keras model (default path)",
        "score_keras",
        256,
        (1, 2),
        "raw stamps in; float32 TFLite in memory",
    ),
    (
        "score(), Keras model, interpreter='keras'",
        "score_keras_forced",
        256,
        (1, 2),
        "raw stamps in",
    ),
    ("score(), int8 Edge TPU .tflite", "score:int8_b1", 256, (1, 2), "raw stamps in"),
    ("score(), int8 dynamic .tflite", "score:int8_dynamic", 256, (1, 2), "raw stamps in"),
    ("braai.preprocess only (rowwise)", "preprocess", 256, (1,), "numba, single-threaded"),
]


def vgg6_flops(model) -> tuple[int, list[tuple[str, int]]]:
    """Floating-point operations per triplet (2 per multiply-add) of Conv2D and Dense layers."""
    per_layer = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            per_layer.append((layer.name, 2 * h * w * kh * kw * cin * cout + h * w * cout))
        elif kind == "Dense":
            nin, nout = layer.kernel.shape
            per_layer.append((layer.name, 2 * nin * nout + nout))
    return sum(f for _, f in per_layer), per_layer


def cpu_description() -> dict:
    info = {"model": platform.processor() or "?", "cores": os.cpu_count(), "flags": set()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Model name":
            info["model"] = value
        elif key == "CPU(s)":
            info["cores"] = int(value)
        elif key == "Flags":
            info["flags"] = set(value.split())
    return info


# --------------------------------------------------------------------------- #
# child: one measurement
# --------------------------------------------------------------------------- #


def _peak_rss_mib() -> float:
    # VmHWM is this process's own peak; ru_maxrss survives exec and would
    # report the parent's (TensorFlow-loaded) peak.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time(fn, x, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU time (all threads) of ``fn(x)`` over ``repeats`` runs."""
    fn(x[: min(len(x), 64)])  # warm-up: tracing, allocation, numba compilation
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn(x)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def run_row(kind: str, batch: int, threads: int, workdir: Path, n: int, repeats: int) -> dict:
    """Time one row in this process; TensorFlow is imported only by the Keras rows."""
    raw = np.load(workdir / "raw.npy")[:n]
    x = np.load(workdir / "preprocessed.npy")[:n]

    if kind.startswith("tflite:"):
        from astrid.export import TFLiteRunner

        runner = TFLiteRunner(
            workdir / f"{kind.split(':')[1]}.tflite", num_threads=threads, invoke_batch=batch
        )

        def fn(data):
            for start in range(0, len(data), 256):
                runner(data[start : start + 256])

        data = x
    elif kind.startswith("score:"):
        from astrid.score import score

        target = str(workdir / f"{kind.split(':')[1]}.tflite")

        def fn(data):
            return score(data, target, batch_size=batch, num_threads=threads)

        data = raw
    elif kind == "preprocess":
        from astrid import braai

        def fn(data):
            for start in range(0, len(data), batch):
                braai.preprocess(data[start : start + batch], norm="rowwise")

        data = raw
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        model = keras.saving.load_model(workdir / "model.keras", compile=False)
        if kind == "keras_pob":

            def fn(data):
                for start in range(0, len(data), batch):
                    model.predict_on_batch(data[start : start + batch])

            data = x
        elif kind == "keras_predict":

            def fn(data):
                model.predict(data, batch_size=batch, verbose=0)

            data = x
        else:
            from astrid.score import score

            interpreter = "keras" if kind == "score_keras_forced" else None

            def fn(data):
                return score(
                    data, model, batch_size=batch, num_threads=threads, interpreter=interpreter
                )

            data = raw
    wall, cpu = _time(fn, data, repeats)
    return {
        "rate": len(data) / wall,
        "cpu_rate": len(data) / cpu,
        "seconds": wall,
        "count": len(data),
        "peak_rss_mib": _peak_rss_mib(),
    }


# --------------------------------------------------------------------------- #
# parent: models, data, table
# --------------------------------------------------------------------------- #


def prepare(workdir: Path, n: int) -> tuple[int, list[tuple[str, int]], str]:
    import keras

    from astrid import braai
    from astrid.export import to_tflite
    from astrid.paths import shared_data

    weights = shared_data("braai", "d6_m7.h5")
    if weights is not None:
        model, source = braai.load_braai(weights), "ZTF braai d6_m7 weights"
    else:
        keras.utils.set_random_seed(0)
        model, source = braai.vgg6(), "seeded random weights (shared data absent)"
    model.save(workdir / "model.keras")
    rng = np.random.default_rng(0)
    raw = rng.normal(100.0, 10.0, size=(n, 63, 63, 3)).astype(np.float32)
    raw[:, 29:34, 29:34, :] += rng.uniform(0, 500, size=(n, 1, 1, 3)).astype(np.float32)
    x = braai.preprocess(raw, norm="rowwise")
    np.save(workdir / "raw.npy", raw)
    np.save(workdir / "preprocessed.npy", x)
    calibration = raw[:200]
    to_tflite(model, workdir / "f32_dynamic.tflite", quantize=None, batch_size=None)
    to_tflite(model, workdir / "int8_b1.tflite", representative=calibration)
    to_tflite(model, workdir / "int8_dynamic.tflite", representative=calibration, batch_size=None)
    flops, per_layer = vgg6_flops(model)
    return flops, per_layer, source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="triplets per timed run (default 1024)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-gflops", type=float, default=160.0, help="float32 peak per core")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.row:  # child process
        result = run_row(args.row, args.batch, args.threads[0], args.workdir, args.n, args.repeats)
        print("RESULT " + json.dumps(result))
        return 0

    cpu = cpu_description()
    with tempfile.TemporaryDirectory(prefix="astrid-bench-score-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        flops, per_layer, source = prepare(workdir, args.n)
        t_prepare = time.perf_counter() - t0
        import ai_edge_litert
        import keras
        import tensorflow as tf

        vnni = sorted(f for f in cpu["flags"] if "vnni" in f)
        print(
            f"machine: {cpu['model']}, {cpu['cores']} cores; AVX-512: {'avx512f' in cpu['flags']}; "
            f"VNNI: {', '.join(vnni) if vnni else 'no'}"
        )
        print(
            f"software: Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
            f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}, numpy {np.__version__}"
        )
        try:
            load = os.getloadavg()
            print(
                f"load average at start: {load[0]:.1f} (1 min), {load[1]:.1f} (5 min) on {cpu['cores']} cores"
            )
        except OSError:
            pass
        print(
            f"model: braai VGG6, {source}; {args.n} triplets per run, best of {args.repeats} runs; "
            f"models prepared in {t_prepare:.1f} s"
        )
        print(
            "\nVGG6 cost per 63x63x3 triplet: "
            + ", ".join(f"{name} {f / 1e6:.2f}" for name, f in per_layer)
            + f" → {flops / 1e6:.1f} MFLOP"
        )
        per_core = args.peak_gflops * 1e9 / flops
        print(
            f"floor at {args.peak_gflops:.0f} GFLOP/s per core: {per_core:,.0f} triplets/s per core "
            f"({flops / (args.peak_gflops * 1e9) * 1e6:.0f} µs per triplet per core)\n"
        )

        print(
            "| path | batch | threads | triplets/s (wall) | triplets per CPU-s | CPU-s vs floor "
            "| peak RSS (MiB) | note |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        results = []
        for name, kind, batch, thread_counts, note in ROWS:
            for threads in thread_counts:
                if threads not in args.threads:
                    continue
                cmd = [
                    sys.executable,
                    __file__,
                    "--row",
                    kind,
                    "--batch",
                    str(batch),
                    "--threads",
                    str(threads),
                    "--workdir",
                    str(workdir),
                    "--n",
                    str(args.n),
                    "--repeats",
                    str(args.repeats),
                ]
                env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    print(
                        f"| {name} | {batch} | {threads} | failed | | | | {proc.stderr.strip()[-200:]} |"
                    )
                    continue
                r = json.loads(lines[-1][7:])
                results.append((name, batch, threads, r))
                print(
                    f"| {name} | {batch} | {threads} | {r['rate']:,.0f} | {r['cpu_rate']:,.0f} "
                    f"| {100 * r['cpu_rate'] / per_core:.0f}% | {r['peak_rss_mib']:,.0f} | {note} |",
                    flush=True,
                )
        try:
            load = os.getloadavg()
            print(f"\nload average at end: {load[0]:.1f} (1 min), {load[1]:.1f} (5 min)")
        except OSError:
            pass

    models = [item for item in results if not item[0].startswith("braai.preprocess")]
    if models:
        for label, key in (("wall clock", "rate"), ("per CPU-second", "cpu_rate")):
            best = max(models, key=lambda item: item[3][key])
            print(
                f"fastest ({label}): {best[0]}, batch {best[1]}, {best[2]} thread(s): "
                f"{best[3][key]:,.0f} triplets/s"
            )
        for name, _, threads, r in models:
            if name.startswith("score(), Keras model (default"):
                print(
                    f"score() default for a Keras model, {threads} thread(s): {r['rate']:,.0f} triplets/s wall, "
                    f"{r['cpu_rate']:,.0f} per CPU-second"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
