#!/usr/bin/env python3
"""Bounded work per IMAP command: the probes of issue 15 items 5 and 6 on ``mailtalk serve``.

    python bench/imap_work.py [--messages 200] [--only search,nesting,store,names] [--json]

Starts ``mailtalk serve --imap 0`` as a subprocess on a fresh root, APPENDs
``--messages`` small messages to alice's INBOX, then, each on its own connection
while a second logged-in connection sends NOOP every 20 ms (its slowest answer is
reported):

- **search**: one SEARCH with an OR chain of 15 sequence sets of 10,850 five-digit
  numbers each (one set per line, the lines joined by empty ``{0+}`` literals:
  about 977 KB);
- **nesting**: ``SEARCH NOT NOT ... ALL`` with 15,000 NOTs;
- **store**: ``STORE 1:N +FLAGS.SILENT (k0 ... k9999)``, then the index file's size,
  the server's RSS, and how long three later SELECTs take; then the same with 256
  keywords (``store_256``: what a folder may hold);
- **names**: CREATE of names Dovecot refuses (an encoded control character, a
  lone surrogate, bad modified UTF-7, raw 8-bit, too long, too deep), then LIST
  after ``ENABLE UTF8=ACCEPT``.

Figures: the command's time to its tagged answer, that answer, the slowest NOOP
of the other session, the server's RSS (VmRSS) and peak (VmHWM) from /proc.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import log, proc_status

HOST = "127.0.0.1"
SETS = 15
NUMBERS_PER_SET = 10_850
NOTS = 15_000
KEYWORDS = 10_000


class Client:
    """A byte-level IMAP client: send a command, read up to its tagged answer."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")
        self.reader.readline()
        self.tags = 0

    def command(self, text: bytes) -> tuple[list[bytes], bytes, float]:
        """(untagged lines, tagged line, seconds) for one command (``text`` without tag)."""
        self.tags += 1
        tag = b"t%d" % self.tags
        started = time.monotonic()
        self.sock.sendall(tag + b" " + text + b"\r\n")
        return (*self.until(tag), time.monotonic() - started)

    def until(self, tag: bytes) -> tuple[list[bytes], bytes]:
        lines = []
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError(f"closed before {tag!r}; last {lines[-1:]!r}")
            if line.startswith(tag + b" "):
                return lines, line.rstrip(b"\r\n")
            lines.append(line)

    def close(self) -> None:
        self.sock.close()


class NoopProbe:
    """A second session sending NOOP every 20 ms; ``worst`` is its slowest answer."""

    def __init__(self, port: int) -> None:
        self.client = Client(port)
        self.client.command(b"LOGIN alice secret")
        self.worst = 0.0
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            _, _, seconds = self.client.command(b"NOOP")
            self.worst = max(self.worst, seconds)
            self.count += 1
            time.sleep(0.02)

    def __enter__(self) -> NoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        self.client.close()


class Server:
    def __init__(self, root: Path) -> None:
        command = [sys.executable, "-m", "mailtalk", "serve", "--root", str(root),
                   "--imap", "0", "--user", "alice:secret", "--json"]
        self.root = root
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        assert self.process.stdout is not None
        self.port = int(json.loads(self.process.stdout.readline())["listeners"][0]["port"])

    def rss(self) -> int:
        return proc_status(self.process.pid, "VmRSS")

    def hwm(self) -> int:
        return proc_status(self.process.pid, "VmHWM")

    def stop(self) -> str:
        self.process.terminate()
        _, err = self.process.communicate(timeout=20)
        return err.decode("utf-8", "replace")


def mib(n: int) -> float:
    return round(n / 1024 / 1024, 1)


def populate(port: int, count: int) -> None:
    client = Client(port)
    client.command(b"LOGIN alice secret")
    for number in range(count):
        message = (f"From: bob@example.com\r\nTo: alice@localhost\r\nSubject: message "
                   f"{number}\r\n\r\nBody {number}.\r\n").encode()
        client.command(b"APPEND INBOX {%d+}\r\n%s" % (len(message), message))
    client.close()


def search_bomb() -> bytes:
    """The OR chain: 15 sets, one a line, the lines joined by empty non-sync literals."""
    rng = random.Random(15)
    sets = [",".join(map(str, rng.sample(range(10_000, 100_000), NUMBERS_PER_SET)))
            for _ in range(SETS)]
    lines = [f"SEARCH OR ({sets[0]} NOT HEADER X-None {{0+}}"]
    lines += [f") OR ({s} NOT HEADER X-None {{0+}}" for s in sets[1:-1]]
    lines.append(f") {sets[-1]}")
    return "\r\n".join(lines).encode()


