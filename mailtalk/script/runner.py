"""Replay a session file against a server and check every ``S:`` line.

The runner drives the same ``Conversation`` as the REPL and the pipe mode, so the
protocol cores do all the parsing: multi-line SMTP replies, POP3 multi-line answers,
IMAP tags (added for you) and literals behave exactly as they do interactively.

A reply is owed after a command that expects one; the next ``S:`` line is matched
against it. When no ``S:`` follows, the reply is still waited for and accepted as it
is, so a script never sends ahead of the server (no accidental pipelining).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from mailtalk.client.conversation import Conversation
from mailtalk.client.login import authenticate
from mailtalk.client.options import SessionOptions
from mailtalk.client.transcript import Tail
from mailtalk.errors import MailtalkError, ServerClosedError, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.knowledge.translation import translation
from mailtalk.net.tlsclient import ClientTLS
from mailtalk.protocols.common import ReplyClass, ServerEvent, first_line
from mailtalk.script.expect import Expectation, reply_of
from mailtalk.script.format import (
    Auth,
    Connect,
    Data,
    EndLoop,
    Expect,
    ExpectClose,
    HandshakeTLS,
    Location,
    Loop,
    Script,
    Send,
    Sleep,
    StartTLS,
    Step,
)

if TYPE_CHECKING:
    from mailtalk.config_file import HostDefaults

# What failed, and the exit status it gives (documented in `mailtalk run --help`).
EXIT_OF_KIND: Final = {
    "expectation": ExitCode.FAILED,
    "connect": ExitCode.CONNECT,
    "tls": ExitCode.TLS,
    "closed": ExitCode.PROTOCOL,
    "protocol": ExitCode.PROTOCOL,
    "timeout": ExitCode.PROTOCOL,
    "auth": ExitCode.AUTH,
}


@dataclass(frozen=True)
class Failure:
    where: Location
    kind: str  # a key of EXIT_OF_KIND
    message: str
    expected: str | None = None
    received: str | None = None
    explanation: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.where.file,
            "line": self.where.line,
            "kind": self.kind,
            "message": self.message,
            "expected": self.expected,
            "received": self.received,
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class Line:
    """One line of the transcript: C (sent), S (received) or # (a note)."""

    seconds: float
    direction: str
    text: str


# What a run keeps of its conversation for --json and --junit: the latest lines
# within these bounds (a server that floods the client costs no more than that).
MAX_TRANSCRIPT_LINES: Final = 100_000
MAX_TRANSCRIPT_CHARS: Final = 16 * 1024 * 1024
# The replies kept for matching the next S: lines (greeting, IMAP untagged data):
# the first ones after a command, up to these bounds.
MAX_KEPT_EVENTS: Final = 1000
MAX_KEPT_EVENT_BYTES: Final = 16 * 1024 * 1024


def _transcript_tail() -> Tail[Line]:
    return Tail(MAX_TRANSCRIPT_LINES, MAX_TRANSCRIPT_CHARS, lambda line: len(line.text))


@dataclass
class RunResult:
    name: str
    failures: list[Failure] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    # the latest lines (``transcript.dropped`` says how many earlier ones went)
    transcript: Tail[Line] = field(default_factory=_transcript_tail)
    iterations: list[float] = field(default_factory=list)  # --reuse: each loop body

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_OF_KIND[self.failures[0].kind] if self.failures else ExitCode.OK


@dataclass
class RunSettings:
    timeout: float = 30.0
    keep_going: bool = False
    reuse_iterations: int = 0  # >0: run the loop body this many times on one connection
    record_transcript: bool = True
    echo: Callable[[Line], None] | None = None  # -v: show lines as they happen
    ask_secret: Callable[[str], str | None] | None = None
    # the config file's hosts: ``connect smtp://work`` takes [hosts.work]'s settings
    hosts: Mapping[str, HostDefaults] = field(default_factory=dict)
    # mailtalk run's --cafile (a connect line's cafile= wins), TLS options and transport
    cafile: str | None = None
    tls: ClientTLS = field(default_factory=ClientTLS)
    pipe_command: tuple[str, ...] = ()  # --pipe: every connect line runs the program
    proxy_from: tuple[str, int] | None = None
    proxy_version: int = 1
    # the language of the failures' messages and explanations (English for --json)
    language: str = "en"


