"""``--lang``: the one option every command that speaks to a person takes, and the one
decision of which language it speaks (``mailtalk.language.choose_language``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from mailtalk.cli import F
from mailtalk.language import LANGUAGES

if TYPE_CHECKING:
    from mailtalk.environment import Environment

DEFAULT_HELP = "[default: from LANGUAGE, LC_ALL, LC_MESSAGES, LANG]"


def lang_option(what: str, after: str = "") -> Callable[[F], F]:
    """``--lang en|nl``; its help says ``what`` it changes, where the default comes
    from, then ``after`` (what stays English)."""

    def decorate(func: F) -> F:
        return click.option(
            "--lang",
            type=click.Choice(LANGUAGES),
            help=f"{what} {DEFAULT_HELP}{after}.",
        )(func)

    return decorate


# send, run and diagnose: their own words, the servers' errors and the explanations
JOB_LANG = lang_option(
    "The language of mailtalk's own lines, errors and explanations",
    "; --json stays English",
)


def take_language(env: Environment, options: dict[str, Any], machine: bool = False) -> None:
    """``options["lang"]`` (--lang) becomes ``options["language"]``, the language the
    command speaks: --lang, else the locale variables; English for output meant for
    programs (``machine``: --json, --tap)."""
    from mailtalk.language import choose_language

    option = options.pop("lang")
    options["language"] = "en" if machine else choose_language(option, None, env.variables)


def gettext_of(options: dict[str, Any]) -> Callable[[str], str]:
    """The gettext of the language ``take_language`` chose: for the command's own
    errors about its options, said before the job starts."""
    from mailtalk.knowledge.translation import translation

    return translation(options.get("language", "en")).gettext
