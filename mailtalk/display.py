"""How server events look on screen: lines with a style name, shared by REPL and pipe mode.

Styles are names ("positive", "permanent", ...) so the REPL can map them to
prompt_toolkit styles and the pipe mode to ANSI colours (or none, for NO_COLOR).
"""

from __future__ import annotations

import os
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


def color_enabled(stream_is_tty: bool) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream_is_tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def format_latency(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def event_lines(event: ServerEvent, latency: float | None, raw: bool = False) -> list[StyledLine]:
    """The event as screen lines; the latency goes at the end of its last line.

    SMTP replies are coloured on every line; for POP3 and IMAP only the status
    line is, since what follows is message data. ``raw`` shows the exact bytes
    with CR, LF and controls escaped; otherwise the text is decoded and its
    control characters escaped (``safe_bytes``): a server never writes to the
    terminal.
    """
    style = STYLE_OF_CLASS[event.reply_class]
    colour_every_line = type(event).__name__ == "Reply"  # SMTP: every line carries the code
    chunks = event.raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
        pieces = [chunk + b"\n" for chunk in chunks]
    else:
        pieces = [chunk + b"\n" for chunk in chunks[:-1]] + chunks[-1:]
    lines: list[StyledLine] = []
    for index, piece in enumerate(pieces):
        text = escape_bytes(piece) if raw else safe_bytes(piece.rstrip(b"\r\n"))
        line_style = style if index == 0 or colour_every_line else "body"
        lines.append([(line_style, text)])
    if not lines:
        lines.append([(style, "")])
    if latency is not None:
        lines[-1].append(("latency", f"  ({format_latency(latency)})"))
    if getattr(event, "incomplete", False):
        lines.append([("warning", "(incomplete: the server closed the connection mid-reply)")])
    elif getattr(event, "truncated", False):
        lines.append(
            [("warning", "(cut: the reply was longer than mailtalk keeps; the rest was dropped)")]
        )
    return lines


def to_ansi(line: StyledLine, colour: bool) -> str:
    if not colour:
        return "".join(text for _, text in line)
    out = []
    for style, text in line:
        code = ANSI.get(style, "")
        out.append(f"{code}{text}{RESET}" if code else text)
    return "".join(out)
