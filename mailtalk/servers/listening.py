"""Listening sockets of the reference servers: a backlog for bursts, out of descriptors.

asyncio's ``create_server`` listens with a backlog of 100: in a burst of 1,000
connections the kernel completes the handshakes it cannot queue with SYN cookies,
and those clients wait for a greeting that never comes. A ``Listener`` listens with
``BACKLOG`` (the kernel caps it at net.core.somaxconn) and accepts in its own loop,
because asyncio's, on EMFILE, keeps calling accept() for the rest of its batch and
logs a traceback for each (65,753 of them in 22 s, issue 15): here an accept() out of
descriptors stops accepting for ``PAUSE_WHEN_FULL`` seconds and says so once.

Accepted sockets go to ``loop.connect_accepted_socket`` in plain text; an implicit-TLS
session does its own handshake (``ServerSession``), so that it counts against the
connection caps from the start. :func:`raise_descriptor_limit` raises the soft
``RLIMIT_NOFILE`` towards the hard one as far as the caps need.

A listener may also be a Unix-domain socket (``Listener.open_unix``: ``serve --lmtp
unix:/path``, as Dovecot's LMTP socket that Postfix delivers to). It is bound in a
private directory beside the path, given its mode and group there, and only then
renamed into place, so nobody can connect while it is still open to all (the umask is
the whole process's, and other threads may be creating files). A socket already at the
path that still answers is another server's: an error, never taken over; one that
refuses connections is a stale one left by a crash, and is replaced. ``close`` removes
the socket, if it is still the one this listener made.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import select
import socket
import stat
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("mailtalk.serve")

BACKLOG: Final = 4096  # connections the kernel queues before accept()
ACCEPT_BATCH: Final = 256  # accept() calls per readiness event, then other work runs
PAUSE_WHEN_FULL: Final = 1.0  # seconds without accepting after EMFILE/ENFILE
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Descriptors a connection may hold at once besides its socket (a message open for
# RETR/FETCH, a maildrop lock, an APPEND's temporary file), and for everything else
# (listeners, journal, DNS, onward delivery, the index).
PER_CONNECTION: Final = 3
BESIDES: Final = 256
# sun_path holds 108 bytes on Linux, the last a NUL (104 on the BSDs and macOS).
MAX_SOCKET_PATH: Final = 107


class Listener:
    """One listening socket, accepting into ``factory``'s protocols."""

    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> None:
        self.sock = sock
        self.factory = factory
        self._loop = asyncio.get_running_loop()
        self._set_nodelay = not type(self._loop).__module__.startswith("uvloop")
        self._paused: asyncio.TimerHandle | None = None
        self._told_full = False  # the out-of-descriptors warning was logged
        self._closed = False
        # What each connection being made waits for (see _connect), until it is made.
        self._pending: set[asyncio.Future[Any]] = set()
        self.path: Path | None = None  # a Unix-domain socket's path (open_unix)
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we made
        self._accepted = _accepted_socket_class(sock)
        self._family, self._type = sock.family, sock.type
        # Whether another connection waits, asked before accepting it (see _accept).
        self._backlog = select.poll()
        self._backlog.register(sock.fileno(), select.POLLIN)

    @classmethod
    def open(cls, host: str, port: int, factory: Callable[[], asyncio.Protocol]) -> Listener:
        """Listen on ``host``:``port`` (OSError if it cannot); not accepting yet."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            name = host.strip("[]")
            # ASCII as bytes: a str is passed through the idna codec, loaded for it (1 ms)
            address = socket.getaddrinfo(name.encode() if name.isascii() else name, port,
                                         family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
                                         )[0][4]  # fmt: skip
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(sock, factory)

    @classmethod
    def open_unix(
        cls,
        path: Path,
        factory: Callable[[], asyncio.Protocol],
        mode: int = 0o600,
        group: int | None = None,
    ) -> Listener:
        """Listen on the Unix-domain socket ``path`` with ``mode`` (and ``group``'s gid);
        OSError, with a sentence as its strerror, if it cannot."""
        import tempfile  # here: it loads shutil, random, bz2 and lzma (3 ms of a start)

        path = Path(os.path.abspath(path))
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise OSError(errno.ENAMETOOLONG,
                          f"the path is longer than the {MAX_SOCKET_PATH} bytes a socket "
                          "address holds")  # fmt: skip
        _refuse_live_socket(path)
        try:
            private = Path(tempfile.mkdtemp(prefix=".mailtalk-", dir=path.parent))
        except OSError as error:
            raise OSError(error.errno, f"cannot make a socket in {path.parent}: "
                          f"{(error.strerror or str(error)).lower()}") from None  # fmt: skip
        staged = private / "socket"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(staged))
            os.chmod(staged, mode)
            if group is not None:
                try:
                    os.chown(staged, -1, group)
                except OSError as error:
                    raise OSError(error.errno, f"cannot give the socket group {group}: "
                                  f"{(error.strerror or str(error)).lower()}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
            os.rename(staged, path)  # atomic: a stale socket there is replaced at once
        except BaseException:
            sock.close()
            staged.unlink(missing_ok=True)
            raise
        finally:
            private.rmdir()
        listener = cls(sock, factory)
        listener.path = path
        made = path.stat()
        listener._inode = (made.st_dev, made.st_ino)
        return listener

    @property
    def address(self) -> tuple[Any, ...]:
        return tuple(self.sock.getsockname())

    def start(self) -> None:
        self._paused = None
        if not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting and close the socket; sessions already accepted go on."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.path is not None:
            self._remove_socket(self.path)

    def _remove_socket(self, path: Path) -> None:
        """Remove our socket file; one that another server has put there since stays."""
        try:
            now = path.lstat()
            if (now.st_dev, now.st_ino) == self._inode:
                path.unlink()
        except OSError as error:
            if error.errno != errno.ENOENT:
                log.warning("cannot remove the socket %s: %s", path, error.strerror or error)

    async def wait_closed(self) -> None:
        """Until the connections accepted have their transports (or failed to)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                # accept() itself would make the new socket's family and type enums
                # again: the listener's are known (see _accepted_socket_class)
                fd, _ = self.sock._accept()  # type: ignore[attr-defined]
                conn = self._accepted(self._family, self._type, 0, fd)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno in _OUT_OF_RESOURCES:
                    self._full(error)
                    return
                log.warning("accept() on %s failed: %s", self._where(), error.strerror or error)
                return
            self._told_full = False
            # connect_accepted_socket makes it non-blocking; uvloop sets TCP_NODELAY on
            # every TCP transport itself (two system calls a connection saved)
            if self._set_nodelay:
                set_nodelay(conn)
            self._connect(conn, self._loop.connect_accepted_socket(self.factory, conn))
            # Clients mostly come one at a time: an accept() that finds the backlog empty
            # raises BlockingIOError, and making that exception cost as much as the
            # rest of an accept. poll(0) says so without one.
            if not self._backlog.poll(0):
                return

    def _connect(self, conn: socket.socket, connecting: Coroutine[Any, Any, Any]) -> None:
        """Run the loop's ``connect_accepted_socket`` coroutine without a Task of its own:
        it makes the session and its transport, then awaits one future (the transport's
        ``connection_made`` done), and is resumed here when that is done. A Task, its
        registration, its steps and its done callback were 2 % of a connection's
        instructions. (The coroutine protocol a Task drives: a future is yielded to
        wait for it, None to let others run.)"""
        try:
            waited = connecting.send(None)
        except (StopIteration, asyncio.CancelledError):  # made; or the server stops
            return
        except OSError as error:  # the client went before its transport was made
            log.info("connection on %s lost at once: %s", self._where(), error)
            conn.close()
            return
        except Exception:
            log.exception("connection on %s failed", self._where())
            conn.close()
            return
        if waited is None:
            self._loop.call_soon(self._connect, conn, connecting)
            return
        self._pending.add(waited)
        waited.add_done_callback(functools.partial(self._made, conn, connecting))

    def _made(
        self, conn: socket.socket, connecting: Coroutine[Any, Any, Any], waited: asyncio.Future[Any]
    ) -> None:
        self._pending.discard(waited)
        self._connect(conn, connecting)

    def _full(self, error: OSError) -> None:
        """Out of descriptors: new clients wait in the backlog for a moment."""
        if not self._told_full:
            self._told_full = True
            log.warning(
                "%s: %s; not accepting for %g s (raise `ulimit -n` or lower "
                "--max-connections)", self._where(), (error.strerror or str(error)).lower(),
                PAUSE_WHEN_FULL,
            )
        self._loop.remove_reader(self.sock.fileno())
        self._paused = self._loop.call_later(PAUSE_WHEN_FULL, self.start)

    def _where(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host, port = self.address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _accepted_socket_class(listening: socket.socket) -> type[socket.socket]:
    """A socket class for what ``listening`` accepts, with its family and type as plain
    values, not properties: each read of ``socket.socket``'s makes an enum anew (two
    Python calls and an enum lookup), and accept() and uvloop's connect_accepted_socket
    read them five times a connection between them. (A listener's socket is
    non-blocking, so accept()'s setblocking(True) for a default timeout never applies.)"""
    return type(
        "AcceptedSocket",
        (socket.socket,),
        {"__slots__": (), "family": listening.family, "type": listening.type},
    )


def _refuse_live_socket(path: Path) -> None:
    """OSError if something is at ``path`` that must not be replaced: a file that is not
    a socket, or a socket another server still accepts on. A stale socket (nobody
    listening: a crashed server's) is left for the rename to replace."""
    try:
        found = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise OSError(errno.EEXIST, "the path exists and is not a socket; remove it or "
                      "choose another path")  # fmt: skip
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        log.info("replacing the stale socket %s (nobody listens on it)", path)
        return
    except OSError as error:
        if error.errno == errno.ENOENT:
            return  # gone since the lstat
        raise OSError(errno.EADDRINUSE, f"a socket is there that cannot be checked "
                      f"({(error.strerror or str(error)).lower()}); remove it if it is stale"
                      ) from None  # fmt: skip
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another server is listening on that socket")


def set_nodelay(conn: socket.socket) -> None:
    """Send small writes at once (no Nagle). asyncio sets TCP_NODELAY itself only on a
    socket whose ``proto`` is IPPROTO_TCP, which an accepted socket of a listener made with
    proto 0 is not: pipelined answers (POP3 RETR, IMAP FETCH) then waited for the client's
    delayed ACK, about 40 ms per batch (20x Dovecot on 10,000 pipelined RETRs)."""
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        # OSError: the client went already; its transport will say so
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def raise_descriptor_limit(max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard limit, as far as ``max_connections``
    needs; warn (once, one line) if the hard limit is below that."""
    try:
        import resource
    except ImportError:  # not on this platform: nothing to raise
        return
    need = max_connections * (1 + PER_CONNECTION) + BESIDES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target,
                        error)
            return
        log.info("open-files limit raised from %d to %d for --max-connections %d", soft,
                 target, max_connections)
    if target < need:
        log.warning("--max-connections %d may need %d open files, the hard limit is %d: "
                    "past it new clients wait", max_connections, need, hard)
