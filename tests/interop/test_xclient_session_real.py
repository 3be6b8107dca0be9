"""``:xclient`` in pipe mode and in the REPL against Postfix's XCLIENT listener.

``postfix/xclient`` (127.0.0.1:2502, scripts/real-servers) trusts XCLIENT from
loopback. What Postfix made of it is read from its own log: a relay refusal there
names the client it believes in, ``reject: RCPT from NAME[ADDR]``, not 127.0.0.1.
Port 25 does not offer XCLIENT to loopback, so there nothing is sent and completion
offers nothing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.conftest import RealServers, _checked_port
from tests.interop.test_pipe_real import run_pipe
from tests.interop.test_repl_real import (
    Term,
    clear_input,
    spawn,  # noqa: F401 - the fixture
    state_home,  # noqa: F401 - the fixture
    tab_complete,
)
from tests.interop.test_send_plumbing_real import XCLIENT_PORT
from tests.interop.test_send_stop_points_real import POSTFIX_LOG, Log, unique
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop

Spawn = Callable[..., Term]
FOREIGN = "linus@torvalds.org"  # relaying is refused: Postfix logs who asked


def client_given() -> tuple[str, str]:
    marker = unique()
    return f"198.51.100.{random.randint(1, 254)}", f"{marker}.client.example"


def refused_for(log: Log, name: str, address: str) -> str:
    """Postfix's reject line for FOREIGN from the client ``name[address]``."""
    said = f"reject: RCPT from {name}[{address}]"
    text = log.wait_for(lambda t: said in t)
    return next(line for line in text.splitlines() if said in line)


def test_xclient_in_pipe_mode_makes_postfix_see_the_client_given(
    real_servers: RealServers, tmp_path: Path
) -> None:
    _checked_port("Postfix", "XCLIENT listener", real_servers.host, XCLIENT_PORT)
    address, name = client_given()
    log = Log(POSTFIX_LOG)
    result = run_pipe(
        ["smtp", f"{real_servers.host}:{XCLIENT_PORT}"],
        [f":xclient ADDR={address} name={name} LOGIN=bob+1", "MAIL FROM:<bill@isp.test>",
         f"RCPT TO:<{FOREIGN}>", "QUIT"],
        tmp_path,
    )  # fmt: skip
    # exit 1 for the 554 (a refusal in pipe mode), and no error of mailtalk's own
    assert result.returncode == 1, result.stdout + result.stderr
    assert "mailtalk:" not in result.stderr, result.stderr
    # EHLO first (nothing was known), the XCLIENT offer checked, XCLIENT in xtext,
    # Postfix's new 220 greeting, EHLO again: all in the transcript
    assert re.search(
        rf"C: EHLO \S+\nS: 250-[^\n]*\n(S: 250-[^\n]*\n)*?S: 250-XCLIENT [^\n]*\n"
        rf"(S: 250[- ][^\n]*\n)*C: XCLIENT ADDR={re.escape(address)} NAME={re.escape(name)} "
        r"LOGIN=bob\+2B1\nS: 220 [^\n]*\nC: EHLO \S+\n",
        result.stdout,
    ), result.stdout
    assert f"S: 554 5.7.1 <{FOREIGN}>: Relay access denied" in result.stdout
    line = refused_for(log, name, address)
    assert "postfix/xclient/smtpd" in line and "[127.0.0.1]" not in line, line


