"""imap_parse: tokenizer, sequence sets, FETCH/STORE/SEARCH/APPEND/LIST arguments."""

from __future__ import annotations

import contextlib
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import Role, decode_text
from mailtalk.protocols.imap import IMAPConnection
from mailtalk.protocols.imap_events import Command
from mailtalk.servers.imap.mailbox_args import (
    decode_mailbox_name,
    encode_mailbox_name,
    list_pattern_matches,
    parse_list,
    parse_mailbox,
    parse_status,
)
from mailtalk.servers.imap.message_args import (
    FetchItem,
    Section,
    parse_append,
    parse_date,
    parse_datetime,
    parse_fetch,
    parse_sequence_set,
    parse_store,
)
from mailtalk.servers.imap.search import (
    SEARCH_CHARSETS_LISTED,
    AllKey,
    AndKey,
    BodyKey,
    DateKey,
    FlagKey,
    HeaderKey,
    NotKey,
    OrKey,
    RecentKey,
    SearchCharsetError,
    SequenceKey,
    SizeKey,
    parse_search,
    search_codec,
)
from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, String, parse_astrings, tokenize


def server_command(wire: bytes) -> Command:
    conn = IMAPConnection(Role.SERVER)
    conn.receive_data(wire)
    while True:
        event = conn.next_command()
        if isinstance(event, Command):
            return event
        assert not isinstance(event, type(None))


# -- tokenizer --------------------------------------------------------------------


def test_tokenize_kinds() -> None:
    assert tokenize('abc "q \\" \\\\ x" NIL (a (b) "c") \\Seen') == [
        Atom("abc"),
        String(b'q " \\ x'),
        Atom("NIL"),
        [Atom("a"), [Atom("b")], String(b"c")],
        Atom("\\Seen"),
    ]
    assert tokenize("NIL")[0] == Atom("NIL") and Atom("nil").is_nil


def test_tokenize_literals_from_the_core() -> None:
    command = server_command(b"a1 LOGIN {4+}\r\nj\xc3\xb6e {5+}\r\np w\r\n\r\n")
    assert command.args == "{4+} {5+}"
    assert tokenize(command.args, command.literals) == [
        String("jöe".encode(), literal=True),
        String(b"p w\r\n", literal=True),
    ]
    assert parse_astrings(command.args, command.literals, 2) == ["jöe", "p w\r\n"]


def test_tokenize_literal8_and_empty_literal() -> None:
    assert tokenize("~{3} {0}", [b"a\x00b", b""]) == [
        String(b"a\x00b", literal=True), String(b"", literal=True)
    ]


@pytest.mark.parametrize(
    ("args", "literals"),
    [
        ('"abc', ()),
        ("(a b", ()),
        ("a)", ()),
        ("{3}", ()),
        ("{3}", (b"ab",)),
        ("a", (b"x",)),
        ("a  b", ()),
        ('"a\\x"', ()),
        ("BODY[TEXT", ()),
        ("a]b", ()),
        ("{x}", ()),
        ("a\x01", ()),
    ],
)
def test_tokenize_errors(args: str, literals: tuple[bytes, ...]) -> None:
    with pytest.raises(IMAPSyntaxError) as info:
        tokenize(args, literals)
    assert "\n" not in str(info.value)


@settings(max_examples=300)
@given(st.binary(max_size=60), st.lists(st.binary(max_size=8), max_size=3))
def test_tokenize_random_bytes_parses_or_raises_syntax_error(
    data: bytes, literals: list[bytes]
) -> None:
    with contextlib.suppress(IMAPSyntaxError):
        tokenize(decode_text(data), literals)


@settings(max_examples=200)
@given(st.text(alphabet='ab ()"\\{}[]~0123+*:,%NIL\x00\r', max_size=40))
def test_tokenize_imap_ish_text_parses_or_raises(text: str) -> None:
    for parser in (tokenize, parse_fetch, parse_search, parse_store):
        with contextlib.suppress(IMAPSyntaxError, SearchCharsetError):
            parser(text, [b"xyz"])


# -- sequence sets ----------------------------------------------------------------


