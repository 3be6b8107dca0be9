#!/usr/bin/env python3
"""Instructions of ``mailtalk serve`` for one POP3 and one IMAP pass, under callgrind.

    python bench/serve_callgrind.py [--messages N] [--rounds N] [--mailtalk-path DIR ...]

On the size-named Maildir of bench/mailbox_servers.py (same generator, same seed), a
``mailtalk serve`` under ``valgrind --tool=callgrind --instr-atstart=no`` per round and
checkout, its instrumentation switched on around one pass only:

- POP3: login, LIST, one pipelined pass of ``RETR`` 1..N untimed (the warm-up), then
  the measured pipelined pass (50 commands in flight, as mailbox_servers.py);
- IMAP: login, ``SELECT INBOX``, one ``UID FETCH 1:*`` (FLAGS RFC822.SIZE
  HEADER.FIELDS) untimed, then the measured one (warm).

Per pass: the instructions, per RETR or per message, and the inclusive instructions
of two CPython slots that Python-level hooks cost: ``slot_tp_getattr_hook`` (a read
through a class whose metaclass has ``__getattr__``: on 3.11 every
``SomeEnum.MEMBER``) and ``slot_tp_hash`` (a Python ``__hash__``: an enum member
as a dict key). With several ``--mailtalk-path`` the checkouts alternate within each
round. Needs valgrind; takes about a minute a server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import log, run_in_scratch
from mailbox_servers import (
    BENCH_USER,
    FETCH_ITEMS,
    PIPELINE_WINDOW,
    IMAPClient,
    POP3Client,
    copy_maildir,
    generate_maildir,
    mailtalk_command,
    parse_fetch,
)

START_TIMEOUT = 300.0  # valgrind starts Python some 50 times slower
SETTLE = 3.0  # seconds for the start-up's threads to finish before a measured pass
SLOTS = ("slot_tp_getattr_hook", "slot_tp_hash")
PASSWORD = "bench-callgrind"


class CallgrindServer:
    def __init__(self, scratch: Path, source: Path | None, tag: str) -> None:
        self.root = scratch / f"root-{tag}"
        self.out = scratch / f"callgrind-{tag}.out"
        command, self.env = mailtalk_command(source)
        self.argv = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={self.out}", *command, "serve", "--root", str(self.root),
            "--pop3", "0", "--imap", "0", "--smtp", "0",
            "--user", f"{BENCH_USER}:{PASSWORD}", "--json",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=self.env, cwd=self.root.parent,
            start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT):
                raise RuntimeError("mailtalk serve under valgrind: no JSON line")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("mailtalk serve under valgrind exited")
        self.ports = {i["protocol"]: int(i["port"]) for i in json.loads(line)["listeners"]}

    def control(self, *options: str) -> None:
        assert self.process is not None
        subprocess.run(["callgrind_control", *options, str(self.process.pid)],
                       check=True, capture_output=True, timeout=120)

    def measured(self, work: Any) -> dict[str, Any]:
        """Run ``work()`` with instrumentation on; its instructions and the slots'."""
        time.sleep(SETTLE)
        self.control("-z")
        self.control("-i", "on")
        value = work()
        self.control("-i", "off")
        self.control("-d")
        # The dump just made: the out file's name and a count.
        dump = max(self.out.parent.glob(f"{self.out.name}*"), key=os.path.getmtime)
        return {"value": value, **instructions(dump)}

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)


def instructions(dump: Path) -> dict[str, Any]:
    """The dump's total instructions and the inclusive instructions of SLOTS."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    total = re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M)
    found: dict[str, Any] = {"total": int(total.group(1).replace(",", "")) if total else None}
    for slot in SLOTS:
        match = re.search(rf"^\s*([\d,]+) \([^)]*\)\s+\S*:{slot} ", text, re.M)
        found[slot] = int(match.group(1).replace(",", "")) if match else 0
    return found


def one_server(scratch: Path, source_maildir: Path, checkout: Path | None, tag: str,
               count: int, imap: bool) -> dict[str, Any]:
    server = CallgrindServer(scratch, checkout, tag)
    copy_maildir(source_maildir, server.root / "mail" / BENCH_USER / "Maildir")
    server.start()
    results: dict[str, Any] = {}
    try:
        pop3 = POP3Client(server.ports["pop3"])
        pop3.simple(b"USER " + BENCH_USER.encode())
        pop3.simple(b"PASS " + PASSWORD.encode())
        pop3.simple(b"LIST")
        pop3.multiline()
        pop3.retr_all(count, PIPELINE_WINDOW)  # the warm-up
        passed = server.measured(lambda: len(pop3.retr_all(count, PIPELINE_WINDOW)))
        pop3.simple(b"QUIT")
        pop3.close()
        if passed["value"] != count:
            raise RuntimeError(f"RETR: {passed['value']} answers of {count}")
        results["POP3 RETR pipelined"] = passed
        if imap:
            client = IMAPClient(server.ports["imap"])
            client.login(BENCH_USER, PASSWORD)
            client.expect_ok(b"SELECT INBOX")
            client.expect_ok(b"UID FETCH 1:* " + FETCH_ITEMS)  # the warm-up
            passed = server.measured(
                lambda: parse_fetch(client.expect_ok(b"UID FETCH 1:* " + FETCH_ITEMS))
            )
            client.logout()
            if passed["value"]["fetch_responses"] != count:
                raise RuntimeError(f"FETCH: {passed['value']['fetch_responses']} of {count}")
            results["IMAP UID FETCH 1:* (warm)"] = passed
    finally:
        server.stop()
    for passed in results.values():
        passed.pop("value")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000, help="messages (default 10000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (checkouts alternate)")
    parser.add_argument("--skip-imap", action="store_true", help="POP3 only")
    parser.add_argument("--mailtalk-path", type=Path, action="append", metavar="DIR",
                        help="the mailtalk package in DIR (repeatable); default the installed")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    checkouts: list[Path | None] = [p.resolve() for p in args.mailtalk_path or []] or [None]

    def work(scratch: Path) -> dict[str, Any]:
        maildir = scratch / "source"
        generate_maildir(maildir, args.messages, seed=1, size_names=True)
        runs = []
        for round_number in range(args.rounds):
            for index, checkout in enumerate(checkouts):
                tag = f"{round_number}-{index}"
                log(f"round {round_number + 1}: {checkout or 'installed'}")
                passes = one_server(scratch, maildir, checkout, tag, args.messages,
                                    not args.skip_imap)
                runs.append({"checkout": str(checkout or "installed"), "passes": passes})
        return {"messages": args.messages, "runs": runs}

    report = run_in_scratch("serve-callgrind", work)
    if isinstance(report, int):
        return report
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    count = report["messages"]
    print(f"{'checkout':<30} {'pass':<26} {'instr/op':>10} {'getattr hook':>14} {'hash':>10}")
    for run in report["runs"]:
        for name, passed in run["passes"].items():
            total = passed["total"] or 0
            hook, hashed = passed["slot_tp_getattr_hook"], passed["slot_tp_hash"]
            print(f"{run['checkout'][-30:]:<30} {name:<26} {total / count:>10,.0f} "
                  f"{hook / count:>7,.0f} {100 * hook / max(total, 1):>5.2f}% "
                  f"{hashed / count:>5,.0f} {100 * hashed / max(total, 1):>4.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
