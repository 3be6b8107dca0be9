"""qmail's ``control/smtproutes``: where to deliver a domain's mail instead of its MX.

``domain:host[:port]`` lines, ``.suffix:`` for subdomains, ``:host[:port]`` for every
other domain; ``host`` may be an address literal ``[127.0.0.3]``; an empty host
(``domain:``) means "use MX". As MX records carry no port, this is how a practice
world of several servers on 127.0.0.x, or on one address with different ports, says
where each domain's server listens. Read by the onward delivery (``delivery.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("mailtalk.delivery")

SMTPROUTES = "smtproutes"


@dataclass(frozen=True)
class SMTPRoute:
    host: str | None  # None: the entry says "use MX" (``domain:``)
    port: int | None = None


def parse_smtproutes(text: str) -> dict[str, SMTPRoute]:
    """``domain:host[:port]`` lines (qmail's smtproutes); ``#`` comments and blanks skipped."""
    routes: dict[str, SMTPRoute] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            log.warning("smtproutes line %d: no ':' in %r; ignored", number, line)
            continue
        rest = rest.strip()
        port: int | None = None
        if rest.startswith("["):
            host, bracket, tail = rest.partition("]")
            host += bracket
            tail = tail.strip()
            if tail.startswith(":") and tail[1:].strip():
                port_text = tail[1:].strip()
            elif tail and tail != ":":
                log.warning("smtproutes line %d: cannot read %r; ignored", number, line)
                continue
            else:
                port_text = ""
        else:
            host, _, port_text = rest.partition(":")
            port_text = port_text.strip()
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                log.warning("smtproutes line %d: bad port %r; ignored", number, port_text)
                continue
            port = int(port_text)
        routes.setdefault(key.strip().lower(), SMTPRoute(host.strip() or None, port))
    return routes


def read_smtproutes(root: Path) -> dict[str, SMTPRoute]:
    try:
        text = (Path(root) / "control" / SMTPROUTES).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return parse_smtproutes(text)


def find_route(routes: dict[str, SMTPRoute], domain: str) -> SMTPRoute | None:
    """The entry for ``domain`` as qmail-remote looks it up, or None (use MX)."""
    domain = domain.lower()
    keys = [domain] + [domain[i:] for i, c in enumerate(domain) if c == "."] + [""]
    for key in keys:
        if key in routes:
            return routes[key]
    return None
