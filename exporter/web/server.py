"""The aiohttp application: /metrics from memory, health endpoints, and the poller's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

from aiohttp import web

from exporter.api.budget import ApiBudget
from exporter.api.client import RequestStats, client_for
from exporter.calling_window import CallingHours, parse_calling_window
from exporter.clock import Clock, SystemClock
from exporter.config import Settings, campaign_count, campaigns_for_shard
from exporter.exposition.cache import ExpositionCache, ScrapePart
from exporter.exposition.metrics import (
    BUDGET_FAMILIES,
    BUILD_FAMILIES,
    CONNECTION_FAMILIES,
    CONTENT_TYPE,
    LAG_FAMILIES,
    RELOAD_FAMILIES,
    REQUEST_FAMILIES,
    SHARD_FAMILIES,
    WINDOW_FAMILIES,
    ProcessMetrics,
    campaign_families,
)
from exporter.exposition.render import render_exporter_families
from exporter.exposition.status_page import (
    PAGE_HEADERS,
    BudgetFacts,
    PageFacts,
    QueryError,
    ReloadFacts,
    StatusPages,
    parse_query,
)
from exporter.loops import loop_name
from exporter.memory import MemoryTuning
from exporter.polling.poller import Poller
from exporter.polling.reloader import ConfigReloader, ReloadStatus
from exporter.polling.state import BuildInfo
from exporter.web.connections import ConnectionLimits, guard_connections
from exporter.web.request_policy import name_the_server, refuse_unsupported
from exporter.web.webconfig import WebConfigWatcher, protect

log = logging.getLogger("exporter.server")

SETTINGS = web.AppKey("settings", Settings)
FLAGS: web.AppKey[dict[str, Any]] = web.AppKey("flags")
CLOCK = web.AppKey("clock", Clock)
STATS = web.AppKey("stats", RequestStats)
RELOAD_STATUS = web.AppKey("reload_status", ReloadStatus)
EXPOSITION = web.AppKey("exposition", ExpositionCache)
POLLER = web.AppKey("poller", Poller)
RELOADER = web.AppKey("reloader", ConfigReloader)
BUDGET = web.AppKey("budget", ApiBudget)
STATUS_PAGES = web.AppKey("status_pages", StatusPages)
CALLING_HOURS = web.AppKey("calling_hours", CallingHours)


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
    """Serve the published exposition finished with this scrape's exporter-wide families,
    gzipped when the client accepts it."""
    cache = request.app[EXPOSITION]
    await cache.drop_stale(request.app[CLOCK].monotonic())
    exposition = cache.current
    tail = cache.scrape_tail()
    headers = {"Content-Type": CONTENT_TYPE, "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("Accept-Encoding")):
        headers["Content-Encoding"] = "gzip"
        end = exposition.gzip_tail(tail)
        response = web.StreamResponse(headers=headers)
        response.content_length = len(exposition.gzipped) + len(end)
        await response.prepare(request)
        if request.method != "HEAD":
            await response.write(exposition.gzipped)  # sent as it is: no copy per scrape
            await response.write(end)
        await response.write_eof()
        return response
    response = web.StreamResponse(headers=headers)
    response.content_length = exposition.plain_size + len(tail)
    await response.prepare(request)
    if request.method != "HEAD":
        for chunk in exposition.plain_chunks(tail):
            await response.write(chunk)  # waits while the client is behind: memory stays flat
    await response.write_eof()
    return response


async def handle_healthz(request: web.Request) -> web.Response:
    """The process is alive and serving."""
    return web.Response(text="ok\n")


async def handle_readyz(request: web.Request) -> web.Response:
    """Ready once the first poll round is done (or a request timeout has passed since it began)."""
    if request.app[EXPOSITION].current.ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="waiting for the first poll round\n")


def budget_facts(budget: ApiBudget) -> BudgetFacts:
    """What the status page says of the API budget; held until the reset while it allows no
    request at all before then."""
    spent = budget.allowed_rate() == 0
    held, since = (budget.paused_until, budget.paused_since) if spent else (None, None)
    return BudgetFacts(budget.limit, budget.remaining, budget.reset_at, budget.stretch, held, since)


def reload_facts(status: ReloadStatus) -> ReloadFacts:
    """What the status page says of the configuration in force and a rejected reload."""
    return ReloadFacts(status.last_success_timestamp, status.rejected_since, status.rejected_error)


async def handle_index(request: web.Request) -> web.Response:
    """The status page: every campaign of the published snapshot (never a poll), problems
    first, with the exporter's health on top."""
    try:
        query = parse_query(request.query)
    except QueryError as exc:
        return web.Response(status=400, text=f"{exc}\n", headers=PAGE_HEADERS)
    app = request.app
    settings, budget = app[SETTINGS], app[BUDGET]
    await app[EXPOSITION].drop_stale(app[CLOCK].monotonic())
    snapshot = app[EXPOSITION].snapshot
    hours = app[CALLING_HOURS]
    facts = PageFacts(
        now=app[CLOCK].time(),
        poll_interval_seconds=settings.poll_interval_seconds,
        api_url=settings.api_url,
        metrics_path=settings.telemetry_path,
        budget=budget_facts(budget),
        shard_index=settings.effective_shard_index,
        shard_count=settings.shard_count,
        reload=reload_facts(app[RELOAD_STATUS]),
        stall_after_seconds=settings.stall_after_seconds,
        window_open_since=hours.open_since(),
        calling_window=hours.window.describe(),
    )
    page = await app[STATUS_PAGES].page(snapshot, facts, query)
    return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # a task that died earlier must not keep the session open
            log.exception("background task %s had failed", task.get_name())