def test_sequence_sets() -> None:
    assert parse_sequence_set("1:*").numbers(5) == [1, 2, 3, 4, 5]
    assert parse_sequence_set("2,4:6,10:*").numbers(12) == [2, 4, 5, 6, 10, 11, 12]
    assert parse_sequence_set("*").numbers(7) == [7]
    assert parse_sequence_set("5:3").numbers(10) == [3, 4, 5]
    assert parse_sequence_set("3,1:2,2").numbers(10) == [1, 2, 3]
    assert parse_sequence_set("4:*").numbers(2) == [2]  # * is 2: range 2:4
    assert parse_sequence_set("1:*").numbers(0) == []
    assert parse_sequence_set("8").numbers(5) == []
    assert parse_sequence_set("8,2:3").max_number() == 8
    assert str(parse_sequence_set("2,4:6,10:*")) == "2,4:6,10:*"
    seq = parse_sequence_set("3:*")
    assert seq.contains(9, 9) and not seq.contains(2, 9)


def test_uid_sets_resolve_against_uids() -> None:
    uids = [3, 7, 9, 20, 21]
    assert parse_sequence_set("1:*").select_uids(uids) == uids
    assert parse_sequence_set("8:20").select_uids(uids) == [9, 20]
    assert parse_sequence_set("*").select_uids(uids) == [21]
    assert parse_sequence_set("559:*").select_uids(uids) == [21]  # * is always included
    assert parse_sequence_set("20:5").select_uids(uids) == [7, 9, 20]
    assert parse_sequence_set("4,100").select_uids(uids) == []
    assert parse_sequence_set("1:*").select_uids([]) == []


@pytest.mark.parametrize("text", ["", "0", "1:0", "01", "a", "1,", ",1", "1::2", "1:2:3", "$",
                                  "99999999999"])
def test_bad_sequence_sets(text: str) -> None:
    with pytest.raises(IMAPSyntaxError):
        parse_sequence_set(text)


# -- FETCH ------------------------------------------------------------------------


def test_fetch_macros() -> None:
    assert [i.name for i in parse_fetch("1:* ALL").items] == [
        "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    assert [i.name for i in parse_fetch("1 fast").items] == ["FLAGS", "INTERNALDATE",
                                                             "RFC822.SIZE"]
    assert [i.name for i in parse_fetch("1 FULL").items][-1] == "BODY"
    with pytest.raises(IMAPSyntaxError):
        parse_fetch("1 (ALL)")


def test_fetch_item_list() -> None:
    request = parse_fetch("2,4 (FLAGS UID BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.100> "
                          "BODY[1.2.MIME] body[] RFC822.SIZE BODYSTRUCTURE BODY)")
    assert str(request.sequence_set) == "2,4"
    assert request.items == [
        FetchItem("FLAGS"),
        FetchItem("UID"),
        FetchItem("BODY", Section((), "HEADER.FIELDS", ("FROM", "SUBJECT")), True, (0, 100)),
        FetchItem("BODY", Section((1, 2), "MIME")),
        FetchItem("BODY", Section()),
        FetchItem("RFC822.SIZE"),
        FetchItem("BODYSTRUCTURE"),
        FetchItem("BODY"),
    ]
    assert request.sets_seen
    assert not parse_fetch("1 (BODY.PEEK[] RFC822.HEADER)").sets_seen
    assert parse_fetch("1 RFC822").sets_seen and parse_fetch("1 RFC822.TEXT").sets_seen


def test_fetch_sections() -> None:
    def section(spec: str) -> Section | None:
        return parse_fetch(f"1 BODY[{spec}]").items[0].section

    assert section("3.HEADER") == Section((3,), "HEADER")
    assert section("TEXT") == Section((), "TEXT")
    assert section("2.1.TEXT") == Section((2, 1), "TEXT")
    assert section('HEADER.FIELDS.NOT ("Received" x-y)') == Section(
        (), "HEADER.FIELDS.NOT", ("Received", "x-y"))
    assert section("header.fields (from)") == Section((), "HEADER.FIELDS", ("from",))
    binary = parse_fetch("1 (BINARY.PEEK[1]<0.10> BINARY.SIZE[2])").items
    assert binary == [FetchItem("BINARY", Section((1,)), True, (0, 10)),
                      FetchItem("BINARY.SIZE", Section((2,)))]


