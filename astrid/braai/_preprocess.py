"""braai's input preprocessing: NaN → 0, per-stamp L2 normalisation, 1e-9 padding.

ZTF's production braai (``make_triplet`` in dmitryduev/braai and in Kowalski)
prepares each alert cutout in this order:

1. ``np.nan_to_num``: NaN → 0 (and ±inf → the largest finite float; AstrID
   sets ±inf to 0 as well, see :func:`preprocess`);
2. normalise the cutout *at its own size*: for models up to ``d6_m7`` with
   ``keras.utils.normalize(cutout)``, i.e. each image row divided by its L2
   norm (``axis=-1`` of the ``(ny, nx)`` array; all-zero rows stay zero), and
   for later models by the L2 norm of the whole cutout;
3. pad a cutout smaller than 63×63 *after* its last row and column with the
   constant 1e-9;
4. stack science, template, difference as channels of a (63, 63, 3) array.

:func:`preprocess` reproduces this for a whole batch in one pass. Because
the padding is added after the normalisation, it never enters a norm.
"""

from __future__ import annotations

import numba
import numpy as np
import xarray as xr

from ..errors import AstridInputError
from ..schema import CHANNELS, STAMP_SIZE, validate_triplets

__all__ = ["preprocess", "no_data", "mean_over_symmetries", "NORMS", "PAD_VALUE"]

#: Normalisations :func:`preprocess` knows (see its docstring).
NORMS = ("rowwise", "l2")
#: Value braai puts where a cutout smaller than 63×63 was padded.
PAD_VALUE = np.float32(1e-9)


@numba.njit(cache=True, nogil=True)
def _clean(value):
    # braai's np.nan_to_num turns ±inf into ±3.4e38, which then owns the L2 norm
    # of its row (or stamp) and zeroes every other pixel there; treated as a
    # missing pixel instead, it costs only itself.
    if not np.isfinite(value):
        return 0.0
    return value


@numba.njit(cache=True, nogil=True)
def _normalise_into(src, dst, stamp_ny, stamp_nx, whole_image, pad):
    """Write braai's normalised, padded stamps of ``src`` into ``dst``.

    src : (n, h, w, 3) float, h, w <= 63; dst : (n, 63, 63, 3) float32;
    stamp_ny, stamp_nx : (n, 3) ints, the extent [0:ny, 0:nx] of real data
    per stamp and channel; everything beyond is set to ``pad``.
    """
    n, h, w, nc = src.shape
    size_y, size_x = dst.shape[1], dst.shape[2]
    for i in range(n):
        for c in range(nc):
            ny = min(stamp_ny[i, c], h)
            nx = min(stamp_nx[i, c], w)
            if whole_image:
                total = 0.0
                for r in range(ny):
                    for k in range(nx):
                        v = _clean(src[i, r, k, c])
                        total += v * v
                scale = 1.0 / np.sqrt(total) if total > 0.0 else 1.0
            for r in range(size_y):
                if r >= ny:
                    for k in range(size_x):
                        dst[i, r, k, c] = pad
                    continue
                if not whole_image:
                    total = 0.0
                    for k in range(nx):
                        v = _clean(src[i, r, k, c])
                        total += v * v
                    scale = 1.0 / np.sqrt(total) if total > 0.0 else 1.0
                for k in range(nx):
                    dst[i, r, k, c] = _clean(src[i, r, k, c]) * scale
                for k in range(nx, size_x):
                    dst[i, r, k, c] = pad


def _stamp_extent(ds: xr.Dataset, n: int) -> tuple[np.ndarray, np.ndarray]:
    if "stamp_ny" in ds.coords and "stamp_nx" in ds.coords:
        extents = []
        for name in ("stamp_ny", "stamp_nx"):
            coord = ds[name]
            if coord.dims == ("candidate", "channel"):
                values = coord.transpose("candidate", "channel").values
            elif coord.dims == ("candidate",):
                values = np.repeat(coord.values[:, None], len(CHANNELS), axis=1)
            else:
                raise AstridInputError(
                    f"triplets: coordinate {name!r} has dims {coord.dims}, "
                    "expected ('candidate',) or ('candidate', 'channel')"
                )
            if np.any(values < 0) or np.any(values > STAMP_SIZE):
                raise AstridInputError(
                    f"triplets: coordinate {name!r} has values outside 0..{STAMP_SIZE}"
                )
            extents.append(np.ascontiguousarray(values, dtype=np.int64))
        return extents[0], extents[1]
    full = np.full((n, len(CHANNELS)), STAMP_SIZE, dtype=np.int64)
    return full, full.copy()


