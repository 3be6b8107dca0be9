"""``mailtalk serve`` as a command: what its options do to ROOT and what it prints.

Each test runs the real command in a subprocess and talks to it over sockets: options
that edit the control files (``--domain``, ``--hostname``) on a new root and on one
made earlier, the start-up text's connect hint, and what two servers running at once
(a practice world) call themselves and their messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailtalk.errors import UsageError

TIMEOUT = 10.0


def mailtalk_command() -> list[str]:
    script = Path(sys.executable).with_name("mailtalk")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailtalk"]


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return env


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    summary: str

    def port(self, protocol: str) -> int:
        match = re.search(rf"(?m)^  {protocol} +\S+:(\d+) ", self.summary)
        assert match, self.summary
        return int(match.group(1))

    def stop(self) -> str:
        """Stop the server; its standard error."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stderr is not None
        return self.process.stderr.read().decode()


def start(tmp_path: Path, root: Path, *args: str) -> Serve:
    """``mailtalk serve --root ROOT ARGS``, once its start-up text is out."""
    process = subprocess.Popen(
        [*mailtalk_command(), "serve", "--root", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(tmp_path),
    )
    assert process.stdout is not None
    text = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        while not text.endswith(b"Ctrl-C stops.\n"):
            ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
            chunk = os.read(process.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                process.kill()
                _, err = process.communicate()
                raise AssertionError(f"no start-up text: {text!r}; stderr {err!r}")
            text += chunk
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
    return Serve(process, text.decode())


@contextlib.contextmanager
def serving(tmp_path: Path, root: Path, *args: str) -> Iterator[Serve]:
    server = start(tmp_path, root, *args)
    try:
        yield server
    finally:
        server.stop()


def banner(port: int, host: str = "127.0.0.1") -> str:
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        return sock.makefile("rb").readline().decode().rstrip("\r\n")


def rcpt(port: int, address: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("stranger@example.org")
        return smtp.rcpt(address)


# -- --domain and --hostname on a root made earlier ---------------------------


def test_domain_on_an_existing_root_takes_effect(tmp_path: Path) -> None:
    """README: first `serve --user alice:secret`, later `--domain example.test`."""
    root = tmp_path / "root"
    with serving(tmp_path, root, "--smtp", "0", "--user", "alice:secret") as first:
        assert rcpt(first.port("smtp"), "alice@example.test")[0] == 554
    rcpthosts = root / "control" / "rcpthosts"
    rcpthosts.write_text(rcpthosts.read_text() + "# my own note\nexample.org\n")
    with serving(tmp_path, root, "--smtp", "0", "--domain", "Example.Test") as second:
        assert rcpt(second.port("smtp"), "alice@example.test") == (
            250,
            b"2.1.5 Recipient <alice@example.test> OK",
        )
        assert rcpt(second.port("smtp"), "alice@example.org")[0] == 550  # not local: as it was
        assert "changed control/rcpthosts: added example.test\n" in second.summary
        assert "changed control/locals: added example.test\n" in second.summary
        assert re.search(r"(?m)^  domains: localhost, example\.test$", second.summary)
    text = rcpthosts.read_text()
    assert text.endswith("# my own note\nexample.org\nexample.test\n"), text  # edits kept
    # Given again, nothing more to do: no second line, no "changed".
    with serving(tmp_path, root, "--smtp", "0", "--domain", "example.test") as third:
        assert "changed" not in third.summary
    assert rcpthosts.read_text() == text


def test_hostname_names_the_server_on_a_new_and_an_existing_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with serving(tmp_path, root, "--smtps", "0", "--user", "alice:secret") as plain:
        assert "  hostname: localhost\n" in plain.summary
    args = ("--smtp", "0", "--smtps", "0", "--hostname", "MX.Isp.Test")
    with serving(tmp_path, root, *args) as named:
        assert "  hostname: mx.isp.test\n" in named.summary
        assert "changed control/me: mx.isp.test (was localhost)\n" in named.summary
        assert banner(named.port("smtp")) == "220 mx.isp.test ESMTP mailtalk reference server ready"
        # The name is local now, and the certificate carries it.
        assert rcpt(named.port("smtp"), "alice@mx.isp.test")[0] == 250
        context = ssl.create_default_context(cafile=str(root / "tls" / "ca.pem"))
        with (
            socket.create_connection(("127.0.0.1", named.port("smtps")), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="mx.isp.test") as tls,
        ):
            assert tls.recv(100).startswith(b"220 mx.isp.test ")
    assert (root / "control" / "me").read_text() == "mx.isp.test\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "localhost"),
        (("--listen", "127.0.0.42", "--domain", "isp.test"), "isp.test"),
        (("--listen", "127.0.0.43"), "[127.0.0.43]"),
    ],
    ids=["loopback", "listen-and-domain", "listen-only"],
)
def test_hostname_default_for_a_new_root(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    """Two servers of a practice world no longer both call themselves localhost."""
    root = tmp_path / "root"
    with serving(tmp_path, root, "--smtp", "0", *args) as server:
        host = args[1] if args else "127.0.0.1"
        assert banner(server.port("smtp"), host).startswith(f"220 {expected} ESMTP ")
        assert f"  hostname: {expected}\n" in server.summary


@pytest.mark.parametrize(
    ("option", "value"),
    [("--domain", "bad domain"), ("--hostname", "x y"), ("--domain", "a@b.test")],
)
def test_a_bad_name_is_refused_in_one_line(tmp_path: Path, option: str, value: str) -> None:
    result = subprocess.run(
        [*mailtalk_command(), "serve", "--root", str(tmp_path / "root"), "--smtp", "0",
         option, value],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment(tmp_path),
    )
    assert result.returncode == 2, result
    assert result.stderr == f"mailtalk: {option} {value!r}: not a domain name\n"
    assert result.stdout == ""


def test_a_broken_control_file_is_refused_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "control").mkdir(parents=True)
    (root / "control" / "rcpthosts").write_text("example.org # mine\n")
    result = subprocess.run(
        [*mailtalk_command(), "serve", "--root", str(root), "--smtp", "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment(tmp_path),
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"mailtalk: {root / 'control' / 'rcpthosts'}:1: not a domain")
    assert len(result.stderr.splitlines()) == 1, result.stderr


# -- the start-up text's connect hint -------------------------------------------


def test_connect_hint_names_the_listen_address(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with serving(tmp_path, root, "--listen", "127.0.0.42", "--smtps", "0") as server:
        port = server.port("smtps")
        ca = root / "tls" / "ca.pem"
        hint = f"TLS: to trust the local CA, mailtalk connect --cafile {ca} smtps://127.0.0.42:{port}"
        assert f"  {hint}\n" in server.summary
        # What it names is there, and the certificate is good for it.
        context = ssl.create_default_context(cafile=str(ca))
        with (
            socket.create_connection(("127.0.0.42", port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.42") as tls,
        ):
            assert tls.recv(100).startswith(b"220 ")


# -- two servers at once ---------------------------------------------------------------


def _queue_id(port: int, host: str) -> str:
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("stranger@example.org")
        smtp.rcpt("postmaster")
        code, text = smtp.data(b"Subject: which queue id?\r\n\r\nx\r\n")
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def _ids_in_one_second(one: int, two: int) -> tuple[str, str]:
    """A message to each of the servers on 127.0.0.2:ONE and 127.0.0.3:TWO, both in the
    same second (the case where ids made of time and process could meet)."""
    for _ in range(5):
        second = int(time.time())
        ids = (_queue_id(one, "127.0.0.2"), _queue_id(two, "127.0.0.3"))
        if int(time.time()) == second:
            break
    return ids


def test_two_servers_never_give_the_same_queue_id(tmp_path: Path) -> None:
    """Two servers on one machine (as the README once built a practice world), each
    its first message, same second."""
    with (
        serving(tmp_path, tmp_path / "a", "--listen", "127.0.0.2", "--smtp", "0") as one,
        serving(tmp_path, tmp_path / "b", "--listen", "127.0.0.3", "--smtp", "0") as two,
    ):
        ids = _ids_in_one_second(one.port("smtp"), two.port("smtp"))
        assert ids[0] != ids[1], ids


def test_servers_of_one_process_never_give_the_same_queue_id(tmp_path: Path) -> None:
    """A practice world runs several servers in one process: same process id, and
    each server's first message; their ids must still differ."""
    from mailtalk.servers.api import run_servers

    with (
        run_servers(tmp_path / "a", listen="127.0.0.2", hostname="a.test") as one,
        run_servers(tmp_path / "b", listen="127.0.0.3", hostname="b.test") as two,
    ):
        ids = _ids_in_one_second(one.port("smtp"), two.port("smtp"))
        assert ids[0] != ids[1], ids


def test_options_become_the_servers_configuration(tmp_path: Path) -> None:
    """The typed options the command line builds, and the environment's XDG directory
    for a root not given."""
    from mailtalk.environment import Environment
    from mailtalk.servers.command import DEFAULT_PORTS, ServeOptions, serve_config

    env = Environment.for_test(variables={"XDG_DATA_HOME": str(tmp_path)})
    config = serve_config(ServeOptions(max_size=1000, quota=10, users=("alice:secret",)), env)
    assert config.root == tmp_path / "mailtalk" / "serve"
    assert config.ports == dict(DEFAULT_PORTS)
    assert config.settings.max_size == config.settings.max_literal == 1000
    assert config.settings.quota_bytes == 10 and config.settings.onward_delivery
    assert [user[0] for user in config.users] == ["alice"]
    chosen = serve_config(ServeOptions(root=tmp_path / "r", ports={"imaps": 0, "smtp": 0}), env)
    assert chosen.root == tmp_path / "r"
    assert list(chosen.ports) == ["smtp", "imaps"]  # in the listeners' order
    # --lmtp adds to the default listeners, as --http does (the README's "+ LMTP")
    lmtp = serve_config(ServeOptions(root=tmp_path / "r", ports={"lmtp": 2424}), env)
    assert lmtp.ports == {**DEFAULT_PORTS, "lmtp": 2424}
    lmtp_only = serve_config(ServeOptions(root=tmp_path / "r", ports={"lmtp": 0, "smtp": 0}), env)
    assert list(lmtp_only.ports) == ["smtp", "lmtp"]
    with pytest.raises(UsageError, match=r"^--user bob: empty password"):
        serve_config(ServeOptions(users=("bob:",)), env)
