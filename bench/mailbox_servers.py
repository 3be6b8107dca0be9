#!/usr/bin/env python3
"""IMAP and POP3 on a 10,000-message Maildir: ``mailtalk serve`` next to Dovecot.

    python bench/mailbox_servers.py [--messages N] [--runs N] [--quick] [--json] [--skip-imap]

Needs root (it creates the system user ``mtbench`` for Dovecot) and Dovecot on
127.0.0.1 ports 110 and 143 (``scripts/real-servers start``). See bench/README.md.

One Maildir is generated from a seed (small realistic messages, 2-4 KB, LF line
endings, 99 % in cur/ with flags, 1 % in new/), then each server gets a fresh
COPY of it before every cold measurement:

- mailtalk: ``mailtalk serve --root TMP --pop3 0 --imap 0 --smtp 0 --user
  mtbench:PASSWORD --json``, the copy in ``TMP/mail/mtbench/Maildir``, a new
  server process each time (so neither its index nor its memory is warm);
- Dovecot: the copy in ``~mtbench/Maildir`` (no ``dovecot*`` index files).

Per run and server: POP3 twice (cold, then warm): login, LIST, RETR of every
message one by one, RETR of every message pipelined; then IMAP twice on a fresh
copy (cold, then warm): login, ``SELECT INBOX``, ``UID FETCH 1:* (FLAGS
RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])``. The same client code
talks to both. The figures are medians over the runs; the counts, byte totals and
digests of what came back are checked against the generated Maildir. Then the peak
RSS of the mailtalk server (VmHWM) while serving, and while receiving one 200 MB
IMAP APPEND literal.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from benchlib import cpu_seconds, finish, log, proc_status, run_in_scratch

GOAL = 3.0  # IMAP: mailtalk seconds / Dovecot seconds, at most
HOST = "127.0.0.1"
DOVECOT_IMAP_PORT = 143
DOVECOT_POP3_PORT = 110
BENCH_USER = "mtbench"
START_TIMEOUT = 60.0  # seconds for mailtalk serve to print its JSON line
IO_TIMEOUT = 300.0  # seconds any one socket read or write may take
PIPELINE_WINDOW = 50  # RETR commands in flight in the pipelined POP3 run
FETCH_ITEMS = b"(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"
HEADER_FIELDS = ("from", "subject", "date")
BIG_LITERAL = 200 * 1024 * 1024  # the APPEND memory test: {209715200}


def reset_hwm(pid: int) -> bool:
    """Set VmHWM back to the current RSS (``clear_refs`` 5), so the next peak is new."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mib(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


# -- the Maildir ------------------------------------------------------------------------

_NAMES = """
Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy
Smith Jones Brown Garcia Miller Davis Martin Clark Lewis Walker Young King Wright
example.com example.org example.net mail.test lists.example.org corp.test
the of and to in is for that on with as it be this are from at by an was have not or
we can all will your more one about which their has our there been if would new some
report meeting budget release server mailbox folder schedule review draft update
invoice project deadline customer quarter ticket patch build deploy latency index
storage backup network migration contract agenda notes minutes proposal summary
question answer issue feature request support team office travel lunch friday monday
"""
_LINES = [line.split() for line in _NAMES.strip().splitlines()]
FIRST, LAST, DOMAINS = _LINES[0], _LINES[1], _LINES[2]
WORDS = [word for line in _LINES[3:] for word in line]


@dataclass
class Corpus:
    """What the generated Maildir holds, to check the servers' answers against."""

    count: int = 0
    stored_bytes: int = 0  # as on disk (LF)
    rfc822_bytes: int = 0  # with CRLF: what RFC822.SIZE, LIST and RETR count
    message_digest: str = ""  # of the sorted SHA-256s of each message with CRLF
    header_digest: str = ""  # of the sorted SHA-256s of each HEADER.FIELDS answer
    flags: dict[str, int] = field(default_factory=dict)  # flag -> messages with it
    in_new: int = 0


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _wrap(text: str, width: int = 72) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines


def _person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}@{rng.choice(DOMAINS)}"