async def _poller_context(app: web.Application) -> AsyncIterator[None]:
    settings, clock = app[SETTINGS], app[CLOCK]
    client = client_for(settings, clock, observer=app[STATS], budget=app[BUDGET])
    poller = Poller(
        settings,
        fetcher=client,
        sink=app[EXPOSITION].update,
        campaign_ids=campaigns_for_shard(settings),
        clock=clock,
    )
    app[POLLER] = poller
    memory = MemoryTuning()

    async def apply(campaigns: tuple[str, ...]) -> tuple[int, int]:
        changes = await poller.replace_campaigns(campaigns)
        client.retain(campaigns)  # the URLs of dropped campaigns go with them
        memory.release_free_memory()
        return changes

    flags: dict[str, Any] = app[FLAGS]
    reloader = ConfigReloader(flags, settings.config_file, apply, app[RELOAD_STATUS], clock)
    app[RELOADER] = reloader
    tasks = [
        asyncio.create_task(poller.run(), name="dialnexa-poller"),
        asyncio.create_task(reloader.run(), name="dialnexa-config"),
    ]
    log.info(
        "polling %s every %gs at %s (shard %d of %d)",
        campaign_count(len(poller.campaign_ids)),
        settings.poll_interval_seconds,
        settings.api_url,
        settings.effective_shard_index,
        settings.shard_count,
    )
    try:
        yield
    finally:
        await _stop(tasks)
        await client.close()


def _owners(app: web.Application, settings: Settings, clock: Clock) -> tuple[ScrapePart, ...]:
    """Make the owners of the exporter-wide families (kept in the app), and the scrape-time
    renderers that read each of them."""
    app[STATS] = stats = RequestStats()
    app[RELOAD_STATUS] = reload_status = ReloadStatus(last_success_timestamp=clock.time())
    app[CALLING_HOURS] = hours = CallingHours(
        parse_calling_window(settings.calling_window), clock.time
    )

    def planned_rate() -> float:
        poller = app.get(POLLER)
        return poller.planned_rate if poller is not None else 0.0

    app[BUDGET] = budget = ApiBudget(
        clock,
        planned_rate=planned_rate,
        pacing=settings.api_budget_pacing,
        share=settings.api_budget_share,
        reserve=settings.api_budget_reserve,
    )
    return (
        partial(render_exporter_families, BUILD_FAMILIES, BuildInfo(event_loop=loop_name())),
        partial(render_exporter_families, REQUEST_FAMILIES, stats),
        partial(render_exporter_families, SHARD_FAMILIES, settings),
        partial(render_exporter_families, WINDOW_FAMILIES, hours),
        partial(render_exporter_families, RELOAD_FAMILIES, reload_status),
        partial(render_exporter_families, BUDGET_FAMILIES, budget),
        ProcessMetrics().text,
    )


def _lag_part(app: web.Application, clock: Clock) -> ScrapePart:
    """The polling lag, from the published snapshot at the scrape's time: it grows even while
    nothing is published."""

    def render() -> str:
        return render_exporter_families(LAG_FAMILIES, app[EXPOSITION].snapshot.lag(clock.time()))

    return render


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
    app[CLOCK] = clock = clock or SystemClock()
    # Odd requests refused, then (outermost) every answer tracked by the connection guard,
    # which the CLI serves the app through (connections.start_guarded_sites).
    app.middlewares.insert(0, refuse_unsupported)
    guard = guard_connections(
        app, ConnectionLimits.from_settings(settings), monotonic=clock.monotonic
    )
    scrape_parts: tuple[ScrapePart, ...] = (
        *_owners(app, settings, clock),
        partial(render_exporter_families, CONNECTION_FAMILIES, guard),
        _lag_part(app, clock),
    )
    families = campaign_families(settings.status_series)
    app[EXPOSITION] = ExpositionCache(scrape_parts, tune_memory, families)
    app[STATUS_PAGES] = StatusPages()
    app.router.add_get(settings.telemetry_path, handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/", handle_index)
    app.cleanup_ctx.append(_poller_context)
    app.on_response_prepare.append(name_the_server)
    if settings.web_config_file is not None:
        # TLS, basic auth and headers from DIALNEXA_WEB_CONFIG_FILE; the CLI takes the TLS
        # context from the app (webconfig.listening_context) when it opens the site.
        watcher = WebConfigWatcher(settings.web_config_file, monotonic=clock.monotonic)
        protect(app, watcher)
    return app
