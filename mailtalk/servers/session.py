"""What every reference-server connection does, whatever its protocol.

``ServerSession`` is the asyncio Protocol the SMTP, POP3 and IMAP sessions
share: the connection caps (in all and per client address), the idle timer,
closing, deferring slow work with reading paused (so replies leave in order),
waiting for a slow reader, injected faults, and the TLS handshakes (STARTTLS, and
the one an implicit-TLS listener starts with). A subclass supplies its protocol core
(``self.core``, in the server role), the protocol its fault rules name
(``fault_protocol``) and the hooks: ``greet``, ``refuse``, ``process``,
``on_idle``, ``cleanup`` and ``tls_begun``.

It also writes the session's part of the servers' journal (``mailtalk.servers.journal``)
when there is one: ``connect`` with the greeting (events that come before the greeting,
such as a fault at connect, wait for it), ``tls``, ``fault``, ``close`` with its reason,
and the ``command`` events its subclass reports through :meth:`journal_command`. With no
journal (``context.journal`` None) none of this runs.

What a hostile client cannot do here (issue 15):

- make the server hold its answers: above ``HIGH_WATER`` bytes queued for the client
  the session stops reading commands (asyncio's ``pause_writing``) until the queue is
  down to ``LOW_WATER``; long answers (RETR, FETCH) wait for it in :meth:`drain`;
- keep a session by reading nothing: output that has not moved for the idle timeout
  ends the session (aborted: a goodbye would queue behind what does not move);
- keep a session by sending a byte at a time: a line (command or message line) must
  arrive whole within ``line_timeout`` seconds, extended by one second for every
  ``MIN_LINE_RATE`` bytes of it (Postfix's smtpd_per_record_deadline and
  smtpd_min_data_rate), else the session ends as an idle one does;
- hold a slot for free in a TLS handshake: every accepted socket counts against the
  caps from the start, implicit-TLS ones too (their handshake runs here, not in the
  listener), and a handshake must end within ``handshake_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from mailtalk.protocols.common import LocalProtocolError
from mailtalk.servers.guard import Verdict
from mailtalk.servers.journal import short_text

if TYPE_CHECKING:
    from mailtalk.servers.context import ServerContext
    from mailtalk.servers.fault_rules import FaultAction, SessionFaults
    from mailtalk.servers.sasl_exchange import (
        Cancelled,
        Credentials,
        Exchange,
        Malformed,
        Step,
        Verify,
    )

log = logging.getLogger("mailtalk.serve")

# Above HIGH_WATER bytes queued for the client the session reads no more commands, and a
# long answer (RETR, FETCH) waits, until the queue is below LOW_WATER: a client that does
# not read cannot make the server hold more of its output than about this.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024
# A line may take longer than line_timeout by one second for every this many bytes of it
# (a long line on a slow link is no slowloris; Postfix's smtpd_min_data_rate default).
MIN_LINE_RATE: Final = 500
# How often a session with output queued looks whether it moved (at most; shorter with a
# short idle timeout).
STALL_POLL: Final = 1.0
# The listeners whose connections start with a TLS handshake (app.LISTENER_TLS "implicit").
IMPLICIT_TLS: Final = frozenset({"smtps", "pop3s", "imaps"})


class ServerSession(asyncio.Protocol):
    """One connection to a reference server; ``kind`` is the listener's protocol name."""

    core: Any  # the protocol core in the server role: receive_data(), tls, tls_started()
    fault_protocol: ClassVar[str]  # "smtp", "pop3" or "imap": the PROTO of fault rules
    # Fields read only off the usual path: class defaults until set (four attributes
    # fewer to make for every connection).
    _output_size = 0  # bytes queued for the client at the last look
    _output_moved_at = 0.0  # loop.time() when the queue was last seen to move
    _loopback: bool | None = None
    _journal_connected = False  # the connect event is written (with a journal)
    # the SASL exchange under way (AUTH, AUTHENTICATE), until a step ends it
    _exchange: Exchange | None = None

    def __init__(self, context: ServerContext, kind: str) -> None:
        self.context = context
        self.kind = kind
        self.session_id = context.next_session_id()
        # Without fault rules nothing can fire: no counting, no fields (a fast path).
        self.faults: SessionFaults | None = self._session_faults()
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        # deferred works running: the loop waits for them (a delay fault's work defers
        # the command's own, which must keep the loop waiting when the first ends)
        self._deferred = 0
        self._write_paused = False  # too much output queued: no command is read
        self._writable: asyncio.Event | None = None  # set while output may be written
        self._handshaking = False  # an implicit-TLS handshake before the greeting
        self._busy = False  # any of the three above (_update_busy)
        self._reading_paused = False  # reading was paused by _update_reading
        self._closing = False
        self._lost = False
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0  # loop.time() of the last read
        self._line_since: float | None = None  # a line is coming in since (loop.time())
        self._line_bytes = 0  # bytes of that line so far
        self._time: Callable[[], float] = time.monotonic  # loop.time once connected
        # Bytes read over TLS before start_tls() returned (see _start_tls), or None.
        self._early_tls_data: list[bytes] | None = None
        # The journal (None: off, and nothing below is used).
        self.journal = context.journal
        self.close_reason: str | None = None  # why the connection ends, once known
        if self.journal is not None:
            self._journal_held: list[tuple[str, dict[str, Any]]] = []  # events before connect

    def _session_faults(self) -> SessionFaults | None:
        faults = self.context.faults
        return faults.session(self.session_id, self.fault_protocol) if faults.rules else None

    # -- hooks ------------------------------------------------------------------

    def greet(self) -> None:
        """The connection was accepted: send the greeting (or apply a connect fault)."""
        raise NotImplementedError

    def refuse(self) -> None:
        """Too many connections: say so; the connection is closed afterwards."""

    def process(self) -> None:
        """Handle what the core has parsed, until it needs data or work is deferred."""
        raise NotImplementedError

    def on_idle(self) -> None:
        """The idle timeout passed: say goodbye; the connection is closed afterwards."""

    def cleanup(self) -> None:
        """The connection is gone: release what the session held (locks, deliveries)."""

    def tls_begun(self) -> None:
        """STARTTLS succeeded: forget what was learnt before it (RFC 3207 4.2, 2595)."""

    # -- logins ---------------------------------------------------------------------

    def sasl_step(self, step: Step) -> None:
        """The next move of the SASL exchange under way (``_exchange``), shared by SMTP,
        POP3 and IMAP; the ``sasl_*`` hooks below say it in the protocol's words."""
        from mailtalk.servers import sasl_exchange

        exchange = self._exchange
        assert exchange is not None
        if exchange.over:
            self._exchange = None
        if isinstance(step, sasl_exchange.Challenge):
            self.sasl_challenge(step.line)
        elif isinstance(step, sasl_exchange.Verify):
            self.sasl_defer(self._sasl_verdict(step))
        elif isinstance(step, sasl_exchange.Credentials):
            self.sasl_password(step, exchange.name)
        elif isinstance(step, sasl_exchange.Finished):
            verdict = Verdict.OK if step.ok else Verdict.FAILED
            answered = self.sasl_decided(verdict, step.user, exchange.name)
            if answered is not None:
                self.sasl_defer(answered)
        else:
            self.sasl_refused(step)

    async def _sasl_verdict(self, check: Verify) -> None:
        """The proof or token checked as a password is, paced and budgeted by the guard,
        and the exchange told (a refused token is told as a challenge first; SCRAM's
        proof goes as one too). Too many failed logins from the client end the exchange
        unchecked, answered as REFUSED."""
        exchange = self._exchange
        assert exchange is not None
        verdict = await self.context.guard.check(self.client_ip, check.verify)
        if self._closing:
            return
        if verdict is Verdict.REFUSED:
            self._exchange = None
            answered = self.sasl_decided(verdict, check.user, exchange.name)
            if answered is not None:
                await answered
            return
        self.sasl_step(exchange.checked(verdict is Verdict.OK))

    def sasl_challenge(self, line: str) -> None:
        """Send the (base64) challenge ``line``: the client's answer goes to ``_exchange``."""
        raise NotImplementedError

    def sasl_defer(self, work: Awaitable[None]) -> None:
        """Run ``work`` (a check), the commands that follow waiting for it."""
        raise NotImplementedError

    def sasl_password(self, credentials: Credentials, mechanism: str) -> None:
        """PLAIN or LOGIN ended: check, journal and answer this password."""
        raise NotImplementedError

    def sasl_decided(self, verdict: Verdict, user: str,
                     mechanism: str) -> Awaitable[None] | None:
        """Journal and answer the verdict on ``user``'s login (the work that does it, or None)."""
        raise NotImplementedError

    def sasl_refused(self, step: Cancelled | Malformed) -> None:
        """Answer an exchange the client cancelled or broke."""
        raise NotImplementedError

    def idle_limit(self) -> float:
        """Seconds of silence before ``on_idle``; a session may stretch it (IMAP IDLE)."""
        return self.context.settings.idle_timeout

    def internal_error(self) -> None:
        """Deferred work raised: tell the client something went wrong, if it can be told."""

    # -- asyncio ----------------------------------------------------------------

    def _update_busy(self) -> None:
        """``_busy``: commands wait, as deferred work runs, or the client has not read
        what it was sent, or a handshake is under way (the subclasses' ``process`` loops
        stop on it). A field set when one of the three changes, not a property: the loops
        ask it for every command (a property call was 14 a message, 4 % of a session)."""
        self._busy = self._deferred > 0 or self._write_paused or self._handshaking

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's, or uvloop's (which is no asyncio.Transport
        # subclass, though it has the same methods). (Told to the type checker only:
        # cast() is a Python call a connection.)
        if TYPE_CHECKING:
            transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        if self.context.refresh_control():  # as qmail: every connection sees the files as they are
            # control/faults or control/scenarios may have changed the rules
            self.faults = self._session_faults()
        peer = transport.get_extra_info("peername")
        # A Unix-domain socket's peer is a path, usually "": no address, and a client
        # on this machine (is_loopback)
        if isinstance(peer, tuple) and peer:
            self.client_ip = str(peer[0])
        else:
            self.client_ip = ""
            # Not an IP peer: maybe a Unix-domain socket (uvloop makes a socket object,
            # and a getsockname(), for this: only asked when it can be one)
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family == getattr(socket, "AF_UNIX", None):
                self._loopback = True
        refusal = self.context.connection_opened(self)
        if refusal is not None:
            self.close_reason = "refused"
            log.info("session %s: %s refused: %s", self.session_id, self.client_ip, refusal)
            if self.kind in IMPLICIT_TLS:
                # Nothing can be said before TLS, and a handshake to say it is what a
                # flood of connections would cost: closed at once.
                self._abort("refused")
                return
            self.refuse()
            self._close()
            return
        self._reset_idle()
        if self.kind in IMPLICIT_TLS and self.context.ssl_context is not None:
            self._handshaking = True
            self._update_busy()
            transport.pause_reading()  # the handshake reads, once start_tls() runs
            self.context.spawn(self._implicit_tls())
            return
        self.greet()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        if self._writable is not None:
            self._writable.set()  # a long answer waiting in drain() ends
        self.cleanup()
        if self.journal is not None:
            self._journal_close(exc)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self.context.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        # One timer per connection, not one per read: it checks this when it fires.
        now = self._time()
        self._last_activity = now
        # Whole lines after whole lines (as commands usually come): nothing to note.
        if self._line_since is not None or not data.endswith(b"\n"):
            self._line_progress(data, now)
        if self._early_tls_data is not None:
            # Decrypted bytes that came with the end of the handshake: they belong to
            # the TLS session, which the core does not know has begun yet.
            self._early_tls_data.append(data)
            return
        try:
            self.core.receive_data(data)
        except LocalProtocolError:
            return  # the core is closed already: nothing more to read
        self.process()

    def eof_received(self) -> bool | None:
        if self._early_tls_data is not None:
            self._early_tls_data.append(b"")  # after what came before it
            return None
        self.core.receive_data(b"")
        self.process()
        return None

    def pause_writing(self) -> None:
        """More than HIGH_WATER bytes are queued for the client: read no more commands."""
        self._write_paused = True
        self._update_busy()
        if self._writable is not None:
            self._writable.clear()
        self._output_moved_at = self._time()
        self._update_reading()
        if self._idle_handle is not None and not self._closing:
            # The stall check looks at the queue from now on, not only at the idle deadline.
            self._arm_timer(self._output_moved_at + self._stall_poll())

    def resume_writing(self) -> None:
        """The client read its way down to LOW_WATER: answer what waits, read again."""
        self._write_paused = False
        self._update_busy()
        self._output_moved_at = self._time()
        if self._writable is not None:
            self._writable.set()
        if self._closing or self._deferred:
            return  # deferred work waiting in drain() goes on by itself
        self._update_reading()
        # Not from inside the transport's write path: commands may be waiting in the core.
        asyncio.get_running_loop().call_soon(self._resume_commands)

    def _resume_commands(self) -> None:
        if not self._busy and not self._closing:
            self.process()

    def _update_reading(self) -> None:
        """Read from the client unless commands must wait (see ``_busy``)."""
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            return
        if self._busy:
            transport.pause_reading()
            self._reading_paused = True
        elif self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False
            if self._line_since is not None:
                # The line's time runs while it can be read, not while it waited for us.
                self._line_since = self._time()

    # -- timers: idle, line, output stall ------------------------------------------------

    def _line_progress(self, data: bytes, now: float) -> None:
        """Note when the line being received began: what the line timeout measures."""
        end = data.rfind(b"\n")
        if end == len(data) - 1:
            self._line_since = None  # every line in it is whole
            return
        if end >= 0 or self._line_since is None:
            self._line_since = now
            self._line_bytes = len(data) - end - 1
            self._arm_timer(now + self._line_limit())
        else:
            self._line_bytes += len(data)

    def _line_limit(self) -> float:
        return self.context.settings.line_timeout + self._line_bytes / MIN_LINE_RATE

    def _stall_poll(self) -> float:
        return max(0.05, min(STALL_POLL, self.idle_limit() / 4))

    def _arm_timer(self, when: float) -> None:
        """Make the session's one timer fire at ``when`` at the latest."""
        handle = self._idle_handle
        if handle is not None and handle.when() <= when:
            return
        if handle is not None:
            handle.cancel()
        self._idle_handle = asyncio.get_running_loop().call_at(when, self._check_idle)

    def _reset_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._time = loop.time
        self._last_activity = loop.time()
        if self._idle_handle is None:
            deadline = self._last_activity + self.idle_limit()
            self._idle_handle = loop.call_at(deadline, self._check_idle)

    def _check_idle(self) -> None:
        """The session's timer: idle client, line too slow, output that does not move."""
        self._idle_handle = None
        if self._lost:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        limit = self.idle_limit()
        queued = self._queued()
        if queued:
            if queued != self._output_size or not self._output_size:
                self._output_size = queued
                self._output_moved_at = now
            elif now - self._output_moved_at >= limit:
                # The client reads nothing: a goodbye would wait behind the rest. Aborted.
                log.info("session %s: output stalled for %.0f s (%d bytes queued); dropped",
                         self.session_id, now - self._output_moved_at, queued)
                self._abort("stalled")
                return
            next_check = now + self._stall_poll()
        else:
            self._output_size = 0
            if self._closing:
                return  # all written: the transport closes by itself
            active = max(self._last_activity, self._output_moved_at)
            if self._deferred:
                # The server is still at work (a delay, a handshake, a store): the client
                # is not idle, and a goodbye now would land inside the answer.
                active = now
            next_check = active + limit
            if now >= next_check:
                log.info("session %s: idle timeout", self.session_id)
                self.close_reason = self.close_reason or "idle"
                self.on_idle()
                self._close()
                return
        if self._line_since is not None and not self._busy and not self._closing:
            line_deadline = self._line_since + self._line_limit()
            if now >= line_deadline:
                log.info("session %s: a line took more than %.0f s; timed out",
                         self.session_id, now - self._line_since)
                self.close_reason = self.close_reason or "line-timeout"
                self.on_idle()
                self._close()
                return
            next_check = min(next_check, line_deadline)
        self._idle_handle = loop.call_at(next_check, self._check_idle)

    # -- helpers ------------------------------------------------------------------

    def _close(self, reason: str = "server") -> None:
        """Close after what was written; ``reason`` for the journal, unless one is known
        already (``quit``, ``idle``...): ``server`` when the server ends the session
        (421, too many errors), ``dropped`` when the client went without saying goodbye."""
        self._closing = True
        if self.close_reason is None:
            self.close_reason = reason
        if self.transport is not None:
            queued = self._queued()
            self.transport.close()
            if queued and not self._lost:
                # close() waits for the queue to go out: the stall check still watches
                # it, so a client that never reads does not keep the socket for ever.
                self._arm_timer(self._time() + self._stall_poll())

    def _queued(self) -> int:
        """Bytes queued for the client (0 once an SSL transport is closed: it then has
        its own shutdown timeout)."""
        if self.transport is None:
            return 0
        try:
            return self.transport.get_write_buffer_size()
        except AttributeError:  # asyncio's SSL transport after close()
            return 0

    def _abort(self, reason: str = "fault") -> None:
        """Drop the connection at once, without a goodbye (a disconnect fault)."""
        self._closing = True
        if self.close_reason is None:
            self.close_reason = reason
        if self.transport is not None:
            self.transport.abort()

    @property
    def closing(self) -> bool:
        """The connection is closing (or gone): nothing more is written."""
        return self._closing

    def is_loopback(self) -> bool:
        """The client is on this machine: nobody can listen in on plain text."""
        if self._loopback is None:
            try:
                self._loopback = ipaddress.ip_address(self.client_ip).is_loopback
            except ValueError:
                self._loopback = False
        return self._loopback

    def _fault_action(self, command: str, **fields: str) -> FaultAction | None:
        """The injected fault that fires at ``command``, if one does.

        The ``client`` and ``tls`` fields of a rule are filled in here, the protocol's
        own (``auth``, ``user``, ``helo``...) come in ``fields``. A ``disconnect`` is
        carried out here and a delay of no time is no fault; what comes back is a
        ``delay`` to wait, a ``disconnect`` done, or a ``reply`` for the caller to send
        in its protocol's form.
        """
        if self.faults is None:
            return None
        action = self.faults.on_command(
            command, client=self.client_ip, tls="yes" if self.core.tls else "no", **fields
        )
        if action is None or (action.kind == "delay" and action.seconds <= 0):
            return None
        if self.journal is not None:
            fired = self.faults.last_fired
            self.journal_write(
                "fault",
                rule=fired.rule if fired is not None else "",
                verb=command.upper(),
                action=action.kind,
                reply=action.line or None,
                seconds=action.seconds if action.kind == "delay" else None,
                bytes_per_second=action.bytes_per_second if action.kind == "trickle" else None,
            )
        if action.kind == "disconnect":
            self._abort()
        if action.kind == "trickle":
            self._trickle(action.bytes_per_second)
            return None  # the command is answered normally, slowly
        return action

    def _trickle(self, bytes_per_second: float) -> None:
        """Write what the server says next at this rate (a ``trickle`` fault): until it
        is out, no command is read; past the idle timeout the session is closed."""
        from mailtalk.servers.trickle import TrickleTransport

        real = self.transport
        if real is None or self._closing or isinstance(real, TrickleTransport):
            return
        trickle = TrickleTransport(real, bytes_per_second)
        self.transport = trickle  # type: ignore[assignment]  # a stand-in, see trickle.py

        async def run() -> None:
            limit = self.idle_limit()
            done = await trickle.drain(limit, lambda: self._deferred > 1)
            if self.transport is cast(Any, trickle):
                self.transport = real
            if not done and not self._closing:
                log.info("session %s: a trickle lasted %.0f s (%d bytes left); closed",
                         self.session_id, limit, trickle.held)
                if self.journal is not None:
                    self.journal_write("trickle-timeout", seconds=limit, left=trickle.held)
                self.close_reason = self.close_reason or "trickle-timeout"
                self._close()

        self._defer(run())

    async def drain(self) -> None:
        """Let a slow reader catch up, so a big RETR or FETCH does not pile up in memory:
        while more than HIGH_WATER is queued, wait until it is below LOW_WATER (or the
        connection ends; the output-stall check ends one whose client reads nothing)."""
        while self._write_paused and not self._closing:
            if self._writable is None:
                self._writable = asyncio.Event()
            await self._writable.wait()

    def _defer(
        self,
        work: Awaitable[None],
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Run ``work`` with reading paused; the loop resumes when it is done.

        ``on_error`` answers an exception the work raised; without it the error is
        logged and ``internal_error`` tells the client.
        """
        self._deferred += 1
        self._update_busy()
        self._update_reading()

        async def run() -> None:
            try:
                await work
            except Exception as error:
                if on_error is not None:
                    on_error(error)
                else:
                    log.exception("session %s: internal error", self.session_id)
                    if not self._closing:
                        self.internal_error()
            finally:
                self._deferred -= 1
                self._update_busy()
                if self.transport is not None and not self._closing:
                    self._update_reading()
                    if not self._busy:
                        self.process()

        self.context.spawn(run())

    async def _later(self, seconds: float, then: Callable[[], None]) -> None:
        """``then()`` after a pause (a delay fault), unless the connection went meanwhile."""
        await asyncio.sleep(seconds)
        if not self._closing:
            then()

    async def _start_tls(self) -> bool:
        """The TLS handshake after STARTTLS/STLS was accepted; False if it failed.

        asyncio hands the protocol what was decrypted together with the client's
        Finished (a client that sends its first command at once, as mpop does) before
        ``start_tls()`` returns. Those bytes are held here and given to the core only
        once it has been told TLS is up: a core that discards plain text sent after
        the go-ahead (CVE-2011-0411) would otherwise drop the command and never answer.
        """
        early = await self._tls_handshake()
        if early is None:
            return False
        self.core.tls_started()
        if self.journal is not None:
            self.journal_write("tls", **self._tls_fields())
        self.tls_begun()
        for data in early:
            # _defer runs process() when this work ends, which answers these.
            try:
                self.core.receive_data(data)
            except LocalProtocolError:
                break
        return True

    async def _tls_handshake(self) -> list[bytes] | None:
        """The server's side of a TLS handshake on the connection: the decrypted bytes
        that came with its end (see :meth:`_start_tls`), or None if it failed (the
        connection is then closed and released). It must end within the handshake
        timeout (or the idle timeout, if shorter)."""
        assert self.transport is not None and self.context.ssl_context is not None
        loop = asyncio.get_running_loop()
        settings = self.context.settings
        self._early_tls_data = []
        try:
            transport = await loop.start_tls(
                self.transport,
                self,
                self.context.ssl_context,
                server_side=True,
                ssl_handshake_timeout=min(settings.handshake_timeout, settings.idle_timeout),
            )
        except (TimeoutError, OSError, ConnectionError) as error:
            log.info("session %s: TLS handshake failed: %s", self.session_id,
                     error or type(error).__name__)
            self._abort("tls-failed")
            # asyncio tells the protocol nothing when the handshake never finished.
            self.connection_lost(error)
            return None
        finally:
            early = self._early_tls_data or []
            self._early_tls_data = None
        if transport is None:
            self._close("tls-failed")
            self.connection_lost(None)
            return None
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        return early

    async def _implicit_tls(self) -> None:
        """An implicit-TLS listener's connection: the handshake, then the greeting. The
        connection counted against the caps from its accept(), not from here."""
        try:
            early = await self._tls_handshake()
        finally:
            self._handshaking = False
            self._update_busy()
        if early is None or self._closing:
            return
        self._update_reading()
        self.greet()
        for data in early:
            if data:
                self.data_received(data)
            else:
                self.eof_received()

    # -- the journal ------------------------------------------------------------------
    # Called only with a journal (self.journal not None); the callers check.

    def journal_write(self, event: str, **fields: Any) -> None:
        """One event of this session; before the connect event is written, held for it."""
        journal = self.journal
        if journal is None:
            return
        if not self._journal_connected:
            self._journal_held.append((event, fields))
            return
        journal.write(
            self.context.hostname,
            event,
            proto=self.fault_protocol,
            session=self.session_id,
            client=self.client_ip,
            **fields,
        )

    def journal_connect(self, code: str | int | None, text: str | None) -> None:
        """The greeting went out (or none will): the connect event, then what waited."""
        if self.journal is None or self._journal_connected:
            return
        self._journal_connected = True
        port = None
        if self.transport is not None:
            sockname = self.transport.get_extra_info("sockname")
            # a Unix-domain socket's name is a path: no port
            port = int(sockname[1]) if isinstance(sockname, tuple) and sockname else None
        self.journal_write(
            "connect",
            port=port,
            listener=self.kind,
            tls=bool(self.core.tls),
            code=code,
            text=short_text(text) if text is not None else None,
        )
        if self.core.tls:  # implicit TLS: the handshake came before the greeting
            self.journal_write("tls", **self._tls_fields())
        held, self._journal_held = self._journal_held, []
        for event, fields in held:
            self.journal_write(event, **fields)

    def journal_command(
        self,
        verb: str | None,
        args: str | None,
        code: str | int,
        text: str,
        *,
        tls: bool,
        user: str | None,
        enhanced: str | None = None,
        response_code: str | None = None,
        **extra: Any,
    ) -> None:
        """A command and its final reply (``verb`` None: a line that was no command)."""
        self.journal_write(
            "command",
            verb=verb,
            args=short_text(args) if args else None,
            code=code,
            enhanced=enhanced,
            response_code=response_code,
            text=short_text(text),
            tls=tls,
            user=user,
            **extra,
        )

    def close_fields(self) -> dict[str, Any]:
        """What the close event says besides its reason (the user, what was deleted)."""
        return {}

    def _journal_close(self, exc: Exception | None) -> None:
        if not self._journal_connected:
            # No greeting went out: a disconnect fault at connect, or the client left
            # while a delay fault held the greeting back.
            self.journal_connect(None, None)
        error = short_text(str(exc) or type(exc).__name__) if exc is not None else None
        if self.close_reason == "quit" and isinstance(exc, ConnectionResetError):
            # After the goodbye, a client that drops the socket without TLS's own
            # goodbye (smtplib does) ended nothing badly: no error to report.
            error = None
        self.journal_write(
            "close",
            reason=self.close_reason or "dropped",
            tls=bool(self.core.tls),
            error=error,
            **self.close_fields(),
        )

    def _tls_fields(self) -> dict[str, Any]:
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        if ssl_object is None:
            return {"version": None, "cipher": None}
        cipher = ssl_object.cipher()
        return {"version": ssl_object.version(), "cipher": cipher[0] if cipher else None}
