"""``mailtalk --version`` and every ``--help`` stay light: no heavy imports at start-up.

prompt_toolkit, rich, dnspython and asyncio cost tens of milliseconds to import; the
commands import them only when they connect. This is a correctness test, not a timing
one (bench/startup.py measures the time).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mailtalk.cli import cli

HEAVY = ("prompt_toolkit", "rich", "dns", "asyncio")

# Every command's --help, from the click tree, so new commands are covered too.
INVOCATIONS = [
    ["--version"],
    ["-V"],
    ["--help"],
    *[[name, "--help"] for name in sorted(cli.commands)],
]


def heavy_modules(names: list[str]) -> list[str]:
    return sorted({name for name in names if name.split(".")[0] in HEAVY})


def importtime_modules(stderr: str) -> list[str]:
    """Module names from ``python -X importtime`` output."""
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.append(name)
    return names


@pytest.mark.parametrize("argv", INVOCATIONS, ids=" ".join)
def test_python_m_mailtalk_imports_nothing_heavy(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mailtalk", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = importtime_modules(result.stderr)
    assert "mailtalk.cli" in names, "could not parse the -X importtime output"
    assert heavy_modules(names) == [], f"mailtalk {' '.join(argv)} imported heavy modules"


CHECK_SYS_MODULES = """
import json, sys
from mailtalk.cli import main
sys.argv = ["mailtalk", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
sys.stderr.write("MODULES=" + json.dumps(sorted(sys.modules)) + "\\n")
"""


def modules_after(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """Every module imported by ``mailtalk ARGV`` through mailtalk.cli:main (in the
    environment ``env``, else this one)."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK_SYS_MODULES, json.dumps(argv)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    marker = [line for line in result.stderr.splitlines() if line.startswith("MODULES=")]
    assert marker, result.stderr[-2000:]
    modules: list[str] = json.loads(marker[0].removeprefix("MODULES="))
    return modules


@pytest.mark.parametrize("argv", INVOCATIONS, ids=" ".join)
def test_main_leaves_heavy_modules_unimported(argv: list[str]) -> None:
    """The same through the console-script entry point, mailtalk.cli:main."""
    modules = modules_after(argv)
    assert heavy_modules(modules) == [], f"mailtalk {' '.join(argv)} imported heavy modules"


GC_AT_EXIT = """
import atexit, gc, json, sys
atexit.register(lambda: sys.stderr.write(f"GC={gc.isenabled()} {gc.get_freeze_count()}\\n"))
sys.argv = ["mailtalk", *json.loads(sys.argv[1])]
from mailtalk.__main__ import main
main()
"""


@pytest.mark.parametrize("argv", [["explain", "550"], ["completion", "bash"]], ids=" ".join)
def test_the_entry_point_collects_garbage_again_before_the_command(argv: list[str]) -> None:
    """The ``mailtalk`` script (mailtalk.__main__:main) loads the command line with the
    garbage collector off, and the root group turns it on again before any command
    runs (a REPL or a server never runs without it), having frozen what the loading
    made: else the first collection walks all of it (10-15 ms before the first banner
    of ``serve``, more than the 20 collections it spared)."""
    result = subprocess.run(
        [sys.executable, "-c", GC_AT_EXIT, json.dumps(argv)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    state = [line for line in result.stderr.splitlines() if line.startswith("GC=")]
    assert state and state[0].startswith("GC=True "), result.stderr[-2000:]
    assert int(state[0].split()[1]) > 10_000  # click, mailtalk.cli, the command's module
