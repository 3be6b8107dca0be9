"""``mailtalk send --quit-after``/``--drop-after`` against the real Postfix and Exim.

What each server did is read from its own log (scripts/real-servers: Postfix's
``maillog_file``, Exim's mainlog) and its Maildir. Postfix sums up each session in its
``disconnect`` line (``ehlo=1 mail=1 rcpt=1 quit=1 commands=4``) and says ``lost
connection after DATA`` when the client goes in the middle; a message it takes gets a
``qmgr`` line with ``from=<sender>``. Exim names the client's HELO in every line, so a
unique ``--helo`` finds the session; a message it takes is a ``<=`` line. Each stop is
checked beside a control that goes to the dot with the same helpers and must find the
message, so a check that could not see a delivery would fail there.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.conftest import Peer, RealServers, _unavailable
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop

POSTFIX_LOG = Path(os.environ.get("MAILTALK_POSTFIX_LOG", "/var/log/postfix.log"))
POSTFIX_MAILDIR = Path(os.environ.get("MAILTALK_POSTFIX_MAILDIR", "/home/alice/Maildir"))
PEERS_DIR = Path(os.environ.get("MAILTALK_PEERS_DIR", "/opt/mailtalk-peers"))
EXIM_LOG = PEERS_DIR / "exim" / "log" / "mainlog"
EXIM_MAILDIR = PEERS_DIR / "exim" / "maildir" / "alice"
WAIT = 20.0  # seconds for a log line or a delivery to show: generous on a busy machine


class Log:
    """What a server's log gained since this object was made."""

    def __init__(self, path: Path) -> None:
        if not os.access(path, os.R_OK):
            _unavailable(f"{path} is not readable")
        self.path = path
        self.start = path.stat().st_size

    def new(self) -> str:
        with self.path.open("rb") as file:
            file.seek(self.start)
            return file.read().decode("utf-8", "replace")

    def wait_for(self, found: Callable[[str], object]) -> str:
        deadline = time.monotonic() + WAIT
        while True:
            text = self.new()
            if found(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"not in {self.path} after {WAIT} s:\n{text[-3000:]}")
            time.sleep(0.1)


def maildir_has(maildir: Path, marker: str) -> bool:
    new = maildir / "new"
    return any(marker.encode() in path.read_bytes() for path in new.iterdir() if path.is_file())


def wait_for_delivery(maildir: Path, marker: str) -> None:
    deadline = time.monotonic() + WAIT
    while not maildir_has(maildir, marker):
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with {marker!r} in {maildir}/new")
        time.sleep(0.1)


def unique() -> str:
    return "stop" + uuid.uuid4().hex[:12]


def postfix_session(text: str, summary: str) -> list[str]:
    """The log lines of the smtpd process whose disconnect line ends with ``summary``."""
    # postfix/smtpd[PID] on port 25, postfix/submission/smtpd[PID] on 587
    pattern = r"(postfix/(?:\w+/)?smtpd\[\d+\]): disconnect from \S+ (.*)"
    for match in re.finditer(pattern, text):
        if match.group(2).strip() == summary:
            process = match.group(1) + ":"
            return [line for line in text.splitlines() if process in line]
    raise AssertionError(f"no Postfix session ended with {summary!r}:\n{text[-3000:]}")


