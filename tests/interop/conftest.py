"""Fixtures for interop tests against the real servers of scripts/real-servers.

Start the servers first (as root, Debian/Ubuntu)::

    scripts/real-servers install && scripts/real-servers start
    eval "$(scripts/real-servers env)"

Every test under ``tests/interop`` is marked ``interop`` automatically, so
``pytest -m "not interop"`` leaves them out.

Fixtures: ``real_servers`` (Postfix and Dovecot on 127.0.0.1), and the second
MTAs and mail store unpacked beside them: ``exim`` (Exim 4.96), ``opensmtpd``
(OpenSMTPD 6.8) and ``mailutils`` (GNU Mailutils 3.15 imap4d and pop3d). A test
needs only the ports it reads: a port is checked the first time the test asks
for it, and a port that does not accept connections skips that test, or fails
it with ``MAILTALK_REQUIRE_REAL_SERVERS=1`` (as in ``.ci/run``).
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

_INTEROP_DIR = Path(__file__).resolve().parent
_START_HINT = "run scripts/real-servers install && scripts/real-servers start"


@dataclass(frozen=True)
class RealServers:
    """Where the real Postfix and Dovecot listen and how to log in to them.

    Read the ports through the properties (``real_servers.smtp``): each is
    checked once, when a test first uses it.
    """

    host: str = "127.0.0.1"
    user: str = "alice"
    password: str = "secret"
    cafile: str = "/etc/dovecot/private/dovecot.pem"
    domain: str = "mailtalk.test"
    smtp_port: int = 25
    smtps_port: int = 465
    submission_port: int = 587
    pop3_port: int = 110
    pop3s_port: int = 995
    imap_port: int = 143
    imaps_port: int = 993

    def _checked(self, name: str) -> int:
        return _checked_port("Postfix/Dovecot", name, self.host, getattr(self, f"{name}_port"))

    @property
    def smtp(self) -> int:
        return self._checked("smtp")

    @property
    def smtps(self) -> int:
        return self._checked("smtps")

    @property
    def submission(self) -> int:
        return self._checked("submission")

    @property
    def pop3(self) -> int:
        return self._checked("pop3")

    @property
    def pop3s(self) -> int:
        return self._checked("pop3s")

    @property
    def imap(self) -> int:
        return self._checked("imap")

    @property
    def imaps(self) -> int:
        return self._checked("imaps")

    @property
    def address(self) -> str:
        """alice's local address, e.g. ``alice@mailtalk.test``."""
        return f"{self.user}@{self.domain}"

    @property
    def ports(self) -> dict[str, int]:
        """Every port by name, unchecked."""
        return {name: getattr(self, f"{name}_port") for name in _REAL_PORT_NAMES}

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the servers' self-signed certificate."""
        return ssl.create_default_context(cafile=self.cafile)

    @classmethod
    def from_env(cls) -> RealServers:
        env = os.environ
        defaults = cls()

        def port(name: str) -> int:
            value = env.get(f"MAILTALK_REAL_{name.upper()}_PORT")
            return int(value) if value else getattr(defaults, name)

        return cls(
            host=env.get("MAILTALK_REAL_HOST") or defaults.host,
            user=env.get("MAILTALK_REAL_USER") or defaults.user,
            password=env.get("MAILTALK_REAL_PASSWORD") or defaults.password,
            cafile=env.get("MAILTALK_REAL_CAFILE") or defaults.cafile,
            domain=env.get("MAILTALK_REAL_DOMAIN") or defaults.domain,
            **{f"{name}_port": port(name) for name in _REAL_PORT_NAMES},
        )


_REAL_PORT_NAMES = ("smtp", "smtps", "submission", "pop3", "pop3s", "imap", "imaps")


@dataclass(frozen=True)
class Peer:
    """A second real server unpacked beside Postfix/Dovecot (see scripts/real-servers).

    ``peer.port("smtp")`` is the port after checking, once per run, that it
    accepts connections (skip, or fail under MAILTALK_REQUIRE_REAL_SERVERS=1).
    """

    name: str
    host: str
    ports: dict[str, int]
    domain: str
    user: str = "alice"
    password: str = "secret"
    cafile: str = "/etc/dovecot/private/dovecot.pem"

    @property
    def address(self) -> str:
        """alice's address on this server, e.g. ``alice@exim.test``."""
        return f"{self.user}@{self.domain}"

    def port(self, name: str) -> int:
        return _checked_port(self.name, name, self.host, self.ports[name])

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the peers' certificate."""
        return ssl.create_default_context(cafile=self.cafile)


