"""The fault rule language: how a rule is written, what it parses to, and how the
commands of one session are counted and matched against the rules.


A *fault rule* makes a reference server misbehave on purpose, at a precise point
of a session, the same way every time. Rules are plain strings (``mailtalk serve
--fault RULE``), so a lesson, a test or a bug report can quote one exactly.

Rule syntax
===========

::

    PROTO:COMMAND[#N][:FIELD=GLOB]...=ACTION

``PROTO``
    ``smtp``, ``pop3`` or ``imap``.

``COMMAND``
    The verb the rule watches, in lower case (upper case is accepted too):

    * smtp: ``connect`` (the greeting), ``helo``, ``ehlo``, ``mail``, ``rcpt``,
      ``data`` (the DATA command itself), ``data-end`` (the end of the message,
      after the dot), ``bdat``, ``rset``, ``noop``, ``quit``, ``vrfy``, ``expn``,
      ``help``, ``starttls``, ``auth``, ``etrn``;
    * pop3: ``connect``, ``capa``, ``user``, ``pass``, ``apop``, ``auth``,
      ``stls``, ``stat``, ``list``, ``retr``, ``top``, ``uidl``, ``dele``,
      ``noop``, ``rset``, ``quit``;
    * imap: ``connect``, ``capability``, ``noop``, ``logout``, ``starttls``,
      ``authenticate``, ``login``, ``enable``, ``id``, ``select``, ``examine``,
      ``create``, ``delete``, ``rename``, ``subscribe``, ``unsubscribe``,
      ``list``, ``lsub``, ``namespace``, ``status``, ``append``, ``idle``,
      ``check``, ``close``, ``unselect``, ``expunge``, ``search``, ``fetch``,
      ``store``, ``copy``, ``move``, ``uid``.

``#N``
    Fire only on the N-th occurrence (N >= 1) of the command. For the SMTP
    transaction commands ``mail``, ``rcpt``, ``data``, ``data-end`` and ``bdat``
    the count is per mail transaction: it starts again after RSET, HELO, EHLO and
    after the end of each message (whether it was accepted or not). For every
    other command, and for every POP3 and IMAP command, the count is per
    session (connection). Without ``#N`` the rule fires on every occurrence.

``:FIELD=GLOB``
    A condition; several are ANDed. The glob is matched with :mod:`fnmatch`,
    case-insensitively (``*``, ``?``, ``[abc]``). A glob cannot contain ``=``
    (write ``[=]`` for a literal one) nor ``:`` directly followed by a field
    name and ``=`` (write ``[:]``). Fields:

    * ``from``: the MAIL FROM address, without the angle brackets (empty for
      the null sender ``<>``); smtp transaction commands only;
    * ``to``: the RCPT TO address; smtp ``rcpt`` only;
    * ``client``: the client's IP address;
    * ``helo``: the HELO/EHLO name; smtp only;
    * ``tls``: ``yes`` or ``no``, whether the connection is encrypted;
    * ``auth``: ``yes`` or ``no``, whether the client has authenticated;
    * ``user``: the authenticated (POP3/IMAP: the announced) user name.

    A condition on a field the server did not supply never matches.

``ACTION``
    Everything after the ``=`` that ends the rule head and its conditions:

    * ``CODE[ TEXT]``: answer with this reply instead of the normal one. SMTP:
      a three-digit code, 200-599; when the text starts with an enhanced status
      code ``X.Y.Z`` it is kept, and its class must match the code's. POP3:
      ``+OK`` or ``-ERR``; IMAP: ``OK``, ``NO``, ``BAD``, ``BYE`` or
      ``PREAUTH`` (the server adds the tag). The reply is protocol-neutral data:
      :class:`FaultAction` keeps the status word and the text apart.
    * ``disconnect``: close the connection without a reply.
    * ``delay Ns`` / ``delay Nms``: answer normally, after a pause
      (at most one hour; N may have decimals).
    * ``greylist[ CODE TEXT]``: greylisting, as postgrey does it. The first
      attempt of each (client network, sender, recipient) triplet gets the
      reply; a retry before the delay gets it again; a retry after it passes,
      and so does every later attempt of that triplet until it has not been
      seen for the lifetime. The client network is the address's /24 (IPv4)
      or /64 (IPv6), as postgrey's ``--lookup-by-subnet``. The delay and the
      lifetime are :class:`FaultPlan` settings (``mailtalk serve
      --greylist-delay``, default 300 s as postgrey's; 0 s from Python, so a
      test's retry passes at once). Without a reply, postgrey's wording as
      Postfix sends it: ``450 4.2.0 <{to}>: Recipient address rejected:
      Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html``.
      SMTP only, with a 4xx code.
    * ``rate N/WINDOW[ per KEY]=REPLY``: a rate limit, as Postfix's anvil or
      Exim's ratelimit: the first N occurrences per WINDOW pass, the next ones
      get REPLY until the window lets more through. WINDOW is ``s``, ``min``,
      ``h`` or ``d``, optionally after a number (``3/2s``, ``100/min``,
      ``5/10min``). KEY is what is counted apart: ``client`` (the client's
      address; the default), ``sender`` (smtp transaction commands),
      ``recipient`` (smtp ``rcpt``) or ``user``. Exact: at most N in any
      WINDOW (a sliding log, see :class:`RateLimiter`). POP3 and IMAP too:
      ``pop3:pass=rate 5/min=-ERR [LOGIN-DELAY] Too many logins``.
    * ``trickle NB/s``: answer normally, but write the reply at N bytes a second
      (``10B/s``, ``1KB/s``; 1 to 1,000,000), to test a client's timeouts. A
      trickle lasts at most the server's idle timeout; then the session is
      closed, as a server that gives up on its client.
    * ``tempfail-once CODE TEXT``: the reply for the first occurrence that
      matches in the whole life of the server (all sessions), normal service
      afterwards. SMTP 4xx, POP3 ``-ERR``, IMAP ``NO``/``BAD``/``BYE``.

    Reply texts may use the placeholders ``{to}``, ``{from}``, ``{client}``,
    ``{helo}``, ``{user}`` and ``{domain}`` (the domain of ``to``, else of
    ``from``); they are filled from the fields when the rule fires.

Rules are tried in order; the first one that fires wins. A ``greylist`` rule
whose triplet passes, a ``rate`` rule under its limit, or a ``tempfail-once``
rule already used, does not fire, and the following rules get their chance (a
``rate`` rule counts only the occurrences that reach it).

Examples::

    smtp:rcpt#2=452 4.2.2 Mailbox full          the 2nd RCPT of each transaction
    smtp:mail=421 4.7.0 Try again later
    smtp:data=disconnect
    smtp:ehlo=delay 5s
    smtp:rcpt:to=bob@*=550 5.1.1 No such user
    smtp:mail:tls=no=530 5.7.0 Must issue a STARTTLS command first
    pop3:pass=-ERR [AUTH] Invalid login
    imap:login=NO [AUTHENTICATIONFAILED] Invalid credentials
    smtp:rcpt=rate 100/min=421 4.7.0 Too many messages
    smtp:mail=rate 3/2s per sender=450 4.7.1 Slow down
    pop3:pass=rate 5/min=-ERR [LOGIN-DELAY] Too many logins
    smtp:rcpt=greylist
    smtp:ehlo=trickle 10B/s

What a server does with its rules (the greylist, the rates, the log of what fired) is
:class:`mailtalk.servers.faults.FaultPlan`'s, and the named bundles of rules are in
:mod:`mailtalk.servers.fault_scenarios`. This module is loaded only when there are
rules to read or to apply: a server started without any never imports it.
"""

