"""LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154), and
ESEARCH (RFC 4731): the argument parsers under Hypothesis, the server fed byte by byte."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.imap.mailbox_args import ListRequest, parse_list_command
from mailtalk.servers.imap.search import esearch_response, parse_search
from mailtalk.servers.imap.tokens import IMAPSyntaxError

SELECT = ["SUBSCRIBED", "REMOTE", "SPECIAL-USE", "RECURSIVEMATCH"]
RETURNS = ["SUBSCRIBED", "CHILDREN", "SPECIAL-USE"]
STATUS = ["MESSAGES", "UNSEEN", "UIDNEXT", "UIDVALIDITY", "RECENT", "SIZE", "DELETED"]
names = st.text(st.sampled_from("abcXYZ.%*-_"), min_size=1, max_size=8)


def quoted(text: str) -> str:
    return '"' + text + '"'


@given(
    select=st.none() | st.lists(st.sampled_from(SELECT), unique=True),
    reference=st.text(st.sampled_from("ab."), max_size=3),
    patterns=st.lists(names, min_size=1, max_size=3),
    as_list=st.booleans(),
    returns=st.none() | st.lists(st.sampled_from(RETURNS), unique=True),
    status=st.lists(st.sampled_from(STATUS), unique=True, max_size=3),
)
def test_list_command_round_trip(select: list[str] | None, reference: str, patterns: list[str],
                                 as_list: bool, returns: list[str] | None,
                                 status: list[str]) -> None:
    parts = []
    if select is not None:
        parts.append("(" + " ".join(select) + ")")
    parts.append(quoted(reference))
    if as_list or len(patterns) > 1:
        parts.append("(" + " ".join(map(quoted, patterns)) + ")")
    else:
        parts.append(quoted(patterns[0]))
    options = list(returns or [])
    if status:
        options.append(f"STATUS ({' '.join(status)})")
    if returns is not None or status:
        parts.append(f"RETURN ({' '.join(options)})")
    args = " ".join(parts)
    lone_recursive = select is not None and "RECURSIVEMATCH" in select and not (
        set(select) - {"RECURSIVEMATCH", "REMOTE"})
    if lone_recursive:
        with pytest.raises(IMAPSyntaxError):
            parse_list_command(args, ())
        return
    request = parse_list_command(args, ())
    assert request.reference == reference
    assert request.patterns == tuple(patterns)
    assert request.select == frozenset(select or ())
    assert request.status_items == tuple(status)
    assert request.returns == frozenset((returns or []) + (["STATUS"] if status else []))
    extended = select is not None or as_list or len(patterns) > 1 or bool(options) or (
        returns is not None)
    assert request.extended == extended


@given(st.text(st.sampled_from('() "*%aRETURNSTAUBCDI\\'), max_size=40))
def test_list_command_garbage_is_a_syntax_error_or_a_request(args: str) -> None:
    try:
        request = parse_list_command(args, ())
    except IMAPSyntaxError:
        return
    assert isinstance(request, ListRequest) and request.patterns


@given(st.lists(st.sampled_from(["MIN", "MAX", "COUNT", "ALL"]), max_size=4),
       st.lists(st.integers(1, 60), unique=True, max_size=20), st.booleans())
def test_esearch_response(returns: list[str], found: list[int], uid: bool) -> None:
    found = sorted(found)
    query = parse_search(f"RETURN ({' '.join(returns)}) ALL")
    assert query.returns == (tuple(dict.fromkeys(returns)) or ("ALL",))
    line = esearch_response('a"1', uid, found, query.returns)
    assert line.startswith('ESEARCH (TAG "a\\"1")' + (" UID" if uid else ""))
    words = line.split(" ")
    if "COUNT" in query.returns:
        assert words[words.index("COUNT") + 1] == str(len(found))
    if "ALL" in query.returns and found:
        shown = words[words.index("ALL") + 1]
        numbers = []
        for span in shown.split(","):
            low, _, high = span.partition(":")
            numbers.extend(range(int(low), int(high or low) + 1))
        assert numbers == found
    if not found:
        assert "MIN" not in words and "MAX" not in words and "ALL" not in words


def test_search_return_unknown_option_is_bad() -> None:
    with pytest.raises(IMAPSyntaxError):
        parse_search("RETURN (SAVE) ALL")
    with pytest.raises(IMAPSyntaxError):
        parse_search("RETURN MIN ALL")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, users=[("alice", "secret")]) as running:
        yield running


def test_list_extended_byte_at_a_time(servers: RunningServers) -> None:
    with socket.create_connection(("127.0.0.1", servers.port("imap")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        commands = [
            b'a LOGIN alice secret\r\n',
            b'b LIST (SPECIAL-USE SUBSCRIBED) "" ("S*" {5}\r\nTrash)'
            b" RETURN (STATUS (MESSAGES))\r\n",
            b'c LIST (RECURSIVEMATCH) "" "*"\r\n',
            b'd LOGOUT\r\n',
        ]
        for command in commands:
            for byte in command:
                sock.sendall(bytes([byte]))
        lines = []
        while not lines or not lines[-1].startswith(b"d OK"):
            line = reader.readline()
            assert line, lines
            lines.append(line)
    text = b"".join(lines).decode()
    assert '* LIST (\\HasNoChildren \\Subscribed \\Sent) "." "Sent"\r\n' \
           '* STATUS "Sent" (MESSAGES 0)\r\n' in text
    assert '"." "Trash"\r\n* STATUS "Trash" (MESSAGES 0)\r\nb OK' in text
    assert "c BAD" in text
