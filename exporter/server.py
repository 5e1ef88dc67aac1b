"""The aiohttp application: /metrics from memory, health endpoints, and the poller's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import logging
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from html import escape
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from exporter import __version__
from exporter.client import DialNexaClient, create_session
from exporter.config import ConfigError, Settings, campaigns_for_shard, load_settings
from exporter.memory import MemoryTuning
from exporter.metrics import CONTENT_TYPE, ExpositionRenderer
from exporter.poller import Clock, Poller, RequestStats, SystemClock, TokenBucket
from exporter.state import Snapshot
from exporter.webconfig import WebConfigWatcher, protect

log = logging.getLogger(__name__)

# gzip level for the cached /metrics body: level 6 costs several times level 1 for a few
# percent smaller output; rendered once per poll round, so the cheap level wins.
GZIP_LEVEL = 1
# Allocations (net, of objects the garbage collector tracks) between two young collections;
# Python's default is 700. Each fetch makes and drops hundreds of short-lived objects, so at
# 700 the collector runs every few fetches to find almost nothing; at this threshold most of
# them are gone before it looks.
GC_YOUNG_THRESHOLD = 10_000
# How often the YAML config file is checked for changes (seconds).
CONFIG_CHECK_SECONDS = 5.0


# Compressed bytes decompressed per chunk of a plain /metrics answer (a few hundred KiB out).
PLAIN_CHUNK_INPUT = 16 * 1024


class Exposition:
    """One rendered /metrics body, kept gzipped only, and whether the first round is done.

    Prometheus always asks for gzip. The plain text, over ten times larger, is never held
    whole: a client that wants it gets it decompressed chunk by chunk as it reads.
    """

    def __init__(self, gzipped: bytes, plain_size: int, ready: bool) -> None:
        self.gzipped = gzipped
        self.plain_size = plain_size
        self.ready = ready

    def plain_chunks(self) -> Iterator[bytes]:
        """The uncompressed body, in order, a chunk at a time."""
        decompressor = zlib.decompressobj(wbits=31)  # the gzip container
        data = memoryview(self.gzipped)
        for start in range(0, len(data), PLAIN_CHUNK_INPUT):
            chunk = decompressor.decompress(data[start : start + PLAIN_CHUNK_INPUT])
            if chunk:
                yield chunk
        tail = decompressor.flush()
        if tail:
            yield tail


class ExpositionCache:
    """Turns each published snapshot into a response body once; scrapes only read it."""

    def __init__(self, tune_memory: bool = False) -> None:
        self._renderer = ExpositionRenderer()
        self._memory = MemoryTuning() if tune_memory else None
        if self._memory is not None:
            self._memory.apply()
            # Modules, settings and the campaign list live for good: out of the collector's
            # sight before the first round, whose collections then only see new objects.
            gc.collect()
            gc.freeze()
            _, older, oldest = gc.get_threshold()
            gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
        empty = self._renderer.render(Snapshot())
        self._current = Exposition(gzip.compress(empty, GZIP_LEVEL), len(empty), ready=False)

    @property
    def current(self) -> Exposition:
        """The latest rendered exposition."""
        return self._current

    async def update(self, snapshot: Snapshot) -> None:
        """Render and compress ``snapshot`` in slices, so that the event loop keeps serving."""
        gzipped, plain_size = await self._renderer.render_gzip(snapshot, GZIP_LEVEL)
        if self._memory is not None and snapshot.ready and not self._current.ready:
            # What the first round made (campaign states, connections, caches) lives for
            # good too: moving it out of the collector's sight shortens every later full
            # collection, which at ten thousand campaigns otherwise stalls the loop.
            gc.freeze()
        self._current = Exposition(gzipped, plain_size, ready=snapshot.ready)
        if self._memory is not None:
            self._memory.release_free_memory()


class ProcessMetrics:
    """Standard process_* metrics of this process, via prometheus_client's collector."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._registry)

    def text(self) -> str:
        """Exposition text of the process metrics."""
        return generate_latest(self._registry).decode("utf-8")


SETTINGS = web.AppKey("settings", Settings)
FLAGS: web.AppKey[dict[str, Any]] = web.AppKey("flags")
EXPOSITION = web.AppKey("exposition", ExpositionCache)
POLLER = web.AppKey("poller", Poller)
CLOCK = web.AppKey("clock", Clock)


def accepts_gzip(header: str | None) -> bool:
    """True when an Accept-Encoding header allows gzip (and does not give it q=0)."""
    if not header:
        return False
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            with contextlib.suppress(ValueError):
                return float(quality[2:]) > 0
        return True
    return False


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    """Serve the cached exposition, gzipped when the client accepts it."""
    exposition = request.app[EXPOSITION].current
    headers = {"Content-Type": CONTENT_TYPE, "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("Accept-Encoding")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=exposition.gzipped, headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_length = exposition.plain_size
    await response.prepare(request)
    if request.method != "HEAD":
        for chunk in exposition.plain_chunks():
            await response.write(chunk)  # waits while the client is behind: memory stays flat
    await response.write_eof()
    return response


async def handle_healthz(request: web.Request) -> web.Response:
    """The process is alive and serving."""
    return web.Response(text="ok\n")


async def handle_readyz(request: web.Request) -> web.Response:
    """Ready once the first poll round is done."""
    if request.app[EXPOSITION].current.ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="waiting for the first poll round\n")


