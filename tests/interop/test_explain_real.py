"""Explanations of real peers' replies (issue 11 items 25-27, 29): mailtalk in pipe
mode against Postfix, Exim, OpenSMTPD and GNU Mailutils; the inline ``↳`` line,
and ``mailtalk explain --json`` given the same reply and the server's greeting.
"""

from __future__ import annotations

import imaplib
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.interop.clients import client_env, mailtalk_command
from tests.interop.conftest import Peer, RealServers, _unavailable

pytestmark = pytest.mark.interop

TIMEOUT = 60
PLAIN_SECRET = "AGFsaWNlAHNlY3JldA=="  # \0alice\0secret


def pipe(args: list[str], lines: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mailtalk_command(), *args],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        env=client_env(tmp_path),
        timeout=TIMEOUT,
        check=False,
        start_new_session=True,
    )


def explain_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [*mailtalk_command(), "explain", "--json", *args],
        capture_output=True,
        text=True,
        env=client_env(tmp_path),
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def explained_after(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each failure reply (``S:`` line) and its ``↳`` explanation, in order.

    Pipe mode writes the conversation on stdout and the notes on stderr; the n-th
    explanation belongs to the n-th reply that got one, so the replies are
    matched by reading the two streams side by side.
    """
    notes: list[str] = []
    for line in result.stderr.splitlines():
        if "↳" in line:
            notes.append(line.split("↳", 1)[1].strip())
        elif notes and line.startswith("#  "):
            notes[-1] += " " + line[1:].strip()
    failures = [
        line[3:]
        for line in result.stdout.splitlines()
        if line.startswith("S: ") and _failure(line[3:])
    ]
    return dict(zip(failures, notes, strict=False))


def _failure(reply: str) -> bool:
    words = reply.split()
    if not words:
        return False
    if words[0][:1] in "45" and words[0][:3].isdigit() and words[0][3:4] in ("", "-"):
        return words[0][3:4] == ""  # the last line of an SMTP failure
    if words[0] == "-ERR":
        return True
    return len(words) > 1 and words[1] in ("NO", "BAD", "BYE")


def greeting(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.splitlines()[0].removeprefix("S: ")


# --- AUTH where the server offers none (item 26) -----------------------------------------


def _auth_refused(result: subprocess.CompletedProcess[str], tmp_path: Path, reply: str) -> None:
    said = explained_after(result)
    assert reply in said, shown(result)
    assert "does not offer AUTH here" in said[reply] and "STARTTLS" in said[reply]
    data = explain_json(tmp_path, "--banner", greeting(result), "--command", "AUTH", reply)
    assert data["category"] == "syntax_error"
    assert any("587" in fix and "STARTTLS" in fix for fix in data["fixes"]["user"]), data


def test_postfix_port_25_auth_not_enabled(real_servers: RealServers, tmp_path: Path) -> None:
    result = pipe(
        ["smtp", f"{real_servers.host}:{real_servers.smtp}"],
        ["EHLO client.test", f"AUTH PLAIN {PLAIN_SECRET}", "QUIT"],
        tmp_path,
    )
    _auth_refused(result, tmp_path, "503 5.5.1 Error: authentication not enabled")


def test_exim_auth_before_starttls(exim: Peer, tmp_path: Path) -> None:
    result = pipe(
        ["smtp", f"{exim.host}:{exim.port('smtp')}"],
        ["EHLO client.test", f"AUTH PLAIN {PLAIN_SECRET}", "QUIT"],
        tmp_path,
    )
    _auth_refused(result, tmp_path, "503 AUTH command used when not advertised")


def test_opensmtpd_auth_without_an_auth_listener(opensmtpd: Peer, tmp_path: Path) -> None:
    result = pipe(
        ["smtp", f"{opensmtpd.host}:{opensmtpd.port('smtp')}"],
        ["EHLO client.test", f"AUTH PLAIN {PLAIN_SECRET}", "QUIT"],
        tmp_path,
    )
    _auth_refused(result, tmp_path, "503 5.5.1 Invalid command: Command not supported")


# --- wordings that claimed too much (item 27) ------------------------------------------


def test_exim_sender_syntax_and_unknown_local_user(exim: Peer, tmp_path: Path) -> None:
    result = pipe(
        ["smtp", f"{exim.host}:{exim.port('smtp')}"],
        [
            "EHLO client.test",
            "MAIL FROM:bad",
            "MAIL FROM:<bill@isp.test>",
            f"RCPT TO:<nosuch@{exim.domain}>",
            "RCPT TO:<linus@torvalds.org>",
            "QUIT",
        ],
        tmp_path,
    )
    said = explained_after(result)
    sender = said.get("501 bad: sender address must contain a domain", "")
    assert sender.startswith("sender address refused") and "malformed" in sender, shown(result)
    assert "block list" not in sender
    # Exim's greeting names a host in the recipient's domain: it handles the domain
    # itself, so "Unrouteable address" is an unknown user there
    assert said.get("550 Unrouteable address", "").startswith("no such recipient"), shown(result)
    assert said.get("550 relay not permitted", "").startswith("relaying denied")
    data = explain_json(
        tmp_path,
        "--banner", greeting(result),
        "--command", f"RCPT TO:<nosuch@{exim.domain}>",
        "550 Unrouteable address",
    )
    assert (data["category"], data["software"]) == ("unknown_user", "Exim")
    assert any("DNS" in cause for cause in data["causes"])  # the other reading, second
    sender_data = explain_json(
        tmp_path, "--command", "MAIL FROM:bad", "501 bad: sender address must contain a domain"
    )
    assert sender_data["matched"]["id"] == "sender-address-syntax"


def test_opensmtpd_invalid_recipient_of_its_own_domain(opensmtpd: Peer, tmp_path: Path) -> None:
    result = pipe(
        ["smtp", f"{opensmtpd.host}:{opensmtpd.port('smtp')}"],
        [
            "EHLO client.test",
            "MAIL FROM:<bill@isp.test>",
            f"RCPT TO:<nosuch@{opensmtpd.domain}>",
            "QUIT",
        ],
        tmp_path,
    )
    said = explained_after(result)
    reply = f"550 Invalid recipient: <nosuch@{opensmtpd.domain}>"
    assert said.get(reply, "").startswith("no such recipient"), shown(result)
    data = explain_json(tmp_path, "--banner", greeting(result), reply)
    assert data["software"] == "OpenSMTPD"
    # the same words refuse a relay: that reading comes second
    assert any("relay" in cause for cause in data["causes"][1:]), data


# --- GNU Mailutils (items 25, 27, 29) ------------------------------------------------


def _inbox_has_a_message(peer: Peer) -> None:
    """Make sure alice's INBOX on the Mailutils server holds a message."""
    imap = imaplib.IMAP4(peer.host, peer.port("imap"), timeout=TIMEOUT)
    try:
        imap.login(peer.user, peer.password)
        status, data = imap.select("INBOX")
        assert status == "OK", data
        if int(data[0] or 0) == 0:
            message = b"From: bill@isp.test\r\nSubject: for the explain tests\r\n\r\nhi\r\n"
            status, data = imap.append("INBOX", None, None, message)
            assert status == "OK", data
    finally:
        imap.logout()


def test_mailutils_imap_replies(mailutils: Peer, tmp_path: Path) -> None:
    _inbox_has_a_message(mailutils)
    result = pipe(
        ["imap", f"{mailutils.host}:{mailutils.port('imap')}"],
        [
            f"LOGIN {mailutils.user} {mailutils.password}",
            "SELECT INBOX",
            "COPY 1 nosuchbox",
            "FETCH 1 (FOO)",
            "APPEND INBOX a b c d",
            "LOGOUT",
        ],
        tmp_path,
    )
    lines = result.stdout.splitlines()
    assert "S: * BYE Session terminating." in lines, shown(result)
    replies = {line.split(None, 2)[2] for line in lines if line.startswith("S: a")}
    assert "NO COPY [TRYCREATE] failed" in replies, shown(result)
    said = list(explained_after(result).items())
    # COPY, FETCH and APPEND failed; the goodbye to LOGOUT is no outage
    assert len(said) == 3, shown(result)
    (copy_reply, copy), *bad = said
    assert "CREATE" in copy, copy
    for reply, line in bad:
        assert " BAD " in f" {reply} " and line.startswith("syntax error"), (reply, line)
        for smtp_word in ("MAIL FROM", "RCPT", "EHLO"):
            assert smtp_word not in line, line
    data = explain_json(tmp_path, copy_reply)
    assert (data["response_code"], data["command"]) == ("TRYCREATE", "COPY")


def test_mailutils_pop3_replies(mailutils: Peer, tmp_path: Path) -> None:
    _inbox_has_a_message(mailutils)
    result = pipe(
        ["pop3", f"{mailutils.host}:{mailutils.port('pop3')}"],
        [
            f"USER {mailutils.user}",
            "PASS wrong",
            f"USER {mailutils.user}",
            f"PASS {mailutils.password}",
            "DELE 1",
            "RETR 1",
            "RSET",  # keep the message
            "QUIT",
        ],
        tmp_path,
    )
    said = explained_after(result)
    bad_login = said.get("-ERR [AUTH] Bad login", "")
    assert bad_login.startswith("authentication failed"), shown(result)
    assert "given with AUTH" not in bad_login
    deleted = said.get("-ERR Message has been deleted", "")
    assert "deleted" in deleted and "Read the reply text" not in deleted, shown(result)
    data = explain_json(tmp_path, "--command", "PASS", "-ERR [AUTH] Bad login")
    assert data["category"] == "auth_failed"
    assert "given with AUTH" not in json.dumps(data)


# --- claims checked against the peers' own replies (session 27) ---------------------------


def _cause(
    tmp_path: Path, result: subprocess.CompletedProcess[str], command: str, reply: str
) -> str:
    """The first cause ``mailtalk explain`` gives for a reply the peer really sent."""
    assert reply in result.stdout, shown(result)
    data = explain_json(tmp_path, "--banner", greeting(result), "--command", command, reply)
    causes: list[str] = data["causes"]
    return causes[0]


def test_postfix_nested_mail_and_starttls_with_an_argument(
    real_servers: RealServers, tmp_path: Path
) -> None:
    result = pipe(
        ["smtp", f"{real_servers.host}:{real_servers.smtp}"],
        [
            "EHLO client.test",
            "MAIL FROM:<bill@isp.test>",
            "MAIL FROM:<bill@isp.test>",
            "RSET",
            "STARTTLS now",
            "QUIT",
        ],
        tmp_path,
    )
    nested = "503 5.5.1 Error: nested MAIL command"
    assert "already given" in _cause(tmp_path, result, "MAIL FROM:<bill@isp.test>", nested)
    extra = _cause(tmp_path, result, "STARTTLS now", "501 5.5.4 Syntax: STARTTLS")
    assert "extra part" in extra, extra


def test_postfix_with_cyrus_sasl_refuses_a_mechanism_not_a_password(tmp_path: Path) -> None:
    port = int(os.environ.get("MAILTALK_POSTFIX_CYRUS_PORT", "10588"))
    host = os.environ.get("MAILTALK_REAL_HOST", "127.0.0.1")
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as error:
        _unavailable(f"nothing on {host}:{port} (Postfix with Cyrus SASL): {error}")
    # its EHLO offers NTLM DIGEST-MD5 CRAM-MD5: PLAIN is no mechanism Cyrus SASL has here
    result = pipe(
        ["smtp", f"{host}:{port}"],
        ["EHLO client.test", f"AUTH PLAIN {PLAIN_SECRET}", "QUIT"],
        tmp_path,
    )
    reply = "535 5.7.8 Error: authentication failed: no mechanism available"
    cause = _cause(tmp_path, result, "AUTH PLAIN", reply)
    assert "does not offer" in cause and "password" not in cause, cause


def test_opensmtpd_command_line_too_long(opensmtpd: Peer, tmp_path: Path) -> None:
    result = pipe(
        ["smtp", f"{opensmtpd.host}:{opensmtpd.port('smtp')}"],
        [
            "EHLO client.test",
            "MAIL FROM:<bill@isp.test>",
            f"RCPT TO:<{'x' * 3000}@{opensmtpd.domain}>",
            "QUIT",
        ],
        tmp_path,
    )
    reply = "500 5.0.0 Command line too long"
    said = explained_after(result)
    assert "512 octets" in said.get(reply, ""), shown(result)
    assert "bare LF" not in said[reply]


def test_dovecot_invalid_messageset(real_servers: RealServers, tmp_path: Path) -> None:
    result = pipe(
        ["imap", f"{real_servers.host}:{real_servers.imap}"],
        [
            f"LOGIN {real_servers.user} {real_servers.password}",
            "SELECT INBOX",
            "FETCH 0 FLAGS",
            "LOGOUT",
        ],
        tmp_path,
    )
    said = explained_after(result)
    reply = next((r for r in said if "Invalid messageset" in r), "")
    assert "EXISTS" in said.get(reply, ""), shown(result)


def test_mailutils_select_of_a_missing_folder(mailutils: Peer, tmp_path: Path) -> None:
    result = pipe(
        ["imap", f"{mailutils.host}:{mailutils.port('imap')}"],
        [f"LOGIN {mailutils.user} {mailutils.password}", "SELECT NoSuchFolder", "LOGOUT"],
        tmp_path,
    )
    reply = next((r for r in explained_after(result) if "Could not open NoSuchFolder" in r), "")
    cause = _cause(tmp_path, result, "SELECT NoSuchFolder", reply)
    assert "does not exist" in cause, cause  # not "read the reply text"
