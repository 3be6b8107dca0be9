#!/usr/bin/env python3
"""How soon ``mailtalk serve --smtp 0`` greets its first client, next to ``python -m aiosmtpd``.

    python bench/serve_startup.py [--runs N] [--json] [--aiosmtpd-python PATH]
                                  [--mailtalk-path DIR] [--compare DIR]

Each row is a new process, timed from spawning it until a client connected to its
port reads the ``220`` banner:

- ``python -m aiosmtpd``: ``python -m aiosmtpd -n -l 127.0.0.1:PORT -c
  aiosmtpd.handlers.Sink`` (the reference);
- ``mailtalk serve --smtp 0``: on a root made by an earlier run (the usual case: the
  CA and server certificate exist);
- ``mailtalk serve --smtp 0 (fresh root)``: a new root every run (control files,
  CA and server certificate made);
- ``mailtalk serve --sink --smtp 0``: the benchmark server of smtp_throughput.py;
- with ``--compare DIR``, ``mailtalk serve --smtp 0`` of the package in DIR (another
  commit), on a root of its own made before.

mailtalk's port is read from its ``--json`` line (it picks a free one); aiosmtpd is
given a free port. Both are then polled the same way (connect every 2 ms). Rows are
interleaved round-robin after a warm-up round; the medians and the ratio to aiosmtpd
are printed.

Then, in one Python process, the time ``run_servers()`` (what the ``mailtalk_servers``
fixture calls) takes to be ready the first time and the second time, each on a new
root with SMTP, submission and SMTPS and the user alice, as the ``mailtalk_server``
fixture starts them.

aiosmtpd is taken from ``--aiosmtpd-python`` or from ``bench/.venv`` (see
smtp_throughput.py). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import free_port, log
from smtp_throughput import aiosmtpd_python

TIMEOUT = 30.0


def first_banner(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Connect every 2 ms until the server on PORT sends its 220."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if sock.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.002)
    raise RuntimeError(f"no banner on port {port} within {TIMEOUT:.0f} s")


def json_port(process: subprocess.Popen[bytes], deadline: float) -> int:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(max(0.0, deadline - time.monotonic())):
            raise RuntimeError("no JSON line from mailtalk serve")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"mailtalk serve exited with status {process.wait()}")
    return int(json.loads(line)["listeners"][0]["port"])


def time_start(argv: list[str], port: int | None, cwd: Path, env: dict[str, str]) -> float:
    """Seconds from spawning ARGV to its first banner (port None: read from --json)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        cwd=cwd, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        if port is None:
            port = json_port(process, deadline)
        first_banner(port, process, deadline)
        return time.perf_counter() - start
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


