"""Difference a whole survey on Dask: :func:`process_pairs` and its :class:`BatchReport`.

One Dask task per reference/science pair runs align → background → PSF →
ZOGY (:func:`astrid.difference`) → :func:`~astrid.triplets.detect` →
:func:`~astrid.triplets.label_candidates` (when the survey has a truth
table) → :func:`~astrid.triplets.make_triplets`, and writes the pair's
outputs atomically into its own folder with a ``done.json`` marker last
(:func:`~astrid.batch.verify_pair_outputs` checks them). The client - the only writer of the shared
Zarr store - appends each pair's triplets as its task completes and records
the pair in the store. A failing pair is recorded with its traceback in
``<out_dir>/batch.json`` and the batch goes on; a rerun skips the pairs
whose outputs are complete and committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import traceback
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from astropy.table import Table

from .._optional import require
from .._utils import json_safe, kinds_tuple
from ..errors import AstridInputError
from ..io import atomic_write, write_ecsv
from ..manifest import Manifest, SurveyPair
from ..triplets import REAL_KINDS
from . import _outputs
from ._client import (
    cluster_threads,
    default_layout,
    get_client,
    positive_int,
    thread_limits,
)

__all__ = ["process_pairs", "BatchReport", "BatchOptions", "BATCH_MANIFEST_NAME"]

#: The batch manifest written in ``out_dir``.
BATCH_MANIFEST_NAME = "batch.json"
BATCH_SCHEMA = "astrid-batch/1"
#: Statuses of a pair in a :class:`BatchReport`.
STATUSES = ("done", "resumed", "skipped", "failed")
# Rewriting batch.json after every pair of a long batch would cost O(n²) bytes;
# between pairs it is rewritten at most this often (done.json markers are the
# durable per-pair state; failures are written at once).
_MANIFEST_INTERVAL_S = 2.0
# One append to the shared store takes at most this many pairs, and more
# than one pair only while their candidates stay under _COMMIT_CANDIDATES
# (about 60 kB each in memory: the client holds a group twice while it
# concatenates).
_COMMIT_GROUP = 32
_COMMIT_CANDIDATES = 4096
# Options of difference() besides the stage options it validates itself.
_DIFFERENCE_KEYWORDS = (
    "method",
    "align",
    "flux_ratio",
    "allow_mismatch",
    "dtype",
    "science_psf",
    "reference_psf",
)


@dataclass
class BatchReport:
    """What :func:`process_pairs` did.

    Attributes
    ----------
    table : astropy.table.Table
        One row per pair: ``pair``, ``target``, ``status`` (``done``: run
        now; ``resumed``: complete outputs of an earlier run committed to the
        store now; ``skipped``: complete and committed before; ``failed``),
        ``n_candidates``, ``elapsed_s`` (task time, s), ``cpu_s`` (CPU time
        of the worker process during the task, s), ``worker``,
        ``reason`` (why it ran or was skipped), ``error`` (one line; the
        traceback is in the batch manifest).
    out_dir : pathlib.Path
        Root of the per-pair outputs.
    triplet_store : pathlib.Path
        The shared Zarr store of every pair's triplets.
    manifest_path : pathlib.Path
        The batch manifest (JSON) with every pair's record.
    elapsed_s : float
        Wall time of the call, s (cluster start included).
    compute_s : float
        Wall time from the first task submitted to the last result, s.
    n_workers : int or None
        Workers of the cluster (None when no task ran).
    threads_per_worker : int or None
        Compute threads each task used.
    scores_path : pathlib.Path or None
        With a model: ``<out_dir>/scores.ecsv``, every candidate's score
        (gathered from the pairs' ``scores.ecsv``) with the model's identity
        and the drift check in its metadata.
    drift : astrid.drift.DriftResult or None
        The drift check of the batch's scores against the model's reference
        (None without a model or without a reference).
    n_scored : int
        Pairs scored in this call (0 on a rerun that had nothing to do).
    """

    table: Table
    out_dir: Path
    triplet_store: Path
    manifest_path: Path
    elapsed_s: float
    compute_s: float = 0.0
    n_workers: int | None = None
    threads_per_worker: int | None = None
    scores_path: Path | None = None
    drift: Any = None
    n_scored: int = 0

    @property
    def scores(self) -> Table | None:
        """The batch's scores table (None without a model)."""
        if self.scores_path is None:
            return None
        from .._scoring import read_scores

        return read_scores(self.scores_path)

    @property
    def counts(self) -> dict[str, int]:
        """Pairs per status (every status present, zero or not)."""
        found = Counter(str(s) for s in self.table["status"]) if len(self.table) else Counter()
        return {status: int(found.get(status, 0)) for status in STATUSES}

    @property
    def n_processed(self) -> int:
        """Pairs whose task ran in this call (done or failed)."""
        if not len(self.table):
            return 0
        ran = np.isin(np.asarray(self.table["status"], dtype=str), ["done", "failed"])
        return int(ran.sum())

    @property
    def pairs_per_minute(self) -> float:
        """Pairs processed per minute of :attr:`compute_s` (NaN when none ran)."""
        if self.n_processed == 0 or self.compute_s <= 0:
            return float("nan")
        return 60.0 * self.n_processed / self.compute_s

    @property
    def failed(self) -> Table:
        """The rows of failed pairs."""
        return self.table[np.asarray(self.table["status"], dtype=str) == "failed"]

    @property
    def ok(self) -> bool:
        """True when no pair failed."""
        return self.counts["failed"] == 0

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        rate = self.pairs_per_minute
        rate_text = f", {rate:.1f} pairs/min" if np.isfinite(rate) else ""
        return f"<BatchReport {len(self.table)} pairs: {counts}; {self.elapsed_s:.1f} s{rate_text}>"


@dataclass
class PairTask:
    """Everything a worker needs to process one pair (pickled to the worker).

    Attributes
    ----------
    pair : astrid.SurveyPair
        The reference/science pair (and its truth table, if any).
    pair_dir : pathlib.Path
        The pair's output folder.
    threshold : float
        Detection threshold, sigma.
    difference_options : dict
        Keyword arguments of :func:`astrid.difference`.
    threads : int
        Compute threads of the task.
    fingerprint : str
        Hash of the options that decide the outputs (written to ``done.json``).
    label_radius : float
        Truth-matching radius, pixels.
    real_kinds : tuple of str
        Truth kinds labelled real.
    model : str or None
        Model file to score with; None: no scoring.
    model_identity : dict or None
        The model's identity (file and card SHA-256, version).
    score_only : bool
        Outputs are complete and current; only the scores are missing or from another model.
    """

    pair: SurveyPair
    pair_dir: Path
    threshold: float
    difference_options: dict
    threads: int
    fingerprint: str
    label_radius: float = 2.0
    real_kinds: tuple = REAL_KINDS
    model: str | None = None
    model_identity: dict | None = None
    score_only: bool = False


@dataclass
class BatchHooks:
    """Test hooks of :func:`process_pairs`, off its public signature (set them through
    :mod:`astrid.batch.testing`).

    Attributes
    ----------
    process : callable or None
        Replaces :func:`run_pair` as the pair function (``PairTask -> record``);
        the difference options are then not validated.
    on_result : callable or None
        Called on the client as ``on_result(client, record)`` after each pair's
        outcome is recorded (e.g. to kill a worker mid-batch).
    """

    process: Callable | None = None
    on_result: Callable | None = None


#: The hooks in force (all None outside tests).
hooks = BatchHooks()


# ----------------------------------------------------------------------------- worker side


def _unlabelled(candidates: Table) -> Table:
    """The label columns of :func:`label_candidates`, for pairs without a truth table."""
    out = candidates.copy(copy_data=True)
    n = len(out)
    out["label"] = np.full(n, -1, dtype=np.int8)
    out["label"].description = "-1: unknown (the survey has no truth table for this field)"
    out["kind"] = np.full(n, "unknown", dtype="U16")
    out["truth_id"] = np.full(n, -1, dtype=np.int64)
    out["offset"] = np.full(n, np.nan)
    out["offset"].unit = "pix"
    return out


def run_pair(task: PairTask) -> dict:
    """The pipeline of one pair: difference, detect, label, triplets; outputs written atomically.

    Returns the record for the batch manifest (also written in the pair's
    ``done.json``).

    Parameters
    ----------
    task : PairTask
        The pair, its output folder and the options of each step.

    Returns
    -------
    dict
        The pair's record for the batch manifest.
    """
    from astropy.table import Table as _Table

    from ..diffim import difference
    from ..triplets import detect, label_candidates, make_triplets, write_triplets

    pair, pair_dir = task.pair, Path(task.pair_dir)
    pair_dir.mkdir(parents=True, exist_ok=True)
    # The old marker must not vouch for files that are about to be replaced.
    (pair_dir / _outputs.MARKER_NAME).unlink(missing_ok=True)
    options = dict(task.difference_options)
    options.setdefault("workers", task.threads)  # scipy.fft would otherwise use every core
    timings = {}
    start = time.perf_counter()
    result = difference(pair.reference, pair.science, **options)
    timings["difference_s"] = time.perf_counter() - start

    start = time.perf_counter()
    candidates = detect(result, task.threshold, prefix=pair.name)
    if pair.truth is not None and Path(pair.truth).exists():
        truth = _Table.read(pair.truth, format="ascii.ecsv")
        candidates = label_candidates(
            candidates, truth, radius=task.label_radius, real_kinds=task.real_kinds, wcs=result.wcs
        )
    else:
        candidates = _unlabelled(candidates)
    candidates["pair"] = np.full(len(candidates), pair.name, dtype=f"U{max(len(pair.name), 1)}")
    candidates["pair"].description = "reference/science pair (astrid.SurveyPair.name)"
    timings["detect_s"] = time.perf_counter() - start

    start = time.perf_counter()
    outputs = [_outputs.DIFFERENCE_NAME, _outputs.CANDIDATES_NAME]
    result.to_fits(pair_dir / _outputs.DIFFERENCE_NAME)
    write_ecsv(pair_dir / _outputs.CANDIDATES_NAME, candidates)
    triplets_path = pair_dir / _outputs.TRIPLETS_NAME
    if len(candidates):
        ds = make_triplets(result, candidates, field=pair.target)
        write_triplets(ds, triplets_path, mode="w")
        outputs.append(_outputs.TRIPLETS_NAME)
    elif triplets_path.exists():
        import shutil

        shutil.rmtree(triplets_path)
    timings["write_s"] = time.perf_counter() - start

    metrics = json_safe(result.metrics)
    record = {
        "pair": pair.name,
        "n_candidates": int(len(candidates)),
        "n_real": int((np.asarray(candidates["label"]) == 1).sum()) if len(candidates) else 0,
        "outputs": outputs,
        "timings": json_safe(timings),
        "metrics": metrics,
    }
    if task.model is not None:
        record.update(_score_pair_triplets(task, record))
    return record


def _score_pair_triplets(task: PairTask, record: dict) -> dict:
    """Score the pair's ``triplets.zarr`` and write ``scores.ecsv`` beside it; the record's new entries."""
    from .. import _scoring
    from ..score import score
    from ..triplets import load_triplets

    pair_dir = Path(task.pair_dir)
    start = time.perf_counter()
    identity = dict(task.model_identity or {})
    if record["n_candidates"]:
        ds = load_triplets(pair_dir / _outputs.TRIPLETS_NAME)
        try:
            scores = score(ds, task.model, num_threads=task.threads)
        finally:
            ds.close()
        table = _scoring.scores_table(scores, task.pair.name, identity)
        table["pair"] = table["input"]
    else:
        table = _scoring.empty_scores()
    table.meta["astrid_scores"] = _scoring.table_meta(identity, None, None, pair=task.pair.name)
    _scoring.write_scores(pair_dir / _outputs.SCORES_NAME, table)
    outputs = [name for name in record["outputs"] if name != _outputs.SCORES_NAME] + [
        _outputs.SCORES_NAME
    ]
    timings = {**record.get("timings", {}), "score_s": time.perf_counter() - start}
    scored = {**identity, "scored_unix": time.time()}
    return {"outputs": outputs, "timings": json_safe(timings), "model": scored}


def score_pair(task: PairTask) -> dict:
    """Score the triplets of a pair whose other outputs are complete (a model added or changed)."""
    pair_dir = Path(task.pair_dir)
    marker = _outputs.read_marker(pair_dir)
    if marker is None:
        raise AstridInputError(f"{pair_dir}: no valid {_outputs.MARKER_NAME} to add scores to")
    # The old marker must not vouch for a scores file that is about to be replaced.
    (pair_dir / _outputs.MARKER_NAME).unlink(missing_ok=True)
    record = {
        key: marker[key]
        for key in ("pair", "n_candidates", "n_real", "timings", "metrics")
        if key in marker
    }
    record["outputs"] = list(marker.get("outputs", {}))
    record.update(_score_pair_triplets(task, record))
    return record


def _run_task(task: PairTask, process: Callable[[PairTask], dict]) -> dict:
    """Run one pair in a worker: thread limits, warnings recorded, marker written last.

    Input errors (unreadable FITS, mismatched filters, no stars) are final:
    they come back as a ``failed`` record with the traceback, without Dask
    retries. Other exceptions propagate, so Dask retries the task.
    """
    started = time.time()
    cpu_started = time.process_time()
    record: dict[str, Any] = {
        "pair": task.pair.name,
        # Before reading them: a file replaced while the pair runs then shows as changed next time.
        "inputs": _outputs.input_identity(task.pair),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "worker": _worker_address(),
        "threads": task.threads,
        "started": _iso(started),
    }
    with thread_limits(task.threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome = (score_pair if task.score_only else process)(task)
        except AstridInputError as exc:
            outcome = None
            error = exc
            trace = traceback.format_exc()
    record["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    finished = time.time()
    # CPU time of the worker process (all its threads) while the pair ran: on
    # a shared machine, elapsed time alone does not say how much work a pair is.
    record.update(
        finished=_iso(finished),
        finished_unix=finished,
        elapsed_s=finished - started,
        cpu_s=time.process_time() - cpu_started,
    )
    if outcome is None:
        record.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=trace)
        return record
    record.update(outcome)
    record.update(status="done", fingerprint=task.fingerprint)
    marker = {k: v for k, v in record.items() if k not in ("status",)}
    _outputs.write_marker(task.pair_dir, marker)
    return record


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- client side


def _pairs_of(source) -> tuple[list[SurveyPair], Path | None]:
    if isinstance(source, Manifest):
        return list(source.pairs()), source.root
    if isinstance(source, (str, os.PathLike)):
        manifest = Manifest.load(source)
        return list(manifest.pairs()), manifest.root
    if isinstance(source, Iterable):
        pairs = list(source)
        bad = [type(p).__name__ for p in pairs if not isinstance(p, SurveyPair)]
        if bad:
            raise AstridInputError(
                f"manifest_or_dir: a list must hold SurveyPair objects, found {bad[0]}"
            )
        return pairs, None
    raise AstridInputError(
        "manifest_or_dir: expected a survey folder, its manifest.json, an astrid.Manifest or a list of "
        f"SurveyPair, got {type(source).__name__}"
    )


def _resolve_difference_options(given, flat: dict) -> dict:
    """The options every pair's :func:`~astrid.difference` gets, as one flat mapping.

    ``given`` (:attr:`BatchOptions.difference`) is overridden field by field by the flat names of
    ``flat``; unknown names fail with the closest valid one, values are checked once, before any
    pair runs. Fields left at their defaults are dropped, so an option spelled out at its default
    fingerprints like one left out.
    """
    import difflib

    from ..diffim import DifferenceOptions
    from ..diffim.options import FLAT_NAMES

    if given is not None and not isinstance(given, DifferenceOptions):
        raise AstridInputError(
            f"options.difference: expected astrid.DifferenceOptions, got {type(given).__name__}"
        )
    known = sorted(set(FLAT_NAMES) | set(_DIFFERENCE_KEYWORDS))
    unknown = sorted(set(flat) - set(known))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise AstridInputError(
            f"process_pairs: unknown difference option(s) {', '.join(hints)}; "
            f"known options are {known}"
        )
    merged = {} if given is None else given.to_mapping()
    merged.update({k: v for k, v in flat.items() if k in FLAT_NAMES})
    resolved = DifferenceOptions.from_mapping(merged, caller="process_pairs").to_mapping()
    defaults = DifferenceOptions().to_mapping()
    chosen = {k: v for k, v in resolved.items() if not _is_default(v, defaults[k])}
    chosen.update({k: v for k, v in flat.items() if k in _DIFFERENCE_KEYWORDS})
    return chosen


def _is_default(value, default) -> bool:
    plain = (bool, int, float, str, type(None))
    if value is default:
        return True
    return isinstance(value, plain) and type(value) is type(default) and value == default


def _fingerprint(
    threshold: float, options: dict, label_radius: float, real_kinds=REAL_KINDS
) -> tuple[str, dict]:
    """A stable hash of the options that decide a pair's outputs (not the thread count)."""
    described = {
        "threshold": float(threshold),
        "label_radius": float(label_radius),
        "difference": {k: v for k, v in sorted(options.items()) if k != "workers"},
    }
    if tuple(real_kinds) != REAL_KINDS:  # so that stores made before the option stay valid
        described["real_kinds"] = sorted(real_kinds)
    described = json_safe(described)
    text = json.dumps(described, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16], described


class _BatchManifest:
    """``batch.json``: the options and every pair's latest record, rewritten atomically."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.data = {"schema": BATCH_SCHEMA, "pairs": {}}
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = None  # a corrupt manifest is rebuilt from this run's records
            if isinstance(old, dict) and old.get("schema") == BATCH_SCHEMA:
                self.data["pairs"] = dict(old.get("pairs", {}))
        self.data.update(header)
        self._written = 0.0

    def record(self, name: str, record: dict) -> None:
        self.data["pairs"][name] = json_safe(record)

    def save(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._written < _MANIFEST_INTERVAL_S:
            return
        self.data["updated"] = _iso(time.time())
        statuses = Counter(r.get("status") for r in self.data["pairs"].values())
        self.data["counts"] = dict(sorted(statuses.items()))
        text = json.dumps(self.data, indent=1, default=str).encode()
        atomic_write(self.path, lambda fh: fh.write(text))
        self._written = now


class _Progress:
    """tqdm (the notebook widget under Jupyter) or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and total:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional; the batch runs without a bar
                return
            self.bar = tqdm(total=total, desc="pairs", unit="pair")

    def update(self, failed: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(failed=failed, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _error_text(exc: BaseException, tb=None) -> str:
    return "".join(
        traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__)
    )


@dataclass(frozen=True)
class BatchOptions:
    """How :func:`process_pairs` stores, checks and retries its work (beyond the science options).

    Attributes
    ----------
    triplet_store : path-like
        The shared Zarr store (relative paths are inside ``out_dir``). Every candidate carries a
        ``pair`` coordinate; the root attribute ``astrid_batch_pairs`` lists the pairs committed.
    label_radius : float
        Match radius (pixels) of :func:`~astrid.triplets.label_candidates` against the survey's
        truth table (pairs without one get label -1). Part of the options fingerprint.
    real_kinds : tuple of str
        Truth kinds labelled real (1); default :data:`astrid.triplets.REAL_KINDS` (supernova,
        variable). braai's convention, every astrophysical source real, adds ``"asteroid"``: in a
        single triplet a moving asteroid looks like a new point source. Part of the options
        fingerprint when it is not the default.
    retries : int
        Dask retries of a pair whose task raised an unexpected error. Input errors (bad FITS,
        mismatched filters, no PSF) fail at once; a task whose worker dies is rerun regardless.
    verify : {"checksum", "size"}
        How a rerun checks earlier outputs against their ``done.json``: SHA-256 or sizes only
        (faster; still catches truncation).
    reference : array-like, dict or path-like, optional
        The reference score distribution of the drift check when scoring with a ``model``
        (:func:`astrid.drift.load_reference`: a model card, scores, a file of scores). Default:
        the card beside the model, if any.
    difference : DifferenceOptions, optional
        The science options of every pair's :func:`~astrid.difference` (default
        ``DifferenceOptions()``); flat keywords of :func:`process_pairs` (``box_size=32``, ...)
        override single fields. The options that differ from the defaults are fingerprinted.
    """

    triplet_store: str | os.PathLike = "triplets.zarr"
    label_radius: float = 2.0
    real_kinds: tuple = REAL_KINDS
    retries: int = 1
    verify: str = "checksum"
    reference: Any = None
    difference: Any = None


def process_pairs(
    manifest_or_dir,
    out_dir,
    client=None,
    *,
    scheduler=None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    threshold: float = 5.0,
    progress: bool = True,
    model: str | os.PathLike | None = None,
    options: BatchOptions | None = None,
    **difference_options,
) -> BatchReport:
    """Difference every pair of a survey on Dask, with per-pair outputs and one triplet store.

    Parameters
    ----------
    manifest_or_dir : path-like, Manifest or list of SurveyPair
        The survey (folder or its ``manifest.json``), as written by
        :func:`astrid.simulate.survey` or the archive downloads.
    out_dir : path-like
        Output root. Pair ``<target>/<stem>`` writes into
        ``<out_dir>/<target>/<stem>/``: ``difference.fits``,
        ``candidates.ecsv``, ``triplets.zarr`` and ``done.json`` (last).
        ``batch.json`` records every pair's status, error and traceback.
    client : distributed.Client, optional
        Run on this client (left open). Default: a client from :func:`get_client` with
        ``scheduler``, ``n_workers`` and ``threads_per_worker``, closed at the end.
    scheduler : str or distributed.deploy.Cluster, optional
        Address of a running scheduler (``"tcp://host:8786"``) or a cluster object (e.g.
        ``dask_jobqueue.SLURMCluster``). Default: a local cluster of worker processes.
    n_workers, threads_per_worker : int, optional
        Local cluster layout (:func:`default_layout`: workers × threads ≈ cores; workers capped
        at the number of pairs to run). ``threads_per_worker`` is the compute threads (numba,
        FFT, BLAS) of each task; with an existing cluster, the cores per Dask thread of its hosts.
    threshold : float, optional
        Detection threshold of :func:`~astrid.triplets.detect`, sigma.
    progress : bool, optional
        Show a progress bar (tqdm; a widget in Jupyter).
    model : path-like, optional
        A real/bogus model file (``.tflite``, ``.keras`` or braai ``.h5``): each pair's triplets
        are scored on its worker (:func:`astrid.score.score`) into the pair's ``scores.ecsv``, with
        the model's identity (file and card SHA-256, version) in ``done.json``; all scores are
        gathered into ``<out_dir>/scores.ecsv`` with the drift check in its metadata. A rerun
        with another model scores the finished pairs again without differencing them again.
    options : BatchOptions, optional
        The store's path, truth-matching radius, retries, rerun checks and drift reference
        (:class:`BatchOptions`; default ``BatchOptions()``).
    **difference_options
        Passed to :func:`astrid.difference` (e.g. ``method="classic"``,
        ``box_size=64``). ``workers`` defaults to ``threads_per_worker``.

    Returns
    -------
    BatchReport
        Per-pair status table, counts, timing and throughput.

    Raises
    ------
    AstridInputError
        Bad arguments, duplicate pair names, or ``out_dir`` / the store
        holding results made with other options, or from input files that
        have changed since (use a new ``out_dir``).
    AstridFileError
        ``options.triplet_store`` exists and is not an AstrID batch store, or
        ``model`` / ``options.reference`` is missing or unreadable.

    Warns
    -----
    astrid.drift.DriftWarning
        The batch's scores drift from the model's reference distribution
        (population-stability index above :data:`astrid.drift.PSI_LEVEL`).

    Notes
    -----
    A pair is skipped when its ``done.json`` is valid (outputs, sizes, checksums, options and
    input files unchanged) and the store holds it; valid outputs not yet in the store are appended
    without recomputing (``resumed``); anything else runs again. Inputs changed after the store took
    a pair's triplets are an error (the store is append-only). Only the client appends to the store,
    as each task finishes, and never a pair it already holds (by its ``pair`` coordinate).
    """
    started_wall = time.time()
    started = time.perf_counter()
    if client is not None and scheduler is not None:
        raise AstridInputError("process_pairs: pass either client or scheduler, not both")
    options = BatchOptions() if options is None else options
    if not isinstance(options, BatchOptions):
        raise AstridInputError(
            f"options: expected astrid.batch.BatchOptions, got {type(options).__name__}"
        )
    _check_run_arguments(options.verify, options.retries, threshold)
    kinds_tuple(options.real_kinds, "BatchOptions.real_kinds")  # refused before anything is written
    n_workers = positive_int(n_workers, "n_workers")
    threads_per_worker = positive_int(threads_per_worker, "threads_per_worker")
    process = hooks.process
    if process is None:
        difference_options = _resolve_difference_options(options.difference, difference_options)
    scoring = _scoring_setup(model, options.reference)
    plan = _plan(
        manifest_or_dir, out_dir, options, threshold, difference_options, scoring, started_wall
    )
    n_workers_used = threads_used = None
    compute_s = 0.0
    if plan.todo:
        cluster = _ClusterRequest(client, scheduler, n_workers, threads_per_worker)
        run = _RunOptions(
            process=process or run_pair,
            retries=options.retries,
            progress=progress,
            on_result=hooks.on_result,
        )
        compute_s, n_workers_used, threads_used = _execute(plan, cluster, run)
    return _report(plan, scoring, started, compute_s, n_workers_used, threads_used)


def _check_run_arguments(verify: str, retries: int, threshold: float) -> None:
    if verify not in ("checksum", "size"):
        raise AstridInputError(f"verify: expected 'checksum' or 'size', got {verify!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise AstridInputError(f"retries: must be a non-negative integer, got {retries!r}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise AstridInputError(f"threshold: must be a positive number of sigma, got {threshold!r}")


@dataclass(frozen=True)
class _Scoring:
    """The model a batch scores with: file, identity, drift reference (all None: no scoring)."""

    model: str | None = None
    identity: dict | None = None
    reference: dict | None = None


def _scoring_setup(model, reference) -> _Scoring:
    if model is None:
        if reference is not None:
            raise AstridInputError(
                "reference: a drift reference needs a model to score with (model=...)"
            )
        return _Scoring()
    from .._scoring import model_identity
    from ..drift import load_reference, reference_for_model

    identity = model_identity(model)
    if Path(model).suffix.lower() not in (".tflite", ".keras", ".h5", ".hdf5"):
        raise AstridInputError(f"model: {model}: expected a .tflite, .keras or .h5 file")
    distribution = (
        load_reference(reference) if reference is not None else reference_for_model(model)
    )
    return _Scoring(model=str(model), identity=identity, reference=distribution)


class _Ledger:
    """The report's rows and the batch manifest: every pair's status, written together."""

    def __init__(self, out_dir: Path, manifest: _BatchManifest):
        self.out_dir = out_dir
        self.manifest = manifest
        self.rows: dict[str, dict] = {}

    def row(self, pair: SurveyPair, status: str, reason: str, record: dict | None = None) -> None:
        record = record or {}
        error = record.get("error") or ""
        n_candidates = record.get("n_candidates")
        elapsed = record.get("elapsed_s")
        cpu = record.get("cpu_s")
        self.rows[pair.name] = {
            "pair": pair.name,
            "target": pair.target,
            "status": status,
            # the difference's quality verdict (pass/warn/fail): a bad pair is flagged in the table
            "quality": str((record.get("metrics") or {}).get("quality") or ""),
            "n_candidates": -1 if n_candidates is None else int(n_candidates),
            "elapsed_s": np.nan if elapsed is None else float(elapsed),
            "cpu_s": np.nan if cpu is None else float(cpu),
            "worker": str(record.get("worker") or ""),
            "reason": reason,
            "error": error.splitlines()[-1] if error else "",
        }
        self.manifest.record(
            pair.name,
            {
                **record,
                "status": status,
                "reason": reason,
                "target": pair.target,
                "out_dir": str(self.out_dir / pair.name),
            },
        )


@dataclass
class _BatchPlan:
    """What a batch will do: its pairs, where they go, the options that decide their outputs.

    ``todo`` holds the pairs left to run as (pair, reason); ``score_only`` the names of those that
    only need scores.
    """

    pairs: list[SurveyPair]
    out_dir: Path
    store: Path
    committed: set[str]
    fingerprint: str
    threshold: float
    label_radius: float
    real_kinds: tuple
    difference_options: dict
    scoring: _Scoring
    ledger: _Ledger
    todo: list[tuple[SurveyPair, str]]
    score_only: set[str]

    @property
    def manifest(self) -> _BatchManifest:
        return self.ledger.manifest

    def task(self, pair: SurveyPair, threads: int) -> PairTask:
        return PairTask(
            pair=pair,
            pair_dir=self.out_dir / pair.name,
            threshold=float(self.threshold),
            difference_options=dict(self.difference_options),
            threads=int(threads),
            fingerprint=self.fingerprint,
            label_radius=float(self.label_radius),
            real_kinds=self.real_kinds,
            model=self.scoring.model,
            model_identity=self.scoring.identity,
            score_only=pair.name in self.score_only,
        )


@dataclass(frozen=True)
class _ClusterRequest:
    """Where to run: a client, a scheduler, or a local cluster of this layout."""

    client: Any = None
    scheduler: Any = None
    n_workers: int | None = None
    threads_per_worker: int | None = None


@dataclass(frozen=True)
class _RunOptions:
    """How tasks run: the pair function, Dask retries, the progress bar and the per-result hook."""

    process: Callable
    retries: int = 1
    progress: bool = True
    on_result: Callable | None = None


def _open_store(out_dir, triplet_store, fingerprint: str, described: dict) -> tuple[Path, set[str]]:
    """The store's path and the pairs it holds; refused when it was made with other options."""
    store = Path(triplet_store)
    if not store.is_absolute():
        store = out_dir / store
    committed = _outputs.store_pairs(store)  # first: it checks that the store is one of ours
    recorded = _outputs.store_options(store)
    if recorded is not None and recorded != fingerprint:
        raise AstridInputError(
            f"{store}: holds triplets made with other options (fingerprint {recorded}, now {fingerprint}: "
            f"{described}); write to a new out_dir or triplet_store"
        )
    return store, committed


def _plan(
    manifest_or_dir,
    out_dir,
    options: BatchOptions,
    threshold: float,
    difference_options: dict,
    scoring: _Scoring,
    started_wall: float,
) -> _BatchPlan:
    """Step 1: read the survey and what earlier runs left; commit their finished outputs."""
    pairs, survey_root = _pairs_of(manifest_or_dir)
    duplicates = sorted(name for name, count in Counter(p.name for p in pairs).items() if count > 1)
    if duplicates:
        raise AstridInputError(
            f"manifest_or_dir: pair names must be unique, repeated: {duplicates[:5]}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_radius = options.label_radius
    real_kinds = kinds_tuple(options.real_kinds, "BatchOptions.real_kinds")
    fingerprint, described = _fingerprint(threshold, difference_options, label_radius, real_kinds)
    store, committed = _open_store(out_dir, options.triplet_store, fingerprint, described)
    manifest = _BatchManifest(
        out_dir / BATCH_MANIFEST_NAME,
        {
            "survey": None if survey_root is None else str(survey_root),
            "out_dir": str(out_dir),
            "triplet_store": str(store),
            "options": described,
            "fingerprint": fingerprint,
            "started": _iso(started_wall),
        },
    )
    plan = _BatchPlan(
        pairs=pairs,
        out_dir=out_dir,
        store=store,
        committed=committed,
        fingerprint=fingerprint,
        threshold=threshold,
        label_radius=label_radius,
        real_kinds=real_kinds,
        difference_options=difference_options,
        scoring=scoring,
        ledger=_Ledger(out_dir, manifest),
        todo=[],
        score_only=set(),
    )
    resumable = _triage(plan, options.verify, described)
    _resume(plan, resumable)
    manifest.save()
    return plan


def _triage(plan: _BatchPlan, verify: str, described: dict) -> list[tuple[SurveyPair, dict]]:
    """Sort the pairs by what earlier runs left: to run, to score, skipped, resumable (returned)."""
    identity = plan.scoring.identity
    resumable: list[tuple[SurveyPair, dict]] = []
    conflicts = []
    stale_committed = []
    for pair in plan.pairs:
        ok, reason, marker = _outputs.verify_pair_outputs(
            plan.out_dir / pair.name, pair.name, checksum=verify == "checksum"
        )
        changed = _outputs.changed_inputs(marker, pair) if ok else []
        if ok and marker.get("fingerprint") != plan.fingerprint:
            conflicts.append(pair.name)
        elif not ok:
            plan.todo.append((pair, "outputs incomplete: " + reason))
        elif changed and pair.name in plan.committed:
            stale_committed.append(f"{pair.name} ({', '.join(changed)})")
        elif changed:
            plan.todo.append((pair, f"inputs changed since the earlier run: {', '.join(changed)}"))
        elif (
            identity is not None
            and (marker.get("model") or {}).get("model_sha256") != identity["model_sha256"]
        ):
            scored_by = (marker.get("model") or {}).get("model")
            plan.todo.append(
                (
                    pair,
                    "not scored yet"
                    if scored_by is None
                    else f"scored by another model ({scored_by})",
                )
            )
            plan.score_only.add(pair.name)
        elif pair.name in plan.committed:
            plan.ledger.row(pair, "skipped", "complete and in the triplet store", marker)
        else:
            resumable.append((pair, marker))
    if conflicts:
        raise AstridInputError(
            f"{plan.out_dir}: {len(conflicts)} pair(s) were made with other options (e.g. {conflicts[:3]}); "
            f"options now: {described}; write to a new out_dir"
        )
    if stale_committed:
        raise AstridInputError(
            f"{plan.out_dir}: the input files of {len(stale_committed)} pair(s) changed since their triplets went "
            f"into the store (e.g. {stale_committed[:3]}); the store cannot replace them: write to a new out_dir"
        )
    return resumable


def _resume(plan: _BatchPlan, resumable: list[tuple[SurveyPair, dict]]) -> None:
    """Commit valid outputs of an earlier run that the store does not hold yet."""
    items = [(pair, int(marker.get("n_candidates", 0)), marker) for pair, marker in resumable]
    for pair, marker, error in commit_in_groups(
        plan.store, plan.committed, plan.fingerprint, plan.out_dir, items
    ):
        if error is None:
            plan.ledger.row(
                pair, "resumed", "complete outputs of an earlier run, committed now", marker
            )
        else:  # damaged per-pair triplets: compute the pair again
            plan.todo.append((pair, f"outputs complete but not committable ({error})"))
    _outputs.repair_store_attrs(plan.store, plan.committed, plan.fingerprint)


def _execute(
    plan: _BatchPlan, cluster: _ClusterRequest, run: _RunOptions
) -> tuple[float, int, int]:
    """Step 2: run the pairs left on a client; (compute time s, workers, threads per task)."""
    client, owned, threads_used = _connect(cluster, len(plan.todo))
    try:
        if threads_used is None:
            threads_used = cluster.threads_per_worker or cluster_threads(client)
        n_workers_used = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        compute_started = time.perf_counter()
        _run_on_client(client, plan, run, threads_used)
        compute_s = time.perf_counter() - compute_started
    finally:
        plan.manifest.save()
        if owned is not None:
            owned.close()
    return compute_s, n_workers_used, threads_used


def _connect(cluster: _ClusterRequest, n_todo: int):
    """(client, the client to close or None, threads per task or None: ask the cluster)."""
    if cluster.client is not None:
        return cluster.client, None, None
    if cluster.scheduler is not None:
        client = get_client(cluster.scheduler, threads_per_worker=cluster.threads_per_worker)
        return client, client, None
    layout_workers, layout_threads = default_layout(cluster.n_workers, cluster.threads_per_worker)
    if cluster.n_workers is None:
        # No idle workers: fewer pairs than cores gives each pair more threads.
        cores = layout_workers * layout_threads
        layout_workers = min(layout_workers, n_todo)
        layout_threads = cluster.threads_per_worker or max(cores // layout_workers, 1)
    client = get_client(None, layout_workers, layout_threads)
    return client, client, layout_threads


def _report(
    plan: _BatchPlan,
    scoring: _Scoring,
    started: float,
    compute_s: float,
    n_workers_used,
    threads_used,
) -> BatchReport:
    """Step 3: the status table, the gathered scores and their drift check, the last save."""
    rows = plan.ledger.rows
    table = Table(
        rows=[rows[p.name] for p in plan.pairs if p.name in rows],
        names=[
            "pair",
            "target",
            "status",
            "quality",
            "n_candidates",
            "elapsed_s",
            "cpu_s",
            "worker",
            "reason",
            "error",
        ],
        dtype=[str, str, str, str, np.int64, np.float64, np.float64, str, str, str],
    )
    table["elapsed_s"].unit = "s"
    table["cpu_s"].unit = "s"
    manifest = plan.manifest
    scores_path = drift = None
    n_scored = 0
    if scoring.identity is not None:
        statuses = dict(zip(table["pair"], np.asarray(table["status"], dtype=str)))
        n_scored = sum(status == "done" for status in statuses.values())
        scores_path, drift = _gather_scores(
            plan.out_dir,
            [p for p in plan.pairs if statuses.get(p.name) != "failed"],
            scoring.identity,
            scoring.reference,
        )
        manifest.data["drift"] = None if drift is None else drift.to_dict()
    elapsed = time.perf_counter() - started
    manifest.data["finished"] = _iso(time.time())
    manifest.data["elapsed_s"] = elapsed
    manifest.save()
    return BatchReport(
        table=table,
        out_dir=plan.out_dir,
        triplet_store=plan.store,
        manifest_path=manifest.path,
        elapsed_s=elapsed,
        compute_s=compute_s,
        n_workers=n_workers_used,
        threads_per_worker=threads_used,
        scores_path=scores_path,
        drift=drift,
        n_scored=n_scored,
    )


#: The batch's gathered scores, in ``out_dir``.
BATCH_SCORES_NAME = "scores.ecsv"


def _gather_scores(out_dir: Path, pairs: list[SurveyPair], identity: dict, reference: dict | None):
    """Stack the pairs' ``scores.ecsv`` into ``<out_dir>/scores.ecsv``; run the drift check on them."""
    from .. import _scoring
    from ..drift import DriftWarning, compare

    tables = []
    for pair in pairs:
        path = out_dir / pair.name / _outputs.SCORES_NAME
        if path.exists():
            tables.append(_scoring.read_scores(path))
    combined = _scoring.concat(tables)
    drift = None
    if reference is not None:
        drift = compare(np.asarray(combined["score"], dtype=np.float64), reference, warn=False)
    combined.meta["astrid_scores"] = _scoring.table_meta(
        identity,
        None if drift is None else drift.to_dict(),
        None if reference is None else str(reference.get("source") or "given"),
        n_pairs=len(tables),
    )
    path = _scoring.write_scores(out_dir / BATCH_SCORES_NAME, combined)
    if drift is not None and drift.drifted:
        warnings.warn(
            f"process_pairs: scores in {path}: {drift.summary()}", DriftWarning, stacklevel=3
        )
    return path, drift


def commit_in_groups(store, committed, fingerprint, out_dir, items):
    """Commit ``(pair, n_candidates, record)`` items; yield ``(pair, record, error text or None)``.

    Pairs are grouped into appends (see :data:`_COMMIT_GROUP`); when a group
    fails its pairs are retried one by one, so one damaged pair does not hold
    back the others.
    """
    groups, group, size = [], [], 0
    for item in items:
        if group and (len(group) >= _COMMIT_GROUP or size + item[1] > _COMMIT_CANDIDATES):
            groups.append(group)
            group, size = [], 0
        group.append(item)
        size += item[1]
    if group:
        groups.append(group)
    for group in groups:
        try:
            _outputs.commit_pairs(
                store, [(p.name, out_dir / p.name, n) for p, n, _ in group], committed, fingerprint
            )
        except Exception:
            if len(group) == 1:
                pair, _, record = group[0]
                yield pair, record, _one_line_error()
                continue
            for pair, n, record in group:
                try:
                    _outputs.commit_pairs(
                        store, [(pair.name, out_dir / pair.name, n)], committed, fingerprint
                    )
                except Exception:  # reported per pair; the others are committed
                    yield pair, record, _one_line_error()
                else:
                    yield pair, record, None
        else:
            for pair, _, record in group:
                yield pair, record, None


def _one_line_error() -> str:
    import sys

    exc = sys.exc_info()[1]
    return f"{type(exc).__name__}: {exc}"


def _run_on_client(client, plan: _BatchPlan, run: _RunOptions, threads: int) -> None:
    """Submit one task per pair; commit results to the store as they land, several per append."""
    distributed = require("distributed", "astrid.batch.process_pairs")
    futures = {}
    reasons = {}
    for pair, reason in plan.todo:
        task = plan.task(pair, threads)
        key = f"astrid-pair-{pair.name}-{uuid.uuid4().hex[:8]}"
        futures[
            client.submit(_run_task, task, run.process, key=key, pure=False, retries=run.retries)
        ] = pair
        reasons[pair.name] = reason
    bar = _Progress(len(futures), run.progress)
    n_failed = 0
    try:
        # Each batch holds every task that finished while the previous batch was committed.
        for batch in distributed.as_completed(list(futures)).batches():
            finished = []
            for future in batch:
                pair = futures.pop(future)
                try:
                    record = future.result()
                except Exception as exc:  # retries spent, KilledWorker, cancelled
                    tb = future.traceback() if future.status == "error" else None
                    record = {
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": _error_text(exc, tb),
                    }
                future.release()
                finished.append((pair, record))
            done = []
            outcomes = []
            for pair, record in finished:
                reason = reasons[pair.name]
                if record.get("status") != "done":
                    outcomes.append((pair, "failed", reason, record))
                    continue
                if pair.name in plan.committed:
                    reason += "; already in the triplet store, not appended again"
                reasons[pair.name] = reason
                done.append((pair, int(record.get("n_candidates", 0)), record))
            for pair, record, error in commit_in_groups(
                plan.store, plan.committed, plan.fingerprint, plan.out_dir, done
            ):
                if error is None:
                    outcomes.append((pair, "done", reasons[pair.name], record))
                else:  # the pair's outputs stay valid: a rerun commits them
                    record = {**record, "error": f"commit to {plan.store} failed: {error}"}
                    outcomes.append((pair, "failed", reasons[pair.name], record))
            for pair, status, reason, record in outcomes:
                n_failed += status == "failed"
                plan.ledger.row(pair, status, reason, record)
                bar.update(n_failed)
            plan.manifest.save(force=any(status == "failed" for _, status, _, _ in outcomes))
            if run.on_result is not None:
                for _, _, _, record in outcomes:
                    run.on_result(client, record)
    finally:
        bar.close()
        for future in futures:
            future.cancel()
