"""Keeping a long load's resident memory flat: where Arrow allocates, and handing freed memory
back to the operating system between chunks."""

from __future__ import annotations

import ctypes
import os

import pyarrow as pa


def _c_library() -> ctypes.CDLL | None:
    """The process's own symbols, the C library's among them (malloc_trim where it is glibc).
    Not ctypes.util.find_library("c"): on Linux it runs `ldconfig -p` in a subprocess."""
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):  # a platform without dlopen(NULL)
        return None


_LIBC = _c_library()


def use_system_allocator() -> None:
    """Let Arrow (and so pandas' string columns) allocate with the C library's malloc, unless
    ARROW_DEFAULT_MEMORY_POOL chooses a pool. pyarrow's bundled mimalloc keeps freed pages of
    earlier chunks; with malloc, `release_memory` returns them (peaks measured in docs/performance.md)."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())


def release_memory() -> None:
    """Hand freed memory back to the OS: Arrow's pool and glibc's heap both keep freed blocks
    otherwise (no-op for malloc_trim where the C library is not glibc)."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
