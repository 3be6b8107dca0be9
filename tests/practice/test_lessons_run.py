"""Every lesson against a fresh world: its solution completes it, its wrong attempt does
not, and the same lesson done with another client (swaks, curl, dnspython, Python's
smtplib/poplib/imaplib, a raw socket) completes it too. The checks read only what the
servers journalled and hold, so who typed the commands does not matter.

The solutions run through the real binary: ``mailtalk run solution.mt`` with the world's
addresses in the environment, or ``bash solution.sh`` (more than one session, files
edited between them, the DNS asked).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from mailtalk.practice.lessons import Lesson, find_lesson, load_lessons
from mailtalk.practice.progress import LessonProgress
from mailtalk.practice.setup import MapWorld
from mailtalk.practice.tracker import LessonTracker
from mailtalk.practice.world import World, start_world
from mailtalk.servers.journal import JournalReader

BIN = Path(sys.executable).parent
LESSONS = load_lessons()
SETTLE = 2.0  # seconds a wrong attempt is given before "not done" is believed


class Run:
    """A fresh world made ready for one lesson, and a tracker following it."""

    def __init__(self, world: World, lesson: Lesson) -> None:
        self.world = world
        self.lesson = lesson
        self.view = MapWorld(world.map)
        self.view.prepare(lesson)
        time.sleep(1.2)  # the DNS reads a changed records file within a second
        self.tracker = LessonTracker(
            lesson, LessonProgress(), JournalReader(self.view.journal_path),
            self.view.server_root,
        )
        self.variables = self.view.session_variables()

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("MAILTALK_")}
        env.update(self.variables)
        env.update(
            LESSON=str(self.lesson.folder),
            MAILTALK_PASSWORD="wonderland",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            NETRC="/nonexistent",
            NO_COLOR="1",
        )
        return env

    def run_file(self, name: str) -> subprocess.CompletedProcess[str]:
        """solution or wrong, as a learner would run it from a terminal."""
        env = self.environment()
        session = self.lesson.folder / f"{name}.mt"
        if session.is_file():
            command = [str(BIN / "mailtalk"), "run", str(session)]
        else:
            command = ["bash", str(self.lesson.folder / f"{name}.sh")]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    def done_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            self.tracker.poll()
            if self.tracker.done or time.monotonic() > deadline:
                return self.tracker.done
            time.sleep(0.2)

    def address(self, host: str, service: str) -> tuple[str, int]:
        return self.world.address(host), self.world.port(host, service)

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.world.cafile))


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Callable[[Lesson], Run]]:
    worlds: list[World] = []

    def make(lesson: Lesson) -> Run:
        world = start_world(tmp_path / f"world-{len(worlds)}")
        worlds.append(world)
        return Run(world, lesson)

    yield make
    for world in worlds:
        world.stop()


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_the_solution_completes_the_lesson(
    lesson: Lesson, fresh: Callable[[Lesson], Run]
) -> None:
    run = fresh(lesson)
    result = run.run_file("solution")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run.done_within(20), (
        f"stuck at step {run.tracker.current.key if run.tracker.current else '?'}; "
        f"{result.stdout[-2000:]}"
    )


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_the_wrong_attempt_does_not(lesson: Lesson, fresh: Callable[[Lesson], Run]) -> None:
    run = fresh(lesson)
    run.run_file("wrong")  # it may fail on purpose (a refusal it expects, or not)
    assert not run.done_within(SETTLE)
    assert run.tracker.progress.step < len(lesson.steps)


# -- the same lessons with clients mailtalk did not write ------------------------------


def ask(run: Run, name: str, rdtype: str) -> None:
    host, port = run.address("ns.isp.test", "dns")
    dns.query.udp(dns.message.make_query(name, rdtype), host, port=port, timeout=5)


def swaks(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        if os.environ.get("MAILTALK_REQUIRE_REAL_SERVERS"):
            pytest.fail("swaks is not installed (scripts/real-servers install)")
        pytest.skip("swaks is not installed (scripts/real-servers install)")
    return subprocess.run(["swaks", "--hide-all", *args], capture_output=True, text=True,
                          timeout=60)


def swaks_to(run: Run, host: str, service: str, *args: str) -> subprocess.CompletedProcess[str]:
    address, port = run.address(host, service)
    return swaks(run, "--server", address, "--port", str(port), "--helo", "learner.test", *args)


def via_isp(run: Run, to: str) -> None:
    result = swaks_to(
        run, "mail.isp.test", "submission", "--from", "alice@isp.test", "--to", to,
        "--tls", "--tls-ca-path", str(run.world.cafile), "--auth", "PLAIN",
        "--auth-user", "alice", "--auth-password", "wonderland",
    )
    assert result.returncode == 0, result.stderr


def lesson_1(run: Run) -> None:
    for name, rdtype in (("isp.test", "MX"), ("example.net", "MX"), ("mx.example.net", "A")):
        ask(run, name, rdtype)


def lesson_2(run: Run) -> None:
    result = swaks_to(run, "mx.example.net", "smtp", "--from", "alice@isp.test",
                      "--to", "bob@example.net", "--header", "Subject: by swaks")
    assert result.returncode == 0, result.stderr


def lesson_3(run: Run) -> None:
    """A raw socket, as telnet: the 503 first, then the right order."""
    with socket.create_connection(run.address("mx.example.net", "smtp"), timeout=10) as raw:
        stream = raw.makefile("rwb")

        def say(line: str) -> bytes:
            stream.write(line.encode() + b"\r\n")
            stream.flush()
            return stream.readline()

        stream.readline()
        assert say("HELO learner.test").startswith(b"250")
        assert say("RCPT TO:<bob@example.net>").startswith(b"503")
        assert say("MAIL FROM:<alice@isp.test>").startswith(b"250")
        assert say("RCPT TO:<bob@example.net>").startswith(b"250")
        say("QUIT")


def lesson_4(run: Run) -> None:
    for name, rdtype in (("shop.test", "MX"), ("plain.test", "MX"), ("plain.test", "A"),
                         ("closed.test", "MX")):
        ask(run, name, rdtype)
    via_isp(run, "sales@shop.test")


def lesson_5(run: Run) -> None:
    via_isp(run, "bob@example.net")


def lesson_6(run: Run) -> None:
    refused = swaks_to(run, "mail.stranger.test", "smtp", "--from", "alice@isp.test",
                       "--to", "bob@example.net")
    assert refused.returncode != 0  # swaks says the RCPT was refused
    via_isp(run, "bob@example.net")


def lesson_7(run: Run) -> None:
    mx = Path(run.variables["MX_EXAMPLE_NET_ROOT"]) / "control"
    stranger = Path(run.variables["MAIL_STRANGER_TEST_ROOT"]) / "control"
    address = run.address("mx.example.net", "smtp")

    def rcpt(to: str, where: tuple[str, int] = address) -> int:
        with smtplib.SMTP(*where, timeout=10) as client:
            client.helo("learner.test")
            client.mail("alice@isp.test")
            return client.rcpt(to)[0]

    assert rcpt("bob@example.org") >= 500
    with (mx / "rcpthosts").open("a") as stream:
        stream.write("example.org\n")
    assert rcpt("bob@example.org") == 550  # ours now, but whose mailbox? (5.1.1)
    with (mx / "virtualdomains").open("a") as stream:
        stream.write("example.org:bob\n")
    with smtplib.SMTP(*address, timeout=10) as client:
        client.sendmail("alice@isp.test", ["info@example.org"], b"Subject: x\r\n\r\nhi\r\n")
    with (stranger / "relayclients").open("a") as stream:
        stream.write("127.0.0.1\n")
    assert rcpt("bob@example.net", run.address("mail.stranger.test", "smtp")) == 250


def lesson_8(run: Run) -> None:
    def sender_code() -> int:
        with smtplib.SMTP(*run.address("mx.example.net", "smtp"), timeout=10) as client:
            client.helo("learner.test")
            return client.mail("you@my-company.test")[0]

    assert sender_code() >= 500
    records = Path(run.variables["NS_ISP_TEST_ROOT"]) / "dns" / "records"
    with records.open("a") as stream:
        stream.write("my-company.test MX 10 mail.isp.test\n")
    time.sleep(1.5)
    ask(run, "my-company.test", "MX")
    assert sender_code() == 250


def lesson_9(run: Run) -> None:
    """Raw sockets: one that waits out the greet pause, one that talks at once (554), and
    HELO on the first after that."""
    address = run.address("mx.example.net", "smtp")
    with socket.create_connection(address, timeout=20) as patient:
        stream = patient.makefile("rwb")
        assert stream.readline().startswith(b"220")  # after the pause
        with socket.create_connection(address, timeout=10) as hasty:
            hasty.sendall(b"HELO learner.test\r\n")  # before any greeting
            replies = hasty.makefile("rb")
            assert replies.readline().startswith(b"554")
            assert replies.readline().startswith(b"503")
            hasty.sendall(b"QUIT\r\n")
            assert replies.readline().startswith(b"221")
        stream.write(b"HELO learner.test\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250")
        stream.write(b"QUIT\r\n")
        stream.flush()
        stream.readline()


def lesson_10(run: Run) -> None:
    host, port = run.address("mx.example.net", "pop3")
    first = poplib.POP3(host, port, timeout=10)
    first.user("bob")
    first.pass_("builder")
    first.stat()
    first.list()
    first.retr(1)
    first.dele(1)
    first.close()  # gone without QUIT (poplib closes the socket, sends nothing)
    time.sleep(0.3)
    second = poplib.POP3(host, port, timeout=10)
    second.user("bob")
    second.pass_("builder")
    second.dele(1)
    second.quit()


def lesson_11(run: Run) -> None:
    host, port = run.address("mx.example.net", "pop3")
    wrong = poplib.POP3(host, port, timeout=10)
    wrong.user("bob")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        wrong.pass_("wrong")
    wrong.quit()
    holder = poplib.POP3(host, port, timeout=10)
    holder.user("bob")
    holder.pass_("builder")
    second = poplib.POP3(host, port, timeout=10)
    second.user("bob")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("builder")
    second.quit()
    holder.quit()
    again = poplib.POP3(host, port, timeout=10)
    again.user("bob")
    again.pass_("builder")
    again.quit()


def lesson_13(run: Run) -> None:
    def attempt() -> tuple[int, bool]:
        with smtplib.SMTP(*run.address("mx.example.net", "smtp"), timeout=10) as client:
            client.helo("learner.test")
            code = client.mail("alice@isp.test")[0]
        pop = poplib.POP3(*run.address("mx.example.net", "pop3"), timeout=10)
        pop.user("bob")
        try:
            pop.pass_("builder")
            logged_in = True
        except poplib.error_proto as error:
            assert b"[SYS/TEMP]" in error.args[0]
            logged_in = False
        pop.quit()
        return code, logged_in

    assert attempt() == (452, False)
    (Path(run.variables["MX_EXAMPLE_NET_ROOT"]) / "control" / "faults").write_text("")
    assert attempt() == (250, True)


def lesson_15(run: Run) -> None:
    via_isp(run, "bob@friends.test")
    deadline = time.monotonic() + 15
    while run.tracker.progress.step < 2 and time.monotonic() < deadline:  # the bounce
        run.tracker.poll()
        time.sleep(0.2)
    records = Path(run.variables["NS_ISP_TEST_ROOT"]) / "dns" / "records"
    with records.open("a") as stream:
        stream.write("friends.test MX 5 mx.example.net\n")
    with (Path(run.variables["MX_EXAMPLE_NET_ROOT"]) / "control" / "rcpthosts").open("a") as f:
        f.write("friends.test\n")
    time.sleep(1.5)
    ask(run, "friends.test", "MX")
    via_isp(run, "bob@friends.test")
    time.sleep(3)
    host, port = run.address("mx.example.net", "imap")
    client = imaplib.IMAP4(host, port)
    client.login("bob", "builder")
    client.select("INBOX")
    client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    client.logout()


def lesson_12(run: Run) -> None:
    host, port = run.address("mx.example.net", "imap")
    client = imaplib.IMAP4(host, port)
    client.login("bob", "builder")
    client.select("INBOX")
    client.fetch("1", "(BODY.PEEK[HEADER])")
    client.store("1", "+FLAGS", "(\\Seen)")
    tag = client._new_tag().decode()  # imaplib has no IDLE of its own
    client.send(f"{tag} IDLE\r\n".encode())
    assert client.readline().startswith(b"+")
    with smtplib.SMTP(*run.address("mx.example.net", "smtp"), timeout=10) as smtp:
        smtp.sendmail("alice@isp.test", ["bob@example.net"], b"Subject: while idle\r\n\r\nhi\r\n")
    assert b"EXISTS" in client.readline()
    client.send(b"DONE\r\n")
    while not client.readline().startswith(tag.encode()):
        pass
    client.logout()


def lesson_14(run: Run) -> None:
    """poplib meets the refusal; the spool repaired as a script would; poplib fetches."""
    host, port = run.address("mx.example.net", "pop3")
    client = poplib.POP3(host, port, timeout=10)
    client.user("dave")
    with pytest.raises(poplib.error_proto, match=r"SYS/PERM.*From lines"):
        client.pass_("postbox")
    client.quit()
    spool = Path(run.variables["MX_EXAMPLE_NET_ROOT"]) / "mail" / "dave" / "mbox"
    repaired = spool.with_name("mbox.new")
    repaired.write_bytes(b"From backup@example.net Mon Dec  1 07:00:00 2025\n"
                         + spool.read_bytes())
    repaired.rename(spool)
    client = poplib.POP3(host, port, timeout=10)
    client.user("dave")
    client.pass_("postbox")
    assert client.stat()[0] == 2
    assert b"Subject: Backup report" in client.retr(1)[1]
    client.dele(1)
    client.quit()
    assert spool.read_bytes().startswith(b"From carol@stranger.test ")


OTHER_CLIENTS: dict[int, Callable[[Run], None]] = {
    1: lesson_1, 2: lesson_2, 3: lesson_3, 4: lesson_4, 5: lesson_5, 6: lesson_6,
    7: lesson_7, 8: lesson_8, 9: lesson_9, 10: lesson_10, 11: lesson_11, 12: lesson_12,
    13: lesson_13, 14: lesson_14, 15: lesson_15,
}


def test_every_lesson_is_also_done_with_another_client() -> None:
    assert set(OTHER_CLIENTS) == {lesson.number for lesson in LESSONS}


@pytest.mark.interop
@pytest.mark.parametrize("number", sorted(OTHER_CLIENTS))
def test_another_client_completes_the_lesson(
    number: int, fresh: Callable[[Lesson], Run]
) -> None:
    run = fresh(find_lesson(str(number)))
    OTHER_CLIENTS[number](run)
    assert run.done_within(20), (
        f"stuck at step {run.tracker.current.key if run.tracker.current else '?'}"
    )
