"""A lesson's [setup] made true in a running world through its files, and undone by the
next lesson: control files put back, faults and scenarios cleared, the lesson's DNS
records replaced. Checked by what the servers answer over real sockets."""

from __future__ import annotations

import poplib
import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from mailtalk.errors import MailtalkError
from mailtalk.practice.coach import PracticeCoach
from mailtalk.practice.lessons import Lesson, find_lesson
from mailtalk.practice.progress import Progress
from mailtalk.practice.setup import MapWorld
from mailtalk.practice.world import World

Start = Callable[..., World]


def rcpt(world: World, host: str, to: str) -> int:
    with smtplib.SMTP(world.address(host), world.port(host, "smtp"), timeout=10) as client:
        client.helo("learner.test")
        client.mail("alice@isp.test")
        return client.rcpt(to)[0]


def mx_answer(world: World, name: str) -> list[str]:
    query = dns.message.make_query(name, "MX")
    reply = dns.query.udp(query, world.address("ns.isp.test"), port=world.port("ns.isp.test",
                                                                               "dns"), timeout=5)
    return [item.to_text() for rrset in reply.answer for item in rrset]


def test_a_lesson_changes_the_world_and_the_next_puts_it_back(start: Start) -> None:
    world = start()
    view = MapWorld(world.map)
    rcpthosts = Path(view.server_root("mx.example.net") or "") / "control" / "rcpthosts"
    original = rcpthosts.read_text()
    view.prepare(find_lesson("4"))  # shop.test taken by the MX, and its records
    time.sleep(1.2)
    assert "shop.test" in rcpthosts.read_text()
    assert sorted(mx_answer(world, "shop.test")) == ["10 mx.example.net.",
                                                     "20 mail.stranger.test."]
    view.edit_control("mx.example.net", "rcpthosts", "add", "learner-edit.test")
    view.prepare(find_lesson("8"))  # the sender-domain scenario on the MX
    time.sleep(1.2)
    assert rcpthosts.read_text() == original
    assert mx_answer(world, "shop.test") == []
    with smtplib.SMTP(world.address("mx.example.net"), world.port("mx.example.net", "smtp"),
                      timeout=10) as client:
        client.helo("learner.test")
        assert client.mail("you@my-company.test")[0] == 501
    view.prepare(find_lesson("2"))
    assert rcpt(world, "mx.example.net", "bob@example.net") == 250
    with smtplib.SMTP(world.address("mx.example.net"), world.port("mx.example.net", "smtp"),
                      timeout=10) as client:
        client.helo("learner.test")
        assert client.mail("you@my-company.test")[0] == 250  # the scenario is gone


def test_the_learner_adds_a_record_and_edits_control_files(start: Start) -> None:
    world = start()
    view = MapWorld(world.map)
    view.add_record("new.test MX 10 mail.isp.test")
    time.sleep(1.2)
    assert mx_answer(world, "new.test") == ["10 mail.isp.test."]
    with pytest.raises(MailtalkError, match="the DNS would not read"):
        view.add_record("new.test MX ten mail.isp.test")
    assert rcpt(world, "mail.stranger.test", "bob@example.net") >= 500
    view.edit_control("mail.stranger.test", "relayclients", "add", "127.0.0.1")
    assert rcpt(world, "mail.stranger.test", "bob@example.net") == 250
    view.edit_control("mail.stranger.test", "relayclients", "remove", "127.0.0.1")
    assert rcpt(world, "mail.stranger.test", "bob@example.net") >= 500
    with pytest.raises(MailtalkError, match="not a control file name"):
        view.control_file("mx.example.net", "../users")
    with pytest.raises(MailtalkError, match=r"no host nowhere\.test"):
        view.control_file("nowhere.test", "rcpthosts")


