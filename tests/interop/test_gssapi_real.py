"""SASL GSSAPI (Kerberos V5, RFC 4752) against real servers and a real KDC.

scripts/real-servers runs an MIT Kerberos KDC (realm MAILTALK.TEST on 127.0.0.1:12088),
a Dovecot instance offering only GSSAPI (POP3 12110, IMAP 12143) and a Postfix listener
with Cyrus SASL's GSSAPI (12587); their service principals are imap/, pop/ and
smtp/gssapi.mailtalk.test, a name /etc/hosts gives to 127.0.0.1. Each test that logs
in runs ``kinit`` into a ticket cache of its own (KRB5CCNAME in its tmp_path), with
the password the script generated; the binary then finds that ticket through the
system's libgssapi_krb5. The evidence is the servers' logs (Dovecot's
``method=GSSAPI``, Postfix's ``sasl_method=GSSAPI``) and, as a cross-check that the
peers themselves work, curl's own GSSAPI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.interop.conftest import _unavailable
from tests.interop.test_pipe_real import TIMEOUT, describe, mailtalk_command
from tests.interop.test_send_stop_points_real import POSTFIX_LOG, Log

pytestmark = pytest.mark.interop

GSSAPI_HOST = os.environ.get("MAILTALK_GSSAPI_HOST", "gssapi.mailtalk.test")
PORTS = {
    "pop3": int(os.environ.get("MAILTALK_GSSAPI_POP3_PORT", "12110")),
    "imap": int(os.environ.get("MAILTALK_GSSAPI_IMAP_PORT", "12143")),
    "smtp": int(os.environ.get("MAILTALK_GSSAPI_SMTP_PORT", "12587")),
}
DOVECOT_LOG = Path(os.environ.get("MAILTALK_GSSAPI_DOVECOT_LOG", "/var/log/dovecot-gssapi.log"))
GOODBYE = {"imap": "LOGOUT", "pop3": "QUIT"}


def listening(port: int) -> None:
    try:
        socket.create_connection((GSSAPI_HOST, port), timeout=3).close()
    except OSError as error:
        _unavailable(f"nothing on {GSSAPI_HOST}:{port} (the Kerberos peers): {error}")


def kerberos_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a child with a ticket cache of its own (still empty)."""
    config = os.environ.get("MAILTALK_KRB5_CONFIG", "/opt/mailtalk-peers/krb5/krb5.conf")
    if not os.access(config, os.R_OK):
        _unavailable(f"no Kerberos configuration {config} (scripts/real-servers makes it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")}
    env.pop("NO_COLOR", None)
    env.update(
        KRB5_CONFIG=config,
        KRB5CCNAME=f"FILE:{tmp_path / 'ccache'}",
        XDG_STATE_HOME=str(tmp_path / "state"),
    )
    return env


@pytest.fixture
def ticket(tmp_path: Path) -> dict[str, str]:
    """An environment whose ticket cache holds alice@MAILTALK.TEST's ticket."""
    env = kerberos_env(tmp_path)
    user = os.environ.get("MAILTALK_KRB5_USER", "alice@MAILTALK.TEST")
    password = os.environ.get("MAILTALK_KRB5_PASSWORD", "")
    if not password or shutil.which("kinit") is None:
        _unavailable("no kinit or no $MAILTALK_KRB5_PASSWORD (eval scripts/real-servers env)")
    done = subprocess.run(
        ["kinit", user], input=password + "\n", capture_output=True, text=True, env=env,
        timeout=TIMEOUT, check=False,
    )
    if done.returncode != 0:
        _unavailable(f"kinit {user} failed: {done.stderr.strip()}")
    return env


