"""The API client against the simulator on loopback: a record or a typed error, nothing else."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import socket
import ssl
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.api.client import (
    MAX_BODY_BYTES,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    USER_AGENT,
    ConnectionFailedError,
    Deadlines,
    DialNexaClient,
    FetchError,
    HTTPStatusError,
    InvalidResponseError,
    RequestStats,
    RequestTimeoutError,
    TokenBucket,
    create_session,
    parse_retry_after,
    request_headers,
)
from exporter.demo.simulator import Fault, FaultKind, retry_after_date
from tests.helpers import (
    API_KEY,
    RECORD_BODY,
    FakeClock,
    RunningSimulator,
    Upstream,
    answer_once,
    campaign,
    keep_answering,
    raw_answer,
    read_request,
    serve,
    trusting,
    upstream_running,
    wait_for,
)

CID = "cmp_client"


class Recorder:
    """Hand-written observer that remembers every request it is told about."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def observe_request(self, code: str, duration: float) -> None:
        """Remember the code."""
        assert duration >= 0
        self.codes.append(code)


class Clients:
    """Clients made per API URL, each on its own session, closed after the test."""

    def __init__(self) -> None:
        self.made: list[DialNexaClient] = []

    def add(self, client: DialNexaClient) -> DialNexaClient:
        """Close ``client`` after the test."""
        self.made.append(client)
        return client


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    """The clients a test makes, closed after it."""
    made = Clients()
    yield made
    for client in made.made:
        await client.close()


@pytest.fixture
async def sim(start_simulator: Callable[..., Awaitable[RunningSimulator]]) -> RunningSimulator:
    """A simulator with one campaign."""
    return await start_simulator([campaign(CID)])


def make_client(
    clients: Clients,
    url: str,
    key: str = API_KEY,
    timeout: float = 2.0,
    observer: Recorder | None = None,
    headers_in_session: bool = True,
) -> DialNexaClient:
    """A client for ``url``, with at most four connections; its headers in its session, as
    client_for makes it, or (``headers_in_session=False``) named with every request."""
    headers = request_headers(SecretStr(key)) if headers_in_session else None
    session = create_session(4, headers=headers)
    client = DialNexaClient(
        session, url, SecretStr(key), timeout_seconds=timeout, observer=observer
    )
    return clients.add(client)


async def test_fetches_a_record_with_auth_and_user_agent(
    clients: Clients, sim: RunningSimulator
) -> None:
    """A good request returns the parsed record and carries our User-Agent."""
    recorder = Recorder()
    record = await make_client(clients, sim.api_url, observer=recorder).fetch_campaign(CID)
    assert record.id == CID
    assert record.total_leads == 1000
    assert sim.sim.stats.user_agents == {USER_AGENT}
    assert recorder.codes == ["200"]


async def test_wrong_key_is_unauthorized(clients: Clients, sim: RunningSimulator) -> None:
    """A key the API rejects gives HTTP 401."""
    with pytest.raises(HTTPStatusError) as info:
        await make_client(clients, sim.api_url, key="wrong").fetch_campaign(CID)
    assert info.value.status == 401


@pytest.mark.parametrize("status", [403, 500, 502, 503, 400, 418])
async def test_error_statuses_are_typed(
    clients: Clients, sim: RunningSimulator, status: int
) -> None:
    """Every non-success status becomes HTTPStatusError carrying that status."""
    sim.sim.set_fault(Fault(FaultKind.STATUS, status=status))
    recorder = Recorder()
    with pytest.raises(HTTPStatusError) as info:
        await make_client(clients, sim.api_url, observer=recorder).fetch_campaign(CID)
    assert info.value.status == status
    assert recorder.codes == [str(status)]


