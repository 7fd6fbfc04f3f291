"""FITS input and output: :class:`Image`, :func:`read_image`, :func:`write_image`.

Reading is forgiving where astronomers expect it (the first HDU with 2-D data,
a cube reduced to its first plane, the usual header keywords for filter and
time) and strict where silence would lose data (missing, truncated or empty
files raise :class:`~astrid.errors.AstridInputError` naming the file).
Writing is atomic: a temporary file in the same folder is renamed over the
target, so an interrupted run never leaves half a FITS file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from ._utils import first_image_hdu
from .errors import AstridFileError, AstridInputError, AstridWarning, AstridWCSError

__all__ = ["Image", "ImageMeta", "read_image", "write_image", "atomic_write", "write_ecsv"]

# Header keywords, most specific first, that carry each piece of metadata.
_TELESCOPE_KEYS = ("TELESCOP", "MISSION", "OBSERVAT")
_INSTRUMENT_KEYS = ("INSTRUME", "DETECTOR")
_FILTER_KEYS = ("FILTER", "FILTER1", "FILTNAME", "BAND", "PUPIL")
_EXPTIME_KEYS = ("EXPTIME", "EXPOSURE", "XPOSURE", "EFFEXPTM", "TELAPSE")
_GAIN_KEYS = ("GAIN", "EGAIN", "CCDGAIN")
_ZP_KEYS = ("MAGZP", "ZEROPT", "MAGZERO", "ZP", "PHOTZP", "MAGZPT")
_SATURATE_KEYS = ("SATURATE", "SATLEVEL", "SATURATN")
# PSF FWHM keys in pixels (DECam community pipeline, SExtractor-based pipelines), then
# in arcseconds (ZTF, the simulator), converted with the pixel scale.
_SEEING_PIX_KEYS = ("FWHM", "PSF_FWHM", "FWHM_PSF", "FWHMPSF", "PSFFWHM", "FWHM_PIX")
_SEEING_ARCSEC_KEYS = ("SEEING", "FWHM_AS", "FWHMARC", "SEEING_A", "PSF_FWHM_ARCSEC")
_PIXSCALE_KEYS = ("PIXSCALE", "PIXSCAL1", "SECPIX", "SECPIX1", "PIXSIZE")
_MJD_KEYS = ("MJD-OBS", "MJD_OBS", "MJD-AVG", "MJD-BEG", "EXPSTART", "OBSMJD")
_DATE_KEYS = ("DATE-OBS", "DATE-BEG", "DATE_OBS")
_JD_KEYS = ("JD", "OBSJD", "JD-OBS")

# Extension names that write_image uses, and read_image recognises.
MASK_EXTNAME = "MASK"
VARIANCE_EXTNAME = "VARIANCE"


@dataclass
class ImageMeta:
    """Normalised metadata of an image.

    Attributes
    ----------
    telescope : str or None
        Telescope or mission (``TELESCOP``, ``MISSION``), e.g. ``"ZTF"``, ``"SWIFT"``.
    instrument : str or None
        Instrument or detector (``INSTRUME``).
    filter : str or None
        Filter or band name, stripped of white space.
    obs_time : astropy.time.Time or None
        Start or mid time of the observation.
    exptime : float or None
        Exposure time in seconds.
    gain : float or None
        Gain in electrons per data unit.
    zeropoint : float or None
        Photometric zero point (AB mag of one data unit per exposure).
    saturation : float or None
        Saturation level in data units.
    path : str or None
        The file the image was read from.
    hdu : int or str or None
        The HDU the data came from.
    seeing_fwhm_pix : float or None
        PSF FWHM in pixels from the header: ``FWHM``, ``PSF_FWHM``,
        ``FWHM_PSF``, ``FWHMPSF``, ``PSFFWHM`` or ``FWHM_PIX`` (pixels), else
        ``SEEING``, ``FWHM_AS``, ``FWHMARC``, ``SEEING_A`` or
        ``PSF_FWHM_ARCSEC`` (arcseconds) divided by the pixel scale (of the
        WCS, else ``PIXSCALE``, ``PIXSCAL1``, ``SECPIX``, ...). A unit in
        the card's comment ("pix", "arcsec") wins over the key's usual one:
        ZTF writes ``SEEING`` in pixels. A prior for the star finder and a
        check for :attr:`DifferenceResult.quality`.
    """

    telescope: str | None = None
    instrument: str | None = None
    filter: str | None = None
    obs_time: Time | None = None
    exptime: float | None = None
    gain: float | None = None
    zeropoint: float | None = None
    saturation: float | None = None
    path: str | None = None
    hdu: int | str | None = None
    seeing_fwhm_pix: float | None = None


@dataclass
class Image:
    """A 2-D image with what differencing needs to know about it.

    Attributes
    ----------
    data : numpy.ndarray, shape (ny, nx)
        Pixel values (floating point, native units of the file).
    wcs : astropy.wcs.WCS or None
        Celestial WCS of ``data``, or None when the header has none.
    mask : numpy.ndarray of bool, shape (ny, nx)
        True where a pixel must not be used (non-finite, saturated, flagged).
    variance : numpy.ndarray, shape (ny, nx), or None
        Per-pixel variance in data units squared, when known.
    header : astropy.io.fits.Header
        The original header (for provenance and anything not normalised).
    meta : ImageMeta
        Normalised metadata.
    """

    data: np.ndarray
    wcs: WCS | None = None
    mask: np.ndarray | None = None
    variance: np.ndarray | None = None
    header: fits.Header = field(default_factory=fits.Header)
    meta: ImageMeta = field(default_factory=ImageMeta)

    def __post_init__(self) -> None:
        data, masked = _unmask(self.data, "Image data")
        if data.ndim != 2:
            raise AstridInputError(f"Image data must be 2-D, got shape {data.shape}")
        if not (
            np.issubdtype(data.dtype, np.floating)
            or np.issubdtype(data.dtype, np.integer)
            or data.dtype == np.bool_
        ):
            raise AstridInputError(
                f"Image data must be a real-valued array, got dtype {data.dtype}"
            )
        if not np.issubdtype(data.dtype, np.floating):
            data = data.astype(np.float32 if data.dtype.itemsize <= 2 else np.float64)
        self.data = data
        if self.mask is None:
            self.mask = ~np.isfinite(data)
        else:
            mask, mask_masked = _unmask(self.mask, "Image mask")
            self.mask = mask.astype(bool)
            if self.mask.shape != data.shape:
                raise AstridInputError(
                    f"mask shape {self.mask.shape} does not match data shape {data.shape}"
                )
            if mask_masked is not None:
                # A masked entry of the mask itself says nothing good about the pixel.
                self.mask |= mask_masked
        if masked is not None:
            self.mask = self.mask | masked
        if self.variance is not None:
            variance, var_masked = _unmask(self.variance, "Image variance")
            self.variance = variance
            if self.variance.shape != data.shape:
                raise AstridInputError(
                    f"variance shape {self.variance.shape} does not match data shape {data.shape}"
                )
            if var_masked is not None:
                self.mask = self.mask | var_masked

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of the data."""
        return self.data.shape

    def require_wcs(self) -> WCS:
        """Return the WCS or raise :class:`AstridWCSError` naming the image."""
        try:
            usable = self.wcs is not None and self.wcs.has_celestial
        except Exception as exc:  # wcslib refuses a singular matrix when first used
            raise AstridWCSError(
                f"{self._name()}: the celestial WCS is unusable ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}), but one is required"
            ) from exc
        if not usable:
            problem = wcs_problem(self.header) if self.wcs is None else None
            if problem:
                raise AstridWCSError(
                    f"{self._name()}: the header's celestial WCS is unusable ({problem}), but one is required"
                )
            raise AstridWCSError(
                f"{self._name()}: no celestial WCS in the header, but one is required"
            )
        return self.wcs

    def copy(self, **changes: Any) -> "Image":
        """A copy with some attributes replaced (arrays are not deep-copied)."""
        return replace(self, **changes)

    def _name(self) -> str:
        return self.meta.path or "image"


