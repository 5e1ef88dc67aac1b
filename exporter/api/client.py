"""DialNexa API client on aiohttp's: auth, bounds, deadlines, redirects, typed errors.

Whatever the API sends, the client holds: a response line or header line over 8 KiB, more than
128 headers, a body over 256 KiB after decompression (announced, chunked or read to the close;
gzip and deflate inflate a bounded step at a time), more than three redirects, a redirect to
another origin (the key is never sent there) and a request past its whole-request deadline are
each a typed FetchError, never an exception of another kind.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Protocol
from urllib.parse import quote

import aiohttp
from aiohttp.http_exceptions import ContentEncodingError
from pydantic import SecretStr
from yarl import URL

from exporter import __version__
from exporter.api.models import Campaign, RecordError, fast_campaign, parse_campaign
from exporter.clock import Clock
from exporter.config import ConfigError, Settings, env_name, shorten

log = logging.getLogger("exporter.client")

# A record whose texts are at their caps (4 x 128 characters, each up to 12 bytes as an escaped
# surrogate pair) and every other field set is under 7 KB of JSON. 256 KiB leaves over 35 times
# that for fields the API may add and for text past the caps (read, then cut); a larger body is
# refused. The cap also bounds a fetch's passing memory (the body, then its decoded text: under
# 1 MiB), which every request in flight holds at once (docs/performance.md, "Records at their
# caps").
MAX_BODY_BYTES = 256 * 1024
# The longest response line and header line, and the most headers, an answer may have (aiohttp's
# own defaults, stated here as the client's bounds).
MAX_LINE_BYTES = 8190
MAX_HEADERS = 128
MAX_REDIRECTS = 3
# Campaign URLs kept for reuse; beyond this many ids the cache starts afresh.
MAX_KEPT_URLS = 100_000
USER_AGENT = f"dialnexa-exporter/{__version__}"
# Upper bounds of the API request duration histogram, in seconds.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A Retry-After of more digits than this is read as "very long" (and capped by the poller):
# int() of thousands of digits is slow, and float() of over 308 overflows.
_RETRY_AFTER_MAX_DIGITS = 9
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_ENCODING = "Content-Encoding"


class FetchError(Exception):
    """A campaign could not be fetched; subclasses say why.

    ``status`` is the HTTP status of the answer the failure came with, None when there was
    no answer (timeouts, connection failures).
    """

    status: int | None = None

    def with_status(self, status: int) -> FetchError:
        """This error, noting the status of the answer it came with."""
        self.status = status
        return self


class RequestTimeoutError(FetchError):
    """The whole request did not finish within the timeout."""


class ConnectionFailedError(FetchError):
    """No usable connection: refused, reset, DNS failure, TLS failure, truncated body."""


class InvalidResponseError(FetchError):
    """The API answered, but not with a usable campaign record."""


class HTTPStatusError(FetchError):
    """The API answered with a non-success status."""

    status: int

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class RequestHeaders(dict[str, str]):
    """The headers of every request; they hold the key, so their repr shows names only."""

    def __repr__(self) -> str:
        return f"RequestHeaders({', '.join(self)})"


class RequestObserver(Protocol):
    """Told about every HTTP exchange: status code (or ``error``) and seconds taken."""

    def observe_request(self, code: str, duration: float) -> None:
        """Record one request."""


class _NoObserver:
    def observe_request(self, code: str, duration: float) -> None:
        return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None.

    Delta-seconds are ASCII digits only (``²`` is a digit to Python, not to HTTP); absurdly long
    ones read as 10^9 seconds, for the caller to cap. A date that cannot be read is None.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        if len(text) > _RETRY_AFTER_MAX_DIGITS:
            return float(10**_RETRY_AFTER_MAX_DIGITS)
        return float(int(text))
    if len(text) > 64 or not text.isascii():  # an HTTP-date is 29 characters
        return None
    try:
        when = parsedate_to_datetime(text)
        seconds = when.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds)


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, (url.host or "").lower(), url.port)


class Deadlines:
    """Whole-request deadlines for many concurrent requests, on one shared, coarse timer.

    ``asyncio.timeout`` arms and cancels a timer per request, about ten microseconds each on a
    small machine: a tenth of a second per round of ten thousand fetches. Here a request only
    notes its deadline; one timer, armed while requests are in flight, looks every
    ``resolution`` seconds for requests past their deadline and cancels them. A request
    therefore ends between ``timeout`` and ``timeout + resolution`` seconds after it started.
    Cancellations from elsewhere (shutdown) are told apart with ``Task.uncancel``, the way
    ``asyncio.timeout`` does it.
    """

    def __init__(self, resolution: float) -> None:
        self._resolution = resolution
        self._inflight: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the requests

    def start(self, seconds: float) -> asyncio.Task[object]:
        """Note that the current task's request must end within ``seconds``."""
        loop = self._loop
        if loop is None or not loop.is_running():  # first use, or a later loop (tests)
            loop = self._loop = asyncio.get_running_loop()
        # Given the loop, current_task() does not look it up again: on Python 3.11 each look-up
        # is a getpid() system call, one per request otherwise.
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self._inflight[task] = loop.time() + seconds
        if self._timer is None:
            self._timer = loop.call_later(self._resolution, self._check, loop)
        return task

    def finish(self, task: asyncio.Task[object]) -> bool:
        """The request of ``task`` ended; True if it was cancelled by its deadline (only)."""
        del self._inflight[task]
        if not self._inflight and self._timer is not None:
            self._timer.cancel()  # idle: no timer left armed
            self._timer = None
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._inflight.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = None
        if self._inflight:
            self._timer = loop.call_later(self._resolution, self._check, loop)


