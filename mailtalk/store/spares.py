"""Message files made ahead, off the event loop, for a server's deliveries.

Creating a message file in ``tmp/`` is the costliest syscall of an SMTP session that
stores its message: on this project's ext4 (no journal) an inode allocation passes
over every inode freed in the last minutes in the folder's block group, and took a
third of a busy server's CPU (``perf record``: ``find_inode_bit`` ->
``recently_deleted``), all of it on the event loop's thread while every other
session waited. Here a thread of its own makes a few files ahead in each ``tmp/``
a server delivers into; a session starting a message (DATA, a first BDAT) takes
one, with no syscall, and the thread makes another while the loop goes on.

Only where creating is slow: on a quiet disk a create costs 10-15 µs of CPU, less
than waking the thread and passing it the GIL would (``perf stat``: more context
switches a message, no gain). A delivery that made its own file says what it cost
(CPU time of its thread: the kernel's work, not the waits); when the running
average of a folder's creates is over :data:`SLOW_CREATE_SECONDS`, spares are made
for it, and the thread stops making them there when the average of its own creates
is below again (one slow create among fast ones starts nothing).

A spare is made with ``O_TMPFILE``: a file in ``tmp/``'s filesystem without a name,
so nothing shows in ``tmp/`` and nothing is left when the server stops or is
killed. The delivery links it into ``tmp/`` under its staging name when it commits
(in the commit thread, before the file's fsync; ``Delivery.sync_staged``), and goes
on as before: fsync, rename into ``new/``, fsync of ``new/``, then the 250.

The promise of DATA is unchanged: its 354 comes only once the message has a file.
When no spare is ready (the first message to a folder, a burst) the delivery makes
its own, as before, and an error making it is DATA's answer. Where ``O_TMPFILE`` or
``/proc/self/fd`` (to name the file) is missing, no spare is ever made.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
import weakref
from pathlib import Path

from mailtalk.store.filesystem import MESSAGE_MODE

__all__ = ["SpareFiles"]

# Spares kept ready per tmp/ folder; the thread is woken when half are taken.
PER_FOLDER = 8
# Folders with spares, at most (the least recently asked for loses its spares).
FOLDERS = 16
# A create that took more CPU than this is slow (quiet disk: 10-15 µs; behind many
# inodes freed in the same block group: 100-1,000 µs).
SLOW_CREATE_SECONDS = 50e-6
# The weight of the latest create in a folder's running average of their cost.
LATEST_WEIGHT = 0.25

_TMPFILE = getattr(os, "O_TMPFILE", 0)
_SPARE_FLAGS = _TMPFILE | os.O_WRONLY | os.O_CLOEXEC  # not O_EXCL: it is to be linked


def spares_possible() -> bool:
    """Whether this system can make spares: O_TMPFILE, and /proc to name them."""
    return bool(_TMPFILE) and os.path.isdir("/proc/self/fd")


class SpareFiles:
    """The spares of one server (see the module's note); :meth:`close` drops them."""

    def __init__(self, per_folder: int = PER_FOLDER, folders: int = FOLDERS) -> None:
        self._per_folder = per_folder
        self._folders = folders
        self._possible = spares_possible()
        self._lock = threading.Lock()
        self._ready: dict[str, collections.deque[int]] = {}  # by tmp/ folder, LRU first
        self._asked: set[str] = set()  # folders the thread has been asked to fill
        self._slow: set[str] = set()  # folders where creating is slow: spares kept
        self._cost: dict[str, float] = {}  # a folder's creates: running average of CPU
        self._wanted: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        _instances.add(self)

    def take(self, tmp_dir: Path) -> int | None:
        """The descriptor of a spare file in ``tmp_dir``'s filesystem, without a name
        (now the caller's), or None when none is ready; either way the folder is
        refilled, off this thread."""
        if not self._possible:
            return None
        key = os.fspath(tmp_dir)
        taken: int | None = None
        with self._lock:
            if self._closed:
                return None
            ready = self._ready.pop(key, None)
            if ready is not None:
                self._ready[key] = ready  # the most recently asked for, last
                if ready:
                    taken = ready.popleft()
            ask = (key in self._slow and key not in self._asked
                   and (ready is None or len(ready) <= self._per_folder // 2))  # fmt: skip
            if ask:
                self._ask_locked(key)
        if ask:
            self._wanted.put(Path(tmp_dir))
        return taken

    def made_own(self, tmp_dir: Path, cpu_seconds: float) -> None:
        """A delivery made its own file in ``tmp_dir``, for ``cpu_seconds`` of its
        thread's CPU: when that is slow, spares are made there from now on."""
        if not self._possible:
            return
        key = os.fspath(tmp_dir)
        with self._lock:
            if self._closed or self._average_locked(key, cpu_seconds) <= SLOW_CREATE_SECONDS:
                return
            if key in self._asked:
                return
            self._slow.add(key)
            self._ask_locked(key)
        self._wanted.put(Path(tmp_dir))

    def _average_locked(self, key: str, cpu_seconds: float) -> float:
        """The folder's running average of what a create costs, with this one in."""
        last = self._cost.get(key)
        if last is None and len(self._cost) >= self._folders:
            self._cost.clear()  # bounded, as the folders with spares are
        average = cpu_seconds if last is None else last + LATEST_WEIGHT * (cpu_seconds - last)
        self._cost[key] = average
        return average

    def _ask_locked(self, key: str) -> None:
        self._asked.add(key)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._make_spares, name="mailtalk-spare-files", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Drop every spare (their files go with their descriptors); later :meth:`take`
        calls get None."""
        with self._lock:
            self._closed = True
            spares = [fd for ready in self._ready.values() for fd in ready]
            self._ready.clear()
        self._wanted.put(None)
        _close(spares)

    def _make_spares(self) -> None:
        while True:
            tmp_dir = self._wanted.get()
            if tmp_dir is None:
                return
            self._fill(tmp_dir)

    def _fill(self, tmp_dir: Path) -> None:
        key = os.fspath(tmp_dir)
        dropped: list[int] = []
        try:
            while True:
                with self._lock:
                    ready = self._ready.get(key)
                    if self._closed or (ready is not None and len(ready) >= self._per_folder):
                        return
                began = time.thread_time()
                try:
                    fd = os.open(tmp_dir, _SPARE_FLAGS, MESSAGE_MODE)
                except OSError:
                    return  # the next delivery makes its own file, and answers its error
                cost = time.thread_time() - began
                with self._lock:
                    fast = self._average_locked(key, cost) <= SLOW_CREATE_SECONDS
                    if self._closed:
                        dropped.append(fd)
                        return
                    if fast:  # the disk keeps up again: sessions make their own files
                        self._slow.discard(key)
                    ready = self._ready.get(key)
                    if ready is None:
                        while len(self._ready) >= self._folders:
                            dropped.extend(self._ready.pop(next(iter(self._ready))))
                        ready = self._ready[key] = collections.deque()
                    ready.append(fd)
                    if fast:
                        return
        finally:
            with self._lock:
                self._asked.discard(key)
            _close(dropped)

    def _forget_after_fork(self) -> None:
        """In a forked child: the spares are the parent's; close the child's copies of
        their descriptors, and start afresh."""
        _close([fd for ready in self._ready.values() for fd in ready])
        self._lock = threading.Lock()
        self._ready = {}
        self._asked = set()
        self._slow = set()
        self._cost = {}
        self._wanted = queue.SimpleQueue()
        self._thread = None


def _close(descriptors: list[int]) -> None:
    for fd in descriptors:
        os.close(fd)


_instances: weakref.WeakSet[SpareFiles] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for spares in list(_instances):
        spares._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
