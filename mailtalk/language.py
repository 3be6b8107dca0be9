"""Languages: gettext catalogues read from .po files, and which language to speak.

mailtalk speaks English and Dutch (the course it teaches is Dutch). The words are
written in English where they are (code or data) and translated by catalogues in the
standard format translators know (msgid, msgstr, ``#`` comments): practice mode's own
words in ``practice/locale``, the explanations in ``knowledge/locale``. Python's
gettext reads only compiled ``.mo`` files, and a compiled file in the repository would
be a generated binary going stale; so the ``.po`` is read here into a
``gettext.NullTranslations`` subclass, and callers use gettext's own API.

The language: ``--lang``, else a saved choice, else ``LANGUAGE``, ``LC_ALL``,
``LC_MESSAGES``, ``LANG`` as gettext reads them, else English.
"""

from __future__ import annotations

import ast
import gettext
from collections.abc import Callable, Mapping
from typing import Final

LANGUAGES: Final = ("en", "nl")


class CatalogueError(ValueError):
    """A .po file that cannot be read; names the file and line."""


def parse_po(text: str, where: str = "catalogue") -> dict[str, str]:
    """msgid -> msgstr of a .po file (untranslated and fuzzy entries left out)."""
    entries: dict[str, str] = {}
    msgid: list[str] | None = None
    msgstr: list[str] | None = None
    current: list[str] | None = None
    fuzzy = False
    pending_fuzzy = False

    def finish() -> None:
        if msgid is not None and msgstr is not None:
            key, value = "".join(msgid), "".join(msgstr)
            if key and value and not fuzzy:
                entries[key] = value

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("#,") and "fuzzy" in line:
                pending_fuzzy = True
            continue
        try:
            if line.startswith("msgid "):
                finish()
                msgid, msgstr, fuzzy = [_string(line[6:])], None, pending_fuzzy
                pending_fuzzy = False
                current = msgid
            elif line.startswith("msgstr "):
                if msgid is None:
                    raise ValueError("msgstr before msgid")
                msgstr = [_string(line[7:])]
                current = msgstr
            elif line.startswith('"') and current is not None:
                current.append(_string(line))
            else:
                raise ValueError(f"cannot read {line[:40]!r}")
        except ValueError as error:
            raise CatalogueError(f"{where}:{number}: {error}") from None
    finish()
    return entries


def _string(token: str) -> str:
    value = ast.literal_eval(token.strip())
    if not isinstance(value, str):
        raise ValueError(f"not a string: {token[:40]!r}")
    return value


class PoTranslations(gettext.NullTranslations):
    """gettext's API over a catalogue read from a .po file."""

    def __init__(self, catalogue: Mapping[str, str], language: str) -> None:
        super().__init__()
        self.catalogue = dict(catalogue)
        self.language = language

    def gettext(self, message: str) -> str:
        return self.catalogue.get(message, message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.gettext(singular if n == 1 else plural)


def choose_language(option: str | None, saved: str | None, environ: Mapping[str, str]) -> str:
    """--lang, else the saved choice, else the locale variables in gettext's order."""
    if option:
        return option
    if saved in LANGUAGES:
        return saved
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(variable, "")
        if not value:
            continue
        for part in value.split(":"):  # LANGUAGE may list several: nl:en
            code = part.split("_")[0].split(".")[0].lower()
            if code in LANGUAGES:
                return code
            if code == "c" or code == "posix":
                return "en"
        return "en"
    return "en"


class WordedError(ValueError):
    """A bad value whose message is a template (a catalogue's msgid, marked with ``N_``)
    and its values kept apart: ``str()`` is the English, ``said(gettext)`` the message
    in the language of ``gettext``."""

    def __init__(self, template: str, /, **values: object) -> None:
        super().__init__(template.format(**values))
        self.template = template
        self.values = values

    def said(self, gettext: Callable[[str], str]) -> str:
        return gettext(self.template).format(**self.values)


def N_(message: str) -> str:
    """Mark ``message`` as words to translate where it is written (a table of
    constants) and leave it as it is: the caller translates it when it is said, and the
    catalogue tests find it by this name."""
    return message
