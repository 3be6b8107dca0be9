"""The transport options every connecting command shares (``--pipe``, ``--proxy-from``,
``--proxy-version``) and ``--xclient``, declared once: ``connect``/``smtp``/``pop3``/
``imap``, ``send``, ``run`` and ``diagnose`` use these decorators, and the values
reach ``client.options.SessionOptions`` through the same fields."""

from __future__ import annotations

from typing import Any

import click

from mailtalk.cli import F


class ProxySource(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on
    """--proxy-from ADDR[:PORT], checked when parsed: (address, port)."""

    name = "ADDR[:PORT]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        from mailtalk.clicklanguage import spoken_gettext
        from mailtalk.protocols.proxy import ProxyHeaderError, parse_source

        try:
            return parse_source(str(value))
        except ProxyHeaderError as error:
            said = error.said(spoken_gettext())
            self.fail(said.removeprefix(f"--proxy-from {value!r}: "), param, ctx)


class XClientAttribute(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on
    """--xclient NAME=VALUE, checked when parsed: (NAME, value)."""

    name = "NAME=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        from mailtalk.clicklanguage import spoken_gettext
        from mailtalk.protocols.xclient import XClientError, parse_attribute

        try:
            return parse_attribute(str(value))
        except XClientError as error:
            said = error.said(spoken_gettext())
            self.fail(said.removeprefix(f"--xclient {value!r}: "), param, ctx)


def transport_options(func: F) -> F:
    """--pipe, --proxy-from, --proxy-version."""
    options = [
        click.option(
            "--pipe",
            "pipe_command",
            metavar="COMMAND",
            help="Talk to COMMAND's standard input and output instead of a socket, e.g. "
            "--pipe 'exim -bh 192.0.2.1' or --pipe 'sendmail -bs'. Split into words as a "
            "shell would, but run without a shell; its standard error is shown apart "
            "and its exit status at the end.",
        ),
        click.option(
            "--proxy-from",
            type=ProxySource(),
            metavar="ADDR[:PORT]",
            help="Send a HAProxy PROXY header saying the client is ADDR first, for a "
            "server behind a proxy (Postfix's smtpd_upstream_proxy_protocol), e.g. "
            "--proxy-from 192.0.2.1:4711.",
        ),
        click.option(
            "--proxy-version",
            type=click.Choice(["1", "2"]),
            default="1",
            show_default=True,
            callback=lambda _ctx, _param, value: int(value),
            help="The PROXY header's version: 1 (text) or 2 (binary).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def xclient_option(func: F) -> F:
    """--xclient NAME=VALUE (SMTP only)."""
    return click.option(
        "--xclient",
        type=XClientAttribute(),
        multiple=True,
        metavar="NAME=VALUE",
        help="SMTP: after EHLO, send Postfix's XCLIENT with this attribute (repeatable: "
        "ADDR, NAME, PORT, PROTO, HELO, LOGIN, DESTADDR, DESTPORT), values xtext-encoded, "
        "then EHLO again, so the server treats the session as from that client. Needs "
        "XCLIENT offered with those attributes (smtpd_authorized_xclient_hosts). "
        "Example: --xclient ADDR=192.0.2.1 --xclient NAME=mail.example.org",
    )(func)


def checked_pipe(command: str | None) -> tuple[str, ...]:
    """--pipe's words, or a UsageError saying what is wrong with it (exit 2)."""
    if command is None:
        return ()
    from mailtalk.errors import UsageError
    from mailtalk.net.program import ProgramError, split_command

    try:
        return tuple(split_command(command))
    except ProgramError as error:
        raise UsageError(str(error)) from None
