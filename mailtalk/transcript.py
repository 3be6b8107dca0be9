"""The conversation written down as ``C:``/``S:`` lines, secrets redacted.

The same shape as the session files the script runner reads, so a transcript is
also the start of a test.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mailtalk import __version__
from mailtalk.errors import UsageError
from mailtalk.terminal import safe_text


@dataclass(frozen=True, slots=True)
class Entry:
    when: float
    direction: str  # "C" client, "S" server, "#" a note from mailtalk
    text: str


class Transcript:
    """Keeps every line of the session; optionally appends them to a file as they come."""

    def __init__(self, url: str, path: str | None = None) -> None:
        self.url = url
        self.entries: list[Entry] = []
        self._file: IO[str] | None = None
        if path:
            try:
                self._file = _open_private(path, append=True)
            except OSError as error:  # --transcript checks first; this is a race's answer
                reason = (error.strerror or str(error)).lower()
                raise UsageError(f"cannot write the transcript {path}: {reason}") from None
            self._file.write(self.header())

    def header(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return f"# mailtalk {__version__} transcript of {self.url}, {stamp}\n"

    def add(self, direction: str, text: str) -> None:
        """One event: a line sent, a reply (its lines joined by CRLF or LF), a note.

        What the server said is kept with its control characters escaped
        (``safe_text``), so that ``cat transcript`` shows it and does nothing else.
        """
        lines = text.split("\n")
        text = "\n".join(safe_text(line.removesuffix("\r")) for line in lines)
        entry = Entry(time.time(), direction, text)
        self.entries.append(entry)
        if self._file is not None:
            self._file.write(_format(entry))
            self._file.flush()

    def render(self) -> str:
        return self.header() + "".join(_format(entry) for entry in self.entries)

    def save(self, path: str) -> None:
        """Write the whole transcript to ``path`` atomically: no partial file on failure."""
        target = Path(path).expanduser()
        directory = target.parent if str(target.parent) else Path(".")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
                handle.write(self.render())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _format(entry: Entry) -> str:
    lines = entry.text.split("\n") if entry.text else [""]
    return "".join(f"{entry.direction}: {line}".rstrip(" ") + "\n" for line in lines)


def _open_private(path: str, append: bool) -> IO[str]:
    """Open a file readable by its owner only: transcripts can hold addresses and mail."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(Path(path).expanduser(), flags, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", buffering=1)