def preprocess(triplets, norm: str = "rowwise") -> np.ndarray:
    """Prepare triplets for braai exactly as ZTF's production pipeline does.

    Parameters
    ----------
    triplets : xarray.Dataset or array-like
        A triplet dataset (:mod:`astrid.schema`), or an array of shape
        (n, h, w, 3) or (h, w, 3) with ``h, w <= 63`` (science, reference,
        difference as channels, NaN allowed). For a dataset with the
        coordinates ``stamp_ny`` / ``stamp_nx`` (as :func:`astrid.alerts.read_ztf`
        writes), pixels beyond ``[0:stamp_ny, 0:stamp_nx]`` are treated as
        padding; for an array smaller than 63×63 the padding goes after the
        last row and column.
    norm : {"rowwise", "l2"}, optional
        ``"rowwise"``: each image row of each stamp divided by its L2 norm
        (``keras.utils.normalize`` on the (ny, nx) stamp; braai models up to
        ``d6_m7``). ``"l2"``: each stamp divided by its whole-image L2 norm
        (later braai models).

    Returns
    -------
    numpy.ndarray, shape (n, 63, 63, 3), float32
        NaN and ±inf replaced by 0, stamps normalised, padding set to 1e-9.

    Raises
    ------
    AstridInputError
        Unknown ``norm``; an array of the wrong shape or larger than 63×63;
        a dataset that is not in the triplet schema.

    Notes
    -----
    A stamp (or, for ``"rowwise"``, a row) that is all zero is left at zero,
    as ``keras.utils.normalize`` does; braai's whole-image normalisation
    would divide by zero there and produce NaN.

    ±inf pixels are set to 0 like NaN. braai's ``np.nan_to_num`` sets them
    to ±3.4e38, which then dominates the L2 norm of its row (or stamp): the
    pixel becomes ±1 and every other pixel of the row about 0, an input the
    network never saw. Candidates whose stamps hold no finite data at all
    are still preprocessed (to zeros); :func:`no_data` finds them, and
    :func:`astrid.score.score` gives them a NaN score.
    """
    if norm not in NORMS:
        raise AstridInputError(f"norm={norm!r} is not one of {NORMS}")
    if isinstance(triplets, xr.Dataset):
        validate_triplets(triplets)
        src = triplets["triplets"].transpose("candidate", "y", "x", "channel").values
        stamp_ny, stamp_nx = _stamp_extent(triplets, src.shape[0])
    else:
        src = np.asarray(triplets)
        if src.ndim == 3:
            src = src[np.newaxis]
        if src.ndim != 4 or src.shape[-1] != len(CHANNELS):
            raise AstridInputError(
                f"triplets: expected an array of shape (n, h, w, {len(CHANNELS)}) or "
                f"(h, w, {len(CHANNELS)}), got {np.shape(triplets)}"
            )
        if src.shape[1] > STAMP_SIZE or src.shape[2] > STAMP_SIZE or 0 in src.shape[1:3]:
            raise AstridInputError(
                f"triplets: stamps of {src.shape[1]}x{src.shape[2]} pixels; "
                f"braai takes stamps of 1..{STAMP_SIZE} pixels a side"
            )
        if not (np.issubdtype(src.dtype, np.floating) or np.issubdtype(src.dtype, np.integer)):
            raise AstridInputError(f"triplets: expected a numeric array, got dtype {src.dtype}")
        n = src.shape[0]
        stamp_ny = np.full((n, len(CHANNELS)), src.shape[1], dtype=np.int64)
        stamp_nx = np.full((n, len(CHANNELS)), src.shape[2], dtype=np.int64)
    if not np.issubdtype(src.dtype, np.floating) or src.dtype.itemsize < 4:
        src = src.astype(np.float32)
    elif not src.dtype.isnative:  # FITS data are big-endian; numba needs native order
        src = src.astype(src.dtype.newbyteorder("="))
    out = np.empty((src.shape[0], STAMP_SIZE, STAMP_SIZE, len(CHANNELS)), dtype=np.float32)
    if src.shape[0]:
        _normalise_into(src, out, stamp_ny, stamp_nx, norm == "l2", PAD_VALUE)
    return out


