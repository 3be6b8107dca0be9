"""A lesson step's check: a declarative predicate over what the servers saw and hold.

A check never looks at what the learner typed, only at the state that resulted: the
world's journal (``servers/journal.py``: what every server did) and its stores (the
Maildirs, the control files). So a step done with telnet, swaks or a mail program counts
as much as one done in mailtalk's REPL.

A predicate is a TOML table; one of these keys says its kind:

``event = "KIND"``
    A journal event of that kind since the step began, whose other keys all match:
    ``server = "mx.example.net"``, ``verb = "RCPT"``, ``code = "5*"``, ``tls = true``...
    A string value is a shell-style pattern (``*``, ``?``; verbs and codes match
    whatever their case); a list means any of its values. ``at_least = N`` asks for N
    such events; ``since = "lesson"`` looks back to the lesson's start instead.
``then = [P, P, ...]``
    Event predicates met in this order (each by a later event than the one before);
    ``same_session = true`` asks that they all come from one connection.
``all = [...]``, ``any = [...]``, ``not = {...}``
    And, or, not.
``maildir = "HOST"``
    A message is there now: ``user``, and optionally ``subject`` (pattern), ``folder``
    (``new``, ``cur`` or ``any``, the default), ``flags`` (Maildir flag letters it must
    carry, ``"S"`` for \\Seen), ``count`` (exactly this many messages match, instead of
    at least one).
``file = "HOST"``
    A file in that server's root: ``path`` (``control/rcpthosts``), and ``contains`` (a
    line equal to it, after trimming) or ``lacks`` (no such line), or ``first_line`` (a
    pattern the file's first line matches, its line end left off: ``"From *"``; only
    the file's start is read, so it suits a large mbox spool).

``evaluate`` answers True or False; ``problems`` says what is wrong with a predicate, so
a malformed lesson fails its test, not a learner's session.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, Final

Predicate = Mapping[str, Any]
Event = Mapping[str, Any]

KINDS: Final = ("event", "then", "all", "any", "not", "maildir", "file")
EVENT_OPTIONS: Final = frozenset({"event", "at_least", "since"})
# Matched without regard to case: verbs and their arguments (an address typed
# Bob@Example.NET is still the one), IMAP's ok/no/bad, DNS names, user names.
CASELESS: Final = frozenset(
    {"verb", "args", "code", "response_code", "mechanism", "qtype", "rcode", "qname", "user"}
)


@dataclass(frozen=True)
class Situation:
    """What a check looks at: the journal's events and where each server keeps its files.

    ``step_start`` and ``lesson_start`` are indexes into ``events``: the events from
    there on happened during the step (the lesson).
    """

    events: Sequence[Event]
    server_root: Callable[[str], Path | None]  # host name -> that server's --root
    step_start: int = 0
    lesson_start: int = 0


def kind_of(predicate: Predicate) -> str | None:
    kinds = [kind for kind in KINDS if kind in predicate]
    return kinds[0] if len(kinds) == 1 else None


def evaluate(predicate: Predicate, situation: Situation) -> bool:
    """Whether ``predicate`` holds now."""
    kind = kind_of(predicate)
    if kind == "event":
        return _count_events(predicate, situation) >= int(predicate.get("at_least", 1))
    if kind == "then":
        return _in_order(predicate, situation)
    if kind == "all":
        return all(evaluate(part, situation) for part in predicate["all"])
    if kind == "any":
        return any(evaluate(part, situation) for part in predicate["any"])
    if kind == "not":
        return not evaluate(predicate["not"], situation)
    if kind == "maildir":
        return _maildir_holds(predicate, situation)
    if kind == "file":
        return _file_holds(predicate, situation)
    raise ValueError(f"not a check: {dict(predicate)!r}")


# -- journal events ----------------------------------------------------------------


def matches(predicate: Predicate, event: Event) -> bool:
    """Whether one journal event is what an ``event`` predicate describes."""
    if event.get("event") != predicate["event"]:
        return False
    for key, wanted in predicate.items():
        if key in EVENT_OPTIONS:
            continue
        if not _value_matches(key, wanted, event.get(key)):
            return False
    return True


def _value_matches(key: str, wanted: Any, actual: Any) -> bool:
    if isinstance(wanted, list):
        return any(_value_matches(key, one, actual) for one in wanted)
    if isinstance(wanted, bool) or actual is None or isinstance(actual, bool):
        return bool(wanted == actual)
    if isinstance(wanted, str):
        text = str(actual)
        if key in CASELESS:
            return fnmatch.fnmatchcase(text.upper(), wanted.upper())
        return fnmatch.fnmatchcase(text, wanted)
    return bool(wanted == actual)


def _window(predicate: Predicate, situation: Situation) -> Sequence[Event]:
    start = situation.lesson_start if predicate.get("since") == "lesson" else situation.step_start
    return situation.events[start:]


def _count_events(predicate: Predicate, situation: Situation) -> int:
    return sum(1 for event in _window(predicate, situation) if matches(predicate, event))


def _in_order(predicate: Predicate, situation: Situation) -> bool:
    parts: list[Predicate] = list(predicate["then"])
    events = _window(parts[0], situation) if parts else ()
    if not predicate.get("same_session"):
        return _first_sequence(parts, events, None) is not None
    sessions = {_session_key(event) for event in events if matches(parts[0], event)}
    return any(_first_sequence(parts, events, key) is not None for key in sessions)


def _session_key(event: Event) -> tuple[Any, ...]:
    return (event.get("server"), event.get("proto"), event.get("session"))


def _first_sequence(
    parts: Sequence[Predicate], events: Sequence[Event], session: tuple[Any, ...] | None
) -> int | None:
    """The index just past the last event of the first run meeting ``parts`` in order."""
    position = 0
    for part in parts:
        for index in range(position, len(events)):
            event = events[index]
            if session is not None and _session_key(event) != session:
                continue
            if matches(part, event):
                position = index + 1
                break
        else:
            return None
    return position


# -- the stores ----------------------------------------------------------------------


def _root(situation: Situation, host: str) -> Path | None:
    return situation.server_root(host)


def maildir_messages(root: Path, user: str, folder: str = "any") -> list[Path]:
    """The message files of ``user``'s inbox in a server root (``new``, ``cur`` or both)."""
    base = root / "mail" / user / "Maildir"
    found: list[Path] = []
    for name in ("new", "cur"):
        if folder not in ("any", name):
            continue
        try:
            entries = os.scandir(base / name)
        except OSError:
            continue
        with entries:
            found += [Path(entry.path) for entry in entries if entry.is_file()]
    return found


