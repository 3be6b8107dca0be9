"""mailtalk's own errors, and how any error becomes one line and an exit status."""

from __future__ import annotations

from mailtalk.exitcodes import ExitCode


class MailtalkError(Exception):
    """An error the user can act on; ``str()`` is the one line we print."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(MailtalkError):
    exit_code = ExitCode.USAGE


class ServerClosedError(MailtalkError):
    exit_code = ExitCode.PROTOCOL


class ServerProtocolError(MailtalkError):
    exit_code = ExitCode.PROTOCOL


class AuthError(MailtalkError):
    """A login that could not even be tried or finished on our side (GSSAPI without
    a Kerberos ticket, or with a server that did not prove its identity)."""

    exit_code = ExitCode.AUTH


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit status of an error, for every command: the one place that decides.

    Could not connect (3) is only for the connection itself (DNS, refused, no answer
    to connecting); once connected, a server that does not answer in time has broken
    the conversation (5), as ``mailtalk run`` has always said; a TLS handshake that
    times out is a TLS failure (4); a --cafile that is no CA file is a bad option (2).
    """
    if isinstance(error, MailtalkError):
        return error.exit_code
    from mailtalk.net.transport import CAFileError, ConnectError, TLSError, TransportError
    from mailtalk.protocols.common import ProtocolError

    if isinstance(error, CAFileError):
        return ExitCode.USAGE
    if isinstance(error, TLSError):
        return ExitCode.TLS
    if isinstance(error, ConnectError):
        return ExitCode.CONNECT
    if isinstance(error, TransportError | ProtocolError):
        return ExitCode.PROTOCOL
    return ExitCode.FAILED


def is_expected(error: BaseException) -> bool:
    """True for errors whose message is complete in itself (no trace worth offering)."""
    from mailtalk.net.transport import TransportError
    from mailtalk.protocols.common import ProtocolError

    return isinstance(error, MailtalkError | TransportError | ProtocolError | OSError)


def one_line(error: BaseException) -> str:
    """The error as one line: its message, or its type when it has none.

    Messages quote what servers said (and certificates, and file names): their
    control characters are escaped, as everywhere mailtalk prints (``safe_text``).
    """
    from mailtalk.terminal import safe_text

    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return safe_text(f"{error.strerror.lower()}{':' if where else ''}{where}")
    if not text:
        return type(error).__name__
    if not is_expected(error):
        return safe_text(f"unexpected error: {type(error).__name__}: {text}")
    return safe_text(text)
