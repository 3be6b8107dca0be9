"""REPL history on disk: redacted by the protocol state a line was typed in, kept private."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prompt_toolkit.history import FileHistory

from mailtalk.client.repl.app import Repl
from mailtalk.client.repl.history import RedactingFileHistory
from mailtalk.protocols.imap import IMAPConnection
from mailtalk.protocols.pop3 import POP3Connection
from mailtalk.protocols.smtp_connection import SMTPConnection
from tests.client.repl.cores import feed, say, smtp_ready


def repl_redactor(core: Any) -> Callable[[str], str]:
    """The REPL's own redaction function, bound to a stand-in holding ``core``."""
    stand_in = SimpleNamespace(conv=SimpleNamespace(core=core))
    return lambda line: Repl._redact(stand_in, line)  # type: ignore[arg-type]


@pytest.fixture
def history_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "mailtalk" / "history"


def stored(path: Path) -> list[str]:
    """What a fresh history (the next run) loads from the file, oldest first."""
    return list(reversed(list(FileHistory(str(path)).load_history_strings())))


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_pop3_pass_after_user_is_redacted(history_path: Path) -> None:
    core = POP3Connection()
    feed(core, b"+OK ready\r\n")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("USER alice")
    say(core, "USER alice", b"+OK\r\n")
    history.append_string("PASS secret")
    assert stored(history_path) == ["USER alice", "PASS ***"]
    assert "secret" not in history_path.read_text()
    # Up-arrow in this session shows the redacted line too.
    assert history.get_strings()[-1] == "PASS ***"


def test_pop3_auth_initial_response_and_sasl_line(history_path: Path) -> None:
    core = POP3Connection()
    feed(core, b"+OK ready\r\n")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
    history.append_string("AUTH LOGIN")
    say(core, "AUTH LOGIN", b"+ VXNlcm5hbWU6\r\n")
    history.append_string("YWxpY2U=")
    assert stored(history_path) == ["AUTH PLAIN ***", "AUTH LOGIN", "***"]


def test_smtp_base64_after_334_is_redacted(history_path: Path) -> None:
    core = smtp_ready("AUTH LOGIN PLAIN")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("AUTH LOGIN")
    say(core, "AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n")
    history.append_string("YWxpY2U=")
    say(core, "YWxpY2U=", b"334 UGFzc3dvcmQ6\r\n")
    history.append_string("c2VjcmV0")
    say(core, "c2VjcmV0", b"235 2.7.0 ok\r\n")
    # The same kind of line outside an AUTH exchange is kept: it is not a secret there.
    history.append_string("VRFY YWxpY2U=")
    assert stored(history_path) == ["AUTH LOGIN", "***", "***", "VRFY YWxpY2U="]


def test_smtp_auth_plain_initial_response(history_path: Path) -> None:
    core = smtp_ready("AUTH PLAIN")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("auth plain AGFsaWNlAHNlY3JldA==")
    assert stored(history_path) == ["auth plain ***"]


def test_smtp_sasl_cancel_is_kept(history_path: Path) -> None:
    core = smtp_ready("AUTH LOGIN")
    say(core, "AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("*")
    assert stored(history_path) == ["*"]


def test_smtp_message_text_in_data_is_kept(history_path: Path) -> None:
    core = smtp_ready()
    say(core, "MAIL FROM:<a@b>", b"250 ok\r\n")
    say(core, "RCPT TO:<c@d>", b"250 ok\r\n")
    say(core, "DATA", b"354 go\r\n")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("AUTH PLAIN looks-like-a-command")
    assert stored(history_path) == ["AUTH PLAIN looks-like-a-command"]


def test_imap_login_password_is_redacted(history_path: Path) -> None:
    core = IMAPConnection()
    feed(core, b"* OK ready\r\n")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("LOGIN a b")
    history.append_string("x1 LOGIN alice \"pass word\"")
    history.append_string("login alice secret")
    history.append_string("SELECT INBOX")
    assert stored(history_path) == [
        "LOGIN a ***", "x1 LOGIN alice ***", "login alice ***", "SELECT INBOX"
    ]


def test_imap_login_password_as_literal_is_redacted(history_path: Path) -> None:
    core = IMAPConnection()
    feed(core, b"* OK ready\r\n")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("a1 LOGIN alice {6}")
    core.send_line("a1 LOGIN alice {6}")
    feed(core, b"+ go ahead\r\n")
    history.append_string("secret")
    assert stored(history_path) == ["a1 LOGIN alice {6}", "***"]


def test_imap_authenticate_response_is_redacted(history_path: Path) -> None:
    core = IMAPConnection()
    feed(core, b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string("AUTHENTICATE PLAIN")
    core.send_line("AUTHENTICATE PLAIN")
    feed(core, b"+ \r\n")
    history.append_string("AGFsaWNlAHNlY3JldA==")
    assert stored(history_path) == ["AUTHENTICATE PLAIN", "***"]


def test_meta_commands_are_kept_verbatim(history_path: Path) -> None:
    core = POP3Connection()
    feed(core, b"+OK ready\r\n")
    say(core, "USER alice", b"+OK\r\n")
    history = RedactingFileHistory(history_path, repl_redactor(core))
    history.append_string(":auth plain alice")
    history.append_string(":help PASS")
    assert stored(history_path) == [":auth plain alice", ":help PASS"]


def test_history_survives_a_restart(history_path: Path) -> None:
    core = SMTPConnection()
    first = RedactingFileHistory(history_path, repl_redactor(core))
    first.append_string("EHLO one")
    second = RedactingFileHistory(history_path, repl_redactor(core))
    second.append_string("EHLO two")
    assert stored(history_path) == ["EHLO one", "EHLO two"]
    assert list(RedactingFileHistory(history_path, str).load_history_strings()) == [
        "EHLO two", "EHLO one"
    ]


def test_file_created_0600_in_a_0700_directory(history_path: Path, umask_zero: None) -> None:
    RedactingFileHistory(history_path, str)
    assert history_path.exists()
    assert stat.S_IMODE(history_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(history_path.parent.stat().st_mode) == 0o700
    # Still private after something is written.
    RedactingFileHistory(history_path, str).append_string("NOOP")
    assert stat.S_IMODE(history_path.stat().st_mode) == 0o600


def test_existing_history_file_is_kept(history_path: Path) -> None:
    history_path.parent.mkdir(parents=True)
    FileHistory(str(history_path)).append_string("QUIT")
    RedactingFileHistory(history_path, str)
    assert stored(history_path) == ["QUIT"]


def test_xdg_state_home_decides_the_place(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    from mailtalk.environment import Environment

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert Environment.from_process().history_file() == tmp_path / "mailtalk" / "history"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/path")  # invalid by the spec: ignored
    expected = Path.home() / ".local/state/mailtalk/history"
    assert Environment.from_process().history_file() == expected
