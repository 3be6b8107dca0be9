"""``mailtalk send --pipeline`` (RFC 2920) against the real Postfix and Exim.

* Exim logs, with ``log_selector = +pipelining`` (scripts/real-servers), an ``L``
  field on each ``<=`` line: ``L.`` when the next command was already waiting as it
  answered one (the client pipelined), ``L.-`` when PIPELINING was offered and not
  used. So its log tells the two sends apart.
* Postfix: the replies are matched in order (an unknown user's 550 and alice's 250
  in one batch), its ``disconnect`` summary counts what it got, and the message is
  in alice's Maildir.

The one write itself is seen from the server side in tests/mail/test_send_pipeline.py.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.interop.conftest import Peer, RealServers
from tests.interop.test_send_extensions_real import maildir_message, unique
from tests.interop.test_send_stop_points_real import (
    EXIM_LOG,
    EXIM_MAILDIR,
    POSTFIX_LOG,
    POSTFIX_MAILDIR,
    Log,
    postfix_session,
)
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop


def test_postfix_pipelined_replies_matched_in_order_and_delivered(
    real_servers: RealServers,
) -> None:
    log = Log(POSTFIX_LOG)
    helo, body = unique(), f"pipelined-{unique()}"
    stranger = f"nosuch{unique()}@{real_servers.domain}"
    result = mailtalk(
        "send", "--from", f"{helo}@example.org", "--to", stranger, "--to", real_servers.address,
        "--server", f"{real_servers.host}:{real_servers.smtp}", "--helo", helo,
        "--pipeline", "--body", body, "--json", "--timeout", "20",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    texts = [(line["dir"], line["text"]) for line in lines[:-1]]
    batch = [text for direction, text in texts if direction == "C"][1:5]
    assert batch == [
        f"MAIL FROM:<{helo}@example.org>", f"RCPT TO:<{stranger}>",
        f"RCPT TO:<{real_servers.address}>", "DATA",
    ]  # fmt: skip
    assert ("#", "4 commands in one write (PIPELINING)") in texts
    summary = lines[-1]
    assert summary["accepted"] == [real_servers.address]
    assert summary["extensions_used"] == ["PIPELINING"]
    # Postfix's own count: two RCPTs, one taken; one DATA; five of six commands good
    said = "ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6"
    session = postfix_session(log.wait_for(lambda text: said in text), said)
    assert any(f"<{stranger}>: Recipient address rejected" in line for line in session)
    assert body.encode() in maildir_message(POSTFIX_MAILDIR, body)


def exim_accept_line(log: Log, helo: str) -> str:
    text = log.wait_for(lambda text: f"H=({helo})" in text and " <= " in text)
    return next(line for line in text.splitlines() if f"H=({helo})" in line and " <= " in line)


@pytest.mark.parametrize("chunking", [False, True])
def test_exim_logs_the_client_pipelined(exim: Peer, chunking: bool) -> None:
    log = Log(EXIM_LOG)
    sent: dict[bool, str] = {}
    for pipeline in (True, False):
        helo, body = unique(), f"exim-pipelined-{unique()}"
        extra = ["--pipeline"] if pipeline else []
        extra += ["--chunking", "--chunk-size", "100"] if chunking else []
        result = mailtalk(
            "send", "--from", f"{helo}@example.org", "--to", f"nosuch@{exim.domain}",
            "--to", exim.address, "--server", f"{exim.host}:{exim.port('smtp')}",
            "--helo", helo, "--body", body, "--timeout", "20", "--brief", *extra,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "S: 550 Unrouteable address" in result.stdout
        assert body.encode() in maildir_message(EXIM_MAILDIR, body)
        sent[pipeline] = exim_accept_line(log, helo)
    # "L." pipelined, "L.-" offered and not used (the control: the same without it)
    assert re.search(r" L\.? ", sent[True]), sent[True]
    assert re.search(r" L\.?- ", sent[False]), sent[False]
    assert (" K " in sent[True]) is chunking