from __future__ import annotations

import fnmatch
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from mailtalk.servers.faults import FaultPlan

__all__ = [
    "ACTION_PLACEHOLDERS",
    "COMMANDS",
    "FIELDS",
    "PROTOCOLS",
    "TRANSACTION_COMMANDS",
    "Condition",
    "FaultAction",
    "FaultContext",
    "FaultRule",
    "FaultRuleError",
    "FiredFault",
    "SessionFaults",
    "parse_rule",
    "parse_rules",
    "placeholder_values",
]

PROTOCOLS: Final = ("smtp", "pop3", "imap")

COMMANDS: Final[Mapping[str, frozenset[str]]] = {
    "smtp": frozenset(
        {
            "connect", "helo", "ehlo", "mail", "rcpt", "data", "data-end", "bdat", "rset",
            "noop", "quit", "vrfy", "expn", "help", "starttls", "auth", "etrn",
        }
    ),
    "pop3": frozenset(
        {
            "connect", "capa", "user", "pass", "apop", "auth", "stls", "stat", "list", "retr",
            "top", "uidl", "dele", "noop", "rset", "quit",
        }
    ),
    "imap": frozenset(
        {
            "connect", "capability", "noop", "logout", "starttls", "authenticate", "login",
            "enable", "id", "select", "examine", "create", "delete", "rename", "subscribe",
            "unsubscribe", "list", "lsub", "namespace", "status", "append", "idle", "check",
            "close", "unselect", "expunge", "search", "fetch", "store", "copy", "move", "uid",
        }
    ),
}  # fmt: skip

