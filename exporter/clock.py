"""Time as the exporter reads it: wall time, monotonic time, and waiting on that same clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for scheduling, and waits measured by it.

    Everything that schedules (the poller, its publisher, the rate limiter) reads and waits
    through one Clock, so a test's fake clock drives all of it without real sleeps.
    """

    def time(self) -> float:
        """Seconds since the Unix epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary, never-decreasing origin."""

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass; True if it was set."""


class SystemClock:
    """The real clock. Its readings are the C functions themselves, not methods calling them:
    every fetch reads the clock several times."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)  # after monotonic: from here on, time is this attribute

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass; True if it was set.

        Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that arrives as
        the event is set, which left a cancelled task running forever at shutdown.
        """
        if event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()
        return event.is_set()
