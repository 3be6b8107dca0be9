"""What mailtalk says about a TLS session: its parameters, its certificate, why it failed.

Kept apart from ``transport`` so the socket code stays short. Nothing here opens a
connection; ``transport`` hands over the handshake results and a rejected
certificate, and gets back a ``TLSInfo`` or a sentence explaining the failure.

Stdlib only at import time: the CLI must start fast. ``cryptography`` is used, if
installed, only as a fallback for decoding certificates.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from mailtalk.language import N_, WordedError

# Appended to every certificate verification failure: the two ways out.
VERIFY_HINT: Final = N_(
    "Use --cafile FILE to trust the issuer, or --insecure to skip verification."
)
# ... and when --cafile was given and did not hold the issuer.
VERIFY_HINT_CAFILE: Final = N_(
    "Use --cafile FILE with the issuer's certificate, or --insecure to skip verification."
)

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) that have a plain-words explanation.
_UNABLE_TO_GET_ISSUER_CERT: Final = 2
_CERT_NOT_YET_VALID: Final = 9
_CERT_HAS_EXPIRED: Final = 10
_DEPTH_ZERO_SELF_SIGNED_CERT: Final = 18
_SELF_SIGNED_CERT_IN_CHAIN: Final = 19
_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: Final = 20
_UNABLE_TO_VERIFY_LEAF_SIGNATURE: Final = 21
_HOSTNAME_MISMATCH: Final = 62
_IP_ADDRESS_MISMATCH: Final = 64

# Short forms of the attribute names the ssl module reports, as in "CN=localhost".
_SHORT_ATTRIBUTE_NAMES: Final = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}

# A certificate can carry hundreds of names; an error message shows a few.
_MAX_NAMES_SHOWN: Final = 3


@dataclass(frozen=True)
class CertificateFacts:
    """The parts of an X.509 certificate a person checks by eye.

    Names are rendered most specific first ("CN=R3, O=Let's Encrypt, C=US"); an empty
    string means the certificate could not be decoded. Times are UTC.
    """

    subject: str = ""
    issuer: str = ""
    not_before: datetime | None = None
    not_after: datetime | None = None
    san: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The names the certificate is for: its SANs, else the CN of its subject."""
        if self.san:
            return self.san
        common_names = [part[3:] for part in self.subject.split(", ") if part.startswith("CN=")]
        return tuple(common_names)


@dataclass(frozen=True)
class TLSInfo:
    """The negotiated TLS session and the server's certificate.

    ``version`` is e.g. "TLSv1.3", ``cipher`` the cipher suite name and ``bits`` its
    secret bits. ``subject``/``issuer``/``not_before``/``not_after``/``san`` describe
    the server's certificate; they are empty/None when the server sent none or it
    could not be decoded. ``san`` is a tuple (not a list) so the info stays hashable.
    ``verified`` is False when ``--insecure`` skipped verification; the certificate is
    still decoded then. ``certificate`` is the DER bytes, for "show me the cert".
    """

    version: str
    cipher: str
    bits: int
    subject: str
    issuer: str
    not_after: datetime | None
    not_before: datetime | None
    san: tuple[str, ...]
    verified: bool
    certificate: bytes = field(default=b"", repr=False)
    # The whole chain in DER, leaf first, and where it came from (net.certchain.PeerChain)
    chain: tuple[bytes, ...] = field(default=(), repr=False)
    chain_source: str = ""

    @classmethod
    def from_session(
        cls,
        version: str,
        cipher: str,
        bits: int,
        certificate: bytes,
        verified: bool,
        chain: tuple[bytes, ...] = (),
        chain_source: str = "",
    ) -> TLSInfo:
        facts = decode_certificate(certificate) if certificate else CertificateFacts()
        return cls(
            version=version,
            cipher=cipher,
            bits=bits,
            subject=facts.subject,
            issuer=facts.issuer,
            not_after=facts.not_after,
            not_before=facts.not_before,
            san=facts.san,
            verified=verified,
            certificate=certificate,
            chain=chain or ((certificate,) if certificate else ()),
            chain_source=chain_source or "leaf only",
        )

    def summary(self, now: datetime | None = None, _: Callable[[str], str] = str) -> str:
        """One line for the REPL, e.g. ``TLSv1.3, TLS_AES_256_GCM_SHA384 (256 bits);
        certificate CN=localhost, issued by CN=localhost, expires 2026-12-28 (30 days)``,
        in the language of ``_`` (the session's gettext).

        Unverified sessions end with "; NOT verified (--insecure)" so nobody mistakes
        them for checked ones.
        """
        line = f"{self.version}, {self.cipher} " + _("({bits} bits)").format(bits=self.bits)
        line += "; "
        if not self.subject and self.not_after is None:
            line += _("no certificate details")
        else:
            line += _("certificate {subject}, issued by {issuer}").format(
                subject=self.subject or _("(no subject)"),
                issuer=self.issuer or _("(unknown issuer)"))
            if self.not_after is not None:
                line += ", " + _describe_expiry(self.not_after, now or datetime.now(UTC), _)
        if not self.verified:
            line += "; " + _("NOT verified (--insecure)")
        return line


