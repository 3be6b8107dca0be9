"""What the store raises: disk failures and refused mailbox operations.

Two families, for two kinds of caller:

- :class:`StoreError` (and :class:`StoreFullError`): the disk failed under a
  delivery or a mailbox change. An SMTP server answers 4xx and the client retries;
  an IMAP or POP3 server answers NO / -ERR with the reason.
- :class:`MailboxError`: an IMAP or POP3 request was refused (no such folder, the
  maildrop is in use, over quota, ...); ``code`` is the response code to send.

Stdlib only.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Literal

# The disk or the user's disk quota is full: StoreFullError.
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


# -- disk failures -------------------------------------------------------------


class StoreError(OSError):
    """The store could not take a message; ``str()`` is one line.

    An :class:`OSError` (``errno`` is the original one), so code that already
    handles disk errors keeps working. An SMTP server answers it with a 4xx
    (``451 4.3.0``): the client keeps the message and retries later.
    """

    def __str__(self) -> str:
        where = f": {self.filename}" if self.filename else ""
        return f"{self.strerror}{where}"


class StoreFullError(StoreError):
    """The disk or the quota is full (ENOSPC, EDQUOT): ``452 4.3.1 Insufficient system storage``."""


def store_error(error: OSError, doing: str, path: Path | None = None) -> StoreError:
    """``error`` as a :class:`StoreError` (or :class:`StoreFullError`) saying what failed."""
    if isinstance(error, StoreError):
        return error
    code = error.errno if error.errno is not None else errno.EIO
    reason = (error.strerror or os.strerror(code)).lower()
    kind = StoreFullError if code in STORAGE_FULL_ERRNOS else StoreError
    filename = str(path) if path is not None else error.filename
    return kind(code, f"{reason} while {doing}", filename)


# -- refused mailbox operations ------------------------------------------------

ResponseCode = Literal[
    "NONEXISTENT",
    "ALREADYEXISTS",
    "CANNOT",
    "INUSE",
    "OVERQUOTA",
    "TRYCREATE",
    "SERVERBUG",
    "EXPUNGEISSUED",
    "LIMIT",
    "USEATTR",
]


class MailboxError(Exception):
    """A mailbox operation was refused; ``code`` is the IMAP response code to send.

    NONEXISTENT, ALREADYEXISTS, CANNOT, INUSE, OVERQUOTA, SERVERBUG,
    EXPUNGEISSUED and LIMIT are RFC 5530's; TRYCREATE is RFC 3501's answer to COPY or
    APPEND into a missing folder; USEATTR is RFC 6154's, a special use that cannot be
    given to a folder. A POP3 server sends INUSE as ``-ERR [IN-USE]``.
    """

    def __init__(self, code: ResponseCode, message: str) -> None:
        super().__init__(code, message)
        self.code: ResponseCode = code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"
