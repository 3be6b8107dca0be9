"""The practice world, started in this process and talked to over real sockets by real
clients: every host on its own address under its own name, mail through the ISP to the
MX by the world's DNS, fetched by curl; a stranger that refuses to relay; two worlds at
once; the shared fallback layout; a restart that keeps what the learner changed."""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from mailtalk.practice.world import (
    JOURNAL_FILE,
    MARKER,
    RootError,
    World,
    WorldBusy,
    make_root,
)
from mailtalk.practice.worldmap import MAP_FILE, read_map
from tests.interop.clients import require_binary

TIMEOUT = 10.0
Start = Callable[..., World]


def first_line(address: str, port: int, tls: ssl.SSLContext | None = None) -> str:
    with socket.create_connection((address, port), timeout=TIMEOUT) as raw:
        sock = tls.wrap_socket(raw, server_hostname=address) if tls else raw
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode("utf-8", "replace").strip()


def ask_dns(world: World, name: str, rdtype: str) -> list[str]:
    server = world.spec.dns_host.name
    query = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    answer = dns.query.udp(
        query, world.address(server), port=world.port(server, "dns"), timeout=TIMEOUT
    )
    return sorted(item.to_text() for rrset in answer.answer for item in rrset)


def wait_for(check: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def maildir_messages(world: World, host: str, user: str) -> list[bytes]:
    new = world.hosts[host].root / "mail" / user / "Maildir" / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


def with_subject(world: World, host: str, user: str, subject: str) -> bytes | None:
    for data in maildir_messages(world, host, user):
        if message_from_bytes(data)["Subject"] == subject:
            return data
    return None


def tls_context(world: World) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(world.cafile))


# -- the hosts ------------------------------------------------------------------------


def test_every_host_answers_on_its_address_with_its_own_name(shared_world: World) -> None:
    world = shared_world
    tls = tls_context(world)
    addresses = {host.address for host in world.hosts.values()}
    assert len(addresses) == len(world.hosts), "one address per host"
    for name, host in world.hosts.items():
        assert host.address.startswith(f"{world.layout.block}."), (name, host.address)
        for service, port in host.ports.items():
            if service == "dns":
                assert ask_dns(world, name, "A") == [host.address]
                continue
            implicit = service in ("smtps", "pop3s", "imaps")
            line = first_line(host.address, port, tls if implicit else None)
            if service in ("smtp", "submission", "smtps"):
                assert line.startswith(f"220 {name} "), (service, line)
            elif service.startswith("pop3"):
                assert line.startswith("+OK ") and line.endswith(f"@{name}>"), (service, line)
            else:
                assert line.startswith("* OK ") and f"] {name} " in line, (service, line)


def test_the_dns_answers_for_every_zone_of_the_world(shared_world: World) -> None:
    world = shared_world
    assert ask_dns(world, "example.net", "MX") == ["10 mx.example.net."]
    assert ask_dns(world, "isp.test", "MX") == ["10 mail.isp.test."]
    assert ask_dns(world, "stranger.test", "MX") == ["10 mail.stranger.test."]
    assert ask_dns(world, "learner.test", "MX") == ["10 mail.isp.test."]
    address = world.address("mx.example.net")
    reverse = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
    assert ask_dns(world, reverse, "PTR") == ["mx.example.net."]


def test_seed_mail_waits_in_the_mailboxes(shared_world: World) -> None:
    subjects = sorted(
        message_from_bytes(data)["Subject"]
        for data in maildir_messages(shared_world, "mx.example.net", "bob")
    )
    assert subjects[:2] == ["Hello Bob", "Lunch on Friday?"]
    assert with_subject(shared_world, "mail.isp.test", "alice", "Welcome to isp.test")


def test_every_host_writes_the_one_journal(shared_world: World) -> None:
    journals = {id(shared_world.context(name).journal) for name in shared_world.hosts}
    assert journals == {id(shared_world.journal)}
    assert shared_world.journal.path == shared_world.root / JOURNAL_FILE


def test_the_map_is_written_with_this_process(shared_world: World) -> None:
    world_map = read_map(shared_world.root / MAP_FILE)
    assert world_map is not None
    assert world_map == shared_world.map
    assert {host.name for host in world_map.hosts} == set(shared_world.hosts)
    assert world_map.host("mx.example.net").ports == shared_world.hosts["mx.example.net"].ports
    assert (shared_world.root / MAP_FILE).stat().st_mode & 0o077 == 0  # passwords in it


# -- mail through the world -----------------------------------------------------------


