#!/usr/bin/env python3
"""How the mailbox figures grow: ``mailtalk serve`` next to Dovecot at 1,000, 10,000 and
100,000 messages, and with 1, 10 and 100 IMAP sessions at once.

    python bench/mailbox_scale.py [--sizes 1000,10000,100000] [--sessions 1,10,100]
                                  [--runs 3] [--baseline-path DIR] [--json]

Needs root, like bench/mailbox_servers.py (whose Maildir generator, clients and
mailtalk server it uses): it runs a Dovecot of its own on two free loopback ports, with
a configuration written for the run (passwd-file users, no quota plugin, limits raised
for 100 sessions from one address), mail in a home of its own owned by the system user
``mtbench``. The generated Maildirs (names with Dovecot's ``,S=``/``,W=``) are kept in
``--cache`` (default /tmp/mailtalk-bench-cache): 100,000 messages take minutes to make.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchlib import finish, free_port, log, proc_status, run_in_scratch
from mailbox_servers import (
    BENCH_USER,
    FETCH_ITEMS,
    HOST,
    IO_TIMEOUT,
    PIPELINE_WINDOW,
    Corpus,
    DovecotServer,
    MailtalkServer,
    POP3Client,
    Probe,
    Server,
    dovecot_version,
    ensure_user,
    generate_maildir,
    imap_session,
    lock_user,
    mailtalk_origin,
    reset_hwm,
    timed,
    unstuff,
)

SEED = 1
DEFAULT_CACHE = Path("/tmp/mailtalk-bench-cache")


# -- the Maildirs, made once ----------------------------------------------------------------


def cached_maildir(cache: Path, count: int) -> tuple[Path, Corpus]:
    """The generated Maildir of ``count`` messages (size-named) and what it holds: made
    once into ``cache`` and reused (the corpus is saved next to it once it is complete)."""
    folder = cache / f"maildir-{count}-seed{SEED}-sized"
    described = folder / "corpus.json"
    if described.exists():
        return folder / "Maildir", Corpus(**json.loads(described.read_text()))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log(f"generating {count} messages into {folder} (kept for later runs)")
    started = time.perf_counter()
    corpus = generate_maildir(folder / "Maildir", count, SEED, size_names=True)
    described.write_text(json.dumps(asdict(corpus)))
    log(f"  {corpus.stored_bytes / 1e6:.1f} MB in {time.perf_counter() - started:.0f} s")
    return folder / "Maildir", corpus


# -- a Dovecot of the benchmark's own ---------------------------------------------------------

DOVECOT_CONF = """\
# Written by bench/mailbox_scale.py for one run; removed at its end.
instance_name = mtbench-scale
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
listen = {host}
protocols = imap pop3
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
# 100 sessions of one user from one address, and no fewer processes than that.
mail_max_userip_connections = 1000
default_process_limit = 1000
default_client_limit = 5000
passdb {{
  driver = passwd-file
  args = username_format=%u {base}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {base}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


class PrivateDovecot(DovecotServer):
    """Dovecot started for this run (``dovecot -c CONF``), stopped at the end."""

    def __init__(self, source: Path, password: str) -> None:
        ensure_user(password)
        entry = pwd.getpwnam(BENCH_USER)
        self.source = source
        self.uid = entry.pw_uid
        # Under /tmp, readable by Dovecot's unprivileged processes (a mkdtemp is 0700).
        self.base = Path(tempfile.mkdtemp(prefix="mailtalk-scale-dovecot-"))
        self.base.chmod(0o755)
        home = self.base / "home"
        home.mkdir()
        os.chown(home, entry.pw_uid, entry.pw_gid)
        self.maildir = home / "Maildir"
        # Hashed as the system's passwords are (what PAM checks for the Dovecot of
        # mailbox_servers.py), not stored in plain: a login costs what it costs there.
        hashed = subprocess.run(
            ["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        (self.base / "passwd").write_text(
            f"{BENCH_USER}:{hashed}:{entry.pw_uid}:{entry.pw_gid}::{home}::\n"
        )
        (self.base / "passwd").chmod(0o644)
        self.imap_port, self.pop3_port = free_port(), free_port()
        self.conf = self.base / "dovecot.conf"
        self.conf.write_text(DOVECOT_CONF.format(
            base=self.base, host=HOST, imap=self.imap_port, pop3=self.pop3_port
        ))  # fmt: skip
        subprocess.run(["dovecot", "-c", str(self.conf)], check=True, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((HOST, self.imap_port), timeout=2).close()
                socket.create_connection((HOST, self.pop3_port), timeout=2).close()
                break
            except OSError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Dovecot did not start ({error}): see "
                                       f"{self.base}/dovecot.log") from error
                time.sleep(0.1)

    def shutdown(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["doveadm", "-c", str(self.conf), "stop"], timeout=60,
                           capture_output=True)  # fmt: skip
        shutil.rmtree(self.base, ignore_errors=True)


class ScaleMailtalk(MailtalkServer):
    """A ``mailtalk serve`` under its own name (a second one: ``--baseline-path``)."""

    def __init__(self, name: str, scratch: Path, source: Path, password: str,
                 path: Path | None) -> None:  # fmt: skip
        scratch.mkdir(parents=True, exist_ok=True)
        # Sessions from one address, as many as the largest round.
        extra = ["--max-connections", "1000", "--max-connections-per-address", "0"]
        super().__init__(scratch, source, password, True, extra, path)
        self.name = name
        self.prepare()


# -- one server, one mailbox size -------------------------------------------------------------


def retr_counted(client: POP3Client, count: int) -> int:
    """RETR 1..COUNT, PIPELINE_WINDOW at a time: the bytes received (un-stuffed), the
    messages let go as they come (100,000 of them are 300 MB)."""
    return sum(len(unstuff(data)) for data in client.retr_each(count, PIPELINE_WINDOW))


def sizes_round(
    server: Server, password: str, corpus: Corpus
) -> tuple[dict[str, float], list[str]]:
    """POP3 (cold) then IMAP (cold, then warm), each on a fresh copy: the timings, the
    peak RSS in bytes (as floats), and what did not check out."""
    found: dict[str, float] = {}
    problems: list[str] = []
    count = corpus.count
    server.reset()
    probe = Probe(server, "pop3")
    results: dict[str, Any] = {}
    start = time.perf_counter()
    client = POP3Client(server.pop3_port)
    try:
        client.simple(b"USER " + BENCH_USER.encode())
        client.simple(b"PASS " + password.encode())
        results["POP3 login (cold)"] = time.perf_counter() - start
        probe.find()

        def listing() -> list[int]:
            client.simple(b"LIST")
            return [int(line.split()[1]) for line in client.multiline().splitlines()]

        sizes = timed(results, "POP3 LIST (cold)", probe, listing)
        received = timed(results, "POP3 RETR all, pipelined", probe,
                         lambda: retr_counted(client, len(sizes)))  # fmt: skip
        if (len(sizes), sum(sizes), received) != (count, corpus.rfc822_bytes,
                                                  corpus.rfc822_bytes):
            problems.append(f"{server.name} POP3: {len(sizes)} messages, {sum(sizes)} / "
                            f"{received} bytes")  # fmt: skip
        results["peak RSS, POP3"] = float(probe.hwm() or 0)
        client.simple(b"QUIT")
    finally:
        client.close()
    results["POP3 login + LIST (cold)"] = results["POP3 login (cold)"] + results["POP3 LIST (cold)"]
    server.reset()
    for temperature in ("cold", "warm"):
        session = imap_session(server, password, temperature)
        fetched = session["fetch"]
        if (session["exists"], fetched["fetch_responses"], fetched["rfc822_size_total"],
                fetched["header_digest"]) != (count, count, corpus.rfc822_bytes,
                                              corpus.header_digest):  # fmt: skip
            problems.append(f"{server.name} IMAP {temperature}: EXISTS {session['exists']}, "
                            f"{fetched['fetch_responses']} FETCH responses")
        results.update(session)
        results[f"peak RSS, IMAP ({temperature})"] = float(session["session_hwm"] or 0)
    for key, value in results.items():
        if isinstance(value, float) and not key.endswith("[cpu]"):
            found[key] = value
    return found, problems


# -- many sessions at once --------------------------------------------------------------------


def one_session(
    port: int, password: str, count: int, out: dict[str, Any], hold: Hold | None = None
) -> None:
    """LOGIN, SELECT INBOX, UID FETCH 1:* of the listing, (``hold``: wait there until
    released, the session open), LOGOUT. The FETCH answer is only counted (its FETCH
    responses), not parsed, so that the clients cost little."""
    start = time.perf_counter()
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    try:

        def until(tag: bytes) -> bytes:
            marker = b"\r\n" + tag + b" "
            while True:
                end = buf.find(marker)
                if end >= 0 or buf.startswith(tag + b" "):
                    stop = buf.find(b"\r\n", end + 2 if end >= 0 else 0)
                    if stop >= 0:
                        data = bytes(buf[: stop + 2])
                        del buf[: stop + 2]
                        return data
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                buf.extend(chunk)

        greeting = until(b"*")
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting {greeting[:100]!r}")
        sock.sendall(b'a LOGIN %s "%s"\r\n' % (BENCH_USER.encode(), password.encode()))
        if b"\r\na OK" not in b"\r\n" + until(b"a"):
            raise RuntimeError("LOGIN refused")
        selecting = time.perf_counter()
        sock.sendall(b"b SELECT INBOX\r\nc UID FETCH 1:* " + FETCH_ITEMS + b"\r\n")
        until(b"b")
        answer = until(b"c")
        out["listed"] = time.perf_counter() - start
        out["select + fetch"] = time.perf_counter() - selecting
        out["fetched"] = answer.count(b" FETCH (")
        out["ok"] = b"\r\nc OK" in answer[-200:] and out["fetched"] == count
        del answer
        if hold is not None:
            hold.arrive()
        sock.sendall(b"d LOGOUT\r\n")
        with contextlib.suppress(OSError, RuntimeError):
            until(b"d")
    except (OSError, RuntimeError, threading.BrokenBarrierError) as error:
        out["error"] = str(error)
        if hold is not None:
            hold.abort()
    finally:
        sock.close()


class Hold:
    """Where every session of a round waits, listed and still open, until the memory
    of them all is measured."""

    def __init__(self, sessions: int) -> None:
        self.arrived = threading.Barrier(sessions + 1)
        self.released = threading.Event()

    def arrive(self) -> None:
        self.arrived.wait(IO_TIMEOUT)
        self.released.wait(IO_TIMEOUT)

    def abort(self) -> None:
        self.arrived.abort()


def memory_of(server: Server) -> int:
    """Bytes of memory the server uses for its sessions now: the PSS of the mailtalk
    process, or of all of Dovecot's session processes for mtbench together (it forks
    one a session; PSS shares their common pages out among them rather than counting
    them in each)."""
    if isinstance(server, MailtalkServer):
        pids = [server.pid]
    else:
        assert isinstance(server, DovecotServer)
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, KeyError, ValueError):
                    status = (entry / "status").read_text()
                    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                    if (fields.get("Name", "").strip() == "imap"
                            and int(fields["Uid"].split()[0]) == server.uid):  # fmt: skip
                        pids.append(int(entry.name))
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
    return total


def sessions_round(server: Server, password: str, sessions: int, count: int) -> dict[str, float]:
    """``sessions`` clients at once on the (indexed) mailbox: the time until every one
    has its listing, the median session's, and the memory with all of them open."""
    outs: list[dict[str, Any]] = [{} for _ in range(sessions)]
    hold = Hold(sessions)
    threads = [threading.Thread(target=one_session,
                                args=(server.imap_port, password, count, out, hold))
               for out in outs]  # fmt: skip
    if isinstance(server, MailtalkServer):
        reset_hwm(server.pid)
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        hold.arrived.wait(IO_TIMEOUT)
        listed = time.perf_counter() - start
        memory = memory_of(server)
    except threading.BrokenBarrierError:
        listed, memory = 0.0, 0
    finally:
        hold.released.set()
        for thread in threads:
            thread.join(IO_TIMEOUT)
    failed = [out for out in outs if not out.get("ok")]
    if failed:
        raise RuntimeError(f"{server.name}: {len(failed)} of {sessions} sessions failed: "
                           f"{failed[0]}")  # fmt: skip
    found = {
        "every session listed": listed,
        "median session": statistics.median(out["listed"] for out in outs),
        "median SELECT + FETCH": statistics.median(out["select + fetch"] for out in outs),
        "memory, sessions open (PSS)": float(memory),
    }
    if isinstance(server, MailtalkServer):
        found["peak RSS"] = float(proc_status(server.pid, "VmHWM"))
    return found


# -- the benchmark --------------------------------------------------------------------------


def interleaved(servers: list[Server], run: int) -> list[Server]:
    """The servers in a rotated order: each goes first, second, ... in turn."""
    shift = run % len(servers)
    return servers[shift:] + servers[:shift]


def medians(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {what: {name: statistics.median(values) for name, values in by_server.items()}
            for what, by_server in samples.items()}  # fmt: skip


def benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    password = secrets.token_hex(12)
    report: dict[str, Any] = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {dovecot_version()}",
        "mailtalk": mailtalk_origin(args.mailtalk_path),
        "baseline": mailtalk_origin(args.baseline_path) if args.baseline_path else None,
        "runs": args.runs,
        "statistic": "median",
        "sizes": {},
        "sessions": {},
        "problems": [],
    }
    dovecot: PrivateDovecot | None = None
    mailtalks: list[ScaleMailtalk] = []
    try:
        first_source, _ = cached_maildir(args.cache, args.sizes[0])
        dovecot = PrivateDovecot(first_source, password)
        variants = [("mailtalk", args.mailtalk_path)]
        if args.baseline_path:
            variants.append(("mailtalk (baseline)", args.baseline_path))
        for number, (name, path) in enumerate(variants):
            mailtalks.append(ScaleMailtalk(name, scratch / f"mailtalk-{number}", first_source,
                                           password, path))  # fmt: skip
        servers: list[Server] = [*mailtalks, dovecot]
        for count in args.sizes:
            source, corpus = cached_maildir(args.cache, count)
            for server in servers:
                server.source = source  # type: ignore[attr-defined]
            samples: dict[str, dict[str, list[float]]] = {}
            for run in range(args.runs):
                for server in interleaved(servers, run):
                    log(f"{count} messages, run {run + 1}/{args.runs}: {server.name}")
                    found, problems = sizes_round(server, password, corpus)
                    report["problems"] += problems
                    for what, value in found.items():
                        samples.setdefault(what, {}).setdefault(server.name, []).append(value)
            report["sizes"][count] = medians(samples)
        if args.sessions:
            source, corpus = cached_maildir(args.cache, args.session_messages)
            samples_by_n: dict[int, dict[str, dict[str, list[float]]]] = {}
            for server in servers:
                server.source = source  # type: ignore[attr-defined]
            for run in range(args.runs):
                for sessions in args.sessions:
                    for server in interleaved(servers, run):
                        log(f"{sessions} sessions at once, run {run + 1}/{args.runs}: "
                            f"{server.name}")  # fmt: skip
                        # A fresh server each round (its memory is the round's alone),
                        # indexed and warm: one session's listing first.
                        server.reset()
                        one: dict[str, Any] = {}
                        one_session(server.imap_port, password, corpus.count, one)
                        if not one.get("ok"):
                            raise RuntimeError(f"{server.name}: the warm-up session: {one}")
                        found = sessions_round(server, password, sessions, corpus.count)
                        by_n = samples_by_n.setdefault(sessions, {})
                        for what, value in found.items():
                            by_n.setdefault(what, {}).setdefault(server.name, []).append(value)
            report["sessions"] = {n: medians(s) for n, s in samples_by_n.items()}
            report["session_messages"] = args.session_messages
    finally:
        for server in mailtalks:
            server.stop()
        if dovecot is not None:
            dovecot.shutdown()
        lock_user()
    return report


# -- the report -------------------------------------------------------------------------------

SIZE_ROWS = [
    "POP3 login (cold)", "POP3 login + LIST (cold)", "POP3 RETR all, pipelined",
    "IMAP SELECT INBOX (cold)", "IMAP UID FETCH 1:* (cold)", "IMAP SELECT INBOX (warm)",
    "IMAP UID FETCH 1:* (warm)", "peak RSS, POP3", "peak RSS, IMAP (warm)",
]  # fmt: skip


def figure(what: str, value: float | None) -> str:
    if value is None:
        return "-"
    if what.startswith(("peak RSS", "memory")):
        return f"{value / 2**20:.1f} MiB"
    return f"{value:.3f} s"


def print_report(report: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(f"median of {report['runs']} interleaved run(s); {report['machine']}\n")
    for label in ("mailtalk", "baseline"):
        origin = report.get(label)
        if origin:
            commit = f" (commit {origin['commit']})" if "commit" in origin else ""
            out.write(f"{label}: {origin['package']}{commit}\n")
    names = [name for name in ("mailtalk", "mailtalk (baseline)", "Dovecot")
             if any(name in row for table in report["sizes"].values() for row in table.values())]
    for title, tables, rows in (
        ("messages", report["sizes"], SIZE_ROWS),
        (f"sessions at once ({report.get('session_messages')} messages, IMAP LOGIN, SELECT, "
         "UID FETCH 1:* of the listing, LOGOUT)", report["sessions"],
         ["every session listed", "median session", "median SELECT + FETCH",
          "memory, sessions open (PSS)", "peak RSS"]),
    ):  # fmt: skip
        if not tables:
            continue
        out.write(f"\nby {title}\n")
        header = f"{'':<28}" + "".join(f"{n:>10}" for n in tables) + "\n"
        for what in rows:
            out.write(f"\n{what}\n" + header)
            for name in names:
                line = "".join(f"{figure(what, tables[n].get(what, {}).get(name)):>10}"
                               for n in tables)  # fmt: skip
                out.write(f"  {name:<26}{line}\n")
            if "Dovecot" in names:
                for name in names[:-1]:
                    ratios = []
                    for n in tables:
                        mine, theirs = (tables[n].get(what, {}).get(k) for k in (name, "Dovecot"))
                        ratios.append(f"{mine / theirs:.2f}x" if mine and theirs else "-")
                    out.write(f"  {name + ' / Dovecot':<26}" + "".join(f"{r:>10}" for r in ratios)
                              + "\n")
    for problem in report["problems"]:
        out.write(f"problem: {problem}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="messages in the mailbox, comma-separated")
    parser.add_argument("--sessions", default="1,10,100",
                        help="IMAP sessions at once, comma-separated ('' for none)")
    parser.add_argument("--session-messages", type=int, default=10000,
                        help="messages in the mailbox the sessions share")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (medians)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where the generated Maildirs are kept")
    parser.add_argument("--mailtalk-path", type=Path, metavar="DIR",
                        help="run the mailtalk package in DIR instead of the installed one")
    parser.add_argument("--baseline-path", type=Path, metavar="DIR",
                        help="also run the mailtalk package in DIR (e.g. main), as a column")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="print the tables of an earlier run's --json output, and stop")
    args = parser.parse_args()
    if args.report is not None:
        print_report(json.loads(args.report.read_text()))
        return 0
    try:
        args.sizes = [int(n) for n in args.sizes.split(",") if n]
        args.sessions = [int(n) for n in args.sessions.split(",") if n]
    except ValueError:
        parser.error("--sizes and --sessions take comma-separated numbers")
    if not args.sizes or min(args.sizes + args.sessions + [args.runs]) < 1:
        parser.error("--sizes, --sessions and --runs must be at least 1")
    for option in ("mailtalk_path", "baseline_path"):
        path = getattr(args, option)
        if path is not None:
            setattr(args, option, path.resolve())
            if not (path / "mailtalk" / "__init__.py").exists():
                parser.error(f"--{option.replace('_', '-')}: no mailtalk package in {path}")
    if os.geteuid() != 0:
        log("mailbox_scale.py must run as root: it runs Dovecot as the system user mtbench")
        return 2
    if shutil.which("dovecot") is None:
        log("no dovecot binary (apt-get install dovecot-imapd dovecot-pop3d)")
        return 2

    report = run_in_scratch("mailbox-scale", lambda scratch: benchmark(args, scratch))
    return finish(report, args.json, print_report, lambda done: not done["problems"])


if __name__ == "__main__":
    sys.exit(main())
