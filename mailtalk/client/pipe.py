"""Pipe mode: standard input is not a terminal, so read lines from it like ``nc`` does.

Each line is sent as typed (``:`` lines are mailtalk's commands, as in the REPL);
when a line expects an answer, mailtalk waits for it before sending the next, so
the printed conversation is in order and a script never outruns the server. A coach
(practice mode) comes along as in the REPL: its ``:commands`` work, and it is told
when the session begins and after every line.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from mailtalk.client.conversation import Conversation
from mailtalk.client.display import iter_event_lines, to_ansi
from mailtalk.client.meta import QuitRequested, run_meta
from mailtalk.client.options import SessionOptions
from mailtalk.environment import Environment
from mailtalk.errors import MailtalkError, ServerClosedError, exit_code_for, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.net.transport import TransportError
from mailtalk.protocols.common import ProtocolError, ReplyClass, ServerEvent, peer_text
from mailtalk.terminal import WRAPPED_NOTES, safe_text, wrap_words

if TYPE_CHECKING:
    from mailtalk.client.coach import Coach

FAILURE_CLASSES = (ReplyClass.TRANSIENT, ReplyClass.PERMANENT)


class PipeScreen:
    """Prints the conversation as ``C:``/``S:`` lines; notes go to stderr as ``# ...``."""

    # :explain's block goes to stderr as "# " lines, whose escaping would show ANSI codes
    block_colour = False

    def __init__(
        self, env: Environment, raw: bool, gettext: Callable[[str], str] = str
    ) -> None:
        self.env = env
        self.gettext = gettext  # the session's language (Conversation.gettext)
        self.out: TextIO = env.stdout
        self.err: TextIO = env.stderr
        self.raw = raw
        self.colour = env.colour()
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
        first = "# ↳ " if kind == "explain" else "# "
        # WRAPPED_NOTES to the width, every line still a "# " comment
        width = self.env.width() if kind in WRAPPED_NOTES else None
        for line in text.splitlines() or [""]:
            shown = safe_text(line)
            parts = [first + shown] if width is None else wrap_words(shown, width, first, "#   ")
            for part in parts:
                self.err.write(part + "\n")
        self.err.flush()

    def closed(self) -> None:
        # Told once the step is over, unless it ends in an error: the error line
        # ("closed the connection without answering") says it then. One error, one line.
        self._closed_untold = True

    def step_done(self) -> None:
        """A line (or :command) went through: say the server closed, if it did."""
        if self._closed_untold:
            self._closed_untold = False
            self.note(self.gettext("the server closed the connection"))

    # MetaUI
    def ask_secret(self, prompt: str, variable: str = "MAILTALK_PASSWORD") -> str:
        secret = self.env.variables.get(variable)
        if secret is not None:
            return secret
        _ = self.gettext
        if variable == "MAILTALK_PASSWORD":
            missing = _(
                "no password: set MAILTALK_PASSWORD, put it in ~/.netrc, or run on a terminal")
        else:
            missing = _("no OAuth2 token: set {variable}, or run on a terminal").format(
                variable=variable)
        # getpass falls back to reading standard input when there is no terminal,
        # which here is the script: it would eat the next line as the secret.
        try:
            with open("/dev/tty", "rb"):
                pass
        except OSError:
            raise MailtalkError(missing) from None
        try:
            return getpass.getpass(prompt)
        except (EOFError, OSError):
            raise MailtalkError(missing) from None

    def block_width(self) -> int:
        return self.env.width(100)

    def show_block(self, text: str) -> None:
        for line in text.splitlines():
            self.err.write(f"# {safe_text(line)}\n")

    def progress(self, total: int, label: str) -> Callable[[int], None]:
        return lambda done: None

    def done_progress(self) -> None:
        return None


def _finish_recording(conv: Conversation, err: TextIO) -> None:
    _ = conv.gettext
    try:
        written = conv.finish_recording()
    except OSError as error:
        err.write("mailtalk: " + _("could not write the recording: {error}").format(
            error=error) + "\n")
        return
    if written:
        err.write("# " + _("wrote {file}").format(file=written) + "\n")


def run_pipe_mode(options: SessionOptions, env: Environment, coach: Coach | None = None) -> int:
    """The session with its lines read from ``env.stdin``; returns the exit status: 1
    when a reply was a failure (4xx, 5xx, -ERR, NO, BAD), the error's status when the
    session broke off."""
    from mailtalk.knowledge.translation import translation

    screen = PipeScreen(env, options.raw, translation(options.language).gettext)
    conv = Conversation(options, screen)
    extra = (None, "") if coach is None else (coach.commands, coach.heading)
    try:
        conv.start()
        screen.step_done()
        if coach is not None:
            coach.begin(conv, screen)
        for raw_line in env.stdin:
            line = raw_line.rstrip("\r\n")
            if line.startswith(":") and not getattr(conv.core, "in_data", False):
                try:
                    run_meta(line, conv, screen, *extra)
                except QuitRequested:
                    break
                screen.step_done()
                if coach is not None:
                    coach.after(conv, screen)
                continue
            if conv.closed:
                raise ServerClosedError(conv.gettext(
                    "the server closed the connection; not sent: {line}").format(
                        line=peer_text(line, 60)))
            conv.send_line(line)
            if conv.expects_reply():
                conv.wait_answer()
            screen.step_done()
            if coach is not None:
                coach.after(conv, screen)
    except (MailtalkError, TransportError, ProtocolError) as error:
        env.stderr.write(f"mailtalk: {one_line(error, conv.gettext)}\n")
        conv.close()
        return int(exit_code_for(error))
    except KeyboardInterrupt:
        conv.close()
        return int(ExitCode.INTERRUPTED)
    finally:
        conv.transcript.close()
        _finish_recording(conv, env.stderr)
    conv.close()
    return int(ExitCode.FAILED if screen.failures else ExitCode.OK)
