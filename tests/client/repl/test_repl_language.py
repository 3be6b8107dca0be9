"""The REPL speaks the session's language: its notes, errors, :help and toolbar in
Dutch with ``--lang nl`` or ``LANG=nl_NL.UTF-8``, in English otherwise; the catalogue
(``knowledge/locale/nl/session.po``) has every one of those words, and no others; every
template of a protocol core's error has its Dutch (``protocol_errors.po``).

The real binary in a pseudo-terminal, against the reference server over a socket."""

from __future__ import annotations

import ast
import io
import os
import re
import string
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mailtalk.knowledge.translation import translation
from mailtalk.language import parse_po
from mailtalk.protocols import imap, pop3, smtp

pexpect = pytest.importorskip("pexpect")

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))
PACKAGE = Path(__file__).resolve().parents[3] / "mailtalk"
SESSION_PO = PACKAGE / "knowledge" / "locale" / "nl" / "session.po"
# the words of the session and of the jobs that drive it (send, diagnose: mail.po; run:
# run.po), each said once in one of them
SPEAKING_PO = tuple(PACKAGE / "knowledge" / "locale" / "nl" / name
                    for name in ("session.po", "mail.po", "run.po"))
COMMANDS_PO = PACKAGE / "knowledge" / "locale" / "nl" / "commands.po"
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]|[\x08\r]")


# -- the catalogue ----------------------------------------------------------------------


# What a session says comes from these folders: the client's own words, and the network's
# errors and notes (net), put into the session's language by the gettext the client
# hands down; ``N_`` marks words in a table, said later (the errno words, the hints).
# send, diagnose (mail), run (script) and their commands say theirs with the same gettext.
SPEAKING = ("client", "net", "protocols", "mail", "script", "commands")
# and the command line's words said while it is read (the hint after a mistake)
SPEAKING_MODULES = ("clicklanguage.py",)


