"""The API client against the simulator on loopback: a record or a typed error, nothing else."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.api.client import (
    MAX_BODY_BYTES,
    USER_AGENT,
    ConnectionFailedError,
    Deadlines,
    DialNexaClient,
    HTTPStatusError,
    InvalidResponseError,
    RequestStats,
    RequestTimeoutError,
    TokenBucket,
    Transport,
    parse_retry_after,
)
from exporter.api.transport import HTTP_CLIENTS, create_transport
from exporter.config import HttpClientChoice
from exporter.demo.simulator import Fault, FaultKind, retry_after_date
from tests.helpers import API_KEY, FakeClock, RunningSimulator, campaign, serve, wait_for

CID = "cmp_client"


class Recorder:
    """Hand-written observer that remembers every request it is told about."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def observe_request(self, code: str, duration: float) -> None:
        """Remember the code."""
        assert duration >= 0
        self.codes.append(code)


class Transports:
    """Transports of one kind, made per API URL and closed after the test."""

    def __init__(self, kind: HttpClientChoice) -> None:
        self.kind = kind
        self.made: list[Transport] = []

    def for_url(self, url: str) -> Transport:
        """A new transport to ``url``."""
        transport = create_transport(self.kind, url, 4)
        self.made.append(transport)
        return transport


@pytest.fixture(params=HTTP_CLIENTS)
async def session(request: pytest.FixtureRequest) -> AsyncIterator[Transports]:
    """Every client test runs on each transport, the built-in one and aiohttp's."""
    transports = Transports(request.param)
    yield transports
    for transport in transports.made:
        await transport.close()


@pytest.fixture
async def sim(start_simulator: Callable[..., Awaitable[RunningSimulator]]) -> RunningSimulator:
    """A simulator with one campaign."""
    return await start_simulator([campaign(CID)])


def make_client(
    session: Transports,
    url: str,
    key: str = API_KEY,
    timeout: float = 2.0,
    observer: Recorder | None = None,
) -> DialNexaClient:
    """A client for ``url``."""
    return DialNexaClient(
        session.for_url(url), url, SecretStr(key), timeout_seconds=timeout, observer=observer
    )


async def test_fetches_a_record_with_auth_and_user_agent(
    session: Transports, sim: RunningSimulator
) -> None:
    """A good request returns the parsed record and carries our User-Agent."""
    recorder = Recorder()
    record = await make_client(session, sim.api_url, observer=recorder).fetch_campaign(CID)
    assert record.id == CID
    assert record.total_leads == 1000
    assert sim.sim.stats.user_agents == {USER_AGENT}
    assert recorder.codes == ["200"]


async def test_wrong_key_is_unauthorized(session: Transports, sim: RunningSimulator) -> None:
    """A key the API rejects gives HTTP 401."""
    with pytest.raises(HTTPStatusError) as info:
        await make_client(session, sim.api_url, key="wrong").fetch_campaign(CID)
    assert info.value.status == 401


@pytest.mark.parametrize("status", [403, 500, 502, 503, 400, 418])
async def test_error_statuses_are_typed(
    session: Transports, sim: RunningSimulator, status: int
) -> None:
    """Every non-success status becomes HTTPStatusError carrying that status."""
    sim.sim.set_fault(Fault(FaultKind.STATUS, status=status))
    recorder = Recorder()
    with pytest.raises(HTTPStatusError) as info:
        await make_client(session, sim.api_url, observer=recorder).fetch_campaign(CID)
    assert info.value.status == status
    assert recorder.codes == [str(status)]


