"""SASL's marker lines (``=``, ``*``, the empty answer) against the real servers and ours.

The same raw lines go to Dovecot (POP3 110, IMAP 143), Postfix's submission (587,
after STARTTLS; its SASL is Dovecot's), Exim's submission (2587, after STARTTLS; its
own plaintext authenticators) and Mailutils' imap4d (2143; no SASL-IR, so only the
lines after a challenge; its pop3d has no AUTH at all), and to ``mailtalk serve``.
What is compared is the class of each reply (SMTP's code; +OK or -ERR; OK, NO or
BAD; a challenge), not its words.

The recorded classes are checked live, so a real server that changes is noticed; ours
must give the class of the majority of the real servers of its protocol, and where
they disagree, the RFC's (RFC 4954 4 for SMTP, RFC 5034 4 for POP3, RFC 4959 3 and
RFC 9051 6.2.2 for IMAP): ``=`` is an empty initial response, an answer after a
challenge is plain base64 (the empty line is an empty answer, ``=`` is not base64),
``*`` there cancels (501, -ERR, BAD), and a line that is not base64 is a syntax error
(501, BAD) while one the mechanism refuses is a failed login (535, NO).

Each connection comes from its own loopback address: Dovecot slows down every further
login from an address that failed one (up to 15 s), which would slow this test and any
other test logging in to Dovecot from 127.0.0.1.
"""

from __future__ import annotations

import base64
import itertools
import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.interop.conftest import Peer, RealServers

pytestmark = pytest.mark.interop

TIMEOUT = 30.0  # Dovecot holds a failed login's reply for a while (auth_failure_delay)
PLAIN_OK = base64.b64encode(b"\0alice\0secret").decode()

# Each case: the command's argument after PLAIN (None: none) and the answer lines.
CASES: Final[dict[str, tuple[str | None, tuple[str, ...]]]] = {
    "equals-first": ("=", ()),  # an empty initial response
    "star-first": ("*", ()),  # "*" where an initial response goes
    "star-after": (None, ("*",)),  # the cancel
    "equals-after": (None, ("=",)),  # "=" after a challenge
    "empty-after": (None, ("",)),  # the empty answer
}
VERBS: Final = {"smtp": "AUTH", "pop3": "AUTH", "imap": "a AUTHENTICATE"}

# What each real server answered (Debian 12: Dovecot 2.3.19, Postfix 3.7, Exim 4.96,
# Mailutils 3.15), checked by test_real_servers_reply_as_recorded.
REAL: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "Dovecot POP3": ("pop3", {"equals-first": "-ERR", "star-first": "-ERR", "star-after": "-ERR",
                              "equals-after": "-ERR", "empty-after": "-ERR"}),
    "Dovecot IMAP": ("imap", {"equals-first": "NO", "star-first": "BAD", "star-after": "BAD",
                              "equals-after": "BAD", "empty-after": "NO"}),
    "Mailutils IMAP": ("imap", {"star-after": "NO", "equals-after": "NO", "empty-after": "+"}),
    "Postfix": ("smtp", {"equals-first": "535", "star-first": "535", "star-after": "501",
                         "equals-after": "535", "empty-after": "535"}),
    "Exim": ("smtp", {"equals-first": "535", "star-first": "501", "star-after": "501",
                      "equals-after": "501", "empty-after": "535"}),
}

# What the RFCs ask for: ours must say this.
RFC: Final[dict[str, dict[str, str]]] = {
    "pop3": {"equals-first": "-ERR", "star-first": "-ERR", "star-after": "-ERR",
             "equals-after": "-ERR", "empty-after": "-ERR"},
    "imap": {"equals-first": "NO", "star-first": "BAD", "star-after": "BAD",
             "equals-after": "BAD", "empty-after": "NO"},
    "smtp": {"equals-first": "535", "star-first": "501", "star-after": "501",
             "equals-after": "501", "empty-after": "535"},
}

# Where the real servers disagree with each other, and so ours follow the RFC.
DISAGREE: Final[dict[tuple[str, str], str]] = {
    ("smtp", "star-first"): "Postfix answers whatever Dovecot's SASL refuses with 535, "
                            "even a line that is not base64; Exim and RFC 4954 4 say 501",
    ("smtp", "equals-after"): "the same: Postfix 535, Exim and RFC 4954 4 501",
    ("imap", "star-after"): "Mailutils (GNU SASL) says NO to the cancel; Dovecot and RFC "
                            "3501/9051 6.2.2 say BAD",
    ("imap", "equals-after"): "Mailutils NO; Dovecot and RFC 9051 6.2.2 (a non-terminal "
                              "\"=\" is invalid base64) BAD",
    ("imap", "empty-after"): "Mailutils (GNU SASL) challenges again; Dovecot fails the "
                             "empty PLAIN answer with NO",
}

_sources = itertools.count(1)


@dataclass(frozen=True)
class Server:
    protocol: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None  # STARTTLS first, with this context


