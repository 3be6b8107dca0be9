"""``mailtalk run FILE...``: parse every file first, then replay, report and exit.

A bad script stops everything before any connection is made (exit 2), so a typo
never half-runs a session against a production server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TextIO

from mailtalk.exitcodes import ExitCode
from mailtalk.knowledge.translation import translation
from mailtalk.net.tlsclient import ClientTLS
from mailtalk.script.format import Data, EndLoop, Loop, Script, ScriptError, parse_file
from mailtalk.script.report import LoadFigures, human, json_lines, tap, transcript_line, write_junit
from mailtalk.script.runner import RunResult, RunSettings, run_script

if TYPE_CHECKING:
    from mailtalk.config_file import HostDefaults
    from mailtalk.environment import Environment


@dataclass(frozen=True)
class RunOptions:
    """What ``mailtalk run`` was given: the files (``-`` for standard input, at most
    once) and ``--var`` values, then its options."""

    files: tuple[str, ...]
    variables: Mapping[str, str]
    keep_going: bool = False
    junit: str | None = None
    tap: bool = False
    as_json: bool = False
    repeat: int = 1
    concurrency: int = 1
    reuse: bool = False
    timeout: float = 30.0
    verbose: bool = False
    # the config file's [hosts.NAME] sections: a connect line may name one
    hosts: Mapping[str, HostDefaults] = field(default_factory=dict)
    # --cafile, the TLS options and the transport, for every connect line
    cafile: str | None = None
    tls: ClientTLS = field(default_factory=ClientTLS)
    pipe_command: tuple[str, ...] = ()
    proxy_from: tuple[str, int] | None = None
    proxy_version: int = 1
    language: str = "en"  # of the reports for a person (mailtalk/language.py)


def _secret_asker(env: Environment, from_stdin: bool) -> Callable[[str], str | None]:
    """Asks once per prompt, even with many threads; never when the script is on stdin."""
    from mailtalk.client.credentials import terminal_asker

    ask_terminal = terminal_asker(env)
    lock = threading.Lock()
    answers: dict[str, str | None] = {}

    def ask(prompt: str) -> str | None:
        if from_stdin:
            return None
        with lock:
            if prompt not in answers:
                answers[prompt] = ask_terminal(prompt)
            return answers[prompt]

    return ask


def _complain(env: Environment, message: str) -> int:
    """Say why nothing runs; the exit status of a bad script or bad options."""
    env.stderr.write(f"mailtalk: {message}\n")
    env.stderr.flush()
    return ExitCode.USAGE


def _parse_all(options: RunOptions, env: Environment) -> list[Script] | str:
    """Every file parsed and checked against the options, or why not (nothing runs), in
    the run's language."""
    _ = translation(options.language).gettext
    scripts: list[Script] = []
    for path in options.files:
        try:
            scripts.append(parse_file(path, options.variables, env.variables, env.stdin))
        except ScriptError as error:
            return error.said(_)
    for script in scripts:
        if options.reuse and not script.has_loop:
            return _("{file}: --reuse needs a loop ... end block in the file (the part to "
                     "repeat on one connection)").format(file=script.name)
    if options.junit:
        # find out now, not after every file has run and delivered its mail
        from mailtalk.terminal import output_file_problem

        problem = output_file_problem(options.junit)
        if problem:
            return problem
    return scripts


