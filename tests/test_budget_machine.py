"""The API budget as a state machine: any sequence of rate-limit answers (every dialect the
exporter reads, absurd values among them), requests and clock moves.

Proved after every step, against a model that reads the headers on its own:

- no request is held past the announced reset, nor past MAX_RESET_SECONDS after the answer
  that announced it: polling never stops longer than that;
- a held request waits exactly the exported ``wait_seconds`` (its wake-up on the clock is now
  plus that figure; ``paused_until`` says the same as a Unix time), and a new answer that
  changes the budget makes it judge its wait again at once;
- held requests imply a stretch factor above 1; a stretch factor of 1 holds nothing;
- with not one request to spend before the reset, the wait is exactly until the reset;
- ``remaining``, ``limit`` and the reset time are the last readable ones announced.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from email.utils import formatdate

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from multidict import CIMultiDict

from exporter.api.budget import MAX_RESET_SECONDS, MAX_STRETCH, ApiBudget
from tests.helpers import FakeClock

SHARE, RESERVE = 0.5, 0.1
TOLERANCE = 1e-3  # seconds: float sums of Unix times near 1.7e9
# Neither a count nor a reset: the header is ignored.
ABSURD = ("-5", "-0", "NaN", "inf", "1e300", "1.5e3", "0x1f", "9" * 16, "9" * 300, "", "lots", "²")


@dataclass(frozen=True)
class Reset:
    """A reset as the API may send it: ``kind`` and a number, turned into text at send time."""

    kind: str  # delta, epoch, epoch_fraction, ms, date, absurd
    number: int = 0
    absurd: str = ""

    def text(self, wall: float) -> str:
        """The header value, the Unix time at sending being ``wall``."""
        if self.kind == "delta":
            return str(self.number)
        if self.kind == "epoch":
            return str(int(wall) + self.number)
        if self.kind == "epoch_fraction":
            return f"{int(wall) + self.number}.125"
        if self.kind == "ms":
            return str(int(wall * 1000) + self.number)
        if self.kind == "date":
            return formatdate(int(wall) + self.number, usegmt=True)
        return self.absurd

    def unix(self, wall: float) -> float | None:
        """The Unix time this reset means, as the model reads it; None when unreadable."""
        if self.kind == "delta":
            return wall + self.number
        if self.kind in ("epoch", "date"):
            return float(int(wall) + self.number)
        if self.kind == "epoch_fraction":
            return int(wall) + self.number + 0.125
        if self.kind == "ms":
            return (int(wall * 1000) + self.number) / 1000
        return None


@dataclass(frozen=True)
class Answer:
    """One answer's rate-limit headers, before they are written in a dialect."""

    dialect: str  # x, ietf, lower, structured, structured_old
    limit: int | str | None  # an int is sent as its digits, a str as it is
    remaining: int | str | None
    reset: Reset | None
    retry_after: str | None

    def headers(self, wall: float) -> CIMultiDict[str]:
        """The headers as the API sends them."""
        limit, remaining = _text(self.limit), _text(self.remaining)
        reset = None if self.reset is None else self.reset.text(wall)
        found: CIMultiDict[str] = CIMultiDict()
        if self.retry_after is not None:
            found["Retry-After"] = self.retry_after
        if self.dialect in ("x", "ietf", "lower"):
            prefix = {"x": "X-RateLimit-", "ietf": "RateLimit-", "lower": "x-ratelimit-"}
            for name, text in (("Limit", limit), ("Remaining", remaining), ("Reset", reset)):
                if text is not None:
                    found[prefix[self.dialect] + name.lower()] = text
        elif self.dialect == "structured":
            parts = ['"default"'] + [
                f"{key}={text}" for key, text in (("r", remaining), ("t", reset)) if text
            ]
            found["RateLimit"] = ";".join(parts)
            if limit:
                found["RateLimit-Policy"] = f'"default";q={limit};w=60'
        else:
            pairs = (("limit", limit), ("remaining", remaining), ("reset", reset))
            found["RateLimit"] = ", ".join(f"{key}={text}" for key, text in pairs if text)
        return found


def _text(value: int | str | None) -> str | None:
    return str(value) if isinstance(value, int) else value


def _count(value: int | str | None) -> int | None:
    """The model's reading of a limit or a count."""
    return value if isinstance(value, int) else None


