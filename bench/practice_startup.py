#!/usr/bin/env python3
"""How long `mailtalk practice` takes from the command to its first prompt.

    python bench/practice_startup.py [--runs N] [--json]

The world (DNS, three mail servers, their certificates and Maildirs) starts in the
command's own process, then the map is printed and the REPL connects to the MX and
draws its prompt: the time a learner waits. Each run is a real ``mailtalk practice`` in
a pseudo-terminal (pexpect, 80x40), timed from spawning it until ``smtp>`` shows, then
ended with ``:quit``. Rows, interleaved round-robin after one warm-up round:

- ``mailtalk --version``: the floor (Python, click and mailtalk's own start-up);
- ``mailtalk practice``: a world made before (the usual case: the same root each time);
- ``mailtalk practice (fresh root)``: a new root each run (the first time ever: the
  CA, four server certificates, control files, users' password hashes, seed mail);
- ``mailtalk practice --keep``: until the command returns with the world listening in
  the background (it is stopped, untimed, after each run).

The goal: ``mailtalk practice`` under 2 s (the median). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GOAL_MS = 2000.0


def mailtalk_command() -> list[str]:
    script = Path(sys.executable).parent / "mailtalk"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "mailtalk"]


def environment(home: Path) -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")}
    variables.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
        TERM="xterm",
        NO_COLOR="1",
        COLUMNS="80",
        LINES="40",
    )
    return variables


def to_prompt(root: Path, home: Path) -> float:
    """Milliseconds from spawning ``mailtalk practice --root ROOT`` to its prompt."""
    import pexpect

    command = mailtalk_command()
    start = time.perf_counter()
    child = pexpect.spawn(
        command[0],
        [*command[1:], "practice", "--root", str(root)],
        env=environment(home),
        dimensions=(40, 80),
        encoding="utf-8",
        codec_errors="replace",
        timeout=30,
    )
    try:
        child.expect("smtp>")
        elapsed = (time.perf_counter() - start) * 1000
        child.sendline(":quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    if child.exitstatus != 0:
        raise SystemExit(f"practice_startup.py: mailtalk practice exited {child.exitstatus}")
    return elapsed


def timed(argv: list[str], home: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        argv, env=environment(home), stdin=subprocess.DEVNULL, capture_output=True
    )
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode != 0:
        raise SystemExit(
            f"practice_startup.py: {' '.join(argv)} exited {result.returncode}: "
            + result.stderr.decode(errors="replace").strip()[-500:]
        )
    return elapsed


def rows(work: Path) -> dict[str, Callable[[], float]]:
    mailtalk = mailtalk_command()
    home = work / "home"
    home.mkdir(exist_ok=True)
    kept_root = work / "kept"
    counter = iter(range(1_000_000))

    def keep() -> float:
        elapsed = timed([*mailtalk, "practice", "--root", str(kept_root), "--keep"], home)
        timed([*mailtalk, "practice", "--root", str(kept_root), "--stop"], home)
        return elapsed

    return {
        "mailtalk --version": lambda: timed([*mailtalk, "--version"], home),
        "mailtalk practice": lambda: to_prompt(work / "world", home),
        "mailtalk practice (fresh root)": lambda: to_prompt(work / f"fresh{next(counter)}", home),
        "mailtalk practice --keep": keep,
    }


def measure(runs: int, work: Path) -> dict[str, list[float]]:
    table = rows(work)
    for run in table.values():  # warm-up; it also makes the usual root
        run()
    samples: dict[str, list[float]] = {name: [] for name in table}
    names = list(table)
    for number in range(runs):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(table[name]())
    return samples


def summarize(samples: dict[str, list[float]], runs: int) -> dict[str, object]:
    results = {
        name: {
            "median_ms": round(statistics.median(values), 1),
            "max_ms": round(max(values), 1),
            "min_ms": round(min(values), 1),
        }
        for name, values in samples.items()
    }
    median = results["mailtalk practice"]["median_ms"]
    return {
        "runs": runs,
        "python_version": platform.python_version(),
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
        "results": results,
        "goal_ms": GOAL_MS,
        "goal_met": median < GOAL_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per row (default 10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="mailtalk-practice-bench-"))
    try:
        summary = summarize(measure(args.runs, work), args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    results = summary["results"]
    assert isinstance(results, dict)
    width = max(len(name) for name in results)
    print(
        f"mailtalk practice, time to the first prompt: {args.runs} runs a row, interleaved "
        f"(Python {summary['python_version']}, {summary['cpus']} CPUs, "
        f"load {summary['load']:.2f})\n"
    )
    print(f"  {'row':<{width}}  {'median':>9}  {'min':>9}  {'max':>9}")
    for name, row in results.items():
        print(
            f"  {name:<{width}}  {row['median_ms']:>7.1f}ms  {row['min_ms']:>7.1f}ms"
            f"  {row['max_ms']:>7.1f}ms"
        )
    verdict = "met" if summary["goal_met"] else "NOT met"
    print(f"\n  goal: mailtalk practice under {GOAL_MS:.0f} ms (median): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