# Commands counted per mail transaction (everything else: per session).
TRANSACTION_COMMANDS: Final[Mapping[str, frozenset[str]]] = {
    "smtp": frozenset({"mail", "rcpt", "data", "data-end", "bdat"}),
    "pop3": frozenset(),
    "imap": frozenset(),
}

FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "smtp": frozenset({"from", "to", "client", "helo", "tls", "auth", "user"}),
    "pop3": frozenset({"client", "tls", "auth", "user"}),
    "imap": frozenset({"client", "tls", "auth", "user"}),
}
_ALL_FIELDS: Final = frozenset().union(*FIELDS.values())
# Fields that only make sense on some commands (smtp).
_FIELD_COMMANDS: Final[Mapping[str, frozenset[str]]] = {
    "to": frozenset({"rcpt"}),
    "from": TRANSACTION_COMMANDS["smtp"],
}
_YES_NO_FIELDS: Final = frozenset({"tls", "auth"})
# Keyword spellings a caller may use for fields whose names are Python keywords.
_FIELD_ALIASES: Final[Mapping[str, str]] = {
    "from_": "from",
    "sender": "from",
    "mail_from": "from",
    "rcpt": "to",
    "recipient": "to",
    "rcpt_to": "to",
}
_RESETTING: Final[Mapping[str, frozenset[str]]] = {
    "smtp": frozenset({"rset", "helo", "ehlo"}),
    "pop3": frozenset(),
    "imap": frozenset(),
}
ACTION_PLACEHOLDERS: Final = frozenset({"to", "from", "client", "helo", "user", "domain"})

_IMAP_STATUSES: Final = ("OK", "NO", "BAD", "BYE", "PREAUTH")
_MAX_DELAY: Final = 3600.0
_HEAD = re.compile(r"([A-Za-z][A-Za-z0-9-]*)(?:#([0-9]*))?")
_CONDITION = re.compile(r":([A-Za-z_]+)=")
_DELAY = re.compile(r"delay\s+([0-9]+(?:\.[0-9]+)?)\s*(ms|s)", re.IGNORECASE)
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?=\s|$)")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RATE = re.compile(
    r"([0-9]{1,7})\s*/\s*([0-9]{1,6}(?:\.[0-9]{1,3})?)?\s*(s|sec|min|h|d)"
    r"(?:\s+per\s+([A-Za-z]+))?",
    re.IGNORECASE,
)
_TRICKLE = re.compile(r"([0-9]{1,7}(?:\.[0-9]{1,3})?)\s*(B|KB|KiB)/s", re.IGNORECASE)
_WINDOW_UNITS: Final[Mapping[str, float]] = {
    "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0
}  # fmt: skip
_MAX_WINDOW: Final = 7 * 86400.0
_MAX_TRICKLE: Final = 1_000_000.0  # bytes a second
# What a rate rule may count apart, and on which smtp commands it is known.
RATE_KEYS: Final[Mapping[str, str]] = {
    "client": "client", "sender": "from", "recipient": "to", "user": "user"
}  # fmt: skip
# postgrey's default text, as Postfix words a DEFER_IF_PERMIT from a policy service.
GREYLIST_REPLY: Final = (
    "450",
    "4.2.0 <{to}>: Recipient address rejected: "
    "Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html",
)
_MAX_RATE_LIMIT: Final = 100_000

