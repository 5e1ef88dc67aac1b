"""The due queue: order, coalescing horizon, Retry-After deadlines, and stale entries."""

from __future__ import annotations

from exporter.polling.due_queue import DueQueue
from exporter.polling.state import CampaignState


def queued(*due: float) -> tuple[DueQueue, list[CampaignState]]:
    """A queue holding one campaign per due time, named c0, c1, ..."""
    queue = DueQueue()
    states = [CampaignState(f"c{n}", next_due=when) for n, when in enumerate(due)]
    for state in states:
        queue.schedule(state)
    return queue, states


def ids(states: list[CampaignState]) -> list[str]:
    """Campaign ids, in order."""
    return [state.campaign_id for state in states]


def test_take_hands_out_what_is_due_by_the_horizon_earliest_first() -> None:
    """Campaigns due by the horizon come out in due order; later ones stay queued."""
    queue, _ = queued(30.0, 10.0, 20.0, 100.0)
    taken, more = queue.take(horizon=35.0, now=10.0, limit=10)
    assert ids(taken) == ["c1", "c2", "c0"]
    assert not more
    assert queue.next_due() == 100.0


def test_take_stops_at_the_limit_and_says_more_are_due() -> None:
    """A slice of ``limit`` campaigns, and ``more`` while others are due by the horizon."""
    queue, _ = queued(1.0, 2.0, 3.0)
    taken, more = queue.take(horizon=5.0, now=5.0, limit=2)
    assert (ids(taken), more) == (["c0", "c1"], True)
    taken, more = queue.take(horizon=5.0, now=5.0, limit=2)
    assert (ids(taken), more) == (["c2"], False)


def test_a_retry_after_deadline_is_never_pulled_forward() -> None:
    """A campaign due within the horizon but held by Retry-After until later than now stays
    queued at its deadline, and does not count as more due."""
    queue, states = queued(10.0, 10.0)
    states[1].not_before = 12.0
    queue.schedule(states[1])
    taken, more = queue.take(horizon=13.0, now=10.0, limit=10)
    assert (ids(taken), more) == (["c0"], False)
    assert queue.next_due() == 12.0
    taken, _ = queue.take(horizon=13.0, now=12.0, limit=10)
    assert ids(taken) == ["c1"]


def test_rescheduling_leaves_a_stale_entry_that_is_skipped() -> None:
    """Only a campaign's latest entry counts: the earlier one is skipped when met."""
    queue, states = queued(5.0)
    states[0].next_due = 50.0
    queue.schedule(states[0])
    assert len(queue) == 2  # the old entry is still in the heap...
    assert queue.next_due() == 50.0  # ...but never counts
    taken, _ = queue.take(horizon=60.0, now=60.0, limit=10)
    assert ids(taken) == ["c0"]
    assert queue.next_due() is None


def test_queued_and_removed_campaigns_are_not_handed_out() -> None:
    """A campaign a worker holds, or a reload removed, is skipped; compact drops it."""
    queue, states = queued(1.0, 2.0, 3.0)
    states[0].queued = True
    states[1].removed = True
    taken, _ = queue.take(horizon=10.0, now=10.0, limit=10)
    assert ids(taken) == ["c2"]
    queue, states = queued(1.0, 2.0, 3.0)
    states[1].removed = True
    queue.compact()
    assert len(queue) == 2


def test_a_taken_campaign_is_out_of_the_queue_until_scheduled() -> None:
    """Taking a campaign invalidates its entry; scheduling it again makes it due again."""
    queue, states = queued(1.0)
    taken, _ = queue.take(horizon=1.0, now=1.0, limit=1)
    assert taken == states
    assert not queue.has_due(100.0)
    states[0].next_due = 7.0
    queue.schedule(states[0])
    assert queue.has_due(7.0)
    assert not queue.has_due(6.9)
