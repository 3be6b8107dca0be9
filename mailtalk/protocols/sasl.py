"""SASL mechanisms, sans-IO: the client's answers from the server's challenges, for
SMTP AUTH (RFC 4954), POP3 AUTH (RFC 5034) and IMAP
AUTHENTICATE (RFC 3501, SASL-IR RFC 4959) alike.

The protocols only carry the bytes (base64 on one line, ``*`` to cancel); what the
bytes mean is here, once, for every role:

* PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login), the clear-text pair;
* CRAM-MD5 (RFC 2195): HMAC-MD5 of the server's challenge, keyed by the password;
* SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677): salted challenge-response, the
  client also proving the server knew the password (its ``v=`` signature);
* DIGEST-MD5 (RFC 2831, historic since RFC 6331) with ``qop=auth``, the client also
  checking the server's ``rspauth``; NTLM (MS-NLMP) with NTLMv2 responses: both
  weak, named only, never chosen by ``auto``;
* EXTERNAL (RFC 4422 appendix A): the identity is the TLS client certificate's, the
  answer only the authorization identity (empty: the certificate's own);
* XOAUTH2 (Google's and Microsoft's format) and OAUTHBEARER (RFC 7628): an OAuth 2
  bearer token; a refused token comes back as a challenge of base64 JSON, which the
  client answers with an empty line (XOAUTH2) or ``^A`` (OAUTHBEARER) to see the
  final error;
* GSSAPI (RFC 4752): Kerberos V5; the identity is the ticket's (``kinit``), the
  exchange in :mod:`mailtalk.protocols.sasl_gssapi`, the library in ``net``.

A client mechanism is a small object: ``initial()`` is the first answer (sent with
the command when the protocol allows an initial response), ``respond(challenge)``
the answer to each decoded challenge, ``finish(data)`` checks what a success carried
(SCRAM's server signature). They raise ``SASLError`` for a server that does not
follow the mechanism.

The server side (the challenges our reference servers send, the checks they make)
is :mod:`mailtalk.protocols.sasl_server`; it shares the encoding and SCRAM's
arithmetic defined here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mailtalk.language import N_

if TYPE_CHECKING:
    from mailtalk.protocols.sasl_gssapi import SecurityContext


class SASLError(ValueError):
    """The peer's SASL data does not follow the mechanism (bad base64, a missing
    attribute, a wrong server signature)."""


def encode(data: bytes) -> str:
    """The base64 line the protocols carry; an empty answer is an empty line."""
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    """A challenge or answer line as bytes; SASLError for anything but base64
    (``=`` alone is SMTP/IMAP's spelling of an empty initial response)."""
    text = text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SASLError(f"not base64: {text[:40]!r}") from None


class ClientMechanism:
    """One client side of one exchange."""

    name: str = ""
    # Whether the answers carry the secret as such (PLAIN, LOGIN, the tokens): the
    # transcript masks every answer anyway, this only says what the warning says.
    clear_text: bool = False

    def initial(self) -> bytes | None:
        """The first answer, before any challenge; None: wait for the server's."""
        return None

    def respond(self, challenge: bytes) -> bytes:
        raise SASLError(f"{self.name} expects no challenge here")

    def finish(self, data: bytes | None) -> None:
        """The exchange succeeded; ``data`` is what the success carried, if any."""


class Plain(ClientMechanism):
    name = "PLAIN"
    clear_text = True

    def __init__(self, user: str, password: str, authzid: str = "") -> None:
        self._answer = f"{authzid}\0{user}\0{password}".encode()

    def initial(self) -> bytes | None:
        return self._answer

    def respond(self, challenge: bytes) -> bytes:
        return self._answer  # a server that did not take the initial response asks


class Login(ClientMechanism):
    name = "LOGIN"
    clear_text = True

    def __init__(self, user: str, password: str) -> None:
        self._answers = [user.encode(), password.encode()]

    def respond(self, challenge: bytes) -> bytes:
        # "Username:" then "Password:"; some servers send other words, so by order
        if not self._answers:
            raise SASLError("LOGIN has answered the user and the password already")
        return self._answers.pop(0)


class CramMD5(ClientMechanism):
    name = "CRAM-MD5"

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self._password = password.encode()

    def respond(self, challenge: bytes) -> bytes:
        return cram_md5_answer(self.user, self._password, challenge)


def cram_md5_answer(user: str, password: bytes, challenge: bytes) -> bytes:
    """RFC 2195: ``user SP hex(HMAC-MD5(password, challenge))``."""
    digest = hmac.new(password, challenge, hashlib.md5).hexdigest()
    return f"{user} {digest}".encode()


class XOAuth2(ClientMechanism):
    """``user=U^Aauth=Bearer T^A^A``; a refusal is a base64 JSON challenge, answered
    with an empty line, after which the server sends its final error."""

    name = "XOAUTH2"
    clear_text = True

    def __init__(self, user: str, token: str) -> None:
        self._answer = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
        self.error: dict[str, object] | None = None

    def initial(self) -> bytes | None:
        return self._answer

    def respond(self, challenge: bytes) -> bytes:
        if not challenge:  # a server that did not take the initial response
            return self._answer
        self.error = bearer_error(challenge)
        return b""


class OAuthBearer(ClientMechanism):
    """RFC 7628: ``n,a=U,^Aauth=Bearer T^A^A``; its error JSON is answered with ``^A``."""

    name = "OAUTHBEARER"
    clear_text = True

    def __init__(self, user: str, token: str, host: str = "", port: int = 0) -> None:
        parts = [f"n,a={_saslname(user)},", f"auth=Bearer {token}"]
        if host:
            parts[1:1] = [f"host={host}"] + ([f"port={port}"] if port else [])
        self._answer = ("\x01".join(parts) + "\x01\x01").encode()
        self.error: dict[str, object] | None = None

    def initial(self) -> bytes | None:
        return self._answer

    def respond(self, challenge: bytes) -> bytes:
        if not challenge:
            return self._answer
        self.error = bearer_error(challenge)
        return b"\x01"


def bearer_error(challenge: bytes) -> dict[str, object]:
    """The JSON a server sends for a refused token (``{"status":"401",...}``), or
    SASLError."""
    try:
        value = json.loads(challenge.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SASLError(f"the token's refusal is not JSON: {challenge[:60]!r}") from None
    if not isinstance(value, dict):
        raise SASLError("the token's refusal is not a JSON object")
    return value


# -- SCRAM (RFC 5802) -------------------------------------------------------------

SCRAM_HASHES: Final = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
# A server asking for fewer rounds than this is refused: RFC 7677 says 4096 at least.
SCRAM_MIN_ITERATIONS: Final = 4096
SCRAM_MAX_ITERATIONS: Final = 10_000_000  # a hostile count must not hang the client


def parse_attributes(message: bytes) -> list[tuple[str, str]]:
    """``a=x,b=y`` as (name, value) pairs, in order; SASLError for anything else.

    Names are single ASCII letters; values are UTF-8 without ``,`` (RFC 5802 7)."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError("SCRAM message is not UTF-8") from None
    pairs = []
    for part in text.split(","):
        name, equals, value = part.partition("=")
        if len(name) != 1 or not name.isascii() or not name.isalpha() or not equals:
            raise SASLError(f"SCRAM attribute {part[:20]!r} is not a=value")
        pairs.append((name, value))
    return pairs


def _saslname(user: str) -> str:
    return user.replace("=", "=3D").replace(",", "=2C")


def saslprep(text: str) -> str:
    """The password as SCRAM hashes it: RFC 4013 in its common subset (NFKC, non-ASCII
    spaces to space, the "mapped to nothing" characters dropped)."""
    mapped = "".join(
        " " if unicodedata.category(c) == "Zs" else c
        for c in text
        if c not in "\u00ad\u034f\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufe00\ufeff"
    )
    return unicodedata.normalize("NFKC", mapped)


@dataclass
class ScramKeys:
    client_key: bytes
    stored_key: bytes
    server_key: bytes


def scram_keys(hash_name: str, password: str, salt: bytes, iterations: int) -> ScramKeys:
    salted = hashlib.pbkdf2_hmac(hash_name, saslprep(password).encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramKeys(
        client_key=client_key,
        stored_key=hashlib.new(hash_name, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", hash_name),
    )


class Scram(ClientMechanism):
    """SCRAM-SHA-1 or SCRAM-SHA-256 without channel binding (``n,,``)."""

    def __init__(self, name: str, user: str, password: str, nonce: str | None = None) -> None:
        if name not in SCRAM_HASHES:
            raise ValueError(f"no SCRAM hash for {name}")
        self.name = name
        self._hash = SCRAM_HASHES[name]
        self._password = password
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self._first_bare = f"n={_saslname(user)},r={self._nonce}"
        self._server_signature: bytes | None = None
        self.verified = False

    def initial(self) -> bytes | None:
        return ("n,," + self._first_bare).encode()

    def respond(self, challenge: bytes) -> bytes:
        if self._server_signature is None:
            return self._client_final(challenge)
        self.finish(challenge)
        return b""  # RFC 4954/3501: the server's final data is answered with nothing

    def _client_final(self, server_first: bytes) -> bytes:
        attributes = dict(parse_attributes(server_first))
        if "m" in attributes:
            raise SASLError("the server asks for a SCRAM extension (m=) we do not know")
        try:
            nonce, salt_text, count = attributes["r"], attributes["s"], attributes["i"]
        except KeyError as missing:
            raise SASLError(f"the server's first SCRAM message has no {missing.args[0]}=") from None
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SASLError("the server's nonce does not extend ours")
        if not count.isdigit() or not (SCRAM_MIN_ITERATIONS <= int(count) <= SCRAM_MAX_ITERATIONS):
            raise SASLError(f"iteration count {count[:12]!r} out of bounds")
        salt = decode(salt_text)
        keys = scram_keys(self._hash, self._password, salt, int(count))
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(keys.stored_key, auth_message, self._hash)
        proof = bytes(a ^ b for a, b in zip(keys.client_key, signature, strict=True))
        self._server_signature = hmac.digest(keys.server_key, auth_message, self._hash)
        return f"{without_proof},p={encode(proof)}".encode()

    def finish(self, data: bytes | None) -> None:
        if self.verified:
            return
        if self._server_signature is None or not data:
            raise SASLError("the server said yes without proving it knows the password (no v=)")
        attributes = dict(parse_attributes(data))
        if "e" in attributes:
            raise SASLError(f"the server refused: e={attributes['e']}")
        if "v" not in attributes:
            raise SASLError("the server's final SCRAM message has no v=")
        if not hmac.compare_digest(decode(attributes["v"]), self._server_signature):
            raise SASLError("the server's SCRAM signature is wrong: it does not know the password")
        self.verified = True


# -- DIGEST-MD5 (RFC 2831) -----------------------------------------------------------

# The service names of DIGEST-MD5's digest-uri and GSSAPI's host-based service
# (imap@host): the IANA GSSAPI/Kerberos/SASL service names, "pop" for POP3 (RFC 5034).
SASL_SERVICES: Final = {"smtp": "smtp", "pop3": "pop", "imap": "imap", "lmtp": "lmtp"}


def parse_digest_challenge(message: bytes) -> list[tuple[str, str]]:
    """``name=value`` and ``name="quoted \\"value\\""`` pairs, comma separated with
    optional spaces and empty elements (RFC 2831 7.1 #rule), in order; SASLError for
    anything else. Names come back lower case; a name may repeat (realm)."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        text = message.decode("latin-1")
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in " \t":
            i += 1
        if not name or i >= n or text[i] != "=":
            raise SASLError(f"DIGEST-MD5 directive {text[start:start + 20]!r} is not name=value")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value = []
            while True:
                if i >= n:
                    raise SASLError(f"DIGEST-MD5 {name}= has no closing quote")
                char = text[i]
                if char == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                    continue
                i += 1
                if char == '"':
                    break
                value.append(char)
            pairs.append((name, "".join(value)))
        else:
            start = i
            while i < n and text[i] not in ",":
                i += 1
            pairs.append((name, text[start:i].strip()))
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise SASLError(f"DIGEST-MD5: a comma expected after {name}=")
    return pairs


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class DigestMD5(ClientMechanism):
    """RFC 2831 authentication only (``qop=auth``, no integrity or privacy layer):
    the first realm the server names (none: the empty realm), ``md5-sess``; the
    server's second challenge (``rspauth``) must prove it knows the password too."""

    name = "DIGEST-MD5"

    def __init__(
        self, user: str, password: str, host: str, service: str = "smtp", cnonce: str | None = None
    ) -> None:
        self.user = user
        self._password = password
        self._digest_uri = f"{service}/{host}"
        self._cnonce = cnonce or secrets.token_hex(16)
        self._rspauth: str | None = None
        self.verified = False

    def respond(self, challenge: bytes) -> bytes:
        if self._rspauth is None:
            return self._response(challenge)
        self.finish(challenge)
        return b""  # RFC 2831 2.1.3: the rspauth challenge is answered with nothing

    def _encode(self, text: str, utf8: bool) -> bytes:
        # RFC 2831 2.1.2.1: ISO 8859-1 unless the server says charset=utf-8
        if not utf8:
            try:
                return text.encode("latin-1")
            except UnicodeEncodeError:
                pass
        return text.encode("utf-8")

    def _response(self, challenge: bytes) -> bytes:
        pairs = parse_digest_challenge(challenge)
        directives = dict(pairs)
        if directives.get("algorithm", "").lower() != "md5-sess":
            raise SASLError("the DIGEST-MD5 challenge has no algorithm=md5-sess")
        nonce = directives.get("nonce")
        if not nonce:
            raise SASLError("the DIGEST-MD5 challenge has no nonce")
        qops = [q.strip().lower() for q in directives.get("qop", "auth").split(",")]
        if "auth" not in qops:
            raise SASLError(f"the server wants qop {','.join(qops)}: mailtalk does qop=auth only")
        realms = [value for name, value in pairs if name == "realm"]
        realm = realms[0] if realms else ""
        utf8 = directives.get("charset", "").lower() == "utf-8"
        secret = _md5(
            self._encode(self.user, utf8) + b":" + self._encode(realm, utf8) + b":"
            + self._encode(self._password, utf8)
        )
        a1 = secret + f":{nonce}:{self._cnonce}".encode()
        nc = "00000001"

        def response(a2_prefix: str) -> str:
            a2 = f"{a2_prefix}:{self._digest_uri}".encode()
            return _md5_hex(
                f"{_md5_hex(a1)}:{nonce}:{nc}:{self._cnonce}:auth:{_md5_hex(a2)}".encode()
            )

        self._rspauth = response("")
        fields = ["charset=utf-8"] if utf8 else []
        fields.append(f"username={_quoted(self.user)}")
        if realms:
            fields.append(f"realm={_quoted(realm)}")
        fields += [
            f"nonce={_quoted(nonce)}", f"nc={nc}", f"cnonce={_quoted(self._cnonce)}",
            f"digest-uri={_quoted(self._digest_uri)}", f"response={response('AUTHENTICATE')}",
            "qop=auth",
        ]
        return ",".join(fields).encode("utf-8")

    def finish(self, data: bytes | None) -> None:
        if self.verified:
            return
        if self._rspauth is None or not data:
            raise SASLError(
                "the server said yes without proving it knows the password (no rspauth)"
            )
        rspauth = dict(parse_digest_challenge(data)).get("rspauth", "")
        if not hmac.compare_digest(rspauth.lower().encode(), self._rspauth.encode()):
            raise SASLError("the server's rspauth is wrong: it does not know the password")
        self.verified = True


# -- NTLM (MS-NLMP), NTLMv2 responses --------------------------------------------------

NTLM_SIGNATURE: Final = b"NTLMSSP\0"
NTLM_UNICODE: Final = 0x00000001
NTLM_OEM: Final = 0x00000002
NTLM_REQUEST_TARGET: Final = 0x00000004
NTLM_NTLM: Final = 0x00000200
NTLM_ALWAYS_SIGN: Final = 0x00008000
NTLM_EXTENDED_SESSIONSECURITY: Final = 0x00080000
NTLM_TARGET_INFO: Final = 0x00800000
NTLM_NEGOTIATE_FLAGS: Final = (
    NTLM_UNICODE | NTLM_OEM | NTLM_REQUEST_TARGET | NTLM_NTLM | NTLM_ALWAYS_SIGN
    | NTLM_EXTENDED_SESSIONSECURITY
)


def md4(data: bytes) -> bytes:
    """RFC 1320 MD4, which NTLM's password hash needs and OpenSSL 3 hides in its
    legacy provider (hashlib.new("md4") fails on most systems now)."""
    def rotl(x: int, n: int) -> int:
        x &= 0xFFFFFFFF
        return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF

    padding = b"\x80" + b"\0" * ((55 - len(data)) % 64)
    message = data + padding + (len(data) * 8).to_bytes(8, "little")
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for offset in range(0, len(message), 64):
        block = message[offset : offset + 64]
        x = [int.from_bytes(block[4 * i : 4 * i + 4], "little") for i in range(16)]
        a, b, c, d = h
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            a = rotl(a + ((b & c) | (~b & d)) + x[k], s)
            a, b, c, d = d, a, b, c
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            a = rotl(a + ((b & c) | (b & d) | (c & d)) + x[k] + 0x5A827999, s)
            a, b, c, d = d, a, b, c
        for i in range(16):
            k = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i]
            s = (3, 9, 11, 15)[i % 4]
            a = rotl(a + (b ^ c ^ d) + x[k] + 0x6ED9EBA1, s)
            a, b, c, d = d, a, b, c
        h = [(v + w) & 0xFFFFFFFF for v, w in zip(h, (a, b, c, d), strict=True)]
    return b"".join(v.to_bytes(4, "little") for v in h)


def ntowf_v2(user: str, password: str, domain: str) -> bytes:
    """MS-NLMP 3.3.2 NTOWFv2:
    HMAC-MD5(MD4(UTF-16LE(password)), UTF-16LE(UPPER(user) + domain))."""
    nt_hash = md4(password.encode("utf-16-le"))
    return hmac.digest(nt_hash, (user.upper() + domain).encode("utf-16-le"), "md5")


@dataclass
class NTLMv2Responses:
    nt_response: bytes  # NTProofStr + the client's blob
    lm_response: bytes
    session_base_key: bytes


def ntlm_v2_responses(
    response_key: bytes, server_challenge: bytes, client_challenge: bytes, timestamp: bytes,
    target_info: bytes,
) -> NTLMv2Responses:
    """MS-NLMP 3.3.2 ComputeResponse for NTLMv2."""
    blob = (
        b"\x01\x01" + b"\0" * 6 + timestamp + client_challenge + b"\0" * 4 + target_info + b"\0" * 4
    )
    proof = hmac.digest(response_key, server_challenge + blob, "md5")
    lm = hmac.digest(response_key, server_challenge + client_challenge, "md5") + client_challenge
    return NTLMv2Responses(
        nt_response=proof + blob,
        lm_response=lm,
        session_base_key=hmac.digest(response_key, proof, "md5"),
    )


def _security_buffer(message: bytes, offset: int) -> bytes:
    if len(message) < offset + 8:
        raise SASLError("the NTLM challenge is too short")
    length = int.from_bytes(message[offset : offset + 2], "little")
    start = int.from_bytes(message[offset + 4 : offset + 8], "little")
    if start + length > len(message):
        raise SASLError("an NTLM field points past the end of the challenge")
    return message[start : start + length]


class NTLM(ClientMechanism):
    """NEGOTIATE, then AUTHENTICATE with NTLMv2 responses (never the LM/NTLMv1 ones
    MS-NLMP keeps for old peers). ``DOMAIN\\user`` names a domain; else none."""

    name = "NTLM"

    def __init__(
        self, user: str, password: str, workstation: str = "",
        client_challenge: bytes | None = None, timestamp: bytes | None = None,
    ) -> None:
        domain, backslash, name = user.partition("\\")
        self.domain, self.user = (domain, name) if backslash else ("", user)
        self._password = password
        self._workstation = workstation
        self._client_challenge = client_challenge or secrets.token_bytes(8)
        self._timestamp = timestamp
        self._answered = False

    def initial(self) -> bytes | None:
        return (
            NTLM_SIGNATURE + (1).to_bytes(4, "little")
            + NTLM_NEGOTIATE_FLAGS.to_bytes(4, "little") + b"\0" * 16
        )

    def respond(self, challenge: bytes) -> bytes:
        if not challenge:  # the server did not take the initial response
            return self.initial() or b""
        if self._answered:
            raise SASLError("NTLM has answered the challenge already")
        if challenge[:8] != NTLM_SIGNATURE or challenge[8:12] != (2).to_bytes(4, "little"):
            raise SASLError("not an NTLM CHALLENGE message")
        if len(challenge) < 32:
            raise SASLError("the NTLM challenge is too short")
        flags = int.from_bytes(challenge[20:24], "little")
        server_challenge = challenge[24:32]
        target_info = _security_buffer(challenge, 40) if flags & NTLM_TARGET_INFO else b""
        timestamp = self._timestamp
        if timestamp is None:
            timestamp = _av_timestamp(target_info) or _filetime_now()
        key = ntowf_v2(self.user, self._password, self.domain)
        responses = ntlm_v2_responses(
            key, server_challenge, self._client_challenge, timestamp, target_info
        )
        self._answered = True
        unicode = bool(flags & NTLM_UNICODE)
        encoding = "utf-16-le" if unicode else "ascii"
        negotiated = (flags & NTLM_NEGOTIATE_FLAGS) | (NTLM_UNICODE if unicode else NTLM_OEM)
        fields = [
            responses.lm_response, responses.nt_response, self.domain.encode(encoding, "replace"),
            self.user.encode(encoding, "replace"), self._workstation.encode(encoding, "replace"),
            b"",  # no session key exchange: authentication only
        ]
        header = NTLM_SIGNATURE + (3).to_bytes(4, "little")
        offset = len(header) + 8 * len(fields) + 4
        buffers, payload = b"", b""
        for field in fields:
            buffers += (
                len(field).to_bytes(2, "little") * 2 + (offset + len(payload)).to_bytes(4, "little")
            )
            payload += field
        return header + buffers + negotiated.to_bytes(4, "little") + payload


def _av_timestamp(target_info: bytes) -> bytes | None:
    """MsvAvTimestamp (7) from the server's AV pairs: NTLMv2 uses the server's time."""
    i = 0
    while i + 4 <= len(target_info):
        av_id = int.from_bytes(target_info[i : i + 2], "little")
        length = int.from_bytes(target_info[i + 2 : i + 4], "little")
        if av_id == 0:
            break
        if av_id == 7 and length == 8:
            return target_info[i + 4 : i + 12]
        i += 4 + length
    return None


def _filetime_now() -> bytes:
    import time

    return ((int(time.time()) + 11_644_473_600) * 10_000_000).to_bytes(8, "little")


# -- EXTERNAL (RFC 4422 appendix A) -----------------------------------------------------


class External(ClientMechanism):
    """The TLS client certificate is the identity; the answer is the authorization
    identity asked for: empty, the certificate's own."""

    name = "EXTERNAL"

    def __init__(self, authzid: str = "") -> None:
        self._answer = authzid.encode("utf-8")

    def initial(self) -> bytes | None:
        return self._answer

    def respond(self, challenge: bytes) -> bytes:
        return self._answer


# -- choosing ------------------------------------------------------------------------

PASSWORD_MECHANISMS: Final = (
    "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"
)  # strongest first
TOKEN_MECHANISMS: Final = ("OAUTHBEARER", "XOAUTH2")
# Named only, never chosen by auto; what is wrong with each, as the client warns.
WEAK_PASSWORD_MECHANISMS: Final = {
    "DIGEST-MD5": N_("historic (RFC 6331: its MD5 of the password is weak and its realm "
                     "handling broken in practice)"),
    "NTLM": N_("weak (an eavesdropper can crack its NTLMv2 answer offline, and the server "
               "is not authenticated)"),
}
# Need no secret: the TLS client certificate (--cert/--key) is the identity; the
# Kerberos ticket (kinit) is. Never asked a password for; a USER given is the
# authorization identity to act as.
CERTIFICATE_MECHANISMS: Final = ("EXTERNAL",)
TICKET_MECHANISMS: Final = ("GSSAPI",)
NO_SECRET_MECHANISMS: Final = CERTIFICATE_MECHANISMS + TICKET_MECHANISMS
MECHANISMS: Final = (
    PASSWORD_MECHANISMS + TOKEN_MECHANISMS + tuple(WEAK_PASSWORD_MECHANISMS)
    + NO_SECRET_MECHANISMS
)


def client_mechanism(
    name: str, user: str, secret: str, host: str = "", port: int = 0, protocol: str = "smtp",
    context: SecurityContext | None = None,
) -> ClientMechanism:
    """The client of ``name`` (upper case) with its credentials: ``secret`` is the
    password, or the token for XOAUTH2/OAUTHBEARER (EXTERNAL and GSSAPI have none:
    ``user`` is the authorization identity, empty for the certificate's or the
    ticket's). ``protocol`` names DIGEST-MD5's service (smtp, pop, imap); GSSAPI needs
    the Kerberos ``context`` (``net.gssapi``) for that service."""
    if name == "PLAIN":
        return Plain(user, secret)
    if name == "LOGIN":
        return Login(user, secret)
    if name == "CRAM-MD5":
        return CramMD5(user, secret)
    if name in SCRAM_HASHES:
        return Scram(name, user, secret)
    if name == "XOAUTH2":
        return XOAuth2(user, secret)
    if name == "OAUTHBEARER":
        return OAuthBearer(user, secret, host, port)
    if name == "DIGEST-MD5":
        return DigestMD5(user, secret, host, SASL_SERVICES.get(protocol, protocol))
    if name == "NTLM":
        return NTLM(user, secret)
    if name == "EXTERNAL":
        return External(user)
    if name == "GSSAPI" and context is not None:
        from mailtalk.protocols.sasl_gssapi import Gssapi

        return Gssapi(context, user)
    raise ValueError(f"mailtalk does not do SASL {name}")


def choose(offered: list[str] | None, token: bool) -> str:
    """The strongest mechanism offered that we have credentials for: a token's when
    ``token``, else a password's; PLAIN when the server does not say (POP3 without
    CAPA, IMAP without AUTH=)."""
    ours = TOKEN_MECHANISMS if token else PASSWORD_MECHANISMS
    if offered is None:
        return ours[-1] if token else "PLAIN"
    upper = {m.upper() for m in offered}
    for name in ours:
        if name in upper:
            return name
    return ours[0] if token else "PLAIN"


def auto_mechanism(
    offered: list[str] | tuple[str, ...] | None, have_token: bool, have_ticket: bool = False
) -> str:
    """What ``send``/``diagnose login`` use without a mechanism named: with a token, the
    token mechanism offered (OAUTHBEARER, then XOAUTH2); with a Kerberos ticket for the
    user (``have_ticket``), GSSAPI when offered; otherwise, and when the server offers
    none of those, the strongest password mechanism offered (``choose``)."""
    upper = {m.upper() for m in offered or ()}
    if have_token:
        for name in TOKEN_MECHANISMS:
            if name in upper:
                return name
    if have_ticket and "GSSAPI" in upper:
        return "GSSAPI"
    return choose(list(offered) if offered else None, token=False)
