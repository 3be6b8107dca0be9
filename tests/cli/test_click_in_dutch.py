"""click's own usage errors in the language of the command line: Dutch with ``--lang nl``
or a Dutch locale for a command that speaks it, English for ``--json``, for the commands
that speak only English (serve, completion) and in an English locale. The real binary
as a process; and the catalogue (mailtalk/locale/nl/click.po) held to click's
own source, so a click that rewords a message shows here.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import click
import pytest

from mailtalk.clicklanguage import CLICK_MODULES, click_catalogue, language_of_arguments
from mailtalk.language import parse_po
from tests.cli.test_cli import MAILTALK, child_env
from tests.cli.test_startup_imports import modules_after

CLICK_PO = Path(__file__).resolve().parents[2] / "mailtalk/locale/nl/click.po"


def mailtalk(*args: str, **locale: str) -> subprocess.CompletedProcess[str]:
    env = {**child_env(), **locale}
    return subprocess.run([MAILTALK, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=30, check=False)


DUTCH = {"LANG": "nl_NL.UTF-8"}


@pytest.mark.parametrize(("args", "said"), [
    (["mx"], "ontbrekend argument 'DOMAIN' (probeer 'mailtalk mx --help')"),
    (["send", "--to", "a@b.test", "--nope"],
     "onbekende optie '--nope' (bedoelde je een van: '--pipe', '--to'?) "
     "(probeer 'mailtalk send --help')"),
    (["send", "--from", "a@b.test"], "ontbrekende optie '--to' (probeer 'mailtalk send --help')"),
    (["send", "--to"], "optie '--to' heeft een waarde nodig"),
    (["mx", "--port", "x", "a.test"],
     "ongeldige waarde voor '--port': 'x' is geen geldig getal (integer range)"),
    (["mx", "--port", "0", "a.test"],
     "ongeldige waarde voor '--port': 0 ligt niet in het bereik 1<=x<=65535"),
    (["mx", "--lang", "fr", "a.test"],
     "ongeldige waarde voor '--lang': 'fr' is niet een van 'en', 'nl'"),
    (["mx", "a.test", "b.test"],
     "onverwacht extra argument (b.test) (probeer 'mailtalk mx --help')"),
    (["sned"], "onbekende opdracht 'sned' (bedoelde je 'send'?) (probeer 'mailtalk --help')"),
    (["diagnose", "relay", "--to", "a@b.test", "--nope"],
     "onbekende optie '--nope' (bedoelde je een van: '--pipe', '--to'?) "
     "(probeer 'mailtalk diagnose relay --help')"),
    (["send", "--to", "a@b.test", "--attach", "/no/such/file"],
     "ongeldige waarde voor '--attach': '/no/such/file' bestaat niet"),
    # mailtalk's own option types, said while click reads the options
    (["send", "--to", "a@b.test", "--xclient", "FOO=1"],
     "ongeldige waarde voor '--xclient': FOO is niet een van ADDR, NAME, PORT, PROTO, HELO, "
     "LOGIN, DESTADDR, DESTPORT"),
    (["send", "--to", "a@b.test", "--proxy-from", "192.0.2.1:0"],
     "ongeldige waarde voor '--proxy-from': '0' is geen poortnummer (1-65535)"),
    (["send", "--to", "a@b.test", "--quit-after", "data"],
     "ongeldige waarde voor '--quit-after': na de 354 op DATA leest de server elke regel, ook "
     "QUIT, als het bericht tot de laatste punt: gebruik --drop-after data om daar weg te "
     "gaan zonder het te versturen"),
])
def test_clicks_errors_in_a_dutch_locale(args: list[str], said: str) -> None:
    result = mailtalk(*args, **DUTCH)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"mailtalk: {said}\n"


def test_lang_nl_wins_over_an_english_locale_and_json_stays_english() -> None:
    result = mailtalk("mx", "--lang", "nl", "--nope", "a.test")
    assert result.stderr == ("mailtalk: onbekende optie '--nope' (bedoelde je '--probe'?) "
                             "(probeer 'mailtalk mx --help')\n")
    result = mailtalk("mx", "--lang=nl", "--port", "x", "a.test")
    assert result.stderr == (
        "mailtalk: ongeldige waarde voor '--port': 'x' is geen geldig getal (integer range)\n")
    result = mailtalk("mx", "--json", "--port", "x", "a.test", **DUTCH)
    assert result.stderr == (
        "mailtalk: invalid value for '--port': 'x' is not a valid integer range\n")
    result = mailtalk("mx", "--lang", "en", "--nope", "a.test", **DUTCH)
    assert result.stderr == ("mailtalk: no such option '--nope' (did you mean '--probe'?) "
                             "(try 'mailtalk mx --help')\n")


def test_practice_errors_speak_the_lessons_language_of_last_time(tmp_path: Path) -> None:
    # a learner who chose Dutch lessons mistypes an option in an English locale: the
    # error is in the lessons' language, as the lessons are; --lang and --json still win
    state = tmp_path / "state"
    (state / "mailtalk").mkdir(parents=True)
    progress = state / "mailtalk" / "practice.json"
    progress.write_text('{"current": null, "language": "nl", "lessons": {}}\n')
    where = {"XDG_STATE_HOME": str(state)}
    result = mailtalk("practice", "--lesosn", "2", **where)
    assert result.returncode == 2
    assert result.stderr == ("mailtalk: onbekende optie '--lesosn' (bedoelde je een van: "
                             "'--json', '--lesson'?) "
                             "(probeer 'mailtalk practice --help')\n")
    assert mailtalk("practice", "--lang", "en", "--lesosn", "2", **where).stderr.startswith(
        "mailtalk: no such option '--lesosn'")
    assert mailtalk("practice", "--json", "--nope", **where).stderr.startswith(
        "mailtalk: no such option '--nope'")
    # other commands do not read practice's choice
    assert mailtalk("mx", **where).stderr.startswith("mailtalk: missing argument 'DOMAIN'")
    # a progress file that cannot be read leaves the locale to decide (and is kept aside,
    # as practice keeps it)
    progress.write_text("{broken")
    assert mailtalk("practice", "--nope", **where).stderr.startswith(
        "mailtalk: no such option '--nope'")


def test_english_commands_and_locale_keep_clicks_english() -> None:
    # serve speaks English (no --lang): so do its errors, in a Dutch locale too
    result = mailtalk("serve", "--smtp", "x", **DUTCH)
    assert result.returncode == 2
    assert result.stderr.startswith("mailtalk: invalid value for '--smtp': ")
    result = mailtalk("mx")
    assert result.stderr == "mailtalk: missing argument 'DOMAIN' (try 'mailtalk mx --help')\n"
    result = mailtalk("sned")
    assert result.stderr == ("mailtalk: no such command 'sned' (did you mean 'send'?) "
                             "(try 'mailtalk --help')\n")


def test_help_and_version_stay_english_in_a_dutch_locale() -> None:
    """The catalogue holds errors only: click's help words stay English, as ours."""
    english, dutch = mailtalk("send", "--help"), mailtalk("send", "--help", **DUTCH)
    assert dutch.returncode == 0 and dutch.stdout == english.stdout
    assert dutch.stdout.startswith("Usage: mailtalk send [OPTIONS]")
    assert mailtalk("--version", **DUTCH).stdout == mailtalk("--version").stdout


