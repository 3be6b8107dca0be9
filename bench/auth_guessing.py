"""Password guessing against ``mailtalk serve`` (issue 15, item 4), beside Postfix and Dovecot.

A guessing client sends wrong ``AUTH PLAIN`` answers on one SMTP connection, one after
the other, until it has sent ``--attempts`` of them, the server hangs up, or
``--seconds`` pass. Meanwhile another client (from 127.0.0.2, another address) logs in
over IMAP with the right password every half second: how long it waits shows whether
the guessing stalls anybody else.
Then ``--parallel`` guessers do the same at once from the same address (what the
per-address failure budget is for).

    python bench/auth_guessing.py                      # mailtalk only
    python bench/auth_guessing.py --real               # and Postfix 587, Dovecot 143

Figures: attempts answered, what the last answers were, wall time, the server's CPU
seconds (from /proc), and the right login's latency (median and worst). Against the real
servers only a handful of attempts are sent: Dovecot's penalty for 127.0.0.1 lasts about
30 s and other tests on this machine log in there too.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import cpu_seconds, free_port, log, wait_for_banner

USER, PASSWORD = "alice", "secret"


class SMTPGuesser:
    """Wrong AUTH PLAIN answers on one connection until told to stop or hung up on."""

    def __init__(self, host: str, port: int, attempts: int, seconds: float, user: str) -> None:
        self.host, self.port, self.attempts, self.seconds, self.user = (
            host, port, attempts, seconds, user)  # fmt: skip
        self.answered = 0
        self.codes: dict[str, int] = {}
        self.last = b""
        self.elapsed = 0.0
        self.hung_up = False

    def run(self) -> None:
        started = time.monotonic()
        with socket.create_connection((self.host, self.port), timeout=60) as sock:
            reader = sock.makefile("rb")

            def reply() -> bytes:
                lines = []
                while True:
                    line = reader.readline()
                    if not line:
                        return b"".join(lines)
                    lines.append(line)
                    if len(line) < 4 or line[3:4] != b"-":
                        return b"".join(lines)

            reply()
            sock.sendall(b"EHLO guesser.test\r\n")
            reply()
            for number in range(self.attempts):
                if time.monotonic() - started > self.seconds:
                    break
                answer = base64.b64encode(f"\0{self.user}\0guess{number}".encode()).decode()
                try:
                    sock.sendall(f"AUTH PLAIN {answer}\r\n".encode())
                    text = reply()
                except OSError:
                    text = b""
                if not text:
                    self.hung_up = True
                    break
                self.answered += 1
                self.last = text.strip()
                code = text[:3].decode("ascii", "replace")
                self.codes[code] = self.codes.get(code, 0) + 1
                if code == "421":
                    self.hung_up = True
                    break
        self.elapsed = time.monotonic() - started


def imap_login_latency(port: int, stop: threading.Event, out: list[float]) -> None:
    """Log in over IMAP with the right password every 0.5 s, from 127.0.0.2 (Linux routes
    all of 127/8 to loopback); each login's seconds."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            with socket.socket() as sock:
                sock.settimeout(60)
                sock.bind(("127.0.0.2", 0))
                sock.connect(("127.0.0.1", port))
                reader = sock.makefile("rb")
                reader.readline()
                sock.sendall(f"a LOGIN {USER} {PASSWORD}\r\n".encode())
                while not (line := reader.readline()).startswith(b"a "):
                    if not line:
                        break
                sock.sendall(b"b LOGOUT\r\n")
            out.append(time.monotonic() - started)
        except OSError:
            out.append(float("inf"))
        stop.wait(0.5)


