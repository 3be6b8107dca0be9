"""The servers' SASL exchange (:mod:`mailtalk.servers.sasl_exchange`) as a state
machine, with no server: any initial response and any answer lines, for every
mechanism, never raise (the three protocols read the lines alike); a ``*`` after a
challenge always ends the exchange as cancelled; every ending step leaves it over,
and an exchange that is over takes no more lines. The replies the servers make of these
steps are pinned over real sockets in test_sasl_replies.py.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.sasl_server import BearerServer, CramMD5Server, ScramServer
from mailtalk.servers.sasl_exchange import (
    ENDS,
    Cancelled,
    Challenge,
    Credentials,
    Exchange,
    Malformed,
    Verify,
)

PASSWORDS = {"alice": "secret"}


def exchange(name: str) -> Exchange:
    if name in ("PLAIN", "LOGIN"):
        return Exchange(name)
    if name == "CRAM-MD5":
        return Exchange(name, CramMD5Server("mailtalk.test", PASSWORDS.get))
    if name == "SCRAM-SHA-256":
        return Exchange(name, ScramServer(name, PASSWORDS.get))
    return Exchange(name, BearerServer(name, lambda user, token: token == "t0k"))


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
    name=st.sampled_from(MECHANISMS),
    initial=st.none() | LINES,
    lines=st.lists(LINES, max_size=6),
    verdicts=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_any_lines_never_raise_and_a_cancel_ends_it(
    name: str, initial: str | None, lines: list[str], verdicts: list[bool]
) -> None:
    machine = exchange(name)
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


def test_plain_gives_the_three_fields() -> None:
    step = Exchange("PLAIN").start(b64(b"bob\0alice\0secret"))
    assert step == Credentials("bob", "alice", "secret")
    assert "secret" not in repr(step) and "secret" not in str(step)


def test_login_asks_for_the_user_then_the_password() -> None:
    machine = Exchange("LOGIN")
    assert machine.start(None) == Challenge(b"Username:")
    assert machine.answer(b64(b"alice")) == Challenge(b"Password:")
    assert not machine.over
    assert machine.answer(b64(b"secret")) == Credentials("", "alice", "secret")
    assert machine.over


@pytest.mark.parametrize(("initial", "expected"), [
    ("*", Malformed("base64")),  # a cancel only after a challenge
    ("=", Malformed("fields")),  # the empty initial response: no PLAIN answer
    (" = ", Malformed("fields")),
    (None, Challenge(b"")),
])
def test_plain_initial_markers(initial: str | None, expected: object) -> None:
    assert Exchange("PLAIN").start(initial) == expected


@pytest.mark.parametrize(("line", "expected"), [
    ("*", Cancelled()),
    ("=", Malformed("base64")),  # "=" is the empty initial response only
    ("", Malformed("fields")),  # the empty answer
    ("%%%", Malformed("base64")),
])
def test_plain_answer_markers(line: str, expected: object) -> None:
    machine = Exchange("PLAIN")
    assert machine.start(None) == Challenge(b"")
    assert machine.answer(line) == expected


def test_login_takes_equals_as_an_empty_user_name() -> None:
    machine = Exchange("LOGIN")
    assert machine.start("=") == Challenge(b"Password:")
    assert machine.answer(b64(b"secret")) == Credentials("", "", "secret")
    assert Exchange("LOGIN").start(b64(b"\xff")) == Malformed(
        "mechanism", "LOGIN's answer is not UTF-8")


def test_only_a_malformed_line_that_is_not_base64_is_undecodable() -> None:
    assert Malformed("base64").undecodable
    assert not Malformed("fields").undecodable
    assert not Malformed("mechanism", "why").undecodable


def test_a_mechanism_complaint_ends_it_in_its_own_words() -> None:
    machine = exchange("CRAM-MD5")
    assert machine.start(b64(b"x")) == Malformed("mechanism", "CRAM-MD5 takes no initial response")
    assert machine.over
