"""The SMTP core's client role (RFC 5321, RFC 3030, RFC 2033): commands out, replies in.

``SMTPClientRole`` checks and writes what the user or a sequence sends (commands,
the message after ``354`` dot-stuffed, BDAT chunks as they are, SASL responses
after ``334``), says which commands are valid next and what to type, and reads
the server's replies: multi-line replies joined into one ``Reply`` with their
enhanced status code, each matched to the command it answers, and with LMTP or
PRDR the replies owed per recipient after the message. The state and its table
are ``protocols/smtp.py``'s, which the server role
(``protocols/smtp_server_role.py``) shares.
"""

from __future__ import annotations

import re
from typing import Final

from mailtalk.protocols.common import (
    CLIENT_ROLE,
    CONNECTION_CLOSED,
    NEED_DATA,
    LocalProtocolError,
    NoEvent,
    RemoteProtocolError,
    decode_text,
    peer_text,
    redact_mistyped_login,
    split_verb,
)
from mailtalk.protocols.smtp import (
    AUTH_RESPONSE,
    AUTH_VERBS,
    BDAT_ARGS,
    CLOSED_STATE,
    CONNECTED_STATE,
    DATA_STATE,
    END_OF_DATA,
    EXTENSION_OF_COMMAND,
    HELLO_VERB_SET,
    HINTS,
    KNOWN_VERBS,
    PRDR_START,
    READY_STATE,
    VALID_COMMANDS,
    Pending,
    Reply,
    SMTPSessionState,
    rcpt_address,
)

# An endless multi-line reply is cut after this many lines (the rest is dropped).
MAX_REPLY_LINES: Final = 1000
_NOT_IN_MODE: Final = {False: ("LHLO",), True: ("EHLO", "HELO")}

_ENHANCED = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_REPLY_LINE = re.compile(rb"^(\d{3})([ -]|$)")


def parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper-cased) mapped to their parameters, from a 250 EHLO reply."""
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if not keyword:
            continue
        keyword = keyword.upper()
        # "AUTH=LOGIN PLAIN" is how some old servers (and Outlook) spell AUTH.
        if keyword.startswith("AUTH="):
            old = keyword[5:] + (" " + params if params else "")
            extensions.setdefault("AUTH", old.strip())
            continue
        extensions[keyword] = params.strip()
    return extensions


def dot_stuff(message: bytes) -> bytes:
    """A message ready for DATA: CRLF line ends, leading dots doubled, ``.`` line at the end."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    lines = text.split(b"\n")[:-1] if text else []
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."
        out += line + b"\r\n"
    out += b".\r\n"
    return bytes(out)


