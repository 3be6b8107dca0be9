"""What ``mailtalk run`` prints and writes: a line a file, TAP, JUnit XML, JSON lines, and
the figures of a load run."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from mailtalk.client.display import format_latency
from mailtalk.script.runner import Failure, Line, RunResult
from mailtalk.terminal import safe_strings, safe_text

# A server's text made safe for a terminal, a JSON line or an XML report: control
# characters (an escape sequence, a NUL) become \\xNN. Every output below uses it.
shown = safe_text


def _ms(seconds: float) -> str:
    """A file's time: milliseconds up to 10 s."""
    return format_latency(seconds, ms_below=10, digits=1)


def failure_lines(failure: Failure) -> list[str]:
    lines = [f"{failure.where}: {shown(failure.message)}"]
    if failure.explanation:
        lines.append(f"  ↳ {shown(failure.explanation)}")
    return lines


def human(result: RunResult, out: TextIO, gettext: Callable[[str], str] = str) -> None:
    """``PASS file (n steps, t)`` or ``FAIL`` with what was expected and what came, in
    the language of ``gettext``."""
    said = gettext("PASS {file} ({steps}, {time})" if result.passed
                   else "FAIL {file} ({steps}, {time})")
    steps = gettext("{count} step" if result.steps == 1 else "{count} steps")
    out.write(said.format(file=result.name, steps=steps.format(count=result.steps),
                          time=_ms(result.seconds)) + "\n")
    if result.passed:
        return
    for failure in result.failures:
        for line in failure_lines(failure):
            out.write(f"  {line}\n")


def transcript_line(line: Line) -> str:
    text = shown(line.text)
    return f"{line.direction}: {text}" if line.direction != "#" else f"# {text}"


def json_lines(result: RunResult, out: TextIO, run: int | None = None) -> None:
    """The transcript, then the result, one JSON object a line."""
    base: dict[str, object] = {"file": result.name}
    if run is not None:
        base["run"] = run
    if result.transcript.dropped:
        note = f"{result.transcript.dropped} earlier lines were not kept (too many)"
        out.write(json.dumps({**base, "dir": "#", "text": note}) + "\n")
    for line in result.transcript:
        out.write(
            json.dumps(
                {**base, "t": round(line.seconds, 6), "dir": line.direction,
                 "text": shown(line.text)},
                ensure_ascii=False,
            )
            + "\n"
        )
    out.write(
        json.dumps(
            {
                **base,
                "result": "pass" if result.passed else "fail",
                "exit_code": int(result.exit_code),
                "steps": result.steps,
                "seconds": round(result.seconds, 6),
                "failures": safe_strings([f.to_json() for f in result.failures]),
            },
            ensure_ascii=False,
        )
        + "\n"
    )


def tap(results: Sequence[RunResult], out: TextIO) -> None:
    out.write("TAP version 13\n")
    out.write(f"1..{len(results)}\n")
    for number, result in enumerate(results, 1):
        status = "ok" if result.passed else "not ok"
        out.write(f"{status} {number} - {result.name}\n")
        if not result.passed:
            out.write("  ---\n")
            for failure in result.failures:
                message = shown(failure.message)
                out.write(f"  message: {json.dumps(message, ensure_ascii=False)}\n")
                out.write(f"  at: {json.dumps(str(failure.where))}\n")
                if failure.explanation:
                    explanation = shown(failure.explanation)
                    out.write(f"  explanation: {json.dumps(explanation, ensure_ascii=False)}\n")
            out.write("  ...\n")


def write_junit(results: Sequence[RunResult], path: str) -> None:
    """JUnit XML for CI, written to a temporary file and renamed: never half a file."""
    import xml.etree.ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name="mailtalk run",
        tests=str(len(results)),
        failures=str(sum(1 for r in results if r.failures and r.failures[0].kind == "expectation")),
        errors=str(sum(1 for r in results if r.failures and r.failures[0].kind != "expectation")),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for result in results:
        case = ET.SubElement(
            suite, "testcase", classname="mailtalk", name=result.name, time=f"{result.seconds:.3f}"
        )
        for failure in result.failures:
            tag = "failure" if failure.kind == "expectation" else "error"
            element = ET.SubElement(case, tag, message=shown(failure.message), type=failure.kind)
            element.text = "\n".join(failure_lines(failure))
        if result.transcript:
            output = ET.SubElement(case, "system-out")
            dropped = result.transcript.dropped
            output.text = "\n".join(
                ([f"# {dropped} earlier lines were not kept (too many)"] if dropped else [])
                + [transcript_line(line) for line in result.transcript]
            )
    root = ET.Element("testsuites")
    root.append(suite)
    tree = ET.ElementTree(root)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".junit-", suffix=".xml", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            tree.write(file, encoding="utf-8", xml_declaration=True)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


@dataclass
class LoadFigures:
    """What a --repeat run measured."""

    name: str
    runs: int
    passed: int
    seconds: float
    latencies: list[float]  # of the passing runs (or loop bodies, with --reuse)
    messages_per_run: int
    concurrency: int
    reuse: bool

    @property
    def rate(self) -> float:
        return self.passed / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
        return ordered[index]

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.name,
            "runs": self.runs,
            "passed": self.passed,
            "failed": self.runs - self.passed,
            "seconds": round(self.seconds, 6),
            "runs_per_second": round(self.rate, 2),
            "messages_per_second": round(self.rate * self.messages_per_run, 2),
            "latency_ms": {
                name: round(self.percentile(q) * 1000, 3)
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
            "concurrency": self.concurrency,
            "connections": "reused" if self.reuse else "new",
        }

    def write(self, out: TextIO, gettext: Callable[[str], str] = str) -> None:
        """The figures for a person, in the language of ``gettext``."""
        _ = gettext
        data = self.to_json()
        latency = data["latency_ms"]
        assert isinstance(latency, dict)
        head = _("{file}: {passed}/{runs} loop bodies on reused connections passed in "
                 "{seconds} s, concurrency {concurrency}" if self.reuse else
                 "{file}: {passed}/{runs} runs on new connections passed in {seconds} s, "
                 "concurrency {concurrency}")
        rate = _("{rate} runs/s").format(rate=f"{self.rate:.1f}")
        if self.messages_per_run:
            rate += _(", {rate} messages/s").format(
                rate=f"{self.rate * self.messages_per_run:.1f}")
        out.write(
            head.format(file=self.name, passed=self.passed, runs=self.runs,
                        seconds=f"{self.seconds:.2f}", concurrency=self.concurrency)
            + f"\n  {rate}\n  "  # two lines: each fits 80 columns
            + _("latency p50 {p50} ms, p90 {p90} ms, p99 {p99} ms, max {max} ms").format(
                **{name: f"{value:.1f}" for name, value in latency.items()})
            + "\n"
        )
