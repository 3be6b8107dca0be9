"""``mailtalk send``, ``diagnose`` and ``run`` speak Dutch with ``--lang nl`` or
``LANG=nl_NL.UTF-8``, and English as before otherwise; ``--json`` stays English.

The real binary as a process against the real peers over real sockets: Postfix
refusing to relay a recipient (send, diagnose relay), Exim refusing to relay
(diagnose relay), Dovecot refusing a login (run, diagnose login), a port nothing
listens on. Each test checks the Dutch lines and that their English is gone; the
catalogue tests (tests/client/repl/test_repl_language.py, tests/knowledge/
test_translation.py) check every word has its Dutch.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.interop.clients import client_env
from tests.interop.conftest import Peer, RealServers
from tests.interop.test_diagnose_real import dns  # noqa: F401 - the fixture
from tests.mail.test_send_diagnose import NO_DNS
from tests.peers import refused_port
from tests.script.runs import MAILTALK, describe, write

pytestmark = pytest.mark.interop

# the locale's variables as a person in each language has them
DUTCH_LOCALE = {"LANG": "nl_NL.UTF-8"}
ENGLISH_LOCALE = {"LANG": "C.UTF-8"}


def mailtalk(
    *args: str, locale: dict[str, str], password: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real binary with ``locale`` as its only language settings."""
    home = Path(tempfile.mkdtemp(prefix="mt-dutch-"))
    env = client_env(home, NO_COLOR="1", **locale)
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        if variable not in locale:
            env.pop(variable, None)
    if password is not None:
        env["MAILTALK_PASSWORD"] = password
    return subprocess.run(
        [MAILTALK, *args], capture_output=True, text=True, env=env, cwd=cwd or home,
        stdin=subprocess.DEVNULL, timeout=60, check=False, start_new_session=True,
    )


def without(text: str, *english: str) -> None:
    """None of ``english`` is left in ``text``."""
    assert [words for words in english if words in text] == [], text


# -- send -------------------------------------------------------------------------------


def send_to_postfix(real: RealServers, *extra: str, locale: dict[str, str]) -> Any:
    return mailtalk(
        "send", "--from", real.address, "--to", "bob@example.net",
        "--server", f"{real.host}:{real.smtp}", "--timeout", "10", *extra, locale=locale,
    )


REFUSED = "554 5.7.1 <bob@example.net>: Relay access denied"


@pytest.mark.parametrize("how", ["--lang nl", "LANG=nl_NL.UTF-8"])
def test_send_says_postfixs_refusal_in_dutch(real_servers: RealServers, how: str) -> None:
    option = ["--lang", "nl"] if how.startswith("--") else []
    # --lang nl wins over an English locale; LANG alone decides without it
    locale = ENGLISH_LOCALE if option else DUTCH_LOCALE
    result = send_to_postfix(real_servers, *option, locale=locale)
    assert result.returncode == 1, describe(result)
    assert result.stderr == (
        f"mailtalk: bob@example.net: elke ontvanger geweigerd: {REFUSED}\n"
    ), describe(result)
    lines = result.stdout.splitlines()
    assert lines[0] == f"# verbinden met {real_servers.host}:{real_servers.smtp}"
    assert f"S: {REFUSED}" in lines  # what the server said stays as it said it
    explained = lines[lines.index(f"S: {REFUSED}") + 1]
    assert explained.startswith("  ↳ doorsturen geweigerd (blijvend): "), explained
    without(result.stdout + result.stderr, "connecting to", "every recipient refused",
            "relaying denied")


def test_send_in_english_is_unchanged(real_servers: RealServers) -> None:
    result = send_to_postfix(real_servers, locale=ENGLISH_LOCALE)
    assert result.returncode == 1, describe(result)
    assert result.stderr == f"mailtalk: bob@example.net: every recipient refused: {REFUSED}\n"
    assert result.stdout.splitlines()[0] == (
        f"# connecting to {real_servers.host}:{real_servers.smtp}")
    assert "  ↳ relaying denied (permanent): " in result.stdout
    without(result.stdout + result.stderr, "verbinden", "geweigerd")


