"""The embedded DNS server behind ``mailtalk serve --dns PORT``: authoritative, UDP and TCP.

It makes a practice world work offline: ``isp.test``'s MX points at a reference
server on 127.0.0.2, ``example.net`` publishes a null MX, and ``mailtalk mx``,
``send``, ``diagnose`` and the reference server's own sender check and onward
delivery all ask it instead of the Internet.

The data lives under ``ROOT/dns/``:

- zone files ``*.zone`` in the standard master-file format; the zone's origin is
  the file's first ``$ORIGIN``, or else its name (``example.test.zone``);
- a simple records file ``ROOT/dns/records``, one record a line,
  ``NAME [TTL] TYPE VALUE`` (``isp.test MX 10 mx.isp.test``,
  ``mx.isp.test A 127.0.0.2``, ``example.net MX 0 .``, ``#`` comments). Names
  are absolute. Each name is served in the zone of a zone file that holds it,
  or else in the zone of its last two labels (``isp.test``; ``in-addr.arpa``
  and ``ip6.arpa`` for reverse names), which gets an SOA made up for it.

A zone under a special-use TLD (``.test``, ``.example``, ``.invalid``,
``.localhost``) makes the server authoritative for the whole TLD too, since no
one else is: ``nowhere.test`` is NXDOMAIN, not REFUSED.

Answers are authoritative (AA): the records; NOERROR with no answer and the SOA
in authority (NODATA) for a name that exists without that type; NXDOMAIN for a
name under a served zone that does not exist; REFUSED for names outside every
served zone. CNAMEs are followed inside the served zones; MX answers carry the
exchanges' addresses as additional records. Over UDP an answer larger than 512
bytes (or the client's EDNS size) is cut: the additional records first, then
everything, with TC set so the client retries over TCP (two-byte length prefix,
several queries a connection). Malformed packets are dropped (UDP) or end the
connection (TCP); nothing a client sends stops the server.

Built on dnspython's ``dns.message``, ``dns.zone``, ``dns.rrset``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

from mailtalk.store.filesystem import make_directory

if TYPE_CHECKING:
    from mailtalk.servers.journal import Journal

log = logging.getLogger("mailtalk.dns")

# Told each query answered, with its response (before any truncation to fit UDP).
Answered = Callable[[dns.message.Message, dns.message.Message], None]

RECORD_TYPES = ("MX", "A", "AAAA", "TXT", "PTR", "CNAME", "NS", "SRV")
DEFAULT_TTL = 300
UDP_LIMIT = 512  # RFC 1035 4.2.1, for queries without EDNS
MAX_UDP_PAYLOAD = 65000  # what we send at most, whatever EDNS size a client claims
OUR_EDNS_PAYLOAD = 1232  # what we advertise (the DNS flag day 2020 value)
TCP_IDLE_TIMEOUT = 30.0
MAX_CNAME_CHAIN = 8
REVERSE_ZONES = ("in-addr.arpa.", "ip6.arpa.")
# Special-use TLDs (RFC 2606, 6761): serving a zone under one serves the whole TLD.
PRACTICE_TLDS = (b"test", b"example", b"invalid", b"localhost")

RECORDS_FILE_HELP = """\
# DNS records for mailtalk serve --dns: NAME [TTL] TYPE VALUE, one a line.
# Types: MX, A, AAAA, TXT, PTR, CNAME, NS, SRV. Names are absolute (no final dot
# needed). Zone files (*.zone, master-file format) may sit next to this file.
#
# isp.test              MX    10 mx.isp.test
# mx.isp.test           A     127.0.0.2
# example.net           MX    0 .
# isp.test              TXT   "v=spf1 ip4:127.0.0.2 -all"
# 2.0.0.127.in-addr.arpa PTR  mx.isp.test
"""


class DNSDataError(ValueError):
    """A zone or records file that cannot be served; the message names file:line."""


@dataclass
class DNSData:
    """The zones served, longest origin first (so the most specific zone wins)."""

    zones: list[dns.zone.Zone] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)

    def zone_for(self, name: dns.name.Name) -> dns.zone.Zone | None:
        for zone in self.zones:
            assert zone.origin is not None
            if name.is_subdomain(zone.origin):
                return zone
        return None

    @property
    def origins(self) -> list[str]:
        return [zone.origin.to_text(omit_final_dot=True) for zone in self.zones if zone.origin]


# --- loading -------------------------------------------------------------------------


def load_dns_data(directory: Path) -> DNSData:
    """Read ``directory``'s zone files and records file; raises DNSDataError."""
    zones: dict[dns.name.Name, dns.zone.Zone] = {}
    sources: list[Path] = []
    if directory.is_dir():
        for path in sorted(directory.glob("*.zone")):
            zone = _load_zone_file(path)
            assert zone.origin is not None
            if zone.origin in zones:
                raise DNSDataError(f"{path}: zone {zone.origin} is already defined by another file")
            zones[zone.origin] = zone
            sources.append(path)
        records = directory / "records"
        if records.is_file():
            _load_records_file(records, zones)
            sources.append(records)
    for origin in list(zones):
        tld = dns.name.Name(origin.labels[-2:])
        if len(origin.labels) > 2 and tld.labels[0].lower() in PRACTICE_TLDS and tld not in zones:
            # Nobody else answers for .test: a typo (nowehre.test) is NXDOMAIN, as it
            # would be for a real domain, not REFUSED.
            zones[tld] = dns.zone.Zone(tld, relativize=False)
    ordered = sorted(zones.values(), key=lambda z: len(z.origin or dns.name.root), reverse=True)
    for zone in ordered:
        _ensure_soa(zone)
    return DNSData(ordered, sources)