def test_a_lessons_url_gets_the_worlds_port(start: Start) -> None:
    world = start(prefer_standard=False)
    view = MapWorld(world.map)
    target = view.target("submission://mail.isp.test")
    assert target.host == "mail.isp.test"  # the name stays, for TLS
    assert target.port == world.port("mail.isp.test", "submission")
    assert ("mail.isp.test", world.address("mail.isp.test")) in view.resolve
    variables = view.session_variables()
    assert variables["MX_EXAMPLE_NET_POP3"] == (
        f"{world.address('mx.example.net')}:{world.port('mx.example.net', 'pop3')}"
    )
    assert variables["MX_EXAMPLE_NET_ADDRESS"] == world.address("mx.example.net")
    assert variables["MX_EXAMPLE_NET_SMTP_PORT"] == str(world.port("mx.example.net", "smtp"))


def dave_logs_in(world: World) -> bytes:
    """What PASS answers dave at the MX (his spool, if he has one, being read)."""
    client = poplib.POP3(world.address("mx.example.net"), world.port("mx.example.net", "pop3"),
                         timeout=10)
    client.user("dave")
    try:
        return client.pass_("postbox")
    except poplib.error_proto as error:
        return error.args[0]
    finally:
        client.quit()


def test_a_lessons_files_are_written_and_the_next_lesson_puts_back_the_worlds_own(
    start: Start,
) -> None:
    world = start()
    view = MapWorld(world.map)
    spool = Path(view.host_root("mx.example.net")) / "mail" / "dave" / "mbox"
    assert not spool.exists() and dave_logs_in(world).startswith(b"+OK Logged in: 0 messages")
    view.prepare(find_lesson("14"))
    assert spool.read_bytes().startswith(b"Return-Path: <backup@example.net>\n")
    assert dave_logs_in(world).startswith(b"-ERR [SYS/PERM] Unable to process From lines")
    spool.write_bytes(b"edited by the learner\n")
    view.prepare(find_lesson("14"))  # :reset: the lesson's spool again
    assert spool.read_bytes().startswith(b"Return-Path: <backup@example.net>\n")
    view.prepare(find_lesson("2"))
    assert not spool.exists()  # the world had none: removed
    assert dave_logs_in(world).startswith(b"+OK Logged in: 0 messages")

    # A world with a spool of its own at that path gets it back after the lesson.
    own = b"From carol Tue Dec  2 12:30:00 2025\nSubject: own\n\nmine\n"
    other = start("other")
    other_view = MapWorld(other.map)
    other_spool = Path(other_view.host_root("mx.example.net")) / "mail" / "dave" / "mbox"
    other_spool.parent.mkdir(parents=True, exist_ok=True)
    other_spool.write_bytes(own)
    other_view.prepare(find_lesson("14"))
    assert other_spool.read_bytes() != own
    other_view.prepare(find_lesson("3"))
    assert other_spool.read_bytes() == own
    assert dave_logs_in(other).startswith(b"+OK Logged in: 1 messages")


def test_a_lesson_file_must_be_a_plain_path_in_the_root(start: Start) -> None:
    view = MapWorld(start().map)
    for path in ("../escape", "/etc/passwd", "mail/../../x", "control/rcpthosts", ".hidden",
                 "mail//dave", "files.orig/x"):
        lesson = Lesson(number=99, slug="bad", folder=Path("99-bad"), connect="smtp://x",
                        steps=(), setup={"hosts": {"mx.example.net": {"files": {path: "x"}}}})
        with pytest.raises(MailtalkError, match="not a plain path"):
            view.prepare(lesson)
    assert not (Path(view.host_root("mx.example.net")).parent / "escape").exists()


class Screen:
    """What the coach shows, as a REPL would print it."""

    raw = False
    block_colour = False

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, text: str, kind: str = "info") -> None:
        self.lines.append(text)

    def show_block(self, text: str) -> None:
        self.lines.append(text)

    def text(self) -> str:
        shown, self.lines = "\n".join(self.lines), []
        return shown


