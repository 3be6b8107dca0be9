"""``mailtalk diagnose sender``: would servers accept this MAIL FROM address?

MTAs refuse senders whose domain cannot receive mail, since bounces could never
reach them (Sendmail's "501 ... Sender domain must exist", Postfix's
reject_unknown_sender_domain): the domain needs MX records or an address (the
implicit MX), and no null MX (RFC 7505, X.7.27). Receivers also look for SPF
(RFC 7208) and DMARC records; their absence is no refusal on its own but costs
reputation.
"""

from __future__ import annotations

import contextlib
from typing import Any

from mailtalk.exitcodes import ExitCode
from mailtalk.mail.diagnose import Report


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


def diagnose(options: dict[str, Any]) -> tuple[Report, ExitCode]:
    from mailtalk.mail.send import split_address
    from mailtalk.net.mx import Resolver, lookup_mx

    sender = options["sender"]
    domain = split_address(sender, "--from")[1]
    resolver = Resolver(options.get("resolver"), float(options.get("timeout") or 5.0))
    mx = lookup_mx(domain, resolver)
    evidence = [f"DNS ({mx.resolver}): {mx.message}"]
    for host in mx.hosts:
        evidence.append(f"  MX {host.preference} {host.host} {' '.join(host.addresses)}".rstrip())
    facts: dict[str, object] = {"domain": mx.domain, "mx": mx.to_json()}
    if mx.status in ("timeout", "servfail"):
        return Report(
            "sender",
            "dns_failure",
            f"the DNS did not answer for {mx.domain}: servers checking the sender would answer "
            'with a temporary 4xx ("Domain not found" or "Cannot check the domain") and '
            "the sending MTA would retry.",
            evidence,
            ["Retry later; if it lasts, the domain's name servers are broken."],
            ["Check the domain's name servers answer (dig @NS domain MX)."],
            facts=facts,
        ), ExitCode.CONNECT
    if mx.status in ("nxdomain", "nodata"):
        return Report(
            "sender",
            "sender_domain_missing",
            f"{mx.domain} has neither MX nor A/AAAA records, so servers that check senders "
            f'refuse MAIL FROM:<{sender}> ("501 ... Sender domain must exist", "450 4.1.8 '
            'Sender address rejected: Domain not found", "553 5.1.8").',
            evidence,
            [
                "Use a sender address in a domain that exists; a made-up domain such as "
                "me@test is the classic cause."
            ],
            [f"Publish MX (or A) records for {mx.domain} if it should send mail."],
            facts=facts,
        ), ExitCode.FAILED
    if mx.status == "null":
        return Report(
            "sender",
            "sender_null_mx",
            f"{mx.domain} publishes a null MX (RFC 7505): it declares it receives no mail, so "
            'servers refuse it as a sender ("550 5.7.27 Sender address has null MX").',
            evidence,
            ["Send from an address in a domain that receives mail."],
            [f"Remove the null MX of {mx.domain} if the domain sends mail."],
            facts=facts,
        ), ExitCode.FAILED
    spf = _txt(resolver, mx.domain, "v=spf1")
    dmarc = _txt(resolver, f"_dmarc.{mx.domain}", "v=dmarc1")
    facts.update({"spf": spf, "dmarc": dmarc})
    evidence.append("SPF: " + (spf[0] if spf else "no v=spf1 record"))
    evidence.append("DMARC: " + (dmarc[0] if dmarc else "no _dmarc record"))
    admin = []
    if not spf:
        admin.append(
            f"Publish an SPF record for {mx.domain} listing the servers that send its "
            'mail ("v=spf1 mx -all" or similar); big receivers refuse or junk '
            "unauthenticated mail (Gmail: 5.7.26)."
        )
    if not dmarc:
        admin.append(
            f"Publish a DMARC record at _dmarc.{mx.domain} once SPF and DKIM are in place."
        )
    if len(spf) > 1:
        admin.append("More than one SPF record is a permanent error (RFC 7208 4.5): merge them.")
    how = "its MX records" if mx.status == "ok" else "its own address (the implicit MX)"
    return Report(
        "sender",
        "sender_ok",
        f"{mx.domain} can receive mail ({how}), so no server refuses <{sender}> for an "
        "unknown sender domain"
        + ("." if spf and dmarc else "; sender authentication records are missing, see below."),
        evidence,
        [],
        admin,
        facts=facts,
    ), ExitCode.OK


def run_diagnose_sender(**options: Any) -> int:
    from mailtalk.mail.diagnose import run_report

    return run_report(
        lambda: diagnose(options), bool(options.get("as_json")), bool(options.get("brief"))
    )
