"""What the SMTP, POP3, IMAP and DNS servers write in their journal, over real sockets.

Each test talks to ``run_servers(..., journal=Journal(FILE))`` the way a learner or a
mail program would (a raw socket where the exact lines matter, smtplib, poplib,
imaplib, dnspython) and reads FILE back: the events a lesson's check looks for are
there, with the fields it needs (a 503 to this RCPT, a TLS+AUTH session, a message in
new/ with this subject, a POP3 session dropped without QUIT that deleted nothing, a
second session's [IN-USE]). The passwords used never appear in the journal, in any of
the forms they travel in (see also tests/interop/test_journal_clients.py for the
same with swaks, curl and mpop).
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import poplib
import re
import smtplib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.journal import Journal, read_events
from tests.servers.journaling import (
    PASSWORD,
    POP3_STATUS,
    SMTP_CONTINUE,
    SMTP_REPLY,
    USER,
    Line,
    copy_tls,
    events,
    journalled,
    make_tls_dir,
    secret_forms,
    session_events,
    wait_event,
    wait_for,
)

DOMAIN = "example.test"
ALICE = f"{USER}@{DOMAIN}"
MESSAGE = f"From: bob@example.org\r\nTo: {ALICE}\r\nSubject: Lesson one\r\n\r\nHello.\r\n"

Start = Callable[..., tuple[RunningServers, Path]]


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tls_dir(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start(tmp_path: Path, tls_dir: Path) -> Iterator[Start]:
    """``start(**options)``: servers writing ``tmp_path/journal.jsonl``; (servers, path)."""
    with journalled(tmp_path, tls_dir) as run:
        yield run


def kinds(path: Path, **fields: Any) -> list[str]:
    return [event["event"] for event in events(path, **fields)]


def commands(path: Path, **fields: Any) -> list[tuple[Any, ...]]:
    return [
        (e["verb"], e["code"], e.get("enhanced") or e.get("response_code"))
        for e in events(path, event="command", **fields)
    ]


def assert_no_secrets(path: Path, *extra: bytes) -> None:
    """Neither the password nor its base64 forms, in any case (POP3 upper-cases verbs)."""
    data = b"".join(
        p.read_bytes() for p in (path, path.with_name(path.name + ".1")) if p.exists()
    ).lower()
    for form in (*secret_forms(), *extra):
        assert form.lower() not in data, f"{form!r} is in the journal"


# -- SMTP -----------------------------------------------------------------------------


def test_smtp_starttls_auth_session(start: Start) -> None:
    servers, path = start(submission=0)
    context = ssl.create_default_context(cafile=str(servers.cafile))
    with smtplib.SMTP("127.0.0.1", servers.port("submission"), timeout=10) as client:
        client.starttls(context=context)
        client.login(USER, PASSWORD)
        client.sendmail("bob@example.org", [ALICE], MESSAGE)
    close = wait_event(path, event="close", proto="smtp")
    session = close["session"]
    got = session_events(path, "localhost", session)
    assert [e["event"] for e in got] == [
        "connect", "command", "command", "tls", "command", "auth", "command",
        "command", "command", "command", "message", "command", "command", "close",
    ]  # fmt: skip
    connect = got[0]
    assert connect["listener"] == "submission" and connect["port"] == servers.port("submission")
    assert connect["code"] == 220 and connect["tls"] is False and connect["client"] == "127.0.0.1"
    assert commands(path, session=session) == [
        ("EHLO", 250, None), ("STARTTLS", 220, "2.0.0"), ("EHLO", 250, None),
        ("AUTH", 235, "2.7.0"), ("MAIL", 250, "2.1.0"), ("RCPT", 250, "2.1.5"),
        ("DATA", 354, None), (".", 250, "2.0.0"), ("QUIT", 221, "2.0.0"),
    ]  # fmt: skip
    tls = got[3]
    assert tls["version"] in ("TLSv1.2", "TLSv1.3") and tls["cipher"]
    auth = got[5]
    # smtplib prefers CRAM-MD5 to PLAIN, and the server offers it (alice given in clear)
    assert (auth["user"], auth["mechanism"], auth["ok"]) == (USER, "CRAM-MD5", True)
    auth_command = got[6]
    assert auth_command["args"] == "CRAM-MD5" and auth_command["tls"] is True
    rcpt = events(path, event="command", verb="RCPT")[0]
    assert rcpt["args"] == f"TO:<{ALICE}>" and rcpt["user"] == USER and rcpt["tls"] is True
    message = got[10]
    (stored,) = (servers.maildir(USER).new_dir).iterdir()
    assert message["outcome"] == "delivered" and message["user"] == USER
    assert message["mailbox"] == "INBOX" and message["file"] == stored.name
    assert message["subject"] == "Lesson one" and message["size"] == stored.stat().st_size
    assert message["recipients"] == [ALICE] and message["sender"] == "bob@example.org"
    dot = got[11]
    assert message["queue_id"] and message["queue_id"] in dot["text"]
    assert (close["reason"], close["tls"], close["user"]) == ("quit", True, USER)
    assert close["error"] is None
    assert_no_secrets(path)


def test_smtp_refusals_and_a_dropped_connection(start: Start) -> None:
    servers, path = start()
    line = Line(servers.port("smtp"))
    line.read(SMTP_REPLY)
    line.ask("HELO learner.test", SMTP_REPLY)
    line.ask(f"RCPT TO:<{ALICE}>", SMTP_REPLY)
    line.ask("MAIL FROM:<bob@example.org>", SMTP_REPLY)
    line.ask("RCPT TO:<friend@example.net>", SMTP_REPLY)
    line.ask("HLEO typo", SMTP_REPLY)
    line.close()
    close = wait_event(path, event="close")
    assert commands(path) == [
        ("HELO", 250, None), ("RCPT", 503, "5.5.1"), ("MAIL", 250, "2.1.0"),
        ("RCPT", 554, "5.7.1"), (None, 500, "5.5.2"),
    ]  # fmt: skip
    need_mail = events(path, event="command", code=503)[0]
    assert need_mail["args"] == f"TO:<{ALICE}>" and "MAIL" in need_mail["text"]
    relay = events(path, event="command", code=554)[0]
    assert relay["args"] == "TO:<friend@example.net>" and "Relay" in relay["text"]
    unknown = events(path, event="command", code=500)[0]
    assert unknown["args"] == "<redacted>"  # not a command: possibly a password
    assert (close["reason"], close["user"]) == ("dropped", None)
    assert kinds(path, event="message") == []


def test_smtp_relay_is_queued_with_the_queue_id(start: Start) -> None:
    servers, path = start(smtp=0)
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=10) as client:
        client.login(USER, PASSWORD)
        client.sendmail(ALICE, ["friend@example.net", ALICE], MESSAGE)
    wait_event(path, event="close")
    queued = events(path, event="message", outcome="queued")[0]
    delivered = events(path, event="message", outcome="delivered")[0]
    assert queued["recipients"] == ["friend@example.net"] and delivered["user"] == USER
    assert queued["queue_id"] == delivered["queue_id"]
    (envelope,) = servers.context.store.queue.list()
    assert queued["file"] == envelope.id and envelope.envelope.queue_id == queued["queue_id"]


def test_smtp_faults_are_journalled(start: Start) -> None:
    servers, path = start(
        faults=["smtp:connect=delay 0.05s", "smtp:rcpt#2=452 4.2.2 Mailbox full",
                "smtp:data=disconnect"],
    )  # fmt: skip
    line = Line(servers.port("smtp"))
    line.read(SMTP_REPLY)
    line.ask("EHLO learner.test", SMTP_REPLY)
    line.ask("MAIL FROM:<bob@example.org>", SMTP_REPLY)
    line.ask(f"RCPT TO:<{ALICE}>", SMTP_REPLY)
    assert line.ask(f"RCPT TO:<{USER}@localhost>", SMTP_REPLY).startswith("452")
    line.send("DATA")
    close = wait_event(path, event="close")
    got = session_events(path, "localhost", close["session"])
    # The delay at connect waited for the connect event, which comes first.
    assert [e["event"] for e in got[:2]] == ["connect", "fault"]
    assert (got[1]["verb"], got[1]["action"], got[1]["seconds"]) == ("CONNECT", "delay", 0.05)
    full = events(path, event="fault", verb="RCPT")[0]
    assert full["rule"] == "smtp:rcpt#2=452 4.2.2 Mailbox full" and full["action"] == "reply"
    assert full["reply"] == "452 4.2.2 Mailbox full"
    assert commands(path, verb="RCPT") == [("RCPT", 250, "2.1.5"), ("RCPT", 452, "4.2.2")]
    dropped = events(path, event="fault", verb="DATA")[0]
    assert dropped["action"] == "disconnect"
    assert close["reason"] == "fault"
    line.close()


def test_smtp_greeting_fault_is_the_connect_code(start: Start) -> None:
    servers, path = start(faults=["smtp:connect=554 5.7.1 No SMTP service here"])
    line = Line(servers.port("smtp"))
    assert line.read(SMTP_REPLY).startswith("554")
    line.ask("QUIT", SMTP_REPLY)
    line.close()
    close = wait_event(path, event="close")
    got = session_events(path, "localhost", close["session"])
    assert [e["event"] for e in got] == ["connect", "fault", "command", "close"]
    assert got[0]["code"] == 554 and "No SMTP service" in got[0]["text"]


def test_idle_and_refused_connections(start: Start) -> None:
    servers, path = start(idle_timeout=0.3, max_connections=1)
    first = Line(servers.port("smtp"))
    first.read(SMTP_REPLY)
    second = Line(servers.port("smtp"))
    assert second.read(SMTP_REPLY).startswith("421")
    refused = wait_event(path, event="close", reason="refused")
    connect = events(path, event="connect", session=refused["session"])[0]
    assert connect["code"] == 421
    idle = wait_event(path, event="close", reason="idle")
    assert idle["session"] != refused["session"]
    first.close()
    second.close()


def test_smtp_auth_forms_leave_no_secret(start: Start) -> None:
    servers, path = start(smtp=0, submission=0, tls_auth_only=True)
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    user64 = base64.b64encode(USER.encode()).decode()
    pass64 = base64.b64encode(PASSWORD.encode()).decode()
    # Refused on the plain port (TLS only): a client that sends the answers anyway.
    line = Line(servers.port("smtp"))
    line.read(SMTP_REPLY)
    line.ask("EHLO learner.test", SMTP_REPLY)
    assert line.ask(f"AUTH PLAIN {plain}", SMTP_REPLY).startswith("538")
    line.ask("AUTH LOGIN", SMTP_REPLY)
    line.ask(user64, SMTP_REPLY)
    line.ask(pass64, SMTP_REPLY)
    line.ask(PASSWORD, SMTP_REPLY)  # typed at the wrong moment
    line.close()
    # Over TLS: every way of answering.
    line = Line(servers.port("submission"))
    line.read(SMTP_REPLY)
    line.ask("EHLO learner.test", SMTP_REPLY)
    line.ask("STARTTLS", SMTP_REPLY)
    line.starttls(servers.cafile)
    line.ask("EHLO learner.test", SMTP_REPLY)
    assert line.ask("AUTH PLAIN", SMTP_CONTINUE).startswith("334")
    assert line.ask("*", SMTP_REPLY).startswith("501")
    wrong = base64.b64encode(f"\0{USER}\0{PASSWORD}x".encode()).decode()
    assert line.ask(f"AUTH PLAIN {wrong}", SMTP_REPLY).startswith("535")
    assert line.ask(f"AUTH LOGIN {user64}", SMTP_CONTINUE).startswith("334")
    assert line.ask(pass64, SMTP_REPLY).startswith("235")
    line.ask("QUIT", SMTP_REPLY)
    line.close()
    wait_for(lambda: len(events(path, event="close")) == 2)
    auths = [(e["mechanism"], e["ok"]) for e in events(path, event="auth")]
    assert auths == [("PLAIN", False), ("LOGIN", True)]
    assert commands(path, verb="AUTH") == [
        ("AUTH", 538, "5.7.11"), ("AUTH", 538, "5.7.11"), ("AUTH", 501, "5.7.0"),
        ("AUTH", 535, "5.7.8"), ("AUTH", 235, "2.7.0"),
    ]  # fmt: skip
    assert [e["args"] for e in events(path, event="command", verb="AUTH")] == [
        "PLAIN <redacted>", "LOGIN", "PLAIN", "PLAIN <redacted>", "LOGIN <redacted>",
    ]  # fmt: skip
    assert len(events(path, event="command", verb=None, args="<redacted>")) == 3
    assert_no_secrets(path, (PASSWORD + "x").encode())


# -- POP3 -----------------------------------------------------------------------------


def deliver(servers: RunningServers, count: int) -> list[str]:
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=10) as client:
        for number in range(count):
            client.sendmail("bob@example.org", [ALICE], MESSAGE.replace("one", str(number)))
    return sorted(p.name for p in servers.maildir(USER).new_dir.iterdir())


def pop_login(servers: RunningServers) -> Line:
    line = Line(servers.port("pop3"))
    line.read(POP3_STATUS)
    line.ask(f"USER {USER}", POP3_STATUS)
    return line


def test_pop3_drop_deletes_nothing_quit_does(start: Start) -> None:
    servers, path = start(pop3=0)
    files = deliver(servers, 2)
    line = pop_login(servers)
    assert line.ask(f"PASS {PASSWORD}", POP3_STATUS).startswith("+OK")
    line.ask("STAT", POP3_STATUS)
    line.ask("DELE 1", POP3_STATUS)
    # A second session while the first holds the maildrop: [IN-USE].
    second = pop_login(servers)
    assert "[IN-USE]" in second.ask(f"PASS {PASSWORD}", POP3_STATUS)
    second.close()
    line.close()  # dropped without QUIT
    dropped = wait_event(path, event="close", proto="pop3", reason="dropped", user=USER)
    assert (dropped["marked"], dropped["deleted"]) == (1, 0)
    assert len(list(servers.maildir(USER).new_dir.iterdir())) + len(
        list(servers.maildir(USER).cur_dir.iterdir())
    ) == 2
    in_use = events(path, event="command", verb="PASS", code="-ERR")[0]
    assert in_use["response_code"] == "IN-USE" and in_use["args"] == "<redacted>"
    assert "lock busy" in in_use["text"]
    refused = events(path, event="auth", proto="pop3", ok=False)[0]
    assert (refused["user"], refused["mechanism"], refused["reason"]) == (
        USER, "USER/PASS", "IN-USE",
    )  # fmt: skip
    line = pop_login(servers)
    line.ask(f"PASS {PASSWORD}", POP3_STATUS)
    line.ask("DELE 1", POP3_STATUS)
    assert "1 messages deleted" in line.ask("QUIT", POP3_STATUS)
    line.close()
    quit_ = wait_event(path, event="close", proto="pop3", reason="quit")
    assert (quit_["marked"], quit_["deleted"], quit_["user"]) == (1, 1, USER)
    assert commands(path, session=quit_["session"])[-1] == ("QUIT", "+OK", None)
    left = [p.name.split(":")[0] for p in (*servers.maildir(USER).new_dir.iterdir(),
                                            *servers.maildir(USER).cur_dir.iterdir())]
    assert len(left) == 1 and left[0] in {name.split(":")[0] for name in files}
    assert_no_secrets(path)


def test_pop3_wrong_password_quota_and_every_login_form(start: Start) -> None:
    servers, path = start(pop3=0, quota_bytes=10)
    deliver(servers, 1)
    line = pop_login(servers)
    assert "[AUTH]" in line.ask(f"PASS {PASSWORD}x", POP3_STATUS)
    assert "[AUTH]" in line.ask(f"APOP {USER} " + "0" * 32, POP3_STATUS)
    line.close()
    line = Line(servers.port("pop3"))
    greeting = line.read(POP3_STATUS)
    greeting_stamp = re.search(r"<[^>]+>", greeting)
    assert greeting_stamp is not None
    digest = hashlib.md5((greeting_stamp.group(0) + PASSWORD).encode()).hexdigest()
    assert "[SYS/TEMP]" in line.ask(f"APOP {USER} {digest}", POP3_STATUS)  # over quota
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    assert "[SYS/TEMP]" in line.ask(f"AUTH PLAIN {plain}", POP3_STATUS)
    assert line.ask("AUTH PLAIN", POP3_STATUS).startswith("+ ")
    assert "[SYS/TEMP]" in line.ask(plain, POP3_STATUS)
    assert line.ask(PASSWORD, POP3_STATUS).startswith("-ERR")  # typed as a command
    line.ask("QUIT", POP3_STATUS)
    line.close()
    wait_for(lambda: len(events(path, event="close", proto="pop3")) == 2)
    auths = [(e["mechanism"], e["ok"], e["reason"]) for e in events(path, event="auth")]
    assert auths == [
        ("USER/PASS", False, "AUTH"), ("APOP", False, "AUTH"), ("APOP", False, "SYS/TEMP"),
        ("PLAIN", False, "SYS/TEMP"), ("PLAIN", False, "SYS/TEMP"),
    ]  # fmt: skip
    errors = [(e["verb"], e["response_code"]) for e in events(path, event="command",
                                                             code="-ERR")]
    assert errors == [
        ("PASS", "AUTH"), ("APOP", "AUTH"), ("APOP", "SYS/TEMP"), ("AUTH", "SYS/TEMP"),
        ("AUTH", "SYS/TEMP"), (None, None),
    ]  # fmt: skip
    assert [e["args"] for e in events(path, event="command", verb="APOP")] == [
        f"{USER} <redacted>"
    ] * 2
    assert_no_secrets(path, (PASSWORD + "x").encode(), digest.encode())


def test_pop3_with_poplib_over_stls(start: Start) -> None:
    servers, path = start(pop3=0)
    deliver(servers, 1)
    client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=10)
    client.stls(ssl.create_default_context(cafile=str(servers.cafile)))
    client.user(USER)
    client.pass_(PASSWORD)
    client.retr(1)
    client.quit()
    close = wait_event(path, event="close", proto="pop3")
    assert [e["event"] for e in session_events(path, "localhost", close["session"])].count(
        "tls"
    ) == 1
    retr = events(path, event="command", verb="RETR")[0]
    assert retr["code"] == "+OK" and retr["tls"] is True and retr["user"] == USER
    assert close["tls"] is True and close["reason"] == "quit"
    assert_no_secrets(path)


# -- IMAP -----------------------------------------------------------------------------


def test_imap_session(start: Start) -> None:
    servers, path = start(imap=0)
    deliver(servers, 1)
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        client.login(USER, PASSWORD + "x")
    client.login(USER, PASSWORD)
    client.select("INBOX")
    client.fetch("1", "(BODY.PEEK[HEADER])")
    client.store("1", "+FLAGS", "\\Seen")
    client.append("INBOX", None, None, b"Subject: draft\r\n\r\nx\r\n")
    client.store("2", "+FLAGS", "\\Deleted")
    client.expunge()
    assert client.select("Nowhere")[0] == "NO"
    client.logout()
    close = wait_event(path, event="close", proto="imap")
    assert (close["reason"], close["user"]) == ("quit", USER)
    got = commands(path, proto="imap")
    assert got == [
        ("CAPABILITY", "OK", None), ("LOGIN", "NO", "AUTHENTICATIONFAILED"),
        ("LOGIN", "OK", got[2][2]), ("SELECT", "OK", "READ-WRITE"), ("FETCH", "OK", None),
        ("STORE", "OK", None), ("APPEND", "OK", got[6][2]), ("STORE", "OK", None),
        ("EXPUNGE", "OK", None), ("SELECT", "NO", "NONEXISTENT"), ("LOGOUT", "OK", None),
    ]  # fmt: skip
    assert got[2][2].startswith("CAPABILITY") and got[6][2].startswith("APPENDUID")
    store = events(path, event="command", verb="STORE")[0]
    assert store["args"] == "1 +FLAGS (\\Seen)" and store["mailbox"] == "INBOX"
    assert [e["args"] for e in events(path, event="command", verb="LOGIN")] == [
        f"{USER} <redacted>"
    ] * 2
    assert [e["ok"] for e in events(path, event="auth", proto="imap")] == [False, True]
    assert_no_secrets(path, (PASSWORD + "x").encode())


def test_imap_login_forms_leave_no_secret(start: Start) -> None:
    servers, path = start(imap=0)
    line = Line(servers.port("imap"))
    line.read(b"* OK")
    line.ask(f'a1 LOGIN "{USER}" "{PASSWORD}x"', b"a1 ")
    line.send(f"a2 LOGIN {USER} {{{len(PASSWORD)}}}")
    line.read(b"+ ")
    line.ask(PASSWORD, b"a2 ")
    line.ask("a3 LOGOUT", b"a3 ")
    line.close()
    line = Line(servers.port("imap"))
    line.read(b"* OK")
    blob = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    wrong = base64.b64encode(f"\0{USER}\0{PASSWORD}x".encode()).decode()
    assert "NO [AUTHENTICATIONFAILED]" in line.ask(f"b1 AUTHENTICATE PLAIN {wrong}", b"b1 ")
    line.ask("b2 AUTHENTICATE PLAIN", b"+")
    assert " OK " in line.ask(blob, b"b2 ")
    line.ask(f"b3 LOGIN {USER} {PASSWORD}", b"b3 ")  # BAD: already logged in
    line.ask(f"{PASSWORD} {PASSWORD}", b"pw4")  # an unknown command, its tag the password
    line.ask(PASSWORD, b"* BAD")  # not even a command
    line.ask("b4 LOGOUT", b"b4 ")
    line.close()
    wait_for(lambda: len(events(path, event="close", proto="imap")) == 2)
    args = [e["args"] for e in events(path, event="command")
            if e["verb"] in ("LOGIN", "AUTHENTICATE")]
    assert args == [f"{USER} <redacted>", f"{USER} <redacted>", "PLAIN <redacted>", "PLAIN",
                    f"{USER} <redacted>"]  # fmt: skip
    assert [e["ok"] for e in events(path, event="auth")] == [False, True, False, True]
    assert len(events(path, event="command", verb=None, args="<redacted>")) == 2
    assert_no_secrets(path, (PASSWORD + "x").encode(), wrong.encode())


# -- DNS and control files ------------------------------------------------------------


def test_dns_queries_are_journalled(start: Start, tmp_path: Path) -> None:
    dns_dir = tmp_path / "root" / "dns"
    dns_dir.mkdir(parents=True)
    (dns_dir / "records").write_text(
        "example.net MX 10 mx.example.net\nmx.example.net A 127.0.0.3\n"
    )
    servers, path = start(dns=0)
    port = servers.port("dns")
    dns.query.udp(dns.message.make_query("example.net", "MX"), "127.0.0.1", port=port, timeout=5)
    dns.query.tcp(dns.message.make_query("mx.example.net", "A"), "127.0.0.1", port=port,
                  timeout=5)  # fmt: skip
    dns.query.udp(dns.message.make_query("nowhere.example.net", "MX"), "127.0.0.1", port=port,
                  timeout=5)  # fmt: skip
    wait_for(lambda: len(events(path, event="dns")) == 3)
    got = [(e["transport"], e["qname"], e["qtype"], e["rcode"], e["answers"])
           for e in events(path, event="dns")]  # fmt: skip
    assert got == [
        ("udp", "example.net", "MX", "NOERROR", ["MX 10 mx.example.net."]),
        ("tcp", "mx.example.net", "A", "NOERROR", ["A 127.0.0.3"]),
        ("udp", "nowhere.example.net", "MX", "NXDOMAIN", []),
    ]
    assert {e["server"] for e in events(path, event="dns")} == {"localhost"}
    assert {e["client"] for e in events(path, event="dns")} == {"127.0.0.1"}


def test_a_changed_control_file_is_journalled(start: Start) -> None:
    servers, path = start()
    line = Line(servers.port("smtp"))
    line.read(SMTP_REPLY)
    line.ask("HELO learner.test", SMTP_REPLY)
    line.ask("MAIL FROM:<bob@example.org>", SMTP_REPLY)
    assert line.ask("RCPT TO:<bob@other.test>", SMTP_REPLY).startswith("554")
    line.close()
    control = servers.root / "control"
    for name in ("rcpthosts", "locals"):
        with (control / name).open("a") as handle:
            handle.write("other.test\n")
    servers.context.users.add("bob", "pw")
    servers.context.users.save()
    line = Line(servers.port("smtp"))
    line.read(SMTP_REPLY)
    line.ask("HELO learner.test", SMTP_REPLY)
    line.ask("MAIL FROM:<bob@example.org>", SMTP_REPLY)
    assert line.ask("RCPT TO:<bob@other.test>", SMTP_REPLY).startswith("250")
    line.close()
    wait_for(lambda: len(events(path, event="close")) == 2)
    control_event = events(path, event="control")[0]
    assert control_event["files"] == ["rcpthosts", "locals", "users"]
    assert control_event["ok"] is True and control_event["error"] is None
    names = [e["event"] for e in read_events(path)]
    assert names.index("control") < max(i for i, n in enumerate(names) if n == "connect")
    assert [c[1] for c in commands(path, verb="RCPT")] == [554, 250]


def test_sessions_open_when_the_servers_stop(tmp_path: Path, tls_dir: Path) -> None:
    copy_tls(tls_dir, tmp_path / "root")
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    with run_servers(tmp_path / "root", smtp=0, journal=journal) as servers:
        line = Line(servers.port("smtp"))
        line.read(SMTP_REPLY)
        line.ask("EHLO learner.test", SMTP_REPLY)
    journal.close()
    (close,) = events(path, event="close")
    assert close["reason"] == "shutdown"
    line.close()
