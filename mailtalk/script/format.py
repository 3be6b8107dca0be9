"""Session files (``.mt``): a mail conversation written down, as the RFCs write one.

    # comments start with #
    set FROM alice@example.test
    connect smtp://localhost:2525
    S: 220
    C: EHLO client.test
    S: 250
    starttls
    C: EHLO client.test
    S: 250
    auth plain alice              # secret from $MAILTALK_PASSWORD, ~/.netrc or a prompt
    C: MAIL FROM:<${FROM}>
    S: 250
    C: RCPT TO:<bob@example.test>
    S: 2xx
    data <<EOF                    # sends DATA, the message (dot-stuffed) and the final dot
    Subject: hello

    Hi Bob.
    EOF
    S: 250 *queued*
    C: QUIT
    S: 221
    expect-close

``C:`` lines are sent as they are (IMAP tags are added); ``S:`` lines are matched
against the reply to what came before (see ``expect.py``). Directives: ``connect URL
[insecure] [cafile=PATH]``, ``starttls``, ``tls`` (the handshake alone, after a
written-out STARTTLS), ``auth MECHANISM USER [ENVVAR]`` (plain, login,
cram-md5, scram-sha-1, scram-sha-256, digest-md5, ntlm; ``auth external [USER]`` logs in
by the client certificate of ``run --cert/--key``, ``auth gssapi [USER]`` by the
Kerberos ticket of ``kinit``; xoauth2 and oauthbearer take the token from
``$MAILTALK_OAUTH2_TOKEN`` or ENVVAR), ``data FILE`` or ``data
<<MARK`` ... ``MARK`` (``<<'MARK'`` keeps ``${...}`` as is), ``set NAME VALUE``,
``include FILE``, ``sleep SECONDS``, ``expect-close``, and ``loop`` ... ``end``
around the part that ``--reuse`` repeats on one connection.

Variables are ``${NAME}``: from ``--var NAME=VALUE`` first, then ``set`` in the file,
then the environment; ``$$`` is a dollar sign. ``${PASSWORD}``, which recordings
wrote before they wrote ``${MAILTALK_PASSWORD}``, falls back to $MAILTALK_PASSWORD.
This module only reads files: no sockets, no secrets (passwords are never written in
a session file).

Everything that can be known before connecting is checked here, so a bad file
stops before anything is sent: ``S:`` lines the protocol of their connection can
never answer (``+OK`` to SMTP, ``250`` to IMAP), an ``S:`` line with no reply left
to match, ``data`` outside SMTP, ``tls`` where nothing starts TLS, ``starttls``
where TLS is already on, steps after ``expect-close``, a missing ``cafile``. Files
are read with bounds (regular files only, 16 MiB each, 64 MiB with what they
include), and a file that turns out not to be a session file is not quoted in the
error: it may be /etc/shadow.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TextIO

from mailtalk.language import N_, WordedError
from mailtalk.script.expect import Expectation, ExpectationError, parse_expectation

MAX_INCLUDE_DEPTH: Final = 16
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
MAX_SCRIPT_BYTES: Final = 16 * 1024 * 1024  # one session file
MAX_TOTAL_SCRIPT_BYTES: Final = 64 * 1024 * 1024  # a file and all it includes, each time
MAX_TOTAL_MESSAGE_BYTES: Final = 256 * 1024 * 1024  # every message of one script
# recordings wrote ${PASSWORD} until they wrote the one name everything else reads
LEGACY_PASSWORD_VARIABLES: Final = {"PASSWORD": "MAILTALK_PASSWORD"}
DIRECTIVES: Final = (
    "connect", "starttls", "tls", "auth", "data", "set", "include", "sleep",
    "expect-close", "loop", "end",
)  # fmt: skip
_VARIABLE: Final = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\})")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEREDOC: Final = re.compile(r"<<\s*('?)([A-Za-z_][A-Za-z0-9_]*)\1$")


@dataclass(frozen=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ScriptError(Exception):
    """A session file that cannot be run; the message names the file and line.

    As a protocol core's error, the message is a template (marked ``N_``, a msgid of
    ``knowledge/locale/LANG/run.po``) and its values, kept apart: ``str()`` is the
    English, :meth:`said` the message in a person's language. No values, no
    formatting: a message made elsewhere may hold braces."""

    def __init__(self, where: Location | str, message: str, /, **values: object) -> None:
        super().__init__(f"{where}: {message.format(**values) if values else message}")
        self.where = where
        self.template = message
        self.values = values

    def said(self, gettext: Callable[[str], str]) -> str:
        """The message in the language of ``gettext`` (the English where the
        translation does not fit the values); a value that is a WordedError (why a file
        cannot be read) is said in it too."""
        text = gettext(self.template)
        values = {name: value.said(gettext) if isinstance(value, WordedError) else value
                  for name, value in self.values.items()}
        try:
            return f"{self.where}: {text.format(**values) if values else text}"
        except (KeyError, IndexError, ValueError, AttributeError):
            return str(self)


@dataclass(frozen=True)
class Step:
    where: Location


@dataclass(frozen=True)
class Send(Step):
    line: str


@dataclass(frozen=True)
class Expect(Step):
    expectation: Expectation


@dataclass(frozen=True)
class Connect(Step):
    url: str
    insecure: bool = False
    cafile: str | None = None


@dataclass(frozen=True)
class StartTLS(Step):
    pass


@dataclass(frozen=True)
class HandshakeTLS(Step):
    pass


@dataclass(frozen=True)
class Auth(Step):
    mechanism: str
    user: str
    secret_variable: str = "MAILTALK_PASSWORD"


@dataclass(frozen=True)
class Data(Step):
    message: bytes


@dataclass(frozen=True)
class Sleep(Step):
    seconds: float


@dataclass(frozen=True)
class ExpectClose(Step):
    pass


@dataclass(frozen=True)
class Loop(Step):
    pass


@dataclass(frozen=True)
class EndLoop(Step):
    pass


@dataclass
class Script:
    """A parsed session file, includes expanded."""

    name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def has_loop(self) -> bool:
        return any(isinstance(step, Loop) for step in self.steps)


@dataclass
class _Reader:
    variables: dict[str, str]  # --var, highest precedence
    environment: Mapping[str, str]
    defined: dict[str, str] = field(default_factory=dict)  # from `set`
    stack: list[str] = field(default_factory=list)
    script_bytes: int = 0  # read so far, session files
    message_bytes: int = 0  # read so far, messages
    data_files: dict[str, bytes] = field(default_factory=dict)  # data FILE, read once
    stdin: TextIO | None = None  # where "-" is read from; None: this process's

    def substitute(self, text: str, where: Location) -> str:
        def value(match: re.Match[str]) -> str:
            if match[1] == "$":
                return "$"
            name = match[2]
            for source in (self.variables, self.defined, self.environment):
                if name in source:
                    return source[name]
            legacy = LEGACY_PASSWORD_VARIABLES.get(name)
            if legacy is not None:
                for source in (self.variables, self.environment):
                    if legacy in source:
                        return source[legacy]
            raise ScriptError(
                where,
                N_("undefined variable ${{{name}}}: set it in the file, give --var "
                   "{name}=..., or export {name}"),
                name=name,
            )

        return _VARIABLE.sub(value, text)


def parse_file(
    path: str,
    variables: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> Script:
    """Read and parse a session file (``-`` is ``stdin``, by default this process's)."""
    reader = _Reader(dict(variables or {}), os.environ if environment is None else environment)
    reader.stdin = stdin
    name = "<stdin>" if path == "-" else path
    script = Script(name)
    script.steps = _parse(reader, path, _read_text(reader, path, name))
    _check_loops(script)
    _check_steps(script)
    return script


def parse_text(
    text: str,
    name: str = "<script>",
    variables: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> Script:
    reader = _Reader(dict(variables or {}), {} if environment is None else environment)
    script = Script(name, _parse(reader, name, text))
    _check_loops(script)
    _check_steps(script)
    return script


def _read_text(reader: _Reader, path: str, name: str, where: Location | None = None) -> str:
    """A session file's text: a regular file (or stdin), at most MAX_SCRIPT_BYTES, UTF-8."""
    at = where or name
    shown = "standard input" if path == "-" else path
    too_big = N_("{file} is over {size} MiB: too big for a session file (a big message "
                 "goes in a file of its own: data FILE)")
    big = {"file": shown, "size": MAX_SCRIPT_BYTES // (1024 * 1024)}
    data: bytes | None = None
    text: str | None = None  # standard input without bytes underneath (tests)
    if path == "-":
        import sys

        stdin = reader.stdin if reader.stdin is not None else sys.stdin
        # the bytes, decoded strictly: a text stdin would smuggle bad bytes through
        # as surrogates, to fail later at the socket
        raw = getattr(stdin, "buffer", None)
        try:
            if raw is not None:
                data = bytes(raw.read(MAX_SCRIPT_BYTES + 1))
            else:
                text = stdin.read(MAX_SCRIPT_BYTES + 1)
        except OSError as error:
            raise ScriptError(at, N_("cannot read standard input: {reason}"),
                              reason=error.strerror) from None
        if len(data if data is not None else text or "") > MAX_SCRIPT_BYTES:
            raise ScriptError(at, too_big, **big)
    else:
        try:
            data = read_regular_file(path, MAX_SCRIPT_BYTES)
        except FileProblem as problem:
            if problem.missing:
                raise ScriptError(at, N_("no such file: {file}"), file=path) from None
            if problem.too_big:
                raise ScriptError(at, too_big, **big) from None
            if problem.template == FIFO:  # it could be one: give -
                raise ScriptError(at, N_("cannot read {file}: {problem}"), file=path,
                                  problem=problem) from None
            raise ScriptError(at, N_("cannot read {file}: {problem}, not a session file"),
                              file=path, problem=problem) from None
    reader.script_bytes += len(data) if data is not None else len(text or "")
    if reader.script_bytes > MAX_TOTAL_SCRIPT_BYTES:
        raise ScriptError(
            at, N_("over {size} MiB of session files, counting each include"),
            size=MAX_TOTAL_SCRIPT_BYTES // (1024 * 1024),
        )
    if data is None:
        return text or ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScriptError(at, N_("{file} is not UTF-8 text"), file=shown) from None


class FileProblem(WordedError):
    """Why a file named in a session file cannot be read; the caller says which file."""

    def __init__(
        self, reason: str, /, missing: bool = False, too_big: bool = False, **values: object
    ) -> None:
        super().__init__(reason, **values)
        self.missing = missing
        self.too_big = too_big


FIFO: Final = N_("a FIFO (give - to read standard input)")


def read_regular_file(path: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. Raises FileProblem for a
    missing file, a directory, a FIFO (which would block), a device (/dev/zero would
    never end), or a file over ``limit``, read no further than that."""
    import stat

    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileProblem(N_("no such file"), missing=True) from None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the name
        raise FileProblem("{reason}", reason=getattr(error, "strerror", None) or error) from None
    try:
        status = os.fstat(handle)
        mode = status.st_mode
        if not stat.S_ISREG(mode):
            raise FileProblem(
                N_("a directory") if stat.S_ISDIR(mode)
                else FIFO if stat.S_ISFIFO(mode)
                else N_("a device") if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else N_("a socket") if stat.S_ISSOCK(mode)
                else N_("not a regular file")
            )  # fmt: skip
        if status.st_size > limit:
            raise FileProblem(N_("over {limit} bytes"), too_big=True, limit=limit)
        os.set_blocking(handle, True)
        chunks = []
        size = 0
        while size <= limit:  # a file that grows while it is read stops here too
            chunk = os.read(handle, min(1024 * 1024, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise FileProblem("{reason}", reason=error.strerror or error) from None
    finally:
        os.close(handle)
    if size > limit:
        raise FileProblem(N_("over {limit} bytes"), too_big=True, limit=limit)
    return b"".join(chunks)


def _relative(base: str, path: str) -> str:
    if os.path.isabs(path) or base in ("-", "<stdin>", "<script>"):
        return path
    return os.path.join(os.path.dirname(base), path)


def _parse(
    reader: _Reader, path: str, text: str, included_at: Location | None = None
) -> list[Step]:
    name = "<stdin>" if path == "-" else path
    if len(reader.stack) >= MAX_INCLUDE_DEPTH or path in reader.stack:
        chain = " -> ".join([*reader.stack, path])
        raise ScriptError(included_at or name, N_("include loop or too deep: {chain}"),
                          chain=chain)
    reader.stack.append(path)
    steps: list[Step] = []
    # only LF (or CRLF) ends a line: str.splitlines() would also split at form
    # feeds and U+2028 inside a message, and give line numbers the file lacks
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    index = 0
    proven = False  # a line of this file was a session file's: its lines may be quoted
    while index < len(lines):
        where = Location(name, index + 1)
        raw = lines[index]
        index += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped[:2].upper() not in ("C:", "S:") and "\x00" in stripped:
            # C: lines may send a NUL on purpose; elsewhere it is a binary file
            raise ScriptError(where, N_("{file} holds NUL bytes: a binary file, not a session "
                                        "file"), file=name)
        known = stripped[:2].upper() in ("C:", "S:") or (
            _strip_comment(stripped).split()[0].lower() in DIRECTIVES
        )
        if not known:
            raise _unknown(where, stripped, name, proven)
        proven = True
        if stripped[:2].upper() in ("C:", "S:"):
            kind, body = stripped[0].upper(), raw.split(":", 1)[1]
            # one space after the colon belongs to the notation, the rest to the line
            body = body[1:] if body.startswith(" ") else body
            if kind == "C":
                steps.append(Send(where, reader.substitute(body, where)))
            else:
                try:
                    expectation = parse_expectation(reader.substitute(body, where))
                except ExpectationError as error:
                    raise ScriptError(where, error.template, **error.values) from None
                steps.append(Expect(where, expectation))
            continue
        words = _strip_comment(stripped).split()
        directive, args = words[0].lower(), words[1:]
        if directive == "data" and len(args) == 2 and args[0] == "<<":
            args = ["<<" + args[1]]  # data << EOF
        if directive == "data" and len(args) == 1 and _HEREDOC.match(args[0]):
            marker = _HEREDOC.match(args[0])
            assert marker is not None
            literal, end = marker[1] == "'", marker[2]
            body_lines = []
            while True:
                if index >= len(lines):
                    raise ScriptError(where, N_("here-block never ends: no line {end!r}"),
                                      end=end)
                line = lines[index]
                index += 1
                if line.strip() == end:
                    break
                body_lines.append(
                    line if literal else reader.substitute(line, Location(name, index))
                )
            message = _message("\n".join(body_lines) + "\n", where)
            _count_message(reader, len(message), where)
            steps.append(Data(where, message))
            continue
        args = [reader.substitute(arg, where) for arg in args]
        steps.extend(_directive(reader, path, where, directive, args, stripped))
    reader.stack.pop()
    return steps


def _unknown(where: Location, line: str, name: str, proven: bool) -> ScriptError:
    """The error for a line that is no session file's: it quotes the line only if the
    file has shown it is a session file (an included /etc/shadow must not be echoed)."""
    import difflib

    word = _strip_comment(line).split()[0].lower()
    close = difflib.get_close_matches(word, DIRECTIVES, n=1, cutoff=0.75)
    if not proven:
        # the question about the file first, then the guess: "...? did you mean connect?"
        if close:
            return ScriptError(where, N_(
                "not C:, S:, a directive or a comment: is {file} a session file? (its text "
                "is not shown) did you mean {directive}?"), file=name, directive=close[0])
        return ScriptError(where, N_(
            "not C:, S:, a directive or a comment: is {file} a session file? (its text is "
            "not shown)"), file=name)
    shown = word if len(word) <= 40 else word[:40] + "..."
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    if close:
        return ScriptError(where, N_(
            "unknown directive {word!r}; did you mean {directive}? (C:, S:, connect, starttls, "
            "tls, auth, data, set, include, sleep, expect-close, loop, end, or # for a "
            "comment)"), word=shown, directive=close[0])
    return ScriptError(where, N_(
        "unknown directive {word!r} (C:, S:, connect, starttls, tls, auth, data, set, "
        "include, sleep, expect-close, loop, end, or # for a comment)"), word=shown)


def _strip_comment(line: str) -> str:
    # "sleep 1   # wait" -> "sleep 1"; a # inside a word stays
    return re.split(r"\s#", line, maxsplit=1)[0].strip()


def _message(text: str, where: Location) -> bytes:
    data = text.encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ScriptError(where, N_("message over {size} MiB"),
                          size=MAX_MESSAGE_BYTES // (1024 * 1024))
    return data


def _count_message(reader: _Reader, size: int, where: Location) -> None:
    reader.message_bytes += size
    if reader.message_bytes > MAX_TOTAL_MESSAGE_BYTES:
        raise ScriptError(where, N_("messages over {size} MiB in all"),
                          size=MAX_TOTAL_MESSAGE_BYTES // (1024 * 1024))


def _want(args: list[str], low: int, high: int, usage: str, where: Location) -> None:
    if not low <= len(args) <= high:
        raise ScriptError(where, N_("usage: {usage}"), usage=usage)


def _directive(
    reader: _Reader, path: str, where: Location, directive: str, args: list[str], line: str
) -> list[Step]:
    if directive == "connect":
        _want(args, 1, 3, "connect URL [insecure] [cafile=PATH]", where)
        from mailtalk.net.target import TargetError, parse_url

        try:
            parse_url(args[0])
        except TargetError as error:
            raise ScriptError(where, error.template, **error.values) from None
        insecure = False
        cafile = None
        for option in args[1:]:
            if option == "insecure":
                insecure = True
            elif option.startswith("cafile="):
                cafile = _relative(path, option.removeprefix("cafile="))
            else:
                raise ScriptError(where, N_("unknown connect option {option!r}"), option=option)
        if cafile is not None:
            _check_cafile(where, cafile)
        return [Connect(where, args[0], insecure, cafile)]
    if directive == "starttls":
        _want(args, 0, 0, "starttls", where)
        return [StartTLS(where)]
    if directive == "tls":
        _want(args, 0, 0, "tls", where)
        return [HandshakeTLS(where)]
    if directive == "auth":
        if args and args[0].upper() in ("EXTERNAL", "GSSAPI"):
            # the TLS client certificate (run --cert/--key) or the Kerberos ticket
            # (kinit) is the identity: no secret; a USER is the authorization identity
            # asked for
            _want(args, 1, 2, f"auth {args[0].lower()} [USER]", where)
            return [Auth(where, args[0].upper(), args[1] if len(args) == 2 else "", "")]
        _want(args, 2, 3, "auth MECHANISM USER [ENVVAR]", where)
        mechanism = args[0].upper()
        from mailtalk.protocols.sasl import MECHANISMS, TOKEN_MECHANISMS

        if mechanism not in MECHANISMS:
            ours = ", ".join(m.lower() for m in MECHANISMS)
            raise ScriptError(where, N_("auth {mechanism}: mailtalk does {ours}"),
                              mechanism=args[0], ours=ours)
        # A token's own variable by default: a password is not a bearer token.
        default = "MAILTALK_OAUTH2_TOKEN" if mechanism in TOKEN_MECHANISMS else "MAILTALK_PASSWORD"
        variable = args[2] if len(args) == 3 else default
        if not _NAME.fullmatch(variable):
            raise ScriptError(where, N_("{variable!r} is not an environment variable name"),
                              variable=variable)
        return [Auth(where, mechanism, args[1], variable)]
    if directive == "data":
        _want(args, 1, 1, "data FILE, or data <<MARK ... MARK", where)
        file = _relative(path, args[0])
        content = reader.data_files.get(file)
        if content is None:  # a file sent many times is read (and held) once
            try:
                content = read_regular_file(file, MAX_MESSAGE_BYTES)
            except FileProblem as problem:
                raise ScriptError(where, N_("data {file}: {problem}"), file=args[0],
                                  problem=problem) from None
            reader.data_files[file] = content
            _count_message(reader, len(content), where)
        return [Data(where, content)]
    if directive == "set":
        if len(args) < 1 or not _NAME.fullmatch(args[0]):
            raise ScriptError(where, N_("usage: {usage}"), usage="set NAME VALUE")
        value = line.split(None, 2)[2] if len(line.split(None, 2)) > 2 else ""
        value = reader.substitute(_strip_comment(value) if value else "", where)
        reader.defined[args[0]] = value  # --var still wins: substitute() looks there first
        return []
    if directive == "include":
        _want(args, 1, 1, "include FILE", where)
        file = _relative(path, args[0])
        if len(reader.stack) >= MAX_INCLUDE_DEPTH or file in reader.stack:
            chain = " -> ".join([*reader.stack, file])
            raise ScriptError(where, N_("include loop or too deep: {chain}"), chain=chain)
        return _parse(reader, file, _read_text(reader, file, file, where), where)
    if directive == "sleep":
        _want(args, 1, 1, "sleep SECONDS", where)
        try:
            seconds = float(args[0])
        except ValueError:
            raise ScriptError(where, N_("sleep {value}: not a number of seconds"),
                              value=args[0]) from None
        if not 0 <= seconds <= 3600:
            raise ScriptError(where, N_("sleep takes 0 to 3600 seconds"))
        return [Sleep(where, seconds)]
    if directive == "expect-close":
        _want(args, 0, 0, "expect-close", where)
        return [ExpectClose(where)]
    if directive == "loop":
        _want(args, 0, 0, "loop", where)
        return [Loop(where)]
    assert directive == "end", directive  # _parse let only DIRECTIVES through
    _want(args, 0, 0, "end", where)
    return [EndLoop(where)]


def _check_cafile(where: Location, cafile: str) -> None:
    """cafile=PATH names CA certificates (PEM), or a directory of them: decided by
    net.tls.check_cafile, as for --cafile."""
    from mailtalk.net.tls import check_cafile

    try:
        check_cafile(cafile)
    except ValueError as why:
        raise ScriptError(where, N_("cafile={cafile}: {reason}"), cafile=cafile,
                          reason=why) from None


def _check_loops(script: Script) -> None:
    depth = 0
    opened: Loop | None = None
    for step in script.steps:
        if isinstance(step, Loop):
            if depth:
                raise ScriptError(step.where, N_("loops do not nest"))
            depth += 1
            opened = step
        elif isinstance(step, EndLoop):
            if not depth:
                raise ScriptError(step.where, N_("end without loop"))
            depth -= 1
    if depth:
        assert opened is not None
        raise ScriptError(opened.where, N_("loop without end"))
    if not script.steps:
        raise ScriptError(script.name, N_("no steps: a session file starts with connect URL"))
    if not isinstance(script.steps[0], Connect):
        first = script.steps[0]
        raise ScriptError(first.where, N_("a session file starts with connect URL"))


def _check_steps(script: Script) -> None:
    """What can be known before connecting, walking the steps as the runner will.

    ``pending``: a reply is owed (after connect, C: or data) and no S: line has used it
    up; directives that wait for replies themselves (starttls, tls, auth, sleep,
    expect-close) leave none. The walk is in file order, which is also what --reuse
    repeats: a loop body leaves the same state each time round.
    """
    from mailtalk.net.target import parse_url
    from mailtalk.script.expect import check_protocol

    protocol = "smtp"
    pending = False
    used_at: Location | None = None  # what used up the last reply
    closed_at: Location | None = None
    tls_on = tls_may_be_on = False

    def line_of(location: Location, here: Location) -> str:
        return f"line {location.line}" if location.file == here.file else str(location)

    for step in script.steps:
        where = step.where
        if isinstance(step, Connect):
            target = parse_url(step.url)
            protocol = target.protocol
            pending, used_at, closed_at = True, None, None
            tls_on = tls_may_be_on = target.tls == "implicit"
            continue
        if isinstance(step, Loop | EndLoop):
            continue
        if closed_at is not None and not isinstance(step, Sleep):
            raise ScriptError(
                where,
                N_("the connection is closed here (expect-close on {line}): connect again "
                   "first"),
                line=line_of(closed_at, where),
            )
        if isinstance(step, Send):
            verb = step.line.split()[:2]
            if any(word.upper() in ("STARTTLS", "STLS") for word in verb):
                tls_may_be_on = True
            pending = True
        elif isinstance(step, Expect):
            expectation = step.expectation
            problem = check_protocol(expectation, protocol)
            if problem is not None:
                raise ScriptError(where, problem.template, **problem.values)
            if expectation.untagged:
                continue  # the untagged responses of the last command stay to be checked
            if not pending:
                if used_at:
                    raise ScriptError(where, N_(
                        "S: {expected} has no reply to match: {line} had the last one (one S: "
                        "line per reply, after C:, connect or data)"),
                        expected=expectation.source, line=line_of(used_at, where))
                raise ScriptError(where, N_(
                    "S: {expected} has no reply to match (one S: line per reply, after C:, "
                    "connect or data)"), expected=expectation.source)
            if not expectation.line_of_reply:
                pending, used_at = False, where
        elif isinstance(step, Data):
            if protocol != "smtp":
                if protocol == "imap":
                    raise ScriptError(where, N_(
                        "data sends an SMTP message (DATA); this is IMAP (a message goes in "
                        "with C: APPEND and a literal)"))
                raise ScriptError(where, N_("data sends an SMTP message (DATA); this is "
                                            "{protocol}"), protocol=protocol.upper())
            pending = True
        elif isinstance(step, StartTLS):
            if tls_on:
                raise ScriptError(where, N_("starttls: TLS is already on here"))
            tls_on = tls_may_be_on = True
            pending, used_at = False, where
        elif isinstance(step, HandshakeTLS):
            if not tls_may_be_on:
                raise ScriptError(
                    where,
                    N_("tls checks that TLS is on, and nothing before it on this connection "
                       "starts TLS (C: STARTTLS, starttls, or an smtps/pop3s/imaps URL)"),
                )
            tls_on = True
            pending, used_at = False, where
        elif isinstance(step, Auth | Sleep):
            pending, used_at = False, where
        elif isinstance(step, ExpectClose):
            pending, used_at, closed_at = False, where, where
