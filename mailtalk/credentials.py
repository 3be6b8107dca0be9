"""Where a password can come from without being typed: ~/.netrc and the environment."""

from __future__ import annotations

import netrc
import os
from pathlib import Path


def netrc_password(host: str, user: str | None, path: str | None = None) -> str | None:
    """The password for ``user`` on ``host`` in ``~/.netrc`` (or ``$NETRC``), if there is one.

    A ``default`` entry is used only when its login matches, so a catch-all entry
    meant for FTP never sends its password to a mail server under another name.
    """
    file = path or os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        entries = netrc.netrc(file)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    found = entries.authenticators(host)
    if found is None:
        return None
    login, _, password = found
    if user and login and login != user:
        return None
    return password or None


def environment_password() -> str | None:
    return os.environ.get("MAILTALK_PASSWORD")
