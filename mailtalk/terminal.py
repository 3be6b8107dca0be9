"""Facts about where output goes, kept apart so that fast commands (explain, mx) can
ask them without importing the protocol and display modules."""

from __future__ import annotations

import os


def plain_width(default: int = 80) -> int:
    """How wide to wrap text written to a pipe: $COLUMNS when set (at least 40)."""
    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return default
