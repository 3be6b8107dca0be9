"""A running world as the lessons see it, and a lesson's ``[setup]`` made true in it.

Everything goes through the world's files, never its memory, so a lesson works the same
against a world in this process and one left running by ``--keep`` in another:

* ``records``: the lesson's own DNS records, a section of the records file the world's
  DNS reads again within a second (``{mx.example.net}`` in a record stands for that
  host's address);
* per host, ``faults`` and ``scenarios``: written to the host's ``control/faults`` and
  ``control/scenarios``, which the servers read again at the next connection, as qmail
  reads its control files;
* per host, ``control``: files of ``control/`` as the lesson starts them (the learner
  edits them in the lesson). Before the first lesson changes any, the world's own
  control files are copied to ``control.orig/``; every lesson start puts back those no
  lesson asks for, so no lesson's edits leak into the next;
* per host, ``files``: other files of the host's root as the lesson starts them, by
  path relative to the root (``"mail/dave/mbox" = "..."``: a user's mbox spool). A
  path is plain (no ``..``, no part starting with ``.``, nothing under ``control/``).
  As with control files, what the world had at a path before any lesson wrote it is
  kept first, in ``files.orig/PATH`` (or its absence, in ``files.orig/.absent``), and
  every lesson start puts it back (or removes the file) where the lesson asks for
  nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mailtalk.errors import MailtalkError

if TYPE_CHECKING:
    from mailtalk.net.target import Target
    from mailtalk.practice.lessons import Lesson
    from mailtalk.practice.worldmap import WorldMap

LESSON_SECTION: Final = "lesson"
FAULTS_FILE: Final = "faults"
SCENARIOS_FILE: Final = "scenarios"
ORIGINALS: Final = "control.orig"
FILE_ORIGINALS: Final = "files.orig"
ABSENT: Final = ".absent"  # in files.orig/: the paths the world had no file at
PREPARED_FILE: Final = "lesson"  # ROOT/lesson: the lesson the world was made ready for
SPOOL_EDIT_LIMIT: Final = 1024 * 1024  # :spool edits a spool this large at most
# The service a URL names, by (protocol, TLS): the world's port for it.
SERVICE_OF: Final = {
    ("smtp", "none"): "smtp",
    ("smtp", "starttls"): "submission",
    ("smtp", "implicit"): "smtps",
    ("pop3", "none"): "pop3",
    ("pop3", "implicit"): "pop3s",
    ("imap", "none"): "imap",
    ("imap", "implicit"): "imaps",
}
_HOST_PLACEHOLDER = re.compile(r"\{([a-z0-9.-]+)\}")


class MapWorld:
    """The coach's view of a running world, made from its map (``ROOT/world.json``)."""

    def __init__(self, world_map: WorldMap) -> None:
        self.map = world_map
        self.root = Path(world_map.root)

    @property
    def journal_path(self) -> Path:
        return Path(self.map.journal)

    @property
    def resolver(self) -> str:
        return self.map.resolver

    @property
    def resolve(self) -> tuple[tuple[str, str], ...]:
        """Every host name of the world with its address (the REPL's --resolve)."""
        return tuple((host.name, host.address) for host in self.map.hosts)

    def server_root(self, host: str) -> Path | None:
        try:
            return Path(self.map.host(host).root)
        except KeyError:
            return None

    def map_text(self, language: str) -> str:
        from mailtalk.practice.i18n import translation
        from mailtalk.practice.worldmap import render_map

        return render_map(self.map, 80, gettext=translation(language).gettext)

    def target(self, url: str) -> Target:
        """A lesson's URL as this world serves it: the host's own port for the service
        (a free one when the standard port could not be bound), the name kept for TLS."""
        from dataclasses import replace

        from mailtalk.net.target import parse_url

        target = parse_url(url)
        try:
            host = self.map.host(target.host)
        except KeyError:
            return target
        service = SERVICE_OF.get((target.protocol, target.tls))
        if service is not None and service in host.ports:
            target = replace(target, port=host.ports[service])
        return target

    def port_moves(self) -> tuple[tuple[str, int, int], ...]:
        """(host name, standard port, the world's port) for every service a host offers
        on another port than its URL's default: the REPL's :open follows them, so
        ``:open pop3://mx.example.net`` reaches the world wherever its POP3 listens."""
        from mailtalk.net.target import parse_url

        moves = []
        for host in self.map.hosts:
            for (protocol, tls), service in SERVICE_OF.items():
                if service not in host.ports:
                    continue
                scheme = {"starttls": "submission", "implicit": f"{protocol}s"}.get(tls, protocol)
                default = parse_url(f"{scheme}://{host.name}").port
                if default != host.ports[service]:
                    moves.append((host.name, default, host.ports[service]))
        return tuple(moves)

    def session_variables(self) -> dict[str, str]:
        """``${MX_EXAMPLE_NET_SMTP}``-style variables for ``mailtalk run --var`` (or the
        environment, or a lesson's words): every host's every service as ADDRESS:PORT,
        and apart for the programs that want them so (telnet ADDRESS PORT, bash's
        /dev/tcp/ADDRESS/PORT): ``${MX_EXAMPLE_NET_ADDRESS}``,
        ``${MX_EXAMPLE_NET_SMTP_PORT}``; every host's root (``${MX_EXAMPLE_NET_ROOT}``:
        its control files are there), ``CA`` and ``ROOT``."""
        variables = {"CA": self.map.cafile, "ROOT": self.map.root}
        for host in self.map.hosts:
            prefix = host.name.upper().replace(".", "_").replace("-", "_")
            variables[f"{prefix}_ROOT"] = host.root
            variables[f"{prefix}_ADDRESS"] = host.address
            for service, port in host.ports.items():
                variables[f"{prefix}_{service.upper()}"] = f"{host.address}:{port}"
                variables[f"{prefix}_{service.upper()}_PORT"] = str(port)
        return variables

    # -- what the learner changes ------------------------------------------------------

    def add_record(self, line: str) -> None:
        """A DNS record of the learner's, after the sections programs write: the world's
        DNS reads it within a second (a line it cannot read is refused here first)."""
        import tempfile

        from mailtalk.practice.world import replace_file
        from mailtalk.servers.dns import DNSDataError, load_dns_data

        path = Path(self.map.dns_records)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        text += line.strip() + "\n"
        with tempfile.TemporaryDirectory() as trial:  # the DNS's own reading, first
            (Path(trial) / path.name).write_text(text, encoding="utf-8")
            try:
                load_dns_data(Path(trial))
            except DNSDataError as error:
                said = str(error).rpartition(": ")[2] if ": " in str(error) else str(error)
                raise MailtalkError(f"the DNS would not read {line.strip()!r}: {said}") from None
        replace_file(path, text)

    def host_root(self, host: str) -> Path:
        """A host's root; MailtalkError naming the world's hosts if there is no such host."""
        root = self.server_root(host)
        if root is None:
            known = ", ".join(h.name for h in self.map.hosts)
            raise MailtalkError(f"no host {host} in this world ({known})")
        return root

    def control_file(self, host: str, name: str) -> Path:
        """``control/NAME`` of a host's root: qmail's file names only, no paths."""
        root = self.host_root(host)
        if not re.fullmatch(r"[a-z]+", name):
            raise MailtalkError(f"{name!r} is not a control file name (rcpthosts, locals...)")
        return root / "control" / name

    def spool_file(self, host: str, user: str) -> Path:
        """``mail/USER/mbox`` of a host's root: the user's POP3 maildrop when it is there
        (an mbox spool, as qpopper's /var/mail/USER)."""
        root = self.host_root(host)
        if not re.fullmatch(r"[a-z][a-z0-9._-]*", user):
            raise MailtalkError(f"{user!r} is not a user name (dave, bob...)")
        return root / "mail" / user / "mbox"

    def edit_spool(self, host: str, user: str, change: str, argument: str) -> None:
        """``insert`` a line before the spool's first, or ``delete`` its line N, as an
        administrator with an editor would; written whole. The next POP3 login reads it."""
        path = self.spool_file(host, user)
        try:
            if path.stat().st_size > SPOOL_EDIT_LIMIT:
                raise MailtalkError(f"{path} is too large to edit here; use an editor")
            lines = path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            raise MailtalkError(f"{user} has no mbox spool at {host} ({path})") from None
        except OSError as error:
            raise MailtalkError(f"cannot read {path}: {error.strerror}") from None
        if change == "insert":
            lines.insert(0, argument.strip("\r\n").encode("utf-8") + b"\n")
        elif argument.isdigit() and 1 <= int(argument) <= len(lines):
            del lines[int(argument) - 1]
        else:
            raise MailtalkError(f"{path} has no line {argument} (it has {len(lines)})")
        _put(path, b"".join(lines))

    def edit_control(self, host: str, name: str, change: str, line: str) -> int:
        """Add a line to a control file or remove it, as an editor would; the servers read
        the file again at the next connection. A LINE ending in ``*`` removes every line
        that starts with the rest. How many lines were added or removed."""
        path = self.control_file(host, name)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as error:
            raise MailtalkError(f"cannot read {path}: {error.strerror}") from None
        before = len(lines)
        if change == "add":
            if line not in (existing.strip() for existing in lines):
                lines.append(line)
        else:
            lines = [existing for existing in lines if not _same_line(existing.strip(), line)]
        if len(lines) != before:
            _write(path, "".join(f"{existing}\n" for existing in lines))
        return abs(len(lines) - before)

    # -- a lesson's setup ---------------------------------------------------------------

    def prepare(self, lesson: Lesson) -> None:
        """Make the world as ``lesson``'s [setup] says (MailtalkError if it cannot)."""
        setup = lesson.setup
        hosts: dict[str, dict[str, Any]] = dict(setup.get("hosts", {}))
        unknown = set(hosts) - {host.name for host in self.map.hosts}
        if unknown:
            raise MailtalkError(f"{lesson.name}: no host {sorted(unknown)[0]} in this world")
        touched = self._control_files_lessons_touch()
        files_touched = _files_lessons_touch()
        for host in self.map.hosts:
            wanted = hosts.get(host.name, {})
            files = {_plain_path(path, lesson.name): str(text)
                     for path, text in dict(wanted.get("files", {})).items()}
            control = Path(host.root) / "control"
            self._keep_originals(control, touched)
            for name in touched:
                original = control.parent / ORIGINALS / name
                if name in wanted.get("control", {}):
                    _write(control / name, str(wanted["control"][name]).lstrip("\n"))
                elif original.is_file():
                    shutil.copyfile(original, control / name)
                else:
                    (control / name).unlink(missing_ok=True)
            _write(control / FAULTS_FILE, _lines(wanted.get("faults", [])))
            _write(control / SCENARIOS_FILE, _lines(wanted.get("scenarios", [])))
            _put_files(Path(host.root), files, files_touched.get(host.name, set()))
        self._write_records(str(setup.get("records", "")))
        from mailtalk.practice.world import replace_file

        replace_file(self.root / PREPARED_FILE, lesson.name + "\n")

    def prepared_for(self) -> str | None:
        """The lesson ``prepare`` last made the world ready for, if any."""
        try:
            return (self.root / PREPARED_FILE).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def _control_files_lessons_touch(self) -> set[str]:
        from mailtalk.practice.lessons import load_lessons

        return {
            name
            for lesson in load_lessons()
            for host in dict(lesson.setup.get("hosts", {})).values()
            for name in dict(host.get("control", {}))
        }

    @staticmethod
    def _keep_originals(control: Path, names: set[str]) -> None:
        """The world's own control files, kept once before any lesson changes them: all
        of them at the first lesson, and any a newer lesson touches the first time."""
        originals = control.parent / ORIGINALS
        if not originals.is_dir():
            staging = control.parent / (ORIGINALS + ".new")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)
            for path in control.iterdir():
                if path.is_file() and path.name not in (FAULTS_FILE, SCENARIOS_FILE):
                    shutil.copyfile(path, staging / path.name)
            staging.rename(originals)
        for name in names:
            if not (originals / name).exists() and (control / name).is_file():
                shutil.copyfile(control / name, originals / name)

    def _write_records(self, records: str) -> None:
        from mailtalk.practice.world import replace_file, replace_section

        addresses = {host.name: host.address for host in self.map.hosts}

        def address(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in addresses:
                raise MailtalkError(f"lesson DNS records: no host {name} in this world")
            return addresses[name]

        lines = [
            _HOST_PLACEHOLDER.sub(address, line)
            for line in records.splitlines()
            if line.strip()
        ]
        path = Path(self.map.dns_records)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        updated = replace_section(text, LESSON_SECTION, lines)
        if updated != text:
            replace_file(path, updated)


def _lines(items: list[str]) -> str:
    return "".join(f"{item}\n" for item in items)


# -- files of a host's root -----------------------------------------------------------


def _plain_path(path: str, where: str) -> str:
    """A lesson's file path, checked: relative, plain, outside control/."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(not part or part.startswith(".") or "\0" in part or "\\" in part
               for part in parts)
        or parts[0] in ("control", ORIGINALS, FILE_ORIGINALS)
    ):
        raise MailtalkError(f"{where}: {path!r} is not a plain path in a host's root")
    return path


def _files_lessons_touch() -> dict[str, set[str]]:
    """host -> the paths some lesson's [setup] writes there."""
    from mailtalk.practice.lessons import load_lessons

    found: dict[str, set[str]] = {}
    for lesson in load_lessons():
        for host, wanted in dict(lesson.setup.get("hosts", {})).items():
            for path in dict(wanted.get("files", {})):
                found.setdefault(host, set()).add(_plain_path(path, lesson.name))
    return found


def _put_files(root: Path, wanted: dict[str, str], touched: set[str]) -> None:
    """The lesson's files written; at the other paths lessons write, the world's own
    file put back, or none."""
    originals = root / FILE_ORIGINALS
    absent_list = originals / ABSENT
    try:
        absent = set(absent_list.read_text(encoding="utf-8").splitlines())
    except FileNotFoundError:
        absent = set()
    before = set(absent)
    for path in sorted(touched | set(wanted)):  # the world's own, kept before any change
        kept = originals / path
        if path in absent or kept.exists():
            continue
        if (root / path).is_file():
            kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copyfile(root / path, kept)
        else:
            absent.add(path)
    if absent != before:
        _put(absent_list, "".join(f"{path}\n" for path in sorted(absent)).encode())
    for path in sorted(touched | set(wanted)):
        if path in wanted:
            _put(root / path, wanted[path].lstrip("\n").encode("utf-8"))
        elif (originals / path).is_file():
            _put(root / path, (originals / path).read_bytes())
        else:
            (root / path).unlink(missing_ok=True)


def _put(path: Path, data: bytes) -> None:
    """``path`` holding ``data`` (its directories made), written whole; an unchanged file
    is left as it is."""
    from mailtalk.practice.world import replace_file

    try:
        if path.read_bytes() == data:
            return
    except OSError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_file(path, data)


def _write(path: Path, text: str) -> None:
    from mailtalk.practice.world import replace_file

    try:
        current = path.read_text(encoding="utf-8")
    except OSError:
        current = None
    if current != text:  # an unchanged file keeps its stamp: no needless re-read
        replace_file(path, text)


def _same_line(existing: str, wanted: str) -> bool:
    """``remove LINE``: the line itself, or with LINE ending in ``*`` every line that
    starts with the rest (``smtp:mail=*``)."""
    if wanted.endswith("*") and len(wanted) > 1:
        return existing.startswith(wanted[:-1])
    return existing == wanted
