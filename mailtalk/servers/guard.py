"""What slows a password guesser down and cuts an error flood off, for all three servers.

Real servers bound both, and so does this one, with the same ideas:

- **The password check runs off the event loop**, in a pool of its own of
  :data:`CHECK_THREADS` threads (each hands scrypt to a worker process of its own,
  :mod:`mailtalk.servers.scrypt_worker`), and one check at a time per client address: scrypt
  costs tens of milliseconds of CPU, so a guesser must neither stall the loop that
  serves everybody nor take every core and every thread of the default executor
  (which also does the fsync before an SMTP 250).
- **A failure delay that grows**: a wrong password is answered only after
  ``settings.auth_failure_delay`` seconds, doubled for each earlier failure from the
  same address in the last :data:`FAILURE_WINDOW`, whichever connection it came on, up
  to :data:`MAX_FAILURE_DELAY` (Dovecot waits ``auth_failure_delay`` = 2 s, and its
  per-address penalty grows 2, 4, 8, 15 s). The session reads nothing meanwhile. The
  address's turn is not held through the delay: another client behind the same
  address (a classroom's NAT) waits for a check, not for the guesser's penalties.
- **A per-address failure budget**: after ``settings.auth_failures_per_address``
  wrong passwords from one address within :data:`FAILURE_WINDOW`, logins from it are
  refused, without looking at the password, until the oldest of those failures is
  that old (fail2ban's maxretry and findtime, inside the server). The servers say so
  with a temporary error: SMTP 454 4.7.0 (the personality's words), POP3
  ``-ERR [SYS/TEMP]``, IMAP ``NO [UNAVAILABLE]``.
- **An error limit per session** (:class:`SessionErrors`): after
  ``settings.error_limit`` errors the server says goodbye in its protocol's words and
  hangs up (Postfix ``smtpd_hard_error_limit`` = 20: ``421 4.7.0 Error: too many
  errors``; Dovecot's 20 bad POP3 or IMAP commands in a row).

IPv6 clients are counted by /64, the block one host usually has (Dovecot groups by
/48), so a client cannot start over by changing the low bits of its address; the
number of addresses remembered is bounded (:data:`MAX_ADDRESSES`).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from mailtalk.servers.context import ServerSettings
    from mailtalk.servers.users import Users

# Seconds over which failures from one address are counted (Dovecot forgets its penalty
# after about half a minute of quiet; fail2ban's default findtime is 10 minutes).
FAILURE_WINDOW: Final = 600.0
MAX_FAILURE_DELAY: Final = 15.0  # Dovecot's AUTH_PENALTY_MAX_SECS
MAX_ADDRESSES: Final = 4096  # addresses whose failures are remembered; the oldest go first
CHECK_THREADS: Final = 2  # scrypt checks at once, whatever the number of guessers
IPV6_PREFIX: Final = 64


class Verdict(enum.Enum):
    """What a login attempt comes to."""

    OK = "ok"
    FAILED = "failed"  # wrong name or password (answered after the failure delay)
    REFUSED = "refused"  # the address used up its failure budget: not even checked


def address_key(address: str) -> str:
    """The unit failures are counted by: an IPv4 address, or an IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


class AuthGuard:
    """Password checks for every session of one server: off the loop, paced, budgeted.

    ``settings`` is read at each attempt, so a scenario that changes it (or a test)
    takes effect at once.
    """

    def __init__(
        self, settings: ServerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()  # oldest first
        self._turns: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}  # how many attempts hold or wait for a turn
        self._executor: ThreadPoolExecutor | None = None

    # -- the budget ---------------------------------------------------------------

    def _recent(self, key: str) -> deque[float]:
        """The failures of ``key`` within the window (older ones forgotten)."""
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        horizon = self._clock() - FAILURE_WINDOW
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def refused_for(self, address: str) -> float:
        """Seconds before ``address`` may try a password again; 0 if it may now."""
        budget = self.settings.auth_failures_per_address
        if budget <= 0:
            return 0.0
        failures = self._recent(address_key(address))
        if len(failures) < budget:
            return 0.0
        return max(0.0, failures[-budget] + FAILURE_WINDOW - self._clock())

    def failure_delay(self, address: str) -> float:
        """How long the next failure from ``address`` is answered late."""
        base = self.settings.auth_failure_delay
        if base <= 0:
            return 0.0
        earlier = len(self._recent(address_key(address)))
        return min(base * 2.0 ** min(earlier, 16), MAX_FAILURE_DELAY)

    def record_failure(self, address: str) -> None:
        key = address_key(address)
        failures = self._recent(key)
        if key not in self._failures:
            while len(self._failures) >= MAX_ADDRESSES:
                self._failures.popitem(last=False)
            self._failures[key] = failures
        self._failures.move_to_end(key)
        failures.append(self._clock())
        # Only the most recent failures can matter to the budget or the delay.
        keep = max(self.settings.auth_failures_per_address, 17)
        while len(failures) > keep:
            failures.popleft()

    # -- checking -------------------------------------------------------------------

    async def check_password(self, users: Users, name: str, secret: str, address: str) -> Verdict:
        """Is ``secret`` right for ``name``? Waits its address's turn, checks in the pool,
        and answers a failure only after the failure delay (its turn given up by then)."""
        return await self.check(address, functools.partial(users.verify, name, secret))

    async def check(self, address: str, verify: Callable[[], bool]) -> Verdict:
        """A login attempt from ``address`` that ``verify()`` decides (in the pool): what
        :meth:`check_password` does for any kind of secret (POP3's APOP digest too)."""
        if self.refused_for(address) > 0:
            return Verdict.REFUSED
        key = address_key(address)
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = asyncio.Lock()
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with turn:
                if self.refused_for(address) > 0:  # failures came while it waited
                    return Verdict.REFUSED
                loop = asyncio.get_running_loop()
                if await loop.run_in_executor(self._pool(), verify):
                    return Verdict.OK
                delay = self.failure_delay(address)
                self.record_failure(address)
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
                del self._turns[key]
        if delay > 0:
            await asyncio.sleep(delay)
        return Verdict.FAILED

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            # imported here: a server nobody logs in to never loads the thread pool's module
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="password")
        return self._executor

    def close(self) -> None:
        """Let the pool's threads go (checks under way finish first)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


class SessionErrors:
    """The errors of one session, against ``limit`` (0: no limit).

    Two counts: errors since the last success that forgives them (a delivered message in
    SMTP, as Postfix counts "errors without delivering mail"; a +OK in POP3, an OK or NO
    in IMAP, as Dovecot counts bad commands in a row), and failed logins, which nothing
    forgives: a guesser cannot reset its count with a NOOP between two guesses.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.errors = 0
        self.auth_failures = 0
        # At the limit: a field kept up to date, not a property, since the sessions ask
        # it before every command.
        self.exceeded = False

    def error(self) -> None:
        self.errors += 1
        self._update()

    def auth_failed(self) -> None:
        self.auth_failures += 1
        self._update()

    def forgive(self) -> None:
        self.errors = 0
        self._update()

    def _update(self) -> None:
        self.exceeded = self.limit > 0 and max(self.errors, self.auth_failures) >= self.limit
