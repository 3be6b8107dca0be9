"""Start and stop the reference servers: listeners, root set-up, certificates.

``ReferenceServers`` is the asyncio side; ``mailtalk.servers.api`` runs it in a
background thread for tests and scripts, and ``mailtalk serve`` in the
foreground.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from mailtalk.servers.context import ServerContext, ServerSettings, apply_scenario_settings
from mailtalk.servers.journal import Journal

if TYPE_CHECKING:
    from mailtalk.servers.fault_rules import FaultRule
    from mailtalk.servers.listening import Listener
    from mailtalk.servers.personalities import Personality
    from mailtalk.servers.policy import Control
    from mailtalk.servers.users import Users

log = logging.getLogger("mailtalk.serve")

# ROOT's file of greylisted triplets (network, sender, recipient, first and last seen):
# they survive a restart, as postgrey's database does.
GREYLIST_FILE: Final = "greylist.json"

# Seconds after the listeners open that onward delivery starts, when no mail waits.
QUEUE_RUNNER_DELAY: Final = 1.0
# While the queue is empty, seconds between looks for mail another process queued (the
# runner's own POLL_SECONDS, servers.delivery): its code is loaded only once there is some.
QUEUE_LOOK_SECONDS: Final = 60.0

# What each listener speaks, and how TLS starts on it.
LISTENER_TLS: Final[dict[str, str]] = {
    "smtp": "starttls",
    "submission": "starttls",
    "smtps": "implicit",
    "pop3": "starttls",
    "pop3s": "implicit",
    "imap": "starttls",
    "imaps": "implicit",
    "lmtp": "starttls",
}

# The module and class serving each listener, imported only when it is used.
LISTENER_SESSION: Final[dict[str, tuple[str, str]]] = {
    "smtp": ("mailtalk.servers.smtp", "SMTPServerProtocol"),
    "submission": ("mailtalk.servers.smtp", "SMTPServerProtocol"),
    "smtps": ("mailtalk.servers.smtp", "SMTPServerProtocol"),
    "pop3": ("mailtalk.servers.pop3", "POP3ServerProtocol"),
    "pop3s": ("mailtalk.servers.pop3", "POP3ServerProtocol"),
    "imap": ("mailtalk.servers.imap.server", "IMAPServerProtocol"),
    "imaps": ("mailtalk.servers.imap.server", "IMAPServerProtocol"),
    "lmtp": ("mailtalk.servers.lmtp", "LMTPServerProtocol"),
}


def session_class(protocol: str) -> Any:
    import importlib

    module_name, class_name = LISTENER_SESSION[protocol]
    return getattr(importlib.import_module(module_name), class_name)


# Listeners whose session code is imported at their first connection, not at start: a
# server that never gets an IMAP client then never holds IMAP's code (some 1.2 MiB of
# RSS; the first IMAP client waits for the import, 25-40 ms). POP3's and SMTP's are
# imported at start: their first login and first banner are timed against other servers.
LOADED_AT_FIRST_CONNECTION: Final = frozenset({"imap", "imaps"})


class _FirstConnectionFactory:
    """A listener's protocol factory that imports its session class when first called."""

    __slots__ = ("_context", "_make", "_protocol")

    def __init__(self, context: ServerContext, protocol: str) -> None:
        self._context = context
        self._protocol = protocol
        self._make: Callable[[], Any] | None = None

    def __call__(self) -> Any:
        make = self._make
        if make is None:
            make = self._make = functools.partial(
                session_class(self._protocol), self._context, self._protocol)
        return make()


def session_factory(context: ServerContext, protocol: str) -> Callable[[], Any]:
    """What makes the session of each connection on a ``protocol`` listener."""
    if protocol in LOADED_AT_FIRST_CONNECTION:
        return _FirstConnectionFactory(context, protocol)
    return functools.partial(session_class(protocol), context, protocol)


# A NamedTuple, not a frozen dataclass: see protocols.common.Line.
class ListenerInfo(NamedTuple):
    """Where one listener listens, as ``describe()`` and the summary say it."""

    protocol: str
    host: str
    port: int
    tls: str
    path: str | None = None  # a Unix-domain socket's (host "", port 0)

    def as_json(self) -> dict[str, Any]:
        found = {"protocol": self.protocol, "host": self.host, "port": self.port, "tls": self.tls}
        return found if self.path is None else {**found, "path": self.path}

    @property
    def url(self) -> str:
        if self.path is not None:
            return f"{self.protocol}:unix:{self.path}"  # as send --server lmtp:unix:/path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}://{host}:{self.port}"

    @property
    def where(self) -> str:
        """HOST:PORT, or unix:/path."""
        return f"unix:{self.path}" if self.path is not None else f"{self.host}:{self.port}"


