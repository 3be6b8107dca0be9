"""`mailtalk serve` SMTP extensions with a real sender: Exim's smtp transport sends BDAT
when the server offers CHUNKING (``hosts_try_chunking``) and NOTIFY=/RET=/ENVID= when it
offers DSN (``dsn_advertise_hosts`` is about its own server side; as a client, Exim
passes on what its own client asked for). Exim runs here as a one-shot client with a
configuration of the test's own (``exim4 -C FILE -odi``), routing every address to
``mailtalk serve``; the journal shows what came in, and the Maildir copy must be the
message, byte for byte (with LF line ends, as the store writes them). Exim also says
SIZE= on MAIL when serve offers SIZE, and logs serve's 552 as the reason it bounced."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from mailtalk.servers.api import run_servers
from mailtalk.servers.journal import Journal, read_events

pytestmark = pytest.mark.interop

PEERS_DIR = Path(os.environ.get("MAILTALK_PEERS_DIR", "/opt/mailtalk-peers"))
EXIM_BIN = PEERS_DIR / "root/usr/sbin/exim4"

CLIENT_CONF = """\
primary_hostname = exim-client.test
qualify_domain = exim-client.test
exim_path = {exim}
spool_directory = {spool}
log_file_path = {log}/%slog
keep_environment =
host_lookup =
never_users =
daemon_smtp_ports = 0

begin routers
to_mailtalk:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = to_mailtalk
  self = send

begin transports
to_mailtalk:
  driver = smtp
  port = {port}
  hosts_try_chunking = *
  hosts_avoid_tls = *
  allow_localhost

