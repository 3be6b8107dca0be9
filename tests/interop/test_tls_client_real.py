"""Client TLS options against real peers: --tls-dump and :cert on Postfix's and Dovecot's
STARTTLS (checked with `openssl x509` against their certificate file), --sni (the SNI
that `mailtalk serve` logs, sent even when connecting by IP), --cert/--key with an
encrypted key (Postfix's ccert listener logs the client certificate's subject and
SHA-256 fingerprint), --tls-max/--ciphers (what Postfix logs it negotiated), and :cert in
the REPL (pexpect)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.clients import client_env, mailtalk_command
from tests.interop.conftest import RealServers, _checked_port
from tests.interop.test_repl_real import (
    Term,
    spawn,  # noqa: F401 - the fixture
    state_home,  # noqa: F401 - the fixture
)

pytestmark = pytest.mark.interop

TIMEOUT = 30
POSTFIX_LOG = Path("/var/log/postfix.log")
CCERT_PORT = int(os.environ.get("MAILTALK_POSTFIX_CCERT_PORT", "2591"))


def run_mailtalk(
    args: list[str], lines: list[str], tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mailtalk_command(), *args],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        env=client_env(tmp_path, **env),
        timeout=TIMEOUT,
        check=False,
    )


def openssl_x509(path: Path | str, *what: str) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", *what],
        capture_output=True, text=True, check=True, timeout=TIMEOUT,
    ).stdout.strip()  # fmt: skip


def fingerprint(path: Path | str) -> str:
    """``AB:CD:...`` as `openssl x509 -fingerprint -sha256` prints it."""
    return openssl_x509(path, "-fingerprint", "-sha256").split("=", 1)[1]


def log_after(offset: int, pattern: str, timeout: float = 10.0) -> str:
    """The first line of Postfix's log past ``offset`` matching ``pattern``."""
    deadline = time.monotonic() + timeout
    while True:
        with POSTFIX_LOG.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        for line in text.splitlines():
            if re.search(pattern, line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in {POSTFIX_LOG} after {offset}:\n{text}")
        time.sleep(0.2)


def log_size() -> int:
    return POSTFIX_LOG.stat().st_size if POSTFIX_LOG.exists() else 0


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_tls_dump_is_the_peers_certificate(
    real_servers: RealServers, tmp_path: Path, protocol: str
) -> None:
    port = {"smtp": real_servers.smtp, "imap": real_servers.imap, "pop3": real_servers.pop3}
    first = {"smtp": "EHLO client.test", "imap": "a CAPABILITY", "pop3": "CAPA"}[protocol]
    dump = tmp_path / "chain.pem"
    result = run_mailtalk(
        [protocol, f"{real_servers.host}:{port[protocol]}", "--starttls",
         "--cafile", real_servers.cafile, "--sni", "localhost", "--tls-dump", str(dump)],
        [first, ":cert"], tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Postfix and Dovecot both serve the certificate scripts/real-servers made.
    assert openssl_x509(dump, "-subject") == openssl_x509(real_servers.cafile, "-subject")
    assert fingerprint(dump) == fingerprint(real_servers.cafile)
    assert dump.read_text().count("BEGIN CERTIFICATE") == 1
    # :cert shows the same fingerprint, the SANs, the key and no problem (verified).
    assert f"SHA-256: {fingerprint(real_servers.cafile)}" in result.stderr
    assert "names (SAN): localhost, 127.0.0.1" in result.stderr
    assert "key: RSA 2048 bits" in result.stderr
    assert "OCSP must-staple: no" in result.stderr
    assert "problem:" not in result.stderr


def test_cert_after_insecure_names_what_verification_would_find(
    real_servers: RealServers, tmp_path: Path
) -> None:
    dump = tmp_path / "chain.pem"
    result = run_mailtalk(
        ["smtp", f"{real_servers.host}:{real_servers.smtp}", "--starttls", "--insecure",
         "--sni", "mail.example.test", "--tls-dump", str(dump)],
        ["EHLO client.test", ":cert", "QUIT"], tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "problem: self-signed, and not among the trusted CAs" in result.stderr
    assert "problem: not for mail.example.test: it is for localhost" in result.stderr
    assert fingerprint(dump) == fingerprint(real_servers.cafile)


def test_tls_dump_written_when_verification_fails(
    real_servers: RealServers, tmp_path: Path
) -> None:
    dump = tmp_path / "chain.pem"
    result = run_mailtalk(
        ["smtp", f"{real_servers.host}:{real_servers.smtps}", "--tls", "--tls-dump", str(dump)],
        ["QUIT"], tmp_path,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert "self-signed" in result.stderr and f"its chain is in {dump}" in result.stderr
    assert fingerprint(dump) == fingerprint(real_servers.cafile)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mailtalk-chain")] == []


def test_tls_max_and_ciphers_reach_postfix(real_servers: RealServers, tmp_path: Path) -> None:
    port = _checked_port("Postfix", "ccert", real_servers.host, CCERT_PORT)  # TLS logged
    offset = log_size()
    result = run_mailtalk(
        ["smtp", f"{real_servers.host}:{port}", "--starttls",
         "--cafile", real_servers.cafile, "--tls-max", "1.2",
         "--ciphers", "ECDHE-RSA-CHACHA20-POLY1305"],
        ["EHLO client.test", "QUIT"], tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "# TLS: TLSv1.2, ECDHE-RSA-CHACHA20-POLY1305" in result.stderr
    line = log_after(offset, r"postfix/ccert/smtpd.*TLS connection established from localhost")
    assert "TLSv1.2 with cipher ECDHE-RSA-CHACHA20-POLY1305" in line


def test_client_certificate_with_encrypted_key_reaches_postfix(
    real_servers: RealServers, tmp_path: Path
) -> None:
    port = _checked_port("Postfix", "ccert", real_servers.host, CCERT_PORT)
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "2",
         "-subj", "/CN=mailtalk-ccert-test", "-keyout", str(key), "-out", str(cert),
         "-passout", "pass:hunter2"],
        check=True, capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    args = ["smtp", f"{real_servers.host}:{port}", "--starttls", "--cafile",
            real_servers.cafile, "--cert", str(cert), "--key", str(key)]  # fmt: skip
    # Without the password and no terminal: a usage error before connecting.
    refused = run_mailtalk(args, ["QUIT"], tmp_path)
    assert refused.returncode == 2
    assert "the key is encrypted; set $MAILTALK_KEY_PASSWORD" in refused.stderr
    wrong = run_mailtalk(args, ["QUIT"], tmp_path, MAILTALK_KEY_PASSWORD="wrong")
    assert wrong.returncode == 2 and "wrong password" in wrong.stderr, wrong.stderr

    offset = log_size()
    result = run_mailtalk(
        args, ["EHLO client.test", "QUIT"], tmp_path, MAILTALK_KEY_PASSWORD="hunter2"
    )
    assert result.returncode == 0, result.stderr
    line = log_after(offset, r"postfix/ccert/smtpd.*subject_CN=")
    assert "subject_CN=mailtalk-ccert-test" in line
    assert f"fingerprint={fingerprint(cert)}," in line
    assert "hunter2" not in result.stdout + result.stderr


def test_sni_sent_by_ip_reaches_the_server(
    mailtalk_servers: Callable[..., object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    servers = mailtalk_servers(smtp=None, smtps=0)
    port = servers.port("smtps")  # type: ignore[attr-defined]
    cafile = str(servers.cafile)  # type: ignore[attr-defined]
    with caplog.at_level("INFO", logger="mailtalk.servers.tls"):
        named = run_mailtalk(
            ["smtp", "--tls", f"127.0.0.1:{port}", "--cafile", cafile, "--sni", "localhost"],
            ["QUIT"], tmp_path,
        )  # fmt: skip
        plain = run_mailtalk(
            ["smtp", "--tls", f"127.0.0.1:{port}", "--cafile", cafile], ["QUIT"], tmp_path
        )
    assert named.returncode == 0 and plain.returncode == 0, named.stderr + plain.stderr
    heard = [r.getMessage() for r in caplog.records if r.name == "mailtalk.servers.tls"]
    assert heard == [
        "TLS server name (SNI) from the client: localhost",
        "TLS server name (SNI) from the client: none",
    ]


def test_cert_in_the_repl_shows_the_whole_chain(
    spawn: Callable[..., Term],  # noqa: F811 - the fixture
    mailtalk_servers: Callable[..., object]
) -> None:
    servers = mailtalk_servers(smtp=0)
    term = spawn(
        "smtp", f"localhost:{servers.port('smtp')}",  # type: ignore[attr-defined]
        "--cafile", str(servers.cafile),  # type: ignore[attr-defined]
    )  # fmt: skip
    term.expect_prompt("smtp")
    term.command("EHLO client.test", r"250 ", "smtp")
    term.sendline(":starttls")
    term.expect(r"# TLS: TLSv1\.3")
    term.expect_prompt("smtp")
    term.sendline(":cert")
    # mailtalk serve sends its certificate and the local CA: both are shown.
    term.expect(r"\[0\] leaf: CN=localhost")
    term.expect(r"names \(SAN\): localhost")
    term.expect(r"key: EC secp256r1 \(256 bits\)")
    term.expect(r"\[1\] top: CN=mailtalk local CA")
    term.expect_prompt("smtp")
    term.command("QUIT", r"221 ", "smtp")
    assert term.quit() == 0
