"""The second labellings in ``agreement/`` stay true to the sets they were drawn from.

Each entry names a blind set's file and gives that file's label as ``first``; the
figures in ``blind/README.md`` (how far two labellers agree, how often ``explain``
agrees with either) are computed from them, so a relabelled or moved reply must be
caught here rather than silently skew them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mailtalk.knowledge.catalogue import CATEGORIES

HERE = Path(__file__).parent
AGREEMENT = sorted((HERE / "agreement").glob("*.toml"))


def _labels_of(name: str) -> dict[tuple[str, str | None], str]:
    path = HERE / "blind" / name
    if not path.exists():
        path = HERE / "corpus" / name
    entries = tomllib.loads(path.read_text())["reply"]
    return {(entry["text"], entry.get("command")): entry["category"] for entry in entries}


@pytest.mark.parametrize("path", AGREEMENT, ids=lambda path: path.name)
def test_each_second_label_is_a_category_and_first_is_the_sets_own(path: Path) -> None:
    replies = tomllib.loads(path.read_text())["reply"]
    assert replies
    files: dict[str, dict[tuple[str, str | None], str]] = {}
    for reply in replies:
        assert reply["second"] in CATEGORIES, reply
        labels = files.setdefault(reply["file"], _labels_of(reply["file"]))
        assert labels.get((reply["text"], reply.get("command"))) == reply["first"], reply
