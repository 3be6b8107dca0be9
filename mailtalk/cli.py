"""The command line: click commands that parse arguments and call in.

Kept thin and light on purpose: ``mailtalk --version`` and every ``--help`` must
not import prompt_toolkit, rich, dnspython or asyncio, so the modules that need
them are imported inside the commands that use them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click

from mailtalk import __version__
from mailtalk.exitcodes import EXIT_CODE_HELP, ExitCode

F = TypeVar("F", bound=Callable[..., Any])

EXIT_STATUS_EPILOG = "\b\nExit status:\n" + "\n".join(
    f"  {int(code):<4} {text}" for code, text in EXIT_CODE_HELP.items()
)


class MailtalkGroup(click.Group):
    """Turns every error into one readable line and the right exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("mailtalk: interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (| head): stop quietly, as cat does, and keep Python
            # from complaining when it flushes stdout on the way out.
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(ExitCode.PIPE_CLOSED)
        except Exception as error:  # the one place that turns any error into a line
            from mailtalk.errors import exit_code_for, one_line

            if _debug_enabled(ctx):
                raise
            click.echo(f"mailtalk: {one_line(error)}", err=True)
            if exit_code_for(error) == ExitCode.FAILED and not _is_known(error):
                click.echo("mailtalk: run again with --debug to see the trace", err=True)
            ctx.exit(exit_code_for(error))


def _is_known(error: BaseException) -> bool:
    from mailtalk.errors import is_expected

    return is_expected(error)


def _debug_enabled(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("MAILTALK_DEBUG") == "1"


@click.group(
    cls=MailtalkGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n"
    "  mailtalk smtp mail.example.com\n"
    "  mailtalk connect submission://alice@mail.example.com\n"
    "  mailtalk imap --tls imap.example.com\n"
    "  printf 'EHLO me\\nQUIT\\n' | mailtalk smtp localhost\n\n" + EXIT_STATUS_EPILOG,
)
@click.version_option(__version__, "-V", "--version", prog_name="mailtalk")
@click.option("--debug", is_flag=True, help="Show the full trace of unexpected errors.")
def cli(debug: bool) -> None:
    """Talk SMTP, POP3 and IMAP to mail servers, with a tool that knows each protocol.

    You type the raw protocol, as with telnet; mailtalk completes what is valid
    now, tags IMAP commands, dot-stuffs DATA, does the base64 of AUTH and shows
    where you are in the conversation. Lines starting with ":" are mailtalk's
    own commands (:help lists them).
    """


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
            type=click.Path(exists=True, dir_okay=False),
            help="Trust the CA certificates (PEM) in this file.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=30.0,
            show_default=True,
            help="Seconds to wait for the connection and for each reply.",
        ),
        click.option("-4", "ipv4", is_flag=True, help="Connect over IPv4 only."),
        click.option("-6", "ipv6", is_flag=True, help="Connect over IPv6 only."),
        click.option(
            "--transcript",
            type=click.Path(dir_okay=False, writable=True),
            help="Append the conversation to this file (secrets redacted).",
        ),
        click.option(
            "--show-secrets",
            is_flag=True,
            help="Do not redact passwords and AUTH data in transcripts.",
        ),
        click.option("--raw", is_flag=True, help="Start showing exact bytes, escaped (:raw)."),
        click.option(
            "--record",
            type=click.Path(dir_okay=False, writable=True),
            metavar="FILE",
            help="Write the session as a session file for mailtalk run (secrets left out).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(target_factory: Callable[[], Any], **options: Any) -> None:
    from mailtalk.errors import UsageError
    from mailtalk.target import TargetError

    try:
        target = target_factory()
    except TargetError as error:
        raise UsageError(str(error)) from None
    if options["ipv4"] and options["ipv6"]:
        raise UsageError("-4 and -6 exclude each other")
    from mailtalk.session_options import SessionOptions

    debug = _debug_enabled(click.get_current_context())
    session = SessionOptions.from_cli(target, debug=debug, **options)
    if sys.stdin.isatty() and sys.stdout.isatty():
        from mailtalk.repl.app import run_repl

        code = run_repl(session)
    else:
        from mailtalk.pipe import run_pipe

        code = run_pipe(session)
    sys.exit(code)


@cli.command(
    epilog="\b\nURL schemes (default port, TLS):\n"
    "  smtp://        25   plain (STARTTLS with --starttls)\n"
    "  submission://  587  STARTTLS\n"
    "  smtps://       465  implicit TLS\n"
    "  pop3://        110  plain (STLS with --starttls)\n"
    "  pop3s://       995  implicit TLS\n"
    "  imap://        143  plain (STARTTLS with --starttls)\n"
    "  imaps://       993  implicit TLS\n"
    "\b\nExamples:\n"
    "  mailtalk connect smtp://mx.example.com\n"
    "  mailtalk connect submission://alice@mail.example.com\n"
    "  mailtalk connect imaps://alice@imap.example.com:993 --cafile ca.pem\n"
    "  mailtalk connect pop3://127.0.0.1:1110 --transcript pop.log\n\n" + EXIT_STATUS_EPILOG
)
@click.argument("url")
@connection_options
def connect(url: str, **options: Any) -> None:
    """Open an interactive session with the server at URL.

    URL is scheme://[user@]host[:port]. The user, if given, is what :auth
    offers by default.
    """
    from mailtalk.target import parse_url

    _run(lambda: parse_url(url), **options)


def _shortcut(protocol: Literal["smtp", "pop3", "imap"], example_host: str) -> None:
    default_plain = {"smtp": 25, "pop3": 110, "imap": 143}[protocol]
    default_tls = {"smtp": 465, "pop3": 995, "imap": 993}[protocol]

    @cli.command(
        name=protocol,
        epilog="\b\nExamples:\n"
        f"  mailtalk {protocol} {example_host}\n"
        f"  mailtalk {protocol} {example_host}:{default_plain} --starttls\n"
        f"  mailtalk {protocol} --tls {example_host}\n"
        f"  mailtalk {protocol} alice@127.0.0.1:{default_plain} --insecure\n\n"
        + EXIT_STATUS_EPILOG,
        help=f"Open an interactive {protocol.upper()} session with HOST[:PORT].\n\n"
        f"The port defaults to {default_plain}, or {default_tls} with --tls. "
        f"A user@ before the host is what :auth offers by default.",
    )
    @click.argument("host_port", metavar="[USER@]HOST[:PORT]")
    @click.option("--tls", "implicit_tls", is_flag=True, help="Use implicit TLS from the start.")
    @connection_options
    def command(host_port: str, implicit_tls: bool, **options: Any) -> None:
        from mailtalk.target import parse_shortcut

        _run(lambda: parse_shortcut(protocol, host_port, implicit_tls), **options)


_shortcut("smtp", "mail.example.com")
_shortcut("pop3", "pop.example.com")
_shortcut("imap", "imap.example.com")


DEFAULT_SERVE_PORTS = {
    "smtp": 2525, "submission": 2587, "smtps": 2465, "pop3": 2110, "pop3s": 2995,
    "imap": 2143, "imaps": 2993,
}  # fmt: skip


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk serve --user alice:secret\n"
    "  mailtalk serve --smtp 0 --json\n"
    "  mailtalk serve --domain example.test --personality qmail\n"
    "  mailtalk serve --scenario greylist --fault 'smtp:rcpt#2=452 4.2.2 Mailbox full'\n"
    "  mailtalk serve --sink --smtp 2525\n"
    "\b\nFault rules: PROTO:COMMAND[#N][:FIELD=GLOB]...=ACTION, e.g.\n"
    "  smtp:mail=421 4.7.0 Try again later     smtp:data=disconnect\n"
    "  smtp:ehlo=delay 5s                      smtp:rcpt:to=bob@*=550 5.1.1 No such user\n"
    "Scenarios: relay-denied, sender-domain, disk-full, greylist, tls-required,\n"
    "bad-password, lock-busy, quota-exceeded.\n\n"
    + EXIT_STATUS_EPILOG
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
@click.option("--domain", "domains", multiple=True, help="A local domain (localhost always is).")
@click.option("--user", "users", multiple=True, metavar="NAME:PASSWORD", help="Add a user.")
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
    "--tls-auth-only", is_flag=True,
    help="Offer AUTH only after STARTTLS, even on loopback (Postfix smtpd_tls_auth_only).",
)
@click.option("--resolver", metavar="HOST[:PORT]",
              help="DNS server for the sender check and onward delivery.")
@click.option("--dns", "dns_port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Also answer DNS (UDP and TCP) from ROOT/dns/, authoritatively.")
@click.option("--mx-port", type=click.IntRange(1, 65535), default=25, show_default=True,
              help="The port onward delivery connects to on MX hosts (a practice world "
              "of several servers on 127.0.0.x may use another).")
@click.option(
    "--bare-newline",
    type=click.Choice(["reject", "normalise"]),
    default="reject",
    show_default=True,
    help="What to do with a bare LF in a message (SMTP smuggling defence).",
)
@click.option(
    "--max-size", type=click.IntRange(min=1), default=50 * 1024 * 1024, show_default=True,
    help="Largest message accepted, in bytes (SIZE).",
)
@click.option(
    "--quota", type=click.IntRange(min=0), metavar="BYTES",
    help="Per-user mailbox quota (POP3 [SYS/TEMP], IMAP OVERQUOTA).",
)
@click.option(
    "--login-delay", type=click.FloatRange(min=0), metavar="SECONDS",
    help="POP3 LOGIN-DELAY: minimum time between two logins of a user.",
)
@click.option("--max-connections", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--idle-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line once listening.")
@click.option("-v", "--verbose", is_flag=True, help="Log sessions to standard error.")
def serve(**options: Any) -> None:
    """Run the reference mail servers in the foreground, on loopback.

    Mail for local users lands in ROOT/mail/USER/Maildir; relaying is allowed
    only to clients listed in ROOT/control/relayclients or that authenticated
    (qmail's rcpthosts rules); POP3 and IMAP read the same Maildirs. Without
    port options it listens on SMTP 2525, submission 2587, SMTPS 2465, POP3
    2110, POP3S 2995, IMAP 2143 and IMAPS 2993. Ctrl-C stops it.
    """
    from mailtalk.servers.serve import run_serve

    sys.exit(run_serve(DEFAULT_SERVE_PORTS, **options))


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk run smoke.mt\n"
    "  mailtalk run -v --var TO=bob@example.net tests/*.mt\n"
    "  mailtalk run --junit report.xml --keep-going tests/*.mt\n"
    "  mailtalk run --repeat 1000 --concurrency 8 send.mt\n"
    "  mailtalk run --repeat 1000 --reuse send.mt       # one connection, loop ... end\n"
    "  printf 'connect smtp://localhost\\nS: 220\\nC: QUIT\\nS: 221\\n' | mailtalk run -\n\n"
    "\b\nSession files: one step a line. C: LINE sends, S: EXPECTATION checks the reply\n"
    "(250, 2xx, 5.7.1, +OK, NO, then optionally a glob, /regex/ or words; * for any;\n"
    "* TEXT for an IMAP untagged response). Directives: connect URL [insecure]\n"
    "[cafile=PATH], starttls, tls, auth plain|login USER [ENVVAR], data FILE,\n"
    "data <<EOF ... EOF, set NAME VALUE, include FILE, sleep SECONDS,\n"
    "expect-close, loop ... end, # comments; ${NAME} from --var, set, or the\n"
    "environment. Secrets never go in the file: auth takes $MAILTALK_PASSWORD\n"
    "(or ENVVAR), ~/.netrc, or asks.\n\n"
    "\b\nExit status:\n"
    "  0    every file passed\n"
    "  1    a reply did not match its S: line\n"
    "  2    a bad script or bad options (nothing was run)\n"
    "  3    could not connect\n"
    "  4    TLS failed or was refused\n"
    "  5    the server closed the connection early, broke the protocol, or timed out\n"
    "  6    an auth directive failed",
)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Set ${NAME}.")
@click.option("-k", "--keep-going", is_flag=True, help="Go on after a reply that does not match.")
@click.option("--junit", metavar="FILE", help="Write a JUnit XML report.")
@click.option("--tap", is_flag=True, help="Print TAP instead of the usual lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the transcript as JSON lines.")
@click.option(
    "--repeat", type=click.IntRange(min=1), default=1, show_default=True,
    help="Replay each file N times and print the rate and latency percentiles.",
)
@click.option(
    "--concurrency", type=click.IntRange(min=1, max=1000), default=1, show_default=True,
    help="Replays at once (with --repeat).",
)
@click.option(
    "--reuse", is_flag=True,
    help="Repeat only the file's loop ... end block, on one connection per worker.",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
    help="Seconds for connecting and for each reply.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the conversation as it happens.")
def run(files: tuple[str, ...], variables: tuple[str, ...], **options: Any) -> None:
    """Replay session files (.mt) against servers and check every reply.

    Each FILE is a conversation written down: C: lines the client sends, S:
    lines the server must answer, and a few directives. "-" reads a script
    from standard input. On a mismatch the file stops (or goes on with
    --keep-going) and mailtalk shows what was expected, what came, and what
    the reply means.
    """
    from mailtalk.script.command import RunOptions, parse_variables, run_command

    sys.exit(run_command(files, RunOptions(variables=parse_variables(variables), **options)))


def _resolver_option(func: F) -> F:
    return click.option(
        "--resolver",
        metavar="HOST[:PORT]",
        help="Ask this DNS server instead of the system's (e.g. mailtalk serve --dns).",
    )(func)


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk mx gmail.com\n"
    "  mailtalk mx --probe example.org\n"
    "  mailtalk mx --resolver 127.0.0.1:5353 --json isp.test\n\n"
    "\b\nExit status:\n"
    "  0    the domain can receive mail\n"
    "  1    it cannot: NXDOMAIN, null MX, no MX and no address, or no MX answered --probe\n"
    "  2    bad arguments\n"
    "  3    the DNS did not answer (timeout, SERVFAIL)",
)
@click.argument("domain")
@_resolver_option
@click.option("--probe", is_flag=True, help="Connect to each MX on port 25: banner, EHLO, TLS.")
@click.option("--port", type=click.IntRange(1, 65535), default=25, show_default=True,
              help="The SMTP port --probe connects to.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False),
              help="With --probe: trust the CA certificates (PEM) in this file.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds for each DNS query and each connection.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def mx(domain: str, **options: Any) -> None:
    """Show where mail for DOMAIN goes: its MX hosts in order, with their addresses.

    No MX but an address means the domain itself takes mail (the implicit
    MX, RFC 5321 5.1); an MX of "." is a null MX (RFC 7505): no mail at all.
    Mail does not go from one computer to another: the sender's server looks
    up these records and hands the message to the first MX that answers.
    """
    from mailtalk.mx_cmd import run_mx

    sys.exit(run_mx(domain, **options))


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk send --from me@example.org --to you@example.net          # via the MX\n"
    "  mailtalk send --from me@isp.test --to you@example.net \\\n"
    "      --server smtp.isp.test:587 --starttls --auth me                # like a MUA\n"
    "  mailtalk send --from a@x.test --to b@y.test --server localhost:2525 \\\n"
    "      --subject hi --attach report.pdf --quit-after rcpt\n\n"
    "\b\nExit status:\n"
    "  0    the message was accepted (or --quit-after stopped before DATA)\n"
    "  1    a server refused it\n"
    "  2    bad arguments\n"
    "  3    could not connect, or no MX could be found\n"
    "  4    TLS failed\n"
    "  5    the server broke the protocol or closed the connection\n"
    "  6    authentication failed",
)
@click.option("--from", "sender", required=True, metavar="ADDRESS", help="Envelope sender.")
@click.option("--to", "recipients", required=True, multiple=True, metavar="ADDRESS",
              help="Envelope recipient (repeat for more).")
