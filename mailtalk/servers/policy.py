"""qmail-style control files: whom the reference servers accept mail for, and relay for.

The files live in ``ROOT/control/`` and keep qmail's names and meaning, because the course
material behind mailtalk teaches qmail's control files:

``me``
    This host's name; the default for ``rcpthosts`` and ``locals``. Default ``localhost``
    (qmail uses the system's FQDN; a reference server should not depend on the machine).
``rcpthosts``
    Domains we accept mail for from anyone (qmail-smtpd(8)). ``.example.com`` matches every
    subdomain of example.com but not example.com itself; list both for both. Default
    ``me``. qmail accepts *every* recipient when rcpthosts is missing, i.e. runs as an open
    relay; mailtalk deliberately never does.
``locals``
    Domains delivered locally (qmail-send(8)): exact names, no wildcards. Default ``me``.
``virtualdomains``
    ``domain:prefix``, ``.suffix:prefix``, ``:prefix`` (every domain) and
    ``user@domain:prefix`` lines (qmail-send(8)). An address local@domain that matches
    becomes the local address ``prefix-local``. qmail's lookup order is kept: the exact
    address, then the exact domain, then wildcards from the longest suffix to the shortest,
    then ``:prefix``. An empty prefix (``sub.example.org:``) is an exception: that domain is
    not virtual. ``locals`` wins over ``virtualdomains``. Default: empty.
``relayclients``
    mailtalk's stand-in for the tcpserver rules that set RELAYCLIENT: one IPv4/IPv6
    address, CIDR network, or tcprules-style IPv4 prefix (``127.``, ``10.1.``) per line.
    Clients that match may relay. Default: empty, so not even loopback may relay.
``postmaster``
    mailtalk's stand-in for qmail's ``~alias/.qmail-postmaster``: the user who gets the
    mail for ``postmaster`` (RFC 5321 4.5.1: ``<postmaster>`` and ``postmaster@`` every
    domain delivered here must be accepted, whatever the case, and are never a relaying
    question). One user name. Missing or empty: a user named ``postmaster`` if there is
    one, else the first user by name; with no users at all, the Maildir of
    ``postmaster``, which a user added later as ``postmaster`` reads.

Every file: one entry per line, surrounding whitespace ignored, lines starting with ``#``
and blank lines ignored (qmail itself has no comments), matched case-insensitively. A line
that cannot be understood raises :class:`ControlError` naming the file and line.

A local address (after virtualdomains) reaches a user the way qmail-getpw(8) finds one:
the whole address if it is a user, else the longest prefix that ends before a ``-`` and is
a user, the rest being the extension that qmail would deliver via ``~user/.qmail-ext`` or
``.qmail-default``. So with ``example.org:alice``, ``info@example.org`` becomes
``alice-info``, delivered to user ``alice-info`` if there is one, else to ``alice``. The
same applies to local domains: ``alice-lists@localhost`` reaches ``alice``. Users are
found case-insensitively (user names are lower-case).
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from mailtalk.store.filesystem import make_directory

CONTROL_DIR = "control"
DEFAULT_ME = "localhost"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ControlError(Exception):
    """A control file we cannot understand; says which file and line."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class KnownUsers(Protocol):
    """What routing needs to know about users; :class:`mailtalk.servers.users.Users` is one."""

    def exists(self, name: str) -> bool: ...

    def names(self) -> list[str]: ...


POSTMASTER = "postmaster"
# A user name, as control/users has them (mailtalk.servers.users.validate_name).
_USER_NAME_RE = re.compile(r"[a-z0-9_][a-z0-9._-]{0,63}")


# Labels are word characters and hyphens so that SMTPUTF8 (U-label) domains parse too.
_DOMAIN_RE = re.compile(r"[\w-]+(?:\.[\w-]+)*")
_ADDRESS_LITERAL_RE = re.compile(r"\[[^\[\]\s\\]+\]")
# Characters that cannot appear in an unquoted local part (RFC 5321 atoms, leniently).
_BAD_LOCAL_CHARS = re.compile(r'[\s\x00-\x1f\x7f<>()\[\]\\,;:@"]')


