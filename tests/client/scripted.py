"""The real binary in pipe mode against a scripted peer on loopback: the setup the pipe
tests (test_pipe.py, test_pipe_output.py) and the Dutch core-error tests
(repl/test_core_errors_in_dutch.py) share.

``pipe_session(script, "smtp", *options, stdin=...)`` starts a :class:`ScriptedPeer`
playing ``script``, runs ``mailtalk smtp OPTIONS... 127.0.0.1:PORT`` with ``stdin`` as a
pipe, and returns what came out (:class:`Finished`) with what the peer received.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.measured import run_measured
from tests.peers import IMAP_GREETING, POP3_GREETING, SMTP_GREETING, Expect, Hold, ScriptedPeer

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    max_rss_kb: int
    seconds: float
    received: bytes = b""  # what the scripted peer received (pipe_session)
    port: int = 0  # the scripted peer's port (pipe_session)

    @property
    def out_lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def error_lines(self) -> list[str]:
        """stderr without the ``# ...`` notes."""
        return [line for line in self.stderr.splitlines() if not line.startswith("# ")]


def mailtalk(*args: str, stdin: bytes, env: dict[str, str] | None = None,
             timeout: float = 20) -> Finished:
    """Run the real binary with ``stdin`` as a pipe; measure its true peak memory
    (through :func:`tests.measured.run_measured`, not as a child of pytest)."""
    child_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    child_env.pop("MAILTALK_DEBUG", None)
    ran = run_measured([MAILTALK, *args], stdin=stdin, env=child_env, timeout=timeout)
    assert ran.returncode != -9, f"mailtalk hung and was killed; stderr: {ran.stderr[-500:]}"
    return Finished(ran.returncode, ran.stdout, ran.stderr, ran.peak_rss_kib, ran.seconds)


def pipe_session(script: list[object], protocol: str, *options: str, stdin: bytes,
                 env: dict[str, str] | None = None, timeout: float = 20) -> Finished:
    """``mailtalk PROTOCOL OPTIONS... 127.0.0.1:PORT`` in pipe mode against a peer
    playing ``script``; the result, with what the peer received."""
    with ScriptedPeer(script) as peer:
        result = mailtalk(protocol, *options, f"127.0.0.1:{peer.port}", stdin=stdin, env=env,
                          timeout=timeout)
    result.received, result.port = peer.data(), peer.port
    return result


def stderr_after_connecting(stderr: str) -> list[str]:
    """Standard error without the "# connected to ..." note that every session starts with."""
    return [line for line in stderr.splitlines() if not line.startswith("# connected to ")]


# A peer that answers with what is no reply at all: (protocol, script, what is typed,
# the core's error as str() says it), for the tests of that error's one line.
BROKEN_REPLIES = [
    ("smtp", [SMTP_GREETING, Expect(b"NOOP"), b"\x00\xff garbage\r\n", Hold()],
     b"NOOP\nQUIT\n", 'not an SMTP reply line: "\\x00\\xff garbage"'),
    ("pop3", [POP3_GREETING, Expect(b"NOOP"), b"\x00\xff garbage\r\n", Hold()],
     b"NOOP\nQUIT\n", 'not a POP3 status line: "\\x00\\xff garbage"'),
    ("imap", [IMAP_GREETING, Expect(b"a001 NOOP"), b"\x00\xff garbage\r\n", Hold()],
     b"NOOP\nLOGOUT\n", 'not an IMAP response: "\\x00\\xff garbage"'),
]
