"""Streams one large message to a Maildir and reports peak memory; run by test_streaming.py.

Prints one JSON line: the delivered path, its SHA-256, and VmRSS before the
delivery and VmHWM (peak RSS) after it, in KiB. The peak is reset before the
delivery where Linux allows it (writing 5 to /proc/self/clear_refs), so it
measures the delivery alone and not the imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from mailtalk.store import Delivery, Maildir

CHUNK_SIZE = 64 * 1024


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def main() -> None:
    maildir, total = Maildir(Path(sys.argv[1])), int(sys.argv[2])
    maildir.create()
    block = bytearray(os.urandom(CHUNK_SIZE))
    digest = hashlib.sha256()
    rss_before = memory_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        peak_reset = True
    except OSError:
        peak_reset = False
    with Delivery([maildir]) as delivery:
        for index in range(total // CHUNK_SIZE):
            # Each chunk differs (its number up front), so the hash checks order too.
            block[:8] = index.to_bytes(8, "big")
            chunk = bytes(block)
            digest.update(chunk)
            delivery.write(chunk)
        (path,) = delivery.commit()
    report = {
        "path": str(path),
        "sha256": digest.hexdigest(),
        "size": delivery.size,
        "rss_before_kib": rss_before,
        "peak_kib": memory_kib("VmHWM"),
        "peak_reset": peak_reset,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
