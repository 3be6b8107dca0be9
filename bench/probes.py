"""Hostile-client moves shared by ``bench/hostile_load.py`` and ``tests/servers``.

Kept free of other bench modules and of the package, so that a bench script (which
finds it beside itself on ``sys.path``) and a test (``from bench.probes import ...``,
the repository root being on pytest's path) import the same code.
"""

from __future__ import annotations

import socket
import time


def write_unread(
    sock: socket.socket, command: bytes, seconds: float, most: int, stalled_after: float = 2.0
) -> int:
    """Write ``command`` again and again, never reading the replies, for at most
    ``seconds`` and ``most`` bytes; the bytes the server took before it stopped reading
    (no progress for ``stalled_after`` seconds) or closed the connection."""
    sock.setblocking(False)
    block = command * (65536 // len(command))
    sent = 0
    deadline = time.monotonic() + seconds
    stuck_since: float | None = None
    while time.monotonic() < deadline and sent < most:
        try:
            sent += sock.send(block)
            stuck_since = None
        except BlockingIOError:
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since > stalled_after:
                break  # the server stopped reading
            time.sleep(0.01)
        except OSError:
            break  # the server closed the connection
    return sent
