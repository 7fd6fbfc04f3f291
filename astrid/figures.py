"""Publication figures in one consistent style, saved as PDF and PNG.

Every function takes data, draws on a new figure (or given axes), and
returns the :class:`matplotlib.figure.Figure`; :func:`save` writes it as
``<name>.pdf`` and ``<name>.png`` under a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["style", "save", "zscale_limits", "plot_pair"]

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


def style():
    """A context manager applying AstrID's figure style (``with style(): ...``)."""
    import matplotlib.pyplot as plt

    return plt.rc_context(_STYLE)


def _pyplot():
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


def save(fig, name: str, folder: str | os.PathLike = "figures", formats=("pdf", "png")) -> list[Path]:
    """Save ``fig`` as ``folder/name.<fmt>`` for each format; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    return paths


def zscale_limits(data, mask=None) -> tuple[float, float]:
    """Display limits of the IRAF zscale algorithm (astropy's ZScaleInterval) over finite, unmasked pixels."""
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

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
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
            axes[1].scatter(sn["x_sci"], sn["y_sci"], s=80, facecolors="none", edgecolors="tab:red", lw=0.8)
    return fig
