"""Real POP3 clients fetching from an mbox maildrop of ``mailtalk serve``: fetchmail, mpop,
getmail6 and curl, against a spool at ``ROOT/mail/alice/mbox`` as qpopper would serve
``/var/mail/alice``, and fetchmail meeting a spool that does not begin with a From line.

The spool is written as an mboxrd writer (an MDA) appends: From_ lines, ``>From``
quoting, an empty line after each message. What the clients deliver must be the
messages as they were before quoting.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from mailtalk.store.mbox import entry
from tests.interop.clients import require_binary
from tests.interop.test_pop3_clients import (
    USER,
    Serve,
    assert_delivered_intact,
    assert_getmail_intact,
    assert_retrieved,
    curl,
    describe,
    fetchmail,
    getmail,
    getmail_maildir,
    getmail_rc,
    local_messages,
    mpop,
    serve,
)

pytestmark = pytest.mark.interop

FIRST = b"From: bob@example.org\nSubject: first\n\nFrom the mbox.\n.dotted\n>From quoted\n"
SECOND = b"From: carol@example.org\nSubject: second\n\nsecond body\n.\nafter a lone dot\n"
BROKEN = (b"From: raw@example.org\nSubject: appended without an envelope\n\nhello\n\n"
          + entry(SECOND, "carol@example.org", 1.7e9))


def spool(server: Serve, data: bytes) -> Path:
    path = server.root / "mail" / USER / "mbox"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def mbox(*messages: bytes) -> bytes:
    return b"".join(entry(m, "sender@example.org", 1.7e9 + n) for n, m in enumerate(messages))


def test_fetchmail_fetches_and_deletes(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        path = spool(server, mbox(FIRST, SECOND))
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"))
        assert result.returncode == 0, describe(result)
        assert "2 messages for alice at localhost" in result.stdout + result.stderr
        assert_retrieved(fetched, FIRST)
        assert_retrieved(fetched, SECOND)
        assert "POP3< +OK Logging out, 2 messages deleted." in result.stdout
        assert path.read_bytes() == b""


def test_fetchmail_keep_leaves_the_spool_as_it_was(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        data = mbox(FIRST, SECOND)
        path = spool(server, data)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"), keep=True,
                                    tls="stls")
        assert result.returncode == 0, describe(result)
        assert_retrieved(fetched, FIRST)
        assert path.read_bytes() == data


def test_fetchmail_meets_a_spool_it_cannot_split(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        path = spool(server, BROKEN)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"))
        assert result.returncode != 0, describe(result)
        assert ("POP3< -ERR [SYS/PERM] Unable to process From lines (envelopes), change "
                "recognition modes or check for corrupted mail drop.") in result.stdout
        assert fetched == b""
        assert path.read_bytes() == BROKEN
        # The administrator puts a From line first: the next poll gets both.
        path.write_bytes(b"From raw@example.org Tue Dec  2 12:30:00 2025\n" + BROKEN)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"))
        assert result.returncode == 0, describe(result)
        assert b"appended without an envelope" in fetched and b"second body" in fetched


def test_mpop_keeps_then_deletes_by_uidl(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        path = spool(server, mbox(FIRST, SECOND))
        result, delivered = mpop(server, tmp_path, starttls=False)
        assert result.returncode == 0, describe(result)
        assert "--> UIDL" in result.stdout
        assert len(delivered) == 2, describe(result)
        assert_delivered_intact(delivered[0], FIRST)
        assert_delivered_intact(delivered[1], SECOND)
        # The same UIDLs the next time: nothing fetched again; then keep off deletes.
        result, delivered = mpop(server, tmp_path, starttls=True, keep=False)
        assert result.returncode == 0, describe(result)
        assert "--> RETR" not in result.stdout, describe(result)
        assert "--> DELE 1" in result.stdout and "--> DELE 2" in result.stdout
        assert path.read_bytes() == b""


def test_getmail_fetches_over_pop3s(tmp_path: Path) -> None:
    with serve(tmp_path) as server, contextlib.ExitStack() as stack:
        spool(server, mbox(FIRST, SECOND))
        maildir = stack.enter_context(getmail_maildir(tmp_path))
        rc = getmail_rc(
            tmp_path, "SimplePOP3SSLRetriever", server.port("pop3s"), server.cafile, maildir
        )
        result = getmail(rc, tmp_path, server)
        assert result.returncode == 0, describe(result)
        delivered = sorted(local_messages(maildir), key=lambda m: b"second" in m)
        assert len(delivered) == 2, describe(result)
        assert_getmail_intact(delivered[0], FIRST)
        assert_getmail_intact(delivered[1], SECOND)


def test_curl_lists_retrieves_and_deletes(tmp_path: Path) -> None:
    require_binary("curl")
    with serve(tmp_path) as server:
        path = spool(server, mbox(FIRST, SECOND))
        url = f"pop3://127.0.0.1:{server.port('pop3')}"
        listed = curl(f"{url}/", tmp_path)
        assert listed.returncode == 0, describe(listed)
        sizes = [len(m.replace(b"\n", b"\r\n")) for m in (FIRST, SECOND)]
        assert listed.stdout == f"1 {sizes[0]}\r\n2 {sizes[1]}\r\n"
        second = curl(f"{url}/2", tmp_path)
        assert second.stdout.encode() == SECOND.replace(b"\n", b"\r\n")
        deleted = curl(f"{url}/1", tmp_path, "--request", "DELE", "--list-only")
        assert deleted.returncode == 0, describe(deleted)
        assert path.read_bytes() == mbox(FIRST, SECOND)[len(mbox(FIRST)):]
