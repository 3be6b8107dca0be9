"""``mailtalk serve``'s CRAM-MD5, SCRAM-SHA-256, XOAUTH2 and OAUTHBEARER, with real
clients: swaks ``--auth CRAM-MD5`` (SMTP), curl ``--login-options AUTH=CRAM-MD5`` (POP3,
IMAP) and ``--oauth2-bearer`` (SMTP, POP3, IMAP), msmtp ``--auth=scram-sha-256`` (GNU
SASL's SCRAM, SMTP), and mailtalk itself for every mechanism. Each is tried with a
wrong secret too: refused, after the guard's failure delay. The evidence is the
clients' own view of the wire and the servers' journal, which never holds the token.

curl 7.88 picks OAUTHBEARER whenever the server offers it, whatever
``--login-options AUTH=XOAUTH2`` says (curl/curl#10259, a known bug), so XOAUTH2 is
driven by mailtalk's client and by Python's imaplib.
"""

from __future__ import annotations

import imaplib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.journal import Journal
from tests.interop.clients import require_binary
from tests.interop.test_pipe_real import describe, run_pipe
from tests.interop.test_serve_clients import run_client

pytestmark = pytest.mark.interop

USER = "alice"
PASSWORD = "secret"
TOKEN = "ya29.token-for-alice-7f3e"
DELAY = 0.3  # --auth-failure-delay: small, but long enough to see


@pytest.fixture
def served(mailtalk_servers: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    servers = mailtalk_servers(
        smtp=0, pop3=0, imap=0, users=[(USER, PASSWORD)], domains=["example.test"],
        oauth2_tokens={USER: TOKEN}, journal=journal, auth_failure_delay=DELAY,
    )  # fmt: skip
    yield servers, path
    journal.close()


def auth_events(path: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in events if e.get("event") == "auth"]


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = run()
    return result, time.monotonic() - start


def test_swaks_cram_md5(served: tuple[Any, Path], tmp_path: Path) -> None:
    servers, journal = served
    binary = require_binary("swaks")

    def swaks(password: str) -> Any:
        return run_client([
            binary, "--server", f"127.0.0.1:{servers.port('smtp')}", "--auth", "CRAM-MD5",
            "--auth-user", USER, "--auth-password", password,
            "--from", "alice@example.test", "--to", "alice@example.test",
        ], tmp_path)  # fmt: skip

    good = swaks(PASSWORD)
    assert good.returncode == 0, describe(good)
    assert "AUTH PLAIN LOGIN SCRAM-SHA-256 CRAM-MD5 XOAUTH2 OAUTHBEARER" in good.stdout
    assert " -> AUTH CRAM-MD5" in good.stdout and "<-  235 2.7.0" in good.stdout
    bad, seconds = timed(lambda: swaks("wrong"))
    assert bad.returncode != 0, describe(bad)
    assert "<** 535 5.7.8 Authentication credentials invalid" in bad.stdout
    assert seconds >= DELAY
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        ("CRAM-MD5", True), ("CRAM-MD5", False)
    ]


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_curl_cram_md5(served: tuple[Any, Path], tmp_path: Path, protocol: str) -> None:
    servers, journal = served
    binary = require_binary("curl")
    url = f"{protocol}://127.0.0.1:{servers.port(protocol)}/" + ("INBOX" if protocol == "imap"
                                                                  else "")

    def curl(password: str) -> Any:
        return run_client([binary, "-sv", "--max-time", "10", url, "--user",
                           f"{USER}:{password}", "--login-options", "AUTH=CRAM-MD5"], tmp_path)

    good = curl(PASSWORD)
    assert good.returncode == 0, describe(good)
    verb = "AUTHENTICATE" if protocol == "imap" else "AUTH"
    assert f"{verb} CRAM-MD5" in good.stderr
    bad, seconds = timed(lambda: curl("wrong"))
    assert bad.returncode == 67, describe(bad)  # CURLE_LOGIN_DENIED
    assert seconds >= DELAY
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        ("CRAM-MD5", True), ("CRAM-MD5", False)
    ]


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_curl_oauth2_bearer(served: tuple[Any, Path], tmp_path: Path, protocol: str) -> None:
    servers, journal = served
    binary = require_binary("curl")
    url = f"{protocol}://127.0.0.1:{servers.port(protocol)}/" + ("INBOX" if protocol == "imap"
                                                                  else "")
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: t\r\n\r\nbody\r\n")
    smtp = ["--mail-from", "alice@example.test", "--mail-rcpt", "alice@example.test",
            "--upload-file", str(message)] if protocol == "smtp" else []

    def curl(token: str) -> Any:
        return run_client([binary, "-sv", "--max-time", "10", url, "--user", USER,
                           "--oauth2-bearer", token, "--login-options", "AUTH=OAUTHBEARER",
                           *smtp], tmp_path)

    good = curl(TOKEN)
    assert good.returncode == 0, describe(good)
    bad, seconds = timed(lambda: curl("not-the-token"))
    assert bad.returncode == 67, describe(bad)
    assert seconds >= DELAY
    # the error challenge, as RFC 7628 3.2.2 shapes it, then the final refusal
    assert "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciJ9" in bad.stderr
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        ("OAUTHBEARER", True), ("OAUTHBEARER", False)
    ]
    assert TOKEN not in journal.read_text()


