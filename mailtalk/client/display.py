"""How server events look on screen: lines with a style name, shared by REPL and pipe mode.

Styles are names ("positive", "permanent", ...) so the REPL can map them to
prompt_toolkit styles and the pipe mode to ANSI colours (or none: whether is the
Environment's ``colour()``, which knows NO_COLOR).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from mailtalk.protocols.common import ReplyClass, ServerEvent, escape_bytes
from mailtalk.terminal import safe_bytes

STYLE_OF_CLASS: Final = {
    ReplyClass.POSITIVE: "positive",
    ReplyClass.INTERMEDIATE: "intermediate",
    ReplyClass.TRANSIENT: "transient",
    ReplyClass.PERMANENT: "permanent",
    ReplyClass.INFO: "info",
}

# ANSI colours for the pipe mode: green, cyan, yellow, red, default; dim for notes.
ANSI: Final = {
    "positive": "\x1b[32m",
    "intermediate": "\x1b[36m",
    "transient": "\x1b[33m",
    "permanent": "\x1b[31m",
    "info": "",
    "body": "",
    "latency": "\x1b[2m",
    "note": "\x1b[2m",
    "tls": "\x1b[35m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "sent": "\x1b[1m",
}
RESET: Final = "\x1b[0m"

StyledLine = list[tuple[str, str]]


def format_latency(seconds: float, ms_below: float = 1.0, digits: int = 2) -> str:
    """A time as mailtalk shows it: whole milliseconds below ``ms_below`` seconds, else
    seconds to ``digits`` places. A reply's latency keeps the defaults ("42 ms",
    "1.50 s"); ``mailtalk run`` gives a whole file's time in ms up to 10 s ("2480 ms",
    "12.3 s")."""
    if seconds < ms_below:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.{digits}f} s"


def event_lines(event: ServerEvent, latency: float | None, raw: bool = False) -> list[StyledLine]:
    """The event as screen lines; the latency goes at the end of its last line.

    SMTP replies are coloured on every line; for POP3 and IMAP only the status
    line is, since what follows is message data. ``raw`` shows the exact bytes
    with CR, LF and controls escaped; otherwise the text is decoded and its
    control characters escaped (``safe_bytes``): a server never writes to the
    terminal.
    """
    return list(iter_event_lines(event, latency, raw))


def iter_event_lines(
    event: ServerEvent, latency: float | None, raw: bool = False
) -> Iterator[StyledLine]:
    """``event_lines`` one line at a time, for a caller that prints as it goes: a
    message of 64 MiB is never held as a list of lines beside its bytes."""
    style = STYLE_OF_CLASS[event.reply_class]
    colour_every_line = type(event).__name__ == "Reply"  # SMTP: every line carries the code
    data = event.raw
    line: StyledLine | None = None
    start = 0
    index = 0
    while start < len(data):
        end = data.find(b"\n", start)
        piece = data[start:] if end < 0 else data[start : end + 1]
        start = len(data) if end < 0 else end + 1
        if line is not None:
            yield line
        text = escape_bytes(piece) if raw else safe_bytes(piece.rstrip(b"\r\n"))
        line = [(style if index == 0 or colour_every_line else "body", text)]
        index += 1
    if line is None:
        line = [(style, "")]
    if latency is not None:
        line.append(("latency", f"  ({format_latency(latency)})"))
    yield line
    if getattr(event, "incomplete", False):
        yield [("warning", "(incomplete: the server closed the connection mid-reply)")]
    elif getattr(event, "truncated", False):
        yield [("warning", "(cut: the reply was longer than mailtalk keeps; the rest was dropped)")]


def to_ansi(line: StyledLine, colour: bool) -> str:
    if not colour:
        return "".join(text for _, text in line)
    out = []
    for style, text in line:
        code = ANSI.get(style, "")
        out.append(f"{code}{text}{RESET}" if code else text)
    return "".join(out)