def make_message(rng: random.Random, number: int, when: datetime) -> tuple[bytes, bytes]:
    """One message (LF line endings) and the HEADER.FIELDS (FROM SUBJECT DATE) answer."""
    sender_name, sender = _person(rng)
    _, recipient = _person(rng)
    subject = _sentence(rng, rng.randint(3, 9))[:-1]
    if rng.random() < 0.3:
        subject = "Re: " + subject
    date = format_datetime(when)
    message_id = f"<{number}.{rng.getrandbits(48):012x}@{sender.split('@')[1]}>"
    relay = f"mx{rng.randint(1, 9)}.{rng.choice(DOMAINS)}"
    headers = [
        f"Return-Path: <{sender}>",
        f"Received: from {relay} ({relay} [192.0.2.{rng.randint(1, 254)}])",
        f"\tby mail.mtbench.test with ESMTPS id {rng.getrandbits(40):010X}",
        f"\tfor <{recipient}>; {date}",
        f"From: {sender_name} <{sender}>",
        f"To: <{recipient}>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
    ]
    target = rng.randint(2048, 4096)
    body: list[str] = [f"Hi {recipient.split('.')[0].title()},", ""]
    size = sum(len(h) + 1 for h in headers) + 1 + sum(len(b) + 1 for b in body)
    while size < target - 120:
        if rng.random() < 0.15:
            paragraph = ["> " + line for line in _wrap(_sentence(rng, rng.randint(8, 25)), 70)]
        else:
            sentences = " ".join(_sentence(rng, rng.randint(5, 16)) for _ in range(3))
            paragraph = _wrap(sentences)
        if rng.random() < 0.05:
            paragraph.append(".. and a line that starts with a dot (POP3 dot-stuffing).")
        paragraph.append("")
        body += paragraph
        size += sum(len(line) + 1 for line in paragraph)
    body += ["Regards,", sender_name.split()[0], "-- ", f"{sender_name}, {sender}"]
    data = ("\n".join(headers) + "\n\n" + "\n".join(body) + "\n").encode()
    fields = "".join(f"{h}\r\n" for h in headers if h.split(":", 1)[0].lower() in HEADER_FIELDS)
    return data, (fields + "\r\n").encode()


def _digest(hashes: list[bytes]) -> str:
    return hashlib.sha256(b"".join(sorted(hashes))).hexdigest()


def generate_maildir(path: Path, count: int, seed: int, size_names: bool = False) -> Corpus:
    """A Maildir of COUNT messages, the same for the same seed; with SIZE_NAMES, Dovecot's
    ``,S=<size>,W=<rfc822 size>`` in the names (as Dovecot and mailtalk deliver them)."""
    rng = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    corpus = Corpus(count=count)
    message_hashes: list[bytes] = []
    header_hashes: list[bytes] = []
    newest = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
    when = newest - timedelta(minutes=97 * count)
    in_new_from = count - max(1, count // 100)
    for number in range(count):
        when += timedelta(minutes=rng.randint(1, 193))
        data, fields = make_message(rng, number, when)
        stamp = int(when.timestamp())
        base = f"{stamp}.M{rng.randint(0, 999999)}P{1000 + number % 30000}Q{number}.mtbench"
        if size_names:
            rfc822_size = len(data) + data.count(b"\n")
            base += f",S={len(data)},W={rfc822_size}"
        if number >= in_new_from:
            target = path / "new" / base  # the latest: not yet seen by any reader
            corpus.in_new += 1
            flags = ""
        else:
            roll = rng.random()
            flags = "S" if roll < 0.75 else "RS" if roll < 0.85 else "FS" if roll < 0.88 else ""
            target = path / "cur" / f"{base}:2,{flags}"
        for letter, name in (("F", "\\Flagged"), ("R", "\\Answered"), ("S", "\\Seen")):
            if letter in flags:
                corpus.flags[name] = corpus.flags.get(name, 0) + 1
        target.write_bytes(data)
        os.utime(target, (stamp, stamp))
        corpus.stored_bytes += len(data)
        corpus.rfc822_bytes += len(data) + data.count(b"\n")
        message_hashes.append(hashlib.sha256(data.replace(b"\n", b"\r\n")).digest())
        header_hashes.append(hashlib.sha256(fields).digest())
    corpus.message_digest = _digest(message_hashes)
    corpus.header_digest = _digest(header_hashes)
    return corpus


def copy_maildir(source: Path, target: Path, owner: str | None = None) -> None:
    """Replace TARGET with a copy of SOURCE (mtimes kept), flushed to disk."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(source), str(target)], check=True, timeout=IO_TIMEOUT)
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner}:", str(target)], check=True, timeout=IO_TIMEOUT)
        target.chmod(0o700)
    os.sync()  # no writeback of the copy while a server is being timed


# -- the servers ---------------------------------------------------------------------------


class Server:
    name = ""
    imap_port = 0
    pop3_port = 0

    def reset(self) -> None:
        """A fresh copy of the Maildir, no index, nothing cached."""
        raise NotImplementedError

    def session_process(self, kind: str) -> int | None:
        """The PID doing the work of the current session (to read its CPU and RSS)."""
        raise NotImplementedError

    def stop(self) -> None:
        pass


class MailtalkServer(Server):
    name = "mailtalk"

    def __init__(
        self,
        scratch: Path,
        source: Path,
        password: str,
        imap: bool,
        extra: list[str],
        source_path: Path | None,
    ) -> None:
        self.root = scratch / "mailtalk-root"
        self.maildir = self.root / "mail" / BENCH_USER / "Maildir"
        self.source = source
        self.password = password
        self.imap = imap
        self.extra = extra
        self.source_path = source_path
        self.env = mailtalk_command(source_path)[1]
        self.stderr_path = scratch / "mailtalk-serve.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self.baseline_rss = 0

    def argv(self) -> list[str]:
        command, _ = mailtalk_command(self.source_path)
        ports = ["--pop3", "0", "--smtp", "0"] + (["--imap", "0"] if self.imap else [])
        return [
            *command, "serve", "--root", str(self.root), *ports,
            "--user", f"{BENCH_USER}:{self.password}", "--json", *self.extra,
        ]  # fmt: skip

    def reset(self) -> None:
        self.stop()
        copy_maildir(self.source, self.maildir)
        self.start()

    def prepare(self) -> None:
        """Make the root (certificates, users, control files) once, untimed: every
        measured process then starts on an existing root, as a server usually does (a
        first start also imports what makes certificates, some 11 MiB of RSS)."""
        self.start()
        self.stop()

    def start(self) -> None:
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self.env,
                cwd=self.root.parent,  # not the checkout
                start_new_session=True,  # Ctrl-C reaches us; we stop the server
            )
        import selectors

        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT):
                raise RuntimeError(f"mailtalk serve: no JSON line within {START_TIMEOUT:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"mailtalk serve exited: {self.stderr_tail()}")
        ports = {item["protocol"]: int(item["port"]) for item in json.loads(line)["listeners"]}
        self.pop3_port = ports["pop3"]
        self.imap_port = ports.get("imap", 0)
        if self.imap and not self.imap_port:
            raise RuntimeError("mailtalk serve did not open an IMAP listener")
        self.baseline_rss = proc_status(self.process.pid, "VmRSS")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def session_process(self, kind: str) -> int | None:
        return self.pid

    def stderr_tail(self) -> str:
        if not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace").strip()[-800:]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


class DovecotServer(Server):
    name = "Dovecot"
    imap_port = DOVECOT_IMAP_PORT
    pop3_port = DOVECOT_POP3_PORT

    def __init__(self, source: Path, password: str) -> None:
        self.source = source
        self.password = password
        ensure_user(password)
        entry = pwd.getpwnam(BENCH_USER)
        self.uid = entry.pw_uid
        self.maildir = Path(entry.pw_dir) / "Maildir"

    def reset(self) -> None:
        copy_maildir(self.source, self.maildir, owner=BENCH_USER)
        left = sorted(p.name for p in self.maildir.glob("dovecot*"))
        if left:
            raise RuntimeError(f"Dovecot index files in a fresh copy: {left}")

    def session_process(self, kind: str) -> int | None:
        """The ``imap`` or ``pop3`` process running as mtbench (Dovecot forks one per login)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if values.get("Name", "").strip() == kind and int(values["Uid"].split()[0]) == self.uid:
                found.append(int(entry.name))
        return max(found) if found else None

    def stop(self) -> None:
        shutil.rmtree(self.maildir, ignore_errors=True)


def ensure_user(password: str) -> None:
    """The system user mtbench (made once), with this run's password."""
    try:
        pwd.getpwnam(BENCH_USER)
    except KeyError:
        log(f"creating system user {BENCH_USER} (for Dovecot)")
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/usr/sbin/nologin", BENCH_USER],
            check=True, timeout=60,
        )  # fmt: skip
    subprocess.run(
        ["chpasswd"], input=f"{BENCH_USER}:{password}\n".encode(), check=True, timeout=60
    )


