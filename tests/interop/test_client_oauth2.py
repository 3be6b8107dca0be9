"""The client's OAuth 2 tokens (XOAUTH2, OAUTHBEARER) against ``mailtalk serve
--oauth2-tokens``: ``send`` (``$MAILTALK_OAUTH2_TOKEN``, ``--oauth2-token``, auto), the
pipe mode and the REPL (``:auth xoauth2|oauthbearer``), session files (``auth xoauth2
USER [ENVVAR]``) and ``diagnose login``, on SMTP, POP3 and IMAP. A wrong token gets the
server's JSON error challenge, which mailtalk answers and shows.

The evidence is the server's journal (which mechanism, which user, ok or not), and the
token is looked for, and must be absent, in everything mailtalk wrote: its output, the
--transcript file, the REPL's history file, and the journal.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.journal import Journal
from tests.interop.test_pipe_real import describe
from tests.interop.test_repl_real import Term, history_text, mailtalk_command, spawn, state_home  # noqa: F401

pytestmark = pytest.mark.interop

USER = "alice"
TOKEN = "ya29.client-token-5c1d9e"
WRONG = "ya29.not-alices-token-0b7a"
TIMEOUT = 60


@pytest.fixture
def served(mailtalk_servers: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    servers = mailtalk_servers(
        smtp=0, pop3=0, imap=0, users=[(USER, "secret")], domains=["example.test"],
        oauth2_tokens={USER: TOKEN}, journal=journal, auth_failure_delay=0.1,
    )  # fmt: skip
    yield servers, path
    journal.close()


def auth_events(path: Path) -> list[tuple[str, str, bool]]:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return [(e["mechanism"], e.get("user", ""), e["ok"]) for e in events
            if e.get("event") == "auth"]


def mailtalk(
    args: list[str], tmp_path: Path, token: str | None = None, stdin: str | None = None,
    **variables: str,
) -> subprocess.CompletedProcess[str]:
    """``mailtalk ARGS`` without a terminal; ``token`` in $MAILTALK_OAUTH2_TOKEN."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    if token is not None:
        env["MAILTALK_OAUTH2_TOKEN"] = token
    env.update(variables)
    return subprocess.run(
        [*mailtalk_command(), *args], input=stdin if stdin is not None else "",
        capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False,
        start_new_session=True,  # no terminal to ask on
    )  # fmt: skip


def url(servers: Any, protocol: str) -> str:
    return f"{protocol}://{USER}@127.0.0.1:{servers.port(protocol)}"


# -- send --------------------------------------------------------------------------


def send_args(servers: Any, *extra: str) -> list[str]:
    return ["send", "--server", f"127.0.0.1:{servers.port('smtp')}", "--auth", USER,
            "--from", "alice@example.test", "--to", "alice@example.test", *extra]


def test_send_auto_picks_the_token_mechanism(served: tuple[Any, Path], tmp_path: Path) -> None:
    servers, journal = served
    good = mailtalk(send_args(servers), tmp_path, token=TOKEN)
    assert good.returncode == 0, describe(good)
    # mailtalk serve offers both: OAUTHBEARER, the standard one, first
    assert "C: AUTH OAUTHBEARER ***" in good.stdout, describe(good)
    bad = mailtalk(send_args(servers, "--auth-mechanism", "xoauth2"), tmp_path, token=WRONG)
    assert bad.returncode == 6, describe(bad)  # authentication failed
    assert "C: AUTH XOAUTH2 ***" in bad.stdout
    # the JSON challenge is shown, answered (an empty line), and the refusal explained
    assert 'the server refused the token: {"status":"401"' in bad.stdout + bad.stderr
    assert "S: 535" in bad.stdout
    assert auth_events(journal) == [("OAUTHBEARER", USER, True), ("XOAUTH2", USER, False)]
    for text in (good.stdout, good.stderr, bad.stdout, bad.stderr, journal.read_text()):
        assert TOKEN not in text and WRONG not in text


def test_send_oauth2_token_option(served: tuple[Any, Path], tmp_path: Path) -> None:
    servers, journal = served
    result = mailtalk(send_args(servers, "--auth-mechanism", "oauthbearer",
                                "--oauth2-token", TOKEN), tmp_path)
    assert result.returncode == 0, describe(result)
    assert TOKEN not in result.stdout + result.stderr + journal.read_text()
    assert auth_events(journal) == [("OAUTHBEARER", USER, True)]


def test_send_token_mechanism_without_token_is_a_usage_error(
    served: tuple[Any, Path], tmp_path: Path
) -> None:
    servers, journal = served
    result = mailtalk(send_args(servers, "--auth-mechanism", "xoauth2"), tmp_path)
    assert result.returncode == 2, describe(result)
    assert "MAILTALK_OAUTH2_TOKEN" in result.stderr and "Traceback" not in result.stderr
    assert auth_events(journal) == []


# -- pipe mode ---------------------------------------------------------------------

