"""control/scenarios and control/faults: a running server's behaviour changed by a file,
read again at the next connection as qmail reads its control files (a practice lesson
turns the MX into a full-disk one and back without restarting it)."""

from __future__ import annotations

import poplib
import smtplib
from pathlib import Path

import pytest

from mailtalk.servers.api import run_servers
from mailtalk.servers.app import ConfigError
from mailtalk.servers.journal import Journal, read_events


def mail_from(port: int) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.helo("learner.test")
        return client.mail("alice@example.test")


def test_a_scenario_file_turns_the_server_full_and_back(tmp_path: Path) -> None:
    journal_path = tmp_path / "journal.jsonl"
    with run_servers(tmp_path / "root", users=[("bob", "builder")],
                     journal=Journal(journal_path)) as servers:
        port = servers.port("smtp")
        assert mail_from(port)[0] == 250
        (tmp_path / "root" / "control" / "scenarios").write_text("# full\ndisk-full\n")
        code, text = mail_from(port)
        assert (code, text) == (452, b"4.3.1 Insufficient system storage")
        (tmp_path / "root" / "control" / "scenarios").write_text("")
        assert mail_from(port)[0] == 250
    control = [e for e in read_events(journal_path) if e["event"] == "control"]
    assert [e["files"] for e in control] == [["scenarios"], ["scenarios"]]
    assert all(e["ok"] for e in control)


def test_a_fault_file_adds_to_the_command_line_rules(tmp_path: Path) -> None:
    with run_servers(tmp_path / "root", faults=["smtp:helo=554 5.7.1 from the command line"]
                     ) as servers:
        port = servers.port("smtp")
        (tmp_path / "root" / "control" / "faults").write_text(
            "smtp:mail=451 4.3.0 from the file\n"
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            assert client.helo("x")[0] == 554  # the command line's rule still holds
            assert client.mail("a@example.test") == (451, b"4.3.0 from the file")


def test_a_bad_line_keeps_what_was_read_before(tmp_path: Path) -> None:
    journal_path = tmp_path / "journal.jsonl"
    with run_servers(tmp_path / "root", journal=Journal(journal_path)) as servers:
        faults = tmp_path / "root" / "control" / "faults"
        faults.write_text("smtp:mail=451 4.3.0 first\n")
        assert mail_from(servers.port("smtp"))[0] == 451
        faults.write_text("smtp:mail=451 4.3.0 first\nnot a rule\n")
        assert mail_from(servers.port("smtp"))[0] == 451  # still the first file's rules
    bad = [e for e in read_events(journal_path) if e["event"] == "control" and not e["ok"]]
    assert len(bad) == 1 and "control/faults line 2" in bad[0]["error"]


def test_a_bad_file_at_start_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "control").mkdir(parents=True)
    (root / "control" / "scenarios").write_text("no-such-scenario\n")
    with (
        pytest.raises(ConfigError, match="control/scenarios line 1: unknown scenario"),
        run_servers(root),
    ):
        pass


def test_the_lock_busy_scenario_comes_and_goes(tmp_path: Path) -> None:
    with run_servers(tmp_path / "root", smtp=None, pop3=0,
                     users=[("bob", "builder")]) as servers:
        scenarios = tmp_path / "root" / "control" / "scenarios"
        scenarios.write_text("lock-busy\n")
        client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=10)
        client.user("bob")
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            client.pass_("builder")
        client.close()
        scenarios.write_text("")
        client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=10)
        client.user("bob")
        assert client.pass_("builder").startswith(b"+OK")
        client.quit()
