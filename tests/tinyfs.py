"""A really small file system for disk-full tests: a tmpfs mounted for one test.

Mounting needs root and mount(8); :func:`mounted_tmpfs` skips the test otherwise.
:func:`fill` then takes the free space down to what a test wants left, with a
filler file the test can grow or remove, so "the disk is full" is the kernel's
ENOSPC, not a mock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

_CHUNK = 64 * 1024


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, size: str = "1m") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` (as mount(8) writes it: "1m", "4m") at ``mount_point``."""
    mount_point.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip(f"mounting a {size} tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def free_bytes(path: Path) -> int:
    status = os.statvfs(path)
    return status.f_bavail * status.f_frsize


def fill(path: Path, leave: int = 0, filler_name: str = "filler") -> Path:
    """Grow ``path/filler_name`` until at most ``leave`` bytes are free (0: until ENOSPC)."""
    filler = path / filler_name
    with open(filler, "ab") as out:
        while (room := free_bytes(path) - leave) > 0:
            try:
                out.write(b"\0" * min(room, _CHUNK))
                out.flush()
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
    return filler
