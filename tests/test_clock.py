"""The system clock's waits, and the fake clock the tests drive everything with."""

from __future__ import annotations

import asyncio

from exporter.clock import SystemClock
from tests.helpers import FakeClock


async def test_system_wait_returns_early_when_the_event_is_set() -> None:
    """wait() ends as soon as the event is set, reporting it; a timeout reports False."""
    clock = SystemClock()
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await asyncio.wait_for(clock.wait(event, 60), 5)
    assert not await clock.wait(asyncio.Event(), 0.01)
    assert await clock.wait(event, 0)  # already set: no waiting at all


async def test_system_wait_passes_cancellation_on() -> None:
    """Cancelling a waiter cancels it (shutdown must never hang on a wait)."""
    task = asyncio.create_task(SystemClock().wait(asyncio.Event(), 60))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_fake_clock_wakes_waits_only_when_moved_far_enough() -> None:
    """A fake-clock wait ends when the clock is advanced past it, and not before."""
    clock = FakeClock()
    waiter = asyncio.create_task(clock.wait(asyncio.Event(), 10))
    await asyncio.sleep(0)
    assert clock.waiting == 1
    clock.advance(9.9)
    await asyncio.sleep(0)
    assert not waiter.done()
    clock.advance(0.1)
    assert await asyncio.wait_for(waiter, 5) is False
    assert clock.waiting == 0