FieldValue = str | bool | None
ActionKind = Literal[
    "reply", "disconnect", "delay", "greylist", "tempfail-once", "rate", "trickle"
]


class FaultRuleError(ValueError):
    """A fault rule that does not parse; the message is one line and names the bad part."""


def _fail(rule: str, problem: str, part: str | None = None) -> FaultRuleError:
    where = f" (at {part!r})" if part is not None else ""
    return FaultRuleError(f"bad fault rule {rule!r}: {problem}{where}")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultAction:
    """What the server must do instead of (or before) its normal answer.

    ``kind`` is ``"reply"``, ``"disconnect"``, ``"delay"`` or ``"trickle"`` in
    what :meth:`FaultPlan.check` returns; a parsed rule's action may also be
    ``"greylist"``, ``"rate"`` or ``"tempfail-once"`` (each answers with a reply
    when it fires). ``status`` is the reply's status word as written: ``"452"``,
    ``"-ERR"``, ``"NO"``; ``text`` the rest of the line, sent verbatim. A rate
    rule lets ``limit`` occurrences through per ``seconds``, counted apart per
    ``per`` (a field name: ``client``, ``from``, ``to``, ``user``); a trickle
    writes ``bytes_per_second``.
    """

    kind: ActionKind
    status: str = ""
    text: str = ""
    seconds: float = 0.0
    limit: int = 0
    per: str = ""
    bytes_per_second: float = 0.0

    @property
    def code(self) -> int | None:
        """The SMTP reply code as a number; None for POP3/IMAP statuses and non-replies."""
        return int(self.status) if self.status.isdigit() else None

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code (``"4.2.2"``) the text starts with, if any."""
        match = _ENHANCED.match(self.text)
        return match.group(0) if match else None

    def response_code_and_text(self) -> tuple[str | None, str]:
        """POP3 and IMAP: the bracketed response code the text starts with, and the rest;
        ``"[IN-USE] busy"`` as ``("IN-USE", "busy")``, a text without one as (None, text)."""
        text = self.text
        if text.startswith("[") and "]" in text:
            code, _, rest = text[1:].partition("]")
            return code, rest.strip()
        return None, text

    @property
    def line(self) -> str:
        """The reply line without the line ending (and without an IMAP tag)."""
        return f"{self.status} {self.text}".rstrip() if self.status else ""

    def render(self, values: Mapping[str, str]) -> FaultAction:
        """This action with ``{to}``-style placeholders in the text filled in."""
        if "{" not in self.text:
            return self

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            return values.get(name, "") if name in ACTION_PLACEHOLDERS else match.group(0)

        return replace(self, text=_PLACEHOLDER.sub(fill, self.text))


@dataclass(frozen=True)
class Condition:
    """``FIELD=GLOB``: matches when the field is present and the glob matches it."""

    field: str
    pattern: str

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        return fnmatch.fnmatchcase(value.lower(), self.pattern.lower())


@dataclass(frozen=True)
class FaultRule:
    """One parsed rule; ``text`` is the rule as written (stripped)."""

    text: str
    protocol: str
    command: str
    occurrence: int | None
    conditions: tuple[Condition, ...]
    action: FaultAction

    def applies(self, event: FaultContext) -> bool:
        """Protocol, command, occurrence and every condition match the event."""
        if event.protocol != self.protocol or event.command != self.command:
            return False
        if self.occurrence is not None and event.occurrence != self.occurrence:
            return False
        return all(c.matches(event.fields.get(c.field)) for c in self.conditions)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class FaultContext:
    """One command as a server sees it, with the count that ``#N`` compares to."""

    protocol: str
    command: str
    occurrence: int = 1
    fields: Mapping[str, str] = field(default_factory=dict)
    session_id: str = ""

    def __post_init__(self) -> None:
        # Accept booleans, None and field aliases like SessionFaults does.
        raw: Mapping[str, FieldValue] = self.fields
        object.__setattr__(self, "fields", _normalise_fields(raw))