def test_imaplib_xoauth2(served: tuple[Any, Path]) -> None:
    servers, journal = served
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"))
    answer = f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()
    assert client.authenticate("XOAUTH2", lambda _: answer)[0] == "OK"
    client.logout()
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"))
    challenges: list[bytes] = []

    def wrong(challenge: bytes) -> bytes:
        challenges.append(challenge)
        return b"user=alice\x01auth=Bearer nope\x01\x01" if len(challenges) == 1 else b""

    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate("XOAUTH2", wrong)
    assert json.loads(challenges[-1])["status"] == "401"
    client.logout()
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        ("XOAUTH2", True), ("XOAUTH2", False)
    ]


# The token mechanisms take $MAILTALK_OAUTH2_TOKEN, never the password variable:
# tests/interop/test_client_oauth2.py drives them through every client path.
MECHANISMS = ["cram-md5", "scram-sha-256"]


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_mailtalk_client_every_mechanism(
    served: tuple[Any, Path], tmp_path: Path, protocol: str, mechanism: str
) -> None:
    servers, journal = served
    secret = PASSWORD
    goodbye = "LOGOUT" if protocol == "imap" else "QUIT"
    url = f"{protocol}://{USER}@127.0.0.1:{servers.port(protocol)}"
    good = run_pipe(["connect", url], [f":auth {mechanism} {USER}", goodbye], tmp_path,
                    password=secret, new_session=True)
    assert "# authenticated as alice" in good.stderr, describe(good)
    if mechanism == "scram-sha-256":
        assert "SCRAM-SHA-256: the server proved it knows the password" in good.stderr
    bad = run_pipe(["connect", url], [f":auth {mechanism} {USER}", goodbye], tmp_path,
                   password="wrong-secret", new_session=True)
    assert "# authenticated as alice" not in bad.stderr, describe(bad)
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        (mechanism.upper(), True), (mechanism.upper(), False)
    ]
    for output in (good.stdout + good.stderr, journal.read_text()):
        assert secret not in output


# send's tokens ($MAILTALK_OAUTH2_TOKEN, --oauth2-token): tests/interop/test_client_oauth2.py
@pytest.mark.parametrize("mechanism", ["cram-md5", "scram-sha-256"])
def test_mailtalk_send_every_mechanism(
    served: tuple[Any, Path], tmp_path: Path, mechanism: str
) -> None:
    from tests.mail.test_send_diagnose import mailtalk

    servers, journal = served
    secret = PASSWORD
    result = mailtalk(
        "send", "--server", f"127.0.0.1:{servers.port('smtp')}", "--auth", USER,
        "--auth-mechanism", mechanism, "--from", "alice@example.test",
        "--to", "alice@example.test", "--subject", "sasl", password=secret,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"C: AUTH {mechanism.upper()}" in result.stdout
    assert secret not in result.stdout + result.stderr + journal.read_text()
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        (mechanism.upper(), True)
    ]


def test_msmtp_scram_sha_256(served: tuple[Any, Path], tmp_path: Path) -> None:
    """msmtp's SCRAM-SHA-256 is GNU SASL's (``msmtp --version`` lists it): a real
    client computing the proof and checking the server's signature."""
    servers, journal = served
    binary = require_binary("msmtp")
    config = tmp_path / "msmtprc"
    config.write_text("")
    config.chmod(0o600)
    version = run_client([binary, "--version"], tmp_path)
    if "scram-sha-256" not in version.stdout:
        pytest.skip("this msmtp was built without SCRAM-SHA-256 (GNU SASL)")

    def msmtp(password: str, body: str) -> Any:
        return run_client([
            binary, f"--file={config}", "--host=127.0.0.1", f"--port={servers.port('smtp')}",
            "--domain=client.test", "--tls=off", "--auth=scram-sha-256", f"--user={USER}",
            f"--passwordeval=echo {password}", "--from=alice@example.test", "--debug",
            "--", "alice@example.test",
        ], tmp_path, stdin=f"Subject: scram\n\n{body}\n")  # fmt: skip

    good = msmtp(PASSWORD, "scram body")
    assert good.returncode == 0, describe(good)
    assert "--> AUTH SCRAM-SHA-256" in good.stdout, good.stdout
    assert "<-- 235 2.7.0" in good.stdout, good.stdout
    bad, seconds = timed(lambda: msmtp("wrong", "never"))
    assert bad.returncode != 0, describe(bad)
    assert "<-- 535 5.7.8" in bad.stdout, bad.stdout
    assert seconds >= DELAY
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        ("SCRAM-SHA-256", True), ("SCRAM-SHA-256", False),
    ]  # fmt: skip
    delivered = b"".join(servers.messages(USER))
    assert b"scram body" in delivered and b"never" not in delivered


