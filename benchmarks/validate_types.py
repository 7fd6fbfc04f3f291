"""Train the transient-type CNN on simulated fields and report it on held-out fields.

Classes: supernova, variable, asteroid, bogus (every artefact kind, unmatched
detections and random positions). Triplets come from
:func:`astrid.triplets.build_training_set` (``balance=None``, fading
detections included) on three disjoint sets of simulated 1024² ZTF-like
pairs: training, validation (early stopping) and test fields. Prints the
per-class precision and recall, the confusion matrix and the Monte-Carlo
dropout uncertainty of right and wrong calls; ``--figure`` saves the
confusion-matrix figure (``anomaly_types.png``) in a folder.

Usage::

    python benchmarks/validate_types.py
    python benchmarks/validate_types.py --figure docs/img
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import astrid
from astrid.anomaly import (
    CLASSES,
    TypesTrainingOptions,
    plot_confusion,
    predict_types,
    train_types,
    type_labels,
    type_report,
)
from astrid.diffim import difference
from astrid.triplets import ExampleOptions, build_training_set


def triplets(seeds, size, n_supernovae):
    inputs = []
    for seed in seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PSF-star shortfalls are reported, not fatal here
            pair = astrid.simulate.pair(
                size=size, seed=int(seed), preset="ztf", n_supernovae=n_supernovae
            )
            inputs.append((difference(pair.reference, pair.science), pair.truth, f"SIM{seed:04d}"))
    examples = ExampleOptions(negative=True, radius=3.0, random_bogus=10)
    return build_training_set(inputs, examples, balance=None, seed=0)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-val", type=int, default=4)
    parser.add_argument("--n-test", type=int, default=6)
    parser.add_argument("--n-supernovae", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--figure",
        default=None,
        help="folder to save anomaly_types.png (confusion matrix, per class)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    base = 5000 + 1000 * args.seed
    train = triplets(range(base, base + args.n_train), args.size, args.n_supernovae)
    validation = triplets(range(base + 100, base + 100 + args.n_val), args.size, args.n_supernovae)
    test = triplets(range(base + 200, base + 200 + args.n_test), args.size, args.n_supernovae)
    print(
        f"triplets: {train.sizes['candidate']} training, {validation.sizes['candidate']} validation, "
        f"{test.sizes['candidate']} test ({time.perf_counter() - started:.0f} s)"
    )
    model, history = train_types(
        train, TypesTrainingOptions(epochs=args.epochs, seed=args.seed), validation=validation
    )
    print(
        f"training: {len(history['loss'])} epochs in {sum(history['epoch_seconds']):.0f} s, "
        f"{history['triplets_per_second']:.0f} triplets/s; class counts {history['class_counts']}"
    )
    truth = type_labels(test["kind"].values)
    mc = predict_types(model, test, n_samples=args.mc_samples, seed=args.seed)
    report = type_report(truth, mc["predicted"])
    print(
        f"\ntest fields ({args.n_test}), MC dropout over {args.mc_samples} passes: accuracy {report['accuracy']:.3f}"
    )
    print(f"{'class':<10} {'precision':>9} {'recall':>7} {'support':>8}")
    for name in CLASSES:
        row = report["per_class"][name]
        print(f"{name:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['support']:>8d}")
    print("confusion (rows true, columns predicted: " + ", ".join(CLASSES) + ")")
    for name, row in zip(CLASSES, report["confusion"]):
        print(f"  {name:<10} " + " ".join(f"{v:>6d}" for v in row))
    right = mc["predicted"] == truth
    for label, sel in (("right", right), ("wrong", ~right)):
        if sel.any():
            print(
                f"{label} calls ({int(sel.sum())}): median confidence {np.median(mc['confidence'][sel]):.3f}, "
                f"median entropy {np.median(mc['entropy'][sel]):.3f} nats, median MC std of the called class "
                f"{np.median(mc['std'][sel, mc['predicted'][sel]]):.3f}"
            )
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        from astrid.figures import save

        fig = plot_confusion(
            report, title=f"transient type, {args.n_test} held-out simulated fields"
        )
        paths = save(fig, "anomaly_types", args.figure, formats=("png",))
        print(f"figure: {', '.join(str(p) for p in paths)}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