@click.option("--server", metavar="HOST[:PORT]",
              help="Send through this server; without it, to the recipient domain's MX.")
@click.option("--starttls", is_flag=True, help="STARTTLS before MAIL (required: fail without).")
@click.option("--tls", "implicit_tls", is_flag=True, help="Implicit TLS (port 465).")
@click.option("--auth", "auth_user", metavar="USER",
              help="AUTH as USER; password from $MAILTALK_PASSWORD, ~/.netrc, or asked.")
@click.option("--auth-mechanism", type=click.Choice(["plain", "login"]), default="plain",
              show_default=True)
@click.option("--helo", metavar="NAME", help="The EHLO name (default: this host's name).")
@click.option("--subject", default="mailtalk test message", show_default=True)
@click.option("--body", help="The message text (default: a short test text).")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="Add a header (repeatable).")
@click.option("--attach", "attachments", multiple=True, type=click.Path(exists=True,
              dir_okay=False), help="Attach a file (repeatable).")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False),
              help="Send this file as the whole message instead.")
@click.option("--quit-after", type=click.Choice(["connect", "ehlo", "tls", "auth", "mail",
              "rcpt"]), help="Stop after this stage (QUIT), sending no message.")
@click.option("--mx-port", type=click.IntRange(1, 65535), default=25, show_default=True,
              help="The port of MX hosts (a practice world may use another).")
