"""Where a server's deliveries are committed: off the event loop, in two stages.

A commit fsyncs the message file, renames it into ``new/`` and fsyncs ``new/``,
none of which may block the event loop. Handing each whole commit to a pool
thread (``run_in_executor``) cost a busy SMTP server more CPU than the rest of its
session: per message, a pool thread woken, the GIL passed back and forth around
each of its nine syscalls while the loop wanted it too, ten threads waking each
other around the shared fsync of ``new/``, and the loop woken for each result
(``perf stat``: 26-39 context switches a message, against 4 without storage).

Here a commit goes through two stages:

- **sync** (threads, one per message being synced): the message's last bytes
  written and its file fsynced and closed (:meth:`Delivery.sync_staged`). These run
  side by side, because a disk under load answers concurrent fsyncs together
  (one after the other in one thread they took 4x longer at ten messages).
- **publish** (one thread): the messages synced meanwhile are renamed into ``new/``
  and each ``new/`` fsynced once for them all (:func:`publish_synced`); then each
  event loop is woken once for the whole batch.

The promise is each commit's: nobody hears of its result before its data was
synced, then its name given, then its ``new/`` synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from pathlib import Path

from mailtalk.store.errors import StoreError
from mailtalk.store.maildir import Delivery, publish_synced

__all__ = ["BatchCommitter", "commit_in_batch"]

# Threads syncing message files at the same time, at most: a server's concurrent DATA
# ends. More sessions than that wait a moment for their fsync to start.
SYNC_THREADS = 16

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[list[Path]]"]
_Job = tuple[Delivery, _Waiter]
_Outcome = list[Path] | BaseException


class BatchCommitter:
    """The two stages above, their threads made as they are needed (daemons: a commit
    cut short by the process exiting was never answered, so nothing was promised)."""

    def __init__(self, sync_threads: int = SYNC_THREADS) -> None:
        self._to_sync: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._to_publish: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._sync_threads = sync_threads
        self._lock = threading.Lock()
        self._syncers = 0
        self._idle_syncers = 0
        self._publisher: threading.Thread | None = None

    async def commit(self, delivery: Delivery) -> list[Path]:
        """:meth:`Delivery.commit`, off the loop; returns the final paths or raises its
        StoreError."""
        delivery._require_open("commit")  # a misuse is the caller's error, not a thread's
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Path]] = loop.create_future()
        if self._publisher is None:
            self._start(self._publish, "mailtalk-publish")
        if not self._idle_syncers and self._syncers < self._sync_threads:
            with self._lock:
                self._syncers += 1
                self._idle_syncers += 1
            self._start(self._sync, f"mailtalk-sync-{self._syncers}")
        self._to_sync.put((delivery, (loop, future)))
        return await future

    def _start(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        if name == "mailtalk-publish":
            self._publisher = thread
        thread.start()

    def _sync(self) -> None:
        to_sync, to_publish, lock = self._to_sync, self._to_publish, self._lock
        while True:
            job = to_sync.get()
            with lock:
                self._idle_syncers -= 1
            delivery, waiter = job
            try:
                delivery.sync_staged()
            except StoreError as error:
                _answer([(waiter, error)])
            except Exception as error:  # a bug: the session hears of it
                delivery.abort()
                _answer([(waiter, error)])
            else:
                to_publish.put(job)
            with lock:
                self._idle_syncers += 1

    def _publish(self) -> None:
        to_publish = self._to_publish
        while True:
            batch = [to_publish.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(to_publish.get_nowait())
            deliveries = [delivery for delivery, _ in batch]
            outcomes: list[_Outcome]
            try:
                outcomes = list(publish_synced(deliveries))
            except Exception as error:  # a bug: every session of the batch hears of it
                outcomes = [error] * len(batch)
            answers = zip((waiter for _, waiter in batch), outcomes, strict=True)
            _answer(list(answers))


def _answer(answers: list[tuple[_Waiter, _Outcome]]) -> None:
    """Wake each event loop once for all of its sessions' outcomes."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[Path]], _Outcome]]]
    by_loop = {}
    for (loop, future), outcome in answers:
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[list[Path]], _Outcome]]) -> None:
    """In the loop: each waiting session gets its outcome (unless it was cancelled)."""
    for future, outcome in settled:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


_committer = BatchCommitter()


def _forget_threads_after_fork() -> None:
    global _committer
    _committer = BatchCommitter()  # the child has none of the threads: new ones on first use


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


async def commit_in_batch(delivery: Delivery) -> list[Path]:
    """Commit ``delivery`` through the process's sync and publish threads (see the
    module's note); returns its final paths or raises its StoreError."""
    return await _committer.commit(delivery)
