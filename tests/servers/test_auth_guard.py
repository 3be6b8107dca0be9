"""Password guessing and error floods against the reference servers (issue 15, item 4).

Hostile clients on loopback, each bounded in count and time, against real servers:
a guesser is slowed (the failure delay grows, and more connections from its address
do not guess faster), then refused (the per-address budget), then cut off (the error
limit), while a client from another address logs in as usual and the server's CPU stays
low; an error flood (10,000 RCPTs to unknown users, bad POP3 and IMAP commands) ends
with the protocol's goodbye. 127.0.0.2 is "another address": Linux routes all of
127.0.0.0/8 to loopback, so a client socket bound there reaches a server on 127.0.0.1.
Bounds are lower bounds on delays and generous upper bounds elsewhere (a shared, busy
machine).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.context import ServerSettings
from mailtalk.servers.guard import (
    FAILURE_WINDOW,
    MAX_ADDRESSES,
    AuthGuard,
    SessionErrors,
    address_key,
)

TIMEOUT = 20.0
USERS = [("alice", "secret")]
OTHER_ADDRESS = "127.0.0.2"


class Client:
    """A raw line client, from ``source`` (another loopback address: another client)."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.reader = self.sock.makefile("rb")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def line(self) -> str:
        """One line, or "" once the server hung up."""
        try:
            return self.reader.readline().decode("utf-8", "replace").rstrip("\r\n")
        except ConnectionResetError:
            return ""

    def smtp_reply(self) -> str:
        """One SMTP reply's last line, or "" once the server hung up."""
        while True:
            line = self.line()
            if len(line) < 4 or line[3] != "-":
                return line

    def tagged(self, tag: str) -> str:
        """Lines up to ``tag``'s completion (that line), or a BYE, or ""."""
        while True:
            line = self.line()
            if not line or line.startswith(f"{tag} ") or line.startswith("* BYE"):
                return line

    def closed(self) -> bool:
        """The server hung up (what is left to read ends at once)."""
        while True:
            try:
                if not self.reader.readline():
                    return True
            except ConnectionResetError:
                return True

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def cram_md5(user: str, password: str, challenge_line: str) -> str:
    """The answer to a CRAM-MD5 challenge line ("334 ...", "+ ...")."""
    import hashlib
    import hmac

    challenge = base64.b64decode(challenge_line.split(" ", 1)[1])
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return base64.b64encode(f"{user} {digest}".encode()).decode()


def smtp_client(port: int, source: str = "127.0.0.1") -> Client:
    client = Client(port, source)
    assert client.smtp_reply().startswith("220")
    client.send("EHLO guesser.test")
    assert client.smtp_reply().startswith("250")
    return client


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[RunningServers]:
    """Servers with a small failure delay (0.1 s, doubling) and budget (4 failures)."""
    with run_servers(tmp_path, smtp=0, pop3=0, imap=0, users=USERS, auth_failure_delay=0.1,
                     auth_failures_per_address=4) as servers:
        yield servers


# -- the failure delay and the budget -------------------------------------------------


def test_a_guesser_is_slowed_then_refused_and_other_addresses_are_not(
    guarded: RunningServers,
) -> None:
    port = guarded.port("smtp")
    guesser = smtp_client(port)
    waits = []
    for number in range(4):
        started = time.monotonic()
        guesser.send(f"AUTH PLAIN {plain('alice', f'guess{number}')}")
        assert guesser.smtp_reply().startswith("535 5.7.8")
        waits.append(time.monotonic() - started)
    # 0.1, 0.2, 0.4, 0.8 s: doubled for each earlier failure from the address.
    for number, waited in enumerate(waits):
        assert waited >= 0.1 * 2**number * 0.9, waits
    # The budget is spent: even the right password is refused now, without a check.
    guesser.send(f"AUTH PLAIN {plain('alice', 'secret')}")
    assert guesser.smtp_reply().startswith("454 4.7.0 Too many failed logins from 127.0.0.1")
    guesser.close()
    assert guarded.context.guard.refused_for("127.0.0.1") > FAILURE_WINDOW / 2
    # Another address is not concerned.
    other = smtp_client(port, OTHER_ADDRESS)
    other.send(f"AUTH PLAIN {plain('alice', 'secret')}")
    assert other.smtp_reply().startswith("235")
    other.close()


