"""The event loop ``mailtalk serve`` runs on: uvloop when it is installed, else asyncio's.

uvloop (``pip install mailtalk[fast]``) does the loop's own work (readiness, reads,
writes, timers, accepting) in C on libuv; the servers' code is the same on either
loop. It is optional: asyncio's loop is always there, and every behaviour the tests
check holds on both. ``MAILTALK_EVENT_LOOP=asyncio`` keeps asyncio's loop even when
uvloop is installed (to compare the two, or to rule uvloop out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

# The environment variable that picks the loop: "asyncio", or "uvloop" (the default,
# when it can be imported).
LOOP_VARIABLE: Final = "MAILTALK_EVENT_LOOP"


def loop_factory(
    wanted: str = "", implicit_tls: bool = False
) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """(name, factory) of the loop to run, ``wanted`` being the variable's value:
    ``("uvloop", ...)`` unless it says ``asyncio``, uvloop is not installed, or a
    listener starts with TLS (``implicit_tls``: smtps, pop3s, imaps). On uvloop 0.23 the
    handshake of a connection accepted in plain text and paused in
    ``connection_made`` (what servers.session does, so that a handshake counts against
    the connection caps) never completes; STARTTLS works on both loops."""
    if wanted.strip().lower() != "asyncio" and not implicit_tls:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop
