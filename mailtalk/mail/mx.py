"""``mailtalk mx DOMAIN``: where mail for a domain goes, and (``--probe``) who answers there.

The lookup is :func:`mailtalk.net.mx.lookup_mx`; this module shows it: rich on a
terminal, plain text in a pipe (as ``explain_view`` does), one JSON object with
``--json``. ``--probe`` connects to every address of every MX, as a sending MTA
would, and reports the banner, the EHLO extensions, whether STARTTLS is offered
and works (certificate subject, expiry and verification), and how long each step
took. It stops there: QUIT, no MAIL FROM.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from mailtalk.exitcodes import ExitCode
from mailtalk.knowledge.translation import SpeaksLanguage, translation

if TYPE_CHECKING:
    from mailtalk.environment import Environment
    from mailtalk.net.mx import MXResult
    from mailtalk.net.tls import TLSInfo
    from mailtalk.protocols.common import ServerEvent
    from mailtalk.protocols.smtp import Reply
    from mailtalk.protocols.smtp_plan import Result


Gettext = Callable[[str], str]


@dataclass(frozen=True, kw_only=True)
class MXOptions(SpeaksLanguage):
    """``mailtalk mx``'s options, as mailtalk/commands/mail.py reads them."""

    domain: str  # or an address: the domain after its last @
    resolver: str | None = None  # HOST[:PORT] of a DNS server; None: the system's
    probe: bool = False  # connect to every MX address
    port: int = 25  # the port --probe connects to
    cafile: str | None = None
    timeout: float = 5.0
    brief: bool = False  # without the lesson
    as_json: bool = False
    language: str = "en"  # of the lines for a person (mailtalk/language.py)


_STATUS_STYLE = {
    "ok": "green",
    "implicit": "green",
    "null": "yellow",
    "nxdomain": "red",
    "nodata": "red",
    "servfail": "red",
    "timeout": "red",
}


# --- probing -------------------------------------------------------------------------


@dataclass
class TLSProbe:
    works: bool
    version: str = ""
    cipher: str = ""
    subject: str = ""
    issuer: str = ""
    not_after: str = ""  # ISO date
    san: list[str] = field(default_factory=list)
    verified: bool = False
    verify_error: str | None = None  # why the certificate is not trusted, if it is not
    error: str | None = None  # why TLS did not work at all
    summary: str = ""
    ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "works": self.works,
            "version": self.version,
            "cipher": self.cipher,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": self.not_after,
            "san": self.san,
            "verified": self.verified,
            "verify_error": self.verify_error,
            "error": self.error,
            "ms": self.ms,
        }


@dataclass
class Probe:
    """What one address of one MX said."""

    host: str
    address: str
    port: int
    connect_ms: float | None = None
    banner: str = ""
    banner_ms: float | None = None
    ehlo: list[str] = field(default_factory=list)  # the extension lines, as sent
    ehlo_ms: float | None = None
    starttls_offered: bool = False
    tls: TLSProbe | None = None
    ehlo_after_tls: list[str] = field(default_factory=list)
    error: str | None = None
    total_ms: float | None = None

    @property
    def answered(self) -> bool:
        """The server greeted with a 2xx: it would take a delivery attempt."""
        return self.banner.startswith("2")

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "port": self.port,
            "answered": self.answered,
            "connect_ms": self.connect_ms,
            "banner": self.banner,
            "banner_ms": self.banner_ms,
            "ehlo": self.ehlo,
            "ehlo_ms": self.ehlo_ms,
            "starttls_offered": self.starttls_offered,
            "tls": self.tls.to_json() if self.tls else None,
            "ehlo_after_tls": self.ehlo_after_tls,
            "error": self.error,
            "total_ms": self.total_ms,
        }


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


class _Stopwatch:
    """The probe's listener: it shows nothing, and times each reply (from the command
    that asked for it, the greeting from the start of the connection) and the TLS
    handshake (from the server's yes to STARTTLS)."""

    def __init__(self) -> None:
        self.latency: dict[int, float] = {}  # id of a reply -> seconds
        self.tls_ms: float | None = None
        self._last_reply = time.monotonic()

    def sent(self, text: str, typed: bool) -> None:
        pass

    def event(self, event: ServerEvent, latency: float) -> None:
        self.latency[id(event)] = latency
        self._last_reply = time.monotonic()

    def note(self, text: str, kind: str = "info") -> None:
        if kind == "tls":
            self.tls_ms = _ms(self._last_reply)

    def closed(self) -> None:
        pass

    def ms(self, reply: Reply) -> float | None:
        seconds = self.latency.get(id(reply))
        return None if seconds is None else round(seconds * 1000, 1)


