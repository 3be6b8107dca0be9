"""The reference servers' users: ``ROOT/control/users``, one ``name:hash`` per line.

Hashes are stdlib scrypt, written as ``$scrypt$n=16384,r=8,p=1$<salt>$<hash>`` with the
salt and hash in standard base64 without padding. The file never holds a clear-text
password; a line that is not such a hash is refused rather than trusted.

Names are matched exactly (they are lower-case by construction, see ``validate_name``);
folding the case of a login name is the servers' business.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from pathlib import Path
from typing import NamedTuple

from mailtalk.servers.policy import CONTROL_DIR, ControlError
from mailtalk.servers.scrypt_worker import MAX_MEMORY as _MAX_SCRYPT_MEMORY
from mailtalk.store.filesystem import make_directory

USERS_FILE = "users"

MAX_NAME_LENGTH = 64
_NAME_RE = re.compile(r"[a-z0-9_][a-z0-9._-]*")

# n=2**14, r=8 costs 16 MiB and some tens of milliseconds: enough against offline guessing
# for a local reference server, fast enough that every login in the tests stays cheap.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
# Parameters read from the file are bounded so that a hand-edited line cannot make every
# login allocate gigabytes.
_MAX_SCRYPT_N = 2**20
_HASH_RE = re.compile(
    r"\$scrypt\$n=(?P<n>[0-9]+),r=(?P<r>[0-9]+),p=(?P<p>[0-9]+)"
    r"\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<key>[A-Za-z0-9+/]+)"
)

_FILE_HEADER = """\
# mailtalk users: name:scrypt-hash, one per line. Managed by 'mailtalk serve --user';
# never put a clear-text password here.
"""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise ``ValueError`` saying why."""
    if not name:
        raise ValueError("empty user name")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"user name longer than {MAX_NAME_LENGTH} characters: {name[:20]!r}...")
    if name[0] in ".-":
        raise ValueError(f"user name {name!r} starts with {name[0]!r}")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"user name {name!r} may hold only lower-case letters, digits, '.', '_' and '-'"
        )
    return name


def parse_user_spec(spec: str) -> tuple[str, str]:
    """``"alice:secret"`` -> ``("alice", "secret")``, for ``mailtalk serve --user``.

    The password may contain ``:``; error messages never show it.
    """
    name, colon, password = spec.partition(":")
    if not colon:
        # Not echoed: without a colon the text may well be the password alone.
        raise ValueError("expected NAME:PASSWORD (e.g. alice:secret), but there is no ':'")
    if not password:
        raise ValueError(f"empty password for user {name!r} (expected NAME:PASSWORD)")
    return validate_name(name), password


def user_spec_with_password(spec: str, password: str | None) -> tuple[str, str]:
    """``--user``: ``NAME:PASSWORD``, or ``NAME`` alone with ``password`` from the
    environment ($MAILTALK_SERVE_PASSWORD), which ``/proc/PID/cmdline`` does not show."""
    # Without a ':' the value is never shown: it may be a password typed alone.
    expected = ("expected --user NAME:PASSWORD (e.g. alice:secret), or --user NAME with the "
                "password in $MAILTALK_SERVE_PASSWORD")
    if ":" in spec:
        return parse_user_spec(spec)
    if password is None:
        raise ValueError(f"{expected}; the value given has no ':' and the variable is not set")
    try:
        return validate_name(spec), password
    except ValueError:
        raise ValueError(
            f"{expected}; the value given is not a user name (lower-case letters, digits, "
            "'.', '_' and '-')") from None


def parse_users_text(text: str, where: str) -> list[tuple[str, str]]:
    """``--users-file``: one ``NAME:PASSWORD`` a line, ``#`` comments and blank lines
    skipped; ``ValueError`` naming ``where`` and the line (never the password)."""
    users: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            name, password = parse_user_spec(line.strip())
        except ValueError as error:
            raise ValueError(f"{where}:{number}: {error}") from None
        if name in seen:
            raise ValueError(f"{where}:{number}: user {name!r} is already on line {seen[name]}")
        seen[name] = number
        users.append((name, password))
    return users


def parse_oauth2_tokens(text: str, where: str) -> dict[str, str]:
    """``--oauth2-tokens``: one ``NAME TOKEN`` a line, ``#`` comments and blank lines
    skipped; the bearer tokens XOAUTH2 and OAUTHBEARER accept for each user. A bad
    line is ``ValueError`` naming ``where`` and the line (never the token)."""
    tokens: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{where}:{number}: expected NAME TOKEN (two words), "
                             f"found {len(fields)} words")
        name, token = fields
        try:
            validate_name(name)
        except ValueError as error:
            raise ValueError(f"{where}:{number}: {error}") from None
        if name in seen:
            raise ValueError(f"{where}:{number}: user {name!r} is already on line {seen[name]}")
        seen[name] = number
        tokens[name] = token
    return tokens


