"""Bytes a hostile server sends to take over the terminal, and checks that none got out.

``HOSTILE`` sets the window title (OSC 0, ended by BEL), clears the screen, carries a
NUL, a C1 CSI (U+009B, which some terminals take as ESC [), DEL, a bare CR (which
moves back over what was printed) and a right-to-left override. mailtalk must show
each of them escaped, as ``SHOWN``, wherever it prints what a server said.
"""

from __future__ import annotations

import json
import re

HOSTILE = b"\x1b]0;pwned\x07 \x1b[2J \x00 \xc2\x9b \x7f x\ry \xe2\x80\xae end"
SHOWN = "\\x1b]0;pwned\\x07 \\x1b[2J \\x00 \\x9b \\x7f x\\ry \\u202e end"

# What must not be in output: C0 controls but TAB and LF, DEL, C1, line and paragraph
# separators, bidi overrides and isolates (the set mailtalk.terminal.safe_text escapes).
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def forbidden(text: str | bytes) -> list[str]:
    """The forbidden characters in ``text``, as their reprs (for assertion messages)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [repr(char) for char in _FORBIDDEN.findall(text)]


def assert_clean(text: str | bytes) -> None:
    """No control character (but TAB and LF) in ``text``."""
    found = forbidden(text)
    assert not found, f"raw control characters reached the output: {found[:10]}"


def assert_clean_json(text: str) -> None:
    """Every line of ``text`` is JSON whose strings hold no control character: JSON's own
    \\u001b escape is no protection, a reader (jq -r) turns it back into ESC."""
    assert_clean(text)
    for line in text.splitlines():
        if line.strip():
            for string in _strings(json.loads(line)):
                assert_clean(string)


def json_strings(text: str) -> str:
    """Every string in the JSON lines of ``text``, decoded, one a line."""
    return "\n".join(s for line in text.splitlines() if line.strip()
                     for s in _strings(json.loads(line)))


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [key, *_strings(item)]]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def assert_shown(text: str | bytes) -> None:
    """The hostile bytes are there, escaped (not silently dropped)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    assert SHOWN in text, text[-3000:]
