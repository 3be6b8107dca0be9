"""The config file's per-host defaults (``mailtalk/config_file.py``, applied by
``mailtalk/commands/host_defaults.py``): its parsing, and the real binary using it
against a real ``mailtalk serve``, read from that server's Maildir.

The real peers (Postfix, Dovecot) are in tests/interop/test_config_file_real.py.
"""

from __future__ import annotations

import email
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailtalk.config_file import (
    ConfigError,
    HostDefaults,
    chosen_path,
    default_path,
    for_target,
    parse,
    port_given,
)
from mailtalk.net.target import parse_shortcut, parse_url
from tests.cli.test_cli import child_env
from tests.mail.test_send_diagnose import MAILTALK, NO_DNS, new_messages, start

WORK = """\
# my hosts
[hosts.work]
server = "smtp.example.com"
port = 587
tls = "starttls"
user = "alice"
helo = "laptop.example.com"
from = "alice@example.com"

[hosts."mail.example.org"]
cafile = "ca.pem"
"""


# -- the file ---------------------------------------------------------------------------


def test_an_alias_and_a_host_name_section() -> None:
    hosts = parse(WORK, "/home/u/.config/mailtalk/config.toml")
    assert hosts["work"] == HostDefaults(
        name="work", server="smtp.example.com", port=587, tls="starttls", user="alice",
        helo="laptop.example.com", sender="alice@example.com",
    )  # fmt: skip
    # a section named for a host: that host is its server; a relative cafile is the
    # file's neighbour, not the current directory's
    org = hosts["mail.example.org"]
    assert org.server == "mail.example.org" and org.port is None and org.tls is None
    assert org.cafile == "/home/u/.config/mailtalk/ca.pem"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('[hosts.work]\nserver = "x"\npassword = "hunter2"\n', 3,
         "passwords are not kept in the config file; put them in ~/.netrc or $MAILTALK_PASSWORD"),
        ('[hosts.work]\nserver = "x"\n\n[hosts.home]\nuser = "a"\npass = "x"\n', 6,
         "[hosts.home] pass: passwords are not kept"),
        ('[hosts.work]\nserver = "x"\ntoken = "x"\n', 3, "passwords are not kept"),
        ('[hosts.work]\nserver = "x"\n[hosts.y\n', 3, "not valid TOML"),
        ('[hosts.work]\nserver = x\n', 2, "not valid TOML"),
        ('[hosts.work]\nserver = "x"\nprot = 25\n', 3, "unknown key 'prot' (keys: server,"),
        ('[hosts.work]\nport = 0\n', 2, "port must be a number from 1 to 65535"),
        ('[hosts.work]\nport = "25"\n', 2, "port must be a number"),
        ('[hosts.work]\n\ntls = "ssl"\n', 3, "tls must be one of starttls, tls, none"),
        ('[hosts.work]\nserver = ""\n', 2, "server must be a non-empty string"),
        ('x = 1\n[hosts.work]\n', 1, "unknown table or key 'x'"),
        ('[other]\n', 1, "unknown table or key 'other'"),
        ('[hosts]\nwork = 3\n', 1, "[hosts.work] must be a table"),
    ],
)
def test_a_bad_file_is_one_line_with_its_line_number(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, "hosts.toml")
    message = str(caught.value)
    assert message.startswith(f"hosts.toml:{line}: "), message
    assert fragment in message and "\n" not in message
    assert "hunter2" not in message


def test_a_target_takes_the_section_and_keeps_what_it_says() -> None:
    inbox = HostDefaults(name="inbox", server="imap.example.com", port=10993, tls="tls",
                         user="alice")
    # nothing said: the section's server, port, user, and implicit TLS
    got = for_target(parse_url("imap://inbox"), inbox, has_port=False, tls_given=False)
    assert (got.host, got.port, got.tls, got.user) == ("imap.example.com", 10993, "implicit",
                                                       "alice")
    # a port, a user and a TLS mode said on the command line win
    got = for_target(parse_url("imap://bob@inbox:143"), inbox, has_port=True, tls_given=True)
    assert (got.host, got.port, got.tls, got.user) == ("imap.example.com", 143, "none", "bob")
    # tls = "tls" without a port: the protocol's implicit-TLS port, not the plain one
    bare = HostDefaults(name="pop", server="pop.example.com", tls="tls")
    got = for_target(parse_shortcut("pop3", "pop", False), bare, has_port=False, tls_given=False)
    assert (got.port, got.tls) == (995, "implicit")
    # a URL whose scheme says TLS keeps it
    got = for_target(parse_url("imaps://inbox"), inbox, has_port=False, tls_given=False)
    assert got.tls == "implicit" and got.port == 10993
    assert port_given("a@h:25") and port_given("[::1]:25") and not port_given("::1")
    assert not port_given("alice@inbox")


