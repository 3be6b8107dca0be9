"""The protocol cores' errors reach a Dutch session in Dutch, and an English one as before.

A core error carries its message template and values (``ProtocolError``); ``str()`` is
the English sentence, and the session says the template with its gettext
(``mailtalk.errors.message_of``). Proved with the real binary, in a pseudo-terminal
and in pipe mode, against a scripted peer on loopback that breaks the protocol: an IMAP
literal no one could send, a greeting that is no IMAP, a line that is no SMTP reply or
POP3 status; and the user's own IMAP line the core refuses while IDLE runs. The
catalogue test (test_repl_language.py) checks every template has its Dutch.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from mailtalk.errors import message_of, one_line
from mailtalk.knowledge.translation import translation
from mailtalk.protocols.common import LocalProtocolError, ProtocolError, RemoteProtocolError
from mailtalk.protocols.imap import IMAPConnection
from tests.client.repl.test_repl_faults import Session, start  # noqa: F401 - the fixture
from tests.client.scripted import pipe_session, stderr_after_connecting
from tests.peers import (
    IMAP_GREETING,
    POP3_GREETING,
    SMTP_GREETING,
    Close,
    Expect,
    Hold,
    ScriptedPeer,
)

DUTCH = translation("nl").gettext
# A size of 23 digits: more than any literal could be (the core's limit is 19).
UNBELIEVABLE = b"* 1 FETCH (BODY[] {99999999999999999999999}\r\n"


# -- the error and its message ----------------------------------------------------------


def test_the_english_is_str_and_the_dutch_is_the_template_filled_in() -> None:
    core = IMAPConnection()
    core.receive_data(IMAP_GREETING)
    core.next_event()
    core.receive_data(b"\x1b[2J {1} garbage\r\n")
    with pytest.raises(RemoteProtocolError) as caught:
        core.next_event()
    error = caught.value
    assert str(error) == 'not an IMAP response: "\\x1b[2J {1} garbage"'
    assert message_of(error) == str(error)  # no gettext: the English
    assert message_of(error, DUTCH) == 'geen IMAP-antwoord: "\\x1b[2J {1} garbage"'
    assert message_of(error, translation("en").gettext) == str(error)
    # what the peer sent is a value: its braces are never read as a template's
    assert one_line(error, DUTCH).startswith("geen IMAP-antwoord: ")


def test_a_message_made_elsewhere_is_left_as_it_is() -> None:
    error = LocalProtocolError("a {brace} that is no placeholder")
    assert str(error) == "a {brace} that is no placeholder"
    assert message_of(error, DUTCH) == "a {brace} that is no placeholder"
    assert message_of(ValueError("not a core's"), DUTCH) == "not a core's"


def test_the_error_survives_pickling_with_its_template() -> None:
    error = pickle.loads(pickle.dumps(
        RemoteProtocolError("a literal of {count} digits is not believable", count=23)))
    assert isinstance(error, ProtocolError)
    assert str(error) == "a literal of 23 digits is not believable"
    assert message_of(error, DUTCH) == (
        "een literal waarvan de lengte uit 23 cijfers bestaat, is niet geloofwaardig")


def test_a_translation_that_does_not_fit_falls_back_to_the_english() -> None:
    error = RemoteProtocolError("not an IMAP response: {text}", text='"x"')
    assert message_of(error, lambda template: "geen IMAP-antwoord: {tekst}") == str(error)


# -- the REPL in a terminal -------------------------------------------------------------


def imap_session(spawn: Callable[..., Session], port: int, language: str) -> str:
    """IDLE, a line typed while it runs, DONE, a FETCH whose answer announces a literal
    of 23 digits; then :reconnect to a peer whose greeting is no IMAP: the screen."""
    session = spawn("imap", "--lang", language, f"127.0.0.1:{port}")
    session.type("IDLE")
    session.expect_exact("+ idling")
    session.type("NOOP")  # the core refuses it: nothing is sent
    session.expect_exact("DONE" if language == "en" else "DONE maakt er een eind aan")
    session.type("DONE")
    session.expect_exact("a001 OK IDLE done")
    session.wait_prompt()
    session.type("FETCH 1 BODY[]")
    session.expect("niet geloofwaardig|not believable")
    session.wait_prompt()
    session.type(":reconnect")
    session.expect("geen IMAP-antwoord|not an IMAP response")
    session.wait_prompt()
    assert session.quit_with_ctrl_d() == 0
    return " ".join(session.screen.split())


def imap_scripts() -> list[list[object]]:
    return [
        [IMAP_GREETING, Expect(b"a001 IDLE"), b"+ idling\r\n", Expect(b"DONE"),
         b"a001 OK IDLE done\r\n", Expect(b"a002 FETCH 1 BODY[]"), UNBELIEVABLE, Hold()],
        [b"garbage instead of IMAP\r\n", Hold()],
    ]


def test_the_repl_says_the_cores_errors_in_dutch(
    start: Callable[..., Session],  # noqa: F811 - the fixture imported above
) -> None:
    with ScriptedPeer(*imap_scripts()) as peer:
        screen = imap_session(start, peer.port, "nl")
    assert b"NOOP" not in peer.data(0)  # refused by the core, as the error says
    for words in ["IDLE loopt: DONE maakt er een eind aan",
                  "de server hield zich niet aan het protocol: een literal waarvan de lengte "
                  "uit 23 cijfers bestaat, is niet geloofwaardig",
                  'de server hield zich niet aan het protocol: geen IMAP-antwoord: '
                  '"garbage instead of IMAP"']:
        assert words in screen, screen
    for english in ["IDLE is running", "not believable", "not an IMAP response",
                    "broke the protocol"]:
        assert english not in screen, screen


def test_the_repl_says_them_in_english_as_before(
    start: Callable[..., Session],  # noqa: F811
) -> None:
    with ScriptedPeer(*imap_scripts()) as peer:
        screen = imap_session(start, peer.port, "en")
    for words in ["IDLE is running: DONE ends it",
                  "the server broke the protocol: a literal of 23 digits is not believable",
                  'the server broke the protocol: not an IMAP response: '
                  '"garbage instead of IMAP"']:
        assert words in screen, screen
    assert "geloofwaardig" not in screen and "IMAP-antwoord" not in screen


# -- pipe mode --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "script", "stdin", "dutch", "english"),
    [
        ("smtp", [SMTP_GREETING, Expect(b"NOOP"), b"\x00\xff garbage\r\n", Hold()],
         b"NOOP\nQUIT\n", 'geen SMTP-antwoordregel: "\\x00\\xff garbage"',
         'not an SMTP reply line: "\\x00\\xff garbage"'),
        ("smtp", [SMTP_GREETING, Expect(b"NOOP"), b"250-one\r\n251 two\r\n", Hold()],
         b"NOOP\nQUIT\n",
         "een antwoord over meerdere regels veranderde van code: eerst 250, toen 251",
         "a multi-line reply changed its code from 250 to 251"),
        ("pop3", [POP3_GREETING, Expect(b"NOOP"), b"\x00\xff garbage\r\n", Hold()],
         b"NOOP\nQUIT\n", 'geen POP3-statusregel: "\\x00\\xff garbage"',
         'not a POP3 status line: "\\x00\\xff garbage"'),
        ("imap", [b"* NO go away\r\n", Hold()], b"LOGOUT\n",
         'een IMAP-begroeting (* OK) verwacht, maar "NO go away" gekregen',
         'expected an IMAP greeting (* OK), got "NO go away"'),
        ("imap", [IMAP_GREETING, Expect(b"a001 FETCH"), b"* 1 FETCH (BODY[] {12}\r\nabc",
                  Close()], b"FETCH 1 BODY[]\nLOGOUT\n",
         "de server sloot de verbinding midden in een literal",
         "the server closed in the middle of a literal"),
    ],
    ids=["smtp-line", "smtp-code", "pop3", "imap-greeting", "imap-literal-cut"],
)
def test_pipe_mode_says_the_last_line_in_the_locales_language(
    protocol: str, script: list[object], stdin: bytes, dutch: str, english: str
) -> None:
    """The locale decides (no --lang); LANG=C keeps the English exactly as it was."""
    said = (("nl_NL.UTF-8", dutch, "de server hield zich niet aan het protocol"),
            ("C.UTF-8", english, "the server broke the protocol"))
    for lang, words, prefix in said:
        result = pipe_session(script, protocol, stdin=stdin,
                              env={"LANG": lang, "LANGUAGE": "", "LC_ALL": "",
                                   "LC_MESSAGES": ""})
        assert result.returncode == 5, result.stderr
        lines = stderr_after_connecting(result.stderr)
        assert lines[-1] == f"mailtalk: {prefix}: {words}", result.stderr