async def test_unknown_campaign_is_404(clients: Clients, sim: RunningSimulator) -> None:
    """A campaign the API does not know answers 404."""
    with pytest.raises(HTTPStatusError) as info:
        await make_client(clients, sim.api_url).fetch_campaign("cmp_nope")
    assert info.value.status == 404


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_rate_limit_carries_retry_after(
    clients: Clients, sim: RunningSimulator, form: str
) -> None:
    """429 exposes Retry-After in seconds whether sent as seconds or as an HTTP date."""
    header = "120" if form == "seconds" else retry_after_date(120)
    sim.sim.set_fault(Fault(FaultKind.RATE_LIMIT, retry_after=header))
    with pytest.raises(HTTPStatusError) as info:
        await make_client(clients, sim.api_url).fetch_campaign(CID)
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
async def test_slow_answers_time_out(clients: Clients, sim: RunningSimulator, fault: Fault) -> None:
    """Both a server that never answers and a body that drips count against one deadline."""
    sim.sim.set_fault(fault)
    with pytest.raises(RequestTimeoutError):
        await make_client(clients, sim.api_url, timeout=0.3).fetch_campaign(CID)


async def test_an_unchanged_body_is_not_parsed_again(
    clients: Clients, sim: RunningSimulator
) -> None:
    """Given the digest of the last body, the client answers "unchanged" for the same bytes and
    parses a body that differs."""
    client = make_client(clients, sim.api_url)
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


async def test_timeout_ends_within_its_resolution(clients: Clients, sim: RunningSimulator) -> None:
    """A hanging request ends no sooner than the timeout and at most a tenth of it later."""
    sim.sim.set_fault(Fault(FaultKind.SLOW, delay=5.0))
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        await make_client(clients, sim.api_url, timeout=0.5).fetch_campaign(CID)
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
    clients: Clients, sim: RunningSimulator, fault: Fault
) -> None:
    """Bad JSON, wrong shapes, wrong ids and oversized bodies all raise InvalidResponseError."""
    sim.sim.set_fault(fault)
    with pytest.raises(InvalidResponseError):
        await make_client(clients, sim.api_url).fetch_campaign(CID)


async def test_body_just_under_the_cap_is_read(clients: Clients, sim: RunningSimulator) -> None:
    """A valid record padded to just under the body cap is still accepted: not too tight."""
    padding = " " * (MAX_BODY_BYTES - 100)
    sim.sim.set_fault(Fault(FaultKind.BODY, body=f'{{"id": "{CID}"{padding}}}'.encode()))
    record = await make_client(clients, sim.api_url).fetch_campaign(CID)
    assert record.id == CID


def closed_port() -> int:
    """A loopback port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_a_connection_error(clients: Clients) -> None:
    """Nothing listening gives ConnectionFailedError and an `error` request code."""
    recorder = Recorder()
    client = make_client(clients, f"http://127.0.0.1:{closed_port()}/v1", observer=recorder)
    with pytest.raises(ConnectionFailedError):
        await client.fetch_campaign(CID)
    assert recorder.codes == ["error"]


async def test_dns_failure_is_a_connection_error(clients: Clients) -> None:
    """A host name that cannot resolve gives ConnectionFailedError."""
    client = make_client(clients, "http://dialnexa-api.invalid/v1")
    with pytest.raises(ConnectionFailedError):
        await client.fetch_campaign(CID)


async def test_disconnect_is_a_connection_error(clients: Clients, sim: RunningSimulator) -> None:
    """A server that drops the connection gives ConnectionFailedError."""
    sim.sim.set_fault(Fault(FaultKind.DISCONNECT))
    with pytest.raises(ConnectionFailedError):
        await make_client(clients, sim.api_url).fetch_campaign(CID)


async def test_a_body_cut_short_counts_under_its_status(clients: Clients) -> None:
    """Head complete, body cut short by a close: a ConnectionFailedError carrying the status,
    and the request counted under that status."""

    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id":')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(truncate, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    recorder = Recorder()
    try:
        client = make_client(clients, f"http://127.0.0.1:{port}/v1", observer=recorder)
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
            InvalidResponseError,
            200,
            id="200-with-corrupt-gzip",
        ),
    ],
)
async def test_an_error_status_counts_by_status_whatever_its_body(
    clients: Clients, raw: bytes, expected: type[Exception], status: int
) -> None:
    """An error answer's body is not the answer: too large or undecodable, the status (and its
    Retry-After) still decide. A success whose body cannot be decoded is a typed failure with
    its status."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        await reader.read(1)

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = make_client(clients, f"http://127.0.0.1:{port}/v1")
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
    if status == 200:
        assert isinstance(error, InvalidResponseError)
        assert "cannot be decoded" in str(error)


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
    clients: Clients,
    sim: RunningSimulator,
    other_host: tuple[TestServer, list[str | None]],
    status: int,
) -> None:
    """A redirect elsewhere is an invalid response, and the other host never sees a request."""
    server, seen = other_host
    location = str(server.make_url(f"/v1/campaigns/{CID}"))
    sim.sim.set_fault(Fault(FaultKind.REDIRECT, status=status, location=location))
    with pytest.raises(InvalidResponseError, match="another origin"):
        await make_client(clients, sim.api_url).fetch_campaign(CID)
    assert seen == []


