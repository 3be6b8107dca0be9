"""Dovecot reads the ``,S=<size>,W=<rfc822 size>`` fields mailtalk puts in the names
of the files it delivers: a Maildir written by ``mailtalk serve`` (over SMTP), opened by
the real Dovecot (``doveadm fetch``), gives the same RFC822.SIZE as mailtalk's IMAP.

Dovecot runs the fetch as the system user alice (its userdb is the passwd file), on a
copy of the folder owned by alice, with ``mail_location`` pointing at it: the shared
``~alice/Maildir`` of the other tests is never touched.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import _unavailable

SYSTEM_USER = "alice"  # a Dovecot user on the machines of scripts/real-servers

MESSAGES = [
    b"Subject: plain\r\n\r\none line\r\n",
    b"Subject: lines\r\n\r\n" + b"a line of text\r\n" * 40,
    b"Subject: dots\r\n\r\n..a stuffed dot\r\n.\r\n".replace(b"\r\n.\r\n", b"\r\n..\r\n"),
    b"Subject: long\r\n\r\n" + b"x" * 900 + b"\r\n" + b"y\r\n" * 3,
    b"Subject: bare cr\r\n\r\nthis\rhas a CR\r\n",
]


@pytest.fixture
def dovecot_user() -> str:
    if shutil.which("doveadm") is None:
        _unavailable("no doveadm (apt-get install dovecot-imapd)")
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        _unavailable(f"no system user {SYSTEM_USER} for Dovecot")
    if os.geteuid() != 0:
        _unavailable("doveadm -u needs root")
    return SYSTEM_USER


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder Dovecot's user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mailtalk-sizes-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def doveadm_sizes(user: str, maildir: Path) -> dict[int, tuple[int, int]]:
    """uid -> (size.physical, size.virtual) as Dovecot reads the Maildir."""
    result = subprocess.run(
        ["doveadm", "-o", f"mail_location=maildir:{maildir}", "fetch", "-u", user,
         "uid size.physical size.virtual", "mailbox", "INBOX", "ALL"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = re.findall(
        r"uid: (\d+)\nsize\.physical: (\d+)\nsize\.virtual: (\d+)", result.stdout
    )
    return {int(uid): (int(physical), int(virtual)) for uid, physical, virtual in found}


def copy_for(user: str, source: Path, destination: Path) -> Path:
    """The messages of ``source`` (names kept) in a new Maildir owned by ``user``."""
    entry = pwd.getpwnam(user)
    for subdir in ("tmp", "new", "cur"):
        (destination / subdir).mkdir(parents=True)
        for path in (source / subdir).iterdir() if (source / subdir).is_dir() else ():
            shutil.copy2(path, destination / subdir / path.name)
    for path in [destination, *destination.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return destination


def test_dovecot_reads_the_sizes_in_the_names_mailtalk_delivers(
    mailtalk_servers: Callable[..., Any], dovecot_user: str, world_readable_dir: Path
) -> None:
    servers = mailtalk_servers(
        root=world_readable_dir / "root", smtp=0, imap=0, users=[("alice", "secret")]
    )
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=30) as smtp:
        for message in MESSAGES:
            smtp.sendmail("sender@example.org", ["alice@localhost"], message)
    maildir = world_readable_dir / "root" / "mail" / "alice" / "Maildir"
    names = sorted(path.name for path in (maildir / "new").iterdir())
    assert len(names) == len(MESSAGES)
    assert all(re.search(r",S=\d+,W=\d+$", name) for name in names), names

    # What Dovecot makes of a copy, before mailtalk's IMAP moves anything to cur/.
    copy = copy_for(dovecot_user, maildir, world_readable_dir / "dovecot" / "Maildir")
    dovecot = doveadm_sizes(dovecot_user, copy)

    with imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=30) as imap:
        imap.login("alice", "secret")
        imap.select("INBOX", readonly=True)
        status, data = imap.fetch("1:*", "(RFC822.SIZE)")
        assert status == "OK"
        mailtalk = [int(m) for m in re.findall(rb"RFC822\.SIZE (\d+)", b" ".join(
            item if isinstance(item, bytes) else item[0] for item in data))]  # fmt: skip

    names_sizes = [tuple(map(int, re.findall(r",[SW]=(\d+)", name))) for name in names]
    assert sorted(dovecot.values()) == sorted(names_sizes)
    assert sorted(virtual for _, virtual in dovecot.values()) == sorted(mailtalk)
    # And each is the file's real size, and its size with CRLF line ends.
    for name, (size, rfc822_size) in zip(names, names_sizes, strict=True):
        content = (copy / "new" / name).read_bytes()
        bare_lfs = content.count(b"\n") - content.count(b"\r\n")
        assert (size, rfc822_size) == (len(content), len(content) + bare_lfs), name

    # Dovecot takes W= from the name rather than reading the file: a name whose W=
    # says otherwise gives that size, so the field is in the form Dovecot parses.
    lying = world_readable_dir / "lying" / "Maildir"
    copy_for(dovecot_user, maildir, lying)
    first = lying / "new" / names[0]
    size, _ = names_sizes[0]
    os.rename(first, first.with_name(re.sub(r",W=\d+$", f",W={size + 12345}", names[0])))
    assert sorted(doveadm_sizes(dovecot_user, lying).values()) == sorted(
        [(size, size + 12345), *names_sizes[1:]]
    )


# -- mbsync, reading the sizes mailtalk took from the names ------------------------------

MAX_SIZE = 1024  # mbsync's MaxSize 1k: a bigger message gets only a placeholder


def sized_message(subject: str, lines: int) -> bytes:
    """Short lines: each adds 10 octets stored and one more sent (its CR)."""
    body = b"".join(b"%09d\r\n" % n for n in range(lines))
    return b"Subject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\n" % (
        subject.encode(), subject.encode()
    ) + body


def test_mbsync_gets_the_sizes_a_cold_index_took_from_the_names(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    """mailtalk indexes the delivered Maildir from its names alone (,S=/,W=, no file
    read); mbsync decides from the RFC822.SIZE it is told which messages are too big
    for ``MaxSize 1k``. The message stored in fewer than 1024 octets but sent in more
    (CRLF) must be held back with the big one: a server giving the stored size (S=)
    instead of the size on the wire (W=) would let it through."""
    from tests.interop.test_imap_clients import mbsync, mbsync_problems, mbsync_rc

    messages = {
        "small": sized_message("small", 5),
        # About 1000 octets stored with the server's trace fields, 1080 sent.
        "straddling": sized_message("straddling", 75),
        "big": sized_message("big", 200),
    }
    servers = mailtalk_servers(smtp=0, imap=0, users=[("alice", "secret")])
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=30) as smtp:
        for message in messages.values():
            smtp.sendmail("sender@example.org", ["alice@localhost"], message)
    maildir = Path(servers.root) / "mail" / "alice" / "Maildir"
    sizes, stored = {}, {}
    for path in (maildir / "new").iterdir():
        content = path.read_bytes()
        subject = re.search(rb"^Subject: (\w+)", content, re.M)
        assert subject is not None
        named = tuple(map(int, re.findall(r",[SW]=(\d+)", path.name)))
        assert named == (len(content), len(content) + content.count(b"\n")), path.name
        sizes[subject[1].decode()] = named
        stored[subject[1].decode()] = content
    assert sizes["small"][1] < MAX_SIZE < sizes["big"][0]
    assert sizes["straddling"][0] <= MAX_SIZE < sizes["straddling"][1], sizes  # S <= 1k < W
    assert not (maildir / "mailtalk-uidlist").exists()  # mbsync's SELECT indexes it, cold

    local = tmp_path / "local"
    local.mkdir()
    rc = mbsync_rc(servers, tmp_path, "plain", local)
    rc.write_text(rc.read_text() + f"MaxSize {MAX_SIZE // 1024}k\n")
    result = mbsync(rc, tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert mbsync_problems(result, "plain") == []
    index = (maildir / "mailtalk-uidlist").read_text()
    assert " T" not in index  # indexed from the names: no file read, no date asked yet

    got = {}
    for path in (local / "INBOX" / "new").iterdir():
        content = path.read_bytes()
        subject = re.search(rb"^Subject: (?:\[placeholder\] )?(\w+)", content, re.M)
        assert subject is not None, content[:200]
        got[subject[1].decode()] = content
    assert set(got) == set(messages)
    # The one under the limit came whole (mbsync adds its X-TUID field).
    assert re.sub(rb"X-TUID: \S+\n", b"", got["small"].replace(b"\r\n", b"\n")) == stored["small"]
    for name in ("straddling", "big"):
        assert b"[placeholder]" in got[name], got[name][:300]
        assert b"000000004\n" not in got[name]  # only the placeholder came
