"""``mailtalk run`` given what is not a session file: /dev/zero, a FIFO, a directory, a
huge or binary file, someone's /etc/shadow. Each is one line on stderr, exit 2, in
bounded memory, and the text of a file that is no session file is never shown.

The real binary runs through :func:`tests.measured.run_measured`, which caps its
address space (so that a regression fails the test quickly instead of eating the
machine's memory) and reports its true peak RSS.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.measured import Measured, run_measured
from tests.script.runs import MAILTALK, mailtalk_env, write

PEAK_RSS_KIB = 300 * 1024  # generous: a run that parses a small file stays near 30 MiB
ADDRESS_SPACE = 2 * 1024**3  # the cap a regression hits (reading /dev/zero, 1 GiB files)
WATCHDOG = 20  # seconds: a FIFO opened for reading blocks forever without O_NONBLOCK


def run(tmp_path: Path, *args: str, stdin: str | None = None) -> Measured:
    finished = run_measured(
        [MAILTALK, "run", *args],
        stdin=Path(stdin) if stdin else None,
        env=mailtalk_env(tmp_path, None),
        cwd=tmp_path,
        timeout=WATCHDOG,
        address_space=ADDRESS_SPACE,
    )
    assert finished.returncode != -9, f"mailtalk run hung and was killed: {finished.stderr}"
    return finished


def assert_refused(result: Measured, message: str) -> None:
    """Exit 2, one line on stderr that holds ``message``, nothing else, little memory."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-2000:])
    assert result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert result.stderr.startswith("mailtalk: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.peak_rss_kib < PEAK_RSS_KIB, f"peak RSS {result.peak_rss_kib} KiB"


CONNECT = "connect smtp://127.0.0.1:1\n"


def test_dev_zero_as_the_session_file(tmp_path: Path) -> None:
    result = run(tmp_path, "/dev/zero")
    assert_refused(result, "/dev/zero: cannot read /dev/zero: a device, not a session file")


def test_include_dev_zero(tmp_path: Path) -> None:
    script = write(tmp_path, "zero.mt", CONNECT + "include /dev/zero\n")
    result = run(tmp_path, str(script))
    assert_refused(result, f"{script}:2: cannot read /dev/zero: a device, not a session file")


def test_dev_zero_on_standard_input(tmp_path: Path) -> None:
    result = run(tmp_path, "-", stdin="/dev/zero")
    assert_refused(result, "standard input is over 16 MiB: too big for a session file")


def test_data_from_dev_zero(tmp_path: Path) -> None:
    script = write(tmp_path, "zero.mt", CONNECT + "data /dev/zero\n")
    result = run(tmp_path, str(script))
    assert_refused(result, f"{script}:2: data /dev/zero: a device")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.mt"
    os.mkfifo(fifo)
    result = run(tmp_path, str(fifo))
    assert_refused(result, f"cannot read {fifo}: a FIFO (give - to read standard input)")
    script = write(tmp_path, "inc.mt", CONNECT + f"include {fifo}\ndata {fifo}\n")
    assert_refused(run(tmp_path, str(script)), f"{script}:2: cannot read {fifo}: a FIFO")
    script = write(tmp_path, "data.mt", CONNECT + f"data {fifo}\n")
    assert_refused(run(tmp_path, str(script)), f"{script}:2: data {fifo}: a FIFO")


def test_a_directory(tmp_path: Path) -> None:
    result = run(tmp_path, str(tmp_path))
    assert_refused(result, f"cannot read {tmp_path}: a directory, not a session file")
    script = write(tmp_path, "dir.mt", CONNECT + f"include {tmp_path}\n")
    assert_refused(run(tmp_path, str(script)), f"{script}:2: cannot read {tmp_path}: a directory")


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` NUL bytes that takes no disk space."""
    with open(path, "wb") as file:
        file.truncate(size)
    return path


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = sparse(tmp_path / "huge.mt", 1024**3)
    assert_refused(run(tmp_path, str(huge)), f"{huge} is over 16 MiB: too big for a session file")
    script = write(tmp_path, "inc.mt", CONNECT + "include huge.mt\n")
    assert_refused(run(tmp_path, str(script)), f"{script}:2: {huge} is over 16 MiB")


def test_a_huge_message_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    sparse(tmp_path / "huge.eml", 1024**3)
    script = write(tmp_path, "big.mt", CONNECT + "data huge.eml\n")
    assert_refused(run(tmp_path, str(script)), f"{script}:2: data huge.eml: over 67108864 bytes")


def test_includes_are_bounded_in_all(tmp_path: Path) -> None:
    """Including a file again is allowed, but not 64 MiB of them in all."""
    line = "# " + "x" * 1021 + "\n"
    (tmp_path / "part.mt").write_text(line * (15 * 1024), encoding="utf-8")  # 15 MiB
    script = write(tmp_path, "many.mt", CONNECT + "include part.mt\n" * 6)
    result = run(tmp_path, str(script))
    assert_refused(result, f"{script}:6: over 64 MiB of session files, counting each include")


def test_a_message_file_sent_many_times_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "m.eml").write_bytes(b"Subject: x\n\n" + b"y" * (8 * 1024 * 1024))
    body = "S: 220\nC: EHLO x\nS: 250\nC: MAIL FROM:<a@b.test>\nS: 250\nC: RCPT TO:<a@b.test>\n"
    body += "S: 250\n" + "data m.eml\nS: 250\n" * 100  # 800 MiB if each were held apart
    script = write(tmp_path, "many.mt", CONNECT + body)
    result = run(tmp_path, str(script))
    assert result.returncode == 3, result.stderr  # parsed: only the connection failed
    assert result.peak_rss_kib < PEAK_RSS_KIB, f"peak RSS {result.peak_rss_kib} KiB"


@pytest.mark.parametrize(
    "content",
    [
        b"\x00" * 4096,
        b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64 + b"\x03\x00>\x00\x01\x00",
        b"connect smtp://h\n\x00\x01\x02\n",
    ],
)
def test_a_binary_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "binary.mt"
    path.write_bytes(content)
    result = run(tmp_path, str(path))
    assert_refused(result, "holds NUL bytes: a binary file, not a session file")
    said = result.stderr.replace(str(path), "PATH")
    assert "ELF" not in said and "\\x" not in said


def test_a_non_utf8_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.mt"
    path.write_bytes(b"\xff\xfe\x00\x01" * 100)
    assert_refused(run(tmp_path, str(path)), f"{path} is not UTF-8 text")


SHADOW = "root:$y$j9T$Zq1Gx8.secret-hash-here:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def test_an_included_file_that_is_no_session_file_is_not_quoted(tmp_path: Path) -> None:
    shadow = write(tmp_path, "shadow", SHADOW)
    script = write(tmp_path, "s.mt", CONNECT + f"include {shadow}\n")
    result = run(tmp_path, str(script))
    assert_refused(result, f"{shadow}:1: not C:, S:, a directive or a comment")
    assert f"is {shadow} a session file?" in result.stderr
    said = result.stderr.replace(str(tmp_path), "DIR")
    assert "root" not in said and "secret-hash" not in said and "19000" not in said


def test_a_file_that_is_no_session_file_is_not_quoted(tmp_path: Path) -> None:
    passwords = write(tmp_path, "passwords.txt", "# my passwords\nhunter2\nconnect-to-me\n")
    result = run(tmp_path, str(passwords))
    assert_refused(result, f"{passwords}:2: not C:, S:, a directive or a comment")
    assert "hunter2" not in result.stderr.replace(str(tmp_path), "DIR")


def test_a_typo_in_a_session_file_is_still_quoted(tmp_path: Path) -> None:
    """Once a file has shown it is a session file, its unknown words are named."""
    script = write(tmp_path, "s.mt", CONNECT + "S: 220\nconect smtp://h\n")
    result = run(tmp_path, str(script))
    assert_refused(result, f"{script}:3: unknown directive 'conect'; did you mean connect?")
    script = write(tmp_path, "s.mt", "conect smtp://h\n")
    result = run(tmp_path, str(script))
    assert_refused(result, f"{script}:1: not C:, S:, a directive or a comment: is {script}")
    assert result.stderr.rstrip().endswith("(its text is not shown) did you mean connect?")
