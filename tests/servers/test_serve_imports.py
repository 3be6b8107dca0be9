"""``mailtalk serve`` and ``run_servers()`` load only the code of the listeners asked for.

A server that only accepts SMTP must start, greet and deliver into a Maildir without
ever importing the POP3, IMAP or LMTP servers, their protocol cores, or the store's
folder, index and mailbox code: those cost a start tens of milliseconds of imports
(bench/serve_startup.py measures it against aiosmtpd). This is a correctness test, not a
timing one, like tests/cli/test_startup_imports.py for the CLI. Each case also starts a
POP3 listener the same way, to show that the check sees a module that is loaded.
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import signal
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from tests.cli.test_startup_imports import CHECK_SYS_MODULES

TIMEOUT = 30.0

# What a server without POP3, IMAP and LMTP listeners never needs.
MAILBOX_SERVING = (
    "mailtalk.servers.imap",
    "mailtalk.servers.pop3",
    "mailtalk.servers.pop3_auth",
    "mailtalk.servers.pop3_session",
    "mailtalk.servers.lmtp",
    "mailtalk.servers.mailquery",
    "mailtalk.protocols.imap",
    "mailtalk.protocols.imap_framing",
    "mailtalk.protocols.imap_events",
    "mailtalk.protocols.pop3",
    "mailtalk.store.append",
    "mailtalk.store.flags",
    "mailtalk.store.headers",
    "mailtalk.store.index",
    "mailtalk.store.locks",
    "mailtalk.store.mailbox",
    "mailtalk.store.mbox",
    "mailtalk.store.reading",
    "mailtalk.store.users",
    "mailtalk.store.vanished",
)
# Nor does a server started without fault rules or scenarios: the rule language.
FAULT_RULES = ("mailtalk.servers.fault_rules", "mailtalk.servers.fault_scenarios")
# Nor does any server: the CLI's client side and its terminal libraries.
CLIENT_SIDE = ("mailtalk.client", "mailtalk.repl", "prompt_toolkit", "rich")


def loaded(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(
        {name for name in modules for package in packages
         if name == package or name.startswith(package + ".")}
    )  # fmt: skip


def send_to_alice(port: int) -> None:
    message = EmailMessage()
    message["From"] = "bob@example.org"
    message["To"] = "alice@localhost"
    message["Subject"] = "imports"
    message.set_content("hello\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as smtp:
        smtp.send_message(message)


def delivered(root: Path) -> list[Path]:
    return sorted((root / "mail" / "alice" / "Maildir" / "new").iterdir())


def visit_imap(port: int) -> None:
    """An IMAP session of alice's: LOGIN, SELECT INBOX (her messages in it), LOGOUT."""
    with imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT) as imap:
        imap.login("alice", "secret")
        status, data = imap.select("INBOX")
        assert status == "OK" and int(data[0] or 0) >= 1, (status, data)
        imap.logout()


def visit_pop3(port: int) -> None:
    """A POP3 session of alice's: USER, PASS, STAT (her messages), QUIT."""
    pop3 = poplib.POP3("127.0.0.1", port, timeout=TIMEOUT)
    try:
        pop3.user("alice")
        pop3.pass_("secret")
        assert pop3.stat()[0] >= 1
    finally:
        pop3.quit()


def serve_modules(root: Path, listeners: list[str], visit: tuple[str, ...] = ()) -> list[str]:
    """``sys.modules`` of a ``mailtalk serve`` that started, took a message for alice
    over SMTP, served her a session on each of the ``visit`` listeners ("imap",
    "pop3") and stopped. (Not ``-X importtime``: it does not see the modules that
    ``importlib.import_module`` loads, as the servers load each listener's.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")}
    env["MAILTALK_SERVE_PASSWORD"] = "secret"
    argv = ["serve", "--json", "--root", str(root), "--user", "alice", *listeners]
    process = subprocess.Popen(
        [sys.executable, "-c", CHECK_SYS_MODULES, json.dumps(argv)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, "mailtalk serve printed no JSON line"
        ports = {x["protocol"]: x["port"] for x in json.loads(line)["listeners"]}
        send_to_alice(ports["smtp"])
        for protocol in visit:
            {"imap": visit_imap, "pop3": visit_pop3}[protocol](ports[protocol])
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    marker = [line for line in stderr.splitlines() if line.startswith("MODULES=")]
    assert marker, stderr[-2000:]
    modules: list[str] = json.loads(marker[0].removeprefix("MODULES="))
    assert "mailtalk.servers.smtp" in modules
    return modules


RUN_SERVERS = """
import json, smtplib, sys, time
from pathlib import Path
from mailtalk.servers.api import run_servers
from tests.servers.test_serve_imports import send_to_alice

root, listeners = Path(sys.argv[1]), json.loads(sys.argv[2])
with run_servers(root, users=[("alice", "secret")], **listeners) as servers:
    send_to_alice(servers.port("smtp"))
    deadline = time.monotonic() + 30
    while not servers.messages("alice") and time.monotonic() < deadline:
        time.sleep(0.01)
print(json.dumps(sorted(sys.modules)))
"""


def run_servers_modules(root: Path, listeners: dict[str, int]) -> list[str]:
    """``sys.modules`` of a process that ran ``run_servers(root, **listeners)`` with
    alice, sent her a message over SMTP and stopped the servers."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_SERVERS, str(root), json.dumps(listeners)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        cwd=Path(__file__).resolve().parents[2],  # where ``tests`` is importable
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    modules: list[str] = json.loads(result.stdout)
    return modules


