"""Everything a session needs to know, gathered from the command line."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from mailtalk.net.target import Target


@dataclass(frozen=True)
class SessionOptions:
    target: Target
    starttls: bool  # start TLS right after the greeting
    insecure: bool = False
    cafile: str | None = None
    timeout: float = 30.0
    family: int = 0
    transcript: str | None = None
    show_secrets: bool = False
    raw: bool = False
    debug: bool = False
    record: str | None = None  # write the session as a session file here
    source_address: str | None = None  # connect from this local address

    @classmethod
    def from_cli(cls, target: Target, **options: Any) -> SessionOptions:
        starttls = options.get("starttls")
        if starttls is None:
            starttls = target.tls == "starttls"
        family = 0
        if options.get("ipv4"):
            family = socket.AF_INET
        elif options.get("ipv6"):
            family = socket.AF_INET6
        return cls(
            target=target,
            starttls=bool(starttls) and target.tls != "implicit",
            insecure=bool(options.get("insecure")),
            cafile=options.get("cafile"),
            timeout=float(options.get("timeout") or 30.0),
            family=family,
            transcript=options.get("transcript"),
            show_secrets=bool(options.get("show_secrets")),
            raw=bool(options.get("raw")),
            debug=bool(options.get("debug")),
            record=options.get("record"),
        )
