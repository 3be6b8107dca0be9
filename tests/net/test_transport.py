"""The transport against real loopback servers with certificates made on the spot."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailtalk.net import tls as tls_module
from mailtalk.net import transport as transport_module
from mailtalk.net.tls import (
    VERIFY_HINT,
    VERIFY_HINT_CAFILE,
    decode_certificate,
    explain_verification_failure,
    leaf_from_certificate_message,
)
from mailtalk.net.transport import (
    CAFileError,
    ConnectError,
    TLSError,
    TLSVerificationError,
    Transport,
    TransportError,
    TransportOptions,
    TransportTimeout,
    make_ssl_context,
)

NOW = datetime.now(UTC).replace(microsecond=0)
# Generous for loopback, short enough that a hang fails fast.
QUICK = 2.0

# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files, plus the certificate itself."""

    cert_path: Path
    key_path: Path
    certificate: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    directory: Path,
    file_stem: str,
    common_name: str,
    issuer: Issued | None = None,
    *,
    is_ca: bool = False,
    san: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=30),
    chain_with_issuer: bool = False,
) -> Issued:
    """Make a certificate signed by ``issuer``, or self-signed without one."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key = key
    issuer_name = _name(common_name)
    if issuer is not None:
        loaded = serialization.load_pem_private_key(issuer.key_path.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        issuer_key = loaded
        issuer_name = issuer.certificate.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        names: list[x509.GeneralName] = []
        for entry in san:
            try:
                names.append(x509.IPAddress(ip_address(entry)))
            except ValueError:
                names.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    if chain_with_issuer and issuer is not None:
        pem += issuer.certificate.public_bytes(serialization.Encoding.PEM)
    cert_path = directory / f"{file_stem}.crt"
    key_path = directory / f"{file_stem}.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_path, key_path, certificate)


@dataclass(frozen=True)
class Certificates:
    ca: Issued
    good: Issued
    expired: Issued
    not_yet_valid: Issued
    self_signed: Issued
    wrong_name: Issued
    unknown_ca: Issued
    unknown_ca_with_root: Issued


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("certs")
    ca = _issue(directory, "ca", "mailtalk test CA", is_ca=True)
    stranger = _issue(directory, "stranger-ca", "Unknown CA", is_ca=True)
    return Certificates(
        ca=ca,
        good=_issue(directory, "good", "localhost", ca),
        expired=_issue(
            directory,
            "expired",
            "localhost",
            ca,
            not_before=datetime(2019, 1, 1, tzinfo=UTC),
            not_after=datetime(2020, 1, 1, tzinfo=UTC),
        ),
        not_yet_valid=_issue(
            directory,
            "future",
            "localhost",
            ca,
            not_before=datetime(2099, 1, 1, tzinfo=UTC),
            not_after=datetime(2099, 12, 31, tzinfo=UTC),
        ),
        self_signed=_issue(directory, "self-signed", "localhost"),
        wrong_name=_issue(directory, "wrong-name", "mail.other.test", ca, san=("mail.other.test",)),
        unknown_ca=_issue(directory, "unknown-ca", "localhost", stranger),
        unknown_ca_with_root=_issue(
            directory, "unknown-ca-chain", "localhost", stranger, chain_with_issuer=True
        ),
    )


def _server_context(issued: Issued, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_path, issued.key_path)
    if max_version is not None:
        context.maximum_version = max_version
    return context


# --------------------------------------------------------------------------- servers

Handler = Callable[[socket.socket, threading.Event], None]


class Server:
    """Accepts one connection on loopback and runs ``handler`` on it in a thread."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(1)
        self.listener.settimeout(QUICK)
        self.port: int = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._handler = handler
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        connection.settimeout(QUICK)
        try:
            self._handler(connection, self.stop)
        except (OSError, ValueError) as error:  # a client rejecting our cert lands here
            self.errors.append(error)
        finally:
            connection.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self._thread.join(QUICK)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(handler: Handler, host: str = "127.0.0.1") -> Server:
        server = Server(handler, host)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _echo(connection: socket.socket) -> None:
    while data := connection.recv(4096):
        connection.sendall(data)


def implicit_tls(context: ssl.SSLContext) -> Handler:
    def handle(connection: socket.socket, stop: threading.Event) -> None:
        with context.wrap_socket(connection, server_side=True) as tls_connection:
            tls_connection.sendall(b"220 hello over TLS\r\n")
            _echo(tls_connection)

    return handle


