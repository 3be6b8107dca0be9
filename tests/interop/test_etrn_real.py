"""ETRN refused by real servers is explained as ETRN refused, not as an outage."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.interop.clients import client_env, mailtalk_command
from tests.interop.conftest import Peer, RealServers


def _etrn(host: str, port: int, tmp_path: Path) -> str:
    result = subprocess.run(
        [*mailtalk_command(), "smtp", f"{host}:{port}"],
        input=b"EHLO me\nETRN example.com\nQUIT\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the explanation lines go to stderr
        env=client_env(tmp_path, NO_COLOR="1"),
        timeout=60,
    )
    # an explanation wider than 80 columns continues on "#   " lines: read it as one
    lines = result.stdout.decode().replace("\n#   ", " ").splitlines()
    index = lines.index("C: ETRN example.com")
    return "\n".join(lines[index + 1 : index + 3])


def test_postfix_etrn_for_a_domain_it_does_not_flush(
    real_servers: RealServers, tmp_path: Path
) -> None:
    shown = _etrn(real_servers.host, real_servers.smtp, tmp_path)
    assert "S: 459 <example.com>: service unavailable" in shown
    assert "queue run for that domain" in shown
    assert "shutting down" not in shown and "overloaded" not in shown


def test_exim_etrn_without_an_acl_allowing_it(exim: Peer, tmp_path: Path) -> None:
    shown = _etrn(exim.host, exim.port("smtp"), tmp_path)
    assert "S: 458 Administrative prohibition" in shown
    assert "queue run for that domain" in shown
    assert "spam" not in shown