def test_failures_on_other_connections_from_the_address_make_the_delay_grow(
    tmp_path: Path,
) -> None:
    with run_servers(tmp_path, smtp=0, users=USERS, auth_failure_delay=0.1) as servers:
        guessers = [smtp_client(servers.port("smtp")) for _ in range(4)]
        started = time.monotonic()
        for guesser in guessers:
            guesser.send(f"AUTH PLAIN {plain('alice', 'wrong')}")
        answered = []
        for guesser in guessers:
            assert guesser.smtp_reply().startswith("535")
            answered.append(time.monotonic() - started)
        # Checked one at a time, failed in turn: 0.1, 0.2, 0.4, 0.8 s.
        for number, waited in enumerate(sorted(answered)):
            assert waited >= 0.1 * 2**number * 0.9, answered
        # The next guess from the address, on any connection, waits 1.6 s.
        started = time.monotonic()
        guessers[0].send(f"AUTH PLAIN {plain('alice', 'wrong')}")
        assert guessers[0].smtp_reply().startswith("535")
        assert time.monotonic() - started >= 1.6 * 0.9
        # Another client of the address waits for no penalty of theirs to log in.
        started = time.monotonic()
        guessers[1].send(f"AUTH PLAIN {plain('alice', 'secret')}")
        assert guessers[1].smtp_reply().startswith("235")
        assert time.monotonic() - started < 1.5
        for guesser in guessers:
            guesser.close()


def test_pop3_and_imap_share_the_budget_and_refuse_in_their_words(tmp_path: Path) -> None:
    with run_servers(tmp_path, pop3=0, imap=0, users=USERS, auth_failures_per_address=2) as s:
        pop3 = Client(s.port("pop3"))
        greeting = pop3.line()
        pop3.send("USER alice")
        assert pop3.line().startswith("+OK")
        pop3.send("PASS wrong")
        assert pop3.line() == "-ERR [AUTH] Authentication failed."
        # A wrong APOP digest is a guess too.
        assert re.search(r"<[^>]+>", greeting)
        pop3.send("APOP alice 0123456789abcdef0123456789abcdef")
        assert pop3.line() == "-ERR [AUTH] Authentication failed."
        pop3.send("USER alice")
        pop3.line()
        pop3.send("PASS secret")
        refused = "-ERR [SYS/TEMP] Too many failed logins from 127.0.0.1; try again later"
        assert pop3.line() == refused
        pop3.close()
        imap = Client(s.port("imap"))
        imap.line()
        imap.send("a LOGIN alice secret")
        assert imap.tagged("a").startswith("a NO [UNAVAILABLE] Too many failed logins")
        imap.send(f"b AUTHENTICATE PLAIN {plain('alice', 'secret')}")
        assert imap.tagged("b").startswith("b NO [UNAVAILABLE]")
        imap.close()
        other = Client(s.port("imap"), OTHER_ADDRESS)
        other.line()
        other.send("a LOGIN alice secret")
        assert other.tagged("a").startswith("a OK")
        other.close()