def mailtalk(
    env: dict[str, str], *args: str, lines: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The real binary, ``lines`` on a pipe as its standard input, no terminal."""
    return subprocess.run(
        [*mailtalk_command(), *args], input="".join(line + "\n" for line in lines),
        capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False,
        start_new_session=True,
    )


def assert_no_token_shown(result: subprocess.CompletedProcess[str], verb: str) -> None:
    """The command line's initial response and every answer are ``***``: an AP-REQ
    carries a service ticket, replayable until the server's replay cache says no."""
    lines = result.stdout.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("C: ") and f"{verb} GSSAPI" in line
    )
    command = lines[start]
    assert command.endswith(("GSSAPI", "GSSAPI ***")), command
    answers = []
    for line in lines[start + 1 :]:
        if line.startswith("S: ") and not line.startswith(("S: 334 ", "S: + ", "S: +\t")) \
                and line not in ("S: +", "S: 334"):
            break  # the exchange's final reply
        if line.startswith("C: "):
            answers.append(line)
    assert answers and all(line == "C: ***" for line in answers), describe(result)
    assert os.environ.get("MAILTALK_KRB5_PASSWORD", "-") not in result.stdout + result.stderr


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_meta_auth_gssapi_with_dovecot(
    protocol: str, ticket: dict[str, str], tmp_path: Path
) -> None:
    port = PORTS[protocol]
    listening(port)
    log = Log(DOVECOT_LOG)
    result = mailtalk(
        ticket, "connect", f"{protocol}://{GSSAPI_HOST}:{port}",
        lines=(":auth gssapi", GOODBYE[protocol]),
    )
    assert result.returncode == 0, describe(result)
    assert "# authenticated by the Kerberos ticket" in result.stderr, describe(result)
    service = "imap" if protocol == "imap" else "pop"
    assert (
        f"the server proved it is {service}/{GSSAPI_HOST} (mutual authentication)"
        in result.stderr
    ), describe(result)
    assert "password" not in result.stderr.lower()
    text = log.wait_for(lambda t: "method=GSSAPI" in t and "Login:" in t)
    assert f"{protocol}-login: Info: Login: user=<alice>, method=GSSAPI," in text
    assert_no_token_shown(result, "AUTHENTICATE" if protocol == "imap" else "AUTH")


def test_session_file_auth_gssapi_with_dovecot(ticket: dict[str, str], tmp_path: Path) -> None:
    listening(PORTS["imap"])
    script = tmp_path / "gssapi.mt"
    script.write_text(
        f"connect imap://{GSSAPI_HOST}:{PORTS['imap']}\nauth gssapi\n"
        "C: SELECT INBOX\nS: OK\n"
    )
    log = Log(DOVECOT_LOG)
    result = mailtalk(ticket, "run", "-v", str(script))
    assert result.returncode == 0, describe(result)
    assert f"PASS {script}" in result.stdout + result.stderr, describe(result)
    text = log.wait_for(lambda t: "method=GSSAPI" in t and "Login:" in t)
    assert "imap-login: Info: Login: user=<alice>, method=GSSAPI," in text


@pytest.mark.parametrize(("option", "user"), [("gssapi", ()), ("auto", ("--auth", "alice"))])
def test_send_gssapi_with_postfix_cyrus(
    option: str, user: tuple[str, ...], ticket: dict[str, str]
) -> None:
    # Postfix's smtpd with Cyrus SASL's gssapiv2: no --auth needed for gssapi (the
    # ticket says who); auto chooses GSSAPI because the ticket is --auth alice's
    listening(PORTS["smtp"])
    log = Log(POSTFIX_LOG)
    subject = f"gssapi-{uuid.uuid4().hex}"
    result = mailtalk(
        ticket, "send", "--server", f"{GSSAPI_HOST}:{PORTS['smtp']}", *user,
        "--auth-mechanism", option, "--from", "alice@mailtalk.test",
        "--to", "alice@mailtalk.test", "--subject", subject,
    )
    assert result.returncode == 0, describe(result)
    assert "C: AUTH GSSAPI ***" in result.stdout, describe(result)
    assert "S: 235 " in result.stdout
    assert_no_token_shown(result, "AUTH")
    text = log.wait_for(lambda t: "sasl_method=GSSAPI" in t)
    assert "postfix/gssapi/smtpd" in text and "sasl_username=alice" in text


# -- failures: one line, the right exit status, nothing secret tried ------------------


