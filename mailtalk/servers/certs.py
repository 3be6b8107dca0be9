"""A local certificate authority and a server certificate for the reference servers.

Under ``ROOT/tls/``: ``ca.pem`` and ``ca.key`` (the CA, 10 years), ``server.pem`` (the
server certificate followed by the CA: the chain servers send) and ``server.key``. Keys are
ECDSA P-256 (fast to make) and written 0600; every file is written atomically, and the
CA's are fsynced (the server's, lost in a crash, are only signed again). The first
call generates what is missing; later calls reuse what is valid, and only make a new server
certificate (keeping the CA that clients already trust) when it does not cover the names
asked for or expires within 30 days. Clients trust ``ca.pem`` (see :func:`trust_hint`).

``cryptography`` and ``ssl`` are imported inside the functions: importing this module is
cheap, so the CLI can import it without slowing ``--help``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from mailtalk.store.filesystem import make_directory

if TYPE_CHECKING:
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

TLS_DIR = "tls"
CA_LIFETIME = timedelta(days=3650)
# 825 days is the most Apple's TLS clients accept for a server certificate.
SERVER_LIFETIME = timedelta(days=825)
RENEW_BEFORE = timedelta(days=30)
# Backdated a little so that a client whose clock is slightly behind still accepts them.
_CLOCK_SKEW = timedelta(hours=1)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# A NamedTuple, not a frozen dataclass: see protocols.common.Line.
class CertPaths(NamedTuple):
    """Where the files of ``ROOT/tls/`` are."""

    ca_cert: Path
    server_cert: Path  # the server certificate followed by the CA certificate
    server_key: Path

    @property
    def ca_key(self) -> Path:
        return self.ca_cert.with_name("ca.key")


def cert_paths(root: Path) -> CertPaths:
    """Where the files of ``ROOT/tls/`` are, whether or not they exist yet."""
    tls = Path(root) / TLS_DIR
    return CertPaths(tls / "ca.pem", tls / "server.pem", tls / "server.key")


def ensure_certificates(
    root: Path,
    names: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1", "::1"),
) -> CertPaths:
    """Make sure ``ROOT/tls/`` holds a CA and a server certificate for names and addresses.

    ``names`` are DNS names (an IP address among them counts as an address). Raises
    ``ValueError`` for a name or address that is neither.
    """
    dns_names, ip_addresses = _subject_alt_names(names, addresses)
    paths = cert_paths(root)
    tls = paths.ca_cert.parent
    make_directory(tls)
    with _locked(tls / ".lock"):
        now = datetime.now(UTC)
        if not _checked_before(paths, dns_names, ip_addresses, now):
            ca = _load_ca(paths, now)
            if ca is None:
                ca = _make_ca(now)
                _write_key(paths.ca_key, ca[1])
                _write_atomically(paths.ca_cert, _pem(ca[0]), 0o644)
            if not _server_cert_usable(paths, ca[0], dns_names, ip_addresses, now):
                server_cert, server_key = _make_server_cert(ca, dns_names, ip_addresses, now)
                # Not fsynced, unlike the CA that clients trust: one lost in a crash
                # fails the check of the next start, which signs a new one.
                chain = _pem(server_cert) + _pem(ca[0])
                _write_key(paths.server_key, server_key, durable=False)
                _write_atomically(paths.server_cert, chain, 0o644, durable=False)
            _remember_checked(paths)
        for key_path in (paths.ca_key, paths.server_key):
            # A key someone loosened by hand is tightened again rather than left readable.
            if key_path.stat().st_mode & 0o077:
                key_path.chmod(0o600)
    return paths


# --tls-fault KIND: what a client should refuse, for testing its error paths.
TLS_FAULTS = ("expired", "wrong-name", "self-signed", "old-protocol")
# The only name a wrong-name certificate is for (.invalid never resolves, RFC 2606).
WRONG_NAME = "wrong-name.invalid"


def server_ssl_context(paths: CertPaths, fault: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later) presenting the server certificate.

    ``fault`` (one of ``TLS_FAULTS``) makes it faulty on purpose: a certificate that
    expired, one for another name, a self-signed one (see ``fault_certificate``), or
    TLS 1.0 and 1.1 only, at OpenSSL security level 0 (OpenSSL 3 refuses them at its
    default level 1, since their handshakes sign with SHA-1 and MD5).
    """
    import logging
    import ssl
    import warnings

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if fault == "old-protocol":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    if fault in ("expired", "wrong-name", "self-signed"):
        cert_file, key_file = fault_certificate(paths, fault)
        context.load_cert_chain(cert_file, key_file)
    else:
        context.load_cert_chain(paths.server_cert, paths.server_key)
    log = logging.getLogger("mailtalk.servers.tls")

    def note_server_name(sock: object, server_name: str | None, context: object) -> None:
        # What the client asked for by SNI: "none" when it sent no name (an IP).
        log.info("TLS server name (SNI) from the client: %s", server_name or "none")

    context.sni_callback = note_server_name
    # No TLS 1.3 session tickets. They arrive after the handshake, unasked, and a
    # client that reads and writes one TLS socket from two threads (imaplib2, so
    # offlineimap) can then lose the command it writes next: after STARTTLS its
    # CAPABILITY never left the client in about one run in ten, and both sides
    # waited forever. Resumption buys a test server nothing; Exim sends none either.
    context.num_tickets = 0
    return context


