"""Numbers for judging a subtraction and a search, separate from drawing them.

:mod:`astrid.figures` draws; this module computes what the figures (and the
validation scripts) show:

- :func:`read_difference` reads a difference FITS file written by
  ``DifferenceResult.to_fits`` into :class:`DifferencePlanes`;
- :func:`scorr_statistics` says whether ``S_corr`` is unit Gaussian noise
  where nothing changed;
- :func:`bright_star_positions` picks isolated bright stars to measure
  subtraction residuals around;
- :func:`completeness` gives the fraction of injected transients found per
  bin of injected S/N, with Wilson intervals.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._utils import robust_std
from .errors import AstridFileError, AstridInputError

__all__ = [
    "DifferencePlanes",
    "read_difference",
    "scorr_statistics",
    "bright_star_positions",
    "completeness",
]


def _as_table(table, name: str):
    from astropy.table import Table

    if isinstance(table, Table):
        return table
    try:
        return Table(table)
    except Exception as exc:  # numpy structured arrays, dicts of columns, pandas
        raise AstridInputError(
            f"{name}: expected an astropy Table (or something Table() accepts), got "
            f"{type(table).__name__} ({exc})"
        ) from None


def _require_columns(table, columns, name: str) -> None:
    missing = [c for c in columns if c not in table.colnames]
    if missing:
        raise AstridInputError(
            f"{name}: missing column(s) {', '.join(missing)}; has {', '.join(table.colnames)}"
        )


# --------------------------------------------------------------------------- differences


@dataclass
class DifferencePlanes:
    """The images of a difference FITS file written by ``DifferenceResult.to_fits``.

    Attributes have the names of :class:`astrid.DifferenceResult`,
    so every plot function of :mod:`astrid.figures` takes either.

    Attributes
    ----------
    method : str
        ``"zogy"`` or ``"classic"``.
    science : numpy.ndarray, shape (ny, nx)
        Background-subtracted science image, on the reference grid.
    reference : numpy.ndarray, shape (ny, nx)
        Background-subtracted reference image.
    D : numpy.ndarray, shape (ny, nx)
        The difference image.
    S_corr : numpy.ndarray, shape (ny, nx)
        The difference's significance (sigma).
    mask : numpy.ndarray of bool, shape (ny, nx)
        Untrusted pixels.
    footprint : numpy.ndarray of bool, shape (ny, nx)
        Pixels covered by the science image.
    wcs : astropy.wcs.WCS or None
        WCS of the reference grid.
    metrics : dict
        Numeric keys of the primary header (``FWHMSCI``, ...).
    path : pathlib.Path or None
        The file read.
    """

    method: str
    science: np.ndarray
    reference: np.ndarray
    D: np.ndarray
    S_corr: np.ndarray
    mask: np.ndarray
    footprint: np.ndarray
    wcs: object = None
    metrics: dict = field(default_factory=dict)
    path: Path | None = None


def read_difference(path: str | os.PathLike) -> DifferencePlanes:
    """Read the planes of a difference FITS file (``DifferenceResult.to_fits``) for plotting.

    Parameters
    ----------
    path : path-like
        A multi-extension file with ``SCIENCE``, ``REFERENCE``, ``D``,
        ``SCORR``, ``MASK`` and ``FOOTPRNT`` image extensions.

    Returns
    -------
    DifferencePlanes
        The planes, WCS and header metrics of the file.

    Raises
    ------
    AstridFileError
        The file is missing, not FITS, or lacks one of the extensions.
    """
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    path = Path(path)
    if path.is_dir():
        raise AstridFileError(f"{path}: is a folder; give the difference FITS file")
    if not path.is_file():
        raise AstridFileError(f"{path}: difference file does not exist")
    try:
        with fits.open(path, memmap=False) as hdul:
            names = {hdu.name for hdu in hdul}
            needed = ("SCIENCE", "REFERENCE", "D", "SCORR", "MASK", "FOOTPRNT")
            missing = [n for n in needed if n not in names]
            if missing:
                raise AstridFileError(
                    f"{path}: not an AstrID difference file (no extension(s) {', '.join(missing)})"
                )
            header = hdul[0].header
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(hdul["D"].header) if "CTYPE1" in hdul["D"].header else None
            planes = {n: np.asarray(hdul[n].data) for n in needed}
    except OSError as exc:
        raise AstridFileError(f"{path}: cannot be read as FITS ({exc})") from None
    metrics = {
        k: header[k]
        for k in header
        if isinstance(header[k], (int, float)) and not isinstance(header[k], bool)
    }
    return DifferencePlanes(
        method=str(header.get("METHOD", "unknown")),
        science=planes["SCIENCE"].astype(float),
        reference=planes["REFERENCE"].astype(float),
        D=planes["D"].astype(float),
        S_corr=planes["SCORR"].astype(float),
        mask=planes["MASK"].astype(bool),
        footprint=planes["FOOTPRNT"].astype(bool),
        wcs=wcs,
        metrics=metrics,
        path=path,
    )


def scorr_statistics(S_corr, mask=None) -> dict:
    """Numbers that say whether ``S_corr`` is unit Gaussian noise where nothing changed.

    Parameters
    ----------
    S_corr : array-like, shape (ny, nx)
        Significance image (sigma).
    mask : array-like of bool, optional
        Pixels to leave out (True = bad); non-finite pixels are always left out.

    Returns
    -------
    dict
        ``n`` (pixels used), ``mean``, ``std``, ``robust_std`` (the median
        absolute deviation as a σ, :func:`astropy.stats.mad_std`),
        ``fraction_above_5`` (share of ``|S_corr| > 5``) and
        ``gaussian_fraction_above_5`` (its value for unit Gaussian noise, 5.7e-7).

    Raises
    ------
    AstridInputError
        No finite, unmasked pixel.
    """
    values = np.asarray(S_corr, dtype=float)
    good = np.isfinite(values)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise AstridInputError(f"mask: shape {mask.shape} differs from S_corr's {values.shape}")
        good &= ~mask
    if not good.any():
        raise AstridInputError("S_corr: no finite, unmasked pixel to take statistics of")
    v = values[good]
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "robust_std": robust_std(v),
        "fraction_above_5": float(np.mean(np.abs(v) > 5.0)),
        "gaussian_fraction_above_5": float(math.erfc(5.0 / math.sqrt(2.0))),
    }


def bright_star_positions(
    stars,
    shape,
    n: int = 4,
    margin: int = 25,
    mask=None,
    exclude_saturated: bool = True,
    isolation: float = 15.0,
    x: str = "x_ref",
    y: str = "y_ref",
):
    """The ``n`` brightest stars to look at subtraction residuals around.

    Parameters
    ----------
    stars : astropy.table.Table
        Star catalogue with ``mag`` and pixel positions (the simulator's
        ``stars.ecsv``: ``x_ref``, ``y_ref``, ``saturated_ref``,
        ``saturated_sci``).
    shape : tuple of int
        ``(ny, nx)`` of the image the positions refer to.
    n : int
        How many stars.
    margin : int
        Minimum distance from the border, pixels (half a cut-out).
    mask : array-like of bool, optional
        Stars on a True pixel (e.g. outside the science footprint) are skipped.
    exclude_saturated : bool
        Skip stars saturated in either epoch (their cores are masked anyway).
        Stars flagged ``variable`` are always skipped: their residual is real.
    isolation : float
        Skip stars with a brighter star closer than this, pixels.
    x, y : str
        Position columns.

    Returns
    -------
    astropy.table.Table
        Up to ``n`` rows of ``stars``, brightest first.
    """
    stars = _as_table(stars, "stars")
    _require_columns(stars, ("mag", x, y), "stars")
    ny, nx = shape
    xs, ys = np.asarray(stars[x], dtype=float), np.asarray(stars[y], dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    keep &= (xs >= margin) & (xs <= nx - 1 - margin) & (ys >= margin) & (ys <= ny - 1 - margin)
    if exclude_saturated:
        for column in ("saturated_ref", "saturated_sci", "saturated"):
            if column in stars.colnames:
                keep &= ~np.asarray(stars[column], dtype=bool)
    if "variable" in stars.colnames:
        keep &= ~np.asarray(stars["variable"], dtype=bool)
    if isolation > 0:
        mags = np.asarray(stars["mag"], dtype=float)
        for i in np.flatnonzero(keep):
            near = np.hypot(xs - xs[i], ys - ys[i]) < isolation
            near[i] = False
            if np.any(mags[near] < mags[i]):
                keep[i] = False
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        inside = keep.copy()
        ix = np.clip(np.round(xs[inside]).astype(int), 0, nx - 1)
        iy = np.clip(np.round(ys[inside]).astype(int), 0, ny - 1)
        keep[np.flatnonzero(inside)[mask[iy, ix]]] = False
    chosen = stars[keep]
    chosen = chosen[np.argsort(np.asarray(chosen["mag"], dtype=float), kind="stable")]
    return chosen[:n]


# --------------------------------------------------------------------------- completeness


def _pairs_of_tables(candidates, truth):
    from astropy.table import Table

    if isinstance(candidates, Table) or not isinstance(candidates, (list, tuple)):
        candidates, truth = [candidates], [truth]
    if not isinstance(truth, (list, tuple)) or len(truth) != len(candidates):
        raise AstridInputError(
            "truth: give one truth table per candidate table (lists of equal length)"
        )
    return [(_as_table(c, "candidates"), _as_table(t, "truth")) for c, t in zip(candidates, truth)]


def completeness(
    candidates,
    truth,
    snr_bins=None,
    kinds=("supernova",),
    snr_column: str = "snr_sci",
    include_masked: bool = False,
):
    """Fraction of injected transients found, per bin of injected S/N.

    A truth transient counts as found when a candidate labelled real
    (``label == 1``) carries its ``truth_id`` (what
    :func:`astrid.triplets.label_candidates` writes).

    Parameters
    ----------
    candidates : astropy.table.Table or list of Table
        Labelled candidates of one image, or one table per image.
    truth : astropy.table.Table or list of Table
        The matching truth table(s) (``id``, ``kind``, ``snr_column``;
        ``masked`` is honoured when present).
    snr_bins : array-like, optional
        Bin edges of S/N (default: 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 300).
    kinds : sequence of str
        Truth kinds that count as injected transients.
    snr_column : str
        Truth column of the injected S/N.
    include_masked : bool
        Keep transients on masked pixels (``masked`` True); by default they
        are left out, as no subtraction can find them.

    Returns
    -------
    astropy.table.Table
        One row per bin: ``snr_lo``, ``snr_hi``, ``n_injected``,
        ``n_found``, ``completeness`` (NaN for an empty bin) and the 68 %
        Wilson interval ``lower``, ``upper``.

    Raises
    ------
    AstridInputError
        Missing columns, or lists of different lengths.
    """
    from astropy.table import Table

    edges = np.asarray(
        [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 300] if snr_bins is None else snr_bins, dtype=float
    )
    snr_all, found_all = [], []
    for cand, tru in _pairs_of_tables(candidates, truth):
        _require_columns(tru, ("id", "kind", snr_column), "truth")
        _require_columns(cand, ("label", "truth_id"), "candidates")
        rows = np.isin(np.asarray(tru["kind"], dtype=str), list(kinds))
        if not include_masked and "masked" in tru.colnames:
            rows &= ~np.asarray(tru["masked"], dtype=bool)
        found_ids = set(np.asarray(cand["truth_id"])[np.asarray(cand["label"]) == 1].tolist())
        snr_all.append(np.asarray(tru[snr_column], dtype=float)[rows])
        found_all.append(np.isin(np.asarray(tru["id"])[rows], list(found_ids)))
    snr = np.concatenate(snr_all) if snr_all else np.array([])
    found = np.concatenate(found_all) if found_all else np.array([], dtype=bool)
    which = np.digitize(snr, edges) - 1
    n_bins = len(edges) - 1
    n_injected = np.array([np.sum(which == b) for b in range(n_bins)])
    n_found = np.array([np.sum(found[which == b]) for b in range(n_bins)])
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n_injected > 0, n_found / np.maximum(n_injected, 1), np.nan)
    lower, upper = _wilson(n_found, n_injected)
    return Table(
        {
            "snr_lo": edges[:-1],
            "snr_hi": edges[1:],
            "n_injected": n_injected,
            "n_found": n_found,
            "completeness": frac,
            "lower": lower,
            "upper": upper,
        }
    )


def _wilson(k, n, z: float = 1.0):
    """Wilson score interval of a binomial fraction (z = 1: 68 %); NaN where n = 0."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    lower = np.where(n > 0, centre - half, np.nan)
    upper = np.where(n > 0, centre + half, np.nan)
    return lower, upper
