"""The relay queue: messages waiting for onward delivery, each with its envelope.

Layout of ``ROOT/queue``::

    tmp/        messages and envelopes being written
    messages/   ID          the message, published like a Maildir's (tmp, fsync, rename)
    envelopes/  ID.json     its envelope, published only after the message

The order is the invariant: an envelope always has its message. A message
without an envelope is an enqueue that crashed before finishing — the client
got no 250 and will retry — and :meth:`Queue.recover` removes it.

To enqueue, give :meth:`Queue.enqueue_target` to a
:class:`~mailtalk.store.maildir.Delivery`, alone or next to local Maildirs, so
one DATA is streamed to disk once for all of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailtalk.store.filesystem import (
    files_in,
    fsync_directory,
    make_private_directories,
    remove_files_older_than,
    remove_older_than,
    remove_quietly,
    replace_file,
)
from mailtalk.store.maildir import Delivery

ENVELOPE_SUFFIX = ".json"

# An enqueue in progress keeps writing its tmp/ file, and publishes the envelope
# right after the message, so anything this old is a leftover. An hour is far
# beyond SMTP's 10-minute DATA timeout (RFC 5321 4.5.3.2.6).
ORPHAN_SECONDS = 3600.0


@dataclass(frozen=True)
class Envelope:
    """What the SMTP transaction said about a message; ``rcpt_to`` is kept as a tuple."""

    mail_from: str
    rcpt_to: Sequence[str]
    client: str  # the client's IP address
    helo: str
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The id the SMTP server gave the message (in its 250 and Received:), or "".
    queue_id: str = ""
    # RFC 3461 parameters, for the delivery status notifications onward delivery sends:
    # RET= and ENVID= (as sent, xtext) of the transaction, NOTIFY= and ORCPT= (as sent)
    # of each recipient that gave them, by recipient address.
    ret: str | None = None
    envid: str | None = None
    notify: Mapping[str, str] = field(default_factory=dict)
    orcpt: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rcpt_to", tuple(self.rcpt_to))


@dataclass(frozen=True)
class QueuedMessage:
    """A message in the queue; ``id`` is its file name in ``messages/``."""

    id: str
    envelope: Envelope
    size: int
    message_path: Path
    envelope_path: Path
    # Onward delivery's bookkeeping (attempts, next attempt, last errors), kept in
    # the envelope under "delivery" so that it survives a restart.
    state: Mapping[str, Any] = field(default_factory=dict)


class Queue:
    """The relay queue at ``path`` (``ROOT/queue``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Queue({str(self.path)!r})"

    @property
    def tmp_dir(self) -> Path:
        return self.path / "tmp"

    @property
    def messages_dir(self) -> Path:
        return self.path / "messages"

    @property
    def envelopes_dir(self) -> Path:
        return self.path / "envelopes"

    def create(self) -> None:
        """Make ``tmp``, ``messages``, ``envelopes`` (mode 0700); nothing happens if they exist."""
        make_private_directories(self.path, ["tmp", "messages", "envelopes"])

    def enqueue_target(self, envelope: Envelope) -> QueueTarget:
        """A :class:`~mailtalk.store.maildir.DeliveryTarget` that enqueues with ``envelope``."""
        return QueueTarget(self, envelope)

    def begin(self, envelope: Envelope, hostname: str | None = None) -> Delivery:
        """A delivery to the queue alone: ``Delivery([self.enqueue_target(envelope)])``."""
        return Delivery([self.enqueue_target(envelope)], hostname=hostname)

    def remove(self, message: QueuedMessage) -> None:
        """Take ``message`` out of the queue (delivered or bounced): envelope first, then message.

        In that order a crash in between leaves an orphan message, which
        :meth:`recover` removes, never an envelope without its message.
        """
        remove_quietly(message.envelope_path)
        fsync_directory(self.envelopes_dir)
        remove_quietly(message.message_path)

    def update(
        self, message: QueuedMessage, rcpt_to: Sequence[str], state: Mapping[str, Any]
    ) -> QueuedMessage:
        """Rewrite ``message``'s envelope (atomically): the recipients left, the delivery state."""
        envelope = replace(message.envelope, rcpt_to=tuple(rcpt_to))
        record = _envelope_record(message.id, envelope, message.size)
        record["delivery"] = dict(state)
        # Only the queue runner rewrites envelopes: a tmp copy left by a crash is stale.
        remove_quietly(self.tmp_dir / message.envelope_path.name)
        self._write_envelope(message.envelope_path, json.dumps(record, indent=2).encode() + b"\n")
        return replace(message, envelope=envelope, state=dict(state))

    def recover(self, older_than: float = ORPHAN_SECONDS) -> list[Path]:
        """Remove what crashed enqueues left: messages without an envelope, tmp/ files.

        Only files older than ``older_than`` seconds go, so an enqueue still in
        progress (in another process) is left alone. Returns the removed paths.
        """
        removed = remove_older_than(self.tmp_dir, older_than)
        envelope_ids = {
            path.name.removesuffix(ENVELOPE_SUFFIX)
            for path in self.envelopes_dir.glob("*" + ENVELOPE_SUFFIX)
        }
        # Listed after the envelopes: a message published meanwhile is either
        # not listed yet or too young to go, so a finishing enqueue is safe.
        orphans = [path for path in files_in(self.messages_dir) if path.name not in envelope_ids]
        # Aged by mtime, its last write, which came just before its envelope.
        removed.extend(remove_files_older_than(orphans, older_than))
        return removed

    def _publish(self, tmp_path: Path, name: str, envelope: Envelope) -> Path:
        message_path = self.messages_dir / name
        envelope_path = self.envelopes_dir / (name + ENVELOPE_SUFFIX)
        try:
            os.rename(tmp_path, message_path)
            fsync_directory(self.messages_dir)
            record = _envelope_record(name, envelope, message_path.stat().st_size)
            self._write_envelope(envelope_path, json.dumps(record, indent=2).encode() + b"\n")
        except BaseException:
            # Take the enqueue back, envelope first so that it never outlives
            # its message; a crash here instead leaves an orphan for recover().
            remove_quietly(envelope_path)
            remove_quietly(message_path)
            raise
        return message_path

    def _write_envelope(self, envelope_path: Path, data: bytes) -> None:
        """Publish ``envelope_path`` atomically: tmp, fsync, rename, fsync the directory."""
        replace_file(envelope_path, data, self.tmp_dir / envelope_path.name, exclusive=True)

    # Last in the class: once defined, "list" in this class body would mean this method.
    def list(self) -> list[QueuedMessage]:
        """The complete messages (those with an envelope), oldest name first."""
        queued = []
        for envelope_path in sorted(self.envelopes_dir.glob("*" + ENVELOPE_SUFFIX)):
            message_path = self.messages_dir / envelope_path.name.removesuffix(ENVELOPE_SUFFIX)
            try:
                record = json.loads(envelope_path.read_bytes())
            except FileNotFoundError:
                continue  # removed by remove() since the glob
            except ValueError as error:
                raise ValueError(f"unreadable queue envelope {envelope_path}: {error}") from error
            queued.append(_queued_message(record, message_path, envelope_path))
        return queued


class QueueTarget:
    """Enqueues the delivered message with its envelope; made by :meth:`Queue.enqueue_target`."""

    def __init__(self, queue: Queue, envelope: Envelope) -> None:
        self.queue = queue
        self.envelope = envelope

    @property
    def tmp_dir(self) -> Path:
        return self.queue.tmp_dir

    def publish(self, tmp_path: Path, name: str) -> Path:
        """Move the message into ``messages/``, then write its envelope; returns the message path.

        If either step fails the message is taken back out, so a failed enqueue
        leaves nothing behind (a crash instead leaves an orphan message).
        """
        return self.queue._publish(tmp_path, name, self.envelope)


def _envelope_record(name: str, envelope: Envelope, size: int) -> dict[str, Any]:
    return {
        "id": name,
        "mail_from": envelope.mail_from,
        "rcpt_to": list(envelope.rcpt_to),
        "received_at": envelope.received_at.isoformat(),
        "client": envelope.client,
        "helo": envelope.helo,
        "size": size,
        **({"queue_id": envelope.queue_id} if envelope.queue_id else {}),
        **({"dsn": _dsn_record(envelope)} if _has_dsn(envelope) else {}),
    }


def _has_dsn(envelope: Envelope) -> bool:
    return bool(envelope.ret or envelope.envid or envelope.notify or envelope.orcpt)


def _dsn_record(envelope: Envelope) -> dict[str, Any]:
    """The DSN parameters of the recipients still in the envelope."""
    left = set(envelope.rcpt_to)
    return {
        "ret": envelope.ret,
        "envid": envelope.envid,
        "notify": {rcpt: value for rcpt, value in envelope.notify.items() if rcpt in left},
        "orcpt": {rcpt: value for rcpt, value in envelope.orcpt.items() if rcpt in left},
    }


def _queued_message(
    record: dict[str, Any], message_path: Path, envelope_path: Path
) -> QueuedMessage:
    dsn = record.get("dsn") or {}
    envelope = Envelope(
        mail_from=record["mail_from"],
        rcpt_to=record["rcpt_to"],
        client=record["client"],
        helo=record["helo"],
        received_at=datetime.fromisoformat(record["received_at"]),
        queue_id=str(record.get("queue_id", "")),
        ret=dsn.get("ret"),
        envid=dsn.get("envid"),
        notify=dict(dsn.get("notify") or {}),
        orcpt=dict(dsn.get("orcpt") or {}),
    )
    return QueuedMessage(
        id=record["id"],
        envelope=envelope,
        size=record["size"],
        message_path=message_path,
        envelope_path=envelope_path,
        state=record.get("delivery") or {},
    )