async def test_same_origin_redirect_is_followed(clients: Clients, sim: RunningSimulator) -> None:
    """A redirect within the API's own origin is followed, with the key (else it would be 401)."""
    sim.sim.set_raw("cmp_target", {"id": "cmp_moved", "status": "paused"})
    sim.sim.set_fault(
        Fault(FaultKind.REDIRECT, status=307, location="/v1/campaigns/cmp_target"), "cmp_moved"
    )
    record = await make_client(clients, sim.api_url).fetch_campaign("cmp_moved")
    assert record.status == "paused"
    assert sim.sim.stats.by_campaign == {"cmp_moved": 1, "cmp_target": 1}


async def test_redirect_loop_is_bounded(clients: Clients, sim: RunningSimulator) -> None:
    """A redirect loop stops after a few hops with an invalid response."""
    sim.sim.set_fault(Fault(FaultKind.REDIRECT, status=302, location=f"/v1/campaigns/{CID}"))
    with pytest.raises(InvalidResponseError, match="redirects"):
        await make_client(clients, sim.api_url).fetch_campaign(CID)
    assert sim.sim.stats.requests == 4


async def test_compressed_body_is_capped_after_decompression(
    clients: Clients,
) -> None:
    """A small gzip body that inflates past the body cap (a zip bomb) is refused, not read whole."""
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
            await make_client(clients, str(server.make_url("/v1"))).fetch_campaign(CID)
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            b'{"id": "cmp_client", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "nested too deeply",
        ),
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
        "nested-100000",
        "nested-100000-in-a-record",
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
    clients: Clients, sim: RunningSimulator, body: bytes, problem: str
) -> None:
    """Numbers a Prometheus sample cannot carry exactly, and JSON nested beyond the parser's
    depth, are typed invalid responses naming the problem, never another exception."""
    sim.sim.set_fault(Fault(FaultKind.BODY, body=body))
    with pytest.raises(InvalidResponseError, match=problem):
        await make_client(clients, sim.api_url).fetch_campaign(CID)


async def test_absurd_retry_after_still_rate_limits(
    clients: Clients, sim: RunningSimulator
) -> None:
    """A 429 whose Retry-After has hundreds of digits is a rate limit with a long delay."""
    sim.sim.set_fault(Fault(FaultKind.RATE_LIMIT, retry_after="9" * 400))
    with pytest.raises(HTTPStatusError) as info:
        await make_client(clients, sim.api_url).fetch_campaign(CID)
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


# --- a broken or hostile upstream, byte by byte (scripted servers on loopback) -----------------


