"""Where AstrID finds shared validation data."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shared_data"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data(*parts: str) -> Path | None:
    """Path of the shared real-data folder (or a file in it), or None when absent.

    The folder is ``$ASTRID_SHARED_DATA`` when set, else ``../shared/data``
    beside the repository (the layout of the project's machines and CI).

    Parameters
    ----------
    *parts : str
        Path components below the shared folder (none: the folder itself).

    Returns
    -------
    pathlib.Path or None
        The path, or None when it does not exist.
    """
    root = Path(os.environ.get("ASTRID_SHARED_DATA", _REPO_ROOT.parent / "shared" / "data"))
    path = root.joinpath(*parts)
    return path if path.exists() else None
