"""`mailtalk serve`'s rate, greylist and trickle fault rules, seen by real clients.

* swaks sends more than ``rate 3/2s`` allows: three accepted, then 421, then accepted
  again once the window has passed; the journal names the rule that fired.
* Postfix's smtp client relays to a greylisting ``mailtalk serve`` (scripts/real-servers
  routes ``greylist.mailtalk.test`` to 127.0.0.1:12625): Postfix's log shows the
  deferral with postgrey's words; ``mailtalk serve`` is restarted, and after the delay a
  queue flush delivers the message, because the triplet was kept in ROOT/greylist.json.
* curl with ``--max-time`` times out on a trickled greeting; mailtalk's own client says
  no reply came in time; a trickle longer than the idle timeout ends the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.interop.clients import client_env, mailtalk_command, require_binary
from tests.interop.conftest import _unavailable
from tests.interop.test_send_stop_points_real import POSTFIX_LOG, Log, wait_for_delivery
from tests.interop.test_serve_clients import ServeProcess, start_serve, stop_process

pytestmark = pytest.mark.interop

TIMEOUT = 30
GREYLIST_DOMAIN = os.environ.get("MAILTALK_POSTFIX_GREYLIST_DOMAIN", "greylist.mailtalk.test")
GREYLIST_PORT = int(os.environ.get("MAILTALK_POSTFIX_GREYLIST_PORT", "12625"))
RATE_RULE = "smtp:rcpt=rate 3/2s=421 4.7.0 Too many messages"


def run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env=client_env(tmp_path), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def journal_events(path: Path, event: str) -> list[dict[str, object]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [entry for entry in map(json.loads, lines) if entry.get("event") == event]


def delivered(root: Path, user: str) -> list[bytes]:
    new = root / "mail" / user / "Maildir" / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


def test_swaks_over_the_rate_gets_421_until_the_window_passes(tmp_path: Path) -> None:
    swaks = require_binary("swaks")
    journal = tmp_path / "journal.jsonl"
    server = start_serve(tmp_path, "--smtp", "0", "--user", "alice:secret",
                         "--fault", RATE_RULE, "--journal", str(journal))  # fmt: skip
    try:
        port = server.port("smtp")

        def send(body: str) -> subprocess.CompletedProcess[str]:
            return run([swaks, "--server", f"127.0.0.1:{port}", "--from", "bill@isp.test",
                        "--to", "alice@localhost", "--body", body], tmp_path)  # fmt: skip

        started = time.monotonic()
        results = [send(f"message {n}") for n in range(1, 6)]
        quick = time.monotonic() - started < 2.0  # all five inside one window
        for result in results[:3]:
            assert result.returncode == 0, result.stdout + result.stderr
        if quick:
            for result in results[3:]:
                assert "<** 421 4.7.0 Too many messages" in result.stdout, result.stdout
                assert result.returncode != 0
        time.sleep(2.2)
        again = send("message 6")
        assert again.returncode == 0, again.stdout + again.stderr
        bodies = b"".join(delivered(tmp_path / "serve-root", "alice"))
        for n in (1, 2, 3, 6):
            assert f"message {n}".encode() in bodies
        if quick:
            assert b"message 4" not in bodies and b"message 5" not in bodies
            fired = journal_events(journal, "fault")
            assert [e["rule"] for e in fired] == [RATE_RULE, RATE_RULE]
            assert {e["reply"] for e in fired} == {"421 4.7.0 Too many messages"}
    finally:
        stop_process(server.process, TIMEOUT)


def test_curl_pop3_logins_over_the_rate(tmp_path: Path) -> None:
    curl = require_binary("curl")
    # curl logs in with AUTH (SASL PLAIN), not USER/PASS
    rule = "pop3:auth=rate 2/5s=-ERR [LOGIN-DELAY] Too many logins"
    server = start_serve(tmp_path, "--pop3", "0", "--user", "alice:secret", "--fault", rule)
    try:
        url = f"pop3://127.0.0.1:{server.port('pop3')}/"
        results = [run([curl, "-sS", "-v", "--user", "alice:secret", url], tmp_path)
                   for _ in range(3)]  # fmt: skip
        assert [r.returncode for r in results[:2]] == [0, 0], results[0].stderr
        assert results[2].returncode != 0
        assert "-ERR [LOGIN-DELAY] Too many logins" in results[2].stderr
    finally:
        stop_process(server.process, TIMEOUT)


def _postfix_or_skip() -> str:
    sendmail = shutil.which("sendmail") or "/usr/sbin/sendmail"
    if not Path(sendmail).exists() or not shutil.which("postqueue"):
        _unavailable("Postfix's sendmail and postqueue are not installed")
    probe = subprocess.run(["postconf", "-h", "transport_maps"], capture_output=True,
                           text=True, check=False)  # fmt: skip
    if GREYLIST_DOMAIN not in probe.stdout:
        _unavailable(f"Postfix does not route {GREYLIST_DOMAIN} (run scripts/real-servers start)")
    return sendmail


def _greylist_serve(tmp_path: Path) -> ServeProcess:
    return start_serve(
        tmp_path, "--smtp", str(GREYLIST_PORT), "--domain", GREYLIST_DOMAIN,
        "--user", "bob:secret", "--fault", "smtp:rcpt=greylist", "--greylist-delay", "2",
    )  # fmt: skip


def test_postfix_is_greylisted_then_delivers_after_a_restart(tmp_path: Path) -> None:
    sendmail = _postfix_or_skip()
    log = Log(POSTFIX_LOG)
    marker = "grey" + uuid.uuid4().hex[:12]
    recipient = f"bob@{GREYLIST_DOMAIN}"
    server = _greylist_serve(tmp_path)
    try:
        message = f"Subject: {marker}\nFrom: carol@mailtalk.test\n\ngreylisted {marker}\n"
        subprocess.run([sendmail, "-i", "-f", "carol@mailtalk.test", recipient],
                       input=message, text=True, check=True, timeout=TIMEOUT)  # fmt: skip
        text = log.wait_for(lambda t: f"to=<{recipient}>" in t and "status=deferred" in t)
        deferred = [line for line in text.splitlines()
                    if f"to=<{recipient}>" in line and "status=deferred" in line]  # fmt: skip
        queue_id = deferred[-1].split(": ")[1]
        # postgrey's wording, as Postfix's smtp client heard it from mailtalk serve
        assert (
            f"said: 450 4.2.0 <{recipient}>: Recipient address rejected: Greylisted, "
            f"see http://postgrey.schweikert.ch/help/{GREYLIST_DOMAIN}.html"
        ) in deferred[-1]
        assert delivered(tmp_path / "serve-root", "bob") == []
    finally:
        stop_process(server.process, TIMEOUT)
    state = json.loads((tmp_path / "serve-root" / "greylist.json").read_text())
    assert ["127.0.0.0/24", "carol@mailtalk.test", recipient] in [e[:3] for e in state["greylist"]]

    time.sleep(2.2)  # the delay passes while mailtalk serve is down
    server = _greylist_serve(tmp_path)
    try:
        subprocess.run(["postqueue", "-f"], check=True, timeout=TIMEOUT)
        log.wait_for(lambda t: f"{queue_id}: to=<{recipient}>" in t and "status=sent" in t)
        wait_for_delivery(tmp_path / "serve-root" / "mail" / "bob" / "Maildir", marker)
    finally:
        stop_process(server.process, TIMEOUT)


def test_curl_times_out_on_a_trickled_reply(tmp_path: Path) -> None:
    curl = require_binary("curl")
    server = start_serve(tmp_path, "--smtp", "0", "--user", "alice:secret",
                         "--fault", "smtp:connect=trickle 5B/s")  # fmt: skip
    try:
        port = server.port("smtp")
        started = time.monotonic()
        result = run([curl, "-sS", "--max-time", "2", f"smtp://127.0.0.1:{port}"], tmp_path)
        assert result.returncode == 28, result.stderr  # CURLE_OPERATION_TIMEDOUT
        assert "Operation timed out" in result.stderr
        assert time.monotonic() - started < 15
        ours = run([*mailtalk_command(), "send", "--server", f"127.0.0.1:{port}", "--from",
                    "bill@isp.test", "--to", "alice@localhost", "--timeout", "2"],
                   tmp_path)  # fmt: skip
        assert ours.returncode != 0
        assert "no reply from 127.0.0.1 within 2 s (--timeout)" in ours.stderr, ours.stderr
        assert "Traceback" not in ours.stderr
    finally:
        stop_process(server.process, TIMEOUT)


def test_a_trickle_ends_at_the_idle_timeout(tmp_path: Path) -> None:
    curl = require_binary("curl")
    journal = tmp_path / "journal.jsonl"
    server = start_serve(tmp_path, "--smtp", "0", "--idle-timeout", "2", "--journal",
                         str(journal), "--fault", "smtp:connect=trickle 4B/s")  # fmt: skip
    try:
        started = time.monotonic()
        result = run([curl, "-sS", "-v", f"smtp://127.0.0.1:{server.port('smtp')}"], tmp_path)
        took = time.monotonic() - started
        assert result.returncode != 0
        assert 1.5 < took < 15, took  # the greeting (50+ bytes) would take 12 s and more
        ended = journal_events(journal, "trickle-timeout")
        assert ended and ended[0]["seconds"] == 2.0
        fired = journal_events(journal, "fault")
        assert fired[0]["rule"] == "smtp:connect=trickle 4B/s"
        assert fired[0]["bytes_per_second"] == 4.0
    finally:
        stop_process(server.process, TIMEOUT)
