"""Publication figures in one consistent style, saved as PDF and PNG.

Every ``plot_*`` function takes data, draws a new figure in AstrID's style
and returns the :class:`matplotlib.figure.Figure`; :func:`save` writes it as
``<name>.pdf`` and ``<name>.png`` under a folder. The paper's figures are
regenerated from saved outputs by ``notebooks/06_paper_figures.ipynb`` (see
``docs/figures.md``).

The numbers the figures show (``S_corr`` statistics, completeness, the
difference-file reader, the choice of bright stars) are computed by
:mod:`astrid.evaluation`; this module only draws.

Figures of the classifier (ROC and precision-recall curves, score histograms
by class, calibration) are drawn by the plot functions of
:mod:`astrid.braai`, which use the same style.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np

from .evaluation import completeness, scorr_statistics

__all__ = [
    "style",
    "pyplot",
    "save",
    "zscale_limits",
    "plot_pair",
    "plot_difference",
    "plot_scorr_histogram",
    "plot_zogy_vs_classic",
    "plot_methods_at_stars",
    "plot_kernel_grid",
    "plot_triplets",
    "select_examples",
    "plot_completeness",
    "plot_int8_vs_float",
    "plot_training_history",
]

_STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "image.origin": "lower",
    "image.interpolation": "nearest",
}


@contextlib.contextmanager
def style():
    """A context manager applying AstrID's figure style (``with style(): ...``).

    Matplotlib's ``rc_context`` restores every setting on exit, including
    ``interactive``, which Jupyter's inline backend switches on when the
    first figure of a kernel is drawn; restored to False, no later figure
    of the kernel would be shown. The interactive state reached inside the
    block is therefore kept.

    Yields
    ------
    None
        The block runs with the style's rcParams (fonts, inward ticks,
        ``origin="lower"``, 200 dpi on save).
    """
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        yield
        interactive = matplotlib.is_interactive()
    matplotlib.interactive(interactive)


def pyplot():
    """Matplotlib's ``pyplot``, on the non-interactive Agg backend outside a notebook.

    Scripts, tests and batch jobs have no display; unless ``MPLBACKEND`` says
    otherwise, Agg is chosen before ``pyplot`` is first imported so that no GUI
    backend is ever started. In a Jupyter kernel the inline backend is kept.

    Returns
    -------
    module
        ``matplotlib.pyplot``.
    """
    import matplotlib

    if "MPLBACKEND" not in os.environ and not _in_notebook():
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def save(
    fig, name: str, folder: str | os.PathLike = "figures", formats=("pdf", "png")
) -> list[Path]:
    """Save ``fig`` as ``folder/name.<fmt>`` for each format; return the paths.

    Files are written in AstrID's style (200 dpi, tight bounding box) and
    atomically (a temporary file renamed into place), so an interrupted save
    never leaves half a figure. PDFs carry no creation date, so the same
    figure gives the same file.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to write.
    name : str
        File name without suffix.
    folder : str or path-like, optional
        Output folder, created when missing.
    formats : sequence of str, optional
        Matplotlib output formats, one file each.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``formats``.
    """
    from .io import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with style():  # savefig reads its dpi and bbox from rcParams at save time
        for fmt in formats:
            path = folder / f"{name}.{fmt}"
            metadata = {"CreationDate": None} if fmt == "pdf" else None
            atomic_write(
                path,
                lambda fh, fmt=fmt, metadata=metadata: fig.savefig(
                    fh, format=fmt, metadata=metadata
                ),
            )
            paths.append(path)
    return paths


def zscale_limits(data, mask=None) -> tuple[float, float]:
    """Display limits of the IRAF zscale algorithm (astropy's ZScaleInterval).

    Parameters
    ----------
    data : array-like, shape (ny, nx)
        Pixel values in data units.
    mask : array-like of bool, shape (ny, nx), optional
        Pixels to leave out (True = bad); non-finite pixels are always left out.

    Returns
    -------
    (float, float)
        Lower and upper limits in data units; ``(0, 1)`` without a good pixel.
    """
    from astropy.visualization import ZScaleInterval

    values = np.asarray(data, dtype=float)
    good = np.isfinite(values)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)
    if not good.any():
        return 0.0, 1.0
    return ZScaleInterval().get_limits(values[good])


def plot_pair(reference, science, titles=("reference", "science"), truth=None, cmap="gray"):
    """Show a reference/science pair side by side with zscale stretch.

    Parameters
    ----------
    reference, science : astrid.Image
        The two epochs (each on its own pixel grid).
    titles : tuple of str
        Panel titles.
    truth : astropy.table.Table, optional
        Truth table of a simulated pair; injected supernovae are circled in the science panel.
    cmap : str, optional
        Matplotlib colour map of both panels.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    plt = pyplot()
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.7), constrained_layout=True)
        for ax, image, title in zip(axes, (reference, science), titles):
            vmin, vmax = zscale_limits(image.data, image.mask)
            ax.imshow(image.data, cmap=cmap, vmin=vmin, vmax=vmax)
            label = " ".join(str(v) for v in (image.meta.telescope, image.meta.filter) if v)
            ax.set_title(f"{title} {label}".strip())
            ax.set_xlabel("x [pix]")
        axes[0].set_ylabel("y [pix]")
        if truth is not None and "kind" in truth.colnames:
            sn = truth[truth["kind"] == "supernova"]
            axes[1].scatter(
                sn["x_sci"], sn["y_sci"], s=80, facecolors="none", edgecolors="tab:red", lw=0.8
            )
    return fig


