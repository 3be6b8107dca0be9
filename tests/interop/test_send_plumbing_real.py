"""``send`` with XCLIENT, PROXY, client TLS options and --pipe against real peers.

What the peer saw is read from the peer: Postfix's log (its ``syslog_name`` tells the
listener: ``postfix/xclient`` trusts XCLIENT from loopback, ``postfix/proxied`` reads a
PROXY header, ``postfix/ccert`` asks for a client certificate) and the Received header
of the message it delivered to alice's Maildir; Exim ``-bh`` names the address it was
given in its own EHLO reply.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import RealServers, _checked_port
from tests.interop.test_send_stop_points_real import (
    POSTFIX_LOG,
    POSTFIX_MAILDIR,
    Log,
    unique,
    wait_for_delivery,
)
from tests.interop.test_tls_client_real import CCERT_PORT, fingerprint, openssl_x509
from tests.interop.test_transports_real import PROXIED_PORT, exim_bh
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop

XCLIENT_PORT = 2502  # Postfix with smtpd_authorized_xclient_hosts=127.0.0.0/8


def delivered(marker: str) -> str:
    wait_for_delivery(POSTFIX_MAILDIR, marker)
    for path in (POSTFIX_MAILDIR / "new").iterdir():
        text = path.read_text("utf-8", "replace")
        if marker in text:
            return text
    raise AssertionError(marker)


def test_xclient_makes_postfix_see_the_client_given(real_servers: RealServers) -> None:
    _checked_port("Postfix", "XCLIENT listener", real_servers.host, XCLIENT_PORT)
    marker = unique()
    address = f"198.51.100.{random.randint(1, 254)}"
    name = f"{marker}.client.example"
    log = Log(POSTFIX_LOG)
    result = mailtalk(
        "send", "--from", f"x@{real_servers.domain}", "--to", real_servers.address,
        "--server", f"{real_servers.host}:{XCLIENT_PORT}", "--subject", marker,
        "--xclient", f"ADDR={address}", "--xclient", f"name={name}",
        "--xclient", "LOGIN=bob smith+1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # xtext: the space as +20 and the plus as +2B; then the 220 greeting, then EHLO again
    assert f"C: XCLIENT ADDR={address} NAME={name} LOGIN=bob+20smith+2B1" in result.stdout
    after = result.stdout.split("C: XCLIENT", 1)[1]
    assert re.match(r"[^\n]*\nS: 220 [^\n]*\nC: EHLO ", after), after
    queued = re.search(r"queued as (\w+)", result.stdout)
    assert queued, result.stdout
    # Postfix's queue line names the client we gave, not 127.0.0.1, and the login
    # decoded from xtext
    text = log.wait_for(lambda t: f"{queued[1]}: client=" in t)
    assert re.search(
        rf"postfix/xclient/smtpd\[\d+\]: {queued[1]}: client={re.escape(name)}\[{address}\], "
        r"sasl_method=XCLIENT, sasl_username=bob smith\+1$",
        text,
        re.MULTILINE,
    ), text
    message = delivered(marker)
    received = message.split("\nReceived: ", 1)[1].split("\n\tfor", 1)[0]
    assert f"({name} [{address}])" in received, received


def test_xclient_not_offered_is_one_line_and_exit_1(real_servers: RealServers) -> None:
    """Port 25 does not trust loopback for XCLIENT: nothing is sent, one clear line."""
    result = mailtalk(
        "send", "--from", f"x@{real_servers.domain}", "--to", real_servers.address,
        "--server", f"{real_servers.host}:{real_servers.smtp}",
        "--xclient", "ADDR=192.0.2.1",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "C: XCLIENT" not in result.stdout and "C: MAIL" not in result.stdout
    assert "did not offer XCLIENT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_xclient_bad_attribute_is_a_usage_error() -> None:
    result = mailtalk("send", "--from", "a@b.test", "--to", "c@d.test", "--xclient", "FOO=1")
    assert result.returncode == 2
    assert "FOO is not one of ADDR" in result.stderr


def test_send_proxy_from_reaches_postfix(real_servers: RealServers) -> None:
    _checked_port("Postfix", "PROXY listener", real_servers.host, PROXIED_PORT)
    marker = unique()
    client = f"198.18.{random.randint(0, 255)}.{random.randint(1, 254)}"
    log = Log(POSTFIX_LOG)
    result = mailtalk(
        "send", "--from", f"x@{real_servers.domain}", "--to", real_servers.address,
        "--server", f"{real_servers.host}:{PROXIED_PORT}", "--subject", marker,
        "--proxy-from", f"{client}:4711", "--proxy-version", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    queued = re.search(r"queued as (\w+)", result.stdout)
    assert queued, result.stdout
    text = log.wait_for(lambda t: f"{queued[1]}: client=" in t)
    assert re.search(
        rf"postfix/proxied/smtpd\[\d+\]: {queued[1]}: client=unknown\[{re.escape(client)}\]", text
    ), text
    assert f"[{client}]" in delivered(marker).split("\nReceived: ", 1)[1].split("\n", 1)[0]


@pytest.fixture
def client_certificate(tmp_path: Path) -> tuple[Path, Path, str]:
    cn = f"mailtalk-send-{unique()}"
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key, cn


def test_send_sni_cert_and_tls_dump_reach_postfix(
    real_servers: RealServers, tmp_path: Path, client_certificate: tuple[Path, Path, str]
) -> None:
    port = _checked_port("Postfix", "ccert", real_servers.host, CCERT_PORT)
    cert, key, cn = client_certificate
    dump = tmp_path / "chain.pem"
    log = Log(POSTFIX_LOG)
    result = mailtalk(
        "send", "--from", f"x@{real_servers.domain}", "--to", real_servers.address,
        "--server", f"{real_servers.host}:{port}", "--starttls", "--insecure",
        "--sni", "localhost", "--cert", str(cert), "--key", str(key),
        "--tls-dump", str(dump), "--quit-after", "tls", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Postfix saw our certificate: its subject and fingerprint in its log
    text = log.wait_for(lambda t: f"subject_CN={cn}" in t)
    assert re.search(r"postfix/ccert/smtpd\[\d+\]: .*subject_CN=" + re.escape(cn), text)
    assert fingerprint(cert).replace(":", "") in text.replace(":", "")
    # The chain Postfix sent: in the dump, and described in the JSON result
    assert openssl_x509(dump, "-subject") == openssl_x509(real_servers.cafile, "-subject")
    final = json.loads(result.stdout.strip().splitlines()[-1])
    leaf = final["tls"]["certificates"][0]
    assert leaf["sha256"] == fingerprint(real_servers.cafile)
    assert leaf["subject"] == "CN=localhost"
    assert isinstance(leaf["days_left"], int) and "not_after" in leaf and "problems" in leaf


def test_send_pipe_to_exim_bh() -> None:
    address = f"192.0.2.{random.randint(1, 254)}"
    result = mailtalk(
        "send", "--from", "bill@example.org", "--to", "alice@exim.test",
        "--pipe", exim_bh(address), "--quit-after", "rcpt",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"[{address}]" in result.stdout
    assert "S: 250 Accepted" in result.stdout


def test_diagnose_login_with_client_certificate_reaches_postfix(
    real_servers: RealServers, client_certificate: tuple[Path, Path, str]
) -> None:
    port = _checked_port("Postfix", "ccert", real_servers.host, CCERT_PORT)
    cert, key, cn = client_certificate
    log = Log(POSTFIX_LOG)
    result = mailtalk(
        "diagnose", "login", f"smtp://{real_servers.user}@{real_servers.host}:{port}",
        "--cafile", real_servers.cafile, "--cert", str(cert), "--key", str(key), "--json",
        password=real_servers.password,
    )  # fmt: skip
    report = json.loads(result.stdout)
    # this listener offers no AUTH: the verdict says so, after TLS with our certificate
    assert result.returncode == 1 and report["verdict"] == "auth_not_offered", result.stdout
    text = log.wait_for(lambda t: f"subject_CN={cn}" in t)
    assert re.search(r"postfix/ccert/smtpd\[\d+\]: .*subject_CN=" + re.escape(cn), text)
    leaf = report["facts"]["tls"]["certificates"][0]
    assert leaf["sha256"] == fingerprint(real_servers.cafile)
    assert leaf["problems"] == []  # verified against --cafile, for 127.0.0.1


def test_send_wraps_its_notes_to_80_columns_but_not_json(real_servers: RealServers) -> None:
    """Postfix's relay refusal explained (some 200 characters) and the TLS line: in
    lines of at most 80 columns when not on a terminal, ``# `` notes continued as
    ``#   ``; --json keeps each one a single string."""
    args = ["send", "--server", f"127.0.0.1:{real_servers.smtp}", "--starttls",
            "--cafile", real_servers.cafile, "--from", "bill@isp.test",
            "--to", "linus@torvalds.org"]
    result = mailtalk(*args)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    ours = [line for line in lines if not line.startswith(("S: ", "C: "))]
    assert all(len(line) <= 80 for line in ours), result.stdout
    tls = next(i for i, line in enumerate(lines) if line.startswith("# TLS: "))
    assert lines[tls + 1].startswith("#   "), result.stdout
    why = next(i for i, line in enumerate(lines) if line.startswith("  ↳ relaying denied"))
    assert lines[why + 1].startswith("    "), result.stdout
    assert "S: 554 5.7.1 <linus@torvalds.org>: Relay access denied" in lines

    events = [json.loads(line) for line in mailtalk(*args, "--json").stdout.splitlines()]
    explained = [event["text"] for event in events if event.get("dir") == "explain"]
    assert any(len(text) > 150 and "SASL-authenticated" in text for text in explained)
