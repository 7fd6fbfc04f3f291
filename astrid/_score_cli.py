"""``astrid score``: alert files, triplet stores or FITS pairs in, a table of scores out.

::

    astrid score alerts/ --model d6_m7.h5 -o scores.ecsv
    astrid score night1.zarr --model vgg6.tflite -o night1.parquet
    astrid score --pairs pairs.csv --model vgg6.keras -o pairs.ecsv
    astrid score incoming/ --model vgg6.tflite -o live.ecsv --watch --interval 30

Each input (one alert file, one triplet store, one reference/science pair)
is scored on its own (:func:`astrid.score.score`) and its rows appended to
the output table (ECSV or Parquet, by the suffix): ``candidate_id``,
``score``, ``input``, ``model``, ``model_sha256`` and, where the inputs have
them, ``candid``, ``objectId``, ``drb``, ``survey`` and ``pair``. The table's
metadata (``astrid_scores``) holds the model's identity and the drift check
(:mod:`astrid.drift`) of all its scores against the model's reference.

The inputs scored so far are listed in a state file beside the output
(``<output>.state.json``, written atomically after the table), so a rerun -
or ``--watch``, which polls for new files - scores only what is new, each
input exactly once. The table is the authority: an input whose rows are in
it counts as scored even if the state file missed it (a crash between the
two writes), and one listed in the state but missing from the table is
scored again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AstridFileError, AstridInputError
from .io import atomic_write

__all__ = ["configure_score_parser", "cmd_score", "STATE_FORMAT"]

STATE_FORMAT = "astrid-score-state/1"
ALERT_SUFFIXES = (".avro", ".parquet", ".json")
STORE_SUFFIXES = (".zarr", ".nc")
# Scanning a folder takes JSON only when named: folders often hold unrelated JSON.
_FOLDER_SUFFIXES = (".avro", ".parquet", ".nc")
# During a long run the table and state are rewritten at most this often (and after every poll).
_FLUSH_S = 5.0
# Exit codes besides 0 (all well) and 2 (bad arguments or unusable output/model).
EXIT_INPUT_FAILED = 1
EXIT_DRIFT = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class _Input:
    key: str  # what the table's ``input`` column and the state file call it
    kind: str  # "alerts", "triplets" or "pair"
    path: Path | None = None
    reference: Path | None = None
    science: Path | None = None

    def stat(self) -> tuple[int, int] | None:
        """(size, mtime_ns) of the input's file(s); None when gone."""
        paths = [self.path] if self.path is not None else [self.reference, self.science]
        size = mtime = 0
        try:
            for path in paths:
                files = [path]
                if path.is_dir():
                    # A Zarr store is a folder: its files, not the folder's own entry, show a write in progress.
                    mtime = max(mtime, path.stat().st_mtime_ns)
                    files = [p for p in path.rglob("*") if p.is_file()]
                for file in files:
                    st = file.stat()
                    size += st.st_size
                    mtime = max(mtime, st.st_mtime_ns)
        except OSError:
            return None
        return size, mtime


