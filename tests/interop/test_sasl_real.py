"""SASL beyond PLAIN/LOGIN against real servers: CRAM-MD5, SCRAM-SHA-1 and
SCRAM-SHA-256 with Dovecot (IMAP, POP3) and Postfix's SMTP AUTH through Dovecot SASL.

scripts/real-servers runs a second Dovecot instance for this (10110 POP3, 10143 IMAP,
a plain-text passdb, ``auth_verbose`` so each login is logged with its ``method=``)
and Postfix on 10587 with that instance as its SASL (its log names ``sasl_method=``
for each message). The evidence is the servers' own logs; every exchange is also
checked to keep the password and the SASL answers out of the output.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.interop.conftest import _unavailable
from tests.interop.test_pipe_real import describe, run_pipe
from tests.interop.test_send_stop_points_real import POSTFIX_LOG, Log
from tests.mail.test_send_diagnose import mailtalk

pytestmark = pytest.mark.interop

HOST = os.environ.get("MAILTALK_SASL_DOVECOT_HOST", "127.0.0.1")
DOVECOT_LOG = Path("/var/log/dovecot-sasl.log")
PASSWORD = "secret"
PORTS = {"imap": 10143, "pop3": 10110, "smtp": 10587}


def listening(port: int) -> None:
    try:
        socket.create_connection((HOST, port), timeout=3).close()
    except OSError as error:
        _unavailable(f"nothing on {HOST}:{port} (the SASL Dovecot/Postfix): {error}")


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("mechanism", ["cram-md5", "scram-sha-1", "scram-sha-256"])
def test_meta_auth_with_dovecot(protocol: str, mechanism: str, tmp_path: Path) -> None:
    port = PORTS[protocol]
    listening(port)
    log = Log(DOVECOT_LOG)
    goodbye = "LOGOUT" if protocol == "imap" else "QUIT"
    result = run_pipe(
        ["connect", f"{protocol}://alice@{HOST}:{port}"],
        [f":auth {mechanism} alice", goodbye],
        tmp_path,
        password=PASSWORD,
        new_session=True,
    )
    assert result.returncode == 0, describe(result)
    assert "# authenticated as alice" in result.stderr, describe(result)
    name = mechanism.upper()
    text = log.wait_for(lambda t: f"user=<alice>, method={name}," in t)
    assert f"{protocol}-login: Info: Login: user=<alice>, method={name}," in text
    lines = result.stdout.splitlines()
    verb = "AUTHENTICATE" if protocol == "imap" else "AUTH"
    start = next(i for i, line in enumerate(lines) if line.startswith("C: ") and verb in line)
    answers = [line for line in lines[start + 1 :] if line.startswith("C: ")][:-1]
    # every SASL answer is masked, and the password never shows
    assert answers and all(line == "C: ***" for line in answers), describe(result)
    assert PASSWORD not in result.stdout + result.stderr
    if name.startswith("SCRAM"):
        assert f"{name}: the server proved it knows the password" in result.stderr


@pytest.mark.parametrize(
    ("option", "method"),
    [("auto", "SCRAM-SHA-256"), ("cram-md5", "CRAM-MD5"), ("scram-sha-1", "SCRAM-SHA-1")],
)
def test_send_auth_mechanism_with_postfix(option: str, method: str) -> None:
    listening(PORTS["smtp"])
    log = Log(POSTFIX_LOG)
    subject = f"sasl-{uuid.uuid4().hex}"
    result = mailtalk(
        "send", "--server", f"{HOST}:{PORTS['smtp']}", "--auth", "alice",
        "--auth-mechanism", option, "--from", "alice@mailtalk.test",
        "--to", "alice@mailtalk.test", "--subject", subject,
        password=PASSWORD,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"C: AUTH {method}" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    text = log.wait_for(lambda t: f"sasl_method={method}, sasl_username=alice" in t)
    assert "postfix/sasl/smtpd" in text


def test_wrong_password_is_refused_by_scram(tmp_path: Path) -> None:
    listening(PORTS["imap"])
    log = Log(DOVECOT_LOG)
    result = run_pipe(
        ["connect", f"imap://alice@{HOST}:{PORTS['imap']}"],
        [":auth scram-sha-256 alice", "LOGOUT"],
        tmp_path,
        password="not-the-password",
        new_session=True,
    )
    assert "# authenticated as alice" not in result.stderr, describe(result)
    assert "proved" not in result.stderr
    text = log.wait_for(lambda t: "alice" in t and "SCRAM-SHA-256" in t)
    assert "Login: user=<alice>" not in text


# -- DIGEST-MD5 and NTLM: named only, never chosen by auto ---------------------------

CYRUS_PORT = int(os.environ.get("MAILTALK_POSTFIX_CYRUS_PORT", "10588"))


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_digest_md5_with_dovecot(protocol: str, tmp_path: Path) -> None:
    port = PORTS[protocol]
    listening(port)
    log = Log(DOVECOT_LOG)
    goodbye = "LOGOUT" if protocol == "imap" else "QUIT"
    result = run_pipe(
        ["connect", f"{protocol}://alice@{HOST}:{port}"],
        [":auth digest-md5 alice", goodbye],
        tmp_path,
        password=PASSWORD,
        new_session=True,
    )
    assert result.returncode == 0, describe(result)
    assert "# authenticated as alice" in result.stderr, describe(result)
    # Dovecot's second challenge is its rspauth, which the client checked
    assert "DIGEST-MD5: the server proved it knows the password" in result.stderr
    assert "DIGEST-MD5 is historic (RFC 6331" in result.stderr
    text = log.wait_for(lambda t: "user=<alice>, method=DIGEST-MD5," in t)
    assert f"{protocol}-login: Info: Login: user=<alice>, method=DIGEST-MD5," in text
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("option", ["digest-md5", "ntlm"])
def test_send_digest_md5_and_ntlm_with_postfix_cyrus_sasl(option: str) -> None:
    # Postfix on 10588 authenticates through Cyrus SASL (its NTLM plugin checks the
    # NTLMv2 answer against the password in a sasldb); Debian's Dovecot has no NTLM
    # of its own (only through Samba's winbind).
    listening(CYRUS_PORT)
    log = Log(POSTFIX_LOG)
    method = option.upper()
    result = mailtalk(
        "send", "--server", f"{HOST}:{CYRUS_PORT}", "--auth", "alice",
        "--auth-mechanism", option, "--from", "alice@mailtalk.test",
        "--to", "alice@mailtalk.test", "--subject", f"sasl-{uuid.uuid4().hex}",
        password=PASSWORD,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"C: AUTH {method}" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    text = log.wait_for(lambda t: f"sasl_method={method}, sasl_username=alice" in t)
    assert "postfix/cyrus/smtpd" in text


@pytest.mark.parametrize("option", ["digest-md5", "ntlm"])
def test_wrong_password_is_refused_by_cyrus(option: str) -> None:
    listening(CYRUS_PORT)
    log = Log(POSTFIX_LOG)
    result = mailtalk(
        "send", "--server", f"{HOST}:{CYRUS_PORT}", "--auth", "alice",
        "--auth-mechanism", option, "--from", "alice@mailtalk.test",
        "--to", "alice@mailtalk.test", password="not-the-password",
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "authentication refused: 535" in result.stderr
    text = log.wait_for(lambda t: f"SASL {option.upper()} authentication failed" in t)
    assert "postfix/cyrus/smtpd" in text


def test_auto_does_not_pick_ntlm_or_digest_md5() -> None:
    # 10588 offers NTLM DIGEST-MD5 CRAM-MD5: auto takes CRAM-MD5
    listening(CYRUS_PORT)
    result = mailtalk(
        "send", "--server", f"{HOST}:{CYRUS_PORT}", "--auth", "alice",
        "--from", "alice@mailtalk.test", "--to", "alice@mailtalk.test",
        password=PASSWORD,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NTLM" in result.stdout and "DIGEST-MD5" in result.stdout  # offered
    assert "C: AUTH CRAM-MD5" in result.stdout


# -- EXTERNAL: the TLS client certificate is the identity -------------------------------

EXTERNAL_PORT = int(os.environ.get("MAILTALK_EXTERNAL_DOVECOT_PORT", "10993"))
EXTERNAL_DIR = Path("/etc/dovecot/mailtalk-external")
CLIENT_CERT = Path(os.environ.get("MAILTALK_EXTERNAL_CLIENT_CERT", EXTERNAL_DIR / "alice.pem"))
CLIENT_KEY = Path(os.environ.get("MAILTALK_EXTERNAL_CLIENT_KEY", EXTERNAL_DIR / "alice.key"))
EXTERNAL_LOG = Path("/var/log/dovecot-external.log")
SERVER_CA = os.environ.get("MAILTALK_REAL_CAFILE", "/etc/dovecot/private/dovecot.pem")


def external_login(
    tmp_path: Path, cert: Path, key: Path, command: str
) -> subprocess.CompletedProcess[str]:
    listening(EXTERNAL_PORT)
    if not (os.access(cert, os.R_OK) and os.access(key, os.R_OK)):
        _unavailable(f"{cert} or {key} is not readable (scripts/real-servers makes them)")
    return run_pipe(
        ["connect", f"imaps://{HOST}:{EXTERNAL_PORT}", "--cafile", SERVER_CA,
         "--cert", str(cert), "--key", str(key)],
        [command, "LOGOUT"],
        tmp_path,
        new_session=True,
    )


@pytest.mark.parametrize(
    ("command", "sent"), [(":auth external", ""), (":auth external alice", "alice")]
)
def test_external_with_dovecot(command: str, sent: str, tmp_path: Path) -> None:
    # Dovecot's third instance requires a certificate from its CA and takes the user
    # from its CN (auth_ssl_username_from_cert); no password is asked or sent
    log = Log(EXTERNAL_LOG)
    result = external_login(tmp_path, CLIENT_CERT, CLIENT_KEY, command)
    assert result.returncode == 0, describe(result)
    assert "# authenticated by the client certificate" in result.stderr, describe(result)
    assert "password" not in result.stderr.lower()
    text = log.wait_for(lambda t: "method=EXTERNAL" in t and "Login:" in t)
    assert "imap-login: Info: Login: user=<alice>, method=EXTERNAL," in text
    assert "TLS" in text
    if sent:  # the authorization identity asked for; the same user: no master login
        assert f"# authenticated by the client certificate as {sent}" in result.stderr


def test_external_refused_for_a_certificate_not_from_the_ca(tmp_path: Path) -> None:
    # CN=alice too, but self-signed: Dovecot does not take it as alice's identity
    cert, key = tmp_path / "stranger.pem", tmp_path / "stranger.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=alice", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    log = Log(EXTERNAL_LOG)
    result = external_login(tmp_path, cert, key, ":auth external")
    assert "# authenticated" not in result.stderr, describe(result)
    text = log.wait_for(lambda t: "method=EXTERNAL" in t)
    assert "Login: user=<alice>" not in text
    assert "invalid cert" in text or "valid SSL certificate" in text


def test_session_file_auth_external_with_dovecot(tmp_path: Path) -> None:
    # `auth external` in a session file: run's --cert/--key is the identity
    listening(EXTERNAL_PORT)
    script = tmp_path / "external.mt"
    script.write_text(
        f"connect imaps://{HOST}:{EXTERNAL_PORT}\nauth external\nC: NOOP\nS: OK\n"
    )
    log = Log(EXTERNAL_LOG)
    result = mailtalk(
        "run", "--cafile", SERVER_CA, "--cert", str(CLIENT_CERT), "--key", str(CLIENT_KEY),
        str(script),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout + result.stderr
    text = log.wait_for(lambda t: "method=EXTERNAL" in t and "Login:" in t)
    assert "Login: user=<alice>, method=EXTERNAL," in text


# -- send --auth-mechanism external: SMTP, against Exim's external authenticator ---------

EXIM_HOST = os.environ.get("MAILTALK_EXIM_HOST", "127.0.0.6")
EXIM_EXTERNAL_PORT = int(os.environ.get("MAILTALK_EXIM_EXTERNAL_PORT", "2527"))
EXIM_LOG = Path(os.environ.get("MAILTALK_PEERS_DIR", "/opt/mailtalk-peers")) / "exim/log/mainlog"


def send_external(*options: str) -> subprocess.CompletedProcess[str]:
    """send to a foreign domain through Exim's EXTERNAL port: relaying is granted only
    to a client that authenticated, so delivery proves the login."""
    try:
        socket.create_connection((EXIM_HOST, EXIM_EXTERNAL_PORT), timeout=3).close()
    except OSError as error:
        _unavailable(f"nothing on {EXIM_HOST}:{EXIM_EXTERNAL_PORT} (Exim's EXTERNAL port): "
                     f"{error}")  # fmt: skip
    if not (os.access(CLIENT_CERT, os.R_OK) and os.access(CLIENT_KEY, os.R_OK)):
        _unavailable(f"{CLIENT_CERT} or {CLIENT_KEY} is not readable")
    return mailtalk(
        "send", "--server", f"{EXIM_HOST}:{EXIM_EXTERNAL_PORT}", "--starttls",
        "--cafile", SERVER_CA, "--cert", str(CLIENT_CERT), "--key", str(CLIENT_KEY),
        "--auth-mechanism", "external", "--from", "alice@exim.test",
        "--to", "carol@elsewhere.test", *options,
    )  # fmt: skip


@pytest.mark.parametrize("authzid", [None, "alice"])
def test_send_external_with_exim(authzid: str | None) -> None:
    """Exim requires the certificate on that port, offers EXTERNAL alone once it is
    verified, and logs the login (A=external:alice) and the verified certificate
    (CV=yes) on the message's line; no password is asked or sent."""
    log = Log(EXIM_LOG)
    result = send_external(*(["--auth", authzid] if authzid else []),
                           "--subject", f"external-{uuid.uuid4().hex}")  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    after_tls = out.split("C: STARTTLS", 1)[1]
    assert "S: 250-AUTH EXTERNAL\n" in after_tls and "PLAIN" not in after_tls
    assert "C: AUTH EXTERNAL ***" in out and "S: 235 " in out
    assert "password" not in result.stderr.lower()
    [queue_id] = [line.split("id=")[1] for line in out.splitlines()
                  if line.startswith("S: 250 OK id=")]  # fmt: skip
    text = log.wait_for(lambda t: f"{queue_id} <= " in t)
    [arrived] = [line for line in text.splitlines() if f"{queue_id} <= " in line]
    assert " CV=yes " in arrived and " A=external:alice " in arrived, arrived


def test_send_external_acting_as_another_user_is_refused_by_exim() -> None:
    log = Log(EXIM_LOG)
    result = send_external("--auth", "bob")
    out = result.stdout + result.stderr
    assert result.returncode == 6, out
    assert "S: 535 Incorrect authentication data" in out and "C: MAIL" not in out
    text = log.wait_for(lambda t: "external authenticator failed" in t)
    assert "(set_id=alice)" in text
