"""The ``trickle NB/s`` fault: a transport that writes a session's replies slowly.

A :class:`TrickleTransport` stands in for a session's asyncio transport while a
trickle fault runs: what the server writes is held, and :meth:`drain` hands it to
the real transport a few bytes at a time, at the rate the rule names. Everything
else (``get_extra_info``, ``pause_reading``...) goes straight to the real
transport. ``close()`` waits for the held bytes, as a transport's own does;
``abort()`` drops them.

The trickle never outlives ``limit`` seconds (the session's idle timeout): a
server holds a silent client no longer than that, and a slow reply must not let
it hold one longer. Past it, :meth:`drain` returns False and the session ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

# The shortest pause between two writes: a fast trickle writes bigger pieces rather
# than waking the loop more often than 20 times a second.
MIN_INTERVAL: Final = 0.05


class TrickleTransport:
    """A transport whose writes go out at ``bytes_per_second``, once :meth:`drain` runs."""

    def __init__(self, transport: Any, bytes_per_second: float) -> None:
        self.real = transport
        self.bytes_per_second = float(bytes_per_second)
        self._held = bytearray()
        self._close_asked = False
        self._aborted = False

    # -- what the session calls ------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self._aborted:
            self._held += data

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def close(self) -> None:
        """Close once the held bytes are out (the drain does it)."""
        self._close_asked = True

    def is_closing(self) -> bool:
        return self._close_asked or self._aborted or bool(self.real.is_closing())

    def abort(self) -> None:
        self._aborted = True
        self._held.clear()
        self.real.abort()

    def get_write_buffer_size(self) -> int:
        return int(self.real.get_write_buffer_size()) + len(self._held)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    # -- the drain ---------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Bytes written by the server and not yet handed on."""
        return len(self._held)

    async def drain(self, limit: float, busy: Callable[[], bool]) -> bool:
        """Hand the held bytes on at the rate, until none are held and ``busy()`` (other
        work of the session that may still write) is False. False when ``limit``
        seconds passed first: the caller ends the session."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        interval = max(MIN_INTERVAL, 1.0 / self.bytes_per_second)
        sent = 0
        while not self._aborted and not self.real.is_closing():  # the client went
            now = loop.time()
            if now - started >= limit:
                return False
            if self._held:
                # What the rate allows by now, at least one byte: no drift from sleeps.
                due = max(sent + 1, int((now - started) * self.bytes_per_second))
                piece = bytes(self._held[: due - sent])
                del self._held[: len(piece)]
                sent += len(piece)
                self.real.write(piece)
            elif not busy():
                if self._close_asked:
                    self.real.close()
                return True
            await asyncio.sleep(interval if self._held else MIN_INTERVAL)
        return True
