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
    write(tmp_path, "code.mt", "connect smtp://127.0.0.1\nS: 2500 Ok\n")
    result = mailtalk("run", "code.mt", cwd=tmp_path, locale=DUTCH_LOCALE)
    assert (result.returncode, result.stderr) == (2, (
        "mailtalk: code.mt:2: 2500 is geen antwoordcode (1 tot 5, dan twee cijfers of x: 250, "
        "2xx, 25x)\n")), describe(result)
    write(tmp_path, "imap.mt", "connect imap://127.0.0.1\nS: 250 Ok\n")
    result = mailtalk("run", "--lang", "nl", "imap.mt", cwd=tmp_path, locale=ENGLISH_LOCALE)
    assert (result.returncode, result.stderr) == (2, (
        "mailtalk: imap.mt:2: 250 is een antwoordcode van SMTP; IMAP antwoordt OK, NO of "
        "BAD\n")), describe(result)
    (tmp_path / "dir.mt").mkdir()
    write(tmp_path, "ca.mt", "connect imaps://127.0.0.1 cafile=/etc/hostname\n")
    for name, said in [
        ("dir.mt", "dir.mt: kan dir.mt niet lezen: een map, geen sessiebestand"),
        ("ca.mt", "ca.mt:1: cafile=/etc/hostname: er staat geen CA-certificaat in (PEM "
                  "verwacht)"),
    ]:
        result = mailtalk("run", name, cwd=tmp_path, locale=DUTCH_LOCALE)
        assert (result.returncode, result.stderr) == (2, f"mailtalk: {said}\n"), describe(result)
    # a config file's host whose cafile holds no certificate
    write(tmp_path, "hosts.toml", '[hosts.work]\nserver = "127.0.0.1"\ncafile = "/etc/hostname"\n')
    write(tmp_path, "work.mt", "connect imaps://work:993\nS: * OK\n")
    result = mailtalk("--config", "hosts.toml", "run", "work.mt", cwd=tmp_path,
                      locale=DUTCH_LOCALE)
    assert result.stdout.splitlines()[1] == (
        "  work.mt:1: [hosts.work] cafile /etc/hostname: er staat geen CA-certificaat in (PEM "
        "verwacht)"), describe(result)
    result = mailtalk("run", "code.mt", cwd=tmp_path, locale=ENGLISH_LOCALE)
    assert result.stderr == ("mailtalk: code.mt:2: 2500 is not a reply code (1 to 5, then two "
                             "digits or x: 250, 2xx, 25x)\n")


# -- mx ---------------------------------------------------------------------------------

# exim.test's MX is the rig's Exim (STARTTLS, a self-signed certificate); broken.test's
# MX has no address; example.org takes no mail (null MX)
MX_RECORDS = """\
exim.test MX 10 mx.exim.test
mx.exim.test A 127.0.0.6
broken.test MX 10 gone.broken.test
example.org MX 0 .
"""


@pytest.fixture
def mx_dns(mailtalk_servers: Any) -> str:
    """``mailtalk serve --dns`` with MX_RECORDS, as --resolver takes it."""
    root = Path(tempfile.mkdtemp(prefix="mt-mx-"))
    (root / "dns").mkdir()
    (root / "dns" / "records").write_text(MX_RECORDS)
    return f"127.0.0.1:{mailtalk_servers(root=root, dns=0).port('dns')}"


def mx(resolver: str, *args: str, locale: dict[str, str]) -> Any:
    return mailtalk("mx", "--resolver", resolver, "--timeout", "5", *args, locale=locale)