def _is_domain(text: str) -> bool:
    return bool(_DOMAIN_RE.fullmatch(text) or _ADDRESS_LITERAL_RE.fullmatch(text))


def normalize_domain(domain: str) -> str:
    """Lower-case a domain name; ``ValueError`` if it is not one."""
    lowered = domain.strip().lower()
    if not _is_domain(lowered):
        raise ValueError(f"not a domain name: {domain!r}")
    return lowered


def split_address(address: str) -> tuple[str, str]:
    """Split a mailbox into (local part, lower-cased domain).

    Accepts the forms SMTP clients send: with or without angle brackets, with an RFC 5321
    source route (``<@relay:user@domain>``, which is ignored as the RFC says), and with a
    quoted local part (``"john doe"@example.org`` -> ``john doe``). The null path ``<>``
    gives ``("", "")``; an address without ``@`` (``postmaster``) gives an empty domain.
    Raises ``ValueError`` for anything else that is not an address.
    """
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        return "", ""
    if text.startswith("@"):
        route_end = text.find(":")
        if route_end == -1:
            raise ValueError(f"source route without ':' in {address!r}")
        text = text[route_end + 1 :]
    at = text.rfind("@")
    local, domain = (text, "") if at == -1 else (text[:at], text[at + 1 :])
    if at != -1:
        if not domain:
            raise ValueError(f"no domain after '@' in {address!r}")
        domain = domain.lower()
        if not _is_domain(domain):
            raise ValueError(f"not a domain name: {domain!r} in {address!r}")
    return _parse_local_part(local, address), domain


def _parse_local_part(local: str, address: str) -> str:
    if not local:
        raise ValueError(f"empty local part in {address!r}")
    if local.startswith('"'):
        # A quoted local part means the same mailbox as its unquoted content.
        return _unquote(local, address)
    if _BAD_LOCAL_CHARS.search(local):
        raise ValueError(f"bad character in the local part of {address!r}")
    return local


def _unquote(quoted: str, address: str) -> str:
    """The content of an RFC 5321 quoted string, backslash escapes undone."""
    content: list[str] = []
    index = 1
    while index < len(quoted):
        char = quoted[index]
        if char == "\\" and index + 1 < len(quoted):
            content.append(quoted[index + 1])
            index += 2
            continue
        if char == '"':
            break
        if ord(char) < 32 or ord(char) == 127:
            raise ValueError(f"control character in the local part of {address!r}")
        content.append(char)
        index += 1
    if index != len(quoted) - 1:
        raise ValueError(f"unbalanced quotes in the local part of {address!r}")
    if not content:
        raise ValueError(f"empty local part in {address!r}")
    return "".join(content)


def _parse_relay_rule(text: str) -> IPNetwork:
    """One relayclients entry: address, CIDR network, or tcprules IPv4 prefix ``10.1.``."""
    if "/" in text:
        # strict=False: "10.1.2.3/8" plainly means the /8 it lies in.
        return ipaddress.ip_network(text, strict=False)
    if text.endswith("."):
        octets = text[:-1].split(".")
        if not 1 <= len(octets) <= 3 or not all(o.isdigit() and int(o) <= 255 for o in octets):
            raise ValueError("not an IPv4 prefix like '127.' or '10.1.'")
        padded = [str(int(o)) for o in octets] + ["0"] * (4 - len(octets))
        return ipaddress.IPv4Network(f"{'.'.join(padded)}/{8 * len(octets)}")
    return ipaddress.ip_network(text)


# The records below are plain classes with __slots__, not dataclasses (see
# protocols.common.Line): nothing compares or prints them. They are not changed once made.


