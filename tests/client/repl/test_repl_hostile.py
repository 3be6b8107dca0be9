"""The REPL in a pty never passes a server's control characters to the terminal.

The greeting, a multi-line reply, a refusal and its inline explanation, :explain,
the error for a broken line and the :save transcript all carry the hostile bytes of
``tests.hostile``; what the terminal receives must hold none of them raw.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.client.repl.test_repl_faults import Session, smtp, start  # noqa: F401 - the fixture
from tests.hostile import HOSTILE, SHOWN, assert_clean, assert_shown
from tests.peers import Close, Expect, ScriptedPeer

# What prompt_toolkit never writes itself, so its presence means the server's got through.
RAW_PIECES = [b"\x1b]0;pwned", b"\x07", b"\x00", b"\x1b[2J", b"\xc2\x9b", b"\x7f",
              "\u202e".encode()]


def test_repl_shows_server_controls_escaped(
    start: Callable[..., Session],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    saved = tmp_path / "saved.log"
    script = [
        b"220 " + HOSTILE + b"\r\n",
        Expect(b"EHLO"),
        b"250-" + HOSTILE + b"\r\n250 8BITMIME\r\n",
        Expect(b"MAIL"),
        b"550 5.7.1 " + HOSTILE + b"\r\n",
        Expect(b"NOOP"),
        HOSTILE + b"\r\n",
        Close(),
    ]
    with ScriptedPeer(script) as peer:
        session = start(*smtp(peer.port))
        session.type("EHLO me")
        session.expect_exact("250 8BITMIME")
        session.wait_prompt()
        session.type("MAIL FROM:<a@example.test>")
        session.expect_exact("(:explain for more)")
        session.wait_prompt()
        session.type(":explain")
        session.wait_prompt()
        session.type(f":save {saved}")
        session.expect_exact("transcript saved")
        session.wait_prompt()
        session.type("NOOP")
        session.expect_exact("the server broke the protocol")
        session.wait_prompt()
        assert session.quit_with_ctrl_d() == 0
    written = session.log.getvalue()
    for piece in RAW_PIECES:
        assert piece not in written, f"{piece!r} reached the terminal"
    screen = session.screen
    assert f"220 {SHOWN}" in screen
    assert f"250-{SHOWN}" in screen
    assert f"550 5.7.1 {SHOWN}" in screen
    assert screen.count(SHOWN) >= 5  # and in :explain's block and the error
    assert_clean(saved.read_bytes())
    assert_shown(saved.read_bytes())


def test_repl_raw_mode_is_escaped_too(
    start: Callable[..., Session],  # noqa: F811
) -> None:
    script = [b"220 hi\r\n", Expect(b"NOOP"), b"250 " + HOSTILE + b"\r\n", Close()]
    with ScriptedPeer(script) as peer:
        session = start(*smtp(peer.port))
        session.type(":raw on")
        session.wait_prompt()
        session.type("NOOP")
        session.expect_exact("end\\r\\n")
        session.wait_prompt()
        assert session.quit_with_ctrl_d() == 0
    written = session.log.getvalue()
    for piece in RAW_PIECES:
        assert piece not in written, f"{piece!r} reached the terminal"
