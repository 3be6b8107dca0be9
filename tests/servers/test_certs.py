"""The local CA and server certificate: generation, a real handshake, reuse, renewal."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailtalk.servers.certs import (
    CertPaths,
    ensure_certificates,
    server_ssl_context,
    trust_hint,
)


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def mtimes(paths: CertPaths) -> dict[str, int]:
    files = (paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key)
    return {p.name: p.stat().st_mtime_ns for p in files}


def handshake(paths: CertPaths, server_hostname: str, connect_to: str = "127.0.0.1") -> str:
    """One TLS handshake through a real socket; returns the negotiated version."""
    server_context = server_ssl_context(paths)
    family = socket.AF_INET6 if ":" in connect_to else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((connect_to, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"+OK hello\r\n")
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client_context = ssl.create_default_context(cafile=str(paths.ca_cert))
        with (
            socket.create_connection((connect_to, port), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            assert tls.recv(100) == b"+OK hello\r\n"
            version = tls.version()
    finally:
        thread.join(10)
        listener.close()
    assert not errors, errors
    assert version is not None
    return version


def test_files_layout_and_modes(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    tls = tmp_path / "tls"
    assert paths == CertPaths(tls / "ca.pem", tls / "server.pem", tls / "server.key")
    assert paths.ca_key == tls / "ca.key"
    for key in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # No temporary files left: the lock, and the record of what was checked (CHECKED_FILE).
    assert not [
        p for p in tls.iterdir() if p.name.startswith(".") and p.name not in (".lock", ".checked")
    ]


def test_a_second_start_on_the_same_files_needs_no_cryptography(tmp_path: Path) -> None:
    """The record of the last check lets a start skip loading and verifying certificates
    (what made `mailtalk serve` start slowly); a changed file makes it check again."""
    paths = ensure_certificates(tmp_path)
    probe = (
        "import sys; from pathlib import Path\n"
        "from mailtalk.servers.certs import ensure_certificates\n"
        f"ensure_certificates(Path({str(tmp_path)!r}))\n"
        "print('cryptography' in sys.modules)\n"
    )
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert run() == "False"
    before = paths.server_cert.read_bytes()
    paths.server_cert.write_bytes(before.replace(b"\n", b"\r\n"))  # same certificate, new bytes
    assert run() == "True"
    assert run() == "False"  # checked again, and remembered
    # Names the record does not cover: checked (and the certificate remade).
    ensure_certificates(tmp_path, names=["localhost", "mx.example.test"])
    assert "mx.example.test" in {
        n for n in load_chain(paths.server_cert)[0]
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    }


def test_ca_certificate(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    (ca,) = load_chain(paths.ca_cert)
    common_name = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == f"mailtalk local CA ({socket.gethostname()})"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert timedelta(days=3649) < lifetime < timedelta(days=3652)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]


def test_server_certificate(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, names=["localhost", "mail.test"])
    leaf, chain_ca = load_chain(paths.server_cert)
    (ca,) = load_chain(paths.ca_cert)
    assert chain_ca == ca
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["localhost", "mail.test"]
    assert {str(a) for a in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=825, hours=1)
    key = serialization.load_pem_private_key(paths.server_key.read_bytes(), password=None)
    assert key.public_key() == leaf.public_key()


def test_handshake_verifies_hostname_and_ip(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    assert handshake(paths, "localhost") in ("TLSv1.2", "TLSv1.3")
    assert handshake(paths, "127.0.0.1") in ("TLSv1.2", "TLSv1.3")


def test_handshake_over_ipv6(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    paths = ensure_certificates(tmp_path)
    try:
        handshake(paths, "::1", connect_to="::1")
    except OSError as error:
        if isinstance(error, ssl.SSLError):
            raise
        pytest.skip(f"no IPv6 loopback here: {error}")


def test_handshake_refuses_a_name_not_in_the_certificate(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(paths, "other.test")


def test_server_context_refuses_tls_1_1(tmp_path: Path) -> None:
    context = server_ssl_context(ensure_certificates(tmp_path))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_second_call_reuses_everything(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path)
    before = mtimes(first)
    contents = first.server_cert.read_bytes()
    second = ensure_certificates(tmp_path)
    assert second == first
    assert mtimes(second) == before
    assert second.server_cert.read_bytes() == contents


def test_fewer_names_still_covered_are_reused(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, names=["localhost", "mail.test"])
    before = mtimes(paths)
    ensure_certificates(tmp_path, names=["MAIL.test"], addresses=["127.0.0.1"])
    assert mtimes(paths) == before


def test_new_names_regenerate_the_server_cert_not_the_ca(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    ca_before = paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()
    old_leaf = load_chain(paths.server_cert)[0]
    ensure_certificates(tmp_path, names=["localhost", "mx.example.test"], addresses=["::1"])
    assert (paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()) == ca_before
    new_leaf = load_chain(paths.server_cert)[0]
    assert new_leaf.serial_number != old_leaf.serial_number
    sans = new_leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mx.example.test" in sans.get_values_for_type(x509.DNSName)
    assert handshake(paths, "localhost")
    # A name that is an IP address counts as an address.
    ensure_certificates(tmp_path, names=["localhost", "192.0.2.1"])
    leaf = load_chain(paths.server_cert)[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.0.2.1" in {str(a) for a in sans.get_values_for_type(x509.IPAddress)}


def test_expiring_server_cert_is_regenerated(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    (ca,) = load_chain(paths.ca_cert)
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    leaf_key = serialization.load_pem_private_key(paths.server_key.read_bytes(), password=None)
    old_leaf = load_chain(paths.server_cert)[0]
    now = datetime.now(UTC)
    # Same key and names, signed by the same CA, but only ten days left.
    soon = (
        x509.CertificateBuilder()
        .subject_name(old_leaf.subject)
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(
            old_leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths.server_cert.write_bytes(soon.public_bytes(pem) + ca.public_bytes(pem))
    ca_mtime = paths.ca_cert.stat().st_mtime_ns
    ensure_certificates(tmp_path)
    renewed = load_chain(paths.server_cert)[0]
    assert renewed.serial_number != soon.serial_number
    assert renewed.not_valid_after_utc - now > timedelta(days=800)
    assert paths.ca_cert.stat().st_mtime_ns == ca_mtime
    assert handshake(paths, "localhost")


@pytest.mark.parametrize("damage", ["server.key", "server.pem", "ca.pem", "ca.key"])
def test_damaged_files_are_regenerated(tmp_path: Path, damage: str) -> None:
    paths = ensure_certificates(tmp_path)
    old_ca = paths.ca_cert.read_bytes()
    (tmp_path / "tls" / damage).write_text("garbage\n")
    ensure_certificates(tmp_path)
    assert handshake(paths, "localhost")
    if damage.startswith("server"):
        assert paths.ca_cert.read_bytes() == old_ca  # clients keep trusting the same CA


def test_a_new_ca_means_a_new_server_cert(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    paths.ca_key.unlink()
    ensure_certificates(tmp_path)
    leaf, _ = load_chain(paths.server_cert)
    leaf.verify_directly_issued_by(load_chain(paths.ca_cert)[0])


def test_loosened_key_modes_are_tightened(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    paths.server_key.chmod(0o644)
    paths.ca_key.chmod(0o640)
    ensure_certificates(tmp_path)
    for key in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a DNS name"):
        ensure_certificates(tmp_path, names=["bad name"])
    with pytest.raises(ValueError):
        ensure_certificates(tmp_path, addresses=["not-an-ip"])
    with pytest.raises(TypeError):
        ensure_certificates(tmp_path, names="localhost")


def test_trust_hint(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    assert trust_hint(paths) == (
        f"TLS: to trust the local CA, mailtalk connect --cafile {tmp_path}/tls/ca.pem smtps://localhost:PORT"
    )
    assert trust_hint(paths, 4650, scheme="imaps").endswith(" imaps://localhost:4650")
    spaced = CertPaths(Path("/a b/ca.pem"), Path("/a b/s.pem"), Path("/a b/s.key"))
    assert "--cafile '/a b/ca.pem' " in trust_hint(spaced)
    assert "\n" not in trust_hint(paths)


@pytest.mark.parametrize("protocol", ["imaps", "pop3s", "smtps"])
def test_servers_send_no_tls_session_tickets(mailtalk_servers: Any, protocol: str) -> None:
    """No TLS 1.3 tickets: imaplib2's two threads (offlineimap) lost the command
    after STARTTLS when they arrived after the handshake."""
    servers = mailtalk_servers(**{protocol: 0}, users=[("alice", "secret")])
    context = ssl.create_default_context(cafile=str(servers.cafile))
    with (
        socket.create_connection(("127.0.0.1", servers.port(protocol)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.3"
        assert tls.recv(1024)  # the greeting: whatever the server sent before it is read
        assert tls.session is not None
        assert not tls.session.has_ticket
