"""Onward delivery from ``mailtalk serve`` to Postfix, and delivery status notifications
(RFC 3464, RFC 3461).

``mailtalk serve`` relays alice's message to Postfix's alice (control/smtproutes), and
Postfix delivers it into her Maildir there.

``mailtalk serve`` relays alice's message (NOTIFY=FAILURE, ENVID, ORCPT) to Postfix,
which refuses the recipient for real (``550 5.1.1 ... User unknown``); the failure
DSN lands in alice's Maildir at mailtalk serve, carrying Postfix's reply. Postfix
is then made to write a DSN of its own (a NOTIFY=SUCCESS message to its local
alice): both reports have the fields RFC 3464 requires, and the same decoded
Original-Envelope-Id and Original-Recipient.
"""

from __future__ import annotations

import email
import re
import smtplib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.interop.conftest import RealServers
from tests.interop.test_send_extensions_real import maildir_message
from tests.interop.test_send_stop_points_real import POSTFIX_MAILDIR
from tests.servers.test_delivery import wait_for
from tests.servers.test_dsn_report import status_groups

pytestmark = pytest.mark.interop

REQUIRED_MESSAGE_FIELDS = ("Reporting-MTA", "Arrival-Date", "Original-Envelope-Id")
REQUIRED_RECIPIENT_FIELDS = (
    "Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code",
)  # fmt: skip


def reports_in(maildir: Path, marker: str) -> list[Message]:
    found = []
    for path in (*maildir.glob("new/*"), *maildir.glob("cur/*")):
        data = path.read_bytes()
        if b"report-type=delivery-status" in data and marker.encode() in data:
            found.append(email.message_from_bytes(data))
    return found


def fields(report: Message) -> tuple[Message, Message]:
    message_fields, recipient = status_groups(report)[:2]
    return message_fields, recipient


@contextmanager
def relaying_to_postfix(real_servers: RealServers, tmp_path: Path) -> Iterator[RunningServers]:
    """``mailtalk serve`` as isp.test, on 127.0.0.2, delivering mail for Postfix's domain
    onward to the real Postfix (control/smtproutes), retrying quickly."""
    root = tmp_path / "serve"
    (root / "control").mkdir(parents=True)
    (root / "control" / "me").write_text("isp.test\n")
    (root / "control" / "smtproutes").write_text(
        f"{real_servers.domain}:[{real_servers.host}]:{real_servers.smtp}\n"
    )
    with run_servers(root, listen="127.0.0.2", domains=["isp.test"],
                     users=[("alice", "secret")], onward_delivery=True,
                     retry_schedule=(0.1,), delivery_timeout=10.0) as serve:  # fmt: skip
        yield serve


def test_relayed_onward_into_postfixs_maildir(real_servers: RealServers, tmp_path: Path) -> None:
    """alice at mailtalk serve sends to Postfix's alice: serve's queue hands the message
    to the real Postfix (its Received header names serve's EHLO, isp.test), which
    delivers it into alice's Maildir there, body intact, no DSN back at serve."""
    marker = f"onward-{uuid.uuid4().hex}"
    with relaying_to_postfix(real_servers, tmp_path) as serve:
        with smtplib.SMTP(serve.host, serve.port("smtp"), timeout=10) as client:
            client.login("alice", "secret")
            client.sendmail(
                "alice@isp.test", [real_servers.address],
                f"Subject: {marker}\r\n\r\n.leading dot\r\nrelayed {marker}\r\n".encode(),
            )  # fmt: skip
        delivered = maildir_message(POSTFIX_MAILDIR, f"relayed {marker}")
        # delivered, so nothing came back to alice at serve (no failure DSN)
        assert not [m for m in serve.messages("alice") if marker.encode() in m]
    assert b"Return-Path: <alice@isp.test>" in delivered
    assert re.search(rb"Received: from isp\.test \(\S+ \[127\.0\.0\.\d+\]\)\s+by \S+ \(Postfix\)",
                     delivered), delivered[:800]  # fmt: skip
    assert delivered.endswith(f"\n\n.leading dot\nrelayed {marker}\n".encode())


def test_postfix_refusal_comes_back_as_a_dsn_like_postfixs_own(
    real_servers: RealServers, tmp_path: Path
) -> None:
    domain = real_servers.domain
    marker = f"dsn-{uuid.uuid4().hex}"
    stranger = f"nobody-{uuid.uuid4().hex[:8]}@{domain}"
    with relaying_to_postfix(real_servers, tmp_path) as serve:
        with smtplib.SMTP(serve.host, serve.port("smtp"), timeout=10) as client:
            client.login("alice", "secret")
            client.sendmail(
                "alice@isp.test", [stranger],
                f"Subject: {marker}\r\n\r\nto a stranger\r\n".encode(),
                ["ENVID=" + marker], ["NOTIFY=FAILURE", f"ORCPT=rfc822;first+2B{stranger}"],
            )  # fmt: skip
        (ours,) = wait_for(lambda: [
            email.message_from_bytes(m) for m in serve.messages("alice")
            if b"delivery-status" in m
        ], timeout=30)  # fmt: skip
    message_fields, recipient = fields(ours)
    assert recipient["Action"] == "failed" and recipient["Status"] == "5.1.1"
    assert recipient["Final-Recipient"] == f"rfc822; {stranger}"
    # Postfix's own words, as it said them to the RCPT:
    assert recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert "User unknown" in recipient["Diagnostic-Code"]
    assert message_fields["Original-Envelope-Id"] == marker

    # Postfix writes a DSN of its own: success, to its local alice.
    with smtplib.SMTP(real_servers.host, real_servers.smtp, timeout=10) as client:
        client.sendmail(
            f"alice@{domain}", [f"alice@{domain}"],
            f"Subject: {marker}\r\n\r\nhello\r\n".encode(),
            ["ENVID=" + marker], ["NOTIFY=SUCCESS", f"ORCPT=rfc822;first+2Balice@{domain}"],
        )  # fmt: skip
    (theirs,) = wait_for(lambda: reports_in(POSTFIX_MAILDIR, marker), timeout=30)
    their_message, their_recipient = fields(theirs)
    assert their_recipient["Action"] == "delivered"
    for name in REQUIRED_MESSAGE_FIELDS:
        assert name in message_fields and name in their_message, name
    for name in REQUIRED_RECIPIENT_FIELDS:
        assert name in recipient and name in their_recipient, name
    # The same decoding of ENVID and ORCPT's xtext (+2B is "+") as Postfix's:
    assert their_message["Original-Envelope-Id"] == message_fields["Original-Envelope-Id"]
    assert their_recipient["Original-Recipient"].replace(" ", "") == f"rfc822;first+alice@{domain}"
    assert recipient["Original-Recipient"].replace(" ", "") == f"rfc822;first+{stranger}"
    assert theirs.get_content_type() == ours.get_content_type() == "multipart/report"
