"""The sans-IO HTTP/1.1 request parser of ``serve --http``: whole, a byte at a time, and
any input either parsing or refused with a status (never another exception)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.http import (
    HTTPRequestError,
    Request,
    RequestParser,
    response_bytes,
)

POST = (
    b"POST /api/v1/users?x=1&folder=Sent%20Items HTTP/1.1\r\nHost: localhost\r\n"
    b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"name\":\"a\"}\n"
)
GET = b"GET /api/v1/journal?since=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def parse_all(data: bytes, step: int | None = None) -> list[Request]:
    parser = RequestParser()
    requests = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        parser.feed(chunk)
        while (request := parser.next_request()) is not None:
            requests.append(request)
    assert parser.pending == 0
    return requests


@pytest.mark.parametrize("step", [None, 1, 2, 7])
def test_pipelined_requests_parse_the_same_whole_or_a_byte_at_a_time(step: int | None) -> None:
    first, second = parse_all(POST + GET, step)
    assert (first.method, first.path, first.version) == ("POST", "/api/v1/users", "1.1")
    assert first.query == {"x": "1", "folder": "Sent Items"}
    assert first.body == b'{"name":"a"}\n'
    assert first.header("CONTENT-type") == "application/json"
    assert first.keep_alive
    assert (second.method, second.query, second.keep_alive) == ("GET", {"since": "4"}, False)


def test_a_request_waits_for_its_whole_body() -> None:
    parser = RequestParser()
    parser.feed(POST[:-1])
    assert parser.next_request() is None
    assert parser.in_request
    parser.feed(POST[-1:])
    assert parser.next_request() is not None
    assert not parser.in_request


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"GET / HTTP/1.1\nHost: x\n\n", 400, "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, "folding"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "without Host"),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/1.0 and HTTP/1.1"),
        (b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "absolute path"),
        (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request line"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400, "valid name"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400, "control character"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "Transfer"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3"
            b"\r\n\r\nabc",
            400,
            "both",
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400,
         "differ"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400, "not a number"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413, "larger"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n", 431, "too large"),
        (b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n", 400, "UTF-8"),
    ],
)
def test_what_is_refused_and_with_which_status(data: bytes, status: int, words: str) -> None:
    for step in (None, 1):
        with pytest.raises(HTTPRequestError) as caught:
            parse_all(data, step)
        assert caught.value.status == status
        assert words in str(caught.value)


def test_the_limits_are_the_parsers_own() -> None:
    parser = RequestParser(max_head=64, max_body=4)
    parser.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    with pytest.raises(HTTPRequestError) as caught:
        parser.next_request()
    assert caught.value.status == 413
    parser = RequestParser(max_head=64)
    parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"y" * 64)
    with pytest.raises(HTTPRequestError) as caught:
        parser.next_request()
    assert caught.value.status == 431


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_any_input_parses_or_is_refused_with_a_status(data: bytes, step: int) -> None:
    parser = RequestParser(max_head=200, max_body=50)
    try:
        for index in range(0, len(data), step):
            parser.feed(data[index : index + step])
            while parser.next_request() is not None:
                pass
    except HTTPRequestError as error:
        assert 400 <= error.status <= 505


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["GET", "POST", "DELETE"]),
    st.from_regex(r"/[a-z0-9/]{0,20}", fullmatch=True),
    st.binary(max_size=40),
    st.integers(min_value=1, max_value=30),
)
def test_a_wellformed_request_comes_back_as_sent(
    method: str, path: str, body: bytes, step: int
) -> None:
    data = (
        f"{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    (request,) = parse_all(data * 1, step)
    assert (request.method, request.path, request.body) == (method, path, body)


def test_a_204_has_neither_length_nor_body() -> None:
    data = response_bytes(204, b"ignored", "application/json", keep_alive=True)
    assert b"Content-Length" not in data and data.endswith(b"\r\n\r\n")
    data = response_bytes(404, b"{}", "application/json", keep_alive=False)
    assert b"Content-Length: 2\r\n" in data and b"Connection: close" in data
