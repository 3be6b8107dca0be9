"""A lesson's [setup] made true in a running world through its files, and undone by the
next lesson: control files put back, faults and scenarios cleared, the lesson's DNS
records replaced. Checked by what the servers answer over real sockets."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from mailtalk.errors import MailtalkError
from mailtalk.practice.lessons import find_lesson
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
    assert view.session_variables()["MX_EXAMPLE_NET_POP3"] == (
        f"{world.address('mx.example.net')}:{world.port('mx.example.net', 'pop3')}"
    )


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
