"""Which campaigns are due for a fetch, earliest first, without walking every campaign."""

from __future__ import annotations

import heapq
import itertools

from exporter.polling.state import CampaignState


class DueQueue:
    """Campaigns waiting for their next fetch, in a heap ordered by when they are due.

    **Entries.** ``schedule(state)`` pushes ``(due, seq, state)``, where ``due`` is the later of
    ``state.next_due`` and ``state.not_before``, and records ``seq`` in ``state.due_seq``.
    Rescheduling pushes a new entry; the old one is not searched for and removed (that would be
    a walk of the heap) but left behind, and skipped when it reaches the top (lazy deletion).

    **Which entries are live.** An entry counts only while all of these hold:

    - its ``seq`` is the campaign's ``due_seq`` (no later ``schedule`` superseded it);
    - the campaign is not ``queued`` (a worker holds it, and reschedules it when done);
    - the campaign is not ``removed`` (a configuration reload dropped it).

    Every other entry is stale and discarded when met at the top of the heap.

    **Coalescing.** ``take(horizon, now, limit)`` hands out the live campaigns due by
    ``horizon``, which the poller sets a little past ``now`` (a tenth of the poll interval), so
    that jitter does not split a round into many tiny ones. A campaign whose Retry-After
    deadline (``not_before``) is still ahead of ``now`` is never pulled forward: it goes back
    into the heap at that deadline.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, CampaignState]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Entries in the heap, stale ones included (for tests and memory accounting)."""
        return len(self._heap)

    def schedule(self, state: CampaignState) -> None:
        """(Re)enter a campaign at its next fetch time; any earlier entry of it becomes stale."""
        state.due_seq = seq = next(self._seq)
        heapq.heappush(self._heap, (max(state.next_due, state.not_before), seq, state))

    @staticmethod
    def _live(entry: tuple[float, int, CampaignState]) -> bool:
        _, seq, state = entry
        return state.due_seq == seq and not state.queued and not state.removed

    def _drop_stale_top(self) -> None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)

    def take(self, horizon: float, now: float, limit: int) -> tuple[list[CampaignState], bool]:
        """Up to ``limit`` live campaigns due by ``horizon``, earliest first, out of the queue;
        and whether more are due by then (campaigns held back by Retry-After do not count)."""
        heap = self._heap
        taken: list[CampaignState] = []
        held: list[CampaignState] = []
        while heap and heap[0][0] <= horizon and len(taken) < limit:
            _, seq, state = heapq.heappop(heap)
            if state.due_seq != seq or state.queued or state.removed:  # not live (_live)
                continue
            if state.not_before > now:  # a Retry-After deadline is never pulled forward
                held.append(state)
                continue
            state.due_seq = -1  # out of the queue until scheduled again
            taken.append(state)
        more = self.has_due(horizon)
        for state in held:
            self.schedule(state)
        return taken, more

    def has_due(self, horizon: float) -> bool:
        """True when a live campaign is due by ``horizon``."""
        self._drop_stale_top()
        return bool(self._heap) and self._heap[0][0] <= horizon

    def next_due(self) -> float | None:
        """When the earliest live campaign is due, or None when none waits."""
        self._drop_stale_top()
        return self._heap[0][0] if self._heap else None

    def compact(self) -> None:
        """Drop every stale entry at once (after a reload removed many campaigns)."""
        self._heap = [entry for entry in self._heap if self._live(entry)]
        heapq.heapify(self._heap)
