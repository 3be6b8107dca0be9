"""``mailtalk send --prdr`` (draft-hall-prdr) against the real Exim.

scripts/real-servers turns PRDR on in Exim (``prdr_enable``) with an
``acl_smtp_data_prdr`` that refuses the local part ``prdr-refused`` after the
message. On the port that relays for loopback, one message goes to alice (local)
and to prdr-refused@<a foreign domain> (relayed to exim/relayed when taken). The
proof that the replies were per recipient is Exim's own: its log says ``PRDR`` on
the ``<=`` line and logs the refusal per recipient, alice's Maildir has the message,
and the relay Maildir has not; the control (the same without --prdr) has both
delivered and no PRDR in the log.
"""

from __future__ import annotations

import json

import pytest

from tests.interop.conftest import Peer, RealServers
from tests.interop.test_send_extensions_real import maildir_message, unique
from tests.interop.test_send_stop_points_real import (
    EXIM_LOG,
    EXIM_MAILDIR,
    PEERS_DIR,
    Log,
    maildir_has,
)
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop

EXIM_RELAYED = PEERS_DIR / "exim" / "relayed"


def completed(log: Log, helo: str) -> list[str]:
    """The log lines of the message Exim took from ``helo``, once it is delivered."""
    text = log.wait_for(lambda text: f"H=({helo})" in text and "Completed" in text.split(
        f"H=({helo})", 1)[-1])
    accept = next(line for line in text.splitlines() if f"H=({helo})" in line and " <= " in line)
    message_id = accept.split()[2]
    return [line for line in text.splitlines() if message_id in line]


def send(exim: Peer, helo: str, body: str, refused: str, *extra: str) -> tuple[int, list[dict]]:
    result = mailtalk(
        "send", "--from", f"{helo}@example.org", "--to", exim.address, "--to", refused,
        "--server", f"{exim.host}:{exim.port('smtp_trusting')}", "--helo", helo,
        "--body", body, "--json", "--timeout", "20", *extra,
    )  # fmt: skip
    assert not result.stderr, result.stderr
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def test_exim_answers_each_recipient_and_one_refusal_is_reported_alone(exim: Peer) -> None:
    log = Log(EXIM_LOG)
    helo, body = unique(), f"prdr-{unique()}"
    refused = f"prdr-refused@{helo}.test"
    status, lines = send(exim, helo, body, refused, "--prdr")
    texts = [(line["dir"], line["text"]) for line in lines[:-1]]
    assert ("C", f"MAIL FROM:<{helo}@example.org> PRDR") in texts
    said = [text for direction, text in texts if direction == "S"]
    start = said.index("353 PRDR content analysis beginning")
    assert said[start + 1] == f"250 PRDR R=<{exim.address}> acceptance"
    assert said[start + 2] == f"550 PRDR test: no mail for {refused}"
    assert said[start + 3].endswith("message accepted for some recipients")
    assert ("#", f"PRDR: that reply is for <{refused}>") in texts
    # the refused recipient alone, with the exit status of a partial delivery
    summary = lines[-1]
    assert status == 1
    assert summary["accepted"] == [exim.address]
    assert [f["recipients"] for f in summary["failures"]] == [refused]
    assert summary["failures"][0]["error"] == (
        f"not delivered (PRDR): 550 PRDR test: no mail for {refused}"
    )
    assert "PRDR" in summary["extensions_used"]
    # Exim's side: PRDR on the arrival line, the refusal logged for that recipient,
    # alice's copy delivered and none relayed
    message = completed(log, helo)
    assert any(" <= " in line and " PRDR " in line for line in message), message
    assert any(f"PRDR {refused} PRDR test: no mail" in line for line in message), message
    assert any(f"=> alice <{exim.address}>" in line for line in message), message
    assert not any(refused in line and " => " in line for line in message), message
    assert body.encode() in maildir_message(EXIM_MAILDIR, body)
    assert not maildir_has(EXIM_RELAYED, body)


def test_without_prdr_exim_takes_the_message_for_both(exim: Peer) -> None:
    """The control: the same send without --prdr; one reply, both delivered."""
    log = Log(EXIM_LOG)
    helo, body = unique(), f"noprdr-{unique()}"
    refused = f"prdr-refused@{helo}.test"
    status, lines = send(exim, helo, body, refused)
    assert status == 0, lines
    said = [line["text"] for line in lines[:-1] if line["dir"] == "S"]
    assert not any(text.startswith("353") for text in said)
    message = completed(log, helo)
    assert not any(" <= " in line and " PRDR " in line for line in message), message
    assert body.encode() in maildir_message(EXIM_MAILDIR, body)
    assert body.encode() in maildir_message(EXIM_RELAYED, body)


def test_prdr_asked_of_postfix_which_does_not_offer_it(real_servers: RealServers) -> None:
    result = mailtalk(
        "send", "--from", real_servers.address, "--to", real_servers.address,
        "--server", f"{real_servers.host}:{real_servers.smtp}", "--prdr", "--brief",
        "--timeout", "20",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the server did not offer PRDR in its EHLO reply" in result.stderr
    assert "MAIL FROM" not in result.stdout
