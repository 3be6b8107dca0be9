"""Two hosts on one machine, joined by a cable: Linux network namespaces and a veth pair.

For tests that need what one host cannot show, such as a client outside the server's
host and network (``mailtalk diagnose relay``'s open-relay finding)::

    with two_hosts(server="44.1.1.1", client="45.2.2.2") as (server, client):
        subprocess.Popen(server.command("mailtalk", "serve", "--listen", server.address))
        subprocess.run(client.command("mailtalk", "diagnose", "relay", ...))

Each host is a namespace of its own (``ip netns add``), named uniquely for the run
(``mailtalk-test-PID-HEX-server``), with loopback up and one end of the veth pair
carrying its address (a /32 or /128) and one route, to the other host's address.
There is no other route, so the addresses, global as they may look, reach nothing but
each other; the root namespace and its routes are not touched. ``Host.command`` wraps a
command in ``ip netns exec`` (which execs it: a Popen's pid is the command's).

On leaving, even after a failure, whatever still runs in the two namespaces (started
there by the test) is killed and the namespaces are deleted, which deletes the veth
pair with them: ``ip netns list`` shows nothing of ours afterwards.

Needs root and iproute2 (``scripts/real-servers install`` installs it). Without them
:func:`two_hosts` skips the test with the reason, or fails it when
``MAILTALK_REQUIRE_REAL_SERVERS=1`` (as in CI), as the interop tests do.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

PREFIX = "mailtalk-test"
IP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Host:
    """One namespace: its name and its address on the link to the other host."""

    name: str
    address: str
    interface: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` to run inside this host."""
        return ["ip", "netns", "exec", self.name, *argv]


class SetupError(Exception):
    """An ``ip`` command that failed while building the hosts."""


def unavailable(reason: str) -> None:
    """Skip (or fail, under MAILTALK_REQUIRE_REAL_SERVERS=1) for want of namespaces."""
    if os.environ.get("MAILTALK_REQUIRE_REAL_SERVERS") == "1":
        pytest.fail(
            f"network namespaces unavailable: {reason} (MAILTALK_REQUIRE_REAL_SERVERS=1; "
            "run as root, allowed to make namespaces, with iproute2 installed)",
            pytrace=False,
        )
    pytest.skip(
        f"network namespaces unavailable: {reason} "
        "(needs root, allowed to make namespaces, and iproute2)"
    )


def missing() -> str | None:
    """Why namespaces cannot be made here, before trying; None when they may."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return None


def _ip(*args: str) -> None:
    try:
        result = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SetupError(f"ip {' '.join(args)}: {error}") from None
    if result.returncode != 0:
        raise SetupError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


def namespaces() -> list[str]:
    """The names ``ip netns list`` shows."""
    result = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    )
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _pids_in(name: str) -> list[int]:
    result = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=IP_TIMEOUT,
        check=False,
    )
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def _remove(name: str) -> None:
    """Kill what runs in namespace ``name`` (only the test's own processes can be there:
    the namespace was made for it) and delete it."""
    if name not in namespaces():
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids_in(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while pids and _pids_in(name) and time.monotonic() < deadline:
            time.sleep(0.05)
    subprocess.run(
        ["ip", "netns", "del", name], capture_output=True, timeout=IP_TIMEOUT, check=False
    )


@contextlib.contextmanager
def two_hosts(server: str = "44.1.1.1", client: str = "45.2.2.2") -> Iterator[tuple[Host, Host]]:
    """A server host and a client host, each a namespace with one address, joined by a
    veth pair; both removed on leaving (see the module docstring)."""
    reason = missing()
    if reason is not None:
        unavailable(reason)
    for address in (server, client):
        ipaddress.ip_address(address)  # a ValueError here is the test's own mistake
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    hosts = (
        Host(f"{PREFIX}-{tag}-server", server, f"mtv{tag[-6:]}s"),
        Host(f"{PREFIX}-{tag}-client", client, f"mtv{tag[-6:]}c"),
    )
    made: list[str] = []
    try:
        try:
            for host in hosts:
                _ip("netns", "add", host.name)
                made.append(host.name)
            # both ends are made in the server's namespace, then one moves: nothing is
            # ever created in the root namespace
            _ip("-n", hosts[0].name, "link", "add", hosts[0].interface, "type", "veth",
                "peer", "name", hosts[1].interface)
            _ip("-n", hosts[0].name, "link", "set", hosts[1].interface, "netns", hosts[1].name)
            for host, other in zip(hosts, hosts[::-1], strict=True):
                v6 = ":" in host.address
                one = "/128" if v6 else "/32"
                _ip("-n", host.name, "link", "set", "lo", "up")
                # nodad: an IPv6 address is usable at once, not after duplicate detection
                _ip("-n", host.name, "addr", "add", host.address + one, "dev", host.interface,
                    *(["nodad"] if v6 else []))
                _ip("-n", host.name, "link", "set", host.interface, "up")
                # the one route: to the other host, over the cable
                _ip("-n", host.name, "route", "add", other.address + one, "dev", host.interface,
                    "src", host.address)
        except SetupError as error:
            failure: str | None = str(error)
        else:
            failure = None
        if failure is not None:
            unavailable(failure)
        yield hosts
    finally:
        for name in made:
            _remove(name)
