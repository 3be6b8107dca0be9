"""How often ``mailtalk explain`` gets replies right on servers it was not tuned on.

    python -m tests.knowledge.test_blind     # the figures, per set and per source

The sets are in ``blind/`` (its README says how they are made and scored). Each reply
is explained as the REPL would: with the command it answered when the entry gives it.
The goal (issue 14) is 90% on a held-out set before any tuning on it; each set's floor
below is what it reached, so that no change makes it worse.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailtalk.knowledge.catalogue import CATEGORIES
from mailtalk.knowledge.explain import explain

BLIND = Path(__file__).with_name("blind")
GOAL = 0.90
# the figure each set reached, as a floor (each was held out once; see blind/README.md)
FLOORS = {
    "a": 0.89, "e": 0.92, "b": 0.85, "c": 0.91, "d": 0.88, "f": 0.80, "g": 0.84, "h": 0.79,
    "i": 0.75, "j": 0.86, "k": 0.93, "l": 0.82, "m": 0.92, "n": 0.88, "o": 0.81,
    # held out and scored before they were read (84.6%, 84.9%, 83.2% with the learned
    # reading), then trained on: the floor is what they reach now, less a margin
    "p": 0.90, "q": 0.90, "r": 0.90,
    "s": 0.88,  # 79.5% held out with the learned reading, 73.3% with the rules alone
    # held out and scored before they were read: T 81.5% (rules alone 72.8%), U 78.8%
    # (69.0%), with the rules and the learned reading of 55a16e1
    "t": 0.92, "u": 0.91,
    "v": 0.95,  # 84.6% held out (rules alone 83.3%), with 3b30d0a: trained on T and U
    "w": 0.93,  # 83.5% held out (rules alone 75.9%), with 74c5c85: trained on T, U and V
    # held out and scored before they were read, with 65d86a9 (trained on A to W; the
    # arbitration of that commit): X 83.0% (rules alone 75.0%), Y 86.7% (72.5%)
    "x": 0.95, "y": 0.95,
    # held out and scored before they were read, with 262e663 (trained on A to Y, word
    # families): Z1 80.0% (rules alone 70.9%), Z2 78.3% (73.7%)
    "z1": 0.95, "z2": 0.95,
    # held out and scored before they were read, with 9a6c7b1 (trained on A to Z2):
    # Z3 83.6% (rules alone 73.6%), Z4 87.5% (81.6%)
    "z3": 0.95, "z4": 0.95,
    # held out and scored before they were read, with 8dd7db3 (trained on A to Z4):
    # Z5 83.8% (rules alone 71.9%), Z6 89.8% (88.1%; 59 replies)
    "z5": 0.95, "z6": 0.95,
    # held out and scored before they were read, with 09306ea (trained on A to Z6):
    # Z7 84.9% (rules alone 76.0%), Z8 83.5% (80.2%)
    "z7": 0.95, "z8": 0.95,
    # held out and scored before they were read, with ce40bd2 (trained on A to Z8):
    # Z9 83.8% (rules alone 75.0%), Z10 94.7% (91.6%; 39 of its 95 are successes),
    # Z11 85.2% (81.5%; POP3 and IMAP only)
    "z9": 0.95, "z10": 0.95, "z11": 0.95,
    # held out and scored before it was read, with f7b6456 (trained on A to Z11):
    # Z12 83.0% (rules alone 69.7%; 82.4% with ce40bd2)
    "z12": 0.95,
    # held out and scored before it was read, with f0f7727 (trained on A to Z12):
    # Z13 86.7% (rules alone 77.2%)
    "z13": 0.95,
    # held out and scored before it was read, with e6cfc98 (trained on A to Z13):
    # Z14 84.6% (rules alone 71.9%); 90.0% of the 201 replies two blind labellers agree on
    "z14": 0.95,
    # held out and scored before it was read, with 52f67f2 (trained on A to Z14):
    # Z15 86.7% (rules alone 73.4%); 91.5% of the 236 replies two blind labellers agree on
    "z15": 0.95,
    # held out and scored before it was read, with e516ff4 (trained on A to Z15):
    # Z16 84.7% (rules alone 75.5%); 87.0% of the 185 replies two blind labellers agree on
    "z16": 0.95,
}


@dataclass(frozen=True)
class Reply:
    set: str
    file: str
    text: str
    protocol: str
    category: str
    command: str | None
    source: str


def load() -> list[Reply]:
    replies = []
    for path in sorted(BLIND.glob("*.toml")):
        for index, table in enumerate(tomllib.loads(path.read_text("utf-8"))["reply"]):
            where = f"{path.name} #{index + 1}"
            assert table.get("protocol") in ("smtp", "pop3", "imap"), where
            assert table.get("category") in CATEGORIES, where
            assert str(table.get("source", "")).strip(), f"{where}: no source"
            replies.append(
                Reply(
                    path.name.split("_", 1)[0],
                    path.name,
                    table["text"],
                    table["protocol"],
                    table["category"],
                    table.get("command"),
                    table["source"],
                )
            )
    return replies


def disputed() -> set[tuple[str, str, str | None]]:
    """The replies a second blind labeller put in another category (file, text,
    command): the model is not trained on them (scripts/train-reply-model), and a set's
    floor counts only the replies no one disputes."""
    found = set()
    for path in sorted(BLIND.parent.joinpath("agreement").glob("*.toml")):
        for entry in tomllib.loads(path.read_text("utf-8")).get("reply", []):
            if "second" in entry and entry["first"] != entry["second"]:
                found.add((entry.get("file", ""), entry["text"], entry.get("command")))
    return found


def right(reply: Reply) -> bool:
    return explain(reply.text, command=reply.command).category == reply.category


@pytest.fixture(scope="module")
def replies() -> list[Reply]:
    return load()


def test_sets_are_big_and_mixed(replies: list[Reply]) -> None:
    sizes = Counter(r.set for r in replies)
    assert set(sizes) == set(FLOORS)
    assert sizes["b"] >= 200 and sizes["c"] >= 200, "held-out sets of at least 200 replies"
    # POP3 and IMAP, where the first blind set did worst (41%), are over a third of all
    protocols = Counter(r.protocol for r in replies)
    assert (protocols["pop3"] + protocols["imap"]) / len(replies) >= 0.35


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_each_set_keeps_its_figure(replies: list[Reply], name: str) -> None:
    doubtful = disputed()
    subset = [r for r in replies if r.set == name and (r.file, r.text, r.command) not in doubtful]
    misses = [r for r in subset if not right(r)]
    accuracy = 1 - len(misses) / len(subset)
    report = "\n".join(f"  {r.file}: {r.text[:100]!r} labelled {r.category}" for r in misses)
    assert accuracy >= FLOORS[name], f"set {name}: {accuracy:.1%}; misses:\n{report}"


def main() -> None:
    replies = load()
    for name in sorted(FLOORS):
        subset = [r for r in replies if r.set == name]
        good = sum(right(r) for r in subset)
        print(f"set {name}: {good}/{len(subset)} = {good / len(subset):.1%} (goal {GOAL:.0%})")
        for file in sorted({r.file for r in subset}):
            part = [r for r in subset if r.file == file]
            hits = sum(right(r) for r in part)
            print(f"  {file}: {hits}/{len(part)} = {hits / len(part):.1%}")


if __name__ == "__main__":
    main()
