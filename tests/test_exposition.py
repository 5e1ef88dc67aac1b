"""The published exposition: rendered and gzipped once per snapshot, finished per scrape."""

from __future__ import annotations

import gzip
import zlib

from exporter.api.models import Campaign
from exporter.exposition.cache import ExpositionCache
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
