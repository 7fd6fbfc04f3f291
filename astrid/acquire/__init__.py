"""Acquisition: supernova catalogues, archive queries, valid pairs, resumable downloads.

The notes' hardest lesson: of 19 supernovae downloaded, only 8 had usable
pairs, because cross-mission pairs (a PS1 reference for a Swift science
image) and mismatched filters (UVW1 against UVM2) cannot be differenced.
This package fetches only what can be::

    from astrid import acquire

    cat = acquire.load_sn_catalog("sncat_compiled.txt")           # or "vizier:B/sn"
    sn = acquire.select_targets(cat, ["SN 2011fe"])[0]
    obs = acquire.query_mast(sn, missions=["SWIFT"])               # astroquery.mast
    pairs, rejected = acquire.find_pairs(obs, sn["discovery"], filters=["U"])
    acquire.download(pairs, "data/swift")                          # survey layout + manifest.json

or all of it, in resumable chunks, from a YAML configuration::

    result = acquire.run("acquire.yaml", dry_run=True)            # what would be fetched
    result = acquire.run("acquire.yaml")

Three archives share one interface (:func:`get_archive`): ``"simulated"``
(the default; ``astrid.simulate.survey``), ``"mast"`` (astroquery; probes the
network first and fails within seconds without one) and ``"local"`` (FITS
files you already have). See ``docs/acquisition.md``.
"""

from ._archive import (
    AcquisitionResult,
    Archive,
    LocalArchive,
    MastArchive,
    SimulatedArchive,
    get_archive,
    run,
)
from ._catalog import (
    DEFAULT_VIZIER_CATALOG,
    gaia_stars,
    load_sn_catalog,
    parse_dec,
    parse_ra,
    select_targets,
)
from ._config import ARCHIVES, AcquisitionConfig
from ._download import (
    DownloadReport,
    FetchOptions,
    FetchResult,
    QueryCheckpoint,
    destination_name,
    download,
    fetch_file,
    validate_fits,
)
from ._errors import AstridArchiveError, AstridDownloadError
from ._filters import SWIFT_UVOT_FILTERS, normalise_filter, normalise_instrument, normalise_mission
from ._mast import MAST_URL, check_reachable, mast_products, query_mast, skyview_cutouts
from ._pairs import find_pairs, standardise_observations

__all__ = [
    "ARCHIVES",
    "AcquisitionConfig",
    "AcquisitionResult",
    "Archive",
    "AstridArchiveError",
    "AstridDownloadError",
    "DEFAULT_VIZIER_CATALOG",
    "DownloadReport",
    "FetchResult",
    "LocalArchive",
    "MAST_URL",
    "MastArchive",
    "QueryCheckpoint",
    "SWIFT_UVOT_FILTERS",
    "SimulatedArchive",
    "check_reachable",
    "destination_name",
    "download",
    "fetch_file",
    "FetchOptions",
    "find_pairs",
    "gaia_stars",
    "get_archive",
    "load_sn_catalog",
    "mast_products",
    "normalise_filter",
    "normalise_instrument",
    "normalise_mission",
    "parse_dec",
    "parse_ra",
    "query_mast",
    "run",
    "select_targets",
    "skyview_cutouts",
    "standardise_observations",
    "validate_fits",
]
