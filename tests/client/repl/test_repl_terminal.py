"""The real REPL in a pseudo-terminal of a chosen size, against scripted peers and the
reference servers: how a session ends, BDAT chunks, layout on narrow terminals, pastes,
Tab, :reconnect after a certificate failure, :save and ~/.netrc.

What the terminal shows is reconstructed by the VT100 emulator of the interop REPL
tests (``Screen``), so the toolbar and wrapped lines are seen as a user sees them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pexpect = pytest.importorskip("pexpect")

from mailtalk.knowledge.explain import explain  # noqa: E402
from tests.client.repl.test_repl_faults import _default_signals  # noqa: E402
from tests.interop.test_repl_real import (  # noqa: E402
    LATENCY,
    Screen,
    Term,
    mailtalk_command,
    menu_lines,
    term_env,
    terminals,
    toolbar,
)
from tests.peers import (  # noqa: E402
    IMAP_GREETING,
    POP3_GREETING,
    SMTP_GREETING,
    Expect,
    ExpectBytes,
    Hold,
    ScriptedPeer,
    Signal,
    smtp_ehlo_reply,
)

CTRL_C = "\x03"
CTRL_D = "\x04"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Term]]:
    """``terminal(*args, cols=80)``: mailtalk in a pty that many columns wide."""
    state = tmp_path / "state"
    state.mkdir()
    with terminals() as started:

        def start(*args: str, cols: int = 80, rows: int = 40,
                  env: dict[str, str] | None = None) -> Term:
            environment = term_env(state)
            environment.update(COLUMNS=str(cols), LINES=str(rows), **(env or {}))
            return started([*mailtalk_command(), *args], environment, rows, cols, timeout=10,
                           preexec_fn=_default_signals)

        yield start


def at(peer: ScriptedPeer) -> str:
    return f"127.0.0.1:{peer.port}"


def in_state(screen: Screen, state: str) -> bool:
    """The toolbar shows ``state`` (labelled "state: " when there is room)."""
    return re.search(rf"  (?:state: )?{state}  ", toolbar(screen)) is not None


def words(text: str) -> str:
    """A regex for ``text`` wherever the screen's width broke its lines."""
    return r"\s+".join(re.escape(word) for word in text.split())


# ------------------------------------------------------------------ how a session ends


QUIT_SCRIPTS = {
    # Each server answers and then keeps the connection open: mailtalk must end it.
    "smtp": ([SMTP_GREETING, Expect(b"QUIT"), b"221 2.0.0 Bye\r\n", Hold()], "QUIT"),
    "pop3": ([POP3_GREETING, Expect(b"QUIT"), b"+OK Bye\r\n", Hold()], "QUIT"),
    "imap": (
        [IMAP_GREETING, Expect(b"a001 LOGOUT"),
         b"* BYE Logging out\r\na001 OK LOGOUT completed\r\n", Hold()],
        "LOGOUT",
    ),
}


@pytest.mark.parametrize("protocol", sorted(QUIT_SCRIPTS))
def test_quit_answered_ends_the_session_the_same_way_in_every_protocol(
    terminal: Callable[..., Term], protocol: str
) -> None:
    script, command = QUIT_SCRIPTS[protocol]
    with ScriptedPeer(script) as peer:
        term = terminal(protocol, at(peer))
        term.expect_prompt(protocol)
        term.sendline(command)
        term.expect("# " + words(f"{command} answered: the session is over, mailtalk closed the "
                                 "connection; :reconnect starts a new one, :quit leaves"))
        term.expect_prompt(protocol)
        term.wait_screen(lambda s: "  closed  " in toolbar(s), "'closed' in the toolbar")
        # mailtalk closed the connection itself: the peer's Hold ended.
        assert peer.wait(5), "mailtalk kept the connection open after the answer to QUIT"
        assert term.quit() == 0
    assert "Traceback" not in term.screen.text


