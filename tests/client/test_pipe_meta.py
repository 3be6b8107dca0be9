"""Pipe mode's meta-commands and BDAT, as a real process against scripted peers and the
reference servers: :starttls after HELO, :auth checking what is offered before any
password is used, BDAT chunks sent before the reply is awaited, :reconnect options."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.client.scripted import assert_error_line, assert_no_traceback, mailtalk
from tests.peers import (
    POP3_GREETING,
    SMTP_GREETING,
    Expect,
    ExpectBytes,
    Hold,
    ScriptedPeer,
    smtp_ehlo_reply,
)

PASSWORD = {"MAILTALK_PASSWORD": "secret", "NETRC": "/nonexistent"}
PLAIN = base64.b64encode(b"\0alice\0secret")


def at(peer: ScriptedPeer) -> str:
    return f"127.0.0.1:{peer.port}"


# ------------------------------------------------------------------ :starttls


def test_starttls_after_helo_says_ehlo_first(mailtalk_servers: Any) -> None:
    servers = mailtalk_servers(smtp=0)
    result = mailtalk(
        "smtp", f"localhost:{servers.port('smtp')}", "--cafile", str(servers.cafile),
        stdin=b"HELO me\n:starttls\nEHLO me\nQUIT\n",
    )
    assert result.returncode == 0, result.stderr
    sent = [line for line in result.out_lines if line.startswith("C: ")]
    assert sent[:3] == ["C: HELO me", f"C: EHLO {sent[1][8:]}", "C: STARTTLS"], sent
    assert "# TLS: TLSv1." in result.stderr
    assert "did not offer STARTTLS" not in result.stderr


def test_starttls_not_offered_after_ehlo_is_one_line() -> None:
    script = [SMTP_GREETING, Expect(b"HELO"), b"250 peer.test\r\n", Expect(b"EHLO"),
              smtp_ehlo_reply("PIPELINING"), Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", at(peer), stdin=b"HELO me\n:starttls\nQUIT\n")
    assert result.returncode == 1
    assert_error_line(result, "the server did not offer STARTTLS in its EHLO reply")
    assert peer.lines() == [b"HELO me", peer.lines()[1]]
    assert peer.lines()[1].startswith(b"EHLO ")


# ------------------------------------------------------------------ :auth


def test_auth_says_ehlo_first_when_none_was_answered(mailtalk_servers: Any) -> None:
    servers = mailtalk_servers(smtp=0, users=[("alice", "secret")])
    result = mailtalk("smtp", f"127.0.0.1:{servers.port('smtp')}",
                      stdin=b":auth plain alice\nQUIT\n", env=PASSWORD)
    assert result.returncode == 0, result.stderr
    sent = [line for line in result.out_lines if line.startswith("C: ")]
    assert sent[0].startswith("C: EHLO ") and sent[1] == "C: AUTH PLAIN", sent
    assert "# authenticated as alice" in result.stderr


def test_auth_not_offered_sends_no_auth_and_names_the_ways_out() -> None:
    # An error ends a pipe-mode script: nothing after it is sent.
    script = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("PIPELINING", "STARTTLS"), Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", at(peer), stdin=b"EHLO me\n:auth plain alice\nQUIT\n",
                          env=PASSWORD)
    assert result.returncode == 1
    assert_error_line(result, "127.0.0.1 does not offer AUTH here", "STARTTLS", "587")
    assert b"AUTH" not in peer.data()


def test_auth_mechanism_not_offered_names_the_offered_ones() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("AUTH LOGIN CRAM-MD5"), Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", at(peer), stdin=b"EHLO me\n:auth plain alice\nQUIT\n",
                          env=PASSWORD)
    assert result.returncode == 1
    assert_error_line(result, "does not offer AUTH PLAIN; it offers LOGIN CRAM-MD5: :auth cram-md5")
    assert b"AUTH" not in peer.data()


def test_pop3_auth_asks_capa_first_and_names_what_is_offered() -> None:
    # A POP3 server offering SASL PLAIN only (as a Dovecot with auth_mechanisms = plain).
    script = [POP3_GREETING, Expect(b"CAPA"),
              b"+OK\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n.\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("pop3", at(peer), stdin=b":auth login alice\nQUIT\n", env=PASSWORD)
    assert result.returncode == 1
    assert_error_line(result, "does not offer AUTH LOGIN; it offers PLAIN: :auth plain")
    assert peer.lines() == [b"CAPA"]


def test_pop3_auth_without_sasl_says_user_and_pass() -> None:
    script = [POP3_GREETING, Expect(b"CAPA"), b"+OK\r\nUSER\r\nTOP\r\n.\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("pop3", at(peer), stdin=b":auth plain alice\nQUIT\n", env=PASSWORD)
    assert result.returncode == 1
    assert_error_line(result, "does not offer AUTH (its CAPA reply has no SASL line)",
                      "it offers USER and PASS")
    assert peer.lines() == [b"CAPA"]


def test_pop3_auth_after_capa_logs_in() -> None:
    script = [POP3_GREETING, Expect(b"CAPA"), b"+OK\r\nSASL PLAIN LOGIN\r\n.\r\n",
              Expect(b"AUTH PLAIN"), b"+ \r\n", Expect(PLAIN), b"+OK logged in\r\n",
              Expect(b"QUIT"), b"+OK bye\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("pop3", at(peer), stdin=b":auth plain alice\nQUIT\n", env=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert "# authenticated as alice" in result.stderr


def test_imap_auth_checks_the_capabilities_first() -> None:
    greeting = b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] scripted IMAP ready\r\n"
    script = [greeting, Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("imap", at(peer), stdin=b":auth plain alice\nLOGOUT\n", env=PASSWORD)
    assert result.returncode == 1
    assert_error_line(result, "does not offer AUTHENTICATE (no AUTH= in its capabilities)",
                      "after STARTTLS (:starttls)")
    assert peer.data() == b""


def test_imap_auth_asks_capability_when_the_greeting_had_none() -> None:
    script = [b"* OK scripted IMAP ready\r\n",  # no [CAPABILITY ...] in it
              Expect(b"a001 CAPABILITY"),
              b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na001 OK done\r\n",
              Expect(b"a002 AUTHENTICATE PLAIN"), b"+ \r\n", Expect(PLAIN),
              b"a002 OK logged in\r\n", Expect(b"a003 LOGOUT"), b"a003 OK bye\r\n", Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("imap", at(peer), stdin=b":auth plain alice\nLOGOUT\n", env=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert "# authenticated as alice" in result.stderr


# ------------------------------------------------------------------ BDAT


def test_bdat_chunk_follows_its_command_before_the_reply_is_awaited() -> None:
    message = b"Subject: chunked\r\n\r\nhello\r\n"
    script = [
        SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("CHUNKING"),
        Expect(b"MAIL"), b"250 ok\r\n", Expect(b"RCPT"), b"250 ok\r\n",
        Expect(f"BDAT {len(message)} LAST".encode()), ExpectBytes(len(message)),
        b"250 2.0.0 Ok: queued\r\n", Expect(b"QUIT"), b"221 bye\r\n", Hold(),
    ]
    stdin = (
        b"EHLO me\nMAIL FROM:<a@peer.test>\nRCPT TO:<b@peer.test>\n"
        + f"BDAT {len(message)} LAST\n".encode()
        + b"Subject: chunked\n\nhello\nQUIT\n"
    )
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", at(peer), "--timeout", "5", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert peer.data().endswith(f"BDAT {len(message)} LAST\r\n".encode() + message
                                + b"QUIT\r\n")
    assert "S: 250 2.0.0 Ok: queued" in result.out_lines


def test_bdat_line_longer_than_the_chunk_is_refused_unsent() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("CHUNKING"),
              Expect(b"BDAT 4 LAST"), Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", at(peer), "--timeout", "5",
                          stdin=b"EHLO me\nBDAT 4 LAST\nhello\n")
    assert result.returncode == 1
    assert_error_line(result, "the BDAT chunk has 4 bytes left and this line is 7 with its CRLF")
    assert b"hello" not in peer.data()


# ------------------------------------------------------------------ :reconnect, :save


def test_reconnect_with_cafile_in_pipe_mode(mailtalk_servers: Any) -> None:
    servers = mailtalk_servers(smtp=0)
    stdin = f":reconnect --cafile {servers.cafile}\n:starttls\nQUIT\n".encode()
    result = mailtalk("smtp", f"localhost:{servers.port('smtp')}", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("# connected to localhost") == 2
    assert "# TLS: TLSv1." in result.stderr and "NOT verified" not in result.stderr


def test_reconnect_refuses_an_unreadable_cafile() -> None:
    with ScriptedPeer([SMTP_GREETING, Hold()]) as peer:
        result = mailtalk("smtp", at(peer), stdin=b":reconnect --cafile /no/such/ca.pem\n")
    assert result.returncode == 1
    assert_error_line(result, "cannot read /no/such/ca.pem")


def test_save_counts_the_lines_in_the_file(tmp_path: Path) -> None:
    saved = tmp_path / "saved.log"
    script = [SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("PIPELINING", "SIZE 10", "DSN"),
              Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", at(peer), stdin=f"EHLO me\n:save {saved}\n".encode())
    assert result.returncode == 0, result.stderr
    lines = len(saved.read_text().splitlines())
    assert f"# transcript saved to {saved} ({lines} lines)" in result.stderr


def test_save_where_it_cannot_write_names_the_file_typed(
    mailtalk_servers: Any, tmp_path: Path
) -> None:
    """A folder that does not exist, or a folder named as the file: one line naming
    what was typed (not the temporary file beside it), nothing left behind."""
    servers = mailtalk_servers(smtp=0)
    for target, reason in ((tmp_path / "missing" / "t.log", "no such file or directory"),
                           (tmp_path, "is a directory")):
        result = mailtalk("smtp", f"localhost:{servers.port('smtp')}",
                          stdin=f"EHLO me\n:save {target}\nQUIT\n".encode())
        assert result.returncode == 1, result.stderr
        assert_error_line(result, f"cannot write {target}: {reason}")
        assert_no_traceback(result)
        assert ".t.log." not in result.stderr and "trace" not in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert not [path for path in tmp_path.parent.iterdir()
                if path.name.startswith(f".{tmp_path.name}.")]


# ------------------------------------------------------------------ :open, --resolve


def test_open_leaves_one_server_for_another(mailtalk_servers: Any) -> None:
    first = mailtalk_servers(smtp=0, hostname="first.test")
    second = mailtalk_servers(smtp=0, hostname="second.test")
    stdin = f"EHLO me\n:open smtp://127.0.0.1:{second.port('smtp')}\nEHLO me\nQUIT\n"
    result = mailtalk("smtp", f"127.0.0.1:{first.port('smtp')}", stdin=stdin.encode())
    assert result.returncode == 0, result.stderr
    first_ehlo = result.out_lines.index("S: 250-first.test greets me")
    assert result.out_lines.index("S: 250-second.test greets me") > first_ehlo
    assert result.stderr.count("# connected to ") == 2


def test_open_host_and_port_keeps_the_protocol(mailtalk_servers: Any) -> None:
    first = mailtalk_servers(pop3=0, smtp=None, hostname="first.test")
    second = mailtalk_servers(pop3=0, smtp=None, hostname="second.test")
    stdin = f":open 127.0.0.1 {second.port('pop3')}\nCAPA\nQUIT\n"
    result = mailtalk("pop3", f"127.0.0.1:{first.port('pop3')}", stdin=stdin.encode())
    assert result.returncode == 0, result.stderr
    assert f"# connected to 127.0.0.1:{second.port('pop3')}" in result.stderr
    assert "S: USER" in result.out_lines  # CAPA answered by the second POP3 server


def test_open_without_a_target_is_one_line() -> None:
    with ScriptedPeer([SMTP_GREETING, Hold()]) as peer:
        result = mailtalk("smtp", at(peer), stdin=b":open\nNOOP\n")
    assert result.returncode == 1  # pipe mode stops at the first error, as with :auth
    assert_error_line(result, "usage: :open URL, or :open HOST [PORT] (as telnet's open)")
    assert_no_traceback(result)
    assert peer.lines() == []


def test_resolve_connects_to_the_address_and_verifies_the_name(
    mailtalk_servers: Any,
) -> None:
    servers = mailtalk_servers(smtp=0, hostname="mx.practice.test")
    port = servers.port("smtp")
    result = mailtalk(
        "smtp", f"mx.practice.test:{port}", "--resolve", "mx.practice.test:127.0.0.1",
        "--starttls", "--cafile", str(servers.cafile), stdin=b"QUIT\n",
    )
    assert result.returncode == 0, result.stderr
    assert f"# connected to mx.practice.test:{port} (127.0.0.1)" in result.stderr
    assert "# TLS: TLSv1." in result.stderr and "NOT verified" not in result.stderr


def test_resolve_refuses_what_is_not_name_and_address() -> None:
    result = mailtalk("smtp", "mx.practice.test", "--resolve", "mx.practice.test",
                      stdin=b"")
    assert result.returncode == 2
    assert "is not NAME:ADDRESS" in result.stderr
    assert_no_traceback(result)