def trust_hint(
    paths: CertPaths,
    port: int | str = "PORT",
    scheme: str = "smtps",
    host: str = "localhost",
    *,
    starttls: bool = False,
) -> str:
    """One line telling a user how to make mailtalk trust the local CA."""
    import shlex

    cafile = shlex.quote(str(paths.ca_cert))
    extra = " --starttls" if starttls else ""
    return (
        f"TLS: to trust the local CA, mailtalk connect --cafile {cafile}{extra} "
        f"{scheme}://{host}:{port}"
    )


def fault_certificate(paths: CertPaths, fault: str) -> tuple[Path, Path]:
    """The certificate and key of ``--tls-fault expired|wrong-name|self-signed``,
    made on first use and kept beside the good ones (``ROOT/tls/fault-KIND.pem``, never
    committed), for the names the server certificate covers:

    - ``expired``: signed by the local CA, valid from 400 to 30 days ago;
    - ``wrong-name``: signed by the local CA, for ``wrong-name.invalid`` only;
    - ``self-signed``: for the right names, signed by its own key, not by the CA.

    So a client trusting ``ca.pem`` fails for exactly one reason each time.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert_path = paths.ca_cert.with_name(f"fault-{fault}.pem")
    key_path = paths.ca_cert.with_name(f"fault-{fault}.key")
    with _locked(paths.ca_cert.with_name(".lock")):
        now = datetime.now(UTC)
        ca = _load_ca(paths, now)
        server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
        sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = frozenset(sans.get_values_for_type(x509.DNSName))
        addresses: frozenset[IPAddress] = frozenset(
            address
            for address in sans.get_values_for_type(x509.IPAddress)
            if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
        )
        if ca is None:
            raise ValueError(f"no usable local CA in {paths.ca_cert.parent}")
        if _fault_cert_usable(cert_path, key_path, ca[0], fault, now):
            return cert_path, key_path
        if fault == "expired":
            certificate, key = _make_server_cert(
                ca, dns_names, addresses, now - timedelta(days=400), lifetime=timedelta(days=370)
            )
        elif fault == "wrong-name":
            certificate, key = _make_server_cert(ca, frozenset({WRONG_NAME}), frozenset(), now)
        else:
            certificate, key = _make_server_cert(ca, dns_names, addresses, now)
            # The same certificate, signed by its own key: nothing vouches for it.
            from cryptography.hazmat.primitives.asymmetric import ec

            builder = (
                x509.CertificateBuilder()
                .subject_name(certificate.subject)
                .issuer_name(certificate.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(certificate.not_valid_before_utc)
                .not_valid_after(certificate.not_valid_after_utc)
            )
            for extension in certificate.extensions:
                if not isinstance(extension.value, x509.AuthorityKeyIdentifier):
                    builder = builder.add_extension(extension.value, extension.critical)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            certificate = builder.sign(key, hashes.SHA256())
        _write_key(key_path, key)
        chain = _pem(certificate) if fault == "self-signed" else _pem(certificate) + _pem(ca[0])
        _write_atomically(cert_path, chain, 0o644)
    return cert_path, key_path


def _fault_cert_usable(
    cert_path: Path, key_path: Path, ca_cert: x509.Certificate, fault: str, now: datetime
) -> bool:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = _load_key(key_path)
    except (OSError, ValueError, TypeError):
        return False
    if certificate.public_key() != key.public_key():
        return False
    if fault != "self-signed":
        try:
            certificate.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False  # a new CA: make it again, so only the fault is wrong
    if fault == "expired":
        return certificate.not_valid_after_utc < now
    return now < certificate.not_valid_after_utc - RENEW_BEFORE


# --- checking what is there ------------------------------------------------------------


def _subject_alt_names(
    names: Sequence[str], addresses: Sequence[str]
) -> tuple[frozenset[str], frozenset[IPAddress]]:
    if isinstance(names, str) or isinstance(addresses, str):
        raise TypeError("names and addresses are sequences of strings, not one string")
    dns_names: set[str] = set()
    ip_addresses = {ipaddress.ip_address(address) for address in addresses}
    for name in names:
        try:
            ip_addresses.add(ipaddress.ip_address(name))
            continue
        except ValueError:
            pass
        lowered = name.strip().lower().rstrip(".")
        if not lowered or not lowered.isascii() or any(c.isspace() for c in lowered):
            raise ValueError(f"not a DNS name for a certificate: {name!r}")
        dns_names.add(lowered)
    if not dns_names and not ip_addresses:
        raise ValueError("a server certificate needs at least one name or address")
    return frozenset(dns_names), frozenset(ip_addresses)


def _load_ca(
    paths: CertPaths, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The existing CA if it is whole, a CA, ours (key matches) and not about to expire."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        certificate = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = _load_key(paths.ca_key)
    except (OSError, ValueError, TypeError):
        return None
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not constraints.value.ca:
        return None
    if certificate.public_key() != key.public_key():
        return None
    if certificate.not_valid_after_utc - RENEW_BEFORE < now:
        return None
    return certificate, key


def _server_cert_usable(
    paths: CertPaths,
    ca_cert: x509.Certificate,
    dns_names: frozenset[str],
    ip_addresses: frozenset[IPAddress],
    now: datetime,
) -> bool:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        certificate = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
        key = _load_key(paths.server_key)
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    if certificate.public_key() != key.public_key():
        return False
    try:
        certificate.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False  # signed by an earlier CA, or not by a CA at all
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc - RENEW_BEFORE:
        return False
    covered_names = {name.lower() for name in sans.value.get_values_for_type(x509.DNSName)}
    covered_addresses = set(sans.value.get_values_for_type(x509.IPAddress))
    return dns_names <= covered_names and ip_addresses <= covered_addresses


# --- what was checked: a start with the same files skips cryptography ------------------
# ROOT/tls/.checked holds the stamps of the four files (inode, size, modification and
# change times, as control files are watched) as they were when last found (or made)
# whole, matching and signed by the CA, with the names and addresses the server
# certificate covers and when the first of the two certificates is due for renewal.
# While the files are the same files, nothing of that can have changed but the time:
# the start then needs neither the cryptography package nor the signature check. (A
# stamp rather than a digest of the bytes: hashlib and its OpenSSL binding took 1.5 ms
# of a start; any write, rename or copy changes a stamp, and chmod is checked anyway.)
CHECKED_FILE = ".checked"


def _files_stamp(paths: CertPaths) -> list[list[int]] | None:
    try:
        infos = [os.stat(path) for path in
                 (paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key)]  # fmt: skip
    except OSError:
        return None
    return [[info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns] for info in infos]


def _checked_before(
    paths: CertPaths, dns_names: frozenset[str], ip_addresses: frozenset[IPAddress],
    now: datetime,
) -> bool:  # fmt: skip
    """The files are those checked before, still valid, and cover these names."""
    import json

    try:
        record = json.loads((paths.ca_cert.parent / CHECKED_FILE).read_text(encoding="utf-8"))
        renew_at = datetime.fromisoformat(record["renew_at"])
        valid_from = datetime.fromisoformat(record["valid_from"])
        covered_names = set(record["names"])
        covered_addresses = {ipaddress.ip_address(a) for a in record["addresses"]}
        stamp = record["stamp"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not valid_from <= now < renew_at:
        return False
    if not (dns_names <= covered_names and ip_addresses <= covered_addresses):
        return False
    return bool(stamp) and stamp == _files_stamp(paths)


def _remember_checked(paths: CertPaths) -> None:
    """Write ROOT/tls/.checked for the files as they are now (just checked or made)."""
    import json

    from cryptography import x509

    try:
        ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        leaf = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return
    stamp = _files_stamp(paths)
    if stamp is None:
        return
    record = {
        "stamp": stamp,
        "valid_from": max(ca.not_valid_before_utc, leaf.not_valid_before_utc).isoformat(),
        "renew_at": (
            min(ca.not_valid_after_utc, leaf.not_valid_after_utc) - RENEW_BEFORE
        ).isoformat(),
        "names": sorted(name.lower() for name in sans.get_values_for_type(x509.DNSName)),
        "addresses": sorted(str(a) for a in sans.get_values_for_type(x509.IPAddress)),
    }
    # Not written: the next start checks the certificates again, slower, no less right.
    with contextlib.suppress(OSError):
        _write_atomically(
            paths.ca_cert.parent / CHECKED_FILE, json.dumps(record).encode(), 0o644, durable=False
        )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path} is not an ECDSA key")
    return key


# --- making new ones -------------------------------------------------------------------


def _make_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"mailtalk local CA ({socket.gethostname()})")]
    )
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _make_server_cert(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    dns_names: frozenset[str],
    ip_addresses: frozenset[IPAddress],
    now: datetime,
    lifetime: timedelta = SERVER_LIFETIME,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    ordered_names = sorted(dns_names)
    ordered_addresses = sorted(ip_addresses, key=lambda a: (a.version, int(a)))
    common_name = ordered_names[0] if ordered_names else str(ordered_addresses[0])
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in ordered_names]
    alt_names += [x509.IPAddress(address) for address in ordered_addresses]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        # Never outlive the CA that signed it.
        .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


# --- writing ---------------------------------------------------------------------------


def _pem(certificate: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, durable: bool = True) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(path, data, 0o600, durable=durable)


def _write_atomically(path: Path, data: bytes, mode: int, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temporary file (0600 from birth), fsync, rename.

    ``durable=False`` skips the fsync, for a file the next start can make again: a
    crash may then leave it empty or damaged, which that start's check finds."""
    import tempfile  # here: a start with certificates made before writes nothing

    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            if durable:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialize generation between servers of one ROOT starting at the same time."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock, the atomic writes still keep files whole
        yield
        return
    descriptor = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
