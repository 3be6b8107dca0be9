"""What the interop tests share about running real client programs."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def require_binary(name: str) -> str:
    """The path of client ``name``; skip without it (fail with MAILTALK_REQUIRE_REAL_SERVERS=1)."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (scripts/real-servers install installs it)"
    if os.environ.get("MAILTALK_REQUIRE_REAL_SERVERS") == "1":
        pytest.fail(f"{reason}; MAILTALK_REQUIRE_REAL_SERVERS=1 requires it", pytrace=False)
    pytest.skip(reason)


def mailtalk_command() -> list[str]:
    """The installed ``mailtalk`` next to this Python, or ``python -m mailtalk``."""
    script = Path(sys.executable).with_name("mailtalk")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailtalk"]


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for a client: no MAILTALK_* settings, a private HOME."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MAILTALK_") and key != "NO_COLOR"
    }
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".state"),
        XDG_DATA_HOME=str(home / ".data"),
    )
    env.update(extra)
    return env


def read_line(process: subprocess.Popen[bytes], timeout: float = 10.0) -> bytes:
    """One line from ``process``'s standard output, byte by byte (nothing read beyond it),
    within ``timeout`` seconds; a line that does not come fails the test."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise AssertionError(f"no line from mailtalk serve in {timeout}s: {line!r}")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"mailtalk serve ended before its line: {line!r}")
        line += chunk
    return line


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, as Ctrl-C or a service manager would stop it; SIGKILL if that is not enough."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