@pytest.mark.parametrize("items", [
    "BODY[MIME]", "BODY[0]", "BODY[1.]", "BODY[HEADER.FIELDS]", "BODY[HEADER.FIELDS ()]",
    "BODY[FOO]", "BODY[]<0.0>", "BODY[]<1>", "BODY[TEXT.HEADER]", "FLAGSX", "(FLAGS (UID))",
    "BINARY[TEXT]", "()", '"FLAGS"', "BODY[HEADER.FIELDS (a:b)]",
])
def test_bad_fetch_items(items: str) -> None:
    with pytest.raises(IMAPSyntaxError):
        parse_fetch(f"1 {items}")


# -- STORE ------------------------------------------------------------------------


def test_store() -> None:
    store = parse_store("1:3 +FLAGS.SILENT (\\seen \\Deleted $Label \\Seen)")
    assert store.mode == "add" and store.silent
    assert store.flags == ("\\Seen", "\\Deleted", "$Label")
    store = parse_store("* -flags \\Flagged")
    assert (store.mode, store.silent, store.flags) == ("remove", False, ("\\Flagged",))
    assert parse_store("1 FLAGS ()").flags == ()
    assert parse_store("1 FLAGS ()").mode == "set"
    for bad in ("1 FLAGS (\\Recent)", "1 XFLAGS (\\Seen)", "1 FLAGS (\"x\")", "1 +FLAGS",
                "1 FLAGS (a*b)"):
        with pytest.raises(IMAPSyntaxError):
            parse_store(bad)


# -- SEARCH -------------------------------------------------------------------------


def test_search_tree() -> None:
    query = parse_search("CHARSET utf-8 OR FROM {4} SUBJECT x NOT (SEEN 1:3) UID 5:* "
                         "SINCE 1-Feb-1994 LARGER 100 NEW", ["Jür".encode()])
    assert query.charset == "UTF-8"
    assert query.key == AndKey((
        OrKey((HeaderKey("From", "Jür"), HeaderKey("Subject", "x"))),
        NotKey(AndKey((FlagKey("\\Seen"), SequenceKey(parse_sequence_set("1:3"))))),
        SequenceKey(parse_sequence_set("5:*"), uid=True),
        DateKey("since", date(1994, 2, 1)),
        SizeKey(True, 100),
        AndKey((RecentKey(True), FlagKey("\\Seen", False))),
    ))


def test_search_simple_keys() -> None:
    assert parse_search("ALL").key == AllKey()
    assert parse_search("unanswered").key == FlagKey("\\Answered", False)
    assert parse_search("KEYWORD $Junk").key == FlagKey("$Junk", True)
    assert parse_search('HEADER X-Spam ""').key == HeaderKey("X-Spam", "")
    assert parse_search('TEXT "hello world"').key == BodyKey("hello world", True)
    assert parse_search('SENTBEFORE "5-Jan-2020"').key == DateKey(
        "before", date(2020, 1, 5), sent=True)
    assert parse_search("OLD").key == RecentKey(False)
    assert parse_search("2:4,*").key == SequenceKey(parse_sequence_set("2:4,*"))


def test_search_charset_and_errors() -> None:
    with pytest.raises(SearchCharsetError) as info:
        parse_search("CHARSET X-UNKNOWN FROM x")
    assert info.value.code.startswith("BADCHARSET (UTF-8 US-ASCII ISO-8859-1 ISO-8859-2 ")
    assert parse_search("CHARSET US-ASCII SEEN").charset == "US-ASCII"
    with pytest.raises(IMAPSyntaxError):
        parse_search("CHARSET US-ASCII BODY {2}", [b"\xc3\xbc"])
    for bad in ("", "FROM", "BOGUS", "OR SEEN", "SINCE 31-Feb-2020", "SINCE yesterday",
                "LARGER x", "()", "NOT", '"SEEN"', "UID x"):
        with pytest.raises(IMAPSyntaxError):
            parse_search(bad)


