"""Sim-to-real: braai models trained without any real label, scored against ZTF's drb.

    .venv/bin/python benchmarks/validate_sim_to_real.py [--fields 12] [--recipes sim,alert] [--out build/s2r]

Each recipe builds a labelled training set without any real label (simulated pairs, and/or
synthetic triplets on real reference stamps), trains braai's VGG6 on it (validation and early
stopping on the recipe's own synthetic validation set), and is then scored on

- the shared ZTF alerts with stamps and a `drb` (ZTF's production braai), labels drb >= 0.5:
  ROC AUC (also with each score averaged over the stamp's eight rotations and mirrors), AUCPR,
  and FNR/FPR at 0.5 and at the threshold that gives a 2 % FNR on the recipe's validation set
  (chosen without drb);
- held-out simulated test fields of the home domain (the `ztf` preset): AUCPR;
- injections into the shared DECam and JWST pairs (a second real domain).

Recipes:
- `sim`: the `ztf` preset as benchmarks/validate_braai.py builds it (brightening detections only);
- `alert`: the `ztf_alert` preset (deep co-added references, the alerts' seeing, denser stars,
  more variables; benchmarks/realism.py), fading detections too, their difference stamps flipped
  to ZTF's convention (an alert with isdiffpos = 'f' carries reference - science, so its source is
  positive: 99.7 % of the shared 'f' alerts show a positive centre).
- `alert+realbg`: `alert` plus as many triplets on real backgrounds (astrid.inject.
  triplets_on_real_backgrounds) as it has, built on the alerts without a drb and on 600 cutouts
  of the real ZTF quadrant with every flagged pixel NaN ("masked" backgrounds).
- `realbg`: only triplets on real backgrounds (10,000), "co-add" backgrounds: 3,000 cutouts of
  the quadrant by astrid.inject.reference_cutouts, which keeps it whole as a co-added reference
  would be (radiation hits filled, saturated stars kept) and records its PSF's FWHM; the science
  epoch 1-1.8 times broader than the reference, sources with Moffat wings.
- `realbg-detected`: `realbg` keeping only triplets whose difference has a 5-sigma peak at its
  centre, as a detection would, and no noise-only bogus (`min_significance=5`).
- `sim+realbg`: `sim` plus the 10,000 triplets of `realbg`.

`--models PATH ...` scores saved models (`.keras` files written by `astrid.braai.train`, such as
the main job's `data/main_job/models/vgg6.keras`) on the same alerts, home fields and injections
instead of training recipes; their threshold is the one their card records (2 % FNR on their own
validation set).

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
    "sim": {
        "preset": "ztf",
        "n_supernovae": 120,
        "n_variables": 15,
        "negative": False,
        "flip": False,
    },
    "alert": {
        "preset": "ztf_alert",
        "n_supernovae": 80,
        "n_variables": 40,
        "negative": True,
        "flip": True,
    },
    "alert+realbg": {
        "preset": "ztf_alert",
        "n_supernovae": 80,
        "n_variables": 40,
        "negative": True,
        "flip": True,
        "real_backgrounds": "masked",
    },
    "realbg": {
        "preset": None,
        "real_backgrounds": "co-add",
        "n_background_triplets": 10000,
    },
    "realbg-detected": {
        "preset": None,
        "real_backgrounds": "co-add",
        "n_background_triplets": 10000,
        "background_options": {"min_significance": 5.0},
    },
    "sim+realbg": {
        "preset": "ztf",
        "n_supernovae": 120,
        "n_variables": 15,
        "negative": False,
        "flip": False,
        "real_backgrounds": "co-add",
        "n_background_triplets": 10000,
    },
}
#: Quadrant cutouts among the real backgrounds, per style.
QUADRANT_CUTOUTS = {"masked": 600, "co-add": 3000}
#: How triplets are built on each kind of real backgrounds (astrid.inject.triplets_on_real_backgrounds).
BACKGROUND_OPTIONS = {
    # as the first version of triplets_on_real_backgrounds: the science as sharp as the
    # reference, Gaussian sources
    "masked": {"seeing_ratio": (1.0, 1.0), "profile": "gaussian"},
    # its defaults: the science epoch 1-1.8 times broader than the reference, Moffat sources
    "co-add": {},
}
ZTF_BAD_BITS = 0xFFFF & ~0b10  # every ZTF mask bit but 2 ("source detected") marks unusable pixels
REAL_KINDS = (
    "supernova",
    "variable",
    "asteroid",
)  # braai's convention: every astrophysical source is real


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
    import astrid
    from astrid.triplets import ExampleOptions, build_training_set, concat_triplets

    parts = []
    for i in range(fields):
        t0 = time.perf_counter()
        pair = astrid.simulate.pair(
            size=size,
            seed=seed + i,
            preset=recipe["preset"],
            n_supernovae=recipe["n_supernovae"],
            n_variables=recipe["n_variables"],
        )
        result = astrid.difference(pair.reference, pair.science)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            examples = ExampleOptions(
                random_bogus=50, radius=3.0, real_kinds=REAL_KINDS, negative=recipe["negative"]
            )
            ds = build_training_set(
                [(result, pair.truth, f"{label}{i:02d}")], examples, balance=None, seed=seed + i
            )
        if recipe["flip"]:
            ds = flip_fading(ds)
        keep = [name for name in ds.coords if ds[name].dims in (("candidate",), ("channel",))]
        ds = ds.reset_coords(
            [c for c in ds.coords if c not in keep and c not in ds.dims], drop=True
        )
        parts.append(ds)
        print(
            f"  {label}{i:02d}: {ds.sizes['candidate']} triplets ({int(ds['label'].sum())} real), "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return concat_triplets(parts)


def injected_real_pairs(n_sources: int = 20, seed: int = 0):
    """Triplets from injections into the shared DECam and JWST pairs: recovered injections real, the rest bogus.

    Neither pair holds a known transient, so every other detection is bogus. DECam's 256² cutouts
    have too few stars for an empirical PSF: a Gaussian of the header's FWHM is injected (and the
    difference estimates its own PSFs); JWST uses the WebbPSF models for both.
    """
    from astropy.io import fits

    import astrid
    from astrid.inject import inject_sources
    from astrid.paths import shared_data
    from astrid.triplets import concat_triplets, label_candidates, make_triplets

    cases = []
    decam = shared_data("images", "sfft_decam_decorr")
    if decam is not None:
        for c in "abcde":
            cases.append(
                (
                    "DECam",
                    f"OBS04{c}/OBS18{c}",
                    decam / f"input_data/DEC-OBS04{c}.mini.fits",
                    decam / f"input_data/DEC-OBS18{c}.mini.fits",
                    None,
                )
            )
    jwst = shared_data("images", "sfft_jwst_nircam_a2744")
    if jwst is not None:
        names = sorted(p.name.replace(".fits", "") for p in (jwst / "input_data").glob("*.fits"))
        ref_name, sci_name = names[0], names[-1]
        cases.append(
            (
                "JWST",
                "A2744",
                jwst / "input_data" / f"{ref_name}.fits",
                jwst / "input_data" / f"{sci_name}.fits",
                (
                    jwst / "auxiliary" / f"{ref_name}.WebbPSF.fits",
                    jwst / "auxiliary" / f"{sci_name}.WebbPSF.fits",
                ),
            )
        )
    parts = {}
    for k, (survey, label, ref_path, sci_path, psfs) in enumerate(cases):
        reference, science = astrid.read_image(ref_path), astrid.read_image(sci_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if psfs is None:
                psf = astrid.gaussian_psf(float(science.header["FWHM"]))
                injection = inject_sources(
                    science, n=n_sources, snr=(8.0, 60.0), psf=psf, seed=seed + k
                )
                result = astrid.difference(reference, injection.image, dtype=np.float64)
            else:
                psf_ref, psf_sci = (fits.getdata(p).astype(np.float64) for p in psfs)
                injection = inject_sources(
                    science, n=n_sources, snr=(8.0, 60.0), psf=psf_sci, seed=seed + k
                )
                result = astrid.difference(
                    reference,
                    injection.image,
                    align=False,
                    dtype=np.float64,
                    science_psf=psf_sci,
                    reference_psf=psf_ref,
                    flux_ratio=1.0,
                )
            candidates = astrid.detect(result, threshold=5.0)
            labelled = label_candidates(
                candidates, injection.truth, radius=3.0, real_kinds=("injected",), wcs=result.wcs
            )
            ds = make_triplets(result, labelled, field=f"{survey}-{label}")
        ids = [f"{label}-{i}" for i in range(ds.sizes["candidate"])]  # unique over the pairs
        parts.setdefault(survey, []).append(
            ds.drop_indexes("candidate_id").assign_coords(candidate_id=("candidate", ids))
        )
        print(
            f"  {survey} {label}: {ds.sizes['candidate']} detections, {int(ds['label'].sum())} recovered "
            f"injections of {n_sources}",
            flush=True,
        )
    out = {}
    for survey, sets in parts.items():
        ds = concat_triplets(sets).drop_indexes("candidate_id")
        out[survey] = ds.assign_coords(
            candidate_id=("candidate", [f"{survey}-{i}" for i in range(ds.sizes["candidate"])])
        )
    return out


def real_backgrounds(alerts_without_drb, n_quadrant: int = 600, seed: int = 0, style="masked"):
    """Real reference stamps to build triplets on: alerts without drb and cutouts of the ZTF quadrant.

    None of them is an alert that the models are scored on (those all have a drb). ``style``:
    "masked" (every flagged pixel of the quadrant NaN, no width recorded: the sources' width is
    drawn at random), or "co-add" (:func:`astrid.inject.reference_cutouts`: the quadrant stands
    in for a co-added reference as ZTF's are, so only its radiation hits are filled from their
    neighbours and nothing is NaN, saturated stars included; the width is its PSF's).
    """
    from astropy.io import fits
    from scipy import ndimage

    from astrid.paths import shared_data
    from astrid.schema import new_triplet_dataset
    from astrid.triplets import concat_triplets

    if style == "co-add":
        from astrid.inject import shared_ztf_backgrounds

        return shared_ztf_backgrounds(n_quadrant, seed=seed)
    parts = [
        alerts_without_drb.reset_coords(
            [
                c
                for c in alerts_without_drb.coords
                if c not in ("candidate_id", "fwhm", "objectId", "channel")
            ],
            drop=True,
        )
    ]
    folder = shared_data("images", "ztf_quadrant")
    if folder is not None:
        data = fits.getdata(next(folder.glob("*_sciimg.fits"))).astype(np.float64)
        bits = fits.getdata(next(folder.glob("*_mskimg.fits"))).astype(np.int64)
        data[(bits & ZTF_BAD_BITS) != 0] = np.nan
        rng = np.random.default_rng(seed)
        smooth = ndimage.gaussian_filter(np.nan_to_num(data, nan=np.nanmedian(data)), 1.0)
        sky, sigma = np.nanmedian(data), np.nanstd(np.diff(data[::8], axis=1)) / np.sqrt(2)
        peaks = (smooth == ndimage.maximum_filter(smooth, 9)) & (smooth > sky + 10 * sigma)
        ys, xs = np.nonzero(peaks[40:-40, 40:-40])
        pick = rng.choice(ys.size, min(ys.size, 2 * n_quadrant // 3), replace=False)
        ys, xs = list(ys[pick] + 40), list(xs[pick] + 40)
        ys += list(rng.integers(40, data.shape[0] - 40, n_quadrant - len(pick)))
        xs += list(rng.integers(40, data.shape[1] - 40, n_quadrant - len(pick)))
        stamps = np.stack([data[y - 31 : y + 32, x - 31 : x + 32] for y, x in zip(ys, xs)])
        quadrant = new_triplet_dataset(
            np.repeat(stamps[..., None], 3, axis=-1).astype(np.float32),
            coords={
                "candidate_id": [f"quadrant-{k}" for k in range(len(ys))],
                "objectId": [
                    f"quadrant-{k // 50}" for k in range(len(ys))
                ],  # neighbouring cutouts grouped
                "fwhm": np.full(len(ys), np.nan),
            },
        )
        parts.append(quadrant)
    return concat_triplets(parts)


def training_sets(name: str, args, backgrounds):
    """The recipe's training and validation triplets: simulated fields, triplets on real backgrounds, or both."""
    from astrid.inject import triplets_on_real_backgrounds
    from astrid.triplets import concat_triplets

    recipe = RECIPES[name]
    train, validation = [], []
    if recipe["preset"] is not None:
        n_val = max(1, args.fields // 3)
        train.append(build(recipe, args.fields, args.size, args.seed, f"{name}-train"))
        validation.append(build(recipe, n_val, args.size, args.seed + 500, f"{name}-val"))
    style = recipe.get("real_backgrounds")
    if style is not None:
        if "n_background_triplets" in recipe:
            n = recipe["n_background_triplets"]
            n_val = n // 3
        else:  # as many as the simulated triplets
            n, n_val = (part[0].sizes["candidate"] for part in (train, validation))
        options = {**BACKGROUND_OPTIONS[style], **recipe.get("background_options", {})}
        train.append(triplets_on_real_backgrounds(backgrounds, n, seed=args.seed, **options))
        validation.append(
            triplets_on_real_backgrounds(backgrounds, n_val, seed=args.seed + 1, **options)
        )
    return (
        concat_triplets(train) if len(train) > 1 else train[0],
        concat_triplets(validation) if len(validation) > 1 else validation[0],
    )


def scores_against(labels, scores, threshold):
    from sklearn.metrics import average_precision_score, roc_auc_score

    def rates(t):
        predicted = scores >= t
        fnr = float(np.mean(~predicted[labels == 1]))
        fpr = float(np.mean(predicted[labels == 0]))
        return fnr, fpr

    fnr05, fpr05 = rates(0.5)
    fnr_t, fpr_t = rates(threshold)
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "aucpr": float(average_precision_score(labels, scores)),
        "fnr_05": fnr05,
        "fpr_05": fpr05,
        "threshold": float(threshold),
        "fnr_t": fnr_t,
        "fpr_t": fpr_t,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fields", type=int, default=12, help="training fields per recipe (+ 1/3 validation)"
    )
    parser.add_argument(
        "--test-fields", type=int, default=4, help="held-out ztf-preset fields (home domain)"
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--recipes", default="sim,alert")
    parser.add_argument("--seed", type=int, default=8000)
    parser.add_argument(
        "--train-seeds",
        default="0",
        help="comma-separated training seeds: each recipe's network trained once per seed on the "
        "same training set (default 0)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        help="training arithmetic (astrid.braai.TrainConfig.precision): auto, float32, mixed_bfloat16",
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "sim_to_real")
    parser.add_argument(
        "--models",
        type=Path,
        nargs="+",
        default=None,
        help="score these saved .keras models (astrid.braai.train's) instead of training recipes",
    )
    args = parser.parse_args(argv)

    from astrid import braai
    from astrid.alerts import read_ztf
    from astrid.paths import shared_data

    folder = shared_data("ztf_alerts")
    if folder is None:
        print(
            "shared ZTF alerts not found (../shared/data/ztf_alerts): nothing to validate against"
        )
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    alerts = read_ztf(folder)
    drb = alerts["drb"].values.astype(float)
    recipes = [] if args.models else args.recipes.split(",")
    styles = {RECIPES[name].get("real_backgrounds") for name in recipes} - {None}
    backgrounds = {}
    for style in sorted(styles):
        backgrounds[style] = real_backgrounds(
            alerts.isel(candidate=np.flatnonzero(~np.isfinite(drb))),
            n_quadrant=QUADRANT_CUTOUTS[style],
            seed=args.seed,
            style=style,
        )
        print(
            f"real backgrounds ({style}): {backgrounds[style].sizes['candidate']} reference stamps "
            "(alerts without drb, ZTF quadrant cutouts)",
            flush=True,
        )
    alerts = alerts.isel(candidate=np.flatnonzero(np.isfinite(drb)))
    real_labels = (alerts["drb"].values.astype(float) >= 0.5).astype(int)
    print(
        f"{alerts.sizes['candidate']} shared ZTF alerts with stamps and drb ({real_labels.sum()} at drb >= 0.5)"
    )

    print("second domain: injections into the shared DECam and JWST pairs", flush=True)
    domains = injected_real_pairs()
    print("home-domain test fields (ztf preset):", flush=True)
    home = build(RECIPES["sim"], args.test_fields, args.size, args.seed + 900, "home")

    rows, summaries = {}, {}
    for path in args.models or []:
        rows[str(path)] = score_saved_model(path, alerts, real_labels, home, domains)
        print(json.dumps(rows[str(path)], indent=1), flush=True)
    seeds = [int(k) for k in args.train_seeds.split(",")]
    for name in recipes:
        recipe = RECIPES[name]
        started = time.perf_counter()
        print(f"recipe {name}: {recipe}", flush=True)
        train_set, validation = training_sets(
            name, args, backgrounds.get(recipe.get("real_backgrounds"))
        )
        ensemble = []
        for train_seed in seeds:
            fit = braai.train(
                train_set,
                "vgg6",
                validation=validation,
                config=braai.TrainConfig(
                    epochs=args.epochs,
                    patience=args.patience,
                    seed=train_seed,
                    precision=args.precision,
                ),
                out_dir=args.out,
                name=f"vgg6_{name}" + (f"_seed{train_seed}" if len(seeds) > 1 else ""),
            )
            key = name if len(seeds) == 1 else f"{name}, training seed {train_seed}"
            rows[key], scores = evaluate(fit.model, validation, alerts, real_labels, home, domains)
            ensemble.append(scores)
            rows[key].update(
                recipe=recipe,
                n_train=int(train_set.sizes["candidate"]),
                n_validation=int(validation.sizes["candidate"]),
                epochs=fit.card["training"]["epochs_run"],
                precision=fit.card["parameters"]["precision"],
                seconds=round(time.perf_counter() - started),
            )
            print(json.dumps(rows[key], indent=1), flush=True)
            (args.out / "results.json").write_text(json.dumps(rows, indent=1))
        if len(seeds) > 1:
            aucs = [rows[f"{name}, training seed {k}"]["ztf_drb"]["roc_auc"] for k in seeds]
            mean_scores = np.mean(ensemble, axis=0)
            summaries[name] = {
                "roc_auc": (float(np.mean(aucs)), float(np.min(aucs)), float(np.max(aucs))),
                "ensemble_roc_auc": scores_against(real_labels, mean_scores, 0.5)["roc_auc"],
            }

    print_tables(rows, summaries, domains)
    return 0


def print_tables(rows: dict, summaries: dict, domains: dict) -> None:
    """The results as Markdown tables: against drb, on the injections, over the training seeds."""
    print(
        "\n| recipe | train triplets | ROC AUC vs drb | same, 8 symmetries averaged | AUCPR vs drb "
        "| FNR / FPR at 0.5 | threshold (sim FNR 2 %) | FNR / FPR there | home AUCPR |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---|---:|")
    for name, row in rows.items():
        r = row["ztf_drb"]
        print(
            f"| {name} | {row['n_train']} | {r['roc_auc']:.3f} | {r['roc_auc_symmetries']:.3f} | "
            f"{r['aucpr']:.3f} | {r['fnr_05']:.1%} / "
            f"{r['fpr_05']:.1%} | {r['threshold']:.3f} | {r['fnr_t']:.1%} / {r['fpr_t']:.1%} | "
            f"{row['home_aucpr']:.4f} |"
        )
    print(
        "\nsecond domain, injections into real pairs (recovered injections real, other detections bogus):"
    )
    print("| recipe | " + " | ".join(f"{s} ROC AUC | {s} AUCPR" for s in domains) + " |")
    print("|---|" + "---:|---:|" * len(domains))
    for name, row in rows.items():
        cells = []
        for survey in domains:
            r = row["injected"].get(survey)
            cells += [f"{r['roc_auc']:.3f}", f"{r['aucpr']:.3f}"] if r else ["—", "—"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if summaries:
        print("\nover the training seeds (the same training set each time):")
        print("| recipe | ROC AUC vs drb: mean (min-max) | ensemble of the seeds' models |")
        print("|---|---|---:|")
        for name, summary in summaries.items():
            mean, low, high = summary["roc_auc"]
            print(
                f"| {name} | {mean:.3f} ({low:.3f}-{high:.3f}) | {summary['ensemble_roc_auc']:.3f} |"
            )


def score_saved_model(path: Path, alerts, real_labels, home, domains) -> dict:
    """The row of a saved model: as `evaluate`, at the threshold its card records (never drb's)."""
    from astrid import braai

    model = braai.load_trained(path)
    card = json.loads(path.with_suffix(".card.json").read_text())
    threshold = card.get("metrics", {}).get("threshold_at_target_fnr") or 0.5
    if card.get("calibration"):  # the card's threshold is of calibrated scores; predict's are raw
        calibration = braai.Calibration.from_dict(card["calibration"])
        raw = np.linspace(0.0, 1.0, 100_001)
        calibrated = np.maximum.accumulate(np.asarray(calibration.apply(raw), dtype=float))
        threshold = float(raw[min(np.searchsorted(calibrated, threshold), raw.size - 1)])
    row, _ = evaluate(model, None, alerts, real_labels, home, domains, threshold=threshold)
    row.update(n_train=card["data"]["n_train"], epochs=card["training"]["epochs_run"])
    return row


def evaluate(model, validation, alerts, real_labels, home, domains, threshold=None):
    """Scores of one model: on the real alerts against drb, the home domain, injections into real pairs.

    The threshold is chosen on the recipe's own validation set (2 % FNR there), never on drb, unless
    given. Returns the row and the model's scores of the alerts.
    """
    from astrid import braai

    if threshold is None:
        val_scores = braai.predict(model, validation)
        labels = validation["label"].values.astype(int)
        threshold = braai.threshold_for_fnr(labels, val_scores, 0.02)
    scores = braai.predict(model, alerts)
    real = scores_against(real_labels, scores, threshold)
    averaged = braai.predict(model, alerts, symmetries=True)
    real["roc_auc_symmetries"] = scores_against(real_labels, averaged, threshold)["roc_auc"]
    injected = {}
    for survey, ds in domains.items():
        labels = ds["label"].values.astype(int)
        if labels.min() != labels.max():
            injected[survey] = scores_against(labels, braai.predict(model, ds), threshold)
    home_labels = home["label"].values.astype(int)
    home_aucpr = scores_against(home_labels, braai.predict(model, home), 0.5)["aucpr"]
    return {"ztf_drb": real, "home_aucpr": home_aucpr, "injected": injected}, scores


if __name__ == "__main__":
    sys.exit(main())