@_resolver_option
@click.option("--insecure", is_flag=True, help="Do not verify the server's certificate.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False),
              help="Trust the CA certificates (PEM) in this file.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The transcript and result as JSON lines.")
def send(**options: Any) -> None:
    """Deliver one message, the way an MTA (to the MX) or a mail client (to --server) does.

    The whole conversation is shown, and every reply that is not a success
    is explained. Without --server the recipient domain's MX hosts are tried
    in preference order, the next one after a 4xx or a connection failure.
    """
    from mailtalk.send import run_send

    sys.exit(run_send(**options))


@cli.group(
    epilog="\b\nExamples:\n"
    "  mailtalk diagnose relay --from me@isp.test --to you@example.net --server mail.isp.test\n"
    "  mailtalk diagnose sender --from me@example.org\n"
    "  mailtalk diagnose login imap://mail.example.org --user alice",
)
def diagnose() -> None:
    """Find out why mail is refused, from the live servers' own answers."""


@diagnose.command(
    "relay",
    epilog="\b\nExit status:\n"
    "  0    the server takes the recipient (or relays for you)\n"
    "  1    it refuses: the verdict says why\n"
    "  2    bad arguments\n"
    "  3    could not connect\n"
    "  7    the server is an open relay (a security finding)",
)
@click.option("--from", "sender", required=True, metavar="ADDRESS")
@click.option("--to", "recipient", required=True, metavar="ADDRESS")
@click.option("--server", metavar="HOST[:PORT]",
              help="The server you send through (default: the recipient domain's first MX).")
