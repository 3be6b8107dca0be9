"""The second real peers of scripts/real-servers: Exim, OpenSMTPD, GNU Mailutils.

Two halves. First, each peer's every port speaks its protocol as the fixtures
promise (greeting, EHLO/CAPA/CAPABILITY, TLS verified with the CA by address,
login, and the refusals other tests rely on), with the standard library's
clients: if these fail, the rig is broken, not mailtalk. Second, ``mailtalk``
itself in pipe mode against each peer: a short SMTP conversation delivering to
alice on Exim and OpenSMTPD, POP3 and IMAP login/list/fetch on Mailutils.

Where the peers keep alice's mail (under ``MAILTALK_PEERS_DIR``, default
``/opt/mailtalk-peers``): ``exim/maildir/alice``, ``opensmtpd/maildir/alice``,
``mailutils/spool/alice`` (which holds a seed message, ``X-Mailtalk-Seed: 1``,
put back by every ``scripts/real-servers start``).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.interop.clients import client_env, mailtalk_command
from tests.interop.conftest import Peer

pytestmark = pytest.mark.interop

TIMEOUT = 15
PEERS_DIR = Path(os.environ.get("MAILTALK_PEERS_DIR") or "/opt/mailtalk-peers")
SEED_SUBJECT = "mailtalk seed message"


def maildir(peer: Peer) -> Path:
    """alice's Maildir on ``peer`` (see scripts/real-servers)."""
    where = {
        "Exim": PEERS_DIR / "exim" / "maildir",
        "OpenSMTPD": PEERS_DIR / "opensmtpd" / "maildir",
        "GNU Mailutils": PEERS_DIR / "mailutils" / "spool",
    }[peer.name]
    return where / peer.user


def take_delivered(peer: Peer, subject: str, timeout: float = 20.0) -> bytes:
    """The message with ``subject`` delivered to alice on ``peer``, removed from her Maildir."""
    folder = maildir(peer)
    needle = f"Subject: {subject}".encode()
    deadline = time.monotonic() + timeout
    while True:
        for sub in ("new", "cur"):
            directory = folder / sub
            for path in directory.iterdir() if directory.is_dir() else ():
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                if needle in data:
                    path.unlink(missing_ok=True)
                    return data
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with subject {subject!r} in {folder}")
        time.sleep(0.1)


def unique_subject(what: str) -> str:
    return f"mailtalk rig {what} {uuid.uuid4().hex[:12]}"


def first_line(peer: Peer, port_name: str, tls: bool = False) -> bytes:
    """The greeting line of ``peer``'s port, over verified TLS when ``tls``."""
    port = peer.port(port_name)
    with socket.create_connection((peer.host, port), timeout=TIMEOUT) as raw:
        sock: socket.socket = raw
        if tls:
            # Verified by address: the certificate's SAN has the peer's IP.
            sock = peer.ssl_context().wrap_socket(raw, server_hostname=peer.host)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.rstrip(b"\r\n")


def verified_context(peer: Peer) -> ssl.SSLContext:
    context = peer.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


# ================================================================ Exim 4.96


