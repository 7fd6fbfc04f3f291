"""Compile AstrID's numba kernels once, with progress, instead of inside a first notebook cell.

AstrID's hot loops are numba kernels cached on disk (``cache=True``). On a
fresh install the cache is empty, and the first call of each step compiles
its kernels: about a minute and a half in all, silently, inside the user's
first ``difference()``. :func:`warmup` runs the chain once on a small
simulated pair, so that every kernel the ordinary calls use is compiled and
written to the cache; later processes (notebooks, papermill kernels, Dask
workers) only load them. ``make demo`` and ``make install`` run it as
``astrid warmup``.

Kernels are compiled for the argument types a call brings, so the chain is
run with the types ordinary calls use (float32 images, the default options).
A call with other types (``dtype=numpy.float64``) compiles its own
specialisation on first use, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["warmup"]


def _steps():
    from . import simulate
    from .braai import preprocess
    from .diffim import difference
    from .triplets import detect, make_triplets

    state: dict = {}

    def simulate_pair():
        state["pair"] = simulate.pair(size=512, seed=0)

    def zogy():
        pair = state["pair"]
        state["result"] = difference(pair.reference, pair.science)

    def zogy_tiles():
        # From 1024² on, the PSF varies over the field and ZOGY runs on tiles, views into the
        # image, which numba compiles separately from whole arrays.
        pair = simulate.pair(size=1024, seed=1)
        difference(pair.reference, pair.science)

    def classic():
        pair = state["pair"]
        difference(pair.reference, pair.science, method="classic")

    def fitted_kernel():
        pair = state["pair"]
        difference(pair.reference, pair.science, method="kernel")

    def triplets():
        candidates = detect(state["result"], threshold=5.0, negative=True)
        state["triplets"] = make_triplets(state["result"], candidates)

    def braai_input():
        for norm in ("rowwise", "l2"):
            preprocess(state["triplets"], norm=norm)

    return [
        ("simulated pair", simulate_pair),
        ("difference (ZOGY)", zogy),
        ("difference (ZOGY on tiles, 1024²)", zogy_tiles),
        ("difference (classic)", classic),
        ("difference (fitted kernel)", fitted_kernel),
        ("candidates and triplets", triplets),
        ("braai preprocessing", braai_input),
    ]


def warmup(progress: Callable[[str], None] | None = print) -> dict[str, float]:
    """Compile every numba kernel of the ordinary chain into the on-disk cache.

    Parameters
    ----------
    progress : callable or None, optional
        Called with one line per step as it finishes (default: ``print``);
        ``None`` for silence.

    Returns
    -------
    dict
        Seconds per step, and ``"total"``.

    Notes
    -----
    The cache lives beside the package's modules (``__pycache__``) unless
    ``NUMBA_CACHE_DIR`` names another folder. A second run only loads the
    kernels and takes a few seconds.
    """
    import warnings

    from .errors import AstridWarning

    times: dict[str, float] = {}
    steps = _steps()
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The small warm-up pair is not a result anyone reads; its warnings are not the user's.
        warnings.simplefilter("ignore", AstridWarning)
        for number, (name, step) in enumerate(steps, start=1):
            t0 = time.perf_counter()
            step()
            times[name] = time.perf_counter() - t0
            if progress is not None:
                progress(f"[{number}/{len(steps)}] {name}: {times[name]:.1f} s")
    times["total"] = time.perf_counter() - start
    if progress is not None:
        progress(f"numba kernels compiled and cached in {times['total']:.0f} s")
    return times
