"""The servers' SASL exchange (:mod:`mailtalk.servers.sasl_exchange`) as a state
machine, with no server: any initial response and any answer lines, in every
protocol's dialect and for every mechanism, never raise; a ``*`` after a challenge
always ends the exchange as cancelled; every ending step leaves it over, and an
exchange that is over takes no more lines. The replies the servers make of these
steps are pinned over real sockets in test_sasl_replies.py.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.sasl_server import BearerServer, CramMD5Server, ScramServer
from mailtalk.servers import sasl_exchange
from mailtalk.servers.sasl_exchange import (
    ENDS,
    Cancelled,
    Challenge,
    Credentials,
    Exchange,
    Malformed,
    Verify,
)

DIALECTS = {"smtp": sasl_exchange.SMTP, "pop3": sasl_exchange.POP3, "imap": sasl_exchange.IMAP}
PASSWORDS = {"alice": "secret"}


def exchange(name: str, dialect: sasl_exchange.Dialect) -> Exchange:
    if name in ("PLAIN", "LOGIN"):
        return Exchange(name, dialect)
    if name == "CRAM-MD5":
        return Exchange(name, dialect, CramMD5Server("mailtalk.test", PASSWORDS.get))
    if name == "SCRAM-SHA-256":
        return Exchange(name, dialect, ScramServer(name, PASSWORDS.get))
    return Exchange(name, dialect, BearerServer(name, lambda user, token: token == "t0k"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Lines a client might send: the protocols' own markers, base64 of text shaped like
# each mechanism's answers (or of any bytes), and lines that are not base64 at all.
MARKERS = st.sampled_from(["*", " * ", "=", "", "==", "abc", "%%%", "*=", "YQ"])
SHAPED = st.sampled_from([
    b"\0alice\0secret", b"alice\0alice\0secret", b"alice\0secret", b"\0\0", b"alice",
    b"alice 0123456789abcdef0123456789abcdef", b"n,,n=alice,r=abc", b"y,a=bob,n=alice,r=x",
    b"c=biws,r=abc,p=AAAA", b"user=alice\x01auth=Bearer t0k\x01\x01",
    b"n,a=alice,\x01auth=Bearer t0k\x01\x01", b"\xff\xfe", b"",
]).map(b64)
LINES = st.one_of(MARKERS, SHAPED, st.binary(max_size=60).map(b64), st.text(max_size=40))
MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER"]


@settings(max_examples=400, deadline=None)
@given(
    dialect=st.sampled_from(sorted(DIALECTS)),
    name=st.sampled_from(MECHANISMS),
    initial=st.none() | LINES,
    lines=st.lists(LINES, max_size=6),
    verdicts=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_any_lines_never_raise_and_a_cancel_ends_it(
    dialect: str, name: str, initial: str | None, lines: list[str], verdicts: list[bool]
) -> None:
    machine = exchange(name, DIALECTS[dialect])
    step = machine.start(initial)
    for line in lines:
        while isinstance(step, Verify):
            step.verify()  # the secret's check itself must not raise either
            step = machine.checked(verdicts.pop())
        if isinstance(step, ENDS):
            break
        assert isinstance(step, Challenge)
        assert isinstance(step.line, str)
        step = machine.answer(line)
        if line.strip() == "*":
            assert isinstance(step, Cancelled)
    if isinstance(step, ENDS):
        assert machine.over
        with pytest.raises(RuntimeError):
            machine.answer("*")
    else:
        assert not machine.over


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_plain_gives_the_three_fields(dialect: str) -> None:
    step = Exchange("PLAIN", DIALECTS[dialect]).start(b64(b"bob\0alice\0secret"))
    assert step == Credentials("bob", "alice", "secret")
    assert "secret" not in repr(step) and "secret" not in str(step)


def test_login_asks_for_the_user_then_the_password() -> None:
    machine = Exchange("LOGIN", sasl_exchange.SMTP)
    assert machine.start(None) == Challenge(b"Username:")
    assert machine.answer(b64(b"alice")) == Challenge(b"Password:")
    assert not machine.over
    assert machine.answer(b64(b"secret")) == Credentials("", "alice", "secret")
    assert machine.over


@pytest.mark.parametrize(("dialect", "initial", "expected"), [
    ("imap", "*", Cancelled()),
    ("pop3", "*", Cancelled()),
    ("smtp", "*", Malformed("base64")),
    ("imap", "=", Malformed("fields")),
    ("pop3", "=", Malformed("base64")),
    ("smtp", "=", Challenge(b"")),
])
def test_plain_initial_markers_keep_each_protocol_as_it_was(
    dialect: str, initial: str, expected: object
) -> None:
    assert Exchange("PLAIN", DIALECTS[dialect]).start(initial) == expected


def test_a_mechanism_complaint_ends_it_in_its_own_words() -> None:
    machine = exchange("CRAM-MD5", sasl_exchange.POP3)
    assert machine.start(b64(b"x")) == Malformed("mechanism", "CRAM-MD5 takes no initial response")
    assert machine.over
