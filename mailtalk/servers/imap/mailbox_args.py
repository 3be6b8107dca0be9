"""IMAP mailbox arguments: names, LIST/LSUB patterns and options, STATUS items; no I/O.

A mailbox name travels in modified UTF-7 (RFC 3501 5.1.3) unless the client
enabled UTF8=ACCEPT (RFC 6855): :func:`parse_mailbox` reads one,
:func:`encode_mailbox_name` and :func:`decode_mailbox_name` convert, and
:func:`new_mailbox_name_problem` says why a name cannot be created. LIST and LSUB
take a reference and patterns (RFC 3501 6.3.8, RFC 5258's extended form with RFC
5819's STATUS return option): :func:`parse_list_command` reads them and
:func:`list_pattern_matches` applies them. STATUS takes a mailbox and a list of
items (:func:`parse_status`). Bad syntax raises ``IMAPSyntaxError``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mailtalk.servers.imap.tokens import (
    Atom,
    IMAPSyntaxError,
    Value,
    astring,
    describe,
    tokenize,
)

__all__ = [
    "MAX_MAILBOX_LEVELS",
    "ListRequest",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "list_pattern_matches",
    "list_pattern_regex",
    "new_mailbox_name_problem",
    "parse_list",
    "parse_list_command",
    "parse_mailbox",
    "parse_status",
]

# -- mailbox names (RFC 3501 5.1) ----------------------------------------------------


def _b64_utf16(chunk: str) -> str:
    data = chunk.encode("utf-16-be")
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",")


def encode_mailbox_name(name: str) -> str:
    """A mailbox name in modified UTF-7 (RFC 3501 5.1.3): ``"Entwürfe"`` -> ``"Entw&APw-rfe"``."""
    out: list[str] = []
    pending: list[str] = []
    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            if pending:
                out.append("&" + _b64_utf16("".join(pending)) + "-")
                pending = []
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    if pending:
        out.append("&" + _b64_utf16("".join(pending)) + "-")
    return "".join(out)


_MUTF7_RUN: Final = re.compile(r"&([^-]*)-")


def decode_mailbox_name(name: str) -> str:
    """A modified UTF-7 mailbox name decoded; malformed names raise IMAPSyntaxError."""
    result = _decode_mutf7(name)
    if not all(ord(c) >= 0x20 for c in result):
        raise IMAPSyntaxError("control character in a mailbox name")
    return result


def _decode_mutf7(name: str) -> str:
    if "&" not in name:
        if not name.isascii():
            raise IMAPSyntaxError("8-bit characters in a modified UTF-7 mailbox name")
        return name
    out: list[str] = []
    pos = 0
    while True:
        amp = name.find("&", pos)
        if amp < 0:
            out.append(name[pos:])
            break
        out.append(name[pos:amp])
        match = _MUTF7_RUN.match(name, amp)
        if match is None:
            raise IMAPSyntaxError("unterminated & run in a mailbox name")
        run = match.group(1)
        if not run:
            out.append("&")
        else:
            if not re.fullmatch(r"[A-Za-z0-9+,]+", run) or len(run) % 4 == 1:
                raise IMAPSyntaxError("bad modified base64 in a mailbox name")
            padded = run.replace(",", "/") + "=" * (-len(run) % 4)
            try:
                raw = base64.b64decode(padded, validate=True)
                decoded = raw.decode("utf-16-be")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise IMAPSyntaxError("bad modified UTF-7 in a mailbox name") from exc
            if any(0x20 <= ord(c) <= 0x7E for c in decoded):
                raise IMAPSyntaxError("printable ASCII encoded in a mailbox name")
            out.append(decoded)
        pos = match.end()
    return "".join(out)


# Dovecot's MAILBOX_MAX_HIERARCHY_LEVELS: deeper names are no folders a person made.
MAX_MAILBOX_LEVELS: Final = 20
# C0, DEL and C1: no terminal shows them as text.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def new_mailbox_name_problem(name: str, delimiter: str) -> str | None:
    """Why ``name``, as stored (modified UTF-7), cannot name a new mailbox; None if it can.

    As Dovecot checks CREATE and RENAME: the name must be canonical modified UTF-7
    (no 8-bit octets, no broken or needless ``&`` runs, no lone surrogates), hold
    no control character even encoded (``&AB8-`` is U+001F), and be at most
    :data:`MAX_MAILBOX_LEVELS` levels deep. The store adds its own rules (length,
    empty levels, ``/``, ``*`` and ``%``).
    """
    if _CONTROL.search(name):
        return "Control characters are not allowed in mailbox names"
    if not name.isascii():
        return ("Mailbox name is not valid modified UTF-7: 8-bit characters need "
                "ENABLE UTF8=ACCEPT")
    try:
        decoded = _decode_mutf7(name)
    except IMAPSyntaxError:
        return "Mailbox name is not valid modified UTF-7"
    if encode_mailbox_name(decoded) != name:
        return "Mailbox name is not valid modified UTF-7"
    if _CONTROL.search(decoded):
        return "Control characters are not allowed in mailbox names"
    if name.rstrip(delimiter).count(delimiter) >= MAX_MAILBOX_LEVELS:
        return f"Mailbox name has more than {MAX_MAILBOX_LEVELS} hierarchy levels"
    return None


def parse_mailbox(value: Value, *, utf8: bool = False) -> str:
    """A mailbox argument as the name to use: ``INBOX`` in any case is ``"INBOX"``.

    Without ``utf8`` (RFC 6855 UTF8=ACCEPT) the name is decoded from modified
    UTF-7; with it the name is taken as sent.
    """
    name = astring(value, "the mailbox name")
    if name.upper() == "INBOX":
        return "INBOX"
    return name if utf8 else decode_mailbox_name(name)


# -- LIST / LSUB (RFC 3501 6.3.8, RFC 5258) ------------------------------------------


def parse_list(args: str, literals: Sequence[bytes]) -> tuple[str, str]:
    """LIST/LSUB arguments as (reference, pattern), both as sent (still modified UTF-7)."""
    values = tokenize(args, literals)
    if len(values) != 2:
        raise IMAPSyntaxError("LIST takes a reference and a mailbox pattern")
    return astring(values[0], "the reference"), astring(values[1], "the mailbox pattern")


# RFC 5258 3 (and RFC 6154 5.1's SPECIAL-USE): LIST's selection and return options.
LIST_SELECT_OPTIONS: Final = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTIONS: Final = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


@dataclass(frozen=True, slots=True)
class ListRequest:
    """``LIST [(select...)] reference (patterns...) [RETURN (options...)]`` (RFC 5258).

    Names as sent (still modified UTF-7); options upper-cased; ``status_items`` the
    STATUS return option's items (RFC 5819), empty without it. ``extended`` is
    whether the command used RFC 5258's syntax at all.
    """

    reference: str
    patterns: tuple[str, ...]
    select: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False


def _options(value: Value, known: frozenset[str], what: str) -> list[tuple[str, Value | None]]:
    """A parenthesised option list as (NAME, its list argument or None)."""
    if not isinstance(value, list):
        raise IMAPSyntaxError(f"LIST {what} options must be a parenthesised list")
    out: list[tuple[str, Value | None]] = []
    for item in value:
        if isinstance(item, list):
            if not out or out[-1][1] is not None:
                raise IMAPSyntaxError(f"unexpected list among the LIST {what} options")
            out[-1] = (out[-1][0], item)
            continue
        if not isinstance(item, Atom) or item.value.upper() not in known:
            raise IMAPSyntaxError(f"unknown LIST {what} option {describe(item)}")
        out.append((item.value.upper(), None))
    return out


def parse_list_command(args: str, literals: Sequence[bytes]) -> ListRequest:
    """LIST arguments, RFC 3501's or RFC 5258's extended form (with RFC 5819's STATUS)."""
    values = tokenize(args, literals)
    select: set[str] = set()
    extended = False
    if values and isinstance(values[0], list):
        extended = True
        for name, argument in _options(values.pop(0), LIST_SELECT_OPTIONS, "selection"):
            if argument is not None:
                raise IMAPSyntaxError(f"LIST selection option {name} takes no argument")
            select.add(name)
        if "RECURSIVEMATCH" in select and select <= {"RECURSIVEMATCH", "REMOTE"}:
            # RFC 5258 3: RECURSIVEMATCH alone says nothing; it is BAD.
            raise IMAPSyntaxError("RECURSIVEMATCH needs another selection option")
    returns: set[str] = set()
    status_items: tuple[str, ...] = ()
    if len(values) == 4 and isinstance(values[2], Atom) and values[2].value.upper() == "RETURN":
        extended = True
        for name, argument in _options(values[3], LIST_RETURN_OPTIONS, "return"):
            if name == "STATUS":
                if not isinstance(argument, list) or not argument:
                    raise IMAPSyntaxError("LIST RETURN STATUS takes a list of STATUS items")
                status_items = _status_items(argument)
            elif argument is not None:
                raise IMAPSyntaxError(f"LIST return option {name} takes no argument")
            returns.add(name)
        values = values[:2]
    if len(values) != 2:
        raise IMAPSyntaxError("LIST takes a reference and a mailbox pattern")
    reference = astring(values[0], "the reference")
    if isinstance(values[1], list):
        if not values[1]:
            raise IMAPSyntaxError("LIST needs at least one mailbox pattern")
        extended = True
        patterns = tuple(astring(value, "a mailbox pattern") for value in values[1])
    else:
        patterns = (astring(values[1], "the mailbox pattern"),)
    return ListRequest(reference, patterns, frozenset(select), frozenset(returns),
                       status_items, extended)


def list_pattern_regex(pattern: str, delimiter: str | None = "/") -> re.Pattern[str]:
    """A LIST pattern compiled: ``*`` matches anything, ``%`` anything but the delimiter."""
    parts: list[str] = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append(f"[^{re.escape(delimiter)}]*" if delimiter else ".*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def list_pattern_matches(
    reference: str, pattern: str, name: str, delimiter: str | None = "/"
) -> bool:
    """Whether mailbox ``name`` is listed for LIST ``reference`` ``pattern``.

    The reference is prefixed to the pattern (RFC 3501 6.3.8); an INBOX prefix
    matches in any case.
    """
    full = reference + pattern
    if full.upper().startswith("INBOX") and (
        len(full) == 5 or full[5:6] in ("*", "%") or (delimiter and full[5:6] == delimiter)
    ):
        full = "INBOX" + full[5:]
    return list_pattern_regex(full, delimiter).fullmatch(name) is not None


# -- STATUS --------------------------------------------------------------------------


STATUS_ITEMS: Final = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "DELETED",
     "HIGHESTMODSEQ"}
)


def _status_items(values: Sequence[Value]) -> tuple[str, ...]:
    items: list[str] = []
    for value in values:
        if not isinstance(value, Atom) or value.value.upper() not in STATUS_ITEMS:
            raise IMAPSyntaxError(f"unknown STATUS item {describe(value)}")
        items.append(value.value.upper())
    return tuple(items)


def parse_status(
    args: str, literals: Sequence[bytes] = (), *, utf8: bool = False
) -> tuple[str, tuple[str, ...]]:
    """``STATUS mailbox (MESSAGES UNSEEN)`` as (mailbox, upper-cased item names)."""
    values = tokenize(args, literals)
    if len(values) != 2 or not isinstance(values[1], list) or not values[1]:
        raise IMAPSyntaxError("STATUS takes a mailbox and a list of items")
    return parse_mailbox(values[0], utf8=utf8), _status_items(values[1])