async def handle_index(request: web.Request) -> web.Response:
    """A small page linking to the other endpoints."""
    settings = request.app[SETTINGS]
    poller = request.app.get(POLLER)
    count = len(poller.campaign_ids) if poller is not None else 0
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>DialNexa exporter</title></head>
<body>
<h1>DialNexa exporter</h1>
<p>Version {escape(__version__)}; polling {count} campaign(s) at {escape(settings.api_url)}.</p>
<ul>
<li><a href="metrics">metrics</a></li>
<li><a href="healthz">healthz</a> (process alive)</li>
<li><a href="readyz">readyz</a> (first poll round done)</li>
</ul>
</body></html>
"""
    return web.Response(text=page, content_type="text/html")


class ConfigReloader:
    """Re-reads the configuration (file change or SIGHUP) and hands the new campaign list over."""

    def __init__(self, flags: Mapping[str, Any], poller: Poller, path: Path | None) -> None:
        self._flags = dict(flags)
        self._poller = poller
        self._path = path
        self._signature = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def changed(self) -> bool:
        """True when the config file differs from the last one read."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        return True

    def reload(self) -> bool:
        """Load settings again; on error keep the running list and log one line."""
        try:
            settings = load_settings(self._flags)
        except ConfigError as exc:
            log.error("configuration reload rejected, keeping the running one: %s", exc)
            self._poller.note_reload(success=False)
            return False
        before = set(self._poller.campaign_ids)
        campaigns = campaigns_for_shard(settings)
        self._poller.set_campaigns(campaigns)
        after = set(campaigns)
        log.info(
            "configuration reloaded: %d campaigns (%d added, %d removed)",
            len(after),
            len(after - before),
            len(before - after),
        )
        self._poller.note_reload(success=True)
        return True

    async def watch(self, every: float) -> None:
        """Check the file every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            if self.changed():
                self.reload()


RELOADER = web.AppKey("reloader", ConfigReloader)


async def _poller_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    clock = app[CLOCK]
    cache = app[EXPOSITION]
    process = ProcessMetrics()
    api_key = settings.api_key
    if api_key is None:
        raise ConfigError("DIALNEXA_API_KEY", "is required")
    session = create_session(settings.max_concurrency)
    stats = RequestStats()
    limiter = (
        TokenBucket(settings.max_requests_per_second, clock)
        if settings.max_requests_per_second
        else None
    )
    client = DialNexaClient(
        session,
        settings.api_url,
        api_key,
        timeout_seconds=settings.request_timeout_seconds,
        observer=stats,
        monotonic=clock.monotonic,
        wall_time=clock.time,
        before_request=limiter.acquire if limiter is not None else None,
    )
    poller = Poller(
        settings,
        fetcher=client,
        sink=cache.update,
        campaign_ids=campaigns_for_shard(settings),
        stats=stats,
        clock=clock,
        process_text=process.text,
    )
    app[POLLER] = poller
    flags: dict[str, Any] = app[FLAGS]
    reloader = ConfigReloader(flags, poller, settings.config_file)
    app[RELOADER] = reloader
    tasks = [asyncio.create_task(poller.run(), name="dialnexa-poller")]
    if settings.config_file is not None:
        tasks.append(
            asyncio.create_task(reloader.watch(CONFIG_CHECK_SECONDS), name="dialnexa-config")
        )
    log.info(
        "polling %d campaigns every %gs at %s (shard %d of %d)",
        len(poller.campaign_ids),
        settings.poll_interval_seconds,
        settings.api_url,
        settings.effective_shard_index,
        settings.shard_count,
    )
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a task that died earlier must not keep the session open
                log.exception("background task %s had failed", task.get_name())
        await session.close()


def create_app(
    settings: Settings,
    *,
    flags: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    tune_memory: bool = False,
) -> web.Application:
    """The exporter's web application; polling starts when the app starts.

    Raises ConfigError when DIALNEXA_WEB_CONFIG_FILE is set and unusable.
    """
    app = web.Application()
    app[SETTINGS] = settings
    app[FLAGS] = dict(flags or {})
    app[CLOCK] = clock or SystemClock()
    app[EXPOSITION] = ExpositionCache(tune_memory)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/", handle_index)
    app.cleanup_ctx.append(_poller_context)
    if settings.web_config_file is not None:
        # TLS, basic auth and headers from DIALNEXA_WEB_CONFIG_FILE; the CLI takes the TLS
        # context from the app (webconfig.listening_context) when it opens the site.
        watcher = WebConfigWatcher(settings.web_config_file, monotonic=app[CLOCK].monotonic)
        protect(app, watcher)
    return app