@dataclass
class ServeConfig:
    """Everything ``mailtalk serve`` and the Python API accept."""

    root: Path
    listen: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: {"smtp": 0})
    # listener -> the path of its Unix-domain socket (LMTP: Postfix's lmtp:unix:/path)
    unix_sockets: Mapping[str, Path] = field(default_factory=dict)
    socket_mode: int = 0o600  # those sockets' permissions: the owner only
    socket_group: int | None = None  # and their group's gid (None: the process's)
    domains: Sequence[str] = ()
    users: Sequence[tuple[str, str]] = ()
    oauth2_tokens: Mapping[str, str] = field(default_factory=dict)  # user -> bearer token
    faults: Sequence[str] = ()
    scenarios: Sequence[str] = ()
    settings: ServerSettings = field(default_factory=ServerSettings)
    dns_port: int | None = None  # the embedded DNS server (UDP and TCP); 0: any free port
    hostname: str | None = None  # control/me, replacing what a root has; None: keep/default
    journal: Journal | None = None  # where the servers write what happened (servers.journal)
    tls_fault: str | None = None  # servers.certs.TLS_FAULTS: certificate or protocol made faulty
    http_port: int | None = None  # the JSON API (servers.httpapi); 0: any free port
    http_token: str | None = None  # the bearer token it asks for; needed beyond loopback


class ConfigError(ValueError):
    """A bad option (unknown scenario, malformed fault rule, unusable root); one line."""


def build_context(config: ServeConfig) -> ServerContext:
    """Prepare ROOT (control files, users, certificates) and the shared context."""
    from mailtalk.servers.certs import ensure_certificates, server_ssl_context
    from mailtalk.servers.faults import FaultPlan

    control, users, changes = prepare_root(config)
    settings = config.settings
    rules = fault_rules(config.scenarios, config.faults, settings)
    chosen = chosen_personality(settings.personality)
    root = config.root
    paths = ensure_certificates(
        root, names=_certificate_names(control.me), addresses=_certificate_addresses(config.listen)
    )
    make_tls = functools.partial(server_ssl_context, paths, config.tls_fault)
    context = ServerContext(
        root=root,
        settings=settings,
        control=control,
        users=users,
        personality=chosen,
        faults=FaultPlan(
            rules,
            time.time,  # greylist times are kept in GREYLIST_FILE, for the next start
            greylist_min_age=settings.greylist_delay,
            greylist_lifetime=settings.greylist_lifetime,
            state_path=root / GREYLIST_FILE,
        ),
        make_ssl_context=make_tls,
    )
    if config.tls_fault or any(LISTENER_TLS.get(name) == "implicit" for name in config.ports):
        # made now: an implicit-TLS client's handshake comes before any greeting, and a
        # faulty certificate is made (or fails) at start
        context.ssl_context = make_tls()
    context.certificates = paths
    context.journal = config.journal
    context.clear_passwords = dict(config.users)
    context.oauth2_tokens = dict(config.oauth2_tokens)
    context.control_changes = changes
    context.base_rules = tuple(rules)
    context.base_settings = replace(settings)
    try:
        context.load_behaviour()  # control/scenarios and control/faults, if there
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return context


def prepare_root(config: ServeConfig) -> tuple[Control, Users, list[str]]:
    """Make ROOT and its control files, add the users given, clean up after a crash;
    the control files, the users and what the options changed in ROOT/control/."""
    from mailtalk.servers.policy import ControlError, init_root
    from mailtalk.servers.scrypt_worker import use_workers
    from mailtalk.servers.users import Users
    from mailtalk.store.filesystem import make_directory
    from mailtalk.store.layout import StoreLayout

    # Password checks out of the serving process; a worker starts now if --user's
    # passwords are to be checked, booting while the root is made.
    use_workers(start=bool(config.users))
    root = config.root
    try:
        make_directory(root)  # 0700, and its new parents too, whatever the umask
    except OSError as error:
        raise ConfigError(f"cannot use {root} as --root: {error.strerror or error}") from None
    if config.journal is not None:
        open_journal(config.journal)
    _check_domain_names(config)
    changes: list[str] = []
    try:
        control = init_root(
            root,
            list(config.domains),
            default_hostname(config.listen, config.domains),
            hostname=config.hostname,
            changes=changes,
        )
        users = Users.load(root)
    except ControlError as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        raise ConfigError(f"cannot use {root} as --root: {error.strerror or error}") from None
    # A user who has this password already is left as is: nothing to write again.
    changed = [users.add(name, password) for name, password in config.users]
    if any(changed):
        users.save()
    try:
        leftovers = StoreLayout(root).remove_crash_leftovers()
    except OSError as error:
        log.warning("cannot clean up %s: %s", root, error.strerror or error)
    else:
        if leftovers:
            log.info("removed %d files left in tmp/ by deliveries that crashed", len(leftovers))
    return control, users, changes