def ensure_records_file(directory: Path) -> None:
    """Give a new ROOT/dns/ a commented records file showing the format."""
    make_directory(directory)
    if not any(directory.glob("*.zone")) and not (directory / "records").exists():
        (directory / "records").write_text(RECORDS_FILE_HELP, encoding="utf-8")
        (directory / "records").chmod(0o644)  # as control files, whatever the umask


def _load_zone_file(path: Path) -> dns.zone.Zone:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        raise DNSDataError(f"{path}: cannot read it: {error}") from None
    found = re.search(r"^\$ORIGIN[ \t]+(\S+)", text, re.MULTILINE | re.IGNORECASE)
    origin_text = found.group(1) if found else path.name.removesuffix(".zone")
    try:
        origin = dns.name.from_text(origin_text, dns.name.root)
        zone = _zone_from_text(text, origin, str(path))
    except dns.exception.SyntaxError as error:
        raise DNSDataError(_locate_zone_error(path, text, origin, error)) from None
    except (dns.exception.DNSException, ValueError) as error:
        raise DNSDataError(f"{path}: {error}") from None
    return zone


def _zone_from_text(text: str, origin: dns.name.Name, filename: str) -> dns.zone.Zone:
    return dns.zone.from_text(
        text, origin=origin, relativize=False, filename=filename, check_origin=False
    )


def _locate_zone_error(
    path: Path, text: str, origin: dns.name.Name, error: dns.exception.SyntaxError
) -> str:
    """``path:LINE: what``. dnspython counts a bad record's line after reading its end,
    one too far; the first prefix of the file that fails the same way finds the line."""
    detail = str(error.__context__ or "") or str(error).rsplit(": ", 1)[-1]
    lines = text.splitlines(keepends=True)
    if len(lines) <= 2000:
        for count in range(1, len(lines) + 1):
            try:
                _zone_from_text("".join(lines[:count]), origin, str(path))
            except dns.exception.SyntaxError as partial:
                if str(partial.__context__ or "") == detail or str(partial).endswith(detail):
                    return f"{path}:{count}: {detail}"
                break
            except (dns.exception.DNSException, ValueError):
                break
    message = str(error)
    return message if message.startswith(str(path)) else f"{path}: {message}"


_RECORD_LINE = re.compile(r"^(\S+)\s+(?:(\d+)\s+)?(?:IN\s+)?([A-Za-z0-9]+)\s+(.*?)\s*$")


def _load_records_file(path: Path, zones: dict[dns.name.Name, dns.zone.Zone]) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as error:
        raise DNSDataError(f"{path}: cannot read it: {error}") from None
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        stripped = _strip_comment(line).strip()
        if not stripped:
            continue
        match = _RECORD_LINE.match(stripped)
        if match is None:
            raise DNSDataError(
                f"{where}: expected NAME TYPE VALUE (e.g. isp.test MX 10 mx.isp.test), "
                f"got {stripped!r}"
            )
        name_text, ttl_text, type_text, value = match.groups()
        record_type = type_text.upper()
        if record_type not in RECORD_TYPES:
            raise DNSDataError(
                f"{where}: unknown record type {type_text!r}; use one of {', '.join(RECORD_TYPES)}"
            )
        if not value:
            raise DNSDataError(f"{where}: {record_type} needs a value")
        try:
            name = dns.name.from_text(name_text, dns.name.root)
        except (dns.exception.DNSException, UnicodeError) as error:
            raise DNSDataError(f"{where}: {name_text!r} is not a domain name ({error})") from None
        try:
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN,
                dns.rdatatype.from_text(record_type),
                value,
                origin=dns.name.root,
                relativize=False,
            )
        except (dns.exception.DNSException, ValueError, UnicodeError) as error:
            raise DNSDataError(
                f"{where}: bad {record_type} value {value!r}: {error or 'cannot parse it'}"
            ) from None
        zone = _zone_holding(name, zones)
        ttl = int(ttl_text) if ttl_text else DEFAULT_TTL
        node = zone.find_node(name, create=True)
        has_cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME) is not None
        is_cname = rdata.rdtype == dns.rdatatype.CNAME
        if (is_cname and node.rdatasets and not has_cname) or (has_cname and not is_cname):
            raise DNSDataError(
                f"{where}: {name_text} cannot have a CNAME and other records (RFC 1034 3.6.2)"
            )
        node.find_rdataset(dns.rdataclass.IN, rdata.rdtype, create=True).add(rdata, ttl)


