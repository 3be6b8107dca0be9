"""The reference servers from Python: a context manager running them in a thread.

    with run_servers(tmp_path, users=[("alice", "secret")]) as servers:
        smtplib.SMTP("127.0.0.1", servers.port("smtp"))
        ...
        assert servers.fired_faults() == [...]

The pytest plugin (``mailtalk.pytest_plugin``) builds its fixtures on this.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailtalk.servers.app import ListenerInfo, ReferenceServers, ServeConfig
from mailtalk.servers.context import ServerContext, ServerSettings
from mailtalk.servers.journal import Journal
from mailtalk.store import Maildir


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
        return self.listeners[0].host

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

    def fired_faults(self) -> list[str]:
        """The rule texts of the faults that fired so far, in order."""
        return list(self.context.faults.fired_rules())


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
    dns: int | None = None,
    listen: str = "127.0.0.1",
    hostname: str | None = None,
    domains: Sequence[str] = (),
    users: Sequence[tuple[str, str]] = (),
    faults: Sequence[str] = (),
    scenarios: Sequence[str] = (),
    journal: Journal | None = None,
    **settings: Any,
) -> Iterator[RunningServers]:
    """Start the servers on ``listen`` (ports 0 = free ones) and stop them on exit.

    ``journal``: where the servers write what happened (``mailtalk.servers.journal``).

    ``dns``: also the embedded DNS server on that port (UDP and TCP), answering from
    ``root/dns/``; without a ``resolver`` setting the servers then ask it themselves.
    ``hostname``: control/me, as ``mailtalk serve --hostname``.
    """
    requested = {
        "smtp": smtp, "submission": submission, "smtps": smtps,
        "pop3": pop3, "pop3s": pop3s, "imap": imap, "imaps": imaps,
    }  # fmt: skip
    ports = {name: port for name, port in requested.items() if port is not None}
    config = ServeConfig(
        root=Path(root),
        listen=listen,
        ports=ports,
        domains=domains,
        users=users,
        faults=faults,
        scenarios=scenarios,
        settings=ServerSettings(**settings),
        dns_port=dns,
        hostname=hostname,
        journal=journal,
    )
    servers = ReferenceServers(config)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(servers.start())
        except BaseException as error:  # handed to the caller's thread
            failure.append(error)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(servers.stop())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    thread = threading.Thread(target=run, name="mailtalk-servers", daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield RunningServers(config.root, servers.listeners, servers.context)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