def test_serve_with_smtp_only_loads_no_mailbox_code(tmp_path: Path) -> None:
    modules = serve_modules(tmp_path / "root", ["--smtp", "0"])
    assert len(delivered(tmp_path / "root")) == 1
    assert loaded(modules, MAILBOX_SERVING) == []
    assert loaded(modules, FAULT_RULES) == []
    assert loaded(modules, CLIENT_SIDE) == []


def test_serve_loads_the_rule_language_for_a_fault_rule(tmp_path: Path) -> None:
    modules = serve_modules(tmp_path / "root", ["--smtp", "0", "--fault", "smtp:vrfy=disconnect"])
    assert loaded(modules, FAULT_RULES) == ["mailtalk.servers.fault_rules"]


def test_serve_loads_what_a_pop3_listener_needs(tmp_path: Path) -> None:
    modules = serve_modules(tmp_path / "root", ["--smtp", "0", "--pop3", "0"])
    assert "mailtalk.servers.pop3" in loaded(modules, MAILBOX_SERVING)


# What only an IMAP session needs: the IMAP servers' code and the IMAP protocol core.
IMAP_SERVING = ("mailtalk.servers.imap", "mailtalk.protocols.imap",
                "mailtalk.protocols.imap_framing", "mailtalk.protocols.imap_events")


def test_serve_loads_imap_code_at_the_first_imap_connection(tmp_path: Path) -> None:
    """A server with an IMAP listener that only serves POP3 never holds IMAP's code
    (some 1.2 MiB of RSS: memory, bench/README.md, issue 17, session 26); the first
    IMAP client loads it, and is served."""
    listeners = ["--smtp", "0", "--pop3", "0", "--imap", "0"]
    modules = serve_modules(tmp_path / "root", listeners, ("pop3",))
    assert "mailtalk.servers.pop3" in modules
    assert "mailtalk.store.view" in modules
    assert loaded(modules, IMAP_SERVING) == []
    modules = serve_modules(tmp_path / "root", listeners, ("pop3", "imap"))
    assert "mailtalk.servers.imap.server" in modules
    assert "mailtalk.protocols.imap" in modules


def test_serve_loads_search_code_at_the_first_search(tmp_path: Path) -> None:
    """An IMAP server holds SEARCH's and SORT's code (with email.utils, random,
    unicodedata) only once a client searches: memory, bench/README.md (issue 17)."""
    modules = serve_modules(tmp_path / "root", ["--smtp", "0", "--imap", "0"], ("imap",))
    assert "mailtalk.servers.imap.selected" in modules
    assert loaded(modules, ("mailtalk.servers.imap.search", "mailtalk.servers.imap.sort")) == []


# What a process serving one IMAP session of its own, without an event loop, imports
# to answer SELECT and FETCH (bench/lean_session_memory.py measures such a process).
IMAP_ANSWERS_ONLY = """
import json, sys
import mailtalk.protocols.imap, mailtalk.store.users
from mailtalk.servers.imap import mailboxes, selected
print(json.dumps(sorted(sys.modules)))
"""


def test_imap_answer_code_imports_no_event_loop() -> None:
    """The store, the IMAP core and the SELECT and FETCH handlers load without asyncio
    and the ssl it imports (3.1 MiB of RSS: bench/README.md, issue 17, session 27)."""
    result = subprocess.run([sys.executable, "-c", IMAP_ANSWERS_ONLY],
                            capture_output=True, text=True, check=True)  # fmt: skip
    modules = json.loads(result.stdout)
    assert "mailtalk.servers.imap.fetch" in modules  # the check sees what is loaded
    assert loaded(modules, ("asyncio", "ssl", "uvloop", "click")) == []


def test_run_servers_with_smtp_only_loads_no_mailbox_code(tmp_path: Path) -> None:
    modules = run_servers_modules(tmp_path / "root", {"smtp": 0, "submission": 0})
    assert len(delivered(tmp_path / "root")) == 1
    assert loaded(modules, MAILBOX_SERVING) == []
    # Nor onward delivery's SMTP client: off by default from Python.
    onward = ("mailtalk.servers.delivery", "mailtalk.protocols.smtp_sequence",
              "mailtalk.protocols.smtp_plan")  # fmt: skip
    assert loaded(modules, onward) == []
    assert loaded(modules, CLIENT_SIDE) == []


def test_run_servers_loads_what_is_asked_for(tmp_path: Path) -> None:
    modules = run_servers_modules(tmp_path / "root", {"smtp": 0, "pop3": 0, "imap": 0})
    assert loaded(modules, ("mailtalk.servers.pop3",))
    # IMAP's waits for the first IMAP client (test_serve_loads_imap_code_at_the_first...).
    assert loaded(modules, IMAP_SERVING) == []


def test_serve_holds_no_shutil_or_mime_header_code_at_start(tmp_path: Path) -> None:
    """``shutil`` (with bz2, lzma and zlib) is for removing a folder's leftovers and
    ``email.header`` for SEARCH's text of encoded words: loaded at start they were
    0.8 MiB of every server's RSS, bench/README.md (issue 17, fourth round: memory).
    (A first start, which writes certificates and control files, still loads them.)"""
    listeners = ["--smtp", "0", "--pop3", "0", "--imap", "0"]
    serve_modules(tmp_path / "root", listeners)  # the first start writes the root's files
    modules = serve_modules(tmp_path / "root", listeners, ("imap",))
    assert "mailtalk.servers.imap.selected" in modules
    assert "mailtalk.store.users" in modules
    assert loaded(modules, ("shutil", "bz2", "lzma", "email.header")) == []