@pytest.mark.parametrize("how", ["--lang nl", "LANG=nl_NL.UTF-8"])
def test_mx_probe_of_exim_in_dutch(exim: Peer, mx_dns: str, how: str) -> None:
    option = ["--lang", "nl"] if how.startswith("--") else []
    result = mx(mx_dns, *option, "--probe", "--port", str(exim.port("smtp")), "exim.test",
                locale=ENGLISH_LOCALE if option else DUTCH_LOCALE)
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "exim.test heeft 1 MX-record"
    assert lines[1].split() == ["10", "mx.exim.test", "127.0.0.6"]
    assert lines[2] == f"resolver: {mx_dns}"
    lesson = " ".join(result.stdout.split())
    assert ("Mail aan @exim.test gaat niet van de computer van de afzender naar die van de "
            "ontvanger: de mailserver van de afzender zoekt deze records op en geeft het "
            "bericht aan mx.exim.test") in lesson
    probe: list[str] = []  # a line of the probe and its continuations (80 columns)
    for line in lines[lines.index("Proefverbindingen:") + 1:]:
        if line.startswith("      ") and probe:
            probe[-1] += " " + line.strip()
        else:
            probe.append(line)
    assert probe[0] == f"mx.exim.test 127.0.0.6:{exim.port('smtp')}"
    assert probe[1].startswith("  verbonden in ") and probe[1].endswith(" ms")
    assert probe[2].startswith("  begroeting (") and " ms): 220 " in probe[2]  # Exim's words
    assert probe[3].startswith("  EHLO (") and "STARTTLS" in probe[3]
    assert probe[4].startswith("  STARTTLS: werkt (") and "TLSv1." in probe[4], describe(result)
    assert probe[5].startswith("  certificaat: ") and ", van " in probe[5], describe(result)
    # Exim's self-signed certificate is not trusted without --cafile
    assert probe[6].startswith("  certificaat NIET gecontroleerd: "), describe(result)
    assert probe[-1].endswith(" ms in totaal")
    without(result.stdout, "has 1 MX", "Mail to", "connected in", "banner", "works",
            "certificate", "in all")


def test_mx_in_english_and_json_unchanged(exim: Peer, mx_dns: str) -> None:
    result = mx(mx_dns, "--probe", "--port", str(exim.port("smtp")), "exim.test",
                locale=ENGLISH_LOCALE)
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith("exim.test has 1 MX record\n")
    for words in ["Probe:", "  connected in ", "  banner (", "  STARTTLS: works (",
                  "  certificate NOT verified: ", " ms in all", "Mail to @exim.test"]:
        assert words in result.stdout, result.stdout
    without(result.stdout, "heeft", "Proef", "verbonden", "certificaat")
    result = mx(mx_dns, "--json", "--lang", "nl", "broken.test", locale=DUTCH_LOCALE)
    document = json.loads(result.stdout)
    assert document["message"] == "broken.test has 1 MX record"
    assert document["hosts"][0]["error"] == "gone.broken.test does not exist (NXDOMAIN)"
    assert document["resolver"] == mx_dns
    assert document["lesson"].startswith("Mail to @broken.test does not go")


