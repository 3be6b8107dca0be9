"""Names of new mailboxes are checked as Dovecot checks them (CREATE, RENAME, SUBSCRIBE).

``CREATE "&AB8-x"`` (U+001F, encoded) and ``CREATE "&2D3-"`` (a lone surrogate) were
accepted, after which ``LIST "" "*"`` with UTF8=ACCEPT answered BAD until the folder
was deleted; invalid modified UTF-7 and raw 8-bit names were accepted too. Now each
is ``NO [CANNOT]`` with a reason, every stored name decodes, and valid international
names still work in both forms (modified UTF-7, and UTF-8 after UTF8=ACCEPT).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.imap.mailbox_args import (
    MAX_MAILBOX_LEVELS,
    decode_mailbox_name,
    encode_mailbox_name,
    new_mailbox_name_problem,
)
from tests.servers.imap.test_imap_server import Raw, raw_login

# -- the validator -------------------------------------------------------------------

# Text a person may name a folder with: any character but controls and surrogates,
# and not the delimiter "." nor what the store refuses ("/", "*", "%").
NAME_CHARS = st.characters(
    blacklist_categories=("Cc", "Cs"), blacklist_characters="./*%\x7f"
)
LEVEL = st.text(NAME_CHARS, min_size=1, max_size=8)


@settings(max_examples=400)
@given(st.lists(LEVEL, min_size=1, max_size=MAX_MAILBOX_LEVELS))
def test_every_name_without_controls_is_accepted_encoded(levels: list[str]) -> None:
    name = ".".join(levels)
    if any(0x80 <= ord(c) <= 0x9F for c in name):
        return  # C1 controls are refused, like C0 ones
    stored = encode_mailbox_name(name)
    assert new_mailbox_name_problem(stored, ".") is None
    assert decode_mailbox_name(stored) == name


@settings(max_examples=800)
@given(st.text(alphabet="&-+,AaBbZz0189/_.\x1f", max_size=16))
def test_accepted_names_decode_and_encode_back_unchanged(name: str) -> None:
    """Whatever the validator lets through is canonical modified UTF-7 that decodes to
    text without control characters: what LIST shows under UTF8=ACCEPT."""
    problem = new_mailbox_name_problem(name, ".")
    if problem is not None:
        assert problem[0].isupper() and "\n" not in problem
        return
    decoded = decode_mailbox_name(name)
    assert encode_mailbox_name(decoded) == name
    assert not re.search("[\x00-\x1f\x7f-\x9f]", decoded)


@settings(max_examples=400)
@given(st.binary(max_size=12))
def test_any_octets_are_a_verdict_never_an_error(data: bytes) -> None:
    """A name as sent without UTF8=ACCEPT (octets beyond ASCII arrive as text that
    is not ASCII): a reason or None, never an exception."""
    name = data.decode("utf-8", "replace")
    problem = new_mailbox_name_problem(name, ".")
    if problem is None:
        assert name.isascii()
        decode_mailbox_name(name)


@pytest.mark.parametrize(("name", "reason"), [
    ("&AB8-x", "Control characters"),  # U+001F, encoded
    ("&AIU-", "Control characters"),  # U+0085 (C1), encoded
    ("a\x01b", "Control characters"),
    ("&2D3-", "not valid modified UTF-7"),  # a lone high surrogate
    ("&3gA-", "not valid modified UTF-7"),  # a lone low surrogate
    ("&AGE-", "not valid modified UTF-7"),  # "a", which must not be encoded
    ("&Jjo", "not valid modified UTF-7"),  # no "-"
    ("&APw-&APw-", "not valid modified UTF-7"),  # two runs where one belongs
    ("&APx-", "not valid modified UTF-7"),  # bits left over
    ("&A,-", "not valid modified UTF-7"),
    ("Entwürfe", "8-bit characters"),
    (".".join(["l"] * (MAX_MAILBOX_LEVELS + 1)), "hierarchy levels"),
])
def test_names_dovecot_refuses(name: str, reason: str) -> None:
    problem = new_mailbox_name_problem(name, ".")
    assert problem is not None and reason in problem


@pytest.mark.parametrize("name", [
    "Entw&APw-rfe", "&ZeVnLIqe-", "&2D3eAA-", "a&-b", "Sent", "INBOX.Archive.2024",
    ".".join(["l"] * MAX_MAILBOX_LEVELS), "Trailing.",
])
def test_names_dovecot_accepts(name: str) -> None:
    assert new_mailbox_name_problem(name, ".") is None


# -- the server ------------------------------------------------------------------------


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, users=[("alice", "secret")]) as running:
        yield running


def answer(raw: Raw, tag: bytes, command: bytes) -> bytes:
    raw.send(tag + b" " + command + b"\r\n")
    return raw.until_tagged(tag)[-1]


BAD_NAMES = [
    b'"&AB8-x"', b'"&2D3-"', b'"&AGE-"', b'"&Jjo"', b'"Entw\xc3\xbcrfe"', b"Entw\xc3\xbcrfe",
    b"{4+}\r\nb\x01d\xff", b'"' + b".".join([b"l"] * 25) + b'"',
]


def test_create_rename_subscribe_refuse_bad_names(servers: RunningServers) -> None:
    raw = raw_login(servers.port("imap"))
    try:
        assert answer(raw, b"c", b"CREATE Old").startswith(b"c OK")
        for n, name in enumerate(BAD_NAMES):
            for verb in (b"CREATE ", b"RENAME Old ", b"SUBSCRIBE "):
                reply = answer(raw, b"t%d" % n, verb + name)
                assert re.match(rb"t\d+ NO \[CANNOT\] [A-Z][^\r\n]+\r\n$", reply), (name, reply)
        reply = answer(raw, b"x", b'CREATE "' + b"x" * 300 + b'"')
        assert reply.startswith(b"x NO [CANNOT] mailbox name too long"), reply
        folders = sorted(p.name for p in (servers.root / "mail/alice/Maildir").glob(".*")
                         if (p / "cur").is_dir())
        # Only Old and the SPECIAL-USE folders made (and subscribed) at the first login.
        assert folders == [".Archive", ".Drafts", ".Junk", ".Old", ".Sent", ".Trash"]
        subscribed = (servers.root / "mail/alice/Maildir/subscriptions").read_text()
        assert subscribed.split() == ["Sent", "Drafts", "Trash", "Junk", "Archive"]
    finally:
        raw.close()


def test_utf8_accept_names(servers: RunningServers) -> None:
    raw = raw_login(servers.port("imap"))
    try:
        assert answer(raw, b"e", b"ENABLE UTF8=ACCEPT").startswith(b"e OK")
        assert answer(raw, b"a", "CREATE \"Entwürfe.日本\"".encode()).startswith(b"a OK")
        for tag, name in [(b"b", b'"bad\xff"'), (b"c", b'"a\x1fb"'), (b"d", b"{3+}\r\na\xc2\x85")]:
            reply = answer(raw, tag, b"CREATE " + name)
            assert b" NO [CANNOT] " in reply, (name, reply)
        raw.send(b'l LIST "" "*"\r\n')
        lines = raw.until_tagged(b"l")
        assert lines[-1].startswith(b"l OK")
        assert '"Entwürfe.日本"'.encode() in b"".join(lines)
    finally:
        raw.close()
    stored = sorted(p.name for p in (servers.root / "mail/alice/Maildir").glob(".E*"))
    assert stored == [".Entw&APw-rfe", ".Entw&APw-rfe.&ZeVnLA-"]


def test_list_shows_a_name_made_by_another_program_as_stored(servers: RunningServers) -> None:
    raw = raw_login(servers.port("imap"))
    try:
        maildir = servers.root / "mail/alice/Maildir"
        for name in ("&2D3-", "Fine"):
            for sub in ("cur", "new", "tmp"):
                (maildir / f".{name}" / sub).mkdir(parents=True)
        assert answer(raw, b"e", b"ENABLE UTF8=ACCEPT").startswith(b"e OK")
        raw.send(b'l LIST "" "*"\r\n')
        lines = raw.until_tagged(b"l")
        assert lines[-1].startswith(b"l OK"), lines
        assert any(b'"&2D3-"' in line for line in lines)
    finally:
        raw.close()
    raw = raw_login(servers.port("imap"))  # without UTF8=ACCEPT it can be deleted by name
    try:
        assert answer(raw, b"d", b'DELETE "&2D3-"').startswith(b"d OK")
    finally:
        raw.close()
