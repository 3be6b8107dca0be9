"""A program as the server: ``--pipe 'exim -bh 192.0.2.1'`` talks to its stdin/stdout.

Admins test a configuration without a network this way (``exim -bh ADDR``,
``sendmail -bs``, ``dovecot --exec-mail imap``). The program gets one end of a socket
pair as its standard input, and its standard output is pumped into that same socket
pair by a thread, so the ``Transport`` above sees an ordinary connected socket:
timeouts, select(), even STARTTLS work unchanged.

The pump keeps apart what is not the protocol: Exim's ``-bh`` commentary (lines that
begin with ``**** ``, and the blank lines framing them) on standard output, and
everything on standard error. Those lines wait in ``take_notes()`` for the caller to
show as notes, and ``finish()`` says how the program ended.

No shell is involved: the command line is split as a shell would split words
(``shlex``), and run directly; ``sh -c '...'`` is there for whoever wants a shell.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import threading
from typing import IO, Final

# Exim -bh writes its commentary to standard output with this mark.
COMMENTARY_MARK: Final = b"**** "
_FINISH_WAIT: Final = 5.0  # seconds a program gets to exit after its stdin closes


class ProgramError(ValueError):
    """The command cannot be run; the message says why in one line."""


def split_command(command: str) -> list[str]:
    """The words of ``command`` as a shell would split them, without running a shell."""
    try:
        words = shlex.split(command)
    except ValueError as error:
        raise ProgramError(f"--pipe {command!r}: {error}") from None
    if not words:
        raise ProgramError("--pipe: no command given")
    return words


class ProgramLink:
    """A running program, connected to ``ours`` (a socket) by its stdin and stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.name = argv[0].rsplit("/", 1)[-1]
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=theirs.fileno(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as error:
            ours.close()
            theirs.close()
            reason = (error.strerror or str(error)).lower()
            raise ProgramError(f"cannot run {argv[0]}: {reason}") from None
        self.socket = ours
        self._theirs = theirs
        self._notes: list[str] = []
        self._lock = threading.Lock()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump_stdout, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self.process.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def take_notes(self) -> list[str]:
        """The lines kept apart since the last call: commentary and standard error."""
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def finish(self) -> int | None:
        """Close its standard input, wait for it to exit (killing it if it will not), and
        return its exit status (negative: the signal that ended it)."""
        with contextlib.suppress(OSError):
            self._theirs.close()
        try:
            status: int = self.process.wait(_FINISH_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        for thread in self._threads:
            thread.join(_FINISH_WAIT)
        return status

    def _keep(self, line: bytes, source: str) -> None:
        text = line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        with self._lock:
            self._notes.append(f"{self.name} {source}: {text}")

    def _pump_stdout(self, stream: IO[bytes]) -> None:
        """Copy the protocol lines to the socket; keep the commentary apart."""
        held: bytes | None = None  # a blank line, sent once we know it is not framing
        after_commentary = False
        try:
            for line in iter(stream.readline, b""):
                if line.startswith(COMMENTARY_MARK):
                    self._keep(line, "says")
                    held, after_commentary = None, True
                    continue
                blank = line.strip() == b""
                if blank and after_commentary:
                    after_commentary = False  # the blank line closing a commentary block
                    continue
                after_commentary = False
                if held is not None:
                    self._theirs.sendall(held)
                    held = None
                if blank:
                    held = line
                    continue
                self._theirs.sendall(line)
            if held is not None:
                self._theirs.sendall(held)
        except OSError:
            pass  # we closed our end: nobody reads any more
        finally:
            with contextlib.suppress(OSError):
                self._theirs.shutdown(socket.SHUT_WR)

    def _pump_stderr(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self._keep(line, "stderr")
