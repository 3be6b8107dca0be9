"""DIGEST-MD5, NTLM and EXTERNAL, the client side: the published vectors (RFC 2831's
example, MS-NLMP 4.2.4's NTLMv2 example, RFC 1320's MD4 suite), the checks a server's
answer must pass, and parsers that take any bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtalk.protocols import sasl
from mailtalk.protocols.sasl import SASLError

RFC2831_CHALLENGE = (
    b'realm="elwood.innosoft.com",nonce="OA6MG9tEQGm2hh",qop="auth",'
    b"algorithm=md5-sess,charset=utf-8"
)


def test_rfc2831_example() -> None:
    # RFC 2831 4, the IMAP example: chris / secret, cnonce OA6MHXh6VqTrRk
    client = sasl.DigestMD5(
        "chris", "secret", "elwood.innosoft.com", "imap", cnonce="OA6MHXh6VqTrRk"
    )
    assert client.initial() is None  # the server speaks first
    answer = dict(sasl.parse_digest_challenge(client.respond(RFC2831_CHALLENGE)))
    assert answer == {
        "charset": "utf-8", "username": "chris", "realm": "elwood.innosoft.com",
        "nonce": "OA6MG9tEQGm2hh", "nc": "00000001", "cnonce": "OA6MHXh6VqTrRk",
        "digest-uri": "imap/elwood.innosoft.com",
        "response": "d388dad90d4bbd760a152321f2143af7", "qop": "auth",
    }
    assert client.respond(b"rspauth=ea40f60335c427b5527b84dbabcdfffd") == b""
    assert client.verified
    client.finish(None)  # the success after it carries nothing: fine once verified


def test_digest_md5_refuses_a_wrong_rspauth_and_a_bare_yes() -> None:
    client = sasl.DigestMD5("chris", "secret", "elwood.innosoft.com", "imap", cnonce="x")
    client.respond(RFC2831_CHALLENGE)
    with pytest.raises(SASLError, match="rspauth is wrong"):
        client.respond(b"rspauth=00000000000000000000000000000000")
    bare = sasl.DigestMD5("chris", "secret", "h", "smtp")
    bare.respond(RFC2831_CHALLENGE)
    with pytest.raises(SASLError, match="no rspauth"):
        bare.finish(None)


@pytest.mark.parametrize(
    "challenge",
    [
        b'nonce="n",qop="auth"',  # no algorithm=md5-sess
        b'algorithm=md5-sess,qop="auth"',  # no nonce
        b'nonce="n",qop="auth-conf",algorithm=md5-sess',  # no qop=auth
        b'nonce="n,algorithm=md5-sess',  # unterminated quote
        b"nonce",  # not name=value
    ],
)
def test_digest_md5_refuses_bad_challenges(challenge: bytes) -> None:
    with pytest.raises(SASLError):
        sasl.DigestMD5("u", "p", "h").respond(challenge)


def test_digest_md5_realms_and_service() -> None:
    # several realms: the first; none: the realm is empty and not sent
    two = sasl.DigestMD5("u", "p", "mx.example", "smtp", cnonce="c")
    answer = dict(sasl.parse_digest_challenge(two.respond(
        b'realm="one",realm="two",nonce="n",algorithm=md5-sess'
    )))
    assert answer["realm"] == "one" and answer["digest-uri"] == "smtp/mx.example"
    assert "charset" not in answer  # ISO 8859-1 unless the server says utf-8
    none = sasl.DigestMD5("u", "p", "h", "pop", cnonce="c")
    assert b"realm=" not in none.respond(b'nonce="n",algorithm=md5-sess')
    client = sasl.client_mechanism("DIGEST-MD5", "u", "p", "h", protocol="pop3")
    answer = dict(sasl.parse_digest_challenge(client.respond(b'nonce="n",algorithm=md5-sess')))
    assert answer["digest-uri"] == "pop/h"  # RFC 2831's service name for POP3


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_digest_quoting_round_trips_byte_at_a_time(value: str) -> None:
    message = f"realm={sasl._quoted(value)}, nonce=abc ,,algorithm=md5-sess".encode()
    assert sasl.parse_digest_challenge(message) == [
        ("realm", value), ("nonce", "abc"), ("algorithm", "md5-sess"),
    ]
    for cut in range(len(message)):
        # every prefix parses or is refused as SASL: never another error
        with contextlib.suppress(SASLError):
            sasl.parse_digest_challenge(message[:cut])


@given(st.binary(max_size=300))
def test_digest_and_ntlm_clients_take_any_bytes(data: bytes) -> None:
    with contextlib.suppress(SASLError):
        sasl.DigestMD5("u", "p", "h").respond(data)
    with contextlib.suppress(SASLError):
        sasl.NTLM("u", "p").respond(data)
    with contextlib.suppress(SASLError):
        sasl.NTLM("u", "p").respond(_challenge(b"\x01\x23\x45\x67\x89\xab\xcd\xef", data))


# -- NTLM ------------------------------------------------------------------------------

# MS-NLMP 4.2.4: the AV pairs of the example's CHALLENGE (MsvAvNbDomainName "Domain",
# MsvAvNbComputerName "Server", MsvAvEOL)
MS_NLMP_TARGET_INFO = bytes.fromhex(
    "02000c0044006f006d00610069006e00" "01000c00530065007200760065007200" "00000000"
)
MS_NLMP_SERVER_CHALLENGE = bytes.fromhex("0123456789abcdef")


def test_md4_rfc1320_suite() -> None:
    assert sasl.md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
    assert sasl.md4(b"abc").hex() == "a448017aaf21d8525fc10ae87aa6729d"
    assert sasl.md4(b"abcdefghijklmnopqrstuvwxyz").hex() == "d79e1c308aa5bbcdeea8ed63df412da9"
    assert sasl.md4(b"1234567890" * 8).hex() == "e33b4ddc9c38f2199c3e7b164fcc0536"


def test_ms_nlmp_ntlmv2_vectors() -> None:
    # MS-NLMP 4.2.2.1.2: NTOWFv1 of "Password"; 4.2.4.1.1 NTOWFv2; 4.2.4.2.1 LMv2;
    # 4.2.4.2.2 the NTLMv2 response's NTProofStr; 4.2.4.1.2 the session base key
    assert sasl.md4("Password".encode("utf-16-le")).hex() == "a4f49c406510bdcab6824ee7c30fd852"
    key = sasl.ntowf_v2("User", "Password", "Domain")
    assert key.hex() == "0c868a403bfd7a93a3001ef22ef02e3f"
    responses = sasl.ntlm_v2_responses(
        key, MS_NLMP_SERVER_CHALLENGE, b"\xaa" * 8, b"\0" * 8, MS_NLMP_TARGET_INFO
    )
    assert responses.lm_response.hex() == "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"
    assert responses.nt_response[:16].hex() == "68cd0ab851e51c96aabc927bebef6a1c"
    assert responses.nt_response[16:] == (
        b"\x01\x01" + b"\0" * 6 + b"\0" * 8 + b"\xaa" * 8 + b"\0" * 4 + MS_NLMP_TARGET_INFO
        + b"\0" * 4
    )
    assert responses.session_base_key.hex() == "8de40ccadbc14a82f15cb0ad0de95ca3"


def _challenge(server_challenge: bytes, target_info: bytes, flags: int = 0x00898205) -> bytes:
    name = "Server".encode("utf-16-le")
    header = (
        sasl.NTLM_SIGNATURE + (2).to_bytes(4, "little")
        + len(name).to_bytes(2, "little") * 2 + (48).to_bytes(4, "little")
        + flags.to_bytes(4, "little") + server_challenge + b"\0" * 8
        + len(target_info).to_bytes(2, "little") * 2 + (48 + len(name)).to_bytes(4, "little")
    )
    return header + name + target_info


def _field(message: bytes, offset: int) -> bytes:
    length = int.from_bytes(message[offset : offset + 2], "little")
    start = int.from_bytes(message[offset + 4 : offset + 8], "little")
    return message[start : start + length]


def test_ntlm_messages_carry_the_ms_nlmp_example() -> None:
    client = sasl.NTLM(
        "Domain\\User", "Password", workstation="COMPUTER",
        client_challenge=b"\xaa" * 8, timestamp=b"\0" * 8,
    )
    negotiate = client.initial()
    assert negotiate is not None and negotiate[:12] == b"NTLMSSP\0\x01\0\0\0"
    flags = int.from_bytes(negotiate[12:16], "little")
    assert flags & sasl.NTLM_NTLM and flags & sasl.NTLM_UNICODE
    authenticate = client.respond(_challenge(MS_NLMP_SERVER_CHALLENGE, MS_NLMP_TARGET_INFO))
    assert authenticate[:12] == b"NTLMSSP\0\x03\0\0\0"
    assert _field(authenticate, 12).hex() == "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"
    assert _field(authenticate, 20)[:16].hex() == "68cd0ab851e51c96aabc927bebef6a1c"
    assert _field(authenticate, 28) == "Domain".encode("utf-16-le")
    assert _field(authenticate, 36) == "User".encode("utf-16-le")
    assert _field(authenticate, 44) == "COMPUTER".encode("utf-16-le")
    assert _field(authenticate, 52) == b""  # no key exchange: authentication only
    with pytest.raises(SASLError):
        client.respond(_challenge(MS_NLMP_SERVER_CHALLENGE, MS_NLMP_TARGET_INFO))


def test_ntlm_uses_the_servers_timestamp_and_refuses_non_challenges() -> None:
    stamp = bytes(range(1, 9))
    info = b"\x07\x00\x08\x00" + stamp + b"\0" * 4
    answer = sasl.NTLM("u", "p").respond(_challenge(MS_NLMP_SERVER_CHALLENGE, info))
    assert _field(answer, 20)[24:32] == stamp
    assert sasl.NTLM("u", "p").respond(b"") == sasl.NTLM("u", "p").initial()
    for bad in (b"NTLMSSP\0\x01\0\0\0" + b"\0" * 40, b"garbage", b"NTLMSSP\0\x02\0\0\0"):
        with pytest.raises(SASLError):
            sasl.NTLM("u", "p").respond(bad)


# -- EXTERNAL and the choice -----------------------------------------------------------


def test_external_sends_the_authorization_identity_only() -> None:
    assert sasl.client_mechanism("EXTERNAL", "", "").initial() == b""
    assert sasl.client_mechanism("EXTERNAL", "alice", "").initial() == b"alice"
    assert sasl.External().respond(b"") == b""


def test_auto_never_picks_the_weak_ones_or_external() -> None:
    offered = ["DIGEST-MD5", "NTLM", "EXTERNAL", "LOGIN"]
    assert sasl.auto_mechanism(offered, have_token=False) == "LOGIN"
    assert sasl.auto_mechanism(["NTLM", "DIGEST-MD5"], have_token=False) == "PLAIN"
    for name in ("DIGEST-MD5", "NTLM", "EXTERNAL"):
        assert name in sasl.MECHANISMS and name not in sasl.PASSWORD_MECHANISMS
