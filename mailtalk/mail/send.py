"""``mailtalk send``: deliver one message, as an MTA (to the MX) or a mail client (to --server).

Without ``--server`` the recipients are grouped by domain and each domain's MX
hosts are tried in preference order, the next one after a connection failure or a
4xx (RFC 5321 5.1), exactly the path the course material teaches: the message goes
to the recipient domain's MX, not to the recipient's computer. With ``--server``
it goes there, optionally with STARTTLS or implicit TLS and AUTH, as a mail client
sends to its provider. The whole conversation is shown, every failure explained.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from mailtalk.client import login
from mailtalk.client.conversation import Conversation
from mailtalk.client.options import SessionOptions
from mailtalk.errors import UsageError, exit_code_for, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.knowledge.translation import SpeaksLanguage
from mailtalk.mail.smtp_steps import (
    Listener,
    PartlyDelivered,
    SendFailed,
    drive,
    has_ticket_for,
    job_conversation,
    password_for,
    quit_politely,
    refusal_error,
    split_address,
)
from mailtalk.net.target import Target
from mailtalk.net.tlsclient import ClientTLS
from mailtalk.protocols.common import ServerEvent
from mailtalk.protocols.sasl import NO_SECRET_MECHANISMS, TOKEN_MECHANISMS, auto_mechanism
from mailtalk.protocols.smtp_plan import (
    DSN,
    QUIT_POINTS,
    STOP_POINTS,
    Authenticate,
    Chunk,
    Ending,
    Plan,
    Result,
    Stage,
    TLSPolicy,
    needs_smtputf8,
)
from mailtalk.protocols.smtp_sequence import ClientSequence
from mailtalk.terminal import safe_text

if TYPE_CHECKING:
    from rich.console import Console

    from mailtalk.environment import Environment

@dataclass(frozen=True, kw_only=True)
class SendOptions(SpeaksLanguage):
    """``mailtalk send``'s options, as mailtalk/commands/mail.py reads them."""

    sender: str
    recipients: tuple[str, ...]
    server: str | None = None  # HOST[:PORT]; None: each recipient domain's MX
    starttls: bool = False
    implicit_tls: bool = False
    auth_user: str | None = None
    auth_mechanism: str = "auto"  # or a SASL name, lower case
    # XOAUTH2/OAUTHBEARER's bearer token ($MAILTALK_OAUTH2_TOKEN or --oauth2-token)
    oauth2_token: str | None = field(default=None, repr=False)
    helo: str | None = None  # None: this host's name
    subject: str = "mailtalk test message"
    body: str | None = None  # None: a short test text
    headers: tuple[str, ...] = ()  # "Name: value"
    attachments: tuple[str, ...] = ()  # paths
    data_file: str | None = None  # send this file as the whole message
    quit_after: str | None = None  # a QUIT_POINT (smtp_plan): stop there, then QUIT
    drop_after: str | None = None  # a STOP_POINT: stop there, close without QUIT
    mx_port: int = 25
    resolver: str | None = None  # HOST[:PORT] of a DNS server; None: the system's
    insecure: bool = False
    cafile: str | None = None
    timeout: float = 30.0
    dsn_notify: str | None = None  # NEVER or SUCCESS,FAILURE,DELAY (RFC 3461)
    dsn_ret: str | None = None  # FULL or HDRS
    envid: str | None = None
    smtputf8: bool = False
    chunking: bool = False
    chunk_size: int = 1024 * 1024
    eight_bit_mime: bool = False
    size: bool = False
    pipeline: bool = False  # MAIL, RCPT and DATA in one write (RFC 2920)
    prdr: bool = False  # a reply per recipient to the message (draft-hall-prdr)
    # --sni, --tls-min/--tls-max, --ciphers, --cert/--key, --tls-dump
    tls: ClientTLS = field(default_factory=ClientTLS)
    pipe_command: tuple[str, ...] = ()  # --pipe COMMAND's words: the program is the server
    proxy_from: tuple[str, int] | None = None  # --proxy-from ADDR[:PORT]
    proxy_version: int = 1
    xclient: tuple[tuple[str, str], ...] = ()  # --xclient NAME=VALUE, checked
    brief: bool = False
    as_json: bool = False
    language: str = "en"  # of the lines for a person (mailtalk/language.py)

    @property
    def fixed_server(self) -> bool:
        """--server or --pipe: one server, no MX lookup and no next MX to try."""
        return bool(self.server or self.pipe_command)

    @property
    def authenticates(self) -> bool:
        """AUTH is to be said: as --auth USER, by the TLS client certificate (SASL
        EXTERNAL) or by the Kerberos ticket (GSSAPI); for these two USER is optional,
        the identity to act as."""
        return bool(self.auth_user) or self.auth_mechanism in ("external", "gssapi")

    @property
    def stop_point(self) -> str | None:
        """The stage asked by --quit-after or --drop-after, if either was given."""
        return self.quit_after or self.drop_after

    @property
    def ending(self) -> Ending:
        return Ending.DROP if self.drop_after else Ending.QUIT

    @property
    def stops_before_message(self) -> bool:
        """A stop point asked before the message: nothing is to be sent."""
        return self.stop_point not in (None, Stage.MESSAGE.value)


