"""Explanations in Dutch (knowledge/locale/nl): every category's text has it, and
``mailtalk explain --lang nl`` / ``LANG=nl_NL`` speak it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mailtalk.knowledge.catalogue import CATEGORIES
from mailtalk.knowledge.explain import explain
from mailtalk.knowledge.translation import translation

KNOWLEDGE = Path(__file__).parents[2] / "mailtalk" / "knowledge"
FIELDS = ("title", "summary", "side", "causes", "fixes_user", "fixes_admin")


def _strings(table: dict[str, object]) -> list[str]:
    result: list[str] = []
    for name in FIELDS:
        value = table.get(name)
        if isinstance(value, str):
            result.append(value)
        elif isinstance(value, list):
            result.extend(v for v in value if isinstance(v, str))
    return [s.strip() for s in result if s.strip()]


def test_every_category_text_has_dutch() -> None:
    dutch = translation("nl").catalogue
    data = tomllib.loads((KNOWLEDGE / "categories.toml").read_text("utf-8"))["category"]
    missing = []
    for name, table in data.items():
        texts = _strings(table)
        for protocol in ("smtp", "pop3", "imap"):
            if isinstance(table.get(protocol), dict):
                texts += _strings(table[protocol])
        missing += [f"{name}: {t[:60]!r}" for t in texts if not dutch.get(t)]
    assert missing == []
    assert set(data) == set(CATEGORIES)


@pytest.mark.parametrize("source", ["pop3_codes.toml", "imap_codes.toml", "contexts.toml"])
def test_codes_and_contexts_have_dutch(source: str) -> None:
    dutch = translation("nl").catalogue
    data = tomllib.loads((KNOWLEDGE / source).read_text("utf-8"))
    tables = list(data.get("code", {}).values()) + list(data.get("context", []))
    # what a POP3 or IMAP status says by itself
    tables += [{"meaning": text} for t in data.get("status", {}).values() for text in t.values()]
    missing = []
    for table in tables:
        for name in ("meaning", *FIELDS):
            value = table.get(name)
            values = value if isinstance(value, list) else [value]
            missing += [
                v for v in values if isinstance(v, str) and v.strip() and not dutch.get(v.strip())
            ]
    assert missing == []


@pytest.mark.parametrize(
    "source", [*sorted(p.name for p in KNOWLEDGE.glob("replies_*.toml")), "terms.toml"]
)
def test_every_wording_and_term_has_dutch(source: str) -> None:
    # each wording's and key term's cause and fixes, and the causes of its readings for
    # a server that handles the domain (local) or does not (remote)
    dutch = translation("nl").catalogue
    data = tomllib.loads((KNOWLEDGE / source).read_text("utf-8"))
    missing = []
    for entry in data.get("reply", []) + data.get("term", []):
        tables = [entry] + [entry[k] for k in ("local", "remote") if isinstance(entry.get(k), dict)]
        for table in tables:
            for name in ("cause", "fix_user", "fix_admin"):
                value = table.get(name)
                if isinstance(value, str) and value.strip() and not dutch.get(value.strip()):
                    missing.append(f"{entry['id']} {name}: {value[:50]!r}")
    assert missing == []


def test_the_words_around_the_knowledge_have_dutch() -> None:
    dutch = translation("nl").catalogue
    view = (KNOWLEDGE.parent / "explain" / "view.py").read_text("utf-8")
    model = (KNOWLEDGE / "explain.py").read_text("utf-8")
    used = set(re.findall(r'_\("([^"]+)"\)', view)) | set(
        re.findall(r'self\.words\(\s*"([^"]+)"', model)
    )
    assert used, "the view's words are found"
    assert sorted(w for w in used if not dutch.get(w)) == []


def _a_reply_of(name: str) -> str:
    for path in sorted((Path(__file__).parent / "corpus").glob("*.toml")):
        for table in tomllib.loads(path.read_text("utf-8"))["reply"]:
            if table["category"] == name and explain(table["text"]).category == name:
                return str(table["text"])
    raise AssertionError(f"no corpus reply of {name}")


@pytest.mark.parametrize("name", [c for c in CATEGORIES if c != "ok"])
def test_each_category_is_explained_in_dutch(name: str) -> None:
    reply = _a_reply_of(name)
    english, dutch = explain(reply), explain(reply, language="nl")
    assert dutch.language == "nl" and dutch.category == english.category
    assert dutch.title == translation("nl").gettext(english.title) != english.title
    assert dutch.causes and all(c not in english.causes for c in dutch.causes)


def _explain(*args: str, lang: str = "C.UTF-8") -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES")}
    return subprocess.run(
        [sys.executable, "-m", "mailtalk", "explain", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "LANG": lang},
    ).stdout


def test_explain_speaks_dutch_on_the_command_line() -> None:
    reply = "452 4.2.2 <bob@example.org>: mailbox full"
    by_option = _explain("--lang", "nl", reply)
    by_locale = _explain(reply, lang="nl_NL.UTF-8")
    english = _explain(reply)
    assert "Betekenis" in by_option and "Mogelijke oorzaken" in by_option
    assert by_locale == by_option
    assert "Meaning" in english and "Betekenis" not in english
    assert all(len(line) <= 80 for line in by_option.splitlines())


def test_json_keeps_its_keys_and_category_in_english() -> None:
    out = _explain("--lang", "nl", "--json", "550 5.1.1 x")
    assert '"category": "unknown_user"' in out and "ontvanger" in out


# -- mailtalk diagnose's verdicts (verdicts.toml, verdicts.po) --------------------------


def _verdict_texts() -> set[str]:
    """The verdicts' texts that hold words (not a bare ``{fix[user]}`` or ``.``)."""
    from mailtalk.knowledge.verdicts import texts

    return {t for t in texts() if re.search(r"[A-Za-z]", re.sub(r"\{[^}]*\}", "", t))}


def test_every_verdict_text_has_dutch_with_its_placeholders() -> None:
    dutch = translation("nl").catalogue
    wanted = _verdict_texts()
    assert len(wanted) > 100
    assert sorted(t for t in wanted if not dutch.get(t)) == []
    for text in wanted:
        assert sorted(re.findall(r"\{[^}]*\}", dutch[text])) == sorted(
            re.findall(r"\{[^}]*\}", text)), text


def test_the_verdicts_catalogue_holds_only_their_texts() -> None:
    from mailtalk.language import parse_po

    path = KNOWLEDGE / "locale" / "nl" / "verdicts.po"
    entries = parse_po(path.read_text("utf-8"), path.name)
    assert sorted(set(entries) - _verdict_texts()) == []

