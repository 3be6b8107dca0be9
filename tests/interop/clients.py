"""What the interop tests share about running real client programs."""

from __future__ import annotations

import os
import shutil
import sys
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
