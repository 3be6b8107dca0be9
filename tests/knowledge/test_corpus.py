"""How often ``mailtalk explain`` gets real replies right (see corpus/README.md).

    python -m tests.knowledge.test_corpus     # prints the figures and every miss

The corpus is real reply lines with their sources, labelled by category and by
transient/permanent. The goal of issue 5 is at least 95% right.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailtalk.knowledge.catalogue import CATEGORIES
from mailtalk.knowledge.explain import explain

CORPUS = Path(__file__).with_name("corpus")
GOAL = 0.95
MINIMUM_SIZE = 200


@dataclass(frozen=True)
class Entry:
    file: str
    text: str
    protocol: str
    category: str
    transient: bool | None
    source: str


def load() -> list[Entry]:
    entries = []
    for path in sorted(CORPUS.glob("*.toml")):
        for index, table in enumerate(tomllib.loads(path.read_text("utf-8"))["reply"]):
            where = f"{path.name} #{index + 1}"
            assert table.get("protocol") in ("smtp", "pop3", "imap"), where
            assert table.get("category") in CATEGORIES, where
            assert str(table.get("source", "")).strip(), f"{where}: no source"
            entries.append(
                Entry(
                    path.name,
                    table["text"],
                    table["protocol"],
                    table["category"],
                    table.get("transient"),
                    table["source"],
                )
            )
    return entries


@dataclass
class Score:
    total: int
    category_right: int
    transient_checked: int
    transient_right: int
    misses: list[tuple[Entry, str, bool | None]]

    @property
    def accuracy(self) -> float:
        return self.category_right / self.total

    @property
    def transient_accuracy(self) -> float:
        return self.transient_right / self.transient_checked if self.transient_checked else 1.0


def score(entries: list[Entry]) -> Score:
    """Each reply is explained as a user pastes it: no --protocol, no --command."""
    right = checked = transient_right = 0
    misses = []
    for entry in entries:
        explanation = explain(entry.text)
        category_ok = explanation.category == entry.category
        transient_ok = True
        if entry.transient is not None:
            checked += 1
            transient_ok = explanation.transient is entry.transient
            transient_right += transient_ok
        right += category_ok
        if not (category_ok and transient_ok):
            misses.append((entry, explanation.category, explanation.transient))
    return Score(len(entries), right, checked, transient_right, misses)


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return load()


def test_corpus_is_big_distinct_and_sourced(entries: list[Entry]) -> None:
    assert len(entries) >= MINIMUM_SIZE
    texts = Counter(" ".join(e.text.split()) for e in entries)
    assert [t for t, n in texts.items() if n > 1] == []
    # every protocol, and most categories, are represented
    assert {e.protocol for e in entries} == {"smtp", "pop3", "imap"}
    assert len({e.category for e in entries}) >= 18


def test_failures_carry_transient_labels(entries: list[Entry]) -> None:
    unlabelled = [e.text for e in entries if e.category != "ok" and e.transient is None]
    assert unlabelled == []


def test_accuracy_meets_the_goal(entries: list[Entry]) -> None:
    result = score(entries)
    report = "\n".join(
        f"  {entry.file}: {entry.text!r}: labelled {entry.category}/{entry.transient}, "
        f"explained {category}/{transient}"
        for entry, category, transient in result.misses
    )
    assert result.accuracy >= GOAL, f"{result.accuracy:.1%} right; misses:\n{report}"
    assert result.transient_accuracy >= GOAL, f"{result.transient_accuracy:.1%}:\n{report}"


def main() -> None:
    entries = load()
    result = score(entries)
    by_protocol = Counter(e.protocol for e in entries)
    protocols = ", ".join(f"{k} {v}" for k, v in sorted(by_protocol.items()))
    categories = len({e.category for e in entries})
    print(f"corpus: {result.total} replies ({protocols}), {categories} categories")
    print(f"category right: {result.category_right}/{result.total} = {result.accuracy:.1%}")
    print(
        f"transient right: {result.transient_right}/{result.transient_checked} "
        f"= {result.transient_accuracy:.1%}"
    )
    for name in sorted({e.file for e in entries}):
        part = score([e for e in entries if e.file == name])
        print(f"  {name}: {part.category_right}/{part.total} = {part.accuracy:.1%}")
    for entry, category, transient in result.misses:
        print(
            f"  MISS {entry.file}: {entry.text[:110]!r}\n"
            f"       labelled {entry.category}/{entry.transient}, explained {category}/{transient}"
        )


if __name__ == "__main__":
    main()