def test_ctrl_d_in_data_says_the_message_was_not_sent(terminal: Callable[..., Term]) -> None:
    script = [SMTP_GREETING, Expect(b"DATA"), b"354 go ahead\r\n", Expect(b"Subject: half"),
              Hold()]
    with ScriptedPeer(script) as peer:
        term = terminal("smtp", at(peer))
        term.expect_prompt("smtp")
        term.command("DATA", r"354 go ahead", "data")
        term.sendline("Subject: half")
        term.expect_prompt("data")
        term.send(CTRL_D)
        term.expect(r"# the message was not sent: it ends only with a lone '\.' line")
        assert term.wait_exit() == 0
    assert b"\r\n.\r\n" not in peer.data()


def test_a_silent_server_shows_that_the_greeting_is_awaited(
    terminal: Callable[..., Term],
) -> None:
    with ScriptedPeer([Hold()]) as peer:
        term = terminal("smtp", at(peer), "--timeout", "20")
        term.expect(r"# connected to 127\.0\.0\.1")
        term.expect(r"# waiting for the greeting from 127\.0\.0\.1… \(up to 20 s")
        assert "smtp>" not in term.screen.text
        term.send(CTRL_C)
        assert term.wait_exit() == 130


# ------------------------------------------------------------------ BDAT (CHUNKING)


def test_bdat_chunk_is_sent_before_waiting_and_completion_offers_bdat_and_etrn(
    terminal: Callable[..., Term],
) -> None:
    chunk = b"Subject: chunked\r\n\r\nbody\r\n"
    script = [
        SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("PIPELINING", "CHUNKING", "ETRN"),
        Expect(b"MAIL FROM:<a@peer.test>"), b"250 2.1.0 Ok\r\n",
        Expect(b"RCPT TO:<b@peer.test>"), b"250 2.1.5 Ok\r\n",
        Expect(b"BDAT 18"), ExpectBytes(18), b"250 2.0.0 18 octets received\r\n",
        Expect(b"BDAT 8 LAST"), ExpectBytes(8),
        b"250 2.0.0 Ok: queued as 1234\r\n",
        Hold(),
    ]
    with ScriptedPeer(script) as peer:
        term = terminal("smtp", at(peer), cols=120)
        term.expect_prompt("smtp")
        term.command("EHLO me", r"250 ETRN", "smtp")
        # ETRN is offered once advertised, BDAT once a recipient is accepted.
        term.send("ET")
        term.settle(0.3)
        term.send("\t")
        term.wait_screen(lambda s: s.line(s.row).startswith("smtp> ETRN"), "ETRN completed")
        term.send("\x15")
        term.command("MAIL FROM:<a@peer.test>", r"250 2\.1\.0", "smtp")
        term.command("RCPT TO:<b@peer.test>", r"250 2\.1\.5", "smtp")
        term.send("BD")
        term.settle(0.3)
        term.send("\t")
        term.wait_screen(lambda s: s.line(s.row).startswith("smtp> BDAT"), "BDAT completed")
        term.send("\x15")
        term.settle()

        term.sendline("BDAT 18")
        term.expect_prompt("chunk (18 bytes left)")
        term.wait_screen(lambda s: "the chunk: 18 more bytes" in toolbar(s), "the chunk's hint")
        # A line longer than what is left is refused, and nothing of it is sent.
        term.sendline("Subject: chunked, and far too long")
        term.expect(r"# the BDAT chunk has 18 bytes left and this line is 36 with its CRLF")
        term.expect_prompt("chunk (18 bytes left)")
        term.command("Subject: chunked", r"250 2\.0\.0 18 octets received", "smtp")
        term.sendline("BDAT 8 LAST")
        term.expect_prompt("chunk (8 bytes left)")
        term.sendline("")  # an empty line is 2 bytes of the chunk, and is sent
        term.expect_prompt("chunk (6 bytes left)")
        term.command("body", r"250 2\.0\.0 Ok: queued as 1234", "smtp")
        # BDAT LAST ended the transaction, as the final dot of DATA does.
        term.wait_screen(lambda s: in_state(s, "ready"), "'ready' in the toolbar")
        assert term.quit() == 0
    assert len(chunk) == 26
    assert peer.data().endswith(b"BDAT 18\r\n" + chunk[:18] + b"BDAT 8 LAST\r\n" + chunk[18:])


