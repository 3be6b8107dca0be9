"""``mailtalk serve``: the reference servers in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from mailtalk.errors import UsageError
from mailtalk.exitcodes import ExitCode
from mailtalk.servers.app import ConfigError, ReferenceServers, ServeConfig
from mailtalk.servers.context import ServerSettings

LISTENER_ORDER = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps")


def _config(default_ports: dict[str, int], options: dict[str, Any]) -> ServeConfig:
    from mailtalk.servers.users import parse_user_spec
    from mailtalk.xdg import data_dir

    ports = {
        name: options[f"{name}_port"]
        for name in LISTENER_ORDER
        if options.get(f"{name}_port") is not None
    } or dict(default_ports)
    users = []
    for spec in options.get("users") or ():
        try:
            users.append(parse_user_spec(spec))
        except ValueError as error:
            raise UsageError(f"--user {spec.split(':', 1)[0]}:…: {error}") from None
    settings = ServerSettings(
        personality=options["personality"],
        max_size=options["max_size"],
        max_literal=options["max_size"],  # an IMAP APPEND is a message too
        max_connections=options["max_connections"],
        idle_timeout=options["idle_timeout"],
        bare_newline=options["bare_newline"],
        sink=options["sink"],
        check_sender_domain=options["check_sender_domain"],
        tls_auth_only=bool(options.get("tls_auth_only")),
        resolver=options.get("resolver"),
        quota_bytes=options.get("quota"),
        login_delay=options.get("login_delay") or 0.0,
        onward_delivery=True,
        mx_port=options.get("mx_port") or 25,
    )
    root = Path(options["root"]) if options.get("root") else data_dir() / "serve"
    return ServeConfig(
        root=root.expanduser(),
        listen=options["listen"],
        ports=ports,
        domains=tuple(options.get("domains") or ()),
        users=users,
        faults=tuple(options.get("faults") or ()),
        scenarios=tuple(options.get("scenarios") or ()),
        settings=settings,
        dns_port=options.get("dns_port"),
        hostname=options.get("hostname"),
    )


def run_serve(default_ports: dict[str, int], **options: Any) -> int:
    config = _config(default_ports, options)
    logging.basicConfig(
        level=logging.INFO if options.get("verbose") else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Fired faults are always worth a line: they are why a client saw an error.
    logging.getLogger("mailtalk.faults").setLevel(logging.INFO)
    try:
        servers = ReferenceServers(config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    return asyncio.run(_serve(servers, bool(options.get("as_json"))))


async def _serve(servers: ReferenceServers, as_json: bool) -> int:
    try:
        listeners = await servers.start()
    except ConfigError as error:
        print(f"mailtalk: {error}", file=sys.stderr)
        return int(ExitCode.CONNECT)
    # Handlers first: whoever reads the line below may signal us at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if as_json:
        print(json.dumps(servers.describe()), flush=True)
    else:
        _print_summary(servers)
    await stop.wait()
    await servers.stop()
    if not as_json:
        context = servers.context
        print(
            f"stopped: {context.messages_delivered} messages, "
            f"{context.bytes_delivered} bytes accepted",
            file=sys.stderr,
        )
    del listeners
    return int(ExitCode.OK)


def connect_host(listen: str) -> str:
    """The host a client on this machine connects to for ``--listen``, as in a URL.

    ``localhost`` for 127.0.0.1 (the certificate names both), the loopback address for
    a wildcard, the address itself otherwise (the certificate lists it too).
    """
    host = listen.strip().strip("[]")
    host = {"127.0.0.1": "localhost", "0.0.0.0": "localhost", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _trust_hint(servers: ReferenceServers) -> str:
    """How to connect with the local CA trusted, over TLS, to a listener we really have."""
    import shlex

    cafile = shlex.quote(str(servers.context.certificates.ca_cert))
    by_protocol = {listener.protocol: listener for listener in servers.listeners}
    for protocol, scheme, extra in (
        ("smtps", "smtps", ""),
        ("submission", "submission", ""),
        ("smtp", "smtp", " --starttls"),
    ):
        listener = by_protocol.get(protocol)
        if listener is not None:
            return (
                f"TLS: to trust the local CA, mailtalk connect --cafile {cafile}{extra} "
                f"{scheme}://{connect_host(listener.host)}:{listener.port}"
            )
    return f"TLS: the local CA is {cafile}"


def _print_summary(servers: ReferenceServers) -> None:
    context = servers.context
    out = sys.stdout
    out.write(f"mailtalk reference servers, root {servers.config.root}\n")
    for listener in servers.listeners:
        tls = {"starttls": "STARTTLS", "implicit": "implicit TLS", "none": "plain"}[listener.tls]
        if listener.protocol == "dns":
            zones = ", ".join(servers.dns_zones) or "nothing yet: add ROOT/dns/records"
            tls = f"UDP and TCP, authoritative for {zones}"
        out.write(f"  {listener.protocol:<11} {listener.host}:{listener.port:<6} {tls}\n")
    domains = ", ".join(context.control.locals) if hasattr(context.control, "locals") else ""
    users = ", ".join(context.users.names()) or "(none: add one with --user NAME:PASSWORD)"
    out.write(f"  hostname: {context.hostname}\n")
    out.write(f"  domains: {domains}\n  users: {users}\n")
    for change in context.control_changes:
        out.write(f"  changed {change}\n")
    if context.settings.resolver:
        out.write(f"  DNS for the sender check and onward delivery: {context.settings.resolver}\n")
    if context.settings.sink:
        out.write("  sink mode: every message is accepted and thrown away\n")
    out.write(f"  {_trust_hint(servers)}\n")
    out.write("Ctrl-C stops.\n")
    out.flush()
