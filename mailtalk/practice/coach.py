"""The coach in the practice REPL: the lesson panel, its ``:commands``, ticking steps.

It plugs into the REPL through ``client.coach`` (the client knows nothing of lessons).
After every line the learner types, and once a second while the prompt waits, it reads
what the world's servers did since (``tracker.LessonTracker``) and says so: a step done,
the next step's goal, the lesson finished; and after a refusal, a hint drawn from the
explanation of that reply (its category) rather than from what was typed.
"""

from __future__ import annotations

import functools
import re
import textwrap
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from mailtalk.client.coach import ExtraCommand
from mailtalk.errors import MailtalkError
from mailtalk.practice.i18n import translation
from mailtalk.practice.lessons import Lesson, find_lesson, load_lessons
from mailtalk.practice.progress import Progress
from mailtalk.practice.tracker import LessonTracker
from mailtalk.servers.journal import JournalReader, utc_now

if TYPE_CHECKING:
    from mailtalk.client.conversation import Conversation
    from mailtalk.client.meta import MetaUI
    from mailtalk.net.target import Target

COACHING: Final = Path(__file__).with_name("coaching.toml")
GLOSSARY: Final = Path(__file__).with_name("glossary.toml")
WIDTH: Final = 78
SPOOL_LINES: Final = 12  # the lines of a spool :spool shows
TOOLBAR: Final = 79  # the REPL shows a toolbar line up to the width less one
# ${MX_EXAMPLE_NET_POP3} in a lesson's prose: that service's ADDRESS:PORT in this world
# (the variables of mailtalk practice --vars), so an answer can be typed as shown.
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)\}")


class World(Protocol):
    """What the coach needs of a running practice world."""

    @property
    def journal_path(self) -> Path: ...

    def server_root(self, host: str) -> Path | None: ...

    @property
    def resolver(self) -> str:
        """``ADDRESS:PORT`` of the world's DNS."""
        ...

    def map_text(self, language: str) -> str: ...

    def add_record(self, line: str) -> None: ...

    def control_file(self, host: str, name: str) -> Path: ...

    def edit_control(self, host: str, name: str, change: str, line: str) -> int: ...

    def session_variables(self) -> dict[str, str]:
        """``MX_EXAMPLE_NET_POP3`` -> ``ADDRESS:PORT``, ``CA``, ``ROOT``..."""
        ...

    def spool_file(self, host: str, user: str) -> Path: ...

    def edit_spool(self, host: str, user: str, change: str, argument: str) -> None: ...

    def target(self, url: str) -> Target:
        """A lesson's ``connect`` URL as the world serves it (its real port)."""
        ...

    def prepare(self, lesson: Lesson) -> None:
        """Make the world as the lesson's [setup] says (faults, records, files, mail)."""

    def prepared_for(self) -> str | None:
        """The lesson the world was last made ready for (its name), if known."""


@functools.cache
def coaching() -> dict[str, dict[str, str]]:
    """category -> language -> the coach's hint after a reply of that category."""
    with COACHING.open("rb") as stream:
        data = tomllib.load(stream)
    return {name: dict(entry) for name, entry in data.items()}


@functools.cache
def glossary() -> dict[str, dict[str, str]]:
    """term -> language -> what it means."""
    with GLOSSARY.open("rb") as stream:
        return {term: dict(entry) for term, entry in tomllib.load(stream).items()}


def glossary_text(language: str) -> str:
    lines = []
    for term, words in glossary().items():
        text = words.get(language) or words["en"]
        lines.append(textwrap.fill(f"{term}: {text}", WIDTH, subsequent_indent="    "))
    return "\n".join(lines)