def test_which_file() -> None:
    home = {"HOME": "/home/u"}
    assert default_path(home) == Path("/home/u/.config/mailtalk/config.toml")
    assert default_path({**home, "XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/mailtalk/config.toml")
    # the XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored
    assert default_path({**home, "XDG_CONFIG_HOME": "cfg"}) == default_path(home)
    assert chosen_path(None, home) == (default_path(home), False)
    assert chosen_path(None, {**home, "MAILTALK_CONFIG": "/m.toml"}) == (Path("/m.toml"), True)
    assert chosen_path("/c.toml", {**home, "MAILTALK_CONFIG": "/m.toml"}) == (
        Path("/c.toml"), True)


# -- the binary -------------------------------------------------------------------------


def run(*args: str, config_home: Path | None = None, **variables: str
        ) -> subprocess.CompletedProcess[str]:
    env = child_env()
    env.pop("MAILTALK_CONFIG", None)
    env.pop("MAILTALK_PASSWORD", None)
    if config_home is not None:
        env["XDG_CONFIG_HOME"] = str(config_home)
    env.update(variables)
    return subprocess.run([MAILTALK, *args], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def assert_usage_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mailtalk: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


SEND = ("send", "--to", "alice@isp.test", "--server", "work", "--resolver", NO_DNS,
        "--timeout", "10")


@pytest.mark.parametrize("how", ["--config", "MAILTALK_CONFIG", "XDG_CONFIG_HOME"])
def test_a_bad_file_stops_every_command_that_connects_with_exit_2(
    tmp_path: Path, how: str
) -> None:
    (tmp_path / "mailtalk").mkdir()
    path = tmp_path / "mailtalk" / "config.toml"
    path.write_text('[hosts.work]\nserver = "127.0.0.1"\npassword = "hunter2"\n')
    for command in (SEND, ("smtp", "work"), ("connect", "imap://work"),
                    ("diagnose", "relay", "--from", "a@b.test", "--to", "c@d.test",
                     "--server", "work"), ("diagnose", "login", "imaps://work")):
        if how == "--config":
            result = run("--config", str(path), *command)
        elif how == "MAILTALK_CONFIG":
            result = run(*command, MAILTALK_CONFIG=str(path))
        else:
            result = run(*command, config_home=tmp_path)
        assert_usage_line(result, f"{path}:3: [hosts.work] password: passwords are not kept",
                          "~/.netrc", "$MAILTALK_PASSWORD")
        assert "hunter2" not in result.stderr


def test_no_config_ignores_the_file_and_a_missing_chosen_file_is_an_error(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts.work\n")
    # --no-config: "work" is just a host name again (no DNS for it: could not connect)
    result = run("--no-config", "--config", str(bad), "smtp", "work.invalid", "--timeout", "5")
    assert result.returncode == 3, result.stderr
    assert_usage_line(run("--config", str(tmp_path / "none.toml"), "smtp", "work"),
                      f"{tmp_path / 'none.toml'}: no such config file")
    # the default file may be absent
    result = run("smtp", "127.0.0.1:1", config_home=tmp_path / "nothing")
    assert result.returncode == 3, result.stderr
    # --help never reads the file
    assert run("--config", str(bad), "send", "--help").returncode == 0


def test_send_by_alias_takes_the_file_and_the_command_line_wins(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    running = start(mailtalk_servers)
    config = tmp_path / "hosts.toml"
    config.write_text(
        f'[hosts.work]\nserver = "127.0.0.1"\nport = {running.port("smtp")}\n'
        'helo = "from-the-file.test"\nfrom = "file@isp.test"\n'
    )
    result = run("--config", str(config), *SEND, "--subject", "by alias")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"# connecting to 127.0.0.1:{running.port('smtp')}" in result.stdout
    (first,) = new_messages(running, "alice")
    message = email.message_from_bytes(first.read_bytes())
    assert message["Return-Path"] == "<file@isp.test>", message
    assert "from-the-file.test" in message["Received"], message["Received"]

    # the same alias, with --from and --helo given: they win; the port from the file stays
    result = run("--config", str(config), *SEND, "--from", "cli@isp.test",
                 "--helo", "from-the-command-line.test", "--subject", "given")
    assert result.returncode == 0, result.stdout + result.stderr
    second = next(p for p in new_messages(running, "alice") if p != first)
    message = email.message_from_bytes(second.read_bytes())
    assert message["Return-Path"] == "<cli@isp.test>", message
    assert "from-the-command-line.test" in message["Received"]
    assert "from-the-file.test" not in message["Received"]

    # ALIAS:PORT: that port wins over the file's (nothing listens on port 1)
    result = run("--config", str(config), *SEND[:4], "work:1", *SEND[5:])
    assert result.returncode == 3 and "127.0.0.1 port 1" in result.stderr, result.stderr
    # without the file, no default sender: the command says what is missing
    assert_usage_line(run("--no-config", *SEND), "missing option --from")