def configure_score_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``astrid score``."""
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="alert files (.avro, .parquet, .json), triplet stores (.zarr, .nc) or folders of them",
    )
    parser.add_argument("--model", required=True, help="model file: .tflite, .keras or braai .h5")
    parser.add_argument(
        "-o",
        "--output",
        default="scores.ecsv",
        help="scores table, .ecsv or .parquet (default scores.ecsv); rows are appended on reruns",
    )
    parser.add_argument(
        "--pairs",
        default=None,
        metavar="CSV",
        help="FITS image pairs to difference and score: a CSV with columns reference, science "
        "and optionally name (paths relative to the CSV)",
    )
    parser.add_argument(
        "--reference-scores",
        default=None,
        metavar="FILE",
        help="reference score distribution of the drift check (a model card, a .json "
        "distribution, a .npy/.txt of scores or a table with a 'score' column); default "
        "the card beside the model",
    )
    parser.add_argument("--state", default=None, help="state file (default <output>.state.json)")
    parser.add_argument(
        "--watch", action="store_true", help="keep polling the paths and score new inputs"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=10.0,
        help="seconds between polls with --watch (default 10)",
    )
    parser.add_argument(
        "--max-polls", type=int, default=None, help="stop after this many polls (default: never)"
    )
    parser.add_argument(
        "--threshold", type=float, default=5.0, help="detection threshold of --pairs, sigma"
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="triplets scored at a time (default 256)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="interpreter threads (default: all cores)"
    )
    parser.add_argument(
        "--fail-on-drift",
        action="store_true",
        help=f"exit with status {EXIT_DRIFT} when the scores drift from the reference",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary line"
    )


# ----------------------------------------------------------------------------- inputs


def _classify(path: Path, explicit: bool) -> _Input | None:
    name = path.name.lower()
    if name.startswith(".") or name.endswith(".part"):
        return None  # temporary files of writers that rename when done
    suffix = path.suffix.lower()
    if path.is_dir():
        return _Input(str(path), "triplets", path) if suffix == ".zarr" else None
    if suffix in STORE_SUFFIXES:
        return _Input(str(path), "triplets", path)
    if suffix in (ALERT_SUFFIXES if explicit else _FOLDER_SUFFIXES):
        return _Input(str(path), "alerts", path)
    if explicit:
        if suffix in (".fits", ".fz", ".gz", ".fit"):
            raise AstridInputError(
                f"{path}: FITS images are scored as pairs: list them in a --pairs CSV "
                "(columns reference, science)"
            )
        raise AstridInputError(
            f"{path}: not an input astrid score reads (expected {ALERT_SUFFIXES + STORE_SUFFIXES} "
            "or a folder of them)"
        )
    return None


def _discover(paths: list[str], pairs_csv: str | None, exclude: set[Path]) -> list[_Input]:
    found: dict[str, _Input] = {}
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise AstridFileError(f"{path}: no such file or folder")
        if path.is_dir() and path.suffix.lower() != ".zarr":
            for root, dirs, files in os.walk(path):
                root_path = Path(root)
                stores = [d for d in dirs if d.lower().endswith(".zarr")]
                dirs[:] = sorted(d for d in dirs if d not in stores and not d.startswith("."))
                for name in [*stores, *files]:
                    item = root_path / name
                    if item.resolve() in exclude:
                        continue
                    inp = _classify(item, explicit=False)
                    if inp is not None:
                        found.setdefault(inp.key, inp)
        else:
            inp = _classify(path, explicit=True)
            if inp is not None:
                found.setdefault(inp.key, inp)
    if pairs_csv is not None:
        for inp in _read_pairs(Path(pairs_csv)):
            found.setdefault(inp.key, inp)
    return [found[key] for key in sorted(found)]


def _read_pairs(csv: Path) -> list[_Input]:
    from astropy.table import Table

    if not csv.is_file():
        raise AstridFileError(f"{csv}: no such pairs file")
    try:
        table = Table.read(csv, format="ascii.csv")
    except (OSError, ValueError) as exc:
        raise AstridFileError(f"{csv}: not a readable CSV ({exc})") from exc
    missing = [c for c in ("reference", "science") if c not in table.colnames]
    if missing:
        raise AstridInputError(
            f"{csv}: a pairs file needs columns reference and science, missing {missing} "
            f"(found {table.colnames})"
        )
    out = []
    for i, row in enumerate(table):
        reference, science = (csv.parent / str(row[c]) for c in ("reference", "science"))
        name = str(row["name"]) if "name" in table.colnames else f"{reference.name}|{science.name}"
        out.append(_Input(name, "pair", reference=reference, science=science))
    names = [inp.key for inp in out]
    if len(set(names)) != len(names):
        raise AstridInputError(f"{csv}: pair names must be unique")
    return out


def _read_alerts(path: Path):
    from . import alerts

    reader = getattr(alerts, "read_alerts", None)
    if reader is None:
        return alerts.read_ztf([path], require_stamps=False)
    return reader([path], require_stamps=False)


def _pair_triplets(inp: _Input, threshold: float):
    from .diffim import difference
    from .triplets import detect, make_triplets

    result = difference(inp.reference, inp.science)
    candidates = detect(result, threshold, prefix=inp.key)
    if not len(candidates):
        return None
    ds = make_triplets(result, candidates)
    return ds.assign_coords(pair=("candidate", np.full(ds.sizes["candidate"], inp.key)))


def _score_input(inp: _Input, args, identity: dict):
    """(rows, number of candidates without stamp data) of one input."""
    from ._scoring import empty_scores, scores_table
    from .score import score

    ds = None
    if inp.kind == "alerts":
        ds = _read_alerts(inp.path)
    elif inp.kind == "triplets":
        from .triplets import load_triplets

        ds = load_triplets(inp.path)
    else:
        ds = _pair_triplets(inp, args.threshold)
    if ds is None or ds.sizes.get("candidate", 0) == 0:
        return empty_scores(), 0
    try:
        scores = score(ds, args.model, batch_size=args.batch_size, num_threads=args.threads)
    finally:
        ds.close()
    n_nan = int(np.count_nonzero(~np.isfinite(scores.values)))
    return scores_table(scores, inp.key, identity), n_nan


# ----------------------------------------------------------------------------- output and state


class _Run:
    """The output table, the state file and the drift check of one ``astrid score`` invocation."""

    def __init__(self, output: Path, state_path: Path, identity: dict, reference: dict | None):
        from ._scoring import TABLE_SUFFIXES, empty_scores, read_scores

        if output.suffix.lower() not in TABLE_SUFFIXES:
            raise AstridInputError(
                f"--output {output}: expected a {' or '.join(TABLE_SUFFIXES)} file"
            )
        self.output, self.state_path, self.identity, self.reference = (
            output,
            state_path,
            identity,
            reference,
        )
        self.table = empty_scores()
        self.pending: list = []
        self.drift = None
        self.inputs: dict[str, dict] = {}
        if output.exists():
            self.table = read_scores(output)
            recorded = (self.table.meta.get("astrid_scores") or {}).get("model") or {}
            if recorded.get("model_sha256") != identity["model_sha256"]:
                raise AstridInputError(
                    f"{output}: holds scores of another model ({recorded.get('model')!r}, sha256 "
                    f"{str(recorded.get('model_sha256'))[:12]}…; now {identity['model']!r}, "
                    f"{identity['model_sha256'][:12]}…); write to a new --output"
                )
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text())
            except (OSError, ValueError) as exc:
                raise AstridFileError(
                    f"{state_path}: unreadable state file ({exc}); delete it to rebuild it "
                    "from the output table"
                ) from exc
            if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
                raise AstridFileError(f"{state_path}: not an astrid score state file")
            if state.get("model_sha256") != identity["model_sha256"]:
                raise AstridInputError(
                    f"{state_path}: lists inputs scored with another model; use a new --output "
                    "(or --state)"
                )
            self.inputs = dict(state.get("inputs") or {})
        # The table decides what was scored (see the module docstring).
        in_table = {}
        if len(self.table):
            keys, counts = np.unique(np.asarray(self.table["input"], dtype=str), return_counts=True)
            in_table = dict(zip(keys.tolist(), counts.tolist()))
        for key, record in list(self.inputs.items()):
            if record.get("status") == "scored" and record.get("n", 0) > 0 and key not in in_table:
                del self.inputs[key]
        for key, n in in_table.items():
            if key not in self.inputs or self.inputs[key].get("status") != "scored":
                self.inputs[key] = {"status": "scored", "n": int(n), "recovered": True}
        self.last_flush = time.monotonic()

    def wants(self, inp: _Input) -> bool:
        record = self.inputs.get(inp.key)
        if record is None:
            return True
        # A failed input is tried again once its file changes (e.g. a copy completed).
        return record.get("status") == "failed" and list(inp.stat() or ()) != record.get("stat")

    def scored(self, inp: _Input, rows, n_nan: int) -> None:
        self.pending.append(rows)
        self.inputs[inp.key] = {
            "status": "scored",
            "n": len(rows),
            "n_no_data": n_nan,
            "stat": list(inp.stat() or ()),
        }

    def failed(self, inp: _Input, error: str) -> None:
        self.inputs[inp.key] = {"status": "failed", "error": error, "stat": list(inp.stat() or ())}

    def flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_flush < _FLUSH_S:
            return
        from ._scoring import concat, table_meta, write_scores
        from .drift import compare

        if self.pending:
            self.table = concat([self.table, *self.pending])
            self.pending = []
        scores = np.asarray(self.table["score"], dtype=np.float64)
        self.drift = None
        if self.reference is not None and np.isfinite(scores).any():
            self.drift = compare(scores, self.reference, warn=False)
        self.table.meta["astrid_scores"] = table_meta(
            self.identity,
            None if self.drift is None else self.drift.to_dict(),
            None if self.reference is None else str(self.reference.get("source") or "given"),
            n_inputs=sum(1 for r in self.inputs.values() if r.get("status") == "scored"),
        )
        write_scores(self.output, self.table)
        # After the table: a crash in between leaves rows the table vouches for (see __init__).
        state = {
            "format": STATE_FORMAT,
            "output": str(self.output),
            "model": self.identity["model"],
            "model_sha256": self.identity["model_sha256"],
            "inputs": self.inputs,
        }
        text = json.dumps(state, indent=1, sort_keys=True)
        atomic_write(self.state_path, lambda fh: fh.write(text), mode="w")
        self.last_flush = time.monotonic()


def _settled(inp: _Input, previous: dict, now_ns: int, settle_s: float) -> bool:
    """Whether a file seen while watching is complete: unchanged since the last poll, or older than ``settle_s``."""
    stat = inp.stat()
    if stat is None:
        return False
    return previous.get(inp.key) == stat or (now_ns - stat[1]) / 1e9 >= settle_s


def _warning_lines(caught, key: str) -> list[str]:
    seen = []
    for w in caught:
        line = f"astrid: warning: {key}: {w.category.__name__}: {w.message}"
        if line not in seen:
            seen.append(line)
    return seen


def cmd_score(args) -> int:
    """Run ``astrid score``; the exit status."""
    from ._scoring import model_identity
    from .drift import load_reference, reference_for_model
    from .score import score

    if not args.paths and args.pairs is None:
        raise AstridInputError(
            "astrid score: give alert files, triplet stores or folders (PATH...) or --pairs CSV"
        )
    if args.interval <= 0 or not np.isfinite(args.interval):
        raise AstridInputError(f"--interval {args.interval}: must be a positive number of seconds")
    if args.max_polls is not None and args.max_polls < 1:
        raise AstridInputError(f"--max-polls {args.max_polls}: must be at least 1")
    output = Path(args.output)
    state_path = Path(args.state) if args.state else output.with_name(output.name + ".state.json")
    identity = model_identity(args.model)
    reference = (
        load_reference(args.reference_scores, "--reference-scores")
        if args.reference_scores
        else reference_for_model(args.model)
    )
    run = _Run(output, state_path, identity, reference)
    # A model that cannot score fails here, once, rather than on every input.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score(
            np.zeros((1, 63, 63, 3), dtype=np.float32),
            args.model,
            batch_size=1,
            num_threads=args.threads,
        )

    exclude = {output.resolve(), state_path.resolve()}
    _discover(args.paths, args.pairs, exclude)  # bad paths fail before anything is written
    # Written now, before any scoring: an output that cannot be written fails at once, not after an hour's work.
    run.flush(force=True)
    progress_off = args.quiet or not sys.stderr.isatty()
    totals = {"inputs": 0, "rows": 0, "failed": 0, "no_data": 0}
    previous: dict[str, tuple] = {}
    polls = 0
    drift_reported = interrupted = False
    try:
        while True:
            inputs = _discover(args.paths, args.pairs, exclude)
            todo = [inp for inp in inputs if run.wants(inp)]
            if args.watch:
                now = time.time_ns()
                ready = [inp for inp in todo if _settled(inp, previous, now, args.interval)]
                previous = {inp.key: inp.stat() for inp in todo}
                todo = ready
            _score_all(todo, run, args, identity, totals, progress_off)
            if todo:
                run.flush(force=True)
            polls += 1
            if run.drift is not None and run.drift.drifted and not drift_reported and args.watch:
                print(
                    f"astrid: warning: DriftWarning: {output}: {run.drift.summary()}",
                    file=sys.stderr,
                )
                drift_reported = True
            if not args.watch or (args.max_polls is not None and polls >= args.max_polls):
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        interrupted = True
        print("astrid score: interrupted; what was scored is saved", file=sys.stderr)
    run.flush(force=True)

    drift = run.drift
    if drift is not None and drift.drifted and not drift_reported:
        print(f"astrid: warning: DriftWarning: {output}: {drift.summary()}", file=sys.stderr)
    if not args.quiet:
        if drift is not None:
            drift_text = drift.summary()
        elif reference is None:
            drift_text = "drift not checked: the model has no card with validation scores (give --reference-scores)"
        else:
            drift_text = "drift not checked: no finite scores"
        extra = f", {totals['no_data']} without stamp data (score NaN)" if totals["no_data"] else ""
        print(
            f"astrid score: {totals['rows']} candidate(s) from {totals['inputs']} new input(s) "
            f"({totals['failed']} failed{extra}) -> {output} ({len(run.table)} rows); {drift_text}"
        )
    if interrupted:
        return EXIT_INTERRUPTED
    if args.fail_on_drift and drift is not None and drift.drifted:
        return EXIT_DRIFT
    return EXIT_INPUT_FAILED if totals["failed"] else 0


def _score_all(
    todo: list[_Input], run: _Run, args, identity: dict, totals: dict, progress_off: bool
) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(todo),
        desc="scoring",
        unit="input",
        file=sys.stderr,
        disable=progress_off or not todo,
    )
    try:
        for inp in todo:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    rows, n_nan = _score_input(inp, args, identity)
                except (
                    Exception
                ) as exc:  # one bad input must not stop a watch; it is recorded and reported
                    error = f"{type(exc).__name__}: {exc}"
                    run.failed(inp, error)
                    totals["failed"] += 1
                    bar.write(f"astrid: error: {inp.key}: {error}", file=sys.stderr)
                    rows = None
            if rows is not None:
                run.scored(inp, rows, n_nan)
                totals["inputs"] += 1
                totals["rows"] += len(rows)
                totals["no_data"] += n_nan
            for line in _warning_lines(caught, inp.key):
                if "NoDataWarning" not in line:  # counted in the summary line instead
                    bar.write(line, file=sys.stderr)
            bar.update(1)
            run.flush()
    finally:
        bar.close()