def guess_mailtalk(attempts: int, seconds: float, parallel: int) -> None:
    ports = {name: free_port() for name in ("smtp", "imap")}
    with tempfile.TemporaryDirectory() as root:
        command = [
            sys.executable, "-m", "mailtalk", "serve", "--root", root,
            "--smtp", str(ports["smtp"]), "--imap", str(ports["imap"]),
        ]  # fmt: skip
        environment = dict(os.environ, MAILTALK_SERVE_PASSWORD=PASSWORD)
        users_file = Path(root) / "users.txt"
        users_file.write_text(f"{USER}:{PASSWORD}\n")
        help_text = subprocess.run(
            [sys.executable, "-m", "mailtalk", "serve", "--help"], capture_output=True, text=True
        ).stdout
        if "--users-file" in help_text:
            command += ["--users-file", str(users_file)]
        else:
            command += ["--user", f"{USER}:{PASSWORD}"]  # before issue 15
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env=environment)
        try:
            wait_for_banner(ports["smtp"], time.monotonic() + 60, server)
            for count in (1, parallel):
                _round(server.pid, ports, attempts, seconds, count)
        finally:
            server.terminate()
            server.wait(10)


def _round(pid: int, ports: dict[str, int], attempts: int, seconds: float, count: int) -> None:
    latencies: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(target=imap_login_latency, args=(ports["imap"], stop, latencies))
    cpu_before = cpu_seconds(pid)
    guessers = [SMTPGuesser("127.0.0.1", ports["smtp"], attempts, seconds, USER)
                for _ in range(count)]
    threads = [threading.Thread(target=g.run) for g in guessers]
    started = time.monotonic()
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    stop.set()
    watcher.join()
    cpu = cpu_seconds(pid) - cpu_before
    answered = sum(g.answered for g in guessers)
    codes: dict[str, int] = {}
    for guesser in guessers:
        for code, n in guesser.codes.items():
            codes[code] = codes.get(code, 0) + n
    hung_up = sum(g.hung_up for g in guessers)
    finite = [x for x in latencies if x != float("inf")]
    print(f"mailtalk, {count} guesser(s) x up to {attempts} wrong AUTH: {answered} answered "
          f"in {wall:.1f} s ({answered / wall:.1f}/s), replies {codes}, "
          f"{hung_up} hung up on, server CPU {cpu:.1f} s")
    print(f"  last reply: {guessers[0].last.decode(errors='replace')[:100]!r}")
    if finite:
        print(f"  right IMAP login meanwhile: {len(latencies)} logins, median "
              f"{statistics.median(finite) * 1000:.0f} ms, worst {max(latencies) * 1000:.0f} ms")


def guess_postfix(host: str, attempts: int) -> None:
    guesser = SMTPGuesser(host, 587, attempts, 120, os.environ.get("MAILTALK_REAL_USER", USER))
    guesser.run()
    print(f"Postfix 587, {attempts} wrong AUTH on one connection: {guesser.answered} answered "
          f"in {guesser.elapsed:.1f} s, replies {guesser.codes}, hung up: {guesser.hung_up}")
    print(f"  last reply: {guesser.last.decode(errors='replace')[:100]!r}")


def guess_dovecot(host: str, attempts: int) -> None:
    started = time.monotonic()
    answered, last, hung_up = 0, b"", False
    user = os.environ.get("MAILTALK_REAL_USER", USER)
    with socket.create_connection((host, 143), timeout=60) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        for number in range(attempts):
            sock.sendall(f"a{number} LOGIN {user} guess{number}\r\n".encode())
            while True:
                line = reader.readline()
                if not line or line.startswith(f"a{number} ".encode()) or line.startswith(b"* BYE"):
                    break
            if not line or line.startswith(b"* BYE"):
                hung_up, last = True, line
                break
            answered += 1
            last = line
    print(f"Dovecot 143, {attempts} wrong LOGIN on one connection: {answered} answered in "
          f"{time.monotonic() - started:.1f} s, hung up: {hung_up}, last: {last.strip()[:80]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--real", action="store_true", help="also Postfix 587 and Dovecot 143")
    args = parser.parse_args()
    log("guessing against mailtalk serve...")
    guess_mailtalk(args.attempts, args.seconds, args.parallel)
    if args.real:
        host = os.environ.get("MAILTALK_REAL_HOST", "127.0.0.1")
        guess_postfix(host, 25)
        guess_dovecot(host, 5)


if __name__ == "__main__":
    main()
