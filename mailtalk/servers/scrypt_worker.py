"""The servers' scrypt runs in a process of its own, as Dovecot checks passwords in its
auth process rather than in the processes that serve mail.

Why: every password check (and the check of ``--user``'s password against the users
file at start) runs scrypt with n=16384, r=8, whose working memory is 128·r·n = 16 MiB.
In the serving process that memory, once touched, stays in its peak RSS for good (and,
freed into a thread's malloc arena, often in its RSS): a third of what a ``mailtalk
serve`` holds. A worker holds it instead; the server keeps a pipe.

The worker is this file run as a script (``python -I -S scrypt_worker.py``: no site, no
environment, nothing of mailtalk imported), started at the first check and kept for the
next ones, one per check running at once (the guard runs two at most). It reads
requests on its standard input and answers on its standard output, and it ends at the
end of its input: when the server closes the pipe, or exits or dies, however it dies
(the pipe's ends are not inherited by anything else the server starts). The password
goes through the pipe only, never in argv or the environment (the worker gets
an empty one), and the worker writes
nothing else anywhere. It ignores SIGINT, so a Ctrl-C to the terminal stops the server
and not, with a traceback, its worker.

The verdict is the same wherever scrypt runs: the server compares the derived key itself.
If no worker can be started or one stops answering, the check runs in-process (logged
once, without the password).

A request is ``!IIIIII`` (n, r, p, dklen, salt length, password length), the salt and
the password; the answer is ``!I`` (the key's length, 0 for an error) and the key.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import sys
import threading
from typing import BinaryIO

REQUEST = struct.Struct("!IIIIII")
ANSWER = struct.Struct("!I")
MAX_MEMORY = 256 * 1024 * 1024  # scrypt's maxmem: the users file's parameters are bounded
MAX_FIELD = 64 * 1024  # salt or password bytes in a request; a longer one ends the worker
ANSWER_TIMEOUT = 60.0  # seconds a worker may take; then it is killed and the check redone here


def derive(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """scrypt(password), in a worker if :func:`use_workers` was called, else here."""
    workers = _workers
    if workers is not None:
        key = workers.derive(password, salt, n, r, p, dklen)
        if key is not None:
            return key
    return _scrypt(password, salt, n, r, p, dklen)


def use_workers(start: bool = False) -> None:
    """From now on this process's scrypt runs go to workers, started when first needed
    (or now, if ``start`` and none is idle: its boot then overlaps the caller's work)."""
    global _workers
    if _workers is None:
        import atexit

        _workers = _Workers()
        atexit.register(stop_workers)  # each ends at its pipe's end anyway; this waits
    if start:
        _workers.start_one()


def stop_workers() -> None:
    """Let the workers go; the next run, if any, starts a new one."""
    if _workers is not None:
        _workers.close()


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    import hashlib  # loads OpenSSL: not at the CLI's start

    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY, dklen=dklen)


class _Worker:
    def __init__(self) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            bufsize=0, env={},  # not the server's: $MAILTALK_SERVE_PASSWORD may be in it
        )

    def derive(self, request: bytes, dklen: int) -> bytes | None:
        """The key, or None if the worker failed (it is then of no further use)."""
        import select

        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(request)
            answer = b""
            while len(answer) < ANSWER.size + dklen:
                ready, _, _ = select.select([self.process.stdout], [], [], ANSWER_TIMEOUT)
                chunk = os.read(self.process.stdout.fileno(), 4096) if ready else b""
                if not chunk:
                    return None
                answer += chunk
                if len(answer) >= ANSWER.size and ANSWER.unpack_from(answer)[0] != dklen:
                    return None
        except OSError:
            return None
        return answer[ANSWER.size:]

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        import subprocess

        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:  # a worker that does not end is killed
            self.process.kill()
            self.process.wait()


class _Workers:
    """Idle workers, one taken for each check (a new one when none is idle)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._warned = False

    def derive(
        self, password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int
    ) -> bytes | None:
        if len(password) > MAX_FIELD or len(salt) > MAX_FIELD:
            return None
        request = REQUEST.pack(n, r, p, dklen, len(salt), len(password)) + salt + password
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        try:
            if worker is None:
                worker = _Worker()
        except OSError as error:
            self._warn(f"cannot start it: {error.strerror or error}")
            return None
        key = worker.derive(request, dklen)
        if key is None:
            worker.process.kill()
            worker.close()
            self._warn("it stopped answering")
            return None
        with self._lock:
            self._idle.append(worker)
        return key

    def start_one(self) -> None:
        with self._lock:
            if self._idle:
                return
        try:
            worker = _Worker()
        except OSError as error:
            self._warn(f"cannot start it: {error.strerror or error}")
            return
        with self._lock:
            self._idle.append(worker)

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            import logging

            logging.getLogger("mailtalk.servers").warning(
                "password checks run in the server process: scrypt worker: %s", why)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


_workers: _Workers | None = None


# -- the worker's side ------------------------------------------------------------------


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until the end of input (or a malformed request)."""
    while True:
        head = _read_exactly(requests, REQUEST.size)
        if head is None:
            return
        n, r, p, dklen, salt_length, password_length = REQUEST.unpack(head)
        if salt_length > MAX_FIELD or password_length > MAX_FIELD:
            return
        body = _read_exactly(requests, salt_length + password_length)
        if body is None:
            return
        try:
            key = _scrypt(body[salt_length:], body[:salt_length], n, r, p, dklen)
        except (ValueError, MemoryError):
            key = b""
        del body
        answers.write(ANSWER.pack(len(key)) + key)
        answers.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)
