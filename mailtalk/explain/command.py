"""``mailtalk explain``: read the replies, explain each, print.

Loads only the knowledge it matches against (see ``knowledge.explain``) and
never prompt_toolkit, asyncio or dnspython, because people run it in loops.
"""

from __future__ import annotations

import sys
from typing import TextIO, cast

import click

from mailtalk.exitcodes import ExitCode
from mailtalk.knowledge.replies import Protocol


def run_explain(
    words: tuple[str, ...],
    protocol: str | None,
    command: str | None,
    as_json: bool,
    stdin: TextIO | None = None,
    banner: str | None = None,
) -> int:
    from mailtalk.explain.view import render_all
    from mailtalk.knowledge.explain import explain
    from mailtalk.knowledge.replies import looks_like_reply, split_replies
    from mailtalk.terminal import safe_text

    proto = cast(Protocol | None, protocol)
    if words == ("-",):
        source = stdin or sys.stdin
        # log lines quote what servers said: explained and echoed with controls escaped
        lines = [safe_text(line.rstrip("\r\n")) for line in source]
        replies = [r for r in split_replies(lines) if looks_like_reply(r) or _matches(r, proto)]
        if not replies:
            click.echo("mailtalk: no reply found on standard input", err=True)
            return ExitCode.FAILED
        render_all([explain(r, proto, command, banner=banner) for r in replies], as_json)
        return ExitCode.OK

    text = " ".join(words)
    explanation = explain(text, proto, command, banner=banner)
    if not explanation.known:
        click.echo(
            f"mailtalk: {text!r} is not a reply or a code I know; give a code (550, 5.7.1) "
            "or a whole reply line, e.g. '550 5.7.1 Relaying denied'",
            err=True,
        )
        return ExitCode.USAGE
    render_all([explanation], as_json)
    return ExitCode.OK


def _matches(line: str, protocol: Protocol | None) -> bool:
    """A line with no code still counts when its wording is one we know."""
    from mailtalk.knowledge.explain import explain

    return explain(line, protocol).matched is not None and protocol is not None