def connect(server: Server) -> socket.socket:
    """A connection from a loopback address of its own (see the module's words), or
    from the default one where the system has only 127.0.0.1."""
    number = next(_sources)
    source = f"127.0.{200 + number // 250}.{1 + number % 250}"
    try:
        return socket.create_connection((server.host, server.port), TIMEOUT, (source, 0))
    except OSError:
        return socket.create_connection((server.host, server.port), TIMEOUT)


class Talk:
    """One session on a raw socket, reading each reply's last line."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sock = connect(server)
        self.stream = self.sock.makefile("rb")
        self.last("greeting")
        if server.protocol == "smtp":
            self.say("EHLO client.test")
            if server.tls is not None:
                assert self.say("STARTTLS").startswith("220")
                self.stream.close()
                self.sock = server.tls.wrap_socket(self.sock, server_hostname=server.host)
                self.stream = self.sock.makefile("rb")
                self.say("EHLO client.test")

    def last(self, what: str) -> str:
        protocol = self.server.protocol
        while True:
            line = self.stream.readline()
            assert line, f"{self.server} closed the connection awaiting the {what}"
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if protocol == "smtp" and text[3:4] == "-":
                continue
            if protocol == "imap" and text.startswith("* ") and what != "greeting":
                continue
            return text

    def say(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.last(repr(line))

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def reply_class(protocol: str, reply: str) -> str:
    if reply.startswith("+ ") or reply == "+":
        return "+"  # a challenge (IMAP's and POP3's continuation)
    if protocol == "smtp":
        return "+" if reply.startswith("334") else reply[:3]
    if protocol == "pop3":
        return reply.split(" ", 1)[0]
    return reply.split(" ", 2)[1]  # the tagged reply's status


def dialogue(talk: Talk, case: str) -> str:
    """The class of the reply that ends the case's dialogue."""
    protocol = talk.server.protocol
    initial, answers = CASES[case]
    reply = talk.say(f"{VERBS[protocol]} PLAIN" + ("" if initial is None else f" {initial}"))
    for answer in answers:
        assert reply_class(protocol, reply) == "+", reply
        reply = talk.say(answer)
    return reply_class(protocol, reply)


def play(server: Server, case: str) -> str:
    talk = Talk(server)
    try:
        return dialogue(talk, case)
    finally:
        talk.close()


def real_server(name: str, request: pytest.FixtureRequest) -> Server:
    if name.startswith(("Dovecot", "Postfix")):
        real: RealServers = request.getfixturevalue("real_servers")
        if name == "Dovecot POP3":
            return Server("pop3", real.host, real.pop3)
        if name == "Dovecot IMAP":
            return Server("imap", real.host, real.imap)
        return Server("smtp", real.host, real.submission, real.ssl_context())
    if name == "Exim":
        exim: Peer = request.getfixturevalue("exim")
        return Server("smtp", exim.host, exim.port("submission"), exim.ssl_context())
    mailutils: Peer = request.getfixturevalue("mailutils")
    return Server("imap", mailutils.host, mailutils.port("imap"))


@pytest.mark.parametrize(("name", "case"), [
    (name, case) for name, (_, cases) in REAL.items() for case in cases
])
def test_real_servers_reply_as_recorded(
    name: str, case: str, request: pytest.FixtureRequest
) -> None:
    assert play(real_server(name, request), case) == REAL[name][1][case]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("sasl-lines") / "root"
    with run_servers(root, smtp=0, pop3=0, imap=0, users=[("alice", "secret")]) as servers:
        yield servers


@pytest.mark.parametrize("protocol", sorted(RFC))
@pytest.mark.parametrize("case", sorted(CASES))
def test_ours_reply_as_the_real_majority_and_the_rfc(
    ours: RunningServers, protocol: str, case: str
) -> None:
    mine = play(Server(protocol, "127.0.0.1", ours.port(protocol)), case)
    assert mine == RFC[protocol][case]
    real = Counter(cases[case] for _, (kind, cases) in REAL.items()
                   if kind == protocol and case in cases)
    if len(real) > 1:  # they disagree: the RFC decides, and the table says why
        assert (protocol, case) in DISAGREE, (protocol, case, real)
    else:
        assert (protocol, case) not in DISAGREE
        assert real == Counter({mine: real.total()}), (protocol, case, real)


def test_ours_still_log_in_after_each_marker(ours: RunningServers) -> None:
    """Refused or cancelled, the session goes on: the next AUTH PLAIN logs in."""
    done = {"smtp": "235", "pop3": "+OK", "imap": "OK"}
    for protocol, case in itertools.product(sorted(RFC), sorted(CASES)):
        talk = Talk(Server(protocol, "127.0.0.1", ours.port(protocol)))
        try:
            dialogue(talk, case)
            logged_in = talk.say(f"{VERBS[protocol]} PLAIN {PLAIN_OK}")
            assert reply_class(protocol, logged_in) == done[protocol], (case, logged_in)
        finally:
            talk.close()