def _describe_expiry(not_after: datetime, now: datetime, _: Callable[[str], str] = str) -> str:
    days = (not_after - now).days
    date = not_after.strftime("%Y-%m-%d")
    if not_after < now:
        return _("expired {date} ({days} days ago)").format(date=date, days=-days)
    return _("expires {date} ({days} days)").format(date=date, days=days)


def explain_verification_failure(
    error: ssl.SSLCertVerificationError,
    host: str,
    certificate: bytes | None,
    cafile: str | None = None,
    gettext: Callable[[str], str] = str,
) -> tuple[str, str]:
    """Turn a failed certificate check into ``(reason, message)``.

    ``reason`` is one of "expired", "not-yet-valid", "wrong-host", "self-signed",
    "unknown-issuer" or "other", for code that wants to branch; ``message`` is the
    plain-words sentence followed by ``VERIFY_HINT``. ``certificate`` is the server's
    DER certificate if it could be captured; without it the message has fewer details.
    ``cafile`` is the --cafile given, if any: when the issuer is unknown, the message
    says that file did not hold it (rather than advising --cafile once more).
    ``gettext`` says it in the session's language.
    """
    _ = gettext
    facts = decode_certificate(certificate) if certificate else CertificateFacts()
    hint = VERIFY_HINT
    code = error.verify_code
    if code == _CERT_HAS_EXPIRED:
        reason = "expired"
        if facts.not_after is not None:
            days_ago = (datetime.now(UTC) - facts.not_after).days
            sentence = _(
                "the certificate of {host} expired on {date} ({days} days ago)"
            ).format(host=host, date=f"{facts.not_after:%Y-%m-%d}", days=days_ago)
        else:
            sentence = _("the certificate of {host} has expired").format(host=host)
    elif code == _CERT_NOT_YET_VALID:
        reason = "not-yet-valid"
        # Usually the clock of one of the two machines is wrong, not the certificate.
        sentence = (
            _("the certificate of {host} is not valid until {date} "
              "(check the clocks of this computer and the server)")
            if facts.not_before else
            _("the certificate of {host} is not valid yet "
              "(check the clocks of this computer and the server)")
        ).format(host=host, date=f"{facts.not_before:%Y-%m-%d}" if facts.not_before else "")
    elif code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
        reason = "wrong-host"
        if facts.names:
            sentence = _("the certificate is for {names}, not {host}").format(
                names=_list_names(facts.names, _), host=host)
        else:
            sentence = _("the certificate is not for {host}").format(host=host)
    elif code == _DEPTH_ZERO_SELF_SIGNED_CERT:
        reason = "self-signed"
        sentence = _("the certificate of {host} is self-signed, so nothing vouches for it"
                     ).format(host=host)
        if cafile:
            sentence = _(
                "the certificate of {host} is self-signed (nothing vouches for it), "
                "and {cafile} does not hold it"
            ).format(host=host, cafile=cafile)
            hint = VERIFY_HINT_CAFILE
    elif code in (
        _UNABLE_TO_GET_ISSUER_CERT,
        _UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        _UNABLE_TO_VERIFY_LEAF_SIGNATURE,
        _SELF_SIGNED_CERT_IN_CHAIN,
    ):
        reason = "unknown-issuer"
        issuer = facts.issuer or _("an authority")
        sentence = _(
            "the certificate of {host} was issued by {issuer}, which is not in your trusted CAs"
        ).format(host=host, issuer=issuer)
        if cafile:
            sentence = _(
                "the certificate of {host} was issued by {issuer}, which is neither in "
                "{cafile} nor in the system's trusted CAs"
            ).format(host=host, issuer=issuer, cafile=cafile)
            hint = VERIFY_HINT_CAFILE
    else:
        reason = "other"
        detail = error.verify_message or error.reason or str(error)
        sentence = _("the certificate of {host} could not be verified ({reason})").format(
            host=host, reason=detail)
    return reason, f"{sentence}. {_(hint)}"


