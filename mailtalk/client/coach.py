"""A guide riding along a REPL session: the seam the practice mode plugs into.

The client knows nothing of lessons. A ``Coach`` given to the REPL brings its own
``:commands`` (listed by ``:help``, completed by Tab), is told when the session begins
and after every line the learner typed (and once a second while the prompt waits, so a
step done from another terminal ticks without a keypress), and may add a line to the
bottom toolbar. ``mailtalk.practice.coach`` is the one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mailtalk.client.conversation import Conversation
    from mailtalk.client.meta import MetaUI


@dataclass(frozen=True)
class ExtraCommand:
    """A ``:command`` a coach brings: its name, its words for :help, what it does."""

    name: str
    usage: str
    brief: str
    handler: Callable[[Conversation, MetaUI, list[str]], None]


class Coach(Protocol):
    heading: str  # the :help section its commands are listed under

    @property
    def commands(self) -> Mapping[str, ExtraCommand]: ...

    def begin(self, conv: Conversation, ui: MetaUI) -> None:
        """The session is connected and greeted; the first prompt comes next."""

    def after(self, conv: Conversation, ui: MetaUI) -> None:
        """A line was handled (or a second passed at the prompt): look and say."""

    def toolbar(self) -> str:
        """A line under the toolbar ('' for none)."""
        ...
