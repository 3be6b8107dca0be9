"""A small, strict HTTP/1.1 request parser with no I/O (RFC 9112), for ``serve --http``.

Only what a JSON API needs: a request line, header fields, and a body whose length
``Content-Length`` gives. Everything else is refused with the status that says why,
rather than guessed at (the same stance as the mail servers' line rules):

- lines end in CRLF; a bare CR or LF, obsolete line folding, a field name with
  spaces or control bytes, a field value with control bytes: 400;
- ``Transfer-Encoding`` (chunked bodies): 501, and never together with a length
  (the request-smuggling case, RFC 9112 6.3): 400;
- two different ``Content-Length`` values, or one that is not digits: 400;
- a request line and header fields past ``max_head`` bytes: 431; a body past
  ``max_body``: 413; an HTTP version other than 1.0 or 1.1: 505; HTTP/1.1 without
  ``Host``: 400.

Use::

    parser = RequestParser()
    parser.feed(data)               # any slice of the stream, even a byte at a time
    request = parser.next_request() # a Request, or None until more data comes

:class:`HTTPRequestError` carries the status to answer with; after one the connection
is to be closed (the parser cannot know where the next request begins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote

DEFAULT_MAX_HEAD: Final = 16 * 1024
DEFAULT_MAX_BODY: Final = 1024 * 1024
MAX_FIELDS: Final = 100

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(rb"/[\x21-\x22\x24-\x7e]*")  # no "#": fragments stay with clients
_VERSION: Final = re.compile(rb"HTTP/(\d)\.(\d)")
_FIELD_VALUE_BAD: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class HTTPRequestError(ValueError):
    """The peer sent something this parser refuses: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower case, in the order received."""

    method: str
    target: str  # as sent: /api/v1/users?x=1
    version: str  # "1.1" or "1.0"
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    path: str = field(init=False)  # the target's path, percent-decoded
    query: dict[str, str] = field(init=False)  # the last value of each query parameter

    def __post_init__(self) -> None:
        # Not urlsplit: it reads "//x" as a host name. origin-form is path["?" query].
        path, _, query = self.target.partition("?")
        object.__setattr__(self, "path", unquote(path, errors="strict"))
        object.__setattr__(
            self, "query", dict(parse_qsl(query, keep_blank_values=True, errors="strict"))
        )

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (any case), or None."""
        wanted = name.lower()
        found = None
        for key, value in self.headers:
            if key == wanted:
                found = value
        return found

    @property
    def keep_alive(self) -> bool:
        """May the connection carry another request after this one's response?"""
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


class RequestParser:
    """Feed bytes, take requests; limits on the head and the body (see the module)."""

    def __init__(self, max_head: int = DEFAULT_MAX_HEAD, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self._buffer = bytearray()
        self._head: tuple[str, str, str, tuple[tuple[str, str], ...]] | None = None
        self._length = 0

    @property
    def pending(self) -> int:
        """Bytes received and not yet part of a request returned."""
        return len(self._buffer)

    @property
    def in_request(self) -> bool:
        """A request has begun (some of it received) and is not complete yet."""
        return self._head is not None or bool(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_request(self) -> Request | None:
        """The next whole request, or None until more data is fed."""
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_head:
                    raise HTTPRequestError(431, "request head too large")
                self._check_partial_head()
                return None
            if end + 4 > self.max_head:
                raise HTTPRequestError(431, "request head too large")
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            self._head = _parse_head(head)
            self._length = _body_length(self._head[3], self.max_body)
        if len(self._buffer) < self._length:
            return None
        method, target, version, headers = self._head
        body = bytes(self._buffer[: self._length])
        del self._buffer[: self._length]
        self._head, self._length = None, 0
        try:
            return Request(method, target, version, headers, body)
        except UnicodeDecodeError:
            raise HTTPRequestError(400, "the target's percent-encoding is not UTF-8") from None

    def _check_partial_head(self) -> None:
        """Refuse a bare LF early: a peer that sends LF-only lines would wait forever."""
        data = self._buffer
        index = data.find(b"\n")
        while index >= 0:
            if index == 0 or data[index - 1] != 0x0D:
                raise HTTPRequestError(400, "a line ends in a bare LF, not CRLF")
            index = data.find(b"\n", index + 1)
        # Leading empty lines before a request line are allowed by RFC 9112 2.2; we do not.
        if data.startswith(b"\r\n"):
            raise HTTPRequestError(400, "an empty line before the request line")


def _parse_head(head: bytes) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    lines = head.split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise HTTPRequestError(400, "a bare CR or LF in the request head")
    method, target, version = _request_line(lines[0])
    headers: list[tuple[str, str]] = []
    if len(lines) - 1 > MAX_FIELDS:
        raise HTTPRequestError(431, f"more than {MAX_FIELDS} header fields")
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HTTPRequestError(400, "obsolete line folding in a header field")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HTTPRequestError(400, "a header field without a valid name")
        value = value.strip(b" \t")
        if _FIELD_VALUE_BAD.search(value):
            raise HTTPRequestError(400, "a control character in a header field value")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    if version == "1.1" and not any(name == "host" for name, _ in headers):
        raise HTTPRequestError(400, "HTTP/1.1 request without Host")
    return method, target, version, tuple(headers)


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HTTPRequestError(400, "the request line is not METHOD TARGET HTTP/VERSION")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HTTPRequestError(400, "not a method name")
    if not _TARGET.fullmatch(target):
        raise HTTPRequestError(400, "the target is not an absolute path")
    match = _VERSION.fullmatch(version)
    if match is None:
        raise HTTPRequestError(400, "not an HTTP version")
    if match.group(1) != b"1" or match.group(2) not in (b"0", b"1"):
        raise HTTPRequestError(505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
    return method.decode("ascii"), target.decode("ascii"), f"1.{match.group(2).decode()}"


def _body_length(headers: tuple[tuple[str, str], ...], max_body: int) -> int:
    lengths = {value for name, value in headers if name == "content-length"}
    encodings = [value for name, value in headers if name == "transfer-encoding"]
    if encodings and lengths:
        raise HTTPRequestError(400, "both Transfer-Encoding and Content-Length")
    if encodings:
        raise HTTPRequestError(501, "Transfer-Encoding is not supported; send Content-Length")
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise HTTPRequestError(400, "Content-Length values differ")
    (text,) = lengths
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise HTTPRequestError(400, "Content-Length is not a number")
    length = int(text)
    if length > max_body:
        raise HTTPRequestError(413, f"body larger than {max_body} bytes")
    return length


REASONS: Final[dict[int, str]] = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 411: "Length Required", 413: "Content Too Large", 415:
    "Unsupported Media Type", 422: "Unprocessable Content", 431:
    "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}  # fmt: skip


def response_bytes(
    status: int,
    body: bytes,
    content_type: str,
    *,
    keep_alive: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A whole HTTP/1.1 response with a Content-Length (204: without one, nor a body)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    if status != 204:  # RFC 9110 8.6: no Content-Length (nor body) in a 204
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [
        "Cache-Control: no-store",
        "Connection: keep-alive" if keep_alive else "Connection: close",
        *(f"{name}: {value}" for name, value in extra),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if status == 204 else head + body
