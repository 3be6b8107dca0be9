#!/usr/bin/env python3
"""What a POP3 or IMAP session's work costs in memory with and without the server's imports.

    python bench/lean_session_memory.py [--protocol pop3|imap|both] [--messages N]
                                        [--runs N] [--mailtalk-path DIR]

Issue 17's memory row (peak RSS serving 10,000 messages, goal 30 MiB) is not met by
``mailtalk serve`` (bench/README.md, "the fifth table"), and most of the gap is what a
process imports before any mailbox: asyncio with ``ssl``, uvloop, click, the servers'
modules. This measures how far a session served by a process of its own, without
them (as Dovecot hands each session to a process), would be from the row: in a fresh
Python per run, on a fresh copy of the size-named Maildir of bench/mailbox_servers.py
(same generator, same seed), the peak RSS (VmHWM, reset after the imports) of a
session's work, in two kinds of process:

- lean: imports only ``mailtalk.store`` and what the session's answers are made by:
  the POP3 core; or the IMAP core and the SELECT and FETCH handlers
  (``servers/imap/mailboxes.py``, ``selected.py``, which bring the FETCH renderer);
- serve's imports: asyncio, uvloop, click, ``mailtalk.servers.app`` and the
  protocol's server module (``servers/pop3.py``, ``servers/imap/server.py``) first.

The work is that of mailbox_servers.py's sessions:

- POP3: the store calls a session makes (the maildrop locked, INBOX opened cold,
  LIST's sizes, every message read as RETR reads it: small ones whole from the
  columns, larger ones in chunks), the messages written to /dev/null;
- IMAP: two sessions in one process, as mailbox_servers.py's IMAP peak covers them
  (a cold one on the never-indexed copy, then a warm one): each LOGIN's store work
  (the user's folders, the default ones made; no password is checked), ``SELECT
  INBOX`` and ``UID FETCH 1:*`` of the benchmark's items, answered by the server's own
  handlers (``mailboxes.select``, ``selected.fetch_messages``) through the IMAP core,
  the folder's refresh before FETCH's tagged OK included, with a stand-in for the
  session object (``Session`` below) whose transport is a file. Each answer is
  checked as mailbox_servers.py checks the servers' (EXISTS, the FETCH responses,
  their UIDs, sizes, flags and header fields).

Prints each run (IMAP: the peak after each step) and the medians. Not a server: it
holds no socket and runs no event loop, so it gives a floor for such a worker, not its
figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Run in a fresh interpreter:
# argv = [checkout, mail root, "lean"|"serve", server module, transcript, fetch command].
_SETUP = r"""
import re, sys

def status(key):
    text = open("/proc/self/status").read()
    return int(re.search(key + r":\s+(\d+)", text).group(1)) / 1024

figures = {"interpreter": status("VmRSS")}
checkout, root, kind, server_module, transcript, fetch = sys.argv[1:7]
sys.path.insert(0, checkout)
if kind == "serve":
    import asyncio, click, uvloop  # noqa: F401  (what `mailtalk serve` has loaded)
    import mailtalk.servers.app  # noqa: F401
    __import__(server_module)  # the session's code: loaded before its first login
from pathlib import Path
from mailtalk.store.users import MailStore
"""

POP3_SESSION = (
    _SETUP
    + r"""
import os
import mailtalk.protocols.pop3  # noqa: F401  (the core a session drives)

figures["before"] = status("VmRSS")
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
figures["peak"] = status("VmHWM")
figures["messages"] = len(sizes)
figures["read"] = read
import json
print(json.dumps(figures))
"""
)

IMAP_SESSION = (
    _SETUP
    + r"""
from mailtalk.protocols.common import Role
from mailtalk.protocols.imap import IMAPConnection
from mailtalk.protocols.imap_events import Tagged, Untagged
from mailtalk.servers.imap import mailboxes, selected


