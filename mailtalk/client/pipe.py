"""Pipe mode: standard input is not a terminal, so read lines from it like ``nc`` does.

Each line is sent as typed (``:`` lines are mailtalk's commands, as in the REPL);
when a line expects an answer, mailtalk waits for it before sending the next, so
the printed conversation is in order and a script never outruns the server.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from typing import TextIO

from mailtalk.client.conversation import Conversation
from mailtalk.client.display import color_enabled, iter_event_lines, to_ansi
from mailtalk.client.meta import QuitRequested, run_meta, secret_from_environment
from mailtalk.client.options import SessionOptions
from mailtalk.errors import MailtalkError, ServerClosedError, exit_code_for, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.net.transport import TransportError
from mailtalk.protocols.common import ProtocolError, ReplyClass, ServerEvent, peer_text
from mailtalk.terminal import safe_text

FAILURE_CLASSES = (ReplyClass.TRANSIENT, ReplyClass.PERMANENT)


class PipeScreen:
    """Prints the conversation as ``C:``/``S:`` lines; notes go to stderr as ``# ...``."""

    def __init__(self, out: TextIO, err: TextIO, raw: bool) -> None:
        self.out = out
        self.err = err
        self.raw = raw
        self.colour = color_enabled(out.isatty())
        self.failures = 0
        self._closed_untold = False

    def sent(self, text: str, typed: bool) -> None:
        self.out.write(f"C: {safe_text(text)}\n")
        self.out.flush()

    def event(self, event: ServerEvent, latency: float) -> None:
        if event.final and event.reply_class in FAILURE_CLASSES:
            self.failures += 1
        for line in iter_event_lines(event, None, self.raw):
            self.out.write("S: " + to_ansi(line, self.colour) + "\n")
        self.out.flush()

    def note(self, text: str, kind: str = "info") -> None:
        prefix = "# ↳ " if kind == "explain" else "# "
        for line in text.splitlines() or [""]:
            self.err.write(f"{prefix}{safe_text(line)}\n")
        self.err.flush()

    def closed(self) -> None:
        # Told once the step is over, unless it ends in an error: the error line
        # ("closed the connection without answering") says it then. One error, one line.
        self._closed_untold = True

    def step_done(self) -> None:
        """A line (or :command) went through: say the server closed, if it did."""
        if self._closed_untold:
            self._closed_untold = False
            self.note("the server closed the connection")

    # MetaUI
    def ask_secret(self, prompt: str) -> str:
        secret = secret_from_environment()
        if secret is not None:
            return secret
        # getpass falls back to reading standard input when there is no terminal,
        # which here is the script: it would eat the next line as the password.
        try:
            with open("/dev/tty", "rb"):
                pass
        except OSError:
            raise MailtalkError(
                "no password: set MAILTALK_PASSWORD, put it in ~/.netrc, or run on a terminal"
            ) from None
        try:
            return getpass.getpass(prompt)
        except (EOFError, OSError):
            raise MailtalkError(
                "no password: set MAILTALK_PASSWORD, put it in ~/.netrc, or run on a terminal"
            ) from None

    def show_block(self, text: str) -> None:
        for line in text.splitlines():
            self.err.write(f"# {safe_text(line)}\n")

    def progress(self, total: int, label: str) -> Callable[[int], None]:
        return lambda done: None

    def done_progress(self) -> None:
        return None


def _finish_recording(conv: Conversation) -> None:
    try:
        written = conv.finish_recording()
    except OSError as error:
        sys.stderr.write(f"mailtalk: could not write the recording: {error}\n")
        return
    if written:
        sys.stderr.write(f"# wrote {written}\n")


def run_pipe(options: SessionOptions, stdin: TextIO | None = None) -> int:
    source = stdin or sys.stdin
    screen = PipeScreen(sys.stdout, sys.stderr, options.raw)
    conv = Conversation(options, screen)
    try:
        conv.start()
        screen.step_done()
        for raw_line in source:
            line = raw_line.rstrip("\r\n")
            if line.startswith(":") and not getattr(conv.core, "in_data", False):
                try:
                    run_meta(line, conv, screen)
                except QuitRequested:
                    break
                screen.step_done()
                continue
            if conv.closed:
                raise ServerClosedError(
                    f"the server closed the connection; not sent: {peer_text(line, 60)}"
                )
            conv.send_line(line)
            if conv.expects_reply():
                conv.wait_final()
            screen.step_done()
    except (MailtalkError, TransportError, ProtocolError) as error:
        sys.stderr.write(f"mailtalk: {one_line(error)}\n")
        conv.close()
        return int(exit_code_for(error))
    except KeyboardInterrupt:
        conv.close()
        return int(ExitCode.INTERRUPTED)
    finally:
        conv.transcript.close()
        _finish_recording(conv)
    conv.close()
    return int(ExitCode.FAILED if screen.failures else ExitCode.OK)
