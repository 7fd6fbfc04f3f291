"""The retrospective test: train without a known transient, then see whether the model still ranks it high.

Two cases, both with :func:`astrid.braai.retrospective`:

1. Simulated survey (the fields of ``benchmarks/validate_active.py``, cached
   under ``--out``): every triplet of a rare kind (``--kind``, default the
   asteroid: one per simulated field) is removed from the training set; VGG6
   is trained on the rest (validation split by field), and the held-out
   triplets are scored and ranked among themselves plus the validation
   fields' candidates (none of which the model trained on).
2. Real ZTF: the same simulation, nothing real, trains the model; one ZTF
   object of the shared alerts with a Fink/TNS supernova label
   (``../shared/data/ztf_alerts/manifest.csv``, column ``labels``) is scored
   and ranked among all shared alerts with stamps. ``drb`` is shown for
   comparison only; it is never a training label here.

Run::

    nice -n 10 python benchmarks/validate_retrospective.py
    python benchmarks/validate_retrospective.py --quick        # smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_active import _cpu, simulate_fields  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _print_table(result, extra=None) -> None:
    table = result.table
    columns = ["candidate_id", "score", "rank", "percentile", "label"] + list(extra or [])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in table:
        values = [row[c] for c in columns]
        print(
            "| "
            + " | ".join(
                f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v) for v in values
            )
            + " |"
        )


def simulated_case(sim, args) -> dict:
    from astrid.braai import retrospective

    target = {"kind": args.kind}
    t0 = time.perf_counter()
    result = retrospective(sim, target, epochs=args.epochs, seed=args.seed, track=False)
    seconds = time.perf_counter() - t0
    print(
        f"\n1. simulated survey: target {result.target}: {result.n_excluded} triplet(s) removed from training; "
        f"trained on {result.n_train}, validated on {result.n_validation} ({seconds:.0f} s)"
    )
    print(f"   ranked among {result.n_ranked}: {result.pool}")
    _print_table(result)
    print("   summary: " + json.dumps(result.summary))
    return {
        "target": result.target,
        "n_excluded": result.n_excluded,
        "n_train": result.n_train,
        "n_ranked": result.n_ranked,
        "summary": result.summary,
        "rows": [
            dict(zip(result.table.colnames, [v.item() if hasattr(v, "item") else v for v in row]))
            for row in result.table
        ],
        "seconds": round(seconds, 1),
    }


def ztf_case(sim, args) -> dict | None:
    from astrid.alerts import read_alerts
    from astrid.braai import retrospective
    from astrid.paths import shared_data

    folder = shared_data("ztf_alerts")
    if folder is None or not (folder / "manifest.csv").exists():
        print("shared ZTF alerts not found: skipping the real case")
        return None
    with open(folder / "manifest.csv", newline="") as fh:
        labels = {row["candid"]: row["labels"] for row in csv.DictReader(fh) if row["labels"]}
    alerts = read_alerts(folder, on_error="warn")
    fink = np.array([labels.get(str(c), "") for c in alerts["candid"].values], dtype=object)
    alerts = alerts.assign_coords(fink_label=("candidate", fink))
    objects = [str(o) for o in alerts["objectId"].values]
    if args.ztf_object:
        chosen = args.ztf_object
    else:  # the first alert (in candid order) whose label names a supernova class from TNS
        hits = [o for o, f in zip(objects, fink) if "(TNS) SN" in f]
        if not hits:
            print("no shared alert has a TNS supernova label: skipping the real case")
            return None
        chosen = hits[0]
    t0 = time.perf_counter()
    result = retrospective(
        sim,
        {"objectId": chosen},
        candidates=alerts,
        epochs=args.epochs,
        seed=args.seed,
        track=False,
    )
    seconds = time.perf_counter() - t0
    index = [objects.index(chosen)]
    drb = float(alerts["drb"].values[index[0]])
    drb_all = alerts["drb"].values.astype(float)
    drb_rank = 1 + int((drb_all[np.isfinite(drb_all)] > drb).sum()) if np.isfinite(drb) else None
    label = str(fink[index[0]])
    print(
        f"\n2. ZTF: object {chosen} ({label}); trained on {result.n_train} simulated triplets only "
        f"({result.n_excluded} of the object removed: it is not in the simulation) ({seconds:.0f} s)"
    )
    print(f"   ranked among {result.n_ranked} shared ZTF alerts with stamps")
    _print_table(result)
    print(
        f"   for comparison only: ZTF drb {drb:.4f}, rank {drb_rank} of {int(np.isfinite(drb_all).sum())} by drb"
    )
    print("   summary: " + json.dumps(result.summary))
    return {
        "object": chosen,
        "fink_label": label,
        "n_train": result.n_train,
        "n_ranked": result.n_ranked,
        "summary": result.summary,
        "drb": drb,
        "drb_rank": drb_rank,
        "rows": [
            dict(zip(result.table.colnames, [v.item() if hasattr(v, "item") else v for v in row]))
            for row in result.table
        ],
        "seconds": round(seconds, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fields",
        type=int,
        default=4,
        help="simulated fields (the pool fields of validate_active)",
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--supernovae", type=int, default=40)
    parser.add_argument("--random-bogus", type=int, default=20)
    parser.add_argument("--kind", default="asteroid")
    parser.add_argument(
        "--ztf-object", default=None, help="objectId (default: the first with a TNS SN label)"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "validate_active")
    parser.add_argument("--quick", action="store_true", help="4 fields, 2 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.fields, args.epochs = 4, 2
    os.environ.setdefault("ASTRID_TRACKING", "off")
    started = time.perf_counter()
    sim = simulate_fields(
        range(args.fields),
        size=args.size,
        supernovae=args.supernovae,
        random_bogus=args.random_bogus,
        cache=args.out / "fields",
        prefix="pool",
    )
    kinds = np.array([str(k) for k in sim["kind"].values])
    print(
        f"simulated: {sim.sizes['candidate']} triplets ({int(sim['label'].sum())} real) in {args.fields} fields; "
        f"{int((kinds == args.kind).sum())} of kind {args.kind}"
    )
    results = {
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "simulated": simulated_case(sim, args),
        "ztf": ztf_case(sim, args),
    }
    elapsed = time.perf_counter() - started
    results["seconds"] = round(elapsed, 1)
    results["machine"] = {"cpu": _cpu(), "load_1min": os.getloadavg()[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrospective.json").write_text(json.dumps(results, indent=2, default=str))
    print(
        f"\n{elapsed / 60:.1f} min on {_cpu()} (load {os.getloadavg()[0]:.1f}); {args.out / 'retrospective.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