def test_the_language_of_a_command_line() -> None:
    assert language_of_arguments(["mx", "--lang", "nl"], {}) == "nl"
    assert language_of_arguments(["mx", "--lang=nl"], {"LANG": "C"}) == "nl"
    assert language_of_arguments(["mx"], {"LANG": "nl_BE.UTF-8"}) == "nl"
    assert language_of_arguments(["mx", "--lang", "fr"], {"LANG": "nl_NL"}) == "nl"
    assert language_of_arguments(["run", "--tap", "--lang", "nl"], {}) == "en"
    assert language_of_arguments(["mx", "--", "--lang", "nl"], {}) == "en"


# -- the catalogue ----------------------------------------------------------------------


def clicks_msgids() -> set[str]:
    """Every literal click gives to ``_()`` or ``ngettext()`` in the modules whose words
    the catalogue translates."""
    found: set[str] = set()
    folder = Path(click.__file__).parent
    for name in CLICK_MODULES:
        path = folder / f"{name.split('.')[1]}.py"
        if not path.exists():
            continue  # click.parser before 8.2, click._parser after
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("_", "ngettext"):
                found.update(arg.value for arg in node.args
                             if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return found


def test_every_msgid_is_clicks_and_keeps_its_placeholders() -> None:
    entries = parse_po(CLICK_PO.read_text(encoding="utf-8"), CLICK_PO.name)
    assert len(entries) > 25
    assert sorted(set(entries) - clicks_msgids()) == []
    for english, dutch in entries.items():
        # the Dutch may leave out {name} (the English word for the kind of path), nothing
        # else, and adds none
        wanted = set(re.findall(r"\{[^}]*\}", english)) - {"{name}"}
        assert wanted <= set(re.findall(r"\{[^}]*\}", dutch)) <= set(
            re.findall(r"\{[^}]*\}", english)), english


def test_the_usage_errors_click_says_most_have_dutch() -> None:
    catalogue = click_catalogue("nl").catalogue
    for msgid in ["No such option {name!r}.", "No such command {name!r}.",
                  "Missing argument", "Missing option", "Invalid value for {param_hint}: {message}",
                  "Got unexpected extra argument ({args})", "Option {name!r} requires an argument.",
                  "{value!r} is not one of {choices}.", "{name} {filename!r} does not exist."]:
        assert msgid in clicks_msgids() and catalogue.get(msgid), msgid
    # click's help is not translated: it would mix Dutch headings into English help
    assert not {"Usage:", "Options", "Show this message and exit."} & set(catalogue)


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["send", "--help"]], ids=" ".join)
def test_help_in_a_dutch_locale_reads_no_explanation_catalogue(argv: list[str]) -> None:
    """Start-up stays light in Dutch: click's small catalogue at most, never the 2,500
    entries of the explanations (tens of milliseconds to read)."""
    modules = modules_after(argv, {**child_env(), **DUTCH})
    assert "mailtalk.clicklanguage" in modules  # it did decide the language
    assert "mailtalk.knowledge.translation" not in modules
