"""Which event loop runs the exporter: uvloop where it is installed, else asyncio's own."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from typing import Any, Literal, TypeVar

from exporter.config import ConfigError, env_name

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_available() -> bool:
    """True when uvloop can be imported (it has no wheels for Windows)."""
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: LoopChoice) -> LoopFactory:
    """The loop factory for a choice: ``auto`` is uvloop when available, else asyncio."""
    if choice == "asyncio" or (choice == "auto" and not uvloop_available()):
        return asyncio.new_event_loop
    if not uvloop_available():
        raise ConfigError(env_name("event_loop"), "uvloop is not installed on this platform")
    import uvloop

    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: LoopChoice) -> T:
    """Run ``main`` to completion on a new loop of the chosen kind."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``uvloop`` or ``asyncio``: the kind of ``loop`` (by default the running one), as the
    exporter reports it in its logs and build info; ``none`` outside any loop."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return "none"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def loop_description(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """The loop's kind with its version where it has one (for the start-up log line)."""
    name = loop_name(loop)
    if name == "uvloop":
        return f"uvloop {version('uvloop')}"
    return name
