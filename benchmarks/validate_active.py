"""Active learning with a simulated oracle: does choosing which candidates to label beat labelling at random?

Protocol (fixed before the run):

1. A simulated survey: ``--pool-fields`` pairs from :func:`astrid.simulate.pair`
   (``--size`` pixels a side, ``--supernovae`` supernovae each, the rest of the
   ZTF preset), differenced (ZOGY) and turned into labelled triplets with
   :func:`astrid.triplets.build_training_set` (real = supernova, variable,
   asteroid; plus ``--random-bogus`` blank stamps per field): the *pool* whose
   labels are hidden. ``--test-fields`` more fields with other seeds are the
   held-out test set.
2. The oracle is the simulator's truth: "labelling" a candidate reveals its
   ``label``, written through :class:`astrid.widgets.LabelStore` and merged
   with :func:`astrid.braai.apply_labels` like a person's labels would be.
3. Each run starts from ``--seed-labels`` random labels, then ``--rounds``
   rounds: train VGG6 from scratch on the labels so far
   (:func:`astrid.braai.train`, ``--epochs`` epochs of batch ``--train-batch``,
   no validation split),
   measure AUCPR on the test fields, then :func:`astrid.braai.query` picks
   ``--batch`` more candidates by each strategy: ``random``, ``uncertainty``
   (|p - 0.5|), ``bald`` (MC-dropout disagreement, ``--mc-samples`` passes)
   and ``diversity`` (k-center over the model's penultimate layer among the
   5 x batch most uncertain). Every strategy sees the same seed set and the
   same training seed; runs are repeated for each of ``--seeds``.

Prints the AUCPR table and writes ``docs/img/active_learning.png`` and the
results JSON under ``--out``; ``docs/active_learning.md`` quotes them.

Run::

    nice -n 10 python benchmarks/validate_active.py            # the documented run
    python benchmarks/validate_active.py --quick                # smoke test
    python benchmarks/validate_active.py --plot-only build/validate_active/results.json  # redraw the figure

The defaults (4 pool fields, 2 test fields, 30 + 3 x 30 labels, 20 epochs
of batch 16 from scratch per round, one seed) keep the whole comparison near
30 minutes on 2 cores loaded by other work: the absolute AUCPR is below that of the production model
(many more labels and epochs); the comparison between strategies is the
point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
REAL_KINDS = ("supernova", "variable", "asteroid")


def simulate_fields(seeds, *, size, supernovae, random_bogus, cache: Path, prefix: str):
    """Triplets of simulated fields, cached as netCDF per field (keyed by the parameters)."""

    from astrid import simulate
    from astrid.diffim import difference
    from astrid.triplets import (
        ExampleOptions,
        build_training_set,
        concat_triplets,
        load_triplets,
        write_triplets,
    )

    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for seed in seeds:
        field = f"{prefix}{seed:04d}"
        store = cache / f"{field}-s{size}-sn{supernovae}-rb{random_bogus}.nc"
        if store.exists():
            parts.append(load_triplets(store).load().drop_indexes("candidate_id"))
            continue
        t0 = time.perf_counter()
        sim = simulate.pair(size=size, seed=seed, n_supernovae=supernovae)
        result = difference(sim.reference, sim.science)
        examples = ExampleOptions(random_bogus=random_bogus, radius=3.0, real_kinds=REAL_KINDS)
        ds = build_training_set([(result, sim.truth, field)], examples, balance=None, seed=seed)
        write_triplets(ds, store)
        parts.append(ds.drop_indexes("candidate_id"))
        print(
            f"  {field}: {ds.sizes['candidate']} candidates ({int(ds['label'].sum())} real) "
            f"in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    ds = concat_triplets(parts)
    return ds


def _train(labelled, epochs, seed, batch_size=64):
    import keras

    from astrid import braai

    keras.utils.set_random_seed(int(seed))  # the initial weights, as train() would seed them
    network = braai.vgg6(tuple(int(labelled.sizes[d]) for d in ("y", "x", "channel")))
    return braai.train(
        labelled,
        network,
        config=braai.TrainConfig(split=None, epochs=epochs, seed=seed, batch_size=batch_size),
        track=False,
    ).model


def run_strategy(strategy, pool, test, seed_ids, args, seed, work: Path) -> list[dict]:
    from astrid import braai
    from astrid.braai import apply_labels, query, training_labels
    from astrid.widgets import LabelStore

    test_labels = test["label"].values
    truth = dict(zip((str(c) for c in pool["candidate_id"].values), pool["label"].values.tolist()))
    labels_file = work / f"{strategy}-seed{seed}.jsonl"
    labels_file.unlink(missing_ok=True)
    oracle = LabelStore(labels_file, labeller="simulator truth")
    for cid in seed_ids:
        oracle.add(cid, "real" if truth[cid] else "bogus")
    curve = []
    for round_ in range(args.rounds + 1):
        merged = apply_labels(pool, oracle)
        labelled = training_labels(merged)
        t0 = time.perf_counter()
        model = _train(labelled, args.epochs, seed, args.train_batch)
        scores = braai.predict(model, test)
        result = braai.evaluate(None, {"label": test_labels}, scores=scores)
        curve.append(
            {
                "labels": int(labelled.sizes["candidate"]),
                "n_real": int(labelled["label"].sum()),
                "aucpr": float(result["aucpr"]),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(
            f"    {strategy:12s} seed {seed} round {round_}: {curve[-1]['labels']} labels "
            f"({curve[-1]['n_real']} real) AUCPR {curve[-1]['aucpr']:.4f}",
            flush=True,
        )
        if round_ == args.rounds:
            break
        if strategy == "random":
            picked = query(None, merged, args.batch, strategy="random", seed=1000 * seed + round_)
        elif strategy == "bald":
            picked = query(
                model,
                merged,
                args.batch,
                strategy="bald",
                mc_samples=args.mc_samples,
                seed=1000 * seed + round_,
            )
        else:
            picked = query(model, merged, args.batch, strategy=strategy, seed=1000 * seed + round_)
        for i in picked:
            cid = str(merged["candidate_id"].values[i])
            oracle.add(cid, "real" if truth[cid] else "bogus", score=None)
    return curve


def labels_to_reach(curve, level):
    for point in curve:
        if point["aucpr"] >= level:
            return point["labels"]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool-fields", type=int, default=4)
    parser.add_argument("--test-fields", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--supernovae", type=int, default=40)
    parser.add_argument("--random-bogus", type=int, default=20)
    parser.add_argument("--seed-labels", type=int, default=30)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--mc-samples", type=int, default=4)
    parser.add_argument(
        "--train-batch",
        type=int,
        default=16,
        help="training batch size (braai: 64; few labels need more steps)",
    )
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--strategies", default="bald,diversity,uncertainty,random")
    parser.add_argument("--levels", default="0.9,0.95,0.98")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "validate_active")
    parser.add_argument(
        "--img", default=str(REPO / "docs" / "img"), help="figure folder, or 'none'"
    )
    parser.add_argument(
        "--quick", action="store_true", help="4+2 fields, 2 rounds, 2 epochs, one seed"
    )
    parser.add_argument(
        "--plot-only", type=Path, default=None, help="draw the figure from a results.json and stop"
    )
    args = parser.parse_args(argv)
    if args.plot_only is not None:
        saved = json.loads(
            args.plot_only.read_text()
        )  # results.json, or partial.json (the curves only)
        curves = {
            k: {int(s): v for s, v in c.items()} for k, c in saved.get("curves", saved).items()
        }
        _figure(
            curves,
            list(curves),
            sorted(next(iter(curves.values()))),
            saved.get("all_pool_labels_aucpr"),
            Path(args.img),
        )
        return 0
    if args.quick:
        args.pool_fields, args.test_fields, args.rounds, args.epochs, args.seeds = 4, 2, 2, 2, "0"
    os.environ.setdefault("ASTRID_TRACKING", "off")
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    print("simulating the pool and the test fields", flush=True)
    sim = dict(
        size=args.size,
        supernovae=args.supernovae,
        random_bogus=args.random_bogus,
        cache=args.out / "fields",
    )
    pool = simulate_fields(range(args.pool_fields), prefix="pool", **sim)
    test = simulate_fields(range(5000, 5000 + args.test_fields), prefix="test", **sim)
    print(
        f"pool: {pool.sizes['candidate']} candidates ({int(pool['label'].sum())} real); "
        f"test: {test.sizes['candidate']} ({int(test['label'].sum())} real)",
        flush=True,
    )

    seeds = [int(s) for s in args.seeds.split(",")]
    strategies = args.strategies.split(",")
    levels = [float(v) for v in args.levels.split(",")]
    ids = np.array([str(c) for c in pool["candidate_id"].values])
    curves: dict[str, dict[int, list]] = {s: {} for s in strategies}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        labels = pool["label"].values
        # A random seed set, with at least two of each class so the first model can train.
        while True:
            seed_ids = rng.choice(ids, args.seed_labels, replace=False)
            chosen = labels[np.isin(ids, seed_ids)]
            if chosen.sum() >= 2 and (chosen == 0).sum() >= 2:
                break
        for strategy in strategies:
            curves[strategy][seed] = run_strategy(
                strategy, pool, test, seed_ids.tolist(), args, seed, args.out
            )
            (args.out / "partial.json").write_text(
                json.dumps(curves, indent=1)
            )  # survives an interrupted run

    full_t0 = time.perf_counter()
    from astrid import braai

    full_model = _train(pool, args.epochs, seeds[0], args.train_batch)
    full = float(
        braai.evaluate(
            None, {"label": test["label"].values}, scores=braai.predict(full_model, test)
        )["aucpr"]
    )
    print(
        f"all {pool.sizes['candidate']} pool labels: AUCPR {full:.4f} ({time.perf_counter() - full_t0:.0f} s)"
    )

    header = ["strategy"] + [str(p["labels"]) for p in curves[strategies[0]][seeds[0]]]
    rows = []
    for strategy in strategies:
        mean = np.mean([[p["aucpr"] for p in curves[strategy][s]] for s in seeds], axis=0)
        rows.append([strategy] + [f"{v:.4f}" for v in mean])
    print("\nAUCPR on the test fields (mean over seeds) against the number of labels")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    reach = {
        strategy: {
            str(level): [labels_to_reach(curves[strategy][s], level) for s in seeds]
            for level in levels
        }
        for strategy in strategies
    }
    print("\nLabels needed to reach an AUCPR (per seed; None: not reached within the budget)")
    for strategy in strategies:
        print(
            f"  {strategy:12s} "
            + "  ".join(f"{level}: {reach[strategy][str(level)]}" for level in levels)
        )
    elapsed = time.perf_counter() - started
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpu": _cpu(),
            "load_1min": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "pool": {"n": int(pool.sizes["candidate"]), "real": int(pool["label"].sum())},
        "test": {"n": int(test.sizes["candidate"]), "real": int(test["label"].sum())},
        "curves": curves,
        "labels_to_reach": reach,
        "all_pool_labels_aucpr": full,
        "seconds": round(elapsed, 1),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(
        f"\nresults: {args.out / 'results.json'}; {elapsed / 60:.1f} min on {_cpu()} "
        f"(load {os.getloadavg()[0]:.1f})"
    )
    if args.img != "none":
        _figure(curves, strategies, seeds, full, Path(args.img))
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _figure(curves, strategies, seeds, full, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy in strategies:
        x = [p["labels"] for p in curves[strategy][seeds[0]]]
        values = np.array([[p["aucpr"] for p in curves[strategy][s]] for s in seeds])
        ax.plot(x, values.mean(axis=0), marker="o", label=strategy)
        if len(seeds) > 1:
            ax.fill_between(x, values.min(axis=0), values.max(axis=0), alpha=0.15)
    if full is not None:
        ax.axhline(full, color="k", ls="--", lw=1, label="all pool labels")
    ax.set_xlabel("labels")
    ax.set_ylabel("AUCPR on held-out simulated fields")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / "active_learning.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