def _strip_comment(line: str) -> str:
    """The line without its # comment; a # inside double quotes (TXT) is kept."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


def _zone_holding(name: dns.name.Name, zones: dict[dns.name.Name, dns.zone.Zone]) -> dns.zone.Zone:
    best: dns.zone.Zone | None = None
    for served, zone in zones.items():
        if name.is_subdomain(served) and (best is None or len(served) > len(best.origin or ())):
            best = zone
    if best is not None:
        return best
    text = name.to_text()
    origin: dns.name.Name | None = None
    for reverse in REVERSE_ZONES:
        if text.endswith("." + reverse) or text == reverse:
            origin = dns.name.from_text(reverse)
    if origin is None:
        labels = name.labels
        origin = dns.name.Name(labels[-3:]) if len(labels) > 3 else name
    zone = dns.zone.Zone(origin, relativize=False)
    zones[origin] = zone
    return zone


def _ensure_soa(zone: dns.zone.Zone) -> None:
    origin = zone.origin
    assert origin is not None
    node = zone.find_node(origin, create=True)
    if node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA) is not None:
        return
    host = origin.to_text(omit_final_dot=True) or "root"
    soa = dns.rdata.from_text(
        dns.rdataclass.IN,
        dns.rdatatype.SOA,
        f"ns.{host}. hostmaster.{host}. 1 3600 600 86400 {DEFAULT_TTL}",
    )
    node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA, create=True).add(soa, DEFAULT_TTL)


# --- answering -----------------------------------------------------------------------


def answer(data: DNSData, query: dns.message.Message) -> dns.message.Message:
    """The authoritative response to a parsed query."""
    response = dns.message.make_response(query, our_payload=OUR_EDNS_PAYLOAD)
    response.flags &= ~dns.flags.RA
    if query.edns > 0:
        response.use_edns(0, 0, OUR_EDNS_PAYLOAD)
        response.set_rcode(dns.rcode.BADVERS)
        return response
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
        response.set_rcode(dns.rcode.REFUSED)
        return response
    if qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        response.set_rcode(dns.rcode.REFUSED)  # no zone transfers
        return response
    zone = data.zone_for(qname)
    if zone is None:
        response.set_rcode(dns.rcode.REFUSED)
        return response
    response.flags |= dns.flags.AA
    name = qname
    for _ in range(MAX_CNAME_CHAIN):
        node = zone.get_node(name)
        if node is None:
            if _exists(zone, name):  # an empty non-terminal: NODATA
                _add_soa(response, zone)
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)  # of the last name (RFC 6604)
                _add_soa(response, zone)
            return response
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is not None and qtype not in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
            response.answer.append(_rrset(name, cname))
            target = cname[0].target
            next_zone = data.zone_for(target)
            if next_zone is None:
                return response  # outside what we serve: the client resolves the rest
            zone, name = next_zone, target
            continue
        if qtype == dns.rdatatype.ANY:
            found = [_rrset(name, rdataset) for rdataset in node.rdatasets]
        else:
            rdataset = node.get_rdataset(dns.rdataclass.IN, qtype)
            found = [_rrset(name, rdataset)] if rdataset is not None else []
        if not found:
            _add_soa(response, zone)
            return response
        response.answer.extend(found)
        _add_additional(data, response, found)
        return response
    response.set_rcode(dns.rcode.SERVFAIL)  # a CNAME loop
    return response


def _exists(zone: dns.zone.Zone, name: dns.name.Name) -> bool:
    return any(owner.is_subdomain(name) for owner in zone.nodes)


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))


def _add_soa(response: dns.message.Message, zone: dns.zone.Zone) -> None:
    assert zone.origin is not None
    soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
    if soa is not None:
        rrset = _rrset(zone.origin, soa)
        rrset.ttl = min(soa.ttl, soa[0].minimum)  # RFC 2308 3
        response.authority.append(rrset)


def _add_additional(
    data: DNSData, response: dns.message.Message, found: Iterable[dns.rrset.RRset]
) -> None:
    targets: list[dns.name.Name] = []
    for rrset in found:
        if rrset.rdtype == dns.rdatatype.MX:
            targets += [r.exchange for r in rrset]
        elif rrset.rdtype == dns.rdatatype.NS or rrset.rdtype == dns.rdatatype.SRV:
            targets += [r.target for r in rrset]
    for target in dict.fromkeys(targets):
        zone = data.zone_for(target)
        if zone is None:
            continue
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            rdataset = zone.get_rdataset(target, rdtype)
            if rdataset is not None:
                response.additional.append(_rrset(target, rdataset))


def respond(
    data: DNSData, wire: bytes, limit: int | None, answered: Answered | None = None
) -> bytes | None:
    """The response's bytes for a query's bytes; None to stay silent (malformed, a response).

    ``limit`` is None over TCP, else the UDP size: the answer is truncated to fit.
    ``answered`` is told the query and the whole response (the journal).
    """
    if len(wire) < 12 or wire[2] & 0x80:  # too short for a header, or a response (QR)
        return None
    try:
        query = dns.message.from_wire(wire)
    except Exception:
        return None
    try:
        response = answer(data, query)
    except Exception:
        log.exception("DNS: cannot answer %r", query.question)
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
    if answered is not None:
        answered(query, response)
    if limit is None:
        return response.to_wire(max_size=65535)
    size = UDP_LIMIT
    if query.edns >= 0:
        size = max(UDP_LIMIT, min(query.payload, MAX_UDP_PAYLOAD))
    try:
        return response.to_wire(max_size=size)
    except dns.exception.TooBig:
        pass
    response.additional = []  # RFC 2181 9: dropping additional data needs no TC
    try:
        return response.to_wire(max_size=size)
    except dns.exception.TooBig:
        pass
    response.answer = []
    response.authority = []
    response.flags |= dns.flags.TC
    return response.to_wire(max_size=size)


# --- serving -------------------------------------------------------------------------


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        answered = self.server.journaled(str(addr[0]), "udp")
        reply = respond(self.server.data, data, UDP_LIMIT, answered)
        if reply is not None and self.transport is not None:
            self.server.queries += 1
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS over UDP: %s", exc)


class DNSServer:
    """The UDP and TCP listeners on one address and port.

    With a ``journal``, each query answered is a ``dns`` event there, under the server
    name ``name``.
    """

    def __init__(
        self,
        data: DNSData,
        idle_timeout: float = TCP_IDLE_TIMEOUT,
        *,
        journal: Journal | None = None,
        name: str = "",
    ) -> None:
        self.data = data
        self.idle_timeout = idle_timeout
        self.journal = journal
        self.name = name
        self.host = ""
        self.port = 0
        self.queries = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host``, TCP and UDP on the same port (0: one free for both)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _attempt in range(20 if port == 0 else 1):
            tcp = await asyncio.start_server(
                self._serve_tcp, host=host, port=port, family=family, reuse_address=True
            )
            bound = int(tcp.sockets[0].getsockname()[1])
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UDPProtocol(self), local_addr=(host, bound), family=family
                )
            except OSError:
                tcp.close()
                await tcp.wait_closed()
                if port != 0:
                    raise
                continue  # the free TCP port is taken for UDP: try another
            self._tcp, self._udp = tcp, udp
            self.host, self.port = host, bound
            return bound
        raise OSError("no port free for both UDP and TCP")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._tcp.wait_closed()
            self._tcp = None

    def journaled(self, client: str, transport: str) -> Answered | None:
        """What tells the journal of an answer to ``client``; None without a journal."""
        journal = self.journal
        if journal is None:
            return None

        def answered(query: dns.message.Message, response: dns.message.Message) -> None:
            question = query.question[0] if query.question else None
            answers = [
                f"{dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
                for rrset in response.answer
                for rdata in rrset
            ]
            journal.write(
                self.name,
                "dns",
                proto="dns",
                transport=transport,
                client=client,
                # An RRset of the question section is empty, hence false: "is not None".
                qname=question.name.to_text(omit_final_dot=True) if question is not None else None,
                qtype=dns.rdatatype.to_text(question.rdtype) if question is not None else None,
                rcode=dns.rcode.to_text(response.rcode()),
                answers=answers[:50],
            )

        return answered

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        answered = self.journaled(str(peer[0]) if peer else "", "tcp")
        try:
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
                    (length,) = struct.unpack("!H", header)
                    wire = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                reply = respond(self.data, wire, None, answered)
                if reply is None:
                    return  # malformed: end the connection (RFC 7766 leaves it to us)
                self.queries += 1
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
