"""Everything a session needs to know: the settings the live-session engine works with.

Built from a command's typed options (``client.command.ConnectOptions.session()`` for
``mailtalk connect``), or directly by the features that drive a conversation themselves
(``mailtalk run``, ``send``, ``diagnose``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailtalk.net.target import Target
from mailtalk.net.tlsclient import ClientTLS


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
    # the name sent as SNI and verified, when the target is an address (the MX probe)
    server_hostname: str | None = None
    # (host name, address) pairs connected to without the system's resolver: the
    # practice world's host names (net.transport.TransportOptions.resolve)
    resolve: tuple[tuple[str, str], ...] = ()
    # (host name, port, the port to connect to instead) for :open: the practice world's
    # services on ports of their own (:open pop3://mx.example.net reaches its POP3)
    port_moves: tuple[tuple[str, int, int], ...] = ()
    # the language of the explanations under replies ("en", "nl"; mailtalk/language.py)
    language: str = "en"
    # --pipe: a program's stdin/stdout instead of the target's socket (words, no shell)
    pipe_command: tuple[str, ...] = ()
    # --proxy-from/--proxy-version: a PROXY header naming this (address, port) first
    proxy_from: tuple[str, int] | None = None
    proxy_version: int = 1
    # --sni, --tls-min/--tls-max, --ciphers, --cert/--key, --tls-dump
    tls: ClientTLS = field(default_factory=ClientTLS)
    # --xclient NAME=VALUE (SMTP): Postfix XCLIENT attributes sent after EHLO
    xclient: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_target(
        cls,
        target: Target,
        *,
        insecure: bool = False,
        cafile: str | None = None,
        timeout: float = 30.0,
        source_address: str | None = None,
        server_hostname: str | None = None,
        tls: ClientTLS | None = None,
        pipe_command: tuple[str, ...] = (),
        proxy_from: tuple[str, int] | None = None,
        proxy_version: int = 1,
        language: str = "en",
    ) -> SessionOptions:
        """A one-shot job's session (send, diagnose, mx --probe): no transcript or
        recording, and TLS started by the job's own steps, never on connect."""
        return cls(
            target=target,
            starttls=False,
            insecure=insecure,
            cafile=cafile,
            timeout=timeout,
            source_address=source_address,
            server_hostname=server_hostname,
            tls=tls or ClientTLS(),
            pipe_command=pipe_command,
            proxy_from=proxy_from,
            proxy_version=proxy_version,
            language=language,
        )
