"""The lessons as a pip-installed user has them: in the wheel, named by ${LESSON}.

The README runs a lesson's files as ``mailtalk run "$LESSON/solution.mt"`` after
``eval "$(mailtalk practice --vars)"``: no path of a source checkout. Here the wheel
is built and installed apart (``pip install --target``), and that copy, run from
another directory, names its own lesson folders, which hold every lesson file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mailtalk.practice.lessons import LESSONS_DIR
from mailtalk.practice.world import World

ROOT = Path(__file__).resolve().parents[2]


def lesson_files() -> list[str]:
    """Every file of every lesson in the source tree, relative to the lessons folder."""
    return sorted(
        str(path.relative_to(LESSONS_DIR)) for path in LESSONS_DIR.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this tree and installed into a folder of its own."""
    where = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = where.glob("mailtalk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [name for name in lesson_files()
               if f"mailtalk/practice/lessons/{name}" not in names]
    assert missing == []
    target = where / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return target


def test_vars_names_the_installed_lesson_folders(
    installed: Path, start: Callable[..., World], tmp_path: Path
) -> None:
    world = start()
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed), "XDG_STATE_HOME": str(tmp_path / "st")}
    exported = subprocess.run(
        [sys.executable, "-m", "mailtalk", "practice", "--root", str(world.root), "--vars",
         "--lesson", "7"],
        capture_output=True, text=True, timeout=60, cwd=away, env=env,
    )
    assert exported.returncode == 0, exported.stderr
    variables = dict(
        line.removeprefix("export ").split("=", 1) for line in exported.stdout.splitlines()
    )
    lesson = Path(variables["LESSON"])
    lessons = Path(variables["LESSONS"])
    assert lessons == installed / "mailtalk" / "practice" / "lessons"  # not the checkout's
    assert lesson == lessons / "07-qmail-control"
    files = sorted(str(path.relative_to(lessons)) for path in lessons.rglob("*")
                   if path.is_file() and "__pycache__" not in path.parts)
    assert files == lesson_files()
    # the scripts name their sessions by $LESSON
    assert '"$LESSON/refused.mt"' in (lesson / "solution.sh").read_text()
