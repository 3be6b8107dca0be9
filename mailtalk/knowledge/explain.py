"""Explain a reply: what it means, whether to retry, who acts, causes and fixes.

The knowledge is data (``categories.toml``, ``contexts.toml``, ``replies_*.toml``,
``pop3_codes.toml``, ``imap_codes.toml`` and the code tables of ``codes.py``);
this module matches a reply against it and assembles one :class:`Explanation`.
Files are read on first use and only for the protocol at hand: explaining an
SMTP reply never parses the IMAP tables.

Besides the reply, an explanation can know the command it answered (``503``
after RCPT is not ``503`` after AUTH), the server's greeting (which names the
server software: ``software.toml``) and whether the server handles the
address's domain itself (is its MX). Wordings are matched only where they hold:

- a wording tied to commands (``commands``) only after those commands;
- a program's own wording (its ``origin`` names a program of ``software.toml``)
  not when the greeting names another program;
- the general SMTP keyword entries (``generic``) lend POP3 and IMAP replies
  their category and cause, never their SMTP advice (fixes).

Deciding the category, first hit wins:

1. success and intermediate replies are ``ok``;
2. a wording pattern (providers first, then MTAs and servers); a wording that
   means two things (Exim's "Unrouteable address": no such user, or no route to
   the domain) has a reading for a server that handles the domain itself
   (``local``) and may have one for a server that does not (``remote``);
3. the POP3/IMAP response code (``[IN-USE]``, ``[OVERQUOTA]``);
4. the command the reply answered, where that settles it (503 after RCPT);
5. the enhanced code (``5.1.1``), by detail and then by subject;
6. the basic code (``550``), then its first two digits;
7. the POP3/IMAP status (``BAD`` is a syntax error, ``BYE`` the service going away).

What the one-line explanation leads with (:attr:`Explanation.lead`), most
specific first: a program's or provider's own wording; the response code; what
the code means after the command (when that agrees with the category); a
general wording; what the code means after the command otherwise; the
category's first cause (each category has its text per protocol).

Fixes: a wording's or a response code's own fix replaces the category's fixes
for that reader (user or admin); they would say the same in other words.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from mailtalk.knowledge import codes, read_data
from mailtalk.knowledge.replies import ParsedReply, Protocol, parse

CATEGORIES: Final = (
    "relay_denied",
    "auth_required",
    "auth_failed",
    "unknown_user",
    "sender_rejected",
    "sender_domain",
    "sequence_error",
    "syntax_error",
    "mailbox_full_quota",
    "storage_temp",
    "message_too_big",
    "spam_or_policy_block",
    "rate_limited_greylist",
    "tls_required",
    "dns_or_routing",
    "mailbox_locked",
    "login_delay",
    "service_unavailable",
    "ok",
    "other",
)

# The pattern files of each protocol, in matching order.
PATTERN_FILES: Final[dict[str, tuple[str, ...]]] = {
    "smtp": ("replies_providers.toml", "replies_smtp.toml"),
    "pop3": ("replies_pop3.toml",),
    "imap": ("replies_imap.toml",),
}
CODE_FILES: Final = {"pop3": "pop3_codes.toml", "imap": "imap_codes.toml"}
_POSITIVE_STATUS: Final = {"+OK", "OK", "PREAUTH", "+"}


class Category(NamedTuple):
    name: str
    title: str
    summary: str
    transient: bool | None
    side: str
    causes: tuple[str, ...]
    fixes_user: tuple[str, ...]
    fixes_admin: tuple[str, ...]


class Reading(NamedTuple):
    """One meaning of a wording that means different things on different servers."""

    category: str
    cause: str


class Software(NamedTuple):
    """A server program that can be told from its greeting (``software.toml``)."""

    key: str
    name: str
    banner: str  # regex, "" when the greeting never names it
    origin: str  # regex over a wording's origin


class Pattern(NamedTuple):
    """One real wording (``replies_*.toml``) and what it means."""

    id: str
    match: str
    literal: str  # lower-case text every match contains, "" when unknown
    category: str
    codes: tuple[str, ...]
    commands: tuple[str, ...]
    transient: bool | None
    origin: str
    cause: str
    fix_user: str
    fix_admin: str
    source: str
    generic: bool
    protocol: str
    # where the wording means something else when the server handles the address's
    # domain itself (local) or does not (remote); category and cause above are the
    # reading when that is not known
    local: Reading | None = None
    remote: Reading | None = None


class ResponseCode(NamedTuple):
    """A POP3 extended response code or an IMAP response code."""

    name: str
    protocol: str
    meaning: str
    rfc: str
    category: str
    transient: bool | None
    side: str
    causes: tuple[str, ...]
    fixes_user: tuple[str, ...]
    fixes_admin: tuple[str, ...]


class Context(NamedTuple):
    protocol: str
    code: str
    commands: tuple[str, ...]
    meaning: str
    category: str | None
    rfc: str


@dataclass
class Explanation:
    """Everything ``mailtalk explain`` says about one reply."""

    reply: str
    protocol: str | None
    code: str | None
    enhanced_code: str | None
    response_code: str | None
    category: str
    title: str
    transient: bool | None
    summary: str
    side: str
    meaning: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    fixes_user: list[str] = field(default_factory=list)
    fixes_admin: list[str] = field(default_factory=list)
    command: str | None = None
    context: str | None = None
    other_contexts: list[tuple[str, str]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    contradiction: str | None = None
    matched: Pattern | None = None
    known: bool = True
    lead: str = ""  # what the one-line explanation says after the title
    software: str | None = None  # the server program its greeting names

    @property
    def retry(self) -> str:
        """Whether retrying helps, in words."""
        if self.category == "ok":
            return "success"
        if self.transient is None:
            return "see below"
        return (
            "temporary: retrying later can work"
            if self.transient
            else "permanent: do not retry unchanged"
        )

    def headline(self) -> str:
        parts = [p for p in (self.code, self.enhanced_code) if p]
        if self.response_code:
            parts.append(f"[{self.response_code}]")
        label = " ".join(parts) or self.reply[:40]
        return f"{label} — {self.title}"

    def one_line(self) -> str:
        """The REPL's hint under a failure reply."""
        word = {True: "temporary", False: "permanent", None: ""}[self.transient]
        first = self.lead or (self.causes[0] if self.causes else self.summary)
        lead = f"{self.title} ({word})" if word else self.title
        return f"{lead}: {first}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "reply": self.reply,
            "protocol": self.protocol,
            "code": self.code,
            "enhanced_code": self.enhanced_code,
            "response_code": self.response_code,
            "category": self.category,
            "title": self.title,
            "transient": self.transient,
            "summary": self.summary,
            "side": self.side,
            "meaning": self.meaning,
            "causes": self.causes,
            "fixes": {"user": self.fixes_user, "admin": self.fixes_admin},
            "command": self.command,
            "context": self.context,
            "contexts": [{"after": c, "meaning": m} for c, m in self.other_contexts],
            "references": self.references,
            "contradiction": self.contradiction,
            "software": self.software,
            "matched": None,
        }
        if self.matched is not None:
            data["matched"] = {
                "id": self.matched.id,
                "origin": self.matched.origin or None,
                "source": self.matched.source,
            }
        return data


