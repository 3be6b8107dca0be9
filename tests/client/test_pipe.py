"""Pipe mode (stdin not a terminal) as a real process against scripted peers."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.protocols.common import MAX_LINE
from mailtalk.protocols.smtp_client_role import MAX_REPLY_LINES
from tests.client.scripted import assert_error_line, assert_no_traceback, pipe_session
from tests.peers import (
    IMAP_GREETING,
    POP3_GREETING,
    SMTP_GREETING,
    Close,
    Expect,
    Hold,
    SendChunks,
    smtp_ehlo_reply,
)

RSS_LIMIT_KB = 200 * 1024


SMTP_SESSION = [
    SMTP_GREETING,
    Expect(b"EHLO client.test"),
    smtp_ehlo_reply("PIPELINING", "SIZE 10240000", "8BITMIME", "AUTH PLAIN LOGIN"),
    Expect(b"MAIL FROM:<alice@example.com>"),
    b"250 2.1.0 Ok\r\n",
    Expect(b"RCPT TO:<bob@example.com>"),
    b"250 2.1.5 Ok\r\n",
    Expect(b"DATA"),
    b"354 End data with <CR><LF>.<CR><LF>\r\n",
    Expect(b"Subject: hi"),
    Expect(b""),
    Expect(b"..leading dot"),
    Expect(b".\r\n"),
    b"250 2.0.0 Ok: queued as 12345\r\n",
    Expect(b"QUIT"),
    b"221 2.0.0 Bye\r\n",
    Close(),
]
SMTP_INPUT = (
    b"EHLO client.test\nMAIL FROM:<alice@example.com>\nRCPT TO:<bob@example.com>\nDATA\n"
    b"Subject: hi\n\n.leading dot\n.\nQUIT\n"
)


def test_smtp_exchange_in_order() -> None:
    result = pipe_session(SMTP_SESSION, "smtp", stdin=SMTP_INPUT)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert result.out_lines == [
        "S: 220 peer.test ESMTP scripted",
        "C: EHLO client.test",
        "S: 250-peer.test greets you",
        "S: 250-PIPELINING",
        "S: 250-SIZE 10240000",
        "S: 250-8BITMIME",
        "S: 250 AUTH PLAIN LOGIN",
        "C: MAIL FROM:<alice@example.com>",
        "S: 250 2.1.0 Ok",
        "C: RCPT TO:<bob@example.com>",
        "S: 250 2.1.5 Ok",
        "C: DATA",
        "S: 354 End data with <CR><LF>.<CR><LF>",
        "C: Subject: hi",
        "C: ",
        "C: ..leading dot",  # shown as sent: dot-stuffed
        "C: .",
        "S: 250 2.0.0 Ok: queued as 12345",
        "C: QUIT",
        "S: 221 2.0.0 Bye",
    ]
    # Exactly these bytes, CRLF-ended, reached the server.
    assert result.received == (
        b"EHLO client.test\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\n"
        b"DATA\r\nSubject: hi\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n"
    )
    assert "# connected to 127.0.0.1:" in result.stderr


def test_permanent_failure_exits_1_but_finishes_the_script() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), b"250 ok\r\n", Expect(b"MAIL"),
              b"550 5.7.1 relaying denied\r\n", Expect(b"QUIT"), b"221 bye\r\n", Close()]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nMAIL FROM:<a@b>\nQUIT\n")
    assert result.returncode == 1
    assert "S: 550 5.7.1 relaying denied" in result.out_lines
    assert result.out_lines[-1] == "S: 221 bye"
    assert result.error_lines == []


def test_transient_failure_exits_1() -> None:
    script = [SMTP_GREETING, Expect(b"HELO"), b"451 4.3.0 try later\r\n", Expect(b"QUIT"),
              b"221 bye\r\n"]
    result = pipe_session(script, "smtp", stdin=b"HELO me\nQUIT\n")
    assert result.returncode == 1


def test_multiline_reply_shown_whole() -> None:
    extensions = [f"X-EXT{n} value {n}" for n in range(40)]
    script = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply(*extensions), Expect(b"QUIT"),
              b"221-see you\r\n221-and goodbye\r\n221 really\r\n"]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 0
    lines = result.out_lines
    start = lines.index("C: EHLO me")
    assert lines[start + 1 : start + 43] == (
        ["S: 250-peer.test greets you"]
        + [f"S: 250-{e}" for e in extensions[:-1]]
        + [f"S: 250 {extensions[-1]}"]
        + ["C: QUIT"]
    )
    assert lines[-3:] == ["S: 221-see you", "S: 221-and goodbye", "S: 221 really"]


def test_pop3_multiline_body_shown_whole() -> None:
    script = [POP3_GREETING, Expect(b"USER"), b"+OK\r\n", Expect(b"PASS"), b"+OK in\r\n",
              Expect(b"RETR 1"),
              b"+OK 3 lines\r\nSubject: x\r\n\r\n..dotted\r\n.\r\n",
              Expect(b"QUIT"), b"+OK bye\r\n", Close()]
    result = pipe_session(script, "pop3", stdin=b"USER a\nPASS s\nRETR 1\nQUIT\n")
    assert result.returncode == 0, result.stderr
    body_start = result.out_lines.index("S: +OK 3 lines")
    assert result.out_lines[body_start + 1 : body_start + 5] == [
        "S: Subject: x", "S: ", "S: ..dotted", "S: ."
    ]
    assert "C: PASS ***" in result.out_lines  # the screen never shows the password either


def test_imap_tags_added_and_waits_for_tagged_completion() -> None:
    script = [IMAP_GREETING, Expect(b"a001 LOGIN alice"),
              b"* CAPABILITY IMAP4rev1\r\na001 OK logged in\r\n",
              Expect(b"a002 SELECT INBOX"),
              b"* 2 EXISTS\r\n* FLAGS (\\Seen)\r\na002 OK [READ-WRITE] done\r\n",
              Expect(b"a003 LOGOUT"), b"* BYE\r\na003 OK bye\r\n", Close()]
    result = pipe_session(script, "imap", stdin=b"LOGIN alice secret\nSELECT INBOX\nLOGOUT\n")
    assert result.returncode == 0, result.stderr
    assert result.out_lines == [
        "S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted IMAP ready",
        "C: a001 LOGIN alice ***",
        "S: * CAPABILITY IMAP4rev1",
        "S: a001 OK logged in",
        "C: a002 SELECT INBOX",
        "S: * 2 EXISTS",
        "S: * FLAGS (\\Seen)",
        "S: a002 OK [READ-WRITE] done",
        "C: a003 LOGOUT",
        "S: * BYE",
        "S: a003 OK bye",
    ]
    assert b"a001 LOGIN alice secret\r\n" in result.received


def test_imap_no_exits_1() -> None:
    script = [IMAP_GREETING, Expect(b"a001 LOGIN"), b"a001 NO [AUTHENTICATIONFAILED] no\r\n",
              Expect(b"a002 LOGOUT"), b"* BYE\r\na002 OK\r\n"]
    result = pipe_session(script, "imap", stdin=b"LOGIN a b\nLOGOUT\n")
    assert result.returncode == 1


# --------------------------------------------------------------------------- the server misbehaves


def test_server_closes_mid_reply() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), b"250-first line only\r\n", Close()]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 5
    assert_error_line(result, "closed the connection")
    assert "S: (incomplete: the server closed the connection mid-reply)" in result.out_lines
    assert b"QUIT" not in result.received


def test_server_closes_mid_reply_shows_what_came() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), b"250-first line only\r\n", Close()]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nQUIT\n")
    assert "S: 250-first line only" in result.out_lines


def test_server_closes_instead_of_answering() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), b"250 ok\r\n", Expect(b"NOOP"), Close()]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nNOOP\nQUIT\n")
    assert result.returncode == 5
    assert_error_line(result, "127.0.0.1 closed the connection without answering")


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
@pytest.mark.parametrize("stdin", [b"QUIT\n", b""])
def test_server_closes_before_greeting(protocol: str, stdin: bytes) -> None:
    result = pipe_session([Close()], protocol, stdin=stdin)
    assert result.returncode == 5
    assert_error_line(result, "127.0.0.1 closed the connection before greeting")
    assert result.stdout == ""


def test_server_says_bye_as_greeting_then_more_lines() -> None:
    script = [b"* BYE too busy\r\n", Close()]
    result = pipe_session(script, "imap", stdin=b"a1 LOGIN a b\n")
    assert result.returncode == 5
    assert result.out_lines[0] == "S: * BYE too busy"
    assert_error_line(result, "closed")


def test_server_closes_and_more_lines_follow() -> None:
    """After the server said goodbye, a further line is an error, not a crash."""
    script = [SMTP_GREETING, Expect(b"QUIT"), b"221 bye\r\n", Close()]
    result = pipe_session(script, "smtp", stdin=b"QUIT\nNOOP\n")
    assert result.returncode == 5
    assert_error_line(result, "closed")


def test_garbage_instead_of_smtp_reply() -> None:
    script = [b"HTTP/1.1 400 Bad Request\r\n\r\n", Hold()]
    result = pipe_session(script, "smtp", stdin=b"QUIT\n")
    assert result.returncode == 5
    assert_error_line(result, "not an SMTP reply line", "HTTP/1.1 400")


def test_non_utf8_reply_is_escaped() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), b"250 caf\xe9 \xff\xfe\x00 ok\r\n",
              Expect(b"QUIT"), b"221 \x80bye\r\n"]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 0
    assert_no_traceback(result)
    assert "S: 250 caf\\xe9 \\xff\\xfe\\x00 ok" in result.out_lines  # NUL escaped too
    assert "S: 221 \\x80bye" in result.out_lines


def test_non_utf8_reply_raw_mode_escapes_everything() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), b"250 \xff\x00\tok\r\n", Expect(b"QUIT"),
              b"221 bye\r\n"]
    result = pipe_session(script, "smtp", "--raw", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 0
    assert "S: 250 \\xff\\x00\\tok\\r\\n" in result.out_lines


def test_raw_shows_crlf_escapes() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), b"250-a\r\n250 b\n", Expect(b"QUIT"),
              b"221 bye\r\n"]
    result = pipe_session(script, "smtp", "--raw", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 0
    assert result.out_lines == [
        "S: 220 peer.test ESMTP scripted\\r\\n",
        "C: EHLO me\\r\\n",  # what was sent, as exactly as what came
        "S: 250-a\\r\\n",
        "S: 250 b\\n",  # a bare LF is shown as such
        "C: QUIT\\r\\n",
        "S: 221 bye\\r\\n",
    ]


def _flood(size: int) -> Iterator[bytes]:
    yield b"250 "
    chunk = b"x" * (1 << 20)
    for _ in range(size >> 20):
        yield chunk
    yield b"\r\n"


def test_overlong_reply_line_is_cut_and_memory_stays_bounded() -> None:
    size = 50 << 20
    script = [SMTP_GREETING, Expect(b"EHLO"), SendChunks(lambda: _flood(size)),
              Expect(b"QUIT"), b"221 bye\r\n", Close()]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    lines = result.out_lines
    long_line = next(line for line in lines if line.startswith("S: 250 x"))
    assert len(long_line) == len("S: ") + MAX_LINE
    cut = lines.index(long_line) + 1
    assert lines[cut].startswith("S: (cut: ")
    assert lines[cut + 1 :] == ["C: QUIT", "S: 221 bye"]
    assert len(result.stdout) < 2 * MAX_LINE
    assert result.max_rss_kb < RSS_LIMIT_KB, f"peak RSS {result.max_rss_kb} KiB"


def _endless_reply(lines: int) -> Iterator[bytes]:
    block = b"250-x\r\n" * 10_000
    for _ in range(lines // 10_000):
        yield block


# Half a million lines: 500 times what is kept, and fast enough for a unit test.
ENDLESS_LINES = 500_000


def test_endless_multiline_reply_is_cut_then_completes() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), SendChunks(lambda: _endless_reply(ENDLESS_LINES)),
              b"250 finally\r\n", Expect(b"QUIT"), b"221 bye\r\n", Close()]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.out_lines if line == "S: 250-x"]
    assert len(shown) == MAX_REPLY_LINES
    assert any(line.startswith("S: (cut: ") for line in result.out_lines)
    assert result.out_lines[-2:] == ["C: QUIT", "S: 221 bye"]
    assert result.max_rss_kb < RSS_LIMIT_KB, f"peak RSS {result.max_rss_kb} KiB"


def test_endless_multiline_reply_then_close() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), SendChunks(lambda: _endless_reply(ENDLESS_LINES)),
              Close()]
    result = pipe_session(script, "smtp", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 5
    assert_error_line(result, "closed the connection")
    assert result.max_rss_kb < RSS_LIMIT_KB, f"peak RSS {result.max_rss_kb} KiB"


def test_endless_multiline_reply_then_silence_times_out() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), SendChunks(lambda: _endless_reply(100_000)), Hold()]
    result = pipe_session(script, "smtp", "--timeout", "0.5", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 5  # connected: not "could not connect"
    assert_error_line(result, "no reply from 127.0.0.1 within 0.5 s")


def test_reply_timeout() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), Hold()]
    result = pipe_session(script, "smtp", "--timeout", "0.5", stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 5  # connected: not "could not connect"
    assert_error_line(result, "no reply", "within 0.5 s")
    assert result.seconds < 2.5
    assert b"QUIT" not in result.received


def test_greeting_timeout() -> None:
    result = pipe_session([Hold()], "imap", "--timeout", "0.5", stdin=b"")
    assert result.returncode == 5  # connected: not "could not connect"
    assert_error_line(result, "no reply", "within 0.5 s")


# --------------------------------------------------------------------------- transcripts


def test_transcript_redacts_auth_plain(tmp_path: Path) -> None:
    secret_b64 = base64.b64encode(b"\0alice\0hunter2").decode()
    script = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("AUTH PLAIN LOGIN"),
              Expect(b"AUTH PLAIN " + secret_b64.encode()), b"235 2.7.0 ok\r\n",
              Expect(b"AUTH LOGIN"), b"334 VXNlcm5hbWU6\r\n",
              Expect(b"YWxpY2U="), b"334 UGFzc3dvcmQ6\r\n",
              Expect(b"aHVudGVyMg=="), b"503 already\r\n",
              Expect(b"QUIT"), b"221 bye\r\n"]
    transcript = tmp_path / "session.log"
    stdin = f"EHLO me\nAUTH PLAIN {secret_b64}\nAUTH LOGIN\nYWxpY2U=\naHVudGVyMg==\nQUIT\n"
    result = pipe_session(script, "smtp", "--transcript", str(transcript), stdin=stdin.encode())
    assert result.returncode == 1  # the 503
    text = transcript.read_text()
    assert stat.S_IMODE(transcript.stat().st_mode) == 0o600
    assert text.startswith("# mailtalk ")
    assert f"smtp://127.0.0.1:{result.port}" in text.splitlines()[0]
    assert secret_b64 not in text and "aHVudGVyMg==" not in text and "YWxpY2U=" not in text
    assert "C: AUTH PLAIN ***\n" in text
    body = [line for line in text.splitlines() if line[:2] in ("C:", "S:")]
    assert body == [
        "S: 220 peer.test ESMTP scripted",
        "C: EHLO me",
        "S: 250-peer.test greets you",
        "S: 250 AUTH PLAIN LOGIN",
        "C: AUTH PLAIN ***",
        "S: 235 2.7.0 ok",
        "C: AUTH LOGIN",
        "S: 334 VXNlcm5hbWU6",
        "C: ***",
        "S: 334 UGFzc3dvcmQ6",
        "C: ***",
        "S: 503 already",
        "C: QUIT",
        "S: 221 bye",
    ]
    # The secrets did reach the server, and the screen did not show them.
    assert f"AUTH PLAIN {secret_b64}".encode() in result.received
    assert secret_b64 not in result.stdout


def test_transcript_redacts_pop3_pass_and_appends(tmp_path: Path) -> None:
    transcript = tmp_path / "pop.log"
    transcript.write_text("# an older session\n")
    script = [POP3_GREETING, Expect(b"USER alice"), b"+OK\r\n", Expect(b"PASS hunter2"),
              b"+OK logged in\r\n", Expect(b"QUIT"), b"+OK bye\r\n", Close()]
    result = pipe_session(script, "pop3", "--transcript", str(transcript),
                          stdin=b"USER alice\nPASS hunter2\nQUIT\n")
    assert result.returncode == 0, result.stderr
    text = transcript.read_text()
    assert text.startswith("# an older session\n# mailtalk ")
    assert "hunter2" not in text
    assert "C: USER alice\n" in text and "C: PASS ***\n" in text
    assert "S: +OK logged in\n" in text
    assert "hunter2" not in result.stdout


def test_show_secrets_keeps_them_in_the_transcript(tmp_path: Path) -> None:
    transcript = tmp_path / "pop.log"
    script = [POP3_GREETING, Expect(b"USER"), b"+OK\r\n", Expect(b"PASS"), b"+OK\r\n",
              Expect(b"QUIT"), b"+OK\r\n"]
    pipe_session(script, "pop3", "--show-secrets", "--transcript", str(transcript),
                 stdin=b"USER a\nPASS hunter2\nQUIT\n")
    assert "C: PASS hunter2\n" in transcript.read_text()


def test_auth_meta_command_with_password_from_environment(tmp_path: Path) -> None:
    transcript = tmp_path / "auth.log"
    expected = base64.b64encode(b"\0alice\0s3cret").decode()
    script = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("AUTH PLAIN"),
              Expect(b"AUTH PLAIN"), b"334 \r\n", Expect(expected.encode()),
              b"235 2.7.0 Authentication successful\r\n", Expect(b"QUIT"), b"221 bye\r\n"]
    result = pipe_session(script, "smtp", "--transcript", str(transcript),
                          stdin=b"EHLO me\n:auth plain alice\nQUIT\n",
                          env={"MAILTALK_PASSWORD": "s3cret"})
    assert result.returncode == 0, result.stderr
    assert "# authenticated as alice" in result.stderr
    assert expected not in transcript.read_text() + result.stdout + result.stderr
    assert "s3cret" not in transcript.read_text() + result.stdout + result.stderr


def test_unknown_meta_command_in_pipe_is_one_line() -> None:
    script = [SMTP_GREETING, Hold()]
    result = pipe_session(script, "smtp", stdin=b":bogus\nQUIT\n")
    assert result.returncode == 1
    assert_error_line(result, "unknown command :bogus")


def test_quit_meta_command_stops_reading() -> None:
    script = [SMTP_GREETING, Expect(b"NOOP"), b"250 ok\r\n", Hold()]
    result = pipe_session(script, "smtp", stdin=b"NOOP\n:quit\nRSET\n")
    assert result.returncode == 0
    assert b"RSET" not in result.received


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_input_line_endings_become_crlf(newline: bytes) -> None:
    script = [SMTP_GREETING, Expect(b"NOOP"), b"250 ok\r\n", Expect(b"QUIT"), b"221 bye\r\n"]
    result = pipe_session(script, "smtp", stdin=b"NOOP" + newline + b"QUIT" + newline)
    assert result.returncode == 0
    assert result.received == b"NOOP\r\nQUIT\r\n"
