"""Real IMAP clients against mailtalk's IMAP server: imaplib, curl, fetchmail and mbsync.

Every client runs over the three transports the server offers: plain IMAP (the
143-style listener), STARTTLS on that listener, and implicit TLS (IMAPS), trusting
the servers' local CA (``servers.cafile``). Mail is delivered first over SMTP to
the same servers, so each test also crosses SMTP -> Maildir -> IMAP. The course's
end-to-end path (swaks -> SMTP -> fetchmail over POP3 -> IMAP) and POP3/IMAP
sessions on the same INBOX at once are covered too, and ``mailtalk serve`` runs as
a subprocess for one flow.

The servers listen on free loopback ports: nothing here needs the real
Postfix/Dovecot. A missing client binary skips its tests (``require_binary``),
unless ``MAILTALK_REQUIRE_REAL_SERVERS=1``: then it fails.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import imaplib
import json
import os
import poplib
import re
import select
import signal
import smtplib
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.clients import mailtalk_command, require_binary

pytestmark = pytest.mark.interop

USER = "alice"
PASSWORD = "secret"
DOMAIN = "example.test"
ALICE = f"{USER}@{DOMAIN}"
SENDER = "bob@example.org"
TIMEOUT = 10
TRANSPORTS = ["plain", "starttls", "imaps"]

# mbsync flag letters in Maildir file names (and IMAP's names for them).
MAILDIR_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def client_env(tmp_path: Path) -> dict[str, str]:
    """The environment for a client: no MAILTALK_* settings, a private HOME."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAILTALK_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return env


def run_client(
    args: list[str], tmp_path: Path, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        args,
        capture_output=True,
        env=client_env(tmp_path),
        timeout=timeout,
        check=False,
        start_new_session=True,  # no controlling terminal: nobody can prompt
    )


def describe(result: subprocess.CompletedProcess[bytes]) -> str:
    return (
        f"{result.args}\nexit {result.returncode}\n--- stdout\n"
        f"{result.stdout.decode('utf-8', 'replace')[-4000:]}\n--- stderr\n"
        f"{result.stderr.decode('utf-8', 'replace')[-4000:]}"
    )


def client_context(cafile: Path | str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def make_message(subject: str, message_id: str, body: str = "body line") -> bytes:
    lines = [
        f"From: {SENDER}",
        f"To: {ALICE}",
        f"Subject: {subject}",
        f"Message-ID: <{message_id}>",
        "",
        body,
        ".a line starting with a dot",
    ]
    return "".join(line + "\r\n" for line in lines).encode()


def deliver(servers: Any, subject: str, message_id: str, port: int | None = None) -> None:
    """Deliver a message to alice with smtplib."""
    with smtplib.SMTP("127.0.0.1", port or servers.port("smtp"), timeout=TIMEOUT) as client:
        client.sendmail(SENDER, [ALICE], make_message(subject, message_id))


def maildir_of(servers: Any) -> Path:
    return Path(servers.root) / "mail" / USER / "Maildir"


def maildir_files(folder: Path) -> list[Path]:
    return sorted(
        (p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()),
        key=lambda p: (p.stat().st_mtime_ns, p.name),
    )


def message_id_of(raw: bytes) -> str:
    value = email.message_from_bytes(raw, policy=email.policy.compat32)["Message-ID"]
    assert value, f"no Message-ID in {raw[:300]!r}"
    return value.strip()


@contextlib.contextmanager
def imap_session(servers: Any, transport: str = "plain") -> Iterator[imaplib.IMAP4]:
    """A logged-in imaplib session over ``transport``; LOGOUT at the end."""
    if transport == "imaps":
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
            "127.0.0.1", servers.port("imaps"), ssl_context=client_context(servers.cafile),
            timeout=TIMEOUT,
        )  # fmt: skip
    else:
        client = imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=TIMEOUT)
        if transport == "starttls":
            assert "STARTTLS" in client.capabilities
            typ, _ = client.starttls(ssl_context=client_context(servers.cafile))
            assert typ == "OK"
            assert isinstance(client.sock, ssl.SSLSocket)
    typ, _ = client.login(USER, PASSWORD)
    assert typ == "OK"
    try:
        yield client
    finally:
        with contextlib.suppress(imaplib.IMAP4.abort, OSError):
            client.logout()