def test_mx_answers_and_errors_in_dutch(mx_dns: str) -> None:
    result = mx(mx_dns, "broken.test", locale=DUTCH_LOCALE)
    assert result.returncode == 1, describe(result)
    assert result.stdout.splitlines()[1].split() == [
        "10", "gone.broken.test", "geen", "adres:", "gone.broken.test", "bestaat", "niet",
        "(NXDOMAIN)"]
    result = mx(mx_dns, "--brief", "example.org", locale=DUTCH_LOCALE)
    assert result.returncode == 1, describe(result)
    assert result.stdout.splitlines() == [
        "example.org publiceert een null MX (RFC 7505): het neemt helemaal geen mail aan",
        "  0  .  (null MX: geen mail)",
        f"resolver: {mx_dns}",
    ], describe(result)
    result = mx(mx_dns, "--probe", "example.org", locale=DUTCH_LOCALE)
    assert "\nProefverbindingen: geen MX-adres om mee te verbinden\n" in result.stdout
    # a name outside the served zones: REFUSED, said in Dutch
    result = mx(mx_dns, "elsewhere.example", locale=DUTCH_LOCALE)
    assert result.returncode == 3, describe(result)
    assert result.stdout.startswith(
        f"de resolver {mx_dns} weigerde te antwoorden voor elsewhere.example (REFUSED)")
    assert "Zonder antwoord van de DNS kan de mailserver" in " ".join(result.stdout.split())
    for args, said in [
        (["a..b"], "mailtalk: 'a..b' is geen domeinnaam\n"),
        (["x-.test"], "mailtalk: 'x-.test' is geen domeinnaam: 'x-' is geen geldig label "
                      "(alleen letters, cijfers en koppeltekens binnenin)\n"),
        (["alice@[192.0.2.1]"], "mailtalk: '[192.0.2.1]' is een letterlijk adres: het heeft "
                                "geen MX, de mail gaat daarheen\n"),
    ]:
        result = mx(mx_dns, *args, locale=DUTCH_LOCALE)
        assert (result.returncode, result.stderr) == (2, said), describe(result)
    result = mailtalk("mx", "--resolver", "nowhere.invalid", "exim.test", locale=DUTCH_LOCALE)
    assert result.stderr == (
        "mailtalk: --resolver nowhere.invalid: kan het adres van nowhere.invalid niet vinden\n")
    result = mailtalk("mx", "--resolver", "127.0.0.1:99999", "exim.test", locale=DUTCH_LOCALE)
    assert (result.returncode, result.stderr) == (
        2, "mailtalk: --resolver 127.0.0.1:99999: '99999' is geen poortnummer (1-65535)\n")


def test_send_says_an_mx_without_address_in_dutch(mx_dns: str) -> None:
    result = mailtalk("send", "--from", "a@example.com", "--to", "bob@broken.test",
                      "--resolver", mx_dns, "--timeout", "5", locale=DUTCH_LOCALE)
    assert result.returncode == 3, describe(result)
    assert "#    10 gone.broken.test (gone.broken.test bestaat niet (NXDOMAIN))" in (
        result.stdout), describe(result)
    assert result.stderr == (
        "mailtalk: bob@broken.test: geen enkele MX-host van broken.test heeft een adres\n")


# -- the TLS options, XCLIENT ------------------------------------------------------------


def test_tls_option_errors_in_dutch(real_servers: RealServers, tmp_path: Path) -> None:
    """Said before connecting, as one line, exit 2, in the language of the command."""
    no_key = tmp_path / "cert-only.pem"
    no_key.write_text(Path(real_servers.cafile).read_text().split("-----END CERTIFICATE-----")[0]
                      + "-----END CERTIFICATE-----\n")
    server = f"{real_servers.host}:{real_servers.smtp}"
    send = ["send", "--from", real_servers.address, "--to", "bob@example.net",
            "--server", server]
    for extra, said in [
        (["--cert", str(no_key)],
         f"--cert {no_key}: geen privésleutel in het certificaatbestand: geef hem met --key"),
        (["--key", str(no_key)], "--key heeft --cert nodig (het certificaat waar de sleutel "
                                 "bij hoort)"),
        (["--ciphers", "NO-SUCH-CIPHER"], "--ciphers NO-SUCH-CIPHER: OpenSSL kent geen enkele "
                                          "cipher uit deze lijst (zie `openssl ciphers -v`)"),
        (["--tls-min", "1.3", "--tls-max", "1.2"], "--tls-min 1.3 is hoger dan --tls-max 1.2"),
        (["--cafile", str(tmp_path)], f"ongeldige waarde voor '--cafile': '{tmp_path}' is een "
                                      "map"),  # click's own words, in Dutch
        (["--cafile", "/etc/hostname"], "ongeldige waarde voor '--cafile': /etc/hostname: er "
                                        "staat geen CA-certificaat in (PEM verwacht)"),
    ]:
        result = mailtalk(*send, *extra, locale=DUTCH_LOCALE)
        assert (result.returncode, result.stdout) == (2, ""), describe(result)
        assert result.stderr == f"mailtalk: {said}\n", describe(result)
    # a config file's host whose cafile holds no certificate, said as --cafile's
    config = tmp_path / "hosts.toml"
    config.write_text(f'[hosts.work]\nserver = "{server}"\ncafile = "/etc/hostname"\n')
    result = mailtalk("--config", str(config), "send", "--from", real_servers.address,
                      "--to", "bob@example.net", "--server", "work", locale=DUTCH_LOCALE)
    assert (result.returncode, result.stderr) == (2, (
        "mailtalk: [hosts.work] cafile /etc/hostname: er staat geen CA-certificaat in (PEM "
        "verwacht)\n")), describe(result)
    result = mailtalk(*send, "--key", str(no_key), locale=ENGLISH_LOCALE)
    assert result.stderr == "mailtalk: --key needs --cert (the certificate it belongs to)\n"
    result = mailtalk(*send, "--cafile", "/etc/hostname", "--json", locale=DUTCH_LOCALE)
    assert result.stderr == ("mailtalk: invalid value for '--cafile': /etc/hostname: no CA "
                             "certificate in it (PEM expected)\n"), describe(result)


