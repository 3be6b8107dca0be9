"""``mailtalk serve --http`` driven from a non-Python client: Node's built-in fetch runs a
whole scenario (tests/interop/node/http_api_scenario.mjs), with swaks as the mail client,
against the real ``mailtalk serve`` binary, which asks for a bearer token. Skips without
node and swaks unless MAILTALK_REQUIRE_REAL_SERVERS=1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.interop.clients import (
    client_env,
    mailtalk_command,
    read_line,
    require_binary,
    stop_process,
)

SCENARIO = Path(__file__).resolve().parent / "node" / "http_api_scenario.mjs"
TOKEN = "node-token-0123456789abcdef"


def test_node_fetch_adds_a_user_waits_reads_deletes_and_sets_a_fault(tmp_path: Path) -> None:
    node = require_binary("node")
    require_binary("swaks")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    assert int(version.stdout.strip().lstrip("v").split(".")[0]) >= 18, "fetch needs Node 18+"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    journal = tmp_path / "journal.jsonl"
    env = client_env(tmp_path)
    process = subprocess.Popen(
        [*mailtalk_command(), "serve", "--json", "--root", str(tmp_path / "root"),
         "--smtp", "0", "--http", "0", "--http-token-file", str(token_file),
         "--journal", str(journal)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        listeners = json.loads(read_line(process, 20))["listeners"]
        ports = {x["protocol"]: x["port"] for x in listeners}
        done = subprocess.run(
            [node, str(SCENARIO), f"http://127.0.0.1:{ports['http']}", str(ports["smtp"]),
             TOKEN],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        stop_process(process)
    assert seen["waited"] == "hello from node"
    assert seen["mailer"].startswith("swaks")  # the message swaks sent, read over the API
    assert "550 5.7.1 Refused by the node test" in seen["swaks_refused"]
    assert seen["fired"] == ["smtp:rcpt=550 5.7.1 Refused by the node test"]
    assert seen["deliveries"] == 2 and seen["not_found"] == "no such resource: /api/v1/nowhere"
    # The server's own journal agrees: swaks's RCPT refused by the fault the API set.
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    assert any(
        e["event"] == "fault" and e["rule"] == "smtp:rcpt=550 5.7.1 Refused by the node test"
        for e in events
    )
    assert "node-secret-42" not in journal.read_text()