def _attach_message(
    message: Any, data: bytes, name: str, notes: list[str] | None,
    _: Callable[[str], str] = str,
) -> bool:
    """Attach ``data`` (an .eml) as message/rfc822, which RFC 2046 5.2.1 allows only
    as 7bit, 8bit or binary: never base64. False when the file cannot be carried so
    (a NUL or a line over 998 bytes needs binary, which SMTP DATA cannot carry)."""
    import email
    import email.policy

    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if b"\0" in data or any(len(line) > 998 for line in lines):
        if notes is not None:
            notes.append(_(
                "{file} has NUL bytes or lines over 998 bytes, so it cannot go as "
                "message/rfc822 (7bit or 8bit only): attached as application/octet-stream"
            ).format(file=name))
        return False
    inner = email.message_from_bytes(data, policy=email.policy.default)
    cte = "7bit" if data.isascii() else "8bit"
    message.add_attachment(inner, cte=cte, filename=name)
    return True


def build_message(options: SendOptions, notes: list[str] | None = None) -> bytes:
    """The message: --data as it is, or one built from --subject/--body/--header/--attach.
    Anything worth saying about how it was built is added to ``notes``."""
    if options.data_file:
        with open(options.data_file, "rb") as file:
            return file.read()
    import email.policy
    import email.utils
    import mimetypes
    from email.message import EmailMessage

    # refold_source="none": an attached message's own headers stay as they were
    message = EmailMessage(policy=email.policy.SMTP.clone(refold_source="none"))
    message["From"] = options.sender
    message["To"] = ", ".join(options.recipients)
    message["Subject"] = options.subject or "mailtalk test message"
    message["Date"] = email.utils.formatdate(localtime=True)
    domain = options.sender.rpartition("@")[2] or "mailtalk.invalid"
    message["Message-ID"] = email.utils.make_msgid("mailtalk", domain=domain)
    message["X-Mailer"] = "mailtalk"
    for header in options.headers:
        name, colon, value = header.partition(":")
        if not colon or not name.strip() or any(c in name for c in " \t"):
            raise UsageError(options.gettext("--header {header!r}: give 'Name: value'").format(
                header=header))
        message[name.strip()] = value.strip()
    body = options.body
    message.set_content(
        (body if body is not None else "This is a test message sent by mailtalk.") + "\n"
    )
    for path in options.attachments:
        kind, _encoding = mimetypes.guess_type(path)
        maintype, subtype = (kind or "application/octet-stream").split("/", 1)
        with open(path, "rb") as file:
            data = file.read()
        name = os.path.basename(path)
        if (maintype, subtype) == ("message", "rfc822"):
            if _attach_message(message, data, name, notes, options.gettext):
                continue
            maintype, subtype = "application", "octet-stream"
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