@pytest.mark.parametrize(("charset", "data", "text"), [
    ("UTF-8", "Käse".encode(), "Käse"),
    ("utf8", "Käse".encode(), "Käse"),
    ("ISO-8859-1", "Käse".encode("latin-1"), "Käse"),
    ("latin1", "Käse".encode("latin-1"), "Käse"),
    ("iso8859-15", "€".encode("iso8859-15"), "€"),
    ("windows-1252", "€ “x”".encode("cp1252"), "€ “x”"),
    ("Windows-1251", "Привет".encode("cp1251"), "Привет"),
    ("KOI8-R", "Привет".encode("koi8-r"), "Привет"),
    ("ISO-2022-JP", "日本".encode("iso2022_jp"), "日本"),
    ("us-ascii", b"plain", "plain"),
])
def test_search_charsets_python_decodes(charset: str, data: bytes, text: str) -> None:
    # As Dovecot (any charset iconv knows): the search string is decoded from it.
    query = parse_search(f"CHARSET {charset} SUBJECT {{{len(data)}}}", [data])
    assert query.charset == charset.upper()
    assert query.key == HeaderKey("Subject", text)


def search_wire(wire: bytes) -> object:
    """The search key of ``a SEARCH <wire>`` as the server reads it off the wire."""
    command = server_command(b"a SEARCH " + wire + b"\r\n")
    return parse_search(command.args, command.literals).key


def test_search_string_in_a_charset_as_a_quoted_string_or_an_atom() -> None:
    # 8-bit octets outside a literal (as Dovecot takes them): read in the charset.
    assert search_wire(b'CHARSET ISO-8859-1 SUBJECT "K\xe4se"') == HeaderKey("Subject", "K\u00e4se")
    assert search_wire(b"CHARSET latin1 BODY K\xe4se") == BodyKey("K\u00e4se")
    assert search_wire(b'CHARSET UTF-8 SUBJECT "K\xc3\xa4se"') == HeaderKey("Subject", "K\u00e4se")
    assert search_wire(b'SUBJECT "K\xc3\xa4se"') == HeaderKey("Subject", "K\u00e4se")
    assert search_wire(b'CHARSET ISO-8859-1 SUBJECT "a\\\\b\\"c"') == HeaderKey("Subject", 'a\\b"c')
    # Not UTF-8 where UTF-8 is said: BAD (as Dovecot).
    with pytest.raises(IMAPSyntaxError):
        search_wire(b'CHARSET UTF-8 SUBJECT "K\xe4se"')
    with pytest.raises(IMAPSyntaxError):
        search_wire(b'SUBJECT K\xe4se')
    # Outside SEARCH a backslash escape is still only \" or \\.
    with pytest.raises(IMAPSyntaxError):
        tokenize('"K\\xe4se"')


@pytest.mark.parametrize("charset", ["X-UNKNOWN", "x-mac-roman", "base64", "rot13", "hex",
                                     "zlib", "idna", "punycode", "unicode_escape", "undefined"])
def test_search_charsets_that_are_not(charset: str) -> None:
    with pytest.raises(SearchCharsetError):
        parse_search(f"CHARSET {charset} SUBJECT x")


def test_every_listed_charset_is_one_python_decodes() -> None:
    assert "UTF-8" in SEARCH_CHARSETS_LISTED and "ISO-8859-1" in SEARCH_CHARSETS_LISTED
    for name in SEARCH_CHARSETS_LISTED:
        assert search_codec(name) is not None, name


# -- mailboxes, LIST, APPEND, STATUS, dates -------------------------------------------


