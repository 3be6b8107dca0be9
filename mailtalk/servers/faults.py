"""Fault injection in a running server: the plan of one server's fault rules.

A *fault rule* makes a reference server misbehave on purpose, at a precise point of a
session, the same way every time (``mailtalk serve --fault RULE``); how a rule is
written, and what it parses to, is in :mod:`mailtalk.servers.fault_rules`, the named
bundles of rules in :mod:`mailtalk.servers.fault_scenarios`. This module is what every
server holds, with rules or without: a plan without rules loads neither of those.

Using it from a server
======================

::

    plan = FaultPlan(["smtp:rcpt#2=452 4.2.2 Mailbox full"])
    faults = plan.session(session_id)          # one per connection
    action = faults.on_command("rcpt", client=ip, tls="no", **{"to": address})
    if action is None: ...                     # behave normally
    elif action.kind == "disconnect": ...      # drop the connection
    elif action.kind == "delay": ...           # sleep action.seconds, then behave normally
    elif action.kind == "trickle": ...         # behave normally, writing action.rate B/s
    else: ...                                  # send action.code / action.status, action.text

:meth:`SessionFaults.on_command` counts occurrences; RSET, HELO and EHLO reset
the transaction counts before they are counted, ``data-end`` after it. The
server may also call :meth:`SessionFaults.reset_transaction` itself (calling it
twice is harmless). Every fault that fires is kept in :attr:`FaultPlan.fired`
and logged on the ``mailtalk.faults`` logger. A plan is thread-safe. Nothing is
random.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    # The names this module had before the rule language moved out, for type checkers;
    # at run time __getattr__ below loads them when first asked for.
    from mailtalk.servers.fault_rules import ACTION_PLACEHOLDERS as ACTION_PLACEHOLDERS
    from mailtalk.servers.fault_rules import COMMANDS as COMMANDS
    from mailtalk.servers.fault_rules import FIELDS as FIELDS
    from mailtalk.servers.fault_rules import PROTOCOLS as PROTOCOLS
    from mailtalk.servers.fault_rules import TRANSACTION_COMMANDS as TRANSACTION_COMMANDS
    from mailtalk.servers.fault_rules import Condition as Condition
    from mailtalk.servers.fault_rules import FaultAction as FaultAction
    from mailtalk.servers.fault_rules import FaultContext as FaultContext
    from mailtalk.servers.fault_rules import FaultRule as FaultRule
    from mailtalk.servers.fault_rules import FaultRuleError as FaultRuleError
    from mailtalk.servers.fault_rules import FieldValue as FieldValue
    from mailtalk.servers.fault_rules import FiredFault as FiredFault
    from mailtalk.servers.fault_rules import SessionFaults as SessionFaults
    from mailtalk.servers.fault_rules import parse_rule as parse_rule
    from mailtalk.servers.fault_rules import parse_rules as parse_rules
    from mailtalk.servers.fault_scenarios import Scenario as Scenario
    from mailtalk.servers.fault_scenarios import UnknownScenarioError as UnknownScenarioError
    from mailtalk.servers.fault_scenarios import scenario as scenario
    from mailtalk.servers.fault_scenarios import scenario_names as scenario_names

log = logging.getLogger("mailtalk.faults")

GREYLIST_LIFETIME: Final = 35 * 86400.0  # postgrey's --max-age: 35 days
MAX_GREYLIST_ENTRIES: Final = 100_000  # the oldest seen go first past it
MAX_RATE_TIMES: Final = 1_000_000  # times a rate rule keeps over all its keys, at most

# Names of the rule language and the scenarios that this module gives too (PEP 562),
# loading their module only when one is asked for.
_MOVED: Final = {
    "mailtalk.servers.fault_rules": frozenset({
        "ACTION_PLACEHOLDERS", "COMMANDS", "FIELDS", "PROTOCOLS", "TRANSACTION_COMMANDS",
        "Condition", "FaultAction", "FaultContext", "FaultRule", "FaultRuleError",
        "FiredFault", "SessionFaults", "parse_rule", "parse_rules",
    }),
    "mailtalk.servers.fault_scenarios": frozenset({
        "Scenario", "UnknownScenarioError", "scenario", "scenario_names",
    }),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    import importlib

    for module, names in _MOVED.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _parsed(rules: Iterable[str | FaultRule]) -> tuple[FaultRule, ...]:
    """The rules, those given as text parsed (FaultRuleError for the first bad one)."""
    rules = tuple(rules)
    if not rules:
        return ()  # the usual server: the rule language is not even loaded
    from mailtalk.servers.fault_rules import FaultRule, parse_rule

    return tuple(rule if isinstance(rule, FaultRule) else parse_rule(rule) for rule in rules)


class RateLimiter:
    """At most ``limit`` occurrences in any ``window`` seconds, counted apart per key.

    A sliding log: each key keeps the times of its last ``limit`` accepted
    occurrences, and one more passes only when the oldest of them is a window
    old. Why not a token bucket or fixed windows: the answer must be exact and
    predictable, as every fault rule is (``3/2s`` means the 4th within 2 s is
    refused, whatever the pauses between them; a bucket refills bit by bit and
    lets a 4th through a slow client, fixed windows let twice the limit through
    across a window's edge). A refused occurrence is not logged, so a client
    that waits a whole window gets its full allowance back.

    Memory is bounded: a key whose times are all a window old is forgotten (it
    is the same as a new key), the keys hold at most ``MAX_RATE_TIMES`` times
    together, and past that the least recently used key goes (that client
    starts afresh: the lenient error).
    """

    def __init__(self, limit: int, window: float, max_times: int = MAX_RATE_TIMES) -> None:
        if limit < 1 or not window > 0:
            raise ValueError("a rate needs a limit >= 1 and a window > 0")
        self.limit = limit
        self.window = float(window)
        self.max_keys = max(16, max_times // limit)
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._times)

    def allow(self, key: str, now: float) -> bool:
        """Count an occurrence for ``key`` at ``now``; False when over the limit."""
        times = self._times.pop(key, None)
        if times is None:
            times = deque(maxlen=self.limit)
        while times and (now - times[0] >= self.window or times[0] > now):
            times.popleft()  # a window old (or from a clock that went back)
        allowed = len(times) < self.limit
        if allowed:
            times.append(now)
        self._times[key] = times  # the most recently used last
        if len(self._times) > self.max_keys:
            self.expire(now)
            while len(self._times) > self.max_keys:
                self._times.popitem(last=False)
        return allowed

    def expire(self, now: float) -> None:
        """Forget the keys whose every time is a window old."""
        for key, times in list(self._times.items()):
            if not times or now - times[-1] >= self.window:
                del self._times[key]


def greylist_network(address: str) -> str:
    """The client network postgrey keys a triplet on: an IPv4 address's /24, an
    IPv6 address's /64 (anything else as given, lower case)."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address.strip().lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class FaultPlan:
    """The rules of one server, the state they keep, and the log of what fired.

    ``clock`` gives the times recorded in :attr:`fired` and used by greylisting
    and rates. ``greylist_min_age`` is how long (seconds) a greylisted triplet
    must wait before a retry passes; a triplet not seen for ``greylist_lifetime``
    seconds is forgotten. With ``state_path`` the greylist is kept in that JSON
    file across restarts (written to a temporary file and renamed over it);
    pass ``clock=time.time`` then, so that its times mean something to the next
    process. ``tempfail-once`` and rates are never persisted: "once" is once
    per server life, and a restart forgives a client.
    """

    def __init__(
        self,
        rules: Iterable[str | FaultRule] = (),
        clock: Callable[[], float] = time.monotonic,
        *,
        greylist_min_age: float = 0.0,
        greylist_lifetime: float = GREYLIST_LIFETIME,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.rules: tuple[FaultRule, ...] = _parsed(rules)
        if greylist_min_age < 0 or not math.isfinite(greylist_min_age):
            raise ValueError("greylist_min_age must be a number of seconds >= 0")
        if not greylist_lifetime > 0 or not math.isfinite(greylist_lifetime):
            raise ValueError("greylist_lifetime must be a number of seconds > 0")
        self.clock = clock
        self.greylist_min_age = float(greylist_min_age)
        self.greylist_lifetime = float(greylist_lifetime)
        self.state_path = Path(state_path) if state_path is not None else None
        self._lock = threading.RLock()
        self._fired: list[FiredFault] = []
        self._tempfailed: set[int] = set()
        # triplet -> (first seen, last seen)
        self._greylist: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._rates: dict[int, RateLimiter] = {
            index: RateLimiter(rule.action.limit, rule.action.seconds)
            for index, rule in enumerate(self.rules)
            if rule.action.kind == "rate"
        }
        if self.state_path is not None:
            self._load_state(self.state_path)

    @classmethod
    def from_scenario(
        cls,
        *names: str,
        clock: Callable[[], float] = time.monotonic,
        greylist_min_age: float = 0.0,
        greylist_lifetime: float = GREYLIST_LIFETIME,
        state_path: str | os.PathLike[str] | None = None,
    ) -> FaultPlan:
        """A plan with the rules of the named scenarios (their settings are the server's)."""
        from mailtalk.servers.fault_scenarios import scenario

        rules = [text for name in names for text in scenario(name).rules]
        return cls(
            rules,
            clock,
            greylist_min_age=greylist_min_age,
            greylist_lifetime=greylist_lifetime,
            state_path=state_path,
        )

    def with_rules(self, rules: Iterable[str | FaultRule]) -> FaultPlan:
        """A plan with other rules and the same clock, settings and greylist file (read
        again: the triplets survive; rates and tempfail-once start afresh)."""
        return FaultPlan(
            rules,
            self.clock,
            greylist_min_age=self.greylist_min_age,
            greylist_lifetime=self.greylist_lifetime,
            state_path=self.state_path,
        )

    # -- sessions ---------------------------------------------------------------

    def session(
        self, session_id: str | int, protocol: str = "smtp", **fields: FieldValue
    ) -> SessionFaults:
        """Per-connection counters and remembered fields; ``fields`` are sticky ones."""
        from mailtalk.servers.fault_rules import PROTOCOLS, SessionFaults

        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        return SessionFaults(self, str(session_id), protocol, fields)

    # -- the decision -------------------------------------------------------------

    def check(self, event: FaultContext) -> FaultAction | None:
        """The action of the first rule that fires for this event, or None.

        What comes back is a ``reply``, ``disconnect`` or ``delay`` action, its
        text's placeholders filled in. Greylist and tempfail-once state changes
        here, and the fired fault is recorded and logged.
        """
        fired = self.check_fired(event)
        return fired.action if fired is not None else None

    def check_fired(self, event: FaultContext) -> FiredFault | None:
        """As :meth:`check`, but the fired fault itself (rule, action...), or None."""
        with self._lock:
            for index, rule in enumerate(self.rules):
                if not rule.applies(event):
                    continue
                action = self._resolve(index, rule, event)
                if action is None:
                    continue
                from mailtalk.servers.fault_rules import FiredFault, placeholder_values

                action = action.render(placeholder_values(event.fields))
                fired = FiredFault(
                    rule=rule.text,
                    session_id=event.session_id,
                    protocol=event.protocol,
                    command=event.command,
                    occurrence=event.occurrence,
                    action=action,
                    time=self.clock(),
                )
                self._fired.append(fired)
                log.info(
                    "fault fired in session %s at %s #%d: %s",
                    event.session_id or "-",
                    event.command,
                    event.occurrence,
                    rule.text,
                )
                return fired
        return None

    def _resolve(self, index: int, rule: FaultRule, event: FaultContext) -> FaultAction | None:
        action = rule.action
        if action.kind == "tempfail-once":
            if index in self._tempfailed:
                return None
            self._tempfailed.add(index)
            return replace(action, kind="reply")
        if action.kind == "rate":
            key = event.fields.get(action.per, "").lower()
            if self._rates[index].allow(key, self.clock()):
                return None
            return replace(action, kind="reply")
        if action.kind == "greylist":
            return self._greylisted(action, event)
        return action

    def _greylisted(self, action: FaultAction, event: FaultContext) -> FaultAction | None:
        triplet = (
            greylist_network(event.fields.get("client", "")),
            event.fields.get("from", "").lower(),
            event.fields.get("to", "").lower(),
        )
        now = self.clock()
        first, last = self._greylist.get(triplet, (None, None))
        if first is None or last is None or first > now or now - last > self.greylist_lifetime:
            # new, forgotten, or a time from another clock: the first attempt
            self._greylist[triplet] = (now, now)
            self._forget_old_triplets(now)
            self._save_state()
            return replace(action, kind="reply")
        self._greylist[triplet] = (first, now)
        if now - first < self.greylist_min_age:
            return replace(action, kind="reply")
        if now - last >= min(3600.0, self.greylist_lifetime / 2):
            self._save_state()  # seen again: its lifetime starts again, on disk too
        return None

    def _forget_old_triplets(self, now: float) -> None:
        expired = [t for t, (_, last) in self._greylist.items()
                   if now - last > self.greylist_lifetime]  # fmt: skip
        for triplet in expired:
            del self._greylist[triplet]
        if len(self._greylist) > MAX_GREYLIST_ENTRIES:
            by_age = sorted(self._greylist.items(), key=lambda item: item[1][1])
            for triplet, _ in by_age[: len(self._greylist) - MAX_GREYLIST_ENTRIES]:
                del self._greylist[triplet]

    # -- what fired ---------------------------------------------------------------

    @property
    def fired(self) -> list[FiredFault]:
        """Every fault that fired, oldest first (a copy)."""
        with self._lock:
            return list(self._fired)

    def fired_rules(self) -> list[str]:
        """The rule texts of the faults that fired, in order."""
        with self._lock:
            return [fired.rule for fired in self._fired]

    def clear_fired(self) -> None:
        """Forget the fired log (greylist and tempfail-once state stay)."""
        with self._lock:
            self._fired.clear()

    # -- greylist persistence -------------------------------------------------------

    def _load_state(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable fault state %s: %s", path, error)
            return
        entries = data.get("greylist", []) if isinstance(data, dict) else []
        # [network, sender, recipient, first seen, last seen]; version 1 had no last seen
        for entry in entries if isinstance(entries, list) else []:
            if (
                isinstance(entry, list)
                and len(entry) in (4, 5)
                and all(isinstance(part, str) for part in entry[:3])
                and all(
                    isinstance(t, int | float) and not isinstance(t, bool) for t in entry[3:]
                )
            ):
                first = float(entry[3])
                last = float(entry[4]) if len(entry) == 5 else first
                network = greylist_network(entry[0])
                self._greylist[(network, entry[1], entry[2])] = (first, last)

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        entries = [[*triplet, *times] for triplet, times in sorted(self._greylist.items())]
        payload = json.dumps({"version": 2, "greylist": entries}, indent=1)
        temporary = self.state_path.with_name(f"{self.state_path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(payload + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.state_path)  # a reader sees the old file or the new
        except OSError as error:
            log.warning("cannot save fault state to %s: %s", self.state_path, error)
