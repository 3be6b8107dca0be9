"""Onward delivery: two reference servers, the sender's ISP (A) and the recipient's domain (B).

A (isp.test, 127.0.0.2) relays for its authenticated users and delivers its queue
to B (example.net, 127.0.0.3), found through A's control/smtproutes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import smtplib
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.smtproutes import SMTPRoute, find_route, parse_smtproutes
from tests.servers.test_dsn_report import parse, parts, status_groups

A_HOST = "127.0.0.2"
B_HOST = "127.0.0.3"
FAST = {
    "onward_delivery": True,
    "retry_schedule": (0.05,),
    "max_queue_age": 30.0,
    "delivery_timeout": 5.0,
}
MESSAGE = (
    b"From: Alice <alice@isp.test>\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nHi Bob.\r\n"
)


# -- smtproutes -------------------------------------------------------------------


def test_smtproutes_lines() -> None:
    routes = parse_smtproutes(
        "# comment\n"
        "example.net:127.0.0.3:2525\n"
        ".sub.example:[127.0.0.4]:26\n"
        "mx.example:\n"
        "plain.example:relay.example\n"
        ":[127.0.0.9]\n"
        "bad.example:host:notaport\n"
    )
    assert find_route(routes, "EXAMPLE.net") == SMTPRoute("127.0.0.3", 2525)
    assert find_route(routes, "a.sub.example") == SMTPRoute("[127.0.0.4]", 26)
    assert find_route(routes, "mx.example") == SMTPRoute(None, None)
    assert find_route(routes, "plain.example") == SMTPRoute("relay.example", None)
    assert find_route(routes, "bad.example") == SMTPRoute("[127.0.0.9]", None)
    assert find_route(routes, "other.org") == SMTPRoute("[127.0.0.9]", None)
    assert find_route(parse_smtproutes("x.org:h\n"), "y.org") is None


# -- two servers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates made once (key generation is slow) and copied into every root."""
    root = tmp_path_factory.mktemp("tls")
    with run_servers(root, smtp=0, listen=A_HOST):
        pass
    return root / "tls"


@pytest.fixture(autouse=True)
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="mailtalk")
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


@pytest.fixture
def world(tmp_path: Path, tls_dir: Path) -> Iterator[Callable[..., RunningServers]]:
    """``world(name, me, host, **options)``: a server with its own root and ``me``."""
    stack = contextlib.ExitStack()

    def start(name: str, me: str, host: str, **options: Any) -> RunningServers:
        root = tmp_path / name
        (root / "control").mkdir(parents=True, exist_ok=True)
        (root / "control" / "me").write_text(me + "\n")
        if not (root / "tls").exists():
            shutil.copytree(tls_dir, root / "tls")
        return stack.enter_context(run_servers(root, listen=host, domains=[me], **options))

    with stack:
        yield start


def recipient_server(world: Callable[..., RunningServers], **options: Any) -> RunningServers:
    return world(
        "b", "example.net", B_HOST, users=[("bob", "bobpw"), ("carol", "carolpw")], **options
    )


def isp_server(world: Callable[..., RunningServers], route: str, **options: Any) -> RunningServers:
    settings = {**FAST, **options}
    servers = world("a", "isp.test", A_HOST, users=[("alice", "secret")], **settings)
    (servers.root / "control" / "smtproutes").write_text(route)
    return servers


def route_to(b: RunningServers) -> str:
    return f"example.net:{B_HOST}:{b.port('smtp')}\n"


def send(a: RunningServers, sender: str, rcpts: list[str], message: bytes = MESSAGE) -> None:
    with smtplib.SMTP(a.host, a.port("smtp"), timeout=10) as client:
        client.login("alice", "secret")
        client.sendmail(sender, rcpts, message)


