"""Real IMAP clients against mailtalk's IMAP server: imaplib, imapclient, curl, fetchmail,
mbsync, getmail6 and offlineimap3.

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
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from mailtalk.servers.imap.mailboxes import SPECIAL_USE
from tests.interop.clients import mailtalk_command, read_line, require_binary
from tests.maildirs import in_delivery_order

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
    return in_delivery_order(
        p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()
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


def make_folder(client: imaplib.IMAP4, name: str) -> None:
    """CREATE ``name``; the SPECIAL-USE folders (Sent, Archive...) exist from the first
    login already."""
    typ, data = client.create(name)
    assert typ == "OK" or (name in SPECIAL_USE and b"ALREADYEXISTS" in data[0]), data


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
        make_folder(client, "Archive")
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
            make_folder(client, folder)
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
        info = json.loads(read_line(process, TIMEOUT))
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
            make_folder(client, folder)
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


# ---------------------------------------------------------------------------
# imapclient (PyPI)
# ---------------------------------------------------------------------------


def multipart_message(subject: str, message_id: str) -> bytes:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = ALICE
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id}>"
    message.set_content("The text part.\n")
    message.add_attachment(b"\x00\x01binary\xff" * 40, maintype="application",
                           subtype="octet-stream", filename="data.bin")  # fmt: skip
    return message.as_bytes(policy=email.policy.SMTP)


def test_imapclient_starttls_search_bodystructure_idle(servers: Any) -> None:
    """imapclient: STARTTLS (verified), LOGIN, SELECT, SEARCH, FETCH BODYSTRUCTURE,
    and IDLE that sees a message arrive over SMTP."""
    deliver(servers, "plain text", "ic1@example.org")
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail(SENDER, [ALICE], multipart_message("with attachment", "ic2@example.org"))

    client = IMAPClient("127.0.0.1", port=servers.port("imap"), ssl=False, timeout=TIMEOUT)
    try:
        assert b"STARTTLS" in client.capabilities()
        client.starttls(ssl_context=client_context(servers.cafile))  # checks the IP SAN
        client.login(USER, PASSWORD)
        assert b"IDLE" in client.capabilities()
        assert b"STARTTLS" not in client.capabilities()
        selected = client.select_folder("INBOX")
        assert selected[b"EXISTS"] == 2
        uid_validity = selected[b"UIDVALIDITY"]

        everything = client.search(["ALL"])
        assert len(everything) == 2
        [attached] = client.search(["SUBJECT", "attachment"], charset="UTF-8")
        [text] = client.search(["HEADER", "Message-ID", "ic1@example.org"])
        assert sorted([attached, text]) == sorted(everything)

        fetched = client.fetch([text, attached], ["BODYSTRUCTURE", "ENVELOPE", "FLAGS"])
        plain = fetched[text][b"BODYSTRUCTURE"]
        assert not plain.is_multipart
        assert (plain[0].lower(), plain[1].lower()) == (b"text", b"plain")
        mixed = fetched[attached][b"BODYSTRUCTURE"]
        assert mixed.is_multipart
        parts, subtype = mixed[0], mixed[1]
        assert subtype.lower() == b"mixed"
        assert [(p[0].lower(), p[1].lower()) for p in parts] == [
            (b"text", b"plain"),
            (b"application", b"octet-stream"),
        ]
        assert parts[1][5].lower() == b"base64"
        envelope = fetched[attached][b"ENVELOPE"]
        assert envelope.subject == b"with attachment"
        assert envelope.message_id == b"<ic2@example.org>"
        assert b"\\Seen" not in fetched[text][b"FLAGS"]  # BODYSTRUCTURE, ENVELOPE: no \Seen

        # IDLE: a message delivered over SMTP meanwhile is announced with EXISTS.
        client.idle()
        deliver(servers, "arrived while idling", "ic3@example.org")
        announced: list[Any] = []
        deadline = time.monotonic() + TIMEOUT
        while not any(item[1:] == (b"EXISTS",) for item in announced):
            assert time.monotonic() < deadline, f"no EXISTS during IDLE: {announced}"
            announced += client.idle_check(timeout=1)
        assert (3, b"EXISTS") in announced, announced
        client.idle_done()

        [new] = client.search(["SUBJECT", "idling"])
        assert new not in everything
        body = client.fetch([new], ["BODY.PEEK[]"])[new][b"BODY[]"]
        assert body.replace(b"\r\n", b"\n") == maildir_files(maildir_of(servers))[-1].read_bytes()
        assert client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"] == uid_validity
    finally:
        with contextlib.suppress(Exception):
            client.logout()


# ---------------------------------------------------------------------------
# getmail6 (IMAP)
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def getmail_maildir(tmp_path: Path) -> Iterator[Path]:
    """An empty Maildir getmail can deliver into.

    getmail refuses to deliver as root; then it delivers as ``nobody`` (its
    ``user`` option), who cannot enter pytest's private tmp_path: the Maildir is
    then in a directory of its own under the system's temporary directory.
    """
    def make(path: Path, owner: str | None) -> Path:
        for sub in ("", "cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
            if owner:
                shutil.chown(path / sub, owner)
        return path

    if os.geteuid() != 0:
        yield make(tmp_path / "getmail-maildir", None)
        return
    parent = Path(tempfile.mkdtemp(prefix="mailtalk-getmail-"))
    try:
        parent.chmod(0o711)
        yield make(parent / "Maildir", "nobody")
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def getmail_imap(servers: Any, tmp_path: Path, maildir: Path) -> subprocess.CompletedProcess[bytes]:
    """getmail6's SimpleIMAPSSLRetriever, every folder, verified TLS, keeping the mail."""
    binary = require_binary("getmail")
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimpleIMAPSSLRetriever\n"
        "server = 127.0.0.1\n"
        f"port = {servers.port('imaps')}\n"
        f"username = {USER}\n"
        f"password = {PASSWORD}\n"
        f"ca_certs = {servers.cafile}\n"
        "mailboxes = ALL\n"
        "\n[destination]\n"
        "type = Maildir\n"
        f"path = {maildir}/\n"
        + ("user = nobody\n" if os.geteuid() == 0 else "")
        + "\n[options]\n"
        "delete = false\n"
        "read_all = false\n"
        "verbose = 2\n"
    )
    rc.chmod(0o600)
    state = tmp_path / "getmail-state"
    state.mkdir(exist_ok=True)
    return run_client([binary, "--rcfile", str(rc), "--getmaildir", str(state)], tmp_path, 30)


