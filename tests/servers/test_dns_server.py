"""The embedded DNS server (``mailtalk serve --dns``) over real sockets, UDP and TCP.

Every server runs through the public API, ``run_servers(root, dns=0)``; queries are
dnspython's, and one test asks with dig when it is installed.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.app import ConfigError

RECORDS = """\
# the practice world
isp.test              MX    10 mx.isp.test
isp.test              MX    5  mx0.isp.test     # the preferred one
mx.isp.test           A     127.0.0.2
mx.isp.test           AAAA  ::1
mx0.isp.test          A     127.0.0.3
isp.test              TXT   "v=spf1 ip4:127.0.0.2 -all # not a comment"
example.net           MX    0 .
2.0.0.127.in-addr.arpa PTR  mx.isp.test
www.isp.test          CNAME mx.isp.test
far.isp.test          CNAME elsewhere.invalid
a.b.deep.isp.test     A     127.0.0.9
"""

ZONE = """\
$TTL 600
@       IN SOA ns.example.test. hostmaster.example.test. 7 3600 600 86400 60
        IN NS  ns
        IN MX  10 mail
ns      IN A   127.0.0.1
mail    IN A   127.0.0.4
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("dns")
    (root / "dns").mkdir()
    (root / "dns" / "records").write_text(RECORDS)
    (root / "dns" / "example.test.zone").write_text(ZONE)
    big = "".join(f'big.test TXT "{"x" * 200} {n}"\n' for n in range(12))
    (root / "dns" / "records").write_text(RECORDS + big)
    with run_servers(root, dns=0) as servers:
        yield servers


