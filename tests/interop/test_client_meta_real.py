"""REPL and pipe mode against real peers: :starttls after HELO and :auth checking what
is offered (Postfix, Dovecot, GNU Mailutils, Exim), BDAT chunks (Postfix and Exim
advertise CHUNKING; mailtalk serve does not), :reconnect --cafile after a certificate
failure (Postfix's self-signed certificate)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.conftest import Peer, RealServers
from tests.interop.test_pipe_real import run_pipe
from tests.interop.test_repl_real import (
    Term,
    find_delivered,
    remove_quietly,
    shows_authenticated,
    spawn,  # noqa: F401 - the fixture
    state_home,  # noqa: F401 - the fixture
    toolbar,
    unique_subject,
)

pytestmark = pytest.mark.interop

Spawn = Callable[..., Term]


def sent(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("C: ")]


# ------------------------------------------------------------------ item 8: :starttls


def test_starttls_after_helo_says_ehlo_first_to_postfix(
    real_servers: RealServers, tmp_path: Path
) -> None:
    result = run_pipe(
        ["smtp", f"localhost:{real_servers.smtp}", "--cafile", real_servers.cafile],
        ["HELO client.test", ":starttls", "EHLO client.test", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = sent(result.stdout)
    assert lines[0] == "C: HELO client.test"
    assert lines[1].startswith("C: EHLO ") and lines[2] == "C: STARTTLS", lines
    assert re.search(r"# TLS: TLSv1\.[23]", result.stderr)
    assert "did not offer STARTTLS" not in result.stderr


# ------------------------------------------------------------------ item 9: :auth


def test_auth_on_postfix_port_25_uses_no_password(
    real_servers: RealServers, tmp_path: Path
) -> None:
    result = run_pipe(
        ["smtp", f"localhost:{real_servers.smtp}"],
        ["EHLO client.test", ":auth plain alice", "QUIT"],
        tmp_path,
        password=real_servers.password,
    )
    assert result.returncode == 1
    assert not any(line.startswith("C: AUTH") for line in sent(result.stdout)), result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("mailtalk:")]
    assert len(errors) == 1, result.stderr
    assert "localhost does not offer AUTH here (its EHLO reply has no AUTH line)" in errors[0]
    assert "STARTTLS" in errors[0] and "587" in errors[0]


def test_auth_on_postfix_port_25_in_the_repl_asks_nothing(
    real_servers: RealServers, spawn: Spawn  # noqa: F811 - the fixture
) -> None:
    term = spawn("smtp", f"localhost:{real_servers.smtp}")
    term.expect_prompt("smtp")
    term.sendline(":auth plain alice")
    term.expect(r"C: EHLO \S+")  # said first, since nothing was known
    term.expect(r"250 CHUNKING")
    term.expect(r"# localhost does not offer AUTH here")
    term.expect_prompt("smtp")
    assert "password for" not in term.screen.text
    assert term.quit() == 0


def test_auth_on_exim_before_tls_uses_no_password(exim: Peer, tmp_path: Path) -> None:
    result = run_pipe(
        ["smtp", f"{exim.host}:{exim.port('smtp')}"],
        ["EHLO client.test", ":auth plain alice", "QUIT"],
        tmp_path,
        password=exim.password,
    )
    assert result.returncode == 1
    assert not any(line.startswith("C: AUTH") for line in sent(result.stdout)), result.stdout
    assert f"mailtalk: {exim.host} does not offer AUTH here" in result.stderr
    assert "only after it (:starttls, then :auth)" in result.stderr


def test_pop3_auth_on_dovecot_asks_capa_before_the_password(
    real_servers: RealServers, spawn: Spawn  # noqa: F811 - the fixture
) -> None:
    term = spawn("pop3", f"localhost:{real_servers.pop3}")
    term.expect_prompt("pop3")
    term.sendline(":auth login alice")
    term.expect(r"C: CAPA")
    term.expect(r"SASL [A-Z0-9 -]*LOGIN")  # what Dovecot offers here, before TLS
    term.expect_question("password for alice: ")
    term.sendline(real_servers.password)
    term.expect(r"\+OK Logged in")
    term.expect("# authenticated as alice")
    term.expect_prompt("pop3")
    term.wait_screen(shows_authenticated, "'authenticated' in the toolbar")
    term.command("QUIT", r"\+OK Logging out", "pop3")
    assert term.quit() == 0


def test_pop3_auth_on_mailutils_without_sasl_says_what_it_offers(
    mailutils: Peer, tmp_path: Path
) -> None:
    result = run_pipe(
        ["pop3", f"{mailutils.host}:{mailutils.port('pop3')}"],
        [":auth plain alice", "QUIT"],
        tmp_path,
        password=mailutils.password,
    )
    assert result.returncode == 1
    assert sent(result.stdout) == ["C: CAPA"], result.stdout
    assert (
        f"mailtalk: {mailutils.host} does not offer AUTH (its CAPA reply has no SASL line); "
        "it offers USER and PASS; it may offer more after STLS (:starttls)"
    ) in result.stderr


# ------------------------------------------------------------------ item 10: BDAT


def bdat_lines(subject: str, to: str) -> tuple[list[str], int]:
    body = [f"Subject: {subject}", f"To: <{to}>", "", "Sent in a BDAT chunk."]
    size = sum(len(line) + 2 for line in body)
    return [f"BDAT {size} LAST", *body], size


def test_bdat_to_postfix_in_pipe_mode(real_servers: RealServers, tmp_path: Path) -> None:
    subject = unique_subject("bdat pipe")
    chunk, size = bdat_lines(subject, real_servers.address)
    result = run_pipe(
        ["smtp", f"localhost:{real_servers.smtp}", "--timeout", "10"],
        ["EHLO client.test", "MAIL FROM:<bill@isp.test>",
         f"RCPT TO:<{real_servers.address}>", *chunk, "QUIT"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(rf"S: 250 2\.0\.0 Ok: {size} bytes queued as \w+", result.stdout), (
        result.stdout
    )
    remove_quietly(find_delivered(subject))


def test_bdat_to_postfix_in_the_repl(
    real_servers: RealServers, spawn: Spawn  # noqa: F811 - the fixture
) -> None:
    subject = unique_subject("bdat repl")
    term = spawn("smtp", f"localhost:{real_servers.smtp}")
    term.expect_prompt("smtp")
    term.command("EHLO client.test", r"250 CHUNKING", "smtp")
    term.command("MAIL FROM:<bill@isp.test>", r"250 2\.1\.0 Ok", "smtp")
    term.command(f"RCPT TO:<{real_servers.address}>", r"250 2\.1\.5 Ok", "smtp")
    first = f"Subject: {subject}"
    term.sendline(f"BDAT {len(first) + 2}")
    term.expect_prompt(f"chunk ({len(first) + 2} bytes left)")
    term.command(first, rf"250 2\.0\.0 Ok: {len(first) + 2} bytes", "smtp")
    term.sendline("BDAT 9 LAST")
    term.expect_prompt("chunk (9 bytes left)")
    term.sendline("")
    term.expect_prompt("chunk (7 bytes left)")
    term.command("hello", r"250 2\.0\.0 Ok: \d+ bytes queued as \w+", "smtp")
    term.wait_screen(lambda s: "state: ready" in toolbar(s), "'state: ready' in the toolbar")
    term.command("QUIT", r"221 2\.0\.0 Bye", "smtp")
    assert term.quit() == 0
    delivered = find_delivered(subject)
    try:
        text = delivered.read_text()
        assert f"\nSubject: {subject}\n" in text and text.endswith("\n\nhello\n"), text
    finally:
        remove_quietly(delivered)


def test_bdat_to_exim(exim: Peer, tmp_path: Path) -> None:
    chunk, size = bdat_lines(unique_subject("bdat exim"), exim.address)
    result = run_pipe(
        ["smtp", f"{exim.host}:{exim.port('smtp')}", "--timeout", "10"],
        ["EHLO client.test", "MAIL FROM:<bill@isp.test>", f"RCPT TO:<{exim.address}>",
         *chunk, "QUIT"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "S: 250-CHUNKING" in result.stdout
    assert f"S: 250- {size} byte chunk, total {size}" in result.stdout
    assert re.search(r"S: 250 OK id=\S+", result.stdout), result.stdout


# ------------------------------------------------------------------ item 12: :reconnect


def test_reconnect_with_cafile_after_postfix_certificate_failure(
    real_servers: RealServers, spawn: Spawn  # noqa: F811 - the fixture
) -> None:
    term = spawn("smtp", f"localhost:{real_servers.smtp}")
    term.expect_prompt("smtp")
    term.command("EHLO client.test", r"250 CHUNKING", "smtp")
    term.sendline("STARTTLS")
    term.expect(r"220 2\.0\.0 Ready to start TLS")
    term.expect(r"# the certificate of localhost is self-signed")
    term.expect(r"# to go on: :reconnect --cafile FILE to trust the issuer, or :reconnect "
                r"--insecure to skip verification")
    term.expect_prompt("smtp")
    term.sendline(f":reconnect --cafile {real_servers.cafile}")
    term.expect(r"220 [^\n]*ESMTP")
    term.expect_prompt("smtp")
    term.sendline(":starttls")
    tls = term.expect(r"# TLS: TLSv1\.[23][^\n]*").group(0)
    assert "NOT verified" not in tls
    term.expect_prompt("smtp")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    term.command("QUIT", r"221 2\.0\.0 Bye", "smtp")
    assert term.quit() == 0


# ------------------------------------------------------------------ :open, --resolve


def test_open_from_the_reference_server_to_postfix(
    real_servers: RealServers, mailtalk_servers: Callable[..., object], tmp_path: Path
) -> None:
    ours = mailtalk_servers(smtp=0, hostname="ours.test")
    result = run_pipe(
        ["smtp", f"127.0.0.1:{ours.port('smtp')}"],  # type: ignore[attr-defined]
        ["EHLO client.test", f":open smtp://localhost:{real_servers.smtp}",
         "EHLO client.test", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "S: 250-ours.test" in result.stdout
    assert re.search(r"S: 220 \S+ ESMTP Postfix", result.stdout), result.stdout
    assert "S: 221 2.0.0 Bye" in result.stdout


def test_resolve_still_verifies_the_name_against_postfix(
    real_servers: RealServers, tmp_path: Path
) -> None:
    """--resolve changes where mailtalk connects, not which name TLS checks: Postfix's
    certificate names localhost and its addresses, not this name."""
    good = run_pipe(
        ["smtp", f"localhost:{real_servers.smtp}", "--resolve", "localhost:127.0.0.1",
         "--starttls", "--cafile", real_servers.cafile],
        ["QUIT"], tmp_path,
    )
    assert good.returncode == 0, good.stderr
    assert "NOT verified" not in good.stderr
    wrong = run_pipe(
        ["smtp", f"mx.elsewhere.test:{real_servers.smtp}",
         "--resolve", "mx.elsewhere.test:127.0.0.1", "--starttls",
         "--cafile", real_servers.cafile],
        ["QUIT"], tmp_path,
    )
    assert wrong.returncode != 0
    assert "mx.elsewhere.test" in wrong.stderr
    assert "Traceback" not in wrong.stderr