# A NamedTuple, not a frozen dataclass: see protocols.common.Line.
class _ScryptHash(NamedTuple):
    """A password's scrypt hash and its parameters, as the users file holds it."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def derive(self, password: str) -> bytes:
        # In a worker process when the servers run (servers/scrypt_worker.py says why).
        from mailtalk.servers.scrypt_worker import derive

        return derive(password.encode("utf-8"), self.salt, self.n, self.r, self.p, len(self.key))

    def matches(self, password: str) -> bool:
        import hmac

        return hmac.compare_digest(self.derive(password), self.key)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str) -> str:
    """A fresh salted scrypt hash of ``password`` in the users-file format."""
    import secrets

    salt = secrets.token_bytes(SALT_BYTES)
    key = _ScryptHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, b"\0" * KEY_BYTES).derive(password)
    return f"$scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}${_b64encode(salt)}${_b64encode(key)}"


# The hashes this process made or found right, by an HMAC of the password under a key
# that lives and dies with the process (so never the password itself): the same users
# given to a server started again in this process (a test suite's next mailtalk_server
# fixture, on a new root) cost no new scrypt run, tens of milliseconds each. The roots
# of one process then share a salt for one password; whoever can read both users files
# (0600: their owner) learns only that the passwords they gave are the same.
_KNOWN_HASHES: dict[bytes, str] = {}
_MAX_KNOWN_HASHES = 1024


@functools.cache
def _process_key() -> bytes:
    import secrets

    return secrets.token_bytes(32)


def _password_digest(password: str) -> bytes:
    import hashlib
    import hmac

    return hmac.digest(_process_key(), password.encode("utf-8"), hashlib.sha256)


def _remember(password: str, encoded: str) -> None:
    if len(_KNOWN_HASHES) >= _MAX_KNOWN_HASHES:
        _KNOWN_HASHES.clear()
    _KNOWN_HASHES[_password_digest(password)] = encoded


def _hash_once(password: str) -> str:
    """A hash of ``password``: one made or checked before in this process, else new."""
    encoded = _KNOWN_HASHES.get(_password_digest(password))
    if encoded is None:
        encoded = hash_password(password)
        _remember(password, encoded)
    return encoded


def _is_hash_of(encoded: str, password: str) -> bool:
    if _KNOWN_HASHES.get(_password_digest(password)) == encoded:
        return True
    if _parse_hash(encoded).matches(password):
        _remember(password, encoded)
        return True
    return False


def _parse_hash(encoded: str) -> _ScryptHash:
    match = _HASH_RE.fullmatch(encoded)
    if match is None:
        raise ValueError("not a $scrypt$n=...,r=...,p=...$salt$hash password hash")
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if n < 2 or n & (n - 1) or n > _MAX_SCRYPT_N:
        raise ValueError(f"scrypt n={n} is not a power of two up to {_MAX_SCRYPT_N}")
    if not 1 <= r <= 64 or not 1 <= p <= 16 or 128 * n * r * (p + 1) > _MAX_SCRYPT_MEMORY:
        raise ValueError(f"scrypt r={r}, p={p} out of range")
    try:
        salt, key = _b64decode(match["salt"]), _b64decode(match["key"])
    except binascii.Error:
        raise ValueError("bad base64 in the password hash") from None
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("password hash salt or key too short")
    return _ScryptHash(n, r, p, salt, key)


# Unknown users are checked against this so that they take as long as known ones: the
# time of a failed login must not tell whether the name exists.
_DUMMY_HASH = _ScryptHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, b"mailtalk-no-user", b"\0" * KEY_BYTES)


class Users:
    """The users file of one ROOT, in memory; ``save()`` writes it back."""

    def __init__(self, path: Path, hashes: dict[str, str] | None = None) -> None:
        self.path = path
        self._hashes: dict[str, str] = dict(hashes or {})

    @classmethod
    def load(cls, root: Path) -> Users:
        """Read ``ROOT/control/users``; no file means no users."""
        path = Path(root) / CONTROL_DIR / USERS_FILE
        try:
            content = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        hashes: dict[str, str] = {}
        lines: dict[str, int] = {}
        for number, raw in enumerate(content.splitlines(), start=1):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            name, colon, encoded = text.partition(":")
            try:
                if not colon:
                    raise ValueError("expected name:hash")
                validate_name(name)
                _parse_hash(encoded)
            except ValueError as error:
                raise ControlError(path, number, str(error)) from None
            if name in hashes:
                raise ControlError(path, number, f"user {name!r} is already on line {lines[name]}")
            hashes[name] = encoded
            lines[name] = number
        return cls(path, hashes)

    def add(self, name: str, password: str) -> bool:
        """Add ``name`` with ``password``, or set a new password if ``name`` exists;
        False when ``name`` has this password already (nothing changed to save)."""
        validate_name(name)
        if not password:
            raise ValueError(f"empty password for user {name!r}")
        current = self._hashes.get(name)
        if current is not None and _is_hash_of(current, password):
            return False
        self._hashes[name] = _hash_once(password)
        return True

    def exists(self, name: str) -> bool:
        return name in self._hashes

    def names(self) -> list[str]:
        return sorted(self._hashes)

    def verify(self, name: str, password: str) -> bool:
        """Is ``password`` right for ``name``? Unknown names cost the same time.

        A password this process hashed or checked against this very hash before (the
        ``--user`` passwords, checked at start) is known right without another scrypt
        run, as Dovecot's auth cache knows a login it checked: only right passwords
        are ever remembered, so a wrong one, for a known name or not, still costs one
        scrypt run, and failures take the same time whether the name exists or not.
        (Passwords that only the users file holds are not remembered when a login
        proves them: the process would then hold a fast digest of each.)"""
        encoded = self._hashes.get(name)
        if encoded is not None and _KNOWN_HASHES.get(_password_digest(password)) == encoded:
            return True
        stored = _parse_hash(encoded) if encoded is not None else _DUMMY_HASH
        matched = stored.matches(password)
        return matched and encoded is not None

    def save(self) -> None:
        """Write the file atomically (temporary file, fsync, rename), mode 0600."""
        import tempfile  # here: a start that changes no user writes nothing

        make_directory(self.path.parent)
        content = _FILE_HEADER + "".join(f"{name}:{self._hashes[name]}\n" for name in self.names())
        # mkstemp creates the file 0600, so the hashes are never readable by others.
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".users.")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(content)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(self.path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; not every platform lets a directory be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
