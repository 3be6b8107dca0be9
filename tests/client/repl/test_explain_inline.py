"""The inline ``↳`` explanation knows what ``:explain`` knows (issue 11): the command
the reply answered, the protocol, and the server's greeting.

The real mailtalk in pipe mode (the REPL prints the same line) against the
reference servers, against ScriptedPeer playing the exact bytes of real servers
(GNU Mailutils, Exim, OpenSMTPD, Postfix; tests/interop/test_explain_real.py
gets the same replies from the real programs), and against a real aiosmtpd.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import child_env
from tests.peers import Close, Expect, Hold, ScriptedPeer

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))
TIMEOUT = 30


def pipe(args: list[str], lines: list[str]) -> subprocess.CompletedProcess[str]:
    """``mailtalk ARGS`` in pipe mode with ``lines`` on standard input."""
    return subprocess.run(
        [MAILTALK, *args],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=child_env(),
        check=False,
    )


def explanations(stderr: str) -> list[str]:
    """The ``# ↳`` lines of pipe mode's standard error, a wrapped one joined."""
    result: list[str] = []
    for line in stderr.splitlines():
        if "↳" in line:
            result.append(line.split("↳", 1)[1].strip())
        elif result and line.startswith("#  "):
            result[-1] += " " + line[1:].strip()
    return result