def starttls(context: ssl.SSLContext) -> Handler:
    """Plain banner, echoes lines, upgrades after "STARTTLS\\r\\n" and echoes again."""

    def handle(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(b"220 plain hello\r\n")
        reader = connection.makefile("rb", buffering=0)
        while line := reader.readline():
            if line == b"STARTTLS\r\n":
                connection.sendall(b"220 go ahead\r\n")
                break
            connection.sendall(b"250 " + line)
        else:
            return
        with context.wrap_socket(connection, server_side=True) as tls_connection:
            tls_connection.sendall(b"220 hello over TLS\r\n")
            _echo(tls_connection)

    return handle


def banner_then_wait(banner: bytes) -> Handler:
    def handle(connection: socket.socket, stop: threading.Event) -> None:
        if banner:
            connection.sendall(banner)
        stop.wait(QUICK * 2)

    return handle


def close_after(banner: bytes) -> Handler:
    def handle(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(banner)

    return handle


def read_line(transport: Transport) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = transport.recv(1)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def options(**overrides: object) -> TransportOptions:
    settings: dict[str, object] = {"timeout": QUICK}
    settings.update(overrides)
    return TransportOptions(**settings)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- TLS that works


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_implicit_tls_with_cafile_verifies_and_describes_the_session(
    certs: Certificates, serve: Callable[..., Server], host: str
) -> None:
    server = serve(implicit_tls(_server_context(certs.good)))
    opts = options(cafile=str(certs.ca.cert_path), family=socket.AF_INET)
    with Transport.connect(host, server.port, opts, implicit_tls=True) as transport:
        info = transport.tls
        assert info is not None
        assert info.version == "TLSv1.3"
        assert info.cipher.startswith("TLS_") and info.bits >= 128
        assert info.subject == "CN=localhost"
        assert info.issuer == "CN=mailtalk test CA"
        assert info.not_after == NOW + timedelta(days=30)
        assert info.not_before == NOW - timedelta(days=1)
        assert info.san == ("localhost", "127.0.0.1", "::1")
        assert info.verified
        assert info.summary(now=NOW) == (
            f"TLSv1.3, {info.cipher} ({info.bits} bits); certificate CN=localhost, "
            f"issued by CN=mailtalk test CA, expires {NOW + timedelta(days=30):%Y-%m-%d} "
            "(30 days)"
        )
        # One TLS record carries the whole banner: the rest of it waits, decrypted,
        # where select() on the socket cannot see it.
        assert transport.recv(1) == b"2"
        assert transport.pending() == len(b"20 hello over TLS\r\n")
        assert read_line(transport) == b"20 hello over TLS\r\n"
        assert transport.pending() == 0
        transport.send(b"NOOP\r\n")
        assert read_line(transport) == b"NOOP\r\n"


def test_starttls_upgrades_the_connection_in_place(
    certs: Certificates, serve: Callable[..., Server]
) -> None:
    server = serve(starttls(_server_context(certs.good)))
    opts = options(cafile=str(certs.ca.cert_path))
    with Transport.connect("localhost", server.port, opts) as transport:
        assert transport.tls is None
        assert read_line(transport) == b"220 plain hello\r\n"
        transport.send(b"EHLO me\r\n")
        assert read_line(transport) == b"250 EHLO me\r\n"
        transport.send(b"STARTTLS\r\n")
        assert read_line(transport) == b"220 go ahead\r\n"

        info = transport.start_tls()

        assert transport.tls is info and info.verified and info.subject == "CN=localhost"
        assert read_line(transport) == b"220 hello over TLS\r\n"
        transport.send(b"EHLO again\r\n")
        assert read_line(transport) == b"EHLO again\r\n"
        with pytest.raises(TLSError, match="already using TLS"):
            transport.start_tls()


def test_server_hostname_option_overrides_the_verified_name(
    certs: Certificates, serve: Callable[..., Server]
) -> None:
    server = serve(implicit_tls(_server_context(certs.wrong_name)))
    opts = options(cafile=str(certs.ca.cert_path), server_hostname="mail.other.test")
    with Transport.connect("127.0.0.1", server.port, opts, implicit_tls=True) as transport:
        assert transport.tls is not None and transport.tls.verified


# --------------------------------------------------------------------------- TLS that fails

FAILURES = [
    pytest.param(
        "expired",
        "localhost",
        "expired",
        "the certificate of localhost expired on 2020-01-01 (",
        id="expired",
    ),
    pytest.param(
        "not_yet_valid",
        "localhost",
        "not-yet-valid",
        "the certificate of localhost is not valid until 2099-01-01 (check the clocks",
        id="not-yet-valid",
    ),
    pytest.param(
        "self_signed",
        "localhost",
        "self-signed",
        "the certificate of localhost is self-signed (nothing vouches for it), "
        "and {cafile} does not hold it.",  # --cafile was given: say it did not help
        id="self-signed",
    ),
    pytest.param(
        "wrong_name",
        "localhost",
        "wrong-host",
        "the certificate is for mail.other.test, not localhost.",
        id="wrong-name",
    ),
    pytest.param(
        "wrong_name",
        "127.0.0.1",
        "wrong-host",
        "the certificate is for mail.other.test, not 127.0.0.1.",
        id="wrong-ip",
    ),
    pytest.param(
        "unknown_ca",
        "localhost",
        "unknown-issuer",
        "the certificate of localhost was issued by CN=Unknown CA, "
        "which is neither in {cafile} nor in the system's trusted CAs.",
        id="unknown-issuer",
    ),
    pytest.param(
        "unknown_ca_with_root",
        "localhost",
        "unknown-issuer",
        "the certificate of localhost was issued by CN=Unknown CA, "
        "which is neither in {cafile} nor in the system's trusted CAs.",
        id="unknown-issuer-root-sent",
    ),
]


@pytest.mark.parametrize(("which", "host", "reason", "explanation"), FAILURES)
def test_rejected_certificate_is_explained_in_plain_words(
    certs: Certificates,
    serve: Callable[..., Server],
    which: str,
    host: str,
    reason: str,
    explanation: str,
) -> None:
    server = serve(implicit_tls(_server_context(getattr(certs, which))))
    opts = options(cafile=str(certs.ca.cert_path))
    with pytest.raises(TLSVerificationError) as caught:
        Transport.connect(host, server.port, opts, implicit_tls=True)
    message = str(caught.value)
    assert caught.value.reason == reason
    assert message.startswith(explanation.format(cafile=certs.ca.cert_path))
    cafile_did_not_help = reason in ("self-signed", "unknown-issuer")
    assert message.endswith(VERIFY_HINT_CAFILE if cafile_did_not_help else VERIFY_HINT)
    assert "--insecure" in message and "--cafile" in message
    assert "\n" not in message


@pytest.mark.parametrize("max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_rejected_certificate_is_explained_after_starttls(
    certs: Certificates, serve: Callable[..., Server], max_version: ssl.TLSVersion
) -> None:
    # TLS 1.2 and 1.3 lay out the Certificate message differently; both must be read.
    server = serve(starttls(_server_context(certs.expired, max_version)))
    opts = options(cafile=str(certs.ca.cert_path))
    transport = Transport.connect("localhost", server.port, opts)
    read_line(transport)
    transport.send(b"STARTTLS\r\n")
    read_line(transport)
    with pytest.raises(TLSVerificationError, match=r"expired on 2020-01-01 \(\d+ days ago\)"):
        transport.start_tls()
    assert transport.closed


def test_without_cafile_the_private_ca_is_not_trusted(
    certs: Certificates, serve: Callable[..., Server]
) -> None:
    server = serve(implicit_tls(_server_context(certs.good)))
    with pytest.raises(TLSVerificationError, match="issued by CN=mailtalk test CA, which is not"):
        Transport.connect("localhost", server.port, options(), implicit_tls=True)


@pytest.mark.parametrize(
    ("which", "subject", "not_after"),
    [
        ("expired", "CN=localhost", datetime(2020, 1, 1, tzinfo=UTC)),
        ("self_signed", "CN=localhost", NOW + timedelta(days=30)),
        ("wrong_name", "CN=mail.other.test", NOW + timedelta(days=30)),
        ("unknown_ca", "CN=localhost", NOW + timedelta(days=30)),
    ],
)
def test_insecure_connects_anyway_and_still_describes_the_certificate(
    certs: Certificates,
    serve: Callable[..., Server],
    which: str,
    subject: str,
    not_after: datetime,
) -> None:
    server = serve(implicit_tls(_server_context(getattr(certs, which))))
    opts = options(insecure=True)
    with Transport.connect("localhost", server.port, opts, implicit_tls=True) as transport:
        info = transport.tls
        assert info is not None
        assert not info.verified
        assert info.subject == subject
        assert info.not_after == not_after
        assert info.summary().endswith("; NOT verified (--insecure)")
        assert read_line(transport) == b"220 hello over TLS\r\n"


def test_implicit_tls_to_a_plain_text_port_says_so(serve: Callable[..., Server]) -> None:
    server = serve(banner_then_wait(b"+OK POP3 server ready\r\n"))
    with pytest.raises(TLSError) as caught:
        Transport.connect("127.0.0.1", server.port, options(), implicit_tls=True)
    assert not isinstance(caught.value, TLSVerificationError)
    assert str(caught.value) == (
        f"the server at 127.0.0.1:{server.port} did not answer the TLS handshake "
        "(is this port plain text? try without implicit TLS)"
    )


def test_tls_handshake_without_answer_times_out(serve: Callable[..., Server]) -> None:
    server = serve(banner_then_wait(b""))
    started = time.monotonic()
    with pytest.raises(TransportTimeout, match=r"within 0\.5 s \(--timeout\)"):
        Transport.connect("127.0.0.1", server.port, options(timeout=0.5), implicit_tls=True)
    assert time.monotonic() - started < QUICK


def test_unreadable_cafile_is_a_tls_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(CAFileError, match=f"--cafile {missing}: no such file"):
        make_ssl_context(options(cafile=str(missing)))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TLSError, match=f"--cafile {garbage}: no CA certificate in it"):
        make_ssl_context(options(cafile=str(garbage)))


def test_ssl_context_defaults() -> None:
    strict = make_ssl_context(options())
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    assert strict.minimum_version == ssl.TLSVersion.TLSv1_2
    loose = make_ssl_context(options(insecure=True))
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname


# --------------------------------------------------------------------------- plain sockets


def test_connection_refused_is_a_readable_connect_error() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with pytest.raises(ConnectError) as caught:
        Transport.connect("127.0.0.1", port, options())
    assert str(caught.value) == f"cannot connect to 127.0.0.1 port {port}: connection refused"


def test_read_timeout_raises_and_the_connection_stays_usable(
    serve: Callable[..., Server],
) -> None:
    server = serve(banner_then_wait(b""))
    with Transport.connect("127.0.0.1", server.port, options(timeout=0.5)) as transport:
        started = time.monotonic()
        with pytest.raises(TransportTimeout) as caught:
            transport.recv()
        assert 0.4 < time.monotonic() - started < QUICK
        assert str(caught.value) == "no answer from 127.0.0.1 within 0.5 s (--timeout)"
        assert not transport.closed
        transport.send(b"still here\r\n")


def test_recv_returns_empty_bytes_when_the_server_closes(serve: Callable[..., Server]) -> None:
    server = serve(close_after(b"221 bye\r\n"))
    with Transport.connect("127.0.0.1", server.port, options()) as transport:
        assert read_line(transport) == b"221 bye\r\n"
        assert transport.recv() == b""


def test_close_from_another_thread_interrupts_recv(serve: Callable[..., Server]) -> None:
    server = serve(banner_then_wait(b""))
    transport = Transport.connect("127.0.0.1", server.port, options(timeout=None))
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(transport.recv()))
    reader.start()
    time.sleep(0.1)
    transport.close()
    reader.join(QUICK)
    assert not reader.is_alive() and received == [b""]
    transport.close()  # twice is fine


