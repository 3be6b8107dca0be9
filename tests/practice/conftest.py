"""A practice world for the tests: started in this process on a temporary root."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailtalk.practice.world import World, start_world


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., World]]:
    """``start(name="world", **options)``: a world at tmp_path/name, stopped after the test."""
    worlds: list[World] = []

    def starter(name: str = "world", **options: Any) -> World:
        world = start_world(tmp_path / name, **options)
        worlds.append(world)
        return world

    yield starter
    for world in worlds:
        world.stop()


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for the tests that only look at it."""
    world = start_world(tmp_path_factory.mktemp("practice") / "world")
    yield world
    world.stop()
