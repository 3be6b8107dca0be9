"""Does a sender's domain exist? The check behind ``501 5.1.8 Sender domain must exist``.

RFC 5321 5.1: a domain can receive mail if it has MX records, or else an A or
AAAA record (the implicit MX). A domain with neither cannot take bounces, so
MTAs refuse it as a sender. Answers are "ok", "missing" (NXDOMAIN, or no MX, A
or AAAA) or "tempfail" (the DNS did not answer: try again later, 4xx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import dns.resolver

Verdict = Literal["ok", "missing", "tempfail"]


def make_resolver(resolver: str | None, timeout: float = 5.0) -> dns.resolver.Resolver:
    """A dnspython resolver: the system's, or HOST[:PORT] from --resolver."""
    import dns.resolver

    if resolver is None:
        result = dns.resolver.Resolver()
    else:
        from mailtalk.net.target import split_host_port

        host, port = split_host_port(resolver, 53)
        result = dns.resolver.Resolver(configure=False)
        result.nameservers = [host]
        result.port = port
    result.lifetime = timeout
    return result


def domain_exists(domain: str, resolver: str | None = None) -> Verdict:
    import dns.exception
    import dns.resolver

    if not domain or domain.startswith("["):
        # An address literal (user@[192.0.2.1]) names no domain to look up.
        return "ok" if domain else "missing"
    dns_resolver = make_resolver(resolver)
    for record_type in ("MX", "A", "AAAA"):
        try:
            answer = dns_resolver.resolve(domain, record_type, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return "missing"
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout):
            return "tempfail"
        except dns.exception.DNSException:
            return "tempfail"
        if answer.rrset is not None and len(answer.rrset) > 0:
            return "ok"
    return "missing"