def _raw_stamps(triplets):
    """(stamps (n, h, w, 3), expected-data mask or None, stamp_ny, stamp_nx) of raw triplets."""
    if isinstance(triplets, xr.Dataset):
        validate_triplets(triplets)
        src = triplets["triplets"].transpose("candidate", "y", "x", "channel").values
        valid = triplets["valid"]
        if valid.dims == ("candidate", "y", "x"):
            valid = valid.expand_dims(channel=len(CHANNELS), axis=-1).values
        else:
            valid = valid.transpose("candidate", "y", "x", "channel").values
        stamp_ny, stamp_nx = _stamp_extent(triplets, src.shape[0])
        return src, valid, stamp_ny, stamp_nx
    src = np.asarray(getattr(triplets, "values", triplets))
    if src.ndim == 3:
        src = src[np.newaxis]
    if src.ndim != 4 or src.shape[-1] != len(CHANNELS):
        raise AstridInputError(
            f"triplets: expected an array of shape (n, h, w, {len(CHANNELS)}) or "
            f"(h, w, {len(CHANNELS)}), got {np.shape(triplets)}"
        )
    n = src.shape[0]
    stamp_ny = np.full((n, len(CHANNELS)), src.shape[1], dtype=np.int64)
    stamp_nx = np.full((n, len(CHANNELS)), src.shape[2], dtype=np.int64)
    return src, None, stamp_ny, stamp_nx


def no_data(triplets) -> tuple[np.ndarray, np.ndarray]:
    """Which candidates carry no usable data, and which hold ±inf pixels.

    A candidate has *no data* when its stamps, inside their extent
    (``stamp_ny`` × ``stamp_nx``), hold no finite pixel at all, or when one
    of its channels is entirely non-finite where that channel should hold
    data. A channel should hold data where the dataset's ``valid`` is True
    (for a bare array: everywhere). A channel that ``valid`` marks as empty
    (e.g. a survey alert that comes without a reference) is therefore
    accepted, and preprocessed as braai does (zeros), but a channel that
    ``valid`` promises and that reads back as NaN/inf (a lost chunk, a
    broken cutout) is not: braai's NaN → 0 would turn it into a blank
    channel the network never saw in training, and every such candidate
    would get the same score.

    Parameters
    ----------
    triplets : xarray.Dataset or array-like
        Raw triplets, as :func:`preprocess` accepts them.

    Returns
    -------
    no_data : numpy.ndarray of bool, shape (n,)
        Candidates with no usable data, as defined above.
    has_inf : numpy.ndarray of bool, shape (n,)
        Candidates with ±inf pixels inside their extent (preprocessed as
        missing pixels, i.e. 0).
    """
    src, valid, stamp_ny, stamp_nx = _raw_stamps(triplets)
    if not np.issubdtype(src.dtype, np.floating):
        src = src.astype(np.float32)
    elif not src.dtype.isnative:
        src = src.astype(src.dtype.newbyteorder("="))
    empty = np.zeros(src.shape[0], dtype=bool)
    has_inf = np.zeros(src.shape[0], dtype=bool)
    if src.shape[0]:
        use_valid = valid is not None
        mask = np.asarray(valid, dtype=bool) if use_valid else np.ones((1, 1, 1, 1), dtype=bool)
        _data_flags(src, mask, use_valid, stamp_ny, stamp_nx, empty, has_inf)
    return empty, has_inf


@numba.njit(cache=True, nogil=True)
def _data_flags(src, valid, use_valid, stamp_ny, stamp_nx, empty, has_inf):
    # One pass over the stamps: boolean temporaries of the whole batch cost
    # more than preprocessing it.
    n, h, w, nc = src.shape
    for i in range(n):
        any_finite = False
        lost = False
        inf = False
        for c in range(nc):
            ny = min(stamp_ny[i, c], h)
            nx = min(stamp_nx[i, c], w)
            promised = False
            delivered = False
            for r in range(ny):
                for k in range(nx):
                    v = src[i, r, k, c]
                    finite = np.isfinite(v)
                    if finite:
                        any_finite = True
                    elif np.isinf(v):
                        inf = True
                    if not use_valid or valid[i, r, k, c]:
                        promised = True
                        if finite:
                            delivered = True
            if promised and not delivered:
                lost = True
        empty[i] = lost or not any_finite
        has_inf[i] = inf


def mean_over_symmetries(predict, x: np.ndarray) -> np.ndarray:
    """Mean of ``predict`` over the eight rotations and mirrors of preprocessed stamps.

    The dihedral group that :func:`astrid.braai.train` augments with; used by
    :func:`astrid.braai.predict` and :func:`astrid.score.score` with
    ``symmetries=True``.

    Parameters
    ----------
    predict : callable
        Maps stamps of shape (n, ny, nx, channels) to n scores.
    x : numpy.ndarray, shape (n, ny, nx, channels)
        Preprocessed stamps.

    Returns
    -------
    numpy.ndarray, shape (n,), float32
        The mean of the eight passes.
    """
    total = np.zeros(x.shape[0], dtype=np.float64)
    for turns in range(4):
        turned = np.rot90(x, turns, axes=(1, 2))
        for view in (turned, turned[:, :, ::-1]):
            total += np.asarray(predict(np.ascontiguousarray(view)), dtype=np.float64).reshape(-1)
    return (total / 8.0).astype(np.float32)
