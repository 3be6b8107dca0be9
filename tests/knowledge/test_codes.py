"""SMTP reply codes: the basic codes and the whole enhanced-code registry, lazily loaded."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import resources

import pytest

from mailtalk.knowledge.codes import (
    BasicCode,
    EnhancedCode,
    basic_code,
    basic_codes,
    contradiction,
    digit_meaning,
    enhanced_class,
    enhanced_code,
    enhanced_subject,
    registry,
)

# RFC 5321 4.2.2/4.2.3, RFC 4954 (235, 334, 530, 534, 535, 538), RFC 7504 (521, 556).
# fmt: off
BASIC = {
    211, 214, 220, 221, 235, 250, 251, 252, 334, 354,
    421, 450, 451, 452, 455,
    500, 501, 502, 503, 504, 521, 530, 534, 535, 538, 550, 551, 552, 553, 554, 555, 556,
}

# The "Enumerated Status Codes" of the IANA "Simple Mail Transfer Protocol (SMTP)
# Enhanced Status Codes" registry, https://www.iana.org/assignments/smtp-enhanced-status-codes
# (registry last updated 2024-12-06), read 2026-11-28.
REGISTRY = {
    "X.0.0",
    "X.1.0", "X.1.1", "X.1.2", "X.1.3", "X.1.4", "X.1.5", "X.1.6", "X.1.7", "X.1.8", "X.1.9",
    "X.1.10",
    "X.2.0", "X.2.1", "X.2.2", "X.2.3", "X.2.4",
    "X.3.0", "X.3.1", "X.3.2", "X.3.3", "X.3.4", "X.3.5", "X.3.6",
    "X.4.0", "X.4.1", "X.4.2", "X.4.3", "X.4.4", "X.4.5", "X.4.6", "X.4.7",
    "X.5.0", "X.5.1", "X.5.2", "X.5.3", "X.5.4", "X.5.5", "X.5.6",
    "X.6.0", "X.6.1", "X.6.2", "X.6.3", "X.6.4", "X.6.5", "X.6.6", "X.6.7", "X.6.8", "X.6.9",
    "X.6.10",
    "X.7.0", "X.7.1", "X.7.2", "X.7.3", "X.7.4", "X.7.5", "X.7.6", "X.7.7", "X.7.8", "X.7.9",
    "X.7.10", "X.7.11", "X.7.12", "X.7.13", "X.7.14", "X.7.15", "X.7.16", "X.7.17", "X.7.18",
    "X.7.19", "X.7.20", "X.7.21", "X.7.22", "X.7.23", "X.7.24", "X.7.25", "X.7.26", "X.7.27",
    "X.7.28", "X.7.29", "X.7.30",
}
# fmt: on


def _toml(name: str) -> dict[str, object]:
    text = resources.files("mailtalk.knowledge").joinpath(name).read_text(encoding="utf-8")
    return tomllib.loads(text)


# -- basic codes ----------------------------------------------------------------------------


def test_basic_codes_are_exactly_the_listed_ones() -> None:
    assert {entry.code for entry in basic_codes()} == BASIC
    assert len(BASIC) == 32


@pytest.mark.parametrize("code", sorted(BASIC))
def test_every_basic_code_has_all_fields(code: int) -> None:
    entry = basic_code(code)
    assert isinstance(entry, BasicCode)
    assert entry.code == code
    assert entry.meaning.endswith(".") and len(entry.meaning) < 160
    assert entry.rfc.startswith("RFC ") and "section" in entry.rfc
    assert entry.typical_commands and all(entry.typical_commands)
    assert entry.transient == {2: None, 3: None, 4: True, 5: False}[code // 100]


def test_basic_codes_from_extensions_cite_their_rfc() -> None:
    for code in (235, 334, 530, 534, 535, 538):
        assert basic_code(code).rfc.startswith("RFC 4954")  # type: ignore[union-attr]
    for code in (521, 556):
        assert basic_code(code).rfc.startswith("RFC 7504")  # type: ignore[union-attr]
    assert basic_code(250).rfc.startswith("RFC 5321")  # type: ignore[union-attr]


def test_unknown_basic_code() -> None:
    assert basic_code(299) is None
    assert basic_code(42) is None


def test_digit_meanings() -> None:
    first, second = digit_meaning(550)
    assert first.startswith("Permanent negative")
    assert second.startswith("Mail system")
    assert digit_meaning(421)[0].startswith("Transient negative")
    assert digit_meaning(421)[1].startswith("Connections")
    assert digit_meaning(354)[0].startswith("Positive intermediate")
    assert digit_meaning(211)[1].startswith("Information")
    assert digit_meaning(500)[1].startswith("Syntax")
    assert digit_meaning(458)[0] == digit_meaning(421)[0]  # unlisted codes work too


@pytest.mark.parametrize("code", [199, 600, 270, 5, 1000])
def test_digit_meaning_rejects_non_codes(code: int) -> None:
    with pytest.raises(ValueError):
        digit_meaning(code)


def test_digits_table_covers_rfc_5321() -> None:
    digits = _toml("smtp_codes.toml")["digits"]
    assert isinstance(digits, dict)
    assert set(digits["first"]) == {"2", "3", "4", "5"}
    assert set(digits["second"]) == {"0", "1", "2", "3", "4", "5"}


# -- the enhanced registry ------------------------------------------------------------------


def test_registry_holds_exactly_the_iana_entries() -> None:
    codes = [entry.code for entry in registry()]
    assert len(codes) == len(set(codes)) == 81
    assert set(codes) == REGISTRY


def test_enhanced_file_has_only_known_sections() -> None:
    data = _toml("enhanced_codes.toml")
    assert set(data) == {"class", "subject", "detail"}


def test_classes_and_subjects() -> None:
    assert {d for d in range(10) if enhanced_class(d) is not None} == {2, 4, 5}
    assert all(enhanced_subject(d) is not None for d in range(8))
    assert enhanced_subject(8) is None
    assert enhanced_class("5").title == "Permanent Failure"  # type: ignore[union-attr]
    assert enhanced_class("x") is None
    assert enhanced_subject("7").title == "Security or Policy Status"  # type: ignore[union-attr]


@pytest.mark.parametrize("entry", registry(), ids=lambda e: e.code)
def test_every_detail_entry_is_complete(entry: EnhancedCode) -> None:
    _, subject, _ = entry.code.split(".")
    assert enhanced_subject(int(subject)) is not None
    assert all(enhanced_class(klass) is not None for klass in (2, 4, 5))
    assert entry.registered
    assert entry.description.endswith(".")
    assert entry.reference
    if entry.code != "X.6.10":  # deprecated; the registry gives it no sample text
        assert entry.title
    assert all(200 <= code <= 599 for code in entry.basic_codes)


# -- lookups --------------------------------------------------------------------------------


def test_lookup_of_registered_codes() -> None:
    entry = enhanced_code("5.7.1")
    assert entry is not None
    assert entry.code == "5.7.1"
    assert entry.title == "Delivery not authorized, message refused"
    assert entry.registered
    assert 550 in entry.basic_codes
    assert enhanced_code(" 4.2.2 ").title == "Mailbox full"  # type: ignore[union-attr]
    assert enhanced_code("5.7.30").reference == "RFC 8689"  # type: ignore[union-attr]
    assert enhanced_code("X.1.1").code == "X.1.1"  # type: ignore[union-attr]
    assert enhanced_code("x.1.1").code == "X.1.1"  # type: ignore[union-attr]


def test_unregistered_codes_fall_back_to_class_and_subject() -> None:
    entry = enhanced_code("4.2.9")
    assert entry is not None
    assert not entry.registered
    assert entry.code == "4.2.9"
    assert "Persistent Transient Failure" in entry.title
    assert "Mailbox Status" in entry.title
    assert entry.basic_codes == ()
    assert enhanced_code("5.7.99").registered is False  # type: ignore[union-attr]


@pytest.mark.parametrize("code", ["", "550", "5.7", "3.1.1", "5.8.1", "X.7.99", "5.7.1.1", "a.b.c"])
def test_malformed_or_unknown_enhanced_codes(code: str) -> None:
    assert enhanced_code(code) is None


# -- contradictions -------------------------------------------------------------------------


def test_contradiction_between_classes() -> None:
    sentence = contradiction(550, "4.2.2")
    assert sentence is not None
    assert "550" in sentence and "4.2.2" in sentence
    assert contradiction(250, "5.1.1") is not None
    assert contradiction(421, "2.0.0") is not None


@pytest.mark.parametrize(("basic", "enhanced"), [(550, "5.1.1"), (452, "4.3.1"), (250, "2.1.5")])
def test_agreeing_codes(basic: int, enhanced: str) -> None:
    assert contradiction(basic, enhanced) is None


def test_intermediate_replies_carry_no_enhanced_code() -> None:
    assert contradiction(354, "2.0.0") is not None


@pytest.mark.parametrize(("basic", "enhanced"), [(550, "nope"), (550, "X.1.1"), (999, "5.1.1")])
def test_contradiction_rejects_non_codes(basic: int, enhanced: str) -> None:
    with pytest.raises(ValueError):
        contradiction(basic, enhanced)


# -- loading --------------------------------------------------------------------------------


def test_importing_does_not_parse_the_files() -> None:
    code = (
        "import sys\n"
        "import mailtalk.knowledge.codes as c\n"
        "assert 'tomllib' not in sys.modules, 'tomllib imported at import time'\n"
        "assert c._load.cache_info().currsize == 0\n"
        "assert c.basic_code(550) is not None\n"
        "assert 'tomllib' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_files_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailtalk.knowledge import codes

    codes._load.cache_clear()
    calls: list[int] = []
    real_loads = tomllib.loads

    def counting_loads(text: str) -> dict[str, object]:
        calls.append(len(text))
        return real_loads(text)

    monkeypatch.setattr(tomllib, "loads", counting_loads)
    basic_code(250)
    enhanced_code("5.1.1")
    registry()
    assert len(calls) == 2