def send_postfix(real: RealServers, port: int, sender: str, *extra: str) -> str:
    result = mailtalk(
        "send", "--from", sender, "--to", real.address,
        "--server", f"{real.host}:{port}", "--cafile", real.cafile,
        "--subject", sender, "--timeout", "20", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# -- Postfix ---------------------------------------------------------------------------


def test_postfix_quit_after_rcpt_delivers_nothing(real_servers: RealServers) -> None:
    log = Log(POSTFIX_LOG)
    sender = f"{unique()}@{real_servers.domain}"
    out = send_postfix(real_servers, real_servers.smtp, sender, "--quit-after", "rcpt")
    assert "# stopped after rcpt as asked (QUIT): no message sent" in out
    summary = "ehlo=1 mail=1 rcpt=1 quit=1 commands=4"
    text = log.wait_for(lambda text: summary in text)
    postfix_session(text, summary)
    time.sleep(2)  # what would follow a queued message (qmgr's from= line) has time to come
    assert f"from=<{sender}>" not in log.new()
    assert not maildir_has(POSTFIX_MAILDIR, sender)


def test_postfix_drop_after_data_is_a_lost_connection_and_delivers_nothing(
    real_servers: RealServers,
) -> None:
    log = Log(POSTFIX_LOG)
    sender = f"{unique()}@{real_servers.domain}"
    out = send_postfix(real_servers, real_servers.smtp, sender, "--drop-after", "data")
    assert "C: QUIT" not in out and "C: DATA" in out
    summary = "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4"
    text = log.wait_for(lambda text: summary in text)
    session = postfix_session(text, summary)
    assert any("lost connection after DATA" in line for line in session), session
    queue_ids = [m.group(1) for line in session if (m := re.search(r": (\w+): client=", line))]
    time.sleep(2)
    later = log.new()
    assert queue_ids and not any(f"{qid}: from=<" in later for qid in queue_ids), later[-2000:]
    assert f"from=<{sender}>" not in later
    assert not maildir_has(POSTFIX_MAILDIR, sender)


def test_postfix_drop_after_dot_delivers_the_message(real_servers: RealServers) -> None:
    """The control: the same checks find a message that did go."""
    log = Log(POSTFIX_LOG)
    sender = f"{unique()}@{real_servers.domain}"
    send_postfix(real_servers, real_servers.smtp, sender, "--drop-after", "dot")
    log.wait_for(lambda text: f"from=<{sender}>" in text)
    summary = "ehlo=1 mail=1 rcpt=1 data=1 commands=4"
    postfix_session(log.wait_for(lambda text: summary in text), summary)
    wait_for_delivery(POSTFIX_MAILDIR, sender)


def test_postfix_quit_after_tls_on_the_starttls_port(real_servers: RealServers) -> None:
    log = Log(POSTFIX_LOG)
    sender = f"{unique()}@{real_servers.domain}"
    out = send_postfix(
        real_servers, real_servers.submission, sender, "--starttls", "--quit-after", "tls"
    )
    assert "C: STARTTLS" in out and "# TLS: TLSv1" in out
    assert "C: MAIL" not in out and "C: AUTH" not in out
    summary = "ehlo=2 starttls=1 quit=1 commands=4"
    postfix_session(log.wait_for(lambda text: summary in text), summary)


# -- Exim ------------------------------------------------------------------------------


def send_exim(exim: Peer, helo: str, *extra: str) -> str:
    result = mailtalk(
        "send", "--from", f"{helo}@example.org", "--to", exim.address,
        "--server", f"{exim.host}:{exim.port('smtp')}", "--starttls", "--cafile", exim.cafile,
        "--helo", f"{helo}.test", "--subject", helo, "--timeout", "20", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_exim_drop_after_data_is_a_lost_connection_and_delivers_nothing(exim: Peer) -> None:
    log = Log(EXIM_LOG)
    helo = unique()
    out = send_exim(exim, helo, "--drop-after", "data")
    assert "C: QUIT" not in out
    lost = f"SMTP connection from ({helo}.test) [127.0.0.1] lost while reading message data"
    log.wait_for(lambda text: lost in text)
    time.sleep(2)
    assert f"H=({helo}.test)" not in "".join(
        line for line in log.new().splitlines() if " <= " in line
    )
    assert not maildir_has(EXIM_MAILDIR, helo)


def test_exim_quit_after_rcpt_delivers_nothing(exim: Peer) -> None:
    log = Log(EXIM_LOG)
    helo = unique()
    out = send_exim(exim, helo, "--quit-after", "rcpt")
    assert "C: QUIT" in out and "C: DATA" not in out
    time.sleep(2)
    text = log.new()
    assert not any(f"H=({helo}.test)" in line and " <= " in line for line in text.splitlines())
    assert f"({helo}.test)" not in text  # a clean QUIT before DATA leaves nothing to log
    assert not maildir_has(EXIM_MAILDIR, helo)


def test_exim_quit_after_dot_delivers_the_message(exim: Peer) -> None:
    """The control: Exim's <= line and the Maildir show a message that did go."""
    log = Log(EXIM_LOG)
    helo = unique()
    send_exim(exim, helo, "--quit-after", "dot")
    log.wait_for(
        lambda text: any(f"H=({helo}.test)" in line and " <= " in line
                         for line in text.splitlines())
    )  # fmt: skip
    wait_for_delivery(EXIM_MAILDIR, helo)


def test_exim_quit_after_tls_on_the_starttls_port(exim: Peer) -> None:
    helo = unique()
    out = send_exim(exim, helo, "--quit-after", "tls")
    assert "S: 220 TLS go ahead" in out and "AUTH PLAIN LOGIN" in out
    assert out.split("C: ")[-1].startswith("QUIT") and "C: MAIL" not in out
