"""Basic auth against bcrypt hashes (exporter/web/basic_auth.py): remembered logins, and the
bounded, fair queue of password checks that keeps a flood of wrong guesses from delaying a valid
login.

The flood tests hold every check at a gate (a threading.Event) until the test opens it, so
"answered at once" is shown by answers arriving while the gate is still shut, never by timing.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from exporter.web.basic_auth import (
    BasicAuthenticator,
    CheckLimits,
    CheckQueue,
    Verdict,
    parse_basic_authorization,
)
from exporter.web.server import create_app
from exporter.web.webconfig import WebConfigWatcher, protect
from tests.helpers import StartSim, campaign, exporter_settings, serve_guarded, wait_for

ALICE_PASSWORD = "correct horse battery staple"
ALICE_HASH = bcrypt.hashpw(ALICE_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
BOB_PASSWORD = "bobs own password"
BOB_HASH = bcrypt.hashpw(BOB_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    """An Authorization header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class GatedQueue(CheckQueue):
    """A real CheckQueue whose checks wait at a gate until the test opens it, recording each
    admitted check's (client, user) and how many were pending ahead of it."""

    def __init__(self, limits: CheckLimits | None = None) -> None:
        super().__init__(limits)
        self.gate = threading.Event()
        self.admitted: list[tuple[str, str, int]] = []
        self.ran = 0

    def submit(
        self, client: str, user: str, check: Callable[[], bool]
    ) -> asyncio.Future[bool] | None:
        """Admit as the real queue does; the check itself waits for the gate."""
        ahead = self.pending

        def gated() -> bool:
            self.gate.wait(timeout=30)
            self.ran += 1
            return check()

        future = super().submit(client, user, gated)
        if future is not None:
            self.admitted.append((client, user, ahead))
        return future


# --- the header and remembered logins -------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice", "pw"), ("alice", b"pw")),
        (basic("alice", "p:w"), ("alice", b"p:w")),
        ("basic " + base64.b64encode(b"u:").decode(), ("u", b"")),
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Basic !!!not-base64", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xff\xfe:pw").decode(), None),
    ],
)
def test_basic_authorization_header_parsing(
    header: str | None, expected: tuple[str, bytes] | None
) -> None:
    """Only a well-formed Basic header yields credentials; the password may contain ':'."""
    assert parse_basic_authorization(header) == expected


async def test_successful_check_is_remembered_so_bcrypt_runs_once() -> None:
    """A repeated good login skips bcrypt; wrong or unknown credentials always pay for it."""
    calls: list[bytes] = []

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return bcrypt.checkpw(password, hashed)

    auth = BasicAuthenticator({"alice": ALICE_HASH.encode()}, checkpw=counting_checkpw)
    good = basic("alice", ALICE_PASSWORD)
    assert await auth.check(good) is Verdict.ALLOWED
    assert await auth.check(good) is Verdict.ALLOWED
    assert len(calls) == 1
    assert await auth.check(basic("alice", ALICE_PASSWORD + "x")) is Verdict.DENIED
    assert len(calls) == 2
    assert await auth.check(good) is Verdict.ALLOWED
    assert len(calls) == 2
    assert await auth.check(basic("mallory", ALICE_PASSWORD)) is Verdict.DENIED
    assert len(calls) == 3
    assert calls[2] != ALICE_HASH.encode()  # the decoy hash, not a real user's


async def test_htpasswd_style_2y_hashes_and_long_passwords() -> None:
    """$2y$ hashes (htpasswd -B) verify; a password over bcrypt's 72 bytes is refused, no crash."""
    hashed = ALICE_HASH.replace("$2b$", "$2y$").encode()
    auth = BasicAuthenticator({"alice": hashed})
    assert await auth.check(basic("alice", ALICE_PASSWORD)) is Verdict.ALLOWED
    assert await auth.check(basic("alice", "x" * 100)) is Verdict.DENIED


# --- the queue ------------------------------------------------------------------------------


async def test_the_queue_admits_within_each_limit_and_frees_slots_when_checks_end() -> None:
    """One pending check per client and user, a few per client, a few dozen in all; a
    finished check frees its slots."""
    queue = GatedQueue(CheckLimits(workers=2, max_pending=5, per_client=3, per_login=1))

    def submit(client: str, user: str) -> asyncio.Future[bool] | None:
        return queue.submit(client, user, lambda: False)

    first = submit("10.0.0.1", "alice")
    assert first is not None
    assert submit("10.0.0.1", "alice") is None  # per login
    assert submit("10.0.0.1", "bob") is not None
    assert submit("10.0.0.1", "carol") is not None
    assert submit("10.0.0.1", "dave") is None  # per client
    assert submit("10.0.0.2", "alice") is not None
    assert submit("10.0.0.3", "alice") is not None
    assert submit("10.0.0.4", "alice") is None  # in all
    assert queue.pending == 5
    queue.gate.set()
    await first
    await wait_for(lambda: queue.pending == 0, what="every check finished")
    assert submit("10.0.0.1", "alice") is not None
    queue.close()