def test_send_json_stays_english_in_a_dutch_locale(real_servers: RealServers) -> None:
    result = send_to_postfix(real_servers, "--json", "--lang", "nl", locale=DUTCH_LOCALE)
    assert result.returncode == 1, describe(result)
    *transcript, last = [json.loads(line) for line in result.stdout.splitlines()]
    assert last["failures"][0]["error"] == f"every recipient refused: {REFUSED}"
    assert transcript[0]["text"] == f"connecting to {real_servers.host}:{real_servers.smtp}"
    without(result.stdout, "verbinden", "geweigerd")


def test_send_connection_refused_and_bad_input_in_dutch(real_servers: RealServers) -> None:
    port = refused_port()
    result = mailtalk("send", "--lang", "nl", "--from", real_servers.address, "--to",
                      "bob@example.net", "--server", f"127.0.0.1:{port}", locale=ENGLISH_LOCALE)
    assert result.returncode == 3, describe(result)
    assert result.stderr == (
        f"mailtalk: bob@example.net: kan geen verbinding maken met 127.0.0.1 poort {port}: "
        "verbinding geweigerd\n"), describe(result)
    result = mailtalk("send", "--from", real_servers.address, "--to", "bob",
                      "--server", f"127.0.0.1:{port}", locale=DUTCH_LOCALE)
    assert result.returncode == 2, describe(result)
    assert result.stderr == "mailtalk: --to 'bob' is geen adres zoals naam@example.org\n"


# -- diagnose ---------------------------------------------------------------------------


def diagnose_postfix(real: RealServers, *extra: str, locale: dict[str, str]) -> Any:
    return mailtalk(
        "diagnose", "relay", "--from", real.address, "--to", "bob@example.net",
        "--server", f"{real.host}:{real.smtp}", "--resolver", NO_DNS, "--timeout", "3",
        "--cafile", real.cafile, *extra, locale=locale,
    )


@pytest.mark.parametrize("how", ["--lang nl", "LANG=nl_NL.UTF-8"])
def test_diagnose_relay_against_postfix_in_dutch(real_servers: RealServers, how: str) -> None:
    option = ["--lang", "nl"] if how.startswith("--") else []
    result = diagnose_postfix(real_servers, *option,
                              locale=ENGLISH_LOCALE if option else DUTCH_LOCALE)
    assert result.returncode == 1, describe(result)
    assert result.stderr == ""
    text = " ".join(result.stdout.split())
    where = f"{real_servers.host}:{real_servers.smtp}"
    for words in [
        f"Oordeel: {where} is niet de MX van example.net en biedt hier geen AUTH, dus hij "
        "stuurt op deze poort niet voor jou door.",
        "Bewijs",
        f"of {where} een MX van example.net is, valt niet te zeggen (de DNS antwoordde "
        "niet); aangenomen van niet",
        "begroeting: 220 ",
        f"als vreemde: RCPT TO:<bob@example.net> -> {REFUSED}",
        "↳ doorsturen geweigerd (blijvend)",
        "Wat je kunt doen als gebruiker",
        "Verstuur via de submission-server van je eigen provider",
        "Wat je kunt doen als beheerder van de server",
    ]:
        assert words in text, result.stdout
    without(text, "Verdict:", "Evidence", "What to do", "is not example.net's MX",
            "as a stranger", "greeting:")