def test_modified_utf7() -> None:
    # RFC 3501 5.1.3's example.
    assert decode_mailbox_name("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert encode_mailbox_name("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert encode_mailbox_name("Tom & Jerry") == "Tom &- Jerry"
    assert decode_mailbox_name("Tom &- Jerry") == "Tom & Jerry"
    assert encode_mailbox_name("Entwürfe") == "Entw&APw-rfe"
    for name in ["", "a/b", "😀 x", "ü&ü", "&&", "日本語"]:
        assert decode_mailbox_name(encode_mailbox_name(name)) == name
    for bad in ["&U,BTFw", "&Jjo!-", "&AGE-", "ü", "&A-"]:
        with pytest.raises(IMAPSyntaxError):
            decode_mailbox_name(bad)


def test_mailbox_names() -> None:
    assert parse_mailbox(Atom("inbox")) == "INBOX"
    assert parse_mailbox(String(b"InBox")) == "INBOX"
    assert parse_mailbox(String(b"INBOX.Sub")) == "INBOX.Sub"
    assert parse_mailbox(Atom("Entw&APw-rfe")) == "Entwürfe"
    assert parse_mailbox(String("Entwürfe".encode(), literal=True), utf8=True) == "Entwürfe"
    assert parse_mailbox(Atom("NIL")) == "NIL"
    with pytest.raises(IMAPSyntaxError):
        parse_mailbox([Atom("x")])


def test_list() -> None:
    assert parse_list('"" *', ()) == ("", "*")
    assert parse_list('~/Mail/ %', ()) == ("~/Mail/", "%")
    assert list_pattern_matches("", "*", "a/b/c")
    assert list_pattern_matches("", "%", "a")
    assert not list_pattern_matches("", "%", "a/b")
    assert list_pattern_matches("a/", "%", "a/b")
    assert list_pattern_matches("", "a/%/c", "a/b/c")
    assert not list_pattern_matches("", "a/%", "a/b/c")
    assert list_pattern_matches("", "inbox", "INBOX")
    assert list_pattern_matches("", "Inbox/%", "INBOX/x")
    assert not list_pattern_matches("", "inbo", "INBOX")
    assert list_pattern_matches("", "x.y", "x.y") and not list_pattern_matches("", "x.y", "xzy")
    assert list_pattern_matches("", "%", "a.b", ".") is False


def test_append() -> None:
    command = server_command(
        b'a APPEND saved-messages (\\Seen) "17-Jul-1996 02:44:25 -0700" {11}\r\n'
        b"Hi\r\n\r\nthere\r\n"
    )
    assert command.verb == "APPEND"
    request = parse_append(command.args, command.literals)
    assert request.mailbox == "saved-messages"
    assert request.flags == ("\\Seen",)
    assert request.internaldate == datetime(1996, 7, 17, 2, 44, 25,
                                            tzinfo=timezone(-timedelta(hours=7)))
    assert request.message == b"Hi\r\n\r\nthere"[:11]
    plain = parse_append("INBOX {3}", [b"abc"])
    assert (plain.flags, plain.internaldate, plain.message) == ((), None, b"abc")
    for args, lits in [("INBOX", ()), ('INBOX "abc"', ()), ("INBOX (\\Seen) x {1}", (b"a",)),
                       ("INBOX (\\Recent) {1}", (b"a",))]:
        with pytest.raises(IMAPSyntaxError):
            parse_append(args, lits)


def test_status() -> None:
    assert parse_status("inbox (messages UIDNEXT)") == ("INBOX", ("MESSAGES", "UIDNEXT"))
    for bad in ("INBOX", "INBOX ()", "INBOX (FOO)"):
        with pytest.raises(IMAPSyntaxError):
            parse_status(bad)


def test_dates() -> None:
    assert parse_date("1-Feb-1994") == date(1994, 2, 1)
    assert parse_date(String(b"01-feb-1994")) == date(1994, 2, 1)
    assert parse_datetime(" 1-Feb-1994 00:00:00 +0000").day == 1
    parsed = parse_datetime("17-Jul-1996 02:44:25 +0530")
    assert parsed.utcoffset() == timedelta(hours=5, minutes=30)
    for bad in ("1-Foo-1994", "32-Jan-1994", "1994-02-01", "1-Feb-94"):
        with pytest.raises(IMAPSyntaxError):
            parse_date(bad)
    for bad in ("17-Jul-1996 02:44:25", "17-Jul-1996 25:44:25 -0700",
                "17-Jul-1996 02:44:25 -0760"):
        with pytest.raises(IMAPSyntaxError):
            parse_datetime(bad)
