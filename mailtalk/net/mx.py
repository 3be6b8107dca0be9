"""Where mail for a domain goes: its MX records, as an MTA reads them (RFC 5321 5.1).

MX records sorted by preference, each host's A/AAAA addresses; no MX but an A or
AAAA record means the domain itself is the MX (the implicit MX); a single MX of
"." is a null MX (RFC 7505): the domain takes no mail. NXDOMAIN, SERVFAIL and
timeouts are reported as such, with a sentence a user can act on.

Used by ``mailtalk mx``, ``mailtalk send``, ``mailtalk diagnose`` and the reference
server's onward delivery. dnspython is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import dns.resolver

Status = Literal["ok", "implicit", "null", "nxdomain", "nodata", "servfail", "timeout"]


@dataclass(frozen=True)
class MXHost:
    preference: int
    host: str  # without the final dot
    addresses: tuple[str, ...] = ()
    error: str | None = None  # why it has no addresses, if it has none


@dataclass(frozen=True)
class MXResult:
    """What DNS says about mail for ``domain``.

    ``status``: "ok" (MX records), "implicit" (no MX, the domain's own A/AAAA),
    "null" (RFC 7505), "nxdomain", "nodata" (the domain exists with neither MX nor
    A/AAAA), "servfail" or "timeout". ``hosts`` in the order to try them.
    """

    domain: str
    status: Status
    hosts: tuple[MXHost, ...] = ()
    message: str = ""
    resolver: str = "system"

    @property
    def deliverable(self) -> bool:
        return self.status in ("ok", "implicit") and any(h.addresses for h in self.hosts)

    def to_json(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "status": self.status,
            "message": self.message,
            "resolver": self.resolver,
            "hosts": [
                {
                    "preference": h.preference,
                    "host": h.host,
                    "addresses": list(h.addresses),
                    "error": h.error,
                }
                for h in self.hosts
            ],
        }


@dataclass
class Resolver:
    """A dnspython resolver: the system's, or ``HOST[:PORT]`` (``--resolver``)."""

    spec: str | None = None
    timeout: float = 5.0
    gettext: Callable[[str], str] = str  # the language of its errors
    _resolver: dns.resolver.Resolver | None = field(default=None, repr=False)

    @property
    def resolver(self) -> dns.resolver.Resolver:
        if self._resolver is None:
            from mailtalk.net.dns import make_resolver

            self._resolver = make_resolver(_numeric(self.spec, self.gettext), self.timeout)
        return self._resolver

    @property
    def name(self) -> str:
        return self.spec or "system"


def _numeric(spec: str | None, _: Callable[[str], str] = str) -> str | None:
    """``HOST[:PORT]`` with HOST as an address: dnspython asks IP addresses only, and
    ``--resolver localhost:5353`` is what people type. Raises ValueError if HOST has none."""
    if spec is None:
        return None
    import ipaddress
    import socket

    from mailtalk.net.target import split_host_port

    host, port = split_host_port(spec, 53)
    try:
        ipaddress.ip_address(host)
        return spec
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        raise ValueError(_("cannot find the address of {host}").format(host=host)) from None
    address = str(found[0][4][0])
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def ascii_domain(domain: str, gettext: Callable[[str], str] = str) -> str:
    """The domain as DNS asks for it: IDNA (punycode) for international names.

    Raises ValueError with a readable message (in the language of ``gettext``) for a
    name that is not a domain.
    """
    _ = gettext
    name = domain.strip().rstrip(".")
    if not name or " " in name or name.startswith(".") or ".." in name:
        raise ValueError(_("{domain} is not a domain name").format(domain=repr(domain)))
    if name.startswith("[") and name.endswith("]"):
        return name  # an address literal (user@[192.0.2.1]): no DNS name to encode
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as error:
        raise ValueError(_("{domain} is not a valid international domain name: {error}")
                         .format(domain=repr(domain), error=error)) from None
    if len(ascii_name) > 253:
        raise ValueError(_("{domain} is too long for a domain name (253 characters at most)")
                         .format(domain=repr(domain)))
    for label in ascii_name.split("."):
        problem = _label_problem(label, _)
        if problem:
            raise ValueError(_("{domain} is not a domain name: {problem}").format(
                domain=repr(domain), problem=problem))
    return ascii_name


def _label_problem(label: str, _: Callable[[str], str]) -> str | None:
    """Why ``label`` (ASCII, lower case) cannot be part of a mail domain (RFC 5321
    4.1.2: letters, digits, hyphens inside), or None. Punycode labels must decode,
    and not to a word starting with a combining mark (RFC 5891 4.2.3.2)."""
    import re
    import unicodedata

    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", label):
        return _("{label} is not a valid label (letters, digits and inner hyphens only)").format(
            label=repr(label))
    if label.startswith("xn--"):
        try:
            word = label.encode("ascii").decode("idna")
        except UnicodeError:
            return _("{label} is not valid punycode").format(label=repr(label))
        if not word or unicodedata.category(word[0]).startswith("M"):
            return _("{label} starts with a combining mark").format(label=repr(label))
    return None


def host_addresses(
    resolver: dns.resolver.Resolver, host: str, gettext: Callable[[str], str] = str
) -> tuple[tuple[str, ...], str | None]:
    """``host``'s A and AAAA addresses, and why there are none when there are none (in
    the language of ``gettext``)."""
    import dns.exception
    import dns.resolver

    _ = gettext
    found: list[str] = []
    error = None
    for record_type in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, record_type, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return (), _("{host} does not exist (NXDOMAIN)").format(host=host)
        except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
            error = _("no answer for {host} {type} (timeout)").format(host=host, type=record_type)
            continue
        except dns.resolver.NoNameservers:
            error = _("SERVFAIL for {host} {type}").format(host=host, type=record_type)
            continue
        found += [record.to_text() for record in answer]
    if not found and error is None:
        error = _("{host} has no A or AAAA record").format(host=host)
    return tuple(found), error if not found else None


def _refused(error: dns.resolver.NoNameservers) -> bool:
    """Every server that answered said REFUSED (not served here), none SERVFAIL."""
    errors = error.kwargs.get("errors") or []
    return bool(errors) and all(str(item[3]) == "REFUSED" for item in errors)


def lookup_mx(
    domain: str, resolver: Resolver | None = None, gettext: Callable[[str], str] = str
) -> MXResult:
    """The MX picture of ``domain``; never raises for DNS trouble (it is the answer).
    Its message is in the language of ``gettext`` (a job's: send, diagnose)."""
    import dns.exception
    import dns.resolver

    _ = gettext
    resolver = resolver or Resolver()
    name = ascii_domain(domain)
    dns_resolver = resolver.resolver
    where = resolver.spec or _("system")  # said in a sentence: "the resolver {where}"
    try:
        answer = dns_resolver.resolve(name, "MX", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return MXResult(
            name,
            "nxdomain",
            (),
            _("{name} does not exist (NXDOMAIN): check the spelling of the domain after the @")
            .format(name=name),
            resolver.name,
        )
    except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
        return MXResult(
            name,
            "timeout",
            (),
            _("the resolver {where} did not answer within {limit} s: is it running and "
              "reachable? (--resolver)").format(where=where, limit=f"{resolver.timeout:g}"),
            resolver.name,
        )
    except dns.resolver.NoNameservers as failure:
        if _refused(failure):
            return MXResult(
                name,
                "servfail",
                (),
                _("the resolver {where} refused to answer for {name} (REFUSED): it does not "
                  "serve that name, or not to you (mailtalk serve --dns answers only for the "
                  "zones under ROOT/dns/)").format(where=where, name=name),
                resolver.name,
            )
        return MXResult(
            name,
            "servfail",
            (),
            _("the DNS could not answer for {name} (SERVFAIL): its name servers are broken or "
              "unreachable; an MTA would retry later").format(name=name),
            resolver.name,
        )
    records = sorted(
        ((int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in answer),
        key=lambda item: (item[0], item[1]),
    )
    if len(records) == 1 and records[0][1] in ("", "."):
        return MXResult(
            name,
            "null",
            (MXHost(records[0][0], "."),),
            _("{name} publishes a null MX (RFC 7505): it accepts no mail at all").format(
                name=name),
            resolver.name,
        )
    if not records:
        addresses, error = host_addresses(dns_resolver, name, _)
        if addresses:
            return MXResult(
                name,
                "implicit",
                (MXHost(0, name, addresses),),
                _("{name} has no MX record; mail goes to the domain's own address (the "
                  "implicit MX, RFC 5321 5.1)").format(name=name),
                resolver.name,
            )
        return MXResult(
            name,
            "nodata",
            (),
            _("{name} exists but has neither MX nor A/AAAA records: it cannot receive mail")
            .format(name=name),
            resolver.name,
        )
    hosts = []
    for preference, host in records:
        addresses, error = host_addresses(dns_resolver, host, _)
        hosts.append(MXHost(preference, host, addresses, error))
    said = _("{name} has {count} MX record" if len(hosts) == 1 else "{name} has {count} MX records")
    return MXResult(
        name, "ok", tuple(hosts), said.format(name=name, count=len(hosts)), resolver.name
    )
