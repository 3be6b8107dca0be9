"""``mailtalk serve`` takes RFC 3461's DSN parameters from a real MTA: Postfix.

A message is given to Postfix's own ``sendmail`` with ``-N success,failure`` (NOTIFY)
and ``-V`` (ENVID); scripts/real-servers routes ``serve.mailtalk.test`` to a mailtalk
serve on 127.0.0.1:12626 (transport_maps), and Postfix's smtp client, seeing DSN in
serve's EHLO reply, passes the parameters on: ENVID= on MAIL, NOTIFY= and ORCPT= on
RCPT. serve's journal shows the commands as Postfix sent them and that serve accepted
them; the delivered copy carries them in its X-Mailtalk-DSN headers. Postfix's log says
where the message went (``relay=127.0.0.1[127.0.0.1]:12626``, ``status=sent``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from mailtalk.servers.api import run_servers
from mailtalk.servers.journal import Journal, read_events
from tests.interop.conftest import _unavailable
from tests.interop.test_send_stop_points_real import POSTFIX_LOG, Log

pytestmark = pytest.mark.interop

SERVE_DOMAIN = os.environ.get("MAILTALK_POSTFIX_SERVE_DOMAIN", "serve.mailtalk.test")
SERVE_PORT = int(os.environ.get("MAILTALK_POSTFIX_SERVE_PORT", "12626"))


def postfix_sendmail_or_skip(route: str = f"{SERVE_DOMAIN}=smtp:[127.0.0.1]:{SERVE_PORT}"
                             ) -> str:  # fmt: skip
    """Postfix's sendmail, when Postfix's transport_maps has ``route``."""
    sendmail = shutil.which("sendmail") or "/usr/sbin/sendmail"
    if not Path(sendmail).exists() or not shutil.which("postconf"):
        _unavailable("Postfix's sendmail is not installed")
    routes = subprocess.run(["postconf", "-h", "transport_maps"], capture_output=True,
                            text=True, check=False).stdout  # fmt: skip
    if route not in routes:
        _unavailable(f"Postfix has no route {route} (run scripts/real-servers start)")
    return sendmail


def test_postfix_passes_notify_and_envid_on_to_mailtalk_serve(tmp_path: Path) -> None:
    sendmail = postfix_sendmail_or_skip()
    log = Log(POSTFIX_LOG)
    marker = "dsnin" + uuid.uuid4().hex[:12]
    envid = f"{marker}-envid"
    recipient = f"bob@{SERVE_DOMAIN}"
    journal_path = tmp_path / "journal.jsonl"
    journal = Journal(journal_path)
    try:
        with run_servers(tmp_path / "root", smtp=SERVE_PORT, domains=[SERVE_DOMAIN],
                         users=[("bob", "secret")], journal=journal) as serve:  # fmt: skip
            subprocess.run(
                [sendmail, "-i", "-f", "alice@mailtalk.test", "-N", "success,failure",
                 "-V", envid, recipient],
                input=f"Subject: {marker}\nFrom: alice@mailtalk.test\n\nhello {marker}\n",
                text=True, check=True, timeout=30,
            )  # fmt: skip
            # serve keeps running until Postfix has had its 250 for the message
            text = log.wait_for(lambda t: f"to=<{recipient}>" in t and "status=sent" in t)
            (stored,) = [m for m in serve.messages("bob") if marker.encode() in m]
    finally:
        journal.close()
    (sent,) = [line for line in text.splitlines()
               if f"to=<{recipient}>" in line and "status=sent" in line]  # fmt: skip
    assert f"relay=127.0.0.1[127.0.0.1]:{SERVE_PORT}" in sent, sent

    commands = [e for e in read_events(journal_path) if e.get("event") == "command"]
    (mail,) = [e for e in commands if e["verb"] == "MAIL" and envid in e["args"]]
    (rcpt,) = [e for e in commands if e["verb"] == "RCPT" and e["session"] == mail["session"]]
    assert f" ENVID={envid}" in mail["args"] and mail["code"] == 250, mail
    assert f"TO:<{recipient}>" in rcpt["args"] and rcpt["code"] == 250, rcpt
    assert " NOTIFY=SUCCESS,FAILURE" in rcpt["args"], rcpt
    assert f" ORCPT=rfc822;{recipient}" in rcpt["args"], rcpt
    # the delivered copy, as serve wrote it for a test to read
    assert f"X-Mailtalk-DSN: ENVID={envid}".encode() in stored
    assert (
        f"X-Mailtalk-DSN-Recipient: <{recipient}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{recipient}"
    ).encode() in stored