# -- each mechanism's lines, as real clients send them ----------------------------------
#
# The three servers share one exchange (mailtalk.servers.sasl_exchange): PLAIN with and
# without an initial response, LOGIN, CRAM-MD5, and the client's "*" that cancels.


def curl_login(servers: Any, tmp_path: Path, protocol: str, mechanism: str, password: str,
               *options: str) -> Any:
    """curl logging in with ``mechanism`` (SMTP: and sending a message to alice)."""
    url = f"{protocol}://127.0.0.1:{servers.port(protocol)}/"
    args = [require_binary("curl"), "-sv", "--max-time", "10", "--user", f"{USER}:{password}",
            "--login-options", f"AUTH={mechanism}", *options]
    if protocol == "smtp":
        message = tmp_path / "message.eml"
        message.write_text(f"From: {USER}@example.test\r\nSubject: curl {mechanism}\r\n\r\nhi\r\n")
        args += ["--mail-from", f"{USER}@example.test", "--mail-rcpt", "alice@example.test",
                 "-T", str(message)]
    return run_client([*args, url + ("INBOX" if protocol == "imap" else "")], tmp_path)


@pytest.mark.parametrize("initial", [[], ["--sasl-ir"]], ids=["challenged", "sasl-ir"])
@pytest.mark.parametrize(("protocol", "mechanism"), [
    ("pop3", "PLAIN"), ("imap", "PLAIN"), ("smtp", "PLAIN"), ("smtp", "LOGIN"),
    ("smtp", "CRAM-MD5"),
])
def test_curl_each_mechanism_right_and_wrong(
    served: tuple[Any, Path], tmp_path: Path, protocol: str, mechanism: str,
    initial: list[str],
) -> None:
    servers, journal = served
    good = curl_login(servers, tmp_path, protocol, mechanism, PASSWORD, *initial)
    assert good.returncode == 0, describe(good)
    verb = "AUTHENTICATE" if protocol == "imap" else "AUTH"
    sent = [line for line in good.stderr.splitlines() if f" {verb} {mechanism}" in line]
    assert sent, describe(good)
    # With --sasl-ir curl puts the first answer on the command line (CRAM-MD5 has
    # none); to IMAP it does whenever the server offers SASL-IR, as ours does, so
    # IMAP's challenged PLAIN is imaplib's (test_imaplib_plain_...).
    assert sent[0].strip().endswith(f" {verb} {mechanism}") != (
        (bool(initial) or protocol == "imap") and mechanism != "CRAM-MD5"
    ), sent
    bad = curl_login(servers, tmp_path, protocol, mechanism, "wrong", *initial)
    assert bad.returncode == 67, describe(bad)  # CURLE_LOGIN_DENIED
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        (mechanism, True), (mechanism, False)
    ]
    assert PASSWORD not in journal.read_text()


def test_imaplib_cancels_with_a_star(served: tuple[Any, Path]) -> None:
    """imaplib answers ``*`` when the callback gives None (RFC 3501 6.2.2): the exchange
    ends with BAD, and the connection goes on to a login in the same session."""
    servers, journal = served
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"))
    try:
        for mechanism in ("PLAIN", "CRAM-MD5", "SCRAM-SHA-256"):
            with pytest.raises(imaplib.IMAP4.error, match="Authentication cancelled"):
                client.authenticate(mechanism, lambda _challenge: None)
            assert client.state == "NONAUTH"
        assert client.login_cram_md5(USER, PASSWORD)[0] == "OK"
        assert client.state == "AUTH"
    finally:
        client.logout()
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [("CRAM-MD5", True)]


def test_imaplib_plain_with_an_authorization_identity(served: tuple[Any, Path]) -> None:
    """imaplib's PLAIN answer, as the callback shapes it: acting as oneself is fine,
    acting as another user is refused with AUTHORIZATIONFAILED (RFC 5530)."""
    servers, _ = served
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"))
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHORIZATIONFAILED"):
            client.authenticate("PLAIN", lambda _: f"bob\0{USER}\0{PASSWORD}".encode())
        assert client.authenticate("PLAIN", lambda _: f"{USER}\0{USER}\0{PASSWORD}".encode())[
            0] == "OK"
    finally:
        client.logout()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("initial_response_ok", [True, False])
def test_smtplib_each_mechanism(
    served: tuple[Any, Path], mechanism: str, initial_response_ok: bool
) -> None:
    """smtplib's own three mechanisms, with and without the initial response."""
    import smtplib

    servers, journal = served
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=10) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = USER, "wrong"
        method = getattr(smtp, "auth_" + mechanism.lower().replace("-", "_"))
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.auth(mechanism, method, initial_response_ok=initial_response_ok)
        smtp.password = PASSWORD
        code, _ = smtp.auth(mechanism, method, initial_response_ok=initial_response_ok)
        assert code == 235
    assert [(e["mechanism"], e["ok"]) for e in auth_events(journal)] == [
        (mechanism, False), (mechanism, True)
    ]