def test_no_ticket_is_one_clear_line_before_anything_is_sent(tmp_path: Path) -> None:
    listening(PORTS["imap"])
    env = kerberos_env(tmp_path)  # an empty ticket cache: no kinit
    script = tmp_path / "gssapi.mt"
    script.write_text(f"connect imap://{GSSAPI_HOST}:{PORTS['imap']}\nauth gssapi\n")
    result = mailtalk(env, "run", "-v", str(script))
    assert result.returncode == 6, describe(result)  # authentication failed
    assert "GSSAPI: no Kerberos ticket: run kinit first" in result.stdout + result.stderr
    assert "AUTHENTICATE" not in result.stdout, describe(result)
    assert "Traceback" not in result.stderr

    repl = mailtalk(env, "connect", f"imap://{GSSAPI_HOST}:{PORTS['imap']}",
                    lines=(":auth gssapi", "LOGOUT"))
    errors = [line for line in repl.stderr.splitlines() if "Kerberos" in line]
    assert len(errors) == 1 and "run kinit" in errors[0], describe(repl)
    assert "password" not in repl.stderr.lower()  # never asked for one


def test_send_without_a_ticket(tmp_path: Path) -> None:
    listening(PORTS["smtp"])
    env = kerberos_env(tmp_path)
    common = ("send", "--server", f"{GSSAPI_HOST}:{PORTS['smtp']}", "--from",
              "alice@mailtalk.test", "--to", "alice@mailtalk.test")
    named = mailtalk(env, *common, "--auth-mechanism", "gssapi")
    assert named.returncode == 6, describe(named)
    assert "no Kerberos ticket: run kinit first" in named.stderr, describe(named)
    assert "C: AUTH" not in named.stdout
    # auto without a ticket never chooses GSSAPI, even where it is all that is offered
    env["MAILTALK_PASSWORD"] = "not-used"
    auto = mailtalk(env, *common, "--auth", "alice")
    assert "C: AUTH GSSAPI" not in auto.stdout, describe(auto)
    assert auto.returncode == 6, describe(auto)


def test_an_address_is_not_the_services_name(ticket: dict[str, str], tmp_path: Path) -> None:
    # the same server by its address: the KDC knows no imap/127.0.0.1
    listening(PORTS["imap"])
    result = mailtalk(ticket, "connect", f"imap://127.0.0.1:{PORTS['imap']}",
                      lines=(":auth gssapi", "LOGOUT"))
    assert "does not know the service imap/127.0.0.1" in result.stderr, describe(result)
    assert "connect by the server's own host name" in result.stderr
    assert "AUTHENTICATE" not in result.stdout


def test_a_server_without_gssapi_says_what_it_offers(ticket: dict[str, str]) -> None:
    # the main Dovecot (143) offers PLAIN and LOGIN only
    listening(143)
    result = mailtalk(ticket, "connect", f"imap://{GSSAPI_HOST}:143",
                      lines=(":auth gssapi", "LOGOUT"))
    assert "does not offer AUTHENTICATE GSSAPI; it offers PLAIN LOGIN" in result.stderr, (
        describe(result)
    )
    assert "AUTHENTICATE GSSAPI" not in result.stdout


