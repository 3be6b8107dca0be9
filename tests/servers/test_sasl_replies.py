"""Every SASL answer the three servers can be given, and their replies to the byte.

SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE share one exchange
(:mod:`mailtalk.servers.sasl_exchange`); each says what happened in its own words.
These cases pin those words over real sockets for every branch of the exchange:
cancelled with ``*`` (after a challenge, or as the initial response), bad base64,
``=`` (the empty response), a PLAIN answer with the wrong number of fields, an
authorization identity, a mechanism's own complaint, a wrong and a right secret,
and LOGIN (SMTP only: POP3 and IMAP do not offer it).

The three read the lines alike, as the RFCs and the real servers do
(tests/interop/test_sasl_lines_real.py): ``=`` is the empty initial response but not
base64 after a challenge, ``*`` cancels after a challenge but is not base64 as an
initial response; a line that is not base64 is a syntax error (501, BAD), one that
decoded but that the mechanism refuses is a failed login (535, NO, -ERR [AUTH]).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
from collections.abc import Iterator

import pytest

from mailtalk.servers.api import RunningServers, run_servers

TIMEOUT = 5.0
USER, PASSWORD, TOKEN = "alice", "secret", "ya29.token-for-alice"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


PLAIN_OK = b64(f"\0{USER}\0{PASSWORD}")
PLAIN_WRONG = b64(f"\0{USER}\0nope")
PLAIN_TWO_FIELDS = b64(f"{USER}\0{PASSWORD}")
PLAIN_AS_BOB = b64(f"bob\0{USER}\0{PASSWORD}")
PLAIN_AS_SELF = b64(f"{USER}\0{USER}\0{PASSWORD}")
PLAIN_NOT_UTF8 = b64(f"\0{USER}\0".encode() + b"\xff\xfe")
JUNK = b64("junk")
# A PLAIN answer that decoded but is not three fields is a failed login, not a syntax error
MALFORMED_PLAIN_POP3 = b"-ERR [AUTH] Malformed PLAIN answer\r\n"
MALFORMED_PLAIN_SMTP = b"535 5.7.8 Malformed PLAIN answer\r\n"
MALFORMED_PLAIN_IMAP = b"a NO [AUTHENTICATIONFAILED] Malformed PLAIN response\r\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("sasl") / "root"
    with run_servers(root, smtp=0, pop3=0, imap=0, users=[(USER, PASSWORD), ("bob", "b")],
                     domains=["example.test"], oauth2_tokens={USER: TOKEN}) as running:
        yield running


class Peer:
    """A line client on a raw socket: what is compared is what went over the wire."""

    def __init__(self, servers: RunningServers, protocol: str) -> None:
        self.protocol = protocol
        self.sock = socket.create_connection(("127.0.0.1", servers.port(protocol)), TIMEOUT)
        self.buffer = b""
        if protocol == "smtp":
            self.reply()  # the greeting
            self.send("EHLO client.test")
            self.reply()
        else:
            self.line()  # the greeting

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            assert data, f"closed; so far {self.buffer!r}"
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def reply(self) -> bytes:
        """One reply: SMTP's last line, IMAP's continuation or tagged line, POP3's line."""
        while True:
            line = self.line()
            if self.protocol == "smtp" and line[3:4] == b"-":
                continue
            if self.protocol == "imap" and line.startswith(b"* "):
                continue
            return line

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def close(self) -> None:
        self.sock.close()


def cram_md5(challenge_line: bytes, prefix: bytes) -> str:
    challenge = base64.b64decode(challenge_line[len(prefix):].strip())
    digest = hmac.new(PASSWORD.encode(), challenge, hashlib.md5).hexdigest()
    return b64(f"{USER} {digest}")


