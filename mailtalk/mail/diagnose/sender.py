"""``mailtalk diagnose sender``: would servers accept this MAIL FROM address?

MTAs refuse senders whose domain cannot receive mail, since bounces could never
reach them (Sendmail's "501 ... Sender domain must exist", Postfix's
reject_unknown_sender_domain): the domain needs MX records or an address (the
implicit MX), and no null MX (RFC 7505, X.7.27). Receivers also look for SPF
(RFC 7208) and DMARC records; their absence is no refusal on its own but costs
reputation.

The evidence is the DNS's answers (:class:`SenderEvidence`); the rules decide, and the
verdicts' words are in ``knowledge/verdicts.toml``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailtalk.exitcodes import ExitCode
from mailtalk.mail.diagnose import (
    Report,
    ReportOptions,
    Rule,
    conclude,
    decide,
    dns_lines,
    run_report,
)

if TYPE_CHECKING:
    from mailtalk.environment import Environment
    from mailtalk.net.mx import MXResult

DNS_FAILED = ("timeout", "servfail")


@dataclass(frozen=True, kw_only=True)
class SenderOptions(ReportOptions):
    """``mailtalk diagnose sender``'s options, as mailtalk/commands/mail.py reads them."""

    sender: str
    resolver: str | None = None  # HOST[:PORT] of a DNS server; None: the system's
    timeout: float = 5.0


@dataclass
class SenderEvidence:
    """The sender domain's MX (or its absence), and its SPF and DMARC records when it
    can receive mail."""

    sender: str
    mx: MXResult
    spf: list[str] = field(default_factory=list)
    dmarc: list[str] = field(default_factory=list)


def _txt(resolver: Any, name: str, prefix: str) -> list[str]:
    import dns.exception
    import dns.resolver

    records: list[str] = []
    with contextlib.suppress(dns.exception.DNSException):
        answer = resolver.resolver.resolve(name, "TXT", raise_on_no_answer=False)
        for record in answer:
            text = b"".join(record.strings).decode("utf-8", "replace")
            if text.lower().startswith(prefix):
                records.append(text)
    return records


def gather(options: SenderOptions) -> SenderEvidence:
    """Ask the DNS for the sender domain's MX, then for its SPF and DMARC records."""
    from mailtalk.mail.smtp_steps import split_address
    from mailtalk.net.mx import Resolver, lookup_mx

    domain = split_address(options.sender, "--from", options.gettext)[1]
    resolver = Resolver(options.resolver, options.timeout, options.gettext)
    evidence = SenderEvidence(options.sender, lookup_mx(domain, resolver, options.gettext))
    if evidence.mx.status in ("ok", "implicit"):
        evidence.spf = _txt(resolver, evidence.mx.domain, "v=spf1")
        evidence.dmarc = _txt(resolver, f"_dmarc.{evidence.mx.domain}", "v=dmarc1")
    return evidence


RULES: tuple[Rule[SenderEvidence], ...] = (
    Rule("dns_failure", lambda e: e.mx.status in DNS_FAILED),
    Rule("sender_domain_missing", lambda e: e.mx.status in ("nxdomain", "nodata")),
    Rule("sender_null_mx", lambda e: e.mx.status == "null"),
    Rule("sender_ok", lambda e: True),
)


def evidence_lines(evidence: SenderEvidence, gettext: Callable[[str], str] = str) -> list[str]:
    _ = gettext
    mx = evidence.mx
    lines = dns_lines(mx, _)
    if mx.status in ("ok", "implicit"):
        lines.append("SPF: " + (evidence.spf[0] if evidence.spf else _("no v=spf1 record")))
        lines.append("DMARC: " + (evidence.dmarc[0] if evidence.dmarc else _("no _dmarc record")))
    return lines


def wording_values(evidence: SenderEvidence) -> dict[str, object]:
    """What the verdicts' wording (verdicts.toml, [sender]) may name."""
    return {
        "domain": evidence.mx.domain,
        "sender": evidence.sender,
        "mx_status": evidence.mx.status,
        "authenticated": bool(evidence.spf and evidence.dmarc),
        "no_spf": not evidence.spf,
        "no_dmarc": not evidence.dmarc,
        "several_spf": len(evidence.spf) > 1,
    }


def diagnose(options: SenderOptions) -> tuple[Report, ExitCode]:
    """Gather the evidence, find the first rule that holds, and word its verdict."""
    evidence = gather(options)
    facts: dict[str, object] = {"domain": evidence.mx.domain, "mx": evidence.mx.to_json()}
    if evidence.mx.status in ("ok", "implicit"):
        facts.update({"spf": evidence.spf, "dmarc": evidence.dmarc})
    return conclude(
        "sender",
        decide(RULES, evidence),
        wording_values(evidence),
        evidence_lines(evidence, options.gettext),
        facts,
        options.gettext,
    )


def run(options: SenderOptions, env: Environment) -> int:
    """``mailtalk diagnose sender``: the report, and the exit status of its verdict."""
    return run_report(lambda: diagnose(options), options, env)