def test_getmail_imap_ssl_retriever_all_folders(servers: Any, tmp_path: Path) -> None:
    deliver(servers, "inbox one", "gm1@example.org")
    deliver(servers, "inbox two", "gm2@example.org")
    with imap_session(servers) as client:
        make_folder(client, "Archive")
        ok(client.append("Archive", "(\\Seen)", None, make_message("archived", "gm3@example.org")))
    stored = {
        message_id_of(p.read_bytes()): p.read_bytes()
        for folder in (maildir_of(servers), maildir_of(servers) / ".Archive")
        for p in maildir_files(folder)
    }
    with getmail_maildir(tmp_path) as maildir:
        first = getmail_imap(servers, tmp_path, maildir)
        assert first.returncode == 0, describe(first)
        got = {message_id_of(p.read_bytes()): p.read_bytes() for p in maildir_files(maildir)}
        assert set(got) == {"<gm1@example.org>", "<gm2@example.org>", "<gm3@example.org>"}
        for message_id, delivered in got.items():
            # getmail adds its own header lines on top (Return-Path, Received, ...) and
            # X-getmail-retrieved-from-mailbox at the end of the header: the rest is intact.
            head, _, body = delivered.replace(b"\r\n", b"\n").partition(b"\n\n")
            stored_head, _, stored_body = stored[message_id].replace(b"\r\n", b"\n").partition(
                b"\n\n"
            )
            assert body == stored_body, message_id
            lines = head.split(b"\n")
            assert all(line in lines for line in stored_head.split(b"\n")), delivered
            folder = b"Archive" if message_id == "<gm3@example.org>" else b"INBOX"
            assert b"X-getmail-retrieved-from-mailbox: " + folder in lines, delivered
        # delete = false: nothing left the server; read_all = false: the next run gets nothing.
        assert len(maildir_files(maildir_of(servers))) == 2
        second = getmail_imap(servers, tmp_path, maildir)
        assert second.returncode == 0, describe(second)
        assert len(maildir_files(maildir)) == 3, describe(second)
        assert b"0 messages" in second.stdout, describe(second)


# ---------------------------------------------------------------------------
# offlineimap3
# ---------------------------------------------------------------------------


def offlineimap_rc(servers: Any, tmp_path: Path, transport: str, local: Path) -> Path:
    """offlineimap3 over IMAPS (verified), STARTTLS or plain IMAP.

    Over STARTTLS offlineimap 8.0.0 calls imaplib2's ``starttls()`` without its
    CA file, so it verifies nothing there: that path shows only that the session
    works. It is also where imaplib2's two threads, reading and writing one TLS
    socket, lost the command after STARTTLS when the server sent TLS 1.3 session
    tickets (about one run in ten); the reference servers send none.
    """
    tls = {
        "imaps": f"remoteport = {servers.port('imaps')}\nssl = yes\n",
        "starttls": f"remoteport = {servers.port('imap')}\nssl = no\nstarttls = yes\n",
        "plain": f"remoteport = {servers.port('imap')}\nssl = no\nstarttls = no\n",
    }[transport]
    rc = tmp_path / f"offlineimaprc-{transport}"
    rc.write_text(
        "[general]\n"
        "accounts = test\n"
        f"metadata = {tmp_path / 'offlineimap-metadata'}\n"
        "\n[Account test]\n"
        "localrepository = local\n"
        "remoterepository = remote\n"
        "\n[Repository local]\n"
        "type = Maildir\n"
        f"localfolders = {local}\n"
        "\n[Repository remote]\n"
        "type = IMAP\n"
        # offlineimap checks the certificate against DNS names only, not 127.0.0.1.
        "remotehost = localhost\n"
        f"{tls}"
        f"sslcacertfile = {servers.cafile}\n"
        # tls_compat: the highest version both sides have (TLS 1.3 here); imaplib2's
        # tls_secure allows at most TLS 1.2.
        "tls_level = tls_compat\n"
        f"remoteuser = {USER}\n"
        f"remotepass = {PASSWORD}\n"
    )
    return rc