def _extension_lines(reply: Reply) -> list[str]:
    return [line.strip() for line in reply.lines[1:]] if reply.code // 100 == 2 else []


def _converse(
    host: str,
    address: str,
    port: int,
    timeout: float,
    insecure: bool,
    probe: Probe,
    cafile: str | None = None,
    language: str = "en",
) -> TLSInfo | None:
    """Connect, greet, EHLO, STARTTLS if offered, EHLO again, QUIT; fill in ``probe``.

    Returns the TLS session's facts, or None if TLS was not offered or refused.
    Raises TransportError/MailtalkError when the conversation breaks.
    """
    from mailtalk.client.conversation import client_name
    from mailtalk.client.options import SessionOptions
    from mailtalk.mail.smtp_steps import drive, job_conversation
    from mailtalk.net.target import Target
    from mailtalk.protocols.smtp_plan import Plan, Stage, TLSPolicy
    from mailtalk.protocols.smtp_sequence import ClientSequence

    session = SessionOptions.for_target(
        Target("smtp", address, port, "none", None),
        insecure=insecure,
        cafile=cafile,
        timeout=timeout,
        server_hostname=host,
        language=language,
    )
    stopwatch = _Stopwatch()
    conv = job_conversation(session, stopwatch)
    plan = Plan(client_name(), starttls=TLSPolicy.IF_OFFERED, stop_after=Stage.TLS)
    start = time.monotonic()
    try:
        conv.open()
        probe.connect_ms = _ms(start)
        sequence = ClientSequence(conv.core, plan)
        try:
            drive(conv, sequence)
        finally:
            _fill(probe, sequence.result, stopwatch, conv.gettext)
        return conv.transport.tls if conv.transport is not None else None  # None: no TLS
    finally:
        conv.close()


def _fill(probe: Probe, result: Result, stopwatch: _Stopwatch, _: Gettext) -> None:
    """What the server said, into ``probe``."""
    from mailtalk.protocols.common import first_line
    from mailtalk.protocols.smtp_client_role import parse_extensions
    from mailtalk.protocols.smtp_plan import Stage

    for exchange in result.exchanges:
        reply, verb = exchange.reply, exchange.verb
        if exchange.stage is Stage.CONNECT:
            probe.banner = first_line(reply)
            probe.banner_ms = stopwatch.ms(reply)
        elif exchange.stage is Stage.EHLO and verb == "EHLO":
            refused = [first_line(reply)] if reply.code >= 400 else []
            probe.ehlo = _extension_lines(reply) or refused
            probe.ehlo_ms = stopwatch.ms(reply)
            offered = parse_extensions(reply) if reply.code // 100 == 2 else {}
            probe.starttls_offered = "STARTTLS" in offered
        elif verb == "STARTTLS" and reply.code // 100 != 2:
            probe.tls = TLSProbe(
                False, error=_("STARTTLS refused: {reply}").format(reply=first_line(reply)))
        elif verb == "STARTTLS":
            probe.tls = TLSProbe(True, ms=stopwatch.tls_ms)
        elif exchange.stage is Stage.TLS:
            probe.ehlo_after_tls = _extension_lines(reply)


