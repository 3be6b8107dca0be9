"""``mailtalk serve --http PORT``: a JSON API over HTTP/1.1, so tests in any language can
drive the servers (list, read and delete messages, add users, set faults, read the
journal, wait for a message).

Standard library only: asyncio streams in the servers' own event loop, the sans-IO
request parser of ``mailtalk.protocols.http``, and the store queries of
``mailtalk.servers.mailquery`` (the ones Python's ``wait_for_message`` uses). The
routes are the table ``ROUTES``; ``openapi.json`` beside this module describes them
(a test holds the two equal) and is served at ``/api/v1/openapi.json``.

A client is held to the servers' hostile-client rules: connections count against
``--max-connections`` and ``--max-connections-per-address``; a request head must
arrive within ``--line-timeout`` (plus 1 s per 500 bytes received), an idle
keep-alive connection ends after ``--idle-timeout``; heads past 16 KiB (431) and
bodies past 1 MiB (413) are refused. Listening beyond loopback needs a bearer token
(``--http-token-file``); with one, every route asks for ``Authorization: Bearer``.
Request bodies (passwords) are never logged nor written to the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import itertools
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from mailtalk.protocols.http import HTTPRequestError, Request, RequestParser, response_bytes
from mailtalk.servers.journal import Event, Journal
from mailtalk.servers.mailquery import (
    BACKSTOP_SECONDS,
    MailQuery,
    MessageFilter,
    details,
    summary,
)

if TYPE_CHECKING:
    from mailtalk.servers.context import ServerContext

log = logging.getLogger("mailtalk.serve")

JOURNAL_KEPT: Final = 10_000  # events the API keeps for GET /api/v1/journal
MAX_WAIT: Final = 300.0  # seconds a long-poll may ask for, at most
DEFAULT_WAIT: Final = 30.0
READ_SIZE: Final = 65536
JSON_TYPE: Final = "application/json"


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE

    @classmethod
    def json(cls, status: int, value: Any) -> Response:
        return cls(status, json.dumps(value, ensure_ascii=False).encode("utf-8") + b"\n")


def is_loopback(host: str) -> bool:
    text = host.strip().strip("[]")
    if text.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


class _Discard:
    """A text stream that keeps nothing: the journal the API reads when ``--journal``
    was not given (its events reach the API through ``Journal.listeners``)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class JournalTail:
    """The last ``JOURNAL_KEPT`` journal events, numbered from 1 in the order written."""

    def __init__(self) -> None:
        self._events: deque[tuple[int, Event]] = deque(maxlen=JOURNAL_KEPT)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append((next(self._numbers), event))

    def since(self, after: int, limit: int) -> dict[str, Any]:
        with self._lock:
            events = [{"seq": seq, **event} for seq, event in self._events if seq > after]
            oldest = self._events[0][0] if self._events else None
            last = self._events[-1][0] if self._events else after
        dropped = max(0, oldest - after - 1) if oldest is not None else 0
        events = events[:limit]
        following = events[-1]["seq"] if events else max(after, last if not events else 0)
        return {"events": events, "next": following, "dropped": dropped}


