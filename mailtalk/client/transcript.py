"""The conversation written down as ``C:``/``S:`` lines, secrets redacted.

The same shape as the session files the script runner reads, so a transcript is
also the start of a test.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Generic, TypeVar

from mailtalk import __version__
from mailtalk.errors import UsageError
from mailtalk.terminal import safe_bytes, safe_text

# What a session keeps in memory of its transcript (for :save): the last 16 MiB of
# text or 100,000 entries, whichever is less. A server flooding the client (an
# endless "* OK" stream) costs no more than that; --transcript FILE keeps it all.
MAX_KEPT_CHARS: Final = 16 * 1024 * 1024
MAX_KEPT_ENTRIES: Final = 100_000

T = TypeVar("T")


class Tail(Generic[T]):
    """The most recent items, within a budget of count and size: a bounded memory of a
    conversation that may never end. ``dropped`` counts what was let go, oldest first.

    ``size`` gives an item's cost (characters, bytes); an item bigger than the whole
    budget is still kept, alone, so the latest thing said is never lost. Iterating
    gives the kept items, oldest first.
    """

    def __init__(self, max_items: int, max_size: int, size: Callable[[T], int]) -> None:
        self.max_items = max_items
        self.max_size = max_size
        self._size_of = size
        self._items: deque[T] = deque()
        self._size = 0
        self.dropped = 0

    def append(self, item: T) -> None:
        self._items.append(item)
        self._size += self._size_of(item)
        while len(self._items) > 1 and (
            len(self._items) > self.max_items or self._size > self.max_size
        ):
            self._size -= self._size_of(self._items.popleft())
            self.dropped += 1

    def clear(self) -> None:
        self._items.clear()
        self._size = 0
        self.dropped = 0

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> T:
        return self._items[index]


@dataclass(frozen=True, slots=True)
class Entry:
    when: float
    direction: str  # "C" client, "S" server, "#" a note from mailtalk
    text: str


class Transcript:
    """Keeps the session's lines, the latest ``max_chars`` of them (for ``:save``);
    optionally appends every line to a file as it comes."""

    def __init__(
        self, url: str, path: str | None = None, max_chars: int = MAX_KEPT_CHARS
    ) -> None:
        self.url = url
        self.max_chars = max_chars
        self.entries: Tail[Entry] = Tail(
            MAX_KEPT_ENTRIES, max_chars, lambda entry: len(entry.text)
        )
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

    def add_raw(self, direction: str, data: bytes) -> None:
        """What the server sent for one event, line by line: every line to the file,
        the first ``max_chars`` of them in memory, never the whole of a huge
        message as one more copy of it."""
        kept: list[str] = []
        size = 0
        cut = False
        start = 0
        stop = len(data.rstrip(b"\r\n"))  # an index: no copy of the data
        while True:
            end = data.find(b"\n", start, stop)
            line = safe_bytes(data[start : stop if end < 0 else end].removesuffix(b"\r"))
            if self._file is not None:
                self._file.write(f"{direction}: {line}".rstrip(" ") + "\n")
            if size + len(line) <= self.max_chars:
                kept.append(line)
                size += len(line) + 1
            else:
                cut = True
            if end < 0:
                break
            start = end + 1
        if cut:
            kept.append("(the rest of this reply is in --transcript FILE only)"
                        if self._file is not None else "(the rest of this reply was not kept)")
        if self._file is not None:
            self._file.flush()
        self.entries.append(Entry(time.time(), direction, "\n".join(kept)))

    def render(self) -> str:
        dropped = ""
        if self.entries.dropped:
            dropped = (
                f"# {self.entries.dropped} earlier entries were not kept in memory "
                f"(mailtalk keeps the last {_size(self.max_chars)}; "
                "--transcript FILE keeps everything)\n"
            )
        return self.header() + dropped + "".join(_format(entry) for entry in self.entries)

    def save(self, path: str) -> int:
        """Write the whole transcript to ``path`` atomically: no partial file on failure.

        Returns the number of lines written (a multi-line reply is several)."""
        target = Path(path).expanduser()
        directory = target.parent if str(target.parent) else Path(".")
        text = self.render()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return text.count("\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _size(chars: int) -> str:
    return f"{chars // (1024 * 1024)} MiB" if chars >= 1024 * 1024 else f"{chars} characters"


def _format(entry: Entry) -> str:
    lines = entry.text.split("\n") if entry.text else [""]
    return "".join(f"{entry.direction}: {line}".rstrip(" ") + "\n" for line in lines)


def _open_private(path: str, append: bool) -> IO[str]:
    """Open a file readable by its owner only: transcripts can hold addresses and mail."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(Path(path).expanduser(), flags, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", buffering=1)