def lock_user() -> None:
    """After the run nobody knows the password anyway; lock it too."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["usermod", "--lock", BENCH_USER], capture_output=True, timeout=60)


# -- the clients ---------------------------------------------------------------------------


class Connection:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self.fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class IMAPClient(Connection):
    """Just enough IMAP: tagged commands, untagged responses with their literals."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.counter = 0
        greeting = self.line()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"IMAP greeting: {greeting[:200]!r}")

    def next_tag(self) -> bytes:
        self.counter += 1
        return b"b%d" % self.counter

    def command(self, text: bytes) -> tuple[list[bytes], bytes]:
        tag = self.next_tag()
        self.sock.sendall(tag + b" " + text + b"\r\n")
        return self.responses(tag)

    def responses(self, tag: bytes) -> tuple[list[bytes], bytes]:
        """Untagged responses (literals inline) up to the tagged one, and that one."""
        buf = self.buf
        prefix = tag + b" "
        found: list[bytes] = []
        start = scan = 0
        while True:
            end = buf.find(b"\r\n", scan)
            if end < 0:
                self.fill()
                continue
            if end > start and buf[end - 1] == 0x7D:  # "}": a literal follows
                opening = buf.rfind(b"{", start, end)
                size = buf[opening + 1 : end - 1].rstrip(b"+")
                if opening >= 0 and size.isdigit():
                    scan = end + 2 + int(size)
                    while len(buf) < scan:
                        self.fill()
                    continue
            response = bytes(buf[start:end])
            start = scan = end + 2
            if response.startswith(prefix):
                del buf[:start]
                return found, response
            found.append(response)

    def expect_ok(self, text: bytes) -> list[bytes]:
        found, status = self.command(text)
        if status.split(b" ", 2)[1:2] != [b"OK"]:
            raise RuntimeError(f"{text.split()[0].decode()}: {status[:300]!r}")
        return found

    def login(self, user: str, password: str) -> None:
        self.expect_ok(b'LOGIN %s "%s"' % (user.encode(), password.encode()))

    def logout(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.command(b"LOGOUT")
        self.close()


_LITERAL = re.compile(rb"\{(\d+)\}\r\n")
_FETCH = re.compile(rb"\* \d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")


def parse_fetch(responses: list[bytes]) -> dict[str, Any]:
    """Count the FETCH responses; sum their sizes; digest their header fields."""
    count = 0
    total = 0
    uids = set()
    flags: dict[str, int] = {}
    header_hashes = []
    problems = []
    for response in responses:
        if not _FETCH.match(response):
            continue
        count += 1
        literal = _LITERAL.search(response)
        if literal is None:
            outside, header = response, b""
            problems.append(f"no literal: {response[:120]!r}")
        else:
            begin = literal.end()
            finish = begin + int(literal.group(1))
            outside, header = (
                response[: literal.start()] + response[finish:],
                response[begin:finish],
            )
        uid, size, flag_list = _UID.search(outside), _SIZE.search(outside), _FLAGS.search(outside)
        if uid is None or size is None or flag_list is None:
            problems.append(f"missing UID/RFC822.SIZE/FLAGS: {outside[:160]!r}")
            continue
        uids.add(int(uid.group(1)))
        total += int(size.group(1))
        for flag in flag_list.group(1).decode().split():
            if flag != "\\Recent":
                flags[flag] = flags.get(flag, 0) + 1
        header_hashes.append(hashlib.sha256(header).digest())
    return {
        "fetch_responses": count,
        "distinct_uids": len(uids),
        "rfc822_size_total": total,
        "flags": dict(sorted(flags.items())),
        "header_digest": _digest(header_hashes),
        "problems": problems[:5],
    }


class POP3Client(Connection):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        greeting = self.line()
        if not greeting.startswith(b"+OK"):
            raise RuntimeError(f"POP3 greeting: {greeting[:200]!r}")

    def simple(self, text: bytes) -> bytes:
        self.sock.sendall(text + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text.split()[0].decode()}: {reply[:300]!r}")
        return reply

    def multiline(self) -> bytes:
        """The rest of a multi-line answer after its +OK line, dot-stuffed, without the '.'."""
        buf = self.buf
        scan = 0
        while True:
            # The terminator is CRLF . CRLF; the first line's CRLF counts when the body is empty.
            if buf.startswith(b".\r\n"):
                del buf[:3]
                return b""
            end = buf.find(b"\r\n.\r\n", scan)
            if end >= 0:
                data = bytes(buf[: end + 2])
                del buf[: end + 5]
                return data
            scan = max(0, len(buf) - 4)
            self.fill()

    def retr_each(self, count: int, window: int) -> Iterator[bytes]:
        """RETR 1..COUNT, WINDOW commands at a time (1: one by one); each raw answer."""
        for first in range(1, count + 1, window):
            numbers = range(first, min(count, first + window - 1) + 1)
            self.sock.sendall(b"".join(b"RETR %d\r\n" % n for n in numbers))
            for n in numbers:
                reply = self.line()
                if not reply.startswith(b"+OK"):
                    raise RuntimeError(f"RETR {n}: {reply[:300]!r}")
                yield self.multiline()

    def retr_all(self, count: int, window: int) -> list[bytes]:
        """:meth:`retr_each`, all the answers kept."""
        return list(self.retr_each(count, window))


def unstuff(data: bytes) -> bytes:
    data = data.replace(b"\r\n..", b"\r\n.")
    return data[1:] if data.startswith(b"..") else data


def retr_check(messages: list[bytes]) -> dict[str, Any]:
    plain = [unstuff(m) for m in messages]
    return {
        "messages": len(plain),
        "bytes": sum(len(m) for m in plain),
        "message_digest": _digest([hashlib.sha256(m).digest() for m in plain]),
    }


# -- the sessions ----------------------------------------------------------------------------


class Probe:
    """Server CPU seconds of the process serving a session, and its peak RSS."""

    def __init__(self, server: Server, kind: str) -> None:
        self.server = server
        self.kind = kind
        self.pid: int | None = None

    def find(self) -> None:
        self.pid = self.server.session_process(self.kind)

    def cpu(self) -> float | None:
        if self.pid is None:
            return None
        try:
            return cpu_seconds(self.pid)
        except OSError:
            return None

    def hwm(self) -> int | None:
        if self.pid is None:
            return None
        try:
            return proc_status(self.pid, "VmHWM")
        except (OSError, KeyError):
            return None


def timed(results: dict[str, Any], name: str, probe: Probe, work: Any) -> Any:
    before = probe.cpu()
    start = time.perf_counter()
    value = work()
    results[name] = time.perf_counter() - start
    after = probe.cpu()
    if before is not None and after is not None:
        results[name + " [cpu]"] = after - before
    return value


def imap_session(server: Server, password: str, temperature: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    probe = Probe(server, "imap")
    start = time.perf_counter()
    client = IMAPClient(server.imap_port)
    try:
        client.login(BENCH_USER, password)
        results[f"IMAP login ({temperature})"] = time.perf_counter() - start
        probe.find()
        found = timed(
            results, f"IMAP SELECT INBOX ({temperature})", probe,
            lambda: client.expect_ok(b"SELECT INBOX"),
        )  # fmt: skip
        exists = [int(r.split()[1]) for r in found if r.endswith(b" EXISTS")]
        results["exists"] = exists[-1] if exists else None
        fetched = timed(
            results, f"IMAP UID FETCH 1:* ({temperature})", probe,
            lambda: client.expect_ok(b"UID FETCH 1:* " + FETCH_ITEMS),
        )  # fmt: skip
        results["fetch"] = parse_fetch(fetched)
        # The servers split the work of opening differently (mailtalk indexes at SELECT,
        # Dovecot partly at FETCH): the sums compare like with like.
        results[f"IMAP login + SELECT ({temperature})"] = (
            results[f"IMAP login ({temperature})"] + results[f"IMAP SELECT INBOX ({temperature})"]
        )
        results[f"IMAP login + SELECT + FETCH ({temperature})"] = (
            results[f"IMAP login + SELECT ({temperature})"]
            + results[f"IMAP UID FETCH 1:* ({temperature})"]
        )
        results["session_hwm"] = probe.hwm()
    finally:
        client.logout()
    return results


def pop3_session(server: Server, password: str, temperature: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    probe = Probe(server, "pop3")
    start = time.perf_counter()
    client = POP3Client(server.pop3_port)
    try:
        client.simple(b"USER " + BENCH_USER.encode())
        client.simple(b"PASS " + password.encode())
        results[f"POP3 login ({temperature})"] = time.perf_counter() - start
        probe.find()

        def listing() -> list[int]:
            client.simple(b"LIST")
            return [int(line.split()[1]) for line in client.multiline().splitlines()]

        sizes = timed(results, f"POP3 LIST ({temperature})", probe, listing)
        results["list"] = {"messages": len(sizes), "bytes": sum(sizes)}
        # mailtalk reads the maildrop at PASS, Dovecot partly at LIST: the sum is comparable.
        results[f"POP3 login + LIST ({temperature})"] = (
            results[f"POP3 login ({temperature})"] + results[f"POP3 LIST ({temperature})"]
        )
        label = f"POP3 RETR x{len(sizes)} one by one ({temperature})"
        one = timed(results, label, probe, lambda: client.retr_all(len(sizes), 1))
        results["retr"] = retr_check(one)
        del one
        label = f"POP3 RETR x{len(sizes)} pipelined ({temperature})"
        piped = timed(results, label, probe, lambda: client.retr_all(len(sizes), PIPELINE_WINDOW))
        results["retr_pipelined"] = retr_check(piped)
        del piped
        results["session_hwm"] = probe.hwm()
        client.simple(b"QUIT")  # no DELE: nothing is removed
    finally:
        client.close()
    return results


def big_append(server: Server, password: str, size: int) -> dict[str, Any]:
    """APPEND one SIZE-octet message as a synchronizing literal; time it and the peak RSS."""
    line = b"x" * 98 + b"\r\n"
    chunk = line * 655  # about 64 KB
    head = b"From: a@b.test\r\nTo: mtbench@localhost\r\nSubject: big\r\n\r\n"
    whole, tail = divmod(size - len(head), len(chunk))
    lines, last = divmod(tail, len(line))
    tail_bytes = line * lines + (b"y" * (last - 2) + b"\r\n" if last >= 2 else b"y" * last)
    result: dict[str, Any] = {"server": server.name, "literal_octets": size}
    probe = Probe(server, "imap")
    client = IMAPClient(server.imap_port)
    try:
        client.login(BENCH_USER, password)
        probe.find()
        if isinstance(server, MailtalkServer):
            result["rss_before"] = proc_status(server.pid, "VmRSS")
            result["hwm_reset"] = reset_hwm(server.pid)
        tag = client.next_tag()
        start = time.perf_counter()
        client.sock.sendall(tag + b" APPEND INBOX {%d}\r\n" % size)
        first = client.line()
        if not first.startswith(b"+"):
            result["refused"] = first.decode(errors="replace")
            result["peak_rss"] = probe.hwm()
            return result
        client.sock.sendall(head)
        for _ in range(whole):
            client.sock.sendall(chunk)
        client.sock.sendall(tail_bytes + b"\r\n")  # the literal, then the end of the command
        _, status = client.responses(tag)
        result["seconds"] = time.perf_counter() - start
        result["status"] = status.decode(errors="replace")[:200]
        result["peak_rss"] = probe.hwm()
        result["mb_per_s"] = size / result["seconds"] / 1e6
    finally:
        client.logout()
    return result


# -- the benchmark ----------------------------------------------------------------------------


def mailtalk_command(source: Path | None) -> tuple[list[str], dict[str, str]]:
    """How to run mailtalk: the installed one, or the package in SOURCE (--mailtalk-path)."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)  # ahead of the editable install's .pth entry
        return [sys.executable, "-m", "mailtalk"], env
    script = Path(sys.executable).with_name("mailtalk")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mailtalk"]
    return command, env


def serve_options(source: Path | None) -> tuple[str, bool]:
    command, env = mailtalk_command(source)
    result = subprocess.run(
        [*command, "serve", "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    return result.stdout, "--imap" in result.stdout


def mailtalk_origin(source: Path | None) -> dict[str, Any]:
    """Where the mailtalk under test comes from, and which commit (if a git checkout)."""
    _, env = mailtalk_command(source)
    probe = subprocess.run(
        [sys.executable, "-c", "import mailtalk; print(mailtalk.__file__)"],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )  # fmt: skip
    package = Path(probe.stdout.strip()).parent if probe.returncode == 0 else None
    origin: dict[str, Any] = {"package": str(package) if package else None}
    if package is not None:
        top = package.parent
        head = subprocess.run(
            ["git", "-C", str(top), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if head.returncode == 0 and (top / ".git").exists():
            dirty = subprocess.run(
                ["git", "-C", str(top), "status", "--porcelain", "--untracked-files=no",
                 "--", "mailtalk"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            origin["commit"] = head.stdout.strip()
            origin["uncommitted_changes"] = bool(dirty.stdout.strip())
        servers = package / "servers"
        origin["imap_module"] = (servers / "imap.py").exists() or (
            servers / "imap" / "server.py"
        ).exists()
    return origin


def check(checks: list[dict[str, Any]], what: str, got: Any, expected: Any, server: str) -> None:
    checks.append(
        {"server": server, "check": what, "got": got, "expected": expected, "ok": got == expected}
    )


def benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    count = args.messages or (1000 if args.quick else 10000)
    help_text, has_imap = serve_options(args.mailtalk_path)
    origin = mailtalk_origin(args.mailtalk_path)
    do_imap = not args.skip_imap
    notes: list[str] = []
    if origin.get("uncommitted_changes"):
        notes.append(f"mailtalk in {origin['package']} has uncommitted changes")
    if do_imap and not (has_imap and origin.get("imap_module")):
        raise RuntimeError(
            "mailtalk serve has no IMAP server (no --imap in `mailtalk serve --help` or no "
            "mailtalk/servers/imap/server.py); run with --skip-imap"
        )
    extra = ["--max-size", str(BIG_LITERAL + 10_000_000)]
    if "--max-literal" in help_text:
        extra += ["--max-literal", str(BIG_LITERAL + 10_000_000)]
    else:
        notes.append(
            "`mailtalk serve --help` has no --max-literal option: the IMAP literal limit is "
            "the server's default"
        )
    source = scratch / "Maildir"
    log(f"generating {count} messages (seed {args.seed}) in {source}")
    started = time.perf_counter()
    corpus = generate_maildir(source, count, args.seed, args.size_names)
    log(
        f"  {corpus.stored_bytes / 1e6:.1f} MB, {corpus.in_new} in new/, "
        f"{time.perf_counter() - started:.1f} s"
    )
    password = secrets.token_hex(12)
    servers: list[Server] = []
    samples: dict[str, dict[str, list[float]]] = {}
    checks: list[dict[str, Any]] = []
    memory: dict[str, Any] = {"mailtalk": {}, "Dovecot": {}}
    appends: list[dict[str, Any]] = []
    try:
        mailtalk = MailtalkServer(scratch, source, password, do_imap, extra, args.mailtalk_path)
        dovecot = DovecotServer(source, password)
        servers = [mailtalk, dovecot]
        mailtalk.prepare()

        def record(server: Server, results: dict[str, Any]) -> None:
            for key, value in results.items():
                if isinstance(value, float):
                    samples.setdefault(key, {}).setdefault(server.name, []).append(value)

        def peak(server: Server, what: str, value: int | None) -> None:
            if value is not None:
                slot = memory[server.name]
                slot[what] = max(slot.get(what, 0), value)

        for run in range(args.runs):
            order = servers if run % 2 == 0 else servers[::-1]
            for server in order:
                log(f"run {run + 1}/{args.runs}: {server.name} POP3")
                server.reset()
                if isinstance(server, MailtalkServer):
                    peak(server, "rss after start", server.baseline_rss)
                for temperature in ("cold", "warm"):
                    results = pop3_session(server, password, temperature)
                    record(server, results)
                    peak(server, "peak, POP3 sessions", results.get("session_hwm"))
                    if run == 0:
                        name = f"{server.name} POP3 {temperature}"
                        check(checks, "LIST messages", results["list"]["messages"], count, name)
                        check(checks, "LIST bytes", results["list"]["bytes"],
                              corpus.rfc822_bytes, name)  # fmt: skip
                        for key in ("retr", "retr_pipelined"):
                            got = results[key]
                            check(checks, f"{key} messages", got["messages"], count, name)
                            check(checks, f"{key} bytes", got["bytes"], corpus.rfc822_bytes, name)
                            check(checks, f"{key} content digest", got["message_digest"],
                                  corpus.message_digest, name)  # fmt: skip
                if not do_imap:
                    continue
                log(f"run {run + 1}/{args.runs}: {server.name} IMAP")
                server.reset()
                for temperature in ("cold", "warm"):
                    results = imap_session(server, password, temperature)
                    record(server, results)
                    peak(server, "peak, IMAP sessions", results.get("session_hwm"))
                    if run == 0:
                        name = f"{server.name} IMAP {temperature}"
                        fetched = results["fetch"]
                        check(checks, "SELECT EXISTS", results["exists"], count, name)
                        check(checks, "FETCH responses", fetched["fetch_responses"], count, name)
                        check(checks, "distinct UIDs", fetched["distinct_uids"], count, name)
                        check(checks, "RFC822.SIZE total", fetched["rfc822_size_total"],
                              corpus.rfc822_bytes, name)  # fmt: skip
                        check(checks, "HEADER.FIELDS digest", fetched["header_digest"],
                              corpus.header_digest, name)  # fmt: skip
                        check(checks, "FLAGS", fetched["flags"],
                              dict(sorted(corpus.flags.items())), name)  # fmt: skip
                        for problem in fetched["problems"]:
                            notes.append(f"{name}: {problem}")
        if do_imap and not args.no_append:
            for server in servers:
                log(f"{server.name}: APPEND of a {BIG_LITERAL} octet literal")
                server.reset()
                result = big_append(server, password, BIG_LITERAL)
                appends.append(result)
                limit = re.search(r"limit (\d+) octets", result.get("refused", ""))
                if limit and 0 < int(limit.group(1)) < BIG_LITERAL:
                    # Refused: the largest literal it takes shows how memory grows instead.
                    log(f"{server.name}: refused; APPEND of its limit, {limit.group(1)} octets")
                    server.reset()
                    appends.append(big_append(server, password, int(limit.group(1))))
    finally:
        for server in servers:
            server.stop()
        if servers:
            lock_user()
    rows = []
    for operation, by_server in samples.items():
        if operation.endswith("[cpu]"):
            continue
        row: dict[str, Any] = {"operation": operation}
        for server in ("mailtalk", "Dovecot"):
            values = by_server.get(server)
            row[server] = statistics.median(values) if values else None
            cpu = samples.get(operation + " [cpu]", {}).get(server)
            row[f"{server} cpu"] = statistics.median(cpu) if cpu else None
            row[f"{server} runs"] = values
        row["ratio"] = (
            row["mailtalk"] / row["Dovecot"] if row["mailtalk"] and row["Dovecot"] else None
        )
        rows.append(row)
    goal_rows = [r for r in rows if r["operation"].startswith(("IMAP SELECT", "IMAP UID FETCH"))]
    session_rows = [r for r in rows if r["operation"].startswith("IMAP login + SELECT + FETCH")]
    goal = None
    if goal_rows:
        worst = max(r["ratio"] for r in goal_rows)
        goal = {
            "target": GOAL,
            "worst_ratio": worst,
            "met": worst <= GOAL,
            "worst_session_ratio": max(r["ratio"] for r in session_rows),
        }
    return {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {dovecot_version()}",
        "mailtalk": origin,
        "messages": count,
        "seed": args.seed,
        "runs": args.runs,
        "statistic": "median",
        "corpus": corpus.__dict__,
        "pop3_pipeline_window": PIPELINE_WINDOW,
        "rows": rows,
        "goal": goal,
        "memory": memory,
        "append": appends,
        "checks": checks,
        "checks_ok": all(c["ok"] for c in checks),
        "notes": notes,
    }


def dovecot_version() -> str:
    try:
        out = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "Dovecot ?"
    return "Dovecot " + out.stdout.split()[0] if out.stdout else "Dovecot ?"


def print_report(report: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(
        f"{report['messages']} messages ({report['corpus']['stored_bytes'] / 1e6:.1f} MB), "
        f"median of {report['runs']} run(s); {report['machine']}\n"
    )
    origin = report["mailtalk"]
    if "commit" in origin:
        changes = ", with uncommitted changes" if origin["uncommitted_changes"] else ""
        out.write(f"mailtalk: {origin['package']} (commit {origin['commit']}{changes})\n\n")
    else:
        out.write(f"mailtalk: {origin['package']}\n\n")
    width = max(len(r["operation"]) for r in report["rows"]) + 2
    out.write(
        f"{'operation':<{width}} {'mailtalk s':>11} {'Dovecot s':>10} {'ratio':>6}"
        f"   {'server CPU s (mailtalk / Dovecot)':>34}\n"
    )

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for row in report["rows"]:
        cpu = f"{fmt(row['mailtalk cpu'], '.3f')} / {fmt(row['Dovecot cpu'], '.3f')}"
        out.write(
            f"{row['operation']:<{width}} {fmt(row['mailtalk'], '.3f'):>11} "
            f"{fmt(row['Dovecot'], '.3f'):>10} {fmt(row['ratio'], '.2f'):>6}   {cpu:>34}\n"
        )
    goal = report["goal"]
    if goal is not None:
        verdict = "met" if goal["met"] else "NOT met"
        out.write(
            f"\ngoal: IMAP SELECT and FETCH within {GOAL:g}x of Dovecot: worst ratio "
            f"{goal['worst_ratio']:.2f}, {verdict}; whole sessions (login + SELECT + FETCH): "
            f"worst ratio {goal['worst_session_ratio']:.2f}\n"
        )
    else:
        out.write("\nIMAP not measured (--skip-imap)\n")
    out.write("\npeak RSS (VmHWM), largest over the runs:\n")
    for server, figures in report["memory"].items():
        for what, value in figures.items():
            who = "mailtalk serve" if server == "mailtalk" else f"{server} session process"
            out.write(f"  {who}, {what}: {mib(value)}\n")
    for append in report["append"]:
        octets = append["literal_octets"]
        if "refused" in append:
            out.write(f"  {append['server']}, APPEND {{{octets}}}: refused: {append['refused']}\n")
            continue
        before = f", RSS before {mib(append['rss_before'])}" if "rss_before" in append else ""
        peak = "?" if append["peak_rss"] is None else mib(append["peak_rss"])
        out.write(
            f"  {append['server']}, APPEND {{{octets}}}: peak {peak}{before}, "
            f"{append['seconds']:.1f} s ({append['mb_per_s']:.0f} MB/s), {append['status']}\n"
        )
    failed = [c for c in report["checks"] if not c["ok"]]
    out.write(
        f"\nchecks: {len(report['checks']) - len(failed)} of {len(report['checks'])} passed "
        "(counts, byte totals and digests against the generated Maildir)\n"
    )
    for c in failed:
        out.write(
            f"  FAILED {c['server']}: {c['check']}: got {c['got']}, expected {c['expected']}\n"
        )
    for note in report["notes"]:
        out.write(f"note: {note}\n")


def dovecot_listening() -> bool:
    for port in (DOVECOT_IMAP_PORT, DOVECOT_POP3_PORT):
        try:
            socket.create_connection((HOST, port), timeout=5).close()
        except OSError:
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, help="messages in the Maildir (default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server (median reported)")
    parser.add_argument("--quick", action="store_true", help="1000 messages: a smoke run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated Maildir")
    parser.add_argument("--skip-imap", action="store_true", help="POP3 only")
    parser.add_argument(
        "--size-names", action="store_true",
        help="names carry ,S=<size>,W=<rfc822 size> (as delivered by Dovecot and mailtalk)",
    )  # fmt: skip
    parser.add_argument("--no-append", action="store_true", help="skip the 200 MB APPEND")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--mailtalk-path",
        type=Path,
        metavar="DIR",
        help="run the mailtalk package in DIR (e.g. a `git archive` of a commit) instead of "
        "the installed one",
    )
    args = parser.parse_args()
    if args.mailtalk_path is not None:
        args.mailtalk_path = args.mailtalk_path.resolve()
        if not (args.mailtalk_path / "mailtalk" / "__init__.py").exists():
            parser.error(f"--mailtalk-path: no mailtalk package in {args.mailtalk_path}")
    if args.runs < 1 or (args.messages is not None and args.messages < 1):
        parser.error("--runs and --messages must be at least 1")
    if os.geteuid() != 0:
        log("mailbox_servers.py must run as root: it creates the system user mtbench for Dovecot")
        return 2
    if not dovecot_listening():
        log(f"Dovecot does not answer on {HOST} ports 143 and 110: scripts/real-servers start")
        return 2

    def serve_stderr(scratch: Path) -> None:
        tail = scratch / "mailtalk-serve.stderr"
        if tail.exists() and tail.stat().st_size:
            log("mailtalk serve stderr (end): " + tail.read_text(errors="replace")[-800:])

    report = run_in_scratch(
        "mailbox-bench", lambda scratch: benchmark(args, scratch), serve_stderr
    )
    return finish(report, args.json, print_report, lambda done: bool(done["checks_ok"]))


if __name__ == "__main__":
    sys.exit(main())
