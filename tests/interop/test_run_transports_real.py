"""``mailtalk run`` with the connecting commands' transport and TLS options: ``--pipe``
replays a session file against ``exim -bh`` (Exim's own rules, no network), and
``--cafile``/``--sni`` reach every connect line's TLS. What the peer saw is read from
the peer: Exim's greeting names the address ``-bh`` was given, and its ``-bh``
commentary (on standard error) the RCPT it refused.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.interop.test_pipe_real import describe
from tests.interop.test_repl_real import mailtalk_command
from tests.interop.test_transports_real import exim_bh

pytestmark = pytest.mark.interop


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")}
    return subprocess.run([*mailtalk_command(), "run", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False, stdin=subprocess.DEVNULL)


def test_run_pipe_replays_against_exim_bh(tmp_path: Path) -> None:
    address = f"192.0.2.{random.randint(1, 254)}"
    script = tmp_path / "session.mt"
    script.write_text(
        "connect smtp://exim.test\n"
        "S: 220 exim.test\n"
        "C: EHLO pipe.test\n"
        f"S: 250 /Hello pipe.test \\[{address}\\]/\n"
        "C: MAIL FROM:<bill@example.org>\n"
        "S: 250\n"
        "C: RCPT TO:<alice@exim.test>\n"
        "S: 250 Accepted\n"
        "C: RCPT TO:<linus@torvalds.org>\n"
        "S: 550 relay not permitted\n"
        "C: QUIT\n"
        "S: 221\n"
    )
    result = run(["-v", "--pipe", exim_bh(address), str(script)])
    assert result.returncode == 0, describe(result)
    # Exim itself believed the client was the -bh address, and said so on the wire
    assert f"S: 250-exim.test Hello pipe.test [{address}]" in result.stdout, describe(result)
    assert "PASS " in result.stdout
    # the same file, expecting Exim to relay: it does not, and run says so
    script.write_text(script.read_text().replace("S: 550 relay not permitted", "S: 250"))
    refused = run(["--pipe", exim_bh(address), str(script)])
    assert refused.returncode == 1, describe(refused)
    assert "550 relay not permitted" in refused.stdout


def test_run_pipe_bad_command_is_a_usage_error(tmp_path: Path) -> None:
    script = tmp_path / "s.mt"
    script.write_text("connect smtp://x\nS: 220\n")
    result = run(["--pipe", "exim 'unclosed", str(script)])
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr


def test_run_cafile_and_sni_reach_the_connect_line(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    servers = mailtalk_servers(smtp=0)
    script = tmp_path / "tls.mt"
    script.write_text(
        f"connect smtp://127.0.0.1:{servers.port('smtp')}\nS: 220\n"
        "C: EHLO client.test\nS: 250\nstarttls\nC: QUIT\nS: 221\n"
    )
    cafile = str(servers.root / "tls" / "ca.pem")
    untrusted = run([str(script)])
    assert untrusted.returncode == 4, describe(untrusted)  # TLS failed: no CA
    trusted = run(["--cafile", cafile, "--sni", "localhost", str(script)])
    assert trusted.returncode == 0, describe(trusted)
    wrong_name = run(["--cafile", cafile, "--sni", "not-this-server.example", str(script)])
    assert wrong_name.returncode == 4, describe(wrong_name)
    assert "not-this-server.example" in wrong_name.stdout + wrong_name.stderr
