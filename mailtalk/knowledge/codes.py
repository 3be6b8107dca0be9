"""SMTP reply codes: ``smtp_codes.toml`` and ``enhanced_codes.toml`` read into typed entries.

Feeds ``mailtalk explain``. Basic codes are RFC 5321's three digits (``550``);
enhanced codes are RFC 3463's ``class.subject.detail`` (``5.7.1``), as listed in
the IANA registry. The TOML files are parsed on first use, not at import, and
kept afterwards.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

from mailtalk.knowledge import read_data

_BASIC: Final = "smtp_codes.toml"
_ENHANCED: Final = "enhanced_codes.toml"
_ENHANCED_RE: Final = re.compile(r"([245xX])\.(\d{1,3})\.(\d{1,3})")


@dataclass(frozen=True)
class BasicCode:
    """One RFC 5321 reply code. ``transient`` is None for 2yz and 3yz replies."""

    code: int
    meaning: str
    rfc: str
    transient: bool | None
    typical_commands: tuple[str, ...]


@dataclass(frozen=True)
class EnhancedClass:
    """The first number of an enhanced code: 2, 4 or 5."""

    digit: int
    title: str
    description: str
    reference: str


@dataclass(frozen=True)
class EnhancedSubject:
    """The second number of an enhanced code: 0 to 7."""

    digit: int
    title: str
    description: str
    reference: str


@dataclass(frozen=True)
class EnhancedCode:
    """An enhanced status code.

    Registry entries (from :func:`registry`) have ``code`` in the registry's
    ``"X.7.1"`` form; :func:`enhanced_code` gives the code as asked (``"5.7.1"``).
    ``registered`` is False for a code built from its class and subject alone.
    ``basic_codes`` are the basic replies the registry associates with it.
    """

    code: str
    title: str
    description: str
    reference: str
    basic_codes: tuple[int, ...]
    registered: bool = True


class _Data(NamedTuple):
    """Both files' tables. A NamedTuple: cheaper to define than a dataclass, and
    ``mailtalk explain`` imports this module at every start."""

    basic: dict[int, BasicCode]
    first: dict[int, str]
    second: dict[int, str]
    classes: dict[int, EnhancedClass]
    subjects: dict[int, EnhancedSubject]
    details: dict[tuple[int, int], EnhancedCode]


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: [{key}] must be a table")
    return value


def _text(table: Any, key: str, where: str, *, required: bool = True) -> str:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: not a table")
    value = table.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _ints(table: dict[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise ValueError(f"{where}: {key} must be a list of integers")
    return tuple(value)


def _basic_entry(key: str, table: Any) -> BasicCode:
    where = f"{_BASIC} [code.{key}]"
    code = int(key)
    commands = table.get("typical_commands") if isinstance(table, dict) else None
    if (
        not isinstance(commands, list)
        or not commands
        or not all(isinstance(c, str) for c in commands)
    ):
        raise ValueError(f"{where}: typical_commands must be a non-empty list of strings")
    transient = table.get("transient")
    expected = {4: True, 5: False}.get(code // 100)
    if transient != expected or (transient is not None and not isinstance(transient, bool)):
        raise ValueError(f"{where}: transient must be {expected} for a {code // 100}yz code")
    return BasicCode(
        code=code,
        meaning=_text(table, "meaning", where),
        rfc=_text(table, "rfc", where),
        transient=transient,
        typical_commands=tuple(commands),
    )


_DigitEntry = TypeVar("_DigitEntry", EnhancedClass, EnhancedSubject)


def _digit_entries(
    data: dict[str, Any], key: str, entry: type[_DigitEntry]
) -> dict[int, _DigitEntry]:
    """The ``[class.N]`` or ``[subject.N]`` tables: what one digit of an enhanced code means."""
    result = {}
    for digit, table in _table(data, key, _ENHANCED).items():
        where = f"{_ENHANCED} [{key}.{digit}]"
        result[int(digit)] = entry(
            int(digit),
            _text(table, "title", where),
            _text(table, "description", where),
            _text(table, "reference", where),
        )
    return result


@functools.cache
def _load() -> _Data:
    """Both files, parsed once."""
    basic_data = read_data(_BASIC)
    digits = _table(basic_data, "digits", _BASIC)
    first = {
        int(k): _text(v, "meaning", f"{_BASIC} [digits.first.{k}]")
        for k, v in _table(digits, "first", _BASIC).items()
    }
    second = {
        int(k): _text(v, "meaning", f"{_BASIC} [digits.second.{k}]")
        for k, v in _table(digits, "second", _BASIC).items()
    }
    basic = {int(k): _basic_entry(k, v) for k, v in _table(basic_data, "code", _BASIC).items()}

    enhanced = read_data(_ENHANCED)
    classes = _digit_entries(enhanced, "class", EnhancedClass)
    subjects = _digit_entries(enhanced, "subject", EnhancedSubject)
    details: dict[tuple[int, int], EnhancedCode] = {}
    for key, table in _table(enhanced, "detail", _ENHANCED).items():
        where = f'{_ENHANCED} [detail."{key}"]'
        match = _ENHANCED_RE.fullmatch(key)
        if match is None or match[1] != "X":
            raise ValueError(f"{where}: the key must look like X.1.1")
        details[int(match[2]), int(match[3])] = EnhancedCode(
            code=key,
            title=_text(table, "title", where, required=False),  # X.6.10 has none
            description=_text(table, "description", where),
            reference=_text(table, "reference", where),
            basic_codes=_ints(table, "basic_codes", where),
        )
    return _Data(basic, first, second, classes, subjects, details)


def basic_code(code: int) -> BasicCode | None:
    """The entry for a basic reply code such as 550, or None when it is not listed."""
    return _load().basic.get(code)


def basic_codes() -> list[BasicCode]:
    """Every listed basic reply code, in numeric order."""
    return sorted(_load().basic.values(), key=lambda entry: entry.code)


def digit_meaning(code: int) -> tuple[str, str]:
    """What the first and the second digit of any reply code mean (RFC 5321 4.2.1).

    Works for codes that are not listed too (``digit_meaning(458)``); raises
    ValueError when either digit has no meaning (``199``, ``270``).
    """
    data = _load()
    first, second = code // 100, code // 10 % 10
    if not 100 <= code <= 999 or first not in data.first or second not in data.second:
        raise ValueError(f"{code} is not an SMTP reply code")
    return data.first[first], data.second[second]


def enhanced_class(digit: int | str) -> EnhancedClass | None:
    """The class 2, 4 or 5, or None."""
    try:
        return _load().classes.get(int(digit))
    except ValueError:
        return None


def enhanced_subject(digit: int | str) -> EnhancedSubject | None:
    """The subject 0 to 7, or None."""
    try:
        return _load().subjects.get(int(digit))
    except ValueError:
        return None


def registry() -> list[EnhancedCode]:
    """Every registered detail code (``X.S.D`` form), in registry order."""
    return list(_load().details.values())


def _parse(code: str) -> tuple[str, int, int] | None:
    match = _ENHANCED_RE.fullmatch(code.strip())
    if match is None:
        return None
    return match[1].upper(), int(match[2]), int(match[3])


def enhanced_code(code: str) -> EnhancedCode | None:
    """The entry for ``"5.7.1"`` (or the registry form ``"X.7.1"``).

    A well-formed code of a known class and subject that the registry does not
    list (``"4.2.9"``) gets the class and subject meaning, with
    ``registered=False``. None for anything else.
    """
    parsed = _parse(code)
    if parsed is None:
        return None
    klass, subject_digit, detail = parsed
    data = _load()
    name = f"{klass}.{subject_digit}.{detail}"
    entry = data.details.get((subject_digit, detail))
    if entry is not None:
        return EnhancedCode(
            name, entry.title, entry.description, entry.reference, entry.basic_codes
        )
    subject = data.subjects.get(subject_digit)
    if subject is None or klass == "X":
        return None
    class_entry = data.classes[int(klass)]
    return EnhancedCode(
        code=name,
        title=f"{class_entry.title}: {subject.title}",
        description=f"{class_entry.description} {subject.description}",
        reference=class_entry.reference,
        basic_codes=(),
        registered=False,
    )


def contradiction(
    basic: int, enhanced: str, gettext: Callable[[str], str] = str
) -> str | None:
    """A sentence when a basic code and an enhanced code disagree, else None.

    They disagree when their classes differ (``550`` with ``4.2.2``), or when an
    enhanced code comes with a 3yz reply, which never carries one (RFC 2034).
    ``gettext`` translates the sentence's words (knowledge/translation.py).
    Raises ValueError when either is not a code.
    """
    _ = gettext
    parsed = _parse(enhanced)
    if parsed is None or parsed[0] == "X":
        raise ValueError(f"{enhanced!r} is not an enhanced status code")
    if not 200 <= basic <= 599:
        raise ValueError(f"{basic} is not an SMTP reply code")
    klass, first = int(parsed[0]), basic // 100
    if first == 3:
        return _(
            "{basic} is an intermediate reply, and intermediate replies carry no "
            "enhanced status code, yet {enhanced} was given."
        ).format(basic=basic, enhanced=enhanced.strip())
    if klass == first:
        return None
    kinds = {2: _("success"), 4: _("temporary failure"), 5: _("permanent failure")}
    return _(
        "{basic} says {first} but {enhanced} says {second}; "
        "the two codes contradict each other, and clients act on the basic code."
    ).format(basic=basic, first=kinds[first], enhanced=enhanced.strip(), second=kinds[klass])