def timed(server: Server, port: int, command: bytes, setup: list[bytes]) -> dict[str, Any]:
    client = Client(port)
    for line in setup:
        client.command(line)
    before = server.rss()
    with NoopProbe(port) as probe:
        time.sleep(0.1)
        _, answer, seconds = client.command(command)
        time.sleep(0.1)
    client.close()
    return {
        "seconds": round(seconds, 3),
        "answer": answer[:120].decode("utf-8", "replace"),
        "worst_noop_ms": round(probe.worst * 1000, 1),
        "noops": probe.count,
        "rss_before_mib": mib(before),
        "rss_after_mib": mib(server.rss()),
        "hwm_mib": mib(server.hwm()),
        "command_kb": round(len(command) / 1000),
    }


def probe_search(server: Server, port: int) -> dict[str, Any]:
    return timed(server, port, search_bomb(), [b"LOGIN alice secret", b"SELECT INBOX"])


def probe_nesting(server: Server, port: int) -> dict[str, Any]:
    command = b"SEARCH " + b"NOT " * NOTS + b"ALL"
    return timed(server, port, command, [b"LOGIN alice secret", b"SELECT INBOX"])


def probe_store(server: Server, port: int, count: int, keyword_count: int) -> dict[str, Any]:
    keywords = " ".join(f"k{n}" for n in range(keyword_count))
    command = f"STORE 1:{count} +FLAGS.SILENT ({keywords})".encode()
    result = timed(server, port, command, [b"LOGIN alice secret", b"SELECT INBOX"])
    index = server.root / "mail/alice/Maildir/mailtalk-uidlist"
    result["index_mib"] = round(index.stat().st_size / 1024 / 1024, 2)
    selects = []
    for _ in range(3):
        client = Client(port)
        client.command(b"LOGIN alice secret")
        _, _, seconds = client.command(b"SELECT INBOX")
        selects.append(round(seconds, 3))
        client.close()
    result["later_selects_s"] = selects
    result["rss_after_selects_mib"] = mib(server.rss())
    return result


NAMES: list[tuple[str, bytes]] = [
    ("encoded U+001F", b'"&AB8-x"'),
    ("lone surrogate", b'"&2D3-"'),
    ("encoded ASCII", b'"&AGE-"'),
    ("unterminated &", b'"&Jjo"'),
    ("raw control", b'"a\x01b"'),
    ("raw 8-bit", b'"Entw\xc3\xbcrfe"'),
    ("300 chars", b'"' + b"x" * 300 + b'"'),
    ("25 levels", b'"' + b".".join([b"l"] * 25) + b'"'),
    ("valid mUTF-7", b'"Entw&APw-rfe"'),
]
UTF8_NAMES: list[tuple[str, bytes]] = [
    ("UTF-8 name", b'"Entw\xc3\xbcrfe-u8"'),
    ("invalid UTF-8", b'"bad\xff"'),
    ("UTF-8 control", b'"a\x1fb"'),
]


def probe_names(port: int) -> dict[str, Any]:
    client = Client(port)
    client.command(b"LOGIN alice secret")
    results: dict[str, Any] = {}
    for label, name in NAMES:
        _, answer, _ = client.command(b"CREATE " + name)
        results[label] = answer[:100].decode("utf-8", "replace")
    client.command(b"ENABLE UTF8=ACCEPT")
    for label, name in UTF8_NAMES:
        _, answer, _ = client.command(b"CREATE " + name)
        results["UTF8=ACCEPT " + label] = answer[:100].decode("utf-8", "replace")
    lines, answer, _ = client.command(b'LIST "" "*"')
    results["LIST after UTF8=ACCEPT"] = answer[:100].decode("utf-8", "replace")
    results["LIST lines"] = len(lines)
    client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--only", default="search,nesting,store,names")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mailtalk-imapwork-") as tmp:
        server = Server(Path(tmp) / "root")
        try:
            populate(server.port, args.messages)
            figures["messages"] = args.messages
            figures["rss_start_mib"] = mib(server.rss())
            if "search" in wanted:
                log("search bomb ...")
                figures["search"] = probe_search(server, server.port)
            if "nesting" in wanted:
                log("NOT nesting ...")
                figures["nesting"] = probe_nesting(server, server.port)
            if "store" in wanted:
                log("STORE keyword bomb ...")
                figures["store"] = probe_store(server, server.port, args.messages, KEYWORDS)
                log("STORE of 256 keywords (the cap) ...")
                figures["store_256"] = probe_store(server, server.port, args.messages, 256)
            if "names" in wanted:
                log("mailbox names ...")
                figures["names"] = probe_names(server.port)
        finally:
            errors = server.stop()
        figures["log_tracebacks"] = errors.count("Traceback")
        figures["log_recursion_errors"] = errors.count("RecursionError")
    if args.json:
        print(json.dumps(figures))
    else:
        print(json.dumps(figures, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