class VirtualEntry:
    """One virtualdomains line: ``key:prefix``.

    ``key`` is ``user@domain``, ``domain``, ``.suffix`` or ``""`` (any domain); an empty
    ``prefix`` says the domain is not virtual.
    """

    __slots__ = ("key", "line", "prefix")

    def __init__(self, key: str, prefix: str, line: int) -> None:
        self.key = key
        self.prefix = prefix
        self.line = line


class RouteKind(enum.Enum):
    LOCAL = "local"  # a known user's mailbox: Route.user
    UNKNOWN_USER = "unknown user"  # a local or virtual domain, but no such user
    RELAY = "relay"  # not in rcpthosts and neither local nor virtual: someone else's mail
    NOT_OURS = "not ours"  # in rcpthosts but neither local nor virtual: nowhere to deliver


class Route:
    """Where mail for an address goes.

    ``local_name`` is the local address after virtualdomains (``alice-info`` for
    ``info@example.org`` with ``example.org:alice``), empty unless the domain is local or
    virtual; ``user`` is the user it reaches (LOCAL only).
    """

    __slots__ = ("domain", "kind", "local_name", "user")

    def __init__(
        self, kind: RouteKind, domain: str, local_name: str = "", user: str | None = None
    ) -> None:
        self.kind = kind
        self.domain = domain
        self.local_name = local_name
        self.user = user

    @property
    def extension(self) -> str:
        """What follows ``user-`` in the local name (qmail's .qmail-ext), else ``""``."""
        if self.user is None or self.local_name == self.user:
            return ""
        return self.local_name[len(self.user) + 1 :]


def find_user(local_name: str, users: KnownUsers) -> str | None:
    """The user a local address reaches, qmail-getpw style (see the module docstring)."""
    candidate = local_name.lower()
    while candidate:
        if users.exists(candidate):
            return candidate
        dash = candidate.rfind("-")
        if dash <= 0:
            return None
        candidate = candidate[:dash]
    return None


