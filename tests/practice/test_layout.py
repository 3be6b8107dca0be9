"""Choosing a world's addresses and ports: claimed blocks are skipped, a taken standard
port gives way to one free port common to every host, and a loopback without the block's
addresses falls back to 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from mailtalk.practice.layout import (
    BLOCKS,
    HostPlan,
    Layout,
    block_order,
    choose_layout,
    first_block,
)

PREFIX = "127.77"
CLAIM = 7077
HOSTS = [
    HostPlan("ns.test", 1, ("dns",)),
    HostPlan("mail.test", 2, ("smtp", "submission", "pop3")),
    HostPlan("mx.test", 3, ("smtp", "pop3", "imap")),
]
STANDARD = {"dns": 53, "smtp": 25, "submission": 587, "pop3": 110, "imap": 143}
FIRST = 233  # tests use their own corner of 127.77; a claimed block just moves them on


@pytest.fixture
def layouts() -> Iterator[list[Layout]]:
    made: list[Layout] = []
    yield made
    for layout in made:
        layout.release()


def choose(made: list[Layout], **options: object) -> Layout:
    layout = choose_layout(HOSTS, PREFIX, CLAIM, STANDARD, **{"first": FIRST, **options})  # type: ignore[arg-type]
    made.append(layout)
    return layout


def test_a_claimed_block_is_skipped_and_released_on_stop(layouts: list[Layout]) -> None:
    one = choose(layouts)
    two = choose(layouts)
    assert one.block != two.block
    assert one.addresses["mail.test"] == f"{one.block}.2"
    number = int(one.block.rsplit(".", 1)[1]) if one.block else 0
    one.release()
    three = choose(layouts, first=number)
    assert three.block == one.block  # free again once the first world let go


def test_one_port_per_service_common_to_every_host(layouts: list[Layout]) -> None:
    layout = choose(layouts)
    for service in ("smtp", "pop3"):
        assert layout.common_port(service) is not None
    ports = layout.ports["mail.test"]
    assert len(set(ports.values())) == len(ports)  # no two services on one port


@pytest.mark.skipif(os.geteuid() != 0, reason="binding port 25 needs root")
def test_a_standard_port_taken_on_one_host_gives_a_free_one_to_all(
    layouts: list[Layout],
) -> None:
    probe = choose(layouts)
    assert probe.common_port("smtp") == 25  # as root, the standard port
    block = probe.block
    probe.release()
    assert block is not None
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind((f"{block}.3", 25))  # someone else's server on the MX's address
    holder.listen(1)
    try:
        layout = choose(layouts, first=int(block.rsplit(".", 1)[1]))
        assert layout.block == block
        smtp = layout.common_port("smtp")
        assert smtp is not None and smtp != 25
        assert layout.ports["mail.test"]["submission"] == 587  # the others keep theirs
    finally:
        holder.close()


def test_free_ports_when_asked(layouts: list[Layout]) -> None:
    layout = choose(layouts, prefer_standard=False)
    every = [port for ports in layout.ports.values() for port in ports.values()]
    assert all(port >= 1024 for port in every)
    dns = layout.ports["ns.test"]["dns"]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind((layout.addresses["ns.test"], dns))  # free for UDP too
    finally:
        udp.close()


def test_skipped_blocks_are_not_tried(layouts: list[Layout]) -> None:
    layout = choose(layouts, skip={FIRST})
    assert layout.block != f"{PREFIX}.{FIRST}"


def test_without_the_block_addresses_every_host_shares_loopback(layouts: list[Layout]) -> None:
    """198.51.N.x (TEST-NET-2 and its neighbours) is on no interface: the bind fails with
    EADDRNOTAVAIL, as 127.77.N.x does on a system whose loopback is 127.0.0.1 alone."""
    layout = choose_layout(HOSTS, "198.51", CLAIM, STANDARD, first=1)
    layouts.append(layout)
    assert layout.shared and layout.block is None
    assert set(layout.addresses.values()) == {"127.0.0.1"}
    every = [port for ports in layout.ports.values() for port in ports.values()]
    assert len(set(every)) == len(every)
    assert layout.common_port("smtp") is None  # hence control/smtproutes


def test_the_first_block_spreads_users_and_roots() -> None:
    assert 1 <= first_block(1000, "/home/a/.local/state/mailtalk/practice") <= BLOCKS
    assert first_block(1000, "/r") == first_block(1000, "/r")
    starts = {first_block(uid, "/same/root") for uid in range(1000, 1050)}
    assert len(starts) > 25
    order = list(block_order(250))
    assert order[:6] == [250, 251, 252, 253, 254, 1]
    assert sorted(order) == list(range(1, BLOCKS + 1))
