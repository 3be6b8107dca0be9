"""`mailtalk connect`, `smtp`, `pop3`, `imap`: the interactive sessions (REPL or pipe mode)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import click

from mailtalk.cli import (
    EXIT_STATUS_EPILOG,
    CAFile,
    F,
    OutputFile,
    ResolveEntry,
    cli,
    pass_environment,
)
from mailtalk.commands.languageoption import lang_option
from mailtalk.commands.tlsoptions import client_tls, tls_options
from mailtalk.commands.transportoptions import transport_options, xclient_option

if TYPE_CHECKING:
    from mailtalk.client.command import ConnectOptions
    from mailtalk.environment import Environment
    from mailtalk.net.target import Target


def connection_options(func: F) -> F:
    """The options every connecting command shares."""
    options = [
        click.option(
            "--starttls/--no-starttls",
            default=None,
            help="Start TLS right after connecting (STARTTLS, or STLS for POP3). "
            "Default: on for submission://, off otherwise.",
        ),
        click.option("--insecure", is_flag=True, help="Do not verify the server's certificate."),
        click.option(
            "--cafile",
            type=CAFile(),
            help="Trust the CA certificates (PEM) in this file.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=30.0,
            show_default=True,
            help="Seconds to wait for the connection and for each reply.",
        ),
        click.option(
            "--resolve",
            type=ResolveEntry(),
            multiple=True,
            help="Connect to ADDRESS for NAME, without asking DNS (repeatable); "
            "TLS still checks NAME.",
        ),
        click.option("-4", "ipv4", is_flag=True, help="Connect over IPv4 only."),
        click.option("-6", "ipv6", is_flag=True, help="Connect over IPv6 only."),
        click.option(
            "--transcript",
            type=OutputFile(),
            help="Append the conversation to this file (secrets redacted).",
        ),
        click.option(
            "--show-secrets",
            is_flag=True,
            help="Do not redact passwords and AUTH data (in C: lines and transcripts).",
        ),
        click.option(
            "--raw",
            is_flag=True,
            help="Show the exact bytes sent (C:) and received (S:), escaped (:raw).",
        ),
        click.option(
            "--record",
            type=OutputFile(),
            metavar="FILE",
            help="Write the session as a session file for mailtalk run (secrets left out).",
        ),
        lang_option("The language of mailtalk's own messages, :help and the explanations"),
    ]
    for option in reversed(options):
        func = option(func)
    return tls_options(transport_options(xclient_option(func)))


def _target(parse: Callable[[], Target]) -> Target:
    """The target the argument names; a bad one is a usage error (exit 2)."""
    from mailtalk.errors import UsageError
    from mailtalk.net.target import TargetError

    try:
        return parse()
    except TargetError as error:
        raise UsageError(str(error)) from None


def _with_host_defaults(target: Target, authority: str, options: dict[str, Any]) -> Target:
    """The config file's defaults for the target's host (commands/host_defaults.py)."""
    from mailtalk.commands import host_defaults
    from mailtalk.config_file import port_given

    if options.get("pipe_command") is not None:
        return target  # a program is the server: the host is only a name
    return host_defaults.target(target, port_given(authority), options)


def _talk(env: Environment, options: ConnectOptions) -> None:
    """``mailtalk.client.command.run``, once the options agree."""
    from mailtalk.client.command import run
    from mailtalk.errors import UsageError

    if options.ipv4 and options.ipv6:
        raise UsageError("-4 and -6 exclude each other")
    if options.xclient and (options.target.protocol != "smtp" or options.target.lmtp):
        raise UsageError("--xclient is for SMTP sessions (Postfix XCLIENT)")
    if options.pipe_command is not None:
        from mailtalk.net.program import ProgramError, split_command

        try:
            split_command(options.pipe_command)
        except ProgramError as error:
            raise UsageError(str(error)) from None
    sys.exit(run(options, env))


@cli.command(
    epilog="\b\nURL schemes (default port, TLS):\n"
    "  smtp://        25   plain (STARTTLS with --starttls)\n"
    "  submission://  587  STARTTLS\n"
    "  smtps://       465  implicit TLS\n"
    "  pop3://        110  plain (STLS with --starttls)\n"
    "  pop3s://       995  implicit TLS\n"
    "  imap://        143  plain (STARTTLS with --starttls)\n"
    "  imaps://       993  implicit TLS\n"
    "  lmtp://        24   LMTP (RFC 2033): LHLO, a reply per recipient\n"
    "  SCHEME:unix:/path   a Unix-domain socket (smtp:unix:/run/smtpd.sock)\n"
    "\b\nExamples:\n"
    "  mailtalk connect smtp://mx.example.com\n"
    "  mailtalk connect submission://alice@mail.example.com\n"
    "  mailtalk connect imaps://alice@imap.example.com:993 --cafile ca.pem\n"
    "  mailtalk connect smtp://127.0.0.1 --starttls --sni mx.test --tls-dump c.pem\n"
    "  mailtalk connect pop3://127.0.0.1:1110 --transcript pop.log\n"
    "  mailtalk connect lmtp:unix:/run/dovecot/lmtp\n"
    "  mailtalk connect imap:unix:/run/imap.sock\n\n" + EXIT_STATUS_EPILOG
)
@click.argument("url")
@connection_options
@pass_environment
def connect(env: Environment, url: str, **options: Any) -> None:
    """Open an interactive session with the server at URL.

    URL is scheme://[user@]host[:port]. The user, if given, is what :auth
    offers by default. The host may be an alias from the config file
    (mailtalk --help), whose defaults fill in what the command line leaves out.
    """
    from mailtalk.client.command import ConnectOptions
    from mailtalk.net.target import parse_url

    target = _target(lambda: parse_url(url))
    authority = url.partition("://")[2].split("/", 1)[0]
    target = _with_host_defaults(target, authority, options)
    tls = client_tls(env, options)
    _talk(env, ConnectOptions(target=target, tls=tls, **options))


# What --pipe runs in each shortcut's example.
_PIPE_EXAMPLE = {
    "smtp": "exim -bh 192.0.2.1",
    "pop3": "dovecot --exec-mail pop3",
    "imap": "dovecot --exec-mail imap",
}


def _shortcut(protocol: Literal["smtp", "pop3", "imap"], example_host: str) -> None:
    default_plain = {"smtp": 25, "pop3": 110, "imap": 143}[protocol]
    default_tls = {"smtp": 465, "pop3": 995, "imap": 993}[protocol]

    @cli.command(
        name=protocol,
        epilog="\b\nExamples:\n"
        f"  mailtalk {protocol} {example_host}\n"
        f"  mailtalk {protocol} {example_host}:{default_plain} --starttls\n"
        f"  mailtalk {protocol} --tls {example_host}\n"
        f"  mailtalk {protocol} alice@127.0.0.1:{default_plain} --insecure\n"
        f"  mailtalk {protocol} unix:/run/{protocol}.sock\n"
        f"  mailtalk {protocol} --pipe '{_PIPE_EXAMPLE[protocol]}'\n\n" + EXIT_STATUS_EPILOG,
        help=f"Open an interactive {protocol.upper()} session with HOST[:PORT].\n\n"
        f"The port defaults to {default_plain}, or {default_tls} with --tls. "
        f"A user@ before the host is what :auth offers by default. unix:/path is a "
        f"Unix-domain socket; with --pipe COMMAND no HOST is needed. HOST may be an "
        f"alias from the config file ([hosts.NAME], see mailtalk --help).",
    )
    @click.argument("host_port", metavar="[USER@]HOST[:PORT]", required=False)
    @click.option("--tls", "implicit_tls", is_flag=True, help="Use implicit TLS from the start.")
    @connection_options
    @pass_environment
    def command(
        env: Environment, host_port: str | None, implicit_tls: bool, **options: Any
    ) -> None:
        from mailtalk.client.command import ConnectOptions
        from mailtalk.errors import UsageError
        from mailtalk.net.target import parse_shortcut

        if host_port is None:
            if options.get("pipe_command") is None:
                raise UsageError("give HOST[:PORT] (or --pipe COMMAND)")
            host_port = "localhost"  # only a name: the program is the server

        target = _target(lambda: parse_shortcut(protocol, host_port, implicit_tls))
        target = _with_host_defaults(target, host_port, options)
        tls = client_tls(env, options)
        _talk(env, ConnectOptions(target=target, tls=tls, **options))


_shortcut("smtp", "mail.example.com")
_shortcut("pop3", "pop.example.com")
_shortcut("imap", "imap.example.com")
