#!/usr/bin/env python3
"""How long mailtalk takes to start, next to what it cannot be faster than.

    python bench/startup.py [--runs N] [--json]

Runs each command N times (default 20) after one warm-up round, interleaved
round-robin (A B C, A B C, ...) so that noise from the rest of the machine hits every
command alike, and prints the median and 90th percentile wall time in milliseconds.
The goals: ``mailtalk --version`` within 1.25x of ``python -c "import click"``, and
``mailtalk explain 550`` (which loads rich and the SMTP knowledge) within 2.5x. See
bench/README.md.
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
import time
from pathlib import Path

GOAL = 1.25  # mailtalk --version / python -c "import click"
EXPLAIN_GOAL = 2.5  # mailtalk explain 550 / python -c "import click"


def mailtalk_command() -> list[str]:
    """The mailtalk next to this Python (the venv's), else ``python -m mailtalk``."""
    script = Path(sys.executable).parent / "mailtalk"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "mailtalk"]


def commands() -> dict[str, list[str]]:
    python = sys.executable
    mailtalk = mailtalk_command()
    found = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import click'": [python, "-c", "import click"],
        "mailtalk --version": [*mailtalk, "--version"],
        "mailtalk --help": [*mailtalk, "--help"],
        "mailtalk smtp --help": [*mailtalk, "smtp", "--help"],
        "mailtalk explain 550": [*mailtalk, "explain", "550"],
        "mailtalk explain --json <reply>": [
            *mailtalk, "explain", "--json", "554 5.7.1 <bob@example.net>: Relay access denied",
        ],
        "eager imports (anchor)": [
            python,
            "-c",
            "import click, rich.console, prompt_toolkit, dns.resolver",
        ],
    }
    swaks = shutil.which("swaks")
    if swaks:
        found["swaks --version"] = [swaks, "--version"]
    return found


def run_once(argv: list[str]) -> float:
    """Wall time in milliseconds; raises if the command fails."""
    start = time.perf_counter()
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode != 0:
        raise SystemExit(
            f"startup.py: {' '.join(argv)} exited {result.returncode}: "
            + result.stderr.decode(errors="replace").strip()[-500:]
        )
    return elapsed


def percentile(samples: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(runs: int) -> dict[str, list[float]]:
    table = commands()
    for argv in table.values():  # warm-up: page cache, .pyc files
        run_once(argv)
    samples: dict[str, list[float]] = {name: [] for name in table}
    names = list(table)
    for round_number in range(runs):
        # rotate the starting point too, so no command always runs first in a round
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(run_once(table[name]))
    return samples


def summarize(samples: dict[str, list[float]], runs: int) -> dict[str, object]:
    results = {
        name: {
            "median_ms": round(statistics.median(values), 2),
            "p90_ms": round(percentile(values, 0.9), 2),
            "min_ms": round(min(values), 2),
        }
        for name, values in samples.items()
    }
    version = results["mailtalk --version"]["median_ms"]
    click_ms = results["python -c 'import click'"]["median_ms"]
    bare = results["python -c pass"]["median_ms"]
    ratio = version / click_ms
    explain_ratio = results["mailtalk explain 550"]["median_ms"] / click_ms
    return {
        "runs": runs,
        "python": sys.executable,
        "python_version": platform.python_version(),
        "mailtalk": " ".join(mailtalk_command()),
        "results": results,
        "ratios": {
            "mailtalk --version / import click": round(ratio, 3),
            "mailtalk --version / python -c pass": round(version / bare, 3),
            "mailtalk explain 550 / import click": round(explain_ratio, 3),
        },
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
        "explain_goal": EXPLAIN_GOAL,
        "explain_goal_met": explain_ratio <= EXPLAIN_GOAL,
    }


def print_table(summary: dict[str, object]) -> None:
    results = summary["results"]
    assert isinstance(results, dict)
    width = max(len(name) for name in results)
    print(
        f"mailtalk start-up, {summary['runs']} runs each, interleaved "
        f"(Python {summary['python_version']}, mailtalk = {summary['mailtalk']})"
    )
    print()
    print(f"  {'command':<{width}}  {'median':>8}  {'p90':>8}  {'min':>8}")
    for name, row in results.items():
        print(
            f"  {name:<{width}}  {row['median_ms']:>6.1f}ms  {row['p90_ms']:>6.1f}ms"
            f"  {row['min_ms']:>6.1f}ms"
        )
    print()
    ratios = summary["ratios"]
    assert isinstance(ratios, dict)
    for name, value in ratios.items():
        print(f"  {name + ':':<40} {value:.2f}x")
    verdict = "met" if summary["goal_met"] else "NOT met"
    print(f"  goal: mailtalk --version <= {summary['goal']}x import click: {verdict}")
    verdict = "met" if summary["explain_goal_met"] else "NOT met"
    print(
        f"  goal: mailtalk explain 550 <= {summary['explain_goal']}x import click: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per command (default 20)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    summary = summarize(measure(args.runs), args.runs)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