class DialNexaClient:
    """Fetches campaign records; never sends the key to any origin but the API URL's own."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        api_key: SecretStr,
        *,
        timeout_seconds: float,
        observer: RequestObserver | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_time: Callable[[], float] = time.time,
        before_request: Sequence[Callable[[], Awaitable[None]]] = (),
        on_headers: Callable[[Mapping[str, str]], None] | None = None,
    ) -> None:
        self._session = session
        self._base = URL(api_url.rstrip("/"))
        self._origin = _origin(self._base)
        self._timeout_seconds = timeout_seconds
        self._observer: RequestObserver = observer or _NoObserver()
        self._monotonic = monotonic
        self._wall_time = wall_time
        self._before_request = tuple(before_request)  # waited for in turn before each request
        self._on_headers = on_headers  # told every answer's headers (the rate-limit budget)
        # Built once, for every request; none are named per request when the session sends
        # them already (client_for makes it so): aiohttp merges a request's headers into the
        # session's in Python, about a microsecond a fetch.
        headers = request_headers(api_key)
        sent = all(session.headers.get(name) == value for name, value in headers.items())
        self._headers: RequestHeaders | None = None if sent else headers
        self._campaigns_path = f"{self._base.raw_path.rstrip('/')}/campaigns/"
        # URLs are kept: yarl caches a URL's encoded parts in it, which a fresh one redoes.
        self._urls: dict[str, URL] = {}
        self._deadlines = Deadlines(resolution=min(1.0, timeout_seconds / 10))

    def __repr__(self) -> str:
        return f"DialNexaClient(api_url={str(self._base)!r})"

    async def close(self) -> None:
        """Close the client's session and its connections."""
        await self._session.close()

    def campaign_url(self, campaign_id: str) -> URL:
        """URL of one campaign; the id is percent-encoded so it can never change the path."""
        url = self._urls.get(campaign_id)
        if url is None:
            if len(self._urls) >= MAX_KEPT_URLS:
                self._urls.clear()  # ids dropped by config reloads do not pile up for ever
            path = self._campaigns_path + quote(campaign_id, safe="")
            url = self._urls[campaign_id] = self._base.with_path(path, encoded=True)
        return url

    def retain(self, campaign_ids: Iterable[str]) -> None:
        """Forget the kept URLs of every campaign not in ``campaign_ids`` (after a reload)."""
        urls = self._urls
        self._urls = {cid: url for cid in campaign_ids if (url := urls.get(cid)) is not None}

    async def fetch_campaign(self, campaign_id: str) -> Campaign:
        """Fetch and validate one campaign, or raise a FetchError subclass."""
        record, _ = await self.fetch_changed(campaign_id, None)
        assert record is not None  # with no digest to match, every body is parsed
        return record

    async def fetch_changed(
        self, campaign_id: str, digest: int | None
    ) -> tuple[Campaign | None, int]:
        """Fetch one campaign; ``(None, digest)`` when the body is the one ``digest`` names,
        else the validated record and the digest of its body; or raise a FetchError. Same-origin
        redirects are followed; only a 2xx body is read, within MAX_BODY_BYTES. One coroutine
        for it all: each between the worker and aiohttp costs at every suspension."""
        for wait in self._before_request:
            await wait()  # waiting for a rate-limit token is not part of the request's deadline
        task, url = self._deadlines.start(self._timeout_seconds), self.campaign_url(campaign_id)
        try:
            for hop in range(MAX_REDIRECTS + 1):
                if hop:
                    for wait in self._before_request:
                        await wait()  # every redirect hop is a request too
                started, code, status = self._monotonic(), "error", None
                try:
                    try:
                        get = self._session.get(url, headers=self._headers, allow_redirects=False)
                        async with get as answer:
                            status, headers, body = answer.status, answer.headers, b""
                            if 200 <= status < 300:  # an error's body is not read
                                size = answer.content_length
                                if size is None or size > MAX_BODY_BYTES or _ENCODING in headers:
                                    body = await _read_capped(answer)
                                else:
                                    body = await answer.read()  # a known size within the cap
                    except (FetchError, aiohttp.ClientError) as exc:
                        raise _fetch_error(exc, url, status) from None
                    code = str(status)
                    if self._on_headers is not None:
                        self._on_headers(headers)
                    if 200 <= status < 300:
                        break
                    url = self._redirect_or_raise(url, status, headers)
                except FetchError as exc:
                    code = _counted_as(exc, code)
                    raise
                finally:
                    self._observer.observe_request(code, self._monotonic() - started)
            else:
                raise InvalidResponseError(f"more than {MAX_REDIRECTS} redirects").with_status(
                    int(code)
                )
        except BaseException:
            if self._deadlines.finish(task):  # cancelled by its deadline, and nothing else
                limit = f"{self._timeout_seconds:g}s"
                raise RequestTimeoutError(f"no complete answer within {limit}") from None
            raise
        self._deadlines.finish(task)
        return self._record(status, body, campaign_id, digest)

    def _record(
        self, status: int, body: bytes, campaign_id: str, digest: int | None
    ) -> tuple[Campaign | None, int]:
        """The record in a 2xx ``body``: None when it is the body ``digest`` names."""
        # Python's own hash of the bytes (SipHash, 64 bits, keyed per process): a tenth of the
        # cost of blake2b, and two different bodies of one campaign that hash alike, so that
        # the second is taken for the first, happen about once in 2^64 changes.
        body_digest = hash(body)
        if body_digest == digest:
            return None, body_digest
        record = fast_campaign(body, campaign_id)
        if record is not None:  # every field as documented: checked in compiled code
            return record, body_digest
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidResponseError("body is not valid JSON").with_status(status) from None
        except RecursionError:  # arrays or objects nested thousands deep
            raise InvalidResponseError("body is nested too deeply").with_status(status) from None
        try:
            return parse_campaign(document, campaign_id), body_digest
        except RecordError as exc:
            raise InvalidResponseError(str(exc)).with_status(status) from None

    def _redirect_or_raise(self, url: URL, status: int, headers: Mapping[str, str]) -> URL:
        """The next hop of a redirect answer; HTTPStatusError for any other non-2xx one."""
        if status in _REDIRECT_CODES:
            return self._redirect_target(url, headers.get("Location"))
        retry_after = parse_retry_after(headers.get("Retry-After"), self._wall_time())
        raise HTTPStatusError(status, retry_after)

    def _redirect_target(self, current: URL, location: str | None) -> URL:
        if not location:
            raise InvalidResponseError("redirect without a Location header")
        try:
            target = current.join(URL(location))
            origin = _origin(target)  # yarl checks the host (IDNA) and the port lazily
        except (ValueError, UnicodeError, TypeError):  # `http://[::1`, a bad label or port
            raise InvalidResponseError("redirect to a Location that cannot be parsed") from None
        if origin != self._origin:
            # Following it would hand the Bearer token to another host.
            host = shorten(target.host or "", 100)  # the API's text: printed escaped, and cut
            raise InvalidResponseError(f"redirect to another origin ({host}) refused")
        if target.raw_user is not None or target.raw_password is not None:
            # aiohttp would send them as Basic credentials in place of the key.
            raise InvalidResponseError("redirect to a Location carrying credentials refused")
        return target


