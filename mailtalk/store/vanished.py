"""The UIDs a folder expunged, with the MODSEQ of each expunge, for QRESYNC (RFC 7162 3.2).

A file beside the index, ``mailtalk-vanished``: a header line ``V<uidvalidity>
F<floor>``, then one ``<modseq> <uid>`` line per expunged message, oldest first. It
keeps the last :data:`MAX_REMEMBERED` expunges: older ones are dropped and the
floor rises to the highest MODSEQ dropped. A client whose MODSEQ is below the floor
(or a folder with no usable file: none yet, a new UIDVALIDITY, a write that failed)
gets the full answer instead: every UID below UIDNEXT that is not in the folder,
which RFC 7162 3.2.5.2 allows (a VANISHED (EARLIER) may name UIDs the client
already knew gone), as Dovecot does when its transaction log is gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mailtalk.store.filesystem import remove_quietly, replace_file

__all__ = ["MAX_REMEMBERED", "VANISHED_NAME", "ExpungeLog", "read_log", "record_expunges"]

VANISHED_NAME: Final = "mailtalk-vanished"
_TMP_NAME: Final = "mailtalk-vanished.tmp"
MAX_REMEMBERED: Final = 2000


@dataclass(frozen=True)
class ExpungeLog:
    uidvalidity: int
    floor: int  # expunges at or below this MODSEQ are forgotten
    entries: tuple[tuple[int, int], ...]  # (modseq, uid), oldest first

    def since(self, modseq: int) -> list[int] | None:
        """The UIDs expunged after ``modseq``; None when the log no longer knows."""
        if modseq < self.floor:
            return None
        # A set: an expunge recorded twice (an index save that failed) is one UID.
        return sorted({uid for seq, uid in self.entries if seq > modseq})


def read_log(folder: Path, uidvalidity: int) -> ExpungeLog | None:
    try:
        lines = (folder / VANISHED_NAME).read_text("ascii").splitlines()
        header = lines[0].split()
        if header[0] != f"V{uidvalidity}" or not header[1].startswith("F"):
            return None
        entries = tuple(tuple(int(n) for n in line.split()) for line in lines[1:])
        if any(len(entry) != 2 for entry in entries):
            return None
        return ExpungeLog(uidvalidity, int(header[1][1:]), entries)  # type: ignore[arg-type]
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def record_expunges(folder: Path, uidvalidity: int, expunged: Iterable[tuple[int, int]],
                    first_modseq: int) -> None:
    """Add ``expunged`` (modseq, uid) to the log; called under the index lock.

    ``first_modseq`` is the lowest MODSEQ of this batch: a folder with no log yet
    starts with that as its floor (earlier expunges are unknown). If the write fails
    the log is removed, so that QRESYNC falls back to the full answer, never a short one.
    """
    log = read_log(folder, uidvalidity)
    floor = first_modseq - 1 if log is None else log.floor
    entries = [*(log.entries if log else ()), *expunged]
    if len(entries) > MAX_REMEMBERED:
        dropped, entries = entries[:-MAX_REMEMBERED], entries[-MAX_REMEMBERED:]
        floor = max(floor, *(seq for seq, _ in dropped))
    text = f"V{uidvalidity} F{floor}\n" + "".join(f"{seq} {uid}\n" for seq, uid in entries)
    try:
        replace_file(folder / VANISHED_NAME, text.encode("ascii"), folder / _TMP_NAME)
    except OSError:
        remove_quietly(folder / _TMP_NAME)
        remove_quietly(folder / VANISHED_NAME)
