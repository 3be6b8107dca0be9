"""Tests for Maildir names, folders and delivery, on the real filesystem."""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.store import (
    CRLFToLF,
    Delivery,
    DeliveryStateError,
    Maildir,
    StoreError,
    StoreFullError,
    StoreLayout,
    escape_hostname,
    unique_name,
)
from mailtalk.store.maildir import WRITE_BUFFER_SIZE

NAME = re.compile(r"(?P<sec>\d+)\.M(?P<usec>\d+)P(?P<pid>\d+)Q(?P<n>\d+)\.(?P<host>.+)")


def make_maildirs(root: Path, *users: str) -> list[Maildir]:
    layout = StoreLayout(root)
    maildirs = [layout.maildir(user) for user in users]
    for maildir in maildirs:
        maildir.create()
    return maildirs


def tmp_files(*maildirs: Maildir) -> list[Path]:
    return [path for maildir in maildirs for path in maildir.tmp_dir.iterdir()]


def sample_message(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog; the message goes on.\n"
    return (b"Subject: sample\n\n" + line * (size // len(line) + 1))[:size]


# -- unique names --------------------------------------------------------------


def test_unique_names_differ_across_100k_calls_and_carry_pid_and_host() -> None:
    names = [unique_name("mx.example.org") for _ in range(100_000)]

    assert len(set(names)) == len(names)
    parts = [NAME.fullmatch(name) for name in names]
    assert all(parts)
    assert {match["pid"] for match in parts if match} == {str(os.getpid())}
    assert {match["host"] for match in parts if match} == {"mx.example.org"}
    # Many share a microsecond: the counter is what keeps them apart.
    counters = [int(match["n"]) for match in parts if match]
    assert counters == sorted(counters)


def test_unique_name_time_fields_are_now() -> None:
    before = time.time()
    match = NAME.fullmatch(unique_name("h"))
    after = time.time()

    assert match
    stamp = int(match["sec"]) + int(match["usec"]) / 1e6
    assert before - 0.001 <= stamp <= after + 0.001
    assert int(match["usec"]) < 1_000_000


def test_unique_name_defaults_to_this_hosts_name() -> None:
    match = NAME.fullmatch(unique_name())

    assert match
    assert match["host"] == escape_hostname(socket.gethostname())


def test_hostname_slash_and_colon_are_escaped_as_in_the_maildir_spec() -> None:
    name = unique_name("odd/host:name")

    assert name.endswith(".odd\\057host\\072name")
    assert "/" not in name
    assert ":" not in name


def test_unique_names_from_many_threads_differ() -> None:
    names: list[str] = []
    lock = threading.Lock()

    def make_names() -> None:
        mine = [unique_name("h") for _ in range(5_000)]
        with lock:
            names.extend(mine)

    threads = [threading.Thread(target=make_names) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(names)) == 40_000


def test_unique_names_from_another_process_carry_its_pid() -> None:
    script = "from mailtalk.store import unique_name; print(unique_name('h'))"
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    match = NAME.fullmatch(other.stdout.strip())

    assert match, other.stderr
    assert match["pid"] != str(os.getpid())


# -- layout and folders --------------------------------------------------------


def test_layout_puts_users_and_queue_under_the_root(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path)

    assert layout.maildir("alice").path == tmp_path / "mail" / "alice" / "Maildir"
    assert layout.queue.path == tmp_path / "queue"


@pytest.mark.parametrize("user", ["", ".", "..", "../etc", "a/b", "nul\0"])
def test_layout_refuses_user_names_that_are_not_plain_directory_names(
    tmp_path: Path, user: str
) -> None:
    with pytest.raises(ValueError, match="user name"):
        StoreLayout(tmp_path).maildir(user)


def test_create_makes_private_tmp_new_cur_and_is_idempotent(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path / "mail" / "alice" / "Maildir")
    maildir.create()
    (maildir.new_dir / "1.M1P1Q1.h").write_bytes(b"kept")
    maildir.create()

    for directory in (maildir.path, maildir.tmp_dir, maildir.new_dir, maildir.cur_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert maildir.new_messages() == [maildir.new_dir / "1.M1P1Q1.h"]


def test_listings_are_sorted_and_skip_dot_files(tmp_path: Path) -> None:
    (maildir,) = make_maildirs(tmp_path, "alice")
    for name in ["2.M0P1Q2.h", "1.M0P1Q1.h", ".editor-swap"]:
        (maildir.new_dir / name).write_bytes(b"x")
    (maildir.cur_dir / "1.M0P1Q0.h:2,S").write_bytes(b"x")

    assert [path.name for path in maildir.new_messages()] == ["1.M0P1Q1.h", "2.M0P1Q2.h"]
    assert [path.name for path in maildir.cur_messages()] == ["1.M0P1Q0.h:2,S"]


def test_a_maildir_folder_is_a_maildir_too(tmp_path: Path) -> None:
    # Maildir++ (IMAP folders, a later issue) nests ".Sent" inside the inbox.
    (inbox,) = make_maildirs(tmp_path, "alice")
    sent = Maildir(inbox.path / ".Sent")
    sent.create()
    with Delivery([sent]) as delivery:
        delivery.write(b"Subject: sent\n\nbody\n")
        delivery.commit()

    assert len(sent.new_messages()) == 1
    assert inbox.new_messages() == []


def test_remove_stale_tmp_removes_only_old_leftovers(tmp_path: Path) -> None:
    (maildir,) = make_maildirs(tmp_path, "alice")
    old, young = maildir.tmp_dir / "1.M1P1Q1.h", maildir.tmp_dir / "2.M2P2Q2.h"
    for path in (old, young):
        path.write_bytes(b"left by a crashed delivery")
    long_ago = time.time() - 37 * 3600  # the Maildir spec's limit is 36 hours
    os.utime(old, (long_ago, long_ago))

    assert maildir.remove_stale_tmp() == [old]
    assert tmp_files(maildir) == [young]


# -- delivery ------------------------------------------------------------------


def test_commit_puts_the_same_bytes_in_every_recipients_new(tmp_path: Path) -> None:
    maildirs = make_maildirs(tmp_path, "alice", "bob", "carol")
    message = sample_message(300_000)

    delivery = Delivery(maildirs, hostname="mx")
    for start in range(0, len(message), 1000):
        delivery.write(message[start : start + 1000])
    assert delivery.size == len(message)
    paths = delivery.commit()

    assert [path.parent for path in paths] == [maildir.new_dir for maildir in maildirs]
    assert len({path.name for path in paths}) == 3  # each its own unique name
    for maildir, path in zip(maildirs, paths, strict=True):
        assert maildir.new_messages() == [path]
        assert path.read_bytes() == message
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert NAME.fullmatch(path.name)
        assert path.name.endswith(".mx")
    assert tmp_files(*maildirs) == []


def test_nothing_is_in_new_until_commit(tmp_path: Path) -> None:
    (maildir,) = make_maildirs(tmp_path, "alice")
    with Delivery([maildir]) as delivery:
        delivery.write(sample_message(200_000))

        assert maildir.new_messages() == []
        (staging,) = tmp_files(maildir)
        assert stat.S_IMODE(staging.stat().st_mode) == 0o600
        delivery.commit()


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 3 * WRITE_BUFFER_SIZE), max_size=12))
def test_any_mix_of_small_and_large_writes_is_stored_exactly(sizes: list[int]) -> None:
    # Small writes are gathered in a buffer, large ones bypass it: order must hold.
    chunks = [bytes([index % 251]) * size for index, size in enumerate(sizes)]
    with tempfile.TemporaryDirectory() as root:
        (maildir,) = make_maildirs(Path(root), "alice")
        with Delivery([maildir]) as delivery:
            for chunk in chunks:
                delivery.write(chunk)
            (path,) = delivery.commit()

        assert path.read_bytes() == b"".join(chunks)
        assert delivery.size == sum(sizes)


def test_abort_removes_the_tmp_file_and_is_idempotent(tmp_path: Path) -> None:
    maildirs = make_maildirs(tmp_path, "alice", "bob")
    delivery = Delivery(maildirs)
    delivery.write(sample_message(100_000))

    delivery.abort()
    delivery.abort()

    assert tmp_files(*maildirs) == []
    assert [maildir.new_messages() for maildir in maildirs] == [[], []]
    with pytest.raises(DeliveryStateError):
        delivery.write(b"more")
    with pytest.raises(DeliveryStateError):
        delivery.commit()


def test_context_manager_aborts_when_the_block_raises(tmp_path: Path) -> None:
    (maildir,) = make_maildirs(tmp_path, "alice")

    with pytest.raises(ConnectionResetError), Delivery([maildir]) as delivery:
        delivery.write(b"Subject: half\n")
        raise ConnectionResetError("client went away mid-DATA")

    assert tmp_files(maildir) == []
    assert maildir.new_messages() == []


def test_context_manager_aborts_when_the_block_never_commits(tmp_path: Path) -> None:
    (maildir,) = make_maildirs(tmp_path, "alice")

    with Delivery([maildir]) as delivery:
        delivery.write(b"Subject: never committed\n")

    assert tmp_files(maildir) == []
    assert maildir.new_messages() == []


def test_committed_message_survives_abort_and_leaving_the_block(tmp_path: Path) -> None:
    (maildir,) = make_maildirs(tmp_path, "alice")

    with Delivery([maildir]) as delivery:
        delivery.write(b"Subject: kept\n")
        (path,) = delivery.commit()
        delivery.abort()

    assert maildir.new_messages() == [path]
    assert tmp_files(maildir) == []


def test_commit_twice_is_a_state_error_and_delivers_once(tmp_path: Path) -> None:
    (maildir,) = make_maildirs(tmp_path, "alice")
    delivery = Delivery([maildir])
    delivery.write(b"Subject: once\n")
    delivery.commit()

    with pytest.raises(DeliveryStateError, match="committed"):
        delivery.commit()
    with pytest.raises(DeliveryStateError):
        delivery.write(b"late")
    assert len(maildir.new_messages()) == 1


def test_a_delivery_needs_a_target() -> None:
    with pytest.raises(ValueError, match="at least one target"):
        Delivery([])


def test_delivering_to_a_maildir_never_created_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        Delivery([Maildir(tmp_path / "nobody" / "Maildir")])

    assert caught.value.errno == errno.ENOENT
    assert not isinstance(caught.value, StoreFullError)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("no such file or directory while creating")


# -- disk errors (simulated; test_disk_full.py fills a real filesystem) --------


def failing(error_number: int) -> Callable[..., int]:
    def fail(*args: object) -> int:
        raise OSError(error_number, os.strerror(error_number))

    return fail


@pytest.mark.parametrize(
    ("error_number", "error_type"),
    [(errno.ENOSPC, StoreFullError), (errno.EDQUOT, StoreFullError), (errno.EIO, StoreError)],
)
def test_write_errors_become_store_errors_after_cleanup(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error_number: int,
    error_type: type[StoreError],
) -> None:
    maildirs = make_maildirs(tmp_path, "alice", "bob")
    delivery = Delivery(maildirs)
    monkeypatch.setattr(os, "write", failing(error_number))

    with pytest.raises(error_type) as caught:
        delivery.write(b"x" * WRITE_BUFFER_SIZE)

    assert type(caught.value) is error_type
    assert caught.value.errno == error_number
    assert "\n" not in str(caught.value)
    assert "while writing the message" in str(caught.value)
    assert tmp_files(*maildirs) == []
    delivery.abort()  # still allowed, and a no-op
    with pytest.raises(DeliveryStateError):
        delivery.write(b"more")


def test_writing_out_early_changes_nothing_delivered(tmp_path: Path) -> None:
    maildirs = make_maildirs(tmp_path, "alice", "bob")
    delivery = Delivery(maildirs)
    delivery.write(b"Subject: early\n\n")
    delivery.start_writing_out()  # what a server's committer does before the fsyncs
    delivery.write(b"body\n")
    paths = delivery.commit()
    assert [path.read_bytes() for path in paths] == [b"Subject: early\n\nbody\n"] * 2
    assert all(path.name.endswith(",S=21,W=24") for path in paths), paths


def test_a_write_error_when_writing_out_early_is_a_store_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildirs = make_maildirs(tmp_path, "alice", "bob")
    delivery = Delivery(maildirs)
    delivery.write(b"Subject: x\n\nbody\n")
    monkeypatch.setattr(os, "write", failing(errno.ENOSPC))

    with pytest.raises(StoreFullError, match="while writing the message"):
        delivery.start_writing_out()

    assert tmp_files(*maildirs) == []
    with pytest.raises(DeliveryStateError):
        delivery.commit()


def test_fsync_failure_at_commit_is_a_store_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildirs = make_maildirs(tmp_path, "alice", "bob")
    delivery = Delivery(maildirs)
    delivery.write(sample_message(10_000))
    monkeypatch.setattr(os, "fsync", failing(errno.EIO))

    with pytest.raises(StoreError) as caught:
        delivery.commit()

    assert not isinstance(caught.value, StoreFullError)
    assert "while syncing the message to disk" in str(caught.value)
    assert tmp_files(*maildirs) == []
    assert [maildir.new_messages() for maildir in maildirs] == [[], []]
    delivery.abort()
    assert tmp_files(*maildirs) == []


def test_when_hard_links_fail_the_message_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As between filesystems (EXDEV); test_disk_full.py does it across real ones.
    maildirs = make_maildirs(tmp_path, "alice", "bob")
    monkeypatch.setattr(os, "link", failing(errno.EXDEV))
    message = sample_message(3 * 1024 * 1024 + 17)

    with Delivery(maildirs) as delivery:
        delivery.write(message)
        paths = delivery.commit()

    for path in paths:
        assert path.read_bytes() == message
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_nlink == 1
    assert tmp_files(*maildirs) == []


def test_running_out_of_space_while_copying_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildirs = make_maildirs(tmp_path, "alice", "bob")
    delivery = Delivery(maildirs)
    delivery.write(sample_message(2 * WRITE_BUFFER_SIZE))  # written before the disk "fills"
    monkeypatch.setattr(os, "link", failing(errno.EXDEV))
    monkeypatch.setattr(os, "write", failing(errno.ENOSPC))

    with pytest.raises(StoreFullError, match="while copying the message"):
        delivery.commit()

    assert [maildir.new_messages() for maildir in maildirs] == [[], []]
    assert tmp_files(*maildirs) == []


# -- CRLF to LF ----------------------------------------------------------------

crlf_text = st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b"\r\r\n", b"."])).map(b"".join)