def _literals(node: ast.expr) -> list[str]:
    """The strings an argument can be: a literal, or both arms of an ``a if x else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return []


def client_words() -> set[str]:
    """Every literal given to ``_()``, ``gettext()`` or ``N_()`` in the folders a session
    speaks from (both arms of an ``a if x else b``)."""
    found: set[str] = set()
    paths = [path for folder in SPEAKING for path in (PACKAGE / folder).rglob("*.py")]
    paths += [PACKAGE / module for module in SPEAKING_MODULES]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in ("_", "gettext", "N_"):
                    found.update(_literals(node.args[0]))
    return found


def meta_briefs() -> set[str]:
    data = tomllib.loads((PACKAGE / "knowledge" / "commands.toml").read_text("utf-8"))
    return {entry["brief"] for entry in data["meta"].values()}


def static_hints() -> set[str]:
    """What usually comes next, as the protocol cores say it in every state."""
    return {*smtp.HINTS.values(), *pop3.HINTS.values(), *imap.HINTS.values()}


def test_every_word_of_the_session_has_dutch() -> None:
    dutch = translation("nl").catalogue
    wanted = client_words() | meta_briefs() | static_hints()
    assert len(client_words()) > 60
    assert sorted(w for w in wanted if not dutch.get(w)) == []


@pytest.mark.parametrize("catalogue", SPEAKING_PO, ids=lambda path: path.name)
def test_the_session_catalogue_holds_only_words_in_use_with_their_placeholders(
    catalogue: Path,
) -> None:
    entries = parse_po(catalogue.read_text(encoding="utf-8"), catalogue.name)
    others = [parse_po(path.read_text(encoding="utf-8"), path.name)
              for path in SPEAKING_PO if path != catalogue]
    assert sorted(m for m in entries if any(m in other for other in others)) == []
    used = client_words() | meta_briefs() | static_hints()
    # the cores' hints said in a state of their own (next_hint), whole: SMTP's is
    # the client role's
    sources = "".join(
        (PACKAGE / "protocols" / f"{name}.py").read_text("utf-8")
        for name in ("smtp", "smtp_client_role", "pop3", "imap")
    )
    stale = [m for m in entries if m not in used and repr(m) not in sources
             and f'"{m}"' not in sources]
    assert stale == []
    for english, dutch in entries.items():
        assert re.findall(r"\{\w+\}", english) == re.findall(r"\{\w+\}", dutch), english


# -- the protocol cores' errors ---------------------------------------------------------

PROTOCOL_ERRORS_PO = PACKAGE / "knowledge" / "locale" / "nl" / "protocol_errors.po"
CORE_ERRORS = ("ProtocolError", "LocalProtocolError", "RemoteProtocolError")


def core_error_templates() -> tuple[set[str], list[str]]:
    """The message templates of every core error raised where a person may read it (all
    of mailtalk but its servers, which answer in the protocol's English), and the places
    whose message is no literal template (an f-string, a variable): those could never
    be said in Dutch, so the test below names them."""
    templates: set[str] = set()
    unsayable: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "servers" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in CORE_ERRORS:
                continue
            words = _literals(node.args[0]) if node.args else []
            if not words or (isinstance(node.args[0], ast.IfExp) and len(words) < 2):
                unsayable.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            templates.update(words)
    return templates, unsayable


def placeholders(template: str) -> list[str]:
    """``{text}``, ``{tag!r}``: each replacement field as written (``{{`` is a brace)."""
    return [f"{{{name}{'!' + conversion if conversion else ''}}}"
            for _, name, _, conversion in string.Formatter().parse(template)
            if name is not None]


def test_every_protocol_error_has_dutch_with_its_placeholders() -> None:
    templates, unsayable = core_error_templates()
    assert unsayable == [], "raise a core error with a template and its values, not an f-string"
    assert len(templates) > 50
    dutch = translation("nl").catalogue
    assert sorted(t for t in templates if not dutch.get(t)) == []
    for template in templates:
        assert sorted(placeholders(dutch[template])) == sorted(placeholders(template)), template
        values = {name: "x" for _, name, _, _ in string.Formatter().parse(template) if name}
        dutch[template].format(**values)  # the Dutch fills in as the English does


def test_the_protocol_errors_catalogue_holds_only_templates_in_use() -> None:
    entries = parse_po(PROTOCOL_ERRORS_PO.read_text(encoding="utf-8"), PROTOCOL_ERRORS_PO.name)
    assert sorted(set(entries) - core_error_templates()[0]) == []
    # a template the session already says as a hint has its Dutch there, once
    session = parse_po(SESSION_PO.read_text(encoding="utf-8"), SESSION_PO.name)
    assert sorted(set(entries) & set(session)) == []


def help_words() -> set[str]:
    """What ``:help COMMAND`` says in prose: each protocol command's summary and the
    paragraphs of its detail (as render_help joins them), and the labels around them."""
    from mailtalk.knowledge.commands import PROTOCOLS, commands_for

    words = {"Example:", "Valid in:", "See:"}
    for protocol in PROTOCOLS:
        for entry in commands_for(protocol):
            words.add(entry.summary)
            words.update(" ".join(block.split()) for block in entry.detail.split("\n\n")
                         if block.strip())
    return words


def test_every_protocol_help_text_has_dutch_and_the_catalogue_no_other() -> None:
    dutch = translation("nl").catalogue
    wanted = help_words()
    assert len(wanted) > 190
    assert sorted(w for w in wanted if not dutch.get(w)) == []
    entries = parse_po(COMMANDS_PO.read_text(encoding="utf-8"), COMMANDS_PO.name)
    assert sorted(set(entries) - wanted) == []
    for english, words in entries.items():
        # the literal braces ({310}, {size}) and the codes in brackets stay as they are
        assert re.findall(r"\{[^}]*\}|\[[A-Z-]+\]", english) == re.findall(
            r"\{[^}]*\}|\[[A-Z-]+\]", words), english


def test_help_command_in_dutch_keeps_the_syntax_the_example_and_the_codes() -> None:
    from mailtalk.knowledge.commands import command_help, render_help

    entry = command_help("imap", "FETCH")
    assert entry is not None
    shown = render_help(entry, gettext=translation("nl").gettext)
    assert shown.startswith(entry.syntax + "\n  Haal vlaggen, kopregels, structuur of inhoud")
    assert "BODY.PEEK[...] niet, en dat wil je als je alleen kijkt" in " ".join(shown.split())
    assert "\nVoorbeeld:\n  " in shown and "\nGeldig in: selected" in shown
    assert "\nZie: RFC" in shown
    assert all(len(line) <= 78 for line in shown.splitlines())
    assert render_help(entry) == render_help(entry, gettext=translation("en").gettext)


# -- the REPL in a terminal -------------------------------------------------------------


class Terminal:
    def __init__(self, args: list[str], variables: dict[str, str], tmp_path: Path) -> None:
        env = {key: value for key, value in os.environ.items()
               if key not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "MAILTALK_DEBUG")}
        env.update(TERM="xterm", NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="120",
                   LINES="40", XDG_STATE_HOME=str(tmp_path / "state"), **variables)
        self.log = io.BytesIO()
        self.child = pexpect.spawn(MAILTALK, args, env=env, dimensions=(40, 120), timeout=15)
        self.child.logfile_read = self.log

    @property
    def screen(self) -> str:
        return ESCAPES.sub(b"", self.log.getvalue()).decode("utf-8", "replace")

    def type(self, line: str, expect: str) -> None:
        self.child.send(line + "\r")
        self.child.expect_exact(expect)

    def quit(self) -> int:
        self.child.send("\x04")
        self.child.expect(pexpect.EOF)
        self.child.close()
        return int(self.child.exitstatus)


def a_session(server: Any, tmp_path: Path, *options: str, **variables: str) -> str:
    """Connect, ask :help, mistype a :command, let the server hang up: the screen."""
    port = server.port("smtp")
    term = Terminal(["smtp", *options, f"127.0.0.1:{port}"], variables, tmp_path)
    term.child.expect_exact("smtp>")
    term.type(":help", ":help")
    term.child.expect_exact("smtp>")
    term.type(":nosuch", ":help")
    term.child.expect_exact("smtp>")
    term.type("QUIT", "221")
    term.child.expect_exact("smtp>")
    assert term.quit() == 0
    return term.screen


DUTCH = [
    "# verbonden met 127.0.0.1:",
    "SMTP-opdrachten die nu gelden (",
    "Meestal hierna: EHLO jouw.host.naam (HELO voor heel oude servers)",
    "opdrachten van mailtalk (nooit naar de server gestuurd):",
    "verklaar het laatste antwoord, of elk antwoord of elke code",
    "onbekende opdracht :nosuch; :help toont de opdrachten van mailtalk",
    "QUIT beantwoord: de sessie is voorbij, mailtalk sloot de verbinding",
]
ENGLISH = [
    "# connected to 127.0.0.1:",
    "SMTP commands valid now (",
    "Usually next: EHLO your.host.name (HELO for very old servers)",
    "mailtalk commands (never sent to the server):",
    "explain the last reply, or any reply or code",
    "unknown command :nosuch; :help lists mailtalk's commands",
    "QUIT answered: the session is over, mailtalk closed the connection",
]


def test_the_repl_speaks_dutch_with_lang_nl_and_english_with_lang_c(
    mailtalk_server: Any, tmp_path: Path
) -> None:
    dutch = a_session(mailtalk_server, tmp_path, LANG="nl_NL.UTF-8")
    assert [words for words in DUTCH if words not in dutch] == []
    assert not [words for words in ENGLISH if words in dutch]
    english = a_session(mailtalk_server, tmp_path, LANG="C.UTF-8")
    assert [words for words in ENGLISH if words not in english] == []
    assert not [words for words in DUTCH if words in english]


def test_lang_option_wins_over_the_locale(mailtalk_server: Any, tmp_path: Path) -> None:
    dutch = a_session(mailtalk_server, tmp_path, "--lang", "nl", LANG="en_US.UTF-8")
    assert [words for words in DUTCH if words not in dutch] == []
    english = a_session(mailtalk_server, tmp_path, "--lang", "en", LANG="nl_NL.UTF-8")
    assert [words for words in ENGLISH if words not in english] == []


def test_the_toolbar_in_dutch() -> None:
    from mailtalk.client.conversation import make_core
    from mailtalk.client.repl.toolbar import toolbar_fragments
    from mailtalk.net.target import parse_url

    core = make_core("smtp")
    target = parse_url("smtp://mx.example.test")
    for width, words in ((None, [" TLS uit ", " niet aangemeld ", " toestand: greeting ",
                                 " hierna: wacht op de begroeting 220 van de server "]),
                         (90, [" TLS uit ", " niet aangemeld ", " hierna: wacht op de… "])):
        shown = "".join(text for _, text, *_ in toolbar_fragments(
            target, core, False, width, translation("nl").gettext))
        assert [w for w in words if w not in shown] == [], shown
        if width is not None:
            assert len(shown) <= width - 1
    closed = "".join(text for _, text, *_ in toolbar_fragments(
        target, core, True, None, translation("nl").gettext))
    assert " hierna: :reconnect of :quit " in closed