class Session:
    # What SELECT's and FETCH's handlers use of IMAPSession (servers/imap/session.py),
    # written to a file instead of a transport: the same core, the same bytes.
    closing = condstore = qresync = utf8 = False
    session_id = "lean"

    def __init__(self, store, out):
        self.out = out
        self.core = IMAPConnection(role=Role.SERVER)
        self.selected = None
        self.untagged("OK lean session ready")
        login = self.command(b"a1 LOGIN bench secret")
        # LOGIN's store work (imap/login.py, _decided); the password is nobody's here.
        self.store = store.user_mailboxes("bench")
        self.store.create_default_folders(mailboxes.SPECIAL_USE)
        self.tagged(login.tag, "OK", None, "Logged in")

    @property
    def box(self):
        return self.selected

    def deselect(self):
        self.selected = None

    def write(self, data):
        self.out.write(data)

    def untagged(self, text, literals=()):
        self.write(self.core.send(Untagged(text, literals)))

    def tagged(self, tag, status, code, text):
        if status != "OK":
            raise SystemExit(f"{tag} {status} [{code}] {text}")
        self.write(self.core.send(Tagged(tag, status, code, text)))

    def done(self, command, text, code=None):
        # IMAPSession.done: the selected folder refreshed, its changes announced (none
        # here: nothing else touches the copy), then the tagged OK.
        if self.selected.refresh():
            raise SystemExit("the folder changed under the session")
        self.tagged(command.tag, "OK", code, text)

    async def drain(self):
        pass  # a file takes every batch at once: the FETCH never waits

    def defer_tagged(self, work, tag=None):
        try:
            work.send(None)  # no event loop: nothing it awaits suspends
        except StopIteration:
            return
        raise SystemExit("a deferred answer waited")

    def command(self, line):
        self.core.receive_data(line + b"\r\n")
        return self.core.next_command()

    def run(self, line, handler):
        handler(self, self.command(line))


figures["before"] = status("VmRSS")
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # VmHWM back to the RSS now: the peak measured is the sessions'
store = MailStore(Path(root))
steps = figures["steps"] = {}
for temperature in ("cold", "warm"):
    with open(f"{transcript}-{temperature}", "wb", buffering=0) as out:
        session = Session(store, out)
        steps[f"LOGIN {temperature}"] = status("VmHWM")
        session.run(b"a2 SELECT INBOX", mailboxes.select)
        steps[f"SELECT {temperature}"] = status("VmHWM")
        session.run(b"a3 " + fetch.encode(), selected.fetch_messages)
        steps[f"FETCH {temperature}"] = status("VmHWM")
        session.deselect()  # LOGOUT: the session and its selected folder let go
        del session
# VmHWM is the larger of the RSS now and the kernel's high-water mark, which is not
# raised by every fall of the RSS: a step's reading can be above the last one.
figures["peak"] = max(status("VmHWM"), *steps.values())
figures["after"] = status("VmRSS")
import json
print(json.dumps(figures))
"""
)

SERVER_MODULE = {"pop3": "mailtalk.servers.pop3", "imap": "mailtalk.servers.imap.server"}
LABELS = {
    ("pop3", "lean"): "POP3, store + POP3 core",
    ("pop3", "serve"): "POP3, after serve's imports",
    ("imap", "lean"): "IMAP, store + IMAP handlers",
    ("imap", "serve"): "IMAP, after serve's imports",
}


def check_imap(transcript: Path, corpus: Any) -> str | None:
    """What is wrong with one IMAP session's answers (mailbox_servers.py's checks), or None."""
    from mailbox_servers import IMAPClient, parse_fetch

    class Transcript(IMAPClient):
        """The benchmark's IMAP response reader, on the bytes the session wrote."""

        def __init__(self, data: bytes) -> None:
            self.buf = bytearray(data)

        def fill(self) -> None:
            raise RuntimeError("the transcript ends early")

    reader = Transcript(transcript.read_bytes())
    reader.line()  # the greeting
    answers = [reader.responses(tag) for tag in (b"a1", b"a2", b"a3")]
    if any(status.split(b" ")[1] != b"OK" for _, status in answers):
        return f"not OK: {[status for _, status in answers]}"
    exists = [int(r.split()[1]) for r in answers[1][0] if r.endswith(b" EXISTS")]
    fetched = parse_fetch(answers[2][0])
    expected = {
        "exists": corpus.count,
        "fetch_responses": corpus.count,
        "distinct_uids": corpus.count,
        "rfc822_size_total": corpus.rfc822_bytes,
        "header_digest": corpus.header_digest,
        "flags": dict(sorted(corpus.flags.items())),
    }
    got = {**fetched, "exists": exists[-1] if exists else None}
    wrong = {key: got[key] for key, value in expected.items() if got[key] != value}
    return f"{wrong} {fetched['problems']}" if wrong or fetched["problems"] else None