def _check_domain_names(config: ServeConfig) -> None:
    from mailtalk.servers.policy import normalize_domain

    for option, names in (("--domain", config.domains), ("--hostname", [config.hostname])):
        for name in names:
            try:
                if name is not None:
                    normalize_domain(name)
            except ValueError:
                raise ConfigError(f"{option} {name!r}: not a domain name") from None


def fault_rules(
    scenarios: Sequence[str], faults: Sequence[str], settings: ServerSettings
) -> list[FaultRule]:
    """The rules of the named scenarios, then the ``--fault`` rules, parsed; the
    scenarios' settings are applied to ``settings``."""
    if not scenarios and not faults:
        return []  # the rule language is not even loaded
    from mailtalk.servers.fault_rules import FaultRuleError, parse_rule

    rules: list[FaultRule] = []
    for name in scenarios:
        from mailtalk.servers.fault_scenarios import scenario, scenario_names

        try:
            bundle = scenario(name)
        except KeyError:
            raise ConfigError(
                f"unknown scenario {name!r}; known: {', '.join(scenario_names())}"
            ) from None
        rules += [parse_rule(text) for text in bundle.rules]
        try:
            apply_scenario_settings(settings, bundle.settings)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    for text in faults:
        try:
            rules.append(parse_rule(text))
        except FaultRuleError as error:
            raise ConfigError(str(error)) from None
    return rules


def chosen_personality(name: str) -> Personality:
    from mailtalk.servers.personalities import personality, personality_names

    try:
        return personality(name)
    except KeyError:
        raise ConfigError(
            f"unknown personality {name!r}; known: {', '.join(personality_names())}"
        ) from None


def open_journal(journal: Journal) -> None:
    """Open the journal now: one that cannot be written stops the start with one line."""
    try:
        journal.open()
    except OSError as error:
        where = journal.path if journal.path is not None else "standard output"
        raise ConfigError(
            f"cannot write the journal {where}: {(error.strerror or str(error)).lower()}"
        ) from None


def default_hostname(listen: str, domains: Sequence[str]) -> str:
    """control/me for a new root when no --hostname is given.

    ``localhost`` on the default loopback address (127.0.0.1, ::1); elsewhere (a
    practice world of servers on 127.0.0.2, 127.0.0.3, ...) the first ``--domain``, else
    the ``--listen`` name, else its address as an RFC 5321 address literal
    (``[127.0.0.2]``), so that no two such servers call themselves ``localhost``.
    """
    import ipaddress

    from mailtalk.servers.policy import DEFAULT_ME

    text = listen.strip().strip("[]")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if text.lower() == "localhost" or str(address) in ("127.0.0.1", "::1"):
        return DEFAULT_ME
    if domains:
        return domains[0]
    if address is None:
        return text or DEFAULT_ME
    if address.is_unspecified:
        return DEFAULT_ME
    return f"[{address}]" if address.version == 4 else f"[IPv6:{address}]"


def _certificate_addresses(listen: str) -> list[str]:
    """Loopback, and the address listened on when it is one (127.0.0.2 in a practice
    world of several servers): clients verify the certificate against it."""
    import ipaddress

    addresses = ["127.0.0.1", "::1"]
    try:
        address = ipaddress.ip_address(listen.strip("[]"))
    except ValueError:
        return addresses
    if not address.is_unspecified and str(address) not in addresses:
        addresses.append(str(address))
    return addresses


def _certificate_names(me: str) -> list[str]:
    names = ["localhost"]
    # An address literal ([127.0.0.2]) is no DNS name: the address is listed as one.
    if me not in names and not me.startswith("["):
        names.append(me)
    return names


