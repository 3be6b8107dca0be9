"""Where a server's deliveries are committed: off the event loop, in batches.

A commit fsyncs the message file, renames it into ``new/`` and fsyncs ``new/``,
none of which may block the event loop. Handing each whole commit to a pool
thread (``run_in_executor``) cost a busy SMTP server more CPU than the rest of its
session: per message, a pool thread woken, the GIL passed back and forth around
each of that thread's syscalls while the loop wanted it too, ten threads waking
each other around the shared fsync of ``new/``, and the loop woken for each result
(``perf stat``: 26-39 context switches a message, against 4 without storage).

Here one thread, the committer, takes every delivery that is waiting, has the disk
start writing all their files (:meth:`Delivery.start_writing_out`), syncs them
(:meth:`Delivery.sync_staged`) and renames them into ``new/`` (:func:`name_synced`).
A disk answers concurrent fsyncs together, so once the committer's first fsync of a
batch is done, helper threads take the batch's files still to sync alongside it (a
batch of one wakes none). A second thread, the publisher, then syncs each ``new/``
once for every batch named while it was busy (:func:`sync_names`) and wakes each
event loop once for them, while the committer goes on with the files of the next
batch: the fsync of ``new/`` and those of the next files wait for the disk together
rather than one after the other (under load: 417 -> 569 msg/s with one connection
for many messages, bench/README.md). The deliveries that end meanwhile wait and make
the next batch.

The promise is each commit's: nobody hears of its result before its data was
synced, then its name given, then its ``new/`` synced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import threading
import time
from pathlib import Path

from mailtalk.store.errors import StoreError
from mailtalk.store.maildir import Delivery, NamedBatch, name_synced, sync_names

__all__ = ["BatchCommitter", "commit_in_batch"]

# An fsync that took longer than this calls a helper for the files of the batch still
# waiting (on this machine's disk: 0.3 ms at the median idle, 2-5 ms under load).
# Any: with the publisher syncing new/ beside the committer, helpers called after the
# batch's first fsync gave 588 -> 854 msg/s (0.5 ms: 679) under load, and no more CPU
# a message (bench/README.md); a batch of one file still wakes none.
SLOW_FSYNC_SECONDS = 0.0
# Helpers syncing files alongside the committer, at most.
HELPERS = 8

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[list[Path]]"]
_Job = tuple[Delivery, _Waiter]
_Outcome = list[Path] | BaseException
_Named = tuple[NamedBatch, list[_Waiter]]


class BatchCommitter:
    """The committer and its helpers (see the module's note), made as they are needed;
    daemon threads (a commit cut short by the process exiting was never answered, so
    nothing was promised)."""

    def __init__(self, helpers: int = HELPERS) -> None:
        self._incoming: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._named: queue.SimpleQueue[_Named] = queue.SimpleQueue()  # for the publisher
        self._committer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._to_sync: collections.deque[_Job] = collections.deque()  # of the batch
        self._synced: list[_Job] = []  # of the batch, ready to publish
        self._syncing = 0  # files being synced now, by the committer or a helper
        self._call = threading.Condition(self._lock)  # helpers wait here to be called
        self._all_synced = threading.Condition(self._lock)  # the committer waits here
        self._helpers = 0  # started
        self._idle_helpers = 0
        self._max_helpers = helpers

    async def commit(self, delivery: Delivery) -> list[Path]:
        """:meth:`Delivery.commit`, off the loop; returns the final paths or raises its
        StoreError."""
        delivery._require_open("commit")  # a misuse is the caller's error, not a thread's
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Path]] = loop.create_future()
        if self._committer is None:
            self._start_committer()
        self._incoming.put((delivery, (loop, future)))
        return await future

    def _start_committer(self) -> None:
        with self._lock:
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._commit_batches, name="mailtalk-commit", daemon=True
                )
                self._committer.start()
                threading.Thread(
                    target=self._publish_batches, name="mailtalk-commit-publish", daemon=True
                ).start()

    # -- the committer ----------------------------------------------------------------

    def _commit_batches(self) -> None:
        incoming = self._incoming
        while True:
            batch = [incoming.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(incoming.get_nowait())
            if len(batch) > 1:
                batch = self._start_writing_out(batch)
            with self._lock:
                self._to_sync.extend(batch)
            synced = self._sync_batch()
            if not synced:
                continue
            waiters = [waiter for _, waiter in synced]
            try:
                named = name_synced([delivery for delivery, _ in synced])
            except Exception as error:  # a bug: every session of the batch hears of it
                _answer([(waiter, error) for waiter in waiters])
                continue
            # The publisher syncs new/ for them while this thread goes on to the next
            # batch's files: the two waits for the disk overlap.
            self._named.put((named, waiters))

    # -- the publisher ----------------------------------------------------------------

    def _publish_batches(self) -> None:
        """Sync the directories of the named batches (all those waiting, one fsync of
        each directory for them), then wake each event loop once for their sessions."""
        named_batches = self._named
        while True:
            named, waiters = named_batches.get()
            with contextlib.suppress(queue.Empty):
                while True:
                    more, more_waiters = named_batches.get_nowait()
                    named.extend(more)
                    waiters += more_waiters
            outcomes: list[_Outcome]
            try:
                outcomes = list(sync_names(named))
            except Exception as error:  # a bug: every session of the batch hears of it
                outcomes = [error] * len(waiters)
            _answer(list(zip(waiters, outcomes, strict=True)))

    def _start_writing_out(self, batch: list[_Job]) -> list[_Job]:
        """Have the disk start on every file of the batch (the sessions of those that
        cannot be written are answered): the fsyncs that follow, one after the other,
        then mostly wait for writes already under way (median 0.4 -> 0.15 ms here)."""
        started = []
        for job in batch:
            delivery, waiter = job
            try:
                delivery.start_writing_out()
            except StoreError as error:
                _answer([(waiter, error)])
                continue
            started.append(job)
        return started

    def _sync_batch(self) -> list[_Job]:
        """Sync the files of the batch (helpers called in when the disk is slow); the
        deliveries whose files are synced (the others' sessions are answered)."""
        lock = self._lock
        while True:
            with lock:
                if not self._to_sync:
                    break
                job = self._to_sync.popleft()
                self._syncing += 1
            began = time.monotonic()
            self._sync(job)
            if time.monotonic() - began > SLOW_FSYNC_SECONDS:
                self._call_helper()
        with lock:
            while self._syncing:
                self._all_synced.wait()
            synced, self._synced = self._synced, []
        return synced

    def _call_helper(self) -> None:
        with self._lock:
            if not self._to_sync:
                return
            if self._idle_helpers:
                self._call.notify()
                return
            if self._helpers >= self._max_helpers:
                return
            self._helpers += 1
            name = f"mailtalk-commit-helper-{self._helpers}"
        threading.Thread(target=self._help, name=name, daemon=True).start()

    # -- both -------------------------------------------------------------------------

    def _sync(self, job: _Job) -> None:
        """Sync one delivery's file; count it synced, or answer its session's error."""
        delivery, waiter = job
        failure: BaseException | None = None
        try:
            delivery.sync_staged()
        except StoreError as error:
            failure = error
        except Exception as error:  # a bug: the session hears of it
            delivery.abort()
            failure = error
        if failure is not None:
            _answer([(waiter, failure)])
        with self._lock:
            if failure is None:
                self._synced.append(job)
            self._syncing -= 1
            if not self._syncing and not self._to_sync:
                self._all_synced.notify()

    # -- a helper ---------------------------------------------------------------------

    def _help(self) -> None:
        lock = self._lock
        while True:
            with lock:
                while not self._to_sync:
                    self._idle_helpers += 1
                    self._call.wait()
                    self._idle_helpers -= 1
                job = self._to_sync.popleft()
                self._syncing += 1
            self._sync(job)


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
    """Commit ``delivery`` with whatever else is waiting, in the process's commit thread
    (see the module's note); returns its final paths or raises its StoreError."""
    return await _committer.commit(delivery)