# --------------------------------------------------------------------------- helpers

_DIFF_CMAP = "RdBu_r"
_BAD_COLOR = "#6a5a7a"  # masked / no-data pixels: a muted violet, distinct from both ends of RdBu


def _array(image) -> np.ndarray:
    """The pixel array of an :class:`astrid.Image` or of an array."""
    return np.asarray(getattr(image, "data", image), dtype=float)


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=_BAD_COLOR)


def _masked(values: np.ndarray, mask) -> np.ndarray:
    out = np.array(values, dtype=float, copy=True)
    if mask is not None:
        out[np.asarray(mask, dtype=bool)] = np.nan
    return out


def _truth_circles(ax, truth, kinds=("supernova",), x="x_ref", y="y_ref") -> None:
    if truth is None or "kind" not in truth.colnames or x not in truth.colnames:
        return
    rows = truth[np.isin(np.asarray(truth["kind"], dtype=str), kinds)]
    if len(rows):
        ax.scatter(
            rows[x],
            rows[y],
            s=90,
            facecolors="none",
            edgecolors="gold",
            lw=0.8,
            label="injected SN",
        )


# --------------------------------------------------------------------------- differences


def plot_difference(result, truth=None, limit: float = 5.0, title: str | None = None):
    """Science, reference, difference ``D`` and significance ``S_corr`` of one pair.

    Parameters
    ----------
    result : DifferenceResult or astrid.evaluation.DifferencePlanes
        Anything with ``science``, ``reference``, ``D``, ``S_corr`` and
        ``mask`` on the reference grid.
    truth : astropy.table.Table, optional
        Truth table of a simulated pair; injected supernovae (``x_ref``,
        ``y_ref``) are circled.
    limit : float
        Colour range of ``D`` and ``S_corr`` is ±``limit`` (sigma for
        ZOGY's unit-variance ``D``; for a classic ``D`` the zscale limits are
        used instead).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Four panels in one row; masked pixels of ``D`` and ``S_corr`` are violet.
    """
    plt = pyplot()
    mask = np.asarray(result.mask, dtype=bool)
    method = str(getattr(result, "method", ""))
    with style():
        fig, axes = plt.subplots(
            1, 4, figsize=(7.2, 2.3), constrained_layout=True, sharex=True, sharey=True
        )
        for ax, image, name in zip(
            axes[:2], (result.science, result.reference), ("science (aligned)", "reference")
        ):
            data = _array(image)
            vmin, vmax = zscale_limits(data)
            ax.imshow(data, cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(name)
        D = _masked(_array(result.D), mask)
        if method == "classic":
            d_lo, d_hi = zscale_limits(D)
            d_lim = max(abs(d_lo), abs(d_hi))
        else:
            d_lim = limit
        axes[2].imshow(D, cmap=_cmap(_DIFF_CMAP), vmin=-d_lim, vmax=d_lim)
        axes[2].set_title(f"D ({method})" if method else "D")
        image = axes[3].imshow(
            _masked(_array(result.S_corr), mask), cmap=_cmap(_DIFF_CMAP), vmin=-limit, vmax=limit
        )
        axes[3].set_title(r"$S_\mathrm{corr}$")
        fig.colorbar(image, ax=axes[3], shrink=0.8, label=r"$\sigma$")
        for ax in axes:
            ax.set_xlabel("x [pix]")
            _truth_circles(ax, truth)
        axes[0].set_ylabel("y [pix]")
        if title:
            fig.suptitle(title)
    return fig


def plot_scorr_histogram(
    S_corr, mask=None, bins: int = 121, limit: float = 8.0, label: str | None = None
):
    """Histogram of ``S_corr`` over the good pixels against a unit Gaussian.

    ZOGY's promise is that ``S_corr`` is N(0, 1) wherever nothing changed,
    so a fixed threshold (5 sigma) means a fixed false-alarm rate. The
    histogram is drawn on a log scale, where the wings (residuals of bright
    stars, artifacts, transients) show up as excess over the parabola.

    Parameters
    ----------
    S_corr : array-like, shape (ny, nx)
        Significance image.
    mask : array-like of bool, optional
        Pixels to leave out (True = bad).
    bins : int
        Histogram bins over ``[-limit, limit]``.
    limit : float
        Range of the x axis, sigma; values beyond are counted in the outer bins.
    label : str, optional
        Legend label of the histogram (default ``"S_corr"``).

    Returns
    -------
    matplotlib.figure.Figure
        One axes with the histogram (density), the unit Gaussian and a text
        box with :func:`astrid.evaluation.scorr_statistics`.
    """
    stats = scorr_statistics(S_corr, mask)
    values = np.asarray(S_corr, dtype=float)
    good = np.isfinite(values)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)
    v = np.clip(values[good], -limit, limit)
    edges = np.linspace(-limit, limit, bins + 1)
    density, _ = np.histogram(v, bins=edges, density=True)
    centres = 0.5 * (edges[1:] + edges[:-1])
    plt = pyplot()
    with style():
        fig, ax = plt.subplots(figsize=(3.5, 2.8), constrained_layout=True)
        ax.stairs(density, edges, color="k", lw=1.0, label=label or r"$S_\mathrm{corr}$")
        ax.plot(
            centres,
            np.exp(-0.5 * centres**2) / math.sqrt(2 * math.pi),
            color="tab:red",
            lw=1.0,
            ls="--",
            label="N(0, 1)",
        )
        ax.set_yscale("log")
        floor = 0.5 / (v.size * (edges[1] - edges[0]))
        ax.set_ylim(floor, 1.0)
        ax.set_xlim(-limit, limit)
        ax.set_xlabel(r"$S_\mathrm{corr}$ [$\sigma$]")
        ax.set_ylabel("density")
        ax.legend(loc="upper right", frameon=False)
        ax.text(
            0.03,
            0.97,
            f"robust std {stats['robust_std']:.3f}\n"
            f"std {stats['std']:.3f}\n"
            f"|S|>5: {stats['fraction_above_5']:.1e}\n(Gaussian {stats['gaussian_fraction_above_5']:.1e})",
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=7,
        )
    return fig


