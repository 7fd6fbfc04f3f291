"""Export parity on real data: ZTF's braai d6_m7 → int8 Edge TPU model, scored on real ZTF alerts.

Reads the shared data (``$ASTRID_SHARED_DATA`` or ``../shared/data``):
``braai/d6_m7.h5`` and the alerts in ``ztf_alerts/``; keeps the alerts with
stamps and a ``drb`` score from d6_m7; exports d6_m7 to an int8 TFLite model
with a static batch of 1 (the Edge TPU's), calibrated on 200 of those alerts;
and prints how the int8 scores compare with the float model and with the
published ``drb``, on all alerts and on the alerts not used for calibration.

Run::

    python benchmarks/validate_export.py [--out DIR] [--num-calibration 200]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _row(name: str, result: dict, keys: list[str]) -> str:
    cells = []
    for key in keys:
        value = result.get(key)
        if value is None:
            cells.append("—")
        elif isinstance(value, float):
            cells.append(f"{value:.4f}" if abs(value) >= 0.01 else f"{value:.3g}")
        else:
            cells.append(str(value))
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the .tflite files (default: temporary)"
    )
    parser.add_argument("--num-calibration", type=int, default=200)
    args = parser.parse_args(argv)

    from astrid import __version__, braai
    from astrid.alerts import read_ztf
    from astrid.export import preprocess, to_tflite
    from astrid.paths import shared_data
    from astrid.score import parity, score

    weights = shared_data("braai", "d6_m7.h5")
    alerts = shared_data("ztf_alerts")
    if weights is None or alerts is None:
        print(
            "shared data (braai/d6_m7.h5, ztf_alerts/) not found: set ASTRID_SHARED_DATA",
            file=sys.stderr,
        )
        return 2

    import tensorflow as tf

    print(f"AstrID {__version__}, TensorFlow {tf.__version__}, Python {platform.python_version()}")
    model = braai.load_braai(weights)
    ds = read_ztf(alerts)
    keep = np.flatnonzero(np.isfinite(ds["drb"].values) & (ds["drbversion"].values == "d6_m7"))
    ds = ds.isel(candidate=keep)
    drb = ds["drb"].values.astype(np.float64)
    labels = drb >= 0.5
    n = ds.sizes["candidate"]
    print(
        f"alerts with stamps and a d6_m7 drb: {n} ({labels.sum()} with drb >= 0.5, {(~labels).sum()} below)"
    )

    out = args.out or Path(tempfile.mkdtemp(prefix="astrid-validate-export-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = to_tflite(
        model, out / "d6_m7_int8.tflite", representative=ds, num_calibration=args.num_calibration
    )
    t_export = time.perf_counter() - t0
    print(f"\nint8 export in {t_export:.1f} s:")
    print(report)
    print()
    print(report.edgetpu)

    # Which alerts calibrated the int8 ranges (same draw as to_tflite's).
    calibrated = np.zeros(n, bool)
    if n > args.num_calibration:
        calibrated[np.random.default_rng(0).choice(n, size=args.num_calibration, replace=False)] = (
            True
        )
    else:
        calibrated[:] = True
    held_out = ~calibrated

    float_keras = score(ds, model, interpreter="keras").values
    float_fast = score(ds, model).values
    int8 = score(ds, report.path).values
    x = preprocess(ds, "rowwise")
    print(
        f"\npreprocessed input range: [{x.min():.3g}, {x.max():.3g}]; int8 input scale "
        f"{report.input.scale:.4g} covers [{(-128 - report.input.zero_point) * report.input.scale:.3g}, "
        f"{(127 - report.input.zero_point) * report.input.scale:.3g}]"
    )

    keys = [
        "n",
        "max_abs_diff",
        "p99_abs_diff",
        "mean_abs_diff",
        "flipped",
        "auc_int8",
        "aucpr_int8",
        "fnr_int8",
        "fpr_int8",
    ]
    print("\n| comparison | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    # 'int8' columns hold the second argument's metrics (the model under test).
    print(_row("float Keras vs drb (all)", parity(drb, float_keras, labels=labels), keys))
    print(
        _row("float TFLite (score default) vs Keras (all)", parity(float_keras, float_fast), keys)
    )
    print(_row("int8 vs drb (all)", parity(drb, int8, labels=labels), keys))
    print(
        _row(
            "int8 vs drb (held out)",
            parity(drb[held_out], int8[held_out], labels=labels[held_out]),
            keys,
        )
    )
    print(_row("int8 vs float Keras (all)", parity(float_keras, int8, labels=labels), keys))
    print(
        _row(
            "int8 vs float Keras (held out)",
            parity(float_keras[held_out], int8[held_out], labels=labels[held_out]),
            keys,
        )
    )

    vs_float = parity(float_keras, int8, labels=labels)
    print(
        f"\nagainst drb >= 0.5 labels: AUC float {vs_float['auc_float']:.4f} → int8 "
        f"{vs_float['auc_int8']:.4f}; AUCPR {vs_float['aucpr_float']:.4f} → {vs_float['aucpr_int8']:.4f}; "
        f"FNR at 0.5 {vs_float['fnr_float']:.4f} → {vs_float['fnr_int8']:.4f} "
        f"(Δ {vs_float['delta_fnr']:+.4f})"
    )
    print("(drb itself gives FNR 0 and AUC 1 against these labels by construction.)")
    for label, scores in (("float Keras", float_keras), ("int8", int8)):
        worst = int(np.argmax(np.abs(scores - drb)))
        print(
            f"largest |{label} - drb|: candid {int(ds['candid'].values[worst])} "
            f"(stamp {ds['stamp_shape'].values[worst]}): drb {drb[worst]:.4f}, float {float_keras[worst]:.4f}, "
            f"int8 {int8[worst]:.4f}"
        )
    print(f"\nfiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
