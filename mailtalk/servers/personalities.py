"""MTA personalities: the exact replies qmail, Postfix, Sendmail and Exim send.

The wordings are data, in ``mailtalk/knowledge/personalities.toml``, each with
the source it was taken from. The SMTP server looks replies up by key::

    persona = personality("postfix")
    code, text = persona.reply("relay_denied", me="mx.example.org", rcpt="bob@example.net")
    # (554, "5.7.1 <bob@example.net>: Relay access denied")

``text`` may hold several lines separated by ``"\\n"`` (a multi-line reply);
:meth:`Personality.lines` gives the lines as sent, ``250-...`` then ``250 ...``.

The values a server must supply for each key are in :data:`REPLY_VALUES`
(besides ``me``, always needed, and ``date``, filled with the current time when
missing). A template may only use those; a value it needs and does not get
raises :class:`PersonalityError`, so a forgotten value fails loudly in tests.
Extra values are ignored.

The file is read on first use, not at import, and kept; only the personality asked
for is parsed.
"""

from __future__ import annotations

import functools
import re
import string
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

__all__ = [
    "DEFAULT_PERSONALITY",
    "KEYS",
    "PLACEHOLDERS",
    "REPLY_VALUES",
    "Personality",
    "PersonalityError",
    "Reply",
    "UnknownPersonalityError",
    "personality",
    "personality_names",
]

DEFAULT_PERSONALITY: Final = "mailtalk"
_RESOURCE: Final = "personalities.toml"

# Key -> the values the server supplies for it (besides "me" and "date").
REPLY_VALUES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "banner": frozenset(),
        "ehlo_greeting": frozenset({"helo", "client"}),  # first line of the EHLO reply
        "helo": frozenset({"helo", "client"}),
        "mail_ok": frozenset({"sender"}),
        "rcpt_ok": frozenset({"rcpt"}),
        "data_start": frozenset(),  # the 354
        "data_ok": frozenset({"queue_id"}),  # the 250 after the dot
        "quit": frozenset(),
        "rset": frozenset(),
        "noop": frozenset(),
        "vrfy": frozenset({"argument"}),  # argument: what followed VRFY
        "help": frozenset(),
        "relay_denied": frozenset({"rcpt"}),
        "unknown_user": frozenset({"rcpt"}),
        "need_mail": frozenset(),  # RCPT before MAIL
        "need_rcpt": frozenset(),  # DATA before RCPT
        "nested_mail": frozenset(),  # MAIL inside a transaction
        "need_helo": frozenset(),  # MAIL before HELO/EHLO, when required
        "auth_before_helo": frozenset(),  # AUTH before HELO/EHLO, when required
        "sender_domain": frozenset({"sender"}),  # the sender's domain does not exist
        "sender_domain_tempfail": frozenset({"sender"}),  # ... could not be checked now
        # syntax_error: command = the verb; syntax = its usage ("MAIL FROM:<address>");
        # detail = an explanation; argument = what the client sent after the verb.
        "syntax_error": frozenset({"command", "syntax", "detail", "argument"}),
        "unknown_command": frozenset({"command"}),
        "unknown_parameter": frozenset({"parameter"}),  # MAIL/RCPT parameter
        "line_too_long": frozenset(),
        "message_too_big": frozenset({"max_size"}),  # after the dot
        "size_exceeded": frozenset({"max_size"}),  # MAIL FROM SIZE= too big
        "storage_full": frozenset(),
        "bare_newline": frozenset(),
        "bad_sender_syntax": frozenset({"sender"}),
        "bad_recipient_syntax": frozenset({"rcpt"}),
        "no_valid_recipients": frozenset(),  # DATA after every RCPT was refused
        "too_many_recipients": frozenset(),
        "expn_disabled": frozenset(),
        "auth_ok": frozenset(),
        "auth_failed": frozenset(),
        "auth_required": frozenset({"client"}),
        "auth_needs_tls": frozenset(),  # AUTH before STARTTLS where it is TLS-only
        "tls_ready": frozenset(),
        "tls_not_available": frozenset(),
        "tls_required": frozenset(),  # MAIL before STARTTLS where TLS is required
        "too_many_connections": frozenset({"client"}),
        "timeout": frozenset({"client"}),
        "shutdown": frozenset(),
        # A greet pause (ServerSettings.greet_pause) and a client that talked before the
        # greeting: the greeting it gets instead of the banner, and the reply to each of
        # its commands after that (QUIT and the personality's early_talker_allows apart).
        "early_talker_greeting": frozenset({"client"}),
        "early_talker_rejected": frozenset({"command"}),
        # The session made too many errors (ServerSettings.error_limit): the 421 it gets
        # before the server hangs up; and AUTH from an address that used up its budget of
        # failed logins (ServerSettings.auth_failures_per_address).
        "too_many_errors": frozenset({"client"}),
        "too_many_auth_failures": frozenset({"client"}),
    }
)
KEYS: Final = tuple(REPLY_VALUES)
PLACEHOLDERS: Final = frozenset({"me", "date"}).union(*REPLY_VALUES.values())
_CONFIDENCE: Final = ("[checked]", "[recalled]", "[mailtalk]")
_QUEUE_ID_STYLES: Final = ("postfix", "qmail", "sendmail", "exim", "mailtalk")
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class PersonalityError(ValueError):
    """Bad personality data, or a reply asked for without a value it needs."""


