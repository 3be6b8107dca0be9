"""The socket under a mailtalk session: connect, send, receive, upgrade to TLS, close.

Thin and synchronous on purpose: the REPL runs it in a background thread, and the
protocol cores above never touch a socket. Everything that goes wrong becomes one
``TransportError`` whose message is a single sentence a user can act on, so the CLI
can print it without a traceback.

Public API:

- ``TransportOptions``: timeout, address family (-4/-6), --insecure, --cafile, SNI name.
- ``Transport.connect(host, port, options, implicit_tls)``, ``Transport.connect_unix(path,
  options)`` (a Unix-domain socket) and ``Transport.spawn(argv, options)`` (a program's
  stdin/stdout, ``mailtalk.net.program``) and, on the result, ``send``, ``recv``,
  ``start_tls``, ``set_timeout``, ``fileno``, ``pending``, ``take_notes``, ``close``
  (then ``exit_status`` for a program); attributes ``host``, ``port``, ``peer``, ``tls``.
- ``TLSInfo`` (re-exported from ``mailtalk.net.tls``) and ``make_ssl_context``.
- Errors: ``TransportError`` > ``ConnectError``, ``TransportTimeout``, ``TLSError`` >
  ``TLSVerificationError``, ``TLSTimeout`` (also a ``TransportTimeout``), ``CAFileError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from mailtalk.language import N_
from mailtalk.net.certchain import peer_chain
from mailtalk.net.program import ProgramError, ProgramLink
from mailtalk.net.tls import (
    CertificateCapture,
    TLSInfo,
    check_cafile,
    explain_verification_failure,
)
from mailtalk.net.tlsclient import ClientTLS, ClientTLSError

__all__ = [
    "CAFileError",
    "ConnectError",
    "TLSError",
    "TLSInfo",
    "TLSTimeout",
    "TLSVerificationError",
    "Transport",
    "TransportError",
    "TransportOptions",
    "TransportTimeout",
    "make_ssl_context",
]

DEFAULT_RECV_SIZE: Final = 65536

# What a connect() or getaddrinfo() failure means, in the words we show.
_CONNECT_ERRNO_WORDS: Final = {
    errno.ECONNREFUSED: N_("connection refused"),
    errno.ENETUNREACH: N_("network unreachable"),
    errno.EHOSTUNREACH: N_("host unreachable"),
    errno.EHOSTDOWN: N_("host is down"),
    errno.ECONNRESET: N_("connection reset"),
    errno.EADDRNOTAVAIL: N_("address not available from this computer"),
    errno.EAFNOSUPPORT: N_("address family not supported by this computer"),
}

# OpenSSL reasons meaning the bytes that came back were not TLS at all.
_NOT_TLS_REASONS: Final = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "RECORD_TOO_LARGE",
        "ENCRYPTED_LENGTH_TOO_LONG",
    }
)
_VERSION_MISMATCH_REASONS: Final = frozenset(
    {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"}
)


class TransportError(Exception):
    """Anything that went wrong below the protocol; ``str()`` is one plain sentence."""


class ConnectError(TransportError):
    """The connection could not be made: DNS failure, refused, unreachable, timed out."""


class TransportTimeout(TransportError):
    """The server did not answer (or accept data) within the timeout."""


class TLSError(TransportError):
    """The TLS handshake failed for a reason other than the certificate."""


class CAFileError(TLSError):
    """--cafile is not a file of CA certificates: a bad option (exit status 2)."""


class ClientTLSOptionError(CAFileError):
    """--cert/--key/--ciphers/--tls-min cannot be used: a bad option (exit status 2)."""


class TLSDumpError(TransportError):
    """--tls-dump FILE could not be written."""


class TLSTimeout(TLSError, TransportTimeout):
    """The server did not answer the TLS handshake in time: TLS failed (exit status 4)."""


class TLSVerificationError(TLSError):
    """The server's certificate was rejected.

    ``reason`` is "expired", "not-yet-valid", "wrong-host", "self-signed",
    "unknown-issuer" or "other"; the message explains it and ends with the hint
    naming --cafile and --insecure.
    """

    def __init__(self, message: str, reason: str, chain: tuple[bytes, ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.chain = chain  # what the server sent, for --tls-dump and a closer look


@dataclass
class TransportOptions:
    """How to connect.

    ``timeout`` (seconds) bounds each connect attempt, the TLS handshake and each
    read/write. ``family`` is 0 for any, ``socket.AF_INET`` for -4, ``socket.AF_INET6``
    for -6. ``insecure`` skips certificate verification. ``cafile`` (a PEM file or a
    directory of hashed certificates) is trusted in addition to the system's CAs.
    ``server_hostname`` is the name sent as SNI and verified; defaults to the host.
    ``resolve`` maps host names to the addresses to connect to instead of asking the
    system's resolver (curl's ``--resolve``): a practice world's names live only in its
    own DNS. The name is still the one TLS sends and verifies. ``gettext`` puts the
    error messages into the session's language (the REPL's ``Conversation.gettext``);
    the net layer knows no catalogue.
    """

    timeout: float = 30.0
    family: int = 0
    insecure: bool = False
    cafile: str | None = None
    server_hostname: str | None = None
    # the local address to connect from (diagnose relay asks from a second one)
    source_address: str | None = None
    resolve: tuple[tuple[str, str], ...] = ()  # (host name, address) pairs
    # --proxy-from: a HAProxy PROXY header naming this client (address, port) is sent
    # first, in version ``proxy_version`` (1 text, 2 binary); mailtalk.protocols.proxy
    proxy_from: tuple[str, int] | None = None
    proxy_version: int = 1
    # --sni, --tls-min/--tls-max, --ciphers, --cert/--key, --tls-dump
    tls: ClientTLS = field(default_factory=ClientTLS)
    gettext: Callable[[str], str] = field(default=str, repr=False, compare=False)


def make_ssl_context(options: TransportOptions) -> ssl.SSLContext:
    """A client context: verifying with TLS 1.2+ by default, or accepting anything.

    With ``insecure`` the certificate and host name are not checked and TLS 1.0/1.1
    and weak ciphers are allowed too: --insecure is how one talks to an old server
    at all. ``cafile`` adds to the system's trusted CAs (the hint says "trust the
    issuer", not "distrust everyone else"). Raises ``TLSError`` if ``cafile`` is
    unreadable or holds no certificate (``CAFileError``, worded by ``check_cafile``).
    """
    if options.insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with warnings.catch_warnings():
                # Deprecated because it is insecure, which is what --insecure asked for.
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1
            # OpenSSL 3 refuses TLS < 1.2 at its default security level 1.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            pass  # this OpenSSL cannot go lower; keep what it has
        _apply_client_tls(context, options.tls)
        return context
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _apply_client_tls(context, options.tls)
    if options.cafile:
        try:
            if os.path.isdir(options.cafile):
                context.load_verify_locations(capath=options.cafile)
            else:
                context.load_verify_locations(cafile=options.cafile)
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            try:
                check_cafile(options.cafile)
                detail = getattr(error, "strerror", None) or getattr(error, "reason", None)
                reason = str(detail or error).lower()
            except ValueError as why:
                reason = str(why)
            raise CAFileError(f"--cafile {options.cafile}: {reason}") from error
    return context


def _apply_client_tls(context: ssl.SSLContext, settings: ClientTLS) -> None:
    try:
        settings.apply(context)
    except ClientTLSError as error:
        raise ClientTLSOptionError(str(error)) from None


class Transport:
    """A connected socket, plain or TLS; one per session.

    Blocking with a timeout. ``close()`` may be called from another thread to
    interrupt a ``recv()`` blocked there; that ``recv()`` then returns ``b""``.
    """

    def __init__(
        self,
        sock: socket.socket,
        host: str,
        port: int,
        options: TransportOptions | None = None,
        peer: tuple[Any, ...] = (),
    ) -> None:
        """Wrap an already connected socket (``connect`` is the usual way in)."""
        self.host = host
        self.port = port
        self.options = options or TransportOptions()
        self.peer = peer  # the address actually connected: (ip, port) or IPv6 4-tuple
        self.tls: TLSInfo | None = None
        self._sock = sock
        self._timeout: float | None = self.options.timeout
        self._closed = False
        self.link: ProgramLink | None = None  # the program behind the socket (spawn)
        self.exit_status: int | None = None  # the program's, once closed
        sock.settimeout(self._timeout)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        options: TransportOptions | None = None,
        implicit_tls: bool = False,
    ) -> Transport:
        """Resolve ``host`` and connect to the first address that answers.

        Each address gets the full ``options.timeout`` (as ``socket.create_connection``
        does). With ``implicit_tls`` the TLS handshake follows at once (ports 465,
        993, 995). ``host`` may be an IP literal, IPv6 optionally in brackets; the
        certificate is then checked against its IP SANs.
        """
        options = options or TransportOptions()
        _ = options.gettext
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        where = _("{host} port {port}").format(host=host, port=port)
        cannot = _("cannot connect to {server}: {reason}")
        if not 0 < port < 65536:
            raise ConnectError(cannot.format(
                server=where, reason=_("the port must be from 1 to 65535")))
        lookup = dict(options.resolve).get(host.lower().rstrip("."), host)
        try:
            addresses = socket.getaddrinfo(lookup, port, options.family, socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ConnectError(cannot.format(
                server=where, reason=_describe_resolver_error(error, options.family, _)
            )) from error
        except UnicodeError as error:
            raise ConnectError(cannot.format(
                server=where, reason=_("not a valid host name"))) from error

        last_error: OSError | None = None
        for family, kind, protocol, _name, address in addresses:
            sock = socket.socket(family, kind, protocol)
            sock.settimeout(options.timeout)
            try:
                if options.source_address is not None:
                    sock.bind((options.source_address, 0))
                sock.connect(address)
            except OSError as error:
                sock.close()
                last_error = error
                continue
            transport = cls(sock, host, port, options, peer=tuple(address))
            if options.proxy_from is not None:
                destination = (str(address[0]), int(address[1]))
                transport._send_proxy_header(options.proxy_from, destination)
            if implicit_tls:
                transport._handshake(implicit=True)
            return transport

        assert last_error is not None  # getaddrinfo never returns an empty list
        detail = _describe_connect_error(last_error, options.timeout, _)
        if len(addresses) > 1:
            detail += " " + _("(tried {count} addresses)").format(count=len(addresses))
        raise ConnectError(cannot.format(server=where, reason=detail)) from last_error

    @classmethod
    def connect_unix(
        cls, path: str, options: TransportOptions | None = None, implicit_tls: bool = False
    ) -> Transport:
        """Connect to the Unix-domain socket at ``path`` (``unix:/path``).

        ``host`` is the path and ``port`` 0; TLS, if asked, checks the certificate
        against ``options.server_hostname`` (default "localhost").
        """
        options = options or TransportOptions()
        if options.server_hostname is None:
            options = TransportOptions(**{**options.__dict__, "server_hostname": "localhost"})
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(options.timeout)
        try:
            sock.connect(path)
        except OSError as error:
            sock.close()
            _ = options.gettext
            detail = _describe_connect_error(error, options.timeout, _)
            if isinstance(error, FileNotFoundError):
                detail = _("no such socket")
            raise ConnectError(_("cannot connect to {server}: {reason}").format(
                server=f"unix:{path}", reason=detail)) from error
        transport = cls(sock, path, 0, options, peer=(f"unix:{path}",))
        if implicit_tls:
            transport._handshake(implicit=True)
        return transport

    @classmethod
    def spawn(cls, argv: list[str], options: TransportOptions | None = None) -> Transport:
        """Run ``argv`` (no shell) and talk to its standard input and output.

        What it writes to standard error (and Exim's ``-bh`` commentary) is kept apart:
        ``take_notes()``. ``close()`` waits for it and sets ``exit_status``.
        """
        options = options or TransportOptions()
        if options.server_hostname is None:
            options = TransportOptions(**{**options.__dict__, "server_hostname": "localhost"})
        try:
            link = ProgramLink(argv)
        except ProgramError as error:
            raise ConnectError(str(error)) from None
        transport = cls(link.socket, link.name, 0, options, peer=(" ".join(argv),))
        transport.link = link
        return transport

    def _send_proxy_header(self, source: tuple[str, int], destination: tuple[str, int]) -> None:
        from mailtalk.protocols.proxy import ProxyHeaderError, proxy_header

        try:
            header = proxy_header(self.options.proxy_version, source, destination)
        except ProxyHeaderError as error:
            self.close()
            raise ConnectError(error.said(self.options.gettext)) from None
        self.send(header)

    def take_notes(self) -> list[str]:
        """Lines from the program behind a ``spawn``ed transport that are not the
        protocol (its standard error, Exim's commentary); [] for a socket."""
        return self.link.take_notes() if self.link is not None else []

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def server_hostname(self) -> str:
        """The name sent as SNI and checked against the certificate."""
        return self.options.server_hostname or self.options.tls.sni or self.host

    def fileno(self) -> int:
        """The socket's descriptor, for select()/selectors; -1 once closed."""
        return self._sock.fileno()

    def pending(self) -> int:
        """Bytes already decrypted and waiting in the TLS layer; 0 for plain text.

        select() on ``fileno()`` cannot see these, so a reader woken by select()
        should keep calling ``recv()`` while this is non-zero.
        """
        if isinstance(self._sock, ssl.SSLSocket) and not self._closed:
            return self._sock.pending()
        return 0

    def set_timeout(self, seconds: float | None) -> None:
        """Change the read/write timeout; ``None`` waits forever."""
        self._timeout = seconds
        self._sock.settimeout(seconds)

    def send(self, data: bytes) -> None:
        """Send all of ``data``."""
        try:
            self._sock.sendall(data)
        except TimeoutError as error:
            raise TransportTimeout(self.options.gettext(
                "{server} did not accept data within {limit}").format(
                    server=self.host, limit=self._describe_timeout())
            ) from error
        except OSError as error:
            raise TransportError(self._describe_lost_connection(error)) from error

    def recv(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes:
        """Up to ``max_bytes`` bytes as soon as any arrive; ``b""`` once the peer closed.

        Raises ``TransportTimeout`` when nothing arrives within the timeout (the
        connection stays usable, so the REPL can keep waiting).
        """
        try:
            return self._sock.recv(max_bytes)
        except TimeoutError as error:
            if self._closed:
                return b""
            raise TransportTimeout(self.options.gettext(
                "no answer from {server} within {limit}").format(
                    server=self.host, limit=self._describe_timeout())
            ) from error
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            # A TLS peer hanging up, with or without close_notify: an ordinary close.
            return b""
        except OSError as error:
            if self._closed:
                return b""  # close() from another thread interrupted us
            raise TransportError(self._describe_lost_connection(error)) from error

    def recv_nowait(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes | None:
        """What has arrived, without waiting: ``None`` if nothing, ``b""`` once closed.

        For a caller woken by select(): a readable TLS socket may carry only a
        handshake message (TLS 1.3 sends session tickets after the handshake), and
        a blocking ``recv()`` would then sit there until application data comes.
        """
        if self._closed:
            return b""
        self._sock.setblocking(False)
        try:
            return self._sock.recv(max_bytes)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        except OSError as error:
            if self._closed:
                return b""
            raise TransportError(self._describe_lost_connection(error)) from error
        finally:
            if not self._closed:
                self._sock.settimeout(self._timeout)

    def start_tls(self) -> TLSInfo:
        """Upgrade the plain connection to TLS in place (after STARTTLS / STLS).

        Call it once the server has said go ahead and every plaintext byte has been
        read; plaintext the caller buffered past that point must be discarded, not
        trusted as if it came over TLS. On failure the connection is closed,
        because it is unusable, and ``TLSVerificationError``, ``TLSError`` or
        ``TransportTimeout`` is raised.
        """
        if self.tls is not None:
            raise TLSError(self.options.gettext(
                "the connection to {server} is already using TLS").format(server=self.host))
        return self._handshake(implicit=False)

    def close(self) -> None:
        """Close the connection; safe to call twice and from another thread."""
        if self._closed:
            return
        self._closed = True
        # shutdown() wakes a recv() blocked in another thread; close() alone may not.
        # It fails harmlessly when the other side is already gone.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self.link is not None:
            # Its standard input has just closed: most programs end there.
            self.exit_status = self.link.finish()

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self.tls.version if self.tls else "plain")
        return f"<Transport {self.host} port {self.port} {self.peer!r} {state}>"

    def _handshake(self, implicit: bool) -> TLSInfo:
        context = make_ssl_context(self.options)
        capture = CertificateCapture()
        capture.install(context)
        where = f"{self.host}:{self.port}"
        _ = self.options.gettext
        try:
            tls_sock = context.wrap_socket(
                self._sock, server_hostname=self.server_hostname, do_handshake_on_connect=False
            )
            # Until the handshake has worked, closing must close the plain socket.
            self._sock = tls_sock
            tls_sock.do_handshake()
        except ssl.SSLCertVerificationError as error:
            sent = peer_chain(tls_sock, verified=False).certificates
            self.close()
            reason, message = explain_verification_failure(
                error, self.server_hostname, capture.certificate or next(iter(sent), None),
                self.options.cafile, _,
            )
            if self.options.tls.dump and sent:
                # The chain that failed is what one wants to look at.
                self._dump_chain(sent)
                message += " " + _("(its chain is in {file})").format(file=self.options.tls.dump)
            raise TLSVerificationError(message, reason, sent) from error
        except TimeoutError as error:
            self.close()
            raise TLSTimeout(_(
                "no answer from {server} to the TLS handshake within {limit}").format(
                    server=self.host, limit=self._describe_timeout())
            ) from error
        except ssl.SSLError as error:
            self.close()
            raise TLSError(_describe_handshake_error(error, where, implicit, _)) from error
        except OSError as error:
            self.close()
            raise TLSError(_(
                "the server at {server} closed the connection during the TLS handshake"
            ).format(server=where)) from error
        except ValueError as error:  # wrap_socket() rejecting the name itself
            self.close()
            raise TLSError(_(
                "cannot start TLS: {name} is not a valid server name"
            ).format(name=repr(self.server_hostname))) from error

        cipher_name, _, secret_bits = tls_sock.cipher() or ("unknown cipher", "", 0)
        verified = context.verify_mode != ssl.CERT_NONE
        chain = peer_chain(tls_sock, verified)
        self.tls = TLSInfo.from_session(
            version=tls_sock.version() or "unknown TLS version",
            cipher=cipher_name,
            bits=secret_bits,
            certificate=tls_sock.getpeercert(binary_form=True) or b"",
            verified=verified,
            chain=chain.certificates,
            chain_source=chain.source,
        )
        if self.options.tls.dump and chain.certificates:
            self._dump_chain(chain.certificates)
        return self.tls

    def _dump_chain(self, chain: tuple[bytes, ...]) -> None:
        from mailtalk.net.certchain import write_pem

        try:
            write_pem(self.options.tls.dump or "", chain)
        except OSError as error:
            self.close()
            detail = (error.strerror or str(error)).lower()
            where = self.options.tls.dump
            raise TLSDumpError(f"cannot write --tls-dump {where}: {detail}") from None

    def _describe_timeout(self) -> str:
        _ = self.options.gettext
        if self._timeout is None:
            return _("the time allowed")
        return _("{limit} s (--timeout)").format(limit=f"{self._timeout:g}")

    def _describe_lost_connection(self, error: OSError) -> str:
        _ = self.options.gettext
        if error.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return _("the connection to {server} was closed by the server").format(
                server=self.host)
        if self._closed:
            return _("the connection to {server} is closed").format(server=self.host)
        detail = error.strerror or str(error)
        return _("the connection to {server} failed: {reason}").format(
            server=self.host, reason=detail.lower())


Gettext = Callable[[str], str]


def _describe_resolver_error(error: socket.gaierror, family: int, _: Gettext = str) -> str:
    not_found = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
    if hasattr(socket, "EAI_ADDRFAMILY"):
        not_found.add(socket.EAI_ADDRFAMILY)
    if error.errno in not_found:
        if family == socket.AF_INET6:
            return _("the name has no IPv6 address (-6)")
        if family == socket.AF_INET:
            return _("the name has no IPv4 address (-4)")
        return _("the name does not resolve (DNS lookup failed)")
    if error.errno == socket.EAI_AGAIN:
        return _("the DNS lookup failed for now (no network, or the DNS server did not answer)")
    return _("the DNS lookup failed ({reason})").format(
        reason=(error.strerror or str(error)).lower())


def _describe_connect_error(error: OSError, timeout: float, _: Gettext = str) -> str:
    if isinstance(error, TimeoutError):
        return _("no answer within {limit} s (--timeout)").format(limit=f"{timeout:g}")
    if error.errno in _CONNECT_ERRNO_WORDS:
        return _(_CONNECT_ERRNO_WORDS[error.errno])
    return (error.strerror or str(error)).lower()


def _describe_handshake_error(
    error: ssl.SSLError, where: str, implicit: bool, _: Gettext = str
) -> str:
    reason = error.reason or ""
    if reason in _NOT_TLS_REASONS:
        if implicit:
            return _(
                "the server at {server} did not answer the TLS handshake "
                "(is this port plain text? try without implicit TLS)"
            ).format(server=where)
        return _("the server at {server} did not answer the TLS handshake after STARTTLS"
                 ).format(server=where)
    if isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError) or "EOF" in reason:
        # Some servers hang up without an alert when no version is common, so say it.
        return _(
            "the server at {server} closed the connection during the TLS handshake "
            "(a server that speaks only TLS 1.0/1.1 may do this: try --tls-min 1.0)"
        ).format(server=where)
    if reason in _VERSION_MISMATCH_REASONS:
        return _(
            "the server at {server} offers no TLS version mailtalk accepts "
            "(TLS 1.2 or newer; --insecure also allows TLS 1.0 and 1.1)"
        ).format(server=where)
    if reason in ("SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE"):
        return _("the server at {server} and mailtalk have no TLS cipher in common").format(
            server=where)
    detail = reason.replace("_", " ").lower() or str(error)
    return _("the TLS handshake with {server} failed ({reason})").format(
        server=where, reason=detail)
