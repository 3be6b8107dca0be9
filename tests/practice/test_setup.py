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
