"""One live conversation: a transport, a protocol core, a transcript, and who to tell.

This is the engine under both the REPL and the pipe mode. It is synchronous and
single-threaded on purpose: a TLS socket must not be read in one thread while
another writes it, so the REPL watches the socket from prompt_toolkit's event
loop and calls ``receive_available()``, while the pipe mode just blocks in
``wait_final()``. What it says on its own is the protocols' plumbing: the EHLO a step
needs, STARTTLS and the TLS upgrade, Postfix's XCLIENT. Logging in (SASL) is
``client/login.py``, above it.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final, Protocol

from mailtalk.client.options import SessionOptions
from mailtalk.client.transcript import Transcript
from mailtalk.errors import MailtalkError, ServerClosedError, ServerProtocolError, message_of
from mailtalk.exitcodes import ExitCode
from mailtalk.net.transport import (
    Transport,
    TransportError,
    TransportOptions,
    TransportTimeout,
)
from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ClientCore,
    LocalProtocolError,
    RemoteProtocolError,
    ReplyClass,
    ServerEvent,
    escape_bytes,
    first_line,
)

if TYPE_CHECKING:
    from mailtalk.knowledge.explain import Explanation
    from mailtalk.net.target import Target

# Replies that get a one-line explanation under them.
_FAILURE_CLASSES: Final = (ReplyClass.TRANSIENT, ReplyClass.PERMANENT)


class ReplyTimeout(MailtalkError):
    """No reply within --timeout: connected, so not "could not connect" (3) but a
    server that broke off the conversation (5), as ``mailtalk run`` says."""

    exit_code = ExitCode.PROTOCOL


class Listener(Protocol):
    """Who is told what happens: the REPL's screen, or the pipe mode's stdout."""

    def sent(self, text: str, typed: bool) -> None:
        """A line went out; ``typed`` is False for lines mailtalk wrote (:auth, :starttls).

        ``text`` is the line as it may be shown: secrets as *** unless --show-secrets,
        and, for a listener whose ``raw`` is true, the escaped bytes on the wire.
        """

    def event(self, event: ServerEvent, latency: float) -> None: ...

    def note(self, text: str, kind: str = "info") -> None:
        """A message from mailtalk itself; kind is info, tls, warning or error."""

    def closed(self) -> None: ...


def make_core(protocol: str, lmtp: bool = False) -> ClientCore:
    if protocol == "smtp":
        from mailtalk.protocols.smtp_connection import SMTPConnection

        return SMTPConnection(lmtp=lmtp)
    if protocol == "pop3":
        from mailtalk.protocols.pop3 import POP3Connection

        return POP3Connection()
    from mailtalk.protocols.imap import IMAPConnection

    return IMAPConnection()


class Conversation:
    def __init__(self, options: SessionOptions, listener: Listener) -> None:
        self.options = options
        self.target = options.target
        self.listener = listener
        self.core: ClientCore = make_core(self.target.protocol, self.target.lmtp)
        self.transport: Transport | None = None
        self.transcript = Transcript(self.target.url, options.transcript)
        self.closed = True
        self._last_send = time.monotonic()
        self._final_events = 0
        self._events = 0  # every event from the server on this connection
        self.last_final: ServerEvent | None = None
        # The command the next reply answers, for explanations (503 after RCPT
        # means something else than 503 after AUTH): "greeting" until we send.
        self.last_command = "greeting"
        self.last_final_command = "greeting"
        self.last_command_line: str | None = None  # as shown: secrets redacted
        # Several replies due at once (a pipelined batch, LMTP's one per recipient):
        # the final replies not yet waited for, in order, so ``wait_final`` hands out
        # each in turn though one read brought them all; None: one reply at a time.
        self._unread: deque[ServerEvent] | None = None
        self._xclient_due = False
        # The commands of a batch still unanswered, (verb, line as shown), so each
        # reply is explained as the answer to its own command.
        self._in_flight: deque[tuple[str, str]] = deque()
        self.greeting: str | None = None  # the server's first reply, for explanations
        self.explain_inline = True
        # The REPL's choices (the pipe mode and `mailtalk run` leave them off): say
        # "waiting for the greeting…" when it is this many seconds late, and end the
        # connection once QUIT/LOGOUT has its answer, whether or not the server closes.
        self.greeting_patience: float | None = None
        self.close_after_quit = False
        self.ended_by_quit = False  # the connection was closed after QUIT/LOGOUT's answer
        from mailtalk.client.record import SessionRecorder

        self.recorder = SessionRecorder()
        self.recorder.path = options.record

    # -- connection -------------------------------------------------------------

    def open(self) -> None:
        """Connect (and handshake, for implicit TLS); the greeting arrives later."""
        self.core = make_core(self.target.protocol, self.target.lmtp)
        self._events = 0
        self._unread = None
        # --xclient: XCLIENT follows the first EHLO the server answers (wait_answer)
        self._xclient_due = bool(self.options.xclient)
        self._in_flight.clear()
        self.ended_by_quit = False
        self.last_command = "greeting"
        transport_options = TransportOptions(
            timeout=self.options.timeout,
            family=self.options.family,
            insecure=self.options.insecure,
            cafile=self.options.cafile,
            source_address=self.options.source_address,
            server_hostname=self.options.server_hostname,
            resolve=self.options.resolve,
            proxy_from=self.options.proxy_from,
            proxy_version=self.options.proxy_version,
            tls=self.options.tls,
            gettext=self.gettext,
        )
        self._last_send = time.monotonic()
        self.transport = self._connect(transport_options)
        self.closed = False
        self.recorder.connected(self.target.url, self.options.insecure, self.options.cafile)
        _ = self.gettext
        if self.transport.link is not None:
            self._note(_("running {program} (its stdin and stdout, --pipe)").format(
                program=self.transport.peer[0]))
        else:
            peer = self.transport.peer[0] if self.transport.peer else self.target.host
            shown = "" if peer == self.target.display else f" ({peer})"
            self._note(_("connected to {server}").format(server=self.target.display) + shown)
        if self.options.proxy_from is not None and self.transport.link is None:
            where = ":".join(map(str, self.options.proxy_from))
            self._note(_("sent a PROXY v{version} header: client {client}").format(
                version=self.options.proxy_version, client=where))
        if self.transport.tls is not None:
            setattr(self.core, "tls", True)  # noqa: B010 - every core has it; not in the Protocol
            self._note(f"TLS: {self.transport.tls.summary(None, self.gettext)}", "tls")

    @property
    def peer_name(self) -> str:
        """Who answers, in messages: the --pipe program, else the server's host."""
        if self.transport is not None and self.transport.link is not None:
            return self.transport.host  # the program's name, as "sh ended" says it
        return self.target.host

    def _connect(self, transport_options: TransportOptions) -> Transport:
        """The one place a session's connection is made: a program (--pipe), a
        Unix-domain socket (unix:/path) or TCP."""
        implicit_tls = self.target.tls == "implicit"
        if self.options.pipe_command:
            return Transport.spawn(list(self.options.pipe_command), transport_options)
        if self.target.socket_path is not None:
            return Transport.connect_unix(
                self.target.socket_path, transport_options, implicit_tls=implicit_tls
            )
        return Transport.connect(
            self.target.host, self.target.port, transport_options, implicit_tls=implicit_tls
        )

    def start(self) -> None:
        """Connect, wait for the greeting, and start TLS if asked to."""
        self.open()
        self.wait_greeting()
        if self.options.starttls and not self.closed:
            self.starttls()

    def close(self) -> None:
        if self.transport is not None:
            was_open = not self.transport.closed
            self.transport.close()
            self._tell_program_notes()
            status = self.transport.exit_status
            if was_open and self.transport.link is not None and status is not None:
                _ = self.gettext
                how = (_("killed by signal {number}").format(number=-status) if status < 0
                       else _("exit status {status}").format(status=status))
                kind = "info" if status == 0 else "warning"
                self._note(_("{program} ended ({how})").format(
                    program=self.transport.host, how=how), kind)
        self.closed = True

    def _tell_program_notes(self) -> None:
        """What a --pipe program said beside the protocol (stderr, Exim's commentary)."""
        if self.transport is not None:
            for line in self.transport.take_notes():
                self._note(line, "program")

    def reconnect(self) -> None:
        self.close()
        self.start()

    def retarget(self, target: Target) -> None:
        """Leave this server and talk to ``target`` (``:open``), as ``start`` does:
        STARTTLS as its scheme says (submission), the rest of the settings kept; a
        host and port of ``port_moves`` goes to the port it names."""
        moved = {
            (host, port): to for host, port, to in self.options.port_moves
        }.get((target.host.lower().rstrip("."), target.port))
        if moved is not None:
            target = replace(target, port=moved)
        self.close()
        self.options = replace(
            self.options,
            target=target,
            starttls=target.tls == "starttls",
            server_hostname=None,
        )
        self.target = target
        self.start()

    # -- sending ----------------------------------------------------------------

    def send_line(self, line: str, typed: bool = True) -> None:
        if self.closed or self.transport is None:
            raise ServerClosedError(self.gettext("the connection is closed: use :reconnect"))
        shown = self.core.redact(line)
        command = self._command_of(line)
        try:
            data = self.core.send_line(line)
        except LocalProtocolError as error:
            if getattr(self.core, "chunk_left", 0):
                # Too long for what is left of the BDAT chunk: the user's mistake (exit 1,
                # not 5: the server did nothing wrong), and nothing was sent.
                raise MailtalkError(message_of(error, self.gettext)) from None
            raise
        self.recorder.sent(line, shown, self.target.protocol)
        self.transport.send(data)
        self._last_send = time.monotonic()
        if command is not None:
            self.last_command = command
            self.last_command_line = shown
        # Show what went on the wire: with the IMAP tag added, DATA's dot-stuffing;
        # secrets as *** unless --show-secrets.
        wire = data.decode("utf-8", "backslashreplace").removesuffix("\r\n")
        added = wire[: len(wire) - len(line)] if wire.endswith(line) else ""
        told = added + (line if self.options.show_secrets else shown)
        self.transcript.add("C", told)
        if getattr(self.listener, "raw", False):
            # :raw shows the bytes sent as exactly as those received (CRLF and all)
            if told != added + line:
                data = told.encode("utf-8") + data[len(data.rstrip(b"\r\n")) :]
            told = escape_bytes(data)
        self.listener.sent(told, typed)

    def _read_lmtp_replies_in_order(self) -> None:
        """LMTP (and PRDR, after its 353): one reply per recipient is due after the
        message, and one read may bring them all (RFC 2033 4.2): ``wait_final`` hands
        each out in turn."""
        per_recipient = getattr(self.core, "lmtp", False) or getattr(self.core, "prdr", False)
        if per_recipient and self._unread is None:
            self._unread = deque()

    def send_batch(self, items: list[tuple[str, bytes]]) -> None:
        """Several commands in one write (SMTP PIPELINING, RFC 2920): each ``(line,
        octets)`` is a command line and, for a BDAT, its chunk's octets. Their replies
        are then handed out in order by ``wait_final``. Jobs only: no session file
        records it."""
        if self.closed or self.transport is None:
            raise ServerClosedError(self.gettext("the connection is closed: use :reconnect"))
        data = b""
        for line, octets in items:
            data += self.core.send_line(line)
            if octets:
                data += self.core.send_chunk(octets)  # type: ignore[attr-defined]  # SMTP only
        self._unread = self._unread if self._unread is not None else deque()
        self.transport.send(data)
        self._last_send = time.monotonic()
        for line, octets in items:
            shown = self.core.redact(line)
            command = self._command_of(line) or line
            self._in_flight.append((command, shown))
            self.transcript.add("C", shown)
            self.listener.sent(shown, False)
            if octets:
                self.transcript.add("#", f"a chunk of {len(octets)} bytes")
        self.last_command, self.last_command_line = self._in_flight[-1]
        self._note(self.gettext("{count} commands in one write (PIPELINING)").format(
            count=len(items)))

    def send_message(
        self,
        message: bytes,
        progress: Callable[[int], None] | None = None,
        source: str | None = None,
    ) -> None:
        """Send a whole message after 354 (SMTP), dot-stuffed, in chunks."""
        if self.closed or self.transport is None:
            raise ServerClosedError(self.gettext("the connection is closed: use :reconnect"))
        send_message = getattr(self.core, "send_message", None)
        if send_message is None:
            raise MailtalkError(self.gettext(
                "sending a message file only works in SMTP DATA mode"))
        data: bytes = send_message(message)
        self._read_lmtp_replies_in_order()
        chunk = 64 * 1024
        for start in range(0, len(data), chunk):
            self.transport.send(data[start : start + chunk])
            if progress is not None:
                progress(min(start + chunk, len(data)))
        self._last_send = time.monotonic()
        lines = message.count(b"\n") + (0 if message.endswith(b"\n") else 1)
        self.last_command = "end of data"
        if source is not None:
            self.recorder.data_file(source)
        self.transcript.add("#", f"message of {len(message)} bytes, {lines} lines")
        self.transcript.add("C", ".")

    def send_chunk(self, line: str, data: bytes) -> None:
        """An SMTP ``BDAT n [LAST]`` line and its chunk's octets (RFC 3030), in one write."""
        if self.closed or self.transport is None:
            raise ServerClosedError(self.gettext("the connection is closed: use :reconnect"))
        head = self.core.send_line(line)
        body = self.core.send_chunk(data)  # type: ignore[attr-defined]  # SMTP only
        self._read_lmtp_replies_in_order()
        self.transport.send(head + body)  # jobs only: no session file records it
        self._last_send = time.monotonic()
        self.last_command = "BDAT"
        self.last_command_line = line
        self.transcript.add("C", line)
        self.listener.sent(line, False)
        self.transcript.add("#", f"a chunk of {len(data)} bytes")

    def expects_reply(self) -> bool:
        """Whether the server owes an answer now (so the UI should wait for it)."""
        if not self.core.awaiting_reply:
            return False
        # IMAP: a line ended by a LITERAL+ {n+} is not a whole command yet.
        in_command = getattr(self.core, "in_command_continuation", False)
        waiting_plus = getattr(self.core, "awaiting_continuation", False)
        return not (in_command and not waiting_plus)

    # -- receiving --------------------------------------------------------------

    def receive_available(self) -> None:
        """Read what the socket has now, never blocking (the REPL calls this when readable)."""
        if self.transport is None or self.closed:
            return
        while True:
            data = self.transport.recv_nowait()
            if data is None:
                return
            self.feed(data)
            if not data or self.closed or self.transport.pending() == 0:
                return

    def wait_final(self, timeout: float | None = None) -> ServerEvent:
        """Block until the next final reply (or continuation); raises on close/timeout.
        While several are due (after ``send_batch``), each in turn, in order."""
        unread = self._unread
        if unread is not None:
            self._wait_until(lambda: bool(unread), timeout)
            event = unread.popleft()
            if not unread and not self.core.awaiting_reply:
                self._unread = None  # every reply due was read: one at a time again
            return event
        seen = self._final_events
        self._wait_until(lambda: self._final_events != seen, timeout)
        assert self.last_final is not None
        return self.last_final

    def wait_answer(self, timeout: float | None = None) -> ServerEvent:
        """The final reply to what was sent; after LMTP's final dot, every recipient's
        (the last is returned)."""
        event = self.wait_final(timeout)
        while getattr(self.core, "owes_recipient_replies", False) and not self.closed:
            event = self.wait_final(timeout)
        positive = event.reply_class is ReplyClass.POSITIVE
        if self._xclient_due and self.last_final_command == "EHLO" and positive:
            # --xclient: sent once, after the first EHLO the server answered
            self._xclient_due = False
            self.xclient(self.options.xclient)
            return self.last_final or event
        return event

    def wait_greeting(self, timeout: float | None = None) -> None:
        """Block until the server has greeted (IMAP's greeting is untagged, not final)."""
        # Greeted: the core says so, or a first reply came (a 554 refusal is a greeting too).
        greeted = lambda: self.core.state_name != "greeting" or self._events > 0  # noqa: E731
        limit = self.options.timeout if timeout is None else timeout
        patience = self.greeting_patience
        if patience is not None and patience < limit:
            try:
                self._wait_until(greeted, patience)
            except ReplyTimeout:
                self._note(self.gettext(
                    "waiting for the greeting from {server}… (up to {limit} s, --timeout; "
                    "Ctrl-C gives up)").format(server=self.peer_name, limit=f"{limit:g}"))
                self._wait_until(greeted, limit - patience)
        else:
            self._wait_until(greeted, limit)
        if self.closed and self._events == 0:
            # The core leaves "greeting" when the connection closes, greeting or not.
            raise ServerClosedError(self.gettext(
                "{server} closed the connection before greeting").format(server=self.peer_name))

    def _wait_until(self, done: Callable[[], bool], timeout: float | None) -> None:
        if self.transport is None:
            raise ServerClosedError(self.gettext("not connected"))
        limit = self.options.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not done():
            if self.closed:
                raise ServerClosedError(self.gettext(
                    "{server} closed the connection without answering").format(
                        server=self.peer_name))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeout(self.gettext(
                    "no reply from {server} within {limit} s (--timeout)").format(
                        server=self.peer_name, limit=f"{limit:g}"))
            self.transport.set_timeout(remaining)
            try:
                data = self.transport.recv()
            except TransportTimeout:
                continue
            finally:
                if not self.closed:
                    self.transport.set_timeout(self.options.timeout)
            self.feed(data)

    def feed(self, data: bytes) -> None:
        self._tell_program_notes()
        self.core.receive_data(data)
        while True:
            try:
                event = self.core.next_event()
            except RemoteProtocolError as error:
                # Said once, by whoever catches the error (pipe mode's last line, the
                # REPL's note); the listener is not told the server closed: we did.
                self.transcript.add("#", f"the server broke the protocol: {error}")
                self.close()
                raise ServerProtocolError(self.gettext(
                    "the server broke the protocol: {error}").format(
                        error=message_of(error, self.gettext))) from error
            if event is NEED_DATA:
                return
            if event is CONNECTION_CLOSED:
                if not self.closed:
                    self.close()
                    self.transcript.add("#", "connection closed by the server")
                    self.listener.closed()
                return
            assert not isinstance(event, type(NEED_DATA))
            self._events += 1
            if self._events == 1:
                self.greeting = event.raw.decode("utf-8", "backslashreplace").strip()
            latency = time.monotonic() - self._last_send
            self.transcript.add_raw("S", event.raw)
            if event.final:
                if self._in_flight:
                    self.last_command, self.last_command_line = self._in_flight.popleft()
                if self._unread is not None:
                    self._unread.append(event)
                self._final_events += 1
                self.last_final = event
                self.last_final_command = self.last_command
                self.recorder.reply(event.raw, self.target.protocol)
            elif self._events == 1:  # the IMAP greeting is untagged
                self.recorder.reply(event.raw, self.target.protocol)
            self.listener.event(event, latency)
            recipient = getattr(event, "recipient", None)
            if recipient is not None:  # LMTP, PRDR: one reply to the message per recipient
                mode = "LMTP" if getattr(self.core, "lmtp", False) else "PRDR"
                self._note(self.gettext("{mode}: that reply is for <{recipient}>").format(
                    mode=mode, recipient=recipient))
            if self.explain_inline and event.reply_class in _FAILURE_CLASSES:
                self._explain(event)
            if self.core.wants_tls_upgrade:
                self._upgrade()
            if (
                self.close_after_quit
                and event.final
                and self.last_command in ("QUIT", "LOGOUT")
                and not self.core.awaiting_reply
                and not self.closed
            ):
                # The session is over: RFC 5321 4.1.1.10, RFC 1939 6, RFC 3501 6.1.3.
                self.close()
                self.ended_by_quit = True
                self.transcript.add("#", f"connection closed after {self.last_command}")
                self.listener.closed()
                return

    @property
    def events_seen(self) -> int:
        """Events from the server on this connection so far (1: the greeting)."""
        return self._events

    def takes_text(self) -> bool:
        """The next line is content (a message, a chunk, a literal, a SASL answer), not
        a command: an empty line means something there."""
        core = self.core
        return any(
            getattr(core, name, False)
            for name in ("in_data", "in_command_continuation", "sasl_pending")
        )

    def _command_of(self, line: str) -> str | None:
        """The command a line starts, as the explanations name it; None for the
        lines of a message or an IMAP literal, which answer nothing themselves."""
        if getattr(self.core, "sasl_pending", False):
            return "AUTH response"
        if getattr(self.core, "in_data", False):
            return "end of data" if line == "." else None
        if getattr(self.core, "in_command_continuation", False):
            return None
        words = line.split()
        if not words:
            return None
        if self.target.protocol == "imap":
            # "a001 LOGIN ..." or "LOGIN ..." (the core adds the tag)
            verbs = words[1:] if len(words) > 1 and any(c.isdigit() for c in words[0]) else words
            if not verbs:
                return None
            if verbs[0].upper() == "UID" and len(verbs) > 1:
                return verbs[1].upper()
            return verbs[0].upper()
        return words[0].split(":")[0].upper()

    def explain_event(self, event: ServerEvent, command: str | None = None) -> Explanation:
        """The knowledge base's explanation of a reply from this server, knowing its
        greeting (which may name the server software) and, for the last command,
        the whole line (an address's domain tells whether the server handles it)."""
        from mailtalk.knowledge.explain import explain
        from mailtalk.terminal import safe_text

        # explanations quote the reply: its control characters escaped, line by line
        lines = event.raw.decode("utf-8", "backslashreplace").strip("\r\n").split("\n")
        text = "\n".join(safe_text(line.removesuffix("\r")) for line in lines)
        protocol = self.target.protocol
        if command is not None and " " not in command and command == self.last_command:
            command = self.last_command_line or command
        return explain(
            text, protocol, command, banner=self.greeting, language=self.options.language
        )

    def _explain(self, event: ServerEvent) -> None:
        # An untagged reply that comes while a command waits for its answer is part
        # of that answer: IMAP's "* BYE" to LOGOUT is the normal goodbye.
        answering = event.final or self.core.awaiting_reply
        command = self.last_command if answering else None
        explanation = self.explain_event(event, command)
        if explanation.category != "ok":
            self.listener.note(explanation.one_line(), "explain")

    def _upgrade(self) -> None:
        assert self.transport is not None
        try:
            info = self.transport.start_tls()
        except TransportError:
            # The transport closed itself: a failed handshake leaves nothing usable.
            self.closed = True
            self.transcript.add("#", "TLS failed; connection closed")
            raise
        self.core.tls_started()
        self._note(f"TLS: {info.summary(None, self.gettext)}", "tls")

    def _note(self, text: str, kind: str = "info") -> None:
        self.transcript.add("#", text)
        self.listener.note(text, kind)

    def gettext(self, message: str) -> str:
        """``message`` (mailtalk's own words: a note, an error, :help) in the session's
        language, ``options.language``, by the catalogues of ``knowledge/locale``."""
        from mailtalk.knowledge.translation import translation

        return translation(self.options.language).gettext(message)

    # -- conveniences behind the meta-commands -----------------------------------

    def starttls(self) -> None:
        with self.recorder.suspended():
            self._starttls()
        self.recorder.directive("starttls")

    def _starttls(self) -> None:
        protocol = self.target.protocol
        if getattr(self.core, "tls", False):
            raise MailtalkError(self.gettext("TLS is already on"))
        if protocol == "smtp":
            self.ehlo_if_needed()
            if "STARTTLS" not in getattr(self.core, "extensions", {}):
                raise MailtalkError(
                    self.gettext("the server did not offer STARTTLS in its EHLO reply"))
            self.send_line("STARTTLS", typed=False)
        elif protocol == "pop3":
            self.send_line("STLS", typed=False)
        else:
            self.send_line("STARTTLS", typed=False)
        reply = self.wait_final()
        if not getattr(self.core, "tls", False):
            raise MailtalkError(self.gettext("the server refused to start TLS: {reply}").format(
                reply=first_line(reply)))

    def xclient(self, attributes: tuple[tuple[str, str], ...]) -> None:
        """Postfix XCLIENT (``:xclient``): EHLO when not said yet, the attributes checked
        against what the server's XCLIENT offers, XCLIENT, its new 220 greeting, and
        EHLO again (the server forgot the first). Recorded as typed lines."""
        from mailtalk.protocols.xclient import missing_attributes, xclient_line

        if self.target.protocol != "smtp" or getattr(self.core, "lmtp", False):
            raise MailtalkError(self.gettext(
                "XCLIENT is an SMTP command (Postfix): not for this session"))
        if self.closed:
            raise ServerClosedError(self.gettext("the connection is closed: use :reconnect"))
        self.ehlo_if_needed()
        why = missing_attributes(attributes, getattr(self.core, "extensions", {}))
        if why is not None:
            template, values = why
            raise MailtalkError(self.gettext(template).format(**values))
        self.send_line(xclient_line(attributes), typed=False)
        reply = self.wait_final()
        if reply.reply_class is not ReplyClass.POSITIVE:
            raise MailtalkError(self.gettext("XCLIENT refused: {reply}").format(
                reply=first_line(reply)))
        self.ehlo_if_needed()

    def ehlo_if_needed(self) -> None:
        """SMTP: say EHLO unless the server has answered one (after HELO it has told
        us nothing about its extensions)."""
        if not getattr(self.core, "esmtp", False):
            verb = getattr(self.core, "hello_verb", "EHLO")  # LHLO for LMTP
            self.send_line(f"{verb} {client_name()}", typed=False)
            self._expect_positive(self.wait_final(), verb)

    def finish_recording(self) -> str | None:
        """Write the session file if recording; the path written, or None."""
        path = self.recorder.path
        if path is None:
            return None
        self.recorder.write(path)
        self.recorder.path = None
        return path

    def _expect_positive(self, reply: ServerEvent, what: str) -> None:
        if reply.reply_class is not ReplyClass.POSITIVE:
            raise MailtalkError(self.gettext("{command} failed: {reply}").format(
                command=what, reply=first_line(reply)))


def client_name() -> str:
    """The name we give in EHLO: this machine's host name (no DNS lookup: it can hang)."""
    name = socket.gethostname() or "localhost"
    return name if "." in name else f"{name}.local" if name != "localhost" else name
