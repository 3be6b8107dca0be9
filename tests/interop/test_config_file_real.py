"""The config file's host aliases against the real peers: ``mailtalk send --server
ALIAS`` into Postfix's submission port, and the REPL connecting by alias to Dovecot.

Every setting of the alias shows in what the peer kept: Postfix's Received header in
the Maildir names the EHLO from the file and says ESMTPSA (STARTTLS and AUTH, from
``tls`` and ``user``), the Return-Path is the file's ``from``, and its log names the
SASL user; Dovecot's log says the login was alice's, over TLS (``tls = "tls"``, port
993, verified with the file's ``cafile``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.conftest import RealServers
from tests.interop.test_repl_real import TLS_NOTE, Term, spawn, state_home, toolbar  # noqa: F401
from tests.interop.test_send_stop_points_real import (
    POSTFIX_LOG,
    POSTFIX_MAILDIR,
    Log,
    wait_for_delivery,
)
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop

DOVECOT_LOG = Path("/var/log/dovecot.log")


def write_config(path: Path, real: RealServers, marker: str) -> Path:
    path.write_text(
        f'[hosts.work]\nserver = "localhost"\nport = {real.submission}\ntls = "starttls"\n'
        f'user = "{real.user}"\ncafile = "{real.cafile}"\nhelo = "{marker}.example"\n'
        f'from = "{marker}@{real.domain}"\n\n'
        f'[hosts.inbox]\nserver = "localhost"\nport = {real.imaps}\ntls = "tls"\n'
        f'user = "{real.user}"\ncafile = "{real.cafile}"\n'
    )
    return path


def test_send_by_alias_into_postfix(real_servers: RealServers, tmp_path: Path) -> None:
    marker = "cfg" + uuid.uuid4().hex[:12]
    config = write_config(tmp_path / "config.toml", real_servers, marker)
    log = Log(POSTFIX_LOG)
    result = mailtalk(
        "--config", str(config), "send", "--server", "work", "--to", real_servers.address,
        "--subject", marker, "--timeout", "20", password=real_servers.password,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for_delivery(POSTFIX_MAILDIR, marker)
    (path,) = [p for p in (POSTFIX_MAILDIR / "new").iterdir() if marker.encode() in p.read_bytes()]
    head = path.read_bytes().split(b"\n\n", 1)[0].decode()
    assert f"Return-Path: <{marker}@{real_servers.domain}>" in head, head
    received = re.search(r"^Received: from (\S+) \(localhost \[127\.0\.0\.1\]\)\s+by \S+ "
                         r"\(Postfix\) with (\w+)", head, re.MULTILINE)
    assert received, head
    assert received.groups() == (f"{marker}.example", "ESMTPSA"), head  # TLS and AUTH
    text = log.wait_for(lambda text: f"from=<{marker}@" in text)
    assert re.search(r"postfix/submission/smtpd\[\d+\]: \w+: client=localhost\[127\.0\.0\.1\], "
                     rf"sasl_method=PLAIN, sasl_username={real_servers.user}", text), text[-3000:]


def test_send_by_alias_a_given_option_wins_over_the_file(
    real_servers: RealServers, tmp_path: Path
) -> None:
    """--no-starttls does not exist for send; --tls (implicit) does: given with the
    alias's port, it wins over tls = "starttls" and the handshake meets a plain-text
    greeting, failing as TLS (4), not as a refused STARTTLS."""
    config = write_config(tmp_path / "config.toml", real_servers, "cfgwins")
    result = mailtalk("--config", str(config), "send", "--server", "work", "--to",
                      real_servers.address, "--tls", "--timeout", "10",
                      password=real_servers.password)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "C: STARTTLS" not in result.stdout


def test_repl_connects_by_alias_to_dovecot(
    real_servers: RealServers, spawn: Callable[..., Term], tmp_path: Path  # noqa: F811
) -> None:
    config = write_config(tmp_path / "config.toml", real_servers, "cfgrepl")
    log = Log(DOVECOT_LOG)
    term = spawn("--config", str(config), "imap", "inbox")
    term.expect(TLS_NOTE)  # tls = "tls", port 993, verified with the file's cafile
    term.expect(r"\* OK [^\n]*ready")
    term.expect_prompt("imap")
    term.wait_screen(lambda s: "  TLS on  " in toolbar(s), "TLS on in the toolbar")
    term.sendline(":auth plain")  # the user is the alias's
    term.expect_question(f"password for {real_servers.user}: ")
    term.sendline(real_servers.password)
    term.expect(r"a001 OK [^\n]*Logged in")
    term.expect_prompt("imap")
    term.command("LOGOUT", r"a002 OK", "imap")
    assert term.quit() == 0
    login = (rf"imap-login: Info: Login: user=<{real_servers.user}>, method=PLAIN, "
             r"rip=127\.0\.0\.1, lip=127\.0\.0\.1, [^\n]*\bTLS\b")
    log.wait_for(lambda text: re.search(login, text))


def test_diagnose_login_by_alias_to_dovecot(real_servers: RealServers, tmp_path: Path) -> None:
    """imaps://inbox: the alias's server, port 993, cafile and user; Dovecot's log has
    alice's login over TLS."""
    config = write_config(tmp_path / "config.toml", real_servers, "cfglogin")
    log = Log(DOVECOT_LOG)
    result = mailtalk("--config", str(config), "diagnose", "login", "imaps://inbox",
                      "--timeout", "20", password=real_servers.password)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{real_servers.user}" in result.stdout
    login = (rf"imap-login: Info: Login: user=<{real_servers.user}>, method=PLAIN, "
             r"rip=127\.0\.0\.1, lip=127\.0\.0\.1, [^\n]*\bTLS\b")
    log.wait_for(lambda text: re.search(login, text))
    # a user given with --user wins over the file's: Dovecot is asked for that one
    result = mailtalk("--config", str(config), "diagnose", "login", "imaps://inbox",
                      "--user", "nobody-cfg", "--timeout", "20", password="wrong")
    assert result.returncode == 1, result.stdout + result.stderr
    log.wait_for(lambda text: "user=<nobody-cfg>" in text)


def test_a_session_file_connects_by_alias_to_dovecot(
    real_servers: RealServers, tmp_path: Path
) -> None:
    """``connect imap://inbox`` in a session file: the alias's server, port 993 with
    implicit TLS, and cafile; Dovecot's log has the login over TLS."""
    config = write_config(tmp_path / "config.toml", real_servers, "cfgrun")
    script = tmp_path / "inbox.mt"
    script.write_text(
        "connect imap://inbox\nS: * OK *Dovecot*ready*\n"
        f"auth plain {real_servers.user}\nC: LOGOUT\nS: * BYE *\nS: OK\n"
    )
    log = Log(DOVECOT_LOG)
    result = mailtalk("--config", str(config), "run", "-v", str(script),
                      password=real_servers.password)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# connected to localhost:993" in result.stdout and "# TLS: TLSv1" in result.stdout
    login = (rf"imap-login: Info: Login: user=<{real_servers.user}>, method=PLAIN, "
             r"rip=127\.0\.0\.1, lip=127\.0\.0\.1, [^\n]*\bTLS\b")
    log.wait_for(lambda text: re.search(login, text))
    # --no-config: "inbox" is no host (nothing resolves it): could not connect
    result = mailtalk("--no-config", "run", str(script), password=real_servers.password)
    assert result.returncode == 3, result.stdout + result.stderr
