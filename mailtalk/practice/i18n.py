"""The practice mode's words in English and Dutch: gettext catalogues.

UI strings are written in English in the code, as ``_("...")``, and translated by the
catalogue ``locale/LANG.po``, read by ``mailtalk/language.py`` (which also says how the
language is chosen); the code uses gettext's own API (``gettext``, ``ngettext``). The
one-line summaries of the explanation categories are in the same catalogue (their msgid
is the English title or summary from ``knowledge/categories.toml``); the explanations'
own Dutch is in ``knowledge/locale/nl``.

The language: ``--lang``, else the one chosen last time (practice.json), else
``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` as gettext reads them, else English.
"""

from __future__ import annotations

import functools
import gettext
from pathlib import Path
from typing import Final

from mailtalk.language import (
    LANGUAGES,
    CatalogueError,
    PoTranslations,
    choose_language,
    parse_po,
)

__all__ = [
    "LANGUAGES",
    "LOCALE_DIR",
    "CatalogueError",
    "PoTranslations",
    "choose_language",
    "parse_po",
    "translation",
]

LOCALE_DIR: Final = Path(__file__).with_name("locale")


@functools.cache
def translation(language: str) -> gettext.NullTranslations:
    """The catalogue for ``language``; English is the code's own words."""
    if language == "en":
        return PoTranslations({}, "en")
    path = LOCALE_DIR / f"{language}.po"
    return PoTranslations(parse_po(path.read_text(encoding="utf-8"), path.name), language)