def probe_address(
    host: str, address: str, port: int, timeout: float, cafile: str | None = None,
    language: str = "en",
) -> Probe:
    """Talk to one MX address as a sending MTA would, up to EHLO after STARTTLS; what
    it found said in ``language``."""
    from mailtalk.errors import MailtalkError, one_line
    from mailtalk.net.transport import TLSError, TLSVerificationError, TransportError
    from mailtalk.protocols.common import RemoteProtocolError

    _ = translation(language).gettext
    probe = Probe(host, address, port)
    start = time.monotonic()
    try:
        info = _converse(host, address, port, timeout, insecure=False, probe=probe,
                         cafile=cafile, language=language)
        if info is not None and probe.tls is not None:
            _fill_tls(probe.tls, info)
    except TLSVerificationError as error:
        # The handshake works but the certificate is not trusted: look again without
        # checking, to show what it is. (MTAs mostly deliver over such TLS anyway.)
        reason = str(error).split(". ")[0]
        second = Probe(host, address, port)
        try:
            info = _converse(host, address, port, timeout, insecure=True, probe=second,
                             language=language)
        except (TransportError, MailtalkError, RemoteProtocolError) as again:
            probe.tls = TLSProbe(False, verify_error=reason, error=one_line(again, _))
        else:
            tls = second.tls or TLSProbe(False, error=_("the second look found no TLS"))
            tls.verify_error = reason
            if info is not None:
                _fill_tls(tls, info)
            probe.tls = tls
            probe.ehlo_after_tls = second.ehlo_after_tls
    except TLSError as error:
        probe.tls = TLSProbe(False, error=str(error))
    except (TransportError, MailtalkError, RemoteProtocolError, OSError) as error:
        probe.error = one_line(error, _) if not isinstance(error, OSError) else str(error)
    probe.total_ms = _ms(start)
    return probe


def _fill_tls(tls: TLSProbe, info: TLSInfo) -> None:
    tls.version = info.version
    tls.cipher = info.cipher
    tls.subject = info.subject
    tls.issuer = info.issuer
    tls.not_after = info.not_after.strftime("%Y-%m-%d") if info.not_after else ""
    tls.san = list(info.san)
    tls.verified = info.verified and tls.verify_error is None
    tls.summary = info.summary()


def probe_all(
    result: MXResult, port: int, timeout: float, cafile: str | None = None,
    language: str = "en",
) -> list[Probe]:
    probes = []
    for host in result.hosts:
        if host.host == ".":
            continue
        for address in host.addresses:
            probes.append(probe_address(host.host, address, port, timeout, cafile, language))
    return probes


# --- what to say ---------------------------------------------------------------------


def lesson(result: MXResult, gettext: Gettext = str) -> str:
    """How mail to the domain travels, from what DNS said; in the language of
    ``gettext``."""
    _ = gettext
    domain = result.domain
    if result.status == "implicit":
        said = _(
            "Mail to @{domain} does not go from the sender's computer to the recipient's: "
            "with no MX record, the sender's mail server hands the message to {domain}'s "
            "own address; the recipient's mail program later fetches it from there."
        )
    elif result.status == "ok":
        first = result.hosts[0].host if result.hosts else domain
        return _(
            "Mail to @{domain} does not go from the sender's computer to the recipient's: "
            "the sender's mail server looks up these records and hands the message to "
            "{first} (lowest preference first, the next if it does not answer); the "
            "recipient's mail program later fetches it from there."
        ).format(domain=domain, first=first)
    elif result.status == "null":
        said = _(
            "Mail to @{domain} is refused by the sender's own mail server, which reads this "
            "record and bounces the message at once instead of trying to deliver it."
        )
    elif result.status in ("nxdomain", "nodata"):
        said = _(
            "The sender's mail server finds no MX for @{domain} and bounces the message: "
            "mail goes to a domain's MX, never straight to someone's computer."
        )
    else:
        said = _(
            "Without a DNS answer the sender's mail server cannot know where mail for "
            "@{domain} goes: it keeps the message queued and tries again later."
        )
    return said.format(domain=domain)


def exit_status(result: MXResult, probes: list[Probe] | None) -> int:
    if result.status in ("servfail", "timeout"):
        return int(ExitCode.CONNECT)
    if not result.deliverable:
        return int(ExitCode.FAILED)
    if probes is not None and not any(p.answered for p in probes):
        return int(ExitCode.FAILED)
    return int(ExitCode.OK)


@dataclass
class _Line:
    text: str
    style: str = ""


def _headline(result: MXResult, shown_name: str) -> str:
    if shown_name != result.domain:  # an international name: say what DNS was asked
        return f"{shown_name}: {result.message}"
    return result.message


def _resolver_line(result: MXResult, _: Gettext) -> str:
    if result.resolver == "system":
        return _("resolver: system")
    return _("resolver: {resolver}").format(resolver=result.resolver)