def converse(
    target: Target,
    options: SendOptions,
    recipients: list[str],
    message: bytes,
    listener: Listener,
    progress_to: Console | None = None,
) -> list[str]:
    """One SMTP conversation, up to the message or the stop point asked; the recipients
    the server accepted (to RCPT: the message went to them unless a stop point came
    before it), or an exception saying what failed. A big message shows a progress bar
    on ``progress_to``."""
    from mailtalk.client.conversation import client_name

    session = SessionOptions.for_target(
        target,
        insecure=options.insecure,
        cafile=options.cafile,
        timeout=options.timeout,
        tls=options.tls,
        pipe_command=options.pipe_command,
        proxy_from=options.proxy_from,
        proxy_version=options.proxy_version,
        language=options.language,
    )
    # --brief: no lesson under refusals
    conv = job_conversation(session, listener, explain=not options.brief)
    required = options.starttls and target.tls != "implicit"
    wire = crlf_lines(message)  # what BDAT sends, and SIZE declares
    extensions = extension_plan(options, recipients, wire)
    plan = Plan(
        helo=options.helo or client_name(),
        sender=options.sender,
        recipients=tuple(recipients),
        starttls=TLSPolicy.REQUIRED if required else TLSPolicy.NEVER,
        auth=options.authenticates,
        stop_after=Stage(options.stop_point) if options.stop_point else None,
        ending=options.ending,
        xclient=options.xclient,
        **extensions,
    )

    _ = options.gettext

    def authenticate(offer: Authenticate) -> ServerEvent:
        user = options.auth_user or ""  # none: GSSAPI's ticket or EXTERNAL's certificate
        if not offer.mechanisms:
            listener.note(_("the server did not offer AUTH") if offer.tls else _(
                "the server did not offer AUTH (often offered only after STARTTLS: try "
                "--starttls)"), "warning")
        mechanism = options.auth_mechanism.upper()
        if mechanism == "AUTO":
            ticket = "GSSAPI" in offer.mechanisms and has_ticket_for(user)
            mechanism = auto_mechanism(offer.mechanisms, options.oauth2_token is not None, ticket)
            if mechanism == "GSSAPI":
                user = ""  # the ticket says who: --auth named its owner
        if mechanism in NO_SECRET_MECHANISMS:
            return login.authenticate(conv, mechanism, user, "")
        if mechanism in TOKEN_MECHANISMS:
            assert options.oauth2_token is not None  # commands/mail.py makes sure
            return login.authenticate(conv, mechanism, user, options.oauth2_token)
        secret = password_for(user, target.host, _)
        return login.authenticate(conv, mechanism, user, secret)

    def send_message() -> None:
        _send_with_progress(conv, message, listener.as_json, progress_to)
        listener.note(_("message of {size} bytes, dot-stuffed").format(size=len(message)))
        listener.sent(".", typed=False)

    def chunk_octets(chunk: Chunk) -> bytes:
        return wire[chunk.start : chunk.start + chunk.size]

    def send_chunk(chunk: Chunk) -> None:
        conv.send_chunk(chunk.line, chunk_octets(chunk))

    sequence: ClientSequence | None = None
    try:
        conv.open()
        sequence = ClientSequence(conv.core, plan)
        try:
            result = drive(conv, sequence, authenticate, send_message, send_chunk, chunk_octets)
        finally:
            listener.keep_peer_chain(conv)
    except BaseException:
        quit_politely(conv)  # no reply in time, no password: goodbye, as an MTA says it
        raise
    finally:
        conv.close()
        if sequence is not None:
            listener.extensions[:] = sequence.result.used
    return accepted_recipients(result, getattr(conv.core, "lmtp", False), _)


