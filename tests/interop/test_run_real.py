"""``mailtalk run`` session files against the real Postfix and Dovecot.

The scripts are the ones a user would write from the RFCs' own examples: Postfix's
relay refusal on port 25, submission on 587 with STARTTLS and AUTH delivering to
alice, POP3 on 110 and IMAP on 143. The installed ``mailtalk`` runs as a process.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.interop.conftest import RealServers
from tests.script.runs import MAILTALK, describe, mailtalk_env, run, write

pytestmark = pytest.mark.interop

MAILDIR = Path("/home/alice/Maildir")


def find_delivered(subject: str, timeout: float = 10.0) -> bytes:
    needle = f"Subject: {subject}".encode()
    deadline = time.monotonic() + timeout
    while True:
        for folder in ("new", "cur"):
            directory = MAILDIR / folder
            for path in directory.iterdir() if directory.is_dir() else ():
                try:
                    raw = path.read_bytes()
                except OSError:
                    continue
                if needle in raw:
                    return raw
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with subject {subject!r} in {MAILDIR}")
        time.sleep(0.1)


def no_secret(servers: RealServers, *texts: str) -> None:
    for text in texts:
        assert servers.password not in text, f"the password leaked:\n{text}"


RELAY = """\
# Postfix refuses to relay for a stranger on port 25
connect smtp://{host}:{port}
S: 220 *ESMTP Postfix*
C: EHLO client.test
S: 250 STARTTLS
C: MAIL FROM:<bill@isp.test>
S: 250 2.1.0
C: RCPT TO:<linus@torvalds.org>
S: {expect}
C: RSET
S: 250
C: QUIT
S: 221
expect-close
"""


def test_relay_denied_as_expected(real_servers: RealServers, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "relay.mt",
        RELAY.format(
            host=real_servers.host,
            port=real_servers.smtp,
            expect="554 5.7.1 *Relay access denied*",
        ),
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith(f"PASS {script} (")


def test_relay_denied_unexpected_is_explained(real_servers: RealServers, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "relay.mt",
        RELAY.format(host=real_servers.host, port=real_servers.smtp, expect="250"),
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 1, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"FAIL {script}")
    assert lines[1] == (
        f"  {script}:9: expected S: 250, got: 554 5.7.1 <linus@torvalds.org>: Relay access denied"
    )
    assert lines[2].startswith("    ↳ ") and "relay" in lines[2].lower()


SUBMIT = """\
connect smtp://localhost:{port} {tls_option}
S: 220
C: EHLO client.test
S: 250 STARTTLS
starttls
tls
C: EHLO client.test
S: 250 *AUTH PLAIN LOGIN*
auth {mechanism} {user}
C: MAIL FROM:<{address}>
S: 250 2.1.0
C: RCPT TO:<{address}>
S: 250 2.1.5
data <<EOF
From: {address}
To: {address}
Subject: {subject}