@dataclass(frozen=True)
class FiredFault:
    """A fault that fired: which rule, where, and what it did."""

    rule: str
    session_id: str
    protocol: str
    command: str
    occurrence: int
    action: FaultAction
    time: float


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def parse_rules(texts: Iterable[str]) -> list[FaultRule]:
    """Parse several rules; the first bad one raises :class:`FaultRuleError`."""
    return [parse_rule(text) for text in texts]


def parse_rule(text: str) -> FaultRule:
    """Parse ``PROTO:COMMAND[#N][:FIELD=GLOB]...=ACTION`` (see the module docstring)."""
    if not isinstance(text, str):
        raise FaultRuleError(f"bad fault rule {text!r}: a rule is a string")
    rule = text.strip()
    if not rule:
        raise FaultRuleError("bad fault rule '': the rule is empty")
    if any(ch in rule for ch in "\r\n\0"):
        raise _fail(rule, "a rule is a single line")

    proto_text, colon, rest = rule.partition(":")
    protocol = proto_text.strip().lower()
    if not colon:
        raise _fail(rule, "expected PROTO:COMMAND=ACTION", rule)
    if protocol not in PROTOCOLS:
        raise _fail(rule, f"unknown protocol; use one of {', '.join(PROTOCOLS)}", proto_text)

    head = _HEAD.match(rest)
    if head is None:
        raise _fail(rule, "expected a command after the protocol", rest[:20])
    command = head.group(1).lower()
    if command not in COMMANDS[protocol]:
        known = ", ".join(sorted(COMMANDS[protocol]))
        raise _fail(rule, f"unknown {protocol} command; use one of {known}", head.group(1))
    occurrence: int | None = None
    if head.group(2) is not None:
        if not head.group(2):
            raise _fail(rule, "'#' must be followed by a number", f"#{rest[head.end() :][:10]}")
        occurrence = int(head.group(2))
        if occurrence < 1:
            raise _fail(rule, "occurrences count from 1", f"#{head.group(2)}")

    pos = head.end()
    conditions: list[Condition] = []
    while True:
        if pos >= len(rest):
            raise _fail(rule, "missing '=ACTION' at the end", rest[head.start() :] or rule)
        char = rest[pos]
        if char == "=":
            action_text = rest[pos + 1 :]
            break
        if char != ":":
            raise _fail(
                rule, "expected ':FIELD=GLOB' or '=ACTION' after the command", rest[pos:][:20]
            )
        condition, pos = _parse_condition(rule, rest, pos, protocol, command)
        conditions.append(condition)

    action = _parse_action(rule, action_text.strip(), protocol, command)
    return FaultRule(rule, protocol, command, occurrence, tuple(conditions), action)


def _parse_condition(
    rule: str, rest: str, pos: int, protocol: str, command: str
) -> tuple[Condition, int]:
    match = _CONDITION.match(rest, pos)
    if match is None:
        raise _fail(rule, "expected ':FIELD=GLOB'", rest[pos:][:20])
    name = match.group(1).lower()
    if name not in FIELDS[protocol]:
        known = ", ".join(sorted(FIELDS[protocol]))
        raise _fail(rule, f"unknown {protocol} field; use one of {known}", match.group(1))
    allowed = _FIELD_COMMANDS.get(name) if protocol == "smtp" else None
    if allowed is not None and command not in allowed:
        where = ", ".join(sorted(allowed))
        raise _fail(rule, f"the {name} field exists only for {where}", f":{match.group(1)}=")
    if name == "helo" and command == "connect":
        raise _fail(rule, "the helo field is not known at connect", ":helo=")
    start = end = match.end()
    while end < len(rest):
        if rest[end] == "[":  # a bracket expression may hold '=' or ':'
            close = _bracket_end(rest, end)
            if close is not None:
                end = close + 1
                continue
        if rest[end] == "=":
            break
        if rest[end] == ":":
            nxt = _CONDITION.match(rest, end)
            if nxt is not None and nxt.group(1).lower() in _ALL_FIELDS:
                break
        end += 1
    pattern = rest[start:end].strip()
    if not pattern:
        raise _fail(rule, f"empty pattern for {name}", rest[pos : end + 1])
    if name in _YES_NO_FIELDS and pattern.lower() not in ("yes", "no"):
        raise _fail(rule, f"{name} is yes or no", pattern)
    if end >= len(rest):
        raise _fail(rule, "missing '=ACTION' at the end", rest[pos:])
    return Condition(name, pattern), end


