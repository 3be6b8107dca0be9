"""imap_fetch: FETCH data items rendered from raw (LF-stored) messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import NEED_DATA, Role
from mailtalk.protocols.imap import IMAPConnection
from mailtalk.protocols.imap_events import Untagged
from mailtalk.servers.imap.binary import CorruptTransferEncoding, UnknownTransferEncoding
from mailtalk.servers.imap.fetch import format_internaldate, render_fetch, sets_seen
from mailtalk.servers.imap.message import FetchMessage, to_crlf
from mailtalk.servers.imap.message_args import parse_fetch
from mailtalk.servers.imap.output import render_string

PLAIN = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    b"From: Terry Gray <gray@cac.washington.edu>\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\n"
    b"To: imap@cac.washington.edu\n"
    b"cc: minutes@CNRI.Reston.VA.US,\n"
    b"   John Klensin <KLENSIN@MIT.EDU>\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    b"\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\n"
    b"Line two\n"
)

MIXED = b"""From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>
To: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, "Q" <q@x.test>
Subject: mixed
Date: Thu, 13 Feb 1969 23:32:54 -0330
Message-ID: <1234@local.machine.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

This is the preamble.
--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Gr=C3=BC=C3=9Fe
--inner
Content-Type: text/html; charset=utf-8

<p>Hi</p>
--inner--

--outer
Content-Type: application/octet-stream; name="data.bin"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="data.bin"
Content-Language: en, de
Content-Location: http://example.com/
 data.bin
Content-ID: <part3@example>
Content-Description: some data

AAECAw==
--outer
Content-Type: message/rfc822

From: inner@example.org
Subject: forwarded
Content-Type: text/plain