@click.option("--auth", "auth_user", metavar="USER",
              help="Also try authenticated; password from $MAILTALK_PASSWORD, ~/.netrc, or asked.")
@_resolver_option
@click.option("--insecure", is_flag=True, help="Do not verify the server's certificate.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def diagnose_relay(**options: Any) -> None:
    """Why does the server say "relaying denied"? Runs the conversation up to RCPT
    (never DATA) and explains the answer with evidence: is the server an MX of
    the recipient domain, was AUTH offered (and only after STARTTLS), would
    authenticating change it, is the server an open relay."""
    from mailtalk.diagnose.relay import run_diagnose_relay

    sys.exit(run_diagnose_relay(**options))


@diagnose.command("sender")
@click.option("--from", "sender", required=True, metavar="ADDRESS")
@_resolver_option
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def diagnose_sender(**options: Any) -> None:
    """Would servers accept this sender? Checks that its domain resolves (MX or
    A/AAAA, else "501 Sender domain must exist"), its null MX and its SPF record."""
    from mailtalk.diagnose.sender import run_diagnose_sender

    sys.exit(run_diagnose_sender(**options))


@diagnose.command("login")
@click.argument("url")
@click.option("--user", required=True, help="The login name.")
@click.option("--insecure", is_flag=True, help="Do not verify the server's certificate.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def diagnose_login(url: str, **options: Any) -> None:
    """Why does a POP3 or IMAP login fail? Tells a wrong password from plaintext
    login being disabled, TLS being required, or a locked mailbox, from the
    server's own answers. Password from $MAILTALK_PASSWORD, ~/.netrc, or asked."""
    from mailtalk.diagnose.login import run_diagnose_login

    sys.exit(run_diagnose_login(url, **options))


class ReplyCommand(click.Command):
    """Takes a reply as its arguments, dashes and all.

    ``-ERR [AUTH] ... has ... failed`` must not read as the short options -E, -R,
    ... -h (help!): the command's own options are taken out wherever they are,
    and everything else goes after "--", where click leaves it alone.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {"--protocol", "--command"}
        flags = {"--json", "-h", "--help"}
        options: list[str] = []
        words: list[str] = []
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                words.extend(args[index + 1 :])
                break
            if arg in flags or (arg.split("=", 1)[0] in takes_value and "=" in arg):
                options.append(arg)
            elif arg in takes_value:
                options.extend(args[index : index + 2])
                index += 1
            else:
                words.append(arg)
            index += 1
        return super().parse_args(ctx, [*options, "--", *words])


@cli.command(
    cls=ReplyCommand,
    epilog="\b\nExamples:\n"
    "  mailtalk explain 550\n"
    "  mailtalk explain 5.7.1\n"
    "  mailtalk explain '554 5.7.1 <bob@example.net>: Relay access denied'\n"
    "  mailtalk explain 503 Need MAIL before RCPT\n"
    "  mailtalk explain --command AUTH 503\n"
    "  mailtalk explain -ERR [IN-USE] lock busy! Is another session active?\n"
    "  mailtalk explain 'a1 NO [AUTHENTICATIONFAILED] Authentication failed.'\n"
    "  grep 'said:' /var/log/mail.log | mailtalk explain --json -\n\n"
    "\b\nExit status:\n"
    "  0    every reply was explained\n"
    "  1    standard input held no reply\n"
    "  2    the argument is not a reply or a code",
)
@click.argument("reply", nargs=-1, required=True)
@click.option(
    "--protocol",
    type=click.Choice(["smtp", "pop3", "imap"]),
    help="The protocol of the reply, where the text alone does not say.",
)
@click.option(
    "--command",
    metavar="COMMAND",
    help="The command the reply answered (RCPT, MAIL, AUTH, DATA, PASS, LOGIN, greeting, "
    "'end of data'); it changes what some codes mean.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reply.")
def explain(
    reply: tuple[str, ...], protocol: str | None, command: str | None, as_json: bool
) -> None:
    """Explain a reply: what it means, whether to retry, causes and fixes.

    REPLY is a basic code (550), an enhanced code (5.7.1), a whole SMTP reply
    (quoted, or as separate words), a POP3 +OK/-ERR line, an IMAP tagged or
    untagged response, a POP3/IMAP response code ([IN-USE], OVERQUOTA with
    --protocol), or a log or bounce line holding a reply. With "-", standard
    input is read, one reply a line (SMTP multi-line replies are joined), and
    lines that hold no reply are skipped.
    """
    from mailtalk.explain_cmd import run_explain

    sys.exit(run_explain(reply, protocol, command, as_json))


def main() -> None:
    cli(prog_name="mailtalk")
