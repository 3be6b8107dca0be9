"""The servers' scrypt runs in a worker process (``mailtalk.servers.scrypt_worker``).

What must hold: the verdicts are those of scrypt in-process; the serving process never
holds scrypt's 16 MiB; the worker holds no secret in its argv or environment; it ends
with the server, however the server ends; a dead worker costs no login.
"""

from __future__ import annotations

import hashlib
import os
import poplib
import signal
import time
from pathlib import Path

import pytest

from mailtalk.servers import scrypt_worker
from mailtalk.servers.users import Users, hash_password
from tests.servers.test_serve_command import serving

PASSWORD = "worker: correct horse"
SALT = b"0123456789abcdef"


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def workers_of(pid: int) -> list[int]:
    return [child for child in children(pid)
            if b"scrypt_worker.py" in Path(f"/proc/{child}/cmdline").read_bytes()]


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def workers() -> object:
    scrypt_worker.use_workers()
    yield scrypt_worker
    scrypt_worker.stop_workers()


def test_a_worker_derives_what_hashlib_derives(workers: object) -> None:
    for password in (b"pw", PASSWORD.encode(), "pässwörd".encode(), b""):
        expected = hashlib.scrypt(password, salt=SALT, n=2**10, r=8, p=1, dklen=32)
        assert scrypt_worker.derive(password, SALT, 2**10, 8, 1, 32) == expected
    assert len(workers_of(os.getpid())) == 1  # kept for the next check, not one each


def test_verdicts_through_the_worker(tmp_path: Path, workers: object) -> None:
    path = tmp_path / "control" / "users"
    path.parent.mkdir(parents=True)
    path.write_text(f"alice:{hash_password(PASSWORD)}\n")
    users = Users.load(tmp_path)
    assert users.verify("alice", PASSWORD)
    assert not users.verify("alice", PASSWORD + "x")
    assert not users.verify("nobody", PASSWORD)
    (worker,) = workers_of(os.getpid())
    assert PASSWORD.encode() not in Path(f"/proc/{worker}/cmdline").read_bytes()
    assert Path(f"/proc/{worker}/environ").read_bytes() == b""


def test_a_killed_worker_costs_no_check(workers: object) -> None:
    expected = hashlib.scrypt(b"pw", salt=SALT, n=2**10, r=8, p=1, dklen=32)
    assert scrypt_worker.derive(b"pw", SALT, 2**10, 8, 1, 32) == expected
    (worker,) = workers_of(os.getpid())
    os.kill(worker, signal.SIGKILL)
    assert gone(worker, 5.0)
    assert scrypt_worker.derive(b"pw", SALT, 2**10, 8, 1, 32) == expected  # redone here
    assert scrypt_worker.derive(b"pw", SALT, 2**10, 8, 1, 32) == expected  # a new worker
    assert len(workers_of(os.getpid())) == 1


def test_bad_parameters_fail_as_they_do_in_process(workers: object) -> None:
    with pytest.raises(ValueError):
        scrypt_worker.derive(b"pw", SALT, 3, 8, 1, 32)  # n not a power of two


def test_serve_keeps_scrypt_out_of_its_memory_and_the_worker_ends_with_it(
    tmp_path: Path,
) -> None:
    """A login through POP3 leaves ``mailtalk serve``'s peak memory well under scrypt's
    16 MiB more than at start; killing the server (-9, nothing to clean up) ends its
    worker, which only sees its pipe's end."""
    root = tmp_path / "root"
    args = ("--pop3", "0", "--smtp", "0", "--user", f"alice:{PASSWORD}",
            "--user", "bob:bobs password")
    with serving(tmp_path, root, *args):
        pass  # the root and its users file exist: the next start checks, not hashes
    path = root / "control" / "users"
    # bob's password now only in the file: his logins run scrypt (in the worker).
    with serving(tmp_path, root, "--pop3", "0", "--smtp", "0",
                 "--user", f"alice:{PASSWORD}") as server:
        pid = server.process.pid
        assert "bob:" in path.read_text()
        before = status_kib(pid, "VmHWM")
        for user, password, ok in (("bob", "bobs password", True), ("alice", PASSWORD, True),
                                   ("bob", "wrong", False)):
            pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
            pop.user(user)
            if ok:
                pop.pass_(password)
            else:
                with pytest.raises(poplib.error_proto, match="Authentication failed"):
                    pop.pass_(password)
            pop.quit()
        assert status_kib(pid, "VmHWM") - before < 8 * 1024  # scrypt's is 16 MiB
        (worker,) = workers_of(pid)
        assert PASSWORD.encode() not in Path(f"/proc/{worker}/cmdline").read_bytes()
        os.kill(pid, signal.SIGKILL)
        server.process.wait()
        assert gone(worker, 5.0)
