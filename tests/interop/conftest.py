"""Fixtures for interop tests against the real Postfix/Dovecot of scripts/real-servers.

Start the servers first (as root, Debian/Ubuntu)::

    scripts/real-servers install && scripts/real-servers start
    eval "$(scripts/real-servers env)"

Every test under ``tests/interop`` is marked ``interop`` automatically, so
``pytest -m "not interop"`` leaves them out.  The ``real_servers`` fixture skips
when the servers are not reachable, unless ``MAILTALK_REQUIRE_REAL_SERVERS=1``
(as in ``.ci/run``), in which case it fails.
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
    """Where the real servers listen and how to log in to them."""

    host: str = "127.0.0.1"
    user: str = "alice"
    password: str = "secret"
    cafile: str = "/etc/dovecot/private/dovecot.pem"
    domain: str = "mailtalk.test"
    smtp: int = 25
    smtps: int = 465
    submission: int = 587
    pop3: int = 110
    pop3s: int = 995
    imap: int = 143
    imaps: int = 993

    @property
    def address(self) -> str:
        """alice's local address, e.g. ``alice@mailtalk.test``."""
        return f"{self.user}@{self.domain}"

    @property
    def ports(self) -> dict[str, int]:
        return {
            "smtp": self.smtp,
            "smtps": self.smtps,
            "submission": self.submission,
            "pop3": self.pop3,
            "pop3s": self.pop3s,
            "imap": self.imap,
            "imaps": self.imaps,
        }

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
            **{name: port(name) for name in defaults.ports},
        )


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
    """The real Postfix/Dovecot, after checking every port accepts TCP connections."""
    servers = RealServers.from_env()
    closed = [
        f"{name} {port}" for name, port in servers.ports.items() if not _accepts(servers.host, port)
    ]
    if closed:
        _unavailable(f"no connection to {servers.host} on: {', '.join(closed)}")
    if not os.access(servers.cafile, os.R_OK):
        _unavailable(f"CA file {servers.cafile} is missing or not readable")
    return servers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEROP_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.interop)
