"""Both languages, everywhere: the catalogue covers every UI string and category, the
coaching and the glossary have en and nl, and the .po reader reads what gettext would."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from mailtalk.practice.coach import coaching, glossary
from mailtalk.practice.i18n import (
    CatalogueError,
    choose_language,
    parse_po,
    translation,
)

PRACTICE = Path(__file__).resolve().parents[2] / "mailtalk" / "practice"
CATEGORIES = PRACTICE.parent / "knowledge" / "categories.toml"


def ui_strings() -> set[str]:
    """Every literal in a _("...") or gettext("...") call in mailtalk/practice."""
    found = set()
    for path in PRACTICE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            first = node.args[0]
            if name in ("_", "gettext") and isinstance(first, ast.Constant):
                found.add(first.value)
    return found


def category_strings() -> set[str]:
    data = tomllib.loads(CATEGORIES.read_text(encoding="utf-8"))
    return {
        text
        for entry in data["category"].values()
        for text in (entry["title"], entry["summary"])
    }


def world_strings() -> set[str]:
    """The hosts' lines on the map, from world.toml."""
    world = Path(__file__).resolve().parents[2] / "mailtalk" / "practice" / "world.toml"
    return {host["about"] for host in tomllib.loads(world.read_text())["hosts"]}


def test_every_ui_string_and_category_has_dutch() -> None:
    dutch = translation("nl").catalogue  # type: ignore[attr-defined]
    wanted = ui_strings() | category_strings() | world_strings()
    assert len(ui_strings()) > 20
    missing = sorted(wanted - set(dutch))
    assert not missing, f"nl.po lacks {missing}"


def test_the_dutch_keeps_every_placeholder() -> None:
    for english, dutch in translation("nl").catalogue.items():  # type: ignore[attr-defined]
        assert set(re.findall(r"\{\w+\}", english)) == set(re.findall(r"\{\w+\}", dutch)), (
            english
        )


def test_coaching_and_glossary_have_both_languages() -> None:
    categories = set(tomllib.loads(CATEGORIES.read_text(encoding="utf-8"))["category"])
    for name, words in coaching().items():
        assert name in categories, name
        assert words.get("en") and words.get("nl"), name
    assert {"MUA", "MTA", "MDA", "MX"} <= set(glossary())
    for term, words in glossary().items():
        assert words.get("en") and words.get("nl"), term


def test_the_po_reader() -> None:
    text = '''
# a comment
msgid ""
msgstr "Language: nl\\n"

msgid "one"
msgstr "een"

msgid "long "
"line"
msgstr "lange "
"regel"

#, fuzzy
msgid "fuzzy"
msgstr "vaag"

msgid "untranslated"
msgstr ""
'''
    assert parse_po(text) == {"one": "een", "long line": "lange regel"}
    with pytest.raises(CatalogueError, match="po:3"):
        parse_po('msgid "a"\nmsgstr "b"\nnonsense', "po")
    with pytest.raises(CatalogueError, match="msgstr before msgid"):
        parse_po('msgstr "b"', "po")


def test_english_is_the_code_itself() -> None:
    assert translation("en").gettext("Skipped.") == "Skipped."
    assert translation("nl").gettext("Skipped.") == "Overgeslagen."
    assert translation("nl").gettext("not in the catalogue") == "not in the catalogue"


@pytest.mark.parametrize(
    ("option", "saved", "environ", "expected"),
    [
        ("nl", "en", {"LANG": "en_US.UTF-8"}, "nl"),
        (None, "nl", {"LANG": "en_US.UTF-8"}, "nl"),
        (None, None, {"LANG": "nl_BE.UTF-8"}, "nl"),
        (None, None, {"LANGUAGE": "nl:en", "LANG": "en_US.UTF-8"}, "nl"),
        (None, None, {"LC_ALL": "C", "LANG": "nl_NL.UTF-8"}, "en"),
        (None, None, {"LANG": "de_DE.UTF-8"}, "en"),
        (None, None, {}, "en"),
    ],
)
def test_the_language_is_chosen_as_gettext_would(
    option: str | None, saved: str | None, environ: dict[str, str], expected: str
) -> None:
    assert choose_language(option, saved, environ) == expected
