"""Transports against real peers: ``--pipe`` to ``exim -bh``, ``unix:/path`` to a Postfix
smtpd on a Unix-domain socket, and ``--proxy-from`` to a Postfix smtpd that reads a
HAProxy PROXY header (scripts/real-servers adds both smtpd services).

What the peer saw is read from the peer: Exim's own greeting names the address ``-bh``
was given; Postfix's log names each service by its ``syslog_name``
(``postfix/unix-smtpd``, ``postfix/proxied``) and the client address it believed.
"""

from __future__ import annotations

import os
import random
import re
import stat
import uuid
from pathlib import Path

import pytest

from tests.interop.conftest import RealServers, _checked_port, _unavailable
from tests.interop.test_pipe_real import run_pipe
from tests.interop.test_send_stop_points_real import POSTFIX_LOG, POSTFIX_MAILDIR, Log

pytestmark = pytest.mark.interop

PEERS_DIR = Path(os.environ.get("MAILTALK_PEERS_DIR", "/opt/mailtalk-peers"))
EXIM_BIN = PEERS_DIR / "root" / "usr" / "sbin" / "exim4"
EXIM_CONF = PEERS_DIR / "exim" / "exim.conf"
POSTFIX_UNIX_SOCKET = Path("/var/spool/postfix/public/mailtalk-smtpd")
PROXIED_PORT = 2501  # Postfix with smtpd_upstream_proxy_protocol=haproxy


def exim_bh(address: str) -> str:
    if not (os.access(EXIM_BIN, os.X_OK) and os.access(EXIM_CONF, os.R_OK)):
        _unavailable(f"Exim is not unpacked at {EXIM_BIN} with {EXIM_CONF}")
    return f"{EXIM_BIN} -C {EXIM_CONF} -bh {address}"


def test_pipe_talks_to_exim_bh_as_to_a_socket(tmp_path: Path) -> None:
    address = f"192.0.2.{random.randint(1, 254)}"
    result = run_pipe(
        ["smtp", "--pipe", exim_bh(address)],
        [
            "EHLO pipe.test",
            "MAIL FROM:<bill@example.org>",
            "RCPT TO:<alice@exim.test>",
            "RCPT TO:<linus@torvalds.org>",
            "QUIT",
        ],
        tmp_path,
    )
    out = result.stdout
    # Exim itself says whom it believes it talks to: the address -bh was given.
    assert f"S: 250-exim.test Hello pipe.test [{address}]" in out, out
    assert "S: 250 Accepted" in out
    assert "S: 550 relay not permitted" in out
    assert "S: 221 exim.test closing connection" in out
    # Its -bh commentary and its standard error are kept apart from the protocol...
    assert "****" not in out and ">>>" not in out
    assert "# exim4 says: **** SMTP testing session as if from host" in result.stderr
    assert "rejected RCPT <linus@torvalds.org>: relay not permitted" in result.stderr
    assert "# exim4 ended (exit status 0)" in result.stderr
    assert result.returncode == 1  # a reply failed: the relay refusal


def test_pipe_reports_a_program_that_fails(tmp_path: Path) -> None:
    result = run_pipe(["smtp", "--pipe", "sh -c 'echo broken >&2; exit 3'"], ["QUIT"], tmp_path)
    assert "# sh stderr: broken" in result.stderr, result.stderr
    assert "# sh ended (exit status 3)" in result.stderr
    # the program is what closed: not "localhost", a host nobody named
    assert "mailtalk: sh closed the connection before greeting" in result.stderr
    assert result.returncode != 0


def test_pipe_names_the_program_that_does_not_answer(tmp_path: Path) -> None:
    result = run_pipe(["smtp", "--timeout", "1", "--pipe", "sh -c 'echo 220 hi; sleep 5'"],
                      ["EHLO me"], tmp_path)
    assert result.returncode == 5, result.stderr
    assert "mailtalk: no reply from sh within 1 s (--timeout)" in result.stderr


def test_pipe_runs_no_shell_and_says_a_missing_program(tmp_path: Path) -> None:
    result = run_pipe(["smtp", "--pipe", "no-such-mta -bs; true"], ["QUIT"], tmp_path)
    assert result.returncode == 3, result.stderr
    assert "cannot run no-such-mta: no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_unix_socket_to_postfix_delivers(tmp_path: Path) -> None:
    try:
        if not stat.S_ISSOCK(POSTFIX_UNIX_SOCKET.stat().st_mode):
            raise OSError
    except OSError:
        _unavailable(f"no Postfix smtpd socket at {POSTFIX_UNIX_SOCKET}")
    log = Log(POSTFIX_LOG)
    token = uuid.uuid4().hex
    result = run_pipe(
        ["smtp", f"unix:{POSTFIX_UNIX_SOCKET}"],
        [
            "EHLO unix.test",
            f"MAIL FROM:<unix-{token}@example.org>",
            "RCPT TO:<alice@mailtalk.test>",
            "DATA",
            f"Subject: unix {token}",
            "",
            "over a Unix-domain socket",
            ".",
            "QUIT",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"# connected to unix:{POSTFIX_UNIX_SOCKET}" in result.stderr
    queue_id = re.search(r"250 2\.0\.0 Ok: queued as (\w+)", result.stdout)
    assert queue_id, result.stdout
    # The unix-socket service (its own syslog_name) took this very message.
    text = log.wait_for(
        lambda t: (
            re.search(rf"postfix/unix-smtpd/smtpd\[\d+\]: {queue_id[1]}: client=", t)
            and f"{queue_id[1]}: removed" in t
        )
    )
    assert f"from=<unix-{token}@example.org>" in text
    delivered = [
        p for p in (POSTFIX_MAILDIR / "new").iterdir() if token in p.read_text("utf-8", "replace")
    ]
    assert len(delivered) == 1


@pytest.mark.parametrize("version", ["1", "2"])
def test_proxy_header_makes_postfix_see_the_client_given(
    real_servers: RealServers, version: str, tmp_path: Path
) -> None:
    _checked_port("Postfix", "PROXY listener", real_servers.host, PROXIED_PORT)
    client = f"198.18.{random.randint(0, 255)}.{random.randint(1, 254)}"
    log = Log(POSTFIX_LOG)
    result = run_pipe(
        [
            "smtp",
            f"{real_servers.host}:{PROXIED_PORT}",
            "--proxy-from",
            f"{client}:4711",
            "--proxy-version",
            version,
        ],
        ["EHLO proxy.test", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"# sent a PROXY v{version} header: client {client}:4711" in result.stderr
    text = log.wait_for(lambda t: f"disconnect from unknown[{client}]" in t)
    assert re.search(
        rf"postfix/proxied/smtpd\[\d+\]: connect from unknown\[{re.escape(client)}\]", text
    )


def test_proxy_header_postfix_refuses_a_connection_without_one(
    real_servers: RealServers, tmp_path: Path
) -> None:
    """The control: without --proxy-from this listener does not greet, so the test above
    could not pass by talking to an ordinary smtpd."""
    _checked_port("Postfix", "PROXY listener", real_servers.host, PROXIED_PORT)
    result = run_pipe(
        ["smtp", f"{real_servers.host}:{PROXIED_PORT}", "--timeout", "3"], ["QUIT"], tmp_path
    )
    assert result.returncode != 0
    assert "S: 220" not in result.stdout


def test_bad_proxy_from_is_a_usage_error(tmp_path: Path) -> None:
    result = run_pipe(["smtp", "127.0.0.1:1", "--proxy-from", "mx.example.org"], [], tmp_path)
    assert result.returncode == 2
    assert "not an IP address" in result.stderr
