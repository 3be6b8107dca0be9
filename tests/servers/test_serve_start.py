"""What ``mailtalk serve`` does at start with passwords, modes and crash leftovers
(issue 15, item 7).

- ``--users-file FILE`` and ``--user NAME`` with ``$MAILTALK_SERVE_PASSWORD`` keep
  passwords out of ``/proc/PID/cmdline``, which every user of the machine can read;
- under ``umask 000`` a new root, its new parents and everything the servers make in
  it stay private (0700 directories, no file writable by others);
- tmp/ files that crashed deliveries left are removed once 36 hours old (the Maildir
  spec), younger ones and delivered mail are left alone;
- every option says in ``--help`` what it does.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import click
import click.testing
import pytest

from mailtalk.errors import UsageError
from mailtalk.servers.api import run_servers

TIMEOUT = 20.0


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")}
    env.update(extra)
    return env


def _serve(args: list[str], env: dict[str, str], umask: int | None = None
           ) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """``mailtalk serve --json ARGS``; its process and ports once it listens."""
    command = [sys.executable, "-m", "mailtalk", "serve", "--json", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(process.communicate()[1].decode())
    return process, {x["protocol"]: x["port"] for x in json.loads(line)["listeners"]}


def _stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=TIMEOUT)
    return err.decode()


def _auth(port: int, user: str, password: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        answer = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return smtp.docmd("AUTH", f"PLAIN {answer}")[0]


# -- passwords out of the command line ----------------------------------------------


def test_users_file_and_password_variable_keep_passwords_out_of_the_command_line(
    tmp_path: Path,
) -> None:
    users_file = tmp_path / "users.txt"
    users_file.write_text("# the class\n\nalice:s3cret word\ncarol:colon:in:it\n")
    env = _environment(MAILTALK_SERVE_PASSWORD="hunter2")
    process, ports = _serve(["--root", str(tmp_path / "root"), "--smtp", "0",
                             "--users-file", str(users_file), "--user", "bob"], env)
    try:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        for secret in (b"s3cret", b"hunter2", b"colon:in"):
            assert secret not in cmdline
        assert _auth(ports["smtp"], "alice", "s3cret word") == 235
        assert _auth(ports["smtp"], "bob", "hunter2") == 235
        assert _auth(ports["smtp"], "carol", "colon:in:it") == 235
    finally:
        _stop(process)
    hashes = (tmp_path / "root" / "control" / "users").read_text()
    assert "hunter2" not in hashes and "s3cret" not in hashes


def _config(tmp_path: Path, stdin: str = "", **options: object) -> object:
    from mailtalk.environment import Environment
    from mailtalk.servers.command import ServeOptions, serve_config

    variables = {"XDG_DATA_HOME": str(tmp_path)}
    variables.update({k: str(v) for k, v in options.pop("variables", {}).items()})  # type: ignore[attr-defined]
    env = Environment.for_test(variables=variables, stdin=io.StringIO(stdin))
    return serve_config(ServeOptions(**options), env)  # type: ignore[arg-type]


def test_users_file_from_standard_input_and_later_users_win(tmp_path: Path) -> None:
    config = _config(tmp_path, "dave:pw1\nerin:pw2\n", users_file="-",
                     users=("dave",), variables={"MAILTALK_SERVE_PASSWORD": "pw3"})
    assert list(config.users) == [("dave", "pw1"), ("erin", "pw2"), ("dave", "pw3")]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("alice:ok\nbob-has-no-colon-secretword\n", r"users\.txt:2: expected NAME:PASSWORD"),
        ("alice:one\nalice:two\n", r"users\.txt:2: user 'alice' is already on line 1"),
        ("Alice:secretword\n", r"users\.txt:1: user name 'Alice' may hold only"),
        ("alice:\n", r"users\.txt:1: empty password"),
        (b"alice:\xff\n", r"users\.txt: not UTF-8 text"),
    ],
)
def test_a_bad_users_file_is_one_line_that_never_shows_a_password(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "users.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(UsageError, match=message) as caught:
        _config(tmp_path, users_file=str(path))
    assert "secretword" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UsageError, match=r"--users-file .*nothing\.txt: No such file"):
        _config(tmp_path, users_file=str(tmp_path / "nothing.txt"))


def test_a_user_without_password_needs_the_variable(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^expected --user NAME:PASSWORD .*MAILTALK_SERVE_PASS"):
        _config(tmp_path, users=("bob",))
    with pytest.raises(UsageError, match=r"the variable is not set"):
        _config(tmp_path, users=("bob",), variables={"MAILTALK_SERVE_PASSWORD": ""})


@pytest.mark.parametrize("variables", [{}, {"MAILTALK_SERVE_PASSWORD": "x"}])
def test_user_without_a_colon_is_never_echoed(variables: dict[str, str]) -> None:
    """``--user VALUE`` with no ':' may be a password typed alone: the one error line
    says what form is expected and neither shows it nor makes up a ``NAME:…`` of it."""
    typed = "Hunter2-Secret!"
    done = subprocess.run(
        [sys.executable, "-m", "mailtalk", "serve", "--user", typed],
        capture_output=True, text=True, timeout=TIMEOUT, env=_environment(**variables),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert typed not in done.stderr and "…" not in done.stderr, done.stderr
    assert "--user NAME:PASSWORD" in done.stderr, done.stderr


def test_every_serve_option_says_what_it_does() -> None:
    from mailtalk.commands.serve import serve

    assert isinstance(serve, click.Command)
    undocumented = [p.name for p in serve.params if isinstance(p, click.Option) and not p.help]
    assert undocumented == []
    text = subprocess.run([sys.executable, "-m", "mailtalk", "serve", "--help"],
                          capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    assert "/proc/PID/cmdline" in flat and "$MAILTALK_SERVE_PASSWORD" in flat
    assert "MAILTALK_SERVE_PASSWORD=secret mailtalk serve --user alice" in text
    for option in ("--max-connections", "--idle-timeout", "--auth-failure-delay",
                   "--auth-failures-per-address", "--error-limit", "--users-file"):
        assert option in text


# -- modes whatever the umask -------------------------------------------------------


def test_a_new_root_is_private_whatever_the_umask(tmp_path: Path) -> None:
    root = tmp_path / "new" / "parents" / "root"
    journal = tmp_path / "logs" / "serve.jsonl"
    env = _environment(MAILTALK_SERVE_PASSWORD="secret")
    process, ports = _serve(["--root", str(root), "--smtp", "0", "--imap", "0", "--dns", "0",
                             "--user", "alice", "--journal", str(journal)], env, umask=0)
    try:
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=TIMEOUT) as smtp:
            smtp.sendmail("a@example.org", ["alice@localhost"], b"Subject: x\r\n\r\nhi\r\n")
    finally:
        _stop(process)
    made = [tmp_path / "new", tmp_path / "new" / "parents", tmp_path / "logs"]
    for top, _, files in os.walk(tmp_path / "new"):
        made.append(Path(top))
        for name in files:
            mode = stat.S_IMODE((Path(top) / name).stat().st_mode)
            assert not mode & 0o022, (Path(top) / name, oct(mode))
    wanted = {root / "control", root / "mail" / "alice" / "Maildir" / "new", root / "dns",
              root / "tls"}
    assert wanted <= set(made)
    modes = {directory: oct(stat.S_IMODE(directory.stat().st_mode)) for directory in made}
    assert set(modes.values()) == {"0o700"}, modes
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


# -- crash leftovers ------------------------------------------------------------------


def test_tmp_files_older_than_36_hours_are_removed_at_start(tmp_path: Path) -> None:
    inbox = tmp_path / "mail" / "alice" / "Maildir"
    for folder in (inbox, inbox / ".Sent"):
        for sub in ("tmp", "new", "cur"):
            (folder / sub).mkdir(parents=True)
    now = time.time()
    files = {
        "stale": (inbox / "tmp" / "1.M1P1.host", 37 * 3600),
        "young": (inbox / "tmp" / "2.M2P2.host", 35 * 3600),
        "stale in a folder": (inbox / ".Sent" / "tmp" / "3.M3P3.host", 40 * 3600),
        "old mail": (inbox / "new" / "4.M4P4.host", 400 * 3600),
        "old queue tmp": (tmp_path / "queue" / "tmp" / "5.M5P5.host", 2 * 3600),
    }
    (tmp_path / "queue" / "tmp").mkdir(parents=True)
    for path, age in files.values():
        path.write_bytes(b"Subject: x\n\nleft over\n")
        os.utime(path, (now - age, now - age))
    with run_servers(tmp_path, smtp=0, users=[("alice", "secret")]):
        pass
    left = {what for what, (path, _) in files.items() if path.exists()}
    assert left == {"young", "old mail"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# tokens\nalice tok1\nbob\n", r"tokens\.txt:3: expected NAME TOKEN \(two words\)"),
        ("alice tok1 secretword\n", r"tokens\.txt:1: expected NAME TOKEN"),
        ("alice tok1\nalice tok2\n", r"tokens\.txt:2: user 'alice' is already on line 1"),
        ("Alice secretword\n", r"tokens\.txt:1: user name 'Alice' may hold only"),
    ],
)
def test_a_bad_oauth2_tokens_file_is_one_line_that_never_shows_a_token(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as caught:
        _config(tmp_path, oauth2_tokens=str(path))
    assert "secretword" not in str(caught.value) and "\n" not in str(caught.value)
    path.write_text("# alice's\n\nalice ya29.tok\n")
    assert _config(tmp_path, oauth2_tokens=str(path)).oauth2_tokens == {"alice": "ya29.tok"}  # type: ignore[attr-defined]


def test_the_tls_context_is_made_at_first_use_without_implicit_tls(tmp_path: Path) -> None:
    """An SMTP-only server greets before it loads its certificate chain (2 ms of the
    start, issue 17); the first EHLO makes the context, and STARTTLS then verifies
    against the root's CA. With an implicit-TLS listener it is made at start."""
    import ssl

    with run_servers(tmp_path / "plain", smtp=0) as servers:
        assert "ssl_context" not in vars(servers.context)
        with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            assert "ssl_context" in vars(servers.context)
            trusted = ssl.create_default_context(cafile=str(servers.cafile))
            assert client.starttls(context=trusted)[0] == 220
            assert client.ehlo()[0] == 250
    with run_servers(tmp_path / "implicit", smtp=0, smtps=0) as servers:
        assert vars(servers.context)["ssl_context"] is not None