@given(text=crlf_text | st.binary(), cuts=st.lists(st.integers(0, 200)))
def test_crlf_to_lf_gives_the_one_shot_result_however_the_text_is_split(
    text: bytes, cuts: list[int]
) -> None:
    bounds = [0, *sorted(cut for cut in cuts if cut <= len(text)), len(text)]
    converter = CRLFToLF()
    output = b"".join(converter.feed(text[a:b]) for a, b in itertools.pairwise(bounds))

    assert output + converter.finish() == text.replace(b"\r\n", b"\n")


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"line\r", b"\nnext\r\n"], b"line\nnext\n"),
        ([b"bare\rcr\r\n"], b"bare\rcr\n"),
        ([b"ends with cr\r"], b"ends with cr\r"),
        ([b"\r", b"", b"\n"], b"\n"),
        ([b"\r", b"\r", b"\n"], b"\r\n"),
    ],
)
def test_crlf_to_lf_examples(chunks: list[bytes], expected: bytes) -> None:
    converter = CRLFToLF()

    assert b"".join(map(converter.feed, chunks)) + converter.finish() == expected


def test_create_missing_makes_a_missing_maildir_and_takes_no_extra_names(
    tmp_path: Path,
) -> None:
    """The SMTP server does not create() the Maildir before each message: its delivery
    (create_missing) makes it when it is missing or was removed, and leaves nothing in
    tmp/. Without create_missing that is a StoreError (the test above)."""
    first, second = Maildir(tmp_path / "a" / "Maildir"), Maildir(tmp_path / "b" / "Maildir")
    for _ in range(2):
        with Delivery([first, second], create_missing=True) as delivery:
            delivery.write(b"Subject: made\n\nbody\n")
            paths = delivery.commit()
        assert [p.parent for p in paths] == [first.new_dir, second.new_dir]
        assert os.listdir(first.tmp_dir) == os.listdir(second.tmp_dir) == []
        for maildir in (first, second):
            shutil.rmtree(maildir.path)  # removed while the server runs: made again