ODD_COUNTS = st.one_of(
    st.none(),
    st.integers(0, 10**15 - 1),
    st.sampled_from([a for a in ABSURD if a and "²" not in a]),
)
LIMITS = st.one_of(st.integers(1, 20), st.integers(1, 1200), st.integers(1, 1200), ODD_COUNTS)
# Nearly spent, some left, plenty: each as likely as the odd values.
REMAINING = st.one_of(st.integers(0, 3), st.integers(0, 150), st.integers(0, 1200), ODD_COUNTS)
SOON = st.builds(Reset, st.just("delta"), st.integers(0, 4000))
NUMERIC_RESETS = st.one_of(
    SOON,
    SOON,
    SOON,
    st.builds(Reset, st.just("delta"), st.integers(0, 10**9 - 1)),
    st.builds(Reset, st.just("epoch"), st.integers(-(10**5), 10**8)),
    st.builds(Reset, st.just("epoch_fraction"), st.integers(-(10**5), 10**7)),
    st.builds(Reset, st.just("ms"), st.integers(-(10**8), 10**12)),
    st.builds(Reset, st.just("absurd"), st.just(0), st.sampled_from(ABSURD[:-1])),
)
ANY_RESET = st.one_of(
    NUMERIC_RESETS,
    st.builds(Reset, st.just("date"), st.integers(-(10**5), 10**8)),
    st.builds(Reset, st.just("absurd"), st.just(0), st.sampled_from(["soon", "Mon, 99 Foo"])),
)
RETRY_AFTER = st.one_of(st.none(), st.sampled_from(["0", "30", "86400", "-1", "nan"]))


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    """Rate-limit headers in any dialect, readable or not."""
    dialect = draw(st.sampled_from(["x", "ietf", "lower", "structured", "structured_old"]))
    structured = dialect.startswith("structured")
    # A structured field cannot carry an HTTP date (its commas and spaces split it).
    resets = NUMERIC_RESETS if structured else ANY_RESET
    reset = draw(st.one_of(resets, resets, resets, st.none()))
    limit, remaining = draw(LIMITS), draw(REMAINING)
    if structured:  # tokens of a structured field hold no quote, comma or semicolon
        limit = limit if isinstance(limit, int) or limit in (None, "lots", "NaN") else None
        remaining = remaining if isinstance(remaining, int) or remaining in (None, "lots") else None
    return Answer(dialect, limit, remaining, reset, draw(RETRY_AFTER))


