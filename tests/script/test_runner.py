"""``mailtalk run`` as a real process against the reference servers, over real sockets.

Every test writes a session file, runs the installed ``mailtalk`` binary on it and
checks what it printed, its exit status, and what really happened on the server
(the Maildir, the fault log). Nothing is mocked.
"""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.maildirs import in_delivery_order
from tests.script import runs
from tests.script.runs import MAILTALK, TIMEOUT, describe, write

USER = "alice"
PASSWORD = "Pw-9f3Kq-xYz7"  # distinctive: it must never appear in any output
DOMAIN = "example.test"
ALICE = f"{USER}@{DOMAIN}"
SENDER = "bob@example.org"
FOREIGN = "friend@example.net"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def mailtalk_env(tmp_path: Path, password: str | None = PASSWORD, **extra: str) -> dict[str, str]:
    return runs.mailtalk_env(tmp_path, password, **extra)


def run(
    tmp_path: Path, *args: str, password: str | None = PASSWORD, **extra: Any
) -> subprocess.CompletedProcess[str]:
    """``mailtalk run``, with the reference servers' password in the environment."""
    return runs.run(tmp_path, *args, password=password, **extra)


def maildir(servers: Any, user: str = USER) -> Path:
    return Path(servers.root) / "mail" / user / "Maildir"


def new_messages(servers: Any, user: str = USER) -> list[bytes]:
    new = maildir(servers, user) / "new"
    if not new.is_dir():
        return []
    paths = in_delivery_order(new.iterdir())
    return [path.read_bytes() for path in paths]


def all_messages(servers: Any, user: str = USER) -> list[Path]:
    root = maildir(servers, user)
    return [p for sub in ("new", "cur") if (root / sub).is_dir() for p in (root / sub).iterdir()]


def no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, f"the password leaked:\n{text}"


def deliver(servers: Any, subject: str, body: str) -> None:
    """Put a message in alice's Maildir with smtplib (the POP3/IMAP tests read it)."""
    message = f"From: {SENDER}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=10) as smtp:
        smtp.sendmail(SENDER, [ALICE], message.encode())


@pytest.fixture
def start(mailtalk_servers: Callable[..., Any]) -> Callable[..., Any]:
    def start(**options: Any) -> Any:
        return mailtalk_servers(
            smtp=0, submission=0, smtps=0, pop3=0, pop3s=0, imap=0, imaps=0,
            users=[(USER, PASSWORD)], domains=[DOMAIN], **options,
        )  # fmt: skip

    return start


@pytest.fixture
def servers(start: Callable[..., Any]) -> Any:
    return start()


