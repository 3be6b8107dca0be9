"""Real SMTP clients against ``mailtalk serve``: swaks, curl, msmtp, smtplib and mailtalk itself
(and, for one mailbox end to end, imapclient, mpop and getmail6).

Each client delivers to alice's Maildir over plain SMTP, STARTTLS and implicit TLS,
authenticates where it should, relays only after AUTH, and meets the scenarios and
fault rules the way a program would meet them at a real site. ``mailtalk serve`` is
also run as a subprocess for what only the command shows: the ``--json`` line,
signals, the bound address, option errors, the startup text and personalities.

The servers listen on free loopback ports: nothing here needs the real
Postfix/Dovecot. A missing client binary skips its tests (``require_binary``),
unless ``MAILTALK_REQUIRE_REAL_SERVERS=1``: then it fails, as in CI, where
``scripts/real-servers install`` installs swaks, curl and msmtp.
"""

from __future__ import annotations

import contextlib
import email.policy
import json
import os
import re
import select
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.interop.clients import (
    client_env,
    mailtalk_command,
    read_line,
    require_binary,
    stop_process,
)
from tests.maildirs import in_delivery_order

pytestmark = pytest.mark.interop

USER = "alice"
PASSWORD = "secret"
DOMAIN = "example.test"
ALICE = f"{USER}@{DOMAIN}"
SENDER = "bob@example.org"
FOREIGN = "friend@example.net"
TIMEOUT = 10