def explain_json(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [MAILTALK, "explain", "--json", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=child_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


# --- the reference servers --------------------------------------------------------------


def test_reference_smtp_replies_are_explained_after_their_command(mailtalk_server: Any) -> None:
    result = pipe(
        ["smtp", f"127.0.0.1:{mailtalk_server.port('smtp')}"],
        [
            "EHLO client.test",
            "RCPT TO:<bob@example.test>",  # before MAIL FROM
            "MAIL FROM: alice@example.test",  # the classic telnet mistake
            "MAIL FROM:<me@example.test>",
            "RCPT TO:<bob@elsewhere.example>",  # a relay attempt
            "QUIT",
        ],
    )
    said = explanations(result.stderr)
    assert len(said) == 3, shown(result)
    need_mail, no_brackets, relay = said
    assert "send MAIL FROM first" in need_mail
    assert "RCPT" not in no_brackets and "angle brackets" in no_brackets
    # the reference server's own rules, not Postfix's
    assert "rcpthosts" in relay and "relayclients" in relay
    assert "reject_unauth_destination" not in relay and "mynetworks" not in relay


def test_explanations_follow_the_locale(mailtalk_server: Any) -> None:
    # LANG=nl_NL.UTF-8: the line under a refusal is Dutch, as `mailtalk explain` is
    result = subprocess.run(
        [MAILTALK, "smtp", f"127.0.0.1:{mailtalk_server.port('smtp')}"],
        input="EHLO client.test\nRCPT TO:<bob@example.test>\nQUIT\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**child_env(), "LANG": "nl_NL.UTF-8"},
        check=False,
    )
    said = explanations(result.stderr)
    assert len(said) == 1, shown(result)
    assert "volgorde" in said[0] and "(blijvend)" in said[0], said[0]


def test_reference_pop3_in_use_is_explained_by_its_flock(mailtalk_servers: Any) -> None:
    servers = mailtalk_servers(pop3=0, users=[("alice", "secret")])
    port = servers.port("pop3")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as first:
        reader = first.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        for command in (b"USER alice\r\n", b"PASS secret\r\n"):
            first.sendall(command)
            assert reader.readline().startswith(b"+OK")
        # the first session holds the maildrop; a second one is refused
        result = pipe(["pop3", f"127.0.0.1:{port}"], ["USER alice", "PASS secret", "QUIT"])
        first.sendall(b"QUIT\r\n")
        reader.readline()
    assert "S: -ERR [IN-USE]" in result.stdout, shown(result)
    said = explanations(result.stderr)
    assert len(said) == 1, shown(result)
    assert "flock" in said[0]
    assert "qpopper" not in said[0] and ".user.pop" not in said[0]


def test_reference_pop3_deleted_message_is_explained(mailtalk_servers: Any) -> None:
    import smtplib

    servers = mailtalk_servers(smtp=0, pop3=0, users=[("alice", "secret")])
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("bob@example.org", ["alice@localhost"], b"Subject: hi\r\n\r\nhi\r\n")
    result = pipe(
        ["pop3", f"127.0.0.1:{servers.port('pop3')}"],
        ["USER alice", "PASS secret", "DELE 1", "RETR 1", "RSET", "QUIT"],
    )
    assert "S: -ERR Message 1 is deleted." in result.stdout, shown(result)
    said = explanations(result.stderr)
    assert len(said) == 1, shown(result)
    assert "deleted" in said[0] and "Read the reply text" not in said[0]


# --- real servers' exact bytes ---------------------------------------------------------

MAILUTILS_IMAP_GREETING = b"* OK IMAP4rev1\r\n"
MAILUTILS_POP3_GREETING = b"+OK POP3 Ready <8072.1796578675@vm>\r\n"


def test_bye_after_logout_is_no_outage() -> None:
    # GNU Mailutils imap4d's goodbye: untagged, before the tagged OK
    script = [
        MAILUTILS_IMAP_GREETING,
        Expect(b"a001 LOGOUT"),
        b"* BYE Session terminating.\r\na001 OK LOGOUT Completed\r\n",
        Close(),
    ]
    with ScriptedPeer(script) as peer:
        result = pipe(["imap", f"127.0.0.1:{peer.port}"], ["LOGOUT"])
    assert "S: * BYE Session terminating." in result.stdout, shown(result)
    assert explanations(result.stderr) == [], shown(result)


def test_an_unsolicited_bye_is_still_explained() -> None:
    script = [
        MAILUTILS_IMAP_GREETING,
        Expect(b"a001 NOOP"),
        b"a001 OK NOOP Completed\r\n",
        Expect(b"a002 NOOP"),
        b"* BYE Server shutting down.\r\n",
        Close(),
    ]
    with ScriptedPeer(script) as peer:
        result = pipe(["imap", f"127.0.0.1:{peer.port}"], ["NOOP", "NOOP"])
    said = explanations(result.stderr)
    assert len(said) == 1 and said[0].startswith("service unavailable"), shown(result)


def test_imap_bad_replies_get_imap_advice() -> None:
    # GNU Mailutils' answers, which name the command before the text
    script = [
        MAILUTILS_IMAP_GREETING,
        Expect(b"a001 FETCH"),
        b"a001 BAD FETCH Unknown token or missing closing parenthesis\r\n",
        Expect(b"a002 APPEND"),
        b"a002 BAD APPEND Too many arguments\r\n",
        Expect(b"a003 LOGOUT"),
        b"* BYE Session terminating.\r\na003 OK LOGOUT Completed\r\n",
        Close(),
    ]
    with ScriptedPeer(script) as peer:
        result = pipe(
            ["imap", f"127.0.0.1:{peer.port}"],
            ["FETCH 1 (FOO)", "APPEND INBOX a b c d", "LOGOUT"],
        )
    said = explanations(result.stderr)
    assert len(said) == 2, shown(result)
    for line in said:
        assert "syntax error" in line
        for smtp_word in ("MAIL FROM", "RCPT", "EHLO"):
            assert smtp_word not in line, line


def test_imap_copy_to_a_missing_mailbox_says_create_it() -> None:
    script = [
        MAILUTILS_IMAP_GREETING,
        Expect(b"a001 COPY"),
        b"a001 NO COPY [TRYCREATE] failed\r\n",
        Hold(),
    ]
    with ScriptedPeer(script) as peer:
        result = pipe(["imap", f"127.0.0.1:{peer.port}"], ["COPY 1 nosuchbox"])
    said = explanations(result.stderr)
    assert len(said) == 1 and "CREATE" in said[0], shown(result)


def test_pop3_bad_login_is_not_explained_as_smtp_auth() -> None:
    script = [
        MAILUTILS_POP3_GREETING,
        Expect(b"USER alice"),
        b"+OK\r\n",
        Expect(b"PASS"),
        b"-ERR [AUTH] Bad login\r\n",
        Expect(b"QUIT"),
        b"+OK\r\n",
        Close(),
    ]
    with ScriptedPeer(script) as peer:
        result = pipe(["pop3", f"127.0.0.1:{peer.port}"], ["USER alice", "PASS wrong", "QUIT"])
    said = explanations(result.stderr)
    assert len(said) == 1, shown(result)
    assert said[0].startswith("authentication failed")
    assert "AUTH" not in said[0].replace("[AUTH]", ""), said[0]


def test_pop3_deleted_message() -> None:
    script = [
        MAILUTILS_POP3_GREETING,
        Expect(b"RETR 1"),
        b"-ERR Message has been deleted\r\n",
        Hold(),
    ]
    with ScriptedPeer(script) as peer:
        result = pipe(["pop3", f"127.0.0.1:{peer.port}"], ["RETR 1"])
    said = explanations(result.stderr)
    assert len(said) == 1 and "deleted" in said[0], shown(result)
    assert "Read the reply text" not in said[0]


EHLO_REPLY = {
    "postfix": b"250-mailtalk.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 CHUNKING\r\n",
    "exim": b"250-exim.test Hello client.test [127.0.0.1]\r\n250-STARTTLS\r\n250 HELP\r\n",
    "opensmtpd": b"250-mx.test Hello client.test [127.0.0.1], pleased to meet you\r\n"
    b"250-8BITMIME\r\n250 HELP\r\n",
}
GREETING = {
    "postfix": b"220 mailtalk.test ESMTP Postfix (Debian/GNU)\r\n",
    "exim": b"220 exim.test ESMTP Exim 4.96 Sun, 06 Dec 2026 17:37:06 +0000\r\n",
    "opensmtpd": b"220 mx.test ESMTP OpenSMTPD\r\n",
}
AUTH_REFUSAL = {
    "postfix": b"503 5.5.1 Error: authentication not enabled\r\n",  # port 25
    "exim": b"503 AUTH command used when not advertised\r\n",  # before STARTTLS
    "opensmtpd": b"503 5.5.1 Invalid command: Command not supported\r\n",  # no auth listener
}


@pytest.mark.parametrize("server", sorted(AUTH_REFUSAL))
def test_auth_the_server_does_not_offer_here(server: str) -> None:
    script = [
        GREETING[server],
        Expect(b"EHLO"),
        EHLO_REPLY[server],
        Expect(b"AUTH PLAIN"),
        AUTH_REFUSAL[server],
        Hold(),
    ]
    with ScriptedPeer(script) as peer:
        result = pipe(
            ["smtp", f"127.0.0.1:{peer.port}"],
            ["EHLO client.test", "AUTH PLAIN AGFsaWNlAHNlY3JldA=="],
        )
    said = explanations(result.stderr)
    assert len(said) == 1, shown(result)
    assert "does not offer AUTH here" in said[0] and "STARTTLS" in said[0]
    assert "step" not in said[0]
    data = explain_json(
        "--banner", GREETING[server].decode().strip(), "--command", "AUTH",
        AUTH_REFUSAL[server].decode().strip(),
    )
    assert data["category"] == "syntax_error"
    assert any("587" in fix and "STARTTLS" in fix for fix in data["fixes"]["user"]), data


def test_exim_unrouteable_address_for_its_own_domain_is_no_such_user() -> None:
    script = [
        GREETING["exim"],
        Expect(b"EHLO"),
        EHLO_REPLY["exim"],
        Expect(b"MAIL FROM:bad"),
        b"501 bad: sender address must contain a domain\r\n",
        Expect(b"MAIL FROM:<alice@example.test>"),
        b"250 OK\r\n",
        Expect(b"RCPT TO:<nosuch@exim.test>"),
        b"550 Unrouteable address\r\n",
        Hold(),
    ]
    with ScriptedPeer(script) as peer:
        result = pipe(
            ["smtp", f"127.0.0.1:{peer.port}"],
            [
                "EHLO client.test",
                "MAIL FROM:bad",
                "MAIL FROM:<alice@example.test>",
                "RCPT TO:<nosuch@exim.test>",
            ],
        )
    said = explanations(result.stderr)
    assert len(said) == 2, shown(result)
    sender, recipient = said
    assert sender.startswith("sender address refused") and "malformed" in sender
    assert "block list" not in sender
    assert recipient.startswith("no such recipient"), recipient


# --- a real aiosmtpd --------------------------------------------------------------------


class _RelayRefusingHandler:
    """An aiosmtpd handler that takes mail for example.test only, as handlers do."""

    async def handle_RCPT(  # aiosmtpd calls the hook by this name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if not address.lower().endswith("@example.test"):
            return "550 5.7.1 Relaying denied"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_aiosmtpd_relaying_denied_names_no_other_product() -> None:
    from aiosmtpd.controller import Controller

    # aiosmtpd's Controller checks its own port by connecting to it: no port 0
    port = _free_port()
    controller = Controller(_RelayRefusingHandler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        result = pipe(
            ["smtp", f"127.0.0.1:{port}"],
            ["EHLO client.test", "MAIL FROM:<me@example.test>", "RCPT TO:<bob@example.org>",
             "QUIT"],
        )
    finally:
        controller.stop()
    greeting = result.stdout.splitlines()[0]
    assert "Python SMTP" in greeting, shown(result)
    assert "S: 550 5.7.1 Relaying denied" in result.stdout
    said = explanations(result.stderr)
    assert len(said) == 1 and said[0].startswith("relaying denied"), shown(result)
    assert "Sendmail" not in said[0]
    data = explain_json("--banner", greeting.removeprefix("S: "), "550 5.7.1 Relaying denied")
    assert data["category"] == "relay_denied" and data["software"] == "aiosmtpd"
    assert "Sendmail" not in json.dumps(data)
