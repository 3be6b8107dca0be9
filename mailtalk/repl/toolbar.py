"""The bottom toolbar: where you are in the conversation and what usually comes next."""

from __future__ import annotations

from prompt_toolkit.formatted_text import StyleAndTextTuples

from mailtalk.protocols.common import ClientCore
from mailtalk.target import Target


def toolbar_fragments(target: Target, core: ClientCore, closed: bool) -> StyleAndTextTuples:
    tls = bool(getattr(core, "tls", False))
    fragments: StyleAndTextTuples = [
        ("class:toolbar.host", f" {target.display} "),
        ("class:toolbar", f" {target.protocol.upper()} "),
        ("class:toolbar.tls-on" if tls else "class:toolbar.tls-off",
         " TLS on " if tls else " TLS off "),
        ("class:toolbar", " authenticated " if core.authenticated else " not authenticated "),
        ("class:toolbar.state", f" state: {'closed' if closed else core.state_name} "),
    ]
    hint = ":reconnect or :quit" if closed else core.next_hint()
    fragments.append(("class:toolbar.hint", f" next: {hint} "))
    return fragments
