"""Start the practice world: every host of ``world.toml`` and the DNS, in one process.

``start_world(root)`` gives a running :class:`World`: each host a reference server
(``mailtalk.servers.app.ReferenceServers``) with a root of its own under
``ROOT/hosts/NAME``, named by its host name (``control/me``: the banner, HELO,
``Received:``, its certificate), on an address of its own (``layout.py`` chooses
addresses and ports), all in one asyncio loop in a background thread
(``mailtalk.servers.api.ServerLoop``). One journal, ``ROOT/journal.jsonl``, is handed to
every host. ``World.stop()`` closes every listener.

What ROOT holds::

    .mailtalk-practice      the mark of a practice root (only such a root is ever wiped)
    .lock                   flock()ed by the process running the world: "it runs"
    world.json              the map (worldmap.py), written once the world listens
    journal.jsonl           what the servers did (servers/journal.py)
    world.log               the servers' log, when run by the command (rotated)
    tls/ca.pem, ca.key      the world's CA: every host's certificate is signed by it
    hosts/NAME/             a reference server root: control/, mail/, queue/, tls/
    hosts/ns.isp.test/dns/records   the DNS records (edited: read again within a second)

A host's root is made once, from the data: its control files, users and seed mail. Later
starts keep what the learner (or a lesson) changed there; only what depends on the
start is written again: every host's A and PTR records (a section of the DNS records
file), the CA, and, in the shared layout, ``control/smtproutes``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mailtalk.errors import MailtalkError
from mailtalk.exitcodes import ExitCode
from mailtalk.practice.layout import HostPlan, Layout, LayoutError, choose_layout, first_block
from mailtalk.practice.spec import HostSpec, WorldSpec, load_spec
from mailtalk.practice.worldmap import (
    MAP_FILE,
    MapAccount,
    MapError,
    MapHost,
    WorldMap,
    read_map,
    write_map,
)

log = logging.getLogger("mailtalk.practice")

MARKER: Final = ".mailtalk-practice"
LOCK_FILE: Final = ".lock"
JOURNAL_FILE: Final = "journal.jsonl"
LOG_FILE: Final = "world.log"
HOSTS_DIR: Final = "hosts"
HOSTS_SECTION: Final = "hosts"
SMTPROUTES_MARK: Final = "# written by mailtalk practice"
DNS_POLL_SECONDS: Final = 1.0
START_ATTEMPTS: Final = 3


class WorldError(MailtalkError):
    """The world cannot start (a port, an address); one line, exit status 3 as when
    ``mailtalk serve`` finds a port taken."""

    exit_code = ExitCode.CONNECT


class RootError(WorldError):
    """ROOT cannot be used for a world (not a folder, someone else's files); status 2."""

    exit_code = ExitCode.USAGE


class WorldBusy(WorldError):
    """A world runs at ROOT already (start, reset); status 1."""

    exit_code = ExitCode.FAILED


# -- the root -------------------------------------------------------------------------


def looks_like_practice_root(root: Path) -> bool:
    """A practice root has the mark; a folder that does not exist or is empty may be one."""
    if (root / MARKER).is_file():
        return True
    try:
        return root.is_dir() and not any(root.iterdir())
    except OSError:
        return False


def make_root(root: Path) -> None:
    """Make ROOT (0700) and mark it, refusing a folder that holds something else."""
    if root.exists() and not root.is_dir():
        raise RootError(f"{root} is not a folder")
    if root.exists() and not looks_like_practice_root(root):
        raise RootError(
            f"{root} holds files and is no practice world (no {MARKER} in it); "
            "choose another --root"
        )
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker = root / MARKER
        if not marker.exists():
            marker.write_text(
                "a mailtalk practice world: `mailtalk practice --reset` may wipe this folder\n",
                encoding="utf-8",
            )
    except OSError as error:
        raise RootError(f"cannot use {root}: {error.strerror or error}") from None


class RootLock:
    """``ROOT/.lock``, flock()ed while a world runs there (by any process)."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False if a world holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def is_running(root: Path) -> bool:
    """Whether a world runs at ROOT now: its lock is held."""
    if not (root / LOCK_FILE).exists():
        return False
    lock = RootLock(root)
    try:
        if lock.acquire():
            lock.release()
            return False
    except OSError:
        return False
    return True


def reset_root(root: Path) -> None:
    """Wipe a practice root for a fresh world; refuses a running one or a foreign folder."""
    if not root.exists():
        return
    if not looks_like_practice_root(root):
        raise RootError(f"{root} is no practice world (no {MARKER} in it): not wiping it")
    lock = RootLock(root)
    if not lock.acquire():
        raise WorldBusy(f"a world runs at {root}: stop it first (mailtalk practice --stop)")
    try:
        for entry in root.iterdir():
            if entry.name in (MARKER, LOCK_FILE):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as error:
        raise WorldError(f"cannot wipe {root}: {error.strerror or error}") from None
    finally:
        lock.release()


# -- the world ------------------------------------------------------------------------


@dataclass
class Host:
    """One host of a running world."""

    spec: HostSpec
    root: Path
    address: str
    ports: dict[str, int]
    servers: Any  # mailtalk.servers.app.ReferenceServers


class World:
    """A running practice world; made by :func:`start_world`."""

    def __init__(
        self,
        spec: WorldSpec,
        root: Path,
        layout: Layout,
        hosts: dict[str, Host],
        running: Any,
        journal: Any,
        lock: RootLock,
        kept: bool,
    ) -> None:
        self.spec = spec
        self.root = root
        self.layout = layout
        self.hosts = hosts
        self.journal = journal  # servers.journal.Journal
        self._running = running  # servers.api.ServerLoop
        self._lock = lock
        self._watch: Any = None
        self.map = self._make_map(kept)

    # -- where things are ----------------------------------------------------------

    def address(self, host: str) -> str:
        return self.hosts[host].address

    def port(self, host: str, service: str) -> int:
        return self.hosts[host].ports[service]

    @property
    def cafile(self) -> Path:
        return self.root / "tls" / "ca.pem"

    @property
    def dns_directory(self) -> Path:
        return self.hosts[self.spec.dns_host.name].root / "dns"

    @property
    def dns_records(self) -> Path:
        return self.dns_directory / "records"

    def context(self, host: str) -> Any:
        """The host's ``ServerContext`` (its store, control files, settings)."""
        return self.hosts[host].servers.context

    def _make_map(self, kept: bool) -> WorldMap:
        hosts = tuple(
            MapHost(
                name=host.spec.name,
                roles=host.spec.roles,
                about=host.spec.about,
                address=host.address,
                ports=dict(host.ports),
                domains=host.spec.domains,
                root=str(host.root),
            )
            for host in self.hosts.values()
        )
        accounts = tuple(
            MapAccount(a.address, a.name, a.password, a.host, a.mine) for a in self.spec.accounts
        )
        return WorldMap(
            root=str(self.root),
            pid=os.getpid(),
            hosts=hosts,
            accounts=accounts,
            cafile=str(self.cafile),
            journal=str(self.root / JOURNAL_FILE),
            log=str(self.root / LOG_FILE),
            dns_records=str(self.dns_records),
            repl_host=self.spec.repl_host,
            repl_service=self.spec.repl_service,
            block=self.layout.block,
            kept=kept,
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    # -- the DNS ---------------------------------------------------------------------

    def reload_dns(self) -> None:
        """Read the DNS records again now (WorldError if they do not parse)."""
        from mailtalk.servers.dns import DNSDataError, load_dns_data

        try:
            data = load_dns_data(self.dns_directory)
        except DNSDataError as error:
            raise WorldError(str(error)) from None
        self.hosts[self.spec.dns_host.name].servers.dns.data = data

    def write_dns_section(self, name: str, lines: Iterable[str]) -> None:
        """Replace section ``name`` of the records file (add it if missing), then reload.

        Sections are the parts of the file a program writes (``hosts``: every host's A
        record; a lesson's own records); the rest of the file is the learner's.
        """
        path = self.dns_records
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        replace_file(path, replace_section(text, name, lines))
        self.reload_dns()

    async def _watch_dns(self) -> None:
        """Read the records again when a file of the DNS folder changes (a learner's edit)."""
        import asyncio

        from mailtalk.servers.dns import DNSDataError, load_dns_data

        stamp = _stamp(self.dns_directory)
        while True:
            await asyncio.sleep(DNS_POLL_SECONDS)
            now = _stamp(self.dns_directory)
            if now == stamp:
                continue
            stamp = now
            try:
                data = load_dns_data(self.dns_directory)
            except DNSDataError as error:
                log.warning("%s; the DNS answers from what it read before", error)
                continue
            self.hosts[self.spec.dns_host.name].servers.dns.data = data
            log.info("DNS: %s changed, read again", self.dns_directory)

    # -- life ------------------------------------------------------------------------

    def watch(self) -> None:
        self._watch = self._running.submit(self._watch_dns())

    def write_map(self) -> None:
        write_map(self.root / MAP_FILE, self.map)

    def stop(self) -> None:
        """Close every listener and let go of the root; a second call does nothing."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._running.stop()
        self.journal.close()
        self.layout.release()
        self._lock.release()


def start_world(
    root: Path,
    *,
    spec: WorldSpec | None = None,
    prefer_standard: bool = True,
    shared: bool = False,
    kept: bool = False,
) -> World:
    """Start the world at ROOT and write its map; WorldError (one line) if it cannot.

    ``prefer_standard``: the standard ports where they can be bound (else free ports
    for all); ``shared``: every host on 127.0.0.1 (the fallback layout, for tests);
    ``kept``: recorded in the map (a world left running by ``--keep``).
    """
    spec = spec or load_spec()
    root = root.expanduser().absolute()
    make_root(root)
    lock = RootLock(root)
    if not lock.acquire():
        raise WorldBusy(f"a world already runs at {root} (mailtalk practice --status)")
    try:
        world = _start(spec, root, lock, prefer_standard=prefer_standard, shared=shared, kept=kept)
    except BaseException:
        lock.release()
        raise
    world.write_map()
    return world


def _start(
    spec: WorldSpec,
    root: Path,
    lock: RootLock,
    *,
    prefer_standard: bool,
    shared: bool,
    kept: bool,
) -> World:
    from mailtalk.servers.api import ServerLoop
    from mailtalk.servers.app import ConfigError
    from mailtalk.servers.certs import ensure_certificates
    from mailtalk.servers.journal import Journal

    ensure_certificates(root)  # the world's CA in ROOT/tls, shared by every host
    (root / HOSTS_DIR).mkdir(exist_ok=True, mode=0o700)
    plans = [HostPlan(h.name, h.index, h.listeners) for h in spec.hosts]
    first = _remembered_block(root, spec.prefix) or first_block(os.getuid(), str(root))
    skip: set[int] = set()
    problem = "no attempt"
    for _attempt in range(START_ATTEMPTS):
        try:
            layout = choose_layout(
                plans,
                spec.prefix,
                spec.claim_port,
                spec.ports,
                first=first,
                prefer_standard=prefer_standard,
                skip=skip,
                shared=shared,
            )
        except LayoutError as error:
            raise WorldError(f"cannot start the world: {error.strerror}") from None
        journal = Journal(root / JOURNAL_FILE)
        try:
            hosts = {h.name: _build_host(h, spec, root, layout, journal) for h in spec.hosts}
        except (ConfigError, OSError) as error:
            layout.release()
            raise WorldError(str(error)) from None
        running = ServerLoop("mailtalk-practice")
        try:
            running.start([host.servers for host in hosts.values()])
        except ConfigError as error:  # a port taken since it was probed: another block
            layout.release()
            problem = str(error)
            if layout.block is not None:
                skip.add(int(layout.block.rsplit(".", 1)[1]))
            continue
        world = World(spec, root, layout, hosts, running, journal, lock, kept)
        world.watch()
        return world
    raise WorldError(f"cannot start the world: {problem}")


def _remembered_block(root: Path, prefix: str) -> int | None:
    """The block this root had last time, so its addresses stay what the learner saw."""
    try:
        previous = read_map(root / MAP_FILE)
    except MapError:
        return None
    if previous is None or not previous.block or not previous.block.startswith(prefix + "."):
        return None
    number = previous.block.rsplit(".", 1)[1]
    return int(number) if number.isdigit() and 1 <= int(number) <= 254 else None


# -- one host -------------------------------------------------------------------------


def _build_host(host: HostSpec, spec: WorldSpec, root: Path, layout: Layout, journal: Any) -> Host:
    """The host's root made or brought up to date, and its (not yet started) servers."""
    from mailtalk.servers.app import ReferenceServers, ServeConfig
    from mailtalk.servers.context import ServerSettings

    host_root = root / HOSTS_DIR / host.name
    new = not (host_root / "control" / "me").exists()
    if new:
        _write_control(host_root, host.control)
    _copy_ca(root, host_root)
    _write_smtproutes(host_root, spec, layout)
    if "dns" in host.listeners:
        _write_records(host_root / "dns" / "records", spec, layout, new)
    ports = layout.ports[host.name]
    dns = spec.dns_host.name
    settings = ServerSettings(
        **{"onward_delivery": "smtp" in host.listeners, **host.settings},
        resolver=f"{layout.addresses[dns]}:{layout.ports[dns]['dns']}",
        mx_port=layout.common_port("smtp") or spec.ports.get("smtp", 25),
    )
    config = ServeConfig(
        root=host_root,
        listen=layout.addresses[host.name],
        ports={service: port for service, port in ports.items() if service != "dns"},
        domains=host.domains if new else (),
        users=_accounts_to_add(host, host_root, new),
        settings=settings,
        dns_port=ports.get("dns"),
        hostname=host.name,
        journal=journal,
    )
    servers = ReferenceServers(config)
    # APOP needs the secret itself (the users file keeps hashes): the data has it.
    servers.context.clear_passwords = {u.name: u.password for u in host.users}
    if new:
        for message in host.seed:
            _deliver_seed(servers.context, host.name, message)
    return Host(host, host_root, layout.addresses[host.name], dict(ports), servers)


def _accounts_to_add(host: HostSpec, host_root: Path, new: bool) -> list[tuple[str, str]]:
    """The host's accounts for a new root; for one made earlier, only those the world's
    data gained since (a later lesson's account): the others stay as they are."""
    accounts = [(u.name, u.password) for u in host.users]
    if new:
        return accounts
    from mailtalk.servers.policy import ControlError
    from mailtalk.servers.users import Users

    try:
        known = Users.load(host_root)
    except (OSError, ControlError):
        return []  # the servers say what is wrong with the file when they start
    return [(name, password) for name, password in accounts if not known.exists(name)]


def _write_control(host_root: Path, files: dict[str, str] | Any) -> None:
    control = host_root / "control"
    control.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, text in files.items():
        replace_file(control / name, text.lstrip("\n"))


def _copy_ca(root: Path, host_root: Path) -> None:
    """The world's CA into the host's tls/, so that its certificate is signed by it."""
    tls = host_root / "tls"
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("ca.pem", "ca.key"):
        source = (root / "tls" / name).read_bytes()
        target = tls / name
        if not target.exists() or target.read_bytes() != source:
            replace_file(target, source)


def _write_smtproutes(host_root: Path, spec: WorldSpec, layout: Layout) -> None:
    """In the shared layout, where each world domain's MX listens (the MX lookup cannot
    say: every host has another SMTP port); else no file of ours."""
    path = host_root / "control" / "smtproutes"
    ours = path.exists() and path.read_text(encoding="utf-8").startswith(SMTPROUTES_MARK)
    if not layout.shared:
        if ours:
            path.unlink()
        return
    if path.exists() and not ours:
        return  # the learner's own
    lines = [f"{SMTPROUTES_MARK} (every host shares 127.0.0.1, on ports of its own)"]
    for domain, exchange in mx_records(spec.records):
        ports = layout.ports.get(exchange, {})
        if "smtp" in ports:
            lines.append(f"{domain}:[{layout.addresses[exchange]}]:{ports['smtp']}")
    replace_file(path, "\n".join(lines) + "\n")


def mx_records(records: str) -> list[tuple[str, str]]:
    """(domain, exchange) of the MX lines of a records text."""
    found = []
    for line in records.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 4 and words[-3].upper() == "MX":
            found.append((words[0].lower().rstrip("."), words[-1].lower().rstrip(".")))
    return found


def _write_records(path: Path, spec: WorldSpec, layout: Layout, new: bool) -> None:
    """The records of a new world, and every host's A (and PTR) record at every start."""
    text = path.read_text(encoding="utf-8") if path.exists() else spec.records.lstrip("\n")
    lines = []
    for host in spec.hosts:
        address = layout.addresses[host.name]
        lines.append(f"{host.name:<24} A    {address}")
        if not layout.shared:
            reverse = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
            lines.append(f"{reverse:<24} PTR  {host.name}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_file(path, replace_section(text, HOSTS_SECTION, lines))


def _deliver_seed(context: Any, hostname: str, message: Any) -> None:
    import email.utils

    from mailtalk.store import Delivery

    maildir = context.store.maildir(message.user)
    maildir.create()
    stamp = email.utils.parsedate_to_datetime(message.date).timestamp()
    body = message.body.lstrip("\n")
    text = (
        f"Return-Path: <{email.utils.parseaddr(message.sender)[1]}>\n"
        f"From: {message.sender}\nTo: {message.to}\nSubject: {message.subject}\n"
        f"Date: {message.date}\n"
        f"Message-ID: <seed.{int(stamp)}.{message.user}@{hostname}>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + body
    )
    with Delivery([maildir], hostname=hostname) as delivery:
        delivery.write(text.encode("utf-8"))
        (path,) = delivery.commit()
    os.utime(path, (stamp, stamp))


# -- files ----------------------------------------------------------------------------


def section_marks(name: str) -> tuple[str, str]:
    return (
        f"# --- {name}: written by mailtalk practice at every start ---",
        f"# --- end of {name} ---",
    )


def replace_section(text: str, name: str, lines: Iterable[str]) -> str:
    """``text`` with the section ``name`` (between its marks) holding ``lines``; a
    missing section is added at the end."""
    begin, end = section_marks(name)
    block = "\n".join([begin, *lines, end]) + "\n"
    rows = text.splitlines(keepends=True)
    starts = [i for i, row in enumerate(rows) if row.rstrip("\n") == begin]
    if starts:
        start = starts[0]
        stop = next((i for i in range(start, len(rows)) if rows[i].rstrip("\n") == end), None)
        if stop is not None:
            return "".join(rows[:start]) + block + "".join(rows[stop + 1 :])
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text else "") + block


def replace_file(path: Path, content: str | bytes) -> None:
    """Write ``path`` whole or not at all (mode 0600): the store's durable replace."""
    from mailtalk.store.filesystem import replace_file as replace_durably

    data = content.encode("utf-8") if isinstance(content, str) else content
    replace_durably(path, data, path.with_name(f".{path.name}.{os.getpid()}.tmp"))


def _stamp(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    """What tells a changed DNS folder: each file's name, inode, size and mtime."""
    found = []
    try:
        entries: Sequence[os.DirEntry[str]] = list(os.scandir(directory))
    except OSError:
        return ()
    for entry in entries:
        with contextlib.suppress(OSError):
            info = entry.stat()
            found.append((entry.name, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(sorted(found))
