"""A 200 MB message streams through a delivery without growing the process's memory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("stream_big_message.py")
MESSAGE_SIZE = 200 * 1024 * 1024
# The delivery holds one 64 KiB buffer; allow for allocator and page-cache noise.
ALLOWED_GROWTH_KIB = 8 * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_200_mb_message_streams_with_flat_memory(tmp_path: Path) -> None:
    maildir_path = tmp_path / "Maildir"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(maildir_path), str(MESSAGE_SIZE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    path = Path(report["path"])

    try:
        growth_kib = report["peak_kib"] - report["rss_before_kib"]
        print(f"peak RSS {report['peak_kib']} KiB, {growth_kib:+} KiB over the start")
        assert growth_kib < ALLOWED_GROWTH_KIB
        assert report["size"] == path.stat().st_size == MESSAGE_SIZE
        assert path.parent == maildir_path / "new"
        digest = hashlib.sha256()
        with path.open("rb") as stored:
            while chunk := stored.read(1024 * 1024):
                digest.update(chunk)
        assert digest.hexdigest() == report["sha256"]
        assert list((maildir_path / "tmp").iterdir()) == []
    finally:
        path.unlink()  # 200 MB is too much to leave in pytest's kept tmp dirs
