"""``mailtalk serve --lmtp``, driven by real LMTP clients: swaks ``--protocol LMTP``
(over TCP and ``--socket PATH``), Postfix's lmtp client (scripts/real-servers routes
lmtp.mailtalk.test to ``lmtp:inet:127.0.0.1:12624`` and lmtp-socket.mailtalk.test to
``lmtp:unix:/run/mailtalk-lmtp/lmtp``) and ``mailtalk send --server lmtp://...``.

What each saw is read from its own output (swaks' transcript, Postfix's log line
``relay=...status=sent``) and what the server did from the Maildirs and the journal:
one reply per accepted recipient after the message, one mailbox over ``--quota``
refused alone while the others are delivered. Postfix passes NOTIFY=SUCCESS on to an
LMTP server that offers DSN and then sends no success DSN itself: serve's "delivered"
DSN goes back through Postfix into the sender's Maildir there.
"""

from __future__ import annotations

import grp
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.journal import Journal
from tests.interop.clients import require_binary
from tests.interop.test_dsn_real import fields, reports_in
from tests.interop.test_pipe_real import run_pipe
from tests.interop.test_send_stop_points_real import (
    POSTFIX_LOG,
    POSTFIX_MAILDIR,
    Log,
    wait_for_delivery,
)
from tests.interop.test_serve_clients import describe, run_client
from tests.interop.test_serve_dsn_postfix_real import postfix_sendmail_or_skip
from tests.servers.test_delivery import wait_for
from tests.servers.test_dsn_report import status_groups

pytestmark = pytest.mark.interop

DOMAIN = "example.test"
QUOTA = 4096
POSTFIX_LMTP_DOMAIN = os.environ.get("MAILTALK_POSTFIX_LMTP_DOMAIN", "lmtp.mailtalk.test")
POSTFIX_LMTP_PORT = int(os.environ.get("MAILTALK_POSTFIX_LMTP_PORT", "12624"))
POSTFIX_LMTP_SOCKET_DOMAIN = os.environ.get(
    "MAILTALK_POSTFIX_LMTP_SOCKET_DOMAIN", "lmtp-socket.mailtalk.test"
)
POSTFIX_LMTP_SOCKET = Path(
    os.environ.get("MAILTALK_POSTFIX_LMTP_SOCKET", "/run/mailtalk-lmtp/lmtp")
)


def start_lmtp(mailtalk_servers: Callable[..., Any], tmp_path: Path, **options: Any) -> Any:
    """An LMTP listener only; alice and bob; bob's mailbox already over the quota."""
    servers = mailtalk_servers(
        smtp=None, lmtp=options.pop("lmtp", 0), users=[("alice", "a"), ("bob", "b")],
        domains=[options.pop("domain", DOMAIN)], quota_bytes=QUOTA,
        journal=Journal(tmp_path / "journal.jsonl"), **options,
    )  # fmt: skip
    filler = Path(servers.root) / "mail" / "bob" / "Maildir" / "new"
    filler.mkdir(parents=True, exist_ok=True)
    (filler / "1.filler.host").write_bytes(b"Subject: filler\n\n" + b"x" * QUOTA)
    return servers


def maildir_with(servers: Any, user: str, marker: str) -> list[Path]:
    new = Path(servers.root) / "mail" / user / "Maildir" / "new"
    return [p for p in new.glob("*") if marker.encode() in p.read_bytes()] if new.is_dir() else []


def message_events(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == "message"]


