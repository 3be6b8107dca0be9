"""The users file: scrypt hashes, validation, atomic saving, timing-safe verification."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

import mailtalk.servers.users as users_module
from mailtalk.servers.policy import ControlError
from mailtalk.servers.users import (
    Users,
    hash_password,
    parse_user_spec,
    validate_name,
)

PASSWORD = "correct horse: battery staple"


def users_file(root: Path) -> Path:
    return root / "control" / "users"


def test_round_trip(tmp_path: Path) -> None:
    users = Users.load(tmp_path)
    assert users.names() == []
    users.add("bob", "hunter2")
    users.add("alice", PASSWORD)
    users.save()
    loaded = Users.load(tmp_path)
    assert loaded.names() == ["alice", "bob"]
    assert loaded.exists("alice") and not loaded.exists("carol")
    assert loaded.verify("alice", PASSWORD)
    assert loaded.verify("bob", "hunter2")
    assert not loaded.verify("alice", "hunter2")
    assert not loaded.verify("alice", "")
    assert not loaded.verify("Alice", PASSWORD)  # names are exact


def test_add_sets_a_new_password(tmp_path: Path) -> None:
    users = Users.load(tmp_path)
    users.add("alice", "old")
    users.add("alice", "new")
    users.save()
    loaded = Users.load(tmp_path)
    assert loaded.names() == ["alice"]
    assert loaded.verify("alice", "new") and not loaded.verify("alice", "old")


def test_file_holds_no_clear_text_password(tmp_path: Path) -> None:
    users = Users.load(tmp_path)
    users.add("alice", PASSWORD)
    users.add("bob", "s3cret-Pässwörd")
    users.save()
    raw = users_file(tmp_path).read_bytes()
    for secret in (PASSWORD, "s3cret-Pässwörd", "battery", "s3cret"):
        assert secret.encode() not in raw
    lines = [line for line in raw.decode().splitlines() if not line.startswith("#")]
    assert len(lines) == 2
    for line in lines:
        name, hashed = line.split(":", 1)
        assert name in ("alice", "bob")
        assert hashed.startswith("$scrypt$n=16384,r=8,p=1$")


def test_same_password_gets_different_salts() -> None:
    assert hash_password("same") != hash_password("same")


def test_hash_format() -> None:
    _, kind, params, salt, key = hash_password("x").split("$")
    assert (kind, params) == ("scrypt", "n=16384,r=8,p=1")
    assert len(users_module._b64decode(salt)) == 16
    assert len(users_module._b64decode(key)) == 32


def test_save_is_0600_and_atomic(tmp_path: Path) -> None:
    users = Users.load(tmp_path)
    users.add("alice", "pw")
    users.save()
    users.add("bob", "pw")
    users.save()
    path = users_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["users"]  # no temporary left
    assert Users.load(tmp_path).names() == ["alice", "bob"]


def test_save_replaces_a_looser_file(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("")
    path.chmod(0o644)
    users = Users.load(tmp_path)
    users.add("alice", "pw")
    users.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_ignores_comments_and_blank_lines(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(f"# users\n\n  alice:{hash_password('pw')}  \n")
    assert Users.load(tmp_path).verify("alice", "pw")


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("alice:secret\n", 1, "not a $scrypt$"),  # clear text is refused, not trusted
        ("# x\nalice\n", 2, "expected name:hash"),
        ("Alice:{hash}\n", 1, "lower-case"),
        ("alice:{hash}\nalice:{hash}\n", 2, "already on line 1"),
        ("alice:$scrypt$n=1000,r=8,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5\n", 1, "n=1000"),
        ("alice:$scrypt$n=16384,r=8,p=1$c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5\n", 1, "too short"),
    ],
)
def test_malformed_users_file(tmp_path: Path, content: str, line: int, words: str) -> None:
    path = users_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(content.replace("{hash}", hash_password("pw")))
    with pytest.raises(ControlError) as caught:
        Users.load(tmp_path)
    assert (caught.value.path, caught.value.line) == (path, line)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "name", ["alice", "a", "bob.smith", "b_o-b", "0day", "_x", "a" * 64, "alice-info"]
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        ("Alice", "lower-case letters"),
        (".hidden", "starts with '.'"),
        ("-dash", "starts with '-'"),
        ("a" * 65, "longer than 64"),
        ("al ice", "lower-case letters"),
        ("alice:x", "lower-case letters"),
        ("ålice", "lower-case letters"),
        ("a/b", "lower-case letters"),
    ],
)
def test_invalid_names(tmp_path: Path, name: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        validate_name(name)
    with pytest.raises(ValueError, match=words):
        Users.load(tmp_path).add(name, "pw")


def test_add_refuses_an_empty_password(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty password"):
        Users.load(tmp_path).add("alice", "")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("alice:secret", ("alice", "secret")),
        ("alice:with:colons", ("alice", "with:colons")),
        ("bob: spaced ", ("bob", " spaced ")),
    ],
)
def test_parse_user_spec(spec: str, expected: tuple[str, str]) -> None:
    assert parse_user_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("hunter2", "expected NAME:PASSWORD"),
        ("alice:", "empty password"),
        (":hunter2", "empty user name"),
        ("Alice:hunter2", "lower-case"),
    ],
)
def test_parse_user_spec_errors(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        parse_user_spec(spec)
    assert "hunter2" not in str(caught.value)  # errors never show the password


def count_scrypt_runs(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """From now on, the salt of every scrypt run, in order."""
    derived: list[bytes] = []
    original = users_module._ScryptHash.derive

    def counting_derive(self: users_module._ScryptHash, password: str) -> bytes:
        derived.append(self.salt)
        return original(self, password)

    monkeypatch.setattr(users_module._ScryptHash, "derive", counting_derive)
    return derived


def test_unknown_user_still_runs_scrypt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = users_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(f"alice:{hash_password('pw')}\n")  # a password this process never saw
    users = Users.load(tmp_path)
    derived = count_scrypt_runs(monkeypatch)
    assert not users.verify("nobody", "pw")
    assert not users.verify("Not A Valid Name", "pw")
    assert users.verify("alice", "pw")
    assert len(derived) == 3
    assert derived[0] == derived[1] == users_module._DUMMY_HASH.salt


def test_unknown_and_known_users_take_comparable_time(tmp_path: Path) -> None:
    users = Users.load(tmp_path)
    users.add("alice", "pw")

    # CPU time, not wall time: another process on a loaded machine stretches the wall
    # clock of one call and not the other. How fast a login is belongs to bench/.
    def best_of_three(name: str) -> float:
        times = []
        for _ in range(3):
            started = time.process_time()
            users.verify(name, "wrong")
            times.append(time.process_time() - started)
        return min(times)

    known, unknown = best_of_three("alice"), best_of_three("nobody")
    # Both run one scrypt; a skipped scrypt would be orders of magnitude faster.
    assert unknown > known / 4


def test_verify_uses_the_parameters_stored_in_the_hash(tmp_path: Path) -> None:
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"pw", salt=salt, n=2**10, r=8, p=1, dklen=32)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode().rstrip("=")

    path = users_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(f"alice:$scrypt$n=1024,r=8,p=1${b64(salt)}${b64(key)}\n")
    users = Users.load(tmp_path)
    assert users.verify("alice", "pw") and not users.verify("alice", "pw2")


def test_adding_a_user_again_with_the_same_password_changes_nothing(tmp_path: Path) -> None:
    users = Users.load(tmp_path)
    assert users.add("alice", PASSWORD)
    users.save()
    again = Users.load(tmp_path)
    assert not again.add("alice", PASSWORD)  # mailtalk serve --user: no file to rewrite
    assert again.add("alice", "another")
    assert again.verify("alice", "another") and not again.verify("alice", PASSWORD)


def test_a_password_hashed_before_in_this_process_costs_no_scrypt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second server of a test suite, on a new root, with the same users."""
    Users.load(tmp_path / "first").add("alice", PASSWORD)
    derived = count_scrypt_runs(monkeypatch)
    second = Users.load(tmp_path / "second")
    assert second.add("alice", PASSWORD)
    assert derived == []
    assert second.verify("alice", PASSWORD)  # known right: no scrypt run
    assert derived == []
    assert not second.verify("alice", "wrong")  # a wrong one still runs scrypt
    assert not second.verify("nobody", PASSWORD)  # and so does an unknown name
    assert len(derived) == 2
    # What is remembered is a keyed digest of the password, not the password.
    remembered = b"".join(users_module._KNOWN_HASHES)
    assert PASSWORD.encode() not in remembered


def test_only_passwords_given_to_this_process_are_known_without_scrypt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password that only the users file holds costs scrypt at every login: a proven
    login is not remembered (the process would hold a fast digest of it)."""
    path = users_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(f"bob:{hash_password('bobs secret')}\n")
    users_module._KNOWN_HASHES.clear()
    users = Users.load(tmp_path)
    derived = count_scrypt_runs(monkeypatch)
    assert users.verify("bob", "bobs secret") and users.verify("bob", "bobs secret")
    assert len(derived) == 2


def test_a_changed_hash_is_checked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A known password no longer counts once the file holds another hash for the name
    (the users file edited while the server runs)."""
    users = Users.load(tmp_path)
    users.add("alice", PASSWORD)
    users.save()
    path = users_file(tmp_path)
    path.write_text(f"alice:{hash_password('new one')}\n")
    reloaded = Users.load(tmp_path)
    derived = count_scrypt_runs(monkeypatch)
    assert not reloaded.verify("alice", PASSWORD)
    assert reloaded.verify("alice", "new one")
    assert len(derived) == 2