# -- the peers themselves, through curl's GSSAPI ---------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_curl_logs_in_with_gssapi_to_the_same_dovecot(
    protocol: str, ticket: dict[str, str]
) -> None:
    features = subprocess.run(["curl", "-V"], capture_output=True, text=True, check=False)
    if "GSS-API" not in features.stdout and "Kerberos" not in features.stdout:
        _unavailable("this curl was built without GSS-API")
    listening(PORTS[protocol])
    log = Log(DOVECOT_LOG)
    done = subprocess.run(
        ["curl", "-sS", "--login-options", "AUTH=GSSAPI", "-u", ":",
         f"{protocol}://{GSSAPI_HOST}:{PORTS[protocol]}/"],
        capture_output=True, text=True, env=ticket, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = log.wait_for(lambda t: "method=GSSAPI" in t and "Login:" in t)
    assert f"{protocol}-login: Info: Login: user=<alice>, method=GSSAPI," in text


# -- diagnose login: the automatic mechanism, as send's and the REPL's -----------------

DIAGNOSE_URLS = {
    "imap": f"imap://alice@{GSSAPI_HOST}:{PORTS['imap']}",
    "pop3": f"pop3://alice@{GSSAPI_HOST}:{PORTS['pop3']}",
    # Postfix offers STARTTLS first; its certificate is the peers' (CN=localhost)
    "smtp": f"smtp://alice@{GSSAPI_HOST}:{PORTS['smtp']}",
}


def diagnose(env: dict[str, str], protocol: str) -> tuple[subprocess.CompletedProcess[str],
                                                          dict[str, object]]:
    """``diagnose login --json`` against the GSSAPI-only peer, with no password anywhere
    and no terminal: a password asked for would end it with an error, not a verdict."""
    import json

    listening(PORTS[protocol])
    tls = ("--cafile", os.environ.get("MAILTALK_PEERS_CAFILE", "/etc/dovecot/private/dovecot.pem"),
           "--sni", "localhost") if protocol == "smtp" else ()
    env = {k: v for k, v in env.items() if k != "MAILTALK_PASSWORD"}
    result = mailtalk(env, "diagnose", "login", DIAGNOSE_URLS[protocol], *tls, "--json")
    assert "Traceback" not in result.stderr and "password" not in result.stderr.lower(), (
        describe(result))
    return result, json.loads(result.stdout or "{}")


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_diagnose_login_auto_chooses_gssapi_with_a_ticket(
    protocol: str, ticket: dict[str, str]
) -> None:
    log = Log(POSTFIX_LOG if protocol == "smtp" else DOVECOT_LOG)
    result, report = diagnose(ticket, protocol)
    assert result.returncode == 0, describe(result)
    assert report["verdict"] == "ok", report
    verb = "AUTHENTICATE" if protocol == "imap" else "AUTH"
    evidence = report["evidence"]
    assert isinstance(evidence, list)
    assert any(line.startswith(f"{verb} GSSAPI ") for line in evidence), evidence
    if protocol == "smtp":
        # no mail, so no sasl_method= line: smtpd's tally says AUTH worked (auth=1, not 0/1)
        assert any(line.startswith("AUTH GSSAPI ") and ": 235 " in line for line in evidence)
        text = log.wait_for(lambda t: "ehlo=2 starttls=1 auth=1 quit=1" in t)
        assert "postfix/gssapi/smtpd" in text
    else:
        text = log.wait_for(lambda t: "method=GSSAPI" in t and "Login:" in t)
        assert f"{protocol}-login: Info: Login: user=<alice>, method=GSSAPI," in text


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_diagnose_login_without_a_ticket_sends_nothing(protocol: str, tmp_path: Path) -> None:
    result, report = diagnose(kerberos_env(tmp_path), protocol)  # an empty ticket cache
    assert result.returncode == 1, describe(result)  # the login fails: the verdict says why
    assert report["verdict"] == "no_kerberos_ticket", report
    assert report["summary"] == (
        f"{GSSAPI_HOST}:{PORTS[protocol]} offers GSSAPI (Kerberos) only, and the ticket "
        "cache holds no ticket of alice, so nothing was sent: run kinit first."
    )
    facts = report["facts"]
    assert isinstance(facts, dict) and facts["login"] == "not sent"
    sent = [line["text"] for line in facts["transcript"] if line["dir"] == "C"]
    assert not [line for line in sent if "AUTH" in line or "LOGIN " in line
                or line.startswith(("USER", "PASS"))], sent


def test_diagnose_login_with_the_ticket_of_another_user(ticket: dict[str, str]) -> None:
    # alice's ticket is no ticket of bob's: auto does not choose GSSAPI for bob
    listening(PORTS["imap"])
    result = mailtalk(ticket, "diagnose", "login",
                      f"imap://bob@{GSSAPI_HOST}:{PORTS['imap']}", "--brief")
    assert result.returncode == 1, describe(result)
    assert result.stdout.startswith(
        f"Verdict: {GSSAPI_HOST}:{PORTS['imap']} offers GSSAPI (Kerberos) only, and the\n"
        "  ticket cache holds no ticket of bob"), describe(result)
    assert "AUTHENTICATE" not in result.stdout
