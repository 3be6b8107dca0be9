"""XOAUTH2 and OAUTHBEARER against a real server: Dovecot's oauth2 passdb.

scripts/real-servers runs a third Dovecot instance ("mailtalk-oauth2": 11110 POP3,
11143 IMAP, only XOAUTH2 and OAUTHBEARER, ``auth_verbose`` so each login and refusal
is logged with its ``method=``) and Postfix on 11587 with that instance as its SASL.
Dovecot checks each token by POSTing it to an RFC 7662 introspection URL on loopback;
this module answers there itself (``introspection`` below, Python's http.server in a
thread), so the test decides which token is alice's and sees what Dovecot asked.

The evidence is Dovecot's and Postfix's own logs (``user=<alice>, method=XOAUTH2``;
``oauth2 failed: Introspection failed`` for the wrong token) and the introspection
requests; the tokens must be absent from mailtalk's output, transcript and history
and from the servers' logs.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import _unavailable
from tests.interop.test_client_oauth2 import mailtalk
from tests.interop.test_pipe_real import describe
from tests.interop.test_repl_real import Term, history_text, spawn, state_home  # noqa: F401
from tests.interop.test_send_stop_points_real import POSTFIX_LOG, Log

pytestmark = pytest.mark.interop

HOST = os.environ.get("MAILTALK_SASL_DOVECOT_HOST", "127.0.0.1")
DOVECOT_LOG = Path(os.environ.get("MAILTALK_OAUTH2_DOVECOT_LOG", "/var/log/dovecot-oauth2.log"))
INTROSPECTION_PORT = int(os.environ.get("MAILTALK_OAUTH2_INTROSPECTION_PORT", "11080"))
PORTS = {"imap": 11143, "pop3": 11110, "smtp": 11587}
GOODBYE = {"pop3": "QUIT", "imap": "LOGOUT"}
USER = "alice"
TOKEN = "ya29.dovecot-token-" + uuid.uuid4().hex[:12]
WRONG = "ya29.expired-token-" + uuid.uuid4().hex[:12]
REFUSED = "oauth2 failed: Introspection failed: Provided token is not valid"
# The port is fixed in Dovecot's configuration; another run of these tests may hold it.
BIND_WAIT = 120.0


class Introspection:
    """An RFC 7662 endpoint: ``{"active": true, "username": "alice"}`` for ``TOKEN``,
    ``{"active": false}`` for anything else; remembers every token it was asked about."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        asked = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                token = form.get("token", [""])[0]
                asked.append(token)
                answer = {"active": True, "username": USER} if token == TOKEN else {
                    "active": False}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request line holds no token, but keep pytest's output quiet

        deadline = time.monotonic() + BIND_WAIT
        while True:
            try:
                self.server = ThreadingHTTPServer((HOST, INTROSPECTION_PORT), Handler)
                break
            except OSError as error:
                if error.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def listening(port: int) -> None:
    try:
        socket.create_connection((HOST, port), timeout=3).close()
    except OSError as error:
        _unavailable(f"nothing on {HOST}:{port} (the OAuth 2 Dovecot/Postfix): {error}")


@pytest.fixture
def introspection() -> Iterator[Introspection]:
    listening(PORTS["imap"])
    endpoint = Introspection()
    yield endpoint
    endpoint.close()


def assert_no_tokens(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text and WRONG not in text


def login_line(protocol: str, method: str) -> str:
    return f"{protocol}-login: Info: Login: user=<{USER}>, method={method},"


# -- pipe mode ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_pipe_auth_token_with_dovecot(
    introspection: Introspection, tmp_path: Path, protocol: str, mechanism: str
) -> None:
    method = mechanism.upper()
    transcript = tmp_path / "transcript.log"
    args = ["connect", f"{protocol}://{USER}@{HOST}:{PORTS[protocol]}",
            "--transcript", str(transcript)]
    lines = f":auth {mechanism}\n{GOODBYE[protocol]}\n"

    log = Log(DOVECOT_LOG)
    good = mailtalk(args, tmp_path, token=TOKEN, stdin=lines)
    assert "# authenticated as alice" in good.stderr, describe(good)
    granted = log.wait_for(lambda text: login_line(protocol, method) in text)
    assert introspection.tokens == [TOKEN]  # Dovecot asked the endpoint, with this token

    log = Log(DOVECOT_LOG)
    bad = mailtalk(args, tmp_path, token=WRONG, stdin=lines)
    assert "# authenticated as alice" not in bad.stderr, describe(bad)
    # Dovecot's JSON challenge, answered and shown: Google's HTTP status for XOAUTH2,
    # RFC 7628 3.2.2's OAuth error code for OAUTHBEARER
    status = "401" if method == "XOAUTH2" else "invalid_token"
    assert f'the server refused the token: {{"status":"{status}"' in bad.stdout + bad.stderr, \
        describe(bad)
    refused = log.wait_for(lambda text: f"method={method}," in text and "auth failed" in text)
    assert f"oauth2({USER},127.0.0.1," in refused and REFUSED in refused
    assert "Login: user=" not in refused
    assert introspection.tokens == [TOKEN, WRONG]

    assert_no_tokens(good.stdout, good.stderr, bad.stdout, bad.stderr,
                     transcript.read_text(), granted, refused)