class ReferenceServers:
    """The listeners of one ``mailtalk serve``."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.context = build_context(config)
        self.listeners: list[ListenerInfo] = []
        self._servers: list[Listener] = []
        self.dns: Any = None  # dns.DNSServer, with --dns
        self._dns_data: Any = self._load_dns() if config.dns_port is not None else None
        self._queue_runner: Any = None  # delivery.QueueRunner, with onward delivery on
        self._queue_starting: asyncio.TimerHandle | None = None  # until it runs
        self._queue_start_failed = False  # said once, not at every try
        self._stopped = False
        self.http: Any = None  # httpapi.HTTPApi, with --http
        if config.http_port is not None:
            self.http = self._make_http_api()

    async def start(self) -> list[ListenerInfo]:
        from mailtalk.servers.listening import Listener, raise_descriptor_limit

        raise_descriptor_limit(self.context.settings.max_connections)
        host = self.config.listen
        for protocol, port in self.config.ports.items():
            tls = LISTENER_TLS[protocol]
            # Plain text on every listener: an implicit-TLS session does its handshake
            # itself, counted against the connection caps (servers.session).
            factory = session_factory(self.context, protocol)
            listener = await self._opened(
                protocol, f"{host} port {port}",
                functools.partial(Listener.open, host, port, factory),
            )  # fmt: skip
            self.listeners.append(ListenerInfo(protocol, host, int(listener.address[1]), tls))
        await self._open_unix_sockets()
        for listener in self._servers:
            listener.start()
        await self._start_dns()
        await self._start_http()
        self._start_queue_runner()
        return self.listeners

    async def _open_unix_sockets(self) -> None:
        from mailtalk.servers.listening import Listener

        config = self.config
        for protocol, path in config.unix_sockets.items():
            factory = session_factory(self.context, protocol)
            listener = await self._opened(
                protocol, f"unix:{path}",
                functools.partial(Listener.open_unix, path, factory, config.socket_mode,
                                  config.socket_group),
            )  # fmt: skip
            self.listeners.append(
                ListenerInfo(protocol, "", 0, LISTENER_TLS[protocol], str(listener.path))
            )

    async def _opened(self, protocol: str, where: str, opening: Callable[[], Listener]
                      ) -> Listener:  # fmt: skip
        """``opening()``'s listener, kept to be started and closed; if it cannot listen,
        the listeners opened so far are closed and why is one line (ConfigError)."""
        try:
            listener = opening()
        except OSError as error:
            await self.stop()
            raise ConfigError(
                f"cannot listen on {where} for {protocol}: "
                f"{(error.strerror or str(error)).lower()}"
            ) from None
        self._servers.append(listener)
        return listener

    def _make_http_api(self) -> Any:
        from mailtalk.servers.httpapi import HTTPApi, is_loopback

        token = self.config.http_token
        if not is_loopback(self.config.listen) and not token:
            raise ConfigError(
                f"--http on {self.config.listen}, beyond loopback, needs --http-token-file: "
                "anyone who can reach it could read all mail and add users"
            )
        return HTTPApi(self.context, token)  # before start: it sees the first events

    async def _start_http(self) -> None:
        if self.http is None or self.config.http_port is None:
            return
        from mailtalk.servers.listening import Listener

        host, port = self.config.listen, self.config.http_port

        def protocol() -> asyncio.Protocol:
            reader = asyncio.StreamReader(limit=2**16)
            return asyncio.StreamReaderProtocol(reader, self.http.connection)

        listener = await self._opened(
            "http", f"{host} port {port}", functools.partial(Listener.open, host, port, protocol)
        )
        listener.start()
        self.listeners.append(ListenerInfo("http", host, int(listener.address[1]), "none"))

    def _start_queue_runner(self) -> None:
        """Onward delivery (its SMTP client, routes and DSNs: code the greeting does not
        need) starts a moment after the listeners, so the first client is not kept
        waiting while it loads; at once if mail waits in the queue, or is queued first."""
        settings = self.context.settings
        if not settings.onward_delivery or settings.sink:
            return
        if self._queue_holds_mail():
            self._run_queue()
            return
        loop = asyncio.get_running_loop()
        self._queue_starting = loop.call_later(QUEUE_RUNNER_DELAY, self._run_queue_if_mail)

        def enqueued() -> None:  # the runner, once started, sets its own
            loop.call_soon_threadsafe(self._run_queue)

        self.context.on_enqueue = enqueued

    def _queue_holds_mail(self) -> bool:
        store = self.context.store
        if not store.queue_path.is_dir():
            return False  # never used: the queue's code stays unloaded
        try:
            with os.scandir(store.queue.envelopes_dir) as entries:
                return next(entries, None) is not None
        except OSError:
            return False

    def _run_queue_if_mail(self) -> None:
        """The runner, once the queue holds mail (this process's own is started at
        once, by ``on_enqueue``): onward delivery's code, about 1 MiB, stays unloaded
        in a server that relays nothing."""
        self._queue_starting = None
        if self._queue_holds_mail():
            self._run_queue()
        elif not self._stopped:
            loop = asyncio.get_running_loop()
            self._queue_starting = loop.call_later(QUEUE_LOOK_SECONDS, self._run_queue_if_mail)

    def _run_queue(self) -> None:
        if self._queue_runner is not None or self._stopped:
            return
        if self._queue_starting is not None:
            self._queue_starting.cancel()
            self._queue_starting = None
        try:
            from mailtalk.servers.delivery import QueueRunner

            own = [(x.host, x.port) for x in self.listeners if x.protocol in ("smtp", "submission")]
            runner = QueueRunner(self.context, source=self.config.listen, own=own)
        except (OSError, ImportError) as error:
            # Its code could not be read now: out of file descriptors under a flood of
            # connections, say. The listeners go on; so does the queue, a little later.
            if not self._queue_start_failed:
                log.warning("onward delivery not started yet (%s): trying again", error)
            self._queue_start_failed = True
            loop = asyncio.get_running_loop()
            self._queue_starting = loop.call_later(QUEUE_RUNNER_DELAY, self._run_queue)
            return
        self._queue_runner = runner
        runner.start()  # its first pass finds what was queued before

    async def stop(self) -> None:
        self._stopped = True
        if self._queue_starting is not None:
            self._queue_starting.cancel()
            self._queue_starting = None
        self.context.on_enqueue = None
        if self._queue_runner is not None:
            await self._queue_runner.stop()
            self._queue_runner = None
        for lock in self.context.held_locks:
            lock.release()  # the lock-busy scenario's holder lets go with the servers
        self.context.held_locks.clear()
        for server in self._servers:
            server.close()
        for session in list(self.context.connections):
            if getattr(session, "close_reason", "") is None:
                session.close_reason = "shutdown"  # for the journal's close event
            transport = getattr(session, "transport", None)
            if transport is not None:
                transport.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self.context.guard.close()
        self.context.close()
        if self.dns is not None:
            await self.dns.stop()
            self.dns = None

    def _load_dns(self) -> Any:
        """ROOT/dns/'s zones, read before anything listens: a bad line stops the start."""
        from mailtalk.servers.dns import DNSDataError, ensure_records_file, load_dns_data

        directory = self.config.root / "dns"
        try:
            ensure_records_file(directory)
            return load_dns_data(directory)
        except DNSDataError as error:
            raise ConfigError(str(error)) from None
        except OSError as error:
            raise ConfigError(f"cannot use {directory}: {error.strerror or error}") from None

    async def _start_dns(self) -> None:
        if self._dns_data is None or self.config.dns_port is None:
            return
        from mailtalk.servers.dns import DNSServer

        host = self.config.listen
        self.dns = DNSServer(
            self._dns_data, journal=self.context.journal, name=self.context.hostname
        )
        try:
            port = await self.dns.start(host, self.config.dns_port)
        except OSError as error:
            self.dns = None
            await self.stop()
            raise ConfigError(
                f"cannot listen on {host} port {self.config.dns_port} for dns: "
                f"{(error.strerror or str(error)).lower()}"
            ) from None
        self.listeners.append(ListenerInfo("dns", host, port, "none"))
        settings = self.context.settings
        if settings.resolver is None:
            # No --resolver: the sender check and onward delivery ask our own DNS.
            ask = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            settings.resolver = f"[{ask}]:{port}" if ":" in ask else f"{ask}:{port}"

    @property
    def dns_zones(self) -> list[str]:
        return list(self._dns_data.origins) if self._dns_data is not None else []

    def describe(self) -> dict[str, Any]:
        return {
            "root": str(self.config.root.resolve()),
            "listeners": [listener.as_json() for listener in self.listeners],
        }
