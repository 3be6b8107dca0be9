"""``mailtalk explain``: read the replies, explain each, print.

Loads only the knowledge it matches against (see ``knowledge.explain``) and
never prompt_toolkit, asyncio or dnspython, because people run it in loops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, cast

from mailtalk.exitcodes import ExitCode
from mailtalk.knowledge.replies import Protocol

if TYPE_CHECKING:
    from mailtalk.environment import Environment


class ExplainOptions(NamedTuple):
    """What ``mailtalk explain`` was given: the reply as words (``("-",)`` reads
    standard input, one reply a line), and what helps read it. A NamedTuple, not a
    frozen dataclass as the other commands' options are: the dataclass's generated
    code costs ``explain``, which must start fast, half a millisecond."""

    words: tuple[str, ...]
    protocol: str | None = None  # smtp, pop3 or imap, where the text alone does not say
    command: str | None = None  # the command the reply answered
    banner: str | None = None  # the server's greeting
    lang: str | None = None  # en or nl; None: from the locale variables
    as_json: bool = False


def run(options: ExplainOptions, env: Environment) -> int:
    """Explain the reply (or every reply on standard input); the exit status."""
    from mailtalk.explain.view import render_all
    from mailtalk.knowledge.explain import explain
    from mailtalk.knowledge.replies import looks_like_reply, split_replies
    from mailtalk.language import choose_language
    from mailtalk.terminal import safe_text

    proto = cast(Protocol | None, options.protocol)
    command, banner = options.command, options.banner
    language = choose_language(options.lang, None, env.variables)
    if options.words == ("-",):
        # log lines quote what servers said: explained and echoed with controls escaped
        lines = [safe_text(line.rstrip("\r\n")) for line in env.stdin]
        replies = [r for r in split_replies(lines) if looks_like_reply(r) or _matches(r, proto)]
        if not replies:
            _complain(env, "no reply found on standard input")
            return ExitCode.FAILED
        explanations = [
            explain(r, proto, command, banner=banner, language=language) for r in replies
        ]
        render_all(explanations, env, options.as_json)
        return ExitCode.OK

    text = " ".join(options.words)
    explanation = explain(text, proto, command, banner=banner, language=language)
    if not explanation.known:
        _complain(
            env,
            f"{text!r} is not a reply or a code I know; give a code (550, 5.7.1) "
            "or a whole reply line, e.g. '550 5.7.1 Relaying denied'",
        )
        return ExitCode.USAGE
    render_all([explanation], env, options.as_json)
    return ExitCode.OK


def _complain(env: Environment, message: str) -> None:
    env.stderr.write(f"mailtalk: {message}\n")
    env.stderr.flush()


def _matches(line: str, protocol: Protocol | None) -> bool:
    """A line with no code still counts when its wording is one we know."""
    from mailtalk.knowledge.explain import explain

    return explain(line, protocol).matched is not None and protocol is not None
