"""The AUTHORIZATION state of a POP3 session (RFC 1939 4, 7; RFC 5034): USER and PASS,
APOP, AUTH (the exchange is ``servers.sasl_exchange``'s, the words and the state
POP3's), the verdict from the server's guard, and then the maildrop locked and
opened, which is what moves the session into TRANSACTION.

**Which maildrop.** A user's maildrop is their INBOX (``ROOT/mail/USER/Maildir``),
unless ``ROOT/mail/USER/mbox`` is a file: then it is that mbox, served as qpopper
serves ``/var/mail/USER`` (:mod:`mailtalk.store.mbox`), under the same maildrop lock.
An mbox that does not begin with a ``From `` line cannot be split into messages: PASS
(the password being right) is answered in qpopper 4's words, ``-ERR [SYS/PERM] Unable
to process From lines (envelopes), change recognition modes or check for corrupted
mail drop.``, and the session stays unauthenticated. IMAP and SMTP delivery keep to
the Maildir.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final

from mailtalk.protocols.common import Continuation
from mailtalk.servers import sasl_exchange
from mailtalk.servers.guard import Verdict
from mailtalk.servers.pop3_session import POP3Session
from mailtalk.servers.sasl import extra_mechanisms, open_exchange

# The store's code with the POP3 server's, not at the first PASS: the cold login is
# timed (issue 17), and the IMAP server's code, which also loads it, now waits for
# the first IMAP client.
from mailtalk.store.mailbox import MailboxError
from mailtalk.store.mbox import MboxMaildrop
from mailtalk.store.users import UserMailboxes
from mailtalk.store.view import MessageList

if TYPE_CHECKING:
    from pathlib import Path

    from mailtalk.store.mailbox import Mailbox

log = logging.getLogger("mailtalk.pop3")

# qpopper 4.0.x popper/pop_dropcopy.c, do_drop_copy(), when the spool's first line is
# not a From line (qpopper 2.x said only "Unable to process From lines (envelopes),
# change recognition modes."): knowledge/replies_pop3.toml, qpopper-from-lines.
FROM_LINES: Final = ("Unable to process From lines (envelopes), change recognition modes or "
                     "check for corrupted mail drop.")
STORE_FAILED: Final = "The mail store failed; try later"
QUOTA_EXCEEDED: Final = "Unable to copy mail spool file, quota exceeded"

Answer = tuple[bool, str, str | None]  # +OK or not, the text, the response code
# What a malformed answer is told (-ERR), but for the mechanism's own words; one that
# decoded is a failed login, with its [AUTH] code (RFC 3206 4), as Dovecot's is.
MALFORMED: Final = {"base64": "Invalid base64 data in the answer",
                    "fields": "Malformed PLAIN answer"}



class POP3AuthSession(POP3Session):
    """The AUTHORIZATION state: a login checked, journaled and answered, and the
    maildrop locked and opened."""

    def _plaintext_allowed(self) -> bool:
        """USER/PASS and AUTH PLAIN only over TLS, or from loopback (like Dovecot)."""
        return bool(self.core.tls) or self.is_loopback()

    def _user(self, args: tuple[str, ...]) -> None:
        if not self._plaintext_allowed():
            self._send(False, "Plaintext authentication disallowed on non-secure connections",
                       "AUTH")
            return
        if len(args) != 1:
            self._send(False, "USER needs exactly one argument: the user name")
            return
        self.user = args[0]
        self._send(True, "")

    def _pass(self, args: tuple[str, ...]) -> None:
        if self.user is None:
            self._send(False, "No user name: send USER first")
            return
        self._defer(self._login(self.user, args[0] if args else "", "USER/PASS"))

    def _apop(self, args: tuple[str, ...]) -> None:
        if len(args) != 2:
            self._send(False, "APOP needs a user name and a digest")
            return
        name, digest = args
        secret = self.context.clear_password(name)
        if secret is None:
            self._send(False, "APOP is not available for this user (passwords are stored hashed)",
                       "AUTH")
            return
        expected = hashlib.md5((self.timestamp + secret).encode(), usedforsecurity=False)
        # A wrong digest is a guess like a wrong password: the same delay and budget.
        # compared as bytes: compare_digest refuses str with non-ASCII characters, and a
        # client may send any (a digest of them is simply wrong)
        given = digest.lower().encode("utf-8", "surrogateescape")
        verdict = self.context.guard.check(
            self.client_ip, lambda: hmac.compare_digest(expected.hexdigest().encode(), given)
        )
        self._defer(self._decided(verdict, name, "APOP"))

    def _auth(self, args: tuple[str, ...]) -> None:
        if not args:
            names = ["PLAIN", *extra_mechanisms(self.context)] if self._plaintext_allowed() else []
            self._send(True, "", lines=tuple(name.encode() for name in names))
            return
        mechanism = args[0].upper()
        exchange = open_exchange(mechanism, self.context, sasl_exchange.POP3)
        if exchange is None:
            self._send(False, f"Unsupported authentication mechanism {mechanism}")
            return
        if not self._plaintext_allowed():
            self._send(False, "Plaintext authentication disallowed on non-secure connections",
                       "AUTH")
            return
        self._exchange = exchange
        self.sasl_step(exchange.start(args[1] if len(args) > 1 else None))

    def _sasl_answer(self, line: str) -> None:
        assert self._exchange is not None  # an answer is read only after a challenge
        self.sasl_step(self._exchange.answer(line))

    # -- the exchange's moves (ServerSession.sasl_step) in POP3's words ------------------

    def sasl_challenge(self, line: str) -> None:
        if self.transport is not None:
            self._write(self.core.send(Continuation(line)))

    def sasl_defer(self, work: Awaitable[None]) -> None:
        self._defer(work)

    def sasl_password(self, credentials: sasl_exchange.Credentials, mechanism: str) -> None:
        self._defer(self._login(credentials.user, credentials.password, mechanism))

    def sasl_decided(self, verdict: Verdict, user: str, mechanism: str) -> Awaitable[None]:
        return self._decided(_resolved(verdict), user, mechanism)

    def sasl_refused(self, step: sasl_exchange.Cancelled | sasl_exchange.Malformed) -> None:
        if isinstance(step, sasl_exchange.Cancelled):
            self._send(False, "Authentication cancelled")
        elif step.undecodable:
            self._send(False, MALFORMED["base64"])
        else:
            self._send(False, MALFORMED.get(step.kind, step.detail), "AUTH")

    async def _login(self, name: str, secret: str, mechanism: str) -> None:
        context = self.context
        verdict = context.guard.check_password(context.users, name, secret, self.client_ip)
        await self._decided(verdict, name, mechanism)

    async def _decided(self, verdict: Awaitable[Verdict], name: str, mechanism: str) -> None:
        """The password (or APOP digest) check's answer; right: open the maildrop."""
        decided = await verdict
        if self._closing:
            return
        if decided is Verdict.OK:
            await self._open_maildrop(name, mechanism)
            return
        self.user = None
        if decided is Verdict.REFUSED:
            log.info("session %s: login refused: too many failures from %s", self.session_id,
                     self.client_ip)
            code = "SYS/TEMP"
            text = f"Too many failed logins from {self.client_ip}; try again later"
        else:
            log.info("session %s: authentication failed for %s", self.session_id, name)
            self.errors.auth_failed()
            text, code = "Authentication failed.", "AUTH"
        if self.journal is not None:
            self.journal_write("auth", user=name, mechanism=mechanism, ok=False, reason=code)
        self._send(False, text, code)

    async def _open_maildrop(self, name: str, mechanism: str) -> None:
        """The password was right: lock and open the maildrop, or say why not."""
        ok, text, code = await self._enter_maildrop(name)
        if self.journal is not None:
            self.journal_write("auth", user=name, mechanism=mechanism, ok=ok, reason=code)
        self._send(ok, text, code)

    async def _enter_maildrop(self, name: str) -> Answer:
        """Lock and open ``name``'s maildrop: the answer (ok, text, response code)."""
        delay = self.context.login_delay_left(name)
        if delay > 0:
            return False, f"Logged in too recently; wait {delay:.0f} s", "LOGIN-DELAY"
        mailboxes = self.context.mailstore.user_mailboxes(
            name, quota_bytes=self.context.settings.quota_bytes
        )
        try:
            lock = mailboxes.lock_maildrop()
        except MailboxError as error:
            if error.code == "INUSE":
                busy = "Unable to lock maildrop: lock busy! Is another session active?"
                return False, busy, "IN-USE"
            raise
        try:
            opened = await self._open_store(mailboxes)
        except BaseException:
            lock.release()
            raise
        if isinstance(opened, tuple):
            lock.release()
            return opened
        if self._closing:  # the client went while the maildrop was being read
            lock.release()
            if isinstance(opened, MboxMaildrop):
                opened.close()
            return False, "", None
        self._lock = lock
        self._mailbox = opened
        self._mbox = isinstance(opened, MboxMaildrop)
        # A Maildir's messages are made one at a time when asked for; their sizes (for
        # LIST and STAT) come from the view's columns, without a message object each.
        self._messages = self._mailbox.messages()
        if isinstance(self._messages, MessageList):
            self._uids = self._messages.view.uids
            self._sizes = self._messages.view.pop3_sizes()
        else:
            self._uids = [m.uid for m in self._messages]
            self._sizes = [m.pop3_size for m in self._messages]
        self._deleted = set()
        self.authenticated_user = name
        self.context.record_login(name)
        self.core.start_transaction()
        log.info("session %s: %s logged in, %d messages", self.session_id, name,
                 len(self._messages))
        total = sum(self._sizes)
        return True, f"Logged in: {len(self._messages)} messages ({total} octets)", None

    async def _open_store(self, mailboxes: UserMailboxes) -> Mailbox | MboxMaildrop | Answer:
        """The maildrop opened (an mbox file if the user has one, else INBOX), or the
        answer that refuses it."""
        quota = self.context.settings.quota_bytes
        mbox = mailboxes.mbox_path
        if mbox.is_file():
            return await self._open_mbox(mbox, quota)
        if quota is not None and mailboxes.usage() > quota:
            return False, QUOTA_EXCEEDED, "SYS/TEMP"
        try:
            return mailboxes.open("INBOX")  # refreshed by open
        except OSError as error:
            return self._store_failed(error)

    async def _open_mbox(self, path: Path, quota: int | None) -> MboxMaildrop | Answer:
        """The mbox scanned (in a thread: it may be large), or the answer refusing it:
        qpopper's when it does not begin with a From line."""
        from mailtalk.store.mbox import MboxFormatError, MboxMaildrop

        try:
            if quota is not None and path.stat().st_size > quota:
                return False, QUOTA_EXCEEDED, "SYS/TEMP"
            return await asyncio.get_running_loop().run_in_executor(None, MboxMaildrop, path)
        except MboxFormatError as error:
            log.info("session %s: %s: %s", self.session_id, path, error)
            return False, FROM_LINES, "SYS/PERM"
        except OSError as error:
            return self._store_failed(error)

    def _store_failed(self, error: OSError) -> Answer:
        from mailtalk.store import StoreFullError

        log.warning("session %s: store error: %s", self.session_id, error)
        full = isinstance(error, StoreFullError)
        return False, "Not enough disk space" if full else STORE_FAILED, "SYS/TEMP"


async def _resolved(verdict: Verdict) -> Verdict:
    """A verdict already reached, as ``_decided`` awaits one."""
    return verdict