def _counted_as(exc: FetchError, code: str) -> str:
    """The code a request that failed with ``exc`` is counted under, ``code`` being its
    answer's status (``error`` without one); ``exc`` is given that status if it has none."""
    if exc.status is not None:
        return str(exc.status)  # a body over the cap, undecodable or cut short
    if code != "error":
        exc.with_status(int(code))  # a redirect refused: the answer's status
    return code


def _fetch_error(exc: FetchError | aiohttp.ClientError, url: URL, status: int | None) -> Exception:
    """What an exchange that failed with ``exc`` raises: a FetchError noting the answer's
    status once there is one; aiohttp's own timeout errors stay as they are (they are
    ClientErrors too), for the deadline to judge."""
    if isinstance(exc, TimeoutError):
        return exc
    error = exc if isinstance(exc, FetchError) else _client_error(exc, url)
    return error.with_status(status) if status is not None else error


def _client_error(exc: aiohttp.ClientError, url: URL) -> FetchError:
    """The FetchError an aiohttp client error stands for."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        if isinstance(exc.__cause__, ContentEncodingError):
            return InvalidResponseError("body cannot be decoded (corrupt compressed data)")
        return ConnectionFailedError("response body was cut short")
    if isinstance(exc, aiohttp.InvalidURL):  # only a redirect's target can be so odd
        return InvalidResponseError("redirect to a target that cannot be requested")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        reason = exc.strerror or type(exc.os_error).__name__
        return ConnectionFailedError(f"cannot connect to the proxy {exc.host}:{exc.port}: {reason}")
    if isinstance(exc, aiohttp.ClientHttpProxyError):  # the proxy answered CONNECT with an error
        try:
            phrase = HTTPStatus(exc.status).phrase  # not the proxy's own text
        except ValueError:
            phrase = "error"
        where = f"{url.host}:{url.port}"
        return ConnectionFailedError(
            f"the proxy refused a tunnel to {where}: {exc.status} {phrase}"
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ConnectionFailedError(f"cannot resolve host {url.host}")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        why = getattr(error, "verify_message", None) or getattr(error, "reason", None)
        return ConnectionFailedError(f"TLS with {url.host}:{url.port} failed: {why or error}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.strerror or type(exc.os_error).__name__
        return ConnectionFailedError(f"cannot connect to {url.host}:{url.port}: {reason}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionFailedError("server closed the connection")
    if isinstance(exc, aiohttp.ClientResponseError):  # a head aiohttp's parser refused
        # Its message quotes the offending bytes over several lines: only what went wrong.
        what = exc.message.partition(":")[0].strip()
        if what.lower().startswith("can not decode content-encoding"):
            return InvalidResponseError("body in a Content-Encoding the client cannot decode")
        return ConnectionFailedError(f"malformed HTTP response ({what[:80]!r})")
    return ConnectionFailedError(type(exc).__name__)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The body of an answer of unknown or compressed size, decoded, or InvalidResponseError
    once it is over MAX_BODY_BYTES (or announced so). aiohttp inflates gzip and deflate a
    bounded step at a time, so a bomb stops near the cap."""
    length = response.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise InvalidResponseError(f"body of {length} bytes exceeds the {MAX_BODY_BYTES} cap")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidResponseError(f"body exceeds the {MAX_BODY_BYTES} byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def proxy_for(api_url: str) -> URL | None:
    """The proxy the environment names for ``api_url``, or None to connect directly.

    The rules of aiohttp's ``trust_env`` and of urllib: ``HTTPS_PROXY`` for an https:// API,
    ``HTTP_PROXY`` for an http:// one (the lower-case names win), unless ``NO_PROXY`` names the
    API's host. They are read once, here, not per request as ``trust_env`` does, and without
    ``.netrc``, whose credentials aiohttp would add as an Authorization header beside the key.
    Credentials in the proxy URL (``http://user:password@proxy:3128``) go to the proxy only, as
    ``Proxy-Authorization``; its errors never show them.
    """
    url = URL(api_url)
    names = (f"{url.scheme}_proxy", f"{url.scheme.upper()}_PROXY")
    variable = next((name for name in names if os.environ.get(name, "").strip()), None)
    if variable is None or url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    value = os.environ[variable].strip()
    if "://" not in value:
        value = "http://" + value  # `proxy:3128`, as curl reads it
    try:
        proxy = URL(value)
        valid = proxy.scheme == "http" and bool(proxy.host) and proxy.port is not None
    except (ValueError, UnicodeError, TypeError):
        valid = False
    if not valid or proxy.raw_path not in ("", "/") or proxy.raw_query_string:
        # The value is not quoted: it may carry the proxy's password.
        problem = "must be a proxy URL such as http://proxy.internal:3128"
        if value.lower().startswith("https://"):
            problem += " (the proxy is spoken to in plain HTTP; an https:// API stays TLS inside)"
        raise ConfigError(variable, problem)
    shown = str(proxy.with_user(None).with_path(""))
    log.info("API requests to %s go through the proxy %s (%s)", url.host, shown, variable)
    return proxy


def request_headers(api_key: SecretStr) -> RequestHeaders:
    """The headers of every API request: the key, JSON, the exporter's name."""
    return RequestHeaders(
        {
            "Authorization": f"Bearer {api_key.get_secret_value()}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
    )


def create_session(
    max_connections: int,
    ssl_context: ssl.SSLContext | None = None,
    proxy: URL | None = None,
    headers: Mapping[str, str] | None = None,
) -> aiohttp.ClientSession:
    """The API session: at most ``max_connections`` connections, the head bounds, no cookies,
    no deadline of aiohttp's (the client keeps its own); through ``proxy`` when one is given;
    sending ``headers`` with every request (never to the proxy itself)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections, ttl_dns_cache=300, ssl=ssl_context if ssl_context else True
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,  # proxy_for reads the environment once instead
        proxy=proxy,
        cookie_jar=aiohttp.DummyCookieJar(),  # the API sets no cookies; none are kept or sent
        headers=headers,
        raise_for_status=False,
        auto_decompress=True,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_LINE_BYTES,
        max_headers=MAX_HEADERS,
    )


@dataclass(frozen=True, slots=True)
class HistogramData:
    """Cumulative bucket counts (``bounds`` in order, then +Inf), their sum and count."""

    bounds: tuple[float, ...] = DURATION_BUCKETS
    buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    total: float = 0.0

    @property
    def count(self) -> int:
        """Observations in all."""
        return self.buckets[-1]


class RequestStats:
    """API request counters and duration histogram: the client reports every exchange here."""

    def __init__(self) -> None:
        self._by_code: dict[str, int] = {}
        self._buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self._sum = 0.0

    def observe_request(self, code: str, duration: float) -> None:
        """Count one request and its duration."""
        self._by_code[code] = self._by_code.get(code, 0) + 1
        self._buckets[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self._sum += duration

    def requests_by_code(self) -> tuple[tuple[str, int], ...]:
        """Counts per status code, sorted by code."""
        return tuple(sorted(self._by_code.items()))

    def histogram(self) -> HistogramData:
        """Cumulative histogram of durations."""
        cumulative: list[int] = []
        running = 0
        for count in self._buckets:
            running += count
            cumulative.append(running)
        return HistogramData(buckets=tuple(cumulative), total=self._sum)


class TokenBucket:
    """Caps the request rate: ``rate`` tokens per second, bursts of at most ``burst``."""

    def __init__(self, rate: float, clock: Clock, burst: float | None = None) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self._burst
        self._clock = clock
        self._stamp = clock.monotonic()
        self._lock = asyncio.Lock()
        self._never = asyncio.Event()  # waits on the clock are for time alone

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait until one request may start."""
        async with self._lock:  # first come, first served
            self._refill()
            while self._tokens < 1.0:
                await self._clock.wait(self._never, (1.0 - self._tokens) / self._rate)
                self._refill()
            self._tokens -= 1.0


class Budget(Protocol):
    """What the client needs of the API budget (exporter.api.budget.ApiBudget)."""

    async def acquire(self) -> None:
        """Wait until the budget allows the next request."""

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the budget from an answer's headers."""


def client_for(
    settings: Settings,
    clock: Clock,
    *,
    observer: RequestObserver | None = None,
    budget: Budget | None = None,
) -> DialNexaClient:
    """The client as the settings configure it: key, URL, timeout, connections, the request-rate
    cap and the API budget's pacing before every request. The key must be set (load_settings
    checks it); the caller closes the client."""
    if settings.api_key is None:
        raise ConfigError(env_name("api_key"), "is required")
    limiter = (
        TokenBucket(settings.max_requests_per_second, clock)
        if settings.max_requests_per_second
        else None
    )

    session = create_session(
        settings.max_concurrency,
        proxy=proxy_for(settings.api_url),
        headers=request_headers(settings.api_key),
    )
    return DialNexaClient(
        session,
        settings.api_url,
        settings.api_key,
        timeout_seconds=settings.request_timeout_seconds,
        observer=observer,
        monotonic=clock.monotonic,
        wall_time=clock.time,
        before_request=[limit.acquire for limit in (limiter, budget) if limit is not None],
        on_headers=budget.observe if budget is not None else None,
    )
