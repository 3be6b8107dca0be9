"""README's scripted-session walk-through, as a user follows it: its smoke.mt and every
``mailtalk run ... smoke.mt`` line of the examples below it, against the reference
server the file's comment names (``mailtalk serve --user alice:secret --domain
example.test``), each by the real binary. An example that fails as written is a defect
of the README or of ``mailtalk run``."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.script.runs import run

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_smoke_file() -> str:
    """The session file of README's `mailtalk run` section."""
    found = re.search(r"```\n(# smoke\.mt: .*?)```", README.read_text(), re.S)
    assert found, "README no longer shows smoke.mt"
    return found.group(1)


def readme_smoke_commands() -> list[list[str]]:
    """The arguments of each README example that runs smoke.mt (a load test's 1000
    repetitions made 20), without the environment settings in front."""
    text = README.read_text()
    block = text[text.index("# smoke.mt: "):]
    block = block[block.index("```sh\n") + 6:]
    block = block[:block.index("```")]
    commands = []
    for line in block.splitlines():
        words = shlex.split(line.split("#", 1)[0].strip().removeprefix("cat smoke.mt |"))
        while words and "=" in words[0]:
            words = words[1:]
        if words[:2] == ["mailtalk", "run"] and ("smoke.mt" in words or words[-1:] == ["-"]):
            commands.append(["20" if word == "1000" else word for word in words[2:]])
    return commands


def test_readme_smoke_examples_pass_as_written(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    servers = mailtalk_servers(smtp=0, users=[("alice", "secret")], domains=["example.test"])
    session = readme_smoke_file().replace("localhost:2525", f"localhost:{servers.port('smtp')}")
    (tmp_path / "smoke.mt").write_text(session)
    commands = readme_smoke_commands()
    assert len(commands) >= 6, commands  # plain, -v --var, --json, load, reuse, stdin
    for args in commands:
        stdin = session if args[-1:] == ["-"] else None
        result = run(tmp_path, *args, stdin=stdin, password="secret", CA=str(servers.cafile))
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
    first = run(tmp_path, "smoke.mt", password="secret", CA=str(servers.cafile))
    assert first.stdout.startswith("PASS smoke.mt (17 steps, "), first.stdout
