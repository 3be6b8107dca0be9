"""The practice world of the course, offline: an ISP's server, the recipient domain's
server and a DNS server, all reference servers on loopback addresses.

    isp.test      MX 10 mx.isp.test      mx.isp.test      A 127.0.0.2   (alice's ISP)
    example.net   MX 10 mx.example.net   mx.example.net   A 127.0.0.3   (bob's domain)

``mailtalk send`` without --server finds example.net's MX in the embedded DNS and
delivers there; ``mailtalk diagnose relay`` tells talking to the recipient's MX from
talking to the ISP's server, with the DNS as evidence.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.mail.test_send_diagnose import mailtalk
from tests.peers import Expect, ScriptedPeer

RECORDS = """\
isp.test MX 10 mx.isp.test
mx.isp.test A 127.0.0.2
example.net MX 10 mx.example.net
mx.example.net A 127.0.0.3
isp.test TXT "v=spf1 ip4:127.0.0.2 -all"
nullmx.test MX 0 .
bare.test A 127.0.0.3
mx.test MX 10 mail.mx.test
mail.mx.test A 127.0.0.1
"""


@pytest.fixture
def world(mailtalk_servers: Callable[..., Any]) -> dict[str, Any]:
    dns_root = Path(tempfile.mkdtemp(prefix="mt-dns-"))
    (dns_root / "dns").mkdir()
    (dns_root / "dns" / "records").write_text(RECORDS)
    dns = mailtalk_servers(root=dns_root, dns=0)
    resolver = f"127.0.0.1:{dns.port('dns')}"
    recipient_side = mailtalk_servers(
        listen="127.0.0.3", smtp=0, users=[("bob", "secret")], domains=["example.net"],
        resolver=resolver,
    )
    # the ISP's server relays for its users and delivers onward to the MX it finds
    isp = mailtalk_servers(
        listen="127.0.0.2", smtp=0, submission=0, users=[("alice", "secret")],
        domains=["isp.test"], resolver=resolver, onward_delivery=True,
        mx_port=recipient_side.port("smtp"), retry_schedule=(0.2,),
    )
    return {"dns": resolver, "isp": isp, "example": recipient_side}


def bob_messages(world: dict[str, Any]) -> list[Path]:
    new = Path(world["example"].root) / "mail" / "bob" / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_send_delivers_via_the_mx_found_in_dns(world: dict[str, Any]) -> None:
    result = mailtalk(
        "send", "--from", "alice@isp.test", "--to", "bob@example.net", "--resolver",
        world["dns"], "--mx-port", str(world["example"].port("smtp")), "--subject", "via MX",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# MX of example.net: example.net has 1 MX record" in result.stdout
    assert "mx.example.net 127.0.0.3" in result.stdout
    assert len(bob_messages(world)) == 1
    assert b"Subject: via MX" in bob_messages(world)[0].read_bytes()


def test_send_to_a_null_mx_or_missing_domain(world: dict[str, Any]) -> None:
    for domain, word in (("nullmx.test", "null MX"), ("nowhere.test", "does not exist")):
        result = mailtalk("send", "--from", "alice@isp.test", "--to", f"x@{domain}",
                          "--resolver", world["dns"], "--timeout", "5")
        assert result.returncode == 3, result.stdout + result.stderr
        assert word in result.stderr


def test_send_to_a_missing_domain_says_so_once(world: dict[str, Any]) -> None:
    result = mailtalk("send", "--from", "alice@isp.test", "--to", "x@nowhere.test",
                      "--resolver", world["dns"], "--timeout", "5")
    assert result.returncode == 3, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert output.count("nowhere.test does not exist (NXDOMAIN)") == 1, output
    assert result.stderr.startswith("mailtalk: x@nowhere.test: nowhere.test does not exist")


def test_diagnose_relay_at_the_recipients_mx_needs_no_relaying(world: dict[str, Any]) -> None:
    result = mailtalk(
        "diagnose", "relay", "--json", "--from", "alice@isp.test", "--to", "bob@example.net",
        "--server", f"127.0.0.3:{world['example'].port('smtp')}", "--resolver", world["dns"],
    )
    report = json.loads(result.stdout)
    assert (result.returncode, report["verdict"]) == (0, "mx_accepts"), report
    assert report["facts"]["server_is_mx"] is True


def test_diagnose_relay_at_the_isp_without_auth(world: dict[str, Any]) -> None:
    result = mailtalk(
        "diagnose", "relay", "--json", "--from", "alice@isp.test", "--to", "bob@example.net",
        "--server", f"127.0.0.2:{world['isp'].port('smtp')}", "--resolver", world["dns"],
        "--cafile", str(world["isp"].cafile),
    )
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["verdict"].startswith("relay_denied_needs_auth"), report
    assert report["facts"]["server_is_mx"] is False
    assert any("is not an MX of example.net" in line for line in report["evidence"])


def test_diagnose_relay_unknown_user_at_the_mx_is_not_relaying(world: dict[str, Any]) -> None:
    result = mailtalk(
        "diagnose", "relay", "--json", "--from", "alice@isp.test", "--to", "nobody@example.net",
        "--server", f"127.0.0.3:{world['example'].port('smtp')}", "--resolver", world["dns"],
    )
    report = json.loads(result.stdout)
    assert (result.returncode, report["verdict"]) == (1, "mx_refuses"), report
    assert "not about relaying" in report["summary"]


def test_diagnose_sender_with_the_embedded_dns(world: dict[str, Any]) -> None:
    ok = json.loads(mailtalk("diagnose", "sender", "--json", "--from", "alice@isp.test",
                             "--resolver", world["dns"]).stdout)
    assert ok["verdict"] == "sender_ok" and ok["facts"]["spf"]
    missing = mailtalk("diagnose", "sender", "--json", "--from", "me@nowhere.test",
                       "--resolver", world["dns"])
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["verdict"] == "sender_domain_missing"
    null = json.loads(mailtalk("diagnose", "sender", "--json", "--from", "me@nullmx.test",
                               "--resolver", world["dns"]).stdout)
    assert null["verdict"] == "sender_null_mx"
    implicit = json.loads(mailtalk("diagnose", "sender", "--json", "--from", "me@bare.test",
                                   "--resolver", world["dns"]).stdout)
    assert implicit["verdict"] == "sender_ok" and "implicit MX" in implicit["summary"]


def test_the_whole_path_client_to_isp_to_mx(world: dict[str, Any]) -> None:
    """The course's picture: the MUA hands the message to its ISP's server (AUTH on
    submission), which finds example.net's MX in DNS and hands it on."""
    import time

    isp = world["isp"]
    result = mailtalk(
        "send", "--from", "alice@isp.test", "--to", "bob@example.net", "--server",
        f"127.0.0.2:{isp.port('submission')}", "--starttls", "--auth", "alice", "--cafile",
        str(isp.cafile), "--subject", "through the ISP", password="secret",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 20
    while not bob_messages(world) and time.monotonic() < deadline:
        time.sleep(0.1)
    (message,) = bob_messages(world)
    data = message.read_bytes()
    assert b"Subject: through the ISP" in data
    assert b"127.0.0.2" in data  # B's Received line names the ISP's server


# OpenSMTPD 6.8's own bytes (mx.test on 127.0.0.5:2525 in the test rig): it words the
# refusal of a foreign domain's recipient exactly as that of an unknown user.
OPENSMTPD_EHLO = (
    b"250-mx.test Hello vm.local [127.0.0.1], pleased to meet you\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-SIZE 36700160\r\n250-DSN\r\n250 HELP\r\n"
)


def opensmtpd(recipient: str) -> list[object]:
    return [
        b"220 mx.test ESMTP OpenSMTPD\r\n", Expect(b"EHLO"), OPENSMTPD_EHLO,
        Expect(b"MAIL FROM:"), b"250 2.0.0 Ok\r\n",
        Expect(b"RCPT TO:"), f"550 Invalid recipient: <{recipient}>\r\n".encode(),
        Expect(b"RSET"), b"250 2.0.0 Reset state\r\n", Expect(b"QUIT"), b"221 2.0.0 Bye\r\n",
    ]


def test_an_unknown_recipient_from_a_server_that_is_not_the_mx_is_a_relay_refusal(
    world: dict[str, Any],
) -> None:
    with ScriptedPeer(opensmtpd("someone@example.net")) as peer:
        result = mailtalk(
            "diagnose", "relay", "--json", "--from", "alice@isp.test", "--to",
            "someone@example.net", "--server", f"127.0.0.1:{peer.port}", "--resolver",
            world["dns"], "--timeout", "5",
        )
    report = json.loads(result.stdout)
    assert (result.returncode, report["verdict"]) == (1, "relay_denied_no_auth"), report
    assert any("is not an MX of example.net" in line for line in report["evidence"])
    assert any(
        line.strip().startswith("↳ a relay refusal, whatever the words")
        for line in report["evidence"]
    ), report["evidence"]
    assert not any("No mailbox with that name" in line for line in report["evidence"])


def test_the_same_words_from_the_domains_own_mx_mean_no_such_user(
    world: dict[str, Any],
) -> None:
    with ScriptedPeer(opensmtpd("nobody@mx.test")) as peer:
        result = mailtalk(
            "diagnose", "relay", "--json", "--from", "alice@isp.test", "--to",
            "nobody@mx.test", "--server", f"127.0.0.1:{peer.port}", "--resolver",
            world["dns"], "--timeout", "5",
        )
    report = json.loads(result.stdout)
    assert (result.returncode, report["verdict"]) == (1, "mx_refuses"), report
    assert "no such recipient" in report["summary"]
    assert not any("relay refusal" in line for line in report["evidence"])