def test_swaks_lmtp_gets_a_reply_per_recipient_and_one_over_quota_alone(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    servers = start_lmtp(mailtalk_servers, tmp_path)
    marker = "lmtp" + uuid.uuid4().hex[:12]
    result = run_client(
        [require_binary("swaks"), "--protocol", "LMTP",
         "--server", f"127.0.0.1:{servers.port('lmtp')}", "--from", "bill@isp.test",
         "--to", f"alice@{DOMAIN},nobody@{DOMAIN},bob@{DOMAIN},carol@far.test,alice@{DOMAIN}",
         "--header", f"Subject: {marker}"],
        tmp_path,
    )  # fmt: skip
    out = result.stdout
    assert " -> LHLO " in out and "EHLO" not in out, describe(result)
    # No relaying: a foreign recipient is an unknown user, like a missing local one.
    assert f"<** 550 5.1.1 <nobody@{DOMAIN}>" in out
    assert "<** 550 5.1.1 <carol@far.test>" in out
    # After the dot: alice, bob, alice (RCPT order, refused ones left out)
    after_dot = out.split(" -> .\n", 1)[1]
    replies = [line for line in after_dot.splitlines() if line.startswith(("<- ", "<** "))]
    assert [r.split()[1:4] for r in replies[:3]] == [
        ["250", "2.0.0", f"<alice@{DOMAIN}>"],
        ["552", "5.2.2", f"<bob@{DOMAIN}>"],
        ["250", "2.0.0", f"<alice@{DOMAIN}>"],
    ], describe(result)
    assert len(maildir_with(servers, "alice", marker)) == 1  # one copy per mailbox
    assert maildir_with(servers, "bob", marker) == []
    events = [e for e in message_events(tmp_path) if e["subject"] == marker]
    assert [(e["recipients"], e["outcome"], e["code"]) for e in events] == [
        ([f"alice@{DOMAIN}"], "delivered", 250),
        ([f"bob@{DOMAIN}"], "refused", 552),
        ([f"alice@{DOMAIN}"], "delivered", 250),
    ]


def test_ehlo_and_helo_are_refused_lhlo_is_answered(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    servers = start_lmtp(mailtalk_servers, tmp_path)
    with socket.create_connection(("127.0.0.1", servers.port("lmtp")), timeout=10) as sock:
        reader = sock.makefile("rb")
        greeting = reader.readline()
        assert greeting.startswith(b"220 ") and b" LMTP " in greeting  # RFC 2033 4.1
        sock.sendall(b"EHLO me\r\nHELO me\r\nLHLO me\r\n")
        assert reader.readline().startswith(b"500 5.5.1 This is LMTP: say LHLO")
        assert reader.readline().startswith(b"500 5.5.1 This is LMTP: say LHLO")
        lines = [reader.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(reader.readline())
        assert lines[0].startswith(b"250-") and b"250 CHUNKING\r\n" in lines
        assert not any(b"AUTH" in line for line in lines)


@pytest.mark.parametrize("chunking", [False, True])
def test_mailtalk_send_by_lmtp_reads_each_recipients_reply(
    mailtalk_servers: Callable[..., Any], tmp_path: Path, chunking: bool
) -> None:
    servers = start_lmtp(mailtalk_servers, tmp_path)
    marker = "lmtp" + uuid.uuid4().hex[:12]
    result = run_pipe(
        ["send", "--from", "bill@isp.test", "--to", f"alice@{DOMAIN}", "--to", f"bob@{DOMAIN}",
         "--server", f"lmtp://127.0.0.1:{servers.port('lmtp')}", "--subject", marker,
         *(["--chunking"] if chunking else [])],
        [], tmp_path,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 1, out  # bob's mailbox is full: not every copy delivered
    assert f"# LMTP: that reply is for <alice@{DOMAIN}>" in out
    assert f"# LMTP: that reply is for <bob@{DOMAIN}>" in out
    assert ("C: BDAT " in out) is chunking and "552 5.2.2" in out
    assert len(maildir_with(servers, "alice", marker)) == 1
    assert maildir_with(servers, "bob", marker) == []
    events = [e for e in message_events(tmp_path) if e["subject"] == marker]
    assert [(e["user"], e["code"], e.get("chunking", False)) for e in events] == [
        ("alice", 250, chunking),
        ("bob", 552, chunking),
    ]


def test_postfix_lmtp_client_delivers_through_the_transport_map(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    sendmail = postfix_sendmail_or_skip(
        f"{POSTFIX_LMTP_DOMAIN}=lmtp:inet:127.0.0.1:{POSTFIX_LMTP_PORT}"
    )
    log = Log(POSTFIX_LOG)
    servers = start_lmtp(
        mailtalk_servers, tmp_path, lmtp=POSTFIX_LMTP_PORT, domain=POSTFIX_LMTP_DOMAIN
    )
    marker = "lmtp" + uuid.uuid4().hex[:12]
    alice, bob = f"alice@{POSTFIX_LMTP_DOMAIN}", f"bob@{POSTFIX_LMTP_DOMAIN}"
    message = f"Subject: {marker}\nFrom: carol@mailtalk.test\n\nby lmtp {marker}\n"
    subprocess.run([sendmail, "-i", "-f", "carol@mailtalk.test", alice, bob],
                   input=message, text=True, check=True, timeout=60)  # fmt: skip
    text = log.wait_for(lambda t: f"to=<{alice}>" in t and f"to=<{bob}>" in t)
    [sent] = [line for line in text.splitlines() if f"to=<{alice}>" in line]
    assert f"relay={POSTFIX_LMTP_DOMAIN}" not in sent  # the transport map's host, not MX
    assert f"relay=127.0.0.1[127.0.0.1]:{POSTFIX_LMTP_PORT}" in sent and "status=sent" in sent
    assert f"<{alice}> " in sent and "Saved" in sent  # our per-recipient reply, as heard
    [refused] = [line for line in text.splitlines() if f"to=<{bob}>" in line]
    # Postfix heard bob's own 552 (a bounce), while alice's copy went through.
    assert "status=bounced" in refused and "552 5.2.2" in refused, refused
    wait_for_delivery(Path(servers.root) / "mail" / "alice" / "Maildir", marker)
    assert maildir_with(servers, "bob", marker) == []


def test_swaks_lmtp_over_the_unix_socket(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "lmtp.sock"
    servers = start_lmtp(mailtalk_servers, tmp_path, lmtp=f"unix:{path}")
    marker = "lmtp" + uuid.uuid4().hex[:12]
    result = run_client(
        [require_binary("swaks"), "--protocol", "LMTP", "--socket", str(path),
         "--from", "bill@isp.test", "--to", f"alice@{DOMAIN},bob@{DOMAIN}",
         "--header", f"Subject: {marker}"],
        tmp_path,
    )  # fmt: skip
    out = result.stdout
    assert f"=== Connected to {path}." in out and " -> LHLO " in out, describe(result)
    after_dot = out.split(" -> .\n", 1)[1]
    replies = [line for line in after_dot.splitlines() if line.startswith(("<- ", "<** "))]
    assert [r.split()[1:4] for r in replies[:2]] == [
        ["250", "2.0.0", f"<alice@{DOMAIN}>"],
        ["552", "5.2.2", f"<bob@{DOMAIN}>"],
    ], describe(result)
    [stored] = maildir_with(servers, "alice", marker)
    assert b"with LMTP id " in stored.read_bytes()
    events = [e for e in message_events(tmp_path) if e["subject"] == marker]
    assert [(e["user"], e["code"], e["client"]) for e in events] == [
        ("alice", 250, ""), ("bob", 552, ""),
    ]  # fmt: skip
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    [connect] = [e for e in map(json.loads, lines) if e["event"] == "connect"]
    assert (connect["listener"], connect["port"], connect["code"]) == ("lmtp", None, 220)


def test_postfix_delivers_by_lmtp_unix_and_serve_sends_the_success_dsn(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    """Postfix's lmtp client on the socket: alice@ is delivered, bob@ (over quota) is
    refused alone. Postfix passed NOTIFY=SUCCESS on (serve offered DSN at LHLO) and so
    sent no success DSN itself; serve's "delivered" DSN for alice alone goes back to
    the sender at Postfix (control/smtproutes) and lands in her Maildir there, beside
    the failure DSN Postfix writes for bob's 552."""
    domain = POSTFIX_LMTP_SOCKET_DOMAIN
    sendmail = postfix_sendmail_or_skip(f"{domain}=lmtp:unix:{POSTFIX_LMTP_SOCKET}")
    log = Log(POSTFIX_LOG)
    root = tmp_path / "serve"
    (root / "control").mkdir(parents=True)
    (root / "control" / "smtproutes").write_text("mailtalk.test:[127.0.0.1]:25\n")
    servers = start_lmtp(
        mailtalk_servers, tmp_path, root=root, lmtp=f"unix:{POSTFIX_LMTP_SOCKET}",
        domain=domain, socket_mode=0o660, socket_group=grp.getgrnam("postfix").gr_gid,
        onward_delivery=True, retry_schedule=(0.1,), delivery_timeout=10.0,
    )  # fmt: skip
    marker = "lmtpdsn" + uuid.uuid4().hex[:12]
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    message = f"Subject: {marker}\nFrom: alice@mailtalk.test\n\nby lmtp:unix {marker}\n"
    subprocess.run([sendmail, "-i", "-f", "alice@mailtalk.test", "-N", "success,failure",
                    "-V", marker, alice, bob],
                   input=message, text=True, check=True, timeout=60)  # fmt: skip
    text = log.wait_for(lambda t: f"to=<{alice}>" in t and f"to=<{bob}>" in t)
    [sent] = [line for line in text.splitlines() if f"to=<{alice}>" in line]
    assert f"[{POSTFIX_LMTP_SOCKET}]," in sent and "status=sent" in sent, sent
    assert f"<{alice}> " in sent and "Saved" in sent
    [refused] = [line for line in text.splitlines() if f"to=<{bob}>" in line]
    assert "status=bounced" in refused and "552 5.2.2" in refused, refused
    queue_id = sent.split(": ", 2)[1]
    wait_for_delivery(Path(servers.root) / "mail" / "alice" / "Maildir", marker)

    reports = wait_for(lambda: [r for r in reports_in(POSTFIX_MAILDIR, marker)
                                if fields(r)[1]["Action"] == "delivered"], timeout=60)
    [ours] = reports
    message_fields, *recipients = status_groups(ours)
    assert [r["Final-Recipient"] for r in recipients] == [f"rfc822; {alice}"]
    assert recipients[0]["Status"] == "2.0.0"
    assert recipients[0]["Original-Recipient"].replace(" ", "") == f"rfc822;{alice}"
    assert message_fields["Original-Envelope-Id"] == marker
    assert "<MAILER-DAEMON@" in ours["From"]
    # Postfix wrote bob's failure DSN, and no success DSN of its own for alice
    theirs = wait_for(lambda: [r for r in reports_in(POSTFIX_MAILDIR, marker)
                               if fields(r)[1]["Action"] == "failed"], timeout=30)
    assert fields(theirs[0])[1]["Final-Recipient"].endswith(bob)
    assert f"{queue_id}: sender delivery status notification" not in log.new()