# -- the REPL ----------------------------------------------------------------------


def test_repl_auth_token_with_dovecot(
    introspection: Introspection, spawn: Callable[..., Term], state_home: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    log = Log(DOVECOT_LOG)
    transcript = tmp_path / "repl-transcript.log"
    term = spawn("imap", f"{USER}@{HOST}:{PORTS['imap']}", "--transcript", str(transcript))
    term.expect_prompt("imap")
    term.sendline(":auth xoauth2")
    term.expect_question("OAuth2 token for alice: ")
    term.sendline(TOKEN)
    term.expect(r"authenticated as alice")
    term.expect_prompt("imap")
    term.command("a1 SELECT INBOX", r"a1 OK", "imap")
    term.command("LOGOUT", r"OK", "imap")
    assert term.quit() == 0
    text = log.wait_for(lambda t: login_line("imap", "XOAUTH2") in t and "Disconnected" in t)
    assert "imap(alice)" in text  # the mail process ran as alice: the token chose the user
    assert introspection.tokens == [TOKEN]
    history = history_text(state_home)
    assert ":auth xoauth2" in history
    assert_no_tokens(term.screen.dump(), history, transcript.read_text(), text)


# -- diagnose login ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_diagnose_login_with_dovecot(
    introspection: Introspection, tmp_path: Path, protocol: str
) -> None:
    args = ["diagnose", "login", f"{protocol}://{USER}@{HOST}:{PORTS[protocol]}", "--json"]
    log = Log(DOVECOT_LOG)
    good = mailtalk(args, tmp_path, token=TOKEN)
    assert good.returncode == 0, describe(good)
    assert json.loads(good.stdout)["verdict"] == "ok"
    # OAUTHBEARER, the standard one, when both are offered (as send's auto)
    granted = log.wait_for(lambda text: login_line(protocol, "OAUTHBEARER") in text)

    log = Log(DOVECOT_LOG)
    bad = mailtalk(args, tmp_path, token=WRONG)
    assert bad.returncode == 1, describe(bad)
    report = json.loads(bad.stdout)
    assert report["verdict"] == "wrong_password"
    assert "a wrong OAuth2 token (or an expired one)" in report["summary"]
    refused = log.wait_for(lambda text: REFUSED in text)
    assert "Login: user=" not in refused
    assert introspection.tokens == [TOKEN, WRONG]
    assert_no_tokens(good.stdout, good.stderr, bad.stdout, bad.stderr, granted, refused)


# -- send, through Postfix's SMTP AUTH with this Dovecot as its SASL ----------------


def send_args(subject: str, *extra: str) -> list[str]:
    return ["send", "--server", f"{HOST}:{PORTS['smtp']}", "--auth", USER,
            "--from", "alice@mailtalk.test", "--to", "alice@mailtalk.test",
            "--subject", subject, *extra]


@pytest.mark.parametrize(("option", "method"),
                         [("auto", "OAUTHBEARER"), ("xoauth2", "XOAUTH2")])
def test_send_token_with_postfix_and_dovecot(
    introspection: Introspection, tmp_path: Path, option: str, method: str
) -> None:
    listening(PORTS["smtp"])
    log = Log(Path(POSTFIX_LOG))
    subject = f"oauth2-{uuid.uuid4().hex}"
    # the token from $MAILTALK_OAUTH2_TOKEN for auto, from --oauth2-token otherwise
    good = (mailtalk(send_args(subject), tmp_path, token=TOKEN) if option == "auto" else
            mailtalk(send_args(subject, "--auth-mechanism", option, "--oauth2-token", TOKEN),
                     tmp_path))
    assert good.returncode == 0, describe(good)
    assert f"C: AUTH {method} ***" in good.stdout, describe(good)
    granted = log.wait_for(lambda t: f"sasl_method={method}, sasl_username={USER}" in t)
    assert "postfix/oauth2/smtpd" in granted

    log = Log(Path(POSTFIX_LOG))
    bad = mailtalk(send_args(subject, "--auth-mechanism", option), tmp_path, token=WRONG)
    assert bad.returncode == 6, describe(bad)  # authentication failed
    assert "S: 535" in bad.stdout, describe(bad)
    refused = log.wait_for(lambda t: f"SASL {method} authentication failed" in t)
    assert "postfix/oauth2/smtpd" in refused
    assert introspection.tokens == [TOKEN, WRONG]
    assert_no_tokens(good.stdout, good.stderr, bad.stdout, bad.stderr, granted, refused,
                     DOVECOT_LOG.read_text(errors="replace"))