def run(options: RunOptions, env: Environment) -> int:
    """Parse every file, replay each, report on ``env.stdout``; the exit status."""
    out = env.stdout
    scripts = _parse_all(options, env)
    if isinstance(scripts, str):
        return _complain(env, scripts)
    settings = RunSettings(
        timeout=options.timeout,
        keep_going=options.keep_going,
        # the transcript is kept only for the reports that print it
        record_transcript=options.as_json or bool(options.junit),
        ask_secret=_secret_asker(env, "-" in options.files),
        hosts=options.hosts,
        cafile=options.cafile,
        tls=options.tls,
        pipe_command=options.pipe_command,
        proxy_from=options.proxy_from,
        proxy_version=options.proxy_version,
        language=options.language,
    )
    _ = translation(options.language).gettext
    results: list[RunResult] = []
    exit_code = ExitCode.OK
    for script in scripts:
        if options.repeat > 1 or options.reuse:
            result = _load(script, settings, options, out)
        else:
            echo = None
            if options.verbose and not (options.tap or options.as_json):
                echo = _echo(out)
            result = run_script(script, replace(settings, echo=echo))
            if options.as_json:
                json_lines(result, out)
            elif not options.tap:
                human(result, out, _)
        results.append(result)
        if not result.passed and exit_code == ExitCode.OK:
            exit_code = result.exit_code
    if options.tap:
        tap(results, out)
    elif not options.as_json and len(results) > 1:
        passed = sum(r.passed for r in results)
        out.write(_("{files} files: {passed} passed, {failed} failed").format(
            files=len(results), passed=passed, failed=len(results) - passed) + "\n")
    if options.junit:
        try:
            write_junit(results, options.junit)
        except OSError as error:
            return _complain(env, _("cannot write {file}: {reason}").format(
                file=options.junit, reason=error.strerror))
    out.flush()
    return exit_code


def _echo(out: TextIO) -> Callable[[object], None]:
    lock = threading.Lock()

    def echo(line: object) -> None:
        with lock:
            out.write(transcript_line(line) + "\n")  # type: ignore[arg-type]
            out.flush()

    return echo


def _load(script: Script, settings: RunSettings, options: RunOptions, out: TextIO) -> RunResult:
    """--repeat N --concurrency C: N runs over new connections, or N loop bodies over C
    reused ones (--reuse). Prints the rate and latency percentiles."""
    quiet = replace(settings, record_transcript=False, echo=None)
    concurrency = max(1, min(options.concurrency, options.repeat))
    first_failure: RunResult | None = None
    latencies: list[float] = []
    passed = 0
    started = time.monotonic()
    lock = threading.Lock()

    def keep(result: RunResult, samples: list[float], ok: int) -> None:
        nonlocal first_failure, passed
        with lock:
            latencies.extend(samples)
            passed += ok
            if not result.passed and first_failure is None:
                first_failure = result

    if options.reuse:
        shares = [
            options.repeat // concurrency + (i < options.repeat % concurrency)
            for i in range(concurrency)
        ]

        def worker(share: int) -> None:
            result = run_script(script, replace(quiet, reuse_iterations=share))
            keep(result, result.iterations, len(result.iterations))

        _spread(worker, shares, concurrency)
    else:

        def once(_: int) -> None:
            result = run_script(script, quiet)
            keep(result, [result.seconds] if result.passed else [], int(result.passed))

        _spread(once, list(range(options.repeat)), concurrency)
    seconds = time.monotonic() - started
    body = _loop_body(script) if options.reuse else script.steps
    figures = LoadFigures(
        name=script.name,
        runs=options.repeat,
        passed=passed,
        seconds=seconds,
        latencies=latencies,
        messages_per_run=sum(1 for step in body if isinstance(step, Data)),
        concurrency=concurrency,
        reuse=options.reuse,
    )
    if options.as_json:
        import json

        out.write(json.dumps(figures.to_json()) + "\n")
    elif not options.tap:
        figures.write(out, translation(options.language).gettext)
    summary = first_failure or RunResult(script.name, steps=len(script.steps), seconds=seconds)
    if first_failure is not None and not options.as_json and not options.tap:
        _ = translation(options.language).gettext
        out.write(_("first failure:") + "\n")
        human(first_failure, out, _)
    return summary


def _spread(work: Callable[[int], None], items: list[int], concurrency: int) -> None:
    """Run ``work`` over ``items``, ``concurrency`` at a time; one at a time runs in this
    thread (no pool: its hand-offs would be most of a fast replay's time)."""
    if concurrency == 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, items))


def _loop_body(script: Script) -> list[object]:
    start = next(i for i, s in enumerate(script.steps) if isinstance(s, Loop))
    end = next(i for i, s in enumerate(script.steps) if isinstance(s, EndLoop))
    return list(script.steps[start + 1 : end])
