"""`mailtalk mx`, `send` and `diagnose`: where mail goes, sending it, and why it is refused.

Each command reads its options into its frozen options dataclass (``MXOptions``,
``SendOptions``, ``RelayOptions``, ``SenderOptions``, ``LoginOptions``, defined next to
the ``run(options, env)`` that implements it in ``mailtalk/mail/``) and calls that
``run`` with the invocation's :class:`~mailtalk.environment.Environment`
(``@pass_environment``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import click

from mailtalk.cli import CAFile, F, cli, pass_environment
from mailtalk.commands.authoptions import oauth2_token_option, take_token
from mailtalk.commands.languageoption import JOB_LANG, gettext_of, lang_option, take_language
from mailtalk.commands.tlsoptions import client_tls, tls_options
from mailtalk.commands.transportoptions import checked_pipe, transport_options, xclient_option

if TYPE_CHECKING:
    from mailtalk.environment import Environment


def _resolver_option(func: F) -> F:
    return click.option(
        "--resolver",
        metavar="HOST[:PORT]",
        help="Ask this DNS server instead of the system's (e.g. mailtalk serve --dns).",
    )(func)


def _brief_option(what: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return click.option("--brief", is_flag=True, help=what)(func)

    return decorate


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk mx gmail.com\n"
    "  mailtalk mx --probe example.org\n"
    "  mailtalk mx --resolver 127.0.0.1:5353 --json isp.test\n\n"
    "\b\nExit status:\n"
    "  0    the domain can receive mail\n"
    "  1    it cannot: NXDOMAIN, null MX, no MX nor address, none answered --probe\n"
    "  2    bad arguments\n"
    "  3    the DNS did not answer (timeout, SERVFAIL)",
)
@click.argument("domain")
@_resolver_option
@click.option("--probe", is_flag=True, help="Connect to each MX on port 25: banner, EHLO, TLS.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=25,
    show_default=True,
    help="The SMTP port --probe connects to.",
)
@click.option(
    "--cafile",
    type=CAFile(),
    help="With --probe: trust the CA certificates (PEM) in this file.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds for each DNS query and each connection.",
)
@_brief_option("Only the answer and the records (and the probe), not the lesson.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@lang_option("The language of mailtalk's own lines, errors and the lesson",
             "; --json stays English")
@pass_environment
def mx(env: Environment, domain: str, **options: Any) -> None:
    """Show where mail for DOMAIN goes: its MX hosts in order, with their addresses.

    No MX but an address means the domain itself takes mail (the implicit
    MX, RFC 5321 5.1); an MX of "." is a null MX (RFC 7505): no mail at all.
    Mail does not go from one computer to another: the sender's server looks
    up these records and hands the message to the first MX that answers.
    """
    from mailtalk.mail import mx as command

    take_language(env, options, machine=options["as_json"])
    sys.exit(command.run(command.MXOptions(domain=domain, **options), env))


# send's stop points, spelled out here (importing the SMTP sequence's plan would load
# the SMTP core for every --help); tests/mail/test_send_diagnose.py holds them to
# smtp_plan's STOP_POINTS and QUIT_POINTS.
_STOP_POINTS = ("connect", "ehlo", "tls", "auth", "mail", "rcpt", "data", "dot")
_QUIT_POINTS = tuple(point for point in _STOP_POINTS if point != "data")


class StopPoint(click.Choice):  # type: ignore[type-arg]  # generic from click 8.3 on
    """--quit-after/--drop-after STAGE, in any case, with swaks' other names for the
    stages (banner, helo, lhlo, starttls, from, to; "." for dot)."""

    ALIASES: ClassVar[dict[str, str]] = {
        "banner": "connect",
        "helo": "ehlo",
        "lhlo": "ehlo",
        "starttls": "tls",
        "from": "mail",
        "to": "rcpt",
        ".": "dot",
    }

    def __init__(self, choices: tuple[str, ...]) -> None:
        super().__init__(choices, case_sensitive=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        stage = self.ALIASES.get(str(value).lower(), str(value).lower())
        if stage == "data" and stage not in self.choices:
            from mailtalk.clicklanguage import spoken_gettext

            _ = spoken_gettext()
            self.fail(
                _("after DATA's 354 the server reads every line, QUIT too, as the message "
                  "until its final dot: use --drop-after data to leave there without "
                  "sending it"),
                param,
                ctx,
            )
        return super().convert(stage, param, ctx)


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk send --from me@example.org --to you@example.net   # via the MX\n"
    "  mailtalk send --from me@isp.test --to you@example.net \\\n"
    "      --server smtp.isp.test:587 --starttls --auth me         # like a MUA\n"
    "  mailtalk send --from a@x.test --to b@y.test --server localhost:2525 \\\n"
    "      --subject hi --attach report.pdf\n"
    "  mailtalk send --from a@x.test --to b@y.test --server localhost:2525 \\\n"
    "      --quit-after rcpt          # is the recipient taken? nothing is sent\n"
    "  mailtalk send --from a@x.test --to b@y.test --server mx.y.test:25 \\\n"
    "      --starttls --quit-after tls   # does STARTTLS work? then QUIT\n"
    "  mailtalk send --from a@x.test --to b@y.test --server localhost:2525 \\\n"
    "      --drop-after data          # hang up after the 354: nothing delivered\n"
    "  mailtalk send --from a@x.test --to b@y.test --server localhost:2525 \\\n"
    "      --dsn-notify SUCCESS,FAILURE --dsn-ret HDRS --envid t1 --chunking --size\n"
    "  mailtalk send --from a@x.test --to b@y.test --to c@y.test \\\n"
    "      --server mx.y.test:25 --pipeline   # MAIL, RCPTs and DATA in one write\n"
    "  mailtalk send --from a@x.test --to b@y.test --to c@y.test \\\n"
    "      --server mx.y.test:25 --prdr   # a reply per recipient to the message\n"
    "  mailtalk send --from a@x.test --to b@y.test --server mx.y.test:25 \\\n"
    "      --xclient ADDR=192.0.2.1 --xclient NAME=spammer.example  # as from there\n"
    "  mailtalk send --from a@x.test --to b@y.test --pipe 'exim -bh 192.0.2.1'\n"
    "  mailtalk send --from a@x.test --to b@y.test --server mx.y.test --starttls \\\n"
    "      --sni mx.y.test --cert me.pem --tls-dump chain.pem --json\n\n"
    "\b\nStages (--quit-after, --drop-after):\n"
    "  connect  the greeting (also: banner)\n"
    "  ehlo     EHLO, or HELO after a 5xx to it (also: helo); with --xclient,\n"
    "           XCLIENT and EHLO again too\n"
    "  tls      STARTTLS, the handshake, EHLO again (without --starttls or --tls:\n"
    "           where it would be, after EHLO; also: starttls)\n"
    "  auth     AUTH (without --auth: where it would be, before MAIL)\n"
    "  mail     MAIL FROM (also: from)\n"
    "  rcpt     the last RCPT TO (also: to)\n"
    "  data     the 354 to DATA; --drop-after only (a QUIT would be message text)\n"
    "  dot      the reply to the message's final dot: the message is sent\n\n"
    "\b\nExit status:\n"
    "  0    the message was accepted, or the --quit-after/--drop-after stage was\n"
    "       reached with every reply before it a success\n"
    "  1    a server refused it, or did not offer an extension asked for (DSN,\n"
    "       SMTPUTF8, CHUNKING, 8BITMIME), or the message is over its SIZE (--size)\n"
    "  2    bad arguments\n"
    "  3    could not connect, or no MX could be found\n"
    "  4    TLS failed\n"
    "  5    the server broke the protocol, hung up, or did not answer in time\n"
    "  6    authentication failed",
)
@click.option(
    "--from",
    "sender",
    metavar="ADDRESS",
    help="Envelope sender (required, unless the --server host's config section has from).",
)
@click.option(
    "--to",
    "recipients",
    required=True,
    multiple=True,
    metavar="ADDRESS",
    help="Envelope recipient (repeat for more).",
)
@click.option(
    "--server",
    metavar="HOST[:PORT]",
    help="Send through this server; without it, to the recipient domain's MX. "
    "HOST may be an alias from the config file (--server work), whose port, user, "
    "TLS mode, cafile, helo and from fill in what is not given here. "
    "unix:/path for a Unix socket; lmtp://HOST[:PORT] (port 24) or lmtp:unix:/path to "
    "deliver by LMTP (RFC 2033: LHLO, a reply per recipient; exit 1 unless every "
    "recipient got 2xx). Example: --server lmtp:unix:/run/dovecot/lmtp",
)
@click.option("--starttls", is_flag=True, help="STARTTLS before MAIL (required: fail without).")
@click.option("--tls", "implicit_tls", is_flag=True, help="Implicit TLS (port 465).")
@click.option(
    "--auth",
    "auth_user",
    metavar="USER",
    help="AUTH as USER; password from $MAILTALK_PASSWORD, ~/.netrc, or asked "
    "(gssapi, external: no password; USER is the identity to act as, and may be left out).",
)
@click.option(
    "--auth-mechanism",
    type=click.Choice(["auto", "scram-sha-256", "scram-sha-1", "cram-md5", "plain", "login",
                       "xoauth2", "oauthbearer", "digest-md5", "ntlm", "gssapi",
                       "external"]),
    default="auto",
    show_default=True,
    metavar="MECH",
    help="The SASL mechanism of --auth: auto, scram-sha-256, scram-sha-1, cram-md5, "
    "plain, login, xoauth2, oauthbearer, digest-md5, ntlm, gssapi or external; auto: "
    "with an OAuth 2 token ($MAILTALK_OAUTH2_TOKEN or --oauth2-token), OAUTHBEARER or "
    "XOAUTH2 when offered; with a Kerberos ticket of the --auth user (kinit), GSSAPI "
    "when offered; else the strongest the server offers (SCRAM-SHA-256, SCRAM-SHA-1, "
    "CRAM-MD5, then PLAIN, LOGIN). SCRAM and DIGEST-MD5 also check that the server knows "
    "the password. digest-md5 (historic, RFC 6331) and ntlm (NTLMv2; DOMAIN\\user for "
    "a domain) are weak: only when named, never by auto, and warned about. "
    "gssapi (Kerberos V5, RFC 4752) logs in with the ticket of kinit, for the service "
    "smtp@HOST (HOST as given to --server), and never asks for a password. external "
    "(RFC 4422 A) logs in by the TLS client certificate of --cert/--key and asks no "
    "password. For both, --auth USER is optional: the identity to act as. "
    "Examples: --auth me --auth-mechanism cram-md5; --starttls --cert me.pem --key "
    "me.key --auth-mechanism external",
)
@oauth2_token_option
@click.option("--helo", metavar="NAME", help="The EHLO name (default: this host's name).")
@click.option("--subject", default="mailtalk test message", show_default=True)
@click.option("--body", help="The message text (default: a short test text).")
@click.option(
    "--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Add a header (repeatable)."
)
@click.option(
    "--attach",
    "attachments",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Attach a file (repeatable).",
)
@click.option(
    "--data",
    "data_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Send this file as the whole message instead.",
)
@click.option(
    "--quit-after",
    type=StopPoint(_QUIT_POINTS),
    metavar="STAGE",
    help="Stop after STAGE and send QUIT (before dot: no message is sent). "
    "Stages: " + ", ".join(_QUIT_POINTS) + ".",
)
@click.option(
    "--drop-after",
    type=StopPoint(_STOP_POINTS),
    metavar="STAGE",
    help="Stop after STAGE and close the connection without QUIT, as a crashed client "
    "would. Stages: " + ", ".join(_STOP_POINTS) + ".",
)
@click.option(
    "--dsn-notify",
    metavar="NEVER|SUCCESS,FAILURE,DELAY",
    help="Ask for delivery status notifications (RFC 3461): NOTIFY= and ORCPT= on each "
    "RCPT. Needs DSN offered, else exit 1.",
)
@click.option(
    "--dsn-ret",
    type=click.Choice(["FULL", "HDRS"], case_sensitive=False),
    help="What a DSN returns of the message: RET= on MAIL. Needs DSN offered, else exit 1.",
)
@click.option(
    "--envid",
    metavar="ID",
    help="An envelope id that DSNs quote back: ENVID= on MAIL, xtext-encoded. "
    "Needs DSN offered, else exit 1.",
)
@click.option(
    "--smtputf8",
    is_flag=True,
    help="SMTPUTF8 on MAIL (RFC 6531), implied by an address that is not ASCII. "
    "Needs SMTPUTF8 offered, else exit 1.",
)
@click.option(
    "--chunking",
    is_flag=True,
    help="Send the message in BDAT chunks, the last with LAST (RFC 3030), not DATA. "
    "Needs CHUNKING offered, else exit 1.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=1024 * 1024,
    show_default=True,
    metavar="BYTES",
    help="With --chunking: the largest chunk.",
)
@click.option(
    "--8bitmime",
    "eight_bit_mime",
    is_flag=True,
    help="BODY=8BITMIME on MAIL (RFC 6152; sent anyway when the message has 8-bit bytes "
    "and 8BITMIME is offered). Needs 8BITMIME offered, else exit 1.",
)
@click.option(
    "--size",
    is_flag=True,
    help="Declare the message's size, SIZE=n on MAIL (RFC 1870), and refuse locally "
    "(exit 1) a message over the server's limit. Without SIZE offered: sent undeclared.",
)
@click.option(
    "--pipeline",
    is_flag=True,
    help="MAIL, every RCPT and DATA (or the first BDAT) in one write, the replies read "
    "in order (PIPELINING, RFC 2920). Needs PIPELINING offered, else exit 1.",
)
@click.option(
    "--prdr",
    is_flag=True,
    help="Ask for a reply per recipient to the message (PRDR, draft-hall-prdr, as Exim "
    "offers it): MAIL FROM ... PRDR, and after the final dot a 353, each recipient's "
    "reply, and a final one. Refused recipients are reported alone (exit 1); needs PRDR "
    "offered, else exit 1.",
)
@click.option(
    "--mx-port",
    type=click.IntRange(1, 65535),
    default=25,
    show_default=True,
    help="The port of MX hosts (a practice world may use another).",
)
@_resolver_option
@click.option("--insecure", is_flag=True, help="Do not verify the server's certificate.")
@click.option(
    "--cafile",
    type=CAFile(),
    help="Trust the CA certificates (PEM) in this file.",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@tls_options
@transport_options
@xclient_option
@_brief_option("The conversation and the result only: no explanation under refusals.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The transcript and result as JSON lines; the result has the server's TLS "
    "chain (\"tls\": subject, SANs, issuer, expiry, SHA-256, problems) when TLS was used.",
)
@JOB_LANG
@pass_environment
def send(env: Environment, **options: Any) -> None:
    """Deliver one message, the way an MTA (to the MX) or a mail client (to --server) does.

    The whole conversation is shown, and every reply that is not a success
    is explained. Without --server the recipient domain's MX hosts are tried
    in preference order, the next one after a 4xx or a connection failure.
    """
    from mailtalk.commands import host_defaults
    from mailtalk.mail import send as command

    take_language(env, options, machine=options["as_json"])
    options = host_defaults.smtp_client(options)
    _require_sender(options)
    tls = client_tls(env, options)
    _check_external(options, tls)
    options["pipe_command"] = checked_pipe(options["pipe_command"])
    token = _token_for(env, options)
    sys.exit(command.run(command.SendOptions(tls=tls, oauth2_token=token, **options), env))


def _token_for(env: Environment, options: dict[str, Any]) -> str | None:
    """The OAuth 2 token for --auth, if any; a usage error for a token mechanism
    without one, or a token given without --auth to log in as."""
    from mailtalk.errors import UsageError

    _ = gettext_of(options)
    given = options.get("oauth2_token") is not None
    token = take_token(env, options)
    mechanism = options.get("auth_mechanism", "auto")
    if given and not options.get("auth_user"):
        raise UsageError(_("--oauth2-token needs --auth USER (whom the token is for)"))
    if mechanism in ("xoauth2", "oauthbearer") and token is None:
        raise UsageError(_(
            "--auth-mechanism {mechanism} needs an OAuth 2 token: set $MAILTALK_OAUTH2_TOKEN "
            "(or give --oauth2-token)").format(mechanism=mechanism))
    return token if options.get("auth_user") else None


def _check_external(options: dict[str, Any], tls: Any) -> None:
    """EXTERNAL's identity is the client certificate, sent only in a TLS handshake:
    without both the server cannot take it, so that is said before connecting."""
    from mailtalk.errors import UsageError

    if options.get("auth_mechanism") != "external":
        return
    _ = gettext_of(options)
    if tls.certfile is None:
        raise UsageError(_("--auth-mechanism external needs --cert (and --key): the client "
                           "certificate is the identity it logs in with"))
    if not (options.get("starttls") or options.get("implicit_tls")):
        raise UsageError(_("--auth-mechanism external needs --starttls or --tls: the client "
                           "certificate is sent only in a TLS handshake"))


def _require_sender(options: dict[str, Any]) -> None:
    from mailtalk.errors import UsageError

    _ = gettext_of(options)
    if not options.get("sender"):
        raise UsageError(_("missing option --from (or from = in the --server host's config "
                           "section)"))


@cli.group(
    epilog="\b\nExamples:\n"
    "  mailtalk diagnose relay --from me@isp.test --to you@example.net \\\n"
    "      --server mail.isp.test\n"
    "  mailtalk diagnose sender --from me@example.org\n"
    "  mailtalk diagnose login imaps://alice@mail.example.org\n"
    "  mailtalk diagnose login submission://alice@mail.example.org  # SMTP AUTH\n\n"
    "Each prints a verdict in one sentence, the evidence, and what to do as the\n"
    "user and as the admin (--brief: the verdict and the evidence only; --json).\n\n"
    "\b\nExit status (each command's --help says its own):\n"
    "  0    no fault found: the server relays or takes the recipient, the\n"
    "       sender's domain can receive mail, the login works\n"
    "  1    refused: the verdict says why\n"
    "  2    bad arguments, or no such diagnosis\n"
    "  3    could not connect, or the DNS did not answer\n"
    "  4    TLS could not be started (diagnose login)\n"
    "  5    the server broke the protocol, hung up, or did not answer in time\n"
    "  7    an open relay (diagnose relay)",
)
def diagnose() -> None:
    """Find out why mail is refused, from the live servers' own answers."""