def _bracket_end(text: str, start: int) -> int | None:
    """Index of the ']' closing the fnmatch bracket expression at ``start``, if any."""
    index = start + 1
    if index < len(text) and text[index] == "!":
        index += 1
    if index < len(text) and text[index] == "]":  # a leading ']' is literal
        index += 1
    close = text.find("]", index)
    return None if close < 0 else close


def _parse_action(rule: str, text: str, protocol: str, command: str) -> FaultAction:
    if not text:
        raise _fail(rule, "missing action after '='")
    word, _, remainder = text.partition(" ")
    keyword = word.lower()
    if keyword == "disconnect":
        if remainder.strip():
            raise _fail(rule, "disconnect takes no text", remainder.strip())
        return FaultAction("disconnect")
    if keyword == "delay":
        match = _DELAY.fullmatch(text)
        if match is None:
            raise _fail(rule, "expected 'delay Ns' or 'delay Nms'", text)
        seconds = float(match.group(1)) / (1000.0 if match.group(2).lower() == "ms" else 1.0)
        if not math.isfinite(seconds) or seconds > _MAX_DELAY:
            raise _fail(rule, f"a delay is at most {_MAX_DELAY:.0f}s", text)
        return FaultAction("delay", seconds=seconds)
    if keyword == "rate":
        return _parse_rate(rule, remainder, protocol, command)
    if keyword == "trickle":
        match = _TRICKLE.fullmatch(remainder.strip())
        if match is None:
            raise _fail(rule, "expected 'trickle NB/s' or 'trickle NKB/s'", text)
        factor = 1.0 if match.group(2).upper() == "B" else 1000.0
        if match.group(2).lower() == "kib":
            factor = 1024.0
        rate = float(match.group(1)) * factor
        if not 1.0 <= rate <= _MAX_TRICKLE:
            raise _fail(rule, "a trickle is 1 to 1000000 bytes a second", text)
        if command in ("starttls", "stls"):
            # the TLS handshake starts right after the go-ahead: it cannot wait for it
            raise _fail(rule, f"a trickle cannot slow down {command}", text)
        return FaultAction("trickle", bytes_per_second=rate)
    if keyword == "greylist" and not remainder.strip():
        if protocol != "smtp":
            raise _fail(rule, "greylist is an SMTP action", text)
        return FaultAction("greylist", *GREYLIST_REPLY)
    if keyword in ("greylist", "tempfail-once"):
        if not remainder.strip():
            raise _fail(
                rule, f"{keyword} needs a reply, e.g. '{keyword} 451 4.7.1 Try later'", text
            )
        status, reply_text = _parse_reply(rule, remainder.strip(), protocol)
        if keyword == "greylist" and protocol != "smtp":
            raise _fail(rule, "greylist is an SMTP action", text)
        _check_temporary(rule, keyword, status, protocol, remainder.strip())
        return FaultAction(
            "greylist" if keyword == "greylist" else "tempfail-once", status, reply_text
        )
    status, reply_text = _parse_reply(rule, text, protocol)
    return FaultAction("reply", status, reply_text)


