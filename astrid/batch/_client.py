"""Dask clients for AstrID batches, and thread limits that avoid oversubscription.

Every pair of a batch runs as one Dask task. A worker runs one task at a
time (one Dask thread) and gives that task ``threads_per_worker`` compute
threads: numba's parallel loops, ``scipy.fft`` and the BLAS/OpenMP pools.
So ``n_workers × threads_per_worker`` is the number of busy cores. One Dask
thread per worker also keeps two pairs' numba kernels from sharing one
thread pool, and bounds a worker's memory to one pair's arrays.

Where the limits are set:

* a :class:`~distributed.LocalCluster` started by :func:`get_client` spawns
  its workers with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS``, ``NUMBA_NUM_THREADS`` (and ``ASTRID_THREADS``)
  set, so the pools start at the right size;
* the :class:`ThreadLimits` worker plugin sets the same variables in a
  running worker (for processes a task starts, e.g. a notebook kernel) and
  limits the BLAS/OpenMP pools already loaded (threadpoolctl);
* each pair task limits numba (``numba.set_num_threads`` is per thread, so
  it must run in the task's own thread), ``scipy.fft`` (``workers=``) and
  the BLAS/OpenMP pools while it runs (:func:`thread_limits`).
"""

from __future__ import annotations

import os
import warnings
from contextlib import ExitStack, contextmanager
from typing import Any

from .._optional import require
from ..errors import AstridInputError, AstridWarning

__all__ = [
    "get_client",
    "default_layout",
    "thread_env",
    "thread_limits",
    "cluster_threads",
    "ThreadLimits",
]

#: Environment variables that size the thread pools of a worker process.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "ASTRID_THREADS",
)


def available_cores() -> int:
    """Cores this process may use (CPU affinity and cgroup quota respected)."""
    try:
        from distributed.system import CPU_COUNT

        return max(int(CPU_COUNT), 1)
    except ImportError:  # pragma: no cover - distributed is needed anyway
        return max(
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1,
            1,
        )


def positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AstridInputError(f"{name}: must be a positive integer or None, got {value!r}")
    return int(value)


