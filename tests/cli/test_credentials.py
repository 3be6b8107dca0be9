"""Passwords from ~/.netrc: the right entry, and never a catch-all for another login."""

from __future__ import annotations

from pathlib import Path

from mailtalk.credentials import netrc_password


def write_netrc(tmp_path: Path, text: str) -> str:
    path = tmp_path / "netrc"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_machine_entry_for_the_user(tmp_path: Path) -> None:
    path = write_netrc(tmp_path, "machine mail.example.test login alice password s3cret\n")
    assert netrc_password("mail.example.test", "alice", path) == "s3cret"


def test_other_login_is_not_used(tmp_path: Path) -> None:
    path = write_netrc(tmp_path, "machine mail.example.test login bob password bobs\n")
    assert netrc_password("mail.example.test", "alice", path) is None


def test_default_entry_only_for_its_login(tmp_path: Path) -> None:
    path = write_netrc(tmp_path, "default login ftp password anon\n")
    assert netrc_password("mail.example.test", "alice", path) is None
    assert netrc_password("mail.example.test", "ftp", path) == "anon"


def test_missing_or_broken_file_gives_none(tmp_path: Path) -> None:
    assert netrc_password("h", "u", str(tmp_path / "absent")) is None
    broken = write_netrc(tmp_path, "machine\n")
    assert netrc_password("h", "u", broken) is None


def test_netrc_environment_variable(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write_netrc(tmp_path, "machine h login u password p\n")
    monkeypatch.setenv("NETRC", path)
    assert netrc_password("h", "u") == "p"