def test_xclient_postfix_does_not_offer_said_in_dutch(real_servers: RealServers) -> None:
    """Postfix's port 25 does not trust loopback for XCLIENT: why, in Dutch."""
    result = mailtalk(
        "send", "--from", real_servers.address, "--to", real_servers.address,
        "--server", f"{real_servers.host}:{real_servers.smtp}", "--xclient", "ADDR=192.0.2.1",
        locale=DUTCH_LOCALE,
    )
    assert result.returncode == 1, describe(result)
    assert "C: XCLIENT" not in result.stdout and "C: MAIL" not in result.stdout
    assert result.stderr == (
        f"mailtalk: {real_servers.address}: de server bood geen XCLIENT aan in zijn antwoord "
        "op EHLO (Postfix biedt het alleen aan smtpd_authorized_xclient_hosts)\n"
    ), describe(result)


def test_send_bad_server_and_dsn_notify_in_dutch(real_servers: RealServers) -> None:
    send = ["send", "--from", real_servers.address, "--to", real_servers.address]
    for extra, said in [
        (["--server", f"{real_servers.host}:99999"],
         "--server: '99999' is geen poortnummer (1-65535)"),
        (["--server", f"lmtp://{real_servers.host}", "--tls"],
         "--server: LMTP kent geen directe TLS: laat --tls weg"),
        (["--server", f"{real_servers.host}:{real_servers.smtp}", "--dsn-notify", "SOMETIMES"],
         "--dsn-notify 'SOMETIMES': geef NEVER, of een of meer van SUCCESS,FAILURE,DELAY "
         "(zonder herhaling)"),
    ]:
        result = mailtalk(*send, *extra, locale=DUTCH_LOCALE)
        assert (result.returncode, result.stdout) == (2, ""), describe(result)
        assert result.stderr == f"mailtalk: {said}\n", describe(result)
    result = mailtalk(*send, "--server", f"{real_servers.host}:99999", locale=ENGLISH_LOCALE)
    assert result.stderr == "mailtalk: --server: '99999' is not a port number (1-65535)\n"


def test_run_says_dovecots_untrusted_certificate_in_dutch(
    real_servers: RealServers, tmp_path: Path
) -> None:
    """Dovecot's certificate is not in the system's trust store: the way out is said as
    a session file says it (cafile= and insecure on the connect line), in Dutch."""
    write(tmp_path, "tls.mt", f"connect imaps://localhost:{real_servers.imaps}\nS: * OK\n")
    result = mailtalk("run", "--lang", "nl", "tls.mt", cwd=tmp_path, locale=ENGLISH_LOCALE)
    assert result.returncode == 4, describe(result)
    failure = " ".join(result.stdout.split())
    assert "tls.mt:1: het certificaat van localhost" in failure, describe(result)
    assert ("Gebruik cafile=FILE op de connect-regel om de uitgever te vertrouwen, of insecure "
            "op de connect-regel om de controle over te slaan.") in failure, describe(result)
    without(failure, "on the connect line", "--cafile", "--insecure")
