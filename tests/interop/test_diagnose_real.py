"""``mailtalk diagnose`` and ``mailtalk send`` against the real Postfix and Dovecot.

Postfix runs with smtpd_relay_restrictions = permit_mynetworks,
permit_sasl_authenticated, reject_unauth_destination (scripts/real-servers), with
AUTH on 587 only after STARTTLS. No DNS is reachable here, so the resolver is a
closed port: the diagnosis says it cannot tell whether the server is an MX and
takes it as not, which is right for these servers.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import Peer, RealServers
from tests.mail.test_send_diagnose import NO_DNS, mailtalk, outward_address

pytestmark = pytest.mark.interop


def diagnose(
    real: RealServers, port: int, *extra: str, password: str | None = None
) -> tuple[int, dict[str, Any]]:
    result = mailtalk(
        "diagnose",
        "relay",
        "--json",
        "--from",
        real.address,
        "--to",
        "bob@example.net",
        "--server",
        f"{real.host}:{port}",
        "--resolver",
        NO_DNS,
        "--timeout",
        "3",
        "--cafile",
        real.cafile,
        *extra,
        password=password,
    )
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def test_port_25_relay_access_denied_is_diagnosed(real_servers: RealServers) -> None:
    code, report = diagnose(real_servers, real_servers.smtp)
    assert code == 1
    assert report["verdict"] == "relay_denied_no_auth"
    assert any(
        "554 5.7.1 <bob@example.net>: Relay access denied" in line for line in report["evidence"]
    )
    assert any("relaying denied" in line for line in report["evidence"])
    assert any("587" in fix for fix in report["fixes"]["user"])


def test_submission_auth_only_after_starttls(real_servers: RealServers) -> None:
    code, report = diagnose(real_servers, real_servers.submission)
    assert code == 1
    assert report["verdict"] == "relay_denied_needs_auth_after_tls", report
    assert report["facts"]["auth_offered"] == []
    assert report["facts"]["auth_offered_after_starttls"]
    assert any("Must issue a STARTTLS command first" in line for line in report["evidence"])


def test_submission_with_auth_gets_past_the_relay_check(real_servers: RealServers) -> None:
    code, report = diagnose(
        real_servers,
        real_servers.submission,
        "--auth",
        real_servers.user,
        password=real_servers.password,
    )
    # Authenticated, Postfix no longer says "Relay access denied"; with no route to
    # example.net from this machine it refuses the domain itself.
    assert report["verdict"] in ("relay_denied_auth_fixes", "relay_denied_even_with_auth")
    assert any("235 2.7.0 Authentication successful" in line for line in report["evidence"])
    assert not any(
        "Relay access denied" in line
        for line in report["evidence"]
        if line.startswith("authenticated")
    )
    assert code in (0, 1)


def test_send_to_local_user_through_real_submission(real_servers: RealServers) -> None:
    result = mailtalk(
        "send",
        "--from",
        real_servers.address,
        "--to",
        real_servers.address,
        "--server",
        f"{real_servers.host}:{real_servers.submission}",
        "--starttls",
        "--auth",
        real_servers.user,
        "--cafile",
        real_servers.cafile,
        "--subject",
        "mailtalk send interop",
        password=real_servers.password,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued" in result.stdout


def test_diagnose_login_against_dovecot(real_servers: RealServers) -> None:
    url = f"pop3://{real_servers.host}:{real_servers.pop3}"
    ca = ("--cafile", real_servers.cafile)
    ok = mailtalk(
        "diagnose", "login", url, "--user", real_servers.user, "--json", *ca,
        password=real_servers.password,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["verdict"] == "ok"
    bad = mailtalk(
        "diagnose", "login", url, "--user", real_servers.user, "--json", *ca,
        password="wrong", timeout=90,
    )
    assert bad.returncode == 1 and json.loads(bad.stdout)["verdict"] == "wrong_password"


def login(url: str, cafile: str | None, password: str) -> tuple[int, dict[str, Any]]:
    result = mailtalk(
        "diagnose", "login", url, "--json", *(("--cafile", cafile) if cafile else ()),
        password=password, timeout=90,
    )
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def client_lines(report: dict[str, Any]) -> list[str]:
    return [line["text"] for line in report["facts"]["transcript"] if line["dir"] == "C"]


@pytest.mark.parametrize(("scheme", "word"), [("imap", "STARTTLS"), ("pop3", "STLS")])
def test_diagnose_login_dovecot_tls_first_user_from_the_url(
    real_servers: RealServers, scheme: str, word: str
) -> None:
    """Dovecot offers STARTTLS/STLS on 143/110: the password goes only after it."""
    port = real_servers.imap if scheme == "imap" else real_servers.pop3
    url = f"{scheme}://{real_servers.user}@{real_servers.host}:{port}"
    code, report = login(url, real_servers.cafile, real_servers.password)
    assert (code, report["verdict"]) == (0, "ok"), report
    assert report["summary"].endswith(f"(over TLS, after {word}).")
    sent = client_lines(report)
    tls_at = next(i for i, line in enumerate(sent) if line.endswith(word))
    login_at = next(i for i, line in enumerate(sent) if "LOGIN" in line or line.startswith("USER"))
    assert tls_at < login_at, sent
    # without the CA the certificate is not trusted: no password goes at all
    code, report = login(url, None, real_servers.password)
    assert (code, report["verdict"]) == (4, "tls_failed"), report
    assert not any("LOGIN" in line or line.startswith(("USER", "PASS"))
                   for line in client_lines(report))


def test_diagnose_login_smtp_auth_postfix_submission(real_servers: RealServers) -> None:
    url = f"submission://{real_servers.user}@{real_servers.host}:{real_servers.submission}"
    code, report = login(url, real_servers.cafile, real_servers.password)
    assert (code, report["verdict"]) == (0, "ok"), report
    assert any("235 2.7.0 Authentication successful" in line for line in report["evidence"])
    assert report["summary"].endswith("(over TLS, after STARTTLS).")
    code, report = login(url, real_servers.cafile, "wrong")
    assert (code, report["verdict"]) == (1, "wrong_password"), report
    assert any("535 5.7.8" in line for line in report["evidence"])


def test_diagnose_login_smtp_auth_postfix_port_25_has_none(real_servers: RealServers) -> None:
    url = f"smtp://{real_servers.user}@{real_servers.host}:{real_servers.smtp}"
    code, report = login(url, real_servers.cafile, real_servers.password)
    assert (code, report["verdict"]) == (1, "auth_not_offered"), report
    assert not any(line.startswith("AUTH") for line in client_lines(report))
    assert any("587" in fix for fix in report["fixes"]["user"])


def test_diagnose_login_smtp_auth_exim_submission(exim: Peer) -> None:
    url = f"submission://{exim.user}@{exim.host}:{exim.port('submission')}"
    code, report = login(url, exim.cafile, exim.password)
    assert (code, report["verdict"]) == (0, "ok"), report
    assert any("235 Authentication succeeded" in line for line in report["evidence"])
    code, report = login(url, exim.cafile, "wrong")
    assert (code, report["verdict"]) == (1, "wrong_password"), report


# --- the second MTAs: OpenSMTPD and Exim, with a DNS that says who is whose MX ----

DNS_RECORDS = """\
example.net MX 10 mx.example.net
mx.example.net A 127.0.0.3
mx.test MX 10 mx.test
mx.test A 127.0.0.5
"""


@pytest.fixture
def dns(mailtalk_servers: Callable[..., Any]) -> str:
    """A DNS server (mailtalk serve --dns) where example.net's MX is elsewhere and
    mx.test's MX is the OpenSMTPD of the rig."""
    root = Path(tempfile.mkdtemp(prefix="mt-dns-"))
    (root / "dns").mkdir()
    (root / "dns" / "records").write_text(DNS_RECORDS)
    return f"127.0.0.1:{mailtalk_servers(root=root, dns=0).port('dns')}"


