"""mbsync (isync) against ``mailtalk serve``'s SPECIAL-USE folders, both ways.

The test creates no folder: Sent, Drafts, Trash, Junk and Archive are made by the
server at alice's first login, and mbsync (``Patterns *``, ``Create Both``) must find
them through LIST and make them in its local Maildir. Then mail goes both ways:
messages written into the local Sent and Drafts (as a mail client filing them) must
land in the server's Maildir folders, and messages the server gets in Trash and Drafts
must land in the local ones. Both sides are read from disk: the Maildir mbsync writes
and the server's own Maildir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.interop.test_imap_clients import (
    DOMAIN,
    PASSWORD,
    USER,
    describe,
    imap_session,
    local_state,
    maildir_files,
    maildir_of,
    make_message,
    mbsync,
    mbsync_problems,
    mbsync_rc,
    message_id_of,
    ok,
)

pytestmark = pytest.mark.interop

SPECIAL = ["Archive", "Drafts", "Junk", "Sent", "Trash"]


@pytest.fixture
def servers(mailtalk_servers: Any) -> Any:
    return mailtalk_servers(imap=0, users=[(USER, PASSWORD)], domains=[DOMAIN])


def server_folder(servers: Any, name: str) -> Path:
    """The server's Maildir++ folder for ``name`` (``.Sent``), or its INBOX."""
    root = maildir_of(servers)
    return root if name == "INBOX" else root / f".{name}"


def server_ids(servers: Any, name: str) -> set[str]:
    return {message_id_of(p.read_bytes()) for p in maildir_files(server_folder(servers, name))}


def write_local(local: Path, folder: str, name: str, subject: str, message_id: str,
                info: str) -> None:
    """A message filed into the local Maildir as a mail client does (in cur/, flagged)."""
    body = make_message(subject, message_id).replace(b"\r\n", b"\n")
    (local / folder / "cur" / f"1700000000.{name}.testhost:2,{info}").write_bytes(body)


def test_mbsync_syncs_special_use_folders_both_ways(servers: Any, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    rc = mbsync_rc(servers, tmp_path, "plain", local)

    # First run: the special folders come from the server's LIST alone.
    first = mbsync(rc, tmp_path)
    assert first.returncode == 0, describe(first)
    assert mbsync_problems(first, "plain") == [], describe(first)
    for name in SPECIAL:
        assert (local / name / "cur").is_dir(), f"mbsync made no local {name}: {describe(first)}"
        assert server_folder(servers, name).is_dir()

    # Local -> server: a sent message and a draft filed by a local client.
    write_local(local, "Sent", "sent1", "sent from here", "sent1@example.org", "S")
    write_local(local, "Drafts", "draft1", "a draft", "draft1@example.org", "DS")
    # Server -> local: a message thrown away and a draft saved by another client.
    with imap_session(servers) as client:
        ok(client.append("Trash", "(\\Seen \\Deleted)", None,
                         make_message("thrown away", "trash1@example.org")))
        ok(client.append("Drafts", "(\\Draft)", None,
                         make_message("other draft", "draft2@example.org")))
        ok(client.select("Trash"))
        ok(client.store("1", "-FLAGS", "(\\Deleted)"))  # kept: mbsync expunges \Deleted

    second = mbsync(rc, tmp_path)
    assert second.returncode == 0, describe(second)
    assert mbsync_problems(second, "plain") == [], describe(second)

    # What the server's Maildir holds now.
    assert server_ids(servers, "Sent") == {"<sent1@example.org>"}
    assert server_ids(servers, "Drafts") == {"<draft1@example.org>", "<draft2@example.org>"}
    assert server_ids(servers, "Trash") == {"<trash1@example.org>"}
    [sent] = maildir_files(server_folder(servers, "Sent"))
    assert b"sent from here" in sent.read_bytes()
    # What mbsync wrote locally, with the flags in its file names.
    assert local_state(local / "Sent") == {"<sent1@example.org>": {"\\Seen"}}
    assert local_state(local / "Drafts") == {
        "<draft1@example.org>": {"\\Draft", "\\Seen"},
        "<draft2@example.org>": {"\\Draft"},
    }
    assert local_state(local / "Trash") == {"<trash1@example.org>": {"\\Seen"}}
    # The folders the test did not touch stay empty on both sides.
    for name in ("Junk", "Archive"):
        assert local_state(local / name) == {} and server_ids(servers, name) == set()

    # A third run changes nothing on either side.
    third = mbsync(rc, tmp_path)
    assert third.returncode == 0, describe(third)
    assert server_ids(servers, "Drafts") == {"<draft1@example.org>", "<draft2@example.org>"}
    assert len(maildir_files(local / "Drafts")) == 2
