"""mailtalk's own errors, and how any error becomes one line and an exit status."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailtalk.exitcodes import ExitCode

if TYPE_CHECKING:
    import click


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
    from mailtalk.net.target import TargetError
    from mailtalk.net.transport import CAFileError, ConnectError, TLSError, TransportError
    from mailtalk.protocols.common import ProtocolError

    if isinstance(error, CAFileError | TargetError):
        return ExitCode.USAGE
    if isinstance(error, TLSError):
        return ExitCode.TLS
    if isinstance(error, ConnectError):
        return ExitCode.CONNECT
    if isinstance(error, TransportError | ProtocolError):
        return ExitCode.PROTOCOL
    return ExitCode.FAILED


def is_expected(error: BaseException) -> bool:
    """True for errors whose message is complete in itself (no trace worth offering): a
    ``WordedError`` too (a bad --server, a TLS option), made to be said."""
    from mailtalk.language import WordedError
    from mailtalk.net.transport import TransportError
    from mailtalk.protocols.common import ProtocolError

    return isinstance(
        error, MailtalkError | TransportError | ProtocolError | OSError | WordedError)


def message_of(error: BaseException, gettext: Callable[[str], str] | None = None) -> str:
    """The error's message in the session's language: a protocol core's template (see
    ``ProtocolError``) or a ``WordedError``'s said by ``gettext`` with its values filled
    in; any other error,
    or no ``gettext``, its ``str()``. A translation whose placeholders do not fit the
    values falls back to the English, which is always right (a test checks they fit)."""
    from mailtalk.language import WordedError
    from mailtalk.protocols.common import ProtocolError

    if gettext is not None and isinstance(error, WordedError):
        return error.said(gettext)
    if gettext is None or not isinstance(error, ProtocolError) or not error.template:
        return str(error)
    said = gettext(error.template)
    if said == error.template or not error.values:
        return str(error) if said == error.template else said
    try:
        return said.format(**error.values)
    except (KeyError, IndexError, ValueError, AttributeError):
        return str(error)


def one_line(error: BaseException, gettext: Callable[[str], str] | None = None) -> str:
    """The error as one line: its message (in the session's language when ``gettext``
    is given and the error can say itself in it), or its type when it has none.

    Messages quote what servers said (and certificates, and file names): their
    control characters are escaped, as everywhere mailtalk prints (``safe_text``).
    """
    from mailtalk.terminal import safe_text

    text = " ".join(message_of(error, gettext).split())
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return safe_text(f"{error.strerror.lower()}{':' if where else ''}{where}")
    if not text:
        return type(error).__name__
    if not is_expected(error):
        return safe_text(f"unexpected error: {type(error).__name__}: {text}")
    return safe_text(text)


def click_error_line(
    error: click.ClickException, hint: Callable[[str], str] = "(try '{}')".format
) -> str:
    """A click error (``No such option '--fo'.``, ``Missing argument 'URL'.``) as one
    line worded like mailtalk's own, ending with where to read more when the mistake
    is in how the command was called rather than in one option's value::

        no such option '--fo' (did you mean one of: '--from', '--json', '--to'?) \
        (try 'mailtalk send --help')

    ``hint`` says where to read more (``mailtalk send --help``) in the command's language.
    """
    import click

    from mailtalk.terminal import safe_text

    text = " ".join(error.format_message().split())
    text = re.sub(r"\. Did you mean (.*)$", r" (did you mean \1)", text)
    text = re.sub(r"\.( \(|$)", r"\1", text).replace("(Did you mean", "(did you mean")
    text = re.sub(r"\. ([A-Z][a-z])", lambda word: f"; {word[1].lower()}", text)
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    ctx = error.ctx if isinstance(error, click.UsageError) else None
    value_only = isinstance(error, click.BadParameter) and not isinstance(
        error, click.MissingParameter)
    if ctx is not None and not value_only:
        help_names = ctx.command.get_help_option_names(ctx)
        if ctx.command.get_help_option(ctx) is not None and help_names:
            text += " " + hint(f"{ctx.command_path} {max(help_names, key=len)}")
    return safe_text(text)
