"""The ``astrid`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._version import __version__
from .errors import AstridError


def _cmd_simulate(args) -> int:
    from . import simulate

    manifest = simulate.survey(args.out, n_fields=args.n_fields, preset=args.preset, seed=args.seed, size=args.size)
    n_pairs = sum(1 for _ in manifest.pairs())
    print(f"simulated {len(manifest.targets)} field(s), {n_pairs} pair(s) under {args.out}")
    return 0


def _cmd_demo(args) -> int:
    from . import figures, simulate
    from .io import read_image
    from .manifest import Manifest

    start = time.perf_counter()
    out = Path(args.data)
    simulate.survey(out, n_fields=args.n_fields, preset=args.preset, seed=args.seed, size=args.size)
    manifest = Manifest.load(out)
    first = next(manifest.pairs())
    from astropy.table import Table

    truth = Table.read(first.truth) if first.truth else None
    fig = figures.plot_pair(read_image(first.reference), read_image(first.science), truth=truth)
    paths = figures.save(fig, "demo_pair", args.figures)
    print(f"survey: {out / 'manifest.json'} ({len(manifest.targets)} fields)")
    for path in paths:
        print(f"figure: {path}")
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astrid",
        description="AstrID: find supernovae and transients by image differencing and a real/bogus CNN.",
    )
    parser.add_argument("--version", action="version", version=f"astrid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="simulate a small survey and draw one pair (the main job)")
    demo.add_argument("--data", default="data/survey", help="survey folder to write (default: data/survey)")
    demo.add_argument("--figures", default="figures", help="figure folder (default: figures)")
    demo.add_argument("--n-fields", type=int, default=4)
    demo.add_argument("--size", type=int, default=1024, help="image side in pixels")
    demo.add_argument("--preset", default="ztf", choices=["ztf", "swift_uvot"])
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    sim = sub.add_parser("simulate", help="write a simulated survey (FITS pairs, truth tables, manifest)")
    sim.add_argument("out", help="output folder")
    sim.add_argument("--n-fields", type=int, default=4)
    sim.add_argument("--size", type=int, default=1024)
    sim.add_argument("--preset", default="ztf", choices=["ztf", "swift_uvot"])
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_cmd_simulate)

    from . import runner

    run = sub.add_parser("run", help="execute notebooks for every parameter set (papermill on Dask)")
    runner.configure_run_parser(run)
    run.set_defaults(func=runner.cmd_run)
    runs = sub.add_parser("runs", help="list batch runs and their metrics")
    runner.configure_runs_parser(runs)
    runs.set_defaults(func=runner.cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except AstridError as exc:
        print(f"astrid: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