def message_flags(path: Path) -> str:
    """The Maildir flags in a file name: ``1733.M1P2.host:2,RS`` -> ``RS``."""
    _, sep, info = path.name.partition(":2,")
    return info if sep else ""


def message_subject(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            headers = BytesHeaderParser(policy=default_policy).parse(stream)
    except OSError:
        return ""
    return str(headers.get("Subject", ""))


def _maildir_holds(predicate: Predicate, situation: Situation) -> bool:
    root = _root(situation, predicate["maildir"])
    if root is None:
        return False
    subject = predicate.get("subject")
    flags = str(predicate.get("flags", ""))
    found = 0
    for path in maildir_messages(root, predicate["user"], predicate.get("folder", "any")):
        if flags and not set(flags) <= set(message_flags(path)):
            continue
        if subject is not None and not fnmatch.fnmatch(message_subject(path), subject):
            continue
        found += 1
    if "count" in predicate:
        return found == int(predicate["count"])
    return found > 0


def _file_holds(predicate: Predicate, situation: Situation) -> bool:
    root = _root(situation, predicate["file"])
    if root is None:
        return False
    if "first_line" in predicate:
        line = first_line(root / predicate["path"])
        return line is not None and fnmatch.fnmatchcase(line, str(predicate["first_line"]))
    try:
        lines = {
            line.strip()
            for line in (root / predicate["path"]).read_text(encoding="utf-8").splitlines()
        }
    except OSError:
        lines = set()
    if "contains" in predicate:
        return str(predicate["contains"]).strip() in lines
    if "lacks" in predicate:
        return str(predicate["lacks"]).strip() not in lines
    return bool(lines)


def first_line(path: Path, limit: int = 4096) -> str | None:
    """The file's first line without its line end (at most ``limit`` bytes of it), or
    None when there is no such file."""
    try:
        with path.open("rb") as stream:
            head = stream.readline(limit)
    except OSError:
        return None
    return head.rstrip(b"\r\n").decode("utf-8", "replace")


# -- checking the checks --------------------------------------------------------------

_OWN_KEYS: Final[dict[str, frozenset[str]]] = {
    "then": frozenset({"then", "same_session"}),
    "all": frozenset({"all"}),
    "any": frozenset({"any"}),
    "not": frozenset({"not"}),
    "maildir": frozenset({"maildir", "user", "subject", "folder", "flags", "count"}),
    "file": frozenset({"file", "path", "contains", "lacks", "first_line"}),
}


def problems(predicate: Any, where: str = "check") -> list[str]:
    """What is wrong with a predicate as written in a lesson (empty when it is sound)."""
    if not isinstance(predicate, Mapping):
        return [f"{where}: a check is a table, not {type(predicate).__name__}"]
    kind = kind_of(predicate)
    if kind is None:
        return [f"{where}: needs exactly one of {', '.join(KINDS)}"]
    found: list[str] = []
    if kind in _OWN_KEYS:
        extra = set(predicate) - _OWN_KEYS[kind]
        if extra:
            found.append(f"{where}: {kind} does not take {', '.join(sorted(extra))}")
    if kind in ("all", "any", "then"):
        parts = predicate[kind]
        if not isinstance(parts, list) or not parts:
            return [*found, f"{where}: {kind} needs a list of checks"]
        for number, part in enumerate(parts, 1):
            found += problems(part, f"{where}.{kind}[{number}]")
            if kind == "then" and isinstance(part, Mapping) and kind_of(part) != "event":
                found.append(f"{where}.then[{number}]: then takes event checks only")
    elif kind == "not":
        found += problems(predicate["not"], f"{where}.not")
    elif kind == "maildir" and "user" not in predicate:
        found.append(f"{where}: maildir needs a user")
    elif kind == "file" and "path" not in predicate:
        found.append(f"{where}: file needs a path")
    elif kind == "event" and predicate.get("since", "step") not in ("step", "lesson"):
        found.append(f"{where}: since is step or lesson")
    return found
