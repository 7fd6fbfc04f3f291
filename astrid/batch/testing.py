"""Testing entry points of :mod:`astrid.batch`: hooks kept off :func:`~astrid.batch.process_pairs`.

>>> from astrid.batch import testing
>>> with testing.on_result(lambda client, record: None):       # doctest: +SKIP
...     process_pairs(survey, out, client)

The hooks are process-wide and not thread-safe: for tests only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ._core import BatchHooks, commit_in_groups, hooks
from ._outputs import STORE_OPTIONS_ATTR, STORE_PAIRS_ATTR

__all__ = [
    "STORE_OPTIONS_ATTR",
    "STORE_PAIRS_ATTR",
    "BatchHooks",
    "commit_in_groups",
    "on_result",
    "replace_process",
]


@contextmanager
def on_result(callback: Callable) -> Iterator[None]:
    """Call ``callback(client, record)`` on the client after each pair's outcome, inside the block.

    Parameters
    ----------
    callback : callable
        Receives the :class:`distributed.Client` and the pair's record (a
        dict, as written to ``batch.json``).
    """
    previous = hooks.on_result
    hooks.on_result = callback
    try:
        yield
    finally:
        hooks.on_result = previous


@contextmanager
def replace_process(process: Callable) -> Iterator[None]:
    """Run ``process(task)`` instead of :func:`~astrid.batch.run_pair` for each pair in the block.

    Parameters
    ----------
    process : callable
        Takes a :class:`~astrid.batch.PairTask`, returns the pair's record
        (a dict); it must be picklable by Dask. The difference options are
        not validated while it is in force.
    """
    previous = hooks.process
    hooks.process = process
    try:
        yield
    finally:
        hooks.process = previous
