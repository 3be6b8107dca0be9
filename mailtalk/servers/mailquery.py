"""What test helpers ask of the servers' store: list, read, match, delete and wait for mail.

Shared by ``RunningServers.wait_for_message`` (Python tests, ``mailtalk.servers.api``)
and the HTTP JSON API (``mailtalk serve --http``, ``mailtalk.servers.httpapi``), so
that a filter means the same thing in both.

A message's id is its Maildir file name without the ``:2,FLAGS`` part: it stays the
same when a reader moves the file from new/ to cur/ or changes its flags. Lookups
compare ids against the names listed, never join a given id to a path.

Waiting is notified, not polled: deliveries (SMTP, the queue, IMAP APPEND/COPY)
notify ``MailboxWatchers``; a scan every ``BACKSTOP_SECONDS`` at most also sees files
another process dropped in.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Final

from mailtalk.store.users import INBOX, MailStore

BACKSTOP_SECONDS: Final = 1.0
MESSAGE_ID: Final = re.compile(r"[A-Za-z0-9._,=+-]{1,255}")
SHOWN_ARRIVED: Final = 5  # messages a TimeoutError describes, at most


@dataclass(frozen=True)
class StoredMessage:
    """One message file of a folder."""

    id: str
    folder: str
    path: Path
    size: int
    flags: str  # the Maildir info flags: "S" seen, "R" replied, "T" deleted...
    seen_by_reader: bool  # in cur/ rather than new/

    def read(self) -> bytes:
        return self.path.read_bytes()

    def parse(self) -> EmailMessage:
        return parse_message(self.read())


def parse_message(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


@dataclass(frozen=True)
class MessageFilter:
    """What a wanted message looks like: every given condition must hold.

    ``subject``, ``sender`` (From), ``to`` (To and Cc): case-insensitive substrings
    of the decoded header. ``header``: ``"Name: text"`` (``text`` a substring of that
    header) or ``"Name"`` (the header is there). ``match``: a callable on the parsed
    message.
    """

    subject: str | None = None
    sender: str | None = None
    to: str | None = None
    header: str | None = None
    match: Callable[[EmailMessage], bool] | None = None

    def matches(self, message: EmailMessage) -> bool:
        def has(names: tuple[str, ...], text: str) -> bool:
            wanted = text.lower()
            return any(
                wanted in str(value).lower()
                for name in names
                for value in (message.get_all(name) or [])
            )

        if self.subject is not None and not has(("subject",), self.subject):
            return False
        if self.sender is not None and not has(("from",), self.sender):
            return False
        if self.to is not None and not has(("to", "cc"), self.to):
            return False
        if self.header is not None:
            name, colon, text = self.header.partition(":")
            if colon:
                if not has((name.strip(),), text.strip()):
                    return False
            elif message.get(name.strip()) is None:
                return False
        return self.match is None or bool(self.match(message))

    def describe(self) -> str:
        parts = [
            f"{label} containing {value!r}"
            for label, value in (
                ("subject", self.subject), ("sender", self.sender),
                ("to", self.to), ("header", self.header),
            )
            if value is not None
        ]  # fmt: skip
        if self.match is not None:
            parts.append(f"match={getattr(self.match, '__name__', repr(self.match))}")
        return " and ".join(parts) or "any message"


class MailQuery:
    """The messages of a server root's users (``ROOT/mail/USER/Maildir``)."""

    def __init__(self, mailstore: MailStore) -> None:
        self.mailstore = mailstore

    def folder_path(self, user: str, folder: str = INBOX) -> Path:
        """ValueError for a user or folder name that is not one."""
        try:
            mailboxes = self.mailstore.user_mailboxes(user)
            return mailboxes.folder_path(folder)
        except Exception as error:  # MailboxError, ValueError: both mean "not a name"
            raise ValueError(f"not a user and folder: {user!r}, {folder!r} ({error})") from None

    def messages(self, user: str, folder: str = INBOX) -> list[StoredMessage]:
        """The folder's messages, oldest first (by delivery time, then name)."""
        path = self.folder_path(user, folder)
        found: list[tuple[int, StoredMessage]] = []
        for subdir in ("new", "cur"):
            try:
                entries = list(os.scandir(path / subdir))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # moved or removed meanwhile
                    continue
                name, _, flags = entry.name.partition(":2,")
                message = StoredMessage(
                    id=name,
                    folder=folder,
                    path=Path(entry.path),
                    size=info.st_size,
                    flags=flags,
                    seen_by_reader=subdir == "cur",
                )
                found.append((info.st_mtime_ns, message))
        found.sort(key=lambda item: (item[0], item[1].id))
        return [message for _, message in found]

    def find(self, user: str, message_id: str, folder: str = INBOX) -> StoredMessage | None:
        if not MESSAGE_ID.fullmatch(message_id):
            return None
        for message in self.messages(user, folder):
            if message.id == message_id:
                return message
        return None

    def delete(self, user: str, message_id: str, folder: str = INBOX) -> bool:
        """Remove the message; False if there is none with that id."""
        message = self.find(user, message_id, folder)
        if message is None:
            return False
        try:
            message.path.unlink()
        except FileNotFoundError:
            return False
        self.mailstore.watchers.notify(user, folder)  # IMAP sessions see it gone
        return True

    def first_match(
        self, user: str, wanted: MessageFilter, folder: str = INBOX
    ) -> tuple[StoredMessage, EmailMessage] | None:
        for message in self.messages(user, folder):
            try:
                parsed = message.parse()
            except FileNotFoundError:
                continue
            if wanted.matches(parsed):
                return message, parsed
        return None

    def watch(self, user: str, folder: str, callback: Callable[[], None]) -> Any:
        """Call ``callback`` (from the notifying thread) when the folder changes;
        the handle's ``cancel()`` ends it."""
        return self.mailstore.watchers.watch(user, folder, callback)

    def wait(
        self, user: str, wanted: MessageFilter, timeout: float, folder: str = INBOX
    ) -> tuple[StoredMessage, EmailMessage]:
        """Block this thread until a matching message is in the folder (one already
        there counts); TimeoutError naming what was wanted and what arrived."""
        changed = threading.Event()
        deadline = time.monotonic() + timeout
        with self.watch(user, folder, changed.set):
            while True:
                changed.clear()
                found = self.first_match(user, wanted, folder)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(self.timeout_text(user, wanted, timeout, folder))
                changed.wait(min(left, BACKSTOP_SECONDS))

    def timeout_text(self, user: str, wanted: MessageFilter, timeout: float, folder: str) -> str:
        """What a wait that timed out says: what it wanted, and what is there instead."""
        messages = self.messages(user, folder)
        head = f"no message for {user} in {folder} with {wanted.describe()} within {timeout:g} s"
        if not messages:
            return f"{head}; the folder is empty"
        shown = []
        for message in messages[-SHOWN_ARRIVED:]:
            try:
                parsed = message.parse()
            except FileNotFoundError:
                continue
            shown.append(f"{str(parsed.get('subject', ''))!r} from {str(parsed.get('from', ''))!r}")
        more = len(messages) - len(shown)
        extra = f" (and {more} older)" if more > 0 else ""
        return f"{head}; it has {len(messages)}{extra}: " + "; ".join(shown)


