"""``S: 250-LINE`` lines: a multi-line SMTP reply written out line by line, as RFCs do."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailtalk.knowledge.replies import parse
from mailtalk.script.expect import ExpectationError, parse_expectation
from tests.cli.test_cli import child_env

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))
EHLO = "250-mx.example greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("250-PIPELINING", True),
        ("250-SIZE *", True),
        ("2xx-size", True),
        ("250-STARTTLS", False),
        ("250-", True),  # any line of a 250 reply
        ("550-PIPELINING", False),
        ("250-8BITMIME", True),  # the last line counts too
    ],
)
def test_a_line_of_the_reply(line: str, found: bool) -> None:
    expectation = parse_expectation(line)
    assert expectation.line_of_reply
    assert expectation.matches_a_line(EHLO) is found


def test_a_line_expectation_does_not_claim_the_whole_reply() -> None:
    expectation = parse_expectation("250 8BITMIME")
    assert not expectation.line_of_reply
    assert expectation.matches(parse(EHLO, "smtp"))


def test_bad_pattern_in_a_line_expectation() -> None:
    with pytest.raises(ExpectationError):
        parse_expectation("250-/[unclosed/")


def run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MAILTALK, "run", str(path)], capture_output=True, text=True,
                          timeout=30, env=child_env())


def test_replayed_against_the_reference_server(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    servers = mailtalk_servers(smtp=0)
    script = tmp_path / "ehlo.mt"
    script.write_text(
        f"connect smtp://127.0.0.1:{servers.port('smtp')}\n"
        "S: 220\n"
        "C: EHLO client.test\n"
        "S: 250-PIPELINING\n"
        "S: 250-STARTTLS\n"
        "S: 250 *\n"
        "C: QUIT\n"
        "S: 221\n"
    )
    done = run(script)
    assert done.returncode == 0, done.stdout + done.stderr
    # PRDR: an extension the reference server does not offer
    script.write_text(script.read_text().replace("250-STARTTLS", "250-PRDR"))
    done = run(script)
    assert done.returncode == 1
    assert "expected S: 250-PRDR among the reply's lines" in done.stdout