sent by mailtalk run through Postfix
.a line with a leading dot
EOF
S: 250 2.0.0 /queued as [0-9A-Z]+/
C: QUIT
S: 221
"""


@pytest.mark.parametrize(
    ("mechanism", "tls_option"),
    [("plain", "cafile={cafile}"), ("login", "insecure")],
)
def test_submission_starttls_auth_delivers_to_alice(
    real_servers: RealServers, tmp_path: Path, mechanism: str, tls_option: str
) -> None:
    subject = f"mailtalk run {mechanism} {uuid.uuid4().hex}"
    script = write(
        tmp_path,
        "submit.mt",
        SUBMIT.format(
            port=real_servers.submission,
            tls_option=tls_option.format(cafile=real_servers.cafile),
            mechanism=mechanism,
            user=real_servers.user,
            address=real_servers.address,
            subject=subject,
        ),
    )
    result = run(tmp_path, "-v", str(script), password=real_servers.password)
    assert result.returncode == 0, describe(result)
    no_secret(real_servers, result.stdout, result.stderr)
    assert f"C: AUTH {mechanism.upper()}" in result.stdout
    assert "S: 235 2.7.0 Authentication successful" in result.stdout
    raw = find_delivered(subject)
    assert b"\n.a line with a leading dot\n" in raw
    assert b"\n..a line" not in raw


def test_submission_offers_no_auth_before_starttls(
    real_servers: RealServers, tmp_path: Path
) -> None:
    script = write(
        tmp_path,
        "early.mt",
        f"connect smtp://localhost:{real_servers.submission}\nS: 220\nC: EHLO client.test\n"
        f"S: 250\nauth plain {real_servers.user}\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, str(script), password=real_servers.password)
    assert result.returncode == 6, describe(result)
    assert f"{script}:5: expected S: auth plain {real_servers.user} to succeed" in result.stdout
    no_secret(real_servers, result.stdout, result.stderr)


def test_submission_wrong_password(real_servers: RealServers, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "wrong.mt",
        f"connect smtp://localhost:{real_servers.submission} cafile={real_servers.cafile}\n"
        "S: 220\nC: EHLO client.test\nS: 250\nstarttls\nC: EHLO client.test\nS: 250\n"
        f"auth plain {real_servers.user}\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, str(script), password="not-" + real_servers.password + "-at-all")
    assert result.returncode == 6, describe(result)
    assert f"{script}:8: " in result.stdout and "535" in result.stdout
    assert "↳" in result.stdout


def test_submission_untrusted_certificate(real_servers: RealServers, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "untrusted.mt",
        f"connect smtp://localhost:{real_servers.submission}\nS: 220\nC: EHLO x\nS: 250\n"
        "starttls\n",
    )
    result = run(tmp_path, str(script))
    assert result.returncode == 4, describe(result)
    assert f"{script}:5: " in result.stdout


def test_pop3_session(real_servers: RealServers, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "pop.mt",
        f"""\
connect pop3://{real_servers.host}:{real_servers.pop3}
S: +OK *ready*
C: CAPA
S: +OK
C: USER {real_servers.user}
S: +OK
C: PASS ${{PASSWORD}}
S: +OK /logged in/
C: STAT
S: +OK /^\\d+ \\d+$/
C: LIST
S: +OK
C: RETR 1
S: +OK
C: QUIT
S: +OK
expect-close
""",
    )
    result = run(tmp_path, "--json", str(script), PASSWORD=real_servers.password)
    assert result.returncode == 0, describe(result)
    no_secret(real_servers, result.stdout, result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    sent = [(r["dir"], r["text"]) for r in records if "dir" in r]
    assert ("C", "PASS ***") in sent
    index = sent.index(("C", "LIST"))
    retr = sent.index(("C", "RETR 1"))
    # the whole listing came before RETR was sent: as one record (a long one is cut
    # short in the record, "..." at its end) or line by line up to "."
    between = sent[index + 1 : retr]
    assert between and all(direction == "S" for direction, _ in between)
    assert between[0][1].startswith("+OK")
    lines = "\n".join(text for _, text in between).replace("\\r\\n", "\n").splitlines()
    listing = [line for line in lines[1:] if line not in (".", "...")]
    assert listing and all(line.split()[0].isdigit() for line in listing[:-1])
    assert records[-1]["result"] == "pass"


def test_imap_session(real_servers: RealServers, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "imap.mt",
        f"""\