def _unmask(array, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``array`` as a plain ndarray and, for a :class:`numpy.ma.MaskedArray`, its mask.

    Masked values are replaced by NaN (floating data) so that code which only
    looks at the values never uses what lies under the mask.
    """
    if array is None:
        raise AstridInputError(f"{name}: got None, expected a 2-D array")
    if isinstance(array, np.ma.MaskedArray):
        masked = np.ma.getmaskarray(array)
        values = np.ma.getdata(array)
        if np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer):
            values = values.astype(np.result_type(values.dtype, np.float32), copy=True)
            values[masked] = np.nan
        return values, (masked if masked.any() else None)
    try:
        return np.asarray(array), None
    except Exception as exc:  # ragged lists and the like
        raise AstridInputError(f"{name}: cannot be read as an array ({exc})") from exc


def _first(header: fits.Header, keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = header.get(key)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _obs_time(header: fits.Header) -> Time | None:
    for key in _MJD_KEYS:
        value = _as_float(header.get(key))
        if value is not None and value > 0:
            return Time(value, format="mjd", scale="utc")
    for key in _JD_KEYS:
        value = _as_float(header.get(key))
        if value is not None and value > 2400000:
            return Time(value, format="jd", scale="utc")
    for key in _DATE_KEYS:
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            text = value.strip()
            # Old headers keep the time of day in TIME-OBS / UT.
            if "T" not in text and len(text) <= 10:
                tod = header.get("TIME-OBS") or header.get("UT")
                if isinstance(tod, str) and tod.strip():
                    text = f"{text}T{tod.strip()}"
            try:
                return Time(text, scale="utc")
            except ValueError:
                continue
    return None


def _pixel_scale_arcsec(header: fits.Header) -> float | None:
    """Pixel scale (arcsec) from the header's celestial WCS, else its pixel-scale keyword."""
    if wcs_problem(header) is None:
        wcs = _wcs_from_header(header)
        if wcs is not None:
            from astropy.wcs.utils import proj_plane_pixel_area

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    area = float(proj_plane_pixel_area(wcs.celestial))
                except Exception:  # a WCS astropy can read but not evaluate
                    area = float("nan")
            if math.isfinite(area) and area > 0:
                return math.sqrt(area) * 3600.0
    scale = _as_float(_first(header, _PIXSCALE_KEYS))
    return scale if scale is not None and scale > 0 else None


def _seeing_pix(header: fits.Header) -> float | None:
    """The header's PSF FWHM in pixels (see :attr:`ImageMeta.seeing_fwhm_pix`), or None.

    A unit in the card's comment wins over the key's usual one: ZTF writes
    ``SEEING`` in pixels ("seeing FWHM [pixels]"), most others in arcseconds.
    """
    for keys, arcsec in ((_SEEING_PIX_KEYS, False), (_SEEING_ARCSEC_KEYS, True)):
        for key in keys:
            value = _as_float(header.get(key))
            if value is None or not value > 0:
                continue
            comment = str(header.comments[key]).lower()
            if "pix" in comment:
                arcsec = False
            elif "arcsec" in comment or '"' in comment:
                arcsec = True
            if not arcsec:
                return value
            scale = _pixel_scale_arcsec(header)
            return value / scale if scale else None
    return None


def header_meta(
    header: fits.Header, path: str | None = None, hdu: int | str | None = None
) -> ImageMeta:
    """Normalised :class:`ImageMeta` from a FITS header (and a primary header's fallback)."""
    telescope = _first(header, _TELESCOPE_KEYS)
    instrument = _first(header, _INSTRUMENT_KEYS)
    filt = _first(header, _FILTER_KEYS)
    return ImageMeta(
        telescope=str(telescope).strip() if telescope is not None else None,
        instrument=str(instrument).strip() if instrument is not None else None,
        filter=str(filt).strip() if filt is not None else None,
        obs_time=_obs_time(header),
        exptime=_as_float(_first(header, _EXPTIME_KEYS)),
        gain=_as_float(_first(header, _GAIN_KEYS)),
        zeropoint=_as_float(_first(header, _ZP_KEYS)),
        saturation=_as_float(_first(header, _SATURATE_KEYS)),
        seeing_fwhm_pix=_seeing_pix(header),
        path=path,
        hdu=hdu,
    )


def wcs_problem(header: fits.Header | None) -> str | None:
    """Why a header that declares celestial axes (``CTYPE`` RA/DEC, GLON/GLAT, ...) gives no usable WCS.

    None when the header declares none, or its WCS is fine.
    """
    if header is None:
        return None
    ctypes = [str(header.get(f"CTYPE{i}", "")) for i in (1, 2)]
    if not any(c[:4].rstrip("-") in ("RA", "DEC", "GLON", "GLAT", "ELON", "ELAT") for c in ctypes):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wcs = WCS(header, naxis=2)
            if not wcs.has_celestial:
                return "its CTYPE keywords do not make a celestial pair"
            matrix = np.asarray(wcs.celestial.pixel_scale_matrix, dtype=float)
        except Exception as exc:  # astropy raises many types for broken WCS keys
            return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if not np.all(np.isfinite(matrix)) or np.linalg.det(matrix) == 0:
        return "its CD/PC matrix is singular or not finite"
    return None


def _wcs_from_header(header: fits.Header) -> WCS | None:
    with warnings.catch_warnings():
        # Deprecated DATE-OBS/RADECSYS forms and SIP keywords fixed silently:
        # astropy repairs them and the user cannot act on the warning.
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # astropy raises many types for broken WCS keys
            return None
    return wcs if wcs.has_celestial else None


def _as_path(path, name: str = "path") -> Path:
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise AstridInputError(
            f"{name}: must be a path to a FITS file (str or os.PathLike), got {path!r}"
        )
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise AstridInputError(f"{name}: must be a path to a FITS file, got an empty string")
    return Path(text)


def _missing(path: Path) -> str:
    """Why ``path`` does not exist: the nearest existing parent may be a file, or no folder exists."""
    parent = path.parent
    while parent != parent.parent and not parent.exists():
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        return f"{path}: cannot exist, {parent} is a file and not a folder"
    if parent != path.parent:
        return f"{path}: file does not exist (nor does its folder {path.parent})"
    return f"{path}: file does not exist"


def _open(path: Path) -> fits.HDUList:
    if not path.exists():
        raise AstridFileError(_missing(path))
    if path.is_dir():
        raise AstridFileError(f"{path}: is a directory, not a FITS file")
    if path.stat().st_size == 0:
        raise AstridFileError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Record, rather than raise, astropy's truncation warning: raised inside
            # fits.open it would leave the file handle open.
            warnings.simplefilter("always")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    except OSError as exc:
        raise AstridFileError(f"{path}: not a readable FITS file ({exc})") from exc
    except Exception as exc:  # corrupt headers raise ValueError/KeyError/...
        raise AstridFileError(f"{path}: corrupt FITS file ({type(exc).__name__}: {exc})") from exc
    for warning in caught:
        if "truncated" in str(warning.message):
            hdul.close()
            raise AstridFileError(f"{path}: truncated FITS file ({warning.message})")
    return hdul


def _load_data(hdu, path: Path, index) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            return hdu.data
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise AstridFileError(
            f"{path}: HDU {index} is truncated or corrupt, its data cannot be read ({exc})"
        ) from exc


def read_image(
    path: str | os.PathLike,
    hdu: int | str | None = None,
    *,
    saturation: float | None = None,
    require_wcs: bool = False,
) -> Image:
    """Read a 2-D image from a FITS file.

    Parameters
    ----------
    path : str or path-like
        FITS file (``.fits``, ``.fit``, ``.fts``, optionally gzipped).
    hdu : int or str, optional
        HDU index or EXTNAME. By default the first HDU with 2-D (or higher)
        image data.
    saturation : float, optional
        Saturation level in data units; overrides the header's ``SATURATE``.
    require_wcs : bool, optional
        Raise :class:`~astrid.errors.AstridWCSError` when the header has no
        celestial WCS.

    Returns
    -------
    Image
        Data as floating point, its WCS (or None), a mask of non-finite and
        saturated pixels (plus the ``MASK`` extension that
        :func:`write_image` writes), the ``VARIANCE`` extension if present,
        the header and normalised metadata.

    Raises
    ------
    AstridFileError
        Missing, empty, non-FITS or truncated file.
    AstridInputError
        No 2-D image data, or only non-finite pixels.
    AstridWCSError
        ``require_wcs`` and no celestial WCS.

    Warns
    -----
    AstridWarning
        A cube was reduced to its first 2-D plane.
    """
    path = _as_path(path)
    with _open(path) as hdul:
        if hdu is None:
            index = first_image_hdu(hdul, skip=(MASK_EXTNAME, VARIANCE_EXTNAME))
            if index is None:
                raise AstridInputError(f"{path}: no HDU holds 2-D image data")
        else:
            try:
                hdul[hdu]
            except (KeyError, IndexError) as exc:
                raise AstridInputError(f"{path}: has no HDU {hdu!r}") from exc
            index = hdu
        chosen = hdul[index]
        data = _load_data(chosen, path, index)
        if data is None or np.ndim(data) < 2:
            raise AstridInputError(f"{path}: HDU {index} holds no 2-D image data")
        if data.ndim > 2:
            warnings.warn(
                f"{path}: HDU {index} is a {data.ndim}-D cube of shape {data.shape}; "
                "using its first 2-D plane",
                AstridWarning,
                stacklevel=2,
            )
            data = data.reshape((-1,) + data.shape[-2:])[0]
        header = chosen.header.copy()
        if index not in (0, "PRIMARY") and len(hdul) > 1:
            # Keywords such as TELESCOP or DATE-OBS often live only in the primary header.
            primary = hdul[0].header
            for key in primary:
                if (
                    key
                    and key not in header
                    and key not in ("SIMPLE", "EXTEND", "NAXIS", "BITPIX", "COMMENT", "HISTORY", "")
                ):
                    header[key] = primary[key]
        mask_ext = variance_ext = None
        names = [h.name for h in hdul]
        if MASK_EXTNAME in names:
            mask_ext = _load_data(hdul[MASK_EXTNAME], path, MASK_EXTNAME)
        if VARIANCE_EXTNAME in names:
            variance_ext = _load_data(hdul[VARIANCE_EXTNAME], path, VARIANCE_EXTNAME)

    dtype = np.float64 if data.dtype.itemsize > 4 and data.dtype.kind == "f" else np.float32
    data = np.array(data, dtype=dtype)  # a native-endian copy, detached from the file
    finite = np.isfinite(data)
    if not finite.any():
        raise AstridInputError(
            f"{path}: HDU {index} has no finite pixels (all {data.size} are NaN or inf)"
        )

    meta = header_meta(header, path=str(path), hdu=index)
    if saturation is not None:
        meta.saturation = float(saturation)
    mask = ~finite
    if meta.saturation is not None:
        mask |= data >= meta.saturation
    if mask_ext is not None and np.shape(mask_ext) == data.shape:
        mask |= np.asarray(mask_ext) != 0
    variance = None
    if variance_ext is not None and np.shape(variance_ext) == data.shape:
        variance = np.array(variance_ext, dtype=dtype)

    wcs = _wcs_from_header(header)
    image = Image(data=data, wcs=wcs, mask=mask, variance=variance, header=header, meta=meta)
    if require_wcs:
        image.require_wcs()
    return image


def atomic_write(path: str | os.PathLike, write, mode: str = "wb") -> Path:
    """Write a file atomically: ``write(fileobj)`` into a temporary file, then rename.

    The temporary file lives in the target's folder so the rename is atomic
    on POSIX file systems; on any error it is removed and the target is left
    as it was.

    Parameters
    ----------
    path : str or path-like
        The file to write; its folder is created when missing.
    write : callable
        Called once with the open temporary file; writes the content.
    mode : str, optional
        Mode the temporary file is opened with (``"wb"`` or ``"w"``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions of a plain open().
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_ecsv(path: str | os.PathLike, table) -> Path:
    """Write an :class:`astropy.table.Table` as ECSV, atomically (:func:`atomic_write`).

    Parameters
    ----------
    path : str or path-like
        The ``.ecsv`` file to write; its folder is created when missing.
    table : astropy.table.Table
        The table, its metadata and units included.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import io

    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    text = buffer.getvalue().encode()
    return atomic_write(path, lambda fh: fh.write(text))


def provenance_cards(
    step: str | None = None, parameters: dict | None = None
) -> list[tuple[str, Any, str]]:
    """Header cards that record which AstrID version and step made a file."""
    from . import __version__

    cards: list[tuple[str, Any, str]] = [("ASTRIDV", __version__, "AstrID version")]
    if step:
        cards.append(("ASTRSTEP", str(step)[:40], "AstrID processing step"))
    if parameters:
        # Values longer than one card continue on CONTINUE cards (the FITS long-string convention).
        cards.append(("ASTRPARS", json.dumps(parameters, sort_keys=True, default=str), ""))
    return cards


def write_image(
    path: str | os.PathLike,
    image: Image,
    *,
    step: str | None = None,
    parameters: dict | None = None,
    overwrite: bool = True,
) -> Path:
    """Write an :class:`Image` to FITS atomically, with provenance keywords.

    The primary HDU holds the data with the image header and WCS; a ``MASK``
    extension (uint8) and, when present, a ``VARIANCE`` extension follow.
    Keys ``ASTRIDV`` (version), ``ASTRSTEP`` (step) and ``ASTRPARS``
    (parameters as JSON) record provenance.

    Parameters
    ----------
    path : str or path-like
        Output file; a name ending in ``.gz`` is gzip-compressed.
    image : Image
        The image to write.
    step : str, optional
        Name of the processing step that made the image.
    parameters : dict, optional
        Parameters of that step (JSON-serialisable).
    overwrite : bool, optional
        Replace an existing file (default). When False an existing file raises.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = _as_path(path)
    if not isinstance(image, Image):
        raise AstridInputError(
            f"image: must be an astrid.Image (wrap an array with astrid.Image(data)), got {type(image).__name__}"
        )
    if path.is_dir():
        raise AstridFileError(
            f"{path}: is a folder; give a file name such as {path / 'image.fits'}"
        )
    if path.exists() and not overwrite:
        raise AstridFileError(f"{path}: exists and overwrite=False")
    parent = path.parent
    while parent != parent.parent and not parent.exists():
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise AstridFileError(f"{path}: cannot be written, {parent} is a file and not a folder")
    # Arrays set on the Image after it was made bypass its checks: a masked array's
    # mask is honoured here too (NaN in the data, set in MASK).
    data, data_masked = _unmask(image.data, "image.data")
    mask = None if image.mask is None else _unmask(image.mask, "image.mask")[0].astype(bool)
    if data_masked is not None:
        mask = data_masked if mask is None else mask | data_masked
    variance = None if image.variance is None else _unmask(image.variance, "image.variance")[0]
    header = image.header.copy() if image.header is not None else fits.Header()
    for key in (
        "SIMPLE",
        "BITPIX",
        "NAXIS",
        "NAXIS1",
        "NAXIS2",
        "NAXIS3",
        "EXTEND",
        "XTENSION",
        "PCOUNT",
        "GCOUNT",
    ):
        header.remove(key, ignore_missing=True, remove_all=True)
    if image.wcs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            header.update(image.wcs.to_header(relax=True))
    for key, value, comment in provenance_cards(step, parameters):
        header[key] = (value, comment)
    hdus = [fits.PrimaryHDU(data=data, header=header)]
    if mask is not None:
        hdus.append(fits.ImageHDU(data=mask.astype(np.uint8), name=MASK_EXTNAME))
    if variance is not None:
        hdus.append(fits.ImageHDU(data=variance, name=VARIANCE_EXTNAME))
    hdul = fits.HDUList(hdus)
    if path.suffix == ".gz":
        import gzip

        def write(fh):
            with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
                hdul.writeto(gz)

    else:

        def write(fh):
            hdul.writeto(fh)

    return atomic_write(path, write)
