"""The reference servers from Python: a context manager running them in a thread.

``ServerLoop`` runs any number of ``ReferenceServers`` in one asyncio loop in a
background thread (a practice world runs all its hosts in one); ``run_servers`` is
one server in one, as a context manager:

    with run_servers(tmp_path, users=[("alice", "secret")]) as servers:
        smtplib.SMTP("127.0.0.1", servers.port("smtp"))
        ...
        assert servers.fired_faults() == [...]

The pytest plugin (``mailtalk.pytest_plugin``) builds its fixtures on this.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

from mailtalk.servers.app import ListenerInfo, ReferenceServers, ServeConfig
from mailtalk.servers.context import ServerContext, ServerSettings
from mailtalk.servers.journal import Journal
from mailtalk.store import Maildir

T = TypeVar("T")


@dataclass
class RunningServers:
    """Handle on servers running in a background thread."""

    root: Path
    listeners: list[ListenerInfo]
    context: ServerContext

    def listener(self, protocol: str) -> ListenerInfo:
        for listener in self.listeners:
            if listener.protocol == protocol:
                return listener
        raise KeyError(f"no {protocol} listener; started: {[x.protocol for x in self.listeners]}")

    def port(self, protocol: str) -> int:
        return self.listener(protocol).port

    @property
    def host(self) -> str:
        """The address the network listeners are on (not a Unix socket's)."""
        return next((x.host for x in self.listeners if x.path is None), self.listeners[0].host)

    def socket_path(self, protocol: str) -> Path:
        """The path of ``protocol``'s Unix-domain socket (``lmtp="unix:/path"``)."""
        path = self.listener(protocol).path
        if path is None:
            raise KeyError(f"the {protocol} listener is not a Unix-domain socket")
        return Path(path)

    @property
    def cafile(self) -> Path:
        return Path(self.context.certificates.ca_cert)

    def maildir(self, user: str) -> Maildir:
        return self.context.store.maildir(user)

    def messages(self, user: str) -> list[bytes]:
        """The messages in ``user``'s ``new/``, oldest first."""
        maildir = self.maildir(user)
        if not maildir.new_dir.is_dir():
            return []
        paths = sorted(maildir.new_messages(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [path.read_bytes() for path in paths]

    def wait_for_message(
        self,
        user: str,
        timeout: float = 10.0,
        match: Callable[[EmailMessage], bool] | None = None,
        *,
        subject: str | None = None,
        sender: str | None = None,
        to: str | None = None,
        header: str | None = None,
        folder: str = "INBOX",
    ) -> EmailMessage:
        """The first message in ``user``'s ``folder`` that matches, parsed; waits up to
        ``timeout`` seconds for one to arrive (one already there counts, so a message
        sent before the call is not missed).

        ``match``: a callable on the parsed message. ``subject``, ``sender`` (From),
        ``to`` (To or Cc): case-insensitive substrings; ``header``: ``"Name: text"`` or
        ``"Name"``. All given must hold. Woken by each delivery, not polling; raises
        ``TimeoutError`` naming what was wanted and what is in the folder instead.
        """
        from mailtalk.servers.mailquery import MailQuery, MessageFilter

        wanted = MessageFilter(subject=subject, sender=sender, to=to, header=header, match=match)
        _, parsed = MailQuery(self.context.mailstore).wait(user, wanted, timeout, folder)
        return parsed

    def fired_faults(self) -> list[str]:
        """The rule texts of the faults that fired so far, in order."""
        return list(self.context.faults.fired_rules())


class ServerLoop:
    """Reference servers in one asyncio loop, in a background thread of their own.

    ``run_servers`` runs one ``mailtalk serve`` this way; a practice world runs all its
    hosts (and their DNS) in one loop, so one process holds the whole world::

        running = ServerLoop()
        running.start([isp, mx])     # ReferenceServers, started in order
        ...
        running.stop()               # every listener closed, the thread ended
    """

    def __init__(self, name: str = "mailtalk-servers") -> None:
        self.loop = asyncio.new_event_loop()
        self._servers: list[ReferenceServers] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, servers: Sequence[ReferenceServers]) -> None:
        """Start each of ``servers``; if one cannot, stop those started and raise."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start_all(list(servers)), self.loop)
        try:
            future.result()
        except BaseException:
            self.stop()
            raise

    async def _start_all(self, servers: list[ReferenceServers]) -> None:
        for server in servers:
            await server.start()  # a failure stops this server's own listeners
            self._servers.append(server)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coroutine`` in the servers' loop (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        for server in reversed(self._servers):
            self.loop.run_until_complete(server.stop())
        self._servers.clear()
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every server started and end the thread; a second call does nothing."""
        if self._thread.is_alive() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=timeout)


@contextmanager
def run_servers(
    root: Path,
    *,
    smtp: int | None = 0,
    submission: int | None = None,
    smtps: int | None = None,
    pop3: int | None = None,
    pop3s: int | None = None,
    imap: int | None = None,
    imaps: int | None = None,
    lmtp: int | str | None = None,
    dns: int | None = None,
    listen: str = "127.0.0.1",
    hostname: str | None = None,
    domains: Sequence[str] = (),
    users: Sequence[tuple[str, str]] = (),
    oauth2_tokens: Mapping[str, str] | None = None,
    faults: Sequence[str] = (),
    scenarios: Sequence[str] = (),
    journal: Journal | None = None,
    tls_fault: str | None = None,
    http: int | None = None,
    http_token: str | None = None,
    **settings: Any,
) -> Iterator[RunningServers]:
    """Start the servers on ``listen`` (ports 0 = free ones) and stop them on exit.

    ``journal``: where the servers write what happened (``mailtalk.servers.journal``).

    ``dns``: also the embedded DNS server on that port (UDP and TCP), answering from
    ``root/dns/``; without a ``resolver`` setting the servers then ask it themselves.
    ``hostname``: control/me, as ``mailtalk serve --hostname``.
    ``oauth2_tokens``: user -> bearer token, as ``mailtalk serve --oauth2-tokens``.
    ``tls_fault``: ``expired``, ``wrong-name``, ``self-signed`` or ``old-protocol``, as
    ``mailtalk serve --tls-fault``.
    ``http``: also the JSON API on that port (``port("http")``), as ``mailtalk serve
    --http``; ``http_token``: the bearer token it then asks for.
    ``lmtp``: a port, or ``"unix:/path"`` for a Unix-domain socket (``socket_path("lmtp")``),
    made with ``socket_mode`` (0o600) and ``socket_group`` (a gid), as ``mailtalk serve
    --lmtp unix:/path --lmtp-socket-mode --lmtp-socket-group``.
    """
    requested = {
        "smtp": smtp, "submission": submission, "smtps": smtps,
        "pop3": pop3, "pop3s": pop3s, "imap": imap, "imaps": imaps,
    }  # fmt: skip
    ports = {name: port for name, port in requested.items() if port is not None}
    sockets = {}
    if isinstance(lmtp, str) and lmtp.startswith("unix:"):
        sockets["lmtp"] = Path(lmtp[len("unix:") :])
    elif lmtp is not None:
        ports["lmtp"] = int(lmtp)
    config = ServeConfig(
        root=Path(root),
        listen=listen,
        ports=ports,
        unix_sockets=sockets,
        socket_mode=settings.pop("socket_mode", 0o600),
        socket_group=settings.pop("socket_group", None),
        domains=domains,
        users=users,
        oauth2_tokens=dict(oauth2_tokens or {}),
        faults=faults,
        scenarios=scenarios,
        settings=ServerSettings(**settings),
        dns_port=dns,
        hostname=hostname,
        journal=journal,
        tls_fault=tls_fault,
        http_port=http,
        http_token=http_token,
    )
    servers = ReferenceServers(config)
    running = ServerLoop()
    running.start([servers])
    try:
        yield RunningServers(config.root, servers.listeners, servers.context)
    finally:
        running.stop()
