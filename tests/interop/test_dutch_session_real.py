"""A Dutch session says its network, TLS, GSSAPI and pipe-mode lines in Dutch.

The real binary, ``LANG=nl_NL.UTF-8`` or ``--lang nl``, against real peers over real
sockets: a port nothing listens on, Postfix's implicit TLS with a certificate the
client does not trust, Dovecot's IMAP (STARTTLS, a login without a password), a
listener that never answers the TLS handshake, and the GSSAPI-only Dovecot with and
without a Kerberos ticket (in a pseudo-terminal, as the REPL); and the protocol
cores' errors: the port of another protocol (Postfix's, Dovecot's), a line typed while
Dovecot's IDLE runs. Each checks the Dutch line and that the English one is gone; the
catalogue test (tests/client/repl/test_repl_language.py) checks that every such line
has its Dutch.
"""

from __future__ import annotations

import io
import os
import re
import socket
from pathlib import Path

import pytest

from tests.interop.conftest import RealServers
from tests.interop.test_gssapi_real import (
    GSSAPI_HOST,
    PORTS,
    kerberos_env,
    listening,
    ticket,  # noqa: F401 - the fixture
)
from tests.interop.test_pipe_real import describe, mailtalk_command, run_pipe
from tests.peers import refused_port

pytestmark = pytest.mark.interop

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]|[\x08\r]")