MAILTALK_RELAY_DENIED = (
    f"5.7.1 <{FOREIGN}>: Relay access denied: this server only takes mail for its own domains"
)
GREYLIST_RULE = (
    "smtp:rcpt=greylist 451 4.7.1 <{to}>: Recipient address rejected: "
    "Greylisted, please try again later"
)
TLS_REQUIRED_RULE = "smtp:mail:tls=no=530 5.7.0 Must issue a STARTTLS command first"
DISK_FULL_RULE = "smtp:mail=452 4.3.1 Insufficient system storage"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def run_client(
    args: list[str], tmp_path: Path, stdin: str | bytes | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(
        args,
        input=data,
        capture_output=True,
        env=client_env(tmp_path, **env),
        timeout=TIMEOUT,
        check=False,
        start_new_session=True,  # no controlling terminal: nobody can prompt
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def maildir_of(servers: Any, user: str = USER) -> Path:
    return Path(servers.root) / "mail" / user / "Maildir"


def new_messages(servers: Any, user: str = USER) -> list[Path]:
    new = maildir_of(servers, user) / "new"
    if not new.is_dir():
        return []
    return in_delivery_order(new.iterdir())


def check_delivered(
    servers: Any,
    sender: str,
    body_lines: list[str],
    *,
    count: int = 1,
    protocol: str | None = None,
) -> bytes:
    """The last of ``count`` messages in alice's new/, checked as a Maildir delivery."""
    maildir = maildir_of(servers)
    messages = new_messages(servers)
    assert len(messages) == count, f"expected {count} message(s) in {maildir}/new: {messages}"
    assert list((maildir / "tmp").iterdir()) == [], "leftover in tmp/"
    raw = messages[-1].read_bytes()
    assert servers.messages(USER)[-1] == raw
    assert b"\r\n" not in raw, "the Maildir copy must have LF line endings"
    lines = raw.split(b"\n")
    assert lines[0] == f"Return-Path: <{sender}>".encode()
    assert lines[1].startswith(b"Received: from ")
    header, _, body = raw.partition(b"\n\n")
    if protocol is not None:
        assert re.search(rb"\bwith " + protocol.encode() + rb" id ", header), header
    body_split = body.split(b"\n")
    for line in body_lines:
        assert line.encode() in body_split, f"{line!r} not in the delivered body:\n{body!r}"
    return raw


def queued(root: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """The relay queue: (message, envelope) pairs; no leftovers in queue/tmp."""
    queue = root / "queue"
    if not queue.is_dir():
        return []
    assert list((queue / "tmp").iterdir()) == []
    pairs = []
    for path in sorted((queue / "messages").iterdir()):
        envelope = json.loads((queue / "envelopes" / f"{path.name}.json").read_text())
        pairs.append((path.read_bytes(), envelope))
    return pairs


def check_relayed(servers: Any, sender: str, body_line: str) -> None:
    [(message, envelope)] = queued(Path(servers.root))
    assert envelope["mail_from"] == sender
    assert envelope["rcpt_to"] == [FOREIGN]
    assert envelope["client"] == "127.0.0.1"
    assert envelope["id"] and envelope["size"] == len(message)
    assert message.startswith(f"Return-Path: <{sender}>\n".encode())
    assert body_line.encode() in message.split(b"\n")
    assert new_messages(servers) == []


def client_context(cafile: Path | str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


@pytest.fixture
def servers(mailtalk_servers: Callable[..., Any]) -> Any:
    """SMTP, submission and SMTPS; alice:secret; local domain example.test."""
    return mailtalk_servers(
        smtp=0, submission=0, smtps=0, users=[(USER, PASSWORD)], domains=[DOMAIN]
    )


def start_servers(mailtalk_servers: Callable[..., Any], **options: Any) -> Any:
    return mailtalk_servers(
        smtp=0, submission=0, smtps=0, users=[(USER, PASSWORD)], domains=[DOMAIN], **options
    )


def message_file(tmp_path: Path, subject: str, body: list[str], sender: str = SENDER) -> Path:
    path = tmp_path / "message.eml"
    head = [f"From: {sender}", f"To: {ALICE}", f"Subject: {subject}", ""]
    path.write_bytes("".join(line + "\r\n" for line in head + body).encode())
    return path


# ---------------------------------------------------------------------------
# swaks
# ---------------------------------------------------------------------------


def swaks(
    servers: Any, tmp_path: Path, port: int, *options: str
) -> subprocess.CompletedProcess[str]:
    binary = require_binary("swaks")
    return run_client([binary, "--server", f"127.0.0.1:{port}", *options], tmp_path)


def test_swaks_plain(servers: Any, tmp_path: Path) -> None:
    result = swaks(
        servers, tmp_path, servers.port("smtp"),
        "--from", SENDER, "--to", ALICE, "--header", "Subject: swaks plain",
        "--body", "plain body line\n.starts with a dot",
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert " -> STARTTLS" not in result.stdout
    check_delivered(servers, SENDER, ["plain body line", ".starts with a dot"], protocol="ESMTP")


def test_swaks_starttls_verified(servers: Any, tmp_path: Path) -> None:
    result = swaks(
        servers, tmp_path, servers.port("smtp"),
        "--from", SENDER, "--to", ALICE, "--body", "starttls body",
        "--tls", "--tls-verify", "--tls-ca-path", str(servers.cafile),
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert "<-  220 2.0.0 Ready to start TLS" in result.stdout
    assert "=== TLS started with cipher" in result.stdout
    check_delivered(servers, SENDER, ["starttls body"], protocol="ESMTPS")


def test_swaks_implicit_tls(servers: Any, tmp_path: Path) -> None:
    result = swaks(
        servers, tmp_path, servers.port("smtps"),
        "--from", SENDER, "--to", ALICE, "--body", "implicit body",
        "--tlsc", "--tls-verify", "--tls-ca-path", str(servers.cafile),
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert "=== TLS started with cipher" in result.stdout
    assert "<~  220 localhost ESMTP mailtalk reference server ready" in result.stdout
    check_delivered(servers, SENDER, ["implicit body"], protocol="ESMTPS")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("listener", ["submission", "smtps"])
def test_swaks_auth_relays_to_a_foreign_domain(
    servers: Any, tmp_path: Path, listener: str, mechanism: str
) -> None:
    tls = ["--tls"] if listener == "submission" else ["--tlsc"]
    result = swaks(
        servers, tmp_path, servers.port(listener),
        *tls, "--tls-verify", "--tls-ca-path", str(servers.cafile),
        "--auth", mechanism, "--auth-user", USER, "--auth-password", PASSWORD,
        "--from", ALICE, "--to", FOREIGN, "--body", f"relayed {mechanism}",
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert f"~> AUTH {mechanism}" in result.stdout
    assert "<~  235 2.7.0 Authentication successful" in result.stdout
    check_relayed(servers, ALICE, f"relayed {mechanism}")


def test_swaks_relay_without_auth_is_refused(servers: Any, tmp_path: Path) -> None:
    result = swaks(
        servers, tmp_path, servers.port("submission"),
        "--tls", "--tls-verify", "--tls-ca-path", str(servers.cafile),
        "--from", ALICE, "--to", FOREIGN,
    )  # fmt: skip
    assert result.returncode != 0, describe(result)
    assert f"<~* 554 {MAILTALK_RELAY_DENIED}" in result.stdout, describe(result)
    assert queued(Path(servers.root)) == []
    assert new_messages(servers) == []


def test_swaks_auth_with_a_wrong_password_is_refused(servers: Any, tmp_path: Path) -> None:
    result = swaks(
        servers, tmp_path, servers.port("smtps"),
        "--tlsc", "--tls-verify", "--tls-ca-path", str(servers.cafile),
        "--auth", "PLAIN", "--auth-user", USER, "--auth-password", "wrong",
        "--from", ALICE, "--to", FOREIGN,
    )  # fmt: skip
    assert result.returncode != 0, describe(result)
    assert "<~* 535 5.7.8 Authentication credentials invalid" in result.stdout
    assert queued(Path(servers.root)) == []


# ---------------------------------------------------------------------------
# curl
# ---------------------------------------------------------------------------


def curl(
    servers: Any, tmp_path: Path, url: str, message: Path, *options: str, rcpt: str = ALICE
) -> subprocess.CompletedProcess[str]:
    binary = require_binary("curl")
    return run_client(
        [
            binary, "--silent", "--show-error", "--verbose", "--max-time", str(TIMEOUT),
            "--url", url, "--mail-from", SENDER if "--user" not in options else ALICE,
            "--mail-rcpt", rcpt, "--upload-file", str(message), *options,
        ],
        tmp_path,
    )  # fmt: skip


def test_curl_plain(servers: Any, tmp_path: Path) -> None:
    message = message_file(tmp_path, "curl plain", ["curl plain body", ".dotted"])
    result = curl(servers, tmp_path, f"smtp://127.0.0.1:{servers.port('smtp')}", message)
    assert result.returncode == 0, describe(result)
    assert "> STARTTLS" not in result.stderr
    check_delivered(servers, SENDER, ["curl plain body", ".dotted"], protocol="ESMTP")


def test_curl_starttls(servers: Any, tmp_path: Path) -> None:
    message = message_file(tmp_path, "curl starttls", ["curl starttls body"])
    result = curl(
        servers, tmp_path, f"smtp://127.0.0.1:{servers.port('smtp')}", message,
        "--ssl-reqd", "--cacert", str(servers.cafile),
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert "> STARTTLS" in result.stderr
    check_delivered(servers, SENDER, ["curl starttls body"], protocol="ESMTPS")


def test_curl_implicit_tls(servers: Any, tmp_path: Path) -> None:
    message = message_file(tmp_path, "curl smtps", ["curl smtps body"])
    result = curl(
        servers, tmp_path, f"smtps://127.0.0.1:{servers.port('smtps')}", message,
        "--cacert", str(servers.cafile),
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    check_delivered(servers, SENDER, ["curl smtps body"], protocol="ESMTPS")


def test_curl_implicit_tls_checks_the_certificate(servers: Any, tmp_path: Path) -> None:
    message = message_file(tmp_path, "curl smtps", ["never delivered"])
    from mailtalk.servers.certs import ensure_certificates

    other_ca = ensure_certificates(tmp_path / "other-root").ca_cert  # another mailtalk's CA
    result = curl(
        servers, tmp_path, f"smtps://127.0.0.1:{servers.port('smtps')}", message,
        "--cacert", str(other_ca),
    )  # fmt: skip
    assert result.returncode == 60, describe(result)  # CURLE_PEER_FAILED_VERIFICATION
    assert new_messages(servers) == []


def test_curl_submission_with_user(servers: Any, tmp_path: Path) -> None:
    message = message_file(tmp_path, "curl auth", ["curl auth body"], sender=ALICE)
    result = curl(
        servers, tmp_path, f"smtp://127.0.0.1:{servers.port('submission')}", message,
        "--ssl-reqd", "--cacert", str(servers.cafile), "--user", f"{USER}:{PASSWORD}",
        rcpt=FOREIGN,
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert "> AUTH " in result.stderr
    assert "< 235 2.7.0 Authentication successful" in result.stderr
    check_relayed(servers, ALICE, "curl auth body")


# ---------------------------------------------------------------------------
# msmtp
# ---------------------------------------------------------------------------


def msmtp(
    servers: Any, tmp_path: Path, port: int, *options: str, rcpt: str = ALICE, body: str
) -> subprocess.CompletedProcess[str]:
    binary = require_binary("msmtp")
    config = tmp_path / "msmtprc"
    config.write_text("")
    config.chmod(0o600)
    message = f"From: {SENDER}\nTo: {rcpt}\nSubject: msmtp\n\n{body}\n.dotted\n"
    return run_client(
        [
            binary, f"--file={config}", "--host=127.0.0.1", f"--port={port}",
            "--domain=client.test", *options, "--", rcpt,
        ],
        tmp_path,
        stdin=message,
    )  # fmt: skip


def test_msmtp_plain(servers: Any, tmp_path: Path) -> None:
    result = msmtp(
        servers, tmp_path, servers.port("smtp"),
        f"--from={SENDER}", "--tls=off", "--auth=off", body="msmtp plain body",
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    raw = check_delivered(servers, SENDER, ["msmtp plain body", ".dotted"], protocol="ESMTP")
    assert raw.split(b"\n")[1] == b"Received: from client.test ([127.0.0.1])"


def test_msmtp_starttls_auth(servers: Any, tmp_path: Path) -> None:
    result = msmtp(
        servers, tmp_path, servers.port("submission"),
        f"--from={ALICE}", "--tls=on", "--tls-starttls=on",
        f"--tls-trust-file={servers.cafile}", "--auth=on", f"--user={USER}",
        f"--passwordeval=echo {PASSWORD}", body="msmtp starttls body",
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    check_delivered(servers, ALICE, ["msmtp starttls body", ".dotted"], protocol="ESMTPSA")


def test_msmtp_implicit_tls_auth_relays(servers: Any, tmp_path: Path) -> None:
    result = msmtp(
        servers, tmp_path, servers.port("smtps"),
        f"--from={ALICE}", "--tls=on", "--tls-starttls=off",
        f"--tls-trust-file={servers.cafile}", "--auth=on", f"--user={USER}",
        f"--passwordeval=echo {PASSWORD}", rcpt=FOREIGN, body="msmtp smtps body",
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    check_relayed(servers, ALICE, "msmtp smtps body")


def test_msmtp_implicit_tls_without_auth(servers: Any, tmp_path: Path) -> None:
    result = msmtp(
        servers, tmp_path, servers.port("smtps"),
        f"--from={SENDER}", "--tls=on", "--tls-starttls=off",
        f"--tls-trust-file={servers.cafile}", "--auth=off", body="msmtp smtps plain body",
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    check_delivered(servers, SENDER, ["msmtp smtps plain body"], protocol="ESMTPS")


# ---------------------------------------------------------------------------
# Python smtplib
# ---------------------------------------------------------------------------


def simple_message(subject: str, body: str, sender: str = SENDER, rcpt: str = ALICE) -> bytes:
    return f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def test_smtplib_plain(servers: Any) -> None:
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        refused = smtp.sendmail(SENDER, [ALICE], simple_message("plain", "smtplib plain"))
    assert refused == {}
    check_delivered(servers, SENDER, ["smtplib plain"], protocol="ESMTP")


def test_smtplib_starttls(servers: Any) -> None:
    with smtplib.SMTP("localhost", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        code, _ = smtp.starttls(context=client_context(servers.cafile))
        assert code == 220
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        smtp.sendmail(SENDER, [ALICE], simple_message("starttls", "smtplib starttls"))
    check_delivered(servers, SENDER, ["smtplib starttls"], protocol="ESMTPS")


def test_smtplib_starttls_without_the_ca_fails_verification(servers: Any) -> None:
    with smtplib.SMTP("localhost", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        with pytest.raises(ssl.SSLCertVerificationError):
            smtp.starttls(context=ssl.create_default_context(cafile=None, capath="/nonexistent"))


def test_smtplib_smtps_login(servers: Any) -> None:
    context = client_context(servers.cafile)
    with smtplib.SMTP_SSL(
        "127.0.0.1", servers.port("smtps"), timeout=TIMEOUT, context=context
    ) as smtp:
        code, _ = smtp.login(USER, PASSWORD)
        assert code == 235
        smtp.sendmail(ALICE, [ALICE], simple_message("smtps", "smtplib smtps", sender=ALICE))
    check_delivered(servers, ALICE, ["smtplib smtps"], protocol="ESMTPSA")


def test_smtplib_submission_login_relays(servers: Any) -> None:
    with smtplib.SMTP("localhost", servers.port("submission"), timeout=TIMEOUT) as smtp:
        smtp.starttls(context=client_context(servers.cafile))
        smtp.login(USER, PASSWORD)
        smtp.sendmail(ALICE, [FOREIGN], simple_message("relay", "smtplib relayed", ALICE, FOREIGN))
    check_relayed(servers, ALICE, "smtplib relayed")


def test_smtplib_dot_lines_arrive_intact(servers: Any) -> None:
    body_lines = [".", "..", "...", ".leading dot", "..two leading dots", "end.", " . ", ""]
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = ALICE
    message["Subject"] = "dots"
    message.set_content("\n".join(["first line", *body_lines, "last line"]))
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.send_message(message)
    raw = check_delivered(servers, SENDER, ["first line", "last line"])
    body = raw.partition(b"\n\n")[2]
    expected = "\n".join(["first line", *body_lines, "last line"]) + "\n"
    assert body == expected.encode()


def test_smtplib_smtputf8_and_8bitmime(servers: Any) -> None:
    sender = "jürgen@example.org"
    message = EmailMessage(policy=email.policy.SMTPUTF8)
    message["From"] = sender
    message["To"] = ALICE
    message["Subject"] = "Grüße ✓"
    message.set_content("Grüße aus Köln — ünïcödé ✓\n.точка\n", cte="8bit")
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("smtputf8") and smtp.has_extn("8bitmime")
        # A non-ASCII sender: send_message adds SMTPUTF8 and BODY=8BITMIME to MAIL FROM.
        assert smtp.send_message(message) == {}
    raw = check_delivered(servers, sender, ["Grüße aus Köln — ünïcödé ✓", ".точка"])
    assert "Subject: Grüße ✓".encode() in raw.split(b"\n")


def test_smtplib_smtputf8_utf8_domain(servers: Any) -> None:
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("smtputf8")
        code, text = smtp.mail("jürgen@exämple.org", ["SMTPUTF8", "BODY=8BITMIME"])
        assert code == 250, text
        assert smtp.rcpt(ALICE)[0] == 250
        assert smtp.data("Subject: ü\r\n\r\nGrüße\r\n".encode())[0] == 250
    check_delivered(servers, "jürgen@exämple.org", ["Grüße"])


def test_smtplib_8bitmime_body_with_ascii_addresses(servers: Any) -> None:
    data = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
    data += "Content-Transfer-Encoding: 8bit\r\n\r\nnaïve café\r\n"
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        smtp.sendmail(SENDER, [ALICE], data.encode(), mail_options=["BODY=8BITMIME"])
    check_delivered(servers, SENDER, ["naïve café"])


# ---------------------------------------------------------------------------
# mailtalk itself, in pipe mode
# ---------------------------------------------------------------------------


def test_mailtalk_pipe_submission(servers: Any, tmp_path: Path) -> None:
    lines = [
        "EHLO client.test",
        f":auth plain {USER}",
        f"MAIL FROM:<{ALICE}>",
        f"RCPT TO:<{ALICE}>",
        "DATA",
        "Subject: mailtalk pipe",
        "",
        ".leading dot",
        "pipe body",
        ".",
        "QUIT",
    ]
    result = run_client(
        [
            *mailtalk_command(), "connect",
            f"submission://{USER}@localhost:{servers.port('submission')}",
            "--cafile", str(servers.cafile),
        ],
        tmp_path,
        stdin="".join(line + "\n" for line in lines),
        MAILTALK_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    out = result.stdout.splitlines()
    assert "C: STARTTLS" in out
    assert "S: 235 2.7.0 Authentication successful" in out
    assert "C: ..leading dot" in out
    assert any(re.fullmatch(r"S: 250 2\.0\.0 OK: queued as \w+", line) for line in out)
    assert "# authenticated as alice" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    check_delivered(servers, ALICE, [".leading dot", "pipe body"], protocol="ESMTPSA")


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------


def test_scenario_relay_denied_even_after_auth(mailtalk_servers: Callable[..., Any]) -> None:
    servers = start_servers(mailtalk_servers, scenarios=["relay-denied"])
    with smtplib.SMTP("localhost", servers.port("submission"), timeout=TIMEOUT) as smtp:
        smtp.starttls(context=client_context(servers.cafile))
        smtp.login(USER, PASSWORD)
        assert smtp.mail(ALICE) == (250, f"2.1.0 Sender <{ALICE}> OK".encode())
        assert smtp.rcpt(FOREIGN) == (554, MAILTALK_RELAY_DENIED.encode())
        # The server's own domains still take mail.
        assert smtp.rcpt(ALICE)[0] == 250
    assert servers.fired_faults() == []  # a setting, not a rule
    assert queued(Path(servers.root)) == []


class TinyDNS:
    """A UDP DNS server on 127.0.0.1: NXDOMAIN for nonexistent.test, an MX for example.org."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.queries: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TinyDNS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().lower()
            self.queries.append((name, dns.rdatatype.to_text(question.rdtype)))
            if name == "nonexistent.test.":
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif name == "example.org." and question.rdtype == dns.rdatatype.MX:
                response.answer.append(
                    dns.rrset.from_text(
                        question.name, 300, dns.rdataclass.IN, dns.rdatatype.MX,
                        "10 mx.example.org.",
                    )
                )  # fmt: skip
            self.sock.sendto(response.to_wire(), peer)


def test_scenario_sender_domain(mailtalk_servers: Callable[..., Any]) -> None:
    pytest.importorskip("dns.message")
    with TinyDNS() as dns_server:
        servers = start_servers(
            mailtalk_servers,
            scenarios=["sender-domain"],
            resolver=f"127.0.0.1:{dns_server.port}",
        )
        with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            assert smtp.mail("bob@nonexistent.test") == (501, b"5.1.8 Sender domain must exist")
            assert smtp.mail(SENDER)[0] == 250
            assert smtp.rcpt(ALICE)[0] == 250
            assert smtp.data(b"Subject: dns\r\n\r\nexisting sender domain\r\n")[0] == 250
        queries = list(dns_server.queries)
    assert ("nonexistent.test.", "MX") in queries
    assert ("example.org.", "MX") in queries
    assert servers.fired_faults() == []
    check_delivered(servers, SENDER, ["existing sender domain"])


def test_scenario_disk_full(mailtalk_servers: Callable[..., Any]) -> None:
    servers = start_servers(mailtalk_servers, scenarios=["disk-full"])
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.mail(SENDER) == (452, b"4.3.1 Insufficient system storage")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            smtp.sendmail(SENDER, [ALICE], simple_message("full", "never stored"))
        assert refused.value.smtp_code == 452
    assert servers.fired_faults() == [DISK_FULL_RULE, DISK_FULL_RULE]
    assert new_messages(servers) == []


def test_scenario_greylist_then_retry(mailtalk_servers: Callable[..., Any]) -> None:
    servers = start_servers(mailtalk_servers, scenarios=["greylist"])
    greylisted = (
        451,
        f"4.7.1 <{ALICE}>: Recipient address rejected: Greylisted, please try again later".encode(),
    )
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        smtp.mail(SENDER)
        assert smtp.rcpt(ALICE) == greylisted
    assert servers.fired_faults() == [GREYLIST_RULE]
    # The retry, in a new session with the same triple, passes.
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail(SENDER, [ALICE], simple_message("grey", "after the retry"))
    assert servers.fired_faults() == [GREYLIST_RULE]
    check_delivered(servers, SENDER, ["after the retry"])


def test_scenario_tls_required_smtplib(mailtalk_servers: Callable[..., Any]) -> None:
    servers = start_servers(mailtalk_servers, scenarios=["tls-required"])
    with smtplib.SMTP("localhost", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.mail(SENDER) == (530, b"5.7.0 Must issue a STARTTLS command first")
        smtp.starttls(context=client_context(servers.cafile))
        smtp.ehlo()
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(ALICE)[0] == 250
        assert smtp.data(b"Subject: tls\r\n\r\nafter starttls\r\n")[0] == 250
    assert servers.fired_faults() == [TLS_REQUIRED_RULE]
    check_delivered(servers, SENDER, ["after starttls"], protocol="ESMTPS")


def test_scenario_tls_required_swaks(mailtalk_servers: Callable[..., Any], tmp_path: Path) -> None:
    servers = start_servers(mailtalk_servers, scenarios=["tls-required"])
    plain = swaks(servers, tmp_path, servers.port("smtp"), "--from", SENDER, "--to", ALICE)
    assert plain.returncode != 0, describe(plain)
    assert "<** 530 5.7.0 Must issue a STARTTLS command first" in plain.stdout
    encrypted = swaks(
        servers, tmp_path, servers.port("smtp"), "--from", SENDER, "--to", ALICE,
        "--body", "swaks after starttls",
        "--tls", "--tls-verify", "--tls-ca-path", str(servers.cafile),
    )  # fmt: skip
    assert encrypted.returncode == 0, describe(encrypted)
    assert servers.fired_faults() == [TLS_REQUIRED_RULE]
    check_delivered(servers, SENDER, ["swaks after starttls"], protocol="ESMTPS")


# ---------------------------------------------------------------------------
# mailtalk serve as a subprocess
# ---------------------------------------------------------------------------


class ServeProcess:
    def __init__(self, process: subprocess.Popen[bytes], info: dict[str, Any], stderr: Path):
        self.process = process
        self.info = info
        self.stderr_path = stderr

    def port(self, protocol: str) -> int:
        for listener in self.info["listeners"]:
            if listener["protocol"] == protocol:
                return int(listener["port"])
        raise KeyError(protocol)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_serve(tmp_path: Path, *args: str, as_json: bool = True) -> ServeProcess:
    root = tmp_path / "serve-root"
    stderr = tmp_path / "serve.stderr"
    process = subprocess.Popen(
        [
            *mailtalk_command(),
            "serve",
            "--root",
            str(root),
            *args,
            *(["--json"] if as_json else []),
        ],
        stdout=subprocess.PIPE,
        stderr=stderr.open("wb"),
        env=client_env(tmp_path),
    )
    try:
        line = read_line(process, TIMEOUT)
    except BaseException:
        process.kill()
        process.wait()
        raise
    info = json.loads(line) if as_json else {"line": line.decode()}
    return ServeProcess(process, info, stderr)


@contextlib.contextmanager
def serve(tmp_path: Path, *args: str) -> Iterator[ServeProcess]:
    server = start_serve(tmp_path, *args)
    try:
        yield server
    finally:
        stop_process(server.process, TIMEOUT)


def serve_user_args() -> list[str]:
    return ["--user", f"{USER}:{PASSWORD}", "--domain", DOMAIN]


def test_serve_json_line(tmp_path: Path) -> None:
    with serve(tmp_path, "--smtp", "0", "--submission", "0", "--smtps", "0") as server:
        assert list(server.info) == ["root", "listeners", "event_loop"]
        assert server.info["event_loop"] in ("uvloop", "asyncio")  # uvloop: mailtalk[fast]
        assert server.info["root"] == str(tmp_path / "serve-root")
        listeners = server.info["listeners"]
        assert [list(x) for x in listeners] == [["protocol", "host", "port", "tls"]] * 3
        assert [(x["protocol"], x["host"], x["tls"]) for x in listeners] == [
            ("smtp", "127.0.0.1", "starttls"),
            ("submission", "127.0.0.1", "starttls"),
            ("smtps", "127.0.0.1", "implicit"),
        ]
        for listener in listeners:
            assert isinstance(listener["port"], int) and listener["port"] > 0
            with socket.create_connection(("127.0.0.1", listener["port"]), timeout=TIMEOUT):
                pass
        assert (tmp_path / "serve-root" / "tls" / "ca.pem").is_file()
        # Nothing else on stdout: the JSON line is the whole of it.
        assert select.select([server.process.stdout], [], [], 0.1)[0] == []


def _listening_addresses(port: int) -> list[str]:
    """Local addresses with a socket in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            if name == "tcp":
                found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_serve_listens_on_loopback_only_by_default(tmp_path: Path) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs /proc/net/tcp to see the bound address")
    with serve(tmp_path, "--smtp", "0", "--smtps", "0") as server:
        for protocol in ("smtp", "smtps"):
            assert _listening_addresses(server.port(protocol)) == ["127.0.0.1"]
        other = _non_loopback_address()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, server.port("smtp")), timeout=2).close()


def test_serve_is_no_open_relay_by_default(tmp_path: Path) -> None:
    with (
        serve(tmp_path, "--smtp", "0", *serve_user_args()) as server,
        smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=TIMEOUT) as smtp,
    ):
        smtp.ehlo("stranger.example")
        assert smtp.mail("stranger@example.com")[0] == 250
        assert smtp.rcpt(FOREIGN) == (554, MAILTALK_RELAY_DENIED.encode())
        assert smtp.rcpt("someone@localhost.example.net")[0] == 554
        assert smtp.rcpt(ALICE)[0] == 250
    assert not (tmp_path / "serve-root" / "queue" / "messages").exists() or not list(
        (tmp_path / "serve-root" / "queue" / "messages").iterdir()
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_on_signal_with_exit_zero(tmp_path: Path, signum: int) -> None:
    server = start_serve(tmp_path, "--smtp", "0")
    process = server.process
    try:
        # A client is connected (and got its banner: the server is in its loop).
        with socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=TIMEOUT) as sock:
            sock.settimeout(TIMEOUT)
            assert sock.recv(1024).startswith(b"220 ")
            process.send_signal(signum)
            assert process.wait(timeout=TIMEOUT) == 0, server.stderr
            assert sock.recv(1024) == b""  # the session was closed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in server.stderr
    assert "interrupted" not in server.stderr


def test_serve_signal_right_after_the_json_line_exits_zero(tmp_path: Path) -> None:
    command = [*mailtalk_command(), "serve", "--root", str(tmp_path / "root"), "--smtp", "0"]
    outcomes = []
    deadline = time.monotonic() + 2.5
    for attempt in range(16):
        signum = (signal.SIGTERM, signal.SIGINT)[attempt % 2]
        process = subprocess.Popen(
            [*command, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=client_env(tmp_path),
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith(b'{"root": ')
            process.send_signal(signum)  # as a supervisor does once the server is up
            code = process.wait(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()
        outcomes.append((signal.Signals(signum).name, code))
        if code != 0 or time.monotonic() > deadline:
            break
    assert all(code == 0 for _, code in outcomes), outcomes


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fault", "smtp:bogus=250 ok"], "mailtalk: bad fault rule 'smtp:bogus=250 ok'"),
        (["--fault", "smtp:rcpt=999 nine"], "mailtalk: bad fault rule 'smtp:rcpt=999 nine'"),
        (["--fault", "smtp:rcpt"], "mailtalk: bad fault rule 'smtp:rcpt'"),
        (["--scenario", "no-such-scenario"], "mailtalk: unknown scenario 'no-such-scenario'"),
    ],
)
def test_serve_bad_option_exits_two(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_client(
        [*mailtalk_command(), "serve", "--root", str(tmp_path / "root"), "--smtp", "0", *args],
        tmp_path,
    )
    assert result.returncode == 2, describe(result)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith(message), describe(result)
    assert "Traceback" not in result.stderr


def read_summary(server: ServeProcess) -> str:
    text = server.info["line"]
    while not text.endswith("Ctrl-C stops.\n"):
        text += read_line(server.process, TIMEOUT).decode()
    return text


def _hinted_command(summary: str) -> list[str]:
    match = re.search(r"TLS: to trust the local CA, (mailtalk connect .*)$", summary, re.M)
    assert match, summary
    import shlex

    return shlex.split(match.group(1))


@pytest.mark.parametrize(
    "listeners",
    [
        pytest.param(["--smtp", "0", "--smtps", "0"], id="smtps"),
        pytest.param(
            ["--smtp", "0"],
            id="smtp-only",
        ),
        pytest.param(
            ["--submission", "0"],
            id="submission-only",
        ),
        pytest.param(["--listen", "127.0.0.42", "--smtps", "0"], id="listen-127.0.0.42"),
    ],
)
def test_serve_startup_text_trust_hint_works(tmp_path: Path, listeners: list[str]) -> None:
    server = start_serve(tmp_path, *listeners, as_json=False)
    try:
        summary = read_summary(server)
        ca = tmp_path / "serve-root" / "tls" / "ca.pem"
        assert summary.startswith(f"mailtalk reference servers, root {tmp_path / 'serve-root'}\n")
        assert f"--cafile {ca}" in summary
        command = _hinted_command(summary)
        assert command[:2] == ["mailtalk", "connect"]
        result = run_client(
            [*mailtalk_command(), *command[1:]], tmp_path, stdin="EHLO client.test\nQUIT\n"
        )
        assert result.returncode == 0, describe(result)
        assert re.search(r"(?m)^# TLS: TLSv1\.[23], ", result.stderr), describe(result)
        assert "NOT verified" not in result.stderr
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=TIMEOUT)


# -- fault rules through the command line ------------------------------------


def test_serve_fault_second_rcpt(tmp_path: Path) -> None:
    rule = "smtp:rcpt#2=452 4.2.2 Mailbox full"
    with serve(tmp_path, "--smtp", "0", *serve_user_args(), "--fault", rule) as server:
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            smtp.mail(SENDER)
            assert smtp.rcpt(ALICE)[0] == 250
            assert smtp.rcpt(f"{USER}@localhost") == (452, b"4.2.2 Mailbox full")
            assert smtp.data(b"Subject: one of two\r\n\r\nfirst recipient only\r\n")[0] == 250
            # The count is per transaction: the next one starts again.
            refused = smtp.sendmail(
                SENDER, [ALICE, f"{USER}@localhost"], b"Subject: 2\r\n\r\nx\r\n"
            )
            assert refused == {f"{USER}@localhost": (452, b"4.2.2 Mailbox full")}
        messages = sorted((tmp_path / "serve-root" / "mail" / USER / "Maildir" / "new").iterdir())
        assert len(messages) == 2
        assert any(b"first recipient only" in path.read_bytes() for path in messages)
    assert rule in server.stderr  # every fired fault is logged


def test_serve_fault_second_rcpt_swaks(tmp_path: Path) -> None:
    binary = require_binary("swaks")
    rule = "smtp:rcpt#2=452 4.2.2 Mailbox full"
    with serve(tmp_path, "--smtp", "0", *serve_user_args(), "--fault", rule) as server:
        result = run_client(
            [
                binary, "--server", f"127.0.0.1:{server.port('smtp')}", "--from", SENDER,
                "--to", f"{ALICE},{USER}@localhost", "--body", "swaks two rcpts",
            ],
            tmp_path,
        )  # fmt: skip
    assert f"<-  250 2.1.5 Recipient <{ALICE}> OK" in result.stdout, describe(result)
    assert "<** 452 4.2.2 Mailbox full" in result.stdout, describe(result)


def test_serve_fault_data_disconnect(tmp_path: Path) -> None:
    with serve(
        tmp_path, "--smtp", "0", *serve_user_args(), "--fault", "smtp:data=disconnect"
    ) as server:
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            smtp.mail(SENDER)
            assert smtp.rcpt(ALICE)[0] == 250
            with pytest.raises(smtplib.SMTPServerDisconnected):
                smtp.data(b"Subject: lost\r\n\r\nnever stored\r\n")
            with contextlib.suppress(smtplib.SMTPServerDisconnected):
                smtp.close()
        maildir = tmp_path / "serve-root" / "mail" / USER / "Maildir"
        for folder in ("new", "tmp"):
            assert not (maildir / folder).is_dir() or list((maildir / folder).iterdir()) == []
        # The server goes on serving.
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=TIMEOUT) as smtp:
            assert smtp.noop()[0] == 250
    assert "smtp:data=disconnect" in server.stderr


def test_serve_fault_ehlo_delay(tmp_path: Path) -> None:
    with (
        serve(tmp_path, "--smtp", "0", "--fault", "smtp:ehlo=delay 1s") as server,
        smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=TIMEOUT) as smtp,
    ):
        started = time.monotonic()
        code, text = smtp.ehlo("client.test")
        took = time.monotonic() - started
        assert code == 250 and text.startswith(b"localhost greets client.test")
        assert took >= 1.0, took
        started = time.monotonic()
        assert smtp.noop()[0] == 250
        assert time.monotonic() - started < 0.5


# -- personalities -------------------------------------------------------------


def test_serve_personality_qmail_swaks(tmp_path: Path) -> None:
    binary = require_binary("swaks")
    with serve(tmp_path, "--smtp", "0", *serve_user_args(), "--personality", "qmail") as server:
        result = run_client(
            [
                binary,
                "--server",
                f"127.0.0.1:{server.port('smtp')}",
                "--from",
                SENDER,
                "--to",
                FOREIGN,
            ],
            tmp_path,
        )
    assert result.returncode != 0, describe(result)
    assert "<-  220 localhost ESMTP\n" in result.stdout, describe(result)
    assert (
        "<** 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)" in result.stdout
    ), describe(result)


def test_serve_personality_postfix_smtplib(tmp_path: Path) -> None:
    with (
        serve(tmp_path, "--smtp", "0", *serve_user_args(), "--personality", "postfix") as server,
        smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=TIMEOUT) as smtp,
    ):
        assert smtp.docmd("NOOP") == (250, b"2.0.0 Ok")
        smtp.ehlo()
        assert smtp.mail(SENDER) == (250, b"2.1.0 Ok")
        assert smtp.rcpt(FOREIGN) == (554, f"5.7.1 <{FOREIGN}>: Relay access denied".encode())
        assert smtp.rcpt(ALICE) == (250, b"2.1.5 Ok")
    # The banner, as a raw client sees it.
    with (
        serve(tmp_path, "--smtp", "0", "--personality", "postfix") as server,
        socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=TIMEOUT) as sock,
    ):
        assert sock.recv(1024) == b"220 localhost ESMTP Postfix\r\n"


def test_serve_personality_qmail_ehlo_extensions(tmp_path: Path) -> None:
    with (
        serve(tmp_path, "--smtp", "0", "--personality", "qmail") as server,
        smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=TIMEOUT) as smtp,
    ):
        code, text = smtp.ehlo("client.test")
    assert code == 250
    keywords = text.decode().split("\n")[1:]
    assert keywords == ["STARTTLS", "PIPELINING", "8BITMIME", "AUTH LOGIN PLAIN", "SIZE 52428800"]


def test_serve_personality_qmail_queue_id(tmp_path: Path) -> None:
    with (
        serve(tmp_path, "--smtp", "0", *serve_user_args(), "--personality", "qmail") as server,
        smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=TIMEOUT) as smtp,
    ):
        smtp.ehlo()
        smtp.mail(SENDER)
        smtp.rcpt(ALICE)
        code, text = smtp.data(b"Subject: qmail\r\n\r\nqp\r\n")
    assert code == 250
    assert re.fullmatch(rb"ok \d+ qp \d+", text), text


# -- one mailbox, several real clients at once ---------------------------------


def test_serve_one_mailbox_through_imapclient_swaks_mpop_and_getmail(tmp_path: Path) -> None:
    """The command a user runs, with every listener: imapclient waits in IDLE over
    IMAPS, swaks submits with AUTH after STARTTLS, the IDLE sees it, then mpop
    (POP3S) and getmail6 (IMAPS) each fetch it, keeping it; the body arrives intact."""
    from imapclient import IMAPClient

    swaks_binary = require_binary("swaks")
    mpop_binary = require_binary("mpop")
    getmail_binary = require_binary("getmail")
    body_lines = ["first line", ".a line that starts with a dot", "..two dots", "last line"]
    args = ["--smtp", "0", "--submission", "0", "--pop3s", "0", "--imaps", "0"]
    with serve(tmp_path, *args, *serve_user_args()) as server:
        cafile = Path(server.info["root"]) / "tls" / "ca.pem"
        context = client_context(cafile)
        imap = IMAPClient(
            "127.0.0.1", port=server.port("imaps"), ssl=True, ssl_context=context, timeout=TIMEOUT
        )
        try:
            imap.login(USER, PASSWORD)
            assert imap.select_folder("INBOX")[b"EXISTS"] == 0
            imap.idle()

            sent = run_client(
                [
                    swaks_binary, "--server", f"127.0.0.1:{server.port('submission')}",
                    "--tls", "--tls-verify", "--tls-ca-path", str(cafile),
                    "--tls-sni", "localhost", "--auth", "PLAIN",
                    "--auth-user", USER, "--auth-password", PASSWORD,
                    "--from", SENDER, "--to", ALICE,
                    "--header", "Subject: for every client",
                    "--body", "\n".join(body_lines),
                ],
                tmp_path,
            )  # fmt: skip
            assert sent.returncode == 0, describe(sent)

            announced: list[Any] = []
            deadline = time.monotonic() + TIMEOUT
            while (1, b"EXISTS") not in announced:
                assert time.monotonic() < deadline, f"no EXISTS during IDLE: {announced}"
                announced += imap.idle_check(timeout=1)
            imap.idle_done()
            [uid] = imap.search(["SUBJECT", "every client"])
            imap_body = imap.fetch([uid], ["BODY.PEEK[TEXT]"])[uid][b"BODY[TEXT]"]
        finally:
            with contextlib.suppress(Exception):
                imap.logout()
        assert imap_body.split(b"\r\n")[: len(body_lines)] == [x.encode() for x in body_lines]

        # mpop over POP3S, keeping the message.
        mpop_dir = tmp_path / "mpop"
        for sub in ("cur", "new", "tmp"):
            (mpop_dir / sub).mkdir(parents=True)
        rc = tmp_path / "mpoprc"
        rc.write_text(
            f"account alice\nhost 127.0.0.1\nport {server.port('pop3s')}\nuser {USER}\n"
            f"password {PASSWORD}\ntls on\ntls_starttls off\ntls_trust_file {cafile}\n"
            f"delivery maildir {mpop_dir}\nkeep on\nuidls_file {tmp_path / 'uidls'}\n"
        )
        rc.chmod(0o600)
        fetched = run_client([mpop_binary, "-C", str(rc), "alice"], tmp_path)
        assert fetched.returncode == 0, describe(fetched)
        [mpop_file] = list((mpop_dir / "new").iterdir())

        # getmail6 over IMAPS; as root it delivers as nobody, into a directory nobody enters.
        parent = Path(tempfile.mkdtemp(prefix="mailtalk-getmail-"))
        try:
            parent.chmod(0o711)
            getmail_dir = parent / "Maildir"
            for sub in ("", "cur", "new", "tmp"):
                (getmail_dir / sub).mkdir(exist_ok=True)
                if os.geteuid() == 0:
                    shutil.chown(getmail_dir / sub, "nobody")
            getmail_rc = tmp_path / "getmailrc"
            getmail_rc.write_text(
                f"[retriever]\ntype = SimpleIMAPSSLRetriever\nserver = 127.0.0.1\n"
                f"port = {server.port('imaps')}\nusername = {USER}\npassword = {PASSWORD}\n"
                f"ca_certs = {cafile}\nmailboxes = ('INBOX',)\n"
                f"[destination]\ntype = Maildir\npath = {getmail_dir}/\n"
                + ("user = nobody\n" if os.geteuid() == 0 else "")
                + "[options]\ndelete = false\n"
            )
            getmail_rc.chmod(0o600)
            (tmp_path / "getmail-state").mkdir()
            result = run_client(
                [getmail_binary, "--rcfile", str(getmail_rc),
                 "--getmaildir", str(tmp_path / "getmail-state")],
                tmp_path,
            )  # fmt: skip
            assert result.returncode == 0, describe(result)
            [getmail_file] = list((getmail_dir / "new").iterdir())
            copies = [mpop_file.read_bytes(), getmail_file.read_bytes()]
        finally:
            shutil.rmtree(parent, ignore_errors=True)

        stored = [
            p.read_bytes()
            for sub in ("new", "cur")
            for p in (Path(server.info["root"]) / "mail" / USER / "Maildir" / sub).iterdir()
        ]
        assert len(stored) == 1  # fetched three times, kept every time
        stored_body = stored[0].partition(b"\n\n")[2]
        for copy in copies:
            assert copy.partition(b"\n\n")[2] == stored_body, copy
        assert stored_body.split(b"\n")[: len(body_lines)] == [x.encode() for x in body_lines]
