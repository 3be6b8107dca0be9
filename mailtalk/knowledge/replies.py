"""Find the reply in what the user gave ``mailtalk explain``, and take it apart.

A reply can come bare (``550``, ``5.7.1``, ``IN-USE``), as a whole SMTP, POP3 or
IMAP reply line (or a multi-line SMTP reply), or inside a log or bounce line
(``... said: 550 5.1.1 <x>: Recipient address rejected ... (in reply to RCPT TO
command)``). This module only parses: no knowledge, no I/O, so it stays cheap
to import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final, Literal

Protocol = Literal["smtp", "pop3", "imap"]
PROTOCOLS: Final[tuple[Protocol, ...]] = ("smtp", "pop3", "imap")

_ENHANCED: Final = r"[245]\.\d{1,3}\.\d{1,3}"
ENHANCED_ONLY: Final = re.compile(rf"({_ENHANCED})")
_BASIC_ONLY: Final = re.compile(r"[1-5]\d\d")
# "550 5.7.1 text", "550-5.7.1 text", "550 text", "550"
_SMTP_LINE: Final = re.compile(rf"([2-5]\d\d)(?:([ -])(?:({_ENHANCED})(?=\s|$))?\s*(.*))?$", re.S)
# qmail ends its replies with the enhanced code: "... rcpthosts (#5.7.1)"
_QMAIL_SUFFIX: Final = re.compile(rf"\(#({_ENHANCED})\)\s*$")
_POP3_LINE: Final = re.compile(r"([+-])(OK|ERR)\b\s*(?:\[([^\]\s]*)\])?\s*(.*)$", re.I | re.S)
# GNU Mailutils writes the command's name before the response code ("a1 NO COPY
# [TRYCREATE] failed"), against RFC 3501's grammar; an upper-case word right before
# the bracket is taken as that name.
_IMAP_COMMAND_FIRST: Final = r"(?:(?-i:((?:UID\s+)?[A-Z]{3,}))\s+(?=\[))?"
_IMAP_TAGGED: Final = re.compile(
    r"(\*|[A-Za-z0-9.]{1,32})\s+(OK|NO|BAD|BYE|PREAUTH)\b\s*"
    + _IMAP_COMMAND_FIRST
    + r"(?:\[([^\]]*)\])?\s*(.*)$",
    re.I | re.S,
)
_IMAP_BARE: Final = re.compile(
    r"(OK|NO|BAD|BYE|PREAUTH)\b\s*" + _IMAP_COMMAND_FIRST + r"(?:\[([^\]]*)\])?\s*(.*)$",
    re.I | re.S,
)
_CONTINUATION: Final = re.compile(r"\+(?:\s(.*))?$", re.S)
_RESPONSE_CODE_ONLY: Final = re.compile(r"\[?([A-Z][A-Z0-9/-]*)\]?")
# Where logs and bounces put the remote reply.
_EMBEDDED: Final = re.compile(
    r"(?:said:|returned\s+'|diagnostic-code:\s*smtp;|reply:|response:|server replied:|"
    r"remote server replied:|smtp error from remote mail server after [^:]*:|"
    # a transcript's marks for what the server sent: "S: 250 OK", "SMTP: 220 ..."
    r"(?:^|(?<=\s))(?:s|smtp|server|recv|rcvd|<<<|<-|<=):?(?=\s)|"
    r"host \S+ \[[^\]]*\]:)\s*([2-5]\d\d(?:[ -]|$).*)",
    re.I | re.S,
)
# Otherwise a reply that starts a line or follows a colon, semicolon, bracket or
# quote: "port 587 closed" is not one.
_EMBEDDED_LOOSE: Final = re.compile(
    rf"(?:^\s*|\n\s*|[:;('\"]\s*)([45]\d\d[ -](?:{_ENHANCED}\s)?\D.*)", re.S
)
# Where a client's log quotes a POP3 or IMAP reply: "fetchmail: POP3< -ERR ...",
# "Error login on [host] ...: 2 BAD Invalid characters in atom", "<= 'A2 OK Success'", offlineimap's
# "server reply: ('NO', ["Mailbox doesn't exist: INBOX.Alerts"])".
_QUOTED_POP3: Final = re.compile(r"(?:^|[\s:<'\"(\[])((?:-ERR|\+OK)\b.*)$", re.S)
_QUOTED_IMAP: Final = re.compile(
    r"(?:^|[\s:<'\"(\[])((?:\*|[A-Za-z]{0,8}\d[A-Za-z0-9.]{0,15})\s+(?:NO|BAD|BYE|OK)\b.*"
    r"|(?<=[:<] )(?:NO|BAD|BYE)\s.*)$",
    re.S,
)
_PYTHON_TUPLE: Final = re.compile(r"\('(NO|BAD|BYE)',\s*\[b?[\"'](.*?)[\"']\]\)", re.S)
_FOLDED_HEAD: Final = re.compile(rf"([2-5]\d\d)-(?:({_ENHANCED})\s)?")
_IN_REPLY_TO: Final = re.compile(
    r"\(in reply to (?:the )?(end of data|[A-Z]+(?: [A-Z]+)?) command\)", re.I
)
_EXIM_AFTER: Final = re.compile(r"after (RCPT TO|MAIL FROM|end of data|DATA|EHLO|HELO|AUTH)", re.I)


@dataclass(frozen=True)
class ParsedReply:
    """One reply taken apart.

    ``code`` is the basic code for SMTP (``"550"``), ``"+OK"``/``"-ERR"`` for
    POP3, the status word for IMAP (``"NO"``), ``"+"`` for a continuation, or
    None when only text or a bare enhanced/response code was given.
    ``response_code`` is the bracketed POP3/IMAP code (``"IN-USE"``,
    ``"OVERQUOTA"``), keeping its arguments out (``"UIDNEXT 4"`` gives ``"UIDNEXT"``).
    ``command`` is the command the reply answered, when the input said so (a
    Postfix log's "in reply to RCPT TO command", or the command's name that GNU
    Mailutils writes into its IMAP replies).
    """

    raw: str
    protocol: Protocol | None
    code: str | None
    enhanced_code: str | None
    response_code: str | None
    text: str
    tag: str | None = None
    command: str | None = None
    embedded: bool = False
    unfolded: str = ""  # a log line with its folded reply unfolded, "" when as raw

    @property
    def subject(self) -> str:
        """What reply wordings are matched against: the input on one line, a
        reply that a log folded into one line with its continuation codes taken out."""
        return " ".join((self.unfolded or self.raw).split())

    @property
    def said(self) -> str:
        """What the server said, on one line: for a log or bounce line only the reply,
        not the log's own words ("SMTP error from remote mail server after MAIL FROM"
        would read as a sequence error)."""
        if not self.embedded:
            return self.subject
        if self.protocol in ("pop3", "imap") and self.unfolded:
            return " ".join(self.unfolded.split())  # the quoted reply, response code and all
        parts = (self.code, self.enhanced_code, self.text)
        return " ".join(" ".join(part for part in parts if part).split())

    @property
    def basic(self) -> int | None:
        """The SMTP basic code as a number."""
        if self.protocol == "smtp" and self.code and self.code.isdigit():
            return int(self.code)
        return None


def _command_hint(text: str) -> str | None:
    match = _IN_REPLY_TO.search(text) or _EXIM_AFTER.search(text)
    if match is None:
        return None
    words = match[1].upper().split()
    if words[0] == "END":
        return "end of data"
    return words[0]


def _smtp(raw: str, body: str, embedded: bool = False) -> ParsedReply | None:
    lines = [line.strip() for line in body.strip().splitlines() if line.strip()]
    if not lines:
        return None
    first = _SMTP_LINE.match(lines[0])
    if first is None:
        return None
    code = first[1]
    enhanced = first[3]
    texts = []
    for line in lines:
        match = _SMTP_LINE.match(line)
        if match is None or match[1] != code:
            # a wrapped line of a bounce: keep it as text
            texts.append(line)
            continue
        if enhanced is None and match[3]:
            enhanced = match[3]
        texts.append((match[4] or "").strip())
    text = " ".join(t for t in texts if t)
    if enhanced is None:
        suffix = _QMAIL_SUFFIX.search(text)
        if suffix:
            enhanced = suffix[1]
    return ParsedReply(
        raw=raw,
        protocol="smtp",
        code=code,
        enhanced_code=enhanced,
        response_code=None,
        text=text,
        command=_command_hint(raw),
        embedded=embedded,
    )


def _first_word(code: str | None) -> str | None:
    if not code:
        return None
    return code.split()[0].upper()


def parse(text: str, protocol: Protocol | None = None) -> ParsedReply:
    """Take one reply (or a bare code) apart; ``protocol`` settles ambiguous input.

    Never fails: input that looks like no reply comes back as text only, with
    ``protocol`` as given.
    """
    raw = text.strip()
    first_line = raw.splitlines()[0].strip() if raw else ""

    if protocol in (None, "smtp"):
        if _BASIC_ONLY.fullmatch(raw):
            return ParsedReply(raw, "smtp", raw, None, None, "")
        if ENHANCED_ONLY.fullmatch(raw):
            return ParsedReply(raw, "smtp", None, raw, None, "")
        if _SMTP_LINE.match(first_line) and not first_line[3:4].isalnum():
            parsed = _smtp(raw, raw)
            if parsed is not None:
                return parsed

    if protocol in (None, "pop3"):
        match = _POP3_LINE.match(first_line)
        if match:
            status = match[1] + match[2].upper()
            return ParsedReply(raw, "pop3", status, None, _first_word(match[3]), match[4].strip())

    if protocol in (None, "imap"):
        match = _IMAP_TAGGED.match(first_line)
        bare = _IMAP_BARE.match(first_line)
        if match and (
            protocol == "imap"
            or match[1] == "*"
            or _looks_like_tag(match[1])
            or match[4] is not None
        ):
            return ParsedReply(
                raw,
                "imap",
                match[2].upper(),
                None,
                _first_word(match[4]),
                match[5].strip(),
                tag=match[1],
                command=_imap_command(match[3], match[5]),
            )
        # "NO [OVERQUOTA] ..." without a tag; plain "No such user" is not IMAP
        if bare and (protocol == "imap" or bare[3] is not None):
            return ParsedReply(
                raw,
                "imap",
                bare[1].upper(),
                None,
                _first_word(bare[3]),
                bare[4].strip(),
                command=_imap_command(bare[2], bare[4]),
            )
        continuation = _CONTINUATION.match(first_line)
        if continuation and protocol == "imap":
            return ParsedReply(raw, "imap", "+", None, None, (continuation[1] or "").strip())

    if protocol in ("pop3", "imap"):
        code_only = _RESPONSE_CODE_ONLY.fullmatch(raw)
        if code_only:
            return ParsedReply(raw, protocol, None, None, code_only[1].upper(), "")

    embedded = find_embedded(raw)
    if embedded is not None and protocol in (None, "smtp"):
        return embedded
    if protocol in (None, "pop3", "imap"):
        quoted = _find_quoted(raw, protocol)
        if quoted is not None:
            return quoted
    if protocol is None and raw.startswith("[") and _RESPONSE_CODE_ONLY.fullmatch(raw):
        return ParsedReply(raw, None, None, None, raw.strip("[]").upper(), "")
    return ParsedReply(raw, protocol, None, None, None, raw)


# The IMAP commands (RFC 9051 and the common extensions), for replies that name
# the command they answer, as GNU Mailutils writes them: "a1 NO LOGIN User name
# or passwd rejected", "* BYE LOGOUT received" (Cyrus).
IMAP_COMMANDS: Final = frozenset(
    {
        "APPEND", "AUTHENTICATE", "CAPABILITY", "CHECK", "CLOSE", "COMPRESS", "COPY",
        "CREATE", "DELETE", "ENABLE", "EXAMINE", "EXPUNGE", "FETCH", "GETACL", "GETMETADATA",
        "GETQUOTA", "GETQUOTAROOT", "ID", "IDLE", "LIST", "LOGIN", "LOGOUT", "LSUB", "MOVE",
        "MYRIGHTS", "NAMESPACE", "NOOP", "RENAME", "SEARCH", "SELECT", "SETACL", "SETMETADATA",
        "SETQUOTA", "SORT", "STARTTLS", "STATUS", "STORE", "SUBSCRIBE", "THREAD", "UNSELECT",
        "UNSUBSCRIBE",
    }
)


def _imap_command(name: str | None, text: str = "") -> str | None:
    """The command a reply names: before its response code ("UID COPY" -> "COPY"),
    or as the first word of its text when that is an IMAP command in capitals."""
    if name:
        return name.split()[-1].upper()
    words = text.split(None, 2)
    if words and words[0] == "UID" and len(words) > 1:
        words = words[1:]
    if words and words[0] in IMAP_COMMANDS:
        return words[0]
    return None


def _looks_like_tag(word: str) -> bool:
    # IMAP tags are client-chosen, but real ones carry a digit (a001, A1, 1);
    # without one, "Mailbox OK" or "Relay NO" would read as IMAP. A bracketed
    # response code after the status settles it ("d NO [EXPIRED]", RFC 5530).
    return any(c.isdigit() for c in word)


def find_embedded(line: str) -> ParsedReply | None:
    """The SMTP reply inside a log or bounce line, or None."""
    match = _EMBEDDED.search(line) or _EMBEDDED_LOOSE.search(line)
    if match is None:
        return None
    body = match[1]
    # a bounce quotes the reply: "Remote Server returned '550 5.1.1 ...'"
    if match.group(0).lower().startswith("returned") and "'" in body:
        body = body[: body.rfind("'")]
    # Postfix appends "(in reply to RCPT TO command)"; it is not the server's text
    body = _IN_REPLY_TO.sub("", body).strip()
    unfolded = _unfold(body)
    parsed = _smtp(line, unfolded, embedded=True)
    if parsed is not None and unfolded != body:
        first = _SMTP_LINE.match(unfolded.splitlines()[0])
        head = f"{first[1]} {first[3]} " if first and first[3] else f"{parsed.code} "
        parsed = replace(parsed, unfolded=line[: match.start(1)] + head + parsed.text)
    return parsed


def _find_quoted(line: str, protocol: Protocol | None) -> ParsedReply | None:
    """The POP3 or IMAP reply a client's log line quotes, or None; ``raw`` stays the
    whole line, and ``said`` is the reply alone."""
    candidates: list[tuple[str, Protocol]] = []
    if protocol in (None, "pop3") and (pop3 := _QUOTED_POP3.search(line)):
        candidates.append((pop3[1], "pop3"))
    if protocol in (None, "imap"):
        if imap := _QUOTED_IMAP.search(line):
            candidates.append((imap[1], "imap"))
        elif tuple_ := _PYTHON_TUPLE.search(line):
            candidates.append((f"{tuple_[1]} {tuple_[2]}", "imap"))
    for body, which in candidates:
        parsed = parse(body, which)
        if parsed.code is not None:
            return replace(parsed, raw=line, embedded=True, unfolded=body)
    return None


def _unfold(body: str) -> str:
    """A multi-line reply that a log folded into one line gets its lines back:
    ``450-4.2.1 a rate that 450-4.2.1 prevents ... 450 4.2.1 https://...`` (Postfix
    joins the lines of a remote reply with spaces, keeping each line's code)."""
    head = _FOLDED_HEAD.match(body)
    if head is None or "\n" in body:
        return body
    code, enhanced = head[1], head[2] or ""
    # each later line starts with the same code, and the same enhanced code if any
    after = re.escape(enhanced) + r"\s" if enhanced else ""
    return re.sub(rf"\s+(?={code}[- ]{after})", "\n", body)


def looks_like_reply(line: str) -> bool:
    """Whether a line from standard input holds a reply worth explaining."""
    stripped = line.strip()
    if not stripped:
        return False
    parsed = parse(stripped)
    return (
        parsed.code is not None
        or parsed.enhanced_code is not None
        or parsed.response_code is not None
    )


def split_replies(lines: list[str]) -> list[str]:
    """Group input lines into replies: SMTP ``NNN-`` continuation lines join the
    ``NNN `` line that ends them; every other line is a reply of its own."""
    replies: list[str] = []
    pending: list[str] = []
    pending_code = ""
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        code, sep = stripped[:3], stripped[3:4]
        if pending:
            if code == pending_code and sep == "-":
                pending.append(stripped)
                continue
            if code == pending_code and sep in (" ", ""):
                pending.append(stripped)
                replies.append("\n".join(pending))
                pending = []
                continue
            replies.append("\n".join(pending))
            pending = []
        if code.isdigit() and sep == "-":
            pending, pending_code = [stripped], code
            continue
        replies.append(stripped)
    if pending:
        replies.append("\n".join(pending))
    return replies
