"""What a diagnosis says: the wording of ``mailtalk diagnose``'s verdicts, from ``verdicts.toml``.

A diagnosis (``mailtalk/mail/diagnose/``) gathers evidence and decides which verdict
applies; what the verdict says -- its summary sentence, what to do as the user and as
the admin, its exit status, a security finding -- is data, as the replies' wording is
(the project's rule: wordings live in the knowledge base, the code only decides). The
file is read on first use, not at import: ``mailtalk explain`` never reads it.

A text is a ``str.format`` template filled by name from the values the diagnosis gives
(``{domain}``, ``{where}``); a text written over several lines is one line. Besides those values a
template may use:

- a phrase (``[KIND.phrases]`` for every verdict of a diagnosis, ``[KIND.ID.phrases]``
  for one verdict) by its name: ``{admin_relay_settings}``;
- a choice: a phrase that is a table of alternatives, picked by the value named in its
  ``by`` key (its own name without one); a true or false value picks ``true`` or
  ``false``. An alternative may itself be a table of texts: ``{scope[shown]}``.

A fix is a text, or ``{ when = "FLAG", text = "..." }``, given only when the value
``FLAG`` is true; a fix that comes out empty is left out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, NamedTuple

from mailtalk.exitcodes import ExitCode
from mailtalk.knowledge import read_data

_FILE: Final = "verdicts.toml"


class Verdict(NamedTuple):
    """A verdict with its wording filled in, ready for a report."""

    id: str  # what --json says: "relay_denied_needs_auth", ...
    summary: str
    fixes_user: list[str]
    fixes_admin: list[str]
    security: str | None  # a security finding (an open relay), said apart
    exit_code: ExitCode


@functools.cache
def _data() -> dict[str, Any]:
    return read_data(_FILE)


def verdict_keys(kind: str) -> tuple[str, ...]:
    """The verdicts of one diagnosis ("relay", "login", "sender"), as the file names them."""
    return tuple(key for key in _data()[kind] if key != "phrases")


def kinds() -> tuple[str, ...]:
    return tuple(_data())


def verdict(
    kind: str, key: str, values: Mapping[str, object], gettext: Callable[[str], str] = str
) -> Verdict:
    """The verdict ``key`` of the diagnosis ``kind``, worded with ``values`` in the
    language of ``gettext`` (each text is a msgid of ``locale/LANG/verdicts.po`` as
    :func:`texts` gives it: its Dutch keeps the same placeholders).

    A template naming a value that is not given raises KeyError: the data and the code
    disagree, which the tests catch.
    """
    entry = _data()[kind][key]
    phrases = {**_data()[kind].get("phrases", {}), **entry.get("phrases", {})}
    fields = _Fields(values, phrases, gettext)
    security = entry.get("security")
    return Verdict(
        entry.get("verdict", key),
        fields.fill(entry["summary"]),
        fields.fixes(entry.get("user", [])),
        fields.fixes(entry.get("admin", [])),
        fields.fill(security) if security else None,
        ExitCode[entry["exit"]],
    )


def texts() -> set[str]:
    """Every text of the file as the verdicts say it (a msgid of ``verdicts.po``):
    summaries, fixes, security findings, phrases and their alternatives."""
    found: set[str] = set()

    def walk(item: object, key: str = "") -> None:
        if isinstance(item, str):
            if key not in ("exit", "verdict", "when", "by"):
                found.add(_flat(item))
        elif isinstance(item, dict):
            for name, value in item.items():
                walk(value, name)
        elif isinstance(item, list):
            for value in item:
                walk(value, key)

    walk(_data())
    return {text for text in found if text.strip()}


def _flat(template: str) -> str:
    """A text written over several lines as one line: the file's line breaks are there for
    its readers. A one-line text stays as it is (a choice may start with a space)."""
    return " ".join(template.split()) if "\n" in template else template


class _Fields(Mapping[str, object]):
    """The names a template may use: the values, the phrases and the choices."""

    def __init__(
        self, values: Mapping[str, object], phrases: Mapping[str, Any],
        gettext: Callable[[str], str] = str,
    ) -> None:
        self._values = values
        self._phrases = phrases
        self._gettext = gettext

    def __getitem__(self, name: str) -> object:
        phrase = self._phrases.get(name)
        if phrase is None:
            return self._values[name]
        if isinstance(phrase, str):
            return self.fill(phrase)
        chosen = self._values[phrase.get("by", name)]
        alternative = phrase[str(chosen).lower() if isinstance(chosen, bool) else str(chosen)]
        if isinstance(alternative, str):
            return self.fill(alternative)
        return {part: self.fill(text) for part, text in alternative.items()}

    def __iter__(self) -> Iterator[str]:
        return iter({**self._values, **self._phrases})

    def __len__(self) -> int:
        return len({**self._values, **self._phrases})

    def fill(self, template: str) -> str:
        return self._gettext(_flat(template)).format_map(self)

    def fixes(self, entries: list[str | dict[str, str]]) -> list[str]:
        found = []
        for entry in entries:
            if isinstance(entry, dict):
                if not self._values[entry["when"]]:
                    continue
                entry = entry["text"]
            text = self.fill(entry)
            if text:
                found.append(text)
        return found
