"""REPL history across runs, in the XDG state directory, never holding a secret."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prompt_toolkit.history import FileHistory


class RedactingFileHistory(FileHistory):
    """A FileHistory that stores each line through ``redact`` first.

    prompt_toolkit appends the accepted line before ``prompt()`` returns, so the
    protocol core has not sent it yet and ``redact`` sees the state the line was
    typed in (a base64 line after SMTP 334 is a password; elsewhere it is not).
    """

    def __init__(self, path: Path, redact: Callable[[str], str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            # Created private: even redacted, history shows which servers and users.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        super().__init__(str(path))
        self._redact = redact

    def append_string(self, string: str) -> None:
        super().append_string(self._redact(string))