GOODBYE = {"smtp": "QUIT", "pop3": "QUIT", "imap": "LOGOUT"}


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_pipe_auth_token(
    served: tuple[Any, Path], tmp_path: Path, protocol: str, mechanism: str
) -> None:
    servers, journal = served
    transcript = tmp_path / "transcript.log"
    lines = f":auth {mechanism}\n{GOODBYE[protocol]}\n"
    args = ["connect", url(servers, protocol), "--transcript", str(transcript)]
    good = mailtalk(args, tmp_path, token=TOKEN, stdin=lines)
    assert "# authenticated as alice" in good.stderr, describe(good)
    assert "from $MAILTALK_OAUTH2_TOKEN" in good.stderr
    bad = mailtalk(args, tmp_path, token=WRONG, stdin=lines)
    assert "# authenticated as alice" not in bad.stderr, describe(bad)
    assert "the server refused the token: {" in bad.stdout + bad.stderr, describe(bad)
    assert auth_events(journal) == [(mechanism.upper(), USER, True),
                                    (mechanism.upper(), USER, False)]
    written = transcript.read_text()
    assert f"{mechanism.upper()}" in written  # the exchange is in it, masked
    for text in (good.stdout + good.stderr, bad.stdout + bad.stderr, written,
                 journal.read_text()):
        assert TOKEN not in text and WRONG not in text


def test_pipe_auth_token_missing_says_which_variable(
    served: tuple[Any, Path], tmp_path: Path
) -> None:
    servers, journal = served
    result = mailtalk(["connect", url(servers, "imap")], tmp_path,
                      stdin=":auth xoauth2\nLOGOUT\n", MAILTALK_PASSWORD="secret")
    assert "no OAuth2 token: set MAILTALK_OAUTH2_TOKEN" in result.stderr, describe(result)
    assert "password" not in result.stderr.lower()
    assert auth_events(journal) == []  # a password is never sent as a token


# -- the REPL ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap"])
def test_repl_asks_for_the_token_and_keeps_it_out_of_history(
    served: tuple[Any, Path], spawn: Callable[..., Term], state_home: Path,  # noqa: F811
    tmp_path: Path, protocol: str,
) -> None:
    servers, journal = served
    transcript = tmp_path / "repl-transcript.log"
    term = spawn("imap", f"{USER}@127.0.0.1:{servers.port('imap')}",
                 "--transcript", str(transcript))
    term.expect_prompt("imap")
    term.sendline(":auth oauthbearer")
    term.expect_question("OAuth2 token for alice: ")
    term.sendline(TOKEN)
    term.expect(r"authenticated as alice")
    term.expect_prompt("imap")
    term.command("LOGOUT", r"OK", "imap")
    assert term.quit() == 0
    shown = term.screen.dump()
    assert TOKEN not in shown and "password" not in shown.lower()
    history = history_text(state_home)
    assert ":auth oauthbearer" in history
    assert TOKEN not in history
    assert TOKEN not in transcript.read_text()
    assert TOKEN not in journal.read_text()
    assert auth_events(journal) == [("OAUTHBEARER", USER, True)]


# -- session files -----------------------------------------------------------------


def test_session_file_auth_with_token(served: tuple[Any, Path], tmp_path: Path) -> None:
    servers, journal = served
    script = tmp_path / "token.mt"
    script.write_text(
        f"connect {url(servers, 'smtp')}\nS: 220\nC: EHLO client.test\nS: 250\n"
        f"auth xoauth2 {USER}\nC: QUIT\nS: 221\n"
        f"connect {url(servers, 'pop3')}\nS: +OK\nauth oauthbearer {USER} WORK_TOKEN\n"
        "C: QUIT\nS: +OK\n"
    )
    good = mailtalk(["run", "-v", str(script)], tmp_path, token=TOKEN, WORK_TOKEN=TOKEN)
    assert good.returncode == 0, describe(good)
    bad = mailtalk(["run", str(script)], tmp_path, token=WRONG, WORK_TOKEN=TOKEN)
    assert bad.returncode == 6, describe(bad)
    missing = mailtalk(["run", str(script)], tmp_path)
    assert missing.returncode == 6, describe(missing)
    assert "no OAuth2 token for alice: set $MAILTALK_OAUTH2_TOKEN" in missing.stdout + \
        missing.stderr
    assert auth_events(journal) == [("XOAUTH2", USER, True), ("OAUTHBEARER", USER, True),
                                    ("XOAUTH2", USER, False)]
    for result in (good, bad, missing):
        assert TOKEN not in result.stdout + result.stderr
    assert TOKEN not in journal.read_text()


# -- diagnose login ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_diagnose_login_with_token(
    served: tuple[Any, Path], tmp_path: Path, protocol: str
) -> None:
    servers, journal = served
    args = ["diagnose", "login", url(servers, protocol), "--json",
            "--cafile", str(servers.root / "tls" / "ca.pem")]
    good = mailtalk(args, tmp_path, token=TOKEN)
    assert good.returncode == 0, describe(good)
    assert json.loads(good.stdout)["verdict"] == "ok"
    bad = mailtalk(args, tmp_path, token=WRONG)
    assert bad.returncode == 1, describe(bad)
    refused = json.loads(bad.stdout)
    assert refused["verdict"] == "wrong_password"
    assert "a wrong OAuth2 token (or an expired one)" in refused["summary"]
    # without a token: the strongest password mechanism offered, as send chooses
    plain = mailtalk(args, tmp_path, MAILTALK_PASSWORD="secret")
    assert plain.returncode == 0, describe(plain)
    assert auth_events(journal) == [("OAUTHBEARER", USER, True), ("OAUTHBEARER", USER, False),
                                    ("SCRAM-SHA-256", USER, True)]
    for text in (good.stdout, bad.stdout, journal.read_text()):
        assert TOKEN not in text and WRONG not in text
