"""Train the anomaly U-Net on simulated fields and compare it with the other methods on held-out fields.

Three disjoint sets of simulated 1024² ZTF-like pairs (different seeds):
training fields (U-Net tiles, baseline fits), validation fields (U-Net early
stopping, the U-Net's region level and every method's threshold) and test
fields (the table). The protocol, fixed before any test number is seen:

- 16 validation fields (seeds base+100..), 16 test fields (seeds
  base+300..; base+200.. were the test fields of an earlier protocol,
  looked at, so no longer held out);
- every threshold: the highest score at which the one-sided 95 %
  Clopper–Pearson lower bound of the validation recall is >= 0.9
  (``--confidence``; ``--confidence 0`` drops the margin);
- the U-Net's region level: the one of 0.5, 0.7, 0.9, 0.95, 0.98 with the
  best median footprint IoU on the validation fields (``--level auto``).

Prints:

- U-Net training throughput (tiles/s, pixels/s) and inference pixels/s;
- the :func:`astrid.anomaly.evaluate_methods` table on the test fields.

Usage::

    python benchmarks/validate_anomaly.py                 # the defaults (~20-30 min on 2 shared cores)
    python benchmarks/validate_anomaly.py --quick         # tiny smoke run
    python benchmarks/validate_anomaly.py --out runs/anomaly   # also model, card, table, record, figure
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import astrid
from astrid.anomaly import (
    Field,
    IsolationForestBaseline,
    OneClassSVMBaseline,
    UNetTrainingOptions,
    anomaly_map,
    baseline_method,
    braai_method,
    choose_region_level,
    classic_threshold_method,
    evaluate_methods,
    sample_tiles,
    train_unet,
    unet_inputs,
    unet_method,
    zogy_threshold_method,
)
from astrid.anomaly.unet import _check_tiles, _tiles_hash
from astrid.triplets import detect, label_candidates


def make_fields(seeds, size, n_supernovae, classic):
    fields = []
    for seed in seeds:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # PSF-star shortfalls on small fields are reported, not fatal here
            pair = astrid.simulate.pair(
                size=size, seed=int(seed), preset="ztf", n_supernovae=n_supernovae
            )
            fields.append(Field.from_pair(pair, name=f"SIM{seed:04d}", classic=classic))
    return fields


def labelled_detections(fields, threshold):
    tables, labels = [], []
    for f in fields:
        c = label_candidates(
            detect(f.result, threshold=threshold, negative=True), f.truth, radius=3.0
        )
        tables.append(c)
        labels.append(np.asarray(c["label"], int))
    from astropy.table import vstack

    return vstack(tables, metadata_conflicts="silent"), np.concatenate(labels)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=16)
    parser.add_argument(
        "--test-offset",
        type=int,
        default=300,
        help="test seeds start at base + this (200 was the earlier, looked-at test set)",
    )
    parser.add_argument("--n-supernovae", type=int, default=30)
    parser.add_argument("--tiles-per-field", type=int, default=128)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-recall", type=float, default=0.9)
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="thresholds: the validation recall's Clopper-Pearson lower bound at this confidence "
        "must reach --target-recall (0: the validation recall itself)",
    )
    parser.add_argument(
        "--level",
        default="auto",
        help="U-Net region level, or 'auto' (chosen on validation fields)",
    )
    parser.add_argument(
        "--braai",
        default="auto",
        help="braai .h5/.keras model, 'auto' (ZTF d6_m7 from shared data) or 'none'",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="a U-Net trained by an earlier run of this script with the same options "
        "(<out>/unet_anomaly.keras): evaluate it instead of training again",
    )
    parser.add_argument(
        "--out", default=None, help="folder for the model, its card, the table and a run record"
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.n_train, args.n_val, args.n_test, args.tiles_per_field, args.epochs = (
            512,
            2,
            1,
            1,
            32,
            2,
        )

    started = time.perf_counter()
    base = 1000 * (args.seed + 1)
    train_fields = make_fields(
        range(base, base + args.n_train), args.size, args.n_supernovae, False
    )
    val_fields = make_fields(
        range(base + 100, base + 100 + args.n_val), args.size, args.n_supernovae, True
    )
    test_base = base + args.test_offset
    test_fields = make_fields(
        range(test_base, test_base + args.n_test), args.size, args.n_supernovae, True
    )
    print(
        f"simulated and differenced {len(train_fields) + len(val_fields) + len(test_fields)} fields of "
        f"{args.size}² in {time.perf_counter() - started:.0f} s"
    )

    # U-Net
    tiles = sample_tiles(
        train_fields, tile=args.tile, n_per_field=args.tiles_per_field, seed=args.seed
    )
    val_tiles = sample_tiles(
        val_fields,
        tile=args.tile,
        n_per_field=max(args.tiles_per_field // 2, 8),
        seed=args.seed + 1,
    )
    if args.model:
        from astrid.anomaly import UNetTrainResult, load_unet

        card_path = Path(args.model).with_suffix(".card.json")
        card = json.loads(card_path.read_text())
        if card.get("data", {}).get("sha256") != _tiles_hash(*_check_tiles(*tiles, "tiles")):
            raise SystemExit(
                f"--model {args.model}: trained on other tiles than these options give"
            )
        result = UNetTrainResult(
            model=load_unet(args.model),
            history=card.get("history", {}),
            model_path=Path(args.model),
            card_path=card_path,
            card=card,
        )
    else:
        result = train_unet(
            tiles,
            UNetTrainingOptions(epochs=args.epochs, seed=args.seed),
            validation=val_tiles,
            out_dir=args.out,
            source=f"astrid.simulate ztf {args.size}² seeds {base}..{base + args.n_train - 1}, "
            f"n_supernovae={args.n_supernovae}",
        )
    training = result.card["training"]
    print(
        f"U-Net: {result.card['model']['n_parameters']} parameters; {tiles[0].shape[0]} training tiles of "
        f"{args.tile}²; {training['epochs_run']} epochs (best {training['best_epoch']}) in {training['seconds']:.0f} s; "
        f"training {training['tiles_per_second']:.0f} tiles/s = {training['pixels_per_second'] / 1e6:.2f} Mpx/s"
    )
    planes = unet_inputs(test_fields[0].result)
    anomaly_map(result.model, planes)  # warm-up: the first call of a shape builds the graph
    times = []
    for _ in range(3):
        t = time.perf_counter()
        anomaly_map(result.model, planes)
        times.append(time.perf_counter() - t)
    print(
        f"U-Net inference ({planes.shape[0]}x{planes.shape[1]}, tiles 512 + overlap 32, batch 4): "
        f"median {np.median(times):.2f} s = {planes.shape[0] * planes.shape[1] / np.median(times) / 1e6:.2f} Mpx/s"
    )

    # The U-Net's region level, on the validation fields.
    if args.level == "auto":
        level, levels = choose_region_level(result.model, val_fields)
        print(
            "U-Net region level on the validation fields (median footprint IoU of the matched transients):"
        )
        levels.pprint(max_lines=-1, max_width=-1)
    else:
        level, levels = float(args.level), None
    print(f"U-Net region level: {level:g}")

    # Baselines: fitted on the training fields' ZOGY detections; "novelty" = on the bogus ones only.
    train_candidates, train_labels = labelled_detections(train_fields, 5.0)
    forest = IsolationForestBaseline().fit(train_candidates, seed=args.seed)
    forest_novelty = IsolationForestBaseline().fit(train_candidates, train_labels, seed=args.seed)
    svm = OneClassSVMBaseline().fit(train_candidates, seed=args.seed)
    svm_novelty = OneClassSVMBaseline().fit(train_candidates, train_labels, seed=args.seed)
    print(
        f"baselines fitted on {len(train_candidates)} training detections ({int(train_labels.sum())} real)"
    )

    methods = {
        "ZOGY + threshold": zogy_threshold_method(),
        "classic + threshold": classic_threshold_method(),
        "U-Net": unet_method(result.model, level=level),
        "Isolation Forest": baseline_method(forest),
        "Isolation Forest (fit on bogus)": baseline_method(forest_novelty),
        "One-Class SVM": baseline_method(svm),
        "One-Class SVM (fit on bogus)": baseline_method(svm_novelty),
    }
    braai_path = args.braai
    if braai_path == "auto":
        from astrid.paths import shared_data

        found = shared_data(
            "braai", "d6_m7.h5"
        )  # None without the shared data: the row is left out
        braai_path = str(found) if found is not None else "none"
    if braai_path != "none":
        from astrid import braai

        model = (
            braai.load_braai(braai_path)
            if not braai_path.endswith(".keras")
            else braai.load_trained(braai_path)
        )
        methods["ZOGY + braai (" + Path(braai_path).stem + ")"] = braai_method(model)

    confidence = args.confidence if args.confidence > 0 else None
    table = evaluate_methods(
        methods,
        val_fields,
        test_fields,
        target_recall=args.target_recall,
        confidence=confidence,
        dataset=f"simulated ztf {args.size}², {args.n_test} test fields",
    )
    print()
    print(
        f"held-out simulated fields: {len(test_fields)} test, {len(val_fields)} validation (thresholds), "
        f"S/N >= {table.meta['snr_min']}, match radius {table.meta['match_radius']} px"
    )
    show = table[
        "method",
        "precision",
        "recall",
        "iou_median",
        "false_alarms_per_image",
        "seconds_per_image",
        "threshold",
        "val_recall",
        "n_true",
        "n_found",
        "n_selected",
    ]
    show.pprint(max_lines=-1, max_width=-1)
    from scipy.stats import beta

    for row in table:
        k, n = int(row["n_found"]), int(row["n_true"])
        low = beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
        high = beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
        print(
            f"  {row['method']}: test recall {k}/{n} = {k / n:.3f} (95% Clopper-Pearson {low:.3f}-{high:.3f}); "
            f"threshold {row['threshold']:.4g} — {row['threshold_rule']}"
        )
    print(f"IoU: {table.meta['iou_convention']}")
    # How the U-Net's test numbers move with the validation recall the threshold is set for.
    from astrid.anomaly import choose_threshold, match_predictions, summarise_matches

    unet_predict = methods["U-Net"]
    val_matches = [match_predictions(unet_predict(f), f) for f in val_fields]
    test_matches = [match_predictions(unet_predict(f), f) for f in test_fields]
    print("U-Net operating points (threshold on validation -> test):")
    for target, conf in ((0.8, None), (0.9, None), (0.9, 0.95), (0.95, None), (0.98, None)):
        threshold, _ = choose_threshold(val_matches, target, conf)
        val, test = (
            summarise_matches(val_matches, threshold),
            summarise_matches(test_matches, threshold),
        )
        label = f"validation recall >= {target:.2f}" + (
            f" ({100 * conf:g}% lower bound)" if conf else ""
        )
        print(
            f"  {label}: log-odds {threshold:6.2f}; validation recall {val['recall']:.3f}, "
            f"{val['false_alarms_per_image']:.2f} false alarms/image; test precision {test['precision']:.3f}, "
            f"recall {test['recall']:.3f}, {test['false_alarms_per_image']:.2f} false alarms/image, "
            f"IoU {test['iou_median']:.3f}"
        )
    print(
        f"total {time.perf_counter() - started:.0f} s; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.meta["shapes"] = [list(s) for s in table.meta["shapes"]]
        table.write(out / "anomaly_table.ecsv", overwrite=True)
        record = {
            "args": vars(args),
            "card": str(result.card_path),
            "inference_seconds": times,
            "level": level,
            "levels": None
            if levels is None
            else [dict(zip(levels.colnames, [v.item() for v in row])) for row in levels],
            "table": [
                dict(zip(table.colnames, [v.item() if hasattr(v, "item") else v for v in row]))
                for row in table
            ],
            "meta": dict(table.meta),
        }
        (out / "anomaly_run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        import matplotlib

        matplotlib.use("Agg")
        from astrid.anomaly import plot_methods
        from astrid.figures import save

        save(plot_methods(table), "anomaly_methods", out, formats=("png",))
    return table


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
