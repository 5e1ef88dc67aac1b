"""Command line: run the exporter, the demo (simulator + exporter) or the simulator alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import re
import shlex
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import version
from typing import Any, NoReturn

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from exporter import __version__, loops
from exporter.check import run_check
from exporter.config import (
    ConfigError,
    Settings,
    env_name,
    load_settings,
)
from exporter.demo.prometheus import DEFAULT_LISTEN_ADDRESS as PROMETHEUS_LISTEN_ADDRESS
from exporter.demo.prometheus import optional_demo_prometheus, scaled_window_seconds
from exporter.demo.simulator import Simulator, demo_campaigns, load_campaigns
from exporter.logformat import formatter_for, printable
from exporter.logs import RedactingFormatter, install_log_filters
from exporter.web.connections import start_guarded_sites
from exporter.web.listen import bind_listen_address, close_all
from exporter.web.server import RELOADER, create_app
from exporter.web.webconfig import listening_context

log = logging.getLogger("exporter")

PROG = "dialnexa-exporter"


def program_as_invoked(argv0: str) -> str:
    """The command to print for running this program again: the path it was started by
    (``.venv/bin/dialnexa-exporter``), so a newcomer can paste it; the bare name otherwise."""
    if "/" in argv0 and argv0.rsplit("/", 1)[1] == PROG:
        return shlex.quote(argv0)
    return PROG


DEMO_LISTEN_ADDRESS = "127.0.0.1:10027"
DEMO_SPEED = 60.0
# The key the demo's and the simulator's fake API accept: not a secret, it opens only a
# simulation on loopback, and a fixed one lets `check --online` be pointed at the demo.
DEMO_API_KEY = "demo-key"
STALL_AFTER_DEFAULT: float = Settings.model_fields["stall_after_seconds"].default
LISTEN_SETTING = env_name("listen_address")

# Every setting but the key itself (which would show in `ps`) has a flag. Those the Prometheus
# exporter toolkit names have its spelling, with the earlier spelling kept as an alias.
_FLAG_SETTINGS: tuple[str, ...] = tuple(name for name in Settings.model_fields if name != "api_key")
TOOLKIT_FLAGS: dict[str, str] = {
    "listen_address": "--web.listen-address",
    "web_config_file": "--web.config.file",
    "telemetry_path": "--web.telemetry-path",
    "log_level": "--log.level",
    "log_format": "--log.format",
    "config_file": "--config.file",
}
_SECRET_FLAG = "--api-key"  # noqa: S105 - the name of a flag that is refused, not a key


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def flag_names(field: str) -> list[str]:
    """The flags of a setting: the toolkit's name first when it has one, then the alias."""
    names = [_flag(field)]
    if field in TOOLKIT_FLAGS:
        names.insert(0, TOOLKIT_FLAGS[field])
    return names


def typed_flag(field: str, argv: Sequence[str]) -> str | None:
    """The spelling of ``field``'s flag that ``argv`` used last (the one that counts), if any."""
    names = flag_names(field)
    typed = None
    for word in argv:
        if word == "--":
            break
        name = word.split("=", 1)[0]
        if name in names:
            typed = name
    return typed


def as_typed(error: ConfigError, argv: Sequence[str]) -> str:
    """``error`` naming what the user typed: the flag when a flag gave the setting, else as is.

    Settings name their environment variable; a value typed as ``--log.format jsn`` is reported
    as ``--log.format: ...``, which is where the user has to look.
    """
    for field in _FLAG_SETTINGS:
        if env_name(field) == error.setting:
            flag = typed_flag(field, argv)
            if flag is not None:
                return f"{flag}: {error.problem}"
    return str(error)