class PracticeCoach:
    """One learner's practice session: a lesson at a time, in one language."""

    def __init__(self, world: World, progress: Progress, language: str, lesson: Lesson) -> None:
        self.world = world
        self.progress = progress
        self.language = language
        self._ = translation(language).gettext
        self.heading = self._("practice commands")
        self.tracker = self._track(lesson)
        self._commands = self._command_table()

    def _command_table(self) -> dict[str, ExtraCommand]:
        _ = self._
        table: tuple[tuple[str, str, str, Callable[..., None]], ...] = (
            ("lesson", ":lesson [N]", _("the lesson and its step; N: go to it"), self._lesson),
            ("hint", ":hint", _("a hint (ask again: the next, then the answer)"), self._hint),
            ("check", ":check", _("check the step now"), self._check),
            ("map", ":map", _("the world: hosts, roles, addresses, accounts"), self._map),
            ("skip", ":skip", _("pass over this step"), self._skip),
            ("reset", ":reset", _("this lesson from the start, its setup made anew"), self._reset),
            ("lessons", ":lessons", _("every lesson, and which are done"), self._list),
            ("glossary", ":glossary", _("the words of the course"), self._glossary),
            ("lang", ":lang en|nl", _("the coach's language: English or Dutch"), self._lang),
            ("dns", ":dns NAME [TYPE]", _("ask the world's DNS (TYPE: MX, A, TXT...)"),
             self._dns),
            ("dns-add", ":dns-add NAME TYPE VALUE",
             _("add a record to the world's DNS"), self._add_record),
            ("control", ":control HOST FILE [add|remove LINE]",
             _("show or edit a server's qmail control file"), self._control),
            ("spool", ":spool HOST USER [insert LINE|delete N]",
             _("show or repair a user's mbox spool"), self._spool),
        )
        return {
            name: ExtraCommand(name, usage, brief, handler)
            for name, usage, brief, handler in table
        }

    @property
    def commands(self) -> Mapping[str, ExtraCommand]:
        return self._commands

    def _track(self, lesson: Lesson) -> LessonTracker:
        self.progress.take_up(lesson.name, utc_now())  # made ready by take_up() first
        tracker = LessonTracker(
            lesson, self.progress.of(lesson.name), JournalReader(self.world.journal_path),
            self.world.server_root,
        )
        self.progress.save()
        return tracker

    # -- what the REPL calls -------------------------------------------------------

    def begin(self, conv: Conversation, ui: MetaUI) -> None:
        ui.show_block(self.panel(intro=True))
        self.after(conv, ui)  # connecting may have done the first step already

    def after(self, conv: Conversation, ui: MetaUI) -> None:
        ticked = self.tracker.poll()
        failure = self.tracker.last_failure()
        if failure is not None and not ticked:
            hint = self.contextual_hint(failure)
            if hint:
                ui.note(hint, "info")
        if not ticked:
            return
        words = self.tracker.lesson.words(self.language)
        for done in ticked:
            goal = self.fill(words.goals.get(done.step.key, done.step.key))
            ui.note(_one_line(self._("✓ done: {goal}"), goal), "tls")
        self.progress.save()
        if self.tracker.done:
            ui.show_block(self._finished_text())
        else:
            ui.show_block(self._step_text())

    def toolbar(self) -> str:
        lesson = self.tracker.lesson
        title = lesson.words(self.language).title
        if self.tracker.done:
            where = self._("done")
        else:
            where = self._("step {n}/{total}").format(
                n=self.tracker.progress.step + 1, total=len(lesson.steps)
            )
        # The title gives way: where you are and the commands fit an 80-column toolbar.
        tail = f" · {where} · :hint :check :map "
        head = f" {self._('lesson')} {lesson.number}: "
        room = TOOLBAR - len(head) - len(tail)
        if len(title) > room:
            title = title[: max(room - 1, 0)].rstrip(" :,") + "…"
        return f"{head}{title}{tail}"

    # -- what it shows ----------------------------------------------------------------

    def panel(self, intro: bool = False) -> str:
        lesson = self.tracker.lesson
        words = lesson.words(self.language)
        lines = [f"{self._('Lesson')} {lesson.number}: {words.title}", ""]
        if intro and words.intro:
            lines += [_wrap(self.fill(words.intro)), ""]
        lines.append(self._finished_text() if self.tracker.done else self._step_text())
        return "\n".join(lines)

    def _step_text(self) -> str:
        step = self.tracker.current
        assert step is not None
        words = self.tracker.lesson.words(self.language)
        head = self._("Step {n} of {total}:").format(
            n=self.tracker.progress.step + 1, total=len(self.tracker.lesson.steps)
        )
        return f"{head}\n{_wrap(self.fill(words.goals.get(step.key, step.key)), indent='  ')}"

    def _finished_text(self) -> str:
        lesson = self.tracker.lesson
        following = [other for other in load_lessons() if other.number > lesson.number]
        text = self._("Lesson {n} is done.").format(n=lesson.number)
        if following:
            text += " " + self._(":lesson {n} starts the next one.").format(n=following[0].number)
        else:
            text += " " + self._("That was the last lesson.")
        return text

    def fill(self, text: str) -> str:
        """The lesson's words with this world's addresses in (``${MX_EXAMPLE_NET_POP3}``
        becomes ``127.77.5.3:110``, a path under the home folder ``~/...``)."""
        if "${" not in text:
            return text
        from mailtalk.practice.worldmap import home_path

        known = {name: home_path(value) if value.startswith("/") else value
                 for name, value in self.world.session_variables().items()}
        return fill_variables(text, known)

    def contextual_hint(self, event: Mapping[str, Any]) -> str | None:
        """A hint for a refusal the servers journalled, from its explanation's category."""
        from mailtalk.knowledge.explain import explain

        code = str(event.get("code") or "")
        text = " ".join(part for part in (code, event.get("enhanced"), event.get("text")) if part)
        protocol = event.get("proto")
        try:
            explanation = explain(
                text, protocol if protocol in ("smtp", "pop3", "imap") else None,
                str(event.get("verb") or "") or None,
            )
        except (ValueError, LookupError):
            return None
        hints = coaching().get(explanation.category)
        if not hints:
            return None
        title = self._(explanation.title)
        hint = hints.get(self.language) or hints.get("en", "")
        return f"{title}: {hint}"

    # -- the :commands -------------------------------------------------------------

    def _lesson(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        if not args:
            ui.show_block(self.panel(intro=True))
            return
        try:
            lesson = find_lesson(args[0])
        except LookupError as error:
            raise MailtalkError(str(error)) from None
        take_up(self.world, self.progress, lesson, again=True)
        self.tracker = self._track(lesson)
        ui.show_block(self.panel(intro=True))
        conv.retarget(self.world.target(lesson.connect))

    def _hint(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        step = self.tracker.current
        if step is None:
            ui.note(self._("This lesson is done: :lesson N goes to another."))
            return
        hints = self.tracker.lesson.words(self.language).hints.get(step.key, [])
        if not hints:
            ui.note(self._("No hint for this step; :skip passes over it."))
            return
        used = self.tracker.progress.hints.get(step.key, 0)
        shown = min(used, len(hints) - 1)
        self.tracker.progress.hints[step.key] = shown + 1
        self.progress.save()
        label = (
            self._("The answer:")
            if shown == len(hints) - 1
            else self._("Hint {n} of {total}:").format(n=shown + 1, total=len(hints))
        )
        ui.show_block(f"{label}\n{_wrap(self.fill(hints[shown]), indent='  ')}")

    def _check(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        before = self.tracker.progress.step
        self.after(conv, ui)
        if self.tracker.progress.step == before and not self.tracker.done:
            ui.note(self._("Not yet: the servers have not seen this step done."))

    def _map(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        ui.show_block(self.world.map_text(self.language))

    def _skip(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        step = self.tracker.skip()
        self.progress.save()
        if step is None:
            ui.note(self._("This lesson is done: :lesson N goes to another."))
            return
        ui.note(self._("Skipped."))
        ui.show_block(self._finished_text() if self.tracker.done else self._step_text())

    def _reset(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        self.world.prepare(self.tracker.lesson)
        self.tracker.restart()
        self.tracker.progress.hints.clear()
        self.progress.save()
        ui.note(self._(
            "The lesson starts again, its setup made anew (DNS records, faults, control "
            "files; mail stays: mailtalk practice --reset gives a fresh world)."
        ))
        ui.show_block(self.panel())

    def _dns(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        if not args or len(args) > 2:
            raise MailtalkError(self._("usage: :dns NAME [TYPE], e.g. :dns example.net MX"))
        ui.show_block(ask_dns(self.world.resolver, args[0], args[1] if len(args) > 1 else "A"))

    def _add_record(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        if len(args) < 3:
            raise MailtalkError(self._("usage: :dns-add NAME TYPE VALUE, e.g. "
                                       ":dns-add shop.test MX 10 mail.isp.test"))
        line = " ".join(args)
        self.world.add_record(line)
        # The DNS reads its records again within a second: wait for it, so that the
        # :dns typed next (or pasted with this line) sees the record.
        if record_answered(self.world.resolver, args[0], args[1], " ".join(args[2:])):
            ui.note(self._("added to the DNS, which answers it now: {line}").format(line=line))
        else:
            ui.note(self._("added to the DNS (answered within a second): {line}").format(
                line=line))

    def _control(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        if len(args) == 2:
            path = self.world.control_file(args[0], args[1])
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            except OSError as error:
                raise MailtalkError(f"cannot read {path}: {error.strerror}") from None
            ui.show_block(f"# {path}\n{text.rstrip()}" if text.strip() else
                          self._("# {path} is empty or missing").format(path=path))
            return
        if len(args) == 4 and args[2] in ("add", "remove"):
            if not self.world.edit_control(args[0], args[1], args[2], args[3]):
                unchanged = (self._("{host}: {file} has that line already")
                             if args[2] == "add" else
                             self._("{host}: {file} has no such line; nothing changed"))
                ui.note(unchanged.format(file=args[1], host=args[0]), "warning")
                return
            ui.note(self._("{file} of {host} changed; its next connection reads it").format(
                file=args[1], host=args[0]))
            return
        raise MailtalkError(self._("usage: :control HOST FILE [add|remove LINE], e.g. "
                                   ":control mx.example.net rcpthosts add example.org"))

    def _spool(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        if len(args) == 2:
            ui.show_block(self._spool_text(self.world.spool_file(args[0], args[1])))
            return
        change = args[2] if len(args) > 3 else ""
        if change == "insert" or (change == "delete" and len(args) == 4):
            self.world.edit_spool(args[0], args[1], change, " ".join(args[3:]))
            path = self.world.spool_file(args[0], args[1])
            ui.note(self._("{path} changed; the next POP3 login reads it").format(path=path))
            ui.show_block(self._spool_text(path))
            return
        raise MailtalkError(self._(
            "usage: :spool HOST USER [insert LINE|delete N], e.g. :spool mx.example.net dave "
            "insert From carol@stranger.test Tue Dec 2 12:30:00 2025"))

    def _spool_text(self, path: Path, count: int = SPOOL_LINES) -> str:
        """The spool's first lines, numbered, and whether the POP3 server can split it."""
        from mailtalk.store.mbox import is_from_line

        try:
            with path.open("rb") as stream:
                lines = [stream.readline(4096) for _ in range(count)]
        except FileNotFoundError:
            return self._("# {path}: no mbox here (POP3 serves the Maildir)").format(path=path)
        except OSError as error:
            raise MailtalkError(f"cannot read {path}: {error.strerror}") from None
        shown = [f"{n:3d}  {line[:100].decode('utf-8', 'replace').rstrip()}"
                 for n, line in enumerate(lines, 1) if line]
        if not lines[0]:
            verdict = self._("an empty mbox: no messages")
        elif is_from_line(lines[0]):
            verdict = self._("the first line is a From line: the POP3 server can split it")
        else:
            verdict = self._("the first line is not a From line (From SENDER DATE): the POP3 "
                             "server cannot split it")
        return "\n".join([f"# {path}", *shown, f"# {verdict}"])

    def _lang(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        from mailtalk.practice.i18n import LANGUAGES

        if len(args) != 1 or args[0] not in LANGUAGES:
            raise MailtalkError(self._("usage: :lang en|nl"))
        self.set_language(args[0])
        # the session's own words follow: notes, errors, :help, the toolbar
        conv.options = replace(conv.options, language=args[0])
        self.progress.language = args[0]
        self.progress.save()
        ui.show_block(self.panel())

    def set_language(self, language: str) -> None:
        """Speak ``language`` from now on: the prose, the coach's words, :help's list."""
        self.language = language
        self._ = translation(language).gettext
        self.heading = self._("practice commands")
        # In place: the REPL's completer holds this very dict.
        self._commands.clear()
        self._commands.update(self._command_table())

    def _glossary(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        ui.show_block(glossary_text(self.language))

    def _list(self, conv: Conversation, ui: MetaUI, args: list[str]) -> None:
        ui.show_block(lesson_list(self.progress, self.language))


def take_up(world: World, progress: Progress, lesson: Lesson, again: bool = False) -> None:
    """Make ``lesson`` the one worked on (``Progress.take_up``: ``again``, asked for by
    number, begins a lesson done before anew) and the world ready for it: its setup is
    made when it begins, or when the world was made ready for another lesson since. A
    lesson gone on with keeps what the learner changed (a control file edited while no
    prompt was open)."""
    going_on = progress.take_up(lesson.name, utc_now(), again)
    if not going_on or world.prepared_for() != lesson.name:
        world.prepare(lesson)
    progress.save()


def ask_dns(resolver: str, name: str, kind: str) -> str:
    """One question to the world's DNS, answered as dig's answer section reads."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    host, _, port = resolver.rpartition(":")
    try:
        rdtype = dns.rdatatype.from_text(kind.upper())
        query = dns.message.make_query(name, rdtype)
    except (dns.exception.DNSException, ValueError) as error:
        raise MailtalkError(f"cannot ask {name} {kind}: {error}") from None
    try:
        answer = dns.query.udp(query, host, port=int(port), timeout=3.0)
    except (dns.exception.DNSException, OSError) as error:
        raise MailtalkError(f"the world's DNS at {resolver} did not answer: {error}") from None
    lines = [f";; {name} {kind.upper()}: {dns.rcode.to_text(answer.rcode())}"]
    for rrset in answer.answer:
        lines += [line for line in rrset.to_text().splitlines()]
    if len(lines) == 1:
        lines.append(";; no such record")
    return "\n".join(lines)


def record_answered(
    resolver: str, name: str, kind: str, value: str, patience: float = 3.0
) -> bool:
    """Whether the world's DNS answers the record ``name kind value`` (among the others
    of that name and type) within ``patience`` seconds."""
    import time

    import dns.exception
    import dns.message
    import dns.name
    import dns.query
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    host, _, port = resolver.rpartition(":")
    try:
        rdtype = dns.rdatatype.from_text(kind.upper())
        wanted = dns.rdata.from_text(dns.rdataclass.IN, rdtype, value,
                                     origin=dns.name.root, relativize=False)
        query = dns.message.make_query(name, rdtype)
    except (dns.exception.DNSException, ValueError):
        return False
    deadline = time.monotonic() + patience
    while True:
        try:
            answer = dns.query.udp(query, host, port=int(port), timeout=1.0)
            if any(wanted in rrset for rrset in answer.answer):
                return True
        except (dns.exception.DNSException, OSError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def lesson_list(progress: Progress, language: str) -> str:
    """Every lesson, a line each, with a mark for those done."""
    _ = translation(language).gettext
    lines = []
    for lesson in load_lessons():
        state = progress.lessons.get(lesson.name)
        mark = "✓" if state is not None and state.done else " "
        lines.append(f" {mark} {lesson.number:2d}  {lesson.words(language).title}")
    lines.append("")
    lines.append(_("mailtalk practice --lesson N starts one; :lesson N inside."))
    return "\n".join(lines)


def fill_variables(text: str, variables: Mapping[str, str]) -> str:
    """``${NAME}`` replaced by its value; a name not there stays as it is."""
    return _VARIABLE.sub(lambda match: variables.get(match.group(1), match.group(0)), text)


def _one_line(label: str, goal: str) -> str:
    """``label`` with the goal's first words in it, on one 80-column line (a note's
    ``# `` before it, the last column left free): its first sentence or clause, else
    cut at a word."""
    text = " ".join(goal.split())
    room = WIDTH - 1 - len(label.replace("{goal}", ""))
    for stop in (". ", ": ", "; ", ", "):
        if len(text) <= room:
            break
        head = text.split(stop, 1)[0].rstrip(".")
        if len(head) <= room and len(head) >= 20 and head != text:
            text = head
    if len(text) > room:
        text = text[: room - 1].rsplit(" ", 1)[0].rstrip(" :,;") + "…"
    return label.format(goal=text)


def _wrap(text: str, indent: str = "") -> str:
    """Paragraphs wrapped to fit 80 columns; lines that start with spaces (commands to
    type) kept as they are."""
    out = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith("    ") or line.startswith("\t") for line in lines):
            out.append("\n".join(indent + line for line in lines))
        else:
            out.append(
                textwrap.fill(" ".join(lines), WIDTH, initial_indent=indent,
                              subsequent_indent=indent)
            )
    return "\n\n".join(out)
