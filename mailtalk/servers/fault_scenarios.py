"""Named scenarios: documented bundles of fault rules and server settings.

A scenario (``mailtalk serve --scenario greylist``, or a line of ROOT/control/scenarios)
is kept as data in ``mailtalk/knowledge/scenarios.toml``; its rules are fault rules
(:mod:`mailtalk.servers.fault_rules`), checked when the file is first read.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from mailtalk.servers.fault_rules import FaultRuleError, parse_rule

__all__ = ["Scenario", "UnknownScenarioError", "scenario", "scenario_names"]

_SCENARIOS: Final = "scenarios.toml"


class UnknownScenarioError(KeyError):
    """No scenario by that name. A :class:`KeyError`, with a readable message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Scenario:
    """A named bundle of fault rules and server settings, with a learner's description.

    ``settings`` are for the server to read (e.g. ``{"relay": "deny"}``);
    ``rules`` are fault rules for :class:`FaultPlan`.
    """

    name: str
    description: str
    rules: tuple[str, ...]
    settings: Mapping[str, object]


@functools.cache
def _load_scenarios() -> dict[str, Scenario]:
    import tomllib  # here: importing this module stays cheap

    from mailtalk.knowledge import read_text

    data = tomllib.loads(read_text(_SCENARIOS))
    tables = data.get("scenario")
    if not isinstance(tables, dict):
        raise ValueError(f"{_SCENARIOS}: expected [scenario.NAME] tables")
    loaded: dict[str, Scenario] = {}
    for name, table in tables.items():
        where = f"{_SCENARIOS} [scenario.{name}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: not a table")
        description = table.get("description")
        rules = table.get("rules", [])
        settings = table.get("settings", {})
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"{where}: description must be a non-empty string")
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise ValueError(f"{where}: rules must be a list of strings")
        if not isinstance(settings, dict):
            raise ValueError(f"{where}: settings must be a table")
        unknown = set(table) - {"description", "rules", "settings"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        for rule in rules:
            try:
                parse_rule(rule)
            except FaultRuleError as error:
                raise ValueError(f"{where}: {error}") from None
        text = "\n\n".join(" ".join(p.split()) for p in description.strip().split("\n\n"))
        loaded[name] = Scenario(name, text, tuple(r.strip() for r in rules), dict(settings))
    return loaded


def scenario_names() -> tuple[str, ...]:
    """The names of the scenarios, in file order."""
    return tuple(_load_scenarios())


def scenario(name: str) -> Scenario:
    """The named scenario; :class:`UnknownScenarioError` (a KeyError) if there is none."""
    found = _load_scenarios().get(name.strip().lower())
    if found is None:
        raise UnknownScenarioError(
            f"unknown scenario {name!r}; known: {', '.join(scenario_names())}"
        )
    return found