forwarded body
second line
--outer--
epilogue
"""

INTERNAL = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))


def msg(raw: bytes, **kw: object) -> FetchMessage:
    return FetchMessage(raw, uid=int(kw.get("uid", 4)),  # type: ignore[call-overload]
                        flags=["\\Seen"], internaldate=INTERNAL)


def fetch(raw: bytes, items: str, *, uid: bool = False) -> tuple[str, list[bytes]]:
    result = render_fetch(parse_fetch(f"1 {items}").items, msg(raw), uid=uid)
    return result.text, result.literals


def test_simple_items() -> None:
    text, literals = fetch(PLAIN, "(FLAGS UID RFC822.SIZE INTERNALDATE)")
    size = len(to_crlf(PLAIN))
    assert text == (f'FLAGS (\\Seen) UID 4 RFC822.SIZE {size} '
                    f'INTERNALDATE "17-Jul-1996 02:44:25 -0700"')
    assert literals == []
    assert fetch(PLAIN, "FLAGS", uid=True)[0] == "UID 4 FLAGS (\\Seen)"
    assert fetch(PLAIN, "(UID FLAGS)", uid=True)[0] == "UID 4 FLAGS (\\Seen)"


def test_size_without_conversion_matches_crlf() -> None:
    for raw in (PLAIN, MIXED, to_crlf(PLAIN), b"a\r\nb\nc"):
        assert FetchMessage(raw, uid=1).size == len(to_crlf(raw))
    assert FetchMessage(PLAIN, uid=1, rfc822_size=7).size == 7


def test_internaldate_format() -> None:
    assert format_internaldate(datetime(1994, 2, 1, 8, 0, 1, tzinfo=UTC)) == (
        "01-Feb-1994 08:00:01 +0000")
    assert format_internaldate(0.0) == "01-Jan-1970 00:00:00 +0000"


def test_rfc3501_bodystructure_example() -> None:
    # RFC 3501 7.4.2: ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)
    body = b"x" * 26 + b"\n"
    raw = b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n\n" + body * 92
    assert len(to_crlf(body * 92)) == 2576
    text, _ = fetch(raw, "BODY")
    assert text == 'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 2576 92)'
    body = b"x" * 31 + b"\n"
    raw = b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n\n" + body * 92
    assert fetch(raw, "BODY")[0] == (
        'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3036 92)')
    text, _ = fetch(raw, "BODYSTRUCTURE")
    assert text == ('BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" '
                    "3036 92 NIL NIL NIL NIL)")


def test_default_content_type() -> None:
    assert fetch(b"Subject: x\n\nhi\n", "BODY")[0] == (
        'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 4 1)')


def test_rfc3501_envelope_example() -> None:
    text, literals = fetch(PLAIN, "ENVELOPE")
    assert literals == []
    assert text == (
        'ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" '
        '"IMAP4rev1 WG mtg summary and minutes" '
        '(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        '(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        '(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        '((NIL NIL "imap" "cac.washington.edu")) '
        '((NIL NIL "minutes" "CNRI.Reston.VA.US")'
        '("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
        '"<B27397-0100000@cac.washington.edu>")'
    )


def test_envelope_groups_encoded_words_and_missing_fields() -> None:
    text, _ = fetch(MIXED, "ENVELOPE")
    assert text == (
        'ENVELOPE ("Thu, 13 Feb 1969 23:32:54 -0330" "mixed" '
        '(("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=" NIL "keld" "dkuug.dk")) '
        '(("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=" NIL "keld" "dkuug.dk")) '
        '(("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=" NIL "keld" "dkuug.dk")) '
        '((NIL NIL "A Group" NIL)("Ed Jones" NIL "c" "a.test")(NIL NIL "joe" "where.test")'
        '("John" NIL "jdoe" "one.test")(NIL NIL NIL NIL)("Q" NIL "q" "x.test")) '
        'NIL NIL NIL "<1234@local.machine.example>")'
    )
    bare = b"Subject: only\nSender: \nReply-To: <@route.a,@route.b:r@x.test>\nTo: user\n\nx\n"
    text, _ = fetch(bare, "ENVELOPE")
    assert text == ('ENVELOPE (NIL "only" NIL NIL ((NIL "@route.a,@route.b" "r" "x.test")) '
                    '((NIL NIL "user" "MISSING_DOMAIN")) NIL NIL NIL NIL)')
    assert fetch(b"From: a@b (Real Name)\n\n", "ENVELOPE")[0].startswith(
        'ENVELOPE (NIL NIL (("Real Name" NIL "a" "b"))')


def test_envelope_8bit_and_quotes_use_literals_or_escapes() -> None:
    raw = 'Subject: Grüße "x" \\ y\nFrom: a@b\n\n'.encode()
    text, literals = fetch(raw, "ENVELOPE")
    subject = 'Grüße "x" \\ y'.encode()
    assert text.startswith(f"ENVELOPE (NIL {{{len(subject)}}} ")
    assert literals == [subject]
    text, literals = fetch(b'Subject: say "hi" \\o/ {5}\n\n', "ENVELOPE")
    assert literals == [b'say "hi" \\o/ {5}']  # a {n} lookalike would confuse the core
    text, literals = fetch(b'Subject: say "hi" \\o/\n\n', "ENVELOPE")
    assert text.startswith('ENVELOPE (NIL "say \\"hi\\" \\\\o/" NIL')
    assert render_string(None) == ("NIL", [])
    assert render_string(b"a\r\nb") == ("{4}", [b"a\r\nb"])


MIXED_STRUCTURE = (
    '((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 15 1 NIL NIL NIL NIL)'
    '("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 9 1 NIL NIL NIL NIL) '
    '"ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL)'
    '("APPLICATION" "OCTET-STREAM" ("NAME" "data.bin") "<part3@example>" "some data" '
    '"BASE64" 8 NIL ("ATTACHMENT" ("FILENAME" "data.bin")) ("en" "de") '
    '"http://example.com/data.bin")'
    '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 100 '
    '(NIL "forwarded" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) '
    '((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL) '
    '("TEXT" "PLAIN" NIL NIL NIL "7BIT" 27 2 NIL NIL NIL NIL) 6 NIL NIL NIL NIL) '
    '"MIXED" ("BOUNDARY" "outer") NIL NIL NIL)'
)


def test_multipart_bodystructure() -> None:
    text, literals = fetch(MIXED, "BODYSTRUCTURE")
    assert literals == []
    assert text == "BODYSTRUCTURE " + MIXED_STRUCTURE
    text, _ = fetch(MIXED, "BODY")
    assert text == (
        'BODY ((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 15 1)'
        '("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 9 1) "ALTERNATIVE")'
        '("APPLICATION" "OCTET-STREAM" ("NAME" "data.bin") "<part3@example>" "some data" '
        '"BASE64" 8)'
        '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 100 '
        '(NIL "forwarded" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) '
        '((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL) '
        '("TEXT" "PLAIN" NIL NIL NIL "7BIT" 27 2) 6) "MIXED")'
    )


def test_crlf_storage_renders_the_same() -> None:
    assert fetch(to_crlf(MIXED), "(BODYSTRUCTURE BODY[])") == fetch(
        MIXED, "(BODYSTRUCTURE BODY[])")


def test_sections() -> None:
    crlf = to_crlf(MIXED)
    header_end = crlf.index(b"\r\n\r\n") + 4

    def one(section: str) -> tuple[str, list[bytes]]:
        return fetch(MIXED, f"BODY.PEEK[{section}]")

    assert one("") == (f"BODY[] {{{len(crlf)}}}", [crlf])
    assert one("HEADER")[1] == [crlf[:header_end]]
    assert one("TEXT")[1] == [crlf[header_end:]]
    assert one("1.1") == ("BODY[1.1] {15}", [b"Gr=C3=BC=C3=9Fe"])
    assert one("1.2")[1] == [b"<p>Hi</p>"]
    assert one("1")[1][0].startswith(b"--inner\r\n") and one("1")[1][0].endswith(b"--inner--\r\n")
    assert one("2") == ("BODY[2] {8}", [b"AAECAw=="])
    assert one("2.MIME")[1][0].startswith(b"Content-Type: application/octet-stream")
    assert one("2.MIME")[1][0].endswith(b"some data\r\n\r\n")
    assert one("3")[1] == [b"From: inner@example.org\r\nSubject: forwarded\r\n"
                           b"Content-Type: text/plain\r\n\r\nforwarded body\r\nsecond line"]
    assert one("3.HEADER")[1] == [b"From: inner@example.org\r\nSubject: forwarded\r\n"
                                  b"Content-Type: text/plain\r\n\r\n"]
    assert one("3.TEXT")[1] == [b"forwarded body\r\nsecond line"]
    assert one("3.1")[1] == [b"forwarded body\r\nsecond line"]
    assert one("3.HEADER.FIELDS (SUBJECT)")[1] == [b"Subject: forwarded\r\n\r\n"]
    assert one("3.MIME")[1] == [b"Content-Type: message/rfc822\r\n\r\n"]
    # Nonexistent parts, and HEADER of a part that is not a message: NIL.
    for missing in ("4", "1.3", "2.1", "2.HEADER", "1.1.1", "3.2"):
        assert one(missing) == (f"BODY[{missing}] NIL", [])


def test_single_part_sections() -> None:
    crlf = to_crlf(PLAIN)
    body = crlf[crlf.index(b"\r\n\r\n") + 4 :]
    assert fetch(PLAIN, "BODY.PEEK[1]")[1] == [body]
    assert fetch(PLAIN, "BODY.PEEK[TEXT]")[1] == [body]
    assert fetch(PLAIN, "BODY.PEEK[2]")[0] == "BODY[2] NIL"
    assert fetch(PLAIN, "BODY.PEEK[1.MIME]")[1][0].startswith(b"Date: ")


def test_header_fields() -> None:
    text, literals = fetch(PLAIN, "BODY.PEEK[HEADER.FIELDS (subject CC From)]")
    assert text == f"BODY[HEADER.FIELDS (subject CC From)] {{{len(literals[0])}}}"
    assert literals == [
        b"From: Terry Gray <gray@cac.washington.edu>\r\n"
        b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
        b"cc: minutes@CNRI.Reston.VA.US,\r\n   John Klensin <KLENSIN@MIT.EDU>\r\n\r\n"
    ]
    text, literals = fetch(PLAIN, 'BODY.PEEK[HEADER.FIELDS.NOT (DATE "Message-Id" To cc '
                                  "mime-version content-type)]")
    assert literals == [b"From: Terry Gray <gray@cac.washington.edu>\r\n"
                        b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n\r\n"]
    assert fetch(PLAIN, "BODY.PEEK[HEADER.FIELDS (X-NONE)]")[1] == [b"\r\n"]
    # No blank line (and no body): none added.
    assert fetch(b"Subject: a", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]")[1] == [b"Subject: a"
                                                                               b"\r\n"]
    assert fetch(b"Subject: a\n", "BODY.PEEK[HEADER]")[1] == [b"Subject: a\r\n"]
    assert fetch(b"Subject: a\n", "BODY.PEEK[TEXT]")[0] == 'BODY[TEXT] ""'


def test_partial_fetch() -> None:
    crlf = to_crlf(PLAIN)
    assert fetch(PLAIN, "BODY.PEEK[]<0.10>") == ("BODY[]<0> {10}", [crlf[:10]])
    assert fetch(PLAIN, "BODY[]<5.7>") == ("BODY[]<5> {7}", [crlf[5:12]])
    tail = len(crlf) - 3
    assert fetch(PLAIN, f"BODY.PEEK[]<{tail}.100>") == (f"BODY[]<{tail}> {{3}}", [crlf[-3:]])
    assert fetch(PLAIN, "BODY.PEEK[]<99999.10>") == ('BODY[]<99999> ""', [])
    assert fetch(PLAIN, "BODY.PEEK[TEXT]<0.5>")[1] == [b"Hello"]


def test_rfc822_items_and_seen() -> None:
    crlf = to_crlf(PLAIN)
    header_end = crlf.index(b"\r\n\r\n") + 4
    text, literals = fetch(PLAIN, "(RFC822.HEADER RFC822.TEXT RFC822)")
    assert text == (f"RFC822.HEADER {{{header_end}}} RFC822.TEXT {{{len(crlf) - header_end}}} "
                    f"RFC822 {{{len(crlf)}}}")
    assert literals == [crlf[:header_end], crlf[header_end:], crlf]
    message = msg(PLAIN)
    assert render_fetch(parse_fetch("1 BODY[TEXT]").items, message).sets_seen
    assert not render_fetch(parse_fetch("1 BODY.PEEK[TEXT]").items, message).sets_seen
    assert not render_fetch(parse_fetch("1 (RFC822.HEADER FLAGS)").items, message).sets_seen
    assert sets_seen(parse_fetch("1 RFC822").items)


def test_binary() -> None:
    text, literals = fetch(MIXED, "(BINARY.PEEK[2] BINARY.SIZE[2] BINARY[1.1])")
    assert text == "BINARY[2] ~{4} BINARY.SIZE[2] 4 BINARY[1.1] {7}"
    assert literals == [b"\x00\x01\x02\x03", "Grüße".encode()]


# What Dovecot 2.3 answers for these (APPENDed there, then fetched; see the report of
# issue 11 item 6), byte for byte, except where the comment says otherwise.
SINGLE_BASE64 = (b"From: a@b\r\nSubject: b64\r\nContent-Type: text/plain\r\n"
                 b"Content-Transfer-Encoding: base64\r\n\r\nSGVs\r\nbG8=\r\n")
NESTED = (b"From: a@b\r\nSubject: mp\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npre\r\n"
          b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n"
          b"--XX\r\nContent-Type: application/octet-stream\r\n"
          b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n"
          b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
          b"Subject: in\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8=\r\n"
          b"--XX--\r\n")
NESTED_BINARY = (b"From: a@b\r\nSubject: mp\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npre\r\n"
                 b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Content-Transfer-Encoding: binary\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
                 b"--XX\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\x03\r\n"
                 b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
                 b"Subject: in\r\nContent-Transfer-Encoding: binary\r\n\r\nHello\r\n"
                 b"--XX--\r\n")


def test_binary_of_a_whole_message_decodes_every_part() -> None:
    text, literals = fetch(SINGLE_BASE64, "(BINARY.PEEK[] BINARY.SIZE[] BINARY[1] BINARY.SIZE[1])")
    converted = (b"From: a@b\r\nSubject: b64\r\nContent-Type: text/plain\r\n"
                 b"Content-Transfer-Encoding: binary\r\n\r\nHello")
    # Dovecot sends decoded data as ~{n} even without a NUL; RFC 3516 4.2 says it
    # SHOULD be a plain string then, which is what this server does.
    assert text == "BINARY[] {93} BINARY.SIZE[] 93 BINARY[1] {5} BINARY.SIZE[1] 5"
    assert literals == [converted, b"Hello"]
    text, literals = fetch(NESTED, "(BINARY.PEEK[] BINARY.SIZE[] BINARY.SIZE[1] BINARY.SIZE[2] "
                                   "BINARY.PEEK[3] BINARY.PEEK[3.1] BINARY.SIZE[3])")
    assert text == ("BINARY[] ~{379} BINARY.SIZE[] 379 BINARY.SIZE[1] 7 BINARY.SIZE[2] 4 "
                    "BINARY[3] {55} BINARY[3.1] {5} BINARY.SIZE[3] 55")
    inner = b"Subject: in\r\nContent-Transfer-Encoding: binary\r\n\r\nHello"
    assert literals == [NESTED_BINARY, inner, b"Hello"]


def test_binary_partial_says_its_origin_and_a_missing_part_is_nil() -> None:
    text, literals = fetch(NESTED, "(BINARY.PEEK[1]<0.3> BINARY.PEEK[2]<1.2> BINARY.PEEK[2]<10.2>)")
    # Dovecot: ~{2} (for any decoded data); no NUL in these two octets, so {2} here.
    assert text == 'BINARY[1]<0> {3} BINARY[2]<1> {2} BINARY[2]<10> ""'
    assert literals == [b"Gr\xc3", b"\x01\x02"]
    assert fetch(NESTED, "BINARY.PEEK[2]<0.2>")[0] == "BINARY[2]<0> ~{2}"
    # Dovecot: BINARY[9] {0}, BINARY.SIZE[9] 0. BINARY.SIZE must be a number.
    assert fetch(NESTED, "(BINARY.PEEK[9] BINARY.SIZE[9])")[0] == "BINARY[9] NIL BINARY.SIZE[9] 0"


def test_binary_never_sets_seen_by_peek_and_body_never_sends_literal8() -> None:
    assert render_fetch(parse_fetch("1 BINARY[1]").items, msg(NESTED)).sets_seen
    assert not render_fetch(parse_fetch("1 BINARY.PEEK[1]").items, msg(NESTED)).sets_seen
    assert not render_fetch(parse_fetch("1 BINARY.SIZE[1]").items, msg(NESTED)).sets_seen
    raw = b"From: a@b\r\nSubject: nul\r\n\r\nab\x00cd\r\n"
    text, literals = fetch(raw, "(BODY.PEEK[TEXT] BINARY.PEEK[1] BINARY.SIZE[1] RFC822.TEXT)")
    assert text == "BODY[TEXT] {7} BINARY[1] ~{7} BINARY.SIZE[1] 7 RFC822.TEXT {7}"
    assert literals == [b"ab\x80cd\r\n", b"ab\x00cd\r\n", b"ab\x80cd\r\n"]


def leaf(encoding: str, body: bytes) -> bytes:
    return (f"From: a@b\r\nContent-Type: text/plain\r\n"
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n").encode() + body


@pytest.mark.parametrize(("encoding", "body", "decoded"), [
    ("base64", b"SGVsbG8=\r\n\r\n", b"Hello"),
    ("base64", b"  SGVs bG8=  \r\n", b"Hello"),
    ("base64", b"", b""),
    ("base64", b"SGVsbG8", b"Hello"),  # missing padding (Dovecot 2.3 drops the connection)
    ("quoted-printable", b"a=3Db=\r\nc", b"a=bc"),
    ("quoted-printable", b"soft=  \r\nbreak", b"softbreak"),
    ("quoted-printable", b"lower=c3=a4 trailing  \r\nline", b"lower\xc3\xa4 trailing\r\nline"),
    ("quoted-printable", b"x=", b"x"),  # a soft break at the end (Dovecot drops the connection)
    ("8bit", b"8bit \xc3\xa4", b"8bit \xc3\xa4"),
    ("Binary", b"bin", b"bin"),
    (" BASE64 ", b"SGk=", b"Hi"),
    ("base64 (comment)", b"SGk=", b"Hi"),
    ("7BIT", b"a\x00b", b"a\x00b"),
])
def test_binary_decoding(encoding: str, body: bytes, decoded: bytes) -> None:
    text, literals = fetch(leaf(encoding, body), "(BINARY.PEEK[1] BINARY.SIZE[1])")
    assert literals == ([decoded] if decoded else [])
    assert text.endswith(f" BINARY.SIZE[1] {len(decoded)}")


@pytest.mark.parametrize(("encoding", "body", "error"), [
    ("base64", b"SGVs*bG8=", CorruptTransferEncoding),
    ("base64", b"SGVsbG8=junk", CorruptTransferEncoding),
    ("base64", b"SGVsbG8=\r\nV29ybGQ=", CorruptTransferEncoding),
    ("base64", b"S", CorruptTransferEncoding),
    ("base64", b"SGVsb", CorruptTransferEncoding),
    ("quoted-printable", b"bad=ZZ", CorruptTransferEncoding),
    ("x-uuencode", b"begin 644 x\r\n", UnknownTransferEncoding),
])
def test_binary_of_what_does_not_decode(encoding: str, body: bytes, error: type) -> None:
    for items in ("BINARY.PEEK[1]", "BINARY.SIZE[1]", "BINARY.PEEK[]"):
        with pytest.raises(error):
            fetch(leaf(encoding, body), items)
    # BODY[] is not decoded: it is fine.
    assert fetch(leaf(encoding, body), "BODY.PEEK[1]")[1] == ([body] if body else [])


def test_lazy_parsing_for_header_fields() -> None:
    message = msg(PLAIN)
    render_fetch(parse_fetch("1 (FLAGS UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM)])").items,
                 message)
    assert "crlf" not in message.__dict__ and "root" not in message.__dict__


def _client_parse(wire: bytes) -> Untagged:
    client = IMAPConnection(Role.CLIENT)
    client.receive_data(b"* OK ready\r\n")
    client.next_event()
    client.receive_data(wire)
    event = client.next_event()
    assert isinstance(event, Untagged), event
    assert client.next_event() is NEED_DATA
    return event


def test_round_trip_through_the_core() -> None:
    server = IMAPConnection(Role.SERVER)
    message = msg(MIXED)
    items = parse_fetch("1 (UID FLAGS ENVELOPE BODY[] BODY.PEEK[2]<0.3> BINARY[2] "
                        "BODY[HEADER.FIELDS (SUBJECT)] BODY[]<99999.1>)").items
    rendered = render_fetch(items, message)
    wire = server.send(rendered.untagged(7))
    event = _client_parse(wire)
    assert event.kind == "FETCH" and event.number == 7
    assert event.text == f"7 FETCH ({rendered.text})"
    assert list(event.literals) == rendered.literals
    assert event.literals[0] == to_crlf(MIXED)


@settings(max_examples=150)
@given(st.lists(st.sampled_from([b"a", b"\n", b"\r\n", b" ", b"{3}", b"\x00", b"\xff", b":",
                                 b"Subject: ", b"--b", b"\n\n"]), max_size=40))
def test_body_round_trips_exact_crlf_bytes(chunks: list[bytes]) -> None:
    raw = b"".join(chunks)
    message = FetchMessage(raw, uid=1)
    rendered = render_fetch(parse_fetch("1 (BODY[] ENVELOPE BODYSTRUCTURE BODY[TEXT])").items,
                            message)
    event = _client_parse(IMAPConnection(Role.SERVER).send(rendered.untagged(1)))
    assert list(event.literals) == rendered.literals
    expected = to_crlf(raw)
    # A NUL cannot be in an IMAP4rev1 string: BODY[] sends it as 0x80 (as Dovecot).
    assert (event.literals[0] if expected else b"") == expected.replace(b"\0", b"\x80")
    assert "~{" not in rendered.text
    assert message.size == len(expected)
    # BINARY[] keeps it, in a literal8 exactly when there is one.
    binary = render_fetch(parse_fetch("1 BINARY.PEEK[]").items, message)
    event = _client_parse(IMAPConnection(Role.SERVER).send(binary.untagged(1)))
    assert (event.literals[0] if expected else b"") == expected
    assert ("~{" in binary.text) == (b"\0" in expected)


def test_envelope_with_a_control_character_in_from() -> None:
    """A vertical tab (\\x0b) in a From header is white space, not a crash."""
    raw = b"From: Al\x0bice <alice@example.org>\nSubject: x\n\nbody\n"
    message = FetchMessage(raw, uid=1, internaldate=datetime(2026, 1, 1, tzinfo=UTC))
    rendering = render_fetch(parse_fetch("1 ENVELOPE").items, message)
    assert '"alice" "example.org"' in rendering.text
