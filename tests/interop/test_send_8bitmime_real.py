"""``mailtalk send --8bitmime`` against the real Postfix and Exim (RFC 6152).

What each server made of BODY=8BITMIME, from what it wrote down:

* Exim (a receiving ``exim -bs`` of the test's own, behind ``send --pipe``), with
  ``log_selector = +8bitmime``, marks the message's ``<=`` line ``M8S=8`` when the
  client said BODY=8BITMIME, ``M8S=0`` when it said no BODY= at all (the control, a
  plain ASCII message without the option).
* Postfix records no body type in its log or its Received header (``with ESMTP`` either
  way): its session summary counts the MAIL command as accepted (``mail=1``, not
  ``mail=0/1``), and the delivered copy has the 8-bit bytes as they were sent.

In both Maildirs the body is byte for byte what was sent: Latin-1 and UTF-8 bytes side by
side, no quoted-printable, no replacement characters.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.interop.conftest import RealServers
from tests.interop.test_send_extensions_real import maildir_message
from tests.interop.test_send_stop_points_real import (
    POSTFIX_LOG,
    POSTFIX_MAILDIR,
    Log,
)
from tests.interop.test_serve_extensions_real import exim_or_skip, exim_workdir
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop

# UTF-8 "café", a bare Latin-1 e-acute, and a byte with the high bit set that is valid
# in neither: an 8-bit body must arrive exactly so.
EIGHT_BIT_LINE = b"caf\xc3\xa9 \xe9 \xff end"


def eight_bit_message(path: Path, marker: str) -> Path:
    path.write_bytes(b"Subject: " + marker.encode() + b"\n\n" + EIGHT_BIT_LINE + b"\n")
    return path


def body_of(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]


# A receiving Exim of the test's own, spoken to on its stdin and stdout (``exim -bs``,
# through ``send --pipe``), so its log_selector is the test's to choose.
SERVER_CONF = """\
primary_hostname = exim-8bit.test
qualify_domain = exim-8bit.test
domainlist local_domains = exim-8bit.test
exim_path = {exim}
spool_directory = {work}/spool
log_file_path = {work}/log/%slog
log_selector = +8bitmime
keep_environment =
host_lookup =
never_users =
acl_smtp_rcpt = accept

begin routers
to_maildir:
  driver = accept
  domains = +local_domains
  transport = to_maildir

begin transports
to_maildir:
  driver = appendfile
  directory = {work}/maildir
  maildir_format
  user = Debian-exim
  group = Debian-exim
"""


def test_exim_logs_body_8bitmime_and_stores_the_bytes(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    exim = exim_or_skip()
    work = exim_workdir(request, "maildir")
    conf = work / "server.conf"
    conf.write_text(SERVER_CONF.format(exim=exim, work=work))
    pipe = f"{exim} -C {conf} -bs -odi"
    marker = "eight" + uuid.uuid4().hex[:12]
    data = eight_bit_message(tmp_path / "m.eml", marker)
    result = mailtalk(
        "send", "--pipe", pipe, "--from", f"{marker}@example.org",
        "--to", "alice@exim-8bit.test", "--8bitmime", "--data", str(data), "--brief",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"C: MAIL FROM:<{marker}@example.org> BODY=8BITMIME\n" in result.stdout
    # the control: a plain ASCII message without --8bitmime says no BODY=
    control = mailtalk(
        "send", "--pipe", pipe, "--from", f"{marker}c@example.org",
        "--to", "alice@exim-8bit.test", "--brief",
    )  # fmt: skip
    assert control.returncode == 0, control.stdout + control.stderr
    assert "BODY=" not in control.stdout
    mainlog = (work / "log/mainlog").read_text(errors="replace")
    received = dict(re.findall(r" <= (\S+) .*?( M8S=\d)", mainlog))
    assert received == {f"{marker}@example.org": " M8S=8", f"{marker}c@example.org": " M8S=0"}
    (stored,) = [
        path.read_bytes() for path in (work / "maildir/new").iterdir()
        if marker.encode() + b"\n" in path.read_bytes()
    ]  # fmt: skip
    assert body_of(stored) == EIGHT_BIT_LINE + b"\n"


def test_postfix_accepts_body_8bitmime_and_delivers_the_bytes(
    real_servers: RealServers, tmp_path: Path
) -> None:
    log = Log(POSTFIX_LOG)
    marker = "eight" + uuid.uuid4().hex[:12]
    data = eight_bit_message(tmp_path / "m.eml", marker)
    result = mailtalk(
        "send", "--from", real_servers.address, "--to", real_servers.address,
        "--server", f"{real_servers.host}:{real_servers.smtp}", "--helo", marker,
        "--8bitmime", "--data", str(data), "--timeout", "20", "--brief",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"C: MAIL FROM:<{real_servers.address}> BODY=8BITMIME\n" in result.stdout
    assert re.search(r"S: 250 2\.1\.0 Ok\n", result.stdout), result.stdout
    message = maildir_message(POSTFIX_MAILDIR, marker)
    received = re.search(
        rb"Received: from (\S+) .*\n\tby \S+ \(Postfix\) with ESMTP id (\w+)", message
    )
    assert received and received.group(1) == marker.encode(), message[:600]
    queue_id = received.group(2).decode()
    # The smtpd process that took this message: its next disconnect line sums up the
    # session, MAIL accepted (a refused one would count mail=0/1).
    took = rf"(smtpd\[\d+\]): {queue_id}: client="
    process = re.search(took, log.wait_for(lambda t: re.search(took, t))).group(1)  # type: ignore[union-attr]
    ended = rf"{took}.*?\n.*?{re.escape(process)}: disconnect from \S+ ([^\n]*)"
    text = log.wait_for(lambda t: re.search(ended, t, re.DOTALL))
    summary = re.search(ended, text, re.DOTALL).group(2)  # type: ignore[union-attr]
    assert summary == "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", summary
    assert body_of(message) == EIGHT_BIT_LINE + b"\n"
