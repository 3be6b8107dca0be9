"""The certificate chain a server sent: get it from the socket, describe it, save it.

``peer_chain`` takes the DER chain from a TLS socket (after the handshake, or after a
failed verification): ``get_verified_chain``/``get_unverified_chain`` are public from
Python 3.13; Python 3.10-3.12 have the same methods on the socket's private
``_sslobj``; without either there is only the leaf (``getpeercert(binary_form=True)``)
and ``PeerChain.complete`` says so.

``describe_chain`` reads each certificate with ``cryptography`` (imported here, never
when the CLI starts) into ``CertificateReport``: subject, SANs, issuer, validity and
days left, SHA-256 fingerprint, OCSP must-staple, key type and size, and the problems
found in plain words (expired, not for this name, issuer unknown, self-signed).
``write_pem`` saves the chain atomically, so a failure leaves no partial file.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class PeerChain:
    """The server's certificates, leaf first, in DER; ``source`` says where from:
    "verified" (the path OpenSSL built to a trusted root), "sent" (as the server sent
    them) or "leaf only" (this Python gives no chain)."""

    certificates: tuple[bytes, ...]
    source: str

    @property
    def complete(self) -> bool:
        return self.source != "leaf only"


def peer_chain(sock: ssl.SSLSocket, verified: bool) -> PeerChain:
    """The chain of a TLS socket; for an unverified session, as the server sent it."""
    owners: list[Any] = [sock, getattr(sock, "_sslobj", None)]
    method = "get_verified_chain" if verified else "get_unverified_chain"
    for owner in owners:
        getter = getattr(owner, method, None)
        if getter is None:
            continue
        try:
            chain = getter() or []
        except (ssl.SSLError, ValueError, AttributeError):
            continue
        certificates = tuple(_der(certificate) for certificate in chain)
        if certificates:
            return PeerChain(certificates, "verified" if verified else "sent")
    leaf = sock.getpeercert(binary_form=True) if sock else None
    return PeerChain((leaf,) if leaf else (), "leaf only")


def _der(certificate: Any) -> bytes:
    if isinstance(certificate, bytes):  # Python 3.13's SSLSocket returns DER bytes
        return certificate
    return bytes(certificate.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CertificateReport:
    """One certificate of a chain, as a person checks it."""

    subject: str
    issuer: str
    san: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    days_left: int
    sha256: str  # colon-separated upper-case hex, as `openssl x509 -fingerprint` shows
    must_staple: bool
    key: str  # "RSA 2048", "EC P-256 (secp256r1)", "Ed25519"
    problems: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "san": list(self.san),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "sha256": self.sha256,
            "ocsp_must_staple": self.must_staple,
            "key": self.key,
            "problems": list(self.problems),
        }


def describe_chain(
    chain: Sequence[bytes],
    host: str | None = None,
    trusted: Sequence[bytes] = (),
    now: datetime | None = None,
) -> list[CertificateReport]:
    """Reports for a chain, leaf first. ``host`` is the name the leaf must be for;
    ``trusted`` the DER CA certificates the client trusts, to tell whether the top of
    the chain leads to one of them (the system store counts only as far as the ssl
    module lists it)."""
    from cryptography import x509

    now = now or datetime.now(UTC)
    parsed = [x509.load_der_x509_certificate(der) for der in chain]
    trusted_subjects = set()
    with warnings.catch_warnings():
        # the system bundle holds old CAs (negative serials) cryptography warns about
        warnings.simplefilter("ignore")
        for der in trusted:
            try:
                trusted_subjects.add(x509.load_der_x509_certificate(der).subject)
            except ValueError:
                continue
    reports = []
    for index, certificate in enumerate(parsed):
        problems: list[str] = []
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
        if not_after < now:
            problems.append(f"expired on {not_after:%Y-%m-%d} ({(now - not_after).days} days ago)")
        if not_before > now:
            problems.append(f"not valid until {not_before:%Y-%m-%d} (check the clocks)")
        self_signed = certificate.issuer == certificate.subject and _signed_by(
            certificate, certificate
        )
        if index == 0 and host and not _matches_host(certificate, host):
            names = ", ".join(_san(certificate)[:3]) or _common_name(certificate) or "no name"
            problems.append(f"not for {host}: it is for {names}")
        if self_signed:
            if certificate.subject not in trusted_subjects:
                problems.append(
                    "self-signed, and not among the trusted CAs: nothing vouches for it"
                )
        elif index + 1 < len(parsed):
            if not _signed_by(certificate, parsed[index + 1]):
                problems.append("not issued by the next certificate in the chain (wrong order?)")
        elif certificate.issuer not in trusted_subjects:
            issuer = certificate.issuer.rfc4514_string()
            problems.append(f"issuer {issuer} is unknown: not sent, not among the trusted CAs")
        reports.append(
            CertificateReport(
                subject=certificate.subject.rfc4514_string(),
                issuer=certificate.issuer.rfc4514_string(),
                san=tuple(_san(certificate)),
                not_before=not_before,
                not_after=not_after,
                days_left=(not_after - now).days,
                sha256=_fingerprint(certificate),
                must_staple=_must_staple(certificate),
                key=_key_description(certificate),
                problems=tuple(problems),
            )
        )
    return reports


def describe_session_chain(
    chain: Sequence[bytes], verified: bool, host: str | None, cafile: str | None
) -> list[CertificateReport]:
    """Reports for a TLS session's chain, as ``:cert`` and ``--json`` show it: a
    verified chain ends at a trusted CA; an unverified one (``--insecure``) is checked
    against the CAs a verifying client would have trusted, to say what verification
    would find."""
    trusted = list(chain[-1:]) if verified else trusted_subjects_der(cafile)
    return describe_chain(chain, host, trusted)


def chain_json(reports: Sequence[CertificateReport], source: str) -> dict[str, object]:
    """The chain for ``--json`` outputs (send's result, diagnose's object)."""
    return {"source": source, "certificates": [report.as_json() for report in reports]}


def chain_text(reports: Sequence[CertificateReport], source: str) -> str:
    """The chain as lines for the REPL's ``:cert`` (and plain output)."""
    lines: list[str] = []
    for index, report in enumerate(reports):
        role = "leaf" if index == 0 else "CA" if index + 1 < len(reports) else "top"
        lines.append(f"[{index}] {role}: {report.subject}")
        if report.san:
            lines.append(f"    names (SAN): {', '.join(report.san)}")
        lines.append(f"    issuer: {report.issuer}")
        left = (
            f"expired {-report.days_left} days ago"
            if report.days_left < 0
            else f"{report.days_left} days left"
        )
        lines.append(
            f"    valid: {report.not_before:%Y-%m-%d} to {report.not_after:%Y-%m-%d} ({left})"
        )
        lines.append(f"    SHA-256: {report.sha256}")
        lines.append(f"    key: {report.key}")
        lines.append(f"    OCSP must-staple: {'yes' if report.must_staple else 'no'}")
        for problem in report.problems:
            lines.append(f"    problem: {problem}")
    if source == "leaf only":
        lines.append(
            "(only the server's own certificate: this Python gives no chain; "
            "Python 3.13 or newer shows the whole chain)"
        )
    elif source == "sent":
        lines.append("(the chain as the server sent it; verification was skipped)")
    return "\n".join(lines)


