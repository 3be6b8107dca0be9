"""Where a command's input comes from and its output goes, and what that allows.

One object, made once by the CLI (``Environment.from_process()``) and passed down, holds
the standard streams, whether each is a terminal, the environment variables, the width
to wrap at and the XDG directories. Every decision that depends on them is made here and
nowhere else: the output mode (JSON, rich text for a terminal, plain text for a pipe),
colour (``NO_COLOR``, ``FORCE_COLOR``, ``TERM=dumb``), the width, and whether a prompt
can be shown, and whether to show tracebacks (``--debug``, ``MAILTALK_DEBUG``). Tests
build one with ``Environment.for_test()`` to swap any of them, as httpie's
``Environment`` lets its tests do.

Kept light: importing it costs nothing a fast command (``--version``, ``explain``) would
not pay anyway; ``shutil`` and ``pathlib`` are imported by the methods that need them.
"""

from __future__ import annotations

import enum
import io
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console


class OutputMode(enum.Enum):
    """How a command writes its result."""

    JSON = "json"  # one JSON document (or one a line): --json
    RICH = "rich"  # styled for a terminal
    PLAIN = "plain"  # plain text for a pipe or file, wrapped at ``width()``


# A plain-text width when nothing says otherwise, and the narrowest we wrap at.
DEFAULT_WIDTH = 80
MIN_WIDTH = 40


class Environment:
    """The streams and settings a command runs with (not changed once made).

    A plain class rather than a dataclass: ``dataclasses`` would add its own import and
    code generation to every start-up, ``--version`` included.
    """

    __slots__ = (
        "debug_option",
        "stderr",
        "stderr_isatty",
        "stdin",
        "stdin_isatty",
        "stdout",
        "stdout_isatty",
        "variables",
    )

    def __init__(
        self,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        stdin_isatty: bool = False,
        stdout_isatty: bool = False,
        stderr_isatty: bool = False,
        variables: Mapping[str, str] | None = None,
        debug_option: bool = False,  # --debug was given
    ) -> None:
        self.stdin: TextIO = stdin if stdin is not None else sys.stdin
        self.stdout: TextIO = stdout if stdout is not None else sys.stdout
        self.stderr: TextIO = stderr if stderr is not None else sys.stderr
        self.stdin_isatty = stdin_isatty
        self.stdout_isatty = stdout_isatty
        self.stderr_isatty = stderr_isatty
        self.variables: Mapping[str, str] = variables if variables is not None else {}
        self.debug_option = debug_option

    def replace(self, **changes: object) -> Environment:
        """A copy with ``changes`` (as ``dataclasses.replace``)."""
        values: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return Environment(**values)  # type: ignore[arg-type]

    @classmethod
    def from_process(cls, debug_option: bool = False) -> Environment:
        """This process's streams and environment."""
        return cls(
            stdin=sys.stdin,
            stdout=sys.stdout,
            stderr=sys.stderr,
            stdin_isatty=_isatty(sys.stdin),
            stdout_isatty=_isatty(sys.stdout),
            stderr_isatty=_isatty(sys.stderr),
            variables=os.environ,
            debug_option=debug_option,
        )

    @classmethod
    def for_test(cls, **changes: object) -> Environment:
        """In-memory streams (an empty standard input; ``stdout.getvalue()`` is what was
        written) that are not terminals, and no variables, unless ``changes`` say so."""
        streams: dict[str, object] = {
            "stdin": io.StringIO(),
            "stdout": io.StringIO(),
            "stderr": io.StringIO(),
            "variables": {},
        }
        return cls(**{**streams, **changes})  # type: ignore[arg-type]

    # -- variables ----------------------------------------------------------------

    def get(self, name: str, default: str = "") -> str:
        return self.variables.get(name, default)

    @property
    def debug(self) -> bool:
        """Show tracebacks: ``--debug``, or ``MAILTALK_DEBUG=1``."""
        return self.debug_option or self.get("MAILTALK_DEBUG") == "1"

    # -- decisions ----------------------------------------------------------------

    def interactive(self) -> bool:
        """A person at a terminal on both ends: the REPL rather than pipe mode."""
        return self.stdin_isatty and self.stdout_isatty

    def can_prompt(self) -> bool:
        """A password can be asked for without echo."""
        return self.stdin_isatty

    def colour(self, stream: str = "stdout") -> bool:
        """Colour on ``stream`` ("stdout" or "stderr"): only on a terminal, never with
        ``NO_COLOR`` (no-color.org) or ``TERM=dumb``; ``FORCE_COLOR`` forces it."""
        if self.get("NO_COLOR"):
            return False
        if self.get("FORCE_COLOR"):
            return True
        tty = self.stdout_isatty if stream == "stdout" else self.stderr_isatty
        return tty and self.get("TERM") != "dumb"

    def console(self, stream: str = "stdout", **options: Any) -> Console:
        """A rich console on ``stream`` ("stdout" or "stderr") that follows ``colour()``.

        Without colour it writes no escape sequence at all: rich's own ``NO_COLOR``
        drops only the colours (bold, dim and italic stay) and its progress bars hide
        the cursor and redraw in place; here the styles go and a live display prints
        once, when it ends. ``options`` go to ``rich.console.Console``.
        """
        from rich.console import Console

        file = self.stdout if stream == "stdout" else self.stderr
        if self.colour(stream):
            return Console(file=file, **options)
        return Console(file=file, color_system=None, force_terminal=False,
                       force_interactive=False, **options)

    def output_mode(self, as_json: bool = False) -> OutputMode:
        """The one place that chooses JSON, rich or plain output for standard output.

        Rich output needs a terminal (or ``FORCE_COLOR``); ``NO_COLOR`` keeps the layout
        and drops every style and escape sequence (``console()``).
        """
        if as_json:
            return OutputMode.JSON
        if self.stdout_isatty or self.get("FORCE_COLOR"):
            return OutputMode.RICH
        return OutputMode.PLAIN

    def width(self, default: int = DEFAULT_WIDTH) -> int:
        """How wide to write: ``$COLUMNS`` when set, else the terminal's width on a
        terminal, else ``default``; never narrower than 40."""
        columns = self.get("COLUMNS")
        if columns:
            try:
                return max(MIN_WIDTH, int(columns))
            except ValueError:
                pass
        if self.stdout_isatty:
            import shutil

            return max(MIN_WIDTH, shutil.get_terminal_size((default, 24)).columns)
        return default

    def plain_width(self, default: int = DEFAULT_WIDTH) -> int:
        """How wide to wrap text written to a pipe: ``$COLUMNS`` when set, else ``default``."""
        columns = self.get("COLUMNS")
        try:
            return max(MIN_WIDTH, int(columns)) if columns else default
        except ValueError:
            return default

    # -- XDG base directories -----------------------------------------------------

    def _base(self, variable: str, fallback: str) -> Path:
        from pathlib import Path

        value = self.get(variable)
        # The spec says relative paths are invalid and must be ignored.
        if value and os.path.isabs(value):
            return Path(value)
        home = self.get("HOME")
        return (Path(home) if home else Path.home()) / fallback

    def state_dir(self) -> Path:
        return self._base("XDG_STATE_HOME", ".local/state") / "mailtalk"

    def data_dir(self) -> Path:
        return self._base("XDG_DATA_HOME", ".local/share") / "mailtalk"

    def history_file(self) -> Path:
        return self.state_dir() / "history"


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # a closed or odd stream
        return False

