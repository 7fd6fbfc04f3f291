"""Sim-to-real: braai models trained without any real label, scored against ZTF's drb.

    .venv/bin/python benchmarks/validate_sim_to_real.py [--fields 12] [--recipes sim,alert] [--out build/s2r]

Each recipe builds a labelled training set from simulated pairs only, trains braai's VGG6 on it
(validation and early stopping on simulated fields; nothing real is read while training), and is
then scored on

- the shared ZTF alerts with stamps and a `drb` (ZTF's production braai), labels drb >= 0.5:
  ROC AUC, AUCPR, and FNR/FPR at 0.5 and at the threshold that gives a 2 % FNR on the recipe's
  simulated validation fields (chosen without drb);
- held-out simulated test fields of the home domain (the `ztf` preset): AUCPR.

Recipes:
- `sim`: the `ztf` preset as benchmarks/validate_braai.py builds it (brightening detections only);
- `alert`: the `ztf_alert` preset (deep co-added references, the alerts' seeing, denser stars,
  more variables; benchmarks/realism.py), fading detections too, their difference stamps flipped
  to ZTF's convention (an alert with isdiffpos = 'f' carries reference - science, so its source is
  positive: 99.7 % of the shared 'f' alerts show a positive centre).

`drb` is used for evaluation only: no training, early stopping, model selection or threshold
choice reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

RECIPES = {
    "sim": {"preset": "ztf", "n_supernovae": 120, "n_variables": 15, "negative": False, "flip": False},
    "alert": {"preset": "ztf_alert", "n_supernovae": 80, "n_variables": 40, "negative": True, "flip": True},
}
REAL_KINDS = ("supernova", "variable", "asteroid")  # braai's convention: every astrophysical source is real


def flip_fading(ds):
    """ZTF's convention: the difference stamp of a fading candidate is reference - science."""
    if "sign" not in ds.coords:
        return ds
    sign = np.asarray(ds["sign"].values, dtype=float)
    factor = np.where(sign < 0, -1.0, 1.0).astype(np.float32)
    stamps = ds["triplets"].values.copy()
    stamps[..., 2] *= factor[:, None, None]
    return ds.assign(triplets=(ds["triplets"].dims, stamps))


def build(recipe: dict, fields: int, size: int, seed: int, label: str):
    import xarray as xr

    import astrid
    from astrid.triplets import build_training_set

    parts = []
    for i in range(fields):
        t0 = time.perf_counter()
        pair = astrid.simulate.pair(size=size, seed=seed + i, preset=recipe["preset"],
                                    n_supernovae=recipe["n_supernovae"], n_variables=recipe["n_variables"])
        result = astrid.difference(pair.reference, pair.science)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = build_training_set([(result, pair.truth, f"{label}{i:02d}")], balance=None, random_bogus=50,
                                    radius=3.0, real_kinds=REAL_KINDS, negative=recipe["negative"], seed=seed + i)
        if recipe["flip"]:
            ds = flip_fading(ds)
        keep = [name for name in ds.coords if ds[name].dims in (("candidate",), ("channel",))]
        ds = ds.reset_coords([c for c in ds.coords if c not in keep and c not in ds.dims], drop=True)
        parts.append(ds.drop_indexes("candidate_id"))
        print(f"  {label}{i:02d}: {ds.sizes['candidate']} triplets ({int(ds['label'].sum())} real), "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    common = set.intersection(*(set(p.coords) for p in parts))
    parts = [p.reset_coords([c for c in p.coords if c not in common], drop=True) for p in parts]
    ds = xr.concat(parts, dim="candidate", data_vars="all", coords="different", compat="equals", join="outer",
                   combine_attrs="drop_conflicts")
    return ds.set_xindex("candidate_id")


def scores_against(labels, scores, threshold):
    from sklearn.metrics import average_precision_score, roc_auc_score

    def rates(t):
        predicted = scores >= t
        fnr = float(np.mean(~predicted[labels == 1]))
        fpr = float(np.mean(predicted[labels == 0]))
        return fnr, fpr

    fnr05, fpr05 = rates(0.5)
    fnr_t, fpr_t = rates(threshold)
    return {"roc_auc": float(roc_auc_score(labels, scores)), "aucpr": float(average_precision_score(labels, scores)),
            "fnr_05": fnr05, "fpr_05": fpr05, "threshold": float(threshold), "fnr_t": fnr_t, "fpr_t": fpr_t}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", type=int, default=12, help="training fields per recipe (+ 1/3 validation)")
    parser.add_argument("--test-fields", type=int, default=4, help="held-out ztf-preset fields (home domain)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--recipes", default="sim,alert")
    parser.add_argument("--seed", type=int, default=8000)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "sim_to_real")
    args = parser.parse_args(argv)

    from astrid import braai
    from astrid.alerts import read_ztf
    from astrid.paths import shared_data

    folder = shared_data("ztf_alerts")
    if folder is None:
        print("shared ZTF alerts not found (../shared/data/ztf_alerts): nothing to validate against")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    alerts = read_ztf(folder)
    drb = alerts["drb"].values.astype(float)
    alerts = alerts.isel(candidate=np.flatnonzero(np.isfinite(drb)))
    real_labels = (alerts["drb"].values.astype(float) >= 0.5).astype(int)
    print(f"{alerts.sizes['candidate']} shared ZTF alerts with stamps and drb ({real_labels.sum()} at drb >= 0.5)")

    print("home-domain test fields (ztf preset):", flush=True)
    home = build(RECIPES["sim"], args.test_fields, args.size, args.seed + 900, "home")
    home_labels = home["label"].values.astype(int)

    rows = {}
    for name in args.recipes.split(","):
        recipe = RECIPES[name]
        started = time.perf_counter()
        print(f"recipe {name}: {recipe}", flush=True)
        n_val = max(1, args.fields // 3)
        train_set = build(recipe, args.fields, args.size, args.seed, f"{name}-train")
        validation = build(recipe, n_val, args.size, args.seed + 500, f"{name}-val")
        fit = braai.train(train_set, "vgg6", validation=validation, epochs=args.epochs, patience=args.patience,
                          seed=0, out_dir=args.out, name=f"vgg6_{name}")
        val_scores = braai.predict(fit.model, validation)
        threshold = braai.threshold_for_fnr(validation["label"].values.astype(int), val_scores, 0.02)
        real = scores_against(real_labels, braai.predict(fit.model, alerts), threshold)
        home_scores = braai.predict(fit.model, home)
        rows[name] = {"recipe": recipe, "n_train": int(train_set.sizes["candidate"]),
                      "n_validation": int(validation.sizes["candidate"]), "ztf_drb": real,
                      "home_aucpr": scores_against(home_labels, home_scores, 0.5)["aucpr"],
                      "epochs": fit.card["training"]["epochs_run"], "seconds": round(time.perf_counter() - started)}
        print(json.dumps(rows[name], indent=1), flush=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1))

    print("\n| recipe | train triplets | ROC AUC vs drb | AUCPR vs drb | FNR / FPR at 0.5 | threshold (sim FNR 2 %) "
          "| FNR / FPR there | home AUCPR |")
    print("|---|---:|---:|---:|---|---:|---|---:|")
    for name, row in rows.items():
        r = row["ztf_drb"]
        print(f"| {name} | {row['n_train']} | {r['roc_auc']:.3f} | {r['aucpr']:.3f} | {r['fnr_05']:.1%} / "
              f"{r['fpr_05']:.1%} | {r['threshold']:.3f} | {r['fnr_t']:.1%} / {r['fpr_t']:.1%} | "
              f"{row['home_aucpr']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
