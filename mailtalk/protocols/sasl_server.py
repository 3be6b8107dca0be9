"""SASL mechanisms, server side and sans-IO: the challenges a server sends and the
checks it makes, for the reference servers' SMTP AUTH, POP3 AUTH and IMAP
AUTHENTICATE alike (CRAM-MD5, SCRAM-SHA-1/-256, XOAUTH2, OAUTHBEARER; PLAIN and
LOGIN need no exchange of their own).

The encoding, the SCRAM arithmetic and the mechanism names are the client's, in
:mod:`mailtalk.protocols.sasl`: one definition serves both roles.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mailtalk.protocols.sasl import (
    SCRAM_HASHES,
    SCRAM_MIN_ITERATIONS,
    TOKEN_MECHANISMS,
    SASLError,
    cram_md5_answer,
    decode,
    encode,
    parse_attributes,
    scram_keys,
)


def cram_md5_challenge(hostname: str) -> bytes:
    """``<random.time@host>`` as RFC 2195 shapes it: never the same twice."""
    return f"<{secrets.randbelow(10**12)}.{secrets.token_hex(4)}@{hostname}>".encode()


def cram_md5_check(challenge: bytes, answer: bytes, password_of: dict[str, str]) -> str | None:
    """The user ``answer`` proves to be, or None. ``password_of``: users' clear
    passwords (only those can be checked)."""
    user, space, _digest = answer.decode("utf-8", "replace").rpartition(" ")
    password = password_of.get(user) if space else None
    if password is None:
        return None
    expected = cram_md5_answer(user, password.encode(), challenge)
    return user if hmac.compare_digest(expected, answer) else None


def parse_bearer(mechanism: str, answer: bytes) -> tuple[str, str]:
    """(user, token) from an XOAUTH2 or OAUTHBEARER answer; SASLError otherwise."""
    text = answer.decode("utf-8", "replace")
    if mechanism == "OAUTHBEARER":
        header, _, rest = text.partition("\x01")
        fields = [f for f in header.split(",")]
        if len(fields) < 2 or (fields[0] not in ("n", "y") and not fields[0].startswith("p=")):
            raise SASLError("not an OAUTHBEARER gs2 header")
        user = next((f[2:] for f in fields[1:] if f.startswith("a=")), "")
        user = user.replace("=2C", ",").replace("=3D", "=")
        pairs = rest.split("\x01")
    else:
        pairs = text.split("\x01")
        user = next((p[5:] for p in pairs if p.startswith("user=")), "")
    auth = next((p[5:] for p in pairs if p.startswith("auth=")), "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token or not user:
        raise SASLError(f"not a {mechanism} answer with a user and a Bearer token")
    return user, token.strip()


def bearer_error_challenge(scope: str = "") -> bytes:
    """What a server sends for a refused token (RFC 7628 3.2.2, Google's XOAUTH2)."""
    body: dict[str, str] = {"status": "invalid_token", "schemes": "bearer"}
    if scope:
        body["scope"] = scope
    return json.dumps(body, separators=(",", ":")).encode()


# -- server exchanges -----------------------------------------------------------------
#
# A server mechanism is driven like the client's: ``start(initial)`` with the initial
# response (None: the client sent none), then ``respond(answer)`` for each decoded
# answer. Each step says what the server does next: send a ``Challenge``; ``Check`` a
# secret (the server runs ``verify`` where it checks passwords: off its event loop,
# paced and budgeted), then tell ``checked(ok)`` the verdict; or it is ``Done``.
# Base64 and ``*`` (cancel) are the protocols' business, not the mechanism's.


@dataclass(frozen=True)
class Challenge:
    data: bytes


@dataclass(frozen=True)
class Check:
    user: str
    verify: Callable[[], bool]


@dataclass(frozen=True)
class Done:
    user: str
    ok: bool
    malformed: str = ""  # why the client's (decoded) data broke the mechanism: a failed login


ServerStep = Challenge | Check | Done


class ServerMechanism:
    name: str = ""

    def __init__(self) -> None:
        self.user = ""

    def start(self, initial: bytes | None) -> ServerStep:
        return Challenge(b"") if initial is None else self.respond(initial)

    def respond(self, answer: bytes) -> ServerStep:
        raise NotImplementedError

    def checked(self, ok: bool) -> ServerStep:
        """The verdict on the last ``Check``: more to say, or the end."""
        return Done(self.user, ok)


class CramMD5Server(ServerMechanism):
    """RFC 2195: a fresh challenge, then ``user digest``; needs the clear password."""

    name = "CRAM-MD5"

    def __init__(self, hostname: str, password_of: Callable[[str], str | None]) -> None:
        super().__init__()
        self._password_of = password_of
        self._challenge = cram_md5_challenge(hostname)

    def start(self, initial: bytes | None) -> ServerStep:
        if initial:
            return Done("", False, "CRAM-MD5 takes no initial response")
        return Challenge(self._challenge)

    def respond(self, answer: bytes) -> ServerStep:
        user, space, digest = answer.decode("utf-8", "replace").rpartition(" ")
        if not space or not user or len(digest) != 32:
            return Done("", False, "not a CRAM-MD5 answer (user and 32 hex digits)")
        self.user = user

        def verify() -> bool:
            password = self._password_of(user)
            return password is not None and cram_md5_check(
                self._challenge, answer, {user: password}
            ) == user

        return Check(user, verify)


SCRAM_SERVER_ITERATIONS: Final = SCRAM_MIN_ITERATIONS


class ScramServer(ServerMechanism):
    """RFC 5802 without channel binding; the keys are derived from the clear password
    with a fresh salt each time (a client caching salted passwords gains nothing, and
    nothing is lost). An unknown user gets a challenge like a known one's and fails at
    the proof, so the exchange does not tell which names exist."""

    def __init__(self, name: str, password_of: Callable[[str], str | None],
                 nonce: str | None = None, salt: bytes | None = None) -> None:
        super().__init__()
        if name not in SCRAM_HASHES:
            raise ValueError(f"no SCRAM hash for {name}")
        self.name = name
        self._hash = SCRAM_HASHES[name]
        self._password_of = password_of
        self._server_nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self._salt = salt or secrets.token_bytes(16)
        self._gs2_header = ""
        self._first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._signature: bytes | None = None
        self._finished = False

    def start(self, initial: bytes | None) -> ServerStep:
        if initial is None:
            return Challenge(b"")
        return self.respond(initial)

    def respond(self, answer: bytes) -> ServerStep:
        try:
            if not self._server_first:
                return self._first(answer)
            if not self._finished:
                return self._final(answer)
        except SASLError as error:
            return Done(self.user, False, str(error))
        # The client's (empty) answer to our v=: the exchange succeeded.
        return Done(self.user, True)

    def _first(self, client_first: bytes) -> ServerStep:
        text = client_first.decode("utf-8", "replace")
        flag, comma1, rest = text.partition(",")
        authzid, comma2, bare = rest.partition(",")
        if not comma1 or not comma2 or flag not in ("n", "y"):
            raise SASLError("not a SCRAM client-first message (channel binding is not offered)")
        if authzid and not authzid.startswith("a="):
            raise SASLError("bad SCRAM authzid")
        attributes = dict(parse_attributes(bare.encode()))
        if "m" in attributes:
            raise SASLError("unknown SCRAM extension m=")
        if "n" not in attributes or not attributes.get("r"):
            raise SASLError("the SCRAM client-first message has no n= or r=")
        self.user = attributes["n"].replace("=2C", ",").replace("=3D", "=")
        self._gs2_header = f"{flag},{authzid},"
        self._first_bare = bare
        self._nonce = attributes["r"] + self._server_nonce
        self._server_first = f"r={self._nonce},s={encode(self._salt)},i={SCRAM_SERVER_ITERATIONS}"
        return Challenge(self._server_first.encode())

    def _final(self, client_final: bytes) -> ServerStep:
        pairs = parse_attributes(client_final)
        if len(pairs) < 3 or pairs[-1][0] != "p":
            raise SASLError("the SCRAM client-final message does not end in p=")
        attributes = dict(pairs)
        if decode(attributes.get("c", "")) != self._gs2_header.encode():
            raise SASLError("the SCRAM channel binding c= does not repeat the gs2 header")
        if attributes.get("r") != self._nonce:
            raise SASLError("the SCRAM nonce is not the one we agreed")
        proof = decode(attributes["p"])
        without_proof = client_final.decode().rpartition(",p=")[0]
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        self._finished = True

        def verify() -> bool:
            password = self._password_of(self.user)
            keys = scram_keys(self._hash, password or "\0", self._salt, SCRAM_SERVER_ITERATIONS)
            signature = hmac.digest(keys.stored_key, auth_message, self._hash)
            if len(proof) != len(signature):
                return False
            client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
            matched = hmac.compare_digest(hashlib.new(self._hash, client_key).digest(),
                                          keys.stored_key)
            self._signature = hmac.digest(keys.server_key, auth_message, self._hash)
            return matched and password is not None

        return Check(self.user, verify)

    def checked(self, ok: bool) -> ServerStep:
        if not ok or self._signature is None:
            return Done(self.user, False)
        # RFC 4954/5034/3501: data with the success goes as a last challenge.
        return Challenge(f"v={encode(self._signature)}".encode())


class BearerServer(ServerMechanism):
    """XOAUTH2 or OAUTHBEARER: the user and token of the answer, checked by
    ``token_ok(user, token)``; a refused token gets the JSON error challenge, and the
    client's acknowledgement (an empty line, ``^A``) the final error."""

    def __init__(self, name: str, token_ok: Callable[[str, str], bool]) -> None:
        super().__init__()
        if name not in TOKEN_MECHANISMS:
            raise ValueError(f"{name} is not a token mechanism")
        self.name = name
        self._token_ok = token_ok
        self._refused = False

    def respond(self, answer: bytes) -> ServerStep:
        if self._refused:
            return Done(self.user, False)  # the acknowledgement of the error challenge
        try:
            user, token = parse_bearer(self.name, answer)
        except SASLError as error:
            return Done("", False, str(error))
        self.user = user
        return Check(user, lambda: self._token_ok(user, token))

    def checked(self, ok: bool) -> ServerStep:
        if ok:
            return Done(self.user, True)
        self._refused = True
        if self.name == "XOAUTH2":  # Google's words: an HTTP status and the scope
            return Challenge(json.dumps(
                {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"},
                separators=(",", ":"),
            ).encode())
        return Challenge(bearer_error_challenge())