def _positions_xy(positions) -> np.ndarray:
    from astropy.table import Table

    from .errors import AstridInputError

    if isinstance(positions, Table):
        for x, y in (("x_ref", "y_ref"), ("x", "y"), ("xpos", "ypos")):
            if x in positions.colnames and y in positions.colnames:
                return np.column_stack(
                    [np.asarray(positions[x], float), np.asarray(positions[y], float)]
                )
        raise AstridInputError(
            f"positions: table needs x_ref/y_ref or x/y columns; has {', '.join(positions.colnames)}"
        )
    xy = np.asarray(positions, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise AstridInputError(
            f"positions: expected (n, 2) pixel positions (x, y), got shape {xy.shape}"
        )
    return xy


def _cutout(image: np.ndarray, x: float, y: float, half: int) -> np.ndarray:
    """A (2 half + 1)² cut-out centred on the nearest pixel, NaN beyond the image."""
    ny, nx = image.shape
    cx, cy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
    out = np.full((2 * half + 1, 2 * half + 1), np.nan)
    y0, y1 = max(cy - half, 0), min(cy + half + 1, ny)
    x0, x1 = max(cx - half, 0), min(cx + half + 1, nx)
    if y0 < y1 and x0 < x1:
        out[y0 - (cy - half) : y1 - (cy - half), x0 - (cx - half) : x1 - (cx - half)] = image[
            y0:y1, x0:x1
        ]
    return out


def plot_zogy_vs_classic(
    zogy_result,
    classic_result,
    positions,
    size: int = 41,
    limit: float = 5.0,
    max_rows: int = 4,
    residual_radius: float = 6.0,
):
    """Subtraction residuals around bright stars: classic matching against ZOGY.

    Both significance maps are in sigma, so the same colour range compares
    them directly: a classic subtraction leaves PSF-mismatch rings of many
    sigma around bright stars, ZOGY's ``S_corr`` (which includes the source
    noise and astrometric-noise terms) stays close to the noise. The figure
    is :func:`plot_methods_at_stars` with the two methods.

    Parameters
    ----------
    zogy_result, classic_result : DifferenceResult or astrid.evaluation.DifferencePlanes
        The same pair differenced with ``method="zogy"`` and
        ``method="classic"`` (same reference grid).
    positions : astropy.table.Table or array-like, shape (n, 2)
        Star positions on the reference grid (``x_ref``/``y_ref`` or
        ``x``/``y`` columns, or (x, y) rows), e.g. from
        :func:`astrid.evaluation.bright_star_positions`.
    size : int
        Side of each cut-out, pixels (odd).
    limit : float
        Colour range ±``limit`` sigma.
    max_rows : int
        At most this many stars are shown.
    residual_radius : float
        Radius around the star, pixels, over which the residual is measured.

    Returns
    -------
    matplotlib.figure.Figure
        One row per star: science, classic ``S_corr``, ZOGY ``S_corr``; each
        significance panel is labelled with the largest ``|S_corr|`` over the
        unmasked pixels within ``residual_radius`` of the star (other sources
        in the cut-out do not count).

    Raises
    ------
    AstridInputError
        No positions, or the two results are on different grids.
    """
    return plot_methods_at_stars(
        {"classic": classic_result, "ZOGY": zogy_result},
        positions,
        size=size,
        limit=limit,
        max_rows=max_rows,
        residual_radius=residual_radius,
        science=zogy_result.science,
    )


def _method_columns(results, science) -> list[tuple[str, np.ndarray, object]]:
    """(title, plane, mask) of each column of :func:`plot_methods_at_stars`, grids checked."""
    from collections.abc import Mapping

    from .errors import AstridInputError

    if not isinstance(results, Mapping) or not results:
        raise AstridInputError(
            "results: expected a non-empty dict of method name -> DifferenceResult, "
            f"got {type(results).__name__}" + (" (empty)" if isinstance(results, Mapping) else "")
        )
    for name, result in results.items():
        if not (hasattr(result, "S_corr") and hasattr(result, "mask")):
            raise AstridInputError(
                f"results[{name!r}]: expected a DifferenceResult or DifferencePlanes "
                f"(with S_corr and mask), got {type(result).__name__}"
            )
    first = next(iter(results))
    shown = _array(results[first].science if science is None else science)
    columns = [("science", shown, None)]
    for name, result in results.items():
        plane = _array(result.S_corr)
        if plane.shape != shown.shape:
            origin = "science" if science is not None else f"results[{first!r}].science"
            raise AstridInputError(
                f"results[{name!r}].S_corr {plane.shape} and {origin} {shown.shape} "
                "are on different grids"
            )
        columns.append((f"{name} " + r"$S_\mathrm{corr}$", plane, result.mask))
    return columns


def plot_methods_at_stars(
    results,
    positions,
    size: int = 41,
    limit: float = 5.0,
    max_rows: int = 4,
    residual_radius: float = 6.0,
    science=None,
):
    """Subtraction residuals around bright stars, one column per difference method.

    Every significance map is in sigma, so one colour range compares them
    directly: PSF mismatch shows up as rings of many sigma around bright
    stars (e.g. a Gaussian-matched classic subtraction), a well matched
    subtraction stays close to the noise.

    Parameters
    ----------
    results : dict of str to DifferenceResult or astrid.evaluation.DifferencePlanes
        The same pair differenced by each method (e.g. ``"classic"``,
        ``"kernel"``, ``"ZOGY"``), all on the same reference grid; the keys
        title the columns, in the dict's order.
    positions : astropy.table.Table or array-like, shape (n, 2)
        Star positions on the reference grid (``x_ref``/``y_ref`` or
        ``x``/``y`` columns, or (x, y) rows), e.g. from
        :func:`astrid.evaluation.bright_star_positions`.
    size : int
        Side of each cut-out, pixels (odd).
    limit : float
        Colour range ±``limit`` sigma.
    max_rows : int
        At most this many stars are shown.
    residual_radius : float
        Radius around the star, pixels, over which the residual is measured.
    science : astrid.Image or array-like, shape (ny, nx), optional
        The image of the first column, on the reference grid (default: the
        aligned science image of the first result).

    Returns
    -------
    matplotlib.figure.Figure
        One row per star: science, then each method's ``S_corr``; each
        significance panel is labelled with the largest ``|S_corr|`` over the
        unmasked pixels within ``residual_radius`` of the star (other sources
        in the cut-out do not count).

    Raises
    ------
    AstridInputError
        ``results`` not a non-empty dict of results, no positions, or the
        results (and ``science``) on different grids.
    """
    from .errors import AstridInputError

    columns = _method_columns(results, science)
    xy = _positions_xy(positions)[:max_rows]
    if len(xy) == 0:
        raise AstridInputError("positions: no star to show")
    half = int(size) // 2
    offsets = np.arange(-half, half + 1)
    within = np.hypot(offsets[:, None], offsets[None, :]) <= residual_radius
    plt = pyplot()
    with style():
        fig, axes = plt.subplots(
            len(xy),
            len(columns),
            figsize=(1.55 * len(columns) + 0.35, 1.65 * len(xy) + 0.4),
            constrained_layout=True,
            squeeze=False,
        )
        image = None
        for row, (x, y) in enumerate(xy):
            for col, (name, plane, mask) in enumerate(columns):
                ax = axes[row, col]
                stamp = _cutout(plane if mask is None else _masked(plane, mask), x, y, half)
                if col == 0:
                    vmin, vmax = zscale_limits(stamp)
                    ax.imshow(stamp, cmap="gray", vmin=vmin, vmax=vmax)
                    ax.set_ylabel(f"({x:.0f}, {y:.0f})")
                else:
                    image = ax.imshow(stamp, cmap=_cmap(_DIFF_CMAP), vmin=-limit, vmax=limit)
                    near = np.abs(stamp[within])
                    peak = np.nanmax(near) if np.isfinite(near).any() else np.nan
                    ax.text(
                        0.04,
                        0.04,
                        f"max |S| {peak:.1f}",
                        transform=ax.transAxes,
                        fontsize=7,
                        color="k",
                        bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 1},
                    )
                if row == 0:
                    ax.set_title(name)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.colorbar(image, ax=axes[:, 1:], shrink=0.8, label=r"$\sigma$")
    return fig


