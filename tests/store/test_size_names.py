"""Dovecot's ``,S=<size>,W=<rfc822 size>`` in the names of delivered files, and the
index reading them back instead of the files."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailtalk.store import Delivery, Maildir, UserMailboxes
from mailtalk.store.queue import Envelope, Queue
from mailtalk.store.sizes import size_suffix, sizes_from_name
from tests.store.mailboxes import deliver, index_text, reopened


def crlf(data: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


@given(
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.text(st.sampled_from("0123456789.MPQhost-"), min_size=1, max_size=30),
)
def test_size_fields_read_back_from_any_base(size: int, extra: int, unique: str) -> None:
    base = unique + size_suffix(size, size + extra)
    assert sizes_from_name(base) == (size, size + extra)
    # Other fields may come around them (Dovecot writes ,S= and ,W= in either order).
    assert sizes_from_name(f"{unique},W={size + extra},X=1,S={size}") == (size, size + extra)


@given(st.text(max_size=40))
def test_any_name_parses_or_gives_none(name: str) -> None:
    sizes = sizes_from_name(name)
    assert sizes is None or (0 <= sizes[0] <= sizes[1] and ",S=" in name and ",W=" in name)


def test_names_without_both_fields_or_with_bad_ones_give_none() -> None:
    for base in ["1712345600.M1P2Q3.host", "1.M1.host,S=12", "1.M1.host,W=12",
                 "1.M1.host,S=12,W=x", "1.M1.host,S=²,W=3", "1.M1.host,S=13,W=12"]:  # fmt: skip
        assert sizes_from_name(base) is None, base


def test_a_delivered_file_is_named_with_its_two_sizes(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path / "Maildir")
    maildir.create()
    data = b"Subject: sizes\n\nline\r\nline\n"
    with Delivery([maildir]) as delivery:
        delivery.write(data[:10])
        delivery.write(data[10:])
        (path,) = delivery.commit()
    assert path.name.endswith(f",S={len(data)},W={len(crlf(data))}")
    assert sizes_from_name(path.name) == (path.stat().st_size, len(crlf(data)))


def test_no_sizes_for_an_unterminated_message_nor_in_the_queue(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path / "Maildir")
    maildir.create()
    queue = Queue(tmp_path / "queue")
    queue.create()
    envelope = Envelope("s@example.org", ["r@example.net"], "192.0.2.1", "helo")
    with Delivery([maildir]) as delivery:
        delivery.write(b"Subject: x\n\nno line end")
        (unterminated,) = delivery.commit()
    assert ",S=" not in unterminated.name
    with Delivery([maildir, queue.enqueue_target(envelope)]) as delivery:
        delivery.write(b"Subject: y\n\nended\n")
        in_maildir, in_queue = delivery.commit()
    assert ",S=" in in_maildir.name and ",S=" not in in_queue.name


def test_the_index_takes_the_sizes_from_the_name_without_reading_the_file(
    alice: UserMailboxes,
) -> None:
    deliver(alice, b"Subject: a\n\nbody\n")
    # A file whose name carries sizes that differ from its content: the index
    # believes the name, which proves it did not read the file.
    new = alice.path / "new"
    os.rename(next(new.iterdir()), new / "1712345600.M1P2Q3.host,S=1000,W=1100")
    # Dovecot's own names work too, as do names without sizes (measured).
    (new / "1712345601.M1P2Q4.host,S=5,W=6").write_bytes(b"x\n\ny\n")
    (new / "1712345602.M1P2Q5.host").write_bytes(b"a\nb\n")
    inbox = reopened(alice).open("INBOX")
    sizes = [(m.size, m.rfc822_size, m.unterminated) for m in inbox.messages()]
    assert sizes == [(1000, 1100, False), (5, 6, False), (4, 6, False)]
    assert " S1000 W1100 " in index_text(alice.path)


def test_sizes_from_names_match_the_measured_ones(alice: UserMailboxes) -> None:
    bodies = [b"Subject: %d\n\n" % n + b"line\n" * n + b"crlf\r\n" for n in range(5)]
    for body in bodies:
        deliver(alice, body)
    named = [(m.size, m.rfc822_size) for m in reopened(alice).open("INBOX").messages()]
    for path in (alice.path / "new").iterdir():
        os.rename(path, path.with_name(path.name.partition(",")[0]))  # sizes gone
    (alice.path / "mailtalk-uidlist").unlink()
    measured = [(m.size, m.rfc822_size) for m in reopened(alice).open("INBOX").messages()]
    assert named == measured == [(len(b), len(crlf(b))) for b in bodies]