GC_PROBE = r"""
import gc, json, os, signal, socket, sys, threading, time
from mailtalk.cli import main

def client(port):
    for _ in range(3000):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                banner = sock.recv(512)
                break
        except OSError:
            time.sleep(0.01)
    print(json.dumps({"banner": banner.decode(), "enabled": gc.isenabled(),
                      "frozen": gc.get_freeze_count()}), file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

port = int(sys.argv[2])
threading.Thread(target=client, args=(port,), daemon=True).start()
sys.argv = ["mailtalk", "serve", "--root", sys.argv[1], "--smtp", str(port), "--json"]
try:
    main()
except SystemExit as end:
    print(json.dumps({"status": end.code, "enabled_after": gc.isenabled(),
                      "frozen_after": gc.get_freeze_count()}), file=sys.stderr)
"""


def test_serve_collects_garbage_once_listening(tmp_path: Path) -> None:
    """Collection is off while the servers load and start (issue 17: 25 passes over
    objects that live as long as the server), and on again, with what start-up made
    frozen, by the time a client is greeted; after the servers stop nothing is left
    frozen. A bad option, which stops the start, turns it on again too."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", GC_PROBE, str(tmp_path / "root"), str(port)],
        capture_output=True, text=True, timeout=60, env=_environment(),
    )  # fmt: skip
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert len(lines) == 2, result.stderr[-2000:]
    serving, ended = lines
    assert serving["banner"].startswith("220 ") and serving["enabled"] is True
    assert serving["frozen"] > 10_000  # the modules, classes and settings of start-up
    assert ended == {"status": 0, "enabled_after": True, "frozen_after": 0}

    import gc

    runner = click.testing.CliRunner()
    from mailtalk.cli import cli

    bad = runner.invoke(cli, ["serve", "--root", str(tmp_path / "r"), "--users-file", "/no/such"])
    assert bad.exit_code == 2 and gc.isenabled()
