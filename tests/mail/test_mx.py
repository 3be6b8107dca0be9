"""``mailtalk mx`` as a real process, against the embedded DNS server (``serve --dns``).

One reference server runs the DNS and an SMTP listener on 127.0.0.1; its records
point ``probe.test``'s MX at 127.0.0.1, so ``--probe --port`` talks to it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.cli.test_cli import child_env

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))

RECORDS = """\
isp.test            MX  20 mx2.isp.test
isp.test            MX  10 mx1.isp.test
isp.test            MX  30 nowhere.isp.test
mx1.isp.test        A   127.0.0.2
mx2.isp.test        A   127.0.0.3
mx2.isp.test        AAAA ::1
bare.test           A   127.0.0.7
example.net         MX  0 .
empty.test          TXT "no mail here"
probe.test          MX  10 mx.probe.test
mx.probe.test       A   127.0.0.1
refused.test        MX  10 mx.refused.test
mx.refused.test     A   127.0.0.1
dropped.test        MX  10 mx.dropped.test
mx.dropped.test     A   127.0.0.1
bücher.test         MX  10 mx.bücher.test
mx.bücher.test      A   127.0.0.8
"""


def closed_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("mx")
    (root / "dns").mkdir()
    (root / "dns" / "records").write_text(RECORDS)
    with run_servers(root, dns=0, domains=["probe.test"]) as servers:
        yield servers


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    """An SMTP server that hangs up on EHLO."""
    root = tmp_path_factory.mktemp("mx-drop")
    with run_servers(root, faults=["smtp:ehlo=disconnect"]) as servers:
        yield servers


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    """An SMTP server that refuses in its greeting."""
    root = tmp_path_factory.mktemp("mx-refuse")
    with run_servers(root, faults=["smtp:connect=554 5.7.1 no service here"]) as servers:
        yield servers


def mx(world: RunningServers, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    resolver = f"127.0.0.1:{world.port('dns')}"
    return subprocess.run(
        [MAILTALK, "mx", "--resolver", resolver, "--timeout", "3", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )


def mx_json(world: RunningServers, *args: str) -> tuple[int, dict[str, object]]:
    done = mx(world, "--json", *args)
    assert done.stdout.count("\n") == 1, done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def test_mx_hosts_sorted_by_preference_with_addresses(world: RunningServers) -> None:
    done = mx(world, "isp.test")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "isp.test has 3 MX records"
    assert lines[1].split() == ["10", "mx1.isp.test", "127.0.0.2"]
    assert lines[2].split() == ["20", "mx2.isp.test", "127.0.0.3,", "::1"]
    assert lines[3].split()[:3] == ["30", "nowhere.isp.test", "no"]
    assert "does not exist" in lines[3]
    lesson = " ".join(done.stdout.split("resolver:")[1].split())
    assert "the sender's mail server looks up these records" in lesson
    assert "to mx1.isp.test" in lesson  # the lesson names the first MX
    assert "\x1b[" not in done.stdout  # a pipe gets plain text


def test_json(world: RunningServers) -> None:
    status, document = mx_json(world, "isp.test")
    assert status == 0
    assert document["status"] == "ok"
    assert document["deliverable"] is True
    assert document["exit"] == 0
    hosts = document["hosts"]
    assert isinstance(hosts, list)
    assert [h["host"] for h in hosts] == ["mx1.isp.test", "mx2.isp.test", "nowhere.isp.test"]
    assert hosts[1]["addresses"] == ["127.0.0.3", "::1"]
    assert hosts[2]["addresses"] == [] and "NXDOMAIN" in hosts[2]["error"]
    assert "probe" not in document
    assert "sender's mail server" in str(document["lesson"])


def test_an_address_is_read_as_its_domain(world: RunningServers) -> None:
    status, document = mx_json(world, "bob@isp.test")
    assert status == 0 and document["domain"] == "isp.test"


def test_implicit_mx(world: RunningServers) -> None:
    done = mx(world, "bare.test")
    assert done.returncode == 0
    assert "implicit MX" in done.stdout
    assert "bare.test (the domain itself)" in done.stdout and "127.0.0.7" in done.stdout
    _status, document = mx_json(world, "bare.test")
    assert document["status"] == "implicit"


def test_null_mx(world: RunningServers) -> None:
    done = mx(world, "example.net")
    assert done.returncode == 1
    assert "null MX (RFC 7505)" in done.stdout
    assert "bounces the message at once" in " ".join(done.stdout.split())
    status, document = mx_json(world, "example.net")
    assert (status, document["status"], document["deliverable"]) == (1, "null", False)


def test_nxdomain_exit_1(world: RunningServers) -> None:
    done = mx(world, "nobody.isp.test")
    assert done.returncode == 1
    assert "does not exist (NXDOMAIN)" in done.stdout
    assert "check the spelling" in done.stdout


def test_no_mx_and_no_address(world: RunningServers) -> None:
    status, document = mx_json(world, "empty.test")
    assert (status, document["status"]) == (1, "nodata")


def test_resolver_on_a_closed_port_times_out_exit_3(world: RunningServers) -> None:
    done = subprocess.run(
        [MAILTALK, "mx", "--resolver", f"127.0.0.1:{closed_port()}", "--timeout", "1", "isp.test"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert done.returncode == 3
    assert "did not answer within 1 s" in done.stdout
    assert "queued" in done.stdout  # what a sending server does meanwhile


def test_resolver_by_name(world: RunningServers) -> None:
    done = subprocess.run(
        [MAILTALK, "mx", "--resolver", f"localhost:{world.port('dns')}", "--json", "isp.test"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "ok"


def test_idn_name_is_asked_in_punycode(world: RunningServers) -> None:
    done = mx(world, "bücher.test")
    assert done.returncode == 0, done.stderr
    assert "xn--bcher-kva.test" in done.stdout
    assert "bücher.test" in done.stdout
    assert "127.0.0.8" in done.stdout
    _status, document = mx_json(world, "BÜCHER.test")
    assert document["domain"] == "xn--bcher-kva.test"


@pytest.mark.parametrize(
    "domain",
    ["", "two words.test", "a..b", "xn--a.test", "\u0300x.test", "-", "a_b.test", "[127.0.0.1]"],
)
def test_bad_domain_is_one_line_exit_2(world: RunningServers, domain: str) -> None:
    done = mx(world, domain)
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("mailtalk: ")


def test_bad_resolver_exit_2(world: RunningServers) -> None:
    done = mx(world, "--resolver", "127.0.0.1:99999", "isp.test")
    assert done.returncode == 2
    assert "port" in done.stderr


# --- --probe -------------------------------------------------------------------------


def test_probe_reports_banner_ehlo_starttls_certificate_and_timings(world: RunningServers) -> None:
    port = str(world.port("smtp"))
    done = mx(world, "--probe", "--port", port, "probe.test")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"mx.probe.test 127.0.0.1:{port}" in out
    assert "banner (" in out and "220 " in out
    assert "EHLO (" in out and "STARTTLS" in out
    assert "STARTTLS: works" in out
    assert "certificate: CN=localhost" in out and "expires 20" in out
    assert "NOT verified" in out and "not in your trusted CAs" in out

    status, document = mx_json(world, "--probe", "--port", port, "probe.test")
    assert status == 0
    probes = document["probe"]
    assert isinstance(probes, list) and len(probes) == 1
    probe = probes[0]
    assert probe["answered"] is True
    assert probe["banner"].startswith("220 ")
    assert "STARTTLS" in probe["ehlo"]
    assert probe["starttls_offered"] is True
    tls = probe["tls"]
    assert tls["works"] is True and tls["verified"] is False
    assert tls["subject"] == "CN=localhost" and tls["not_after"]
    assert tls["version"].startswith("TLS")
    assert "STARTTLS" not in probe["ehlo_after_tls"] and probe["ehlo_after_tls"]
    for key in ("connect_ms", "banner_ms", "ehlo_ms", "total_ms"):
        assert isinstance(probe[key], float | int) and probe[key] >= 0


def test_probe_with_cafile_trusts_the_issuer(world: RunningServers) -> None:
    """With the reference servers' CA trusted, what is left is the name: the
    certificate is for localhost, not for the MX host name."""
    port = str(world.port("smtp"))
    done = mx(world, "--probe", "--port", port, "--cafile", str(world.cafile), "probe.test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not in your trusted CAs" not in done.stdout
    assert "NOT verified" in done.stdout and "mx.probe.test" in done.stdout


def test_probe_where_nothing_listens_exit_1(world: RunningServers) -> None:
    port = str(closed_port(socket.SOCK_STREAM))
    done = mx(world, "--probe", "--port", port, "refused.test")
    assert done.returncode == 1
    assert "cannot connect" in done.stdout and "refused" in done.stdout
    _status, document = mx_json(world, "--probe", "--port", port, "refused.test")
    probe = document["probe"][0]  # type: ignore[index]
    assert probe["answered"] is False and "refused" in probe["error"]


def test_probe_of_a_server_that_hangs_up(world: RunningServers, dropping: RunningServers) -> None:
    port = str(dropping.port("smtp"))
    done = mx(world, "--probe", "--port", port, "dropped.test")
    assert done.returncode == 0  # it greeted: a sending server would try it
    assert "banner (" in done.stdout
    assert "error:" in done.stdout and "closed" in done.stdout


def test_probe_skips_a_null_mx(world: RunningServers) -> None:
    status, document = mx_json(world, "--probe", "example.net")
    assert status == 1
    assert document["probe"] == []


def test_name_outside_the_served_zones_is_refused_and_said_so(world: RunningServers) -> None:
    done = mx(world, "gmail.com")
    assert done.returncode == 3
    assert "(REFUSED)" in done.stdout and "ROOT/dns/" in done.stdout


def test_colour_when_forced(world: RunningServers) -> None:
    env = {**child_env(), "FORCE_COLOR": "1", "COLUMNS": "120"}
    env.pop("NO_COLOR")  # which wins over FORCE_COLOR (Environment.colour)
    done = subprocess.run(
        [MAILTALK, "mx", "--resolver", f"127.0.0.1:{world.port('dns')}", "isp.test"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0
    assert "\x1b[" in done.stdout
    assert "mx1.isp.test" in done.stdout and "127.0.0.3, ::1" in done.stdout


def test_probe_of_a_server_refusing_in_its_greeting(
    world: RunningServers, refusing: RunningServers
) -> None:
    port = str(refusing.port("smtp"))
    status, document = mx_json(world, "--probe", "--port", port, "refused.test")
    assert status == 1  # no MX would take a delivery attempt
    probe = document["probe"][0]  # type: ignore[index]
    assert probe["answered"] is False and probe["banner"] == "554 5.7.1 no service here"
    assert probe["ehlo"] == [] and probe["error"] is None


def test_probe_lines_fit_80_columns_on_a_pipe(world: RunningServers) -> None:
    """Not a terminal and no $COLUMNS: every line fits in 80 columns, the long ones
    (EHLO's extensions, the certificate) continued under their label."""
    port = str(world.port("smtp"))
    done = mx(world, "--probe", "--port", port, "probe.test")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    certificate = next(i for i, line in enumerate(lines) if "certificate: CN=localhost" in line)
    assert lines[certificate].startswith("  certificate: ")
    assert lines[certificate + 1].startswith("      ")  # its continuation hangs under it
    assert "expires 20" in " ".join(lines)
