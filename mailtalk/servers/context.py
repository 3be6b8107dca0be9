"""What every session of the reference servers shares: settings, policy, store, faults.

A session asks the context questions ("may this recipient be accepted?", "what
does this personality say here?") and never reads files or policy itself, so
the protocol handlers stay about protocol.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from mailtalk.protocols.common import printable
from mailtalk.servers.control_watch import DirectoryWatch, plain_files
from mailtalk.servers.guard import AuthGuard
from mailtalk.servers.policy import CONTROL_DIR, Control, ControlError, RcptVerdict, decide_rcpt
from mailtalk.servers.transaction import Recipient
from mailtalk.servers.users import Users
from mailtalk.store.layout import StoreLayout
from mailtalk.store.maildir import CRLFToLF, Delivery, DeliveryTarget, Maildir

if TYPE_CHECKING:
    from mailtalk.servers.faults import FaultPlan
    from mailtalk.servers.journal import Journal
    from mailtalk.servers.personalities import Personality
    from mailtalk.store.queue import Envelope
    from mailtalk.store.users import MailStore

log = logging.getLogger("mailtalk.serve")

DEFAULT_MAX_SIZE = 50 * 1024 * 1024
DEFAULT_MAX_PER_ADDRESS = 20
DEFAULT_LINE_TIMEOUT = 60.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
# The files of ROOT/control/ that the servers read, users last (smtproutes is read at
# every delivery attempt instead).
CONTROL_FILES = ("me", "rcpthosts", "locals", "virtualdomains", "relayclients", "postmaster",
                 "users")
# Two more, read the same way, that change a running server's behaviour rather than its
# address policy: control/scenarios (scenario names, one a line: what `serve --scenario`
# gives) and control/faults (fault rules, one a line: `serve --fault`), on top of what
# the command line gave. A practice lesson, or a tester, turns a running server into a
# full-disk one and back without restarting it.
BEHAVIOUR_FILES = ("scenarios", "faults")
# Connections checked with a stat() per control file before control/ is watched instead
# (control_watch): a server that answers a few (a test, a lesson) never loads ctypes, and
# neither its start nor its first banner waits for it. Then again every WATCH_RETRY
# connections while there can be no watch (no control/ yet, a file there is a link).
WATCH_AFTER = 8
WATCH_RETRY = 1024
_REPLY_CACHE_SIZE = 4096  # filled-in replies kept; most are the same every session
_MAILDIR_CACHE_SIZE = 1024  # delivery targets kept, by user
# Queue ids are made of the process id and this count: one count for the whole process,
# so that the servers of a practice world (several contexts, one process) never hand out
# the same id.
_QUEUE_SEQUENCE = itertools.count(1)


@dataclass
class ServerSettings:
    """How the servers behave; ``mailtalk serve`` options and the Python API fill it."""

    personality: str = "mailtalk"
    max_size: int = DEFAULT_MAX_SIZE
    max_recipients: int = 100
    max_connections: int = 100
    # Connections from one client address at once (0: no limit): one classroom machine,
    # or one runaway script, cannot take every slot (Postfix's
    # smtpd_client_connection_count_limit, Dovecot's mail_max_userip_connections).
    max_connections_per_address: int = DEFAULT_MAX_PER_ADDRESS
    idle_timeout: float = 300.0
    # Seconds a line (command or message line) may take to arrive whole, plus one per
    # 500 bytes of it: a client sending a byte at a time is cut off (slowloris).
    line_timeout: float = DEFAULT_LINE_TIMEOUT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT  # seconds for a TLS handshake
    bare_newline: Literal["reject", "normalise"] = "reject"
    sink: bool = False  # accept everything, store nothing (benchmarks, smoke tests)
    check_sender_domain: bool = False
    resolver: str | None = None  # HOST[:PORT] for the sender-domain check
    relay: Literal["policy", "deny"] = "policy"  # "deny": the relay-denied scenario
    quota_bytes: int | None = None  # per user, for POP3 [SYS/TEMP] and IMAP OVERQUOTA
    login_delay: float = 0.0  # POP3 LOGIN-DELAY: seconds between two logins of a user
    # Password guessing and error floods (mailtalk.servers.guard): a wrong password is
    # answered this many seconds late, doubled for each recent failure from the address;
    # after auth_failures_per_address of them in 10 minutes the address is refused for a
    # while; a session ends after error_limit errors. 0 turns each off. The first two
    # are on for ``mailtalk serve`` (2 s, 10) and off by default from Python, where a
    # test suite fails logins on purpose, all from 127.0.0.1.
    auth_failure_delay: float = 0.0
    auth_failures_per_address: int = 0
    error_limit: int = 20
    max_literal: int = DEFAULT_MAX_SIZE  # largest IMAP literal (APPEND) accepted
    lock_busy: bool = False  # the lock-busy scenario: every maildrop is held locked
    # Seconds the SMTP greeting is held back (Sendmail's greet_pause; 0: off): a client
    # that talks before it is an early talker and gets the personality's refusal.
    greet_pause: float = 0.0
    # AUTH offered and accepted only over TLS, even from loopback (Postfix's
    # smtpd_tls_auth_only): what diagnose relay calls "AUTH only after STARTTLS"
    tls_auth_only: bool = False
    # Onward delivery of the relay queue (mailtalk.servers.delivery). On for
    # ``mailtalk serve``; off by default from Python, where tests inspect the queue.
    onward_delivery: bool = False
    # Greylisting (``greylist`` fault rules): seconds a new (network, sender, recipient)
    # triplet waits before a retry passes (postgrey's --delay; ``mailtalk serve`` makes it
    # 300 s, Python 0 so a test's retry passes), and how long an unseen one is kept.
    greylist_delay: float = 0.0
    greylist_lifetime: float = 35 * 86400.0  # postgrey's --max-age
    mx_port: int = 25  # the port MX hosts are connected on (smtproutes may name another)
    retry_schedule: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0)  # seconds; last repeats
    max_queue_age: float = 5 * 86400.0  # then a temporary failure becomes a bounce
    delivery_timeout: float = 300.0  # per SMTP reply when delivering (connect: at most 30 s)
    # A recipient whose RCPT said NOTIFY=...DELAY and still waits this long gets a delay
    # DSN, once (RFC 3461 4.1; Postfix's delay_warning_time).
    delay_warning: float = 4 * 3600.0


def apply_scenario_settings(settings: ServerSettings, values: Mapping[str, object]) -> None:
    """A scenario's settings (knowledge/scenarios.toml) on top of ``settings``."""
    for key, value in values.items():
        if key == "relay":
            settings.relay = "deny" if value == "deny" else "policy"
        elif key == "check_sender_domain":
            settings.check_sender_domain = bool(value)
        elif hasattr(settings, key):
            setattr(settings, key, value)
        else:
            raise ValueError(f"scenario setting {key!r} is not known to this server")


