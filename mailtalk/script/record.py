"""Write an interactive session down as a session file (``:record``, ``--record``).

The conversation is kept as script lines from the moment of connecting, so
``:record FILE`` in the middle of a session still writes a file that replays from
the start. Replies become expectations on their codes (``S: 250``, ``S: +OK``,
``S: NO``); ``:starttls`` and ``:auth`` become the ``starttls`` and ``auth``
directives; typed secrets (PASS, LOGIN's password, AUTH data) become variables
such as ``${PASSWORD}`` and are never written. The file is written whole, through a
temporary file and a rename, when recording stops.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from mailtalk.knowledge.replies import parse
from mailtalk.terminal import safe_text

_SECRET_MARK = "***"

# Until :record starts, the lines are kept only in case it does: at most this many
# (the connect line and the latest ones), so a server flooding the client with
# replies costs bounded memory. While recording, every line is kept for the file.
MAX_UNRECORDED_LINES: Final = 10_000


class SessionRecorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.path: str | None = None
        self.secrets: list[str] = []
        self._suspended = 0
        # `mailtalk run` turns it off: a replay needs no record of itself
        self.enabled = True
        self.dropped = 0  # lines let go before recording began

    def _keep(self, line: str) -> None:
        self.lines.append(line)
        if self.path is None and len(self.lines) > MAX_UNRECORDED_LINES:
            # the connect line stays; the oldest half of the rest goes, at once
            cut = len(self.lines) - MAX_UNRECORDED_LINES // 2
            del self.lines[1:cut]
            self.dropped += cut - 1

    # -- what the conversation tells it ----------------------------------------

    def connected(self, url: str, insecure: bool = False, cafile: str | None = None) -> None:
        options = " insecure" if insecure else ""
        if cafile:
            options += f" cafile={os.path.abspath(cafile)}"
        self._keep(f"connect {url}{options}")

    def sent(self, line: str, shown: str, protocol: str) -> None:
        if self._suspended or not self.enabled:
            return
        if shown != line:
            shown = shown.replace(_SECRET_MARK, "${" + self._secret_name(shown) + "}")
        self._keep(f"C: {shown}")

    def reply(self, raw: bytes, protocol: str) -> None:
        if self._suspended or not self.enabled:
            return
        # the code is on the first line (the last of an SMTP reply repeats it): a
        # message of 64 MiB after +OK is not decoded to find it
        end = raw.find(b"\n")
        text = raw[: len(raw) if end < 0 else end].decode("utf-8", "backslashreplace").strip()
        parsed = parse(text, protocol)  # type: ignore[arg-type]
        if parsed.code is None:
            self._keep("S: *")
        else:
            self._keep(f"S: {safe_text(parsed.code)}")

    def data_file(self, path: str) -> None:
        """``:file PATH`` after DATA: the replayable form is ``data PATH``."""
        if self.lines[-2:] == ["C: DATA", "S: 354"]:
            self.lines[-2:] = [f"data {os.path.abspath(path)}"]
        else:
            self.comment(f"a message was sent from {path} here; it cannot be replayed")

    def directive(self, text: str) -> None:
        self._keep(text)

    def comment(self, text: str) -> None:
        self._keep(f"# {safe_text(text)}")

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """While a meta-command speaks for itself (the directive replays it)."""
        self._suspended += 1
        try:
            yield
        finally:
            self._suspended -= 1

    def _secret_name(self, shown: str) -> str:
        verb = shown.split()[0].upper() if shown.split() else ""
        name = (
            "PASSWORD"
            if verb in ("PASS", "LOGIN", "APOP") or "LOGIN" in shown.upper()
            else "SECRET"
        )
        if name not in self.secrets:
            self.secrets.append(name)
        return name

    # -- the file -----------------------------------------------------------------

    def text(self) -> str:
        header = [
            f"# recorded by mailtalk on {time.strftime('%Y-%m-%d %H:%M:%S')}; "
            "replay with: mailtalk run FILE",
        ]
        for name in self.secrets:
            header.append(f"# needs ${{{name}}}: mailtalk run --var {name}=... or export {name}")
        lines = self.lines
        if self.dropped:
            lines = [
                lines[0],
                f"# {self.dropped} lines of this session were not kept before recording "
                "began (too many); this file does not replay from the start",
                *lines[1:],
            ]
        return "\n".join([*header, *lines]) + "\n"

    def write(self, path: str) -> None:
        """The whole file at once: a temporary file renamed over ``path``."""
        directory = os.path.dirname(os.path.abspath(path))
        handle, temporary = tempfile.mkstemp(prefix=".mailtalk-record-", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(self.text())
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
