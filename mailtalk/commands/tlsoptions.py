"""The client TLS options every connecting command shares, and ``client_tls`` that
turns them into ``net.tlsclient.ClientTLS`` (asking for an encrypted key's password)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mailtalk.cli import F, OutputFile

if TYPE_CHECKING:
    from mailtalk.environment import Environment
    from mailtalk.net.tlsclient import ClientTLS

_VERSIONS = ("1.0", "1.1", "1.2", "1.3")

TLS_OPTION_NAMES = ("sni", "tls_min", "tls_max", "ciphers", "cert", "key", "tls_dump")


def tls_options(func: F) -> F:
    """--sni, --tls-min, --tls-max, --ciphers, --cert, --key, --tls-dump."""
    options = [
        click.option(
            "--sni",
            metavar="NAME",
            help="Send NAME as the TLS server name (SNI), also when connecting by IP, "
            "and check the certificate against it. Example: --sni mail.example.com",
        ),
        click.option(
            "--tls-min",
            type=click.Choice(_VERSIONS),
            help="Lowest TLS version to accept (default 1.2; 1.0 and 1.1 lower "
            "OpenSSL's security level to 0).",
        ),
        click.option(
            "--tls-max", type=click.Choice(_VERSIONS), help="Highest TLS version to offer."
        ),
        click.option(
            "--ciphers",
            metavar="LIST",
            help="OpenSSL cipher string for TLS 1.2 and older, e.g. 'ECDHE+AESGCM' "
            "(Python cannot choose TLS 1.3 suites: add --tls-max 1.2 to test one).",
        ),
        click.option(
            "--cert",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="Client certificate (PEM), sent when the server asks; may hold the key.",
        ),
        click.option(
            "--key",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="The client certificate's private key (PEM). An encrypted key's password "
            "is read from $MAILTALK_KEY_PASSWORD or asked for; it is never stored.",
        ),
        click.option(
            "--tls-dump",
            type=OutputFile(),
            metavar="FILE",
            help="Write the server's certificate chain here in PEM (also when it fails "
            "verification). Example: --tls-dump chain.pem",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def client_tls(env: Environment, options: dict[str, Any]) -> ClientTLS:
    """Take the TLS options out of a command's ``options`` and check them now: a bad
    certificate, key, password or cipher list is a usage error (exit 2) said before
    connecting, not a failed handshake later."""
    import ssl

    from mailtalk.commands.languageoption import gettext_of
    from mailtalk.errors import UsageError
    from mailtalk.net.tlsclient import (
        KEY_PASSWORD_VARIABLE,
        ClientTLS,
        ClientTLSError,
        key_is_encrypted,
    )

    _ = gettext_of(options)
    values = {name: options.pop(name, None) for name in TLS_OPTION_NAMES}
    if values["key"] and not values["cert"]:
        raise UsageError(_("--key needs --cert (the certificate it belongs to)"))
    password = None
    if values["cert"] and key_is_encrypted(values["cert"], values["key"]):
        password = env.variables.get(KEY_PASSWORD_VARIABLE)
        if password is None:
            if not env.stdin_isatty:
                raise UsageError(
                    _("--key: the key is encrypted; set ${variable} (no terminal to ask on)")
                    .format(variable=KEY_PASSWORD_VARIABLE)
                )
            password = click.prompt(
                _("password for the client key"), hide_input=True, err=True, default="",
                show_default=False,
            )
    settings = ClientTLS(
        sni=values["sni"],
        min_version=values["tls_min"],
        max_version=values["tls_max"],
        ciphers=values["ciphers"],
        certfile=values["cert"],
        keyfile=values["key"],
        key_password=password,
        dump=values["tls_dump"],
    )
    try:
        settings.apply(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    except ClientTLSError as error:
        raise UsageError(error.said(_)) from None
    return settings