Handler = Callable[["HTTPApi", Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # as in openapi.json: /api/v1/users/{user}/messages
    handler: Handler

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(
            "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template)) + "$"
        )


class HTTPApi:
    """The API of one ``ReferenceServers``; ``connection`` serves one client."""

    def __init__(self, context: ServerContext, token: str | None = None) -> None:
        self.context = context
        self.token = token
        self.query = MailQuery(context.mailstore)
        self.journal_tail = JournalTail()
        if context.journal is None:
            context.journal = Journal(None, stream=_Discard())  # type: ignore[arg-type]
        context.journal.listeners.append(self.journal_tail)
        self._routes = [(route, route.pattern) for route in ROUTES]

    # -- one connection ----------------------------------------------------------

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = _Client(str(peer[0]) if peer else "", writer.transport)
        refusal = self.context.connection_opened(client)
        try:
            if refusal is not None:
                log.info("http: %s refused: %s", client.client_ip, refusal)
                refused = Response.json(503, {"error": f"too many connections: {refusal}"})
                await self._send(writer, refused, False)
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.context.connection_closed(client)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        settings = self.context.settings
        parser = RequestParser()
        started: float | None = None  # when the request being read began
        while True:
            try:
                request = parser.next_request()
            except HTTPRequestError as error:
                await self._send(writer, Response.json(error.status, {"error": str(error)}), False)
                return
            if request is not None:
                started = None
                response = await self._respond(request)
                keep = request.keep_alive and response.status < 500
                await self._send(writer, response, keep)
                if not keep:
                    return
                continue
            if parser.in_request:
                started = started if started is not None else time.monotonic()
                budget = settings.line_timeout + parser.pending / 500
                timeout = started + budget - time.monotonic()
            else:
                timeout = settings.idle_timeout
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), max(timeout, 0.001))
            except TimeoutError:
                if parser.in_request:
                    slow = Response.json(408, {"error": "request too slow"})
                    await self._send(writer, slow, False)
                return
            if not data:
                return
            parser.feed(data)

    async def _send(self, writer: asyncio.StreamWriter, response: Response, keep: bool) -> None:
        extra: tuple[tuple[str, str], ...] = ()
        if response.status == 401:
            extra = (("WWW-Authenticate", 'Bearer realm="mailtalk"'),)
        writer.write(
            response_bytes(response.status, response.body, response.content_type,
                           keep_alive=keep, extra=extra)
        )
        # A client that does not read its answers cannot hold the connection.
        await asyncio.wait_for(writer.drain(), self.context.settings.line_timeout)

    async def _respond(self, request: Request) -> Response:
        try:
            self._authorize(request)
            route, values = self._route(request)
            response = await route.handler(self, request, values)
        except APIError as error:
            response = Response.json(error.status, {"error": str(error)})
        except Exception:
            log.exception("http: %s %s failed", request.method, request.path)
            response = Response.json(500, {"error": "internal error; see the server's log"})
        log.info("http: %s %s -> %d", request.method, request.path, response.status)
        return response

    def _authorize(self, request: Request) -> None:
        if self.token is None:
            return
        scheme, _, given = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            raise APIError(401, "a bearer token is required (Authorization: Bearer TOKEN)")

    def _route(self, request: Request) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route, pattern in self._routes:
            found = pattern.match(request.path)
            if found is None:
                continue
            if route.method == request.method:
                return route, found.groupdict()
            allowed.append(route.method)
        if allowed:
            raise APIError(405, f"{request.method} is not allowed here; use {', '.join(allowed)}")
        raise APIError(404, f"no such resource: {request.path}")

    # -- helpers for the handlers ------------------------------------------------

    def user(self, name: str) -> str:
        self.context.refresh_control()  # a user added in control/users since counts
        if not self.context.users.exists(name):
            raise APIError(404, f"no such user: {name}")
        return name

    def folder(self, request: Request, user: str) -> str:
        folder = request.query.get("folder", "INBOX") or "INBOX"
        try:
            self.query.folder_path(user, folder)
        except ValueError:
            raise APIError(400, f"not a folder name: {folder!r}") from None
        return folder


class _Client:
    """What the connection caps count (``ServerContext.connection_opened``) and what the
    servers' stop aborts."""

    def __init__(self, client_ip: str, transport: asyncio.BaseTransport) -> None:
        self.client_ip = client_ip
        self.transport = transport
        self.close_reason: str | None = None


def _json_body(request: Request) -> dict[str, Any]:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != JSON_TYPE:
        raise APIError(415, "send the body as application/json")
    try:
        value = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise APIError(400, "the body must be a JSON object")
    return value


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise APIError(400, f"{name}={text!r}: not a number") from None
    if not low <= value <= high:
        raise APIError(400, f"{name}={text}: not between {low:g} and {high:g}")
    return value


# -- handlers ----------------------------------------------------------------------