async def test_identical_credentials_share_one_check() -> None:
    """Fifty requests with the same wrong password cost one bcrypt check, not fifty (and
    none of them is refused as busy)."""
    queue = GatedQueue()
    auth = BasicAuthenticator({"alice": ALICE_HASH.encode()}, queue=queue)
    header = basic("alice", "wrong")
    checks = [asyncio.ensure_future(auth.check(header, "10.0.0.1")) for _ in range(50)]
    await wait_for(lambda: len(queue.admitted) == 1, what="the one check admitted")
    queue.gate.set()
    assert set(await asyncio.gather(*checks)) == {Verdict.DENIED}
    assert queue.ran == 1
    queue.close()


# --- a flood over HTTP ----------------------------------------------------------------------


@dataclass
class Protected:
    """The exporter with two basic auth users and a gated queue, served like the CLI does."""

    port: int
    queue: GatedQueue

    async def status(self, user: str, password: str, source: str = "127.0.0.1") -> int:
        """GET /metrics with these credentials from the loopback address ``source``."""
        connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
        headers = {"Authorization": basic(user, password)}
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"http://127.0.0.1:{self.port}/metrics", headers=headers) as response,
        ):
            await response.read()
            return response.status


@pytest.fixture
async def protected(start_simulator: StartSim, tmp_path: Path) -> AsyncIterator[Protected]:
    """The exporter behind alice and bob, its password checks held at a gate."""
    sim = await start_simulator([campaign("cmp_a")])
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  alice: {ALICE_HASH}\n  bob: {BOB_HASH}\n")
    app = create_app(exporter_settings(sim, ["cmp_a"], max_connections=1000))
    queue = GatedQueue()
    protect(app, WebConfigWatcher(config, queue=queue))
    runner, port = await serve_guarded(app)
    yield Protected(port, queue)
    queue.gate.set()
    await runner.cleanup()


async def _answered(tasks: list[asyncio.Task[int]], count: int) -> list[int]:
    """The statuses of the first ``count`` tasks to finish (the rest keep running)."""
    await wait_for(lambda: sum(t.done() for t in tasks) >= count, what=f"{count} answers")
    return [t.result() for t in tasks if t.done()]


async def test_a_flood_of_wrong_guesses_is_refused_at_once_and_a_valid_login_goes_next(
    protected: Protected,
) -> None:
    """200 concurrent wrong passwords for alice: one is checked, the other 199 get 429
    while that check is still held; bob's valid first login from the same address is
    admitted behind at most that one check, and gets in."""
    guesses = [asyncio.create_task(protected.status("alice", f"guess {i}")) for i in range(200)]
    refused = await _answered(guesses, 199)
    assert refused == [429] * 199
    bob = asyncio.create_task(protected.status("bob", BOB_PASSWORD))
    await wait_for(lambda: len(protected.queue.admitted) == 2, what="bob's check admitted")
    assert protected.queue.admitted[1] == ("127.0.0.1", "bob", 1)
    protected.queue.gate.set()
    assert await bob == 200
    assert sorted(await asyncio.gather(*guesses)) == [401] + [429] * 199


async def test_another_clients_guesses_never_take_a_valid_logins_place(
    protected: Protected,
) -> None:
    """A client guessing a different user name each time fills only its own share of the
    queue: a login from another address is still admitted, and gets in."""
    guesses = [
        asyncio.create_task(protected.status(f"user{i}", "guess", source="127.0.0.2"))
        for i in range(50)
    ]
    limits = CheckLimits()
    refused = await _answered(guesses, 50 - limits.per_client)
    assert set(refused) == {429}
    bob = asyncio.create_task(protected.status("bob", BOB_PASSWORD))
    await wait_for(
        lambda: ("127.0.0.1", "bob") in {(c, u) for c, u, _ in protected.queue.admitted},
        what="bob's check admitted",
    )
    protected.queue.gate.set()
    assert await bob == 200
    statuses = await asyncio.gather(*guesses)
    assert statuses.count(401) == limits.per_client


async def test_a_busy_answer_carries_retry_after_and_no_challenge(protected: Protected) -> None:
    """The 429 tells the client when to retry and does not say whether the user exists."""
    first = asyncio.create_task(protected.status("alice", "one"))
    await wait_for(lambda: len(protected.queue.admitted) == 1, what="the first check admitted")
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            f"http://127.0.0.1:{protected.port}/metrics",
            headers={"Authorization": basic("alice", "two")},
        ) as response,
    ):
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        assert "WWW-Authenticate" not in response.headers
        assert "alice" not in await response.text()
    protected.queue.gate.set()
    assert await first == 401