def _shown_default(value: object) -> str:
    if value is None or value == ():
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _env_help() -> str:
    lines = ["environment variables (flags win over them, they win over the YAML file):"]
    for field, info in Settings.model_fields.items():
        default = _shown_default(info.default)
        lines.append(f"  {env_name(field):42} default {default:28} {info.description}")
    lines.append("")
    lines.append("commands:")
    lines.append("  demo        built-in simulator and exporter together, no API key needed")
    lines.append("  check       validate the configuration (--online: fetch every campaign once)")
    lines.append("  simulator   the fake DialNexa API alone (for tests and benchmarks)")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviated flags, and whose errors never repeat an argument's value
    (a key pasted after a wrong flag must not reach the terminal or a CI log)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Exit 2 with the usage and a message naming flags only."""
        if message.startswith("unrecognized arguments:"):
            names = [word.split("=", 1)[0] for word in message.split()[2:] if word[:1] == "-"]
            message = "unrecognized arguments: " + (" ".join(names) or "(values not shown)")
        else:  # "invalid float value: 'x'", "invalid choice: 'x' (choose from ...)"
            message = re.sub(r"(value|choice): '[^']*'", r"\1 (not shown)", message)
        super().error(message)


class _RefuseSecretFlag(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{_SECRET_FLAG} is not accepted: a key on the command line shows in `ps` and "
            "shell history; set DIALNEXA_API_KEY or --api-key-file instead"
        )


def _add_setting_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] = ()) -> None:
    for field in only or _FLAG_SETTINGS:
        parser.add_argument(
            *flag_names(field),
            dest=field,
            default=None,
            help=Settings.model_fields[field].description,
        )
    parser.add_argument(_SECRET_FLAG, nargs="?", action=_RefuseSecretFlag, help=argparse.SUPPRESS)


def _default_loop_text() -> str:
    if loops.uvloop_available():
        return f"uvloop {version('uvloop')} (default; DIALNEXA_EVENT_LOOP=asyncio for asyncio's)"
    return "asyncio (uvloop not installed)"


def version_text() -> str:
    """What --version prints: name and version, Python, aiohttp, the event loop, platform."""
    return (
        f"{PROG} {__version__}\n"
        f"  python {platform.python_version()} ({platform.python_implementation()})\n"
        f"  aiohttp {aiohttp.__version__}\n"
        f"  event loop {_default_loop_text()}\n"
        f"  platform {platform.platform()}"
    )


def _add_serving_flags(parser: argparse.ArgumentParser, *, listen: str, what: str) -> None:
    """The flags the demo and the simulator share: where they serve, logs, the event loop."""
    parser.add_argument(
        "--web.listen-address", "--listen-address", dest="listen_address", default=listen,
        help=f"where {what} serves (default {listen})",
    )  # fmt: skip
    parser.add_argument(
        "--log.level", "--log-level", dest="log_level", default="info", type=str.lower,
        choices=("debug", "info", "warning", "error"), help="debug, info, warning or error",
    )  # fmt: skip
    parser.add_argument(
        "--log.format", "--log-format", dest="log_format", default="text", type=str.lower,
        choices=("text", "logfmt", "json"), help="text, logfmt or json",
    )  # fmt: skip
    parser.add_argument(
        "--event-loop", choices=("auto", "uvloop", "asyncio"), default=None,
        help="event loop (default: DIALNEXA_EVENT_LOOP, else auto)",
    )  # fmt: skip


def _add_demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="run the simulator and the exporter together (no API key needed)"
    )
    _add_serving_flags(demo, listen=DEMO_LISTEN_ADDRESS, what="the exporter")
    demo.add_argument(
        "--speed", type=float, default=DEMO_SPEED, help="simulated seconds per second"
    )
    demo.add_argument(
        "--poll-interval-seconds", default="5", help="seconds between fetches (default 5)"
    )
    demo.add_argument(
        "--prometheus",
        action="store_true",
        help="also start Prometheus (if installed) scraping the demo, with the alert rules",
    )
    demo.add_argument(
        "--prometheus-listen-address",
        default=PROMETHEUS_LISTEN_ADDRESS,
        help=f"where that Prometheus serves (default {PROMETHEUS_LISTEN_ADDRESS})",
    )


def _add_simulator_parser(commands: Any) -> None:
    sim = commands.add_parser("simulator", help="run the fake DialNexa API alone")
    _add_serving_flags(sim, listen="127.0.0.1:8080", what="it")
    sim.add_argument(
        "--campaigns", type=int, default=0, help="generate N load campaigns (0 = the demo set)"
    )
    sim.add_argument("--speed", type=float, default=DEMO_SPEED, help="simulated s per second")
    sim.add_argument("--seed", type=int, default=1, help="seed for generated campaigns")
    sim.add_argument(
        "--text-length",
        type=int,
        default=0,
        metavar="N",
        help="make every text field of the generated campaigns N random characters (mostly "
        "astral, with quotes, backslashes and newlines): records far past the exporter's caps",
    )
    sim.add_argument(
        "--api-key", default=DEMO_API_KEY, help="the fake key the simulator accepts (not a secret)"
    )


def _add_check_parser(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="validate the configuration as start-up does; --online also fetches each campaign",
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="fetch every configured campaign once (exit 1 if any fails)",
    )
    _add_setting_flags(check)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: the exporter's flags, and the demo, check and simulator commands."""
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [flags] [{demo,check,simulator}] [command flags]  (--help: all flags)",
        description="Prometheus exporter for DialNexa outbound calling campaigns.",
        epilog=_env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    _add_setting_flags(parser)
    commands = parser.add_subparsers(
        dest="command", metavar="{demo,check,simulator}", parser_class=_Parser
    )
    _add_demo_parser(commands)
    _add_check_parser(commands)
    _add_simulator_parser(commands)
    return parser


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger once."""
    handler = logging.StreamHandler(sys.stderr)
    # Whatever the format, no credential reaches the log; floods of bad requests or accept
    # errors are one line per burst.
    handler.setFormatter(RedactingFormatter(formatter_for(fmt)))
    install_log_filters()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for field in _FLAG_SETTINGS:
        value = getattr(args, field, None)
        if value is not None:
            flags[field] = value
    return flags


class _StopSignals:
    """SIGTERM and SIGINT set ``event`` from the moment a command starts, even mid start-up."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __enter__(self) -> _StopSignals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.event.set)
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _run_until_signal(
    runners: Sequence[web.BaseRunner],
    stop: asyncio.Event,
    on_reload: Callable[[], object] | None = None,
    started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait for SIGTERM/SIGINT (SIGHUP reloads), then clean every runner up."""
    loop = asyncio.get_running_loop()
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        if started is not None and not stop.is_set():
            await started()
        await stop.wait()
        log.info("signal received, shutting down")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def _start_sites(
    runner: web.AppRunner,
    sockets: list[socket.socket],
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[str, int]:
    """Serve ``runner`` on sockets bound beforehand; (host, port) of the first one.

    The exporter's app is served through its connection guard (caps, timeouts, TLS per
    connection; the open-file limit raised to the hard limit), others on plain sites.
    """
    await start_guarded_sites(runner, sockets, ssl_context)
    host, port = runner.addresses[0][:2]
    return str(host), int(port)


async def _serve_on(
    app: web.Application, address: str, setting: str, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str, int]:
    """Bind ``address`` first, then start ``app`` on it: (runner, host, port)."""
    sockets = bind_listen_address(address, setting)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        host, port = await _start_sites(runner, sockets, ssl_context)
    except BaseException:
        close_all(sockets)
        await runner.cleanup()
        raise
    return runner, host, port


def _display_url(host: str, port: int, scheme: str = "http") -> str:
    shown = "localhost" if host in ("0.0.0.0", "::") else host  # noqa: S104 - display only
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}"


async def run_exporter(settings: Settings, flags: dict[str, Any]) -> None:
    """Serve the exporter until a signal stops it."""
    with _StopSignals() as signals:
        await _serve_exporter(settings, flags, signals.event)


async def _start_exporter(
    settings: Settings, flags: dict[str, Any], *, tune_memory: bool
) -> tuple[web.Application, web.AppRunner, str]:
    """Create the exporter app and start serving it; (app, runner, base URL).

    The port is bound before polling starts: a taken port ends start-up with one error line
    before a single request reaches the API.
    """
    app = create_app(settings, flags=flags, tune_memory=tune_memory)
    tls = listening_context(app)
    runner, host, port = await _serve_on(app, settings.listen_address, LISTEN_SETTING, tls)
    return app, runner, _display_url(host, port, "https" if tls is not None else "http")


async def _serve_exporter(settings: Settings, flags: dict[str, Any], stop: asyncio.Event) -> None:
    app, runner, url = await _start_exporter(settings, flags, tune_memory=True)
    log.info(
        "serving metrics on %s%s (event loop: %s)",
        url,
        settings.telemetry_path,
        loops.loop_description(),
    )
    await _run_until_signal([runner], stop, on_reload=app[RELOADER].request)


async def run_demo(args: argparse.Namespace) -> None:
    """Simulator on a loopback port and the exporter pointed at it, until a signal."""
    with _StopSignals() as signals:
        await _serve_demo(args, signals.event)


async def _serve_demo(args: argparse.Namespace, stop: asyncio.Event) -> None:
    campaigns = demo_campaigns()
    simulator = Simulator(campaigns, api_key=DEMO_API_KEY, speed=args.speed)
    sim_runner, _, sim_port = await _serve_on(simulator.app(), "127.0.0.1:0", "simulator")
    api_url = f"http://127.0.0.1:{sim_port}/v1"
    ids = ",".join(c.id for c in campaigns)
    flags: dict[str, Any] = {
        "api_url": api_url,
        "api_key": SecretStr(DEMO_API_KEY),
        "campaign_ids": ids,
        "listen_address": args.listen_address,
        "poll_interval_seconds": args.poll_interval_seconds,
        "stale_after_seconds": 60,
        # Stalls judged in simulated time, as the demo's Prometheus rules judge them.
        "stall_after_seconds": scaled_window_seconds(STALL_AFTER_DEFAULT, args.speed),
    }
    try:
        _, runner, url = await _start_exporter(load_settings(flags), flags, tune_memory=False)
    except BaseException:
        await sim_runner.cleanup()
        raise
    print(
        f"DialNexa exporter demo: {len(campaigns)} simulated campaigns at {args.speed:g}x speed.\n"
        f"  Open {url}/ or run: curl -s {url}/metrics | grep ^dialnexa_campaign\n"
        f"  Check its simulated API as you would the real one:\n"
        f"    DIALNEXA_API_KEY={DEMO_API_KEY} {program_as_invoked(sys.argv[0])} check --online"
        f" --api-url {api_url} --campaign-ids {ids}\n"
        "  Press Ctrl+C to stop.",
        flush=True,
    )
    async with optional_demo_prometheus(
        args.prometheus,
        listen_address=args.prometheus_listen_address,
        exporter_url=url,
        speed=args.speed,
    ) as prometheus:
        await _run_until_signal([sim_runner, runner], stop, started=prometheus.start)


async def run_simulator(args: argparse.Namespace) -> None:
    """The fake API alone, until a signal."""
    with _StopSignals() as signals:
        await _serve_simulator(args, signals.event)


async def _serve_simulator(args: argparse.Namespace, stop: asyncio.Event) -> None:
    campaigns = (
        load_campaigns(args.campaigns, args.seed, args.text_length)
        if args.campaigns
        else demo_campaigns()
    )
    simulator = Simulator(campaigns, api_key=args.api_key, speed=args.speed)
    runner, host, port = await _serve_on(simulator.app(), args.listen_address, "--listen-address")
    print(
        f"DialNexa API simulator: {len(campaigns)} campaigns at {_display_url(host, port)}/v1",
        flush=True,
    )
    await _run_until_signal([runner], stop)


def _loop_choice(args: argparse.Namespace) -> loops.LoopChoice:
    """The demo's and simulator's loop: their --event-loop, else DIALNEXA_EVENT_LOOP, else auto."""
    choice = args.event_loop or os.environ.get(env_name("event_loop"), "auto").strip().lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(env_name("event_loop"), "must be auto, uvloop or asyncio")
    return choice  # type: ignore[return-value]  # checked just above


def _fail(message: str) -> int:
    # Escaped: a path or value may hold a newline or a terminal escape, the line stays one line.
    print(f"{PROG}: {printable(message)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load settings and run; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = args.command
    try:
        if command == "simulator":
            setup_logging(args.log_level, args.log_format)
            loops.run(run_simulator(args), _loop_choice(args))
            return 0
        if command == "demo":
            setup_logging(args.log_level, args.log_format)
            loops.run(run_demo(args), _loop_choice(args))
            return 0
        flags = _setting_flags(args)
        settings = load_settings(flags)
        if command == "check":
            return loops.run(
                run_check(settings, online=args.online, out=sys.stdout), settings.event_loop
            )
        setup_logging(settings.log_level, settings.log_format)
        loops.run(run_exporter(settings, flags), settings.event_loop)
        return 0
    except ConfigError as exc:
        return _fail(f"configuration error: {as_typed(exc, argv)}")
    except KeyboardInterrupt:
        return 0
