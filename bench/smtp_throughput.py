#!/usr/bin/env python3
"""SMTP accept throughput of ``mailtalk serve`` next to aiosmtpd and Postfix's smtp-sink.

    python bench/smtp_throughput.py [--runs N] [--quick] [--json] [--aiosmtpd-python PATH]
                                    [--journal]

Postfix's ``smtp-source`` sends the same load to each server, all started the same
way (a subprocess on 127.0.0.1, a fresh port) in the same run:

- ``mailtalk (sink)``: ``mailtalk serve --sink --smtp PORT --json``
- ``aiosmtpd (Sink)``: ``python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Sink``
- ``smtp-sink (C)``: ``smtp-sink 127.0.0.1:PORT 1000``, the speed limit
- ``mailtalk (Maildir)``: ``mailtalk serve --user alice:secret`` delivering to
  alice@localhost's Maildir, fsync before every 250
- with ``--journal``, also ``mailtalk (sink, journal)`` and ``mailtalk (Maildir,
  journal)``: the same with ``--journal FILE`` (every event written), to see what the
  journal costs; the two rows without it are the journal off

Two workloads: a new connection per message (``smtp-source -s 10 -m 5000 -l 1024``),
and the same messages over 10 connections that stay open (``-d``: "don't disconnect
after sending a message"). Each (workload, server) pair runs N times, interleaved
round-robin so a noisy neighbour hits every server alike; the table shows the
**median** run (best and worst are in the JSON). Then the peak RSS of the mailtalk
server while it receives one 200 MB message.

aiosmtpd is not a mailtalk dependency: it is taken from ``--aiosmtpd-python`` or from
``bench/.venv`` (created with ``pip install aiosmtpd`` when missing). See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import cpu_seconds, free_port, log, proc_status, wait_for_banner

GOAL = 2.0  # mailtalk (sink) / aiosmtpd (Sink), new connection per message
HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
START_TIMEOUT = 60.0  # seconds for a server to start listening
RUN_TIMEOUT = 300.0  # seconds for one smtp-source run
SESSIONS = 10
MESSAGE_SIZE = 1024

WORKLOADS = {
    "new connection per message": [],
    "one connection, many messages": ["-d"],
}


# -- helpers -----------------------------------------------------------------------


def mailtalk_python() -> str:
    return sys.executable


def aiosmtpd_python(explicit: str | None) -> str | None:
    """A Python that can import aiosmtpd: --aiosmtpd-python, else bench/.venv (made here)."""
    if explicit:
        return explicit
    python = DEFAULT_VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {DEFAULT_VENV} with aiosmtpd (not a mailtalk dependency)")
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", str(DEFAULT_VENV)], check=True, timeout=120
            )
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "aiosmtpd"], check=True, timeout=300
            )
        except (subprocess.SubprocessError, OSError) as error:
            log(f"cannot set up aiosmtpd ({error}); its rows are skipped")
            return None
    probe = subprocess.run([str(python), "-c", "import aiosmtpd"], capture_output=True)
    if probe.returncode != 0:
        log(f"{python} cannot import aiosmtpd; its rows are skipped")
        return None
    return str(python)


# -- servers -------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    recipient: str
    argv: list[str] = field(default_factory=list)
    json_port: bool = False  # mailtalk prints its port as JSON; the others get one
    root: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    stderr_path: Path | None = None

    def start(self, scratch: Path) -> None:
        self.stderr_path = scratch / f"{self.name.split()[0]}-{id(self)}.stderr"
        argv = list(self.argv)
        if not self.json_port:
            self.port = free_port()
            argv = [a.replace("{port}", str(self.port)) for a in argv]
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.json_port else subprocess.DEVNULL,
                stderr=stderr,
                cwd=scratch,  # not the checkout: `python -m` would import from there
                start_new_session=True,  # Ctrl-C reaches us; we stop the servers
            )
        deadline = time.monotonic() + START_TIMEOUT
        if self.json_port:
            self.port = self._read_json_port(deadline)
        wait_for_banner(self.port, deadline, self.process)

    def _read_json_port(self, deadline: float) -> int:
        assert self.process is not None and self.process.stdout is not None
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"{self.name}: no JSON line within {START_TIMEOUT:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited: {self.stderr_tail()}")
        info = json.loads(line)
        return int(info["listeners"][0]["port"])

    def stderr_tail(self) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace").strip()[-500:]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def make_servers(
    scratch: Path, aiosmtpd: str | None, max_size: int, journal: bool = False
) -> list[Server]:
    python = mailtalk_python()
    servers = []
    sink_root = scratch / "mailtalk-sink"
    servers.append(
        Server(
            "mailtalk (sink)",
            "c@d.test",
            [
                python,
                "-m",
                "mailtalk",
                "serve",
                "--sink",
                "--smtp",
                "0",
                "--json",
                "--root",
                str(sink_root),
                "--max-size",
                str(max_size),
            ],
            json_port=True,
            root=sink_root,
        )
    )
    if aiosmtpd is not None:
        servers.append(
            Server(
                "aiosmtpd (Sink)",
                "c@d.test",
                [
                    aiosmtpd,
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    "127.0.0.1:{port}",
                    "-c",
                    "aiosmtpd.handlers.Sink",
                ],
            )
        )
    if os.access(SMTP_SINK, os.X_OK):
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        servers.append(
            Server("smtp-sink (C)", "c@d.test", [SMTP_SINK, *user, "127.0.0.1:{port}", "1000"])
        )
    else:
        log(f"{SMTP_SINK} not found (apt install postfix); its rows are skipped")
    maildir_root = scratch / "mailtalk-maildir"
    servers.append(
        Server(
            "mailtalk (Maildir)",
            "alice@localhost",
            [
                python,
                "-m",
                "mailtalk",
                "serve",
                "--smtp",
                "0",
                "--json",
                "--user",
                "alice:secret",
                "--root",
                str(maildir_root),
                "--max-size",
                str(max_size),
            ],
            json_port=True,
            root=maildir_root,
        )
    )
    # With uvloop installed (mailtalk[fast]) the rows above run on it: this one is the
    # sink on asyncio's own loop, to see what uvloop buys in the same run.
    sink = servers[0]
    servers.insert(
        1,
        Server(
            "mailtalk (sink, asyncio loop)",
            sink.recipient,
            ["env", "MAILTALK_EVENT_LOOP=asyncio", *sink.argv[:-4],
             "--root", str(scratch / "mailtalk-sink-asyncio"), *sink.argv[-2:]],
            json_port=True,
            root=scratch / "mailtalk-sink-asyncio",
        ),
    )  # fmt: skip
    if journal:
        for server in [s for s in servers if s.name.startswith("mailtalk")]:
            assert server.root is not None
            root = server.root.with_name(server.root.name + "-journal")
            argv = [root.as_posix() if a == str(server.root) else a for a in server.argv]
            argv += ["--journal", str(root.with_name(root.name + ".jsonl"))]
            name = server.name.replace(")", ", journal)")
            servers.append(Server(name, server.recipient, argv, json_port=True, root=root))
    return servers


# -- the load --------------------------------------------------------------------------


def run_source(server: Server, extra: list[str], messages: int) -> dict[str, float]:
    """One smtp-source run; wall time, messages per second, server CPU per message."""
    assert server.process is not None
    argv = [
        SMTP_SOURCE,
        *extra,
        "-s",
        str(SESSIONS),
        "-m",
        str(messages),
        "-l",
        str(MESSAGE_SIZE),
        "-f",
        "a@b.test",
        "-t",
        server.recipient,
        f"127.0.0.1:{server.port}",
    ]
    cpu_before = cpu_seconds(server.process.pid)
    start = time.perf_counter()
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT
    )
    wall = time.perf_counter() - start
    cpu = cpu_seconds(server.process.pid) - cpu_before
    complaint = (result.stderr + result.stdout).decode(errors="replace").strip()
    if result.returncode != 0 or complaint:
        raise RuntimeError(
            f"smtp-source against {server.name} exited {result.returncode}: {complaint[-500:]}"
        )
    return {
        "seconds": wall,
        "msg_per_s": messages / wall,
        "server_cpu_us_per_msg": cpu / messages * 1e6,
    }


def count_maildir(root: Path) -> int:
    new = root / "mail" / "alice" / "Maildir" / "new"
    return sum(1 for _ in new.iterdir()) if new.is_dir() else 0


def summarise(samples: list[dict[str, float]]) -> dict[str, Any]:
    rates = [s["msg_per_s"] for s in samples]
    return {
        "median_msg_per_s": statistics.median(rates),
        "best_msg_per_s": max(rates),
        "worst_msg_per_s": min(rates),
        "median_seconds": statistics.median(s["seconds"] for s in samples),
        "median_server_cpu_us_per_msg": statistics.median(
            s["server_cpu_us_per_msg"] for s in samples
        ),
        "runs": samples,
    }


# -- memory: one big message -------------------------------------------------------------


def expect(sock: socket.socket, buffer: bytearray, code: bytes) -> bytes:
    """Read one (possibly multi-line) reply; raise unless it starts with CODE."""
    while True:
        while b"\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            buffer += chunk
        end = buffer.index(b"\r\n") + 2
        line = bytes(buffer[:end])
        del buffer[:end]
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise RuntimeError(f"expected {code.decode()}, got {line!r}")
            return line


def send_big_message(port: int, recipient: str, size: int) -> float:
    """Stream SIZE bytes of 100-byte lines in one message; returns seconds taken."""
    line = b"x" * 98 + b"\r\n"
    chunk = line * 655  # about 64 KB
    header = b"From: a@b.test\r\nTo: " + recipient.encode() + b"\r\nSubject: big\r\n\r\n"
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=RUN_TIMEOUT) as sock:
        buffer = bytearray()
        expect(sock, buffer, b"220")
        for command, code in (
            (b"EHLO bench.test", b"250"),
            (b"MAIL FROM:<a@b.test>", b"250"),
            (b"RCPT TO:<" + recipient.encode() + b">", b"250"),
            (b"DATA", b"354"),
        ):
            sock.sendall(command + b"\r\n")
            expect(sock, buffer, code)
        sock.sendall(header)
        sent = len(header)
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.sendall(b".\r\n")
        expect(sock, buffer, b"250")
        sock.sendall(b"QUIT\r\n")
        expect(sock, buffer, b"221")
    return time.perf_counter() - start


def measure_memory(server: Server, size: int) -> dict[str, Any]:
    assert server.process is not None
    pid = server.process.pid
    baseline = proc_status(pid, "VmRSS")
    hwm_before = proc_status(pid, "VmHWM")
    # Reset the high-water mark to the current RSS so the peak is this message's.
    reset = False
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        reset = True
    seconds = send_big_message(server.port, server.recipient, size)
    peak = proc_status(pid, "VmHWM")
    return {
        "server": server.name,
        "message_bytes": size,
        "seconds": seconds,
        "mb_per_s": size / seconds / 1e6,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "peak_rss_before_message": hwm_before,
        "hwm_reset": reset,
    }


# -- output ----------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def print_report(report: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(
        f"SMTP accept throughput, smtp-source -s {SESSIONS} -m {report['messages']} "
        f"-l {MESSAGE_SIZE}; median of {report['runs']} run(s)\n"
        f"{report['machine']}\n\n"
    )
    names = report["servers"]
    width = max(len(n) for n in names) + 2
    for workload, rows in report["results"].items():
        out.write(f"{workload}:\n")
        out.write(
            f"  {'server':<{width}} {'msg/s':>8} {'best':>8} {'worst':>8} "
            f"{'seconds':>8} {'server CPU us/msg':>18}\n"
        )
        for name in names:
            if name not in rows:
                continue
            r = rows[name]
            out.write(
                f"  {name:<{width}} {r['median_msg_per_s']:>8.0f} {r['best_msg_per_s']:>8.0f} "
                f"{r['worst_msg_per_s']:>8.0f} {r['median_seconds']:>8.2f} "
                f"{r['median_server_cpu_us_per_msg']:>18.0f}\n"
            )
        out.write("\n")
    out.write("ratios (median msg/s):\n")
    for workload, ratios in report["ratios"].items():
        for label, value in ratios.items():
            out.write(f"  {workload}: {label} = {value:.2f}\n")
    goal = report.get("goal")
    if goal is not None:
        verdict = "met" if goal["met"] else "NOT met"
        out.write(
            f"goal: mailtalk/aiosmtpd >= {GOAL:g} on new connection per message: "
            f"{goal['ratio']:.2f}, {verdict}\n"
        )
    for memory in report["memory"]:
        out.write(
            f"\nmemory, one {memory['message_bytes'] / 1e6:.0f} MB message to "
            f"{memory['server']}: baseline RSS {mib(memory['baseline_rss'])}, peak RSS "
            f"(VmHWM) {mib(memory['peak_rss'])}, {memory['mb_per_s']:.0f} MB/s\n"
        )
    for note in report["notes"]:
        out.write(f"note: {note}\n")


def ratio(rows: dict[str, Any], a: str, b: str) -> float | None:
    if a in rows and b in rows:
        return float(rows[a]["median_msg_per_s"] / rows[b]["median_msg_per_s"])
    return None


# -- main --------------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    messages = args.messages or (500 if args.quick else 5000)
    big = (
        args.big_message_mb * 1_000_000
        if args.big_message_mb
        else (20_000_000 if args.quick else 200_000_000)
    )
    max_size = big + 10_000_000
    aiosmtpd = aiosmtpd_python(args.aiosmtpd_python)
    servers = make_servers(scratch, aiosmtpd, max_size, args.journal)
    notes: list[str] = []
    samples: dict[str, dict[str, list[dict[str, float]]]] = {w: {} for w in WORKLOADS}
    try:
        for server in servers:
            log(f"starting {server.name}")
            server.start(scratch)
        # Warm-up: one short run of each workload against each server.
        for extra in WORKLOADS.values():
            for server in servers:
                run_source(server, extra, min(200, messages))
        for run in range(args.runs):
            order = servers[run % len(servers) :] + servers[: run % len(servers)]
            for workload, extra in WORKLOADS.items():
                for server in order:
                    sample = run_source(server, extra, messages)
                    samples[workload].setdefault(server.name, []).append(sample)
                    log(
                        f"run {run + 1}/{args.runs} {workload:<30} {server.name:<20} "
                        f"{sample['msg_per_s']:>7.0f} msg/s"
                    )
        maildir = next(s for s in servers if s.name == "mailtalk (Maildir)")
        assert maildir.root is not None
        delivered = count_maildir(maildir.root)
        expected = len(WORKLOADS) * (args.runs * messages + min(200, messages))
        if delivered != expected:
            notes.append(f"Maildir holds {delivered} messages, expected {expected}")
        else:
            notes.append(f"Maildir delivery verified: {delivered} messages in new/")
        # Memory: the big message, to the sink and to the Maildir.
        memory = []
        if not args.no_memory:
            for server in servers:
                if server.name.startswith("mailtalk"):
                    log(f"sending one {big / 1e6:.0f} MB message to {server.name}")
                    memory.append(measure_memory(server, big))
    finally:
        for server in servers:
            server.stop()
    results = {w: {name: summarise(s) for name, s in rows.items()} for w, rows in samples.items()}
    ratios: dict[str, dict[str, float]] = {}
    for workload, rows in results.items():
        found = {}
        for label, a, b in (
            ("mailtalk/aiosmtpd", "mailtalk (sink)", "aiosmtpd (Sink)"),
            ("mailtalk/smtp-sink", "mailtalk (sink)", "smtp-sink (C)"),
            ("uvloop/asyncio loop, sink", "mailtalk (sink)", "mailtalk (sink, asyncio loop)"),
            ("mailtalk asyncio loop/aiosmtpd", "mailtalk (sink, asyncio loop)", "aiosmtpd (Sink)"),
            ("mailtalk Maildir/aiosmtpd", "mailtalk (Maildir)", "aiosmtpd (Sink)"),
            ("mailtalk Maildir/sink", "mailtalk (Maildir)", "mailtalk (sink)"),
            ("journal on/off, sink", "mailtalk (sink, journal)", "mailtalk (sink)"),
            ("journal on/off, Maildir", "mailtalk (Maildir, journal)", "mailtalk (Maildir)"),
        ):
            value = ratio(rows, a, b)
            if value is not None:
                found[label] = value
        ratios[workload] = found
    goal_ratio = ratios["new connection per message"].get("mailtalk/aiosmtpd")
    return {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "messages": messages,
        "message_size": MESSAGE_SIZE,
        "sessions": SESSIONS,
        "runs": args.runs,
        "statistic": "median",
        "servers": [s.name for s in servers],
        "results": results,
        "ratios": ratios,
        "goal": None
        if goal_ratio is None
        else {"ratio": goal_ratio, "target": GOAL, "met": goal_ratio >= GOAL},
        "memory": memory,
        "notes": notes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per server and workload")
    parser.add_argument("--quick", action="store_true", help="500 messages, 20 MB, a smoke run")
    parser.add_argument("--messages", type=int, help="messages per run (default 5000)")
    parser.add_argument("--big-message-mb", type=int, help="size of the memory test message")
    parser.add_argument("--no-memory", action="store_true", help="skip the big message")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--journal", action="store_true", help="also the mailtalk servers writing --journal"
    )
    parser.add_argument(
        "--aiosmtpd-python",
        metavar="PATH",
        help="a Python that has aiosmtpd (default: bench/.venv, made if missing)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not os.access(SMTP_SOURCE, os.X_OK):
        log(f"{SMTP_SOURCE} not found: install postfix (it ships smtp-source and smtp-sink)")
        return 2

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    scratch = Path(tempfile.mkdtemp(prefix="mailtalk-smtp-bench-"))
    try:
        report = benchmark(args, scratch)
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        log(f"smtp_throughput.py: {error}")
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
