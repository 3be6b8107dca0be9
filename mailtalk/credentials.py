"""Where a password can come from without being typed: ~/.netrc and the environment."""

from __future__ import annotations

import netrc
import os
from collections.abc import Callable
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


def ask_on_terminal(prompt: str) -> str | None:
    """Ask without echo when standard input is a terminal; None otherwise (a pipe, a
    script read from standard input, CI)."""
    import sys

    if not sys.stdin.isatty():
        return None
    import getpass

    return getpass.getpass(prompt) or None


def find_password(
    host: str,
    user: str,
    variable: str = "MAILTALK_PASSWORD",
    ask: Callable[[str], str | None] | None = ask_on_terminal,
) -> str | None:
    """A password never typed on a command line: ``$variable``, then ``~/.netrc``, then
    ``ask`` (on a terminal, by default); None when none of them has one."""
    secret = os.environ.get(variable) or netrc_password(host, user)
    if secret:
        return secret
    return ask(f"password for {user} on {host}: ") if ask is not None else None
