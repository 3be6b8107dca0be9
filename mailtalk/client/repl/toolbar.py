"""The bottom toolbar: where you are in the conversation and what usually comes next.

Its labels and the usual next step are said in the session's language (``gettext``:
``Conversation.gettext``); the state names are the protocols' own."""

from __future__ import annotations

from collections.abc import Callable

from prompt_toolkit.formatted_text import StyleAndTextTuples

from mailtalk.net.target import Target
from mailtalk.protocols.common import ClientCore


def toolbar_fragments(
    target: Target, core: ClientCore, closed: bool, width: int | None = None,
    gettext: Callable[[str], str] = str,
) -> StyleAndTextTuples:
    """The toolbar, fitted to ``width`` columns: labels shortened first, then the hint
    cut between words and marked with "…", never cut mid-word by the terminal."""
    _ = gettext
    tls = bool(getattr(core, "tls", False))
    state = "closed" if closed else core.state_name
    hint = _(":reconnect or :quit") if closed else _(core.next_hint())
    fragments = _fragments(target, tls, core.authenticated, state, hint, False, _)
    if width is None or _length(fragments) <= width - 1:
        return fragments
    fragments = _fragments(target, tls, core.authenticated, state, hint, True, _)
    label = _(" next: {hint} ")
    room = width - 1 - _length(fragments[:-1]) - len(label.format(hint=""))
    if len(hint) > room:
        hint = _cut(hint, room)
        fragments[-1] = ("class:toolbar.hint", label.format(hint=hint) if hint else "")
    # Very narrow: the protocol (the prompt says it), then authentication, then TLS go.
    for name in ("protocol", "auth", "tls"):
        if _length(fragments) <= width - 1:
            break
        fragments[_ORDER.index(name)] = ("", "")
    if _length(fragments) > width - 1:
        host = fragments[0][1].strip()
        keep = max(0, width - 1 - _length(fragments[1:]) - 3)
        fragments[0] = ("class:toolbar.host", f" {host[:keep]}… " if keep else "")
    return [fragment for fragment in fragments if fragment[1]]


_ORDER = ("host", "protocol", "tls", "auth", "state", "hint")


def _fragments(
    target: Target, tls: bool, authenticated: bool, state: str, hint: str, short: bool,
    _: Callable[[str], str],
) -> StyleAndTextTuples:
    if short:
        auth = _(" auth ") if authenticated else _(" no auth ")
        where = f" {state} "
    else:
        auth = _(" authenticated ") if authenticated else _(" not authenticated ")
        where = _(" state: {state} ").format(state=state)
    return [
        ("class:toolbar.host", f" {target.display} "),
        ("class:toolbar", f" {target.protocol.upper()} "),
        ("class:toolbar.tls-on" if tls else "class:toolbar.tls-off",
         _(" TLS on ") if tls else _(" TLS off ")),
        ("class:toolbar", auth),
        ("class:toolbar.state", where),
        ("class:toolbar.hint", _(" next: {hint} ").format(hint=hint)),
    ]


def _length(fragments: StyleAndTextTuples) -> int:
    return sum(len(text) for _, text, *_ in fragments)


def _cut(text: str, room: int) -> str:
    """``text`` in at most ``room`` characters, cut after a whole word, "…" added."""
    if room < 4:
        return ""
    cut = text[: room - 1]
    if " " in cut and not text[room - 1 : room].isspace():
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:(") + "…"
