"""The journal of onward delivery: queued, relayed to an MX, deferred, bounced.

Two reference servers write one journal, as a practice world's do: the ISP
``isp.test`` (127.0.0.2) relays for alice and delivers its queue to ``example.net``
(127.0.0.3) through its ``control/smtproutes``. The events of both tell the whole way
of a message, tied together by the ISP's queue id and the MX's reply.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.journal import Journal
from tests.servers.journaling import copy_tls, events, make_tls_dir, wait_event

A_HOST = "127.0.0.2"
B_HOST = "127.0.0.3"
FAST = {"onward_delivery": True, "retry_schedule": (0.05,), "max_queue_age": 30.0,
        "delivery_timeout": 5.0}  # fmt: skip
MESSAGE = b"From: alice@isp.test\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nHi Bob.\r\n"

World = Callable[..., RunningServers]


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tls_dir(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.jsonl"


@pytest.fixture
def world(tmp_path: Path, tls_dir: Path, journal_path: Path) -> Iterator[World]:
    """``world(name, me, host, **options)``: a server writing the one shared journal."""
    journal = Journal(journal_path)
    with contextlib.ExitStack() as stack:
        stack.callback(journal.close)

        def start(name: str, me: str, host: str, **options: Any) -> RunningServers:
            root = tmp_path / name
            (root / "control").mkdir(parents=True, exist_ok=True)
            (root / "control" / "me").write_text(me + "\n")
            copy_tls(tls_dir, root)
            return stack.enter_context(
                run_servers(root, listen=host, domains=[me], journal=journal, **options)
            )

        yield start


def servers_for(world: World, route: Callable[[RunningServers], str] | str) -> RunningServers:
    b = world("b", "example.net", B_HOST, users=[("bob", "bobpw"), ("carol", "carolpw")])
    a = world("a", "isp.test", A_HOST, users=[("alice", "secret")], **FAST)
    text = route(b) if callable(route) else route
    (a.root / "control" / "smtproutes").write_text(text)
    return a


def to_b(b: RunningServers) -> str:
    return f"example.net:{B_HOST}:{b.port('smtp')}\n"


def send(a: RunningServers, sender: str, rcpts: list[str]) -> None:
    with smtplib.SMTP(a.host, a.port("smtp"), timeout=10) as client:
        client.login("alice", "secret")
        client.sendmail(sender, rcpts, MESSAGE)


def test_a_relayed_message_from_queue_to_the_mx(world: World, journal_path: Path) -> None:
    a = servers_for(world, to_b)
    send(a, "alice@isp.test", ["bob@example.net"])
    relayed = wait_event(journal_path, event="message", outcome="relayed")
    queued = events(journal_path, event="message", outcome="queued", server="isp.test")[0]
    assert relayed["server"] == "isp.test" and relayed["recipient"] == "bob@example.net"
    assert relayed["queue_id"] == queued["queue_id"] and relayed["file"] == queued["file"]
    assert relayed["mx"] == B_HOST and relayed["address"].startswith(f"{B_HOST}:")
    assert relayed["code"] == 250 and relayed["status"] == "2.0.0"
    assert relayed["sender"] == "alice@isp.test" and relayed["reason"] is None
    delivered = events(journal_path, event="message", outcome="delivered", server="example.net")
    assert [(d["user"], d["subject"]) for d in delivered] == [("bob", "hello")]
    assert delivered[0]["queue_id"] in relayed["text"]  # the MX's 250 names its queue id
    # The MX saw the ISP connect from its own address, say EHLO isp.test, over TLS.
    connect = events(journal_path, event="connect", server="example.net")[0]
    assert connect["client"] == A_HOST
    ehlo = events(journal_path, event="command", server="example.net", verb="EHLO")
    assert ehlo[0]["args"] == "isp.test" and ehlo[-1]["tls"] is True
    wait_event(journal_path, event="close", server="example.net", reason="quit")


def closed_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def test_a_deferred_message(world: World, journal_path: Path) -> None:
    a = servers_for(world, f"example.net:{B_HOST}:{closed_port(B_HOST)}\n")
    send(a, "alice@isp.test", ["bob@example.net"])
    deferred = wait_event(journal_path, event="message", outcome="deferred", attempts=2)
    assert deferred["recipient"] == "bob@example.net" and deferred["code"] is None
    assert deferred["reason"].startswith(f"connect to {B_HOST}[{B_HOST}]:")
    assert deferred["status"] == "4.4.1" and deferred["retry_in"] >= 0
    first = events(journal_path, event="message", outcome="deferred", attempts=1)[0]
    assert first["queue_id"] == deferred["queue_id"]
    assert events(journal_path, event="message", outcome="relayed") == []


def test_a_bounce_to_a_local_sender(world: World, journal_path: Path) -> None:
    a = servers_for(world, to_b)
    send(a, "alice@isp.test", ["nobody@example.net", "bob@example.net"])
    bounced = wait_event(journal_path, event="message", outcome="bounced")
    assert bounced["recipient"] == "nobody@example.net" and bounced["code"] == 550
    assert bounced["status"] == "5.1.1" and "(in reply to RCPT TO command)" in bounced["reason"]
    relayed = wait_event(journal_path, event="message", outcome="relayed")
    assert relayed["recipient"] == "bob@example.net"
    dsn = wait_event(journal_path, event="message", outcome="delivered", server="isp.test")
    assert dsn["user"] == "alice" and dsn["subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["bounce_of"] == bounced["queue_id"] and dsn["sender"] == ""
    (stored,) = a.maildir("alice").new_dir.iterdir()
    assert stored.name == dsn["file"]
    # The MX's own account of the refusal.
    refusal = events(journal_path, event="command", server="example.net", code=550)[0]
    assert refusal["verb"] == "RCPT" and refusal["args"] == "TO:<nobody@example.net>"


def test_a_bounce_to_a_remote_sender_is_queued(world: World, journal_path: Path) -> None:
    a = servers_for(world, to_b)
    send(a, "carol@example.net", ["nobody@example.net"])
    bounce = wait_event(journal_path, event="message", outcome="queued", sender="")
    bounced = events(journal_path, event="message", outcome="bounced")[0]
    assert bounce["bounce_of"] == bounced["queue_id"]
    assert bounce["recipients"] == ["carol@example.net"]
    delivered = wait_event(journal_path, event="message", outcome="delivered", user="carol")
    assert delivered["server"] == "example.net"
    assert delivered["subject"] == "Undelivered Mail Returned to Sender"
    assert a.messages("alice") == []
