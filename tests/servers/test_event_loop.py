"""`mailtalk serve` runs on uvloop when it is installed (`pip install mailtalk[fast]`),
on asyncio's loop otherwise, with MAILTALK_EVENT_LOOP=asyncio, or when a listener starts
with TLS; a real client is served the same on either."""

from __future__ import annotations

import importlib.util
import json
import os
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def serve(root: Path, *options: str, loop: str | None = None) -> tuple[subprocess.Popen[str], dict]:
    env = {k: v for k, v in os.environ.items() if k != "MAILTALK_EVENT_LOOP"}
    if loop is not None:
        env["MAILTALK_EVENT_LOOP"] = loop
    process = subprocess.Popen(
        [sys.executable, "-m", "mailtalk", "serve", "--root", str(root), "--json", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else ""
    return process, json.loads(line)


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    _, err = process.communicate(timeout=20)
    return err


@pytest.mark.parametrize("loop", [None, "asyncio"])
def test_mail_is_accepted_and_stored_on_the_loop_chosen(tmp_path: Path, loop: str | None) -> None:
    process, info = serve(
        tmp_path, "--smtp", "0", "--user", "alice:secret", "--auth-failure-delay", "0",
        loop=loop,
    )  # fmt: skip
    try:
        expected = "uvloop" if HAS_UVLOOP and loop is None else "asyncio"
        assert info["event_loop"] == expected
        port = info["listeners"][0]["port"]
        with smtplib.SMTP("localhost", port, timeout=20) as smtp:
            smtp.starttls(context=ssl.create_default_context(cafile=tmp_path / "tls" / "ca.pem"))
            smtp.login("alice", "secret")
            refused = smtp.sendmail("bob@example.test", ["alice@localhost"],
                                    b"Subject: loop\r\n\r\nhello\r\n")  # fmt: skip
        assert refused == {}
    finally:
        err = stop(process)
    stored = list((tmp_path / "mail" / "alice" / "Maildir" / "new").iterdir())
    assert len(stored) == 1 and b"hello" in stored[0].read_bytes()
    assert "Traceback" not in err


def test_an_implicit_tls_listener_keeps_asyncio_loop(tmp_path: Path) -> None:
    process, info = serve(tmp_path, "--smtp", "0", "--smtps", "0")
    try:
        assert info["event_loop"] == "asyncio"
        port = next(x["port"] for x in info["listeners"] if x["protocol"] == "smtps")
        context = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        with smtplib.SMTP_SSL("localhost", port, context=context, timeout=20) as smtp:
            assert smtp.noop()[0] == 250
    finally:
        stop(process)
