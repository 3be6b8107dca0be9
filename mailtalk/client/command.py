"""``mailtalk connect``, ``smtp``, ``pop3``, ``imap``: what the command line said, and
``run``, which talks to the server in the REPL on a terminal and in pipe mode otherwise.

``ConnectOptions`` is the command line as typed (``--starttls`` may be unsaid, ``-4``
and ``-6`` are flags); ``SessionOptions`` is what the live-session engine works with,
settled from it (STARTTLS by the URL's scheme, an address family).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailtalk.client.options import SessionOptions
from mailtalk.net.program import split_command
from mailtalk.net.target import Target
from mailtalk.net.tlsclient import ClientTLS

if TYPE_CHECKING:
    from mailtalk.environment import Environment


@dataclass(frozen=True)
class ConnectOptions:
    """The options of ``mailtalk connect`` and of its shortcuts, with their target."""

    target: Target
    starttls: bool | None = None  # None: as the URL's scheme says (on for submission://)
    insecure: bool = False
    cafile: str | None = None
    timeout: float = 30.0
    ipv4: bool = False
    ipv6: bool = False
    transcript: str | None = None
    show_secrets: bool = False
    raw: bool = False
    record: str | None = None
    resolve: tuple[tuple[str, str], ...] = ()  # --resolve NAME:ADDRESS
    pipe_command: str | None = None  # --pipe COMMAND, as typed
    proxy_from: tuple[str, int] | None = None  # --proxy-from ADDR[:PORT]
    proxy_version: int = 1
    xclient: tuple[tuple[str, str], ...] = ()  # --xclient NAME=VALUE, checked
    tls: ClientTLS = field(default_factory=ClientTLS)  # --sni, --tls-min, --cert, ...
    lang: str | None = None  # --lang; None: from the locale variables

    def session(self, debug: bool = False, language: str = "en") -> SessionOptions:
        """The engine's settings: STARTTLS decided, never on top of implicit TLS."""
        starttls = self.starttls
        if starttls is None:
            starttls = self.target.tls == "starttls"
        family = socket.AF_INET if self.ipv4 else socket.AF_INET6 if self.ipv6 else 0
        return SessionOptions(
            target=self.target,
            starttls=starttls and self.target.tls != "implicit",
            insecure=self.insecure,
            cafile=self.cafile,
            timeout=self.timeout,
            family=family,
            transcript=self.transcript,
            show_secrets=self.show_secrets,
            raw=self.raw,
            debug=debug,
            record=self.record,
            resolve=tuple(self.resolve),
            language=language,
            pipe_command=tuple(split_command(self.pipe_command)) if self.pipe_command else (),
            proxy_from=self.proxy_from,
            proxy_version=self.proxy_version,
            xclient=self.xclient,
            tls=self.tls,
        )


def run(options: ConnectOptions, env: Environment) -> int:
    """Talk to the server: the REPL when a person is at a terminal on both ends, else
    pipe mode (lines from standard input). Returns the exit status."""
    from mailtalk.language import choose_language

    # mailtalk's own words and the explanations: --lang, else the locale's language
    # (LANG=nl_NL.UTF-8: Dutch), as `explain` and `practice` choose
    language = choose_language(options.lang, None, env.variables)
    session = options.session(debug=env.debug, language=language)
    if env.interactive():
        from mailtalk.client.repl.app import Repl

        return Repl(session, env).run()
    from mailtalk.client.pipe import run_pipe_mode

    return run_pipe_mode(session, env)