class Control:
    """The parsed control files of one ROOT; see the module docstring for their meaning."""

    __slots__ = (
        "_virtual_map", "locals", "me", "postmaster", "rcpthosts", "relayclients", "root",
        "virtualdomains",
    )  # fmt: skip

    def __init__(
        self,
        root: Path,
        me: str = DEFAULT_ME,
        rcpthosts: tuple[str, ...] = (DEFAULT_ME,),
        locals: tuple[str, ...] = (DEFAULT_ME,),  # qmail's name for the file
        virtualdomains: tuple[VirtualEntry, ...] = (),
        relayclients: tuple[IPNetwork, ...] = (),
        postmaster: str = "",  # control/postmaster: who gets postmaster's mail; "": the default
    ) -> None:
        self.root = root
        self.me = me
        self.rcpthosts = rcpthosts
        self.locals = locals
        self.virtualdomains = virtualdomains
        self.relayclients = relayclients
        self.postmaster = postmaster
        # load() refuses duplicate keys; for a Control built by hand the first one wins.
        self._virtual_map: dict[str, VirtualEntry] = {}
        for entry in virtualdomains:
            self._virtual_map.setdefault(entry.key, entry)

    @property
    def control_dir(self) -> Path:
        return self.root / CONTROL_DIR

    @classmethod
    def load(cls, root: Path) -> Control:
        """Read ``ROOT/control/``; missing files take their defaults."""
        control_dir = Path(root) / CONTROL_DIR
        me_lines = _read_entries(control_dir / "me")
        if len(me_lines) > 1:
            raise ControlError(
                control_dir / "me", me_lines[1][0], "more than one host name; 'me' has one"
            )
        me = _parse_domain_line(control_dir / "me", *me_lines[0]) if me_lines else DEFAULT_ME
        rcpthosts = _read_domains(control_dir / "rcpthosts", wildcards=True, default=me)
        locals_ = _read_domains(control_dir / "locals", wildcards=False, default=me)
        return cls(
            root=Path(root),
            me=me,
            rcpthosts=rcpthosts,
            locals=locals_,
            virtualdomains=_read_virtualdomains(control_dir / "virtualdomains"),
            relayclients=_read_relayclients(control_dir / "relayclients"),
            postmaster=_read_postmaster(control_dir / "postmaster"),
        )

    def accepts_domain(self, domain: str) -> bool:
        """Is ``domain`` in rcpthosts (exactly, or under a ``.suffix`` entry)?"""
        domain = domain.lower()
        return any(key in self.rcpthosts for key in _domain_and_dot_suffixes(domain))

    def is_local_domain(self, domain: str) -> bool:
        """Is ``domain`` in locals? Exact names only, as in qmail."""
        return domain.lower() in self.locals

    def virtual_prefix(self, local: str, domain: str) -> str | None:
        """The virtualdomains prefix for local@domain, or None when it is not virtual."""
        domain = domain.lower()
        keys = [f"{local.lower()}@{domain}", *_domain_and_dot_suffixes(domain), ""]
        for key in keys:
            entry = self._virtual_map.get(key)
            if entry is not None:
                return entry.prefix or None
        return None

    def client_may_relay(self, ip: str) -> bool:
        """Does relayclients let the client at ``ip`` relay?"""
        try:
            address = ipaddress.ip_address(ip.strip().strip("[]").split("%", 1)[0])
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
        # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; IPv4 rules apply.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.relayclients
        )

    def postmaster_mailbox(self, users: KnownUsers) -> str:
        """The user whose Maildir gets postmaster's mail (see ``postmaster`` above)."""
        if self.postmaster:
            return find_user(self.postmaster, users) or self.postmaster
        if users.exists(POSTMASTER):
            return POSTMASTER
        names = sorted(users.names())
        return names[0] if names else POSTMASTER

    def is_postmaster(self, local: str, domain: str) -> bool:
        """Is local@domain the postmaster of a domain delivered here (or ``<postmaster>``)?"""
        if local.lower() != POSTMASTER:
            return False
        return (
            not domain
            or self.is_local_domain(domain)
            or self.virtual_prefix(local, domain) is not None
        )

    def route(self, address: str, users: KnownUsers) -> Route:
        """Where mail for ``address`` goes. An address without a domain is at ``me``.

        ``postmaster`` (any case) at a local or virtual domain, or with no domain, always
        reaches a mailbox (RFC 5321 4.5.1): a virtual domain's as qmail maps it when that
        reaches a user, else :meth:`postmaster_mailbox`.

        Raises ``ValueError`` for an unparseable or null address.
        """
        local, domain = split_address(address)
        if not local:
            raise ValueError("the null address <> is no recipient")
        postmaster = self.is_postmaster(local, domain)
        domain = domain or self.me
        if self.is_local_domain(domain) or (postmaster and not self.virtual_prefix(local, domain)):
            local_name = local.lower()
            if postmaster:
                return Route(RouteKind.LOCAL, domain, local_name, self.postmaster_mailbox(users))
        else:
            prefix = self.virtual_prefix(local, domain)
            if prefix is None:
                kind = RouteKind.NOT_OURS if self.accepts_domain(domain) else RouteKind.RELAY
                return Route(kind, domain)
            local_name = f"{prefix}-{local}".lower()
        user = find_user(local_name, users)
        if user is None and postmaster:
            user = self.postmaster_mailbox(users)
        if user is None:
            return Route(RouteKind.UNKNOWN_USER, domain, local_name)
        return Route(RouteKind.LOCAL, domain, local_name, user)


def _domain_and_dot_suffixes(domain: str) -> Iterator[str]:
    """``a.b.c`` -> ``a.b.c``, ``.b.c``, ``.c``: the keys qmail looks a domain up by."""
    yield domain
    for index, char in enumerate(domain):
        if char == ".":
            yield domain[index:]