class _Stop(Exception):
    """Ends the file: a failure that keep-going cannot go past."""


class _Listener:
    """Collects what the conversation says into the run's transcript."""

    def __init__(self, result: RunResult, settings: RunSettings, started: float) -> None:
        self.result = result
        self.settings = settings
        self.started = started
        # the events since the last command, the first MAX_KEPT_EVENTS of them
        self.events: list[ServerEvent] = []
        self._kept_bytes = 0
        self.closed_by_server = False

    def _add(self, direction: str, text: str) -> None:
        line = Line(time.monotonic() - self.started, direction, text)
        if self.settings.record_transcript:
            self.result.transcript.append(line)
        if self.settings.echo is not None:
            self.settings.echo(line)

    def sent(self, text: str, typed: bool) -> None:
        self._add("C", text)

    def event(self, event: ServerEvent, latency: float) -> None:
        if not self.events:
            self._kept_bytes = 0  # cleared for a new command
        if not self.events or (
            len(self.events) < MAX_KEPT_EVENTS and self._kept_bytes < MAX_KEPT_EVENT_BYTES
        ):
            self.events.append(event)
            self._kept_bytes += len(event.raw)
        # a long reply (a message, a flood) is shown by its first 4 KiB, decoded alone
        text = event.raw[:4097].decode("utf-8", "backslashreplace").rstrip("\r\n")
        for part in text.split("\r\n") if len(event.raw) <= 4096 else [text[:4096] + "..."]:
            self._add("S", part)

    def note(self, text: str, kind: str = "info") -> None:
        self._add("#", text)

    def closed(self) -> None:
        self.closed_by_server = True


