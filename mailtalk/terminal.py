"""Facts about where output goes, and how text from the network is made fit for it, kept
apart so that fast commands (explain, mx) can use them without importing the protocol
and display modules."""

from __future__ import annotations

import os
import re
from typing import Final


def plain_width(default: int = 80) -> int:
    """How wide to wrap text written to a pipe: $COLUMNS when set (at least 40)."""
    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return default


# A mailtalk command at the end of a note ("replay it with mailtalk run FILE"): kept
# on one line, because a command broken over two lines cannot be pasted.
_COMMAND_TO_PASTE: Final = re.compile(r"\bmailtalk [a-z]+(?: \S+)+$")


# The notes (a Listener's kinds) that pipe mode and send wrap with wrap_words: mailtalk's
# long sentences, an explanation under a refusal and the TLS summary. Other notes stay a
# line each, as scripts read them (the REPL, for a person, wraps every note).
WRAPPED_NOTES: Final = frozenset({"explain", "tls"})


def wrap_words(
    text: str, width: int, first: str, rest: str, max_lines: int | None = None,
    tail: str = "",
) -> list[str]:
    """``text`` in lines of at most ``width - 1`` columns, broken between words, the
    first line led by ``first`` and the others by ``rest`` (a hanging indent).

    ``tail`` ends the last line and is never broken; with ``max_lines``, text that
    does not fit is cut at a word and marked with "…" before the tail.

    What must be copied whole is never broken, even if its line is then wider: a word
    longer than the line (a SHA-256 fingerprint, a path, a URL) and a mailtalk command
    that ends the text. The REPL's notes and explanations, pipe mode's and send's all
    wrap here, to the width ``Environment.width`` chose.
    """
    import textwrap

    glue = "\xa0"  # textwrap breaks only at ASCII white space
    command = _COMMAND_TO_PASTE.search(text)
    if command:
        text = text[: command.start()] + command.group().replace(" ", glue)
    tail_glued = tail.replace(" ", glue)
    lines = textwrap.wrap(
        text + (glue * 2 + tail_glued if tail else ""),
        width=max(20, width - 1),
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=False,
        max_lines=max_lines,
        placeholder=" …" + (glue * 2 + tail_glued if tail else ""),
    )
    return [line.replace(glue, " ") for line in lines] or [first.rstrip()]


def output_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be written, in one sentence; None when it can.

    Asked before any work is done (the command line's --transcript, --record and
    --junit, and ``mailtalk run``'s report), not after the conversation."""
    target = os.path.expanduser(path)
    if os.path.isdir(target):
        return f"{path} is a directory"
    if os.path.exists(target):
        return None if os.access(target, os.W_OK) else f"cannot write {path}: permission denied"
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        return f"cannot write {path}: there is no directory {directory}"
    if not os.access(directory, os.W_OK):
        return f"cannot write {path}: the directory {directory} is not writable"
    return None


# What must never reach a terminal, a log or a report as it came from the network:
# C0 controls but TAB (ESC starts escape sequences: window titles, screen clears;
# CR moves back over what was printed), DEL, C1 controls (0x9b is a one-character
# CSI for some terminals), the Unicode line and paragraph separators, and the
# bidirectional overrides and isolates that reorder what a line appears to say.
_UNSAFE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT: Final = {"\r": "\\r", "\n": "\\n"}  # as :raw shows them


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """Text that came from the network, fit to print anywhere: every control character
    is shown escaped as ``\\x1b``, ``\\x00``, ``\\r``, as ``:raw`` shows them (TAB stays,
    as cat and less show it).

    The one function every output path applies to what a server (or a certificate, or
    a log line) said: the REPL, pipe mode, send, diagnose, mx, mailtalk run's reports,
    explanations, JSON, transcripts and recordings. Escaped text passes through
    unchanged, so applying it twice is harmless. A line break is escaped too: split
    lines before, where lines are meant.
    """
    return _UNSAFE.sub(_escaped, text)


def safe_bytes(data: bytes) -> str:
    """Bytes from the wire as safe text: UTF-8 where valid, other bytes as ``\\xNN``, and
    controls escaped as by :func:`safe_text`."""
    return safe_text(data.decode("utf-8", "backslashreplace"))


def safe_strings(value: object) -> object:
    """``value`` (a JSON document: dicts, lists, strings, numbers) with every string in
    it made safe by :func:`safe_text`. JSON itself is no protection: it writes ESC as
    ``\\u001b``, which a reader (``jq -r``) turns back into ESC, and DEL and the C1
    controls as they are."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {key: safe_strings(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [safe_strings(item) for item in value]
    return value