def _host_rows(result: MXResult, _: Gettext) -> list[tuple[str, str, str]]:
    rows = []
    for host in result.hosts:
        if result.status == "null":
            rows.append((str(host.preference), ".", _("(null MX: no mail)")))
            continue
        label = host.host + (_(" (the domain itself)") if result.status == "implicit" else "")
        where = (", ".join(host.addresses) if host.addresses
                 else _("no address: {reason}").format(reason=host.error))
        rows.append(("-" if result.status == "implicit" else str(host.preference), label, where))
    return rows


def _probe_lines(probe: Probe, _: Gettext) -> list[_Line]:
    """The probe as lines, what the server said (banner, EHLO, certificate names, errors)
    with its control characters escaped; in the language of ``_``."""
    from mailtalk.terminal import safe_text

    return [_Line(safe_text(line.text), line.style) for line in _probe_lines_as_said(probe, _)]


def _probe_lines_as_said(probe: Probe, _: Gettext) -> list[_Line]:
    address = f"[{probe.address}]" if ":" in probe.address else probe.address
    lines = [_Line(f"{probe.host} {address}:{probe.port}", "bold")]
    if probe.connect_ms is None:
        lines.append(_Line("  " + _("cannot connect: {error}").format(error=probe.error), "red"))
        return lines
    lines.append(_Line("  " + _("connected in {ms} ms").format(ms=f"{probe.connect_ms:g}")))
    if probe.banner:
        style = "" if probe.answered else "red"
        lines.append(_Line("  " + _("banner ({ms} ms): {banner}").format(
            ms=f"{probe.banner_ms:g}", banner=probe.banner), style))
    if probe.ehlo or probe.ehlo_ms is not None:
        ehlo = ", ".join(probe.ehlo) or _("(no extensions)")
        lines.append(_Line(f"  EHLO ({probe.ehlo_ms:g} ms): {ehlo}"))
    if probe.answered and probe.ehlo_ms is not None:
        if not probe.starttls_offered:
            lines.append(_Line(
                "  " + _("STARTTLS: not offered (mail to it travels in clear)"), "yellow"))
        elif probe.tls is not None:
            lines += _tls_lines(probe.tls, _)
        if probe.ehlo_after_tls and probe.ehlo_after_tls != probe.ehlo:
            lines.append(_Line("  " + _("EHLO after TLS: {extensions}").format(
                extensions=", ".join(probe.ehlo_after_tls))))
    if probe.error:
        lines.append(_Line("  " + _("error: {error}").format(error=probe.error), "red"))
    if probe.total_ms is not None:
        lines.append(_Line("  " + _("{ms} ms in all").format(ms=f"{probe.total_ms:g}"), "dim"))
    return lines


def _tls_lines(tls: TLSProbe, _: Gettext) -> list[_Line]:
    if not tls.works:
        return [_Line("  " + _("STARTTLS: offered but fails: {error}").format(error=tls.error),
                      "red")]
    took = f" ({tls.ms:g} ms)" if tls.ms is not None else ""
    lines = [_Line("  " + _("STARTTLS: works{took}, {version}, {cipher}").format(
        took=took, version=tls.version, cipher=tls.cipher), "green")]
    if tls.subject or tls.not_after:
        expiry = _(", expires {date}").format(date=tls.not_after) if tls.not_after else ""
        names = f" ({', '.join(tls.san)})" if tls.san else ""
        lines.append(_Line("  " + _("certificate: {subject}{names}, by {issuer}{expiry}").format(
            subject=tls.subject or _("(no subject)"), names=names, issuer=tls.issuer,
            expiry=expiry)))
    if tls.verified:
        lines.append(_Line("  " + _("certificate verified"), "green"))
    elif tls.verify_error:
        lines.append(_Line("  " + _("certificate NOT verified: {reason}").format(
            reason=tls.verify_error), "yellow"))
    return lines


def _shown_name(domain: str, result: MXResult, _: Gettext) -> str:
    typed = domain.strip().rstrip(".")
    if typed.lower() == result.domain:
        return result.domain
    return _("{typed} (in DNS {domain})").format(typed=typed, domain=result.domain)


