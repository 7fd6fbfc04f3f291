"""Inter-process locks for AstrID's stores (triplet stores, label files).

Every writer of a store takes an exclusive lock on a small sibling file,
``.<name>.lock`` in the store's folder, for the whole of its read-modify-write
(an append reads the committed length, writes rows, then commits them). Two
notebooks, two Dask workers or a notebook and ``astrid run`` appending to one
store are therefore serialised instead of overwriting each other's rows.

The locks are advisory (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on
Windows, through the ``filelock`` package): they protect against AstrID's own
writers, on one machine or on a shared file system whose locks work (local
disks, NFSv4; not every network file system). The operating system releases
a lock when its process dies, so a killed writer never leaves a store locked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .errors import AstridFileError

__all__ = ["store_lock", "lock_path", "LOCK_TIMEOUT"]

#: Seconds a writer waits for another writer of the same store before giving up.
LOCK_TIMEOUT = 600.0


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a store: ``.<name>.lock`` beside it (it may not exist yet)."""
    path = Path(path).absolute()
    return path.parent / f".{path.name}.lock"


@contextmanager
def store_lock(path: str | os.PathLike, timeout: float | None = None, *, reading: bool = False):
    """Hold the exclusive writer lock of the store at ``path``.

    Parameters
    ----------
    path : str or path-like
        The store (Zarr folder, netCDF file, label file); its folder must exist.
    timeout : float, optional
        Seconds to wait for another writer (default :data:`LOCK_TIMEOUT`).
    reading : bool, optional
        The holder only reads. Where the lock file cannot be created (a
        read-only folder, where no AstrID writer can be either) the read
        goes ahead without it instead of failing.

    Raises
    ------
    AstridFileError
        Another writer held the lock for longer than ``timeout``, or the lock
        file cannot be created (read-only folder).
    """
    import filelock

    target = lock_path(path)
    lock = filelock.FileLock(str(target), timeout=LOCK_TIMEOUT if timeout is None else timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise AstridFileError(
            f"{path}: another process has been writing to this store for more than "
            f"{lock.timeout:.0f} s (lock file {target}); try again when it has finished"
        ) from None
    except OSError as exc:
        if reading:
            yield
            return
        raise AstridFileError(
            f"{path}: cannot create the writer lock {target} ({exc.strerror or exc})"
        ) from None
    try:
        yield
    finally:
        lock.release()
