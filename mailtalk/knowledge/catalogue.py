"""The catalogue of replies: categories, wordings, response codes, contexts and programs.

The reply knowledge is data: ``categories.toml`` (the categories, their text per
protocol, and which enhanced or basic code means which), ``replies_*.toml`` (real
wordings and what they mean), ``pop3_codes.toml`` and ``imap_codes.toml`` (the
response codes), ``contexts.toml`` (what a code means after a command, and what a
POP3 or IMAP status says by itself) and ``software.toml`` (the server programs a
greeting names). This module reads them into typed entries and checks them; what
an entry means for one reply is decided in ``explain.py``.

Files are read on first use, each once, and only for the protocol at hand:
explaining an SMTP reply never parses the IMAP tables. A wording's regex is
compiled on first use too: matching stops at the first hit, so most of the
hundreds of wordings are never compiled in a run.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final, NamedTuple

from mailtalk.knowledge import read_data

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


class Category(NamedTuple):
    """A kind of failure (or ``ok``, ``other``) and its general explanation."""

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
    # the cause is the whole story: the category's general causes are left out
    alone: bool = False
    # the cause is the category's causes in short: not listed again before them
    restates_category: bool = False
    # where the wording means something else when the server handles the address's
    # domain itself (local) or does not (remote); category and cause above are the
    # reading when that is not known
    local: Reading | None = None
    remote: Reading | None = None


class Term(NamedTuple):
    """A key term of ``terms.toml``: what a reply's words say when no wording knows them."""

    id: str
    category: str
    match: str  # regex, compiled by term_regex()
    unless: str  # regex, "" for none
    protocols: tuple[str, ...]
    codes: tuple[str, ...]  # prefixes of the reply's code ("4", "-ERR")
    commands: tuple[str, ...]
    cause: str
    taught_by: str
    not_after: tuple[str, ...] = ()  # commands after which the words mean something else


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
    """What a code means after some commands (``contexts.toml``): 503 after RCPT."""

    protocol: str
    code: str
    commands: tuple[str, ...]
    meaning: str
    category: str | None
    rfc: str


# --- reading and checking -----------------------------------------------------


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
def _category_file() -> dict[str, Any]:
    """``categories.toml``, parsed once: every explanation needs it."""
    return read_data("categories.toml")


@functools.cache
def _categories() -> tuple[dict[tuple[str, str], Category], dict[str, str], dict[str, str]]:
    """Categories by (name, protocol), protocol "" for the text of all protocols;
    ``[category.NAME.imap]`` replaces the text that differs for IMAP."""
    data = _category_file()
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
    for index, table in enumerate(read_data(name).get("reply", [])):
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
                alone=bool(table.get("alone", False)),
                restates_category=bool(table.get("restates_category", False)),
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
    for key, table in read_data("software.toml").get("software", {}).items():
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
    for key, table in read_data(name).get("code", {}).items():
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
    """The entries of ``contexts.toml``, in file order."""
    result = []
    for index, table in enumerate(read_data("contexts.toml").get("context", [])):
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
    data = read_data("contexts.toml").get("status", {})
    return {
        (protocol, status): text
        for protocol, table in data.items()
        for status, text in table.items()
    }


@functools.cache
def terms() -> tuple[Term, ...]:
    """The key terms of ``terms.toml``, in matching order; their regexes are compiled
    on first use (:func:`term_regex`): matching stops at the first hit."""
    result = []
    data = read_data("terms.toml")
    lists = data.get("command_lists", {})
    for index, table in enumerate(data.get("term", [])):
        where = f"terms.toml term #{index + 1}"
        ident = _string(table, "id", where, True)
        where = f"terms.toml [{ident}]"
        protocols = _strings(table, "protocols", where)
        if set(protocols) - set(PATTERN_FILES):
            raise ValueError(f"{where}: protocols must be among {', '.join(PATTERN_FILES)}")
        result.append(
            Term(
                id=ident,
                category=_category_name(table.get("category"), where),
                match=_string(table, "match", where, True),
                unless=_string(table, "unless", where),
                protocols=protocols,
                codes=tuple(c.upper() for c in _strings(table, "codes", where)),
                commands=_strings(table, "commands", where),
                cause=_string(table, "cause", where),
                taught_by=_string(table, "taught_by", where, True),
                not_after=_command_list(table, lists, where),
            )
        )
    return tuple(result)


def _command_list(table: dict[str, Any], lists: dict[str, Any], where: str) -> tuple[str, ...]:
    """A term's ``not_after``: its commands, or "@NAME", a list of [command_lists]."""
    value = table.get("not_after")
    if isinstance(value, str) and value.startswith("@"):
        if value[1:] not in lists:
            raise ValueError(f"{where}: not_after names no [command_lists] entry {value[1:]}")
        return _strings(lists, value[1:], where)
    return _strings(table, "not_after", where)


@functools.cache
def term_regex(source: str) -> re.Pattern[str]:
    """A term's ``match`` or ``unless``, compiled once."""
    try:
        return re.compile(source)
    except re.error as error:
        raise ValueError(f"terms.toml: {error} in {source[:60]!r}") from None


@functools.cache
def deferred_codes() -> tuple[frozenset[str], frozenset[str]]:
    """The response codes and enhanced codes (``X.7.1``) too broad to decide when a
    reply's words say more (``categories.toml`` [defer])."""
    table = _category_file().get("defer", {})
    where = "categories.toml [defer]"
    return (
        frozenset(c.upper() for c in _strings(table, "response_codes", where)),
        frozenset(_strings(table, "enhanced_codes", where)),
    )


@functools.cache
def code_means() -> dict[str, frozenset[str]]:
    """The categories a code (a basic SMTP code, IMAP's BAD) leaves open to general
    words (``categories.toml`` [code_means]); codes not listed leave all open."""
    table = _category_file().get("code_means", {})
    return {
        code: frozenset(_category_name(c, f"categories.toml [code_means] {code}") for c in names)
        for code, names in table.items()
    }


def enhanced_is_exact(enhanced: str) -> bool:
    """True when ``[by_enhanced]`` gives the code's own detail (``X.1.1``), not only
    its subject (``X.7``), a category, and the detail is not one too broad to decide."""
    _, by_enhanced, _ = _categories()
    _, subject, detail = enhanced.split(".")
    key = f"X.{subject}.{detail}"
    # a detail the table calls "other" says no more than the words do
    return by_enhanced.get(key, "other") != "other" and key not in deferred_codes()[1]


def category_of_enhanced(enhanced: str) -> str | None:
    """The category ``[by_enhanced]`` gives an enhanced code, by detail (``X.1.1``)
    and then by subject (``X.7``); None when neither is listed."""
    _, by_enhanced, _ = _categories()
    _, subject, detail = enhanced.split(".")
    return by_enhanced.get(f"X.{subject}.{detail}") or by_enhanced.get(f"X.{subject}")


def category_of_basic(basic: int) -> str | None:
    """The category ``[by_basic]`` gives a basic code (``550``), then its first two
    digits, then its first; None when none is listed."""
    _, _, by_basic = _categories()
    text = str(basic)
    return by_basic.get(text) or by_basic.get(text[:2]) or by_basic.get(text[0])


# --- compiling ----------------------------------------------------------------

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