@pytest.mark.parametrize("port_name", ["smtp", "smtp_trusting", "submission"])
def test_exim_plain_ports_greet_and_offer_starttls_then_auth(exim: Peer, port_name: str) -> None:
    assert re.fullmatch(rb"220 exim\.test ESMTP Exim 4\.96 .+", first_line(exim, port_name))
    with smtplib.SMTP(exim.host, exim.port(port_name), timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        assert smtp.has_extn("chunking")
        assert smtp.has_extn("pipelining")
        assert not smtp.has_extn("auth")
        smtp.starttls(context=verified_context(exim))
        smtp.ehlo("client.test")
        assert not smtp.has_extn("starttls")
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert smtp.login(exim.user, exim.password)[0] == 235


def test_exim_auth_before_starttls_is_exims_own_503(exim: Peer) -> None:
    with smtplib.SMTP(exim.host, exim.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        assert smtp.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==") == (
            503,
            b"AUTH command used when not advertised",
        )


def test_exim_smtp_refuses_relaying_and_unknown_users(exim: Peer) -> None:
    with smtplib.SMTP(exim.host, exim.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("bill@isp.test")[0] == 250
        assert smtp.rcpt("linus@torvalds.org") == (550, b"relay not permitted")
        assert smtp.rcpt(f"nosuchuser@{exim.domain}") == (550, b"Unrouteable address")
        smtp.rset()  # recipients_max counts refused RCPTs too
        smtp.mail("bill@isp.test")
        assert smtp.rcpt(exim.address) == (250, b"Accepted")
        assert smtp.rcpt(f"postmaster@{exim.domain}") == (250, b"Accepted")
        assert smtp.rcpt(exim.address) == (250, b"Accepted")
        # recipients_max = 3
        assert smtp.rcpt(exim.address) == (452, b"too many recipients")
        smtp.rset()


def test_exim_trusting_port_relays_for_loopback(exim: Peer) -> None:
    with smtplib.SMTP(exim.host, exim.port("smtp_trusting"), timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("bill@isp.test")[0] == 250
        assert smtp.rcpt("linus@torvalds.org") == (250, b"Accepted")
        # Still its own domain's users only.
        assert smtp.rcpt(f"nosuchuser@{exim.domain}") == (550, b"Unrouteable address")
        smtp.rset()


def test_exim_submission_relays_only_after_auth(exim: Peer) -> None:
    with smtplib.SMTP(exim.host, exim.port("submission"), timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=verified_context(exim))
        smtp.ehlo("client.test")
        smtp.mail("bill@isp.test")
        assert smtp.rcpt("linus@torvalds.org") == (550, b"relay not permitted")
        smtp.rset()
        smtp.login(exim.user, exim.password)
        smtp.mail("bill@isp.test")
        assert smtp.rcpt("linus@torvalds.org") == (250, b"Accepted")
        smtp.rset()


def test_exim_smtps_is_implicit_tls(exim: Peer) -> None:
    assert first_line(exim, "smtps", tls=True).startswith(b"220 exim.test ESMTP Exim 4.96 ")
    with smtplib.SMTP_SSL(
        exim.host, exim.port("smtps"), timeout=TIMEOUT, context=verified_context(exim)
    ) as smtp:
        smtp.ehlo("client.test")
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert smtp.login(exim.user, exim.password)[0] == 235


def test_exim_delivers_to_alice_with_chunking(exim: Peer) -> None:
    subject = unique_subject("exim bdat")
    body = f"Subject: {subject}\r\n\r\nsent in one BDAT LAST chunk\r\n".encode()
    with smtplib.SMTP(exim.host, exim.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("bill@isp.test")
        smtp.rcpt(exim.address)
        smtp.send(f"BDAT {len(body)} LAST\r\n".encode() + body)
        code, text = smtp.getreply()
        assert code == 250, text
    delivered = take_delivered(exim, subject)
    assert b"sent in one BDAT LAST chunk" in delivered


# ================================================================ OpenSMTPD 6.8


def test_opensmtpd_greets_plain_and_refuses_foreign_and_unknown_alike(opensmtpd: Peer) -> None:
    assert first_line(opensmtpd, "smtp") == b"220 mx.test ESMTP OpenSMTPD"
    with smtplib.SMTP(opensmtpd.host, opensmtpd.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("enhancedstatuscodes")
        assert not smtp.has_extn("starttls")  # plain SMTP only (see scripts/real-servers)
        assert smtp.mail("bill@isp.test")[0] == 250
        # The same words for a foreign domain (a relay refusal) and an unknown user.
        assert smtp.rcpt("someone@example.net") == (
            550,
            b"Invalid recipient: <someone@example.net>",
        )
        assert smtp.rcpt(f"nosuchuser@{opensmtpd.domain}") == (
            550,
            f"Invalid recipient: <nosuchuser@{opensmtpd.domain}>".encode(),
        )
        code, text = smtp.rcpt(opensmtpd.address)
        assert code == 250, text
        smtp.rset()


def test_opensmtpd_delivers_to_alice(opensmtpd: Peer) -> None:
    subject = unique_subject("opensmtpd smtplib")
    with smtplib.SMTP(opensmtpd.host, opensmtpd.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail(
            "bill@isp.test",
            [opensmtpd.address],
            f"Subject: {subject}\r\n\r\nhello\r\n".encode(),
        )
    assert b"hello" in take_delivered(opensmtpd, subject)


# ================================================================ GNU Mailutils 3.15


def test_mailutils_imap_starttls_login_select_fetch(mailutils: Peer) -> None:
    assert first_line(mailutils, "imap") == b"* OK IMAP4rev1"
    with imaplib.IMAP4(mailutils.host, mailutils.port("imap"), timeout=TIMEOUT) as imap:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(ssl_context=verified_context(mailutils))
        imap.login(mailutils.user, mailutils.password)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0] or b"0") >= 1
        typ, data = imap.search(None, "HEADER", "X-Mailtalk-Seed", "1")
        assert typ == "OK" and data[0], "the seed message is missing (scripts/real-servers start)"
        number = data[0].split()[0]
        typ, fetched = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        assert SEED_SUBJECT.encode() in b"".join(
            part[1] for part in fetched if isinstance(part, tuple)
        )
        imap.logout()


def test_mailutils_imaps_is_implicit_tls(mailutils: Peer) -> None:
    assert first_line(mailutils, "imaps", tls=True) == b"* OK IMAP4rev1"
    with imaplib.IMAP4_SSL(
        mailutils.host,
        mailutils.port("imaps"),
        ssl_context=verified_context(mailutils),
        timeout=TIMEOUT,
    ) as imap:
        assert "AUTH=PLAIN" in imap.capabilities
        imap.login(mailutils.user, mailutils.password)
        typ, data = imap.list()
        assert typ == "OK" and any(b"INBOX" in line for line in data if isinstance(line, bytes))
        imap.logout()


def test_mailutils_imap_writes_response_codes_after_the_command_name(mailutils: Peer) -> None:
    """What issue 11 item 29 is about: ``NO COPY [TRYCREATE] ...``, against RFC 3501."""
    with imaplib.IMAP4_SSL(
        mailutils.host,
        mailutils.port("imaps"),
        ssl_context=verified_context(mailutils),
        timeout=TIMEOUT,
    ) as imap:
        imap.login(mailutils.user, mailutils.password)
        imap.select("INBOX", readonly=True)
        typ, data = imap.copy("1", "no-such-folder-" + uuid.uuid4().hex[:8])
        assert typ == "NO"
        assert data[0] is not None and data[0].startswith(b"COPY [TRYCREATE]"), data
        imap.logout()


def test_mailutils_pop3_stls_user_pass_list_retr(mailutils: Peer) -> None:
    assert first_line(mailutils, "pop3").startswith(b"+OK POP3 Ready <")
    pop = poplib.POP3(mailutils.host, mailutils.port("pop3"), timeout=TIMEOUT)
    try:
        capabilities = pop.capa()
        assert "STLS" in capabilities
        assert "USER" in capabilities
        pop.stls(context=verified_context(mailutils))
        assert "STLS" not in pop.capa()
        pop.user(mailutils.user)
        pop.pass_(mailutils.password)
        count, _size = pop.stat()
        assert count >= 1
        found = False
        for number in range(1, count + 1):
            lines = pop.top(number, 0)[1]
            if b"X-Mailtalk-Seed: 1" in lines:
                found = True
                assert f"Subject: {SEED_SUBJECT}".encode() in lines
        assert found, "the seed message is missing (scripts/real-servers start)"
    finally:
        pop.quit()


def test_mailutils_pop3s_is_implicit_tls(mailutils: Peer) -> None:
    assert first_line(mailutils, "pop3s", tls=True).startswith(b"+OK POP3 Ready <")
    pop = poplib.POP3_SSL(
        mailutils.host,
        mailutils.port("pop3s"),
        context=verified_context(mailutils),
        timeout=TIMEOUT,
    )
    try:
        pop.user(mailutils.user)
        pop.pass_(mailutils.password)
        assert pop.stat()[0] >= 1
        assert pop.uidl()[0].startswith(b"+OK")
    finally:
        pop.quit()


# ================================================================ mailtalk against the peers


def run_mailtalk(
    args: list[str], lines: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """``mailtalk ARGS`` in pipe mode, ``lines`` on stdin."""
    return subprocess.run(
        [*mailtalk_command(), *args],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        env=client_env(tmp_path),
        timeout=60,
        check=False,
        start_new_session=True,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def smtp_lines(peer: Peer, subject: str) -> list[str]:
    return [
        "EHLO client.test",
        "MAIL FROM:<bill@isp.test>",
        f"RCPT TO:<{peer.address}>",
        "DATA",
        "From: bill@isp.test",
        f"To: {peer.address}",
        f"Subject: {subject}",
        "",
        "first line",
        ".a line that starts with a dot",
        ".",
        "QUIT",
    ]


def test_mailtalk_delivers_to_exim_over_starttls(exim: Peer, tmp_path: Path) -> None:
    subject = unique_subject("mailtalk to exim")
    result = run_mailtalk(
        [
            "connect",
            f"smtp://{exim.host}:{exim.port('smtp')}",
            "--starttls",
            "--cafile",
            exim.cafile,
        ],
        smtp_lines(exim, subject),
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("S: 220 exim.test ESMTP Exim 4.96 ")
    assert "C: STARTTLS" in lines and "S: 220 TLS go ahead" in lines
    assert "S: 250-AUTH PLAIN LOGIN" in lines[lines.index("C: STARTTLS") :]
    assert "C: ..a line that starts with a dot" in lines
    assert any(re.fullmatch(r"S: 250 OK id=\S+", line) for line in lines), describe(result)
    assert lines[-1] == "S: 221 exim.test closing connection"
    assert "NOT verified" not in result.stderr
    delivered = take_delivered(exim, subject).decode().splitlines()
    assert "first line" in delivered
    assert ".a line that starts with a dot" in delivered


def test_mailtalk_gets_exims_relay_refusal(exim: Peer, tmp_path: Path) -> None:
    result = run_mailtalk(
        ["smtp", f"{exim.host}:{exim.port('smtp')}"],
        ["EHLO client.test", "MAIL FROM:<bill@isp.test>", "RCPT TO:<linus@torvalds.org>", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 1, describe(result)
    lines = result.stdout.splitlines()
    i = lines.index("C: RCPT TO:<linus@torvalds.org>")
    assert lines[i + 1] == "S: 550 relay not permitted"


def test_mailtalk_delivers_to_opensmtpd(opensmtpd: Peer, tmp_path: Path) -> None:
    subject = unique_subject("mailtalk to opensmtpd")
    result = run_mailtalk(
        ["smtp", f"{opensmtpd.host}:{opensmtpd.port('smtp')}"],
        smtp_lines(opensmtpd, subject),
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "S: 220 mx.test ESMTP OpenSMTPD"
    assert "S: 250 2.1.5 Destination address valid: Recipient ok" in lines
    assert any(
        re.fullmatch(r"S: 250 2\.0\.0 \w+ Message accepted for delivery", line) for line in lines
    ), describe(result)
    assert lines[-1] == "S: 221 2.0.0 Bye"
    delivered = take_delivered(opensmtpd, subject).decode().splitlines()
    assert ".a line that starts with a dot" in delivered


@pytest.mark.parametrize("port_name", ["pop3", "pop3s"])
def test_mailtalk_pop3_on_mailutils(mailutils: Peer, port_name: str, tmp_path: Path) -> None:
    port = mailutils.port(port_name)
    url = f"{port_name}://{mailutils.host}:{port}"
    args = ["connect", url, "--cafile", mailutils.cafile]
    if port_name == "pop3":
        args.append("--starttls")
    result = run_mailtalk(
        args,
        ["USER alice", f"PASS {mailutils.password}", "STAT", "LIST", "RETR 1", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("S: +OK POP3 Ready <")
    if port_name == "pop3":
        assert "C: STLS" in lines
    assert "C: PASS ***" in lines
    assert "S: +OK opened mailbox for alice" in lines
    assert any(re.fullmatch(r"S: \+OK [1-9]\d* \d+", line) for line in lines), describe(result)
    assert "C: RETR 1" in lines
    assert lines[-2:] == ["C: QUIT", "S: +OK"]
    assert mailutils.password not in result.stdout + result.stderr
    assert "NOT verified" not in result.stderr


@pytest.mark.parametrize("port_name", ["imap", "imaps"])
def test_mailtalk_imap_on_mailutils(mailutils: Peer, port_name: str, tmp_path: Path) -> None:
    port = mailutils.port(port_name)
    args = ["connect", f"{port_name}://{mailutils.host}:{port}", "--cafile", mailutils.cafile]
    if port_name == "imap":
        args.append("--starttls")
    result = run_mailtalk(
        args,
        [
            f"LOGIN alice {mailutils.password}",
            'LIST "" "*"',
            "EXAMINE INBOX",
            "SEARCH HEADER X-Mailtalk-Seed 1",
            "FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
            "LOGOUT",
        ],
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "S: * OK IMAP4rev1"
    if port_name == "imap":
        assert any(re.fullmatch(r"C: a\d+ STARTTLS", line) for line in lines), describe(result)
    assert any(re.fullmatch(r"C: a\d+ LOGIN alice \*\*\*", line) for line in lines)
    assert any(re.fullmatch(r"S: a\d+ OK LOGIN Completed", line) for line in lines)
    assert any(line.startswith("S: * LIST ") and "INBOX" in line for line in lines)
    assert any(re.fullmatch(r"S: \* SEARCH( \d+)+", line) for line in lines), describe(result)
    # Mailutils writes the header name as asked: SUBJECT.
    assert any(line.lower() == f"s: subject: {SEED_SUBJECT}" for line in lines), describe(result)
    assert mailutils.password not in result.stdout + result.stderr
    assert "NOT verified" not in result.stderr
