"""pytest fixtures for testing mail code against mailtalk's reference servers.

Registered through the ``pytest11`` entry point, so installing mailtalk makes
them available:

    def test_sends(mailtalk_server):
        with smtplib.SMTP(mailtalk_server.host, mailtalk_server.port("smtp")) as smtp:
            smtp.sendmail("bob@example.org", ["alice@localhost"], b"Subject: hi\\r\\n\\r\\nhi")
        assert mailtalk_server.messages("alice")

Code that sends from another thread or process waits for the message instead:

    message = mailtalk_server.wait_for_message("alice", timeout=5, subject="hi")
    assert message["From"] == "bob@example.org"

(``wait_for_message`` returns an ``email.message.EmailMessage``; ``match=`` takes a
callable on it; ``TimeoutError`` says what was waited for and what did arrive.)

``mailtalk_servers`` is a factory taking the options of
``mailtalk.servers.api.run_servers`` for tests that need faults, scenarios or
other users. Imports happen inside the fixtures: loading the plugin costs
nothing for test suites that do not use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def mailtalk_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """A factory: ``mailtalk_servers(users=[("alice", "secret")], scenarios=["greylist"])``."""
    from mailtalk.servers.api import run_servers

    with ExitStack() as stack:

        def start(**options: Any) -> Any:
            root = options.pop("root", None) or tmp_path_factory.mktemp("mailtalk-root")
            return stack.enter_context(run_servers(Path(root), **options))

        yield start


@pytest.fixture
def mailtalk_server(mailtalk_servers: Callable[..., Any]) -> Any:
    """SMTP, submission and SMTPS on free loopback ports; user alice (password secret)."""
    return mailtalk_servers(
        smtp=0, submission=0, smtps=0, users=[("alice", "secret")], domains=["example.test"]
    )