async def test_unknown_campaign_is_404(session: Transports, sim: RunningSimulator) -> None:
    """A campaign the API does not know answers 404."""
    with pytest.raises(HTTPStatusError) as info:
        await make_client(session, sim.api_url).fetch_campaign("cmp_nope")
    assert info.value.status == 404


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_rate_limit_carries_retry_after(
    session: Transports, sim: RunningSimulator, form: str
) -> None:
    """429 exposes Retry-After in seconds whether sent as seconds or as an HTTP date."""
    header = "120" if form == "seconds" else retry_after_date(120)
    sim.sim.set_fault(Fault(FaultKind.RATE_LIMIT, retry_after=header))
    with pytest.raises(HTTPStatusError) as info:
        await make_client(session, sim.api_url).fetch_campaign(CID)
    assert info.value.status == 429
    assert info.value.retry_after is not None
    assert 115 <= info.value.retry_after <= 120


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("30", 30.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        (None, None),
        ("9" * 309, 1e9),  # float() of it would overflow: read as "very long"
        ("9" * 5000, 1e9),  # int() of it would hit Python's digit limit
        ("12" * 5, 1e9),
        ("²", None),  # a digit to Python, not to HTTP
        ("3٣", None),  # an Arabic-Indic digit
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),  # a year past datetime's range
        ("x" * 100_000, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP dates are understood; past dates mean now; junk means none;
    absurd numbers are very long waits (capped by the poller), never an exception."""
    now = 1445412420.0  # Wed, 21 Oct 2015 07:27:00 GMT
    assert parse_retry_after(header, now) == expected


@pytest.mark.parametrize(
    "fault",
    [
        Fault(FaultKind.SLOW, delay=5.0),
        Fault(FaultKind.DRIP, delay=0.2),
    ],
    ids=["no-headers", "dripping-body"],
)
async def test_slow_answers_time_out(
    session: Transports, sim: RunningSimulator, fault: Fault
) -> None:
    """Both a server that never answers and a body that drips count against one deadline."""
    sim.sim.set_fault(fault)
    with pytest.raises(RequestTimeoutError):
        await make_client(session, sim.api_url, timeout=0.3).fetch_campaign(CID)


async def test_an_unchanged_body_is_not_parsed_again(
    session: Transports, sim: RunningSimulator
) -> None:
    """Given the digest of the last body, the client answers "unchanged" for the same bytes and
    parses a body that differs."""
    client = make_client(session, sim.api_url)
    sim.sim.raw_records[CID] = {"id": CID, "status": "active", "pending_calls": 5}
    record, digest = await client.fetch_changed(CID, None)
    assert record is not None
    assert record.pending_calls == 5
    assert await client.fetch_changed(CID, digest) == (None, digest)
    sim.sim.raw_records[CID] = {"id": CID, "status": "active", "pending_calls": 4}
    changed, new_digest = await client.fetch_changed(CID, digest)
    assert changed is not None
    assert changed.pending_calls == 4
    assert new_digest != digest


async def test_timeout_ends_within_its_resolution(
    session: Transports, sim: RunningSimulator
) -> None:
    """A hanging request ends no sooner than the timeout and at most a tenth of it later."""
    sim.sim.set_fault(Fault(FaultKind.SLOW, delay=5.0))
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        await make_client(session, sim.api_url, timeout=0.5).fetch_campaign(CID)
    took = time.monotonic() - started
    assert 0.5 <= took < 0.5 + 0.05 + 1.0  # + resolution + slack for a loaded machine


async def _guarded(deadlines: Deadlines, seconds: float, waiting: asyncio.Future[None]) -> str:
    """Wait for ``waiting`` under a deadline, as the client does; say how it ended."""
    task = deadlines.start(seconds)
    try:
        await waiting
    except BaseException:
        if deadlines.finish(task):
            return "timed out"
        raise
    deadlines.finish(task)
    return "done"


async def test_deadlines_cancel_only_the_late_requests() -> None:
    """Of concurrent requests, the ones past their deadline end; the others are untouched."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=0.01)
    slow = [loop.create_future() for _ in range(3)]
    fast = [loop.create_future() for _ in range(3)]
    tasks = [asyncio.create_task(_guarded(deadlines, 0.05, f)) for f in slow]
    tasks += [asyncio.create_task(_guarded(deadlines, 30.0, f)) for f in fast]
    async with asyncio.timeout(10):
        results = await asyncio.gather(*tasks[:3])
    assert results == ["timed out"] * 3
    assert not any(task.done() for task in tasks[3:])
    for future in fast:
        future.set_result(None)
    assert await asyncio.gather(*tasks[3:]) == ["done"] * 3
    assert deadlines._timer is None  # nothing in flight: no timer left armed


async def test_a_shutdown_is_not_mistaken_for_a_timeout() -> None:
    """Cancelled by shutdown just as its deadline passes, a request is cancelled, not timed out."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=30.0)
    waiting: asyncio.Future[None] = loop.create_future()
    task = asyncio.create_task(_guarded(deadlines, 0.0, waiting))
    await asyncio.sleep(0)  # the task's first step runs: it starts waiting under its deadline
    assert task in deadlines._inflight
    deadlines._check(loop)  # the deadline (already past) cancels it ...
    task.cancel()  # ... and so does a shutdown, before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._inflight
    assert not deadlines._expired


@pytest.mark.parametrize(
    "fault",
    [
        Fault(FaultKind.BAD_JSON),
        Fault(FaultKind.EMPTY),
        Fault(FaultKind.HTML),
        Fault(FaultKind.ARRAY),
        Fault(FaultKind.WRONG_ID),
        Fault(FaultKind.BODY, body=b'{"id": "cmp_client", "total_leads": "lots"}'),
        Fault(FaultKind.BODY, body=b"null"),
        Fault(FaultKind.BODY, body=b"\xff\xfe\x00garbage"),
        Fault(FaultKind.HUGE, size=50 * 1024 * 1024),
        Fault(FaultKind.HUGE, size=50 * 1024 * 1024, chunked=True),
    ],
    ids=lambda f: f.kind.value + ("-chunked" if f.chunked else ""),
)
async def test_unusable_bodies_are_invalid_responses(
    session: Transports, sim: RunningSimulator, fault: Fault
) -> None:
    """Bad JSON, wrong shapes, wrong ids and oversized bodies all raise InvalidResponseError."""
    sim.sim.set_fault(fault)
    with pytest.raises(InvalidResponseError):
        await make_client(session, sim.api_url).fetch_campaign(CID)


async def test_body_just_under_the_cap_is_read(session: Transports, sim: RunningSimulator) -> None:
    """A valid record padded to just under 1 MiB is still accepted: the cap is not too tight."""
    padding = " " * (MAX_BODY_BYTES - 100)
    sim.sim.set_fault(Fault(FaultKind.BODY, body=f'{{"id": "{CID}"{padding}}}'.encode()))
    record = await make_client(session, sim.api_url).fetch_campaign(CID)
    assert record.id == CID


def closed_port() -> int:
    """A loopback port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_a_connection_error(session: Transports) -> None:
    """Nothing listening gives ConnectionFailedError and an `error` request code."""
    recorder = Recorder()
    client = make_client(session, f"http://127.0.0.1:{closed_port()}/v1", observer=recorder)
    with pytest.raises(ConnectionFailedError):
        await client.fetch_campaign(CID)
    assert recorder.codes == ["error"]


async def test_dns_failure_is_a_connection_error(session: Transports) -> None:
    """A host name that cannot resolve gives ConnectionFailedError."""
    client = make_client(session, "http://dialnexa-api.invalid/v1")
    with pytest.raises(ConnectionFailedError):
        await client.fetch_campaign(CID)


async def test_disconnect_is_a_connection_error(session: Transports, sim: RunningSimulator) -> None:
    """A server that drops the connection gives ConnectionFailedError."""
    sim.sim.set_fault(Fault(FaultKind.DISCONNECT))
    with pytest.raises(ConnectionFailedError):
        await make_client(session, sim.api_url).fetch_campaign(CID)


async def test_a_body_cut_short_counts_under_its_status(session: Transports) -> None:
    """Head complete, body cut short by a close: a ConnectionFailedError carrying the status,
    and the request counted under that status, on either transport."""

    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id":')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(truncate, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    recorder = Recorder()
    try:
        client = make_client(session, f"http://127.0.0.1:{port}/v1", observer=recorder)
        with pytest.raises(ConnectionFailedError, match="cut short") as info:
            await client.fetch_campaign(CID)
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.status == 200
    assert recorder.codes == ["200"]


@pytest.mark.parametrize(
    ("raw", "expected", "status"),
    [
        pytest.param(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 5000000\r\n\r\n",
            HTTPStatusError,
            429,
            id="429-with-a-huge-body",
        ),
        pytest.param(
            b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
            HTTPStatusError,
            500,
            id="500-with-corrupt-gzip",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
            (InvalidResponseError, ConnectionFailedError),
            200,
            id="200-with-corrupt-gzip",
        ),
    ],
)
async def test_an_error_status_counts_by_status_whatever_its_body(
    session: Transports, raw: bytes, expected: type[Exception], status: int
) -> None:
    """An error answer's body is not the answer: too large or undecodable, the status (and its
    Retry-After) still decide. A success whose body cannot be decoded is a typed failure with
    its status. Both transports."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        await reader.read(1)

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = make_client(session, f"http://127.0.0.1:{port}/v1")
        with pytest.raises(expected) as info:
            await client.fetch_campaign(CID)
    finally:
        server.close()
        await server.wait_closed()
    error = info.value
    assert isinstance(error, HTTPStatusError | InvalidResponseError | ConnectionFailedError)
    assert error.status == status
    if status == 429:
        assert isinstance(error, HTTPStatusError)
        assert error.retry_after == 7
    if status == 200 and session.kind == "builtin":  # aiohttp's says "cut short" of these
        assert isinstance(error, InvalidResponseError)
        assert "corrupt compressed body" in str(error)


@pytest.fixture
async def other_host() -> AsyncIterator[tuple[TestServer, list[str | None]]]:
    """A second server (another origin) that records the Authorization headers it receives."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"id": CID})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await serve(app)
    yield server, seen
    await server.close()


@pytest.mark.parametrize("status", [302, 307])
async def test_redirect_to_another_origin_is_refused_without_sending_the_key(
    session: Transports,
    sim: RunningSimulator,
    other_host: tuple[TestServer, list[str | None]],
    status: int,
) -> None:
    """A redirect elsewhere is an invalid response, and the other host never sees a request."""
    server, seen = other_host
    location = str(server.make_url(f"/v1/campaigns/{CID}"))
    sim.sim.set_fault(Fault(FaultKind.REDIRECT, status=status, location=location))
    with pytest.raises(InvalidResponseError, match="another origin"):
        await make_client(session, sim.api_url).fetch_campaign(CID)
    assert seen == []


async def test_same_origin_redirect_is_followed(session: Transports, sim: RunningSimulator) -> None:
    """A redirect within the API's own origin is followed, with the key (else it would be 401)."""
    sim.sim.set_raw("cmp_target", {"id": "cmp_moved", "status": "paused"})
    sim.sim.set_fault(
        Fault(FaultKind.REDIRECT, status=307, location="/v1/campaigns/cmp_target"), "cmp_moved"
    )
    record = await make_client(session, sim.api_url).fetch_campaign("cmp_moved")
    assert record.status == "paused"
    assert sim.sim.stats.by_campaign == {"cmp_moved": 1, "cmp_target": 1}


async def test_redirect_loop_is_bounded(session: Transports, sim: RunningSimulator) -> None:
    """A redirect loop stops after a few hops with an invalid response."""
    sim.sim.set_fault(Fault(FaultKind.REDIRECT, status=302, location=f"/v1/campaigns/{CID}"))
    with pytest.raises(InvalidResponseError, match="redirects"):
        await make_client(session, sim.api_url).fetch_campaign(CID)
    assert sim.sim.stats.requests == 4


async def test_compressed_body_is_capped_after_decompression(
    session: Transports,
) -> None:
    """A small gzip body that inflates past 1 MiB (a zip bomb) is refused, not read whole."""
    bomb = gzip.compress(b'{"id": "cmp_client", "name": "' + b" " * (20 * MAX_BODY_BYTES))

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await serve(app)
    try:
        assert len(bomb) < MAX_BODY_BYTES
        with pytest.raises(InvalidResponseError, match="cap"):
            await make_client(session, str(server.make_url("/v1"))).fetch_campaign(CID)
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"id": "cmp_client", "total_leads": 1' + b"0" * 400 + b"}", "total_leads"),
        (b'{"id": "cmp_client", "total_leads": 9007199254740993}', "total_leads"),
        (b'{"id": "cmp_client", "pending_calls": 1e400}', "pending_calls"),
        (
            b'{"id": "cmp_client", "retry_config": {"max_retries": 1' + b"0" * 400 + b"}}",
            "max_retries",
        ),
        (
            b'{"id": "cmp_client", "retry_config": {"retry_interval_minutes": 1'
            + b"0" * 400
            + b"}}",
            "retry_interval_minutes",
        ),
        (
            b'{"id": "cmp_client", "retry_config": {"retry_interval_minutes": 1e400}}',
            "retry_interval_minutes",
        ),
        (b'{"id": "cmp_client", "total_leads": ' + b"1" * 5000 + b"}", "not valid JSON"),
    ],
    ids=[
        "nested-200000",
        "count-10^400",
        "count-2^53+1",
        "count-inf",
        "retries-10^400",
        "minutes-10^400",
        "minutes-inf",
        "5000-digits",
    ],
)
async def test_absurd_bodies_are_invalid_responses(
    session: Transports, sim: RunningSimulator, body: bytes, problem: str
) -> None:
    """Numbers a Prometheus sample cannot carry exactly, and JSON nested beyond the parser's
    depth, are typed invalid responses naming the problem, never another exception."""
    sim.sim.set_fault(Fault(FaultKind.BODY, body=body))
    with pytest.raises(InvalidResponseError, match=problem):
        await make_client(session, sim.api_url).fetch_campaign(CID)


