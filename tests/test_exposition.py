"""The published exposition: rendered and gzipped once per snapshot, finished per scrape."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib

import pytest

from exporter.api.models import Campaign
from exporter.exposition.cache import STALE_GRACE_SECONDS, ExpositionCache
from exporter.polling.state import CampaignView, Snapshot

VIEWS = tuple(
    CampaignView(f"cmp_{n}", Campaign(f"cmp_{n}", total_leads=n), True, 1.0) for n in range(300)
)


async def test_each_scrape_finishes_the_stream_with_its_own_tail() -> None:
    """The published part is compressed once; each scrape appends what it measured and the
    result is one valid gzip member equal to the plain body."""
    tails = iter([b"# scrape one\n", b"# scrape two, longer\n"])
    cache = ExpositionCache([lambda: next(tails).decode()])
    await cache.update(Snapshot(VIEWS, ready=True))
    exposition = cache.current
    assert exposition.ready
    for expected in (b"# scrape one\n", b"# scrape two, longer\n"):
        tail = cache.scrape_tail()
        assert tail == expected
        body = exposition.gzipped + exposition.gzip_tail(tail)
        decompressor = zlib.decompressobj(wbits=31)
        whole = decompressor.decompress(body)
        assert decompressor.eof  # one gzip member, finished
        assert decompressor.unused_data == b""
        assert whole == b"".join(exposition.plain_chunks(tail))
        assert whole.endswith(expected)
        assert len(whole) == exposition.plain_size + len(tail)
    assert b'dialnexa_campaign_total_leads{campaign_id="cmp_299"} 299' in gzip.decompress(
        exposition.gzipped + exposition.gzip_tail(b"")
    )


async def test_plain_chunks_come_in_bounded_pieces() -> None:
    """The plain body is handed out decompressed a piece at a time, never whole."""
    cache = ExpositionCache()
    await cache.update(Snapshot(VIEWS * 10))
    chunks = list(cache.current.plain_chunks(b""))
    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) < cache.current.plain_size


async def test_before_the_first_publication_the_body_is_empty_but_valid() -> None:
    """A scrape before any round gets no campaign, zero configured, and the scrape's part."""
    cache = ExpositionCache([lambda: "x_total 1\n"])
    assert not cache.current.ready
    body = gzip.decompress(
        cache.current.gzipped + cache.current.gzip_tail(cache.scrape_tail())
    ).decode()
    assert "dialnexa_exporter_campaigns_configured 0\n" in body
    assert "campaign_id" not in body
    assert body.endswith("x_total 1\n")


def _fresh_until(deadline: float, cid: str = "cmp_0") -> CampaignView:
    """A campaign up, with data shown until monotonic ``deadline``."""
    return CampaignView(cid, Campaign(cid, total_leads=7), True, 1.0, fresh_until=deadline)


async def test_a_scrape_drops_data_the_poller_left_past_its_deadline_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Data past its deadline (plus the poller's grace) in the published snapshot is dropped by
    the scrape, campaign_up 0 with it; a flood of scrapes does it once (one render, one log
    line); before the grace, nothing changes."""
    cache = ExpositionCache()
    published = Snapshot((_fresh_until(100.0), _fresh_until(500.0, "cmp_1")), fresh_until=100.0)
    await cache.update(published)
    await cache.drop_stale(100.0 + STALE_GRACE_SECONDS - 0.1)
    assert cache.snapshot is published
    with caplog.at_level(logging.WARNING, logger="exporter.exposition"):
        await asyncio.gather(*[cache.drop_stale(100.0 + STALE_GRACE_SECONDS) for _ in range(200)])
    assert len(caplog.records) == 1
    assert "poll loop may be stuck" in caplog.records[0].getMessage()
    body = gzip.decompress(cache.current.gzipped + cache.current.gzip_tail(b"")).decode()
    assert 'dialnexa_exporter_campaign_up{campaign_id="cmp_0"} 0' in body
    assert 'dialnexa_campaign_total_leads{campaign_id="cmp_0"}' not in body
    assert 'dialnexa_exporter_campaign_up{campaign_id="cmp_1"} 1' in body
    assert cache.snapshot.fresh_until == 500.0


async def test_a_scrape_never_replaces_a_newer_snapshot_of_the_poller() -> None:
    """The poller publishing while a scrape would drop stale data: the poller's snapshot, the
    newer one, is what stays served."""
    cache = ExpositionCache()
    await cache.update(Snapshot((*VIEWS, _fresh_until(100.0, "cmp_x")), fresh_until=100.0))
    newer = Snapshot((*VIEWS, _fresh_until(900.0, "cmp_x")), fresh_until=900.0)
    await asyncio.gather(cache.update(newer), cache.drop_stale(200.0))
    assert cache.snapshot is newer
