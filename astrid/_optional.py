"""Optional dependencies behind clear ImportErrors."""

from importlib import import_module

_EXTRA_OF = {
    "tensorflow": "ml",
    "keras": "ml",
    "ai_edge_litert": "ml",
    "astroquery": "acquire",
    "dask": "dask",
    "distributed": "dask",
    "papermill": "notebooks",
    "ipywidgets": "notebooks",
    "fastavro": "triplets",
    "pyarrow": "triplets",
    "h5py": "ml",
    "sklearn": "ml",
    "mlflow": "tracking",
    "zarr": "triplets",
    "h5netcdf": "triplets",
}


def require(module: str, purpose: str):
    """Import ``module`` or raise an ImportError that names the extra to install."""
    try:
        return import_module(module)
    except ImportError as exc:
        extra = _EXTRA_OF.get(module.split(".")[0], "all")
        raise ImportError(
            f"{purpose} needs the optional package '{module.split('.')[0]}': "
            f"install it with  pip install 'astrid[{extra}]'"
        ) from exc
