"""Time the differencing engine's front end: background, star finding, PSF and alignment.

Run from the repository root::

    python benchmarks/bench_align.py              # 1024, 2048 and 4096 pixels
    python benchmarks/bench_align.py 512 1024     # chosen sizes

Each size simulates a ZTF-like pair (``astrid.simulate.pair``) and shifts
the science WCS by a fraction of a pixel for the alignment to correct, warms
the numba kernels up once, then times every step (best of ``--repeat`` runs)
and prints a table: wall time, CPU time (all threads; on a shared machine the
wall time includes waiting for a core, the CPU time does not) and the growth
of resident memory during the step (0 when it reuses memory that an earlier
step freed). The notes give the
alignment's residual RMS, the largest error of the fitted mapping against
the simulator's true one, and the PSF FWHMs (estimated, and true measured
the same way).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import threading
import time
import warnings

import numpy as np

# CRPIX error (x, y) put into the science WCS, pixels.
WCS_ERROR_PX = (0.4, -0.3)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Peak resident memory above the starting level, sampled every 2 ms in a thread.

    Unlike tracemalloc this sees numba's allocations too.
    """

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def _timed(fn, repeat):
    """Best wall time, CPU time of that run (all threads) and peak extra memory of a step."""
    best = (float("inf"), 0.0)
    peak = 0.0
    result = None
    for _ in range(repeat):
        with _PeakRSS() as mem:
            cpu = time.process_time()
            start = time.perf_counter()
            result = fn()
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu
        best = min(best, (wall, cpu))
        peak = max(peak, mem.extra_mib)
    return result, best[0], best[1], peak


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1024, 2048, 4096])
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per step; the best time is reported"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    import numba

    from astrid import simulate
    from astrid.diffim import align, estimate_background, estimate_psf, find_stars, measure_fwhm
    from astrid.diffim.alignment import apply_transform, pixel_map

    print(
        f"# AstrID bench_align  python {platform.python_version()}  numpy {np.__version__}  "
        f"numba {numba.__version__} ({numba.get_num_threads()} threads)  cpus {os.cpu_count()}"
    )
    warm = simulate.pair(256, seed=args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        align(reference=warm.reference, science=warm.science)
        estimate_psf(warm.reference.data, warm.reference.mask)

    header = f"{'size':>6} {'step':<12} {'wall_s':>7} {'cpu_s':>7} {'peak_MiB':>9}  notes"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        sim = simulate.pair(size, seed=args.seed)
        ref = sim.reference
        # A WCS off by a fraction of a pixel, as real pipelines' are, so that the
        # refinement has something to correct.
        wrong = copy.deepcopy(sim.science.wcs)
        wrong.wcs.crpix = wrong.wcs.crpix + np.array(WCS_ERROR_PX)
        wrong.wcs.set()
        sci = sim.science.copy(wcs=wrong)
        bkg, t, c, m = _timed(lambda: estimate_background(ref.data, ref.mask), args.repeat)
        print(
            f"{size:>6} {'background':<12} {t:7.2f} {c:7.2f} {m:9.1f}  method={bkg.method} median_rms={bkg.median_rms:.2f}"
        )
        stars, t, c, m = _timed(
            lambda: find_stars(ref.data, ref.mask, bkg, saturation=ref.meta.saturation), args.repeat
        )
        print(
            f"{size:>6} {'find_stars':<12} {t:7.2f} {c:7.2f} {m:9.1f}  n={len(stars)} fwhm={stars.meta['fwhm']:.2f}px"
        )
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            psf, t, c, m = _timed(
                lambda: estimate_psf(ref.data, ref.mask, bkg, saturation=ref.meta.saturation),
                args.repeat,
            )
        true_fwhm = measure_fwhm(sim.psf("reference"))
        print(
            f"{size:>6} {'estimate_psf':<12} {t:7.2f} {c:7.2f} {m:9.1f}  {psf.method} n={psf.n_stars} "
            f"fwhm={psf.fwhm:.2f}px true={true_fwhm:.2f}px"
        )
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            al, t, c, m = _timed(lambda: align(reference=ref, science=sci), args.repeat)
        st = sim.stars
        sx, sy = np.asarray(st["x_sci"], float), np.asarray(st["y_sci"], float)
        wx, wy = pixel_map(wrong, ref.wcs, sx, sy)
        fx, fy = apply_transform(al.transform, wx, wy)
        tx, ty = apply_transform(sim.params["sci_to_ref"], sx, sy)
        ok = (tx > 0) & (tx < size) & (ty > 0) & (ty < size)
        maperr = float(np.max(np.hypot(fx - tx, fy - ty)[ok]))
        print(
            f"{size:>6} {'align':<12} {t:7.2f} {c:7.2f} {m:9.1f}  {al.method} n={al.n_matched} "
            f"rms={al.rms:.3f}px max_map_err={maperr:.3f}px overlap={al.overlap:.3f}"
        )


if __name__ == "__main__":
    main()
