"""When each campaign's data goes stale, and dropping it then, without walking every campaign."""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable

from exporter.api.models import Campaign
from exporter.polling.state import CampaignState

log = logging.getLogger("exporter.staleness")


class StalenessTracker:
    """Drops a campaign's data once it has gone ``limit(record)`` seconds without a success
    (and with it the campaign's ``up``: data that old does not count as fetched).

    A heap of ``(deadline, seq, state)`` with lazy deletion, like the due queue: ``track`` pushes
    an entry only when the campaign's deadline moves earlier than the one it has
    (``state.stale_at``); a later success does not push again but is noticed when the entry
    falls due, which then re-enters the campaign at its new deadline. An entry whose deadline is
    no longer the campaign's ``stale_at`` is stale and skipped; so is one of a campaign that a
    reload removed or whose data is already gone (after a 404).
    """

    def __init__(self, limit: Callable[[Campaign | None], float]) -> None:
        self._limit = limit
        self._heap: list[tuple[float, int, CampaignState]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Entries in the heap, stale ones included."""
        return len(self._heap)

    def track(self, state: CampaignState) -> None:
        """Make sure the campaign is checked no later than its data's deadline."""
        if state.record is None or state.last_success_mono is None:
            return
        deadline = state.last_success_mono + self._limit(state.record)
        if state.stale_at is None or deadline < state.stale_at:
            state.stale_at = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), state))

    def next_deadline(self) -> float | None:
        """The earliest moment a campaign's data may go stale, or None."""
        heap = self._heap
        while heap and heap[0][2].stale_at != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> int:
        """Drop the data of every campaign past its deadline at ``now``; how many went."""
        dropped = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, state = heapq.heappop(heap)
            if state.stale_at != deadline:
                continue  # superseded by an earlier entry
            state.stale_at = None
            if state.removed or state.record is None or state.last_success_mono is None:
                continue
            silent = now - state.last_success_mono
            if silent < self._limit(state.record):
                self.track(state)  # fetched since: a later deadline
                continue
            log.warning(
                "campaign %s: no successful fetch for %.0fs, dropping its series",
                state.campaign_id,
                silent,
            )
            state.went_stale()
            dropped += 1
        return dropped

    def compact(self) -> None:
        """Drop the entries of campaigns a reload removed (returns their memory at once)."""
        self._heap = [entry for entry in self._heap if not entry[2].removed]
        heapq.heapify(self._heap)
