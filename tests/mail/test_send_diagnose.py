"""``mailtalk send`` and ``mailtalk diagnose`` as real processes against the reference servers.

The DNS part (MX lookups) points at a closed port here, so these cases exercise what
does not need an MX: sending through --server, and the relay verdicts of a server
that is not the recipient's MX. The MX cases run against the embedded DNS server.
"""

from __future__ import annotations

import email
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import child_env

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NO_DNS = f"127.0.0.1:{closed_port()}"


def mailtalk(
    *args: str, password: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = child_env()
    env.pop("MAILTALK_PASSWORD", None)
    if password is not None:
        env["MAILTALK_PASSWORD"] = password
    return subprocess.run(
        [MAILTALK, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def start(mailtalk_servers: Callable[..., Any], relayclients: str = "", **extra: Any) -> Any:
    """SMTP and submission for isp.test (user alice), relaying for ``relayclients``."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mt-send-"))
    if relayclients:
        # written before the start: init_root keeps a file that exists
        (root / "control").mkdir()
        (root / "control" / "relayclients").write_text(relayclients + "\n")
    return mailtalk_servers(
        root=root,
        smtp=0,
        submission=0,
        users=[("alice", "secret")],
        domains=["isp.test"],
        **extra,
    )


def new_messages(running: Any, user: str) -> list[Path]:
    new = Path(running.root) / "mail" / user / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


# --- send ------------------------------------------------------------------------


def test_send_through_a_server_delivers_subject_headers_and_attachment(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    running = start(mailtalk_servers)
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached text\n")
    result = mailtalk(
        "send",
        "--from",
        "bob@isp.test",
        "--to",
        "alice@isp.test",
        "--server",
        f"127.0.0.1:{running.port('smtp')}",
        "--subject",
        "hello there",
        "--body",
        ".a line starting with a dot",
        "--header",
        "X-Test: yes",
        "--attach",
        str(attachment),
        "--resolver",
        NO_DNS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "C: MAIL FROM:<bob@isp.test>" in result.stdout
    assert result.stdout.rstrip().endswith("# accepted: alice@isp.test")
    (path,) = new_messages(running, "alice")
    message = email.message_from_bytes(path.read_bytes())
    assert message["Subject"] == "hello there" and message["X-Test"] == "yes"
    parts = list(message.walk())
    assert any(p.get_filename() == "notes.txt" for p in parts)
    body = next(p for p in parts if p.get_content_type() == "text/plain" and not p.get_filename())
    assert body.get_payload(decode=True).startswith(b".a line starting with a dot")


def test_an_attached_eml_is_message_rfc822_never_base64(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    """RFC 2046 5.2.1: a message/rfc822 body is 7bit, 8bit or binary, never encoded;
    the attached message arrives byte for byte."""
    running = start(mailtalk_servers)
    inner = (
        b"From: carol@example.net\r\nTo: bob@isp.test\r\nSubject: forwarded\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    )
    (tmp_path / "msg.eml").write_bytes(inner)
    (tmp_path / "plain.eml").write_bytes(inner.replace(b"Gr\xc3\xbc\xc3\x9fe", b"Hello"))
    result = mailtalk(
        "send", "--from", "bob@isp.test", "--to", "alice@isp.test", "--server",
        f"127.0.0.1:{running.port('smtp')}", "--attach", str(tmp_path / "msg.eml"),
        "--attach", str(tmp_path / "plain.eml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = new_messages(running, "alice")
    data = path.read_bytes()
    message = email.message_from_bytes(data)
    parts = [p for p in message.walk() if p.get_content_type() == "message/rfc822"]
    assert [p.get_filename() for p in parts] == ["msg.eml", "plain.eml"]
    assert [p["Content-Transfer-Encoding"] for p in parts] == ["8bit", "7bit"]
    assert inner.replace(b"\r\n", b"\n") in data.replace(b"\r\n", b"\n")
    assert parts[0].get_payload(0)["Subject"] == "forwarded"


def test_an_eml_that_needs_binary_is_attached_as_octet_stream_and_said(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    running = start(mailtalk_servers)
    (tmp_path / "long.eml").write_bytes(b"Subject: long\r\n\r\n" + b"x" * 1200 + b"\r\n")
    result = mailtalk(
        "send", "--from", "bob@isp.test", "--to", "alice@isp.test", "--server",
        f"127.0.0.1:{running.port('smtp')}", "--attach", str(tmp_path / "long.eml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# long.eml has NUL bytes or lines over 998 bytes" in result.stdout
    (path,) = new_messages(running, "alice")
    types = [p.get_content_type() for p in email.message_from_bytes(path.read_bytes()).walk()]
    assert "application/octet-stream" in types and "message/rfc822" not in types


def test_send_refused_is_explained_and_exit_1(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    result = mailtalk(
        "send",
        "--from",
        "bob@isp.test",
        "--to",
        "carol@elsewhere.test",
        "--server",
        f"127.0.0.1:{running.port('smtp')}",
        "--resolver",
        NO_DNS,
    )
    assert result.returncode == 1
    assert "↳ relaying denied (permanent)" in result.stdout
    assert "C: QUIT" in result.stdout  # a polite goodbye after the refusal
    assert result.stderr.startswith("mailtalk: carol@elsewhere.test: every recipient refused")


def test_send_with_starttls_and_auth_relays(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    result = mailtalk(
        "send",
        "--from",
        "alice@isp.test",
        "--to",
        "carol@elsewhere.test",
        "--server",
        f"127.0.0.1:{running.port('submission')}",
        "--starttls",
        "--auth",
        "alice",
        "--cafile",
        str(running.cafile),
        "--resolver",
        NO_DNS,
        password="secret",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "AUTH PLAIN" in result.stdout and "secret" not in result.stdout
    assert "c2VjcmV0" not in result.stdout


def test_send_auth_failure_is_exit_6(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    result = mailtalk(
        "send",
        "--from",
        "alice@isp.test",
        "--to",
        "alice@isp.test",
        "--server",
        f"127.0.0.1:{running.port('smtp')}",
        "--auth",
        "alice",
        password="wrong",
    )
    assert result.returncode == 6, result.stdout + result.stderr
    assert "authentication refused" in result.stderr


@pytest.mark.parametrize("stage", ["connect", "ehlo", "mail", "rcpt"])
def test_quit_after_sends_no_message(mailtalk_servers: Callable[..., Any], stage: str) -> None:
    running = start(mailtalk_servers)
    result = mailtalk(
        "send",
        "--from",
        "bob@isp.test",
        "--to",
        "alice@isp.test",
        "--server",
        f"127.0.0.1:{running.port('smtp')}",
        "--quit-after",
        stage,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "C: DATA" not in result.stdout and "C: QUIT" in result.stdout
    assert new_messages(running, "alice") == []


def test_send_json(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    result = mailtalk(
        "send",
        "--json",
        "--from",
        "bob@isp.test",
        "--to",
        "alice@isp.test",
        "--server",
        f"127.0.0.1:{running.port('smtp')}",
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {
        "result": "sent",
        "accepted": ["alice@isp.test"],
        "failures": [],
        "stop_after": None,
        "extensions_used": [],  # none asked for, and the message is ASCII
        "ending": "quit",
        "tls": None,  # no TLS: no chain
    }
    assert any(line.get("dir") == "C" and line["text"] == "DATA" for line in lines[:-1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "not an address", "--to", "a@b.test"], "--from 'not an address'"),
        (["--from", "a@b.test", "--to", "nobody"], "--to 'nobody'"),
        (["--from", "a@b.test", "--to", "x@exa mple.test"], "--to"),
        (["--from", "a@b.test", "--to", "x@b.test", "--header", "broken"], "--header 'broken'"),
        (["--from", "a@b.test", "--to", "x@b.test", "--starttls", "--tls"], "exclude"),
    ],
)
def test_send_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    result = mailtalk("send", *args, "--server", "127.0.0.1:9")
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_send_external_without_a_certificate_or_tls_is_one_line_exit_2(tmp_path: Path
                                                                        ) -> None:  # fmt: skip
    """EXTERNAL's identity is the client certificate, sent in a TLS handshake only."""
    cert = tmp_path / "me.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=me", "-keyout", str(cert), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    common = ["send", "--from", "a@b.test", "--to", "x@b.test", "--server", "127.0.0.1:9",
              "--auth-mechanism", "external"]  # fmt: skip
    for extra, says in (
        (["--starttls"], "--auth-mechanism external needs --cert (and --key)"),
        (["--cert", str(cert)], "--auth-mechanism external needs --starttls or --tls"),
    ):
        result = mailtalk(*common, *extra)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip().splitlines() == [f"mailtalk: {says}: " + (
            "the client certificate is the identity it logs in with" if "--cert" in says
            else "the client certificate is sent only in a TLS handshake")]


def test_send_to_a_dead_server_is_exit_3() -> None:
    result = mailtalk(
        "send",
        "--from",
        "a@b.test",
        "--to",
        "c@d.test",
        "--server",
        f"127.0.0.1:{closed_port()}",
        "--timeout",
        "2",
    )
    assert result.returncode == 3
    assert "cannot connect" in result.stderr


def test_send_without_server_and_no_dns_explains(tmp_path: Path) -> None:
    result = mailtalk(
        "send", "--from", "a@b.test", "--to", "c@d.test", "--resolver", NO_DNS, "--timeout", "2"
    )
    assert result.returncode == 3
    assert "did not answer" in result.stderr


# --- diagnose relay, the server not being the recipient's MX ------------------


def relay(
    running: Any, *extra: str, port: str = "smtp", password: str | None = None
) -> tuple[int, dict[str, Any]]:
    result = mailtalk(
        "diagnose",
        "relay",
        "--json",
        "--from",
        "bob@isp.test",
        "--to",
        "carol@elsewhere.test",
        "--server",
        f"127.0.0.1:{running.port(port)}",
        "--resolver",
        NO_DNS,
        "--timeout",
        "3",
        "--cafile",
        str(running.cafile),
        *extra,
        password=password,
    )
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def test_relay_denied_and_auth_would_fix_it(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    code, report = relay(running)
    assert code == 1
    assert report["verdict"] == "relay_denied_needs_auth"
    assert any("Relay access denied" in line for line in report["evidence"])
    code, report = relay(running, "--auth", "alice", password="secret")
    assert code == 0
    assert report["verdict"] == "relay_denied_auth_fixes"
    assert "after AUTH as alice" in report["summary"]
    assert not any("DATA" in str(line) for line in report["facts"]["transcript"])


def test_relay_auth_failure(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    code, report = relay(running, "--auth", "alice", password="wrong")
    assert (code, report["verdict"]) == (1, "auth_failed")


def test_relay_trusted_client_address(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers, relayclients="127.0.0.1")
    code, report = relay(running)
    assert (code, report["verdict"]) == (0, "trusted_client"), report
    assert report["security"] is None


def outward_address() -> str | None:
    """This host's address toward the outside (IPv4), if it has a route there."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("198.51.100.1", 9))
            return str(sock.getsockname()[0])
    except OSError:
        return None


def test_relaying_for_all_of_loopback_is_not_called_an_open_relay(
    mailtalk_servers: Callable[..., Any],
) -> None:
    """As Exim's relay_from_hosts = 127.0.0.0/8 or Debian's mynetworks: trusting every
    loopback client is no open relay. Asked also from this host's outward address
    (when it has one), the server refuses there, which shows the trust."""
    running = start(mailtalk_servers, relayclients="127.")
    code, report = relay(running)
    assert code == 0 and report["security"] is None, report
    outward = outward_address()
    if outward is None:  # a host with loopback only: all we could try is 127.0.0.0/8
        assert report["verdict"] == "relays_for_all_tried", report
        assert "every address we could try, all in 127.0.0.0/8" in report["summary"]
    else:
        assert report["verdict"] == "trusted_client", report
        assert f"not for {outward}" in report["summary"]
        assert "127.0.0.1, 127.0.0.254" in report["summary"]


def test_relaying_for_every_address_of_this_host_says_only_what_was_shown(
    mailtalk_servers: Callable[..., Any],
) -> None:
    """Any address (relayclients 0.0.0.0/0): from this host, that looks exactly like a
    server trusting this host (Postfix mynetworks_style = host, OpenSMTPD "from local"),
    so the verdict says what was shown and claims no open relay (exit 0, not 7)."""
    running = start(mailtalk_servers, relayclients="0.0.0.0/0")
    code, report = relay(running)
    assert (code, report["verdict"]) == (0, "relays_for_all_tried"), report
    assert report["security"] is None
    assert "open relay" not in report["summary"].replace("and so does an open relay", "")
    assert "cannot be told apart" in report["summary"]
    tried = ["127.0.0.1", "127.0.0.254"] + ([outward_address()] if outward_address() else [])
    assert f"({', '.join(tried)})" in report["summary"], report["summary"]


@pytest.mark.parametrize(
    ("server", "here", "tries", "verdict", "code"),
    [
        # a server elsewhere, relaying for a client outside its host and network
        ("81.2.69.160", False, [("93.184.216.34", "relays")], "open_relay", 7),
        # ...but from a private address (behind NAT, or on its LAN) it may trust us
        ("81.2.69.160", False, [("192.168.1.20", "relays")], "relays_for_all_tried", 0),
        ("10.0.0.5", False, [("10.0.0.7", "relays")], "relays_for_all_tried", 0),
        ("81.2.69.160", False, [("81.2.69.7", "relays")], "relays_for_all_tried", 0),
        # on this host: never an open relay from addresses alone
        ("127.0.0.6", True, [("127.0.0.1", "relays"), ("127.0.0.254", "relays")],
         "relays_for_all_tried", 0),
        ("127.0.0.6", True, [("127.0.0.1", "relays"), ("192.0.2.2", "refused")],
         "trusted_client", 0),
    ],
)
def test_the_open_relay_finding_needs_a_client_the_server_cannot_trust(
    server: str, here: bool, tries: list[tuple[str, str]], verdict: str, code: int
) -> None:
    from mailtalk.mail.diagnose.relay import RelayTry, relay_scope

    found = relay_scope(
        f"{server}:25", "example.net", server, here,
        [RelayTry(source, outcome, "250 ok") for source, outcome in tries],
    )
    assert (found[0], int(found[5])) == (verdict, code), found[1]
    assert (found[4] is not None) == (code == 7)


def test_relay_tls_required_first(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers, scenarios=["tls-required"])
    code, report = relay(running)
    assert code == 1
    assert report["verdict"].startswith("relay_denied_needs_auth")
    assert any("TLS required: asked again after STARTTLS" in line for line in report["evidence"])


def test_diagnose_relay_bad_addresses_exit_2() -> None:
    result = mailtalk("diagnose", "relay", "--from", "x", "--to", "y@z.test")
    assert result.returncode == 2 and result.stderr.startswith("mailtalk: --from 'x'")


# --- diagnose sender / login -----------------------------------------------------


def test_diagnose_sender_dns_down_is_exit_3() -> None:
    result = mailtalk(
        "diagnose",
        "sender",
        "--from",
        "me@example.test",
        "--resolver",
        NO_DNS,
        "--timeout",
        "1",
        "--json",
    )
    assert result.returncode == 3
    assert json.loads(result.stdout)["verdict"] == "dns_failure"


def test_diagnose_login_bad_password_and_lock(mailtalk_servers: Callable[..., Any]) -> None:
    running = mailtalk_servers(pop3=0, imap=0, users=[("alice", "secret")])
    url = f"pop3://127.0.0.1:{running.port('pop3')}"
    ca = ("--cafile", str(running.cafile))
    result = mailtalk("diagnose", "login", url, "--user", "alice", "--json", *ca,
                      password="wrong")
    assert result.returncode == 1
    assert json.loads(result.stdout)["verdict"] == "wrong_password"
    result = mailtalk("diagnose", "login", url, "--user", "alice", "--json", *ca,
                      password="secret")
    assert result.returncode == 0 and json.loads(result.stdout)["verdict"] == "ok"
    imap = f"imap://127.0.0.1:{running.port('imap')}"
    result = mailtalk("diagnose", "login", imap, "--user", "alice", *ca, password="secret")
    assert result.returncode == 0 and result.stdout.startswith("Verdict: the login as alice")


def login_report(url: str, *extra: str, password: str | None) -> tuple[int, dict[str, Any]]:
    result = mailtalk("diagnose", "login", url, "--json", "--timeout", "5", *extra,
                      password=password)
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def sent_lines(report: dict[str, Any]) -> list[str]:
    return [line["text"] for line in report["facts"]["transcript"] if line["dir"] == "C"]


# mailtalk serve offers SCRAM-SHA-256: diagnose logs in with it, as send would
@pytest.mark.parametrize(("scheme", "word", "login"), [("imap", "STARTTLS", "AUTHENTICATE"),
                                                       ("pop3", "STLS", "AUTH")])
def test_diagnose_login_takes_the_user_from_the_url_and_tls_comes_first(
    mailtalk_servers: Callable[..., Any], scheme: str, word: str, login: str
) -> None:
    running = mailtalk_servers(pop3=0, imap=0, users=[("alice", "secret")])
    url = f"{scheme}://alice@127.0.0.1:{running.port(scheme)}"
    code, report = login_report(url, "--cafile", str(running.cafile), password="secret")
    assert (code, report["verdict"]) == (0, "ok"), report
    assert report["summary"] == f"the login as alice works (over TLS, after {word})."
    words = [line.split() for line in sent_lines(report)]
    commands = [w[1] if scheme == "imap" and len(w) > 1 else w[0] for w in words]
    assert commands.index(word) < commands.index(login), commands


def test_diagnose_login_sends_no_password_when_tls_fails(
    mailtalk_servers: Callable[..., Any],
) -> None:
    running = mailtalk_servers(imap=0, users=[("alice", "secret")])
    code, report = login_report(f"imap://alice@127.0.0.1:{running.port('imap')}",
                                password="secret")
    assert (code, report["verdict"]) == (4, "tls_failed"), report
    assert "the password was not sent" in report["summary"]
    assert not any("LOGIN" in line for line in sent_lines(report)), sent_lines(report)
    assert any("--cafile" in fix for fix in report["fixes"]["user"])


def test_diagnose_login_gives_each_piece_of_advice_once(
    mailtalk_servers: Callable[..., Any],
) -> None:
    running = mailtalk_servers(pop3=0, users=[("alice", "secret")])
    code, report = login_report(f"pop3://alice@127.0.0.1:{running.port('pop3')}",
                                "--cafile", str(running.cafile), password="wrong")
    assert (code, report["verdict"]) == (1, "wrong_password"), report
    assert len(report["fixes"]["user"]) == 1 and len(report["fixes"]["admin"]) == 1
    assert not any("↳" in line for line in report["evidence"]), report["evidence"]


def test_diagnose_login_a_bare_host_is_told_urls_it_then_accepts() -> None:
    host = f"127.0.0.1:{closed_port()}"
    result = mailtalk("diagnose", "login", host, "--user", "alice", password="x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    suggested = [word.strip(",") for word in result.stderr.split() if "://" in word]
    assert suggested, result.stderr
    for url in suggested:
        again = mailtalk("diagnose", "login", url, "--user", "alice", "--timeout", "2",
                         password="x")
        assert again.returncode == 3, (url, again.stderr)  # accepted; nothing listens


def test_diagnose_login_needs_a_user_and_one_only() -> None:
    none = mailtalk("diagnose", "login", "imap://127.0.0.1:9", password="x")
    assert none.returncode == 2 and "--user NAME" in none.stderr
    both = mailtalk("diagnose", "login", "imap://bob@127.0.0.1:9", "--user", "alice",
                    password="x")
    assert both.returncode == 2 and "give one" in both.stderr


def test_diagnose_login_smtp_auth_on_submission(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    url = f"submission://alice@127.0.0.1:{running.port('submission')}"
    ca = ("--cafile", str(running.cafile))
    code, report = login_report(url, *ca, password="secret")
    assert (code, report["verdict"]) == (0, "ok"), report
    assert report["summary"].endswith("(over TLS, after STARTTLS).")
    sent = sent_lines(report)
    auth = [n for n, line in enumerate(sent) if line.startswith("AUTH SCRAM-SHA-256")]
    assert auth and sent.index("STARTTLS") < auth[0], sent  # the strongest offered
    code, report = login_report(url, *ca, password="wrong")
    assert (code, report["verdict"]) == (1, "wrong_password"), report


def test_diagnose_login_smtp_port_without_auth_says_where_to_log_in() -> None:
    from tests.peers import SMTP_GREETING, Expect, ScriptedPeer, smtp_ehlo_reply

    with ScriptedPeer([SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("PIPELINING", "8BITMIME"),
                       Expect(b"QUIT"), b"221 bye\r\n"]) as peer:
        # no password anywhere: none is needed to find that there is no AUTH
        code, report = login_report(f"smtp://alice@127.0.0.1:{peer.port}", password=None)
    assert (code, report["verdict"]) == (1, "auth_not_offered"), report
    assert "the password was not sent" in report["summary"]
    assert any("587" in fix for fix in report["fixes"]["user"])
    assert b"AUTH" not in peer.data()


def test_diagnose_login_submission_without_starttls_sends_no_password() -> None:
    from tests.peers import SMTP_GREETING, Expect, ScriptedPeer, smtp_ehlo_reply

    with ScriptedPeer([SMTP_GREETING, Expect(b"EHLO"), smtp_ehlo_reply("AUTH PLAIN LOGIN"),
                       Expect(b"QUIT"), b"221 bye\r\n"]) as peer:
        code, report = login_report(f"submission://alice@127.0.0.1:{peer.port}",
                                    password="secret")
    assert (code, report["verdict"]) == (4, "tls_not_offered"), report
    assert b"AUTH" not in peer.data()


# --- --brief, --help -------------------------------------------------------------


def test_brief_leaves_out_the_lesson(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    args = ("--from", "bob@isp.test", "--to", "carol@elsewhere.test", "--server",
            f"127.0.0.1:{running.port('smtp')}")
    relay_args = (*args, "--resolver", NO_DNS, "--timeout", "3")
    full = mailtalk("diagnose", "relay", *relay_args)
    brief = mailtalk("diagnose", "relay", *relay_args, "--brief")
    assert full.returncode == brief.returncode == 1
    assert "What to do" in full.stdout and "What to do" not in brief.stdout
    assert brief.stdout.startswith("Verdict:") and "\nEvidence\n" in brief.stdout
    assert brief.stdout == full.stdout[: len(brief.stdout)]
    sent = mailtalk("send", *args, "--brief")
    assert sent.returncode == 1 and "S: 554 5.7.1" in sent.stdout
    assert "↳" not in sent.stdout
    assert "↳" in mailtalk("send", *args).stdout


def test_brief_mx_has_no_lesson() -> None:
    full = mailtalk("mx", "--resolver", NO_DNS, "--timeout", "1", "example.test")
    brief = mailtalk("mx", "--resolver", NO_DNS, "--timeout", "1", "--brief", "example.test")
    assert full.returncode == brief.returncode == 3
    assert "mail server" in full.stdout and "mail server" not in brief.stdout
    assert brief.stdout.splitlines()[0] == full.stdout.splitlines()[0]


@pytest.mark.parametrize("command", ["relay", "login", "sender"])
def test_diagnose_help_has_examples_and_exit_statuses(command: str) -> None:
    result = mailtalk("diagnose", command, "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout and "Exit status:" in result.stdout
    assert "--brief" in result.stdout
    if command != "sender":
        assert "Trust the CA certificates" in result.stdout  # what --cafile is for
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_relay_auth_only_after_starttls(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers, tls_auth_only=True)
    code, report = relay(running)
    assert (code, report["verdict"]) == (1, "relay_denied_needs_auth_after_tls"), report
    assert report["facts"]["auth_offered"] == []
    # the passwords given with --user are known in clear: SCRAM and CRAM-MD5 too
    assert report["facts"]["auth_offered_after_starttls"] == [
        "PLAIN", "LOGIN", "SCRAM-SHA-256", "CRAM-MD5"
    ]
    assert "STARTTLS, EHLO again, then AUTH" in report["fixes"]["user"][0]
    code, report = relay(running, "--auth", "alice", password="secret")
    assert (code, report["verdict"]) == (0, "relay_denied_auth_fixes"), report


def test_send_to_a_server_that_drops_the_connection_is_exit_5(
    mailtalk_servers: Callable[..., Any],
) -> None:
    running = start(mailtalk_servers, faults=["smtp:rcpt=disconnect"])
    result = mailtalk("send", "--from", "bob@isp.test", "--to", "alice@isp.test",
                      "--server", f"127.0.0.1:{running.port('smtp')}")
    assert result.returncode == 5, result.stdout + result.stderr
    assert "closed the connection" in result.stderr
    assert "Traceback" not in result.stderr
    assert new_messages(running, "alice") == []


def test_diagnose_relay_when_the_server_drops_the_connection(
    mailtalk_servers: Callable[..., Any],
) -> None:
    running = start(mailtalk_servers, faults=["smtp:ehlo=disconnect"])
    result = mailtalk("diagnose", "relay", "--from", "bob@isp.test", "--to", "c@elsewhere.test",
                      "--server", f"127.0.0.1:{running.port('smtp')}", "--resolver", NO_DNS,
                      "--timeout", "3")
    assert result.returncode == 5, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_send_to_an_idn_domain_looks_up_punycode() -> None:
    result = mailtalk("send", "--json", "--from", "a@b.test", "--to", "jörg@bücher.test",
                      "--resolver", NO_DNS, "--timeout", "1")
    assert result.returncode == 3
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert any("xn--bcher-kva.test" in json.dumps(line) for line in lines)


def test_a_big_message_gets_a_progress_bar_on_a_terminal(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    running = start(mailtalk_servers)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    env = {**child_env(), "TERM": "xterm", "COLUMNS": "120"}
    child = pexpect.spawn(
        MAILTALK,
        ["send", "--from", "bob@isp.test", "--to", "alice@isp.test", "--server",
         f"127.0.0.1:{running.port('smtp')}", "--attach", str(big)],
        env=env, timeout=60, dimensions=(40, 120),
    )
    child.expect_exact("sending the message")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert len(new_messages(running, "alice")) == 1


def test_diagnose_relay_without_server_when_dns_is_down_says_so() -> None:
    result = mailtalk("diagnose", "relay", "--from", "a@b.test", "--to", "c@d.test",
                      "--resolver", NO_DNS, "--timeout", "1")
    assert result.returncode == 3
    assert "cannot find the MX of d.test" in result.stderr and "--server" in result.stderr
    assert result.stdout == ""


def test_send_to_a_server_refusing_its_greeting_is_exit_1_at_once(
    mailtalk_servers: Callable[..., Any],
) -> None:
    """A 554 greeting is a refusal (RFC 5321 3.1), said at once: not a wait for a
    greeting that already came."""
    running = start(mailtalk_servers, faults=["smtp:connect=554 5.7.1 go away"])
    result = mailtalk("send", "--from", "bob@isp.test", "--to", "alice@isp.test",
                      "--server", f"127.0.0.1:{running.port('smtp')}", "--timeout", "20",
                      timeout=15)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the greeting refused: 554 5.7.1 go away" in result.stderr
    assert "C: EHLO" not in result.stdout and "C: QUIT" in result.stdout


def test_quit_and_drop_after_offer_exactly_the_sequences_stop_points() -> None:
    """commands/mail.py spells the choices out (importing the SMTP core there would load it
    for every --help); they must stay the sequence's own."""
    from mailtalk.cli import cli
    from mailtalk.commands import mail  # noqa: F401  (declares send on the group)
    from mailtalk.protocols.smtp_plan import QUIT_POINTS, STOP_POINTS

    send = cli.commands["send"]
    choices = {p.name: tuple(p.type.choices) for p in send.params if p.name  # type: ignore[attr-defined]
               in ("quit_after", "drop_after")}  # fmt: skip
    assert choices == {"quit_after": QUIT_POINTS, "drop_after": STOP_POINTS}