begin retry
*  *  F,1h,5m
"""


def exim_or_skip() -> Path:
    if EXIM_BIN.exists():
        return EXIM_BIN
    if os.environ.get("MAILTALK_REQUIRE_REAL_SERVERS"):
        pytest.fail(f"Exim is required but {EXIM_BIN} is missing (scripts/real-servers start)")
    pytest.skip("Exim is not installed (scripts/real-servers start)")


def exim_workdir(request: pytest.FixtureRequest, *subdirs: str) -> Path:
    """A folder for a one-shot Exim with a -C file of the test's own: spool, log and
    ``subdirs``, removed after the test."""
    # Exim gives up root for a -C file and works as Debian-exim, who cannot enter
    # pytest's 0700 temporary directories: a folder of its own under /tmp.
    work = Path(tempfile.mkdtemp(prefix="mailtalk-exim-client-"))
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    work.chmod(0o755)
    for sub in ("spool", "log", *subdirs):
        (work / sub).mkdir()
        shutil.chown(work / sub, "Debian-exim", "Debian-exim")
    return work


def test_exim_sends_bdat_to_mailtalk_serve_and_the_message_arrives_byte_identical(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    exim = exim_or_skip()
    work = exim_workdir(request)
    journal_path = tmp_path / "journal.jsonl"
    journal = Journal(journal_path)
    marker = "bdat" + uuid.uuid4().hex[:12]
    body = (f"Subject: {marker}\n\n.a line with a leading dot\n..two\n.\nlast line\n").encode()
    try:
        with run_servers(tmp_path / "root", users=[("alice", "secret")], journal=journal) as srv:
            conf = work / "client.conf"
            conf.write_text(CLIENT_CONF.format(
                exim=exim, spool=work / "spool", log=work / "log", port=srv.port("smtp")
            ))  # fmt: skip
            result = subprocess.run(
                [str(exim), "-C", str(conf), "-odi", "-oi", "-f", "bob@example.org",
                 "alice@localhost"],
                input=body, capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            log = work / "log/mainlog"
            mainlog = log.read_text(errors="replace") if log.exists() else ""
            assert result.returncode == 0, (result.stderr, mainlog)
            # K: Exim sent this delivery with CHUNKING (BDAT).
            assert re.search(r"=> alice@localhost R=to_mailtalk .* K C=\"250 ", mainlog), mainlog
            (stored,) = srv.messages("alice")
    finally:
        journal.close()
    events = list(read_events(journal_path))
    commands = [e for e in events if e.get("event") == "command"]
    verbs = [e["verb"] for e in commands]
    assert "DATA" not in verbs and "BDAT" in verbs, verbs
    last = [e for e in commands if e["verb"] == "BDAT"][-1]
    assert last["args"].upper().endswith("LAST") and last["code"] == 250, last
    (message,) = [e for e in events if e.get("event") == "message"]
    assert message.get("chunking") is True
    # Exim adds its own Received and Message-Id etc.; our body follows unchanged.
    assert stored.endswith(b"\n\n.a line with a leading dot\n..two\n.\nlast line\n")
    assert f"Subject: {marker}".encode() in stored


def test_exim_declares_size_and_the_message_over_serves_max_size_bounces_at_mail(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``mailtalk serve --max-size``: Exim's smtp transport sends SIZE= because serve
    offers SIZE; the message over the limit is refused at MAIL with 552, which Exim's
    log gives as the bounce reason, and the one under it is delivered."""
    exim = exim_or_skip()
    work = exim_workdir(request)
    journal_path = tmp_path / "journal.jsonl"
    journal = Journal(journal_path)
    limit = 4000
    marker = "size" + uuid.uuid4().hex[:12]
    small = f"Subject: {marker} small\n\n{'s' * 70}\n".encode()
    big = f"Subject: {marker} big\n\n".encode() + (b"b" * 70 + b"\n") * 100
    try:
        with run_servers(tmp_path / "root", users=[("alice", "secret")], journal=journal,
                         max_size=limit) as srv:  # fmt: skip
            conf = work / "client.conf"
            # Without BDAT (Exim's default tries it): with it, Exim sends MAIL, RCPT and
            # BDAT LAST in one write and blames a refusal on "pipelined end of data".
            no_bdat = CLIENT_CONF.replace("hosts_try_chunking = *", "hosts_try_chunking =")
            conf.write_text(no_bdat.format(
                exim=exim, spool=work / "spool", log=work / "log", port=srv.port("smtp")
            ))  # fmt: skip
            for sender, message in (("small@example.org", small), ("big@example.org", big)):
                subprocess.run(
                    [str(exim), "-C", str(conf), "-odi", "-oi", "-f", sender, "alice@localhost"],
                    input=message, capture_output=True, timeout=60, check=False,
                )  # fmt: skip
            stored = srv.messages("alice")
    finally:
        journal.close()
    mainlog = (work / "log/mainlog").read_text(errors="replace")
    # Exim said SIZE= on both MAILs; serve took the small one and refused the big one.
    mails = [
        e for e in read_events(journal_path)
        if e.get("event") == "command" and e.get("verb") == "MAIL"
    ]  # fmt: skip
    sizes = {m["args"].split(">")[0].split("<")[1]: m for m in mails}
    assert set(sizes) >= {"small@example.org", "big@example.org"}, mails
    declared = int(re.findall(r"SIZE=(\d+)", sizes["big@example.org"]["args"])[0])
    assert declared > limit and sizes["big@example.org"]["code"] == 552
    assert re.search(r"SIZE=\d+", sizes["small@example.org"]["args"])
    assert sizes["small@example.org"]["code"] == 250
    # The bounce reason in Exim's log: serve's 552 after MAIL, as Exim heard it.
    (failed,) = [line for line in mainlog.splitlines() if " ** alice@localhost" in line]
    assert re.search(
        rf"SMTP error from remote mail server after (pipelined )?MAIL FROM:<big@example\.org> "
        rf"SIZE={declared}: 552[ -]", failed
    ), failed  # fmt: skip
    assert re.search(r"=> alice@localhost R=to_mailtalk .* C=\"250 ", mainlog), mainlog
    (delivered,) = stored
    assert f"Subject: {marker} small".encode() in delivered