FIXTURE_PROBE = r"""
import json, sys, tempfile, time
from pathlib import Path
started = time.perf_counter()
from mailtalk.servers.api import run_servers
times = []
with tempfile.TemporaryDirectory() as scratch:
    for n in range(int(sys.argv[1])):
        start = time.perf_counter()
        with run_servers(Path(scratch) / f"root{n}", smtp=0, submission=0, smtps=0,
                         users=[("alice", "secret")], domains=["example.test"]):
            times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def fixture_times(python: str, count: int, env: dict[str, str]) -> list[float]:
    """Seconds each of COUNT run_servers() calls in one process took to be ready."""
    result = subprocess.run(
        [python, "-c", FIXTURE_PROBE, str(count)], capture_output=True, text=True,
        timeout=300, cwd=tempfile.gettempdir(), env=env,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"run_servers probe failed: {result.stderr.strip()[-500:]}")
    return [float(t) for t in json.loads(result.stdout)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per row (default 10)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--aiosmtpd-python", metavar="PATH", help="a Python with aiosmtpd")
    parser.add_argument(
        "--mailtalk-path", metavar="DIR",
        help="run the mailtalk package in DIR (PYTHONPATH), to time another commit",
    )  # fmt: skip
    parser.add_argument(
        "--compare", metavar="DIR",
        help="add a row: 'serve --smtp 0' of the mailtalk package in DIR, interleaved "
        "with the others (before and after a change in one run)",
    )  # fmt: skip
    args = parser.parse_args()
    python = sys.executable
    aiosmtpd = aiosmtpd_python(args.aiosmtpd_python)
    scratch = Path(tempfile.mkdtemp(prefix="mailtalk-serve-startup-"))
    env = dict(os.environ)
    # The warm-up writes mailtalk's .pyc files, as installing it from a wheel does
    # (pip compiled aiosmtpd's): with this variable set every mailtalk run compiled all
    # its modules from source again, which doubled its time to the banner.
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        log("PYTHONDONTWRITEBYTECODE unset for the servers, so that .pyc files are used")
    if args.mailtalk_path:
        env["PYTHONPATH"] = str(Path(args.mailtalk_path).resolve())
    serve = [python, "-m", "mailtalk", "serve", "--smtp", "0", "--json"]
    kept = scratch / "kept-root"
    fresh_count = iter(range(1_000_000))
    rows: dict[str, Any] = {}
    if aiosmtpd is not None:
        rows["python -m aiosmtpd"] = lambda: (
            lambda port: time_start(
                [aiosmtpd, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c",
                 "aiosmtpd.handlers.Sink"], port, scratch, env)
        )(free_port())  # fmt: skip
    rows["mailtalk serve --smtp 0"] = lambda: time_start(
        [*serve, "--root", str(kept)], None, scratch, env
    )
    if args.compare:
        other = dict(env, PYTHONPATH=str(Path(args.compare).resolve()))
        rows[f"mailtalk serve --smtp 0 ({Path(args.compare).name})"] = lambda: time_start(
            [*serve, "--root", str(scratch / "compared-root")], None, scratch, other
        )
    rows["mailtalk serve --smtp 0 (fresh root)"] = lambda: time_start(
        [*serve, "--root", str(scratch / f"fresh-{next(fresh_count)}")], None, scratch, env
    )
    rows["mailtalk serve --sink --smtp 0"] = lambda: time_start(
        [*serve, "--sink", "--root", str(scratch / "sink-root")], None, scratch, env
    )
    samples: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    try:
        for name in names:  # warm-up: page cache, .pyc files, the kept roots made
            rows[name]()
        for run in range(args.runs):
            order = names[run % len(names) :] + names[: run % len(names)]
            for name in order:
                samples[name].append(rows[name]())
            log(f"run {run + 1}/{args.runs}: " + ", ".join(
                f"{n} {samples[n][-1] * 1000:.0f} ms" for n in names))  # fmt: skip
        fixture = [fixture_times(python, 3, env) for _ in range(max(3, args.runs // 2))]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    reference = medians.get("python -m aiosmtpd")
    report = {
        "runs": args.runs,
        "median_ms": {name: value * 1000 for name, value in medians.items()},
        "ratio_to_aiosmtpd": {
            name: value / reference for name, value in medians.items() if reference
        },
        "samples_ms": {name: [v * 1000 for v in values] for name, values in samples.items()},
        "run_servers_ms": {
            "first": statistics.median(f[0] for f in fixture) * 1000,
            "second": statistics.median(f[1] for f in fixture) * 1000,
            "third": statistics.median(f[2] for f in fixture) * 1000,
            "all": [[t * 1000 for t in f] for f in fixture],
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"to the first banner, median of {args.runs} interleaved runs:")
    for name in names:
        ratio = report["ratio_to_aiosmtpd"].get(name)
        extra = f"  {ratio:.2f}x aiosmtpd" if ratio is not None else ""
        print(f"  {name:<40} {report['median_ms'][name]:>7.1f} ms{extra}")
    fx = report["run_servers_ms"]
    print(f"run_servers() in one process (mailtalk_server's listeners), median of "
          f"{len(fixture)}: first {fx['first']:.1f} ms, second {fx['second']:.1f} ms, "
          f"third {fx['third']:.1f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
