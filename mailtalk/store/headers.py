"""A message's header block: where it ends, reading just it, and a cache of them.

IMAP clients list a folder with FETCH of a few header fields for every message;
reading only each message's header block, and keeping the blocks in a bounded
process-wide cache (:data:`HEADER_CACHE`), lets a second listing read no message
file at all. :meth:`Mailbox.read_header
<mailtalk.store.mailbox.Mailbox.read_header>` decides when a cached block may be
served. Stdlib only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

_HEADER_END = re.compile(rb"\n\r?\n")
_HEADER_READ_SIZE = 8192


def _header_length(data: bytes) -> int:
    """Where the header block of ``data`` ends (after its blank line); -1 if not found."""
    if data.startswith(b"\n"):
        return 1
    if data.startswith(b"\r\n"):
        return 2
    match = _HEADER_END.search(data)
    return -1 if match is None else match.end()


def read_header_block(read: Callable[[int], bytes]) -> bytes:
    """The header block read with ``read(size)``: up to and including the blank line
    ending it, or everything if there is none."""
    data = read(_HEADER_READ_SIZE)
    while True:
        end = _header_length(data)
        if end >= 0:
            return data[:end]
        more = read(max(_HEADER_READ_SIZE, len(data)))
        if not more:
            return data
        data += more


class _HeaderCache:
    """Header blocks by message, least recently used dropped beyond ``max_bytes``.

    Keyed by (folder, UIDVALIDITY, UID, filename base, size): a message's bytes
    never change under its UID, so an entry is never stale; whether its file is
    still there is for the reader to check.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int, int, str, int], bytes] = {}
        self._bytes = 0

    def get(self, key: tuple[str, int, int, str, int]) -> bytes | None:
        with self._lock:
            value = self._entries.pop(key, None)
            if value is not None:
                self._entries[key] = value
            return value

    def put(self, key: tuple[str, int, int, str, int], value: bytes) -> None:
        cost = len(value) + 200  # the key and the entry
        if cost > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old) + 200
            self._entries[key] = value
            self._bytes += cost
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._bytes -= len(self._entries.pop(oldest)) + 200

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


HEADER_CACHE = _HeaderCache(64 * 1024 * 1024)
