"""Write an interactive session down as a session file (``:record``, ``--record``).

The conversation is kept as script lines from the moment of connecting, so
``:record FILE`` in the middle of a session still writes a file that replays from
the start. Replies become expectations on their codes (``S: 250``, ``S: +OK``,
``S: NO``); ``:starttls`` and ``:auth`` become the ``starttls`` and ``auth``
directives. Secrets are never written:

- a typed password (POP3 ``PASS``, IMAP ``LOGIN``'s) becomes
  ``${MAILTALK_PASSWORD}``, the one name ``:auth``, pipe mode and ``mailtalk run``
  read it from;
- a typed SASL exchange (``AUTH PLAIN``/``AUTH LOGIN`` in SMTP and POP3,
  ``AUTHENTICATE PLAIN``/``LOGIN`` in IMAP, with or without an initial response)
  becomes the ``auth plain|login USER`` directive once it succeeds, as ``:auth``
  does: the user name is read from the exchange, the password stays out, and the
  replay computes the answers again. A failed exchange becomes a comment (as a
  failed ``:auth`` does), and one that cannot be replayed (another mechanism, an
  authorization identity) a comment that says so;
- ``APOP``'s digest depends on the greeting, so the command is left out with a
  comment saying so.

``$`` in what was typed is written ``$$``, so a replay sends it as it was. The file
is written whole, through a temporary file and a rename, when recording stops.
"""

from __future__ import annotations

import binascii
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from mailtalk.knowledge.replies import parse
from mailtalk.terminal import safe_text

_SECRET_MARK = "***"
PASSWORD_VARIABLE: Final = "MAILTALK_PASSWORD"
_REPLAYABLE: Final = ("PLAIN", "LOGIN")


@dataclass
class _Exchange:
    """A SASL exchange typed by hand, kept until its final reply says how it went."""

    mechanism: str
    lines: list[str] = field(default_factory=list)  # as they would be written, no secret
    user: str | None = None
    unreplayable: str | None = None  # why auth MECH USER cannot stand for it
    answers: int = 0  # client responses so far (the initial one included)
    secret_answers: int = 0  # those that were not the protocol's cancel (*)


# Until :record starts, the lines are kept only in case it does: at most this many
# (the connect line and the latest ones), so a server flooding the client with
# replies costs bounded memory. While recording, every line is kept for the file.
MAX_UNRECORDED_LINES: Final = 10_000


class SessionRecorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.path: str | None = None
        self.secrets: list[str] = []
        self._suspended = 0
        self._exchange: _Exchange | None = None
        self._left_out = False  # the command just sent was left out: so is its reply
        # `mailtalk run` turns it off: a replay needs no record of itself
        self.enabled = True
        self.dropped = 0  # lines let go before recording began

    def _keep(self, line: str) -> None:
        self.lines.append(line)
        if self.path is None and len(self.lines) > MAX_UNRECORDED_LINES:
            # the connect line stays; the oldest half of the rest goes, at once
            cut = len(self.lines) - MAX_UNRECORDED_LINES // 2
            del self.lines[1:cut]
            self.dropped += cut - 1

    # -- what the conversation tells it ----------------------------------------

    def connected(self, url: str, insecure: bool = False, cafile: str | None = None) -> None:
        self._end_exchange("the connection ended")
        options = " insecure" if insecure else ""
        if cafile:
            options += f" cafile={_dollars(os.path.abspath(cafile))}"
        self._keep(f"connect {_dollars(url)}{options}")

    def sent(self, line: str, shown: str, protocol: str) -> None:
        if self._suspended or not self.enabled:
            return
        self._left_out = False
        if self._exchange is not None:
            # until its final reply, every line belongs to the exchange: even one typed
            # before the server asked for it is never written
            self._answer(self._exchange, line)
            return
        verb, arguments = _verb(line, protocol)
        if verb in ("AUTH", "AUTHENTICATE") and arguments:
            self._start_exchange(line, arguments, protocol)
            return
        if verb == "APOP" and protocol == "pop3":
            self.comment(
                "APOP was sent here: its digest depends on the server's greeting, so it "
                "cannot be replayed (USER/PASS or auth plain|login USER can)"
            )
            self._left_out = True
            return
        written = _dollars(shown)
        if shown != line:
            written = self._variable_for_secret(line, shown, written)
        self._keep(f"C: {written}")

    def reply(self, raw: bytes, protocol: str) -> None:
        if self._suspended or not self.enabled:
            return
        # the code is on the first line (the last of an SMTP reply repeats it): a
        # message of 64 MiB after +OK is not decoded to find it
        end = raw.find(b"\n")
        text = raw[: len(raw) if end < 0 else end].decode("utf-8", "backslashreplace").strip()
        parsed = parse(text, protocol)  # type: ignore[arg-type]
        code = None if parsed.code is None else safe_text(parsed.code)
        if code is None and protocol == "pop3" and re.match(r"\+( |$)", text):
            code = "+"  # POP3's SASL continuation, as mailtalk run matches it
        expectation = "S: *" if code is None else f"S: {code}"
        if self._left_out:
            self._left_out = False
            self.comment(f"its reply: {expectation}")
            return
        exchange = self._exchange
        if exchange is None:
            self._keep(expectation)
            return
        exchange.lines.append(expectation)
        if code == "+" or (code is not None and code.startswith("3")):
            return  # the server asks; the next line answers
        self._exchange = None
        self._finish_exchange(exchange, positive=code in ("+OK", "OK") or str(code)[:1] == "2")

    def data_file(self, path: str) -> None:
        """``:file PATH`` after DATA: the replayable form is ``data PATH``."""
        if self.lines[-2:] == ["C: DATA", "S: 354"]:
            self.lines[-2:] = [f"data {_dollars(os.path.abspath(path))}"]
        else:
            self.comment(f"a message was sent from {path} here; it cannot be replayed")

    def directive(self, text: str) -> None:
        self._end_exchange("it was not finished")
        self._keep(text)

    def comment(self, text: str) -> None:
        self._keep(f"# {safe_text(text)}")

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """While a meta-command speaks for itself (the directive replays it)."""
        self._suspended += 1
        try:
            yield
        finally:
            self._suspended -= 1

    # -- typed secrets --------------------------------------------------------------

    def _variable_for_secret(self, line: str, shown: str, written: str) -> str:
        """PASS, LOGIN: the password becomes ${MAILTALK_PASSWORD}, quoted if it was."""
        before, mark, after = shown.partition(_SECRET_MARK)
        if not mark:
            return written
        fits = line.startswith(before) and line.endswith(after)
        secret = line[len(before) : len(line) - len(after)] if fits else ""
        variable = "${" + PASSWORD_VARIABLE + "}"
        if len(secret) >= 2 and secret.startswith('"') and secret.endswith('"'):
            variable = f'"{variable}"'  # an IMAP quoted string stays one
        if PASSWORD_VARIABLE not in self.secrets:
            self.secrets.append(PASSWORD_VARIABLE)
        return _dollars(before) + variable + _dollars(after)

    def _start_exchange(self, line: str, arguments: list[str], protocol: str) -> None:
        mechanism = arguments[0].upper()
        exchange = _Exchange(mechanism)
        command = line.rstrip() if len(arguments) == 1 else None
        if mechanism not in _REPLAYABLE:
            exchange.unreplayable = f"mailtalk run replays AUTH {' and '.join(_REPLAYABLE)} only"
        if command is None:  # an initial response: never written
            words = line.split()
            command = " ".join(words[: words.index(arguments[0]) + 1])
            self._answer(exchange, arguments[1])
        exchange.lines.insert(0, f"C: {_dollars(command)}")
        self._exchange = exchange

    def _answer(self, exchange: _Exchange, line: str) -> None:
        """A client line of the exchange: kept only as ``***``; the user name read out."""
        exchange.answers += 1
        if line.strip() == "*":
            exchange.lines.append("C: *")  # the protocol's cancel
            return
        exchange.secret_answers += 1
        exchange.lines.append(f"C: {_SECRET_MARK}")
        if exchange.unreplayable is not None:
            return
        try:
            decoded = binascii.a2b_base64(line.strip().encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            exchange.unreplayable = "an answer was not base64"
            return
        if exchange.mechanism == "PLAIN":
            parts = decoded.split(b"\0")
            if len(parts) != 3:
                exchange.unreplayable = "the AUTH PLAIN answer was not authzid NUL user NUL pass"
                return
            if parts[0] not in (b"", parts[1]):
                exchange.unreplayable = "auth plain has no authorization identity to give"
                return
            self._user(exchange, parts[1])
        elif exchange.mechanism == "LOGIN" and exchange.answers == 1:
            self._user(exchange, decoded)  # the first LOGIN answer is the user name

    def _user(self, exchange: _Exchange, raw: bytes) -> None:
        try:
            user = raw.decode("utf-8")
        except UnicodeDecodeError:
            exchange.unreplayable = "the user name is not UTF-8"
            return
        if not user or any(c.isspace() or not c.isprintable() for c in user) or "${" in user:
            exchange.unreplayable = "the user name cannot be written on an auth line"
            return
        exchange.user = user

    def _finish_exchange(self, exchange: _Exchange, positive: bool) -> None:
        mechanism = exchange.mechanism.lower()
        user = exchange.user
        if not exchange.secret_answers:  # refused at once, or cancelled: nothing secret
            self.lines.extend(exchange.lines)
            return
        if positive and exchange.unreplayable is None and user is not None:
            self.lines.append(f"auth {mechanism} {_dollars(user)}")
            return
        if not positive:
            who = f" {user}" if user else ""
            self.comment(f"auth {mechanism}{who} failed here")
            return
        reason = exchange.unreplayable or "the user name was not in it"
        self.comment(f"AUTH {exchange.mechanism} succeeded here but cannot be replayed: {reason}")

    def _end_exchange(self, why: str) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            self.comment(f"AUTH {exchange.mechanism} was cut short here ({why})")

    # -- the file -----------------------------------------------------------------

    def text(self) -> str:
        header = [
            f"# recorded by mailtalk on {time.strftime('%Y-%m-%d %H:%M:%S')}; "
            "replay with: mailtalk run FILE",
        ]
        for name in self.secrets:
            header.append(f"# needs ${{{name}}} (export {name}=..., or --var {name}=...)")
        lines = list(self.lines)
        if self.dropped:
            lines.insert(
                1,
                f"# {self.dropped} lines of this session were not kept before recording "
                "began (too many); this file does not replay from the start",
            )
        if self._exchange is not None:
            lines.append(f"# AUTH {self._exchange.mechanism} was cut short here (recording ended)")
        return "\n".join([*header, *lines]) + "\n"

    def write(self, path: str) -> None:
        """The whole file at once: a temporary file renamed over ``path``."""
        directory = os.path.dirname(os.path.abspath(path))
        handle, temporary = tempfile.mkstemp(prefix=".mailtalk-record-", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(self.text())
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise


def _verb(line: str, protocol: str) -> tuple[str, list[str]]:
    """The command's verb (IMAP: after the tag, if one was typed) and its arguments."""
    words = line.split()
    if protocol == "imap" and len(words) > 1 and words[1].upper() == "AUTHENTICATE":
        words = words[1:]
    if not words:
        return "", []
    return words[0].upper(), words[1:]


def _dollars(text: str) -> str:
    """Typed text as a session file writes it: ``$`` is ``$$`` (no variable by accident)."""
    return text.replace("$", "$$")
