"""The protocol command reference: ``commands.toml`` read into typed entries.

Feeds ``:help COMMAND`` and the one-line descriptions of the completion menu.
The TOML file is parsed on first use, not at import, and kept afterwards.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

PROTOCOLS: Final = ("smtp", "pop3", "imap")
META: Final = "meta"

# The state names each protocol's entries may use (those of the protocol cores).
STATES: Final[dict[str, tuple[str, ...]]] = {
    "smtp": ("greeting", "connected", "ready", "mail", "rcpt", "data"),
    "pop3": ("authorization", "transaction"),
    "imap": ("not_authenticated", "authenticated", "selected"),
}

# Other names a protocol goes by (URL schemes).
_ALIASES: Final[dict[str, str]] = {
    "smtps": "smtp",
    "submission": "smtp",
    "submissions": "smtp",
    "pop": "pop3",
    "pop3s": "pop3",
    "imaps": "imap",
}

WIDTH: Final = 78
_RESOURCE: Final = "commands.toml"


@dataclass(frozen=True)
class CommandHelp:
    """One command of one protocol, or one of mailtalk's own (protocol ``"meta"``).

    Meta entries have an empty ``rfc`` and no ``states``; their ``name`` keeps the
    leading colon (``":help"``), and their ``brief`` is the short line of lists
    (``:help``, the completion menu, the man page).
    """

    protocol: str
    name: str
    syntax: str
    summary: str
    detail: str
    rfc: str
    example: str
    states: tuple[str, ...]
    brief: str = ""


def _text(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key} must be a string")
    return value.strip()


def _entry(protocol: str, key: str, table: Any) -> CommandHelp:
    where = f"{_RESOURCE} [{protocol}.{key}]"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: not a table")
    states = table.get("states", [])
    if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
        raise ValueError(f"{where}: states must be a list of strings")
    return CommandHelp(
        protocol=protocol,
        name=":" + key.lower() if protocol == META else key.upper(),
        syntax=_text(table, "syntax", where),
        summary=_text(table, "summary", where),
        detail=_text(table, "detail", where),
        rfc=_text(table, "rfc", where),
        example=_text(table, "example", where),
        states=tuple(states),
        brief=_text(table, "brief", where),
    )


@functools.cache
def _load() -> dict[str, dict[str, CommandHelp]]:
    """Protocol -> upper-case key -> entry, in file order. Parsed once."""
    import tomllib  # here, not at module level: importing this module stays cheap

    text = resources.files("mailtalk.knowledge").joinpath(_RESOURCE).read_text(encoding="utf-8")
    data = tomllib.loads(text)
    loaded: dict[str, dict[str, CommandHelp]] = {}
    for protocol, tables in data.items():
        if not isinstance(tables, dict):
            raise ValueError(f"{_RESOURCE}: [{protocol}] is not a table of commands")
        loaded[protocol] = {
            key.upper(): _entry(protocol, key, table) for key, table in tables.items()
        }
    return loaded


def _protocol(protocol: str) -> str:
    name = protocol.strip().lower()
    return _ALIASES.get(name, name)


def command_help(protocol: str, name: str) -> CommandHelp | None:
    """The entry for a command, or None. Case-insensitive.

    Only the first word counts when the whole name is not an entry, so
    ``"uid fetch"`` gives the IMAP UID entry and ``"MAIL FROM:<a@b>"`` the SMTP
    MAIL entry. ``command_help("meta", ":help")`` (or ``"help"``) finds
    mailtalk's own commands.
    """
    protocol = _protocol(protocol)
    entries = _load().get(protocol)
    if entries is None:
        return None
    name = name.strip()
    if protocol == META:
        name = name.removeprefix(":")
    words = name.upper().split()
    if not words:
        return None
    return entries.get(" ".join(words)) or entries.get(words[0])


def commands_for(protocol: str) -> list[CommandHelp]:
    """Every entry of a protocol, in reference order; empty for an unknown protocol."""
    return list(_load().get(_protocol(protocol), {}).values())


def meta_commands() -> list[CommandHelp]:
    """mailtalk's own ``:`` commands."""
    return list(_load().get(META, {}).values())


def _paragraphs(text: str) -> list[str]:
    blocks = text.replace("\r\n", "\n").split("\n\n")
    return [" ".join(block.split()) for block in blocks if block.strip()]


def render_help(
    entry: CommandHelp, width: int = WIDTH, gettext: Callable[[str], str] = str
) -> str:
    """A readable block: syntax, summary, wrapped detail, example, states, RFC; the
    prose and the labels said by ``gettext`` (the session's language: the summaries and
    paragraphs of ``locale/LANG/commands.po``), the syntax, example, states and RFCs as
    they are."""
    _ = gettext
    fill = functools.partial(
        textwrap.fill, width=width, break_long_words=False, break_on_hyphens=False
    )
    lines = [entry.syntax, fill(_(entry.summary), initial_indent="  ", subsequent_indent="  ")]
    for paragraph in _paragraphs(entry.detail):
        lines += ["", fill(_(paragraph))]
    if entry.example:
        example = entry.example.splitlines()
        lines += ["", _("Example:")] + [("  " + line).rstrip() for line in example]
    if entry.states:
        states = ", ".join(state.replace("_", "-") for state in entry.states)
        valid = _("Valid in:") + " "
        lines += ["", fill(states, initial_indent=valid, subsequent_indent=" " * len(valid))]
    if entry.rfc:
        if not entry.states:
            lines.append("")
        see = _("See:") + " "
        if len(see + entry.rfc) <= width:
            lines.append(see + entry.rfc)
        else:  # one reference a line, each wrapped on its own
            for n, reference in enumerate(entry.rfc.split("; ")):
                lines.append(
                    fill(
                        reference,
                        initial_indent=see if n == 0 else " " * len(see),
                        subsequent_indent=" " * (len(see) + 2),
                    )
                )
    return "\n".join(lines)
