"""HTTP basic auth against bcrypt hashes, with a bounded, fair queue of password checks.

Follows the exporter-toolkit: an unknown user is checked against a decoy hash so timing does
not reveal which users exist, and a successful check is remembered (an HMAC of the credentials
under a per-process random key, compared in constant time) so a scraper every 15 s does not pay
bcrypt on each scrape.

bcrypt is slow on purpose (tens of milliseconds a check), so the checks that cannot be answered
from memory are the one costly thing a client without credentials can make the exporter do.
They run on a few worker threads of their own, first come first served, and are admitted only
within limits: one pending check per client address and user name, a few per client address,
a few dozen in all. Whatever is beyond is answered at once (429), so a flood of wrong guesses
costs the guesser, never a valid login's wait, which stays within the bounded queue ahead of it
(at most ``max_pending / workers`` checks). Identical credentials already being checked wait
for that check instead of queueing another.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bcrypt

from exporter.logs import BurstLog

log = logging.getLogger("exporter.basic_auth")


class Verdict(enum.Enum):
    """The outcome of one request's credentials."""

    ALLOWED = "allowed"
    DENIED = "denied"
    BUSY = "busy"  # too many checks pending: answered at once, the client may retry


@dataclass(frozen=True, slots=True)
class CheckLimits:
    """How many password checks may run and wait, in all and per client."""

    workers: int = 2
    max_pending: int = 32
    per_client: int = 8  # one client address, whatever the user names
    per_login: int = 1  # one client address and user name


def parse_basic_authorization(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic`` header, or None if it is not one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


class CheckQueue:
    """Admits password checks within ``limits`` and runs them in order on worker threads."""

    def __init__(self, limits: CheckLimits | None = None) -> None:
        self._limits = limits or CheckLimits()
        self._pool: ThreadPoolExecutor | None = None
        self._pending = 0
        self._by_client: Counter[str] = Counter()
        self._by_login: Counter[tuple[str, str]] = Counter()

    @property
    def pending(self) -> int:
        """Checks admitted and not finished (running or waiting for a worker)."""
        return self._pending

    def submit(
        self, client: str, user: str, check: Callable[[], bool]
    ) -> asyncio.Future[bool] | None:
        """Queue ``check`` for ``client`` logging in as ``user``; None when over a limit."""
        limits, login = self._limits, (client, user)
        if (
            self._pending >= limits.max_pending
            or self._by_client[client] >= limits.per_client
            or self._by_login[login] >= limits.per_login
        ):
            return None
        if self._pool is None:
            # Threads of its own: a flood of checks never delays other work sent to the
            # default executor (reloads are parsed there).
            self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="bcrypt")
        self._pending += 1
        self._by_client[client] += 1
        self._by_login[login] += 1
        future = asyncio.get_running_loop().run_in_executor(self._pool, check)
        future.add_done_callback(lambda _: self._release(client, login))
        return future

    def _release(self, client: str, login: tuple[str, str]) -> None:
        self._pending -= 1
        self._by_client[client] -= 1
        self._by_login[login] -= 1
        # Counters of clients gone quiet are dropped, so the maps stay as small as the queue.
        if self._by_client[client] <= 0:
            del self._by_client[client]
        if self._by_login[login] <= 0:
            del self._by_login[login]

    def close(self) -> None:
        """Stop the worker threads; checks not yet started are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # bcrypt refuses passwords over 72 bytes; such a password never matches
        return False


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


class BasicAuthenticator:
    """Checks ``Authorization: Basic`` against bcrypt hashes, remembering successful checks."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        queue: CheckQueue | None = None,
        checkpw: Callable[[bytes, bytes], bool] = _bcrypt_matches,
    ) -> None:
        self._users = dict(users)
        self._queue = queue or CheckQueue()
        self._checkpw = checkpw
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._checking: dict[bytes, asyncio.Future[bool]] = {}
        self._decoy: bytes | None = None
        self._busy = BurstLog(log, "password checks saturated, answering 429")

    @property
    def enabled(self) -> bool:
        """True when there is at least one user, i.e. credentials are required."""
        return bool(self._users)

    def _fingerprint(self, user: str, password: bytes, hashed: bytes) -> bytes:
        message = b"".join(
            len(part).to_bytes(4, "big") + part for part in (user.encode("utf-8"), password, hashed)
        )
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _decoy_hash(self) -> bytes:
        if self._decoy is None:
            cost = max(_cost(hashed) for hashed in self._users.values())
            self._decoy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        return self._decoy

    def _check(self, password: bytes, hashed: bytes | None) -> bool:
        if hashed is None:
            # Unknown user: spend the same bcrypt time so timing does not reveal who exists.
            self._checkpw(password, self._decoy_hash())
            return False
        return self._checkpw(password, hashed)

    async def check(self, authorization: str | None, client: str | None = None) -> Verdict:
        """The verdict on an Authorization header sent from the address ``client``."""
        if not self._users:
            return Verdict.ALLOWED
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        hashed = self._users.get(user)
        fingerprint = self._fingerprint(user, password, hashed or b"")
        remembered = self._verified.get(user)
        if remembered is not None and hmac.compare_digest(remembered, fingerprint):
            return Verdict.ALLOWED
        pending = self._checking.get(fingerprint)
        if pending is None:
            pending = self._queue.submit(client or "", user, lambda: self._check(password, hashed))
            if pending is None:
                self._busy.event(f"{self._queue.pending} checks pending")
                return Verdict.BUSY
            self._checking[fingerprint] = pending
            pending.add_done_callback(lambda _: self._checking.pop(fingerprint, None))
        # Shielded: a client hanging up must not cancel a check others may be waiting for.
        if not await asyncio.shield(pending):
            return Verdict.DENIED
        if hashed is not None:
            self._verified[user] = fingerprint
        return Verdict.ALLOWED