def ok(response: tuple[str, list[Any]]) -> list[Any]:
    typ, data = response
    assert typ == "OK", response
    return data


def server_state(servers: Any, folder: str) -> dict[str, frozenset[str]]:
    """Message-ID -> flags (without \\Recent) of ``folder`` on the server, over IMAP."""
    with imap_session(servers) as client:
        ok(client.select(folder, readonly=True))
        typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        state: dict[str, frozenset[str]] = {}
        if typ == "OK" and data != [None]:
            for item in data:
                if not isinstance(item, tuple):
                    continue
                head, literal = item
                flags = re.search(rb"FLAGS \(([^)]*)\)", head)
                assert flags, head
                names = frozenset(flags.group(1).decode().split()) - {"\\Recent"}
                state[message_id_of(literal)] = names
        return state


def local_state(folder: Path) -> dict[str, frozenset[str]]:
    """Message-ID -> flags of a local Maildir folder, from the file names."""
    state: dict[str, frozenset[str]] = {}
    for path in maildir_files(folder):
        _, _, info = path.name.partition(":2,")
        state[message_id_of(path.read_bytes())] = frozenset(MAILDIR_FLAGS[c] for c in info)
    return state


@pytest.fixture
def servers(mailtalk_servers: Callable[..., Any]) -> Any:
    """SMTP, POP3, IMAP and IMAPS; alice:secret; local domain example.test."""
    return mailtalk_servers(
        smtp=0, pop3=0, imap=0, imaps=0, users=[(USER, PASSWORD)], domains=[DOMAIN]
    )


