"""The map of a running practice world: who plays MUA, MTA and MDA, where, on which ports.

A world writes its map to ``ROOT/world.json`` when it has started (atomically: a reader
never sees half of it), with the process id of the world; ``mailtalk practice --status``
reads it back, and the text below is what ``mailtalk practice`` prints before its prompt.
Stdlib only, and cheap to import: ``--status`` must not start anything.

The JSON (``WorldMap.as_json``, ``"version": 1``)::

    {"version": 1, "root": "...", "pid": 1234, "kept": false, "started": "2026-...Z",
     "block": "127.77.5" or null (every host on 127.0.0.1), "cafile": "...",
     "journal": "...", "log": "...", "dns_records": "...",
     "repl": {"host": "mx.example.net", "service": "smtp"},
     "roles": {"MUA": ["you: ..."], "MTA": [host names], "MDA": [...], "DNS": [...]},
     "hosts": [{"name", "roles", "about", "address", "ports": {"smtp": 25, ...},
                "domains", "root"}],
     "accounts": [{"address", "login", "password", "host", "mine"}]}

Passwords are the practice accounts' own, there to be typed; the file is 0600.
"""

from __future__ import annotations

import json
import os
import shlex
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

VERSION: Final = 1
MAP_FILE: Final = "world.json"
# The order services are shown in, with how TLS starts on each.
SERVICE_ORDER: Final = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps", "dns")
MTA_SERVICES: Final = ("smtp", "submission", "smtps")
MDA_SERVICES: Final = ("pop3", "pop3s", "imap", "imaps")
WIDTH: Final = 80
MUA: Final = "you: this prompt, telnet, nc or your mail program"


class MapError(ValueError):
    """A world.json that cannot be read; one line."""


@dataclass(frozen=True)
class MapHost:
    name: str
    roles: tuple[str, ...]
    about: str
    address: str
    ports: Mapping[str, int]
    domains: tuple[str, ...] = ()
    root: str = ""


@dataclass(frozen=True)
class MapAccount:
    address: str
    login: str
    password: str
    host: str
    mine: bool = False


