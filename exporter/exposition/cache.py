"""The /metrics body: each snapshot rendered and gzipped once, finished at each scrape with the
exporter-wide families measured then (request counts, process metrics, reload status...)."""

from __future__ import annotations

import asyncio
import gc
import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, cast

from zlib_ng import zlib_ng

from exporter.exposition.metrics import CAMPAIGN_FAMILIES, CampaignFamily
from exporter.exposition.render import CampaignRenderer
from exporter.memory import MemoryTuning
from exporter.polling.state import Snapshot

log = logging.getLogger("exporter.exposition")

# gzip level of the /metrics body, compressed by zlib-ng: its level 2 compresses the exposition
# about 2.5 times as fast as zlib's level 1, a few percent smaller. The body is compressed once
# per publication, every campaign's lines each time: with zlib's level 1 that was a fifth of the
# CPU the exporter adds to a fetch (docs/performance.md, "CPU per fetch").
GZIP_LEVEL = 2
# Allocations (net, of objects the garbage collector tracks) between two young collections;
# Python's default is 700. Each fetch makes and drops hundreds of short-lived objects, so at
# 700 the collector runs every few fetches to find almost nothing; at this threshold most of
# them are gone before it looks.
GC_YOUNG_THRESHOLD = 10_000
# Compressed bytes decompressed per chunk of a plain /metrics answer (a few hundred KiB out).
PLAIN_CHUNK_INPUT = 16 * 1024

# A scrape drops stale data itself only this long after its deadline: until then the poller,
# which wakes at that deadline, is expected to publish the snapshot without it.
STALE_GRACE_SECONDS = 2.0

ScrapePart = Callable[[], str]


class Exposition:
    """One published snapshot's text, kept gzipped only, open-ended: each scrape appends the
    exporter-wide part it measures and closes the gzip stream on a copy of the compressor.

    Prometheus always asks for gzip. The plain text, over ten times larger, is never held
    whole: a client that wants it gets it decompressed chunk by chunk as it reads.
    """

    def __init__(
        self, gzipped: bytes, compressor: Compressor, plain_size: int, ready: bool
    ) -> None:
        self.gzipped = gzipped  # a gzip stream flushed to a byte boundary, not yet finished
        self._compressor = compressor  # its state at that point (never used, only copied)
        self.plain_size = plain_size
        self.ready = ready

    def gzip_tail(self, tail: bytes) -> bytes:
        """What follows ``gzipped`` in the body for ``tail``: the stream's end, compressed on a
        copy of the compressor (the published part is never copied or compressed again)."""
        finisher = self._compressor.copy()
        return finisher.compress(tail) + finisher.flush()

    def plain_chunks(self, tail: bytes) -> Iterator[bytes]:
        """The uncompressed body, in order, a chunk at a time, ``tail`` last."""
        decompressor = zlib.decompressobj(wbits=31)  # the gzip container
        data = memoryview(self.gzipped)
        for start in range(0, len(data), PLAIN_CHUNK_INPUT):
            chunk = decompressor.decompress(data[start : start + PLAIN_CHUNK_INPUT])
            if chunk:
                yield chunk
        if tail:
            yield tail


class Compressor(Protocol):
    """A deflate compressor (zlib-ng's has ``copy``, which its type stubs leave out)."""

    def compress(self, data: bytes, /) -> bytes:
        """Compress ``data``, returning what is ready of the output."""

    def flush(self, mode: int = zlib.Z_FINISH, /) -> bytes:
        """The rest of the output for ``mode``."""

    def copy(self) -> Compressor:
        """An independent compressor in this one's state."""


def open_gzip() -> Compressor:
    """A compressor writing one gzip member."""
    compressor = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, 31)  # 31: the gzip container
    return cast(Compressor, compressor)


class ExpositionCache:
    """Turns each published snapshot into its gzipped text once; scrapes only finish it."""

    def __init__(
        self,
        scrape_parts: Sequence[ScrapePart] = (),
        tune_memory: bool = False,
        families: Sequence[CampaignFamily] = CAMPAIGN_FAMILIES,
    ) -> None:
        self._renderer = CampaignRenderer(families)
        self._scrape_parts = tuple(scrape_parts)
        self._memory = MemoryTuning() if tune_memory else None
        if self._memory is not None:
            self._memory.apply()
            # Modules, settings and the campaign list live for good: out of the collector's
            # sight before the first round, whose collections then only see new objects.
            gc.collect()
            gc.freeze()
            _, older, oldest = gc.get_threshold()
            gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
        compressor = open_gzip()
        empty = self._renderer.render(Snapshot())
        gzipped = compressor.compress(empty) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._current = Exposition(gzipped, compressor, len(empty), ready=False)
        self._snapshot = Snapshot()
        self._lock = asyncio.Lock()  # one rendering at a time: the newest snapshot wins

    @property
    def current(self) -> Exposition:
        """The latest rendered exposition."""
        return self._current

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot ``current`` was rendered from (the status page shows what /metrics does)."""
        return self._snapshot

    async def drop_stale(self, now: float) -> None:
        """Publish the snapshot without its stale data when it holds data past its deadline at
        monotonic ``now`` (plus STALE_GRACE_SECONDS): the poller drops stale data itself and
        publishes, so this happens only when it publishes nothing any more (a wedged poll loop).
        """
        deadline = self._snapshot.fresh_until
        if deadline is None or now < deadline + STALE_GRACE_SECONDS or self._lock.locked():
            return  # fresh, or a publication is being rendered: a scrape never waits for one
        async with self._lock:
            snapshot = self._snapshot
            log.warning(
                "campaign data past its stale deadline and nothing published since: dropping "
                "it when serving (the poll loop may be stuck)"
            )
            await self._render(snapshot.without_stale_data(now))

    def scrape_tail(self) -> bytes:
        """The exporter-wide families, measured now, as the end of a /metrics body."""
        return "".join([part() for part in self._scrape_parts]).encode()

    async def update(self, snapshot: Snapshot) -> None:
        """Publish ``snapshot``: render and compress it (see ``_render``)."""
        async with self._lock:
            await self._render(snapshot)

    async def _render(self, snapshot: Snapshot) -> None:
        """Render and compress ``snapshot`` in slices, so that the event loop keeps serving.

        Each chunk is compressed as soon as it is made, so the whole text (over ten megabytes
        at ten thousand campaigns) never exists in one piece, nor all its chunks at once.
        """
        compressor = open_gzip()
        compressed: list[bytes] = []
        size = 0

        def write(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            compressed.append(compressor.compress(chunk))

        for _ in self._renderer.render_steps(snapshot, write):
            await asyncio.sleep(0)
        compressed.append(compressor.flush(zlib.Z_SYNC_FLUSH))
        if self._memory is not None and snapshot.ready and not self._current.ready:
            # What the first round made (campaign states, connections, caches) lives for
            # good too: moving it out of the collector's sight shortens every later full
            # collection, which at ten thousand campaigns otherwise stalls the loop.
            gc.freeze()
        self._current = Exposition(b"".join(compressed), compressor, size, ready=snapshot.ready)
        self._snapshot = snapshot
        if self._memory is not None:
            self._memory.release_free_memory()