def test_xclient_not_offered_in_pipe_mode_sends_nothing(
    real_servers: RealServers, tmp_path: Path
) -> None:
    result = run_pipe(
        ["smtp", f"{real_servers.host}:{real_servers.smtp}"],
        ["EHLO client.test", ":xclient ADDR=192.0.2.1", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 1
    assert "C: XCLIENT" not in result.stdout
    assert "mailtalk: the server did not offer XCLIENT in its EHLO reply" in result.stderr


def test_xclient_attribute_postfix_does_not_take_is_refused_here(
    real_servers: RealServers, tmp_path: Path
) -> None:
    result = run_pipe(
        ["smtp", f"{real_servers.host}:{XCLIENT_PORT}"], [":xclient FOO=1", "QUIT"], tmp_path
    )
    assert result.returncode == 1
    assert "C: " not in result.stdout.split("C: QUIT")[0].replace("C: EHLO", "")
    assert ":xclient 'FOO=1': FOO is not one of ADDR, NAME" in result.stderr


def test_xclient_in_the_repl_completes_what_postfix_offers_and_takes_effect(
    real_servers: RealServers, spawn: Spawn  # noqa: F811 - the fixture
) -> None:
    _checked_port("Postfix", "XCLIENT listener", real_servers.host, XCLIENT_PORT)
    address, name = client_given()
    log = Log(POSTFIX_LOG)
    term = spawn("smtp", f"{real_servers.host}:{XCLIENT_PORT}")
    term.expect_prompt("smtp")
    term.command("EHLO client.test", r"250-XCLIENT [^\n]*", "smtp")
    # the attributes Postfix advertised complete, as NAME=
    assert tab_complete(term, ":xclient AD") == "smtp> :xclient ADDR="
    clear_input(term, "smtp")
    assert tab_complete(term, f":xclient ADDR={address} NA") == (
        f"smtp> :xclient ADDR={address} NAME="
    )
    term.sendline(name)
    term.expect(rf"C: XCLIENT ADDR={re.escape(address)} NAME={re.escape(name)}")
    term.expect(r"\n220 [^\n]*Postfix")
    term.expect(r"C: EHLO \S+")
    term.expect(r"the server now treats this session as from")
    term.expect_prompt("smtp")
    term.command("MAIL FROM:<bill@isp.test>", r"250 2\.1\.0 Ok", "smtp")
    term.command(f"RCPT TO:<{FOREIGN}>", r"554 5\.7\.1", "smtp")
    term.command("QUIT", r"221", "smtp")
    assert term.quit() == 0
    assert "postfix/xclient/smtpd" in refused_for(log, name, address)


def test_xclient_completes_nothing_where_it_is_not_offered(
    real_servers: RealServers, spawn: Spawn  # noqa: F811 - the fixture
) -> None:
    term = spawn("smtp", f"localhost:{real_servers.smtp}")
    term.expect_prompt("smtp")
    term.command("EHLO client.test", r"250 CHUNKING", "smtp")
    assert tab_complete(term, ":xclient AD") == "smtp> :xclient AD"
    clear_input(term, "smtp")
    term.command("QUIT", r"221", "smtp")
    assert term.quit() == 0


def test_xclient_option_of_the_smtp_command_follows_the_first_ehlo(
    real_servers: RealServers, tmp_path: Path
) -> None:
    """``mailtalk smtp --xclient``: XCLIENT right after the EHLO typed, then EHLO again."""
    _checked_port("Postfix", "XCLIENT listener", real_servers.host, XCLIENT_PORT)
    address, name = client_given()
    log = Log(POSTFIX_LOG)
    result = run_pipe(
        ["smtp", f"{real_servers.host}:{XCLIENT_PORT}", "--xclient", f"ADDR={address}",
         "--xclient", f"NAME={name}"],
        ["EHLO client.test", "MAIL FROM:<bill@isp.test>", f"RCPT TO:<{FOREIGN}>", "QUIT"],
        tmp_path,
    )  # fmt: skip
    assert "mailtalk:" not in result.stderr, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("C: ")]
    assert lines[:3] == [
        "C: EHLO client.test", f"C: XCLIENT ADDR={address} NAME={name}", lines[2],
    ] and lines[2].startswith("C: EHLO "), lines  # fmt: skip
    assert "postfix/xclient/smtpd" in refused_for(log, name, address)


def test_xclient_option_is_for_smtp_only() -> None:
    result = mailtalk("pop3", "localhost", "--xclient", "ADDR=192.0.2.1")
    assert result.returncode == 2
    assert "--xclient is for SMTP sessions" in result.stderr
