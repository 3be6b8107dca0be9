"""``mailtalk serve``: the reference servers in the foreground until Ctrl-C or SIGTERM.

``commands/serve.py`` declares the options and builds a :class:`ServeOptions`; ``run``
turns it into the servers' configuration, starts them, says where they listen (a
summary, or one JSON line) and waits for a signal.

With ``--journal -`` standard output is the journal, one JSON event a line as it
happens (``tail -f`` of a mail log); the summary or the ``--json`` line then goes to
standard error, so that every line on standard output is an event. A reader that goes
away (``| head``) stops the servers, with exit status 141, as a pipe does.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, TextIO

from mailtalk.errors import UsageError
from mailtalk.exitcodes import ExitCode
from mailtalk.servers.app import LISTENER_TLS, ConfigError, ReferenceServers, ServeConfig
from mailtalk.servers.context import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_LINE_TIMEOUT,
    DEFAULT_MAX_PER_ADDRESS,
    DEFAULT_MAX_SIZE,
    ServerSettings,
)
from mailtalk.servers.journal import Journal

if TYPE_CHECKING:
    from mailtalk.environment import Environment

# ``--user NAME`` takes its password from here, out of sight of ``ps`` and /proc/PID/cmdline.
PASSWORD_VARIABLE: Final = "MAILTALK_SERVE_PASSWORD"
LISTENER_ORDER: Final = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps", "lmtp")
# Where the servers listen when no port option is given.
DEFAULT_PORTS: Final[Mapping[str, int]] = {
    "smtp": 2525, "submission": 2587, "smtps": 2465, "pop3": 2110, "pop3s": 2995,
    "imap": 2143, "imaps": 2993,
}  # fmt: skip


class ServeOptions(NamedTuple):
    """What ``mailtalk serve`` was asked for, as its options say it.

    A NamedTuple, not a frozen dataclass (see ``protocols.common.Line``): a dataclass
    of these 41 fields took 1.8 ms to make, before ``mailtalk serve`` greets anyone."""

    root: Path | None = None  # None: $XDG_DATA_HOME/mailtalk/serve
    listen: str = "127.0.0.1"
    ports: Mapping[str, int] = MappingProxyType({})  # listener -> port; none: defaults
    lmtp_socket: str | None = None  # --lmtp unix:PATH: LMTP on a Unix-domain socket
    lmtp_socket_mode: int = 0o600
    lmtp_socket_group: str | None = None  # a group name or gid
    domains: tuple[str, ...] = ()
    hostname: str | None = None
    users: tuple[str, ...] = ()  # NAME:PASSWORD, or NAME with $MAILTALK_SERVE_PASSWORD
    users_file: str | None = None  # NAME:PASSWORD lines ("-": standard input)
    oauth2_tokens: str | None = None  # FILE of NAME TOKEN lines for XOAUTH2/OAUTHBEARER
    personality: str = "mailtalk"
    faults: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = ()
    sink: bool = False
    check_sender_domain: bool = False
    tls_auth_only: bool = False
    tls_fault: str | None = None  # servers.certs.TLS_FAULTS: a faulty certificate or protocol
    greylist_delay: float = 300.0  # postgrey's --delay
    greylist_max_age: float = 35 * 86400.0  # postgrey's --max-age
    resolver: str | None = None
    dns_port: int | None = None
    mx_port: int = 25
    bare_newline: Literal["reject", "normalise"] = "reject"
    max_size: int = DEFAULT_MAX_SIZE
    quota: int | None = None
    login_delay: float | None = None
    # Password guessing and error floods (mailtalk.servers.guard); 0 turns each off.
    auth_failure_delay: float = 2.0
    auth_failures_per_address: int = 10
    error_limit: int = 20
    greet_pause: float = 0.0  # seconds the SMTP greeting waits (Sendmail's greet_pause)
    max_connections: int = 100
    idle_timeout: float = 300.0
    max_connections_per_address: int = DEFAULT_MAX_PER_ADDRESS
    line_timeout: float = DEFAULT_LINE_TIMEOUT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    journal: str | None = None  # FILE for the servers' journal, "-" for standard output
    http_port: int | None = None  # the JSON API (servers.httpapi); off by default
    http_token_file: str | None = None  # FILE whose first line is the API's bearer token
    as_json: bool = False
    verbose: bool = False


def serve_config(options: ServeOptions, env: Environment) -> ServeConfig:
    """The servers' configuration from the options; the root defaults to the XDG data
    directory the environment names."""
    ports = {
        name: options.ports[name] for name in LISTENER_ORDER if name in options.ports
    }
    # LMTP is added to the others, as --http is: only ports of the default listeners
    # (SMTP, POP3, IMAP and their TLS ports) replace the defaults
    if not set(ports) & set(DEFAULT_PORTS):
        ports = {**DEFAULT_PORTS, **ports}
    users = _users(options, env)
    settings = ServerSettings(
        personality=options.personality,
        max_size=options.max_size,
        max_literal=options.max_size,  # an IMAP APPEND is a message too
        max_connections=options.max_connections,
        idle_timeout=options.idle_timeout,
        max_connections_per_address=options.max_connections_per_address,
        line_timeout=options.line_timeout,
        handshake_timeout=options.handshake_timeout,
        bare_newline=options.bare_newline,
        sink=options.sink,
        check_sender_domain=options.check_sender_domain,
        tls_auth_only=options.tls_auth_only,
        resolver=options.resolver,
        quota_bytes=options.quota,
        login_delay=options.login_delay or 0.0,
        auth_failure_delay=options.auth_failure_delay,
        auth_failures_per_address=options.auth_failures_per_address,
        error_limit=options.error_limit,
        greet_pause=options.greet_pause,
        onward_delivery=True,
        mx_port=options.mx_port,
        greylist_delay=options.greylist_delay,
        greylist_lifetime=options.greylist_max_age,
    )
    root = options.root if options.root is not None else env.data_dir() / "serve"
    journal = None
    if options.journal == "-":
        journal = Journal(None, stream=env.stdout)
    elif options.journal:
        journal = Journal(Path(options.journal).expanduser())
    sockets = {}
    if options.lmtp_socket is not None:
        sockets["lmtp"] = Path(options.lmtp_socket).expanduser()
    return ServeConfig(
        root=root.expanduser(),
        listen=options.listen,
        ports=ports,
        unix_sockets=sockets,
        socket_mode=options.lmtp_socket_mode,
        socket_group=_group_id(options.lmtp_socket_group),
        domains=options.domains,
        users=users,
        oauth2_tokens=_oauth2_tokens(options.oauth2_tokens),
        faults=options.faults,
        scenarios=options.scenarios,
        settings=settings,
        dns_port=options.dns_port,
        hostname=options.hostname,
        journal=journal,
        tls_fault=options.tls_fault,
        http_port=options.http_port,
        http_token=_http_token(options.http_token_file),
    )


def _group_id(group: str | None) -> int | None:
    """--lmtp-socket-group's gid: a group name, or a number."""
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    try:
        import grp
    except ImportError:  # no groups on this platform
        raise UsageError("--lmtp-socket-group: this system has no Unix groups") from None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"--lmtp-socket-group {group}: no such group") from None