def _parse_rate(rule: str, text: str, protocol: str, command: str) -> FaultAction:
    """``N/WINDOW[ per KEY]=REPLY`` (after ``rate``)."""
    spec, equals, reply = text.partition("=")
    example = "e.g. 'rate 100/min=421 4.7.0 Too many messages'"
    match = _RATE.fullmatch(spec.strip())
    if match is None:
        raise _fail(rule, f"expected 'rate N/WINDOW[ per KEY]=REPLY', {example}", spec.strip())
    if not equals or not reply.strip():
        raise _fail(rule, f"a rate needs '=REPLY' after it, {example}", text.strip())
    limit = int(match.group(1))
    window = float(match.group(2) or 1) * _WINDOW_UNITS[match.group(3).lower()]
    if not 1 <= limit <= _MAX_RATE_LIMIT:
        raise _fail(rule, f"a rate lets 1 to {_MAX_RATE_LIMIT} through", match.group(1))
    if not 0 < window <= _MAX_WINDOW:
        raise _fail(rule, "a rate's window is more than 0 s and at most 7 days", spec.strip())
    key = (match.group(4) or "client").lower()
    if key not in RATE_KEYS or RATE_KEYS[key] not in FIELDS[protocol]:
        known = ", ".join(k for k, name in RATE_KEYS.items() if name in FIELDS[protocol])
        raise _fail(rule, f"{protocol} rates are counted per {known}", match.group(4))
    allowed = _FIELD_COMMANDS.get(RATE_KEYS[key]) if protocol == "smtp" else None
    if allowed is not None and command not in allowed:
        where = ", ".join(sorted(allowed))
        raise _fail(rule, f"a rate per {key} exists only for {where}", f"per {match.group(4)}")
    status, reply_text = _parse_reply(rule, reply.strip(), protocol)
    return FaultAction(
        "rate", status, reply_text, seconds=window, limit=limit, per=RATE_KEYS[key]
    )


def _parse_reply(rule: str, text: str, protocol: str) -> tuple[str, str]:
    status, _, reply_text = text.partition(" ")
    reply_text = reply_text.strip()
    if any(ord(ch) < 32 and ch != "\t" for ch in reply_text) or "\x7f" in reply_text:
        raise _fail(rule, "control characters are not allowed in a reply", reply_text)
    if protocol == "smtp":
        if not (len(status) == 3 and status.isdigit()):
            raise _fail(
                rule,
                "expected an action: a 3-digit reply code, disconnect, delay, "
                "greylist, tempfail-once, rate or trickle",
                status,
            )
        if not ("2" <= status[0] <= "5" and status[1] <= "5"):
            raise _fail(rule, "SMTP reply codes run from 200 to 559", status)
        enhanced = _ENHANCED.match(reply_text)
        if enhanced is None and re.match(r"[0-9]+\.[0-9]+\.[0-9]+(\s|$)", reply_text):
            raise _fail(
                rule, "an enhanced status code is 2.X.Y, 4.X.Y or 5.X.Y", reply_text.split()[0]
            )
        if enhanced is not None and enhanced.group(1) != status[0]:
            raise _fail(
                rule,
                f"enhanced code {enhanced.group(0)} does not match reply {status}",
                enhanced.group(0),
            )
    elif protocol == "pop3":
        status = status.upper()
        if status not in ("+OK", "-ERR"):
            raise _fail(
                rule,
                "expected an action: +OK/-ERR reply, disconnect, delay, tempfail-once, "
                "rate or trickle",
                text.partition(" ")[0],
            )
    else:
        status = status.upper()
        if status not in _IMAP_STATUSES:
            raise _fail(
                rule,
                "expected an action: OK/NO/BAD/BYE/PREAUTH reply, disconnect, "
                "delay, tempfail-once, rate or trickle",
                text.partition(" ")[0],
            )
    for name in _PLACEHOLDER.findall(reply_text):
        if name not in ACTION_PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in sorted(ACTION_PLACEHOLDERS))
            raise _fail(rule, f"unknown placeholder; use {known}", "{" + name + "}")
    return status, reply_text