# --- reading the files -----------------------------------------------------------------


def _read_entries(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank, non-comment lines; [] if there is no file."""
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as error:
        raise ControlError(path, None, f"not UTF-8 text ({error.reason})") from None
    entries = []
    for number, raw in enumerate(content.splitlines(), start=1):
        text = raw.strip()
        if text and not text.startswith("#"):
            entries.append((number, text))
    return entries


def _parse_domain_line(path: Path, number: int, text: str, wildcards: bool = False) -> str:
    lowered = text.lower()
    name = lowered[1:] if wildcards and lowered.startswith(".") else lowered
    if not _is_domain(name):
        hint = " (comments go on their own line)" if "#" in text else ""
        raise ControlError(path, number, f"not a domain name: {text!r}{hint}")
    return lowered


def _read_domains(path: Path, *, wildcards: bool, default: str) -> tuple[str, ...]:
    if not path.exists():
        return (default,)
    entries = _read_entries(path)
    return tuple(_parse_domain_line(path, number, text, wildcards) for number, text in entries)


def _read_virtualdomains(path: Path) -> tuple[VirtualEntry, ...]:
    entries: list[VirtualEntry] = []
    seen: dict[str, int] = {}
    for number, text in _read_entries(path):
        key, colon, prefix = text.partition(":")
        if not colon:
            raise ControlError(path, number, f"expected domain:prefix, got {text!r}")
        key, prefix = key.lower(), prefix.lower()
        if "@" in key:
            local, _, domain = key.rpartition("@")
            if not local or _BAD_LOCAL_CHARS.search(local) or not _is_domain(domain):
                raise ControlError(path, number, f"not an address user@domain: {key!r}")
        elif key:
            name = key[1:] if key.startswith(".") else key
            if not _is_domain(name):
                raise ControlError(path, number, f"not a domain name: {key!r}")
        if prefix and (_BAD_LOCAL_CHARS.search(prefix) or prefix.startswith("-")):
            raise ControlError(path, number, f"not a local-name prefix: {prefix!r}")
        if key in seen:
            shown = key or "(every domain)"
            raise ControlError(path, number, f"{shown} is already on line {seen[key]}")
        seen[key] = number
        entries.append(VirtualEntry(key, prefix, number))
    return tuple(entries)


def _read_postmaster(path: Path) -> str:
    entries = _read_entries(path)
    if not entries:
        return ""
    if len(entries) > 1:
        raise ControlError(path, entries[1][0], "more than one user; postmaster's mail goes to one")
    number, text = entries[0]
    name = text.lower()
    if not _USER_NAME_RE.fullmatch(name):
        raise ControlError(path, number, f"not a user name: {text!r}")
    return name


def _read_relayclients(path: Path) -> tuple[IPNetwork, ...]:
    networks = []
    for number, text in _read_entries(path):
        try:
            networks.append(_parse_relay_rule(text))
        except ValueError:
            raise ControlError(
                path,
                number,
                f"expected an IP address, a CIDR network (10.0.0.0/8, fd00::/8) "
                f"or an IPv4 prefix like '127.'; got {text!r}",
            ) from None
    return tuple(networks)


# --- creating a ROOT -------------------------------------------------------------------

_RCPTHOSTS_HEADER = """\
# Domains this server accepts mail for, from anyone (qmail's control/rcpthosts).
# One per line; '.example.com' matches every subdomain of example.com.
"""
_LOCALS_HEADER = """\
# Domains whose mail is delivered to the users in control/users (qmail's control/locals).
"""
_RELAYCLIENTS_TEXT = """\
# Clients allowed to relay (mail to domains not in rcpthosts), like tcprules entries
# that set RELAYCLIENT. One per line: an IP address (192.0.2.7, ::1), a CIDR network
# (10.0.0.0/8, fd00::/8) or an IPv4 prefix as in tcprules ('127.' is 127.0.0.0/8).
# Empty: only authenticated sessions may relay; even loopback may not.
"""
_POSTMASTER_TEXT = """\
# The user who gets the mail for postmaster (RCPT TO:<postmaster>, and postmaster@
# every domain in locals or virtualdomains, in any case), like qmail's
# ~alias/.qmail-postmaster. One user name. Empty: a user named postmaster if there
# is one, else the first user by name.
"""


def init_root(
    root: Path,
    domains: Iterable[str],
    me: str = DEFAULT_ME,
    *,
    hostname: str | None = None,
    changes: list[str] | None = None,
) -> Control:
    """Create ``ROOT/control/`` (me, rcpthosts, locals, relayclients, postmaster), load it.

    A new root's rcpthosts and locals list ``localhost``, ``me`` and ``domains``. A file
    that exists is kept as the user left it, except for what was asked for by name:
    each of ``domains`` is added to rcpthosts and to locals when they do not cover it
    yet, and ``hostname`` (``--hostname``) replaces ``me`` and is added the same way.
    So ``--domain`` means the same on a root made earlier as on a new one. Each edit is
    described in ``changes``. ``ValueError`` for a name that is not a domain.
    """
    wanted = _unique(normalize_domain(d) for d in domains)
    explicit = normalize_domain(hostname) if hostname else None
    me = explicit or normalize_domain(me)
    names = _unique(["localhost", me, *wanted])
    listing = "".join(f"{name}\n" for name in names)
    control_dir = Path(root) / CONTROL_DIR
    make_directory(control_dir)  # 0700 whatever the umask: control/users holds hashes
    _create_missing(
        {
            control_dir / "me": f"{me}\n",
            control_dir / "rcpthosts": _RCPTHOSTS_HEADER + listing,
            control_dir / "locals": _LOCALS_HEADER + listing,
            control_dir / "relayclients": _RELAYCLIENTS_TEXT,
            control_dir / "postmaster": _POSTMASTER_TEXT,
        }
    )
    control = Control.load(Path(root))
    edits: list[str] = []
    if explicit is not None and control.me != explicit:
        _replace_file(control_dir / "me", f"{explicit}\n")
        edits.append(f"control/me: {explicit} (was {control.me})")
    if explicit is not None:
        wanted = _unique([explicit, *wanted])
    for filename, covered in (
        ("rcpthosts", control.accepts_domain),
        ("locals", control.is_local_domain),
    ):
        missing = [name for name in wanted if not covered(name)]
        if missing:
            _append_lines(control_dir / filename, missing)
            edits.append(f"control/{filename}: added {', '.join(missing)}")
    if changes is not None:
        changes.extend(edits)
    return Control.load(Path(root)) if edits else control


def _append_lines(path: Path, lines: list[str]) -> None:
    """Add ``lines`` at the end of ``path``, keeping everything that is there."""
    content = path.read_text(encoding="utf-8")
    if content and not content.endswith("\n"):
        content += "\n"
    _replace_file(path, content + "".join(f"{line}\n" for line in lines))


def _replace_file(path: Path, content: str) -> None:
    """Write ``path`` atomically (temporary file, fsync, rename), keeping its mode."""
    import tempfile  # here: a start on a root made before writes nothing

    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _create_missing(files: Mapping[Path, str]) -> None:
    """Write each of ``files`` that does not exist, atomically, even if another process
    races us: each is written and fsynced under a temporary name, then linked to its own.

    The fsyncs run at once, in threads: the filesystem's journal commits them together,
    so a new root's five files cost about one fsync's time instead of five (a test
    suite makes a new root for every server it starts).
    """
    missing = {path: content for path, content in files.items() if not path.exists()}
    if not missing:
        return
    import tempfile  # here: a start on a root made before writes nothing
    from concurrent.futures import ThreadPoolExecutor

    written: list[tuple[Path, str, int]] = []
    try:
        for path, content in missing.items():
            descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            written.append((path, temporary, descriptor))
            with os.fdopen(descriptor, "w", encoding="utf-8", closefd=False) as stream:
                stream.write(content)
            os.fchmod(descriptor, 0o644)
        with ThreadPoolExecutor(len(written)) as pool:
            list(pool.map(os.fsync, [descriptor for _, _, descriptor in written]))
        for path, temporary, _ in written:
            # link() fails if the name exists, unlike rename(): no window to clobber edits.
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
    finally:
        for _, temporary, descriptor in written:
            os.close(descriptor)
            os.unlink(temporary)


# --- the RCPT decision -----------------------------------------------------------------


class RcptVerdict(enum.Enum):
    """What to do with one RCPT TO; the SMTP server maps each to a reply."""

    DELIVER = "deliver"  # 250: to the local user RcptDecision.user
    RELAY = "relay"  # 250: someone else's mail, from a relay client or an authenticated one
    UNKNOWN_USER = "unknown user"  # 550 5.1.1: our domain, no such mailbox
    RELAY_DENIED = "relay denied"  # 553 5.7.1 (qmail's "not in my list of allowed rcpthosts")
    BAD_ADDRESS = "bad address"  # 553 5.1.3: not a mailbox at all


class RcptDecision:
    """What to do with one RCPT TO, and why."""

    __slots__ = ("address", "domain", "reason", "user", "verdict")

    def __init__(
        self,
        verdict: RcptVerdict,
        address: str,
        user: str | None = None,  # DELIVER only
        domain: str = "",
        reason: str = "",  # a human sentence for the reply text
    ) -> None:
        self.verdict = verdict
        self.address = address
        self.user = user
        self.domain = domain
        self.reason = reason


def decide_rcpt(
    control: Control,
    users: KnownUsers,
    address: str,
    client_ip: str,
    authenticated: bool,
) -> RcptDecision:
    """Decide a RCPT TO as qmail-smtpd plus local delivery would.

    Domain not in rcpthosts: relaying, allowed for a relayclients client or an
    authenticated session, else RELAY_DENIED (even for a local domain, like qmail-smtpd).
    Otherwise the address must reach a known user of a local or virtual domain, else
    UNKNOWN_USER, also for an rcpthosts domain that is neither local nor virtual (qmail
    would queue that for remote delivery; the reference servers have no mailbox for it).
    An address without a domain is at ``me`` and, as in qmail-smtpd, skips the rcpthosts
    check; so does ``postmaster`` at a local or virtual domain (RFC 5321 4.5.1).
    """
    try:
        local, domain = split_address(address)
    except ValueError as error:
        return RcptDecision(RcptVerdict.BAD_ADDRESS, address, reason=str(error))
    if not local:
        return RcptDecision(RcptVerdict.BAD_ADDRESS, address, reason="<> is no recipient")
    ours = not domain or control.accepts_domain(domain) or control.is_postmaster(local, domain)
    # Whether the client may relay matters only for a domain not ours (an IP parsed
    # and matched a RCPT, for nothing, was most of this function's time).
    if not ours and not (authenticated or control.client_may_relay(client_ip)):
        return RcptDecision(
            RcptVerdict.RELAY_DENIED,
            address,
            domain=domain,
            reason=f"{domain} is not in my list of allowed rcpthosts; relaying denied",
        )
    route = control.route(address, users)
    if route.kind is RouteKind.LOCAL:
        return RcptDecision(RcptVerdict.DELIVER, address, route.user, route.domain)
    if route.kind is RouteKind.RELAY:
        return RcptDecision(RcptVerdict.RELAY, address, domain=route.domain)
    reason = (
        f"no mailbox {route.local_name} here"
        if route.kind is RouteKind.UNKNOWN_USER
        else f"{route.domain} has no mailboxes here"
    )
    return RcptDecision(RcptVerdict.UNKNOWN_USER, address, domain=route.domain, reason=reason)
