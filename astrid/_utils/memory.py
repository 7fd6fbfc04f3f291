"""Keeping freed image-sized arrays in the process for the next allocation (glibc only).

By default glibc hands every allocation above 128 KiB–32 MiB to the kernel with ``mmap`` and
gives it back on ``free``; the next array of that size then costs a page fault and a zeroed page
for every 4 KiB. A 4096² step allocates and frees image-sized float32 maps dozens of times:
measured on the kernel step at 4096², 5.0 s with the default and 3.4 s with freed memory kept
(docs/performance.md). Within :func:`reuse_freed_memory` large allocations come from the heap
and freed memory stays there; on leaving the outermost block the defaults glibc reaches on its
own after large frees are set and ``malloc_trim`` returns the free memory to the system, so a
notebook's kernel does not keep the peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
import threading

__all__ = ["reuse_freed_memory"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Within the block: nothing below 2 GiB is mmapped, and no free memory is trimmed.
_KEEP = 2**31 - 1
# On leaving: glibc's dynamic threshold after freeing large arrays (its ceiling, 32 MiB on 64-bit,
# and twice that for trimming); setting any value switches the dynamic adjustment off.
_AFTER_MMAP = 32 * 2**20
_AFTER_TRIM = 2 * _AFTER_MMAP

_lock = threading.Lock()
_depth = 0


@functools.cache
def _glibc():
    """The C library when it is glibc (``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - musl and others have no such symbol
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def reuse_freed_memory():
    """Within the block, freed large arrays are reused instead of returned to the system.

    Nested and concurrent blocks (threads) share one setting: the first to enter sets it, the last
    to leave restores it and trims the heap. Does nothing where the C library is not glibc.
    """
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _KEEP)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP)
                libc.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM)
                libc.malloc_trim(0)
