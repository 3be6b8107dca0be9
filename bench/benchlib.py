"""What the benchmarks share: logging, ports, waiting for a server, CPU and memory
figures of a process. Imported by the scripts of this folder (run as
``python bench/NAME.py``, which puts this folder on the path)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Result = TypeVar("Result")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_banner(port: int, deadline: float, process: subprocess.Popen[bytes]) -> None:
    """Until the server on PORT sends its 220 (or the process dies, or time is up)."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(512).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        sock.recv(512)
                    return
        except OSError:
            time.sleep(0.05)
    waited = max(deadline - started, 0.0)
    raise RuntimeError(f"nothing answered on port {port} within {waited:.0f} s")


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` figure from /proc/PID/status (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_in_scratch(
    name: str,
    work: Callable[[Path], Result],
    on_error: Callable[[Path], None] | None = None,
) -> Result | int:
    """``work(scratch)`` in a temporary folder removed afterwards, SIGTERM and Ctrl-C
    ending it as KeyboardInterrupt (the work stops its servers in ``finally``): its
    result, or the exit status to return, after a line on stderr: 130 if interrupted,
    1 if it failed (``on_error(scratch)`` may say more first)."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    scratch = Path(tempfile.mkdtemp(prefix=f"mailtalk-{name}-"))
    try:
        return work(scratch)
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        log(f"{name}: {error}")
        if on_error is not None:
            on_error(scratch)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def finish(
    report: dict[str, Any] | int,
    as_json: bool,
    print_report: Callable[[dict[str, Any]], None],
    ok: Callable[[dict[str, Any]], bool],
) -> int:
    """The end of a benchmark's main(): an exit status from ``run_in_scratch`` as it is,
    else the report as JSON or as a table, and 0 if ``ok(report)`` else 1."""
    if isinstance(report, int):
        return report
    if as_json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if ok(report) else 1