def test_send_after_close_is_a_transport_error(serve: Callable[..., Server]) -> None:
    server = serve(banner_then_wait(b""))
    transport = Transport.connect("127.0.0.1", server.port, options())
    transport.close()
    with pytest.raises(TransportError, match="closed"):
        transport.send(b"QUIT\r\n")


def test_ipv4_only_connects_over_ipv4(serve: Callable[..., Server]) -> None:
    server = serve(banner_then_wait(b"220 v4\r\n"))
    opts = options(family=socket.AF_INET)
    with Transport.connect("localhost", server.port, opts) as transport:
        assert transport.peer == ("127.0.0.1", server.port)
        assert transport.fileno() >= 0
        assert read_line(transport) == b"220 v4\r\n"
        assert transport.pending() == 0


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback (::1) on this host")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_only_connects_over_ipv6(serve: Callable[..., Server], host: str) -> None:
    server = serve(banner_then_wait(b"220 v6\r\n"), host="::1")
    opts = options(family=socket.AF_INET6)
    with Transport.connect(host, server.port, opts) as transport:
        assert transport.peer[:2] == ("::1", server.port)
        assert transport.host == "::1"
        assert read_line(transport) == b"220 v6\r\n"


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback (::1) on this host")
def test_implicit_tls_over_ipv6_verifies_the_ip_san(
    certs: Certificates, serve: Callable[..., Server]
) -> None:
    server = serve(implicit_tls(_server_context(certs.good)), host="::1")
    opts = options(family=socket.AF_INET6, cafile=str(certs.ca.cert_path))
    with Transport.connect("::1", server.port, opts, implicit_tls=True) as transport:
        assert transport.tls is not None and transport.tls.verified