class UnknownPersonalityError(KeyError):
    """No personality by that name. A :class:`KeyError`, with a readable message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# A NamedTuple, not a frozen dataclass: see protocols.common.Line.
class Reply(NamedTuple):
    """One reply template: the code, the text after it, and where the wording comes from."""

    code: int
    text: str
    source: str

    @property
    def placeholders(self) -> frozenset[str]:
        return _fields(self.text)

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code the text starts with (``"5.7.1"``), if any."""
        first = self.text.split(" ", 1)[0]
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] in "245":
            return first
        return None


class Personality:
    """How one MTA talks. ``replies`` has every key of :data:`KEYS`.

    Not changed once made. A plain class, not a dataclass (see ``Reply``): nothing
    compares or prints a personality."""

    __slots__ = (
        "description", "early_talker_allows", "early_talker_closes", "extensions", "keywords",
        "name", "queue_id_style", "replies", "requires_helo", "software",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        software: str,
        description: str,
        requires_helo: bool,
        extensions: tuple[str, ...],
        queue_id_style: str,
        replies: Mapping[str, Reply],
        # After the early_talker_greeting: the commands still answered as usual (QUIT
        # always is), and whether the connection is closed at once instead (Exim,
        # postscreen).
        early_talker_allows: frozenset[str] = frozenset(),
        early_talker_closes: bool = False,
    ) -> None:
        self.name = name
        self.software = software
        self.description = description
        self.requires_helo = requires_helo
        self.extensions = extensions
        # The EHLO keywords, upper case: asked for by every new SMTP session (CHUNKING).
        self.keywords = frozenset(line.split()[0].upper() for line in extensions if line.split())
        self.queue_id_style = queue_id_style
        self.replies = replies
        self.early_talker_allows = early_talker_allows
        self.early_talker_closes = early_talker_closes

    def template(self, key: str) -> Reply:
        try:
            return self.replies[key]
        except KeyError:
            raise PersonalityError(f"no reply {key!r}; keys: {', '.join(KEYS)}") from None

    def reply(self, key: str, **values: object) -> tuple[int, str]:
        """The code and the filled-in text of a reply (lines separated by ``"\\n"``)."""
        template = self.template(key)
        needed = template.placeholders
        if "date" in needed and "date" not in values:
            from email.utils import formatdate  # only a few replies of a few MTAs have one

            values["date"] = formatdate(localtime=True)
        missing = sorted(needed - values.keys())
        if missing:
            names = ", ".join(missing)
            raise PersonalityError(f"{self.name} reply {key!r} needs a value for {names}")
        text = template.text.format_map({name: str(values[name]) for name in needed})
        return template.code, text

    def lines(self, key: str, **values: object) -> list[str]:
        """The reply as sent, one string per line, without the line endings."""
        code, text = self.reply(key, **values)
        parts = text.split("\n")
        return [
            f"{code}{' ' if i == len(parts) - 1 else '-'}{part}".rstrip()
            for i, part in enumerate(parts)
        ]

    def queue_id(self, sequence: int, now: float | None = None, process: int = 0) -> str:
        """A queue id in this MTA's style, from a sequence number, a time and a process.

        ``process`` (the server's process id) keeps two servers on one machine from
        handing out the same id in the same second; the ids of one process differ by
        ``sequence``. Each style puts it where that MTA has a process or file number.
        """
        when = time.time() if now is None else now
        seconds = int(when)
        if self.queue_id_style == "postfix":
            # Postfix: five hex digits of time, then the queue file's inode number in hex.
            return f"{seconds & 0xFFFFF:05X}{process << 16 | sequence & 0xFFFF:05X}"
        if self.queue_id_style == "qmail":  # what follows "250 ok": TIME qp PID
            return f"{seconds} qp {process * 100000 + sequence % 100000}"
        if self.queue_id_style == "sendmail":  # YMDhms in base 60, a count, a pid
            digits = _BASE62[:60]
            stamp = time.gmtime(seconds)
            fields = (stamp.tm_year % 60, stamp.tm_mon - 1, stamp.tm_mday, stamp.tm_hour)
            head = "".join(digits[v] for v in (*fields, stamp.tm_min, stamp.tm_sec % 60))
            count = f"{digits[sequence // 60 % 60]}{digits[sequence % 60]}"
            return f"{head}{count}{process:06d}"
        if self.queue_id_style == "exim":  # 1rAbCd-000Xyz-12: time, pid, fraction
            tail = (int((when - seconds) * 1000) + sequence) % 3844
            return f"{_base62(seconds, 6)}-{_base62(process, 6)}-{_base62(tail, 2)}"
        return f"{seconds:08X}{process:06X}{sequence & 0xFFFF:04X}"  # mailtalk


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(_BASE62[digit])
    return "".join(reversed(out))