async def test_absurd_retry_after_still_rate_limits(
    session: Transports, sim: RunningSimulator
) -> None:
    """A 429 whose Retry-After has hundreds of digits is a rate limit with a long delay."""
    sim.sim.set_fault(Fault(FaultKind.RATE_LIMIT, retry_after="9" * 400))
    with pytest.raises(HTTPStatusError) as info:
        await make_client(session, sim.api_url).fetch_campaign(CID)
    assert (info.value.status, info.value.retry_after) == (429, 1e9)


def test_request_stats_count_codes_and_durations() -> None:
    """Counts per code (sorted) and a cumulative histogram whose +Inf bucket is the count."""
    stats = RequestStats()
    for code, seconds in (("404", 0.02), ("200", 0.001), ("200", 99.0)):
        stats.observe_request(code, seconds)
    assert stats.requests_by_code() == (("200", 2), ("404", 1))
    histogram = stats.histogram()
    assert histogram.buckets[0] == 1  # <= 0.01
    assert histogram.buckets[1] == 2  # <= 0.025
    assert histogram.buckets[-2] == 2  # <= 10
    assert histogram.count == histogram.buckets[-1] == 3
    assert histogram.total == pytest.approx(99.021)


async def test_token_bucket_spaces_requests_on_its_clock() -> None:
    """With the burst spent, the next request waits 1/rate seconds of the injected clock."""
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, clock=clock, burst=2.0)
    await bucket.acquire()
    await bucket.acquire()
    third = asyncio.create_task(bucket.acquire())
    await wait_for(lambda: clock.waiting == 1, what="the bucket waiting on the clock")
    clock.advance(0.4)
    await asyncio.sleep(0)
    assert not third.done()
    clock.advance(0.1)  # 0.5 s = 1 / rate
    await asyncio.wait_for(third, 2.0)