# ------------------------------------------------------------------ narrow terminals


RELAY_DENIED = "554 5.7.1 <linus@torvalds.org>: Relay access denied"


def explanation_lines(screen: Screen) -> list[str]:
    """The ``↳`` line and its hanging-indented continuation lines."""
    lines = screen.lines()
    start = next(n for n, line in enumerate(lines) if line.startswith("  ↳ "))
    found = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        found.append(line)
    return found


@pytest.mark.parametrize("cols", [80, 130])
def test_explanation_wraps_between_words_with_a_hanging_indent(
    terminal: Callable[..., Term], cols: int
) -> None:
    expected = explain(RELAY_DENIED, "smtp", "RCPT").one_line()
    assert len(expected) > 150  # long enough to need two lines at 130 columns
    script = [SMTP_GREETING, Expect(b"RCPT"), RELAY_DENIED.encode() + b"\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        term = terminal("smtp", at(peer), cols=cols)
        term.expect_prompt("smtp")
        term.command("RCPT TO:<linus@torvalds.org>", r"\(:explain for more\)", "smtp")
        lines = explanation_lines(term.screen)
        assert term.quit() == 0
    assert 1 <= len(lines) <= 2, lines
    assert all(len(line) < cols for line in lines), lines
    assert lines[-1].endswith("(:explain for more)")
    shown = " ".join(line.strip() for line in lines).removeprefix("↳ ")
    shown = shown.removesuffix("(:explain for more)").strip().removesuffix("…").strip()
    # Every word shown is a whole word of the explanation, in order.
    assert expected.split()[: len(shown.split())] == shown.split(), (shown, expected)


def test_toolbar_fits_a_narrow_terminal_without_cutting_a_word(
    terminal: Callable[..., Term],
) -> None:
    script = [SMTP_GREETING, Expect(b"DATA"), b"354 go ahead\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        term = terminal("smtp", at(peer), cols=80)
        term.expect_prompt("smtp")
        term.command("DATA", r"354 go ahead", "data")
        term.wait_screen(lambda s: "data" in toolbar(s), "the DATA state in the toolbar")
        bar = toolbar(term.screen)
        assert term.quit() == 0
    assert len(bar) < 80, bar
    # Labels are shortened first; then the hint loses whole words, marked with "…".
    assert "  no auth  data  next: " in bar, bar
    hint = bar.split(" next: ", 1)[1].strip()
    assert hint.startswith("a lone . ends"), bar
    full = "a lone . ends the message (headers, an empty line, the body)"
    if hint != full:
        kept = hint.removesuffix("…")
        assert hint.endswith("…") and full.startswith(kept), bar
        assert full[len(kept)] == " ", f"cut mid-word: {bar!r}"


def test_prompt_says_when_the_literal_is_all_sent(terminal: Callable[..., Term]) -> None:
    script = [IMAP_GREETING, Expect(b"a001 APPEND INBOX {7}"), b"+ go ahead\r\n",
              ExpectBytes(7), Expect(b""), b"a001 OK APPEND completed\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        term = terminal("imap", at(peer), cols=160)
        term.expect_prompt("imap")
        term.command("APPEND INBOX {7}", r"\+ go ahead", "literal")
        # "Hello" and its CRLF are the literal's 7 bytes; the command itself goes on.
        term.sendline("Hello")
        term.expect_prompt("after literal")
        term.wait_screen(
            lambda s: "the rest of the command after the literal" in toolbar(s),
            "the hint for the rest of the command",
        )
        term.command("", r"a001 OK APPEND completed", "imap")
        assert term.quit() == 0
    assert peer.data() == b"a001 APPEND INBOX {7}\r\nHello\r\n\r\n"


def test_imap_latency_is_shown_once_per_command(terminal: Callable[..., Term]) -> None:
    script = [IMAP_GREETING, Expect(b"a001 SELECT INBOX"),
              b"* 3 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen \\Deleted)\r\n"
              b"a001 OK [READ-WRITE] SELECT completed\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        term = terminal("imap", at(peer), cols=120)
        term.expect(rf"scripted IMAP ready\s+{LATENCY}")  # the greeting has its own
        term.expect_prompt("imap")
        term.command("SELECT INBOX", r"a001 OK \[READ-WRITE\] SELECT completed", "imap")
        lines = term.screen.lines()
        assert term.quit() == 0
    start = lines.index("imap> SELECT INBOX")
    reply = lines[start + 1 : start + 5]
    assert reply[0].startswith("* 3 EXISTS") and reply[3].startswith("a001 OK"), lines
    assert [bool(re.search(LATENCY, line)) for line in reply] == [False, False, False, True]


def test_pasted_block_goes_line_by_line_without_its_empty_last_line(
    terminal: Callable[..., Term],
) -> None:
    script = [
        SMTP_GREETING, Expect(b"EHLO me"), smtp_ehlo_reply("PIPELINING"),
        Expect(b"MAIL FROM:<a@peer.test>"), b"250 2.1.0 Ok\r\n",
        Expect(b"RCPT TO:<b@peer.test>"), b"250 2.1.5 Ok\r\n",
        Expect(b"NOOP"), b"250 2.0.0 first\r\n",
        Expect(b"NOOP"), b"250 2.0.0 second\r\n",
        Hold(),
    ]
    with ScriptedPeer(script) as peer:
        term = terminal("smtp", at(peer), cols=100)
        term.expect_prompt("smtp")
        # A terminal's bracketed paste of three lines, each ended; then Enter.
        term.send(f"{PASTE_START}EHLO me\rMAIL FROM:<a@peer.test>\rRCPT TO:<b@peer.test>\r"
                  f"{PASTE_END}")
        term.settle(0.3)
        term.sendline()
        term.expect(r"250 2\.1\.5 Ok")
        term.expect_prompt("smtp")
        term.wait_screen(lambda s: in_state(s, "rcpt"), "'rcpt' in the toolbar")
        # Without bracketed paste each line is an Enter; the empty one sends nothing.
        term.send("NOOP\r\r")
        term.expect(r"250 2\.0\.0 first")
        term.settle(0.5)
        term.command("NOOP", r"250 2\.0\.0 second", "smtp")
        assert term.quit() == 0
    assert peer.lines() == [b"EHLO me", b"MAIL FROM:<a@peer.test>", b"RCPT TO:<b@peer.test>",
                            b"NOOP", b"NOOP"]
    assert "500" not in term.screen.text


def test_tab_right_after_typing_completes(terminal: Callable[..., Term]) -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("PIPELINING", "SIZE 1000"),
              Hold()]
    with ScriptedPeer(script) as peer:
        term = terminal("smtp", at(peer))
        term.expect_prompt("smtp")
        # Keys and Tab in one write, as a fast typist's or a paste's arrive.
        term.send("EH\t")
        term.wait_screen(lambda s: s.line(s.row).startswith("smtp> EHLO"), "EHLO completed")
        term.send(" me\r")
        term.expect(r"250 SIZE 1000")
        term.expect_prompt("smtp")
        term.send("M\t")
        term.wait_screen(lambda s: s.line(s.row).startswith("smtp> MAIL"), "MAIL completed")
        term.send("\x15")
        term.settle()
        # Several candidates: the common part, then the menu to choose from.
        term.send("\t")
        term.wait_screen(lambda s: len(menu_lines(s)) > 3, "the menu of commands")
        assert term.quit() == 0


# ------------------------------------------------------------------ after a certificate failure


def test_reconnect_with_cafile_or_insecure_after_a_certificate_failure(
    terminal: Callable[..., Term], mailtalk_servers: Any
) -> None:
    servers = mailtalk_servers(smtp=0)
    term = terminal("smtp", f"localhost:{servers.port('smtp')}", cols=120)
    term.expect_prompt("smtp")
    term.sendline(":starttls")
    term.expect(r"# [^\n]*certificate of localhost")
    term.expect("# " + words("to go on: :reconnect --cafile FILE to trust the issuer, or "
                             ":reconnect --insecure to skip verification"))
    term.expect_prompt("smtp")
    term.sendline(f":reconnect --cafile {servers.cafile}")
    term.expect(r"# connected to localhost")
    term.expect_prompt("smtp")
    term.sendline(":starttls")
    tls = term.expect(r"# TLS: TLSv1\.[23][^#]*?(?=smtp>)").group(0)
    assert "NOT verified" not in tls
    term.expect_prompt("smtp")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    term.sendline(":reconnect --insecure")
    term.expect(r"# connected to localhost")
    term.expect_prompt("smtp")
    term.sendline(":starttls")
    term.expect(r"# TLS: [^#]*NOT verified")
    term.expect_prompt("smtp")
    term.command(":reconnect --cafile /no/such/ca.pem", r"# cannot read /no/such/ca\.pem", "smtp")
    assert term.quit() == 0


# ------------------------------------------------------------------ :save and ~/.netrc


def test_save_reports_the_lines_it_wrote(terminal: Callable[..., Term], tmp_path: Path) -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"),
              smtp_ehlo_reply("PIPELINING", "SIZE 1000", "8BITMIME", "DSN"), Hold()]
    saved = tmp_path / "session.log"
    with ScriptedPeer(script) as peer:
        term = terminal("smtp", at(peer), cols=120)
        term.expect_prompt("smtp")
        term.command("EHLO me", r"250 DSN", "smtp")
        count = term.command(f":save {saved}", r"\((\d+) lines\)", "smtp")
        assert term.quit() == 0
    written = saved.read_text().splitlines()
    assert len(written) > 6  # a header, notes, and every line of the EHLO reply
    assert count == f"({len(written)} lines)"


AUTH_PLAIN_PEER = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("AUTH PLAIN"),
                   Expect(b"AUTH PLAIN"), b"334 \r\n", Expect(b"AGFsaWNlAHNlY3JldA=="),
                   b"235 2.7.0 Authentication successful\r\n", Hold()]


def test_netrc_from_the_environment_is_named_as_such(
    terminal: Callable[..., Term], tmp_path: Path
) -> None:
    netrc = tmp_path / "mail.netrc"
    netrc.write_text("machine 127.0.0.1 login alice password secret\n")
    netrc.chmod(0o600)
    with ScriptedPeer(AUTH_PLAIN_PEER) as peer:
        term = terminal("smtp", at(peer), cols=120, env={"NETRC": str(netrc)})
        term.expect_prompt("smtp")
        term.command("EHLO me", r"250 AUTH PLAIN", "smtp")
        term.sendline(":auth plain alice")
        term.expect(rf"# password for alice from {re.escape(str(netrc))} \(\$NETRC\)")
        term.expect(r"235 2\.7\.0")
        term.expect_prompt("smtp")
        assert term.quit() == 0
    assert "~/.netrc" not in term.screen.text


def test_netrc_others_can_read_is_not_used(
    terminal: Callable[..., Term], tmp_path: Path
) -> None:
    netrc = tmp_path / "mail.netrc"
    netrc.write_text("machine 127.0.0.1 login alice password secret\n")
    netrc.chmod(0o644)
    asked = threading.Event()
    script = [*AUTH_PLAIN_PEER[:3], Signal(asked), *AUTH_PLAIN_PEER[3:]]
    with ScriptedPeer(script) as peer:
        term = terminal("smtp", at(peer), cols=160, env={"NETRC": str(netrc)})
        term.expect_prompt("smtp")
        term.command("EHLO me", r"250 AUTH PLAIN", "smtp")
        term.sendline(":auth plain alice")
        term.expect(words(f"{netrc} ($NETRC) can be read by others (mode 644): its password "
                          "is not used; chmod 600"))
        term.expect_question("password for alice: ")
        term.sendline("secret")
        term.expect(r"235 2\.7\.0")
        term.expect_prompt("smtp")
        assert term.quit() == 0
    assert asked.is_set()