def accepted_recipients(result: Result, lmtp: bool, _: Callable[[str], str]) -> list[str]:
    """What a finished sequence's ``result`` says went through: the recipients the
    message was delivered to (LMTP, PRDR) or accepted for; else the refusal raised."""
    final = result.prdr_final
    if result.deliveries and (final is None or final.code // 100 == 2 or not result.delivered):
        # LMTP or PRDR: a reply per recipient; every one must be 2xx (a PRDR final
        # refusal after some 2xx refuses the message for them too: a refusal below)
        refused = [(rcpt, r) for rcpt, r in result.recipients if r.code // 100 != 2]
        refused += result.undelivered
        if refused:
            raise PartlyDelivered(result.delivered, refused, "LMTP" if lmtp else "PRDR", _)
        return result.delivered
    if result.refusal is not None:
        raise refusal_error(result.refusal, result, _)
    return result.accepted


def server_target(server: str, implicit_tls: bool) -> Target:
    """--server's target: ``HOST[:PORT]``, ``unix:/path``, or for LMTP (RFC 2033: the
    local delivery server, not an MX) ``lmtp://HOST[:PORT]`` or ``lmtp:unix:/path``."""
    from mailtalk.language import N_
    from mailtalk.net.target import TargetError, parse_shortcut, parse_url

    if server.lower().startswith("lmtp:"):
        target = parse_url(server)
        if implicit_tls:
            raise TargetError(N_("LMTP has no implicit TLS: leave out --tls"))
        return target
    return parse_shortcut("smtp", server, implicit_tls)


def crlf_lines(message: bytes) -> bytes:
    """The message with CRLF line ends and a final one: what BDAT carries as it is."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text.replace(b"\n", b"\r\n")


def extension_plan(options: SendOptions, recipients: list[str], wire: bytes) -> dict[str, Any]:
    """The Plan's fields for the SMTP extensions asked for (see smtp_sequence's
    docstring): what is required (asked by name, or SMTPUTF8 for an international
    address), and each extension's parameters."""
    requires: set[str] = set()
    addresses = [options.sender, *recipients]
    smtputf8 = options.smtputf8 or any(needs_smtputf8(a) for a in addresses)
    if smtputf8:
        requires.add("SMTPUTF8")
    dsn = None
    if options.dsn_notify or options.dsn_ret or options.envid:
        requires.add("DSN")
        dsn = DSN(
            notify=options.dsn_notify,
            ret=options.dsn_ret.upper() if options.dsn_ret else None,
            envid=options.envid,
            orcpt=bool(options.dsn_notify),
        )
    if options.chunking:
        requires.add("CHUNKING")
    if options.eight_bit_mime:
        requires.add("8BITMIME")
    if options.pipeline:
        requires.add("PIPELINING")
    if options.prdr:
        requires.add("PRDR")
    return {
        "requires": frozenset(requires),
        "smtputf8": smtputf8,
        "dsn": dsn,
        "size": len(wire) if options.size else None,
        "check_size": options.size,
        "eight_bit": options.eight_bit_mime or any(b > 0x7F for b in wire),
        "chunk_size": options.chunk_size if options.chunking else None,
        "length": len(wire),
        "pipeline": options.pipeline,
        "prdr": options.prdr,
    }


# Messages this big get a progress bar on a terminal (attachments, --data).
PROGRESS_THRESHOLD = 1024 * 1024


def _send_with_progress(
    conv: Conversation, message: bytes, as_json: bool, progress_to: Console | None
) -> None:
    """The message, with a progress bar on ``progress_to`` (standard error's console
    when it is a terminal, else None) when it is big."""
    if as_json or len(message) < PROGRESS_THRESHOLD or progress_to is None:
        conv.send_message(message)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=progress_to,
        # drawn in place, then wiped; without colour (no escapes) said once at the end
        transient=progress_to.is_interactive,
    ) as progress:
        task = progress.add_task(conv.gettext("sending the message"), total=len(message))
        conv.send_message(message, lambda done: progress.update(task, completed=done))


def _targets_for(domain: str, options: SendOptions, listener: Listener) -> list[Target]:
    from mailtalk.net.mx import Resolver, lookup_mx

    _ = options.gettext
    timeout = min(options.timeout, 10.0)
    result = lookup_mx(domain, Resolver(options.resolver, timeout, _), _)
    # A lookup that finds nowhere to deliver is said once, as the error.
    if result.status in ("nxdomain", "null", "nodata"):
        raise SendFailed(result.message, temporary=False, exit_code=ExitCode.CONNECT)
    if result.status in ("servfail", "timeout"):
        shown = domain if result.domain == domain.lower() else f"{domain} ({result.domain})"
        raise SendFailed(
            _("cannot find the MX of {domain}: {reason}").format(
                domain=shown, reason=result.message),
            temporary=True,
            exit_code=ExitCode.CONNECT,
        )
    listener.note(_("MX of {domain}: {answer}").format(domain=result.domain, answer=result.message))
    for host in result.hosts:
        if host.addresses:
            listener.note(f"  {host.preference:>3} {host.host} {' '.join(host.addresses)}")
        else:
            listener.note(f"  {host.preference:>3} {host.host} ({host.error})")
    targets = []
    port = options.mx_port
    for host in result.hosts:
        for address in host.addresses:
            targets.append(Target("smtp", address, port, "none", None))
    if not targets:
        raise SendFailed(
            _("no MX host of {domain} has an address").format(domain=domain),
            temporary=True,
            exit_code=ExitCode.CONNECT,
        )
    return targets


