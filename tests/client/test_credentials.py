"""Passwords from ~/.netrc: the right entry, and never a catch-all for another login."""

from __future__ import annotations

from pathlib import Path

from mailtalk.client.credentials import NetrcLookup, find_password, netrc_lookup, netrc_password


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


def test_lookup_names_the_file_it_read(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write_netrc(tmp_path, "machine h login u password p\n")
    monkeypatch.setenv("NETRC", path)
    found = netrc_lookup("h", "u")
    assert (found.password, found.shown_path, found.problem) == ("p", f"{path} ($NETRC)", None)
    monkeypatch.delenv("NETRC")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine h login u password q\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert netrc_lookup("h", "u").shown_path == "~/.netrc"
    assert netrc_lookup("h", "u").password == "q"


def test_a_file_others_can_read_is_not_used(tmp_path: Path) -> None:
    path = write_netrc(tmp_path, "machine h login u password p\n")
    Path(path).chmod(0o644)
    found = netrc_lookup("h", "u", path)
    assert found.password is None
    assert found.problem == (
        f"{path} can be read by others (mode 644): its password is not used; chmod 600 {path}"
    )
    assert netrc_password("h", "u", path) is None
    Path(path).chmod(0o600)
    assert netrc_lookup("h", "u", path) == NetrcLookup("p", path, path)


def test_find_password_warns_about_a_readable_netrc(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, capsys
) -> None:
    path = write_netrc(tmp_path, "machine h login u password p\n")
    Path(path).chmod(0o640)
    monkeypatch.setenv("NETRC", path)
    monkeypatch.delenv("MAILTALK_PASSWORD", raising=False)
    assert find_password("h", "u", ask=None) is None
    assert "can be read by others (mode 640)" in capsys.readouterr().err
