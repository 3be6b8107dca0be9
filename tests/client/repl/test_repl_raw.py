"""``:raw on`` in the REPL shows what was sent as well as what came, both as exact bytes,
like ``openssl s_client -msg`` and swaks; typed secrets stay redacted."""

from __future__ import annotations

from collections.abc import Callable

from tests.client.repl.test_repl_faults import Session, start  # noqa: F401 - the fixture
from tests.peers import Expect, Hold, ScriptedPeer


def test_raw_shows_typed_lines_as_sent_and_replies_as_received(
    start: Callable[..., Session],  # noqa: F811 - the fixture imported above
) -> None:
    script = [b"+OK ready\r\n", Expect(b"USER alice"), b"+OK\r\n", Expect(b"PASS hunter2"),
              b"+OK in\r\n", Expect(b"NOOP"), b"+OK\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        session = start("pop3", f"127.0.0.1:{peer.port}")
        session.type(":raw on")
        session.expect_exact("raw mode on: the exact bytes sent (C:) and received (S:)")
        session.wait_prompt()
        session.type("USER alice")
        session.expect_exact("S: +OK\\r\\n")
        session.wait_prompt()
        session.type("PASS hunter2")
        session.expect_exact("S: +OK in\\r\\n")
        session.wait_prompt()
        session.type(":raw off")
        session.wait_prompt()
        session.type("NOOP")
        session.expect(r"\+OK(?!\\r)")
        session.wait_prompt()
        assert session.quit_with_ctrl_d() == 0
    lines = session.screen.splitlines()
    assert "C: USER alice\\r\\n" in lines
    assert "C: PASS ***\\r\\n" in lines
    assert not any(line.startswith("C: NOOP") for line in lines)  # raw off: not repeated
