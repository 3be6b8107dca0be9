"""Onward delivery: the queue runner that hands relayed mail to each recipient domain's MX.

The reference SMTP server puts mail it relays (for authenticated clients, or
clients in ``control/relayclients``) into ``ROOT/queue``; this module delivers it
further, as an MTA's queue manager does (qmail-send and qmail-remote, Postfix's
qmgr and smtp):

* Recipients are grouped by domain. Each domain's route is ``control/smtproutes``
  if it names one, else its MX records (RFC 5321 5.1) through the configured
  resolver, hosts in preference order, each of their addresses, on
  ``ServerSettings.mx_port``.
* The conversation is the SMTP client sequence (``protocols/smtp_sequence.py``,
  the one ``mailtalk send`` runs too) over asyncio streams: EHLO (HELO after a
  5xx to it), STARTTLS when offered (unverified, as MTAs do opportunistically),
  MAIL FROM (SIZE= and BODY=8BITMIME when offered), one RCPT TO per recipient of
  the domain, DATA.
* 2xx: the recipient is done. 4xx or a connection failure: the next host, then
  a later attempt on ``ServerSettings.retry_schedule``. 5xx, or still failing
  after ``max_queue_age``: a bounce (an RFC 3464 delivery status notification)
  from ``<>`` to the sender, into the sender's Maildir when the sender is a local
  user, else queued for onward delivery itself. A message from ``<>`` is never
  bounced (a bounce of a bounce could loop): it is dropped with a log line.
* The RFC 3461 parameters the SMTP server kept in the envelope decide which DSNs
  go (``dsn_report.py``): NOTIFY=NEVER none; DELAY a delay DSN once a recipient
  has waited ``delay_warning``; SUCCESS a "relayed" DSN when the next hop did not
  take the DSN parameters (they are passed on, RET, ENVID, NOTIFY and ORCPT, when
  it offers DSN and the recipients of the session asked for the same NOTIFY).
* The state (attempts, next attempt, last errors) is kept in the envelope under
  ``"delivery"``, so a restarted server carries on where it stopped.

``control/smtproutes`` (qmail's file, read by ``smtproutes.py``) overrides the
MX lookup: it is how a practice world says on which address and port each
domain's server listens, since MX records carry no port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    LocalProtocolError,
    ProtocolError,
    Role,
)
from mailtalk.protocols.dsn import decode_xtext
from mailtalk.protocols.smtp import END_OF_DATA, GREETING, Reply
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_plan import (
    DSN,
    Await,
    Command,
    Done,
    Drop,
    Message,
    Plan,
    Quit,
    Stage,
    StartTLS,
    TLSPolicy,
)
from mailtalk.protocols.smtp_sequence import ClientSequence
from mailtalk.servers.dsn_report import Action, ReportRecipient, build_report, send_report, wants
from mailtalk.servers.smtproutes import find_route, read_smtproutes

if TYPE_CHECKING:
    from mailtalk.protocols.smtp_plan import Result
    from mailtalk.servers.context import ServerContext
    from mailtalk.store.queue import Envelope, QueuedMessage

log = logging.getLogger("mailtalk.delivery")

CONNECT_TIMEOUT = 30.0
POLL_SECONDS = 60.0  # look at the queue at least this often (another process may add to it)
MAX_PARALLEL = 10  # messages delivered at the same time

Kind = Literal["ok", "temp", "perm"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient: ``ok``, ``temp`` (try later) or ``perm`` (bounce)."""

    kind: Kind
    text: str  # one line for the log and the bounce: who said what, in reply to what
    status: str = ""  # RFC 3463 status for the DSN
    remote: str = ""  # the host that answered, for Remote-MTA
    diagnostic: str = ""  # the remote reply, for Diagnostic-Code
    address: str = ""  # where the host was reached, ADDRESS:PORT (for the journal)
    code: int | None = None  # the remote reply's code, when there was one
    dsn_passed: bool = False  # the next hop took the DSN parameters (it reports from now on)


# -- the SMTP client --------------------------------------------------------------


class _Dropped(Exception):
    """The server closed the connection."""


