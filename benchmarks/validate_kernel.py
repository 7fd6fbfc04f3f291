"""The fitted-kernel subtraction (astrid.kernel) against ZOGY: quality on simulated pairs, time at 4096².

Quality (``--seeds``): for each seed a ZTF-like pair (``astrid.simulate.pair``)
is differenced end to end by ZOGY (``difference(method="zogy")``) and by the
fitted kernel. Columns as in ``benchmarks/validate_simulated.py`` (whose
``evaluate`` scores both: ``std`` of the significance in source-free
regions, transients with true S/N >= 8 ``recovered`` at |S| > 5 within 2 px,
false positives ``FP`` at |S| > 5 and those near stars brighter than 16 mag
``FP bright``), plus for the kernel: the robust std of the per-pixel
``significance`` (D over its propagated noise) besides that of the
matched-filter ``detection`` image (the statistic thresholded, like ZOGY's
S_corr), the fitted photometric scale against the true flux ratio, the
image that was convolved and the stamps used / considered.

The kernel runs inside ``difference(method="kernel")``: alignment, backgrounds,
star list and PSF widths as for ZOGY, then :func:`astrid.kernel.subtract`; the
``s`` column is the whole ``difference()`` call.

Real data (``--real``): the JWST NIRCam pair (WebbPSF PSFs, noise maps,
no alignment) and the six DECam pairs of the shared data, loaded as in
``benchmarks/validate_real.py``: robust std and 5σ peaks of ZOGY's S_corr
and of the kernel's detection image (JWST: over the pixels sfft keeps, next
to sfft's own decorrelated S/N image).

Timing (``--bench SIZE``): the kernel step on one simulated pair, per stage
(stamp selection, stamp systems, solve and clipping, convolution with the
propagated variance, matched-filter detection), best of ``--repeat``, and
the peak memory numpy allocations reach during one call (``tracemalloc``).
The reference's star list is found once beforehand, untimed, as
``difference()`` passes the alignment's.

Run::

    .venv/bin/python benchmarks/validate_kernel.py --seeds 1 2 3 4 5 --size 1024
    .venv/bin/python benchmarks/validate_kernel.py --seeds --bench 4096 --repeat 3
    .venv/bin/python benchmarks/validate_kernel.py --seeds --real
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from validate_simulated import evaluate, parse_options

from astrid.diffim import difference
from astrid.diffim.pipeline import variance_map
from astrid.diffim.zogy import robust_std
from astrid.kernel import KernelInputs, KernelOptions, subtract
from astrid.simulate import explained_mask, near_stars_mask, source_free_mask


class _KernelResult:
    """What ``evaluate`` reads of a DifferenceResult (S_corr, mask, method, metrics)."""

    def __init__(self, S_corr, mask, metrics, raw):
        self.S_corr, self.mask, self.metrics, self.method, self.raw = (
            S_corr,
            mask,
            metrics,
            "kernel",
            raw,
        )


def kernel_difference(reference, science, difference_options=None, **kernel_options):
    """``difference(method="kernel")`` with what ``evaluate`` reads, and the kernel's own result."""
    result = difference(
        reference, science, method="kernel", kernel=kernel_options, **(difference_options or {})
    )
    return _KernelResult(result.S_corr, result.mask, result.metrics, result.subtraction)


