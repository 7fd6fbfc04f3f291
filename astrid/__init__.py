"""AstrID: find supernovae and other transients in astronomical images.

The short path from import to result::

    import astrid
    pair = astrid.simulate.pair(size=1024, seed=1)
    astrid.write_image("science.fits", pair.science)
    image = astrid.read_image("science.fits")

Heavy optional parts (Keras, TFLite, astroquery, Dask) are imported only by
the subpackages that need them.
"""

from importlib import import_module

from ._version import __version__
from .errors import AstridError, AstridInputError
from .io import Image, ImageMeta, read_image, write_image
from .manifest import Manifest, SurveyPair

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
    "simulate",
]

# Subpackages loaded on first attribute access, so `import astrid` stays fast.
_LAZY_SUBMODULES = {
    "simulate", "errors", "io", "manifest", "zogy", "alerts", "braai", "acquire",
    "export", "batch", "widgets", "figures", "triplets", "runner", "score", "paths",
}


def __getattr__(name):
    if name == "record_metrics":
        from .runner import record_metrics

        return record_metrics
    if name in _LAZY_SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'astrid' has no attribute {name!r}")
