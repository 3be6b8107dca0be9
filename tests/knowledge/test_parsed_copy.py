"""``knowledge.parsed``: a TOML file's data kept as JSON beside it, as Python keeps
bytecode, and read from there only while the file is the same file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import mailtalk.knowledge as knowledge


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(knowledge, "_HERE", str(tmp_path))
    monkeypatch.setattr(knowledge, "_CACHE", str(tmp_path / "__pycache__"))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    (tmp_path / "things.toml").write_text('[thing]\nname = "one"\ncount = 1\nok = true\n')
    return tmp_path


def parse(path: Path, calls: list[str]) -> dict[str, object]:
    calls.append(path.name)
    return tomllib.loads(path.read_text())


def test_parsed_once_then_read_from_the_copy(data_dir: Path) -> None:
    calls: list[str] = []
    source = data_dir / "things.toml"
    first = knowledge.parsed("things.toml", "all", lambda: parse(source, calls))
    again = knowledge.parsed("things.toml", "all", lambda: parse(source, calls))
    assert first == again == {"thing": {"name": "one", "count": 1, "ok": True}}
    assert calls == ["things.toml"]
    copy = data_dir / "__pycache__" / "things.toml.all.json"
    assert json.loads(copy.read_text())["data"] == first
    assert [p.name for p in copy.parent.iterdir()] == [copy.name]  # no temporary left


def test_a_changed_file_is_parsed_again(data_dir: Path) -> None:
    calls: list[str] = []
    source = data_dir / "things.toml"
    knowledge.parsed("things.toml", "all", lambda: parse(source, calls))
    source.write_text('[thing]\nname = "two"\n')
    assert knowledge.parsed("things.toml", "all", lambda: parse(source, calls)) == {
        "thing": {"name": "two"}
    }
    assert calls == ["things.toml", "things.toml"]


def test_a_broken_copy_is_parsed_again_and_nothing_is_written_when_asked(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    source = data_dir / "things.toml"
    knowledge.parsed("things.toml", "all", lambda: parse(source, calls))
    copy = data_dir / "__pycache__" / "things.toml.all.json"
    copy.write_text('{"stamp": ')
    assert knowledge.parsed("things.toml", "all", lambda: parse(source, calls))["thing"]
    assert calls == ["things.toml", "things.toml"]
    copy.unlink()
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE
    knowledge.parsed("things.toml", "all", lambda: parse(source, calls))
    assert not copy.exists()


def test_a_directory_it_cannot_write_is_no_error(data_dir: Path) -> None:
    # a file where the cache directory would be: nobody can write into it, root
    # included (a read-only mode would not stop root, and CI runs as root)
    (data_dir / "__pycache__").write_text("not a directory")
    calls: list[str] = []
    source = data_dir / "things.toml"
    assert knowledge.parsed("things.toml", "all", lambda: parse(source, calls))
    assert knowledge.parsed("things.toml", "all", lambda: parse(source, calls))
    assert calls == ["things.toml", "things.toml"]
    assert (data_dir / "__pycache__").read_text() == "not a directory"


def test_a_server_start_with_the_copy_needs_no_tomllib() -> None:
    """What the copy is for: ``mailtalk serve``'s personality without tomllib (3 ms of
    its start, issue 17), the same personality as parsed from the TOML."""
    probe = (
        "import sys; from mailtalk.servers.personalities import personality; "
        "p = personality('postfix'); "
        "print('tomllib' in sys.modules, p.reply('relay_denied', me='mx', rcpt='b@x'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    ).stdout.split(" ", 1)
    run()  # parses, and keeps the copy if the package directory is writable
    copy = Path(knowledge._CACHE) / "personalities.toml.postfix.json"
    if not os.access(knowledge._CACHE, os.W_OK):
        pytest.skip("the installed package's directory is not writable")
    assert copy.exists()
    used_tomllib, reply = run()
    assert used_tomllib == "False"
    assert reply.strip() == "(554, '5.7.1 <b@x>: Relay access denied')"