def test_the_coach_shows_and_repairs_a_spool(start: Start, tmp_path: Path) -> None:
    world = start()
    view = MapWorld(world.map)
    lesson = find_lesson("14")
    view.prepare(lesson)
    coach = PracticeCoach(view, Progress(tmp_path / "progress.json"), "en", lesson)
    spool = coach.commands["spool"].handler
    screen = Screen()
    spool(None, screen, ["mx.example.net", "dave"])  # type: ignore[arg-type]
    shown = screen.text()
    assert "  1  Return-Path: <backup@example.net>" in shown
    assert "the first line is not a From line" in shown
    spool(None, screen, ["mx.example.net", "dave", "insert", "From", "backup@example.net",  # type: ignore[arg-type]
                         "Mon", "Dec", "1", "07:00:00", "2025"])
    assert "the first line is a From line" in screen.text()
    assert dave_logs_in(world).startswith(b"+OK Logged in: 2 messages")
    spool(None, screen, ["mx.example.net", "dave", "delete", "1"])  # type: ignore[arg-type]
    assert dave_logs_in(world).startswith(b"-ERR [SYS/PERM]")
    for wrong in (["mx.example.net"], ["mx.example.net", "dave", "delete", "99"],
                  ["mx.example.net", "../x"], ["nowhere.test", "dave"],
                  ["mx.example.net", "dave", "delete"]):
        with pytest.raises(MailtalkError):
            spool(None, screen, wrong)  # type: ignore[arg-type]
    spool(None, screen, ["mx.example.net", "bob"])  # type: ignore[arg-type]
    assert "no mbox here" in screen.text()
    coach.set_language("nl")
    coach.commands["spool"].handler(None, screen, ["mx.example.net", "dave"])  # type: ignore[arg-type]
    assert "de eerste regel is geen From-regel" in screen.text()


def test_open_follows_a_world_host_to_its_own_port(start: Start) -> None:
    """A world on free ports: the REPL's :open smtp://mx.example.net (port 25 in the URL)
    connects to the MX's SMTP wherever it listens; a world on the standard ports moves
    nothing."""
    from mailtalk.client.conversation import Conversation
    from mailtalk.client.options import SessionOptions
    from mailtalk.net.target import parse_url

    world = start(prefer_standard=False)
    view = MapWorld(world.map)
    moves = view.port_moves()
    assert ("mx.example.net", 25, world.port("mx.example.net", "smtp")) in moves
    assert ("mail.isp.test", 587, world.port("mail.isp.test", "submission")) in moves
    assert not any(host == "ns.isp.test" for host, _, _ in moves)  # no mail service there
    first = view.target("pop3://mx.example.net")
    notes: list[str] = []

    class Listener:
        def sent(self, text: str, typed: bool) -> None: ...
        def event(self, event: object, latency: float) -> None: ...
        def note(self, text: str, kind: str = "info") -> None:
            notes.append(text)
        def closed(self) -> None: ...

    conv = Conversation(SessionOptions(target=first, starttls=False, resolve=view.resolve,
                                       port_moves=moves), Listener())
    conv.start()
    try:
        conv.retarget(parse_url("smtp://mx.example.net"))
        assert conv.target.port == world.port("mx.example.net", "smtp")
        assert conv.greeting.startswith("220 mx.example.net ")
        assert notes[-1].startswith(f"connected to mx.example.net:{conv.target.port} ")
    finally:
        conv.close()


def test_control_edits_say_what_they_changed(start: Start) -> None:
    world = start()
    view = MapWorld(world.map)
    faults = view.control_file("mx.example.net", "faults")
    faults.write_text("smtp:mail=452 4.4.5 full\npop3:pass=-ERR [SYS/TEMP] quota\nsmtp:data=451\n")
    assert view.edit_control("mx.example.net", "faults", "remove", "pop3:pass=*") == 1
    assert view.edit_control("mx.example.net", "faults", "remove", "smtp:mail=*") == 1
    assert faults.read_text() == "smtp:data=451\n"
    assert view.edit_control("mx.example.net", "faults", "remove", "smtp:mail=*") == 0
    assert view.edit_control("mx.example.net", "faults", "add", "smtp:data=451") == 0
    assert view.edit_control("mx.example.net", "faults", "remove", "*") == 0  # no lone *
    assert view.edit_control("mx.example.net", "faults", "remove", "smtp:data=451") == 1
