"""CONDSTORE (RFC 7162) on ``mailtalk serve --imap``, over real sockets: HIGHESTMODSEQ in
SELECT and STATUS, FETCH MODSEQ and CHANGEDSINCE, STORE UNCHANGEDSINCE with [MODIFIED],
SEARCH MODSEQ, MODSEQs kept across a restart; and the modifier parsers, by Hypothesis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtalk.servers.api import run_servers
from mailtalk.servers.imap.message_args import MAX_MODSEQ, parse_fetch, parse_store
from mailtalk.servers.imap.search import ModSeqKey, parse_search
from mailtalk.servers.imap.tokens import IMAPSyntaxError
from tests.servers.imap.test_imap_server import USERS, Raw, deliver, raw_login


def command(raw: Raw, tag: str, text: str) -> list[bytes]:
    raw.send(f"{tag} {text}\r\n".encode())
    return raw.until_tagged(tag.encode())


def number_in(lines: list[bytes], pattern: bytes) -> int:
    for line in lines:
        match = re.search(pattern, line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"{pattern!r} not in {lines!r}")


def test_condstore_end_to_end_and_across_a_restart(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS) as running:
        for n in range(3):
            deliver(running, f"m{n}")
        raw = raw_login(running.port("imap"))
        assert b" CONDSTORE" in command(raw, "c", "CAPABILITY")[0]
        lines = command(raw, "s", "SELECT INBOX (CONDSTORE)")
        assert lines[-1].startswith(b"s OK")
        highest = number_in(lines, rb"\[HIGHESTMODSEQ (\d+)\]")
        lines = command(raw, "f", "FETCH 1:* (UID MODSEQ)")
        modseqs = [number_in([line], rb"MODSEQ \((\d+)\)") for line in lines[:-1]]
        assert len(modseqs) == 3 and max(modseqs) == highest

        # Another session changes message 2: only it is in CHANGEDSINCE highest.
        other = raw_login(running.port("imap"))
        command(other, "s", "SELECT INBOX")
        assert command(other, "t", "STORE 2 +FLAGS (\\Flagged)")[-1].startswith(b"t OK")
        lines = command(raw, "n", "NOOP")  # RFC 7162 3.1: the update carries MODSEQ
        assert any(re.match(rb"\* 2 FETCH \(FLAGS \(\\Flagged \\Recent\) UID 2 MODSEQ \(%d\)"
                            % (highest + 1), line) for line in lines), lines
        lines = command(raw, "f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
        assert [line for line in lines if b" FETCH " in line] == [
            f"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ ({highest + 1}))\r\n".encode()
        ]
        # UNCHANGEDSINCE the old value: message 2 changed since, so it is MODIFIED.
        lines = command(raw, "u", f"STORE 1:3 (UNCHANGEDSINCE {highest}) +FLAGS.SILENT (\\Seen)")
        assert lines[-1].startswith(b"u OK [MODIFIED 2]"), lines
        silent = [line for line in lines if b" FETCH " in line]
        assert [line.split(b" ")[1] for line in silent] == [b"1", b"3"]
        assert all(b"FLAGS" not in line and b"MODSEQ (" in line for line in silent)
        lines = command(raw, "s2", f"SEARCH MODSEQ {highest + 1}")
        assert lines[0] == f"* SEARCH 1 2 3 (MODSEQ {highest + 3})\r\n".encode()
        lines = command(raw, "s3", 'SEARCH MODSEQ "/flags/\\\\Seen" all 99999')
        assert lines[0] == b"* SEARCH\r\n"
        command(raw, "c", "CREATE Other")  # STATUS of a mailbox not selected: fresh from disk
        status = command(raw, "st", "STATUS INBOX (HIGHESTMODSEQ MESSAGES)")
        assert status[0].endswith(f" (HIGHESTMODSEQ {highest + 3} MESSAGES 3)\r\n".encode())
        # An expunge raises HIGHESTMODSEQ too.
        command(other, "d", "STORE 3 +FLAGS.SILENT (\\Deleted)")
        command(other, "e", "EXPUNGE")
        raw.close()
        other.close()
    with run_servers(tmp_path, imap=0, users=USERS) as running:
        raw = raw_login(running.port("imap"))
        lines = command(raw, "s", "EXAMINE INBOX")
        assert number_in(lines, rb"\[HIGHESTMODSEQ (\d+)\]") == highest + 5
        lines = command(raw, "f", "FETCH 1:* MODSEQ")
        assert [line for line in lines if b"FETCH" in line] == [
            f"* 1 FETCH (MODSEQ ({highest + 2}))\r\n".encode(),
            f"* 2 FETCH (MODSEQ ({highest + 1}))\r\n".encode(),
        ]
        raw.close()


def test_enable_condstore_and_bad_modifiers(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS) as running:
        deliver(running)
        raw = raw_login(running.port("imap"))
        assert command(raw, "e", "ENABLE CONDSTORE")[0] == b"* ENABLED CONDSTORE\r\n"
        command(raw, "s", "SELECT INBOX")
        lines = command(raw, "t", "STORE 1 +FLAGS (\\Seen)")
        assert re.match(rb"\* 1 FETCH \(UID 1 FLAGS \(\\Recent \\Seen\) MODSEQ \(3\)\)", lines[0])
        assert command(raw, "b", "FETCH 1 FLAGS (CHANGEDSINCE 0)")[-1].startswith(b"b BAD")
        assert command(raw, "b", "FETCH 1 FLAGS (CHANGEDSINCE x)")[-1].startswith(b"b BAD")
        assert command(raw, "b", "STORE 1 (UNCHANGEDSINCE) FLAGS ()")[-1].startswith(b"b BAD")
        # UNCHANGEDSINCE 0 fails for every message (all have a MODSEQ >= 1).
        assert command(raw, "z", "STORE 1 (UNCHANGEDSINCE 0) FLAGS ()")[-1].startswith(
            b"z OK [MODIFIED 1]"
        )
        raw.close()


# -- the parsers -------------------------------------------------------------------

MODSEQS = st.integers(min_value=0, max_value=2**64)


@given(MODSEQS, st.sampled_from(["CHANGEDSINCE", "changedsince", "ChangedSince"]))
def test_changedsince_parses_exactly_the_valid_numbers(value: int, word: str) -> None:
    args = f"1:* (FLAGS) ({word} {value})"
    if 1 <= value <= MAX_MODSEQ:
        request = parse_fetch(args)
        assert request.changed_since == value
        assert [item.name for item in request.items] == ["FLAGS", "MODSEQ"]
    else:
        with pytest.raises(IMAPSyntaxError):
            parse_fetch(args)


@given(MODSEQS, st.booleans())
def test_unchangedsince_parses_exactly_the_valid_numbers(value: int, silent: bool) -> None:
    item = "+FLAGS.SILENT" if silent else "+FLAGS"
    args = f"1,3 (UNCHANGEDSINCE {value}) {item} (\\Seen $x)"
    if value <= MAX_MODSEQ:
        request = parse_store(args)
        assert (request.unchanged_since, request.silent, request.flags) == (
            value, silent, ("\\Seen", "$x"))
    else:
        with pytest.raises(IMAPSyntaxError):
            parse_store(args)


@given(st.text(alphabet="0123456789 ()-+xCHANGEDSINCEUN", max_size=30))
def test_modifier_garbage_is_a_syntax_error_or_a_valid_number(text: str) -> None:
    for parse, args in ((parse_fetch, f"1 FLAGS {text}"), (parse_store, f"1 {text} FLAGS ()")):
        try:
            request = parse(args)
        except IMAPSyntaxError:
            continue
        value = getattr(request, "changed_since", None) or getattr(request, "unchanged_since", 0)
        assert value is None or 0 <= value <= MAX_MODSEQ


def test_search_modseq_key() -> None:
    assert parse_search("MODSEQ 5").key == ModSeqKey(5)
    assert parse_search('MODSEQ "/flags/\\\\draft" all 620162338').key == ModSeqKey(620162338)
    for bad in ("MODSEQ", "MODSEQ x", 'MODSEQ "/flags/x" none 5', f"MODSEQ {2**63}"):
        with pytest.raises(IMAPSyntaxError):
            parse_search(bad)