def scripted_client(
    clients: Clients, upstream: Upstream, timeout: float = 2.0, headers_in_session: bool = True
) -> DialNexaClient:
    """A client of ``upstream`` with the exporter's session."""
    return make_client(
        clients, upstream.api_url, timeout=timeout, headers_in_session=headers_in_session
    )


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Long: ", id="header-line"),
        pytest.param(b"HTTP/1.1 200 ", id="status-line"),
    ],
)
async def test_a_line_without_end_is_refused_at_its_cap(clients: Clients, start: bytes) -> None:
    """A status or header line of megabytes: refused past MAX_LINE_BYTES, the connection
    dropped, and the server never gets to send its 16 MiB."""
    sent = 0

    async def endless(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        nonlocal sent
        await read_request(reader, up)
        writer.write(start)
        for _ in range(1024):  # at most 16 MiB, until the client hangs up
            writer.write(b"a" * 16384)
            sent += 16384
            await writer.drain()

    async with upstream_running(endless) as upstream:
        with pytest.raises(ConnectionFailedError, match="malformed HTTP response"):
            await scripted_client(clients, upstream).fetch_campaign("cmp_1")
    assert MAX_LINE_BYTES == 8190
    assert sent < 16 * 1024 * 1024


async def test_more_than_128_headers_are_refused(clients: Clients) -> None:
    """128 header lines are an answer; 129 are a malformed response (MAX_HEADERS)."""
    at_cap = raw_answer(extra=b"X-Flood: 1\r\n" * (MAX_HEADERS - 2))  # + Content-Length, + Date
    over = b"HTTP/1.1 200 OK\r\n" + b"X-Flood: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n"
    async with upstream_running(answer_once(at_cap)) as upstream:
        assert (await scripted_client(clients, upstream).fetch_campaign("cmp_1")).id == "cmp_1"
    async with upstream_running(answer_once(over)) as upstream:
        with pytest.raises(ConnectionFailedError, match="malformed HTTP response"):
            await scripted_client(clients, upstream).fetch_campaign("cmp_1")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", id="status-2000"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            id="two-lengths",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-A: \x00\x01\r\n\r\n", id="nul-header"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 400 + b"\r\n\r\n",
            id="length-of-400-digits",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n",
            id="chunk-size-overflow",
        ),
    ],
)
async def test_garbage_is_a_malformed_response(clients: Clients, raw: bytes) -> None:
    """Whatever is not an HTTP/1.x answer is a connection failure saying so in one short line
    that quotes none of the bytes, and the connection is dropped."""
    async with upstream_running(answer_once(raw)) as upstream:
        with pytest.raises(ConnectionFailedError, match="malformed HTTP response") as info:
            await scripted_client(clients, upstream).fetch_campaign("cmp_1")
        async with asyncio.timeout(5):
            await upstream.closed_by_client.wait()
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 120