def _check_temporary(rule: str, keyword: str, status: str, protocol: str, text: str) -> None:
    if protocol == "smtp" and not status.startswith("4"):
        raise _fail(rule, f"{keyword} needs a temporary (4xx) reply", text)
    if protocol == "pop3" and status != "-ERR":
        raise _fail(rule, f"{keyword} needs an -ERR reply", text)
    if protocol == "imap" and status not in ("NO", "BAD", "BYE"):
        raise _fail(rule, f"{keyword} needs a NO, BAD or BYE reply", text)


# ---------------------------------------------------------------------------
# Matching one session's commands
# ---------------------------------------------------------------------------


def _normalise_fields(fields: Mapping[str, FieldValue]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in fields.items():
        name = _FIELD_ALIASES.get(key, key)
        if value is None:
            continue
        if isinstance(value, bool):
            result[name] = "yes" if value else "no"
        else:
            result[name] = str(value)
    return result


def placeholder_values(fields: Mapping[str, str]) -> dict[str, str]:
    """The values of a reply's placeholders (``{to}``, ``{domain}``...) from an event's fields."""
    values = {name: fields.get(name, "") for name in ACTION_PLACEHOLDERS if name != "domain"}
    address = fields.get("to") or fields.get("from") or ""
    values["domain"] = address.rpartition("@")[2] if "@" in address else ""
    return values


class SessionFaults:
    """The faults of one session: occurrence counts and the fields known so far.

    Fields given to :meth:`FaultPlan.session`, :meth:`set` or :meth:`on_command`
    are remembered for the following commands (``to`` excepted; ``from`` until
    the transaction ends). ``None`` values are ignored; booleans become
    ``"yes"``/``"no"``. Because ``from`` is a Python keyword, ``sender=`` (or
    ``**{"from": ...}``) works too, and ``rcpt=`` for ``to``.
    """

    def __init__(
        self, plan: FaultPlan, session_id: str, protocol: str, fields: Mapping[str, FieldValue]
    ) -> None:
        self.plan = plan
        self.session_id = session_id
        self.protocol = protocol
        self._lock = threading.Lock()
        self._fields: dict[str, str] = {"tls": "no", "auth": "no"}
        self._fields.update(_normalise_fields(fields))
        self._fields.pop("to", None)
        self._session_counts: dict[str, int] = {}
        self._transaction_counts: dict[str, int] = {}
        self.last_fired: FiredFault | None = None  # what on_command fired last

    def set(self, **fields: FieldValue) -> None:
        """Remember fields for the rest of the session (``tls=True`` after STARTTLS...)."""
        with self._lock:
            self._fields.update(_normalise_fields(fields))
            self._fields.pop("to", None)

    def reset_transaction(self) -> None:
        """A mail transaction ended (RSET, HELO/EHLO, end of message, 421...)."""
        with self._lock:
            self._transaction_counts.clear()
            self._fields.pop("from", None)

    def count(self, command: str) -> int:
        """How many times the command was seen in its current scope."""
        command = command.lower()
        with self._lock:
            return self._counts_for(command).get(command, 0)

    def _counts_for(self, command: str) -> dict[str, int]:
        if command in TRANSACTION_COMMANDS[self.protocol]:
            return self._transaction_counts
        return self._session_counts

    def on_command(self, command: str, **fields: FieldValue) -> FaultAction | None:
        """Count the command and return the action of the fault that fires, if any."""
        command = command.lower()
        given = _normalise_fields(fields)
        if command in _RESETTING[self.protocol]:
            self.reset_transaction()
        with self._lock:
            counts = self._counts_for(command)
            counts[command] = occurrence = counts.get(command, 0) + 1
            self._fields.update((k, v) for k, v in given.items() if k != "to")
            current = dict(self._fields)
            if "to" in given:
                current["to"] = given["to"]
        event = FaultContext(self.protocol, command, occurrence, current, self.session_id)
        fired = self.plan.check_fired(event)
        self.last_fired = fired
        if self.protocol == "smtp" and command == "data-end":
            self.reset_transaction()
        return fired.action if fired is not None else None
