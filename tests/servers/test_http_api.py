"""``mailtalk serve --http``: the JSON API driven with curl and raw sockets, its hostile-
client limits, the bearer token, and its OpenAPI description against its routes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.api import run_servers
from mailtalk.servers.app import ConfigError
from mailtalk.servers.httpapi import ROUTES

OPENAPI = Path(__file__).resolve().parents[2] / "mailtalk" / "servers" / "openapi.json"
TOKEN = "t0ken-for-the-tests-0123456789"


def exchange(port: int, data: bytes, *, step: int | None = None, delay: float = 0.0) -> bytes:
    """Send ``data`` (in ``step``-byte pieces), read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
        for piece in pieces:
            sock.sendall(piece)
            if delay:
                time.sleep(delay)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Any]:
    with run_servers(tmp_path / "root", users=[("alice", "secret")], http=0,
                     line_timeout=1.0, idle_timeout=2.0) as servers:  # fmt: skip
        yield servers


def test_every_route_is_described_and_every_description_has_a_route() -> None:
    described = {
        (method.upper(), path)
        for path, operations in json.loads(OPENAPI.read_text())["paths"].items()
        for method in operations
    }
    assert described == {(route.method, route.template) for route in ROUTES}


def test_the_description_is_served_and_is_openapi_3_1(api: Any) -> None:
    request = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = exchange(api.port("http"), request)
    body = response.split(b"\r\n\r\n", 1)[1]
    assert status_of(response) == 200
    assert json.loads(body) == json.loads(OPENAPI.read_text())
    assert json.loads(body)["openapi"] == "3.1.0"


def test_a_request_a_byte_at_a_time_is_answered(api: Any) -> None:
    request = b"GET /api/v1/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = exchange(api.port("http"), request, step=1)
    assert status_of(response) == 200 and response.endswith(b'{"users": ["alice"]}\n')


def test_a_request_too_slow_is_answered_408_and_closed(api: Any) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", api.port("http")), timeout=20) as sock:
        sock.sendall(b"GET /api/v1/users HTTP/1.1\r\n")  # and never the rest
        response = sock.recv(65536)
        assert sock.recv(10) == b""
    assert status_of(response) == 408
    assert time.monotonic() - started < 15


def test_an_idle_keep_alive_connection_is_closed(api: Any) -> None:
    with socket.create_connection(("127.0.0.1", api.port("http")), timeout=20) as sock:
        sock.sendall(b"GET /api/v1/users HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert sock.recv(10) == b""  # --idle-timeout 2: closed without a word
        assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"x" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n", 413),
        (b"GET /api/v1/users HTTP/1.1\nHost: x\n\n", 400),
        (b"POST /api/v1/faults HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ],
)
def test_hostile_requests_get_their_status_and_a_closed_connection(
    api: Any, request_bytes: bytes, status: int
) -> None:
    response = exchange(api.port("http"), request_bytes)
    assert status_of(response) == status
    assert b"Connection: close" in response and b'{"error": ' in response


def test_connections_count_against_the_per_address_cap(tmp_path: Path) -> None:
    with run_servers(tmp_path / "root", http=0, max_connections_per_address=2) as servers:
        port = servers.port("http")
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            time.sleep(0.3)
            response = exchange(port, b"GET /api/v1/users HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(response) == 503 and b"max-connections-per-address" in response
        finally:
            for sock in held:
                sock.close()


def test_beyond_loopback_a_token_is_needed(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigError, match="needs --http-token-file"),
        run_servers(tmp_path / "root", listen="0.0.0.0", http=0),
    ):
        pass


def test_with_a_token_every_route_asks_for_it(tmp_path: Path) -> None:
    with run_servers(tmp_path / "root", http=0, http_token=TOKEN) as servers:
        port = servers.port("http")
        head = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        refused = exchange(port, head + b"Authorization: Bearer wrong\r\n\r\n")
        assert status_of(refused) == 401 and b"WWW-Authenticate: Bearer" in refused
        assert status_of(exchange(port, head + b"\r\n")) == 401
        allowed = exchange(port, head + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert status_of(allowed) == 200


# -- curl against the mailtalk serve binary ----------------------------------------------


def curl_binary() -> str:
    path = shutil.which("curl")
    if path is None:
        if os.environ.get("MAILTALK_REQUIRE_REAL_SERVERS") == "1":
            pytest.fail("curl is not installed; MAILTALK_REQUIRE_REAL_SERVERS=1 requires it")
        pytest.skip("curl is not installed")
    return path


def curl(port: int, method: str, path: str, body: Any = None, token: str | None = None
         ) -> tuple[int, Any]:
    """(status, JSON body or text) of one request made by curl."""
    command = [curl_binary(), "-sS", "-X", method, "-w", "\n%{http_code}",
               f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    if body is not None:
        command += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    if token is not None:
        command += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    text, _, code = done.stdout.rpartition("\n")
    try:
        return int(code), json.loads(text) if text else None
    except ValueError:
        return int(code), text


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, int], Path, subprocess.Popen[str]]]:
    journal = tmp_path / "journal.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "mailtalk", "serve", "--json", "-v", "--root",
         str(tmp_path / "root"), "--smtp", "0", "--http", "0", "--journal", str(journal)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(process.communicate()[1])
    ports = {x["protocol"]: x["port"] for x in json.loads(line)["listeners"]}
    try:
        yield ports, journal, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)


