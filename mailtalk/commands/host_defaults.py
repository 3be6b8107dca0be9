"""The config file's per-host defaults, applied to a command's options: the one place.

A command that connects (``connect``, ``smtp``/``pop3``/``imap``, ``send``,
``diagnose relay``/``login``) hands its options here before building its options
dataclass; ``run`` hands the hosts to its runner, whose ``connect`` lines use them
through ``config_file.for_target`` as ``target`` here does. The host it names (``--server
HOST``, the URL's or HOST[:PORT]'s host) is looked up among the file's sections (an
alias or a host name); what the section sets fills in what the command line left
unsaid. An option given on the command line always wins. Read lazily, once an
invocation, so that ``--help``, ``--version`` and ``explain`` never read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mailtalk.config_file import HostDefaults
    from mailtalk.net.target import Target

_CACHE = "mailtalk.config.hosts"


def hosts() -> Mapping[str, HostDefaults]:
    """The file's hosts ({} with --no-config or no file); a bad file is a usage error."""
    from mailtalk.config_file import ConfigError, chosen_path, load
    from mailtalk.errors import UsageError

    root = click.get_current_context().find_root()
    if _CACHE not in root.meta:
        explicit, disabled = root.meta.get("mailtalk.config", (None, False))
        found: Mapping[str, HostDefaults] = {}
        if not disabled:
            obj = root.obj
            variables = getattr(obj, "variables", None)
            if variables is None:
                import os

                variables = os.environ
            try:
                found = load(*chosen_path(explicit, variables))
            except ConfigError as error:
                raise UsageError(str(error)) from None
        root.meta[_CACHE] = found
    return root.meta[_CACHE]  # type: ignore[no-any-return]


def lookup(host: str, options: dict[str, Any] | None = None) -> HostDefaults | None:
    """The section for ``host`` (an alias or a host name), checked for use: its
    cafile must hold a certificate, said as an option's error would be (in the
    language of the command's ``options``)."""
    from mailtalk.commands.languageoption import gettext_of
    from mailtalk.errors import UsageError
    from mailtalk.language import WordedError
    from mailtalk.net.tls import check_cafile

    found = hosts().get(host)
    if found is not None and found.cafile is not None:
        try:
            check_cafile(found.cafile)
        except WordedError as error:
            reason = error.said(gettext_of(options or {}))
            raise UsageError(f"[hosts.{host}] cafile {found.cafile}: {reason}") from None
    return found


def _given(name: str) -> bool:
    """Whether the option (its parameter name) was said on the command line."""
    source = click.get_current_context().get_parameter_source(name)
    return source in (click.core.ParameterSource.COMMANDLINE,
                      click.core.ParameterSource.ENVIRONMENT)


def _fill(options: dict[str, Any], name: str, value: object) -> None:
    if value is not None and not _given(name) and name in options:
        options[name] = value


def smtp_client(options: dict[str, Any]) -> dict[str, Any]:
    """``send``'s and ``diagnose relay``'s options with the --server host's defaults:
    server and port, user (--auth), TLS mode, cafile, helo, from. ``--server ALIAS``
    or ``--server ALIAS:PORT`` (that port wins)."""
    from mailtalk.net.target import TargetError, split_host_port

    server = options.get("server")
    if not server or server.lower().startswith("lmtp:"):
        return options  # an LMTP URL names its server whole: no alias
    port: int | None = None
    found = lookup(server, options)
    if found is None:
        try:
            host, port = split_host_port(server, 0)
        except TargetError:
            return options  # said by the command, as before
        found = lookup(host, options)
        if found is None:
            return options
    options = dict(options)
    port = port or found.port
    options["server"] = _host_port(found.server, port)
    _fill(options, "auth_user", found.user)
    _fill(options, "cafile", found.cafile)
    _fill(options, "helo", found.helo)
    _fill(options, "sender", found.sender)
    if found.tls and not (_given("starttls") or _given("implicit_tls")):
        for name, mode in (("starttls", "starttls"), ("implicit_tls", "tls")):
            if name in options:
                options[name] = found.tls == mode
    return options


def target(target: Target, has_port: bool, options: dict[str, Any]) -> Target:
    """A URL's or HOST[:PORT]'s target with its host's defaults
    (``config_file.for_target``), and into ``options`` cafile and, for a plain target,
    ``--starttls`` from ``tls = "starttls"``."""
    from mailtalk.config_file import for_target

    found = lookup(target.host, options) if target.socket_path is None else None
    if found is None:
        return target
    resolved = for_target(target, found, has_port, tls_given=_given("implicit_tls"))
    _fill(options, "cafile", found.cafile)
    if found.tls == "starttls" and resolved.tls == "none":
        _fill(options, "starttls", True)
    return resolved


def url(text: str, options: dict[str, Any], user_option: str = "user") -> str:
    """A URL argument (``diagnose login``) with its host's defaults, as a URL again;
    the file's user only when neither the URL nor ``--user`` names one. A URL that
    does not parse is left for the command to refuse."""
    from mailtalk.config_file import port_given
    from mailtalk.net.target import TargetError, parse_url

    try:
        parsed = parse_url(text)
    except TargetError:
        return text
    authority = text.partition("://")[2].split("/", 1)[0]
    resolved = target(parsed, port_given(authority), options)
    if resolved == parsed:
        return text
    if options.get(user_option) and not parsed.user:
        resolved = replace(resolved, user=None)
    return resolved.url


def _host_port(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown
