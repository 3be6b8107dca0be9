"""`mailtalk serve`: the reference servers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mailtalk.cli import cli, pass_environment

if TYPE_CHECKING:
    from mailtalk.environment import Environment
    from mailtalk.servers.command import ServeOptions


class LMTPListener(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on
    """--lmtp: a port (0: any free one), or unix:PATH."""

    name = "PORT|unix:PATH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int | str:  # fmt: skip
        text = str(value).strip()
        if text.startswith("unix:"):
            if not text[len("unix:") :]:
                self.fail("unix: needs a path: unix:/run/mailtalk/lmtp", param, ctx)
            return text
        try:
            port = int(text)
        except ValueError:
            self.fail(f"{text!r} is neither a port nor unix:PATH", param, ctx)
        if not 0 <= port <= 65535:
            self.fail(f"port {port} is not in 0-65535", param, ctx)
        return port


class SocketMode(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on
    """--lmtp-socket-mode: permission bits in octal (0600, 660)."""

    name = "OCTAL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:  # fmt: skip
        if isinstance(value, int):
            return value
        try:
            mode = int(str(value), 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal mode such as 0660", param, ctx)
        if not 0 <= mode <= 0o777:
            self.fail(f"{value!r}: only permission bits (0000-0777)", param, ctx)
        return mode


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk serve --user alice:secret\n"
    "  MAILTALK_SERVE_PASSWORD=secret mailtalk serve --user alice\n"
    "  mailtalk serve --users-file ~/class-users.txt --listen 0.0.0.0\n"
    "  mailtalk serve --user alice --oauth2-tokens tokens.txt   # + OAuth 2 tokens\n"
    "  mailtalk serve --smtp 0 --json\n"
    "  mailtalk serve --domain example.test --personality qmail\n"
    "  mailtalk serve --listen 127.0.0.2 --hostname mx.isp.test --domain isp.test\n"
    "  mailtalk serve --scenario greylist --fault 'smtp:rcpt#2=452 4.2.2 Full'\n"
    "  mailtalk serve --sink --smtp 2525\n"
    "  mailtalk serve --listen 0.0.0.0 --max-connections-per-address 10  # class\n"
    "  mailtalk serve --user alice:secret --journal -   # live, as JSON lines\n"
    "  mailtalk serve --journal ~/serve.jsonl           # ... in a file, rotated\n"
    "  mailtalk serve --user alice:secret --http 8025     # + a JSON API for tests\n"
    "  mailtalk serve --user alice:secret --lmtp 2424 --quota 10485760  # + LMTP\n"
    "  mailtalk serve --user alice:secret --lmtp unix:/run/mailtalk/lmtp \\\n"
    "      --lmtp-socket-mode 0660 --lmtp-socket-group postfix   # for Postfix\n"
    "\b\nFault rules: PROTO:COMMAND[#N][:FIELD=GLOB]...=ACTION, e.g.\n"
    "  smtp:mail=421 4.7.0 Try again later     smtp:data=disconnect\n"
    "  smtp:ehlo=delay 5s                      smtp:rcpt:to=bob@*=550 5.1.1 No user\n"
    "  smtp:rcpt=rate 100/min=421 4.7.0 Too many messages\n"
    "  smtp:mail=rate 3/2s per sender=450 4.7.1 Slow down\n"
    "  pop3:pass=rate 5/min=-ERR [LOGIN-DELAY] Too many logins\n"
    "  smtp:rcpt=greylist                      smtp:ehlo=trickle 10B/s\n"
    "Scenarios: relay-denied, sender-domain, disk-full, greylist, tls-required,\n"
    "bad-password, lock-busy, quota-exceeded, greet-pause.\n\n"
    "\b\nExit status:\n"
    "  0    stopped by Ctrl-C or SIGTERM (it says how many messages it took)\n"
    "  1    an unexpected error\n"
    "  2    bad arguments or options; a control, users or tokens file that does\n"
    "       not parse\n"
    "  3    cannot listen: the port is taken, or the address is not this host's\n"
    "  141  --journal - and its reader went away (| head)"
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    help="Directory holding control files, mail, queue and certificates "
    "[default: $XDG_DATA_HOME/mailtalk/serve].",
)
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--smtp", "smtp_port", type=click.IntRange(0, 65535), help="SMTP port (0: any free).")
@click.option(
    "--submission", "submission_port", type=click.IntRange(0, 65535), help="Submission port."
)
@click.option("--smtps", "smtps_port", type=click.IntRange(0, 65535), help="SMTPS port.")
@click.option("--pop3", "pop3_port", type=click.IntRange(0, 65535), help="POP3 port (STLS).")
@click.option("--pop3s", "pop3s_port", type=click.IntRange(0, 65535), help="POP3S port.")
@click.option("--imap", "imap_port", type=click.IntRange(0, 65535), help="IMAP port (STARTTLS).")
@click.option("--imaps", "imaps_port", type=click.IntRange(0, 65535), help="IMAPS port.")
@click.option(
    "--lmtp",
    "lmtp_listener",
    type=LMTPListener(),
    metavar="PORT|unix:PATH",
    help="LMTP (RFC 2033; off unless given) on a port, or on a Unix-domain socket as "
    "Postfix's lmtp:unix: transport and Dovecot's LMTP use: LHLO, local users only, one "
    "reply per recipient after the message, into the same Maildirs. The socket is made "
    "mode 0600 (see --lmtp-socket-mode), replaces a stale one, is refused if another "
    "server listens there, and is removed on exit. "
    "Examples: --lmtp 2424, --lmtp unix:/run/mailtalk/lmtp",
)
@click.option(
    "--lmtp-socket-mode",
    type=SocketMode(),
    default="0600",
    show_default=True,
    metavar="OCTAL",
    help="The permissions of the --lmtp unix: socket: who may connect (write "
    "permission). Example: --lmtp-socket-mode 0660 --lmtp-socket-group postfix",
)
@click.option(
    "--lmtp-socket-group",
    metavar="GROUP",
    help="The group of the --lmtp unix: socket (a name or gid; changing it needs root "
    "or membership), so that with mode 0660 that group's programs may deliver.",
)
@click.option("--domain", "domains", multiple=True, help="A local domain (localhost always is).")
@click.option(
    "--hostname",
    metavar="NAME",
    help="This server's name (control/me): banner, HELO reply, Received. "
    "[default for a new root: localhost on 127.0.0.1, else the first --domain, "
    "else the --listen address]",
)
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="NAME[:PASSWORD]",
    help="Add a user (or set their password). Other users of this machine can read a "
    "password given here in 'ps' and /proc/PID/cmdline: give NAME alone and the password "
    "in $MAILTALK_SERVE_PASSWORD, or use --users-file. The users given here or in "
    "--users-file can also log in with CRAM-MD5 and SCRAM-SHA-256, which need the "
    "password in clear (kept in memory only): users only in ROOT/control/users cannot.",
)
@click.option(
    "--users-file",
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Add the users of FILE, one NAME:PASSWORD a line ('#' comments; '-': standard "
    "input), kept out of the command line.",
)
@click.option(
    "--oauth2-tokens",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Offer XOAUTH2 and OAUTHBEARER (SMTP, POP3, IMAP), accepting for each user the "
    "bearer token of FILE: one 'NAME TOKEN' a line, '#' comments. "
    "Example: --oauth2-tokens tokens.txt",
)
@click.option(
    "--personality",
    default="mailtalk",
    show_default=True,
    type=click.Choice(["mailtalk", "qmail", "postfix", "sendmail", "exim"]),
    help="Whose banner and rejection wordings to use.",
)
@click.option("--fault", "faults", multiple=True, metavar="RULE", help="Inject a fault.")
@click.option("--scenario", "scenarios", multiple=True, metavar="NAME", help="A named scenario.")
@click.option("--sink", is_flag=True, help="Accept every message and store none.")
@click.option(
    "--check-sender-domain", is_flag=True, help="Refuse senders whose domain has no MX/A/AAAA."
)
@click.option(
    "--tls-auth-only",
    is_flag=True,
    help="Offer AUTH only after STARTTLS, even on loopback (Postfix smtpd_tls_auth_only).",
)
@click.option(
    "--tls-fault",
    type=click.Choice(["expired", "wrong-name", "self-signed", "old-protocol"]),
    help="Make TLS fail on purpose, to test clients: a certificate that expired, one for "
    "wrong-name.invalid, a self-signed one, or TLS 1.0/1.1 only. "
    "Example: --tls-fault expired",
)
@click.option(
    "--greylist-delay",
    type=click.FloatRange(min=0, max=86400),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a new (client /24, sender, recipient) triplet of a 'greylist' fault "
    "rule must wait before a retry is accepted (postgrey's --delay); triplets are kept "
    "in ROOT/greylist.json across restarts. Example: --fault smtp:rcpt=greylist "
    "--greylist-delay 60",
)
@click.option(
    "--greylist-max-age",
    type=click.FloatRange(min=1),
    default=35 * 86400.0,
    show_default=True,
    metavar="SECONDS",
    help="Forget a greylisted triplet not seen for this long (postgrey's --max-age, "
    "35 days).",
)
@click.option(
    "--resolver", metavar="HOST[:PORT]", help="DNS server for the sender check and onward delivery."
)
@click.option(
    "--dns",
    "dns_port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Also answer DNS (UDP and TCP) from ROOT/dns/, authoritatively.",
)
@click.option(
    "--mx-port",
    type=click.IntRange(1, 65535),
    default=25,
    show_default=True,
    help="The port onward delivery connects to on MX hosts (a practice world "
    "of several servers on 127.0.0.x may use another).",
)
@click.option(
    "--bare-newline",
    type=click.Choice(["reject", "normalise"]),
    default="reject",
    show_default=True,
    help="What to do with a bare LF in a message (SMTP smuggling defence).",
)
@click.option(
    "--max-size",
    type=click.IntRange(min=1),
    default=50 * 1024 * 1024,
    show_default=True,
    help="Largest message accepted, in bytes (SIZE).",
)
@click.option(
    "--quota",
    type=click.IntRange(min=0),
    metavar="BYTES",
    help="Per-user mailbox quota in bytes (POP3 [SYS/TEMP]; IMAP QUOTA and OVERQUOTA). "
    "Example: --quota 10485760",
)
@click.option(
    "--login-delay",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="POP3 LOGIN-DELAY: minimum time between two logins of a user.",
)
@click.option(
    "--greet-pause",
    type=click.FloatRange(min=0, max=300),
    metavar="SECONDS",
    help="Hold the SMTP greeting back this long and refuse a client that talks "
    "before it (Sendmail's greet_pause).",
)
@click.option(
    "--auth-failure-delay",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Answer a wrong password this late, doubled for each recent failure from the "
    "same address, up to 15 s (Dovecot's auth_failure_delay); 0: at once.",
)
@click.option(
    "--auth-failures-per-address",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    metavar="N",
    help="After N wrong passwords from one address in 10 minutes, refuse its logins "
    "until the oldest is 10 minutes old; 0: no limit.",
)
@click.option(
    "--error-limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    metavar="N",
    help="Hang up on a session after N errors (failed logins, refused commands) with "
    "the protocol's goodbye (Postfix's smtpd_hard_error_limit); 0: no limit.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Connections open at once over all listeners; beyond that a new client is turned away.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Close a session idle this long (RFC 5321 gives a client 5 minutes).",
)
@click.option(
    "--max-connections-per-address",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    metavar="N",
    help="Connections one client address may hold at once, loopback included (0: no "
    "limit); past it SMTP says 421, POP3 -ERR [SYS/TEMP], IMAP BYE.",
)
@click.option(
    "--line-timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="A command or message line must arrive whole within this time (plus 1 s per "
    "500 bytes of it), or the session ends as an idle one: a client that sends a byte "
    "at a time cannot hold a connection.",
)
@click.option(
    "--handshake-timeout",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="A TLS handshake (SMTPS, POP3S, IMAPS, STARTTLS) must end within this time.",
)
@click.option(
    "--journal",
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write what the servers do to FILE, one JSON object a line (connections, "
    "commands and replies, logins, deliveries, DNS answers; passwords redacted); "
    "past 8 MiB FILE becomes FILE.1. '-': standard output, live, and the start-up "
    "text goes to standard error.",
)
@click.option(
    "--http",
    "http_port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Also serve a JSON API over HTTP on PORT, on the --listen address (loopback by "
    "default): list, read and delete messages, add users, set faults, read the journal, "
    "wait for a message; described at /api/v1/openapi.json. Off by default. "
    "Example: --http 8025",
)
@click.option(
    "--http-token-file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Ask every --http request for 'Authorization: Bearer TOKEN', TOKEN being FILE's "
    "first line (kept out of the command line and never logged). Needed when --listen "
    "is not a loopback address. Example: --http-token-file ~/.mailtalk-api-token",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line once listening.")
@click.option("-v", "--verbose", is_flag=True, help="Log sessions to standard error.")
@pass_environment
def serve(env: Environment, **options: Any) -> None:
    """Run the reference mail servers in the foreground, on loopback.

    Mail for local users lands in ROOT/mail/USER/Maildir; relaying is allowed
    only to clients listed in ROOT/control/relayclients or that authenticated
    (qmail's rcpthosts rules); POP3 and IMAP read the same Maildirs. Without
    port options it listens on SMTP 2525, submission 2587, SMTPS 2465, POP3
    2110, POP3S 2995, IMAP 2143 and IMAPS 2993; --lmtp and --http add to those.
    Ctrl-C stops it.
    """
    import gc

    # No garbage collection while the servers load and start: what start-up makes
    # lives as long as they do. Once listening, servers.command freezes it and turns
    # collection on again (see _start_collecting there).
    gc.disable()
    try:
        from mailtalk.servers.command import run

        status = run(_serve_options(options), env)
    finally:
        gc.enable()  # after an error too (a test may run this in its own process)
    sys.exit(status)


def _serve_options(options: dict[str, Any]) -> ServeOptions:
    """The servers' options from click's: ports by listener, the LMTP socket."""
    from mailtalk.servers.command import LISTENER_ORDER, ServeOptions

    listener = options.pop("lmtp_listener")
    lmtp_socket = None
    if isinstance(listener, str):  # unix:PATH
        lmtp_socket, listener = listener[len("unix:") :], None
    else:
        _no_socket_options(options["lmtp_socket_group"])
    options["lmtp_port"] = listener
    # --smtp, --pop3, ... each give one listener's port, or None when not given.
    given_ports = {name: options.pop(f"{name}_port") for name in LISTENER_ORDER}
    root = options.pop("root")
    options.update(
        root=Path(root) if root else None,
        ports={name: port for name, port in given_ports.items() if port is not None},
        lmtp_socket=lmtp_socket,
        greet_pause=options["greet_pause"] or 0.0,
    )
    return ServeOptions(**options)


def _no_socket_options(group: str | None) -> None:
    """--lmtp-socket-mode and --lmtp-socket-group say how to make a socket: without
    --lmtp unix:PATH there is none, and a silently ignored option would mislead."""
    from mailtalk.errors import UsageError

    source = click.get_current_context().get_parameter_source("lmtp_socket_mode")
    given = [name for name, there in (
        ("--lmtp-socket-mode", source is not click.core.ParameterSource.DEFAULT),
        ("--lmtp-socket-group", group is not None),
    ) if there]  # fmt: skip
    if given:
        verb = "need" if len(given) > 1 else "needs"
        raise UsageError(f"{' and '.join(given)} {verb} --lmtp unix:PATH (a socket to make)")
