"""The SMTP core's server role (RFC 5321, RFC 3030, RFC 2033): commands in, replies out.

``SMTPServerRole`` reads what a client sends: command lines (a SASL response after
``334`` as one of its own), the message after ``354`` (dot-unstuffed, ended only by
``<CRLF>.<CRLF>``, so a bare LF cannot smuggle a second message in) and the octets
of a BDAT chunk, which are read before the reply to BDAT is due. It stops parsing
after a command the client must wait for the answer to, until that answer is sent;
``send`` formats a reply and moves the session as the client will see it. The events
it hands out are here too, and ``format_reply``. The state and its table are
``protocols/smtp.py``'s, which the client role (``protocols/smtp_client_role.py``)
shares.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    MAX_LINE,
    NEED_DATA,
    SERVER_ROLE,
    LineBuffer,
    LocalProtocolError,
    NoEvent,
    decode_text,
    new_record,
)
from mailtalk.protocols.smtp import (
    AUTH_RESPONSE,
    AUTH_VERBS,
    BARE_PENDING,
    BDAT_ARGS,
    CLOSED_STATE,
    CONNECTED_STATE,
    DATA_STATE,
    END_OF_DATA,
    HELLO_VERB_SET,
    READY_STATE,
    Pending,
    Reply,
    SMTPSessionState,
    rcpt_address,
)

# RFC 5321 4.5.3.1: 512 octets for a command line, 1000 for a text line, CRLF included.
MAX_COMMAND_LINE: Final = 512
MAX_TEXT_LINE: Final = 1000
# After these the client must wait for the server's reply (AUTH: a 334 makes the next
# line SASL data, not a command), so nothing after them is parsed until then.
_PAUSING_VERBS: Final = frozenset({"DATA", "STARTTLS", "BDAT", "AUTH", "QUIT"})

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


# The events are NamedTuples, not frozen dataclasses: see protocols.common.Line.


class Command(NamedTuple):
    """A command line as the server role parsed it."""

    verb: str
    args: str
    raw: bytes
    too_long: bool = False  # over RFC 5321's 512 octets


class MessageData(NamedTuple):
    """Part of the message after ``354``: dot-unstuffed, line ends kept as received.

    Usually one line; a line longer than ``MAX_LINE`` comes in several pieces, only
    the last of which has a line end.
    """

    data: bytes
    line_too_long: bool = False  # a text line over RFC 5321's 1000 octets


class EndOfMessage(NamedTuple):
    """The client sent ``<CRLF>.<CRLF>``.

    ``bare_newline`` says the message held a bare LF (a line ended without CR),
    which Postfix's ``smtpd_forbid_bare_newline`` rejects because it is how SMTP
    smuggling starts.
    """

    bare_newline: bool = False
    raw: bytes = b".\r\n"


class EndOfChunk(NamedTuple):
    """Server role: the last octet of a BDAT chunk came (RFC 3030 2); its reply is due.

    The chunk's octets came before it as ``MessageData``, exactly as sent: BDAT has no
    dot-stuffing and no end-of-data line. ``last`` is BDAT ... LAST: a 2xx to it ends
    the transaction as the reply to DATA's final dot does.
    """

    size: int
    last: bool


class SMTPServerRole(SMTPSessionState):
    """The server role of an SMTP session: see the module docstring."""

    def next_command(self) -> Command | MessageData | EndOfMessage | EndOfChunk | NoEvent:
        """Server role: the next command, piece of message data, or end of message."""
        if self.role is not SERVER_ROLE:
            raise LocalProtocolError("next_command() is for the server role; use next_event()")
        # The parser itself, not a call to it: the session asks twice a command (the
        # command, then NEED_DATA).
        if self._paused:
            return NEED_DATA
        if self._chunk_in is not None:
            return self._next_chunk_data()
        if self.state is DATA_STATE:
            return self._next_data()
        # Nothing buffered (the usual end of a read): no line, without asking for one.
        line = self._buffer.next_line() if self._buffer.buffered else None
        if line is None:
            if self._closed and not len(self._buffer):
                self.state = CLOSED_STATE
                return CONNECTION_CLOSED
            return NEED_DATA
        if self._auth_continuation:
            self._auth_continuation = False
            self._pending.append(Pending(AUTH_RESPONSE))
            return Command(AUTH_RESPONSE, decode_text(line.content), line.raw)
        content = line.content
        raw = content + line.ending  # (line.raw, without the property's call)
        too_long = line.truncated or len(raw) > MAX_COMMAND_LINE
        # (decode_text's decoding and split_verb, without calls for them)
        verb, _, args = content.decode("utf-8", "backslashreplace").strip().partition(" ")
        verb, args = verb.upper(), args.strip()
        bdat = None
        if verb == "BDAT" and self.chunking and not too_long:
            bdat = BDAT_ARGS.fullmatch(args)
        if bdat is not None:
            # RFC 3030 2: the chunk's octets follow at once, whatever the reply will be,
            # so they are read (and handed out) before the reply, never as commands.
            self._pending.append(Pending(verb, last=bool(bdat.group(2))))
            self._chunk_in = self._chunk_size = int(bdat.group(1))
            self._chunk_last = bool(bdat.group(2))
            return Command(verb, args, raw)
        if verb == "MAIL":
            self._recipients = []
        bare = BARE_PENDING.get(verb)
        if bare is not None:
            self._pending.append(bare)
        else:
            address = rcpt_address(args) if verb == "RCPT" else None
            self._pending.append(Pending(verb, address=address))
        if verb in _PAUSING_VERBS:
            self._paused = True
        return new_record(Command, (verb, args, raw, too_long))

    def send(self, event: Reply) -> bytes:
        """Bytes for a reply (server role); moves the state as the client will see it."""
        if self.role is not SERVER_ROLE:
            raise LocalProtocolError("send() of a Reply is for the server role")
        data = event.raw or format_reply(event.code, event.lines, event.enhanced)
        pending = self._pending.popleft() if self._pending else None
        if pending is not None:
            verb = pending.verb
            if verb == "BDAT" and pending.last and event.code // 100 == 2:
                verb = END_OF_DATA  # the message is complete, as after DATA's final dot
            if verb in HELLO_VERB_SET and event.code // 100 == 2:
                self.esmtp = verb != "HELO"
            if verb in AUTH_VERBS:
                if event.code // 100 == 3:
                    self._auth_continuation = True
                elif event.code // 100 == 2:
                    self.authenticated = True
            self._apply(verb, event.code, pending.address)
            if verb == "DATA" and self.state is DATA_STATE:
                self._start_data()
        elif event.code == 421:
            self.state = CLOSED_STATE
        # Parsing resumes once the command that paused it (always the last one parsed)
        # has its reply: the 250 to a MAIL pipelined before DATA is not the 354.
        if not self._pending:
            self._paused = False
        return data

    def _next_chunk_data(self) -> MessageData | EndOfChunk | NoEvent:
        """The octets of the BDAT chunk being read, as they are, then its end."""
        left = self._chunk_in
        assert left is not None
        if left == 0:
            self._chunk_in = None
            if self._chunk_last and self.lmtp and self._recipients and self._pending and (
                self._pending[-1].verb == "BDAT"
            ):
                # LMTP (RFC 2033 4.3): BDAT LAST is answered once per accepted recipient,
                # as DATA's final dot is, whatever the answers are.
                self._pending.pop()
                self._owe_end_of_data()
            # What follows is parsed once the chunk is answered (unless it was already:
            # a server may refuse BDAT before reading its chunk).
            self._paused = bool(self._pending)
            return EndOfChunk(self._chunk_size, self._chunk_last)
        data = self._buffer.take_available(min(left, MAX_LINE))
        if not data:
            if self._closed:
                self._chunk_in = None
                self.state = CLOSED_STATE
                return CONNECTION_CLOSED
            return NEED_DATA
        self._chunk_in = left - len(data)
        return MessageData(data)

    def _owe_end_of_data(self) -> None:
        """The message ended: one reply is owed, or with LMTP one per recipient."""
        recipients, self._recipients = self._recipients, []
        if not self.lmtp or not recipients:
            self._pending.append(BARE_PENDING[END_OF_DATA])
            return
        for address in recipients:
            self._pending.append(Pending(END_OF_DATA, recipient=address))

    def _start_data(self) -> None:
        """354 sent: what the client sent after DATA is the message."""
        self._data_buf = bytearray(self._buffer.take_available(len(self._buffer)))
        self._data_scan = 0
        self._buffer = LineBuffer()
        if self._closed:
            self._buffer.close()
        self._data_prev_crlf = True
        self._data_line_start = True
        self._data_line_len = 0
        self._bare_newline = False
        self._data_by_line = 0

    def _end_data(self) -> None:
        """The message ended: what follows it is commands again."""
        self._paused = True
        self.state = READY_STATE if self.greeted else CONNECTED_STATE
        rest = bytes(self._data_buf)
        self._data_buf = bytearray()
        if rest:
            self._buffer.feed(rest)

    def _next_data(self) -> MessageData | EndOfMessage | NoEvent:
        buf = self._data_buf
        if self._data_line_start and self._data_by_line <= 0:
            chunk = self._next_data_chunk()
            if chunk is not None:
                return chunk
        # A line longer than MAX_LINE comes out in pieces even when its end is here.
        nl = buf.find(b"\n", self._data_scan, MAX_LINE + 1)
        if nl < 0:
            self._data_scan = min(len(buf), MAX_LINE + 1)
            if len(buf) > MAX_LINE:
                # A line longer than any sane one: hand it out in pieces, so memory
                # stays bounded and nothing is lost. A CR at the cut stays, it may
                # be half of the CRLF that ends the line.
                cut = MAX_LINE - 1 if buf[MAX_LINE - 1] == 0x0D else MAX_LINE
                return self._data_piece(bytes(buf[:cut]), b"", cut)
            if self._closed and buf:
                return self._data_piece(bytes(buf), b"", len(buf))
            if self._closed:
                self.state = CLOSED_STATE
                return CONNECTION_CLOSED
            return NEED_DATA
        if nl > 0 and buf[nl - 1] == 0x0D:
            content, ending = bytes(buf[: nl - 1]), b"\r\n"
        else:
            content, ending = bytes(buf[:nl]), b"\n"
        # RFC 5321 4.1.1.4: only <CRLF>.<CRLF> ends the message. A "." line after a
        # bare LF, or ended by a bare LF, is data: that is what defeats smuggling.
        if content == b"." and ending == b"\r\n" and self._data_line_start and self._data_prev_crlf:
            del buf[: nl + 1]
            self._data_scan = 0
            self._owe_end_of_data()
            self._end_data()
            return EndOfMessage(bare_newline=self._bare_newline)
        if ending == b"\n":
            self._bare_newline = True
        return self._data_piece(content, ending, nl + 1)

    def _next_data_chunk(self) -> MessageData | None:
        """Several whole lines in one piece, when none of them needs a look of its own.

        That is: every line ends in CRLF (no bare LF), none starts with a dot (no
        unstuffing, no end of message) and none is over ``MAX_TEXT_LINE``. The chunk
        is then exactly what handing its lines out one by one would give, joined.
        None: hand out the next line alone.
        """
        buf = self._data_buf
        end = buf.rfind(b"\n") + 1  # whole lines only
        if end == 0 or buf[0] == 0x2E:  # no whole line yet, or a dot line first
            return None
        dot = buf.find(b"\n.", 0, end)
        if dot >= 0:
            end = dot + 1  # up to the line that starts with a dot
        chunk = bytes(buf[:end])
        # One pass over the chunk: a bare LF is an LF left in the pieces between CRLFs,
        # and a line of MAX_TEXT_LINE or more (its CR counted) a piece one shorter.
        # (Two count()s and a split() were 3 % of a sink message of 1 KB.)
        pieces = chunk.split(b"\r\n")
        if b"\n" in b"".join(pieces) or (
            end > MAX_TEXT_LINE and max(map(len, pieces)) >= MAX_TEXT_LINE - 1
        ):
            self._data_by_line = end
            return None
        del buf[:end]
        self._data_scan = 0
        self._data_prev_crlf = True  # the chunk's last line ended in CRLF
        return new_record(MessageData, (chunk, False))

    def _data_piece(self, content: bytes, ending: bytes, consumed: int) -> MessageData:
        """Hand out ``consumed`` octets of the message: a line, or a piece of a long one."""
        del self._data_buf[:consumed]
        self._data_scan = 0
        self._data_by_line -= consumed
        stuffed = self._data_line_start and content.startswith(b".")
        if stuffed:
            content = content[1:]  # dot-unstuffing (RFC 5321 4.5.2)
        # RFC 5321 4.5.3.1.6: the stuffed dot does not count towards the line length.
        self._data_line_len += consumed - stuffed
        too_long = self._data_line_len > MAX_TEXT_LINE
        if ending:
            self._data_line_start = True
            self._data_line_len = 0
            self._data_prev_crlf = ending == b"\r\n"
        else:
            self._data_line_start = False
            self._data_prev_crlf = False
        return new_record(MessageData, (content + ending, too_long))


def format_reply(
    code: int, lines: tuple[str, ...] | list[str], enhanced: str | None = None
) -> bytes:
    """``250-first``/``250 last`` lines for a reply, the enhanced code on each line."""
    if len(lines) == 1:
        # The usual reply, one line with no line break: what the loop below makes of it.
        text = lines[0]
        if "\n" not in text and "\r" not in text:
            if enhanced and not text.startswith(enhanced):
                text = f"{enhanced} {text}"
            if not text and code == 334:
                return b"334 \r\n"  # RFC 4954 4: "334" SP, even with no challenge
            return f"{code} {text}".rstrip().encode("utf-8") + b"\r\n"
    # A line break inside a text would start a reply line of its own, with no code.
    lines = [part for text in lines for part in _LINE_BREAK.split(text)] or [""]
    out = bytearray()
    for index, text in enumerate(lines):
        separator = " " if index == len(lines) - 1 else "-"
        body = f"{enhanced} {text}" if enhanced and not text.startswith(enhanced) else text
        out += f"{code}{separator}{body}".rstrip().encode("utf-8") + b"\r\n"
    return bytes(out)
