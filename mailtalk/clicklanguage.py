"""click's own words in the language a command speaks: its usage errors ("No such
option", "Missing argument", "Invalid value for", "Got unexpected extra argument"),
said before the command runs and before ``--lang`` is read into its options.

click says them with ``gettext.gettext`` and ``gettext.ngettext`` of the standard
library, imported into each of its modules as ``_`` and ``ngettext``; those look for
compiled ``.mo`` files of the process-wide "messages" domain, which mailtalk does not
ship (its catalogues are ``.po`` files read by ``mailtalk.language``). So for a command
that speaks Dutch those two names in click's modules are pointed at the small
catalogue ``locale/LANG/click.po`` beside this module, which holds click's error
messages only: its help (``Usage:``, ``Options:``) has no translation there and stays
English, as mailtalk's own help does. The catalogue is read at the first word click
says, and only in a language other than English; ``--help`` and ``--version`` in
English touch nothing.

The language: ``--lang`` among the arguments, else the locale variables
(``mailtalk.language.choose_language``); English for ``--json`` and ``--tap``, whose
output is for programs, and for the commands without ``--lang`` (serve, completion),
which speak English.
"""

from __future__ import annotations

import functools
import gettext
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailtalk.language import PoTranslations

# the click modules that say errors (click.parser was renamed click._parser in 8.2)
CLICK_MODULES = ("click.core", "click.exceptions", "click.types", "click.parser", "click._parser")
_LOCALE = os.path.join(os.path.dirname(__file__), "locale")
# arguments after which a command's output is for programs: it speaks English
_MACHINE_OPTIONS = ("--json", "--tap")

_spoken = {"language": "en"}


def language_of_arguments(
    args: Sequence[str], environ: Mapping[str, str], saved: str | None = None
) -> str:
    """The language of a command line: its ``--lang`` (``--lang nl``, ``--lang=nl``),
    else the language ``saved`` for its command (practice's choice of last time), else
    the locale's; English with ``--json`` or ``--tap``."""
    from mailtalk.language import LANGUAGES, choose_language

    option = None
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg in _MACHINE_OPTIONS:
            return "en"
        if arg == "--lang" and index + 1 < len(args):
            option = args[index + 1]
        elif arg.startswith("--lang="):
            option = arg.partition("=")[2]
    return choose_language(option if option in LANGUAGES else None, saved, environ)


@functools.cache
def click_catalogue(language: str) -> PoTranslations:
    """click's error messages in ``language`` (``locale/LANG/click.po``)."""
    from mailtalk.language import PoTranslations, parse_po

    path = os.path.join(_LOCALE, language, "click.po")
    entries: dict[str, str] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as file:
            entries = parse_po(file.read(), f"locale/{language}/click.po")
    return PoTranslations(entries, language)


def _click_gettext(message: str) -> str:
    return click_catalogue(_spoken["language"]).gettext(message)


def _click_ngettext(singular: str, plural: str, n: int) -> str:
    return click_catalogue(_spoken["language"]).ngettext(singular, plural, n)


def speak(language: str) -> None:
    """Let click say its errors in ``language`` from now on (English: as it does)."""
    _spoken["language"] = language
    english = language == "en"
    for name in CLICK_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        if hasattr(module, "_"):
            module._ = gettext.gettext if english else _click_gettext  # type: ignore[attr-defined]
        if hasattr(module, "ngettext"):
            module.ngettext = (  # type: ignore[attr-defined]
                gettext.ngettext if english else _click_ngettext)


def speaks_language(command: object) -> bool:
    """Whether ``command`` speaks the chosen language: it takes ``--lang``, or it is a
    group (diagnose) whose commands do."""
    import click

    if isinstance(command, click.Group):
        return True
    return any(param.name == "lang" for param in getattr(command, "params", ()))


def remembered_language(command: object, env: object) -> str | None:
    """The language ``command`` remembers choosing (its ``remembered_language``
    attribute, given the environment), or None; never an error, as the command line is
    still being read."""
    recall = getattr(command, "remembered_language", None)
    if recall is None:
        return None
    try:
        language = recall(env)
    except Exception:  # a state file that cannot be read: the locale decides
        return None
    return language if isinstance(language, str) else None


def spoken_gettext() -> Callable[[str], str]:
    """The gettext of the language click speaks now, for mailtalk's own words said while
    the options are read (an option type's error, the hint to --help): every catalogue
    of the language, read when first needed (an error is being said)."""
    if _spoken["language"] == "en":
        return str
    from mailtalk.knowledge.translation import translation

    return translation(_spoken["language"]).gettext


def help_hint(command_path: str) -> str:
    """Where to read how to call the command, after a mistake in calling it."""
    _ = spoken_gettext()
    return _("(try '{command}')").format(command=command_path)