def quality(seeds, size, kernel_options):
    from astrid.simulate import pair

    print(
        "| seed | method | std | std per pixel | recovered | FP | FP bright | scale / true − 1 | convolved | "
        "stamps used/considered | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    totals = {"zogy": [], "kernel": []}
    scales = []
    for seed in seeds:
        sim = pair(size, seed=seed)
        shape = sim.reference.shape
        ex = explained_mask(sim.truth, shape)
        bright = near_stars_mask(sim.stars, shape)
        free = source_free_mask(sim, shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zogy = difference(sim.reference, sim.science, method="zogy")
            kern = kernel_difference(sim.reference, sim.science, **kernel_options)
        for name, result in (("zogy", zogy), ("kernel", kern)):
            stats = evaluate(sim, result, ex, bright, free)
            totals[name].append(stats)
            cells = ["", "", "", ""]
            if name == "kernel":
                raw = result.raw
                scale = raw.flux_ratio / sim.params["flux_ratio"] - 1.0
                scales.append(scale)
                cells = [
                    f"{robust_std(raw.significance, raw.mask | ~free):.3f}",
                    f"{100 * scale:+.2f} %",
                    raw.convolved,
                    f"{raw.n_stamps_used}/{len(raw.stamps)}",
                ]
            print(
                f"| {seed} | {name} | {stats['std']:.3f} | {cells[0]} | {stats['recovered']}/{stats['n']} | "
                f"{stats['fp']} | {stats['fp_bright']} | {cells[1]} | {cells[2]} | {cells[3]} | "
                f"{stats['time']:.1f} |",
                flush=True,
            )
    for name, rows in totals.items():
        line = (
            f"| all | {name} | {np.mean([s['std'] for s in rows]):.3f} (mean) | | "
            f"{sum(s['recovered'] for s in rows)}/{sum(s['n'] for s in rows)} | {sum(s['fp'] for s in rows)} | "
            f"{sum(s['fp_bright'] for s in rows)} | "
        )
        if name == "kernel":
            a = 100 * np.abs(scales)
            line += f"median |Δ| {np.median(a):.2f} %, max {a.max():.2f} %, {np.mean(a < 1):.0%} within 1 % | | | |"
        else:
            line += "| | | |"
        print(line)
    print(
        f"# {len(seeds)} pairs of {size}² px; FP scaled to 2048²: "
        + ", ".join(
            f"{m} {sum(s['fp'] for s in rows) * (2048 / size) ** 2 / len(rows):.1f}"
            for m, rows in totals.items()
        )
    )


def _bright_residual(S, valid, stars, n=5, half=3):
    """Median over the ``n`` brightest clean stars of the largest |S| within ``half`` px (NaN when none)."""
    if stars is None or len(stars) == 0:
        return float("nan")
    ny, nx = S.shape
    values = []
    for x, y in stars:
        xi, yi = int(round(x)), int(round(y))
        if half <= xi < nx - half and half <= yi < ny - half:
            box = valid[yi - half : yi + half + 1, xi - half : xi + half + 1]
            if box.all():
                values.append(
                    float(np.max(np.abs(S[yi - half : yi + half + 1, xi - half : xi + half + 1])))
                )
        if len(values) == n:
            break
    return float(np.median(values)) if values else float("nan")


def _brightest_stars(image):
    """(x, y) of the unsaturated, unmasked stars of ``image`` (an Image on the output grid), brightest first."""
    from astrid.diffim import find_stars

    data = np.asarray(image.data, dtype=np.float64)
    mask = np.asarray(image.mask, bool) | ~np.isfinite(data)
    sky = float(np.median(data[~mask]))
    rms = robust_std(data - sky, mask)
    stars = find_stars(np.where(mask, 0, data - sky), mask=mask, background=0.0, rms=rms)
    keep = np.ones(len(stars), bool)
    for column in ("saturated", "masked"):
        if column in stars.colnames:
            keep &= ~np.asarray(stars[column], bool)
    stars = stars[keep]
    order = np.argsort(-np.asarray(stars["flux"], dtype=np.float64))
    return np.c_[np.asarray(stars["x"])[order], np.asarray(stars["y"])[order]]


def real(kernel_options):
    """JWST and DECam pairs of the shared data (as benchmarks/validate_real.py loads them): ZOGY, the kernel
    fitted on star stamps and on the whole image (``fit_region="image"``), and sfft's own results."""
    from astropy.io import fits
    from validate_real import JWST_REF, JWST_SCI, count_peaks

    from astrid import read_image
    from astrid.paths import shared_data

    runs = []
    root = shared_data("images", "sfft_jwst_nircam_a2744")
    if root is None:
        print("# JWST pair not found (shared data absent): skipped")
    else:
        science = read_image(root / "input_data" / f"{JWST_SCI}.fits")
        reference = read_image(root / "input_data" / f"{JWST_REF}.fits")
        science.variance = (
            fits.getdata(root / "auxiliary" / f"{JWST_SCI}.noise.fits").astype(np.float64) ** 2
        )
        reference.variance = (
            fits.getdata(root / "auxiliary" / f"{JWST_REF}.noise.fits").astype(np.float64) ** 2
        )
        psfs = {
            "science_psf": fits.getdata(root / "auxiliary" / f"{JWST_SCI}.WebbPSF.fits").astype(
                np.float64
            ),
            "reference_psf": fits.getdata(root / "auxiliary" / f"{JWST_REF}.WebbPSF.fits").astype(
                np.float64
            ),
        }
        sfft = fits.getdata(
            root / "4check" / f"{JWST_SCI}.crossConvd.sfftdiff.DeCorrelated.SNR.fits"
        )
        sfft = sfft.astype(np.float64)
        runs.append(
            (
                "JWST F200W A2744",
                reference,
                science,
                dict(align=False, **psfs),
                np.isfinite(sfft) & (sfft != 0),
                ("its decorrelated S/N", sfft),
            )
        )
    root = shared_data("images", "sfft_decam_decorr")
    if root is None:
        print("# DECam epochs not found (shared data absent): skipped")
    else:
        for c in "abcde":
            runs.append(
                (
                    f"DECam OBS04{c} vs OBS18{c}",
                    read_image(root / f"input_data/DEC-OBS04{c}.mini.fits"),
                    read_image(root / f"input_data/DEC-OBS18{c}.mini.fits"),
                    {"align": True},
                    None,
                    None,
                )
            )
        sfft = fits.getdata(root / "4check" / "FinalDifference.DeCorr.fits").astype(np.float64)
        runs.append(
            (
                "DECam stacks",
                read_image(root / "4check/Stack-DEC-OBS04.fits"),
                read_image(root / "4check/Stack-DEC-OBS18.fits"),
                {"align": True},
                None,
                ("its decorrelated difference / robust std", sfft / robust_std(sfft)),
            )
        )
    print(
        "| pair | method | robust std | 5σ peaks | bright-star residual | valid fraction | scale | "
        "stamps used/considered | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    methods = (("zogy", None), ("kernel", {}), ("kernel, whole image", {"fit_region": "image"}))
    for label, reference, science, options, sfft_valid, sfft in runs:
        stars = _brightest_stars(reference)
        for method, extra in methods:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    if method == "zogy":
                        result = difference(reference, science, dtype=np.float64, **options)
                        S, mask, note, scale, stamps = (
                            result.S_corr,
                            result.mask,
                            "",
                            result.metrics["flux_ratio"],
                            "",
                        )
                    else:
                        diff_options = {k: v for k, v in options.items() if k == "align"}
                        result = kernel_difference(
                            reference, science, diff_options, **{**kernel_options, **extra}
                        )
                        raw = result.raw
                        S, mask, scale = result.S_corr, result.mask, raw.flux_ratio
                        stamps = f"{raw.n_stamps_used}/{len(raw.stamps)}"
                        note = (
                            f"convolved {raw.convolved}, r = {raw.model.half_width} px, degree {raw.model.degree}, "
                            f"ε = {raw.detection_systematic:.3f}"
                        )
                except Exception as exc:  # noqa: BLE001 -- report, do not hide: the row says what failed
                    print(
                        f"| {label} | {method} | | | | | | | {type(exc).__name__}: {exc} |",
                        flush=True,
                    )
                    continue
            valid = ~mask if sfft_valid is None else ~mask & sfft_valid
            print(
                f"| {label} | {method} | {robust_std(S, ~valid):.3f} | {count_peaks(S, valid)} | "
                f"{_bright_residual(S, valid, stars):.1f} | {valid.mean():.3f} | {scale:.3f} | {stamps} | {note} |",
                flush=True,
            )
        if sfft is not None:
            name, image = sfft
            valid = sfft_valid if sfft_valid is not None else np.isfinite(image)
            print(
                f"| {label} | sfft ({name}) | {robust_std(image, ~valid):.3f} | {count_peaks(image, valid)} | "
                f"{_bright_residual(image, valid, stars):.1f} | {valid.mean():.3f} | | | over all pixels sfft keeps |",
                flush=True,
            )


def bench(size, repeat, kernel_options):
    from astrid.simulate import pair

    sim = pair(size, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = difference(sim.reference, sim.science, method="classic")
    sci, ref = base.science, base.reference
    sv, _ = variance_map(sci, base.science_background, sci.data, sci.mask, True)
    rv, _ = variance_map(ref, base.reference_background, ref.data, ref.mask, True)
    m = base.metrics
    # difference() passes the alignment's star list of the reference; found here once, untimed.
    from astrid.diffim import find_stars

    stars = find_stars(
        np.where(ref.mask, 0, np.nan_to_num(ref.data)),
        mask=ref.mask,
        background=0.0,
        rms=m["sigma_ref"],
    )
    inputs = KernelInputs(
        science_variance=sv,
        reference_variance=rv,
        science_sigma=m["sigma_sci"],
        reference_sigma=m["sigma_ref"],
        science_fwhm=m["fwhm_sci"],
        reference_fwhm=m["fwhm_ref"],
        science_psf=base.science_psf.psf,
        reference_psf=base.reference_psf.psf,
    )
    kwargs = dict(
        stars=stars, inputs=inputs, options=KernelOptions(dtype=np.float32, **kernel_options)
    )
    subtract(ref, sci, **kwargs)  # compile / load the numba kernels
    best = None
    for _ in range(repeat):
        raw = subtract(ref, sci, **kwargs)
        if best is None or raw.timings["total"] < best["total"]:
            best = dict(raw.timings)
    tracemalloc.start()
    subtract(ref, sci, **kwargs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_before, rss_peak = _rss_peak(lambda: subtract(ref, sci, **kwargs))
    stages = ["select", "systems", "solve", "convolve", "detect", "total"]
    print(
        f"# 1-minute load average {os.getloadavg()[0]:.1f} at the end (the machine's other jobs); "
        f"{_cpu_model()}"
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; kernel step of "
        f"difference(method='kernel') at {size}², best of {repeat}; inputs: {base.metrics['fwhm_sci']:.2f}/"
        f"{base.metrics['fwhm_ref']:.2f} px FWHM, r = {raw.model.half_width} px ({raw.model.basis.size} "
        f"{raw.model.basis.kind} functions), degree {raw.model.degree}, {raw.n_stamps_used}/{len(raw.stamps)} "
        f"stamps; the other stages of difference() took align {m['time_align']:.2f} s, background "
        f"{m['time_background']:.2f} s, PSF {m['time_psf']:.2f} s"
    )
    print(
        "| size | "
        + " | ".join(stages)
        + " | fit (select+systems+solve) | peak numpy memory | peak RSS growth |"
    )
    print("|---|" + "---|" * (len(stages) + 3))
    fit = best["select"] + best["systems"] + best["solve"]
    rss = f"{(rss_peak - rss_before) / 2**30:.2f} GiB" if rss_peak else "n/a"
    print(
        f"| {size}² | "
        + " | ".join(f"{best[s]:.2f} s" for s in stages)
        + f" | {fit:.2f} s | {peak / 2**30:.2f} GiB | {rss} |"
    )
    print(
        f"# peak numpy memory: tracemalloc's peak over one call (arrays the call allocates; the inputs, "
        f"{sum(a.nbytes for a in (sci.data, ref.data, sv, rv) if a is not None) / 2**30:.2f} GiB, are the "
        f"caller's); peak RSS growth: the process's high-water mark during one call (reset before it) "
        f"over its resident size before it ({rss_before / 2**30:.2f} GiB)"
    )


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_peak(call):
    """(resident bytes before, high-water mark during ``call``): Linux's VmHWM, reset through clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return 0, 0
    before = _status_kib("VmRSS")
    call()
    return before, _status_kib("VmHWM")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--bench", type=int, nargs="*", default=[], metavar="SIZE")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--real", action="store_true", help="also the JWST and DECam pairs of the shared data"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="field of astrid.kernel.KernelOptions, e.g. basis=delta (value read as YAML)",
    )
    args = parser.parse_args(argv)
    options = parse_options(args.option)
    if args.seeds:
        quality(args.seeds, args.size, options)
    if args.real:
        real(options)
    for size in args.bench:
        bench(size, args.repeat, options)


if __name__ == "__main__":
    main()