def offlineimap(rc: Path, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    binary = require_binary("offlineimap")
    return run_client([binary, "-c", str(rc), "-u", "basic"], tmp_path, timeout=60)


# What offlineimap says when it changes something on either side.
OFFLINEIMAP_CHANGES = re.compile(
    r"^(Copy message|Adding flag|Removing flag|Deleting \d+ message|Creating folder|"
    r"Uploading)",
    re.MULTILINE,
)


def offlineimap_output(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stdout + result.stderr).decode("utf-8", "replace")


def assert_offlineimap_ok(result: subprocess.CompletedProcess[bytes]) -> str:
    output = offlineimap_output(result)
    assert result.returncode == 0, describe(result)
    assert "ERROR" not in output and "Traceback" not in output, describe(result)
    return output


def snapshot(servers: Any, local: Path, folders: list[str]) -> tuple[Any, ...]:
    """Both sides in full: server UIDVALIDITY, UIDs and flags per folder; local file names."""
    remote = {}
    with imap_session(servers) as client:
        for folder in folders:
            typ, data = client.select(folder, readonly=True)
            assert typ == "OK", (folder, data)
            validity = client.untagged_responses.get("UIDVALIDITY", [None])[0]
            typ, fetched = client.fetch("1:*", "(UID FLAGS)")
            remote[folder] = (validity, sorted(x for x in fetched if isinstance(x, bytes)))
    files = sorted(
        str(p.relative_to(local)) for p in local.rglob("*") if p.is_file() and "/." not in str(p)
    )
    return remote, files


@pytest.mark.parametrize("transport", ["imaps", "starttls", "plain"])
def test_offlineimap_two_way_sync_then_nothing_to_do(
    servers: Any, tmp_path: Path, transport: str
) -> None:
    require_binary("offlineimap")
    deliver(servers, "inbox one", "oi1@example.org")
    deliver(servers, "inbox two", "oi2@example.org")
    with imap_session(servers) as client:
        make_folder(client, "Archive")
        for n in (1, 2):
            flags = "(\\Seen)" if n == 1 else None
            ok(client.append("Archive", flags, None, make_message(f"a{n}", f"oia{n}@example.org")))
    local = tmp_path / "local"
    rc = offlineimap_rc(servers, tmp_path, transport, local)
    folders = ["INBOX", "Archive"]

    output = assert_offlineimap_ok(offlineimap(rc, tmp_path))
    assert "Copy message" in output
    for folder in folders:
        assert local_state(local / folder) == server_state(servers, folder), folder
    assert local_state(local / "Archive")["<oia1@example.org>"] == {"\\Seen"}

    # Change both sides: on the server, expunge one and deliver one; locally, flag
    # one and add one.
    with imap_session(servers) as client:
        ok(client.select("INBOX"))
        [number] = ok(client.search(None, "HEADER", "Message-ID", "oi2@example.org"))
        ok(client.store(number, "+FLAGS", "(\\Deleted)"))
        ok(client.expunge())
    deliver(servers, "inbox three", "oi3@example.org")
    [flag_me] = [p for p in maildir_files(local / "Archive") if b"<oia2@" in p.read_bytes()]
    base = flag_me.name.partition(":2,")[0]
    flag_me.rename(local / "Archive" / "cur" / f"{base}:2,F")
    (local / "Archive" / "new" / "1700000000.local1.testhost").write_bytes(
        make_message("added locally", "oilocal@example.org").replace(b"\r\n", b"\n")
    )

    output = assert_offlineimap_ok(offlineimap(rc, tmp_path))
    assert OFFLINEIMAP_CHANGES.search(output), output
    assert server_state(servers, "INBOX") == local_state(local / "INBOX") == {
        "<oi1@example.org>": frozenset(),
        "<oi3@example.org>": frozenset(),
    }
    assert server_state(servers, "Archive") == local_state(local / "Archive") == {
        "<oia1@example.org>": {"\\Seen"},
        "<oia2@example.org>": {"\\Flagged"},
        "<oilocal@example.org>": frozenset(),
    }

    # A second and a third run change nothing on either side.
    before = snapshot(servers, local, folders)
    for run in ("second", "third"):
        output = assert_offlineimap_ok(offlineimap(rc, tmp_path))
        assert not OFFLINEIMAP_CHANGES.search(output), f"{run} run changed something:\n{output}"
        assert snapshot(servers, local, folders) == before, f"{run} run"