# A CA bundle is a few hundred KiB; a file far bigger is not one, and is not read.
_MAX_CAFILE: Final = 16 * 1024 * 1024


def check_cafile(path: str) -> str:
    """``path`` if it can be --cafile or a session file's ``cafile=``: a readable regular
    file holding at least one PEM certificate, or a directory of hashed certificates.
    Otherwise ValueError, whose text is the reason alone ("no such file", "no CA
    certificate in it (PEM expected)"), for the caller to put after the name it uses.

    The one place that decides, for every command taking --cafile (its option type),
    for ``cafile=`` in session files (when they are parsed) and for the TLS context
    itself: a wrong file is a bad option or script (exit 2) said before connecting,
    never a TLS failure in OpenSSL's words.
    """
    import stat

    try:
        status = os.stat(os.path.expanduser(path))
    except FileNotFoundError:
        raise WordedError(N_("no such file")) from None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the name
        raise WordedError("{reason}", reason=str(
            getattr(error, "strerror", None) or error).lower()) from None
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        return path  # a directory of hashed certificates (c_rehash), as OpenSSL reads it
    if not stat.S_ISREG(mode):
        kind = (
            N_("a FIFO, not a file of CA certificates") if stat.S_ISFIFO(mode)
            else N_("a device, not a file of CA certificates")
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else N_("a socket, not a file of CA certificates") if stat.S_ISSOCK(mode)
            else N_("not a regular file, not a file of CA certificates")
        )  # fmt: skip
        raise WordedError(kind)
    if status.st_size > _MAX_CAFILE:
        raise WordedError(N_("over {size} MiB: not a file of CA certificates"),
                          size=_MAX_CAFILE // (1024 * 1024))
    if not os.access(os.path.expanduser(path), os.R_OK):
        raise WordedError(N_("cannot be read (permission denied)"))
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cafile=os.path.expanduser(path)
        )
    except (ssl.SSLError, ValueError):
        raise WordedError(N_("no CA certificate in it (PEM expected)")) from None
    except OSError as error:
        raise WordedError("{reason}", reason=str(error.strerror or error).lower()) from None
    return path


def _list_names(names: Sequence[str], _: Callable[[str], str] = str) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    if len(names) > _MAX_NAMES_SHOWN:
        shown += " " + _("and {count} more").format(count=len(names) - _MAX_NAMES_SHOWN)
    return shown


def decode_certificate(der: bytes) -> CertificateFacts:
    """Decode a DER certificate without verifying it; never raises.

    Uses the ssl module's own decoder (the one behind ``getpeercert()``), which is
    the only stdlib way to read a certificate the handshake did not verify; falls
    back to ``cryptography`` if that private helper is gone, and to empty facts if
    both fail.
    """
    for decoder in (_decode_with_ssl_module, _decode_with_cryptography):
        try:
            return decoder(der)
        except Exception:  # a decoder that is missing or chokes must not cost the session
            continue
    return CertificateFacts()


