"""The lessons' checks: predicates over journal events and the stores, evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtalk.practice.checks import Situation, evaluate, matches, problems

EVENTS: list[dict[str, Any]] = [
    {"event": "connect", "server": "mx.example.net", "proto": "smtp", "session": 1,
     "code": "220"},
    {"event": "command", "server": "mx.example.net", "proto": "smtp", "session": 1,
     "verb": "RCPT", "args": "TO:<bob@example.net>", "code": "503", "enhanced": "5.5.1",
     "tls": False, "user": None},
    {"event": "command", "server": "mx.example.net", "proto": "smtp", "session": 2,
     "verb": "MAIL", "args": "FROM:<a@isp.test>", "code": "250", "tls": False},
    {"event": "command", "server": "mx.example.net", "proto": "smtp", "session": 1,
     "verb": "RCPT", "args": "TO:<bob@example.net>", "code": "250", "tls": False},
    {"event": "command", "server": "mail.isp.test", "proto": "smtp", "session": 7,
     "verb": ".", "code": "250", "tls": True, "user": "alice"},
]


def situation(events: list[dict[str, Any]] = EVENTS, root: Path | None = None,
              step_start: int = 0) -> Situation:
    return Situation(events, lambda host: root / host if root else None, step_start)


def test_an_event_check_matches_kind_and_fields() -> None:
    assert evaluate({"event": "command", "verb": "RCPT", "code": "503"}, situation())
    assert not evaluate({"event": "command", "verb": "RCPT", "code": "550"}, situation())
    assert evaluate({"event": "command", "verb": "rcpt", "code": "5*"}, situation())
    assert evaluate({"event": "command", "verb": ".", "tls": True, "user": "alice",
                     "server": "mail.isp.test"}, situation())
    assert not evaluate({"event": "command", "verb": ".", "tls": False}, situation())
    assert evaluate({"event": "command", "code": ["421", "250"]}, situation())


def test_a_missing_field_is_no_match_and_null_matches_null() -> None:
    assert not evaluate({"event": "command", "verb": "MAIL", "user": "alice"}, situation())
    assert evaluate({"event": "command", "verb": "RCPT", "user": None}, situation())


def test_at_least_counts_and_the_step_window_hides_the_past() -> None:
    assert evaluate({"event": "command", "verb": "RCPT", "at_least": 2}, situation())
    assert not evaluate({"event": "command", "verb": "RCPT", "at_least": 3}, situation())
    later = situation(step_start=2)
    assert not evaluate({"event": "command", "code": "503"}, later)
    assert evaluate({"event": "command", "code": "503", "since": "lesson"}, later)


def test_then_keeps_order_and_same_session_keeps_one_connection() -> None:
    right = {"then": [{"event": "command", "verb": "RCPT", "code": "503"},
                      {"event": "command", "verb": "RCPT", "code": "250"}]}
    assert evaluate(right, situation())
    backwards = {"then": [{"event": "command", "verb": "RCPT", "code": "250"},
                          {"event": "command", "verb": "RCPT", "code": "503"}]}
    assert not evaluate(backwards, situation())
    # MAIL 250 came in session 2, the RCPT 250 after it in session 1
    across = {"then": [{"event": "command", "verb": "MAIL", "code": "250"},
                       {"event": "command", "verb": "RCPT", "code": "250"}]}
    assert evaluate(across, situation())
    assert not evaluate({**across, "same_session": True}, situation())


def test_all_any_not() -> None:
    yes = {"event": "connect"}
    no = {"event": "dns"}
    assert evaluate({"all": [yes, yes]}, situation())
    assert not evaluate({"all": [yes, no]}, situation())
    assert evaluate({"any": [no, yes]}, situation())
    assert evaluate({"not": no}, situation())


def write_message(root: Path, user: str, folder: str, name: str, subject: str) -> None:
    directory = root / "mx.example.net" / "mail" / user / "Maildir" / folder
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def test_maildir_checks_read_the_store(tmp_path: Path) -> None:
    write_message(tmp_path, "bob", "new", "1.M1.mx", "Hello Bob")
    write_message(tmp_path, "bob", "cur", "2.M2.mx:2,S", "Lunch?")
    where = situation([], tmp_path)
    assert evaluate({"maildir": "mx.example.net", "user": "bob"}, where)
    assert evaluate({"maildir": "mx.example.net", "user": "bob", "subject": "Hello*"}, where)
    assert not evaluate({"maildir": "mx.example.net", "user": "bob", "subject": "Bye"}, where)
    assert evaluate({"maildir": "mx.example.net", "user": "bob", "flags": "S"}, where)
    assert not evaluate({"maildir": "mx.example.net", "user": "bob", "flags": "S",
                         "folder": "new"}, where)
    assert evaluate({"maildir": "mx.example.net", "user": "bob", "count": 2}, where)
    assert not evaluate({"maildir": "mx.example.net", "user": "carol"}, where)
    assert not evaluate({"maildir": "nowhere.test", "user": "bob"}, situation([], None))


def test_file_checks_read_lines(tmp_path: Path) -> None:
    control = tmp_path / "mx.example.net" / "control"
    control.mkdir(parents=True)
    (control / "rcpthosts").write_text("example.net\n  example.org  \n")
    where = situation([], tmp_path)
    check = {"file": "mx.example.net", "path": "control/rcpthosts"}
    assert evaluate({**check, "contains": "example.org"}, where)
    assert not evaluate({**check, "contains": "example.com"}, where)
    assert evaluate({**check, "lacks": "example.com"}, where)
    assert not evaluate({"file": "mx.example.net", "path": "control/missing",
                         "contains": "x"}, where)


def test_file_checks_read_the_first_line(tmp_path: Path) -> None:
    spool = tmp_path / "mx.example.net" / "mail" / "dave" / "mbox"
    spool.parent.mkdir(parents=True)
    check = {"file": "mx.example.net", "path": "mail/dave/mbox", "first_line": "From *"}
    where = situation([], tmp_path)
    assert not evaluate(check, where)  # no file
    spool.write_bytes(b"")
    assert not evaluate(check, where)
    assert evaluate({**check, "first_line": ""}, where)  # an empty file's first line is ""
    spool.write_bytes(b"From: Carol <carol@stranger.test>\r\nFrom x Tue Dec  2 12:30:00 2025\n")
    assert not evaluate(check, where)
    assert evaluate({**check, "first_line": "From: *"}, where)  # line end left off
    spool.write_bytes(b"From carol Tue Dec  2 12:30:00 2025\n" + b"x" * 10_000_000)
    assert evaluate({**check, "first_line": "From * 2025"}, where)
    assert problems(check) == []


def test_problems_name_what_is_wrong() -> None:
    assert problems({"event": "command", "verb": "RCPT"}) == []
    assert problems({"then": [{"event": "connect"}, {"event": "close"}],
                     "same_session": True}) == []
    assert "needs exactly one of" in problems({"verb": "RCPT"})[0]
    assert "needs exactly one of" in problems({"event": "x", "maildir": "y"})[0]
    assert "then takes event checks only" in problems({"then": [{"maildir": "h",
                                                                 "user": "u"}]})[0]
    assert "maildir needs a user" in problems({"maildir": "h"})[0]
    assert "does not take" in problems({"maildir": "h", "user": "u", "sbject": "x"})[0]
    assert "a list of checks" in problems({"all": []})[0]
    assert "since is step or lesson" in problems({"event": "x", "since": "ever"})[0]
    assert "a table" in problems(["event"])[0]


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))


@given(st.dictionaries(st.text(max_size=6), _values, max_size=6),
       st.dictionaries(st.text(max_size=6), _values, max_size=4))
def test_matching_any_event_never_raises(event: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Journal lines come from servers under hostile clients: whatever their fields,
    a check answers True or False."""
    predicate = {**wanted, "event": "command"}
    result = matches(predicate, {**event, "event": "command"})
    assert isinstance(result, bool)


@pytest.mark.parametrize("kind", ["connect", "command", "dns"])
def test_an_event_check_with_no_fields_matches_its_kind(kind: str) -> None:
    assert matches({"event": kind}, {"event": kind, "server": "x"})
    assert not matches({"event": kind}, {"event": "other"})
