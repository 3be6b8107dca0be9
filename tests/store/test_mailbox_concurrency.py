"""The mailbox layer under concurrency: processes and threads sharing one Maildir.

Also the process-level guarantees: the POP3 maildrop lock dies with its holder,
and a 200 MB APPEND streams with bounded memory.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from mailtalk.store import Delivery, MailboxError, Maildir, MailStore

PROCESSES = 4
APPENDS_PER_PROCESS = 50
DELIVERIES_EVERY = 10  # each process also delivers as SMTP does, without any lock


def append_and_refresh(root: str, worker: int) -> tuple[dict[int, str], int, int]:
    """One process's session: append, refresh after each, and check what it sees.

    Returns {appended UID: its content tag}, the UIDVALIDITY seen throughout and
    how many messages it delivered through a plain Delivery.
    """
    mailboxes = MailStore(Path(root)).user_mailboxes("u")
    inbox = mailboxes.open("INBOX")  # read-write: also claims \Recent, moves new/ -> cur/
    uidvalidity = inbox.uidvalidity
    highest_seen = max((m.uid for m in inbox.messages()), default=0)
    appended: dict[int, str] = {}
    delivered = 0
    for number in range(APPENDS_PER_PROCESS):
        tag = f"worker {worker} message {number}"
        appended[inbox.append(f"Subject: {tag}\r\n\r\n{tag}\r\n".encode())] = tag
        if number % DELIVERIES_EVERY == 0:
            with Delivery([Maildir(mailboxes.path)]) as delivery:
                delivery.write(f"Subject: delivered by {worker}\n\n".encode())
                delivery.commit()
            delivered += 1
        changes = inbox.refresh()
        # IMAP's promise: a message that appears has a higher UID than any seen before.
        assert all(uid > highest_seen for uid in changes.new_uids), (changes, highest_seen)
        assert not changes.uidvalidity_changed
        highest_seen = max([highest_seen, *changes.new_uids])
    return appended, uidvalidity, delivered


def test_processes_appending_and_refreshing_never_duplicate_uids(tmp_path: Path) -> None:
    uidvalidity = MailStore(tmp_path).user_mailboxes("u").open("INBOX").uidvalidity
    with multiprocessing.get_context("fork").Pool(PROCESSES) as pool:
        results = pool.starmap(
            append_and_refresh, [(str(tmp_path), worker) for worker in range(PROCESSES)]
        )

    appended = [uid for uids, _, _ in results for uid in uids]
    assert len(appended) == len(set(appended)) == PROCESSES * APPENDS_PER_PROCESS
    assert {seen for _, seen, _ in results} == {uidvalidity}

    total = len(appended) + sum(delivered for _, _, delivered in results)
    inbox = MailStore(tmp_path).user_mailboxes("u").open("INBOX")  # as after a restart
    assert inbox.uidvalidity == uidvalidity
    assert [m.uid for m in inbox.messages()] == list(range(1, total + 1))
    assert inbox.uidnext == total + 1
    assert len({m.base for m in inbox.messages()}) == total
    for uids, _, _ in results:
        for uid, tag in uids.items():
            assert inbox.read_message(uid).endswith(f"{tag}\n".encode())
    assert not (tmp_path / "mail/u/Maildir/mailtalk-uidlist.corrupt").exists()
    assert list((tmp_path / "mail/u/Maildir/tmp").iterdir()) == []


def test_threads_appending_never_duplicate_uids(tmp_path: Path) -> None:
    mailboxes = MailStore(tmp_path).user_mailboxes("u")
    mailboxes.create("Sent")
    uids: list[int] = []
    lock = threading.Lock()

    def append_many() -> None:
        sent = mailboxes.open("Sent")  # one session per thread
        for _ in range(25):
            uid = sent.append(b"Subject: x\r\n\r\nx\r\n")
            sent.refresh()
            with lock:
                uids.append(uid)

    threads = [threading.Thread(target=append_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(uids) == list(range(1, 201))
    assert [m.uid for m in mailboxes.open("Sent").messages()] == list(range(1, 201))


def add_flag_to_each(root: str, flag: str) -> None:
    inbox = MailStore(Path(root)).user_mailboxes("u").open("INBOX")
    for message in inbox.messages():
        inbox.set_flags([message.uid], [flag], "add")


def test_concurrent_flag_changes_are_not_lost(tmp_path: Path) -> None:
    mailboxes = MailStore(tmp_path).user_mailboxes("u")
    inbox = mailboxes.open("INBOX")
    for _ in range(30):
        inbox.append(b"Subject: x\r\n\r\n")
    flags = ["\\Seen", "\\Flagged", "\\Answered", "Work", "$Label2"]
    with multiprocessing.get_context("fork").Pool(len(flags)) as pool:
        pool.starmap(add_flag_to_each, [(str(tmp_path), flag) for flag in flags])
    for message in MailStore(tmp_path).user_mailboxes("u").open("INBOX").messages():
        assert message.flags == set(flags), message


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mailtalk.store import MailStore
    lock = MailStore(Path(sys.argv[1])).lock_maildrop("u")
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_maildrop_lock_is_released_when_its_process_is_killed(tmp_path: Path) -> None:
    store = MailStore(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(MailboxError) as caught:
            store.lock_maildrop("u")
        assert caught.value.code == "INUSE"  # at once, not after waiting
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        with store.lock_maildrop("u") as lock:
            assert lock.held
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


BIG_APPEND = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from mailtalk.store import MailStore

    def memory_kib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])

    root, total = Path(sys.argv[1]), int(sys.argv[2])
    inbox = MailStore(root).user_mailboxes("u").target("INBOX")
    line = b"x" * 78 + b"\\r\\n"  # an IMAP literal: CRLF lines, stored with LF
    chunk = line * (64 * 1024 // len(line))
    rss_before = memory_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        peak_reset = True
    except OSError:
        peak_reset = False
    sent = 0
    with inbox.begin_append(["\\\\Seen"], expected_size=total) as appender:
        while sent + len(chunk) <= total:
            appender.write(chunk)
            sent += len(chunk)
        uid = appender.commit()
    print(json.dumps({
        "uid": uid, "sent": sent, "rss_before_kib": rss_before,
        "peak_kib": memory_kib("VmHWM"), "peak_reset": peak_reset,
    }))
    """
)
BIG_SIZE = 200 * 1024 * 1024
# Delivery holds a 64 KiB buffer and the converter one chunk; allow allocator noise.
ALLOWED_GROWTH_KIB = 8 * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_200_mb_append_streams_with_bounded_memory(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", BIG_APPEND, str(tmp_path), str(BIG_SIZE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    inbox = MailStore(tmp_path).user_mailboxes("u").open("INBOX")
    info = inbox.message(report["uid"])
    try:
        growth_kib = report["peak_kib"] - report["rss_before_kib"]
        print(
            f"200 MB APPEND: peak RSS {report['peak_kib']} KiB, {growth_kib:+} KiB over the "
            f"start (peak reset: {report['peak_reset']})"
        )
        assert growth_kib < ALLOWED_GROWTH_KIB
        assert info.rfc822_size == report["sent"]  # the literal's length, CRLFs and all
        assert info.size == report["sent"] * 79 // 80 == info.path.stat().st_size
        assert info.flags == {"\\Seen", "\\Recent"}
        with inbox.open_message(info.uid) as stream:
            assert stream.read(80) == b"x" * 78 + b"\nx"
        assert list((inbox.path / "tmp").iterdir()) == []
    finally:
        info.path.unlink()  # 200 MB is too much to leave in pytest's kept tmp dirs