@pytest.mark.parametrize(
    ("head", "body"),
    [
        pytest.param(b"Content-Length: 1000000000000\r\n", b"", id="announced"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n", b"4000\r\n" + b"x" * 0x4000 + b"\r\n", id="chunked"
        ),
        pytest.param(b"", b"x" * 16384, id="until-close"),
        pytest.param(
            b"Content-Encoding: gzip\r\n",
            gzip.compress(b"\0" * (8 * 1024 * 1024))[:16384],
            id="gzip-bomb",
        ),
    ],
)
@pytest.mark.parametrize("status", ["200 OK", "429 Too Many Requests"])
async def test_bodies_over_the_cap_stop_at_the_cap(
    clients: Clients, head: bytes, body: bytes, status: str
) -> None:
    """However a body comes, the client reads no further than the cap: a 2xx answer is an
    invalid response with its status; an error answer's body is not read at all, and its status
    and Retry-After decide."""
    sent = 0

    async def flood(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        nonlocal sent
        await read_request(reader, up)
        writer.write(f"HTTP/1.1 {status}\r\nRetry-After: 7\r\n".encode() + head + b"\r\n")
        for _ in range(1024):  # at most 16 MiB, until the client hangs up
            writer.write(body)
            sent += len(body)
            await writer.drain()
        await reader.read(1)

    async with upstream_running(flood) as upstream:
        with pytest.raises(FetchError) as info:
            await scripted_client(clients, upstream).fetch_campaign("cmp_1")
    error = info.value
    if status.startswith("429"):
        assert isinstance(error, HTTPStatusError)
        assert (error.status, error.retry_after) == (429, 7)
    else:
        assert isinstance(error, InvalidResponseError)
        assert error.status == 200
        assert "cap" in str(error)
    assert sent < 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("encoding", "compress", "chunked"),
    [
        pytest.param("gzip", gzip.compress, False, id="gzip"),
        pytest.param("deflate", zlib.compress, False, id="deflate"),
        pytest.param("gzip", gzip.compress, True, id="gzip-chunked"),
    ],
)
async def test_a_compression_bomb_never_inflates_much_past_the_cap(
    clients: Clients, encoding: str, compress: Callable[[bytes], bytes], chunked: bool
) -> None:
    """A small compressed body that would inflate to 64 MiB: the client's memory peak while
    fetching it stays within a few times the body cap, because inflation itself is bounded,
    not only its result."""
    bomb = compress(b"\0" * (64 * 1024 * 1024))
    extra = f"Content-Encoding: {encoding}\r\n".encode()
    if chunked:
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"
        raw += f"{len(bomb):x}\r\n".encode() + bomb + b"\r\n0\r\n\r\n"
    else:
        raw = raw_answer(bomb, extra=extra)
    async with upstream_running(answer_once(raw)) as upstream:
        client = scripted_client(clients, upstream)
        tracemalloc.start()
        try:
            with pytest.raises(InvalidResponseError, match="cap"):
                await client.fetch_campaign("cmp_1")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(bomb) < MAX_BODY_BYTES
    print(f"{encoding}{' chunked' if chunked else ''}: peak {peak / 2**20:.2f} MiB")
    # aiohttp inflates up to about 1 MiB a step, whatever the cap: bounded, not the 64 MiB.
    assert peak < 4 * MAX_BODY_BYTES + 2 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param("br", b"\x1b\x00", id="brotli-not-installed"),
        pytest.param("gzip", b"\x1f\x8bnot gzip at all", id="corrupt-gzip"),
        pytest.param("gzip", gzip.compress(RECORD_BODY) + b"garbage", id="gzip-trailing-garbage"),
    ],
)
async def test_undecodable_bodies_are_invalid_responses(
    clients: Clients, encoding: str, body: bytes
) -> None:
    """A coding the client cannot decode, or broken compressed data, is an invalid response
    saying the body cannot be decoded."""
    raw = raw_answer(body, extra=f"Content-Encoding: {encoding}\r\n".encode())
    async with upstream_running(answer_once(raw)) as upstream:
        with pytest.raises(InvalidResponseError, match="decode"):
            await scripted_client(clients, upstream).fetch_campaign("cmp_1")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: 1\r\n 2\r\n\r\n%s"
            % (len(RECORD_BODY), RECORD_BODY),
            id="obs-folded-header",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\nContent-Length: %d\n\n%s" % (len(RECORD_BODY), RECORD_BODY),
            id="lf-only-head",
        ),
        pytest.param(
            raw_answer(zlib.compress(RECORD_BODY)[2:-4], extra=b"Content-Encoding: deflate\r\n"),
            id="raw-deflate",
        ),
        pytest.param(
            raw_answer(
                gzip.compress(RECORD_BODY[:9]) + gzip.compress(RECORD_BODY[9:]),
                extra=b"Content-Encoding: gzip\r\n",
            ),
            id="multi-member-gzip",
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
            + raw_answer(),
            id="informational-first",
        ),
    ],
)
async def test_odd_but_readable_answers_are_read(clients: Clients, raw: bytes) -> None:
    """Answers the old built-in client refused but that carry a whole record are read."""
    async with upstream_running(answer_once(raw)) as upstream:
        record = await scripted_client(clients, upstream).fetch_campaign("cmp_1")
    assert record.id == "cmp_1"


async def test_a_second_answer_is_never_read_as_the_next_requests(clients: Clients) -> None:
    """An answer followed by a smuggled one: the first is returned, and the next request gets
    its own answer, never the smuggled one."""
    evil = raw_answer(b'{"id": "cmp_1", "status": "cancelled"}')

    async def smuggle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        while await read_request(reader, up):
            writer.write(raw_answer() + (evil if len(up.requests) == 1 else b""))
            await writer.drain()

    async with upstream_running(smuggle) as upstream:
        client = scripted_client(clients, upstream)
        for _ in range(3):
            assert (await client.fetch_campaign("cmp_1")).status == "active"