class _Client:
    """One outgoing SMTP connection: the core in the client role over asyncio streams."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.core = SMTPConnection(role=Role.CLIENT)

    async def reply(self) -> Reply:
        while True:
            event = self.core.next_event()
            if isinstance(event, Reply):
                return event
            if event is CONNECTION_CLOSED:
                raise _Dropped("the server closed the connection")
            data = await asyncio.wait_for(self.reader.read(65536), self.timeout)
            self.core.receive_data(data)

    async def command(self, line: str) -> Reply:
        self.writer.write(self.core.send_line(line))
        await asyncio.wait_for(self.writer.drain(), self.timeout)
        return await self.reply()

    async def message(self, data: bytes) -> Reply:
        self.writer.write(self.core.send_message(data))
        await asyncio.wait_for(self.writer.drain(), self.timeout)
        return await self.reply()

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        await asyncio.wait_for(
            self.writer.start_tls(context, server_hostname=server_hostname), self.timeout
        )
        self.core.tls_started()

    async def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(self.core.send_line("QUIT"))
            await asyncio.wait_for(self.reply(), min(self.timeout, 5.0))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)

    async def drive(
        self, sequence: ClientSequence, message: bytes, tls: ssl.SSLContext, hop: _Hop
    ) -> Result:
        """Run the SMTP client sequence over this connection; what came of it.

        Trouble with the connection is raised (``_Dropped``, timeouts, TLS errors,
        a reply that is not SMTP); ``sequence.result`` keeps what came before."""
        where = hop.label
        while True:
            action = sequence.next_action()
            match action:
                case Done(result=result):
                    return result
                case Await():
                    reply = await self.reply()
                    log.info("delivery: %s: %s", where, _reply_text(reply))
                case Command(line=line):
                    reply = await self.command(line)
                    verb = sequence.waiting_for
                    if verb == "RCPT":
                        log.info("delivery: %s: %s: %s", where, line, _reply_text(reply))
                    elif verb == "STARTTLS" and reply.code // 100 != 2:
                        log.info("delivery: %s: STARTTLS refused, going on in plain text", where)
                case StartTLS():
                    name = None if _is_ip(hop.host.strip("[]")) else hop.host
                    await self.starttls(tls, name)
                    log.info("delivery: %s: TLS started", where)
                    continue
                case Message():
                    reply = await self.message(message)
                    log.info("delivery: %s: end of data: %s", where, _reply_text(reply))
                case Quit():
                    await self.quit()
                    continue
                case Drop():
                    await self.close()
                    continue
                case _:
                    raise LocalProtocolError(f"onward delivery cannot do {action!r}")
            sequence.receive(reply)


def _opportunistic_tls() -> ssl.SSLContext:
    """TLS as MTAs do it without DANE or MTA-STS: encrypted, unverified."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _reply_text(reply: Reply) -> str:
    return f"{reply.code} " + " ".join(line.strip() for line in reply.lines if line.strip())