class Runner:
    """Runs one parsed script once (or its loop body many times, with --reuse)."""

    def __init__(self, script: Script, settings: RunSettings) -> None:
        self.script = script
        self.settings = settings
        self.result = RunResult(script.name)
        self.started = time.monotonic()
        self.listener = _Listener(self.result, settings, self.started)
        self.conv: Conversation | None = None
        self.owed: str | None = None  # "greeting", "reply" or None
        self.received: ServerEvent | None = None  # waited for, not yet matched
        self.untagged: list[str] = []
        self.command: str | None = None
        self._ = translation(settings.language).gettext

    # -- driving ----------------------------------------------------------------

    def run(self) -> RunResult:
        steps = self.script.steps
        try:
            if self.settings.reuse_iterations and self.script.has_loop:
                start = next(i for i, s in enumerate(steps) if isinstance(s, Loop))
                end = next(i for i, s in enumerate(steps) if isinstance(s, EndLoop))
                self._steps(steps[:start])
                for _ in range(self.settings.reuse_iterations):
                    began = time.monotonic()
                    failures = len(self.result.failures)
                    self._steps(steps[start + 1 : end])
                    if len(self.result.failures) == failures:
                        self.result.iterations.append(time.monotonic() - began)
                self._steps(steps[end + 1 :])
            else:
                self._steps([s for s in steps if not isinstance(s, Loop | EndLoop)])
            self._settle()
        except _Stop:
            pass
        finally:
            if self.conv is not None:
                self.conv.close()
            self.result.seconds = time.monotonic() - self.started
        return self.result

    def _steps(self, steps: Sequence[Step]) -> None:
        for step in steps:
            self.result.steps += 1
            try:
                self._step(step)
            except _Stop:
                raise
            except Exception as error:  # the network's errors become failures of the file
                self._fail_from(step.where, error)

    def _step(self, step: Step) -> None:
        if isinstance(step, Connect):
            self._connect(step)
        elif isinstance(step, Expect):
            self._expect(step.where, step.expectation)
        elif isinstance(step, Send):
            self._send(step)
        elif isinstance(step, Data):
            self._data(step)
        elif isinstance(step, StartTLS):
            self._settle()
            try:
                self._conversation(step.where).starttls()
            except MailtalkError as error:
                self._fail(step.where, "tls", str(error), stop=True)
            self.command = "STARTTLS"
        elif isinstance(step, HandshakeTLS):
            self._settle()
            if not getattr(self._conversation(step.where).core, "tls", False):
                self._fail(
                    step.where, "tls", self._("TLS is not active here (tls checks it is)"),
                    stop=True,
                )
        elif isinstance(step, Auth):
            self._auth(step)
        elif isinstance(step, Sleep):
            self._settle()
            time.sleep(step.seconds)
        elif isinstance(step, ExpectClose):
            self._expect_close(step.where)

    # -- steps ----------------------------------------------------------------------

    def _conversation(self, where: Location) -> Conversation:
        if self.conv is None or self.conv.closed:
            self._fail(
                where, "closed", self._("not connected (the server closed the connection)"),
                stop=True,
            )
        assert self.conv is not None
        return self.conv

    def _connect(self, step: Connect) -> None:
        from mailtalk.net.target import parse_url

        if self.conv is not None:
            self._settle()
            self.conv.close()
        target = parse_url(step.url)
        cafile = step.cafile
        # with --pipe a program is the server: the URL's host is only a name
        local = target.socket_path is not None or bool(self.settings.pipe_command)
        host = self.settings.hosts.get(target.host) if not local else None
        if host is not None:
            from mailtalk.config_file import for_target, port_given

            authority = step.url.partition("://")[2].split("/", 1)[0]
            target = for_target(target, host, port_given(authority), tls_given=False)
            cafile = cafile or self._host_cafile(host)
        options = SessionOptions(
            target=target,
            starttls=False,
            insecure=step.insecure,
            cafile=cafile or self.settings.cafile,
            timeout=self.settings.timeout,
            tls=self.settings.tls,
            pipe_command=self.settings.pipe_command,
            proxy_from=self.settings.proxy_from,
            proxy_version=self.settings.proxy_version,
            language=self.settings.language,
        )
        self.listener.events.clear()
        self.conv = Conversation(options, self.listener)
        self.conv.explain_inline = False  # failures are explained by the report
        self.conv.recorder.enabled = False
        self.conv.open()
        self.owed = "greeting"
        self.command = "greeting"

    def _host_cafile(self, host: HostDefaults) -> str | None:
        """The section's cafile, checked as a connect line's own ``cafile=`` is."""
        from mailtalk.errors import UsageError
        from mailtalk.language import WordedError
        from mailtalk.net.tls import check_cafile

        if host.cafile is None:
            return None
        try:
            return check_cafile(host.cafile)
        except WordedError as error:
            raise UsageError(f"[hosts.{host.name}] cafile {host.cafile}: "
                             f"{error.said(self._)}") from None

    def _send(self, step: Send) -> None:
        conv = self._conversation(step.where)
        self._settle()
        self.listener.events.clear()
        self.untagged = []
        conv.send_line(step.line)
        self.command = conv.last_command
        self.owed = "reply" if conv.expects_reply() else None

    def _data(self, step: Data) -> None:
        conv = self._conversation(step.where)
        self._settle()
        self.listener.events.clear()
        conv.send_line("DATA")
        reply = conv.wait_final()
        if reply.reply_class is not ReplyClass.INTERMEDIATE:
            self._mismatch(step.where, self._("354 (go ahead with the message)"), reply, "DATA")
            self._stop_unless_keep_going()
            return
        conv.send_message(step.message)
        self.listener.note(self._("message of {size} bytes, dot-stuffed").format(
            size=len(step.message)))
        self.listener.sent(".", typed=False)
        self.command = "end of data"
        self.owed = "reply"

    def _auth(self, step: Auth) -> None:
        conv = self._conversation(step.where)
        self._settle()
        from mailtalk.protocols.sasl import NO_SECRET_MECHANISMS

        no_secret = step.mechanism in NO_SECRET_MECHANISMS  # a certificate, a Kerberos ticket
        secret = "" if no_secret else self._secret(step, conv.target.host)
        if secret is None:
            from mailtalk.client.credentials import is_token_mechanism

            missing = self._(
                "no OAuth2 token for {user}: set ${variable}, or run from a terminal to be asked"
                if is_token_mechanism(step.mechanism)
                else "no password for {user}: set ${variable}, add it to ~/.netrc, or run from "
                "a terminal to be asked"
            )
            self._fail(step.where, "auth", missing.format(
                user=step.user, variable=step.secret_variable), stop=True)
        assert secret is not None
        reply = authenticate(conv, step.mechanism, step.user, secret)
        self.command = "AUTH"
        if reply.reply_class is not ReplyClass.POSITIVE:
            self._mismatch(
                step.where,
                self._("auth {mechanism} {user} to succeed").format(
                    mechanism=step.mechanism.lower(), user=step.user),
                reply,
                "AUTH",
                kind="auth",
            )
            raise _Stop

    def _secret(self, step: Auth, host: str) -> str | None:
        from mailtalk.client.credentials import find_password, find_token, is_token_mechanism

        if is_token_mechanism(step.mechanism):
            return find_token(step.user, step.secret_variable, self.settings.ask_secret)
        return find_password(host, step.user, step.secret_variable, self.settings.ask_secret)

    def _expect_close(self, where: Location) -> None:
        conv = self._conversation(where)
        self._settle()
        deadline = time.monotonic() + self.settings.timeout
        try:
            while not conv.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._fail(
                        where,
                        "expectation",
                        self._("expected the server to close the connection; it did not"),
                        stop=True,
                    )
                event = conv.wait_final(timeout=remaining)
                self._fail(
                    where,
                    "expectation",
                    self._("expected the server to close the connection; it sent {reply!r}")
                    .format(reply=first_line(event)),
                    expected="close",
                    received=first_line(event),
                )
                self._stop_unless_keep_going()
        except ServerClosedError:
            return
        except MailtalkError as error:  # a timeout: it did not close
            self._fail(
                where,
                "expectation",
                self._("expected the server to close the connection: {error}").format(
                    error=one_line(error, self._)),
                stop=True,
            )

    def _wait(self, where: Location) -> ServerEvent | None:
        """The reply owed, waited for (once)."""
        if self.received is not None:
            return self.received
        if self.owed is None:
            return None
        conv = self._conversation(where)
        if self.owed == "greeting":
            conv.wait_greeting()
            event = self.listener.events[0] if self.listener.events else None
        else:
            event = conv.wait_final()
        self.untagged = [
            e.raw.decode("utf-8", "backslashreplace").strip()
            for e in self.listener.events
            if e is not event and not e.final
        ]
        # LMTP: after the message one reply per recipient, each for its own S: line
        self.owed = "reply" if getattr(conv.core, "owes_recipient_replies", False) else None
        self.received = event
        return event

    def _expect(self, where: Location, expectation: Expectation) -> None:
        event = self._wait(where)
        if expectation.line_of_reply:
            raw = event.raw.decode("utf-8", "backslashreplace") if event is not None else ""
            if not expectation.matches_a_line(raw):
                received = (" | ".join(line.strip() for line in raw.splitlines()[:8])
                            or self._("no reply"))
                self._fail(
                    where,
                    "expectation",
                    self._("expected S: {expected} among the reply's lines, got: {received}")
                    .format(expected=expectation.source, received=received),
                    expected=expectation.source,
                    received=received,
                )
                self._stop_unless_keep_going()
            return
        if expectation.untagged:
            lines = [line.removeprefix("* ") for line in self.untagged]
            if event is not None and not event.final:  # the IMAP greeting is untagged
                lines.append(first_line(event).removeprefix("* "))
            if not expectation.matches_untagged(lines):
                received = "; ".join(lines[:5]) or self._("no untagged response")
                self._fail(
                    where,
                    "expectation",
                    self._("expected S: {expected}, got: {received}").format(
                        expected=expectation.source, received=received),
                    expected=expectation.source,
                    received=received,
                )
                self._stop_unless_keep_going()
            return
        if event is None:
            self._fail(
                where,
                "expectation",
                self._("S: {expected} has no reply to match: no command before it expects "
                       "one (one S: line per reply)").format(expected=expectation.source),
                expected=expectation.source,
            )
            self._stop_unless_keep_going()
            return
        self.received = None
        assert self.conv is not None
        data = event.raw
        if self.conv.target.protocol == "pop3":
            # the status line says it all; the message after it (up to 64 MiB) is
            # not decoded again only to be skipped
            end = data.find(b"\n")
            data = data if end < 0 else data[:end]
        text = data.decode("utf-8", "backslashreplace").strip()
        reply = reply_of(text, self.conv.target.protocol)
        if not expectation.matches(reply):
            missing = expectation.missing_words(reply) if expectation.codes_match(reply) else []
            self._mismatch(where, expectation.source, event, self.command, missing=missing)
            self._stop_unless_keep_going()

    def _settle(self) -> None:
        """Wait for a reply nobody matched, and accept it."""
        while self.owed is not None and self.conv is not None and not self.conv.closed:
            self.received = None
            self._wait(Location(self.script.name, 0))
        self.received = None
        self.owed = None

    # -- failures ---------------------------------------------------------------------

    def _mismatch(
        self,
        where: Location,
        expected: str,
        event: ServerEvent,
        command: str | None,
        kind: str = "expectation",
        missing: Sequence[str] = (),
    ) -> None:
        received = first_line(event) if event.raw.count(b"\n") <= 1 else _whole(event)
        explanation = None
        if self.conv is not None:
            explained = self.conv.explain_event(event, command)
            if explained.category != "ok":
                explanation = explained.one_line()
        lacking = ""
        if missing:
            words = ", ".join(repr(word) for word in missing)
            lacking = self._(" (no word {words})" if len(missing) == 1
                             else " (no words {words})").format(words=words)
        self._fail(
            where,
            kind,
            self._("expected S: {expected}, got: {received}").format(
                expected=expected, received=received) + lacking,
            expected=expected,
            received=received,
            explanation=explanation,
        )

    def _fail(
        self,
        where: Location,
        kind: str,
        message: str,
        *,
        stop: bool = False,
        expected: str | None = None,
        received: str | None = None,
        explanation: str | None = None,
    ) -> None:
        self.result.failures.append(Failure(where, kind, message, expected, received, explanation))
        if stop:
            raise _Stop

    def _stop_unless_keep_going(self) -> None:
        if not self.settings.keep_going:
            raise _Stop

    def _fail_from(self, where: Location, error: BaseException) -> None:
        from mailtalk.client.conversation import ReplyTimeout
        from mailtalk.errors import exit_code_for

        code = exit_code_for(error)
        if isinstance(error, ReplyTimeout):
            kind = "timeout"
        elif isinstance(error, ServerClosedError):
            kind = "closed"
        else:
            kind = {
                ExitCode.CONNECT: "connect",
                ExitCode.TLS: "tls",
                ExitCode.PROTOCOL: "protocol",
                ExitCode.AUTH: "auth",
            }.get(code, "protocol")
        if not isinstance(error, MailtalkError | OSError) and code == ExitCode.FAILED:
            raise error  # a bug: let --debug show it
        message = one_line(error, self._)
        if kind == "tls":  # a script says so on its connect line, not with options
            _ = self._
            message = message.replace("--cafile FILE", _("cafile=FILE on the connect line"))
            message = message.replace("--insecure", _("insecure on the connect line"))
        self._fail(where, kind, message, stop=True)


def _whole(event: ServerEvent) -> str:
    text = event.raw.decode("utf-8", "backslashreplace").strip()
    return " | ".join(line.strip() for line in text.splitlines()[:6])


def run_script(script: Script, settings: RunSettings) -> RunResult:
    return Runner(script, settings).run()
