"""``mailtalk send --quit-after``/``--drop-after`` as a real process against ``mailtalk serve``.

Each case sends through the submission port with STARTTLS and AUTH, so every stage is a
real one, and reads what the server saw from its journal: the commands it got, how the
connection ended (``quit`` or ``dropped``), and whether a message event was written; the
Maildir says whether anything was delivered. The same stops against Postfix and Exim are
in tests/interop/test_send_stop_points_real.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.journal import Journal
from tests.mail.test_send_diagnose import mailtalk, new_messages, start
from tests.servers.journaling import events, wait_event

# The commands the server gets up to and including each stage, with STARTTLS and AUTH.
COMMANDS_UP_TO = {
    "connect": [],
    "ehlo": ["EHLO"],
    "tls": ["EHLO", "STARTTLS", "EHLO"],
    "auth": ["EHLO", "STARTTLS", "EHLO", "AUTH"],
    "mail": ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL"],
    "rcpt": ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "RCPT"],
    "data": ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "RCPT", "DATA"],
    "dot": ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "RCPT", "DATA", "."],
}


@pytest.fixture
def journaled(mailtalk_servers: Callable[..., Any], tmp_path: Path) -> Any:
    journal = Journal(tmp_path / "journal.jsonl")
    running = start(mailtalk_servers, journal=journal)
    yield running, tmp_path / "journal.jsonl"
    journal.close()


def send(
    running: Any, *extra: str, to: tuple[str, ...] = ("alice@isp.test", "bob@example.net")
) -> Any:
    recipients = [arg for address in to for arg in ("--to", address)]
    return mailtalk(
        "send",
        "--from",
        "alice@isp.test",
        *recipients,
        "--server",
        f"127.0.0.1:{running.port('submission')}",
        "--starttls",
        "--auth",
        "alice",
        "--cafile",
        str(running.cafile),
        "--subject",
        "stop points",
        "--timeout",
        "20",
        *extra,
        password="secret",
    )


def server_saw(journal: Path) -> tuple[list[str], dict[str, Any]]:
    """The verbs of the session's commands, and its close event (waited for)."""
    close = wait_event(journal, event="close", proto="smtp")
    verbs = [event["verb"] for event in events(journal, event="command", proto="smtp")]
    return verbs, close


@pytest.mark.parametrize("stage", ["connect", "ehlo", "tls", "auth", "mail", "rcpt"])
def test_quit_after_a_stage_before_the_message_quits_there_and_delivers_nothing(
    journaled: tuple[Any, Path], stage: str
) -> None:
    running, journal = journaled
    result = send(running, "--quit-after", stage)
    assert result.returncode == 0, result.stdout + result.stderr
    verbs, close = server_saw(journal)
    assert verbs == [*COMMANDS_UP_TO[stage], "QUIT"]
    assert close["reason"] == "quit"
    assert f"# stopped after {stage} as asked (QUIT): no message sent" in result.stdout
    assert events(journal, event="message") == []
    assert new_messages(running, "alice") == []


@pytest.mark.parametrize("stage", ["connect", "ehlo", "tls", "auth", "mail", "rcpt", "data"])
def test_drop_after_a_stage_closes_without_quit_and_delivers_nothing(
    journaled: tuple[Any, Path], stage: str
) -> None:
    running, journal = journaled
    result = send(running, "--drop-after", stage)
    assert result.returncode == 0, result.stdout + result.stderr
    verbs, close = server_saw(journal)
    assert verbs == COMMANDS_UP_TO[stage]
    assert close["reason"] == "dropped"
    assert "C: QUIT" not in result.stdout
    assert "# connection closed without QUIT (dropped)" in result.stdout
    assert events(journal, event="message") == []
    assert new_messages(running, "alice") == []


@pytest.mark.parametrize("option", ["--quit-after", "--drop-after"])
def test_after_dot_the_message_is_delivered_then_quit_or_dropped(
    journaled: tuple[Any, Path], option: str
) -> None:
    running, journal = journaled
    result = send(running, option, "dot", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    ending = "quit" if option == "--quit-after" else "drop"
    # the server's chain (STARTTLS), kept before the connection ended, either way
    assert lines[-1].pop("tls")["certificates"][0]["subject"] == "CN=localhost"
    assert lines[-1] == {
        "result": "sent",
        "accepted": ["alice@isp.test", "bob@example.net"],
        "failures": [],
        "stop_after": "dot",
        "extensions_used": [],
        "ending": ending,
    }
    verbs, close = server_saw(journal)
    assert verbs == COMMANDS_UP_TO["dot"] + (["QUIT"] if ending == "quit" else [])
    assert close["reason"] == ("quit" if ending == "quit" else "dropped")
    delivered = wait_event(journal, event="message", outcome="delivered")
    assert delivered["subject"] == "stop points"
    assert len(new_messages(running, "alice")) == 1


def test_drop_after_data_json_says_where_it_stopped(journaled: tuple[Any, Path]) -> None:
    running, journal = journaled
    result = send(running, "--drop-after", "data", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1].pop("tls")["certificates"][0]["subject"] == "CN=localhost"
    assert lines[-1] == {
        "result": "stopped",
        "accepted": ["alice@isp.test", "bob@example.net"],
        "failures": [],
        "stop_after": "data",
        "extensions_used": [],
        "ending": "drop",
    }
    transcript = [(line["dir"], line["text"]) for line in lines[:-1]]
    assert ("C", "DATA") in transcript and ("C", ".") not in transcript
    assert transcript[-1] == ("#", "connection closed without QUIT (dropped)")
    assert server_saw(journal)[1]["reason"] == "dropped"


def test_a_refusal_before_the_stop_point_is_a_failure(journaled: tuple[Any, Path]) -> None:
    """Stopping after rcpt ends in success only if RCPT got there: a recipient nobody
    has is refused (550), and with no other recipient that is exit 1."""
    running, journal = journaled
    result = send(running, "--quit-after", "rcpt", "--json", to=("nobody@isp.test",))
    assert result.returncode == 1, result.stdout + result.stderr
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["result"] == "failed" and final["accepted"] == []
    assert final["stop_after"] == "rcpt"
    assert "every recipient refused" in final["failures"][0]["error"]
    assert server_saw(journal)[1]["reason"] == "quit"


def test_quit_after_tls_without_starttls_stops_after_ehlo_and_says_so(
    journaled: tuple[Any, Path],
) -> None:
    running, journal = journaled
    result = mailtalk(
        "send", "--from", "bob@isp.test", "--to", "alice@isp.test",
        "--server", f"127.0.0.1:{running.port('smtp')}", "--quit-after", "tls",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--starttls or --tls not given" in result.stdout
    verbs, close = server_saw(journal)
    assert verbs == ["EHLO", "QUIT"] and close["reason"] == "quit"


def test_swaks_names_for_the_stages_are_taken(journaled: tuple[Any, Path]) -> None:
    running, journal = journaled
    result = send(running, "--quit-after", "HELO")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# stopped after ehlo as asked" in result.stdout
    assert server_saw(journal)[0] == ["EHLO", "QUIT"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quit-after", "data"], "use --drop-after data"),
        (["--quit-after", "rcpt", "--drop-after", "data"], "exclude each other"),
        (["--drop-after", "quit"], "'quit' is not one of"),
    ],
)
def test_stop_point_usage_errors_are_exit_2_before_connecting(
    args: list[str], message: str
) -> None:
    # port 9 (discard) is never reached: the options are refused first
    result = mailtalk("send", "--from", "a@b.test", "--to", "c@d.test",
                      "--server", "127.0.0.1:9", *args)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