def default_layout(
    n_workers: int | None = None, threads_per_worker: int | None = None, cores: int | None = None
) -> tuple[int, int]:
    """Workers and threads per worker whose product is about the number of cores.

    Parameters
    ----------
    n_workers, threads_per_worker : int, optional
        Either, both or neither; what is missing is chosen so that
        ``n_workers × threads_per_worker ≈ cores``. Neither: one worker per
        core with one thread each (pairs are independent, so parallelism
        across pairs scales best).
    cores : int, optional
        Cores to fill; default the cores this process may use.

    Returns
    -------
    n_workers : int
        Number of workers.
    threads_per_worker : int
        Threads per worker.

    Warns
    -----
    AstridWarning
        Both were given and their product exceeds ``cores``.
    """
    n_workers = positive_int(n_workers, "n_workers")
    threads_per_worker = positive_int(threads_per_worker, "threads_per_worker")
    cores = positive_int(cores, "cores") or available_cores()
    if n_workers is None and threads_per_worker is None:
        return cores, 1
    if n_workers is None:
        return max(cores // threads_per_worker, 1), threads_per_worker
    if threads_per_worker is None:
        return n_workers, max(cores // n_workers, 1)
    if n_workers * threads_per_worker > cores:
        warnings.warn(
            f"n_workers={n_workers} × threads_per_worker={threads_per_worker} = "
            f"{n_workers * threads_per_worker} threads on {cores} cores: the workers will compete for cores",
            AstridWarning,
            stacklevel=3,
        )
    return n_workers, threads_per_worker


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that size every thread pool of a worker at ``threads``.

    Parameters
    ----------
    threads : int
        Threads per pool, a positive integer.

    Returns
    -------
    dict of str to str
        Variable name to value.
    """
    threads = positive_int(threads, "threads")
    return {name: str(threads) for name in THREAD_VARIABLES}


@contextmanager
def thread_limits(threads: int):
    """Limit numba, ``scipy.fft`` and BLAS/OpenMP to ``threads`` inside the block.

    numba's limit applies to the calling thread only, so this must run in
    the thread that computes (a Dask task, not a worker plugin). numba
    cannot exceed the pool it started with (``NUMBA_NUM_THREADS``).

    Parameters
    ----------
    threads : int
        Threads to allow, a positive integer.

    Yields
    ------
    int
        ``threads``, checked.
    """
    import numba
    import scipy.fft

    threads = positive_int(threads, "threads")
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        with ExitStack() as stack:
            stack.enter_context(scipy.fft.set_workers(threads))
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # optional: env variables already cap fresh workers
                pass
            else:
                stack.enter_context(threadpool_limits(limits=threads))
            yield threads
    finally:
        numba.set_num_threads(previous)


def _thread_limits_plugin_base():
    distributed = require("distributed", "AstrID batches on Dask")
    return distributed.WorkerPlugin


class ThreadLimits(_thread_limits_plugin_base()):
    """Worker plugin: size a worker's thread pools at ``threads``.

    Sets the :data:`THREAD_VARIABLES` in the worker's environment (so
    processes a task starts, such as a notebook kernel, inherit them) and
    limits the BLAS/OpenMP pools already loaded (threadpoolctl, when
    installed). numba's pool is sized per task by :func:`thread_limits`.

    Parameters
    ----------
    threads : int
        Compute threads per worker.
    """

    name = "astrid-thread-limits"

    def __init__(self, threads: int):
        self.threads = positive_int(threads, "threads")

    def setup(self, worker) -> None:
        os.environ.update(thread_env(self.threads))
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        threadpool_limits(limits=self.threads)


def _worker_layout(dask_worker=None) -> dict:
    """Run on a worker (``client.run`` passes ``dask_worker``): what :func:`cluster_threads` needs."""
    import socket

    astrid_threads = os.environ.get("ASTRID_THREADS")
    return {
        "host": socket.gethostname(),
        "cores": available_cores(),
        "nthreads": int(dask_worker.state.nthreads),
        "astrid_threads": int(astrid_threads)
        if astrid_threads and astrid_threads.isdigit()
        else None,
    }


def cluster_threads(client) -> int:
    """Compute threads each task of a batch should use on ``client``'s cluster.

    Workers started by :func:`get_client` (or with ``ASTRID_THREADS`` in
    their environment) say so themselves. Otherwise each host's cores are
    shared among the Dask threads of the workers on it; the smallest share
    over the hosts is returned (at least 1).

    Parameters
    ----------
    client : distributed.Client
        Client of the cluster.

    Returns
    -------
    int
        Threads per task, at least 1.
    """
    layouts = client.run(_worker_layout)
    if not layouts:
        return 1
    declared = [info["astrid_threads"] for info in layouts.values()]
    if all(value is not None for value in declared):
        return max(min(declared), 1)
    per_host: dict[str, list] = {}
    for info in layouts.values():
        per_host.setdefault(info["host"], []).append(info)
    shares = [
        max(
            min(info["cores"] for info in infos) // max(sum(info["nthreads"] for info in infos), 1),
            1,
        )
        for infos in per_host.values()
    ]
    return min(shares)


def get_client(
    scheduler=None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    *,
    memory_limit: str | float | None = "auto",
    dashboard_address: str | None = None,
    timeout: str = "30s",
):
    """A Dask client for AstrID batches: a local cluster, or an existing one.

    Parameters
    ----------
    scheduler : str or distributed.deploy.Cluster, optional
        None (default): start a :class:`~distributed.LocalCluster` of
        worker processes, owned by the client (``client.close()`` stops
        it). A string: the address of a running scheduler
        (``"tcp://host:8786"``) to connect to. A cluster object (e.g.
        ``dask_jobqueue.SLURMCluster``): connect to it.
    n_workers : int, optional
        Worker processes of a local cluster. Default: chosen with
        ``threads_per_worker`` so that workers × threads ≈ cores
        (:func:`default_layout`).
    threads_per_worker : int, optional
        Compute threads per worker (numba, FFT, BLAS); each worker runs one
        task at a time. With an existing cluster, the limit is applied to its
        workers (:class:`ThreadLimits`) only when given.
    memory_limit : str or float, optional
        Memory limit per worker of a local cluster (Dask's syntax; default
        ``"auto"``: the machine's memory shared among the workers).
    dashboard_address : str, optional
        Dashboard address of a local cluster, e.g. ``":8787"`` (needs
        bokeh). Default None: no dashboard, and the scheduler's HTTP
        endpoints on a free port (no clash with other clusters).
    timeout : str, optional
        How long to wait for a remote scheduler (default ``"30s"``).

    Returns
    -------
    distributed.Client
        Use it as a context manager, or ``close()`` it.

    Raises
    ------
    AstridInputError
        Bad ``n_workers``/``threads_per_worker``, or no scheduler answers at
        the address.
    """
    distributed = require("distributed", "AstrID batches on Dask")
    if scheduler is not None and not isinstance(scheduler, str):
        if not isinstance(scheduler, distributed.deploy.Cluster):
            raise AstridInputError(
                f"scheduler: expected None, an address string or a Dask cluster, got {type(scheduler).__name__}"
            )
        client = distributed.Client(scheduler)
        if threads_per_worker is not None:
            client.register_plugin(ThreadLimits(threads_per_worker))
        return client
    if scheduler is not None:
        threads_per_worker = positive_int(threads_per_worker, "threads_per_worker")
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise AstridInputError(
                f"scheduler: cannot connect to a Dask scheduler at {scheduler!r} ({exc})"
            ) from None
        if threads_per_worker is not None:
            client.register_plugin(ThreadLimits(threads_per_worker))
        return client
    n_workers, threads_per_worker = default_layout(n_workers, threads_per_worker)
    client = distributed.Client(
        n_workers=n_workers,
        threads_per_worker=1,  # one pair at a time per worker; its compute threads are set below
        processes=True,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
        # Without a dashboard the scheduler still serves /health and /metrics,
        # by default on port 8787: a free port avoids a clash (and its warning)
        # with another cluster on the machine.
        scheduler_kwargs=None if dashboard_address is not None else {"dashboard_address": ":0"},
        env=thread_env(threads_per_worker),
    )
    client.register_plugin(ThreadLimits(threads_per_worker))
    return client