def _http_token(path: str | None) -> str | None:
    """The ``--http-token-file``'s first line; one line for what is wrong, never the token."""
    if path is None:
        return None
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--http-token-file {path}: {error.strerror or error}") from None
    except UnicodeError:
        raise UsageError(f"--http-token-file {path}: not UTF-8 text") from None
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 16 or not token.isprintable() or " " in token:
        raise UsageError(
            f"--http-token-file {path}: the first line must be a token of at least 16 "
            "printable characters without spaces"
        )
    return token


def _users(options: ServeOptions, env: Environment) -> list[tuple[str, str]]:
    """(name, password) of ``--users-file`` and then each ``--user`` (a later one sets
    the password again); one line for what is wrong, never showing a password."""
    from mailtalk.servers.users import parse_users_text, user_spec_with_password

    users: list[tuple[str, str]] = []
    if options.users_file is not None:
        where = "standard input" if options.users_file == "-" else options.users_file
        try:
            if options.users_file == "-":
                text = env.stdin.read()
            else:
                text = Path(options.users_file).expanduser().read_text(encoding="utf-8")
            users += parse_users_text(text, where)
        except OSError as error:
            raise UsageError(f"--users-file {where}: {error.strerror or error}") from None
        except UnicodeError:
            raise UsageError(f"--users-file {where}: not UTF-8 text") from None
        except ValueError as error:
            raise UsageError(f"--users-file {error}") from None
    password = env.get(PASSWORD_VARIABLE) or None
    for spec in options.users:
        try:
            users.append(user_spec_with_password(spec, password))
        except ValueError as error:
            # The name only when a ':' ends it: without one the value may be a password.
            name, colon, _ = spec.partition(":")
            raise UsageError(f"--user {name}: {error}" if colon and name else str(error)) from None
    return users


def _oauth2_tokens(path: str | None) -> dict[str, str]:
    """The ``--oauth2-tokens`` file as user -> token; one line for what is wrong."""
    from mailtalk.servers.users import parse_oauth2_tokens

    if path is None:
        return {}
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
        return parse_oauth2_tokens(text, path)
    except OSError as error:
        raise UsageError(f"--oauth2-tokens {path}: {error.strerror or error}") from None
    except UnicodeError:
        raise UsageError(f"--oauth2-tokens {path}: not UTF-8 text") from None
    except ValueError as error:
        raise UsageError(f"--oauth2-tokens {error}") from None