def summary(message: StoredMessage, parsed: EmailMessage) -> dict[str, Any]:
    """A message as the JSON API lists it."""

    def text(name: str) -> str | None:
        value = parsed.get(name)
        return None if value is None else _clean(str(value))

    return {
        "id": message.id,
        "folder": message.folder,
        "size": message.size,
        "flags": message.flags,
        "new": not message.seen_by_reader,
        "subject": text("subject"),
        "from": text("from"),
        "to": text("to"),
        "date": text("date"),
        "message_id": text("message-id"),
    }


def details(
    message: StoredMessage, parsed: EmailMessage, body_limit: int = 64 * 1024
) -> dict[str, Any]:
    """One message as the JSON API shows it: its summary, every header field in order
    (raw and decoded), and the text of its first text/plain part (at most
    ``body_limit`` characters)."""
    raw_headers = BytesParser(policy=policy.compat32).parsebytes(message.read(), headersonly=True)
    result = summary(message, parsed)
    result["headers"] = [
        {"name": name, "value": _clean(str(decoded)), "raw": _clean(str(raw))}
        for (name, decoded), (_, raw) in zip(parsed.items(), raw_headers.items(), strict=False)
    ]
    body = parsed.get_body(preferencelist=("plain",))
    text = None
    if body is not None:
        try:
            text = _clean(str(body.get_content()))
        except (LookupError, ValueError, AssertionError):  # an unknown charset, a bad part
            text = None
    result["text"] = text[:body_limit] if text is not None else None
    result["truncated"] = text is not None and len(text) > body_limit
    return result


def _clean(text: str) -> str:
    """Undecodable bytes (kept by the parser as surrogates) as U+FFFD: JSON-safe text."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
