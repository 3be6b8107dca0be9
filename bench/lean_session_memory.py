#!/usr/bin/env python3
"""What a POP3 session's store work costs in memory with and without the server's imports.

    python bench/lean_session_memory.py [--messages N] [--runs N] [--mailtalk-path DIR]

Issue 17's memory row (peak RSS serving 10,000 messages, goal 30 MiB) is not met by
``mailtalk serve`` (bench/README.md, "the fifth table"), and most of the gap is what a
process imports before any mailbox: asyncio with ``ssl``, uvloop, click, the servers'
modules. This measures how far a session served by a process of its own, without
them (as Dovecot hands each session to a process), would be from the row: in a fresh
Python per run, on the size-named Maildir of bench/mailbox_servers.py (same generator,
same seed), the same store calls a POP3 session makes (the maildrop locked, INBOX
opened cold, LIST's sizes, every message read as RETR reads it: small ones whole from
the columns, larger ones in chunks), with the peak RSS (VmHWM) after, in two kinds of
process:

- lean: imports only ``mailtalk.store`` and the POP3 core;
- serve's imports: asyncio, uvloop, click and ``mailtalk.servers.app`` first.

Prints each run and the medians. Not a server: it speaks no protocol and holds no
socket, so it gives a floor for such a worker, not its figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Run in a fresh interpreter: argv = [checkout, maildir source, scratch root, "lean"|"serve"].
SESSION = r"""
import os, re, shutil, sys
checkout, source, root, kind = sys.argv[1:5]
sys.path.insert(0, checkout)
if kind == "serve":
    import asyncio, click, uvloop  # noqa: F401  (what `mailtalk serve` has loaded)
    import mailtalk.servers.app  # noqa: F401
from pathlib import Path
from mailtalk.store.users import MailStore
import mailtalk.protocols.pop3  # noqa: F401  (the core a session drives)

def status(key):
    text = open("/proc/self/status").read()
    return int(re.search(key + r":\s+(\d+)", text).group(1)) / 1024

maildir = Path(root) / "mail" / "bench" / "Maildir"
shutil.rmtree(maildir, ignore_errors=True)
maildir.parent.mkdir(parents=True, exist_ok=True)
shutil.copytree(source, maildir)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # VmHWM back to the RSS now: the peak measured is the session's
boxes = MailStore(Path(root)).user_mailboxes("bench")
lock = boxes.lock_maildrop()
box = boxes.open("INBOX")
messages = box.messages()
sizes = messages.view.pop3_sizes()
read = 0
with open(os.devnull, "wb") as out:
    for uid in messages.view.uids:
        data = box.read_small(uid, 65536)
        if data is None:
            with box.open_message(uid) as handle:
                while chunk := handle.read(65536):
                    read += out.write(chunk)
        else:
            read += out.write(data)
lock.release()
print(f"{before:.2f} {status('VmHWM'):.2f} {len(sizes)} {read}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mailtalk-path", default=str(ROOT), help="the checkout to measure")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from mailbox_servers import generate_maildir

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as the servers run: byte-compiled
    with tempfile.TemporaryDirectory(prefix="lean-session-") as scratch:
        source = Path(scratch) / "source"
        corpus = generate_maildir(source, args.messages, args.seed, size_names=True)
        results: dict[str, list[tuple[float, float]]] = {"lean": [], "serve": []}
        for run in range(args.runs):
            order = ("lean", "serve") if run % 2 == 0 else ("serve", "lean")
            for kind in order:
                done = subprocess.run(
                    [sys.executable, "-c", SESSION, args.mailtalk_path, str(source),
                     str(Path(scratch) / kind), kind],
                    capture_output=True, text=True, env=env, check=True,
                )  # fmt: skip
                before, peak, count, read = done.stdout.split()
                if int(count) != args.messages or int(read) != corpus.stored_bytes:
                    raise SystemExit(f"{kind}: read {count} messages, {read} bytes")
                results[kind].append((float(before), float(peak)))
                print(f"run {run + 1}/{args.runs} {kind:5s}: {before} MiB before, peak {peak} MiB")
            shutil.rmtree(Path(scratch) / "lean", ignore_errors=True)
            shutil.rmtree(Path(scratch) / "serve", ignore_errors=True)
    print(f"{args.messages} messages, median of {args.runs} runs (VmHWM, MiB):")
    for kind, label in (("lean", "store + POP3 core only"), ("serve", "after serve's imports")):
        before = statistics.median(b for b, _ in results[kind])
        peak = statistics.median(p for _, p in results[kind])
        print(f"  {label:24s} before {before:5.1f}  peak {peak:5.1f}  (goal 30)")


if __name__ == "__main__":
    main()