@pytest.fixture
def dutch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The locale says Dutch (no --lang: the locale decides); run_pipe passes it on."""
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "nl_NL.UTF-8")


def test_a_refused_port_in_dutch(dutch: None, tmp_path: Path) -> None:
    port = refused_port()
    result = run_pipe(["smtp", f"127.0.0.1:{port}"], [], tmp_path)
    assert result.returncode == 3, describe(result)  # could not connect
    assert result.stderr == (
        f"mailtalk: kan geen verbinding maken met 127.0.0.1 poort {port}: verbinding geweigerd\n"
    ), describe(result)


def test_a_certificate_the_client_does_not_trust_in_dutch(
    dutch: None, real_servers: RealServers, tmp_path: Path
) -> None:
    # Postfix's 465 shows Dovecot's self-signed certificate; no --cafile
    result = run_pipe(["smtp", "--tls", f"{real_servers.host}:{real_servers.smtps}"],
                        [], tmp_path)
    assert result.returncode == 4, describe(result)  # TLS failed
    lines = result.stderr.splitlines()
    assert lines == [
        f"mailtalk: het certificaat van {real_servers.host} is door zichzelf ondertekend, "
        "dus niemand staat ervoor in. Gebruik --cafile FILE om de uitgever te vertrouwen, "
        "of --insecure om de controle over te slaan."
    ], describe(result)


def test_a_tls_handshake_nobody_answers_in_dutch(tmp_path: Path) -> None:
    # the kernel accepts the connection (backlog); nothing ever says a word of TLS
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = run_pipe(["imap", "--lang", "nl", "--tls", "--timeout", "1",
                           f"127.0.0.1:{port}"], [], tmp_path)
    assert result.returncode == 4, describe(result)  # TLS failed (a TLS timeout)
    assert result.stderr.endswith(
        "mailtalk: geen antwoord van 127.0.0.1 op de TLS-handdruk binnen 1 s (--timeout)\n"
    ), describe(result)


def test_dovecot_starttls_and_a_login_without_a_password_in_dutch(
    dutch: None, real_servers: RealServers, tmp_path: Path
) -> None:
    result = run_pipe(
        ["imap", "--starttls", "--cafile", real_servers.cafile, "--sni", "localhost",
         f"{real_servers.host}:{real_servers.imap}"],
        [f":auth plain {real_servers.user}", "a1 LOGOUT"], tmp_path, new_session=True,
    )
    assert result.returncode == 1, describe(result)  # no secret to give: an error
    err = result.stderr
    notes = err.replace("\n#   ", " ")  # a note wider than 80 columns continues
    tls = next(line for line in notes.splitlines() if line.startswith("# TLS: "))
    assert "; certificaat CN=localhost, uitgegeven door CN=localhost, verloopt op " in tls, err
    assert "certificate" not in tls and "issued by" not in tls
    assert err.endswith(
        "mailtalk: geen wachtwoord: zet het in MAILTALK_PASSWORD of in ~/.netrc, "
        "of werk in een terminal\n"
    ), describe(result)
    assert "AUTHENTICATE" not in result.stdout  # nothing sent without a password


def test_a_recording_is_reported_in_dutch(
    dutch: None, real_servers: RealServers, tmp_path: Path
) -> None:
    recording = tmp_path / "session.mt"
    result = run_pipe(["smtp", "--record", str(recording),
                         f"{real_servers.host}:{real_servers.smtp}"],
                        ["EHLO mailtalk.test", "QUIT"], tmp_path)
    assert result.returncode == 0, describe(result)
    assert f"# {recording} geschreven\n" in result.stderr, describe(result)
    assert f"\nconnect smtp://{real_servers.host}:" in recording.read_text()


@pytest.mark.parametrize(("protocol", "peer", "in_dutch", "in_english"), [
    ("imap", "smtp", 'geen IMAP-antwoord: "220 ', 'not an IMAP response: "220 '),
    ("pop3", "imap", 'geen POP3-statusregel: "* OK ', 'not a POP3 status line: "* OK '),
    ("smtp", "pop3", 'geen SMTP-antwoordregel: "+OK ', 'not an SMTP reply line: "+OK '),
], ids=["imap-to-postfix", "pop3-to-dovecot-imap", "smtp-to-dovecot-pop3"])
def test_the_wrong_port_in_dutch(
    dutch: None, real_servers: RealServers, tmp_path: Path,
    protocol: str, peer: str, in_dutch: str, in_english: str,
) -> None:
    """A student's classic slip, the wrong port: the real peer's greeting is no answer of
    the protocol asked for, and the core's error says so in the locale's Dutch; with
    --lang en the same line as ever."""
    target = f"{real_servers.host}:{getattr(real_servers, peer)}"
    result = run_pipe([protocol, target], [], tmp_path)
    assert result.returncode == 5, describe(result)  # the protocol broke
    last = result.stderr.splitlines()[-1]
    assert last.startswith(
        f"mailtalk: de server hield zich niet aan het protocol: {in_dutch}"), describe(result)
    result = run_pipe([protocol, "--lang", "en", target], [], tmp_path)
    assert result.returncode == 5, describe(result)
    assert result.stderr.splitlines()[-1].startswith(
        f"mailtalk: the server broke the protocol: {in_english}"), describe(result)


# -- the REPL: a pseudo-terminal -----------------------------------------------


def repl(env: dict[str, str], target: str, *steps: tuple[str, list[str]]) -> str:
    """The REPL in a pseudo-terminal, in Dutch by the locale: each step a line typed
    and what to wait for (any of them), then the prompt again (IMAP's own while IDLE
    runs); Ctrl-D ends it."""
    pexpect = pytest.importorskip("pexpect")
    env = {**env, "LANG": "nl_NL.UTF-8", "TERM": "xterm", "NO_COLOR": "1",
           "PROMPT_TOOLKIT_NO_CPR": "1"}
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        env.pop(variable, None)
    log = io.BytesIO()
    command, *args = mailtalk_command()
    prompt = target.split(" ", 1)[0] + ">"
    child = pexpect.spawn(command, [*args, *target.split(" ")], env=env,
                          dimensions=(40, 160), timeout=20)
    child.logfile_read = log
    child.expect_exact(prompt)
    for line, answers in steps:
        child.send(line + "\r")
        child.expect(answers)
        # the IDLE prompt in Dutch (bytes: this spawn has no encoding)
        child.expect_exact([prompt, "idle (DONE beëindigt het)>".encode()])
    child.send("\x04")
    child.expect(pexpect.EOF)
    child.close()
    return ESCAPES.sub("", log.getvalue().decode("utf-8", "replace"))


def repl_auth_gssapi(env: dict[str, str]) -> str:
    """``:auth gssapi`` in the REPL against the GSSAPI-only Dovecot's IMAP: the screen."""
    listening(PORTS["imap"])
    return repl(env, f"imap {GSSAPI_HOST}:{PORTS['imap']}",
                (":auth gssapi", ["aangemeld met het Kerberos-ticket", "geen Kerberos-ticket"]),
                ("a9 LOGOUT", ["a9 OK"]))