# (protocol, [(line sent, the reply: whole, or its start when it has no CRLF)])
CASES: dict[str, tuple[str, list[tuple[str, bytes]]]] = {
    # -- POP3 (RFC 5034) ---------------------------------------------------------------
    "pop3-plain-ok": ("pop3", [(f"AUTH PLAIN {PLAIN_OK}", b"+OK Logged in")]),
    "pop3-plain-continued": ("pop3", [("AUTH PLAIN", b"+ \r\n"), (PLAIN_OK, b"+OK Logged in")]),
    "pop3-plain-wrong": ("pop3", [(f"AUTH PLAIN {PLAIN_WRONG}",
                                   b"-ERR [AUTH] Authentication failed.\r\n")]),
    "pop3-plain-cancel": ("pop3", [("AUTH PLAIN", b"+ \r\n"),
                                   ("*", b"-ERR Authentication cancelled\r\n")]),
    "pop3-plain-star-first": ("pop3", [("AUTH PLAIN *",
                                         b"-ERR Invalid base64 data in the answer\r\n")]),
    "pop3-plain-equals-first": ("pop3", [("AUTH PLAIN =", MALFORMED_PLAIN_POP3)]),
    "pop3-plain-equals": ("pop3", [("AUTH PLAIN", b"+ \r\n"),
                                   ("=", b"-ERR Invalid base64 data in the answer\r\n")]),
    "pop3-plain-empty": ("pop3", [("AUTH PLAIN", b"+ \r\n"),
                                  ("", MALFORMED_PLAIN_POP3)]),
    "pop3-plain-bad-base64": ("pop3", [("AUTH PLAIN abc",
                                        b"-ERR Invalid base64 data in the answer\r\n")]),
    "pop3-plain-not-utf8": ("pop3", [(f"AUTH PLAIN {PLAIN_NOT_UTF8}", MALFORMED_PLAIN_POP3)]),
    "pop3-plain-two-fields": ("pop3", [(f"AUTH PLAIN {PLAIN_TWO_FIELDS}", MALFORMED_PLAIN_POP3)]),
    # POP3 does not look at the authorization identity
    "pop3-plain-authzid": ("pop3", [(f"AUTH PLAIN {PLAIN_AS_BOB}", b"+OK Logged in")]),
    "pop3-login": ("pop3", [("AUTH LOGIN",
                             b"-ERR Unsupported authentication mechanism LOGIN\r\n")]),
    "pop3-cram-cancel": ("pop3", [("AUTH CRAM-MD5", b"+ "),
                                  ("*", b"-ERR Authentication cancelled\r\n")]),
    "pop3-cram-bad-base64": ("pop3", [("AUTH CRAM-MD5", b"+ "),
                                      ("abc", b"-ERR Invalid base64 data in the answer\r\n")]),
    "pop3-cram-equals": ("pop3", [("AUTH CRAM-MD5", b"+ "),
                                  ("=", b"-ERR Invalid base64 data in the answer\r\n")]),
    "pop3-cram-empty": ("pop3", [("AUTH CRAM-MD5", b"+ "), (
        "", b"-ERR [AUTH] not a CRAM-MD5 answer (user and 32 hex digits)\r\n")]),
    "pop3-cram-star-first": ("pop3", [("AUTH CRAM-MD5 *",
                                       b"-ERR Invalid base64 data in the answer\r\n")]),
    "pop3-cram-initial": ("pop3", [(f"AUTH CRAM-MD5 {JUNK}",
                                    b"-ERR [AUTH] CRAM-MD5 takes no initial response\r\n")]),
    "pop3-cram-equals-first": ("pop3", [("AUTH CRAM-MD5 =", b"+ ")]),
    "pop3-xoauth2-cancel": ("pop3", [("AUTH XOAUTH2", b"+ \r\n"),
                                     ("*", b"-ERR Authentication cancelled\r\n")]),
    "pop3-xoauth2-junk": ("pop3", [(f"AUTH XOAUTH2 {JUNK}",
                                    b"-ERR [AUTH] not a XOAUTH2 answer with a user and a Bearer"
                                    b" token\r\n")]),
    "pop3-scram-cancel": ("pop3", [("AUTH SCRAM-SHA-256", b"+ \r\n"),
                                   ("*", b"-ERR Authentication cancelled\r\n")]),
    # -- IMAP (RFC 3501 6.2.2, RFC 4959 SASL-IR) -----------------------------------------
    "imap-plain-ok": ("imap", [(f"a AUTHENTICATE PLAIN {PLAIN_OK}", b"a OK [CAPABILITY ")]),
    "imap-plain-continued": ("imap", [("a AUTHENTICATE PLAIN", b"+ \r\n"),
                                      (PLAIN_OK, b"a OK [CAPABILITY ")]),
    "imap-plain-wrong": ("imap", [(f"a AUTHENTICATE PLAIN {PLAIN_WRONG}",
                                   b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")]),
    "imap-plain-cancel": ("imap", [("a AUTHENTICATE PLAIN", b"+ \r\n"),
                                   ("*", b"a BAD Authentication cancelled\r\n")]),
    "imap-plain-star-first": ("imap", [("a AUTHENTICATE PLAIN *",
                                        b"a BAD Invalid base64 data\r\n")]),
    "imap-plain-equals-first": ("imap", [("a AUTHENTICATE PLAIN =", MALFORMED_PLAIN_IMAP)]),
    "imap-plain-equals": ("imap", [("a AUTHENTICATE PLAIN", b"+ \r\n"),
                                   ("=", b"a BAD Invalid base64 data\r\n")]),
    "imap-plain-empty": ("imap", [("a AUTHENTICATE PLAIN", b"+ \r\n"),
                                  ("", MALFORMED_PLAIN_IMAP)]),
    # SASL-IR's initial response is an atom (base64 or "="): a string is not base64
    "imap-plain-quoted-first": ("imap", [(f'a AUTHENTICATE PLAIN "{PLAIN_OK}"',
                                          b"a BAD Invalid base64 data\r\n")]),
    "imap-plain-bad-base64": ("imap", [("a AUTHENTICATE PLAIN abc",
                                        b"a BAD Invalid base64 data\r\n")]),
    "imap-plain-not-utf8": ("imap", [(f"a AUTHENTICATE PLAIN {PLAIN_NOT_UTF8}",
                                      MALFORMED_PLAIN_IMAP)]),
    "imap-plain-two-fields": ("imap", [(f"a AUTHENTICATE PLAIN {PLAIN_TWO_FIELDS}",
                                        MALFORMED_PLAIN_IMAP)]),
    "imap-plain-authzid": ("imap", [(f"a AUTHENTICATE PLAIN {PLAIN_AS_BOB}", b"a NO "
                                     b"[AUTHORIZATIONFAILED] Cannot act as another user\r\n")]),
    "imap-plain-authzid-self": ("imap", [(f"a AUTHENTICATE PLAIN {PLAIN_AS_SELF}",
                                          b"a OK [CAPABILITY ")]),
    "imap-login": ("imap", [("a AUTHENTICATE LOGIN",
                             b"a NO Unsupported authentication mechanism\r\n")]),
    "imap-cram-cancel": ("imap", [("a AUTHENTICATE CRAM-MD5", b"+ "),
                                  ("*", b"a BAD Authentication cancelled\r\n")]),
    "imap-cram-bad-base64": ("imap", [("a AUTHENTICATE CRAM-MD5", b"+ "),
                                      ("abc", b"a BAD Invalid base64 data\r\n")]),
    "imap-cram-equals": ("imap", [("a AUTHENTICATE CRAM-MD5", b"+ "),
                                  ("=", b"a BAD Invalid base64 data\r\n")]),
    "imap-cram-initial": ("imap", [(f"a AUTHENTICATE CRAM-MD5 {JUNK}",
                                    b"a NO [AUTHENTICATIONFAILED] CRAM-MD5 takes no initial"
                                    b" response\r\n")]),
    "imap-cram-equals-first": ("imap", [("a AUTHENTICATE CRAM-MD5 =", b"+ ")]),
    "imap-xoauth2-junk": ("imap", [(f"a AUTHENTICATE XOAUTH2 {JUNK}",
                                    b"a NO [AUTHENTICATIONFAILED] not a XOAUTH2 answer with a user"
                                    b" and a Bearer token\r\n")]),
    "imap-scram-cancel": ("imap", [("a AUTHENTICATE SCRAM-SHA-256", b"+ \r\n"),
                                   ("*", b"a BAD Authentication cancelled\r\n")]),
    # -- SMTP (RFC 4954) ----------------------------------------------------------------
    "smtp-plain-ok": ("smtp", [(f"AUTH PLAIN {PLAIN_OK}", b"235 ")]),
    "smtp-plain-continued": ("smtp", [("AUTH PLAIN", b"334 \r\n"), (PLAIN_OK, b"235 ")]),
    "smtp-plain-wrong": ("smtp", [(f"AUTH PLAIN {PLAIN_WRONG}", b"535 ")]),
    "smtp-plain-cancel": ("smtp", [("AUTH PLAIN", b"334 \r\n"),
                                   ("*", b"501 5.7.0 Authentication cancelled\r\n")]),
    "smtp-plain-star-first": ("smtp", [("AUTH PLAIN *",
                                        b"501 5.5.2 Cannot decode the base64 answer\r\n")]),
    # "=" is an empty initial response (RFC 4954 4), not none: PLAIN refuses it
    "smtp-plain-equals-first": ("smtp", [("AUTH PLAIN =", MALFORMED_PLAIN_SMTP)]),
    "smtp-plain-empty": ("smtp", [("AUTH PLAIN", b"334 \r\n"), ("", MALFORMED_PLAIN_SMTP)]),
    "smtp-plain-equals": ("smtp", [("AUTH PLAIN", b"334 \r\n"),
                                   ("=", b"501 5.5.2 Cannot decode the base64 answer\r\n")]),
    "smtp-plain-bad-base64": ("smtp", [("AUTH PLAIN abc",
                                        b"501 5.5.2 Cannot decode the base64 answer\r\n")]),
    "smtp-plain-not-utf8": ("smtp", [(f"AUTH PLAIN {PLAIN_NOT_UTF8}", MALFORMED_PLAIN_SMTP)]),
    "smtp-plain-two-fields": ("smtp", [(f"AUTH PLAIN {PLAIN_TWO_FIELDS}", MALFORMED_PLAIN_SMTP)]),
    "smtp-plain-authzid": ("smtp", [(f"AUTH PLAIN {PLAIN_AS_BOB}", b"235 ")]),
    "smtp-login-ok": ("smtp", [("AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n"),
                               (b64(USER), b"334 UGFzc3dvcmQ6\r\n"), (b64(PASSWORD), b"235 ")]),
    "smtp-login-initial": ("smtp", [(f"AUTH LOGIN {b64(USER)}", b"334 UGFzc3dvcmQ6\r\n"),
                                    (b64(PASSWORD), b"235 ")]),
    "smtp-login-wrong": ("smtp", [(f"AUTH LOGIN {b64(USER)}", b"334 UGFzc3dvcmQ6\r\n"),
                                  (b64("nope"), b"535 ")]),
    "smtp-login-empty-password": ("smtp", [(f"AUTH LOGIN {b64(USER)}", b"334 UGFzc3dvcmQ6\r\n"),
                                           ("", b"535 ")]),
    "smtp-login-cancel-user": ("smtp", [("AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n"),
                                        ("*", b"501 5.7.0 Authentication cancelled\r\n")]),
    "smtp-login-cancel-password": ("smtp", [("AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n"),
                                            (b64(USER), b"334 UGFzc3dvcmQ6\r\n"),
                                            ("*", b"501 5.7.0 Authentication cancelled\r\n")]),
    "smtp-login-star-first": ("smtp", [("AUTH LOGIN *",
                                        b"501 5.5.2 Cannot decode the base64 answer\r\n")]),
    # an empty user name, as Exim takes it (Postfix's Dovecot asks for the user again)
    "smtp-login-equals-first": ("smtp", [("AUTH LOGIN =", b"334 UGFzc3dvcmQ6\r\n"),
                                         (b64(PASSWORD), b"535 ")]),
    "smtp-login-equals": ("smtp", [("AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n"),
                                   ("=", b"501 5.5.2 Cannot decode the base64 answer\r\n")]),
    "smtp-cram-cancel": ("smtp", [("AUTH CRAM-MD5", b"334 "),
                                  ("*", b"501 5.7.0 Authentication cancelled\r\n")]),
    "smtp-cram-bad-base64": ("smtp", [("AUTH CRAM-MD5", b"334 "),
                                      ("abc", b"501 5.5.2 Cannot decode the base64 answer\r\n")]),
    "smtp-cram-equals": ("smtp", [("AUTH CRAM-MD5", b"334 "),
                                  ("=", b"501 5.5.2 Cannot decode the base64 answer\r\n")]),
    "smtp-cram-star-first": ("smtp", [("AUTH CRAM-MD5 *",
                                       b"501 5.5.2 Cannot decode the base64 answer\r\n")]),
    "smtp-cram-initial": ("smtp", [(f"AUTH CRAM-MD5 {JUNK}",
                                    b"535 5.7.8 CRAM-MD5 takes no initial response\r\n")]),
    "smtp-cram-equals-first": ("smtp", [("AUTH CRAM-MD5 =", b"334 ")]),
    "smtp-unknown": ("smtp", [("AUTH DIGEST-MD5",
                               b"504 5.5.4 Unrecognized authentication type\r\n")]),
    "smtp-xoauth2-junk": ("smtp", [(f"AUTH XOAUTH2 {JUNK}",
                                    b"535 5.7.8 not a XOAUTH2 answer with a user and a Bearer token"
                                    b"\r\n")]),
    "smtp-scram-cancel": ("smtp", [("AUTH SCRAM-SHA-256", b"334 \r\n"),
                                   ("*", b"501 5.7.0 Authentication cancelled\r\n")]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reply(servers: RunningServers, name: str) -> None:
    protocol, steps = CASES[name]
    peer = Peer(servers, protocol)
    try:
        for sent, expected in steps:
            peer.send(sent)
            reply = peer.reply()
            if expected.endswith(b"\r\n"):
                assert reply == expected, (sent, reply)
            else:
                assert reply.startswith(expected), (sent, reply)
    finally:
        peer.close()


@pytest.mark.parametrize(("protocol", "command", "challenge", "done"), [
    ("pop3", "AUTH CRAM-MD5", b"+ ", b"+OK Logged in"),
    ("imap", "a AUTHENTICATE CRAM-MD5", b"+ ", b"a OK [CAPABILITY "),
    ("smtp", "AUTH CRAM-MD5", b"334 ", b"235 "),
])
def test_cram_md5_login_and_a_wrong_digest(
    servers: RunningServers, protocol: str, command: str, challenge: bytes, done: bytes
) -> None:
    """The digest of each fresh challenge logs in; one of another challenge does not."""
    peer = Peer(servers, protocol)
    try:
        peer.send(command)
        first = peer.reply()
        assert first.startswith(challenge), first
        peer.send(cram_md5(first, challenge))
        assert peer.reply().startswith(done)
    finally:
        peer.close()
    peer = Peer(servers, protocol)
    try:
        peer.send(command)
        assert peer.reply().startswith(challenge)
        peer.send(cram_md5(first, challenge))  # the answer to the other connection's
        assert peer.reply() == {
            "pop3": b"-ERR [AUTH] Authentication failed.\r\n",
            "imap": b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            "smtp": b"535 5.7.8 Authentication credentials invalid\r\n",
        }[protocol]
    finally:
        peer.close()