async def test_an_answer_pushed_while_idle_is_never_taken_for_another_campaign(
    clients: Clients,
) -> None:
    """Bytes nobody asked for, on an idle kept-alive connection, may be read as the next
    request's answer (aiohttp's pool does not look before reuse); the record's id check
    refuses one that belongs to another campaign, so no campaign ever shows another's data."""

    async def chatty(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        while await read_request(reader, up):
            writer.write(raw_answer())
            await writer.drain()
            await asyncio.sleep(0.01)  # the server's pace: the answer is read first
            writer.write(raw_answer(b'{"id": "cmp_other", "status": "cancelled"}'))

    refusals: list[str] = []
    async with upstream_running(chatty) as upstream:
        client = scripted_client(clients, upstream)
        for _ in range(4):
            try:
                record = await client.fetch_campaign("cmp_1")
            except InvalidResponseError as exc:
                refusals.append(str(exc))
            else:
                assert (record.id, record.status) == ("cmp_1", "active")
    assert refusals  # the pushed answers did arrive, and were refused for their id
    assert {text.partition(": ")[2] or text for text in refusals} == {
        "record id does not match the requested campaign"
    }


async def test_a_kept_alive_connection_closed_by_the_server_is_retried(clients: Clients) -> None:
    """The server answers, then closes its idle connection as the next request goes out: the
    GET is sent again on a new connection, and succeeds."""

    async def once(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        writer.write(raw_answer())
        await writer.drain()
        await read_request(reader, up)  # the next request arrives: hang up without a word

    async with upstream_running(once) as upstream:
        client = scripted_client(clients, upstream)
        for _ in range(3):
            assert (await client.fetch_campaign("cmp_1")).id == "cmp_1"
    assert upstream.connections == 3


async def test_an_answer_cut_short_is_not_retried(clients: Clients) -> None:
    """Part of an answer came, then the close: a connection failure with the status, never
    sent again."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await read_request(reader, up)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + RECORD_BODY[:10])
        await writer.drain()

    async with upstream_running(cut) as upstream:
        with pytest.raises(ConnectionFailedError, match="cut short") as info:
            await scripted_client(clients, upstream).fetch_campaign("cmp_1")
    assert info.value.status == 200
    assert (upstream.connections, len(upstream.requests)) == (1, 1)


async def test_an_error_answer_whose_body_stalls_is_classified_at_once(clients: Clients) -> None:
    """A 429 with Retry-After whose body never comes is a rate limit at once, not a timeout."""
    raw = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 1000\r\n\r\n{"
    async with upstream_running(answer_once(raw)) as upstream:
        client = scripted_client(clients, upstream, timeout=30.0)
        with pytest.raises(HTTPStatusError) as info:
            async with asyncio.timeout(10):
                await client.fetch_campaign("cmp_1")
    assert (info.value.status, info.value.retry_after) == (429, 30)


async def test_the_deadline_closes_the_connection_of_a_silent_server(clients: Clients) -> None:
    """Nothing at all on an open connection: the deadline ends the request as a timeout, and
    the server sees its connection closed (none is kept half-used)."""
    async with upstream_running(answer_once(b"")) as upstream:
        with pytest.raises(RequestTimeoutError):
            await scripted_client(clients, upstream, timeout=0.3).fetch_campaign("cmp_1")
        async with asyncio.timeout(5):
            await upstream.closed_by_client.wait()


@pytest.mark.parametrize("in_session", [True, False], ids=["session-headers", "request-headers"])
async def test_requests_carry_the_host_and_headers_on_kept_alive_connections(
    clients: Clients, in_session: bool
) -> None:
    """Ten GETs travel on one kept-alive connection, each with Host, the key, Accept and the
    User-Agent once each, whether the session sends the headers (as client_for makes it) or
    each request names them."""
    async with upstream_running(keep_answering) as upstream:
        client = scripted_client(clients, upstream, headers_in_session=in_session)
        for _ in range(10):
            await client.fetch_campaign("cmp_1")
    assert upstream.connections == 1
    assert len(upstream.requests) == 10
    for head in upstream.requests:
        assert head.startswith(b"GET /v1/campaigns/cmp_1 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{upstream.port}\r\n".encode() in head
        assert head.count(f"Authorization: Bearer {API_KEY}\r\n".encode()) == 1
        assert head.count(b"Accept: application/json\r\n") == 1
        assert head.count(f"User-Agent: {USER_AGENT}\r\n".encode()) == 1


# --- TLS -----------------------------------------------------------------------------------------


def tls_server(leaf: trustme.LeafCert) -> ssl.SSLContext:
    """A server context presenting ``leaf``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


async def test_tls_is_verified_against_the_trust_store_given(clients: Clients) -> None:
    """A certificate from a trusted CA for the right host works, on one kept-alive connection."""
    authority = trustme.CA()
    async with upstream_running(
        keep_answering, tls_server(authority.issue_cert("127.0.0.1"))
    ) as up:
        url = f"https://127.0.0.1:{up.port}/v1"
        session = create_session(4, trusting(authority))
        client = clients.add(DialNexaClient(session, url, SecretStr(API_KEY), timeout_seconds=5))
        for _ in range(2):
            assert (await client.fetch_campaign("cmp_1")).id == "cmp_1"
    assert up.connections == 1


@pytest.mark.parametrize(
    ("case", "why"),
    [
        pytest.param("expired", "certificate has expired", id="expired"),
        pytest.param("wrong-host", "mismatch, certificate is not valid for", id="wrong-host"),
        pytest.param("untrusted", "unable to get local issuer certificate", id="untrusted-ca"),
    ],
)
async def test_a_failed_tls_handshake_says_why(clients: Clients, case: str, why: str) -> None:
    """An expired certificate, one for another host, or one from a CA nobody trusts: a
    connection failure naming TLS, the address and the reason, never just VERIFY_FAILED."""
    authority = trustme.CA()
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    leaf = {
        "expired": lambda: authority.issue_cert(
            "127.0.0.1", not_before=past, not_after=past + datetime.timedelta(days=1)
        ),
        "wrong-host": lambda: authority.issue_cert("api.example.com"),
        "untrusted": lambda: trustme.CA().issue_cert("127.0.0.1"),
    }[case]()
    async with upstream_running(keep_answering, tls_server(leaf)) as up:
        url = f"https://127.0.0.1:{up.port}/v1"
        session = create_session(4, trusting(authority))
        client = clients.add(DialNexaClient(session, url, SecretStr(API_KEY), timeout_seconds=5))
        with pytest.raises(ConnectionFailedError) as info:
            await client.fetch_campaign("cmp_1")
    message = str(info.value)
    assert message.startswith(f"TLS with 127.0.0.1:{up.port} failed: ")
    assert why in message
    assert up.requests == []  # not a byte of the request, key included, went out


# --- redirects the client cannot follow ----------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("http://[::1", id="unclosed-ipv6"),
        pytest.param("http://xn--zz.com/v1/campaigns/cmp_1", id="bad-idna-label"),
        pytest.param("http://127.0.0.1:99999/v1/campaigns/cmp_1", id="bad-port"),
        pytest.param("http://127.0.0.1:notaport/", id="port-not-a-number"),
        pytest.param("http://user:password@127.0.0.1:{port}/v1/campaigns/cmp_1", id="credentials"),
        pytest.param("//user@127.0.0.1:{port}/v1/campaigns/cmp_1", id="relative-with-user"),
    ],
)
async def test_a_location_the_client_cannot_follow_is_an_invalid_response(
    clients: Clients, location: str
) -> None:
    """A Location that cannot be parsed (bad IPv6, IDNA label or port) or that carries
    credentials, even to the API's own origin, is a typed invalid response counted under the
    redirect's status; nothing more is requested."""
    recorder = Recorder()

    async def redirect(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        while await read_request(reader, up):
            target = location.replace("{port}", str(up.port)).encode()
            writer.write(
                raw_answer(b"", status="302 Found", extra=b"Location: " + target + b"\r\n")
            )
            await writer.drain()

    async with upstream_running(redirect) as upstream:
        client = make_client(clients, upstream.api_url, observer=recorder)
        with pytest.raises(InvalidResponseError, match="redirect to a Location") as info:
            await client.fetch_campaign("cmp_1")
    assert info.value.status == 302
    assert recorder.codes == ["302"]
    assert len(upstream.requests) == 1
