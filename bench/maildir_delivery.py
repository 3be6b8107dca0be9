#!/usr/bin/env python3
"""SMTP accept into a Maildir, fsync before the 250: mailtalk next to aiosmtpd's Sink
(which stores nothing) and Postfix's own smtpd -> local(8) -> Maildir.

    sudo python bench/maildir_delivery.py [--runs N] [--messages N] [--json]
                                          [--baseline-path DIR] [--aiosmtpd-python PATH]
                                          [--dir DIR]

Rows, all loaded by Postfix's ``smtp-source -s 10 -l 1024`` (10 parallel sessions),
both workloads of smtp_throughput.py (a new connection per message; ``-d``: 10
connections carry all messages), interleaved round-robin, medians:

- ``mailtalk (Maildir)``: ``mailtalk serve --user alice:secret`` of this checkout,
  delivering to alice@localhost: the file in new/ and fsynced, new/ fsynced, then 250
- ``mailtalk (Maildir, baseline)``: the same server from ``--baseline-path DIR`` (a
  ``git archive REV mailtalk`` unpacked there), to compare two commits in one run
- ``aiosmtpd (Sink)``: ``python -m aiosmtpd -c aiosmtpd.handlers.Sink``, no storage
- ``Postfix -> local -> Maildir``: the running Postfix on 127.0.0.1:25 (scripts/
  real-servers), to the system user ``mtdeliver`` (created with ``useradd`` once, its
  login locked; ``home_mailbox = Maildir/``). Postfix answers 250 once the message is
  in its queue (fsynced) and delivers afterwards, so its time runs until the last
  message is in ``~mtdeliver/Maildir/new``: what "accepted into the Maildir" means.

Every mailtalk run is checked (the count of new/); needs root for the Postfix row
(skipped otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import log
from smtp_throughput import (
    MESSAGE_SIZE,
    RUN_TIMEOUT,
    SESSIONS,
    SMTP_SOURCE,
    WORKLOADS,
    Server,
    aiosmtpd_python,
    run_source,
)

POSTFIX_PORT = 25
POSTFIX_USER = "mtdeliver"
POSTFIX_ROW = "Postfix -> local -> Maildir"


def mailtalk_maildir(name: str, scratch: Path, pythonpath: str | None) -> Server:
    root = scratch / name.replace(" ", "-").replace("(", "").replace(")", "").replace(",", "")
    env = ["env", f"PYTHONPATH={pythonpath}"] if pythonpath else []
    argv = [*env, sys.executable, "-m", "mailtalk", "serve", "--smtp", "0", "--json",
            "--user", "alice:secret", "--root", str(root)]  # fmt: skip
    return Server(name, "alice@localhost", argv, json_port=True, root=root)


def count_new(path: Path) -> int:
    return sum(1 for _ in os.scandir(path)) if path.is_dir() else 0


def postfix_maildir() -> Path | None:
    if os.geteuid() != 0 or not os.access("/usr/sbin/postfix", os.X_OK):
        return None
    try:
        pwd.getpwnam(POSTFIX_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin",
                        POSTFIX_USER], check=True, timeout=60)  # fmt: skip
        subprocess.run(["usermod", "--lock", POSTFIX_USER], check=True, timeout=60)
    return Path(pwd.getpwnam(POSTFIX_USER).pw_dir) / "Maildir"


def run_postfix(maildir: Path, extra: list[str], messages: int) -> dict[str, float]:
    """smtp-source into Postfix, timed until local(8) has put every message in new/."""
    new = maildir / "new"
    before = count_new(new)
    argv = [SMTP_SOURCE, *extra, "-s", str(SESSIONS), "-m", str(messages),
            "-l", str(MESSAGE_SIZE), "-f", "a@b.test", "-t", f"{POSTFIX_USER}@localhost",
            f"127.0.0.1:{POSTFIX_PORT}"]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=RUN_TIMEOUT)  # fmt: skip
    accepted = time.perf_counter() - start
    complaint = (result.stderr + result.stdout).decode(errors="replace").strip()
    if result.returncode != 0 or complaint:
        raise RuntimeError(f"smtp-source against Postfix: {complaint[-500:]}")
    deadline = start + RUN_TIMEOUT
    while count_new(new) < before + messages:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"Postfix delivered {count_new(new) - before} of {messages}")
        time.sleep(0.01)
    wall = time.perf_counter() - start
    return {"seconds": wall, "msg_per_s": messages / wall, "accept_seconds": accepted,
            "server_cpu_us_per_msg": float("nan")}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per row (median reported)")
    parser.add_argument("--messages", type=int, default=2000, help="messages per run")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--baseline-path", metavar="DIR",
                        help="also mailtalk from DIR (PYTHONPATH), e.g. an unpacked git archive")
    parser.add_argument("--aiosmtpd-python", metavar="PATH",
                        help="a Python that has aiosmtpd (default: bench/.venv, made if missing)")
    parser.add_argument("--no-postfix", action="store_true", help="skip the Postfix row")
    parser.add_argument("--dir", metavar="DIR",
                        help="make the servers' Maildirs and files under DIR (default: the "
                             "system's temporary directory, where a user's run would)")
    args = parser.parse_args()  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="mailtalk-bench-maildir-", dir=args.dir))
    servers = [mailtalk_maildir("mailtalk (Maildir)", scratch, None)]
    if args.baseline_path:
        servers.append(mailtalk_maildir("mailtalk (Maildir, baseline)", scratch,
                                        os.path.abspath(args.baseline_path)))  # fmt: skip
    aiosmtpd = aiosmtpd_python(args.aiosmtpd_python)
    if aiosmtpd:
        servers.append(Server("aiosmtpd (Sink)", "c@d.test", [
            aiosmtpd, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:{port}",
            "-c", "aiosmtpd.handlers.Sink"]))  # fmt: skip
    postfix = None if args.no_postfix else postfix_maildir()
    rows: list[str] = [s.name for s in servers] + ([POSTFIX_ROW] if postfix else [])
    samples: dict[str, dict[str, list[dict[str, float]]]] = {w: {} for w in WORKLOADS}
    expected: dict[str, int] = {}
    try:
        for server in servers:
            server.start(scratch)
        for run in range(-1, args.runs):  # run -1: the warm-up, not counted
            count = min(200, args.messages) if run < 0 else args.messages
            order = rows[run % len(rows) :] + rows[: run % len(rows)]
            for workload, extra in WORKLOADS.items():
                for name in order:
                    if name == POSTFIX_ROW:
                        assert postfix is not None
                        sample = run_postfix(postfix, extra, count)
                    else:
                        server = next(s for s in servers if s.name == name)
                        sample = run_source(server, extra, count)
                        expected[name] = expected.get(name, 0) + count
                    if run >= 0:
                        samples[workload].setdefault(name, []).append(sample)
                        log(f"run {run + 1}/{args.runs} {workload:<30} {name:<28} "
                            f"{sample['msg_per_s']:>7.0f} msg/s")  # fmt: skip
        for server in servers:
            if server.root is not None and "Maildir" in server.name:
                new = server.root / "mail" / "alice" / "Maildir" / "new"
                if count_new(new) != expected[server.name]:
                    raise RuntimeError(f"{server.name}: {count_new(new)} messages in new/, "
                                       f"expected {expected[server.name]}")  # fmt: skip
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    report: dict[str, Any] = {"messages": args.messages, "runs": args.runs, "results": {}}
    for workload, by_name in samples.items():
        medians = {n: statistics.median(s["msg_per_s"] for s in runs)
                   for n, runs in by_name.items()}  # fmt: skip
        cpu = {n: statistics.median(s["server_cpu_us_per_msg"] for s in runs)
               for n, runs in by_name.items()}  # fmt: skip
        base = medians.get("aiosmtpd (Sink)")
        report["results"][workload] = {
            n: {"median_msg_per_s": m, "median_server_cpu_us_per_msg": cpu[n],
                "ratio_to_aiosmtpd_sink": m / base if base else None,
                "runs": [s["msg_per_s"] for s in by_name[n]]}
            for n, m in medians.items()
        }  # fmt: skip
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(f"SMTP accept into a Maildir, smtp-source -s {SESSIONS} -m {args.messages} "
          f"-l {MESSAGE_SIZE}; median of {args.runs} interleaved runs")  # fmt: skip
    for workload, by_name in report["results"].items():
        print(f"\n{workload}:\n  {'server':<30} {'msg/s':>8} {'CPU us/msg':>11} {'/aiosmtpd':>10}")
        for name in rows:
            if name in by_name:
                r = by_name[name]
                ratio = r["ratio_to_aiosmtpd_sink"]
                print(f"  {name:<30} {r['median_msg_per_s']:>8.0f} "
                      f"{r['median_server_cpu_us_per_msg']:>11.0f} "
                      f"{'' if ratio is None else f'{ratio:.2f}':>10}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
