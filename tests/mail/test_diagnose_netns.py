"""``mailtalk diagnose relay`` from another host: the open-relay finding end to end.

From the server's own host nothing tells an open relay from a server that trusts that
host, so ``diagnose relay`` claims an open relay (exit 7) only for a client outside the
server's host and network. Here that client is real: two network namespaces joined by
a veth pair (tests/netns.py), the server host at 44.1.1.1 and the client host at
45.2.2.2, both global addresses in different /24s, reaching nothing but each other
(in IPv6, 2a01:4f8::1 and 2a02:1::2, in different /48s).

    server host (44.1.1.1)                       client host (45.2.2.2 or 44.1.1.2)
    mailtalk serve --listen 44.1.1.1             mailtalk diagnose relay
      SMTP on 25, DNS on 53 (ROOT/dns/records)     --server 44.1.1.1 --resolver 44.1.1.1:53
      --check-sender-domain, --resolver itself

The server's own DNS needs (the sender-domain check) and the client's MX lookup both go
to the server's embedded DNS, so nothing waits for a resolver the namespaces cannot
reach. Runs as root with iproute2; skips otherwise, and fails instead under
``MAILTALK_REQUIRE_REAL_SERVERS=1`` (CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.cli.test_cli import child_env
from tests.mail.test_send_diagnose import MAILTALK
from tests.netns import Host, namespaces, two_hosts

SERVER = "44.1.1.1"
OUTSIDER = "45.2.2.2"  # another /24: outside the server's host and network
NEIGHBOUR = "44.1.1.2"  # the server's /24: a network it may plausibly trust
SERVER6, OUTSIDER6 = "2a01:4f8::1", "2a02:1::2"  # global, in different /48s
RECORDS = """\
isp.test MX 10 mx.isp.test
mx.isp.test {kind} {server}
elsewhere.test MX 10 mx.elsewhere.test
mx.elsewhere.test A 46.3.3.3
"""
SENDER, RECIPIENT = "bob@isp.test", "carol@elsewhere.test"
TIMEOUT = 60.0


@dataclass
class World:
    server: Host
    client: Host
    root: Path
    log: Path

    def diagnose(
        self, *extra: str, password: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``mailtalk diagnose relay`` run on the client host."""
        env = child_env()
        env.pop("MAILTALK_PASSWORD", None)
        if password is not None:
            env["MAILTALK_PASSWORD"] = password
        return subprocess.run(
            self.client.command(
                MAILTALK, "diagnose", "relay", "--from", SENDER, "--to", RECIPIENT,
                "--server", bracketed(self.server.address), "--resolver",
                f"{bracketed(self.server.address)}:53",
                "--timeout", "5", "--cafile", str(self.root / "tls" / "ca.pem"), *extra,
            ),
            capture_output=True, text=True, timeout=TIMEOUT, env=env, stdin=subprocess.DEVNULL,
        )

    def json(self, *extra: str, password: str | None = None) -> tuple[int, dict[str, Any]]:
        result = self.diagnose("--json", *extra, password=password)
        assert result.stderr == "", result.stderr
        return result.returncode, json.loads(result.stdout)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")


def bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _read_line(process: subprocess.Popen[bytes], log: Path) -> bytes:
    assert process.stdout is not None
    fd, line = process.stdout.fileno(), b""
    deadline = time.monotonic() + TIMEOUT
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(fd, 1) if ready else b""
        if not chunk:
            raise AssertionError(
                f"mailtalk serve gave no --json line: {line!r}\n{log.read_text(errors='replace')}"
            )
        line += chunk
    return line