def test_swaks_via_the_isp_reaches_the_mx_by_its_mx_record_and_curl_fetches_it(
    start: Start, tmp_path: Path
) -> None:
    swaks = require_binary("swaks")
    curl = require_binary("curl")
    world = start()
    isp, mx = world.address("mail.isp.test"), world.address("mx.example.net")
    assert not (world.hosts["mail.isp.test"].root / "control" / "smtproutes").exists()
    result = subprocess.run(
        [
            swaks,
            "--server",
            f"{isp}:{world.port('mail.isp.test', 'submission')}",
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            str(world.cafile),
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "wonderland",
            "--from",
            "alice@isp.test",
            "--to",
            "bob@example.net",
            "--header",
            "Subject: through the ISP",
            "--body",
            "hello from swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "235 " in result.stdout and "<~  250 ok " in result.stdout
    wait_for(
        lambda: with_subject(world, "mx.example.net", "bob", "through the ISP"),
        "the message in bob's Maildir on mx.example.net",
    )
    # Fetched by a POP3 client from the MX: find it among the messages.
    pop3 = f"pop3://{mx}:{world.port('mx.example.net', 'pop3')}"
    listing = subprocess.run(
        [curl, "-sS", "--user", "bob:builder", f"{pop3}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    numbers = listing[0::2]
    fetched = [
        subprocess.run(
            [curl, "-sS", "--user", "bob:builder", f"{pop3}/{number}"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        for number in numbers
    ]
    ours = [data for data in fetched if b"Subject: through the ISP" in data]
    assert len(ours) == 1, listing
    headers = message_from_bytes(ours[0]).get_all("Received")
    # Received by the MX from the ISP's own address, and by the ISP from the client
    # that authenticated over TLS.
    assert f"from mail.isp.test ([{isp}])" in headers[0] and "by mx.example.net" in headers[0]
    assert "by mail.isp.test" in headers[1] and "ESMTPSA" in headers[1]


def test_an_edited_mx_record_sends_the_next_message_elsewhere(start: Start) -> None:
    """The ISP delivers by the DNS: point example.net's MX at the stranger (a learner's
    edit of the records file) and the stranger refuses it; alice gets the bounce."""
    world = start()
    records = world.dns_records
    text = records.read_text(encoding="utf-8")
    assert "example.net      MX   10 mx.example.net" in text
    records.write_text(
        text.replace(
            "example.net      MX   10 mx.example.net", "example.net      MX   10 mail.stranger.test"
        ),
        encoding="utf-8",
    )
    wait_for(
        lambda: ask_dns(world, "example.net", "MX") == ["10 mail.stranger.test."],
        "the DNS to read the edited records",
        timeout=5,
    )
    isp = world.address("mail.isp.test")
    with smtplib.SMTP(isp, world.port("mail.isp.test", "submission"), timeout=TIMEOUT) as smtp:
        smtp.starttls(context=tls_context(world))
        smtp.login("alice", "wonderland")
        smtp.sendmail(
            "alice@isp.test", ["bob@example.net"], b"Subject: to the wrong MX\r\n\r\nhi\r\n"
        )
    bounce = wait_for(
        lambda: next(
            (
                data
                for data in maildir_messages(world, "mail.isp.test", "alice")
                if b"to the wrong MX" in data and b"mail.stranger.test" in data
            ),
            None,
        ),
        "the bounce from the stranger in alice's Maildir",
    )
    assert b"Relaying denied" in bounce  # type: ignore[operator]
    assert not with_subject(world, "mx.example.net", "bob", "to the wrong MX")


def test_a_lesson_writes_records_of_its_own_and_the_dns_answers_at_once(start: Start) -> None:
    world = start()
    assert ask_dns(world, "nomail.test", "MX") == []
    world.write_dns_section("lesson", ["nomail.test MX 0 .", "implicit.test A 127.0.0.9"])
    assert ask_dns(world, "nomail.test", "MX") == ["0 ."]
    assert ask_dns(world, "implicit.test", "A") == ["127.0.0.9"]
    world.write_dns_section("lesson", ["nomail.test MX 10 mx.example.net"])
    assert ask_dns(world, "nomail.test", "MX") == ["10 mx.example.net."]
    assert ask_dns(world, "implicit.test", "A") == []
    text = world.dns_records.read_text(encoding="utf-8")
    assert text.count("nomail.test") == 1 and "example.net      MX   10 mx.example.net" in text


def test_the_stranger_refuses_to_relay(shared_world: World) -> None:
    host = "mail.stranger.test"
    with smtplib.SMTP(
        shared_world.address(host), shared_world.port(host, "smtp"), timeout=TIMEOUT
    ) as smtp:
        smtp.ehlo("client.isp.test")
        assert smtp.mail("alice@isp.test")[0] == 250
        code, text = smtp.rcpt("bob@example.net")
        assert code == 550 and b"Relaying denied" in text, (code, text)
        assert smtp.rcpt("carol@stranger.test")[0] == 250  # its own domain: taken


# -- two worlds, layouts, restarts ----------------------------------------------------


@pytest.mark.parametrize("prefer_standard", [True, False], ids=["standard", "free"])
def test_two_worlds_at_once_do_not_collide(
    start: Start, prefer_standard: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both look at the same block first (as two users whose hashes meet would): the
    second finds it claimed and moves on, even where free ports would not clash."""
    import mailtalk.practice.world

    monkeypatch.setattr(mailtalk.practice.world, "first_block", lambda uid, root: 200)
    one = start("one", prefer_standard=prefer_standard)
    two = start("two", prefer_standard=prefer_standard)
    assert one.layout.block is not None and two.layout.block is not None
    assert one.layout.block != two.layout.block
    assert not {h.address for h in one.hosts.values()} & {h.address for h in two.hosts.values()}
    for world in (one, two):
        mx = world.hosts["mx.example.net"]
        assert first_line(mx.address, mx.ports["smtp"]).startswith("220 mx.example.net ")
        assert ask_dns(world, "mx.example.net", "A") == [mx.address]
        # one port per service, whatever it is: the MX lookup plus the SMTP port works
        assert world.layout.common_port("smtp") is not None
        assert world.context("mail.isp.test").settings.mx_port == mx.ports["smtp"]


def test_the_shared_layout_routes_by_smtproutes(start: Start) -> None:
    world = start(shared=True)
    assert {host.address for host in world.hosts.values()} == {"127.0.0.1"}
    ports = [port for host in world.hosts.values() for port in host.ports.values()]
    assert len(set(ports)) == len(ports)
    mx = world.hosts["mx.example.net"]
    routes = (world.hosts["mail.isp.test"].root / "control" / "smtproutes").read_text()
    assert f"example.net:[127.0.0.1]:{mx.ports['smtp']}" in routes.splitlines()
    with smtplib.SMTP(
        "127.0.0.1", world.port("mail.isp.test", "submission"), timeout=TIMEOUT
    ) as smtp:
        smtp.starttls(context=tls_context(world))
        smtp.login("alice", "wonderland")
        smtp.sendmail("alice@isp.test", ["bob@example.net"], b"Subject: shared\r\n\r\nhi\r\n")
    wait_for(lambda: with_subject(world, "mx.example.net", "bob", "shared"), "the message")
    assert first_line("127.0.0.1", mx.ports["smtp"]).startswith("220 mx.example.net ")


def test_a_restart_keeps_the_addresses_and_what_the_learner_changed(start: Start) -> None:
    world = start()
    block = world.layout.block
    isp_root = world.hosts["mail.isp.test"].root
    with (isp_root / "control" / "rcpthosts").open("a", encoding="utf-8") as stream:
        stream.write("edited.test\n")
    world.stop()
    again = start()
    assert again.layout.block == block
    assert "edited.test" in (isp_root / "control" / "rcpthosts").read_text().split()
    assert len(maildir_messages(again, "mx.example.net", "bob")) == 2  # no second seed
    assert ask_dns(again, "example.net", "MX") == ["10 mx.example.net."]
    with smtplib.SMTP(
        again.address("mail.isp.test"), again.port("mail.isp.test", "submission"), timeout=TIMEOUT
    ) as smtp:
        smtp.starttls(context=tls_context(again))
        assert smtp.login("alice", "wonderland")[0] == 235


def test_an_account_the_world_gained_is_added_to_a_world_made_before(start: Start) -> None:
    """A root made before an account was added to world.toml (dave, for the mbox lesson)
    gets it at the next start; a password the world already had stays as it is."""
    world = start()
    users = world.hosts["mx.example.net"].root / "control" / "users"
    lines = users.read_text().splitlines()
    kept = [line for line in lines if not line.startswith("dave:")]
    assert len(kept) == len(lines) - 1
    users.write_text("".join(line + "\n" for line in kept))  # as an older world had it
    world.stop()
    again = start()
    assert users.read_text().splitlines()[: len(kept)] == kept  # bob's hash untouched
    client = poplib.POP3(again.address("mx.example.net"), again.port("mx.example.net", "pop3"),
                         timeout=TIMEOUT)
    client.user("dave")
    assert client.pass_("postbox").startswith(b"+OK")
    client.quit()


def test_one_root_runs_one_world(start: Start, tmp_path: Path) -> None:
    start("here")
    with pytest.raises(WorldBusy, match="already runs"):
        start("here")


def test_a_folder_with_other_files_is_not_made_a_world(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(RootError, match="no practice world"):
        make_root(tmp_path)
    assert not (tmp_path / MARKER).exists()


def test_stopping_leaves_no_listener(start: Start) -> None:
    world = start()
    endpoints = [
        (h.address, p) for h in world.hosts.values() for s, p in h.ports.items() if s != "dns"
    ]
    world.stop()
    for endpoint in endpoints:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(endpoint, timeout=TIMEOUT).close()
