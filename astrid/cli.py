"""The ``astrid`` command line."""

from __future__ import annotations

import argparse
import sys
import time

from ._version import __version__
from .errors import AstridError


def _cmd_simulate(args) -> int:
    from . import simulate

    manifest = simulate.survey(
        args.out, n_fields=args.n_fields, preset=args.preset, seed=args.seed, size=args.size
    )
    n_pairs = sum(1 for _ in manifest.pairs())
    print(f"simulated {len(manifest.targets)} field(s), {n_pairs} pair(s) under {args.out}")
    return 0


def _cmd_demo(args) -> int:
    from .mainjob import run_main_job

    start = time.perf_counter()

    def progress(task) -> None:
        took = f"{task.duration_s:.0f} s" if task.duration_s is not None else "-"
        error = f" - {task.error}" if task.error else ""
        print(f"{task.stem}: {task.status} ({took}){error}", flush=True)

    result = run_main_job(
        args.config, small=args.small, root=args.root, run_id=args.run_id, on_task_done=progress
    )
    print(result.summary())
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0 if result.ok else 1


def _cmd_warmup(args) -> int:
    from ._warmup import warmup

    warmup(progress=None if args.quiet else lambda line: print(line, flush=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astrid",
        description="AstrID: find supernovae and transients by image differencing and a real/bogus CNN.",
    )
    parser.add_argument("--version", action="version", version=f"astrid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="the main job: run notebooks 01-06 on the simulated survey, figures into figures/",
    )
    demo.add_argument(
        "--config", default=None, help="runner YAML (default: configs/main_job.yaml settings)"
    )
    demo.add_argument("--small", action="store_true", help="tiny parameters (the CI configuration)")
    demo.add_argument(
        "--root",
        default=None,
        help="repository root the notebooks write under (default: this checkout)",
    )
    demo.add_argument("--run-id", default=None, help="papermill_runs/<run-id> (default: a new one)")
    demo.set_defaults(func=_cmd_demo)

    sim = sub.add_parser(
        "simulate", help="write a simulated survey (FITS pairs, truth tables, manifest)"
    )
    sim.add_argument("out", help="output folder")
    sim.add_argument("--n-fields", type=int, default=4)
    sim.add_argument("--size", type=int, default=1024)
    sim.add_argument("--preset", default="ztf", choices=["ztf", "swift_uvot"])
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_cmd_simulate)

    warm = sub.add_parser(
        "warmup",
        help="compile the numba kernels once into the on-disk cache (run by make install and make demo)",
    )
    warm.add_argument("--quiet", action="store_true", help="no progress lines")
    warm.set_defaults(func=_cmd_warmup)

    from . import runner

    run = sub.add_parser(
        "run", help="execute notebooks for every parameter set (papermill on Dask)"
    )
    runner.configure_run_parser(run)
    run.set_defaults(func=runner.cmd_run)
    runs = sub.add_parser("runs", help="list batch runs and their metrics")
    runner.configure_runs_parser(runs)
    runs.set_defaults(func=runner.cmd_runs)

    from ._score_cli import cmd_score, configure_score_parser

    score = sub.add_parser(
        "score",
        help="real/bogus scores of alert files, triplet stores or FITS pairs into a table (with --watch)",
        description="Score alert files (.avro, .parquet, .json), triplet stores (.zarr, .nc), folders of them "
        "or FITS pairs (--pairs) with a model; write an ECSV or Parquet table with the model's "
        "identity and a drift check. Reruns and --watch score only new inputs.",
    )
    configure_score_parser(score)
    score.set_defaults(func=cmd_score)
    return parser


def _os_error_text(exc: OSError) -> str:
    """One line naming the path(s) of an OSError."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None and exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return f"{type(exc).__name__}: {reason}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # Bad input and file-system trouble are the user's to fix: one line naming the path, not a traceback.
    try:
        return args.func(args)
    except AstridError as exc:
        print(f"astrid: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"astrid: error: {_os_error_text(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
