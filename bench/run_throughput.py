#!/usr/bin/env python3
"""Messages a second that ``mailtalk run`` sends, next to a shell loop of swaks.

    python bench/run_throughput.py [--count N] [--swaks-count N] [--json]
                                   [--aiosmtpd-python PATH]

One aiosmtpd server (``aiosmtpd.controller.Controller`` with ``aiosmtpd.handlers.Sink``,
on 127.0.0.1, a free port) receives, in the same run:

- ``mailtalk run --repeat N --json new.mt``: a session file that sends one message per
  run over a new connection (connect, EHLO, MAIL, RCPT, a ``data`` here-block, QUIT),
  concurrency 1, then ``--concurrency 8``;
- ``mailtalk run --repeat N --reuse --json reuse.mt``: the same with MAIL, RCPT and DATA
  in ``loop`` ... ``end``, so all N messages go over one connection;
- ``for i in $(seq N); do swaks --server 127.0.0.1:PORT ... --silent 2; done``: one
  swaks process per message, one after the other, the way people script it.

The session files and the message (the same bytes for mailtalk and swaks) are written
to a temporary directory at run time. Every mailtalk run must exit 0 with
``passed == N``; every swaks must exit 0. The table gives messages/s as mailtalk
reports it (the replays alone) and over the whole process (start-up included), and the
ratios mailtalk/swaks. The goal: at least 20x swaks over new connections.

aiosmtpd is not a mailtalk dependency: the server runs under this Python if it has
aiosmtpd, else ``--aiosmtpd-python``, else ``bench/.venv`` (created with ``pip install
aiosmtpd`` when missing), as in bench/smtp_throughput.py. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import cpu_seconds, free_port, log, wait_for_banner

GOAL = 20.0  # mailtalk run (new connections, concurrency 1) / swaks loop, messages/s
HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv"
START_TIMEOUT = 60.0  # seconds for the server to start listening
RUN_TIMEOUT = 900.0  # seconds for one measured command
MAILTALK = Path(sys.executable).with_name("mailtalk")
SENDER = "b@example.test"
RECIPIENT = "a@example.test"
HELO = "bench.test"

# The aiosmtpd server, run as `python -c SERVER PORT`: a Controller with the Sink
# handler (accepts and discards), until SIGTERM.
SERVER = """\
import signal, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
print("ready", flush=True)
stop.wait()
controller.stop()
"""


# -- helpers -----------------------------------------------------------------------


def children_cpu() -> float:
    """User + system CPU time of our finished (waited-for) children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def can_import_aiosmtpd(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import aiosmtpd"], capture_output=True)
    return probe.returncode == 0


def aiosmtpd_python(explicit: str | None) -> str:
    """A Python that can import aiosmtpd: this one, --aiosmtpd-python, else bench/.venv."""
    if explicit:
        if not can_import_aiosmtpd(explicit):
            raise RuntimeError(f"{explicit} cannot import aiosmtpd")
        return explicit
    if can_import_aiosmtpd(sys.executable):
        return sys.executable
    python = DEFAULT_VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {DEFAULT_VENV} with aiosmtpd (not a mailtalk dependency)")
        subprocess.run([sys.executable, "-m", "venv", str(DEFAULT_VENV)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "aiosmtpd"], check=True, timeout=300
        )
    if not can_import_aiosmtpd(str(python)):
        raise RuntimeError(f"{python} cannot import aiosmtpd (pip install aiosmtpd there)")
    return str(python)


def aiosmtpd_version(python: str) -> str:
    probe = subprocess.run(
        [python, "-c", "import aiosmtpd; print(aiosmtpd.__version__)"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() or "?"


def swaks_version(swaks: str) -> str:
    probe = subprocess.run([swaks, "--version"], capture_output=True, text=True)
    words = probe.stdout.split()
    return words[2] if len(words) > 2 and words[:2] == ["swaks", "version"] else "?"


# -- the server ----------------------------------------------------------------------


@dataclass
class Server:
    python: str
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    stderr_path: Path | None = None

    def start(self, scratch: Path) -> None:
        self.port = free_port()
        self.stderr_path = scratch / "aiosmtpd.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [self.python, "-c", SERVER, str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=scratch,
                start_new_session=True,  # Ctrl-C reaches us; we stop the server
            )
        try:
            wait_for_banner(self.port, time.monotonic() + START_TIMEOUT, self.process)
        except RuntimeError as error:
            raise RuntimeError(f"aiosmtpd: {error}: {self.stderr_tail()}") from None

    def stderr_tail(self) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace").strip()[-500:]

    def cpu(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=5)


# -- the files -------------------------------------------------------------------------


def message_text() -> str:
    """About 1 KB of plain text: the message both mailtalk and swaks send."""
    lines = [
        f"From: <{SENDER}>",
        f"To: <{RECIPIENT}>",
        "Subject: mailtalk run throughput",
        "Date: Thu, 03 Dec 2026 07:00:00 +0000",
        "Message-ID: <run-throughput@bench.test>",
        "",
    ]
    filler = "The quick brown fox jumps over the lazy dog while the mail goes out. "
    lines += [(filler * 2)[:72] for _ in range(12)]
    return "\n".join(lines) + "\n"


def session_file(port: int, message: str, reuse: bool) -> str:
    head = [
        f"# mailtalk run benchmark: {'one connection' if reuse else 'a new connection per run'}",
        f"connect smtp://127.0.0.1:{port}",
        "S: 220",
        f"C: EHLO {HELO}",
        "S: 250",
    ]
    body = [
        f"C: MAIL FROM:<{SENDER}>",
        "S: 250",
        f"C: RCPT TO:<{RECIPIENT}>",
        "S: 250",
        "data <<'MSG'",
        *message.rstrip("\n").split("\n"),
        "MSG",
        "S: 250",
    ]
    tail = ["C: QUIT", "S: 221", ""]
    if reuse:
        body = ["loop", *body, "end"]
    return "\n".join(head + body + tail)


# -- the measurements ------------------------------------------------------------------


def run_mailtalk(
    name: str, script: Path, count: int, server: Server, extra: list[str]
) -> dict[str, Any]:
    """One `mailtalk run --repeat COUNT --json` process; its figures and the wall time."""
    argv = [str(MAILTALK), "run", "--repeat", str(count), "--json", *extra, str(script)]
    cpu_before, server_before = children_cpu(), server.cpu()
    start = time.perf_counter()
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    wall = time.perf_counter() - start
    client_cpu, server_cpu = children_cpu() - cpu_before, server.cpu() - server_before
    command = shlex.join(["mailtalk", *argv[1:-1], script.name])
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        figures = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        figures = None
    if result.returncode != 0 or figures is None or figures.get("passed") != count:
        raise RuntimeError(
            f"{command} exited {result.returncode} (expected 0 and passed == {count}):\n"
            f"stdout: {result.stdout.strip()[-1000:]}\nstderr: {result.stderr.strip()[-1000:]}"
        )
    return {
        "name": name,
        "command": command,
        "messages": count,
        "wall_seconds": wall,
        "msg_per_s": float(figures["messages_per_second"]),
        "wall_msg_per_s": count / wall,
        "latency_ms": figures["latency_ms"],
        "client_cpu_ms_per_msg": client_cpu / count * 1000,
        "server_cpu_us_per_msg": server_cpu / count * 1e6,
        "mailtalk": figures,
    }


def run_swaks(
    swaks: str, message_file: Path, count: int, server: Server, scaled_to: int
) -> dict[str, Any]:
    """A bash loop of COUNT swaks processes, one message each, one after the other."""
    one = shlex.join(
        [
            swaks,
            "--server",
            f"127.0.0.1:{server.port}",
            "--helo",
            HELO,
            "--from",
            SENDER,
            "--to",
            RECIPIENT,
            "--data",
            f"@{message_file}",
            "--silent",
            "2",
        ]
    )
    loop = f'for i in $(seq {count}); do {one} || exit "$?"; done'
    cpu_before, server_before = children_cpu(), server.cpu()
    start = time.perf_counter()
    result = subprocess.run(
        ["bash", "-c", loop],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    wall = time.perf_counter() - start
    client_cpu, server_cpu = children_cpu() - cpu_before, server.cpu() - server_before
    complaint = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or complaint:
        raise RuntimeError(f"swaks loop exited {result.returncode}: {complaint[-1000:]}")
    rate = count / wall
    return {
        "name": "swaks, shell loop",
        "command": loop.replace(one, one.replace(swaks, "swaks", 1)),
        "messages": count,
        "wall_seconds": wall,
        "msg_per_s": rate,
        "wall_msg_per_s": rate,
        "latency_ms": {"mean": wall / count * 1000},
        "client_cpu_ms_per_msg": client_cpu / count * 1000,
        "server_cpu_us_per_msg": server_cpu / count * 1e6,
        "projected_seconds_for_count": scaled_to / rate,
    }


# -- output ----------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(
        f"mailtalk run vs swaks, {report['count']} messages of {report['message_bytes']} "
        f"bytes to aiosmtpd {report['aiosmtpd']} (Controller + Sink) on 127.0.0.1\n"
        f"{report['machine']}\n\n"
    )
    rows = report["rows"]
    width = max(len(r["name"]) for r in rows) + 2
    out.write(
        f"{'client':<{width}} {'msgs':>5} {'msg/s':>8} {'wall msg/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'client CPU ms/msg':>17} {'server CPU ms/msg':>17} "
        f"{'x swaks':>8} "
        f"{'x swaks (wall)':>14}\n"
    )
    for row in rows:
        latency = row["latency_ms"]
        p50 = latency.get("p50", latency.get("mean"))
        p99 = latency.get("p99")
        ratio = row.get("x_swaks")
        wall_ratio = row.get("x_swaks_wall")
        out.write(
            f"{row['name']:<{width}} {row['messages']:>5} {row['msg_per_s']:>8.1f} "
            f"{row['wall_msg_per_s']:>10.1f} {p50:>7.2f} "
            f"{'-' if p99 is None else f'{p99:.2f}':>7} "
            f"{row['client_cpu_ms_per_msg']:>17.2f} {row['server_cpu_us_per_msg'] / 1000:>17.2f} "
            f"{'-' if ratio is None else f'{ratio:.1f}':>8} "
            f"{'-' if wall_ratio is None else f'{wall_ratio:.1f}':>14}\n"
        )
    out.write(
        "\nmsg/s: as `mailtalk run` reports it (the replays, without start-up); "
        "wall msg/s: messages / wall time of the whole process (start-up included).\n"
        "swaks p50 ms column: the mean per message (one process each).\n"
    )
    goal = report["goal"]
    out.write(
        f"goal: mailtalk run (new connections, concurrency 1) / swaks >= {GOAL:g}: "
        f"{goal['ratio']:.1f} ({'met' if goal['met'] else 'NOT met'}); "
        f"wall time: {goal['wall_ratio']:.1f} ({'met' if goal['wall_met'] else 'NOT met'})\n"
    )
    out.write(
        f"one connection (--reuse): {report['reuse_msg_per_s']:.1f} msg/s, "
        f"{report['reuse_x_swaks']:.1f}x swaks\n"
    )
    for note in report["notes"]:
        out.write(f"note: {note}\n")


# -- main --------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, scratch: Path, swaks: str) -> dict[str, Any]:
    python = aiosmtpd_python(args.aiosmtpd_python)
    server = Server(python)
    notes: list[str] = []
    log(f"starting aiosmtpd (Sink) with {python}")
    server.start(scratch)
    try:
        message = message_text()
        message_file = scratch / "message.eml"
        message_file.write_text(message)
        new = scratch / "new.mt"
        reuse = scratch / "reuse.mt"
        new.write_text(session_file(server.port, message, reuse=False))
        reuse.write_text(session_file(server.port, message, reuse=True))
        # Warm-up: page cache, .pyc files, the server's first connections.
        run_mailtalk("warm-up", new, 20, server, [])
        run_mailtalk("warm-up", reuse, 20, server, ["--reuse"])
        run_swaks(swaks, message_file, 3, server, 3)
        rows = []
        for name, script, extra in (
            ("mailtalk run, new conn, c=1", new, []),
            ("mailtalk run, new conn, c=8", new, ["--concurrency", "8"]),
            ("mailtalk run --reuse, 1 conn", reuse, ["--reuse"]),
        ):
            log(f"{name}: {args.count} messages")
            row = run_mailtalk(name, script, args.count, server, extra)
            log(f"  {row['msg_per_s']:.1f} msg/s ({row['wall_msg_per_s']:.1f} with start-up)")
            rows.append(row)
        log(f"swaks, shell loop: {args.swaks_count} messages, one process each")
        swaks_row = run_swaks(swaks, message_file, args.swaks_count, server, args.count)
        log(f"  {swaks_row['msg_per_s']:.1f} msg/s")
        rows.append(swaks_row)
        if server.process is None or server.process.poll() is not None:
            raise RuntimeError(f"aiosmtpd died during the run: {server.stderr_tail()}")
    finally:
        server.stop()
    if args.swaks_count != args.count:
        notes.append(
            f"swaks sent {args.swaks_count} messages; at its rate {args.count} would take "
            f"{swaks_row['projected_seconds_for_count']:.1f} s"
        )
    swaks_rate = swaks_row["msg_per_s"]
    for row in rows[:-1]:
        row["x_swaks"] = row["msg_per_s"] / swaks_rate
        row["x_swaks_wall"] = row["wall_msg_per_s"] / swaks_rate
    first, reused = rows[0], rows[2]
    return {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "aiosmtpd": aiosmtpd_version(python),
        "swaks": swaks_version(swaks),
        "count": args.count,
        "swaks_count": args.swaks_count,
        "message_bytes": len(message.replace("\n", "\r\n").encode()),
        "rows": rows,
        "goal": {
            "target": GOAL,
            "ratio": first["x_swaks"],
            "met": first["x_swaks"] >= GOAL,
            "wall_ratio": first["x_swaks_wall"],
            "wall_met": first["x_swaks_wall"] >= GOAL,
        },
        "reuse_msg_per_s": reused["msg_per_s"],
        "reuse_x_swaks": reused["x_swaks"],
        "notes": notes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="messages per mailtalk run")
    parser.add_argument(
        "--swaks-count",
        type=int,
        help="messages for the swaks loop (default: --count); the rate is per message",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--aiosmtpd-python",
        metavar="PATH",
        help="a Python that has aiosmtpd (default: this one, else bench/.venv, made if missing)",
    )
    args = parser.parse_args()
    if args.swaks_count is None:
        args.swaks_count = args.count
    if args.count < 1 or args.swaks_count < 1:
        parser.error("--count and --swaks-count must be at least 1")
    if not MAILTALK.exists():
        log(f"{MAILTALK} not found: run this with the Python of mailtalk's environment")
        return 2
    swaks = shutil.which("swaks")
    if swaks is None:
        log("swaks not found (apt-get install swaks)")
        return 2

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    scratch = Path(tempfile.mkdtemp(prefix="mailtalk-run-bench-"))
    try:
        report = benchmark(args, scratch, swaks)
    except KeyboardInterrupt:
        log("interrupted; server stopped")
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        log(f"run_throughput.py: {error}")
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
