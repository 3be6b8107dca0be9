"""Message files made ahead for a server's deliveries (``store/spares.py``): real
unnamed files (O_TMPFILE) in a real ``tmp/``'s filesystem, made by the spares' own
thread where creating is slow, taken by deliveries, named in ``tmp/`` only when the
delivery commits; a folder that cannot have them gives none (the delivery's own
create then says why). A slow disk is a threshold below every create's CPU time."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from mailtalk.store import Delivery, Maildir, spares
from mailtalk.store.spares import SpareFiles, spares_possible

pytestmark = pytest.mark.skipif(not spares_possible(), reason="no O_TMPFILE or /proc here")


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every create counts as slow (as behind many freshly freed inodes)."""
    monkeypatch.setattr(spares, "SLOW_CREATE_SECONDS", -1.0)


@pytest.fixture
def maildir(tmp_path: Path) -> Maildir:
    maildir = Maildir(tmp_path / "Maildir")
    maildir.create()
    return maildir


class Opens:
    """Which thread made which file in ``maildir``'s tmp/: named (O_CREAT) or a spare."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, maildir: Maildir) -> None:
        self.made: list[tuple[str, str]] = []  # (thread name, "named" or "spare")
        real_open = os.open
        tmp = os.fspath(maildir.tmp_dir)

        def recording_open(path: str | Path, flags: int, mode: int = 0o777) -> int:
            fd = real_open(path, flags, mode)
            if os.fspath(path).startswith(tmp):
                kind = "spare" if flags & os.O_TMPFILE == os.O_TMPFILE else "named"
                if kind == "spare" or flags & os.O_CREAT:
                    self.made.append((threading.current_thread().name, kind))
            return fd

        monkeypatch.setattr(os, "open", recording_open)

    def wait_for_spares(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while sum(kind == "spare" for _, kind in self.made) < count:
            assert time.monotonic() < deadline, self.made
            time.sleep(0.005)


def test_deliveries_take_files_made_ahead_by_another_thread(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch, slow_disk: None
) -> None:
    opens = Opens(monkeypatch, maildir)
    files = SpareFiles(per_folder=4)
    me = threading.current_thread().name
    try:
        with Delivery([maildir], spares=files) as first:  # none ready: its own, slowly
            first.write(b"Subject: first\n\nbody\n")
            first.commit()
        assert (me, "named") in opens.made
        opens.wait_for_spares(4)
        opens.made.clear()
        paths = []
        for number in range(3):
            with Delivery([maildir], spares=files) as delivery:
                delivery.write(b"Subject: %d\n\n" % number + b"x" * 100_000)  # over the buffer
                # Written, not committed: nothing of it shows in tmp/ yet.
                assert os.listdir(maildir.tmp_dir) == []
                (path,) = delivery.commit()
                paths.append(path)
        # Not one file made by the delivering thread: each was a spare.
        assert opens.made, opens.made
        assert all(made == ("mailtalk-spare-files", "spare") for made in opens.made), opens.made
        assert [p.read_bytes()[:12] for p in paths] == [b"Subject: %d\n\n" % n for n in range(3)]
        assert all(p.stat().st_size == 100_012 for p in paths)
        assert len(maildir.new_messages()) == 4
        assert os.listdir(maildir.tmp_dir) == []
    finally:
        files.close()
    assert files.take(maildir.tmp_dir) is None  # closed: nothing more is handed out
    assert os.listdir(maildir.tmp_dir) == []


def test_an_aborted_delivery_leaves_nothing_of_its_spare(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch, slow_disk: None
) -> None:
    opens = Opens(monkeypatch, maildir)
    files = SpareFiles(per_folder=2)
    try:
        files.made_own(maildir.tmp_dir, 1.0)  # a slow create: spares wanted
        opens.wait_for_spares(2)
        delivery = Delivery([maildir], spares=files)
        delivery.write(b"Subject: never\n\n" + b"x" * 100_000)
        delivery.abort()
        assert os.listdir(maildir.tmp_dir) == []
        assert maildir.new_messages() == []
    finally:
        files.close()


def test_a_folder_that_cannot_have_files_gets_no_spares(tmp_path: Path, slow_disk: None) -> None:
    maildir = Maildir(tmp_path / "Maildir")
    maildir.path.mkdir()
    (maildir.path / "tmp").write_bytes(b"")  # tmp/ is a file: no file can be made in it
    files = SpareFiles(per_folder=2)
    try:
        files.made_own(maildir.tmp_dir, 1.0)
        time.sleep(0.05)
        assert files.take(maildir.tmp_dir) is None
    finally:
        files.close()


def test_a_forked_child_does_not_use_its_parents_spares(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch, slow_disk: None
) -> None:
    opens = Opens(monkeypatch, maildir)
    files = SpareFiles(per_folder=2)
    try:
        files.made_own(maildir.tmp_dir, 1.0)
        opens.wait_for_spares(2)
        pid = os.fork()
        if pid == 0:  # the child: none of the parent's spares is handed out
            os._exit(0 if files.take(maildir.tmp_dir) is None else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        spare = files.take(maildir.tmp_dir)
        assert spare is not None  # the parent's are still there
        os.close(spare)
    finally:
        files.close()


def test_where_creating_is_fast_sessions_make_their_own_files(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A threshold of 10 s: every real create here is fast, and the costs said to
    # made_own() decide (a running average, the latest weighing a quarter).
    opens = Opens(monkeypatch, maildir)
    files = SpareFiles(per_folder=4)
    me = threading.current_thread().name
    try:
        monkeypatch.setattr(spares, "SLOW_CREATE_SECONDS", 10.0)
        for number in range(5):
            with Delivery([maildir], spares=files) as delivery:
                delivery.write(b"Subject: %d\n\n" % number)
                delivery.commit()
        assert opens.made == [(me, "named")] * 5  # no thread, no spare
        # One slow create among fast ones: the folder's average (5 s) is not slow.
        files.made_own(maildir.tmp_dir, 20.0)
        time.sleep(0.05)
        assert "spare" not in [kind for _, kind in opens.made]
        # Another: the average is (15 s); the thread's own creates, fast, bring it down
        # (11.25 s, then 8.4 s): it stops after two spares.
        files.made_own(maildir.tmp_dir, 45.0)
        opens.wait_for_spares(2)
        time.sleep(0.05)
        assert [kind for _, kind in opens.made].count("spare") == 2
    finally:
        files.close()


def test_a_spare_delivered_to_each_target_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_disk: None
) -> None:
    # LMTP's commit_each: the spare is named in the first target's tmp/, then linked
    # into each target.
    first, second = Maildir(tmp_path / "a"), Maildir(tmp_path / "b")
    first.create()
    second.create()
    opens = Opens(monkeypatch, first)
    files = SpareFiles(per_folder=2)
    try:
        files.made_own(first.tmp_dir, 1.0)
        opens.wait_for_spares(1)
        delivery = Delivery([first, second], spares=files)
        delivery.write(b"Subject: both\n\nbody\n")
        outcomes = delivery.commit_each(lambda index, size: contextlib.nullcontext())
        assert all(isinstance(path, Path) for path in outcomes), outcomes
        assert [Path(path).read_bytes() for path in outcomes] == [b"Subject: both\n\nbody\n"] * 2
        assert os.listdir(first.tmp_dir) == os.listdir(second.tmp_dir) == []
    finally:
        files.close()