def test_diagnose_relay_in_english_and_json_unchanged(real_servers: RealServers) -> None:
    result = diagnose_postfix(real_servers, locale=ENGLISH_LOCALE)
    assert result.returncode == 1, describe(result)
    where = f"{real_servers.host}:{real_servers.smtp}"
    assert result.stdout.startswith(f"Verdict: {where} is not example.net's MX and offers no")
    assert "\nEvidence\n" in result.stdout and "\nWhat to do, as the user\n" in result.stdout
    without(result.stdout, "Oordeel", "Bewijs")
    result = diagnose_postfix(real_servers, "--json", "--lang", "nl", locale=DUTCH_LOCALE)
    report = json.loads(result.stdout)
    assert report["summary"].startswith(f"{where} is not example.net's MX"), report
    assert any(line.startswith("as a stranger: RCPT TO:") for line in report["evidence"])
    without(result.stdout, "Oordeel", "doorsturen", "vreemde")


def test_diagnose_relay_against_exim_in_dutch(exim: Peer, dns: str) -> None:  # noqa: F811
    result = mailtalk(
        "diagnose", "relay", "--from", "alice@isp.test", "--to", "someone@example.net",
        "--server", f"{exim.host}:{exim.port('smtp')}", "--resolver", dns, "--timeout", "5",
        "--cafile", exim.cafile, locale=DUTCH_LOCALE,
    )
    assert result.returncode == 1, describe(result)
    text = " ".join(result.stdout.split())
    where = f"{exim.host}:{exim.port('smtp')}"
    for words in [
        f"Oordeel: {where} is niet de MX van example.net en stuurt alleen door voor zijn "
        "eigen gebruikers; hij biedt AUTH pas na STARTTLS, en jij hebt je niet aangemeld.",
        f"{where} is geen MX van example.net: hij zou moeten doorsturen",
        "EHLO: AUTH niet aangeboden; STARTTLS aangeboden",
        "na STARTTLS: AUTH ",
        "relay not permitted",  # Exim's own words stay as it said them
        "Meld je aan: STARTTLS, opnieuw EHLO, dan AUTH vóór MAIL FROM",
    ]:
        assert words in text, result.stdout
    without(text, "Verdict:", "relays only for its own users", "after STARTTLS: AUTH")


def test_diagnose_login_against_dovecot_in_dutch(real_servers: RealServers) -> None:
    result = mailtalk(
        "diagnose", "login", "--lang", "nl", "--cafile", real_servers.cafile,
        f"imap://{real_servers.user}@{real_servers.host}:{real_servers.imap}",
        locale=ENGLISH_LOCALE, password="not-the-password",
    )
    assert result.returncode == 1, describe(result)
    text = " ".join(result.stdout.split())
    for words in [
        f"Oordeel: de server weigert de gegevens van {real_servers.user}: een fout "
        "wachtwoord, of een gebruikersnaam die hij niet kent",
        "STARTTLS: TLS begonnen",
        "aanmelden over TLS, na STARTTLS: ",
        "[AUTHENTICATIONFAILED]",
    ]:
        assert words in text, result.stdout
    without(text, "Verdict:", "TLS started", "login over TLS")


# -- run --------------------------------------------------------------------------------

DOVECOT_SESSION = """\
# Dovecot refuses a wrong password; the file expects OK
connect imap://{host}:{port}
S: * OK
C: a1 CAPABILITY
S: OK
C: a2 LOGIN {user} not-the-password
S: OK
"""
POP3_SESSION = """\
connect pop3://{host}:{port}
S: +OK
C: QUIT
S: +OK
"""


def two_files(real: RealServers, tmp_path: Path) -> list[str]:
    write(tmp_path, "login.mt", DOVECOT_SESSION.format(
        host=real.host, port=real.imap, user=real.user))
    write(tmp_path, "pop3.mt", POP3_SESSION.format(host=real.host, port=real.pop3))
    return ["login.mt", "pop3.mt"]