# --------------------------------------------------------------------------- kernel


def _kernel_model(model):
    """The :class:`astrid.kernel.KernelModel` of a model, a KernelResult or a kernel difference."""
    from .diffim.pipeline import DifferenceResult
    from .errors import AstridInputError
    from .kernel import KernelModel, KernelResult

    if isinstance(model, DifferenceResult):
        if model.method != "kernel":
            raise AstridInputError(
                f"model: a DifferenceResult of method {model.method!r} holds no fitted kernel; "
                'difference with method="kernel"'
            )
        model = model.subtraction
    if isinstance(model, KernelResult):
        model = model.model
    if not isinstance(model, KernelModel):
        raise AstridInputError(
            "model: expected a KernelModel, a KernelResult or a DifferenceResult of method "
            f"'kernel', got {type(model).__name__}"
        )
    return model


def plot_kernel_grid(model, n: int = 3, cmap: str = _DIFF_CMAP, title: str | None = None):
    """The fitted PSF-matching kernel at an ``n`` × ``n`` grid of positions over the field.

    The kernels come from :meth:`astrid.kernel.KernelModel.grid`: positions
    spaced evenly from corner to corner of the image, the panel of the
    bottom-left corner (x = 0, y = 0) bottom left, as on the image. All
    panels share one colour scale, symmetric about 0 so that negative lobes
    show. Each panel is titled with its position and labelled with the
    kernel's sum there, the local photometric scale (science flux over
    reference flux when the reference is convolved).

    Parameters
    ----------
    model : KernelModel, KernelResult or DifferenceResult
        The fitted kernel: an :class:`astrid.kernel.KernelModel`, the
        :class:`astrid.kernel.KernelResult` of :func:`astrid.kernel.subtract`,
        or the result of ``astrid.difference(..., method="kernel")``.
    n : int
        Panels per side (at least 2).
    cmap : str, optional
        Matplotlib colour map (a diverging one: the scale is centred on 0).
    title : str, optional
        Figure title (default: which image is convolved, the kernel's size
        and its spatial degree).

    Returns
    -------
    matplotlib.figure.Figure
        ``n`` × ``n`` panels of the kernel (offsets in pixels from its
        centre), each titled ``(x, y)`` (pixels on the image the model
        refers to) and labelled ``sum <value>``, with one colour bar.

    Raises
    ------
    AstridInputError
        ``model`` is none of the above, or ``n`` is not an integer of at
        least 2.
    """
    from .errors import AstridInputError

    model = _kernel_model(model)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise AstridInputError(f"n: panels per side must be an integer >= 2, got {n!r}")
    n = int(n)
    xs, ys, kernels = model.grid(n)
    r = model.half_width
    lim = float(np.max(np.abs(kernels))) or 1.0
    extent = (-r - 0.5, r + 0.5, -r - 0.5, r + 0.5)
    plt = pyplot()
    with style():
        fig, axes = plt.subplots(
            n,
            n,
            figsize=(1.45 * n + 0.8, 1.45 * n + 0.4),
            constrained_layout=True,
            sharex=True,
            sharey=True,
            squeeze=False,
        )
        image = None
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                ax = axes[n - 1 - iy, ix]  # the top row of panels is the top of the image
                image = ax.imshow(kernels[iy, ix], cmap=cmap, vmin=-lim, vmax=lim, extent=extent)
                ax.set_title(f"({x:.0f}, {y:.0f})", fontsize=7)
                ax.text(
                    0.04,
                    0.04,
                    f"sum {float(model.kernel_sum(x, y)):.4f}",
                    transform=ax.transAxes,
                    fontsize=7,
                    color="k",
                    bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 1},
                )
        for ax in axes[-1, :]:
            ax.set_xlabel(r"$\Delta x$ [pix]")
        for ax in axes[:, 0]:
            ax.set_ylabel(r"$\Delta y$ [pix]")
        fig.colorbar(image, ax=axes, shrink=0.8, label="kernel value")
        fig.suptitle(
            title
            or f"kernel ({model.convolved} convolved), {2 * r + 1} px, spatial degree {model.degree}"
        )
    return fig