def test_curl_drives_users_messages_and_faults(
    served: tuple[dict[str, int], Path, subprocess.Popen[str]],
) -> None:
    import smtplib

    ports, journal, process = served
    http = ports["http"]
    password = "p4ss-word-not-to-be-seen"
    assert curl(http, "POST", "/api/v1/users", {"name": "dave", "password": password}) == (
        201, {"name": "dave", "created": True})  # fmt: skip
    assert curl(http, "GET", "/api/v1/users") == (200, {"users": ["dave"]})
    # The password works: the new user logs in over SMTP AUTH.
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=20) as smtp:
        smtp.login("dave", password)
        smtp.sendmail("x@example.org", ["dave@localhost"],
                      b"Subject: =?utf-8?q?caf=C3=A9?=\r\nFrom: x@example.org\r\n\r\nhi\r\n")
    wait = "/api/v1/users/dave/messages/wait?timeout=20&subject=caf%C3%A9"
    status, waited = curl(http, "GET", wait)
    assert status == 200 and waited["subject"] == "café" and waited["text"] == "hi\n"
    subject = next(h for h in waited["headers"] if h["name"] == "Subject")
    assert subject["raw"] == "=?utf-8?q?caf=C3=A9?="
    status, listed = curl(http, "GET", "/api/v1/users/dave/messages")
    assert status == 200 and [m["id"] for m in listed["messages"]] == [waited["id"]]
    status, raw = curl(http, "GET", f"/api/v1/users/dave/messages/{waited['id']}/raw")
    assert status == 200 and "Subject: =?utf-8?q?caf=C3=A9?=" in raw
    assert curl(http, "DELETE", f"/api/v1/users/dave/messages/{waited['id']}") == (204, None)
    assert curl(http, "GET", "/api/v1/users/dave/messages")[1]["messages"] == []

    # Errors: JSON with the right status.
    assert curl(http, "GET", "/api/v1/users/nobody/messages") == (
        404, {"error": "no such user: nobody"})  # fmt: skip
    assert curl(http, "DELETE", f"/api/v1/users/dave/messages/{waited['id']}")[0] == 404
    assert curl(http, "GET", "/api/v1/users/dave/messages?folder=a*b")[0] == 400
    assert curl(http, "POST", "/api/v1/faults", {"rule": "smtp:nonsense"})[0] == 400
    assert curl(http, "PUT", "/api/v1/faults")[0] == 405
    status, timed_out = curl(http, "GET", "/api/v1/users/dave/messages/wait?timeout=0.3")
    assert status == 408 and "the folder is empty" in timed_out["error"]

    # Faults: set, seen by the next connection, cleared.
    assert curl(http, "POST", "/api/v1/faults", {"rule": "smtp:mail=451 4.3.2 Try later"})[0] == 201
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=20) as smtp:
        smtp.ehlo()
        assert smtp.mail("x@example.org")[0] == 451
    assert curl(http, "GET", "/api/v1/faults")[1]["fired"] == ["smtp:mail=451 4.3.2 Try later"]
    assert curl(http, "DELETE", "/api/v1/faults") == (204, None)
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=20) as smtp:
        smtp.ehlo()
        assert smtp.mail("x@example.org")[0] == 250

    # The journal, by number: what came after `next` only.
    status, first = curl(http, "GET", "/api/v1/journal?since=0")
    assert status == 200 and any(e["event"] == "message" for e in first["events"])
    assert [e["seq"] for e in first["events"]] == list(range(1, first["next"] + 1))
    assert curl(http, "GET", f"/api/v1/journal?since={first['next']}")[1]["events"] == []

    # The password reached neither the log (-v logs each request) nor the journal.
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    assert "http: POST /api/v1/users -> 201" in err
    assert password not in err and password not in journal.read_text()
    assert not re.search(r"Traceback", err)


def test_serve_refuses_http_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mailtalk", "serve", "--root", str(tmp_path / "root"),
         "--listen", "0.0.0.0", "--smtp", "0", "--http", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "needs --http-token-file" in done.stderr


def test_serve_reads_the_token_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailtalk", "serve", "--json", "--root", str(tmp_path / "root"),
         "--smtp", "0", "--http", "0", "--http-token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        listeners = json.loads(process.stdout.readline())["listeners"]
        http = next(x["port"] for x in listeners if x["protocol"] == "http")
        assert curl(http, "GET", "/api/v1/users")[0] == 401
        assert curl(http, "GET", "/api/v1/users", token=TOKEN) == (200, {"users": []})
        with open(f"/proc/{process.pid}/cmdline", "rb") as cmdline:
            assert TOKEN.encode() not in cmdline.read()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