async def openapi(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    return Response(200, openapi_text().encode("utf-8"))


async def list_users(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    api.context.refresh_control()
    return Response.json(200, {"users": api.context.users.names()})


async def add_user(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    body = _json_body(request)
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise APIError(400, 'give {"name": "...", "password": "..."} as strings')
    context = api.context
    context.refresh_control()
    existed = context.users.exists(name)
    try:
        await asyncio.to_thread(context.users.add, name, password)  # scrypt: off the loop
        await asyncio.to_thread(context.users.save)
    except ValueError as error:
        raise APIError(400, str(error)) from None
    context.clear_passwords[name] = password  # CRAM-MD5 and SCRAM need it, as for --user
    return Response.json(200 if existed else 201, {"name": name, "created": not existed})


async def list_messages(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    user = api.user(values["user"])
    folder = api.folder(request, user)

    def listed() -> list[dict[str, Any]]:
        result = []
        for message in api.query.messages(user, folder):
            try:
                result.append(summary(message, message.parse()))
            except FileNotFoundError:
                continue
        return result

    messages = await asyncio.to_thread(listed)
    return Response.json(200, {"user": user, "folder": folder, "messages": messages})


async def read_message(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    user = api.user(values["user"])
    folder = api.folder(request, user)
    message = await asyncio.to_thread(api.query.find, user, values["id"], folder)
    if message is None:
        raise APIError(404, f"no message {values['id']} in {user}'s {folder}")
    try:
        shown = await asyncio.to_thread(lambda: details(message, message.parse()))
    except FileNotFoundError:
        raise APIError(404, f"message {values['id']} was removed meanwhile") from None
    return Response.json(200, shown)


async def read_raw(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    user = api.user(values["user"])
    folder = api.folder(request, user)
    message = await asyncio.to_thread(api.query.find, user, values["id"], folder)
    if message is None:
        raise APIError(404, f"no message {values['id']} in {user}'s {folder}")
    try:
        data = await asyncio.to_thread(message.read)
    except FileNotFoundError:
        raise APIError(404, f"message {values['id']} was removed meanwhile") from None
    return Response(200, data, "message/rfc822")


async def delete_message(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    user = api.user(values["user"])
    folder = api.folder(request, user)
    if not await asyncio.to_thread(api.query.delete, user, values["id"], folder):
        raise APIError(404, f"no message {values['id']} in {user}'s {folder}")
    return Response(204)


async def wait_message(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    """Long-poll: woken by each delivery to the folder (MailboxWatchers), not polling."""
    user = api.user(values["user"])
    folder = api.folder(request, user)
    timeout = _number(request, "timeout", DEFAULT_WAIT, 0, MAX_WAIT)
    query = request.query
    wanted = MessageFilter(
        subject=query.get("subject"), sender=query.get("sender"), to=query.get("to"),
        header=query.get("header"),
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    deadline = loop.time() + timeout
    def wake() -> None:  # called from the delivering thread
        loop.call_soon_threadsafe(changed.set)

    with api.query.watch(user, folder, wake):
        while True:
            changed.clear()
            found = await asyncio.to_thread(api.query.first_match, user, wanted, folder)
            if found is not None:
                return Response.json(200, await asyncio.to_thread(details, *found))
            left = deadline - loop.time()
            if left <= 0:
                text = await asyncio.to_thread(
                    api.query.timeout_text, user, wanted, timeout, folder
                )
                raise APIError(408, text)
            with contextlib.suppress(TimeoutError):  # 1 s: a backstop for other writers
                await asyncio.wait_for(changed.wait(), min(left, BACKSTOP_SECONDS))


async def list_faults(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    context = api.context
    return Response.json(200, {
        "rules": [rule.text for rule in context.faults.rules],
        "added": [rule.text for rule in context.api_rules],
        "fired": context.faults.fired_rules(),
    })  # fmt: skip


async def add_faults(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    from mailtalk.servers.fault_rules import FaultRuleError, parse_rule

    body = _json_body(request)
    texts = body.get("rules", [body["rule"]] if "rule" in body else None)
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise APIError(400, 'give {"rule": "RULE"} or {"rules": ["RULE", ...]}')
    try:
        rules = [parse_rule(text) for text in texts]
    except FaultRuleError as error:
        raise APIError(400, str(error)) from None
    context = api.context
    try:
        context.set_api_rules([*context.api_rules, *rules])
    except ValueError as error:
        raise APIError(409, str(error)) from None
    return Response.json(201, {"added": [rule.text for rule in context.api_rules]})


async def clear_faults(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    try:
        api.context.set_api_rules([])
    except ValueError as error:
        raise APIError(409, str(error)) from None
    return Response(204)


async def read_journal(api: HTTPApi, request: Request, values: dict[str, str]) -> Response:
    since = int(_number(request, "since", 0, 0, 2**53))
    limit = int(_number(request, "limit", 1000, 1, JOURNAL_KEPT))
    return Response.json(200, api.journal_tail.since(since, limit))


ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/api/v1/openapi.json", openapi),
    Route("GET", "/api/v1/users", list_users),
    Route("POST", "/api/v1/users", add_user),
    Route("GET", "/api/v1/users/{user}/messages", list_messages),
    Route("GET", "/api/v1/users/{user}/messages/wait", wait_message),  # before {id}
    Route("GET", "/api/v1/users/{user}/messages/{id}", read_message),
    Route("DELETE", "/api/v1/users/{user}/messages/{id}", delete_message),
    Route("GET", "/api/v1/users/{user}/messages/{id}/raw", read_raw),
    Route("GET", "/api/v1/faults", list_faults),
    Route("POST", "/api/v1/faults", add_faults),
    Route("DELETE", "/api/v1/faults", clear_faults),
    Route("GET", "/api/v1/journal", read_journal),
)


def openapi_text() -> str:
    """The OpenAPI 3.1 description kept beside this module."""
    return resources.files("mailtalk.servers").joinpath("openapi.json").read_text("utf-8")
