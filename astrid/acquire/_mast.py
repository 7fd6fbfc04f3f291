"""MAST observation queries, product resolution and SkyView cutouts through astroquery.

Only astroquery's public calls are used (``Observations.query_criteria``,
``Observations.get_product_list``, ``SkyView.get_image_list``); the files
themselves are fetched by :func:`~astrid.acquire.fetch_file`, which verifies
them. Before any long query the archive is probed with a short timeout, so a
machine without network learns that in seconds, not after astroquery's
minutes of retries.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Row, Table
from astropy.time import Time

from .._optional import require
from ..errors import AstridInputError
from ._download import FetchOptions, destination_name, fetch_file, safe_name
from ._errors import AstridArchiveError
from ._pairs import standardise_observations

__all__ = ["query_mast", "check_reachable", "mast_products", "skyview_cutouts", "MAST_URL"]

#: Address probed by :func:`check_reachable` for MAST.
MAST_URL = "https://mast.stsci.edu/"

# Product sub-groups preferred as "the" science image of an observation, best first.
_PREFERRED_SUBGROUPS = {
    "SWIFT": ("SK",),
    "HST": ("DRZ", "DRC", "FLC", "FLT"),
    "GALEX": ("INT",),
    "JWST": ("I2D", "CAL"),
}
_IMAGE_EXTENSIONS = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts", ".img", ".img.gz")


def check_reachable(
    url: str = MAST_URL, *, name: str = "MAST", timeout: float = 3.0, session=None
) -> None:
    """Fail fast when an archive cannot be reached.

    One ``HEAD`` request with a short timeout; any HTTP answer below 500
    counts as reachable.

    Parameters
    ----------
    url : str
        Address to probe.
    name : str
        Archive name for the message.
    timeout : float
        Seconds to wait (default 3).
    session : requests.Session, optional
        HTTP session.

    Raises
    ------
    AstridArchiveError
        No answer within ``timeout`` or a server error, with a message that
        suggests ``archive='simulated'`` or ``'local'``.
    """
    import requests

    session = session or requests.Session()
    try:
        response = session.request("HEAD", url, timeout=timeout, allow_redirects=True)
    except requests.exceptions.RequestException as exc:
        raise AstridArchiveError(
            f"{name} is not reachable ({type(exc).__name__}: {_short(exc)}); "
            "use archive='simulated' or 'local', or check the network"
        ) from exc
    if response.status_code >= 500:
        raise AstridArchiveError(
            f"{name} answered HTTP {response.status_code} to {url}; it may be down. "
            "Try again later, or use archive='simulated' or 'local'"
        )


def _short(exc: Exception, limit: int = 160) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _target_fields(target, discovery_time) -> tuple[str, SkyCoord, float]:
    if isinstance(target, Row):
        try:
            name = str(target["name"])
            coord = SkyCoord(float(target["ra"]) * u.deg, float(target["dec"]) * u.deg)
        except KeyError as exc:
            raise AstridInputError(
                f"target row needs 'name', 'ra' and 'dec' columns ({exc})"
            ) from exc
        if discovery_time is None and "discovery" in target.colnames:
            discovery_time = target["discovery"]
    elif isinstance(target, SkyCoord):
        name = target.to_string("hmsdms", precision=0).replace(" ", "")
        coord = target
    else:
        raise AstridInputError(
            f"target must be a catalogue row or a SkyCoord, got {type(target).__name__}"
        )
    if discovery_time is None:
        raise AstridInputError(f"target {name}: no discovery time (pass discovery_time=)")
    if isinstance(discovery_time, Time):
        if getattr(discovery_time, "masked", False) and np.all(discovery_time.mask):
            raise AstridInputError(f"target {name}: discovery date unknown (masked)")
        t0 = float(discovery_time.mjd)
    else:
        t0 = float(discovery_time)
    return name, coord, t0


def query_mast(
    target: Row | SkyCoord,
    missions: Iterable[str] | None = ("SWIFT",),
    filters: Iterable[str] | None = None,
    days_before: float = 3650.0,
    days_after: float = 60.0,
    radius: u.Quantity = 3 * u.arcmin,
    *,
    discovery_time: Time | float | None = None,
    instruments: Iterable[str] | None = None,
    dataproduct_type: str | None = "image",
    check_timeout: float | None = 3.0,
) -> Table:
    """Observations around a supernova in a time window about its discovery, from MAST.

    Parameters
    ----------
    target : astropy.table.Row or astropy.coordinates.SkyCoord
        A row of :func:`load_sn_catalog` (``name``, ``ra``, ``dec``,
        ``discovery``) or a position (then give ``discovery_time``).
    missions : iterable of str or None, optional
        MAST collections (``obs_collection``), e.g. ``["SWIFT"]``, ``["HST",
        "GALEX"]``; None for all.
    filters : iterable of str, optional
        Keep observations in these filters (normalised, so ``"uvw1"``
        matches ``"UVW1"``); applied after the query because archives spell
        filters differently.
    days_before : float, optional
        Search this many days before discovery (default 3650: ten years of
        possible references).
    days_after : float, optional
        Search this many days after discovery.
    radius : astropy.units.Quantity, optional
        Cone radius around the position (default 3 arcmin).
    discovery_time : astropy.time.Time or float, optional
        Discovery date, when ``target`` is a SkyCoord (or to override).
    instruments : iterable of str, optional
        MAST ``instrument_name`` values to keep.
    dataproduct_type : str or None, optional
        MAST ``dataproduct_type`` (default ``"image"``).
    check_timeout : float or None, optional
        Probe MAST first, waiting at most this many seconds (default 3), and
        fail fast when it is unreachable; None: no probe.

    Returns
    -------
    astropy.table.Table
        Standard observation columns (see
        :func:`standardise_observations`): ``target``, ``obsid``,
        ``mission`` (``obs_collection``), ``instrument``, ``filter``
        (normalised) and ``filter_raw``, ``t_min``/``t_max`` (MJD),
        ``exptime`` (s), ``url`` (``dataURL``), ...; ``meta["query"]``
        records the query. Empty when MAST has nothing.

    Raises
    ------
    AstridArchiveError
        MAST unreachable, or the query failed.
    """
    name, coord, t0 = _target_fields(target, discovery_time)
    radius = u.Quantity(radius)
    if not radius.unit.is_equivalent(u.deg) or radius <= 0:
        raise AstridInputError(f"radius must be a positive angle, got {radius}")
    if days_before < 0 or days_after < 0:
        raise AstridInputError(
            f"days_before and days_after must be >= 0, got {days_before}, {days_after}"
        )
    mast = require("astroquery.mast", "querying MAST")
    from astroquery.exceptions import NoResultsWarning, RemoteServiceError

    if check_timeout is not None:
        check_reachable(MAST_URL, name="MAST", timeout=check_timeout)
    criteria: dict[str, Any] = {
        "coordinates": coord,
        "radius": radius.to(u.deg),
        "t_min": [t0 - float(days_before), t0 + float(days_after)],
    }
    if missions:
        criteria["obs_collection"] = [str(m).strip() for m in missions]
    if instruments:
        criteria["instrument_name"] = [str(i).strip() for i in instruments]
    if dataproduct_type:
        criteria["dataproduct_type"] = [dataproduct_type]
    import requests

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoResultsWarning)
            raw = mast.Observations.query_criteria(**criteria)
    except (requests.exceptions.RequestException, TimeoutError) as exc:
        raise AstridArchiveError(
            f"MAST query for {name} failed ({type(exc).__name__}: {_short(exc)})"
        ) from exc
    except RemoteServiceError as exc:
        raise AstridArchiveError(f"MAST refused the query for {name}: {_short(exc)}") from exc
    table = standardise_observations(raw if raw is not None else Table(), target=name)
    if filters:
        from ._filters import normalise_filter

        keep = [
            f in {normalise_filter(w, m, i) for w in filters}
            for f, m, i in zip(table["filter"], table["mission"], table["instrument"])
        ]
        table = table[np.asarray(keep, dtype=bool)] if len(table) else table
    table.meta["query"] = {
        "target": name,
        "ra": coord.ra.deg,
        "dec": coord.dec.deg,
        "discovery_mjd": t0,
        "missions": list(missions) if missions else None,
        "days_before": days_before,
        "days_after": days_after,
        "radius_deg": float(radius.to_value(u.deg)),
    }
    return table


def _download_url(data_uri: str) -> str:
    mast = require("astroquery.mast", "downloading from MAST")
    return f"{mast.conf.server}/api/v0.1/Download/file?uri={quote(data_uri, safe=':/')}"


def mast_products(obsids: Iterable[str], *, product_type: str = "SCIENCE") -> dict[str, dict]:
    """The science image product of each MAST observation.

    Parameters
    ----------
    obsids : iterable of str
        MAST ``obsid`` values (product group ids).
    product_type : str, optional
        MAST ``productType`` to keep (default ``"SCIENCE"``).

    Returns
    -------
    dict
        ``obsid → {"url", "filename", "size", "checksum"}`` for observations
        with a FITS image product; per observation the highest calibration
        level and the mission's preferred kind (Swift ``SK`` sky images, HST
        ``DRZ``/``FLT``, GALEX ``INT``) win. Observations without one are left out.

    Raises
    ------
    AstridArchiveError
        MAST unreachable or refusing the request.
    """
    obsids = [str(o) for o in obsids if str(o)]
    if not obsids:
        return {}
    mast = require("astroquery.mast", "listing MAST products")
    import requests
    from astroquery.exceptions import NoResultsWarning, RemoteServiceError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoResultsWarning)
            products = mast.Observations.get_product_list(obsids)
    except (requests.exceptions.RequestException, TimeoutError) as exc:
        raise AstridArchiveError(
            f"MAST product list failed ({type(exc).__name__}: {_short(exc)})"
        ) from exc
    except RemoteServiceError as exc:
        raise AstridArchiveError(f"MAST refused the product list: {_short(exc)}") from exc
    parent_col = "parent_obsid" if "parent_obsid" in products.colnames else "obsID"
    best: dict[str, tuple] = {}
    for row in products:
        filename = str(row["productFilename"]) if "productFilename" in row.colnames else ""
        uri = str(row["dataURI"]) if "dataURI" in row.colnames else ""
        if not uri or not filename.lower().endswith(_IMAGE_EXTENSIONS):
            continue
        if (
            product_type
            and "productType" in row.colnames
            and str(row["productType"]).upper() != product_type.upper()
        ):
            continue
        parent = str(row[parent_col])
        mission = str(row["obs_collection"]).upper() if "obs_collection" in row.colnames else ""
        subgroup = (
            str(row["productSubGroupDescription"]).upper()
            if "productSubGroupDescription" in row.colnames
            else ""
        )
        preferred = _PREFERRED_SUBGROUPS.get(mission, ())
        rank_subgroup = preferred.index(subgroup) if subgroup in preferred else len(preferred)
        level = (
            row["calib_level"]
            if "calib_level" in row.colnames and row["calib_level"] is not np.ma.masked
            else 0
        )
        size = row["size"] if "size" in row.colnames and row["size"] is not np.ma.masked else -1
        checksum = ""
        for key in ("sha256", "md5", "checksum"):
            if key in row.colnames and row[key] is not np.ma.masked and str(row[key]).strip():
                value = str(row[key]).strip()
                checksum = value if ":" in value or key == "checksum" else f"{key}:{value}"
                break
        rank = (rank_subgroup, -int(level), filename)
        if parent not in best or rank < best[parent][0]:
            best[parent] = (
                rank,
                {
                    "url": _download_url(uri),
                    "filename": filename,
                    "size": int(size),
                    "checksum": checksum,
                },
            )
    return {obsid: info for obsid, (_, info) in best.items() if obsid in set(obsids)}


def skyview_cutouts(
    position: SkyCoord,
    survey: str | Iterable[str],
    out_dir: str | os.PathLike,
    *,
    pixels: int = 512,
    radius: u.Quantity | None = None,
    name: str | None = None,
    retries: int = 3,
    sleep=None,
    session=None,
) -> list[Path]:
    """Reference images from NASA SkyView (DSS, SDSS, 2MASS, GALEX, ...) as verified FITS files.

    Parameters
    ----------
    position : astropy.coordinates.SkyCoord
        Image centre.
    survey : str or iterable of str
        SkyView survey names, e.g. ``"DSS2 Red"``, ``"SDSSr"``.
    out_dir : path-like
        Folder for the files.
    pixels : int, optional
        Image side in pixels (default 512).
    radius : astropy.units.Quantity, optional
        Half-width of the image (SkyView's default when None).
    name : str, optional
        File name prefix (default: derived from the position).
    retries : int, optional
        Retries per file.
    sleep : callable, optional
        Wait function between retries (tests pass a recorder).
    session : requests.Session, optional
        HTTP session for the downloads.

    Returns
    -------
    list of pathlib.Path
        One ``<name>_<survey>.fits`` per survey, validated with astropy.

    Raises
    ------
    AstridArchiveError
        SkyView unreachable or returning no image.
    AstridDownloadError
        A file could not be fetched intact.
    """
    skyview = require("astroquery.skyview", "fetching SkyView cutouts")
    import requests

    surveys = [survey] if isinstance(survey, str) else list(survey)
    if int(pixels) < 1:
        raise AstridInputError(f"pixels must be >= 1, got {pixels}")
    client = skyview.SkyViewClass()
    try:
        urls = client.get_image_list(
            position=position, survey=surveys, pixels=str(int(pixels)), radius=radius, cache=False
        )
    except requests.exceptions.RequestException as exc:
        raise AstridArchiveError(
            f"SkyView is not reachable ({type(exc).__name__}: {_short(exc)})"
        ) from exc
    except ValueError as exc:
        raise AstridInputError(f"SkyView: {exc}") from exc
    if len(urls) != len(surveys):
        raise AstridArchiveError(
            f"SkyView returned {len(urls)} image(s) for {len(surveys)} survey(s) {surveys}"
        )
    prefix = safe_name(name or position.to_string("decimal", precision=4).replace(" ", "_"))
    out = []
    kwargs = {"sleep": sleep} if sleep is not None else {}
    for url, survey_name in zip(urls, surveys):
        dest = Path(out_dir) / destination_name(url, f"{prefix}_{safe_name(survey_name)}.fits")
        options = FetchOptions(retries=retries)
        out.append(fetch_file(url, dest, options=options, session=session, **kwargs).path)
    return out
