"""The interactive REPL: a prompt_toolkit prompt around a ``Conversation``.

While the prompt is up, the socket is watched from prompt_toolkit's event loop
and replies print above the prompt as they arrive. After a command that expects
an answer, the REPL waits for it (Ctrl-C stops waiting, not the program); the
reply still prints whenever it comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application.current import get_app_or_none
from prompt_toolkit.buffer import Buffer, CompletionState
from prompt_toolkit.completion import CompleteEvent, Completer, get_common_complete_suffix
from prompt_toolkit.formatted_text import ANSI, FormattedText, StyleAndTextTuples
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.styles import Style

from mailtalk.client.coach import Coach
from mailtalk.client.conversation import Conversation, ReplyTimeout
from mailtalk.client.display import StyledLine, event_lines
from mailtalk.client.meta import QuitRequested, run_meta
from mailtalk.client.options import SessionOptions
from mailtalk.client.repl.completer import ProtocolCompleter
from mailtalk.client.repl.history import RedactingFileHistory
from mailtalk.client.repl.output import repl_output
from mailtalk.client.repl.toolbar import toolbar_fragments
from mailtalk.environment import Environment
from mailtalk.errors import MailtalkError, exit_code_for, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.net.transport import TLSVerificationError, TransportError
from mailtalk.protocols.common import ProtocolError, ServerEvent
from mailtalk.terminal import safe_text, wrap_words

# Seconds of silence after connecting before the REPL says it is waiting for a greeting.
GREETING_PATIENCE = 1.0

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
        "toolbar.coach": "noreverse bg:#203040 #e0e0e0",
    }
)


# The one-line explanation under a failure: at most this many screen lines.
EXPLAIN_LINES = 2
EXPLAIN_MORE = "(:explain for more)"


class ReplScreen:
    """Listener and MetaUI for the REPL: prints styled lines above the prompt."""

    def __init__(self, raw: bool, env: Environment) -> None:
        self.raw = raw
        self.env = env
        self.block_colour = env.colour()
        self.output = repl_output(env)  # None: prompt_toolkit's, styled
        self._bar: Any = None
        self._task: Any = None
        # Set by the Repl: the terminal's width now, and the conversation shown.
        self.width: Callable[[], int] = env.width
        self.conv: Conversation | None = None

    def _print(self, line: StyledLine) -> None:
        # safe_text: server text (and notes quoting it) never reaches the terminal raw
        fragments = [(f"class:{style}" if style else "", safe_text(text)) for style, text in line]
        print_formatted_text(FormattedText(fragments), style=STYLE, output=self.output)

    def sent(self, text: str, typed: bool) -> None:
        if not typed or self.raw:  # :raw shows typed lines too, as the bytes sent
            self._print([("sent", f"C: {text}")])

    def event(self, event: ServerEvent, latency: float) -> None:
        # One latency per command: on its final reply, not on each untagged IMAP line
        # before it (the greeting, untagged in IMAP, has its own).
        greeting = self.conv is not None and self.conv.events_seen == 1
        shown = latency if event.final or greeting else None
        for line in event_lines(event, shown, self.raw):
            if self.raw:  # C: and S: lines, as pipe mode and openssl s_client -msg show them
                line = [(line[0][0], "S: " + line[0][1]), *line[1:]]
            self._print(line)
        app = get_app_or_none()
        if app is not None:
            app.invalidate()

    def note(self, text: str, kind: str = "info") -> None:
        width = self.width()
        if kind == "explain":
            lines = wrap_words(text, width, "  ↳ ", "    ", EXPLAIN_LINES, EXPLAIN_MORE)
            for number, line in enumerate(lines):
                if number == len(lines) - 1 and line.endswith(EXPLAIN_MORE):
                    body = line[: -len(EXPLAIN_MORE)]
                    self._print([("explain", body), ("note", EXPLAIN_MORE)])
                else:
                    self._print([("explain", line)])
            return
        style = {"info": "note", "tls": "tls", "warning": "warning", "error": "error"}.get(
            kind, "note"
        )
        for line in wrap_words(text, width, "# ", "  "):
            self._print([(style, line)])

    def closed(self) -> None:
        conv = self.conv
        _ = conv.gettext if conv is not None else str
        if conv is not None and conv.ended_by_quit:
            self.note(
                _("{command} answered: the session is over, mailtalk closed the connection; "
                  ":reconnect starts a new one, :quit leaves").format(command=conv.last_command),
                "warning",
            )
            return
        self.note(_("the server closed the connection: :reconnect to connect again, :quit to "
                    "leave"), "warning")

    def ask_secret(self, prompt: str, variable: str = "MAILTALK_PASSWORD") -> str:
        # A separate prompt with no history: the password is never stored.
        try:
            return PromptSession[str](output=self.output).prompt(prompt, is_password=True)
        except (KeyboardInterrupt, EOFError):  # Ctrl-C or Ctrl-D: the login, not the session
            _ = self.conv.gettext if self.conv is not None else str
            raise MailtalkError(_("cancelled: no password or token was sent")) from None

    def block_width(self) -> int:
        return self.env.width(100)

    def show_block(self, text: str) -> None:
        print_formatted_text(ANSI(text) if "\x1b[" in text else text, output=self.output)

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
            console=self.env.console(),
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
    """The prompt loop of one session; ``run()`` returns the exit status."""

    def __init__(
        self, options: SessionOptions, env: Environment, coach: Coach | None = None
    ) -> None:
        self.options = options
        self.env = env
        self.coach = coach
        self._coach_timer: asyncio.TimerHandle | None = None
        self.screen = ReplScreen(options.raw, env)
        self.conv = Conversation(options, self.screen)
        self.conv.greeting_patience = GREETING_PATIENCE
        self.conv.close_after_quit = True
        self.screen.conv = self.conv
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched_fd: int | None = None
        self.completer = ProtocolCompleter(
            lambda: self.conv.core,
            options.target.user,
            extra_meta=coach.commands if coach is not None else None,
        )
        self.session: PromptSession[str] = PromptSession(
            history=RedactingFileHistory(env.history_file(), self._redact),
            completer=self.completer,
            complete_while_typing=True,
            bottom_toolbar=self._toolbar,
            style=STYLE,
            key_bindings=self._key_bindings(),
            output=self.screen.output,
        )
        self.screen.width = lambda: self.session.output.get_size().columns

    def _key_bindings(self) -> KeyBindings:
        bindings = KeyBindings()

        @bindings.add("tab")
        def _complete(event: KeyPressEvent) -> None:
            complete_now(event.current_buffer, self.completer)

        return bindings

    def _redact(self, text: str) -> str:
        """The input as history may keep it: line by line for a pasted block, and
        every line after an AUTH/AUTHENTICATE in it hidden (SASL answers)."""
        out = []
        hide = False
        for line in text.split("\n"):
            if line.startswith(":"):
                out.append(line)  # meta-commands carry no secret; :auth asks apart
            elif hide:
                out.append("***")
            else:
                out.append(self.conv.core.redact(line))
                verb = line.split()[1:2] if self.conv.core.protocol == "imap" else []
                words = [*line.split()[:1], *verb]
                hide = any(w.upper() in ("AUTH", "AUTHENTICATE") for w in words)
        return "\n".join(out)

    def _toolbar(self) -> StyleAndTextTuples:
        width = self.session.output.get_size().columns
        fragments = toolbar_fragments(self.conv.target, self.conv.core, self.conv.closed, width,
                                      self.conv.gettext)
        if self.coach is not None:
            line = self.coach.toolbar()
            if line:
                fragments = [*fragments, ("", "\n"), ("class:toolbar.coach", line[: width - 1])]
        return fragments

    def _prompt_message(self) -> StyleAndTextTuples:
        # the protocol's own words (data, sasl, literal) stay as the RFCs name them; the
        # words around them are in the session's language
        core = self.conv.core
        _ = self.conv.gettext
        if getattr(core, "in_data", False):
            return [("class:prompt.data", "data> ")]
        if getattr(core, "sasl_pending", False):
            return [("class:prompt.data", "sasl> ")]
        if getattr(core, "idling", False):
            return [("class:prompt.data", _("idle (DONE ends it)") + "> ")]
        chunk = getattr(core, "chunk_left", 0)
        if chunk:
            return [("class:prompt.data", _("chunk ({left} bytes left)").format(left=chunk) + "> ")]
        if getattr(core, "in_command_continuation", False):
            if getattr(core, "literal_bytes_left", 0):
                return [("class:prompt.data", "literal> ")]
            # The literal is all sent; what comes now is the rest of its command.
            return [("class:prompt.data", _("after literal") + "> ")]
        return [("class:prompt", f"{self.conv.target.protocol}> ")]

    # -- watching the socket while the prompt is up ------------------------------

    def _watch(self) -> None:
        transport = self.conv.transport
        if transport is None or self.conv.closed or transport.fileno() < 0:
            return
        self._loop = asyncio.get_running_loop()
        self._watched_fd = transport.fileno()
        self._loop.add_reader(self._watched_fd, self._on_readable)

    def _start_coach_timer(self) -> None:
        """While the prompt waits, the coach looks once a second (steps done elsewhere)."""
        if self.coach is None:
            return
        self._coach_timer = asyncio.get_running_loop().call_later(1.0, self._coach_tick)

    def _coach_tick(self) -> None:
        self._coach_timer = None
        if self.coach is None:
            return
        try:
            self.coach.after(self.conv, self.screen)
        except Exception as error:  # the coach must never end the session
            self.screen.note(f"practice: {one_line(error)}", "warning")
        app = get_app_or_none()
        if app is not None:
            app.invalidate()
        self._start_coach_timer()

    def _stop_coach_timer(self) -> None:
        if self._coach_timer is not None:
            self._coach_timer.cancel()
            self._coach_timer = None

    def _unwatch(self) -> None:
        if self._loop is not None and self._watched_fd is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._watched_fd)
        self._loop = None
        self._watched_fd = None

    def _on_readable(self) -> None:
        try:
            self.conv.receive_available()
        except (MailtalkError, TransportError, ProtocolError) as error:
            self._report(error)
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
            print(f"mailtalk: {one_line(error, self.conv.gettext)}", file=self.env.stderr)
            self.conv.close()
            return int(exit_code_for(error))
        if self.coach is not None:
            self.coach.begin(self.conv, self.screen)
        try:
            while True:
                try:
                    line = self._read_line()
                except KeyboardInterrupt:
                    continue  # Ctrl-C at the prompt clears the line
                except EOFError:
                    self._say_what_is_left()
                    break  # Ctrl-D
                try:
                    self._handle_input(line)
                    if self.coach is not None:
                        self.coach.after(self.conv, self.screen)
                except QuitRequested:
                    break
                except (MailtalkError, TransportError, ProtocolError) as error:
                    self._report(error)
                except Exception as error:  # keep the session: one line, trace with --debug
                    if self.options.debug:
                        raise
                    self.screen.note(f"{one_line(error)} " + self.conv.gettext(
                        "(--debug shows the trace)"), "error")
        finally:
            self.conv.close()
            self.conv.transcript.close()
            self._finish_recording()
        return int(ExitCode.OK)

    def _report(self, error: BaseException) -> None:
        self.screen.note(one_line(error, self.conv.gettext), "error")
        if isinstance(error, TLSVerificationError):
            # The command line's --cafile/--insecure, for this session: no restart.
            self.screen.note(self.conv.gettext(
                "to go on: :reconnect --cafile FILE to trust the issuer, or "
                ":reconnect --insecure to skip verification"), "warning")

    def _say_what_is_left(self) -> None:
        """Ctrl-D in the middle of a message: say that it was not sent."""
        core = self.conv.core
        if self.conv.closed:
            return
        _ = self.conv.gettext
        if getattr(core, "in_data", False):
            self.screen.note(
                _("the message was not sent: it ends only with a lone '.' line"), "warning"
            )
        elif getattr(core, "chunk_left", 0):
            self.screen.note(
                _("the message was not sent: the BDAT chunk still lacked {count} bytes").format(
                    count=getattr(core, "chunk_left", 0)),
                "warning",
            )

    def _finish_recording(self) -> None:
        try:
            written = self.conv.finish_recording()
        except OSError as error:
            print("mailtalk: " + self.conv.gettext("could not write the recording: {error}").format(
                error=error), file=self.env.stderr)
            return
        if written:
            import shlex

            said = self.conv.gettext("wrote {file}: replay it with mailtalk run {quoted}")
            print("# " + said.format(file=written, quoted=shlex.quote(written)),
                  file=self.env.stderr)

    def _read_line(self) -> str:
        def pre_run() -> None:
            self._watch()
            self._start_coach_timer()

        try:
            return self.session.prompt(
                self._prompt_message,
                pre_run=pre_run,
                is_password=self._secret_input(),
            )
        finally:
            self._stop_coach_timer()
            self._unwatch()

    def _secret_input(self) -> bool:
        core = self.conv.core
        return bool(getattr(core, "sasl_pending", False))

    def _handle_input(self, text: str) -> None:
        """What the prompt returned: a line, or several when a block was pasted (each
        goes as if typed on its own, after the previous one's reply)."""
        lines = text.split("\n")
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()  # the pasted block's own last line end
        for line in lines:
            self._handle(line.rstrip("\r"))

    def _handle(self, line: str) -> None:
        in_data = bool(getattr(self.conv.core, "in_data", False))
        if line.startswith(":") and (
            not in_data or line.startswith(":file") or self._coach_word(line)
        ):
            if self.coach is not None:
                run_meta(line, self.conv, self.screen, self.coach.commands, self.coach.heading)
            else:
                run_meta(line, self.conv, self.screen)
            return
        if not line.strip() and not self.conv.takes_text():
            return  # an empty command line means nothing to any server: not sent
        if self.conv.closed:
            raise MailtalkError(
                self.conv.gettext("the connection is closed: :reconnect to connect again"))
        self.conv.send_line(line)
        if self.conv.expects_reply():
            self._wait()

    def _coach_word(self, line: str) -> bool:
        """In a message, a line that is one of the coach's commands alone (``:hint``)
        asks the coach: help is wanted where the learner is stuck, and such a line is
        no message's text."""
        return self.coach is not None and line[1:].strip().lower() in self.coach.commands

    def _wait(self) -> None:
        try:
            self.conv.wait_answer()
        except KeyboardInterrupt:
            self.screen.note(self.conv.gettext(
                "stopped waiting; the reply will show when it comes"), "warning")
        except ReplyTimeout as error:
            self.screen.note(f"{error}; " + self.conv.gettext(
                "still listening, the reply will show when it comes"), "warning")


def complete_now(buffer: Buffer, completer: Completer) -> None:
    """Tab: complete what is typed *now*.

    prompt_toolkit completes in the background while typing; a Tab pressed before
    that run has caught up with the keystrokes (a fast typist, a paste) found no
    completions and was lost. The completer is cheap, so Tab asks it directly.
    """
    state = buffer.complete_state
    # A menu of one is no choice: it is completed below as a unique word, and Tab
    # after it goes on to the next word instead of cycling back to what was typed.
    if state is not None and len(state.completions) > 1 and (
        state.complete_index is not None or state.original_document == buffer.document
    ):
        buffer.complete_next()  # the menu is up to date: Tab walks it
        return
    document = buffer.document
    completions = [
        completion
        for completion in completer.get_completions(
            document, CompleteEvent(completion_requested=True)
        )
        if document.text_before_cursor[
            len(document.text_before_cursor) + completion.start_position :
        ] != completion.text  # one that changes nothing is no completion
    ]
    buffer.complete_state = None
    if not completions:
        return
    if len(completions) == 1:
        buffer.apply_completion(completions[0])
        return
    common = get_common_complete_suffix(document, completions)
    if common:
        buffer.insert_text(common)
        completions = [c.new_completion_from_position(len(common)) for c in completions]
    buffer.complete_state = CompletionState(buffer.document, completions)
    buffer.on_completions_changed.fire()