def diagnose_peer(peer: Peer, port: str, recipient: str, dns: str) -> tuple[int, dict[str, Any]]:
    result = mailtalk(
        "diagnose", "relay", "--json", "--from", "alice@isp.test", "--to", recipient,
        "--server", f"{peer.host}:{peer.port(port)}", "--resolver", dns, "--timeout", "5",
        "--cafile", peer.cafile,
    )
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def test_opensmtpd_invalid_recipient_from_a_server_that_is_not_the_mx_is_relaying(
    opensmtpd: Peer, dns: str
) -> None:
    """OpenSMTPD refuses a foreign domain's recipient with "550 Invalid recipient",
    its words for an unknown user too: not being example.net's MX, that is its
    relay refusal."""
    code, report = diagnose_peer(opensmtpd, "smtp", "someone@example.net", dns)
    assert any(
        "550 Invalid recipient: <someone@example.net>" in line for line in report["evidence"]
    )
    assert any("127.0.0.5:2525 is not an MX of example.net" in line for line in report["evidence"])
    assert (code, report["verdict"]) == (1, "relay_denied_no_auth"), report
    assert "not a relaying question" not in report["summary"]
    assert any("a relay refusal, whatever the words" in line for line in report["evidence"])


def test_opensmtpd_as_the_mx_takes_its_own_domain(opensmtpd: Peer, dns: str) -> None:
    code, report = diagnose_peer(opensmtpd, "smtp", f"alice@{opensmtpd.domain}", dns)
    assert (code, report["verdict"]) == (0, "mx_accepts"), report
    assert report["facts"]["server_is_mx"] is True


def test_exim_trusting_127_0_0_0_8_is_not_an_open_relay(exim: Peer, dns: str) -> None:
    """relay_from_hosts = 127.0.0.0/8: Exim relays for 127.0.0.1 and 127.0.0.254. That
    is trust in loopback, not an open relay: no exit 7, and where this host has an
    outward address Exim refuses it, which shows the trust."""
    code, report = diagnose_peer(exim, "smtp_trusting", "someone@example.net", dns)
    assert code == 0 and report["security"] is None, report
    assert report["verdict"] != "open_relay"
    assert "127.0.0.1, 127.0.0.254" in report["summary"]
    outward = outward_address()
    if outward is None:
        assert report["verdict"] == "relays_for_all_tried", report
        assert "every address we could try, all in 127.0.0.0/8" in report["summary"]
    else:
        assert report["verdict"] == "trusted_client", report
        assert f"not for {outward}" in report["summary"]
        assert any(f"from {outward}" in line and "relay not permitted" in line
                   for line in report["evidence"]), report["evidence"]


def test_exim_refusing_to_relay(exim: Peer, dns: str) -> None:
    code, report = diagnose_peer(exim, "smtp", "someone@example.net", dns)
    assert code == 1, report
    assert report["verdict"] == "relay_denied_needs_auth_after_tls", report
    assert any("relay not permitted" in line for line in report["evidence"])