def _peer_from_env(prefix: str, defaults: Peer) -> Peer:
    """``defaults`` overridden by ``MAILTALK_<PREFIX>_HOST``, ``..._<NAME>_PORT``, ..."""
    env = os.environ

    def value(key: str, default: str) -> str:
        return env.get(f"MAILTALK_{prefix}_{key}") or default

    return Peer(
        name=defaults.name,
        host=value("HOST", defaults.host),
        ports={
            name: int(value(f"{name.upper()}_PORT", str(port)))
            for name, port in defaults.ports.items()
        },
        domain=value("DOMAIN", defaults.domain),
        user=value("USER", defaults.user),
        password=value("PASSWORD", defaults.password),
        cafile=env.get("MAILTALK_PEERS_CAFILE") or defaults.cafile,
    )


# Where scripts/real-servers starts each peer (overridable by its `env` output).
EXIM = Peer(
    name="Exim",
    host="127.0.0.6",
    # smtp: STARTTLS offered, AUTH only after it, CHUNKING advertised, relaying
    # refused for every client ("relay not permitted"); smtp_trusting: the same
    # daemon on a port where relay_from_hosts = 127.0.0.0/8 applies (as Debian's
    # stock MTAs trust loopback); smtps: implicit TLS; submission: AUTH after STARTTLS.
    ports={"smtp": 2525, "smtp_trusting": 2526, "smtps": 2465, "submission": 2587},
    domain="exim.test",
)
OPENSMTPD = Peer(
    # Plain SMTP only: its TLS is broken with Debian 12's OpenSSL 3 (upstream bug).
    name="OpenSMTPD",
    host="127.0.0.5",
    ports={"smtp": 2525},
    domain="mx.test",
)
MAILUTILS = Peer(
    # imap4d and pop3d; STARTTLS/STLS on the plain ports, implicit TLS on the others.
    name="GNU Mailutils",
    host="127.0.0.7",
    ports={"imap": 2143, "imaps": 2993, "pop3": 2110, "pop3s": 2995},
    domain="mailutils.test",
)

_port_state: dict[tuple[str, int], bool] = {}


def _checked_port(server: str, name: str, host: str, port: int) -> int:
    """``port`` if ``host:port`` accepts TCP connections (checked once per run)."""
    key = (host, port)
    if key not in _port_state:
        _port_state[key] = _accepts(host, port)
    if not _port_state[key]:
        _unavailable(f"{server} {name}: no connection to {host}:{port}")
    return port


def _accepts(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(reason: str) -> None:
    if os.environ.get("MAILTALK_REQUIRE_REAL_SERVERS") == "1":
        pytest.fail(f"{reason} (MAILTALK_REQUIRE_REAL_SERVERS=1; {_START_HINT})", pytrace=False)
    pytest.skip(f"real servers not running: {_START_HINT} ({reason})")


@pytest.fixture(scope="session")
def real_servers() -> RealServers:
    """The real Postfix/Dovecot; each port is checked when a test first uses it."""
    servers = RealServers.from_env()
    if not os.access(servers.cafile, os.R_OK):
        _unavailable(f"CA file {servers.cafile} is missing or not readable")
    return servers


def _peer_fixture(prefix: str, defaults: Peer) -> Peer:
    peer = _peer_from_env(prefix, defaults)
    if not os.access(peer.cafile, os.R_OK):
        _unavailable(f"CA file {peer.cafile} is missing or not readable")
    return peer


@pytest.fixture(scope="session")
def exim() -> Peer:
    """Exim 4.96 on 127.0.0.6 (see EXIM for its ports)."""
    return _peer_fixture("EXIM", EXIM)


@pytest.fixture(scope="session")
def opensmtpd() -> Peer:
    """OpenSMTPD 6.8 on 127.0.0.5, plain SMTP."""
    return _peer_fixture("OPENSMTPD", OPENSMTPD)


@pytest.fixture(scope="session")
def mailutils() -> Peer:
    """GNU Mailutils 3.15 imap4d/pop3d on 127.0.0.7."""
    return _peer_fixture("MAILUTILS", MAILUTILS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEROP_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.interop)
