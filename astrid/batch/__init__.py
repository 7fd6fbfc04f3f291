"""Scale-out on Dask distributed: a whole survey, one task per pair.

The same code runs on a laptop (a :class:`~distributed.LocalCluster` of
worker processes) and on a cluster (a scheduler address, or a
``dask_jobqueue`` cluster on SLURM/PBS)::

    from astrid.batch import process_pairs
    report = process_pairs("data/survey", "runs/night1")          # local cluster
    report = process_pairs("data/survey", "runs/night1", scheduler="tcp://head:8786")
    report.table                       # per-pair status
    report.counts, report.pairs_per_minute

Each pair is differenced (:func:`astrid.difference`), its candidates
detected, labelled and cut into triplets (:mod:`astrid.triplets`); outputs
land atomically in ``<out_dir>/<target>/<pair>/`` with a ``done.json``
marker, and the triplets of every pair are appended, by the client only, to
one Zarr store. Reruns skip finished pairs and redo partial ones.
:func:`get_client` gives the same kind of client to other batch work (the
notebook runner). :mod:`astrid.batch.testing` holds the hooks the tests
use to kill workers and replace the pair function mid-batch.
"""

from ._client import (
    ThreadLimits,
    cluster_threads,
    default_layout,
    get_client,
    thread_env,
    thread_limits,
)
from ._core import (
    BATCH_MANIFEST_NAME,
    BatchOptions,
    BatchReport,
    PairTask,
    process_pairs,
    run_pair,
)
from ._outputs import store_pairs, verify_pair_outputs

__all__ = [
    "process_pairs",
    "BatchReport",
    "BatchOptions",
    "get_client",
    "default_layout",
    "cluster_threads",
    "thread_env",
    "thread_limits",
    "ThreadLimits",
    "verify_pair_outputs",
    "store_pairs",
    "run_pair",
    "PairTask",
    "BATCH_MANIFEST_NAME",
]
