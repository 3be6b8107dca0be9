"""``wait_for_message`` of the pytest fixtures: woken by the delivery, filters, and a
TimeoutError that says what was wanted and what came instead."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest


def send_later(servers: Any, delay: float, subject: str, sender: str = "bob@example.org",
               extra: str = "") -> threading.Thread:
    def send() -> None:
        time.sleep(delay)
        with smtplib.SMTP(servers.host, servers.port("smtp"), timeout=10) as smtp:
            smtp.sendmail(
                sender, ["alice@localhost"],
                f"From: {sender}\r\nTo: alice@localhost\r\nSubject: {subject}\r\n{extra}\r\n"
                "body\r\n".encode(),
            )  # fmt: skip

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.fixture
def servers(mailtalk_servers: Callable[..., Any]) -> Any:
    return mailtalk_servers(users=[("alice", "secret")])


def test_it_waits_for_a_message_sent_later_and_returns_it_parsed(servers: Any) -> None:
    thread = send_later(servers, 0.5, "first")
    started = time.monotonic()
    message = servers.wait_for_message("alice", timeout=20, subject="FIRST")
    waited = time.monotonic() - started
    thread.join()
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == "first" and message.get_content().strip() == "body"
    assert 0.4 < waited < 15  # it did wait, and it was woken well before the timeout


def test_filters_skip_the_messages_that_do_not_match(servers: Any) -> None:
    send_later(servers, 0, "unrelated").join()
    thread = send_later(servers, 0.3, "report", sender="carol@example.net",
                        extra="X-Run: 42\r\n")
    message = servers.wait_for_message(
        "alice", 20, lambda m: "42" in m["X-Run"], sender="carol", to="alice", header="X-Run: 4"
    )
    thread.join()
    assert message["Subject"] == "report"
    # One already there counts: no race with a message sent before the call.
    assert servers.wait_for_message("alice", 0, subject="unrelated")["From"] == "bob@example.org"


def test_a_timeout_names_what_was_wanted_and_what_arrived(servers: Any) -> None:
    send_later(servers, 0, "hello there").join()
    with pytest.raises(TimeoutError) as caught:
        servers.wait_for_message("alice", timeout=0.5, subject="invoice", header="X-Id")
    text = str(caught.value)
    assert "alice" in text and "subject containing 'invoice'" in text
    assert "header containing 'X-Id'" in text and "within 0.5 s" in text
    assert "it has 1: 'hello there' from 'bob@example.org'" in text


def test_a_timeout_on_an_empty_folder_says_so(servers: Any) -> None:
    with pytest.raises(TimeoutError, match="the folder is empty"):
        servers.wait_for_message("alice", timeout=0.2)
