"""Where a practice world's hosts listen: one loopback address each, ports chosen by binding.

A world lives on a block of loopback addresses, ``PREFIX.N.INDEX`` (``127.77.N.2`` for
the host of index 2), so each host has an address of its own and its own name in the DNS
means something. N is chosen at start:

* The block is **claimed** by binding a TCP socket (never listened on, so connecting to
  it is refused) to the claim port of the block's first address, without SO_REUSEADDR:
  while a world holds it, the same bind fails with EADDRINUSE for every other process of
  every user, and a second world moves on to the next block. A world that stops (or
  dies) releases it with its sockets. The first block tried is the one this root had last
  time (the learner keeps the addresses they have seen), else one derived from the user
  and the root, so that two users seldom even try the same one.
* Each **service** gets its standard port (SMTP 25, POP3 110, ...) when that can be bound
  on every host offering it (root can bind ports below 1024, a learner usually cannot,
  and a mail server listening on every address holds port 25 of each of them); else one
  free port, the same on all those hosts. One port per service keeps the DNS meaningful:
  the ISP's onward delivery looks up the MX and connects to its address on the world's
  SMTP port (``ServerSettings.mx_port``), as an MTA does on port 25.
* Where the block cannot be used at all (a system whose loopback is only 127.0.0.1),
  every host shares 127.0.0.1 with free ports of its own: the **shared** layout. The MX
  lookup then cannot find a port, so the world writes ``control/smtproutes`` instead.

Ports are probed by binding and closing; the servers bind them a moment later. A port
taken in between makes the start fail and the world tries again (``world.py``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

SHARED_ADDRESS: Final = "127.0.0.1"
BLOCKS: Final = 254  # N runs 1..254
FREE_PORT_ATTEMPTS: Final = 64


class LayoutError(OSError):
    """No block, address or port could be had; the message says why, in one line."""


@dataclass(frozen=True)
class HostPlan:
    """What the layout needs of a host: its name, index and services."""

    name: str
    index: int
    services: tuple[str, ...]


@dataclass
class Layout:
    """The addresses and ports of one start of a world."""

    addresses: dict[str, str]  # host -> address
    ports: dict[str, dict[str, int]]  # host -> service -> port
    block: str | None  # "127.77.5", or None in the shared layout
    claim: socket.socket | None = field(default=None, repr=False)

    @property
    def shared(self) -> bool:
        return self.block is None

    def common_port(self, service: str) -> int | None:
        """The port every host offering ``service`` has it on, or None if they differ."""
        found = {ports[service] for ports in self.ports.values() if service in ports}
        return found.pop() if len(found) == 1 else None

    def release(self) -> None:
        if self.claim is not None:
            self.claim.close()
            self.claim = None


def first_block(uid: int, root: str) -> int:
    """Where a world of this user and root starts looking: 1..254, spread by a hash."""
    return 1 + zlib.crc32(f"{uid}:{root}".encode()) % BLOCKS


def block_order(first: int) -> Iterator[int]:
    for offset in range(BLOCKS):
        yield 1 + (first - 1 + offset) % BLOCKS


def choose_layout(
    hosts: Sequence[HostPlan],
    prefix: str,
    claim_port: int,
    standard_ports: Mapping[str, int],
    *,
    first: int,
    prefer_standard: bool = True,
    skip: Iterable[int] = (),
    shared: bool = False,
) -> Layout:
    """Claim a block and choose every host's ports; LayoutError if nothing can be had.

    ``first``: the block tried first; ``skip``: blocks not to try (one whose ports were
    taken while starting); ``shared``: go straight to the shared layout.
    """
    ordered = sorted(hosts, key=lambda host: host.index)
    if not ordered:
        raise LayoutError(errno.EINVAL, "a world needs at least one host")
    if not shared:
        skipped = set(skip)
        for number in block_order(first):
            if number in skipped:
                continue
            block = f"{prefix}.{number}"
            addresses = {host.name: f"{block}.{host.index}" for host in ordered}
            try:
                claim = _claim(addresses[ordered[0].name], claim_port)
            except OSError as error:
                if error.errno == errno.EADDRNOTAVAIL:
                    break  # this loopback has no such addresses: share 127.0.0.1
                continue  # another world's block (or something else's): the next one
            try:
                ports = _common_ports(ordered, addresses, standard_ports, prefer_standard)
            except OSError:
                claim.close()
                continue
            return Layout(addresses, ports, block, claim)
        else:
            raise LayoutError(
                errno.EADDRINUSE, f"every block of {prefix}.N.x is taken by another world"
            )
    return _shared_layout(ordered)


def _claim(address: str, port: int) -> socket.socket:
    """A bound TCP socket, not listening, without SO_REUSEADDR: the block's claim."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def _common_ports(
    hosts: Sequence[HostPlan],
    addresses: Mapping[str, str],
    standard: Mapping[str, int],
    prefer_standard: bool,
) -> dict[str, dict[str, int]]:
    ports: dict[str, dict[str, int]] = {host.name: {} for host in hosts}
    services = list(dict.fromkeys(s for host in hosts for s in host.services))
    for service in services:
        holders = [host.name for host in hosts if service in host.services]
        where = [addresses[name] for name in holders]
        taken = {port for name in holders for port in ports[name].values()}
        udp = service == "dns"
        port = standard.get(service) if prefer_standard else None
        if port is None or port in taken or not all(_bindable(a, port, udp) for a in where):
            port = _free_common_port(where, taken, udp)
        for name in holders:
            ports[name][service] = port
    return ports


def _free_common_port(addresses: Sequence[str], taken: set[int], udp: bool) -> int:
    for _attempt in range(FREE_PORT_ATTEMPTS):
        with _bound(addresses[0], 0, socket.SOCK_STREAM) as sock:
            port = int(sock.getsockname()[1])
        if port in taken:
            continue
        if all(_bindable(address, port, udp) for address in addresses):
            return port
    raise LayoutError(errno.EADDRINUSE, f"no free port common to {', '.join(addresses)}")


def _bindable(address: str, port: int, udp: bool = False) -> bool:
    """Whether a listener could bind ``address:port`` now (TCP, and UDP for DNS)."""
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    try:
        with contextlib.ExitStack() as stack:
            for kind in kinds:
                stack.enter_context(_bound(address, port, kind))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _bound(address: str, port: int, kind: int) -> Iterator[socket.socket]:
    """A socket bound as asyncio's listeners bind (SO_REUSEADDR for TCP), then closed."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM and os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        yield sock
    finally:
        sock.close()


def _shared_layout(hosts: Sequence[HostPlan]) -> Layout:
    """Every host on 127.0.0.1, each service of each host on a free port of its own."""
    addresses = {host.name: SHARED_ADDRESS for host in hosts}
    ports: dict[str, dict[str, int]] = {}
    taken: set[int] = set()
    for host in hosts:
        ports[host.name] = {}
        for service in host.services:
            port = _free_common_port([SHARED_ADDRESS], taken, service == "dns")
            taken.add(port)
            ports[host.name][service] = port
    return Layout(addresses, ports, None)


def is_block_address(text: str, prefix: str) -> bool:
    """Whether ``text`` is an address of ``prefix``'s blocks (for a remembered block)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == 4 and text.startswith(prefix + ".")
