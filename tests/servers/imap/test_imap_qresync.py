"""QRESYNC (RFC 7162 3.2) on ``mailtalk serve --imap``, over real sockets: VANISHED for
EXPUNGE and MOVE once enabled, SELECT (QRESYNC ...) with known UIDs and across a
restart; and the QRESYNC and VANISHED parsers, by Hypothesis. The comparison with
Dovecot is tests/interop/test_imap_qresync.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtalk.servers.api import run_servers
from mailtalk.servers.imap.message_args import parse_fetch
from mailtalk.servers.imap.qresync import parse_qresync
from mailtalk.servers.imap.tokens import IMAPSyntaxError, tokenize
from tests.servers.imap.test_imap_condstore import command, number_in
from tests.servers.imap.test_imap_server import USERS, deliver, raw_login


def test_vanished_for_expunge_and_move_and_resync_across_a_restart(tmp_path: Path) -> None:
    with run_servers(tmp_path, smtp=0, imap=0, users=USERS) as running:
        for n in range(6):
            deliver(running, f"m{n}")
        raw = raw_login(running.port("imap"))
        assert command(raw, "e", "ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC\r\n"
        lines = command(raw, "s", "SELECT INBOX")
        uidvalidity = number_in(lines, rb"\[UIDVALIDITY (\d+)\]")
        start = number_in(lines, rb"\[HIGHESTMODSEQ (\d+)\]")
        command(raw, "d", "UID STORE 2,3 +FLAGS.SILENT (\\Deleted)")
        lines = command(raw, "x", "EXPUNGE")
        assert lines[0] == b"* VANISHED 2:3\r\n" and lines[-1].startswith(b"x OK"), lines
        lines = command(raw, "m", "UID MOVE 5 Archive")
        assert b"* VANISHED 5\r\n" in lines and not any(b"EXPUNGE" in x for x in lines[:-1])
        # A session without QRESYNC still gets EXPUNGE.
        plain = raw_login(running.port("imap"))
        command(plain, "s", "SELECT INBOX")
        command(plain, "d", "UID STORE 6 +FLAGS.SILENT (\\Deleted)")
        assert command(plain, "x", "EXPUNGE")[0] == b"* 3 EXPUNGE\r\n"
        assert command(raw, "n", "NOOP")[0] == b"* VANISHED 6\r\n"
    with run_servers(tmp_path, smtp=0, imap=0, users=USERS) as running:
        raw = raw_login(running.port("imap"))
        command(raw, "e", "ENABLE QRESYNC")
        lines = command(raw, "s", f"SELECT INBOX (QRESYNC ({uidvalidity} {start} 1:4))")
        assert b"* VANISHED (EARLIER) 2:3\r\n" in lines, lines  # 5 and 6: not known
        assert lines[-1].startswith(b"s OK [READ-WRITE]")
        lines = command(raw, "f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {start} VANISHED)")
        assert lines[0] == b"* VANISHED (EARLIER) 2:3,5:6\r\n", lines
        assert lines[-1].startswith(b"f OK")
        # RFC 7162 3.2.11: selecting another mailbox says the first one is closed.
        lines = command(raw, "a", "EXAMINE Archive")
        assert lines[0] == b"* OK [CLOSED] Previous mailbox closed.\r\n", lines


@pytest.mark.parametrize("text", [
    "INBOX (QRESYNC (0 1))",  # UIDVALIDITY 0
    "INBOX (QRESYNC (1))",
    "INBOX (QRESYNC (1 0))",  # MODSEQ 0
    "INBOX (QRESYNC (1 x))",
    "INBOX (QRESYNC 1)",
])
def test_bad_qresync_parameters(tmp_path: Path, text: str) -> None:
    with run_servers(tmp_path, imap=0, users=USERS) as running:
        raw = raw_login(running.port("imap"))
        command(raw, "e", "ENABLE QRESYNC")
        assert command(raw, "s", f"SELECT {text}")[-1].startswith(b"s BAD"), text


def test_fetch_vanished_modifier_parses_in_either_order() -> None:
    for modifiers in ("(CHANGEDSINCE 7 VANISHED)", "(VANISHED CHANGEDSINCE 7)"):
        request = parse_fetch(f"1:* (FLAGS) {modifiers}")
        assert (request.changed_since, request.vanished) == (7, True)
    assert parse_fetch("1:* (FLAGS) (CHANGEDSINCE 7)").vanished is False
    for bad in ("(VANISHED)", "(CHANGEDSINCE 7 VANISHED VANISHED)", "(CHANGEDSINCE 7 GONE)"):
        with pytest.raises(IMAPSyntaxError):
            parse_fetch(f"1:* (FLAGS) {bad}")


WORDS = st.sampled_from(["1", "0", "7", "4294967296", "1:5", "*", "x", "(", ")", " ", "(1 2)"])


@given(st.lists(WORDS, max_size=8).map("".join))
def test_qresync_parser_refuses_cleanly(text: str) -> None:
    try:
        values = tokenize(f"({text})")
    except IMAPSyntaxError:
        return
    try:
        parameter = parse_qresync(values[0])
    except IMAPSyntaxError:
        return
    assert 0 < parameter.uidvalidity < 2**32 and parameter.modseq > 0


@given(st.lists(st.sampled_from(["CHANGEDSINCE", "VANISHED", "7", "0", "x", " "]), max_size=5))
def test_fetch_modifier_parser_refuses_cleanly(words: list[str]) -> None:
    try:
        request = parse_fetch(f"1 (FLAGS) ({' '.join(words)})")
    except IMAPSyntaxError:
        return
    assert request.changed_since is not None and request.changed_since > 0
