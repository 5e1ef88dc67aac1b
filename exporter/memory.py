"""Process memory tuning for glibc: where large buffers come from, and giving freed pages back."""

from __future__ import annotations

import ctypes
import sys

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
# Buffers from this size up (the plain exposition of thousands of campaigns is ~10 MB) come
# straight from mmap and go back to the OS when freed. Smaller ones (a gzipped page of ~1 MB,
# request buffers) stay on the heap, where reusing them costs no page faults.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


class MemoryTuning:
    """glibc allocator settings for a long-running process holding large, short-lived buffers.

    Without a fixed threshold glibc raises its mmap threshold after the first large buffer is
    freed, so later ones land on the heap and fragment it; trimming after each publication
    hands pages freed by a poll round back to the OS. Does nothing off glibc.
    """

    def __init__(self) -> None:
        self._libc = _libc()

    @property
    def active(self) -> bool:
        """True when running on glibc, where the tuning applies."""
        return self._libc is not None

    def apply(self) -> None:
        """Fix the mmap threshold (call once, at start-up)."""
        if self._libc is not None:
            self._libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)

    def release_free_memory(self) -> None:
        """Return free heap pages to the OS (malloc_trim)."""
        if self._libc is not None:
            self._libc.malloc_trim(0)
