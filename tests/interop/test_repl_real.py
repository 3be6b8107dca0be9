"""The real ``mailtalk`` REPL in a pseudo-terminal, against the real Postfix and Dovecot.

Each test spawns ``python -m mailtalk ...`` under pexpect with a private
``XDG_STATE_HOME`` and talks to the servers of ``scripts/real-servers``.

What the terminal shows is reconstructed by ``Screen``, a small VT100 emulator
that understands what prompt_toolkit writes (cursor moves, erase, SGR) and
answers its cursor-position requests (CPR), so the bottom toolbar is drawn as
on a real terminal. Two views are matched:

* ``Term.expect(regex)`` searches the *stream* of printed characters (escape
  sequences removed) from where the last match ended, like pexpect does;
* ``Term.wait_screen(...)`` / ``Term.expect_prompt(...)`` look at the screen
  as it is now, which is the only reliable view of a redrawn input line.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import smtplib
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.interop.conftest import RealServers

pytestmark = pytest.mark.interop

TIMEOUT = 15.0
ROWS, COLS = 50, 200
MAILDIR = Path("/home/alice/Maildir")
ANSI_RED = "\x1b[31m"

# The base64 of a SASL PLAIN answer for alice/secret: a secret as much as "secret".
PLAIN_SECRET = base64.b64encode(b"\0alice\0secret").decode()


# ---------------------------------------------------------------- a tiny terminal


_ESCAPE = re.compile(
    r"\x1b(?:\[(?P<csi>[0-?]*)[ -/]*(?P<final>[@-~])"  # CSI
    r"|\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC ... BEL/ST
    r"|[()*+][0-9A-Za-z]"  # charset designation
    r"|[@-Z\\^_=>78])"  # other two-character escapes
)


class Screen:
    """Enough of a VT100 for prompt_toolkit: a grid of cells, a cursor, and a text stream."""

    def __init__(self, rows: int = ROWS, cols: int = COLS) -> None:
        self.rows = rows
        self.cols = cols
        self.grid = [[" "] * cols for _ in range(rows)]
        self.row = 0
        self.col = 0
        self.autowrap = True
        self.scrollback: list[str] = []
        self.text = ""  # every printed character, escapes removed, "\n" for line feeds
        self.cpr_requests = 0
        self._pending = ""

    # -- views
    def line(self, row: int) -> str:
        return "".join(self.grid[row]).rstrip()

    def lines(self) -> list[str]:
        return [self.line(row) for row in range(self.rows)]

    def dump(self) -> str:
        return "\n".join(f"{n:2d}|{text}" for n, text in enumerate(self.lines()))

    def cursor_line(self) -> str:
        """The text left of the cursor on its row."""
        return "".join(self.grid[self.row][: self.col])

    # -- feeding
    def feed(self, data: str) -> None:
        data = self._pending + data
        self._pending = ""
        pos = 0
        while pos < len(data):
            esc = data.find("\x1b", pos)
            if esc < 0:
                self._print(data[pos:])
                return
            self._print(data[pos:esc])
            match = _ESCAPE.match(data, esc)
            if match is None:
                if len(data) - esc < 64 and "\n" not in data[esc:]:
                    self._pending = data[esc:]  # an escape cut in two by the read
                    return
                pos = esc + 1  # unknown: drop the ESC
                continue
            if match.group("final"):
                self._csi(match.group("csi"), match.group("final"))
            pos = match.end()

    def _print(self, text: str) -> None:
        for char in text:
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._linefeed()
                self.text += "\n"
            elif char == "\b":
                self.col = max(0, min(self.col, self.cols - 1) - 1)
            elif char == "\t":
                self.col = min(self.cols - 1, (self.col // 8 + 1) * 8)
            elif char < " " or char == "\x7f":
                continue
            else:
                if self.col >= self.cols:
                    if self.autowrap:
                        self.col = 0
                        self._linefeed()
                    else:
                        self.col = self.cols - 1
                self.grid[self.row][self.col] = char
                self.col += 1
                self.text += char

    def _linefeed(self) -> None:
        if self.row == self.rows - 1:
            self.scrollback.append("".join(self.grid.pop(0)).rstrip())
            self.grid.append([" "] * self.cols)
        else:
            self.row += 1

    def _csi(self, params: str, final: str) -> None:
        private = params.startswith("?")
        numbers = [int(p) if p.isdigit() else 0 for p in params.lstrip("?").split(";")]
        n = numbers[0] or 1
        if private:
            if final in "hl" and 7 in numbers:
                self.autowrap = final == "h"
            return
        if final == "A":
            self.row = max(0, self.row - n)
        elif final == "B":
            self.row = min(self.rows - 1, self.row + n)
        elif final == "C":
            self.col = min(self.cols - 1, self.col + n)
        elif final == "D":
            self.col = max(0, min(self.col, self.cols - 1) - n)
        elif final == "G":
            self.col = min(self.cols - 1, n - 1)
        elif final == "d":
            self.row = min(self.rows - 1, n - 1)
        elif final in "Hf":
            row = numbers[0] or 1
            col = numbers[1] if len(numbers) > 1 and numbers[1] else 1
            self.row, self.col = min(self.rows, row) - 1, min(self.cols, col) - 1
        elif final == "J":
            mode = numbers[0]
            if mode == 0:
                self._erase_line(self.row, self.col, self.cols)
                for row in range(self.row + 1, self.rows):
                    self._erase_line(row, 0, self.cols)
            elif mode == 1:
                for row in range(self.row):
                    self._erase_line(row, 0, self.cols)
                self._erase_line(self.row, 0, self.col + 1)
            else:
                for row in range(self.rows):
                    self._erase_line(row, 0, self.cols)
        elif final == "K":
            mode = numbers[0]
            start, end = {0: (self.col, self.cols), 1: (0, self.col + 1)}.get(mode, (0, self.cols))
            self._erase_line(self.row, start, end)
        elif final == "n" and numbers[0] == 6:
            self.cpr_requests += 1

    def _erase_line(self, row: int, start: int, end: int) -> None:
        for col in range(max(0, start), min(self.cols, end)):
            self.grid[row][col] = " "


def test_screen_emulator_basics() -> None:
    """The emulator itself (no server needed): moves, erase, wrap, scroll, split escapes."""
    screen = Screen(3, 10)
    screen.feed("ab\x1b[0;1mcd\x1b[0m\r\r\nxy\x1b[1A\x1b[2Cz\x1b")
    screen.feed("[K")
    assert screen.lines() == ["abcdz", "xy", ""]
    assert screen.row == 0 and screen.col == 5
    screen.feed("\x1b[3;1Hline3\r\nnext")
    assert screen.lines() == ["xy", "line3", "next"]
    assert screen.scrollback == ["abcdz"]
    assert "abcdxy" not in screen.text and "abcd\nxyz" in screen.text
    screen.feed("\x1b[6n\x1b]2;title\x07\x1b[J")
    assert screen.cpr_requests == 1


# ---------------------------------------------------------------- driving mailtalk


class Term:
    """A ``mailtalk`` child in a pseudo-terminal, seen through ``Screen``."""

    def __init__(self, child: pexpect.spawn, screen: Screen) -> None:
        self.child = child
        self.screen = screen
        self.raw = ""
        self.pos = 0
        self.eof = False

    # -- reading
    def _read(self, timeout: float) -> None:
        if self.eof:
            raise pexpect.EOF("the child closed the terminal")
        try:
            data = self.child.read_nonblocking(65536, timeout=max(0.01, timeout))
        except pexpect.EOF:
            self.eof = True
            raise
        self.raw += data
        before = self.screen.cpr_requests
        self.screen.feed(data)
        for _ in range(self.screen.cpr_requests - before):
            self.child.send(f"\x1b[{self.screen.row + 1};{self.screen.col + 1}R")

    def _until(self, done: Callable[[], object], what: str, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while True:
            result = done()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._failure(f"timed out waiting for {what}"))
            try:
                self._read(min(remaining, 0.2))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                result = done()
                if result:
                    return result
                message = self._failure(f"mailtalk exited while waiting for {what}")
                raise AssertionError(message) from None

    def _failure(self, message: str) -> str:
        return (
            f"{message}\n--- screen ---\n{self.screen.dump()}\n"
            f"--- stream since the last match ---\n{self.screen.text[self.pos :][-3000:]}"
        )

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in the printed text after the previous match."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return regex.search(self.screen.text, self.pos)

        match = self._until(found, f"/{pattern}/", timeout)
        assert isinstance(match, re.Match)
        self.pos = match.end()
        return match

    def wait_screen(
        self, predicate: Callable[[Screen], object], what: str, timeout: float = TIMEOUT
    ) -> None:
        self._until(lambda: predicate(self.screen), what, timeout)

    def screen_has(self, pattern: str, timeout: float = TIMEOUT) -> None:
        regex = re.compile(pattern)
        self.wait_screen(
            lambda s: any(regex.search(line) for line in s.lines()),
            f"/{pattern}/ on screen",
            timeout,
        )

    def expect_prompt(self, name: str, timeout: float = TIMEOUT) -> None:
        """Wait for a fresh, empty ``name> `` prompt with the cursor after it."""
        self.expect_question(f"{name}> ", timeout)

    def expect_question(self, prompt: str, timeout: float = TIMEOUT) -> None:
        """Wait for ``prompt`` newly drawn at the start of a line, the cursor just after it.

        prompt_toolkit draws a prompt's trailing space late, so the stream is searched
        for the prompt without it and the screen for the whole of it.
        """
        self.expect(rf"(?m)^{re.escape(prompt.rstrip())}", timeout)
        self.wait_screen(
            lambda s: s.cursor_line() == prompt, f"an empty {prompt!r} prompt", timeout
        )
        self.settle(0.1)

    def input_line(self) -> str:
        """The input line as the screen shows it (the cursor's row)."""
        return self.screen.line(self.screen.row)

    def settle(self, quiet: float = 0.15, limit: float = 3.0) -> None:
        """Read until the terminal has been quiet for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self.eof:
            try:
                self._read(quiet)
            except (pexpect.TIMEOUT, pexpect.EOF):
                return

    # -- writing
    def send(self, text: str) -> None:
        self.child.send(text)

    def sendline(self, line: str = "") -> None:
        self.child.send(line + "\r")

    def command(self, line: str, reply: str, prompt: str, timeout: float = TIMEOUT) -> str:
        """Type ``line``, wait for ``reply`` (regex) and the next prompt; the match text."""
        self.sendline(line)
        match = self.expect(reply, timeout)
        self.expect_prompt(prompt, timeout)
        return match.group(0)

    # -- ending
    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() > deadline:
                raise AssertionError(self._failure("mailtalk did not exit"))
            with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
                self._read(0.2)
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.close()
        assert self.child.exitstatus is not None, f"killed by signal {self.child.signalstatus}"
        return int(self.child.exitstatus)

    def quit(self) -> int:
        """Ctrl-D at the prompt; the exit status."""
        self.send("\x04")
        return self.wait_exit()


def spawn_term(
    command: list[str],
    env: dict[str, str],
    rows: int = ROWS,
    cols: int = COLS,
    timeout: float = TIMEOUT,
    **options: Any,
) -> Term:
    """``command`` in a pseudo-terminal of ``rows`` x ``cols``, seen through a Screen of
    that size (``options``: pexpect's, such as cwd or preexec_fn)."""
    child = pexpect.spawn(
        command[0],
        command[1:],
        env=env,
        dimensions=(rows, cols),
        timeout=timeout,
        encoding="utf-8",
        codec_errors="replace",
        **options,
    )
    return Term(child, Screen(rows, cols))


@contextlib.contextmanager
def terminals() -> Iterator[Callable[..., Term]]:
    """``start(command, env, ...)`` as ``spawn_term``; every child ended at the end."""
    children: list[pexpect.spawn] = []

    def start(command: list[str], env: dict[str, str], *args: Any, **options: Any) -> Term:
        term = spawn_term(command, env, *args, **options)
        children.append(term.child)
        return term

    try:
        yield start
    finally:
        for child in children:
            if child.isalive():
                child.terminate(force=True)


def mailtalk_command() -> list[str]:
    script = Path(sys.executable).with_name("mailtalk")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mailtalk"]


def term_env(state_home: Path, color: bool = False) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAILTALK_", "PROMPT_TOOLKIT_")) and key not in ("NO_COLOR",)
    }
    env.update(
        TERM="xterm",
        COLUMNS=str(COLS),
        LINES=str(ROWS),
        XDG_STATE_HOME=str(state_home),
        PYTHONUNBUFFERED="1",
    )
    if not color:
        env["NO_COLOR"] = "1"
    return env


@pytest.fixture
def state_home(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def spawn(state_home: Path) -> Iterator[Callable[..., Term]]:
    """Start mailtalk with arguments in a terminal; every child is ended after the test."""
    with terminals() as started:

        def start(*args: str, color: bool = False, cwd: Path | None = None) -> Term:
            return started([*mailtalk_command(), *args], term_env(state_home, color),
                           cwd=str(cwd) if cwd else None)

        yield start


def history_text(state_home: Path) -> str:
    return (state_home / "mailtalk" / "history").read_text(encoding="utf-8")


# ---------------------------------------------------------------- mail helpers


def unique_subject(what: str) -> str:
    return f"mailtalk {what} {uuid.uuid4().hex[:12]}"


def find_delivered(subject: str, timeout: float = 10.0) -> Path:
    """The file in alice's Maildir holding ``subject`` (polls new/ and cur/)."""
    deadline = time.monotonic() + timeout
    needle = f"Subject: {subject}".encode()
    while True:
        for folder in ("new", "cur"):
            directory = MAILDIR / folder
            for path in directory.iterdir() if directory.is_dir() else ():
                try:
                    if needle in path.read_bytes():
                        return path
                except OSError:  # renamed by Dovecot while we looked
                    continue
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with subject {subject!r} in {MAILDIR}")
        time.sleep(0.1)


def deliver(servers: RealServers, subject: str, body: str = "A message for the tests.\n") -> Path:
    """Deliver a message to alice with smtplib; the Maildir file once it has arrived."""
    message = EmailMessage()
    message["From"] = "bill@isp.test"
    message["To"] = servers.address
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP(servers.host, servers.smtp, timeout=TIMEOUT) as smtp:
        smtp.send_message(message)
    return find_delivered(subject)


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


# ---------------------------------------------------------------- patterns

LATENCY = r"\((?:\d+ ms|\d+\.\d+ s)\)"
TLS_NOTE = r"# TLS: TLSv1\.[23], [^\n]*"
TOOLBAR = re.compile(r"^ \S+:\d+  (?:SMTP|POP3|IMAP)  TLS o(?:n|ff)  ")


def toolbar(screen: Screen) -> str:
    """The bottom toolbar's line, or "" when it is not drawn."""
    found = [line for line in screen.lines() if TOOLBAR.search(line)]
    return found[-1] if found else ""


def shows_authenticated(screen: Screen) -> bool:
    bar = toolbar(screen)
    return "  authenticated  " in bar and "not authenticated" not in bar


def menu_lines(screen: Screen) -> list[str]:
    """The non-empty lines between the input line and the toolbar: the completion menu."""
    below = []
    for line in screen.lines()[screen.row + 1 :]:
        if TOOLBAR.search(line):
            break
        if line.strip():
            below.append(line.strip())
    return below


def without_hints(text: str) -> str:
    """``text`` without the POP3 toolbar's advice "... PASS secret ...", which is no leak."""
    return text.replace("PASS secret", "PASS ")


def tab_complete(term: Term, typed: str) -> str:
    """Type ``typed``, let the completer run, press Tab; the input line shown after."""
    term.send(typed)
    term.settle(0.2)
    term.send("\t")
    term.settle(0.2)
    return term.input_line()


def clear_input(term: Term, prompt: str) -> None:
    """Ctrl-U empties the line (and closes the menu)."""
    term.send("\x15")
    term.wait_screen(lambda s: s.cursor_line() == f"{prompt}> ", "an empty input line")
    term.settle()


# ---------------------------------------------------------------- SMTP


def test_smtp_session_with_starttls_and_dot_stuffing(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    subject = unique_subject("smtp repl")
    term = spawn("smtp", f"localhost:{real_servers.smtp}", "--cafile", real_servers.cafile)
    term.expect(r"# connected to localhost:25")
    term.expect(rf"220 {re.escape(real_servers.domain)} ESMTP [^\n]*{LATENCY}")
    term.expect_prompt("smtp")
    term.command("EHLO client.test", rf"250-STARTTLS[\s\S]*?250 [^\n]*{LATENCY}", "smtp")

    # STARTTLS typed raw: the upgrade follows the 220 on its own.
    term.sendline("STARTTLS")
    term.expect(r"220 2\.0\.0 Ready to start TLS")
    tls = term.expect(TLS_NOTE).group(0)
    assert "NOT verified" not in tls
    term.expect_prompt("smtp")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")

    term.command("EHLO client.test", rf"250 [^\n]*{LATENCY}", "smtp")
    term.command("MAIL FROM:<bill@isp.test>", r"250 2\.1\.0 Ok", "smtp")
    term.command(f"RCPT TO:<{real_servers.address}>", r"250 2\.1\.5 Ok", "smtp")
    term.command("DATA", r"354 End data with", "data")
    for line in (
        "From: bill@isp.test",
        f"To: {real_servers.address}",
        f"Subject: {subject}",
        "",
        "First line of the body.",
        ".leading dot survives",
        "..two dots survive too",
    ):
        term.sendline(line)
        term.expect_prompt("data")
    term.command(".", rf"250 2\.0\.0 Ok: queued as \w+\s+{LATENCY}", "smtp")
    term.command("QUIT", r"221 2\.0\.0 Bye", "smtp")

    delivered = find_delivered(subject)
    try:
        body = delivered.read_text(encoding="utf-8").splitlines()
        assert ".leading dot survives" in body
        assert "..two dots survive too" in body
        assert "First line of the body." in body
    finally:
        remove_quietly(delivered)


def test_smtp_relay_denied_is_shown(real_servers: RealServers, spawn: Callable[..., Term]) -> None:
    term = spawn("smtp", f"localhost:{real_servers.smtp}")
    term.expect_prompt("smtp")
    term.command("EHLO client.test", rf"250 [^\n]*{LATENCY}", "smtp")
    term.command("MAIL FROM:<bill@isp.test>", r"250 2\.1\.0 Ok", "smtp")
    term.command(
        "RCPT TO:<linus@torvalds.org>",
        rf"554 5\.7\.1 <linus@torvalds\.org>: Relay access denied\s+{LATENCY}",
        "smtp",
    )
    # explained on the spot, with Postfix's own reason
    term.screen_has(r"↳ relaying denied \(permanent\): Postfix.s reject_unauth_destination")
    term.command(":explain", r"What to do, as the server's admin", "smtp")
    # The refusal does not end the transaction: a local recipient is still fine.
    term.command(f"RCPT TO:<{real_servers.address}>", r"250 2\.1\.5 Ok", "smtp")
    term.command("RSET", r"250 2\.0\.0 Ok", "smtp")
    assert term.quit() == 0


def test_smtp_failure_is_red_without_no_color(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("smtp", f"localhost:{real_servers.smtp}", color=True)
    term.expect_prompt("smtp")
    term.command("EHLO client.test", rf"250 [^\n]*{LATENCY}", "smtp")
    term.command("MAIL FROM:<bill@isp.test>", r"250 2\.1\.0 Ok", "smtp")
    term.command("RCPT TO:<linus@torvalds.org>", r"554 5\.7\.1 ", "smtp")
    # Colours do not get in the way of the text, and the refusal is red, the 250 green.
    assert re.search(r"\x1b\[(?:[0-9;]*;)?31m554 5\.7\.1 <linus@torvalds\.org>", term.raw), (
        term.raw[-2000:]
    )
    assert re.search(r"\x1b\[(?:[0-9;]*;)?32m250 2\.1\.0 Ok", term.raw)
    assert term.quit() == 0


def test_submission_url_starts_tls_before_the_prompt(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn(
        "connect",
        f"submission://localhost:{real_servers.submission}",
        "--cafile",
        real_servers.cafile,
    )
    term.expect(r"220 [^\n]*ESMTP")
    tls = term.expect(TLS_NOTE)
    assert "smtp>" not in term.screen.text[: tls.start()], "a prompt came before TLS was on"
    assert "NOT verified" not in tls.group(0)
    term.expect_prompt("smtp")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    # mailtalk's own EHLO and STARTTLS were shown as such.
    assert re.search(r"(?m)^C: STARTTLS$", term.screen.text)
    term.command("EHLO client.test", r"250-AUTH PLAIN LOGIN[\s\S]*?250 [^\n]*" + LATENCY, "smtp")
    term.sendline(":auth plain alice")
    term.expect_question("password for alice: ")
    term.sendline(real_servers.password)
    term.expect(r"235 2\.7\.0 Authentication successful")
    term.expect_prompt("smtp")
    term.wait_screen(shows_authenticated, "'authenticated' in the toolbar")
    assert real_servers.password not in without_hints(term.raw)
    assert term.quit() == 0


def test_smtps_url_is_implicit_tls(real_servers: RealServers, spawn: Callable[..., Term]) -> None:
    term = spawn(
        "connect", f"smtps://localhost:{real_servers.smtps}", "--cafile", real_servers.cafile
    )
    tls = term.expect(TLS_NOTE)
    greeting = term.expect(r"220 [^\n]*ESMTP")
    assert tls.start() < greeting.start()
    term.expect_prompt("smtp")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    term.command("EHLO client.test", r"250-AUTH PLAIN LOGIN[\s\S]*?250 [^\n]*" + LATENCY, "smtp")
    term.command("QUIT", r"221 2\.0\.0 Bye", "smtp")
    assert term.quit() == 0


def test_unverifiable_certificate_is_one_line_naming_cafile_and_insecure(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("connect", f"smtps://{real_servers.host}:{real_servers.smtps}")
    status = term.wait_exit()
    output = term.screen.text
    assert status != 0
    assert "Traceback" not in output
    assert "smtp>" not in output
    messages = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in messages if line.startswith("mailtalk:")]
    assert len(errors) == 1, output
    assert "--cafile" in errors[0] and "--insecure" in errors[0], output
    assert [line for line in messages if not line.startswith(("mailtalk:", "# "))] == []


def test_insecure_connects_and_says_not_verified(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("connect", f"smtps://{real_servers.host}:{real_servers.smtps}", "--insecure")
    term.expect(TLS_NOTE + "NOT verified")
    term.expect(r"220 [^\n]*ESMTP")
    term.expect_prompt("smtp")
    assert term.quit() == 0


# ---------------------------------------------------------------- POP3


def test_pop3_session_reads_and_deletes_a_fresh_message(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    subject = unique_subject("pop3 repl")
    delivered = deliver(real_servers, subject)
    try:
        term = spawn("pop3", f"localhost:{real_servers.pop3}")
        term.expect(r"\+OK [^\n]*ready")
        term.expect_prompt("pop3")
        term.command("USER alice", r"\+OK", "pop3")
        term.command(f"PASS {real_servers.password}", r"\+OK Logged in", "pop3")
        term.wait_screen(shows_authenticated, "'authenticated' in the toolbar")
        count = int(term.command("STAT", r"\+OK (\d+) \d+", "pop3").split()[1])
        assert count >= 1
        term.sendline("LIST")
        listing = term.expect(rf"\+OK[^\n]*\n(?P<lines>(?:\d+ \d+\n)*)\.\s+{LATENCY}")
        term.expect_prompt("pop3")
        numbers = [int(line.split()[0]) for line in listing.group("lines").splitlines()]
        assert numbers and numbers[-1] == count
        last = numbers[-1]
        term.sendline(f"RETR {last}")
        term.expect(r"\+OK \d+ octets")
        term.expect(rf"Subject: {re.escape(subject)}\n")
        term.expect(rf"\n\.\s+{LATENCY}")
        term.expect_prompt("pop3")
        term.command(f"DELE {last}", r"\+OK Marked to be deleted", "pop3")
        term.sendline("QUIT")
        term.expect(r"\+OK Logging out, messages deleted")
        term.expect(r"# [^\n]*closed the connection")
        assert term.quit() == 0
        deadline = time.monotonic() + 10
        while delivered.exists() or any(
            subject.encode() in p.read_bytes() for p in (MAILDIR / "cur").iterdir()
        ):
            assert time.monotonic() < deadline, "DELE did not remove the message"
            time.sleep(0.1)
    finally:
        remove_quietly(delivered)


@pytest.mark.parametrize(
    "how",
    [["pop3", "--tls", "localhost:{port}"], ["connect", "pop3s://localhost:{port}"]],
    ids=["pop3--tls", "pop3s-url"],
)
def test_pop3s_implicit_tls(
    real_servers: RealServers, spawn: Callable[..., Term], how: list[str]
) -> None:
    args = [arg.format(port=real_servers.pop3s) for arg in how]
    term = spawn(*args, "--cafile", real_servers.cafile)
    tls = term.expect(TLS_NOTE)
    assert "NOT verified" not in tls.group(0)
    term.expect(r"\+OK [^\n]*ready")
    term.expect_prompt("pop3")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    term.command("USER alice", r"\+OK", "pop3")
    term.command(f"PASS {real_servers.password}", r"\+OK Logged in", "pop3")
    term.command("STAT", r"\+OK \d+ \d+", "pop3")
    term.command("QUIT", r"\+OK Logging out", "pop3")
    assert term.quit() == 0


def test_pop3_stls_typed_raw(real_servers: RealServers, spawn: Callable[..., Term]) -> None:
    term = spawn("pop3", f"localhost:{real_servers.pop3}", "--cafile", real_servers.cafile)
    term.expect_prompt("pop3")
    term.sendline("STLS")
    term.expect(r"\+OK Begin TLS")
    term.expect(TLS_NOTE)
    term.expect_prompt("pop3")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    term.command("USER alice", r"\+OK", "pop3")
    term.command(f"PASS {real_servers.password}", r"\+OK Logged in", "pop3")
    term.command("QUIT", r"\+OK Logging out", "pop3")
    assert term.quit() == 0


# ---------------------------------------------------------------- IMAP


def test_imap_session_with_fetch_and_append_literal(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    subject = unique_subject("imap append")
    term = spawn("imap", f"localhost:{real_servers.imap}")
    term.expect(r"\* OK [^\n]*Dovecot[^\n]*ready")
    term.expect_prompt("imap")
    term.command(f"LOGIN alice {real_servers.password}", r"a001 OK [^\n]*Logged in", "imap")
    term.wait_screen(shows_authenticated, "'authenticated' in the toolbar")
    term.command("SELECT INBOX", r"\* \d+ EXISTS[\s\S]*?a002 OK \[READ-WRITE\]", "imap")
    term.sendline("FETCH 1 (FLAGS BODY.PEEK[HEADER])")
    term.expect(r"\* 1 FETCH \(FLAGS \([^)]*\) BODY\[HEADER\] \{\d+\}\n")
    term.expect(r"Return-Path: [^\n]*\n")
    term.expect(rf"a003 OK Fetch completed[^\n]*{LATENCY}")
    term.expect_prompt("imap")

    message = ["From: bill@isp.test", f"Subject: {subject}", "", "Appended from the REPL."]
    size = sum(len(line) + 2 for line in message)
    term.sendline(f"APPEND INBOX {{{size}}}")
    term.expect(r"\+ ")
    term.expect_prompt("literal")
    for number, line in enumerate(message, 1):
        term.sendline(line)
        # The last line's CRLF ends the literal; then comes the rest of the command.
        term.expect_prompt("literal" if number < len(message) else "after literal")
    uid = term.command("", r"a004 OK \[APPENDUID \d+ (\d+)\]", "imap").split()[-1].rstrip("]")
    # Clean up what we appended.
    term.command(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)", r"a005 OK", "imap")
    term.command(f"UID EXPUNGE {uid}", r"a006 OK", "imap")
    term.sendline("LOGOUT")
    term.expect(r"\* BYE")
    term.expect(r"a007 OK")
    term.expect(r"# [^\n]*closed the connection")
    term.expect_prompt("imap")
    assert term.quit() == 0


def test_imap_login_with_a_literal_password(
    real_servers: RealServers, spawn: Callable[..., Term], state_home: Path
) -> None:
    term = spawn("imap", f"localhost:{real_servers.imap}")
    term.expect_prompt("imap")
    term.sendline(f"LOGIN alice {{{len(real_servers.password)}}}")
    term.expect(r"\+ ")
    term.expect_prompt("literal")
    term.command(real_servers.password, r"a001 OK [^\n]*Logged in", "imap")
    term.wait_screen(shows_authenticated, "'authenticated' in the toolbar")
    term.command("LOGOUT", r"a002 OK", "imap")
    assert term.quit() == 0


@pytest.mark.parametrize(
    "how",
    [["imap", "--tls", "localhost:{port}"], ["connect", "imaps://localhost:{port}"]],
    ids=["imap--tls", "imaps-url"],
)
def test_imaps_implicit_tls(
    real_servers: RealServers, spawn: Callable[..., Term], how: list[str]
) -> None:
    args = [arg.format(port=real_servers.imaps) for arg in how]
    term = spawn(*args, "--cafile", real_servers.cafile)
    term.expect(TLS_NOTE)
    term.expect(r"\* OK [^\n]*ready")
    term.expect_prompt("imap")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    term.command(f"LOGIN alice {real_servers.password}", r"a001 OK", "imap")
    term.command("LOGOUT", r"a002 OK", "imap")
    assert term.quit() == 0


def test_imap_starttls_typed_raw(real_servers: RealServers, spawn: Callable[..., Term]) -> None:
    term = spawn("imap", f"localhost:{real_servers.imap}", "--cafile", real_servers.cafile)
    term.expect_prompt("imap")
    term.sendline("STARTTLS")
    term.expect(r"a001 OK Begin TLS")
    term.expect(TLS_NOTE)
    term.expect_prompt("imap")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    term.command(f"LOGIN alice {real_servers.password}", r"a002 OK", "imap")
    term.command("LOGOUT", r"a003 OK", "imap")
    assert term.quit() == 0


# ---------------------------------------------------------------- :auth


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_meta_auth_plain_asks_without_echo(
    real_servers: RealServers, spawn: Callable[..., Term], protocol: str
) -> None:
    port = real_servers.imap if protocol == "imap" else real_servers.pop3
    term = spawn(protocol, f"localhost:{port}")
    term.expect_prompt(protocol)
    term.wait_screen(lambda s: "not authenticated" in toolbar(s), "'not authenticated'")
    term.sendline(":auth plain alice")
    term.expect_question("password for alice: ")
    term.sendline(real_servers.password)
    ok = r"a001 OK [^\n]*Logged in" if protocol == "imap" else r"\+OK Logged in"
    term.expect(ok)
    term.expect("# authenticated as alice")
    term.expect_prompt(protocol)
    term.wait_screen(shows_authenticated, "'authenticated' in the toolbar")
    # What was typed showed as stars, and neither it nor its base64 was ever written.
    shown = [*term.screen.scrollback, *term.screen.lines()]
    assert f"password for alice: {'*' * len(real_servers.password)}" in shown, term.screen.dump()
    assert real_servers.password not in without_hints(term.raw)
    assert PLAIN_SECRET not in term.raw
    assert term.quit() == 0


def test_ctrl_c_or_ctrl_d_at_the_password_prompt_cancels_the_login_only(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    """Ctrl-C there ended the whole session (exit 130); Ctrl-D said "EOFError (--debug
    shows the trace)". Each now gives up this :auth, sends nothing, and the session
    goes on: the next :auth logs in."""
    term = spawn("imap", f"localhost:{real_servers.imap}")
    term.expect_prompt("imap")
    for key in ("\x03", "\x04"):
        term.sendline(":auth plain alice")
        term.expect_question("password for alice: ")
        term.send(key)
        term.expect("# cancelled: no password or token was sent")
        term.expect_prompt("imap")
    term.sendline(":auth plain alice")
    term.expect_question("password for alice: ")
    term.sendline(real_servers.password)
    term.expect(r"a001 OK [^\n]*Logged in")  # the first command sent: nothing before it
    term.expect("# authenticated as alice")
    term.expect_prompt("imap")
    assert "EOFError" not in term.raw and "interrupted" not in term.raw
    assert term.quit() == 0


# ---------------------------------------------------------------- completion


def test_completion_follows_the_smtp_state(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("smtp", f"localhost:{real_servers.smtp}")
    term.expect_prompt("smtp")
    # Before EHLO, MAIL is not valid: nothing completes.
    assert tab_complete(term, "MA") == "smtp> MA"
    assert not any("MAIL" in line for line in menu_lines(term.screen)), term.screen.dump()
    clear_input(term, "smtp")
    term.command("EHLO client.test", rf"250 [^\n]*{LATENCY}", "smtp")
    assert tab_complete(term, "MA") == "smtp> MAIL"
    term.sendline(" FROM:<bill@isp.test>")
    term.expect(r"250 2\.1\.0 Ok")
    term.expect_prompt("smtp")
    # Before an accepted RCPT, DATA is not offered.
    assert tab_complete(term, "D") == "smtp> D"
    assert not any("DATA" in line for line in menu_lines(term.screen)), term.screen.dump()
    clear_input(term, "smtp")
    term.command("RCPT TO:<linus@torvalds.org>", r"554 5\.7\.1", "smtp")
    assert tab_complete(term, "D") == "smtp> D", "DATA offered after a refused RCPT"
    clear_input(term, "smtp")
    term.command(f"RCPT TO:<{real_servers.address}>", r"250 2\.1\.5 Ok", "smtp")
    assert tab_complete(term, "D") == "smtp> DATA"
    clear_input(term, "smtp")
    term.command("RSET", r"250 2\.0\.0 Ok", "smtp")
    term.command("QUIT", r"221", "smtp")
    assert term.quit() == 0


def test_completion_of_pop3_message_numbers_and_sasl_mechanisms(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("pop3", f"localhost:{real_servers.pop3}")
    term.expect_prompt("pop3")
    term.command("CAPA", r"SASL PLAIN LOGIN\n[\s\S]*?\.\s+" + LATENCY, "pop3")
    line = tab_complete(term, "AUTH ")
    assert re.fullmatch(r"pop3> AUTH (PLAIN|LOGIN)", line), term.screen.dump()
    assert any(re.fullmatch(r"PLAIN\b.*", entry) for entry in menu_lines(term.screen)) or (
        line == "pop3> AUTH PLAIN"
    ), term.screen.dump()
    clear_input(term, "pop3")
    term.command("USER alice", r"\+OK", "pop3")
    term.command(f"PASS {real_servers.password}", r"\+OK Logged in", "pop3")
    term.command("LIST", rf"\n\.\s+{LATENCY}", "pop3")
    line = tab_complete(term, "RETR ")
    assert re.fullmatch(r"pop3> RETR \d+", line), term.screen.dump()
    assert any(re.fullmatch(r"\d+", entry.split()[0]) for entry in menu_lines(term.screen))
    clear_input(term, "pop3")
    term.command("QUIT", r"\+OK Logging out", "pop3")
    assert term.quit() == 0


def test_completion_of_imap_mailboxes(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    """Dovecot's INBOX completes after SELECT; and Tab completes a word with a space
    after it, as bash does, so Tab again offers the next word instead of gluing it on
    ("SELECTINBOX"), and so does Tab after a command typed out in full."""
    term = spawn("imap", f"localhost:{real_servers.imap}")
    term.expect_prompt("imap")
    term.command(f"LOGIN alice {real_servers.password}", r"a001 OK", "imap")
    # INBOX alone: the one mailbox Tab knows, whatever other tests made
    term.command('LIST "" "INBOX"', r'\* LIST \([^)]*\) "." INBOX[\s\S]*?a002 OK', "imap")
    assert tab_complete(term, "SELECT IN") == "imap> SELECT INBOX"
    clear_input(term, "imap")
    assert tab_complete(term, "SEL") == "imap> SELECT"
    term.send("\t")
    term.settle(0.2)
    assert term.input_line() == "imap> SELECT INBOX", term.screen.dump()
    clear_input(term, "imap")
    assert tab_complete(term, "SELECT") == "imap> SELECT"
    term.send("INBOX")  # typed on after the Tab: a word of its own
    term.settle(0.2)
    assert term.input_line() == "imap> SELECT INBOX", term.screen.dump()
    term.sendline()
    term.expect(r"a003 OK \[READ-WRITE\]")
    term.expect_prompt("imap")
    term.command("LOGOUT", r"a004 OK", "imap")
    assert term.quit() == 0


# ---------------------------------------------------------------- secrets at rest


def test_history_hides_the_secret_of_a_mistyped_login(
    real_servers: RealServers, spawn: Callable[..., Term], state_home: Path
) -> None:
    """LOG, LOGN, PAS, AUTH PLAN: Dovecot refuses each, but the line typed held a
    password, and the history file keeps none of them (the user names stay)."""
    secret = f"typo-{uuid.uuid4().hex[:10]}"
    encoded = base64.b64encode(f"\0alice\0{secret}".encode()).decode()
    imap, pop3 = f"localhost:{real_servers.imap}", f"localhost:{real_servers.pop3}"

    def session(protocol: str, where: str, exchanges: list[tuple[str, str]]) -> None:
        term = spawn(protocol, where)
        term.expect_prompt(protocol)
        for line, reply in exchanges:
            term.command(line, reply, protocol)
        assert term.quit() == 0

    session("imap", imap, [(f"LOG alice {secret}", r"a001 BAD"),
                           (f"a2 LOGN alice {secret}", r"a002 BAD"),  # a2: no known verb
                           ("LOGOUT", r"a003 OK")])
    # a session of its own: Dovecot hangs up on the third bad command
    session("imap", imap, [(f"AUTH PLAN {encoded}", r"a001 BAD"), ("LOGOUT", r"a002 OK")])
    session("pop3", pop3, [("USER alice", r"\+OK"), (f"PAS {secret}", r"-ERR"),
                           ("QUIT", r"\+OK Logging out")])

    history = history_text(state_home)
    assert secret not in history and encoded not in history, history
    for kept in ("LOG alice ***", "a2 LOGN alice ***", "AUTH PLAN ***", "PAS ***"):
        assert kept in history, history


def test_history_holds_no_secrets(
    real_servers: RealServers, spawn: Callable[..., Term], state_home: Path
) -> None:
    password = real_servers.password
    pop = spawn("pop3", f"localhost:{real_servers.pop3}")
    pop.expect_prompt("pop3")
    pop.command("USER alice", r"\+OK", "pop3")
    pop.command(f"PASS {password}", r"\+OK Logged in", "pop3")
    pop.command("QUIT", r"\+OK Logging out", "pop3")
    assert pop.quit() == 0

    imap = spawn("imap", f"localhost:{real_servers.imap}")
    imap.expect_prompt("imap")
    imap.command(f"LOGIN alice {password}", r"a001 OK", "imap")
    imap.command("LOGOUT", r"a002 OK", "imap")
    assert imap.quit() == 0

    auth = spawn("imap", f"localhost:{real_servers.imap}")
    auth.expect_prompt("imap")
    auth.sendline(":auth plain alice")
    auth.expect_question("password for alice: ")
    auth.sendline(password)
    auth.expect(r"a001 OK")
    auth.expect_prompt("imap")
    auth.command("LOGOUT", r"a002 OK", "imap")
    assert auth.quit() == 0

    history = history_text(state_home)
    assert password not in history
    assert PLAIN_SECRET not in history
    assert "PASS ***" in history
    assert "LOGIN alice ***" in history
    assert ":auth plain alice" in history
    assert (state_home / "mailtalk" / "history").stat().st_mode & 0o077 == 0


def test_history_holds_no_literal_password(
    real_servers: RealServers, spawn: Callable[..., Term], state_home: Path
) -> None:
    password = real_servers.password
    term = spawn("imap", f"localhost:{real_servers.imap}")
    term.expect_prompt("imap")
    term.sendline(f"LOGIN alice {{{len(password)}}}")
    term.expect_prompt("literal")
    term.command(password, r"a001 OK", "imap")
    term.command("LOGOUT", r"a002 OK", "imap")
    assert term.quit() == 0
    history = history_text(state_home)
    assert f"LOGIN alice {{{len(password)}}}" in history
    assert password not in history


@pytest.mark.parametrize("show_secrets", [False, True], ids=["redacted", "show-secrets"])
def test_transcript_file_redacts_secrets_unless_asked(
    real_servers: RealServers, spawn: Callable[..., Term], tmp_path: Path, show_secrets: bool
) -> None:
    password = real_servers.password
    transcript = tmp_path / "session.log"
    extra = ["--transcript", str(transcript)] + (["--show-secrets"] if show_secrets else [])

    pop = spawn("pop3", f"localhost:{real_servers.pop3}", *extra)
    pop.expect_prompt("pop3")
    pop.command("USER alice", r"\+OK", "pop3")
    pop.command(f"PASS {password}", r"\+OK Logged in", "pop3")
    pop.command("QUIT", r"\+OK Logging out", "pop3")
    assert pop.quit() == 0

    imap = spawn("imap", f"localhost:{real_servers.imap}", *extra)
    imap.expect_prompt("imap")
    imap.sendline(":auth plain alice")
    imap.expect_question("password for alice: ")
    imap.sendline(password)
    imap.expect(r"a001 OK")
    imap.expect_prompt("imap")
    imap.command("LOGOUT", r"a002 OK", "imap")
    assert imap.quit() == 0

    text = transcript.read_text(encoding="utf-8")
    assert "C: USER alice" in text
    assert "C: a001 AUTHENTICATE PLAIN" in text
    assert "S: a002 OK" in text
    if show_secrets:
        assert f"C: PASS {password}" in text
        assert f"C: {PLAIN_SECRET}" in text
    else:
        assert password not in text
        assert PLAIN_SECRET not in text
        assert "C: PASS ***" in text
        assert "C: ***" in text
    assert transcript.stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------- :save, Ctrl-D, :reconnect


def test_save_writes_the_transcript_atomically(
    real_servers: RealServers, spawn: Callable[..., Term], tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "saved.txt"
    target.write_text("old contents\n")
    old_link = tmp_path / "old-link.txt"
    os.link(target, old_link)  # a second name for the old file

    term = spawn("pop3", f"localhost:{real_servers.pop3}")
    term.expect_prompt("pop3")
    term.command("USER alice", r"\+OK", "pop3")
    term.command(f"PASS {real_servers.password}", r"\+OK Logged in", "pop3")
    term.command("STAT", r"\+OK \d+ \d+", "pop3")
    term.command(f":save {target}", rf"# transcript saved to {re.escape(str(target))}", "pop3")
    term.command(f":save {tmp_path / 'missing' / 'x.txt'}", r"# [^\n]*missing", "pop3")
    term.command("QUIT", r"\+OK Logging out", "pop3")
    assert term.quit() == 0

    text = target.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("# mailtalk ")
    assert "C: USER alice" in lines
    assert "C: PASS ***" in lines
    assert "C: STAT" in lines
    assert any(re.fullmatch(r"S: \+OK \d+ \d+", line) for line in lines)
    assert real_servers.password not in text
    assert all(line[:3] in ("C: ", "S: ", "#: ") or line.startswith("# ") for line in lines)
    # Replaced, not rewritten in place: the old file is intact under its other name,
    # no temporary file is left behind, and the new file is private.
    assert old_link.read_text() == "old contents\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["saved.txt"]
    assert target.stat().st_mode & 0o077 == 0


def test_ctrl_d_at_the_prompt_exits_zero(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("imap", f"localhost:{real_servers.imap}")
    term.expect_prompt("imap")
    assert term.quit() == 0


def test_server_closing_suggests_reconnect_which_works(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("smtp", f"localhost:{real_servers.smtp}")
    term.expect(r"220 ")
    term.expect_prompt("smtp")
    term.sendline("QUIT")
    term.expect(r"221 2\.0\.0 Bye")
    term.expect(r"# [^\n]*closed the connection[^\n]*:reconnect")
    term.expect_prompt("smtp")
    term.wait_screen(lambda s: "closed" in toolbar(s), "'closed' in the toolbar")
    term.command("NOOP", r"# [^\n]*closed[^\n]*:reconnect", "smtp")
    term.sendline(":reconnect")
    term.expect(r"# connected to localhost")
    term.expect(r"220 [^\n]*ESMTP")
    term.expect_prompt("smtp")
    term.command("EHLO client.test", rf"250 [^\n]*{LATENCY}", "smtp")
    term.command("QUIT", r"221", "smtp")
    assert term.quit() == 0


# ---------------------------------------------------------------- raw SASL, IDLE


def test_raw_smtp_auth_login_prompts_sasl_hidden_and_redacted(
    real_servers: RealServers, spawn: Callable[..., Term], state_home: Path
) -> None:
    user_b64 = base64.b64encode(real_servers.user.encode()).decode()
    password_b64 = base64.b64encode(real_servers.password.encode()).decode()
    term = spawn(
        "connect",
        f"submission://localhost:{real_servers.submission}",
        "--cafile",
        real_servers.cafile,
    )
    term.expect(TLS_NOTE)
    term.expect_prompt("smtp")
    term.command("EHLO client.test", r"250-AUTH PLAIN LOGIN[\s\S]*?250 [^\n]*" + LATENCY, "smtp")
    term.command("AUTH LOGIN", r"334 VXNlcm5hbWU6", "sasl")
    term.command(user_b64, r"334 UGFzc3dvcmQ6", "sasl")
    term.command(password_b64, r"235 2\.7\.0 Authentication successful", "smtp")
    term.wait_screen(shows_authenticated, "'authenticated' in the toolbar")
    # The answers were typed blind, as stars.
    assert f"sasl> {'*' * len(password_b64)}" in term.screen.lines(), term.screen.dump()
    assert password_b64 not in term.raw
    term.command("QUIT", r"221", "smtp")
    assert term.quit() == 0
    history = history_text(state_home)
    assert "AUTH LOGIN" in history
    assert password_b64 not in history
    assert user_b64 not in history


def test_imap_idle_shows_new_mail_as_it_arrives(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("imap", f"localhost:{real_servers.imap}")
    term.expect_prompt("imap")
    term.command(f"LOGIN alice {real_servers.password}", r"a001 OK", "imap")
    term.command("SELECT INBOX", r"a002 OK \[READ-WRITE\]", "imap")
    term.sendline("IDLE")
    term.expect(r"\+ idling")
    term.wait_screen(lambda s: "DONE" in toolbar(s), "the toolbar's hint about DONE")
    term.settle()
    subject = unique_subject("imap idle")
    delivered = deliver(real_servers, subject)
    try:
        # Printed above the waiting prompt, without anything typed.
        term.expect(r"\* \d+ EXISTS")  # no latency: it answers no command
        term.sendline("DONE")
        term.expect(r"a003 OK Idle completed")
        term.expect_prompt("imap")
        term.command("LOGOUT", r"a004 OK", "imap")
        assert term.quit() == 0
    finally:
        remove_quietly(delivered)


def test_imap_idle_prompt_is_not_literal(
    real_servers: RealServers, spawn: Callable[..., Term]
) -> None:
    term = spawn("imap", f"localhost:{real_servers.imap}")
    term.expect_prompt("imap")
    term.command(f"LOGIN alice {real_servers.password}", r"a001 OK", "imap")
    term.command("SELECT INBOX", r"a002 OK", "imap")
    term.sendline("IDLE")
    term.expect(r"\+ idling")
    term.wait_screen(lambda s: "DONE" in toolbar(s), "the toolbar's hint about DONE")
    term.settle(0.3)
    prompt_line = term.input_line()
    term.sendline("DONE")
    term.expect(r"a003 OK")
    assert not prompt_line.startswith("literal>"), prompt_line
    assert prompt_line.startswith("idle"), prompt_line