# -- many guessers at once: a real `mailtalk serve` ---------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    import json

    users_file = tmp_path / "users.txt"
    users_file.write_text("alice:secret\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "mailtalk", "serve", "--root", str(tmp_path / "root"),
         "--users-file", str(users_file), "--smtp", "0", "--imap", "0", "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(process.communicate()[1].decode())
    ports = {x["protocol"]: x["port"] for x in json.loads(line)["listeners"]}
    return process, ports


class Guesser(threading.Thread):
    """Wrong AUTH PLAIN on one connection until hung up on (or ``seconds`` pass)."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.codes: list[str] = []
        self.hung_up = False

    def run(self) -> None:
        client = smtp_client(self.port)
        deadline = time.monotonic() + self.seconds
        try:
            while time.monotonic() < deadline:
                client.send(f"AUTH PLAIN {plain('alice', f'guess{len(self.codes)}')}")
                reply = client.smtp_reply()
                if not reply:
                    self.hung_up = True
                    return
                self.codes.append(reply[:3])
                if reply.startswith("421"):
                    self.hung_up = client.closed()
                    return
        except OSError:
            self.hung_up = True
        finally:
            client.close()


def _imap_logins(port: int, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        client = Client(port, OTHER_ADDRESS)
        try:
            client.line()
            client.send("a LOGIN alice secret")
            reply = client.tagged("a")
            latencies.append(time.monotonic() - started if reply.startswith("a OK") else -1.0)
            client.send("b LOGOUT")
        finally:
            client.close()
        stop.wait(0.2)


def test_many_guessers_are_cut_off_and_cost_little_while_another_client_logs_in(
    tmp_path: Path,
) -> None:
    process, ports = _serve(tmp_path, "--auth-failure-delay", "0.05",
                            "--auth-failures-per-address", "5")
    try:
        cpu_before = _cpu_seconds(process.pid)
        latencies: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_imap_logins, args=(ports["imap"], stop, latencies))
        watcher.start()
        guessers = [Guesser(ports["smtp"], seconds=15.0) for _ in range(8)]
        for guesser in guessers:
            guesser.start()
        for guesser in guessers:
            guesser.join(30)
        stop.set()
        watcher.join(30)
        cpu = _cpu_seconds(process.pid) - cpu_before
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    codes = [code for guesser in guessers for code in guesser.codes]
    # Five passwords were checked (the budget); every other attempt was refused unchecked,
    # and every guesser was hung up on at its 20th error (the error limit).
    assert codes.count("535") == 5, codes
    assert set(codes) == {"535", "454", "421"}, codes
    assert all(g.hung_up and g.codes[-1] == "421" and len(g.codes) <= 21 for g in guessers)
    # Before the guard: 8 guessers kept both cores busy with scrypt for all 15 s.
    assert cpu < 5.0, cpu
    assert latencies and all(0 <= x < 3.0 for x in latencies), latencies


# -- error floods ---------------------------------------------------------------------


def test_ten_thousand_refused_recipients_end_at_the_error_limit(tmp_path: Path) -> None:
    with run_servers(tmp_path, smtp=0, users=USERS) as servers:
        client = smtp_client(servers.port("smtp"))
        client.send("MAIL FROM:<spammer@example.org>")
        assert client.smtp_reply().startswith("250")
        replies: list[str] = []
        started = time.monotonic()
        for batch in range(400):  # 400 x 25 = 10,000 RCPTs, pipelined 25 at a time
            client.sock.sendall(b"".join(
                f"RCPT TO:<nobody{batch * 25 + n}@localhost>\r\n".encode() for n in range(25)
            ))
            for _ in range(25):
                reply = client.smtp_reply()
                if not reply:
                    break
                replies.append(reply)
            if not reply or reply.startswith("421"):
                break
        assert client.closed()
        client.close()
    assert time.monotonic() - started < TIMEOUT
    assert [r[:3] for r in replies] == ["550"] * 20 + ["421"], replies[-3:]
    assert replies[-1].startswith("421 4.7.0 localhost Too many errors")


def test_a_delivered_message_forgives_smtp_errors_but_not_failed_logins(
    tmp_path: Path,
) -> None:
    with run_servers(tmp_path, smtp=0, users=USERS, error_limit=3) as servers:
        client = smtp_client(servers.port("smtp"))

        def deliver(refused: int) -> None:
            client.send("MAIL FROM:<a@example.org>")
            assert client.smtp_reply().startswith("250")
            for n in range(refused):
                client.send(f"RCPT TO:<nobody{n}@localhost>")
                assert client.smtp_reply().startswith("550")
            client.send("RCPT TO:<alice@localhost>")
            assert client.smtp_reply().startswith("250")
            client.send("DATA")
            assert client.smtp_reply().startswith("354")
            client.send("Subject: hi\r\n\r\nhi\r\n.")
            assert client.smtp_reply().startswith("250")

        deliver(refused=2)
        deliver(refused=2)  # 4 errors in all, but a delivery came between
        for n in range(3):
            client.send(f"AUTH PLAIN {plain('alice', f'wrong{n}')}")
            assert client.smtp_reply().startswith("535")
            if n < 2:
                deliver(refused=0)  # forgives nothing of a failed login
        client.send("NOOP")
        assert client.smtp_reply().startswith("421 4.7.0")
        assert client.closed()
        client.close()


def test_pop3_bad_commands_end_the_session(tmp_path: Path) -> None:
    with run_servers(tmp_path, smtp=None, pop3=0, users=USERS) as servers:
        client = Client(servers.port("pop3"))
        client.line()
        client.sock.sendall(b"".join(f"RETR {n}\r\n".encode() for n in range(25)))
        replies = [client.line() for _ in range(21)]
        assert all(r.startswith("-ERR RETR is not valid") for r in replies[:20]), replies
        assert replies[20] == "-ERR Too many bad commands."
        assert client.closed()
        client.close()


def test_imap_bads_in_a_row_end_the_session_and_an_answer_forgives_them(
    tmp_path: Path,
) -> None:
    with run_servers(tmp_path, smtp=None, imap=0, users=USERS) as servers:
        client = Client(servers.port("imap"))
        client.line()
        client.send("a LOGIN alice secret")
        assert client.tagged("a").startswith("a OK")
        for n in range(15):
            client.send(f"s{n} FROB")
            assert client.tagged(f"s{n}").startswith(f"s{n} BAD")
        # A NO answers a well-formed command (a client syncing folders gets many): it
        # forgives the BADs before it, and any number of NOs end nothing.
        for n in range(25):
            client.send(f"n{n} SELECT nosuch{n}")
            assert client.tagged(f"n{n}").startswith(f"n{n} NO")
        replies = []
        for n in range(25):
            client.send(f"x{n} FROB")
            reply = client.tagged(f"x{n}")
            replies.append(reply)
            if reply.startswith("* BYE"):
                break
        assert replies[-1] == "* BYE Too many invalid commands", replies[-3:]
        assert len(replies) == 21 and client.closed()
        client.close()


def test_unparsable_imap_lines_end_the_session(tmp_path: Path) -> None:
    with run_servers(tmp_path, smtp=None, imap=0, users=USERS) as servers:
        client = Client(servers.port("imap"))
        client.line()
        client.sock.sendall(b"".join(b"*** junk\r\n" for _ in range(100)))
        lines = []
        while line := client.line():
            lines.append(line)
        client.close()
    assert lines[-1] == "* BYE Too many invalid commands"
    assert len(lines) == 21


# -- the guard on its own -------------------------------------------------------------


def test_addresses_are_counted_by_ipv4_address_and_ipv6_64() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")


def test_the_budget_forgets_old_failures_and_remembers_a_bounded_number_of_addresses() -> None:
    now = [1000.0]
    guard = AuthGuard(ServerSettings(auth_failure_delay=1.0, auth_failures_per_address=3),
                      clock=lambda: now[0])
    for _ in range(3):
        guard.record_failure("192.0.2.1")
    assert guard.refused_for("192.0.2.1") == FAILURE_WINDOW
    assert guard.failure_delay("192.0.2.1") == 8.0
    now[0] += FAILURE_WINDOW / 2
    assert guard.refused_for("192.0.2.1") == FAILURE_WINDOW / 2
    now[0] += FAILURE_WINDOW / 2
    assert guard.refused_for("192.0.2.1") == 0.0
    assert guard.failure_delay("192.0.2.1") == 1.0
    for n in range(MAX_ADDRESSES + 100):
        guard.record_failure(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    assert len(guard._failures) <= MAX_ADDRESSES
    for _ in range(40):
        guard.record_failure("192.0.2.9")
    assert len(guard._failures["192.0.2.9"]) <= 17
    assert guard.failure_delay("192.0.2.9") == 15.0  # the cap


def test_session_errors() -> None:
    errors = SessionErrors(3)
    for _ in range(2):
        errors.error()
    errors.forgive()
    errors.error()
    errors.auth_failed()
    errors.auth_failed()
    errors.forgive()
    assert not errors.exceeded
    errors.auth_failed()
    assert errors.exceeded
    unlimited = SessionErrors(0)
    for _ in range(100):
        unlimited.error()
    assert not unlimited.exceeded


def test_the_journal_has_the_goodbye_as_the_commands_reply(tmp_path: Path) -> None:
    from mailtalk.servers.journal import Journal, read_events

    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    with run_servers(tmp_path / "root", smtp=0, pop3=0, users=USERS, error_limit=2,
                     journal=journal) as servers:
        client = smtp_client(servers.port("smtp"))
        for _ in range(2):
            client.send("VRFY")
            assert client.smtp_reply().startswith("501")
        client.send("NOOP")
        assert client.smtp_reply().startswith("421 4.7.0")
        assert client.closed()
        client.close()
        pop3 = Client(servers.port("pop3"))
        pop3.line()
        for _ in range(3):
            pop3.send("STAT")
        assert [pop3.line() for _ in range(3)][-1] == "-ERR Too many bad commands."
        assert pop3.closed()
        pop3.close()
    journal.close()
    events = read_events(path)
    for proto, verb, code in (("smtp", "NOOP", 421), ("pop3", "STAT", "-ERR")):
        commands = [e for e in events if e.get("proto") == proto and e["event"] == "command"]
        assert (commands[-1]["verb"], commands[-1]["code"]) == (verb, code)
        closes = [e for e in events if e.get("proto") == proto and e["event"] == "close"]
        assert closes[-1]["reason"] == "server"


def test_sasl_exchanges_spend_the_budget_and_are_refused_in_each_protocols_words(
    tmp_path: Path,
) -> None:
    """CRAM-MD5 (a secret checked inside an exchange, ServerSession._sasl_verdict): wrong
    answers count against the address; then even a right one is refused unchecked, in
    SMTP's, POP3's and IMAP's words."""
    with run_servers(tmp_path, smtp=0, pop3=0, imap=0, users=USERS,
                     auth_failures_per_address=2) as servers:
        smtp = smtp_client(servers.port("smtp"))
        for _ in range(2):
            smtp.send("AUTH CRAM-MD5")
            challenge = smtp.smtp_reply()
            assert challenge.startswith("334 ")
            smtp.send(cram_md5("alice", "wrong", challenge))
            assert smtp.smtp_reply().startswith("535 5.7.8")
        smtp.send("AUTH CRAM-MD5")
        smtp.send(cram_md5("alice", "secret", smtp.smtp_reply()))
        assert smtp.smtp_reply().startswith("454 4.7.0 Too many failed logins from 127.0.0.1")
        smtp.close()
        pop3 = Client(servers.port("pop3"))
        pop3.line()
        pop3.send("AUTH CRAM-MD5")
        pop3.send(cram_md5("alice", "secret", pop3.line()))
        assert pop3.line() == (
            "-ERR [SYS/TEMP] Too many failed logins from 127.0.0.1; try again later"
        )
        pop3.close()
        imap = Client(servers.port("imap"))
        imap.line()
        imap.send("a AUTHENTICATE CRAM-MD5")
        imap.send(cram_md5("alice", "secret", imap.line()))
        assert imap.tagged("a").startswith("a NO [UNAVAILABLE] Too many failed logins")
        imap.close()
        other = Client(servers.port("imap"), OTHER_ADDRESS)
        other.line()
        other.send("a AUTHENTICATE CRAM-MD5")
        other.send(cram_md5("alice", "secret", other.line()))
        assert other.tagged("a").startswith("a OK")
        other.close()
