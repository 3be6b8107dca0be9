"""XDG base directories (state for history, data for the servers' store)."""

from __future__ import annotations

import os
from pathlib import Path


def _base(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    # The spec says relative paths are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def state_dir() -> Path:
    return _base("XDG_STATE_HOME", ".local/state") / "mailtalk"


def data_dir() -> Path:
    return _base("XDG_DATA_HOME", ".local/share") / "mailtalk"


def config_dir() -> Path:
    return _base("XDG_CONFIG_HOME", ".config") / "mailtalk"


def history_file() -> Path:
    return state_dir() / "history"