def _status(reply: Reply) -> str:
    if reply.enhanced:
        return reply.enhanced
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(reply.code // 100, "4.0.0")


def _classify(reply: Reply) -> Kind:
    digit = reply.code // 100
    return "ok" if digit == 2 else "perm" if digit == 5 else "temp"


# -- the queue runner ------------------------------------------------------------


@dataclass(frozen=True)
class _Hop:
    host: str  # the name, for messages
    address: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.host}[{self.address}]:{self.port}"

    @property
    def address_port(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"


class QueueRunner:
    """Delivers ``ROOT/queue`` onward; started and stopped by ``ReferenceServers``."""

    def __init__(
        self,
        context: ServerContext,
        source: str | None = None,
        own: Iterable[tuple[str, int]] = (),
    ) -> None:
        self.context = context
        self.settings = context.settings
        self.queue = context.store.queue
        self.source = source  # the listen address: outgoing connections come from it
        self.own = set(own)  # our own SMTP listeners: an MX pointing at them is a loop
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._backoff: dict[str, float] = {}  # message id -> not before (after an error)
        self._tls: ssl.SSLContext | None = None
        self._resolver: Any = None

    # -- life -------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def enqueued() -> None:
            loop.call_soon_threadsafe(self._wakeup.set)

        self.context.on_enqueue = enqueued
        self._task = loop.create_task(self._run(), name="mailtalk-queue-runner")

    async def stop(self) -> None:
        self.context.on_enqueue = None
        tasks = [t for t in (self._task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._task = None
        self._in_flight.clear()

    def wake(self) -> None:
        self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.queue.path.is_dir():
            try:
                await loop.run_in_executor(None, self.queue.recover)
            except OSError as error:
                log.warning("queue: cannot clean up %s: %s", self.queue.path, error)
        while True:
            self._wakeup.clear()
            try:
                wait = await self._pass()
            except Exception:
                log.exception("queue: cannot read %s", self.queue.path)
                wait = POLL_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(0.0, min(wait, POLL_SECONDS)))

    async def _pass(self) -> float:
        """Start the deliveries that are due; return the seconds until the next one."""
        if not self.queue.envelopes_dir.is_dir():
            return POLL_SECONDS
        loop = asyncio.get_running_loop()
        messages = await loop.run_in_executor(None, self.queue.list)
        now = time.time()
        wait = POLL_SECONDS
        for message in messages:
            if message.id in self._in_flight:
                continue
            due = max(
                float(message.state.get("next_attempt", 0.0)), self._backoff.get(message.id, 0.0)
            )
            if due > now:
                wait = min(wait, due - now)
                continue
            if len(self._in_flight) >= MAX_PARALLEL:
                break  # a finishing delivery wakes the runner
            task = loop.create_task(self._process(message))
            self._in_flight[message.id] = task
            task.add_done_callback(functools.partial(self._finished, message.id))
        return wait

    def _finished(self, message_id: str, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(message_id, None)
        self._wakeup.set()

    # -- one message ------------------------------------------------------------

    async def _process(self, message: QueuedMessage) -> None:
        try:
            await self._attempt(message)
        except asyncio.CancelledError:
            raise
        except FileNotFoundError:
            log.info("delivery %s: gone from the queue", message.id)
        except Exception:
            log.exception("delivery %s: internal error; will try again", message.id)
            self._backoff[message.id] = time.time() + self._delay(1)

    def _journal(
        self, message: QueuedMessage, outcome: str, rcpt: str, result: Outcome, **extra: Any
    ) -> None:
        """A ``message`` event for one recipient of a queued message (with a journal)."""
        journal = self.context.journal
        if journal is None:
            return
        from mailtalk.servers.journal import short_text

        journal.write(
            self.context.hostname,
            "message",
            outcome=outcome,
            queue_id=message.envelope.queue_id or message.id,
            file=message.id,
            sender=message.envelope.mail_from,
            recipient=rcpt,
            mx=result.remote or None,
            address=result.address or None,
            code=result.code,
            status=result.status or None,
            text=short_text(result.diagnostic) if result.diagnostic else None,
            reason=None if outcome == "relayed" else short_text(result.text),
            **extra,
        )

    def _delay(self, attempts: int) -> float:
        schedule = self.settings.retry_schedule or (60.0,)
        return float(schedule[min(max(attempts, 1), len(schedule)) - 1])

    async def _attempt(self, message: QueuedMessage) -> None:
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, message.message_path.read_bytes)
        envelope = message.envelope
        attempts = int(message.state.get("attempts", 0)) + 1
        log.info(
            "delivery %s: attempt %d from <%s> to %s",
            message.id,
            attempts,
            envelope.mail_from,
            ", ".join(f"<{r}>" for r in envelope.rcpt_to),
        )
        by_domain: dict[str, list[str]] = {}
        for rcpt in envelope.rcpt_to:
            by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
        outbound = _outbound(data)
        outcomes: dict[str, Outcome] = {}
        for domain, rcpts in by_domain.items():
            outcomes.update(await self._deliver_domain(domain, rcpts, envelope, outbound))

        now = time.time()
        age = now - envelope.received_at.timestamp()
        expired = age >= self.settings.max_queue_age
        failed: list[tuple[str, Outcome]] = []
        relayed: list[tuple[str, Outcome]] = []
        left: list[str] = []
        for rcpt in envelope.rcpt_to:
            outcome = outcomes[rcpt]
            if outcome.kind == "ok":
                log.info("delivery %s: <%s> delivered: %s", message.id, rcpt, outcome.text)
                self._journal(message, "relayed", rcpt, outcome)
                if not outcome.dsn_passed:
                    relayed.append((rcpt, outcome))
            elif outcome.kind == "perm":
                log.info("delivery %s: <%s> bounced: %s", message.id, rcpt, outcome.text)
                self._journal(message, "bounced", rcpt, outcome)
                failed.append((rcpt, outcome))
            elif expired:
                text = (
                    f"{outcome.text}; gave up after {attempts} attempts "
                    f"in {age:.0f} s (the queue lifetime)"
                )
                log.info("delivery %s: <%s> expired: %s", message.id, rcpt, text)
                expired_outcome = replace(
                    outcome, kind="perm", text=text, status=outcome.status or "4.4.7"
                )
                self._journal(message, "bounced", rcpt, expired_outcome)
                failed.append((rcpt, expired_outcome))
            else:
                log.info("delivery %s: <%s> deferred: %s", message.id, rcpt, outcome.text)
                left.append(rcpt)
        if failed:
            await self._report(message, data, "failed", failed)
        if relayed:
            await self._report(message, data, "relayed", relayed)
        warned = list(message.state.get("delay_warned", ()))
        if left and age >= self.settings.delay_warning:
            late = [(rcpt, outcomes[rcpt]) for rcpt in left if rcpt not in warned]
            warned += [rcpt for rcpt, _ in late]
            await self._report(message, data, "delayed", late)
        if not left:
            await loop.run_in_executor(None, self.queue.remove, message)
            self._backoff.pop(message.id, None)
            return
        expiry = envelope.received_at.timestamp() + self.settings.max_queue_age
        next_attempt = max(now, min(now + self._delay(attempts), expiry))
        state = {
            "attempts": attempts,
            "last_attempt": now,
            "next_attempt": next_attempt,
            "last_error": {rcpt: outcomes[rcpt].text for rcpt in left},
            **({"delay_warned": [r for r in warned if r in left]} if warned else {}),
        }
        await loop.run_in_executor(None, self.queue.update, message, left, state)
        for rcpt in left:
            self._journal(message, "deferred", rcpt, outcomes[rcpt], attempts=attempts,
                          retry_in=round(next_attempt - now, 3))
        log.info(
            "delivery %s: %d recipient(s) left; next attempt in %.3g s",
            message.id,
            len(left),
            next_attempt - now,
        )

    # -- one domain ---------------------------------------------------------------

    async def _deliver_domain(
        self, domain: str, rcpts: list[str], envelope: Envelope, data: bytes
    ) -> dict[str, Outcome]:
        hops, problem = await self._hops(domain)
        if problem is not None:
            return {rcpt: problem for rcpt in rcpts}
        pending = list(rcpts)
        outcomes: dict[str, Outcome] = {}
        last: dict[str, Outcome] = {}
        for hop in hops:
            if (hop.address, hop.port) in self.own:
                loop_text = f"mail for {domain} loops back to myself ({hop.label})"
                return {rcpt: Outcome("perm", loop_text, "5.4.6") for rcpt in rcpts}
            results = await self._session(hop, envelope, pending, data)
            for rcpt, outcome in results.items():
                if outcome.kind == "temp":
                    last[rcpt] = outcome
                else:
                    outcomes[rcpt] = outcome
            pending = [rcpt for rcpt in pending if results[rcpt].kind == "temp"]
            if not pending:
                break
        for rcpt in pending:
            outcomes[rcpt] = last[rcpt]
        return outcomes

    async def _hops(self, domain: str) -> tuple[list[_Hop], Outcome | None]:
        """Where to connect for ``domain``, in order; or why nowhere (temp or perm)."""
        loop = asyncio.get_running_loop()
        routes = await loop.run_in_executor(None, read_smtproutes, self.context.root)
        route = find_route(routes, domain)
        if route is not None and route.host is not None:
            port = route.port or self.settings.mx_port
            host = route.host
            if host.startswith("[") and host.endswith("]"):
                return [_Hop(host, host[1:-1], port)], None
            addresses, error = await self._addresses(host)
            if not addresses:
                text = f"smtproutes host {host} for {domain}: {error}"
                return [], Outcome("temp", text, "4.4.3")
            return [_Hop(host, address, port) for address in addresses], None
        if domain.startswith("[") and domain.endswith("]"):
            # An address literal (bob@[127.0.0.3], RFC 5321 4.1.3): no MX lookup.
            literal = domain[1:-1].removeprefix("ipv6:")
            if _is_ip(literal):
                return [_Hop(domain, literal, self.settings.mx_port)], None
            return [], Outcome("perm", f"{domain} is not an address literal", "5.1.2")
        return await self._mx_hops(domain)

    async def _mx_hops(self, domain: str) -> tuple[list[_Hop], Outcome | None]:
        from mailtalk.net.mx import Resolver, lookup_mx

        if self._resolver is None:
            self._resolver = Resolver(self.settings.resolver)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, lookup_mx, domain, self._resolver)
        except ValueError as error:
            return [], Outcome("perm", str(error), "5.1.2")
        log.info("delivery: MX of %s via %s: %s", domain, result.resolver, result.message)
        if result.status == "null":
            return [], Outcome("perm", result.message, "5.1.10")
        if result.status in ("nxdomain", "nodata"):
            return [], Outcome("perm", result.message, "5.1.2")
        if result.status in ("servfail", "timeout"):
            return [], Outcome("temp", result.message, "4.4.3")
        hops = [
            _Hop(host.host, address, self.settings.mx_port)
            for host in result.hosts
            for address in host.addresses
        ]
        if not hops:
            errors = "; ".join(h.error or h.host for h in result.hosts)
            text = f"no address for the MX hosts of {domain}: {errors}"
            return [], Outcome("temp", text, "4.4.3")
        return hops, None

    async def _addresses(self, host: str) -> tuple[list[str], str]:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))], ""
        loop = asyncio.get_running_loop()
        if self.settings.resolver:
            from mailtalk.net.mx import Resolver, host_addresses

            if self._resolver is None:
                self._resolver = Resolver(self.settings.resolver)
            found, error = await loop.run_in_executor(
                None, host_addresses, self._resolver.resolver, host
            )
            return list(found), error or ""
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as error:
            return [], f"cannot resolve {host}: {error}"
        return list(dict.fromkeys(str(info[4][0]) for info in infos)), ""

    # -- one SMTP session -------------------------------------------------------

    def _local_address(self, address: str) -> tuple[str, int] | None:
        """Connect from the listen address when it can reach ``address`` (127.0.0.x worlds)."""
        if not self.source:
            return None
        try:
            source = ipaddress.ip_address(self.source)
            target = ipaddress.ip_address(address)
        except ValueError:
            return None
        if source.is_unspecified or source.version != target.version:
            return None
        if source.is_loopback != target.is_loopback:
            return None
        return (self.source, 0)

    async def _session(
        self, hop: _Hop, envelope: Envelope, rcpts: Sequence[str], data: bytes
    ) -> dict[str, Outcome]:
        sender = envelope.mail_from
        settings = self.settings
        where = hop.label
        log.info("delivery: connecting to %s for %s", where, ", ".join(f"<{r}>" for r in rcpts))
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    hop.address, hop.port, local_addr=self._local_address(hop.address)
                ),
                min(CONNECT_TIMEOUT, settings.delivery_timeout),
            )
        except (OSError, TimeoutError) as error:
            reason = (
                "timed out"
                if isinstance(error, TimeoutError)
                else ((error.strerror or str(error)).lower())
            )
            text = f"connect to {where} failed: {reason}"
            log.info("delivery: %s", text)
            failed = Outcome("temp", text, "4.4.1", hop.host, address=hop.address_port)
            return dict.fromkeys(rcpts, failed)

        client = _Client(reader, writer, settings.delivery_timeout)
        plan = Plan(
            helo=self.context.hostname,
            sender=sender,
            recipients=tuple(rcpts),
            starttls=TLSPolicy.IF_OFFERED,
            size=len(data),
            eight_bit=any(b > 0x7F for b in data),
            dsn=_passed_on(envelope, rcpts),
        )
        sequence = ClientSequence(client.core, plan)
        if self._tls is None:
            self._tls = _opportunistic_tls()
        try:
            result = await client.drive(sequence, data, self._tls, hop)
        except (_Dropped, TimeoutError, OSError, ssl.SSLError, ProtocolError) as error:
            if isinstance(error, TimeoutError):
                reason = f"no answer within {settings.delivery_timeout:g} s"
            else:
                reason = str(error) or type(error).__name__
            stage = _WAITING_FOR.get(sequence.waiting_for, sequence.waiting_for)
            text = f"lost connection with {where} while waiting for a reply to {stage}: {reason}"
            log.info("delivery: %s", text)
            lost = Outcome("temp", text, "4.4.2", hop.host, address=hop.address_port)
            return _outcomes(sequence.result, rcpts, hop, otherwise=lost)
        finally:
            await client.close()
        outcomes = _outcomes(result, rcpts, hop)
        if "DSN" in result.used:
            outcomes = {
                rcpt: replace(outcome, dsn_passed=True) if outcome.kind == "ok" else outcome
                for rcpt, outcome in outcomes.items()
            }
        return outcomes

    # -- delivery status notifications --------------------------------------------

    async def _report(
        self, message: QueuedMessage, data: bytes, action: Action,
        outcomes: list[tuple[str, Outcome]],
    ) -> None:  # fmt: skip
        """Send the sender one DSN with ``action`` for those of ``outcomes`` whose NOTIFY
        asks for it; none for a message from ``<>`` (a bounce of a bounce could loop)."""
        envelope = message.envelope
        asked = [(r, o) for r, o in outcomes if wants(envelope.notify.get(r), action)]
        if not asked:
            return
        if not envelope.mail_from:
            log.info(
                "delivery %s: not %s a message from <> (a bounce of a bounce)%s",
                message.id, "bouncing" if action == "failed" else f"reporting ({action}) on",
                "; dropped for " + ", ".join(f"<{r}>" for r, _ in asked)
                if action == "failed" else "",
            )  # fmt: skip
            return
        expiry = envelope.received_at.timestamp() + self.settings.max_queue_age
        recipients = [_report_recipient(envelope, rcpt, o, action, expiry) for rcpt, o in asked]
        report = build_report(
            self.context.hostname, envelope.mail_from, recipients, data,
            arrival=envelope.received_at, queue_id=message.id,
            envid=envelope.envid, ret=envelope.ret,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        sent = await loop.run_in_executor(
            None, send_report, self.context, envelope.mail_from, report
        )
        if sent is None:
            return
        if sent.user is not None:
            self.context.notify_delivered({sent.user})
            log.info("delivery %s: %s DSN delivered to local user %s",
                     message.id, action, sent.user)  # fmt: skip
            self._journal_bounce(message, sent.outcome, sent.paths, sent.content, user=sent.user,
                                 mailbox="INBOX", recipients=[envelope.mail_from], dsn=action)
            return
        log.info("delivery %s: %s DSN to <%s> queued", message.id, action, envelope.mail_from)
        self._journal_bounce(message, sent.outcome, sent.paths, sent.content,
                             recipients=[envelope.mail_from], dsn=action)  # fmt: skip
        self._wakeup.set()

    def _journal_bounce(
        self, message: QueuedMessage, outcome: str, paths: list[Any], content: bytes,
        **fields: Any,
    ) -> None:
        """The bounce (a DSN) landed in a Maildir, or was queued (with a journal)."""
        journal = self.context.journal
        if journal is None or not paths:
            return
        from mailtalk.servers.journal import HEAD_LIMIT, subject_of

        journal.write(
            self.context.hostname, "message", outcome=outcome, queue_id=None,
            file=paths[0].name, sender="", size=len(content),
            subject=subject_of(content[:HEAD_LIMIT]),
            bounce_of=message.envelope.queue_id or message.id, **fields,
        )  # fmt: skip


def _report_recipient(
    envelope: Envelope, rcpt: str, outcome: Outcome, action: Action, expiry: float
) -> ReportRecipient:
    """A recipient's DSN fields from its outcome; the status class follows the action."""
    status = outcome.status
    if action == "failed" and status[:1] not in ("4", "5"):
        status = "5.0.0"
    elif action == "delayed":
        status = "4" + status[1:] if status[:1] in ("4", "5") else "4.0.0"
    elif action in ("relayed", "delivered"):
        status = "2" + status[1:] if status[:1] == "2" else "2.0.0"
    return ReportRecipient(
        rcpt, action, status, outcome.text, envelope.orcpt.get(rcpt), outcome.remote,
        outcome.diagnostic, retry_until=expiry if action == "delayed" else None,
    )  # fmt: skip


def _passed_on(envelope: Envelope, rcpts: Sequence[str]) -> DSN | None:
    """The DSN parameters to give the next hop (when it offers DSN, RFC 3461 5.2.2): one
    Plan carries one NOTIFY, so only when every recipient of the session asked the same;
    ORCPT then names each recipient as the next hop sees it."""
    notify = {envelope.notify.get(rcpt) for rcpt in rcpts}
    if len(notify) != 1 or not (envelope.ret or envelope.envid or None not in notify):
        return None
    envid = decode_xtext(envelope.envid) if envelope.envid else None
    return DSN(notify=notify.pop(), ret=envelope.ret, envid=envid,
               orcpt=any(rcpt in envelope.orcpt for rcpt in rcpts))  # fmt: skip


def replace_kind(outcome: Outcome) -> Outcome:
    """A 2xx where it makes no sense (a 250 to DATA): a temporary failure."""
    return replace(outcome, kind="temp", status="4.5.0")


# What a reply answered, as the log and the bounce say it.
_IN_REPLY_TO: Final = {
    GREETING: "the greeting",
    "EHLO": "EHLO command",
    "HELO": "HELO command",
    "MAIL": "MAIL FROM command",
    "RCPT": "RCPT TO command",
    "DATA": "DATA command",
    END_OF_DATA: "end of DATA",
}
# What a lost connection was waiting for.
_WAITING_FOR: Final = {**_IN_REPLY_TO, "EHLO": "EHLO", "HELO": "HELO"}


def _outcomes(
    result: Result, rcpts: Sequence[str], hop: _Hop, otherwise: Outcome | None = None
) -> dict[str, Outcome]:
    """Each recipient's outcome from what the sequence got: its own RCPT refusal, or
    the reply to the message, or the refusal that ended the conversation (a 2xx
    where it makes no sense is a temporary failure), or ``otherwise`` (the
    connection was lost)."""

    def said(reply: Reply, in_reply_to: str) -> Outcome:
        text = f"host {hop.label} said: {_reply_text(reply)} (in reply to {in_reply_to})"
        return Outcome(
            _classify(reply), text, _status(reply), hop.host, _reply_text(reply),
            address=hop.address_port, code=reply.code,
        )  # fmt: skip

    outcomes = {
        rcpt: said(reply, _IN_REPLY_TO["RCPT"])
        for rcpt, reply in result.recipients
        if reply.code // 100 != 2
    }
    ended = otherwise
    message = result.reply(Stage.MESSAGE)
    if message is not None:
        ended = said(message, _IN_REPLY_TO[END_OF_DATA])
    elif result.refusal is not None and result.refusal.reply is not None:
        refusal, reply = result.refusal, result.refusal.reply
        in_reply_to = _IN_REPLY_TO.get(refusal.verb, f"{refusal.verb} command")
        if refusal.stage is Stage.TLS and refusal.verb == "EHLO":
            in_reply_to += " after STARTTLS"
        ended = said(reply, in_reply_to)
        if ended.kind == "ok":
            ended = replace_kind(ended)
    assert ended is not None, "a sequence that ended without a refusal sent the message"
    return {rcpt: outcomes.get(rcpt, ended) for rcpt in rcpts}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _outbound(data: bytes) -> bytes:
    """The queued copy as it goes on: without our Return-Path (the final MTA adds one)."""
    if data.startswith(b"Return-Path:"):
        end = data.find(b"\n")
        if end >= 0:
            return data[end + 1 :]
    return data