_CAFILE_HELP = (
    "Trust the CA certificates (PEM) in this file, for a server whose certificate "
    "your system does not know (a private CA, mailtalk serve's ROOT/tls/ca.pem)."
)
_BRIEF_HELP = "Only the verdict and the evidence, not what to do."


@diagnose.command(
    "relay",
    epilog="\b\nExamples:\n"
    "  mailtalk diagnose relay --from me@isp.test --to you@example.net \\\n"
    "      --server mail.isp.test               # why 'Relay access denied'?\n"
    "  mailtalk diagnose relay --from me@isp.test --to you@example.net \\\n"
    "      --server mail.isp.test:587 --auth me # and what AUTH changes\n"
    "  mailtalk diagnose relay --from a@x.test --to b@y.test \\\n"
    "      --server localhost:2525 --resolver 127.0.0.1:5353 --brief\n\n"
    "\b\nExit status:\n"
    "  0    the server takes the recipient, or relays for you\n"
    "  1    it refuses: the verdict says why\n"
    "  2    bad arguments (a --cafile with no certificate too)\n"
    "  3    could not connect, or the DNS did not answer without --server\n"
    "  5    the server broke the protocol, hung up, or did not answer in time\n"
    "  7    an open relay: it relays for a client outside its host and network\n"
    "       (a security finding; never claimed from this host's own addresses)",
)
@click.option(
    "--from",
    "sender",
    metavar="ADDRESS",
    help="Envelope sender (required, unless the --server host's config section has from).",
)
@click.option("--to", "recipient", required=True, metavar="ADDRESS", help="The recipient.")
@click.option(
    "--server",
    metavar="HOST[:PORT]",
    help="The server you send through (default: the recipient domain's first MX); "
    "may be an alias from the config file.",
)
@click.option(
    "--auth",
    "auth_user",
    metavar="USER",
    help="Also try authenticated; password from $MAILTALK_PASSWORD, ~/.netrc, or asked.",
)
@_resolver_option
@click.option("--insecure", is_flag=True, help="Do not verify the server's certificate.")
@click.option("--cafile", type=CAFile(), help=_CAFILE_HELP)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True)
@tls_options
@transport_options
@_brief_option(_BRIEF_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@JOB_LANG
@pass_environment
def diagnose_relay(env: Environment, **options: Any) -> None:
    """Why does the server say "relaying denied"? Runs the conversation up to RCPT
    (never DATA) and explains the answer with evidence: is the server an MX of
    the recipient domain, was AUTH offered (and only after STARTTLS), would
    authenticating change it, whom does it relay for without AUTH. A server
    that is not the domain's MX and refuses its recipient is refusing to relay,
    however it words it. A server on this host that relays for you is asked
    again from this host's other addresses; what that shows is said, and no
    open relay is claimed from them."""
    from mailtalk.commands import host_defaults
    from mailtalk.mail.diagnose import relay

    take_language(env, options, machine=options["as_json"])
    options = host_defaults.smtp_client(options)
    _require_sender(options)
    tls = client_tls(env, options)
    options["pipe_command"] = checked_pipe(options["pipe_command"])
    sys.exit(relay.run(relay.RelayOptions(tls=tls, **options), env))


@diagnose.command(
    "sender",
    epilog="\b\nExamples:\n"
    "  mailtalk diagnose sender --from me@example.org\n"
    "  mailtalk diagnose sender --from me@isp.test --resolver 127.0.0.1:5353\n\n"
    "\b\nExit status:\n"
    "  0    the sender's domain can receive mail\n"
    "  1    it cannot: NXDOMAIN, no records, or a null MX\n"
    "  2    bad arguments\n"
    "  3    the DNS did not answer",
)
@click.option("--from", "sender", required=True, metavar="ADDRESS", help="Envelope sender.")
@_resolver_option
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@_brief_option(_BRIEF_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@JOB_LANG
@pass_environment
def diagnose_sender(env: Environment, **options: Any) -> None:
    """Would servers accept this sender? Checks that its domain resolves (MX or
    A/AAAA, else "501 Sender domain must exist"), its null MX and its SPF record."""
    from mailtalk.mail.diagnose import sender

    take_language(env, options, machine=options["as_json"])
    sys.exit(sender.run(sender.SenderOptions(**options), env))


@diagnose.command(
    "login",
    epilog="\b\nExamples:\n"
    "  mailtalk diagnose login imap://alice@mail.example.org\n"
    "  mailtalk diagnose login pop3s://mail.example.org --user alice\n"
    "  mailtalk diagnose login submission://alice@smtp.example.org  # SMTP AUTH\n"
    "  mailtalk diagnose login imap://alice@localhost:2143 --cafile ca.pem\n"
    "  mailtalk diagnose login submission://alice@mail.example.org \\\n"
    "      --cert me.pem --key me.key --json  # with a client certificate\n\n"
    "\b\nExit status:\n"
    "  0    the login works\n"
    "  1    it fails: the verdict says why (also when GSSAPI is all the server\n"
    "       offers and no Kerberos ticket of the user is in the cache)\n"
    "  2    bad arguments (no user, not a URL, a --cafile with no certificate)\n"
    "  3    could not connect\n"
    "  4    TLS could not be started, or submission:// found no STARTTLS\n"
    "       (the password was not sent)\n"
    "  5    the server broke the protocol, hung up, or did not answer in time",
)
@click.argument("url")
@click.option(
    "--user",
    metavar="NAME",
    help="The login name (default: the user in the URL, as in imap://alice@host).",
)
@click.option("--insecure", is_flag=True, help="Do not verify the server's certificate.")
@click.option("--cafile", type=CAFile(), help=_CAFILE_HELP)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True)
@oauth2_token_option
@tls_options
@transport_options
@_brief_option(_BRIEF_HELP)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object; \"tls\" holds the server's chain (subject, SANs, issuer, "
    "expiry, SHA-256, problems) when TLS came up.",
)
@JOB_LANG
@pass_environment
def diagnose_login(env: Environment, url: str, **options: Any) -> None:
    """Why does a login fail? POP3 and IMAP logins (pop3://, imap://, pop3s://,
    imaps://) and SMTP AUTH (submission://, smtps://, smtp://). TLS comes first:
    where STARTTLS/STLS is offered the password goes only after it, and never in
    plain text if TLS fails. Tells a wrong password from plain-text login being
    disabled, TLS being required, no AUTH on the port, a locked mailbox or a
    login delay, from the server's own answers, and says which way the login
    went. It logs in as send does: the strongest mechanism offered (SCRAM, CRAM-MD5,
    else LOGIN or PLAIN), or XOAUTH2/OAUTHBEARER with an OAuth 2 token, or GSSAPI when
    the ticket cache holds a Kerberos ticket of the user (kinit; no password then).
    Password from $MAILTALK_PASSWORD, ~/.netrc, or asked; token from
    $MAILTALK_OAUTH2_TOKEN or --oauth2-token. The URL's host may be an alias from the
    config file (mailtalk --help)."""
    from mailtalk.commands import host_defaults
    from mailtalk.mail.diagnose import login

    take_language(env, options, machine=options["as_json"])
    url = host_defaults.url(url, options)
    tls = client_tls(env, options)
    options["pipe_command"] = checked_pipe(options["pipe_command"])
    token = take_token(env, options)
    sys.exit(login.run(login.LoginOptions(url=url, tls=tls, oauth2_token=token, **options), env))
