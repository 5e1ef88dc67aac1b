"""Progress of each campaign: when its completed calls last moved, since when it is dialling,
and its recent completion rate, updated in O(1) from each fetched record.

Progress is completed_calls moving, as DialNexaCampaignStalled judges it (``changes()`` of that
series); pending_calls only tells what is left. The rate is an exponentially weighted average
of the pace between two moves, weighted by the time each covers with a time constant of
RATE_TAU_SECONDS (the 5 minutes of the rules' ``deriv5m``): a few numbers per campaign, no
history kept.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from exporter.api.models import Campaign, CampaignStatus

RATE_TAU_SECONDS = 300.0
# The default stall threshold (DIALNEXA_STALL_AFTER_SECONDS), the stall alert's 15m window.
DEFAULT_MAX_GAP_SECONDS = 900.0
DIALLING = frozenset({CampaignStatus.ACTIVE, CampaignStatus.RUNNING})


class Progress(NamedTuple):
    """A campaign's progress as of its latest fetched record; times are Unix times.

    ``moved_at`` is when completed_calls last changed (its first sighting until then);
    ``dialling_since`` when the campaign last became active or running (None while not);
    ``rate`` completed calls per second at the recent pace (None until two moves were seen
    close enough together to measure one); ``quiet_since`` since when it has been dialling
    without a completed call, the later of the two (``inf`` while not dialling): kept so that
    the status page compares one number per campaign. Made by ``make``.
    """

    completed: int | None
    moved_at: float
    dialling_since: float | None
    rate: float | None
    quiet_since: float

    @classmethod
    def make(
        cls,
        completed: int | None,
        moved_at: float,
        dialling_since: float | None,
        rate: float | None,
    ) -> Progress:
        """The progress of these facts, ``quiet_since`` derived from them."""
        quiet = math.inf if dialling_since is None else max(moved_at, dialling_since)
        return cls(completed, moved_at, dialling_since, rate, quiet)


def first_progress(record: Campaign, wall: float) -> Progress:
    """The progress known from a campaign's first record."""
    dialling = wall if record.status in DIALLING else None
    return Progress.make(record.completed_calls, wall, dialling, None)


def next_progress(previous: Progress, record: Campaign, wall: float, max_gap: float) -> Progress:
    """``previous`` moved on by a newer ``record`` fetched at ``wall``.

    A pace is measured between two moves while dialling; a gap longer than ``max_gap`` (the
    stall threshold: a stop, a night outside the calling window, a pause) measures no pace, so
    that the rate stays the pace of calling, not of calling and waiting.
    """
    status = record.status
    dialling_since = previous.dialling_since
    if status not in DIALLING:
        dialling_since = None
    elif dialling_since is None:
        dialling_since = wall
    completed = record.completed_calls
    if completed == previous.completed:
        if dialling_since == previous.dialling_since:
            return previous
        return Progress.make(previous.completed, previous.moved_at, dialling_since, previous.rate)
    rate = previous.rate
    if completed is None or previous.completed is None or completed < previous.completed:
        rate = None  # counters gone, new, or set back: the pace starts over
    else:
        since = previous.moved_at
        if previous.dialling_since is None:
            since = wall  # it only now started dialling: no pace to measure yet
        elif previous.dialling_since > since:
            since = previous.dialling_since
        gap = wall - since
        if 0 < gap <= max_gap and status in DIALLING:
            pace = (completed - previous.completed) / gap
            weight = -math.expm1(-gap / RATE_TAU_SECONDS)
            rate = pace if rate is None else rate + weight * (pace - rate)
    # Inline rather than through make(): this is the path of every fetch whose counts moved.
    quiet = math.inf if dialling_since is None else max(wall, dialling_since)
    return Progress(completed, wall, dialling_since, rate, quiet)


def remaining_calls(record: Campaign) -> int | None:
    """Calls left: pending_calls, else total_leads less completed_calls; None when unknown."""
    if record.pending_calls is not None:
        return record.pending_calls
    if record.total_leads is not None and record.completed_calls is not None:
        return max(0, record.total_leads - record.completed_calls)
    return None
