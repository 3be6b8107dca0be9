"""The interactive REPL: a prompt_toolkit prompt around a ``Conversation``.

While the prompt is up, the socket is watched from prompt_toolkit's event loop
and replies print above the prompt as they arrive. After a command that expects
an answer, the REPL waits for it (Ctrl-C stops waiting, not the program); the
reply still prints whenever it comes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application.current import get_app_or_none
from prompt_toolkit.formatted_text import ANSI, FormattedText, StyleAndTextTuples
from prompt_toolkit.styles import Style

from mailtalk.conversation import Conversation, ReplyTimeout
from mailtalk.display import StyledLine, color_enabled, event_lines
from mailtalk.errors import MailtalkError, exit_code_for, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.meta import QuitRequested, run_meta
from mailtalk.net.transport import TransportError
from mailtalk.protocols.common import ProtocolError, ServerEvent
from mailtalk.repl.completer import ProtocolCompleter
from mailtalk.repl.history import RedactingFileHistory
from mailtalk.repl.toolbar import toolbar_fragments
from mailtalk.session_options import SessionOptions
from mailtalk.terminal import safe_text
from mailtalk.xdg import history_file

STYLE = Style.from_dict(
    {
        "positive": "ansigreen",
        "intermediate": "ansicyan",
        "transient": "ansiyellow",
        "permanent": "ansired",
        "info": "",
        "body": "",
        "latency": "#888888",
        "note": "#888888",
        "tls": "ansimagenta",
        "warning": "ansiyellow",
        "error": "ansired bold",
        "sent": "bold",
        "explain": "#a0a0ff",
        "prompt": "bold",
        "prompt.data": "ansicyan bold",
        "bottom-toolbar": "noreverse bg:#303030 #d0d0d0",
        "toolbar.host": "bold",
        "toolbar.tls-on": "ansigreen",
        "toolbar.tls-off": "ansiyellow",
        "toolbar.state": "bold ansicyan",
        "toolbar.hint": "#a0a0a0",
    }
)


class ReplScreen:
    """Listener and MetaUI for the REPL: prints styled lines above the prompt."""

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.block_colour = color_enabled(sys.stdout.isatty())
        self._bar: Any = None
        self._task: Any = None

    def _print(self, line: StyledLine) -> None:
        # safe_text: server text (and notes quoting it) never reaches the terminal raw
        fragments = [(f"class:{style}" if style else "", safe_text(text)) for style, text in line]
        print_formatted_text(FormattedText(fragments), style=STYLE)

    def sent(self, text: str, typed: bool) -> None:
        if not typed or self.raw:  # :raw shows typed lines too, as the bytes sent
            self._print([("sent", f"C: {text}")])

    def event(self, event: ServerEvent, latency: float) -> None:
        for line in event_lines(event, latency, self.raw):
            if self.raw:  # C: and S: lines, as pipe mode and openssl s_client -msg show them
                line = [(line[0][0], "S: " + line[0][1]), *line[1:]]
            self._print(line)
        app = get_app_or_none()
        if app is not None:
            app.invalidate()

    def note(self, text: str, kind: str = "info") -> None:
        if kind == "explain":
            self._print([("explain", f"  ↳ {text}"), ("note", "  (:explain for more)")])
            return
        style = {"info": "note", "tls": "tls", "warning": "warning", "error": "error"}.get(
            kind, "note"
        )
        self._print([(style, f"# {text}")])

    def closed(self) -> None:
        self.note("the server closed the connection: :reconnect to connect again, :quit to leave",
                  "warning")

    def ask_secret(self, prompt: str) -> str:
        from prompt_toolkit import prompt as ask

        # A separate prompt with no history: the password is never stored.
        return ask(prompt, is_password=True)

    def show_block(self, text: str) -> None:
        print_formatted_text(ANSI(text) if "\x1b[" in text else text)

    def progress(self, total: int, label: str) -> Callable[[int], None]:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total)
        bar = self._bar
        task = self._task
        return lambda done: bar.update(task, completed=done)

    def done_progress(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class Repl:
    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.screen = ReplScreen(options.raw)
        self.conv = Conversation(options, self.screen)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched_fd: int | None = None
        self.session: PromptSession[str] = PromptSession(
            history=RedactingFileHistory(history_file(), self._redact),
            completer=ProtocolCompleter(lambda: self.conv.core, options.target.user),
            complete_while_typing=True,
            bottom_toolbar=self._toolbar,
            style=STYLE,
        )

    def _redact(self, line: str) -> str:
        if line.startswith(":"):
            return line  # meta-commands never carry a secret; :auth asks for it apart
        return self.conv.core.redact(line)

    def _toolbar(self) -> StyleAndTextTuples:
        return toolbar_fragments(self.options.target, self.conv.core, self.conv.closed)

    def _prompt_message(self) -> StyleAndTextTuples:
        core = self.conv.core
        if getattr(core, "in_data", False):
            return [("class:prompt.data", "data> ")]
        if getattr(core, "sasl_pending", False):
            return [("class:prompt.data", "sasl> ")]
        if getattr(core, "idling", False):
            return [("class:prompt.data", "idle (DONE ends it)> ")]
        if getattr(core, "in_command_continuation", False):
            return [("class:prompt.data", "literal> ")]
        return [("class:prompt", f"{self.options.target.protocol}> ")]

    # -- watching the socket while the prompt is up ------------------------------

    def _watch(self) -> None:
        transport = self.conv.transport
        if transport is None or self.conv.closed or transport.fileno() < 0:
            return
        self._loop = asyncio.get_running_loop()
        self._watched_fd = transport.fileno()
        self._loop.add_reader(self._watched_fd, self._on_readable)

    def _unwatch(self) -> None:
        if self._loop is not None and self._watched_fd is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._watched_fd)
        self._loop = None
        self._watched_fd = None

    def _on_readable(self) -> None:
        try:
            self.conv.receive_available()
        except (MailtalkError, TransportError, ProtocolError) as error:
            self.screen.note(one_line(error), "error")
            self.conv.close()
        if self.conv.closed:
            self._unwatch()
        app = get_app_or_none()
        if app is not None:
            app.invalidate()

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        try:
            self.conv.start()
        except KeyboardInterrupt:
            self.conv.close()
            return int(ExitCode.INTERRUPTED)
        except (MailtalkError, TransportError, ProtocolError) as error:
            print(f"mailtalk: {one_line(error)}", file=sys.stderr)
            self.conv.close()
            return int(exit_code_for(error))
        try:
            while True:
                try:
                    line = self._read_line()
                except KeyboardInterrupt:
                    continue  # Ctrl-C at the prompt clears the line
                except EOFError:
                    break  # Ctrl-D
                try:
                    self._handle(line)
                except QuitRequested:
                    break
                except (MailtalkError, TransportError, ProtocolError) as error:
                    self.screen.note(one_line(error), "error")
                except Exception as error:  # keep the session: one line, trace with --debug
                    if self.options.debug:
                        raise
                    self.screen.note(f"{one_line(error)} (--debug shows the trace)", "error")
        finally:
            self.conv.close()
            self.conv.transcript.close()
            self._finish_recording()
        return int(ExitCode.OK)

    def _finish_recording(self) -> None:
        try:
            written = self.conv.finish_recording()
        except OSError as error:
            print(f"mailtalk: could not write the recording: {error}", file=sys.stderr)
            return
        if written:
            print(f"# wrote {written}: replay it with mailtalk run {written}", file=sys.stderr)

    def _read_line(self) -> str:
        try:
            return self.session.prompt(
                self._prompt_message,
                pre_run=self._watch,
                is_password=self._secret_input(),
            )
        finally:
            self._unwatch()

    def _secret_input(self) -> bool:
        core = self.conv.core
        return bool(getattr(core, "sasl_pending", False))

    def _handle(self, line: str) -> None:
        in_data = bool(getattr(self.conv.core, "in_data", False))
        if line.startswith(":") and (not in_data or line.startswith(":file")):
            run_meta(line, self.conv, self.screen)
            return
        if self.conv.closed:
            raise MailtalkError("the connection is closed: :reconnect to connect again")
        self.conv.send_line(line)
        if self.conv.expects_reply():
            self._wait()

    def _wait(self) -> None:
        try:
            self.conv.wait_final()
        except KeyboardInterrupt:
            self.screen.note("stopped waiting; the reply will show when it comes", "warning")
        except ReplyTimeout as error:
            self.screen.note(f"{error}; still listening, the reply will show when it comes",
                             "warning")


def run_repl(options: SessionOptions) -> int:
    return Repl(options).run()