class SMTPClientRole(SMTPSessionState):
    """The client role of an SMTP session: see the module docstring."""

    # Client role only, class defaults until set: CPython 3.11 keeps at most 30 of an
    # instance's attributes in the compact form instances of a class share (more, and
    # every session, server role too, gets a dict of its own, made and grown).
    # Octets of a BDAT chunk still to send before its reply is due:
    _chunk_left = 0
    # The transaction's MAIL carried PRDR, so a 353 to the final dot starts
    # per-recipient replies:
    _prdr = False

    @property
    def owes_recipient_replies(self) -> bool:
        """LMTP or PRDR, client role: more replies to the message are due, one per
        recipient (and with PRDR the final one after them)."""
        if not self._pending:
            return False
        pending = self._pending[0]
        return pending.recipient is not None or pending.after_recipients

    @property
    def prdr(self) -> bool:
        """Client role: the transaction's MAIL FROM asked for PRDR."""
        return self._prdr

    def next_event(self) -> Reply | NoEvent:
        """Client role: the next reply from the server."""
        if self.role is not CLIENT_ROLE:
            raise LocalProtocolError("next_event() is for the client role; use next_command()")
        return self._next_reply()

    def send_line(self, line: str) -> bytes:
        """Bytes for a line the user typed, CRLF added; tracks what it expects back."""
        if self.role is not CLIENT_ROLE:
            raise LocalProtocolError("send_line() is for the client role")
        if self.state is CLOSED_STATE:
            raise LocalProtocolError("the SMTP session is closed")
        if self.state is DATA_STATE:
            return self._send_data_line(line)
        if self._chunk_left:
            return self._send_chunk_line(line)
        if self._auth_continuation:
            self._auth_continuation = False
            self._pending.append(Pending(AUTH_RESPONSE))
            return line.encode("utf-8") + b"\r\n"
        verb, rest = split_verb(line)
        bdat = BDAT_ARGS.fullmatch(rest) if verb == "BDAT" else None
        address = rcpt_address(rest) if verb == "RCPT" else None
        if verb == "MAIL":
            self._recipients = []
            self._prdr = "PRDR" in rest.upper().split()[1:]
        self._pending.append(Pending(verb, last=bool(bdat and bdat.group(2)), address=address))
        if bdat is not None:
            self._chunk_left = int(bdat.group(1))
        return line.encode("utf-8") + b"\r\n"

    def _send_chunk_line(self, line: str) -> bytes:
        """A line of a BDAT chunk: exactly its octets and CRLF, nothing stuffed."""
        data = line.encode("utf-8") + b"\r\n"
        if len(data) > self._chunk_left:
            raise LocalProtocolError(
                "the BDAT chunk has {left} bytes left and this line is {size} "
                "with its CRLF: not sent", left=self._chunk_left, size=len(data)
            )
        self._chunk_left -= len(data)
        return data

    def send_chunk(self, data: bytes) -> bytes:
        """Octets of the BDAT chunk just announced, as they are (RFC 3030: no stuffing)."""
        if self.role is not CLIENT_ROLE:
            raise LocalProtocolError("send_chunk() is for the client role")
        if len(data) > self._chunk_left:
            raise LocalProtocolError(
                "the BDAT chunk has {left} bytes left, not {size}",
                left=self._chunk_left, size=len(data)
            )
        self._chunk_left -= len(data)
        return data

    @property
    def chunk_left(self) -> int:
        """Octets of the BDAT chunk still to send; its reply comes after the last of them."""
        return self._chunk_left

    @property
    def in_command_continuation(self) -> bool:
        """The next line belongs to the command just sent (a BDAT chunk), not a new one."""
        return self._chunk_left > 0

    def send_message(self, message: bytes) -> bytes:
        """A whole message for DATA (after 354): CRLF, dot-stuffed, ended by ``.``."""
        if self.state is not DATA_STATE:
            raise LocalProtocolError("a message can only be sent after 354")
        self._pending.append(Pending(END_OF_DATA))
        self.state = READY_STATE if self.greeted else CONNECTED_STATE
        return dot_stuff(message)

    def _send_data_line(self, line: str) -> bytes:
        if line == ".":
            self._pending.append(Pending(END_OF_DATA))
            self.state = READY_STATE if self.greeted else CONNECTED_STATE
            return b".\r\n"
        encoded = line.encode("utf-8")
        if encoded.startswith(b"."):
            encoded = b"." + encoded
        return encoded + b"\r\n"

    @property
    def in_data(self) -> bool:
        return self.state is DATA_STATE

    @property
    def auth_continuation(self) -> bool:
        """The server sent 334: the next line is the client's SASL response."""
        return self._auth_continuation

    @property
    def sasl_pending(self) -> bool:
        """Same as ``auth_continuation``; the name the POP3 and IMAP cores use."""
        return self._auth_continuation

    def redact(self, line: str) -> str:
        if self._auth_continuation and self.state is not DATA_STATE:
            return "***" if line.strip() != "*" else line
        if self.state is DATA_STATE or self._chunk_left:
            return line
        verb, rest = split_verb(line)
        if verb == "AUTH":
            mechanism, _, initial = rest.partition(" ")
            if initial.strip():
                return f"{line.split()[0]} {mechanism} ***"
        return redact_mistyped_login(line, KNOWN_VERBS)

    def valid_commands(self) -> list[str]:
        commands = []
        for verb in VALID_COMMANDS[self.state]:
            if verb in _NOT_IN_MODE[self.lmtp]:
                continue
            needed = EXTENSION_OF_COMMAND.get(verb)
            if needed is not None:
                if needed not in self.extensions:
                    continue
                if verb == "STARTTLS" and self.tls:
                    continue
                if verb == "AUTH" and self.authenticated:
                    continue
            commands.append(verb)
        return commands

    def next_hint(self) -> str:
        if self._auth_continuation:
            return "the base64 answer to the server's 334 challenge (* cancels)"
        if self._chunk_left:
            return f"the chunk: {self._chunk_left} more bytes (each line end counts 2)"
        hint = HINTS[self.state]
        if self.lmtp and self.state is CONNECTED_STATE:
            hint = "LHLO your.host.name (LMTP's EHLO)"
        if self.state is READY_STATE:
            extra = []
            if "STARTTLS" in self.extensions and not self.tls:
                extra.append("STARTTLS")
            if "AUTH" in self.extensions and not self.authenticated:
                extra.append("AUTH " + (self.auth_mechanisms[0] if self.auth_mechanisms else ""))
            if extra:
                hint = " or ".join(e.strip() for e in extra) + ", then " + hint
        return hint

    def _next_reply(self) -> Reply | NoEvent:
        while True:
            line = self._buffer.next_line()
            if line is None:
                if self._closed and not len(self._buffer):
                    if self._reply_lines:
                        # Show what did come; the close itself follows as its own event.
                        return self._finish_reply(incomplete=True)
                    self.state = CLOSED_STATE
                    self._pending.clear()
                    self._chunk_left = 0
                    return CONNECTION_CLOSED
                return NEED_DATA
            match = _REPLY_LINE.match(line.content)
            if match is None:
                raise RemoteProtocolError("not an SMTP reply line: {text}",
                                          text=peer_text(line.content))
            if self._reply_lines and match.group(1) != self._reply_lines[0][:3]:
                raise RemoteProtocolError(
                    "a multi-line reply changed its code from {first} to {then}",
                    first=decode_text(self._reply_lines[0][:3]),
                    then=decode_text(match.group(1)),
                )
            self._reply_count += 1
            if line.truncated:
                self._reply_cut = True
            if self._reply_count <= MAX_REPLY_LINES:
                self._reply_lines.append(line.raw)
            else:
                self._reply_cut = True
            if match.group(2) == b"-":
                continue
            return self._finish_reply()

    def _finish_reply(self, incomplete: bool = False) -> Reply:
        raw_lines = self._reply_lines
        truncated = self._reply_cut
        self._reply_lines = []
        self._reply_count = 0
        self._reply_cut = False
        code = int(raw_lines[0][:3])
        texts = []
        for raw in raw_lines:
            text = raw[4:].rstrip(b"\r\n")
            texts.append(decode_text(text))
        enhanced_match = _ENHANCED.match(raw_lines[0][4:])
        enhanced = None
        if enhanced_match and enhanced_match.group(1) == str(code // 100).encode():
            enhanced = decode_text(enhanced_match.group(0))
        pending = self._pending.popleft() if self._pending else None
        verb = pending.verb if pending else None
        after_last_chunk = pending is not None and pending.last and verb == "BDAT"
        prdr_start = self._prdr and code == PRDR_START
        if after_last_chunk and (code // 100 == 2 or self.lmtp or prdr_start):
            # The message is complete, as after DATA's final dot (LMTP answers BDAT
            # LAST per recipient whatever the answer, RFC 2033 4.3).
            shown_verb, verb = verb, END_OF_DATA
        else:
            shown_verb = verb
        recipient = None
        if self.lmtp and verb == END_OF_DATA and pending is not None:
            recipient = self._lmtp_recipient(pending, code)
        elif verb == END_OF_DATA and pending is not None:
            recipient = pending.recipient
            if recipient is None and prdr_start and not pending.after_recipients:
                self._owe_prdr_replies()
        reply = Reply(
            code=code,
            lines=tuple(texts),
            enhanced=enhanced,
            raw=b"".join(raw_lines),
            command=shown_verb,
            truncated=truncated,
            incomplete=incomplete,
            recipient=recipient,
        )
        if verb is not None:
            self._client_apply(verb, reply, pending.address if pending else None)
        elif code == 421:
            self.state = CLOSED_STATE
        return reply

    def _lmtp_recipient(self, pending: Pending, code: int) -> str | None:
        """LMTP: the recipient a reply to the end of the message is for. The first of
        those replies queues one more for each further accepted recipient (not
        after a 421: the server is closing)."""
        if pending.recipient is not None:
            return pending.recipient
        recipients, self._recipients = self._recipients, []
        if not recipients:
            return None
        if code != 421:
            for address in reversed(recipients[1:]):
                self._pending.appendleft(Pending(END_OF_DATA, recipient=address))
        return recipients[0]

    def _owe_prdr_replies(self) -> None:
        """PRDR's 353 came: one reply per accepted recipient is due, then the final one."""
        recipients, self._recipients = self._recipients, []
        self._pending.appendleft(Pending(END_OF_DATA, after_recipients=True))
        for address in reversed(recipients):
            self._pending.appendleft(Pending(END_OF_DATA, recipient=address))

    def _client_apply(self, verb: str, reply: Reply, address: str | None = None) -> None:
        digit = reply.code // 100
        if verb in HELLO_VERB_SET and digit == 2:
            self.esmtp = verb != "HELO"
            self.extensions = parse_extensions(reply) if verb != "HELO" else {}
        if verb in AUTH_VERBS:
            if digit == 3:
                self._auth_continuation = True
            elif digit == 2:
                self.authenticated = True
        self._apply(verb, reply.code, address)
