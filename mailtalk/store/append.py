"""Adding a message to a folder: IMAP APPEND's :class:`Appender`, and what COPY shares with it.

Both APPEND and COPY first place a complete, fsynced file in the folder's tmp/
(an APPEND literal is streamed there through a
:class:`~mailtalk.store.maildir.Delivery`; a COPY hard-links or copies the
source), then hand it to :meth:`Mailbox.publish_staged
<mailtalk.store.mailbox.Mailbox.publish_staged>` as a :class:`StagedMessage`,
which renames it into cur/ with its flags and gives it a UID under the index
lock (and the user lock, when there is a quota). Stdlib only.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mailtalk.store.errors import MailboxError, StoreError
from mailtalk.store.flags import flags_to_info
from mailtalk.store.maildir import CRLFToLF, Delivery
from mailtalk.store.sizes import RFC822SizeCounter

if TYPE_CHECKING:
    from mailtalk.store.mailbox import Mailbox


@dataclass(frozen=True)
class StagedMessage:
    """A complete message file in a folder's tmp/, waiting to be published into its cur/.

    ``name`` is its unique name (the base of its name in cur/), ``flags`` the IMAP
    flags it gets (keywords included), ``internaldate`` Unix seconds.
    """

    tmp_path: Path
    name: str
    flags: frozenset[str]
    size: int
    rfc822_size: int
    internaldate: int
    unterminated: bool

    @property
    def filename(self) -> str:
        """Its name in cur/: the unique name and the Maildir info of its flags."""
        return f"{self.name}:{flags_to_info(self.flags)}"


class _AppendTarget:
    """The :class:`Delivery` target of an append: publishes into cur/ with flags and a UID."""

    # The name carries Dovecot's ,S=/,W= sizes, as a delivered one: a later cold index
    # of the folder reads no file.
    sizes_in_names = True

    def __init__(self, appender: Appender) -> None:
        self._appender = appender

    @property
    def tmp_dir(self) -> Path:
        return self._appender.mailbox.maildir.tmp_dir

    def publish(self, tmp_path: Path, name: str) -> Path:
        return self._appender._publish(tmp_path, name)


class Appender:
    """One message being appended; from :meth:`Mailbox.begin_append
    <mailtalk.store.mailbox.Mailbox.begin_append>`.

    :meth:`write` streams chunks into the folder's tmp/ through a
    :class:`~mailtalk.store.maildir.Delivery` (so memory stays bounded however
    large the message); :meth:`commit` fsyncs it, publishes it into cur/ and
    returns its UID. Leaving a ``with`` block without commit aborts, removing
    the temporary file. With a quota, writing past it aborts with OVERQUOTA at
    once rather than filling the disk first.
    """

    def __init__(
        self,
        mailbox: Mailbox,
        flags: frozenset[str],
        internaldate: datetime | float | None,
        byte_limit: int | None,
        crlf_to_lf: bool,
    ) -> None:
        self.mailbox = mailbox
        self._flags = flags
        if isinstance(internaldate, datetime):
            internaldate = internaldate.timestamp()
        self._internaldate = internaldate
        self._byte_limit = byte_limit
        self._converter = CRLFToLF() if crlf_to_lf else None
        self._counter = RFC822SizeCounter()
        self.uid: int | None = None
        try:
            self._delivery = Delivery([_AppendTarget(self)])
        except StoreError as error:
            if error.errno != errno.ENOENT:
                raise
            raise MailboxError("TRYCREATE", f"no mailbox {mailbox.name}") from error

    @property
    def size(self) -> int:
        """Bytes stored so far (after line-ending conversion)."""
        return self._counter.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)
        self._write_stored(self._converter.feed(chunk) if self._converter else chunk)

    def commit(self) -> int:
        """Make the message durable and visible; returns its UID."""
        if self._converter is not None:
            self._write_stored(self._converter.finish())
        self._delivery.commit()
        assert self.uid is not None  # set by _publish, which commit() calls
        self.mailbox.notify()
        return self.uid

    def abort(self) -> None:
        self._delivery.abort()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def _write_stored(self, chunk: bytes) -> None:
        self._counter.feed(chunk)
        if self._byte_limit is not None and self._counter.size > self._byte_limit:
            self.abort()
            raise MailboxError("OVERQUOTA", "the message would exceed the mailbox quota")
        self._delivery.write(chunk)

    def _publish(self, tmp_path: Path, name: str) -> Path:
        if self._internaldate is not None:
            os.utime(tmp_path, (self._internaldate, self._internaldate))
        staged = StagedMessage(
            tmp_path,
            name,
            self._flags,
            self._counter.size,
            self._counter.rfc822_size,
            int(os.stat(tmp_path).st_mtime),
            self._counter.unterminated,
        )
        (self.uid,) = self.mailbox.publish_staged([staged], check_quota=True)
        return self.mailbox.maildir.cur_dir / staged.filename
