"""Where a password can come from without being typed: ~/.netrc and the environment."""

from __future__ import annotations

import netrc
import os
import shlex
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailtalk.environment import Environment


@dataclass(frozen=True)
class NetrcLookup:
    """What ``~/.netrc`` (or ``$NETRC``) says for a host and user.

    ``problem`` is a warning to show: a file others may read is not used, as ftp
    and Python's netrc module refuse one. ``shown_path`` names the file as the user
    knows it (``~/.netrc``, or the path ``$NETRC`` gave).
    """

    password: str | None
    path: str
    shown_path: str
    problem: str | None = None


def netrc_lookup(host: str, user: str | None, path: str | None = None) -> NetrcLookup:
    """The password for ``user`` on ``host`` in ``~/.netrc`` (or ``$NETRC``), if any.

    A ``default`` entry is used only when its login matches, so a catch-all entry
    meant for FTP never sends its password to a mail server under another name.
    """
    default = str(Path.home() / ".netrc")
    variable = os.environ.get("NETRC")
    file = path or variable or default
    if file == default:
        shown = "~/.netrc"
    elif file == variable and not path:
        shown = f"{file} ($NETRC)"
    else:
        shown = file
    nothing = NetrcLookup(None, file, shown)
    try:
        entries = netrc.netrc(file)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return nothing
    found = entries.authenticators(host)
    if found is None:
        return nothing
    login, _, password = found
    if user and login and login != user:
        return nothing
    if not password:
        return nothing
    try:
        mode = os.stat(file).st_mode
    except OSError:
        return nothing
    if mode & 0o077:
        return NetrcLookup(
            None,
            file,
            shown,
            f"{shown} can be read by others (mode {stat.S_IMODE(mode):03o}): its password "
            f"is not used; chmod 600 {shlex.quote(file) if shown != '~/.netrc' else shown}",
        )
    return NetrcLookup(password, file, shown)


def netrc_password(host: str, user: str | None, path: str | None = None) -> str | None:
    """The password from ``netrc_lookup``, or None (also when others can read the file)."""
    return netrc_lookup(host, user, path).password


def terminal_asker(env: Environment) -> Callable[[str], str | None]:
    """A way to ask for a password: without echo when ``env`` has a terminal on standard
    input; else one that answers None (a pipe, a script read from standard input, CI)."""
    if not env.can_prompt():
        return lambda prompt: None
    import getpass

    return lambda prompt: getpass.getpass(prompt) or None


def ask_on_terminal(prompt: str) -> str | None:
    """``terminal_asker`` for this process: the default of ``find_password`` for the
    callers that are not handed an Environment."""
    from mailtalk.environment import Environment

    return terminal_asker(Environment.from_process())(prompt)


def find_password(
    host: str,
    user: str,
    variable: str = "MAILTALK_PASSWORD",
    ask: Callable[[str], str | None] | None = ask_on_terminal,
) -> str | None:
    """A password never typed on a command line: ``$variable``, then ``~/.netrc``, then
    ``ask`` (on a terminal, by default); None when none of them has one. A netrc that
    others can read is not used, and said so on standard error."""
    secret = os.environ.get(variable)
    if secret:
        return secret
    found = netrc_lookup(host, user)
    if found.problem:
        print(f"# {found.problem}", file=sys.stderr)
    if found.password:
        return found.password
    return ask(f"password for {user} on {host}: ") if ask is not None else None


# An OAuth 2 bearer token (XOAUTH2, OAUTHBEARER) is read from here first: unlike a
# command-line argument it never shows in the process list (/proc/PID/cmdline).
TOKEN_VARIABLE = "MAILTALK_OAUTH2_TOKEN"


def is_token_mechanism(mechanism: str) -> bool:
    """Whether ``mechanism``'s secret is an OAuth 2 token rather than a password."""
    from mailtalk.protocols.sasl import TOKEN_MECHANISMS

    return mechanism.upper() in TOKEN_MECHANISMS


def secret_word(mechanism: str) -> str:
    """What the secret of ``mechanism`` is called in prompts and errors."""
    return "OAuth2 token" if is_token_mechanism(mechanism) else "password"


def find_token(
    user: str,
    variable: str = TOKEN_VARIABLE,
    ask: Callable[[str], str | None] | None = ask_on_terminal,
) -> str | None:
    """An OAuth 2 token: ``$variable``, else ``ask`` (without echo, on a terminal by
    default); never ~/.netrc, whose entries are passwords. None when neither has one."""
    token = os.environ.get(variable)
    if token:
        return token
    return ask(f"OAuth2 token for {user}: ") if ask is not None else None
