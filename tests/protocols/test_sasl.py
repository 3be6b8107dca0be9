"""SASL mechanisms: the RFCs' own examples reproduced byte for byte, every parser fed
arbitrary bytes (it parses or raises SASLError, nothing else), and each client paired
with the server-side check it must pass."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols import sasl, sasl_server
from mailtalk.protocols.sasl import SASLError


def test_rfc2195_cram_md5_example() -> None:
    client = sasl.CramMD5("tim", "tanstaaftanstaaf")
    challenge = base64.b64decode("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
    assert challenge == b"<1896.697170952@postoffice.reston.mci.net>"
    answer = client.respond(challenge)
    assert answer == b"tim b913a602c7eda7a495b4e6e7334d3890"
    assert sasl.encode(answer) == "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    assert sasl_server.cram_md5_check(challenge, answer, {"tim": "tanstaaftanstaaf"}) == "tim"
    assert sasl_server.cram_md5_check(challenge, answer, {"tim": "other"}) is None
    assert sasl_server.cram_md5_check(challenge, answer, {}) is None


@pytest.mark.parametrize(
    ("name", "nonce", "server_first", "client_final", "server_final"),
    [
        (  # RFC 7677 3
            "SCRAM-SHA-256",
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
            "i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
        (  # RFC 5802 5
            "SCRAM-SHA-1",
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
    ],
)
def test_rfc_scram_examples(
    name: str, nonce: str, server_first: str, client_final: str, server_final: str
) -> None:
    client = sasl.Scram(name, "user", "pencil", nonce=nonce)
    assert client.initial() == f"n,,n=user,r={nonce}".encode()
    assert client.respond(server_first.encode()) == client_final.encode()
    assert client.respond(server_final.encode()) == b""
    assert client.verified
    client.finish(None)  # already proved: nothing more to check


def test_scram_refuses_a_wrong_server_signature_and_a_bare_yes() -> None:
    first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    client = sasl.Scram("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    client.respond(first)
    with pytest.raises(SASLError, match="signature is wrong"):
        client.respond(b"v=" + base64.b64encode(b"\0" * 32))
    yes = sasl.Scram("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    yes.respond(first)
    with pytest.raises(SASLError, match="without proving"):
        yes.finish(None)


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=other,s=QSXCR+Q6sek8bf92,i=4096",  # nonce not ours
        b"r=abc,s=QSXCR+Q6sek8bf92,i=4096",  # not extended
        b"r=abcX,s=QSXCR+Q6sek8bf92,i=1",  # too few rounds
        b"r=abcX,s=QSXCR+Q6sek8bf92,i=99999999999",  # too many: a hang
        b"r=abcX,s=!!,i=4096",  # salt not base64
        b"r=abcX,i=4096",  # no salt
        b"m=ext,r=abcX,s=QSXCR+Q6sek8bf92,i=4096",  # mandatory extension
        b"r=abcX,,s=x",
        b"\xff",
    ],
)
def test_scram_refuses_bad_server_first(server_first: bytes) -> None:
    with pytest.raises(SASLError):
        sasl.Scram("SCRAM-SHA-256", "u", "p", nonce="abc").respond(server_first)


@given(st.binary(max_size=300))
def test_scram_parsers_take_any_bytes(data: bytes) -> None:
    try:
        pairs = sasl.parse_attributes(data)
    except SASLError:
        pass
    else:
        assert b",".join(f"{k}={v}".encode() for k, v in pairs) == data
    for message in (data, b"v=" + data):
        client = sasl.Scram("SCRAM-SHA-256", "u", "p", nonce="abc")
        try:
            client.respond(data)
            client.respond(message)
        except SASLError:
            pass


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_attributes_round_trip_byte_at_a_time(value: str) -> None:
    value = value.replace(",", "")
    message = f"r={value},s=c2FsdA==,i=4096".encode()
    assert sasl.parse_attributes(message)[0] == ("r", value)
    for cut in range(len(message)):
        # every prefix parses or is refused as SASL: never another error
        with contextlib.suppress(SASLError):
            sasl.parse_attributes(message[:cut])


@given(st.binary(max_size=200))
def test_bearer_parsers_take_any_bytes(data: bytes) -> None:
    for mechanism in ("XOAUTH2", "OAUTHBEARER"):
        with contextlib.suppress(SASLError):
            sasl_server.parse_bearer(mechanism, data)
    with contextlib.suppress(SASLError):
        sasl.bearer_error(data)
    with contextlib.suppress(SASLError):
        sasl.decode(data.decode("latin-1"))


def test_xoauth2_and_oauthbearer_answers_and_their_error_challenge() -> None:
    x = sasl.XOAuth2("alice@example.org", "ya29.tok")
    assert x.initial() == b"user=alice@example.org\x01auth=Bearer ya29.tok\x01\x01"
    assert sasl_server.parse_bearer("XOAUTH2", x.initial() or b"") == (
        "alice@example.org", "ya29.tok"
    )
    error = sasl_server.bearer_error_challenge("https://mail.google.com/")
    assert x.respond(error) == b""
    assert x.error == json.loads(error)
    o = sasl.OAuthBearer("a,b=c", "tok", "mx.test", 993)
    assert o.initial() == b"n,a=a=2Cb=3Dc,\x01host=mx.test\x01port=993\x01auth=Bearer tok\x01\x01"
    assert sasl_server.parse_bearer("OAUTHBEARER", o.initial() or b"") == ("a,b=c", "tok")
    assert o.respond(error) == b"\x01"
    assert o.error is not None and o.error["status"] == "invalid_token"


def test_login_plain_and_choice() -> None:
    assert sasl.Plain("u", "p").initial() == b"\0u\0p"
    login = sasl.Login("u", "p")
    assert [login.respond(b"Username:"), login.respond(b"Password:")] == [b"u", b"p"]
    with pytest.raises(SASLError):
        login.respond(b"again")
    assert sasl.choose(["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"], token=False) == (
        "SCRAM-SHA-256"
    )
    assert sasl.choose(["LOGIN", "CRAM-MD5"], token=False) == "CRAM-MD5"
    assert sasl.choose(["LOGIN"], token=False) == "LOGIN"
    assert sasl.choose(None, token=False) == "PLAIN"
    assert sasl.choose(["PLAIN", "XOAUTH2", "OAUTHBEARER"], token=True) == "OAUTHBEARER"
    assert sasl.choose(["XOAUTH2"], token=True) == "XOAUTH2"
    assert sasl.decode("=") == b""
    with pytest.raises(SASLError):
        sasl.decode("not base64!")


# -- server exchanges, paired with the clients ------------------------------------------


def _run(server: sasl_server.ServerMechanism, client: sasl.ClientMechanism) -> sasl_server.Done:
    step = server.start(client.initial())
    while True:
        if isinstance(step, sasl_server.Check):
            step = server.checked(step.verify())
        elif isinstance(step, sasl_server.Challenge):
            step = server.respond(client.respond(step.data))
        else:
            return step


@pytest.mark.parametrize("secret", ["pencil", "wrong"])
def test_server_exchanges_with_our_clients(secret: str) -> None:
    passwords = {"user": "pencil"}.get
    tokens = lambda user, token: (user, token) == ("user", "pencil")  # noqa: E731
    cases = [
        (sasl_server.CramMD5Server("mx.test", passwords), sasl.CramMD5("user", secret)),
        (sasl_server.ScramServer("SCRAM-SHA-256", passwords),
         sasl.Scram("SCRAM-SHA-256", "user", secret)),
        (sasl_server.ScramServer("SCRAM-SHA-1", passwords),
         sasl.Scram("SCRAM-SHA-1", "user", secret)),
        (sasl_server.BearerServer("XOAUTH2", tokens), sasl.XOAuth2("user", secret)),
        (sasl_server.BearerServer("OAUTHBEARER", tokens),
         sasl.OAuthBearer("user", secret, "mx", 25)),
    ]
    for server, client in cases:
        done = _run(server, client)
        assert done == sasl_server.Done("user", secret == "pencil"), server.name
        if isinstance(client, sasl.Scram) and secret == "pencil":
            assert client.verified  # the server's v= was right
        if isinstance(client, (sasl.XOAuth2, sasl.OAuthBearer)) and secret != "pencil":
            assert client.error is not None  # the JSON error challenge came first


def test_scram_server_unknown_user_fails_at_the_proof() -> None:
    server = sasl_server.ScramServer("SCRAM-SHA-256", {}.get)
    done = _run(server, sasl.Scram("SCRAM-SHA-256", "x", "y"))
    assert done == sasl_server.Done("x", False)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_server_exchanges_take_any_bytes(first: bytes, second: bytes) -> None:
    for server in (
        sasl_server.CramMD5Server("mx", {"u": "p"}.get),
        sasl_server.ScramServer("SCRAM-SHA-256", {"u": "p"}.get),
        sasl_server.BearerServer("XOAUTH2", lambda u, t: False),
        sasl_server.BearerServer("OAUTHBEARER", lambda u, t: False),
    ):
        step = server.start(first)
        if isinstance(step, sasl_server.Challenge):
            step = server.respond(second)
        if isinstance(step, sasl_server.Check):
            assert step.verify() is False
        else:
            assert isinstance(step, (sasl_server.Challenge, sasl_server.Done))
