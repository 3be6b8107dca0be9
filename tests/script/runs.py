"""Running the real ``mailtalk run`` on a session file, for the tests of the reference
servers (tests/script) and of the real Postfix and Dovecot (tests/interop)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.interop.clients import client_env

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))
TIMEOUT = 30


def mailtalk_env(tmp_path: Path, password: str | None, **extra: str) -> dict[str, str]:
    """No MAILTALK_* settings but ``password``, a private HOME, no colour, English (run
    speaks the locale's language: the tests read its English, whatever the developer's)."""
    env = client_env(tmp_path, **{"NO_COLOR": "1", "LANG": "C.UTF-8", **extra})
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        if variable not in extra:
            env.pop(variable, None)
    if password is not None:
        env["MAILTALK_PASSWORD"] = password
    return env


def run(
    tmp_path: Path,
    *args: str,
    stdin: str | bytes | None = None,
    password: str | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(
        [MAILTALK, "run", *args],
        input=data,
        stdin=subprocess.DEVNULL if data is None else None,
        capture_output=True,
        env=mailtalk_env(tmp_path, password, **env),
        cwd=tmp_path,
        timeout=TIMEOUT,
        check=False,
        start_new_session=True,  # no controlling terminal: nobody is asked for a password
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