# --------------------------------------------------------------------------- triplets


def select_examples(ds, n: int = 6, seed: int | None = None) -> np.ndarray:
    """Positions of ``n`` candidates to show, half real and half bogus when labelled.

    Parameters
    ----------
    ds : xarray.Dataset
        Triplets; a ``label`` coordinate (1 real, 0 bogus) is used when present.
    n : int
        How many.
    seed : int, optional
        None takes candidates in dataset order; a seed draws them at random.

    Returns
    -------
    numpy.ndarray of int
        Dataset positions: the real ones first, then the bogus ones (each
        class fills in for the other when it runs short).
    """
    total = int(ds.sizes["candidate"])
    rng = np.random.default_rng(seed) if seed is not None else None

    def take(indices: np.ndarray, k: int) -> np.ndarray:
        if rng is not None and len(indices) > k:
            return np.sort(rng.choice(indices, size=k, replace=False))
        return indices[:k]

    if "label" not in ds.coords:
        return take(np.arange(total), n)
    labels = np.asarray(ds["label"].values)
    real, bogus = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n_real = min(len(real), max(n - len(bogus), (n + 1) // 2))
    n_bogus = min(len(bogus), n - n_real)
    return np.concatenate([take(real, n_real), take(bogus, n_bogus)]).astype(int)


def plot_triplets(ds, n: int = 6, indices=None, scores=None, seed: int | None = None):
    """Example triplets: one column per candidate, rows science, reference, difference.

    Parameters
    ----------
    ds : xarray.Dataset
        Triplets in the AstrID schema (lazy datasets are fine: only the
        chosen stamps are read).
    n : int
        How many candidates when ``indices`` is not given (see
        :func:`select_examples`: half real, half bogus).
    indices : sequence of int, optional
        Dataset positions to show.
    scores : array-like, optional
        Real/bogus scores in dataset order, written under each column.
    seed : int, optional
        Random choice of examples (None: the first of each class).

    Returns
    -------
    matplotlib.figure.Figure
        A 3 × n grid; column titles give the candidate's kind (or label)
        and score. Science and reference use zscale, the difference a
        symmetric range; NaN (no data) is violet.
    """
    from .errors import AstridInputError
    from .schema import validate_triplets

    ds = validate_triplets(ds, "ds")
    chosen = np.asarray(select_examples(ds, n, seed) if indices is None else indices, dtype=int)
    if chosen.size == 0:
        raise AstridInputError("ds: no candidate to show")
    total = int(ds.sizes["candidate"])
    if chosen.min() < 0 or chosen.max() >= total:
        raise AstridInputError(f"indices: must be in [0, {total}), got {chosen.tolist()}")
    subset = ds.isel(candidate=chosen).load()
    stamps = np.asarray(subset["triplets"].values, dtype=float)
    score_values = (
        None
        if scores is None
        else np.asarray(getattr(scores, "values", scores), dtype=float)[chosen]
    )
    plt = pyplot()
    with style():
        fig, axes = plt.subplots(
            3,
            len(chosen),
            figsize=(1.2 * len(chosen) + 0.5, 3.9),
            constrained_layout=True,
            squeeze=False,
        )
        for col in range(len(chosen)):
            for row, name in enumerate(("science", "reference", "difference")):
                ax = axes[row, col]
                stamp = stamps[col, :, :, row]
                if row < 2:
                    vmin, vmax = zscale_limits(stamp)
                    ax.imshow(stamp, cmap=_cmap("gray"), vmin=vmin, vmax=vmax)
                else:
                    finite = np.abs(stamp[np.isfinite(stamp)])
                    lim = float(np.percentile(finite, 99.5)) if finite.size else 1.0
                    ax.imshow(stamp, cmap=_cmap(_DIFF_CMAP), vmin=-lim, vmax=lim or 1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(name)
            title = []
            if "kind" in subset.coords:
                title.append(str(subset["kind"].values[col]).replace("_", " "))
            elif "label" in subset.coords:
                title.append({1: "real", 0: "bogus"}.get(int(subset["label"].values[col]), "?"))
            if score_values is not None:
                title.append(f"s={score_values[col]:.2f}")
            axes[0, col].set_title(
                "\n".join(title) if title else str(subset["candidate_id"].values[col]), fontsize=7
            )
    return fig


# --------------------------------------------------------------------------- completeness


def plot_completeness(
    candidates,
    truth,
    snr_bins=None,
    kinds=("supernova",),
    snr_column: str = "snr_sci",
    threshold: float | None = None,
):
    """Completeness against injected S/N (see :func:`astrid.evaluation.completeness`).

    Parameters
    ----------
    candidates : astropy.table.Table or list of Table
        As for :func:`astrid.evaluation.completeness`.
    truth : astropy.table.Table or list of Table
        As for :func:`astrid.evaluation.completeness`.
    snr_bins : array_like, optional
        As for :func:`astrid.evaluation.completeness`.
    kinds : sequence of str, optional
        As for :func:`astrid.evaluation.completeness`.
    snr_column : str, optional
        As for :func:`astrid.evaluation.completeness`.
    threshold : float, optional
        Detection threshold (sigma), drawn as a vertical line.

    Returns
    -------
    matplotlib.figure.Figure
        Completeness per bin with 68 % Wilson intervals on a log S/N axis;
        the number injected is written above each bin.
    """
    table = completeness(candidates, truth, snr_bins, kinds, snr_column)
    good = table["n_injected"] > 0
    centre = np.sqrt(np.asarray(table["snr_lo"]) * np.asarray(table["snr_hi"]))
    plt = pyplot()
    with style():
        fig, ax = plt.subplots(figsize=(3.5, 2.6), constrained_layout=True)
        frac = np.asarray(table["completeness"])
        err = np.vstack([frac - np.asarray(table["lower"]), np.asarray(table["upper"]) - frac])
        ax.errorbar(
            centre[good],
            frac[good],
            yerr=err[:, good],
            xerr=np.vstack([centre - table["snr_lo"], table["snr_hi"] - centre])[:, good],
            fmt="o",
            ms=3,
            color="k",
            lw=0.8,
            capsize=0,
        )
        for c, f, n in zip(centre[good], frac[good], np.asarray(table["n_injected"])[good]):
            ax.annotate(str(int(n)), (c, min(f + 0.06, 1.08)), ha="center", fontsize=6, color="0.4")
        if threshold is not None:
            ax.axvline(
                threshold, color="tab:red", ls="--", lw=0.8, label=f"threshold {threshold:g}σ"
            )
            ax.legend(loc="lower right", frameon=False)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.15)
        ax.set_xlabel(f"injected S/N ({snr_column})")
        ax.set_ylabel("completeness")
        ax.set_title(", ".join(k.replace("_", " ") for k in kinds))
    return fig


# --------------------------------------------------------------------------- export


def plot_int8_vs_float(float_scores, int8_scores, labels=None, threshold: float = 0.5):
    """Scores of the int8 (Edge TPU) model against the float model on the same triplets.

    Parameters
    ----------
    float_scores, int8_scores : array-like, shape (n,)
        Real/bogus scores in [0, 1], in the same candidate order.
    labels : array-like of {0, 1}, optional
        Truth (1 real), to colour the points.
    threshold : float
        Decision threshold, drawn on both axes.

    Returns
    -------
    matplotlib.figure.Figure
        Left: int8 against float score with the identity line; right:
        histogram of int8 − float. The largest difference and the number
        of decisions that flip at ``threshold`` are written on the figure.

    Raises
    ------
    AstridInputError
        Arrays of different lengths, empty, or with NaN.
    """
    from .errors import AstridInputError

    a = np.asarray(getattr(float_scores, "values", float_scores), dtype=float).ravel()
    b = np.asarray(getattr(int8_scores, "values", int8_scores), dtype=float).ravel()
    if a.shape != b.shape or a.size == 0:
        raise AstridInputError(
            f"float_scores ({a.size}) and int8_scores ({b.size}) must be equally long and non-empty"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise AstridInputError("float_scores and int8_scores must not hold NaN")
    diff = b - a
    flipped = int(np.sum((a >= threshold) != (b >= threshold)))
    plt = pyplot()
    with style():
        fig, (ax, hx) = plt.subplots(1, 2, figsize=(6.4, 2.9), constrained_layout=True)
        if labels is None:
            ax.scatter(a, b, s=6, color="k", alpha=0.6, lw=0)
        else:
            lab = np.asarray(getattr(labels, "values", labels)).ravel()
            if lab.shape != a.shape:
                raise AstridInputError(f"labels: {lab.size} values for {a.size} scores")
            for value, colour, name in ((0, "tab:blue", "bogus"), (1, "tab:red", "real")):
                sel = lab == value
                ax.scatter(
                    a[sel],
                    b[sel],
                    s=6,
                    color=colour,
                    alpha=0.6,
                    lw=0,
                    label=f"{name} ({int(sel.sum())})",
                )
            ax.legend(loc="upper left", frameon=False, markerscale=2)
        ax.plot([0, 1], [0, 1], color="0.5", lw=0.7)
        ax.axvline(threshold, color="0.7", lw=0.6, ls=":")
        ax.axhline(threshold, color="0.7", lw=0.6, ls=":")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("float score")
        ax.set_ylabel("int8 score")
        span = max(float(np.abs(diff).max()), 1 / 256)
        hx.hist(diff, bins=np.linspace(-span, span, 41), color="k", histtype="step")
        hx.set_xlabel("int8 − float")
        hx.set_ylabel("triplets")
        hx.text(
            0.03,
            0.97,
            f"n = {a.size}\nmax |Δ| = {np.abs(diff).max():.4f}\nflipped at {threshold:g}: {flipped}",
            transform=hx.transAxes,
            va="top",
            fontsize=7,
        )
    return fig


# --------------------------------------------------------------------------- training


def plot_training_history(history: dict):
    """Loss (and AUC when recorded) per epoch of a training run.

    Parameters
    ----------
    history : dict of str to list of float
        ``TrainResult.history`` or the ``history`` of a saved model card:
        ``loss`` and optionally ``val_loss``, ``auc``, ``val_auc``.

    Returns
    -------
    matplotlib.figure.Figure
        Left: training and validation loss; right (when ``auc`` is
        present): training and validation AUC.

    Raises
    ------
    AstridInputError
        No ``loss`` values.
    """
    from .errors import AstridInputError

    loss = list(history.get("loss") or [])
    if not loss:
        raise AstridInputError("history: no 'loss' values to plot")
    panels = [("loss", "loss (cross-entropy)")] + ([("auc", "AUC")] if history.get("auc") else [])
    epochs = np.arange(1, len(loss) + 1)
    plt = pyplot()
    with style():
        fig, axes = plt.subplots(
            1, len(panels), figsize=(3.4 * len(panels), 2.5), constrained_layout=True, squeeze=False
        )
        for ax, (key, label) in zip(axes[0], panels):
            ax.plot(epochs, history[key], "o-", ms=3, label="training")
            if history.get(f"val_{key}"):
                ax.plot(
                    epochs[: len(history[f"val_{key}"])],
                    history[f"val_{key}"],
                    "s-",
                    ms=3,
                    label="validation",
                )
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.legend(frameon=False)
    return fig