def wait_for(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {condition}")


def queue_empty(servers: RunningServers) -> bool:
    queue = servers.context.store.queue
    return not queue.envelopes_dir.is_dir() or queue.list() == []


def closed_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def test_relayed_mail_is_delivered_to_the_domains_server(world: Any) -> None:
    b = recipient_server(world)
    a = isp_server(world, route_to(b))
    send(a, "alice@isp.test", ["bob@example.net"])
    (message,) = wait_for(lambda: b.messages("bob"))
    lines = message.split(b"\n")
    assert lines[0] == b"Return-Path: <alice@isp.test>"
    assert message.count(b"Return-Path:") == 1  # A's own is not passed on
    # B's trace header: from A's name and address, over TLS (STARTTLS was offered).
    assert lines[1] == b"Received: from isp.test ([127.0.0.2])"
    assert b"by example.net (mailtalk) with ESMTPS id" in lines[2]
    assert b"by isp.test (mailtalk) with ESMTPA id" in message  # A's, from the client
    assert message.endswith(b"Subject: hello\n\nHi Bob.\n")
    wait_for(lambda: queue_empty(a))
    assert a.messages("alice") == []


def test_temporary_failure_is_retried(world: Any, caplog: pytest.LogCaptureFixture) -> None:
    b = recipient_server(world, scenarios=["greylist"])
    a = isp_server(world, route_to(b))
    send(a, "alice@isp.test", ["bob@example.net"])
    (message,) = wait_for(lambda: b.messages("bob"))
    assert b"Subject: hello" in message
    assert any("Greylisted" in rule for rule in b.fired_faults())
    text = caplog.text
    assert "deferred" in text and "451 4.7.1" in text and "attempt 2" in text
    wait_for(lambda: queue_empty(a))
    assert a.messages("alice") == []


def test_permanent_failure_bounces_to_a_local_sender(world: Any) -> None:
    b = recipient_server(world)
    a = isp_server(world, route_to(b))
    send(a, "alice@isp.test", ["nobody@example.net", "bob@example.net"])
    wait_for(lambda: b.messages("bob"))
    (bounce,) = wait_for(lambda: a.messages("alice"))
    assert bounce.startswith(b"Return-Path: <>\n")
    head, _, body = bounce.partition(b"\n\n")
    assert b"From: Mail Delivery System <MAILER-DAEMON@isp.test>" in head
    assert b"To: <alice@isp.test>" in head
    assert b"Content-Type: multipart/report; report-type=delivery-status;" in head
    assert b"<nobody@example.net>: host 127.0.0.3[127.0.0.3]:" in body
    assert b"said: 550 5.1.1" in body and b"(in reply to RCPT TO command)" in body
    assert b"Content-Type: message/delivery-status" in body
    assert b"Final-Recipient: rfc822; nobody@example.net" in body
    assert b"Action: failed\nStatus: 5.1.1\n" in body
    assert b"Diagnostic-Code: smtp; 550 5.1.1" in body
    assert b"bob@example.net" not in body.split(b"text/rfc822-headers")[0].split(b"--")[1]
    assert b"Content-Type: text/rfc822-headers" in body and b"Subject: hello" in body
    assert b"Hi Bob." not in body  # headers only
    wait_for(lambda: queue_empty(a))


def test_bounce_to_a_remote_sender_is_delivered_onward(world: Any) -> None:
    b = recipient_server(world)
    a = isp_server(world, route_to(b))
    send(a, "carol@example.net", ["nobody@example.net"])
    (bounce,) = wait_for(lambda: b.messages("carol"))
    assert bounce.startswith(b"Return-Path: <>\n")
    assert b"MAILER-DAEMON@isp.test" in bounce and b"nobody@example.net" in bounce
    wait_for(lambda: queue_empty(a))


def test_unreachable_server_is_retried_then_bounced(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port(B_HOST)
    a = isp_server(world, f"example.net:[{B_HOST}]:{port}\n", max_queue_age=0.5)
    send(a, "alice@isp.test", ["bob@example.net"])
    (bounce,) = wait_for(lambda: a.messages("alice"))
    assert f"connect to [{B_HOST}][{B_HOST}]:{port} failed".encode() in bounce
    assert b"gave up after" in bounce
    assert b"Status: 4.4.1" in bounce
    assert "attempt 2" in caplog.text
    wait_for(lambda: queue_empty(a))


def test_a_bounce_is_never_bounced(world: Any, caplog: pytest.LogCaptureFixture) -> None:
    b = recipient_server(world)
    a = isp_server(world, route_to(b))
    send(a, "", ["nobody@example.net"])
    wait_for(lambda: queue_empty(a) and "not bouncing a message from <>" in caplog.text)
    time.sleep(0.2)
    assert a.messages("alice") == [] and queue_empty(a)


def test_the_queue_survives_a_restart(world: Any, tmp_path: Path, tls_dir: Path) -> None:
    port = closed_port(B_HOST)
    settings = {**FAST, "retry_schedule": (0.1, 0.3)}
    a_root = tmp_path / "a"
    shutil.copytree(tls_dir, a_root / "tls")
    with contextlib.ExitStack() as first:
        a = isp_server(
            lambda *args, **options: first.enter_context(_plain_start(tmp_path, *args, **options)),
            f"example.net:[{B_HOST}]:{port}\n",
            **settings,
        )
        send(a, "alice@isp.test", ["bob@example.net"])

        def attempted() -> bool:
            messages = a.context.store.queue.list()
            return bool(messages) and messages[0].state.get("attempts", 0) >= 1

        wait_for(attempted)
    (envelope_path,) = (a_root / "queue" / "envelopes").iterdir()
    state = json.loads(envelope_path.read_text())["delivery"]
    assert state["attempts"] >= 1 and "failed" in state["last_error"]["bob@example.net"]
    b = recipient_server(world)
    (a_root / "control" / "smtproutes").write_text(route_to(b))
    with _plain_start(tmp_path, "a", "isp.test", A_HOST, users=[], **settings) as again:
        (message,) = wait_for(lambda: b.messages("bob"))
        assert b"Subject: hello" in message
        wait_for(lambda: queue_empty(again))


@contextlib.contextmanager
def _plain_start(tmp_path: Path, name: str, me: str, host: str, **options: Any) -> Any:
    root = tmp_path / name
    (root / "control").mkdir(parents=True, exist_ok=True)
    (root / "control" / "me").write_text(me + "\n")
    with run_servers(root, listen=host, domains=[me], **options) as servers:
        yield servers


def test_python_api_does_not_deliver_by_default(world: Any) -> None:
    b = recipient_server(world)
    a = world("a", "isp.test", A_HOST, users=[("alice", "secret")])
    (a.root / "control" / "smtproutes").write_text(route_to(b))
    send(a, "alice@isp.test", ["bob@example.net"])
    time.sleep(0.3)
    assert b.messages("bob") == []
    assert len(a.context.store.queue.list()) == 1


def test_delivery_by_mx_records_from_the_embedded_dns(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import inspect

    if "dns" not in inspect.signature(run_servers).parameters:
        pytest.skip("the embedded DNS server (run_servers(dns=...)) is not there yet")
    b = recipient_server(world)
    a_root = b.root.parent / "a"
    (a_root / "dns").mkdir(parents=True)
    (a_root / "dns" / "records").write_text(
        "example.net MX 20 backup.example.net\n"
        "example.net MX 10 mx.example.net\n"
        f"mx.example.net A {B_HOST}\n"
        "backup.example.net A 127.0.0.4\n"
    )
    # No smtproutes: the MX records say where; --mx-port says which port.
    a = world(
        "a", "isp.test", A_HOST, users=[("alice", "secret")], dns=0,
        mx_port=b.port("smtp"), **FAST,
    )  # fmt: skip
    assert a.context.settings.resolver == f"{A_HOST}:{a.port('dns')}"
    send(a, "alice@isp.test", ["bob@example.net"])
    (message,) = wait_for(lambda: b.messages("bob"))
    assert b"Received: from isp.test ([127.0.0.2])" in message
    assert f"MX of example.net via {A_HOST}:{a.port('dns')}: example.net has 2 MX" in caplog.text
    wait_for(lambda: queue_empty(a))


def test_an_address_literal_is_delivered_without_a_lookup(world: Any) -> None:
    b = recipient_server(world)
    (b.root / "control" / "locals").write_text(f"example.net\n[{B_HOST}]\n")
    (b.root / "control" / "rcpthosts").write_text(f"example.net\n[{B_HOST}]\n")
    b.context.control = type(b.context.control).load(b.root)
    a = isp_server(world, "", mx_port=b.port("smtp"))
    send(a, "alice@isp.test", [f"bob@[{B_HOST}]"])
    (message,) = wait_for(lambda: b.messages("bob"))
    assert b"Subject: hello" in message
    wait_for(lambda: queue_empty(a))


def test_a_refused_greeting_bounces_saying_so(world: Any) -> None:
    """The one SMTP sequence ends at a refusing greeting: the bounce quotes it."""
    b = recipient_server(world, faults=["smtp:connect=554 5.7.1 no service for you"])
    a = isp_server(world, route_to(b))
    send(a, "alice@isp.test", ["bob@example.net"])
    (bounce,) = wait_for(lambda: a.messages("alice"))
    assert b"said: 554 5.7.1 no service for you (in reply to the greeting)" in bounce
    assert b"Status: 5.7.1" in bounce
    assert b.messages("bob") == []
    wait_for(lambda: queue_empty(a))


def test_a_lost_connection_says_what_it_waited_for(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = recipient_server(world, faults=["smtp:ehlo=disconnect"])
    a = isp_server(world, route_to(b), max_queue_age=0.5)
    send(a, "alice@isp.test", ["bob@example.net"])
    (bounce,) = wait_for(lambda: a.messages("alice"))
    assert b"lost connection with 127.0.0.3[127.0.0.3]:" in bounce
    assert b"while waiting for a reply to EHLO" in bounce
    assert b"gave up after" in bounce and b"Status: 4.4.2" in bounce
    assert "attempt 2" in caplog.text
    wait_for(lambda: queue_empty(a))


# -- delivery status notifications (RFC 3461 NOTIFY, RET, ENVID, ORCPT) ---------------

def send_dsn(a: Any, sender: str, rcpts: list[str], rcpt_options: list[str],
             mail_options: Sequence[str] = ()) -> None:
    with smtplib.SMTP(a.host, a.port("smtp"), timeout=10) as client:
        client.login("alice", "secret")
        client.sendmail(sender, rcpts, MESSAGE, list(mail_options), rcpt_options)


def reports(servers: Any, user: str) -> list[Message]:
    return [parse(m) for m in servers.messages(user) if b"report-type=delivery-status" in m]


def test_notify_never_suppresses_the_bounce(world: Any) -> None:
    b = recipient_server(world)
    a = isp_server(world, route_to(b))
    send_dsn(a, "alice@isp.test", ["nobody@example.net"], ["NOTIFY=NEVER"])
    wait_for(lambda: queue_empty(a))
    assert a.messages("alice") == []


def test_failure_report_carries_envid_orcpt_and_the_full_message(world: Any) -> None:
    b = recipient_server(world)
    a = isp_server(world, route_to(b))
    send_dsn(a, "alice@isp.test", ["nobody@example.net"],
         ["NOTIFY=FAILURE", "ORCPT=rfc822;first+2Bnobody@example.net"],
             ["RET=FULL", "ENVID=job-42"])  # fmt: skip
    (report,) = wait_for(lambda: reports(a, "alice"))
    message_fields, recipient = status_groups(report)
    assert message_fields["Original-Envelope-Id"] == "job-42"
    assert recipient["Original-Recipient"] == "rfc822; first+nobody@example.net"
    assert recipient["Action"] == "failed" and recipient["Status"] == "5.1.1"
    assert parts(report)[2].get_content_type() == "message/rfc822"


def test_success_is_passed_on_to_a_next_hop_that_offers_dsn(world: Any) -> None:
    """B (mailtalk serve) offers DSN: A passes NOTIFY, ORCPT and ENVID on and sends no
    "relayed" report; B, delivering locally, queues the "delivered" one for alice."""
    b = recipient_server(world)
    a = isp_server(world, route_to(b))
    send_dsn(a, "alice@isp.test", ["bob@example.net"], ["NOTIFY=SUCCESS"], ["ENVID=e1"])
    (delivered,) = wait_for(lambda: b.messages("bob"))
    assert b"X-Mailtalk-DSN: ENVID=e1" in delivered
    assert b"X-Mailtalk-DSN-Recipient: <bob@example.net> NOTIFY=SUCCESS\n" in delivered
    (queued,) = wait_for(lambda: b.context.store.queue.list())
    assert queued.envelope.mail_from == "" and queued.envelope.rcpt_to == ("alice@isp.test",)
    report = parse(queued.message_path.read_bytes())
    message_fields, recipient = status_groups(report)
    assert message_fields["Original-Envelope-Id"] == "e1"
    assert recipient["Action"] == "delivered" and recipient["Status"] == "2.0.0"
    wait_for(lambda: queue_empty(a))
    assert reports(a, "alice") == []


def test_relayed_report_when_the_next_hop_takes_no_dsn(world: Any) -> None:
    b = recipient_server(world, personality="qmail")
    a = isp_server(world, route_to(b))
    send_dsn(a, "alice@isp.test", ["bob@example.net"], ["NOTIFY=SUCCESS"])
    wait_for(lambda: b.messages("bob"))
    (report,) = wait_for(lambda: reports(a, "alice"))
    recipient = status_groups(report)[1]
    assert recipient["Action"] == "relayed" and recipient["Status"].startswith("2.")
    assert report["Subject"] == "Successful Mail Delivery Report"


def test_delay_report_goes_once_then_the_failure(world: Any) -> None:
    a = isp_server(world, f"example.net:{A_HOST}:{closed_port(A_HOST)}\n",
                   delay_warning=0.0, max_queue_age=1.5)  # fmt: skip
    send_dsn(a, "alice@isp.test", ["bob@example.net"], ["NOTIFY=DELAY,FAILURE"])
    wait_for(lambda: queue_empty(a))
    actions = [status_groups(r)[1]["Action"] for r in reports(a, "alice")]
    assert sorted(actions) == ["delayed", "failed"]


def test_local_delivery_with_notify_success_reports_delivered(world: Any) -> None:
    a = isp_server(world, "")
    send_dsn(a, "alice@isp.test", ["alice@isp.test"], ["NOTIFY=SUCCESS"])
    (report,) = wait_for(lambda: reports(a, "alice"))
    recipient = status_groups(report)[1]
    assert recipient["Action"] == "delivered" and recipient["Status"] == "2.0.0"
    assert recipient["Diagnostic-Code"] == "X-Mailtalk; delivered to maildir"
    assert len(a.messages("alice")) == 2  # the message and its report


def test_no_report_for_a_null_sender(world: Any) -> None:
    a = isp_server(world, "")
    send_dsn(a, "", ["alice@isp.test"], ["NOTIFY=SUCCESS"])
    wait_for(lambda: a.messages("alice"))
    assert reports(a, "alice") == []
