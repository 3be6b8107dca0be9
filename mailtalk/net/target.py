"""Where to connect: ``smtp://user@host:port`` URLs and ``HOST[:PORT]`` arguments.

A Unix-domain socket is ``unix:/path`` in place of HOST[:PORT], and ``smtp:unix:/path``
(any scheme) as a URL.

LMTP (RFC 2033) is SMTP's core in a mode of its own, so an ``lmtp://HOST[:PORT]``
(default port 24) or ``lmtp:unix:/path`` target is protocol ``smtp`` with ``lmtp``
set: every SMTP feature (completion, explanations, send) applies, LHLO in place of EHLO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote

from mailtalk.language import N_, WordedError

TLSMode = Literal["none", "starttls", "implicit"]


@dataclass(frozen=True, slots=True)
class Scheme:
    protocol: Literal["smtp", "pop3", "imap"]
    port: int
    tls: TLSMode
    lmtp: bool = False


# The URL schemes mailtalk knows, their protocol, default port and how TLS starts.
SCHEMES: Final[dict[str, Scheme]] = {
    "smtp": Scheme("smtp", 25, "none"),
    "smtps": Scheme("smtp", 465, "implicit"),
    "submission": Scheme("smtp", 587, "starttls"),
    "submissions": Scheme("smtp", 465, "implicit"),
    "lmtp": Scheme("smtp", 24, "none", lmtp=True),  # RFC 2033 4: port 24 (never on the Internet)
    "pop3": Scheme("pop3", 110, "none"),
    "pop3s": Scheme("pop3", 995, "implicit"),
    "imap": Scheme("imap", 143, "none"),
    "imaps": Scheme("imap", 993, "implicit"),
}

IMPLICIT_TLS_PORT: Final = {"smtp": 465, "pop3": 995, "imap": 993}
PLAIN_PORT: Final = {"smtp": 25, "pop3": 110, "imap": 143}


class TargetError(WordedError):
    """A URL or HOST[:PORT] that cannot be used; the message says why in one line (a
    template and its values: ``said(gettext)`` in a person's language)."""


@dataclass(frozen=True, slots=True)
class Target:
    protocol: Literal["smtp", "pop3", "imap"]
    host: str
    port: int
    tls: TLSMode
    user: str | None = None
    socket_path: str | None = None  # a Unix-domain socket instead of host and port
    lmtp: bool = False  # LMTP (RFC 2033) rather than SMTP: LHLO, a reply per recipient

    @property
    def display(self) -> str:
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        scheme = {
            ("smtp", "none"): "smtp",
            ("smtp", "starttls"): "submission",
            ("smtp", "implicit"): "smtps",
            ("pop3", "implicit"): "pop3s",
            ("imap", "implicit"): "imaps",
        }.get((self.protocol, self.tls), self.protocol)
        if self.lmtp:
            scheme = "lmtp"
        if self.socket_path is not None:
            return f"{scheme}:{self.display}"
        user = f"{self.user}@" if self.user else ""
        return f"{scheme}://{user}{self.display}"

    def with_socket(self, path: str) -> Target:
        """This target, reached through the Unix-domain socket at ``path``."""
        return Target(self.protocol, path, 0, self.tls, self.user, path, self.lmtp)


def _socket_path(text: str) -> str:
    """The path of ``unix:/path``."""
    path = text.removeprefix("unix:")
    if not path:
        raise TargetError(N_("no socket path in {text!r}; use unix:/path/to/socket"), text=text)
    return path


def _refuse_url(text: str) -> None:
    """A URL where HOST[:PORT] belongs would be read as an IPv6 address (two colons),
    as the port "//host" or as the user "imaps://alice": say what it is instead."""
    if "://" in text:
        raise TargetError(N_("{text!r} is a URL; give HOST[:PORT] here"), text=text)


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address, as (host, port)."""
    text = text.strip()
    if not text:
        raise TargetError(N_("no host given"))
    _refuse_url(text)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise TargetError(N_("unclosed [ in {text!r}"), text=text)
        if rest and not rest.startswith(":"):
            raise TargetError(N_("unexpected {rest!r} after ] in {text!r}"), rest=rest, text=text)
        port_text = rest[1:]
    elif text.count(":") > 1:  # a bare IPv6 address has no port
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise TargetError(N_("no host in {text!r}"), text=text)
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(N_("{port!r} is not a port number (1-65535)"), port=port_text)
    return host, int(port_text)


def parse_url(url: str) -> Target:
    """A target from ``scheme://[user@]host[:port][/...]`` or ``scheme:unix:/path``."""
    scheme, colon, after = url.partition(":")
    if colon and after.startswith("unix:"):
        return parse_url(f"{scheme}://localhost").with_socket(_socket_path(after))
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise TargetError(N_("{url!r} is not a URL; use e.g. smtp://{url} (schemes: {schemes})"),
                          url=url, schemes=", ".join(SCHEMES))
    known = SCHEMES.get(scheme.lower())
    if known is None:
        raise TargetError(N_("unknown scheme {scheme!r}; use one of: {schemes}"), scheme=scheme,
                          schemes=", ".join(SCHEMES))
    authority = rest.split("/", 1)[0]
    user: str | None = None
    if "@" in authority:
        user_part, _, authority = authority.rpartition("@")
        user = unquote(user_part.split(":", 1)[0]) or None
    host, port = split_host_port(authority, known.port)
    return Target(known.protocol, host, port, known.tls, user, lmtp=known.lmtp)


def parse_shortcut(
    protocol: Literal["smtp", "pop3", "imap"], host_port: str, implicit_tls: bool
) -> Target:
    """A target from ``mailtalk smtp HOST[:PORT]`` and friends."""
    default = IMPLICIT_TLS_PORT[protocol] if implicit_tls else PLAIN_PORT[protocol]
    if host_port.startswith("unix:"):
        tls_mode: TLSMode = "implicit" if implicit_tls else "none"
        path = _socket_path(host_port)
        return Target(protocol, path, 0, tls_mode, None, path)
    _refuse_url(host_port)  # before the user: no user "imaps://alice" at "host"
    user: str | None = None
    if "@" in host_port and not host_port.startswith("["):
        user, _, host_port = host_port.rpartition("@")
    host, port = split_host_port(host_port, default)
    tls: TLSMode = "implicit" if implicit_tls else "none"
    if protocol == "smtp" and port == 587 and not implicit_tls:
        tls = "starttls"
    return Target(protocol, host, port, tls, user or None)
