"""What hostile traffic may make the exporter log: one line per burst, and never a credential.

A malformed request, a client that hangs up mid-answer or a flood that exhausts file
descriptors is the client's problem or an attack, not the exporter's: each is at most one
warning line per burst (the rest at debug level, counted in the next warning), never a
traceback, and never the request's bytes, which may carry an ``Authorization`` header. As a last
line of defence every formatted log line is scrubbed of credentials in the shapes HTTP uses.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

from exporter.logformat import printable_record

BURST_WINDOW_SECONDS = 60.0

# "Authorization: Basic dXNlcjpwYXNz", "Cookie: a=b", "'authorization': 'Bearer x'": the value
# after a credential-bearing header name, up to the end of the line or a closing quote.
_CREDENTIAL_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie|x-api-key)(['\"]?\s*[:=]\s*['\"]?)"
    r"[^\r\n'\"]+"
)
# "Basic dXNlcjpwYXNz", "Bearer sk_live_..." anywhere else in a line.
_CREDENTIAL_TOKEN = re.compile(r"(?i)\b(basic|bearer|digest|negotiate)(\s+)[A-Za-z0-9._~+/=-]{6,}")
REDACTED = "<redacted>"


def redact(text: str) -> str:
    """``text`` with the values of credential headers and auth-scheme tokens replaced."""
    text = _CREDENTIAL_HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _CREDENTIAL_TOKEN.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


class RedactingFormatter(logging.Formatter):
    """The one place a log line is finished: the message and exception text made printable
    (``logformat.printable``), formatted with ``inner`` (text, logfmt or JSON), then scrubbed
    of credentials."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's line of the printable record, redacted."""
        return redact(self._inner.format(printable_record(record, self._inner)))


class BurstLog:
    """One warning for the first of a burst of like events; the rest at debug level only,
    counted in the next warning, so that a flood costs one line per window."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        window: float = BURST_WINDOW_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._what = what
        self._window = window
        self._monotonic = monotonic
        self._quiet_until = float("-inf")
        self._suppressed = 0

    def event(self, detail: str) -> None:
        """Record one event; ``detail`` must hold nothing a client chose (no request bytes)."""
        now = self._monotonic()
        if now >= self._quiet_until:
            more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
            self._logger.warning(
                "%s: %s%s; more in the next %gs are logged at debug level only",
                self._what,
                detail,
                more,
                self._window,
            )
            self._quiet_until = now + self._window
            self._suppressed = 0
            return
        self._suppressed += 1
        self._logger.debug("%s: %s", self._what, detail)


class QuietServerErrors(logging.Filter):
    """On aiohttp's ``aiohttp.server`` logger: a malformed request or a client that went away
    becomes one line without the exception's text (which quotes the request's bytes)."""

    def __init__(self, malformed: BurstLog, logger: logging.Logger) -> None:
        super().__init__()
        self._malformed = malformed
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for the records this filter replaces; True for the rest."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self._malformed.event(f"answered {exc.code} ({type(exc).__name__})")
            return False
        if isinstance(exc, ConnectionError):
            self._logger.debug("client went away mid-request (%s)", type(exc).__name__)
            return False
        return True


ACCEPT_ERROR_PREFIX = "socket.accept() out of system resource"


class AcceptErrorBursts(logging.Filter):
    """On the ``asyncio`` logger: "socket.accept() out of system resource" (EMFILE and the like,
    logged with a traceback per attempt) becomes one warning per burst."""

    def __init__(self, bursts: BurstLog) -> None:
        super().__init__()
        self._bursts = bursts

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for accept errors, which are counted instead; True for the rest."""
        if not str(record.msg).startswith(ACCEPT_ERROR_PREFIX):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        self._bursts.event(f"cannot accept connections ({reason})")
        return False


def install_log_filters(monotonic: Callable[[], float] = time.monotonic) -> None:
    """Put the burst filters on aiohttp's server logger and asyncio's logger (once)."""
    own = logging.getLogger("exporter.http")
    targets: tuple[tuple[str, logging.Filter], ...] = (
        (
            "aiohttp.server",
            QuietServerErrors(BurstLog(own, "malformed HTTP requests", monotonic=monotonic), own),
        ),
        (
            "asyncio",
            AcceptErrorBursts(BurstLog(own, "connection accept errors", monotonic=monotonic)),
        ),
    )
    for name, new in targets:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if type(f) is type(new)]:
            logger.removeFilter(old)
        logger.addFilter(new)
