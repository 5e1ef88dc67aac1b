"""``dialnexa-exporter check``: the configuration as start-up reads it, and with ``--online``
every campaign fetched once, with the exporter's own client, limits and timeouts."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Protocol, TextIO

from exporter.api.client import DialNexaClient, FetchError, client_for, proxy_for
from exporter.api.models import Campaign
from exporter.calling_window import parse_calling_window
from exporter.clock import SystemClock
from exporter.config import Settings, campaign_count, campaigns_for_shard, env_name
from exporter.logformat import printable
from exporter.polling.outcome import error_reason
from exporter.web.webconfig import WebConfigWatcher

log = logging.getLogger(__name__)

# Exit statuses: every campaign answered / some failed (a configuration error is 2, from main).
OK = 0
SOME_FAILED = 1
# What a campaign line says of a fetch that raised something no FetchError stands for (a bug).
UNEXPECTED = "unexpected_error"


class Fetcher(Protocol):
    """What the check fetches with: the exporter's client (tests wrap it)."""

    async def fetch_campaign(self, campaign_id: str) -> Campaign:
        """One campaign's record, or a FetchError."""


def summary(settings: Settings) -> list[str]:
    """What the exporter would run with, one fact per line; never the key itself."""
    mine = campaigns_for_shard(settings)
    key_source = (
        f"file {settings.api_key_file}"
        if settings.api_key_file is not None
        else env_name("api_key")
        if settings.api_key is not None
        else "none"
    )
    proxy = proxy_for(settings.api_url)  # a proxy variable that cannot work fails here too
    through = f", through the proxy {proxy.with_user(None)}" if proxy is not None else ""
    return [
        f"configuration OK: {campaign_count(len(settings.campaign_ids))} configured, "
        f"{len(mine)} in shard {settings.effective_shard_index} of {settings.shard_count}",
        f"  API {settings.api_url} (key from {key_source}){through}",
        f"  poll every {settings.poll_interval_seconds:g}s "
        f"(completed/cancelled every {settings.terminal_poll_interval_seconds:g}s), "
        f"request timeout {settings.request_timeout_seconds:g}s, "
        f"{settings.max_concurrency} in flight at most",
        f"  data dropped after {settings.stale_after_seconds:g}s without a success",
        f"  calling window {parse_calling_window(settings.calling_window).describe()}, "
        f"stalled after {settings.stall_after_seconds:g}s without a completed call",
        f"  serving {settings.telemetry_path} on {settings.listen_address}"
        + web_config_summary(settings.web_config_file),
    ]


def web_config_summary(path: Path | None) -> str:
    """What the web config file at ``path`` sets up, loaded by what start-up loads it with
    (a ConfigError names what is wrong); empty without one. Never a user's password hash."""
    if path is None:
        return ""
    config = WebConfigWatcher(path).config  # parsed, and its certificate and key loaded
    parts = []
    if config.tls is not None:
        parts.append("TLS")
    if config.users:
        parts.append(
            f"basic auth for {len(config.users)} user{'s' if len(config.users) > 1 else ''}"
        )
    return f" with {path} ({', '.join(parts) or 'plain HTTP, no basic auth'})"


class Result(NamedTuple):
    """One campaign's answer: its record, or why it could not be fetched."""

    campaign_id: str
    record: Campaign | None
    reason: str | None = None
    status: int | None = None
    detail: str = ""


def describe(result: Result) -> str:
    """One line for a campaign: its status and counts, or the reason label and HTTP code."""
    if result.record is None:
        code = f"HTTP {result.status}" if result.status is not None else "no HTTP answer"
        return f"{result.campaign_id}  FAILED  {result.reason} ({code}): {result.detail}"
    record = result.record
    status = record.status.value if record.status is not None else "no status"
    if record.total_leads is not None and record.completed_calls is not None:
        counts = f"{record.completed_calls} of {record.total_leads} calls completed"
        if record.pending_calls is not None:
            counts += f", {record.pending_calls} pending"
    else:
        counts = "no counters in the record"
    name = f" {record.name!r}" if record.name else ""
    return f"{result.campaign_id}  ok  {status}{name}: {counts}"


async def _fetch_one(client: Fetcher, campaign_id: str) -> Result:
    try:
        record = await client.fetch_campaign(campaign_id)
    except FetchError as exc:
        return Result(campaign_id, None, error_reason(exc).value, exc.status, str(exc))
    except Exception as exc:  # a bug: the other campaigns' lines and the summary still print
        log.debug("unexpected error fetching campaign %s", campaign_id, exc_info=True)
        return Result(campaign_id, None, UNEXPECTED, None, f"{type(exc).__name__}: {exc}")
    return Result(campaign_id, record)


async def fetch_all(settings: Settings, client: Fetcher | None = None) -> list[Result]:
    """Every campaign of this shard fetched once, at most max_concurrency at a time, with
    ``client`` or else the exporter's own (closed after)."""
    own: DialNexaClient | None = None
    if client is None:
        client = own = client_for(settings, SystemClock())
    try:
        gate = asyncio.Semaphore(settings.max_concurrency)

        async def one(campaign_id: str) -> Result:
            async with gate:
                return await _fetch_one(client, campaign_id)

        return list(await asyncio.gather(*(one(cid) for cid in campaigns_for_shard(settings))))
    finally:
        if own is not None:
            await own.close()


async def run_check(
    settings: Settings, *, online: bool, out: TextIO, client: Fetcher | None = None
) -> int:
    """Print the summary (and with ``online`` a line per campaign); the exit status. Every
    line is ``printable``: nothing the API sent can drive the terminal."""
    for line in summary(settings):
        print(printable(line), file=out)
    if not online:
        return OK
    results = await fetch_all(settings, client)
    for result in results:
        print(printable(describe(result)), file=out)
    failed = Counter(r.reason for r in results if r.record is None)
    answered = len(results) - sum(failed.values())
    line = f"{campaign_count(len(results))} fetched: {answered} answered"
    if failed:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(failed.items()))
        line += f", {sum(failed.values())} failed ({reasons})"
    print(line, file=out, flush=True)
    return SOME_FAILED if failed else OK