def test_gssapi_login_in_dutch(ticket: dict[str, str]) -> None:  # noqa: F811
    screen = repl_auth_gssapi(ticket)
    user = os.environ.get("MAILTALK_KRB5_USER", "alice@MAILTALK.TEST")
    assert (
        f"GSSAPI: aangemeld met het Kerberos-ticket van {user}; de server bewees dat hij "
        f"imap/{GSSAPI_HOST} is (wederzijdse authenticatie)"
    ) in screen, screen
    assert "logged in with" not in screen


def test_gssapi_without_a_ticket_in_dutch(tmp_path: Path) -> None:
    screen = repl_auth_gssapi(kerberos_env(tmp_path))  # an empty ticket cache
    assert "GSSAPI: geen Kerberos-ticket: voer eerst kinit uit (" in screen, screen
    assert "no Kerberos ticket" not in screen
    assert "AUTHENTICATE" not in screen  # refused before anything was sent


def test_protocol_help_in_dutch_in_the_repl(real_servers: RealServers, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    screen = repl(env, f"imap {real_servers.host}:{real_servers.imap}",
                  (":help FETCH", ["Geldig in: selected"]), ("a9 LOGOUT", ["a9 OK"]))
    text = " ".join(screen.split())
    assert "FETCH <sequence-set> (<item> ...)" in screen
    assert "Haal vlaggen, kopregels, structuur of inhoud van berichten op." in text, screen
    assert "BODY[...] zet de vlag \\Seen; BODY.PEEK[...] niet" in text, screen
    assert "Voorbeeld:" in screen and "Zie: RFC" in screen
    assert "Retrieve flags" not in screen and "Example:" not in screen


def test_protocol_help_in_dutch_in_pipe_mode(
    dutch: None, real_servers: RealServers, tmp_path: Path
) -> None:
    result = run_pipe(["smtp", f"{real_servers.host}:{real_servers.smtp}"],
                      [":help RCPT", "QUIT"], tmp_path)
    assert result.returncode == 0, describe(result)
    notes = " ".join(line.removeprefix("#").strip() for line in result.stderr.splitlines())
    assert "Voeg één ontvanger toe aan het huidige bericht." in notes, describe(result)
    assert "550 betekent dat de mailbox niet bestaat" in notes
    assert "Add one recipient" not in notes


def test_a_line_typed_while_idle_is_refused_in_dutch(
    real_servers: RealServers, tmp_path: Path
) -> None:
    """Dovecot's IDLE: anything but DONE is refused by the core before it is sent, and
    the REPL says why in Dutch."""
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    screen = repl(env, f"imap {real_servers.host}:{real_servers.imap}",
                  (f"a1 LOGIN {real_servers.user} {real_servers.password}", ["a1 OK"]),
                  ("EXAMINE INBOX", ["OK \\[READ-ONLY\\]"]),
                  ("IDLE", ["\\+ idling"]),
                  ("NOOP", ["IDLE loopt", "IDLE is running"]),
                  ("DONE", ["OK Idle completed"]),
                  ("a9 LOGOUT", ["a9 OK"]))
    assert "IDLE loopt: DONE maakt er een eind aan" in screen, screen
    assert "IDLE is running" not in screen
    assert "idle (DONE beëindigt het)>" in screen and "DONE ends it" not in screen, screen
    assert "NOOP completed" not in screen  # nothing was sent