@dataclass(frozen=True)
class WorldMap:
    root: str
    pid: int
    hosts: tuple[MapHost, ...]
    accounts: tuple[MapAccount, ...]
    cafile: str
    journal: str
    log: str
    dns_records: str
    repl_host: str
    repl_service: str
    block: str | None = None
    kept: bool = False
    started: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown keys, kept as read

    def host(self, name: str) -> MapHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def with_role(self, role: str) -> list[MapHost]:
        return [host for host in self.hosts if role in host.roles]

    @property
    def dns(self) -> MapHost:
        return next(host for host in self.hosts if "dns" in host.ports)

    @property
    def resolver(self) -> str:
        """``ADDRESS:PORT`` of the world's DNS, as ``--resolver`` takes it."""
        return f"{self.dns.address}:{self.dns.ports['dns']}"

    def as_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "version": VERSION,
            "root": self.root,
            "pid": self.pid,
            "kept": self.kept,
            "started": self.started,
            "block": self.block,
            "cafile": self.cafile,
            "journal": self.journal,
            "log": self.log,
            "dns_records": self.dns_records,
            "repl": {"host": self.repl_host, "service": self.repl_service},
            "roles": {
                "MUA": [MUA],
                **{role: [h.name for h in self.with_role(role)] for role in ("MTA", "MDA", "DNS")},
            },
            "hosts": [
                {
                    "name": h.name,
                    "roles": list(h.roles),
                    "about": h.about,
                    "address": h.address,
                    "ports": dict(h.ports),
                    "domains": list(h.domains),
                    "root": h.root,
                }
                for h in self.hosts
            ],
            "accounts": [
                {
                    "address": a.address,
                    "login": a.login,
                    "password": a.password,
                    "host": a.host,
                    "mine": a.mine,
                }
                for a in self.accounts
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorldMap:
        try:
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, not {VERSION}")
            known = {
                "version",
                "root",
                "pid",
                "kept",
                "started",
                "block",
                "cafile",
                "journal",
                "log",
                "dns_records",
                "repl",
                "roles",
                "hosts",
                "accounts",
            }
            return cls(
                root=str(data["root"]),
                pid=int(data["pid"]),
                kept=bool(data.get("kept", False)),
                started=str(data.get("started", "")),
                block=data.get("block"),
                cafile=str(data["cafile"]),
                journal=str(data["journal"]),
                log=str(data["log"]),
                dns_records=str(data["dns_records"]),
                repl_host=str(data["repl"]["host"]),
                repl_service=str(data["repl"]["service"]),
                hosts=tuple(_host(h) for h in data["hosts"]),
                accounts=tuple(_account(a) for a in data["accounts"]),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MapError(f"not a world map: {error}") from None


def _host(h: Mapping[str, Any]) -> MapHost:
    return MapHost(
        name=str(h["name"]),
        roles=tuple(str(role) for role in h["roles"]),
        about=str(h.get("about", "")),
        address=str(h["address"]),
        ports={str(service): int(port) for service, port in h["ports"].items()},
        domains=tuple(str(domain) for domain in h.get("domains", ())),
        root=str(h.get("root", "")),
    )


def _account(a: Mapping[str, Any]) -> MapAccount:
    return MapAccount(
        address=str(a["address"]),
        login=str(a["login"]),
        password=str(a["password"]),
        host=str(a["host"]),
        mine=bool(a.get("mine", False)),
    )


def read_map(path: Path) -> WorldMap | None:
    """The map in ``path`` (ROOT/world.json); None if there is none; MapError if bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as error:
        raise MapError(f"{path}: cannot read it: {error}") from None
    try:
        return WorldMap.from_json(json.loads(text))
    except ValueError as error:  # MapError too
        raise MapError(f"{path}: {error}") from None


def write_map(path: Path, world_map: WorldMap) -> None:
    """Write ``path`` whole or not at all, mode 0600 (the store's durable replace)."""
    from mailtalk.store.filesystem import replace_file

    data = json.dumps(world_map.as_json(), indent=2) + "\n"
    replace_file(path, data.encode("utf-8"), path.with_name(f".{path.name}.{os.getpid()}.tmp"))


# -- the map as text ------------------------------------------------------------------


def ports_text(ports: Mapping[str, int], services: Sequence[str]) -> list[str]:
    """``smtp 25``, ``submission 587``... for the services of ``services`` it has."""
    return [f"{name} {ports[name]}" for name in SERVICE_ORDER if name in services and name in ports]


def _wrap(items: Sequence[str], first: str, indent: int, width: int) -> list[str]:
    """``first`` then the items, two spaces apart, wrapped under the first item."""
    lines = []
    line = first
    for item in items:
        gap = "" if len(line) == indent else "  "
        if len(line) + len(gap) + len(item) > width and len(line) > indent:
            lines.append(line)
            line, gap = " " * indent, ""
        line += gap + item
    lines.append(line)
    return lines


def home_path(path: str, home: str | None = None) -> str:
    """``path`` for a shell line, with ``~`` for the home folder when that is safe."""
    home = home if home is not None else os.path.expanduser("~")
    if home and home != "/" and path.startswith(home.rstrip("/") + "/"):
        rest = path[len(home.rstrip("/")) + 1 :]
        if shlex.quote(rest) == rest:
            return "~/" + rest
    return shlex.quote(path)


def _same(text: str) -> str:
    return text


def host_lines(
    host: MapHost, width: int = WIDTH, gettext: Callable[[str], str] = _same
) -> list[str]:
    """A host's rows: a role, its name and address, its ports; its purpose below (in
    the language of ``gettext``, whose catalogue has world.toml's ``about`` lines)."""
    _ = gettext
    lines: list[str] = []
    groups = []
    for role in host.roles:
        services = {"MTA": MTA_SERVICES, "MDA": MDA_SERVICES, "DNS": ("dns",)}[role]
        groups.append((role, ports_text(host.ports, services)))
    indent = 42
    for number, (role, items) in enumerate(groups):
        name = host.name if number == 0 else ""
        address = host.address if number == 0 else ""
        if role == "DNS":
            items = [*items, _("(UDP and TCP)")]
        head = f"  {role:<4} {name:<20} {address:<14}"
        if len(head) > indent:  # a long name: the ports go on the next line
            lines.append(head.rstrip())
            head = " " * indent
        lines.extend(_wrap(items, head.ljust(indent), indent, width))
    if host.about:
        lines.extend(
            textwrap.wrap(_(host.about), width, initial_indent=" " * 7,
                          subsequent_indent=" " * 7)
        )
    return lines


def render_map(
    world_map: WorldMap,
    width: int = WIDTH,
    home: str | None = None,
    gettext: Callable[[str], str] = _same,
) -> str:
    """The map as text, at most ``width`` columns (but for a very long root path), in
    the language of ``gettext`` (practice.i18n's catalogue; English by default)."""
    _ = gettext
    width = max(width, 60)
    root = home_path(world_map.root, home)
    lines = [
        _("The practice world at {root} (pid {pid})").format(root=root, pid=world_map.pid),
        f"  {_('role'):<4} {_('host'):<20} {_('address'):<14}{_('ports')}",
        f"  {'MUA':<4} {_('you'):<20} {_('this prompt, telnet, nc or your mail program')}",
    ]
    order = {"MTA": 0, "MDA": 1, "DNS": 2}
    for host in sorted(world_map.hosts, key=lambda h: min(order[r] for r in h.roles)):
        lines.extend(host_lines(host, width, gettext))
    mine = [a for a in world_map.accounts if a.mine] or list(world_map.accounts)
    if mine:
        lines += ["", "  " + _("Accounts (login / password, where the mailbox is):")]
        for account in mine:
            login = f"{account.login} / {account.password}"
            lines.append(f"    {account.address:<20} {login:<22} {_('on')} {account.host}")
    lines += ["", "  " + _("From another terminal:"), *connect_lines(world_map, home, _)]
    files = ((_("CA file"), world_map.cafile), (_("journal"), world_map.journal),
             (_("DNS data"), world_map.dns_records))
    pad = max(len(label) for label, _path in files) + 2
    lines += [f"  {label:<{pad}}{home_path(path, home)}" for label, path in files]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def connect_lines(
    world_map: WorldMap, home: str | None = None, gettext: Callable[[str], str] = _same
) -> list[str]:
    """Shell lines that reach the world: telnet and nc, and mailtalk's own."""
    _ = gettext
    lines: list[str] = []
    mx = world_map.host(world_map.repl_host)
    smtp = mx.ports.get("smtp")
    if smtp is not None:
        nc = f"nc -C {mx.address} {smtp}"
        lines.append(f"    telnet {mx.address} {smtp}        ({_('or')}: {nc})")
        lines.append(f"    mailtalk smtp {mx.address}:{smtp}")
    cafile = home_path(world_map.cafile, home)
    for host in world_map.hosts:
        account = next((a for a in world_map.accounts if a.host == host.name and a.mine), None)
        if account is None:
            continue
        if "submission" in host.ports:
            lines.append(f"    mailtalk connect --cafile {cafile} \\")
            lines.append(
                f"        submission://{account.login}@{host.address}:{host.ports['submission']}"
            )
        elif "pop3" in host.ports:
            lines.append(f"    mailtalk pop3 {account.login}@{host.address}:{host.ports['pop3']}")
    some = next((host for host in world_map.hosts if "MTA" in host.roles and host.domains), None)
    if some is not None:
        domain = world_map.host(world_map.repl_host).domains or some.domains
        lines.append(f"    mailtalk mx --resolver {world_map.resolver} {domain[0]}")
    return lines
