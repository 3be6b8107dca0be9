"""A message's size as stored (LF) and as RFC822.SIZE (CRLF), however it is read."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailtalk.store import MailStore, RFC822SizeCounter
from tests.store.mailboxes import deliver


def crlf(data: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


@given(st.binary(max_size=200).map(lambda b: bytes(b"\r\nx"[c % 3] for c in b)))
def test_rfc822_size_is_the_size_with_crlf_line_endings(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        mailboxes = MailStore(Path(root)).user_mailboxes("u")
        deliver(mailboxes, data)
        (info,) = mailboxes.open("INBOX").messages()
        bare_lfs = len(re.findall(rb"(?<!\r)\n", data))
        assert info.size == len(data)
        assert info.rfc822_size == len(data) + bare_lfs == len(crlf(data))


@given(st.binary(max_size=300).map(lambda b: bytes(b"\r\nx"[c % 3] for c in b)), st.data())
def test_rfc822_size_counter_does_not_care_where_chunks_split(
    data: bytes, draw: st.DataObject
) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=10)))
    counter = RFC822SizeCounter()
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        counter.feed(data[start:end])
    assert (counter.size, counter.rfc822_size) == (len(data), len(crlf(data)))
