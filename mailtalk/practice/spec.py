"""The practice world as data: ``world.toml`` read into frozen dataclasses, checked.

What the world is (its hosts, their roles, services, domains, control files, users and
seed mail, and the DNS records) lives in ``world.toml``, next to this module; this module
only reads it and says, in one line naming the file, what is wrong with it. Starting the
world is ``world.py``'s business.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

WORLD_TOML: Final = Path(__file__).with_name("world.toml")
SERVICES: Final = ("dns", "smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps")
ROLES: Final = ("MTA", "MDA", "DNS")
# Control files a world may write for a new host (qmail's names, and the users file
# that only --user writes is left out on purpose: users come from [[hosts.users]]).
CONTROL_FILES: Final = (
    "rcpthosts",
    "locals",
    "virtualdomains",
    "relayclients",
    "postmaster",
    "smtproutes",
)


class SpecError(ValueError):
    """world.toml (or a world given in its place) that cannot be used; one line."""


@dataclass(frozen=True)
class Account:
    """A practice account: ``name``/``password`` log in at ``host``; mail to ``address``."""

    name: str
    password: str
    address: str
    host: str
    mine: bool = False  # the learner's own (alice at the ISP, bob at the MX)


@dataclass(frozen=True)
class Seed:
    """A message in ``user``'s Maildir when the world is new."""

    user: str
    sender: str
    to: str
    subject: str
    date: str
    body: str


@dataclass(frozen=True)
class HostSpec:
    name: str
    index: int
    roles: tuple[str, ...]
    about: str
    listeners: tuple[str, ...]
    domains: tuple[str, ...] = ()
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    control: Mapping[str, str] = dataclasses.field(default_factory=dict)
    users: tuple[Account, ...] = ()
    seed: tuple[Seed, ...] = ()


@dataclass(frozen=True)
class WorldSpec:
    prefix: str
    claim_port: int
    ports: Mapping[str, int]
    hosts: tuple[HostSpec, ...]
    records: str
    repl_host: str
    repl_service: str

    def host(self, name: str) -> HostSpec:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    @property
    def dns_host(self) -> HostSpec:
        return next(host for host in self.hosts if "dns" in host.listeners)

    @property
    def accounts(self) -> list[Account]:
        return [account for host in self.hosts for account in host.users]


def load_spec(path: Path = WORLD_TOML) -> WorldSpec:
    """Read and check a world description; SpecError says what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError) as error:
        raise SpecError(f"{path}: cannot read it: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: {error}") from None
    try:
        return _world(data)
    except (KeyError, TypeError, ValueError) as error:
        text = f"missing {error}" if isinstance(error, KeyError) else str(error)
        raise SpecError(f"{path}: {text}") from None


def _world(data: Mapping[str, Any]) -> WorldSpec:
    world = _table(data, "world")
    ports = {str(k): int(v) for k, v in _table(data, "ports").items()}
    for service in ports:
        _known(service, SERVICES, "[ports]")
    hosts = tuple(_host(raw) for raw in data.get("hosts", ()))
    names = [host.name for host in hosts]
    if len(set(names)) != len(names) or len({h.index for h in hosts}) != len(hosts):
        raise ValueError("two [[hosts]] share a name or an index")
    dns_hosts = [host.name for host in hosts if "dns" in host.listeners]
    if len(dns_hosts) != 1:
        raise ValueError(f"exactly one host must listen for dns, not {dns_hosts}")
    for host in hosts:
        missing = [s for s in host.listeners if s not in ports]
        if missing:
            raise ValueError(f"host {host.name}: no [ports] entry for {', '.join(missing)}")
    repl = _table(world, "repl")
    spec = WorldSpec(
        prefix=str(world["address_prefix"]),
        claim_port=int(world["claim_port"]),
        ports=ports,
        hosts=hosts,
        records=str(_table(data, "dns").get("records", "")),
        repl_host=str(repl["host"]),
        repl_service=str(repl["service"]),
    )
    if spec.repl_service not in spec.host(spec.repl_host).listeners:
        raise ValueError(f"[world] repl: {spec.repl_host} has no {spec.repl_service} listener")
    octets = spec.prefix.split(".")
    if len(octets) != 2 or not all(o.isdigit() and int(o) < 256 for o in octets):
        raise ValueError(f"[world] address_prefix {spec.prefix!r}: expected two octets, 127.77")
    return spec


def _host(raw: Mapping[str, Any]) -> HostSpec:
    name = str(raw["name"]).lower()
    where = f"host {name}"
    listeners = tuple(str(s) for s in raw.get("listeners", ()))
    for service in listeners:
        _known(service, SERVICES, f"{where}: listeners")
    roles = tuple(str(r) for r in raw.get("roles", ()))
    for role in roles:
        _known(role, ROLES, f"{where}: roles")
    control = {str(k): str(v) for k, v in _table(raw, "control").items()}
    for filename in control:
        _known(filename, CONTROL_FILES, f"{where}: control")
    settings = dict(_table(raw, "settings"))
    _check_settings(where, settings)
    users = tuple(
        Account(
            name=str(u["name"]),
            password=str(u["password"]),
            address=str(u["address"]),
            host=name,
            mine=bool(u.get("mine", False)),
        )
        for u in raw.get("users", ())
    )
    seed = tuple(
        Seed(
            str(m["user"]),
            str(m["from"]),
            str(m["to"]),
            str(m["subject"]),
            str(m["date"]),
            str(m["body"]),
        )
        for m in raw.get("seed", ())
    )
    known_users = {u.name for u in users}
    for message in seed:
        if message.user not in known_users:
            raise ValueError(f"{where}: seed mail for {message.user!r}, who is no user there")
    index = int(raw["index"])
    if not 1 <= index <= 254:
        raise ValueError(f"{where}: index {index} is not 1-254")
    return HostSpec(
        name=name,
        index=index,
        roles=roles,
        about=str(raw.get("about", "")),
        listeners=listeners,
        domains=tuple(str(d).lower() for d in raw.get("domains", ())),
        settings=settings,
        control=control,
        users=users,
        seed=seed,
    )


def _check_settings(where: str, settings: dict[str, Any]) -> None:
    from mailtalk.servers.context import ServerSettings

    fields = {f.name for f in dataclasses.fields(ServerSettings)}
    for key, value in settings.items():
        if key not in fields or key in ("resolver", "mx_port", "sink"):
            # resolver and mx_port are the world's to set: its DNS, its SMTP port
            raise ValueError(f"{where}: settings.{key} is not a setting a world may give")
        if isinstance(value, list):
            settings[key] = tuple(value)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise TypeError(f"{key} must be a table")
    return value


def _known(value: str, known: tuple[str, ...], where: str) -> None:
    if value not in known:
        raise ValueError(f"{where}: unknown {value!r}; known: {', '.join(known)}")
