"""The OAuth 2 token option of the commands that log in (``send``, ``diagnose
login``), declared once, and where its value comes from: ``--oauth2-token`` when
given, else ``$MAILTALK_OAUTH2_TOKEN`` (preferred: an argument shows in the process
list, a variable does not)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mailtalk.cli import F

if TYPE_CHECKING:
    from mailtalk.environment import Environment

TOKEN_VARIABLE = "MAILTALK_OAUTH2_TOKEN"  # client.credentials.TOKEN_VARIABLE, kept light


def oauth2_token_option(func: F) -> F:
    """--oauth2-token TOKEN."""
    return click.option(
        "--oauth2-token",
        metavar="TOKEN",
        help="An OAuth 2 bearer token for XOAUTH2 or OAUTHBEARER, for the user who logs in "
        "(send: --auth USER). "
        f"Better: set ${TOKEN_VARIABLE}, which other users cannot see in the process "
        "list as they can this option. The token is never shown, recorded or logged. "
        f"Example: {TOKEN_VARIABLE}=ya29.a0... mailtalk send ... --auth me@gmail.com",
    )(func)


def take_token(env: Environment, options: dict[str, Any]) -> str | None:
    """Take --oauth2-token out of ``options``; it, else the variable, else None."""
    given = options.pop("oauth2_token", None)
    return given or env.variables.get(TOKEN_VARIABLE) or None
