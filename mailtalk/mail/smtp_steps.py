"""What ``send``, ``mx --probe`` and ``diagnose`` share to talk SMTP: the sequence, driven.

The SMTP client sequence itself is ``mailtalk.protocols.smtp_sequence`` (sans-IO,
shared with the reference server's onward delivery); ``drive()`` runs it over the
live-session engine (``client.conversation.Conversation``: one blocking
connection, every line shown to its listener, TLS started as the server's yes to
STARTTLS comes in). Around it, what the one-shot jobs say and check alike:

* ``Listener``, the ``C:``/``S:`` printer (or the JSON lines of ``--json``);
* ``SendFailed``, a server's refusal as an error, and ``refusal_error()``, which
  words each stage's refusal the one way;
* ``split_address()``, ``local@domain`` checked; ``password_for()``, the AUTH
  password or a clear error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from mailtalk.errors import MailtalkError, UsageError
from mailtalk.exitcodes import ExitCode
from mailtalk.language import N_
from mailtalk.protocols.common import LocalProtocolError, ReplyClass, ServerEvent, first_line
from mailtalk.protocols.smtp import GREETING, Reply
from mailtalk.protocols.smtp_plan import (
    Authenticate,
    Await,
    Batch,
    Chunk,
    Command,
    Done,
    Drop,
    Message,
    Quit,
    Refusal,
    Result,
    Stage,
    StartTLS,
)
from mailtalk.protocols.smtp_sequence import ClientSequence
from mailtalk.terminal import WRAPPED_NOTES, safe_text, wrap_words

if TYPE_CHECKING:
    from mailtalk.client import conversation
    from mailtalk.client.options import SessionOptions

# How long a goodbye may take: QUIT's reply changes nothing.
QUIT_PATIENCE = 5.0


class SendFailed(MailtalkError):
    """A server refused; ``temporary`` says whether another MX may do better."""

    def __init__(self, message: str, temporary: bool, exit_code: ExitCode = ExitCode.FAILED):
        super().__init__(message)
        self.temporary = temporary
        self.exit_code = exit_code


class PartlyDelivered(SendFailed):
    """LMTP or PRDR: the server answered each recipient on its own, and some did not
    get the message (refused at RCPT, or after the final dot); ``delivered`` did."""

    def __init__(
        self,
        delivered: list[str],
        refused: list[tuple[str, Reply]],
        mode: str = "LMTP",
        gettext: Callable[[str], str] = str,
    ):
        if len(refused) == 1:
            said = first_line(refused[0][1])
        else:
            said = "; ".join(f"{rcpt}: {first_line(reply)}" for rcpt, reply in refused)
        temporary = all(reply.reply_class is ReplyClass.TRANSIENT for _, reply in refused)
        super().__init__(gettext("not delivered ({mode}): {refusals}").format(
            mode=mode, refusals=said), temporary)
        self.delivered = delivered
        self.refused = refused


def split_address(
    address: str, what: str, gettext: Callable[[str], str] = str
) -> tuple[str, str]:
    """``local@domain`` checked: one readable UsageError for anything else, in the
    language of ``gettext``."""
    from mailtalk.net.mx import ascii_domain

    _ = gettext
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or any(c in text for c in " <>\r\n\t,;"):
        raise UsageError(_("{option} {address!r} is not an address like name@example.org")
                         .format(option=what, address=address))
    try:
        ascii_domain(domain, _)
    except ValueError as error:
        raise UsageError(f"{what} {address!r}: {error}") from None
    return local, domain


def has_ticket_for(user: str) -> bool:
    """Whether a Kerberos ticket of ``user`` is at hand (``alice`` or
    ``alice@EXAMPLE.ORG`` for alice@EXAMPLE.ORG's): only then may ``auto`` choose
    GSSAPI (send, diagnose login), which never asks for a password. Local: no KDC is
    asked."""
    from mailtalk.net.gssapi import ticket_principal

    principal = ticket_principal()
    if principal is None or not user:
        return False
    return user == principal.rpartition("@")[0] or user.lower() == principal.lower()


def password_for(user: str, host: str, gettext: Callable[[str], str] = str) -> str:
    """The AUTH password (``$MAILTALK_PASSWORD``, ``~/.netrc``, or asked), or SendFailed."""
    from mailtalk.client.credentials import find_password

    secret = find_password(host, user)
    if secret:
        return secret
    _ = gettext
    raise SendFailed(
        _("no password for {user}: set MAILTALK_PASSWORD, add {host} to ~/.netrc, or run "
          "on a terminal to be asked").format(user=user, host=host),
        temporary=False,
        exit_code=ExitCode.AUTH,
    )


@dataclass
class Listener:
    """Shows the conversation (``C:``/``S:`` lines, notes, explanations) or keeps it
    for --json."""

    out: TextIO
    as_json: bool
    started: float = field(default_factory=time.monotonic)
    lines: list[dict[str, object]] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)  # the SMTP extensions used
    # The server's TLS chain (net.certchain.chain_json) of the last conversation that
    # used TLS, for --json; None: no TLS
    peer_chain: dict[str, object] | None = None
    # the language of the notes (the job's; English for --json)
    gettext: Callable[[str], str] = field(default=str, repr=False)
    width: int = 80  # notes and explanations are wrapped to it (Environment.width)

    def keep_peer_chain(self, conv: conversation.Conversation) -> None:
        """Keep the chain of ``conv``'s TLS session (for --json only: describing it
        reads every certificate)."""
        tls = conv.transport.tls if conv.transport is not None else None
        if not self.as_json or tls is None or not tls.chain:
            return
        from mailtalk.net.certchain import chain_json, describe_session_chain

        host = conv.transport.server_hostname if conv.transport is not None else None
        reports = describe_session_chain(tls.chain, tls.verified, host, conv.options.cafile)
        self.peer_chain = chain_json(reports, tls.chain_source)

    def _line(self, direction: str, text: str, wrapped: bool = False) -> None:
        text = safe_text(text)  # the server's words, in JSON too: never a raw control
        if self.as_json:
            self.lines.append(
                {"t": round(time.monotonic() - self.started, 6), "dir": direction, "text": text}
            )
            return
        prefix = {"C": "C: ", "S": "S: ", "#": "# ", "explain": "  ↳ "}[direction]
        if not wrapped:
            self.out.write(prefix + text + "\n")
            return
        # mailtalk's long sentences to the width, a "# " note's continuation still one
        rest = "#   " if direction == "#" else "    "
        for line in wrap_words(text, self.width, prefix, rest):
            self.out.write(line + "\n")
        self.out.flush()

    def sent(self, text: str, typed: bool) -> None:
        self._line("C", text)

    def event(self, event: ServerEvent, latency: float) -> None:
        text = event.raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
        for part in text.split("\n"):
            self._line("S", part.removesuffix("\r"))

    def note(self, text: str, kind: str = "info") -> None:
        self._line("explain" if kind == "explain" else "#", text, kind in WRAPPED_NOTES)

    def closed(self) -> None:
        self._line("#", self.gettext("the server closed the connection"))


def job_conversation(
    options: SessionOptions, listener: conversation.Listener, explain: bool = False
) -> conversation.Conversation:
    """A live conversation for a one-shot job: no session file recorded, and a lesson
    under each refusal only when ``explain`` (send without --brief)."""
    from mailtalk.client.conversation import Conversation

    conv = Conversation(options, listener)
    conv.recorder.enabled = False
    conv.explain_inline = explain
    return conv


def drive(
    conv: conversation.Conversation,
    sequence: ClientSequence,
    authenticate: Callable[[Authenticate], ServerEvent] | None = None,
    message: Callable[[], None] | None = None,
    chunk: Callable[[Chunk], None] | None = None,
    chunk_octets: Callable[[Chunk], bytes] | None = None,
) -> Result:
    """Run ``sequence`` over ``conv`` (connected, the sequence made on its core).

    ``authenticate`` runs the SASL exchange when the plan asks for AUTH and returns
    the final reply; ``message`` sends the message after the server's 354, ``chunk``
    one BDAT chunk of it (CHUNKING); ``chunk_octets`` gives a chunk's octets for a
    pipelined ``Batch`` (PIPELINING: its commands in one write, the replies handed
    to the sequence in order). Trouble
    with the connection (closed, no reply in time, TLS) is raised as the
    conversation raises it; what came before is in ``sequence.result``.
    """
    reply: ServerEvent | None
    while True:
        action = sequence.next_action()
        match action:
            case Command(line=line):
                conv.send_line(line)
                reply = conv.wait_final()
            case Await(answering=answering):
                if answering == GREETING:
                    conv.wait_greeting()
                    reply = conv.last_final
                else:  # LMTP: the next recipient's reply to the message
                    reply = conv.wait_final()
            case Done(result=result):
                return result
            case StartTLS():
                continue  # the conversation started TLS as the server's yes came in
            case Authenticate():
                if authenticate is None:
                    raise LocalProtocolError("the plan asks for AUTH and nobody can answer")
                reply = authenticate(action)
            case Message():
                if message is None:
                    raise LocalProtocolError("the plan goes on to DATA and has no message")
                message()
                reply = conv.wait_final()
            case Chunk():
                if chunk is None:
                    raise LocalProtocolError("the plan sends BDAT chunks and has no message")
                chunk(action)
                reply = conv.wait_final()
            case Batch(items=items):
                send_batch(conv, items, chunk_octets)
                for _ in items:
                    sequence.receive(_reply(conv.wait_final()))
                    if sequence.result.closing:
                        break  # a 421: the rest of the replies never come
                continue
            case Quit():
                quit_politely(conv)
                continue
            case Drop():
                drop(conv)
                continue
            case _:
                raise LocalProtocolError("no way to do {action!r}", action=action)
        sequence.receive(_reply(reply))


def _reply(event: ServerEvent | None) -> Reply:
    if not isinstance(event, Reply):
        raise LocalProtocolError("an SMTP conversation gave {event!r}", event=event)
    return event


def send_batch(
    conv: conversation.Conversation,
    items: tuple[Command | Chunk, ...],
    chunk_octets: Callable[[Chunk], bytes] | None,
) -> None:
    """A Batch's commands (and a BDAT chunk's octets) in one write."""
    lines: list[tuple[str, bytes]] = []
    for item in items:
        if isinstance(item, Chunk):
            if chunk_octets is None:
                raise LocalProtocolError("the plan pipelines a BDAT chunk and has no message")
            lines.append((item.line, chunk_octets(item)))
        else:
            lines.append((item.line, b""))
    conv.send_batch(lines)


def quit_politely(conv: conversation.Conversation) -> None:
    """QUIT, and a short wait for the reply: a goodbye that fails changes nothing."""
    if conv.closed:
        return
    with contextlib.suppress(Exception):
        conv.send_line("QUIT")
        conv.wait_final(timeout=QUIT_PATIENCE)


def drop(conv: conversation.Conversation) -> None:
    """Close the connection without QUIT, as a client that crashed would (the server
    sees the end of the stream, and a message in DATA is never delivered)."""
    if conv.closed:
        return
    conv.close()
    conv.listener.note(conv.gettext("connection closed without QUIT (dropped)"))


# What each stage's refusal says (its reply fills {reply}).
_REFUSED = {
    Stage.CONNECT: N_("the greeting refused: {reply}"),
    Stage.EHLO: N_("EHLO refused: {reply}"),
    Stage.TLS: N_("EHLO after STARTTLS refused: {reply}"),
    Stage.MAIL: N_("MAIL FROM refused: {reply}"),
    Stage.RCPT: N_("RCPT TO refused: {reply}"),
    Stage.DATA: N_("DATA refused: {reply}"),
    Stage.MESSAGE: N_("the message refused: {reply}"),
}


def refusal_error(
    refusal: Refusal, result: Result, gettext: Callable[[str], str] = str
) -> MailtalkError:
    """A refused stage as the error the jobs raise: ``SendFailed`` (``temporary`` for a
    4xx: another MX may do better), or for STARTTLS what ``:starttls`` says; in the
    language of ``gettext``."""
    _ = gettext
    reply = refusal.reply
    if reply is None and refusal.missing is not None:
        return SendFailed(refusal.said_reason(_), temporary=False)
    if reply is None:
        return MailtalkError(_("the server did not offer STARTTLS in its EHLO reply"))
    said = first_line(reply)
    if refusal.verb == "XCLIENT":
        return SendFailed(_("XCLIENT refused: {reply}").format(reply=said), temporary=False)
    if refusal.verb == "STARTTLS":
        return MailtalkError(_("the server refused to start TLS: {reply}").format(reply=said))
    if refusal.stage is Stage.AUTH:
        return SendFailed(
            _("authentication refused: {reply}").format(reply=said),
            temporary=False,
            exit_code=ExitCode.AUTH,
        )
    if refusal.stage is Stage.RCPT and not result.accepted and not result.closing:
        temporary = all(
            r.reply_class is ReplyClass.TRANSIENT
            for _, r in result.recipients
            if r.reply_class is not ReplyClass.POSITIVE
        )
        return SendFailed(_("every recipient refused: {reply}").format(reply=said), temporary)
    temporary = reply.reply_class is ReplyClass.TRANSIENT
    return SendFailed(_(_REFUSED[refusal.stage]).format(reply=said), temporary)