def udp(servers: RunningServers, name: str, rdtype: str, **kw: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    return dns.query.udp(query, "127.0.0.1", port=servers.port("dns"), timeout=3)


def tcp(servers: RunningServers, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.tcp(query, "127.0.0.1", port=servers.port("dns"), timeout=3)


def texts(response: dns.message.Message, rdtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return [r.to_text() for rrset in response.answer if rrset.rdtype == wanted for r in rrset]


@pytest.mark.parametrize("ask", [udp, tcp], ids=["udp", "tcp"])
@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        ("isp.test", "MX", ["5 mx0.isp.test.", "10 mx.isp.test."]),
        ("mx.isp.test", "A", ["127.0.0.2"]),
        ("mx.isp.test", "AAAA", ["::1"]),
        ("isp.test", "TXT", ['"v=spf1 ip4:127.0.0.2 -all # not a comment"']),
        ("example.net", "MX", ["0 ."]),
        ("2.0.0.127.in-addr.arpa", "PTR", ["mx.isp.test."]),
        ("www.isp.test", "CNAME", ["mx.isp.test."]),
        ("example.test", "MX", ["10 mail.example.test."]),
        ("mail.example.test", "A", ["127.0.0.4"]),
        ("ISP.TEST", "MX", ["5 mx0.isp.test.", "10 mx.isp.test."]),
    ],
)
def test_answers(world: RunningServers, ask, name: str, rdtype: str, expected: list[str]) -> None:
    response = ask(world, name, rdtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.TC
    # Names are compared without case: compression may reuse the question's spelling.
    assert sorted(t.lower() for t in texts(response, rdtype)) == sorted(expected)


def test_mx_answer_carries_the_exchanges_addresses(world: RunningServers) -> None:
    response = udp(world, "isp.test", "MX")
    additional = {
        (rrset.name.to_text(), r.to_text()) for rrset in response.additional for r in rrset
    }
    assert ("mx.isp.test.", "127.0.0.2") in additional
    assert ("mx.isp.test.", "::1") in additional
    assert ("mx0.isp.test.", "127.0.0.3") in additional


def test_cname_is_followed_inside_the_zones(world: RunningServers) -> None:
    response = udp(world, "www.isp.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert texts(response, "CNAME") == ["mx.isp.test."]
    assert texts(response, "A") == ["127.0.0.2"]
    # A CNAME out of every served zone: the chain stops there, for the client to follow.
    response = udp(world, "far.isp.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert texts(response, "CNAME") == ["elsewhere.invalid."]
    assert texts(response, "A") == []


@pytest.mark.parametrize("ask", [udp, tcp], ids=["udp", "tcp"])
def test_nxdomain_with_soa(world: RunningServers, ask) -> None:
    response = ask(world, "nobody.isp.test", "MX")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]
    assert response.authority[0].name.to_text() == "isp.test."


def test_the_practice_tld_is_served_whole(world: RunningServers) -> None:
    response = udp(world, "nowhere.test", "MX")  # a typo of a practice domain
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].name.to_text() == "test."
    response = udp(world, "test", "MX")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []
    # example.net is under a real TLD: its neighbours are not ours to deny.
    assert udp(world, "nowhere.net", "MX").rcode() == dns.rcode.REFUSED


def test_nodata_with_soa(world: RunningServers) -> None:
    response = udp(world, "mx.isp.test", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    soa = response.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "isp.test."
    # The zone file's own SOA, its minimum as the negative TTL (RFC 2308).
    response = udp(world, "mail.example.test", "TXT")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []
    assert response.authority[0][0].serial == 7
    assert response.authority[0].ttl == 60


def test_empty_non_terminal_is_nodata_not_nxdomain(world: RunningServers) -> None:
    response = udp(world, "deep.isp.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


@pytest.mark.parametrize("name", ["google.com", "com", "isp.test.evil", "elsewhere.invalid"])
def test_refused_outside_the_zones(world: RunningServers, name: str) -> None:
    response = udp(world, name, "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert response.answer == []


def test_truncation_over_udp_and_the_whole_answer_over_tcp(world: RunningServers) -> None:
    response = udp(world, "big.test", "TXT")  # no EDNS: 512 bytes at most
    assert response.flags & dns.flags.TC
    assert response.answer == []
    whole = tcp(world, "big.test", "TXT")
    assert not whole.flags & dns.flags.TC
    assert len(texts(whole, "TXT")) == 12
    # With EDNS the client's size counts.
    bigger = udp(world, "big.test", "TXT", use_edns=0, payload=4096)
    assert not bigger.flags & dns.flags.TC
    assert len(texts(bigger, "TXT")) == 12
    assert bigger.edns == 0


def test_edns_query_gets_an_edns_answer(world: RunningServers) -> None:
    response = udp(world, "isp.test", "MX", use_edns=0, payload=1232)
    assert response.edns == 0
    assert response.rcode() == dns.rcode.NOERROR


def test_several_queries_on_one_tcp_connection(world: RunningServers) -> None:
    with socket.create_connection(("127.0.0.1", world.port("dns")), timeout=3) as sock:
        for name in ("isp.test", "example.net", "isp.test"):
            wire = dns.message.make_query(name, "MX").to_wire()
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
            response = dns.message.from_wire(_recv_exactly(sock, length))
            assert response.rcode() == dns.rcode.NOERROR


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _still_answers(servers: RunningServers) -> None:
    assert texts(udp(servers, "mx.isp.test", "A"), "A") == ["127.0.0.2"]
    assert texts(tcp(servers, "mx.isp.test", "A"), "A") == ["127.0.0.2"]


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x00",
        b"\x12\x34" + b"\x00" * 9,  # shorter than a header
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",  # a question that is not there
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc",  # a label running off
        b"\xff" * 600,
    ],
)
def test_malformed_udp_is_ignored(world: RunningServers, packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        sock.sendto(packet, ("127.0.0.1", world.port("dns")))
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    _still_answers(world)


def test_a_response_sent_as_a_query_is_not_answered(world: RunningServers) -> None:
    response = dns.message.make_response(dns.message.make_query("isp.test", "MX"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        sock.sendto(response.to_wire(), ("127.0.0.1", world.port("dns")))
        with pytest.raises(TimeoutError):
            sock.recv(4096)


def test_malformed_tcp_closes_the_connection(world: RunningServers) -> None:
    with socket.create_connection(("127.0.0.1", world.port("dns")), timeout=3) as sock:
        sock.sendall(b"\x00\x05hello")
        assert sock.recv(100) == b""
    with socket.create_connection(("127.0.0.1", world.port("dns")), timeout=3) as sock:
        sock.sendall(b"\x01\x00abc")  # promises 256 bytes, then goes away
    _still_answers(world)


def test_zone_transfer_is_refused(world: RunningServers) -> None:
    response = tcp(world, "isp.test", "AXFR")
    assert response.rcode() == dns.rcode.REFUSED


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(packet=st.binary(max_size=700))
def test_random_bytes_never_kill_it(world: RunningServers, packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(packet, ("127.0.0.1", world.port("dns")))
    # A query built on the random bytes' header, too: real flags, garbage after.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00\x01\x01\x00\x00\x01" + packet, ("127.0.0.1", world.port("dns")))


def test_alive_after_the_fuzzing(world: RunningServers) -> None:
    _still_answers(world)


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
def test_dig_interop(world: RunningServers) -> None:
    port = str(world.port("dns"))
    base = ["dig", "@127.0.0.1", "-p", port, "+time=3", "+tries=1"]
    short = subprocess.run(
        [*base, "+short", "isp.test", "MX"], capture_output=True, text=True, timeout=15
    )
    assert sorted(short.stdout.split("\n")[:2]) == ["10 mx.isp.test.", "5 mx0.isp.test."]
    full = subprocess.run(
        [*base, "nobody.isp.test", "A"], capture_output=True, text=True, timeout=15
    ).stdout
    assert "status: NXDOMAIN" in full and " aa" in full.split("flags:")[1].split(";")[0]
    # dig retries over TCP on TC, and gets the whole answer.
    big = subprocess.run(
        [*base, "+noedns", "+short", "big.test", "TXT"], capture_output=True, text=True, timeout=15
    ).stdout
    assert len(big.splitlines()) == 12
    refused = subprocess.run(
        [*base, "example.com", "A"], capture_output=True, text=True, timeout=15
    ).stdout
    assert "status: REFUSED" in refused


# --- the data files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("isp.test MXX 10 mx.isp.test", ["records:2", "unknown record type 'MXX'", "MX, A"]),
        ("mx.isp.test A 999.1.2.3", ["records:2", "bad A value '999.1.2.3'"]),
        ("mx.isp.test AAAA 127.0.0.1", ["records:2", "bad AAAA value"]),
        ("isp.test MX mx.isp.test", ["records:2", "bad MX value"]),
        ("isp.test", ["records:2", "expected NAME TYPE VALUE"]),
        ("isp.test MX", ["records:2", "expected NAME TYPE VALUE"]),
        ("www.isp.test CNAME a.test\nwww.isp.test A 127.0.0.1", ["records:3", "CNAME"]),
    ],
)
def test_bad_records_file_names_file_and_line(tmp_path: Path, line: str, words: list[str]) -> None:
    (tmp_path / "dns").mkdir()
    (tmp_path / "dns" / "records").write_text(f"# first line\n{line}\n")
    with pytest.raises(ConfigError) as caught, run_servers(tmp_path, dns=0):
        pass
    message = str(caught.value)
    assert str(tmp_path / "dns" / "records") in message
    for word in words:
        assert word in message


def test_bad_zone_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "dns").mkdir()
    (tmp_path / "dns" / "bad.test.zone").write_text("@ IN SOA a. b. 1 2 3 4 5\nwww IN A nonsense\n")
    with pytest.raises(ConfigError) as caught, run_servers(tmp_path, dns=0):
        pass
    assert "bad.test.zone:2" in str(caught.value)


def test_origin_from_the_zone_file(tmp_path: Path) -> None:
    (tmp_path / "dns").mkdir()
    (tmp_path / "dns" / "anything.zone").write_text(
        "$ORIGIN other.test.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n@ IN MX 1 mx\nmx IN A 127.0.0.5\n"
    )
    with run_servers(tmp_path, dns=0) as servers:
        assert texts(udp(servers, "other.test", "MX"), "MX") == ["1 mx.other.test."]
        assert udp(servers, "anything", "MX").rcode() == dns.rcode.REFUSED


def test_new_root_gets_a_commented_records_file(tmp_path: Path) -> None:
    with run_servers(tmp_path, dns=0) as servers:
        assert udp(servers, "isp.test", "MX").rcode() == dns.rcode.REFUSED
    text = (tmp_path / "dns" / "records").read_text()
    assert all(line.startswith("#") for line in text.splitlines())
    assert "isp.test" in text


def test_servers_ask_their_own_dns_unless_told_otherwise(tmp_path: Path) -> None:
    with run_servers(tmp_path, dns=0) as servers:
        assert servers.context.settings.resolver == f"127.0.0.1:{servers.port('dns')}"
    with run_servers(tmp_path, dns=0, resolver="192.0.2.1:53") as servers:
        assert servers.context.settings.resolver == "192.0.2.1:53"
    with run_servers(tmp_path) as servers:
        assert servers.context.settings.resolver is None
        with pytest.raises(KeyError):
            servers.port("dns")


def test_sender_domain_check_uses_the_embedded_dns(tmp_path: Path) -> None:
    import smtplib

    (tmp_path / "dns").mkdir()
    (tmp_path / "dns" / "records").write_text("isp.test MX 10 mx.isp.test\n")
    with (
        run_servers(tmp_path, dns=0, check_sender_domain=True) as servers,
        smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=10) as client,
    ):
        client.ehlo("client.test")
        assert client.mail("alice@isp.test")[0] == 250
        client.rset()
        code, _ = client.mail("alice@nowhere.isp.test")
        assert code == 501


def test_dns_port_in_use_is_a_config_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="for dns"), run_servers(tmp_path, dns=port):
            pass
