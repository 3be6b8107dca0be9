"""SORT and THREAD's pure parts (RFC 5256): base subject extraction with the RFC's
rules one by one, sort criteria, and thread trees, deep ones included. (Against
Dovecot on the same messages: tests/interop/test_imap_sort_thread_condstore.py.)"""

from __future__ import annotations

import pytest

from mailtalk.servers.imap.sort import (
    SortCriterion,
    SortMessage,
    base_subject,
    format_threads,
    parse_sort_criteria,
    sort_messages,
    thread_orderedsubject,
    thread_references,
)
from mailtalk.servers.imap.tokens import IMAPSyntaxError, tokenize


@pytest.mark.parametrize(("subject", "base"), [
    # (1) tabs, folding and runs of spaces become one space
    ("hello\t  world", "hello world"),
    ("hello\r\n world", "hello world"),
    # (2) trailers: "(fwd)" and white space, repeatedly
    ("hello (fwd)", "hello"),
    ("hello (FWD) (fwd)  ", "hello"),
    ("hello(fwd)", "hello"),
    # (3) leaders: subj-refwd ("re", "fw", "fwd", with blobs), white space
    ("Re: hello", "hello"),
    ("RE: re: Re:hello", "hello"),
    ("Fw: hello", "hello"),
    ("FWD: hello", "hello"),
    ("Re [2]: hello", "hello"),
    ("[list] Re: hello", "hello"),
    ("[a] [b] re[c]: hello", "hello"),
    ("Re : hello", "hello"),
    ("   hello", "hello"),
    # (4) a leading blob goes only if something is left after it
    ("[PATCH] fix", "fix"),
    ("[PATCH 1/2] [net] fix", "fix"),
    ("[only a blob]", "[only a blob]"),
    ("[a][b]", "[b]"),
    # (5) (3) and (4) repeated
    ("[list] Re: [list] Fwd: hello", "hello"),
    # (6) [fwd: ...] around the whole, then again from (2)
    ("[fwd: hello]", "hello"),
    ("[Fwd: Re: hello (fwd)]", "hello"),
    ("Re: [fwd: [fwd: hello]]", "hello"),
    ("[fwd: hello] tail", "tail"),  # a blob like any other, by (4)
    # not leaders: no colon, or text before "re"
    ("Regarding the plan", "Regarding the plan"),
    ("Re hello", "Re hello"),
    ("More: hello", "More: hello"),
    # nothing at all
    ("", ""),
    ("Re: ", ""),
])
def test_base_subject(subject: str, base: str) -> None:
    assert base_subject(subject) == base


def message(number: int, subject: str = "", date: str | None = None, *, size: int = 0,
            arrived: float = 0.0, message_id: str = "", references: str = "",
            from_: str = "") -> SortMessage:
    return SortMessage(number=number, seq=number, size=size, internaldate=arrived,
                       subject=subject, date=date, from_=from_, message_id=message_id,
                       references=references)


def test_sort_criteria_parse_and_refuse() -> None:
    assert parse_sort_criteria(tokenize("(REVERSE date subject)")[0]) == [
        SortCriterion("DATE", True), SortCriterion("SUBJECT")]
    for bad in ("()", "(REVERSE)", "(DATE REVERSE)", "(REVERSE REVERSE DATE)", "(X)", "DATE"):
        with pytest.raises(IMAPSyntaxError):
            parse_sort_criteria(tokenize(bad)[0])


def test_sort_ties_keep_mailbox_order_even_reversed() -> None:
    messages = [message(1, size=5), message(2, size=3), message(3, size=5), message(4, size=3)]
    assert sort_messages(messages, [SortCriterion("SIZE")]) == [2, 4, 1, 3]
    assert sort_messages(messages, [SortCriterion("SIZE", True)]) == [1, 3, 2, 4]


def test_sort_date_falls_back_on_internaldate_and_uses_utc() -> None:
    messages = [
        message(1, date="Mon, 1 Jan 2024 10:00:00 +0000"),
        message(2, date="Mon, 1 Jan 2024 10:30:00 +0100"),  # 09:30 UTC
        message(3, date="garbage", arrived=0.0),  # 1970: first
        message(4, from_="Zed <a@x>"),
    ]
    assert sort_messages(messages, [SortCriterion("DATE")]) == [3, 4, 2, 1]
    assert sort_messages(messages, [SortCriterion("FROM")]) == [1, 2, 3, 4]


def test_orderedsubject_threads() -> None:
    messages = [
        message(1, "hello", "Mon, 1 Jan 2024 10:00:00 +0000"),
        message(2, "Re: other", "Mon, 1 Jan 2024 09:00:00 +0000"),
        message(3, "Re: hello", "Mon, 1 Jan 2024 11:00:00 +0000"),
        message(4, "RE: HELLO", "Mon, 1 Jan 2024 12:00:00 +0000"),
    ]
    assert format_threads(thread_orderedsubject(messages)) == "(2)(1 (3)(4))"


def test_references_threads_with_a_missing_parent_and_a_subject_join() -> None:
    messages = [
        message(1, "a", "Mon, 1 Jan 2024 10:00:00 +0000", message_id="<1@x>"),
        message(2, "Re: a", "Mon, 1 Jan 2024 11:00:00 +0000", message_id="<2@x>",
                references="<1@x>"),
        message(3, "Re: b", "Mon, 1 Jan 2024 12:00:00 +0000", message_id="<3@x>",
                references="<gone@x>"),
        message(4, "Re: b", "Mon, 1 Jan 2024 13:00:00 +0000", message_id="<4@x>",
                references="<gone@x>"),
        message(5, "Re: a", "Mon, 1 Jan 2024 14:00:00 +0000", message_id="<5@x>"),
    ]
    # 3 and 4 share a missing parent: a dummy at the top; 5 joins 1 by its subject.
    assert format_threads(thread_references(messages)) == "(1 (2)(5))((3)(4))"


def test_a_reply_chain_thousands_deep_threads_without_recursion() -> None:
    depth = 5000
    messages = [message(1, "x", message_id="<0@x>")] + [
        message(n + 1, "Re: x", message_id=f"<{n}@x>", references=f"<{n - 1}@x>",
                arrived=float(n))
        for n in range(1, depth)
    ]
    assert format_threads(thread_references(messages)) == (
        "(" + " ".join(str(n) for n in range(1, depth + 1)) + ")")
    # And a loop in the References does not hang or lose a message.
    looped = [message(1, "x", message_id="<a@x>", references="<b@x>"),
              message(2, "x", message_id="<b@x>", references="<a@x>")]
    threads = format_threads(thread_references(looped))
    assert sorted(threads.replace("(", " ").replace(")", " ").split()) == ["1", "2"]
