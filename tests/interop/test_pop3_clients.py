"""Real POP3 clients against ``mailtalk serve``: fetchmail, mpop, getmail6, curl, poplib, mailtalk.

Each test starts ``mailtalk serve`` as a subprocess on free loopback ports (POP3 with
STLS, POP3S, SMTP), puts messages in alice's Maildir the way an MDA would (or has
swaks deliver them over SMTP), and has a real client fetch them over plain POP3,
STLS and implicit TLS. Nothing here needs the real Postfix/Dovecot. A missing client
binary skips its tests, unless ``MAILTALK_REQUIRE_REAL_SERVERS=1``: then it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import poplib
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.clients import (
    client_env,
    mailtalk_command,
    read_line,
    require_binary,
    stop_process,
)

pytestmark = pytest.mark.interop

USER = "alice"
PASSWORD = "secret"
DOMAIN = "example.test"
TIMEOUT = 10

FIRST = b"From: bob@example.org\nTo: alice@example.test\nSubject: first\n\nfirst body\n.dotted\n"
SECOND = b"From: carol@example.org\nSubject: second\n\nsecond body\n.\nafter a lone dot\n"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def run_client(
    args: list[str], tmp_path: Path, stdin: str | bytes | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(
        args,
        input=data,
        capture_output=True,
        env=client_env(tmp_path, **env),
        timeout=TIMEOUT * 2,
        check=False,
        start_new_session=True,  # no controlling terminal: nobody can prompt
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


class Serve:
    """A ``mailtalk serve`` subprocess and what its --json line said."""

    def __init__(self, process: subprocess.Popen[bytes], info: dict[str, Any], stderr: Path):
        self.process = process
        self.info = info
        self.stderr_path = stderr
        self.root = Path(info["root"])

    def port(self, protocol: str) -> int:
        for listener in self.info["listeners"]:
            if listener["protocol"] == protocol:
                return int(listener["port"])
        raise KeyError(protocol)

    @property
    def cafile(self) -> Path:
        return self.root / "tls" / "ca.pem"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / USER / "Maildir"

    def stored(self) -> list[bytes]:
        """The messages in alice's Maildir (new/ and cur/), in name order."""
        paths = [p for sub in ("new", "cur") for p in (self.maildir / sub).glob("*")]
        return [p.read_bytes() for p in sorted(paths, key=lambda p: p.name)]

    _sequence = 0

    def deliver(self, data: bytes) -> str:
        """Put a message in alice's new/ as an MDA would; returns its name."""
        for sub in ("tmp", "new", "cur"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        Serve._sequence += 1
        name = f"{1700000000 + Serve._sequence}.M{Serve._sequence}P{os.getpid()}.interop"
        (self.maildir / "tmp" / name).write_bytes(data)
        os.rename(self.maildir / "tmp" / name, self.maildir / "new" / name)
        return name


@contextlib.contextmanager
def serve(tmp_path: Path, *args: str) -> Iterator[Serve]:
    """``mailtalk serve`` with POP3 (STLS), POP3S and SMTP on free ports, alice:secret."""
    root = tmp_path / "serve-root"
    stderr = tmp_path / "serve.stderr"
    process = subprocess.Popen(
        [
            *mailtalk_command(), "serve", "--root", str(root), "--json",
            "--pop3", "0", "--pop3s", "0", "--smtp", "0",
            "--user", f"{USER}:{PASSWORD}", "--domain", DOMAIN, *args,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr.open("wb"),
        env=client_env(tmp_path),
    )  # fmt: skip
    try:
        info = json.loads(read_line(process, TIMEOUT))
        yield Serve(process, info, stderr)
    finally:
        stop_process(process, TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


def assert_retrieved(output: bytes, message: bytes) -> None:
    """``message`` (stored with LF) arrived whole, dots unstuffed, in what a client wrote."""
    text = output.replace(b"\r\n", b"\n")
    assert message in text, f"{message!r} not in:\n{text.decode(errors='replace')}"


# ---------------------------------------------------------------------------
# fetchmail
# ---------------------------------------------------------------------------


def fetchmail(
    server: Serve,
    tmp_path: Path,
    *,
    port: int,
    tls: str = "",
    keep: bool = False,
    password: str = PASSWORD,
    extra: tuple[str, ...] = (),
) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """One fetchmail poll with an mda writing to a file; (result, what the mda got)."""
    binary = require_binary("fetchmail")
    out = tmp_path / "fetched.mbox"
    out.unlink(missing_ok=True)
    security = {
        "": 'sslproto ""',  # plain: no opportunistic STLS
        "stls": f'sslproto "tls1.2+" sslcertfile "{server.cafile}" sslcertck',
        "ssl": f'ssl sslcertfile "{server.cafile}" sslcertck',
    }[tls]
    # "localhost": fetchmail checks the certificate against DNS names only, not 127.0.0.1.
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll localhost protocol pop3 port {port}\n"
        f'  user "{USER}" password "{password}" is "{USER}" here\n'
        f"  {security}\n"
        f"  {'keep' if keep else 'no keep'} fetchall\n"
        f'  mda "cat >> {out}"\n'
    )
    rc.chmod(0o600)
    result = run_client(
        [
            binary, "--fetchmailrc", str(rc), "--nosyslog", "--nodetach", "--verbose",
            "--pidfile", str(tmp_path / "fetchmail.pid"), *extra,
        ],
        tmp_path,
    )  # fmt: skip
    return result, (out.read_bytes() if out.exists() else b"")


@pytest.mark.parametrize("keep", [True, False], ids=["keep", "no-keep"])
def test_fetchmail_plain(tmp_path: Path, keep: bool) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        server.deliver(SECOND)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"), keep=keep)
        assert result.returncode == 0, describe(result)
        log = result.stdout + result.stderr
        assert "2 messages for alice at localhost" in log, describe(result)
        assert "POP3> STLS" not in log
        assert_retrieved(fetched, FIRST)
        assert_retrieved(fetched, SECOND)
        assert fetched.index(b"first body") < fetched.index(b"second body")
        if keep:
            assert server.stored() == [FIRST, SECOND]
            assert "POP3< +OK Logging out, 0 messages deleted." in log
        else:
            assert server.stored() == []
            assert "POP3< +OK Logging out, 2 messages deleted." in log


def test_fetchmail_keep_on_the_command_line(tmp_path: Path) -> None:
    """``-k`` overrides the run-control ``no keep``: the messages stay."""
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"), extra=("-k",))
        assert result.returncode == 0, describe(result)
        assert_retrieved(fetched, FIRST)
        assert server.stored() == [FIRST]


def test_fetchmail_stls(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"), tls="stls")
        assert result.returncode == 0, describe(result)
        assert "POP3> STLS" in result.stdout
        assert "POP3< +OK Begin TLS negotiation now." in result.stdout
        assert_retrieved(fetched, FIRST)
        assert server.stored() == []


def test_fetchmail_pop3s(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3s"), tls="ssl")
        assert result.returncode == 0, describe(result)
        assert "POP3> STLS" not in result.stdout
        # the server knows --user's password in clear, so it offers CRAM-MD5, which
        # fetchmail ("auth any") takes before a plain USER/PASS
        assert "POP3> AUTH CRAM-MD5" in result.stdout
        assert "POP3> USER alice" not in result.stdout
        assert_retrieved(fetched, FIRST)
        assert server.stored() == []


def test_fetchmail_no_mail(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"))
        assert result.returncode == 1, describe(result)  # PS_NOMAIL
        assert fetched == b""


def test_fetchmail_wrong_password(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"), password="wrong")
        assert result.returncode == 3, describe(result)  # PS_AUTHFAIL
        assert "POP3< -ERR [AUTH] Authentication failed." in result.stdout
        assert fetched == b""
        assert server.stored() == [FIRST]


def test_fetchmail_lock_busy(tmp_path: Path) -> None:
    with serve(tmp_path, "--scenario", "lock-busy") as server:
        server.deliver(FIRST)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"))
        assert result.returncode == 9, describe(result)  # PS_LOCKBUSY
        assert "POP3< -ERR [IN-USE] Unable to lock maildrop" in result.stdout
        assert fetched == b""
        assert server.stored() == [FIRST]


def test_fetchmail_retr_fault_keeps_the_message(tmp_path: Path) -> None:
    rule = "pop3:retr#1=-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded"
    with serve(tmp_path, "--fault", rule) as server:
        server.deliver(FIRST)
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"))
        assert result.returncode != 0, describe(result)
        assert "POP3< -ERR [SYS/TEMP] Unable to copy mail spool file" in result.stdout
        assert fetched == b""
        assert server.stored() == [FIRST]  # never deleted when it was not fetched
        # The rule fires once per session: the next poll gets it.
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"))
        assert "POP3< -ERR [SYS/TEMP]" in result.stdout


def test_fetchmail_message_without_final_newline(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(b"Subject: no final newline\n\n.dot\nlast line")
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"))
        assert result.returncode == 0, describe(result)
        assert fetched.endswith(b"\n.dot\nlast line\n"), fetched
        assert server.stored() == []


def test_swaks_delivers_fetchmail_retrieves(tmp_path: Path) -> None:
    """End to end: SMTP into the server, POP3 out of it, through two real programs."""
    swaks_binary = require_binary("swaks")
    require_binary("fetchmail")
    with serve(tmp_path) as server:
        sent = run_client(
            [
                swaks_binary, "--server", f"127.0.0.1:{server.port('smtp')}",
                "--from", "bob@example.org", "--to", f"{USER}@{DOMAIN}",
                "--header", "Subject: end to end",
                "--body", "end-to-end body\n.leading dot\n..two dots",
            ],
            tmp_path,
        )  # fmt: skip
        assert sent.returncode == 0, describe(sent)
        [stored] = server.stored()
        assert b"\nSubject: end to end\n" in stored
        result, fetched = fetchmail(server, tmp_path, port=server.port("pop3"), tls="stls")
        assert result.returncode == 0, describe(result)
        # fetchmail puts its own Received: after the Return-Path: the rest is as stored.
        return_path, _, rest = stored.partition(b"\n")
        assert fetched.startswith(return_path + b"\n")
        assert_retrieved(fetched, rest)
        lines = fetched.split(b"\n")
        for line in (b"end-to-end body", b".leading dot", b"..two dots"):
            assert line in lines, fetched
        assert server.stored() == []


# ---------------------------------------------------------------------------
# curl
# ---------------------------------------------------------------------------


def curl(url: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("curl")
    return run_client(
        [
            binary, "--silent", "--show-error", "--verbose", "--max-time", str(TIMEOUT),
            "--user", f"{USER}:{PASSWORD}", *options, url,
        ],
        tmp_path,
    )  # fmt: skip


def test_curl_plain_retr(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        server.deliver(SECOND)
        result = curl(f"pop3://127.0.0.1:{server.port('pop3')}/2", tmp_path)
        assert result.returncode == 0, describe(result)
        assert result.stdout.encode() == SECOND.replace(b"\n", b"\r\n")
        assert "> STLS" not in result.stderr
        assert server.stored() == [FIRST, SECOND]  # RETR alone deletes nothing


def test_curl_list(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        server.deliver(SECOND)
        result = curl(f"pop3://127.0.0.1:{server.port('pop3')}/", tmp_path)
        assert result.returncode == 0, describe(result)
        sizes = [len(m.replace(b"\n", b"\r\n")) for m in (FIRST, SECOND)]
        assert result.stdout == f"1 {sizes[0]}\r\n2 {sizes[1]}\r\n"


def test_curl_stls(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        result = curl(
            f"pop3://127.0.0.1:{server.port('pop3')}/1", tmp_path,
            "--ssl-reqd", "--cacert", str(server.cafile),
        )  # fmt: skip
        assert result.returncode == 0, describe(result)
        assert "> STLS" in result.stderr
        assert "< +OK Begin TLS negotiation now." in result.stderr
        assert result.stdout.encode() == FIRST.replace(b"\n", b"\r\n")


def test_curl_pop3s(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(SECOND)
        result = curl(
            f"pop3s://127.0.0.1:{server.port('pop3s')}/1", tmp_path, "--cacert", str(server.cafile)
        )
        assert result.returncode == 0, describe(result)
        assert result.stdout.encode() == SECOND.replace(b"\n", b"\r\n")


def test_curl_pop3s_checks_the_certificate(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(SECOND)
        result = curl(f"pop3s://127.0.0.1:{server.port('pop3s')}/1", tmp_path)
        assert result.returncode == 60, describe(result)  # CURLE_PEER_FAILED_VERIFICATION


def test_curl_wrong_password(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        result = run_client(
            [
                require_binary("curl"), "--silent", "--show-error", "--verbose",
                "--user", f"{USER}:wrong", f"pop3://127.0.0.1:{server.port('pop3')}/1",
            ],
            tmp_path,
        )  # fmt: skip
        assert result.returncode == 67, describe(result)  # CURLE_LOGIN_DENIED
        assert "< -ERR [AUTH] Authentication failed." in result.stderr


def test_curl_dele(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        server.deliver(SECOND)
        result = curl(
            f"pop3://127.0.0.1:{server.port('pop3')}/1",
            tmp_path,
            "--request",
            "DELE",
            "--list-only",
        )
        assert result.returncode == 0, describe(result)
        assert "> DELE 1" in result.stderr
        assert server.stored() == [SECOND]


# ---------------------------------------------------------------------------
# mpop
# ---------------------------------------------------------------------------


def local_maildir(path: Path, owner: str | None = None) -> Path:
    """An empty Maildir for a client to deliver into (owned by ``owner`` if given)."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    if owner is not None:
        for directory in (path, *(path / sub for sub in ("cur", "new", "tmp"))):
            shutil.chown(directory, owner)
    return path


def local_messages(path: Path) -> list[bytes]:
    """The messages a client delivered into the Maildir ``path``, oldest first."""
    files = [p for sub in ("new", "cur") for p in (path / sub).glob("*")]
    return [p.read_bytes() for p in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))]


def mpop(
    server: Serve, tmp_path: Path, *, starttls: bool, keep: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[bytes]]:
    """One ``mpop`` run into a Maildir over POP3S or STLS; (result, what it delivered).

    mpop verifies the certificate against ``tls_trust_file`` and, being told
    ``host 127.0.0.1``, against the IP address in its SAN.
    """
    binary = require_binary("mpop")
    maildir = local_maildir(tmp_path / "mpop-maildir")
    rc = tmp_path / "mpoprc"
    rc.write_text(
        "defaults\n"
        "timeout 10\n"
        "account alice\n"
        "host 127.0.0.1\n"
        f"port {server.port('pop3' if starttls else 'pop3s')}\n"
        f"user {USER}\n"
        f"password {PASSWORD}\n"
        "tls on\n"
        f"tls_starttls {'on' if starttls else 'off'}\n"
        f"tls_trust_file {server.cafile}\n"
        f"delivery maildir {maildir}\n"
        f"keep {'on' if keep else 'off'}\n"
        f"uidls_file {tmp_path / 'mpop-uidls'}\n"
    )
    rc.chmod(0o600)
    # mpop's own `timeout` does not cover a TLS read that never completes.
    result = run_logged(
        [binary, "-C", str(rc), "--debug", "alice"],
        tmp_path,
        f"mpop ({'STLS' if starttls else 'POP3S'})",
        server,
    )
    return result, local_messages(maildir)


def run_logged(
    args: list[str], tmp_path: Path, what: str, server: Serve, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a client with its output (stdout and stderr together) going to a file as it
    comes, so that a client that hangs fails the test with what it had said so far.

    stdbuf makes a C client's stdio line-buffered; PYTHONUNBUFFERED a Python one's.
    """
    if shutil.which("stdbuf"):
        args = ["stdbuf", "-oL", "-eL", *args]
    log = tmp_path / f"{Path(args[-1]).name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=client_env(tmp_path, PYTHONUNBUFFERED="1", **env),
            start_new_session=True,  # no controlling terminal: nobody can prompt
        )
        try:
            returncode = process.wait(timeout=TIMEOUT * 3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(
                f"{what} did not finish within {TIMEOUT * 3}s; its output ends:\n"
                f"{log.read_text(errors='replace')[-1500:]}\n"
                f"--- mailtalk serve's stderr ends:\n{server.stderr[-800:]}",
                pytrace=False,
            )
    return subprocess.CompletedProcess(args, returncode, log.read_text(errors="replace"), "")


def assert_delivered_intact(delivered: bytes, stored: bytes) -> None:
    """What a client wrote is the stored message with its own headers on top.

    mpop puts a Received: line (two continuation lines) first; the rest must be
    the message byte for byte (LF line ends, dots unstuffed, no CR added).
    """
    assert delivered.endswith(stored), f"{stored!r} is not the end of {delivered!r}"
    added = delivered[: len(delivered) - len(stored)]
    assert b"\n\n" not in added, added  # only header lines were added


def test_mpop_pop3s_keep_then_delete(tmp_path: Path) -> None:
    """mpop with ``tls on``, ``tls_starttls off``: POP3S, UIDL, keep, then delete."""
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        server.deliver(SECOND)
        result, delivered = mpop(server, tmp_path, starttls=False)
        assert result.returncode == 0, describe(result)
        assert "--> UIDL" in result.stdout, describe(result)
        assert "--> STLS" not in result.stdout
        assert len(delivered) == 2, describe(result)
        assert_delivered_intact(delivered[0], FIRST)
        assert_delivered_intact(delivered[1], SECOND)
        assert server.stored() == [FIRST, SECOND]

        # Its UIDL list says both were seen: the next run fetches nothing.
        result, delivered = mpop(server, tmp_path, starttls=False)
        assert result.returncode == 0, describe(result)
        assert len(delivered) == 2, describe(result)
        assert "--> RETR" not in result.stdout, describe(result)

        # keep off: mpop deletes what it has (already) retrieved.
        result, _ = mpop(server, tmp_path, starttls=False, keep=False)
        assert result.returncode == 0, describe(result)
        assert "--> DELE 1" in result.stdout and "--> DELE 2" in result.stdout
        assert server.stored() == []


def test_mpop_stls(tmp_path: Path) -> None:
    """mpop with ``tls_starttls on`` (issue 11 item 1).

    mpop sends STLS, completes TLS 1.3 and sends CAPA in the same TCP segment
    as the end of its handshake. The server must answer that CAPA, not wait for
    more bytes until its idle timeout.
    """
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        result, delivered = mpop(server, tmp_path, starttls=True, keep=False)
        assert result.returncode == 0, describe(result)
        session = result.stdout
        assert "--> STLS" in session
        # CAPA again after TLS, answered; then the login and the retrieval.
        assert session.count("--> CAPA") == 2, describe(result)
        assert session.index("--> STLS") < session.rindex("--> CAPA")
        capa_after_tls = session[session.rindex("--> CAPA") :].split("<-- .")[0]
        assert "<-- USER" in capa_after_tls and "<-- STLS" not in capa_after_tls, session
        assert [len(delivered)] == [1], describe(result)
        assert_delivered_intact(delivered[0], FIRST)
        assert server.stored() == []


# ---------------------------------------------------------------------------
# getmail6
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def getmail_maildir(tmp_path: Path) -> Iterator[Path]:
    """An empty Maildir getmail can deliver into.

    getmail refuses to deliver as root; then it delivers as ``nobody`` (its
    ``user`` option), who cannot enter pytest's private tmp_path: the Maildir is
    then in a directory of its own under the system's temporary directory.
    """
    if os.geteuid() != 0:
        yield local_maildir(tmp_path / "getmail-maildir")
        return
    parent = Path(tempfile.mkdtemp(prefix="mailtalk-getmail-"))
    try:
        parent.chmod(0o711)
        yield local_maildir(parent / "Maildir", owner="nobody")
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def getmail_rc(
    tmp_path: Path, retriever: str, port: int, cafile: Path, maildir: Path, extra: str = ""
) -> Path:
    """A getmail6 rc file: ``retriever`` over verified TLS into ``maildir``, keeping mail."""
    as_nobody = "user = nobody\n" if os.geteuid() == 0 else ""
    rc = tmp_path / f"getmailrc-{retriever}"
    rc.write_text(
        "[retriever]\n"
        f"type = {retriever}\n"
        "server = 127.0.0.1\n"
        f"port = {port}\n"
        f"username = {USER}\n"
        f"password = {PASSWORD}\n"
        f"ca_certs = {cafile}\n"
        f"{extra}"
        "\n[destination]\n"
        "type = Maildir\n"
        f"path = {maildir}/\n"
        f"{as_nobody}"
        "\n[options]\n"
        "delete = false\n"
        "read_all = false\n"
        "verbose = 2\n"
    )
    rc.chmod(0o600)
    return rc


def getmail(rc: Path, tmp_path: Path, server: Serve) -> subprocess.CompletedProcess[str]:
    binary = require_binary("getmail")
    state = tmp_path / "getmail-state"
    state.mkdir(exist_ok=True)
    args = [binary, "--rcfile", str(rc), "--getmaildir", str(state)]
    return run_logged(args, tmp_path, "getmail", server)


def assert_getmail_intact(delivered: bytes, stored: bytes) -> None:
    """getmail adds Delivered-To, Return-Path and Received above the message: the rest is it."""
    head, _, body = delivered.partition(b"\n\n")
    stored_head, _, stored_body = stored.partition(b"\n\n")
    assert body == stored_body, (body, stored_body)
    lines = head.split(b"\n")
    for line in stored_head.split(b"\n"):
        assert line in lines, (line, delivered)


def test_getmail_pop3_ssl_retriever(tmp_path: Path) -> None:
    """getmail6's SimplePOP3SSLRetriever into a Maildir; a second run gets nothing new."""
    with serve(tmp_path) as server, contextlib.ExitStack() as stack:
        server.deliver(FIRST)
        server.deliver(SECOND)
        maildir = stack.enter_context(getmail_maildir(tmp_path))
        rc = getmail_rc(
            tmp_path, "SimplePOP3SSLRetriever", server.port("pop3s"), server.cafile, maildir
        )
        result = getmail(rc, tmp_path, server)
        assert result.returncode == 0, describe(result)
        assert "2 messages (" in result.stdout, describe(result)
        delivered = sorted(local_messages(maildir), key=lambda m: b"second" in m)
        assert len(delivered) == 2, describe(result)
        assert_getmail_intact(delivered[0], FIRST)
        assert_getmail_intact(delivered[1], SECOND)
        assert server.stored() == [FIRST, SECOND]  # delete = false

        # getmail remembers the UIDLs it fetched (read_all = false).
        result = getmail(rc, tmp_path, server)
        assert result.returncode == 0, describe(result)
        assert "0 messages" in result.stdout, describe(result)
        assert len(local_messages(maildir)) == 2


# ---------------------------------------------------------------------------
# poplib
# ---------------------------------------------------------------------------


def _poplib_session(client: poplib.POP3) -> list[bytes]:
    try:
        client.user(USER)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        return [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    finally:
        client.quit()


def test_poplib_plain(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        server.deliver(SECOND)
        client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=TIMEOUT)
        assert _poplib_session(client) == [m.replace(b"\n", b"\r\n") for m in (FIRST, SECOND)]


def test_poplib_stls(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(SECOND)
        client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=TIMEOUT)
        client.stls(context=ssl.create_default_context(cafile=str(server.cafile)))
        assert _poplib_session(client) == [SECOND.replace(b"\n", b"\r\n")]


def test_poplib_pop3s(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        context = ssl.create_default_context(cafile=str(server.cafile))
        client = poplib.POP3_SSL(
            "127.0.0.1", server.port("pop3s"), timeout=TIMEOUT, context=context
        )
        assert _poplib_session(client) == [FIRST.replace(b"\n", b"\r\n")]


def test_poplib_apop(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=TIMEOUT)
        try:
            client.apop(USER, PASSWORD)
            assert client.stat()[0] == 1
            client.dele(1)
        finally:
            client.quit()
        assert server.stored() == []


# ---------------------------------------------------------------------------
# mailtalk itself, in pipe mode
# ---------------------------------------------------------------------------


def mailtalk_pop3(
    server: Serve, tmp_path: Path, lines: list[str], *options: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_client(
        [*mailtalk_command(), "pop3", f"127.0.0.1:{server.port('pop3')}", *options],
        tmp_path,
        stdin="".join(line + "\n" for line in lines),
        **env,
    )


def test_mailtalk_pipe_user_pass(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        size = len(FIRST.replace(b"\n", b"\r\n"))
        result = mailtalk_pop3(
            server, tmp_path, ["USER alice", f"PASS {PASSWORD}", "STAT", "RETR 1", "DELE 1", "QUIT"]
        )
        assert result.returncode == 0, describe(result)
        out = result.stdout.splitlines()
        assert "C: PASS ***" in out
        assert f"S: +OK Logged in: 1 messages ({size} octets)" in out
        assert f"S: +OK 1 {size}" in out
        assert f"S: +OK {size} octets" in out
        assert "S: first body" in out
        assert "S: ..dotted" in out  # the transcript shows the wire, still dot-stuffed
        assert "S: +OK Logging out, 1 messages deleted." in out
        assert PASSWORD not in result.stdout + result.stderr
        assert server.stored() == []


def test_mailtalk_pipe_auth_plain(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(SECOND)
        result = mailtalk_pop3(
            server, tmp_path, [f":auth plain {USER}", "UIDL", "QUIT"], MAILTALK_PASSWORD=PASSWORD
        )
        assert result.returncode == 0, describe(result)
        out = result.stdout.splitlines()
        assert "C: AUTH PLAIN" in out
        assert any(line.startswith("S: +OK Logged in: 1 messages") for line in out), out
        assert "# authenticated as alice" in result.stderr
        assert PASSWORD not in result.stdout + result.stderr


def test_mailtalk_pipe_starttls(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.deliver(FIRST)
        result = mailtalk_pop3(
            server, tmp_path, ["USER alice", f"PASS {PASSWORD}", "STAT", "QUIT"],
            "--starttls", "--cafile", str(server.cafile),
        )  # fmt: skip
        assert result.returncode == 0, describe(result)
        out = result.stdout.splitlines()
        assert "C: STLS" in out
        assert "S: +OK Begin TLS negotiation now." in out
        assert any(line.startswith("S: +OK 1 ") for line in out), out


def test_mailtalk_pipe_wrong_password_exits_one(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        result = mailtalk_pop3(server, tmp_path, ["USER alice", "PASS wrong", "QUIT"])
        assert result.returncode == 1, describe(result)
        assert "S: -ERR [AUTH] Authentication failed." in result.stdout.splitlines()


def test_mailtalk_pipe_scenario_quota_exceeded(tmp_path: Path) -> None:
    with serve(tmp_path, "--scenario", "quota-exceeded") as server:
        server.deliver(FIRST)
        result = mailtalk_pop3(server, tmp_path, ["USER alice", f"PASS {PASSWORD}", "QUIT"])
        assert result.returncode == 1, describe(result)
        assert (
            "S: -ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded"
            in result.stdout.splitlines()
        )


def test_serve_login_delay_option(tmp_path: Path) -> None:
    with serve(tmp_path, "--login-delay", "60") as server:
        first = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=TIMEOUT)
        assert "LOGIN-DELAY" in first.capa()
        first.user(USER)
        first.pass_(PASSWORD)
        first.quit()
        second = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=TIMEOUT)
        try:
            second.user(USER)
            with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\]"):
                second.pass_(PASSWORD)
        finally:
            second.quit()


def test_serve_quota_option(tmp_path: Path) -> None:
    with serve(tmp_path, "--quota", "10") as server:
        server.deliver(FIRST)
        client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=TIMEOUT)
        try:
            client.user(USER)
            with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                client.pass_(PASSWORD)
        finally:
            client.quit()