# --- loading ------------------------------------------------------------------


def _read(name: str) -> dict[str, Any]:
    return read_data(name)


def _strings(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {key} must be a list of strings")
    return tuple(v.strip() for v in value)


def _string(table: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = table.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{where}: {key} must be a{' non-empty' if required else ''} string")
    return value.strip()


def _category_name(value: Any, where: str) -> str:
    if value not in CATEGORIES:
        raise ValueError(f"{where}: unknown category {value!r}")
    return str(value)


def _transient(table: dict[str, Any], where: str) -> bool | None:
    value = table.get("transient")
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{where}: transient must be true or false")
    return value


_CATEGORY_PROSE: Final = ("summary", "side", "causes", "fixes_user", "fixes_admin")


def _category_entry(name: str, table: dict[str, Any], where: str) -> Category:
    return Category(
        name=name,
        title=_string(table, "title", where, True),
        summary=_string(table, "summary", where, True),
        transient=_transient(table, where),
        side=_string(table, "side", where, True),
        causes=_strings(table, "causes", where),
        fixes_user=_strings(table, "fixes_user", where),
        fixes_admin=_strings(table, "fixes_admin", where),
    )


@functools.cache
def _categories() -> tuple[dict[tuple[str, str], Category], dict[str, str], dict[str, str]]:
    """Categories by (name, protocol), protocol "" for the text of all protocols;
    ``[category.NAME.imap]`` replaces the text that differs for IMAP."""
    data = _read("categories.toml")
    categories: dict[tuple[str, str], Category] = {}
    for name, table in data["category"].items():
        where = f"categories.toml [category.{name}]"
        base = _category_entry(_category_name(name, where), table, where)
        categories[name, ""] = base
        for protocol in PATTERN_FILES:
            override = table.get(protocol)
            if override is None:
                continue
            unknown = set(override) - set(_CATEGORY_PROSE)
            if unknown or not isinstance(override, dict):
                raise ValueError(f"{where}.{protocol}: only {', '.join(_CATEGORY_PROSE)}")
            merged = {**table, **override}
            categories[name, protocol] = _category_entry(name, merged, f"{where}.{protocol}")
    missing = set(CATEGORIES) - {name for name, _ in categories}
    if missing:
        raise ValueError(f"categories.toml: missing {sorted(missing)}")
    by_enhanced = {
        k: _category_name(v, f"[by_enhanced] {k}") for k, v in data["by_enhanced"].items()
    }
    by_basic = {k: _category_name(v, f"[by_basic] {k}") for k, v in data["by_basic"].items()}
    return categories, by_enhanced, by_basic


def category(name: str, protocol: str | None = None) -> Category:
    """The general explanation of a category, in the words for ``protocol``."""
    table = _categories()[0]
    return table.get((name, protocol or ""), table[name, ""])


@functools.cache
def patterns(name: str) -> tuple[Pattern, ...]:
    """The wordings of one ``replies_*.toml`` file, in matching order."""
    protocol = next(p for p, files in PATTERN_FILES.items() if name in files)
    result = []
    for index, table in enumerate(_read(name).get("reply", [])):
        where = f"{name} reply #{index + 1}"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: not a table")
        ident = _string(table, "id", where, True)
        where = f"{name} [{ident}]"
        match = _string(table, "match", where, True)
        raw_codes = table.get("codes", [])
        if not isinstance(raw_codes, list):
            raise ValueError(f"{where}: codes must be a list")
        readings = {key: _reading(table.get(key), f"{where} {key}") for key in ("local", "remote")}
        result.append(
            Pattern(
                id=ident,
                match=match,
                literal=_leading_literal(match),
                category=_category_name(table.get("category"), where),
                codes=tuple(str(c).upper() for c in raw_codes),
                commands=_strings(table, "commands", where),
                transient=_transient(table, where),
                origin=_string(table, "origin", where),
                cause=_string(table, "cause", where),
                fix_user=_string(table, "fix_user", where),
                fix_admin=_string(table, "fix_admin", where),
                source=_string(table, "source", where, True),
                generic=bool(table.get("generic", False)),
                protocol=protocol,
                local=readings["local"],
                remote=readings["remote"],
            )
        )
    return tuple(result)


def _reading(value: Any, where: str) -> Reading | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a table with category and cause")
    category_name = _category_name(value.get("category"), where)
    return Reading(category_name, _string(value, "cause", where, True))


@functools.cache
def software() -> tuple[Software, ...]:
    """The programs of ``software.toml``, in file order."""
    result = []
    for key, table in _read("software.toml").get("software", {}).items():
        where = f"software.toml [software.{key}]"
        name = _string(table, "name", where, True)
        result.append(
            Software(
                key=key,
                name=name,
                banner=_string(table, "banner", where),
                origin=_string(table, "origin", where) or rf"\b{re.escape(name)}\b",
            )
        )
    return tuple(result)


def software_of_banner(banner: str | None) -> Software | None:
    """The program a greeting names, or None."""
    if not banner:
        return None
    for entry in software():
        if entry.banner and re.search(entry.banner, banner, re.I):
            return entry
    return None


@functools.cache
def software_of_origin(origin: str) -> frozenset[str]:
    """The programs (keys) whose wording an entry with this ``origin`` is; none for
    the general wordings ("generic (RFC 1939 example)") and for providers."""
    if not origin or origin.lower().startswith("generic"):
        return frozenset()
    return frozenset(entry.key for entry in software() if re.search(entry.origin, origin))


@functools.cache
def response_codes(protocol: str) -> dict[str, ResponseCode]:
    """The POP3 or IMAP response codes, by name."""
    name = CODE_FILES[protocol]
    result = {}
    for key, table in _read(name).get("code", {}).items():
        where = f"{name} [code.{key}]"
        result[key.upper()] = ResponseCode(
            name=key.upper(),
            protocol=protocol,
            meaning=_string(table, "meaning", where, True),
            rfc=_string(table, "rfc", where, True),
            category=_category_name(table.get("category", "ok"), where),
            transient=_transient(table, where),
            side=_string(table, "side", where),
            causes=_strings(table, "causes", where),
            fixes_user=_strings(table, "fixes_user", where),
            fixes_admin=_strings(table, "fixes_admin", where),
        )
    return result


@functools.cache
def contexts() -> tuple[Context, ...]:
    result = []
    for index, table in enumerate(_read("contexts.toml").get("context", [])):
        where = f"contexts.toml context #{index + 1}"
        raw_category = table.get("category")
        result.append(
            Context(
                protocol=_string(table, "protocol", where, True),
                code=_string(table, "code", where, True).upper(),
                commands=_strings(table, "commands", where),
                meaning=_string(table, "meaning", where, True),
                category=None if raw_category is None else _category_name(raw_category, where),
                rfc=_string(table, "rfc", where),
            )
        )
    return tuple(result)


@functools.cache
def status_meanings() -> dict[tuple[str, str], str]:
    """What POP3's +OK/-ERR and IMAP's OK/NO/BAD/BYE/PREAUTH/+ say by themselves."""
    data = _read("contexts.toml").get("status", {})
    return {
        (protocol, status): text
        for protocol, table in data.items()
        for status, text in table.items()
    }


# --- matching -----------------------------------------------------------------


def _normalise_command(command: str | None) -> str | None:
    """``"rcpt to:<x>"`` -> ``"RCPT"``; ``"UID FETCH ..."`` -> ``"FETCH"``; the
    pseudo-commands "greeting" and "end of data" stay as they are."""
    if not command:
        return None
    text = command.strip()
    if text.lower() in ("greeting", "end of data", "auth response"):
        return text.lower() if text.lower() != "auth response" else "AUTH response"
    words = text.split()
    if not words:
        return None
    if len(words) > 1 and any(c.isdigit() for c in words[0]):
        words = words[1:]  # an IMAP tag: "a001 LOGIN ..."
    verb = words[0].upper().split(":")[0]
    if verb == "UID" and len(words) > 1:
        verb = words[1].upper()
    return verb


_COMPILED: dict[str, re.Pattern[str]] = {}
# A run of plain or escaped-punctuation characters at the start of a regex.
_LITERAL_HEAD: Final = re.compile(r"(?:\\[.\[\](){}*+?|^$\\/-]|[^\\.\[\](){}*+?|^$])+")


def _leading_literal(source: str) -> str:
    """Text that any match of ``source`` must contain, for a cheap test before the
    regex is compiled: its leading literal characters, when it has no alternation."""
    if "|" in source:
        return ""
    head = _LITERAL_HEAD.match(source)
    if head is None:
        return ""
    literal = re.sub(r"\\(.)", r"\1", head.group(0))
    if source[head.end() : head.end() + 1] in ("?", "*", "{"):
        literal = literal[:-1]  # a quantifier makes the last character optional
    return literal.lower() if len(literal) >= 4 else ""


def regex(pattern: Pattern) -> re.Pattern[str]:
    """The pattern's regex, compiled on first use: matching stops at the first hit,
    so most of the hundreds of wordings are never compiled in a run."""
    compiled = _COMPILED.get(pattern.match)
    if compiled is None:
        try:
            compiled = re.compile(pattern.match, re.I)
        except re.error as error:
            raise ValueError(f"[{pattern.id}]: bad match regex: {error}") from error
        _COMPILED[pattern.match] = compiled
    return compiled


def _applies(
    pattern: Pattern, parsed: ParsedReply, command: str | None, server: str | None = None
) -> bool:
    if pattern.commands and command not in pattern.commands:
        return False
    if server is not None and pattern.origin:
        programs = software_of_origin(pattern.origin)
        if programs and server not in programs:
            return False  # another program's wording
    if not pattern.codes:
        return True
    return (parsed.code or "").upper() in pattern.codes


def match_pattern(
    parsed: ParsedReply,
    protocols: tuple[str, ...],
    command: str | None = None,
    server: str | None = None,
) -> Pattern | None:
    """The first wording pattern that matches the reply, over the files of
    ``protocols`` (and the generic SMTP keywords for POP3 and IMAP). ``server`` is
    the key of the program the greeting names: other programs' wordings are out."""
    # one line: the words of a multi-line reply match across its line breaks
    subject = parsed.subject
    lowered = subject.lower()
    for protocol in protocols:
        for name in PATTERN_FILES[protocol]:
            for pattern in patterns(name):
                if pattern.literal and pattern.literal not in lowered:
                    continue
                if _applies(pattern, parsed, command, server) and regex(pattern).search(
                    subject
                ):
                    return pattern
    if "smtp" not in protocols:
        for pattern in patterns("replies_smtp.toml"):
            if (
                pattern.generic
                and _applies(pattern, parsed, command, server)
                and regex(pattern).search(subject)
            ):
                return pattern
    return None


def _context_for(parsed: ParsedReply, command: str | None) -> tuple[Context | None, list[Context]]:
    """The context entry for this code after ``command``, and all entries for the code."""
    if parsed.protocol is None or parsed.code is None:
        return None, []
    code = parsed.code.upper()
    entries = [c for c in contexts() if c.protocol == parsed.protocol and c.code == code]
    if command is None:
        return None, entries
    for entry in entries:
        if command in entry.commands:
            return entry, entries
    return None, entries


def _enhanced_category(enhanced: str) -> str | None:
    _, by_enhanced, _ = _categories()
    _, subject, detail = enhanced.split(".")
    return by_enhanced.get(f"X.{subject}.{detail}") or by_enhanced.get(f"X.{subject}")


def _basic_category(basic: int) -> str | None:
    _, _, by_basic = _categories()
    text = str(basic)
    return by_basic.get(text) or by_basic.get(text[:2]) or by_basic.get(text[0])


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    result = []
    for item in items:
        if item and item not in seen:
            seen.add(item)
            result.append(item)
    return result


def explain(
    text: str,
    protocol: Protocol | None = None,
    command: str | None = None,
    *,
    banner: str | None = None,
    local: bool | None = None,
) -> Explanation:
    """Explain one reply, or a bare code, given as the user typed it.

    ``command`` is the command the reply answered: its name (``RCPT``) or the
    whole line (``RCPT TO:<bob@example.org>``, whose domain then counts).
    ``banner`` is the server's greeting. ``local`` says whether the server handles
    the address's domain itself (is its MX); None when unknown, and then a
    greeting that names a host in that domain counts as yes.
    """
    return explain_parsed(parse(text, protocol), command, banner=banner, local=local)


# "<bob@example.org>" in a command line or a reply
_ADDRESS: Final = re.compile(r"<[^<>@\s]*@([A-Za-z0-9.-]+)>")
_SMTP_GREETING_HOST: Final = re.compile(r"^\s*220[ -]([A-Za-z0-9.-]+\.[A-Za-z0-9-]+)\b")


def _handles_domain(banner: str | None, *texts: str | None) -> bool | None:
    """True when the SMTP greeting names a host in the address's domain
    (``220 mx.exim.test`` and ``<bob@exim.test>``); None otherwise: a server
    named otherwise may still be the domain's MX."""
    host = _SMTP_GREETING_HOST.match(banner or "")
    if host is None:
        return None
    for text in texts:
        address = _ADDRESS.search(text or "")
        if address is not None:
            name, domain = host[1].lower().rstrip("."), address[1].lower().rstrip(".")
            return True if name == domain or name.endswith("." + domain) else None
    return None


def _readings(pattern: Pattern, local: bool | None) -> list[Reading]:
    """The wording's readings, the likelier first."""
    default = Reading(pattern.category, pattern.cause)
    if local is True and pattern.local is not None:
        first = pattern.local
    elif local is False and pattern.remote is not None:
        first = pattern.remote
    else:
        first = default
    result = [first]
    for other in (default, pattern.local, pattern.remote):
        if other is not None and other not in result:
            result.append(other)
    return result


def explain_parsed(
    parsed: ParsedReply,
    command: str | None = None,
    *,
    banner: str | None = None,
    local: bool | None = None,
) -> Explanation:
    command_line = command
    command = _normalise_command(command) or _normalise_command(parsed.command)
    protocols: tuple[str, ...] = (parsed.protocol,) if parsed.protocol else ("smtp", "pop3", "imap")
    basic = parsed.basic
    status = (parsed.code or "").upper()
    enhanced = parsed.enhanced_code
    server = software_of_banner(banner)
    if local is None and parsed.protocol in (None, "smtp") and command in (None, "RCPT"):
        # the readings are about a recipient's domain: RCPT's address, or the reply's
        local = _handles_domain(banner, command_line, parsed.subject)
    response: ResponseCode | None = None
    if parsed.response_code:
        for candidate in protocols if parsed.protocol else ("imap", "pop3"):
            if candidate in CODE_FILES:
                response = response_codes(candidate).get(parsed.response_code)
                if response is not None:
                    break

    context, all_contexts = _context_for(parsed, command)
    pattern: Pattern | None = None
    readings: list[Reading] = []
    name: str | None = None
    positive = (basic is not None and basic < 400) or status in _POSITIVE_STATUS
    if positive:
        name = "ok"
    if name is None and parsed.text:
        pattern = match_pattern(parsed, protocols, command, server.key if server else None)
        if pattern is not None:
            readings = _readings(pattern, local)
            name = readings[0].category
    if name is None and response is not None:
        name = response.category
    if name is None and context is not None and context.category is not None:
        name = context.category
    if name is None and enhanced is not None:
        name = _enhanced_category(enhanced)
    if name is None and basic is not None:
        name = _basic_category(basic)
    if name is None:
        name = {"BAD": "syntax_error", "BYE": "service_unavailable"}.get(status, "other")
    known = (
        pattern is not None
        or response is not None
        or parsed.code is not None
        or enhanced is not None
    )

    protocol = (
        parsed.protocol
        or (pattern.protocol if pattern else None)
        or (response.protocol if response else None)
    )
    cat = category(name, protocol)
    title = cat.title
    if name == "other" and basic is not None and not parsed.text:
        # a bare 550 names no cause; say what the code itself says
        title = {4: "not done for now", 5: "refused"}.get(basic // 100, title)
        title += ": the reply's text would say why"
    transient = _decide_transient(parsed, basic, enhanced, response, pattern, cat)
    # The general SMTP keyword entries give POP3 and IMAP replies their category and
    # cause, not their SMTP advice ("MAIL FROM needs angle brackets" for an IMAP BAD).
    own_fixes = pattern is not None and (pattern.protocol == protocol or not pattern.generic)

    meaning: list[str] = []
    references: list[str] = []
    summary = cat.summary
    if basic is not None:
        entry = codes.basic_code(basic)
        if entry is not None:
            meaning.append(f"{basic}: {entry.meaning}")
            references.append(entry.rfc)
            if not parsed.text and not enhanced:
                summary = entry.meaning
        else:
            try:
                first, second = codes.digit_meaning(basic)
                meaning.append(f"{basic} is not a standard code; its digits say: {first} {second}")
                references.append("RFC 5321, section 4.2.1")
            except ValueError:
                meaning.append(f"{basic} is not an SMTP reply code.")
    if enhanced is not None:
        enhanced_entry = codes.enhanced_code(enhanced)
        if enhanced_entry is not None:
            label = enhanced_entry.title or "(no sample text)"
            meaning.append(f"{enhanced}: {label}. {enhanced_entry.description}")
            references.append(f"{enhanced_entry.reference} (IANA SMTP Enhanced Status Codes)")
            if basic is None and not parsed.text:
                summary = f"{label}: {enhanced_entry.description}"
    if response is not None:
        meaning.append(f"[{response.name}]: {response.meaning}")
        references.append(response.rfc)
        if not parsed.text and parsed.code is None:
            summary = response.meaning
    if status and basic is None:
        meaning.append(status_meanings().get((protocol or "", status), ""))
    if context is not None:
        references.append(context.rfc)

    causes: list[str] = []
    fixes_user: list[str] = []
    fixes_admin: list[str] = []
    if pattern is not None:
        references.append(pattern.source)
    if pattern is not None:
        causes.extend(reading.cause for reading in readings)
    if own_fixes and pattern is not None:
        fixes_user.append(pattern.fix_user)
        fixes_admin.append(pattern.fix_admin)
    same_response = response is not None and response.category == name
    if response is not None and same_response:
        causes.extend(response.causes)
        # the code's fixes only where the wording gave none: they say the same
        if not any(fixes_user):
            fixes_user.extend(response.fixes_user)
        if not any(fixes_admin):
            fixes_admin.extend(response.fixes_admin)
    if name == "other" and pattern is not None and causes and causes[0]:
        # "other" says nothing the wording's own entry does not say better
        summary = causes[0]
    else:
        causes.extend(cat.causes)
        # the category's fixes are the general form of what a wording or code says
        if not any(fixes_user):
            fixes_user.extend(cat.fixes_user)
        if not any(fixes_admin):
            fixes_admin.extend(cat.fixes_admin)

    # What the one-line explanation leads with, most specific first.
    wording_cause = readings[0].cause if readings else ""
    after_command = context.meaning if context is not None else ""
    agrees = context is not None and context.category == name
    # a context that hedges ("no such user, relaying denied, or a policy; the text
    # says which") only where no wording said which
    hedges = context is not None and context.category is None and pattern is None
    candidates = [
        wording_cause if pattern is not None and pattern.origin else "",
        response.meaning if response is not None and same_response else "",
        after_command if agrees else "",
        wording_cause,
        after_command if hedges else "",
        *cat.causes,
        summary,
    ]
    lead = next((c for c in candidates if c), "")

    contradiction = None
    if basic is not None and enhanced is not None:
        try:
            contradiction = codes.contradiction(basic, enhanced)
        except ValueError:
            contradiction = None

    side = cat.side
    return Explanation(
        reply=parsed.raw,
        protocol=protocol,
        code=parsed.code,
        enhanced_code=enhanced,
        response_code=parsed.response_code,
        category=name,
        title=title,
        transient=None if name == "ok" else transient,
        summary=summary,
        side=side,
        meaning=[m for m in meaning if m],
        causes=_dedupe(causes) if name != "ok" else [],
        fixes_user=_dedupe(fixes_user) if name != "ok" else [],
        fixes_admin=_dedupe(fixes_admin) if name != "ok" else [],
        command=command,
        context=context.meaning if context is not None else None,
        # What the code means after each command, when nothing more specific
        # (a wording, a response code, the command itself) has settled it.
        other_contexts=[]
        if context is not None or pattern is not None or response is not None
        else [(", ".join(c.commands), c.meaning) for c in all_contexts],
        references=_dedupe(references),
        contradiction=contradiction,
        matched=pattern,
        known=known,
        lead=lead if name != "ok" else "",
        software=server.name if server else None,
    )


def _decide_transient(
    parsed: ParsedReply,
    basic: int | None,
    enhanced: str | None,
    response: ResponseCode | None,
    pattern: Pattern | None,
    cat: Category,
) -> bool | None:
    # For SMTP the first digit is what every client acts on (RFC 5321 4.2.1).
    if basic is not None:
        return {4: True, 5: False}.get(basic // 100)
    if enhanced is not None and parsed.protocol == "smtp":
        return {"4": True, "5": False}.get(enhanced[0])
    if response is not None and response.transient is not None:
        return response.transient
    if pattern is not None and pattern.transient is not None:
        return pattern.transient
    return cat.transient