def _decode_with_ssl_module(der: bytes) -> CertificateFacts:
    import tempfile  # only needed here, and not free to import

    decode: Callable[[str], dict[str, Any]] = ssl._ssl._test_decode_cert  # type: ignore[attr-defined]
    # The decoder only reads files.
    descriptor, path = tempfile.mkstemp(prefix="mailtalk-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as pem_file:
            pem_file.write(ssl.DER_cert_to_PEM_cert(der))
        decoded = decode(path)
    finally:
        os.unlink(path)
    return CertificateFacts(
        subject=_format_ssl_name(decoded.get("subject", ())),
        issuer=_format_ssl_name(decoded.get("issuer", ())),
        not_before=_parse_ssl_time(decoded.get("notBefore")),
        not_after=_parse_ssl_time(decoded.get("notAfter")),
        san=tuple(
            _normalise_ip(value) if kind == "IP Address" else value
            for kind, value in decoded.get("subjectAltName", ())
            if kind in ("DNS", "IP Address")
        ),
    )


def _format_ssl_name(rdns: Iterable[Iterable[tuple[str, str]]]) -> str:
    parts = [
        f"{_SHORT_ATTRIBUTE_NAMES.get(key, key)}={value}" for rdn in rdns for key, value in rdn
    ]
    return ", ".join(reversed(parts))


def _parse_ssl_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), UTC)


def _normalise_ip(text: str) -> str:
    # The ssl module spells IPv6 SANs in full ("0:0:0:0:0:0:0:1"), people write "::1".
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text.strip()


def _decode_with_cryptography(der: bytes) -> CertificateFacts:
    from cryptography import x509  # optional; only when the ssl module cannot decode

    certificate = x509.load_der_x509_certificate(der)
    try:
        san_extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        san = tuple(
            [str(name) for name in san_extension.value.get_values_for_type(x509.DNSName)]
            + [str(ip) for ip in san_extension.value.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        san = ()
    return CertificateFacts(
        subject=_format_cryptography_name(certificate.subject),
        issuer=_format_cryptography_name(certificate.issuer),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        san=san,
    )


def _format_cryptography_name(name: Any) -> str:
    parts = [
        f"{attribute.rfc4514_attribute_name}={attribute.value}"
        for rdn in name.rdns
        for attribute in rdn
    ]
    return ", ".join(reversed(parts))


class CertificateCapture:
    """Keeps the server's certificate from the handshake, even when verification fails.

    The ssl module gives no access to the certificate it rejected, yet the date,
    names and issuer in it are what make a verification error understandable. The
    context's debugging hook ``_msg_callback`` sees every (decrypted) handshake
    message, so we pick the leaf certificate out of the Certificate message. It is a
    private hook: if it is missing, ``install`` does nothing and the messages just
    carry fewer details.
    """

    _HANDSHAKE: Final = 22  # TLS record content type
    _CERTIFICATE: Final = 11  # TLS handshake message type

    def __init__(self) -> None:
        self.certificate: bytes | None = None

    def install(self, context: ssl.SSLContext) -> None:
        # setattr keeps mypy from rejecting the private, untyped attribute.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(context, "_msg_callback", self._on_message)  # noqa: B010

    def _on_message(
        self,
        connection: object,
        direction: str,
        version: object,
        content_type: int,
        message_type: int,
        data: bytes,
    ) -> None:
        if (
            direction != "read"
            or content_type != self._HANDSHAKE
            or message_type != self._CERTIFICATE
            or self.certificate is not None
        ):
            return
        # An exception here would resurface from the handshake; a parsing miss must not.
        with contextlib.suppress(IndexError, ValueError):
            self.certificate = leaf_from_certificate_message(data)


def leaf_from_certificate_message(message: bytes) -> bytes | None:
    """The first (leaf) DER certificate in a TLS Certificate handshake message.

    ``message`` includes the 4-byte handshake header. TLS 1.2 (RFC 5246 7.4.2) has
    the 3-byte certificate list length right after it; TLS 1.3 (RFC 8446 4.4.2)
    puts a length-prefixed request context first. The list length matching the
    message tells the two apart.
    """
    body = message[4:]
    if _uint24(body, 0) == len(body) - 3:
        list_start = 3
    else:
        context_length = body[0]
        list_start = 1 + context_length + 3
        if _uint24(body, 1 + context_length) != len(body) - list_start:
            raise ValueError("not a Certificate message")
    if list_start == len(body):
        return None  # an empty list: the server sent no certificate
    certificate_length = _uint24(body, list_start)
    certificate = body[list_start + 3 : list_start + 3 + certificate_length]
    if len(certificate) != certificate_length:
        raise ValueError("truncated certificate")
    return certificate


def _uint24(data: bytes, offset: int) -> int:
    if offset + 3 > len(data):
        raise IndexError("short read")
    return int.from_bytes(data[offset : offset + 3], "big")