def url(servers: Any, protocol: str) -> str:
    scheme = {"submission": "smtp"}.get(protocol, protocol)
    return f"{scheme}://127.0.0.1:{servers.port(protocol)}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Listener:
    """A bare TCP listener: counts connections; optionally closes each at once."""

    def __init__(self, close_at_once: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.close_at_once = close_at_once
        self._held: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.close_at_once:
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    bare = Listener()
    yield bare
    bare.close()


SMTP_SEND = """\
connect {url}
S: 220
C: EHLO client.test
S: 250
C: MAIL FROM:<{sender}>
S: 250 2.1.0
C: RCPT TO:<{rcpt}>
S: 2xx
data <<EOF
From: {sender}
To: {rcpt}
Subject: {subject}

first line
.leading dot
..two dots
.
last line
EOF
S: 250 *queued*
C: QUIT
S: 221
expect-close
"""


def smtp_send(servers: Any, subject: str = "hello", rcpt: str = ALICE) -> str:
    return SMTP_SEND.format(url=url(servers, "smtp"), sender=SENDER, rcpt=rcpt, subject=subject)


# ---------------------------------------------------------------------------
# SMTP
# ---------------------------------------------------------------------------


def test_smtp_session_delivers_the_here_block_with_dot_stuffing_undone(
    servers: Any, tmp_path: Path
) -> None:
    script = write(tmp_path, "send.mt", smtp_send(servers, subject="dots"))
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith(f"PASS {script} (")
    assert result.stderr == ""
    [message] = new_messages(servers)
    header, _, body = message.partition(b"\n\n")
    assert header.startswith(f"Return-Path: <{SENDER}>\n".encode())
    assert b"\nSubject: dots" in header
    assert body == b"first line\n.leading dot\n..two dots\n.\nlast line\n"


def test_verbose_shows_the_conversation_with_the_dot_stuffing(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "send.mt", smtp_send(servers))
    result = run(tmp_path, "-v", str(script))
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# connected to 127.0.0.1:")
    assert lines[1].startswith("S: 220 ")
    assert "C: EHLO client.test" in lines
    assert "C: DATA" in lines and "C: ." in lines
    assert any(line.startswith("S: 354") for line in lines)
    assert any(line.startswith("# message of ") for line in lines)
    assert lines[-1].startswith(f"PASS {script}")


def test_submission_starttls_and_auth_plain_with_the_servers_ca(
    servers: Any, tmp_path: Path
) -> None:
    script = write(
        tmp_path,
        "submit.mt",
        f"""\
# submission: STARTTLS, then AUTH, then relay
connect {url(servers, "submission")} cafile={servers.cafile}
S: 220
C: EHLO client.test
S: 250 STARTTLS
starttls
tls                                # checks TLS is on
C: EHLO client.test
S: 250 *AUTH*PLAIN*
auth plain {USER}
C: MAIL FROM:<{ALICE}>
S: 250
C: RCPT TO:<{ALICE}>
S: 250
data <<EOF
Subject: over TLS

sent after auth
EOF
S: 250
C: QUIT
S: 221
""",
    )
    result = run(tmp_path, "--json", str(script))
    assert result.returncode == 0, describe(result)
    no_secret(result.stdout, result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    texts = [r.get("text", "") for r in records]
    assert "STARTTLS" in texts and "AUTH PLAIN" in texts
    assert any(t.startswith("TLS: TLSv1.") and "NOT verified" not in t for t in texts)
    assert any(t.startswith("235 ") for t in texts)
    [message] = new_messages(servers)
    assert message.endswith(b"\n\nsent after auth\n")
    assert b"with ESMTPSA" in message or b"with ESMTPS" in message


def test_auth_login_insecure_and_a_named_password_variable(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "login.mt",
        f"""\
connect {url(servers, "submission")} insecure
S: 220
C: EHLO client.test
S: 250
starttls
C: EHLO client.test
S: 250
auth login {USER} SUBMIT_SECRET
C: QUIT
S: 221
""",
    )
    result = run(tmp_path, "-v", str(script), password=None, SUBMIT_SECRET=PASSWORD)
    assert result.returncode == 0, describe(result)
    assert "C: AUTH LOGIN" in result.stdout
    assert "NOT verified" in result.stdout
    no_secret(result.stdout, result.stderr)


def test_smtps_implicit_tls(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "smtps.mt",
        f"connect smtps://127.0.0.1:{servers.port('smtps')} cafile={servers.cafile}\n"
        "S: 220\ntls\nC: EHLO x\nS: 250\nauth plain alice\nC: QUIT\nS: 221\nexpect-close\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)


def test_written_out_starttls_then_tls(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "manual.mt",
        f"connect {url(servers, 'smtp')} cafile={servers.cafile}\nS: 220\nC: EHLO x\nS: 250\n"
        "C: STARTTLS\nS: 220 *TLS*\ntls\nC: EHLO x\nS: 250\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)


def test_relay_denied_shows_expected_received_and_the_explanation(
    start: Callable[..., Any], tmp_path: Path
) -> None:
    servers = start(scenarios=["relay-denied"])
    script = write(tmp_path, "relay.mt", smtp_send(servers, rcpt=FOREIGN))
    result = run(tmp_path, str(script))
    assert result.returncode == 1, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"FAIL {script} (")
    assert lines[1].startswith(f"  {script}:8: expected S: 2xx, got: 5")
    assert "Relay" in lines[1] or "relay" in lines[1]
    assert lines[2].startswith("    ↳ ")
    assert "relay" in lines[2].lower()
    assert new_messages(servers) == []


def test_relay_denied_expected(start: Callable[..., Any], tmp_path: Path) -> None:
    servers = start(scenarios=["relay-denied"])
    script = write(
        tmp_path,
        "relay.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nC: HELO x\nS: 250\nC: MAIL FROM:<{SENDER}>\n"
        f"S: 250\nC: RCPT TO:<{FOREIGN}>\nS: 5.7.1 *relay*\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)


# ---------------------------------------------------------------------------
# words in S: lines: whole words, in any order, as the README says
# ---------------------------------------------------------------------------


def greeting_script(servers: Any, expectation: str) -> str:
    return f"connect {url(servers, 'smtp')}\nS: {expectation}\nC: QUIT\nS: 221\n"


@pytest.mark.parametrize(
    "expectation",
    ["220 ESMTP ready", "220 ready ESMTP", "220 server ready", "220 READY esmtp ESMTP"],
)
def test_words_match_whole_words_in_any_order(
    servers: Any, tmp_path: Path, expectation: str
) -> None:
    """The reference server greets with '220 localhost ESMTP mailtalk reference server
    ready': every word is in it, not side by side."""
    script = write(tmp_path, "words.mt", greeting_script(servers, expectation))
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith(f"PASS {script} (")


def test_the_fail_line_names_the_missing_word(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "words.mt", greeting_script(servers, "220 ESMTP fast ready"))
    result = run(tmp_path, str(script))
    assert result.returncode == 1, describe(result)
    line = result.stdout.splitlines()[1]
    assert line.startswith(f"  {script}:2: expected S: 220 ESMTP fast ready, got: 220 ")
    assert line.endswith(" (no word 'fast')")


def test_the_fail_line_names_every_missing_word(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "words.mt", greeting_script(servers, "2xx ESMTP serv eady"))
    result = run(tmp_path, str(script))
    assert result.returncode == 1, describe(result)
    assert result.stdout.splitlines()[1].endswith(" (no words 'serv', 'eady')")


def test_no_word_is_named_when_the_code_differs(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "words.mt", greeting_script(servers, "554 ESMTP fast"))
    result = run(tmp_path, str(script))
    assert result.returncode == 1, describe(result)
    assert "no word" not in result.stdout


# ---------------------------------------------------------------------------
# what can be checked before connecting is: exit 2, file:line, no connection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "body", "message"),
    [
        ("smtp", "S: 2x0\n", ":2: 2x0 is not a reply code"),
        ("smtp", "S: 220\nC: EHLO x\nS: 25\n", ":4: 25 is not a reply code"),
        ("smtp", "S: 220\nC: RCPT TO:<a@b>\nS: 550 3.1.1\n", ":4: 3.1.1 is not an enhanced"),
        ("smtp", "S: 600 *\n", ":2: 600 is not a reply code"),
        ("smtp", "S: +OK\n", ":2: +OK is a status of POP3; SMTP replies have three-digit"),
        ("smtp", "S: 220\nC: NOOP\nS: OK\n", ":4: OK is a status of IMAP"),
        ("smtp", "S: * queued\n", ":2: S: * TEXT expects an IMAP untagged response"),
        ("pop3", "S: 220\n", ":2: 220 is an SMTP reply code; POP3 answers +OK or -ERR"),
        ("pop3", "S: +OK\nC: STAT\nS: OK\n", ":4: OK is a status of IMAP; POP3 answers"),
        ("pop3", "S: +OK\nC: CAPA\nS: * SASL\n", ":4: S: * TEXT expects an IMAP untagged"),
        ("imap", "S: OK\nC: NOOP\nS: 250\n", ":4: 250 is an SMTP reply code; IMAP answers"),
        ("imap", "S: OK\nC: NOOP\nS: +OK\n", ":4: +OK is a status of POP3; IMAP answers"),
        ("imap", "S: OK\nC: NOOP\nS: 5.7.1\n", ":4: enhanced status codes (5.7.1) are SMTP's"),
        ("imap", "S: OK\ndata <<EOF\nhi\nEOF\n", ":3: data sends an SMTP message"),
        ("pop3", "S: +OK\ndata <<EOF\nhi\nEOF\n", ":3: data sends an SMTP message"),
        ("smtp", "S: 220\nS: 220\n", ":3: S: 220 has no reply to match: line 2 had the last"),
        ("smtp", "S: 220\nauth plain alice\nS: 235\n", ":4: S: 235 has no reply to match"),
        ("smtp", "S: 220\nC: EHLO x\nstarttls\nS: 220\n", ":5: S: 220 has no reply"),
        ("smtp", "S: 220\nsleep 0\nS: 250-PIPELINING\n", ":4: S: 250-PIPELINING has no"),
        ("smtp", "S: 220\nC: EHLO x\nS: 250\ntls\n", ":5: tls checks that TLS is on"),
        ("smtps", "S: 220\nC: EHLO x\nS: 250\nstarttls\n", ":5: starttls: TLS is already on"),
        ("smtp", "S: 220\nC: QUIT\nexpect-close\nC: NOOP\n", ":5: the connection is closed"),
        ("smtp", "expect-close\nexpect-close\n", ":3: the connection is closed here"),
        ("pop3", "S: +OK\nexpect-close\nauth plain a\n", ":4: the connection is closed"),
    ],
)
def test_what_can_never_work_is_refused_before_connecting(
    listener: Listener, tmp_path: Path, scheme: str, body: str, message: str
) -> None:
    script = write(tmp_path, "s.mt", f"connect {scheme}://127.0.0.1:{listener.port}\n" + body)
    result = run(tmp_path, str(script))
    assert result.returncode == 2, describe(result)
    assert result.stderr.startswith(f"mailtalk: {script}{message}"), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert listener.accepted == 0


@pytest.mark.parametrize(
    "body",
    [
        # a second connect starts over: a new greeting, TLS off, open again
        "S: 220\nC: QUIT\nS: 221\nexpect-close\nconnect smtp://h:25\nS: 220\nC: EHLO x\n",
        # S: 250-TEXT lines leave the reply to the S: 250 line after them
        "S: 220\nC: EHLO x\nS: 250-PIPELINING\nS: 250-SIZE\nS: 250\n",
        # IMAP: untagged checks, before or after the tagged one
        "S: 220\nconnect imap://h\nS: * OK\nS: OK\nC: SELECT INBOX\nS: OK\nS: * 1 EXISTS\n",
        # the written-out STARTTLS, then tls; POP3's STLS
        "S: 220\nC: STARTTLS\nS: 220\ntls\nconnect pop3://h\nC: STLS\ntls\n",
        # a reply nobody checks, then sleep: fine
        "C: NOOP\nsleep 0\nC: NOOP\nS: 250\n",
        # POP3 and IMAP continuations are "+"
        "S: 220\nconnect pop3://h\nC: AUTH PLAIN\nS: +\nconnect imap://h\nC: IDLE\nS: +\n",
        # a loop body that ends owing a reply, matched after the loop
        "S: 220\nloop\nC: NOOP\nS: 250\nC: NOOP\nend\nS: 250\n",
    ],
)
def test_what_can_work_is_not_refused(tmp_path: Path, body: str) -> None:
    from mailtalk.script.format import parse_file

    script = write(tmp_path, "s.mt", "connect smtp://h:25\n" + body)
    assert parse_file(str(script)).steps


def test_a_missing_or_wrong_cafile_is_refused_before_connecting(
    listener: Listener, tmp_path: Path
) -> None:
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    for option, message in (
        ("cafile=nowhere.pem", f"cafile={tmp_path}/nowhere.pem: no such file"),
        ("cafile=not-a-ca.pem", f"cafile={tmp_path}/not-a-ca.pem: no CA certificate in it"),
    ):
        script = write(tmp_path, "s.mt", f"connect smtps://127.0.0.1:{listener.port} {option}\n")
        result = run(tmp_path, str(script))
        assert result.returncode == 2, describe(result)
        assert result.stderr == f"mailtalk: {script}:1: {message} (PEM expected)\n" or (
            result.stderr == f"mailtalk: {script}:1: {message}\n"
        ), result.stderr
    assert listener.accepted == 0


def test_a_second_s_line_for_one_reply_is_a_bad_script(listener: Listener, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "twice.mt",
        f"connect smtp://127.0.0.1:{listener.port}\nS: 220\nC: NOOP\nS: 250\nS: 250\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 2, describe(result)
    assert result.stderr.startswith(
        f"mailtalk: {script}:5: S: 250 has no reply to match: line 4 had the last one"
    )
    assert listener.accepted == 0


def test_an_s_line_for_a_data_line_fails_when_run(servers: Any, tmp_path: Path) -> None:
    """Lines of a message written out as C: lines get no reply: only a run can tell."""
    script = write(
        tmp_path,
        "dataline.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nC: EHLO x\nS: 250\nC: MAIL FROM:<{SENDER}>\n"
        f"S: 250\nC: RCPT TO:<{ALICE}>\nS: 250\nC: DATA\nS: 354\nC: Subject: x\nS: 250\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 1, describe(result)
    assert f"{script}:12: S: 250 has no reply to match" in result.stdout


def test_replies_nobody_checks_are_still_waited_for(servers: Any, tmp_path: Path) -> None:
    """No S: lines at all: every reply is waited for, so nothing is pipelined."""
    script = write(
        tmp_path,
        "quiet.mt",
        f"connect {url(servers, 'smtp')}\nC: EHLO x\nC: MAIL FROM:<{SENDER}>\n"
        f"C: RCPT TO:<{ALICE}>\ndata <<EOF\nSubject: unchecked\n\nx\nEOF\nC: QUIT\n",
    )
    result = run(tmp_path, "--json", str(script))
    assert result.returncode == 0, describe(result)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    # each C: line is followed by the server's answer before anything else is sent
    sent = [i for i, r in enumerate(records) if r.get("dir") == "C" and r["text"] != "."]
    for index in sent[:-1]:
        assert records[index + 1]["dir"] == "S", records
    assert len(new_messages(servers)) == 1


def test_data_file_with_crlf_and_no_final_newline(servers: Any, tmp_path: Path) -> None:
    (tmp_path / "msgs").mkdir()
    (tmp_path / "msgs" / "m.eml").write_bytes(
        b"Subject: from a file\r\n\r\nline one\r\n.dot\r\n.\r\nno final newline"
    )
    script = write(
        tmp_path,
        "file.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nC: HELO x\nS: 250\nC: MAIL FROM:<{SENDER}>\n"
        f"S: 250\nC: RCPT TO:<{ALICE}>\nS: 250\ndata msgs/m.eml\nS: 250\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)
    [message] = new_messages(servers)
    assert message.endswith(b"Subject: from a file\n\nline one\n.dot\n.\nno final newline\n")


def test_data_written_out_as_c_lines(servers: Any, tmp_path: Path) -> None:
    """DATA typed as in RFC 5321's examples: the message lines get no reply of their own."""
    script = write(
        tmp_path,
        "manual.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nC: HELO x\nS: 250\nC: MAIL FROM:<{SENDER}>\n"
        f"S: 250\nC: RCPT TO:<{ALICE}>\nS: 250\nC: DATA\nS: 354\nC: Subject: typed\nC:\n"
        "C: typed body\nC: .\nS: 250 *queued*\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, "--timeout", "5", str(script))
    assert result.returncode == 0, describe(result)
    [message] = new_messages(servers)
    assert message.endswith(b"Subject: typed\n\ntyped body\n")


def test_imap_login_with_the_password_in_a_literal_is_redacted(
    servers: Any, tmp_path: Path
) -> None:
    script = write(
        tmp_path,
        "literal.mt",
        f"connect {url(servers, 'imap')}\nS: OK\nC: LOGIN {USER} {{{len(PASSWORD)}}}\nS: +\n"
        "C: ${MAILTALK_PASSWORD}\nS: OK\nC: LOGOUT\nS: OK\n",
    )
    result = run(tmp_path, "-v", str(script))
    assert result.returncode == 0, describe(result)
    assert f"C: a001 LOGIN {USER} {{{len(PASSWORD)}}}" in result.stdout
    assert "\nC: ***\n" in result.stdout
    no_secret(result.stdout, result.stderr)


def test_two_connects_in_one_file(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "two.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nC: QUIT\nS: 221\nexpect-close\n"
        f"connect {url(servers, 'pop3')}\nS: +OK\nC: QUIT\nS: +OK\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)


def test_sleep_and_include(servers: Any, tmp_path: Path) -> None:
    write(tmp_path, "ehlo.mt", "C: EHLO ${NAME}\nS: 250 *${NAME}*\n")
    script = write(
        tmp_path,
        "main.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nset NAME inc.test\ninclude ehlo.mt\n"
        "sleep 0.05\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)


def test_var_overrides_set_and_environment(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "vars.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nset HELO from-set\n"
        "C: EHLO ${HELO}\nS: 250 ${EXPECT}\n",
    )
    ok = run(tmp_path, "--var", "HELO=from-var", str(script), EXPECT="from-var", HELO="env")
    assert ok.returncode == 0, describe(ok)
    bad = run(tmp_path, str(script), EXPECT="from-var", HELO="env")
    assert bad.returncode == 1, describe(bad)
    assert "greets from-set" in bad.stdout


def test_bad_var_option_is_a_usage_error(tmp_path: Path) -> None:
    script = write(tmp_path, "x.mt", "connect smtp://127.0.0.1:1\n")
    result = run(tmp_path, "--var", "NOEQUALS", str(script))
    assert result.returncode == 2, describe(result)
    assert "NAME=VALUE" in result.stderr


# ---------------------------------------------------------------------------
# POP3 and IMAP
# ---------------------------------------------------------------------------


def test_pop3_session(servers: Any, tmp_path: Path) -> None:
    deliver(servers, "for pop", "pop body line")
    script = write(
        tmp_path,
        "pop.mt",
        f"""\
connect {url(servers, "pop3")}
S: +OK *ready*
C: USER {USER}
S: +OK
C: PASS ${{PASSWORD}}
S: +OK /logged in/
C: STAT
S: +OK /^1 \\d+$/
C: LIST
S: +OK
C: RETR 1
S: +OK /octets/
C: DELE 1
S: +OK
C: QUIT
S: +OK
expect-close
""",
    )
    result = run(tmp_path, "--json", str(script), PASSWORD=PASSWORD)
    assert result.returncode == 0, describe(result)
    no_secret(result.stdout, result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    texts = [(r.get("dir"), r.get("text")) for r in records]
    assert ("C", "PASS ***") in texts
    index = texts.index(("C", "LIST"))
    assert texts[index + 1][1].startswith("+OK")
    assert texts[index + 2][0] == "S" and texts[index + 2][1].startswith("1 ")
    assert texts[index + 3] == ("S", ".")
    assert ("S", "Subject: for pop") in texts
    assert ("S", "pop body line") in texts
    assert records[-1]["result"] == "pass"
    assert new_messages(servers) == []  # DELE + QUIT


def test_pop3_wrong_password_in_a_c_line_is_a_mismatch(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "pop.mt",
        f"connect {url(servers, 'pop3')}\nS: +OK\nC: USER {USER}\nS: +OK\n"
        "C: PASS ${PASSWORD}\nS: +OK\n",
    )
    result = run(tmp_path, str(script), PASSWORD="wrong-one")
    assert result.returncode == 1, describe(result)
    assert f"{script}:6: expected S: +OK, got: -ERR" in result.stdout
    assert "↳" in result.stdout
    assert "wrong-one" not in result.stdout


def test_pop3_starttls_and_auth_directive(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "pop.mt",
        f"connect {url(servers, 'pop3')} cafile={servers.cafile}\nS: +OK\nstarttls\n"
        f"auth plain {USER}\nC: STAT\nS: +OK\nC: QUIT\nS: +OK\n",
    )
    result = run(tmp_path, "-v", str(script))
    assert result.returncode == 0, describe(result)
    assert "C: STLS" in result.stdout
    no_secret(result.stdout, result.stderr)


def test_imap_session_with_tags_untagged_checks_and_a_literal(servers: Any, tmp_path: Path) -> None:
    deliver(servers, "for imap", "imap body")
    literal = "Subject: appended\r\n\r\nhi"  # the CRLF after "hi" ends the command
    script = write(
        tmp_path,
        "imap.mt",
        f"""\
connect {url(servers, "imap")}
S: * OK *ready*
C: CAPABILITY
S: * CAPABILITY *IMAP4rev1*
S: OK
C: LOGIN {USER} ${{PASSWORD}}
S: OK
C: SELECT INBOX
S: * FLAGS *
S: * 1 EXISTS
S: * /^OK \\[UIDVALIDITY \\d+\\]/
S: OK *READ-WRITE*
C: FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])
S: * /^1 FETCH/
S: OK
C: APPEND INBOX {{{len(literal.encode())}}}
C: Subject: appended
C:
C: hi
S: * 2 EXISTS
S: OK *APPENDUID*
C: LOGOUT
S: * BYE *
S: OK
""",
    )
    result = run(tmp_path, "--json", str(script), PASSWORD=PASSWORD)
    assert result.returncode == 0, describe(result)
    no_secret(result.stdout, result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    sent = [r["text"] for r in records if r.get("dir") == "C"]
    assert sent[0] == "a001 CAPABILITY"
    assert sent[1] == f"a002 LOGIN {USER} ***"
    assert sent[2] == "a003 SELECT INBOX"
    assert any(s.startswith("a005 APPEND INBOX {") for s in sent)
    assert "Subject: appended" in sent  # the literal's lines are not tagged
    assert len(all_messages(servers)) == 2


def test_imap_tags_written_in_the_file_are_kept(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "tags.mt",
        f"connect {url(servers, 'imap')}\nS: OK\nC: x1 NOOP\nS: OK\nC: NOOP\nS: OK\n",
    )
    result = run(tmp_path, "-v", str(script))
    assert result.returncode == 0, describe(result)
    assert "C: x1 NOOP\nS: x1 OK" in result.stdout
    assert "C: a001 NOOP" in result.stdout or "C: a002 NOOP" in result.stdout


def test_imap_untagged_mismatch_lists_what_came(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "imap.mt",
        f"connect {url(servers, 'imap')}\nS: OK\nC: LOGIN {USER} ${{PASSWORD}}\nS: OK\n"
        "C: SELECT INBOX\nS: * 7 EXISTS\nS: OK\n",
    )
    result = run(tmp_path, str(script), PASSWORD=PASSWORD)
    assert result.returncode == 1, describe(result)
    assert f"{script}:6: expected S: * 7 EXISTS, got: " in result.stdout
    assert "0 EXISTS" in result.stdout


def test_imap_starttls_and_auth_directive(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "imap.mt",
        f"connect {url(servers, 'imap')} cafile={servers.cafile}\nS: OK\nstarttls\ntls\n"
        f"auth plain {USER}\nC: NOOP\nS: OK\nC: LOGOUT\nS: * BYE*\nS: OK\n",
    )
    result = run(tmp_path, "--json", str(script))
    assert result.returncode == 0, describe(result)
    no_secret(result.stdout, result.stderr)
    sent = [json.loads(line).get("text") for line in result.stdout.splitlines()]
    assert "a001 STARTTLS" in sent and "a002 AUTHENTICATE PLAIN" in sent


def test_imap_implicit_tls(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "imaps.mt",
        f"connect imaps://127.0.0.1:{servers.port('imaps')} cafile={servers.cafile}\n"
        "S: OK\ntls\nC: LOGOUT\nS: * BYE*\nS: OK\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)


# ---------------------------------------------------------------------------
# exit statuses
# ---------------------------------------------------------------------------


def test_exit_2_for_a_bad_script_and_nothing_connects(listener: Listener, tmp_path: Path) -> None:
    good = write(tmp_path, "good.mt", f"connect smtp://127.0.0.1:{listener.port}\nS: 220\n")
    bad = write(tmp_path, "bad.mt", f"connect smtp://127.0.0.1:{listener.port}\nS: 220\nHELO x\n")
    result = run(tmp_path, str(good), str(bad))
    assert result.returncode == 2, describe(result)
    assert result.stderr == f"mailtalk: {bad}:3: unknown directive 'helo' " + (
        "(C:, S:, connect, starttls, tls, auth, data, set, include, sleep, expect-close, "
        "loop, end, or # for a comment)\n"
    )
    assert result.stdout == ""
    assert listener.accepted == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("C: EHLO x\n", ":1: a session file starts with connect URL"),
        ("connect smtp://h\nC: ${UNSET_VARIABLE_X}\n", ":2: undefined variable"),
        ("connect smtp://h\ndata <<EOF\nno end\n", ":2: here-block never ends"),
        ("connect smtp://h\ndata nothere.eml\n", ":2: data nothere.eml: no such file"),
        ("connect smtp://h\nloop\n", ":2: loop without end"),
    ],
)
def test_exit_2_messages(tmp_path: Path, text: str, message: str) -> None:
    script = write(tmp_path, "s.mt", text)
    result = run(tmp_path, str(script))
    assert result.returncode == 2, describe(result)
    assert result.stderr.startswith(f"mailtalk: {script}{message}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_exit_2_for_a_missing_file(tmp_path: Path) -> None:
    result = run(tmp_path, str(tmp_path / "none.mt"))
    assert result.returncode == 2, describe(result)
    assert "no such file" in result.stderr


def test_exit_2_for_a_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.mt"
    path.write_bytes(b"connect smtp://h\nC: HELO caf\xe9\n")
    result = run(tmp_path, str(path))
    assert result.returncode == 2, describe(result)
    assert result.stderr == f"mailtalk: {path}: {path} is not UTF-8 text\n"


def test_exit_3_when_the_port_is_closed(tmp_path: Path) -> None:
    port = closed_port()
    script = write(tmp_path, "closed.mt", f"connect smtp://127.0.0.1:{port}\nS: 220\n")
    result = run(tmp_path, str(script))
    assert result.returncode == 3, describe(result)
    assert result.stdout.startswith(f"FAIL {script}")
    assert f"{script}:1: " in result.stdout
    assert "refused" in result.stdout.lower()


def test_exit_4_for_implicit_tls_to_a_plain_port(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path, "tls.mt", f"connect smtps://127.0.0.1:{servers.port('smtp')} insecure\nS: 220\n"
    )
    result = run(tmp_path, "--timeout", "5", str(script))
    assert result.returncode == 4, describe(result)
    assert f"{script}:1: " in result.stdout
    assert "TLS" in result.stdout


def test_exit_4_for_an_untrusted_certificate(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "verify.mt",
        f"connect {url(servers, 'submission')}\nS: 220\nC: EHLO x\nS: 250\nstarttls\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 4, describe(result)
    assert f"{script}:5: " in result.stdout
    assert "certificate" in result.stdout


def test_certificate_advice_names_the_connect_options(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "verify.mt",
        f"connect {url(servers, 'submission')}\nS: 220\nC: EHLO x\nS: 250\nstarttls\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 4, describe(result)
    assert "--cafile" not in result.stdout and "--insecure" not in result.stdout
    assert "cafile=" in result.stdout


def test_exit_4_when_starttls_is_refused(start: Callable[..., Any], tmp_path: Path) -> None:
    servers = start(faults=["smtp:starttls=454 4.7.0 TLS not available due to local problem"])
    script = write(
        tmp_path,
        "refused.mt",
        f"connect {url(servers, 'smtp')} insecure\nS: 220\nC: EHLO x\nS: 250\nstarttls\n"
        "C: EHLO x\nS: 250\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 4, describe(result)
    assert f"{script}:5: " in result.stdout
    assert "454" in result.stdout


def test_exit_4_when_tls_is_not_on(start: Callable[..., Any], tmp_path: Path) -> None:
    servers = start(faults=["smtp:starttls=454 4.7.0 TLS not available due to local problem"])
    script = write(
        tmp_path,
        "notls.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nC: EHLO x\nS: 250\nC: STARTTLS\ntls\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 4, describe(result)
    assert f"{script}:6: TLS is not active here" in result.stdout


def test_exit_5_when_a_fault_disconnects(start: Callable[..., Any], tmp_path: Path) -> None:
    servers = start(faults=["smtp:mail=disconnect"])
    script = write(tmp_path, "cut.mt", smtp_send(servers))
    result = run(tmp_path, str(script))
    assert result.returncode == 5, describe(result)
    assert f"{script}:6: " in result.stdout
    assert servers.fired_faults() == ["smtp:mail=disconnect"]


def test_exit_5_when_the_server_closes_at_once(listener: Listener, tmp_path: Path) -> None:
    script = write(tmp_path, "closes.mt", f"connect smtp://127.0.0.1:{listener.port}\nS: 220\n")
    result = run(tmp_path, str(script))
    assert result.returncode == 5, describe(result)
    assert listener.accepted == 1
    assert f"{script}:2: " in result.stdout


def test_exit_5_when_sending_after_the_server_closed(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "after.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nC: QUIT\nS: 221\nsleep 0.2\nC: NOOP\n"
        "S: 250\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 5, describe(result)
    assert f"{script}:6: " in result.stdout and "closed" in result.stdout


def test_exit_5_on_a_reply_timeout(start: Callable[..., Any], tmp_path: Path) -> None:
    servers = start(faults=["smtp:noop=delay 3s"])
    script = write(
        tmp_path, "slow.mt", f"connect {url(servers, 'smtp')}\nS: 220\nC: NOOP\nS: 250\n"
    )
    result = run(tmp_path, "--timeout", "0.3", str(script))
    assert result.returncode == 5, describe(result)
    assert f"{script}:4: " in result.stdout


def test_exit_1_when_the_server_does_not_close(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "open.mt",
        f"connect {url(servers, 'smtp')}\nS: 220\nC: NOOP\nS: 250\nexpect-close\n",
    )
    result = run(tmp_path, "--timeout", "0.3", str(script))
    assert result.returncode == 1, describe(result)
    assert f"{script}:5: expected the server to close the connection" in result.stdout


def test_exit_6_when_auth_fails(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "auth.mt",
        f"connect {url(servers, 'submission')} insecure\nS: 220\nC: EHLO x\nS: 250\nstarttls\n"
        f"C: EHLO x\nS: 250\nauth plain {USER}\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, str(script), password="not-the-password")
    assert result.returncode == 6, describe(result)
    assert f"{script}:8: expected S: auth plain {USER} to succeed, got: 535" in result.stdout
    assert "↳" in result.stdout
    assert "not-the-password" not in result.stdout + result.stderr


def test_exit_6_without_any_password(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "nopw.mt",
        f"connect {url(servers, 'imap')}\nS: OK\nauth plain {USER}\nC: NOOP\nS: OK\n",
    )
    result = run(tmp_path, str(script), password=None)
    assert result.returncode == 6, describe(result)
    assert f"{script}:3: no password for {USER}: set $MAILTALK_PASSWORD" in result.stdout


def test_exit_status_of_several_files_is_the_first_failure(servers: Any, tmp_path: Path) -> None:
    ok = write(tmp_path, "ok.mt", f"connect {url(servers, 'smtp')}\nS: 220\nC: QUIT\nS: 221\n")
    mismatch = write(tmp_path, "bad.mt", f"connect {url(servers, 'smtp')}\nS: 554\n")
    refused = write(tmp_path, "refused.mt", f"connect smtp://127.0.0.1:{closed_port()}\n")
    result = run(tmp_path, str(ok), str(mismatch), str(refused))
    assert result.returncode == 1, describe(result)
    assert result.stdout.splitlines()[-1] == "3 files: 1 passed, 2 failed"
    result = run(tmp_path, str(refused), str(mismatch))
    assert result.returncode == 3, describe(result)


# ---------------------------------------------------------------------------
# --keep-going, --junit, --tap, --json, stdin
# ---------------------------------------------------------------------------

MISMATCHES = """\
connect {url}
S: 220
C: EHLO x
S: 500
C: NOOP
S: 2xx
C: VRFY nobody
S: 250
C: QUIT
S: 221
"""


def test_keep_going_reports_every_mismatch(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "many.mt", MISMATCHES.format(url=url(servers, "smtp")))
    stop = run(tmp_path, str(script))
    assert stop.returncode == 1, describe(stop)
    assert stop.stdout.count(f"{script}:") == 1
    going = run(tmp_path, "--keep-going", str(script))
    assert going.returncode == 1, describe(going)
    failures = [line for line in going.stdout.splitlines() if line.startswith(f"  {script}:")]
    assert [line.split(":")[1] for line in failures] == ["4", "8"], going.stdout
    assert "expected S: 500, got: 250" in failures[0]


def test_junit_report(start: Callable[..., Any], tmp_path: Path) -> None:
    servers = start(scenarios=["relay-denied"])
    passing = write(
        tmp_path,
        "pass.mt",
        f"connect {url(servers, 'submission')} insecure\nS: 220\nC: EHLO x\nS: 250\nstarttls\n"
        f"C: EHLO x\nS: 250\nauth plain {USER}\nC: QUIT\nS: 221\n",
    )
    failing = write(tmp_path, "fail.mt", smtp_send(servers, rcpt=FOREIGN))
    broken = write(tmp_path, "cut.mt", f"connect smtp://127.0.0.1:{closed_port()}\n")
    report = tmp_path / "out" / "report.xml"
    report.parent.mkdir()
    result = run(
        tmp_path, "--junit", str(report), "--keep-going", str(passing), str(failing), str(broken)
    )
    assert result.returncode == 1, describe(result)
    text = report.read_text(encoding="utf-8")
    no_secret(text, result.stdout, result.stderr)
    assert list(report.parent.iterdir()) == [report]  # no temporary file left
    root = ET.fromstring(text.encode())
    assert root.tag == "testsuites"
    [suite] = list(root)
    assert suite.get("tests") == "3"
    assert suite.get("failures") == "1"
    assert suite.get("errors") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {str(passing), str(failing), str(broken)}
    assert cases[str(passing)].find("failure") is None
    assert "C: AUTH PLAIN" in (cases[str(passing)].findtext("system-out") or "")
    failure = cases[str(failing)].find("failure")
    assert failure is not None
    assert failure.get("type") == "expectation"
    assert (failure.get("message") or "").startswith("expected S: 2xx, got: 5")
    assert "↳" in (failure.text or "")
    error = cases[str(broken)].find("error")
    assert error is not None and error.get("type") == "connect"


def scripted_smtp_peer(greeting: bytes) -> tuple[int, threading.Thread]:
    """A one-connection SMTP peer: sends ``greeting``, answers QUIT with 221."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(10)

    def serve() -> None:
        with sock:
            conn, _ = sock.accept()
            with conn:
                conn.sendall(greeting)
                conn.recv(1000)
                conn.sendall(b"221 bye\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return int(sock.getsockname()[1]), thread


def test_junit_stays_valid_xml_with_control_characters_from_the_server(tmp_path: Path) -> None:
    port, thread = scripted_smtp_peer(b"220 odd\x01\x1b[31m server\r\n")
    script = write(
        tmp_path, "odd.mt", f"connect smtp://127.0.0.1:{port}\nS: 220\nC: QUIT\nS: 221\n"
    )
    report = tmp_path / "odd.xml"
    result = run(tmp_path, "--junit", str(report), str(script))
    thread.join(timeout=10)
    assert result.returncode == 0, describe(result)
    ET.parse(report)


def test_junit_into_a_missing_directory(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "ok.mt", f"connect {url(servers, 'smtp')}\nS: 220\nC: QUIT\nS: 221\n")
    report = tmp_path / "missing" / "report.xml"
    result = run(tmp_path, "--junit", str(report), str(script))
    assert result.returncode == 2, describe(result)
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"mailtalk: cannot write {report}: ")
    assert not report.parent.exists()
    assert not list(tmp_path.glob("**/.junit-*"))


def test_junit_into_a_missing_directory_runs_nothing(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "send.mt", smtp_send(servers))
    result = run(tmp_path, "--junit", str(tmp_path / "missing" / "r.xml"), str(script))
    assert result.returncode == 2, describe(result)
    assert new_messages(servers) == []


def test_tap_output(servers: Any, tmp_path: Path) -> None:
    ok = write(tmp_path, "ok.mt", f"connect {url(servers, 'smtp')}\nS: 220\nC: QUIT\nS: 221\n")
    bad = write(tmp_path, "bad.mt", f"connect {url(servers, 'smtp')}\nS: 220\nC: NOOP\nS: 5xx\n")
    result = run(tmp_path, "--tap", str(ok), str(bad))
    assert result.returncode == 1, describe(result)
    lines = result.stdout.splitlines()
    assert lines[:4] == ["TAP version 13", "1..2", f"ok 1 - {ok}", f"not ok 2 - {bad}"]
    assert lines[4] == "  ---"
    assert lines[5].startswith('  message: "expected S: 5xx, got: 250')
    assert lines[6] == f'  at: "{bad}:4"'
    assert lines[-1] == "  ..."
    assert not any(line.startswith(("PASS", "FAIL")) for line in lines)


def test_json_lines_transcript_then_result_and_no_password_anywhere(
    servers: Any, tmp_path: Path
) -> None:
    deliver(servers, "json", "body")
    smtp = write(
        tmp_path,
        "smtp.mt",
        f"connect {url(servers, 'submission')} insecure\nS: 220\nC: EHLO x\nS: 250\nstarttls\n"
        f"C: EHLO x\nS: 250\nauth login {USER}\nC: QUIT\nS: 221\n",
    )
    pop = write(
        tmp_path,
        "pop.mt",
        f"connect {url(servers, 'pop3')}\nS: +OK\nC: USER {USER}\nS: +OK\n"
        "C: PASS ${MAILTALK_PASSWORD}\nS: +OK\nC: QUIT\nS: +OK\n",
    )
    imap = write(
        tmp_path,
        "imap.mt",
        f'connect {url(servers, "imap")}\nS: OK\nC: LOGIN {USER} "${{MAILTALK_PASSWORD}}"\n'
        "S: OK\nC: LOGOUT\nS: OK\n",
    )
    report = tmp_path / "r.xml"
    result = run(tmp_path, "--json", "--junit", str(report), str(smtp), str(pop), str(imap))
    assert result.returncode == 0, describe(result)
    no_secret(result.stdout, result.stderr, report.read_text(encoding="utf-8"))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for name in (smtp, pop, imap):
        mine = [r for r in records if r["file"] == str(name)]
        assert all("dir" in r and "t" in r and "text" in r for r in mine[:-1])
        assert mine[-1]["result"] == "pass" and mine[-1]["exit_code"] == 0
        assert mine[-1]["failures"] == []
        assert mine[-1]["steps"] >= 5
        times = [r["t"] for r in mine[:-1]]
        assert times == sorted(times)
    # the three files come one after the other
    assert [r["file"] for r in records if "result" in r] == [str(smtp), str(pop), str(imap)]
    verbose = run(tmp_path, "-v", str(smtp), str(pop), str(imap))
    assert verbose.returncode == 0, describe(verbose)
    no_secret(verbose.stdout, verbose.stderr)


def test_json_failure_record(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "f.mt", f"connect {url(servers, 'smtp')}\nS: 220\nC: RSET\nS: 5xx\n")
    result = run(tmp_path, "--json", str(script))
    assert result.returncode == 1, describe(result)
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["result"] == "fail" and final["exit_code"] == 1
    [failure] = final["failures"]
    assert failure["file"] == str(script) and failure["line"] == 4
    assert failure["kind"] == "expectation"
    assert failure["expected"] == "5xx"
    assert failure["received"].startswith("250")


def test_script_on_stdin(servers: Any, tmp_path: Path) -> None:
    text = smtp_send(servers, subject="from stdin")
    result = run(tmp_path, "-", stdin=text)
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith("PASS <stdin> (")
    [message] = new_messages(servers)
    assert b"Subject: from stdin" in message


def test_stdin_script_errors_name_stdin(tmp_path: Path) -> None:
    result = run(tmp_path, "-", stdin="connect smtp://h\nbogus\n")
    assert result.returncode == 2, describe(result)
    assert result.stderr.startswith("mailtalk: <stdin>:2: unknown directive 'bogus'")


def test_stdin_only_once(tmp_path: Path) -> None:
    result = run(tmp_path, "-", "-", stdin="connect smtp://h\n")
    assert result.returncode == 2, describe(result)
    assert "standard input" in result.stderr


def test_non_utf8_script_on_stdin_is_exit_2(listener: Listener, tmp_path: Path) -> None:
    text = f"connect smtp://127.0.0.1:{listener.port}\ndata <<EOF\n\xe9t\xe9\nEOF\n"
    result = run(tmp_path, "-", stdin=text.encode("latin-1"))
    assert result.returncode == 2, describe(result)
    assert "not UTF-8" in result.stderr


def test_nul_in_a_data_file_name_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "nul.mt"
    path.write_bytes(b"connect smtp://127.0.0.1:1\ndata a\x00b\n")
    result = run(tmp_path, str(path))
    assert result.returncode == 2, describe(result)
    assert f"{path}:2: " in result.stderr


def test_empty_script_does_not_pass(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.mt", "# TODO\n")
    result = run(tmp_path, str(path))
    assert result.returncode == 2, describe(result)


# ---------------------------------------------------------------------------
# --repeat, --concurrency, --reuse
# ---------------------------------------------------------------------------


def test_repeat_with_concurrency_prints_rate_and_percentiles(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "send.mt", smtp_send(servers, subject="load"))
    result = run(tmp_path, "--repeat", "20", "--concurrency", "4", str(script))
    assert result.returncode == 0, describe(result)
    first, rate, latency = result.stdout.splitlines()
    assert first.startswith(f"{script}: 20/20 runs on new connections passed in ")
    assert first.endswith(", concurrency 4")
    assert " runs/s, " in rate and rate.endswith(" messages/s")
    for name in ("p50", "p90", "p99", "max"):
        assert f"{name} " in latency
    assert len(rate) <= 80 and len(latency) <= 80, (rate, latency)  # a terminal's width
    assert len(new_messages(servers)) == 20


def test_repeat_as_json(servers: Any, tmp_path: Path) -> None:
    script = write(tmp_path, "q.mt", f"connect {url(servers, 'smtp')}\nS: 220\nC: QUIT\nS: 221\n")
    result = run(tmp_path, "--json", "--repeat", "6", "--concurrency", "3", str(script))
    assert result.returncode == 0, describe(result)
    [figures] = [json.loads(line) for line in result.stdout.splitlines()]
    assert figures["runs"] == 6 and figures["passed"] == 6 and figures["failed"] == 0
    assert figures["connections"] == "new" and figures["concurrency"] == 3
    latency = figures["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


def test_repeat_with_failures_shows_the_first_one(
    start: Callable[..., Any], tmp_path: Path
) -> None:
    servers = start(faults=["smtp:noop#1=550 5.0.0 no"])  # every connection's first NOOP
    script = write(tmp_path, "f.mt", f"connect {url(servers, 'smtp')}\nS: 220\nC: NOOP\nS: 250\n")
    result = run(tmp_path, "--repeat", "4", "--concurrency", "2", str(script))
    assert result.returncode == 1, describe(result)
    assert f"{script}: 0/4 runs on new connections passed" in result.stdout
    assert "first failure:" in result.stdout
    assert f"{script}:4: expected S: 250, got: 550 5.0.0 no" in result.stdout


REUSE = """\
connect {url}
S: 220
C: EHLO client.test
S: 250
loop
C: MAIL FROM:<{sender}>
S: 250
C: RCPT TO:<{rcpt}>
S: 250
data <<EOF
Subject: reused

one of many
EOF
S: 250
end
C: QUIT
S: 221
"""


def test_reuse_delivers_n_messages_on_one_connection_per_worker(
    start: Callable[..., Any], tmp_path: Path
) -> None:
    servers = start(faults=["smtp:connect=delay 1ms"])  # marks every new connection
    script = write(
        tmp_path, "reuse.mt", REUSE.format(url=url(servers, "smtp"), sender=SENDER, rcpt=ALICE)
    )
    result = run(tmp_path, "--repeat", "12", "--concurrency", "3", "--reuse", str(script))
    assert result.returncode == 0, describe(result)
    assert "12/12 loop bodies on reused connections passed" in result.stdout
    assert "concurrency 3" in result.stdout
    assert "messages/s" in result.stdout
    messages = new_messages(servers)
    assert len(messages) == 12
    assert all(m.endswith(b"\n\none of many\n") for m in messages)
    assert servers.fired_faults() == ["smtp:connect=delay 1ms"] * 3


def test_reuse_with_a_single_worker(start: Callable[..., Any], tmp_path: Path) -> None:
    servers = start(faults=["smtp:connect=delay 1ms"])
    script = write(
        tmp_path, "reuse.mt", REUSE.format(url=url(servers, "smtp"), sender=SENDER, rcpt=ALICE)
    )
    result = run(tmp_path, "--json", "--repeat", "5", "--reuse", str(script))
    assert result.returncode == 0, describe(result)
    [figures] = [json.loads(line) for line in result.stdout.splitlines()]
    assert figures["connections"] == "reused" and figures["passed"] == 5
    assert len(new_messages(servers)) == 5
    assert len(servers.fired_faults()) == 1


def test_without_reuse_the_loop_runs_once(servers: Any, tmp_path: Path) -> None:
    script = write(
        tmp_path, "reuse.mt", REUSE.format(url=url(servers, "smtp"), sender=SENDER, rcpt=ALICE)
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)
    assert len(new_messages(servers)) == 1


def test_reuse_without_a_loop_is_exit_2(listener: Listener, tmp_path: Path) -> None:
    script = write(tmp_path, "noloop.mt", f"connect smtp://127.0.0.1:{listener.port}\nS: 220\n")
    result = run(tmp_path, "--repeat", "5", "--reuse", str(script))
    assert result.returncode == 2, describe(result)
    assert result.stderr.startswith(f"mailtalk: {script}: --reuse needs a loop ... end block")
    assert result.stdout == ""
    assert listener.accepted == 0


@pytest.mark.parametrize("option", [["--repeat", "0"], ["--concurrency", "0"], ["--timeout", "0"]])
def test_bad_numbers_are_usage_errors(tmp_path: Path, option: list[str]) -> None:
    script = write(tmp_path, "x.mt", "connect smtp://127.0.0.1:1\n")
    result = run(tmp_path, *option, str(script))
    assert result.returncode == 2, describe(result)


def test_help_documents_the_format_and_exit_statuses(tmp_path: Path) -> None:
    result = subprocess.run(
        [MAILTALK, "run", "--help"],
        capture_output=True,
        text=True,
        env=mailtalk_env(tmp_path),
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0
    for text in ("--keep-going", "--junit", "--tap", "--json", "--repeat", "--reuse",
                 "expect-close", "loop ... end", "MAILTALK_PASSWORD"):  # fmt: skip
        assert text in result.stdout
    for code in range(7):
        assert f"\n    {code}    " in result.stdout
