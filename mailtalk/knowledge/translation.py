"""Explanations in Dutch: the catalogues of ``locale/LANG/*.po``, and one explanation
put into a language.

The knowledge is written in English in its TOML files; each ``.po`` file maps those
strings (the msgid is the English exactly as in the TOML, a list item its own msgid)
to their translation. ``categories.po`` holds the categories, ``codes.po`` the codes
and contexts, ``replies.po`` the wordings, ``view.po`` the words ``mailtalk explain``
puts around them, ``session.po`` the live session's own words (its notes and errors, :help, the
toolbar: ``Conversation.gettext``), ``protocol_errors.po`` the protocol cores' error
templates (``ProtocolError``, said by ``mailtalk.errors.message_of``). A string without
a translation stays English, so a new English entry is never lost; a test requires
every category's text in every language.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mailtalk.language import PoTranslations, parse_po

if TYPE_CHECKING:
    from mailtalk.knowledge.explain import Explanation

_LOCALE: Final = os.path.join(os.path.dirname(__file__), "locale")
# "550: ...", "[IN-USE]: ...", "5.1.1: Title. Description", "after RCPT: ..."
_LABELLED: Final = re.compile(r"^(\S+: )(.*)$", re.S)


@functools.cache
def translation(language: str) -> PoTranslations:
    """Every catalogue of ``language`` in one; English is the data's own words."""
    catalogue: dict[str, str] = {}
    folder = os.path.join(_LOCALE, language)
    if language != "en" and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".po"):
                with open(os.path.join(folder, name), encoding="utf-8") as file:
                    catalogue.update(parse_po(file.read(), f"knowledge/locale/{language}/{name}"))
    return PoTranslations(catalogue, language)


def _text(catalogue: dict[str, str], text: str) -> str:
    """One string: as a whole, else a labelled line ("550: meaning") by its parts."""
    if not text or text in catalogue:
        return catalogue.get(text, text)
    labelled = _LABELLED.match(text)
    if labelled is None:
        return text
    label, rest = labelled.groups()
    if rest in catalogue:
        return label + catalogue[rest]
    # "5.1.1: Bad destination mailbox address. The mailbox specified ..."
    for index in (m.end() for m in re.finditer(r"\. ", rest)):
        title, description = rest[: index - 2], rest[index:]
        if title in catalogue or description in catalogue:
            return (
                f"{label}{catalogue.get(title, title)}. {catalogue.get(description, description)}"
            )
    return text


def _contradiction(explanation: Explanation, language: str) -> str | None:
    """The sentence about codes that disagree, written anew in ``language``."""
    if explanation.contradiction is None or not explanation.code or not explanation.enhanced_code:
        return explanation.contradiction
    from mailtalk.knowledge.codes import contradiction

    return contradiction(
        int(explanation.code), explanation.enhanced_code, translation(language).gettext
    )


def translated(explanation: Explanation, language: str) -> Explanation:
    """The explanation with its prose in ``language`` (codes, the reply, the category's
    key and the references stay as they are)."""
    if language == "en":
        return explanation
    catalogue = translation(language).catalogue

    def each(texts: list[str]) -> list[str]:
        return [_text(catalogue, t) for t in texts]

    return dataclasses.replace(
        explanation,
        title=_text(catalogue, explanation.title),
        summary=_text(catalogue, explanation.summary),
        side=_text(catalogue, explanation.side),
        meaning=each(explanation.meaning),
        causes=each(explanation.causes),
        fixes_user=each(explanation.fixes_user),
        fixes_admin=each(explanation.fixes_admin),
        context=_text(catalogue, explanation.context) if explanation.context else None,
        other_contexts=[(c, _text(catalogue, m)) for c, m in explanation.other_contexts],
        contradiction=_contradiction(explanation, language),
        lead=_text(catalogue, explanation.lead),
        language=language,
    )


class SpeaksLanguage:
    """A job's options that name its ``language`` (send, diagnose, run): ``gettext``
    says the job's own words in it."""

    language: str

    @property
    def gettext(self) -> Callable[[str], str]:
        return translation(self.language).gettext
