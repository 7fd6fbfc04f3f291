"""Command-line helpers for ``astrid run`` and ``astrid runs``.

``astrid.cli`` wires them as subcommands::

    p = sub.add_parser("run", help="execute notebooks for every parameter set (papermill on Dask)")
    runner.configure_run_parser(p); p.set_defaults(func=runner.cmd_run)
    p = sub.add_parser("runs", help="list batch runs and their metrics")
    runner.configure_runs_parser(p); p.set_defaults(func=runner.cmd_runs)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..errors import AstridError

__all__ = [
    "configure_run_parser",
    "cmd_run",
    "configure_runs_parser",
    "cmd_runs",
    "cli_run",
    "cli_runs",
]


def configure_run_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``astrid run CONFIG.yaml`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    parser.add_argument("config", help="YAML run configuration (notebooks, parameters, grid, ...)")
    parser.add_argument(
        "--run-id",
        help="run id (default: the configuration's, else the UTC start time); "
        "an existing id resumes that run",
    )
    parser.add_argument(
        "--output-root",
        help="folder of the runs (default: the configuration's, else papermill_runs)",
    )
    parser.add_argument(
        "--scheduler",
        help="'sync' (in process), a Dask scheduler address, or leave out for a local Dask cluster",
    )
    parser.add_argument("--n-workers", type=int, help="workers of the local Dask cluster")
    return parser


def _print_task(task) -> None:
    seconds = f" {task.duration_s:.1f} s" if task.duration_s is not None else ""
    error = f"  {task.error}" if task.error else ""
    print(f"{task.status:<8} {task.stem}/{task.slug}{seconds}{error}", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a batch from parsed ``astrid run`` arguments; exit status 1 if a task failed.

    Parameters
    ----------
    args : argparse.Namespace
        Arguments parsed by a :func:`configure_run_parser` parser.

    Returns
    -------
    int
        Exit status: 0 if every task succeeded, 1 if a task failed.
    """
    from ._config import RunConfig
    from ._core import run

    config = RunConfig.from_yaml(args.config)
    overrides = {
        name: getattr(args, name)
        for name in ("run_id", "output_root", "scheduler", "n_workers")
        if getattr(args, name, None) is not None
    }
    if overrides:
        try:
            config = dataclasses.replace(config, **overrides)
        except AstridError as exc:
            raise type(exc)(f"{args.config} with command-line options: {exc}") from None
    n_tasks = len(config.notebooks) * len(config.parameter_sets())
    print(
        f"run {config.run_id}: {n_tasks} task(s) -> {config.output_root}/{config.run_id}",
        flush=True,
    )
    result = run(config, on_task_done=_print_task)
    print(result.summary())
    return 0 if result.ok else 1


def configure_runs_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``astrid runs [RUN_ID] [--root papermill_runs]`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    parser.add_argument(
        "run_id", nargs="?", help="show the tasks of this run instead of the list of runs"
    )
    parser.add_argument(
        "--root", default="papermill_runs", help="folder of the runs (default: papermill_runs)"
    )
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="with RUN_ID: show each task's MLflow run id (notebook, slug, status, duration, run)",
    )
    return parser


def cmd_runs(args: argparse.Namespace) -> int:
    """Print the runs under ``--root`` (or the tasks of one run).

    Parameters
    ----------
    args : argparse.Namespace
        Arguments parsed by a :func:`configure_runs_parser` parser.

    Returns
    -------
    int
        Exit status 0.
    """
    from ._runs import MLFLOW_COLUMNS, format_table, list_runs, run_tasks

    table = run_tasks(args.run_id, args.root) if args.run_id else list_runs(args.root)
    text = format_table(
        table, MLFLOW_COLUMNS if getattr(args, "mlflow", False) and args.run_id else None
    )
    if len(table) == 0 and not args.run_id:
        text = f"no runs under {args.root}"
    print(text)
    return 0


def _cli(configure, command, prog: str, argv: list[str] | None) -> int:
    parser = configure(argparse.ArgumentParser(prog=prog))
    args = parser.parse_args(argv)
    try:
        return command(args)
    except AstridError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def cli_run(argv: list[str] | None = None) -> int:
    """``astrid run`` as a function: parse ``argv`` and run; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 if every task succeeded, 1 if a task failed, 2 on an error.
    """
    return _cli(configure_run_parser, cmd_run, "astrid run", argv)


def cli_runs(argv: list[str] | None = None) -> int:
    """``astrid runs`` as a function: parse ``argv`` and print; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0, or 2 on an error.
    """
    return _cli(configure_runs_parser, cmd_runs, "astrid runs", argv)