def run(options: ServeOptions, env: Environment) -> int:
    """Serve until a signal; the exit status (2 for a bad option, 3 when a port is taken)."""
    config = serve_config(options, env)
    logging.basicConfig(
        level=logging.INFO if options.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=env.stderr,
    )
    # Fired faults are always worth a line: they are why a client saw an error.
    logging.getLogger("mailtalk.faults").setLevel(logging.INFO)
    try:
        servers = ReferenceServers(config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    journal = config.journal
    # Standard output carries the journal: the start-up text goes to standard error.
    out = env.stderr if journal is not None and journal.to_stream else env.stdout
    from mailtalk.servers.eventloop import LOOP_VARIABLE, loop_factory

    loop_name, new_loop = loop_factory(
        env.get(LOOP_VARIABLE),
        implicit_tls=any(LISTENER_TLS[name] == "implicit" for name in config.ports),
    )
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(_serve(servers, options.as_json, out, env.stderr, loop_name))
    finally:
        if journal is not None:
            journal.close()


async def _serve(
    servers: ReferenceServers, as_json: bool, out: TextIO, err: TextIO, loop_name: str
) -> int:
    try:
        listeners = await servers.start()
    except ConfigError as error:
        print(f"mailtalk: {error}", file=err)
        return int(ExitCode.CONNECT)
    # Handlers first: whoever reads the line below may signal us at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    journal = servers.config.journal
    if journal is not None and journal.to_stream:
        # Nobody reads the journal any more (| head): stop, as a pipe would stop us.
        def reader_gone(error: OSError) -> None:
            loop.call_soon_threadsafe(stop.set)

        journal.on_error = reader_gone
    if as_json:
        print(json.dumps({**servers.describe(), "event_loop": loop_name}), file=out, flush=True)
    else:
        _print_summary(servers, out)
    _start_collecting()
    await stop.wait()
    await servers.stop()
    gc.unfreeze()  # what start-up made may be garbage now (a server run in a test)
    if journal is not None and isinstance(journal.error, BrokenPipeError):
        raise journal.error  # exit status 141, as for any command whose reader went
    if not as_json:
        context = servers.context
        print(
            f"stopped: {context.messages_delivered} messages, "
            f"{context.bytes_delivered} bytes accepted",
            file=err,
        )
    del listeners
    return int(ExitCode.OK)


def _start_collecting() -> None:
    """Garbage collection from now on, over what the sessions make.

    ``mailtalk serve`` turned the collector off while the servers loaded and started:
    25 passes over the modules, classes and settings being made, which live as long
    as the servers, took 3-5 ms of the time to the first banner (issue 17). They are
    frozen now (moved out of the collector's sight, what ``gc.freeze`` is for): the
    first collections would walk all of them, then every full one again, for the
    life of the server. ``_serve`` unfreezes them when the servers have stopped."""
    gc.freeze()
    gc.enable()


def connect_host(listen: str) -> str:
    """The host a client on this machine connects to for ``--listen``, as in a URL.

    ``localhost`` for 127.0.0.1 (the certificate names both), the loopback address for
    a wildcard, the address itself otherwise (the certificate lists it too).
    """
    host = listen.strip().strip("[]")
    host = {"127.0.0.1": "localhost", "0.0.0.0": "localhost", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _trust_hint(servers: ReferenceServers) -> str:
    """How to connect with the local CA trusted, over TLS, to a listener we really have."""
    import shlex

    from mailtalk.servers.certs import trust_hint

    paths = servers.context.certificates
    by_protocol = {listener.protocol: listener for listener in servers.listeners}
    for protocol in ("smtps", "submission", "smtp"):
        listener = by_protocol.get(protocol)
        if listener is not None:
            host = connect_host(listener.host)
            return trust_hint(paths, listener.port, protocol, host, starttls=protocol == "smtp")
    return f"TLS: the local CA is {shlex.quote(str(paths.ca_cert))}"


def _print_summary(servers: ReferenceServers, out: TextIO) -> None:
    context = servers.context
    out.write(f"mailtalk reference servers, root {servers.config.root}\n")
    for listener in servers.listeners:
        tls = {"starttls": "STARTTLS", "implicit": "implicit TLS", "none": "plain"}[listener.tls]
        if listener.protocol == "dns":
            zones = ", ".join(servers.dns_zones) or "nothing yet: add ROOT/dns/records"
            tls = f"UDP and TCP, authoritative for {zones}"
        if listener.protocol == "http":
            where = f"http://{connect_host(listener.host)}:{listener.port}/api/v1/"
            tls = f"JSON API at {where} (described in openapi.json)"
        out.write(f"  {listener.protocol:<11} {listener.where:<16} {tls}\n")
    domains = ", ".join(context.control.locals) if hasattr(context.control, "locals") else ""
    users = ", ".join(context.users.names()) or "(none: add one with --user NAME:PASSWORD)"
    out.write(f"  hostname: {context.hostname}\n")
    out.write(f"  domains: {domains}\n  users: {users}\n")
    for change in context.control_changes:
        out.write(f"  changed {change}\n")
    if context.settings.resolver:
        out.write(f"  DNS for the sender check and onward delivery: {context.settings.resolver}\n")
    if context.settings.sink:
        out.write("  sink mode: every message is accepted and thrown away\n")
    out.write(f"  {_trust_hint(servers)}\n")
    out.write("Ctrl-C stops.\n")
    out.flush()