# ---------------------------------------------------------------------------
# imaplib
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_imaplib_full_session(servers: Any, transport: str) -> None:
    deliver(servers, "first", "first@example.org")
    deliver(servers, "second", "second@example.org")
    # Read now: SELECT moves the files from new/ to cur/ (renaming them).
    first_raw, second_raw = (p.read_bytes() for p in maildir_files(maildir_of(servers)))
    with imap_session(servers, transport) as client:
        listed = ok(client.list())
        assert b'"." "INBOX"' in b" ".join(listed), listed
        assert ok(client.select("INBOX")) == [b"2"]
        assert ok(client.search(None, "ALL")) == [b"1 2"]
        assert ok(client.search(None, "SUBJECT", "second")) == [b"2"]
        assert ok(client.search(None, "UNSEEN")) == [b"1 2"]

        # BODY.PEEK[HEADER] leaves \Seen alone; the header is the Maildir one in CRLF form.
        data = ok(client.fetch("1", "(FLAGS BODY.PEEK[HEADER])"))
        head, header = data[0]
        assert b"\\Seen" not in head
        expected_header = first_raw.split(b"\n\n", 1)[0].replace(b"\n", b"\r\n")
        assert header == expected_header + b"\r\n\r\n"
        assert ok(client.search(None, "SEEN")) == [b""]

        # RFC822 returns the whole message (CRLF) and sets \Seen.
        data = ok(client.fetch("2", "(RFC822)"))
        assert data[0][1] == second_raw.replace(b"\n", b"\r\n")
        flags = ok(client.fetch("2", "(FLAGS)"))
        assert b"\\Seen" in flags[0], flags
        assert ok(client.search(None, "SEEN")) == [b"2"]

        # STORE and COPY to a created folder.
        stored = ok(client.store("1", "+FLAGS", "(\\Flagged)"))
        assert b"\\Flagged" in stored[0], stored
        ok(client.create("Archive"))
        assert b'"." "Archive"' in b" ".join(ok(client.list()))
        copied = ok(client.copy("1:2", "Archive"))
        assert b"COPYUID" in copied[0], copied  # UIDPLUS
        ok(client.store("1", "+FLAGS", "(\\Deleted)"))
        assert ok(client.expunge()) == [b"1"]
        assert ok(client.search(None, "ALL")) == [b"1"]
        data = ok(client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"))
        assert message_id_of(data[0][1]) == "<second@example.org>"

        assert ok(client.select("Archive", readonly=True)) == [b"2"]
        data = ok(client.fetch("1:2", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"))
        copies = {message_id_of(item[1]): item[0] for item in data if isinstance(item, tuple)}
        assert set(copies) == {"<first@example.org>", "<second@example.org>"}
        # COPY keeps the flags: \Flagged on the first, \Seen on the second.
        assert b"\\Flagged" in copies["<first@example.org>"]
        assert b"\\Seen" in copies["<second@example.org>"]
        typ, bye = client.logout()
        assert typ == "BYE", bye

    # On disk: Maildir++ folder ".Archive", two messages; INBOX keeps one, seen.
    archive = maildir_of(servers) / ".Archive"
    assert (archive / "maildirfolder").exists()
    assert len(maildir_files(archive)) == 2
    [left] = maildir_files(maildir_of(servers))
    assert left.name.endswith(":2,S"), left.name


def test_imaps_refuses_an_untrusted_client_context(servers: Any) -> None:
    """Sanity check: the TLS tests above really verify (a default context rejects the CA)."""
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(
            "127.0.0.1", servers.port("imaps"), ssl_context=ssl.create_default_context(),
            timeout=TIMEOUT,
        )  # fmt: skip


# ---------------------------------------------------------------------------
# curl
# ---------------------------------------------------------------------------


def curl(
    servers: Any, tmp_path: Path, url: str, *options: str
) -> subprocess.CompletedProcess[bytes]:
    binary = require_binary("curl")
    return run_client(
        [binary, "--silent", "--show-error", "--max-time", str(TIMEOUT),
         "--user", f"{USER}:{PASSWORD}", "--url", url, *options],
        tmp_path,
    )  # fmt: skip


def curl_url(servers: Any, transport: str, path: str) -> tuple[str, list[str]]:
    cafile = str(servers.cafile)
    if transport == "plain":
        return f"imap://127.0.0.1:{servers.port('imap')}/{path}", []
    if transport == "starttls":
        return f"imap://127.0.0.1:{servers.port('imap')}/{path}", ["--ssl-reqd", "--cacert", cafile]
    return f"imaps://127.0.0.1:{servers.port('imaps')}/{path}", ["--cacert", cafile]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_curl_examine_and_fetch(servers: Any, tmp_path: Path, transport: str) -> None:
    deliver(servers, "for curl", "curl1@example.org")
    deliver(servers, "for curl 2", "curl2@example.org")
    url, options = curl_url(servers, transport, "INBOX")
    result = curl(servers, tmp_path, url, *options, "-X", "EXAMINE INBOX")
    assert result.returncode == 0, describe(result)
    out = result.stdout.decode()
    assert "* 2 EXISTS" in out, out
    assert re.search(r"\* OK \[UIDVALIDITY \d+\]", out), out
    assert "* OK [UIDNEXT 3]" in out, out

    for uid in range(1, len(maildir_files(maildir_of(servers))) + 1):
        url, options = curl_url(servers, transport, f"INBOX;UID={uid}")
        result = curl(servers, tmp_path, url, *options)
        assert result.returncode == 0, describe(result)
        raw = maildir_files(maildir_of(servers))[uid - 1].read_bytes()
        assert b"\r\n" not in raw
        assert result.stdout == raw.replace(b"\n", b"\r\n")
    # curl fetches with BODY[] (not PEEK): both are \Seen now.
    assert all(p.name.endswith(":2,S") for p in maildir_files(maildir_of(servers)))


def test_curl_wrong_password_fails(servers: Any, tmp_path: Path) -> None:
    binary = require_binary("curl")
    result = run_client(
        [binary, "--silent", "--show-error", "--max-time", str(TIMEOUT), "--user", f"{USER}:wrong",
         f"imap://127.0.0.1:{servers.port('imap')}/INBOX", "-X", "EXAMINE INBOX"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 67, describe(result)  # CURLE_LOGIN_DENIED


# ---------------------------------------------------------------------------
# fetchmail
# ---------------------------------------------------------------------------


def fetchmail_rc(
    servers: Any, tmp_path: Path, transport: str, out: Path, protocol: str = "imap"
) -> Path:
    cafile = str(servers.cafile)
    # fetchmail checks the certificate name itself and knows no IP address SANs:
    # "Server CommonName mismatch: localhost != 127.0.0.1", so name the certificate.
    verify = f'sslcertck sslcertfile "{cafile}" sslcommonname "localhost"'
    if transport == "plain":
        port, tls = servers.port(protocol), 'sslproto ""'  # '' disables opportunistic STARTTLS
    elif transport == "starttls":
        # Without "ssl", an sslproto other than '' means STARTTLS, and requires it.
        port, tls = servers.port(protocol), f'sslproto "tls1.2+" {verify}'
    else:  # implicit TLS: imaps / pop3s
        port, tls = servers.port(protocol + "s"), f"ssl {verify}"
    rc = tmp_path / f"fetchmailrc-{protocol}-{transport}"
    rc.write_text(
        f"set no syslog\n"
        f"poll 127.0.0.1 protocol {protocol} port {port}\n"
        f'  user "{USER}" password "{PASSWORD}" {tls}\n'
        f'  mda "cat >> {out}"\n'
    )
    rc.chmod(0o600)
    return rc


def fetchmail(rc: Path, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[bytes]:
    binary = require_binary("fetchmail")
    ids = tmp_path / "fetchids"
    return run_client([binary, "-f", str(rc), "-i", str(ids), "-v", *options], tmp_path)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetchmail_imap_keep(servers: Any, tmp_path: Path, transport: str) -> None:
    deliver(servers, "fetch me", "fm1@example.org")
    deliver(servers, "fetch me too", "fm2@example.org")
    out = tmp_path / "mbox"
    result = fetchmail(fetchmail_rc(servers, tmp_path, transport, out), tmp_path, "-k")
    assert result.returncode == 0, describe(result)
    log = result.stderr.decode("utf-8", "replace") + result.stdout.decode("utf-8", "replace")
    assert "2 messages for alice" in log, log
    if transport == "starttls":
        assert "IMAP> A0001 STARTTLS" in log and "upgrade to TLS succeeded" in log, log
    if transport == "plain":
        assert "IMAP> A0001 STARTTLS" not in log and "sslproto '' given" in log, log
    delivered = out.read_bytes()
    assert delivered.count(b"Message-ID: <fm") == 2
    assert b"Subject: fetch me too" in delivered
    # Kept on the server, and \Seen now (fetchmail stores +FLAGS (\Seen)).
    files = maildir_files(maildir_of(servers))
    assert len(files) == 2
    assert all(p.name.endswith(":2,S") for p in files), [p.name for p in files]
    # A second run finds nothing new: exit 1 = no mail.
    again = fetchmail(fetchmail_rc(servers, tmp_path, transport, out), tmp_path, "-k")
    assert again.returncode == 1, describe(again)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetchmail_imap_no_keep(servers: Any, tmp_path: Path, transport: str) -> None:
    deliver(servers, "take me", "fm3@example.org")
    deliver(servers, "take me too", "fm4@example.org")
    out = tmp_path / "mbox"
    result = fetchmail(fetchmail_rc(servers, tmp_path, transport, out), tmp_path, "--nokeep")
    assert result.returncode == 0, describe(result)
    assert out.read_bytes().count(b"Message-ID: <fm") == 2
    assert maildir_files(maildir_of(servers)) == []
    with imap_session(servers) as client:
        assert ok(client.select("INBOX")) == [b"0"]


# ---------------------------------------------------------------------------
# mbsync
# ---------------------------------------------------------------------------


def mbsync_rc(servers: Any, tmp_path: Path, transport: str, local: Path) -> Path:
    if transport == "plain":
        account = f"Port {servers.port('imap')}\nSSLType None\n"
    elif transport == "starttls":
        account = (
            f"Port {servers.port('imap')}\nSSLType STARTTLS\nCertificateFile {servers.cafile}\n"
        )
    else:
        account = f"Port {servers.port('imaps')}\nSSLType IMAPS\nCertificateFile {servers.cafile}\n"
    rc = tmp_path / f"mbsyncrc-{transport}"
    rc.write_text(
        "IMAPAccount remote\n"
        # mbsync matches the certificate against DNS names only (not the IP address SAN):
        # "Error, certificate owner does not match hostname 127.0.0.1".
        f"Host {'127.0.0.1' if transport == 'plain' else 'localhost'}\n"
        f"User {USER}\n"
        f"Pass {PASSWORD}\n"
        f"{account}"
        "AuthMechs LOGIN\n"
        "\n"
        "IMAPStore remote\n"
        "Account remote\n"
        "\n"
        "MaildirStore local\n"
        f"Path {local}/\n"
        f"Inbox {local}/INBOX\n"
        "SubFolders Verbatim\n"
        "\n"
        "Channel sync\n"
        "Far :remote:\n"
        "Near :local:\n"
        "Patterns *\n"
        "Create Both\n"
        "Expunge Both\n"
        "SyncState *\n"
    )
    return rc


def mbsync(rc: Path, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    binary = require_binary("mbsync")
    return run_client([binary, "-c", str(rc), "-a"], tmp_path, timeout=20)


def mbsync_problems(result: subprocess.CompletedProcess[bytes], transport: str) -> list[str]:
    lines = result.stderr.decode("utf-8", "replace").splitlines()
    problems = [line for line in lines if "Error" in line or "Warning" in line]
    if transport == "plain":
        # The one warning a plain connection earns, from the client and rightly so.
        problems = [
            p for p in problems if p != "*** IMAP Warning *** Password is being sent in the clear"
        ]
    return problems


FOLDERS = ["INBOX", "Archive", "Sent"]


def assert_in_sync(servers: Any, local: Path) -> dict[str, dict[str, frozenset[str]]]:
    states = {}
    for folder in FOLDERS:
        remote = server_state(servers, folder)
        near = local_state(local / folder)
        assert near == remote, f"{folder}: local {near} != server {remote}"
        states[folder] = remote
    return states


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mbsync_two_way(servers: Any, tmp_path: Path, transport: str) -> None:
    require_binary("mbsync")
    deliver(servers, "inbox one", "in1@example.org")
    deliver(servers, "inbox two", "in2@example.org")
    with imap_session(servers) as client:
        for folder in ("Archive", "Sent"):
            ok(client.create(folder))
            for n in (1, 2):
                message = make_message(f"{folder} {n}", f"{folder.lower()}{n}@example.org")
                flags = "(\\Seen)" if n == 1 else None
                ok(client.append(folder, flags, None, message))
    local = tmp_path / "local"
    local.mkdir()
    rc = mbsync_rc(servers, tmp_path, transport, local)

    first = mbsync(rc, tmp_path)
    assert first.returncode == 0, describe(first)
    assert mbsync_problems(first, transport) == [], describe(first)
    states = assert_in_sync(servers, local)
    assert set(states["INBOX"]) == {"<in1@example.org>", "<in2@example.org>"}
    assert states["Sent"]["<sent1@example.org>"] == {"\\Seen"}

    # Change both sides.
    with imap_session(servers) as client:  # delete one on the server
        ok(client.select("Sent"))
        ok(client.store("2", "+FLAGS", "(\\Deleted)"))
        ok(client.expunge())
    [flag_me] = [p for p in maildir_files(local / "Archive") if b"archive2@" in p.read_bytes()]
    base = flag_me.name.partition(":2,")[0]
    flag_me.rename(local / "Archive" / "cur" / f"{base}:2,F")  # flag one locally
    (local / "Archive" / "new" / "1700000000.local1.testhost").write_bytes(  # add one locally
        make_message("added locally", "local1@example.org").replace(b"\r\n", b"\n")
    )
    deliver(servers, "inbox three", "in3@example.org")  # a new one on the server

    second = mbsync(rc, tmp_path)
    assert second.returncode == 0, describe(second)
    assert mbsync_problems(second, transport) == [], describe(second)
    states = assert_in_sync(servers, local)
    assert set(states["INBOX"]) == {f"<in{n}@example.org>" for n in (1, 2, 3)}
    assert set(states["Sent"]) == {"<sent1@example.org>"}
    assert states["Archive"] == {
        "<archive1@example.org>": {"\\Seen"},
        "<archive2@example.org>": {"\\Flagged"},
        "<local1@example.org>": frozenset(),
    }


# ---------------------------------------------------------------------------
# SMTP (swaks) -> POP3 (fetchmail -k) -> IMAP (imaplib)
# ---------------------------------------------------------------------------


def test_swaks_fetchmail_pop3_then_imap(servers: Any, tmp_path: Path) -> None:
    swaks = require_binary("swaks")
    result = run_client(
        [swaks, "--server", f"127.0.0.1:{servers.port('smtp')}", "--from", SENDER, "--to", ALICE,
         "--header", "Subject: the course path", "--header", "Message-Id: <course@example.org>",
         "--body", "from swaks to POP3 and IMAP"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    [stored] = [p.read_bytes() for p in maildir_files(maildir_of(servers))]

    out = tmp_path / "mbox"
    result = fetchmail(fetchmail_rc(servers, tmp_path, "plain", out, "pop3"), tmp_path, "-k")
    assert result.returncode == 0, describe(result)
    fetched = out.read_bytes()
    assert b"Message-Id: <course@example.org>" in fetched
    assert b"from swaks to POP3 and IMAP" in fetched

    with imap_session(servers) as client:
        assert ok(client.select("INBOX")) == [b"1"]
        data = ok(client.fetch("1", "(FLAGS BODY.PEEK[])"))
        head, body = data[0]
        assert body == stored.replace(b"\n", b"\r\n")
        assert message_id_of(body) == "<course@example.org>"
        # What mailtalk does: POP3 retrieval (kept with -k) does not set \Seen. The POP3
        # session moved the file from new/ to cur/ (":2," with no flags), so the message
        # is no longer \Recent either: its IMAP flags are empty.
        assert re.search(rb"FLAGS \(\)", head), head
    [after] = maildir_files(maildir_of(servers))
    assert after.parent.name == "cur" and after.name.endswith(":2,"), after


# ---------------------------------------------------------------------------
# mailtalk serve as a subprocess
# ---------------------------------------------------------------------------


def read_line(process: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> bytes:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise AssertionError(f"no line from mailtalk serve in {timeout}s: {line!r}")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"mailtalk serve ended before its line: {line!r}")
        line += chunk
    return line


class ServeProcess:
    """Enough of RunningServers for the helpers above, from the --json line."""

    def __init__(self, info: dict[str, Any]):
        self.info = info
        self.root = Path(info["root"])
        self.cafile = self.root / "tls" / "ca.pem"

    def port(self, protocol: str) -> int:
        for listener in self.info["listeners"]:
            if listener["protocol"] == protocol:
                return int(listener["port"])
        raise KeyError(protocol)


def test_serve_subprocess_imap_clients(tmp_path: Path) -> None:
    root = tmp_path / "serve-root"
    stderr = tmp_path / "serve.stderr"
    process = subprocess.Popen(
        [*mailtalk_command(), "serve", "--root", str(root), "--smtp", "0", "--pop3", "0",
         "--pop3s", "0", "--imap", "0", "--imaps", "0", "--user", f"{USER}:{PASSWORD}",
         "--domain", DOMAIN, "--json"],
        stdout=subprocess.PIPE, stderr=stderr.open("wb"), env=client_env(tmp_path),
    )  # fmt: skip
    try:
        info = json.loads(read_line(process))
        assert [(x["protocol"], x["tls"]) for x in info["listeners"]] == [
            ("smtp", "starttls"), ("pop3", "starttls"), ("pop3s", "implicit"),
            ("imap", "starttls"), ("imaps", "implicit"),
        ]  # fmt: skip
        server = ServeProcess(info)
        assert server.cafile.exists()
        deliver(server, "via serve", "serve1@example.org")
        # curl over IMAPS, then fetchmail over STARTTLS, against the subprocess.
        url, options = curl_url(server, "imaps", "INBOX;UID=1")
        result = curl(server, tmp_path, url, *options)
        assert result.returncode == 0, describe(result)
        [path] = maildir_files(root / "mail" / USER / "Maildir")
        assert result.stdout == path.read_bytes().replace(b"\n", b"\r\n")
        deliver(server, "via serve 2", "serve2@example.org")
        out = tmp_path / "mbox"
        result = fetchmail(fetchmail_rc(server, tmp_path, "starttls", out), tmp_path, "--nokeep")
        assert result.returncode == 0, describe(result)
        # curl's FETCH BODY[] made the first \Seen: fetchmail (no fetchall) takes the unseen one.
        assert b"<serve2@example.org>" in out.read_bytes()
        assert b"<serve1@example.org>" not in out.read_bytes()
        [left] = maildir_files(root / "mail" / USER / "Maildir")
        assert b"<serve1@example.org>" in left.read_bytes()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert code == 0, stderr.read_text(errors="replace")


# ---------------------------------------------------------------------------
# POP3 and IMAP on the same INBOX
# ---------------------------------------------------------------------------


def test_pop3_lock_does_not_block_imap(servers: Any) -> None:
    for n in (1, 2, 3):
        deliver(servers, f"shared {n}", f"shared{n}@example.org")
    pop = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=TIMEOUT)
    try:
        pop.user(USER)
        pop.pass_(PASSWORD)  # TRANSACTION state: the maildrop is locked for POP3
        count, _ = pop.stat()
        assert count == 3
        # A second POP3 session is refused: the lock is real.
        other = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=TIMEOUT)
        other.user(USER)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
            other.pass_(PASSWORD)
        with contextlib.suppress(poplib.error_proto, OSError):
            other.quit()

        # IMAP is not blocked: POP3's lock is POP3-only.
        with imap_session(servers) as client:
            assert ok(client.select("INBOX")) == [b"3"]
            data = ok(client.fetch("1:3", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"))
            ids = [message_id_of(item[1]) for item in data if isinstance(item, tuple)]
            assert ids == [f"<shared{n}@example.org>" for n in (1, 2, 3)]
            # Expunge the second while POP3 still has it listed.
            ok(client.store("2", "+FLAGS", "(\\Deleted)"))
            assert ok(client.expunge()) == [b"2"]

        # POP3 still lists 3; RETR of the gone one fails cleanly, the others still work.
        _, lines, _ = pop.retr(1)
        assert b"Message-ID: <shared1@example.org>" in lines
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR"):
            pop.retr(2)
        _, lines, _ = pop.retr(3)
        assert b"Message-ID: <shared3@example.org>" in lines
        assert pop.noop().startswith(b"+OK")
        assert pop.quit().startswith(b"+OK")
    finally:
        with contextlib.suppress(poplib.error_proto, OSError):
            pop.close()
    with imap_session(servers) as client:
        assert ok(client.select("INBOX")) == [b"2"]


@pytest.mark.parametrize("transport", ["plain", "imaps"])
def test_mbsync_nested_folder_big_append_and_deletions(
    servers: Any, tmp_path: Path, transport: str
) -> None:
    """A Maildir++ subfolder ("Archive.2024" on the server, Archive/2024 locally), a local
    message past LITERAL-'s 4096 octets (a synchronizing literal), a local deletion that
    must expunge on the server and a server flag change that must reach the local side."""
    deliver(servers, "keep", "keep@example.org")
    deliver(servers, "drop locally", "drop@example.org")
    with imap_session(servers) as client:
        for folder in ("Archive", "Archive.2024", "Sent"):
            ok(client.create(folder))
        ok(client.append("Archive.2024", "(\\Answered)", None, make_message("n", "nested@x.org")))
    assert (maildir_of(servers) / ".Archive.2024" / "maildirfolder").exists()
    local = tmp_path / "local"
    local.mkdir()
    rc = mbsync_rc(servers, tmp_path, transport, local)
    first = mbsync(rc, tmp_path)
    assert first.returncode == 0, describe(first)
    assert mbsync_problems(first, transport) == [], describe(first)
    assert local_state(local / "Archive" / "2024") == {"<nested@x.org>": {"\\Answered"}}

    [drop] = [p for p in maildir_files(local / "INBOX") if b"<drop@" in p.read_bytes()]
    drop.unlink()
    # 2000 more lines after make_message's: about 150 KB, LF line ends as in a Maildir.
    big = make_message("big", "big@example.org").replace(b"\r\n", b"\n")
    big += (b"y" * 76 + b"\n") * 2000
    (local / "Archive" / "2024" / "new" / "1700000000.big.testhost").write_bytes(big)
    with imap_session(servers) as client:
        ok(client.select("INBOX"))
        ok(client.store("1", "+FLAGS", "(\\Flagged)"))

    second = mbsync(rc, tmp_path)
    assert second.returncode == 0, describe(second)
    assert mbsync_problems(second, transport) == [], describe(second)
    assert (
        server_state(servers, "INBOX")
        == local_state(local / "INBOX")
        == {"<keep@example.org>": {"\\Flagged"}}
    )
    nested = server_state(servers, "Archive.2024")
    assert nested == local_state(local / "Archive" / "2024")
    assert set(nested) == {"<nested@x.org>", "<big@example.org>"}
    with imap_session(servers) as client:
        ok(client.select("Archive.2024", readonly=True))
        data = ok(client.fetch("2", "(BODY.PEEK[TEXT])"))
        assert data[0][1].endswith((b"y" * 76 + b"\r\n") * 2000)

    # A third run has nothing to do and changes nothing.
    before = {p.name for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")}
    third = mbsync(rc, tmp_path)
    assert third.returncode == 0, describe(third)
    assert mbsync_problems(third, transport) == [], describe(third)
    after = {p.name for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert after == before
