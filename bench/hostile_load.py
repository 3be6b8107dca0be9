#!/usr/bin/env python3
"""Hostile clients against ``mailtalk serve``, beside Postfix and Dovecot (issue 15, 1-3).

    python bench/hostile_load.py [--only NAME ...] [--json] [--mailtalk-path SRC]
                                 [--no-peers] [--slowloris-seconds N]

Every probe is bounded in count and time and talks to loopback only: mailtalk runs
as a subprocess (``mailtalk serve`` on free ports; ``--mailtalk-path SRC`` runs the
package in SRC instead of the installed one, to measure an older checkout), Postfix
(SMTP 25, SMTPS 465) and Dovecot (IMAP 143, IMAPS 993, POP3 110) are the ones
``scripts/real-servers start`` runs, used where the probe applies (a probe that
needs a mailbox with a 45 MB message, or the server's own memory, is mailtalk only).

Probes (figures printed per server):

- ``flood-smtp``, ``flood-imap``, ``flood-pop3``: a client writes ``EHLO x`` /
  ``a CAPABILITY`` / ``CAPA`` as fast as it can for 8 s (at most 40 MiB) and never
  reads. Figures: MiB the server took before it stopped reading, and (mailtalk) its
  RSS growth.
- ``fetch-45mb`` (mailtalk): ``FETCH 1 BODY.PEEK[]`` of a 45 MB message, read only
  after 3 s: the server's peak RSS growth for that one session.
- ``top-45mb`` (mailtalk): ``TOP 1 999999999`` of the same message, read after 3 s:
  peak RSS growth, and asyncio warnings in the server's log.
- ``stall`` (mailtalk, ``--idle-timeout 5``): a client with a 4 KiB receive window
  that sends CAPABILITY for 5 s and never reads: seconds until the server drops it.
- ``handshakes``: 1,000 connections to the implicit-TLS port that never start the
  handshake: how many the server still holds after 15 s, its RSS growth (mailtalk),
  and the time an unrelated client waits for its plain-text greeting meanwhile.
- ``emfile`` (mailtalk, ``RLIMIT_NOFILE`` 256 soft and hard, ``--max-connections
  1000``, no per-address cap): 400 connections, held 3 s: tracebacks and ``Too many open files``
  lines in the log, and whether a new client gets its greeting once they are gone.
- ``slowloris``: 100 SMTP connections from 127.0.0.1 sending one byte of a line that
  never ends every 2 s for ``--slowloris-seconds`` (default 75): how many were greeted,
  how many the server still holds at the end, and the worst greeting time of a client
  from 127.0.0.2 meanwhile.
- ``burst``: 1,000 SMTP connections opened at once: how many got a 220, a 421, a
  close without a word, or nothing within 10 s (mailtalk twice: default limits, and
  ``--max-connections 2000 --max-connections-per-address 0`` where that option exists).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchlib import log, proc_status
from probes import write_unread

HOST = "127.0.0.1"
OTHER_SOURCE = "127.0.0.2"  # an unrelated client: another address on loopback
USER, PASSWORD = "alice", "secret"
MIB = 1024 * 1024
BIG_MESSAGE = 45 * MIB
START_TIMEOUT = 60.0
PEERS = {
    "postfix": {"smtp": 25, "smtps": 465},
    "dovecot": {"imap": 143, "imaps": 993, "pop3": 110},
}
FLOOD_COMMAND = {"smtp": b"EHLO x\r\n", "imap": b"a CAPABILITY\r\n", "pop3": b"CAPA\r\n"}
TCP_STATES = {1: "established", 7: "closed", 8: "close-wait"}


# -- the mailtalk server -------------------------------------------------------------


class Mailtalk:
    """One ``mailtalk serve`` subprocess on free ports."""

    def __init__(self, scratch: Path, source: Path | None, *options: str,
                 nofile: int | None = None, message: bytes | None = None) -> None:
        self.root = scratch / f"root-{time.monotonic_ns()}"
        self.stderr_path = self.root.parent / (self.root.name + ".log")
        env = dict(os.environ)
        if source is not None:
            env["PYTHONPATH"] = str(source)
        if message is not None:
            new = self.root / "mail" / USER / "Maildir" / "new"
            new.mkdir(parents=True)
            for sub in ("cur", "tmp"):
                (new.parent / sub).mkdir()
            (new / "1700000000.big.bench").write_bytes(message)
        self.root.mkdir(parents=True, exist_ok=True)

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        command = [sys.executable, "-m", "mailtalk", "serve", "--json", "--root", str(self.root),
                   "--user", f"{USER}:{PASSWORD}", "--smtp", "0", "--smtps", "0",
                   "--imap", "0", "--imaps", "0", "--pop3", "0", *options]
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr,
                                            env=env, preexec_fn=limit, cwd=scratch)
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            ready = selector.select(START_TIMEOUT)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"mailtalk serve did not start: {self.log()[-800:]}")
        self.ports = {x["protocol"]: int(x["port"]) for x in json.loads(line)["listeners"]}
        time.sleep(0.3)
        self.baseline = self.rss()

    def rss(self, key: str = "VmRSS") -> int:
        return proc_status(self.process.pid, key)

    def reset_peak(self) -> None:
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def mailtalk(
    scratch: Path, source: Path | None, *options: str, **kwargs: Any
) -> Iterator[Mailtalk]:
    server = Mailtalk(scratch, source, *options, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def serve_has(source: Path | None, option: str) -> bool:
    env = dict(os.environ, **({"PYTHONPATH": str(source)} if source else {}))
    out = subprocess.run([sys.executable, "-m", "mailtalk", "serve", "--help"],
                         capture_output=True, text=True, env=env, timeout=60, cwd="/").stdout
    return option in out


# -- small socket helpers ---------------------------------------------------------------


def connect(port: int, source: str | None = None, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((HOST, port))
    return sock


def tcp_state(sock: socket.socket) -> str:
    """The kernel's TCP state of our end: a server's abort shows as closed, its close
    as close-wait; no byte is read (so a probe that must not read can ask)."""
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return "closed"
    return TCP_STATES.get(state, str(state))


def greeting_time(port: int, source: str = OTHER_SOURCE, limit: float = 10.0) -> float | None:
    """Seconds until a client from another address gets its first line, None if never."""
    started = time.monotonic()
    try:
        with connect(port, source, timeout=limit) as sock:
            line = sock.recv(512)
    except OSError:
        return None
    return time.monotonic() - started if line[:1] in (b"2", b"*", b"+") else None


def read_line(sock: socket.socket, limit: float = 10.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def until(sock: socket.socket, marker: bytes, limit: float = 60.0) -> bytes:
    sock.settimeout(limit)
    data = bytearray()
    while marker not in data[-len(marker) - (1 << 20):]:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def mib(n: float) -> float:
    return round(n / MIB, 1)


# -- probes ---------------------------------------------------------------------------------


def flood(port: int, command: bytes, seconds: float = 8.0, most: int = 40 * MIB) -> float:
    """MiB written to a server that answers each line, never reading its answers."""
    with connect(port) as sock:
        return mib(write_unread(sock, command, seconds, most))


def probe_flood(
    kind: str, servers: dict[str, Any], scratch: Path, source: Path | None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with mailtalk(scratch, source) as server:
        before = server.rss()
        taken = flood(server.ports[kind], FLOOD_COMMAND[kind])
        time.sleep(0.5)
        results["mailtalk"] = {"MiB taken": taken, "RSS growth MB": mib(server.rss() - before)}
    for name, ports in servers.items():
        if kind in ports:
            results[name] = {"MiB taken": flood(ports[kind], FLOOD_COMMAND[kind])}
    return results


def probe_fetch(scratch: Path, source: Path | None, message: bytes) -> dict[str, Any]:
    with mailtalk(scratch, source, message=message) as server:
        sock = connect(server.ports["imap"])
        read_line(sock)
        sock.sendall(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n")
        until(sock, b"b OK")
        time.sleep(0.5)
        server.reset_peak()
        before = server.rss()
        sock.sendall(b"c FETCH 1 BODY.PEEK[]\r\n")
        time.sleep(3.0)
        during = server.rss()
        data = until(sock, b"c OK", limit=120)
        sock.close()
        peak = server.rss("VmHWM")
    return {"mailtalk": {"RSS while unread MB": mib(during - before),
                         "peak growth MB": mib(peak - before),
                         "complete": len(data) > len(message)}}


def probe_top(scratch: Path, source: Path | None, message: bytes) -> dict[str, Any]:
    with mailtalk(scratch, source, message=message) as server:
        sock = connect(server.ports["pop3"])
        read_line(sock)
        sock.sendall(b"USER alice\r\n")
        read_line(sock)
        sock.sendall(b"PASS secret\r\n")
        read_line(sock)
        time.sleep(0.5)
        server.reset_peak()
        before = server.rss()
        log_before = len(server.log().splitlines())
        sock.sendall(b"TOP 1 999999999\r\n")
        time.sleep(3.0)
        during = server.rss()
        started = time.monotonic()
        until(sock, b"\r\n.\r\n", limit=120)
        read_seconds = time.monotonic() - started
        sock.close()
        peak = server.rss("VmHWM")
        lines = server.log().splitlines()[log_before:]
    warnings = sum(1 for line in lines if "asyncio" in line or "Executing" in line)
    return {"mailtalk": {"RSS while unread MB": mib(during - before),
                         "peak growth MB": mib(peak - before),
                         "read s": round(read_seconds, 1), "asyncio warnings": warnings}}


def probe_stall(scratch: Path, source: Path | None) -> dict[str, Any]:
    with mailtalk(scratch, source, "--idle-timeout", "5") as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small window: the replies cannot all sit in the kernel's buffers, where a
        # server that closed would look gone to itself and connected to us.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((HOST, server.ports["imap"]))
        write_unread(sock, b"a CAPABILITY\r\n", seconds=5.0, most=4 * MIB)
        started = time.monotonic()
        state = "established"
        while time.monotonic() - started < 60 and state == "established":
            time.sleep(0.25)
            state = tcp_state(sock)
        sock.close()
    held = time.monotonic() - started
    return {"mailtalk": {"dropped after s": round(held, 1) if state != "established" else None,
                         "held 60 s": state == "established"}}


def stalled_handshakes(tls_port: int, plain_port: int | None, count: int,
                       rss: Callable[[], int] | None) -> dict[str, Any]:
    socks: list[socket.socket] = []
    before = rss() if rss else 0
    for _ in range(count):
        try:
            socks.append(connect(tls_port, timeout=5))
        except OSError:
            break
    time.sleep(2.0)
    grown = rss() - before if rss else None
    greeting = greeting_time(plain_port) if plain_port else None
    time.sleep(13.0)
    held = sum(1 for s in socks if tcp_state(s) == "established")
    for sock in socks:
        sock.close()
    result: dict[str, Any] = {"connected": len(socks), "still held after 15 s": held}
    if rss is not None:
        result["RSS growth MB"] = mib(grown or 0)
    if plain_port:
        result["other client's greeting s"] = round(greeting, 2) if greeting is not None else None
    return result


def probe_handshakes(servers: dict[str, Any], scratch: Path, source: Path | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with mailtalk(scratch, source) as server:
        results["mailtalk"] = stalled_handshakes(server.ports["smtps"], server.ports["smtp"],
                                                 1000, server.rss)
    for name, ports in servers.items():
        tls = ports.get("smtps") or ports.get("imaps")
        plain = ports.get("smtp") or ports.get("imap")
        if tls:
            results[name] = stalled_handshakes(tls, plain, 1000, None)
    return results


def probe_emfile(scratch: Path, source: Path | None) -> dict[str, Any]:
    options = ["--max-connections", "1000"]
    if serve_has(source, "--max-connections-per-address"):
        options += ["--max-connections-per-address", "0"]  # run out of descriptors first
    with mailtalk(scratch, source, *options, nofile=256) as server:
        socks = []
        for _ in range(400):
            try:
                socks.append(connect(server.ports["smtp"], timeout=5))
            except OSError:
                break
        time.sleep(3.0)
        for sock in socks:
            sock.close()
        time.sleep(1.5)
        greeting = greeting_time(server.ports["smtp"])
        text = server.log()
    return {"mailtalk": {
        "log lines 'too many open files'": text.lower().count("too many open files"),
        "tracebacks": text.count("Traceback"),
        "log KB": round(len(text.encode()) / 1024, 1),
        "greeting after s": round(greeting, 2) if greeting is not None else None,
    }}


def slowloris(port: int, seconds: float, count: int = 100) -> dict[str, Any]:
    socks: list[socket.socket] = []
    greeted = refused = 0
    for _ in range(count):
        try:
            sock = connect(port, timeout=5)
        except OSError:
            continue
        socks.append(sock)
    for sock in socks:
        sock.settimeout(3)
        try:
            line = sock.recv(512)
        except OSError:
            line = b""
        if line.startswith(b"220"):
            greeted += 1
        else:
            refused += 1
        sock.setblocking(False)
    started = time.monotonic()
    text = b"NOOP " + b"x" * 10_000  # one line that never ends
    position = 0
    worst: float | None = 0.0
    while time.monotonic() - started < seconds:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.send(text[position:position + 1])
        position += 1
        took = greeting_time(port, limit=5)
        worst = None if took is None or worst is None else max(worst, took)
        time.sleep(2.0)
    held = sum(1 for s in socks if tcp_state(s) == "established")
    for sock in socks:
        sock.close()
    return {"greeted": greeted, "refused": refused, f"held after {seconds:g} s": held,
            "other client's worst greeting s": round(worst, 2) if worst is not None else None}


def probe_slowloris(servers: dict[str, Any], scratch: Path, source: Path | None,
                    seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with mailtalk(scratch, source) as server:
        results["mailtalk"] = slowloris(server.ports["smtp"], seconds)
    for name, ports in servers.items():
        if "smtp" in ports:
            results[name] = slowloris(ports["smtp"], seconds)
    return results


def burst(port: int, count: int = 1000, window: float = 10.0) -> dict[str, Any]:
    selector = selectors.DefaultSelector()
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((HOST, port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            continue
        socks.append(sock)
        selector.register(sock, selectors.EVENT_READ)
    counts: dict[str, Any] = {"220": 0, "421": 0, "closed silently": 0, "nothing": 0, "other": 0}
    started = time.monotonic()
    times: list[float] = []
    pending = len(socks)
    while pending and time.monotonic() - started < window:
        for key, _ in selector.select(0.2):
            answered = key.fileobj
            assert isinstance(answered, socket.socket)
            sock = answered
            try:
                data = sock.recv(512)
            except OSError:
                data = b""
            selector.unregister(sock)
            pending -= 1
            times.append(time.monotonic() - started)
            code = data[:3].decode("ascii", "replace")
            if code not in ("220", "421"):
                code = "other" if data else "closed silently"
            counts[code] += 1
            if code == "220":
                with contextlib.suppress(OSError):
                    sock.send(b"QUIT\r\n")
            sock.close()
    counts["nothing"] = pending
    for sock in socks:
        sock.close()
    selector.close()
    counts["last answer s"] = round(max(times), 2) if times else None
    return counts


def probe_burst(servers: dict[str, Any], scratch: Path, source: Path | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with mailtalk(scratch, source) as server:
        results["mailtalk"] = burst(server.ports["smtp"])
    wide = ["--max-connections", "2000"]
    if serve_has(source, "--max-connections-per-address"):
        wide += ["--max-connections-per-address", "0"]
    with mailtalk(scratch, source, *wide) as server:
        results["mailtalk --max-connections 2000"] = burst(server.ports["smtp"])
    for name, ports in servers.items():
        if "smtp" in ports:
            results[name] = burst(ports["smtp"])
    return results


# -- main --------------------------------------------------------------------------------------

PROBES = ["flood-smtp", "flood-imap", "flood-pop3", "fetch-45mb", "top-45mb", "stall",
          "handshakes", "emfile", "slowloris", "burst"]


def peers_listening() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, ports in PEERS.items():
        up = {}
        for kind, port in ports.items():
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=2):
                up[kind] = port
        if up:
            found[name] = up
    return found


def big_message() -> bytes:
    line = b"x" * 76 + b"\n"
    body = line * (BIG_MESSAGE // len(line))
    return b"From: a@example.test\nTo: alice@localhost\nSubject: big\n\n" + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=PROBES, help="run these probes only")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--mailtalk-path", type=Path, help="run mailtalk from this source tree")
    parser.add_argument("--no-peers", action="store_true", help="mailtalk only")
    parser.add_argument("--slowloris-seconds", type=float, default=75.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    servers = {} if args.no_peers else peers_listening()
    chosen = args.only or PROBES
    report: dict[str, Any] = {}
    scratch = Path(tempfile.mkdtemp(prefix="mailtalk-hostile-"))
    message = big_message()
    try:
        for probe in chosen:
            log(f"probe {probe} ...")
            if probe.startswith("flood-"):
                report[probe] = probe_flood(probe.removeprefix("flood-"), servers, scratch,
                                            args.mailtalk_path)
            elif probe == "fetch-45mb":
                report[probe] = probe_fetch(scratch, args.mailtalk_path, message)
            elif probe == "top-45mb":
                report[probe] = probe_top(scratch, args.mailtalk_path, message)
            elif probe == "stall":
                report[probe] = probe_stall(scratch, args.mailtalk_path)
            elif probe == "handshakes":
                report[probe] = probe_handshakes(servers, scratch, args.mailtalk_path)
            elif probe == "emfile":
                report[probe] = probe_emfile(scratch, args.mailtalk_path)
            elif probe == "slowloris":
                report[probe] = probe_slowloris(servers, scratch, args.mailtalk_path,
                                                args.slowloris_seconds)
            elif probe == "burst":
                report[probe] = probe_burst(servers, scratch, args.mailtalk_path)
            if not args.json:
                for server, figures in report[probe].items():
                    shown = ", ".join(f"{k}: {v}" for k, v in figures.items())
                    print(f"{probe:<11} {server:<32} {shown}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