def pem_chain(chain: Sequence[bytes]) -> str:
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in chain)


def write_pem(path: str, chain: Sequence[bytes]) -> None:
    """Write the chain in PEM to ``path`` atomically (a failure leaves no file)."""
    target = os.path.expanduser(path)
    directory = os.path.dirname(os.path.abspath(target))
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".mailtalk-chain-")
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:
            stream.write(pem_chain(chain))
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _san(certificate: Any) -> list[str]:
    from cryptography import x509

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in names.get_values_for_type(x509.DNSName)] + [
        str(address) for address in names.get_values_for_type(x509.IPAddress)
    ]


def _common_name(certificate: Any) -> str:
    from cryptography.x509.oid import NameOID

    values = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _matches_host(certificate: Any, host: str) -> bool:
    """RFC 6125 matching as OpenSSL does it: SANs (a leading ``*.`` covers one label),
    IP SANs for an address, the CN only when there are no SANs."""
    import ipaddress

    from cryptography import x509

    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return address is None and _common_name(certificate).lower() == host
    if address is not None:
        return address in names.get_values_for_type(x509.IPAddress)
    for name in names.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _signed_by(certificate: Any, issuer: Any) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError (names differ), TypeError (key kind)
        return False
    return True


def _fingerprint(certificate: Any) -> str:
    from cryptography.hazmat.primitives import hashes

    return ":".join(f"{byte:02X}" for byte in certificate.fingerprint(hashes.SHA256()))


def _must_staple(certificate: Any) -> bool:
    from cryptography import x509

    try:
        features = certificate.extensions.get_extension_for_class(x509.TLSFeature).value
    except x509.ExtensionNotFound:
        return False
    return x509.TLSFeatureType.status_request in features


def _key_description(certificate: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name} ({key.key_size} bits)"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size} bits"
    return type(key).__name__


def trusted_subjects_der(cafile: str | None) -> list[bytes]:
    """The CA certificates a verifying client would trust: the system bundle that
    OpenSSL reads (``ssl.get_default_verify_paths``) and ``cafile``, in DER. For
    describing a chain that ``--insecure`` did not verify."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    paths = ssl.get_default_verify_paths()
    found: list[bytes] = []
    for path in (paths.cafile, paths.openssl_cafile, cafile):
        if not path or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as stream, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # old CAs with negative serials
                certificates = x509.load_pem_x509_certificates(stream.read())
        except (OSError, ValueError):
            continue
        found.extend(certificate.public_bytes(Encoding.DER) for certificate in certificates)
    return found
