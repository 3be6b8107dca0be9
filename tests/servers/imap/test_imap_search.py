"""imap_search: SEARCH keys evaluated over messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailtalk.servers.imap.message import FetchMessage
from mailtalk.servers.imap.search import AndKey, FlagKey, HeaderKey, optimize, parse_search, search


def make(seq: int, uid: int, raw: bytes, flags: tuple[str, ...] = (), *, recent: bool = False,
         when: datetime | None = None) -> FetchMessage:
    return FetchMessage(raw, uid=uid, seq=seq, flags=flags, recent=recent,
                        internaldate=when or datetime(2020, 1, 10, 12, 0, tzinfo=UTC))


M1 = make(1, 10, b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: Lunch\n"
          b"Date: Fri, 10 Jan 2020 23:30:00 -0800\n\nLet's have lunch.\n",
          ("\\Seen", "\\Answered"), when=datetime(2020, 1, 9, 23, 0, tzinfo=UTC))
M2 = make(2, 11, b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\nTo: alice@example.com\n"
          b"Cc: carol@example.net\nSubject: =?utf-8?b?R3LDvMOfZQ==?=\nX-Spam: yes\n"
          b"Date: Sat, 11 Jan 2020 08:00:00 +0100\nMIME-Version: 1.0\n"
          b"Content-Type: multipart/alternative; boundary=b\n\n--b\n"
          b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
          b"U2Now7ZuZXIgVGFn\n--b\nContent-Type: text/html\n\n<b>hidden html</b>\n--b--\n",
          ("\\Flagged", "$Work"), recent=True)
M3 = make(3, 15, b"Subject: no from, no date\nBcc: secret@example.com\n\n" + b"x" * 500 + b"\n",
          ("\\Deleted", "\\Draft"), when=datetime(2020, 1, 11, 1, 0, tzinfo=UTC))
M4 = make(4, 20, b"From: dave@example.com\nSubject: Re: Lunch\nDate: garbage\n\nok\n",
          recent=True, when=datetime(2020, 1, 12, 0, 0, tzinfo=UTC))
MAILBOX = [M1, M2, M3, M4]


def run(text: str, literals: tuple[bytes, ...] = (), *, uid: bool = False) -> list[int]:
    return search(parse_search(text, literals), MAILBOX, uid=uid)


@pytest.mark.parametrize(("query", "expected"), [
    ("ALL", [1, 2, 3, 4]),
    ("SEEN", [1]), ("UNSEEN", [2, 3, 4]),
    ("ANSWERED", [1]), ("UNANSWERED", [2, 3, 4]),
    ("DELETED", [3]), ("UNDELETED", [1, 2, 4]),
    ("DRAFT", [3]), ("UNDRAFT", [1, 2, 4]),
    ("FLAGGED", [2]), ("UNFLAGGED", [1, 3, 4]),
    ("RECENT", [2, 4]), ("OLD", [1, 3]), ("NEW", [2, 4]),
    ("KEYWORD $work", [2]), ("UNKEYWORD $Work", [1, 3, 4]),
    ("2:3", [2, 3]), ("*", [4]), ("3:*", [3, 4]), ("4:2", [2, 3, 4]),
    ("UID 11,20", [2, 4]), ("UID 16:*", [4]), ("UID 1:10", [1]),
    ("FROM alice", [1]), ("FROM EXAMPLE.COM", [1, 4]), ("FROM jürgen", [2]),
    ("TO alice", [2]), ("CC carol", [2]), ("BCC secret", [3]),
    ("SUBJECT lunch", [1, 4]), ("SUBJECT grüße", [2]), ('SUBJECT ""', [1, 2, 3, 4]),
    ("HEADER X-Spam yes", [2]), ('HEADER x-spam ""', [2]), ("HEADER X-Spam no", []),
    ("BODY lunch", [1]), ("BODY schöner", [2]), ("BODY hidden", [2]), ("BODY Subject", []),
    ("TEXT lunch", [1, 4]), ("TEXT carol", [2]),
    ("SINCE 10-Jan-2020", [2, 3, 4]), ("BEFORE 10-Jan-2020", [1]), ("ON 11-Jan-2020", [3]),
    ("SENTON 10-Jan-2020", [1]), ("SENTSINCE 11-Jan-2020", [2]),
    ("SENTBEFORE 11-Jan-2020", [1]), ("SENTBEFORE 1-Jan-2030", [1, 2]),
    ("LARGER 409", [3]), ("LARGER 408", [2, 3]), ("SMALLER 130", [4]), ("SMALLER 100", [4]),
    ("NOT SEEN", [2, 3, 4]), ("NOT NOT SEEN", [1]),
    ("OR SEEN FLAGGED", [1, 2]), ("OR (SEEN ANSWERED) DELETED", [1, 3]),
    ("SEEN ANSWERED", [1]), ("(SEEN) (UNSEEN)", []), ("RECENT UNSEEN NOT 4", [2]),
    ("OR NOT SUBJECT lunch UID 10", [1, 2, 3]),
    ("CHARSET US-ASCII SUBJECT LUNCH", [1, 4]),
])
def test_truth_table(query: str, expected: list[int]) -> None:
    assert run(query) == expected


def test_literal_strings_and_uid_output() -> None:
    assert run("CHARSET UTF-8 SUBJECT {6}", ("grüß".encode(),)) == [2]
    assert run("SUBJECT lunch", uid=True) == [10, 20]
    assert search(parse_search("ALL"), []) == []


def test_star_follows_the_mailbox_not_the_subset() -> None:
    assert search(parse_search("*"), MAILBOX[:2], max_seq=4) == []
    assert search(parse_search("UID *"), MAILBOX, max_uid=20) == [4]


def test_optimize_puts_cheap_keys_first() -> None:
    key = optimize(parse_search("BODY x SUBJECT y (SEEN ALL)").key)
    assert isinstance(key, AndKey)
    assert key.keys == (FlagKey("\\Seen"), HeaderKey("Subject", "y"),
                        key.keys[2])


def test_lazy_evaluation() -> None:
    fresh = [make(1, 1, M1.raw, ("\\Seen",)), make(2, 2, M2.raw)]
    assert search(parse_search("UNSEEN BODY x"), fresh) == []
    assert "root" not in fresh[0].__dict__ and "header" not in fresh[0].__dict__
    assert "root" in fresh[1].__dict__
    assert search(parse_search("SUBJECT lunch"), fresh) == [1]
    assert "root" not in fresh[0].__dict__  # a header search reads no body


def test_internal_date_uses_its_own_zone() -> None:
    zone = timezone(timedelta(hours=-8))
    late = make(1, 1, b"\n", when=datetime(2020, 1, 10, 23, 0, tzinfo=zone))
    assert search(parse_search("ON 10-Jan-2020"), [late]) == [1]