@pytest.mark.parametrize("how", ["--lang nl", "LANG=nl_NL.UTF-8"])
def test_run_against_dovecot_in_dutch(
    real_servers: RealServers, tmp_path: Path, how: str
) -> None:
    option = ["--lang", "nl"] if how.startswith("--") else []
    result = mailtalk("run", *option, *two_files(real_servers, tmp_path), cwd=tmp_path,
                      locale=ENGLISH_LOCALE if option else DUTCH_LOCALE)
    assert result.returncode == 1, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FOUT login.mt (6 stappen, "), describe(result)
    assert lines[1] == (
        "  login.mt:7: S: OK verwacht, maar gekregen: a2 NO [AUTHENTICATIONFAILED] "
        "Authentication failed."), describe(result)
    assert lines[2].startswith("    ↳ aanmelden mislukt (blijvend): "), describe(result)
    assert lines[3].startswith("GOED pop3.mt (4 stappen, ")
    assert lines[4] == "2 bestanden: 1 goed, 1 fout"
    assert not [line for line in lines if line.startswith(("FAIL", "PASS"))]
    without(result.stdout, "expected S:", "files:")


def test_run_in_english_is_unchanged_and_a_refused_port_in_dutch(
    real_servers: RealServers, tmp_path: Path
) -> None:
    result = mailtalk("run", *two_files(real_servers, tmp_path), cwd=tmp_path,
                      locale=ENGLISH_LOCALE)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FAIL login.mt (6 steps, "), describe(result)
    assert lines[1] == ("  login.mt:7: expected S: OK, got: a2 NO [AUTHENTICATIONFAILED] "
                        "Authentication failed.")
    assert lines[3].startswith("PASS pop3.mt (4 steps, ")
    assert lines[4] == "2 files: 1 passed, 1 failed"
    port = refused_port()
    write(tmp_path, "refused.mt", f"connect imap://127.0.0.1:{port}\nS: * OK\n")
    result = mailtalk("run", "--lang", "nl", "refused.mt", cwd=tmp_path, locale=ENGLISH_LOCALE)
    assert result.returncode == 3, describe(result)
    assert result.stdout.splitlines()[1] == (
        f"  refused.mt:1: kan geen verbinding maken met 127.0.0.1 poort {port}: "
        "verbinding geweigerd")


def test_run_json_stays_english(real_servers: RealServers, tmp_path: Path) -> None:
    result = mailtalk("run", "--json", *two_files(real_servers, tmp_path)[:1], cwd=tmp_path,
                      locale=DUTCH_LOCALE)
    last = json.loads(result.stdout.splitlines()[-1])
    failure = last["failures"][0]
    assert failure["message"].startswith("expected S: OK, got: a2 NO"), failure
    assert failure["explanation"].startswith("authentication failed (permanent)"), failure


def test_run_says_a_bad_session_file_in_dutch(tmp_path: Path) -> None:
    """Bad input: one line in the locale's language, exit 2, nothing run."""
    write(tmp_path, "typo.mt", "conect imap://127.0.0.1\n")
    write(tmp_path, "vars.mt", "connect imap://127.0.0.1:${PORT}\n")
    result = mailtalk("run", "typo.mt", cwd=tmp_path, locale=DUTCH_LOCALE)
    assert (result.returncode, result.stdout) == (2, ""), describe(result)
    assert result.stderr == (
        "mailtalk: typo.mt:1: geen C:, S:, opdracht of commentaar: is typo.mt wel een "
        "sessiebestand? (de tekst wordt niet getoond) bedoelde je connect?\n")
    result = mailtalk("run", "--lang", "nl", "vars.mt", cwd=tmp_path, locale=ENGLISH_LOCALE)
    assert result.returncode == 2, describe(result)
    assert result.stderr == (
        "mailtalk: vars.mt:1: onbekende variabele ${PORT}: zet hem in het bestand, geef "
        "--var PORT=..., of export PORT\n")
    result = mailtalk("run", "vars.mt", cwd=tmp_path, locale=ENGLISH_LOCALE)
    assert result.stderr == (
        "mailtalk: vars.mt:1: undefined variable ${PORT}: set it in the file, give "
        "--var PORT=..., or export PORT\n")
