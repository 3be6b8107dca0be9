"""Where the REPL draws: the terminal as prompt_toolkit drives it, or, without colour
(``NO_COLOR``, ``TERM=dumb``), the same terminal with no styles at all.

prompt_toolkit reads ``NO_COLOR`` itself but only drops the colours: bold, reverse and
the ``ESC[0m`` resets stay. mailtalk's standard is stricter: with ``NO_COLOR`` nothing
it writes carries a style. A line editor still moves the cursor, so those sequences
stay; every style (SGR) sequence goes.
"""

from __future__ import annotations

from prompt_toolkit.output import ColorDepth, Output
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.styles import Attrs

from mailtalk.environment import Environment


class UnstyledOutput(Vt100_Output):
    """A VT100 terminal written to without style sequences: the text, the cursor's
    moves and the erasing, no bold, colour, reverse or reset."""

    def set_attributes(self, attrs: Attrs, color_depth: ColorDepth) -> None:
        pass

    def reset_attributes(self) -> None:
        pass


def repl_output(env: Environment) -> Output | None:
    """The output the REPL's prompt and printed lines go to: None (prompt_toolkit's
    own) with colour, else an ``UnstyledOutput`` on ``env.stdout``."""
    if env.colour():
        return None
    return UnstyledOutput.from_pty(env.stdout, term=env.get("TERM") or None)
