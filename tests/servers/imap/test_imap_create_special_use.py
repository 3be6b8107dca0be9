"""IMAP CREATE-SPECIAL-USE (RFC 6154 3): ``CREATE name (USE (\\Archive))``.

The use is the folder's: LIST and LIST (SPECIAL-USE) show it, RENAME carries it, a
restart keeps it. A use the server cannot give (unknown, or a virtual mailbox's) is
``NO [USEATTR]`` and no folder is made; an unknown CREATE parameter is BAD. The
commands are fed whole and byte by byte.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailtalk.servers.api import run_servers

TIMEOUT = 10.0


def session(port: int, commands: list[bytes], *, byte_at_a_time: bool = False) -> str:
    """LOGIN, ``commands`` (tagged c1, c2, ...), LOGOUT; every line received."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        wire = [b"a LOGIN alice secret\r\n",
                *(b"c%d %s\r\n" % (n, c) for n, c in enumerate(commands, 1)),
                b"z LOGOUT\r\n"]  # fmt: skip
        for command in wire:
            if byte_at_a_time:
                for byte in command:
                    sock.sendall(bytes([byte]))
            else:
                sock.sendall(command)
        lines: list[bytes] = []
        while not lines or not lines[-1].startswith(b"z "):
            line = reader.readline()
            assert line, lines
            lines.append(line)
    return b"".join(lines).decode()


@pytest.mark.parametrize("byte_at_a_time", [False, True])
def test_create_with_use_rename_and_restart(tmp_path: Path, byte_at_a_time: bool) -> None:
    commands = [
        b"DELETE Archive",  # the default one: the new folder is then the only \Archive
        b"CREATE {8}\r\nOld Mail (USE (\\Archive))",
        b'CREATE "Spam.Caught" (use (\\junk \\Trash))',  # any case; a child, two uses
        b"CREATE Plain (USE ())",
        b'RENAME "Old Mail" Kept',
        b'LIST (SPECIAL-USE) "" "*"',
    ]
    with run_servers(tmp_path, smtp=None, imap=0, users=[("alice", "secret")]) as servers:
        text = session(servers.port("imap"), commands, byte_at_a_time=byte_at_a_time)
    for n in range(1, 6):
        assert f"\r\nc{n} OK " in text, text
    listed = [line for line in text.split("\r\n") if line.startswith("* LIST")]
    assert listed == [
        '* LIST (\\HasNoChildren \\Drafts) "." "Drafts"',
        '* LIST (\\HasNoChildren \\Junk) "." "Junk"',
        '* LIST (\\HasNoChildren \\Archive) "." "Kept"',
        '* LIST (\\HasNoChildren \\Sent) "." "Sent"',
        '* LIST (\\HasNoChildren \\Junk \\Trash) "." "Spam.Caught"',
        '* LIST (\\HasNoChildren \\Trash) "." "Trash"',
    ]
    with run_servers(tmp_path, smtp=None, imap=0, users=[("alice", "secret")]) as servers:
        text = session(servers.port("imap"), [b'LIST "" "*" RETURN (SPECIAL-USE)'])
    assert '* LIST (\\HasNoChildren \\Archive) "." "Kept"\r\n' in text
    assert '* LIST (\\HasNoChildren) "." "Plain"\r\n' in text
    assert '* LIST (\\HasChildren) "." "Spam"\r\n' in text  # made on the way: no use


def test_uses_it_cannot_give_are_useattr_and_nothing_is_made(tmp_path: Path) -> None:
    commands = [
        b"CREATE A (USE (\\Important))",
        b"CREATE B (USE (\\All))",
        b"CREATE C (USE (\\Archive \\Flagged))",
        b"CREATE D (FOO (\\Archive))",
        b"CREATE E (USE \\Archive)",
        b"CREATE F (USE (Archive))",
        b'LIST "" "*"',
    ]
    with run_servers(tmp_path, smtp=None, imap=0, users=[("alice", "secret")]) as servers:
        text = session(servers.port("imap"), commands)
    assert "\r\nc1 NO [USEATTR] \\Important is not a special use this server knows; it " \
           "knows \\Sent \\Drafts \\Trash \\Junk \\Archive\r\n" in text
    assert "\r\nc2 NO [USEATTR] \\All is a virtual mailbox of every message, which this " \
           "server does not make\r\n" in text
    assert "\r\nc3 NO [USEATTR] \\Flagged is a virtual mailbox" in text
    assert "\r\nc4 BAD " in text and "unknown CREATE parameter FOO" in text
    assert "\r\nc5 BAD " in text and "\r\nc6 BAD " in text
    assert not any(f'"." "{name}"' in text for name in "ABCDEF")


def test_capability_says_create_special_use(tmp_path: Path) -> None:
    with run_servers(tmp_path, smtp=None, imap=0, users=[("alice", "secret")]) as servers:
        text = session(servers.port("imap"), [b"CAPABILITY"])
    [capability] = [line for line in text.split("\r\n") if line.startswith("* CAPABILITY")]
    assert {"SPECIAL-USE", "CREATE-SPECIAL-USE"} <= set(capability.split())
