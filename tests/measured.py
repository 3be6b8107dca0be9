"""Run a command and measure its true peak RSS, through a small process of its own.

The kernel's figure (``ru_maxrss`` from ``wait4``) is exact however briefly the peak
lasted, but Linux counts in a child's peak the pages of the process it was forked from
(resident at the fork), and pytest grows to hundreds of MiB over the whole suite. So
the command is forked by :data:`_MEASURE`, a few MiB of plain Python started afresh,
which reports the peak and the seconds the command took, and ends as the command ended.
It also puts the command in a session of its own (no controlling terminal: nobody is
asked for a password; one signal stops both) and can cap its address space, so that a
regression fails a test quickly instead of eating the machine's memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

# argv: RLIMIT_AS in bytes (0: none), the file for "PEAK_KIB SECONDS", the command.
_MEASURE = """
import os, resource, signal, sys, time
limit, report, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
os.setsid()
started = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as out:
    out.write(f"{usage.ru_maxrss} {time.monotonic() - started}")
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Measured:
    returncode: int  # negative: ended by that signal (-9: killed by the timeout)
    stdout: str  # all of it, or its last ``keep_stdout`` bytes
    stderr: str
    peak_rss_kib: int  # 0 when the command never ended on its own
    seconds: float  # from its start to its end, without the measuring process's own


def run_measured(
    argv: list[str],
    *,
    stdin: bytes | Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 20,
    address_space: int = 0,
    keep_stdout: int | None = None,
) -> Measured:
    """Run ``argv`` (its first item a path) with ``stdin`` written to a pipe (bytes),
    read from a file (Path) or empty (None); kill it and the measuring process after
    ``timeout`` seconds; cap its address space at ``address_space`` bytes (0: none).
    Output goes to files, so that a command that prints hundreds of MiB costs pytest
    nothing when ``keep_stdout`` bounds what is read back."""
    with tempfile.TemporaryDirectory(prefix="mailtalk-measured-") as scratch:
        report = Path(scratch) / "report"
        command = [sys.executable, "-c", _MEASURE, str(address_space), str(report), *argv]
        with (Path(scratch) / "out").open("w+b") as out, \
                (Path(scratch) / "err").open("w+b") as err, \
                contextlib.ExitStack() as closing:
            given: int | object = subprocess.PIPE if isinstance(stdin, bytes) else (
                closing.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL)
            process = subprocess.Popen(command, stdin=given, stdout=out, stderr=err,  # type: ignore[arg-type]
                                       env=env, cwd=cwd)

            def kill() -> None:  # the measuring process and the command: its session
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

            watchdog = threading.Timer(timeout, kill)
            watchdog.start()
            try:
                if isinstance(stdin, bytes):
                    assert process.stdin is not None
                    with contextlib.suppress(BrokenPipeError):
                        process.stdin.write(stdin)
                    with contextlib.suppress(BrokenPipeError):
                        process.stdin.close()
                process.wait()
            finally:
                watchdog.cancel()
            out.seek(max(0, out.seek(0, os.SEEK_END) - keep_stdout) if keep_stdout else 0)
            stdout = out.read().decode("utf-8", "replace")
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        peak, seconds = (report.read_text().split() if report.exists() else ("0", "0"))
    return Measured(process.returncode, stdout, stderr, int(peak), float(seconds))
