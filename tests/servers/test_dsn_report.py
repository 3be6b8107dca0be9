"""Delivery status notifications (RFC 3464) as ``mailtalk serve`` builds them, chosen by
the sender's RFC 3461 parameters, parsed back with the email package. The servers
sending real ones: tests/servers/test_delivery.py."""

from __future__ import annotations

import email
import email.utils
from datetime import UTC, datetime
from email.message import Message

import pytest

from mailtalk.servers.dsn_report import ReportRecipient, build_report, wants

MESSAGE = (
    b"From: Alice <alice@isp.test>\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nHi Bob.\r\n"
)
ARRIVAL = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def parse(report: bytes) -> Message:
    return email.message_from_bytes(report)


def parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


def status_groups(report: Message) -> list[Message]:
    """The message/delivery-status part's groups: per-message first, then each recipient."""
    (part,) = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    return parts(part)


def test_a_failure_report_parses_back_as_rfc_3464_says() -> None:
    failed = ReportRecipient(
        "nobody@example.net", "failed", "5.1.1", "host said no",
        orcpt="rfc822;orig+2Bnobody@example.net", remote="mx.example.net",
        diagnostic="550 5.1.1 no such user",
    )  # fmt: skip
    report = parse(build_report("isp.test", "alice@isp.test", [failed], MESSAGE,
                                arrival=ARRIVAL, queue_id="Q1", envid="env+2Bid"))  # fmt: skip
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["To"] == "<alice@isp.test>" and report["Auto-Submitted"] == "auto-replied"
    types = [p.get_content_type() for p in parts(report)]
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    message_fields, recipient = status_groups(report)
    assert message_fields["Reporting-MTA"] == "dns; isp.test"
    assert message_fields["Original-Envelope-Id"] == "env+id"  # xtext decoded, as Postfix does
    assert email.utils.parsedate_to_datetime(message_fields["Arrival-Date"]) == ARRIVAL
    assert recipient["Original-Recipient"] == "rfc822; orig+nobody@example.net"
    assert recipient["Final-Recipient"] == "rfc822; nobody@example.net"
    assert recipient["Action"] == "failed" and recipient["Status"] == "5.1.1"
    assert recipient["Remote-MTA"] == "dns; mx.example.net"
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    headers = parts(report)[2].get_payload()
    assert "Subject: hello" in headers and "Hi Bob." not in headers


def test_ret_full_returns_the_whole_message_in_a_failure_only() -> None:
    failed = ReportRecipient("bob@example.net", "failed", "5.0.0")
    report = parse(build_report("isp.test", "alice@isp.test", [failed], MESSAGE,
                                arrival=ARRIVAL, ret="FULL"))  # fmt: skip
    returned = parts(report)[2]
    assert returned.get_content_type() == "message/rfc822"
    (inner,) = parts(returned)
    assert inner["Subject"] == "hello" and inner.get_payload() == "Hi Bob.\n"
    delayed = ReportRecipient("bob@example.net", "delayed", "4.4.1", retry_until=1e9)
    report = parse(build_report("isp.test", "alice@isp.test", [delayed], MESSAGE,
                                arrival=ARRIVAL, ret="FULL"))  # fmt: skip
    assert parts(report)[2].get_content_type() == "text/rfc822-headers"
    assert report["Subject"] == "Delayed Mail (still being retried)"
    assert "Will-Retry-Until" in status_groups(report)[1]


@pytest.mark.parametrize(
    ("notify", "failed", "delayed", "success"),
    [
        (None, True, False, False),
        ("NEVER", False, False, False),
        ("SUCCESS", False, False, True),
        ("FAILURE,DELAY", True, True, False),
        ("SUCCESS,FAILURE,DELAY", True, True, True),
    ],
)
def test_notify_decides_which_reports_go(
    notify: str | None, failed: bool, delayed: bool, success: bool
) -> None:
    assert wants(notify, "failed") is failed
    assert wants(notify, "delayed") is delayed
    assert wants(notify, "relayed") is success and wants(notify, "delivered") is success
