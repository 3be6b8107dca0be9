"""``mailtalk explain`` as a real process: arguments, standard input, --json, errors, imports."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import run
from tests.cli.test_startup_imports import modules_after


def test_basic_code() -> None:
    result = run("explain", "550")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("550 — ")
    assert "permanent" in lines[1]
    assert "Meaning" in result.stdout and "Likely causes" in result.stdout
    assert "after RCPT" in result.stdout  # what 550 means depends on the command
    assert result.stderr == ""


def test_whole_reply_as_separate_words() -> None:
    result = run("explain", "554", "5.7.1", "<bob@example.net>:", "Relay", "access", "denied")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("554 5.7.1 — relaying denied")
    assert "Postfix wording" in result.stdout
    assert "What to do, as the server's admin" in result.stdout


def test_pop3_error_line_passes_as_an_argument_despite_its_dash() -> None:
    result = run(
        "explain", "-ERR", "[IN-USE]", "lock", "busy!", "Is", "another", "session", "active?"
    )
    assert result.returncode == 0, result.stderr
    assert "[IN-USE]" in result.stdout  # brackets survive (no rich markup)
    assert "mailbox in use" in result.stdout
    assert "temporary" in result.stdout


def test_command_option_changes_the_reading() -> None:
    rcpt = run("explain", "--command", "RCPT", "503")
    auth = run("explain", "--command", "AUTH", "503")
    assert "After RCPT" in rcpt.stdout and "After AUTH" in auth.stdout
    assert rcpt.stdout != auth.stdout


def test_json_one_object() -> None:
    result = run("explain", "--json", "a001 NO [AUTHENTICATIONFAILED] Authentication failed.")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["protocol"] == "imap" and data["code"] == "NO"
    assert data["response_code"] == "AUTHENTICATIONFAILED"
    assert data["category"] == "auth_failed" and data["transient"] is False
    assert data["summary"] and data["causes"] and data["fixes"]["user"]


def test_protocol_option_disambiguates() -> None:
    data = json.loads(run("explain", "--json", "--protocol", "pop3", "IN-USE").stdout)
    assert (data["protocol"], data["category"]) == ("pop3", "mailbox_locked")


def test_stdin_one_reply_a_line_multi_line_joined_prose_skipped() -> None:
    bounce = (
        b"This is the mail system at host mail.example.org.\n"
        b"\n"
        b"<bob@example.net>: host mx.example.net[192.0.2.7] said: 550 5.1.1 <bob@example.net>:\n"
        b"550-5.7.1 [192.0.2.1] The IP you're using to send mail is not authorized\n"
        b"550 5.7.1 to send email directly to our servers. gsmtp\n"
        b"-ERR [IN-USE] lock busy! Is another session active?\n"
        b"a2 NO [OVERQUOTA] Quota exceeded\n"
    )
    result = run("explain", "--json", "-", stdin=bounce)
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["code"] for o in objects] == ["550", "550", "-ERR", "NO"]
    assert objects[1]["reply"].count("\n") == 1
    assert [o["protocol"] for o in objects] == ["smtp", "smtp", "pop3", "imap"]


def test_stdin_rich_output_separates_replies() -> None:
    result = run("explain", "-", stdin=b"550 5.1.1 User unknown\n452 4.2.2 Mailbox full\n")
    assert result.returncode == 0
    assert "no such recipient" in result.stdout and "mailbox full" in result.stdout


def test_stdin_without_a_reply_is_exit_1() -> None:
    result = run("explain", "-", stdin=b"hello\nworld\n")
    assert result.returncode == 1
    assert result.stderr.strip() == "mailtalk: no reply found on standard input"


def test_not_a_reply_is_exit_2_one_line() -> None:
    result = run("explain", "hello world")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("mailtalk: 'hello world' is not a reply or a code")
    assert "Traceback" not in result.stderr


def test_no_argument_is_usage_error() -> None:
    result = run("explain")
    assert result.returncode == 2
    assert result.stderr.startswith("mailtalk: missing argument")


def test_no_colour_when_piped_or_no_color() -> None:
    result = run("explain", "550")
    assert "\x1b[" not in result.stdout


def test_explain_leaves_heavy_modules_unimported() -> None:
    # rich is what it prints with; prompt_toolkit, asyncio and dnspython never
    for argv in (["explain", "550"], ["explain", "--json", "-ERR [IN-USE] busy"]):
        modules = modules_after(argv)
        heavy = sorted(
            {m for m in modules if m.split(".")[0] in ("prompt_toolkit", "asyncio", "dns")}
        )
        assert heavy == [], f"mailtalk {' '.join(argv)} imported {heavy}"
        if "--json" in argv:
            assert not any(m.split(".")[0] == "rich" for m in modules)
        # nor the protocol cores and the REPL's display: explain only reads replies
        assert "mailtalk.protocols.common" not in modules
        # only the data of the protocol at hand
        assert "mailtalk.knowledge.commands" not in modules


def test_a_quoted_pop3_line_with_an_h_inside_is_not_help() -> None:
    # "-ERR [AUTH] PAM authentication failed" would read as -E -R -R ... -h
    result = run("explain", '-ERR [AUTH] PAM authentication failed for user "alice"')
    assert result.returncode == 0, result.stderr
    assert "Usage:" not in result.stdout
    assert "authentication failed" in result.stdout


def test_options_anywhere_and_double_dash() -> None:
    result = run("explain", "-ERR", "[IN-USE]", "busy", "--json", "--protocol", "pop3")
    assert json.loads(result.stdout)["category"] == "mailbox_locked"
    result = run("explain", "--", "--json")
    assert result.returncode == 2  # "--json" after -- is a reply, and not one
    assert run("explain", "--help").stdout.startswith("Usage: mailtalk explain")


def test_a_reader_that_goes_away_gets_quiet_exit_141(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mailtalk explain - | head -1``: no 'broken pipe' message, the SIGPIPE status.

    The write fails the way it does when the reader has gone (this machine's pipes do
    not reliably report EPIPE to a test, so the failing write is made here).
    """
    from click.testing import CliRunner

    from mailtalk.cli import cli
    from mailtalk.explain import view as explain_view

    def gone(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(explain_view, "render_all", gone)
    result = CliRunner().invoke(cli, ["explain", "550"])
    assert result.exit_code == 141
    assert result.output == ""


def test_banner_and_the_whole_command_line_decide_an_ambiguous_wording() -> None:
    # Exim says "Unrouteable address" for an unknown local user and for a domain it
    # cannot route; its greeting names the host, and the command the domain
    exim = "220 exim.test ESMTP Exim 4.96 Sun, 06 Dec 2026 17:37:06 +0000"
    own = run(
        "explain", "--json", "--command", "RCPT TO:<nosuch@exim.test>", f"--banner={exim}",
        "550", "Unrouteable", "address",
    )
    assert own.returncode == 0, own.stderr
    data = json.loads(own.stdout)
    assert (data["category"], data["software"], data["command"]) == (
        "unknown_user", "Exim", "RCPT"
    )
    alone = json.loads(run("explain", "--json", "550 Unrouteable address").stdout)
    assert alone["category"] == "dns_or_routing" and alone["software"] is None
    assert any("no such user" in cause for cause in alone["causes"])
    text = run("explain", "--banner", exim, "550 Unrouteable address").stdout
    assert "the greeting names Exim" in " ".join(text.split())


def test_banner_applies_to_every_reply_on_standard_input() -> None:
    mailtalk = "+OK mailtalk POP3 server ready <1.2@localhost>"
    replies = (
        b"-ERR [AUTH] Authentication failed.\n"
        b"-ERR [IN-USE] Unable to lock maildrop: lock busy! Is another session active?\n"
    )
    result = run("explain", "--json", "--banner", mailtalk, "-", stdin=replies)
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["software"] for o in objects] == ["mailtalk", "mailtalk"]
    assert "Dovecot" not in result.stdout and "qpopper" not in result.stdout


def test_every_line_fits_80_columns_with_a_long_origin_and_a_banner() -> None:
    result = run(
        "explain", "--banner", "+OK Dovecot (Debian) ready.", "--command", "PASS",
        "--", "-ERR [AUTH] Authentication failed.",
    )
    assert result.returncode == 0, result.stderr
    assert "the greeting names Dovecot" in " ".join(result.stdout.split())
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_a_shared_wording_from_dovecot_names_no_other_program(lang: str) -> None:
    # Dovecot's POP3 answer to a second DELE (observed on 127.0.0.1:110); the wording
    # is shared with GNU Mailutils and mailtalk, which did not answer here
    result = run(
        "explain", "--lang", lang, "--banner", "+OK Dovecot (Debian) ready.",
        "--command", "DELE 1", "-ERR Message is deleted.",
    )
    assert result.returncode == 0, result.stderr
    head = " ".join(" ".join(result.stdout.splitlines()[:4]).split())
    assert ("generic wording" if lang == "en" else "algemene woorden") in head, head
    assert "Mailutils" not in head and "mailtalk" not in head and "example" not in head
