"""The private parts of dependencies that the exporter relies on are still there, as it uses them.

The web server reaches into aiohttp where its public API has no door: exporter/web/connections.py
sets ``BaseSite._server`` (and reads ``_backlog``) and builds aiohttp's ``RequestHandler`` per
connection; exporter/web/request_policy.py overrides ``RequestHandler.handle_error`` and reads
``request.writer.output_size``. exporter/web/webconfig_model.py overrides PyYAML's
``compose_node``. exporter/exposition/cache.py copies zlib-ng's compressors, which its type
stubs leave out. pyproject.toml bounds aiohttp to the minor series these were checked against;
when an upgrade moves one of them, this test fails naming the hook, who uses it and the version.
"""

from __future__ import annotations

import gzip
import inspect
import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import RequestHandler

from exporter.exposition.cache import open_gzip
from exporter.web.connections import ConnectionLimits, guard_connections
from tests.helpers import serve_guarded


@dataclass(frozen=True)
class Hook:
    """One private part of a dependency, who relies on it, and how to tell it is still there."""

    name: str
    used_by: str
    problem: Callable[[], str | None]  # None while the hook is as the code expects

    def __str__(self) -> str:
        return self.name


def _source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def _params(func: Callable[..., object]) -> list[tuple[str, inspect._ParameterKind]]:
    return [(p.name, p.kind) for p in inspect.signature(func).parameters.values()]


def _site_server() -> str | None:
    if "_server" not in web.BaseSite.__slots__:
        return "is no longer a slot of BaseSite"
    if "self._server.close()" not in _source(web.BaseSite.stop):
        return "is no longer what BaseSite.stop() closes"
    if "site._server" not in _source(web.BaseRunner.addresses.fget):
        return "is no longer where BaseRunner.addresses finds the sockets"
    return None


def _site_backlog() -> str | None:
    if "_backlog" not in web.BaseSite.__slots__:
        return "is no longer a slot of BaseSite"
    if "self._backlog = backlog" not in _source(web.BaseSite.__init__):
        return "is no longer set from BaseSite(backlog=...)"
    return None


_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _handle_error() -> str | None:
    expected = [(name, _POSITIONAL) for name in ("self", "request", "status", "exc", "message")]
    if _params(RequestHandler.handle_error) != expected:
        return f"changed signature: {inspect.signature(RequestHandler.handle_error)}"
    calls = _source(RequestHandler).count("self.handle_error(")
    if calls < 2:
        return f"is called {calls} time(s) by RequestHandler (a parse error and a handler's)"
    return None


def _handler_init() -> str | None:
    params = dict(_params(RequestHandler.__init__))
    expected = {"manager": _POSITIONAL, "loop": _KEYWORD}
    expected.update({"access_log": _KEYWORD, "keepalive_timeout": _KEYWORD})
    missing = {name: kind for name, kind in expected.items() if params.get(name) != kind}
    if missing:
        return f"takes no longer {sorted(missing)}: {inspect.signature(RequestHandler.__init__)}"
    return None


def _output_size() -> str | None:
    if not isinstance(getattr(StreamWriter, "output_size", None), int):
        return "is no longer a count of StreamWriter"
    if "self.output_size += " not in _source(StreamWriter):
        return "no longer counts what StreamWriter writes"
    return None


def _compose_node() -> str | None:
    expected = [(name, _POSITIONAL) for name in ("self", "parent", "index")]
    if _params(yaml.SafeLoader.compose_node) != expected:
        return f"changed signature: {inspect.signature(yaml.SafeLoader.compose_node)}"
    return None


def _compressor_copy() -> str | None:
    compressor = open_gzip()
    head = compressor.compress(b"dialnexa_campaign_up 1\n")
    head += compressor.flush(zlib.Z_SYNC_FLUSH)
    try:
        copied = compressor.copy()
    except AttributeError:
        return "is gone: the compressor has no copy()"
    tail = copied.compress(b"tail\n") + copied.flush()
    if gzip.decompress(head + tail) != b"dialnexa_campaign_up 1\ntail\n":
        return "no longer continues the stream it was copied from"
    return None


HOOKS = [
    Hook("aiohttp BaseSite._server", "exporter/web/connections.py GuardedSite.start", _site_server),
    Hook("aiohttp BaseSite._backlog", "exporter/web/connections.py GuardedSite", _site_backlog),
    Hook(
        "aiohttp RequestHandler.handle_error",
        "exporter/web/request_policy.py QuietRequestHandler",
        _handle_error,
    ),
    Hook(
        "aiohttp RequestHandler(manager, loop=, access_log=, keepalive_timeout=)",
        "exporter/web/connections.py ConnectionGuard.protocol_factory",
        _handler_init,
    ),
    Hook(
        "aiohttp StreamWriter.output_size",
        "exporter/web/request_policy.py QuietRequestHandler.handle_error",
        _output_size,
    ),
    Hook(
        "zlib-ng compressobj().copy() (not in its type stubs)",
        "exporter/exposition/cache.py Exposition.gzip_tail",
        _compressor_copy,
    ),
    Hook(
        "PyYAML SafeLoader.compose_node",
        "exporter/web/webconfig_model.py _NoAliasLoader",
        _compose_node,
    ),
]


@pytest.mark.parametrize("hook", HOOKS, ids=str)
def test_private_hook_is_as_the_code_uses_it(hook: Hook) -> None:
    """Each private hook still exists with the shape its user expects; else a message naming it."""
    problem = hook.problem()
    if problem is not None:
        pytest.fail(
            f"{hook.name} {problem} (aiohttp {aiohttp.__version__}, PyYAML {yaml.__version__}); "
            f"{hook.used_by} relies on it: adapt that code before allowing this version in "
            "pyproject.toml and requirements.lock",
            pytrace=False,
        )


def test_hook_checks_fail_on_a_changed_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks themselves: a renamed slot or a changed signature is reported, not missed."""
    monkeypatch.setattr(web.BaseSite, "__slots__", ("_runner", "_ssl_context", "_backlog"))
    assert _site_server() == "is no longer a slot of BaseSite"

    def handle_error(self: object, request: object, status: int = 500) -> None: ...

    monkeypatch.setattr(RequestHandler, "handle_error", handle_error)
    problem = _handle_error()
    assert problem is not None
    assert problem.startswith("changed signature: (self")
    assert "exc" not in problem


async def test_guarded_site_server_is_the_one_aiohttp_reports_and_closes() -> None:
    """The ``_server`` the guarded site sets is what the runner lists and what stopping closes."""
    app = web.Application()

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", hello)
    guard_connections(app, ConnectionLimits(max_connections=4))
    runner, port = await serve_guarded(app)
    try:
        assert [address[1] for address in runner.addresses] == [port]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            assert await response.text() == "ok"
    finally:
        await runner.cleanup()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
