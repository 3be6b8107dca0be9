"""How ``mailtalk explain`` shows an explanation: rich on a terminal, plain text in a
pipe, JSON for machines.

The layout is built once (:func:`layout`, a list of sections) and drawn by two back
ends. rich draws on terminals (colour, the terminal's width); in a pipe, where
people run ``explain`` in loops, the same layout is wrapped with textwrap, which
saves importing rich (tens of milliseconds). Which of the three is the Environment's
choice (``Environment.output_mode``: ``FORCE_COLOR`` sends a pipe through rich too, as
rich itself understands it).

rich gets ``Text`` objects only, never markup, because replies carry brackets
(``[IN-USE]``, ``[AUTHENTICATIONFAILED]``) that markup would eat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailtalk.environment import Environment, OutputMode

if TYPE_CHECKING:
    from rich.console import Console

    from mailtalk.knowledge.explain import Explanation

_STYLE_OF_TRANSIENT = {True: "yellow", False: "red", None: "green"}
_PLAIN_WIDTH = 80
# An explanation in the REPL is easier to read at most this wide, however wide the terminal.
_BLOCK_WIDTH = 100


@dataclass
class Section:
    """A titled list of items; ``bullet`` is "", "•" or "{n}." (numbered)."""

    title: str
    items: list[tuple[str, str]]  # (bold lead, text)
    bullet: str = ""


@dataclass
class Layout:
    reply: str | None
    headline: str
    facts: str
    style: str
    contradiction: str | None
    contradiction_label: str = "Contradiction: "
    sections: list[Section] = field(default_factory=list)


def layout(explanation: Explanation) -> Layout:
    """What to show, in order; empty sections are left out."""
    style = _STYLE_OF_TRANSIENT[explanation.transient if explanation.category != "ok" else None]
    _ = explanation.words  # the words around the knowledge, in its language
    facts = [explanation.retry]
    if explanation.protocol:
        facts.append(explanation.protocol.upper())
    if explanation.matched is not None and explanation.matched.origin:
        origin = explanation.matched.origin
        # a wording many servers use: which ones is in its source (References), not
        # here beside the greeting's program ("generic (..., mailtalk, GNU Mailutils)"
        # for Dovecot's reply would name programs that did not answer)
        if origin.lower().startswith("generic"):
            facts.append(_("generic wording"))
        else:
            facts.append(_("{origin} wording").format(origin=origin))
    if explanation.software:
        facts.append(_("the greeting names {software}").format(software=explanation.software))
    if explanation.weighed:
        from mailtalk.knowledge.learned import describe

        said = [_(template).format(value=value)
                for template, value in filter(None, map(describe, explanation.weighed))]
        if said:
            facts.append(_("no known wording: read from {evidence}").format(
                evidence=", ".join(said)))
    shown_reply = explanation.reply if explanation.reply not in ("", explanation.code) else None
    result = Layout(
        shown_reply,
        explanation.headline(),
        " · ".join(facts),
        style,
        explanation.contradiction,
        _("Contradiction: "),
    )

    def add(title: str, texts: list[str], bullet: str = "") -> None:
        if texts:
            result.sections.append(Section(title, [("", t) for t in texts], bullet))

    add(
        _("Meaning"),
        [explanation.summary]
        + [m for m in explanation.meaning if not m.endswith(explanation.summary)],
    )
    if explanation.context and explanation.command:
        add(_("After {command}").format(command=explanation.command), [explanation.context])
    elif explanation.other_contexts:
        result.sections.append(
            Section(
                _("Depends on the command it answers"),
                [
                    (_("after {command}: ").format(command=after), meaning)
                    for after, meaning in explanation.other_contexts
                ],
            )
        )
    if explanation.category != "ok":
        add(_("Who acts"), [explanation.side])
    add(_("Likely causes, most likely first"), explanation.causes, "{n}.")
    add(_("What to do, as the sender or user"), explanation.fixes_user, "•")
    add(_("What to do, as the server's admin"), explanation.fixes_admin, "•")
    add(_("References"), explanation.references)
    return result


# --- plain text -----------------------------------------------------------------


def plain(explanation: Explanation, width: int = _PLAIN_WIDTH) -> str:
    """The layout as plain text: two-space indents, wrapped lines hang under their text."""
    import textwrap

    shown = layout(explanation)
    lines = []
    if shown.reply:
        lines.append(shown.reply)
    lines.append(shown.headline)
    # the facts grow with the wording's origin and the server the greeting names
    lines += textwrap.wrap(shown.facts, width=width, break_on_hyphens=False) or [""]
    if shown.contradiction:
        said = f"{shown.contradiction_label}{shown.contradiction}"
        lines += ["", *textwrap.wrap(said, width=width, subsequent_indent="  ")]
    for section in shown.sections:
        lines += ["", section.title]
        for index, (lead, text) in enumerate(section.items, 1):
            marker = section.bullet.format(n=index)
            first = f"  {marker} " if marker else "  "
            lines += textwrap.wrap(
                lead + text,
                width=width,
                initial_indent=first,
                subsequent_indent=" " * len(first),
                break_on_hyphens=False,
            ) or [first.rstrip()]
    return "\n".join(lines)


# --- rich ---------------------------------------------------------------------------


def render(explanation: Explanation, out: Console) -> None:
    """The layout with rich: coloured headline, bold titles, hanging indents."""
    from rich.table import Table
    from rich.text import Text

    shown = layout(explanation)
    if shown.reply:
        out.print(Text(shown.reply, style="dim"))
    out.print(Text(shown.headline, style=f"bold {shown.style}"))
    out.print(Text(shown.facts, style=shown.style))
    if shown.contradiction:
        out.print()
        out.print(Text.assemble((shown.contradiction_label, "bold yellow"), shown.contradiction))
    for section in shown.sections:
        out.print()
        out.print(Text(section.title, style="bold"))
        bullet = section.bullet
        grid = Table.grid(padding=(0, 1))
        grid.add_column(
            width=2 + len(bullet.format(n=len(section.items))) if bullet else 1, justify="right"
        )
        grid.add_column(ratio=1)
        for index, (lead, text) in enumerate(section.items, 1):
            grid.add_row(bullet.format(n=index), Text.assemble((lead, "bold"), text))
        out.print(grid)


def to_text(explanation: Explanation, colour: bool, width: int) -> str:
    """The explanation as a string, for the REPL's :explain, within ``width`` columns
    (and 100)."""
    width = min(width, _BLOCK_WIDTH)
    if not colour:
        return plain(explanation, width)
    import io

    from rich.console import Console

    buffer = io.StringIO()
    out = Console(
        file=buffer,
        force_terminal=True,
        color_system="standard",
        width=width,
        highlight=False,
        emoji=False,
    )
    render(explanation, out)
    return buffer.getvalue().rstrip("\n")


# --- output -------------------------------------------------------------------------


def json_line(explanation: Explanation) -> str:
    return json.dumps(explanation.to_json(), ensure_ascii=False)


def render_all(explanations: list[Explanation], env: Environment, as_json: bool = False) -> None:
    """Every explanation on ``env.stdout``, in the output mode ``env`` chooses."""
    target = env.stdout
    mode = env.output_mode(as_json)
    if mode is OutputMode.JSON:
        for explanation in explanations:
            target.write(json_line(explanation) + "\n")
        target.flush()
        return
    if mode is OutputMode.RICH:
        out = env.console(highlight=False, soft_wrap=False, emoji=False)
        for index, explanation in enumerate(explanations):
            if index:
                out.print()
                out.rule(style="dim")
            render(explanation, out)
        return
    width = env.plain_width(_PLAIN_WIDTH)
    texts = [plain(explanation, width) for explanation in explanations]
    target.write(("\n\n" + "-" * min(width, 40) + "\n\n").join(texts) + "\n")
    target.flush()