# A recipient list's failure: (the recipients, why, the exit status it makes).
Failure = tuple[str, str, int]


def run(options: SendOptions, env: Environment) -> int:
    """``mailtalk send``: deliver the message, showing the conversation; the exit status
    of the first failure, else 0."""
    _ = options.gettext
    listener = Listener(env.stdout, options.as_json, gettext=_, width=env.width())
    try:
        options = _checked_extensions(options)
        domains = _recipients_by_domain(options)
        _check_stop_point(options, listener)
        message = _message(options, listener)
    except UsageError as error:
        click.echo(f"mailtalk: {error}", file=env.stderr)
        return ExitCode.USAGE
    except OSError as error:
        click.echo(f"mailtalk: {one_line(error, _)}", file=env.stderr)
        return ExitCode.USAGE

    failures: list[Failure] = []
    if options.fixed_server:
        try:
            # with --pipe and no --server, "localhost" is only a name: the program serves
            target = server_target(options.server or "localhost", options.implicit_tls)
        except ValueError as error:
            click.echo(f"mailtalk: --server: {one_line(error, _)}", file=env.stderr)
            return ExitCode.USAGE
        groups = [([target], list(options.recipients))]
    else:
        groups = _mx_groups(domains, options, listener, failures)
    progress_to = env.console("stderr") if env.stderr_isatty else None
    accepted: list[str] = []
    for targets, members in groups:
        taken, failure = _deliver(targets, members, message, options, listener, progress_to)
        accepted += taken
        if failure is not None:
            failures.append(failure)
    _write_result(options, env, listener, accepted, failures)
    if failures:
        return failures[0][2]
    return ExitCode.OK


def _checked_extensions(options: SendOptions) -> SendOptions:
    """--dsn-notify upper-cased and checked, --envid checked (RFC 3461 4.4: at most 100
    characters, printable ASCII)."""
    import dataclasses

    from mailtalk.language import WordedError
    from mailtalk.protocols.smtp_plan import check_notify

    _ = options.gettext
    if options.dsn_notify is not None:
        try:
            notify = check_notify(options.dsn_notify)
        except WordedError as error:
            raise UsageError(f"--dsn-notify {options.dsn_notify!r}: {error.said(_)}") from None
        options = dataclasses.replace(options, dsn_notify=notify)
    envid = options.envid
    if envid is not None and (not envid or len(envid) > 100 or not envid.isprintable()
                              or not envid.isascii()):
        raise UsageError(_("--envid {envid!r}: give 1 to 100 printable ASCII characters").format(
            envid=envid))
    return options


def _recipients_by_domain(options: SendOptions) -> dict[str, list[str]]:
    """The recipients by domain (lower case), the addresses checked first."""
    _ = options.gettext
    split_address(options.sender, "--from", _)
    domains: dict[str, list[str]] = {}
    for recipient in options.recipients:
        domains.setdefault(split_address(recipient, "--to", _)[1].lower(), []).append(recipient)
    if options.starttls and options.implicit_tls:
        raise UsageError(_("--starttls and --tls exclude each other"))
    return domains


def _check_stop_point(options: SendOptions, listener: Listener) -> None:
    """--quit-after/--drop-after checked; a stop point whose stage was not asked for (tls
    without --starttls or --tls, auth without --auth) is kept where that stage would
    be, as swaks does, and said."""
    _ = options.gettext
    if options.quit_after and options.drop_after:
        raise UsageError(_("--quit-after and --drop-after exclude each other"))
    if options.quit_after == Stage.DATA.value:
        raise UsageError(_(
            "--quit-after data: after DATA's 354 the server reads every line, QUIT too, "
            "as the message until its final dot; use --drop-after data to leave there "
            "without sending it"
        ))
    for name, value, allowed in (
        ("--quit-after", options.quit_after, QUIT_POINTS),
        ("--drop-after", options.drop_after, STOP_POINTS),
    ):
        if value is not None and value not in allowed:
            raise UsageError(_("{option} {value!r}: give one of {choices}").format(
                option=name, value=value, choices=", ".join(allowed)))
    stop = options.stop_point
    if stop == Stage.TLS.value and not (options.starttls or options.implicit_tls):
        listener.note(_(
            "--starttls or --tls not given: no TLS, so stopping where it would start (after EHLO)"
        ), "warning")
    if stop == Stage.AUTH.value and not options.authenticates:
        listener.note(
            _("--auth not given: no AUTH, so stopping where it would come (before MAIL)"),
            "warning",
        )