# Cached: a reply with a value that differs every time (the queue id of DATA's 250)
# is filled in anew for each message, and asks its template's placeholders each time.
@functools.lru_cache(maxsize=1024)
def _fields(text: str) -> frozenset[str]:
    names: set[str] = set()
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise PersonalityError(f"placeholder {{{name}}} must be a plain name")
        names.add(name)
    return frozenset(names)


def _reply(where: str, key: str, raw: object) -> Reply:
    if not isinstance(raw, dict):
        raise PersonalityError(f"{where}.{key}: expected {{ code, text, source }}")
    code, text, source = raw.get("code"), raw.get("text"), raw.get("source")
    if set(raw) != {"code", "text", "source"}:
        raise PersonalityError(f"{where}.{key}: keys must be code, text and source")
    if not isinstance(code, int) or not 200 <= code <= 559 or code % 100 // 10 > 5:
        raise PersonalityError(f"{where}.{key}: code {code!r} is not an SMTP reply code")
    if not isinstance(text, str) or not isinstance(source, str) or not source.strip():
        raise PersonalityError(f"{where}.{key}: text and source must be strings")
    if any(ord(ch) < 32 and ch not in "\t\n" for ch in text):
        raise PersonalityError(f"{where}.{key}: control character in the text")
    if not source.rstrip().endswith(_CONFIDENCE):
        raise PersonalityError(f"{where}.{key}: source must end in {' '.join(_CONFIDENCE)}")
    try:
        names = _fields(text)
    except (PersonalityError, ValueError) as error:
        raise PersonalityError(f"{where}.{key}: {error}") from None
    allowed = REPLY_VALUES[key] | {"me", "date"}
    if not names <= allowed:
        extra = ", ".join(sorted(names - allowed))
        raise PersonalityError(
            f"{where}.{key}: placeholder {extra} is not given for this reply "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    return Reply(code, text, source.strip())


def _personality(name: str, table: object) -> Personality:
    where = f"{_RESOURCE} [personality.{name}]"
    if not isinstance(table, dict):
        raise PersonalityError(f"{where}: not a table")
    replies = table.get("replies")
    if not isinstance(replies, dict):
        raise PersonalityError(f"{where}: missing [personality.{name}.replies]")
    unknown = sorted(set(replies) - set(KEYS))
    missing = [key for key in KEYS if key not in replies]
    if unknown or missing:
        raise PersonalityError(f"{where}: unknown keys {unknown}, missing keys {missing}")
    software = table.get("software")
    description = table.get("description")
    extensions = table.get("extensions")
    requires_helo = table.get("requires_helo")
    style = table.get("queue_id_style")
    if not isinstance(software, str) or not isinstance(description, str):
        raise PersonalityError(f"{where}: software and description must be strings")
    if not isinstance(extensions, list) or not all(isinstance(e, str) for e in extensions):
        raise PersonalityError(f"{where}: extensions must be a list of strings")
    if not isinstance(requires_helo, bool):
        raise PersonalityError(f"{where}: requires_helo must be true or false")
    if style not in _QUEUE_ID_STYLES:
        raise PersonalityError(f"{where}: queue_id_style must be one of {_QUEUE_ID_STYLES}")
    allows = table.get("early_talker_allows", [])
    closes = table.get("early_talker_closes", False)
    if not isinstance(allows, list) or not all(isinstance(v, str) and v.isupper() for v in allows):
        raise PersonalityError(f"{where}: early_talker_allows must be a list of verbs (EHLO)")
    if not isinstance(closes, bool):
        raise PersonalityError(f"{where}: early_talker_closes must be true or false")
    text = "\n\n".join(" ".join(p.split()) for p in description.strip().split("\n\n"))
    parsed = {key: _reply(f"{where} replies", key, replies[key]) for key in KEYS}
    return Personality(
        name=name,
        software=software,
        description=text,
        requires_helo=requires_helo,
        extensions=tuple(extensions),
        queue_id_style=str(style),
        replies=MappingProxyType(parsed),
        early_talker_allows=frozenset(allows),
        early_talker_closes=closes,
    )


# Where each [personality.NAME] table starts. A server parses only the block of the one
# it uses, from its header to the next one's (its subtables come before that): a fifth
# of the TOML. tests/servers/test_personalities.py checks that every block parses to
# the table the whole file gives.
_HEADER_RE: Final = re.compile(r"^\[personality\.([A-Za-z0-9_-]+)\][ \t]*$", re.MULTILINE)


@functools.cache
def _blocks() -> dict[str, str]:
    """The TOML text of each personality, by name, in the file's order."""
    from mailtalk.knowledge import read_text

    raw = read_text(_RESOURCE)
    headers = list(_HEADER_RE.finditer(raw))
    if not headers:
        raise PersonalityError(f"{_RESOURCE}: expected [personality.NAME] tables")
    ends = [header.start() for header in headers[1:]] + [len(raw)]
    return {header[1]: raw[header.start() : end] for header, end in zip(headers, ends, strict=True)}


@functools.cache
def _load(name: str) -> Personality:
    """The personality NAME (lower case), checked; UnknownPersonalityError if none.

    Its table comes from the copy ``knowledge.parsed`` keeps while the TOML file is
    unchanged: a start needs neither tomllib nor the whole file then."""
    from mailtalk.knowledge import parsed

    if not name.replace("-", "").replace("_", "").isalnum():  # not a file name part
        raise _unknown(name)
    return _personality(name, parsed(_RESOURCE, name, lambda: _parse_block(name)))


def _parse_block(name: str) -> dict[str, Any]:
    import tomllib  # here: importing this module stays cheap

    block = _blocks().get(name)
    if block is None:
        raise _unknown(name)
    tables = tomllib.loads(block).get("personality")
    if not isinstance(tables, dict) or list(tables) != [name] or not isinstance(
        tables[name], dict
    ):
        raise PersonalityError(f"{_RESOURCE}: [personality.{name}] holds other tables")
    table: dict[str, Any] = tables[name]
    return table


def _unknown(name: str) -> UnknownPersonalityError:
    return UnknownPersonalityError(
        f"unknown personality {name!r}; known: {', '.join(personality_names())}"
    )


def personality_names() -> tuple[str, ...]:
    """The personalities, the default (``mailtalk``) first."""
    return tuple(_blocks())


def personality(name: str = DEFAULT_PERSONALITY) -> Personality:
    """The named personality; :class:`UnknownPersonalityError` (a KeyError) if none."""
    return _load(name.strip().lower())
