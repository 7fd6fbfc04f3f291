"""AstrID: find supernovae and other transients in astronomical images.

The short path from import to result::

    import astrid
    pair = astrid.simulate.pair(size=1024, seed=1)
    result = astrid.difference(pair.reference, pair.science)     # ZOGY: D, S, S_corr
    candidates = astrid.detect(result, threshold=5.0)
    triplets = astrid.make_triplets(result, candidates)           # xarray.Dataset

Heavy optional parts (Keras, TFLite, astroquery, Dask) are imported only by
the subpackages that need them, so ``import astrid`` stays fast.
"""

from importlib import import_module

from ._version import __version__
from .errors import AstridError, AstridInputError
from .io import Image, ImageMeta, read_image, write_image
from .manifest import Manifest, SurveyPair

# Top-level functions, imported from their stage modules on first use.
_LAZY_FUNCTIONS = {
    "align": ".diffim.alignment",
    "Alignment": ".diffim.alignment",
    "estimate_background": ".diffim.background",
    "estimate_backgrounds": ".diffim.background",
    "Background": ".diffim.background",
    "estimate_psf": ".diffim.psf",
    "gaussian_psf": ".diffim.psf",
    "psf_to_fft_origin": ".diffim.psf",
    "PSFModel": ".diffim.psf",
    "PSFRequest": ".diffim.psf",
    "find_stars": ".diffim.stars",
    "match_stars": ".diffim.stars",
    "flux_ratio": ".diffim.photometry",
    "FluxRatio": ".diffim.photometry",
    "difference": ".diffim.pipeline",
    "DifferenceResult": ".diffim.pipeline",
    "classic_subtract": ".diffim.classic",
    "DifferenceOptions": ".diffim.options",
    "as_image": ".diffim.image",
    "detect": ".triplets",
    "label_candidates": ".triplets",
    "make_triplets": ".triplets",
    "write_triplets": ".triplets",
    "load_triplets": ".triplets",
    "build_training_set": ".triplets",
    "read_ztf": ".alerts",
    "read_alerts": ".alerts",
    "record_metrics": ".runner",
    "evaluate_methods": ".anomaly",
}

# Subpackages loaded on first attribute access (``astrid.zogy`` is the short name of the ZOGY
# stage, astrid.diffim.zogy).
_SUBMODULE_ALIASES = {"zogy": "diffim.zogy"}
_LAZY_SUBMODULES = {
    *_SUBMODULE_ALIASES,
    "simulate",
    "errors",
    "io",
    "manifest",
    "alerts",
    "braai",
    "acquire",
    "export",
    "batch",
    "widgets",
    "figures",
    "triplets",
    "runner",
    "score",
    "paths",
    "anomaly",
    "drift",
    "kernel",
    "inject",
    "schema",
    "evaluation",
    "diffim",
}

__all__ = [
    "__version__",
    "AstridError",
    "AstridInputError",
    "Image",
    "ImageMeta",
    "Manifest",
    "SurveyPair",
    "read_image",
    "write_image",
    *_LAZY_FUNCTIONS,
    *sorted(_LAZY_SUBMODULES),
]


def __getattr__(name):
    if name in _LAZY_FUNCTIONS:
        return getattr(import_module(_LAZY_FUNCTIONS[name], __name__), name)
    if name in _LAZY_SUBMODULES:
        return import_module(f".{_SUBMODULE_ALIASES.get(name, name)}", __name__)
    raise AttributeError(f"module 'astrid' has no attribute {name!r}")