class BudgetMachine(RuleBasedStateMachine):
    """ApiBudget on a fake clock, beside a model of what the answers announced."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.planned = 1.0
        self.budget = ApiBudget(self.clock, planned_rate=lambda: self.planned)
        self.held: list[asyncio.Task[None]] = []
        # The model: what the answers said, read without the exporter's code.
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset_wall: float | None = None  # Unix time, capped
        self.reset_deadline: float | None = None  # monotonic, capped
        self.allowed: float | None = None  # requests/s as of the latest announcement

    def teardown(self) -> None:
        """Cancel what is still held and close the loop."""
        for task in self.held:
            task.cancel()
        self.settle()
        self.loop.close()

    def settle(self) -> None:
        """Run the loop until every task has reacted to what just happened."""

        async def spin() -> None:
            for _ in range(20):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())
        self.held = [task for task in self.held if not task.done()]

    @initialize(planned=st.sampled_from([4.0, 400.0, 1.0, 0.05, 0.0]))
    def plan(self, planned: float) -> None:
        """The schedule's request rate: none, a trickle, the issue's 4/s, a flood."""
        self.planned = planned

    @rule(answer=answers())
    def answer(self, answer: Answer) -> None:
        """An answer arrives with these headers."""
        wall, now = self.clock.time(), self.clock.monotonic()
        self.budget.observe(answer.headers(wall))
        self.model_answer(answer, wall, now)
        self.settle()

    @precondition(lambda self: bool(self.held))
    @rule(answer=answers())
    def answer_while_held(self, answer: Answer) -> None:
        """An answer arrives while requests are held (an answer to a request in flight)."""
        self.answer(answer)

    def model_answer(self, answer: Answer, wall: float, now: float) -> None:
        """What the model reads in an answer: the exporter's rules, written out again."""
        if answer.dialect in ("x", "ietf", "lower") and answer.remaining is None:
            return  # no Remaining header: not an announcement the exporter looks at
        limit, remaining = _count(answer.limit), _count(answer.remaining)
        if limit is None and remaining is None:
            return  # announces nothing: the whole answer, reset included, is ignored
        if limit is not None:
            self.limit = limit
        if remaining is not None:
            self.remaining = remaining
        unix = None if answer.reset is None else answer.reset.unix(wall)
        if unix is not None:
            ahead = min(unix - wall, MAX_RESET_SECONDS)
            self.reset_wall, self.reset_deadline = wall + ahead, now + ahead
        self.allowed = None
        if self.remaining is not None and self.reset_deadline is not None:
            left = self.reset_deadline - now
            spendable = SHARE * (self.remaining - RESERVE * (self.limit or 0))
            if left > 0:
                self.allowed = spendable / left if spendable >= 1 else 0.0

    @precondition(lambda self: len(self.held) < 3)
    @rule()
    def request(self) -> None:
        """A worker asks to send a request: at once when no wait is exported, else held."""
        wait = self.budget.wait_seconds
        self.held.append(self.loop.create_task(self.budget.acquire()))
        before = len(self.held)
        self.settle()
        if wait == 0:
            assert len(self.held) == before - 1, "a request was held though no wait was exported"
        else:
            assert len(self.held) == before, "a request started though a wait was exported"

    @rule(
        seconds=st.one_of(
            st.floats(0.001, 10), st.floats(0.001, 10), st.floats(10, 2 * MAX_RESET_SECONDS)
        )
    )
    def advance(self, seconds: float) -> None:
        """Time passes."""
        self.clock.advance(seconds)
        self.settle()

    @precondition(lambda self: self.budget.wait_seconds > 0.01)
    @rule()
    def advance_almost_to_the_wait(self) -> None:
        """Time passes to just short of the exported wait: nothing held starts."""
        held = len(self.held)
        self.clock.advance(self.budget.wait_seconds - 0.005)
        self.settle()
        assert len(self.held) == held

    @precondition(lambda self: self.budget.wait_seconds > 0)
    @rule()
    def advance_to_the_wait(self) -> None:
        """Time passes exactly the exported wait: a held request starts."""
        held = len(self.held)
        self.clock.advance(self.budget.wait_seconds)
        self.settle()
        assert held == 0 or len(self.held) < held

    @invariant()
    def figures_are_the_last_readable_ones(self) -> None:
        """limit, remaining and the reset time are the last readable values announced."""
        assert (self.budget.limit, self.budget.remaining) == (self.limit, self.remaining)
        if self.reset_wall is None:
            assert self.budget.reset_at is None
        else:
            assert self.budget.reset_at is not None
            assert abs(self.budget.reset_at - self.reset_wall) < TOLERANCE

    @invariant()
    def no_wait_past_the_reset_or_the_cap(self) -> None:
        """The exported wait and every held request end by the announced reset (capped)."""
        wait, now = self.budget.wait_seconds, self.clock.monotonic()
        assert 0 <= wait <= MAX_RESET_SECONDS
        if self.reset_deadline is None or self.reset_deadline <= now:
            assert wait == 0
            assert not self.held
        else:
            assert wait <= self.reset_deadline - now + TOLERANCE
            assert all(when <= self.reset_deadline + TOLERANCE for when in self.clock.deadlines)

    @invariant()
    def held_requests_wait_the_exported_wait(self) -> None:
        """Each held request wakes at now + wait_seconds: the figure is the wait applied, and
        it was judged again at the latest answer. Held means stretched."""
        wait, now = self.budget.wait_seconds, self.clock.monotonic()
        assert len(self.clock.deadlines) == len(self.held)
        if self.held:
            assert wait > 0
            assert self.budget.stretch > 1
            assert all(abs(when - (now + wait)) < TOLERANCE for when in self.clock.deadlines)
            assert self.budget.paused_since is not None
            assert self.budget.paused_since <= self.clock.time()
        if wait > 0:
            assert self.budget.paused_until is not None
            assert abs(self.budget.paused_until - (self.clock.time() + wait)) < TOLERANCE
        else:
            assert (self.budget.paused_until, self.budget.paused_since) == (None, None)

    @invariant()
    def the_wait_follows_the_documented_rule(self) -> None:
        """Stretch 1 and no wait when the budget allows the schedule; the stretch factor and the
        wait until the reset when not one request may be spent before it; otherwise waits
        no longer than the spacing at the allowed rate."""
        stretch, wait, now = self.budget.stretch, self.budget.wait_seconds, self.clock.monotonic()
        assert 1 <= stretch <= MAX_STRETCH
        limiting = (
            self.allowed is not None
            and self.reset_deadline is not None
            and self.reset_deadline > now
            and self.planned > 0
        )
        if not limiting or (self.allowed is not None and self.allowed >= self.planned):
            assert (stretch, wait) == (1.0, 0.0)
        elif self.allowed == 0:
            assert self.reset_deadline is not None
            assert stretch == MAX_STRETCH
            assert abs(wait - (self.reset_deadline - now)) < TOLERANCE
        else:
            assert self.allowed is not None
            assert math.isclose(stretch, min(MAX_STRETCH, self.planned / self.allowed))
            assert wait <= 1 / self.allowed + TOLERANCE


def test_no_answer_holds_polling_past_its_reset_or_the_cap() -> None:
    """No sequence of rate-limit answers holds polling past its reset or the cap, and the
    exported wait is the wait applied (a hundred runs of up to 40 steps, a few seconds)."""
    run_state_machine_as_test(
        BudgetMachine, settings=settings(max_examples=100, stateful_step_count=40, deadline=None)
    )
