"""``mailtalk send`` with SMTP extensions against the real Postfix and Exim.

What each server received is read from what it did with it:

* DSN (RFC 3461): Postfix honours NOTIFY=SUCCESS with a delivery status
  notification to the sender (here alice, so it lands in her Maildir), which quotes
  ENVID= as ``Original-Envelope-Id`` and ORCPT= as ``Original-Recipient``. (A
  success DSN from Postfix returns the headers whatever RET= says, so RET= is
  checked on the wire only.)
* CHUNKING: Postfix's ``disconnect`` summary counts ``bdat=N``; Exim marks the
  message's ``<=`` line with ``K``.
* SMTPUTF8: Exim's ``<=`` line says ``P=utf8esmtp``; Postfix keeps the UTF-8
  sender in the delivered message's Return-Path.
* Not offered: Exim offers no DSN, so ``--dsn-notify`` stops before MAIL with one
  line and exit 1, and Exim's log has no message from that session.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from tests.interop.conftest import Peer, RealServers
from tests.interop.test_send_stop_points_real import (
    EXIM_LOG,
    POSTFIX_LOG,
    POSTFIX_MAILDIR,
    WAIT,
    Log,
    postfix_session,
)
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop


def unique() -> str:
    return "ext" + uuid.uuid4().hex[:12]


def maildir_message(maildir: Path, marker: str) -> bytes:
    """The message in ``maildir``/new holding ``marker``, waited for."""
    deadline = time.monotonic() + WAIT
    while True:
        for path in (maildir / "new").iterdir():
            data = path.read_bytes()
            if marker.encode() in data:
                return data
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with {marker!r} in {maildir}/new")
        time.sleep(0.1)


def send_postfix(real: RealServers, *extra: str, sender: str | None = None) -> str:
    result = mailtalk(
        "send", "--from", sender or real.address, "--to", real.address,
        "--server", f"{real.host}:{real.smtp}", "--timeout", "20", "--brief", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("ret", ["HDRS", "FULL"])
def test_postfix_dsn_success_quotes_envid_and_orcpt(real_servers: RealServers, ret: str) -> None:
    envid = f"{unique()} +=x"  # a space, "+" and "=" must go as xtext
    body = f"body-{unique()}"
    out = send_postfix(
        real_servers, "--dsn-notify", "success", "--dsn-ret", ret.lower(), "--envid", envid,
        "--body", body,
    )  # fmt: skip
    assert re.search(r"C: MAIL FROM:<[^>]+> RET=" + ret + r" ENVID=ext\w+\+20\+2B\+3Dx\n", out)
    assert f"NOTIFY=SUCCESS ORCPT=rfc822;{real_servers.address}" in out
    dsn = maildir_message(POSTFIX_MAILDIR, f"Original-Envelope-Id: {envid}")
    assert b"Action: delivered" in dsn
    assert f"Original-Recipient: rfc822;{real_servers.address}".encode() in dsn


def test_postfix_chunking_and_size(real_servers: RealServers) -> None:
    log = Log(POSTFIX_LOG)
    body = f"chunked-{unique()}\n" + "line of text\n" * 40
    out = send_postfix(
        real_servers, "--chunking", "--chunk-size", "200", "--size", "--body", body, "--json"
    )
    assert '"extensions_used": ["SIZE", "CHUNKING"]' in out
    sizes = [int(n) for n in re.findall(r'"C", "text": "BDAT (\d+)', out)]
    declared = int(re.search(r"SIZE=(\d+)", out).group(1))  # type: ignore[union-attr]
    assert len(sizes) >= 3 and sum(sizes) == declared and sizes[0] == 200
    summary = f"ehlo=1 mail=1 rcpt=1 bdat={len(sizes)} quit=1 commands={len(sizes) + 4}"
    postfix_session(log.wait_for(lambda text: summary in text), summary)
    message = maildir_message(POSTFIX_MAILDIR, body.splitlines()[0])
    assert message.count(b"line of text") == 40


def test_postfix_size_over_the_limit_is_refused_before_mail(
    real_servers: RealServers, tmp_path: Path
) -> None:
    big = tmp_path / "big.eml"
    big.write_bytes(b"Subject: big\n\n" + b"x" * 76 + b"\n" * 1 + (b"y" * 99 + b"\n") * 110_000)
    result = mailtalk(
        "send", "--from", real_servers.address, "--to", real_servers.address,
        "--server", f"{real_servers.host}:{real_servers.smtp}", "--data", str(big), "--size",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "over the server's SIZE 10240000" in result.stderr
    assert "C: MAIL" not in result.stdout and "C: QUIT" in result.stdout


def test_postfix_smtputf8_sender(real_servers: RealServers) -> None:
    sender = f"jörg.{unique()}@{real_servers.domain}"
    out = send_postfix(real_servers, "--json", sender=sender)
    assert f"MAIL FROM:<{sender}> SMTPUTF8" in out
    message = maildir_message(POSTFIX_MAILDIR, sender)
    assert f"Return-Path: <{sender}>".encode() in message


def test_exim_chunking_and_smtputf8_seen_in_its_log(exim: Peer) -> None:
    log = Log(EXIM_LOG)
    helo = unique()
    result = mailtalk(
        "send", "--from", f"{helo}@example.org", "--to", exim.address,
        "--server", f"{exim.host}:{exim.port('smtp')}", "--helo", helo,
        "--chunking", "--chunk-size", "100", "--smtputf8", "--timeout", "20",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = log.wait_for(lambda text: f"H=({helo})" in text)
    line = next(line for line in text.splitlines() if f"H=({helo})" in line and " <= " in line)
    assert " P=utf8esmtp " in line and " K " in line, line


def test_exim_offers_no_dsn_so_dsn_notify_stops_before_mail(exim: Peer) -> None:
    log = Log(EXIM_LOG)
    helo = unique()
    result = mailtalk(
        "send", "--from", f"{helo}@example.org", "--to", exim.address,
        "--server", f"{exim.host}:{exim.port('smtp')}", "--helo", helo,
        "--dsn-notify", "failure,delay", "--timeout", "20",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"mailtalk: {exim.address}: the server did not offer DSN in its EHLO reply"
    ]
    assert "C: MAIL" not in result.stdout
    # the control: the same session without --dsn-notify delivers, and the log shows it
    control = mailtalk(
        "send", "--from", f"{helo}@example.org", "--to", exim.address,
        "--server", f"{exim.host}:{exim.port('smtp')}", "--helo", helo + "c", "--timeout", "20",
    )  # fmt: skip
    assert control.returncode == 0, control.stderr
    text = log.wait_for(lambda text: f"H=({helo}c)" in text and " <= " in text)
    assert not any(f"H=({helo})" in line and " <= " in line for line in text.splitlines())
