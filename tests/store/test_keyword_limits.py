"""A folder's keywords are bounded: at most MAX_KEYWORDS distinct ones, each at most
MAX_KEYWORD_LENGTH characters, whatever adds them (STORE, APPEND, COPY); and the parsed
index the process keeps is bounded by the memory it takes, not by its text alone."""

from __future__ import annotations

import tracemalloc

import pytest

from mailtalk.store import MailboxError, UserMailboxes
from mailtalk.store import uidlist as index_module
from mailtalk.store.flags import MAX_KEYWORD_LENGTH, MAX_KEYWORDS
from tests.store.mailboxes import MESSAGE, deliver, index_text, reopened

KEYWORDS = [f"k{n}" for n in range(MAX_KEYWORDS)]


def test_store_beyond_the_cap_is_limit_and_changes_nothing(alice: UserMailboxes) -> None:
    for _ in range(3):
        deliver(alice)
    inbox = alice.open("INBOX")
    inbox.set_flags([1], KEYWORDS[:200], "add")
    inbox.set_flags([2], KEYWORDS[200:], "add")  # the folder now holds exactly the cap
    before = index_text(alice.path)
    with pytest.raises(MailboxError) as caught:
        inbox.set_flags([1, 2, 3], ["\\Seen", "one-more"], "add")
    assert caught.value.code == "LIMIT"
    assert str(MAX_KEYWORDS) in caught.value.message
    assert index_text(alice.path) == before
    assert "\\Seen" not in reopened(alice).open("INBOX").message(3).flags
    # What the folder holds stays usable, on any message, and can be taken away.
    assert inbox.set_flags([3], ["k0", "k255", "\\Seen"], "add")[3] >= {"k0", "k255"}
    inbox.set_flags([1, 2, 3], KEYWORDS, "remove")
    assert inbox.set_flags([3], ["one-more"], "add")  # room again


def test_a_keyword_too_long_is_cannot(alice: UserMailboxes) -> None:
    deliver(alice)
    inbox = alice.open("INBOX")
    inbox.set_flags([1], ["x" * MAX_KEYWORD_LENGTH], "add")
    with pytest.raises(MailboxError) as caught:
        inbox.set_flags([1], ["x" * (MAX_KEYWORD_LENGTH + 1)], "add")
    assert caught.value.code == "CANNOT"


def test_append_and_copy_respect_the_cap(alice: UserMailboxes) -> None:
    alice.create("Full")
    full = alice.target("Full")
    full.append(MESSAGE, KEYWORDS)
    with pytest.raises(MailboxError) as caught:
        full.append(MESSAGE, ["new-one"])
    assert caught.value.code == "LIMIT"
    deliver(alice)
    inbox = alice.open("INBOX")
    inbox.set_flags([1], ["elsewhere"], "add")
    with pytest.raises(MailboxError) as caught:
        inbox.copy([1], "Full")
    assert caught.value.code == "LIMIT"
    folder = alice.path / ".Full"
    assert [m.uid for m in alice.open("Full").messages()] == [1]  # nothing half-copied
    assert list((folder / "tmp").iterdir()) == []
    inbox.set_flags([1], ["elsewhere"], "remove")
    inbox.set_flags([1], ["k7"], "add")
    assert inbox.copy([1], "Full") == [(1, 2)]  # keywords the folder has are fine


def _index(messages: int, keywords: list[str]) -> str:
    fields = "".join(f" K{k}" for k in keywords)
    lines = [f"mailtalk-uidlist 1 V1 N{messages + 1} R1"]
    lines += [f"{n} S100 W104 T1700000000{fields} :1700000000.M{n}P1Q1.host"
              for n in range(1, messages + 1)]
    return "\n".join(lines) + "\n"


def parsed_measured(text: str) -> tuple[index_module.Index, int]:
    """The index in ``text``, and the bytes its parse holds (tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parsed = index_module._parse_index_text(text)
        return parsed, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_messages_with_the_same_keywords_share_them_in_memory() -> None:
    text = _index(200, [f"k{n}" for n in range(2000)])  # an index from before the cap
    parsed, grown = parsed_measured(text)
    assert len({id(record.keywords) for record in parsed.records()}) == 1
    # 2.8 MB of text; one set per message held 40 MB before.
    assert grown < 2 * 1024 * 1024, grown


def test_the_index_cache_counts_what_a_parsed_index_takes() -> None:
    text = _index(1000, [])
    parsed, grown = parsed_measured(text)
    estimate = index_module._memory_estimate(parsed)
    # What the cache counts for an entry covers what parsing it took.
    assert estimate >= grown, (estimate, grown)
    cache = index_module._IndexCache(estimate * 3 // 2)
    cache.put(b"text", parsed)
    assert cache.get(b"text") is parsed
    other = _index(1001, [])
    cache.put(b"other", index_module._parse_index_text(other))
    assert cache.get(b"text") is None  # two would not fit: the older went
    assert cache.get(b"other") is not None