def _plain(
    result: MXResult,
    shown: str,
    probes: list[Probe] | None,
    out: TextIO,
    width: int,
    brief: bool,
    _: Gettext,
) -> None:
    import textwrap

    out.write(_headline(result, shown) + "\n")
    rows = _host_rows(result, _)
    if rows:
        pref_w = max(len(r[0]) for r in rows)
        host_w = max(len(r[1]) for r in rows)
        for pref, host, where in rows:
            out.write(f"  {pref:>{pref_w}}  {host:<{host_w}}  {where}\n")
    out.write(_resolver_line(result, _) + "\n")
    if not brief:
        out.write("\n" + textwrap.fill(lesson(result, _), width) + "\n")
    if probes is not None:
        out.write("\n" + (_("Probe:") if probes else _("Probe: no MX address to connect to"))
                  + "\n")
        from mailtalk.terminal import wrap_words

        for probe in probes:
            for line in _probe_lines(probe, _):
                # a line's continuation hangs under its label ("  EHLO (3 ms): ...")
                indent = line.text[: len(line.text) - len(line.text.lstrip())]
                for part in wrap_words(line.text.lstrip(), width, indent, indent + "    "):
                    out.write(part + "\n")
    out.flush()


def _rich(
    result: MXResult, shown: str, probes: list[Probe] | None, env: Environment,
    brief: bool, _: Gettext,
) -> None:
    from rich.table import Table
    from rich.text import Text

    console = env.console(highlight=False, emoji=False)
    style = _STATUS_STYLE.get(result.status, "")
    console.print(Text(_headline(result, shown), style=f"bold {style}"))
    rows = _host_rows(result, _)
    if rows:
        table = Table(box=None, padding=(0, 2), show_edge=False)
        table.add_column(_("pref"), justify="right", style="cyan")
        table.add_column(_("MX host"), style="bold")
        table.add_column(_("addresses"))
        for pref, host, where in rows:
            table.add_row(Text(pref), Text(host), Text(where))
        console.print(table)
    console.print(Text(_resolver_line(result, _), style="dim"))
    if not brief:
        console.print()
        console.print(Text(lesson(result, _), style="italic"))
    if probes is not None:
        console.print()
        console.print(Text(_("Probe") if probes else _("Probe: no MX address to connect to"),
                           "bold"))
        for probe in probes:
            for line in _probe_lines(probe, _):
                console.print(Text(line.text, style=line.style))


def run(options: MXOptions, env: Environment) -> int:
    """Show the domain's MX picture: rich on a terminal, plain in a pipe, or JSON; the
    exit status (see ``mailtalk mx --help``). ``brief``: without the lesson (the
    paragraph on how mail travels)."""
    from mailtalk.environment import OutputMode
    from mailtalk.errors import message_of
    from mailtalk.net.mx import Resolver, ascii_domain, lookup_mx

    _ = options.gettext
    out = env.stdout
    domain = options.domain
    if "@" in domain:  # an address: the domain after the last @ is what DNS is asked
        domain = domain.rpartition("@")[2]
    try:
        if domain.strip().startswith("["):
            raise ValueError(_("{domain} is an address literal: it has no MX, mail goes "
                               "there").format(domain=repr(domain)))
        ascii_domain(domain, _)
    except ValueError as error:
        print(f"mailtalk: {error}", file=env.stderr)
        return int(ExitCode.USAGE)
    dns_resolver = Resolver(options.resolver, options.timeout, _)
    try:
        dns_resolver.resolver  # noqa: B018 - a bad --resolver is a usage error, said now
    except ValueError as error:
        print(f"mailtalk: --resolver {options.resolver}: {message_of(error, _)}",
              file=env.stderr)
        return int(ExitCode.USAGE)
    result = lookup_mx(domain, dns_resolver, _)
    probes = None
    if options.probe:
        probes = probe_all(result, options.port, options.timeout, options.cafile,
                           options.language)
    status = exit_status(result, probes)
    shown = _shown_name(domain, result, _)
    mode = env.output_mode(options.as_json)
    if mode is OutputMode.JSON:
        document: dict[str, Any] = result.to_json()
        document["deliverable"] = result.deliverable
        document["lesson"] = lesson(result)
        if probes is not None:
            document["probe"] = [p.to_json() for p in probes]
        document["exit"] = status
        from mailtalk.terminal import safe_strings

        out.write(json.dumps(safe_strings(document), ensure_ascii=False) + "\n")
        out.flush()
    elif mode is OutputMode.RICH:
        _rich(result, shown, probes, env, options.brief, _)
    else:
        _plain(result, shown, probes, out, env.width(), options.brief, _)
    return status