@contextlib.contextmanager
def world(
    tmp_path: Path, relayclients: str, client: str, server: str = SERVER
) -> Iterator[World]:
    """The reference server on the server host at ``server``, relaying for
    ``relayclients`` (qmail's tcprules via control/relayclients), and a client host at
    ``client``."""
    root = tmp_path / "server-root"
    (root / "control").mkdir(parents=True)
    (root / "control" / "relayclients").write_text(relayclients + "\n")
    (root / "dns").mkdir()
    kind = "AAAA" if ":" in server else "A"
    (root / "dns" / "records").write_text(RECORDS.format(kind=kind, server=server))
    log = tmp_path / "serve.log"
    with two_hosts(server, client) as (server_host, client_host), log.open("wb") as errors:
        process = subprocess.Popen(
            server_host.command(
                MAILTALK, "serve", "--root", str(root), "--listen", server, "--smtp", "25",
                "--dns", "53", "--domain", "isp.test", "--user", "alice:secret",
                "--resolver", f"{bracketed(server)}:53", "--check-sender-domain", "--json", "-v",
            ),
            stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, env=child_env(),
        )
        try:
            info = json.loads(_read_line(process, log))
            assert {(x["protocol"], x["host"], x["port"]) for x in info["listeners"]} == {
                ("smtp", server, 25), ("dns", server, 53)
            }
            yield World(server_host, client_host, root, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()


@pytest.mark.parametrize(
    ("server", "client", "everyone"),
    [(SERVER, OUTSIDER, "0.0.0.0/0"), (SERVER6, OUTSIDER6, "::/0")],
    ids=["ipv4", "ipv6"],
)
def test_a_server_relaying_for_any_address_is_an_open_relay_seen_from_outside(
    tmp_path: Path, server: str, client: str, everyone: str
) -> None:
    """relayclients 0.0.0.0/0 or ::/0 (tcprules' empty prefix: every client may relay),
    asked from another host in another network (45.2.2.2 for 44.1.1.1, another /48 in
    IPv6): the open-relay finding, exit 7."""
    with world(tmp_path, everyone, client, server) as w:
        code, report = w.json()
        assert (code, report["verdict"]) == (7, "open_relay"), report
        assert report["security"].startswith("OPEN RELAY: "), report
        assert f"for {client}, an address outside its host and its network" in (
            report["summary"]
        )
        assert f"relays without AUTH for: {client}" in report["evidence"]
        assert f"{bracketed(server)}:25 is not an MX of elsewhere.test: it would have to relay" in (
            " ".join(report["evidence"])
        )
        assert not any("DATA" in str(line) for line in report["facts"]["transcript"])

        text = w.diagnose()
        assert text.returncode == 7, text.stdout + text.stderr
        assert text.stderr == ""
        lines = text.stdout.splitlines()
        assert any(line.startswith("SECURITY: OPEN RELAY: ") for line in lines), text.stdout
        assert "open relay" in " ".join(line.strip() for line in lines[:5])
        assert all(len(line) <= 80 for line in lines), text.stdout
        # the server saw the client from outside, not over loopback
        assert f"connect from {client} on smtp" in w.server_log()


def test_a_server_trusting_only_its_network_refuses_the_outsider(tmp_path: Path) -> None:
    """relayclients 44.1.1. (the server's /24): from 45.2.2.2 relaying is refused as
    for any client neither trusted by address nor authenticated; AUTH fixes it."""
    with world(tmp_path, "44.1.1.", OUTSIDER) as w:
        code, report = w.json()
        assert (code, report["verdict"]) == (1, "relay_denied_needs_auth_after_tls"), report
        assert report["security"] is None
        evidence = " ".join(report["evidence"])
        assert "Relay access denied" in evidence
        # mailtalk's own refusal, explained by mailtalk's own rules (not Postfix's)
        assert "only for clients in control/relayclients or after AUTH" in evidence
        assert "mynetworks" not in evidence
        assert "relays without AUTH" not in evidence

        code, report = w.json("--auth", "alice", password="secret")
        assert (code, report["verdict"]) == (0, "relay_denied_auth_fixes"), report
        assert report["security"] is None
        assert f"connect from {OUTSIDER} on smtp" in w.server_log()


@pytest.mark.parametrize("relayclients", ["44.1.1.", "0.0.0.0/0"])
def test_relaying_for_a_client_in_the_servers_network_is_not_called_open(
    tmp_path: Path, relayclients: str
) -> None:
    """From 44.1.1.2, in the server's own /24, relaying shows only that the server
    trusts that network, or anyone: the two cannot be told apart from there (and are
    not), so no open-relay claim and exit 0."""
    with world(tmp_path, relayclients, NEIGHBOUR) as w:
        code, report = w.json()
        assert (code, report["verdict"]) == (0, "relays_for_all_tried"), report
        assert report["security"] is None
        assert f"for this host ({NEIGHBOUR}, in its own network)" in report["summary"]
        assert "only a client outside your network can tell them apart" in report["summary"]
        assert f"connect from {NEIGHBOUR} on smtp" in w.server_log()


# --- the helper itself ------------------------------------------------------------------


def test_two_hosts_leave_nothing_behind_even_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError, match="the test failed"), two_hosts() as (server, client):
        names = {server.name, client.name}
        assert names <= set(namespaces())
        sleeper = subprocess.Popen(server.command("sleep", "300"))
        raise RuntimeError("the test failed")
    assert sleeper.wait(timeout=10) != 0  # killed with its namespace
    assert not names & set(namespaces())
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert server.interface not in links.stdout and client.interface not in links.stdout


def test_without_namespaces_it_skips_or_fails_when_real_servers_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(netns, "missing", lambda: "not running as root")
    monkeypatch.delenv("MAILTALK_REQUIRE_REAL_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not running as root"), two_hosts():
        pass
    monkeypatch.setenv("MAILTALK_REQUIRE_REAL_SERVERS", "1")
    with pytest.raises(pytest.fail.Exception, match="not running as root"), two_hosts():
        pass