def _message(options: SendOptions, listener: Listener) -> bytes:
    notes: list[str] = []
    message = build_message(options, notes)
    for note in notes:
        listener.note(note, "warning")
    return message


def _mx_groups(
    domains: dict[str, list[str]],
    options: SendOptions,
    listener: Listener,
    failures: list[Failure],
) -> list[tuple[list[Target], list[str]]]:
    """Each domain's MX addresses with its recipients; a domain with none is a failure."""
    groups = []
    for domain, members in domains.items():
        try:
            groups.append((_targets_for(domain, options, listener), members))
        except SendFailed as error:
            failures.append((", ".join(members), str(error), int(error.exit_code)))
    return groups


def _deliver(
    targets: list[Target],
    members: list[str],
    message: bytes,
    options: SendOptions,
    listener: Listener,
    progress_to: Console | None,
) -> tuple[list[str], Failure | None]:
    """The recipients accepted by the first of ``targets`` that takes the message; after
    a temporary refusal or a connection failure the next MX is tried (never with
    --server). The failure, if none did."""
    _ = options.gettext
    next_mx = _("{error}; trying the next MX host")
    last_error: tuple[str, int] | None = None
    for target in targets:
        listener.note(_("connecting to {server}").format(server=target.display))
        try:
            return converse(target, options, members, message, listener, progress_to), None
        except PartlyDelivered as error:  # LMTP, PRDR: the failed recipients alone
            who = ", ".join(rcpt for rcpt, _ in error.refused)
            return error.delivered, (who, str(error), int(error.exit_code))
        except SendFailed as error:
            last_error = (str(error), int(error.exit_code))
            if not error.temporary or options.fixed_server:
                break
            listener.note(next_mx.format(error=error))
        except Exception as error:  # connection and TLS trouble: the next MX may do
            if not _expected(error):
                raise
            last_error = (one_line(error, _), int(exit_code_for(error)))
            if options.fixed_server:
                break
            listener.note(next_mx.format(error=last_error[0]))
    if last_error is None:
        return [], None
    return [], (", ".join(members), *last_error)


def _write_result(
    options: SendOptions,
    env: Environment,
    listener: Listener,
    accepted: list[str],
    failures: list[Failure],
) -> None:
    """The result: JSON lines (the transcript, then the result), or the failures on
    standard error and what was accepted."""
    out = env.stdout
    stopped = not failures and options.stops_before_message
    if options.as_json:
        for line in listener.lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        result = "failed" if failures else "stopped" if stopped else "sent"
        out.write(
            json.dumps(
                {
                    "result": result,
                    "accepted": accepted,
                    "failures": [
                        {"recipients": who, "error": safe_text(why), "exit_code": code}
                        for who, why, code in failures
                    ],
                    "stop_after": options.stop_point,
                    "extensions_used": listener.extensions,
                    "tls": listener.peer_chain,
                    "ending": options.ending.value,
                },
                ensure_ascii=False,
            )
            + "\n"
        )
        return
    for who, why, _ in failures:
        click.echo(f"mailtalk: {who}: {safe_text(why)}", file=env.stderr)
    _ = options.gettext
    if stopped:
        said = _("stopped after {stage} as asked (dropped the connection): no message sent"
                 if options.drop_after else
                 "stopped after {stage} as asked (QUIT): no message sent").format(
            stage=options.stop_point)
        if accepted:
            said += _("; recipients accepted: {recipients}").format(
                recipients=", ".join(accepted))
        out.write(f"# {said}\n")
    elif accepted and not failures:
        out.write("# " + _("accepted: {recipients}").format(recipients=", ".join(accepted))
                  + "\n")


def _expected(error: BaseException) -> bool:
    from mailtalk.errors import is_expected

    return is_expected(error)
