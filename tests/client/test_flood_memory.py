"""A server that floods the client costs bounded memory (issue 11, item 31).

An endless ``* OK flood`` made ``mailtalk run`` reach 1.56 GB and pipe mode 442 MB,
because the transcript, the recorder and the runner kept every event. Each test
floods the real binary with 200 MiB (IMAP untagged responses, an SMTP multi-line
reply, a POP3 multi-line answer), then ends the reply so the run completes, and
checks its true peak RSS (:func:`tests.measured.run_measured`) against a generous
bound. The bounds are far below what keeping the flood would cost, and far above the
working set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client.scripted import MAILTALK
from tests.measured import run_measured
from tests.peers import (
    IMAP_GREETING,
    POP3_GREETING,
    SMTP_GREETING,
    Close,
    Expect,
    ScriptedPeer,
    SendChunks,
)

FLOOD_MIB = 200
LINE = 8000  # bytes a line: long lines flood fast; the bug grew with the bytes kept
# Python, click and the protocol core take ~40 MiB; the untagged and SMTP floods
# must stay near that. A POP3 answer is kept by the core up to MAX_BODY (64 MiB),
# which with its lines and the finished response's bytes is ~200 MiB at the end.
BOUND_MIB = 160
POP3_BOUND_MIB = 320
TIMEOUT = 180


def flood(prefix: bytes) -> Callable[[], Iterator[bytes]]:
    line = prefix + b"x" * (LINE - len(prefix) - 2) + b"\r\n"
    block = line * ((1 << 20) // len(line))

    def chunks() -> Iterator[bytes]:
        for _ in range(FLOOD_MIB * (1 << 20) // len(block)):
            yield block

    return chunks


def imap_flood() -> list[object]:
    return [IMAP_GREETING, Expect(b"a001 NOOP"), SendChunks(flood(b"* OK flood ")),
            b"a001 OK done\r\n", Close()]


def smtp_flood() -> list[object]:
    return [SMTP_GREETING, Expect(b"EHLO"), SendChunks(flood(b"250-flood ")),
            b"250 done\r\n", Close()]


def pop3_flood() -> list[object]:
    return [POP3_GREETING, Expect(b"RETR 1"), b"+OK here it comes\r\n",
            SendChunks(flood(b"flood ")), b".\r\n", Close()]


FLOODS = {
    "imap": (imap_flood, b"NOOP\n", "S: OK\nC: NOOP\nS: OK done\n", BOUND_MIB),
    "smtp": (smtp_flood, b"EHLO me\n", "S: 220\nC: EHLO me\nS: 250\n", BOUND_MIB),
    "pop3": (pop3_flood, b"RETR 1\n", "S: +OK\nC: RETR 1\nS: +OK\n", POP3_BOUND_MIB),
}


@dataclass
class Flooded:
    returncode: int
    tail: list[str]  # the last lines of standard output
    stderr: str
    peak_mib: int


def measure(args: list[str], stdin: bytes, tmp_path: Path) -> Flooded:
    """Run the real binary; keep only the end of what it prints (it prints the flood)."""
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MAILTALK_DEBUG", None)
    (tmp_path / "stdin").write_bytes(stdin)
    ran = run_measured([MAILTALK, *args], stdin=tmp_path / "stdin", env=env, timeout=TIMEOUT,
                       keep_stdout=4096)
    assert ran.returncode != -9, f"killed after {TIMEOUT} s: {ran.stderr[-2000:]}"
    return Flooded(ran.returncode, ran.stdout.splitlines()[-3:], ran.stderr,
                   ran.peak_rss_kib // 1024)


def run_flooded(protocol: str, mode: str, tmp_path: Path) -> tuple[Flooded, int]:
    script, stdin, session, bound = FLOODS[protocol]
    with ScriptedPeer(script(), step_timeout=TIMEOUT) as peer:
        if mode == "pipe":
            args = [protocol, "--timeout", str(TIMEOUT), f"127.0.0.1:{peer.port}"]
        else:
            path = tmp_path / "flood.mt"
            path.write_text(f"connect {protocol}://127.0.0.1:{peer.port}\n{session}")
            extra = ["--json"] if mode == "run --json" else []
            args = ["run", *extra, "--timeout", str(TIMEOUT), str(path)]
            stdin = b""
        result = measure(args, stdin, tmp_path)
    return result, bound


@pytest.mark.parametrize(
    ("protocol", "mode"),
    # --json with the untagged flood, the one whose every line it kept
    [(p, m) for p in ("imap", "smtp", "pop3") for m in ("pipe", "run")] + [("imap", "run --json")],
)
def test_a_flood_costs_bounded_memory(protocol: str, mode: str, tmp_path: Path) -> None:
    result, bound = run_flooded(protocol, mode, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.peak_mib < bound, f"peak RSS {result.peak_mib} MiB after {FLOOD_MIB} MiB"
    if mode == "pipe":
        assert result.tail[-1].startswith(
            # the SMTP reply and the POP3 answer are cut where the core stops keeping
            {"imap": "S: a001 OK done", "smtp": "S: (cut: ", "pop3": "S: (cut: "}[protocol]
        ), result.tail
    elif mode == "run":
        assert result.tail[0].startswith("PASS "), result.tail
    else:
        last = json.loads(result.tail[-1])
        assert last["result"] == "pass"


# --------------------------------------------------------------------------- what is kept


def test_the_transcript_keeps_a_bounded_tail_and_says_so(tmp_path: Path) -> None:
    from mailtalk.client.transcript import MAX_KEPT_CHARS, Transcript

    # a small budget here (the flood tests above run with the real one, 16 MiB)
    budget = 64 * 1024
    assert MAX_KEPT_CHARS >= 1024 * 1024
    path = tmp_path / "all.log"
    transcript = Transcript("imap://127.0.0.1", str(path), max_chars=budget)
    line = b"* OK flood " + b"x" * 1000 + b"\r\n"
    count = 3 * budget // len(line)
    for _ in range(count):
        transcript.add_raw("S", line)
    transcript.add_raw("S", b"a001 OK done\r\n")
    transcript.close()
    kept = sum(len(entry.text) for entry in transcript.entries)
    assert kept <= budget
    assert transcript.entries.dropped > count // 2
    rendered = transcript.render().splitlines()
    assert rendered[1].startswith(f"# {transcript.entries.dropped} earlier entries were not kept")
    assert rendered[-1] == "S: a001 OK done"
    assert len(path.read_text().splitlines()) == count + 2  # the file has every line


def test_the_recorder_keeps_a_bounded_tail_until_recording_starts(tmp_path: Path) -> None:
    from mailtalk.client.record import MAX_UNRECORDED_LINES, SessionRecorder

    recorder = SessionRecorder()
    recorder.connected("smtp://127.0.0.1:25")
    for _ in range(5 * MAX_UNRECORDED_LINES):
        recorder.reply(b"250 ok\r\n", "smtp")
    assert len(recorder.lines) <= MAX_UNRECORDED_LINES
    assert recorder.lines[0] == "connect smtp://127.0.0.1:25"
    recorder.path = str(tmp_path / "late.mt")
    for _ in range(2 * MAX_UNRECORDED_LINES):  # recording: everything is kept now
        recorder.sent("NOOP", "NOOP", "smtp")
    assert recorder.lines.count("C: NOOP") == 2 * MAX_UNRECORDED_LINES
    text = recorder.text().splitlines()
    assert text[1] == "connect smtp://127.0.0.1:25"
    assert "does not replay from the start" in text[2]
