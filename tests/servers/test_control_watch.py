"""The inotify watch that stands in for a stat() of every control file a connection:
every way of changing a file is seen at the next look, and nothing else is."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailtalk.servers.control_watch import DirectoryWatch, plain_files

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux")


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[Path, DirectoryWatch]]:
    directory = tmp_path / "control"
    directory.mkdir()
    (directory / "rcpthosts").write_text("localhost\n")
    watch = DirectoryWatch.open(str(directory), [str(directory / "rcpthosts")])
    assert watch is not None
    yield directory, watch
    watch.close()


def _rename_over(path: Path) -> None:
    staged = path.with_name(".new")
    staged.write_text("example.test\n")
    staged.rename(path)


EDITS: dict[str, Callable[[Path], object]] = {
    "written in place": lambda path: path.write_text("example.test\n"),
    "appended to": lambda path: path.open("a").write("example.net\n"),
    "replaced by a rename": _rename_over,
    "chmod": lambda path: path.chmod(0o600),
    "touched": lambda path: os.utime(path, None),
    "removed": lambda path: path.unlink(),
    "created": lambda path: path.with_name("locals").write_text("localhost\n"),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_every_kind_of_change_is_seen_once(
    control: tuple[Path, DirectoryWatch], edit: str
) -> None:
    directory, watch = control
    assert watch.quiet()
    EDITS[edit](directory / "rcpthosts")
    assert not watch.quiet()  # the change, seen at the next look
    assert watch.quiet()  # and then nothing more


def test_reading_a_file_is_no_change(control: tuple[Path, DirectoryWatch]) -> None:
    directory, watch = control
    assert (directory / "rcpthosts").read_text() == "localhost\n"
    os.stat(directory / "rcpthosts")
    assert watch.quiet()


def test_the_directory_removed_ends_the_watch(control: tuple[Path, DirectoryWatch]) -> None:
    directory, watch = control
    (directory / "rcpthosts").unlink()
    directory.rmdir()
    assert not watch.quiet()
    # The watch ended with it (IN_IGNORED): never quiet again, even when a new control/
    # is made, which it does not see (the caller goes back to its stat()s).
    assert watch.closed
    directory.mkdir()
    assert not watch.quiet()


def test_links_and_missing_directories_get_no_watch(tmp_path: Path) -> None:
    directory = tmp_path / "control"
    assert DirectoryWatch.open(str(directory), []) is None  # no directory
    directory.mkdir()
    target = tmp_path / "relayclients"
    target.write_text("")
    (directory / "relayclients").symlink_to(target)
    assert not plain_files([str(directory / "relayclients")])
    assert DirectoryWatch.open(str(directory), [str(directory / "relayclients")]) is None
    os.link(target, directory / "locals")  # another name for the same file
    assert not plain_files([str(directory / "locals")])
    assert plain_files([str(directory / "missing")])