def measure(
    args: argparse.Namespace, protocol: str, kind: str, scratch: Path, source: Path, corpus: Any
) -> dict[str, Any]:
    from mailbox_servers import FETCH_ITEMS, copy_maildir

    root = scratch / "root"
    shutil.rmtree(root, ignore_errors=True)  # the last run's folders, indexes and state
    copy_maildir(source, root / "mail" / "bench" / "Maildir")
    for stale in scratch.glob("transcript-*"):
        stale.unlink()
    code = POP3_SESSION if protocol == "pop3" else IMAP_SESSION
    done = subprocess.run(
        [sys.executable, "-c", code, args.mailtalk_path, str(root), kind,
         SERVER_MODULE[protocol], str(scratch / "transcript"),
         "UID FETCH 1:* " + FETCH_ITEMS.decode()],
        capture_output=True, text=True, env=args.env,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{protocol} {kind}: {done.stderr.strip()[-800:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    if protocol == "pop3":
        if figures["messages"] != args.messages or figures["read"] != corpus.stored_bytes:
            raise SystemExit(
                f"{kind}: read {figures['messages']} messages, {figures['read']} bytes"
            )
    else:
        for temperature in ("cold", "warm"):
            problem = check_imap(scratch / f"transcript-{temperature}", corpus)
            if problem is not None:
                raise SystemExit(f"imap {kind} {temperature}: {problem}")
    return figures


def show_run(run: int, runs: int, protocol: str, kind: str, figures: dict[str, Any]) -> None:
    line = (
        f"run {run}/{runs} {protocol} {kind:5s}: {figures['interpreter']:.2f} MiB interpreter, "
        f"{figures['before']:.2f} after imports, peak {figures['peak']:.2f}"
    )
    if "steps" in figures:
        steps = ", ".join(f"{step} {peak:.2f}" for step, peak in figures["steps"].items())
        line += f" ({steps}; {figures['after']:.2f} at the end)"
    print(line, flush=True)


def show_medians(args: argparse.Namespace, results: dict[tuple[str, str], list[Any]]) -> None:
    print(f"{args.messages} messages, median of {args.runs} runs (MiB; the row's goal: 30):")
    print(f"  {'':30s} {'interpreter':>11s} {'imports':>8s} {'peak':>6s} {'growth':>7s}")
    for (protocol, kind), runs in results.items():

        def median(key: str, runs: list[Any] = runs) -> float:
            return float(statistics.median(figures[key] for figures in runs))

        print(
            f"  {LABELS[protocol, kind]:30s} {median('interpreter'):11.1f} "
            f"{median('before'):8.1f} {median('peak'):6.1f} "
            f"{statistics.median(f['peak'] - f['before'] for f in runs):+7.1f}"
        )
        if protocol == "imap":
            steps = ", ".join(
                f"{step} {statistics.median(f['steps'][step] for f in runs):.1f}"
                for step in runs[0]["steps"]
            )
            print(f"    peak after each step: {steps}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=("pop3", "imap", "both"), default="both")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mailtalk-path", default=str(ROOT), help="the checkout to measure")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from mailbox_servers import generate_maildir

    args.env = dict(os.environ)
    args.env.pop("PYTHONDONTWRITEBYTECODE", None)  # as the servers run: byte-compiled
    # Compiled once before the runs, so no run's peak holds a compilation.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(args.mailtalk_path) / "mailtalk")],
        env=args.env, check=False, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    protocols = ("pop3", "imap") if args.protocol == "both" else (args.protocol,)
    with tempfile.TemporaryDirectory(prefix="lean-session-") as scratch:
        source = Path(scratch) / "source"
        corpus = generate_maildir(source, args.messages, args.seed, size_names=True)
        results: dict[tuple[str, str], list[Any]] = {
            (protocol, kind): [] for protocol in protocols for kind in ("lean", "serve")
        }
        for run in range(args.runs):
            order = ("lean", "serve") if run % 2 == 0 else ("serve", "lean")
            for protocol in protocols:
                for kind in order:
                    figures = measure(args, protocol, kind, Path(scratch), source, corpus)
                    results[protocol, kind].append(figures)
                    show_run(run + 1, args.runs, protocol, kind, figures)
    show_medians(args, results)


if __name__ == "__main__":
    main()