connect imap://{real_servers.host}:{real_servers.imap}
S: * OK *Dovecot*ready*
C: CAPABILITY
S: * CAPABILITY *IMAP4rev1*
S: OK
C: LOGIN {real_servers.user} ${{PASSWORD}}
S: OK *Logged in*
C: SELECT INBOX
S: * /^\\d+ EXISTS$/
S: * OK *UIDVALIDITY*
S: OK *READ-WRITE*
C: FETCH 1 (FLAGS)
S: * /^1 FETCH \\(FLAGS/
S: OK
C: NOSUCHCOMMAND
S: BAD
C: LOGOUT
S: * BYE *
S: OK
""",
    )
    report = tmp_path / "imap.xml"
    result = run(
        tmp_path, "--json", "--junit", str(report), str(script), PASSWORD=real_servers.password
    )
    assert result.returncode == 0, describe(result)
    no_secret(real_servers, result.stdout, result.stderr, report.read_text(encoding="utf-8"))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    sent = [r["text"] for r in records if r.get("dir") == "C"]
    assert sent[:3] == [
        "a001 CAPABILITY",
        f"a002 LOGIN {real_servers.user} ***",
        "a003 SELECT INBOX",
    ]
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "1" and suite.get("failures") == "0"


def test_imap_starttls_and_auth_directive(real_servers: RealServers, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "imaptls.mt",
        f"connect imap://localhost:{real_servers.imap} cafile={real_servers.cafile}\n"
        "S: OK\nstarttls\ntls\n"
        f"auth plain {real_servers.user}\nC: SELECT INBOX\nS: OK\nC: LOGOUT\nS: OK\n",
    )
    result = run(tmp_path, "-v", str(script), password=real_servers.password)
    assert result.returncode == 0, describe(result)
    assert "C: a001 STARTTLS" in result.stdout
    no_secret(real_servers, result.stdout, result.stderr)


def test_repeat_against_postfix(real_servers: RealServers, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "hello.mt",
        f"connect smtp://{real_servers.host}:{real_servers.smtp}\nS: 220\nC: EHLO load.test\n"
        "S: 250\nC: QUIT\nS: 221\n",
    )
    result = run(tmp_path, "--repeat", "8", "--concurrency", "4", str(script))
    assert result.returncode == 0, describe(result)
    assert "8/8 runs on new connections passed" in result.stdout
    assert "p50" in result.stdout and "p99" in result.stdout


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# Logins typed by hand in pipe mode: (service, what is typed, the recorded login line)
TYPED = {
    "postfix submission AUTH LOGIN": ("submission", [
        "EHLO client.test", "AUTH LOGIN", "{user64}", "{password64}", "MAIL FROM:<{address}>",
        "RSET", "QUIT",
    ], "auth login {user}"),
    "dovecot pop3 USER/PASS": ("pop3", [
        "USER {user}", "PASS {password}", "STAT", "QUIT",
    ], "C: PASS ${{MAILTALK_PASSWORD}}"),
    "dovecot pop3 AUTH PLAIN": ("pop3", [
        "AUTH PLAIN", "{plain}", "STAT", "QUIT",
    ], "auth plain {user}"),
    "dovecot imap LOGIN": ("imap", [
        "a1 LOGIN {user} {password}", "a2 SELECT INBOX", "a3 LOGOUT",
    ], "C: a1 LOGIN {user} ${{MAILTALK_PASSWORD}}"),
    "dovecot imap AUTHENTICATE PLAIN": ("imap", [
        "a1 AUTHENTICATE PLAIN", "{plain}", "a2 SELECT INBOX", "a3 LOGOUT",
    ], "auth plain {user}"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TYPED))
def test_a_recorded_typed_login_replays_green(
    real_servers: RealServers, tmp_path: Path, case: str
) -> None:
    """Record a login typed by hand (pipe mode, --record), then replay the file with
    only MAILTALK_PASSWORD set: the password is in neither the file nor the output."""
    service, typed, login = TYPED[case]
    user, password = real_servers.user, real_servers.password
    values = {
        "user": user,
        "password": password,
        "user64": b64(user),
        "password64": b64(password),
        "plain": b64(f"\0{user}\0{password}"),
        "address": real_servers.address,
    }
    record = tmp_path / "typed.mt"
    port = getattr(real_servers, service)
    protocol = "smtp" if service == "submission" else service
    done = subprocess.run(
        [MAILTALK, protocol, f"localhost:{port}", "--cafile", real_servers.cafile,
         "--record", str(record)],
        input="".join(line.format(**values) + "\n" for line in typed).encode(),
        capture_output=True, env=mailtalk_env(tmp_path, None), timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    text = record.read_text(encoding="utf-8")
    no_secret(real_servers, text)
    assert values["password64"] not in text and values["plain"] not in text, text
    assert login.format(**values) in text.splitlines(), text
    result = run(tmp_path, "-v", str(record), password=password)
    assert result.returncode == 0, text + describe(result)
    no_secret(real_servers, result.stdout, result.stderr)