def _control_lines(root: Path, name: str) -> list[tuple[str, int, str]]:
    """(file, line number, text) of a control file's lines that are not blank or '#'."""
    try:
        text = (root / CONTROL_DIR / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeError) as error:
        raise ValueError(f"cannot read control/{name}: {error}") from None
    return [
        (name, number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def control_stamp(
    root: Path, names: Sequence[str] = CONTROL_FILES
) -> tuple[tuple[int, ...] | None, ...]:
    """What tells a changed control file: inode, size and times of each, or None."""
    directory = root / CONTROL_DIR
    return _stamp_paths([os.fspath(directory / name) for name in names])


def _stamp_paths(paths: Sequence[str]) -> tuple[tuple[int, ...] | None, ...]:
    """control_stamp of paths made once: a stat() each and nothing else, as it runs for
    every connection (no pathlib objects built on the way)."""
    stamps: list[tuple[int, ...] | None] = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    return tuple(stamps)


# RcptOutcome and ServerContext are plain classes, not dataclasses (see
# protocols.common.Line): neither is compared or printed.


class RcptOutcome:
    """The server's answer to one RCPT, as the protocol sessions use it."""

    __slots__ = ("accepted", "reply_key", "user")

    def __init__(self, accepted: bool, user: str | None = None, reply_key: str = "rcpt_ok") -> None:
        self.accepted = accepted
        self.user = user  # local user, or None for the relay queue
        self.reply_key = reply_key


# Every recipient of a sink: one answer, shared (nothing changes an outcome once made).
_SINK_RCPT: Final = RcptOutcome(True, None)


class ServerContext:
    """What every session of every listener shares: settings, control files, users,
    the personality, the fault plan, TLS, and the counts."""

    def __init__(
        self,
        root: Path,
        settings: ServerSettings,
        control: Control,
        users: Users,
        personality: Personality,
        faults: FaultPlan,
        # How to make the servers' TLS context (None: no TLS), called when
        # ``ssl_context`` is first read: by the first EHLO, CAPA, CAPABILITY or
        # implicit-TLS handshake, not before a server's first banner (loading the
        # certificate chain takes 2 ms).
        make_ssl_context: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.root = root
        self.settings = settings
        self.control = control
        self.users = users
        self.personality = personality
        self.faults = faults
        self.make_ssl_context = make_ssl_context
        self.connections: set[Any] = set()
        self.certificates: Any = None  # certs.CertPaths: where the CA and certificate are
        self.held_locks: list[Any] = []  # maildrops the lock-busy scenario holds
        self.control_changes: list[str] = []  # what the options edited at start
        self.journal: Journal | None = None  # None writes nothing, costs nothing
        # What the command line gave, before control/scenarios and control/faults add theirs.
        self.base_rules: tuple[Any, ...] = ()
        self.base_settings: ServerSettings | None = None
        # Rules added over the HTTP API (serve --http), after all the others; in memory.
        self.api_rules: tuple[Any, ...] = ()
        self.messages_delivered = 0
        self.bytes_delivered = 0
        self._session_ids = itertools.count(1)
        self._per_address: dict[str, int] = {}  # open connections by client address
        self._process = os.getpid()  # in the queue ids: unique across servers on a machine
        self._tasks: set[asyncio.Task[None]] = set()
        # Filled-in replies by (key, values), for the personality they were made by.
        self._replies: dict[tuple[Any, ...], tuple[int, str]] = {}
        self._dated: dict[str, bool] = {}  # key -> its text has a {date}: never cached
        self._replies_of: Personality | None = None
        self.store = StoreLayout(self.root)
        self._maildirs: dict[str, Maildir] = {}  # delivery targets by user (_maildir)
        self._mailstore: MailStore | None = None  # made on first use: see mailstore
        self._mailstore_made = threading.Lock()
        # Passwords given on the command line, kept in memory only: APOP, CRAM-MD5 and
        # SCRAM need the secret itself, and the users file holds hashes.
        self.clear_passwords: dict[str, str] = {}
        # --oauth2-tokens: the bearer token XOAUTH2 and OAUTHBEARER accept, by user.
        self.oauth2_tokens: dict[str, str] = {}
        self._last_login: dict[str, float] = {}
        self.guard = AuthGuard(self.settings)  # password checks: paced, budgeted, off the loop
        self.on_enqueue: Callable[[], None] | None = None  # set by the queue runner
        directory = self.root / CONTROL_DIR
        self._control_paths = [os.fspath(directory / name) for name in CONTROL_FILES]
        self._behaviour_paths = [os.fspath(directory / name) for name in BEHAVIOUR_FILES]
        self._control_stamp = _stamp_paths(self._control_paths)  # control/ when read
        self._behaviour_stamp = _stamp_paths(self._behaviour_paths)
        self._control_watch: DirectoryWatch | None = None  # see refresh_control
        self._stat_checks = 0  # refresh_control's stat() rounds with no watch

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The servers' TLS context, made on first use (see ``make_ssl_context``)."""
        return self.make_ssl_context() if self.make_ssl_context is not None else None

    @property
    def hostname(self) -> str:
        return self.control.me

    @property
    def mailstore(self) -> MailStore:
        """The users' folders, for POP3, IMAP, LMTP and the HTTP API; made on first use,
        so that a server that only accepts SMTP never loads the folder and index code.
        (From any thread: ``wait_for_message`` asks from the test's.)"""
        with self._mailstore_made:
            if self._mailstore is None:
                from mailtalk.store.users import MailStore

                self._mailstore = MailStore(self.root)
            return self._mailstore

    def refresh_control(self) -> bool:
        """Re-read ROOT/control/ if a file changed since it was read; True if it was.

        qmail-smtpd reads its control files for every connection, so an edit of
        rcpthosts or relayclients changes the next connection's answers; this keeps
        that lesson true at the cost of a stat() per file and connection (after
        WATCH_AFTER connections, one read() of an inotify watch on control/ where there
        can be one: see ``control_watch``; any event there sends it back to the
        stat()s). A file that no longer parses leaves the last good settings in place,
        said in a warning.
        """
        if not self._watched():
            return False
        stamp = _stamp_paths(self._control_paths)
        behaviour = _stamp_paths(self._behaviour_paths)
        if stamp == self._control_stamp and behaviour == self._behaviour_stamp:
            return False
        # The users file apart from the rest: a typo in rcpthosts must not keep a new
        # user out, nor a bad users line the new rcpthosts.
        before, self._control_stamp = self._control_stamp, stamp
        changed = False
        errors: list[str] = []
        names = [name for name, old, new in zip(CONTROL_FILES, before, stamp, strict=True)
                 if old != new]
        if behaviour != self._behaviour_stamp:
            names += [name for name, old, new in
                      zip(BEHAVIOUR_FILES, self._behaviour_stamp, behaviour, strict=True)
                      if old != new]
            self._behaviour_stamp = behaviour
            try:
                self.load_behaviour()
                changed = True
            except ValueError as error:
                log.warning("%s; still using what was read before", error)
                errors.append(str(error))
        for files, load in ((slice(0, -1), Control.load), (slice(-1, None), Users.load)):
            if stamp[files] == before[files]:
                continue
            try:
                loaded: Any = load(self.root)
            except ControlError as error:
                log.warning("%s; still using what was read before", error)
                errors.append(str(error))
                continue
            except OSError as error:
                log.warning("cannot read %s: %s", self.root / CONTROL_DIR, error)
                errors.append(f"cannot read {self.root / CONTROL_DIR}: {error}")
                continue
            if isinstance(loaded, Users):
                self.users = loaded
            else:
                self.control = loaded
            changed = True
        if changed:
            log.info("control files changed: read again")
        if self.journal is not None:
            first = errors[0] if errors else None
            self.journal.write(self.hostname, "control", files=names, ok=not errors, error=first)
        return changed

    def _watched(self) -> bool:
        """False if the watch on control/ says nothing there changed (the stat()s can
        be skipped); True if they must run. Makes the watch when it is time."""
        watch = self._control_watch
        paths = (*self._control_paths, *self._behaviour_paths)
        if watch is not None:
            if watch.quiet():
                return False
            if watch.closed or not plain_files(paths):  # control/ went, or a file is a link now
                watch.close()
                self._control_watch, self._stat_checks = None, 0
            return True
        self._stat_checks += 1
        if self._stat_checks == WATCH_AFTER or self._stat_checks % WATCH_RETRY == 0:
            # Before the stat()s that follow: a change made in between is seen by them.
            self._control_watch = DirectoryWatch.open(os.fspath(self.root / CONTROL_DIR), paths)
        return True

    def close(self) -> None:
        """What the context holds beyond the servers' sessions: the watch on control/."""
        if self._control_watch is not None:
            self._control_watch.close()
            self._control_watch = None

    def load_behaviour(self) -> None:
        """Read control/scenarios and control/faults and apply them on top of the command
        line's rules and settings (ValueError, naming the file and line, if one is bad:
        then nothing changes)."""
        rules = list(self.base_rules)
        values: dict[str, object] = {}
        api_rules = list(self.api_rules)
        scenario_lines = _control_lines(self.root, "scenarios")
        fault_lines = _control_lines(self.root, "faults")
        if scenario_lines or fault_lines:  # else the rule language is not even loaded
            from mailtalk.servers.fault_rules import FaultRuleError, parse_rule
        for name, line_number, text in scenario_lines:
            from mailtalk.servers.fault_scenarios import scenario

            try:
                bundle = scenario(text)
            except KeyError:
                raise ValueError(
                    f"control/{name} line {line_number}: unknown scenario {text!r}"
                ) from None
            rules += [parse_rule(rule) for rule in bundle.rules]
            values.update(bundle.settings)
        for name, line_number, text in fault_lines:
            try:
                rules.append(parse_rule(text))
            except FaultRuleError as error:
                raise ValueError(f"control/{name} line {line_number}: {error}") from None
        settings = replace(self.base_settings or self.settings)
        apply_scenario_settings(settings, values)
        self.faults = self.faults.with_rules(rules + api_rules)
        for item in fields(ServerSettings):  # in place: sessions and the queue share it
            setattr(self.settings, item.name, getattr(settings, item.name))
        self.hold_locks(self.settings.lock_busy)

    def set_api_rules(self, rules: Iterable[Any]) -> None:
        """The fault rules the HTTP API added (``FaultRule``s), applied after the command
        line's and control/'s; ValueError (and nothing changes) if control/ is bad now."""
        before = self.api_rules
        self.api_rules = tuple(rules)
        try:
            self.load_behaviour()
        except ValueError:
            self.api_rules = before
            raise

    def hold_locks(self, held: bool) -> None:
        """The lock-busy scenario: a holder that never lets go of any maildrop (or, when
        the scenario ends, lets go of them all)."""
        if held and not self.held_locks:
            for name in self.users.names():
                self.held_locks.append(self.mailstore.lock_maildrop(name))
        elif not held:
            for lock in self.held_locks:
                lock.release()
            self.held_locks.clear()

    def next_session_id(self) -> int:
        return next(self._session_ids)

    def new_queue_id(self) -> str:
        """A queue id in the personality's style, for the 250 after DATA and Received."""
        return self.personality.queue_id(next(_QUEUE_SEQUENCE), process=self._process)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a session's deferred work; keep a reference so it is not collected."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def queue_changed(self) -> None:
        """A message was enqueued for relaying: wake the queue runner, if one runs."""
        if self.on_enqueue is not None:
            self.on_enqueue()

    def clear_password(self, user: str) -> str | None:
        """``user``'s password in clear, if this run was given it (not the users file)."""
        return self.clear_passwords.get(user)

    def oauth2_token_ok(self, user: str, token: str) -> bool:
        import hmac

        expected = self.oauth2_tokens.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), token.encode())

    def login_delay_left(self, user: str) -> float:
        """Seconds before ``user`` may log in again over POP3 (RFC 2449 LOGIN-DELAY)."""
        delay = self.settings.login_delay
        last = self._last_login.get(user)
        if not delay or last is None:
            return 0.0
        return max(0.0, delay - (time.monotonic() - last))

    def record_login(self, user: str) -> None:
        self._last_login[user] = time.monotonic()

    def notify_delivered(self, users: Iterable[str]) -> None:
        """New mail in these users' INBOXes: wake IMAP sessions watching them (IDLE)."""
        if self._mailstore is None:
            return  # nobody can be watching a store no one has opened
        for user in users:
            self._mailstore.watchers.notify(user, "INBOX")

    def connection_opened(self, session: Any) -> str | None:
        """Count a new connection (``session.client_ip``) against the caps; what is
        exceeded if it may not stay (None: it may)."""
        settings = self.settings
        if len(self.connections) >= settings.max_connections:
            return f"{settings.max_connections} connections (--max-connections)"
        address = session.client_ip
        per_address = settings.max_connections_per_address
        count = self._per_address.get(address, 0)
        if per_address and count >= per_address:
            return f"{per_address} connections from {address} (--max-connections-per-address)"
        self.connections.add(session)
        self._per_address[address] = count + 1
        return None

    def connection_closed(self, session: Any) -> None:
        if session not in self.connections:
            return
        self.connections.discard(session)
        address = session.client_ip
        left = self._per_address.get(address, 1) - 1
        if left > 0:
            self._per_address[address] = left
        else:
            self._per_address.pop(address, None)

    def message_delivered(self, size: int) -> None:
        self.messages_delivered += 1
        self.bytes_delivered += size

    def reply(self, key: str, **values: str) -> tuple[int, str]:
        personality = self.personality
        if personality is not self._replies_of:
            self._replies_of = personality
            self._replies.clear()
            self._dated.clear()
        dated = self._dated.get(key)
        if dated is None:
            dated = self._dated[key] = "date" in personality.template(key).placeholders
        # Looked up by what the caller gave (and control/me, which a control file may
        # change): the same values always make the same reply, so a hit skips the work.
        # (control.me, not the hostname property: a call less for every reply)
        cache_key = None if dated else (key, self.control.me, *values.items())
        if cache_key is not None:
            found = self._replies.get(cache_key)
            if found is not None:
                return found
        for name, value in values.items():
            # RFC 5321 4.2: reply text is printable; never echo a client's controls.
            values[name] = printable(value)
        values.setdefault("me", self.control.me)
        found = personality.reply(key, **values)
        if cache_key is not None:
            if len(self._replies) >= _REPLY_CACHE_SIZE:
                self._replies.clear()
            self._replies[cache_key] = found
        return found

    # -- policy -----------------------------------------------------------------

    def decide_rcpt(self, address: str, client_ip: str, user: str | None) -> RcptOutcome:
        if self.settings.sink:
            return _SINK_RCPT
        decision = decide_rcpt(self.control, self.users, address, client_ip, user is not None)
        verdict = decision.verdict
        if verdict is RcptVerdict.RELAY and self.settings.relay == "deny":
            verdict = RcptVerdict.RELAY_DENIED
        if verdict is RcptVerdict.DELIVER:
            return RcptOutcome(True, decision.user)
        if verdict is RcptVerdict.RELAY:
            return RcptOutcome(True, None)
        if verdict is RcptVerdict.UNKNOWN_USER:
            return RcptOutcome(False, reply_key="unknown_user")
        if verdict is RcptVerdict.RELAY_DENIED:
            return RcptOutcome(False, reply_key="relay_denied")
        return RcptOutcome(False, reply_key="bad_recipient_syntax")

    async def sender_domain_verdict(self, domain: str) -> Literal["ok", "missing", "tempfail"]:
        from mailtalk.net.dns import domain_exists

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, domain_exists, domain, self.settings.resolver)

    # -- delivery ---------------------------------------------------------------

    def _maildir(self, user: str) -> Maildir:
        """``user``'s INBOX as a delivery target: made once per user, not per message."""
        maildir = self._maildirs.get(user)
        if maildir is None:
            if len(self._maildirs) >= _MAILDIR_CACHE_SIZE:
                self._maildirs.clear()
            maildir = self._maildirs[user] = self.store.maildir(user)
        return maildir

    def begin_delivery(
        self, recipients: Sequence[Recipient], trace: bytes, envelope: Envelope | None = None
    ) -> tuple[Delivery | None, CRLFToLF | None]:
        """A streaming delivery to every recipient's Maildir (and the queue for relays)."""
        if self.settings.sink:
            return None, None
        targets: list[DeliveryTarget] = []
        seen: set[str] = set()
        relayed: list[str] = []
        for recipient in recipients:
            if recipient.user is None:
                relayed.append(recipient.address)
                continue
            if recipient.user in seen:
                continue
            seen.add(recipient.user)
            # Not maildir.create(): the delivery makes the folder if it is missing.
            targets.append(self._maildir(recipient.user))
        if relayed:
            from mailtalk.store.queue import Envelope

            queue = self.store.queue
            queue.create()
            base = envelope or Envelope(mail_from="", rcpt_to=(), client="", helo="")
            targets.append(
                queue.enqueue_target(
                    replace(
                        base,
                        rcpt_to=tuple(relayed),
                        notify={r.address: r.notify for r in recipients
                                if r.user is None and r.notify},
                        orcpt={r.address: r.orcpt for r in recipients
                               if r.user is None and r.orcpt},
                    )
                )
            )
        # The host's name as the store knows it (looked up once, not a uname() a message).
        delivery = Delivery(targets, create_missing=True)
        delivery.write(trace)
        return delivery, CRLFToLF()