def test_ipv6_only_to_an_ipv4_literal_is_a_connect_error() -> None:
    with pytest.raises(ConnectError, match=r"port 25: the name has no IPv6 address \(-6\)$"):
        Transport.connect("127.0.0.1", 25, options(family=socket.AF_INET6))


@pytest.mark.parametrize("port", [0, 65536])
def test_port_out_of_range_is_a_connect_error(port: int) -> None:
    with pytest.raises(ConnectError, match="the port must be from 1 to 65535"):
        Transport.connect("127.0.0.1", port, options())


# --------------------------------------------------------------------------- helpers


def test_certificate_decoders_agree(certs: Certificates) -> None:
    der = certs.good.certificate.public_bytes(serialization.Encoding.DER)
    from_ssl_module = tls_module._decode_with_ssl_module(der)
    from_cryptography = tls_module._decode_with_cryptography(der)
    assert from_ssl_module == from_cryptography
    assert from_ssl_module.san == ("localhost", "127.0.0.1", "::1")
    assert decode_certificate(b"not DER") == tls_module.CertificateFacts()


def test_leaf_is_found_in_both_certificate_message_layouts() -> None:
    leaf, intermediate = b"LEAF-DER", b"CA-DER"

    def u24(n: int) -> bytes:
        return n.to_bytes(3, "big")

    def message(body: bytes) -> bytes:
        return b"\x0b" + u24(len(body)) + body

    tls12_list = u24(len(leaf)) + leaf + u24(len(intermediate)) + intermediate
    tls12 = message(u24(len(tls12_list)) + tls12_list)
    tls13_list = u24(len(leaf)) + leaf + b"\x00\x00" + u24(len(intermediate)) + intermediate
    tls13_list += b"\x00\x00"
    tls13 = message(b"\x00" + u24(len(tls13_list)) + tls13_list)

    assert leaf_from_certificate_message(tls12) == leaf
    assert leaf_from_certificate_message(tls13) == leaf
    assert leaf_from_certificate_message(message(b"\x00\x00\x00\x00")) is None
    with pytest.raises((ValueError, IndexError)):
        leaf_from_certificate_message(message(b"\x00\x00\x09junk"))


def test_dns_failures_are_described_per_address_family() -> None:
    # Built by hand: a real lookup of a missing name can wait on a slow resolver.
    missing = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    describe = transport_module._describe_resolver_error
    assert describe(missing, 0) == "the name does not resolve (DNS lookup failed)"
    assert describe(missing, socket.AF_INET) == "the name has no IPv4 address (-4)"
    unavailable = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert describe(unavailable, 0).startswith("the DNS lookup failed for now")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (10, "the certificate of mx.example.test has expired."),
        (62, "the certificate is not for mx.example.test."),
        (20, "the certificate of mx.example.test was issued by an authority, which is not"),
        (27, "the certificate of mx.example.test could not be verified (certificate not trusted)"),
    ],
)
def test_explanations_without_the_certificate_still_read_well(code: int, expected: str) -> None:
    # The certificate comes from a private ssl hook; without it, fewer details but no crash.
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = code
    error.verify_message = "certificate not trusted"
    _, message = explain_verification_failure(error, "mx.example.test", None)
    assert message.startswith(expected)
    assert message.endswith(VERIFY_HINT)
